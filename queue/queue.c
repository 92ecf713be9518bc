/*
 * queue: the queue process, sole writer of the spool.  It creates the
 * files the smtp process writes messages into, commits them in groups
 * (one sync of the files and one directory fsync for every message that
 * arrived meanwhile, each client answered only after its own message is
 * durable), recovers the spool at start, schedules deliveries and sends
 * notices; ctl.c answers ternctl on the control socket.  Runs
 * unprivileged; local deliveries are run by the
 * parent as the recipient user, with the message fd passed along.
 *
 * Spool layout (see docs/ARCHITECTURE.md):
 *   incoming/ID      message being received (smtp writes it)
 *   incoming/ID.env  envelope written at commit, before the sync
 *   queue/ID.msg     committed message
 *   queue/ID.env     committed envelope: its presence is the commit point
 *   corrupt/         envelopes that failed to decode, kept for the admin
 */
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "queue/commit.h"
#include "queue/dest.h"
#include "queue/dsn.h"
#include "queue/envelope.h"
#include "queue/job.h"
#include "queue/notice.h"
#include "queue/mta.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "queue/qint.h"
#include "queue/resolve.h"
#include "queue/spool.h"
#include "lib/util.h"

/* Where ternd started: relative config paths resolve against it. */
const char *proc_basedir = "/";

#define QUEUE_STOP_SECS		25	/* the parent kills at 30 s */

struct peer {
	struct peer	*next;
	struct ipc	*ipc;
};


static struct {
	struct event_base	*base;
	struct conf		*conf;
	struct aliases		*aliases;
	struct ipc		*parent;
	struct peer		*peers;
		struct qmsg		**heap;		/* scheduled, earliest due first */
	size_t			 nheap, heapcap;
	struct qmsgs		 blocked;	/* due, no delivery slot free */
	struct qmsg		**runbuf;	/* one run's due messages */
	size_t			 runcap;
	uint64_t		 runat;		/* when runev fires */
	time_t			 lastsweep;
	struct event		*runev;
	int			 stopping;	/* SIGTERM: no new deliveries */
	struct event		*stopev;	/* the stop's deadline */
} q;

struct qmsgs queue_all = TAILQ_HEAD_INITIALIZER(queue_all);

/* The configuration in force (a reload replaces it). */
struct conf *
queue_conf(void)
{
	return q.conf;
}

/* The aliases map in force. */
struct aliases *
queue_aliases(void)
{
	return q.aliases;
}

/* The channel to the parent, which runs local deliveries. */
struct ipc *
queue_parent(void)
{
	return q.parent;
}

/* The smtp process that gets remote jobs; NULL if there is none. */
struct ipc *
queue_smtp(void)
{
	return q.peers ? q.peers->ipc : NULL;	/* the newest smtp process */
}

static void	queue_run(evutil_socket_t, short, void *);

/* ---- the run heap ------------------------------------------------------------
 *
 * A run visits only the messages that are due: every message is in the
 * heap keyed by when it next needs a look (a recipient's next try, a
 * delay warning, now after a delivery ends), on the blocked list (due,
 * but no delivery slot was free: a finishing delivery puts the list back
 * in the heap), or in neither (held, or waiting for deliveries in flight,
 * whose end wakes it).  A queue of thousands of deferred messages costs
 * nothing until they are due; a sweep every QUEUE_SWEEP seconds looks at
 * everything, so a missed wake-up delays mail, never strands it.
 */
#define QUEUE_SWEEP	300

static int
heap_less(size_t a, size_t b)
{
	return q.heap[a]->due < q.heap[b]->due;
}

static void
heap_swap(size_t a, size_t b)
{
	struct qmsg *t = q.heap[a];

	q.heap[a] = q.heap[b];
	q.heap[b] = t;
	q.heap[a]->slot = a + 1;
	q.heap[b]->slot = b + 1;
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

		if (l < q.nheap && heap_less(l, m))
			m = l;
		if (r < q.nheap && heap_less(r, m))
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
	if (i != --q.nheap) {
		q.heap[i] = q.heap[q.nheap];
		q.heap[i]->slot = i + 1;
		heap_down(i);
		heap_up(i);
	}
}

