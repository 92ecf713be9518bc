/*
 * ternd: start-up and the parent process.  The parent is the only process
 * that stays root: it reads the configuration, binds the listening ports
 * and the control socket, prepares the spool, forks the unprivileged smtp
 * and queue processes (restarting one that dies, with a throttle), runs
 * local deliveries in workers dropped to the recipient's uid/gid, and
 * handles SIGHUP (reload) and SIGTERM (orderly stop).  It never parses
 * network input.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/random.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf.h"
#include "ipc.h"
#include "log.h"
#include "proc.h"
#include "util.h"

#define TERND_CONF		"/etc/tern/tern.conf"
#define TERND_STOP_SECS		30
#define TERND_WORKER_SECS	600	/* a local delivery that hangs */



struct worker {
	struct worker	*next;
	pid_t		 pid;
	uint64_t	 job;
	int		 pipefd;
	time_t		 start;
};

struct child {
	pid_t		 pid;
	struct ipc	*ipc;
	time_t		 started;
	int		 restarts;
	struct event	*restart;
};

static struct {
	struct event_base	*base;
	struct conf		*conf;
	struct buf		 text;
	const char		*confpath;	/* NULL: embedded */
	int			 foreground;
	int			 verbose;
	struct lsock		*ls;
	size_t			 nls;
	int			 ctlfd;
	int			 submitfd;
	struct child		 smtp, queue;
	pid_t			 oldsmtp;	/* draining after a reload */
	struct ipc		*oldipc;	/* its channel, kept until it exits */
	struct worker		*workers;
	int			 stopping;
	struct event		*stopev;
	uid_t			 uid;		/* unprivileged user, if root */
	gid_t			 gid;
	int			 root;
} p;

static int	ready_fd = -1;	/* tells the starting process we are up */

static void	parent_spawn_smtp(void);
static void	parent_spawn_queue(void);
static void	child_setup(const char *);

static void
usage(void)
{
	fprintf(stderr, "usage: ternd [-dDnPv] [-f file]\n");
	exit(1);
}

/* ---- start-up ------------------------------------------------------------- */

/* Parse the config and read the secrets it names (route passwords). */
static struct conf *
parent_load(struct buf *text, char *err, size_t errlen)
{
	struct conf *c;

	buf_reset(text);
	if (p.confpath)
		c = conf_load(p.confpath, proc_basedir, text, err, errlen);
	else {
		buf_puts(text, conf_default_text);
		c = conf_parse("(embedded)", text->data, text->len,
		    proc_basedir, err, errlen);
	}
	if (c && conf_load_secrets(c, err, errlen) == -1) {
		conf_free(c);
		return NULL;
	}
	return c;
}

/*
 * The SRS key: read it, or make a random one at first start (mode 0600,
 * root's), so forwarded mail keeps verifiable return paths across restarts.
 */
static void
parent_srs_key(const struct conf *c)
{
	const char *path = conf_str(c, K_SRS_SECRET);
	unsigned char key[32];
	struct buf b;
	int fd;

	buf_init(&b);
	if (file_read_all(path, SRS_KEY_MAX * 2, &b) == 0 && b.len >= 16) {
		proc_srs_keylen = b.len < SRS_KEY_MAX ? b.len : SRS_KEY_MAX;
		memcpy(proc_srs_key, b.data, proc_srs_keylen);
		explicit_bzero(b.data, b.len);
		buf_free(&b);
		return;
	}
	buf_free(&b);
	if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key))
		fatalx("event=start result=error reason=\"no randomness for "
		    "the SRS key\"");
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1 || write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) ||
	    fsync(fd) == -1)
		fatalx("event=start result=error reason=\"SRS key %s: %s\"",
		    path, strerror(errno));
	close(fd);
	memcpy(proc_srs_key, key, sizeof(key));
	proc_srs_keylen = sizeof(key);
	explicit_bzero(key, sizeof(key));
	log_info("event=start result=ok reason=\"created SRS key %s\"", path);
}

