/*
 * dnsrec: checks of published DKIM, DMARC and SPF record text for
 * `ternctl dns --check` (see dnsrec.h).  Pure functions on strings; run
 * in ternctl and under fuzz_dnsrec.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "auth/dkim.h"
#include "auth/dnsrec.h"
#include "auth/taglist.h"
#include "lib/util.h"

static int
dnsrec_fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -1;
}

static int
dnsrec_ws(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* [s, e) without the blanks at either end. */
static void
dnsrec_trim(const char **s, const char **e)
{
	while (*s < *e && dnsrec_ws((unsigned char)**s))
		(*s)++;
	while (*e > *s && dnsrec_ws((unsigned char)(*e)[-1]))
		(*e)--;
}

/*
 * Tag names: with case in DKIM key records (RFC 6376 3.2), without in
 * DMARC records (RFC 7489 6.4's ABNF strings, as auth/dmarc.c reads
 * them).
 */
#define DNSREC_DKIM	0
#define DNSREC_DMARC	TAGLIST_NOCASE

static const struct taglist_tag *
dnsrec_tag_find(const struct taglist_tag *t, size_t n, const char *name)
{
	return taglist_find(t, n, name, DNSREC_DKIM);
}

static const struct taglist_tag *
dnsrec_dmarc_find(const struct taglist_tag *t, size_t n, const char *name)
{
	return taglist_find(t, n, name, DNSREC_DMARC);
}

static int
dnsrec_val_is(const struct taglist_tag *t, const char *want)
{
	return t->vlen == strlen(want) && strncmp(t->val, want, t->vlen) == 0;
}

/* Does a colon-separated list hold item (blanks around items allowed)? */
static int
dnsrec_list_has(const char *s, size_t len, int sep, const char *item)
{
	const char *end = s + len;

	while (s <= end) {
		const char *c = memchr(s, sep, (size_t)(end - s));
		const char *e = c ? c : end, *b = s;

		dnsrec_trim(&b, &e);
		if ((size_t)(e - b) == strlen(item) &&
		    strncasecmp(b, item, (size_t)(e - b)) == 0)
			return 1;
		if (c == NULL)
			break;
		s = c + 1;
	}
	return 0;
}

/* Base64 (blanks already removed) into out; its length, or -1. */
static long
dnsrec_b64(const char *s, size_t len, unsigned char **out)
{
	size_t pad = 0;
	int n;

	if (len == 0 || len % 4 != 0 || len > 8192)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '=' && i >= len - 2)
			pad++;
		else if (!isalnum((unsigned char)s[i]) && s[i] != '+' &&
		    s[i] != '/')
			return -1;
	}
	if (pad == 1 && s[len - 1] != '=')
		return -1;
	*out = xmalloc(len / 4 * 3 + 1);
	if ((n = EVP_DecodeBlock(*out, (const unsigned char *)s,
	    (int)len)) < 0 || (size_t)n < pad) {
		free(*out);
		*out = NULL;
		return -1;
	}
	return (long)((size_t)n - pad);
}

/* The public key's size in bits, or -1 for a key of another kind. */
static int
dnsrec_key_bits(int alg, const unsigned char *der, long len)
{
	const unsigned char *p = der;
	EVP_PKEY *k;
	int bits;

	if (alg == DKIM_ALG_ED25519) {
		if (len != 32 || (k = EVP_PKEY_new_raw_public_key(
		    EVP_PKEY_ED25519, NULL, der, 32)) == NULL)
			return -1;
		EVP_PKEY_free(k);
		return 256;
	}
	/* SubjectPublicKeyInfo (RFC 6376 3.6.1); some publish the bare
	 * RSAPublicKey, which verifiers also take. */
	k = d2i_PUBKEY(NULL, &p, len);
	if (k == NULL || p != der + len) {
		EVP_PKEY_free(k);
		p = der;
		k = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, len);
		if (k == NULL || p != der + len) {
			EVP_PKEY_free(k);
			return -1;
		}
	}
	bits = EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA ?
	    EVP_PKEY_get_bits(k) : -1;
	EVP_PKEY_free(k);
	return bits;
}

static int
dnsrec_dkim_key(const struct taglist_tag *p, struct dnsrec_dkim *d,
    const char **why)
{
	struct buf b;
	unsigned char *der = NULL;
	long n;

	buf_init(&b);
	for (size_t i = 0; i < p->vlen; i++)
		if (!dnsrec_ws((unsigned char)p->val[i]))
			buf_putc(&b, p->val[i]);
	buf_putc(&b, '\0');
	d->p = buf_steal(&b);
	if (d->p[0] == '\0') {
		d->revoked = 1;
		return 0;
	}
	if ((n = dnsrec_b64(d->p, strlen(d->p), &der)) < 0)
		return dnsrec_fail(why, "p= is not base64");
	d->bits = dnsrec_key_bits(d->alg, der, n);
	free(der);
	if (d->bits < 0)
		return dnsrec_fail(why, d->alg == DKIM_ALG_ED25519 ?
		    "p= is not an Ed25519 public key" :
		    "p= is not an RSA public key");
	return 0;
}

