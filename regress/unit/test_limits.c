/*
 * test_limits: the reader of spool/accounts (queue/limits.c): a file
 * written by limits_encode reads back the same; a file cut short, with a
 * wrong checksum, a repeated account, a record before any account, a
 * slot table of the wrong size or an unknown record is refused whole.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/rec.h"
#include "lib/util.h"
#include "queue/limits.h"
#include "regress/unit/unit.h"

void test_limits(void);

static const char magic[8] = { 'T', 'E', 'R', 'N', 'A', 'C', 'C', 1 };

/* Close a file as limits_encode does: END with the CRC of the rest. */
static void
close_file(struct buf *b)
{
	uint32_t crc = crc32_update(0, b->data, b->len);
	unsigned char c[4] = { (unsigned char)(crc >> 24),
	    (unsigned char)(crc >> 16), (unsigned char)(crc >> 8),
	    (unsigned char)crc };

	rec_put(b, 0xff, c, sizeof(c));
}

static void
put_slots(struct buf *b, uint8_t tag, uint64_t slot, uint32_t n, size_t cnt)
{
	unsigned char raw[288 * 4];

	memset(raw, 0, sizeof(raw));
	raw[(slot % 288) * 4 + 3] = (unsigned char)n;
	rec_put(b, tag, raw, cnt);
}

static void
one_account(struct buf *b, const char *name, size_t slotbytes)
{
	uint64_t slot = (uint64_t)time(NULL) / 300;

	rec_put_str(b, 1, name);
	rec_put_u64(b, 2, (uint64_t)time(NULL) - 3600);
	rec_put_u64(b, 3, slot);
	put_slots(b, 4, slot, 3, slotbytes);
	put_slots(b, 5, slot, 7, slotbytes);
	put_slots(b, 6, slot, 0, slotbytes);
}

static int
decode(struct buf *b)
{
	const char *why = NULL;

	return limits_decode(b->data, b->len, &why);
}

void
test_limits(void)
{
	struct buf b, out, out2, list;

	/* A good file, and its round trip. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	one_account(&b, "anna@example.org", 288 * 4);
	one_account(&b, "local:www-data", 288 * 4);
	rec_put_u64(&b, 7, (uint64_t)time(NULL));
	rec_put_str(&b, 8, "a burst");
	close_file(&b);
	CHECK(decode(&b) == 0);
	buf_init(&out);
	limits_encode(&out);
	CHECK(limits_decode(out.data, out.len, &(const char *){ NULL }) == 0);
	buf_init(&out2);
	limits_encode(&out2);
	CHECK(out.len == out2.len && memcmp(out.data, out2.data, out.len) == 0);
	buf_init(&list);
	limits_list(&list);
	buf_putc(&list, '\0');
	CHECK(strstr(list.data, "anna@example.org") != NULL);
	CHECK(strstr(list.data, "suspended: a burst") != NULL);
	buf_free(&list);

	/* Cut short anywhere: refused, and the table left empty. */
	CHECK(limits_decode(b.data, b.len - 1, &(const char *){ NULL }) == -1);
	CHECK(limits_decode(b.data, b.len / 2, &(const char *){ NULL }) == -1);
	CHECK(limits_decode(b.data, 8, &(const char *){ NULL }) == -1);
	CHECK(limits_decode(b.data, 3, &(const char *){ NULL }) == -1);
	buf_init(&list);
	limits_list(&list);
	buf_putc(&list, '\0');
	CHECK(strstr(list.data, "anna@example.org") == NULL);
	buf_free(&list);
	/* One bit flipped in a count: the checksum. */
	b.data[40] ^= 1;
	CHECK(decode(&b) == -1);
	buf_free(&b);

	/* A repeated account. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	one_account(&b, "anna@example.org", 288 * 4);
	one_account(&b, "anna@example.org", 288 * 4);
	close_file(&b);
	CHECK(decode(&b) == -1);
	buf_free(&b);
	/* A count before any account. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	rec_put_u64(&b, 2, 1);
	close_file(&b);
	CHECK(decode(&b) == -1);
	buf_free(&b);
	/* A slot table of the wrong size. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	one_account(&b, "anna@example.org", 287 * 4);
	close_file(&b);
	CHECK(decode(&b) == -1);
	buf_free(&b);
	/* An unknown record, a bad magic, a name too long. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	one_account(&b, "anna@example.org", 288 * 4);
	rec_put_u64(&b, 42, 1);
	close_file(&b);
	CHECK(decode(&b) == -1);
	b.data[7] = 2;
	CHECK(decode(&b) == -1);
	buf_free(&b);
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	{
		char name[400];

		memset(name, 'a', sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		one_account(&b, name, 288 * 4);
	}
	close_file(&b);
	CHECK(decode(&b) == -1);
	buf_free(&b);
	/* A slot from the future (a clock set back) is clamped to now. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	rec_put_str(&b, 1, "future@example.org");
	rec_put_u64(&b, 3, (uint64_t)time(NULL) / 300 + 1000);
	put_slots(&b, 4, (uint64_t)time(NULL) / 300 + 1000, 1, 288 * 4);
	close_file(&b);
	CHECK(decode(&b) == 0);
	buf_free(&b);
	buf_free(&out);
	buf_free(&out2);
	/* Empty the table for whatever runs next. */
	CHECK(limits_decode("", 0, &(const char *){ NULL }) == -1);

	/*
	 * A place held for a message never committed leaves nothing behind:
	 * a local user naming a new XPROGRAM per dropped session must not
	 * fill the table (then nobody new would be counted) or the memory.
	 */
	CHECK(limits_accounts() == 0);
	for (int i = 0; i < 1000; i++) {
		char key[64];

		snprintf(key, sizeof(key), "local:nobody/p%d", i);
		CHECK(limits_reserve(key, 2) == 0);
		limits_unreserve(key, 2);
	}
	CHECK(limits_accounts() == 0);
	CHECK(limits_reserve("local:nobody/a", 1) == 0);
	CHECK(limits_reserve("local:nobody/a", 1) == 0);
	limits_unreserve("local:nobody/a", 1);
	CHECK(limits_accounts() == 1);		/* one place still held */
	limits_unreserve("local:nobody/a", 1);
	CHECK(limits_accounts() == 0);
	/* An account with counts of the day stays. */
	buf_init(&b);
	buf_append(&b, magic, sizeof(magic));
	one_account(&b, "anna@example.org", 288 * 4);
	close_file(&b);
	CHECK(decode(&b) == 0);
	buf_free(&b);
	CHECK(limits_reserve("anna@example.org", 1) == 0);
	limits_unreserve("anna@example.org", 1);
	CHECK(limits_accounts() == 1);
	CHECK(limits_decode("", 0, &(const char *){ NULL }) == -1);
}
