/*
 * dkimsign: a message's DKIM signature, built in the smtp process and
 * signed by the vault (see dkimsign.h).  The room for the fields is the
 * same length as the fields: the signature's length is known from the
 * key's facts the parent sent at start (auth/dkim.h), so the stored
 * message needs no second pass.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/dkim.h"
#include "auth/vault.h"
#include "lib/util.h"
#include "smtpd/dkimsign.h"

struct dsign {
	struct dkim_sign		*ds;
	const struct dkim_keyinfo	*keys[DKIM_DOMAIN_KEYS];
	size_t				 nkeys;
	off_t				 off;		/* the room in the file */
	size_t				 len;
	int				 done;		/* header ended */
};

struct dsign *
dsign_new(void)
{
	struct dsign *d;

	if (dkim_keys_count() == 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	if ((d->ds = dkim_sign_new(time(NULL))) == NULL) {
		free(d);
		return NULL;
	}
	return d;
}

void
dsign_free(struct dsign *d)
{
	if (d == NULL)
		return;
	dkim_sign_free(d->ds);
	free(d);
}

void
dsign_hline(struct dsign *d, const char *line, size_t len)
{
	if (!d->done)
		dkim_sign_hline(d->ds, line, len);
}

void
dsign_htext(struct dsign *d, const char *text, size_t len)
{
	const char *nl;

	while (len >= 2 && (nl = memchr(text, '\n', len)) != NULL &&
	    nl > text && nl[-1] == '\r') {
		dsign_hline(d, text, (size_t)(nl - 1 - text));
		len -= (size_t)(nl + 1 - text);
		text = nl + 1;
	}
}

size_t
dsign_hend(struct dsign *d, struct buf *wbuf, off_t off)
{
	const char *domain;

	if (d->done)
		return 0;
	d->done = 1;
	if ((domain = dkim_sign_hend(d->ds)) == NULL)
		return 0;
	d->nkeys = dkim_keys_find(domain, d->keys, DKIM_DOMAIN_KEYS);
	d->off = off;
	d->len = dkim_sign_reserve(d->ds, d->keys, d->nkeys, wbuf);
	return d->len;
}

void
dsign_bline(struct dsign *d, const char *line, size_t len)
{
	if (d->done)
		dkim_sign_bline(d->ds, line, len);
}

int
dsign_request(struct dsign *d, vault_cb cb, uint64_t cookie)
{
	unsigned char dig[DKIM_DOMAIN_KEYS][DKIM_DIGEST_LEN];
	const char *sel[DKIM_DOMAIN_KEYS];
	size_t i, n;

	if (d->len == 0)
		return 1;
	n = dkim_sign_digests(d->ds, dig, DKIM_DOMAIN_KEYS);
	if (n != d->nkeys)
		return -1;
	for (i = 0; i < n; i++)
		sel[i] = d->keys[i]->selector;
	return vault_dkim_sign(dkim_sign_domain(d->ds), sel,
	    (const unsigned char (*)[32])dig, n, cb, cookie) == 0 ? 0 : -1;
}

int
dsign_write(struct dsign *d, int fd, int status, const char *sigs,
    const char **why)
{
	char *copy, *sig[DKIM_DOMAIN_KEYS], *p, *sp;
	struct buf out;
	size_t n = 0;
	ssize_t w;
	int rv = -1;

	*why = status == VAULT_NONE ? "the vault holds no such key" :
	    "vault unavailable";
	if (status != VAULT_OK || sigs == NULL)
		return -1;
	copy = xstrdup(sigs);
	for (p = copy; p != NULL && n < DKIM_DOMAIN_KEYS; p = sp) {
		if ((sp = strchr(p, ' ')) != NULL)
			*sp++ = '\0';
		sig[n++] = p;
	}
	buf_init(&out);
	*why = "a signature of the wrong length";
	if (dkim_sign_fields(d->ds, sig, n, &out) == 0 && out.len == d->len) {
		w = pwrite(fd, out.data, out.len, d->off);
		*why = w == (ssize_t)out.len ? NULL : "spool write";
		rv = w == (ssize_t)out.len ? 0 : -1;
	}
	buf_free(&out);
	free(copy);
	return rv;
}

void
dsign_describe(const struct dsign *d, char *out, size_t len)
{
	const char *dom = dkim_sign_domain(d->ds);
	struct buf b;
	size_t i;

	buf_init(&b);
	buf_printf(&b, "d=%s s=", dom ? dom : "");
	for (i = 0; i < d->nkeys; i++)
		buf_printf(&b, "%s%s", i ? "," : "", d->keys[i]->selector);
	str_copy(out, b.data, len);
	buf_free(&b);
}
