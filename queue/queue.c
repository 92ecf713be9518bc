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

#define QUEUE_HELD_RETRY	3600	/* seconds between held re-checks */
#define QUEUE_STOP_SECS		25	/* the parent kills at 30 s */

struct rround;
struct failure;


/* One target in flight; a remote transaction is several with one id. */
struct job {
	struct job	*next;
	uint64_t	 id;
	struct qmsg	*msg;
	size_t		 rcpt;
	char		*target;	/* the target's key */
	char		*desc;		/* its address */
	int		 remote;
	struct ipc	*peer;		/* remote: the smtp process doing it */
	char		*domain;	/* remote: the destination */
	time_t		 start;
};

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
	struct job		*jobs;
	size_t			 nlocal;	/* local deliveries in flight */
	size_t			 nremote;	/* remote transactions in flight */
	uint64_t		 nextjob;
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

static void	queue_run(evutil_socket_t, short, void *);
static void	queue_stop_check(void);

static void	queue_remote_result(struct ipc *, struct rec_reader *);
static void	queue_txn_lost(struct ipc *);

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
		queue_remote_result(c, rd);
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
	queue_txn_lost(c);
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

/* What a recipient's current round of deliveries came to. */
struct rround {
	int	 temp, perm, held, wait;
	char	 err[512];
	char	 waitdom[256];	/* waiting for a slot at this destination */
	uint32_t saved_attempts;	/* a round that only waited is undone */
	uint64_t saved_last;
	int	 saved_dirty;
};

static uint64_t
queue_backoff(uint32_t attempts)
{
	uint64_t min = (uint64_t)conf_num(q.conf, NULL, K_RETRY_MIN) / 1000;
	uint64_t max = (uint64_t)conf_num(q.conf, NULL, K_RETRY_MAX) / 1000;
	uint64_t d = min ? min : 1;
	uint32_t i, jitter;

	for (i = 1; i < attempts && d < max; i++)
		d *= 2;
	if (d > max)
		d = max;
	/* Up to 10% jitter, so retries of one burst do not stay in step. */
	if (getrandom(&jitter, sizeof(jitter), 0) == sizeof(jitter) && d >= 10)
		d += jitter % (d / 10);
	return d;
}

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

static struct rround *
queue_rr(struct qmsg *m, size_t ri)
{
	if (m->rr == NULL || m->nrr < m->env.nrcpts) {
		m->rr = xreallocarray(m->rr, m->env.nrcpts, sizeof(*m->rr));
		memset(m->rr + m->nrr, 0, (m->env.nrcpts - m->nrr) *
		    sizeof(*m->rr));
		m->nrr = m->env.nrcpts;
	}
	return &m->rr[ri];
}

static int
queue_rcpt_jobs(const struct qmsg *m, size_t rcpt)
{
	const struct job *j;
	int n = 0;

	for (j = q.jobs; j; j = j->next)
		if (j->msg == m && j->rcpt == rcpt)
			n++;
	return n;
}

/* Settle a recipient whose round has no deliveries left in flight. */
static void
queue_rcpt_finish(struct qmsg *m, size_t ri)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct rround *rr = queue_rr(m, ri);
	time_t now = time(NULL);
	uint64_t life = (uint64_t)conf_num(q.conf, NULL, K_QUEUE_LIFETIME) /
	    1000;

	m->dirty = 1;
	if (rr->temp && (uint64_t)now > m->env.arrival + life) {
		r->state = RS_FAILED;
		envelope_set_error(r, rr->err[0] ? rr->err : "expired");
		notice_add(m, ri, r->addr, "message expired: retried for "
		    "the whole queue lifetime; last error follows", NULL, 0);
		if (rr->err[0])
			notice_add(m, ri, r->addr, rr->err, NULL, 0);
	} else if (rr->temp) {
		r->state = RS_PENDING;
		r->next_try = (uint64_t)now + queue_backoff(r->attempts);
		envelope_set_error(r, rr->err);
	} else if (rr->held) {
		r->state = RS_HELD;
		r->next_try = (uint64_t)now + QUEUE_HELD_RETRY;
		envelope_set_error(r, rr->err);
	} else if (rr->wait) {
		/*
		 * Only waited for a slot at the destination: not an attempt,
		 * nothing to write; still due, tried when a slot frees.
		 */
		char dom[256];

		r->attempts = rr->saved_attempts;
		r->last_try = rr->saved_last;
		m->dirty = rr->saved_dirty;
		str_copy(dom, rr->waitdom, sizeof(dom));
		memset(rr, 0, sizeof(*rr));
		str_copy(rr->waitdom, dom, sizeof(rr->waitdom));
		return;
	} else if (rr->perm) {
		r->state = RS_FAILED;
		envelope_set_error(r, rr->err);
	} else {
		r->state = RS_DONE;
		envelope_set_error(r, NULL);
	}
	memset(rr, 0, sizeof(*rr));
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
 * A target another recipient of the same message already reached, or is
 * reaching now, is not delivered twice (alice listed twice, or through
 * two aliases).
 */
