/*
 * dsn: builds RFC 3464 bounce and delay notices as multipart/report
 * messages.  Run by the queue process, which hands the result to its own
 * queue with the null sender.  Remote replies and envelope strings are
 * untrusted: every one is reduced to printable ASCII (addresses keep
 * valid UTF-8 where RFC 6532/6533 allow it) and folded, so nothing a peer
 * said can add a header or break a line; only the original message is
 * copied as it is, and the boundary is checked against all of it.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "queue/dsn.h"
#include "lib/util.h"

#define DSN_WIDTH	76	/* soft fold column */
#define DSN_HARD	990	/* a word longer than this is cut */
#define DSN_DIAG_MAX	2048	/* diagnostic text kept, in octets */
#define DSN_TYPE_MAX	32	/* longest "type;" prefix recognised */

struct dsn_orig {
	const char	*data;		/* what the third part carries */
	size_t		 len;
	int		 full;		/* message/rfc822, else headers */
	int		 eightbit;
	int		 addcrlf;	/* data does not end in CRLF */
};

static int
dsn_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* Length of the valid UTF-8 sequence at p (decoded into *cp), or 0. */
static size_t
dsn_utf8(const unsigned char *p, size_t n, uint32_t *cp)
{
	size_t len, i;
	uint32_t v, min;

	if (p[0] < 0xc2 || p[0] > 0xf4)
		return 0;
	if (p[0] < 0xe0) {
		len = 2, v = p[0] & 0x1f, min = 0x80;
	} else if (p[0] < 0xf0) {
		len = 3, v = p[0] & 0x0f, min = 0x800;
	} else {
		len = 4, v = p[0] & 0x07, min = 0x10000;
	}
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (p[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

static int
dsn_has8bit(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 0x80)
			return 1;
	return 0;
}

/*
 * Append n bytes of s as one line of text: whitespace and line breaks
 * become single spaces, other controls and 8-bit bytes '?', except valid
 * UTF-8 when utf8 is set; trimmed; at most max octets then "...".
 */
static void
dsn_clean(struct buf *b, const char *s, size_t n, int utf8, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, l, start = b->len;
	uint32_t cp;
	int space = 0;

	while (i < n) {
		if (b->len - start >= max) {
			buf_puts(b, "...");
			return;
		}
		if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' ||
		    p[i] == '\n') {
			space = b->len > start;
			i++;
			continue;
		}
		if (space)
			buf_putc(b, ' ');
		space = 0;
		if (p[i] >= 0x80 && utf8 && (l = dsn_utf8(p + i, n - i, &cp))) {
			buf_append(b, p + i, l);
			i += l;
		} else {
			buf_putc(b, dsn_ctl(p[i]) || p[i] >= 0x80 ? '?' : p[i]);
			i++;
		}
	}
}

/*
 * RFC 6533 utf-8-addr-xtext: non-ASCII code points (and, when specials is
 * set, '\', '+', '=' and anything not printable) become \x{HEX}.
 */
static void
dsn_xtext(struct buf *b, const char *s, size_t n, int specials)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, l;
	uint32_t cp;

	while (i < n) {
		if (p[i] >= 0x80) {
			if ((l = dsn_utf8(p + i, n - i, &cp)) == 0) {
				buf_putc(b, '?');
				i++;
				continue;
			}
			buf_printf(b, "\\x{%X}", (unsigned)cp);
			i += l;
		} else if (dsn_ctl(p[i]) || p[i] == ' ' || (specials &&
		    (p[i] == '\\' || p[i] == '+' || p[i] == '='))) {
			buf_printf(b, "\\x{%X}", (unsigned)p[i]);
			i++;
		} else {
			buf_putc(b, p[i++]);
		}
	}
}

/* "type;" prefix: 1 with its length and the value after it, else 0. */
static int
dsn_typed(const char *s, size_t *tlen, const char **val)
{
	size_t i;

	for (i = 0; i < DSN_TYPE_MAX; i++) {
		if (s[i] == ';' && i > 0)
			break;
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	}
	if (s[i] != ';')
		return 0;
	*tlen = i;
	s += i + 1;
	while (*s == ' ' || *s == '\t')
		s++;
	*val = s;
	return 1;
}

