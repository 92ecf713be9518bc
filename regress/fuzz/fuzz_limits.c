/*
 * fuzz_limits: the reader of spool/accounts (the sending counts and
 * suspensions, queue/limits.c) on arbitrary bytes.  A file on disk is
 * the queue's own, but a damaged or planted one must be refused whole,
 * never crash the queue.  The target closes the fuzzer's bytes with the
 * magic and a valid checksum when the first byte is odd, so that the
 * records past the parser are reached too; what decodes must encode to
 * bytes that decode again to the same encoding.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/rec.h"
#include "lib/util.h"
#include "queue/limits.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char magic[8] = { 'T', 'E', 'R', 'N', 'A', 'C', 'C', 1 };

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct buf in, b, b2;
	const char *why;
	unsigned char c[4];
	uint32_t crc;
	time_t t0;

	if (len < 1)
		return 0;
	buf_init(&in);
	if (data[0] & 1) {
		buf_append(&in, magic, sizeof(magic));
		buf_append(&in, data + 1, len - 1);
		crc = crc32_update(0, in.data, in.len);
		c[0] = (unsigned char)(crc >> 24);
		c[1] = (unsigned char)(crc >> 16);
		c[2] = (unsigned char)(crc >> 8);
		c[3] = (unsigned char)crc;
		rec_put(&in, 0xff, c, sizeof(c));
	} else
		buf_append(&in, data + 1, len - 1);
	if (limits_decode(in.data ? in.data : "", in.len, &why) == 0) {
		buf_init(&b);
		buf_init(&b2);
		t0 = time(NULL);
		limits_encode(&b);
		if (limits_decode(b.data, b.len, &why) == -1)
			abort();
		limits_encode(&b2);
		/* Counts slide out of the day as the 5-minute slot turns:
		   only two encodings within one slot must be the same. */
		if ((b.len != b2.len || memcmp(b.data, b2.data, b.len) != 0) &&
		    t0 / 300 == time(NULL) / 300)
			abort();
		buf_free(&b);
		buf_free(&b2);
	}
	buf_free(&in);
	return 0;
}
