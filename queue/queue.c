/*
 * queue: the queue process, sole writer of the spool.  It creates the
 * files the smtp process writes messages into, commits them in groups
 * (one syncfs and one directory fsync for every message that arrived
 * meanwhile, each client answered only after its own message is durable),
 * recovers the spool at start, schedules deliveries, and answers ternctl on
 * the control socket.  Runs unprivileged; local deliveries are run by the
 * parent as the recipient user, with the message fd passed along.
 *
 * Spool layout (see docs/ARCHITECTURE.md):
 *   incoming/ID      message being received (smtp writes it)
 *   incoming/ID.env  envelope written at commit, before the sync
 *   queue/ID.msg     committed message
 *   queue/ID.env     committed envelope: its presence is the commit point
 *   corrupt/         envelopes that failed to decode, kept for the admin
 */
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "aliases.h"
#include "conf.h"
#include "envelope.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "resolve.h"
#include "util.h"

/* Where ternd started: relative config paths resolve against it. */
const char *proc_basedir = "/";
unsigned char proc_srs_key[SRS_KEY_MAX];
size_t proc_srs_keylen;

#define QUEUE_MAX_JOBS		16	/* local deliveries in flight */
#define QUEUE_CTL_MAX		1024	/* longest control request */
#define QUEUE_HELD_RETRY	3600	/* seconds between held re-checks */

struct incoming {
	struct incoming	*next;
	char		 id[QID_LEN + 1];
	struct ipc	*peer;
	uint64_t	 sid;
	struct envelope	 env;
	int		 batched;
};

struct qmsg {
	struct qmsg	*next;
	struct envelope	 env;
	int		 jobs;		/* deliveries in flight */
	int		 removed;	/* removed by the admin while busy */
	int		 dirty;		/* envelope changed since written */
};

struct job {
	struct job	*next;
	uint64_t	 id;
	struct qmsg	*msg;
	size_t		 rcpt;
	char		*target;
	char		*desc;
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
	struct qmsg		*msgs;
	struct job		*jobs;
	size_t			 njobs;
	uint64_t		 nextjob;
	struct event		*runev;
	struct event		*ctlev;
	int			 ctlfd;
	int			 stopping;
} q;

static void	queue_run(evutil_socket_t, short, void *);
static void	queue_write_env(struct qmsg *);

static void
queue_kick(long secs)
{
	struct timeval tv = { secs, 0 };

	evtimer_add(q.runev, &tv);
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
	size_t off = 0;
	ssize_t n;
	int fd, e;

	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	while (off < b->len) {
		n = write(fd, b->data + off, b->len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		off += (size_t)n;
	}
	if (sync && fsync(fd) == -1)
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	e = errno ? errno : ENOSPC;
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
	queue_unlink_incoming(in->id);
	envelope_free(&in->env);
	free(in);
}

static char *
queue_rec_id(struct rec_reader *rd, struct rec *first)
{
	struct rec r;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_ID)
			return rec_str(&r, QID_LEN);
	(void)first;
	return NULL;
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
	struct rec_reader copy = *rd;
	struct incoming *in;
	struct rec r;
	char *id = queue_rec_id(&copy, &r), envname[QID_LEN + 8];
	struct buf b;
	uint64_t sid = 0;

	copy = *rd;
	while (rec_next(&copy, &r) == 1)
		if (r.tag == T_SID)
			rec_u64(&r, &sid);
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
	buf_init(&b);
	envelope_encode(&in->env, &b);
	snprintf(envname, sizeof(envname), "%s.env", in->id);
	if (queue_write_file(q.incfd, envname, &b, 0) == -1) {
		int full = errno == ENOSPC || errno == EDQUOT;

		log_warnx("q=%s event=commit result=error reason=\"%s\"",
		    in->id, strerror(errno));
		queue_reply(peer, IMSG_Q_COMMITTED, in->sid, in->id,
		    full ? 452 : 451, strerror(errno), -1);
		queue_drop_incoming(in);
		buf_free(&b);
		return;
	}
	buf_free(&b);
	in->batched = 1;
	q.batch = xreallocarray(q.batch, q.nbatch + 1, sizeof(*q.batch));
	q.batch[q.nbatch++] = in;
	event_active(q.flushev, EV_TIMEOUT, 1);
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
	ipc_free(c);
}

