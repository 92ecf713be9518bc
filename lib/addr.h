/*
 * addr: the one mail address type.  Parses an RFC 5321 Mailbox (dot-string
 * or quoted-string local part, a domain or an address literal; RFC 6531
 * UTF-8 when allowed), keeps it in a canonical form, compares, and prints
 * it for SMTP with the local part quoted exactly when it must be.  Every
 * process uses it on addresses from the network, the spool and the config.
 */
#ifndef TERN_ADDR_H
#define TERN_ADDR_H

#include <stddef.h>

#define ADDR_LOCAL_MAX	64	/* RFC 5321 4.5.3.1.1, octets as written */
#define ADDR_DOMAIN_MAX	255	/* RFC 5321 4.5.3.1.2 */
/* The printed form, with its NUL: a quoted local part of at most
   ADDR_LOCAL_MAX octets as written, '@', the domain. */
#define ADDR_STR_MAX	(ADDR_LOCAL_MAX + 1 + ADDR_DOMAIN_MAX + 1)

struct addr {
	/* What the mailbox is called: quotes and backslashes of a
	   quoted-string removed; printable ASCII and UTF-8, never a
	   control character, never empty. */
	char	local[ADDR_LOCAL_MAX + 1];
	/* ASCII, lower case, U-labels converted to A-labels (IDNA2008); or
	   an address literal ("[192.0.2.1]", "[IPv6:...]") as written. */
	char	domain[ADDR_DOMAIN_MAX + 1];
	/* The domain as U-labels (lower case, NFC, from the A-labels) when
	   it was written with U-labels; else "".  Kept for SMTPUTF8 peers
	   and for what local delivery writes (Return-Path:). */
	char	udomain[ADDR_DOMAIN_MAX + 1];
	int	utf8;		/* the local part is not ASCII: needs SMTPUTF8 */
};

#define ADDR_F_UTF8	0x01	/* UTF-8 allowed (SMTPUTF8) */

/* Character classes shared with the SMTP path parser (smtpd/smtp_parse.c):
   RFC 5322 atext (ASCII), RFC 5321 qtextSMTP, and the length of the
   well-formed UTF-8 sequence at s (RFC 3629: no overlong forms, surrogates
   or code points above U+10FFFF; a NUL ends it), or 0. */
int	addr_is_atext(int);
int	addr_is_qtext(int);
size_t	addr_utf8_seq(const unsigned char *s, size_t avail);

/* addr_parse() results besides 0. */
#define ADDR_ESYNTAX	(-1)	/* not a Mailbox (5.1.3 / 5.1.7) */
#define ADDR_EIDNA	(-2)	/* a domain's U-labels are not valid IDNA */

/*
 * Parse "local@domain" (no angle brackets, no source route), the whole of
 * s.  U-labels of the domain are converted to A-labels (with ADDR_F_UTF8
 * only; without it any octet over 0x7f fails).  Returns 0, ADDR_ESYNTAX
 * or ADDR_EIDNA with *why set.
 */
int	 addr_parse(const char *s, unsigned flags, struct addr *,
	    const char **why);
/*
 * The RFC 5321 form: the local part as a dot-string when it is one, else
 * a quoted-string with '"' and '\' escaped; the domain as written (its
 * U-labels, if it had any: the canonical stored form).  Returns strlen of
 * the full form (as snprintf: it was truncated when >= size).
 */
size_t	 addr_format(const struct addr *, char *, size_t);
/* The same with the domain in A-labels: for DNS, comparisons and peers
   without SMTPUTF8. */
size_t	 addr_format_ascii(const struct addr *, char *, size_t);
/* Parse s and print its canonical form into out; as addr_parse(). */
int	 addr_canon(const char *s, unsigned flags, char *out, size_t,
	    const char **why);
/* Parse s (UTF-8 allowed) and print it with an A-label domain; 0 or -1. */
int	 addr_ascii(const char *s, char *out, size_t);
/* Does this (unquoted) local part need quotes to be sent? */
int	 addr_local_needs_quotes(const char *local);
/*
 * A domain for DNS and comparison: lower-case ASCII, U-labels converted to
 * A-labels.  0, or -1 with *why (malformed, or too long).
 */
int	 addr_domain_ascii(const char *in, char *out, size_t,
	    const char **why);
/* The same mailbox?  Local parts exactly, domains without case. */
int	 addr_eq(const struct addr *, const struct addr *);
/* Is any octet of s over 0x7f? */
int	 addr_has8bit(const char *s);

#endif
