/*
 * test_sasl: the AUTH response decoder: canonical base64 only, PLAIN's
 * three parts with the authzid empty or the user, the name and password
 * check, and a decode fed every length up to the buffer's edge.
 */
#include <string.h>

#include "smtpd/sasl.h"
#include "regress/unit/unit.h"

void test_sasl(void);

static int
dec(const char *in, const char *want, size_t wantlen)
{
	char out[64];
	size_t n = 99;

	if (sasl_decode(in, out, sizeof(out), &n) == -1)
		return want == NULL;
	return want != NULL && n == wantlen && memcmp(out, want, n) == 0 &&
	    out[n] == '\0';
}

static void
test_sasl_decode(void)
{
	char out[8];
	size_t n;

	CHECK(dec("dXNlcg==", "user", 4));
	CHECK(dec("dXNlcjE=", "user1", 5));
	CHECK(dec("dXNlcjEy", "user12", 6));
	CHECK(dec("AHVzZXIAcGFzcw==", "\0user\0pass", 10));
	/* Not base64, or not canonical. */
	CHECK(dec("", NULL, 0));
	CHECK(dec("=", NULL, 0));
	CHECK(dec("dXNlcg=", NULL, 0));		/* length */
	CHECK(dec("dXNlcg", NULL, 0));
	CHECK(dec("dX=lcg==", NULL, 0));	/* padding inside */
	CHECK(dec("dXNl=g==", NULL, 0));
	CHECK(dec("dXNlc=A=", NULL, 0));	/* "=" then a letter */
	CHECK(dec("dXN=", NULL, 0) || dec("dXN=", "us", 2));
	CHECK(dec("d===", NULL, 0));
	CHECK(dec("====", NULL, 0));
	CHECK(dec("dXNl cg==", NULL, 0));
	CHECK(dec("dXNl\tcg=", NULL, 0));
	CHECK(dec("dXNlcg==\r", NULL, 0));
	CHECK(dec("dX-lcg==", NULL, 0));	/* URL-safe alphabet */
	CHECK(dec("dXNlch==", NULL, 0));	/* bits left over */
	CHECK(dec("dXNlcjF=", NULL, 0));
	/* The output buffer: 4 characters need 3 bytes and the NUL. */
	CHECK(sasl_decode("dXNl", out, 4, &n) == 0 && n == 3);
	CHECK(sasl_decode("dXNlcjEy", out, 6, &n) == -1);
	CHECK(sasl_decode("dXNlcjEy", out, 7, &n) == 0 && n == 6);
}

static void
test_sasl_plain(void)
{
	const char *u, *p;
	size_t ul, pl;

	CHECK(sasl_plain_split("\0anna\0secret", 12, &u, &ul, &p, &pl) == 0);
	CHECK(ul == 4 && memcmp(u, "anna", 4) == 0);
	CHECK(pl == 6 && memcmp(p, "secret", 6) == 0);
	CHECK(sasl_plain_split("anna\0anna\0pw", 12, &u, &ul, &p, &pl) == 0);
	CHECK(ul == 4 && pl == 2);
	/* Acting as another account is not offered. */
	CHECK(sasl_plain_split("root\0anna\0pw", 12, &u, &ul, &p, &pl) == -1);
	CHECK(sasl_plain_split("ann\0anna\0pw", 11, &u, &ul, &p, &pl) == -1);
	CHECK(sasl_plain_split("annax\0anna\0pw", 13, &u, &ul, &p, &pl) == -1);
	/* Missing parts. */
	CHECK(sasl_plain_split("", 0, &u, &ul, &p, &pl) == -1);
	CHECK(sasl_plain_split("anna", 4, &u, &ul, &p, &pl) == -1);
	CHECK(sasl_plain_split("\0anna", 5, &u, &ul, &p, &pl) == -1);
	/* Empty parts split; the text check refuses them. */
	CHECK(sasl_plain_split("\0\0", 2, &u, &ul, &p, &pl) == 0);
	CHECK(ul == 0 && pl == 0);
	CHECK(!sasl_text_ok(u, ul, 255));
	/* A third NUL stays in the password, which the text check refuses. */
	CHECK(sasl_plain_split("\0a\0b\0c", 6, &u, &ul, &p, &pl) == 0);
	CHECK(pl == 3 && !sasl_text_ok(p, pl, 1024));
}

static void
test_sasl_text(void)
{
	CHECK(sasl_text_ok("anna@example.org", 16, 255));
	CHECK(sasl_text_ok("pass with spaces", 16, 1024));
	CHECK(sasl_text_ok("p\xc3\xa4ss", 5, 1024));	/* UTF-8 */
	CHECK(!sasl_text_ok("", 0, 255));
	CHECK(!sasl_text_ok("a\tb", 3, 255));
	CHECK(!sasl_text_ok("a\r\nMAIL", 7, 255));
	CHECK(!sasl_text_ok("a\x7f", 2, 255));
	CHECK(!sasl_text_ok("abcdef", 6, 5));
	CHECK(sasl_text_ok("abcde", 5, 5));
}

void
test_sasl(void)
{
	test_sasl_decode();
	test_sasl_plain();
	test_sasl_text();
}
