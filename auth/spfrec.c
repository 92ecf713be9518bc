/*
 * spfrec: the syntax of an SPF record (RFC 7208 4.6.1, 5, 6, 7.1) checked
 * whole before a result is trusted, where libspf2 accepts what the
 * grammar does not: a domain-spec without a proper last label, bad macros,
 * repeated redirect= or exp=, an empty modifier, non-ASCII text, unknown
 * mechanisms.  Pure functions on strings; runs in the smtp process's SPF
 * threads and in ternctl check, and under its fuzz target.
 */
#include <arpa/inet.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth/spf.h"
#include "lib/util.h"

static int
spfrec_fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -1;
}

static int
spfrec_delim(int c)
{
	return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

/*
 * macro-string, or for a domain-spec the same followed by domain-end:
 * ("." toplabel ["."]) or a macro-expand at its very end.
 */
int
spf_macro_check(const char *s, size_t len, int domainspec, const char **why)
{
	size_t i = 0;
	int endmacro = 0;

	if (domainspec && len == 0)
		return spfrec_fail(why, "empty domain-spec");
	while (i < len) {
		unsigned char c = (unsigned char)s[i];

		endmacro = 0;
		if ((c < 0x21 && !(domainspec == 2 && c == ' ')) || c > 0x7e)
			return spfrec_fail(why, "character outside ASCII");
		if (c != '%') {
			i++;
			continue;
		}
		if (i + 1 >= len)
			return spfrec_fail(why, "'%' at the end");
		c = (unsigned char)s[i + 1];
		if (c == '%' || c == '_' || c == '-') {
			i += 2;
			endmacro = 1;
			continue;
		}
		if (c != '{')
			return spfrec_fail(why, "bad '%' escape");
		i += 2;
		if (i >= len || !strchr("slodiphcrtvSLODIPHCRTV", s[i]) ||
		    s[i] == '\0')
			return spfrec_fail(why, "bad macro letter");
		if (domainspec == 1 && strchr("crtCRT", s[i]))
			return spfrec_fail(why, "macro letter only allowed in "
			    "explanations");
		i++;
		while (i < len && isdigit((unsigned char)s[i]))
			i++;
		if (i < len && (s[i] == 'r' || s[i] == 'R'))
			i++;
		while (i < len && spfrec_delim(s[i]))
			i++;
		if (i >= len || s[i] != '}')
			return spfrec_fail(why, "unterminated macro");
		i++;
		endmacro = 1;
	}
	if (domainspec != 1 || endmacro)
		return 0;
	/* domain-end: "." toplabel [ "." ] */
	{
		size_t end = len, start;
		int alpha = 0;

		if (s[end - 1] == '.')
			end--;
		start = end;
		while (start > 0 && s[start - 1] != '.')
			start--;
		if (start == 0 || start == end)
			return spfrec_fail(why, "domain-spec without a top "
			    "label");
		for (size_t k = start; k < end; k++) {
			if (isalpha((unsigned char)s[k]))
				alpha = 1;
			else if (!isdigit((unsigned char)s[k]) && s[k] != '-')
				return spfrec_fail(why, "bad top label");
		}
		if (!alpha || s[start] == '-' || s[end - 1] == '-')
			return spfrec_fail(why, "bad top label");
	}
	return 0;
}

/* "/N" with no leading zero, 0 <= N <= max; advances *p. */
static int
spfrec_cidr(const char **p, const char *end, int max)
{
	const char *q = *p + 1;
	int n = 0, digits = 0;

	if (q >= end || !isdigit((unsigned char)*q))
		return -1;
	if (*q == '0' && q + 1 < end && isdigit((unsigned char)q[1]))
		return -1;
	while (q < end && isdigit((unsigned char)*q) && digits < 4) {
		n = n * 10 + (*q - '0');
		q++;
		digits++;
	}
	if (n > max)
		return -1;
	*p = q;
	return 0;
}

/* dual-cidr-length: [ "/" ip4 ] [ "//" ip6 ], at the end of [p, end). */
static int
spfrec_dual_cidr(const char *p, const char *end)
{
	if (p < end && p[0] == '/' && (p + 1 >= end || p[1] != '/'))
		if (spfrec_cidr(&p, end, 32) == -1)
			return -1;
	if (p + 1 < end && p[0] == '/' && p[1] == '/') {
		p++;
		if (spfrec_cidr(&p, end, 128) == -1)
			return -1;
	}
	return p == end ? 0 : -1;
}

/* Where the cidr part of "a:domain/24" starts: the first '/' followed by
 * digits or '/' that ends the term. */
static const char *
spfrec_cidr_start(const char *s, const char *end)
{
	for (const char *p = s; p < end; p++) {
		if (*p != '/')
			continue;
		if (spfrec_dual_cidr(p, end) == 0)
			return p;
	}
	return end;
}

static int
spfrec_ip4(const char *s, size_t len)
{
	char buf[32];
	struct in_addr a;
	int parts = 0;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '.')
			continue;
		if (!isdigit((unsigned char)buf[i]))
			return -1;
		if ((i == 0 || buf[i - 1] == '.') && buf[i] == '0' &&
		    i + 1 < len && isdigit((unsigned char)buf[i + 1]))
			return -1;
		if (i == 0 || buf[i - 1] == '.')
			parts++;
	}
	return parts == 4 && inet_pton(AF_INET, buf, &a) == 1 ? 0 : -1;
}

