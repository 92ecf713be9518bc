/*
 * sched: the queue process's scheduler, which decides when each message
 * is looked at.  A run hands the messages that are due to the delivery
 * jobs (job.c), settles them, and files each where it waits next.
 *
 * A run visits only the messages that are due: every message is in the
 * heap keyed by when it next needs a look (a recipient's next try, a
 * delay warning, now after a delivery ends), on the blocked list (due,
 * but no delivery slot was free: a finishing delivery puts the list back
 * in the heap), or in neither (held, or waiting for deliveries in flight,
 * whose end wakes it).  A queue of thousands of deferred messages costs
 * nothing until they are due; a sweep every queue-sweep looks at
 * everything, so a missed wake-up delays mail, never strands it.
 */
#include <sys/queue.h>
#include <sys/types.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "queue/envelope.h"
#include "queue/job.h"
#include "queue/notice.h"
#include "queue/qint.h"
#include "queue/sched.h"

/* How often everything is looked at (queue-sweep), in seconds. */
#define SCHED_SWEEP	((time_t)(conf_num(queue_conf(), NULL, K_QUEUE_SWEEP) / 1000))

static struct {
	struct qmsg		**heap;		/* scheduled, earliest due first */
	size_t			 nheap, heapcap;
	struct qmsgs		 blocked;	/* due, no delivery slot free */
	struct qmsg		**runbuf;	/* one run's due messages */
	size_t			 runcap;
	uint64_t		 runat;		/* when runev fires */
	time_t			 lastsweep;
	struct event		*runev;
	int			 stopping;	/* SIGTERM: no new deliveries */
} sched;

/* ---- the run heap -------------------------------------------------------- */

static int
heap_less(size_t a, size_t b)
{
	return sched.heap[a]->due < sched.heap[b]->due;
}

static void
heap_swap(size_t a, size_t b)
{
	struct qmsg *t = sched.heap[a];

	sched.heap[a] = sched.heap[b];
	sched.heap[b] = t;
	sched.heap[a]->slot = a + 1;
	sched.heap[b]->slot = b + 1;
}

