/*
 * test_dnsrec: the record checks of ternctl dns --check (auth/dnsrec.c):
 * DKIM key records (keys made here by dkim_key_generate, then broken),
 * DMARC records, and the SPF lookup count with its include:/redirect=
 * targets.  Their tag-lists are test_taglist's.
 */
#include <stdio.h>
#include <string.h>

#include "auth/dkim.h"
#include "auth/dkimverify.h"
#include "auth/dnsrec.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_dnsrec(void);

static int
dkim_why(const char *txt, const char *want)
{
	struct dnsrec_dkim d;
	const char *why = "";
	int r = dnsrec_dkim_parse(txt, &d, &why);

	dnsrec_dkim_free(&d);
	return r == -1 && strcmp(why, want) == 0;
}

static void
test_dkim_key(int alg, int bits)
{
	struct buf pem, txt, b;
	struct dnsrec_dkim d;
	const char *why, *p;

	buf_init(&pem);
	buf_init(&txt);
	buf_init(&b);
	CHECK(dkim_key_generate(alg, &pem, &txt) == 0);
	CHECK(dnsrec_dkim_parse(txt.data, &d, &why) == 0);
	CHECK(d.alg == alg && d.bits == bits && !d.revoked && !d.testing);
	p = strstr(txt.data, "p=") + 2;
	CHECK(strcmp(d.p, p) == 0);
	dnsrec_dkim_free(&d);
	/* blanks inside p= (as a folded zone-file string gives) are fine */
	buf_printf(&b, "v=DKIM1; t=y:s; k=%s; p=%.*s \t %s", alg ==
	    DKIM_ALG_RSA ? "rsa" : "ed25519", 20, p, p + 20);
	CHECK(dnsrec_dkim_parse(b.data, &d, &why) == 0);
	CHECK(d.testing && d.bits == bits && strcmp(d.p, p) == 0);
	dnsrec_dkim_free(&d);
	/* the key under the wrong k= */
	buf_reset(&b);
	buf_printf(&b, "k=%s; p=%s", alg == DKIM_ALG_RSA ? "ed25519" : "rsa",
	    p);
	CHECK(dnsrec_dkim_parse(b.data, &d, &why) == -1);
	dnsrec_dkim_free(&d);
	buf_free(&pem);
	buf_free(&txt);
	buf_free(&b);
}

/* The check and the verifier take and refuse the same key records. */
static void
test_dkim_agree(void)
{
	static const char *const recs[] = {
		"v=DKIM1; k=rsa;\np=", "v=DKIM1; k=rsa\r; p=", "p=\r\n",
		"v=DKIM1;\r\n k=rsa;\r\n\tp=", "v=DKIM1; p=; p=", "k=rsa; ;p=",
		"v=DKIM1; a_very_long_unknown_tag_name_of_40_chars=x; p=",
		"v=DKIM1; k=rsa; p=;", "v=DKIM1; k=rsa; p= ; ", "", ";",
		"v=DKIM1; n=caf\xc3\xa9; p=", "v=DKIM1; P=", "P=; p=",
	};
	struct dnsrec_dkim d;
	struct dkim_keyrec k;
	const char *why;

	for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
		int a = dnsrec_dkim_parse(recs[i], &d, &why);

		dnsrec_dkim_free(&d);
		CHECK(a == dkim_keyrec_parse(recs[i], strlen(recs[i]), &k,
		    &why));
	}
}

