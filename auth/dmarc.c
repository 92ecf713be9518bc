/*
 * dmarc: RFC 7489 without I/O (see dmarc.h).  The record grammar (6.3,
 * 6.4), the author domain (6.6.1), policy discovery over a TXT lookup the
 * caller supplies (6.6.3), alignment (3.1) with the organizational domain
 * from libpsl (3.2), sampling (6.6.4) and the disposition.  The smtp
 * process calls discovery from its SPF worker threads (the lookup blocks
 * there, never on the loop) and the rest on its loop; ternctl check calls
 * it all directly.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpsl.h>

#include "auth/dmarc.h"
#include "auth/taglist.h"
#include "lib/addr.h"
#include "lib/rec.h"
#include "lib/util.h"

static const psl_ctx_t *dmarc_psl;

/* ---- the record (RFC 7489 6.3, 6.4) ---- */

/*
 * A record's tag-list as it is applied: tag names without case (6.4's
 * ABNF strings), blanks (and the CR or LF a TXT record should not have,
 * but may) around names and values, a tag-spec that is not tag=value
 * ignored like an unknown tag.
 */
#define DMARC_TAGLIST	(TAGLIST_LOOSE | TAGLIST_NOCASE)

static int
dmarc_wsp(int c)
{
	return c == ' ' || c == '\t';
}

int
dmarc_record_is_dmarc(const char *txt)
{
	/* dmarc-version = "v" *WSP "=" *WSP %x44 %x4d %x41 %x52 %x43 %x31 */
	return taglist_first_is(txt, strlen(txt), DMARC_TAGLIST, "v",
	    "DMARC1");
}

static int
dmarc_policy_word(const char *v, size_t n)
{
	if (n == 4 && strncasecmp(v, "none", 4) == 0)
		return DMARC_POL_NONE;
	if (n == 10 && strncasecmp(v, "quarantine", 10) == 0)
		return DMARC_POL_QUARANTINE;
	if (n == 6 && strncasecmp(v, "reject", 6) == 0)
		return DMARC_POL_REJECT;
	return DMARC_POL_UNSET;
}

static int
dmarc_digits(const char *v, size_t n, size_t maxdig, unsigned long *out)
{
	unsigned long x = 0;

	if (n == 0 || n > maxdig)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		x = x * 10 + (unsigned long)(v[i] - '0');
	}
	*out = x;
	return 0;
}

/*
 * One dmarc-uri (6.4): an RFC 3986 URI (scheme ":" something, no blanks,
 * no "!" or ","), then an optional "!" size with a unit.
 */
static int
dmarc_uri_ok(const char *u, size_t n)
{
	size_t i = 0, bang;

	if (n == 0 || !isalpha((unsigned char)u[0]))
		return 0;
	while (i < n && (isalnum((unsigned char)u[i]) || u[i] == '+' ||
	    u[i] == '-' || u[i] == '.'))
		i++;
	if (i >= n || u[i] != ':')
		return 0;
	for (bang = ++i; bang < n && u[bang] != '!'; bang++)
		if ((unsigned char)u[bang] <= ' ' ||
		    (unsigned char)u[bang] >= 0x7f)
			return 0;
	if (bang == i)
		return 0;		/* nothing after the scheme */
	if (bang < n) {
		size_t d = bang + 1;

		if (d >= n || !isdigit((unsigned char)u[d]))
			return 0;
		while (d < n && isdigit((unsigned char)u[d]))
			d++;
		if (d < n && strchr("kmgtKMGT", u[d]) != NULL)
			d++;
		if (d != n)
			return 0;
	}
	return 1;
}

/* A list of dmarc-uri separated by "," (blanks around allowed): how many
   are valid, and whether every one is. */
