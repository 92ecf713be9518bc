/*
 * addr: the one mail address type, used by every process (the smtp process
 * on network input at MAIL and RCPT and in the SMTP client, the queue on
 * envelopes and aliases, the parent on delivery checks, ternctl).  Input is
 * untrusted: the parser is strict and bounded (a local part of at most 64
 * octets as written, a domain of at most 255), fails closed rule by rule,
 * and allocates nothing but libidn2's result.
 *
 * The parsed form keeps the local part unquoted (what the mailbox is
 * called: `"bob"` and `bob` are one mailbox, RFC 5321 2.4 and 4.1.2) with
 * its case, and the domain in lower-case ASCII with U-labels turned into
 * A-labels (IDNA2008 via libidn2, UTS 46 non-transitional mapping), so
 * domains compare with strcmp and go to DNS as they are.  A domain written
 * with U-labels also keeps its U-label form (decoded back from the
 * A-labels, so it is normalised), which the stored form and SMTPUTF8 peers
 * get; peers without SMTPUTF8 get the A-labels.  Printed for SMTP, the
 * local part is quoted exactly when it is not a dot-string.
 */
#include <arpa/inet.h>
#include <idn2.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/util.h"

#define LABEL_MAX	63

static int
addr_fail(const char **why, const char *msg, int code)
{
	if (why != NULL)
		*why = msg;
	return code;
}

static int
is_alnum(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9');
}

/* RFC 5322 atext, ASCII part. */
int
addr_is_atext(int c)
{
	return is_alnum(c) ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* RFC 5321 qtextSMTP. */
int
addr_is_qtext(int c)
{
	return c == 32 || c == 33 || (c >= 35 && c <= 91) ||
	    (c >= 93 && c <= 126);
}

/*
 * Length of the well-formed UTF-8 sequence at s (at most avail octets), or
 * 0: no overlong forms, surrogates or code points above U+10FFFF.
 */
size_t
addr_utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n, i;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (n > avail || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return n;
}

int
addr_has8bit(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* ---- local part ---------------------------------------------------------- */

/* A non-ASCII octet at s: its sequence length, or 0 (refused). */
static size_t
local_8bit(const char *s, size_t avail, unsigned flags, struct addr *a)
{
	size_t n;

	if (!(flags & ADDR_F_UTF8))
		return 0;
	if ((n = addr_utf8_seq((const unsigned char *)s, avail)) != 0)
		a->utf8 = 1;
	return n;
}

/* Append n octets to a->local at *off, within ADDR_LOCAL_MAX. */
static int
local_put(struct addr *a, size_t *off, const char *s, size_t n)
{
	if (*off + n > ADDR_LOCAL_MAX)
		return -1;
	memcpy(a->local + *off, s, n);
	*off += n;
	a->local[*off] = '\0';
	return 0;
}

/* Dot-string at s (up to len); *used is set to the octets it took. */
static int
local_dotstring(const char *s, size_t len, unsigned flags, struct addr *a,
    size_t *used, const char **why)
{
	size_t i = 0, atom, n, off = 0;

	for (;;) {
		for (atom = 0; i < len; atom += n, i += n) {
			n = 1;
			if ((unsigned char)s[i] >= 0x80) {
				if ((n = local_8bit(s + i, len - i, flags,
				    a)) == 0)
					return addr_fail(why, flags &
					    ADDR_F_UTF8 ? "malformed UTF-8" :
					    "non-ASCII address requires "
					    "SMTPUTF8", ADDR_ESYNTAX);
			} else if (!addr_is_atext((unsigned char)s[i]))
				break;
			if (local_put(a, &off, s + i, n) == -1)
				return addr_fail(why, "local part too long",
				    ADDR_ESYNTAX);
		}
		if (atom == 0)
			return addr_fail(why, "malformed local part",
			    ADDR_ESYNTAX);
		if (i >= len || s[i] != '.')
			break;
		if (local_put(a, &off, ".", 1) == -1)
			return addr_fail(why, "local part too long",
			    ADDR_ESYNTAX);
		i++;
	}
	*used = i;
	return 0;
}

/* Quoted-string at s (s[0] == '"'): qtextSMTP and quoted-pairSMTP. */
static int
local_quoted(const char *s, size_t len, unsigned flags, struct addr *a,
    size_t *used, const char **why)
{
	size_t i = 1, n, off = 0;
	unsigned char c;

	for (;;) {
		if (i >= len)
			return addr_fail(why, "unterminated quoted local part",
			    ADDR_ESYNTAX);
		c = (unsigned char)s[i];
		if (c == '"')
			break;
		n = 1;
		if (c >= 0x80) {
			if ((n = local_8bit(s + i, len - i, flags, a)) == 0)
				return addr_fail(why, flags & ADDR_F_UTF8 ?
				    "malformed UTF-8" : "non-ASCII address "
				    "requires SMTPUTF8", ADDR_ESYNTAX);
		} else if (c == '\\') {
			if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126)
				return addr_fail(why, "malformed quoted local "
				    "part", ADDR_ESYNTAX);
			i++;	/* the pair stands for its second octet */
		} else if (!addr_is_qtext(c))
			return addr_fail(why, "malformed quoted local part",
			    ADDR_ESYNTAX);
		if (local_put(a, &off, s + i, n) == -1)
			return addr_fail(why, "local part too long",
			    ADDR_ESYNTAX);
		i += n;
	}
	if (off == 0)
		return addr_fail(why, "empty local part", ADDR_ESYNTAX);
	*used = i + 1;
	return 0;
}

/* ---- domain -------------------------------------------------------------- */

/* Do the first n octets of a equal b, ignoring ASCII case? */
static int
str_casecmp_n(const char *a, const char *b, size_t n)
{
	char x[8];

	if (n >= sizeof(x) || strlen(a) < n)
		return 0;
	memcpy(x, a, n);
	x[n] = '\0';
	return str_casecmp(x, b) == 0;
}

/* "[" IPv4 "]" or "[IPv6:" IPv6 "]"; other tags route nowhere. */
static int
domain_literal(const char *s, size_t len, struct addr *a, const char **why)
{
	unsigned char bin[16];
	char tmp[64];

	if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof(tmp))
		return addr_fail(why, "malformed address literal",
		    ADDR_ESYNTAX);
	memcpy(tmp, s + 1, len - 2);
	tmp[len - 2] = '\0';
	if (str_casecmp_n(tmp, "IPv6:", 5)) {
		if (inet_pton(AF_INET6, tmp + 5, bin) != 1)
			return addr_fail(why, "malformed IPv6 address literal",
			    ADDR_ESYNTAX);
	} else if (inet_pton(AF_INET, tmp, bin) != 1)
		return addr_fail(why, "malformed address literal",
		    ADDR_ESYNTAX);
	memcpy(a->domain, s, len);
	a->domain[len] = '\0';
	return 0;
}

