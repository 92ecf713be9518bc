/*
 * dkimverify: DKIM verification (see dkimverify.h).  Runs in the smtp
 * process (the header and body passes on the loop, dkim_check_key in the
 * policy workers), in ternctl check and in the unit tests; no I/O.  The
 * header fields are kept, bounded, because h= may name any of them; the
 * body is hashed as it passes, once per distinct (canonicalization, l=).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "auth/dkim.h"
#include "auth/dkimverify.h"
#include "auth/taglist.h"
#include "lib/util.h"

#define DKIMV_FIELDS_MAX	1000	/* header fields kept */
#define DKIMV_HEADER_MAX	(256 * 1024)	/* ...and their bytes */
#define DKIMV_SIGFIELD_MAX	(16 * 1024)	/* one DKIM-Signature field */

static const char *const dkim_result_names[] = {
	"none", "pass", "fail", "neutral", "policy", "temperror", "permerror"
};

const char *
dkim_result_name(enum dkim_result r)
{
	return (unsigned)r < sizeof(dkim_result_names) /
	    sizeof(dkim_result_names[0]) ? dkim_result_names[r] : "permerror";
}

static int
dkimv_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Tag names are case-sensitive (RFC 6376 3.2). */
static const struct taglist_tag *
dkim_tag_find(const struct taglist_tag *t, size_t n, const char *name)
{
	return taglist_find(t, n, name, 0);
}

/* A value equal to word (case matters per the caller's word). */
static int
dkim_tag_is(const struct taglist_tag *t, const char *word)
{
	return t->vlen == strlen(word) && strncasecmp(t->val, word, t->vlen)
	    == 0;
}

/*
 * base64 with FWS anywhere (RFC 6376 2.4), into out: its length, or -1
 * when it is not base64 or longer than cap.
 */
