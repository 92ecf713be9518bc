/*
 * sendmail: the sendmail(1) personality of ternctl, run by any local user.
 * It reads a message on stdin, completes its header (From:, Date: and
 * Message-ID: when missing; Bcc: removed), takes the recipients from the
 * command line and, with -t, from the header, and submits it over ESMTP on
 * the submit socket, where ternd's smtp process names the user by
 * SO_PEERCRED.  Nothing is written locally: ternd commits the message or it
 * is not sent, and the exit status (sysexits) says which.  All or nothing:
 * if any recipient is refused, no copy is submitted.  The daemon's replies
 * are untrusted text and are printed sanitised.
 */
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/util.h"

#define SM_MSG_MAX	(64u << 20)	/* largest message read into memory */
#define SM_ADDR_MAX	1000		/* longer is no address (RFC 5321: 256) */
#define SM_TIMEOUT_MS	(5LL * 60 * 1000) /* the whole SMTP dialogue */
#define SM_BYE_MS	(10LL * 1000)	/* RSET/QUIT after a failure */
#define SM_CONNECT_MS	(30LL * 1000)	/* retrying while the backlog is full */
#define SM_REPLY_MAX	(64u * 1024)	/* longest reply accepted */
#define SM_CHUNK	(64u * 1024)	/* DATA is written in pieces this big */

struct strv {
	char		**v;
	size_t		  n;
};

struct sm {
	const char	*confpath;
	const char	*argv0;
	const char	*sender;	/* -f/-r as given; NULL: the user */
	const char	*fullname;	/* -F */
	int		 tflag;
	int		 iflag;		/* a lone "." does not end the input */
	char		 mode;		/* 'm' deliver, 'p' mailq, 'i' newaliases */
	struct conf	*conf;
	const char	*hostname;	/* Message-ID: */
	const char	*origin;	/* domain of bare names */
	char		*from;		/* envelope sender, "" = null sender */
	char		*author;	/* address for an added From: */
	char		*authorname;	/* phrase for an added From:, or NULL */
	struct strv	 rcpts;
	struct buf	 msg;		/* the message to send, LF line ends */
	size_t		 hdrlen;	/* its header section, separator included */
};

/* A header field in the input: name, colon, value and continuations. */
struct field {
	size_t		 off;
	size_t		 len;		/* through the last line's LF */
	size_t		 namelen;
};

struct client {
	int		 fd;
	const char	*path;
	long long	 deadline;	/* CLOCK_MONOTONIC, ms */
	const char	*why;		/* why the last call returned -1 */
	struct buf	 in;		/* read, not yet part of a reply */
	struct buf	 reply;		/* the last reply, its lines LF-ended */
	struct buf	 out;
	int		 size, eightbit, utf8;	/* offered in EHLO */
};

static void	 sm_die(int, const char *, ...)
		    __attribute__((format(printf, 2, 3), noreturn));

/* ---- errors, usage ------------------------------------------------------ */

static void
sm_die(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("sendmail: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(code);
}

static void __attribute__((noreturn))
sm_usage(const char *why, int ch)
{
	if (why != NULL)
		fprintf(stderr, "sendmail: %s -- %c\n", why, ch);
	fprintf(stderr, "usage: sendmail [-it] [-f sender] [-F fullname] "
	    "[-C file] [-b m|p|i] [-o option] [--] [recipient ...]\n");
	exit(EX_USAGE);
}

/* Untrusted or user text for the terminal: printable ASCII only. */
static void
sm_put_clean(FILE *fp, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		fputc(ch >= 32 && ch < 127 ? ch : '?', fp);
	}
}

