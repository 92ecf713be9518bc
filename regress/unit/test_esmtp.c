/*
 * test_esmtp: the DSN parameters (NOTIFY, RET, ENVID, ORCPT), xtext and
 * the BDAT argument, with tables of accepted and refused inputs.
 */
#include <string.h>

#include "lib/esmtp.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_esmtp(void);

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

static void
test_xtext(void)
{
	static const struct { const char *in; int len; const char *out; } t[] = {
		{ "abc", 3, "abc" },
		{ "a+2Bb", 3, "a+b" },
		{ "a+3db", 3, "a=b" },
		{ "+20", 1, " " },
		{ "", 0, "" },
		{ "a=b", -1, NULL },
		{ "a b", -1, NULL },
		{ "a+2", -1, NULL },
		{ "a+", -1, NULL },
		{ "a+G0", -1, NULL },
		{ "a+00", -1, NULL },	/* NUL */
		{ "a+0D+0A", -1, NULL },	/* CRLF */
		{ "a+C3", -1, NULL },	/* 8-bit */
		{ "a\xc3\xa9", -1, NULL },
	};
	char out[16];
	size_t i;
	struct buf b;

	for (i = 0; i < NELEM(t); i++) {
		int r = esmtp_xtext_decode(t[i].in, strlen(t[i].in), out,
		    sizeof(out));

		CHECK(r == t[i].len);
		if (r >= 0)
			CHECK(strcmp(out, t[i].out) == 0);
	}
	CHECK(esmtp_xtext_decode("abcdef", 6, out, 6) == -1);	/* no room */
	buf_init(&b);
	esmtp_xtext_encode(&b, "a+b=c d\x01");
	CHECK(strcmp(b.data, "a+2Bb+3Dc+20d+01") == 0);
	buf_free(&b);
}

static void
test_notify_ret_envid(void)
{
	static const struct { const char *in; int ok; unsigned bits; } t[] = {
		{ "NEVER", 1, DSN_NOTIFY_NEVER },
		{ "success,failure", 1, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE },
		{ "DELAY,SUCCESS,FAILURE", 1, DSN_NOTIFY_DELAY |
		    DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE },
		{ "NEVER,SUCCESS", 0, 0 },
		{ "SUCCESS,SUCCESS", 0, 0 },
		{ "SUCCESS,", 0, 0 },
		{ ",SUCCESS", 0, 0 },
		{ "", 0, 0 },
		{ "SOMETIMES", 0, 0 },
	};
	char env[DSN_ENVID_MAX + 1], big[DSN_ENVID_MAX + 2];
	const char *why;
	unsigned bits;
	size_t i;
	int ret;

	for (i = 0; i < NELEM(t); i++) {
		bits = 0;
		CHECK((esmtp_notify(t[i].in, strlen(t[i].in), &bits, &why) ==
		    0) == t[i].ok);
		if (t[i].ok)
			CHECK(bits == t[i].bits);
	}
	CHECK(esmtp_ret("hdrs", 4, &ret, &why) == 0 && ret == DSN_RET_HDRS);
	CHECK(esmtp_ret("FULL", 4, &ret, &why) == 0 && ret == DSN_RET_FULL);
	CHECK(esmtp_ret("FUL", 3, &ret, &why) == -1);
	CHECK(esmtp_ret(NULL, 0, &ret, &why) == -1);
	CHECK(esmtp_envid("QQ+2B1", 6, env, sizeof(env), &why) == 0 &&
	    strcmp(env, "QQ+1") == 0);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(esmtp_envid(big, DSN_ENVID_MAX, env, sizeof(env), &why) == 0);
	CHECK(esmtp_envid(big, DSN_ENVID_MAX + 1, env, sizeof(env), &why) ==
	    -1);
	CHECK(esmtp_envid("", 0, env, sizeof(env), &why) == -1);
}

static void
test_rcpt(void)
{
	struct dsn_rcpt_params rp;
	const char *why;
	struct buf b;

	CHECK(esmtp_rcpt("", &rp, &why) == 0 && rp.notify == 0 &&
	    rp.orcpt[0] == '\0');
	CHECK(esmtp_rcpt(" NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@example.org",
	    &rp, &why) == 0);
	CHECK(rp.notify == (DSN_NOTIFY_SUCCESS | DSN_NOTIFY_DELAY));
	CHECK(strcmp(rp.orcpt, "rfc822;a+b@example.org") == 0);
	CHECK(esmtp_rcpt("NOTIFY=NEVER NOTIFY=NEVER", &rp, &why) == -1);
	CHECK(esmtp_rcpt("ORCPT=a@b", &rp, &why) == -1);
	CHECK(esmtp_rcpt("ORCPT=;a@b", &rp, &why) == -1);
	CHECK(esmtp_rcpt("ORCPT=rfc822;", &rp, &why) == -1);
	CHECK(esmtp_rcpt("ORCPT=rfc822;a+0Db", &rp, &why) == -1);
	CHECK(esmtp_rcpt("NOTIFY", &rp, &why) == -1);
	CHECK(esmtp_rcpt("FOO=1", &rp, &why) == -2);
	buf_init(&b);
	esmtp_rcpt_print(&b, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE,
	    "rfc822;a+b@example.org");
	CHECK(strcmp(b.data, " NOTIFY=SUCCESS,FAILURE "
	    "ORCPT=rfc822;a+2Bb@example.org") == 0);
	buf_free(&b);
}

static void
test_bdat(void)
{
	static const struct {
		const char *in; int r; uint64_t size; int last;
	} t[] = {
		{ "0", 0, 0, 0 },
		{ "0 LAST", 0, 0, 1 },
		{ "123 last", 0, 123, 1 },
		{ "999999999999999999", 0, 999999999999999999ULL, 0 },
		{ "9999999999999999999", -1, 0, 0 },
		{ "", -1, 0, 0 },
		{ "-1", -1, 0, 0 },
		{ " 5", -1, 0, 0 },
		{ "5x", -1, 0, 0 },
		{ "0x10", -1, 0, 0 },
		{ "5 LASTX", -2, 5, 0 },
		{ "5  LAST", -2, 5, 0 },
		{ "5 ", -2, 5, 0 },
	};
	uint64_t size;
	const char *why;
	size_t i;
	int last, r;

	for (i = 0; i < NELEM(t); i++) {
		size = 77;
		r = esmtp_bdat(t[i].in, &size, &last, &why);
		CHECK(r == t[i].r);
		if (r != -1) {
			CHECK(size == t[i].size);
			CHECK(last == t[i].last);
		}
	}
}

void
test_esmtp(void)
{
	test_xtext();
	test_notify_ret_envid();
	test_rcpt();
	test_bdat();
}
