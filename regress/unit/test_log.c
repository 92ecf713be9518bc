/* test_log: escaping of log values (log_q inside "...", log_a in <...>). */
#include <string.h>

#include "lib/log.h"
#include "regress/unit/unit.h"

void test_log(void);

static const struct {
	const char	*in, *q, *a;
} cases[] = {
	{ "plain text", "plain text", "plain text" },
	{ "", "", "" },
	{ "say \"hi\"", "say \\\"hi\\\"", "say \\\"hi\\\"" },
	{ "back\\slash", "back\\\\slash", "back\\\\slash" },
	{ "x\" status=sent y", "x\\\" status=sent y", "x\\\" status=sent y" },
	{ "a>b<c", "a>b<c", "a\\x3eb\\x3cc" },
	{ "tab\there", "tab\\x09here", "tab\\x09here" },
	{ "cr\r\nlf", "cr\\x0d\\x0alf", "cr\\x0d\\x0alf" },
	{ "\xc3\xa9t\xc3\xa9", "\\xc3\\xa9t\\xc3\\xa9", "\\xc3\\xa9t\\xc3\\xa9" },
	{ "\x7f", "\\x7f", "\\x7f" },
};

void
test_log(void)
{
	char big[10000];
	const char *r[12];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CHECK(strcmp(log_q(cases[i].in), cases[i].q) == 0);
		CHECK(strcmp(log_a(cases[i].in), cases[i].a) == 0);
	}
	CHECK(strcmp(log_q(NULL), "") == 0);

	/* Long input is cut, never overrun, and never mid-escape. */
	memset(big, '"', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	r[0] = log_q(big);
	CHECK(strlen(r[0]) < 4096 && strlen(r[0]) % 2 == 0);
	CHECK(strspn(r[0], "\\\"") == strlen(r[0]));
	memset(big, '\x01', sizeof(big) - 1);
	r[0] = log_a(big);
	CHECK(strlen(r[0]) < 4096 && strlen(r[0]) % 4 == 0);

	/* Eight results stay valid at once: one log line's worth. */
	r[0] = log_q("zero");
	r[1] = log_q("one");
	r[2] = log_a("two");
	r[3] = log_q("three");
	r[4] = log_a("four");
	r[5] = log_q("five");
	r[6] = log_q("six");
	r[7] = log_a("seven");
	CHECK(strcmp(r[0], "zero") == 0 && strcmp(r[7], "seven") == 0);
	CHECK(strcmp(r[3], "three") == 0 && strcmp(r[4], "four") == 0);
}
