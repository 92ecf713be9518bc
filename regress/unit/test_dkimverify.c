/*
 * test_dkimverify: DKIM verification's parsers (DKIM-Signature, key
 * record; their tag-lists are test_taglist's) against tables of accepted
 * and refused inputs; the body hash with l=; a round trip through our signer (auth/dkim.c) and our
 * verifier with a fresh key of each type, and the tampered, wrong-key,
 * revoked and truncated cases; and the Authentication-Results field:
 * fields claiming our authserv-id found, the field written exactly as
 * long as its room whatever the results.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "auth/authres.h"
#include "auth/dkim.h"
#include "auth/dkimverify.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_dkimverify(void);

#define BH	"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
#define BASE	"v=1; a=rsa-sha256; d=Example.COM; s=sel; bh=" BH "; b=AAAA"

static int
sig_ok(const char *extra, struct dkim_sigtags *g)
{
	char s[1024];
	const char *why;

	snprintf(s, sizeof(s), "%s; %s", BASE, extra);
	return dkim_sig_parse(s, strlen(s), g, &why) == 0;
}

static const char *
sig_why(const char *s)
{
	struct dkim_sigtags g;
	const char *why = NULL;

	return dkim_sig_parse(s, strlen(s), &g, &why) == 0 ? NULL : why;
}

static void
test_sigs(void)
{
	struct dkim_sigtags g;
	static const char *const bad[] = {
		"h=to", "h=from; i=@example.org", "h=from; i=@notexample.com",
		"h=from; i=nobody", "h=from; c=relaxed/bogus", "h=from; c=",
		"h=from; l=12a", "h=from; l=1234567890123456789",
		"h=from; q=http", "h=from; t=10; x=10", "h=from; t=-1",
		"h=from:", "h=:from", "h=from::to", "h=from; z=\x01",
	};

	CHECK(sig_ok("h=From : To", &g));
	CHECK(strcmp(g.h, "from:to") == 0 && strcmp(g.d, "example.com") == 0);
	CHECK(g.alg == DKIM_ALG_RSA && !g.hrelaxed && !g.brelaxed);
	CHECK(g.l == -1 && g.t == -1 && g.x == -1 && g.blen == 3);
	CHECK(strcmp(g.b8, "AAAA") == 0);
	CHECK(sig_ok("h=from; c=relaxed", &g) && g.hrelaxed && !g.brelaxed);
	CHECK(sig_ok("h=from; c=simple/relaxed", &g) && !g.hrelaxed &&
	    g.brelaxed);
	CHECK(sig_ok("h=from; i=@Mail.Example.com", &g) &&
	    strcmp(g.idom, "mail.example.com") == 0);
	CHECK(sig_ok("h=from; i=a@b@example.com", &g));
	CHECK(sig_ok("h=from; l=0; t=5; x=6; q=dns/txt; z=From:x", &g) &&
	    g.l == 0 && g.t == 5 && g.x == 6);
	CHECK(sig_ok("h=from; unknown=tag", &g));
	/* RFC 6376 3.2: a tag twice makes the whole signature invalid. */
	CHECK(strcmp(sig_why(BASE "; h=from; d=example.com"),
	    "a tag given twice") == 0);
	CHECK(sig_ok("h=from; D=example.com", &g));	/* D= is not d= */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(!sig_ok(bad[i], &g));
	CHECK(strcmp(sig_why(BASE "; h=to"), "h= does not include From") == 0);
	CHECK(strcmp(sig_why("v=2; a=rsa-sha256; d=x.com; s=s; h=from; bh="
	    BH "; b=AAAA"), "v= is not 1") == 0);
	CHECK(strcmp(sig_why("v=1; a=rsa-md5; d=x.com; s=s; h=from; bh=" BH
	    "; b=AAAA"), "unknown signing algorithm") == 0);
	CHECK(sig_why("v=1; a=rsa-sha256; s=s; h=from; bh=" BH "; b=AAAA"));
	CHECK(sig_why("v=1; a=rsa-sha256; d=x.com; h=from; bh=" BH "; b=AAAA"));
	CHECK(sig_why("v=1; a=rsa-sha256; d=x.com; s=s; h=from; b=AAAA"));
	CHECK(sig_why("v=1; a=rsa-sha256; d=x.com; s=s; h=from; bh=" BH));
	CHECK(sig_why("v=1; a=rsa-sha256; d=x.com; s=s; h=from; bh=AAAA; "
	    "b=AAAA"));		/* bh= of the wrong length */
	CHECK(sig_why("v=1; a=rsa-sha256; d=x..com; s=s; h=from; bh=" BH
	    "; b=AAAA"));
	/* rsa-sha1: read (its bh= is 20 octets), flagged for policy. */
	{
		const char *s = "v=1; a=rsa-sha1; d=x.com; s=s; h=from; "
		    "bh=2jmj7l5rSw0yVb/vlWAYkK/YBwk=; b=AA\r\n BB";
		const char *why;

		CHECK(dkim_sig_parse(s, strlen(s), &g, &why) == 0 && g.sha1);
		CHECK(strcmp(g.b8, "AABB") == 0 && g.blen == 3);
	}
	/* b= in base64 with FWS; bad base64 refused. */
	CHECK(sig_why(BASE "=; h=from"));
	CHECK(sig_why("v=1; a=rsa-sha256; d=x.com; s=s; h=from; bh=" BH
	    "; b=A!AA"));
}

