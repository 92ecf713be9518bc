/*
 * notice: the notices the queue process owes senders (DSNs for failed
 * recipients, one warning for a late message), kept on the message until
 * they are queued.
 */
#ifndef TERN_NOTICE_H
#define TERN_NOTICE_H

#include <stddef.h>
#include <stdint.h>

struct qmsg;

#define NOTICE_FAILED		0
#define NOTICE_DELAYED		1
#define NOTICE_DELIVERED	2	/* success, delivered here */
#define NOTICE_RELAYED		3	/* success, to a peer without DSN */

/*
 * Owe m's sender a notice of kind NOTICE_* on recipient ri, as rcpt, if
 * its NOTIFY= asks for one (none given: failures and delays, as before
 * RFC 3461).
 */
void	notice_add(struct qmsg *m, size_t ri, const char *rcpt,
	    const char *text, const char *relay, int kind);
/* When m's delay warning is due (seconds since the epoch); 0: never. */
uint64_t notice_warn_due(const struct qmsg *m);
/* Queue what m owes: failures at once, one delay warning when late. */
void	notice_send(struct qmsg *m);
/* Forget what m owes (it is gone). */
void	notice_free(struct qmsg *m);
/* "550 5.1.1 ..." -> "5.1.1"; else the class from the reply code. */
void	notice_esc(const char *text, int perm, char *out, size_t len);

#endif
