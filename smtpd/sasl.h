/*
 * sasl: decoding of the SASL responses a submission client sends with
 * AUTH (RFC 4954): strict base64, PLAIN's "authzid NUL authcid NUL
 * password", and the check on a name or password both mechanisms apply.
 * Pure functions, run by the smtp process on untrusted input; the
 * session's steps (334 prompts, LOGIN's two answers) stay in smtp.c.
 */
#ifndef TERN_SASL_H
#define TERN_SASL_H

#include <stddef.h>

/*
 * Decode base64 into out (cap bytes, NUL-terminated) and set *outlen: 0,
 * or -1 if in is not canonical base64 (length a multiple of 4, padding
 * only at the end) or does not fit.  "=" alone (an empty response) is
 * not base64: the caller decides what it means.
 */
int	sasl_decode(const char *in, char *out, size_t cap, size_t *outlen);

/* A name or password as SASL carries it: 1 to 'max' bytes, no control
   characters (space is fine). */
int	sasl_text_ok(const char *s, size_t len, size_t max);

/*
 * Split a decoded PLAIN response of len bytes: authzid NUL authcid NUL
 * password, the authzid empty or equal to the authcid.  0 with *user,
 * *ulen, *pass, *plen pointing into buf; -1 if it is not that shape.
 * The parts are not checked with sasl_text_ok (the caller does that).
 */
int	sasl_plain_split(const char *buf, size_t len, const char **user,
	    size_t *ulen, const char **pass, size_t *plen);

#endif