static void
heap_up(size_t i)
{
	while (i > 0 && heap_less(i, (i - 1) / 2)) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < sched.nheap && heap_less(l, m))
			m = l;
		if (r < sched.nheap && heap_less(r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static void
heap_remove(struct qmsg *m)
{
	size_t i;

	if (m->slot == 0)
		return;
	i = m->slot - 1;
	m->slot = 0;
	if (i != --sched.nheap) {
		sched.heap[i] = sched.heap[sched.nheap];
		sched.heap[i]->slot = i + 1;
		heap_down(i);
		heap_up(i);
	}
}

/* Make sure the run event fires by time t (seconds since the epoch). */
void
sched_arm(uint64_t t)
{
	uint64_t now = (uint64_t)time(NULL);
	struct timeval tv = { 0, 0 };

	if (evtimer_pending(sched.runev, NULL) && sched.runat <= t)
		return;
	if (t > now)
		tv.tv_sec = (time_t)(t - now);
	sched.runat = t;
	evtimer_add(sched.runev, &tv);
}

/* Look at m by time t (0: now). */
void
sched_wake(struct qmsg *m, uint64_t t)
{
	if (m->blocked && t <= (uint64_t)time(NULL)) {
		TAILQ_REMOVE(&sched.blocked, m, bentry);
		m->blocked = 0;
	}
	if (m->slot) {
		if (t < m->due) {
			m->due = t;
			heap_up(m->slot - 1);
		}
	} else {
		if (sched.nheap == sched.heapcap) {
			sched.heapcap = sched.heapcap ? sched.heapcap * 2 : 64;
			sched.heap = xreallocarray(sched.heap, sched.heapcap,
			    sizeof(*sched.heap));
		}
		m->due = t;
		sched.heap[sched.nheap++] = m;
		m->slot = sched.nheap;
		heap_up(sched.nheap - 1);
	}
	sched_arm(sched.heap[0]->due);
}

/* A delivery slot freed: what waited for one is due again. */
void
sched_unblock(void)
{
	struct qmsg *m;

	while ((m = TAILQ_FIRST(&sched.blocked)) != NULL)
		sched_wake(m, 0);
	sched_arm(0);
}

static void
sched_wake_all(void)
{
	struct qmsg *m;

	TAILQ_FOREACH(m, &queue_all, entry)
		sched_wake(m, 0);
}

/* m is going away: off the heap and the blocked list. */
void
sched_forget(struct qmsg *m)
{
	heap_remove(m);
	if (m->blocked)
		TAILQ_REMOVE(&sched.blocked, m, bentry);
}

/* ---- the run ------------------------------------------------------------- */

/*
 * When m next needs a look, given what it has now: a recipient's next
 * try, or the delay warning; 0 if only an event (a delivery ending, the
 * admin) can change it.  *blocked: a recipient is due and has no delivery
 * in flight, so it waits for a slot.
 */
static uint64_t
sched_next_look(const struct qmsg *m, time_t now, int *blocked)
{
	uint64_t soonest = 0, t = notice_warn_due(m);
	int late = 0;
	size_t i;

	*blocked = 0;
	if (m->env.flags & ENV_HOLD)
		return 0;
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct env_rcpt *r = &m->env.rcpts[i];

		if (r->state != RS_PENDING && r->state != RS_HELD)
			continue;
		if (r->state == RS_PENDING && r->attempts > 0)
			late = 1;
		if (r->next_try > (uint64_t)now) {
			if (soonest == 0 || r->next_try < soonest)
				soonest = r->next_try;
		} else if (job_count(m, i) == 0)
			*blocked = 1;
	}
	if (late && t > 0 && m->env.sender[0] != '\0' &&
	    !(m->env.flags & (ENV_WARNED | ENV_DSN)) && t > (uint64_t)now &&
	    (soonest == 0 || t < soonest))
		soonest = t;
	if (m->fails && (soonest == 0 || (uint64_t)now + 60 < soonest))
		soonest = (uint64_t)now + 60;	/* a DSN that could not queue */
	return soonest;
}

/*
 * The order a run tries what is due in: urgent mail first, then oldest
 * first, so each destination's slots and rate go to urgent mail and then
 * drain its queue in arrival order.
 */
static int
sched_cmp(const void *a, const void *b)
{
	const struct qmsg *x = *(struct qmsg *const *)a;
	const struct qmsg *y = *(struct qmsg *const *)b;
	int ux = (x->env.flags & ENV_URGENT) != 0;
	int uy = (y->env.flags & ENV_URGENT) != 0;

	if (ux != uy)
		return uy - ux;
	if (x->env.arrival != y->env.arrival)
		return x->env.arrival < y->env.arrival ? -1 : 1;
	return strcmp(x->env.id, y->env.id);
}

static void
sched_order(struct qmsg **v, size_t n)
{
	if (n > 1)
		qsort(v, n, sizeof(*v), sched_cmp);
}

static void
sched_run(evutil_socket_t fd, short ev, void *arg)
{
	struct qmsg *m;
	time_t now = time(NULL);
	uint64_t soonest;
	size_t i, n = 0;
	int blocked;

	if (sched.stopping)
		return;
	if (now - sched.lastsweep >= SCHED_SWEEP) {
		sched.lastsweep = now;
		sched_wake_all();
	}
	/* What is due now; whatever becomes due meanwhile waits a run. */
	while (sched.nheap > 0 && sched.heap[0]->due <= (uint64_t)now) {
		m = sched.heap[0];
		heap_remove(m);
		if (n == sched.runcap) {
			sched.runcap = sched.runcap ? sched.runcap * 2 : 64;
			sched.runbuf = xreallocarray(sched.runbuf, sched.runcap,
			    sizeof(*sched.runbuf));
		}
		sched.runbuf[n++] = m;
	}
	sched_order(sched.runbuf, n);
	/* Settling one message never frees another. */
	for (i = 0; i < n; i++) {
		m = sched.runbuf[i];
		soonest = 0;
		job_try(m, now, &soonest);
		if (queue_settle(m))
			continue;
		soonest = sched_next_look(m, now, &blocked);
		if (blocked && !m->blocked && m->slot == 0) {
			TAILQ_INSERT_TAIL(&sched.blocked, m, bentry);
			m->blocked = 1;
		}
		if (soonest)
			sched_wake(m, soonest);
	}
	soonest = (uint64_t)sched.lastsweep + SCHED_SWEEP;
	if (sched.nheap > 0 && sched.heap[0]->due < soonest)
		soonest = sched.heap[0]->due;
	sched_arm(soonest);
}

void
sched_init(struct event_base *base)
{
	TAILQ_INIT(&sched.blocked);
	sched.runev = evtimer_new(base, sched_run, NULL);
	/*
	 * As urgent as the channels: a run waits for the loop's next turn,
	 * not until no channel has anything left to read.  Under a flood
	 * of results (a list mail to many domains) the channels are never
	 * all quiet, and a destination that reopened (pacing) or a slot
	 * that freed waited for every result queued behind, up to a tenth
	 * of a second, which a receiver with a fast window counts as time
	 * lost.  A run is cheap (it visits only what is due) and is armed
	 * once a turn, so results are still settled in batches.
	 */
	event_priority_set(sched.runev, 0);
}

/* Stopping: no run starts a delivery again. */
void
sched_stop(void)
{
	sched.stopping = 1;
}