static int
spfrec_ip6(const char *s, size_t len)
{
	char buf[64];
	struct in6_addr a;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1 ? 0 : -1;
}

static int
spfrec_is(const char *name, size_t nlen, const char *want)
{
	return strlen(want) == nlen && strncasecmp(name, want, nlen) == 0;
}

/* One directive (qualifier already skipped): mechanism [":" arg] [cidr]. */
static int
spfrec_directive(const char *t, const char *end, const char **why)
{
	const char *p = t, *arg, *cidr;
	size_t nlen;

	while (p < end && isalnum((unsigned char)*p))
		p++;
	nlen = (size_t)(p - t);
	if (spfrec_is(t, nlen, "all"))
		return p == end ? 0 : spfrec_fail(why, "junk after all");
	if (spfrec_is(t, nlen, "include") || spfrec_is(t, nlen, "exists")) {
		if (p == end || *p != ':')
			return spfrec_fail(why, "mechanism needs a domain");
		return spf_macro_check(p + 1, (size_t)(end - p - 1), 1, why);
	}
	if (spfrec_is(t, nlen, "ip4") || spfrec_is(t, nlen, "ip6")) {
		int v6 = t[2] == '6';

		if (p == end || *p != ':')
			return spfrec_fail(why, "ip4/ip6 needs an address");
		arg = p + 1;
		cidr = memchr(arg, '/', (size_t)(end - arg));
		if (cidr == NULL)
			cidr = end;
		if ((v6 ? spfrec_ip6(arg, (size_t)(cidr - arg)) :
		    spfrec_ip4(arg, (size_t)(cidr - arg))) == -1)
			return spfrec_fail(why, "bad network address");
		if (cidr < end && spfrec_cidr(&cidr, end, v6 ? 128 : 32) == -1)
			return spfrec_fail(why, "bad prefix length");
		return cidr == end ? 0 : spfrec_fail(why, "bad prefix length");
	}
	if (spfrec_is(t, nlen, "a") || spfrec_is(t, nlen, "mx") ||
	    spfrec_is(t, nlen, "ptr")) {
		int isptr = nlen == 3;

		if (p < end && *p == ':') {
			cidr = isptr ? end : spfrec_cidr_start(p + 1, end);
			if (spf_macro_check(p + 1, (size_t)(cidr - p - 1), 1,
			    why) == -1)
				return -1;
			p = cidr;
		}
		if (p == end)
			return 0;
		if (isptr || spfrec_dual_cidr(p, end) == -1)
			return spfrec_fail(why, "bad prefix length");
		return 0;
	}
	return spfrec_fail(why, "unknown mechanism");
}

