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
#include "queue/dsn.h"
#include "queue/envelope.h"
#include "queue/mta.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "queue/qint.h"
#include "queue/resolve.h"
#include "lib/util.h"

/* Where ternd started: relative config paths resolve against it. */
const char *proc_basedir = "/";

#define QUEUE_DSN_READ		(256 * 1024)	/* of the original, for DSNs */
#define QUEUE_DSN_FULL		50000	/* returned whole up to this size */
#define QUEUE_HELD_RETRY	3600	/* seconds between held re-checks */
#define QUEUE_STOP_SECS		25	/* the parent kills at 30 s */

struct incoming {
	struct incoming	*next;
	char		 id[QID_LEN + 1];
	struct ipc	*peer;
	uint64_t	 sid;
	struct envelope	 env;
	int		 batched;
};

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
	int			 spoolfd, incfd, qfd;
	struct incoming		*incoming;
	struct incoming		**batch;
	size_t			 nbatch;
	struct event		*flushev;
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
	struct event		*stateev;	/* lazy envelope updates */
	int			 stopping;	/* SIGTERM: no new deliveries */
	struct event		*stopev;	/* the stop's deadline */
} q;

struct qmsgs queue_all = TAILQ_HEAD_INITIALIZER(queue_all);

static void	queue_run(evutil_socket_t, short, void *);
static void	queue_remove_files(const char *);
static void	queue_stop_check(void);

/* The commit thread: syncs a batch while the loop fills the next. */
static struct {
	pthread_t	 thread;
	pthread_mutex_t	 mu;
	pthread_cond_t	 cv;
	int		 wakefd[2];	/* thread -> loop: a batch is done */
	struct event	*doneev;
	int		 running;	/* the thread is there */
	int		 busy;		/* loop side: a batch is out */
	int		 pending;	/* under mu: the thread has work */
	struct incoming	**work;		/* the batch out, its results */
	int		*res;
	size_t		 nwork;
	/* Whoever commits (one at a time): what each way of syncing costs. */
	double		 syncfs_us;	/* a whole syncfs, smoothed */
	double		 fsync_us;	/* one file's fdatasync, smoothed */
	unsigned	 nbatches;
} qc;
static int	queue_commit_incoming(struct incoming *);
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

/* ---- spool ------------------------------------------------------------------- */

static int
queue_newid(char id[QID_LEN + 1])
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)rand();
	snprintf(id, QID_LEN + 1, "%08X%08X", (unsigned)time(NULL), r);
	return 0;
}

static int
queue_create_file(char id[QID_LEN + 1])
{
	int fd, tries;

	for (tries = 0; tries < 10; tries++) {
		queue_newid(id);
		fd = openat(q.incfd, id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1;
}

static void
queue_unlink_incoming(const char *id)
{
	char env[QID_LEN + 8];

	unlinkat(q.incfd, id, 0);
	snprintf(env, sizeof(env), "%s.env", id);
	unlinkat(q.incfd, env, 0);
}

static int
queue_valid_id(const char *id)
{
	size_t i;

	if (strlen(id) != QID_LEN)
		return 0;
	for (i = 0; i < QID_LEN; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		    (id[i] >= 'A' && id[i] <= 'F')))
			return 0;
	return 1;
}

/* Write all of b to a new file name in dir; 0 or -1 with errno. */
static int
queue_write_file(int dirfd, const char *name, const struct buf *b, int sync)
{
	int fd, e;

	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	if (fd_write_all(fd, b->data, b->len) == -1)
		goto fail;
	if (sync && fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	e = errno;		/* 0: a short write that said nothing */
	if (fd >= 0)
		close(fd);
	unlinkat(dirfd, name, 0);
	errno = e;
	return -1;
}

/* ---- receiving from smtp ---------------------------------------------------- */

static struct incoming *
queue_find_incoming(const char *id, struct ipc *peer, struct incoming ***pp)
{
	struct incoming **p, *in;

	for (p = &q.incoming; (in = *p) != NULL; p = &in->next)
		if (strcmp(in->id, id) == 0 && in->peer == peer) {
			if (pp)
				*pp = p;
			return in;
		}
	return NULL;
}

static void
queue_reply(struct ipc *peer, int type, uint64_t sid, const char *id,
    int code, const char *text, int fd)
{
	struct buf b;

	buf_init(&b);
	rec_put_u64(&b, T_SID, sid);
	if (id)
		rec_put_str(&b, T_ID, id);
	rec_put_u64(&b, T_CODE, (uint64_t)code);
	if (text)
		rec_put_str(&b, T_TEXT, text);
	ipc_send(peer, type, b.data, b.len, fd);
	buf_free(&b);
}

static void
queue_do_create(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	struct rec r;
	uint64_t sid = 0;
	char id[QID_LEN + 1];
	int fd;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_SID)
			rec_u64(&r, &sid);
	if ((fd = queue_create_file(id)) == -1) {
		int full = errno == ENOSPC || errno == EDQUOT;

		log_warnx("event=create result=error reason=\"%s\"",
		    strerror(errno));
		queue_reply(peer, IMSG_Q_CREATED, sid, NULL, full ? 452 : 451,
		    strerror(errno), -1);
		return;
	}
	in = xcalloc(1, sizeof(*in));
	memcpy(in->id, id, sizeof(in->id));
	in->peer = peer;
	in->sid = sid;
	memcpy(in->env.id, id, sizeof(in->env.id));
	in->next = q.incoming;
	q.incoming = in;
	queue_reply(peer, IMSG_Q_CREATED, sid, id, 0, NULL, fd);
}

static void
queue_drop_incoming(struct incoming *in)
{
	struct incoming **p, *x;

	for (p = &q.incoming; (x = *p) != NULL; p = &x->next)
		if (x == in) {
			*p = in->next;
			break;
		}
	if (in->batched != 2)		/* published files are not here */
		queue_unlink_incoming(in->id);
	envelope_free(&in->env);
	free(in);
}

/* The queue id and session id of a request, read from a copy of it. */
static char *
queue_rec_ids(struct rec_reader rd, uint64_t *sid)
{
	struct rec r;
	char *id = NULL;

	while (rec_next(&rd, &r) == 1) {
		if (r.tag == T_ID && id == NULL)
			id = rec_str(&r, QID_LEN);
		else if (r.tag == T_SID)
			rec_u64(&r, sid);
	}
	return id;
}

static void
queue_do_rcpts(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in = NULL;
	struct rec r;
	char *s;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_ID) {
			if ((s = rec_str(&r, QID_LEN)) == NULL)
				return;
			in = queue_find_incoming(s, peer, NULL);
			free(s);
		} else if (r.tag == T_RCPT && in && !in->batched) {
			if ((s = rec_str(&r, 1024)) == NULL)
				return;
			envelope_add_rcpt(&in->env, s);
			free(s);
		}
	}
}

