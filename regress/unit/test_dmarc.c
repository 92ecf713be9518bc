/*
 * test_dmarc: RFC 7489 in auth/dmarc.c, with a canned TXT table for the
 * DNS.  Each case names the section it checks: the record grammar (6.3,
 * 6.4, 6.6.3 step 6), the author domain (6.6.1), the organizational
 * domain (3.2), alignment (3.1.1, 3.1.2), discovery (6.6.3), sp= and
 * pct (6.3, 6.6.4), temperror (6.6.3 on DNS failure).
 */
#include <stdio.h>
#include <string.h>

#include "auth/authres.h"
#include "auth/dmarc.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "queue/dmarcstore.h"
#include "regress/unit/unit.h"

void test_dmarc(void);

/* ---- the canned DNS ---- */

struct zone {
	const char	*name;
	int		 status;
	const char	*rec[3];
};

static const struct zone zones[] = {
	{ "_dmarc.reject.example", DMARC_DNS_OK, { "v=DMARC1; p=reject" } },
	{ "_dmarc.quar.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=quarantine; rua=mailto:r@quar.example" } },
	{ "_dmarc.none.example", DMARC_DNS_OK, { "v=DMARC1; p=none" } },
	{ "_dmarc.sub.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=reject; sp=none" } },
	{ "_dmarc.own.sub.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=quarantine" } },
	{ "_dmarc.strict.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=reject; adkim=s; aspf=s" } },
	{ "_dmarc.half.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=reject; pct=50" } },
	{ "_dmarc.zero.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=quarantine; pct=0" } },
	{ "_dmarc.two.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=reject", "v=DMARC1; p=none" } },
	{ "_dmarc.mixed.example", DMARC_DNS_OK,
	    { "v=spf1 -all", "some text", "v=DMARC1; p=reject" } },
	{ "_dmarc.other.example", DMARC_DNS_OK, { "v=spf1 -all" } },
	{ "_dmarc.temp.example", DMARC_DNS_TEMP, { NULL } },
	{ "_dmarc.badp.example", DMARC_DNS_OK, { "v=DMARC1; p=bogus" } },
	{ "_dmarc.badprua.example", DMARC_DNS_OK,
	    { "v=DMARC1; p=bogus; rua=mailto:d@badprua.example" } },
	{ "_dmarc.co.uk", DMARC_DNS_OK, { "v=DMARC1; p=reject" } },
	{ "_dmarc.shop.co.uk", DMARC_DNS_OK,
	    { "v=DMARC1; p=reject; sp=quarantine" } },
	{ NULL, 0, { NULL } }
};

static int asked;		/* questions asked */
static char lastq[300];

static int
fake_txt(void *arg, const char *name, struct dmarc_txt *t)
{
	asked++;
	str_copy(lastq, name, sizeof(lastq));
	for (const struct zone *z = zones; z->name; z++) {
		if (strcmp(z->name, name) != 0)
			continue;
		if (z->status != DMARC_DNS_OK)
			return z->status;
		for (int i = 0; i < 3 && z->rec[i]; i++)
			t->rec[t->n++] = xstrdup(z->rec[i]);
		return DMARC_DNS_OK;
	}
	return DMARC_DNS_NONE;
}

/* Evaluate a From: header against SPF and one DKIM result. */
static void
run(const char *hdr, enum spf_result spf, const char *spfdom,
    const char *dkimd, int dkimpass, unsigned draw, struct dmarc_verdict *v)
{
	struct dmarc_from f;
	struct dmarc_policy_found found[DMARC_FROM_DOMAINS];
	struct dmarc_auth au;

	memset(&au, 0, sizeof(au));
	au.spf = spf;
	str_copy(au.spf_domain, spfdom ? spfdom : "", sizeof(au.spf_domain));
	if (dkimd) {
		au.ndkim = 1;
		str_copy(au.dkim[0].d, dkimd, sizeof(au.dkim[0].d));
		au.dkim[0].pass = dkimpass;
	}
	dmarc_from_header(&f, hdr, strlen(hdr));
	for (int i = 0; i < f.ndomains; i++)
		dmarc_discover(fake_txt, NULL, f.domain[i], &found[i]);
	dmarc_evaluate(&f, found, &au, draw, v);
}

/* ---- record grammar (6.3, 6.4) ---- */

