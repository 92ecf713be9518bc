/*
 * rec: length-prefixed typed records, the one encoding used for queue
 * envelopes on disk and for messages between processes.  A record is a
 * one-byte tag, a 32-bit big-endian length and that many bytes; the
 * reader checks every length against what remains.
 */
#ifndef TERN_REC_H
#define TERN_REC_H

#include <stddef.h>
#include <stdint.h>

struct buf;

void	rec_put(struct buf *, uint8_t tag, const void *, size_t);
void	rec_put_str(struct buf *, uint8_t tag, const char *);
void	rec_put_u64(struct buf *, uint8_t tag, uint64_t);

struct rec_reader {
	const unsigned char	*p;
	size_t			 len;
	size_t			 off;
};

struct rec {
	uint8_t			 tag;
	const unsigned char	*data;
	size_t			 len;
};

void	rec_reader_init(struct rec_reader *, const void *, size_t);
/* 1 = a record, 0 = clean end, -1 = truncated or malformed. */
int	rec_next(struct rec_reader *, struct rec *);
/* A string without NUL bytes, copied; NULL if it has one or is too long. */
char	*rec_str(const struct rec *, size_t max);
int	rec_u64(const struct rec *, uint64_t *);

uint32_t crc32_update(uint32_t, const void *, size_t);

#endif
