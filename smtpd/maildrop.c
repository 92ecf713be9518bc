/*
 * maildrop: run by the root parent.  spool/maildrop holds messages that
 * sendmail kept while ternd was down or refusing for now; the parent
 * picks each up when it is complete (renamed from its ".tmp." name):
 * at start, on inotify's word that a file was renamed in, and on a scan
 * every minute, which also retries the files that failed for now.
 *
 * The parent parses nothing of a file: it opens it (no symbolic link,
 * nothing that blocks), and from fstat alone decides.  A regular file
 * with one link, not too large, owned by an account other than the
 * daemon's own user is picked up: a worker forked for it closes every
 * descriptor of the parent's, takes the file as its standard input, a
 * report pipe as standard error and one end of a fresh connection as
 * descriptor 3, drops to the owner's uid, gid and groups (a file of
 * root's: to nobody, as no worker is ever root) and runs ternctl's
 * sendmail --tern-pickup.  The other end of the connection goes to the
 * smtp process with the owner's uid and name (P_FD, kind pickup), so the
 * message takes the path of any local submission, named by the kernel's
 * word (the file's owner) as SO_PEERCRED names a live one.  Anything else
 * (another kind of file, a hard link, an owner without an account, the
 * daemon's user, a file the worker finds malformed or naming someone
 * else) is moved to spool/corrupt/ as maildrop.NAME and logged.
 *
 * The worker's exit status decides: 0, the file is removed; 65 or 69,
 * moved aside; anything else, it stays and is tried again after 1, 2,
 * 4 ... minutes, at most an hour apart.  Once it is older than
 * queue-lifetime, the worker is told to count temporary refusals as
 * final, and bounce.
 */
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/drop.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "smtpd/maildrop.h"

#define MD_SCAN_SECS	60		/* the scan that catches everything */
#define MD_WORKERS	4		/* pickups at once */
#define MD_RETRY_MIN	60		/* seconds, doubled per failure */
#define MD_RETRY_MAX	3600
#define MD_TMP_SECS	3600		/* a .tmp. file this old was abandoned */
#define MD_WORKER_SECS	600		/* a pickup that hangs is killed */
#define MD_REPORT_MAX	4096		/* what a worker may say */

struct md_file {
	struct md_file	*next;
	char		 name[DROP_NAME_LEN + 1];
	ino_t		 ino;
	uid_t		 owner;
	char		 user[64];
	unsigned	 attempts;
	time_t		 next_try;
	int		 seen;		/* in the directory at the last scan */
	pid_t		 pid;		/* its worker, or 0 */
	time_t		 started;
	int		 pipefd;
	struct event	*ev;
	struct buf	 report;
};

static struct {
	struct maildrop_env	 env;
	struct event_base	*base;
	const struct conf	*conf;
	char			 dir[PATH_MAX];
	char			 corrupt[PATH_MAX];
	char			 ctl[PATH_MAX];	/* ternctl, next to ternd */
	int			 dirfd;
	int			 inofd;
	struct event		*inoev, *timer, *soon;
	struct md_file		*files;
	int			 running;
	int			 stopping;
} md = { .dirfd = -1, .inofd = -1 };

static void	md_scan(void);

/* ---- the directory ------------------------------------------------------- */

/* ternctl is installed beside ternd (and built beside it). */
static void
md_find_ctl(void)
{
	char self[PATH_MAX], *slash;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	md.ctl[0] = '\0';
	if (n <= 0)
		return;
	self[n] = '\0';
	if ((slash = strrchr(self, '/')) == NULL)
		return;
	*slash = '\0';
	if ((size_t)snprintf(md.ctl, sizeof(md.ctl), "%s/ternctl", self) >=
	    sizeof(md.ctl))
		md.ctl[0] = '\0';
}

/*
 * Root's, group drop-group, 1730: members may create files but not list,
 * read or remove any; nobody else may enter.  The group is what ternctl
 * is installed setgid to.  Without it only root can drop mail.  Not root:
 * the user's own, 0700.
 */
