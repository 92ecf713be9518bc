/*
 * test_drop: maildrop files round trip; damaged, incomplete or out of
 * bounds ones are refused whole, even with a valid checksum.
 */
#include <stdio.h>
#include <string.h>

#include "lib/drop.h"
#include "lib/rec.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_drop(void);

static char *sample_rcpts[] = { "demo@example.test", "a@b.example" };

static void
sample(struct drop *d)
{
	memset(d, 0, sizeof(*d));
	d->uid = 1000;
	d->user = "anna";
	d->program = "php-fpm8.2";
	d->time = 1700000000;
	d->sender = "anna@example.test";
	d->rcpts = sample_rcpts;
	d->nrcpts = 2;
	d->msg = "Subject: x\n\nbody\n";
	d->msglen = strlen(d->msg);
}

static const char magic[8] = { 'T', 'E', 'R', 'N', 'D', 'R', 'P', 1 };

/* Close b with a valid END record, as the encoder does. */
static void
seal(struct buf *b)
{
	uint32_t crc = crc32_update(0, b->data, b->len);
	unsigned char c[4] = { (unsigned char)(crc >> 24),
	    (unsigned char)(crc >> 16), (unsigned char)(crc >> 8),
	    (unsigned char)crc };

	rec_put(b, 0xff, c, sizeof(c));
}

/* A file with the sample's fields, one of them replaced or left out. */
static int
decodes_with(int tag, const void *val, size_t len, int omit)
{
	static const int tags[] = { 1, 2, 3, 4, 5, 6, 7 };
	struct drop d;
	struct buf b;
	const char *why;
	size_t i;
	int r;

	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	for (i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		if (tags[i] == tag) {
			if (!omit)
				rec_put(&b, (uint8_t)tag, val, len);
			continue;
		}
		switch (tags[i]) {
		case 1: rec_put_u64(&b, 1, 1000); break;
		case 2: rec_put_str(&b, 2, "anna"); break;
		case 3: rec_put_str(&b, 3, "cron"); break;
		case 4: rec_put_u64(&b, 4, 1700000000); break;
		case 5: rec_put_str(&b, 5, "anna@example.test"); break;
		case 6: rec_put_str(&b, 6, "demo@example.test"); break;
		case 7: rec_put_str(&b, 7, "x\n"); break;
		}
	}
	if (tag > 7)
		rec_put(&b, (uint8_t)tag, val, len);
	seal(&b);
	r = drop_decode(b.data, b.len, &d, &why);
	if (r == 0)
		drop_free(&d);
	buf_free(&b);
	return r == 0;
}

static void
test_drop_fields(void)
{
	unsigned char u64[8] = { 0 };
	char big[DROP_ADDR_MAX + 2];

	CHECK(decodes_with(0, NULL, 0, 0));
	/* each required field, missing */
	CHECK(!decodes_with(1, NULL, 0, 1));
	CHECK(!decodes_with(2, NULL, 0, 1));
	CHECK(decodes_with(3, NULL, 0, 1));	/* the program may be absent */
	CHECK(!decodes_with(4, NULL, 0, 1));
	CHECK(!decodes_with(5, NULL, 0, 1));
	CHECK(!decodes_with(6, NULL, 0, 1));
	CHECK(!decodes_with(7, NULL, 0, 1));
	/* numbers are 8 bytes */
	CHECK(decodes_with(1, u64, 8, 0));
	CHECK(!decodes_with(1, u64, 4, 0));
	/* account names */
	CHECK(!decodes_with(2, "", 0, 0));
	CHECK(!decodes_with(2, "an na", 5, 0));
	CHECK(!decodes_with(2, "an\nna", 5, 0));
	CHECK(!decodes_with(2, "an\0na", 5, 0));
	/* program names */
	CHECK(decodes_with(3, "php-fpm8.2", 10, 0));
	CHECK(decodes_with(3, "", 0, 0));
	CHECK(!decodes_with(3, "sh -c", 5, 0));
	CHECK(!decodes_with(3, "a/b", 3, 0));
	CHECK(!decodes_with(3, "0123456789012345678901234567890123", 33, 0));
	/* addresses: what can go inside <> on a line, nothing more */
	CHECK(decodes_with(5, "", 0, 0));	/* the null sender */
	CHECK(!decodes_with(6, "", 0, 0));	/* but no empty recipient */
	CHECK(!decodes_with(5, "a@b\r\nRCPT TO:<c@d>", 18, 0));
	CHECK(!decodes_with(6, "a@b>", 4, 0));
	CHECK(!decodes_with(6, "<a@b", 4, 0));
	CHECK(!decodes_with(6, "a\x7f@b", 4, 0));
	memset(big, 'a', sizeof(big));
	CHECK(decodes_with(6, big, DROP_ADDR_MAX, 0));
	CHECK(!decodes_with(6, big, DROP_ADDR_MAX + 1, 0));
	/* the message: every line LF-ended, or nothing */
	CHECK(decodes_with(7, "", 0, 0));
	CHECK(!decodes_with(7, "no newline", 10, 0));
	CHECK(decodes_with(7, "a\0b\n", 4, 0));	/* NUL: the daemon refuses */
	/* an unknown record */
	CHECK(!decodes_with(9, "x", 1, 0));
}

