/*
 * lworker: long-lived local delivery workers.  The parent (root) forks a
 * worker per account the first time a Maildir delivery for it comes, the
 * worker drops to the account at once and then takes deliveries over a
 * SOCK_SEQPACKET channel: a request names the Maildir (relative to a
 * directory descriptor the parent opened while walking to it, or as a
 * full path) and carries the message descriptor.  What a fork, an exec of
 * nothing, a setuid and an exit per message cost is paid once per burst.
 *
 * The parent decides everything as before, per request (its own
 * expansion, the account, never root, the walk into the Maildir); the
 * worker only writes.  Requests that arrive while it writes are taken as
 * one batch: every message goes to tmp/, is fsync'd and linked into new/,
 * then new/ is fsync'd once for the batch, and only then are the outcomes
 * sent, so nothing is reported delivered before it is durable.
 *
 * A worker that dies (killed, crashed) fails every delivery it had not
 * answered with LW_DIED; the queue retries them (a duplicate is possible,
 * a loss is not).  Idle for local-worker-idle seconds, the parent closes
 * the channel and the worker exits: the parent decides, so a request can
 * never cross a worker's decision to leave.  Up to LW_PER_ACCOUNT workers
 * serve one account at once, so one slow disk write does not hold back
 * all its mail.
 */
#include <sys/types.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "queue/mda.h"
#include "smtpd/lworker.h"

#define LW_PER_ACCOUNT	4	/* workers for one account at once */
#define LW_BATCH	64	/* deliveries a worker takes at once */
#define LW_MSG_MAX	(32 * 1024)	/* one request or reply */
#define LW_TEXT_MAX	1024

struct lw_job {
	struct lw_job	*next;
	uint64_t	 token;
	time_t		 start;
	lw_done_fn	 done;
	void		*arg;
};

struct lw {
	struct lw	*next;
	pid_t		 pid;
	int		 fd;		/* -1 once let go */
	struct event	*ev;
	struct event	*idle;
	int		 idle_ms;
	char		 name[64];
	uid_t		 uid;
	gid_t		 gid;
	gid_t		 mailgid;
	struct lw_job	*jobs, **tail;
	size_t		 njobs;
};

static struct {
	struct event_base	*base;
	int			 root;
	pid_t			(*fork)(void);
	struct lw		*all;
	uint64_t		 token;
	int			 stopping;
} lw;

/* ---- both sides ------------------------------------------------------ */

static int
lw_send(int fd, const struct buf *b, const int *fds, int nfd, int flags)
{
	union {
		struct cmsghdr	h;
		char		b[CMSG_SPACE(2 * sizeof(int))];
	} u;
	struct iovec iov = { b->data, b->len };
	struct msghdr m;
	struct cmsghdr *c;
	ssize_t n;

	memset(&m, 0, sizeof(m));
	memset(&u, 0, sizeof(u));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	if (nfd > 0) {
		m.msg_control = u.b;
		m.msg_controllen = CMSG_SPACE((size_t)nfd * sizeof(int));
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN((size_t)nfd * sizeof(int));
		memcpy(CMSG_DATA(c), fds, (size_t)nfd * sizeof(int));
	}
	do
		n = sendmsg(fd, &m, flags | MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	return n == (ssize_t)b->len ? 0 : -1;
}

/* One datagram and up to two descriptors: its length, 0 at EOF, -1. */
static ssize_t
lw_recv(int fd, char *b, size_t len, int *fds, int *nfd, int flags)
{
	union {
		struct cmsghdr	h;
		char		b[CMSG_SPACE(2 * sizeof(int))];
	} u;
	struct iovec iov = { b, len };
	struct msghdr m;
	struct cmsghdr *c;
	ssize_t n;
	size_t k;

	*nfd = 0;
	memset(&m, 0, sizeof(m));
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	m.msg_control = u.b;
	m.msg_controllen = sizeof(u.b);
	do
		n = recvmsg(fd, &m, flags | MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	if (n <= 0)
		return n;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (k > 2)
			k = 2;
		memcpy(fds + *nfd, CMSG_DATA(c), k * sizeof(int));
		*nfd += (int)k;
	}
	if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		while (*nfd > 0)
			close(fds[--*nfd]);
		errno = EMSGSIZE;
		return -1;
	}
	return n;
}

