/*
 * test_smtp_parse: tables of accepted and rejected command lines, paths,
 * ESMTP parameters and HELO domains for smtpd/smtp_parse.c.  Every input is
 * also re-parsed, with each of its prefixes, from an exactly sized heap copy
 * so that the ASan build catches any read past the terminating NUL.
 */
#include <stdlib.h>
#include <string.h>

#include "smtpd/smtp_parse.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_smtp_parse(void);

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

#define F_NULL	PATH_ALLOW_NULL
#define F_UTF8	PATH_ALLOW_UTF8
#define F_PM	PATH_ALLOW_POSTMASTER
#define F_ALL	(F_NULL | F_UTF8 | F_PM)

/* ---- paths ------------------------------------------------------------ */

static const struct path_ok {
	const char	*in;
	int		 flags;
	const char	*local;
	const char	*domain;
	int		 null;
	int		 utf8;
	const char	*rest;
} path_ok[] = {
	{ "<a@example.org>", 0, "a", "example.org", 0, 0, "" },
	{ "<A.B.C@Example.ORG>", 0, "A.B.C", "Example.ORG", 0, 0, "" },
	{ "<\"a b\"@example.org>", 0, "\"a b\"", "example.org", 0, 0, "" },
	{ "<\"a\\\"b\"@example.org>", 0, "\"a\\\"b\"", "example.org", 0, 0,
	    "" },
	{ "<\"a\\\\b\"@example.org>", 0, "\"a\\\\b\"", "example.org", 0, 0,
	    "" },
	{ "<\"a@b\"@example.org>", 0, "\"a@b\"", "example.org", 0, 0, "" },
	{ "<\"a>b\"@example.org>", 0, "\"a>b\"", "example.org", 0, 0, "" },
	{ "<\"a.\"@example.org>", 0, "\"a.\"", "example.org", 0, 0, "" },
	{ "<!#$%&'*+-/=?^_`{|}~@example.org>", 0, "!#$%&'*+-/=?^_`{|}~",
	    "example.org", 0, 0, "" },
	{ "<a@[192.0.2.1]>", 0, "a", "[192.0.2.1]", 0, 0, "" },
	{ "<a@[IPv6:2001:db8::1]>", 0, "a", "[IPv6:2001:db8::1]", 0, 0, "" },
	{ "<a@[ipv6:::1]>", 0, "a", "[ipv6:::1]", 0, 0, "" },
	{ "<a@[IPv6:::ffff:192.0.2.1]>", 0, "a", "[IPv6:::ffff:192.0.2.1]",
	    0, 0, "" },
	{ "<@a.example,@b.example:c@d.example>", 0, "c", "d.example", 0, 0,
	    "" },
	{ "<@a.example:c@d.example>", 0, "c", "d.example", 0, 0, "" },
	{ "<>", F_NULL, "", "", 1, 0, "" },
	{ "<> BODY=8BITMIME", F_NULL, "", "", 1, 0, " BODY=8BITMIME" },
	{ "<Postmaster>", F_PM, "Postmaster", "", 0, 0, "" },
	{ "<postMASTER>", F_PM, "Postmaster", "", 0, 0, "" },
	{ "<postmaster@example.org>", 0, "postmaster", "example.org", 0, 0,
	    "" },
	{ "<a@example.org> SIZE=10", 0, "a", "example.org", 0, 0,
	    " SIZE=10" },
	{ "<a@localhost>", 0, "a", "localhost", 0, 0, "" },
	{ "<a@1.2.3.4>", 0, "a", "1.2.3.4", 0, 0, "" },
	{ "<a-b@x-y.example>", 0, "a-b", "x-y.example", 0, 0, "" },
	{ "<a@xn--bcher-kva.example>", 0, "a", "xn--bcher-kva.example", 0, 0,
	    "" },
	{ "<j\xc3\xb6rg@b\xc3\xbc" "cher.example>", F_UTF8, "j\xc3\xb6rg",
	    "b\xc3\xbc" "cher.example", 0, 1, "" },
	{ "<\"\xe2\x82\xac x\"@example.org>", F_UTF8, "\"\xe2\x82\xac x\"",
	    "example.org", 0, 1, "" },
	{ "<\xf0\x9f\x98\x80@example.org>", F_UTF8, "\xf0\x9f\x98\x80",
	    "example.org", 0, 1, "" },
	{ "<\xf4\x8f\xbf\xbf@example.org>", F_UTF8, "\xf4\x8f\xbf\xbf",
	    "example.org", 0, 1, "" },
	{ "<a@example.org>", F_UTF8, "a", "example.org", 0, 0, "" },
	{ "<a@example.org>", F_ALL, "a", "example.org", 0, 0, "" },
};

