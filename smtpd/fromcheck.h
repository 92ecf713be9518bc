/*
 * fromcheck: may an authenticated account send a message whose From:
 * field says this?  Pure (no I/O, no state); run by the smtp process on
 * each From: field of an authenticated submission.  The field is parsed
 * as RFC 5322 mailbox and group lists (RFC 6854), with the obsolete
 * forms of RFC 5322 4.4 (empty list elements, CFWS around '@' and '.');
 * every address found must be one the account may use as its MAIL FROM
 * (conf_sender_allowed on the A-label form).  What it cannot parse whole
 * is refused: an address the check did not see must never pass.
 */
#ifndef TERN_FROMCHECK_H
#define TERN_FROMCHECK_H

#include <stddef.h>

struct conf;

#define FROM_ADDRS_MAX	20	/* addresses in one From: field */
#define FROM_ADDR_MAX	512	/* an address as written, with its NUL */

enum from_verdict {
	FROM_OK,		/* every address is the account's */
	FROM_NOT_OWNED,		/* an address is not */
	FROM_MALFORMED,		/* the field does not parse */
	FROM_TOO_MANY,		/* over FROM_ADDRS_MAX addresses */
	FROM_TOO_LONG		/* an address, or the field, too long */
};

/*
 * The field body v (len bytes, after "From:", folding already undone)
 * checked for account.  On a refusal, bad gets the address (or the text)
 * that caused it, as written.
 */
enum from_verdict fromcheck_field(const struct conf *, const char *account,
	    const char *v, size_t len, char *bad, size_t badlen);
/* A few words on a verdict, for logs. */
const char	*fromcheck_reason(enum from_verdict);
/*
 * Is this header field a From: field ("From:", any case, or the obsolete
 * "From" WSP ":")?  The offset of its body, or 0.
 */
size_t		 fromcheck_name(const char *field, size_t len);

#endif