/* Each line of a reply, "sendmail: <what>: <line>". */
static void
sm_print_reply(const char *what, const struct buf *r)
{
	const char *p = r->data, *nl;
	size_t left = r->len;

	while (left > 0 && (nl = memchr(p, '\n', left)) != NULL) {
		fputs("sendmail: ", stderr);
		sm_put_clean(stderr, what, strlen(what));
		fputs(": ", stderr);
		sm_put_clean(stderr, p, (size_t)(nl - p));
		fputc('\n', stderr);
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
}

/* ---- options ------------------------------------------------------------ */

/* -bp and -bi are ternctl's queue and newaliases: run that very binary. */
static void __attribute__((noreturn))
sm_exec_ctl(const struct sm *sm, const char *command)
{
	char *args[5];

	args[0] = (char *)"ternctl";
	args[1] = (char *)"-f";
	args[2] = (char *)sm->confpath;
	args[3] = (char *)command;
	args[4] = NULL;
	fflush(NULL);
	execv("/proc/self/exe", args);
	if (strchr(sm->argv0, '/') != NULL)
		execv(sm->argv0, args);
	else
		execvp(sm->argv0, args);
	sm_die(EX_OSERR, "cannot run ternctl %s: %s", command, strerror(errno));
}

static void
sm_mode(struct sm *sm, const char *m)
{
	if (strcmp(m, "m") == 0 || strcmp(m, "p") == 0 || strcmp(m, "i") == 0) {
		sm->mode = m[0];
		return;
	}
	if (strchr("svdtDhHP", m[0]) != NULL && m[0] != '\0' && m[1] == '\0')
		sm_die(EX_USAGE, "-b%c is not supported by Tern", m[0]);
	fputs("sendmail: unknown mode -b", stderr);
	sm_put_clean(stderr, m, strlen(m));
	fputc('\n', stderr);
	sm_usage(NULL, 0);
}

static void
sm_option_arg(struct sm *sm, int ch, const char *val)
{
	switch (ch) {
	case 'f':
	case 'r':
		sm->sender = val;
		break;
	case 'F':
		sm->fullname = val;
		break;
	case 'C':
		sm->confpath = val;
		break;
	case 'b':
		sm_mode(sm, val);
		break;
	case 'o':
		if (strcmp(val, "i") == 0)
			sm->iflag = 1;
		break;
	default:
		break;		/* -N -R -V -B -L -O -h -p -e -A -X: ignored */
	}
}

/* POSIX getopt rules (no permutation); returns the first operand's index. */
static int
sm_options(struct sm *sm, int argc, char *argv[])
{
	const char *p, *val;
	int i;

	for (i = 1; i < argc; i++) {
		if (argv[i][0] != '-' || argv[i][1] == '\0')
			break;
		if (strcmp(argv[i], "--") == 0)
			return i + 1;
		for (p = argv[i] + 1; *p != '\0'; p++) {
			if (*p == 't')
				sm->tflag = 1;
			else if (*p == 'i')
				sm->iflag = 1;
			else if (*p == 'I')
				sm->mode = 'i';
			else if (strchr("vmnUG", *p) != NULL)
				continue;
			else if (*p == 'q')
				sm_die(EX_USAGE, "-q is not supported; use "
				    "\"ternctl flush\" to retry the queue");
			else if (strchr("fFrNRVBLOCbohpeAX", *p) != NULL) {
				if (p[1] != '\0')
					val = p + 1;
				else if (i + 1 < argc)
					val = argv[++i];
				else
					sm_usage("option requires an argument",
					    *p);
				sm_option_arg(sm, *p, val);
				break;
			} else
				sm_usage("unknown option", (unsigned char)*p);
		}
	}
	return i;
}

/* ---- addresses ---------------------------------------------------------- */

/* Is there an '@' outside quotes (a domain part)? */
static int
sm_has_domain(const char *s, size_t len)
{
	int quoted = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		if (quoted && s[i] == '\\' && i + 1 < len)
			i++;
		else if (s[i] == '"')
			quoted = !quoted;
		else if (!quoted && s[i] == '@')
			return 1;
	}
	return 0;
}

/* NULL if addr can go inside <> on an SMTP line, else why not. */
static const char *
sm_address_problem(const char *s, size_t len)
{
	size_t i;

	if (len > SM_ADDR_MAX)
		return "too long";
	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 32 || ch == 127)
			return "control character in address";
		if (ch == '<' || ch == '>')
			return "'<' or '>' in address";
	}
	return NULL;
}

/* A bare local name gets "@" + origin (the first local-domain). */
static char *
sm_qualify(const struct sm *sm, const char *s, size_t len)
{
	struct buf b;

	buf_init(&b);
	buf_append(&b, s, len);
	if (!sm_has_domain(s, len))
		buf_printf(&b, "@%s", sm->origin);
	return buf_steal(&b);
}

static void
sm_add_rcpt(struct sm *sm, const char *s, size_t len, int badexit,
    const char *where)
{
	const char *why;
	char *a;
	size_t i;

	if ((why = sm_address_problem(s, len)) != NULL) {
		fprintf(stderr, "sendmail: bad recipient%s \"", where);
		sm_put_clean(stderr, s, len > 200 ? 200 : len);
		fprintf(stderr, "\": %s\n", why);
		exit(badexit);
	}
	a = sm_qualify(sm, s, len);
	for (i = 0; i < sm->rcpts.n; i++) {
		if (strcmp(sm->rcpts.v[i], a) == 0) {
			free(a);
			return;
		}
	}
	sm->rcpts.v = xreallocarray(sm->rcpts.v, sm->rcpts.n + 1,
	    sizeof(*sm->rcpts.v));
	sm->rcpts.v[sm->rcpts.n++] = a;
}

/* A command-line recipient may be a comma-separated list, as in sendmail. */
static void
sm_arg_rcpts(struct sm *sm, const char *arg)
{
	size_t i, start = 0, end, len = strlen(arg);
	int quoted = 0;

	for (i = 0; i <= len; i++) {
		if (i < len && quoted && arg[i] == '\\' && i + 1 < len) {
			i++;
			continue;
		}
		if (i < len && arg[i] == '"')
			quoted = !quoted;
		if (i < len && (quoted || arg[i] != ','))
			continue;
		end = i;
		while (start < end && (arg[start] == ' ' || arg[start] == '\t'))
			start++;
		while (end > start && (arg[end - 1] == ' ' ||
		    arg[end - 1] == '\t'))
			end--;
		if (end > start)
			sm_add_rcpt(sm, arg + start, end - start, EX_USAGE, "");
		start = i + 1;
	}
}

