/*
 * fromcheck: the From: ownership decision of authenticated submission
 * (see fromcheck.h).  A small lexer (atoms, quoted strings, domain
 * literals, specials; comments and folding white space skipped, nested
 * comments and quoted pairs honoured) feeds a parser that knows the
 * three shapes of a list element: display-name <addr-spec>, a bare
 * addr-spec, and a group "name: ...;".  A display name is free text (as
 * mail programs write it, '@' included); an address is what lies in
 * angle brackets or the whole bare element, and must be one token
 * sequence word ('.' word)* '@' ... with nothing else around it.
 */
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "lib/addr.h"
#include "lib/util.h"
#include "smtpd/fromcheck.h"

enum tok { TK_END, TK_WORD, TK_SPECIAL, TK_BAD };

struct lex {
	const char	*p, *end;
};

struct token {
	enum tok	 type;
	const char	*s;		/* as written */
	size_t		 n;
	char		 ch;		/* TK_SPECIAL: which */
	int		 lit;		/* a domain literal [...] */
};

struct fc {
	const struct conf *conf;
	const char	*account;
	char		*bad;
	size_t		 badlen;
	int		 count;
};

static int
fc_special(int ch)
{
	return ch != '\0' && strchr("<>,:;@.", ch) != NULL;
}

static int
fc_wsp(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* Skip to the closing quote or bracket past quoted pairs; 0 if none. */
static int
fc_skip_quoted(struct lex *l, char close)
{
	for (l->p++; l->p < l->end; l->p++) {
		if (*l->p == '\0')
			return 0;
		if (*l->p == '\\') {
			if (++l->p == l->end || *l->p == '\0')
				return 0;
			continue;
		}
		if (*l->p == close) {
			l->p++;
			return 1;
		}
	}
	return 0;
}

/* A comment, nested ones and quoted pairs inside (RFC 5322 3.2.2). */
static int
fc_skip_comment(struct lex *l)
{
	int depth = 0;

	for (; l->p < l->end; l->p++) {
		if (*l->p == '\0')
			return 0;
		if (*l->p == '\\') {
			if (++l->p == l->end || *l->p == '\0')
				return 0;
		} else if (*l->p == '(')
			depth++;
		else if (*l->p == ')' && --depth == 0) {
			l->p++;
			return 1;
		}
	}
	return 0;
}

static struct token
fc_next(struct lex *l)
{
	struct token t = { TK_BAD, NULL, 0, 0, 0 };

	for (;;) {
		while (l->p < l->end && fc_wsp(*l->p))
			l->p++;
		if (l->p == l->end || *l->p != '(')
			break;
		if (!fc_skip_comment(l))
			return t;
	}
	t.s = l->p;
	if (l->p == l->end) {
		t.type = TK_END;
		return t;
	}
	if (*l->p == '"' || *l->p == '[') {
		t.lit = *l->p == '[';
		if (!fc_skip_quoted(l, t.lit ? ']' : '"'))
			return t;
		t.type = TK_WORD;
	} else if (fc_special(*l->p)) {
		t.type = TK_SPECIAL;
		t.ch = *l->p++;
	} else if (*l->p == '\0' || strchr(")]\\", *l->p) != NULL) {
		return t;		/* stray: TK_BAD */
	} else {
		while (l->p < l->end && *l->p != '\0' && !fc_wsp(*l->p) &&
		    !fc_special(*l->p) && strchr("()[]\\\"", *l->p) == NULL)
			l->p++;
		t.type = TK_WORD;
	}
	t.n = (size_t)(l->p - t.s);
	return t;
}

static void
fc_bad(struct fc *f, const char *s, size_t n)
{
	if (f->badlen == 0)
		return;
	if (n >= f->badlen)
		n = f->badlen - 1;
	memcpy(f->bad, s, n);
	f->bad[n] = '\0';
}

/*
 * An address gathered as written: words and the specials '.' and '@',
 * never two words side by side (that is two addresses, or a local part
 * a comment split).
 */
struct fc_addr {
	char	 s[FROM_ADDR_MAX];
	size_t	 n;
	int	 toolong, adjacent, badlit, ats, lastword, lastat, any;
};

static void
fc_addr_add(struct fc_addr *a, const struct token *t)
{
	int word = t->type == TK_WORD;

	if (word && a->lastword)
		a->adjacent = 1;
	/* [...] anywhere but after '@' (a reader may find an address in
	   a display name's brackets) */
	if (t->lit && !a->lastat)
		a->badlit = 1;
	a->lastat = t->type == TK_SPECIAL && t->ch == '@';
	if (t->type == TK_SPECIAL && t->ch == '@')
		a->ats++;
	a->lastword = word;
	a->any = 1;
	if (a->n + t->n >= sizeof(a->s)) {
		a->toolong = 1;
		return;
	}
	memcpy(a->s + a->n, t->s, t->n);
	a->n += t->n;
	a->s[a->n] = '\0';
}

/* One address: its own, or the verdict that refuses the field. */
static enum from_verdict
fc_check(struct fc *f, struct fc_addr *a, const char *from, const char *to)
{
	char ascii[ADDR_STR_MAX * 2];

	if (++f->count > FROM_ADDRS_MAX) {
		fc_bad(f, a->s, a->n);
		return FROM_TOO_MANY;
	}
	if (a->toolong) {
		fc_bad(f, from, (size_t)(to - from));
		return FROM_TOO_LONG;
	}
	if (a->adjacent || a->badlit || a->ats != 1) {
		fc_bad(f, from, (size_t)(to - from));
		return FROM_MALFORMED;
	}
	if (addr_ascii(a->s, ascii, sizeof(ascii)) != 0 ||
	    !conf_sender_allowed(f->conf, f->account, ascii)) {
		fc_bad(f, a->s, a->n);
		return FROM_NOT_OWNED;
	}
	return FROM_OK;
}

/* Inside <...>: the address, then '>'. */
static enum from_verdict
fc_angle(struct fc *f, struct lex *l)
{
	struct fc_addr a;
	struct token t;
	const char *from = l->p;

	memset(&a, 0, sizeof(a));
	for (;;) {
		t = fc_next(l);
		if (t.type == TK_WORD || (t.type == TK_SPECIAL &&
		    (t.ch == '.' || t.ch == '@'))) {
			fc_addr_add(&a, &t);
			continue;
		}
		if (t.type == TK_SPECIAL && t.ch == '>')
			break;
		/* a source route, a second '<', an unclosed bracket */
		fc_bad(f, from, (size_t)(l->p - from));
		return FROM_MALFORMED;
	}
	return fc_check(f, &a, from, l->p - 1);
}

enum from_verdict
fromcheck_field(const struct conf *conf, const char *account, const char *v,
    size_t len, char *bad, size_t badlen)
{
	struct fc f = { conf, account, bad, badlen, 0 };
	struct lex l = { v, v + len };
	struct fc_addr a;
	struct token t;
	const char *from;
	enum from_verdict r;
	int ingroup = 0, phrase;

	if (badlen > 0)
		bad[0] = '\0';
	for (;;) {
		/* One list element: up to the token that says what it was. */
		memset(&a, 0, sizeof(a));
		phrase = 1;
		from = l.p;
		for (;;) {
			t = fc_next(&l);
			if (t.type == TK_WORD || (t.type == TK_SPECIAL &&
			    (t.ch == '.' || t.ch == '@'))) {
				if (t.type == TK_SPECIAL && t.ch == '@')
					phrase = 0;
				fc_addr_add(&a, &t);
				continue;
			}
			break;
		}
		if (t.type == TK_BAD || (t.type == TK_SPECIAL && t.ch == '>') ||
		    a.badlit) {
			fc_bad(&f, from, (size_t)(l.p - from));
			return FROM_MALFORMED;
		}
		if (t.type == TK_SPECIAL && t.ch == '<') {
			/* what came before was the display name */
			if ((r = fc_angle(&f, &l)) != FROM_OK)
				return r;
			t = fc_next(&l);
		} else if (t.type == TK_SPECIAL && t.ch == ':') {
			/* a group: its name is a phrase (RFC 6854) */
			if (ingroup || !phrase || !a.any) {
				fc_bad(&f, from, (size_t)(l.p - from));
				return FROM_MALFORMED;
			}
			ingroup = 1;
			continue;
		} else if (a.any) {
			if ((r = fc_check(&f, &a, from, t.s)) != FROM_OK)
				return r;
		}
		/* t ends the element: ',', ';' closing a group, or the end */
		if (t.type == TK_SPECIAL && t.ch == ';' && ingroup) {
			ingroup = 0;
			t = fc_next(&l);
		}
		/* A group never closed reads as one too: "Re: Anna <a@b>"
		   is how some programs write a display name, and every
		   address in it has been checked either way. */
		if (t.type == TK_END)
			return FROM_OK;
		if (t.type == TK_SPECIAL && t.ch == ',')
			continue;
		fc_bad(&f, from, (size_t)(l.p - from));
		return FROM_MALFORMED;
	}
}

const char *
fromcheck_reason(enum from_verdict v)
{
	switch (v) {
	case FROM_OK:
		return "owned";
	case FROM_NOT_OWNED:
		return "not owned";
	case FROM_MALFORMED:
		return "malformed";
	case FROM_TOO_MANY:
		return "too many addresses";
	case FROM_TOO_LONG:
		return "too long";
	}
	return "?";
}

size_t
fromcheck_name(const char *field, size_t len)
{
	size_t i = 4;

	if (len < 5 || strncasecmp(field, "From", 4) != 0)
		return 0;
	while (i < len && (field[i] == ' ' || field[i] == '\t'))
		i++;
	return i < len && field[i] == ':' ? i + 1 : 0;
}
