/*
 * commit: how a message enters the queue, in the queue process.  The smtp
 * process asks for a file to write a message into (Q_CREATE), sends the
 * recipients (Q_RCPTS) and then the envelope (Q_COMMIT), or gives the
 * message up (Q_ABORT); the queue's own notices come in the same way.
 * Messages are committed in groups: one sync of the files and one
 * directory fsync for every message that arrived meanwhile, each client
 * answered only after its own message is durable.  The syncs run in a
 * commit thread, so the loop goes on reading requests and fills the next
 * batch; the files themselves are spool.c's.
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/commit.h"
#include "queue/envelope.h"
#include "queue/limits.h"
#include "queue/qint.h"
#include "queue/spool.h"

/* A message on its way in, until the commit has answered for it. */
struct incoming {
	struct incoming	*next;
	char		 id[QID_LEN + 1];
	struct ipc	*peer;
	uint64_t	 sid;
	struct envelope	 env;
	uint64_t	 rejected;	/* recipients refused at RCPT */
	int		 batched;
	uint64_t	 envfile;	/* its envelope in free/ (0: none yet) */
	char		*resv;		/* the account its limits hold for it */
	uint64_t	 resvrcpts;
};

static struct {
	struct incoming		*incoming;
	struct incoming		**batch;	/* the batch filling */
	size_t			 nbatch;
	struct event		*flushev;
} commit;

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

static int	commit_add(struct incoming *);

/* ---- receiving from smtp ------------------------------------------------- */

static struct incoming *
commit_find(const char *id, struct ipc *peer, struct incoming ***pp)
{
	struct incoming **p, *in;

	for (p = &commit.incoming; (in = *p) != NULL; p = &in->next)
		if (strcmp(in->id, id) == 0 && in->peer == peer) {
			if (pp)
				*pp = p;
			return in;
		}
	return NULL;
}

static void
commit_reply(struct ipc *peer, int type, uint64_t sid, const char *id,
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

/* A refusal the client is to read: the reply text goes to it as is. */
static void
commit_policy_reply(struct ipc *peer, uint64_t sid, int code,
    const char *text)
{
	struct buf b;

	buf_init(&b);
	rec_put_u64(&b, T_SID, sid);
	rec_put_u64(&b, T_CODE, (uint64_t)code);
	rec_put_str(&b, T_TEXT, text);
	rec_put_u64(&b, T_POLICY, 1);
	ipc_send(peer, IMSG_Q_CREATED, b.data, b.len, -1);
	buf_free(&b);
}

void
commit_create(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	struct rec r;
	uint64_t sid = 0, nrcpts = 0, flags = 0;
	char id[QID_LEN + 1], *account = NULL, text[400];
	int fd, code;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_SID)
			rec_u64(&r, &sid);
		else if (r.tag == T_NRCPT)
			rec_u64(&r, &nrcpts);
		else if (r.tag == T_FLAGS)
			rec_u64(&r, &flags);
		else if (r.tag == T_ACCOUNT && account == NULL)
			account = rec_str(&r, 300);
	}
	/* An account's limits and the breaker answer before a file exists. */
	code = account ? limits_check(account, (size_t)nrcpts, text,
	    sizeof(text)) : 0;
	if (code != 0 || (flags & Q_F_PROBE)) {
		/* A probe (MAIL, RCPT) only asks: no file, nothing held. */
		if (code != 0)
			commit_policy_reply(peer, sid, code, text);
		else
			commit_reply(peer, IMSG_Q_CREATED, sid, NULL, 0, NULL,
			    -1);
		free(account);
		return;
	}
	if ((fd = spool_create(id)) == -1) {
		int full = errno == ENOSPC || errno == EDQUOT;

		log_warnx("event=create result=error reason=\"%s\"",
		    strerror(errno));
		commit_reply(peer, IMSG_Q_CREATED, sid, NULL, full ? 452 : 451,
		    strerror(errno), -1);
		free(account);
		return;
	}
	in = xcalloc(1, sizeof(*in));
	memcpy(in->id, id, sizeof(in->id));
	in->peer = peer;
	in->sid = sid;
	/* Held against the limits until committed or dropped, so that two
	   sessions at once cannot both pass the last free place. */
	if (account && limits_reserve(account, (size_t)nrcpts) == 0) {
		in->resv = account;
		in->resvrcpts = nrcpts;
		account = NULL;
	}
	free(account);
	memcpy(in->env.id, id, sizeof(in->env.id));
	in->next = commit.incoming;
	commit.incoming = in;
	commit_reply(peer, IMSG_Q_CREATED, sid, id, 0, NULL, fd);
}

