/*
 * fuzz_sasl: the AUTH response decoder on arbitrary client lines.  What
 * sasl_decode accepts must re-encode to the very same text (canonical
 * base64, nothing else), fit the buffer it was given, and end in a NUL;
 * a PLAIN split must stay inside the decoded bytes and give an authzid
 * that is empty or the user.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "smtpd/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_plain(const char *buf, size_t len)
{
	const char *u, *p;
	size_t ul, pl, zl;

	if (sasl_plain_split(buf, len, &u, &ul, &p, &pl) == -1)
		return;
	if (u <= buf || u[-1] != '\0' || p <= u || p[-1] != '\0' ||
	    u + ul + 1 != p || p + pl != buf + len)
		abort();
	zl = (size_t)(u - 1 - buf);
	if (zl != 0 && (zl != ul || memcmp(buf, u, ul) != 0))
		abort();
	(void)sasl_text_ok(u, ul, 255);
	(void)sasl_text_ok(p, pl, 1024);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	char in[1400], out[1100], back[1500];
	size_t n, cap;
	int r;

	if (len < 1 || len >= sizeof(in))
		return 0;
	/* The first byte picks the buffer size, as PLAIN and LOGIN differ. */
	cap = 1 + data[0] * 4;
	if (cap > sizeof(out))
		cap = sizeof(out);
	memcpy(in, data + 1, len - 1);
	in[len - 1] = '\0';
	if (sasl_decode(in, out, cap, &n) == -1)
		return 0;
	if (n + 1 > cap || out[n] != '\0')
		abort();
	r = EVP_EncodeBlock((unsigned char *)back, (const unsigned char *)out,
	    (int)n);
	if (r < 0 || (size_t)r != strlen(in) || memcmp(back, in, (size_t)r))
		abort();
	check_plain(out, n);
	return 0;
}