void
maildrop_prepare(const struct conf *c, const struct maildrop_env *env)
{
	const char *grname = conf_str(c, K_DROP_GROUP);
	struct group *gr = NULL;
	struct stat st;
	int fd;

	md.env = *env;
	snprintf(md.dir, sizeof(md.dir), "%s/maildrop", conf_str(c, K_SPOOL));
	snprintf(md.corrupt, sizeof(md.corrupt), "%s/corrupt",
	    conf_str(c, K_SPOOL));
	if (mkdir(md.dir, 0700) == -1 && errno != EEXIST)
		fatalx("event=start result=error reason=\"mkdir %s: %s\"",
		    log_q(md.dir), strerror(errno));
	fd = open(md.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1 || fstat(fd, &st) == -1)
		fatalx("event=start result=error reason=\"maildrop %s: %s\"",
		    log_q(md.dir), strerror(errno));
	if (env->root) {
		if ((gr = getgrnam(grname)) == NULL)
			log_warnx("event=start result=warn reason=\"drop-group "
			    "%s does not exist: only root can leave mail in "
			    "the maildrop while ternd is down (rc/deps.sh "
			    "creates it)\"", log_q(grname));
		if (fchown(fd, 0, gr ? gr->gr_gid : 0) == -1 ||
		    fchmod(fd, 01730) == -1)
			fatalx("event=start result=error reason=\"maildrop "
			    "%s: %s\"", log_q(md.dir), strerror(errno));
	} else if (fchmod(fd, 0700) == -1)
		fatalx("event=start result=error reason=\"maildrop %s: %s\"",
		    log_q(md.dir), strerror(errno));
	md.dirfd = fd;
	md_find_ctl();
	if (md.ctl[0] == '\0' || access(md.ctl, X_OK) == -1)
		log_warnx("event=start result=warn reason=\"no ternctl beside "
		    "ternd (%s): the maildrop is not picked up\"",
		    log_q(md.ctl));
}

/* ---- the files ------------------------------------------------------------ */

static struct md_file *
md_find(const char *name)
{
	struct md_file *f;

	for (f = md.files; f; f = f->next)
		if (strcmp(f->name, name) == 0)
			return f;
	return NULL;
}

