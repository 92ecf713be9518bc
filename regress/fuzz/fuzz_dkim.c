/*
 * fuzz_dkim: the DKIM signer on arbitrary messages, as a client sends
 * them: header lines kept and parsed for From:'s domain, the room
 * reserved, body lines hashed, the fields written with signatures of
 * the right length.  The fields written are always exactly as long as
 * the room, and the canonical forms never grow past their input's
 * bounds.  The body hash as the signer streams it, line by line, is the
 * hash of the canonical body the tests compare with (dkim_canon_body),
 * in both canonicalizations.  The signing domain is one the header
 * names whole, after an '@'.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "auth/dkim.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* The streamed body hash against the reference canonical text. */
static void
check_body(struct dkim_body bd[2], const struct buf *text)
{
	unsigned char got[DKIM_DIGEST_LEN], want[DKIM_DIGEST_LEN];
	struct buf canon;

	for (int relaxed = 0; relaxed < 2; relaxed++) {
		buf_init(&canon);
		dkim_canon_body(relaxed, text->data ? text->data : "", text->len,
		    &canon);
		dkim_body_final(&bd[relaxed], got);
		if (EVP_Digest(canon.data ? canon.data : "", canon.len, want,
		    NULL, EVP_sha256(), NULL) != 1 ||
		    memcmp(got, want, sizeof(got)) != 0)
			abort();
		buf_free(&canon);
	}
}

/*
 * "@domain" in the header, whitespace left out (a field per line, folds
 * joined), and not followed by more of a domain.  Comments and quoted strings need a parser: a header with
 * any is not checked.
 */
static void
check_domain(const char *dom, const struct buf *head)
{
	size_t n = strlen(dom), k = 0;
	char *h, *p;

	if (head->len == 0 || memchr(head->data, '(', head->len) ||
	    memchr(head->data, '"', head->len) ||
	    memchr(head->data, '\\', head->len) ||
	    (h = malloc(head->len + 1)) == NULL)
		return;
	for (size_t i = 0; i < head->len; i++)
		if (!strchr(" \t\r", head->data[i]) || head->data[i] == '\0')
			h[k++] = head->data[i];
	h[k] = '\0';
	for (p = h; (p = memchr(p, '@', k - (size_t)(p - h))) != NULL; p++)
		if (strncasecmp(p + 1, dom, n) == 0 && (p[n + 1] == '\0' ||
		    !(isalnum((unsigned char)p[n + 1]) || p[n + 1] == '.' ||
		    p[n + 1] == '-'))) {
			free(h);
			return;
		}
	abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static const struct dkim_keyinfo ed = { "x", "ed1", DKIM_ALG_ED25519,
	    64 }, rsa = { "x", "r", DKIM_ALG_RSA, 256 };
	const struct dkim_keyinfo *keys[] = { &ed, &rsa };
	unsigned char d[2][DKIM_DIGEST_LEN];
	char s1[89], s2[345], *sigs[2] = { s1, s2 };
	const char *p = (const char *)data, *end = p + len, *nl;
	struct dkim_sign *ds = dkim_sign_new(1700000000);
	struct buf room, out, canon, body, head;
	const char *dom;
	struct dkim_body bd[2];
	int inhead = 1;

	buf_init(&room);
	buf_init(&out);
	buf_init(&canon);
	buf_init(&body);
	buf_init(&head);
	if (dkim_body_init(&bd[0], 0) == -1 || dkim_body_init(&bd[1], 1) == -1)
		abort();
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (inhead && n == 0) {
			inhead = 0;
			if ((dom = dkim_sign_hend(ds)) != NULL) {
				check_domain(dom, &head);
				dkim_sign_reserve(ds, keys, 2, &room);
			}
		} else if (inhead) {
			dkim_sign_hline(ds, p, n);
			if (n == 0 || (p[0] != ' ' && p[0] != '\t'))
				buf_putc(&head, '\n');
			buf_append(&head, p, n);
			buf_reset(&canon);
			dkim_canon_header(1, p, n, &canon);
			if (canon.len > n + 3)
				abort();
		} else {
			dkim_sign_bline(ds, p, n);
			dkim_body_line(&bd[0], p, n);
			dkim_body_line(&bd[1], p, n);
			buf_append(&body, p, n);
			buf_append(&body, "\r\n", 2);
		}
		p = nl ? nl + 1 : end;
	}
	if (inhead && (dom = dkim_sign_hend(ds)) != NULL) {
		check_domain(dom, &head);
		dkim_sign_reserve(ds, keys, 2, &room);
	}
	if (room.len > 0) {
		if (dkim_sign_digests(ds, d, 2) != 2)
			abort();
		memset(s1, 'a', 88);
		s1[88] = '\0';
		memset(s2, 'b', 344);
		s2[344] = '\0';
		if (dkim_sign_fields(ds, sigs, 2, &out) != 0 ||
		    out.len != room.len)
			abort();
	}
	check_body(bd, &body);
	buf_free(&body);
	buf_free(&head);
	buf_free(&room);
	buf_free(&out);
	buf_free(&canon);
	dkim_sign_free(ds);
	return 0;
}
