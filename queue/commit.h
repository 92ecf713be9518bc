/*
 * commit: how a message enters the queue process: the smtp process's
 * requests for a message file and its commit, and the queue's own notices,
 * made durable by the group commit (its syncs in a thread of their own)
 * and then handed to the scheduler.
 */
#ifndef TERN_COMMIT_H
#define TERN_COMMIT_H

#include <stdint.h>

struct buf;
struct event_base;
struct ipc;
struct rec_reader;

/* The flush event and the commit thread (else commits run in the loop). */
void	commit_start(struct event_base *);

/* Requests from the smtp process on channel c. */
void	commit_create(struct ipc *c, struct rec_reader *);	/* Q_CREATE */
void	commit_rcpts(struct ipc *c, struct rec_reader *);	/* Q_RCPTS */
void	commit_request(struct ipc *c, struct rec_reader *);	/* Q_COMMIT */
void	commit_abort(struct ipc *c, struct rec_reader *);	/* Q_ABORT */
/* Channel c closed: drop what it was sending, answer no one there. */
void	commit_forget(struct ipc *c);

/* Queue a message we wrote (a notice) from the null sender to one
   recipient, through the same commit; 0 or -1. */
int	commit_inject(const char *to, const struct buf *, uint64_t flags);

/* Stopping: the batch out and the one filling both end durable. */
void	commit_flush_all(void);

#endif