static int
key_ok(const char *s, struct dkim_keyrec *k)
{
	const char *why;

	return dkim_keyrec_parse(s, strlen(s), k, &why) == 0;
}

static void
test_keys(void)
{
	struct dkim_keyrec k;

	CHECK(key_ok("v=DKIM1; k=rsa; p=AAAA", &k) && k.alg == DKIM_ALG_RSA &&
	    k.plen == 3 && !k.revoked && !k.nosha256);
	CHECK(key_ok("p=AAAA", &k) && k.alg == DKIM_ALG_RSA);
	CHECK(key_ok("v=DKIM1; p=", &k) && k.revoked);
	CHECK(key_ok("k=ed25519; p=AAAA", &k) && k.alg == DKIM_ALG_ED25519);
	CHECK(key_ok("h=sha1; p=AAAA", &k) && k.nosha256);
	CHECK(key_ok("h=sha1:sha256; p=AAAA", &k) && !k.nosha256);
	CHECK(key_ok("s=email; p=AAAA", &k) && key_ok("s=*; p=AAAA", &k));
	CHECK(key_ok("s=tlsrpt:email; p=AAAA", &k));
	CHECK(key_ok("t=y:s; p=AAAA", &k) && k.testing && k.strict);
	CHECK(key_ok("n=notes here; p=AA\r\n AA; x=unknown", &k) &&
	    k.plen == 3);
	CHECK(!key_ok("k=rsa; v=DKIM1; p=AAAA", &k));	/* v= not first */
	CHECK(!key_ok("v=DKIM2; p=AAAA", &k));
	CHECK(!key_ok("s=tlsrpt; p=AAAA", &k));
	CHECK(!key_ok("k=dsa; p=AAAA", &k));
	CHECK(!key_ok("v=DKIM1; k=rsa", &k));
	CHECK(!key_ok("p=AA!A", &k));
	CHECK(!key_ok("p=AAAA; p=AAAA", &k));
	CHECK(!key_ok("", &k));
}

/* The body hash with l=: the hash of the first l canonical octets. */
static void
test_length(void)
{
	struct dkim_body b;
	unsigned char a[DKIM_DIGEST_LEN], want[DKIM_DIGEST_LEN];
	unsigned int n = DKIM_DIGEST_LEN;

	CHECK(dkim_body_init(&b, 1) == 0);
	b.limit = 5;
	dkim_body_line(&b, "ab  c", 5);		/* "ab c\r\n": 6 octets */
	dkim_body_line(&b, "more", 4);
	CHECK(b.count == 12);
	dkim_body_final(&b, a);
	EVP_Digest("ab c\r", 5, want, &n, EVP_sha256(), NULL);
	CHECK(memcmp(a, want, sizeof(a)) == 0);
	/* l=0: nothing hashed, however long the body. */
	CHECK(dkim_body_init(&b, 0) == 0);
	b.limit = 0;
	dkim_body_line(&b, "x", 1);
	dkim_body_final(&b, a);
	EVP_Digest("", 0, want, &n, EVP_sha256(), NULL);
	CHECK(memcmp(a, want, sizeof(a)) == 0);
}

/* Lines of text (CRLF-separated) to the verifier's header or body. */
static void
feed(struct dkimv *v, const char *text, int header)
{
	const char *p = text, *e;

	while (*p) {
		e = strstr(p, "\r\n");
		if (e == NULL)
			e = p + strlen(p);
		if (header)
			dkimv_hline(v, p, (size_t)(e - p));
		else
			dkimv_bline(v, p, (size_t)(e - p));
		p = *e ? e + 2 : e;
	}
}

struct signed_msg {
	struct buf	fields;		/* the DKIM-Signature field(s) */
	struct buf	pem, txt;	/* the key, its record */
};

