/*
 * fuzz_verify: what the RCPT probe and the lmtp-recipients map read.  The
 * first byte chooses: an LMTP server's reply line (a line accepted must
 * carry a code in 200..599 and a valid separator), or a map's text looked
 * up for a fixed address and for one taken from the input's end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "queue/mta.h"
#include "smtpd/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_added(const char *in, size_t len)
{
	static const char *const lines[] = { "\n TEAM@Lists.example.org\r\n",
	    "\n@lists.EXAMPLE.org", "\r\n\tteam@lists.example.org \n#" };
	char *m;

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		size_t n = strlen(lines[i]);

		if ((m = malloc(len + n)) == NULL)
			return;
		memcpy(m, in, len);
		memcpy(m + len, lines[i], n);
		if (!verify_map_has(m, len + n, "team@lists.example.org"))
			abort();
		free(m);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in, addr[64];
	int code, more;
	size_t n;

	if (size < 1)
		return 0;
	if ((in = malloc(size)) == NULL)
		return 0;
	memcpy(in, data + 1, size - 1);
	in[size - 1] = '\0';
	if (data[0] & 1) {
		if (mta_reply_line(in, size - 1, &code, &more) == 0 &&
		    (code < 200 || code > 599 || (more && in[3] != '-')))
			abort();
	} else {
		(void)verify_map_has(in, size - 1, "team@lists.example.org");
		check_added(in, size - 1);
		n = size - 1 < sizeof(addr) - 1 ? size - 1 : sizeof(addr) - 1;
		memcpy(addr, in + (size - 1 - n), n);
		addr[n] = '\0';
		(void)verify_map_has(in, size - 1, addr);
	}
	free(in);
	return 0;
}