/* An LDH label of 1 to 63 octets, no hyphen at either end. */
static int
label_ldh(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > LABEL_MAX || s[0] == '-' || s[n - 1] == '-')
		return 0;
	for (i = 0; i < n; i++)
		if (!is_alnum((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

/* One U-label to its A-label, appended to b: 0, or -1 (not valid IDNA). */
static int
label_idna(const char *s, size_t n, struct buf *b)
{
	char in[ADDR_DOMAIN_MAX + 1], *out = NULL;
	size_t i;
	int r;

	if (n > ADDR_DOMAIN_MAX)
		return -1;
	for (i = 0; i < n; i += r) {
		if ((unsigned char)s[i] < 0x80)
			r = 1;
		else if ((r = (int)addr_utf8_seq((const unsigned char *)s + i,
		    n - i)) == 0)
			return -1;
	}
	memcpy(in, s, n);
	in[n] = '\0';
	r = idn2_to_ascii_8z(in, &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (r != IDN2_OK || out == NULL) {
		idn2_free(out);
		return -1;
	}
	/*
	 * One label in, one A-label out: a mapped full stop would be a
	 * trick, and so would a label of compatibility characters that
	 * maps to plain ASCII (fullwidth or circled letters).
	 */
	r = label_ldh(out, strlen(out)) && strncmp(out, "xn--", 4) == 0 ?
	    0 : -1;
	if (r == 0)
		buf_puts(b, out);
	idn2_free(out);
	return r;
}

/* Labels of s (len octets), each LDH or, with UTF-8 allowed, a U-label. */
static int
domain_labels(const char *s, size_t len, unsigned flags, struct buf *b,
    const char **why)
{
	size_t i = 0, n, k;
	int eight;

	for (;;) {
		n = 0;
		eight = 0;
		while (i + n < len && s[i + n] != '.')
			eight |= (unsigned char)s[i + n++] >= 0x80;
		if (eight && !(flags & ADDR_F_UTF8))
			return addr_fail(why, "non-ASCII address requires "
			    "SMTPUTF8", ADDR_ESYNTAX);
		if (eight) {
			if (label_idna(s + i, n, b) == -1)
				return addr_fail(why, "malformed "
				    "internationalized domain", ADDR_EIDNA);
		} else if (!label_ldh(s + i, n))
			return addr_fail(why, n > LABEL_MAX ? "domain label "
			    "too long" : "malformed domain", ADDR_ESYNTAX);
		else
			for (k = 0; k < n; k++)
				buf_putc(b, s[i + k]);
		i += n;
		if (i == len)
			break;
		buf_putc(b, '.');
		i++;		/* the '.'; an empty label after it fails */
	}
	return 0;
}

/* The U-label form of a->domain (its A-labels decoded), into udomain. */
static int
domain_unicode(struct addr *a)
{
	char *u = NULL;
	int r = -1;

	if (idn2_to_unicode_8z8z(a->domain, &u, 0) == IDN2_OK && u != NULL &&
	    str_copy(a->udomain, u, sizeof(a->udomain)) < sizeof(a->udomain))
		r = 0;
	idn2_free(u);
	return r;
}

/*
 * The U-label form must name the same A-labels again: an "xn--" label
 * beside U-labels that decodes to something IDNA2008 would encode
 * otherwise is malformed, or the form stored and sent on would be
 * another domain.
 */
static int
domain_roundtrip(const struct addr *a, unsigned flags)
{
	struct buf b;
	int r;

	buf_init(&b);
	buf_append(&b, "", 0);
	r = domain_labels(a->udomain, strlen(a->udomain), flags, &b, NULL);
	if (r == 0) {
		str_lower(b.data);
		r = strcmp(b.data, a->domain) == 0 ? 0 : -1;
	}
	buf_free(&b);
	return r;
}

static int
domain_parse(const char *s, size_t len, unsigned flags, struct addr *a,
    const char **why)
{
	struct buf b;
	int r;

	if (len == 0)
		return addr_fail(why, "missing domain", ADDR_ESYNTAX);
	if (len > ADDR_DOMAIN_MAX)
		return addr_fail(why, "domain too long", ADDR_ESYNTAX);
	if (s[0] == '[')
		return domain_literal(s, len, a, why);
	buf_init(&b);
	buf_append(&b, "", 0);
	r = domain_labels(s, len, flags, &b, why);
	if (r == 0 && b.len > ADDR_DOMAIN_MAX)
		r = addr_fail(why, "domain too long", ADDR_ESYNTAX);
	if (r == 0) {
		memcpy(a->domain, b.data, b.len + 1);
		str_lower(a->domain);
		if (addr_has8bit(s) && (domain_unicode(a) == -1 ||
		    domain_roundtrip(a, flags) != 0))
			r = addr_fail(why, "malformed internationalized domain",
			    ADDR_EIDNA);
	}
	buf_free(&b);
	return r;
}

/* ---- the address --------------------------------------------------------- */

int
addr_parse(const char *s, unsigned flags, struct addr *a, const char **why)
{
	size_t len = strlen(s), used;
	int r;

	memset(a, 0, sizeof(*a));
	if (len > ADDR_LOCAL_MAX + 2 * ADDR_DOMAIN_MAX)
		return addr_fail(why, "address too long", ADDR_ESYNTAX);
	if (s[0] == '"')
		r = local_quoted(s, len, flags, a, &used, why);
	else
		r = local_dotstring(s, len, flags, a, &used, why);
	if (r != 0)
		return r;
	if (used > ADDR_LOCAL_MAX)
		return addr_fail(why, "local part too long", ADDR_ESYNTAX);
	if (s[used] != '@')
		return addr_fail(why, "malformed address", ADDR_ESYNTAX);
	return domain_parse(s + used + 1, len - used - 1, flags, a, why);
}

int
addr_local_needs_quotes(const char *local)
{
	const char *p;

	if (*local == '\0' || *local == '.')
		return 1;
	for (p = local; *p; p++) {
		if (*p == '.' && (p[1] == '.' || p[1] == '\0'))
			return 1;
		if (*p != '.' && (unsigned char)*p < 0x80 &&
		    !addr_is_atext((unsigned char)*p))
			return 1;
	}
	return 0;
}

static size_t
addr_print(const struct addr *a, int ascii, char *out, size_t size)
{
	struct buf b;
	const char *p;
	size_t n;

	buf_init(&b);
	if (addr_local_needs_quotes(a->local)) {
		buf_putc(&b, '"');
		for (p = a->local; *p; p++) {
			if (*p == '"' || *p == '\\')
				buf_putc(&b, '\\');
			buf_putc(&b, *p);
		}
		buf_putc(&b, '"');
	} else
		buf_puts(&b, a->local);
	buf_putc(&b, '@');
	buf_puts(&b, !ascii && a->udomain[0] ? a->udomain : a->domain);
	n = b.len;
	if (size > 0)
		str_copy(out, b.data, size);
	buf_free(&b);
	return n;
}

size_t
addr_format(const struct addr *a, char *out, size_t size)
{
	return addr_print(a, 0, out, size);
}

size_t
addr_format_ascii(const struct addr *a, char *out, size_t size)
{
	return addr_print(a, 1, out, size);
}

int
addr_ascii(const char *s, char *out, size_t size)
{
	struct addr a;

	if (addr_parse(s, ADDR_F_UTF8, &a, NULL) != 0 ||
	    addr_format_ascii(&a, out, size) >= size)
		return -1;
	return 0;
}

int
addr_canon(const char *s, unsigned flags, char *out, size_t size,
    const char **why)
{
	struct addr a;
	int r;

	if ((r = addr_parse(s, flags, &a, why)) != 0)
		return r;
	if (addr_format(&a, out, size) >= size)
		return addr_fail(why, "address too long", ADDR_ESYNTAX);
	return 0;
}

int
addr_domain_ascii(const char *in, char *out, size_t size, const char **why)
{
	struct addr a;
	int r;

	memset(&a, 0, sizeof(a));
	if ((r = domain_parse(in, strlen(in), ADDR_F_UTF8, &a, why)) != 0)
		return -1;
	if (str_copy(out, a.domain, size) >= size) {
		addr_fail(why, "domain too long", -1);
		return -1;
	}
	return 0;
}

int
addr_eq(const struct addr *x, const struct addr *y)
{
	return strcmp(x->local, y->local) == 0 &&
	    str_casecmp(x->domain, y->domain) == 0;
}
