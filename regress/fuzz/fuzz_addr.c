/*
 * fuzz_addr: lib/addr.c on arbitrary bytes.  Whatever parses must print
 * in a canonical form that parses again to the same mailbox and prints
 * the same; that form never carries a control character, a space outside
 * quotes, or '<' or '>' outside quotes (it goes into RCPT TO:<...>).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_wire(const char *s)
{
	int inq = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 32 || c == 127)
			abort();
		if (inq && c == '\\') {
			if (*++s == '\0')
				abort();
			continue;
		}
		if (c == '"')
			inq = !inq;
		else if (!inq && (c == ' ' || c == '<' || c == '>'))
			abort();
	}
	if (inq)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char in[1024], out[ADDR_STR_MAX], out2[ADDR_STR_MAX];
	struct addr a, b;
	unsigned flags;

	if (size == 0 || size >= sizeof(in))
		return 0;
	flags = data[0] & 1 ? ADDR_F_UTF8 : 0;
	memcpy(in, data + 1, size - 1);
	in[size - 1] = '\0';
	if (addr_parse(in, flags, &a, NULL) != 0)
		return 0;
	if (addr_format(&a, out, sizeof(out)) >= sizeof(out))
		abort();
	check_wire(out);
	if (addr_parse(out, ADDR_F_UTF8, &b, NULL) != 0 || !addr_eq(&a, &b) ||
	    strcmp(a.domain, b.domain) != 0 || a.utf8 != b.utf8 ||
	    strcmp(a.udomain, b.udomain) != 0)
		abort();
	addr_format(&b, out2, sizeof(out2));
	if (strcmp(out, out2) != 0)
		abort();
	/* the A-label form: the same mailbox, and ASCII after the '@' */
	if (addr_format_ascii(&a, out, sizeof(out)) >= sizeof(out))
		abort();
	check_wire(out);
	if (addr_parse(out, ADDR_F_UTF8, &b, NULL) != 0 || !addr_eq(&a, &b) ||
	    b.udomain[0] != '\0')
		abort();
	return 0;
}