int
lworker_become(const struct lw_account *a, char *err, size_t errlen)
{
	gid_t groups[NGROUPS_MAX + 1];
	int n;

	if (!lw.root)
		return 0;
	if (initgroups(a->name, a->gid) == -1)
		goto fail;
	if (a->mailgid != (gid_t)-1) {
		if ((n = getgroups(NGROUPS_MAX, groups)) == -1)
			goto fail;
		groups[n++] = a->mailgid;
		if (setgroups((size_t)n, groups) == -1)
			goto fail;
	}
	if (setgid(a->gid) == -1 || setuid(a->uid) == -1)
		goto fail;
	if (setuid(0) != -1) {
		snprintf(err, errlen, "still root after dropping to %s",
		    a->name);
		return -1;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot become %s: %s", a->name,
	    strerror(errno));
	return -1;
}

/* ---- the worker -------------------------------------------------------- */

struct lw_item {
	uint64_t	 token;
	int		 msgfd, dirfd, newdir;
	struct mda_put	 put;		/* written to tmp/, not yet linked */
	char		*md, *shown, *sender, *rcpt, *qid;
	int		 junk;
	int		 code;
	char		 text[LW_TEXT_MAX];
};

static void
lw_item_clear(struct lw_item *it)
{
	if (it->msgfd >= 0)
		close(it->msgfd);
	if (it->dirfd >= 0)
		close(it->dirfd);
	if (it->newdir >= 0)
		close(it->newdir);
	if (it->put.fd >= 0) {		/* never linked: not delivered */
		close(it->put.fd);
		unlink(it->put.tmp);
	}
	free(it->md);
	free(it->shown);
	free(it->sender);
	free(it->rcpt);
	free(it->qid);
	memset(it, 0, sizeof(*it));
	it->msgfd = it->dirfd = it->newdir = it->put.fd = -1;
}

/* 1: a request, 0: none (EOF, or nothing waiting), -1: a broken one. */
static int
lw_take(int fd, int flags, struct lw_item *it)
{
	static char b[LW_MSG_MAX];
	struct rec_reader rd;
	struct rec r;
	char **dst;
	int fds[2], nfd, got;
	ssize_t n;

	memset(it, 0, sizeof(*it));
	it->msgfd = it->dirfd = it->newdir = it->put.fd = -1;
	if ((n = lw_recv(fd, b, sizeof(b), fds, &nfd, flags)) <= 0)
		return n == 0 || errno == EAGAIN ? 0 : -1;
	if (nfd < 1)
		return -1;
	it->msgfd = fds[0];
	if (nfd > 1)
		it->dirfd = fds[1];
	got = 0;
	rec_reader_init(&rd, b, (size_t)n);
	while (rec_next(&rd, &r) == 1) {
		dst = NULL;
		switch (r.tag) {
		case T_JOB:
			if (rec_u64(&r, &it->token) == -1)
				return -1;
			got = 1;
			break;
		case T_PATH: dst = &it->md; break;
		case T_TEXT: dst = &it->shown; break;
		case T_SENDER: dst = &it->sender; break;
		case T_RCPT: dst = &it->rcpt; break;
		case T_ID: dst = &it->qid; break;
		case T_QUARANTINE: it->junk = 1; break;
		}
		if (dst && (*dst != NULL || (*dst = rec_str(&r, 4096)) == NULL))
			return -1;
	}
	if (!got || !it->md || !it->shown || !it->sender || !it->rcpt ||
	    !it->qid)
		return -1;
	return 1;
}

/* Into the Maildir's directory (the walk the parent did); its name. */
static const char *
lw_enter(struct lw_item *it)
{
	if (it->dirfd >= 0 && fchdir(it->dirfd) == -1)
		return it->shown;	/* the full path, own rights */
	if (it->dirfd < 0 && chdir("/") == -1)
		return it->shown;
	return it->md;
}

/* The first half of a delivery: the message in tmp/, not yet synced. */
static void
lw_put(struct lw_item *it)
{
	const char *md = lw_enter(it);

	if (it->junk) {		/* DMARC quarantine, where .Junk exists */
		char jmd[4200];
		static char jshown[4200];

		if (mda_junk(md, jmd, sizeof(jmd)) == 1) {
			snprintf(jshown, sizeof(jshown), "%s/.Junk", it->shown);
			free(it->shown);
			it->shown = xstrdup(jshown);
			free(it->md);
			it->md = xstrdup(jmd);
			md = it->md;
		}
	}
	it->code = mda_maildir_write(it->msgfd, md, it->shown, it->sender,
	    it->rcpt, it->qid, &it->put, it->text, sizeof(it->text));
}