static int
dmarc_uris(const char *v, size_t n, int *allok)
{
	size_t i = 0;
	int good = 0;

	*allok = 1;
	while (i <= n) {
		size_t s, e;

		while (i < n && dmarc_wsp((unsigned char)v[i]))
			i++;
		s = i;
		while (i < n && v[i] != ',')
			i++;
		e = i;
		while (e > s && dmarc_wsp((unsigned char)v[e - 1]))
			e--;
		if (dmarc_uri_ok(v + s, e - s))
			good++;
		else
			*allok = 0;
		i++;
	}
	return good;
}

/* fo: 0 / 1 / d / s separated by ":" (6.3). */
static int
dmarc_fo_ok(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i % 2 == 0 && strchr("01dsDS", v[i]) == NULL)
			return 0;
		if (i % 2 == 1 && v[i] != ':')
			return 0;
	}
	return n % 2 == 1;
}

/* rf: Keyword *(":" Keyword), Keyword as RFC 5321's. */
static int
dmarc_rf_ok(const char *v, size_t n)
{
	int atstart = 1;

	for (size_t i = 0; i < n; i++) {
		if (v[i] == ':') {
			if (atstart)
				return 0;
			atstart = 1;
		} else if (isalnum((unsigned char)v[i]) ||
		    (v[i] == '-' && !atstart))
			atstart = 0;
		else
			return 0;
	}
	return n > 0 && !atstart;
}

static void
dmarc_record_defaults(struct dmarc_record *r)
{
	memset(r, 0, sizeof(*r));
	r->p = DMARC_POL_NONE;
	r->sp = DMARC_POL_UNSET;
	r->np = DMARC_POL_UNSET;
	r->pct = 100;
	r->adkim = 'r';
	r->aspf = 'r';
	r->ri = 86400;
	str_copy(r->fo, "0", sizeof(r->fo));
	str_copy(r->rf, "afrf", sizeof(r->rf));
}