static void
md_forget(struct md_file *f)
{
	struct md_file **pp;

	for (pp = &md.files; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	if (f->ev)
		event_free(f->ev);
	if (f->pipefd >= 0)
		close(f->pipefd);
	buf_free(&f->report);
	free(f);
}

/* The name still holds the file the worker had (not a later one). */
static int
md_same(const struct md_file *f)
{
	struct stat st;

	return fstatat(md.dirfd, f->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_ino == f->ino;
}

/* To spool/corrupt/maildrop.NAME, for the admin; logged.  0 if moved. */
static int
md_aside(const char *name, uid_t owner, const char *user, const char *why)
{
	int r = -1;

	char dest[DROP_NAME_LEN + 64];
	const char *base;
	int cfd;

	base = strncmp(name, "maildrop.", 9) == 0 ? name + 9 : name;
	snprintf(dest, sizeof(dest), "maildrop.%.*s", 32, base);
	cfd = open(md.corrupt, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cfd == -1 || renameat(md.dirfd, name, cfd, dest) == -1) {
		log_warnx("event=pickup result=error file=\"%s\" uid=%u "
		    "user=\"%s\" reason=\"%s; cannot move it aside: %s\"",
		    log_q(name), (unsigned)owner, log_q(user), log_q(why),
		    strerror(errno));
	} else {
		log_warnx("event=pickup result=corrupt file=%s uid=%u "
		    "user=\"%s\" reason=\"%s\" moved=\"corrupt/%s\"",
		    log_q(name), (unsigned)owner, log_q(user), log_q(why),
		    log_q(dest));
		r = 0;
	}
	if (cfd >= 0)
		close(cfd);
	return r;
}

/* A file given up on: gone from here, or (if it cannot move) left alone
   for an hour. */
static void
md_give_up(struct md_file *f, uid_t owner, const char *why)
{
	if (md_aside(f->name, owner, f->user[0] ? f->user : "?", why) == 0)
		md_forget(f);
	else
		f->next_try = time(NULL) + MD_RETRY_MAX;
}

static void
md_report_read(evutil_socket_t fd, short ev, void *arg)
{
	struct md_file *f = arg;
	char b[1024];
	ssize_t n;

	while ((n = read(fd, b, sizeof(b))) > 0)
		if (f->report.len + (size_t)n <= MD_REPORT_MAX)
			buf_append(&f->report, b, (size_t)n);
	if (n == 0 && f->ev)
		event_del(f->ev);
}

/* What the worker wrote (untrusted: it ran as the user), one line. */
static void
md_report_text(struct md_file *f, char *out, size_t len)
{
	struct buf b;
	size_t i, n = f->report.len;

	buf_init(&b);
	buf_append(&b, "", 0);
	while (n > 0 && f->report.data[n - 1] == '\n')
		n--;
	for (i = 0; i < n; i++) {
		if (f->report.data[i] == '\n')
			buf_puts(&b, "; ");
		else if (f->report.data[i] != '\0')
			buf_putc(&b, f->report.data[i]);
	}
	log_sanitize(out, b.data, len);
	buf_free(&b);
}

/* ---- a pickup worker ------------------------------------------------------ */

/* Descriptors as the worker needs them, no more: 0 file, 1 null,
   2 report, 3 connection. */
static void
md_child_fds(int file, int report, int conn)
{
	int null;

	file = fcntl(file, F_DUPFD_CLOEXEC, 10);
	report = fcntl(report, F_DUPFD_CLOEXEC, 10);
	conn = fcntl(conn, F_DUPFD_CLOEXEC, 10);
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (file < 0 || report < 0 || conn < 0 || null < 0 ||
	    dup2(file, 0) == -1 || dup2(null, 1) == -1 ||
	    dup2(report, 2) == -1 || dup2(conn, 3) == -1)
		_exit(75);
	close_range(4, ~0U, 0);
}

static void __attribute__((noreturn))
md_child_fail(const char *what)
{
	dprintf(2, "pickup worker: %s: %s\n", what, strerror(errno));
	_exit(75);
}

/* Only what the pickup needs; the sanitizers' settings for test builds. */
static void
md_child_env(char **envp, size_t max)
{
	static const char *pass[] = { "ASAN_OPTIONS", "UBSAN_OPTIONS",
	    "LSAN_OPTIONS" };
	static char buf[3][512];
	size_t i, n = 0;
	const char *v;

	envp[n++] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
	for (i = 0; i < 3 && n + 1 < max; i++)
		if ((v = getenv(pass[i])) != NULL &&
		    (size_t)snprintf(buf[i], sizeof(buf[i]), "%s=%s", pass[i],
		    v) < sizeof(buf[i]))
			envp[n++] = buf[i];
	envp[n] = NULL;
}

static void __attribute__((noreturn))
md_child(const struct passwd *pw, const struct md_file *f, int expired,
    int file, int report, int conn)
{
	char uid[32], *argv[6], *envp[8];

	log_close();
	md_child_fds(file, report, conn);
	if (chdir("/") == -1)
		md_child_fail("chdir /");
	if (md.env.root) {
		if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
		    setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1)
			md_child_fail("cannot change user");
		if (setuid(0) != -1)
			md_child_fail("still root");
	}
	snprintf(uid, sizeof(uid), "%u", (unsigned)f->owner);
	argv[0] = "sendmail";
	argv[1] = "--tern-pickup";
	argv[2] = uid;
	argv[3] = (char *)conf_str(md.conf, K_HOSTNAME);
	argv[4] = expired ? "1" : "0";
	argv[5] = NULL;
	md_child_env(envp, 8);
	execve(md.ctl, argv, envp);
	md_child_fail(md.ctl);
}

/* Who runs the pickup of a file owned by st_uid; NULL (and why) if nobody. */
static const struct passwd *
md_runas(uid_t owner, char *user, size_t userlen, const char **why)
{
	struct passwd *pw;

	if ((pw = getpwuid(owner)) == NULL) {
		*why = "the owner has no account";
		return NULL;
	}
	str_copy(user, pw->pw_name, userlen);
	if (!md.env.root && owner != getuid()) {
		*why = "not the user ternd runs as (ternd is not root)";
		return NULL;
	}
	if (md.env.root && owner == md.env.uid) {
		*why = "owned by ternd's own user";
		return NULL;
	}
	if (md.env.root && owner == 0 && (pw = getpwnam("nobody")) == NULL) {
		*why = "a file of root's, and no account nobody to run as";
		return NULL;
	}
	return pw;
}

/* Is the file one to pick up?  NULL, or why not (moved aside then). */
static const char *
md_check(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_nlink != 1)
		return "a file with other links";
	if ((unsigned long long)st->st_size > DROP_FILE_MAX)
		return "too large";
	return NULL;
}

static void
md_send_conn(const struct md_file *f, int fd)
{
	struct ipc *smtp = md.env.smtp();
	struct buf b;

	buf_init(&b);
	rec_put_str(&b, T_KIND, FD_PICKUP);
	rec_put_u64(&b, T_UID, (uint64_t)f->owner);
	rec_put_str(&b, T_USER, f->user);
	if (smtp == NULL)
		close(fd);
	/* Without it, the worker sees the connection close: a retry. */
	if (smtp == NULL || ipc_send(smtp, IMSG_P_FD, b.data, b.len, fd) == -1)
		log_warnx("event=pickup result=error file=%s reason=\"smtp "
		    "process unavailable\"", f->name);
	buf_free(&b);
}