static int
queue_fill_env(struct envelope *e, struct rec_reader *rd)
{
	struct rec r;
	uint64_t v;
	char **dst;

	while (rec_next(rd, &r) == 1) {
		dst = NULL;
		switch (r.tag) {
		case T_SENDER:
			dst = &e->sender;
			break;
		case T_HELO:
			dst = &e->helo;
			break;
		case T_CLIENT:
			dst = &e->client;
			break;
		case T_PROTO:
			dst = &e->proto;
			break;
		case T_BODY:
			if (rec_u64(&r, &v) == 0)
				e->body8bit = v != 0;
			break;
		case T_UTF8:
			if (rec_u64(&r, &v) == 0)
				e->smtputf8 = v != 0;
			break;
		case T_SIZE:
			rec_u64(&r, &e->size);
			break;
		}
		if (dst) {
			free(*dst);
			if ((*dst = rec_str(&r, 1024)) == NULL)
				return -1;
		}
	}
	return (e->sender && e->nrcpts) ? 0 : -1;
}

static void
queue_do_commit(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	uint64_t sid = 0;
	char *id = queue_rec_ids(*rd, &sid);

	if (id == NULL || (in = queue_find_incoming(id, peer, NULL)) == NULL ||
	    in->batched) {
		queue_reply(peer, IMSG_Q_COMMITTED, sid, id, 451,
		    "unknown message", -1);
		free(id);
		return;
	}
	free(id);
	in->env.arrival = (uint64_t)time(NULL);
	if (queue_fill_env(&in->env, rd) == -1) {
		queue_reply(peer, IMSG_Q_COMMITTED, in->sid, in->id, 451,
		    "bad envelope", -1);
		queue_drop_incoming(in);
		return;
	}
	if (queue_commit_incoming(in) == -1) {
		int full = errno == ENOSPC || errno == EDQUOT;

		log_warnx("q=%s event=commit result=error reason=\"%s\"",
		    in->id, fd_strerror(errno));
		queue_reply(peer, IMSG_Q_COMMITTED, in->sid, in->id,
		    full ? 452 : 451, fd_strerror(errno), -1);
		queue_drop_incoming(in);
	}
}

/*
 * Write the envelope next to the message in incoming/ and join the batch
 * the next flush makes durable.  0, or -1 with errno (files left for the
 * caller to drop).
 */
static int
queue_commit_incoming(struct incoming *in)
{
	char envname[QID_LEN + 8];
	struct buf b;
	int r;

	buf_init(&b);
	envelope_encode(&in->env, &b);
	snprintf(envname, sizeof(envname), "%s.env", in->id);
	r = queue_write_file(q.incfd, envname, &b, 0);
	buf_free(&b);
	if (r == -1)
		return -1;
	in->batched = 1;
	q.batch = xreallocarray(q.batch, q.nbatch + 1, sizeof(*q.batch));
	q.batch[q.nbatch++] = in;
	event_active(q.flushev, EV_TIMEOUT, 1);
	return 0;
}

static void
queue_do_abort(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	char id[QID_LEN + 1];
	size_t len = rd->len - rd->off;

	/* The payload of an abort is the bare id. */
	if (len != QID_LEN)
		return;
	memcpy(id, rd->p + rd->off, QID_LEN);
	id[QID_LEN] = '\0';
	if ((in = queue_find_incoming(id, peer, NULL)) == NULL || in->batched)
		return;
	queue_drop_incoming(in);
}

