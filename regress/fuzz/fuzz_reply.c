/*
 * fuzz_reply: the SMTP client's reply reader (queue/reply.c) on arbitrary
 * bytes, as a peer may send them.
 * - Fed whole, a byte at a time, and in chunks of sizes drawn from the
 *   input, it gives the same replies and ends the same way.
 * - Every reply keeps the bounds: a code in 200..599, 1..REPLY_LINES_MAX
 *   lines, printable text shorter than REPLY_TEXT that starts with its
 *   first line, known extensions only, a SIZE never negative.
 * - An independent reading of the lines (split at LF, one CR dropped,
 *   codes checked by hand) agrees on every reply's code and line count
 *   and on where and why the reader stops: a reply whose lines do not
 *   all carry its first line's code is malformed, as the client takes it.
 * When the first byte is odd, each 0x80 byte stands for its next byte
 * times 64 'x' (so lines longer than the fuzzer's inputs are reached).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta.h"
#include "queue/reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define RF_MAX	256			/* replies compared */
#define RF_GROW	(3 * REPLY_LINE_MAX)	/* bytes the 0x80s may add */

struct rf_out {
	int		 n;
	int		 code[RF_MAX], lines[RF_MAX];
	char		 text[RF_MAX][REPLY_TEXT];
	int		 ext[RF_MAX];
	long long	 size[RF_MAX];
	int		 end;		/* REPLY_MORE or the error */
	size_t		 held;		/* REPLY_MORE: bytes of a line */
};

static uint32_t
rf_rand(uint32_t *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 16;
}

/* step 0: whole; 1: a byte at a time; else chunks drawn from seed. */
static void
rf_run(const char *in, size_t n, int step, uint32_t seed, struct rf_out *o)
{
	struct reply r;
	enum reply_status st = REPLY_MORE;
	size_t off = 0, chunk, used;

	memset(o, 0, sizeof(*o));
	reply_init(&r);
	while (off < n) {
		chunk = step == 0 ? n - off : step == 1 ? 1 :
		    1 + rf_rand(&seed) % (rf_rand(&seed) % 4 ? 16 : 5000);
		if (chunk > n - off)
			chunk = n - off;
		st = reply_feed(&r, in + off, chunk, &used);
		if (used > chunk || (st == REPLY_MORE && used != chunk) ||
		    (st != REPLY_MORE && used == 0))
			abort();
		off += used;
		if (st == REPLY_DONE) {
			size_t k = strlen(r.text);

			if (r.code < 200 || r.code > 599 || r.lines < 1 ||
			    r.lines > REPLY_LINES_MAX || k >= REPLY_TEXT ||
			    (r.ext & ~MTA_EXT_ALL) != 0 || r.size < 0)
				abort();
			for (size_t i = 0; i < k; i++)
				if (r.text[i] < 32 || r.text[i] > 126)
					abort();
			if (o->n < RF_MAX) {
				o->code[o->n] = r.code;
				o->lines[o->n] = r.lines;
				memcpy(o->text[o->n], r.text, k + 1);
				o->ext[o->n] = r.ext;
				o->size[o->n] = r.size;
			}
			o->n++;
		} else if (st != REPLY_MORE)
			break;
	}
	o->end = st == REPLY_DONE ? REPLY_MORE : (int)st;
	o->held = r.len;
	/* an error is final */
	if (st != REPLY_MORE && st != REPLY_DONE &&
	    (reply_feed(&r, "250 ok\r\n", 8, &used) != st || used != 0))
		abort();
}

static int
rf_same(const struct rf_out *a, const struct rf_out *b)
{
	int i;

	if (a->n != b->n || a->end != b->end ||
	    (a->end == REPLY_MORE && a->held != b->held))
		return 0;
	for (i = 0; i < a->n && i < RF_MAX; i++)
		if (a->code[i] != b->code[i] || a->lines[i] != b->lines[i] ||
		    strcmp(a->text[i], b->text[i]) != 0 ||
		    a->ext[i] != b->ext[i] || a->size[i] != b->size[i])
			return 0;
	return 1;
}

/* The independent reading: codes and line counts, and the end. */
static void
rf_model(const char *in, size_t n, const struct rf_out *o)
{
	size_t start = 0, end, len;
	int code = 0, lines = 0, k = 0, c, more;
	const char *l, *first = NULL;
	size_t firstlen = 0, j;

	while (start < n) {
		const char *nl = memchr(in + start, '\n', n - start);

		if (nl == NULL)
			break;
		end = (size_t)(nl - in);
		l = in + start;
		len = end - start;
		start = end + 1;
		if (len > 0 && l[len - 1] == '\r')
			len--;
		if (len > REPLY_LINE_MAX) {
			if (o->end != REPLY_ELONG || o->n != k)
				abort();
			return;
		}
		if (len < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' ||
		    l[1] > '9' || l[2] < '0' || l[2] > '9' ||
		    (len > 3 && l[3] != ' ' && l[3] != '-'))
			goto malformed;
		c = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
		more = len > 3 && l[3] == '-';
		if (lines > 0 && c != code)
			goto malformed;
		code = c;
		if (++lines > REPLY_LINES_MAX)
			goto malformed;
		if (lines == 1) {
			first = l;
			firstlen = len;
		}
		if (more)
			continue;
		if (k < RF_MAX && (o->code[k] != code || o->lines[k] != lines))
			abort();
		/* the text starts with the first line: up to a NUL, as much
		   as fits, each byte outside printable ASCII a '?' */
		for (j = 0; k < RF_MAX && j < firstlen && j < REPLY_TEXT - 1 &&
		    first[j] != '\0'; j++) {
			unsigned char u = (unsigned char)first[j];

			if (o->text[k][j] != (u >= 32 && u < 127 ? (char)u : '?'))
				abort();
		}
		k++;
		lines = 0;
	}
	if (n - start >= REPLY_LINE_MAX + 2) {
		if (o->end != REPLY_ELONG || o->n != k)
			abort();
		return;
	}
	if (o->end != REPLY_MORE || o->n != k || o->held != n - start)
		abort();
	return;
malformed:
	if (o->end != REPLY_EMALFORMED || o->n != k)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rf_out whole, bytes, chunks;
	char *in;
	size_t n = 0, i, grown;
	uint32_t seed;

	if (size < 1)
		return 0;
	seed = data[0] | (size > 1 ? (uint32_t)data[1] << 8 : 0);
	if ((in = malloc(size + RF_GROW)) == NULL)
		return 0;
	for (i = 1, grown = 0; i < size; i++) {
		if ((data[0] & 1) && data[i] == 0x80 && i + 1 < size) {
			size_t x = (size_t)data[++i] * 64;

			if (x > RF_GROW - grown)
				x = RF_GROW - grown;
			memset(in + n, 'x', x);
			n += x;
			grown += x;
		} else
			in[n++] = (char)data[i];
	}
	rf_run(in, n, 0, 0, &whole);
	rf_run(in, n, 1, 0, &bytes);
	rf_run(in, n, 2, seed, &chunks);
	if (!rf_same(&whole, &bytes) || !rf_same(&whole, &chunks))
		abort();
	rf_model(in, n, &whole);
	free(in);
	return 0;
}