static const struct path_bad {
	const char	*in;
	int		 flags;
	const char	*why;		/* NULL: any reason */
} path_bad[] = {
	{ "a@example.org", F_ALL, "address must be enclosed in <>" },
	{ "<a@example.org", F_ALL, "address must be enclosed in <>" },
	{ "<a", F_ALL, "address must be enclosed in <>" },
	{ "", F_ALL, "address must be enclosed in <>" },
	{ "<", F_ALL, "address must be enclosed in <>" },
	{ " <a@example.org>", F_ALL, "address must be enclosed in <>" },
	{ "<>", 0, NULL },
	{ "<>", F_UTF8 | F_PM, NULL },
	{ "<Postmaster>", 0, NULL },
	{ "<Postmaster>", F_NULL | F_UTF8, NULL },
	{ "<Postmaster@>", F_PM, NULL },
	{ "<Postmasterx>", F_PM, NULL },
	{ "<.a@example.org>", 0, NULL },
	{ "<a.@example.org>", 0, NULL },
	{ "<a..b@example.org>", 0, NULL },
	{ "<a b@example.org>", 0, NULL },
	{ "<a(b)@example.org>", 0, NULL },
	{ "<\"a\"b@example.org>", 0, NULL },
	{ "<\"a@example.org>", 0, NULL },
	{ "<\"a\\\x01\"@example.org>", 0, NULL },
	{ "<\"a\x01\"@example.org>", 0, NULL },
	{ "<\"a\tb\"@example.org>", 0, NULL },
	{ "<\"\"@example.org>", 0, NULL },
	{ "<a@example.org.>", 0, NULL },
	{ "<a@-example.org>", 0, NULL },
	{ "<a@example-.org>", 0, NULL },
	{ "<a@exa_mple.org>", 0, NULL },
	{ "<a@example..org>", 0, NULL },
	{ "<a@.example.org>", 0, NULL },
	{ "<a@>", 0, NULL },
	{ "<a>", 0, NULL },
	{ "<@example.org>", 0, NULL },
	{ "<a@@example.org>", 0, NULL },
	{ "<a@b@example.org>", 0, NULL },
	{ "< a@example.org>", 0, NULL },
	{ "<a@example.org >", 0, NULL },
	{ "<a@[192.0.2.256]>", 0, NULL },
	{ "<a@[192.0.2]>", 0, NULL },
	{ "<a@[192.0.2.01]>", 0, NULL },
	{ "<a@[]>", 0, NULL },
	{ "<a@[IPv6:2001:db8::g]>", 0, NULL },
	{ "<a@[IPv6:192.0.2.1]>", 0, NULL },
	{ "<a@[2001:db8::1]>", 0, NULL },
	{ "<a@[x400:c=us;a=foo]>", 0, NULL },
	{ "<a@[192.0.2.1>", 0, NULL },
	{ "<a@[192.0.2.1]x>", 0, NULL },
	{ "<a@example.org>junk", 0, "junk after address" },
	{ "<a@example.org>>", 0, "junk after address" },
	{ "<a@example.org>\t", 0, "junk after address" },
	{ "<@a.example,c@d.example>", 0, NULL },
	{ "<@a.example,@:c@d.example>", 0, NULL },
	{ "<@a.example c@d.example>", 0, NULL },
	{ "<@[192.0.2.1]:c@d.example>", 0, NULL },
	{ "<@a.example:>", 0, NULL },
	{ "<@a.example:c@d.example", 0, "address must be enclosed in <>" },
	{ "<j\xc3\xb6rg@example.org>", 0,
	    "non-ASCII address requires SMTPUTF8" },
	{ "<a@b\xc3\xbc" "cher.example>", F_NULL | F_PM,
	    "non-ASCII address requires SMTPUTF8" },
	{ "<\"\xe2\x82\xac\"@example.org>", 0,
	    "non-ASCII address requires SMTPUTF8" },
	{ "<\xc0\xaf@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xc1\xbf@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xe0\x80\xaf@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xf0\x80\x80\xaf@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xed\xa0\x80@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xf4\x90\x80\x80@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xf5\x80\x80\x80@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\xc3@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<\x80@example.org>", F_UTF8, "malformed UTF-8" },
	{ "<a@b\xc3(cher.example>", F_UTF8, "malformed UTF-8" },
	{ "<a@example.\xc3>", F_UTF8, "malformed UTF-8" },
	{ "<\xff@example.org>", F_UTF8, "malformed UTF-8" },
};

