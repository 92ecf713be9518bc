/*
 * dkimkey: DKIM private keys (see dkim.h).  The root parent checks a key
 * file when it reads the config; the vault parses the keys it is sent and
 * signs digests with them; ternctl dkim keygen makes a key pair and
 * prints its DNS record.  RSA (2048 bits or more; 1024 is refused, as
 * RFC 8301 says verifiers may) and Ed25519 (RFC 8463).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "auth/dkim.h"
#include "lib/util.h"

#define DKIM_RSA_MIN	2048
#define DKIM_RSA_BITS	2048

void *
dkim_key_parse(const char *pem, size_t len)
{
	BIO *bio;
	EVP_PKEY *k;

	if (len > INT32_MAX || (bio = BIO_new_mem_buf(pem, (int)len)) == NULL)
		return NULL;
	k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	return k;
}

void
dkim_key_free(void *k)
{
	EVP_PKEY_free(k);
}

static int
dkim_key_alg(EVP_PKEY *k, int *alg, size_t *siglen, char *err,
    size_t errlen)
{
	int id = EVP_PKEY_get_base_id(k);

	if (id == EVP_PKEY_ED25519) {
		*alg = DKIM_ALG_ED25519;
		*siglen = 64;
		return 0;
	}
	if (id != EVP_PKEY_RSA) {
		snprintf(err, errlen, "not an RSA or Ed25519 key");
		return -1;
	}
	if (EVP_PKEY_get_bits(k) < DKIM_RSA_MIN ||
	    (size_t)EVP_PKEY_get_size(k) > DKIM_SIG_MAX) {
		snprintf(err, errlen, "RSA key of %d bits (at least %d, at "
		    "most %d)", EVP_PKEY_get_bits(k), DKIM_RSA_MIN,
		    DKIM_SIG_MAX * 8);
		return -1;
	}
	*alg = DKIM_ALG_RSA;
	*siglen = (size_t)EVP_PKEY_get_size(k);
	return 0;
}

int
dkim_key_check(const char *pem, size_t len, int *alg, size_t *siglen,
    char *err, size_t errlen)
{
	EVP_PKEY *k = dkim_key_parse(pem, len);
	int rv;

	if (k == NULL) {
		snprintf(err, errlen, "not a PEM private key");
		return -1;
	}
	rv = dkim_key_alg(k, alg, siglen, err, errlen);
	EVP_PKEY_free(k);
	return rv;
}

/*
 * RSA signs the digest as PKCS#1 v1.5 with SHA-256's DigestInfo;
 * Ed25519 signs the 32 bytes of the digest themselves (PureEdDSA over
 * the SHA-256 hash, RFC 8463 3).
 */
int
dkim_key_sign(void *key, const unsigned char *d, size_t dlen,
    struct buf *out)
{
	EVP_PKEY *k = key;
	EVP_PKEY_CTX *pc = NULL;
	EVP_MD_CTX *md = NULL;
	unsigned char sig[DKIM_SIG_MAX];
	char b64[DKIM_SIG_MAX * 2];
	size_t slen = sizeof(sig);
	int ok = 0;

	if (k == NULL || dlen != DKIM_DIGEST_LEN)
		return -1;
	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519) {
		ok = (md = EVP_MD_CTX_new()) != NULL &&
		    EVP_DigestSignInit(md, NULL, NULL, NULL, k) == 1 &&
		    EVP_DigestSign(md, sig, &slen, d, dlen) == 1;
	} else if ((size_t)EVP_PKEY_get_size(k) <= sizeof(sig)) {
		ok = (pc = EVP_PKEY_CTX_new(k, NULL)) != NULL &&
		    EVP_PKEY_sign_init(pc) == 1 &&
		    EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1 &&
		    EVP_PKEY_CTX_set_signature_md(pc, EVP_sha256()) == 1 &&
		    EVP_PKEY_sign(pc, sig, &slen, d, dlen) == 1;
	}
	EVP_MD_CTX_free(md);
	EVP_PKEY_CTX_free(pc);
	if (!ok)
		return -1;
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)slen);
	buf_puts(out, b64);
	return 0;
}

/* "v=DKIM1; k=rsa|ed25519; p=BASE64": the public half, as RFC 6376
 * 3.6.1 (SubjectPublicKeyInfo for RSA) and RFC 8463 4.2 (the raw 32
 * bytes for Ed25519) publish it. */
static int
dkim_key_txt_pkey(EVP_PKEY *k, struct buf *txt)
{
	unsigned char raw[64], *der = NULL;
	char *b64;
	size_t rlen = sizeof(raw);
	int n;

	if (EVP_PKEY_get_base_id(k) == EVP_PKEY_ED25519) {
		if (EVP_PKEY_get_raw_public_key(k, raw, &rlen) != 1)
			return -1;
		b64 = xmalloc(4 * ((rlen + 2) / 3) + 1);
		EVP_EncodeBlock((unsigned char *)b64, raw, (int)rlen);
		buf_printf(txt, "v=DKIM1; k=ed25519; p=%s", b64);
		free(b64);
		return 0;
	}
	if ((n = i2d_PUBKEY(k, &der)) <= 0)
		return -1;
	b64 = xmalloc(4 * (((size_t)n + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)b64, der, n);
	buf_printf(txt, "v=DKIM1; k=rsa; p=%s", b64);
	free(b64);
	OPENSSL_free(der);
	return 0;
}

int
dkim_key_txt(const char *pem, size_t len, struct buf *txt)
{
	EVP_PKEY *k = dkim_key_parse(pem, len);
	int rv;

	if (k == NULL)
		return -1;
	rv = dkim_key_txt_pkey(k, txt);
	EVP_PKEY_free(k);
	return rv;
}

int
dkim_key_generate(int alg, struct buf *pem, struct buf *txt)
{
	EVP_PKEY *k;
	BIO *bio;
	char *p;
	long n;
	int rv = -1;

	k = alg == DKIM_ALG_ED25519 ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519") :
	    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)DKIM_RSA_BITS);
	if (k == NULL)
		return -1;
	if ((bio = BIO_new(BIO_s_mem())) != NULL &&
	    PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (n = BIO_get_mem_data(bio, &p)) > 0) {
		buf_append_wipe(pem, p, (size_t)n);
		rv = dkim_key_txt_pkey(k, txt);
	}
	BIO_free(bio);
	EVP_PKEY_free(k);
	return rv;
}
