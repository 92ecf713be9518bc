/*
 * dkim: DomainKeys Identified Mail (RFC 6376, RFC 8463).  Three parts:
 *
 * - canonicalization and hashing (dkim.c), pure functions shared by
 *   signing and, later, verification: header fields and a body fed line
 *   by line as DATA streams in, "simple" and "relaxed";
 * - the signer's state for one message (dkim.c), run in the smtp
 *   process: it keeps the header fields it will sign, hashes the body as
 *   it passes, and builds the DKIM-Signature field; the signature itself
 *   comes from the vault, which alone holds the private keys;
 * - keys (dkimkey.c): reading and checking a PEM private key (the root
 *   parent), signing a digest (the vault), making a key pair and its DNS
 *   record (ternctl dkim keygen), and the public facts about each
 *   configured key (domain, selector, algorithm, signature length) that
 *   the smtp process gets at start so it can size the field before it has
 *   a signature.
 */
#ifndef TERN_DKIM_H
#define TERN_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct buf;

#define DKIM_ALG_RSA		1	/* rsa-sha256 */
#define DKIM_ALG_ED25519	2	/* ed25519-sha256 (RFC 8463) */

#define DKIM_DIGEST_LEN		32	/* SHA-256 */
#define DKIM_SIG_MAX		512	/* bytes: RSA-4096 (4 fit one vault answer) */
#define DKIM_SELECTOR_MAX	63
#define DKIM_DOMAIN_MAX		253
#define DKIM_KEYS_MAX		64	/* dkim-key statements */
#define DKIM_DOMAIN_KEYS	4	/* signatures on one message at most */
#define DKIM_HEADERS_MAX	(256 * 1024)	/* signed fields kept */

/* ---- canonicalization (RFC 6376 3.4) ---- */

/*
 * One header field, as it arrived: name, colon, value, folded lines
 * joined by CRLF, without the final CRLF.  Appends its canonical form,
 * final CRLF included.
 */
void	dkim_canon_header(int relaxed, const char *field, size_t len,
	    struct buf *out);

/* A body fed one line at a time (without its CRLF), hashed as it goes. */
struct dkim_body {
	void		*md;		/* EVP_MD_CTX */
	int		 relaxed;
	uint64_t	 empty;		/* empty lines held back */
	int		 any;		/* a line has been hashed */
	int64_t		 limit;		/* l=: octets hashed at most (-1: all) */
	uint64_t	 count;		/* canonical octets, past limit too */
};

/* SHA-256, fetched from the provider once for the process (an
   EVP_sha256() in each EVP_DigestInit_ex is fetched again each time). */
struct evp_md_st;
const struct evp_md_st *dkim_sha256(void);

int	dkim_body_init(struct dkim_body *, int relaxed);
void	dkim_body_line(struct dkim_body *, const char *line, size_t len);
/* The body hash; the state is freed. */
void	dkim_body_final(struct dkim_body *, unsigned char out[DKIM_DIGEST_LEN]);
void	dkim_body_free(struct dkim_body *);
/* For tests: the canonical body of a whole text (lines split at CRLF). */
void	dkim_canon_body(int relaxed, const char *text, size_t len,
	    struct buf *out);

/* ---- public facts about configured keys ---- */

struct dkim_keyinfo {
	char	domain[DKIM_DOMAIN_MAX + 1];
	char	selector[DKIM_SELECTOR_MAX + 1];
	int	alg;			/* DKIM_ALG_* */
	size_t	siglen;			/* bytes of a signature */
};

/* "alg siglen domain selector": the record the parent sends (T_DKIM). */
void	dkim_keyinfo_format(const struct dkim_keyinfo *, struct buf *);
int	dkim_keyinfo_parse(const char *, size_t, struct dkim_keyinfo *);
/* The smtp process's table, filled at start-up. */
void	dkim_keys_add(const struct dkim_keyinfo *);
size_t	dkim_keys_find(const char *domain, const struct dkim_keyinfo **out,
	    size_t max);
size_t	dkim_keys_count(void);
const char *dkim_alg_name(int alg);

/* ---- the signer: one message ---- */

struct dkim_sign;

struct dkim_sign *dkim_sign_new(time_t now);
void	dkim_sign_free(struct dkim_sign *);
/* A header line as it arrived (dot-unstuffed, without CRLF). */
void	dkim_sign_hline(struct dkim_sign *, const char *line, size_t len);
/*
 * The header ends.  The signing domain (the domain of From:'s address)
 * or NULL: no From:, several, or an address it cannot read.
 */
const char *dkim_sign_hend(struct dkim_sign *);
/*
 * Choose the keys and append a placeholder field exactly as long as the
 * final one(s) will be.  Returns its length, 0 when nothing is signed.
 */
size_t	dkim_sign_reserve(struct dkim_sign *, const struct dkim_keyinfo **,
	    size_t nkeys, struct buf *out);
void	dkim_sign_bline(struct dkim_sign *, const char *line, size_t len);
/* End of data: the digest each key signs, in the order reserved. */
size_t	dkim_sign_digests(struct dkim_sign *,
	    unsigned char d[][DKIM_DIGEST_LEN], size_t max);
/*
 * The final fields from the base64 signatures (in the same order): -1
 * when one is not the length reserved.
 */
int	dkim_sign_fields(struct dkim_sign *, char *const sigs[], size_t n,
	    struct buf *out);
const char *dkim_sign_domain(const struct dkim_sign *);

/* ---- keys (dkimkey.c) ---- */

/* A PEM private key: its algorithm and signature length.  -1 + err. */
int	dkim_key_check(const char *pem, size_t len, int *alg, size_t *siglen,
	    char *err, size_t errlen);
/* Sign a digest with a PEM key: base64 into out.  -1 on failure. */
void	*dkim_key_parse(const char *pem, size_t len);
void	 dkim_key_free(void *);
int	 dkim_key_sign(void *, const unsigned char *digest, size_t dlen,
	    struct buf *out);
/*
 * A new key: PEM private key into pem, the DNS TXT record's value
 * ("v=DKIM1; k=...; p=...") into txt.
 */
int	dkim_key_generate(int alg, struct buf *pem, struct buf *txt);
/* The TXT value of a PEM private key's public half. */
int	dkim_key_txt(const char *pem, size_t len, struct buf *txt);

#endif