static void
path_check_ok(const struct path_ok *t)
{
	struct smtp_path p;
	const char *rest = NULL, *why = NULL;
	int r;

	r = smtp_parse_path(t->in, t->flags, &p, &rest, &why);
	CHECK(r == 0);
	if (r != 0)
		return;
	CHECK(strcmp(p.local, t->local) == 0);
	CHECK(strcmp(p.domain, t->domain) == 0);
	CHECK(p.null == t->null);
	CHECK(p.utf8 == t->utf8);
	CHECK(rest != NULL && strcmp(rest, t->rest) == 0);
}

static void
path_check_bad(const struct path_bad *t)
{
	struct smtp_path p;
	const char *rest = NULL, *why = NULL;

	CHECK(smtp_parse_path(t->in, t->flags, &p, &rest, &why) == -1);
	CHECK(why != NULL);
	if (t->why != NULL && why != NULL)
		CHECK(strcmp(why, t->why) == 0);
}

/* Every prefix of s, from an exactly sized buffer; results unchecked. */
static void
path_prefixes(const char *s)
{
	size_t len = strlen(s), n;
	struct smtp_path p;
	const char *rest, *why;

	for (n = 0; n <= len; n++) {
		char *b = xstrndup(s, n);

		for (int f = 0; f <= F_ALL; f++)
			(void)smtp_parse_path(b, f, &p, &rest, &why);
		(void)smtp_parse_helo(b, &why);
		(void)smtp_check_domain(b, 0);
		(void)smtp_check_domain(b, 1);
		free(b);
	}
}

static void
test_path_table(void)
{
	size_t i;

	for (i = 0; i < NELEM(path_ok); i++) {
		path_check_ok(&path_ok[i]);
		path_prefixes(path_ok[i].in);
	}
	for (i = 0; i < NELEM(path_bad); i++) {
		path_check_bad(&path_bad[i]);
		path_prefixes(path_bad[i].in);
	}
}

/* "<" local(n octets) "@" domain(...) ">" into b. */
static void
make_path(char *b, size_t size, size_t nlocal, const char *domain)
{
	struct buf t;

	buf_init(&t);
	buf_putc(&t, '<');
	for (size_t i = 0; i < nlocal; i++)
		buf_putc(&t, 'l');
	buf_printf(&t, "@%s>", domain);
	str_copy(b, t.data, size);
	buf_free(&t);
}

