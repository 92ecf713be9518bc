/*
 * test_addr: tables of accepted and refused mailboxes for lib/addr.c, the
 * canonical form each one prints as (quoted exactly when it must be, the
 * domain in A-labels), comparisons, and log escaping of such addresses.
 * Every input is parsed again from an exactly sized heap copy so the ASan
 * build catches a read past its end.
 */
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/log.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_addr(void);

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))
#define U		ADDR_F_UTF8

static const struct addr_ok {
	const char	*in;
	unsigned	 flags;
	const char	*local;		/* unquoted */
	const char	*domain;
	const char	*canon;		/* printed for SMTP */
	int		 utf8;
} addr_ok[] = {
	{ "bob@example.org", 0, "bob", "example.org", "bob@example.org", 0 },
	{ "Bob@Example.ORG", 0, "Bob", "example.org", "Bob@example.org", 0 },
	/* quotes that are not needed go: the same mailbox as bob@ */
	{ "\"bob\"@example.org", 0, "bob", "example.org", "bob@example.org",
	    0 },
	{ "\"b\\ob\"@example.org", 0, "bob", "example.org",
	    "bob@example.org", 0 },
	{ "\"a.b\"@example.org", 0, "a.b", "example.org", "a.b@example.org",
	    0 },
	/* quotes that are needed stay, minimal */
	{ "\"john doe\"@example.net", 0, "john doe", "example.net",
	    "\"john doe\"@example.net", 0 },
	{ "\"john\\ doe\"@example.net", 0, "john doe", "example.net",
	    "\"john doe\"@example.net", 0 },
	{ "\"a\\\"b\"@example.org", 0, "a\"b", "example.org",
	    "\"a\\\"b\"@example.org", 0 },
	{ "\"a\\\\b\"@example.org", 0, "a\\b", "example.org",
	    "\"a\\\\b\"@example.org", 0 },
	{ "\"a@b\"@example.org", 0, "a@b", "example.org",
	    "\"a@b\"@example.org", 0 },
	{ "\"a.\"@example.org", 0, "a.", "example.org", "\"a.\"@example.org",
	    0 },
	{ "\".a\"@example.org", 0, ".a", "example.org", "\".a\"@example.org",
	    0 },
	{ "\"a..b\"@example.org", 0, "a..b", "example.org",
	    "\"a..b\"@example.org", 0 },
	{ "\"<x>\"@example.org", 0, "<x>", "example.org",
	    "\"<x>\"@example.org", 0 },
	{ "!#$%&'*+-/=?^_`{|}~@example.org", 0, "!#$%&'*+-/=?^_`{|}~",
	    "example.org", "!#$%&'*+-/=?^_`{|}~@example.org", 0 },
	{ "a@[192.0.2.1]", 0, "a", "[192.0.2.1]", "a@[192.0.2.1]", 0 },
	{ "a@[IPv6:2001:db8::1]", 0, "a", "[IPv6:2001:db8::1]",
	    "a@[IPv6:2001:db8::1]", 0 },
	/* IDNA: U-labels become A-labels, A-labels stay */
	{ "user@b\xc3\xbc" "cher.example", U, "user", "xn--bcher-kva.example",
	    "user@b\xc3\xbc" "cher.example", 0 },
	{ "user@B\xc3\x9c" "CHER.example", U, "user", "xn--bcher-kva.example",
	    "user@b\xc3\xbc" "cher.example", 0 },
	/* NFC: u and a combining diaeresis are one code point */
	{ "user@bu\xcc\x88" "cher.example", U, "user",
	    "xn--bcher-kva.example", "user@b\xc3\xbc" "cher.example", 0 },
	{ "user@XN--BCHER-KVA.example", 0, "user", "xn--bcher-kva.example",
	    "user@xn--bcher-kva.example", 0 },
	{ "j\xc3\xb6rg@b\xc3\xbc" "cher.example", U, "j\xc3\xb6rg",
	    "xn--bcher-kva.example", "j\xc3\xb6rg@b\xc3\xbc" "cher.example",
	    1 },
	{ "\"j\xc3\xb6rg m\"@example.org", U, "j\xc3\xb6rg m", "example.org",
	    "\"j\xc3\xb6rg m\"@example.org", 1 },
	/* 64 octets of local part as written */
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "@example.org", 0,
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	    "example.org",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "@example.org", 0 },
};