static void
dmarc_copy(char *dst, size_t cap, const char *v, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

int
dmarc_record_parse(const char *txt, struct dmarc_record *r, const char **why)
{
	struct taglist_iter it;
	struct taglist_tag tag;
	int p = DMARC_POL_UNSET, p_seen = 0, sp_bad = 0, rua_good = 0, rc;
	unsigned seen = 0;

	dmarc_record_defaults(r);
	*why = NULL;
	if (!dmarc_record_is_dmarc(txt)) {
		*why = "not a DMARC record";
		return 0;
	}
	taglist_begin(&it, txt, strlen(txt), DMARC_TAGLIST);
	(void)taglist_next(&it, &tag, NULL);	/* v=DMARC1 */
	while ((rc = taglist_next(&it, &tag, NULL)) != 0) {
		const char *name = tag.name, *val = tag.val;
		size_t nlen = tag.nlen, vlen = tag.vlen;
		unsigned bit = 0;

		if (rc == -1)
			continue;	/* not a tag: ignored as unknown */
#define TAG(t)	(nlen == sizeof(t) - 1 && strncasecmp(name, t, nlen) == 0)
		if (TAG("p"))
			bit = 1;
		else if (TAG("sp"))
			bit = 2;
		else if (TAG("np"))
			bit = 4;
		else if (TAG("pct"))
			bit = 8;
		else if (TAG("adkim"))
			bit = 16;
		else if (TAG("aspf"))
			bit = 32;
		else if (TAG("ri"))
			bit = 64;
		else if (TAG("fo"))
			bit = 128;
		else if (TAG("rf"))
			bit = 256;
		else if (TAG("rua"))
			bit = 512;
		else if (TAG("ruf"))
			bit = 1024;
		else if (TAG("v")) {
			*why = "v= repeated";	/* only first (6.3) */
			continue;
		}
#undef TAG
		/* unknown tags are ignored (6.3); a repeated one: the first
		   counts */
		if (bit == 0 || (seen & bit))
			continue;
		seen |= bit;
		switch (bit) {
		case 1:
			p_seen = 1;
			p = dmarc_policy_word(val, vlen);
			break;
		case 2:
			r->sp = dmarc_policy_word(val, vlen);
			sp_bad = r->sp == DMARC_POL_UNSET;
			break;
		case 4:
			r->np = dmarc_policy_word(val, vlen);
			break;
		case 8: {
			unsigned long x;

			if (dmarc_digits(val, vlen, 3, &x) == 0 && x <= 100)
				r->pct = (int)x;
			break;
		}
		case 16:
		case 32:
			if (vlen == 1 && strchr("rsRS", val[0]) != NULL) {
				char m = (char)tolower((unsigned char)val[0]);

				if (bit == 16)
					r->adkim = m;
				else
					r->aspf = m;
			}
			break;
		case 64: {
			unsigned long x;

			if (dmarc_digits(val, vlen, 9, &x) == 0)
				r->ri = x;
			break;
		}
		case 128:
			if (dmarc_fo_ok(val, vlen))
				dmarc_copy(r->fo, sizeof(r->fo), val, vlen);
			break;
		case 256:
			if (dmarc_rf_ok(val, vlen))
				dmarc_copy(r->rf, sizeof(r->rf), val, vlen);
			break;
		case 512:
		case 1024: {
			int allok;
			int good = dmarc_uris(val, vlen, &allok);

			if (bit == 512)
				rua_good = good > 0;
			if (good > 0)
				dmarc_copy(bit == 512 ? r->rua : r->ruf,
				    DMARC_URI_MAX, val, vlen);
			break;
		}
		}
	}
	if (p != DMARC_POL_UNSET && !sp_bad) {
		r->p = p;
		return 1;
	}
	/* 6.6.3 step 6: no valid p= (or a bad sp=) */
	if (rua_good) {
		r->p = DMARC_POL_NONE;
		r->sp = DMARC_POL_UNSET;
		r->p_fallback = 1;
		*why = !p_seen ? "no p= tag: p=none for its rua" :
		    sp_bad && p != DMARC_POL_UNSET ? "bad sp= tag: p=none for "
		    "its rua" : "bad p= tag: p=none for its rua";
		return 1;
	}
	*why = !p_seen ? "no p= tag" : p == DMARC_POL_UNSET ? "bad p= tag" :
	    "bad sp= tag";
	return -1;
}

/* ---- the author domain (RFC 7489 6.6.1) ---- */

void
dmarc_from_init(struct dmarc_from *f)
{
	memset(f, 0, sizeof(*f));
	f->status = DMARC_FROM_NONE;
}

static int
dmarc_from_bad(struct dmarc_from *f, const char *why)
{
	f->why = why;
	return -1;
}

/* One mailbox's address (an addr-spec, CFWS already removed). */
static int
dmarc_from_addr(struct dmarc_from *f, const char *a)
{
	struct addr ad;
	const char *why;
	int i;

	if (*a == '\0')
		return dmarc_from_bad(f, "empty address");
	if (addr_parse(a, ADDR_F_UTF8, &ad, &why) != 0)
		return dmarc_from_bad(f, "unparsable address");
	if (ad.domain[0] == '[')
		return dmarc_from_bad(f, "address literal");
	if (strchr(ad.domain, '.') == NULL)
		return dmarc_from_bad(f, "single-label domain");
	for (i = 0; i < f->ndomains; i++)
		if (strcmp(f->domain[i], ad.domain) == 0)
			return 0;
	if (f->ndomains == DMARC_FROM_DOMAINS)
		return dmarc_from_bad(f, "too many domains");
	str_copy(f->domain[f->ndomains++], ad.domain, sizeof(f->domain[0]));
	return 0;
}

/*
 * A mailbox-list (RFC 5322 3.4): mailboxes separated by commas, each an
 * addr-spec or [display-name] "<" addr-spec ">", comments anywhere.
 * Quoted strings are kept in the addr-spec (a quoted local part), left
 * out of a display name.  A group, a second angle-addr or text after
 * one, an unclosed quote, comment or bracket: unparsable.
 */
int
dmarc_from_parse(struct dmarc_from *f, const char *v, size_t len)
{
	char one[1024], ang[1024];
	size_t n = 0, an = 0, i;
	int depth = 0, inangle = 0, hadangle = 0, afterangle = 0;

	for (i = 0; i <= len; i++) {
		char ch = i < len ? v[i] : '\0';

		if (i < len && ch == '\0')
			return dmarc_from_bad(f, "NUL in From:");
		if (depth) {			/* a comment */
			if (ch == '\\' && i + 1 < len)
				i++;
			else if (ch == '(')
				depth++;
			else if (ch == ')')
				depth--;
			else if (ch == '\0')
				return dmarc_from_bad(f, "unclosed comment");
			continue;
		}
		if (ch == '\0' || ch == ',') {
			if (inangle)
				return dmarc_from_bad(f, "unclosed <");
			if (hadangle) {
				ang[an] = '\0';
				if (dmarc_from_addr(f, ang) == -1)
					return -1;
			} else {
				one[n] = '\0';
				if (n == 0 && ch == ',')
					;	/* obs-mbox-list: empty ones */
				else if (dmarc_from_addr(f, one) == -1)
					return -1;
			}
			n = an = 0;
			hadangle = afterangle = 0;
			continue;
		}
		if (ch == '(') {
			depth = 1;
			continue;
		}
		if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n')
			continue;
		if (afterangle)
			return dmarc_from_bad(f, "text after <address>");
		if (ch == '"') {		/* a quoted-string */
			size_t s = i++;

			for (; i < len && v[i] != '"'; i++) {
				if (v[i] == '\\' && i + 1 < len)
					i++;
				if (v[i] == '\0')
					return dmarc_from_bad(f, "NUL in From:");
			}
			if (i >= len)
				return dmarc_from_bad(f, "unclosed quote");
			/* in an addr-spec (or angle-addr) it is the local
			   part; before "<" a display name, dropped later */
			if (inangle) {
				if (an + (i - s + 1) >= sizeof(ang))
					return dmarc_from_bad(f, "too long");
				memcpy(ang + an, v + s, i - s + 1);
				an += i - s + 1;
			} else {
				if (n + (i - s + 1) >= sizeof(one))
					return dmarc_from_bad(f, "too long");
				memcpy(one + n, v + s, i - s + 1);
				n += i - s + 1;
			}
			continue;
		}
		if (ch == '<') {
			if (inangle || hadangle)
				return dmarc_from_bad(f, "several <address>");
			inangle = hadangle = 1;
			continue;
		}
		if (ch == '>') {
			if (!inangle)
				return dmarc_from_bad(f, "stray >");
			inangle = 0;
			afterangle = 1;
			continue;
		}
		if (!inangle && (ch == ':' || ch == ';'))
			return dmarc_from_bad(f, "a group in From:");
		if (inangle) {
			if (an + 1 >= sizeof(ang))
				return dmarc_from_bad(f, "too long");
			ang[an++] = ch;
		} else {
			if (n + 1 >= sizeof(one))
				return dmarc_from_bad(f, "too long");
			one[n++] = ch;
		}
	}
	if (f->ndomains == 0)
		return dmarc_from_bad(f, "no address");
	return 0;
}

/* A whole From: field has been read (f->field, unfolded). */
static void
dmarc_from_field_done(struct dmarc_from *f)
{
	const char *v;

	f->infrom = 0;
	if (++f->fields > 1)
		return;
	if (f->flen >= sizeof(f->field)) {
		f->why = "From: field too long";
		f->status = DMARC_FROM_BAD;
		return;
	}
	f->field[f->flen] = '\0';
	v = memchr(f->field, ':', f->flen);
	if (dmarc_from_parse(f, v + 1, f->flen - (size_t)(v + 1 - f->field))
	    == -1)
		f->status = DMARC_FROM_BAD;
	else
		f->status = DMARC_FROM_OK;
}

/* Is this line the start of a From: field (name, WSP, colon)? */
static int
dmarc_is_from(const char *line, size_t len)
{
	size_t i = 4;

	if (len < 5 || strncasecmp(line, "From", 4) != 0)
		return 0;
	while (i < len && dmarc_wsp((unsigned char)line[i]))
		i++;		/* obs-optional (RFC 5322 4.5) */
	return i < len && line[i] == ':';
}

void
dmarc_from_line(struct dmarc_from *f, const char *line, size_t len)
{
	if (f->done)
		return;
	if (len > 0 && dmarc_wsp((unsigned char)line[0])) {
		if (f->infrom) {	/* a continuation, unfolded */
			size_t room = sizeof(f->field) - f->flen;

			if (len < room) {
				memcpy(f->field + f->flen, line, len);
				f->flen += len;
			} else
				f->flen = sizeof(f->field);
		}
		return;
	}
	if (f->infrom)
		dmarc_from_field_done(f);
	if (len == 0) {
		dmarc_from_end(f);
		return;
	}
	if (dmarc_is_from(line, len)) {
		f->infrom = 1;
		f->flen = 0;
		if (len < sizeof(f->field)) {
			memcpy(f->field, line, len);
			f->flen = len;
		} else
			f->flen = sizeof(f->field);
	}
}

int
dmarc_from_end(struct dmarc_from *f)
{
	if (f->done)
		return f->status;
	if (f->infrom)
		dmarc_from_field_done(f);
	f->done = 1;
	if (f->fields == 0)
		f->status = DMARC_FROM_NONE;
	else if (f->fields > 1)
		f->status = DMARC_FROM_MULTIPLE;
	if (f->status != DMARC_FROM_OK)
		f->ndomains = 0;
	return f->status;
}

int
dmarc_from_header(struct dmarc_from *f, const char *hdr, size_t len)
{
	size_t i = 0;

	dmarc_from_init(f);
	while (i < len && !f->done) {
		const char *nl = memchr(hdr + i, '\n', len - i);
		size_t e = nl ? (size_t)(nl - hdr) : len, l = e - i;

		if (l > 0 && hdr[i + l - 1] == '\r')
			l--;
		dmarc_from_line(f, hdr + i, l);
		i = e + 1;
	}
	return dmarc_from_end(f);
}

const char *
dmarc_from_status_name(int s)
{
	switch (s) {
	case DMARC_FROM_OK: return "ok";
	case DMARC_FROM_NONE: return "no From: field";
	case DMARC_FROM_MULTIPLE: return "several From: fields";
	default: return "unparsable From: field";
	}
}

/* ---- organizational domain and alignment (3.1, 3.2) ---- */

int
dmarc_init(const char *file)
{
	if (dmarc_psl != NULL)
		return 0;
	dmarc_psl = file ? psl_load_file(file) : psl_latest(NULL);
	if (dmarc_psl == NULL)
		dmarc_psl = psl_builtin();
	return dmarc_psl ? 0 : -1;
}

void
dmarc_org_domain(const char *domain, char *out, size_t cap)
{
	char low[256];
	const char *rd = NULL;

	str_copy(low, domain, sizeof(low));
	str_lower(low);
	{
		size_t n = strlen(low);

		if (n > 0 && low[n - 1] == '.')
			low[n - 1] = '\0';
	}
	if (dmarc_psl)
		rd = psl_registrable_domain(dmarc_psl, low);
	str_copy(out, rd ? rd : low, cap);
}

int
dmarc_aligned(const char *from, const char *auth, char mode)
{
	char a[256], b[256];

	if (from == NULL || auth == NULL || *from == '\0' || *auth == '\0')
		return 0;
	if (str_casecmp(from, auth) == 0)
		return 1;
	if (mode == 's')
		return 0;
	dmarc_org_domain(from, a, sizeof(a));
	dmarc_org_domain(auth, b, sizeof(b));
	return strcmp(a, b) == 0;
}

/* ---- policy discovery (6.6.3) ---- */

void
dmarc_txt_free(struct dmarc_txt *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->rec[i]);
	t->n = 0;
}

