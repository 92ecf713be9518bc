/*
 * fuzz_dnsrec: the record checks of ternctl dns --check (auth/dnsrec.c)
 * on arbitrary TXT text: DKIM key records (base64 and DER keys inside),
 * DMARC records and the SPF lookup scan (the tag-list reader is
 * fuzz_taglist's).  A DKIM record's p= never holds a blank; the SPF scan
 * never keeps more targets than it has room for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dnsrec.h"
#include "auth/spf.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct dnsrec_dkim d;
	struct dnsrec_dmarc m;
	struct dnsrec_spf s;
	char *txt = malloc(len + 1);
	const char *why;

	if (txt == NULL)
		return 0;
	memcpy(txt, data, len);
	txt[len] = '\0';
	if (dnsrec_dkim_parse(txt, &d, &why) == 0 && d.p != NULL &&
	    strpbrk(d.p, " \t\r\n") != NULL)
		abort();
	dnsrec_dkim_free(&d);
	(void)dnsrec_is_dmarc(txt);
	(void)dnsrec_dmarc_parse(txt, &m, &why);
	if (dnsrec_is_spf(txt) && spf_record_check(txt, &why) == 0) {
		dnsrec_spf_scan(txt, &s);
		if (s.ntargets > DNSREC_SPF_TARGETS)
			abort();
	}
	dnsrec_spf_scan(txt, &s);	/* also on what the check refuses */
	free(txt);
	return 0;
}