static int
md_fork(struct md_file *f, const struct passwd *pw, int file, int expired)
{
	int sp[2] = { -1, -1 }, pfd[2] = { -1, -1 };
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) == -1 ||
	    pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == -1 ||
	    (pid = md.env.fork()) == -1) {
		log_warnx("event=pickup result=error file=%s reason=\"%s\"",
		    f->name, strerror(errno));
		if (sp[0] >= 0) {
			close(sp[0]);
			close(sp[1]);
		}
		if (pfd[0] >= 0) {
			close(pfd[0]);
			close(pfd[1]);
		}
		return -1;
	}
	if (pid == 0)
		md_child(pw, f, expired, file, pfd[1], sp[1]);
	close(sp[1]);
	close(pfd[1]);
	md_send_conn(f, sp[0]);
	f->pid = pid;
	f->started = time(NULL);
	f->pipefd = pfd[0];
	buf_reset(&f->report);
	f->ev = event_new(md.base, pfd[0], EV_READ | EV_PERSIST,
	    md_report_read, f);
	event_add(f->ev, NULL);
	md.running++;
	return 0;
}

static void
md_pickup(struct md_file *f)
{
	const struct passwd *pw;
	const char *why;
	struct stat st;
	int fd, expired;

	fd = openat(md.dirfd, f->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_NOCTTY | O_CLOEXEC);
	if (fd == -1) {
		int e = errno;

		if (e == ENOENT)
			md_forget(f);
		else {
			if (fstatat(md.dirfd, f->name, &st,
			    AT_SYMLINK_NOFOLLOW) == -1)
				st.st_uid = (uid_t)-1;
			md_give_up(f, st.st_uid, e == ELOOP ?
			    "a symbolic link" : strerror(e));
		}
		return;
	}
	why = NULL;
	if (fstat(fd, &st) == -1 || (why = md_check(&st)) != NULL ||
	    (pw = md_runas(st.st_uid, f->user, sizeof(f->user), &why)) ==
	    NULL) {
		md_give_up(f, st.st_uid, why ? why : strerror(errno));
		close(fd);
		return;
	}
	f->ino = st.st_ino;
	f->owner = st.st_uid;
	expired = time(NULL) - st.st_mtime > conf_num(md.conf, NULL,
	    K_QUEUE_LIFETIME) / 1000;
	if (md_fork(f, pw, fd, expired) == -1)
		f->next_try = time(NULL) + MD_RETRY_MIN;
	close(fd);
}

/* ---- outcomes --------------------------------------------------------------- */

static void
md_retry(struct md_file *f, const char *text)
{
	unsigned shift = f->attempts < 6 ? f->attempts : 6;
	time_t delay = (time_t)MD_RETRY_MIN << shift;

	if (delay > MD_RETRY_MAX)
		delay = MD_RETRY_MAX;
	f->attempts++;
	f->next_try = time(NULL) + delay;
	log_warnx("event=pickup result=deferred file=%s uid=%u user=\"%s\" "
	    "attempts=%u retry=%llds reason=\"%s\"", f->name,
	    (unsigned)f->owner, log_q(f->user), f->attempts,
	    (long long)delay, log_q(text[0] ? text : "temporary failure"));
}

int
maildrop_reaped(pid_t pid, int status)
{
	struct md_file *f;
	char text[1024];
	int code;

	for (f = md.files; f; f = f->next)
		if (f->pid == pid && pid > 0)
			break;
	if (f == NULL)
		return 0;
	md_report_read(f->pipefd, EV_READ, f);
	event_free(f->ev);
	f->ev = NULL;
	close(f->pipefd);
	f->pipefd = -1;
	f->pid = 0;
	md.running--;
	md_report_text(f, text, sizeof(text));
	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (WIFSIGNALED(status))
		snprintf(text, sizeof(text), "pickup killed by signal %d",
		    WTERMSIG(status));
	if (code == 0) {
		if (md_same(f))
			unlinkat(md.dirfd, f->name, 0);
		log_info("event=pickup result=ok file=%s uid=%u user=\"%s\"%s%s%s",
		    f->name, (unsigned)f->owner, log_q(f->user), text[0] ?
		    " reason=\"" : "", text[0] ? log_q(text) : "", text[0] ?
		    "\"" : "");
		md_forget(f);
	} else if ((code == 65 || code == 69) && md_same(f))
		md_give_up(f, f->owner, text[0] ? text :
		    "refused by the pickup");
	else
		md_retry(f, text);
	if (!md.stopping && md.soon)
		event_active(md.soon, EV_TIMEOUT, 0);	/* one may be waiting */
	return 1;
}