void
dmarc_txt_take(struct dmarc_txt *t, const char *p, size_t n)
{
	for (size_t i = 0; i < n && t->n < DMARC_TXT_MAX; i++) {
		t->rec[t->n++] = xstrdup(p);
		p += strlen(p) + 1;
	}
}

/*
 * Ask _dmarc.DOMAIN: 1 exactly one DMARC record (in *one, malloc'd), 0
 * none, 2 several, -1 temporary failure.
 */
static int
dmarc_ask(dmarc_txt_fn fn, void *arg, const char *domain, char **one)
{
	struct dmarc_txt t;
	char name[300];
	int r, n = 0;

	*one = NULL;
	if ((size_t)snprintf(name, sizeof(name), "_dmarc.%s", domain) >=
	    sizeof(name))
		return 0;
	memset(&t, 0, sizeof(t));
	r = fn(arg, name, &t);
	if (r == DMARC_DNS_TEMP) {
		dmarc_txt_free(&t);
		return -1;
	}
	for (int i = 0; r == DMARC_DNS_OK && i < t.n; i++) {
		if (!dmarc_record_is_dmarc(t.rec[i]))
			continue;	/* step 2: discarded */
		if (n++ == 0)
			*one = xstrdup(t.rec[i]);
	}
	dmarc_txt_free(&t);
	if (n > 1) {
		free(*one);
		*one = NULL;
		return 2;
	}
	return n;
}

