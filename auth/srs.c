/*
 * srs: Sender Rewriting Scheme, compatible with libsrs2 and postsrsd (same
 * field order, same lowercased HMAC-SHA1 input, same 4-char hash and
 * 2-char base32 day stamp).  Pure string functions: whichever process
 * rewrites or checks addresses links it and passes in the secret; no state
 * is kept here.  Forwarding accepts only characters that are safe in an
 * unquoted local part, and reversal checks its result the same way, so an
 * SRS address never smuggles control characters into an envelope.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "auth/srs.h"
#include "lib/util.h"

#define SRS_HASH_LEN	4
#define SRS_STAMP_LEN	2
#define SRS_DAY		(60 * 60 * 24)
#define SRS_SLOTS	1024	/* 32 * 32 two-char stamps */
#define SRS_AGE_MAX	1000	/* max_age_days must leave room to wrap */

static const char srs_b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
static const char srs_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A piece of hash input: pointer and length. */
struct srs_part {
	const char	*p;
	size_t		 n;
};

static int
srs_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int
srs_is_sep(int c)
{
	return c == '=' || c == '+' || c == '-';
}

/* atext and '.', plus 8-bit bytes for SMTPUTF8 local parts. */
static int
srs_local_char(unsigned char c)
{
	if (c >= 0x80)
		return 1;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~.", c) != NULL;
}

static int
srs_local_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		if (!srs_local_char((unsigned char)s[i]))
			return 0;
	return 1;
}