int
dnsrec_dkim_parse(const char *txt, struct dnsrec_dkim *d, const char **why)
{
	struct taglist_tag tags[TAGLIST_MAX];
	const struct taglist_tag *t;
	size_t n;

	memset(d, 0, sizeof(*d));
	d->alg = DKIM_ALG_RSA;
	if (taglist_parse(txt, strlen(txt), DNSREC_DKIM, tags, TAGLIST_MAX,
	    &n, why) == -1)
		return -1;
	if ((t = dnsrec_tag_find(tags, n, "v")) != NULL &&
	    (t != &tags[0] || !dnsrec_val_is(t, "DKIM1")))
		return dnsrec_fail(why, "v= is not DKIM1 or not first");
	if ((t = dnsrec_tag_find(tags, n, "k")) != NULL) {
		if (dnsrec_val_is(t, "ed25519"))
			d->alg = DKIM_ALG_ED25519;
		else if (!dnsrec_val_is(t, "rsa"))
			return dnsrec_fail(why, "unknown key type k=");
	}
	if ((t = dnsrec_tag_find(tags, n, "h")) != NULL &&
	    !dnsrec_list_has(t->val, t->vlen, ':', "sha256"))
		return dnsrec_fail(why, "h= does not allow sha256");
	if ((t = dnsrec_tag_find(tags, n, "s")) != NULL &&
	    !dnsrec_list_has(t->val, t->vlen, ':', "*") &&
	    !dnsrec_list_has(t->val, t->vlen, ':', "email"))
		return dnsrec_fail(why, "s= does not allow email");
	if ((t = dnsrec_tag_find(tags, n, "t")) != NULL &&
	    dnsrec_list_has(t->val, t->vlen, ':', "y"))
		d->testing = 1;
	if ((t = dnsrec_tag_find(tags, n, "p")) == NULL)
		return dnsrec_fail(why, "no p= tag");
	return dnsrec_dkim_key(t, d, why);
}

void
dnsrec_dkim_free(struct dnsrec_dkim *d)
{
	free(d->p);
	d->p = NULL;
}

/* "v" *WSP "=" *WSP "DMARC1" *WSP (";" / end), RFC 7489 6.4. */
int
dnsrec_is_dmarc(const char *s)
{
	return taglist_first_is(s, strlen(s), DNSREC_DMARC, "v", "DMARC1");
}

static int
dnsrec_policy(const struct taglist_tag *t, char *out, size_t cap)
{
	static const char *const ok[] = { "none", "quarantine", "reject" };

	for (size_t i = 0; i < 3; i++)
		if (t->vlen == strlen(ok[i]) &&
		    strncasecmp(t->val, ok[i], t->vlen) == 0) {
			str_copy(out, ok[i], cap);
			return 0;
		}
	return -1;
}

/* rua=/ruf=: comma-separated URIs, each mailto: (what receivers send). */
static int
dnsrec_uris(const struct taglist_tag *t, int *count, const char **why)
{
	const char *s = t->val, *end = t->val + t->vlen;

	*count = 0;
	while (s <= end) {
		const char *c = memchr(s, ',', (size_t)(end - s));
		const char *e = c ? c : end, *b = s;

		dnsrec_trim(&b, &e);
		if ((size_t)(e - b) <= 7 || strncasecmp(b, "mailto:", 7) != 0 ||
		    memchr(b, '@', (size_t)(e - b)) == NULL)
			return dnsrec_fail(why, "a report URI that is not "
			    "mailto:ADDRESS");
		(*count)++;
		if (c == NULL)
			break;
		s = c + 1;
	}
	return 0;
}

static int
dnsrec_number(const struct taglist_tag *t, long max, long *v)
{
	long x = 0;

	if (t->vlen == 0 || t->vlen > 10)
		return -1;
	for (size_t i = 0; i < t->vlen; i++) {
		if (!isdigit((unsigned char)t->val[i]))
			return -1;
		x = x * 10 + (t->val[i] - '0');
	}
	if (x > max)
		return -1;
	*v = x;
	return 0;
}