/* "rfc822; addr", or "utf-8; addr-xtext" for an SMTPUTF8 address. */
static void
dsn_addr_typed(struct buf *b, const char *addr)
{
	const char *val;
	size_t tlen;

	if (dsn_typed(addr, &tlen, &val)) {
		if (tlen == 5 && strncasecmp(addr, "utf-8", 5) == 0) {
			buf_puts(b, "utf-8; ");
			dsn_xtext(b, val, strlen(val), 0);
			return;
		}
		dsn_clean(b, addr, tlen, 0, DSN_TYPE_MAX);
		buf_puts(b, "; ");
		addr = val;
	} else if (dsn_has8bit(addr, strlen(addr))) {
		buf_puts(b, "utf-8; ");
		dsn_xtext(b, addr, strlen(addr), 1);
		return;
	} else
		buf_puts(b, "rfc822; ");
	dsn_clean(b, addr, strlen(addr), 0, DSN_HARD);
}

/* An address for people to read: ASCII, non-ASCII as \x{HEX}. */
static void
dsn_addr_text(struct buf *b, const char *addr)
{
	struct buf t;

	buf_init(&t);
	dsn_xtext(&t, addr, strlen(addr), 0);
	dsn_clean(b, t.data, t.len, 0, DSN_HARD);
	buf_free(&t);
}

/* "type; value" with a default type when the value carries none. */
static void
dsn_typed_value(struct buf *b, const char *s, const char *deftype,
    size_t max)
{
	const char *val;
	size_t tlen;

	if (dsn_typed(s, &tlen, &val)) {
		dsn_clean(b, s, tlen, 0, DSN_TYPE_MAX);
		s = val;
	} else
		buf_puts(b, deftype);
	buf_puts(b, "; ");
	dsn_clean(b, s, strlen(s), 0, max);
}

/*
 * Append cleaned text (single spaces, no controls) starting at column
 * col, folding at spaces before width and cutting words that would pass
 * DSN_HARD; continuation lines start with indent.  Ends with CRLF.
 */
static void
dsn_fold(struct buf *b, const char *s, size_t col, const char *indent,
    size_t width)
{
	size_t w, take, ilen = strlen(indent);
	int fresh = 1;

	while (*s != '\0') {
		while (*s == ' ')
			s++;
		if ((w = strcspn(s, " ")) == 0)
			break;
		if (!fresh && col + 1 + w > width) {
			buf_puts(b, "\r\n");
			buf_puts(b, indent);
			col = ilen;
		} else if (!fresh) {
			buf_putc(b, ' ');
			col++;
		}
		while (col + w > DSN_HARD) {
			take = DSN_HARD - col;
			buf_append(b, s, take);
			buf_puts(b, "\r\n");
			buf_puts(b, indent);
			col = ilen;
			s += take;
			w -= take;
		}
		buf_append(b, s, w);
		col += w;
		s += w;
		fresh = 0;
	}
	buf_puts(b, "\r\n");
}

/* A header field from a cleaned value. */
static void
dsn_field(struct buf *b, const char *name, const char *value)
{
	buf_printf(b, "%s: ", name);
	dsn_fold(b, value, strlen(name) + 2, " ", DSN_WIDTH + 2);
}

/* RFC 5322 date-time, English names whatever the locale. */
static void
dsn_date(struct buf *b, long long t)
{
	static const char *const day[] = {
		"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"
	};
	static const char *const mon[] = {
		"Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"
	};
	time_t tt = (time_t)t;
	struct tm tm;
	long off;

	if (localtime_r(&tt, &tm) == NULL && gmtime_r(&tt, &tm) == NULL)
		memset(&tm, 0, sizeof(tm));
	off = tm.tm_gmtoff / 60;
	buf_printf(b, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld",
	    day[tm.tm_wday % 7], tm.tm_mday, mon[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
	    off < 0 ? '-' : '+', (off < 0 ? -off : off) / 60,
	    (off < 0 ? -off : off) % 60);
}

static void
dsn_date_field(struct buf *b, const char *name, long long t)
{
	struct buf v;

	buf_init(&v);
	dsn_date(&v, t);
	dsn_field(b, name, v.data);
	buf_free(&v);
}

static int
dsn_random_hex(char *out, size_t nbytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char r[32];
	size_t i;

	if (nbytes > sizeof(r) ||
	    getrandom(r, nbytes, 0) != (ssize_t)nbytes)
		return -1;
	for (i = 0; i < nbytes; i++) {
		out[2 * i] = hex[r[i] >> 4];
		out[2 * i + 1] = hex[r[i] & 15];
	}
	out[2 * nbytes] = '\0';
	return 0;
}

/* Our host name reduced to what a Message-ID or From may carry. */
static void
dsn_host(struct buf *b, const char *s)
{
	size_t i;
	char c;

	for (i = 0; i < 255 && (c = s[i]) != '\0'; i++) {
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr(".-[]:", c) != NULL)
			buf_putc(b, c);
		else
			buf_putc(b, '-');
	}
}

