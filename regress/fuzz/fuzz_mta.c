/*
 * fuzz_mta: the SMTP client's reply-line parser on arbitrary lines.  A
 * line it accepts must have a code in 200..599 and a valid separator.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *line = malloc(size + 1);
	int code, more;

	if (line == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	if (mta_reply_line(line, size, &code, &more) == 0) {
		if (code < 200 || code > 599 || (more && line[3] != '-'))
			abort();
	}
	free(line);
	return 0;
}
