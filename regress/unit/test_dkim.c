/*
 * test_dkim: DKIM canonicalization (RFC 6376 3.4, with its 3.4.6
 * examples), the body hash fed line by line against the canonical text
 * hashed whole, the signer's choice of domain and h=, the room it
 * reserves against the fields it writes, the keys' facts records, and
 * the vault's signing request: the signature checks with the public key,
 * an unknown key is VAULT_NONE, a malformed request gets no answer.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth/dkim.h"
#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/proc.h"
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

/* An address longer than the signer keeps is refused, never cut short
   to a domain it does not name (found by fuzz_dkim). */
static void
test_dkim_long_from(void)
{
	char head[1200];
	size_t n;

	for (n = 1019; n <= 1023; n++) {
		memcpy(head, "From: <", 7);
		memset(head + 7, 'a', n);
		snprintf(head + 7 + n, sizeof(head) - 7 - n,
		    "@example.test.evil.example>\r\n");
		CHECK(domain_is(head, NULL));
		/* the same with no angle brackets, and a display name */
		memmove(head + 6, head + 7, strlen(head + 7) + 1);
		*strchr(head, '>') = ' ';
		CHECK(domain_is(head, NULL));
	}
	memcpy(head, "From: ", 6);
	memset(head + 6, 'N', 1100);
	snprintf(head + 1106, sizeof(head) - 1106, " <a@example.test>\r\n");
	CHECK(domain_is(head, "example.test"));
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

/* The vault's answer to one signing request: status, text; -1: none. */
static int
vault_sign(const char *domain, const char *sel, const unsigned char *d,
    size_t dlen, uint64_t *status, char *text, size_t textlen)
{
	struct rec_reader rd;
	struct buf req, out;
	struct rec r;
	char *t;
	int rv;

	buf_init(&req);
	buf_init(&out);
	rec_put_u64(&req, T_JOB, 9);
	rec_put_str(&req, T_DOMAIN, domain);
	rec_put_str(&req, T_SELECTOR, sel);
	rec_put(&req, T_DIGEST, d, dlen);
	rv = vault_request(IMSG_V_DKIM_SIGN, req.data, req.len, &out);
	text[0] = '\0';
	rec_reader_init(&rd, out.data ? out.data : "", out.len);
	while (rec_next(&rd, &r) == 1)
		if (r.tag == T_STATUS)
			rec_u64(&r, status);
		else if (r.tag == T_TEXT && (t = rec_str(&r, 4096)) != NULL) {
			str_copy(text, t, textlen);
			free(t);
		}
	if (rv == -1 && out.len != 0)
		rv = -2;
	buf_free(&req);
	buf_free(&out);
	return rv;
}

/* A base64 signature over digest d checks with pem's public key. */
static int
sig_checks(const struct buf *pem, const unsigned char *d, const char *b64)
{
	BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
	EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	unsigned char sig[600];
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pc = NULL;
	int n, ok = 0;

	BIO_free(bio);
	if (k == NULL || strlen(b64) > 800 || (n = EVP_DecodeBlock(sig,
	    (const unsigned char *)b64, (int)strlen(b64))) <= 0)
		goto done;
	n -= (b64[strlen(b64) - 1] == '=') + (b64[strlen(b64) - 2] == '=');
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519)
		ok = (md = EVP_MD_CTX_new()) != NULL &&
		    EVP_DigestVerifyInit(md, NULL, NULL, NULL, k) == 1 &&
		    EVP_DigestVerify(md, sig, (size_t)n, d,
		    DKIM_DIGEST_LEN) == 1;
	else
		ok = (pc = EVP_PKEY_CTX_new(k, NULL)) != NULL &&
		    EVP_PKEY_verify_init(pc) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
		    EVP_PKEY_verify(pc, sig, (size_t)n, d, DKIM_DIGEST_LEN) == 1;
done:
	EVP_MD_CTX_free(md);
	EVP_PKEY_CTX_free(pc);
	EVP_PKEY_free(k);
	return ok;
}