void
proc_drop(const struct conf *c, const char *role)
{
	if (!p.root)
		return;
	if (setgroups(1, &p.gid) == -1 || setgid(p.gid) == -1 ||
	    setuid(p.uid) == -1)
		fatalx("event=start result=error reason=\"cannot drop to user "
		    "%s: %s\"", conf_str(c, K_USER), strerror(errno));
	if (setuid(0) != -1)
		panicx("event=start result=error reason=\"%s still root\"",
		    role);
}

/* mkdir -p path; levels it creates are given to uid/gid. */
static void
parent_mkdirs(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	char tmp[4096];
	size_t i, len = strlen(path);

	if (len >= sizeof(tmp))
		fatalx("event=start result=error reason=\"path too long: %s\"",
		    path);
	memcpy(tmp, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, mode) == 0) {
			if (p.root && chown(tmp, uid, gid) == -1)
				fatalx("event=start result=error reason=\"chown "
				    "%s: %s\"", tmp, strerror(errno));
		} else if (errno != EEXIST)
			fatalx("event=start result=error reason=\"mkdir %s: "
			    "%s\"", tmp, strerror(errno));
		tmp[i] = path[i];
	}
}

static void
parent_spool(const struct conf *c)
{
	static const char *sub[] = { "incoming", "queue", "corrupt" };
	const char *spool = conf_str(c, K_SPOOL);
	char path[4096];
	size_t i;

	parent_mkdirs(spool, 0700, p.uid, p.gid);
	if (p.root && chown(spool, p.uid, p.gid) == -1)
		fatalx("event=start result=error reason=\"chown %s: %s\"", spool,
		    strerror(errno));
	chmod(spool, 0700);
	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", spool, sub[i]);
		parent_mkdirs(path, 0700, p.uid, p.gid);
		if (p.root && chown(path, p.uid, p.gid) == -1)
			fatalx("event=start result=error reason=\"chown %s: "
			    "%s\"", path, strerror(errno));
	}
}

/* Virtual Maildirs' parent folders, so the virtual user can create them. */
static void
parent_vdirs(const struct conf *c)
{
	struct passwd *pw = getpwnam(conf_str(c, K_VIRTUAL_USER));
	char dir[4096], *slash;
	size_t i;

	if (c->nvusers == 0)
		return;
	if (pw == NULL && p.root)
		fatalx("event=start result=error reason=\"virtual-user %s does "
		    "not exist\"", conf_str(c, K_VIRTUAL_USER));
	for (i = 0; i < c->nvusers; i++) {
		str_copy(dir, c->vusers[i].maildir, sizeof(dir));
		if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
			continue;
		*slash = '\0';
		parent_mkdirs(dir, 0755, pw ? pw->pw_uid : getuid(),
		    pw ? pw->pw_gid : getgid());
	}
}

