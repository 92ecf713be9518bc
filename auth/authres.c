/*
 * authres: the Authentication-Results field (RFC 8601) and the test for
 * fields claiming our authserv-id (see authres.h).  Pure.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "auth/authres.h"
#include "lib/util.h"

/* What a field with no verdict says (RFC 8601 2.2). */
#define AUTHRES_NONE	"; none"

#define AUTHRES_NAME	"Authentication-Results:"
#define AUTHRES_RESULT_MAX	9	/* "temperror", "permerror" */

int
authres_empty(const struct authres *r)
{
	size_t i;

	for (i = 0; i < AUTHRES_EXTRA; i++)
		if (r->extra[i].room > 0)
			return 0;
	if (r->markroom > 0)
		return 0;
	return r->spf[0] == '\0' && !r->dkim;
}

/* A pvalue that is not a token (RFC 2045) goes in quotes. */
static int
authres_token(const char *v)
{
	if (*v == '\0')
		return 0;
	for (; *v; v++)
		if (*v <= ' ' || *v >= 0x7f || strchr("()<>@,;:\\\"/[]?=", *v))
			return 0;
	return 1;
}

/*
 * One dkim= entry (without the ";" before it): with result r and the
 * given comment; width 1 makes it as long as it can ever be.
 */
static void
authres_dkim_entry(struct buf *b, const struct authres_dkim *d, int widest)
{
	size_t i;

	if (widest) {
		buf_printf(b, "dkim=");
		for (i = 0; i < AUTHRES_RESULT_MAX + 3 + AUTHRES_COMMENT_MAX - 1;
		    i++)
			buf_putc(b, 'x');
	} else {
		buf_printf(b, "dkim=%s", dkim_result_name(d->result));
		if (d->comment[0])
			buf_printf(b, " (%s)", d->comment);
	}
	if (d->d[0])
		buf_printf(b, " header.d=%s", d->d);
	if (d->s[0])
		buf_printf(b, " header.s=%s", d->s);
	if (d->b8[0])
		buf_printf(b, authres_token(d->b8) ? " header.b=%s" :
		    " header.b=\"%s\"", d->b8);
}

/*
 * The field; pad: each entry as long as its widest form.  widest: the
 * longest it can be (for the room), with 6 more for a "; none" should
 * every entry come to nothing.
 */
static void
authres_build(struct buf *b, const char *id, const struct authres *r,
    int pad, int widest)
{
	struct buf e, w;
	size_t i, n = 0;

	buf_printf(b, "%s %s", AUTHRES_NAME, id);
	if (r->spf[0]) {
		buf_printf(b, ";\r\n\t%s", r->spf);
		n++;
	}
	if (r->dkim && r->ndkim == 0) {
		buf_printf(b, ";\r\n\tdkim=none");
		n++;
	}
	for (i = 0; r->dkim && i < r->ndkim && i < DKIM_VERIFY_MAX; i++) {
		buf_init(&e);
		buf_init(&w);
		authres_dkim_entry(&e, &r->dk[i], widest);
		authres_dkim_entry(&w, &r->dk[i], 1);
		buf_printf(b, ";\r\n\t");
		buf_append(b, e.data, e.len);
		/* CFWS before the ";" or the end (RFC 8601 2.2). */
		while (pad && e.len++ < w.len)
			buf_putc(b, ' ');
		buf_free(&e);
		buf_free(&w);
		n++;
	}
	for (i = 0; i < AUTHRES_EXTRA; i++) {
		const struct authres_entry *x = &r->extra[i];
		size_t len = strnlen(x->text, sizeof(x->text));

		/* No text in the end: no entry; its room goes to the end. */
		if (x->room == 0 || (!widest && len == 0))
			continue;
		buf_printf(b, ";\r\n\t");
		if (widest) {
			for (len = 0; len < x->room; len++)
				buf_putc(b, 'x');
			n++;
			continue;
		}
		if (len > x->room)
			len = x->room;	/* more than it said: cut */
		buf_append(b, x->text, len);
		while (pad && len++ < x->room)
			buf_putc(b, ' ');
		n++;
	}
	if (n == 0)
		buf_printf(b, "%s", AUTHRES_NONE);
	else if (widest)	/* room for a "; none" after all: its length */
		buf_printf(b, "%*s", (int)(sizeof(AUTHRES_NONE) - 1), "");
	buf_printf(b, "\r\n");
}

size_t
authres_room(const struct authres *r, const char *id)
{
	struct buf b;
	size_t n;

	if (authres_empty(r))
		return 0;
	buf_init(&b);
	authres_build(&b, id, r, 0, 1);
	n = b.len;
	buf_free(&b);
	if (r->markroom > 0)		/* the mark field and its CRLF */
		n += r->markroom + 2;
	return n;
}

int
authres_format(struct buf *b, const char *id, const struct authres *r,
    size_t room)
{
	struct buf t;
	size_t ml = r->markroom ? strnlen(r->mark, sizeof(r->mark)) : 0;
	size_t fieldroom;
	int rv = 0;

	if (authres_empty(r))
		return room == 0 ? 0 : -1;
	if (ml > r->markroom)
		ml = r->markroom;
	/* our field takes what the mark (and its CRLF) leaves */
	fieldroom = room == 0 ? 0 : room - (ml ? ml + 2 : 0);
	buf_init(&t);
	authres_build(&t, id, r, room != 0, 0);
	if (room != 0 && (room < (ml ? ml + 2 : 0) || t.len > fieldroom))
		rv = -1;
	else {
		/* What is left (an entry left out), as blanks at the end. */
		buf_append(b, t.data, t.len - 2);
		while (room != 0 && t.len++ < fieldroom)
			buf_putc(b, ' ');
		buf_append(b, "\r\n", 2);
		if (ml) {
			buf_append(b, r->mark, ml);
			buf_append(b, "\r\n", 2);
		}
	}
	buf_free(&t);
	return rv;
}

/* Past CFWS (comments nest, quoted-pairs inside): -1 if it runs out. */
static long
authres_cfws(const char *s, size_t len, size_t i)
{
	int depth = 0;

	for (; i < len; i++) {
		char c = s[i];

		if (depth > 0) {
			if (c == '\\')
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '(')
			depth = 1;
		else if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			return (long)i;
	}
	return -1;
}

int
authres_claims(const char *f, size_t len, const char *id)
{
	size_t n = strlen(AUTHRES_NAME) - 1, i, idl = strlen(id), s;
	long at;

	if (len < n || strncasecmp(f, AUTHRES_NAME, n) != 0)
		return 0;
	for (i = n; i < len && (f[i] == ' ' || f[i] == '\t'); i++)
		;
	if (i >= len || f[i] != ':')
		return i >= len ? -1 : 0;
	if ((at = authres_cfws(f, len, i + 1)) < 0)
		return -1;
	i = (size_t)at;
	if (f[i] == '"') {		/* a quoted-string authserv-id */
		struct buf v;
		int r;

		buf_init(&v);
		for (i++; i < len && f[i] != '"'; i++) {
			if (f[i] == '\\' && i + 1 < len)
				i++;
			if (f[i] != '\r' && f[i] != '\n')
				buf_putc(&v, f[i]);
		}
		if (i >= len) {
			buf_free(&v);
			return -1;
		}
		r = v.len == idl && strncasecmp(v.data, id, idl) == 0;
		buf_free(&v);
		return r;
	}
	for (s = i; i < len && f[i] > ' ' && f[i] < 0x7f && f[i] != ';' &&
	    f[i] != '(' && f[i] != '"'; i++)
		;
	return i - s == idl && strncasecmp(f + s, id, idl) == 0;
}