/* Past a (possibly nested) comment starting at p[i] == '('. */
static size_t
sm_skip_comment(const char *p, size_t n, size_t i)
{
	int depth = 0;

	for (; i < n; i++) {
		if (p[i] == '\\')
			i++;
		else if (p[i] == '(')
			depth++;
		else if (p[i] == ')' && --depth == 0)
			return i + 1;
	}
	return n;
}

/* Past a quoted string or domain literal starting at p[i]. */
static size_t
sm_skip_quoted(const char *p, size_t n, size_t i, char close)
{
	for (i++; i < n; i++) {
		if (p[i] == '\\')
			i++;
		else if (p[i] == close)
			return i + 1;
	}
	return n;
}

struct alist {
	struct buf	 plain;		/* mailbox without angle brackets */
	struct buf	 angle;		/* inside <> */
	int		 inangle;
	int		 gotangle;
};

static void
sm_alist_flush(struct sm *sm, struct alist *a, const char *where)
{
	const struct buf *b = a->gotangle ? &a->angle : &a->plain;

	if (b->len > 0)
		sm_add_rcpt(sm, b->data, b->len, EX_DATAERR, where);
	buf_reset(&a->plain);
	buf_reset(&a->angle);
	a->inangle = a->gotangle = 0;
}

static void
sm_alist_token(struct sm *sm, struct alist *a, const char *t, size_t len,
    const char *where)
{
	char c = len == 1 ? t[0] : '\0';

	if (a->inangle) {
		if (c == '>')
			a->inangle = 0;
		else if (c == ':' || c == '<')
			buf_reset(&a->angle);	/* a source route ends */
		else if (c != ',')
			buf_append(&a->angle, t, len);
		return;
	}
	if (c == '<') {
		a->inangle = a->gotangle = 1;
		buf_reset(&a->angle);
	} else if (c == ',' || c == ';')
		sm_alist_flush(sm, a, where);
	else if (c == ':')
		buf_reset(&a->plain);		/* a group's display name */
	else if (c != '>')
		buf_append(&a->plain, t, len);
}

/*
 * RFC 5322 address-list, leniently: display names, quoted strings,
 * comments, groups and folding whitespace; each mailbox's address is its
 * angle-addr if it has one, else its tokens joined without whitespace.
 */
static void
sm_addrlist(struct sm *sm, const char *p, size_t n, const char *where)
{
	static const char specials[] = "()<>[]:;@,.\" \t\r\n";
	struct alist a;
	size_t i = 0, j;

	memset(&a, 0, sizeof(a));
	buf_init(&a.plain);
	buf_init(&a.angle);
	while (i < n) {
		if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n') {
			i++;
			continue;
		}
		if (p[i] == '(') {
			i = sm_skip_comment(p, n, i);
			continue;
		}
		if (p[i] == '"' || p[i] == '[')
			j = sm_skip_quoted(p, n, i, p[i] == '"' ? '"' : ']');
		else if (strchr(specials, p[i]) != NULL)
			j = i + 1;
		else
			for (j = i; j < n && (p[j] == '\0' ||
			    strchr(specials, p[j]) == NULL); j++)
				;
		sm_alist_token(sm, &a, p + i, j - i, where);
		i = j;
	}
	sm_alist_flush(sm, &a, where);
	buf_free(&a.plain);
	buf_free(&a.angle);
}

/* ---- reading the message ------------------------------------------------ */

/* LF, CRLF and a lone CR all end a line; lines are stored LF-ended. */
struct reader {
	struct buf	*out;
	struct buf	 line;
	int		 cr;
	int		 iflag;
	int		 done;		/* the lone "." came */
};

static void
reader_append(struct reader *r, const char *p, size_t n)
{
	if (r->out->len + r->line.len + n + 1 > SM_MSG_MAX)
		sm_die(EX_CANTCREAT, "message too large (the limit is %u MiB)",
		    SM_MSG_MAX >> 20);
	buf_append(&r->line, p, n);
}

static void
reader_endline(struct reader *r)
{
	if (!r->iflag && r->line.len == 1 && r->line.data[0] == '.') {
		r->done = 1;
		return;
	}
	reader_append(r, "", 0);
	buf_append(r->out, r->line.data, r->line.len);
	buf_putc(r->out, '\n');
	buf_reset(&r->line);
}

static void
reader_feed(struct reader *r, const char *p, size_t n)
{
	size_t i = 0, j;

	while (i < n && !r->done) {
		if (r->cr) {
			r->cr = 0;
			reader_endline(r);
			if (p[i] == '\n')
				i++;
			continue;
		}
		for (j = i; j < n && p[j] != '\r' && p[j] != '\n'; j++)
			;
		reader_append(r, p + i, j - i);
		if (j == n)
			break;
		if (p[j] == '\n')
			reader_endline(r);
		else
			r->cr = 1;
		i = j + 1;
	}
}

