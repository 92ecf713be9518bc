/*
 * tls: the server side of TLS on our listeners, in the smtp process.  One
 * context serves every listener, STARTTLS and implicit TLS alike; it is
 * built before the seccomp filter from the PEM text the root parent read
 * (the key file is root's: certbot makes privkey.pem mode 0600), and the
 * text is wiped by the caller once loaded.  The root parent calls
 * tls_ctx_new() as well, to refuse a configuration whose certificate or
 * key does not load, with file and line, before anything starts.
 *
 * Settings: TLS 1.2 and newer; for TLS 1.2 Mozilla's "intermediate"
 * cipher list (ECDHE or DHE key exchange, AEAD ciphers only), for TLS 1.3
 * OpenSSL's defaults; the client's order of preference is honoured (no
 * server preference: every suite on the list is strong).  No
 * renegotiation.  Resumption by a server-side session cache instead of
 * stateless tickets (see docs/ARCHITECTURE.md, "TLS on our listeners").
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "lib/ipc.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "smtpd/tls.h"

/* Mozilla "intermediate" (v5.7) for TLS 1.2; TLS 1.3 keeps its defaults. */
#define TLS_CIPHERS_12	"ECDHE-ECDSA-AES128-GCM-SHA256:" \
			"ECDHE-RSA-AES128-GCM-SHA256:" \
			"ECDHE-ECDSA-AES256-GCM-SHA384:" \
			"ECDHE-RSA-AES256-GCM-SHA384:" \
			"ECDHE-ECDSA-CHACHA20-POLY1305:" \
			"ECDHE-RSA-CHACHA20-POLY1305:" \
			"DHE-RSA-AES128-GCM-SHA256:" \
			"DHE-RSA-AES256-GCM-SHA384:" \
			"DHE-RSA-CHACHA20-POLY1305"
#define TLS_CACHE_SIZE	1024	/* sessions kept for resumption */
#define TLS_CACHE_SECS	3600	/* and for how long (also TLS 1.3 tickets) */
#define TLS_SID_CTX	"ternd-smtp"

static SSL_CTX	*tls_server;

/* An encrypted key is refused, not prompted for on a terminal. */
static int
tls_nopass(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static void
tls_reason(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	snprintf(err, errlen, "%s%s%s", what, r ? ": " : "", r ? r : "");
	ERR_clear_error();
}

/* The server certificate, then the rest of the chain; 0 or -1. */
static int
tls_load_chain(SSL_CTX *ctx, const void *pem, size_t len, char *err,
    size_t errlen)
{
	BIO *b = len <= INT32_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	X509 *x;
	int r = -1;

	if (b == NULL) {
		str_copy(err, "out of memory", errlen);
		BIO_free(b);
		return -1;
	}
	if ((x = PEM_read_bio_X509_AUX(b, NULL, tls_nopass, NULL)) == NULL) {
		tls_reason(err, errlen, "no certificate found (PEM "
		    "\"BEGIN CERTIFICATE\")");
		goto done;
	}
	if (SSL_CTX_use_certificate(ctx, x) != 1) {
		X509_free(x);
		tls_reason(err, errlen, "certificate refused");
		goto done;
	}
	X509_free(x);
	while ((x = PEM_read_bio_X509(b, NULL, tls_nopass, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
			X509_free(x);
			tls_reason(err, errlen, "chain certificate refused");
			goto done;
		}
	}
	/* The end of the text ends the loop; anything else is damage. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		tls_reason(err, errlen, "damaged certificate in the chain");
		goto done;
	}
	ERR_clear_error();
	r = 0;
done:
	BIO_free(b);
	return r;
}

static int
tls_load_key(SSL_CTX *ctx, const void *pem, size_t len, char *err,
    size_t errlen)
{
	BIO *b = len <= INT32_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	EVP_PKEY *pk;
	int r = -1;

	if (b == NULL) {
		str_copy(err, "out of memory", errlen);
		BIO_free(b);
		return -1;
	}
	if ((pk = PEM_read_bio_PrivateKey(b, NULL, tls_nopass, NULL)) == NULL) {
		/* OpenSSL's reason here ("unsupported") says nothing useful. */
		str_copy(err, "no usable private key found (PEM \"BEGIN "
		    "PRIVATE KEY\"; an encrypted key needs its passphrase "
		    "removed)", errlen);
		ERR_clear_error();
	}
	else if (X509_check_private_key(SSL_CTX_get0_certificate(ctx),
	    pk) != 1) {
		str_copy(err, "the private key does not belong to the "
		    "certificate", errlen);
		ERR_clear_error();
	} else if (SSL_CTX_use_PrivateKey(ctx, pk) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		tls_reason(err, errlen, "private key refused");
	else
		r = 0;
	EVP_PKEY_free(pk);
	BIO_free(b);
	return r;
}

static void
tls_ctx_settings(SSL_CTX *ctx)
{
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12);
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
	/* An idle session's read and write buffers go back to the heap. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/*
	 * Resumption from a cache in this process: TLS 1.2 by session id,
	 * TLS 1.3 by one small stateful ticket (SSL_OP_NO_TICKET), sent
	 * after the client's Finished.  No stateless tickets.
	 */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CTX,
	    sizeof(TLS_SID_CTX) - 1);
	SSL_CTX_sess_set_cache_size(ctx, TLS_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, TLS_CACHE_SECS);
	SSL_CTX_set_num_tickets(ctx, 1);
}

SSL_CTX *
tls_ctx_new(const void *chain, size_t chainlen, const void *key,
    size_t keylen, int *bad, char *err, size_t errlen)
{
	SSL_CTX *ctx;

	ERR_clear_error();
	*bad = TLS_BAD_CHAIN;
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_reason(err, errlen, "cannot make a TLS context");
		return NULL;
	}
	tls_ctx_settings(ctx);
	if (tls_load_chain(ctx, chain, chainlen, err, errlen) == -1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	*bad = TLS_BAD_KEY;
	if (tls_load_key(ctx, key, keylen, err, errlen) == -1) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	*bad = 0;
	return ctx;
}

int
tls_ctx_expired(SSL_CTX *ctx)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);

	return x != NULL && X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
}

int
tls_server_init(const void *msg, size_t len, char *err, size_t errlen)
{
	const void *chain = NULL, *key = NULL;
	size_t chainlen = 0, keylen = 0;
	struct rec_reader rd;
	struct rec r;
	int bad;

	rec_reader_init(&rd, msg, len);
	while (rec_next(&rd, &r) == 1) {
		if (r.tag == T_CERT && chain == NULL) {
			chain = r.data;
			chainlen = r.len;
		} else if (r.tag == T_KEY && key == NULL) {
			key = r.data;
			keylen = r.len;
		}
	}
	if (chain == NULL || key == NULL) {
		str_copy(err, "no certificate or key from the parent", errlen);
		return -1;
	}
	tls_server = tls_ctx_new(chain, chainlen, key, keylen, &bad, err,
	    errlen);
	return tls_server ? 0 : -1;
}

int
tls_server_ready(void)
{
	return tls_server != NULL;
}

SSL *
tls_server_new(void)
{
	SSL *ssl;

	if (tls_server == NULL || (ssl = SSL_new(tls_server)) == NULL) {
		ERR_clear_error();
		return NULL;
	}
	return ssl;
}

void
tls_describe(SSL *ssl, const char **proto, const char **cipher, int *bits)
{
	*proto = SSL_get_version(ssl);
	*cipher = SSL_get_cipher_name(ssl);
	*bits = SSL_get_cipher_bits(ssl, NULL);
}

const char *
tls_error_string(unsigned long e)
{
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : "handshake failed";
}
