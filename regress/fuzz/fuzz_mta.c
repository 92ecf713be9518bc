/*
 * fuzz_mta: what the SMTP client reads from a peer, on arbitrary input.
 * - the reply-line parser: a line it accepts has a code in 200..599 and
 *   a valid separator;
 * - the EHLO keyword reader: it names only extensions we know, a SIZE
 *   limit only for SIZE and never negative, and the same whatever the
 *   case of the letters (keywords and AUTH mechanisms are
 *   case-insensitive, RFC 5321 2.4, RFC 4954 4).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1), *up;
	long long lim, lim2;
	int code, more, ext;
	size_t i;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (mta_reply_line(line, size, &code, &more) == 0) {
		if (code < 200 || code > 599 || (more && line[3] != '-'))
			abort();
	}
	ext = mta_ehlo_keyword(line, &lim);
	if ((ext & ~MTA_EXT_ALL) != 0 || lim < 0 ||
	    (lim > 0 && ext != MTA_EXT_SIZE))
		abort();
	if ((up = strdup(line)) != NULL) {
		for (i = 0; up[i]; i++)
			if (up[i] >= 'a' && up[i] <= 'z')
				up[i] = (char)(up[i] - 32);
		if (mta_ehlo_keyword(up, &lim2) != ext || lim2 != lim)
			abort();
		free(up);
	}
	free(line);
	return 0;
}
