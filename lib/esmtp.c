/*
 * esmtp: parsers for the parameters of the DSN extension (RFC 3461) and
 * the BDAT argument (RFC 3030), and xtext.  Run by the smtp process on
 * client input (fail closed: each rule refuses on its own) and by the
 * queue and the SMTP client to print stored values for a next hop.
 */
#include <string.h>
#include <strings.h>

#include "lib/esmtp.h"
#include "lib/util.h"

static int
esmtp_fail(const char **why, const char *text)
{
	if (why)
		*why = text;
	return -1;
}

static int
esmtp_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int
esmtp_xtext_decode(const char *in, size_t n, char *out, size_t cap)
{
	size_t i, k = 0;
	int hi, lo;
	unsigned char c;

	if (cap == 0)
		return -1;
	for (i = 0; i < n; i++) {
		c = (unsigned char)in[i];
		if (c < 0x21 || c > 0x7e || c == '=')
			return -1;
		if (c == '+') {
			if (n - i < 3)
				return -1;
			if ((hi = esmtp_hex(in[i + 1])) == -1 ||
			    (lo = esmtp_hex(in[i + 2])) == -1)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
			if (c < 0x20 || c > 0x7e)
				return -1;
		}
		if (k + 1 >= cap)
			return -1;
		out[k++] = (char)c;
	}
	out[k] = '\0';
	return (int)k;
}

void
esmtp_xtext_encode(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	for (; *p; p++) {
		if (*p < 0x21 || *p > 0x7e || *p == '+' || *p == '=')
			buf_printf(b, "+%02X", (unsigned)*p);
		else
			buf_putc(b, *p);
	}
}

/* One comma-separated word of NOTIFY, case-insensitive. */
static unsigned
esmtp_notify_word(const char *w, size_t n)
{
	static const struct { const char *kw; unsigned bit; } kws[] = {
		{ "NEVER", DSN_NOTIFY_NEVER }, { "SUCCESS", DSN_NOTIFY_SUCCESS },
		{ "FAILURE", DSN_NOTIFY_FAILURE }, { "DELAY", DSN_NOTIFY_DELAY },
	};
	size_t i;

	for (i = 0; i < sizeof(kws) / sizeof(kws[0]); i++)
		if (strlen(kws[i].kw) == n && strncasecmp(w, kws[i].kw, n) == 0)
			return kws[i].bit;
	return 0;
}

int
esmtp_notify(const char *v, size_t n, unsigned *out, const char **why)
{
	size_t i = 0, w;
	unsigned bits = 0, bit;

	if (v == NULL || n == 0 || n > 64)
		return esmtp_fail(why, "bad NOTIFY");
	while (i < n) {
		for (w = 0; i + w < n && v[i + w] != ','; w++)
			;
		if ((bit = esmtp_notify_word(v + i, w)) == 0 || (bits & bit))
			return esmtp_fail(why, "bad NOTIFY");
		bits |= bit;
		i += w;
		if (i < n && ++i == n)
			return esmtp_fail(why, "bad NOTIFY");	/* trailing ',' */
	}
	/* RFC 3461 4.1: NEVER stands alone. */
	if ((bits & DSN_NOTIFY_NEVER) && bits != DSN_NOTIFY_NEVER)
		return esmtp_fail(why, "bad NOTIFY: NEVER with others");
	*out = bits;
	return 0;
}

int
esmtp_ret(const char *v, size_t n, int *out, const char **why)
{
	if (v != NULL && n == 4 && strncasecmp(v, "FULL", 4) == 0)
		*out = DSN_RET_FULL;
	else if (v != NULL && n == 4 && strncasecmp(v, "HDRS", 4) == 0)
		*out = DSN_RET_HDRS;
	else
		return esmtp_fail(why, "bad RET");
	return 0;
}

int
esmtp_envid(const char *v, size_t n, char *out, size_t cap,
    const char **why)
{
	if (v == NULL || n == 0 || n > DSN_ENVID_MAX ||
	    esmtp_xtext_decode(v, n, out, cap) <= 0)
		return esmtp_fail(why, "bad ENVID");
	return 0;
}