static void
queue_add_peer(int fd)
{
	struct peer *p = xcalloc(1, sizeof(*p));

	p->ipc = ipc_new(q.base, fd, queue_peer_msg, queue_peer_closed, NULL);
	p->next = q.peers;
	q.peers = p;
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

static void
queue_adopt(struct incoming *in)
{
	struct qmsg *m = xcalloc(1, sizeof(*m));

	m->env = in->env;
	memset(&in->env, 0, sizeof(in->env));
	m->next = q.msgs;
	q.msgs = m;
	log_info("q=%s event=queued from=<%s> nrcpt=%zu size=%llu client=%s",
	    m->env.id, m->env.sender, m->env.nrcpts,
	    (unsigned long long)m->env.size, m->env.client);
}

/*
 * One sync for the whole batch: syncfs() writes back every message and
 * envelope file the batch holds, the renames publish them, and one fsync
 * of the queue directory makes the renames durable.  Only then is any
 * client told 250.
 */
static void
queue_flush(evutil_socket_t fd, short ev, void *arg)
{
	size_t i, n = q.nbatch;
	struct incoming **batch = q.batch;
	int err = 0;

	if (n == 0)
		return;
	q.batch = NULL;
	q.nbatch = 0;
	if (syncfs(q.spoolfd) == -1)
		err = errno;
	for (i = 0; i < n; i++) {
		struct incoming *in = batch[i];
		int e = err;

		if (e == 0 && queue_publish(in) == -1)
			e = errno;
		if (e == 0 && i == n - 1 && fsync(q.qfd) == -1)
			e = errno;
		in->batched = e ? -e : 2;
	}
	/* The directory fsync covered all renames; answer in order. */
	for (i = 0; i < n; i++) {
		struct incoming *in = batch[i];
		int e = in->batched < 0 ? -in->batched : 0;
		int code = e == 0 ? 0 : (e == ENOSPC || e == EDQUOT) ? 452 : 451;

		if (e && n > 1 && fsync(q.qfd) == -1)
			code = 451;
		if (in->peer)
			queue_reply(in->peer, IMSG_Q_COMMITTED, in->sid, in->id,
			    code, e ? strerror(e) : NULL, -1);
		if (code == 0)
			queue_adopt(in);
		else
			log_warnx("q=%s event=commit result=error reason=\"%s\"",
			    in->id, strerror(e));
		queue_drop_incoming(in);
	}
	free(batch);
	queue_kick(0);
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

	log_warnx("q=%s event=recover result=corrupt reason=\"%s\"", id, why);
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
	m->next = q.msgs;
	q.msgs = m;
}

static void
queue_recover(void)
{
	struct dirent *de;
	DIR *d;
	int fd, removed = 0, loaded = 0;
	struct qmsg *m;
	char name[QID_LEN + 8];

	/* Nothing in incoming/ was ever acknowledged. */
	if ((d = fdopendir(dup(q.incfd))) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.' &&
			    unlinkat(q.incfd, de->d_name, 0) == 0)
				removed++;
		closedir(d);
	}
	if ((fd = dup(q.qfd)) == -1 || (d = fdopendir(fd)) == NULL)
		fatalx("event=start result=error reason=\"spool unreadable\"");
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);

		if (len == QID_LEN + 4 &&
		    strcmp(de->d_name + QID_LEN, ".env") == 0) {
			char id[QID_LEN + 1];

			memcpy(id, de->d_name, QID_LEN);
			id[QID_LEN] = '\0';
			if (queue_valid_id(id)) {
				queue_load(id);
				loaded++;
			}
		} else if (len > 4 && strcmp(de->d_name + len - 4, ".tmp") == 0)
			unlinkat(q.qfd, de->d_name, 0);
	}
	closedir(d);
	/* A message without its envelope was never committed, or is done. */
	if ((fd = dup(q.qfd)) != -1 && (d = fdopendir(fd)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			size_t len = strlen(de->d_name);
			struct stat st;

			if (len != QID_LEN + 4 ||
			    strcmp(de->d_name + QID_LEN, ".msg") != 0)
				continue;
			memcpy(name, de->d_name, QID_LEN);
			memcpy(name + QID_LEN, ".env", 5);
			if (fstatat(q.qfd, name, &st, 0) == -1 &&
			    unlinkat(q.qfd, de->d_name, 0) == 0)
				removed++;
		}
		closedir(d);
	}
	for (m = q.msgs; m; m = m->next) {
		size_t i;

		for (i = 0; i < m->env.nrcpts; i++)
			if (m->env.rcpts[i].state == RS_HELD)
				m->env.rcpts[i].state = RS_PENDING;
	}
	log_info("event=recover result=ok messages=%d removed_partial=%d",
	    loaded, removed);
}

