/*
 * test_checkcache: the MX's check caches.  txtcache (auth/txtcache.c):
 * a hit gives the records put and a key read once; an answer expires
 * with its TTL (capped), a TTL of 0 or a failure is not kept; the
 * expired go first, then the oldest, when the entries or the bytes are
 * full; a record that changes gives the new key while a reference to
 * the old one still verifies; a revoked key fails, a key under 1024
 * bits is a policy failure, no record a permerror, from the cache as
 * without it.  spfcache (auth/spfcache.c): a hit for exactly the same
 * (ip, HELO, sender), expiry, the cap, eviction, a TTL of 0 not kept.
 */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "auth/dkimverify.h"
#include "auth/spf.h"
#include "auth/spfcache.h"
#include "auth/txtcache.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_checkcache(void);

#define T0	1000000		/* ms: any start */

/* An RSA key of bits: its record "v=DKIM1; p=..." and the key. */
static EVP_PKEY *
rsa_record(int bits, char *rec, size_t cap)
{
	EVP_PKEY *pk = EVP_RSA_gen((unsigned)bits);
	unsigned char *der = NULL;
	unsigned char b64[2048];
	int n;

	if (pk == NULL || (n = i2d_PUBKEY(pk, &der)) <= 0)
		return NULL;
	EVP_EncodeBlock(b64, der, n);
	OPENSSL_free(der);
	snprintf(rec, cap, "v=DKIM1; k=rsa; p=%s", b64);
	return pk;
}

/* A check waiting for its key: a digest signed by pk. */
static void
signed_check(struct dkim_check *c, EVP_PKEY *pk)
{
	EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new(pk, NULL);
	size_t len = sizeof(c->sig);

	memset(c, 0, sizeof(*c));
	c->result = DKIM_NONE;
	c->alg = DKIM_ALG_RSA;
	c->l = -1;
	memset(c->digest, 0x5a, sizeof(c->digest));
	CHECK(pc != NULL && EVP_PKEY_sign_init(pc) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
	    EVP_PKEY_sign(pc, c->sig, &len, c->digest, sizeof(c->digest)) ==
	    1);
	c->siglen = len;
	EVP_PKEY_CTX_free(pc);
}

/* put one record under name */
static void
put1(const char *name, const char *rec, uint32_t ttl, uint64_t now)
{
	txtcache_put(name, 0, rec, strlen(rec) + 1, 1, ttl, now);
}

/* The check of a digest signed by pk, decided by name's cached key. */
static enum dkim_result
cached_check(const char *name, EVP_PKEY *pk, uint64_t now, char *why,
    size_t cap)
{
	struct dkim_check c;
	struct dkim_key *k;

	signed_check(&c, pk);
	if (txtcache_key(name, now, &k) != 0)
		return DKIM_NONE;
	dkim_check_with(&c, k);
	dkim_key_unref(k);
	str_copy(why, c.comment, cap);
	return c.result;
}

static void
test_txt_hit_expiry(void)
{
	struct buf b;
	size_t n = 0, e, bytes;

	txtcache_reset(0, 0);
	buf_init(&b);
	CHECK(txtcache_get("a.test", T0, &b, &n) == -2);
	txtcache_put("a.test", 0, "one\0two", 8, 2, 10, T0);
	CHECK(txtcache_get("a.test", T0 + 9999, &b, &n) == 0 && n == 2 &&
	    b.len == 8 && memcmp(b.data, "one\0two", 8) == 0);
	CHECK(txtcache_get("A.test.x", T0, &b, &n) == -2);
	buf_reset(&b);
	CHECK(txtcache_get("a.test", T0 + 10000, &b, &n) == -2);
	txtcache_stats(&e, &bytes);
	CHECK(e == 0 && bytes == 0);	/* the expired one went */
	/* none exists: kept too; a failure or a TTL of 0 is not */
	txtcache_put("none.test", 1, NULL, 0, 0, 10, T0);
	CHECK(txtcache_get("none.test", T0, &b, &n) == 1 && n == 0);
	txtcache_put("fail.test", -1, NULL, 0, 0, 10, T0);
	CHECK(txtcache_get("fail.test", T0, &b, &n) == -2);
	txtcache_put("zero.test", 0, "x", 2, 1, 0, T0);
	CHECK(txtcache_get("zero.test", T0, &b, &n) == -2);
	/* an hour at most */
	txtcache_put("long.test", 0, "x", 2, 1, 86400, T0);
	CHECK(txtcache_get("long.test", T0 + 3599999, &b, &n) == 0);
	CHECK(txtcache_get("long.test", T0 + 3600000, &b, &n) == -2);
	buf_free(&b);
}

