/*
 * test_fromcheck: the From: ownership decision of authenticated
 * submission (smtpd/fromcheck.c), a table of fields accepted and refused
 * for one account, then the field-name test.
 */
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "regress/unit/unit.h"
#include "smtpd/fromcheck.h"

void test_fromcheck(void);

static const char fc_conf[] =
    "local-domain \"example.org\"\nlocal-domain \"league.test\"\n"
    "listen msa 127.0.0.1 port 587\n"
    "allow-sender anna@example.org board@league.test @news.example\n"
    "allow-sender bob info@example.org\n";

static const struct {
	const char	*account;
	const char	*field;
	enum from_verdict want;
	const char	*bad;		/* NULL: not checked */
} fc_cases[] = {
	/* plain forms */
	{ "anna@example.org", " anna@example.org", FROM_OK, NULL },
	{ "anna@example.org", " Anna <anna@example.org>", FROM_OK, NULL },
	{ "anna@example.org", "anna@example.org", FROM_OK, NULL },
	{ "anna@example.org", " <anna@example.org>", FROM_OK, NULL },
	{ "anna@example.org", " bob@example.org", FROM_NOT_OWNED,
	    "bob@example.org" },
	{ "anna@example.org", " Anna <bob@example.org>", FROM_NOT_OWNED,
	    "bob@example.org" },
	{ "anna@example.org", "", FROM_OK, NULL },
	{ "anna@example.org", "  ", FROM_OK, NULL },
	/* case, +extensions, grants */
	{ "anna@example.org", " ANNA@Example.ORG", FROM_OK, NULL },
	{ "Anna@Example.org", " anna@example.org", FROM_OK, NULL },
	{ "anna@example.org", " anna+lists@example.org", FROM_OK, NULL },
	{ "anna@example.org", " Anna+x+y@EXAMPLE.org", FROM_OK, NULL },
	{ "anna@example.org", " annabel@example.org", FROM_NOT_OWNED, NULL },
	{ "anna@example.org", " anna@example.org.evil.example",
	    FROM_NOT_OWNED, NULL },
	{ "anna@example.org", " board@league.test", FROM_OK, NULL },
	{ "anna@example.org", " anything@news.example", FROM_OK, NULL },
	{ "anna@example.org", " x@sub.news.example", FROM_NOT_OWNED, NULL },
	{ "bob", " bob@league.test, info@example.org", FROM_OK, NULL },
	{ "bob", " bob@elsewhere.example", FROM_NOT_OWNED, NULL },
	/* comments */
	{ "anna@example.org", " anna@example.org (Anna at home)", FROM_OK,
	    NULL },
	{ "anna@example.org", " (c (nested) \\) x) anna@example.org",
	    FROM_OK, NULL },
	{ "anna@example.org", " anna (x) @ example.org", FROM_OK, NULL },
	/* an escaped '(' does not open a comment: bob is the sender */
	{ "anna@example.org", " (\\() bob@evil.example", FROM_NOT_OWNED,
	    "bob@evil.example" },
	{ "anna@example.org", " (bob@evil.example", FROM_MALFORMED, NULL },
	{ "anna@example.org", " anna@example.org (", FROM_MALFORMED, NULL },
	{ "anna@example.org", " an(x)na@example.org", FROM_MALFORMED, NULL },
	{ "anna@example.org", " anna@example.org)", FROM_MALFORMED, NULL },
	/* quoted strings */
	{ "anna@example.org", " \"bob@evil.example\" <anna@example.org>",
	    FROM_OK, NULL },
	{ "anna@example.org", " \"Anna, \\\"A\\\" <x>\" <anna@example.org>",
	    FROM_OK, NULL },
	{ "anna@example.org", " \"anna\"@example.org", FROM_OK, NULL },
	{ "anna@example.org", " \"anna+x\"@example.org", FROM_OK, NULL },
	{ "anna@example.org", " \"anna x\"@example.org", FROM_NOT_OWNED,
	    NULL },
	{ "anna@example.org", " \"bob@evil.example\"anna@example.org",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " \"bob@evil.example", FROM_MALFORMED, NULL },
	/* several addresses: every one must be owned */
	{ "anna@example.org", " anna@example.org, board@league.test",
	    FROM_OK, NULL },
	{ "anna@example.org", " anna@example.org, bob@evil.example",
	    FROM_NOT_OWNED, "bob@evil.example" },
	{ "anna@example.org", " A <anna@example.org>, B <bob@evil.example>",
	    FROM_NOT_OWNED, "bob@evil.example" },
	{ "anna@example.org", " anna@example.org,, ,anna+x@example.org",
	    FROM_OK, NULL },
	{ "anna@example.org", " anna@example.org bob@evil.example",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " <bob@evil.example> <anna@example.org>",
	    FROM_NOT_OWNED, "bob@evil.example" },
	{ "anna@example.org", " <anna@example.org> <bob@evil.example>",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " <anna@example.org> bob@evil.example",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " <anna@example.org>bob@evil.example",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " <anna@example.org", FROM_MALFORMED, NULL },
	{ "anna@example.org", " anna@example.org>", FROM_MALFORMED, NULL },
	{ "anna@example.org", " <>", FROM_MALFORMED, NULL },
	{ "anna@example.org", " <@relay.example:anna@example.org>",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " <<bob@evil.example>anna@example.org>",
	    FROM_MALFORMED, NULL },
	/* a display name is free text, an address in it does not count */
	{ "anna@example.org", " anna@example.org <anna@example.org>",
	    FROM_OK, NULL },
	{ "anna@example.org", " bob@evil.example <anna@example.org>",
	    FROM_OK, NULL },
	{ "anna@example.org", " J. R. \"Anna\" Doe <anna@example.org>",
	    FROM_OK, NULL },
	{ "anna@example.org", " [<bob@evil.example>] <anna@example.org>",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " [x]anna@example.org", FROM_MALFORMED, NULL },
	/* groups (RFC 6854): each member counts */
	{ "anna@example.org", " Team: anna@example.org, board@league.test;",
	    FROM_OK, NULL },
	{ "anna@example.org", " Team: <anna@example.org>;", FROM_OK, NULL },
	{ "anna@example.org", " Team: anna@example.org, bob@evil.example;",
	    FROM_NOT_OWNED, "bob@evil.example" },
	{ "anna@example.org", " undisclosed-recipients:;", FROM_OK, NULL },
	{ "anna@example.org", " Team: anna@example.org;, anna@example.org",
	    FROM_OK, NULL },
	{ "anna@example.org", " Team: anna@example.org", FROM_OK, NULL },
	{ "anna@example.org", " Re: Anna <anna@example.org>", FROM_OK, NULL },
	{ "anna@example.org", " Re: Bob <bob@evil.example>", FROM_NOT_OWNED,
	    "bob@evil.example" },
	{ "anna@example.org", " anna@example.org;", FROM_MALFORMED, NULL },
	{ "anna@example.org", " A: B: anna@example.org;;", FROM_MALFORMED,
	    NULL },
	{ "anna@example.org", " bob@evil.example: anna@example.org;",
	    FROM_MALFORMED, NULL },
	{ "anna@example.org", " Team: anna@example.org; x", FROM_MALFORMED,
	    NULL },
	/* encoded words are display text, never an address */
	{ "anna@example.org", " =?utf-8?q?Anna_M=C3=BCller?= "
	    "<anna@example.org>", FROM_OK, NULL },
	{ "anna@example.org", " =?utf-8?q?bob=40evil.example?=",
	    FROM_MALFORMED, NULL },
	/* internationalized domains compare in A-label form */
	{ "anna@example.org", " anna@EXAMPLE.org", FROM_OK, NULL },
	{ "anna@example.org", " anna@exämple.org", FROM_NOT_OWNED, NULL },
	/* other oddities */
	{ "anna@example.org", " anna@[192.0.2.1]", FROM_NOT_OWNED, NULL },
	{ "anna@example.org", " anna@example.org\\", FROM_MALFORMED, NULL },
	{ "anna@example.org", " @example.org", FROM_NOT_OWNED, NULL },
	{ "anna@example.org", " anna@", FROM_NOT_OWNED, NULL },
	{ "anna@example.org", " anna@@example.org", FROM_MALFORMED, NULL },
	{ "anna@example.org", " anna", FROM_MALFORMED, NULL },
	{ "anna@example.org", "\tanna@example.org,\t bob@evil.example",
	    FROM_NOT_OWNED, "bob@evil.example" },
};

