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

struct aliases;
struct conf;
struct event_base;
struct ipc;
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

TAILQ_HEAD(qmsgs, qmsg);

extern struct qmsgs	 queue_all;	/* every message, oldest first */

/* queue.c */
struct conf	*queue_conf(void);
struct aliases	*queue_aliases(void);
struct ipc	*queue_parent(void);
struct ipc	*queue_smtp(void);
void	queue_append_msg(struct qmsg *);
void	queue_stop_check(void);
int	queue_settle(struct qmsg *);

/* ctl.c */
void	ctl_start(struct event_base *, int controlfd);
void	ctl_flush(const char *domain);

#endif