/* ---- scheduling and delivery -------------------------------------------------- */

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
queue_unlink_msg(struct qmsg *m)
{
	struct qmsg **p, *x;

	for (p = &q.msgs; (x = *p) != NULL; p = &x->next)
		if (x == m) {
			*p = m->next;
			break;
		}
	envelope_free(&m->env);
	free(m);
}

static int
queue_all_final(const struct qmsg *m)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->env.rcpts[i].state != RS_DONE)
			return 0;
	return 1;
}

static void
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
		    m->env.id, strerror(errno));
	buf_free(&b);
}

/* Called when a message has no deliveries in flight. */
static void
queue_settle(struct qmsg *m)
{
	if (m->jobs > 0)
		return;
	if (m->removed) {
		queue_remove_files(m->env.id);
		queue_unlink_msg(m);
		return;
	}
	if (queue_all_final(m)) {
		queue_remove_files(m->env.id);
		log_info("q=%s event=removed reason=\"delivered\"", m->env.id);
		queue_unlink_msg(m);
		return;
	}
	if (m->dirty)
		queue_write_env(m);
}

static void
queue_rcpt_outcome(struct qmsg *m, struct env_rcpt *r, int temp,
    int held, const char *err)
{
	time_t now = time(NULL);
	uint64_t life = (uint64_t)conf_num(q.conf, NULL, K_QUEUE_LIFETIME) /
	    1000;

	m->dirty = 1;
	if (!temp && !held && err == NULL) {
		r->state = RS_DONE;
		envelope_set_error(r, NULL);
		return;
	}
	envelope_set_error(r, err);
	if (temp && (uint64_t)now > m->env.arrival + life) {
		r->state = RS_FAILED;
		envelope_set_error(r, "queue lifetime exceeded");
		return;
	}
	if (temp) {
		r->state = RS_PENDING;
		r->next_try = (uint64_t)now + queue_backoff(r->attempts);
	} else if (held) {
		r->state = RS_HELD;
		r->next_try = (uint64_t)now + QUEUE_HELD_RETRY;
	} else
		r->state = RS_FAILED;
}