static long
dkim_b64(const char *s, size_t len, unsigned char *out, size_t cap)
{
	unsigned acc = 0;
	size_t i, o = 0, nd = 0;
	int bits = 0, pad = 0;

	for (i = 0; i < len; i++) {
		char c = s[i];
		int v;

		if (dkimv_wsp(c) || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		if (pad)
			return -1;		/* data after padding */
		if (c >= 'A' && c <= 'Z')
			v = c - 'A';
		else if (c >= 'a' && c <= 'z')
			v = c - 'a' + 26;
		else if (c >= '0' && c <= '9')
			v = c - '0' + 52;
		else if (c == '+')
			v = 62;
		else if (c == '/')
			v = 63;
		else
			return -1;
		acc = (acc << 6) | (unsigned)v;
		nd++;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* Padding, if any, exactly what the last quantum needs. */
	if ((nd % 4) == 1 || (pad != 0 && (size_t)pad != (4 - nd % 4) % 4) ||
	    (nd % 4 == 0 && pad != 0))
		return -1;
	return (long)o;
}

/* A domain name of LDH labels, not starting or ending with a dot. */
static int
dkim_domain_ok(const char *d, size_t len)
{
	size_t i, lab = 0;

	if (len == 0 || len > DKIM_DOMAIN_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		char c = d[i];

		if (c == '.') {
			if (lab == 0)
				return 0;
			lab = 0;
		} else if (isalnum((unsigned char)c) || c == '-' || c == '_') {
			if (++lab > 63)
				return 0;
		} else
			return 0;
	}
	return lab > 0;
}

/* digits only, at most 18 of them: the value, or -1. */
static long long
dkim_num(const struct taglist_tag *t)
{
	long long v = 0;
	size_t i;

	if (t->vlen == 0 || t->vlen > 18)
		return -1;
	for (i = 0; i < t->vlen; i++) {
		if (!isdigit((unsigned char)t->val[i]))
			return -1;
		v = v * 10 + (t->val[i] - '0');
	}
	return v;
}

static void
dkim_copy_lower(char *out, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[len] = '\0';
}

/* h=: names separated by ":" with FWS around them; "from" required. */
static int
dkim_sig_hlist(const struct taglist_tag *t, struct dkim_sigtags *g,
    const char **why)
{
	size_t i = 0, o = 0, start;
	int from = 0;

	*why = "h= is not a list of field names";
	while (i <= t->vlen) {
		while (i < t->vlen && (dkimv_wsp(t->val[i]) ||
		    t->val[i] == '\r' || t->val[i] == '\n'))
			i++;
		start = i;
		while (i < t->vlen && t->val[i] != ':' && t->val[i] > 0x20 &&
		    t->val[i] < 0x7f)
			i++;
		if (i == start)
			return -1;
		if (o + (i - start) + 2 > sizeof(g->h)) {
			*why = "h= too long";
			return -1;
		}
		if (o)
			g->h[o++] = ':';
		dkim_copy_lower(g->h + o, t->val + start, i - start);
		from |= i - start == 4 && strncmp(g->h + o, "from", 4) == 0;
		o += i - start;
		while (i < t->vlen && (dkimv_wsp(t->val[i]) ||
		    t->val[i] == '\r' || t->val[i] == '\n'))
			i++;
		if (i >= t->vlen)
			break;
		if (t->val[i] != ':')
			return -1;
		i++;
	}
	if (!from) {
		*why = "h= does not include From";
		return -1;
	}
	return 0;
}

static int
dkim_sig_canon(const struct taglist_tag *t, struct dkim_sigtags *g)
{
	const char *slash;
	size_t hl;

	g->hrelaxed = g->brelaxed = 0;
	if (t == NULL)
		return 0;
	slash = memchr(t->val, '/', t->vlen);
	hl = slash ? (size_t)(slash - t->val) : t->vlen;
	if (hl == 7 && strncasecmp(t->val, "relaxed", 7) == 0)
		g->hrelaxed = 1;
	else if (!(hl == 6 && strncasecmp(t->val, "simple", 6) == 0))
		return -1;
	if (slash == NULL)
		return 0;
	hl = t->vlen - hl - 1;
	if (hl == 7 && strncasecmp(slash + 1, "relaxed", 7) == 0)
		g->brelaxed = 1;
	else if (!(hl == 6 && strncasecmp(slash + 1, "simple", 6) == 0))
		return -1;
	return 0;
}

/* q=: a list that must hold dns/txt. */
static int
dkim_sig_q(const struct taglist_tag *t)
{
	size_t i = 0, s;

	if (t == NULL)
		return 0;
	while (i < t->vlen) {
		s = i;
		while (i < t->vlen && t->val[i] != ':')
			i++;
		if (i - s == 7 && strncasecmp(t->val + s, "dns/txt", 7) == 0)
			return 0;
		i++;
	}
	return -1;
}

int
dkim_sig_parse(const char *val, size_t len, struct dkim_sigtags *g,
    const char **why)
{
	struct taglist_tag tags[DKIM_TAGS_MAX];
	const struct taglist_tag *t;
	size_t n, i;
	long r;

	memset(g, 0, sizeof(*g));
	g->l = g->t = g->x = -1;
	if (taglist_parse(val, len, 0, tags, DKIM_TAGS_MAX, &n, why) == -1)
		return -1;
	/* What the result names, before anything can fail. */
	if ((t = dkim_tag_find(tags, n, "d")) != NULL && dkim_domain_ok(t->val,
	    t->vlen))
		dkim_copy_lower(g->d, t->val, t->vlen);
	if ((t = dkim_tag_find(tags, n, "s")) != NULL && t->vlen > 0 &&
	    t->vlen <= DKIM_SELECTOR_MAX && dkim_domain_ok(t->val, t->vlen))
		dkim_copy_lower(g->s, t->val, t->vlen);
	if ((t = dkim_tag_find(tags, n, "b")) != NULL)
		for (i = 0; i < t->vlen && strlen(g->b8) < 8; i++)
			if (!dkimv_wsp(t->val[i]) && t->val[i] != '\r' &&
			    t->val[i] != '\n')
				g->b8[strlen(g->b8)] = t->val[i];
	if ((t = dkim_tag_find(tags, n, "v")) == NULL || !dkim_tag_is(t, "1")) {
		*why = t ? "v= is not 1" : "no v= tag";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "a")) == NULL) {
		*why = "no a= tag";
		return -1;
	}
	if (dkim_tag_is(t, "rsa-sha256"))
		g->alg = DKIM_ALG_RSA;
	else if (dkim_tag_is(t, "ed25519-sha256"))
		g->alg = DKIM_ALG_ED25519;
	else if (dkim_tag_is(t, "rsa-sha1"))
		g->sha1 = 1;
	else {
		*why = "unknown signing algorithm";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "b")) == NULL ||
	    (r = dkim_b64(t->val, t->vlen, g->b, sizeof(g->b))) <= 0) {
		*why = t ? "b= is not a signature" : "no b= tag";
		return -1;
	}
	g->blen = (size_t)r;
	if ((t = dkim_tag_find(tags, n, "bh")) == NULL ||
	    (r = dkim_b64(t->val, t->vlen, g->bh, sizeof(g->bh))) !=
	    (g->sha1 ? 20 : DKIM_DIGEST_LEN)) {
		*why = t ? "bh= is not a body hash" : "no bh= tag";
		return -1;
	}
	if (dkim_sig_canon(dkim_tag_find(tags, n, "c"), g) == -1) {
		*why = "unknown canonicalization";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "d")) == NULL || g->d[0] == '\0') {
		*why = t ? "d= is not a domain" : "no d= tag";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "h")) == NULL) {
		*why = "no h= tag";
		return -1;
	}
	if (dkim_sig_hlist(t, g, why) == -1)
		return -1;
	if ((t = dkim_tag_find(tags, n, "s")) == NULL || g->s[0] == '\0') {
		*why = t ? "s= is not a selector" : "no s= tag";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "i")) != NULL) {
		const char *at = NULL;
		size_t dl, gl = strlen(g->d);

		/* The local part is not ours to judge; the domain is. */
		for (i = 0; i < t->vlen; i++)
			if (t->val[i] == '@')
				at = t->val + i;
		dl = at ? (size_t)(t->val + t->vlen - at - 1) : 0;
		if (at == NULL || !dkim_domain_ok(at + 1, dl)) {
			*why = "i= is not an identity";
			return -1;
		}
		dkim_copy_lower(g->idom, at + 1, dl);
		if (!(dl == gl && strcmp(g->idom, g->d) == 0) && !(dl > gl &&
		    g->idom[dl - gl - 1] == '.' && strcmp(g->idom + dl - gl,
		    g->d) == 0)) {
			*why = "i= is not within d=";
			return -1;
		}
	}
	if ((t = dkim_tag_find(tags, n, "l")) != NULL &&
	    (g->l = dkim_num(t)) < 0) {
		*why = "l= is not a number";
		return -1;
	}
	if (dkim_sig_q(dkim_tag_find(tags, n, "q")) == -1) {
		*why = "q= without dns/txt";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "t")) != NULL &&
	    (g->t = dkim_num(t)) < 0) {
		*why = "t= is not a time";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "x")) != NULL &&
	    (g->x = dkim_num(t)) < 0) {
		*why = "x= is not a time";
		return -1;
	}
	if (g->t >= 0 && g->x >= 0 && g->x <= g->t) {
		*why = "x= is not after t=";
		return -1;
	}
	return 0;
}

