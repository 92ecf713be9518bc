/*
 * fuzz_envelope: the queue envelope decoder on arbitrary bytes.  A decoded
 * envelope must re-encode to bytes that decode to the same envelope.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/envelope.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope e, e2;
	struct buf b, b2;
	const char *why;

	if (envelope_decode(data, size, &e, &why) == -1)
		return 0;
	buf_init(&b);
	envelope_encode(&e, &b);
	if (envelope_decode(b.data, b.len, &e2, &why) == -1)
		abort();
	buf_init(&b2);
	envelope_encode(&e2, &b2);
	if (b.len != b2.len || memcmp(b.data, b2.data, b.len) != 0)
		abort();
	envelope_free(&e);
	envelope_free(&e2);
	buf_free(&b);
	buf_free(&b2);
	return 0;
}
