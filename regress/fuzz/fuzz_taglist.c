/*
 * fuzz_taglist: the tag=value list reader (auth/taglist.c) on arbitrary
 * bytes, under each of its readings (strict or loose, names with or
 * without case).  Every span lies inside the input and every name is a
 * tag-name; a value has no blank at either end and, strictly read, only
 * VALCHARs and folds; no name twice; the same input reads the same
 * twice; a list written back as "name=value;" reads as the same tags;
 * what the strict reading takes, the loose one takes alike; the cursor
 * ends within a bounded number of steps, and its good tag-specs are the
 * whole list's when that parses.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/taglist.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static int
fuzz_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
fuzz_blank(char c, unsigned flags)
{
	return c == ' ' || c == '\t' || ((flags & TAGLIST_LOOSE) &&
	    (c == '\r' || c == '\n'));
}

/* One tag as read from s[0, len). */
static void
fuzz_tag(const char *s, size_t len, unsigned flags,
    const struct taglist_tag *t)
{
	size_t i;

	if (t->name < s || t->nlen == 0 || t->nlen > len ||
	    t->name + t->nlen > s + len || t->val < s ||
	    t->val + t->vlen > s + len || t->voff > t->vend ||
	    t->vend > len || t->val < s + t->voff ||
	    t->val + t->vlen > s + t->vend || t->name + t->nlen >= s + t->voff)
		abort();
	if (!fuzz_alpha(t->name[0]))
		abort();
	for (i = 1; i < t->nlen; i++)
		if (!fuzz_alpha(t->name[i]) && !(t->name[i] >= '0' &&
		    t->name[i] <= '9') && t->name[i] != '_')
			abort();
	if (t->vend < len && s[t->vend] != ';')
		abort();
	if (t->vlen > 0 && (fuzz_blank(t->val[0], flags) ||
	    fuzz_blank(t->val[t->vlen - 1], flags) || t->val[0] == '\r' ||
	    t->val[t->vlen - 1] == '\n'))
		abort();
	for (i = 0; i < t->vlen; i++) {
		unsigned char c = (unsigned char)t->val[i];

		if (c == ';')
			abort();
		if (flags & TAGLIST_LOOSE)
			continue;
		if (c == '\r' && !(i + 2 < t->vlen && t->val[i + 1] == '\n' &&
		    fuzz_blank(t->val[i + 2], 0)))
			abort();
		if (c == '\n' && !(i > 0 && t->val[i - 1] == '\r'))
			abort();
		if (c != '\r' && c != '\n' && c != ' ' && c != '\t' &&
		    (c < 0x21 || c > 0x7e))
			abort();
	}
}

static int
fuzz_same_name(const struct taglist_tag *a, const struct taglist_tag *b,
    unsigned flags)
{
	return a->nlen == b->nlen && ((flags & TAGLIST_NOCASE) ?
	    strncasecmp(a->name, b->name, a->nlen) == 0 :
	    memcmp(a->name, b->name, a->nlen) == 0);
}

/* The same tags (names and values as text; spans may differ). */
static int
fuzz_same(const struct taglist_tag *a, const struct taglist_tag *b,
    size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].nlen != b[i].nlen || a[i].vlen != b[i].vlen ||
		    memcmp(a[i].name, b[i].name, a[i].nlen) != 0 ||
		    memcmp(a[i].val, b[i].val, a[i].vlen) != 0)
			return 0;
	return 1;
}

/* Written back as "name=value;" and read again. */
static void
fuzz_rewrite(const struct taglist_tag *t, size_t n, unsigned flags,
    size_t len)
{
	struct taglist_tag u[TAGLIST_MAX];
	char *w = malloc(len + 2 * n + 1);
	const char *why;
	size_t o = 0, m;

	if (w == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		memcpy(w + o, t[i].name, t[i].nlen);
		o += t[i].nlen;
		w[o++] = '=';
		memcpy(w + o, t[i].val, t[i].vlen);
		o += t[i].vlen;
		w[o++] = ';';
	}
	if (o > len + 2 * n)
		abort();
	if (taglist_parse(w, o, flags, u, TAGLIST_MAX, &m, &why) != 0 ||
	    m != n || !fuzz_same(t, u, n))
		abort();
	free(w);
}

