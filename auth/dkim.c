/*
 * dkim: canonicalization, body hashing and the signer's state for one
 * message (see dkim.h).  Runs in the smtp process (and in unit tests): it
 * holds no key and does no I/O.  The body is hashed line by line as DATA
 * streams in; only the header fields it signs are kept, bounded.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "auth/dkim.h"
#include "lib/util.h"

/* The fields signed when present (RFC 6376 5.4.1); From is oversigned. */
static const char *const dkim_signed[] = {
	"from", "reply-to", "subject", "date", "to", "cc", "message-id",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding",
};
#define DKIM_NSIGNED	(sizeof(dkim_signed) / sizeof(dkim_signed[0]))
#define DKIM_FIELDS_MAX	256	/* signed fields kept at most */
#define DKIM_FOLD	72	/* base64 characters per line of b= */

static int
dkim_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* ---- canonicalization ---------------------------------------------------- */

void
dkim_canon_header(int relaxed, const char *f, size_t len, struct buf *out)
{
	size_t i, colon, end;
	int sp = 0, started = 0;

	if (!relaxed) {
		buf_append(out, f, len);
		buf_append(out, "\r\n", 2);
		return;
	}
	for (colon = 0; colon < len && f[colon] != ':'; colon++)
		;
	/* The name, lower-cased, without the whitespace before the colon. */
	for (end = colon; end > 0 && (dkim_wsp(f[end - 1]) ||
	    f[end - 1] == '\r' || f[end - 1] == '\n'); end--)
		;
	for (i = 0; i < end; i++)
		buf_putc(out, (f[i] >= 'A' && f[i] <= 'Z') ? f[i] + 32 : f[i]);
	buf_putc(out, ':');
	/* The value: unfolded, runs of WSP made one SP, trimmed both ends. */
	for (i = colon + 1; i < len; i++) {
		char c = f[i];

		if (c == '\r' || c == '\n')
			continue;
		if (dkim_wsp(c)) {
			sp = 1;
			continue;
		}
		if (sp && started)
			buf_putc(out, ' ');
		sp = 0;
		started = 1;
		buf_putc(out, c);
	}
	buf_append(out, "\r\n", 2);
}

static EVP_MD *dkim_md;
static pthread_once_t dkim_md_once = PTHREAD_ONCE_INIT;