static void
test_dkim_vault(void)
{
	unsigned char d[DKIM_DIGEST_LEN + 1];
	struct buf ed, rsa, txt, secrets;
	char text[4096];
	uint64_t st = 99;

	buf_init(&ed);
	buf_init(&rsa);
	buf_init(&txt);
	buf_init(&secrets);
	CHECK(dkim_key_generate(DKIM_ALG_ED25519, &ed, &txt) == 0);
	CHECK(strncmp(txt.data, "v=DKIM1; k=ed25519; p=", 22) == 0);
	buf_reset(&txt);
	CHECK(dkim_key_generate(DKIM_ALG_RSA, &rsa, &txt) == 0);
	CHECK(strncmp(txt.data, "v=DKIM1; k=rsa; p=MIIBIjAN", 26) == 0);
	rec_put_str(&secrets, T_DKIM, "example.test");
	rec_put_str(&secrets, T_SELECTOR, "e");
	rec_put(&secrets, T_PEM, ed.data, ed.len);
	rec_put_str(&secrets, T_DKIM, "example.test");
	rec_put_str(&secrets, T_SELECTOR, "r");
	rec_put(&secrets, T_PEM, rsa.data, rsa.len);
	CHECK(vault_load(secrets.data, secrets.len) == 0);
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = (unsigned char)(i * 7);
	CHECK(vault_sign("example.test", "e", d, DKIM_DIGEST_LEN, &st, text,
	    sizeof(text)) == 0 && st == VAULT_OK && strlen(text) == 88);
	CHECK(sig_checks(&ed, d, text));
	d[0] ^= 1;		/* another digest: the signature fails */
	CHECK(!sig_checks(&ed, d, text));
	CHECK(vault_sign("example.test", "r", d, DKIM_DIGEST_LEN, &st, text,
	    sizeof(text)) == 0 && st == VAULT_OK && strlen(text) == 344);
	CHECK(sig_checks(&rsa, d, text));
	CHECK(!sig_checks(&ed, d, text));
	CHECK(vault_sign("example.test", "x", d, DKIM_DIGEST_LEN, &st, text,
	    sizeof(text)) == 0 && st == VAULT_NONE);
	CHECK(vault_sign("other.test", "e", d, DKIM_DIGEST_LEN, &st, text,
	    sizeof(text)) == 0 && st == VAULT_NONE);
	/* A digest of the wrong length: no answer at all. */
	CHECK(vault_sign("example.test", "e", d, DKIM_DIGEST_LEN + 1, &st,
	    text, sizeof(text)) == -1);
	CHECK(vault_sign("example.test", "e", d, 0, &st, text,
	    sizeof(text)) == -1);
	/* A key that is not one: the secrets are refused whole. */
	buf_reset(&secrets);
	rec_put_str(&secrets, T_DKIM, "example.test");
	rec_put_str(&secrets, T_SELECTOR, "e");
	rec_put_str(&secrets, T_PEM, "junk");
	CHECK(vault_load(secrets.data, secrets.len) == -1);
	buf_reset(&secrets);
	CHECK(vault_load("", 0) == 0);		/* and forgotten */
	CHECK(vault_sign("example.test", "e", d, DKIM_DIGEST_LEN, &st, text,
	    sizeof(text)) == 0 && st == VAULT_NONE);
	explicit_bzero(ed.data, ed.len);
	explicit_bzero(rsa.data, rsa.len);
	buf_free(&ed);
	buf_free(&rsa);
	buf_free(&txt);
	buf_free(&secrets);
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
	test_dkim_long_from();
	test_dkim_signer();
	test_dkim_vault();

	/* The keys' facts, as the parent sends them. */
	CHECK(dkim_keyinfo_parse("2 64 example.test ed1", 21, &ki) == 0 &&
	    ki.alg == DKIM_ALG_ED25519 && ki.siglen == 64 &&
	    strcmp(ki.selector, "ed1") == 0);
	CHECK(dkim_keyinfo_parse("3 64 example.test ed1", 21, &ki) == -1);
	CHECK(dkim_keyinfo_parse("1 0 example.test r", 18, &ki) == -1);
	CHECK(dkim_keyinfo_parse("1 256 example.test", 18, &ki) == -1);
}