int
spf_record_check(const char *rec, const char **why)
{
	const char *p, *t, *end;
	int redirects = 0, exps = 0;

	if (strncasecmp(rec, "v=spf1", 6) != 0 ||
	    (rec[6] != '\0' && rec[6] != ' '))
		return spfrec_fail(why, "not an SPF version 1 record");
	for (p = rec; *p; p++)
		if ((unsigned char)*p > 0x7e || ((unsigned char)*p < 0x20))
			return spfrec_fail(why, "character outside ASCII");
	p = rec + 6;
	for (;;) {
		const char *q;

		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		t = p;
		while (*p && *p != ' ')
			p++;
		end = p;
		/* A modifier: name "=" with name = ALPHA *(ALNUM / - _ .) */
		q = t;
		if (isalpha((unsigned char)*q)) {
			while (q < end && (isalnum((unsigned char)*q) ||
			    *q == '-' || *q == '_' || *q == '.'))
				q++;
			if (q < end && *q == '=') {
				size_t nlen = (size_t)(q - t);

				if (spfrec_is(t, nlen, "redirect")) {
					if (++redirects > 1)
						return spfrec_fail(why,
						    "redirect= twice");
				} else if (spfrec_is(t, nlen, "exp")) {
					if (++exps > 1)
						return spfrec_fail(why,
						    "exp= twice");
				} else {
					if (spf_macro_check(q + 1,
					    (size_t)(end - q - 1), 0, why))
						return -1;
					continue;
				}
				if (spf_macro_check(q + 1,
				    (size_t)(end - q - 1), 1, why) == -1)
					return -1;
				continue;
			}
		}
		if (strchr("+-~?", *t))
			t++;
		if (spfrec_directive(t, end, why) == -1)
			return -1;
	}
	return 0;
}

/* One macro's value, transformed (RFC 7208 7.3) and appended. */
static void
spfrec_put_macro(struct buf *out, const char *val, long digits, int reverse,
    const char *delims, int upper)
{
	const char *parts[128];
	size_t plen[128], n = 0, first;
	const char *p = val, *start = val;

	for (;; p++) {
		if (*p == '\0' || strchr(delims, *p)) {
			if (n < 128) {
				parts[n] = start;
				plen[n++] = (size_t)(p - start);
			}
			if (*p == '\0')
				break;
			start = p + 1;
		}
	}
	if (reverse)
		for (size_t a = 0, b = n - 1; a < b; a++, b--) {
			const char *tp = parts[a];
			size_t tl = plen[a];

			parts[a] = parts[b];
			plen[a] = plen[b];
			parts[b] = tp;
			plen[b] = tl;
		}
	first = digits > 0 && (size_t)digits < n ? n - (size_t)digits : 0;
	for (size_t k = first; k < n; k++) {
		if (k > first)
			buf_putc(out, '.');
		for (size_t m = 0; m < plen[k]; m++) {
			unsigned char c = (unsigned char)parts[k][m];

			if (upper && !isalnum(c) && !strchr("-._~", c))
				buf_printf(out, "%%%02X", c);
			else
				buf_putc(out, c);
		}
	}
}

const char *
spf_macro_pick_p(char *const *names, size_t n, const char *domain)
{
	size_t dl = strlen(domain);

	for (size_t k = 0; k < n; k++)
		if (strcasecmp(names[k], domain) == 0)
			return names[k];
	for (size_t k = 0; k < n; k++) {
		size_t nl = strlen(names[k]);

		if (nl > dl + 1 && names[k][nl - dl - 1] == '.' &&
		    strcasecmp(names[k] + nl - dl, domain) == 0)
			return names[k];
	}
	return n > 0 ? names[0] : "unknown";
}