static int
parent_bind(const struct listener *l)
{
	int fd, on = 1;

	fd = socket(l->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	if (l->ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	if (bind(fd, (const struct sockaddr *)&l->ss, l->sslen) == -1 ||
	    listen(fd, 512) == -1) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static int
parent_same_addr(const struct listener *a, const struct listener *b)
{
	return a->sslen == b->sslen && memcmp(&a->ss, &b->ss, a->sslen) == 0;
}

/*
 * Bind every listener of c, reusing sockets of old (the running config)
 * for addresses both have, so a reload never drops the port.  Returns 0,
 * or -1 with err set and nothing changed.
 */
static int
parent_listeners(const struct conf *c, const struct conf *old,
    struct lsock **out, size_t *nout, char *err, size_t errlen)
{
	struct lsock *ls = xcalloc(c->nlisteners, sizeof(*ls));
	size_t i, j;

	for (i = 0; i < c->nlisteners; i++) {
		ls[i].listener = i;
		ls[i].fd = -1;
		for (j = 0; old && j < p.nls; j++)
			if (p.ls[j].fd >= 0 && parent_same_addr(&c->listeners[i],
			    &old->listeners[p.ls[j].listener]))
				ls[i].fd = dup(p.ls[j].fd);
		if (ls[i].fd >= 0)
			continue;
		if ((ls[i].fd = parent_bind(&c->listeners[i])) == -1) {
			snprintf(err, errlen, "%s:%d: cannot listen on %s port "
			    "%d: %s", c->file, c->listeners[i].line,
			    c->listeners[i].addr, c->listeners[i].port,
			    strerror(errno));
			for (j = 0; j < i; j++)
				close(ls[j].fd);
			free(ls);
			return -1;
		}
	}
	*out = ls;
	*nout = c->nlisteners;
	return 0;
}

static void
parent_close_listeners(void)
{
	size_t i;

	for (i = 0; i < p.nls; i++)
		if (p.ls[i].fd >= 0)
			close(p.ls[i].fd);
	free(p.ls);
	p.ls = NULL;
	p.nls = 0;
}

static int
parent_unix(const char *path)
{
	struct sockaddr_un sun;
	char dir[sizeof(sun.sun_path)], *slash;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path))
		fatalx("event=start result=error reason=\"socket path too long: "
		    "%s\"", path);
	str_copy(dir, path, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		parent_mkdirs(dir, 0755, 0, 0);
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		fatalx("event=start result=error reason=\"socket: %s\"",
		    strerror(errno));
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fd, 64) == -1)
		fatalx("event=start result=error reason=\"socket %s: %s\"", path,
		    strerror(errno));
	return fd;
}

static int
parent_control(const struct conf *c)
{
	const char *path = conf_str(c, K_CONTROL_SOCKET);
	struct group *gr;
	int fd = parent_unix(path);

	/* Root and the control group only; the queue process serves it. */
	if (p.root) {
		gr = getgrnam(conf_str(c, K_CONTROL_GROUP));
		if (chown(path, 0, gr ? gr->gr_gid : 0) == -1)
			fatalx("event=start result=error reason=\"chown %s: "
			    "%s\"", path, strerror(errno));
		if (gr == NULL)
			log_warnx("event=start result=warn reason=\"control-group "
			    "%s does not exist; root only\"",
			    conf_str(c, K_CONTROL_GROUP));
		chmod(path, 0660);
	} else
		chmod(path, 0600);
	return fd;
}

/* Any local user may submit; the smtp process learns who by SO_PEERCRED. */
static int
parent_submit(const struct conf *c)
{
	int fd = parent_unix(conf_str(c, K_SUBMIT_SOCKET));

	chmod(conf_str(c, K_SUBMIT_SOCKET), 0666);
	return fd;
}

static void
parent_pidfile(const struct conf *c)
{
	const char *path = conf_str(c, K_PIDFILE);
	char tmp[4096], dir[4096], *slash;
	FILE *f;

	str_copy(dir, path, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		parent_mkdirs(dir, 0755, 0, 0);
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((f = fopen(tmp, "w")) == NULL)
		fatalx("event=start result=error reason=\"pidfile %s: %s\"", tmp,
		    strerror(errno));
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, path) == -1)
		fatalx("event=start result=error reason=\"pidfile %s: %s\"",
		    path, strerror(errno));
}

/*
 * fork() with signals blocked across it: until the child has reset the
 * parent's handlers, a signal meant for the child would be reported to the
 * parent's event loop instead, and lost to the child.
 */
static pid_t
parent_safe_fork(void)
{
	static const int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	sigset_t all, old;
	size_t i;
	pid_t pid;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	pid = fork();
	if (pid == 0)
		for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], SIG_DFL);
	sigprocmask(SIG_SETMASK, &old, NULL);
	return pid;
}

/* ---- local delivery workers ------------------------------------------------ */

struct deliver_req {
	uint64_t	 job;
	char		*kind, *user, *path, *sender, *rcpt, *id;
};

static void
deliver_req_free(struct deliver_req *d)
{
	free(d->kind);
	free(d->user);
	free(d->path);
	free(d->sender);
	free(d->rcpt);
	free(d->id);
}