static void
commit_drop(struct incoming *in)
{
	struct incoming **p, *x;

	for (p = &commit.incoming; (x = *p) != NULL; p = &x->next)
		if (x == in) {
			*p = in->next;
			break;
		}
	if (in->batched != 2)		/* published files are not here */
		spool_unlink_incoming(in->id, in->envfile);
	if (in->resv)		/* counted by now if it was committed */
		limits_unreserve(in->resv, (size_t)in->resvrcpts);
	free(in->resv);
	envelope_free(&in->env);
	free(in);
}

/* The queue id and session id of a request, read from a copy of it. */
static char *
commit_rec_ids(struct rec_reader rd, uint64_t *sid)
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

void
commit_rcpts(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in = NULL;
	struct rec r;
	char *s;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_ID) {
			if ((s = rec_str(&r, QID_LEN)) == NULL)
				return;
			in = commit_find(s, peer, NULL);
			free(s);
		} else if (r.tag == T_RCPT && in && !in->batched) {
			if ((s = rec_str(&r, 1024)) == NULL)
				return;
			envelope_add_rcpt(&in->env, s);
			free(s);
		} else if (in && !in->batched && in->env.nrcpts > 0 &&
		    (r.tag == T_DSN || r.tag == T_ORCPT)) {
			/* The DSN parameters of the recipient just added. */
			struct env_rcpt *rc = &in->env.rcpts[in->env.nrcpts - 1];
			uint64_t v;

			if (r.tag == T_DSN && rec_u64(&r, &v) == 0 && v <= 0xf)
				rc->notify = (unsigned)v;
			else if (r.tag == T_ORCPT && rc->orcpt == NULL)
				rc->orcpt = rec_str(&r, 1024);
		}
	}
}

/* The count of recipients refused at RCPT, read from a copy. */
static void
commit_rejected(struct rec_reader rd, uint64_t *n)
{
	struct rec r;

	while (rec_next(&rd, &r) == 1)
		if (r.tag == T_REJECTED)
			rec_u64(&r, n);
}

static int
commit_fill_env(struct envelope *e, struct rec_reader *rd)
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
				e->body8bit = v > 2 ? 1 : (int)v;
			break;
		case T_UTF8:
			if (rec_u64(&r, &v) == 0)
				e->smtputf8 = v != 0;
			break;
		case T_SIZE:
			rec_u64(&r, &e->size);
			break;
		case T_ACCOUNT:
			dst = &e->account;
			break;
		case T_ENVID:
			dst = &e->envid;
			break;
		case T_RET:
			if (rec_u64(&r, &v) == 0 && v <= 2)
				e->ret = (int)v;
			break;
		case T_URGENT:
			e->flags |= ENV_URGENT;
			break;
		case T_QUARANTINE:
			e->flags |= ENV_QUARANTINE;
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

void
commit_request(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	uint64_t sid = 0;
	char *id = commit_rec_ids(*rd, &sid);

	if (id == NULL || (in = commit_find(id, peer, NULL)) == NULL ||
	    in->batched) {
		commit_reply(peer, IMSG_Q_COMMITTED, sid, id, 451,
		    "unknown message", -1);
		free(id);
		return;
	}
	free(id);
	in->env.arrival = (uint64_t)time(NULL);
	commit_rejected(*rd, &in->rejected);
	if (commit_fill_env(&in->env, rd) == -1) {
		commit_reply(peer, IMSG_Q_COMMITTED, in->sid, in->id, 451,
		    "bad envelope", -1);
		commit_drop(in);
		return;
	}
	if (commit_add(in) == -1) {
		int full = errno == ENOSPC || errno == EDQUOT;

		log_warnx("q=%s event=commit result=error reason=\"%s\"",
		    in->id, fd_strerror(errno));
		commit_reply(peer, IMSG_Q_COMMITTED, in->sid, in->id,
		    full ? 452 : 451, fd_strerror(errno), -1);
		commit_drop(in);
	}
}

