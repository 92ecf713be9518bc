/*
 * test_dkim: DKIM canonicalization (RFC 6376 3.4, with its 3.4.6
 * examples), the body hash fed line by line against the canonical text
 * hashed whole, the signer's choice of domain and h=, the room it
 * reserves against the fields it writes, and the keys' facts records.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#include "auth/dkim.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_dkim(void);

static int
canon_headers_is(int relaxed, const char *want)
{
	struct buf b;
	int ok;

	buf_init(&b);
	dkim_canon_header(relaxed, "A: X", 4, &b);
	dkim_canon_header(relaxed, "B : Y\t\r\n\tZ  ", 12, &b);
	ok = b.len == strlen(want) && memcmp(b.data, want, b.len) == 0;
	if (!ok)
		fprintf(stderr, "got [%s]\n", b.data ? b.data : "");
	buf_free(&b);
	return ok;
}

static int
canon_body_is(int relaxed, const char *in, const char *want)
{
	struct buf b;
	int ok;

	buf_init(&b);
	dkim_canon_body(relaxed, in, strlen(in), &b);
	ok = b.len == strlen(want) && memcmp(b.data ? b.data : "", want,
	    b.len) == 0;
	buf_free(&b);
	return ok;
}

/* The streamed hash equals the hash of the canonical text. */
static int
body_hash_agrees(int relaxed, const char *in)
{
	unsigned char a[DKIM_DIGEST_LEN], b[DKIM_DIGEST_LEN];
	struct dkim_body body;
	struct buf c;
	const char *p = in, *nl;
	unsigned int n = sizeof(b);

	if (dkim_body_init(&body, relaxed) == -1)
		return 0;
	while ((nl = strstr(p, "\r\n")) != NULL) {
		dkim_body_line(&body, p, (size_t)(nl - p));
		p = nl + 2;
	}
	if (*p)
		dkim_body_line(&body, p, strlen(p));
	dkim_body_final(&body, a);
	buf_init(&c);
	dkim_canon_body(relaxed, in, strlen(in), &c);
	EVP_Digest(c.data ? c.data : "", c.len, b, &n, EVP_sha256(), NULL);
	buf_free(&c);
	return memcmp(a, b, sizeof(a)) == 0;
}

static int
body_hash_b64_is(int relaxed, const char *want)
{
	unsigned char h[DKIM_DIGEST_LEN];
	char b64[64];
	struct dkim_body body;

	if (dkim_body_init(&body, relaxed) == -1)
		return 0;
	dkim_body_final(&body, h);
	EVP_EncodeBlock((unsigned char *)b64, h, sizeof(h));
	return strcmp(b64, want) == 0;
}

/* The signing domain of a header given as CRLF-separated lines. */
static const char *
domain_of(struct dkim_sign **ds, const char *head)
{
	const char *p = head, *nl;

	*ds = dkim_sign_new(1700000000);
	while ((nl = strstr(p, "\r\n")) != NULL) {
		dkim_sign_hline(*ds, p, (size_t)(nl - p));
		p = nl + 2;
	}
	return dkim_sign_hend(*ds);
}

static int
domain_is(const char *head, const char *want)
{
	struct dkim_sign *ds;
	const char *d = domain_of(&ds, head);
	int ok = want ? d != NULL && strcmp(d, want) == 0 : d == NULL;

	dkim_sign_free(ds);
	return ok;
}

static void
test_dkim_signer(void)
{
	struct dkim_keyinfo k = { "example.test", "sel", DKIM_ALG_ED25519, 64 },
	    k2 = { "example.test", "r", DKIM_ALG_RSA, 256 };
	const struct dkim_keyinfo *keys[] = { &k, &k2 };
	unsigned char d[2][DKIM_DIGEST_LEN];
	char s64[400], r64[400], *sigs[2] = { s64, r64 };
	struct dkim_sign *ds;
	struct buf room, out;
	size_t n;

	CHECK(domain_of(&ds, "From: A <a@Example.TEST>\r\nTo: x@y\r\n"
	    "To: z@w\r\nSubject: s\r\n") != NULL);
	buf_init(&room);
	buf_init(&out);
	n = dkim_sign_reserve(ds, keys, 2, &room);
	CHECK(n == room.len && n > 0);
	CHECK(strstr(room.data, "h=from:from:subject:to:to;") != NULL);
	CHECK(strstr(room.data, "d=example.test; s=sel; t=1700000000;"));
	CHECK(strstr(room.data, "a=ed25519-sha256;") != NULL);
	CHECK(strstr(room.data, "a=rsa-sha256;") != NULL);
	dkim_sign_bline(ds, "body", 4);
	CHECK(dkim_sign_digests(ds, d, 2) == 2);
	CHECK(memcmp(d[0], d[1], DKIM_DIGEST_LEN) != 0);
	memset(s64, 'x', 88);
	s64[88] = '\0';
	memset(r64, 'y', 344);
	r64[344] = '\0';
	CHECK(dkim_sign_fields(ds, sigs, 2, &out) == 0 && out.len == n);
	buf_reset(&out);
	s64[87] = '\0';		/* one short: refused, never written */
	CHECK(dkim_sign_fields(ds, sigs, 2, &out) == -1);
	CHECK(dkim_sign_fields(ds, sigs, 1, &out) == -1);
	buf_free(&room);
	buf_free(&out);
	dkim_sign_free(ds);

	/* No From: domain, nothing reserved. */
	CHECK(domain_of(&ds, "Subject: s\r\n") == NULL);
	buf_init(&room);
	CHECK(dkim_sign_reserve(ds, keys, 2, &room) == 0 && room.len == 0);
	buf_free(&room);
	dkim_sign_free(ds);
}