static const struct addr_bad {
	const char	*in;
	unsigned	 flags;
	int		 code;
} addr_bad[] = {
	{ "", U, ADDR_ESYNTAX },
	{ "bob", U, ADDR_ESYNTAX },
	{ "bob@", U, ADDR_ESYNTAX },
	{ "@example.org", U, ADDR_ESYNTAX },
	{ "\"\"@example.org", U, ADDR_ESYNTAX },
	{ "john doe@example.org", U, ADDR_ESYNTAX },
	{ "a..b@example.org", U, ADDR_ESYNTAX },
	{ ".a@example.org", U, ADDR_ESYNTAX },
	{ "a.@example.org", U, ADDR_ESYNTAX },
	{ "\"a@example.org", U, ADDR_ESYNTAX },
	{ "\"a\"b@example.org", U, ADDR_ESYNTAX },
	{ "\"a\rb\"@example.org", U, ADDR_ESYNTAX },
	{ "\"a\\\nb\"@example.org", U, ADDR_ESYNTAX },
	{ "\"a\tb\"@example.org", U, ADDR_ESYNTAX },
	{ "a@b@example.org", U, ADDR_ESYNTAX },
	{ "a@example..org", U, ADDR_ESYNTAX },
	{ "a@-example.org", U, ADDR_ESYNTAX },
	{ "a@example.org.", U, ADDR_ESYNTAX },
	{ "a@exa mple.org", U, ADDR_ESYNTAX },
	{ "a@exa_mple.org", U, ADDR_ESYNTAX },
	{ "a@[300.0.0.1]", U, ADDR_ESYNTAX },
	{ "a@[IPv6:zz]", U, ADDR_ESYNTAX },
	{ "a@[tag:x]", U, ADDR_ESYNTAX },
	{ "a@[192.0.2.1", U, ADDR_ESYNTAX },
	/* 65 octets of local part */
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "@example.org", U, ADDR_ESYNTAX },
	/* UTF-8 without SMTPUTF8, and malformed UTF-8 */
	{ "j\xc3\xb6rg@example.org", 0, ADDR_ESYNTAX },
	{ "user@b\xc3\xbc" "cher.example", 0, ADDR_ESYNTAX },
	{ "j\xc3@example.org", U, ADDR_ESYNTAX },
	{ "j\xc0\xafrg@example.org", U, ADDR_ESYNTAX },
	{ "\"j\xed\xa0\x80\"@example.org", U, ADDR_ESYNTAX },
	/* not valid IDNA2008: symbols, a mapped full stop, bad UTF-8 */
	{ "user@\xe2\x98\x83.example", U, ADDR_EIDNA },
	{ "user@a\xef\xbc\x8e" "b.example", U, ADDR_EIDNA },
	{ "user@b\xc3\xbc" "cher\xc3.example", U, ADDR_EIDNA },
	{ "user@\xcc\x81" "a.example", U, ADDR_EIDNA },
	/* compatibility characters that map to ASCII: circled i, fullwidth */
	{ "x@\xe2\x93\x98" "C", U, ADDR_EIDNA },
	{ "x@\xef\xbd\x81\xef\xbd\x82.example", U, ADDR_EIDNA },
};

static int
parse_copy(const char *in, unsigned flags, struct addr *a)
{
	size_t n = strlen(in);
	char *copy = xmalloc(n + 1);
	int r;

	memcpy(copy, in, n + 1);
	r = addr_parse(copy, flags, a, NULL);
	free(copy);
	return r;
}