static void
test_dkim(void)
{
	/* RSA-512 SubjectPublicKeyInfo (openssl genpkey, pkey -pubout) */
	static const char *const short_rsa = "v=DKIM1; p=MFwwDQYJKoZIhvcNAQEBBQ"
	    "ADSwAwSAJBAMKf72/sn0OkBuXhwmGp+ehW9snjE9c+BR3g7ZaSI8SvVXaME9PzTR"
	    "AojHpo2HE4nPdTXD/Oh4U3kGK5KUP5xZUCAwEAAQ==";
	struct dnsrec_dkim d;
	const char *why;

	test_dkim_key(DKIM_ALG_RSA, 2048);
	test_dkim_key(DKIM_ALG_ED25519, 256);
	CHECK(dnsrec_dkim_parse(short_rsa, &d, &why) == 0 && d.bits == 512);
	dnsrec_dkim_free(&d);
	CHECK(dnsrec_dkim_parse("v=DKIM1; k=rsa; p=", &d, &why) == 0 &&
	    d.revoked);
	dnsrec_dkim_free(&d);
	CHECK(dkim_why("k=rsa; v=DKIM1; p=", "v= is not DKIM1 or not first"));
	CHECK(dkim_why("v=DKIM2; p=", "v= is not DKIM1 or not first"));
	CHECK(dkim_why("v=DKIM1; k=dsa; p=", "unknown key type k="));
	CHECK(dkim_why("v=DKIM1; h=sha1; p=", "h= does not allow sha256"));
	CHECK(dkim_why("v=DKIM1; s=other; p=", "s= does not allow email"));
	CHECK(dkim_why("v=DKIM1; k=rsa", "no p= tag"));
	CHECK(dkim_why("v=DKIM1; p=abc", "p= is not base64"));
	CHECK(dkim_why("v=DKIM1; p=ab!d", "p= is not base64"));
	CHECK(dkim_why("v=DKIM1; p=a=bc", "p= is not base64"));
	CHECK(dkim_why("v=DKIM1; p=AAAA", "p= is not an RSA public key"));
	CHECK(dkim_why("v=DKIM1; k=ed25519; p=AAAA",
	    "p= is not an Ed25519 public key"));
	CHECK(dnsrec_dkim_parse("v=DKIM1; h=sha1:sha256; s=email; p=",
	    &d, &why) == 0);
	dnsrec_dkim_free(&d);
	/*
	 * RFC 6376 3.2: a tag name has no length limit (an unknown tag is
	 * ignored, whatever its length), and the only line break a tag-list
	 * may hold is a fold (CRLF then a blank): a bare LF or CR is refused,
	 * as the verifier (auth/dkimverify.c) refuses it.
	 */
	CHECK(dnsrec_dkim_parse("v=DKIM1; a_very_long_unknown_tag_name_of_40"
	    "_chars=x; p=", &d, &why) == 0 && d.revoked);
	dnsrec_dkim_free(&d);
	CHECK(dnsrec_dkim_parse("v=DKIM1;\r\n k=rsa;\r\n\tp=", &d, &why) ==
	    0 && d.revoked);
	dnsrec_dkim_free(&d);
	CHECK(dnsrec_dkim_parse("v=DKIM1; k=rsa;\np=", &d, &why) == -1);
	dnsrec_dkim_free(&d);
	CHECK(dnsrec_dkim_parse("v=DKIM1; k=rsa\r; p=", &d, &why) == -1);
	dnsrec_dkim_free(&d);
	CHECK(dnsrec_dkim_parse("v=DKIM1; k=rsa; p=\r\n", &d, &why) == -1);
	dnsrec_dkim_free(&d);
	/* tag names are case-sensitive in DKIM: P= is not p= */
	CHECK(dkim_why("v=DKIM1; P=", "no p= tag"));
	test_dkim_agree();
}

static int
dmarc_why(const char *txt, const char *want)
{
	struct dnsrec_dmarc m;
	const char *why = "";

	return dnsrec_dmarc_parse(txt, &m, &why) == -1 &&
	    strcmp(why, want) == 0;
}