const char *
spf_macro_ip(const char *ip, char *c, size_t ccap, char *i, size_t icap)
{
	struct in_addr a4;
	struct in6_addr a6;
	size_t o = 0;

	str_copy(c, ip, ccap);
	str_copy(i, ip, icap);
	if (inet_pton(AF_INET6, ip, &a6) != 1)
		return "in-addr";
	inet_ntop(AF_INET6, &a6, c, (socklen_t)ccap);
	if (IN6_IS_ADDR_V4MAPPED(&a6)) {
		memcpy(&a4, a6.s6_addr + 12, 4);
		inet_ntop(AF_INET, &a4, c, (socklen_t)ccap);
		str_copy(i, c, icap);
		return "in-addr";
	}
	/* Hex digits in a name are the same in either case (RFC 4343);
	 * the suite's explanations (and pyspf) write them in upper case. */
	i[0] = '\0';
	for (int k = 0; k < 16 && o < icap; k++)
		o += (size_t)snprintf(i + o, icap - o, "%s%X.%X",
		    k ? "." : "", a6.s6_addr[k] >> 4, a6.s6_addr[k] & 15);
	return "ip6";
}

int
spf_macro_expand(const char *s, size_t len, const struct spf_macro_vals *mv,
    int exp, struct buf *out)
{
	size_t i = 0;

	if (spf_macro_check(s, len, exp ? 2 : 0, NULL) == -1)
		return -1;
	while (i < len) {
		char delims[8], letter;
		const char *val;
		long digits = 0;
		int reverse = 0, nd = 0, upper;

		if (s[i] != '%') {
			buf_putc(out, s[i++]);
			continue;
		}
		if (s[i + 1] == '%' || s[i + 1] == '_' || s[i + 1] == '-') {
			buf_puts(out, s[i + 1] == '%' ? "%" :
			    s[i + 1] == '_' ? " " : "%20");
			i += 2;
			continue;
		}
		i += 2;		/* "%{", checked above */
		letter = (char)tolower((unsigned char)s[i]);
		upper = isupper((unsigned char)s[i]);
		i++;
		while (isdigit((unsigned char)s[i]) && digits < 1000)
			digits = digits * 10 + (s[i++] - '0');
		while (isdigit((unsigned char)s[i]))
			i++;
		if (s[i - 1] == '0' && digits == 0 && isdigit((unsigned char)
		    s[i - 1]))
			return -1;	/* a transformer of zero parts */
		if (s[i] == 'r' || s[i] == 'R') {
			reverse = 1;
			i++;
		}
		while (s[i] != '}' && nd < 7)
			delims[nd++] = s[i++];
		while (s[i] != '}')
			i++;
		i++;
		delims[nd] = '\0';
		if (nd == 0)
			str_copy(delims, ".", sizeof(delims));
		switch (letter) {
		case 's': val = mv->s; break;
		case 'l': val = mv->l; break;
		case 'o': val = mv->o; break;
		case 'd': val = mv->d; break;
		case 'i': val = mv->i; break;
		case 'p': val = mv->p ? mv->p : "unknown"; break;
		case 'v': val = mv->v; break;
		case 'h': val = mv->h; break;
		case 'c': val = mv->c; break;
		case 'r': val = mv->r; break;
		default: val = mv->t; break;
		}
		if (!exp && strchr("crt", letter))
			return -1;
		spfrec_put_macro(out, val ? val : "", digits, reverse, delims,
		    upper);
	}
	return 0;
}

/*
 * One a or mx term (after its qualifier) rewritten for its /0 prefixes.
 * What libspf2 cannot say ("any MX host has an address", "any AAAA
 * record") becomes exists: of a name under token, which dns/spfdns.c
 * answers itself (NULL token: left as it is).
 */