static void
sm_read(int fd, int iflag, struct buf *out)
{
	struct reader r;
	char tmp[65536];
	ssize_t n;

	memset(&r, 0, sizeof(r));
	r.out = out;
	r.iflag = iflag;
	buf_init(&r.line);
	buf_append(out, "", 0);
	while (!r.done) {
		n = read(fd, tmp, sizeof(tmp));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			sm_die(EX_IOERR, "reading the message: %s",
			    strerror(errno));
		if (n == 0)
			break;
		reader_feed(&r, tmp, (size_t)n);
	}
	if (!r.done && (r.cr || r.line.len > 0))
		reader_endline(&r);
	buf_free(&r.line);
}

/* ---- the header --------------------------------------------------------- */

/* Length of the field name if the line is "name:...", else 0. */
static size_t
sm_field_name(const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n && p[i] != ':'; i++)
		if ((unsigned char)p[i] < 33 || (unsigned char)p[i] > 126)
			return 0;
	return i < n ? i : 0;
}

static int
sm_field_is(const char *text, const struct field *f, const char *name)
{
	size_t i;

	if (f->namelen != strlen(name))
		return 0;
	for (i = 0; i < f->namelen; i++) {
		int c = (unsigned char)text[f->off + i];

		if (c >= 'A' && c <= 'Z')
			c += 32;
		if (c != name[i])
			return 0;
	}
	return 1;
}

/*
 * Split the input into header fields and body.  The header ends at the
 * first empty line, or before the first line that is neither a field nor
 * a continuation (then the input had no separator: one is added).  A
 * leading mbox "From " line is dropped.
 */
static size_t
sm_header_scan(const char *t, size_t len, struct field **fp, size_t *np)
{
	struct field *f = NULL;
	size_t off = 0, n = 0, ll, nl;
	const char *eol;

	if (len >= 5 && memcmp(t, "From ", 5) == 0)
		off = (size_t)((const char *)memchr(t, '\n', len) - t) + 1;
	while (off < len) {
		eol = memchr(t + off, '\n', len - off);
		ll = (size_t)(eol - (t + off));
		if (ll == 0) {
			off++;
			break;
		}
		if ((t[off] == ' ' || t[off] == '\t') && n > 0) {
			f[n - 1].len += ll + 1;
			off += ll + 1;
			continue;
		}
		if ((nl = sm_field_name(t + off, ll)) == 0)
			break;
		f = xreallocarray(f, n + 1, sizeof(*f));
		f[n].off = off;
		f[n].len = ll + 1;
		f[n].namelen = nl;
		n++;
		off += ll + 1;
	}
	*fp = f;
	*np = n;
	return off;
}

/* -t: To/Cc/Bcc, or Resent-To/Cc/Bcc when the message is being resent. */
static void
sm_header_rcpts(struct sm *sm, const char *t, const struct field *f,
    size_t n)
{
	static const char *const plain[] = { "to", "cc", "bcc", NULL };
	static const char *const resent[] = { "resent-to", "resent-cc",
	    "resent-bcc", NULL };
	const char *const *names = plain;
	char where[64];
	size_t i, k;

	for (i = 0; i < n; i++)
		for (k = 0; resent[k] != NULL; k++)
			if (sm_field_is(t, &f[i], resent[k]))
				names = resent;
	for (i = 0; i < n; i++) {
		for (k = 0; names[k] != NULL; k++) {
			if (!sm_field_is(t, &f[i], names[k]))
				continue;
			snprintf(where, sizeof(where), " in the %.*s: header",
			    (int)f[i].namelen, t + f[i].off);
			sm_addrlist(sm, t + f[i].off + f[i].namelen + 1,
			    f[i].len - f[i].namelen - 1, where);
		}
	}
}

static void
sm_base64(struct buf *b, const unsigned char *p, size_t n)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		buf_putc(b, tab[p[i] >> 2]);
		buf_putc(b, tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)]);
		buf_putc(b, tab[((p[i + 1] & 15) << 2) | (p[i + 2] >> 6)]);
		buf_putc(b, tab[p[i + 2] & 63]);
	}
	if (n - i == 1) {
		buf_putc(b, tab[p[i] >> 2]);
		buf_putc(b, tab[(p[i] & 3) << 4]);
		buf_puts(b, "==");
	} else if (n - i == 2) {
		buf_putc(b, tab[p[i] >> 2]);
		buf_putc(b, tab[((p[i] & 3) << 4) | (p[i + 1] >> 4)]);
		buf_putc(b, tab[(p[i + 1] & 15) << 2]);
		buf_putc(b, '=');
	}
}

/*
 * A display name: as is if it is plain words, quoted if it holds
 * specials, RFC 2047 encoded words (folded) if it is not ASCII.
 */
