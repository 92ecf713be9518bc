/*
 * fuzz_srs: srs_reverse on arbitrary input, and forwarding round trips.
 * A sender that srs_forward rewrites must reverse to itself (an SRS1
 * sender to the SRS0 address at its first hop), and forwarding that
 * result once more (SRS0 -> SRS1) must reverse to it as well.  The
 * expected results are worked out here by plain string surgery.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/srs.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const unsigned char key[] = "fuzz-secret-0123456789";
#define KEYLEN	(sizeof(key) - 1)
#define NOW	((time_t)1700000000)

static void
reverse_must_give(const char *addr, const char *want)
{
	char out[SRS_ADDR_MAX + 1];
	const char *why = NULL;

	if (srs_reverse(addr, key, KEYLEN, NOW, 21, out, sizeof(out),
	    &why) != 1)
		abort();
	if (strcmp(out, want) != 0)
		abort();
}

/* What reversing srs_forward(s) must give back. */
static char *
expected(const char *s)
{
	const char *at = strrchr(s, '@'), *host, *rest;
	struct buf b;

	buf_init(&b);
	if (!srs_is_srs(s)) {
		buf_puts(&b, s);
	} else if (s[3] == '0') {
		buf_puts(&b, "SRS0");
		buf_puts(&b, s + 4);
	} else {
		/* SRS1<sep>hash=host=rest@domain -> SRS0rest@host */
		if ((host = strchr(s + 5, '=')) == NULL ||
		    (rest = strchr(host + 1, '=')) == NULL || rest > at)
			abort();
		buf_puts(&b, "SRS0");
		buf_append(&b, rest + 1, (size_t)(at - rest - 1));
		buf_putc(&b, '@');
		buf_append(&b, host + 1, (size_t)(rest - host - 1));
	}
	return buf_steal(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char out[SRS_ADDR_MAX + 1], fwd[SRS_ADDR_MAX + 1], *in, *want;
	const char *why;
	int r;

	in = xmalloc(size + 1);
	memcpy(in, data, size);
	in[size] = '\0';

	why = NULL;
	r = srs_reverse(in, key, KEYLEN, NOW, 21, out, sizeof(out), &why);
	if (r < -1 || r > 1 || (r == -1 && why == NULL))
		abort();
	if (r == 1 && strlen(out) >= sizeof(out))
		abort();
	/* a tiny buffer is refused, never overrun */
	(void)srs_reverse(in, key, KEYLEN, NOW, 21, out, 3, &why);

	if (srs_forward(in, "srs.example.net", key, KEYLEN, NOW, out,
	    sizeof(out)) == 0) {
		if (strlen(out) > SRS_ADDR_MAX)
			abort();
		if (strcmp(out, in) != 0) {
			want = expected(in);
			reverse_must_give(out, want);
			free(want);
			if (strncmp(out, "SRS0", 4) == 0 &&
			    srs_forward(out, "fwd.example", key, KEYLEN, NOW,
			    fwd, sizeof(fwd)) == 0)
				reverse_must_give(fwd, out);
		}
	}
	free(in);
	return 0;
}