int
dnsrec_dmarc_parse(const char *txt, struct dnsrec_dmarc *m, const char **why)
{
	struct taglist_tag tags[TAGLIST_MAX];
	const struct taglist_tag *t;
	size_t n;
	long v;
	int nruf;

	memset(m, 0, sizeof(*m));
	m->pct = 100;
	if (!dnsrec_is_dmarc(txt))
		return dnsrec_fail(why, "does not start with v=DMARC1");
	if (taglist_parse(txt, strlen(txt), DNSREC_DMARC, tags, TAGLIST_MAX,
	    &n, why) == -1)
		return -1;
	if ((t = dnsrec_dmarc_find(tags, n, "p")) == NULL)
		return dnsrec_fail(why, "no p= tag");
	if (dnsrec_policy(t, m->p, sizeof(m->p)) == -1)
		return dnsrec_fail(why, "p= is not none, quarantine or reject");
	if ((t = dnsrec_dmarc_find(tags, n, "sp")) != NULL &&
	    dnsrec_policy(t, m->sp, sizeof(m->sp)) == -1)
		return dnsrec_fail(why, "sp= is not none, quarantine or "
		    "reject");
	if ((t = dnsrec_dmarc_find(tags, n, "pct")) != NULL) {
		if (dnsrec_number(t, 100, &v) == -1)
			return dnsrec_fail(why, "pct= is not 0 to 100");
		m->pct = (int)v;
	}
	if ((t = dnsrec_dmarc_find(tags, n, "ri")) != NULL &&
	    dnsrec_number(t, 4294967295L, &v) == -1)
		return dnsrec_fail(why, "ri= is not a number");
	if (((t = dnsrec_dmarc_find(tags, n, "adkim")) != NULL &&
	    !dnsrec_val_is(t, "r") && !dnsrec_val_is(t, "s")) ||
	    ((t = dnsrec_dmarc_find(tags, n, "aspf")) != NULL &&
	    !dnsrec_val_is(t, "r") && !dnsrec_val_is(t, "s")))
		return dnsrec_fail(why, "adkim= or aspf= is not r or s");
	if ((t = dnsrec_dmarc_find(tags, n, "rua")) != NULL &&
	    dnsrec_uris(t, &m->nrua, why) == -1)
		return -1;
	if ((t = dnsrec_dmarc_find(tags, n, "ruf")) != NULL &&
	    dnsrec_uris(t, &nruf, why) == -1)
		return -1;
	return 0;
}

/* "v=spf1" then a space or the end (RFC 7208 4.5), in any case. */
int
dnsrec_is_spf(const char *s)
{
	return strncasecmp(s, "v=spf1", 6) == 0 && (s[6] == ' ' ||
	    s[6] == '\0');
}

static void
dnsrec_spf_target(struct dnsrec_spf *r, const char *s, size_t len)
{
	size_t n = len;

	if (memchr(s, '%', len) != NULL) {
		r->macro_targets++;
		return;
	}
	if (n > 0 && s[n - 1] == '.')
		n--;
	if (r->ntargets >= DNSREC_SPF_TARGETS || n == 0 ||
	    n >= sizeof(r->target[0])) {
		r->overflow = 1;
		return;
	}
	memcpy(r->target[r->ntargets], s, n);
	r->target[r->ntargets][n] = '\0';
	str_lower(r->target[r->ntargets]);
	r->ntargets++;
}

static int
dnsrec_term_is(const char *t, size_t n, const char *name)
{
	size_t k = strlen(name);

	return n >= k && strncasecmp(t, name, k) == 0 &&
	    (n == k || t[k] == ':' || t[k] == '/' || t[k] == '=');
}

void
dnsrec_spf_scan(const char *rec, struct dnsrec_spf *r)
{
	const char *s = rec, *redir = NULL;
	size_t redirlen = 0;
	int first = 1;

	memset(r, 0, sizeof(*r));
	while (*s) {
		const char *t;
		size_t n;
		char q = '+';

		while (*s == ' ')
			s++;
		t = s;
		while (*s && *s != ' ')
			s++;
		if ((n = (size_t)(s - t)) == 0)
			break;
		if (first) {
			first = 0;
			continue;	/* v=spf1 */
		}
		if (strchr("+-~?", *t)) {
			q = *t++;
			n--;
		}
		if (dnsrec_term_is(t, n, "all") && n == 3)
			r->all = q;
		else if (dnsrec_term_is(t, n, "include")) {
			r->lookups++;
			if (n > 8)
				dnsrec_spf_target(r, t + 8, n - 8);
		} else if (dnsrec_term_is(t, n, "a") ||
		    dnsrec_term_is(t, n, "mx") ||
		    dnsrec_term_is(t, n, "exists"))
			r->lookups++;
		else if (dnsrec_term_is(t, n, "ptr")) {
			r->lookups++;
			r->ptr = 1;
		} else if (n > 9 && strncasecmp(t, "redirect=", 9) == 0) {
			redir = t + 9;
			redirlen = n - 9;
		}
	}
	/* redirect= is ignored beside "all" (RFC 7208 6.1). */
	if (redir != NULL && r->all == 0) {
		r->lookups++;
		dnsrec_spf_target(r, redir, redirlen);
	}
}