/*
 * The written files made durable: with several, one syncfs per
 * filesystem (cheaper than a flush per file); with one, its own fsync.
 * Then each is linked into new/.
 */
static void
lw_link(struct lw_item *items, size_t n)
{
	struct stat st[LW_BATCH];
	int res[LW_BATCH], synced;
	size_t i, j, nput = 0;

	for (i = 0; i < n; i++)
		nput += items[i].put.fd >= 0;
	for (i = 0; i < n; i++) {
		res[i] = -1;
		if (nput < 2 || items[i].put.fd < 0)
			continue;
		if (fstat(items[i].put.fd, &st[i]) == -1) {
			res[i] = errno;
			continue;
		}
		for (j = 0; j < i; j++)
			if (res[j] != -1 && items[j].put.fd >= 0 &&
			    st[j].st_dev == st[i].st_dev) {
				res[i] = res[j];
				break;
			}
		if (j == i)
			res[i] = syncfs(items[i].put.fd) == -1 ? errno : 0;
	}
	for (i = 0; i < n; i++) {
		if (items[i].put.fd < 0)
			continue;
		if (res[i] > 0) {
			items[i].code = MDA_TEMP;
			snprintf(items[i].text, sizeof(items[i].text),
			    "sync %s: %s", items[i].put.tmp, strerror(res[i]));
			continue;	/* lw_item_clear removes it */
		}
		synced = res[i] == 0;
		(void)lw_enter(&items[i]);
		items[i].code = mda_maildir_link(&items[i].put, synced,
		    &items[i].newdir, items[i].text, sizeof(items[i].text));
	}
}

/* One fsync per distinct new/ of the batch; its outcome for all of it. */
static void
lw_sync(struct lw_item *items, size_t n)
{
	struct stat st[LW_BATCH];
	int done[LW_BATCH], res[LW_BATCH];
	size_t i, j;

	for (i = 0; i < n; i++) {
		done[i] = 0;
		if (items[i].newdir < 0 || fstat(items[i].newdir, &st[i]) == -1)
			continue;
		res[i] = -1;
		for (j = 0; j < i; j++)
			if (done[j] && st[j].st_dev == st[i].st_dev &&
			    st[j].st_ino == st[i].st_ino) {
				res[i] = res[j];
				break;
			}
		if (j == i)
			res[i] = fsync(items[i].newdir) == -1 ? errno : 0;
		done[i] = 1;
		if (res[i] != 0) {
			items[i].code = MDA_TEMP;
			snprintf(items[i].text, sizeof(items[i].text),
			    "fsync %s/new: %s", items[i].shown,
			    strerror(res[i]));
		}
	}
	for (i = 0; i < n; i++)
		if (items[i].newdir >= 0 && !done[i]) {
			items[i].code = MDA_TEMP;
			snprintf(items[i].text, sizeof(items[i].text),
			    "fstat %s/new: %s", items[i].shown,
			    strerror(errno));
		}
}

static void __attribute__((noreturn))
lw_serve(int fd)
{
	static struct lw_item items[LW_BATCH];
	struct buf out;
	size_t n, i;
	int r;

	buf_init(&out);
	for (i = 0; i < LW_BATCH; i++)
		lw_item_clear(&items[i]);
	for (;;) {
		if ((r = lw_take(fd, 0, &items[0])) != 1)
			_exit(r == 0 ? 0 : MDA_TEMP);
		for (n = 1; n < LW_BATCH; n++)
			if ((r = lw_take(fd, MSG_DONTWAIT, &items[n])) != 1)
				break;
		if (r == -1)
			_exit(MDA_TEMP);
		for (i = 0; i < n; i++) {
			lw_put(&items[i]);
			/* Closed before the answer: the queue reuses a
			   message's file only when nobody holds it open. */
			close(items[i].msgfd);
			items[i].msgfd = -1;
		}
		lw_link(items, n);
		lw_sync(items, n);
		for (i = 0; i < n; i++) {
			buf_reset(&out);
			rec_put_u64(&out, T_JOB, items[i].token);
			rec_put_u64(&out, T_STATUS, (uint64_t)items[i].code);
			rec_put_str(&out, T_TEXT, items[i].text);
			if (lw_send(fd, &out, NULL, 0, 0) == -1)
				_exit(MDA_TEMP);
			lw_item_clear(&items[i]);
		}
	}
}