/* A domain of labels with the given lengths, e.g. {63, 63, 1, 0}. */
static void
make_domain(char *b, size_t size, const int *labels)
{
	struct buf t;

	buf_init(&t);
	for (int i = 0; labels[i] != 0; i++) {
		if (i > 0)
			buf_putc(&t, '.');
		for (int j = 0; j < labels[i]; j++)
			buf_putc(&t, (char)('a' + i));
	}
	str_copy(b, t.data ? t.data : "", size);
	buf_free(&t);
}

static int
path_ok_simple(const char *in)
{
	struct smtp_path p;
	const char *rest, *why = NULL;

	return smtp_parse_path(in, 0, &p, &rest, &why) == 0;
}

static const char *
path_why(const char *in)
{
	struct smtp_path p;
	const char *rest, *why = NULL;

	if (smtp_parse_path(in, 0, &p, &rest, &why) == 0)
		return "(accepted)";
	return why != NULL ? why : "(null)";
}

static void
test_path_limits(void)
{
	static const int d254[] = { 63, 63, 63, 62, 0 };
	static const int d255[] = { 63, 63, 63, 63, 0 };
	static const int d256[] = { 63, 63, 63, 62, 1, 0 };
	static const int l63[] = { 63, 7, 0 };
	static const int l64[] = { 64, 7, 0 };
	char dom[512], path[1024];
	struct smtp_path p;
	const char *rest, *why;

	make_path(path, sizeof(path), 64, "example.org");
	CHECK(path_ok_simple(path));
	CHECK(smtp_parse_path(path, 0, &p, &rest, &why) == 0 &&
	    strlen(p.local) == 64);
	make_path(path, sizeof(path), 65, "example.org");
	CHECK(strcmp(path_why(path), "local part too long") == 0);
	make_path(path, sizeof(path), 200, "example.org");
	CHECK(strcmp(path_why(path), "local part too long") == 0);

	make_domain(dom, sizeof(dom), d255);
	CHECK(strlen(dom) == 255 && smtp_check_domain(dom, 0) == 0);
	make_domain(dom, sizeof(dom), d256);
	CHECK(strlen(dom) == 256 && smtp_check_domain(dom, 0) == -1);
	make_path(path, sizeof(path), 1, dom);
	CHECK(strcmp(path_why(path), "domain too long") == 0);

	/* The whole path inside <> is at most 256 octets. */
	make_domain(dom, sizeof(dom), d254);
	CHECK(strlen(dom) == 254);
	make_path(path, sizeof(path), 1, dom);
	CHECK(path_ok_simple(path));
	CHECK(smtp_parse_path(path, 0, &p, &rest, &why) == 0 &&
	    strcmp(p.domain, dom) == 0);
	make_path(path, sizeof(path), 2, dom);
	CHECK(strcmp(path_why(path), "address too long") == 0);
	make_domain(dom, sizeof(dom), d255);
	make_path(path, sizeof(path), 1, dom);
	CHECK(strcmp(path_why(path), "address too long") == 0);

	make_domain(dom, sizeof(dom), l63);
	CHECK(smtp_check_domain(dom, 0) == 0);
	make_path(path, sizeof(path), 1, dom);
	CHECK(path_ok_simple(path));
	make_domain(dom, sizeof(dom), l64);
	CHECK(smtp_check_domain(dom, 0) == -1);
	make_path(path, sizeof(path), 1, dom);
	CHECK(!path_ok_simple(path));
}

static void
test_path_string(void)
{
	struct smtp_path p;
	const char *rest, *why;
	char s[600], tiny[4];

	CHECK(smtp_parse_path("<\"a b\"@example.org>", 0, &p, &rest,
	    &why) == 0);
	smtp_path_string(&p, s, sizeof(s));
	CHECK(strcmp(s, "\"a b\"@example.org") == 0);
	smtp_path_string(&p, tiny, sizeof(tiny));
	CHECK(strcmp(tiny, "\"a ") == 0);
	CHECK(smtp_parse_path("<>", F_NULL, &p, &rest, &why) == 0);
	smtp_path_string(&p, s, sizeof(s));
	CHECK(strcmp(s, "") == 0);
	CHECK(smtp_parse_path("<postmaster>", F_PM, &p, &rest, &why) == 0);
	smtp_path_string(&p, s, sizeof(s));
	CHECK(strcmp(s, "Postmaster") == 0);
	CHECK(smtp_parse_path("<@r.example:x@[192.0.2.1]>", 0, &p, &rest,
	    &why) == 0);
	smtp_path_string(&p, s, sizeof(s));
	CHECK(strcmp(s, "x@[192.0.2.1]") == 0);
	smtp_path_string(&p, s, 0);
}