/*
 * Write the envelope (into free/, published by the commit) and join the
 * batch the next flush makes durable.  0, or -1 with errno (files left
 * for the caller to drop).
 */
static int
commit_add(struct incoming *in)
{
	struct buf b;
	int r;

	buf_init(&b);
	envelope_encode(&in->env, &b);
	r = spool_write_incoming(&b, &in->envfile);
	buf_free(&b);
	if (r == -1)
		return -1;
	in->batched = 1;
	commit.batch = xreallocarray(commit.batch, commit.nbatch + 1,
	    sizeof(*commit.batch));
	commit.batch[commit.nbatch++] = in;
	event_active(commit.flushev, EV_TIMEOUT, 1);
	return 0;
}

void
commit_abort(struct ipc *peer, struct rec_reader *rd)
{
	struct incoming *in;
	char id[QID_LEN + 1];
	size_t len = rd->len - rd->off;

	/* The payload of an abort is the bare id. */
	if (len != QID_LEN)
		return;
	memcpy(id, rd->p + rd->off, QID_LEN);
	id[QID_LEN] = '\0';
	if ((in = commit_find(id, peer, NULL)) == NULL || in->batched)
		return;
	commit_drop(in);
}

/* An smtp channel closed: messages it was sending are now orphans. */
void
commit_forget(struct ipc *c)
{
	struct incoming *in, *next;

	for (in = commit.incoming; in; in = next) {
		next = in->next;
		if (in->peer == c && !in->batched)
			commit_drop(in);
		else if (in->peer == c)
			in->peer = NULL;	/* committed anyway; no reply */
	}
}

/*
 * Queue a message we wrote ourselves (a DSN) the same way a received one
 * is queued: its file and envelope, then the group commit publishes them.
 */
int
commit_inject(const char *to, const struct buf *content, uint64_t flags)
{
	struct incoming *in;
	char id[QID_LEN + 1];
	int fd;

	if ((fd = spool_create(id)) == -1)
		return -1;
	if (fd_write_all(fd, content->data, content->len) == -1 ||
	    ftruncate(fd, (off_t)content->len) == -1) {	/* a reused file */
		log_warnx("event=dsn result=error reason=\"%s\"",
		    fd_strerror(errno));
		close(fd);
		spool_unlink_incoming(id, 0);
		return -1;
	}
	close(fd);
	in = xcalloc(1, sizeof(*in));
	memcpy(in->id, id, sizeof(in->id));
	memcpy(in->env.id, id, sizeof(in->env.id));
	in->env.sender = xstrdup("");
	in->env.helo = xstrdup(conf_str(queue_conf(), K_HOSTNAME));
	in->env.client = xstrdup("local");
	in->env.proto = xstrdup("LOCAL");
	in->env.size = content->len;
	in->env.arrival = (uint64_t)time(NULL);
	in->env.flags = flags;
	envelope_add_rcpt(&in->env, to);
	in->next = commit.incoming;
	commit.incoming = in;
	return commit_add(in);
}

/* ---- group commit -------------------------------------------------------- */

static void
commit_adopt(struct incoming *in)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	m->env = in->env;
	memset(&in->env, 0, sizeof(in->env));
	queue_append_msg(m);
	limits_count(m, in->rejected);	/* may hold it: a tripped breaker */
	log_info("q=%s event=queued from=<%s> nrcpt=%zu size=%llu client=%s",
	    m->env.id, log_a(m->env.sender), m->env.nrcpts,
	    (unsigned long long)m->env.size, m->env.client);
}