void
dmarc_discover(dmarc_txt_fn fn, void *arg, const char *from,
    struct dmarc_policy_found *pf)
{
	char *rec = NULL;
	int r;

	memset(pf, 0, sizeof(*pf));
	pf->found = DMARC_FOUND_NONE;
	dmarc_org_domain(from, pf->org, sizeof(pf->org));
	str_copy(pf->domain, from, sizeof(pf->domain));
	r = dmarc_ask(fn, arg, from, &rec);
	if (r == 0 && strcmp(pf->org, from) != 0) {	/* step 3 */
		pf->at_org = 1;
		str_copy(pf->domain, pf->org, sizeof(pf->domain));
		r = dmarc_ask(fn, arg, pf->org, &rec);
	}
	if (r == -1) {
		pf->found = DMARC_FOUND_TEMP;
		pf->why = "DNS failure looking up the policy";
		return;
	}
	if (r != 1) {				/* step 5 */
		pf->why = r == 2 ? "several DMARC records" : "no policy";
		free(rec);
		return;
	}
	r = dmarc_record_parse(rec, &pf->rec, &pf->why);
	free(rec);
	if (r == 1)
		pf->found = DMARC_FOUND_RECORD;
}

/* ---- evaluation (6.6.2, 6.6.4) ---- */