/* ---- key records --------------------------------------------------------- */

/* A list of a ":"-separated words: does it hold word? */
static int
dkim_list_has(const struct taglist_tag *t, const char *word)
{
	size_t i = 0, s, e, wl = strlen(word);

	while (i <= t->vlen) {
		while (i < t->vlen && dkimv_wsp(t->val[i]))
			i++;
		s = i;
		while (i < t->vlen && t->val[i] != ':')
			i++;
		e = i;
		while (e > s && (dkimv_wsp(t->val[e - 1]) || t->val[e - 1] ==
		    '\r' || t->val[e - 1] == '\n'))
			e--;
		if (e - s == wl && strncasecmp(t->val + s, word, wl) == 0)
			return 1;
		i++;
	}
	return 0;
}

int
dkim_keyrec_parse(const char *txt, size_t len, struct dkim_keyrec *k,
    const char **why)
{
	struct taglist_tag tags[DKIM_TAGS_MAX];
	const struct taglist_tag *t;
	size_t n;
	long r;

	memset(k, 0, sizeof(*k));
	k->alg = DKIM_ALG_RSA;
	if (taglist_parse(txt, len, 0, tags, DKIM_TAGS_MAX, &n, why) == -1)
		return -1;
	/* v=, when present, is the first tag and is DKIM1 (3.6.1). */
	if ((t = dkim_tag_find(tags, n, "v")) != NULL && (t != &tags[0] ||
	    !(t->vlen == 5 && strncmp(t->val, "DKIM1", 5) == 0))) {
		*why = "v= is not DKIM1 first";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "k")) != NULL) {
		if (dkim_tag_is(t, "rsa"))
			k->alg = DKIM_ALG_RSA;
		else if (dkim_tag_is(t, "ed25519"))
			k->alg = DKIM_ALG_ED25519;
		else {
			*why = "unknown key type";
			return -1;
		}
	}
	if ((t = dkim_tag_find(tags, n, "h")) != NULL &&
	    !dkim_list_has(t, "sha256"))
		k->nosha256 = 1;
	if ((t = dkim_tag_find(tags, n, "s")) != NULL &&
	    !dkim_list_has(t, "*") && !dkim_list_has(t, "email")) {
		*why = "key not for email (s=)";
		return -1;
	}
	if ((t = dkim_tag_find(tags, n, "t")) != NULL) {
		k->testing = dkim_list_has(t, "y");
		k->strict = dkim_list_has(t, "s");
	}
	if ((t = dkim_tag_find(tags, n, "p")) == NULL) {
		*why = "no p= tag";
		return -1;
	}
	if (t->vlen == 0) {
		k->revoked = 1;
		return 0;
	}
	if ((r = dkim_b64(t->val, t->vlen, k->p, sizeof(k->p))) <= 0) {
		*why = "p= is not a key";
		return -1;
	}
	k->plen = (size_t)r;
	return 0;
}