static void __attribute__((noreturn))
lw_child(const struct lw_account *a, int fd)
{
	char err[512];

	log_close();
	fd_close_except(&fd, 1);
	log_setrole("local");
	log_reopen();
	prctl(PR_SET_NAME, "ternd: local", 0, 0, 0);
	signal(SIGPIPE, SIG_IGN);
	if (lworker_become(a, err, sizeof(err)) == -1) {
		log_warnx("event=worker result=error reason=\"%s\"",
		    log_q(err));
		_exit(MDA_TEMP);
	}
	umask(077);
	lw_serve(fd);
}

/* ---- the parent's side ------------------------------------------------- */

void
lworker_init(struct event_base *base, int root, pid_t (*forkfn)(void))
{
	lw.base = base;
	lw.root = root;
	lw.fork = forkfn;
}

/* Let the worker go: it reads the end of its channel and exits. */
static void
lw_release(struct lw *w)
{
	if (w->fd < 0)
		return;
	if (w->ev)
		event_free(w->ev);
	w->ev = NULL;
	if (w->idle)
		event_del(w->idle);
	close(w->fd);
	w->fd = -1;
}

static void
lw_idle_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct lw *w = arg;

	if (w->njobs == 0)
		lw_release(w);
}

static void
lw_settle(struct lw *w)
{
	struct timeval tv = { w->idle_ms / 1000, (w->idle_ms % 1000) * 1000 };

	if (w->njobs != 0 || w->fd < 0)
		return;
	if (lw.stopping)
		lw_release(w);
	else
		evtimer_add(w->idle, &tv);
}

/*
 * A worker's answer: it runs as the account, so it is untrusted.  0 with
 * the token, the code (0-255) and the text made printable, or -1.
 */
int
lworker_answer_parse(const void *b, size_t len, uint64_t *token, int *code,
    char *text, size_t textlen)
{
	struct rec_reader rd;
	struct rec r;
	uint64_t v = MDA_TEMP;
	char *s;
	int got = 0;

	text[0] = '\0';
	rec_reader_init(&rd, b, len);
	while (rec_next(&rd, &r) == 1) {
		if (r.tag == T_JOB && rec_u64(&r, token) == 0)
			got |= 1;
		else if (r.tag == T_STATUS && rec_u64(&r, &v) == 0)
			got |= 2;
		else if (r.tag == T_TEXT && text[0] == '\0' &&
		    (s = rec_str(&r, 4000)) != NULL) {
			log_sanitize(text, s, textlen);
			free(s);
		}
	}
	if (got != 3 || v > 255)
		return -1;
	*code = (int)v;
	return 0;
}

/* The oldest delivery's outcome (the worker answers in order). */
static int
lw_answer(struct lw *w, const char *b, size_t len)
{
	struct lw_job *j = w->jobs;
	char text[LW_TEXT_MAX];
	uint64_t token = 0;
	int code;

	if (lworker_answer_parse(b, len, &token, &code, text,
	    sizeof(text)) == -1 || j == NULL || j->token != token)
		return -1;
	if ((w->jobs = j->next) == NULL)
		w->tail = &w->jobs;
	w->njobs--;
	j->done(j->arg, code, text);
	free(j);
	return 0;
}

/* Read what the worker answered; a broken answer ends it. */
static void
lw_drain(struct lw *w)
{
	static char b[LW_MSG_MAX];
	int fds[2], nfd;
	ssize_t n;

	while (w->fd >= 0) {
		n = lw_recv(w->fd, b, sizeof(b), fds, &nfd, MSG_DONTWAIT);
		while (n > 0 && nfd > 0)
			close(fds[--nfd]);
		if (n == -1 && errno == EAGAIN)
			break;
		if (n <= 0 || lw_answer(w, b, (size_t)n) == -1) {
			if (n != 0)
				log_warnx("event=worker result=error pid=%d "
				    "reason=\"bad answer\" action=kill",
				    (int)w->pid);
			kill(w->pid, SIGKILL);
			lw_release(w);
			return;
		}
	}
	lw_settle(w);
}

static void
lw_read_cb(evutil_socket_t fd, short ev, void *arg)
{
	lw_drain(arg);
}

