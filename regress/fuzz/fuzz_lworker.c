/*
 * fuzz_lworker: the parent's reading of a local worker's answer, which
 * comes from a process running as the recipient account (untrusted).
 * The text must come out printable and terminated; the code within 0-255.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/lworker.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[64];
	uint64_t token = 0;
	int code = -1;
	size_t i, n;

	memset(text, 'x', sizeof(text));
	if (lworker_answer_parse(data, size, &token, &code, text,
	    sizeof(text)) == 0 && (code < 0 || code > 255))
		abort();
	n = strnlen(text, sizeof(text));
	if (n == sizeof(text))
		abort();
	for (i = 0; i < n; i++)
		if ((unsigned char)text[i] < ' ' || text[i] == 0x7f)
			abort();
	return 0;
}