static void
test_txt_eviction(void)
{
	struct buf b;
	size_t n, e, bytes;
	char big[3000];

	buf_init(&b);
	txtcache_reset(3, 0);
	put1("a.test", "a", 100, T0);
	put1("b.test", "b", 100, T0 + 1);
	put1("c.test", "c", 100, T0 + 2);
	put1("d.test", "d", 100, T0 + 3);	/* the oldest, a, goes */
	CHECK(txtcache_get("a.test", T0 + 4, &b, &n) == -2);
	CHECK(txtcache_get("b.test", T0 + 4, &b, &n) == 0);
	CHECK(txtcache_get("d.test", T0 + 4, &b, &n) == 0);
	/* an expired entry goes before an older live one */
	txtcache_reset(3, 0);
	put1("a.test", "a", 100, T0);
	put1("b.test", "b", 1, T0);
	put1("c.test", "c", 100, T0);
	put1("d.test", "d", 100, T0 + 2000);
	CHECK(txtcache_get("a.test", T0 + 2000, &b, &n) == 0);
	CHECK(txtcache_get("b.test", T0 + 2000, &b, &n) == -2);
	/* bytes: entries go until the new one fits; one larger than the
	 * whole bound is not kept */
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	txtcache_reset(100, 8000);
	put1("1.test", big, 100, T0);
	put1("2.test", big, 100, T0 + 1);
	put1("3.test", big, 100, T0 + 2);
	txtcache_stats(&e, &bytes);
	CHECK(e == 2 && bytes <= 8000);
	CHECK(txtcache_get("1.test", T0 + 3, &b, &n) == -2);
	CHECK(txtcache_get("3.test", T0 + 3, &b, &n) == 0);
	txtcache_reset(100, 2000);
	put1("big.test", big, 100, T0);
	CHECK(txtcache_get("big.test", T0, &b, &n) == -2);
	txtcache_reset(0, 0);
	buf_free(&b);
}

static void
test_txt_keys(void)
{
	char rec1[2200], rec2[2200], short_rec[2200], why[128];
	EVP_PKEY *k1 = rsa_record(2048, rec1, sizeof(rec1));
	EVP_PKEY *k2 = rsa_record(2048, rec2, sizeof(rec2));
	EVP_PKEY *ks = rsa_record(768, short_rec, sizeof(short_rec));
	struct dkim_key *a, *b, *old;
	struct dkim_check c;
	size_t e, bytes;

	CHECK(k1 != NULL && k2 != NULL && ks != NULL);
	if (k1 == NULL || k2 == NULL || ks == NULL)
		return;
	txtcache_reset(0, 0);
	CHECK(txtcache_key("s._domainkey.d.test", T0, &a) == -2);
	put1("s._domainkey.d.test", rec1, 300, T0);
	/* read once: the same key object for every message */
	CHECK(txtcache_key("s._domainkey.d.test", T0, &a) == 0);
	CHECK(txtcache_key("s._domainkey.d.test", T0 + 1, &b) == 0 && a == b);
	txtcache_stats(&e, &bytes);
	CHECK(e == 1 && bytes > strlen(rec1) + dkim_key_size(a) - 1);
	dkim_key_unref(b);
	old = a;
	CHECK(cached_check("s._domainkey.d.test", k1, T0, why, sizeof(why)) ==
	    DKIM_PASS);
	CHECK(cached_check("s._domainkey.d.test", k2, T0, why, sizeof(why)) ==
	    DKIM_FAIL && strcmp(why, "signature did not verify") == 0);
	/* the record changes: the new key; the old reference still works */
	put1("s._domainkey.d.test", rec2, 300, T0 + 2);
	CHECK(cached_check("s._domainkey.d.test", k2, T0 + 2, why,
	    sizeof(why)) == DKIM_PASS);
	CHECK(cached_check("s._domainkey.d.test", k1, T0 + 2, why,
	    sizeof(why)) == DKIM_FAIL);
	signed_check(&c, k1);
	dkim_check_with(&c, old);
	CHECK(c.result == DKIM_PASS);
	dkim_key_unref(old);
	/* expired: no key, however often it was used */
	CHECK(txtcache_key("s._domainkey.d.test", T0 + 2 + 300000, &a) == -2);
	/* revoked, short, none, not a key: as dkim_check_key decides */
	put1("r._domainkey.d.test", "v=DKIM1; k=rsa; p=", 300, T0);
	CHECK(cached_check("r._domainkey.d.test", k1, T0, why, sizeof(why)) ==
	    DKIM_FAIL && strcmp(why, "key revoked") == 0);
	put1("short._domainkey.d.test", short_rec, 300, T0);
	CHECK(cached_check("short._domainkey.d.test", ks, T0, why,
	    sizeof(why)) == DKIM_POLICY &&
	    strcmp(why, "RSA key under 1024 bits") == 0);
	txtcache_put("none._domainkey.d.test", 1, NULL, 0, 0, 300, T0);
	CHECK(cached_check("none._domainkey.d.test", k1, T0, why,
	    sizeof(why)) == DKIM_PERMERROR &&
	    strcmp(why, "no key for signature") == 0);
	put1("bad._domainkey.d.test", "v=DKIM1; k=rsa; p=AAAA", 300, T0);
	CHECK(cached_check("bad._domainkey.d.test", k1, T0, why,
	    sizeof(why)) == DKIM_PERMERROR &&
	    strcmp(why, "key unreadable") == 0);
	/* the same answers without the cache */
	{
		const char *t[1] = { rec1 };

		signed_check(&c, k1);
		dkim_check_key(&c, 0, t, 1);
		CHECK(c.result == DKIM_PASS);
		signed_check(&c, k1);
		dkim_check_key(&c, -1, t, 0);
		CHECK(c.result == DKIM_TEMPERROR);
	}
	txtcache_reset(0, 0);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	EVP_PKEY_free(ks);
}