/* Host names (A-labels or U-labels); never '=', so fields split cleanly. */
static int
srs_domain_ok(const char *s, size_t n)
{
	size_t i;
	unsigned char c;

	if (n == 0 || s[0] == '.' || s[0] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (!(c >= 0x80 || c == '.' || c == '-' ||
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9')))
			return 0;
	}
	return 1;
}

/* Day number mod 1024; floor division so times before 1970 work too. */
static int
srs_day(time_t now)
{
	long long t = (long long)now, d;

	d = t / SRS_DAY;
	if (t % SRS_DAY < 0)
		d--;
	d %= SRS_SLOTS;
	if (d < 0)
		d += SRS_SLOTS;
	return (int)d;
}

static void
srs_stamp(time_t now, char tt[SRS_STAMP_LEN + 1])
{
	int d = srs_day(now);

	tt[0] = srs_b32[(d >> 5) & 31];
	tt[1] = srs_b32[d & 31];
	tt[2] = '\0';
}

/* Decode a two-char stamp, either case; -1 if not base32. */
static int
srs_stamp_decode(const char *s, size_t n)
{
	const char *p;
	int v = 0, c;
	size_t i;

	if (n != SRS_STAMP_LEN)
		return -1;
	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		if (c >= 'a' && c <= 'z')
			c = c - 'a' + 'A';
		if (c == '\0' || (p = strchr(srs_b32, c)) == NULL)
			return -1;
		v = (v << 5) | (int)(p - srs_b32);
	}
	return v;
}

/*
 * Age of a stamp: 0 ok, else why.  One day ahead is clock skew; anything
 * else outside [now - max_age, now] is refused.  A stamp wraps every 1024
 * days, so "old" and "future" are told apart by the nearer reading.
 */
static const char *
srs_stamp_check(int then, time_t now, int max_age)
{
	int diff = (srs_day(now) - then + SRS_SLOTS) % SRS_SLOTS;

	if (diff <= max_age || diff == SRS_SLOTS - 1)
		return NULL;
	return SRS_SLOTS - diff < diff ? "timestamp in the future" :
	    "timestamp expired";
}

/* HHHH = base64(HMAC-SHA1(secret, lowercase(part0 part1 ...)))[0..3]. */
static int
srs_hash(const unsigned char *secret, size_t secretlen,
    const struct srs_part *parts, size_t nparts, char h[SRS_HASH_LEN + 1])
{
	unsigned char data[2 * SRS_ADDR_MAX + 16];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	size_t i, j, n = 0;

	if (secretlen > INT_MAX)
		return -1;
	for (i = 0; i < nparts; i++) {
		if (parts[i].n > sizeof(data) - n)
			return -1;
		for (j = 0; j < parts[i].n; j++)
			data[n++] = (unsigned char)srs_lower(
			    (unsigned char)parts[i].p[j]);
	}
	if (HMAC(EVP_sha1(), secret, (int)secretlen, data, n, md,
	    &mdlen) == NULL || mdlen < 3)
		return -1;
	h[0] = srs_b64[md[0] >> 2];
	h[1] = srs_b64[((md[0] & 0x03) << 4) | (md[1] >> 4)];
	h[2] = srs_b64[((md[1] & 0x0f) << 2) | (md[2] >> 6)];
	h[3] = srs_b64[md[2] & 0x3f];
	h[4] = '\0';
	OPENSSL_cleanse(md, sizeof(md));
	OPENSSL_cleanse(data, sizeof(data));
	return 0;
}

/* 1 if the given hash (any case) matches the one computed. */
static int
srs_hash_match(const unsigned char *secret, size_t secretlen,
    const struct srs_part *parts, size_t nparts, const char *given,
    size_t givenlen)
{
	char h[SRS_HASH_LEN + 1];
	int diff = 0;
	size_t i;

	if (givenlen != SRS_HASH_LEN ||
	    srs_hash(secret, secretlen, parts, nparts, h) == -1)
		return 0;
	for (i = 0; i < SRS_HASH_LEN; i++)
		diff |= srs_lower((unsigned char)given[i]) ^
		    srs_lower((unsigned char)h[i]);
	return diff == 0;
}

/* Format into out; -1 if longer than SRS_ADDR_MAX or than out holds. */
static int srs_emit(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

static int
srs_emit(char *out, size_t outlen, const char *fmt, ...)
{
	char tmp[SRS_ADDR_MAX + 1];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || n > SRS_ADDR_MAX || (size_t)n >= outlen)
		return -1;
	memcpy(out, tmp, (size_t)n + 1);
	return 0;
}

int
srs_is_srs(const char *lp)
{
	if (lp == NULL)
		return 0;
	return (lp[0] | 0x20) == 's' && (lp[1] | 0x20) == 'r' &&
	    (lp[2] | 0x20) == 's' && (lp[3] == '0' || lp[3] == '1') &&
	    srs_is_sep((unsigned char)lp[4]);
}

/*
 * What follows the SRS0 tag inside an SRS1 address, "<sep>HHHH=TT=...":
 * forwarding and reversal both insist on it, so one undoes the other.
 */
static int
srs_rest_ok(const char *p, size_t n)
{
	const char *e1, *e2, *end = p + n;

	if (n < 2 || !srs_is_sep((unsigned char)p[0]) || !srs_local_ok(p, n))
		return 0;
	if ((e1 = memchr(p + 1, '=', n - 1)) == NULL ||
	    (e2 = memchr(e1 + 1, '=', (size_t)(end - e1 - 1))) == NULL)
		return 0;
	return srs_stamp_decode(e1 + 1, (size_t)(e2 - e1 - 1)) != -1;
}

/* local@domain -> SRS0=HHHH=TT=domain=local@srs */
static int
srs_forward0(const char *local, size_t llen, const char *domain,
    const char *srs, const unsigned char *secret, size_t secretlen,
    time_t now, char *out, size_t outlen)
{
	char tt[SRS_STAMP_LEN + 1], h[SRS_HASH_LEN + 1];
	struct srs_part parts[3];

	srs_stamp(now, tt);
	parts[0] = (struct srs_part){ tt, SRS_STAMP_LEN };
	parts[1] = (struct srs_part){ domain, strlen(domain) };
	parts[2] = (struct srs_part){ local, llen };
	if (srs_hash(secret, secretlen, parts, 3, h) == -1)
		return -1;
	return srs_emit(out, outlen, "SRS0=%s=%s=%s=%.*s@%s", h, tt, domain,
	    (int)llen, local, srs);
}

/*
 * SRS0<sep>rest@host -> SRS1=HHHH=host=<sep>rest@srs (libsrs2 keeps the
 * SRS0 separator); SRS1<sep>h=host=rest@x -> SRS1=HHHH=host=rest@srs.
 */
static int
srs_forward1(const char *host, size_t hlen, const char *rest, size_t rlen,
    const char *srs, const unsigned char *secret, size_t secretlen,
    char *out, size_t outlen)
{
	char h[SRS_HASH_LEN + 1];
	struct srs_part parts[2];

	if (!srs_domain_ok(host, hlen) || !srs_rest_ok(rest, rlen))
		return -1;
	parts[0] = (struct srs_part){ host, hlen };
	parts[1] = (struct srs_part){ rest, rlen };
	if (srs_hash(secret, secretlen, parts, 2, h) == -1)
		return -1;
	return srs_emit(out, outlen, "SRS1=%s=%.*s=%.*s@%s", h, (int)hlen,
	    host, (int)rlen, rest, srs);
}

/* Split an SRS1 local part after its tag: hash=host=rest. */
static int
srs_split1(const char *p, size_t n, struct srs_part *hash,
    struct srs_part *host, struct srs_part *rest)
{
	const char *e1, *e2, *end = p + n;

	if ((e1 = memchr(p, '=', n)) == NULL)
		return -1;
	if ((e2 = memchr(e1 + 1, '=', (size_t)(end - e1 - 1))) == NULL)
		return -1;
	*hash = (struct srs_part){ p, (size_t)(e1 - p) };
	*host = (struct srs_part){ e1 + 1, (size_t)(e2 - e1 - 1) };
	*rest = (struct srs_part){ e2 + 1, (size_t)(end - e2 - 1) };
	if (hash->n == 0 || host->n == 0 || rest->n == 0)
		return -1;
	return 0;
}

int
srs_forward(const char *sender, const char *srs_domain,
    const unsigned char *secret, size_t secretlen, time_t now, char *out,
    size_t outlen)
{
	struct srs_part hash, host, rest;
	const char *at, *domain;
	size_t slen, llen;

	if (sender == NULL || srs_domain == NULL || secret == NULL ||
	    out == NULL || outlen == 0 || secretlen < SRS_SECRET_MIN)
		return -1;
	slen = strlen(sender);
	if (slen == 0 || slen > SRS_ADDR_MAX ||
	    (at = strrchr(sender, '@')) == NULL)
		return -1;
	domain = at + 1;
	llen = (size_t)(at - sender);
	if (!srs_local_ok(sender, llen) ||
	    !srs_domain_ok(domain, strlen(domain)) ||
	    !srs_domain_ok(srs_domain, strlen(srs_domain)))
		return -1;
	if (str_casecmp(domain, srs_domain) == 0)
		return srs_emit(out, outlen, "%s", sender);
	if (!srs_is_srs(sender))
		return srs_forward0(sender, llen, domain, srs_domain, secret,
		    secretlen, now, out, outlen);
	if (sender[3] == '0')
		return srs_forward1(domain, strlen(domain), sender + 4,
		    llen - 4, srs_domain, secret, secretlen, out, outlen);
	if (srs_split1(sender + 5, llen - 5, &hash, &host, &rest) == -1)
		return -1;
	return srs_forward1(host.p, host.n, rest.p, rest.n, srs_domain,
	    secret, secretlen, out, outlen);
}

/* SRS0<sep>HHHH=TT=host=user -> user@host */
static int
srs_reverse0(const char *lp, size_t n, const unsigned char *secret,
    size_t secretlen, time_t now, int max_age, char *out, size_t outlen,
    const char **why)
{
	struct srs_part hash, stamp, host, user, parts[3];
	const char *e1, *e2, *e3, *end = lp + n, *p = lp + 5;
	int then;

	*why = "malformed SRS0 address";
	if ((e1 = memchr(p, '=', (size_t)(end - p))) == NULL ||
	    (e2 = memchr(e1 + 1, '=', (size_t)(end - e1 - 1))) == NULL ||
	    (e3 = memchr(e2 + 1, '=', (size_t)(end - e2 - 1))) == NULL)
		return -1;
	hash = (struct srs_part){ p, (size_t)(e1 - p) };
	stamp = (struct srs_part){ e1 + 1, (size_t)(e2 - e1 - 1) };
	host = (struct srs_part){ e2 + 1, (size_t)(e3 - e2 - 1) };
	user = (struct srs_part){ e3 + 1, (size_t)(end - e3 - 1) };
	if (!srs_domain_ok(host.p, host.n) || !srs_local_ok(user.p, user.n))
		return -1;
	if ((then = srs_stamp_decode(stamp.p, stamp.n)) == -1) {
		*why = "bad timestamp";
		return -1;
	}
	parts[0] = stamp;
	parts[1] = host;
	parts[2] = user;
	if (!srs_hash_match(secret, secretlen, parts, 3, hash.p, hash.n)) {
		*why = "bad hash";
		return -1;
	}
	if ((*why = srs_stamp_check(then, now, max_age)) != NULL)
		return -1;
	if (user.n + 1 + host.n >= outlen) {
		*why = "result too long";
		return -1;
	}
	memcpy(out, user.p, user.n);
	out[user.n] = '@';
	memcpy(out + user.n + 1, host.p, host.n);
	out[user.n + 1 + host.n] = '\0';
	return 1;
}

/* SRS1<sep>HHHH=host=rest -> SRS0rest@host; the SRS0 stamp is host's. */
static int
srs_reverse1(const char *lp, size_t n, const unsigned char *secret,
    size_t secretlen, char *out, size_t outlen, const char **why)
{
	struct srs_part hash, host, rest, parts[2];

	*why = "malformed SRS1 address";
	if (srs_split1(lp + 5, n - 5, &hash, &host, &rest) == -1 ||
	    !srs_domain_ok(host.p, host.n) || !srs_rest_ok(rest.p, rest.n))
		return -1;
	parts[0] = host;
	parts[1] = rest;
	if (!srs_hash_match(secret, secretlen, parts, 2, hash.p, hash.n)) {
		*why = "bad hash";
		return -1;
	}
	if (4 + rest.n + 1 + host.n >= outlen) {
		*why = "result too long";
		return -1;
	}
	memcpy(out, "SRS0", 4);
	memcpy(out + 4, rest.p, rest.n);
	out[4 + rest.n] = '@';
	memcpy(out + 5 + rest.n, host.p, host.n);
	out[5 + rest.n + host.n] = '\0';
	return 1;
}

int
srs_reverse(const char *addr, const unsigned char *secret, size_t secretlen,
    time_t now, int max_age_days, char *out, size_t outlen, const char **why)
{
	const char *dummy, *at;
	size_t len, llen;

	if (why == NULL)
		why = &dummy;
	*why = NULL;
	if (addr == NULL) {
		*why = "no address";
		return -1;
	}
	if (!srs_is_srs(addr))
		return 0;
	if (secret == NULL || secretlen < SRS_SECRET_MIN) {
		*why = "secret too short";
		return -1;
	}
	if (max_age_days < 0 || max_age_days > SRS_AGE_MAX) {
		*why = "bad max age";
		return -1;
	}
	if (out == NULL || outlen == 0) {
		*why = "no output buffer";
		return -1;
	}
	if ((len = strlen(addr)) > SRS_ADDR_MAX) {
		*why = "address too long";
		return -1;
	}
	at = strrchr(addr, '@');
	llen = at != NULL ? (size_t)(at - addr) : len;
	if (addr[3] == '0')
		return srs_reverse0(addr, llen, secret, secretlen, now,
		    max_age_days, out, outlen, why);
	return srs_reverse1(addr, llen, secret, secretlen, out, outlen, why);
}