static void
sm_phrase(struct buf *b, const char *name)
{
	unsigned char *s = (unsigned char *)xstrdup(name);
	size_t i, n = strlen(name), take;
	int eight = 0, special = 0;

	for (i = 0; i < n; i++) {
		if (s[i] < 32 || s[i] == 127)
			s[i] = ' ';	/* no line breaks in a header */
		if (s[i] >= 128)
			eight = 1;
		else if (strchr("()<>[]:;@\\,.\"", s[i]) != NULL)
			special = 1;
	}
	if (eight) {
		for (i = 0; i < n; i += take) {
			take = n - i > 45 ? 45 : n - i;
			while (take > 1 && i + take < n &&
			    (s[i + take] & 0xc0) == 0x80)
				take--;
			buf_puts(b, i ? "\n =?UTF-8?B?" : "=?UTF-8?B?");
			sm_base64(b, s + i, take);
			buf_puts(b, "?=");
		}
	} else {
		if (special)
			buf_putc(b, '"');
		for (i = 0; i < n; i++) {
			if (special && (s[i] == '"' || s[i] == '\\'))
				buf_putc(b, '\\');
			buf_putc(b, s[i]);
		}
		if (special)
			buf_putc(b, '"');
	}
	free(s);
}

static void
sm_add_fields(const struct sm *sm, struct buf *b, int from, int date,
    int msgid)
{
	char when[64];
	unsigned long long rnd;
	struct timespec ts;
	struct tm tm;
	time_t now = time(NULL);

	if (from) {
		buf_puts(b, "From: ");
		if (sm->authorname != NULL && sm->authorname[0] != '\0') {
			sm_phrase(b, sm->authorname);
			buf_printf(b, " <%s>\n", sm->author);
		} else
			buf_printf(b, "%s\n", sm->author);
	}
	if (date) {
		localtime_r(&now, &tm);
		strftime(when, sizeof(when), "%a, %d %b %Y %H:%M:%S %z", &tm);
		buf_printf(b, "Date: %s\n", when);
	}
	if (msgid) {
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) !=
		    (ssize_t)sizeof(rnd)) {
			clock_gettime(CLOCK_REALTIME, &ts);
			rnd = ((unsigned long long)ts.tv_nsec << 20) ^
			    (unsigned long long)getpid();
		}
		buf_printf(b, "Message-ID: <%lld.%ld.%016llx@%s>\n",
		    (long long)now, (long)getpid(), rnd, sm->hostname);
	}
}

/* The message to send: input header minus Bcc, added fields, body. */
static void
sm_build(struct sm *sm, const struct buf *in)
{
	struct field *f;
	size_t n, i, body;
	int from = 1, date = 1, msgid = 1;

	body = sm_header_scan(in->data, in->len, &f, &n);
	if (sm->tflag)
		sm_header_rcpts(sm, in->data, f, n);
	buf_init(&sm->msg);
	for (i = 0; i < n; i++) {
		if (sm_field_is(in->data, &f[i], "from"))
			from = 0;
		else if (sm_field_is(in->data, &f[i], "date"))
			date = 0;
		else if (sm_field_is(in->data, &f[i], "message-id"))
			msgid = 0;
		if (sm_field_is(in->data, &f[i], "bcc") ||
		    sm_field_is(in->data, &f[i], "resent-bcc"))
			continue;
		buf_append(&sm->msg, in->data + f[i].off, f[i].len);
	}
	free(f);
	sm_add_fields(sm, &sm->msg, from, date, msgid);
	buf_putc(&sm->msg, '\n');
	sm->hdrlen = sm->msg.len;
	buf_append(&sm->msg, in->data + body, in->len - body);
}

/* ---- the SMTP client ------------------------------------------------------ */

static long long
client_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
client_wait(struct client *c, short events)
{
	struct pollfd pfd;
	long long left;
	int r;

	for (;;) {
		if ((left = c->deadline - client_now()) <= 0) {
			c->why = "timed out";
			return -1;
		}
		pfd.fd = c->fd;
		pfd.events = events;
		pfd.revents = 0;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 0;
		if (r == -1 && errno != EINTR) {
			c->why = strerror(errno);
			return -1;
		}
	}
}

static int
client_connect(struct client *c, const char *path)
{
	struct sockaddr_un sun;
	long long until = client_now() + SM_CONNECT_MS;
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	int err;
	socklen_t elen = sizeof(err);

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	c->path = path;
	c->deadline = client_now() + SM_TIMEOUT_MS;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		return -1;
	for (;;) {
		if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && client_now() < until) {
			nanosleep(&pause, NULL);	/* backlog full */
			continue;
		}
		if (errno != EINPROGRESS)
			break;
		if (client_wait(c, POLLOUT) == -1) {
			errno = ETIMEDOUT;
			break;
		}
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1)
			break;
		if (err == 0)
			return 0;
		errno = err;
		break;
	}
	err = errno;
	close(c->fd);
	c->fd = -1;
	errno = err;
	return -1;
}

static void
client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int
client_write(struct client *c, const char *p, size_t n)
{
	ssize_t w;

	if (c->fd < 0) {
		c->why = "connection closed";
		return -1;
	}
	while (n > 0) {
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w == -1 && errno == EINTR)
			continue;
		else if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (client_wait(c, POLLOUT) == -1)
				return -1;
		} else {
			c->why = w == -1 ? strerror(errno) : "write failed";
			return -1;
		}
	}
	return 0;
}

