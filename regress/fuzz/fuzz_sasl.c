/*
 * fuzz_sasl: the AUTH response decoder on arbitrary client lines.  What
 * sasl_decode accepts must re-encode to the very same text (canonical
 * base64, nothing else), fit the buffer it was given, and end in a NUL;
 * a PLAIN split must stay inside the decoded bytes and give an authzid
 * that is empty or the user; a name or password taken (PLAIN's parts,
 * LOGIN's answers decoded whole) is 1..max bytes without a control byte.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "smtpd/sasl.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* A name or password taken: 1..max bytes, no control character. */
static void
check_text(const char *s, size_t len, size_t max)
{
	if (!sasl_text_ok(s, len, max))
		return;
	if (len == 0 || len > max)
		abort();
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			abort();
}

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
	check_text(u, ul, 255);
	check_text(p, pl, 1024);
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
	check_text(out, n, 255);	/* LOGIN's user name, decoded whole */
	return 0;
}
