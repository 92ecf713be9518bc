/*
 * qint: what every part of the queue process shares: the queued message
 * and the list of all of them, and what queue.c offers its parts.  Each
 * part's own offers are in its header (spool.h, commit.h, sched.h,
 * job.h, dest.h, notice.h, ctl.h).  Nothing outside the queue process
 * uses it.
 */
#ifndef TERN_QINT_H
#define TERN_QINT_H

#include <sys/queue.h>

#include <stdint.h>
#include <time.h>

#include "queue/envelope.h"

struct aliases;
struct conf;
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
struct conf	*queue_conf(void);	/* the configuration in force */
struct aliases	*queue_aliases(void);	/* the aliases map in force */
struct ipc	*queue_parent(void);	/* the parent: local deliveries */
struct ipc	*queue_smtp(void);	/* smtp for remote ones; NULL: none */
/* A new message (received or recovered), due at once. */
void	queue_append_msg(struct qmsg *);
/* m may have no deliveries in flight: settle it; 1: m is gone. */
int	queue_settle(struct qmsg *);
/* Stopping: exit once no smtp process or local delivery is left. */
void	queue_stop_check(void);
/* A message without payload to the parent (P_CREDENTIALS). */
void	queue_tell_parent(int type);

#endif