static void
test_dmarc(void)
{
	struct dnsrec_dmarc m;
	const char *why;

	CHECK(dnsrec_is_dmarc("v=DMARC1; p=none"));
	CHECK(dnsrec_is_dmarc(" v = DMARC1 ;p=none"));
	CHECK(dnsrec_is_dmarc("v=DMARC1"));
	CHECK(!dnsrec_is_dmarc("v=DMARC10; p=none"));
	CHECK(!dnsrec_is_dmarc("p=none; v=DMARC1"));
	CHECK(!dnsrec_is_dmarc("v=dmarc1; p=none"));
	CHECK(dnsrec_dmarc_parse("v=DMARC1; p=none; rua=mailto:a@b.example",
	    &m, &why) == 0 && strcmp(m.p, "none") == 0 && m.sp[0] == '\0' &&
	    m.pct == 100 && m.nrua == 1);
	CHECK(dnsrec_dmarc_parse("v=DMARC1;p=Reject;sp=quarantine;pct=20;"
	    "rua=mailto:a@b.example!10m, mailto:c@d.example;ruf=mailto:e@f."
	    "example;adkim=s;aspf=r;ri=86400;fo=1;x=unknown", &m, &why) == 0 &&
	    strcmp(m.p, "reject") == 0 && strcmp(m.sp, "quarantine") == 0 &&
	    m.pct == 20 && m.nrua == 2);
	CHECK(dmarc_why("p=none", "does not start with v=DMARC1"));
	CHECK(dmarc_why("v=DMARC1", "no p= tag"));
	CHECK(dmarc_why("v=DMARC1; rua=mailto:a@b.example", "no p= tag"));
	CHECK(dmarc_why("v=DMARC1; p=maybe",
	    "p= is not none, quarantine or reject"));
	CHECK(dmarc_why("v=DMARC1; p=none; sp=all",
	    "sp= is not none, quarantine or reject"));
	CHECK(dmarc_why("v=DMARC1; p=none; pct=101", "pct= is not 0 to 100"));
	CHECK(dmarc_why("v=DMARC1; p=none; pct=", "pct= is not 0 to 100"));
	CHECK(dmarc_why("v=DMARC1; p=none; ri=1d", "ri= is not a number"));
	CHECK(dmarc_why("v=DMARC1; p=none; adkim=x",
	    "adkim= or aspf= is not r or s"));
	CHECK(dmarc_why("v=DMARC1; p=none; rua=postmaster@b.example",
	    "a report URI that is not mailto:ADDRESS"));
	CHECK(dmarc_why("v=DMARC1; p=none; rua=mailto:a@b.example,",
	    "a report URI that is not mailto:ADDRESS"));
	CHECK(dmarc_why("v=DMARC1; p=none; p=reject", "a tag given twice"));
	/*
	 * RFC 7489 6.4: the tag names are ABNF strings, so without case,
	 * as the evaluator (auth/dmarc.c) reads them; a name given twice in
	 * two cases is a tag given twice.
	 */
	CHECK(dnsrec_is_dmarc("V=DMARC1; p=none"));
	CHECK(dnsrec_dmarc_parse("v=DMARC1; P=reject; Pct=50", &m, &why) ==
	    0 && strcmp(m.p, "reject") == 0 && m.pct == 50);
	CHECK(dmarc_why("v=DMARC1; p=none; P=reject", "a tag given twice"));
}

static void
test_spf_scan(void)
{
	struct dnsrec_spf s;

	CHECK(dnsrec_is_spf("v=spf1 -all") && dnsrec_is_spf("V=SPF1") &&
	    !dnsrec_is_spf("v=spf10") && !dnsrec_is_spf(" v=spf1"));
	dnsrec_spf_scan("v=spf1 mx -all", &s);
	CHECK(s.lookups == 1 && s.all == '-' && s.ntargets == 0 && !s.ptr);
	dnsrec_spf_scan("v=spf1 ip4:192.0.2.1 ip6:2001:db8::/32 all", &s);
	CHECK(s.lookups == 0 && s.all == '+');
	dnsrec_spf_scan("v=spf1 +a -mx:b.example/24 ?ptr ~exists:%{i}.x.example "
	    "include:Spf.Example. -include:%{d}.y.example ?all", &s);
	CHECK(s.lookups == 6 && s.all == '?' && s.ptr && s.ntargets == 1 &&
	    strcmp(s.target[0], "spf.example") == 0 && s.macro_targets == 1);
	/* redirect= counts and is followed only without "all" */
	dnsrec_spf_scan("v=spf1 a redirect=_spf.example", &s);
	CHECK(s.lookups == 2 && s.all == 0 && s.ntargets == 1 &&
	    strcmp(s.target[0], "_spf.example") == 0);
	dnsrec_spf_scan("v=spf1 a redirect=_spf.example -all", &s);
	CHECK(s.lookups == 1 && s.ntargets == 0);
	/* names that only start like mechanisms are not them */
	dnsrec_spf_scan("v=spf1 allx=1 amx=2 exp=x.example -all", &s);
	CHECK(s.lookups == 0 && s.all == '-');
	/* more targets than kept */
	{
		struct buf b;

		buf_init(&b);
		buf_puts(&b, "v=spf1");
		for (int i = 0; i < DNSREC_SPF_TARGETS + 2; i++)
			buf_printf(&b, " include:i%d.example", i);
		buf_putc(&b, '\0');
		dnsrec_spf_scan(b.data, &s);
		CHECK(s.lookups == DNSREC_SPF_TARGETS + 2 && s.overflow &&
		    s.ntargets == DNSREC_SPF_TARGETS);
		buf_free(&b);
	}
}

void
test_dnsrec(void)
{
	test_dkim();
	test_dmarc();
	test_spf_scan();
}
