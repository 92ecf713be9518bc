/* test_envelope: envelope records round trip; damaged files are refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/envelope.h"
#include "lib/rec.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_envelope(void);

static void
sample(struct envelope *e)
{
	memset(e, 0, sizeof(*e));
	memcpy(e->id, "0123456789ABCDEF", QID_LEN + 1);
	e->sender = xstrdup("a@example.org");
	e->helo = xstrdup("client.example");
	e->client = xstrdup("[192.0.2.1]");
	e->proto = xstrdup("ESMTP");
	e->size = 1234;
	e->arrival = 1700000000;
	envelope_add_rcpt(e, "b@example.test");
	envelope_add_rcpt(e, "c@example.test");
	e->rcpts[1].state = RS_HELD;
	e->rcpts[1].attempts = 3;
	envelope_set_error(&e->rcpts[1], "pipe\x01 not available");
	envelope_mark_done(&e->rcpts[1], "maildir:alice:/m");
	e->rcpts[1].fwd_from = xstrdup("b@example.test");
	e->flags = ENV_WARNED | ENV_HOLD | ENV_SUSPENDED;
	e->account = xstrdup("anna@example.org");
}

/* Quoted local parts (spaces, quotes, backslashes) and UTF-8 come back
   byte for byte: every string is a length-prefixed record. */
static void
test_envelope_quoted(void)
{
	static const char *const addrs[] = {
		"\"john doe\"@example.net",
		"\"a\\\"b \\\\ c\"@example.net",
		"\"x@y\"@example.net",
		"j\xc3\xb6rg@b\xc3\xbc" "cher.example",
	};
	struct envelope e, d;
	struct buf b;
	const char *why = NULL;
	size_t i;

	sample(&e);
	free(e.sender);
	e.sender = xstrdup(addrs[0]);
	for (i = 1; i < sizeof(addrs) / sizeof(addrs[0]); i++)
		envelope_add_rcpt(&e, addrs[i]);
	buf_init(&b);
	envelope_encode(&e, &b);
	CHECK(envelope_decode(b.data, b.len, &d, &why) == 0);
	CHECK(strcmp(d.sender, addrs[0]) == 0);
	CHECK(d.nrcpts == 2 + sizeof(addrs) / sizeof(addrs[0]) - 1);
	for (i = 1; i < sizeof(addrs) / sizeof(addrs[0]) && d.nrcpts > i + 1;
	    i++)
		CHECK(strcmp(d.rcpts[i + 1].addr, addrs[i]) == 0);
	envelope_free(&d);
	envelope_free(&e);
	buf_free(&b);
}

void
test_envelope(void)
{
	struct envelope e, d;
	struct buf b;
	const char *why = NULL;
	size_t cut;
	int bad = 0;

	test_envelope_quoted();
	sample(&e);
	buf_init(&b);
	envelope_encode(&e, &b);
	CHECK(envelope_decode(b.data, b.len, &d, &why) == 0);
	CHECK(strcmp(d.id, e.id) == 0);
	CHECK(strcmp(d.sender, "a@example.org") == 0);
	CHECK(d.account && strcmp(d.account, "anna@example.org") == 0);
	CHECK(d.flags == (ENV_WARNED | ENV_HOLD | ENV_SUSPENDED));
	CHECK(d.nrcpts == 2 && d.rcpts[1].state == RS_HELD);
	CHECK(d.rcpts[1].attempts == 3);
	CHECK(strcmp(d.rcpts[1].last_error, "pipe? not available") == 0);
	CHECK(envelope_rcpt_done(&d.rcpts[1], "maildir:alice:/m"));
	CHECK(!envelope_rcpt_done(&d.rcpts[0], "maildir:alice:/m"));
	CHECK(d.size == 1234 && d.arrival == 1700000000);
	CHECK(d.rcpts[1].fwd_from && strcmp(d.rcpts[1].fwd_from,
	    "b@example.test") == 0 && d.rcpts[0].fwd_from == NULL);
	CHECK(d.flags == (ENV_WARNED | ENV_HOLD | ENV_SUSPENDED));
	envelope_free(&d);

	/* Every truncation is refused, never half-read. */
	for (cut = 0; cut < b.len; cut++)
		if (envelope_decode(b.data, cut, &d, &why) == 0) {
			bad++;
			envelope_free(&d);
		}
	CHECK(bad == 0);
	/* A flipped byte anywhere fails the checksum or the structure. */
	bad = 0;
	for (cut = 8; cut < b.len; cut++) {
		b.data[cut] ^= 0x20;
		if (envelope_decode(b.data, b.len, &d, &why) == 0) {
			bad++;
			envelope_free(&d);
		}
		b.data[cut] ^= 0x20;
	}
	CHECK(bad == 0);
	/* Trailing garbage after END. */
	buf_append(&b, "x", 1);
	CHECK(envelope_decode(b.data, b.len, &d, &why) == -1);
	CHECK(why != NULL);
	buf_free(&b);
	envelope_free(&e);

	/* rec reader: a length past the end is malformed. */
	{
		unsigned char r[] = { 1, 0, 0, 0, 9, 'a' };
		struct rec_reader rd;
		struct rec rc;

		rec_reader_init(&rd, r, sizeof(r));
		CHECK(rec_next(&rd, &rc) == -1);
		rec_reader_init(&rd, r, 0);
		CHECK(rec_next(&rd, &rc) == 0);
	}
	CHECK(crc32_update(0, "123456789", 9) == 0xCBF43926u);
}
