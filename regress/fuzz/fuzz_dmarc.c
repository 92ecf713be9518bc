/*
 * fuzz_dmarc: the DMARC record parser and the From: extraction
 * (auth/dmarc.c) on arbitrary bytes.  The input is taken whole as a TXT
 * record and as a message header; the first line also as one From:
 * field's body.  A parsed record's values stay in their ranges, and an
 * extraction that succeeds names 1..DMARC_FROM_DOMAINS lower-case
 * domains that addr_domain_ascii takes back unchanged.  The same bytes
 * go to the store's checks (a Q_DMARC payload, a day file).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dmarc.h"
#include "lib/addr.h"
#include "lib/util.h"
#include "queue/dmarcstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* An entry the walk found whole: its payload is checked as Q_DMARC's. */
static void
fuzz_entry(const void *p, size_t len, void *arg)
{
	(void)dmarc_store_check(p, len);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static struct dmarc_from f;
	struct dmarc_record r;
	const char *why;
	char *s = malloc(len + 1), out[256];
	int rc;

	if (s == NULL)
		return 0;
	memcpy(s, data, len);
	s[len] = '\0';
	rc = dmarc_record_parse(s, &r, &why);
	if (rc == 1 && (r.pct < 0 || r.pct > 100 || (r.adkim != 'r' &&
	    r.adkim != 's') || (r.aspf != 'r' && r.aspf != 's') ||
	    r.p < DMARC_POL_NONE || r.p > DMARC_POL_REJECT ||
	    strlen(r.rua) >= DMARC_URI_MAX))
		abort();
	if (rc != 0 && !dmarc_record_is_dmarc(s))
		abort();
	if (dmarc_from_header(&f, (const char *)data, len) == DMARC_FROM_OK) {
		if (f.ndomains < 1 || f.ndomains > DMARC_FROM_DOMAINS)
			abort();
		for (int i = 0; i < f.ndomains; i++)
			if (addr_domain_ascii(f.domain[i], out, sizeof(out),
			    &why) != 0 || strcmp(out, f.domain[i]) != 0)
				abort();
	} else if (f.ndomains != 0)
		abort();
	dmarc_from_init(&f);
	{
		const char *nl = memchr(s, '\n', len);

		(void)dmarc_from_parse(&f, s, nl ? (size_t)(nl - s) : len);
	}
	{
		int bad;

		(void)dmarc_store_check(data, len);
		(void)dmarcstore_walk(data, len, &bad, fuzz_entry, NULL);
	}
	free(s);
	return 0;
}