/* Take one reply line from c->in; 1 if it was the last, 0 if not, -1. */
static int
client_reply_line(struct client *c, const char *nl, int *code)
{
	const char *l = c->in.data;
	size_t ll = (size_t)(nl - l), used = ll + 1;
	int last;

	if (ll > 0 && l[ll - 1] == '\r')
		ll--;
	if (ll < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
	    l[2] < '0' || l[2] > '9' || (ll > 3 && l[3] != ' ' && l[3] != '-')) {
		c->why = "protocol error: malformed reply";
		return -1;
	}
	if (c->reply.len + ll + 1 > SM_REPLY_MAX) {
		c->why = "protocol error: reply too long";
		return -1;
	}
	*code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	last = ll == 3 || l[3] == ' ';
	buf_append(&c->reply, l, ll);
	buf_putc(&c->reply, '\n');
	buf_consume(&c->in, used);
	return last;
}

/* Read one (possibly multi-line) reply; its code, or -1 (c->why). */
static int
client_reply(struct client *c)
{
	char tmp[8192];
	const char *nl;
	ssize_t n;
	int code = 0, r;

	buf_reset(&c->reply);
	if (c->fd < 0) {
		c->why = "connection closed";
		return -1;
	}
	for (;;) {
		while (c->in.len > 0 &&
		    (nl = memchr(c->in.data, '\n', c->in.len)) != NULL) {
			if ((r = client_reply_line(c, nl, &code)) == -1)
				return -1;
			if (r == 1)
				return code;
		}
		if (c->in.len > SM_REPLY_MAX) {
			c->why = "protocol error: reply too long";
			return -1;
		}
		if (client_wait(c, POLLIN) == -1)
			return -1;
		n = read(c->fd, tmp, sizeof(tmp));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			c->why = n == 0 ? "connection closed by ternd" :
			    strerror(errno);
			return -1;
		}
		buf_append(&c->in, tmp, (size_t)n);
	}
}

/* A write failed: ternd may have said why (421) before it closed. */
static int
client_last_word(struct client *c)
{
	const char *why = c->why;
	int code;

	if ((code = client_reply(c)) == -1)
		c->why = why;
	return code;
}

static int	 client_cmd(struct client *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static int
client_cmd(struct client *c, const char *fmt, ...)
{
	va_list ap;

	buf_reset(&c->out);
	va_start(ap, fmt);
	buf_vprintf(&c->out, fmt, ap);
	va_end(ap);
	buf_puts(&c->out, "\r\n");
	if (client_write(c, c->out.data, c->out.len) == -1)
		return client_last_word(c);
	return client_reply(c);
}

/* After a failure: end the session politely, briefly, then close. */
static void
client_bye(struct client *c, int rset)
{
	long long soon = client_now() + SM_BYE_MS;

	if (c->fd < 0)
		return;
	if (c->deadline > soon || c->deadline <= client_now())
		c->deadline = soon;
	if (!rset || client_cmd(c, "RSET") != -1)
		(void)client_cmd(c, "QUIT");
	client_close(c);
}

/* The message, dot-stuffed, CRLF-ended, then the end marker. */
static int
client_body(struct client *c, const struct buf *msg)
{
	const char *p = msg->data, *end = msg->data + msg->len, *nl;

	buf_reset(&c->out);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (*p == '.')
			buf_putc(&c->out, '.');
		buf_append(&c->out, p, (size_t)(nl - p));
		buf_puts(&c->out, "\r\n");
		p = nl + 1;
		if (c->out.len >= SM_CHUNK) {
			if (client_write(c, c->out.data, c->out.len) == -1)
				return -1;
			buf_reset(&c->out);
		}
	}
	buf_puts(&c->out, ".\r\n");
	return client_write(c, c->out.data, c->out.len);
}

/* ---- the submission ------------------------------------------------------- */

static int
sm_exit_for(int code, int permanent)
{
	if (code == -1 || code / 100 == 4)
		return EX_TEMPFAIL;
	if (code / 100 == 5)
		return permanent;
	return EX_PROTOCOL;
}

/* What an address was for, in messages: "recipient <a@b>". */
static const char *
sm_what(char *out, size_t len, const char *role, const char *addr)
{
	snprintf(out, len, "%s <%s>", role, addr);
	return out;
}

/* Report a failed step, end the session, pick the exit status. */
static int
sm_failed(struct client *c, int code, const char *what, int permanent)
{
	if (code == -1) {
		fputs("sendmail: ", stderr);
		sm_put_clean(stderr, what, strlen(what));
		fputs(": ", stderr);
		fputs(c->why, stderr);
		fputs(" (", stderr);
		sm_put_clean(stderr, c->path, strlen(c->path));
		fputs(")\n", stderr);
		client_close(c);
	} else {
		sm_print_reply(what, &c->reply);
		if (code == 421)
			client_close(c);
		else
			client_bye(c, 0);
	}
	return sm_exit_for(code, permanent);
}