static int
deliver_req_parse(struct rec_reader *rd, struct deliver_req *d)
{
	struct rec r;
	char **dst;
	int n;

	memset(d, 0, sizeof(*d));
	while ((n = rec_next(rd, &r)) == 1) {
		dst = NULL;
		switch (r.tag) {
		case T_JOB:
			if (rec_u64(&r, &d->job) == -1)
				return -1;
			break;
		case T_KIND: dst = &d->kind; break;
		case T_USER: dst = &d->user; break;
		case T_PATH: dst = &d->path; break;
		case T_SENDER: dst = &d->sender; break;
		case T_RCPT: dst = &d->rcpt; break;
		case T_ID: dst = &d->id; break;
		}
		if (dst && (*dst != NULL || (*dst = rec_str(&r, 4000)) == NULL))
			return -1;
	}
	if (n == -1 || !d->kind || !d->user || !d->path || !d->sender ||
	    !d->rcpt || !d->id)
		return -1;
	return 0;
}

static void
deliver_reply(uint64_t job, int status, const char *text)
{
	struct buf b;

	if (p.queue.ipc == NULL)
		return;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, job);
	rec_put_u64(&b, T_STATUS, (uint64_t)status);
	rec_put_str(&b, T_TEXT, text);
	ipc_send(p.queue.ipc, IMSG_P_DELIVERED, b.data, b.len, -1);
	buf_free(&b);
}

/*
 * The queue process is not trusted to name an arbitrary path and uid: the
 * request must be a Maildir this config gives that account.
 */
static const char *
deliver_check(const struct deliver_req *d, struct passwd **pwp)
{
	const char *md = conf_str(p.conf, K_MAILDIR);
	struct passwd *pw;
	char want[4096];
	size_t i;

	if (strcmp(d->kind, "maildir") != 0)
		return "unsupported delivery kind";
	if ((pw = getpwnam(d->user)) == NULL)
		return "no such user";
	*pwp = pw;
	if (strcmp(d->user, conf_str(p.conf, K_VIRTUAL_USER)) == 0)
		for (i = 0; i < p.conf->nvusers; i++)
			if (strcmp(p.conf->vusers[i].maildir, d->path) == 0)
				return NULL;
	if (md[0] == '~' && md[1] == '/')
		snprintf(want, sizeof(want), "%s/%s", pw->pw_dir, md + 2);
	else
		str_copy(want, md, sizeof(want));
	if (strcmp(want, d->path) == 0)
		return NULL;
	return "maildir path does not match the configuration";
}

static void
worker_run(const struct deliver_req *d, const struct passwd *pw, int msgfd,
    int out)
{
	char err[1024] = "";
	int code;

	if (p.root) {
		if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
		    setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1) {
			snprintf(err, sizeof(err), "cannot become %s: %s",
			    pw->pw_name, strerror(errno));
			(void)!write(out, err, strlen(err));
			_exit(75);
		}
	}
	umask(077);
	code = mda_maildir(msgfd, d->path, d->sender, d->rcpt, d->id, err,
	    sizeof(err));
	(void)!write(out, err, strlen(err));
	_exit(code);
}

static void
parent_deliver(struct rec_reader *rd, int msgfd)
{
	struct deliver_req d;
	struct passwd *pw = NULL;
	struct worker *w;
	const char *why;
	int pfd[2];
	pid_t pid;

	if (deliver_req_parse(rd, &d) == -1) {
		log_warnx("event=deliver result=error reason=\"malformed "
		    "request from queue\"");
		goto out;
	}
	if (msgfd < 0 || (why = deliver_check(&d, &pw)) != NULL) {
		log_warnx("q=%s event=deliver result=refused reason=\"%s\" "
		    "user=%s", d.id, msgfd < 0 ? "no message" : why, d.user);
		deliver_reply(d.job, 1, msgfd < 0 ? "no message" : why);
		goto out;
	}
	if (!p.root && pw->pw_uid != getuid()) {
		deliver_reply(d.job, 1, "not running as root: cannot deliver "
		    "as another user");
		goto out;
	}
	if (pipe2(pfd, O_CLOEXEC) == -1 || (pid = parent_safe_fork()) == -1) {
		deliver_reply(d.job, 1, strerror(errno));
		goto out;
	}
	if (pid == 0) {
		close(pfd[0]);
		child_setup("local");
		worker_run(&d, pw, msgfd, pfd[1]);
	}
	close(pfd[1]);
	w = xcalloc(1, sizeof(*w));
	w->pid = pid;
	w->job = d.job;
	w->pipefd = pfd[0];
	w->start = time(NULL);
	w->next = p.workers;
	p.workers = w;
out:
	if (msgfd >= 0)
		close(msgfd);
	deliver_req_free(&d);
}

