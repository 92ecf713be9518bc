/*
 * taglist: RFC 6376 3.2 tag=value lists (see taglist.h).  Pure, no
 * allocation; runs wherever its callers do: the smtp process (DKIM
 * verification, DMARC discovery in the policy threads), ternctl (check,
 * dns --check), the unit tests and the fuzz targets.
 */
#include <string.h>
#include <strings.h>

#include "auth/taglist.h"

static int
taglist_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int
taglist_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
taglist_namechar(char c)
{
	return taglist_alpha(c) || (c >= '0' && c <= '9') || c == '_';
}

/* VALCHAR: %x21-3A / %x3C-7E (";" never reaches here). */
static int
taglist_valchar(char c)
{
	return (unsigned char)c >= 0x21 && (unsigned char)c <= 0x7e;
}

/* The blanks at s[i] (FWS, or any SP HT CR LF when loose): their length. */
static size_t
taglist_blank(const struct taglist_iter *it, size_t i)
{
	const char *s = it->s;
	size_t j = i, len = it->len;

	for (;;) {
		if (j < len && taglist_wsp(s[j]))
			j++;
		else if (j < len && (it->flags & TAGLIST_LOOSE) &&
		    (s[j] == '\r' || s[j] == '\n'))
			j++;
		else if (j + 2 < len && s[j] == '\r' && s[j + 1] == '\n' &&
		    taglist_wsp(s[j + 2]))
			j += 3;
		else
			return j - i;
	}
}

static int
taglist_fail(const char **why, const char *reason)
{
	if (why != NULL)
		*why = reason;
	return -1;
}

void
taglist_begin(struct taglist_iter *it, const char *s, size_t len,
    unsigned flags)
{
	it->s = s;
	it->len = len;
	it->pos = 0;
	it->flags = flags;
}

/* A tag-spec in error at i: the cursor goes past its ";". */
static int
taglist_skip(struct taglist_iter *it, size_t i, const char **why,
    const char *reason)
{
	const char *semi = memchr(it->s + i, ';', it->len - i);

	it->pos = semi != NULL ? (size_t)(semi - it->s) + 1 : it->len + 1;
	return taglist_fail(why, reason);
}

int
taglist_next(struct taglist_iter *it, struct taglist_tag *t,
    const char **why)
{
	const char *s = it->s;
	size_t i, k, ve;

	for (;;) {
		if (it->pos > it->len)
			return 0;
		i = it->pos + taglist_blank(it, it->pos);
		if (i >= it->len) {		/* after the final ";" */
			it->pos = it->len + 1;
			return 0;
		}
		if (s[i] != ';')
			break;
		it->pos = i + 1;
		if (!(it->flags & TAGLIST_LOOSE))
			return taglist_fail(why, "an empty tag-spec");
	}
	if (!taglist_alpha(s[i]))
		return taglist_skip(it, i, why, "tag name expected");
	t->name = s + i;
	while (i < it->len && taglist_namechar(s[i]))
		i++;
	t->nlen = (size_t)(s + i - t->name);
	i += taglist_blank(it, i);
	if (i >= it->len || s[i] != '=')
		return taglist_skip(it, i, why,
		    "\"=\" expected after a tag name");
	t->voff = ++i;
	i += taglist_blank(it, i);
	t->val = s + i;
	ve = i;
	while (i < it->len && s[i] != ';') {
		if ((k = taglist_blank(it, i)) > 0) {
			i += k;
			continue;
		}
		if (!(it->flags & TAGLIST_LOOSE) && !taglist_valchar(s[i]))
			return taglist_skip(it, i, why,
			    "a tag value holds a character it may not");
		ve = ++i;
	}
	t->vlen = ve - (size_t)(t->val - s);
	t->vend = i;
	it->pos = i + 1;
	return 1;
}

static int
taglist_name_is(const struct taglist_tag *t, const char *name, size_t nlen,
    unsigned flags)
{
	if (t->nlen != nlen)
		return 0;
	return (flags & TAGLIST_NOCASE) ? strncasecmp(t->name, name, nlen) ==
	    0 : memcmp(t->name, name, nlen) == 0;
}

const struct taglist_tag *
taglist_find(const struct taglist_tag *tags, size_t n, const char *name,
    unsigned flags)
{
	size_t i, nlen = strlen(name);

	for (i = 0; i < n; i++)
		if (taglist_name_is(&tags[i], name, nlen, flags))
			return &tags[i];
	return NULL;
}

int
taglist_parse(const char *s, size_t len, unsigned flags,
    struct taglist_tag *tags, size_t max, size_t *n, const char **why)
{
	struct taglist_iter it;
	struct taglist_tag t;
	size_t i;
	int r;

	*n = 0;
	taglist_begin(&it, s, len, flags);
	while ((r = taglist_next(&it, &t, why)) != 0) {
		if (r == -1)
			goto fail;
		if (*n >= max) {
			taglist_fail(why, "too many tags");
			goto fail;
		}
		for (i = 0; i < *n; i++)
			if (taglist_name_is(&tags[i], t.name, t.nlen, flags)) {
				taglist_fail(why, "a tag given twice");
				goto fail;
			}
		tags[(*n)++] = t;
	}
	if (*n > 0)
		return 0;
	taglist_fail(why, "empty tag-list");
fail:
	*n = 0;
	return -1;
}

int
taglist_first_is(const char *s, size_t len, unsigned flags, const char *name,
    const char *value)
{
	struct taglist_iter it;
	struct taglist_tag t;

	taglist_begin(&it, s, len, flags);
	/* Not after an empty tag-spec, which TAGLIST_LOOSE would skip. */
	it.pos = taglist_blank(&it, 0);
	if (it.pos < len && s[it.pos] == ';')
		return 0;
	return taglist_next(&it, &t, NULL) == 1 &&
	    taglist_name_is(&t, name, strlen(name), flags) &&
	    t.vlen == strlen(value) && memcmp(t.val, value, t.vlen) == 0;
}