/* The cursor: bounded, and its tag-specs are the list's. */
static void
fuzz_walk(const char *s, size_t len, unsigned flags,
    const struct taglist_tag *t, size_t n, int parsed)
{
	struct taglist_iter it;
	struct taglist_tag one;
	const char *why;
	size_t steps = 0, good = 0;
	int r;

	taglist_begin(&it, s, len, flags);
	while ((r = taglist_next(&it, &one, &why)) != 0) {
		if (++steps > len + 1)
			abort();
		if (r == 1) {
			fuzz_tag(s, len, flags, &one);
			if (parsed && (good >= n || memcmp(&one, &t[good],
			    sizeof(one)) != 0))
				abort();
			good++;
		} else if (r != -1 || why == NULL || parsed)
			abort();
	}
	if (taglist_next(&it, &one, &why) != 0)
		abort();
	if (parsed && good != n)
		abort();
}

/* A list read strictly begins with its first tag. */
static void
fuzz_first(const char *s, size_t len, unsigned flags,
    const struct taglist_tag *t)
{
	char *name = malloc(t->nlen + 1), *val = malloc(t->vlen + 1);

	if (name == NULL || val == NULL)
		abort();
	memcpy(name, t->name, t->nlen);
	name[t->nlen] = '\0';
	memcpy(val, t->val, t->vlen);
	val[t->vlen] = '\0';
	if (!taglist_first_is(s, len, flags, name, val))
		abort();
	free(name);
	free(val);
}

static void
fuzz_one(const char *s, size_t len, unsigned flags)
{
	struct taglist_tag t[TAGLIST_MAX], t2[TAGLIST_MAX];
	const char *why = NULL, *why2 = NULL;
	size_t n, n2, i, j;
	int r, r2;

	r = taglist_parse(s, len, flags, t, TAGLIST_MAX, &n, &why);
	r2 = taglist_parse(s, len, flags, t2, TAGLIST_MAX, &n2, &why2);
	if (r != r2 || n != n2 || why != why2 || (r == 0 &&
	    memcmp(t, t2, n * sizeof(t[0])) != 0))
		abort();
	if (r != 0) {
		if (r != -1 || n != 0 || why == NULL)
			abort();
		fuzz_walk(s, len, flags, t, 0, 0);
		return;
	}
	if (n == 0 || n > TAGLIST_MAX)
		abort();
	for (i = 0; i < n; i++) {
		fuzz_tag(s, len, flags, &t[i]);
		for (j = 0; j < i; j++)
			if (fuzz_same_name(&t[i], &t[j], flags) ||
			    t[j].vend >= t[i].voff)
				abort();
		if (taglist_find(t, n, "", flags) != NULL)
			abort();
	}
	if (!(flags & TAGLIST_LOOSE))
		fuzz_first(s, len, flags, &t[0]);
	fuzz_rewrite(t, n, flags, len);
	fuzz_walk(s, len, flags, t, n, 1);
	/* What the RFC's reading takes, the loose one takes alike. */
	if (!(flags & TAGLIST_LOOSE)) {
		if (taglist_parse(s, len, flags | TAGLIST_LOOSE, t2,
		    TAGLIST_MAX, &n2, &why2) != 0 || n2 != n ||
		    memcmp(t, t2, n * sizeof(t[0])) != 0)
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	/* An exact copy, so a read past the end is ASan's to see. */
	char *s = malloc(len ? len : 1);

	if (s == NULL)
		return 0;
	memcpy(s, data, len);
	for (unsigned flags = 0; flags < 4; flags++)
		fuzz_one(s, len, flags);
	free(s);
	return 0;
}
