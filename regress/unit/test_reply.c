/*
 * test_reply: the SMTP client's reply reader (queue/reply.c): replies
 * whole, peers that break the rules, and the same replies wherever the
 * chunks of the input end.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "queue/mta.h"
#include "queue/reply.h"
#include "regress/unit/unit.h"

void test_reply(void);

/*
 * Everything the reader makes of in, fed in chunks of step bytes after a
 * first chunk of first bytes, as text: "250/5/ext/size/text|...", then
 * "more:N" (bytes of a line held) or "malformed" or "long".
 */
static void
rp_run(const char *in, size_t n, size_t first, size_t step, struct buf *out)
{
	struct reply r;
	enum reply_status st = REPLY_MORE;
	size_t off = 0, chunk, used;

	reply_init(&r);
	buf_reset(out);
	while (off < n) {
		chunk = off == 0 && first ? first : step;
		if (chunk > n - off)
			chunk = n - off;
		st = reply_feed(&r, in + off, chunk, &used);
		if (used > chunk)
			abort();
		off += used;
		if (st == REPLY_DONE)
			buf_printf(out, "%d/%d/%x/%lld/%s|", r.code, r.lines,
			    (unsigned)r.ext, r.size, r.text);
		else if (st != REPLY_MORE)
			break;
	}
	if (st == REPLY_EMALFORMED)
		buf_printf(out, "malformed");
	else if (st == REPLY_ELONG)
		buf_printf(out, "long");
	else
		buf_printf(out, "more:%zu", r.len);
}

static int
rp_same_everywhere(const char *in, size_t n, const char *want)
{
	struct buf whole, b;
	size_t k;
	int ok = 1;

	buf_init(&whole);
	buf_init(&b);
	rp_run(in, n, 0, n ? n : 1, &whole);
	if (want != NULL && strcmp(whole.data, want) != 0) {
		fprintf(stderr, "reply: got %s\nwant %s\n", whole.data, want);
		ok = 0;
	}
	for (k = 1; k < n && ok; k++) {
		rp_run(in, n, k, n, &b);	/* two chunks, cut at k */
		ok = strcmp(b.data, whole.data) == 0;
	}
	if (ok) {
		rp_run(in, n, 0, 1, &b);	/* a byte at a time */
		ok = strcmp(b.data, whole.data) == 0;
	}
	if (ok) {
		rp_run(in, n, 0, 7, &b);
		ok = strcmp(b.data, whole.data) == 0;
	}
	buf_free(&whole);
	buf_free(&b);
	return ok;
}

#define SAME(s, want)	CHECK(rp_same_everywhere(s, sizeof(s) - 1, want))

static void
rp_table(void)
{
	SAME("220 mx.example ESMTP\r\n", "220/1/0/0/220 mx.example ESMTP|more:0");
	SAME("250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
	    "250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
	    "250/5/383/1000/250-mx.example 250-PIPELINING 250-SIZE 1000|"
	    "more:0");
	/* pipelined replies in one read */
	SAME("250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go\r\n",
	    "250/1/0/0/250 2.1.0 ok|550/1/0/0/550 5.1.1 no|354/1/0/0/354 go|"
	    "more:0");
	/* a reply still coming: its last line split */
	SAME("250-a\r\n250 b", "more:5");
	SAME("250-a\r\n250 b\r", "more:6");
	/* bare LF ends a line; a CR alone does not */
	SAME("250 ok\n", "250/1/0/0/250 ok|more:0");
	SAME("250 o\rk\r\r\n", "250/1/0/0/250 o?k?|more:0");
	/* a line's code, separator and number */
	SAME("250\r\n", "250/1/0/0/250|more:0");
	SAME("250ok\r\n", "malformed");
	SAME("25\r\n", "malformed");
	SAME("650 x\r\n", "malformed");
	SAME(" 250 x\r\n", "malformed");
	SAME("\r\n", "malformed");
	SAME("250-a\r\n251 b\r\n", "malformed");
	SAME("250-a\r\n550-b\r\n250 c\r\n", "malformed");
	SAME("250 a\r\n251-b\r\n250 c\r\n", "250/1/0/0/250 a|malformed");
	/* NUL: the text stops there; never in the code */
	SAME("250 o\0k\r\n", "250/1/0/0/250 o|more:0");
	SAME("250-PIPE\0LINING\r\n250-PIPELINING\0x\r\n250 x\r\n",
	    "250/3/1/0/250-PIPE 250-PIPELINING 250 x|more:0");
	SAME("250\0 x\r\n", "malformed");
	/* the first line is the server's name, never an extension */
	SAME("250 PIPELINING\r\n", "250/1/0/0/250 PIPELINING|more:0");
	SAME("250-SIZE 10\r\n250-SIZE 20\r\n250 SIZE 30\r\n",
	    "250/3/80/30/250-SIZE 10 250-SIZE 20 250 SIZE 30|more:0");
	/* control and 8-bit bytes reach the text as '?' */
	SAME("550 \x01\x7f\xc3\xa9\r\n", "550/1/0/0/550 ????|more:0");
	/* after an error nothing more is read */
	SAME("25x\r\n250 ok\r\n", "malformed");
}

