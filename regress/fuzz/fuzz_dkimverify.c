/*
 * fuzz_dkimverify: DKIM verification's parsers on arbitrary text (a
 * DKIM-Signature value, a key record, the authserv-id test; the tag-list
 * reader is fuzz_taglist's) and the verifier on arbitrary messages, as a
 * client sends them: every signature found is checked against the input
 * as its key record.  The Authentication-Results field always fills its
 * room exactly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/authres.h"
#include "auth/dkimverify.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
fuzz_parsers(const char *s, size_t len)
{
	struct dkim_sigtags g;
	struct dkim_keyrec k;
	const char *why;

	if (dkim_sig_parse(s, len, &g, &why) == 0 && (g.h[0] == '\0' ||
	    g.d[0] == '\0' || g.s[0] == '\0' || g.blen > sizeof(g.b)))
		abort();
	if (dkim_keyrec_parse(s, len, &k, &why) == 0 && k.plen > sizeof(k.p))
		abort();
	(void)authres_claims(s, len, "mx.example.test");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	const char *p = (const char *)data, *end = p + len, *nl;
	struct dkim_check c[DKIM_VERIFY_MAX];
	struct dkimv *v = dkimv_new(1700000000);
	struct authres ar;
	struct buf b;
	char *txt = xstrndup(p, len);
	const char *recs[1] = { txt };
	size_t n, i, room;
	int inhead = 1;

	fuzz_parsers(p, len);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (inhead && n == 0) {
			inhead = 0;
			dkimv_hend(v);
		} else if (inhead)
			dkimv_hline(v, p, n);
		else
			dkimv_bline(v, p, n);
		p = nl ? nl + 1 : end;
	}
	dkimv_hend(v);
	memset(&ar, 0, sizeof(ar));
	ar.dkim = 1;
	ar.ndkim = dkimv_nsigs(v);
	for (i = 0; i < ar.ndkim; i++) {
		const char *d, *s, *b8;

		dkimv_sig_ids(v, i, &d, &s, &b8);
		str_copy(ar.dk[i].d, d, sizeof(ar.dk[i].d));
		str_copy(ar.dk[i].s, s, sizeof(ar.dk[i].s));
		str_copy(ar.dk[i].b8, b8, sizeof(ar.dk[i].b8));
	}
	room = authres_room(&ar, "mx.example.test");
	n = dkimv_end(v, c, DKIM_VERIFY_MAX);
	if (n != ar.ndkim)
		abort();
	for (i = 0; i < n; i++) {
		dkim_check_key(&c[i], 0, recs, 1);
		if (c[i].result == DKIM_NONE)
			abort();
		ar.dk[i].result = c[i].result;
		str_copy(ar.dk[i].comment, c[i].comment,
		    sizeof(ar.dk[i].comment));
	}
	buf_init(&b);
	if (authres_format(&b, "mx.example.test", &ar, room) != 0 ||
	    b.len != room)
		abort();
	buf_free(&b);
	dkimv_free(v);
	free(txt);
	return 0;
}