static void
test_records(void)
{
	struct dmarc_record r;
	const char *why;

	/* 6.3: the defaults */
	CHECK(dmarc_record_parse("v=DMARC1; p=none", &r, &why) == 1);
	CHECK(r.p == DMARC_POL_NONE && r.sp == DMARC_POL_UNSET &&
	    r.pct == 100 && r.adkim == 'r' && r.aspf == 'r' &&
	    r.ri == 86400 && strcmp(r.fo, "0") == 0 &&
	    strcmp(r.rf, "afrf") == 0 && r.rua[0] == '\0');
	/* 6.3: every tag */
	CHECK(dmarc_record_parse("v=DMARC1;p=quarantine;sp=reject;np=reject;"
	    "pct=20;adkim=s;aspf=s;ri=3600;fo=1:d;rf=afrf;"
	    "rua=mailto:a@x.example,mailto:b@y.example!10m;"
	    "ruf=mailto:f@x.example", &r, &why) == 1);
	CHECK(r.p == DMARC_POL_QUARANTINE && r.sp == DMARC_POL_REJECT &&
	    r.np == DMARC_POL_REJECT && r.pct == 20 && r.adkim == 's' &&
	    r.aspf == 's' && r.ri == 3600 && strcmp(r.fo, "1:d") == 0);
	CHECK(strcmp(r.rua, "mailto:a@x.example,mailto:b@y.example!10m") == 0);
	CHECK(strcmp(r.ruf, "mailto:f@x.example") == 0);
	/* 6.4: blanks around "=" and ";", a final ";" */
	CHECK(dmarc_record_parse("v = DMARC1 ;  p = reject ; ", &r, &why) == 1);
	CHECK(r.p == DMARC_POL_REJECT);
	/* 6.4: policy words are case-insensitive */
	CHECK(dmarc_record_parse("v=DMARC1; p=REJECT", &r, &why) == 1 &&
	    r.p == DMARC_POL_REJECT);
	/* 6.6.3 step 2 / 6.4: "DMARC1" exactly, first */
	CHECK(dmarc_record_parse("v=dmarc1; p=reject", &r, &why) == 0);
	CHECK(dmarc_record_parse("p=reject; v=DMARC1", &r, &why) == 0);
	CHECK(dmarc_record_parse("v=DMARC10; p=reject", &r, &why) == 0);
	CHECK(dmarc_record_parse("v=spf1 -all", &r, &why) == 0);
	CHECK(dmarc_record_parse("", &r, &why) == 0);
	/* 6.3: unknown tags are ignored */
	CHECK(dmarc_record_parse("v=DMARC1; foo=bar; p=reject; x", &r, &why)
	    == 1 && r.p == DMARC_POL_REJECT);
	/* 6.6.3 step 6: no p=, or a bad one, and no rua: not applied */
	CHECK(dmarc_record_parse("v=DMARC1", &r, &why) == -1);
	CHECK(dmarc_record_parse("v=DMARC1; p=bogus", &r, &why) == -1);
	CHECK(dmarc_record_parse("v=DMARC1; p=", &r, &why) == -1);
	/* 6.6.3 step 6: a bad sp= is treated as a bad p= */
	CHECK(dmarc_record_parse("v=DMARC1; p=reject; sp=maybe", &r, &why)
	    == -1);
	/* 6.6.3 step 6: ...but with a valid rua, p=none */
	CHECK(dmarc_record_parse("v=DMARC1; rua=mailto:d@x.example", &r, &why)
	    == 1 && r.p == DMARC_POL_NONE && r.p_fallback);
	CHECK(dmarc_record_parse("v=DMARC1; p=x; rua=mailto:d@x.example", &r,
	    &why) == 1 && r.p == DMARC_POL_NONE && r.p_fallback);
	/* 6.2: an invalid URI is not a valid rua */
	CHECK(dmarc_record_parse("v=DMARC1; p=x; rua=not a uri", &r, &why)
	    == -1);
	CHECK(dmarc_record_parse("v=DMARC1; p=x; rua=mailto:a@b!x", &r, &why)
	    == -1);
	/* 6.3: bad values of other tags take the default */
	CHECK(dmarc_record_parse("v=DMARC1; p=reject; pct=101; adkim=x; "
	    "aspf=; ri=abc; fo=2", &r, &why) == 1);
	CHECK(r.pct == 100 && r.adkim == 'r' && r.aspf == 'r' &&
	    r.ri == 86400 && strcmp(r.fo, "0") == 0);
	CHECK(dmarc_record_parse("v=DMARC1; p=reject; pct=-5", &r, &why) == 1
	    && r.pct == 100);
	/* 6.3: pct=0 is valid */
	CHECK(dmarc_record_parse("v=DMARC1; p=reject; pct=0", &r, &why) == 1
	    && r.pct == 0);
	/*
	 * RFC 7489 6.3 takes DKIM's tag-list (RFC 6376 3.2): a fold (CRLF
	 * then a blank) may stand between a tag's name and its "=".
	 */
	CHECK(dmarc_record_parse("v=DMARC1; p\r\n =reject", &r, &why) == 1 &&
	    r.p == DMARC_POL_REJECT);
	/* repeated tag: the first counts */
	CHECK(dmarc_record_parse("v=DMARC1; p=none; p=reject", &r, &why) == 1
	    && r.p == DMARC_POL_NONE);
}