static int
queue_target_covered(const struct qmsg *m, size_t ri, const char *key)
{
	const struct job *j;
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (i != ri && envelope_rcpt_done(&m->env.rcpts[i], key))
			return 1;
	for (j = q.jobs; j; j = j->next)
		if (j->msg == m && strcmp(j->target, key) == 0)
			return 1;
	return 0;
}

static struct job *
queue_job_new(struct qmsg *m, size_t ri, const struct target *t, uint64_t id)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->id = id;
	j->msg = m;
	j->rcpt = ri;
	j->target = xstrdup(t->key);
	j->desc = xstrdup(t->kind == TG_REMOTE ? t->path : t->rcpt);
	j->start = time(NULL);
	j->next = q.jobs;
	q.jobs = j;
	m->jobs++;
	return j;
}

static int
queue_dispatch(struct qmsg *m, size_t ri, const struct target *t)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct buf b;
	int fd;

	if ((fd = spool_msg_fd(m)) == -1)
		return -1;
	queue_job_new(m, ri, t, ++q.nextjob);
	q.nlocal++;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, q.nextjob);
	rec_put_str(&b, T_KIND, resolve_kind_name(t->kind));
	rec_put_str(&b, T_USER, t->user);
	rec_put_str(&b, T_PATH, t->path);
	rec_put_str(&b, T_SENDER, m->env.sender);
	rec_put_str(&b, T_RCPT, t->rcpt);
	rec_put_str(&b, T_ORCPT, r->addr);
	rec_put_str(&b, T_ID, m->env.id);
	ipc_send(q.parent, IMSG_P_DELIVER, b.data, b.len, fd);
	buf_free(&b);
	return 0;
}

/* ---- remote transactions ---- */

struct pending {
	size_t		 rcpt;
	struct target	 t;	/* copied: key, rcpt, path (the address) */
	char		 domain[256];
	int		 forwarded;
};

static struct pending *pend;
static size_t npend;

static void
queue_pend_add(size_t ri, const struct target *t, int forwarded)
{
	struct pending *p;
	const char *at = strrchr(t->path, '@');

	pend = xreallocarray(pend, npend + 1, sizeof(*pend));
	p = &pend[npend++];
	memset(p, 0, sizeof(*p));
	p->rcpt = ri;
	p->t.kind = t->kind;
	p->t.key = xstrdup(t->key);
	p->t.rcpt = xstrdup(t->rcpt);
	p->t.path = xstrdup(t->path);
	p->t.user = xstrdup("");
	str_copy(p->domain, at ? at + 1 : "", sizeof(p->domain));
	str_lower(p->domain);
	p->forwarded = forwarded;
}

static void
queue_pend_clear(void)
{
	size_t i;

	for (i = 0; i < npend; i++) {
		free(pend[i].t.key);
		free(pend[i].t.rcpt);
		free(pend[i].t.path);
		free(pend[i].t.user);
	}
	npend = 0;
}

static struct peer *
queue_smtp_peer(void)
{
	return q.peers;		/* the newest smtp process */
}