/* ---- command lines ---------------------------------------------------- */

static const struct cmd_case {
	const char	*in;
	int		 ret;
	enum smtp_verb	 verb;
	const char	*arg;		/* checked when ret == 0 */
	const char	*why;		/* checked when ret == -1 */
} cmd_cases[] = {
	{ "HELO example.org", 0, VERB_HELO, "example.org", NULL },
	{ "ehlo example.org", 0, VERB_EHLO, "example.org", NULL },
	{ "EhLo [192.0.2.1]", 0, VERB_EHLO, "[192.0.2.1]", NULL },
	{ "MAIL FROM:<a@b.example>", 0, VERB_MAIL, "<a@b.example>", NULL },
	{ "mail from:<a@b.example>", 0, VERB_MAIL, "<a@b.example>", NULL },
	{ "MAIL FROM: <a@b.example>", 0, VERB_MAIL, "<a@b.example>", NULL },
	{ "MAIL FROM:   <> SIZE=1", 0, VERB_MAIL, "<> SIZE=1", NULL },
	{ "MAIL FROM:", 0, VERB_MAIL, "", NULL },
	{ "RCPT TO:<c@d.example>", 0, VERB_RCPT, "<c@d.example>", NULL },
	{ "rcpt To: <c@d.example>", 0, VERB_RCPT, "<c@d.example>", NULL },
	{ "DATA", 0, VERB_DATA, "", NULL },
	{ "data", 0, VERB_DATA, "", NULL },
	{ "DATA ", 0, VERB_DATA, "", NULL },
	{ "RSET", 0, VERB_RSET, "", NULL },
	{ "QUIT", 0, VERB_QUIT, "", NULL },
	{ "STARTTLS", 0, VERB_STARTTLS, "", NULL },
	{ "NOOP", 0, VERB_NOOP, "", NULL },
	{ "NOOP hello there", 0, VERB_NOOP, "hello there", NULL },
	{ "HELP MAIL", 0, VERB_HELP, "MAIL", NULL },
	{ "BDAT 100 LAST", 0, VERB_BDAT, "100 LAST", NULL },
	{ "AUTH PLAIN dGVzdA==", 0, VERB_AUTH, "PLAIN dGVzdA==", NULL },
	{ "VRFY user", 0, VERB_VRFY, "user", NULL },
	{ "EXPN list", 0, VERB_EXPN, "list", NULL },
	{ "HELO", 0, VERB_HELO, "", NULL },
	{ "MAILFROM:<a@b.example>", 0, VERB_UNKNOWN, "", NULL },
	{ "DATAX", 0, VERB_UNKNOWN, "", NULL },
	{ "FOO bar", 0, VERB_UNKNOWN, "bar", NULL },
	{ "", 0, VERB_UNKNOWN, "", NULL },
	{ " MAIL FROM:<a@b.example>", 0, VERB_UNKNOWN, "MAIL FROM:<a@b.example>",
	    NULL },
	{ "MAIL\tFROM:<a@b.example>", 0, VERB_UNKNOWN, "", NULL },
	{ "DATA foo", -1, VERB_DATA, NULL, "DATA takes no arguments" },
	{ "RSET x", -1, VERB_RSET, NULL, "RSET takes no arguments" },
	{ "QUIT now", -1, VERB_QUIT, NULL, "QUIT takes no arguments" },
	{ "STARTTLS x", -1, VERB_STARTTLS, NULL,
	    "STARTTLS takes no arguments" },
	{ "MAIL TO:<a@b.example>", -1, VERB_MAIL, NULL, "MAIL requires FROM:" },
	{ "MAIL", -1, VERB_MAIL, NULL, "MAIL requires FROM:" },
	{ "MAIL FROM<a@b.example>", -1, VERB_MAIL, NULL,
	    "MAIL requires FROM:" },
	{ "MAIL  FROM:<a@b.example>", -1, VERB_MAIL, NULL,
	    "MAIL requires FROM:" },
	{ "RCPT FROM:<a@b.example>", -1, VERB_RCPT, NULL,
	    "RCPT requires TO:" },
	{ "RCPT", -1, VERB_RCPT, NULL, "RCPT requires TO:" },
};

