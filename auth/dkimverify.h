/*
 * dkimverify: DKIM verification (RFC 6376, RFC 8463, RFC 8301), pure and
 * without I/O.  The smtp process feeds a message's header and body lines
 * as DATA streams in (body hashes computed on the fly, one state per
 * distinct canonicalization and l=), and at the end of data gets one
 * struct dkim_check per signature (at most DKIM_VERIFY_MAX): either
 * decided already (a syntax error, rsa-sha1, a body hash mismatch, an
 * expired signature) or waiting for its key record.  The key lookup and
 * the signature check (dkim_check_key) run where blocking is allowed: the
 * smtp process's policy workers (smtpd/policy.c) or ternctl check.
 *
 * The parsers (DKIM-Signature, key record) are exposed for the unit
 * tests and the fuzz target; their tag-lists are auth/taglist.c's.
 */
#ifndef TERN_DKIMVERIFY_H
#define TERN_DKIMVERIFY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "auth/dkim.h"

#define DKIM_VERIFY_MAX		5	/* signatures verified; more ignored */
#define DKIM_TAGS_MAX		32	/* tags of one tag-list kept */
#define DKIM_KEY_BITS_MIN	1024	/* RFC 8301 3.2 */
#define DKIM_FUTURE_SLOP	300	/* seconds t= may be ahead of us */

/* RFC 8601 2.7.1 */
enum dkim_result {
	DKIM_NONE, DKIM_PASS, DKIM_FAIL, DKIM_NEUTRAL, DKIM_POLICY,
	DKIM_TEMPERROR, DKIM_PERMERROR
};
const char	*dkim_result_name(enum dkim_result);

/* ---- a DKIM-Signature field's value (RFC 6376 3.5) ---- */

struct dkim_sigtags {
	int		 alg;		/* DKIM_ALG_*, 0 for rsa-sha1 */
	int		 sha1;		/* a=rsa-sha1: a policy failure */
	int		 hrelaxed, brelaxed;
	char		 d[DKIM_DOMAIN_MAX + 1];
	char		 s[DKIM_SELECTOR_MAX + 1];
	char		 idom[DKIM_DOMAIN_MAX + 1];	/* i='s domain, lower-case */
	long long	 l, t, x;	/* -1: absent */
	unsigned char	 bh[DKIM_DIGEST_LEN];
	unsigned char	 b[DKIM_SIG_MAX];
	size_t		 blen;
	char		 b8[9];		/* b= (its first 8 characters) */
	char		 h[1024];	/* h=, lower-case, ':'-separated, no FWS */
};

/* 0, or -1 (a permerror) with why. */
int	dkim_sig_parse(const char *val, size_t len, struct dkim_sigtags *,
	    const char **why);

/* ---- a key record (RFC 6376 3.6.1, RFC 8463) ---- */

struct dkim_keyrec {
	int		 alg;		/* k=: DKIM_ALG_RSA or DKIM_ALG_ED25519 */
	int		 testing;	/* t=y */
	int		 strict;	/* t=s: i= must be d= itself */
	int		 revoked;	/* p= empty */
	int		 nosha256;	/* h= given without sha256 */
	unsigned char	 p[1100];	/* p=, decoded */
	size_t		 plen;
};

int	dkim_keyrec_parse(const char *txt, size_t len, struct dkim_keyrec *,
	    const char **why);

/* ---- one signature's check ---- */

struct dkim_check {
	enum dkim_result result;	/* DKIM_NONE: waiting for its key */
	char		 comment[128];	/* for Authentication-Results */
	char		 d[DKIM_DOMAIN_MAX + 1];
	char		 s[DKIM_SELECTOR_MAX + 1];
	char		 b8[9];
	int		 alg;
	int		 isub;		/* i='s domain is below d= */
	long long	 l;		/* l= (-1: none), flagged */
	char		 lnote[64];	/* "l=N of M body octets signed" */
	unsigned char	 digest[DKIM_DIGEST_LEN];	/* of the signed header */
	unsigned char	 sig[DKIM_SIG_MAX];
	size_t		 siglen;
};

/* The key record's name: s._domainkey.d. */
void	dkim_check_keyname(const struct dkim_check *, char *out, size_t cap);

/*
 * Decide a waiting check from its key lookup: found 0 with the TXT
 * records (each a NUL-ended string), 1 none exists, -1 failed for now.
 */
void	dkim_check_key(struct dkim_check *, int found, const char *const *txt,
	    size_t ntxt);

/*
 * The same in two steps, so a key read once serves many messages: a key
 * lookup's answer parsed (its EVP_PKEY included), refcounted, immutable
 * once made (threads may share it), and a check decided by it.
 * dkim_key_size: about what it holds in memory, for a cache's bound.
 */
struct dkim_key;
struct dkim_key	*dkim_key_new(int found, const char *const *txt, size_t ntxt);
struct dkim_key	*dkim_key_ref(struct dkim_key *);
void		 dkim_key_unref(struct dkim_key *);
size_t		 dkim_key_size(const struct dkim_key *);
void		 dkim_check_with(struct dkim_check *, const struct dkim_key *);

/* ---- the verifier: one message ---- */

struct dkimv;

struct dkimv	*dkimv_new(time_t now);
/* Keep the header fields only (for dkimv_fields): no signature is read. */
void		 dkimv_headers_only(struct dkimv *);
void		 dkimv_free(struct dkimv *);
/* A header line as it arrived (dot-unstuffed, without CRLF). */
void		 dkimv_hline(struct dkimv *, const char *line, size_t len);
/* The header ends: its signatures are read, the body hashes start. */
void		 dkimv_hend(struct dkimv *);
void		 dkimv_bline(struct dkimv *, const char *line, size_t len);
/* After dkimv_hend: the signatures found (at most DKIM_VERIFY_MAX) and
 * what names each (d=, s=, b='s first 8 characters; "" if unreadable). */
size_t		 dkimv_nsigs(const struct dkimv *);
void		 dkimv_sig_ids(const struct dkimv *, size_t i, const char **d,
		    const char **s, const char **b8);
/* End of data: the checks, in header order (at most max). */
size_t		 dkimv_end(struct dkimv *, struct dkim_check *out, size_t max);

/*
 * The header fields named name (case-insensitive), as they arrived
 * (folds as CRLF), top down; for other checks (DMARC's From:).
 */
size_t		 dkimv_fields(const struct dkimv *, const char *name,
		    const char **out, size_t *lens, size_t max);

#endif
