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
}