void
dmarc_evaluate_domain(const char *from, const struct dmarc_policy_found *pf,
    const struct dmarc_auth *au, unsigned draw, struct dmarc_verdict *v)
{
	int pol, i;

	memset(v, 0, sizeof(*v));
	v->disposition = DMARC_POL_NONE;
	v->policy = DMARC_POL_UNSET;
	str_copy(v->from_domain, from, sizeof(v->from_domain));
	str_copy(v->policy_domain, pf->domain, sizeof(v->policy_domain));
	for (i = 0; i < au->ndkim; i++)
		if (au->dkim[i].pass) {
			str_copy(v->dkim_domain, au->dkim[i].d,
			    sizeof(v->dkim_domain));
			break;
		}
	if (pf->found == DMARC_FOUND_TEMP) {
		v->result = DMARC_RES_TEMPERROR;
		v->reason = pf->why;
		return;
	}
	if (pf->found != DMARC_FOUND_RECORD) {
		v->result = DMARC_RES_NONE;
		v->reason = pf->why ? pf->why : "no policy";
		return;
	}
	v->rec = pf->rec;
	v->has_rec = 1;
	/* alignment is checked even for pass/none, for the reports */
	v->spf_aligned = au->spf == SPF_PASS &&
	    dmarc_aligned(from, au->spf_domain, pf->rec.aspf);
	for (i = 0; i < au->ndkim; i++)
		if (au->dkim[i].pass && dmarc_aligned(from, au->dkim[i].d,
		    pf->rec.adkim)) {
			v->dkim_aligned = 1;
			str_copy(v->dkim_domain, au->dkim[i].d,
			    sizeof(v->dkim_domain));
			break;
		}
	/* sp= for a subdomain whose record came from the org domain */
	pol = pf->rec.p;
	if (pf->at_org && pf->rec.sp != DMARC_POL_UNSET)
		pol = pf->rec.sp;
	v->policy = pol;
	if (v->spf_aligned || v->dkim_aligned) {
		v->result = DMARC_RES_PASS;
		v->reason = v->dkim_aligned ? "aligned DKIM pass" :
		    "aligned SPF pass";
		return;
	}
	v->result = DMARC_RES_FAIL;
	v->disposition = pol;
	v->reason = au->spf == SPF_PASS || au->ndkim > 0 ?
	    "no aligned SPF or DKIM pass" : "no SPF or DKIM pass";
	/* 6.6.4: a message outside pct gets the next weaker policy */
	if (pol != DMARC_POL_NONE && draw >= (unsigned)pf->rec.pct) {
		v->sampled_out = 1;
		v->disposition = pol - 1;
	}
}