static void
queue_peer_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	if (fd >= 0)
		close(fd);
	switch (type) {
	case IMSG_Q_CREATE:
		queue_do_create(c, rd);
		break;
	case IMSG_Q_RCPTS:
		queue_do_rcpts(c, rd);
		break;
	case IMSG_Q_COMMIT:
		queue_do_commit(c, rd);
		break;
	case IMSG_Q_ABORT:
		queue_do_abort(c, rd);
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
	struct incoming *in, *next;

	/* Messages that smtp process was receiving are now orphans. */
	for (in = q.incoming; in; in = next) {
		next = in->next;
		if (in->peer == c && !in->batched)
			queue_drop_incoming(in);
		else if (in->peer == c)
			in->peer = NULL;	/* committed anyway; no reply */
	}
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

/* ---- group commit ----------------------------------------------------------- */

static int
queue_publish(struct incoming *in)
{
	char from[QID_LEN + 8], to[QID_LEN + 8];

	snprintf(to, sizeof(to), "%s.msg", in->id);
	if (renameat(q.incfd, in->id, q.qfd, to) == -1)
		return -1;
	snprintf(from, sizeof(from), "%s.env", in->id);
	snprintf(to, sizeof(to), "%s.env", in->id);
	if (renameat(q.incfd, from, q.qfd, to) == -1) {
		snprintf(to, sizeof(to), "%s.msg", in->id);
		renameat(q.qfd, to, q.incfd, in->id);
		return -1;
	}
	return 0;
}

/* Oldest first; a new message is due at once. */
static void
queue_append_msg(struct qmsg *m)
{
	TAILQ_INSERT_TAIL(&queue_all, m, entry);
	queue_wake(m, 0);
}

static void
queue_adopt(struct incoming *in)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	m->env = in->env;
	memset(&in->env, 0, sizeof(in->env));
	queue_append_msg(m);
	log_info("q=%s event=queued from=<%s> nrcpt=%zu size=%llu client=%s",
	    m->env.id, log_a(m->env.sender), m->env.nrcpts,
	    (unsigned long long)m->env.size, m->env.client);
}

/* fdatasync of one file of incoming/; 0 or errno. */
static int
queue_sync_file(const char *name)
{
	int fd, e = 0;

	if ((fd = openat(q.incfd, name, O_RDONLY | O_CLOEXEC)) == -1)
		return errno;
	if (fdatasync(fd) == -1)
		e = errno;
	close(fd);
	return e;
}

static double
queue_us_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e6 +
	    (double)(t1.tv_nsec - t0->tv_nsec) / 1e3;
}

/*
 * One commit for the whole batch: every message and envelope file it
 * holds is made durable, the renames publish them, and one fsync of the
 * queue directory makes the renames durable.  Only then is any client
 * told 250.  res[i] is 0 or the errno that sank entry i.
 *
 * This runs in the commit thread, so the loop goes on reading requests
 * while the disk works: the next batch fills with every message that
 * arrives meanwhile, which is what makes the commit a group commit under
 * load.  It touches only the entries' ids and the spool's directory fds.
 *
 * The files of a batch reach the disk one of two ways: one syncfs for
 * all, or an fdatasync of each.  Which is cheaper depends on the
 * filesystem (with a journal, the first fdatasync commits everything and
 * the rest cost little, while syncfs also writes back whatever else is
 * dirty there; without one, each fdatasync is a flush of its own) and on
 * the batch size, so both are timed and the cheaper one for this batch is
 * taken; one batch in 32 uses the other, to keep its figure fresh.
 */
static void
queue_commit_batch(struct incoming **batch, size_t n, int *res)
{
	char env[QID_LEN + 8];
	struct timespec t0;
	size_t i, published = 0;
	int err = 0, each;

	if (qc.fsync_us == 0 || qc.syncfs_us == 0)
		each = qc.fsync_us == 0;	/* measure both first */
	else
		each = 2.0 * (double)n * qc.fsync_us < qc.syncfs_us;
	if (++qc.nbatches % 32 == 0)
		each = !each;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (each) {
		for (i = 0; i < n; i++) {
			snprintf(env, sizeof(env), "%s.env", batch[i]->id);
			if ((res[i] = queue_sync_file(batch[i]->id)) == 0)
				res[i] = queue_sync_file(env);
		}
		qc.fsync_us = qc.fsync_us == 0 ? queue_us_since(&t0) /
		    (2.0 * (double)n) : 0.8 * qc.fsync_us + 0.2 *
		    queue_us_since(&t0) / (2.0 * (double)n);
	} else {
		if (syncfs(q.spoolfd) == -1)
			err = errno;
		for (i = 0; i < n; i++)
			res[i] = err;
		qc.syncfs_us = qc.syncfs_us == 0 ? queue_us_since(&t0) :
		    0.8 * qc.syncfs_us + 0.2 * queue_us_since(&t0);
	}
	for (i = 0; i < n; i++) {
		if (res[i] == 0 && queue_publish(batch[i]) == -1)
			res[i] = errno;
		if (res[i] == 0)
			published++;
	}
	/* One directory sync covers every rename; failed, it sinks them all. */
	if (published > 0 && fsync(q.qfd) == -1) {
		err = errno;
		for (i = 0; i < n; i++)
			if (res[i] == 0)
				res[i] = err;
	}
}