#define HEAD	"From: Anna <anna@example.org>\r\nTo: b@example.test\r\n" \
		"Subject:  folded\r\n\tsubject \r\n"
#define BODY	"Hello  there\r\n\r\n.dot\r\n\r\n"

/* Our signer's fields for HEAD and BODY with a new key of alg. */
static int
sign_msg(int alg, struct signed_msg *m)
{
	struct dkim_keyinfo ki;
	const struct dkim_keyinfo *kp = &ki;
	struct dkim_sign *ds;
	unsigned char d[1][DKIM_DIGEST_LEN];
	struct buf room, sig;
	char err[128], *sigs[1];
	void *key;
	int ok;

	buf_init(&m->fields);
	buf_init(&m->pem);
	buf_init(&m->txt);
	buf_init(&room);
	buf_init(&sig);
	memset(&ki, 0, sizeof(ki));
	if (dkim_key_generate(alg, &m->pem, &m->txt) == -1 ||
	    dkim_key_check(m->pem.data, m->pem.len, &ki.alg, &ki.siglen, err,
	    sizeof(err)) == -1)
		return 0;
	str_copy(ki.domain, "example.org", sizeof(ki.domain));
	str_copy(ki.selector, "sel", sizeof(ki.selector));
	ds = dkim_sign_new(time(NULL));
	dkim_sign_hline(ds, "From: Anna <anna@example.org>", 29);
	dkim_sign_hline(ds, "To: b@example.test", 18);
	dkim_sign_hline(ds, "Subject:  folded", 16);
	dkim_sign_hline(ds, "\tsubject ", 9);
	ok = dkim_sign_hend(ds) != NULL && dkim_sign_reserve(ds, &kp, 1,
	    &room) > 0;
	dkim_sign_bline(ds, "Hello  there", 12);
	dkim_sign_bline(ds, "", 0);
	dkim_sign_bline(ds, ".dot", 4);
	dkim_sign_bline(ds, "", 0);
	ok = ok && dkim_sign_digests(ds, d, 1) == 1 &&
	    (key = dkim_key_parse(m->pem.data, m->pem.len)) != NULL;
	if (ok) {
		ok = dkim_key_sign(key, d[0], DKIM_DIGEST_LEN, &sig) == 0;
		dkim_key_free(key);
		buf_putc(&sig, '\0');
		sigs[0] = sig.data;
		ok = ok && dkim_sign_fields(ds, sigs, 1, &m->fields) == 0;
		buf_putc(&m->fields, '\0');
		m->fields.len--;
	}
	dkim_sign_free(ds);
	buf_free(&room);
	buf_free(&sig);
	buf_putc(&m->txt, '\0');
	return ok;
}

static void
signed_free(struct signed_msg *m)
{
	buf_free(&m->fields);
	buf_free(&m->pem);
	buf_free(&m->txt);
}

/* Verify fields + head + body against the record txt. */
static enum dkim_result
verify(const char *fields, const char *head, const char *body,
    const char *txt, char *why, size_t whylen)
{
	struct dkim_check c[DKIM_VERIFY_MAX];
	struct dkimv *v = dkimv_new(time(NULL));
	size_t n;

	feed(v, fields, 1);
	feed(v, head, 1);
	dkimv_hend(v);
	feed(v, body, 0);
	n = dkimv_end(v, c, DKIM_VERIFY_MAX);
	dkimv_free(v);
	if (n != 1)
		return DKIM_NONE;
	if (c[0].result == DKIM_NONE)
		dkim_check_key(&c[0], txt ? 0 : 1, &txt, txt ? 1 : 0);
	str_copy(why, c[0].comment, whylen);
	return c[0].result;
}