/* Make sure the run event fires by time t (seconds since the epoch). */
static void
queue_arm(uint64_t t)
{
	uint64_t now = (uint64_t)time(NULL);
	struct timeval tv = { 0, 0 };

	if (evtimer_pending(q.runev, NULL) && q.runat <= t)
		return;
	if (t > now)
		tv.tv_sec = (time_t)(t - now);
	q.runat = t;
	evtimer_add(q.runev, &tv);
}

/* Look at m by time t (0: now). */
void
queue_wake(struct qmsg *m, uint64_t t)
{
	if (m->blocked && t <= (uint64_t)time(NULL)) {
		TAILQ_REMOVE(&q.blocked, m, bentry);
		m->blocked = 0;
	}
	if (m->slot) {
		if (t < m->due) {
			m->due = t;
			heap_up(m->slot - 1);
		}
	} else {
		if (q.nheap == q.heapcap) {
			q.heapcap = q.heapcap ? q.heapcap * 2 : 64;
			q.heap = xreallocarray(q.heap, q.heapcap,
			    sizeof(*q.heap));
		}
		m->due = t;
		q.heap[q.nheap++] = m;
		m->slot = q.nheap;
		heap_up(q.nheap - 1);
	}
	queue_arm(q.heap[0]->due);
}

/* A delivery slot freed: what waited for one is due again. */
void
queue_unblock(void)
{
	struct qmsg *m;

	while ((m = TAILQ_FIRST(&q.blocked)) != NULL)
		queue_wake(m, 0);
	queue_arm(0);
}

static void
queue_wake_all(void)
{
	struct qmsg *m;

	TAILQ_FOREACH(m, &queue_all, entry)
		queue_wake(m, 0);
}

static void
queue_peer_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	if (fd >= 0)
		close(fd);
	switch (type) {
	case IMSG_Q_CREATE:
		commit_create(c, rd);
		break;
	case IMSG_Q_RCPTS:
		commit_rcpts(c, rd);
		break;
	case IMSG_Q_COMMIT:
		commit_request(c, rd);
		break;
	case IMSG_Q_ABORT:
		commit_abort(c, rd);
		break;
	case IMSG_M_RESULT:
		job_remote_result(c, rd);
		break;
	default:
		log_warnx("event=ipc result=error reason=\"unexpected "
		    "message %d from smtp\"", type);
	}
}

static void
queue_peer_closed(struct ipc *c, void *arg)
{
	struct peer **p, *pe;

	commit_forget(c);
	for (p = &q.peers; (pe = *p) != NULL; p = &pe->next)
		if (pe->ipc == c) {
			*p = pe->next;
			free(pe);
			break;
		}
	job_txn_lost(c);
	ipc_free(c);
	queue_stop_check();
}

static void
queue_add_peer(int fd)
{
	struct peer *p = xcalloc(1, sizeof(*p));

	p->ipc = ipc_new(q.base, fd, queue_peer_msg, queue_peer_closed, NULL);
	p->next = q.peers;
	q.peers = p;
	/* Remote deliveries that found no smtp process can start now. */
	if (q.runev)
		queue_unblock();
}

/* Oldest first; a new message is due at once. */
void
queue_append_msg(struct qmsg *m)
{
	TAILQ_INSERT_TAIL(&queue_all, m, entry);
	queue_wake(m, 0);
}

/* ---- scheduling and delivery -------------------------------------------------- */

static void
queue_unlink_msg(struct qmsg *m)
{
	TAILQ_REMOVE(&queue_all, m, entry);
	heap_remove(m);
	if (m->blocked)
		TAILQ_REMOVE(&q.blocked, m, bentry);
	notice_free(m);
	free(m->rr);
	envelope_free(&m->env);
	free(m);
}

