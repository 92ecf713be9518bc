/*
 * test_taglist: the tag=value list reader (auth/taglist.c) shared by the
 * DKIM verifier, the DMARC evaluator and ternctl dns --check: tables of
 * lists accepted and refused by RFC 6376 3.2, the spans it gives, the
 * case rules, the loose reading DMARC records get, "v=DMARC1" first,
 * and every prefix of every table entry read from a buffer of its exact
 * size (so ASan sees any read past the end).
 */
#include <stdlib.h>
#include <string.h>

#include "auth/taglist.h"
#include "regress/unit/unit.h"

void test_taglist(void);

static int
tl_n(const char *s, unsigned flags, size_t want)
{
	struct taglist_tag t[TAGLIST_MAX];
	const char *why = NULL;
	size_t n;

	return taglist_parse(s, strlen(s), flags, t, TAGLIST_MAX, &n, &why) ==
	    0 && n == want;
}

static const char *
tl_why(const char *s, unsigned flags)
{
	struct taglist_tag t[TAGLIST_MAX];
	const char *why = NULL;
	size_t n = 99;

	if (taglist_parse(s, strlen(s), flags, t, TAGLIST_MAX, &n, &why) == 0)
		return NULL;
	return n == 0 && why != NULL ? why : "(no reason or a count)";
}

static int
tl_span(const struct taglist_tag *t, const char *name, const char *val)
{
	return t->nlen == strlen(name) && memcmp(t->name, name, t->nlen) ==
	    0 && t->vlen == strlen(val) && memcmp(t->val, val, t->vlen) == 0;
}

static const char *const good[] = {
	"v=1; a=rsa-sha256", "v=1; a=rsa-sha256;", "v=1; a=rsa-sha256; ",
	" a = b c ;b=", "a=b\r\n c;\r\n\tb_2=x", "a=; b= ;c=", "a=1", "a=",
	" a = 1 ; b_2=x y\r\n\tz ; ", "a=1\r\n ", "a\r\n\t=\r\n 1",
	"a_very_long_tag_name_without_any_limit_at_all=1", "P=1; p=2",
	"z9_=!\"#$%&'()*+,-./0123456789:<=>?@AZ[\\]^_`az{|}~",
};

static const char *const bad[] = {
	"", "  ", ";", "a=1;;", "a=1; a=2", "1a=x", "a", "a b=c", "a=b\r\nc",
	"a=b\rc", "a=\x7f", "a=\xc3\xa9", "_a=1", "a=1;b", "a=b;\r\n", "v",
	"=x", "a-b=c", "a=1;;b=2", ";a=1", "a=b\x01", "a=1; b", "a=1\n;b=2",
	"a=\n1", "a=1\r\n", "a=1 \r\n;", "\ra=1", "a\n=1", "\xc3\xa9=1",
	"a=1; ;",
};

/* Every prefix of s, read from a buffer of exactly its length. */
static void
tl_prefixes(const char *s, size_t len)
{
	struct taglist_tag t[TAGLIST_MAX];
	const char *why;
	size_t i, n;

	for (i = 0; i <= len; i++) {
		char *p = malloc(i ? i : 1);

		if (p == NULL)
			return;
		memcpy(p, s, i);
		for (unsigned f = 0; f < 4; f++)
			if (taglist_parse(p, i, f, t, TAGLIST_MAX, &n, &why) ==
			    0)
				CHECK(n > 0 && t[n - 1].vend <= i);
		(void)taglist_first_is(p, i, 0, "v", "x");
		free(p);
	}
}