static void
test_roundtrip(void)
{
	struct signed_msg m, other;
	char why[128];

	for (int alg = DKIM_ALG_RSA; alg <= DKIM_ALG_ED25519; alg++) {
		CHECK(sign_msg(alg, &m));
		CHECK(sign_msg(alg, &other));
		CHECK(verify(m.fields.data, HEAD, BODY, m.txt.data, why,
		    sizeof(why)) == DKIM_PASS);
		/* The order of other fields, added blank lines at the end,
		 * whitespace changed within lines: relaxed/relaxed. */
		CHECK(verify(m.fields.data, "X-Added: 1\r\n" HEAD, BODY
		    "\r\n\r\n", m.txt.data, why, sizeof(why)) == DKIM_PASS);
		CHECK(verify(m.fields.data, HEAD, "Hello \t there \r\n\r\n"
		    ".dot\r\n", m.txt.data, why, sizeof(why)) == DKIM_PASS);
		CHECK(verify(m.fields.data, HEAD, "Hello there.\r\n",
		    m.txt.data, why, sizeof(why)) == DKIM_FAIL);
		CHECK(strcmp(why, "body hash did not verify") == 0);
		CHECK(verify(m.fields.data, "From: Anna <anna@example.org>\r\n"
		    "To: c@example.test\r\nSubject: folded subject\r\n", BODY,
		    m.txt.data, why, sizeof(why)) == DKIM_FAIL);
		CHECK(strcmp(why, "signature did not verify") == 0);
		/* From is oversigned: a second From: above fails. */
		CHECK(verify(m.fields.data, "From: eve@evil.test\r\n" HEAD,
		    BODY, m.txt.data, why, sizeof(why)) == DKIM_FAIL);
		CHECK(verify(m.fields.data, HEAD, BODY, other.txt.data, why,
		    sizeof(why)) == DKIM_FAIL);
		CHECK(verify(m.fields.data, HEAD, BODY, "v=DKIM1; p=", why,
		    sizeof(why)) == DKIM_FAIL && strcmp(why, "key revoked") ==
		    0);
		CHECK(verify(m.fields.data, HEAD, BODY, NULL, why,
		    sizeof(why)) == DKIM_PERMERROR);
		CHECK(verify(m.fields.data, HEAD, BODY, "v=DKIM1; k=rsa; "
		    "p=AAAA", why, sizeof(why)) == DKIM_PERMERROR);
		signed_free(&m);
		signed_free(&other);
	}
}

static void
test_authres(void)
{
	static const char *const ours[] = {
		"Authentication-Results: mx.example.test; spf=pass",
		"authentication-results : MX.EXAMPLE.TEST;",
		"Authentication-Results:\r\n\t(a (nested) comment)\r\n "
		    "mx.example.test; dkim=pass",
		"Authentication-Results: \"mx.example.test\"; none",
		"Authentication-Results: mx.example.test 1; none",
		"Authentication-Results: mx.example.test",
	};
	static const char *const theirs[] = {
		"Authentication-Results: mx.example.test.evil; spf=pass",
		"Authentication-Results: other.example; spf=pass",
		"Authentication-Results: \"mx.example.test \"; none",
		"Authentication-Results-X: mx.example.test;",
		"Received: mx.example.test;",
		"X-Authentication-Results: mx.example.test;",
	};
	struct authres ar;
	struct buf b;
	size_t room;

	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		CHECK(authres_claims(ours[i], strlen(ours[i]),
		    "mx.example.test") == 1);
	for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++)
		CHECK(authres_claims(theirs[i], strlen(theirs[i]),
		    "mx.example.test") == 0);
	CHECK(authres_claims("Authentication-Results:", 23, "x.test") == -1);
	CHECK(authres_claims("Authentication-Results: (open", 29, "x.test") ==
	    -1);
	CHECK(authres_claims("Authentication-Results: \"x.te", 29, "x.test") ==
	    -1);

	memset(&ar, 0, sizeof(ar));
	CHECK(authres_empty(&ar) && authres_room(&ar, "mx") == 0);
	ar.dkim = 1;
	buf_init(&b);
	CHECK(authres_format(&b, "mx.example.test", &ar, 0) == 0);
	CHECK(strcmp(b.data, "Authentication-Results: mx.example.test;\r\n"
	    "\tdkim=none\r\n") == 0);
	/* Two signatures: however they come out, the field fills its room
	 * exactly, and a "/" in b= is quoted. */
	str_copy(ar.spf, "spf=pass smtp.mailfrom=a@example.org",
	    sizeof(ar.spf));
	ar.ndkim = 2;
	str_copy(ar.dk[0].d, "example.org", sizeof(ar.dk[0].d));
	str_copy(ar.dk[0].s, "sel", sizeof(ar.dk[0].s));
	str_copy(ar.dk[0].b8, "ab/+cdef", sizeof(ar.dk[0].b8));
	room = authres_room(&ar, "mx.example.test");
	for (int r = DKIM_PASS; r <= DKIM_PERMERROR; r++) {
		ar.dk[0].result = (enum dkim_result)r;
		ar.dk[1].result = (enum dkim_result)(DKIM_PERMERROR - r + 1);
		memset(ar.dk[1].comment, 'c', sizeof(ar.dk[1].comment) - 1);
		ar.dk[1].comment[r * 10] = '\0';
		buf_reset(&b);
		CHECK(authres_format(&b, "mx.example.test", &ar, room) == 0);
		CHECK(b.len == room);
		CHECK(b.len > 2 && memcmp(b.data + b.len - 2, "\r\n", 2) == 0);
	}
	buf_putc(&b, '\0');
	CHECK(strstr(b.data, "Authentication-Results: mx.example.test;\r\n"
	    "\tspf=pass smtp.mailfrom=a@example.org;\r\n\tdkim=") == b.data);
	CHECK(strstr(b.data, "header.d=example.org header.s=sel "
	    "header.b=\"ab/+cdef\"") != NULL);
	/* Another method's entry (DMARC's): sized first, written after the
	 * dkim= entries, padded; left out when it has no text in the end;
	 * cut when its text is longer than it said. */
	{
		struct authres x;
		const char *t = "dmarc=pass header.from=example.org";

		memset(&x, 0, sizeof(x));
		x.extra[0].room = 60;
		room = authres_room(&x, "mx");
		for (int k = 0; k < 3; k++) {
			str_copy(x.extra[0].text, k == 0 ? t : k == 1 ? "" :
			    "dmarc=fail header.from=a-domain-much-longer-than-"
			    "it-said.example.org", sizeof(x.extra[0].text));
			buf_reset(&b);
			CHECK(authres_format(&b, "mx", &x, room) == 0);
			CHECK(b.len == room);
			buf_putc(&b, '\0');
			CHECK(k != 0 || strncmp(b.data, "Authentication-Results: "
			    "mx;\r\n\tdmarc=pass header.from=example.org ", 61) ==
			    0);
			CHECK(k != 1 || strncmp(b.data, "Authentication-Results: "
			    "mx; none ", 33) == 0);
		}
		x.dkim = 1;
		room = authres_room(&x, "mx");
		x.extra[0].text[0] = '\0';
		buf_reset(&b);
		CHECK(authres_format(&b, "mx", &x, room) == 0 && b.len == room);
		buf_putc(&b, '\0');
		CHECK(strncmp(b.data, "Authentication-Results: mx;\r\n\t"
		    "dkim=none ", 38) == 0);
	}
	/* A room too small is refused, nothing written. */
	buf_reset(&b);
	CHECK(authres_format(&b, "mx.example.test", &ar, 10) == -1 &&
	    b.len == 0);
	buf_free(&b);
}