/* ---- the author domain (6.6.1) ---- */

static void
test_from(void)
{
	struct dmarc_from f;

#define FROM(h)	dmarc_from_header(&f, h, strlen(h))
	/* 6.6.1: one From: with one address */
	CHECK(FROM("From: Alice <alice@Example.ORG>\r\nTo: b@c.example\r\n"
	    "\r\nbody From: x@y.example\r\n") == DMARC_FROM_OK);
	CHECK(f.ndomains == 1 && strcmp(f.domain[0], "example.org") == 0);
	/* 6.6.1: a bare addr-spec, a folded field, a comment */
	CHECK(FROM("Subject: x\r\nFrom:\r\n  (the boss)\r\n\tboss@corp.example"
	    " (really)\r\n\r\n") == DMARC_FROM_OK &&
	    strcmp(f.domain[0], "corp.example") == 0);
	/* 6.6.1: a quoted display name holding another address */
	CHECK(FROM("From: \"ceo@bank.example\" <x@evil.example>\r\n\r\n") ==
	    DMARC_FROM_OK && f.ndomains == 1 &&
	    strcmp(f.domain[0], "evil.example") == 0);
	/* 6.6.1: several addresses, two domains: both evaluated */
	CHECK(FROM("From: a@one.example, B <b@two.example>, c@one.example\r\n"
	    "\r\n") == DMARC_FROM_OK && f.ndomains == 2 &&
	    strcmp(f.domain[1], "two.example") == 0);
	/* 6.6.1: several From: fields: never passed silently */
	CHECK(FROM("From: a@one.example\r\nFrom: b@two.example\r\n\r\n") ==
	    DMARC_FROM_MULTIPLE && f.ndomains == 0);
	/* 6.6.1: no From: at all */
	CHECK(FROM("Subject: hi\r\nTo: x@y.example\r\n\r\n") ==
	    DMARC_FROM_NONE);
	/* 6.6.1: a From: in the body is not a field */
	CHECK(FROM("Subject: hi\r\n\r\nFrom: a@b.example\r\n") ==
	    DMARC_FROM_NONE);
	/* 6.6.1: unparsable ones */
	CHECK(FROM("From: \r\n\r\n") == DMARC_FROM_BAD);
	CHECK(FROM("From: not an address\r\n\r\n") == DMARC_FROM_BAD);
	CHECK(FROM("From: a@b.example@c.example\r\n\r\n") == DMARC_FROM_BAD);
	CHECK(FROM("From: undisclosed-recipients:;\r\n\r\n") ==
	    DMARC_FROM_BAD);
	CHECK(FROM("From: <a@b.example> <c@d.example>\r\n\r\n") ==
	    DMARC_FROM_BAD);
	CHECK(FROM("From: A <a@b.example\r\n\r\n") == DMARC_FROM_BAD);
	CHECK(FROM("From: a@[192.0.2.1]\r\n\r\n") == DMARC_FROM_BAD);
	CHECK(FROM("From: \"unclosed <a@b.example>\r\n\r\n") ==
	    DMARC_FROM_BAD);
	CHECK(FROM("From: a@localhost\r\n\r\n") == DMARC_FROM_BAD);
	/* 6.6.1: a U-label domain is compared as its A-label */
	CHECK(FROM("From: x@b\xc3\xbc" "cher.example\r\n\r\n") ==
	    DMARC_FROM_OK &&
	    strcmp(f.domain[0], "xn--bcher-kva.example") == 0);
	/* obs-optional (RFC 5322 4.5): blanks before the colon */
	CHECK(FROM("FROM : a@b.example\r\n\r\n") == DMARC_FROM_OK);
	/* From-like names are other fields */
	CHECK(FROM("From-X: a@b.example\r\nFromage: c\r\n\r\n") ==
	    DMARC_FROM_NONE);
	/* a quoted local part */
	CHECK(FROM("From: \"a b\"@q.example\r\n\r\n") == DMARC_FROM_OK &&
	    strcmp(f.domain[0], "q.example") == 0);
	/* more domains than are evaluated: unparsable, not ignored */
	CHECK(FROM("From: a@d1.example, a@d2.example, a@d3.example, "
	    "a@d4.example, a@d5.example, a@d6.example, a@d7.example, "
	    "a@d8.example, a@d9.example\r\n\r\n") == DMARC_FROM_BAD);
	/* LF line ends (ternctl check on a Unix file) */
	CHECK(FROM("To: x@y.example\nFrom: a@lf.example\n\n") ==
	    DMARC_FROM_OK && strcmp(f.domain[0], "lf.example") == 0);
#undef FROM
}

