/*
 * fuzz_conf: libFuzzer target for the configuration grammar.  Children
 * parse text the parent sent them, so conf_parse must survive any bytes;
 * an accepted config must also print and read back.
 */
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf *c, *c2;
	struct buf out;
	char err[256];

	c = conf_parse("fuzz.conf", (const char *)data, size, "/base", err,
	    sizeof(err));
	if (c == NULL)
		return 0;
	buf_init(&out);
	conf_print(c, &out);
	c2 = conf_parse("fuzz.conf", out.data, out.len, "/base", err,
	    sizeof(err));
	if (c2 == NULL)
		__builtin_trap();	/* ternd -P must read back */
	conf_free(c2);
	buf_free(&out);
	conf_free(c);
	return 0;
}
