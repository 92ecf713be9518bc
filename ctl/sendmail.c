/*
 * sendmail: the sendmail(1) personality of ternctl, run by any local user.
 * It reads a message on stdin, completes its header (From:, Date: and
 * Message-ID: when missing; Bcc: removed), takes the recipients from the
 * command line and, with -t, from the header, and submits it over ESMTP on
 * the submit socket, where ternd's smtp process names the user by
 * SO_PEERCRED.  All or nothing: if any recipient is refused for good, no
 * copy is submitted.  When ternd cannot take the message for now (it is
 * stopped, or answers 4xx), the message is kept in the maildrop instead
 * (maildrop.c), and ternd picks it up when it can: the caller sees
 * success, as with Postfix's postdrop.  The daemon's replies are
 * untrusted text and are printed sanitised.  -bs speaks SMTP on standard
 * input instead (stdio.c); ternd runs the pickup of a drop file through
 * here too (pickup.c).
 */
#include <sys/random.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "ctl/ctl.h"
#include "ctl/sendmail.h"
#include "lib/log.h"
#include "lib/util.h"

/* A header field in the input: name, colon, value and continuations. */
struct field {
	size_t		 off;
	size_t		 len;		/* through the last line's LF */
	size_t		 namelen;
};

FILE	*sm_err;
/* ---- errors, usage ------------------------------------------------------ */

void
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
	    "[-C file] [-b m|p|i|s] [-o option] [--] [recipient ...]\n");
	exit(EX_USAGE);
}

void
sm_put_clean(FILE *fp, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		fputc(ch >= 32 && ch < 127 ? ch : '?', fp);
	}
}

