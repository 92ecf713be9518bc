/*
 * rec: typed record encoding and its checked decoder.  Used by the queue
 * process for envelopes and by every process for IPC payloads, so the
 * decoder assumes its input is hostile.
 */
#include <string.h>

#include "lib/rec.h"
#include "lib/util.h"

void
rec_put(struct buf *b, uint8_t tag, const void *data, size_t len)
{
	unsigned char hdr[5];

	if (len > UINT32_MAX)
		len = UINT32_MAX;	/* callers never come near; cannot wrap */
	hdr[0] = tag;
	hdr[1] = (unsigned char)(len >> 24);
	hdr[2] = (unsigned char)(len >> 16);
	hdr[3] = (unsigned char)(len >> 8);
	hdr[4] = (unsigned char)len;
	buf_append(b, hdr, sizeof(hdr));
	buf_append(b, data, len);
}

void
rec_put_str(struct buf *b, uint8_t tag, const char *s)
{
	rec_put(b, tag, s, strlen(s));
}

void
rec_put_u64(struct buf *b, uint8_t tag, uint64_t v)
{
	unsigned char d[8];
	int i;

	for (i = 7; i >= 0; i--) {
		d[i] = (unsigned char)v;
		v >>= 8;
	}
	rec_put(b, tag, d, sizeof(d));
}

void
rec_reader_init(struct rec_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->off = 0;
}

int
rec_next(struct rec_reader *r, struct rec *out)
{
	size_t left = r->len - r->off, n;
	const unsigned char *h;

	if (left == 0)
		return 0;
	if (left < 5)
		return -1;
	h = r->p + r->off;
	n = ((size_t)h[1] << 24) | ((size_t)h[2] << 16) | ((size_t)h[3] << 8) |
	    (size_t)h[4];
	if (n > left - 5)
		return -1;
	out->tag = h[0];
	out->data = h + 5;
	out->len = n;
	r->off += 5 + n;
	return 1;
}

char *
rec_str(const struct rec *r, size_t max)
{
	if (r->len > max || memchr(r->data, '\0', r->len) != NULL)
		return NULL;
	return xstrndup((const char *)r->data, r->len);
}

int
rec_u64(const struct rec *r, uint64_t *v)
{
	size_t i;

	if (r->len != 8)
		return -1;
	*v = 0;
	for (i = 0; i < 8; i++)
		*v = (*v << 8) | r->data[i];
	return 0;
}

uint32_t
crc32_update(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;
	int k;

	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
	}
	return ~crc;
}