static void
test_tables(void)
{
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CHECK(tl_why(good[i], 0) == NULL);
		/* what the RFC accepts, the loose reading accepts too */
		CHECK(tl_why(good[i], TAGLIST_LOOSE) == NULL);
		tl_prefixes(good[i], strlen(good[i]));
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(tl_why(bad[i], 0) != NULL);
		tl_prefixes(bad[i], strlen(bad[i]));
	}
	{
		struct taglist_tag t[2];
		const char *why;
		size_t n;

		/* a NUL is no VALCHAR */
		CHECK(taglist_parse("a=b\0c", 5, 0, t, 2, &n, &why) == -1);
	}
	CHECK(tl_n("v=1; a=rsa-sha256; ", 0, 2));
	CHECK(tl_n("a=; b= ;c=", 0, 3));
	CHECK(strcmp(tl_why("a=1; a=2", 0), "a tag given twice") == 0);
	CHECK(strcmp(tl_why("", 0), "empty tag-list") == 0);
	CHECK(strcmp(tl_why("a=1;;", 0), "an empty tag-spec") == 0);
	CHECK(strcmp(tl_why("a b=1", 0),
	    "\"=\" expected after a tag name") == 0);
	CHECK(strcmp(tl_why("1=1", 0), "tag name expected") == 0);
	CHECK(strcmp(tl_why("a=\x01", 0),
	    "a tag value holds a character it may not") == 0);
}

static void
test_spans(void)
{
	struct taglist_tag t[TAGLIST_MAX];
	const char *why, *s = "a = x y \t; b=1;c=\r\n d\r\n ;";
	size_t n;

	CHECK(taglist_parse(s, strlen(s), 0, t, TAGLIST_MAX, &n, &why) == 0 &&
	    n == 3);
	/* the value without FWS around it, inner FWS kept */
	CHECK(tl_span(&t[0], "a", "x y") && t[0].voff == 3 &&
	    t[0].vend == 9);
	CHECK(tl_span(&t[1], "b", "1") && t[1].voff == 13 && t[1].vend == 14);
	CHECK(tl_span(&t[2], "c", "d") && t[2].voff == 17 &&
	    t[2].vend == strlen(s) - 1);
	/* a value folded inside keeps its fold */
	s = "b=AA\r\n BB";
	CHECK(taglist_parse(s, strlen(s), 0, t, TAGLIST_MAX, &n, &why) == 0 &&
	    tl_span(&t[0], "b", "AA\r\n BB"));
	/* an empty value: an empty span where the value would be */
	s = "p= ;";
	CHECK(taglist_parse(s, strlen(s), 0, t, TAGLIST_MAX, &n, &why) == 0 &&
	    n == 1 && t[0].vlen == 0 && t[0].val == s + 3);
}

static void
test_bounds(void)
{
	struct taglist_tag t[TAGLIST_MAX + 1];
	char s[TAGLIST_MAX * 8 + 8];
	const char *why;
	size_t i, n, len = 0;

	/* more tags than room: refused, never overrun */
	CHECK(taglist_parse("a=1;b=2;c=3", 11, 0, t, 2, &n, &why) == -1 &&
	    strcmp(why, "too many tags") == 0);
	for (i = 0; i < TAGLIST_MAX; i++) {
		s[len++] = (char)('a' + i % 26);
		s[len++] = (char)('0' + i / 26);
		s[len++] = '=';
		s[len++] = ';';
	}
	CHECK(taglist_parse(s, len, 0, t, TAGLIST_MAX, &n, &why) == 0 &&
	    n == TAGLIST_MAX);
	memcpy(s + len, "zz=", 3);
	CHECK(taglist_parse(s, len + 3, 0, t, TAGLIST_MAX, &n, &why) == -1);
}

static void
test_case(void)
{
	struct taglist_tag t[TAGLIST_MAX];
	const char *why;
	size_t n;

	/* DKIM: names with case, so P= and p= are two tags */
	CHECK(taglist_parse("P=1; p=2", 8, 0, t, TAGLIST_MAX, &n, &why) == 0);
	CHECK(taglist_find(t, n, "p", 0) == &t[1]);
	CHECK(taglist_find(t, n, "q", 0) == NULL);
	CHECK(taglist_parse("Pct=1", 5, 0, t, TAGLIST_MAX, &n, &why) == 0 &&
	    taglist_find(t, n, "pct", 0) == NULL &&
	    taglist_find(t, n, "pct", TAGLIST_NOCASE) == &t[0]);
	/* DMARC: without, so they are one tag given twice */
	CHECK(strcmp(tl_why("P=1; p=2", TAGLIST_NOCASE),
	    "a tag given twice") == 0);
	/* a name is found whole, not by a prefix */
	CHECK(taglist_parse("bh=1; b=2", 9, 0, t, TAGLIST_MAX, &n, &why) ==
	    0 && taglist_find(t, n, "b", 0) == &t[1] &&
	    taglist_find(t, n, "bhx", 0) == NULL);
}