/* ---- one check ----------------------------------------------------------- */

void
dkim_check_keyname(const struct dkim_check *c, char *out, size_t cap)
{
	snprintf(out, cap, "%s._domainkey.%s", c->s, c->d);
}

static void
dkim_check_set(struct dkim_check *c, enum dkim_result r, const char *why)
{
	c->result = r;
	if (why != NULL && c->lnote[0])
		snprintf(c->comment, sizeof(c->comment), "%s; %s", why,
		    c->lnote);
	else
		str_copy(c->comment, why ? why : c->lnote, sizeof(c->comment));
}

/* The key's EVP_PKEY, or NULL. */
static EVP_PKEY *
dkim_check_pkey(const struct dkim_keyrec *k)
{
	const unsigned char *p = k->p;
	EVP_PKEY *pk;

	if (k->alg == DKIM_ALG_ED25519)
		return k->plen == 32 ? EVP_PKEY_new_raw_public_key(
		    EVP_PKEY_ED25519, NULL, k->p, 32) : NULL;
	/* SubjectPublicKeyInfo (RFC 6376 3.6.1); a bare RSAPublicKey too. */
	if ((pk = d2i_PUBKEY(NULL, &p, (long)k->plen)) != NULL &&
	    p == k->p + k->plen && EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA)
		return pk;
	EVP_PKEY_free(pk);
	p = k->p;
	if ((pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, (long)k->plen)) !=
	    NULL && p == k->p + k->plen)
		return pk;
	EVP_PKEY_free(pk);
	return NULL;
}

/*
 * A key lookup's answer, read once: the first record that reads as a
 * key (3.6.2.2), its EVP_PKEY parsed; or why there is none.  What does
 * not depend on the signature is decided here, the rest (a=, t=s
 * against i=, the signature itself) in dkim_check_with.
 */
struct dkim_key {
	int		 refs;		/* atomic */
	int		 found;		/* the lookup's 0, 1 or -1 */
	int		 have;		/* a record read as a key */
	const char	*why;		/* !have: a static reason */
	int		 alg, testing, strict, revoked, nosha256;
	EVP_PKEY	*pk;		/* NULL: unreadable (or revoked) */
	int		 bits;
	EVP_PKEY_CTX	*vctx;		/* RSA: set up to verify, copied for
					   each check (no fetch each time) */
};

/* The RSA verification context every check copies; NULL: made each time. */
static EVP_PKEY_CTX *
dkim_key_vctx(EVP_PKEY *pk)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pk, NULL);

	if (pc != NULL && EVP_PKEY_verify_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(pc, dkim_sha256()) == 1)
		return pc;
	EVP_PKEY_CTX_free(pc);
	return NULL;
}