static void
spfrec_rewrite_amx(struct buf *out, char qual, const char *t, size_t len,
    int v6, const char *token)
{
	const char *end = t + len, *p = t, *cidr, *c4 = NULL, *c6 = NULL;
	const char *kind = NULL;
	size_t nlen, c4len = 0;
	int z4, z6;

	while (p < end && isalpha((unsigned char)*p))
		p++;
	nlen = (size_t)(p - t);
	cidr = spfrec_cidr_start(p, end);
	if (cidr < end && cidr[1] != '/') {
		c4 = cidr + 1;
		c6 = strstr(c4, "//");
		if (c6 && c6 >= end)
			c6 = NULL;
		c4len = (size_t)((c6 ? c6 : end) - c4);
		if (c6)
			c6 += 2;
	} else if (cidr < end)
		c6 = cidr + 2;
	z4 = c4 && c4len == 1 && *c4 == '0';
	z6 = c6 && (size_t)(end - c6) == 1 && *c6 == '0';
	if (!v6 && z4)
		kind = nlen == 1 ? "" : "mx4";
	else if (v6 && z6)
		kind = nlen == 1 ? "a6" : "mx6";
	if (qual)
		buf_putc(out, qual);
	if (kind && (*kind == '\0' || token)) {
		size_t dlen = p < cidr && *p == ':' ? (size_t)(cidr - p - 1) : 0;

		buf_puts(out, "exists:");
		if (dlen && p[dlen] == '.')
			dlen--;		/* an absolute name: its dot */
		if (dlen)
			buf_append(out, p + 1, dlen);
		else
			buf_puts(out, "%{d}");
		if (*kind)
			buf_printf(out, ".%s.%s", kind, token);
		return;
	}
	buf_append(out, t, (size_t)(cidr - t));
	/* The prefix of the other family does not matter: leave it out. */
	if (c4 && !(v6 && z4)) {
		buf_putc(out, '/');
		buf_append(out, c4, c4len);
	}
	if (c6 && !(!v6 && z6)) {
		buf_puts(out, "//");
		buf_append(out, c6, (size_t)(end - c6));
	}
}

/* A modifier's name length ("name=" at t), or 0 for a directive. */
static size_t
spfrec_modifier(const char *t, const char *end)
{
	const char *q = t;

	if (q >= end || !isalpha((unsigned char)*q))
		return 0;
	while (q < end && (isalnum((unsigned char)*q) || *q == '-' ||
	    *q == '_' || *q == '.'))
		q++;
	return q < end && *q == '=' ? (size_t)(q - t) : 0;
}

void
spf_record_rewrite(const char *rec, int v6, const char *token,
    struct buf *out)
{
	const char *p = rec;
	size_t start = out->len;
	int hasall = 0;

	/* redirect= is ignored where "all" is (RFC 7208 6.1). */
	for (const char *q = rec; *q; ) {
		const char *t = q, *e;

		while (*q && *q != ' ')
			q++;
		e = q;
		while (*q == ' ')
			q++;
		if (t < e && strchr("+-~?", *t))
			t++;
		if (e - t == 3 && strncasecmp(t, "all", 3) == 0)
			hasall = 1;
	}
	while (*p) {
		const char *t, *end;
		char qual = 0;
		size_t len;

		if (*p == ' ') {
			p++;
			continue;
		}
		if (out->len > start)
			buf_putc(out, ' ');
		t = p;
		while (*p && *p != ' ')
			p++;
		end = p;
		if (t == rec) {			/* v=spf1 */
			buf_append(out, t, (size_t)(end - t));
			continue;
		}
		if ((len = spfrec_modifier(t, end)) != 0) {
			/* Unknown modifiers change nothing, and libspf2
			 * refuses some the RFC allows: leave them out. */
			if ((len == 3 && strncasecmp(t, "exp", 3) == 0) ||
			    (len == 8 && strncasecmp(t, "redirect", 8) == 0 &&
			    !hasall))
				buf_append(out, t, (size_t)(end - t));
			else if (out->len > start)
				out->len--;	/* the blank put before it */
			continue;
		}
		if (strchr("+-~?", *t) && t + 1 < end)
			qual = *t++;
		len = (size_t)(end - t);
		if (len > 6 && (strncasecmp(t, "ip4:", 4) == 0 ||
		    strncasecmp(t, "ip6:", 4) == 0) &&
		    end[-2] == '/' && end[-1] == '0' && end[-3] != '/') {
			int six = t[2] == '6';

			/* libspf2 refuses /0: two halves say the same. */
			if (qual)
				buf_putc(out, qual);
			buf_puts(out, six ? "ip6:::/1 " : "ip4:0.0.0.0/1 ");
			if (qual)
				buf_putc(out, qual);
			buf_puts(out, six ? "ip6:8000::/1" : "ip4:128.0.0.0/1");
			continue;
		}
		if ((len >= 1 && (t[0] | 0x20) == 'a' && (len == 1 ||
		    t[1] == ':' || t[1] == '/')) || (len >= 2 &&
		    strncasecmp(t, "mx", 2) == 0 && (len == 2 || t[2] == ':' ||
		    t[2] == '/'))) {
			spfrec_rewrite_amx(out, qual, t, len, v6, token);
			continue;
		}
		buf_append(out, qual ? t - 1 : t, (size_t)(end - t) +
		    (qual ? 1 : 0));
	}
}

