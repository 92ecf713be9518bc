/*
 * smtp_parse: pure parsers for SMTP command lines, paths (RFC 5321 4.1.2)
 * and ESMTP parameters.  No I/O; run by the smtp process on network input.
 */
#ifndef TERN_SMTP_PARSE_H
#define TERN_SMTP_PARSE_H

#include <stddef.h>

#include "lib/esmtp.h"

enum smtp_verb {
	VERB_UNKNOWN, VERB_HELO, VERB_EHLO, VERB_MAIL, VERB_RCPT, VERB_DATA,
	VERB_BDAT, VERB_RSET, VERB_NOOP, VERB_HELP, VERB_QUIT, VERB_VRFY,
	VERB_EXPN, VERB_STARTTLS, VERB_AUTH
};

struct smtp_command {
	enum smtp_verb	 verb;
	const char	*arg;	/* points into the line: text after "MAIL FROM:",
				   "RCPT TO:" or the verb and one space; "" if none */
};

/*
 * Split a command line (CRLF already removed, no NUL inside).  Returns 0,
 * or -1 with *why set (e.g. "MAIL requires FROM:") for a known verb with a
 * malformed prefix; an unknown verb is VERB_UNKNOWN and returns 0.
 * Verbs are case-insensitive; "MAIL FROM:" may have no space after ':'
 * and tolerates one space before '<'.
 */
int	 smtp_parse_command(const char *line, struct smtp_command *cmd,
	    const char **why);

#define SMTP_LOCAL_MAX	64
#define SMTP_DOMAIN_MAX	255
#define SMTP_PATH_MAX	256

struct smtp_path {
	char	 local[SMTP_LOCAL_MAX * 2 + 3];	/* as written, quotes kept */
	char	 domain[SMTP_DOMAIN_MAX + 1];	/* as written */
	int	 null;		/* <> */
	int	 utf8;		/* contains non-ASCII (needs SMTPUTF8) */
};

#define PATH_ALLOW_NULL		0x01	/* MAIL FROM:<> */
#define PATH_ALLOW_UTF8		0x02	/* SMTPUTF8 given on MAIL */
#define PATH_ALLOW_POSTMASTER	0x04	/* RCPT TO:<Postmaster> */

/*
 * Parse "<path>" at the start of s; source routes (@a,@b:) are accepted
 * and dropped; quoted local parts and address literals ([1.2.3.4],
 * [IPv6:...]) are accepted.  *rest points after '>' (at the parameters).
 * Returns 0, or -1 with *why ("malformed address", "local part too long").
 */
int	 smtp_parse_path(const char *s, int flags, struct smtp_path *out,
	    const char **rest, const char **why);

/* "local@domain" for logs and envelopes (local part as written). */
void	 smtp_path_string(const struct smtp_path *, char *, size_t);

enum body_type { BODY_7BIT, BODY_8BITMIME, BODY_BINARYMIME };

#define SMTP_PROGRAM_MAX	32

struct mail_params {
	long long	 size;		/* -1 when not given */
	enum body_type	 body;
	int		 smtputf8;
	/* XPROGRAM=, ternctl's on the submit socket: the program that ran
	   sendmail, as the client says it; "" when not given */
	char		 program[SMTP_PROGRAM_MAX + 1];
	int		 ret;		/* RET=, DSN_RET_*; RFC 3461 */
	char		 envid[DSN_ENVID_MAX + 1];	/* ENVID=, decoded */
};

/*
 * Parse MAIL FROM parameters (SIZE=, BODY=, SMTPUTF8, XPROGRAM=, RET=,
 * ENVID=), space separated, keywords case-insensitive.  Unknown or
 * repeated ones fail; the caller refuses XPROGRAM where it does not offer
 * it.  Returns 0, or -1 with *why; -2 for an unknown parameter; -3 for
 * a malformed RET= or ENVID= (501 5.5.4, RFC 3461).
 */
int	 smtp_parse_mail_params(const char *s, struct mail_params *,
	    const char **why);
/* RCPT TO parameters: none supported yet; anything but "" fails. */
int	 smtp_parse_rcpt_params(const char *s, const char **why);

/*
 * EHLO/HELO argument: a domain (LDH labels, may end in '.') or an address
 * literal.  Returns 0 or -1.
 */
int	 smtp_parse_helo(const char *s, const char **why);

/* Domain syntax check (RFC 5321 Domain or address-literal). */
int	 smtp_check_domain(const char *s, int allow_utf8);

#endif