void
sm_print_reply(const char *what, const struct buf *r)
{
	const char *p = r->data, *nl;
	size_t left = r->len;

	while (left > 0 && (nl = memchr(p, '\n', left)) != NULL) {
		fputs("sendmail: ", sm_err);
		sm_put_clean(sm_err, what, strlen(what));
		fputs(": ", sm_err);
		sm_put_clean(sm_err, p, (size_t)(nl - p));
		fputc('\n', sm_err);
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
	if (strcmp(m, "m") == 0 || strcmp(m, "p") == 0 ||
	    strcmp(m, "i") == 0 || strcmp(m, "s") == 0) {
		sm->mode = m[0];
		return;
	}
	if (strchr("vdtDhHP", m[0]) != NULL && m[0] != '\0' && m[1] == '\0')
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

void
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

void
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
void
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
		fputs("sendmail: ", sm_err);
		sm_put_clean(sm_err, what, strlen(what));
		fputs(": ", sm_err);
		fputs(c->why, sm_err);
		fputs(" (", sm_err);
		sm_put_clean(sm_err, c->path, strlen(c->path));
		fputs(")\n", sm_err);
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

static int
sm_hello(struct client *c)
{
	int code;

	if ((code = client_hello(c)) == 0)
		return 0;
	return sm_failed(c, code, c->stage, EX_UNAVAILABLE);
}

static int
sm_mail(const struct sm *sm, struct client *c)
{
	char what[SM_ADDR_MAX + 64];
	int code;

	if ((code = client_mail(c, sm)) == 250)
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
	fprintf(sm_err, "sendmail: message not sent: %d recipient%s refused\n",
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

static void
sm_mark_sent(struct sm *sm, size_t from, size_t to)
{
	for (; from < to; from++)
		sm->sent[from] = 1;
}

/*
 * One session on the submit socket.  sm->sent[] records the recipients
 * whose transaction ternd acknowledged, so that after a temporary failure
 * the rest can go to the maildrop.
 */
static int
sm_submit(struct sm *sm)
{
	const char *path = conf_str(sm->conf, K_SUBMIT_SOCKET);
	struct client c;
	size_t *b, nb, i;
	int ex;

	client_init(&c);
	if (client_connect(&c, path) == -1) {
		fprintf(sm_err, "sendmail: cannot connect to ");
		sm_put_clean(sm_err, path, strlen(path));
		fprintf(sm_err, ": %s (is ternd running?)\n", strerror(errno));
		client_free(&c);
		return EX_TEMPFAIL;
	}
	b = xcalloc(sm->rcpts.n + 2, sizeof(*b));
	if ((ex = sm_hello(&c)) != 0 || (ex = sm_mail(sm, &c)) != 0 ||
	    (ex = sm_rcpts(sm, &c, b, &nb)) != 0 || (ex = sm_data(sm, &c)) != 0)
		goto out;
	sm_mark_sent(sm, b[nb], b[nb + 1]);
	for (i = 0; i < nb; i++) {
		if ((ex = sm_batch(sm, &c, b[i], b[i + 1])) != 0) {
			fprintf(sm_err, "sendmail: the message was already "
			    "submitted for %zu of %zu recipients\n",
			    b[nb + 1] - b[nb] + b[i], sm->rcpts.n);
			goto out;
		}
		sm_mark_sent(sm, b[i], b[i + 1]);
	}
	(void)client_cmd(&c, "QUIT");
out:
	client_free(&c);
	free(b);
	return ex;
}

/* The first line of the diagnostics: why the message was dropped. */
static void
sm_first_line(const char *text, size_t len, char *out, size_t outlen)
{
	const char *nl = memchr(text, '\n', len);
	size_t n = nl ? (size_t)(nl - text) : len;

	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, text, n);
	out[n] = '\0';
}

/*
 * Submit the message, or keep it in the maildrop: after a temporary
 * failure (ternd stopped, restarting, out of disk, a 4xx), the
 * recipients ternd has not acknowledged go into a drop file, which ternd
 * picks up when it can, and the caller sees success.  A duplicate is
 * possible (ternd lost the connection after the end of the data), a loss
 * is not.  A permanent refusal is reported as before: nothing is kept.
 * Until the outcome is known, diagnostics are held back.
 */
int
sm_send(struct sm *sm)
{
	char *text = NULL, name[64], err[512], why[300];
	size_t textlen = 0, i, left = 0;
	FILE *mem = open_memstream(&text, &textlen);
	int ex;

	sm_err = mem ? mem : stderr;
	free(sm->sent);
	sm->sent = xcalloc(sm->rcpts.n + 1, 1);
	ex = sm_submit(sm);
	for (i = 0; i < sm->rcpts.n; i++)
		left += !sm->sent[i];
	if (ex == EX_TEMPFAIL && left > 0) {
		fflush(sm_err);
		sm_first_line(text ? text : "", textlen, why, sizeof(why));
		if (maildrop_write(sm, why, name, sizeof(name), err,
		    sizeof(err)) == 0)
			ex = 0;
		else
			fprintf(sm_err, "sendmail: the message could not be "
			    "kept for later either: %s\n", err);
	}
	sm_err = stderr;
	if (mem != NULL) {
		fclose(mem);
		if (ex != 0 && textlen > 0)
			fwrite(text, 1, textlen, stderr);
		free(text);
	}
	return ex;
}

/* The message's header section, through its empty line (or all of it). */
size_t
sm_header_len(const char *msg, size_t len)
{
	const char *p = msg;
	size_t left = len;
	const char *nl;

	if (len > 0 && msg[0] == '\n')
		return 1;
	while (left > 1 && (nl = memchr(p, '\n', left - 1)) != NULL) {
		if (nl[1] == '\n')
			return (size_t)(nl - msg) + 2;
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
	return len;
}

/*
 * The program that ran sendmail, for the trace: its parent's name as the
 * kernel keeps it (/proc/PPID/comm, at most 15 bytes), reduced to
 * letters, digits and ".", "_", "+", "-" (others become "_").  It is
 * what the caller is called, not proof of anything; the user is.
 */
static void
sm_program(struct sm *sm)
{
	char path[64], name[SM_PROGRAM_MAX + 2];
	ssize_t n;
	size_t i;
	int fd;

	sm->program[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)getppid());
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return;
	n = read(fd, name, sizeof(name) - 1);
	close(fd);
	if (n <= 0)
		return;
	if (n > SM_PROGRAM_MAX)
		n = SM_PROGRAM_MAX;
	if (name[n - 1] == '\n')
		n--;
	for (i = 0; i < (size_t)n; i++) {
		char ch = name[i];

		sm->program[i] = (ch >= 'a' && ch <= 'z') ||
		    (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		    ch == '.' || ch == '_' || ch == '+' || ch == '-' ? ch : '_';
	}
	sm->program[n] = '\0';
}

/* Forget one message (-bs sends several). */
void
sm_reset(struct sm *sm)
{
	size_t i;

	for (i = 0; i < sm->rcpts.n; i++)
		free(sm->rcpts.v[i]);
	free(sm->rcpts.v);
	sm->rcpts.v = NULL;
	sm->rcpts.n = 0;
	free(sm->from);
	free(sm->author);
	free(sm->authorname);
	free(sm->sent);
	sm->from = sm->author = sm->authorname = sm->sent = NULL;
	buf_free(&sm->msg);
	sm->hdrlen = 0;
}

/* ---- the sender and author ------------------------------------------------ */

/* ---- the sender and author ------------------------------------------------ */

void
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

	if (argc >= 2 && strcmp(argv[1], "--tern-pickup") == 0)
		return pickup_main(argc, argv);
	sm_err = stderr;
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
	sm_program(&sm);
	log_init("sendmail", 0, 0);
	if (sm.mode == 's') {
		if (i < argc)
			sm_die(EX_USAGE, "-bs takes no recipients");
		return stdio_main(&sm);
	}
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
	return sm_send(&sm);
}