static int
worker_reaped(pid_t pid, int status)
{
	struct worker **pp, *w;
	char text[1024];
	ssize_t n;
	int st;

	for (pp = &p.workers; (w = *pp) != NULL; pp = &w->next)
		if (w->pid == pid)
			break;
	if (w == NULL)
		return 0;
	*pp = w->next;
	n = read(w->pipefd, text, sizeof(text) - 1);
	text[n > 0 ? n : 0] = '\0';
	close(w->pipefd);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		st = 0;
	else if (WIFEXITED(status) && WEXITSTATUS(status) != 75 &&
	    WEXITSTATUS(status) != 73)
		st = 2;
	else
		st = 1;
	if (WIFSIGNALED(status))
		snprintf(text, sizeof(text), "delivery worker killed by signal "
		    "%d", WTERMSIG(status));
	deliver_reply(w->job, st, text[0] ? text : "delivery failed");
	free(w);
	return 1;
}

static void
worker_watchdog(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w;
	time_t now = time(NULL);

	for (w = p.workers; w; w = w->next)
		if (now - w->start > TERND_WORKER_SECS)
			kill(w->pid, SIGKILL);
}

/* ---- children ------------------------------------------------------------------- */

static void	parent_child_msg(struct ipc *, int, struct rec_reader *, int,
		    void *);
static void	parent_child_closed(struct ipc *, void *);

static pid_t
parent_fork(const char *role, struct child *ch, int keep[], size_t nkeep)
{
	int pair[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == -1)
		fatalx("event=start result=error reason=\"socketpair: %s\"",
		    strerror(errno));
	if ((pid = parent_safe_fork()) == -1) {
		log_warnx("event=spawn result=error role=%s reason=\"%s\"", role,
		    strerror(errno));
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	if (pid == 0) {
		close(pair[0]);
		keep[0] = pair[1];
		(void)nkeep;
		return 0;
	}
	close(pair[1]);
	if (ch->ipc)
		ipc_free(ch->ipc);
	ch->ipc = ipc_new(p.base, pair[0], parent_child_msg,
	    parent_child_closed, ch);
	ch->pid = pid;
	ch->started = time(NULL);
	log_info("event=spawn result=ok role=%s pid=%d", role, (int)pid);
	return pid;
}

/* In a fresh child: leave the parent's event loop behind. */
static void
child_setup(const char *role)
{
	struct worker *w;

	log_setrole(role);
	for (w = p.workers; w; w = w->next)
		close(w->pipefd);
	/* The parent's ends of the other channels are not ours to use. */
	if (p.smtp.ipc)
		close(ipc_fd(p.smtp.ipc));
	if (p.queue.ipc)
		close(ipc_fd(p.queue.ipc));
	if (p.oldipc)
		close(ipc_fd(p.oldipc));
}

static void
parent_spawn_queue(void)
{
	int sq[2], keep[1];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sq) == -1) {
		log_warnx("event=spawn result=error reason=\"socketpair\"");
		return;
	}
	pid = parent_fork("queue", &p.queue, keep, 1);
	if (pid == 0) {
		child_setup("queue");
		close(sq[1]);
		if (p.submitfd >= 0)
			close(p.submitfd);
		parent_close_listeners();
		proc_drop(p.conf, "queue");
		queue_main(p.conf, p.text.data, p.text.len, keep[0], p.ctlfd,
		    sq[0]);
	}
	close(sq[0]);
	if (pid > 0 && p.smtp.ipc)
		ipc_send(p.smtp.ipc, IMSG_P_PEER, NULL, 0, sq[1]);
	else
		close(sq[1]);
}