/* ---- organizational domain (3.2) and alignment (3.1) ---- */

static void
test_align(void)
{
	char org[256];

	/* 3.2: one label below the public suffix */
	dmarc_org_domain("mail.a.b.example.com", org, sizeof(org));
	CHECK(strcmp(org, "example.com") == 0);
	dmarc_org_domain("news.shop.co.uk", org, sizeof(org));
	CHECK(strcmp(org, "shop.co.uk") == 0);
	/* 3.2: a public suffix is its own */
	dmarc_org_domain("co.uk", org, sizeof(org));
	CHECK(strcmp(org, "co.uk") == 0);
	/* 3.2: names outside the list: the default "*" rule */
	dmarc_org_domain("x.y.mail.test", org, sizeof(org));
	CHECK(strcmp(org, "mail.test") == 0);
	/* 3.1.1 relaxed: same organizational domain */
	CHECK(dmarc_aligned("example.com", "mail.example.com", 'r'));
	CHECK(dmarc_aligned("a.example.com", "b.example.com", 'r'));
	/* 3.1.1 strict: exact match only */
	CHECK(!dmarc_aligned("example.com", "mail.example.com", 's'));
	CHECK(dmarc_aligned("Example.COM", "example.com", 's'));
	/* 3.1: different organizational domains never align */
	CHECK(!dmarc_aligned("example.com", "example.net", 'r'));
	/* 3.2: two registrations under one public suffix are different */
	CHECK(!dmarc_aligned("a.co.uk", "b.co.uk", 'r'));
	CHECK(!dmarc_aligned("example.com", "", 'r'));
}

/* ---- discovery (6.6.3) and evaluation (6.6.2, 6.6.4) ---- */

static void
test_discovery(void)
{
	struct dmarc_policy_found pf;

	/* 6.6.3 step 1: the From domain's own record */
	asked = 0;
	dmarc_discover(fake_txt, NULL, "reject.example", &pf);
	CHECK(pf.found == DMARC_FOUND_RECORD && !pf.at_org && asked == 1);
	/* 6.6.3 step 3: nothing there, the org domain's */
	asked = 0;
	dmarc_discover(fake_txt, NULL, "mail.reject.example", &pf);
	CHECK(pf.found == DMARC_FOUND_RECORD && pf.at_org && asked == 2 &&
	    strcmp(lastq, "_dmarc.reject.example") == 0);
	/* 6.6.3 step 5: several records: no DMARC (and no fallback) */
	asked = 0;
	dmarc_discover(fake_txt, NULL, "two.example", &pf);
	CHECK(pf.found == DMARC_FOUND_NONE && asked == 1);
	/* 6.6.3 step 2: other TXT records are discarded */
	dmarc_discover(fake_txt, NULL, "mixed.example", &pf);
	CHECK(pf.found == DMARC_FOUND_RECORD &&
	    pf.rec.p == DMARC_POL_REJECT);
	dmarc_discover(fake_txt, NULL, "other.example", &pf);
	CHECK(pf.found == DMARC_FOUND_NONE);
	/* 6.6.3: DNS failure is temperror, not none */
	dmarc_discover(fake_txt, NULL, "temp.example", &pf);
	CHECK(pf.found == DMARC_FOUND_TEMP);
	dmarc_discover(fake_txt, NULL, "x.temp.example", &pf);
	CHECK(pf.found == DMARC_FOUND_TEMP);
	/* 6.6.3 step 6: bad p= without rua: no DMARC; with rua: none */
	dmarc_discover(fake_txt, NULL, "badp.example", &pf);
	CHECK(pf.found == DMARC_FOUND_NONE);
	dmarc_discover(fake_txt, NULL, "badprua.example", &pf);
	CHECK(pf.found == DMARC_FOUND_RECORD && pf.rec.p_fallback);
	/* 3.2 / 6.6.3: never the public suffix's record */
	dmarc_discover(fake_txt, NULL, "nopolicy.co.uk", &pf);
	CHECK(pf.found == DMARC_FOUND_NONE);
}