static int
dkim_check_crypto(const struct dkim_check *c, const struct dkim_key *k)
{
	EVP_PKEY *pk = k->pk;
	EVP_PKEY_CTX *pc = NULL;
	EVP_MD_CTX *md = NULL;
	int ok = 0;

	if (c->alg == DKIM_ALG_ED25519) {
		/* RFC 8463 3: PureEdDSA over the SHA-256 of the header. */
		ok = (md = EVP_MD_CTX_new()) != NULL &&
		    EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) == 1 &&
		    EVP_DigestVerify(md, c->sig, c->siglen, c->digest,
		    DKIM_DIGEST_LEN) == 1;
		EVP_MD_CTX_free(md);
		return ok;
	}
	if (k->vctx != NULL) {
		ok = (pc = EVP_PKEY_CTX_dup(k->vctx)) != NULL &&
		    EVP_PKEY_verify(pc, c->sig, c->siglen, c->digest,
		    DKIM_DIGEST_LEN) == 1;
		EVP_PKEY_CTX_free(pc);
		return ok;
	}
	ok = (pc = EVP_PKEY_CTX_new(pk, NULL)) != NULL &&
	    EVP_PKEY_verify_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(pc, dkim_sha256()) == 1 &&
	    EVP_PKEY_verify(pc, c->sig, c->siglen, c->digest,
	    DKIM_DIGEST_LEN) == 1;
	EVP_PKEY_CTX_free(pc);
	return ok;
}

struct dkim_key *
dkim_key_new(int found, const char *const *txt, size_t ntxt)
{
	struct dkim_key *key = xcalloc(1, sizeof(*key));
	struct dkim_keyrec k;
	const char *why = "no key record";
	size_t i;

	key->refs = 1;
	key->found = found;
	for (i = 0; found == 0 && i < ntxt && !key->have; i++)
		key->have = dkim_keyrec_parse(txt[i], strlen(txt[i]), &k,
		    &why) == 0;
	if (!key->have) {
		key->why = found == 0 && ntxt > 0 ? why :
		    "no key for signature";
		return key;
	}
	key->alg = k.alg;
	key->testing = k.testing;
	key->strict = k.strict;
	key->revoked = k.revoked;
	key->nosha256 = k.nosha256;
	if (!k.revoked && (key->pk = dkim_check_pkey(&k)) != NULL)
		key->bits = EVP_PKEY_get_bits(key->pk);
	if (key->pk != NULL && k.alg == DKIM_ALG_RSA)
		key->vctx = dkim_key_vctx(key->pk);
	return key;
}

struct dkim_key *
dkim_key_ref(struct dkim_key *key)
{
	__atomic_add_fetch(&key->refs, 1, __ATOMIC_RELAXED);
	return key;
}

void
dkim_key_unref(struct dkim_key *key)
{
	if (key == NULL || __atomic_sub_fetch(&key->refs, 1,
	    __ATOMIC_ACQ_REL) > 0)
		return;
	EVP_PKEY_CTX_free(key->vctx);
	EVP_PKEY_free(key->pk);
	free(key);
}

size_t
dkim_key_size(const struct dkim_key *key)
{
	/* the struct, and an RSA key's modulus and exponent with
	   OpenSSL's own bookkeeping, roughly */
	return sizeof(*key) + (key->pk ? 1024 + (size_t)key->bits / 4 : 0);
}

void
dkim_check_with(struct dkim_check *c, const struct dkim_key *k)
{
	if (c->result != DKIM_NONE)
		return;
	if (k->found < 0) {
		dkim_check_set(c, DKIM_TEMPERROR, "key lookup failed");
		return;
	}
	if (!k->have) {
		dkim_check_set(c, DKIM_PERMERROR, k->why);
		return;
	}
	if (k->revoked) {	/* 6.1.2: a failed signature check */
		dkim_check_set(c, DKIM_FAIL, "key revoked");
		return;
	}
	if (k->alg != c->alg || k->nosha256) {
		dkim_check_set(c, DKIM_PERMERROR, "key unsuitable for a=");
		return;
	}
	if (k->strict && c->isub) {
		dkim_check_set(c, DKIM_PERMERROR, "i= below d= and key t=s");
		return;
	}
	if (k->pk == NULL) {
		dkim_check_set(c, DKIM_PERMERROR, "key unreadable");
		return;
	}
	if (c->alg == DKIM_ALG_RSA && k->bits < DKIM_KEY_BITS_MIN) {
		dkim_check_set(c, DKIM_POLICY, "RSA key under 1024 bits");
		return;
	}
	if (dkim_check_crypto(c, k))
		dkim_check_set(c, DKIM_PASS, k->testing ? "key in testing mode" :
		    NULL);
	else
		dkim_check_set(c, DKIM_FAIL, "signature did not verify");
}