static int
dsn_status_ok(const char *s)
{
	size_t i, n;

	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5'))
		return 0;
	s++;
	for (i = 0; i < 2; i++) {
		if (*s++ != '.')
			return 0;
		for (n = 0; *s >= '0' && *s <= '9'; s++)
			n++;
		if (n < 1 || n > 3)
			return 0;
	}
	return *s == '\0';
}

static const char *
dsn_action(const struct dsn_msg *m, const struct dsn_rcpt *r)
{
	static const char *const ok[] = {
		"failed", "delayed", "delivered", "relayed", "expanded"
	};
	size_t i;

	for (i = 0; r->action != NULL && i < sizeof(ok) / sizeof(ok[0]); i++)
		if (str_casecmp(r->action, ok[i]) == 0)
			return ok[i];
	return m->delayed ? "delayed" : "failed";
}

static const char *
dsn_status(const struct dsn_msg *m, const struct dsn_rcpt *r)
{
	const char *a;

	if (dsn_status_ok(r->status))
		return r->status;
	a = dsn_action(m, r);
	if (strcmp(a, "failed") == 0)
		return "5.0.0";
	if (strcmp(a, "delayed") == 0)
		return "4.0.0";
	return "2.0.0";
}

/* 1 if every line ends in CRLF, none is over DSN_LINE_MAX, no NUL. */
static int
dsn_lines_ok(const char *s, size_t n)
{
	size_t i, col = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '\0')
			return 0;
		if (s[i] == '\r') {
			if (i + 1 >= n || s[i + 1] != '\n')
				return 0;
			i++;
			col = 0;
			continue;
		}
		if (s[i] == '\n' || ++col > DSN_LINE_MAX)
			return 0;
	}
	return 1;
}

/* Choose what the third part carries. */
static void
dsn_split(const struct dsn_msg *m, struct dsn_orig *o)
{
	const char *sep;

	memset(o, 0, sizeof(*o));
	if (m->original == NULL || m->original_len == 0)
		return;
	if (m->return_full && m->original_len <= m->max_full &&
	    dsn_lines_ok(m->original, m->original_len)) {
		o->full = 1;
		o->data = m->original;
		o->len = m->original_len;
	} else {
		o->data = m->original;
		if (m->original_len >= 2 && memcmp(m->original, "\r\n", 2) == 0)
			o->len = 0;
		else if ((sep = memmem(m->original, m->original_len,
		    "\r\n\r\n", 4)) != NULL)
			o->len = (size_t)(sep - m->original) + 2;
		else
			o->len = m->original_len;
	}
	o->eightbit = dsn_has8bit(o->data, o->len);
	o->addcrlf = o->len > 0 && (o->len < 2 ||
	    memcmp(o->data + o->len - 2, "\r\n", 2) != 0);
}

static void
dsn_text_rcpt(struct buf *b, const struct dsn_msg *m,
    const struct dsn_rcpt *r)
{
	struct buf v;
	const char *diag, *val;
	size_t tlen;

	buf_init(&v);
	buf_putc(&v, '<');
	dsn_addr_text(&v, r->rcpt);
	buf_puts(&v, ">: ");
	if ((diag = r->diagnostic) != NULL && *diag != '\0') {
		if (dsn_typed(diag, &tlen, &val))
			diag = val;
		dsn_clean(&v, diag, strlen(diag), 0, DSN_DIAG_MAX);
	} else
		buf_printf(&v, "%s (status %s)", strcmp(dsn_action(m, r),
		    "delayed") == 0 ? "delivery delayed" : strcmp(dsn_action(m,
		    r), "failed") == 0 ? "delivery failed" : dsn_action(m, r),
		    dsn_status(m, r));
	if (r->retry_until != 0 && strcmp(dsn_action(m, r), "delayed") == 0) {
		buf_puts(&v, " (will be retried until ");
		dsn_date(&v, r->retry_until);
		buf_putc(&v, ')');
	}
	dsn_fold(b, v.data, 0, "    ", DSN_WIDTH);
	buf_free(&v);
}