static struct job *
queue_job_find(uint64_t id, struct job ***pp)
{
	struct job **p, *j;

	for (p = &q.jobs; (j = *p) != NULL; p = &j->next)
		if (j->id == id) {
			*pp = p;
			return j;
		}
	return NULL;
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

static int
queue_dispatch(struct qmsg *m, size_t ri, const struct target *t)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	char name[QID_LEN + 8];
	struct job *j;
	struct buf b;
	int fd;

	snprintf(name, sizeof(name), "%s.msg", m->env.id);
	if ((fd = openat(q.qfd, name, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	j = xcalloc(1, sizeof(*j));
	j->id = ++q.nextjob;
	j->msg = m;
	j->rcpt = ri;
	j->target = xstrdup(t->key);
	j->desc = xstrdup(t->rcpt);
	j->start = time(NULL);
	j->next = q.jobs;
	q.jobs = j;
	q.njobs++;
	m->jobs++;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, j->id);
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

/*
 * Try one recipient: expand it with the current aliases and config, hand
 * every target not yet served to the parent, and note what cannot be
 * delivered by this version (it stays queued, held, with the reason).
 */
static void
queue_try_rcpt(struct qmsg *m, size_t ri)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct target *t;
	size_t n, i;
	char err[512], why[600] = "";
	int dispatched = 0, held = 0;

	r->attempts++;
	r->last_try = (uint64_t)time(NULL);
	m->dirty = 1;
	if (resolve_expand(q.conf, q.aliases, r->addr, &t, &n, err,
	    sizeof(err)) == -1) {
		log_info("q=%s event=deliver to=<%s> status=deferred "
		    "reason=\"%s\"", m->env.id, r->addr, err);
		queue_rcpt_outcome(m, r, 1, 0, err);
		return;
	}
	if (n == 0) {
		log_info("q=%s event=deliver to=<%s> status=deferred "
		    "reason=\"%s\"", m->env.id, r->addr, err);
		queue_rcpt_outcome(m, r, 1, 0, err[0] ? err : "no targets");
		return;
	}
	for (i = 0; i < n; i++) {
		if (envelope_rcpt_done(r, t[i].key))
			continue;
		if (queue_target_covered(m, ri, t[i].key)) {
			envelope_mark_done(r, t[i].key);
			continue;
		}
		if (t[i].kind != TG_MAILDIR) {
			held++;
			snprintf(why, sizeof(why), "%s delivery to \"%s\" is not "
			    "available in this version; kept in the queue",
			    resolve_kind_name(t[i].kind), t[i].path);
			continue;
		}
		if (queue_dispatch(m, ri, &t[i]) == 0)
			dispatched++;
	}
	resolve_free(t, n);
	if (dispatched == 0 && held) {
		log_info("q=%s event=deliver to=<%s> status=held reason=\"%s\"",
		    m->env.id, r->addr, why);
		queue_rcpt_outcome(m, r, 0, 1, why);
	} else if (dispatched == 0) {
		queue_rcpt_outcome(m, r, 0, 0, NULL);
	} else if (held) {
		envelope_set_error(r, why);
		r->state = RS_HELD;	/* refined when the jobs return */
	}
}

static void
queue_run(evutil_socket_t fd, short ev, void *arg)
{
	struct qmsg *m, *next;
	time_t now = time(NULL);
	uint64_t soonest = 0;
	size_t i;

	if (q.stopping)
		return;
	for (m = q.msgs; m; m = next) {
		next = m->next;
		for (i = 0; i < m->env.nrcpts; i++) {
			struct env_rcpt *r = &m->env.rcpts[i];

			if (r->state != RS_PENDING && r->state != RS_HELD)
				continue;
			if (r->next_try > (uint64_t)now) {
				if (soonest == 0 || r->next_try < soonest)
					soonest = r->next_try;
				continue;
			}
			if (q.njobs >= QUEUE_MAX_JOBS) {
				soonest = (uint64_t)now + 1;
				break;
			}
			if (queue_rcpt_jobs(m, i) == 0)
				queue_try_rcpt(m, i);
		}
		queue_settle(m);
	}
	if (soonest)
		queue_kick((long)(soonest > (uint64_t)now ?
		    soonest - (uint64_t)now : 1));
}

static void
queue_delivered(struct rec_reader *rd)
{
	struct rec r;
	uint64_t jid = 0, status = 1;
	char *text = NULL;
	struct job *j, **pp;
	struct env_rcpt *rc;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_JOB)
			rec_u64(&r, &jid);
		else if (r.tag == T_STATUS)
			rec_u64(&r, &status);
		else if (r.tag == T_TEXT && text == NULL)
			text = rec_str(&r, 1024);
	}
	if ((j = queue_job_find(jid, &pp)) == NULL) {
		free(text);
		return;
	}
	*pp = j->next;
	q.njobs--;
	j->msg->jobs--;
	rc = &j->msg->env.rcpts[j->rcpt];
	log_info("q=%s event=deliver to=<%s> orig_to=<%s> relay=local "
	    "delay=%lds status=%s reason=\"%s\"", j->msg->env.id, j->desc,
	    rc->addr, (long)(time(NULL) - (time_t)j->msg->env.arrival),
	    status == 0 ? "sent" : status == 1 ? "deferred" : "bounced",
	    text ? text : "");
	if (status == 0)
		envelope_mark_done(rc, j->target);
	j->msg->dirty = 1;
	if (queue_rcpt_jobs(j->msg, j->rcpt) == 0 || status != 0) {
		if (status == 0 && rc->state == RS_HELD)
			queue_rcpt_outcome(j->msg, rc, 0, 1, rc->last_error);
		else if (status == 0 && queue_rcpt_jobs(j->msg, j->rcpt) == 0)
			queue_rcpt_outcome(j->msg, rc, 0, 0, NULL);
		else if (status != 0)
			/* Local failures are kept and retried: no local DSN yet. */
			queue_rcpt_outcome(j->msg, rc, 1, 0, text ? text :
			    "delivery failed");
	}
	queue_settle(j->msg);
	free(j->target);
	free(j->desc);
	free(j);
	free(text);
	queue_kick(0);
}