void
dkim_check_key(struct dkim_check *c, int found, const char *const *txt,
    size_t ntxt)
{
	struct dkim_key *k;

	if (c->result != DKIM_NONE)
		return;
	k = dkim_key_new(found, txt, ntxt);
	dkim_check_with(c, k);
	dkim_key_unref(k);
}

/* ---- the verifier ---------------------------------------------------------- */

struct dkimv_field {
	char	*text;		/* folds as CRLF, no final CRLF */
	size_t	 len;
	size_t	 nlen;		/* the name's length (no WSP before ":") */
};

struct dkimv_sig {
	struct dkimv_field	 f;		/* a copy of the field */
	int			 bad;		/* a permerror: why */
	const char		*why;
	struct dkim_sigtags	 g;
	int			 body;		/* index of its body state */
};

struct dkimv {
	time_t			 now;
	struct buf		 cur;
	int			 curlong;	/* the field is over the cap */
	struct dkimv_field	 f[DKIMV_FIELDS_MAX];
	size_t			 nf;
	size_t			 kept;
	int			 toolong;	/* fields left out */
	int			 hdone;
	int			 nosigs;	/* headers only */
	struct dkimv_sig	 s[DKIM_VERIFY_MAX];
	size_t			 ns;
	struct dkim_body	 body[DKIM_VERIFY_MAX];
	int			 brelaxed[DKIM_VERIFY_MAX];
	long long		 bl[DKIM_VERIFY_MAX];
	size_t			 nbody;
};

struct dkimv *
dkimv_new(time_t now)
{
	struct dkimv *v = xcalloc(1, sizeof(*v));

	v->now = now;
	return v;
}

void
dkimv_headers_only(struct dkimv *v)
{
	v->nosigs = 1;
}

void
dkimv_free(struct dkimv *v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < v->nf; i++)
		free(v->f[i].text);
	for (i = 0; i < v->ns; i++)
		free(v->s[i].f.text);
	for (i = 0; i < v->nbody; i++)
		dkim_body_free(&v->body[i]);
	buf_free(&v->cur);
	free(v);
}

/* The length of a field's name, or 0 when it has no colon. */
static size_t
dkimv_name_len(const char *t, size_t len)
{
	size_t n, m;

	for (n = 0; n < len && t[n] != ':' && !dkimv_wsp(t[n]); n++)
		;
	for (m = n; m < len && dkimv_wsp(t[m]); m++)
		;
	return m < len && t[m] == ':' ? n : 0;
}

static int
dkimv_is(const struct dkimv_field *f, const char *name, size_t nl)
{
	return f->nlen == nl && strncasecmp(f->text, name, nl) == 0;
}

static void
dkimv_field_done(struct dkimv *v)
{
	struct dkimv_field f;

	if (v->cur.len == 0)
		return;
	f.len = v->cur.len;
	f.nlen = dkimv_name_len(v->cur.data, v->cur.len);
	if (f.nlen == 14 && strncasecmp(v->cur.data, "DKIM-Signature", 14) ==
	    0 && v->ns < DKIM_VERIFY_MAX && !v->nosigs) {
		struct dkimv_sig *s = &v->s[v->ns++];

		s->f.text = xstrndup(v->cur.data, v->cur.len);
		s->f.len = f.len;
		s->f.nlen = f.nlen;
		if (v->curlong || f.len > DKIMV_SIGFIELD_MAX) {
			s->bad = 1;
			s->why = "signature field too long";
		}
	}
	if (v->curlong || v->nf >= DKIMV_FIELDS_MAX ||
	    v->kept + f.len > DKIMV_HEADER_MAX)
		v->toolong = 1;
	else {
		f.text = xstrndup(v->cur.data, v->cur.len);
		v->f[v->nf++] = f;
		v->kept += f.len;
	}
	buf_reset(&v->cur);
	v->curlong = 0;
}