static double
commit_us_since(const struct timespec *t0)
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
commit_sync(struct incoming **batch, size_t n, int *res)
{
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
		for (i = 0; i < n; i++)
			if ((res[i] = spool_sync_incoming(batch[i]->id, 0)) ==
			    0)
				res[i] = spool_sync_incoming(batch[i]->id,
				    batch[i]->envfile);
		qc.fsync_us = qc.fsync_us == 0 ? commit_us_since(&t0) /
		    (2.0 * (double)n) : 0.8 * qc.fsync_us + 0.2 *
		    commit_us_since(&t0) / (2.0 * (double)n);
	} else {
		if (spool_syncfs() == -1)
			err = errno;
		for (i = 0; i < n; i++)
			res[i] = err;
		qc.syncfs_us = qc.syncfs_us == 0 ? commit_us_since(&t0) :
		    0.8 * qc.syncfs_us + 0.2 * commit_us_since(&t0);
	}
	for (i = 0; i < n; i++) {
		if (res[i] == 0 &&
		    spool_publish(batch[i]->id, batch[i]->envfile) == -1)
			res[i] = errno;
		if (res[i] == 0)
			published++;
	}
	/* One directory sync covers every rename; failed, it sinks them all. */
	if (published > 0 && spool_sync_queue() == -1) {
		err = errno;
		for (i = 0; i < n; i++)
			if (res[i] == 0)
				res[i] = err;
	}
}

/* Back in the loop: answer in order, adopt what is durable. */
static void
commit_done(struct incoming **batch, size_t n, const int *res)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct incoming *in = batch[i];
		int e = res[i];
		int code = e == 0 ? 0 : (e == ENOSPC || e == EDQUOT) ? 452 : 451;

		if (in->peer)
			commit_reply(in->peer, IMSG_Q_COMMITTED, in->sid,
			    in->id, code, e ? strerror(e) : NULL, -1);
		if (code == 0) {
			in->batched = 2;	/* its files are in queue/ now */
			commit_adopt(in);
		} else {
			/* Refused: no copy may stay behind, published or not. */
			spool_remove(in->id);
			log_warnx("q=%s event=commit result=error reason=\"%s\"",
			    in->id, strerror(e));
		}
		commit_drop(in);
	}
}

static void *
commit_thread(void *arg)
{
	pthread_mutex_lock(&qc.mu);
	for (;;) {
		while (!qc.pending)
			pthread_cond_wait(&qc.cv, &qc.mu);
		pthread_mutex_unlock(&qc.mu);
		commit_sync(qc.work, qc.nwork, qc.res);
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
commit_flush(evutil_socket_t fd, short ev, void *arg)
{
	struct incoming **batch = commit.batch;
	size_t n = commit.nbatch;
	int *res;

	if (n == 0 || qc.busy)
		return;
	commit.batch = NULL;
	commit.nbatch = 0;
	res = xcalloc(n, sizeof(*res));
	if (!qc.running) {
		commit_sync(batch, n, res);
		commit_done(batch, n, res);
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
commit_flush_done(evutil_socket_t fd, short ev, void *arg)
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
	commit_done(qc.work, qc.nwork, qc.res);
	free(qc.work);
	free(qc.res);
	qc.work = NULL;
	qc.res = NULL;
	qc.nwork = 0;
	commit_flush(-1, 0, NULL);
}

/* Shutdown: the batch out and the one filling both end durable. */
void
commit_flush_all(void)
{
	if (qc.busy) {
		pthread_mutex_lock(&qc.mu);
		while (qc.pending)
			pthread_cond_wait(&qc.cv, &qc.mu);
		pthread_mutex_unlock(&qc.mu);
	}
	qc.running = 0;		/* what is left is committed here */
	if (qc.busy)
		commit_flush_done(-1, 0, NULL);	/* and starts the rest here */
	else
		commit_flush(-1, 0, NULL);
}

void
commit_start(struct event_base *base)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int r;

	/* Lower priority: runs once every ready request has been read. */
	commit.flushev = event_new(base, -1, 0, commit_flush, NULL);
	event_priority_set(commit.flushev, 1);
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
	r = pthread_create(&qc.thread, &attr, commit_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		log_warnx("event=start result=warn reason=\"commit thread: "
		    "%s; committing in the loop\"", strerror(r));
		close(qc.wakefd[0]);
		close(qc.wakefd[1]);
		return;
	}
	qc.doneev = event_new(base, qc.wakefd[0], EV_READ | EV_PERSIST,
	    commit_flush_done, NULL);
	event_add(qc.doneev, NULL);
	qc.running = 1;
}