static void
test_command_table(void)
{
	struct smtp_command cmd;
	const char *why;
	size_t i;
	int r;

	for (i = 0; i < NELEM(cmd_cases); i++) {
		const struct cmd_case *t = &cmd_cases[i];

		why = NULL;
		r = smtp_parse_command(t->in, &cmd, &why);
		CHECK(r == t->ret);
		CHECK(cmd.verb == t->verb);
		if (t->ret == 0)
			CHECK(cmd.arg != NULL && strcmp(cmd.arg, t->arg) == 0);
		else
			CHECK(why != NULL && strcmp(why, t->why) == 0);
	}
}

/* The argument of MAIL FROM: is where smtp_parse_path starts. */
static void
test_command_path(void)
{
	struct smtp_command cmd;
	struct smtp_path p;
	struct mail_params mp;
	const char *why, *rest;

	CHECK(smtp_parse_command("MAIL FROM: <a@b.example> SIZE=42 BODY=8BITMIME",
	    &cmd, &why) == 0);
	CHECK(smtp_parse_path(cmd.arg, 0, &p, &rest, &why) == 0);
	CHECK(smtp_parse_mail_params(rest, &mp, &why) == 0);
	CHECK(mp.size == 42 && mp.body == BODY_8BITMIME && !mp.smtputf8);
}

/* ---- ESMTP parameters ------------------------------------------------- */