void
dkimv_hline(struct dkimv *v, const char *line, size_t len)
{
	if (v->hdone)
		return;
	if (len > 0 && dkimv_wsp(line[0]) && v->cur.len > 0)
		buf_append(&v->cur, "\r\n", 2);
	else
		dkimv_field_done(v);
	if (v->cur.len + len > DKIMV_HEADER_MAX)
		v->curlong = 1;
	else
		buf_append(&v->cur, line, len);
}

/* The body state for (relaxed, l), made when new. */
static int
dkimv_body_for(struct dkimv *v, int relaxed, long long l)
{
	size_t i;

	for (i = 0; i < v->nbody; i++)
		if (v->brelaxed[i] == relaxed && v->bl[i] == l)
			return (int)i;
	if (dkim_body_init(&v->body[v->nbody], relaxed) == -1)
		return -1;
	v->body[v->nbody].limit = l;
	v->brelaxed[v->nbody] = relaxed;
	v->bl[v->nbody] = l;
	return (int)v->nbody++;
}

void
dkimv_hend(struct dkimv *v)
{
	size_t i;

	if (v->hdone)
		return;
	dkimv_field_done(v);
	v->hdone = 1;
	for (i = 0; i < v->ns; i++) {
		struct dkimv_sig *s = &v->s[i];
		const char *colon = memchr(s->f.text, ':', s->f.len);

		s->body = -1;
		if (s->bad)
			continue;
		if (dkim_sig_parse(colon + 1, s->f.len - (size_t)(colon + 1 -
		    s->f.text), &s->g, &s->why) == -1) {
			s->bad = 1;
			continue;
		}
		if (!s->g.sha1)
			s->body = dkimv_body_for(v, s->g.brelaxed, s->g.l);
	}
}

size_t
dkimv_nsigs(const struct dkimv *v)
{
	return v->ns;
}

void
dkimv_sig_ids(const struct dkimv *v, size_t i, const char **d,
    const char **s, const char **b8)
{
	*d = v->s[i].g.d;
	*s = v->s[i].g.s;
	*b8 = v->s[i].g.b8;
}

void
dkimv_bline(struct dkimv *v, const char *line, size_t len)
{
	size_t i;

	for (i = 0; i < v->nbody; i++)
		dkim_body_line(&v->body[i], line, len);
}

/*
 * The signature's own field with b='s value removed (3.5, 3.7): what
 * follows "b=" up to the ";" or the end, as dkimpy and OpenDKIM do.
 */
static int
dkimv_strip_b(const struct dkimv_field *f, struct buf *out)
{
	struct taglist_tag tags[DKIM_TAGS_MAX];
	const struct taglist_tag *t;
	const char *why, *val = (const char *)memchr(f->text, ':', f->len) + 1;
	size_t n, vlen = f->len - (size_t)(val - f->text), at;

	if (taglist_parse(val, vlen, 0, tags, DKIM_TAGS_MAX, &n, &why) ==
	    -1 || (t = dkim_tag_find(tags, n, "b")) == NULL)
		return -1;
	at = (size_t)(val - f->text);
	buf_append(out, f->text, at + t->voff);
	buf_append(out, val + t->vend, vlen - t->vend);
	return 0;
}

/* SHA-256 of the signed fields (bottom-up per name) and the signature. */
static int
dkimv_header_digest(const struct dkimv *v, const struct dkimv_sig *s,
    unsigned char out[DKIM_DIGEST_LEN])
{
	struct buf canon, self;
	const char *h = s->g.h;
	EVP_MD_CTX *md;
	unsigned int dl = DKIM_DIGEST_LEN;
	int ok;

	buf_init(&canon);
	buf_init(&self);
	while (*h) {
		size_t n = strcspn(h, ":"), used = 0, seen = 0, j;
		const char *p;

		/* Instances of this name taken by earlier entries of h=. */
		for (p = s->g.h; p < h; p += strcspn(p, ":") + 1)
			used += strcspn(p, ":") == n && strncmp(p, h, n) == 0;
		for (j = v->nf; j > 0; j--)
			if (dkimv_is(&v->f[j - 1], h, n) && seen++ == used) {
				dkim_canon_header(s->g.hrelaxed, v->f[j - 1].text,
				    v->f[j - 1].len, &canon);
				break;
			}
		h += n + (h[n] == ':');
	}
	if (dkimv_strip_b(&s->f, &self) == -1) {
		buf_free(&canon);
		buf_free(&self);
		return -1;
	}
	dkim_canon_header(s->g.hrelaxed, self.data, self.len, &canon);
	canon.len -= 2;			/* hashed without its CRLF */
	ok = (md = EVP_MD_CTX_new()) != NULL &&
	    EVP_DigestInit_ex(md, dkim_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, canon.data, canon.len) == 1 &&
	    EVP_DigestFinal_ex(md, out, &dl) == 1;
	EVP_MD_CTX_free(md);
	buf_free(&canon);
	buf_free(&self);
	return ok ? 0 : -1;
}