void
test_dkim(void)
{
	struct dkim_keyinfo ki;
	struct buf b;

	/* RFC 6376 3.4.6: the same header and body, both ways. */
	CHECK(canon_headers_is(1, "a:X\r\nb:Y Z\r\n"));
	CHECK(canon_headers_is(0, "A: X\r\nB : Y\t\r\n\tZ  \r\n"));
	CHECK(canon_body_is(1, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"));
	CHECK(canon_body_is(0, " C \r\nD \t E\r\n\r\n\r\n",
	    " C \r\nD \t E\r\n"));
	/* 3.4.3, 3.4.4: an empty body; one without its last CRLF. */
	CHECK(canon_body_is(0, "", "\r\n"));
	CHECK(canon_body_is(1, "", ""));
	CHECK(canon_body_is(1, "\r\n\r\n", ""));
	CHECK(canon_body_is(0, "\r\n\r\n", "\r\n"));
	CHECK(canon_body_is(1, "x", "x\r\n"));
	CHECK(canon_body_is(1, "  \t \r\nx\r\n", "\r\nx\r\n"));
	CHECK(body_hash_b64_is(0, "frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY="));
	CHECK(body_hash_b64_is(1, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="));
	for (int r = 0; r < 2; r++) {
		CHECK(body_hash_agrees(r, " C \r\nD \t E\r\n\r\n\r\n"));
		CHECK(body_hash_agrees(r, "\r\n\r\na\r\n\r\nb  \r\n \r\n"));
		CHECK(body_hash_agrees(r, "no final crlf"));
		CHECK(body_hash_agrees(r, ""));
	}
	/* Relaxed header values: unfolded, WSP runs one SP, trimmed. */
	buf_init(&b);
	dkim_canon_header(1, "SUBJECT \t:  a\r\n \t b  c \t", 23, &b);
	CHECK(b.data && strcmp(b.data, "subject:a b c\r\n") == 0);
	buf_free(&b);

	/* The signing domain: From:'s one address. */
	CHECK(domain_is("From: anna@example.test\r\n", "example.test"));
	CHECK(domain_is("From: \"A, B\" (c@d.e) <a@Sub.Example.test>\r\n",
	    "sub.example.test"));
	CHECK(domain_is("From: Anna\r\n <anna@example.test>\r\n",
	    "example.test"));
	CHECK(domain_is("From: a@example.test, b@example.org\r\n", NULL));
	CHECK(domain_is("From: a@example.test\r\nFrom: b@example.test\r\n",
	    NULL));
	CHECK(domain_is("From: nobody\r\n", NULL));
	CHECK(domain_is("From: <a@b\\c>\r\n", NULL));
	CHECK(domain_is("To: a@example.test\r\n", NULL));
	test_dkim_signer();

	/* The keys' facts, as the parent sends them. */
	CHECK(dkim_keyinfo_parse("2 64 example.test ed1", 21, &ki) == 0 &&
	    ki.alg == DKIM_ALG_ED25519 && ki.siglen == 64 &&
	    strcmp(ki.selector, "ed1") == 0);
	CHECK(dkim_keyinfo_parse("3 64 example.test ed1", 21, &ki) == -1);
	CHECK(dkim_keyinfo_parse("1 0 example.test r", 18, &ki) == -1);
	CHECK(dkim_keyinfo_parse("1 256 example.test", 18, &ki) == -1);
}