static const struct mp_case {
	const char	*in;
	int		 ret;
	long long	 size;
	enum body_type	 body;
	int		 smtputf8;
	const char	*why;		/* checked when ret == -1 */
} mp_cases[] = {
	{ "", 0, -1, BODY_7BIT, 0, NULL },
	{ "   ", 0, -1, BODY_7BIT, 0, NULL },
	{ " SIZE=1000", 0, 1000, BODY_7BIT, 0, NULL },
	{ "size=0", 0, 0, BODY_7BIT, 0, NULL },
	{ " SIZE=9223372036854775807", 0, 9223372036854775807LL, BODY_7BIT,
	    0, NULL },
	{ " SIZE=00000000000000000001", 0, 1, BODY_7BIT, 0, NULL },
	{ " BODY=8BITMIME", 0, -1, BODY_8BITMIME, 0, NULL },
	{ " body=binarymime", 0, -1, BODY_BINARYMIME, 0, NULL },
	{ " BODY=7bit", 0, -1, BODY_7BIT, 0, NULL },
	{ " SMTPUTF8", 0, -1, BODY_7BIT, 1, NULL },
	{ " smtputf8 ", 0, -1, BODY_7BIT, 1, NULL },
	{ "  SIZE=10   BODY=8BITMIME  SMTPUTF8", 0, 10, BODY_8BITMIME, 1,
	    NULL },
	{ " SIZE=99999999999999999999", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=9223372036854775808", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=123456789012345678901", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=-1", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=+1", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=1x", -1, 0, 0, 0, "bad SIZE" },
	{ " SIZE=1=2", -1, 0, 0, 0, "bad SIZE" },
	{ " BODY=9BIT", -1, 0, 0, 0, "bad BODY" },
	{ " BODY=8BITMIMEX", -1, 0, 0, 0, "bad BODY" },
	{ " BODY=", -1, 0, 0, 0, "bad BODY" },
	{ " BODY", -1, 0, 0, 0, "bad BODY" },
	{ " SMTPUTF8=yes", -1, 0, 0, 0, "SMTPUTF8 takes no value" },
	{ " SMTPUTF8=", -1, 0, 0, 0, "SMTPUTF8 takes no value" },
	{ " SIZE=1 SIZE=2", -1, 0, 0, 0, "duplicate parameter" },
	{ " SMTPUTF8 smtputf8", -1, 0, 0, 0, "duplicate parameter" },
	{ " FOO=bar", -2, 0, 0, 0, "unsupported parameter FOO" },
	{ " SIZE=1 AUTH=<>", -2, 0, 0, 0, "unsupported parameter AUTH" },
	{ " RET=HDRS X", -2, 0, 0, 0, "unsupported parameter X" },
	{ " RET=PART", -3, 0, 0, 0, "bad RET" },
	{ " ENVID=a+2", -3, 0, 0, 0, "bad ENVID" },
	{ " RET=FULL RET=HDRS", -1, 0, 0, 0, "duplicate parameter" },
	{ " =x", -2, 0, 0, 0, "unsupported parameter " },
	{ " SIZE=1\tBODY=8BITMIME", -1, 0, 0, 0, "bad SIZE" },
	{ " X\x01\xff", -2, 0, 0, 0, "unsupported parameter X??" },
	{ " AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", -2, 0, 0, 0,
	    "unsupported parameter AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" },
	{ " XPROGRAM=012345678901234567890123456789012", -1, 0, 0, 0,
	    "bad XPROGRAM" },
	{ " XPROGRAM=", -1, 0, 0, 0, "bad XPROGRAM" },
	{ " XPROGRAM", -1, 0, 0, 0, "bad XPROGRAM" },
	{ " XPROGRAM=a/b", -1, 0, 0, 0, "bad XPROGRAM" },
	{ " XPROGRAM=a\x01", -1, 0, 0, 0, "bad XPROGRAM" },
	{ " XPROGRAM=a XPROGRAM=b", -1, 0, 0, 0, "duplicate parameter" },
};

static void
test_mail_params_table(void)
{
	struct mail_params mp;
	const char *why;
	size_t i;
	int r;

	for (i = 0; i < NELEM(mp_cases); i++) {
		const struct mp_case *t = &mp_cases[i];

		why = NULL;
		memset(&mp, 0x55, sizeof(mp));
		r = smtp_parse_mail_params(t->in, &mp, &why);
		CHECK(r == t->ret);
		if (t->ret == 0) {
			CHECK(mp.size == t->size);
			CHECK(mp.body == t->body);
			CHECK(mp.smtputf8 == t->smtputf8);
			CHECK(mp.program[0] == '\0');
		} else
			CHECK(why != NULL && strcmp(why, t->why) == 0);
	}
}

/* XPROGRAM=, the submit socket's: the value is kept as given. */
static void
test_mail_params_program(void)
{
	static const struct {
		const char	*in;
		long long	 size;
		const char	*program;
	} ok[] = {
		{ " XPROGRAM=php-fpm8.2", -1, "php-fpm8.2" },
		{ " xprogram=cron SIZE=5", 5, "cron" },
		{ " XPROGRAM=01234567890123456789012345678901", -1,
		    "01234567890123456789012345678901" },
	};
	struct mail_params mp;
	const char *why;
	size_t i;

	for (i = 0; i < NELEM(ok); i++) {
		memset(&mp, 0x55, sizeof(mp));
		CHECK(smtp_parse_mail_params(ok[i].in, &mp, &why) == 0);
		CHECK(mp.size == ok[i].size);
		CHECK(strcmp(mp.program, ok[i].program) == 0);
	}
}

static void
test_rcpt_params(void)
{
	const char *why;

	CHECK(smtp_parse_rcpt_params("", &why) == 0);
	CHECK(smtp_parse_rcpt_params("   ", &why) == 0);
	why = NULL;
	CHECK(smtp_parse_rcpt_params(" NOTIFY=NEVER", &why) == -1);
	CHECK(why != NULL && strcmp(why, "unsupported parameter NOTIFY") == 0);
	why = NULL;
	CHECK(smtp_parse_rcpt_params("ORCPT=rfc822;a@b", &why) == -1);
	CHECK(why != NULL && strcmp(why, "unsupported parameter ORCPT") == 0);
}

/* ---- HELO and domains ------------------------------------------------- */

static const struct helo_case {
	const char	*in;
	int		 ret;
	const char	*why;		/* NULL: any reason */
} helo_cases[] = {
	{ "example.org", 0, NULL },
	{ "example.org.", 0, NULL },
	{ "mail.Example.ORG", 0, NULL },
	{ "my_host.example", 0, NULL },
	{ "_host", 0, NULL },
	{ "localhost", 0, NULL },
	{ "[192.0.2.1]", 0, NULL },
	{ "[IPv6:2001:db8::1]", 0, NULL },
	{ "example.org ", 0, NULL },
	{ "", -1, "HELO requires a domain" },
	{ "   ", -1, "HELO requires a domain" },
	{ "exa mple.org", -1, NULL },
	{ "-bad.example", -1, NULL },
	{ "bad-.example", -1, NULL },
	{ "a..b", -1, NULL },
	{ ".", -1, NULL },
	{ ".example.org", -1, NULL },
	{ "example.org..", -1, NULL },
	{ "[300.1.1.1]", -1, NULL },
	{ "[192.0.2.1", -1, NULL },
	{ "[tag:stuff]", -1, NULL },
	{ "b\xc3\xbc" "cher.example", -1, NULL },
	{ "exa\tmple", -1, NULL },
	{ "a@b.example", -1, NULL },
};

static void
test_helo_table(void)
{
	const char *why;
	size_t i;

	for (i = 0; i < NELEM(helo_cases); i++) {
		const struct helo_case *t = &helo_cases[i];

		why = NULL;
		CHECK(smtp_parse_helo(t->in, &why) == t->ret);
		if (t->ret == -1)
			CHECK(why != NULL);
		if (t->ret == -1 && t->why != NULL && why != NULL)
			CHECK(strcmp(why, t->why) == 0);
	}
}

static void
test_check_domain(void)
{
	static const int d256[] = { 63, 63, 63, 62, 1, 0 };
	char dom[512];
	const char *why = NULL;

	CHECK(smtp_check_domain("example.org", 0) == 0);
	CHECK(smtp_check_domain("a", 0) == 0);
	CHECK(smtp_check_domain("[192.0.2.1]", 0) == 0);
	CHECK(smtp_check_domain("[IPv6:::1]", 0) == 0);
	CHECK(smtp_check_domain("b\xc3\xbc" "cher.example", 1) == 0);
	CHECK(smtp_check_domain("b\xc3\xbc" "cher.example", 0) == -1);
	CHECK(smtp_check_domain("b\xed\xa0\x80.example", 1) == -1);
	CHECK(smtp_check_domain("example.org.", 0) == -1);
	CHECK(smtp_check_domain("", 0) == -1);
	CHECK(smtp_check_domain("a_b.example", 0) == -1);
	CHECK(smtp_check_domain("[1.2.3.4].example", 0) == -1);
	CHECK(smtp_check_domain("[IPv6:1.2.3.4]", 0) == -1);
	make_domain(dom, sizeof(dom), d256);
	CHECK(smtp_parse_helo(dom, &why) == -1 && why != NULL);
}

void
test_smtp_parse(void)
{
	test_path_table();
	test_path_limits();
	test_path_string();
	test_command_table();
	test_command_path();
	test_mail_params_table();
	test_mail_params_program();
	test_rcpt_params();
	test_helo_table();
	test_check_domain();
}