static void
sm_extensions(struct client *c)
{
	const char *p = c->reply.data, *nl, *kw;
	size_t left = c->reply.len, kl;

	c->size = c->eightbit = c->utf8 = 0;
	while (left > 0 && (nl = memchr(p, '\n', left)) != NULL) {
		kw = p + 4;
		if (nl - p > 4) {
			for (kl = 0; kw + kl < nl && kw[kl] != ' '; kl++)
				;
			if (kl == 4 && strncasecmp(kw, "SIZE", 4) == 0)
				c->size = 1;
			else if (kl == 8 && strncasecmp(kw, "8BITMIME", 8) == 0)
				c->eightbit = 1;
			else if (kl == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0)
				c->utf8 = 1;
		}
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
}

static int
sm_hello(struct client *c)
{
	int code;

	if ((code = client_reply(c)) != 220)
		return sm_failed(c, code, "greeting", EX_UNAVAILABLE);
	code = client_cmd(c, "EHLO localhost");
	if (code == 250) {
		sm_extensions(c);
		return 0;
	}
	if (code / 100 == 5)
		code = client_cmd(c, "HELO localhost");
	if (code != 250)
		return sm_failed(c, code, "HELO", EX_UNAVAILABLE);
	return 0;
}

static int
sm_has8bit(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 128)
			return 1;
	return 0;
}

static int
sm_mail(const struct sm *sm, struct client *c)
{
	char what[SM_ADDR_MAX + 64];
	struct buf params;
	size_t i, lines = 0, size;
	int utf8, code;

	buf_init(&params);
	buf_append(&params, "", 0);
	utf8 = sm_has8bit(sm->from, strlen(sm->from)) ||
	    sm_has8bit(sm->msg.data, sm->hdrlen);
	for (i = 0; i < sm->rcpts.n && !utf8; i++)
		utf8 = sm_has8bit(sm->rcpts.v[i], strlen(sm->rcpts.v[i]));
	if (c->size) {
		for (i = 0; i < sm->msg.len; i++)
			lines += sm->msg.data[i] == '\n';
		size = sm->msg.len + lines;	/* each LF is sent as CRLF */
		buf_printf(&params, " SIZE=%zu", size);
	}
	if (c->eightbit && sm_has8bit(sm->msg.data, sm->msg.len))
		buf_puts(&params, " BODY=8BITMIME");
	if (c->utf8 && utf8)
		buf_puts(&params, " SMTPUTF8");
	code = client_cmd(c, "MAIL FROM:<%s>%s", sm->from, params.data);
	buf_free(&params);
	if (code == 250)
		return 0;
	return sm_failed(c, code, sm_what(what, sizeof(what), "sender",
	    sm->from), EX_DATAERR);
}

static int
sm_data(const struct sm *sm, struct client *c)
{
	int code;

	if ((code = client_cmd(c, "DATA")) != 354)
		return sm_failed(c, code, "message refused", EX_DATAERR);
	if (client_body(c, &sm->msg) == -1) {
		if ((code = client_last_word(c)) == -1)
			return sm_failed(c, -1, "sending the message", 0);
	} else
		code = client_reply(c);
	if (code != 250)
		return sm_failed(c, code, "message refused", EX_DATAERR);
	return 0;
}

/*
 * Every recipient is tried first; a single refusal and nothing is sent.
 * When ternd has taken as many recipients as one transaction holds (452
 * after some were accepted), the rest go into another transaction: each
 * batch start is kept in b[], and the earlier batches are given again,
 * with the message, after the last one's DATA.
 */
static int
sm_rcpts(const struct sm *sm, struct client *c, size_t *b, size_t *nb)
{
	char what[SM_ADDR_MAX + 64];
	size_t i, ok = 0;
	int code, perm = 0, temp = 0;

	b[0] = 0;
	*nb = 0;
	for (i = 0; i < sm->rcpts.n; i++) {
		code = client_cmd(c, "RCPT TO:<%s>", sm->rcpts.v[i]);
		if (code == 250 || code == 251) {
			ok++;
			continue;
		}
		if (code == 452 && ok > 0 && !perm && !temp) {
			if ((code = client_cmd(c, "RSET")) != 250)
				return sm_failed(c, code, "RSET", EX_PROTOCOL);
			if ((code = sm_mail(sm, c)) != 0)
				return code;
			b[++*nb] = i--;
			ok = 0;
			continue;
		}
		sm_what(what, sizeof(what), "recipient", sm->rcpts.v[i]);
		if (code == -1 || code == 421) {
			code = sm_failed(c, code, what, EX_NOUSER);
			if (perm)
				break;
			return code;
		}
		sm_print_reply(what, &c->reply);
		if (code / 100 == 5)
			perm++;
		else
			temp++;
	}
	b[*nb + 1] = sm->rcpts.n;
	if (perm == 0 && temp == 0)
		return 0;
	client_bye(c, 1);		/* a no-op if the session is gone */
	fprintf(stderr, "sendmail: message not sent: %d recipient%s refused\n",
	    perm + temp, perm + temp == 1 ? "" : "s");
	return perm ? EX_NOUSER : EX_TEMPFAIL;
}

static int
sm_batch(const struct sm *sm, struct client *c, size_t from, size_t to)
{
	char what[SM_ADDR_MAX + 64];
	size_t i;
	int code;

	if ((code = sm_mail(sm, c)) != 0)
		return code;
	for (i = from; i < to; i++) {
		code = client_cmd(c, "RCPT TO:<%s>", sm->rcpts.v[i]);
		if (code != 250 && code != 251)
			return sm_failed(c, code, sm_what(what, sizeof(what),
			    "recipient", sm->rcpts.v[i]), EX_NOUSER);
	}
	return sm_data(sm, c);
}