static void
test_evaluate(void)
{
	struct dmarc_verdict v;

	/* 6.6.2: no SPF or DKIM pass, p=reject: reject */
	run("From: a@reject.example\r\n\r\n", SPF_FAIL, "reject.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL &&
	    v.disposition == DMARC_POL_REJECT &&
	    strcmp(v.from_domain, "reject.example") == 0);
	/* 3.1.2: aligned SPF pass passes */
	run("From: a@reject.example\r\n\r\n", SPF_PASS, "reject.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_PASS && v.spf_aligned &&
	    v.disposition == DMARC_POL_NONE);
	/* 3.1.2 relaxed: a subdomain's SPF pass aligns */
	run("From: a@reject.example\r\n\r\n", SPF_PASS,
	    "bounces.reject.example", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_PASS);
	/* 3.1.2: an unaligned SPF pass does not */
	run("From: a@reject.example\r\n\r\n", SPF_PASS, "esp.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL && !v.spf_aligned &&
	    v.disposition == DMARC_POL_REJECT);
	/* 3.1.2: softfail is no pass */
	run("From: a@reject.example\r\n\r\n", SPF_SOFTFAIL, "reject.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL);
	/* 3.1.1: an aligned DKIM pass passes despite an SPF fail */
	run("From: a@reject.example\r\n\r\n", SPF_FAIL, "esp.example",
	    "reject.example", 1, 0, &v);
	CHECK(v.result == DMARC_RES_PASS && v.dkim_aligned &&
	    !v.spf_aligned);
	/* 3.1.1: a failed signature counts for nothing */
	run("From: a@reject.example\r\n\r\n", SPF_NONE, "", "reject.example",
	    0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL);
	/* 3.1.1 strict (adkim=s): d= of a subdomain is not aligned */
	run("From: a@strict.example\r\n\r\n", SPF_NONE, "",
	    "mail.strict.example", 1, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL && !v.dkim_aligned);
	/* 3.1.2 strict (aspf=s): nor the MAIL FROM of a subdomain */
	run("From: a@strict.example\r\n\r\n", SPF_PASS,
	    "bounce.strict.example", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL);
	/* 3.1.2 strict: the exact domain passes */
	run("From: a@strict.example\r\n\r\n", SPF_PASS, "strict.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_PASS);
	/* 6.3 p=quarantine */
	run("From: a@quar.example\r\n\r\n", SPF_FAIL, "quar.example", NULL, 0,
	    0, &v);
	CHECK(v.disposition == DMARC_POL_QUARANTINE);
	/* 6.3 p=none: fail, nothing done */
	run("From: a@none.example\r\n\r\n", SPF_FAIL, "none.example", NULL, 0,
	    0, &v);
	CHECK(v.result == DMARC_RES_FAIL && v.disposition == DMARC_POL_NONE);
	/* 6.3 sp=: a subdomain found through the org record gets sp */
	run("From: a@x.sub.example\r\n\r\n", SPF_FAIL, "x.sub.example",
	    NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL && v.disposition == DMARC_POL_NONE &&
	    v.policy == DMARC_POL_NONE &&
	    strcmp(v.policy_domain, "sub.example") == 0);
	/* 6.3 sp=: ...the org domain itself gets p */
	run("From: a@sub.example\r\n\r\n", SPF_FAIL, "sub.example", NULL, 0, 0,
	    &v);
	CHECK(v.disposition == DMARC_POL_REJECT);
	/* 6.6.3: a subdomain with its own record gets that record's p */
	run("From: a@own.sub.example\r\n\r\n", SPF_FAIL, "x.example", NULL, 0,
	    0, &v);
	CHECK(v.disposition == DMARC_POL_QUARANTINE &&
	    strcmp(v.policy_domain, "own.sub.example") == 0);
	/* 6.3: no sp=: subdomains get p (org fallback) */
	run("From: a@deep.er.reject.example\r\n\r\n", SPF_NONE, "", NULL, 0, 0,
	    &v);
	CHECK(v.disposition == DMARC_POL_REJECT);
	/* 6.3 sp= under a multi-label public suffix */
	run("From: a@news.shop.co.uk\r\n\r\n", SPF_NONE, "", NULL, 0, 0, &v);
	CHECK(v.disposition == DMARC_POL_QUARANTINE);
	/* 6.6.4 pct=50: inside the sample, reject */
	run("From: a@half.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 49, &v);
	CHECK(v.disposition == DMARC_POL_REJECT && !v.sampled_out);
	/* 6.6.4 pct=50: outside it, reject becomes quarantine */
	run("From: a@half.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 50, &v);
	CHECK(v.disposition == DMARC_POL_QUARANTINE && v.sampled_out &&
	    v.result == DMARC_RES_FAIL);
	/* 6.6.4 pct=0: quarantine becomes none, for every draw */
	run("From: a@zero.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 0, &v);
	CHECK(v.disposition == DMARC_POL_NONE && v.sampled_out);
	/* 6.6.4: pct=100 (default) applies to every draw */
	run("From: a@reject.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 99, &v);
	CHECK(v.disposition == DMARC_POL_REJECT);
	/* 6.6.3: no policy: none, accepted */
	run("From: a@unknown.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_NONE && v.disposition == DMARC_POL_NONE &&
	    !v.has_rec);
	/* 6.6.3: temperror on DNS failure */
	run("From: a@temp.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_TEMPERROR);
	/* 6.6.1: several From: fields: permerror, refused */
	run("From: a@none.example\r\nFrom: b@none.example\r\n\r\n", SPF_PASS,
	    "none.example", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_PERMERROR &&
	    v.disposition == DMARC_POL_REJECT);
	/* 6.6.1: no From:: permerror, refused */
	run("Subject: x\r\n\r\n", SPF_PASS, "none.example", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_PERMERROR &&
	    v.disposition == DMARC_POL_REJECT);
	/* 6.6.1: several domains in one From:: the strictest failing */
	run("From: a@none.example, b@reject.example\r\n\r\n", SPF_PASS,
	    "none.example", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL &&
	    v.disposition == DMARC_POL_REJECT &&
	    strcmp(v.from_domain, "reject.example") == 0);
	/* 6.6.1: ...and both aligned with their own DKIM: pass */
	{
		struct dmarc_from f;
		struct dmarc_policy_found found[2];
		struct dmarc_auth au;
		const char *h = "From: a@quar.example, b@reject.example\r\n\r\n";

		memset(&au, 0, sizeof(au));
		au.ndkim = 2;
		str_copy(au.dkim[0].d, "quar.example", sizeof(au.dkim[0].d));
		str_copy(au.dkim[1].d, "reject.example", sizeof(au.dkim[1].d));
		au.dkim[0].pass = au.dkim[1].pass = 1;
		dmarc_from_header(&f, h, strlen(h));
		dmarc_discover(fake_txt, NULL, f.domain[0], &found[0]);
		dmarc_discover(fake_txt, NULL, f.domain[1], &found[1]);
		dmarc_evaluate(&f, found, &au, 0, &v);
		CHECK(v.result == DMARC_RES_PASS);
	}
	/* 6.6.3 step 6: a bad p= with rua: p=none, monitored */
	run("From: a@badprua.example\r\n\r\n", SPF_FAIL, "", NULL, 0, 0, &v);
	CHECK(v.result == DMARC_RES_FAIL && v.disposition == DMARC_POL_NONE);
}

/* 11.2, RFC 8601: the Authentication-Results part */
static void
test_ar(void)
{
	struct dmarc_verdict v;
	struct buf b;

	buf_init(&b);
	run("From: a@reject.example\r\n\r\n", SPF_FAIL, "reject.example",
	    NULL, 0, 0, &v);
	dmarc_ar_part(&b, &v);
	CHECK(strstr(b.data, "dmarc=fail") == b.data);
	CHECK(strstr(b.data, "header.from=reject.example") != NULL);
	CHECK(strstr(b.data, "policy.dmarc=reject") != NULL);
	buf_free(&b);
}

/* RFC 8601: the field fits the room reserved before the verdict, with
   and without a quarantine's mark after it. */
static void
test_ar_room(void)
{
	struct authres ar;
	struct buf b;
	size_t room;

	memset(&ar, 0, sizeof(ar));
	ar.extra[0].room = 400;		/* as the MX reserves them */
	ar.markroom = AUTHRES_MARK_MAX - 1;
	str_copy(ar.spf, "spf=pass smtp.mailfrom=a@x.example", sizeof(ar.spf));
	room = authres_room(&ar, "mx.example.test");
	CHECK(room > 0);
	buf_init(&b);
	str_copy(ar.extra[0].text, "dmarc=pass header.from=x.example",
	    sizeof(ar.extra[0].text));
	CHECK(authres_format(&b, "mx.example.test", &ar, room) == 0 &&
	    b.len == room);
	CHECK(strstr(b.data, "\tdmarc=pass header.from=x.example ") != NULL);
	buf_reset(&b);
	str_copy(ar.mark, "X-Tern-DMARC: quarantine; header.from=x.example",
	    sizeof(ar.mark));
	CHECK(authres_format(&b, "mx.example.test", &ar, room) == 0 &&
	    b.len == room);
	CHECK(b.len > 51 && strcmp(b.data + b.len - 51,
	    "\r\nX-Tern-DMARC: quarantine; header.from=x.example\r\n") == 0);
	/* the longest entry and mark still fit */
	memset(ar.extra[0].text, 'd', 400);
	memset(ar.mark, 'm', sizeof(ar.mark) - 1);
	buf_reset(&b);
	CHECK(authres_format(&b, "mx.example.test", &ar, room) == 0 &&
	    b.len == room);
	/* every line within RFC 5322's 998 */
	for (char *p = b.data, *e; (e = strstr(p, "\r\n")) != NULL; p = e + 2)
		CHECK(e - p <= 998);
	buf_free(&b);
}

static void
store_count(const void *p, size_t len, void *arg)
{
	(*(int *)arg)++;
	CHECK(dmarc_store_check(p, len) == 0);
}

/* RFC 7489 7.2 needs every evaluation: the store's record and file. */
static void
test_store(void)
{
	struct dmarc_verdict v;
	struct dmarc_auth au;
	struct buf one, file;
	int n = 0, bad;

	run("From: a@reject.example\r\n\r\n", SPF_SOFTFAIL, "reject.example",
	    NULL, 0, 0, &v);
	memset(&au, 0, sizeof(au));
	au.spf = SPF_SOFTFAIL;
	au.ndkim = 1;
	str_copy(au.dkim[0].d, "other.example", sizeof(au.dkim[0].d));
	buf_init(&one);
	buf_init(&file);
	dmarc_store_encode(&one, 1700000000, "192.0.2.7", "reject.example",
	    &au, &v, DMARC_POL_REJECT, "");
	CHECK(dmarc_store_check(one.data, one.len) == 0);
	dmarcstore_frame(&file, one.data, one.len);
	dmarcstore_frame(&file, one.data, one.len);
	CHECK(dmarcstore_walk(file.data, file.len, &bad, store_count, &n) == 2
	    && n == 2 && !bad);
	/* a torn last entry: the first is read, the walk says so */
	n = 0;
	CHECK(dmarcstore_walk(file.data, file.len - 3, &bad, store_count, &n)
	    == 1 && bad);
	/* a damaged byte: the CRC stops it */
	file.data[20] ^= 1;
	n = 0;
	CHECK(dmarcstore_walk(file.data, file.len, &bad, store_count, &n) == 0
	    && bad);
	/* malformed payloads are refused */
	CHECK(dmarc_store_check(one.data, one.len - 1) == -1);
	buf_reset(&one);
	rec_put_str(&one, DS_IP, "192.0.2.7");
	CHECK(dmarc_store_check(one.data, one.len) == -1);	/* no time */
	rec_put_str(&one, 99, "x");
	CHECK(dmarc_store_check(one.data, one.len) == -1);
	buf_free(&one);
	buf_free(&file);
}

void
test_dmarc(void)
{
	CHECK(dmarc_init(NULL) == 0);
	test_records();
	test_from();
	test_align();
	test_discovery();
	test_evaluate();
	test_ar();
	test_ar_room();
	test_store();
}