static int
dmarc_worse(const struct dmarc_verdict *a, const struct dmarc_verdict *b)
{
	static const int rank[] = { [DMARC_RES_PASS] = 0,
	    [DMARC_RES_NONE] = 1, [DMARC_RES_TEMPERROR] = 2,
	    [DMARC_RES_FAIL] = 3, [DMARC_RES_PERMERROR] = 4 };

	if (a->disposition != b->disposition)
		return a->disposition > b->disposition;
	return rank[a->result] > rank[b->result];
}

void
dmarc_evaluate(const struct dmarc_from *f,
    const struct dmarc_policy_found *found, const struct dmarc_auth *au,
    unsigned draw, struct dmarc_verdict *v)
{
	struct dmarc_verdict one;

	memset(v, 0, sizeof(*v));
	if (f->status != DMARC_FROM_OK || f->ndomains == 0) {
		/* 6.6.1: not one evaluable author domain; RFC 5322 3.6
		   wants exactly one From: field */
		v->result = DMARC_RES_PERMERROR;
		v->disposition = DMARC_POL_REJECT;
		v->policy = DMARC_POL_UNSET;
		v->reason = f->status == DMARC_FROM_BAD && f->why ? f->why :
		    dmarc_from_status_name(f->status);
		return;
	}
	for (int i = 0; i < f->ndomains; i++) {
		dmarc_evaluate_domain(f->domain[i], &found[i], au, draw, &one);
		if (i == 0 || dmarc_worse(&one, v))
			*v = one;
	}
}

const char *
dmarc_result_name(enum dmarc_result r)
{
	switch (r) {
	case DMARC_RES_PASS: return "pass";
	case DMARC_RES_FAIL: return "fail";
	case DMARC_RES_TEMPERROR: return "temperror";
	case DMARC_RES_PERMERROR: return "permerror";
	default: return "none";
	}
}

const char *
dmarc_policy_name(int p)
{
	switch (p) {
	case DMARC_POL_NONE: return "none";
	case DMARC_POL_QUARANTINE: return "quarantine";
	case DMARC_POL_REJECT: return "reject";
	default: return "unset";
	}
}