static void
verdict(struct spf_verdict *v, enum spf_result r, uint32_t ttl)
{
	memset(v, 0, sizeof(*v));
	v->result = r;
	v->identity = "mailfrom";
	str_copy(v->domain, "d.test", sizeof(v->domain));
	str_copy(v->reason, "mechanism", sizeof(v->reason));
	v->ttl = ttl;
}

static void
test_spf_cache(void)
{
	struct spf_verdict v, got;

	spfcache_reset(0);
	verdict(&v, SPF_PASS, 10);
	CHECK(spfcache_get("192.0.2.1", "h.test", "a@d.test", T0, &got) ==
	    -1);
	spfcache_put("192.0.2.1", "h.test", "a@d.test", &v, T0);
	CHECK(spfcache_get("192.0.2.1", "h.test", "a@d.test", T0 + 9999,
	    &got) == 0 && memcmp(&got, &v, sizeof(v)) == 0);
	/* every field of the request is the key, exactly */
	CHECK(spfcache_get("192.0.2.2", "h.test", "a@d.test", T0, &got) ==
	    -1);
	CHECK(spfcache_get("192.0.2.1", "H.test", "a@d.test", T0, &got) ==
	    -1);
	CHECK(spfcache_get("192.0.2.1", "h.test", "b@d.test", T0, &got) ==
	    -1);
	CHECK(spfcache_get("192.0.2.1", "h.test", "", T0, &got) == -1);
	CHECK(spfcache_get("192.0.2.1h.test", "", "a@d.test", T0, &got) ==
	    -1);
	CHECK(spfcache_get("192.0.2.1", "h.test", "a@d.test", T0 + 10000,
	    &got) == -1);
	CHECK(spfcache_count() == 0);
	/* a TTL of 0: not kept; a long one: the cap */
	verdict(&v, SPF_TEMPERROR, 0);
	spfcache_put("192.0.2.1", "h.test", "t@d.test", &v, T0);
	CHECK(spfcache_get("192.0.2.1", "h.test", "t@d.test", T0, &got) ==
	    -1);
	verdict(&v, SPF_NONE, 86400);
	spfcache_put("192.0.2.1", "h.test", "n@d.test", &v, T0);
	CHECK(spfcache_get("192.0.2.1", "h.test", "n@d.test",
	    T0 + SPFCACHE_TTL_MAX * 1000 - 1, &got) == 0 &&
	    got.result == SPF_NONE);
	CHECK(spfcache_get("192.0.2.1", "h.test", "n@d.test",
	    T0 + SPFCACHE_TTL_MAX * 1000, &got) == -1);
	/* a new verdict for the same request replaces the old */
	verdict(&v, SPF_PASS, 10);
	spfcache_put("192.0.2.1", "h.test", "a@d.test", &v, T0);
	verdict(&v, SPF_SOFTFAIL, 10);
	spfcache_put("192.0.2.1", "h.test", "a@d.test", &v, T0 + 1);
	CHECK(spfcache_get("192.0.2.1", "h.test", "a@d.test", T0 + 2, &got) ==
	    0 && got.result == SPF_SOFTFAIL && spfcache_count() == 1);
	/* full: the expired go first, then the oldest */
	spfcache_reset(2);
	verdict(&v, SPF_PASS, 1);
	spfcache_put("192.0.2.1", "h", "a@d.test", &v, T0);
	verdict(&v, SPF_PASS, 10);
	spfcache_put("192.0.2.2", "h", "a@d.test", &v, T0 + 1);
	spfcache_put("192.0.2.3", "h", "a@d.test", &v, T0 + 2000);
	CHECK(spfcache_get("192.0.2.2", "h", "a@d.test", T0 + 2000, &got) ==
	    0);
	CHECK(spfcache_get("192.0.2.3", "h", "a@d.test", T0 + 2000, &got) ==
	    0);
	spfcache_put("192.0.2.4", "h", "a@d.test", &v, T0 + 2001);
	CHECK(spfcache_get("192.0.2.2", "h", "a@d.test", T0 + 2001, &got) ==
	    -1);
	CHECK(spfcache_get("192.0.2.4", "h", "a@d.test", T0 + 2001, &got) ==
	    0 && spfcache_count() == 2);
	spfcache_reset(0);
}

void
test_checkcache(void)
{
	test_txt_hit_expiry();
	test_txt_eviction();
	test_txt_keys();
	test_spf_cache();
}