static void
parent_spawn_smtp(void)
{
	int sq[2], keep[1];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sq) == -1) {
		log_warnx("event=spawn result=error reason=\"socketpair\"");
		return;
	}
	pid = parent_fork("smtp", &p.smtp, keep, 1);
	if (pid == 0) {
		child_setup("smtp");
		close(sq[0]);
		if (p.ctlfd >= 0)
			close(p.ctlfd);
		proc_drop(p.conf, "smtp");
		smtp_main(p.conf, p.ls, p.nls, p.submitfd, keep[0], sq[1]);
	}
	close(sq[1]);
	if (pid > 0 && p.queue.ipc)
		ipc_send(p.queue.ipc, IMSG_P_PEER, NULL, 0, sq[0]);
	else
		close(sq[0]);
}

static void
parent_child_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct child *ch = arg;

	if (ch == &p.queue && type == IMSG_P_DELIVER) {
		parent_deliver(rd, fd);
		return;
	}
	if (fd >= 0)
		close(fd);
	log_warnx("event=ipc result=error reason=\"unexpected message %d\"",
	    type);
}

static void
parent_child_closed(struct ipc *c, void *arg)
{
	/* The exit is handled by SIGCHLD; only the channel goes here. */
}

static void
parent_restart_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct child *ch = arg;

	if (p.stopping)
		return;
	if (ch == &p.smtp)
		parent_spawn_smtp();
	else
		parent_spawn_queue();
}

/* Restart a dead child at once, then with a growing delay if it repeats. */
static void
parent_child_died(struct child *ch, const char *role, int status)
{
	struct timeval tv = { 0, 0 };

	log_warnx("event=child-exit role=%s pid=%d status=%d%s", role,
	    (int)ch->pid, WIFEXITED(status) ? WEXITSTATUS(status) :
	    128 + WTERMSIG(status), p.stopping ? "" : " action=restart");
	ch->pid = 0;
	if (ch->ipc) {
		ipc_free(ch->ipc);
		ch->ipc = NULL;
	}
	if (p.stopping)
		return;
	if (time(NULL) - ch->started < 10)
		ch->restarts++;
	else
		ch->restarts = 0;
	tv.tv_sec = ch->restarts > 5 ? 30 : ch->restarts;
	if (ch->restart == NULL)
		ch->restart = evtimer_new(p.base, parent_restart_cb, ch);
	evtimer_add(ch->restart, &tv);
}

static void
parent_maybe_exit(void)
{
	if (!p.stopping || p.smtp.pid || p.queue.pid || p.oldsmtp)
		return;
	if (p.workers)
		return;
	unlink(conf_str(p.conf, K_PIDFILE));
	unlink(conf_str(p.conf, K_CONTROL_SOCKET));
	unlink(conf_str(p.conf, K_SUBMIT_SOCKET));
	log_info("event=stop result=ok");
	exit(0);
}

static void
parent_sigchld(evutil_socket_t sig, short ev, void *arg)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (worker_reaped(pid, status))
			continue;
		if (pid == p.oldsmtp) {
			p.oldsmtp = 0;
			ipc_free(p.oldipc);
			p.oldipc = NULL;
			continue;
		}
		if (pid == p.smtp.pid) {
			parent_child_died(&p.smtp, "smtp", status);
			/* Once smtp has stopped, stop the queue. */
			if (p.stopping && p.queue.pid)
				kill(p.queue.pid, SIGTERM);
		} else if (pid == p.queue.pid)
			parent_child_died(&p.queue, "queue", status);
	}
	parent_maybe_exit();
}

