/*
 * log: every process's logging.  Records are "role: key=value ..." lines;
 * values from the network are escaped so one event is always one line.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/util.h"

static int log_fg;
static int log_verbose;
static int log_startfd = -1;	/* start-up errors also go here */
static char log_role[32] = "ternd";

void
log_init(const char *role, int foreground, int verbose)
{
	log_fg = foreground;
	log_verbose = verbose;
	log_setrole(role);
	if (!foreground)
		openlog("ternd", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_close(void)
{
	if (!log_fg)
		closelog();
}

void
log_reopen(void)
{
	if (!log_fg)
		openlog("ternd", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_startup(int fd)
{
	log_startfd = fd;
}

void
log_setrole(const char *role)
{
	str_copy(log_role, role, sizeof(log_role));
}

static void
log_emit(int pri, const char *fmt, va_list ap)
{
	struct buf b;

	buf_init(&b);
	buf_printf(&b, "%s: ", log_role);
	buf_vprintf(&b, fmt, ap);
	if (log_fg) {
		char ts[32];
		time_t now = time(NULL);
		struct tm tm;

		localtime_r(&now, &tm);
		strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
		fprintf(stderr, "%s ternd[%d]: %s\n", ts, (int)getpid(), b.data);
	} else
		syslog(pri, "%s", b.data);
	/* Until the daemon is up, whoever started it hears why it failed. */
	if (log_startfd >= 0 && pri <= LOG_ERR)
		(void)!dprintf(log_startfd, "ternd: %s\n", b.data);
	buf_free(&b);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_INFO, fmt, ap);
	va_end(ap);
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_WARNING, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_verbose)
		return;
	va_start(ap, fmt);
	log_emit(LOG_DEBUG, fmt, ap);
	va_end(ap);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_CRIT, fmt, ap);
	va_end(ap);
	exit(1);
}

void
panicx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_CRIT, fmt, ap);
	va_end(ap);
	abort();
}

static int
log_safe(unsigned char c)
{
	return c > 32 && c < 127 && c != '"' && c != '\\' && c != '=';
}

void
log_value(struct buf *b, const char *s)
{
	const unsigned char *p;
	int plain = *s != '\0';

	for (p = (const unsigned char *)s; *p; p++)
		if (!log_safe(*p))
			plain = 0;
	if (plain) {
		buf_puts(b, s);
		return;
	}
	buf_putc(b, '"');
	for (p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(b, "\\%c", *p);
		else if (*p >= 32 && *p < 127)
			buf_putc(b, *p);
		else
			buf_printf(b, "\\x%02x", *p);
	}
	buf_putc(b, '"');
}

/*
 * s made safe for the inside of a "quoted" (log_q) or <bracketed> (log_a)
 * log value: a backslash before '"' and '\\', and \xNN for bytes outside
 * printable ASCII (log_a: for '<' and '>' too), so nothing a peer sends can
 * end the value early and forge a key=value of its own.  The results of
 * the last LOG_RING calls stay valid: enough for one log line.
 */
#define LOG_RING	8
#define LOG_QMAX	4096

static const char *
log_escape(const char *s, const char *also)
{
	static char ring[LOG_RING][LOG_QMAX];
	static unsigned next;
	char *o = ring[next++ % LOG_RING];
	size_t i = 0;

	for (; s && *s && i + 5 < LOG_QMAX; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			o[i++] = '\\';
			o[i++] = (char)c;
		} else if (c < 32 || c >= 127 || strchr(also, c)) {
			snprintf(o + i, 5, "\\x%02x", c);
			i += 4;
		} else
			o[i++] = (char)c;
	}
	o[i] = '\0';
	return o;
}

const char *
log_q(const char *s)
{
	return log_escape(s, "");
}

const char *
log_a(const char *s)
{
	return log_escape(s, "<>");
}

void
log_sanitize(char *dst, const char *src, unsigned long dstlen)
{
	unsigned long i;

	if (dstlen == 0)
		return;
	for (i = 0; i + 1 < dstlen && src[i]; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[i] = (c >= 32 && c < 127) ? (char)c : '?';
	}
	dst[i] = '\0';
}
