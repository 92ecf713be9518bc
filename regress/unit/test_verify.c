/*
 * test_verify: the lmtp-recipients map's lookups and the probe's reply
 * lines (the dialogue itself runs against real servers in
 * regress/integration/test_lmtp.py).
 */
#include <string.h>

#include "regress/unit/unit.h"
#include "queue/mta.h"
#include "smtpd/verify.h"

void test_verify(void);

/* A peer's EHLO keywords, as the SMTP client reads them. */
static void
mta_ehlo_cases(void)
{
	long long size;

	CHECK(mta_ehlo_keyword("PIPELINING", &size) == MTA_EXT_PIPELINING);
	CHECK(mta_ehlo_keyword("pipelining", &size) == MTA_EXT_PIPELINING);
	CHECK(mta_ehlo_keyword("PIPELININGX", &size) == 0);
	CHECK(mta_ehlo_keyword("STARTTLS", &size) == MTA_EXT_STARTTLS);
	CHECK(mta_ehlo_keyword("SIZE 35882577", &size) == MTA_EXT_SIZE &&
	    size == 35882577);
	CHECK(mta_ehlo_keyword("SIZE", &size) == MTA_EXT_SIZE && size == 0);
	CHECK(mta_ehlo_keyword("SIZE -5", &size) == MTA_EXT_SIZE && size == 0);
	CHECK(mta_ehlo_keyword("SIZE 99999999999999999999999", &size) ==
	    MTA_EXT_SIZE && size == 0);		/* out of range: none */
	CHECK(mta_ehlo_keyword("SIZE junk", &size) == MTA_EXT_SIZE &&
	    size == 0);
	CHECK(mta_ehlo_keyword("AUTH PLAIN LOGIN", &size) ==
	    (MTA_EXT_AUTH_PLAIN | MTA_EXT_AUTH_LOGIN));
	CHECK(mta_ehlo_keyword("auth=login", &size) == MTA_EXT_AUTH_LOGIN);
	CHECK(mta_ehlo_keyword("AUTH CRAM-MD5 XPLAINX", &size) == 0);
	CHECK(mta_ehlo_keyword("AUTH GSSAPI", &size) == 0);
	CHECK(mta_ehlo_keyword("", &size) == 0);
	CHECK(mta_ehlo_keyword("X-UNKNOWN 1", &size) == 0);
}

void
test_verify(void)
{
	static const char map[] = "# lists\n"
	    "  team@lists.example.org \r\n"
	    "\n"
	    "@all.example.org\n"
	    "#gone@lists.example.org\n"
	    "last@lists.example.org";
	size_t n = strlen(map);
	int code, more;

	CHECK(verify_map_has(map, n, "team@lists.example.org"));
	CHECK(verify_map_has(map, n, "TEAM@Lists.Example.org"));
	CHECK(verify_map_has(map, n, "anyone@all.example.org"));
	CHECK(verify_map_has(map, n, "last@lists.example.org"));
	CHECK(!verify_map_has(map, n, "gone@lists.example.org"));
	CHECK(!verify_map_has(map, n, "eam@lists.example.org"));
	CHECK(!verify_map_has(map, n, "team@lists.example.org.evil"));
	CHECK(!verify_map_has(map, n, "x@sub.all.example.org"));
	CHECK(!verify_map_has(map, n, "# lists"));
	CHECK(!verify_map_has("", 0, "a@b"));
	CHECK(mta_reply_line("250-ok", 6, &code, &more) == 0 &&
	    code == 250 && more);
	CHECK(mta_reply_line("550 5.1.1 no", 12, &code, &more) == 0 &&
	    code == 550 && !more);
	CHECK(mta_reply_line("250", 3, &code, &more) == 0 && !more);
	CHECK(mta_reply_line("25", 2, &code, &more) == -1);
	CHECK(mta_reply_line("650 x", 5, &code, &more) == -1);
	CHECK(mta_reply_line("250x", 4, &code, &more) == -1);
	mta_ehlo_cases();
}
