/*
 * tls: the server side of TLS on our listeners (STARTTLS and implicit TLS),
 * run by the smtp process.  The certificate chain and its private key come
 * from the root parent as PEM text in memory (IMSG_P_TLS), never from a
 * file the smtp process opens.  The parent uses tls_ctx_new() too, to check
 * what the configuration names before it starts or reloads anything.
 */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* What tls_ctx_new() found wrong: the chain, or the key. */
#define TLS_BAD_CHAIN	1
#define TLS_BAD_KEY	2

/*
 * A server context for the chain (server certificate first) and key,
 * both PEM: TLS 1.2 and newer, our cipher list, the session cache.
 * NULL with *bad and a reason in err when they do not parse or do not
 * belong together.
 */
SSL_CTX	*tls_ctx_new(const void *chain, size_t chainlen, const void *key,
	    size_t keylen, int *bad, char *err, size_t errlen);
/* The leaf certificate's notAfter has passed: 1, else 0. */
int	 tls_ctx_expired(SSL_CTX *);

/*
 * The smtp process: build the server context from the parent's message
 * (T_CERT, T_KEY records).  The caller wipes the message afterwards.
 * 0, or -1 with a reason in err.
 */
int	 tls_server_init(const void *msg, size_t len, char *err,
	    size_t errlen);
/* Whether TLS can be offered: the context is there. */
int	 tls_server_ready(void);
/* A new server-side TLS session, or NULL (no context, no memory). */
SSL	*tls_server_new(void);
/* "TLSv1.3", "TLS_AES_256_GCM_SHA384" and its bits, of an established SSL. */
void	 tls_describe(SSL *, const char **proto, const char **cipher,
	    int *bits);
/* Why a handshake failed, from OpenSSL's error code (0: unknown). */
const char *tls_error_string(unsigned long);

#endif
