/*
 * srs: the Sender Rewriting Scheme (Shevek's SRS0/SRS1 as in libsrs2 and
 * postsrsd, so their addresses and ours verify each other given the same
 * secret).  Pure functions on strings, no state: the queue runner calls
 * srs_forward() when it relays mail for a foreign sender, the smtp session
 * calls srs_reverse() on RCPT TO of bounces addressed to the SRS domain.
 *
 *   SRS0=HHHH=TT=domain=local@srs_domain
 *   SRS1=HHHH=first-srs-domain=<sep>HHHH=TT=domain=local@srs_domain
 *
 * TT is the day number mod 1024 in base32; HHHH the first 4 base64 chars of
 * HMAC-SHA1(secret, lowercase(TT domain local)) (SRS0) or
 * HMAC-SHA1(secret, lowercase(first-srs-domain <sep>HHHH=TT=domain=local))
 * (SRS1).  Hashes compare case-insensitively, as relays may fold case.
 */
#ifndef TERN_SRS_H
#define TERN_SRS_H

#include <stddef.h>
#include <time.h>

#define SRS_SECRET_MIN	16	/* bytes of secret at least */
#define SRS_ADDR_MAX	256	/* longest address srs_forward produces */

/*
 * Rewrite sender (local@domain, no angle brackets) into srs_domain.
 * Returns 0 with the new address in out, or -1: null sender, no domain,
 * characters that cannot go into an SRS local part, a short secret, a
 * result longer than SRS_ADDR_MAX or than outlen - 1.  A sender already in
 * srs_domain is copied unchanged (as libsrs2 does); an SRS0 address of
 * another domain becomes SRS1, an SRS1 address keeps its first hop.
 */
int	srs_forward(const char *sender, const char *srs_domain,
	    const unsigned char *secret, size_t secretlen, time_t now,
	    char *out, size_t outlen);

/*
 * Undo one rewriting of addr (local@domain; the domain is not checked).
 * Returns 1 with the original address in out (an SRS1 address gives the
 * SRS0 address at its first hop), 0 if addr is not an SRS address (out
 * untouched), -1 if it is one but invalid: malformed, bad hash, timestamp
 * older than max_age_days or more than one day in the future; *why (if
 * why is not NULL) then says which, as a static string.
 */
int	srs_reverse(const char *addr, const unsigned char *secret,
	    size_t secretlen, time_t now, int max_age_days, char *out,
	    size_t outlen, const char **why);

/* 1 if local_part starts with SRS0 or SRS1 (any case) and a separator. */
int	srs_is_srs(const char *local_part);

#endif
