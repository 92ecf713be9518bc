/*
 * fuzz_spf: the SPF record checks, the record rewriting for libspf2 and
 * macro expansion and the cutting of long expanded names
 * (auth/spfrec.c) on arbitrary text.  A record the check
 * accepts must still be accepted once rewritten (the rewriting only says
 * the same thing another way), and expansion never writes past its
 * buffer or a NUL it was not given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/spf.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct spf_macro_vals mv = {
		.s = "a-b.c@example.org", .l = "a-b.c", .o = "example.org",
		.d = "sub.example.org", .i = "192.0.2.3", .v = "in-addr",
		.h = "mx.example.net", .c = "192.0.2.3", .r = "mx.tern.test",
		.t = "1700000000", .p = "mx.example.net"
	};
	char *s = malloc(len + 1);
	const char *why;
	struct buf b;

	if (s == NULL)
		return 0;
	memcpy(s, data, len);
	s[len] = '\0';
	buf_init(&b);
	for (int mode = 0; mode < 3; mode++)
		(void)spf_macro_check(s, strlen(s), mode, &why);
	(void)spf_macro_expand(s, strlen(s), &mv, 1, &b);
	buf_reset(&b);
	(void)spf_macro_expand(s, strlen(s), &mv, 0, &b);
	if (spf_record_check(s, &why) == 0) {
		for (int v6 = 0; v6 < 2; v6++) {
			buf_reset(&b);
			spf_record_rewrite(s, v6, "tern-0123456789ab", &b);
			buf_putc(&b, '\0');
			if (spf_record_check(b.data, &why) != 0)
				abort();
			{
				struct buf c;

				buf_init(&c);
				(void)spf_record_truncate(b.data, &mv, &c);
				buf_free(&c);
			}
		}
	}
	buf_free(&b);
	free(s);
	return 0;
}
