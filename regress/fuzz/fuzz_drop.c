/*
 * fuzz_drop: the maildrop file decoder on arbitrary bytes (any local user
 * can make such a file).  A decoded file must re-encode to bytes that
 * decode to the same file, and what it holds must pass the checks the
 * pickup relies on.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/drop.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct drop d, d2;
	struct buf b, b2;
	const char *why;
	size_t i;

	if (drop_decode(data, size, &d, &why) == -1)
		return 0;
	if (d.nrcpts == 0 || !drop_addr_ok(d.sender, strlen(d.sender)) ||
	    (d.msglen > 0 && d.msg[d.msglen - 1] != '\n'))
		abort();
	for (i = 0; i < d.nrcpts; i++)
		if (d.rcpts[i][0] == '\0' ||
		    !drop_addr_ok(d.rcpts[i], strlen(d.rcpts[i])))
			abort();
	buf_init(&b);
	drop_encode(&d, &b);
	if (drop_decode(b.data, b.len, &d2, &why) == -1)
		abort();
	buf_init(&b2);
	drop_encode(&d2, &b2);
	if (b.len != b2.len || memcmp(b.data, b2.data, b.len) != 0)
		abort();
	drop_free(&d);
	drop_free(&d2);
	buf_free(&b);
	buf_free(&b2);
	return 0;
}