/* The header kept for other checks: every From:, folds and all. */
static void
test_fields(void)
{
	struct dkim_check c[DKIM_VERIFY_MAX];
	const char *f[4];
	size_t l[4];

	for (int only = 0; only < 2; only++) {
		struct dkimv *v = dkimv_new(time(NULL));

		if (only)
			dkimv_headers_only(v);
		feed(v, "DKIM-Signature: v=1\r\nfrom: a@x.test\r\nTo: b\r\n"
		    "FROM : c@y.test,\r\n d@z.test\r\nX: y", 1);
		dkimv_hend(v);
		CHECK(dkimv_nsigs(v) == (only ? 0u : 1u));
		CHECK(dkimv_fields(v, "From", f, l, 4) == 2);
		CHECK(l[0] == 14 && memcmp(f[0], "from: a@x.test", 14) == 0);
		CHECK(l[1] == strlen("FROM : c@y.test,\r\n d@z.test") &&
		    memcmp(f[1], "FROM : c@y.test,\r\n d@z.test", l[1]) == 0);
		CHECK(dkimv_fields(v, "x", f, l, 4) == 1 && l[0] == 4);
		CHECK(dkimv_fields(v, "Fro", f, l, 4) == 0);
		CHECK(dkimv_end(v, c, DKIM_VERIFY_MAX) == (only ? 0u : 1u));
		if (!only)	/* v=1 alone: a permerror, no key asked */
			CHECK(c[0].result == DKIM_PERMERROR);
		dkimv_free(v);
	}
	{	/* Seven signatures: the first five are read, the rest not. */
		struct dkimv *v = dkimv_new(time(NULL));
		char f7[64];

		for (int i = 0; i < 7; i++) {
			snprintf(f7, sizeof(f7), "DKIM-Signature: v=1; s=s%d", i);
			dkimv_hline(v, f7, strlen(f7));
		}
		dkimv_hend(v);
		CHECK(dkimv_nsigs(v) == DKIM_VERIFY_MAX);
		CHECK(dkimv_end(v, c, DKIM_VERIFY_MAX) == DKIM_VERIFY_MAX);
		CHECK(strcmp(c[4].s, "s4") == 0);
		dkimv_free(v);
	}
}

void
test_dkimverify(void)
{
	test_fields();
	test_sigs();
	test_keys();
	test_length();
	test_roundtrip();
	test_authres();
}