/* ---- scanning ----------------------------------------------------------- */

/* A .tmp. file: a sendmail still writing, or one killed while it did. */
static void
md_tmp(const char *name, time_t now)
{
	struct stat st;

	if (fstatat(md.dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    now - st.st_mtime > MD_TMP_SECS &&
	    unlinkat(md.dirfd, name, 0) == 0)
		log_info("event=pickup result=removed file=\"%s\" uid=%u "
		    "reason=\"an unfinished drop file\"", log_q(name),
		    (unsigned)st.st_uid);
}

static void
md_entry(const char *name, time_t now)
{
	struct md_file *f;
	struct stat st;

	if (strncmp(name, DROP_TMP_PREFIX, strlen(DROP_TMP_PREFIX)) == 0) {
		md_tmp(name, now);
		return;
	}
	if (!drop_name_ok(name)) {
		if (fstatat(md.dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			st.st_uid = (uid_t)-1;
		md_aside(name, st.st_uid, "?", "not a drop file's name");
		return;
	}
	if ((f = md_find(name)) == NULL) {
		f = xcalloc(1, sizeof(*f));
		str_copy(f->name, name, sizeof(f->name));
		f->pipefd = -1;
		buf_init(&f->report);
		f->next = md.files;
		md.files = f;
	}
	f->seen = 1;
}

static void
md_scan(void)
{
	struct md_file *f, *next;
	struct dirent *de;
	time_t now = time(NULL);
	DIR *d;
	int fd;

	if (md.stopping || md.dirfd < 0)
		return;
	/* A descriptor of its own: a dup would share the scan position. */
	if ((fd = openat(md.dirfd, ".", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1 || (d = fdopendir(fd)) == NULL) {
		log_warnx("event=pickup result=error reason=\"scan %s: %s\"",
		    log_q(md.dir), strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	for (f = md.files; f; f = f->next)
		f->seen = 0;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			md_entry(de->d_name, now);
	closedir(d);
	for (f = md.files; f; f = next) {
		next = f->next;
		if (f->pid != 0)
			continue;
		if (!f->seen)
			md_forget(f);
		else if (f->next_try <= now && md.running < MD_WORKERS &&
		    md.ctl[0] != '\0')
			md_pickup(f);
	}
}

static void
md_scan_cb(evutil_socket_t fd, short ev, void *arg)
{
	md_scan();
}

/* A pickup that hangs (a stuck client) is killed and tried again. */
static void
md_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct md_file *f;
	time_t now = time(NULL);

	for (f = md.files; f; f = f->next)
		if (f->pid > 0 && now - f->started > MD_WORKER_SECS)
			kill(f->pid, SIGKILL);
	md_scan();
}

/* inotify: a file was renamed in (a drop is complete); scan soon. */
static void
md_inotify_cb(evutil_socket_t fd, short ev, void *arg)
{
	char b[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	while (read(fd, b, sizeof(b)) > 0)
		;
	event_active(md.soon, EV_TIMEOUT, 0);
}

void
maildrop_start(struct event_base *base, const struct conf *c)
{
	struct timeval tv = { MD_SCAN_SECS, 0 };

	md.base = base;
	md.conf = c;
	if (md.dirfd < 0)
		return;
	md.soon = event_new(base, -1, 0, md_scan_cb, NULL);
	md.timer = event_new(base, -1, EV_PERSIST, md_timer_cb, NULL);
	evtimer_add(md.timer, &tv);
	md.inofd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (md.inofd == -1 || inotify_add_watch(md.inofd, md.dir,
	    IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW) == -1)
		log_warnx("event=start result=warn reason=\"inotify on %s: "
		    "%s; the maildrop is scanned every %d s\"", log_q(md.dir),
		    strerror(errno), MD_SCAN_SECS);
	else {
		md.inoev = event_new(base, md.inofd, EV_READ | EV_PERSIST,
		    md_inotify_cb, NULL);
		event_add(md.inoev, NULL);
	}
	event_active(md.soon, EV_TIMEOUT, 0);
}

void
maildrop_conf(const struct conf *c)
{
	md.conf = c;
}

void
maildrop_stop(void)
{
	md.stopping = 1;
}

int
maildrop_busy(void)
{
	return md.running > 0;
}

void
maildrop_kill(void)
{
	struct md_file *f;

	for (f = md.files; f; f = f->next)
		if (f->pid > 0)
			kill(f->pid, SIGKILL);
}