/* Send one transaction: entries [from, to) of pend, all one domain. */
static void
queue_send_txn(struct qmsg *m, size_t *idx, size_t n, int forwarded)
{
	struct peer *pe = queue_smtp_peer();
	struct dest *d;
	struct buf b;
	size_t i;
	int fd;

	if (pe == NULL || (fd = spool_msg_fd(m)) == -1) {
		for (i = 0; i < n; i++)
			queue_rr(m, pend[idx[i]].rcpt)->wait = 1;
		return;
	}
	d = dest_get(pend[idx[0]].domain);
	dest_open(d);
	q.nremote++;
	++q.nextjob;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, q.nextjob);
	rec_put_str(&b, T_ID, m->env.id);
	rec_put_str(&b, T_SENDER, m->env.sender);
	/* Forwarded mail to another domain goes out with an SRS sender, so it
	   passes SPF where it lands; the smtp process asks the vault for it,
	   and bounces to it come back and are reversed at RCPT. */
	if (forwarded && m->env.sender[0] != '\0')
		rec_put_u64(&b, T_FLAGS, MTA_F_SRS);
	rec_put_str(&b, T_DOMAIN, d->domain);
	rec_put_u64(&b, T_SIZE, m->env.size);
	rec_put_u64(&b, T_BODY, (uint64_t)m->env.body8bit);
	rec_put_u64(&b, T_UTF8, (uint64_t)m->env.smtputf8);
	for (i = 0; i < n; i++) {
		struct pending *p = &pend[idx[i]];
		struct job *j = queue_job_new(m, p->rcpt, &p->t, q.nextjob);

		j->remote = 1;
		j->peer = pe->ipc;
		j->domain = xstrdup(d->domain);
		rec_put_str(&b, T_RCPT, p->t.path);
	}
	ipc_send(pe->ipc, IMSG_M_DELIVER, b.data, b.len, fd);
	buf_free(&b);
}

/*
 * Group the message's remote targets by domain and by sender (forwarded
 * copies carry another one) into transactions of at most
 * max-transaction-recipients, within the destination's connection limit.
 */
static void
queue_flush_remote(struct qmsg *m)
{
	size_t max = (size_t)conf_num(q.conf, NULL, K_MAX_TXN_RECIPIENTS);
	size_t *idx = xcalloc(npend + 1, sizeof(*idx));
	char *used = xcalloc(npend + 1, 1);
	size_t i, k, n;

	for (i = 0; i < npend; i++) {
		struct dest *d;

		if (used[i])
			continue;
		d = dest_get(pend[i].domain);
		n = 0;
		for (k = i; k < npend && n < max; k++)
			if (!used[k] && strcmp(pend[k].domain, pend[i].domain) ==
			    0 && pend[k].forwarded == pend[i].forwarded) {
				idx[n++] = k;
				used[k] = 1;
			}
		if (dest_full(d) || q.nlocal + q.nremote >=
		    (size_t)conf_num(q.conf, NULL, K_MAX_DELIVERIES)) {
			for (k = 0; k < n; k++) {
				struct rround *w = queue_rr(m, pend[idx[k]].rcpt);

				w->wait = 1;
				str_copy(w->waitdom, d->domain,
				    sizeof(w->waitdom));
			}
			continue;
		}
		queue_send_txn(m, idx, n, pend[i].forwarded);
	}
	free(idx);
	free(used);
	queue_pend_clear();
}

/*
 * Try one recipient: expand it with the current aliases and config, hand
 * every target not yet served to its agent, and note what cannot be
 * delivered by this version (it stays queued, held, with the reason).
 */
