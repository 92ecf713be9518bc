/*
 * dsn: RFC 3464 delivery status notifications.  The queue process calls
 * dsn_build() when a message's recipients fail or stay deferred too long,
 * and queues the result with the null sender.  Pure: no I/O but the
 * random bytes for the boundary and Message-ID.
 */
#ifndef TERN_DSN_H
#define TERN_DSN_H

#include <stddef.h>

#include "lib/util.h"

#define DSN_LINE_MAX	998	/* RFC 5322 line limit, CRLF excluded */

struct dsn_rcpt {
	const char	*rcpt;		/* final recipient, local@domain */
	const char	*orcpt;		/* ORCPT (xtext decoded), "type;addr"
					   or a bare address; may be NULL */
	const char	*status;	/* "5.1.1"; malformed or NULL gives
					   5.0.0 / 4.0.0 by action */
	const char	*action;	/* "failed", "delayed", "delivered",
					   "relayed", "expanded"; NULL or
					   other: from dsn_msg.delayed */
	const char	*remote_mta;	/* "dns; mx.example.org" or a bare
					   host name; may be NULL */
	const char	*diagnostic;	/* "smtp; 550 5.1.1 no such user" or
					   bare reply text; may be NULL */
	long long	 last_attempt;	/* time_t; 0: omitted */
	long long	 retry_until;	/* time_t, delayed only; 0: omitted */
};

struct dsn_msg {
	const char	*reporting_mta;	/* our host name */
	const char	*from_addr;	/* "MAILER-DAEMON@host"; NULL: made
					   from reporting_mta */
	const char	*to;		/* original sender, never "" */
	const char	*queue_id;	/* may be NULL */
	long long	 arrival;	/* time_t; 0: omitted */
	long long	 now;		/* Date:; 0: time(NULL) */
	const char	*envid;		/* ENVID as received; may be NULL */
	int		 delayed;	/* 1 delay warning, 0 failure */
	int		 success;	/* every recipient delivered or
					   relayed: a success report */
	const char	*original;	/* spooled message, CRLF lines */
	size_t		 original_len;	/* 0: no third part */
	int		 return_full;	/* RET=FULL: attach whole message... */
	size_t		 max_full;	/* ...if original_len <= max_full */
};

/*
 * Append to out a complete RFC 5322 message (CRLF lines, none longer than
 * DSN_LINE_MAX) reporting on the n recipients: multipart/report with a
 * text/plain explanation, the message/delivery-status, and the original's
 * header section as text/rfc822-headers, or the whole original as
 * message/rfc822 when return_full and it fits max_full and is free of
 * overlong lines and NULs.  Every text taken from the arguments is
 * sanitised; the original is copied byte for byte.  Returns 0, or -1 with
 * out unchanged (no recipients, no sender or a null one, no
 * reporting_mta, no randomness).
 */
int	dsn_build(const struct dsn_msg *, const struct dsn_rcpt *, size_t n,
	    struct buf *out);

#endif