static void
dsn_text(struct buf *b, const struct dsn_msg *m, const struct dsn_rcpt *r,
    size_t n, const struct dsn_orig *o, const char *host)
{
	struct buf v;
	size_t i;

	buf_init(&v);
	buf_printf(&v, "This is the mail system at host %s.", host);
	dsn_fold(b, v.data, 0, "", DSN_WIDTH);
	buf_puts(b, "\r\n");
	buf_reset(&v);
	if (m->success)
		buf_puts(&v, "Your message was delivered to the recipients "
		    "below, or handed on to a system that reports no further "
		    "(relayed), as you asked.");
	else if (m->delayed)
		buf_puts(&v, "Your message could not be delivered yet to one "
		    "or more recipients. The mail system will keep trying; "
		    "you do not need to send it again.");
	else
		buf_puts(&v, "I'm sorry to have to inform you that your "
		    "message could not be delivered to one or more "
		    "recipients.");
	if (o->data != NULL)
		buf_puts(&v, o->full ? " It is attached below." :
		    " Its headers are attached below.");
	dsn_fold(b, v.data, 0, "", DSN_WIDTH);
	buf_puts(b, "\r\n");
	for (i = 0; i < n; i++) {
		if (i > 0)
			buf_puts(b, "\r\n");
		dsn_text_rcpt(b, m, &r[i]);
	}
	buf_free(&v);
}

static void
dsn_status_rcpt(struct buf *b, const struct dsn_msg *m,
    const struct dsn_rcpt *r)
{
	struct buf v;
	const char *action = dsn_action(m, r);

	buf_init(&v);
	buf_puts(b, "\r\n");
	if (r->orcpt != NULL && *r->orcpt != '\0') {
		dsn_addr_typed(&v, r->orcpt);
		dsn_field(b, "Original-Recipient", v.data);
		buf_reset(&v);
	}
	dsn_addr_typed(&v, r->rcpt);
	dsn_field(b, "Final-Recipient", v.data);
	buf_printf(b, "Action: %s\r\nStatus: %s\r\n", action,
	    dsn_status(m, r));
	if (r->remote_mta != NULL && *r->remote_mta != '\0') {
		buf_reset(&v);
		dsn_typed_value(&v, r->remote_mta, "dns", DSN_HARD);
		dsn_field(b, "Remote-MTA", v.data);
	}
	if (r->diagnostic != NULL && *r->diagnostic != '\0') {
		buf_reset(&v);
		dsn_typed_value(&v, r->diagnostic, "smtp", DSN_DIAG_MAX);
		dsn_field(b, "Diagnostic-Code", v.data);
	}
	if (r->last_attempt != 0)
		dsn_date_field(b, "Last-Attempt-Date", r->last_attempt);
	if (r->retry_until != 0 && strcmp(action, "delayed") == 0)
		dsn_date_field(b, "Will-Retry-Until", r->retry_until);
	buf_free(&v);
}

static void
dsn_status_part(struct buf *b, const struct dsn_msg *m,
    const struct dsn_rcpt *r, size_t n, const char *host)
{
	struct buf v;
	size_t i;

	buf_init(&v);
	if (m->envid != NULL && *m->envid != '\0') {
		dsn_clean(&v, m->envid, strlen(m->envid), 0, DSN_HARD);
		dsn_field(b, "Original-Envelope-Id", v.data);
		buf_reset(&v);
	}
	buf_printf(&v, "dns; %s", host);
	dsn_field(b, "Reporting-MTA", v.data);
	if (m->arrival != 0)
		dsn_date_field(b, "Arrival-Date", m->arrival);
	if (m->queue_id != NULL && *m->queue_id != '\0') {
		buf_reset(&v);
		dsn_clean(&v, m->queue_id, strlen(m->queue_id), 0, DSN_HARD);
		dsn_field(b, "X-Queue-ID", v.data);
	}
	for (i = 0; i < n; i++)
		dsn_status_rcpt(b, m, &r[i]);
	buf_free(&v);
}

static int
dsn_contains(const struct buf *b, const char *needle)
{
	return b->len > 0 && memmem(b->data, b->len, needle,
	    strlen(needle)) != NULL;
}

/* A boundary found in none of the parts. */
static int
dsn_boundary(char *out, size_t outlen, const struct buf *text,
    const struct buf *status, const struct dsn_orig *o)
{
	char hex[2 * 12 + 1];
	int tries;

	for (tries = 0; tries < 8; tries++) {
		if (dsn_random_hex(hex, 12) == -1)
			return -1;
		if (snprintf(out, outlen, "=_tern_%s", hex) >= (int)outlen)
			return -1;
		if (!dsn_contains(text, out) && !dsn_contains(status, out) &&
		    (o->len == 0 || memmem(o->data, o->len, out,
		    strlen(out)) == NULL))
			return 0;
	}
	return -1;
}