static void
queue_try_rcpt(struct qmsg *m, size_t ri)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct rround *rr = queue_rr(m, ri);
	struct target *t;
	size_t n, i, before = npend;
	char err[512];
	int started = 0;

	memset(rr, 0, sizeof(*rr));
	rr->saved_attempts = r->attempts;
	rr->saved_last = r->last_try;
	rr->saved_dirty = m->dirty;
	r->attempts++;
	r->last_try = (uint64_t)time(NULL);
	m->dirty = 1;
	if (resolve_expand(q.conf, q.aliases, r->addr, &t, &n, err,
	    sizeof(err)) == -1 || n == 0) {
		log_info("q=%s event=deliver to=<%s> status=deferred "
		    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(err[0] ? err :
		    "no targets"));
		rr->temp = 1;
		str_copy(rr->err, err[0] ? err : "no delivery targets",
		    sizeof(rr->err));
		queue_rcpt_finish(m, ri);
		return;
	}
	for (i = 0; i < n; i++) {
		if (envelope_rcpt_done(r, t[i].key))
			continue;
		if (queue_target_covered(m, ri, t[i].key)) {
			envelope_mark_done(r, t[i].key);
			continue;
		}
		if (t[i].kind == TG_REMOTE) {
			/* Through an alias or .forward: the copy is forwarded. */
			queue_pend_add(ri, &t[i], r->fwd_from != NULL ||
			    str_casecmp(t[i].path, r->addr) != 0);
			continue;
		}
		if (!resolve_is_local(t[i].kind)) {
			rr->held = 1;
			snprintf(rr->err, sizeof(rr->err), "%s delivery to \"%s\" "
			    "is not available in this version; kept in the "
			    "queue", resolve_kind_name(t[i].kind), t[i].path);
			log_info("q=%s event=deliver to=<%s> status=held "
			    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(rr->err));
			continue;
		}
		if (queue_dispatch(m, ri, &t[i]) == 0)
			started++;
		else {
			/* Not delivered, so not done: retried later. */
			rr->temp = 1;
			snprintf(rr->err, sizeof(rr->err), "cannot open the "
			    "queued message: %s", strerror(errno));
			log_warnx("q=%s event=deliver to=<%s> status=deferred "
			    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(rr->err));
		}
	}
	resolve_free(t, n);
	if (started == 0 && npend == before)
		queue_rcpt_finish(m, ri);
}

/* A recipient still waiting for a destination that has no free slot. */
static int
queue_still_waiting(struct qmsg *m, size_t ri)
{
	struct dest *d;

	if (m->rr == NULL || ri >= m->nrr || m->rr[ri].waitdom[0] == '\0')
		return 0;
	d = dest_get(m->rr[ri].waitdom);
	return dest_full(d);
}

static void
queue_try_msg(struct qmsg *m, time_t now, uint64_t *soonest)
{
	size_t i;

	if ((m->env.flags & ENV_HOLD) || m->removed)
		return;
	for (i = 0; i < m->env.nrcpts; i++) {
		struct env_rcpt *r = &m->env.rcpts[i];

		if (r->state != RS_PENDING && r->state != RS_HELD)
			continue;
		if (r->next_try > (uint64_t)now) {
			if (*soonest == 0 || r->next_try < *soonest)
				*soonest = r->next_try;
			continue;
		}
		if (q.nlocal + q.nremote >= (size_t)conf_num(q.conf, NULL,
		    K_MAX_DELIVERIES))
			break;		/* a finishing delivery kicks us again */
		if (queue_still_waiting(m, i))
			continue;	/* so does a slot freeing there */
		if (queue_rcpt_jobs(m, i) == 0)
			queue_try_rcpt(m, i);
	}
	queue_flush_remote(m);
	/* Recipients whose copies all waited for a slot end their round. */
	for (i = 0; i < m->env.nrcpts; i++)
		if (queue_rcpt_jobs(m, i) == 0 && m->rr && i < m->nrr &&
		    m->rr[i].wait)
			queue_rcpt_finish(m, i);
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
		} else if (queue_rcpt_jobs(m, i) == 0)
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
		queue_try_msg(m, now, &soonest);
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