/*
 * One domain-spec expanded and, past 253 bytes, cut from the left label
 * by label (RFC 7208 7.3), appended when that made it shorter and left
 * plain LDH text: 1, else 0 (nothing appended).
 */
static int
spfrec_truncate_spec(const char *spec, size_t len,
    const struct spf_macro_vals *mv, struct buf *out)
{
	struct buf b;
	const char *n;
	size_t nl;
	int r = 0;

	if (memchr(spec, '%', len) == NULL)
		return 0;
	for (size_t k = 0; k + 2 < len; k++)
		if (spec[k] == '%' && spec[k + 1] == '{' &&
		    (spec[k + 2] == 'p' || spec[k + 2] == 'P'))
			return 0;	/* libspf2 looks p up itself */
	buf_init(&b);
	if (spf_macro_expand(spec, len, mv, 0, &b) == -1)
		goto done;
	n = b.data;
	nl = b.len;
	if (nl > 0 && n[nl - 1] == '.')
		nl--;
	if (nl <= 253)
		goto done;
	while (nl > 253) {
		const char *dot = memchr(n, '.', nl);

		if (dot == NULL)
			goto done;
		nl -= (size_t)(dot + 1 - n);
		n = dot + 1;
	}
	for (size_t k = 0; k < nl; k++)
		if (!isalnum((unsigned char)n[k]) && !strchr("-._", n[k]))
			goto done;
	if (nl == 0 || n[0] == '.')
		goto done;
	buf_append(out, n, nl);
	r = 1;
done:
	buf_free(&b);
	return r;
}

int
spf_record_truncate(const char *rec, const struct spf_macro_vals *mv,
    struct buf *out)
{
	const char *p = rec;
	int changed = 0;

	while (*p) {
		const char *t = p, *end, *spec = NULL;

		while (*p && *p != ' ')
			p++;
		end = p;
		if (t != rec)
			buf_putc(out, ' ');
		if (strchr("+-~?", *t) && t + 1 < end)
			buf_putc(out, *t++);
		if (end - t > 4 && strncasecmp(t, "exp=", 4) == 0)
			spec = t + 4;
		else if (end - t > 9 && strncasecmp(t, "redirect=", 9) == 0)
			spec = t + 9;
		else if (end - t > 8 && strncasecmp(t, "include:", 8) == 0)
			spec = t + 8;
		else if (end - t > 7 && strncasecmp(t, "exists:", 7) == 0)
			spec = t + 7;
		if (spec != NULL) {
			buf_append(out, t, (size_t)(spec - t));
			if (spfrec_truncate_spec(spec, (size_t)(end - spec), mv,
			    out))
				changed = 1;
			else
				buf_append(out, spec, (size_t)(end - spec));
		} else
			buf_append(out, t, (size_t)(end - t));
		while (*p == ' ')
			p++;
	}
	return changed;
}
