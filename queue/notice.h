/*
 * notice: the notices the queue process owes senders (DSNs for failed
 * recipients, one warning for a late message), kept on the message until
 * they are queued.
 */
#ifndef TERN_NOTICE_H
#define TERN_NOTICE_H

#include <stddef.h>

struct qmsg;

/* Owe m's sender a failure of recipient ri (delayed: a delay), as rcpt. */
void	notice_add(struct qmsg *m, size_t ri, const char *rcpt,
	    const char *text, const char *relay, int delayed);
/* Queue what m owes: failures at once, one delay warning when late. */
void	notice_send(struct qmsg *m);
/* Forget what m owes (it is gone). */
void	notice_free(struct qmsg *m);
/* "550 5.1.1 ..." -> "5.1.1"; else the class from the reply code. */
void	notice_esc(const char *text, int perm, char *out, size_t len);

#endif
