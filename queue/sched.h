/*
 * sched: when the queue process looks at each message: a heap of messages
 * by when they are next due, a list of those blocked waiting for a
 * delivery slot, the run that hands what is due to the delivery jobs, and
 * a sweep every 5 minutes that looks at everything.
 */
#ifndef TERN_SCHED_H
#define TERN_SCHED_H

#include <stdint.h>

struct event_base;
struct qmsg;

/* Before any message is added; the first run comes with sched_arm(0). */
void	sched_init(struct event_base *);
/* Make sure a run comes by time t (seconds since the epoch; 0: now). */
void	sched_arm(uint64_t t);
/* Look at m by time t (0: now). */
void	sched_wake(struct qmsg *m, uint64_t t);
/* A delivery slot freed: what waited for one is due again. */
void	sched_unblock(void);
/* m is going away: forget it. */
void	sched_forget(struct qmsg *m);
/* SIGTERM: start no more deliveries. */
void	sched_stop(void);

#endif
