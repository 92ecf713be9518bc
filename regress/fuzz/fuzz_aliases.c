/*
 * fuzz_aliases: libFuzzer target for the aliases grammar (the whole file
 * and a bare target list), which newaliases and ternd's delivery side parse.
 */
#include <stddef.h>
#include <stdint.h>

#include "conf/aliases.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct alias_entry *e;
	struct alias_target *t;
	const char *why;
	char err[256];
	size_t n;

	if (aliases_parse("fuzz", (const char *)data, size, &e, &n, err,
	    sizeof(err)) == 0)
		aliases_free_entries(e, n);
	if (aliases_parse_targets((const char *)data, size, &t, &n, &why) == 0)
		aliases_free_targets(t, n);
	return 0;
}