static void
parent_stop_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w;

	log_warnx("event=stop result=forced");
	if (p.smtp.pid)
		kill(p.smtp.pid, SIGKILL);
	if (p.queue.pid)
		kill(p.queue.pid, SIGKILL);
	if (p.oldsmtp)
		kill(p.oldsmtp, SIGKILL);
	for (w = p.workers; w; w = w->next)
		kill(w->pid, SIGKILL);
	unlink(conf_str(p.conf, K_PIDFILE));
	exit(0);
}

static void
parent_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct timeval tv = { TERND_STOP_SECS, 0 };

	if (p.stopping)
		return;
	p.stopping = 1;
	log_info("event=stop reason=\"signal %d\"", (int)sig);
	if (p.oldsmtp)
		kill(p.oldsmtp, SIGTERM);
	if (p.smtp.pid)
		kill(p.smtp.pid, SIGTERM);
	else if (p.queue.pid)
		kill(p.queue.pid, SIGTERM);
	p.stopev = evtimer_new(p.base, parent_stop_timeout, NULL);
	evtimer_add(p.stopev, &tv);
	parent_maybe_exit();
}

/*
 * SIGHUP: parse the file again; if it is good, bind what is new, start a
 * new smtp process on the new config and let the old one finish its
 * sessions; the queue process takes the new text over IPC.
 */
static void
parent_sighup(evutil_socket_t sig, short ev, void *arg)
{
	struct buf text;
	struct conf *c;
	struct lsock *ls;
	size_t nls;
	char err[1024];
	struct buf b;

	if (p.stopping)
		return;
	buf_init(&text);
	if ((c = parent_load(&text, err, sizeof(err))) == NULL) {
		log_warnx("event=reload result=refused reason=\"%s\"", err);
		buf_free(&text);
		return;
	}
	if (parent_listeners(c, p.conf, &ls, &nls, err, sizeof(err)) == -1) {
		log_warnx("event=reload result=refused reason=\"%s\"", err);
		conf_free(c);
		buf_free(&text);
		return;
	}
	parent_close_listeners();
	p.ls = ls;
	p.nls = nls;
	conf_free(p.conf);
	p.conf = c;
	buf_free(&p.text);
	p.text = text;
	parent_vdirs(c);
	if (p.smtp.pid) {
		if (p.oldsmtp)
			kill(p.oldsmtp, SIGTERM);	/* a third generation */
		if (p.oldipc)
			ipc_free(p.oldipc);
		p.oldsmtp = p.smtp.pid;
		p.oldipc = p.smtp.ipc;
		kill(p.oldsmtp, SIGUSR1);
		p.smtp.pid = 0;
		p.smtp.ipc = NULL;
	}
	parent_spawn_smtp();
	if (p.queue.ipc) {
		buf_init(&b);
		rec_put(&b, T_CONF, p.text.data, p.text.len);
		ipc_send(p.queue.ipc, IMSG_P_CONF, b.data, b.len, -1);
		buf_free(&b);
	}
	log_info("event=reload result=ok listeners=%zu", p.nls);
}

/* ---- main ------------------------------------------------------------------------ */

static void
parent_daemonize(void)
{
	int pfd[2], fd;
	char c;
	pid_t pid;

	if (pipe(pfd) == -1 || (pid = fork()) == -1)
		fatalx("event=start result=error reason=\"fork: %s\"",
		    strerror(errno));
	if (pid > 0) {
		/* Exit 0 only once the daemon is listening with its pidfile. */
		close(pfd[1]);
		_exit(read(pfd[0], &c, 1) == 1 ? 0 : 1);
	}
	close(pfd[0]);
	setsid();
	/* Errors go to syslog from here; the caller's terminal is let go. */
	if ((fd = open("/dev/null", O_RDWR)) >= 0) {
		dup2(fd, STDIN_FILENO);
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (fd > 2)
			close(fd);
	}
	if (chdir("/") == -1)
		fatalx("event=start result=error reason=\"chdir /\"");
	p.ctlfd = -1;
	fcntl(pfd[1], F_SETFD, FD_CLOEXEC);
	/* Reported after the pidfile exists; see parent_ready(). */
	ready_fd = pfd[1];
}

