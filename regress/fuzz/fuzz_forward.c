/*
 * fuzz_forward: the parent's reading of the smtp process's question
 * "has this account a ~/.forward?" (IMSG_P_FORWARD), which comes from the
 * process that parses network input (untrusted).  An accepted name must
 * come out terminated, non-empty, printable and without '/'.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mda.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char user[65];
	uint64_t id;
	size_t i, n;

	memset(user, 'x', sizeof(user));
	if (forward_query_parse(data, size, &id, user, sizeof(user)) == -1) {
		if (user[0] != '\0')
			abort();
		return 0;
	}
	n = strnlen(user, sizeof(user));
	if (n == 0 || n == sizeof(user))
		abort();
	for (i = 0; i < n; i++)
		if ((unsigned char)user[i] <= ' ' || user[i] == 0x7f ||
		    user[i] == '/' || (unsigned char)user[i] >= 0x80)
			abort();
	return 0;
}