/* ---- control socket ------------------------------------------------------------ */

static struct qmsg *
queue_find_msg(const char *id)
{
	struct qmsg *m;

	for (m = q.msgs; m; m = m->next)
		if (str_casecmp(m->env.id, id) == 0)
			return m;
	return NULL;
}

static void
ctl_rcpt_status(struct buf *o, const struct env_rcpt *r)
{
	buf_printf(o, "%s", envelope_state_name(r->state));
	if (r->last_error)
		buf_printf(o, ": %s", r->last_error);
}

static void
ctl_list(struct buf *o)
{
	struct qmsg *m;
	size_t i, n = 0;
	uint64_t bytes = 0;
	char date[64];

	for (m = q.msgs; m; m = m->next) {
		time_t t = (time_t)m->env.arrival;
		struct tm tm;

		if (m->removed)
			continue;
		if (n++ == 0)
			buf_puts(o, "-Queue ID-------- --Size-- ----Arrival Time---- "
			    "-Sender/Recipient-------\n");
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%a %b %e %H:%M:%S", &tm);
		buf_printf(o, "%-17s %8llu %-20s  %s\n", m->env.id,
		    (unsigned long long)m->env.size, date,
		    m->env.sender[0] ? m->env.sender : "MAILER-DAEMON");
		bytes += m->env.size;
		for (i = 0; i < m->env.nrcpts; i++) {
			const struct env_rcpt *r = &m->env.rcpts[i];

			if (r->state == RS_DONE)
				continue;
			buf_printf(o, "%49s(", "");
			ctl_rcpt_status(o, r);
			buf_printf(o, ")\n%49s%s\n", "", r->addr);
		}
		buf_putc(o, '\n');
	}
	if (n == 0)
		buf_puts(o, "Mail queue is empty\n");
	else
		buf_printf(o, "-- %llu Kbytes in %zu Request%s.\n",
		    (unsigned long long)((bytes + 1023) / 1024), n,
		    n == 1 ? "" : "s");
}

static void
ctl_show(struct buf *o, const struct qmsg *m)
{
	char date[64];
	time_t t = (time_t)m->env.arrival;
	struct tm tm;
	size_t i, j;

	localtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %z", &tm);
	buf_printf(o, "id: %s\narrival: %s\nsize: %llu\nsender: <%s>\n"
	    "client: %s\nhelo: %s\nprotocol: %s\nbody: %s%s\n", m->env.id,
	    date, (unsigned long long)m->env.size, m->env.sender,
	    m->env.client ? m->env.client : "", m->env.helo ? m->env.helo : "",
	    m->env.proto ? m->env.proto : "", m->env.body8bit ? "8BITMIME" :
	    "7BIT", m->env.smtputf8 ? " SMTPUTF8" : "");
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct env_rcpt *r = &m->env.rcpts[i];

		buf_printf(o, "recipient: <%s>\n  status: %s\n  attempts: %u\n",
		    r->addr, envelope_state_name(r->state), r->attempts);
		if (r->last_try) {
			t = (time_t)r->last_try;
			localtime_r(&t, &tm);
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
			buf_printf(o, "  last try: %s\n", date);
		}
		if (r->next_try && r->state != RS_DONE &&
		    r->state != RS_FAILED) {
			t = (time_t)r->next_try;
			localtime_r(&t, &tm);
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
			buf_printf(o, "  next try: %s\n", date);
		}
		if (r->last_error)
			buf_printf(o, "  last error: %s\n", r->last_error);
		for (j = 0; j < r->ndone; j++)
			buf_printf(o, "  delivered: %s\n", r->done[j]);
	}
}

static void
ctl_flush(void)
{
	struct qmsg *m;
	size_t i;

	for (m = q.msgs; m; m = m->next)
		for (i = 0; i < m->env.nrcpts; i++) {
			struct env_rcpt *r = &m->env.rcpts[i];

			if (r->state == RS_PENDING || r->state == RS_HELD) {
				r->next_try = 0;
				r->state = RS_PENDING;
			}
		}
	queue_kick(0);
}