static struct lw *
lw_spawn(const struct lw_account *a, int idle_ms)
{
	struct lw *w;
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	if ((pid = lw.fork()) == -1) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	if (pid == 0)
		lw_child(a, sv[1]);
	close(sv[1]);
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	w = xcalloc(1, sizeof(*w));
	w->pid = pid;
	w->fd = sv[0];
	w->idle_ms = idle_ms;
	str_copy(w->name, a->name, sizeof(w->name));
	w->uid = a->uid;
	w->gid = a->gid;
	w->mailgid = a->mailgid;
	w->tail = &w->jobs;
	w->ev = event_new(lw.base, w->fd, EV_READ | EV_PERSIST, lw_read_cb, w);
	w->idle = evtimer_new(lw.base, lw_idle_cb, w);
	event_add(w->ev, NULL);
	w->next = lw.all;
	lw.all = w;
	return w;
}

/* The account's least busy worker, or a new one if all are busy. */
static struct lw *
lw_pick(const struct lw_account *a, int idle_ms)
{
	struct lw *w, *best = NULL;
	int n = 0;

	for (w = lw.all; w; w = w->next) {
		if (w->fd < 0 || w->uid != a->uid || w->gid != a->gid ||
		    w->mailgid != a->mailgid || strcmp(w->name, a->name) != 0)
			continue;
		n++;
		if (best == NULL || w->njobs < best->njobs)
			best = w;
	}
	if ((best == NULL || best->njobs > 0) && n < LW_PER_ACCOUNT &&
	    (w = lw_spawn(a, idle_ms)) != NULL)
		return w;
	return best;
}

int
lworker_deliver(const struct lw_account *a, const struct lw_req *q,
    int idle_ms, lw_done_fn done, void *arg)
{
	struct lw *w;
	struct lw_job *j;
	struct buf b;
	int fds[2] = { q->msgfd, q->dirfd }, rc;

	if (idle_ms <= 0 || lw.stopping || lw.fork == NULL ||
	    strlen(a->name) >= sizeof(w->name) ||
	    (w = lw_pick(a, idle_ms)) == NULL)
		return -1;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, ++lw.token);
	rec_put_str(&b, T_PATH, q->md);
	rec_put_str(&b, T_TEXT, q->shown);
	rec_put_str(&b, T_SENDER, q->sender);
	rec_put_str(&b, T_RCPT, q->rcpt);
	rec_put_str(&b, T_ID, q->qid);
	if (q->junk)
		rec_put_u64(&b, T_QUARANTINE, 1);
	rc = b.len <= LW_MSG_MAX ?
	    lw_send(w->fd, &b, fds, q->dirfd >= 0 ? 2 : 1, MSG_DONTWAIT) : -1;
	buf_free(&b);
	if (rc == -1) {
		lw_settle(w);
		return -1;
	}
	j = xcalloc(1, sizeof(*j));
	j->token = lw.token;
	j->start = time(NULL);
	j->done = done;
	j->arg = arg;
	*w->tail = j;
	w->tail = &j->next;
	w->njobs++;
	event_del(w->idle);
	return 0;
}

int
lworker_reaped(pid_t pid, int status)
{
	struct lw **pp, *w;
	struct lw_job *j;
	char why[128];

	for (pp = &lw.all; (w = *pp) != NULL; pp = &w->next)
		if (w->pid == pid)
			break;
	if (w == NULL)
		return 0;
	lw_drain(w);		/* what it answered before it went */
	lw_release(w);
	*pp = w->next;
	if (WIFSIGNALED(status))
		snprintf(why, sizeof(why), "local worker killed by signal %d",
		    WTERMSIG(status));
	else
		snprintf(why, sizeof(why), "local worker exited (status %d)",
		    WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	if (w->jobs)
		log_warnx("event=worker result=error pid=%d account=\"%s\" "
		    "reason=\"%s\" unanswered=%zu", (int)pid, log_q(w->name),
		    why, w->njobs);
	while ((j = w->jobs) != NULL) {
		w->jobs = j->next;
		j->done(j->arg, LW_DIED, why);
		free(j);
	}
	if (w->idle)
		event_free(w->idle);
	free(w);
	return 1;
}

void
lworker_watchdog(time_t now, time_t secs)
{
	struct lw *w;

	for (w = lw.all; w; w = w->next)
		if (w->jobs && now - w->jobs->start > secs)
			kill(w->pid, SIGKILL);
}

void
lworker_stop(void)
{
	struct lw *w;

	lw.stopping = 1;
	for (w = lw.all; w; w = w->next)
		lw_settle(w);
}

void
lworker_kill(void)
{
	struct lw *w;

	for (w = lw.all; w; w = w->next)
		kill(w->pid, SIGKILL);
}

int
lworker_count(void)
{
	struct lw *w;
	int n = 0;

	for (w = lw.all; w; w = w->next)
		n++;
	return n;
}