/* Back in the loop: answer in order, adopt what is durable. */
static void
queue_commit_done(struct incoming **batch, size_t n, const int *res)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct incoming *in = batch[i];
		int e = res[i];
		int code = e == 0 ? 0 : (e == ENOSPC || e == EDQUOT) ? 452 : 451;

		if (in->peer)
			queue_reply(in->peer, IMSG_Q_COMMITTED, in->sid, in->id,
			    code, e ? strerror(e) : NULL, -1);
		if (code == 0) {
			in->batched = 2;	/* its files are in queue/ now */
			queue_adopt(in);
		} else {
			/* Refused: no copy may stay behind, published or not. */
			queue_remove_files(in->id);
			log_warnx("q=%s event=commit result=error reason=\"%s\"",
			    in->id, strerror(e));
		}
		queue_drop_incoming(in);
	}
}

static void *
queue_commit_thread(void *arg)
{
	pthread_mutex_lock(&qc.mu);
	for (;;) {
		while (!qc.pending)
			pthread_cond_wait(&qc.cv, &qc.mu);
		pthread_mutex_unlock(&qc.mu);
		queue_commit_batch(qc.work, qc.nwork, qc.res);
		pthread_mutex_lock(&qc.mu);
		qc.pending = 0;
		pthread_cond_broadcast(&qc.cv);
		/* A full pipe already holds a wake-up. */
		(void)!write(qc.wakefd[1], "", 1);
	}
	return NULL;
}

/* Hand the current batch to the commit thread (or commit it here). */
static void
queue_flush(evutil_socket_t fd, short ev, void *arg)
{
	struct incoming **batch = q.batch;
	size_t n = q.nbatch;
	int *res;

	if (n == 0 || qc.busy)
		return;
	q.batch = NULL;
	q.nbatch = 0;
	res = xcalloc(n, sizeof(*res));
	if (!qc.running) {
		queue_commit_batch(batch, n, res);
		queue_commit_done(batch, n, res);
		free(res);
		free(batch);
		return;
	}
	qc.busy = 1;
	pthread_mutex_lock(&qc.mu);
	qc.work = batch;
	qc.nwork = n;
	qc.res = res;
	qc.pending = 1;
	pthread_cond_broadcast(&qc.cv);
	pthread_mutex_unlock(&qc.mu);
}

/* The thread's batch is durable (or failed): finish it, start the next. */
static void
queue_flush_done(evutil_socket_t fd, short ev, void *arg)
{
	char tmp[64];
	int pending;

	while (read(qc.wakefd[0], tmp, sizeof(tmp)) > 0)
		;
	pthread_mutex_lock(&qc.mu);
	pending = qc.pending;
	pthread_mutex_unlock(&qc.mu);
	if (!qc.busy || pending)
		return;
	qc.busy = 0;
	queue_commit_done(qc.work, qc.nwork, qc.res);
	free(qc.work);
	free(qc.res);
	qc.work = NULL;
	qc.res = NULL;
	qc.nwork = 0;
	queue_flush(-1, 0, NULL);
}

/* Shutdown: the batch out and the one filling both end durable. */
static void
queue_flush_all(void)
{
	if (qc.busy) {
		pthread_mutex_lock(&qc.mu);
		while (qc.pending)
			pthread_cond_wait(&qc.cv, &qc.mu);
		pthread_mutex_unlock(&qc.mu);
	}
	qc.running = 0;		/* what is left is committed here */
	if (qc.busy)
		queue_flush_done(-1, 0, NULL);	/* and starts the rest here */
	else
		queue_flush(-1, 0, NULL);
}