static void
ctl_execute(const char *req, struct buf *o)
{
	const char *arg = strchr(req, ' ');
	struct qmsg *m;

	if (strcmp(req, "queue") == 0) {
		buf_puts(o, "ok\n");
		ctl_list(o);
	} else if (strcmp(req, "flush") == 0) {
		ctl_flush();
		buf_puts(o, "ok\nqueue flush started\n");
	} else if (arg && strncmp(req, "show ", 5) == 0) {
		if ((m = queue_find_msg(arg + 1)) == NULL || m->removed)
			buf_puts(o, "error no such message\n");
		else {
			buf_puts(o, "ok\n");
			ctl_show(o, m);
		}
	} else if (arg && strncmp(req, "remove ", 7) == 0) {
		if ((m = queue_find_msg(arg + 1)) == NULL || m->removed)
			buf_puts(o, "error no such message\n");
		else {
			log_info("q=%s event=removed reason=\"admin\"",
			    m->env.id);
			buf_printf(o, "ok\n%s removed\n", m->env.id);
			m->removed = 1;
			queue_settle(m);
		}
	} else
		buf_puts(o, "error unknown request\n");
}

static void
ctl_done(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;
	struct buf o;

	line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > QUEUE_CTL_MAX)
			bufferevent_free(bev);
		return;
	}
	buf_init(&o);
	if (len > QUEUE_CTL_MAX || memchr(line, '\0', len))
		buf_puts(&o, "error request too long\n");
	else
		ctl_execute(line, &o);
	free(line);
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, ctl_done, ctl_event, NULL);
	bufferevent_write(bev, o.data, o.len);
	buf_free(&o);
}

static void
ctl_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct bufferevent *bev;
	struct timeval tv = { 10, 0 };
	int fd;

	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1)
		return;
	bev = bufferevent_socket_new(q.base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, ctl_read, NULL, ctl_event, NULL);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
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
		log_warnx("event=reload result=error reason=\"%s\"", err);
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
	ctl_flush();
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

static void
queue_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct qmsg *m;

	/* A batch is never half done here: flush runs to completion. */
	q.stopping = 1;
	queue_flush(-1, 0, NULL);
	for (m = q.msgs; m; m = m->next)
		if (m->dirty)
			queue_write_env(m);
	log_info("event=stop result=ok");
	exit(0);
}

void
queue_main(struct conf *conf, const char *text, size_t len, int parentfd,
    int controlfd, int smtpfd)
{
	struct event *ev;

	(void)text;
	(void)len;
	q.conf = conf;
	q.base = event_base_new();
	event_base_priority_init(q.base, 2);
	q.aliases = aliases_open(conf_str(conf, K_ALIASES));
	q.spoolfd = open(conf_str(conf, K_SPOOL), O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC);
	if (q.spoolfd == -1)
		fatalx("event=start result=error reason=\"spool %s: %s\"",
		    conf_str(conf, K_SPOOL), strerror(errno));
	q.incfd = queue_open_dir(q.spoolfd, "incoming");
	q.qfd = queue_open_dir(q.spoolfd, "queue");
	queue_recover();
	q.parent = ipc_new(q.base, parentfd, queue_parent_msg,
	    queue_parent_closed, NULL);
	queue_add_peer(smtpfd);
	/* Lower priority: runs once every ready request has been read. */
	q.flushev = event_new(q.base, -1, 0, queue_flush, NULL);
	event_priority_set(q.flushev, 1);
	q.runev = evtimer_new(q.base, queue_run, NULL);
	event_priority_set(q.runev, 1);
	q.ctlfd = controlfd;
	if (controlfd >= 0) {
		evutil_make_socket_nonblocking(controlfd);
		q.ctlev = event_new(q.base, controlfd, EV_READ | EV_PERSIST,
		    ctl_accept, NULL);
		event_add(q.ctlev, NULL);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(q.base, SIGTERM, queue_sigterm, NULL);
	evsignal_add(ev, NULL);
	queue_kick(0);
	log_info("event=start result=ok");
	event_base_dispatch(q.base);
	exit(0);
}