static void
dkimv_check_one(struct dkimv *v, struct dkimv_sig *s, struct dkim_check *c,
    const unsigned char bh[][DKIM_DIGEST_LEN], const uint64_t *blen)
{
	const struct dkim_sigtags *g = &s->g;

	memset(c, 0, sizeof(*c));
	c->l = -1;
	str_copy(c->d, g->d, sizeof(c->d));
	str_copy(c->s, g->s, sizeof(c->s));
	str_copy(c->b8, g->b8, sizeof(c->b8));
	if (s->bad) {
		dkim_check_set(c, DKIM_PERMERROR, s->why);
		return;
	}
	if (g->sha1) {
		dkim_check_set(c, DKIM_POLICY, "rsa-sha1 not accepted");
		return;
	}
	c->alg = g->alg;
	c->l = g->l;
	c->isub = g->idom[0] && strcmp(g->idom, g->d) != 0;
	if (g->l >= 0 && s->body >= 0)
		snprintf(c->lnote, sizeof(c->lnote), "l=%lld of %llu body "
		    "octets signed", g->l, (unsigned long long)blen[s->body]);
	if (v->toolong) {
		dkim_check_set(c, DKIM_POLICY, "header too large to verify");
		return;
	}
	if (g->x >= 0 && g->x < (long long)v->now) {
		dkim_check_set(c, DKIM_FAIL, "signature expired");
		return;
	}
	if (g->t >= 0 && g->t > (long long)v->now + DKIM_FUTURE_SLOP) {
		dkim_check_set(c, DKIM_FAIL, "signed in the future");
		return;
	}
	if (s->body < 0) {
		dkim_check_set(c, DKIM_TEMPERROR, "out of memory");
		return;
	}
	if (g->l >= 0 && (uint64_t)g->l > blen[s->body]) {
		dkim_check_set(c, DKIM_FAIL, "l= longer than the body");
		return;
	}
	if (memcmp(bh[s->body], g->bh, DKIM_DIGEST_LEN) != 0) {
		dkim_check_set(c, DKIM_FAIL, "body hash did not verify");
		return;
	}
	if (dkimv_header_digest(v, s, c->digest) == -1) {
		dkim_check_set(c, DKIM_PERMERROR, "signature field unreadable");
		return;
	}
	memcpy(c->sig, g->b, g->blen);
	c->siglen = g->blen;
	c->result = DKIM_NONE;		/* its key decides */
}

size_t
dkimv_end(struct dkimv *v, struct dkim_check *out, size_t max)
{
	unsigned char bh[DKIM_VERIFY_MAX][DKIM_DIGEST_LEN];
	uint64_t blen[DKIM_VERIFY_MAX];
	size_t i;

	dkimv_hend(v);
	for (i = 0; i < v->nbody; i++) {
		struct dkim_body *b = &v->body[i];

		if (!b->any && !b->relaxed)
			blen[i] = b->count + 2;	/* the CRLF final adds */
		else
			blen[i] = b->count;
		dkim_body_final(b, bh[i]);
	}
	v->nbody = 0;
	for (i = 0; i < v->ns && i < max; i++)
		dkimv_check_one(v, &v->s[i], &out[i], (const unsigned char
		    (*)[DKIM_DIGEST_LEN])bh, blen);
	return i;
}

size_t
dkimv_fields(const struct dkimv *v, const char *name, const char **out,
    size_t *lens, size_t max)
{
	size_t i, n = 0, nl = strlen(name);

	for (i = 0; i < v->nf && n < max; i++)
		if (dkimv_is(&v->f[i], name, nl)) {
			out[n] = v->f[i].text;
			lens[n++] = v->f[i].len;
		}
	return n;
}
