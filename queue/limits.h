/*
 * limits: per-account sending limits and the circuit breaker, in the
 * queue process, which counts what each account (an AUTH name, or
 * "local:NAME" for sendmail(1)) has submitted, answers smtp's "may it
 * submit this message?" (Q_CREATE), suspends an account whose sending
 * jumps far above its usual rate or draws many rejected recipients, holds
 * its queued mail and tells the postmaster.  The state is a file of the
 * spool (`accounts`), so it outlives smtp and queue restarts.
 */
#ifndef TERN_LIMITS_H
#define TERN_LIMITS_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct event_base;
struct qmsg;

/* At start, after the spool is open: read the state file. */
void	limits_start(struct event_base *);
/* The state file's contents, read (replacing the table; the whole or
   nothing: -1 with *why, the table empty) and written; for tests too. */
int	limits_decode(const void *, size_t, const char **why);
void	limits_encode(struct buf *);
/* Stopping: write the state file now. */
void	limits_flush(void);

/*
 * May account submit a message to nrcpts recipients now, counting the
 * messages being received for it?  0 yes; else the reply code (451, 452)
 * with the rest of the reply in text ("4.7.1 ...").
 */
int	limits_check(const char *account, size_t nrcpts, char *text,
	    size_t len);
/* A message file was given for account's nrcpts recipients: hold its
   place until it is committed (counted) or dropped; -1 if no room. */
int	limits_reserve(const char *account, size_t nrcpts);
void	limits_unreserve(const char *account, size_t nrcpts);
/* Accounts in the table (counted, suspended or holding a place). */
size_t	limits_accounts(void);
/* m was committed (rejected: recipients refused at RCPT): count it; may
   trip the breaker; m is held if its account is suspended. */
void	limits_count(struct qmsg *m, uint64_t rejected);
/* A recipient of m was refused by the remote server (5xx). */
void	limits_rejected(const struct qmsg *m);
/* ternctl user release NAME: lift a suspension, release its mail. */
void	limits_release(const char *account, struct buf *out);
/* ternctl user limits: every account counted, its figures and state. */
void	limits_list(struct buf *out);

#endif