void
dmarc_ar_part(struct buf *b, const struct dmarc_verdict *v)
{
	buf_printf(b, "dmarc=%s", dmarc_result_name(v->result));
	if (v->reason)
		buf_printf(b, " (%s%s)", v->reason, v->sampled_out ?
		    ", pct sampled out" : "");
	if (v->from_domain[0])
		buf_printf(b, " header.from=%s", v->from_domain);
	if (v->has_rec)
		buf_printf(b, " policy.dmarc=%s",
		    dmarc_policy_name(v->policy));
}

/* ---- the evaluation store's record ---- */

void
dmarc_store_encode(struct buf *b, uint64_t when, const char *ip,
    const char *mailfrom, const struct dmarc_auth *au,
    const struct dmarc_verdict *v, int disposition, const char *override)
{
	char one[300];

	rec_put_u64(b, DS_TIME, when);
	rec_put_str(b, DS_IP, ip);
	rec_put_str(b, DS_FROM, v->from_domain);
	rec_put_str(b, DS_MAILFROM, mailfrom);
	rec_put_str(b, DS_SPF, spf_result_name(au->spf));
	rec_put_str(b, DS_SPF_DOMAIN, au->spf_domain);
	for (int i = 0; i < au->ndkim && i < DMARC_DKIM_MAX; i++) {
		snprintf(one, sizeof(one), "d=%s %s", au->dkim[i].d,
		    au->dkim[i].pass ? "pass" : "fail");
		rec_put_str(b, DS_DKIM, one);
	}
	rec_put_str(b, DS_POLICY_DOMAIN, v->has_rec ? v->policy_domain : "");
	rec_put_str(b, DS_P, v->has_rec ? dmarc_policy_name(v->policy) : "");
	rec_put_str(b, DS_SP, v->has_rec && v->rec.sp != DMARC_POL_UNSET ?
	    dmarc_policy_name(v->rec.sp) : "");
	rec_put_u64(b, DS_PCT, v->has_rec ? (uint64_t)v->rec.pct : 100);
	rec_put_str(b, DS_ADKIM, v->has_rec && v->rec.adkim == 's' ? "s" : "r");
	rec_put_str(b, DS_ASPF, v->has_rec && v->rec.aspf == 's' ? "s" : "r");
	rec_put_str(b, DS_RESULT, dmarc_result_name(v->result));
	rec_put_str(b, DS_DISPOSITION, dmarc_policy_name(disposition));
	rec_put_u64(b, DS_SPF_ALIGNED, (uint64_t)v->spf_aligned);
	rec_put_u64(b, DS_DKIM_ALIGNED, (uint64_t)v->dkim_aligned);
	rec_put_str(b, DS_OVERRIDE, override ? override : "");
	rec_put_str(b, DS_RUA, v->has_rec ? v->rec.rua : "");
	rec_put_str(b, DS_REASON, v->reason ? v->reason : "");
}

int
dmarc_store_check(const void *p, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	unsigned seen = 0;
	int n;

	rec_reader_init(&rd, p, len);
	while ((n = rec_next(&rd, &r)) == 1) {
		int u64 = r.tag == DS_TIME || r.tag == DS_PCT ||
		    r.tag == DS_SPF_ALIGNED || r.tag == DS_DKIM_ALIGNED;

		if (r.tag == 0 || r.tag >= DS__MAX || r.len > DMARC_URI_MAX ||
		    (u64 && r.len != 8) ||
		    (!u64 && memchr(r.data, '\0', r.len) != NULL))
			return -1;
		if (r.tag < 32)
			seen |= 1u << r.tag;
	}
	if (n != 0)
		return -1;
	/* the time, the client, the result and what was done */
	return (seen & (1u << DS_TIME | 1u << DS_IP | 1u << DS_RESULT |
	    1u << DS_DISPOSITION)) == (1u << DS_TIME | 1u << DS_IP |
	    1u << DS_RESULT | 1u << DS_DISPOSITION) ? 0 : -1;
}