/* One target's outcome, from a local worker or a remote transaction. */
static void
queue_target_result(struct job *j, int status, const char *text,
    const char *relay)
{
	struct qmsg *m = j->msg;
	struct env_rcpt *rc = &m->env.rcpts[j->rcpt];
	struct rround *rr = queue_rr(m, j->rcpt);
	char esc[16];

	notice_esc(text, status == 2, esc, sizeof(esc));
	log_info("q=%s event=deliver to=<%s> orig_to=<%s> relay=%s delay=%lds "
	    "dsn=%s status=%s reason=\"%s\"", m->env.id, log_a(j->desc), log_a(rc->addr),
	    relay, (long)(time(NULL) - (time_t)m->env.arrival),
	    status == 0 ? "2.0.0" : esc, status == 0 ? "sent" : status == 1 ?
	    "deferred" : "bounced", log_q(text ? text : ""));
	if (status == 0)
		envelope_mark_done(rc, j->target);
	else if (status == 1) {
		rr->temp = 1;
		str_copy(rr->err, text ? text : "temporary failure",
		    sizeof(rr->err));
	} else {
		/* Served, with a failure the sender hears about in a DSN. */
		envelope_mark_done(rc, j->target);
		rr->perm = 1;
		str_copy(rr->err, text ? text : "permanent failure",
		    sizeof(rr->err));
		notice_add(m, j->rcpt, j->desc, text, relay, 0);
	}
	m->dirty = 1;
}

static void
queue_job_free(struct job *j)
{
	struct qmsg *m = j->msg;
	size_t ri = j->rcpt;

	m->jobs--;
	if (queue_rcpt_jobs(m, ri) == 0)
		queue_rcpt_finish(m, ri);
	queue_wake(m, 0);	/* to settle, and for what is due next */
	free(j->target);
	free(j->desc);
	free(j->domain);
	free(j);
}

/*
 * Take a job for an outcome.  peer NULL: a local job (the parent reports);
 * otherwise a remote job that this smtp process was given, so one process
 * cannot settle another's deliveries or a local one.
 */
static struct job *
queue_job_take(uint64_t id, const char *desc, struct ipc *peer)
{
	struct job **pp, *j;

	for (pp = &q.jobs; (j = *pp) != NULL; pp = &j->next)
		if (j->id == id && (desc == NULL ||
		    str_casecmp(j->desc, desc) == 0) &&
		    (peer ? (j->remote && j->peer == peer) : !j->remote)) {
			*pp = j->next;
			return j;
		}
	return NULL;
}

/*
 * T_FORWARD records of a delivery to an account: the addresses its
 * ~/.forward sends the message on to become new recipients, delivered by
 * the usual path.  One already a recipient is not added again; a chain
 * back to a target already served ends in the per-message de-duplication
 * of targets (queue_target_covered), so a loop delivers nothing twice.
 */
static void
queue_forward(struct qmsg *m, size_t ri, struct rec_reader *rd)
{
	const size_t most = 1000;	/* recipients, forwarded ones included */
	struct rec r;
	char *addr;
	size_t i;

	while (rec_next(rd, &r) == 1) {
		if (r.tag != T_FORWARD || (addr = rec_str(&r, 512)) == NULL)
			continue;
		for (i = 0; i < m->env.nrcpts; i++)
			if (str_casecmp(m->env.rcpts[i].addr, addr) == 0)
				break;
		log_info("q=%s event=forward orig_to=<%s> to=<%s> result=%s",
		    m->env.id, log_a(m->env.rcpts[ri].addr), log_a(addr), i < m->env.nrcpts ?
		    "duplicate" : m->env.nrcpts >= most ? "too-many" : "ok");
		/* Marked as forwarded: a remote copy gets an SRS sender. */
		if (i == m->env.nrcpts && m->env.nrcpts < most) {
			envelope_add_rcpt(&m->env, addr);
			m->env.rcpts[m->env.nrcpts - 1].fwd_from =
			    xstrdup(m->env.rcpts[ri].addr);
			m->dirty = 1;
		}
		free(addr);
	}
}