static int
queue_all_final(const struct qmsg *m)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->env.rcpts[i].state != RS_DONE &&
		    m->env.rcpts[i].state != RS_FAILED)
			return 0;
	return 1;
}

/* Called when a message may have no deliveries in flight; 1: m is gone. */
int
queue_settle(struct qmsg *m)
{
	if (m->jobs > 0)
		return 0;
	if (m->removed) {
		spool_remove(m->env.id);
		queue_unlink_msg(m);
		return 1;
	}
	notice_send(m);
	if (queue_all_final(m)) {
		spool_remove(m->env.id);
		log_info("q=%s event=removed reason=\"%s\"", m->env.id,
		    "delivered or bounced");
		queue_unlink_msg(m);
		return 1;
	}
	if (m->dirty)
		spool_state_later();
	return 0;
}

/*
 * When m next needs a look, given what it has now: a recipient's next
 * try, or the delay warning; 0 if only an event (a delivery ending, the
 * admin) can change it.  *blocked: a recipient is due and has no delivery
 * in flight, so it waits for a slot.
 */
static uint64_t
queue_next_look(const struct qmsg *m, time_t now, int *blocked)
{
	long long warn = conf_num(q.conf, NULL, K_DELAY_WARNING) / 1000;
	uint64_t soonest = 0, t;
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
	if (late && warn > 0 && m->env.sender[0] != '\0' &&
	    !(m->env.flags & (ENV_WARNED | ENV_DSN)) &&
	    (t = m->env.arrival + (uint64_t)warn) > (uint64_t)now &&
	    (soonest == 0 || t < soonest))
		soonest = t;
	if (m->fails && (soonest == 0 || (uint64_t)now + 60 < soonest))
		soonest = (uint64_t)now + 60;	/* a DSN that could not queue */
	return soonest;
}

static void
queue_run(evutil_socket_t fd, short ev, void *arg)
{
	struct qmsg *m;
	time_t now = time(NULL);
	uint64_t soonest;
	size_t i, n = 0;
	int blocked;

	if (q.stopping)
		return;
	if (now - q.lastsweep >= QUEUE_SWEEP) {
		q.lastsweep = now;
		queue_wake_all();
	}
	/* What is due now; whatever becomes due meanwhile waits a run. */
	while (q.nheap > 0 && q.heap[0]->due <= (uint64_t)now) {
		m = q.heap[0];
		heap_remove(m);
		if (n == q.runcap) {
			q.runcap = q.runcap ? q.runcap * 2 : 64;
			q.runbuf = xreallocarray(q.runbuf, q.runcap,
			    sizeof(*q.runbuf));
		}
		q.runbuf[n++] = m;
	}
	/* Settling one message never frees another. */
	for (i = 0; i < n; i++) {
		m = q.runbuf[i];
		soonest = 0;
		job_try(m, now, &soonest);
		if (queue_settle(m))
			continue;
		soonest = queue_next_look(m, now, &blocked);
		if (blocked && !m->blocked && m->slot == 0) {
			TAILQ_INSERT_TAIL(&q.blocked, m, bentry);
			m->blocked = 1;
		}
		if (soonest)
			queue_wake(m, soonest);
	}
	soonest = (uint64_t)q.lastsweep + QUEUE_SWEEP;
	if (q.nheap > 0 && q.heap[0]->due < soonest)
		soonest = q.heap[0]->due;
	queue_arm(soonest);
}

/* ---- parent channel --------------------------------------------------------------- */

static void
queue_reload(struct rec_reader *rd)
{
	struct rec r;
	struct conf *c;
	char err[512];

	if (rec_next(rd, &r) != 1 || r.tag != T_CONF)
		return;
	c = conf_parse(q.conf->file, (const char *)r.data, r.len,
	    proc_basedir, err, sizeof(err));
	if (c == NULL) {
		log_warnx("event=reload result=error reason=\"%s\"", log_q(err));
		return;
	}
	if (strcmp(conf_str(c, K_SPOOL), conf_str(q.conf, K_SPOOL)) != 0)
		log_warnx("event=reload result=warn reason=\"spool change "
		    "needs a restart\"");
	conf_free(q.conf);
	q.conf = c;
	aliases_close(q.aliases);
	q.aliases = aliases_open(conf_str(c, K_ALIASES));
	log_info("event=reload result=ok");
	ctl_flush(NULL);
}