static void
queue_commit_start(void)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int r;

	if (pipe2(qc.wakefd, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warnx("event=start result=warn reason=\"commit thread: "
		    "%s; committing in the loop\"", strerror(errno));
		return;
	}
	pthread_mutex_init(&qc.mu, NULL);
	pthread_cond_init(&qc.cv, NULL);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	/* Signals are the loop's: the thread blocks them all. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	r = pthread_create(&qc.thread, &attr, queue_commit_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		log_warnx("event=start result=warn reason=\"commit thread: "
		    "%s; committing in the loop\"", strerror(r));
		close(qc.wakefd[0]);
		close(qc.wakefd[1]);
		return;
	}
	qc.doneev = event_new(q.base, qc.wakefd[0], EV_READ | EV_PERSIST,
	    queue_flush_done, NULL);
	event_add(qc.doneev, NULL);
	qc.running = 1;
}

/* ---- recovery --------------------------------------------------------------- */

static int
queue_open_dir(int parent, const char *name)
{
	int fd;

	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		fatalx("event=start result=error reason=\"spool %s: %s\"",
		    name, strerror(errno));
	return fd;
}

static void
queue_to_corrupt(const char *id, const char *why)
{
	char name[QID_LEN + 8];
	int cfd = openat(q.spoolfd, "corrupt", O_RDONLY | O_DIRECTORY);

	log_warnx("q=%s event=recover result=corrupt reason=\"%s\"", id, log_q(why));
	if (cfd == -1)
		return;
	snprintf(name, sizeof(name), "%s.env", id);
	renameat(q.qfd, name, cfd, name);
	snprintf(name, sizeof(name), "%s.msg", id);
	renameat(q.qfd, name, cfd, name);
	close(cfd);
}

static void
queue_load(const char *id)
{
	char name[QID_LEN + 8];
	struct buf b;
	struct envelope e;
	struct qmsg *m;
	struct stat st;
	const char *why = NULL;
	int fd;

	buf_init(&b);
	snprintf(name, sizeof(name), "%s.env", id);
	fd = openat(q.qfd, name, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		char tmp[8192];
		ssize_t n;

		while ((n = read(fd, tmp, sizeof(tmp))) > 0 && b.len < (64u << 20))
			buf_append(&b, tmp, (size_t)n);
		close(fd);
	}
	snprintf(name, sizeof(name), "%s.msg", id);
	if (fd == -1)
		why = "envelope unreadable";
	else if (envelope_decode(b.data, b.len, &e, &why) == -1)
		;
	else if (strcmp(e.id, id) != 0) {
		why = "envelope id mismatch";
		envelope_free(&e);
	} else if (fstatat(q.qfd, name, &st, 0) == -1) {
		why = "message file missing";
		envelope_free(&e);
	}
	buf_free(&b);
	if (why) {
		queue_to_corrupt(id, why);
		return;
	}
	m = xcalloc(1, sizeof(*m));
	m->env = e;
	queue_append_msg(m);
}

/*
 * Call fn for every entry of a spool directory.  Each scan reads its own
 * descriptor, opened afresh: a dup() of dirfd would share its position
 * with every earlier scan, and a second scan would start at the end.
 */
static int
queue_scan(int dirfd, int (*fn)(int, const char *))
{
	struct dirent *de;
	DIR *d;
	int fd, n = 0;

	if ((fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n += fn(dirfd, de->d_name);
	closedir(d);
	return n;
}

/* incoming/: nothing in it was ever acknowledged. */
static int
queue_recover_incoming(int dirfd, const char *name)
{
	return unlinkat(dirfd, name, 0) == 0;
}

/* queue/: load each envelope; an update left half written goes. */
static int
queue_recover_env(int dirfd, const char *name)
{
	size_t len = strlen(name);
	char id[QID_LEN + 1];

	if (len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
		unlinkat(dirfd, name, 0);
		return 0;
	}
	if (len != QID_LEN + 4 || strcmp(name + QID_LEN, ".env") != 0)
		return 0;
	memcpy(id, name, QID_LEN);
	id[QID_LEN] = '\0';
	if (!queue_valid_id(id))
		return 0;
	queue_load(id);
	return 1;
}

/* queue/: a message without its envelope was never committed, or is done. */
static int
queue_recover_msg(int dirfd, const char *name)
{
	char env[QID_LEN + 8];
	struct stat st;

	if (strlen(name) != QID_LEN + 4 || strcmp(name + QID_LEN, ".msg") != 0)
		return 0;
	memcpy(env, name, QID_LEN);
	memcpy(env + QID_LEN, ".env", 5);
	if (fstatat(dirfd, env, &st, 0) == 0 || errno != ENOENT ||
	    unlinkat(dirfd, name, 0) == -1)
		return 0;
	log_info("q=%.*s event=recover result=removed reason=\"message "
	    "without envelope\"", QID_LEN, name);
	return 1;
}

static void
queue_recover(void)
{
	int removed, orphans, loaded;
	struct qmsg *m;

	removed = queue_scan(q.incfd, queue_recover_incoming);
	if ((loaded = queue_scan(q.qfd, queue_recover_env)) == -1)
		fatalx("event=start result=error reason=\"spool unreadable\"");
	/* After the envelopes: one moved to corrupt/ took its message along. */
	orphans = queue_scan(q.qfd, queue_recover_msg);
	TAILQ_FOREACH(m, &queue_all, entry) {
		size_t i;

		for (i = 0; i < m->env.nrcpts; i++)
			if (m->env.rcpts[i].state == RS_HELD)
				m->env.rcpts[i].state = RS_PENDING;
	}
	log_info("event=recover result=ok messages=%d removed_partial=%d",
	    loaded, (removed > 0 ? removed : 0) + (orphans > 0 ? orphans : 0));
}

/* ---- scheduling and delivery -------------------------------------------------- */

/*
 * Per-destination state, kept in one place: how many transactions are open
 * to a domain, the limit, and how recent attempts went.  Pacing builds on
 * this (a later version adapts the limit to what the destination accepts).
 */

struct dest *queue_dests;	/* every destination seen */

static struct dest *
dest_get(const char *domain)
{
	struct dest *d;

	for (d = queue_dests; d; d = d->next)
		if (strcmp(d->domain, domain) == 0)
			return d;
	d = xcalloc(1, sizeof(*d));
	str_copy(d->domain, domain, sizeof(d->domain));
	d->next = queue_dests;
	queue_dests = d;
	return d;
}

static int
dest_limit(const struct dest *d)
{
	(void)d;	/* one limit for all, until pacing adapts it */
	return (int)conf_num(q.conf, NULL, K_MAX_DOMAIN_CONNECTIONS);
}

static void
dest_outcome(struct dest *d, int status, const char *text)
{
	d->last = time(NULL);
	if (status == 0) {
		d->ok++;
		d->streak = 0;
		return;
	}
	if (status == 1) {
		d->temp++;
		d->streak++;
	} else
		d->perm++;
	log_sanitize(d->lasterr, text ? text : "", sizeof(d->lasterr));
}

/* What a recipient's current round of deliveries came to. */
struct rround {
	int	 temp, perm, held, wait;
	char	 err[512];
	char	 waitdom[256];	/* waiting for a slot at this destination */
	uint32_t saved_attempts;	/* a round that only waited is undone */
	uint64_t saved_last;
	int	 saved_dirty;
};

/* A permanent failure owed to the sender in a DSN. */
struct failure {
	struct failure	*next;
	char		*rcpt, *orcpt, *status, *diag, *relay;
	int		 delayed;
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
queue_remove_files(const char *id)
{
	char name[QID_LEN + 8];

	/* The envelope goes first: an orphan .msg is cleaned at start. */
	snprintf(name, sizeof(name), "%s.env", id);
	unlinkat(q.qfd, name, 0);
	snprintf(name, sizeof(name), "%s.msg", id);
	unlinkat(q.qfd, name, 0);
}

static void
queue_failures_free(struct qmsg *m)
{
	struct failure *f, *n;

	for (f = m->fails; f; f = n) {
		n = f->next;
		free(f->rcpt);
		free(f->orcpt);
		free(f->status);
		free(f->diag);
		free(f->relay);
		free(f);
	}
	m->fails = NULL;
}

static void
queue_unlink_msg(struct qmsg *m)
{
	TAILQ_REMOVE(&queue_all, m, entry);
	heap_remove(m);
	if (m->blocked)
		TAILQ_REMOVE(&q.blocked, m, bentry);
	queue_failures_free(m);
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

/*
 * Delivery state (attempts, next try, served targets) is written lazily
 * and in groups: every changed envelope is written to a temp file, one
 * syncfs covers them all, then each is renamed over its old version.  A
 * crash loses at most the latest state, which means an earlier retry or a
 * duplicate delivery, never a lost message.
 */
static void
queue_state_flush(evutil_socket_t fd, short ev, void *arg)
{
	char tmp[QID_LEN + 16], name[QID_LEN + 8];
	struct qmsg *m;
	struct buf b;
	size_t n = 0;

	buf_init(&b);
	TAILQ_FOREACH(m, &queue_all, entry) {
		if (!m->dirty || m->removed)
			continue;
		buf_reset(&b);
		envelope_encode(&m->env, &b);
		snprintf(tmp, sizeof(tmp), "%s.env.tmp", m->env.id);
		if (queue_write_file(q.qfd, tmp, &b, 0) == -1) {
			log_warnx("q=%s event=update result=error reason=\"%s\"",
			    m->env.id, fd_strerror(errno));
			continue;
		}
		m->dirty = 2;	/* written, not yet renamed */
		n++;
	}
	buf_free(&b);
	if (n == 0)
		return;
	if (syncfs(q.spoolfd) == -1)
		log_warnx("event=update result=error reason=\"syncfs: %s\"",
		    strerror(errno));
	TAILQ_FOREACH(m, &queue_all, entry) {
		if (m->dirty != 2)
			continue;
		snprintf(tmp, sizeof(tmp), "%s.env.tmp", m->env.id);
		snprintf(name, sizeof(name), "%s.env", m->env.id);
		if (renameat(q.qfd, tmp, q.qfd, name) == 0)
			m->dirty = 0;
		else
			m->dirty = 1;
	}
}

static void
queue_state_later(void)
{
	struct timeval tv = { 0, 200 * 1000 };

	if (!evtimer_pending(q.stateev, NULL))
		evtimer_add(q.stateev, &tv);
}

void
queue_write_env(struct qmsg *m)
{
	char tmp[QID_LEN + 16], name[QID_LEN + 8];
	struct buf b;

	buf_init(&b);
	envelope_encode(&m->env, &b);
	snprintf(tmp, sizeof(tmp), "%s.env.tmp", m->env.id);
	snprintf(name, sizeof(name), "%s.env", m->env.id);
	/* fsync before rename: the old envelope stays until the new is whole. */
	if (queue_write_file(q.qfd, tmp, &b, 1) == 0 &&
	    renameat(q.qfd, tmp, q.qfd, name) == 0)
		m->dirty = 0;
	else
		log_warnx("q=%s event=update result=error reason=\"%s\"",
		    m->env.id, fd_strerror(errno));
	buf_free(&b);
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

/* "550 5.1.1 ..." -> "5.1.1"; else the class from the reply code. */
static void
queue_esc(const char *text, int perm, char *out, size_t len)
{
	const char *p = text ? strchr(text, ' ') : NULL;

	if (p && (p[1] == '2' || p[1] == '4' || p[1] == '5') && p[2] == '.') {
		size_t n = strcspn(p + 1, " ");

		if (n < len && n >= 5) {
			memcpy(out, p + 1, n);
			out[n] = '\0';
			return;
		}
	}
	str_copy(out, perm ? "5.0.0" : "4.0.0", len);
}

static void
queue_add_failure(struct qmsg *m, size_t ri, const char *rcpt,
    const char *text, const char *relay, int delayed)
{
	struct failure *f = xcalloc(1, sizeof(*f));
	char esc[16];

	queue_esc(text, !delayed, esc, sizeof(esc));
	f->rcpt = xstrdup(rcpt);
	f->orcpt = strcmp(rcpt, m->env.rcpts[ri].addr) ? xstrdup(m->env.rcpts[ri].addr) :
	    NULL;
	f->status = xstrdup(esc);
	f->diag = text ? xstrdup(text) : NULL;
	f->relay = relay ? xstrdup(relay) : NULL;
	f->delayed = delayed;
	f->next = m->fails;
	m->fails = f;
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
		queue_add_failure(m, ri, r->addr, "message expired: retried for "
		    "the whole queue lifetime; last error follows", NULL, 0);
		if (rr->err[0])
			queue_add_failure(m, ri, r->addr, rr->err, NULL, 0);
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

static void	queue_notify(struct qmsg *);

/* Called when a message may have no deliveries in flight; 1: m is gone. */
int
queue_settle(struct qmsg *m)
{
	if (m->jobs > 0)
		return 0;
	if (m->removed) {
		queue_remove_files(m->env.id);
		queue_unlink_msg(m);
		return 1;
	}
	queue_notify(m);
	if (queue_all_final(m)) {
		queue_remove_files(m->env.id);
		log_info("q=%s event=removed reason=\"%s\"", m->env.id,
		    "delivered or bounced");
		queue_unlink_msg(m);
		return 1;
	}
	if (m->dirty)
		queue_state_later();
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
queue_msg_fd(const struct qmsg *m)
{
	char name[QID_LEN + 8];

	snprintf(name, sizeof(name), "%s.msg", m->env.id);
	return openat(q.qfd, name, O_RDONLY | O_CLOEXEC);
}

static int
queue_dispatch(struct qmsg *m, size_t ri, const struct target *t)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct buf b;
	int fd;

	if ((fd = queue_msg_fd(m)) == -1)
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

	if (pe == NULL || (fd = queue_msg_fd(m)) == -1) {
		for (i = 0; i < n; i++)
			queue_rr(m, pend[idx[i]].rcpt)->wait = 1;
		return;
	}
	d = dest_get(pend[idx[0]].domain);
	d->active++;
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
		if (d->active >= dest_limit(d) || q.nlocal + q.nremote >=
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
	if (d->active < dest_limit(d))
		return 0;
	return 1;
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

	queue_esc(text, status == 2, esc, sizeof(esc));
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
		queue_add_failure(m, j->rcpt, j->desc, text, relay, 0);
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
	if (d && d->active > 0)
		d->active--;
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
		if (d && d->active > 0)
			d->active--;
		if (q.nremote > 0)
			q.nremote--;
	}
	queue_unblock();
}

/* ---- notices to senders ---------------------------------------------------- */

/*
 * Queue a message we wrote ourselves (a DSN) the same way a received one
 * is queued: files in incoming/, then the group commit publishes them.
 */
static int
queue_inject(const char *to, const struct buf *content, uint64_t flags)
{
	struct incoming *in;
	char id[QID_LEN + 1];
	int fd;

	if ((fd = queue_create_file(id)) == -1)
		return -1;
	if (fd_write_all(fd, content->data, content->len) == -1) {
		log_warnx("event=dsn result=error reason=\"%s\"",
		    fd_strerror(errno));
		close(fd);
		unlinkat(q.incfd, id, 0);
		return -1;
	}
	close(fd);
	in = xcalloc(1, sizeof(*in));
	memcpy(in->id, id, sizeof(in->id));
	memcpy(in->env.id, id, sizeof(in->env.id));
	in->env.sender = xstrdup("");
	in->env.helo = xstrdup(conf_str(q.conf, K_HOSTNAME));
	in->env.client = xstrdup("local");
	in->env.proto = xstrdup("LOCAL");
	in->env.size = content->len;
	in->env.arrival = (uint64_t)time(NULL);
	in->env.flags = flags;
	envelope_add_rcpt(&in->env, to);
	in->next = q.incoming;
	q.incoming = in;
	return queue_commit_incoming(in);
}

static void
queue_read_original(const struct qmsg *m, struct buf *b, int *whole)
{
	char tmp[8192];
	ssize_t n = -1;
	off_t off = 0;
	int fd = queue_msg_fd(m);

	*whole = 0;
	if (fd == -1)
		return;
	while (b->len < QUEUE_DSN_READ &&
	    (n = pread(fd, tmp, sizeof(tmp), off)) > 0) {
		buf_append(b, tmp, (size_t)n);
		off += n;
	}
	*whole = n == 0;
	close(fd);
}

static const char *
queue_postmaster(char *out, size_t len)
{
	snprintf(out, len, "postmaster@%s", q.conf->ndomains ?
	    q.conf->domains[0] : conf_str(q.conf, K_HOSTNAME));
	return out;
}

/* One DSN for the given failures (or delays) of m. */
static int
queue_send_dsn(struct qmsg *m, struct failure *list, int delayed)
{
	struct dsn_rcpt *dr;
	struct dsn_msg dm;
	struct failure *f;
	struct buf orig, out;
	char to[300], relay[340];
	size_t n = 0, i;
	int whole, r;
	uint64_t flags = ENV_DSN;

	for (f = list; f; f = f->next)
		n++;
	if (n == 0)
		return 0;
	if (m->env.sender[0] == '\0') {
		if (m->env.flags & ENV_DOUBLE) {
			log_warnx("q=%s event=dsn result=dropped reason=\"a "
			    "failed notice to the postmaster is not bounced\"",
			    m->env.id);
			return 0;
		}
		if (delayed)
			return 0;
		/* No bounce to <>: a failing bounce goes to the postmaster. */
		queue_postmaster(to, sizeof(to));
		flags |= ENV_DOUBLE;
	} else
		str_copy(to, m->env.sender, sizeof(to));
	dr = xcalloc(n, sizeof(*dr));
	for (f = list, i = 0; f; f = f->next, i++) {
		dr[i].rcpt = f->rcpt;
		dr[i].orcpt = f->orcpt;
		dr[i].status = f->status;
		dr[i].action = delayed ? "delayed" : "failed";
		if (f->relay && strcmp(f->relay, "local") && strcmp(f->relay,
		    "none")) {
			snprintf(relay, sizeof(relay), "dns; %.*s", (int)strcspn(
			    f->relay, "["), f->relay);
			dr[i].remote_mta = xstrdup(relay);
		}
		dr[i].diagnostic = f->diag;
		dr[i].last_attempt = (long long)time(NULL);
	}
	memset(&dm, 0, sizeof(dm));
	dm.reporting_mta = conf_str(q.conf, K_HOSTNAME);
	dm.to = to;
	dm.queue_id = m->env.id;
	dm.arrival = (long long)m->env.arrival;
	dm.delayed = delayed;
	buf_init(&orig);
	buf_init(&out);
	queue_read_original(m, &orig, &whole);
	dm.original = orig.data;
	dm.original_len = orig.len;
	dm.return_full = whole;
	dm.max_full = QUEUE_DSN_FULL;
	r = dsn_build(&dm, dr, n, &out);
	if (r == 0)
		r = queue_inject(to, &out, flags);
	log_info("q=%s event=dsn result=%s to=<%s> type=%s nrcpt=%zu", m->env.id,
	    r == 0 ? "ok" : "error", log_a(to), delayed ? "delay" : "failure", n);
	for (i = 0; i < n; i++)
		free((char *)dr[i].remote_mta);
	free(dr);
	buf_free(&orig);
	buf_free(&out);
	return r;
}

/* Owed notices of m: failures at once, one delay warning when late. */
static void
queue_notify(struct qmsg *m)
{
	time_t now = time(NULL);
	long long warn = conf_num(q.conf, NULL, K_DELAY_WARNING) / 1000;
	size_t i;

	if (m->fails && queue_send_dsn(m, m->fails, 0) == 0)
		queue_failures_free(m);
	if (m->fails)
		return;		/* could not queue it: try again next time */
	if (warn <= 0 || (m->env.flags & (ENV_WARNED | ENV_DSN)) ||
	    m->env.sender[0] == '\0' || now - (time_t)m->env.arrival < warn)
		return;
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct env_rcpt *r = &m->env.rcpts[i];

		if (r->state == RS_PENDING && r->attempts > 0)
			queue_add_failure(m, i, r->addr, r->last_error, NULL, 1);
	}
	if (m->fails && queue_send_dsn(m, m->fails, 1) == 0) {
		m->env.flags |= ENV_WARNED;
		m->dirty = 1;
	}
	queue_failures_free(m);
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

/* A notice without payload (the control socket's "credentials"). */
void
queue_tell_parent(int type)
{
	if (q.parent)
		ipc_send(q.parent, type, NULL, 0, -1);
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
	case IMSG_P_ACCOUNTS:
		switch (resolve_accounts_msg(rd->p, rd->len)) {
		case 1:
			log_info("event=reload result=ok accounts=%zu",
			    resolve_accounts_count());
			break;
		case -1:
			log_warnx("event=reload result=error reason=\"malformed "
			    "accounts\"");
			break;
		}
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

	queue_flush_all();
	queue_state_flush(-1, 0, NULL);
	TAILQ_FOREACH(m, &queue_all, entry)
		if (m->dirty)
			queue_write_env(m);
	/* The renames and removals of the last outcomes, too. */
	if (fsync(q.qfd) == -1)
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
	q.spoolfd = open(conf_str(conf, K_SPOOL), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC);
	if (q.spoolfd == -1)
		fatalx("event=start result=error reason=\"spool %s: %s\"",
		    log_q(conf_str(conf, K_SPOOL)), strerror(errno));
	q.incfd = queue_open_dir(q.spoolfd, "incoming");
	q.qfd = queue_open_dir(q.spoolfd, "queue");
	TAILQ_INIT(&q.blocked);
	q.runev = evtimer_new(q.base, queue_run, NULL);
	event_priority_set(q.runev, 1);
	queue_recover();
	q.parent = ipc_new(q.base, parentfd, queue_parent_msg,
	    queue_parent_closed, NULL);
	if (smtpfd >= 0)
		queue_add_peer(smtpfd);
	/* Lower priority: runs once every ready request has been read. */
	q.flushev = event_new(q.base, -1, 0, queue_flush, NULL);
	event_priority_set(q.flushev, 1);
	queue_commit_start();
	q.stateev = evtimer_new(q.base, queue_state_flush, NULL);
	event_priority_set(q.stateev, 1);
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