/* The loose reading (the DMARC evaluator's): a cursor that goes on. */
static void
test_loose(void)
{
	static const char s[] = "v=DMARC1;; p = reject\n; x; _y=1;"
	    " pct\t=\r\n 5 ; rua=\xc3\xa9 \x01;\n";
	struct taglist_iter it;
	struct taglist_tag t;
	const char *why;
	int r[8], i = 0, k;

	taglist_begin(&it, s, sizeof(s) - 1, TAGLIST_LOOSE);
	while (i < 8 && (k = taglist_next(&it, &t, &why)) != 0) {
		r[i] = k;
		if (k == 1 && i == 1)
			CHECK(tl_span(&t, "p", "reject"));
		if (k == 1 && i == 4)
			CHECK(tl_span(&t, "pct", "5"));
		if (k == 1 && i == 5)
			CHECK(tl_span(&t, "rua", "\xc3\xa9 \x01"));
		i++;
	}
	CHECK(i == 6 && r[0] == 1 && r[1] == 1 && r[2] == -1 && r[3] == -1 &&
	    r[4] == 1 && r[5] == 1);
	CHECK(taglist_next(&it, &t, &why) == 0);	/* and stays at the end */
	/* the strict cursor goes past a bad tag-spec too */
	taglist_begin(&it, "a=\x01; ;b=2", 9, 0);
	CHECK(taglist_next(&it, &t, &why) == -1);
	CHECK(taglist_next(&it, &t, &why) == -1 &&
	    strcmp(why, "an empty tag-spec") == 0);
	CHECK(taglist_next(&it, &t, &why) == 1 && tl_span(&t, "b", "2"));
	CHECK(taglist_next(&it, &t, &why) == 0);
	/* a whole loose list: empty tag-specs skipped, bad ones refused */
	CHECK(tl_n("a=1;;b=2;", TAGLIST_LOOSE, 2));
	CHECK(tl_why("a=1; x", TAGLIST_LOOSE) != NULL);
	CHECK(tl_n("a=1\n;\rb=\x80", TAGLIST_LOOSE, 2));
}

static void
test_first(void)
{
	const unsigned dm = TAGLIST_LOOSE | TAGLIST_NOCASE;
	static const struct {
		const char	*s;
		unsigned	 flags;
		int		 want;
	} t[] = {
		{ "v=DMARC1; p=none", 0, 1 },
		{ "v=DMARC1", 0, 1 },
		{ " v = DMARC1 ;p=none", 0, 1 },
		{ "v=DMARC1; p", 0, 1 },	/* the rest is not read */
		{ "V=DMARC1", 0, 0 },
		{ "V=DMARC1", TAGLIST_NOCASE, 1 },
		{ "v=dmarc1", dm, 0 },		/* the value with case */
		{ "v=DMARC10", dm, 0 },
		{ "v=DMARC1 x", dm, 0 },
		{ "p=none; v=DMARC1", dm, 0 },
		{ ";v=DMARC1", dm, 0 },
		{ " ; v=DMARC1", dm, 0 },
		{ "", dm, 0 },
		{ "vv=DMARC1", dm, 0 },
		{ "\nv=DMARC1\r;", dm, 1 },
		{ "\nv=DMARC1", 0, 0 },
		{ "\r\n v=DMARC1", 0, 1 },
		{ "v=DMARC1\x01", dm, 0 },
	};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK(taglist_first_is(t[i].s, strlen(t[i].s), t[i].flags, "v",
		    "DMARC1") == t[i].want);
}

void
test_taglist(void)
{
	test_tables();
	test_spans();
	test_bounds();
	test_case();
	test_loose();
	test_first();
}