static void
dsn_headers(struct buf *b, const struct dsn_msg *m, const char *host,
    const char *bnd, const char *msgid, int eightbit)
{
	struct buf v;

	buf_init(&v);
	dsn_date_field(b, "Date", m->now ? m->now : (long long)time(NULL));
	buf_puts(&v, "Mail Delivery System <");
	if (m->from_addr != NULL && *m->from_addr != '\0')
		dsn_clean(&v, m->from_addr, strlen(m->from_addr), 0, DSN_HARD);
	else
		buf_printf(&v, "MAILER-DAEMON@%s", host);
	buf_putc(&v, '>');
	dsn_field(b, "From", v.data);
	buf_reset(&v);
	buf_putc(&v, '<');
	dsn_clean(&v, m->to, strlen(m->to), 1, DSN_HARD);
	buf_putc(&v, '>');
	dsn_field(b, "To", v.data);
	dsn_field(b, "Subject", m->success ? "Successful Mail Delivery "
	    "Report" : m->delayed ? "Delayed Mail (still being retried)" :
	    "Undelivered Mail Returned to Sender");
	buf_printf(b, "Message-ID: <%s@%s>\r\n", msgid, host);
	buf_puts(b, "Auto-Submitted: auto-replied\r\n");
	buf_puts(b, "MIME-Version: 1.0\r\n");
	buf_printf(b, "Content-Type: multipart/report; "
	    "report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n", bnd);
	if (eightbit)
		buf_puts(b, "Content-Transfer-Encoding: 8bit\r\n");
	buf_puts(b, "\r\n");
	buf_free(&v);
}

static void
dsn_assemble(struct buf *b, const struct dsn_msg *m, const char *host,
    const char *bnd, const char *msgid, const struct buf *text,
    const struct buf *status, const struct dsn_orig *o)
{
	dsn_headers(b, m, host, bnd, msgid, o->eightbit);
	buf_puts(b, "This is a MIME-encapsulated message.\r\n\r\n");
	buf_printf(b, "--%s\r\n", bnd);
	buf_puts(b, "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
	buf_append(b, text->data, text->len);
	buf_printf(b, "\r\n--%s\r\n", bnd);
	buf_puts(b, "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n");
	buf_append(b, status->data, status->len);
	if (o->data != NULL) {
		buf_printf(b, "\r\n--%s\r\n", bnd);
		buf_printf(b, "Content-Description: %s message%s\r\n",
		    m->success ? "Delivered" : m->delayed ? "Delayed" :
		    "Undelivered",
		    o->full ? "" : " headers");
		buf_puts(b, o->full ? "Content-Type: message/rfc822\r\n" :
		    "Content-Type: text/rfc822-headers\r\n");
		if (o->eightbit)
			buf_puts(b, "Content-Transfer-Encoding: 8bit\r\n");
		buf_puts(b, "\r\n");
		buf_append(b, o->data, o->len);
		if (o->addcrlf)
			buf_puts(b, "\r\n");
	}
	buf_printf(b, "\r\n--%s--\r\n", bnd);
}

int
dsn_build(const struct dsn_msg *m, const struct dsn_rcpt *r, size_t n,
    struct buf *out)
{
	struct buf host, text, status;
	struct dsn_orig o;
	char bnd[64], msgid[64], hex[2 * 10 + 1];
	size_t i;
	int rc = -1;

	if (m == NULL || r == NULL || n == 0 || out == NULL ||
	    m->to == NULL || m->to[0] == '\0' || m->reporting_mta == NULL ||
	    m->reporting_mta[0] == '\0')
		return -1;
	for (i = 0; i < n; i++)
		if (r[i].rcpt == NULL || r[i].rcpt[0] == '\0')
			return -1;
	buf_init(&host);
	buf_init(&text);
	buf_init(&status);
	dsn_host(&host, m->reporting_mta);
	dsn_split(m, &o);
	dsn_text(&text, m, r, n, &o, host.data);
	dsn_status_part(&status, m, r, n, host.data);
	if (dsn_boundary(bnd, sizeof(bnd), &text, &status, &o) == 0 &&
	    dsn_random_hex(hex, 10) == 0) {
		snprintf(msgid, sizeof(msgid), "%lld.%s",
		    m->now ? m->now : (long long)time(NULL), hex);
		dsn_assemble(out, m, host.data, bnd, msgid, &text, &status,
		    &o);
		rc = 0;
	}
	buf_free(&host);
	buf_free(&text);
	buf_free(&status);
	return rc;
}