static int
sm_submit(const struct sm *sm)
{
	const char *path = conf_str(sm->conf, K_SUBMIT_SOCKET);
	struct client c;
	size_t *b, nb, i;
	int ex;

	memset(&c, 0, sizeof(c));
	buf_init(&c.in);
	buf_init(&c.reply);
	buf_init(&c.out);
	if (client_connect(&c, path) == -1) {
		fprintf(stderr, "sendmail: cannot connect to ");
		sm_put_clean(stderr, path, strlen(path));
		fprintf(stderr, ": %s (is ternd running?)\n", strerror(errno));
		return EX_TEMPFAIL;
	}
	b = xcalloc(sm->rcpts.n + 2, sizeof(*b));
	if ((ex = sm_hello(&c)) != 0 || (ex = sm_mail(sm, &c)) != 0 ||
	    (ex = sm_rcpts(sm, &c, b, &nb)) != 0 || (ex = sm_data(sm, &c)) != 0)
		goto out;
	for (i = 0; i < nb; i++) {
		if ((ex = sm_batch(sm, &c, b[i], b[i + 1])) != 0) {
			fprintf(stderr, "sendmail: the message was already "
			    "submitted for %zu of %zu recipients\n",
			    b[nb + 1] - b[nb] + b[i], sm->rcpts.n);
			goto out;
		}
	}
	(void)client_cmd(&c, "QUIT");
out:
	client_close(&c);
	free(b);
	buf_free(&c.in);
	buf_free(&c.reply);
	buf_free(&c.out);
	return ex;
}

/* ---- the sender and author ------------------------------------------------ */

static void
sm_identity(struct sm *sm)
{
	struct passwd *pw = getpwuid(getuid());
	const char *s = sm->sender, *why, *comma;
	size_t len;
	char *user = NULL;

	if (pw != NULL && pw->pw_name != NULL && pw->pw_name[0] != '\0') {
		user = sm_qualify(sm, pw->pw_name, strlen(pw->pw_name));
		if (sm->sender == NULL && sm->fullname == NULL &&
		    pw->pw_gecos != NULL && pw->pw_gecos[0] != '\0') {
			comma = strchr(pw->pw_gecos, ',');
			sm->authorname = xstrndup(pw->pw_gecos, comma ?
			    (size_t)(comma - pw->pw_gecos) :
			    strlen(pw->pw_gecos));
		}
	}
	if (sm->fullname != NULL)
		sm->authorname = xstrdup(sm->fullname);
	if (s == NULL) {
		if (user == NULL)
			sm_die(EX_NOUSER, "cannot find the name of user id %u; "
			    "give the sender with -f", (unsigned)getuid());
		sm->from = xstrdup(user);
		sm->author = user;
		return;
	}
	len = strlen(s);
	if (len >= 2 && s[0] == '<' && s[len - 1] == '>') {
		s++;
		len -= 2;
	}
	if ((why = sm_address_problem(s, len)) != NULL) {
		fputs("sendmail: bad sender \"", stderr);
		sm_put_clean(stderr, s, len > 200 ? 200 : len);
		fprintf(stderr, "\": %s\n", why);
		exit(EX_USAGE);
	}
	sm->from = len == 0 ? xstrdup("") : sm_qualify(sm, s, len);
	if (sm->from[0] != '\0') {
		sm->author = xstrdup(sm->from);
		free(user);
	} else if (user != NULL)
		sm->author = user;
	else
		sm->author = sm_qualify(sm, "MAILER-DAEMON", 13);
}

int
sendmail_main(int argc, char *argv[], const char *confpath)
{
	struct sm sm;
	struct buf in;
	int i;

	memset(&sm, 0, sizeof(sm));
	sm.confpath = confpath;
	sm.argv0 = argv[0];
	sm.mode = 'm';
	i = sm_options(&sm, argc, argv);
	if (sm.mode == 'p')
		sm_exec_ctl(&sm, "queue");
	if (sm.mode == 'i')
		sm_exec_ctl(&sm, "newaliases");
	sm.conf = ctl_config(sm.confpath, 0);
	sm.hostname = conf_str(sm.conf, K_HOSTNAME);
	sm.origin = conf_str(sm.conf, K_ORIGIN);
	for (; i < argc; i++)
		sm_arg_rcpts(&sm, argv[i]);
	if (sm.rcpts.n == 0 && !sm.tflag)
		sm_die(EX_USAGE, "no recipients");
	sm_identity(&sm);
	buf_init(&in);
	sm_read(STDIN_FILENO, sm.iflag, &in);
	sm_build(&sm, &in);
	buf_free(&in);
	if (sm.rcpts.n == 0)
		sm_die(EX_USAGE, "no recipients (none in the message's "
		    "To:, Cc: or Bcc: fields either)");
	return sm_submit(&sm);
}