static void
test_addr_tables(void)
{
	char out[ADDR_STR_MAX];
	struct addr a, b;
	size_t i;

	for (i = 0; i < NELEM(addr_ok); i++) {
		const struct addr_ok *t = &addr_ok[i];

		CHECK(parse_copy(t->in, t->flags, &a) == 0);
		CHECK(strcmp(a.local, t->local) == 0);
		CHECK(strcmp(a.domain, t->domain) == 0);
		CHECK(a.utf8 == t->utf8);
		CHECK(addr_format(&a, out, sizeof(out)) < sizeof(out));
		CHECK(strcmp(out, t->canon) == 0);
		/* the canonical form parses back to the same mailbox */
		CHECK(parse_copy(out, U, &b) == 0 && addr_eq(&a, &b));
		CHECK(strcmp(a.udomain, b.udomain) == 0);
		CHECK(addr_format_ascii(&a, out, sizeof(out)) < sizeof(out));
		CHECK(!addr_has8bit(out + strlen(t->local)));
		CHECK(parse_copy(out, U, &b) == 0 && addr_eq(&a, &b));
	}
	for (i = 0; i < NELEM(addr_bad); i++) {
		const char *why = NULL;
		int r = addr_parse(addr_bad[i].in, addr_bad[i].flags, &a, &why);

		CHECK(r == addr_bad[i].code);
		CHECK(why != NULL);
		CHECK(parse_copy(addr_bad[i].in, addr_bad[i].flags, &a) ==
		    addr_bad[i].code);
	}
}

static void
test_addr_helpers(void)
{
	char out[ADDR_STR_MAX];
	struct addr a, b;
	const char *why;

	CHECK(addr_local_needs_quotes("john doe"));
	CHECK(addr_local_needs_quotes(""));
	CHECK(addr_local_needs_quotes("a\"b"));
	CHECK(!addr_local_needs_quotes("bob.smith+tag"));
	CHECK(!addr_local_needs_quotes("j\xc3\xb6rg"));
	/* "bob" and bob, any domain case: one mailbox */
	CHECK(addr_parse("\"bob\"@example.org", 0, &a, NULL) == 0);
	CHECK(addr_parse("bob@EXAMPLE.org", 0, &b, NULL) == 0);
	CHECK(addr_eq(&a, &b));
	CHECK(addr_parse("Bob@example.org", 0, &b, NULL) == 0);
	CHECK(!addr_eq(&a, &b));
	CHECK(addr_canon("\"x\"@B\xc3\x9c" "CHER.example", U, out,
	    sizeof(out), &why) == 0);
	CHECK(strcmp(out, "x@b\xc3\xbc" "cher.example") == 0);
	CHECK(addr_ascii("\"x\"@B\xc3\x9c" "CHER.example", out,
	    sizeof(out)) == 0 && strcmp(out, "x@xn--bcher-kva.example") == 0);
	CHECK(addr_ascii("\"j d\"@example.org", out, sizeof(out)) == 0 &&
	    strcmp(out, "\"j d\"@example.org") == 0);
	CHECK(addr_ascii("j d@example.org", out, sizeof(out)) == -1);
	CHECK(addr_canon("\"john doe\"@example.net", 0, out, 10, &why) ==
	    ADDR_ESYNTAX);
	CHECK(addr_domain_ascii("B\xc3\xbc" "cher.Example", out, sizeof(out),
	    &why) == 0 && strcmp(out, "xn--bcher-kva.example") == 0);
	CHECK(addr_domain_ascii("example..org", out, sizeof(out), &why) ==
	    -1);
	CHECK(addr_has8bit("j\xc3\xb6rg") && !addr_has8bit("jorg"));
	/* logs: quotes and backslashes escaped, the value stays one word */
	CHECK(strcmp(log_a("\"john doe\"@example.net"),
	    "\\\"john doe\\\"@example.net") == 0);
	CHECK(strcmp(log_a("\"a\\\\b\"@x"), "\\\"a\\\\\\\\b\\\"@x") == 0);
}

void
test_addr(void)
{
	test_addr_tables();
	test_addr_helpers();
}