static void
test_drop_twice(void)
{
	struct drop d;
	struct buf b;
	const char *why;

	/* a field given twice is refused; a second recipient is not */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	rec_put_u64(&b, 1, 1000);
	rec_put_str(&b, 2, "anna");
	rec_put_u64(&b, 4, 1);
	rec_put_str(&b, 5, "");
	rec_put_str(&b, 6, "x@y");
	rec_put_str(&b, 6, "z@y");
	rec_put_str(&b, 7, "");
	seal(&b);
	CHECK(drop_decode(b.data, b.len, &d, &why) == 0);
	CHECK(d.nrcpts == 2 && strcmp(d.rcpts[1], "z@y") == 0);
	CHECK(strcmp(d.program, "") == 0 && strcmp(d.sender, "") == 0);
	drop_free(&d);
	buf_reset(&b);
	buf_append(&b, magic, sizeof(magic));
	rec_put_u64(&b, 1, 1000);
	rec_put_u64(&b, 1, 0);
	rec_put_str(&b, 2, "anna");
	rec_put_u64(&b, 4, 1);
	rec_put_str(&b, 5, "");
	rec_put_str(&b, 6, "x@y");
	rec_put_str(&b, 7, "");
	seal(&b);
	CHECK(drop_decode(b.data, b.len, &d, &why) == -1);
	buf_free(&b);
}

static void
test_drop_names(void)
{
	CHECK(drop_name_ok("0123456789ABCDEF"));
	CHECK(!drop_name_ok("0123456789abcdef"));
	CHECK(!drop_name_ok("0123456789ABCDE"));
	CHECK(!drop_name_ok("0123456789ABCDEF0"));
	CHECK(!drop_name_ok(".tmp.0123456789A"));
	CHECK(!drop_name_ok(""));
	CHECK(drop_program_ok("cron", 4) && drop_program_ok("", 0));
	CHECK(!drop_program_ok("a b", 3) && !drop_program_ok("a\x80", 2));
	CHECK(drop_addr_ok("a@b", 3) && !drop_addr_ok("a\tb", 3));
}

void
test_drop(void)
{
	struct drop e, d;
	struct buf b, b2;
	const char *why = NULL;
	size_t cut, i;
	int bad = 0;

	sample(&e);
	buf_init(&b);
	drop_encode(&e, &b);
	CHECK(drop_decode(b.data, b.len, &d, &why) == 0);
	CHECK(d.uid == 1000 && d.time == 1700000000);
	CHECK(strcmp(d.user, "anna") == 0);
	CHECK(strcmp(d.program, "php-fpm8.2") == 0);
	CHECK(strcmp(d.sender, "anna@example.test") == 0);
	CHECK(d.nrcpts == 2 && strcmp(d.rcpts[0], "demo@example.test") == 0 &&
	    strcmp(d.rcpts[1], "a@b.example") == 0);
	CHECK(d.msglen == e.msglen && memcmp(d.msg, e.msg, e.msglen) == 0);
	buf_init(&b2);
	drop_encode(&d, &b2);
	CHECK(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
	buf_free(&b2);
	drop_free(&d);

	/* Every truncation is refused, never half-read. */
	for (cut = 0; cut < b.len; cut++)
		if (drop_decode(b.data, cut, &d, &why) == 0) {
			bad++;
			drop_free(&d);
		}
	CHECK(bad == 0);
	/* So is every flipped bit (the checksum or a length catches it). */
	for (i = 0; i < b.len * 8; i++) {
		b.data[i / 8] ^= (char)(1 << (i % 8));
		if (drop_decode(b.data, b.len, &d, &why) == 0) {
			bad++;
			drop_free(&d);
		}
		b.data[i / 8] ^= (char)(1 << (i % 8));
	}
	CHECK(bad == 0);
	/* Nothing may follow the END record. */
	buf_putc(&b, 0);
	CHECK(drop_decode(b.data, b.len, &d, &why) == -1);
	CHECK(strcmp(why, "data after END record") == 0);
	buf_free(&b);

	test_drop_fields();
	test_drop_twice();
	test_drop_names();
}