static void
fc_table(const struct conf *c)
{
	char bad[FROM_ADDR_MAX];
	enum from_verdict v;
	size_t i;
	int fails = 0;

	for (i = 0; i < sizeof(fc_cases) / sizeof(fc_cases[0]); i++) {
		v = fromcheck_field(c, fc_cases[i].account, fc_cases[i].field,
		    strlen(fc_cases[i].field), bad, sizeof(bad));
		if (v != fc_cases[i].want || (fc_cases[i].bad != NULL &&
		    strcmp(bad, fc_cases[i].bad) != 0)) {
			unit_check(0, fc_cases[i].field, __FILE__, __LINE__);
			fails++;
		}
	}
	CHECK(fails == 0);
}

/* The length is the field's: a NUL inside ends nothing, it refuses. */
static void
fc_nul(const struct conf *c)
{
	static const char f[] = " anna@example.org\0, bob@evil.example";
	char bad[FROM_ADDR_MAX];

	CHECK(fromcheck_field(c, "anna@example.org", f, sizeof(f) - 1, bad,
	    sizeof(bad)) == FROM_MALFORMED);
	CHECK(fromcheck_field(c, "anna@example.org", f, 17, bad,
	    sizeof(bad)) == FROM_OK);
}

/* Limits: the number of addresses, an address's length, bad's room. */
static void
fc_limits(const struct conf *c)
{
	char field[8192], bad[FROM_ADDR_MAX], small[8];
	size_t n = 0, i;

	for (i = 0; i < FROM_ADDRS_MAX; i++)
		n += (size_t)snprintf(field + n, sizeof(field) - n,
		    "%sanna+%zu@example.org", i ? ", " : "", i);
	CHECK(fromcheck_field(c, "anna@example.org", field, n, bad,
	    sizeof(bad)) == FROM_OK);
	n += (size_t)snprintf(field + n, sizeof(field) - n,
	    ", anna@example.org");
	CHECK(fromcheck_field(c, "anna@example.org", field, n, bad,
	    sizeof(bad)) == FROM_TOO_MANY);
	/* an address too long to hold is never taken for its prefix */
	memcpy(field, "anna@example.org", 16);
	for (n = 16; n < 16 + 2 * FROM_ADDR_MAX; n++)
		field[n] = (n % 2) ? '.' : 'x';
	memcpy(field + n, "x.evil.example", 14);
	n += 14;
	CHECK(fromcheck_field(c, "anna@example.org", field, n, bad,
	    sizeof(bad)) == FROM_TOO_LONG);
	CHECK(strlen(bad) < sizeof(bad));
	/* a local part over 64 octets is no address */
	n = (size_t)snprintf(field, sizeof(field), "anna+%070d@example.org",
	    0);
	CHECK(fromcheck_field(c, "anna@example.org", field, n, bad,
	    sizeof(bad)) == FROM_NOT_OWNED);
	/* bad is cut to its room, never overrun */
	CHECK(fromcheck_field(c, "anna@example.org", " bob@evil.example", 17,
	    small, sizeof(small)) == FROM_NOT_OWNED && strlen(small) == 7);
	CHECK(fromcheck_field(c, "anna@example.org", " bob@evil.example", 17,
	    NULL, 0) == FROM_NOT_OWNED);
}

static void
fc_name(void)
{
	CHECK(fromcheck_name("From: a@b", 9) == 5);
	CHECK(fromcheck_name("FROM:a@b", 8) == 5);
	CHECK(fromcheck_name("from \t: a@b", 11) == 7);
	CHECK(fromcheck_name("From x: a@b", 11) == 0);
	CHECK(fromcheck_name("Fromage: x", 10) == 0);
	CHECK(fromcheck_name("Resent-From: a@b", 16) == 0);
	CHECK(fromcheck_name("From", 4) == 0);
	CHECK(fromcheck_name("From  ", 6) == 0);
}

void
test_fromcheck(void)
{
	char err[256];
	struct conf *c;

	c = conf_parse("t.conf", fc_conf, strlen(fc_conf), "/base", err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		return;
	fc_table(c);
	fc_nul(c);
	fc_limits(c);
	fc_name();
	conf_free(c);
}