static void
queue_delivered(struct rec_reader *rd)
{
	struct rec r;
	struct rec_reader fwd = *rd;
	uint64_t jid = 0, status = 1;
	char *text = NULL;
	struct job *j;
	struct qmsg *m;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_JOB)
			rec_u64(&r, &jid);
		else if (r.tag == T_STATUS)
			rec_u64(&r, &status);
		else if (r.tag == T_TEXT && text == NULL)
			text = rec_str(&r, 1024);
	}
	if ((j = queue_job_take(jid, NULL, NULL)) == NULL) {
		free(text);
		return;
	}
	q.nlocal--;
	m = j->msg;
	queue_target_result(j, status > 2 ? 1 : (int)status, text, "local");
	if (status == 0)
		queue_forward(m, j->rcpt, &fwd);
	queue_job_free(j);
	queue_settle(m);
	free(text);
	queue_unblock();
	queue_stop_check();
}

/* IMSG_M_RESULT: one outcome per recipient of a remote transaction. */
static void
queue_remote_result(struct ipc *peer, struct rec_reader *rd)
{
	struct rec r;
	uint64_t jid = 0, status = 1;
	char *relay = NULL, *addr = NULL, *text = NULL, *tls = NULL;
	struct qmsg *m = NULL;
	struct dest *d = NULL;
	struct job *j;

	while (rec_next(rd, &r) == 1) {
		switch (r.tag) {
		case T_JOB:
			rec_u64(&r, &jid);
			break;
		case T_RELAY:
			free(relay);
			relay = rec_str(&r, 320);
			break;
		case T_TLS:
			free(tls);
			tls = rec_str(&r, 200);
			break;
		case T_RCPT:
			free(addr);
			addr = rec_str(&r, 512);
			break;
		case T_STATUS:
			rec_u64(&r, &status);
			break;
		case T_TEXT:
			free(text);
			text = rec_str(&r, 1024);
			if (addr == NULL ||
			    (j = queue_job_take(jid, addr, peer)) == NULL)
				break;
			m = j->msg;
			if (d == NULL && j->domain)
				d = dest_get(j->domain);
			if (d)
				dest_outcome(d, status > 2 ? 1 : (int)status, text);
			queue_target_result(j, status > 2 ? 1 : (int)status,
			    text, relay ? relay : "none");
			queue_job_free(j);
			break;
		}
	}
	/* Recipients the reply did not mention are retried. */
	while ((j = queue_job_take(jid, NULL, peer)) != NULL) {
		m = j->msg;
		if (d == NULL && j->domain)
			d = dest_get(j->domain);
		queue_target_result(j, 1, "no outcome reported", relay ?
		    relay : "none");
		queue_job_free(j);
	}
	if (d)
		dest_close(d);
	if (q.nremote > 0)
		q.nremote--;
	if (m)
		queue_settle(m);
	free(relay);
	free(addr);
	free(text);
	free(tls);
	queue_unblock();
}

/*
 * The smtp process that had these transactions is gone: their outcome
 * will never come, so every recipient in them is retried.
 */
static void
queue_txn_lost(struct ipc *peer)
{
	struct job *j;
	struct qmsg *m;
	struct dest *d;
	uint64_t id;

	for (;;) {
		for (j = q.jobs; j; j = j->next)
			if (j->remote && j->peer == peer)
				break;
		if (j == NULL)
			break;
		id = j->id;
		d = j->domain ? dest_get(j->domain) : NULL;
		while ((j = queue_job_take(id, NULL, peer)) != NULL) {
			m = j->msg;
			queue_target_result(j, 1, "the delivering process went "
			    "away", "none");
			queue_job_free(j);
			queue_settle(m);
		}
		if (d)
			dest_close(d);
		if (q.nremote > 0)
			q.nremote--;
	}
	queue_unblock();
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
		queue_delivered(rd);
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
	log_info("event=stop result=%s deliveries=%zu", result, q.nlocal);
	exit(0);
}

/*
 * Once stopping, the queue exits when nothing can bring it news: every
 * smtp process it serves is gone (their last commits answered) and every
 * local delivery it started has reported.  A delivery whose outcome is
 * not recorded would be made again at the next start.
 */
static void
queue_stop_check(void)
{
	if (q.stopping && q.nlocal == 0 && q.peers == NULL)
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
	log_info("event=stop result=wait deliveries=%zu", q.nlocal);
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
	/* Job ids of an earlier queue process may still come back. */
	q.nextjob = (uint64_t)time(NULL) << 24;
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