static void
dkim_md_fetch(void)
{
	dkim_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

const EVP_MD *
dkim_sha256(void)
{
	pthread_once(&dkim_md_once, dkim_md_fetch);
	return dkim_md ? dkim_md : EVP_sha256();
}

int
dkim_body_init(struct dkim_body *b, int relaxed)
{
	memset(b, 0, sizeof(*b));
	b->relaxed = relaxed;
	b->limit = -1;
	if ((b->md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(b->md, dkim_sha256(), NULL) != 1) {
		dkim_body_free(b);
		return -1;
	}
	return 0;
}

static void
dkim_body_put(struct dkim_body *b, const char *p, size_t len)
{
	uint64_t at = b->count;

	b->count += len;
	if (b->limit >= 0) {	/* l= (RFC 6376 3.5): the first octets only */
		if (at >= (uint64_t)b->limit)
			return;
		if (len > (uint64_t)b->limit - at)
			len = (size_t)((uint64_t)b->limit - at);
	}
	if (len)
		EVP_DigestUpdate(b->md, p, len);
}

/* Empty lines wait: those at the end are not hashed (3.4.3, 3.4.4). */
static void
dkim_body_flush(struct dkim_body *b)
{
	for (; b->empty > 0; b->empty--)
		dkim_body_put(b, "\r\n", 2);
	b->any = 1;
}

void
dkim_body_line(struct dkim_body *b, const char *line, size_t len)
{
	char tmp[1024];
	size_t i, n = 0, end = len;
	int sp = 0;

	if (b->md == NULL)
		return;
	if (!b->relaxed) {
		if (len == 0) {
			b->empty++;
			return;
		}
		dkim_body_flush(b);
		dkim_body_put(b, line, len);
		dkim_body_put(b, "\r\n", 2);
		return;
	}
	while (end > 0 && dkim_wsp(line[end - 1]))
		end--;
	if (end == 0) {
		b->empty++;
		return;
	}
	dkim_body_flush(b);
	for (i = 0; i < end; i++) {
		if (dkim_wsp(line[i])) {
			sp = 1;
			continue;
		}
		if (sp)
			tmp[n++] = ' ';
		sp = 0;
		tmp[n++] = line[i];
		if (n >= sizeof(tmp) - 2) {
			dkim_body_put(b, tmp, n);
			n = 0;
		}
	}
	tmp[n++] = '\r';
	tmp[n++] = '\n';
	dkim_body_put(b, tmp, n);
}

void
dkim_body_final(struct dkim_body *b, unsigned char out[DKIM_DIGEST_LEN])
{
	unsigned int n = DKIM_DIGEST_LEN;

	memset(out, 0, DKIM_DIGEST_LEN);
	if (b->md == NULL)
		return;
	/* An empty body is one CRLF in simple, nothing in relaxed. */
	if (!b->any && !b->relaxed)
		dkim_body_put(b, "\r\n", 2);
	EVP_DigestFinal_ex(b->md, out, &n);
	dkim_body_free(b);
}

void
dkim_body_free(struct dkim_body *b)
{
	EVP_MD_CTX_free(b->md);
	b->md = NULL;
}

/* The canonical text itself, for tests: the same rules, unhashed. */
void
dkim_canon_body(int relaxed, const char *text, size_t len, struct buf *out)
{
	size_t pos = 0, empty = 0, i, end;
	int any = 0;

	while (pos < len) {
		const char *nl = NULL;
		size_t llen;
		int sp = 0;

		for (i = pos; i + 1 < len; i++)
			if (text[i] == '\r' && text[i + 1] == '\n') {
				nl = text + i;
				break;
			}
		llen = nl ? (size_t)(nl - (text + pos)) : len - pos;
		end = llen;
		if (relaxed)
			while (end > 0 && dkim_wsp(text[pos + end - 1]))
				end--;
		if (end == 0)
			empty++;
		else {
			for (; empty > 0; empty--)
				buf_append(out, "\r\n", 2);
			any = 1;
			for (i = 0; i < end; i++) {
				char c = text[pos + i];

				if (relaxed && dkim_wsp(c)) {
					sp = 1;
					continue;
				}
				if (sp)
					buf_putc(out, ' ');
				sp = 0;
				buf_putc(out, c);
			}
			buf_append(out, "\r\n", 2);
		}
		pos += llen + (nl ? 2 : 0);
	}
	if (!any && !relaxed)
		buf_append(out, "\r\n", 2);
}

/* ---- the smtp process's table of keys -------------------------------------- */

static struct {
	struct dkim_keyinfo	k[DKIM_KEYS_MAX];
	size_t			n;
} dk;

const char *
dkim_alg_name(int alg)
{
	return alg == DKIM_ALG_ED25519 ? "ed25519-sha256" : "rsa-sha256";
}

void
dkim_keyinfo_format(const struct dkim_keyinfo *k, struct buf *b)
{
	buf_printf(b, "%d %zu %s %s", k->alg, k->siglen, k->domain,
	    k->selector);
}

int
dkim_keyinfo_parse(const char *s, size_t len, struct dkim_keyinfo *k)
{
	char tmp[512], dom[512], sel[512];
	int alg;
	size_t siglen;

	if (len >= sizeof(tmp) || memchr(s, '\0', len))
		return -1;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (sscanf(tmp, "%d %zu %511s %511s", &alg, &siglen, dom, sel) != 4 ||
	    (alg != DKIM_ALG_RSA && alg != DKIM_ALG_ED25519) || siglen == 0 ||
	    siglen > DKIM_SIG_MAX || strlen(dom) > DKIM_DOMAIN_MAX ||
	    strlen(sel) > DKIM_SELECTOR_MAX)
		return -1;
	memset(k, 0, sizeof(*k));
	k->alg = alg;
	k->siglen = siglen;
	str_copy(k->domain, dom, sizeof(k->domain));
	str_copy(k->selector, sel, sizeof(k->selector));
	return 0;
}

void
dkim_keys_add(const struct dkim_keyinfo *k)
{
	if (dk.n < DKIM_KEYS_MAX)
		dk.k[dk.n++] = *k;
}

size_t
dkim_keys_find(const char *domain, const struct dkim_keyinfo **out,
    size_t max)
{
	size_t i, n = 0;

	for (i = 0; i < dk.n && n < max; i++)
		if (strcasecmp(dk.k[i].domain, domain) == 0)
			out[n++] = &dk.k[i];
	return n;
}

size_t
dkim_keys_count(void)
{
	return dk.n;
}

/* ---- the signer ------------------------------------------------------------- */

struct dkim_field {
	int	 which;		/* index into dkim_signed */
	char	*text;		/* as it arrived, folds as CRLF, no final CRLF */
	size_t	 len;
};

struct dkim_sign {
	time_t			 t;
	struct buf		 cur;		/* the field being read */
	int			 curkeep;	/* ...is one we sign */
	struct dkim_field	 f[DKIM_FIELDS_MAX];
	size_t			 nf;
	size_t			 kept;		/* bytes in f */
	int			 bad;		/* too much to keep */
	char			 domain[DKIM_DOMAIN_MAX + 1];
	struct dkim_body	 body;
	struct dkim_keyinfo	 keys[DKIM_DOMAIN_KEYS];
	size_t			 nkeys;
	size_t			 reserved;
	unsigned char		 bh[DKIM_DIGEST_LEN];
	char			 bh64[64];
	struct buf		 hlist;		/* h= */
};

struct dkim_sign *
dkim_sign_new(time_t now)
{
	struct dkim_sign *ds = xcalloc(1, sizeof(*ds));

	ds->t = now;
	if (dkim_body_init(&ds->body, 1) == -1) {
		free(ds);
		return NULL;
	}
	return ds;
}

void
dkim_sign_free(struct dkim_sign *ds)
{
	size_t i;

	if (ds == NULL)
		return;
	for (i = 0; i < ds->nf; i++)
		free(ds->f[i].text);
	buf_free(&ds->cur);
	buf_free(&ds->hlist);
	dkim_body_free(&ds->body);
	free(ds);
}

static int
dkim_signed_index(const char *f, size_t len)
{
	size_t i, n, m;

	for (n = 0; n < len && f[n] != ':' && !dkim_wsp(f[n]); n++)
		;
	for (m = n; m < len && dkim_wsp(f[m]); m++)
		;
	if (m >= len || f[m] != ':')
		return -1;	/* no colon: not a field */
	for (i = 0; i < DKIM_NSIGNED; i++)
		if (strlen(dkim_signed[i]) == n &&
		    strncasecmp(f, dkim_signed[i], n) == 0)
			return (int)i;
	return -1;
}

static void
dkim_sign_field_done(struct dkim_sign *ds)
{
	struct dkim_field *f;

	if (ds->curkeep && !ds->bad) {
		if (ds->nf >= DKIM_FIELDS_MAX)
			ds->bad = 1;
		else {
			f = &ds->f[ds->nf++];
			f->which = dkim_signed_index(ds->cur.data, ds->cur.len);
			f->len = ds->cur.len;
			f->text = xstrndup(ds->cur.data, ds->cur.len);
		}
	}
	buf_reset(&ds->cur);
	ds->curkeep = 0;
}

void
dkim_sign_hline(struct dkim_sign *ds, const char *line, size_t len)
{
	if (len > 0 && dkim_wsp(line[0])) {
		if (!ds->curkeep)
			return;
		buf_append(&ds->cur, "\r\n", 2);
	} else {
		dkim_sign_field_done(ds);
		ds->curkeep = dkim_signed_index(line, len) >= 0;
		if (!ds->curkeep)
			return;
	}
	if (ds->kept + len + 2 > DKIM_HEADERS_MAX) {
		ds->bad = 1;
		return;
	}
	ds->kept += len + 2;
	buf_append(&ds->cur, line, len);
}

/*
 * The domain of the one address of a From: value, comments and display
 * name left out; 0, or -1 when there is not exactly one such address.
 */
static int
dkim_from_domain(const char *v, size_t len, char *out, size_t outlen)
{
	char addr[1024];
	size_t i, n = 0;
	int depth = 0, quoted = 0, angle = 0, addrs = 0, inaddr = 0, cut = 0;
	const char *at;

	for (i = 0; i < len; i++) {
		char c = v[i];

		if (quoted) {
			if (c == '\\' && i + 1 < len)
				i++;
			else if (c == '"')
				quoted = 0;
			continue;
		}
		if (depth) {
			if (c == '\\' && i + 1 < len)
				i++;
			else
				depth += c == '(' ? 1 : c == ')' ? -1 : 0;
			continue;
		}
		if (c == '(')
			depth = 1;
		else if (c == '"' && !angle)
			quoted = 1;
		else if (c == '<') {
			angle = 1;
			n = 0;
			cut = 0;
		} else if (c == '>' && angle) {
			angle = 0;
			inaddr = 1;
		} else if (c == ',' && !angle) {
			addrs++;
			inaddr = 0;
		} else if (c == '\r' || c == '\n' || dkim_wsp(c))
			;
		else if (!inaddr && n + 1 < sizeof(addr))
			addr[n++] = c;
		else if (!inaddr)
			cut = 1;	/* too long: its domain is not known */
	}
	if (addrs != 0 || depth || quoted || angle || n == 0 || cut)
		return -1;
	addr[n] = '\0';
	if ((at = strrchr(addr, '@')) == NULL || at[1] == '\0' ||
	    strlen(at + 1) >= outlen || strlen(at + 1) > DKIM_DOMAIN_MAX)
		return -1;
	for (i = 1; at[i]; i++)
		if (!((at[i] >= 'a' && at[i] <= 'z') || (at[i] >= 'A' &&
		    at[i] <= 'Z') || (at[i] >= '0' && at[i] <= '9') ||
		    at[i] == '-' || at[i] == '.'))
			return -1;
	str_copy(out, at + 1, outlen);
	str_lower(out);
	return 0;
}

const char *
dkim_sign_hend(struct dkim_sign *ds)
{
	const struct dkim_field *from = NULL;
	const char *colon;
	size_t i;

	dkim_sign_field_done(ds);
	if (ds->bad)
		return NULL;
	for (i = 0; i < ds->nf; i++)
		if (ds->f[i].which == 0) {
			if (from != NULL)
				return NULL;	/* several From: fields */
			from = &ds->f[i];
		}
	if (from == NULL || (colon = memchr(from->text, ':', from->len)) ==
	    NULL || dkim_from_domain(colon + 1, from->len - (size_t)(colon + 1 -
	    from->text), ds->domain, sizeof(ds->domain)) == -1) {
		ds->domain[0] = '\0';
		return NULL;
	}
	return ds->domain;
}

const char *
dkim_sign_domain(const struct dkim_sign *ds)
{
	return ds->domain[0] ? ds->domain : NULL;
}

/* h=: each present field once per instance, From once more. */
static void
dkim_sign_hlist(struct dkim_sign *ds)
{
	size_t i, j, count;

	buf_reset(&ds->hlist);
	for (i = 0; i < DKIM_NSIGNED; i++) {
		for (count = 0, j = 0; j < ds->nf; j++)
			count += ds->f[j].which == (int)i;
		if (i == 0)
			count++;
		for (j = 0; j < count; j++)
			buf_printf(&ds->hlist, "%s%s", ds->hlist.len ? ":" : "",
			    dkim_signed[i]);
	}
}

/* The field for one key; b64 NULL: with "b=" empty, as it is hashed. */
static void
dkim_sign_text(const struct dkim_sign *ds, const struct dkim_keyinfo *k,
    const char *bh64, const char *b64, struct buf *out)
{
	size_t n, i;

	buf_printf(out, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;\r\n"
	    "\td=%s; s=%s; t=%lld;\r\n\th=%s;\r\n\tbh=%s;\r\n\tb=",
	    dkim_alg_name(k->alg), ds->domain, k->selector, (long long)ds->t,
	    ds->hlist.data, bh64);
	if (b64 == NULL)
		return;
	n = strlen(b64);
	for (i = 0; i < n; i += DKIM_FOLD) {
		if (i > 0)
			buf_append(out, "\r\n\t ", 4);
		buf_append(out, b64 + i, n - i < DKIM_FOLD ? n - i : DKIM_FOLD);
	}
	buf_append(out, "\r\n", 2);
}

static size_t
dkim_b64len(size_t n)
{
	return 4 * ((n + 2) / 3);
}

size_t
dkim_sign_reserve(struct dkim_sign *ds, const struct dkim_keyinfo **keys,
    size_t nkeys, struct buf *out)
{
	char fake[DKIM_SIG_MAX * 2], bh[64];
	size_t i, start = out->len;

	if (ds->domain[0] == '\0' || nkeys == 0)
		return 0;
	dkim_sign_hlist(ds);
	memset(bh, 'A', 44);
	bh[44] = '\0';
	for (i = 0; i < nkeys && i < DKIM_DOMAIN_KEYS; i++) {
		ds->keys[i] = *keys[i];
		memset(fake, 'A', dkim_b64len(keys[i]->siglen));
		fake[dkim_b64len(keys[i]->siglen)] = '\0';
		dkim_sign_text(ds, keys[i], bh, fake, out);
	}
	ds->nkeys = i;
	ds->reserved = out->len - start;
	return ds->reserved;
}

void
dkim_sign_bline(struct dkim_sign *ds, const char *line, size_t len)
{
	dkim_body_line(&ds->body, line, len);
}

/* The signed fields, bottom-up per name (RFC 6376 5.4.2), canonical. */
static void
dkim_sign_hashed(const struct dkim_sign *ds, struct buf *out)
{
	size_t used[DKIM_NSIGNED] = { 0 }, i, j, seen;
	const char *h = ds->hlist.data;

	while (h && *h) {
		size_t n = strcspn(h, ":");

		for (i = 0; i < DKIM_NSIGNED; i++)
			if (strlen(dkim_signed[i]) == n &&
			    strncmp(h, dkim_signed[i], n) == 0)
				break;
		/* The (used[i]+1)-th instance from the bottom, if any. */
		for (seen = 0, j = ds->nf; j > 0; j--)
			if (ds->f[j - 1].which == (int)i && seen++ == used[i]) {
				dkim_canon_header(1, ds->f[j - 1].text,
				    ds->f[j - 1].len, out);
				break;
			}
		if (i < DKIM_NSIGNED)
			used[i]++;
		h += n + (h[n] == ':');
	}
}

/* SHA-256 of the signed fields and then the signature field itself. */
static int
dkim_sign_digest(const struct buf *hdrs, const struct buf *self,
    unsigned char out[DKIM_DIGEST_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int dl = DKIM_DIGEST_LEN;
	int ok;

	ok = md != NULL && EVP_DigestInit_ex(md, dkim_sha256(), NULL) == 1 &&
	    EVP_DigestUpdate(md, hdrs->data ? hdrs->data : "", hdrs->len) == 1 &&
	    EVP_DigestUpdate(md, self->data, self->len) == 1 &&
	    EVP_DigestFinal_ex(md, out, &dl) == 1;
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

size_t
dkim_sign_digests(struct dkim_sign *ds, unsigned char d[][DKIM_DIGEST_LEN],
    size_t max)
{
	struct buf hdrs, self, canon;
	size_t i, n = 0;

	dkim_body_final(&ds->body, ds->bh);
	EVP_EncodeBlock((unsigned char *)ds->bh64, ds->bh, DKIM_DIGEST_LEN);
	buf_init(&hdrs);
	dkim_sign_hashed(ds, &hdrs);
	for (i = 0; i < ds->nkeys && i < max; i++) {
		buf_init(&self);
		buf_init(&canon);
		dkim_sign_text(ds, &ds->keys[i], ds->bh64, NULL, &self);
		dkim_canon_header(1, self.data, self.len, &canon);
		canon.len -= 2;		/* the field hashed has no CRLF */
		if (dkim_sign_digest(&hdrs, &canon, d[i]) == 0)
			n++;
		buf_free(&self);
		buf_free(&canon);
		if (n != i + 1)
			break;
	}
	buf_free(&hdrs);
	return n;
}

int
dkim_sign_fields(struct dkim_sign *ds, char *const sigs[], size_t n,
    struct buf *out)
{
	size_t i, start = out->len;

	if (n != ds->nkeys)
		return -1;
	for (i = 0; i < n; i++) {
		if (strlen(sigs[i]) != dkim_b64len(ds->keys[i].siglen))
			return -1;
		dkim_sign_text(ds, &ds->keys[i], ds->bh64, sigs[i], out);
	}
	return out->len - start == ds->reserved ? 0 : -1;
}