/* Lines of REPLY_LINE_MAX pass; one more byte is too long, CR or not. */
static void
rp_long(void)
{
	char *in = malloc(REPLY_LINE_MAX + 16);
	size_t n;

	if (in == NULL)
		return;
	memcpy(in, "250 ", 4);
	memset(in + 4, 'x', REPLY_LINE_MAX - 4);
	memcpy(in + REPLY_LINE_MAX, "\r\n", 2);
	CHECK(rp_same_everywhere(in, REPLY_LINE_MAX + 2, NULL));
	{
		struct buf b;

		buf_init(&b);
		rp_run(in, REPLY_LINE_MAX + 2, 0, 1, &b);
		CHECK(strncmp(b.data, "250/1/", 6) == 0);
		buf_free(&b);
	}
	/* a CR that ends one read and the LF that starts the next */
	CHECK(rp_same_everywhere(in, REPLY_LINE_MAX + 2, NULL));
	memcpy(in + REPLY_LINE_MAX, "y\r\n", 3);
	CHECK(rp_same_everywhere(in, REPLY_LINE_MAX + 3, "long"));
	memcpy(in + REPLY_LINE_MAX, "y\n", 2);
	CHECK(rp_same_everywhere(in, REPLY_LINE_MAX + 2, "long"));
	memcpy(in + REPLY_LINE_MAX, "\r\r\n", 3);
	CHECK(rp_same_everywhere(in, REPLY_LINE_MAX + 3, "long"));
	/* no end at all: refused once it cannot be a line any more */
	n = REPLY_LINE_MAX + 2;
	memset(in + 4, 'x', n - 4);
	CHECK(rp_same_everywhere(in, n, "long"));
	CHECK(rp_same_everywhere(in, n - 1, NULL));
	free(in);
}

/* REPLY_LINES_MAX lines pass, one more is malformed. */
static void
rp_lines(void)
{
	struct buf in, b;
	int i;

	buf_init(&in);
	buf_init(&b);
	for (i = 0; i < REPLY_LINES_MAX - 1; i++)
		buf_printf(&in, "250-line %d\r\n", i);
	buf_printf(&in, "250 end\r\n");
	rp_run(in.data, in.len, 0, in.len, &b);
	CHECK(strncmp(b.data, "250/200/", 8) == 0);
	CHECK(strlen(b.data) < REPLY_TEXT + 40);
	buf_reset(&in);
	for (i = 0; i < REPLY_LINES_MAX; i++)
		buf_printf(&in, "250-line %d\r\n", i);
	buf_printf(&in, "250 end\r\n");
	CHECK(rp_same_everywhere(in.data, in.len, "malformed"));
	buf_free(&in);
	buf_free(&b);
}

/* The bytes after a reply stay the caller's (STARTTLS: none may follow). */
static void
rp_rest(void)
{
	static const char in[] = "220 go ahead\r\nINJECTED\r\n";
	struct reply r;
	size_t used;

	reply_init(&r);
	CHECK(reply_feed(&r, in, sizeof(in) - 1, &used) == REPLY_DONE &&
	    used == 14 && r.code == 220);
	CHECK(reply_feed(&r, in + used, 0, &used) == REPLY_MORE &&
	    used == 0 && r.len == 0);
	/* an error takes nothing more */
	CHECK(reply_feed(&r, "x\r\n", 3, &used) == REPLY_EMALFORMED);
	CHECK(reply_feed(&r, "250 ok\r\n", 8, &used) == REPLY_EMALFORMED &&
	    used == 0);
}

void
test_reply(void)
{
	rp_table();
	rp_long();
	rp_lines();
	rp_rest();
}
