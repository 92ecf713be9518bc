/*
 * qint: what the parts of the queue process share: queue.c (spool, group
 * commit, recovery, scheduler, deliveries, notices) and ctl.c (the control
 * socket).  Nothing outside the queue process uses it.
 */
#ifndef TERN_QINT_H
#define TERN_QINT_H

#include <sys/queue.h>

#include <stdint.h>
#include <time.h>

#include "queue/envelope.h"

struct event_base;
struct rround;
struct failure;

struct qmsg {
	TAILQ_ENTRY(qmsg) entry;	/* all messages, oldest first */
	TAILQ_ENTRY(qmsg) bentry;	/* blocked: due, waiting for a slot */
	struct envelope	 env;
	uint64_t	 due;		/* when the scheduler looks again */
	size_t		 slot;		/* 1 + index in the run heap; 0: none */
	int		 blocked;	/* on the blocked list */
	int		 jobs;		/* deliveries in flight */
	int		 removed;	/* removed by the admin while busy */
	int		 dirty;		/* envelope changed since written */
	struct rround	*rr;		/* per recipient: the current round */
	size_t		 nrr;
	struct failure	*fails;		/* owed to the sender in a DSN */
};

struct dest {
	struct dest	*next;
	char		 domain[256];
	int		 active;	/* transactions in flight */
	int		 limit;
	uint32_t	 ok, temp, perm;	/* outcomes since start */
	uint32_t	 streak;	/* consecutive temporary failures */
	time_t		 last;		/* last outcome */
	char		 lasterr[256];
};

TAILQ_HEAD(qmsgs, qmsg);

extern struct qmsgs	 queue_all;	/* every message, oldest first */
extern struct dest	*queue_dests;	/* every destination seen */

/* queue.c */
void	queue_write_env(struct qmsg *);
void	queue_wake(struct qmsg *, uint64_t);
void	queue_unblock(void);
int	queue_settle(struct qmsg *);
void	queue_tell_parent(int type);

/* ctl.c */
void	ctl_start(struct event_base *, int controlfd);
void	ctl_flush(const char *domain);

#endif