static void
queue_parent_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	switch (type) {
	case IMSG_P_PEER:
		if (fd >= 0) {
			queue_add_peer(fd);
			fd = -1;
		}
		break;
	case IMSG_P_DELIVERED:
		job_delivered(rd);
		break;
	case IMSG_P_CONF:
		queue_reload(rd);
		break;
	}
	if (fd >= 0)
		close(fd);
}

static void
queue_parent_closed(struct ipc *c, void *arg)
{
	_exit(0);
}

/* Stopping: the last batch and every changed envelope go to disk. */
static void __attribute__((noreturn))
queue_stop(const char *result)
{
	struct qmsg *m;

	commit_flush_all();
	spool_state_flush(-1, 0, NULL);
	TAILQ_FOREACH(m, &queue_all, entry)
		if (m->dirty)
			spool_write_env(m);
	/* The renames and removals of the last outcomes, too. */
	if (spool_sync_queue() == -1)
		log_warnx("event=stop result=warn reason=\"fsync queue/: %s\"",
		    strerror(errno));
	log_info("event=stop result=%s deliveries=%zu", result, job_local());
	exit(0);
}

/*
 * Once stopping, the queue exits when nothing can bring it news: every
 * smtp process it serves is gone (their last commits answered) and every
 * local delivery it started has reported.  A delivery whose outcome is
 * not recorded would be made again at the next start.
 */
void
queue_stop_check(void)
{
	if (q.stopping && job_local() == 0 && q.peers == NULL)
		queue_stop("ok");
}

static void
queue_stop_deadline(evutil_socket_t fd, short ev, void *arg)
{
	/* What is still out may be delivered again: a duplicate, no loss. */
	queue_stop("timeout");
}

/*
 * SIGTERM (from the parent, with the smtp processes'): start no more
 * deliveries, go on answering the smtp processes until they have gone and
 * recording the outcomes of local deliveries in flight, then exit; at the
 * latest after QUEUE_STOP_SECS, under the parent's own stop timeout.
 */
static void
queue_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct timeval tv = { QUEUE_STOP_SECS, 0 };

	if (q.stopping)
		return;
	q.stopping = 1;
	log_info("event=stop result=wait deliveries=%zu", job_local());
	q.stopev = evtimer_new(q.base, queue_stop_deadline, NULL);
	evtimer_add(q.stopev, &tv);
	queue_stop_check();
}

void
queue_main(struct conf *conf, const char *text, size_t len, int parentfd,
    int controlfd, int smtpfd)
{
	struct event *ev;

	(void)text;
	(void)len;
	q.conf = conf;
	job_init();
	q.base = event_base_new();
	event_base_priority_init(q.base, 2);
	q.aliases = aliases_open(conf_str(conf, K_ALIASES));
	spool_open(q.base, conf_str(conf, K_SPOOL));
	TAILQ_INIT(&q.blocked);
	q.runev = evtimer_new(q.base, queue_run, NULL);
	event_priority_set(q.runev, 1);
	spool_recover();
	q.parent = ipc_new(q.base, parentfd, queue_parent_msg,
	    queue_parent_closed, NULL);
	if (smtpfd >= 0)
		queue_add_peer(smtpfd);
	commit_start(q.base);
	ctl_start(q.base, controlfd);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(q.base, SIGTERM, queue_sigterm, NULL);
	evsignal_add(ev, NULL);
	queue_arm(0);
	proc_confine("queue");
	log_info("event=start result=ok");
	event_base_dispatch(q.base);
	exit(0);
}
