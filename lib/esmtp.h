/*
 * esmtp: the ESMTP parameters of the DSN extension (RFC 3461: NOTIFY,
 * ORCPT, RET, ENVID) and of CHUNKING (RFC 3030: the BDAT arguments), and
 * xtext.  Pure parsers of untrusted input, used by the smtp process on
 * what clients send and by the queue and the SMTP client to print them
 * again.  Every length is bounded; a value that fails is refused whole.
 */
#ifndef TERN_ESMTP_H
#define TERN_ESMTP_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define DSN_NOTIFY_NEVER	0x1
#define DSN_NOTIFY_SUCCESS	0x2
#define DSN_NOTIFY_FAILURE	0x4
#define DSN_NOTIFY_DELAY	0x8

#define DSN_RET_NONE	0	/* not given */
#define DSN_RET_FULL	1
#define DSN_RET_HDRS	2

#define DSN_ENVID_MAX	100	/* RFC 3461 4.4: of the xtext as sent */
#define DSN_ORCPT_MAX	500	/* RFC 3461 4.2: "type;xtext" as sent */
#define BDAT_SIZE_DIGITS 18	/* a chunk size has at most this many */

struct dsn_rcpt_params {
	unsigned	 notify;	/* DSN_NOTIFY_*; 0: not given */
	char		 orcpt[DSN_ORCPT_MAX + 1];	/* "type;addr" decoded;
							   "" not given */
};

/*
 * Decode n bytes of xtext into out (NUL-terminated, cap bytes).  Refused:
 * a character outside 0x21-0x7e, '=', a '+' not followed by two hex
 * digits, a decoded control character, NUL or 8-bit byte.  Returns the
 * decoded length, or -1.
 */
int	esmtp_xtext_decode(const char *in, size_t n, char *out, size_t cap);
/* Append s as xtext ('+', '=', controls, space and 8-bit as +HH). */
void	esmtp_xtext_encode(struct buf *, const char *s);

/* Values of NOTIFY=, RET=, ENVID=, ORCPT=: 0, or -1 with *why. */
int	esmtp_notify(const char *v, size_t n, unsigned *out,
	    const char **why);
int	esmtp_ret(const char *v, size_t n, int *out, const char **why);
int	esmtp_envid(const char *v, size_t n, char *out, size_t cap,
	    const char **why);
int	esmtp_orcpt(const char *v, size_t n, char *out, size_t cap,
	    const char **why);

/*
 * RCPT TO parameters (NOTIFY=, ORCPT=).  0; -1 with *why on bad syntax
 * (501); -2 with *why for an unknown parameter (555).
 */
int	esmtp_rcpt(const char *s, struct dsn_rcpt_params *,
	    const char **why);

/*
 * "NOTIFY=SUCCESS,FAILURE" (or "") for a next hop; ORCPT re-encoded.
 * Appends " NOTIFY=..." and " ORCPT=..." for what is set.
 */
void	esmtp_rcpt_print(struct buf *, unsigned notify, const char *orcpt);
/* Appends " RET=..." and " ENVID=..." (xtext) for what is set. */
void	esmtp_mail_print(struct buf *, int ret, const char *envid);

/*
 * The BDAT argument: "size" or "size LAST" (LAST case-insensitive, one
 * space).  Returns 0; -1 with *why when the size is malformed or larger
 * than BDAT_SIZE_DIGITS digits allow (the chunk cannot be found: the
 * caller closes the connection); *size is still set when only the rest
 * is wrong and -2 is returned (the chunk can be skipped).
 */
int	esmtp_bdat(const char *arg, uint64_t *size, int *last,
	    const char **why);

#endif
