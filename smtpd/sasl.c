/*
 * sasl: SASL response decoding for AUTH PLAIN and LOGIN (see sasl.h), in
 * the smtp process.  Kept apart from the session code so that the unit
 * tests and a fuzz target reach it directly.
 */
#include <string.h>

#include <openssl/evp.h>

#include "smtpd/sasl.h"

static const char sasl_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
sasl_decode(const char *in, char *out, size_t cap, size_t *outlen)
{
	size_t n = strlen(in), pad = 0, body;
	int r;

	if (n == 0 || n % 4 != 0 || n / 4 * 3 + 1 > cap)
		return -1;
	/* Padding only at the end: "=" or "==". */
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	body = n - pad;
	if (strspn(in, sasl_b64) != body)
		return -1;
	/* The bits past the last byte are zero: one text per response. */
	if (pad && ((size_t)(strchr(sasl_b64, in[body - 1]) - sasl_b64) &
	    (pad == 2 ? 0xf : 0x3)) != 0)
		return -1;
	if ((r = EVP_DecodeBlock((unsigned char *)out,
	    (const unsigned char *)in, (int)n)) < 0 || (size_t)r < pad)
		return -1;
	*outlen = (size_t)r - pad;
	out[*outlen] = '\0';
	return 0;
}

int
sasl_text_ok(const char *s, size_t len, size_t max)
{
	size_t i;

	if (len == 0 || len > max)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return 1;
}

int
sasl_plain_split(const char *buf, size_t len, const char **user,
    size_t *ulen, const char **pass, size_t *plen)
{
	const char *end = buf + len, *u, *p;
	size_t zlen;

	if ((u = memchr(buf, '\0', len)) == NULL)
		return -1;
	if ((p = memchr(u + 1, '\0', (size_t)(end - u - 1))) == NULL)
		return -1;
	zlen = (size_t)(u - buf);
	*user = u + 1;
	*ulen = (size_t)(p - u - 1);
	*pass = p + 1;
	*plen = (size_t)(end - p - 1);
	/* An authzid, if given, must be the authcid: no acting as another. */
	if (zlen > 0 && (zlen != *ulen || memcmp(buf, *user, zlen) != 0))
		return -1;
	return 0;
}