/* addr-type: an atom of letters, digits and '-', 1 to 32 long. */
static size_t
esmtp_addrtype(const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n && i <= 32; i++) {
		char c = v[i];

		if (c == ';')
			return i > 0 && i <= 32 ? i : 0;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '-'))
			return 0;
	}
	return 0;
}

int
esmtp_orcpt(const char *v, size_t n, char *out, size_t cap,
    const char **why)
{
	size_t t;

	if (v == NULL || n == 0 || n > DSN_ORCPT_MAX ||
	    (t = esmtp_addrtype(v, n)) == 0 || t + 2 > cap)
		return esmtp_fail(why, "bad ORCPT");
	memcpy(out, v, t + 1);
	if (esmtp_xtext_decode(v + t + 1, n - t - 1, out + t + 1,
	    cap - t - 1) <= 0)
		return esmtp_fail(why, "bad ORCPT");
	return 0;
}

int
esmtp_rcpt(const char *s, struct dsn_rcpt_params *rp, const char **why)
{
	int have_notify = 0;
	size_t n, kw;
	const char *eq;

	memset(rp, 0, sizeof(*rp));
	for (;;) {
		s += strspn(s, " ");
		if (*s == '\0')
			return 0;
		n = strcspn(s, " ");
		eq = memchr(s, '=', n);
		kw = eq ? (size_t)(eq - s) : n;
		if (kw == 6 && strncasecmp(s, "NOTIFY", 6) == 0) {
			if (have_notify++ || eq == NULL || esmtp_notify(eq + 1,
			    n - kw - 1, &rp->notify, why) == -1)
				return esmtp_fail(why, "bad NOTIFY");
		} else if (kw == 5 && strncasecmp(s, "ORCPT", 5) == 0) {
			if (rp->orcpt[0] != '\0' || eq == NULL ||
			    esmtp_orcpt(eq + 1, n - kw - 1, rp->orcpt,
			    sizeof(rp->orcpt), why) == -1)
				return esmtp_fail(why, "bad ORCPT");
		} else {
			esmtp_fail(why, "unsupported parameter");
			return -2;
		}
		s += n;
	}
}

void
esmtp_rcpt_print(struct buf *b, unsigned notify, const char *orcpt)
{
	static const char *const names[] = { "NEVER", "SUCCESS", "FAILURE",
	    "DELAY" };
	const char *semi;
	size_t i;
	int first = 1;

	if (notify != 0) {
		buf_puts(b, " NOTIFY=");
		for (i = 0; i < 4; i++)
			if (notify & (1u << i)) {
				buf_printf(b, "%s%s", first ? "" : ",",
				    names[i]);
				first = 0;
			}
	}
	if (orcpt != NULL && (semi = strchr(orcpt, ';')) != NULL &&
	    semi > orcpt && semi[1] != '\0') {
		buf_puts(b, " ORCPT=");
		buf_append(b, orcpt, (size_t)(semi - orcpt) + 1);
		esmtp_xtext_encode(b, semi + 1);
	}
}

void
esmtp_mail_print(struct buf *b, int ret, const char *envid)
{
	if (ret == DSN_RET_FULL || ret == DSN_RET_HDRS)
		buf_puts(b, ret == DSN_RET_HDRS ? " RET=HDRS" : " RET=FULL");
	if (envid != NULL && *envid != '\0') {
		buf_puts(b, " ENVID=");
		esmtp_xtext_encode(b, envid);
	}
}

int
esmtp_bdat(const char *arg, uint64_t *size, int *last, const char **why)
{
	size_t n = strspn(arg, "0123456789");
	uint64_t v = 0;
	size_t i;

	*last = 0;
	if (n == 0 || n > BDAT_SIZE_DIGITS || (arg[n] != '\0' &&
	    arg[n] != ' '))
		return esmtp_fail(why, "BDAT needs a chunk size");
	for (i = 0; i < n; i++)
		v = v * 10 + (uint64_t)(arg[i] - '0');
	*size = v;
	if (arg[n] == '\0')
		return 0;
	if (strcasecmp(arg + n + 1, "LAST") == 0) {
		*last = 1;
		return 0;
	}
	esmtp_fail(why, "BDAT takes a size and LAST only");
	return -2;
}