static void
parent_ready(void)
{
	if (ready_fd < 0)
		return;
	(void)!write(ready_fd, "1", 1);
	close(ready_fd);
	ready_fd = -1;
}

static void
parent_user(const struct conf *c)
{
	struct passwd *pw;

	p.root = geteuid() == 0;
	if (!p.root) {
		p.uid = getuid();
		p.gid = getgid();
		return;
	}
	if ((pw = getpwnam(conf_str(c, K_USER))) == NULL)
		fatalx("event=start result=error reason=\"user %s does not "
		    "exist (rc/deps.sh creates it)\"", conf_str(c, K_USER));
	if (pw->pw_uid == 0)
		fatalx("event=start result=error reason=\"user %s is root\"",
		    conf_str(c, K_USER));
	p.uid = pw->pw_uid;
	p.gid = pw->pw_gid;
}

static void
parent_evlog(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_debug("event=libevent msg=\"%s\"", msg);
}

int
main(int argc, char *argv[])
{
	static char cwd[4096];
	int ch, check = 0, print = 0, embedded = 0;
	char err[1024];
	struct event *ev;
	struct timeval wd = { 60, 0 };

	p.confpath = TERND_CONF;
	p.ctlfd = -1;
	p.submitfd = -1;
	while ((ch = getopt(argc, argv, "dDf:nPv")) != -1) {
		switch (ch) {
		case 'd': p.foreground = 1; break;
		case 'D': embedded = 1; break;
		case 'f': p.confpath = optarg; break;
		case 'n': check = 1; break;
		case 'P': print = 1; break;
		case 'v': p.verbose = 1; break;
		default: usage();
		}
	}
	if (optind != argc)
		usage();
	if (embedded)
		p.confpath = NULL;
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		str_copy(cwd, "/", sizeof(cwd));
	proc_basedir = cwd;
	buf_init(&p.text);
	if ((p.conf = parent_load(&p.text, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if (check) {
		fprintf(stderr, "%s: configuration ok\n",
		    p.confpath ? p.confpath : "(embedded)");
		return 0;
	}
	if (print) {
		struct buf b;

		buf_init(&b);
		conf_print(p.conf, &b);
		fputs(b.data ? b.data : "", stdout);
		buf_free(&b);
		return 0;
	}
	log_init("parent", p.foreground, p.verbose);
	event_set_log_callback(parent_evlog);
	parent_user(p.conf);
	parent_spool(p.conf);
	parent_vdirs(p.conf);
	parent_srs_key(p.conf);
	if (parent_listeners(p.conf, NULL, &p.ls, &p.nls, err, sizeof(err)) == -1)
		fatalx("event=start result=error reason=\"%s\"", err);
	if (!p.foreground)
		parent_daemonize();
	p.ctlfd = parent_control(p.conf);
	p.submitfd = parent_submit(p.conf);
	parent_pidfile(p.conf);
	signal(SIGPIPE, SIG_IGN);
	p.base = event_base_new();
	parent_spawn_queue();
	parent_spawn_smtp();
	ev = evsignal_new(p.base, SIGCHLD, parent_sigchld, NULL);
	evsignal_add(ev, NULL);
	ev = evsignal_new(p.base, SIGTERM, parent_sigterm, NULL);
	evsignal_add(ev, NULL);
	ev = evsignal_new(p.base, SIGINT, parent_sigterm, NULL);
	evsignal_add(ev, NULL);
	ev = evsignal_new(p.base, SIGHUP, parent_sighup, NULL);
	evsignal_add(ev, NULL);
	ev = event_new(p.base, -1, EV_PERSIST, worker_watchdog, NULL);
	evtimer_add(ev, &wd);
	log_info("event=start result=ok pid=%d config=%s", (int)getpid(),
	    p.confpath ? p.confpath : "(embedded)");
	parent_ready();
	event_base_dispatch(p.base);
	return 0;
}
