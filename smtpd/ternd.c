/*
 * ternd: start-up and the parent process.  The parent is the only process
 * that stays root: it reads the configuration and the secrets it names,
 * binds the listening ports and the control socket, prepares the spool,
 * starts the roles (smtp, queue, vault) by fork and exec of ternd itself
 * with only their channel open, hands each what it needs over that
 * channel, restarts one that dies (with a throttle), runs local deliveries
 * in workers dropped to the recipient's uid/gid, and handles SIGHUP
 * (reload) and SIGTERM (orderly stop).  It never parses network input.
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
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <seccomp.h>

#include "auth/credstore.h"
#include "auth/dkim.h"
#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "queue/mda.h"
#include "lib/proc.h"
#include "queue/resolve.h"
#include "lib/util.h"
#include "smtpd/certs.h"
#include "smtpd/lworker.h"
#include "smtpd/maildrop.h"
#include "smtpd/role.h"

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
	const char	*role;
	pid_t		 pid;
	struct ipc	*ipc;
	time_t		 started;
	int		 restarts;
	struct event	*restart;
	int64_t		 sysnr;		/* its seccomp report, or -1 */
	struct ipc	*deadipc;	/* its channel, seen failing */
	pid_t		 deadpid;	/* ...while this process ran */
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
	struct child		 smtp, queue, vault;
	unsigned char		 srskey[SRS_KEY_MAX];
	size_t			 srskeylen;
	struct cred		*creds;		/* the credential store */
	size_t			 ncreds;
	struct event		*credev;	/* a re-read asked for */
	time_t			 credlast;
	struct certs		 certs;		/* TLS chain and key, for smtp */
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
static void	parent_mkdirs(const char *, mode_t, uid_t, gid_t);

static void	parent_spawn(struct child *);

static void
usage(void)
{
	fprintf(stderr, "usage: ternd [-dDnPv] [-f file]\n");
	fprintf(stderr, "       ternd -X smtp|queue|vault (started by ternd)\n");
	exit(1);
}

/* ---- start-up ------------------------------------------------------------- */

/*
 * Parse the config and read the secrets it names (route passwords, the TLS
 * certificate and key, into certs when given).
 */
static struct conf *
parent_load(struct buf *text, struct certs *certs, char *err, size_t errlen)
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
	if (c && (conf_load_secrets(c, err, errlen) == -1 ||
	    (certs && certs_load(c, certs, err, errlen) == -1))) {
		conf_free(c);
		if (certs)
			certs_free(certs);
		return NULL;
	}
	return c;
}

/*
 * The smtp process's certificate: tls-cert's (read by parent_load), else
 * the self-signed one, read or made now.  0, or -1 with err.
 */
static int
parent_tls(const struct conf *c, struct certs *certs, char *err,
    size_t errlen)
{
	if (certs->chain.len == 0 &&
	    certs_selfsigned(c, certs, err, errlen) == -1)
		return -1;
	if (certs->made)
		log_info("event=start result=ok reason=\"created a self-signed "
		    "TLS certificate for %s (set tls-cert for a real one)\" "
		    "files=\"%s\"", log_q(conf_str(c, K_HOSTNAME)),
		    log_q(certs->origin));
	else if (certs->selfsigned)
		log_info("event=start result=ok reason=\"TLS with the "
		    "self-signed certificate (set tls-cert for a real one)\" "
		    "files=\"%s\"", log_q(certs->origin));
	if (certs->expired)
		log_warnx("event=start result=warn reason=\"tls-cert has "
		    "expired; clients that verify will refuse it (renew it, "
		    "then reload)\" files=\"%s\"", log_q(certs->origin));
	return 0;
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
	char dir[4096], *slash;
	struct buf b;
	int fd;

	str_copy(dir, path, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		parent_mkdirs(dir, 0700, 0, 0);	/* root's: secrets only */
	}
	buf_init(&b);
	if (file_read_all(path, SRS_KEY_MAX * 2, &b) == 0 && b.len >= 16) {
		p.srskeylen = b.len < SRS_KEY_MAX ? b.len : SRS_KEY_MAX;
		memcpy(p.srskey, b.data, p.srskeylen);
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
		    log_q(path), strerror(errno));
	close(fd);
	memcpy(p.srskey, key, sizeof(key));
	p.srskeylen = sizeof(key);
	explicit_bzero(key, sizeof(key));
	log_info("event=start result=ok reason=\"created SRS key %s\"", log_q(path));
}

/* The store's virtual accounts, for the parent's own resolve_check(). */
static void
parent_accounts(void)
{
	char **names = NULL;
	size_t i, n = 0;

	if (p.ncreds)	/* sized once: growing by one is quadratic */
		names = xreallocarray(NULL, p.ncreds, sizeof(*names));
	for (i = 0; i < p.ncreds; i++)
		if (credstore_is_virtual(p.creds[i].name))
			names[n++] = xstrdup(p.creds[i].name);
	resolve_accounts_set(names, n);
}

/*
 * The credential store, read as root (the hashes go to the vault alone).
 * A store that cannot be read leaves the accounts as they were.
 */
static int
parent_creds(const struct conf *c)
{
	struct cred *v;
	size_t n;
	char err[1024];

	if (credstore_read(conf_str(c, K_CREDENTIALS), &v, &n, err,
	    sizeof(err)) == -1) {
		log_warnx("event=credentials result=error reason=\"%s\" "
		    "accounts=%zu action=keep", log_q(err), p.ncreds);
		return -1;
	}
	credstore_free(p.creds, p.ncreds);
	p.creds = v;
	p.ncreds = n;
	parent_accounts();
	log_info("event=credentials result=ok accounts=%zu virtual=%zu", n,
	    resolve_accounts_count());
	return 0;
}

/* mkdir -p path; levels it creates are given to uid/gid.  0 or -1. */
static int
parent_mkdirs_try(const char *path, mode_t mode, uid_t uid, gid_t gid,
    char *err, size_t errlen)
{
	char tmp[4096];
	size_t i, len = strlen(path);

	if (len >= sizeof(tmp)) {
		snprintf(err, errlen, "path too long: %s", path);
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, mode) == 0) {
			if (p.root && chown(tmp, uid, gid) == -1) {
				snprintf(err, errlen, "chown %s: %s", tmp,
				    strerror(errno));
				return -1;
			}
		} else if (errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", tmp,
			    strerror(errno));
			return -1;
		}
		tmp[i] = path[i];
	}
	return 0;
}

static void
parent_mkdirs(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
	char err[4400];

	if (parent_mkdirs_try(path, mode, uid, gid, err, sizeof(err)) == -1)
		fatalx("event=start result=error reason=\"%s\"", log_q(err));
}

static void
parent_spool(const struct conf *c)
{
	static const char *sub[] = { "incoming", "queue", "corrupt", "dmarc",
	    "free" };
	const char *spool = conf_str(c, K_SPOOL);
	char path[4096], *slash;
	size_t i;

	/* Levels above the spool are root's and searchable (./run of the
	 * development config also holds the virtual Maildirs). */
	str_copy(path, spool, sizeof(path));
	if ((slash = strrchr(path, '/')) != NULL && slash != path) {
		*slash = '\0';
		parent_mkdirs(path, 0755, 0, 0);
	}
	parent_mkdirs(spool, 0700, p.uid, p.gid);
	if (p.root && chown(spool, p.uid, p.gid) == -1)
		fatalx("event=start result=error reason=\"chown %s: %s\"", log_q(spool),
		    strerror(errno));
	/* Others may pass through (to maildrop/), not list. */
	chmod(spool, 0711);
	for (i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", spool, sub[i]);
		parent_mkdirs(path, 0700, p.uid, p.gid);
		if (p.root && chown(path, p.uid, p.gid) == -1)
			fatalx("event=start result=error reason=\"chown %s: "
			    "%s\"", log_q(path), strerror(errno));
	}
}

/*
 * The first level of dir that uid/gid cannot search (a checkout under
 * /root, mode 0700, say), copied to out, or NULL if it can reach dir.
 * The mode bits as the kernel applies them (ACLs are not read).
 */
static const char *
parent_blocked(const char *dir, uid_t uid, gid_t gid, char *out, size_t len)
{
	struct stat st;
	mode_t bit;
	size_t i, n;

	if ((n = str_copy(out, dir, len)) >= len)
		return NULL;
	for (i = 1; i <= n; i++) {
		if (out[i] != '/' && out[i] != '\0')
			continue;
		out[i] = '\0';
		if (stat(out, &st) == 0 && S_ISDIR(st.st_mode)) {
			/* The children keep gid alone (setgroups(1, &gid)). */
			bit = st.st_uid == uid ? S_IXUSR : st.st_gid == gid ?
			    S_IXGRP : S_IXOTH;
			if (!(st.st_mode & bit))
				return out;
		}
		out[i] = dir[i];
	}
	return NULL;
}

/*
 * The children open the spool and the aliases map as `user`: refuse to
 * start, saying why, rather than have them fail over and over.
 */
static void
parent_reach(const struct conf *c)
{
	const char *paths[] = { conf_str(c, K_SPOOL), conf_str(c, K_ALIASES) };
	char dir[4096], level[4096], *slash;
	const char *b;
	size_t i;

	if (!p.root)
		return;
	for (i = 0; i < 2; i++) {
		if (paths[i] == NULL)
			continue;
		str_copy(dir, paths[i], sizeof(dir));
		if (i == 1 && (slash = strrchr(dir, '/')) != NULL && slash != dir)
			*slash = '\0';
		if ((b = parent_blocked(dir, p.uid, p.gid, level,
		    sizeof(level))) != NULL)
			fatalx("event=start result=error reason=\"user %s "
			    "cannot enter %s, above %s: use a directory it can "
			    "enter\"", log_q(conf_str(c, K_USER)), log_q(b), log_q(paths[i]));
	}
}

/* Virtual Maildirs' parent folders, so the virtual user can create them. */
/*
 * The fixed part of virtual-maildir (up to the level before the first %),
 * for the store's virtual accounts: levels it creates belong to the
 * virtual account.  A delivery worker, as that account, makes the rest
 * (domain, user, Maildir) inside it: root makes nothing where the
 * account could have put a symbolic link.
 */
static void
parent_vprefix(const struct conf *c, const struct passwd *pw)
{
	const char *pat = conf_str(c, K_VIRTUAL_MAILDIR), *pct;
	char dir[4096], err[512];
	size_t n;

	if (resolve_accounts_count() == 0 || pat == NULL ||
	    (pct = strchr(pat, '%')) == NULL)
		return;
	for (n = (size_t)(pct - pat); n > 0 && pat[n] != '/'; n--)
		;
	if (n == 0 || n >= sizeof(dir))
		return;
	memcpy(dir, pat, n);
	dir[n] = '\0';
	if (parent_mkdirs_try(dir, 0755, pw ? pw->pw_uid : getuid(),
	    pw ? pw->pw_gid : getgid(), err, sizeof(err)) == -1)
		log_warnx("event=credentials result=warn reason=\"%s\"",
		    log_q(err));
}

static void
parent_vdirs(const struct conf *c)
{
	struct passwd *pw = getpwnam(resolve_vaccount(c));
	char dir[4096], *slash;
	size_t i;

	if (pw == NULL && p.root && resolve_accounts_count() > 0)
		log_warnx("event=credentials result=warn reason=\"virtual-user "
		    "%s does not exist: virtual accounts get no mail\"",
		    log_q(resolve_vaccount(c)));
	parent_vprefix(c, pw);
	if (c->nvusers == 0)
		return;
	if (pw == NULL && p.root)
		fatalx("event=start result=error reason=\"virtual-user %s does "
		    "not exist\"", log_q(resolve_vaccount(c)));
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
				ls[i].fd = fcntl(p.ls[j].fd, F_DUPFD_CLOEXEC, 0);
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
		    "%s\"", log_q(path));
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
		fatalx("event=start result=error reason=\"socket %s: %s\"", log_q(path),
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
			    "%s\"", log_q(path), strerror(errno));
		if (gr == NULL)
			log_warnx("event=start result=warn reason=\"control-group "
			    "%s does not exist; root only\"",
			    log_q(conf_str(c, K_CONTROL_GROUP)));
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
		fatalx("event=start result=error reason=\"pidfile %s: %s\"", log_q(tmp),
		    strerror(errno));
	fprintf(f, "%d\n", (int)getpid());
	if (fclose(f) != 0 || rename(tmp, path) == -1)
		fatalx("event=start result=error reason=\"pidfile %s: %s\"",
		    log_q(path), strerror(errno));
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
	if (pid == 0) {
		for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
			signal(sigs[i], SIG_DFL);
		/* Only the parent reports to whoever started the daemon. */
		log_startup(-1);
		if (ready_fd >= 0) {
			close(ready_fd);
			ready_fd = -1;
		}
	}
	sigprocmask(SIG_SETMASK, &old, NULL);
	return pid;
}

/* ---- local delivery workers ------------------------------------------------ */

/*
 * The queue process asks for a delivery (P_DELIVER); the parent trusts
 * none of it.  It expands the original recipient again with its own
 * config and aliases map, takes the target (kind, account, path) from that
 * expansion, decides the account the worker runs as (never root), forks
 * the worker and reports the outcome (P_DELIVERED).  A system account's
 * delivery has two workers: the first, as the account, carries out its
 * ~/.forward; the second delivers to its mailbox, if the .forward keeps a
 * copy (or there is none): Maildir as the account, mbox as the account
 * with the mail group when mbox-dir needs it, LMTP as virtual-user.
 */

#define DELIVER_LIMIT_SECS	540	/* commands, LMTP: under the watchdog */
#define DELIVER_RESULT_MAX	(128 * 1024)	/* what a worker may report */

enum { DS_FORWARD, DS_MAILBOX };

struct deliver_req {
	uint64_t	 job;
	char		*kind, *user, *path, *sender, *rcpt, *orcpt, *id;
	int		 junk;		/* T_QUARANTINE */
};

struct delivery {
	struct delivery	*next;
	pid_t		 pid;		/* its worker now */
	uint64_t	 job;
	int		 stage;
	int		 msgfd;
	struct target	*t;		/* from the parent's own expansion */
	char		*sender, *orcpt, *id;
	int		 junk;		/* Maildir: into .Junk if it is there */
	char		 runas[64];	/* the account the worker runs as */
	char		 home[1024];
	uid_t		 uid;
	gid_t		 gid;
	gid_t		 mailgid;	/* extra group for mbox-dir, or -1 */
	struct event	*ev;		/* reads the worker's report */
	int		 pipefd;
	struct buf	 out;		/* the worker's report */
	struct buf	 fwd;		/* T_FORWARD records from ~/.forward */
	char		 note[1024];	/* what ~/.forward did */
};

static struct delivery	*deliveries;
static int		 delivery_pooled(struct delivery *);
static struct aliases	*deliver_aliases;
static char		*deliver_aliases_src;

static void
deliver_req_free(struct deliver_req *d)
{
	free(d->kind);
	free(d->user);
	free(d->path);
	free(d->sender);
	free(d->rcpt);
	free(d->orcpt);
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
		case T_ORCPT: dst = &d->orcpt; break;
		case T_ID: dst = &d->id; break;
		case T_QUARANTINE: d->junk = 1; break;
		}
		if (dst && (*dst != NULL || (*dst = rec_str(&r, 4000)) == NULL))
			return -1;
	}
	if (n == -1 || !d->kind || !d->user || !d->path || !d->sender ||
	    !d->rcpt || !d->orcpt || !d->id)
		return -1;
	return 0;
}

/* Text that goes into headers, an environment or a file name: no controls. */
static int
deliver_plain(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s; s++, n++)
		if ((unsigned char)*s < ' ' || *s == 0x7f || n >= max)
			return 0;
	return 1;
}

static const char *
deliver_req_valid(const struct deliver_req *d)
{
	size_t i;

	if (strlen(d->id) != 16)
		return "bad queue id";
	for (i = 0; i < 16; i++)
		if (!((d->id[i] >= '0' && d->id[i] <= '9') ||
		    (d->id[i] >= 'A' && d->id[i] <= 'F')))
			return "bad queue id";
	if (!deliver_plain(d->sender, 998))
		return "bad sender";
	if (!deliver_plain(d->orcpt, 998))
		return "bad recipient";
	return NULL;
}

static void
deliver_reply(uint64_t job, int status, const char *text,
    const struct buf *fwd)
{
	struct buf b;

	if (p.queue.ipc == NULL)
		return;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, job);
	rec_put_u64(&b, T_STATUS, (uint64_t)status);
	rec_put_str(&b, T_TEXT, text);
	if (fwd && fwd->len)
		buf_append(&b, fwd->data, fwd->len);
	ipc_send(p.queue.ipc, IMSG_P_DELIVERED, b.data, b.len, -1);
	buf_free(&b);
}

/* The parent's own read-only view of the aliases map (reopened on reload). */
static struct aliases *
deliver_aliases_map(void)
{
	const char *src = conf_str(p.conf, K_ALIASES);

	if (deliver_aliases == NULL || strcmp(deliver_aliases_src, src) != 0) {
		aliases_close(deliver_aliases);
		free(deliver_aliases_src);
		deliver_aliases = aliases_open(src);
		deliver_aliases_src = xstrdup(src);
	}
	return deliver_aliases;
}

static void
delivery_free(struct delivery *dl)
{
	struct delivery **pp;

	for (pp = &deliveries; *pp; pp = &(*pp)->next)
		if (*pp == dl) {
			*pp = dl->next;
			break;
		}
	if (dl->msgfd >= 0)
		close(dl->msgfd);
	if (dl->ev)
		event_free(dl->ev);
	if (dl->t)
		resolve_free(dl->t, 1);
	free(dl->sender);
	free(dl->orcpt);
	free(dl->id);
	buf_free(&dl->out);
	buf_free(&dl->fwd);
	free(dl);
}

/*
 * Is the request one of the targets the parent's own expansion of the
 * original recipient gives?  NULL, or why not (*temp: worth a retry).
 */
static const char *
deliver_check(const struct deliver_req *d, struct delivery *dl, char *why,
    size_t whylen)
{
	const char *bad;

	if ((bad = deliver_req_valid(d)) != NULL)
		return bad;
	if (resolve_check(p.conf, deliver_aliases_map(), d->orcpt, d->kind,
	    d->user, d->path, &dl->t, why, whylen) != 0)
		return why;
	dl->stage = dl->t->account ? DS_FORWARD : DS_MAILBOX;
	return NULL;
}

/* mbox-dir writable by the mail group (Debian's /var/mail, 2775 root:mail). */
static gid_t
delivery_mailgid(const char *mbox)
{
	char dir[4096], *slash;
	struct group *gr;
	struct stat st;

	str_copy(dir, mbox, sizeof(dir));
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return (gid_t)-1;
	*slash = '\0';
	if ((gr = getgrnam("mail")) == NULL || stat(dir, &st) == -1 ||
	    st.st_gid != gr->gr_gid || !(st.st_mode & S_IWGRP))
		return (gid_t)-1;
	return gr->gr_gid;
}

/* Who the worker of the delivery's current stage runs as: never root. */
static const char *
delivery_account(struct delivery *dl)
{
	const char *name = dl->t->user;
	struct passwd *pw;

	dl->mailgid = (gid_t)-1;
	if ((pw = getpwnam(name)) == NULL)
		return "the account to deliver as does not exist";
	if (pw->pw_uid == 0)
		return "refusing to deliver as root (alias root and postmaster "
		    "to a user)";
	if (dl->stage == DS_MAILBOX && dl->t->kind == TG_MBOX)
		dl->mailgid = delivery_mailgid(dl->t->path);
	str_copy(dl->runas, pw->pw_name, sizeof(dl->runas));
	str_copy(dl->home, pw->pw_dir ? pw->pw_dir : "/", sizeof(dl->home));
	dl->uid = pw->pw_uid;
	dl->gid = pw->pw_gid;
	if (!p.root && dl->uid != getuid())
		return "not running as root: cannot deliver as another user";
	return NULL;
}

static int
worker_become(const struct delivery *dl, char *err, size_t errlen)
{
	struct lw_account a = { dl->runas, dl->uid, dl->gid, dl->mailgid };

	return lworker_become(&a, err, errlen);
}

/*
 * A Maildir is entered while still root: the worker then needs search
 * permission on none of the levels above it (a checkout under /root for
 * the development config, a virtual tree under a private directory), only
 * write permission where it writes.  Root walks the levels without
 * following a symbolic link at any of them, so an account that owns one
 * of the levels cannot point root elsewhere, and enters only a folder
 * that belongs to the account or to root.  Levels that do not exist yet
 * (a virtual account's domain and user folders, at its first mail) are
 * made by the worker, as the account, inside the last level there is.
 * Anything unusual: the worker uses the full path with its own
 * permissions, as without this.  Returns the path to deliver to.
 */
static const char *
worker_enter_maildir(const struct delivery *dl, char *dir, size_t len,
    int *dfd)
{
	const char *path = dl->t->path, *base, *rest;
	char *comp, *next;
	struct stat st;
	int fd, nfd;

	*dfd = -1;
	if (!p.root || dl->stage != DS_MAILBOX || dl->t->kind != TG_MAILDIR ||
	    path[0] != '/' || (base = strrchr(path, '/')) == NULL ||
	    base == path || base[1] == '\0' || (size_t)(base - path) >= len)
		return path;
	memcpy(dir, path, (size_t)(base - path));
	dir[base - path] = '\0';
	if ((fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1)
		return path;
	rest = base + 1;
	for (comp = dir + 1; comp && *comp; comp = next) {
		if ((next = strchr(comp, '/')) != NULL)
			*next++ = '\0';
		if (*comp == '\0')
			continue;
		nfd = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (nfd == -1 && errno == ENOENT) {
			/* Not there yet (a virtual account's first mail):
			 * the worker makes the rest from the last level. */
			rest = path + (comp - dir);
			break;
		}
		close(fd);
		if ((fd = nfd) == -1)
			return path;
	}
	if (fstat(fd, &st) == -1 || (st.st_uid != dl->uid && st.st_uid != 0)) {
		close(fd);
		return path;
	}
	*dfd = fd;
	return rest;
}

static int
worker_mailbox(const struct delivery *dl, const struct mda_job *j,
    const char *md, char *err, size_t errlen)
{
	const struct target *t = dl->t;

	switch (t->kind) {
	case TG_MAILDIR: {
		char jmd[4200], jshown[4200];

		if (dl->junk && mda_junk(md, jmd, sizeof(jmd)) == 1) {
			snprintf(jshown, sizeof(jshown), "%s/.Junk", t->path);
			return mda_maildir(j->msgfd, jmd, jshown, j->sender,
			    j->rcpt, j->qid, err, errlen);
		}
		return mda_maildir(j->msgfd, md, t->path, j->sender, j->rcpt,
		    j->qid, err, errlen);
	}
	case TG_MBOX:
		return mda_mbox(j, t->path, err, errlen);
	case TG_FILE:
		return mda_file(j, t->path, err, errlen);
	case TG_PIPE:
		return mda_pipe(j, t->path, err, errlen);
	default:
		snprintf(err, errlen, "unsupported delivery kind");
		return MDA_TEMP;
	}
}

/* In the worker: become the account, deliver, report, exit. */
static void __attribute__((noreturn))
worker_run(const struct delivery *dl, int out)
{
	char err[1024] = "", dir[4096];
	struct mda_job j;
	struct buf res, fwd;
	const char *md;
	int code, self = 0, dfd;
	size_t off = 0;
	ssize_t w;

	signal(SIGPIPE, SIG_IGN);
	buf_init(&res);
	buf_init(&fwd);
	md = worker_enter_maildir(dl, dir, sizeof(dir), &dfd);
	if (dfd >= 0 && fchdir(dfd) == -1)
		md = dl->t->path;
	if (dfd >= 0)
		close(dfd);
	if (worker_become(dl, err, sizeof(err)) == -1) {
		code = MDA_TEMP;
		goto report;
	}
	umask(077);
	memset(&j, 0, sizeof(j));
	j.msgfd = dl->msgfd;
	j.sender = dl->sender;
	j.rcpt = dl->t->rcpt;
	j.orcpt = dl->orcpt;
	j.qid = dl->id;
	j.user = dl->runas;
	j.home = dl->home;
	j.helo = conf_str(p.conf, K_HOSTNAME);
	j.deadline = time(NULL) + DELIVER_LIMIT_SECS;
	if (dl->stage == DS_FORWARD)
		code = forward_deliver(&j, p.conf, &self, &fwd, err,
		    sizeof(err));
	else
		code = worker_mailbox(dl, &j, md, err, sizeof(err));
report:
	rec_put_str(&res, T_TEXT, err);
	if (self)
		rec_put_u64(&res, T_SELF, 1);
	buf_append(&res, fwd.data ? fwd.data : "", fwd.len);
	while (off < res.len) {
		if ((w = write(out, res.data + off, res.len - off)) == -1 &&
		    errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	_exit(code);
}

static void
worker_read(evutil_socket_t fd, short ev, void *arg)
{
	struct delivery *dl = arg;
	char b[8192];
	ssize_t n;

	while ((n = read(fd, b, sizeof(b))) > 0)
		if (dl->out.len + (size_t)n <= DELIVER_RESULT_MAX)
			buf_append(&dl->out, b, (size_t)n);
	if (n == 0 && dl->ev)
		event_del(dl->ev);	/* the end: the rest comes with SIGCHLD */
}

/*
 * A worker keeps its message and its report pipe, nothing else of the
 * parent's (listeners, the control and submit sockets, the roles'
 * channels, the event loop, other deliveries' messages), before it runs
 * anything of the account's.  The syslog socket is let go first and
 * opened again, so no closed number is written to by mistake.
 */
static void
worker_isolate(const struct delivery *dl, int out)
{
	int keep[2] = { dl->msgfd, out };

	log_close();
	fd_close_except(keep, 2);
	log_setrole("local");
	log_reopen();
}

/*
 * No ~/.forward at all: the .forward stage would only say so, and its
 * worker would cost a process per message; straight to the mailbox.  Any
 * other answer (it exists, cannot be looked at) keeps the stage, where
 * the account reads it with its own rights.
 */
static int
delivery_no_forward(struct delivery *dl)
{
	char path[4096];
	struct stat st;

	if (dl->stage != DS_FORWARD || snprintf(path, sizeof(path),
	    "%s/.forward", dl->home) >= (int)sizeof(path) ||
	    lstat(path, &st) == 0 || (errno != ENOENT && errno != ENOTDIR))
		return 0;
	dl->stage = DS_MAILBOX;
	return 1;
}

static int
delivery_start(struct delivery *dl, char *why, size_t whylen)
{
	const char *bad;
	struct worker *w;
	int pfd[2];
	pid_t pid;

	if ((bad = delivery_account(dl)) != NULL ||
	    (delivery_no_forward(dl) && (bad = delivery_account(dl)) != NULL)) {
		str_copy(why, bad, whylen);
		return -1;
	}
	if (delivery_pooled(dl) == 0)
		return 0;
	if (pipe2(pfd, O_CLOEXEC | O_NONBLOCK) == -1) {
		str_copy(why, strerror(errno), whylen);
		return -1;
	}
	if ((pid = parent_safe_fork()) == -1) {
		str_copy(why, strerror(errno), whylen);
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		fcntl(pfd[1], F_SETFL, 0);
		worker_isolate(dl, pfd[1]);
		worker_run(dl, pfd[1]);
	}
	close(pfd[1]);
	buf_reset(&dl->out);
	if (dl->ev)
		event_free(dl->ev);
	dl->pid = pid;
	dl->pipefd = pfd[0];
	dl->ev = event_new(p.base, pfd[0], EV_READ | EV_PERSIST, worker_read,
	    dl);
	event_add(dl->ev, NULL);
	w = xcalloc(1, sizeof(*w));
	w->pid = pid;
	w->job = dl->job;
	w->pipefd = pfd[0];
	w->start = time(NULL);
	w->next = p.workers;
	p.workers = w;
	return 0;
}

static void
parent_deliver(struct rec_reader *rd, int msgfd)
{
	struct deliver_req d;
	struct delivery *dl = NULL;
	char why[1024];
	const char *bad;

	if (deliver_req_parse(rd, &d) == -1) {
		log_warnx("event=deliver result=error reason=\"malformed "
		    "request from queue\"");
		goto out;
	}
	dl = xcalloc(1, sizeof(*dl));
	dl->job = d.job;
	dl->msgfd = msgfd;
	msgfd = -1;
	dl->pipefd = -1;
	dl->sender = xstrdup(d.sender);
	dl->orcpt = xstrdup(d.orcpt);
	dl->junk = d.junk;
	dl->id = xstrdup(d.id);
	buf_init(&dl->out);
	buf_init(&dl->fwd);
	if (dl->msgfd < 0)
		bad = "no message";
	else
		bad = deliver_check(&d, dl, why, sizeof(why));
	if (bad == NULL && delivery_start(dl, why, sizeof(why)) == -1)
		bad = why;
	if (bad) {
		log_warnx("q=%s event=deliver result=refused reason=\"%s\" "
		    "kind=\"%s\" user=\"%s\"", d.id, log_q(bad), log_q(d.kind),
		    log_q(d.user));
		deliver_reply(d.job, 1, bad, NULL);
		delivery_free(dl);
		goto out;
	}
	dl->next = deliveries;
	deliveries = dl;
out:
	if (msgfd >= 0)
		close(msgfd);
	deliver_req_free(&d);
}

/* A worker's report (it ran as the account: untrusted, checked here). */
static void
worker_report(struct delivery *dl, char *text, size_t textlen, int *self,
    struct buf *fwd)
{
	struct rec_reader rd;
	struct rec r;
	char *s;
	size_t nfwd = 0;
	uint64_t v;

	text[0] = '\0';
	*self = 0;
	rec_reader_init(&rd, dl->out.data ? dl->out.data : "", dl->out.len);
	while (rec_next(&rd, &r) == 1) {
		if (r.tag == T_TEXT && text[0] == '\0' &&
		    (s = rec_str(&r, 4000)) != NULL) {
			log_sanitize(text, s, textlen);
			free(s);
		} else if (r.tag == T_SELF && rec_u64(&r, &v) == 0)
			*self = v != 0;
		else if (r.tag == T_FORWARD && nfwd < FORWARD_MAX &&
		    (s = rec_str(&r, FORWARD_ADDR_MAX)) != NULL) {
			if (deliver_plain(s, FORWARD_ADDR_MAX) &&
			    strchr(s, '@') && !strchr(s, ' ')) {
				rec_put_str(fwd, T_FORWARD, s);
				nfwd++;
			}
			free(s);
		}
	}
}

/* The ~/.forward stage is done: on to the mailbox, or report. */
static int
delivery_next(struct delivery *dl, int st, const char *text, int self,
    struct buf *fwd)
{
	char why[1024];

	if (dl->stage != DS_FORWARD || st != 0 || !self)
		return 0;
	str_copy(dl->note, text, sizeof(dl->note));
	buf_reset(&dl->fwd);
	buf_append(&dl->fwd, fwd->data ? fwd->data : "", fwd->len);
	dl->stage = DS_MAILBOX;
	/*
	 * Stopping, the queue waits for this outcome: the .forward stage's
	 * commands and files are done, and a refusal would do them again.
	 */
	if (p.queue.ipc == NULL)
		str_copy(why, "the queue process is gone", sizeof(why));
	else if (delivery_start(dl, why, sizeof(why)) == 0)
		return 1;
	deliver_reply(dl->job, 1, why, NULL);
	return -1;
}

/* A stage of the delivery ended: on to the mailbox stage, or report. */
static void
delivery_end(struct delivery *dl, int st, const char *text, int self,
    struct buf *fwd)
{
	char all[2100];
	int next;

	if ((next = delivery_next(dl, st, text, self, fwd)) == 1)
		return;		/* the mailbox worker runs now */
	if (next == 0) {
		/* Closed before the report: the queue reuses a message's
		   file only when nobody holds it open any more. */
		if (dl->msgfd >= 0)
			close(dl->msgfd);
		dl->msgfd = -1;
		if (dl->stage == DS_MAILBOX && dl->note[0])
			snprintf(all, sizeof(all), "%s; %s", text[0] ? text :
			    "delivery failed", dl->note);
		else
			str_copy(all, text[0] ? text : st ? "delivery failed" :
			    "delivered", sizeof(all));
		/* Forwarded copies only with a delivery that is whole. */
		deliver_reply(dl->job, st, all, st != 0 ? NULL :
		    dl->stage == DS_FORWARD ? fwd : &dl->fwd);
	}
	delivery_free(dl);
}

/* A local worker's outcome; one that died before it answered: retry. */
static void
delivery_pooled_done(void *arg, int code, const char *text)
{
	struct buf none;
	int st = code == MDA_OK ? 0 : code == MDA_PERM ? 2 : 1;

	buf_init(&none);
	delivery_end(arg, st, text, 0, &none);
}

/*
 * A Maildir delivery goes to the account's long-lived worker
 * (smtpd/lworker.c) after the same checks as a forked one; -1: fork one.
 */
static int
delivery_pooled(struct delivery *dl)
{
	struct lw_account a = { dl->runas, dl->uid, dl->gid, dl->mailgid };
	long long idle = conf_num(p.conf, NULL, K_LOCAL_WORKER_IDLE);
	struct lw_req q;
	char dir[4096];
	int rc;

	if (dl->stage != DS_MAILBOX || dl->t->kind != TG_MAILDIR ||
	    idle <= 0 || idle > INT_MAX)
		return -1;
	q.msgfd = dl->msgfd;
	q.md = worker_enter_maildir(dl, dir, sizeof(dir), &q.dirfd);
	q.shown = dl->t->path;
	q.sender = dl->sender;
	q.rcpt = dl->t->rcpt;
	q.qid = dl->id;
	q.junk = dl->junk;
	rc = lworker_deliver(&a, &q, (int)idle, delivery_pooled_done, dl);
	if (q.dirfd >= 0)
		close(q.dirfd);
	if (rc == 0)
		dl->pid = 0;
	return rc;
}

static int
worker_reaped(pid_t pid, int status)
{
	struct worker **pp, *w;
	struct delivery *dl;
	char text[1024];
	struct buf fwd;
	int st, self;

	for (pp = &p.workers; (w = *pp) != NULL; pp = &w->next)
		if (w->pid == pid)
			break;
	if (w == NULL)
		return 0;
	*pp = w->next;
	for (dl = deliveries; dl; dl = dl->next)
		if (dl->pid == pid)
			break;
	if (dl) {
		worker_read(w->pipefd, EV_READ, dl);
		if (dl->ev)
			event_free(dl->ev);
		dl->ev = NULL;
		dl->pipefd = -1;
	}
	close(w->pipefd);
	/* Only the agents' own permanent verdict is permanent: a worker that
	   crashed or was killed is retried. */
	if (WIFEXITED(status) && WEXITSTATUS(status) == MDA_OK)
		st = 0;
	else if (WIFEXITED(status) && WEXITSTATUS(status) == MDA_PERM)
		st = 2;
	else
		st = 1;
	if (dl == NULL) {
		deliver_reply(w->job, st, "delivery failed", NULL);
		free(w);
		return 1;
	}
	free(w);
	buf_init(&fwd);
	worker_report(dl, text, sizeof(text), &self, &fwd);
	if (WIFSIGNALED(status))
		snprintf(text, sizeof(text), "delivery worker killed by signal "
		    "%d", WTERMSIG(status));
	delivery_end(dl, st, text, self, &fwd);
	buf_free(&fwd);
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
	/* A long-lived worker only writes Maildirs: far shorter. */
	lworker_watchdog(now, (time_t)(conf_num(p.conf, NULL,
	    K_LOCAL_WORKER_TIMEOUT) / 1000));
}

/* ---- children ------------------------------------------------------------------- */

static void	parent_child_msg(struct ipc *, int, struct rec_reader *, int,
		    void *);
static void	parent_child_closed(struct ipc *, void *);

#define PARENT_CONF_CHUNK	(128 * 1024)	/* config text per message */

/*
 * fork and exec ternd itself as the role, with descriptors 0-2 and its
 * channel (PROC_PARENT_FD) alone: nothing of the parent (its event loop,
 * its signal pipe, the other channels, the secrets in its memory) reaches
 * the role.  What the role needs follows over the channel.
 */
static pid_t
parent_exec(struct child *ch)
{
	char *argv[] = { "ternd", "-X", (char *)ch->role, NULL };
	int pair[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == -1) {
		log_warnx("event=spawn result=error role=%s reason=\"socketpair: "
		    "%s\"", ch->role, strerror(errno));
		return -1;
	}
	if ((pid = parent_safe_fork()) == -1) {
		log_warnx("event=spawn result=error role=%s reason=\"%s\"",
		    ch->role, strerror(errno));
		close(pair[0]);
		close(pair[1]);
		return -1;
	}
	if (pid == 0) {
		if (pair[1] == PROC_PARENT_FD)
			fcntl(pair[1], F_SETFD, 0);
		else if (dup2(pair[1], PROC_PARENT_FD) == -1)
			_exit(127);
		close_range(PROC_PARENT_FD + 1, ~0U, 0);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(pair[1]);
	if (ch->ipc)
		ipc_free(ch->ipc);
	ch->ipc = ipc_new(p.base, pair[0], parent_child_msg,
	    parent_child_closed, ch);
	ch->pid = pid;
	ch->started = time(NULL);
	ch->sysnr = -1;
	log_info("event=spawn result=ok role=%s pid=%d", ch->role, (int)pid);
	return pid;
}

/* Identity and (for smtp and queue) the config text, in chunks. */
/* The smtp process learns each DKIM key's facts, never the key. */
static void
parent_dkim_public(struct buf *b)
{
	struct dkim_keyinfo ki;
	struct buf one;
	size_t i;

	buf_init(&one);
	for (i = 0; i < p.conf->ndkimkeys; i++) {
		const struct dkimkey *k = &p.conf->dkimkeys[i];

		memset(&ki, 0, sizeof(ki));
		str_copy(ki.domain, k->domain, sizeof(ki.domain));
		str_copy(ki.selector, k->selector, sizeof(ki.selector));
		ki.alg = k->alg;
		ki.siglen = k->siglen;
		buf_reset(&one);
		dkim_keyinfo_format(&ki, &one);
		rec_put_str(b, T_DKIM, one.data);
	}
	buf_free(&one);
}

static void
parent_send_init(struct child *ch, int with_conf)
{
	size_t off = 0, n;
	struct buf b;

	do {
		buf_init(&b);
		if (off == 0) {
			rec_put_u64(&b, T_FLAGS, (p.foreground ?
			    ROLE_F_FOREGROUND : 0) | (p.verbose ?
			    ROLE_F_VERBOSE : 0));
			rec_put_u64(&b, T_UID, p.root ? p.uid : 0);
			rec_put_u64(&b, T_GID, p.root ? p.gid : 0);
			rec_put_str(&b, T_PATH, proc_basedir);
			if (resolve_self)
				rec_put_str(&b, T_USER, resolve_self);
			if (ch == &p.smtp)
				parent_dkim_public(&b);
		}
		n = with_conf ? p.text.len - off : 0;
		if (n > PARENT_CONF_CHUNK)
			n = PARENT_CONF_CHUNK;
		if (n)
			rec_put(&b, T_CONF, p.text.data + off, n);
		off += n;
		ipc_send(ch->ipc, IMSG_P_INIT, b.data, b.len, -1);
		buf_free(&b);
	} while (off < (with_conf ? p.text.len : 0));
}

/* A descriptor for a role: ours is kept (a copy goes) unless give. */
static void
parent_send_fd(struct child *ch, int type, const char *kind, size_t index,
    int fd, int give)
{
	struct buf b;

	if (!give && (fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) == -1) {
		log_warnx("event=spawn result=error role=%s reason=\"dup: %s\"",
		    ch->role, strerror(errno));
		return;
	}
	buf_init(&b);
	rec_put_str(&b, T_KIND, kind);
	rec_put_u64(&b, T_INDEX, index);
	ipc_send(ch->ipc, type, b.data, b.len, fd);
	buf_free(&b);
}

/* A channel between two running roles; each learns the other's role. */
static void
parent_pair(struct child *a, struct child *b)
{
	int sp[2];

	if (a->ipc == NULL || b->ipc == NULL)
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) == -1) {
		log_warnx("event=spawn result=error reason=\"socketpair: %s\"",
		    strerror(errno));
		return;
	}
	parent_send_fd(a, IMSG_P_PEER, b->role, 0, sp[0], 1);
	parent_send_fd(b, IMSG_P_PEER, a->role, 0, sp[1], 1);
}

/*
 * What the vault holds: the SRS key, the SRS domain, each route's auth
 * file with its user and password, and each account of the credential
 * store with its hash (all read by the parent, as root).
 */
static void
parent_secrets(struct buf *b)
{
	size_t i;

	for (i = 0; i < p.ncreds; i++) {
		rec_put_str(b, T_ACCOUNT, p.creds[i].name);
		rec_put_str(b, T_HASH, p.creds[i].hash);
		rec_put_u64(b, T_LOCKED, (uint64_t)p.creds[i].locked);
	}

	rec_put(b, T_KEY, p.srskey, p.srskeylen);
	rec_put_u64(b, T_KNOWN, (uint64_t)conf_num(p.conf, NULL,
	    K_AUTH_KNOWN_CLIENTS) / 1000);
	rec_put_str(b, T_DOMAIN, conf_str(p.conf, K_SRS_DOMAIN));
	for (i = 0; i < p.conf->nroutes; i++) {
		const struct route *r = &p.conf->routes[i];

		if (r->authfile == NULL || r->authuser == NULL)
			continue;
		rec_put_str(b, T_PATH, r->authfile);
		rec_put_str(b, T_USER, r->authuser);
		rec_put_str(b, T_PASS, r->authpass);
	}
	for (i = 0; i < p.conf->ndkimkeys; i++) {
		const struct dkimkey *k = &p.conf->dkimkeys[i];

		rec_put_str(b, T_DKIM, k->domain);
		rec_put_str(b, T_SELECTOR, k->selector);
		rec_put(b, T_PEM, k->pem, k->pemlen);
	}
}

#define PARENT_CHUNK	(128 * 1024)	/* records per chunked message */

static void
parent_send_chunk(struct ipc *c, int type, const char *data, size_t len,
    int more)
{
	struct buf b;

	buf_init(&b);
	buf_append(&b, data, len);
	if (more)
		rec_put_u64(&b, T_FLAGS, IPC_F_MORE);
	ipc_send(c, type, b.data, b.len, -1);
	explicit_bzero(b.data, b.cap);
	buf_free(&b);
}

/*
 * A payload of records larger than one datagram goes in chunks cut
 * between records, each but the last marked IPC_F_MORE; the receiver
 * applies the whole once the last is in.
 */
static void
parent_send_chunked(struct ipc *c, int type, const struct buf *all)
{
	struct rec_reader rd;
	struct rec r;
	size_t start = 0, prev = 0;

	rec_reader_init(&rd, all->data, all->len);
	while (rec_next(&rd, &r) == 1) {
		if (rd.off - start > PARENT_CHUNK && prev > start) {
			parent_send_chunk(c, type, all->data + start,
			    prev - start, 1);
			start = prev;
		}
		prev = rd.off;
	}
	parent_send_chunk(c, type, all->data + start, all->len - start, 0);
}

static void
parent_send_secrets(struct child *ch)
{
	struct buf b;

	buf_init(&b);
	parent_secrets(&b);
	parent_send_chunked(ch->ipc, IMSG_P_SECRETS, &b);
	if (b.cap)
		explicit_bzero(b.data, b.cap);
	buf_free(&b);
}

/* The store's virtual accounts, names only, for RCPT and delivery. */
static void
parent_send_accounts(struct child *ch)
{
	struct buf b;
	size_t i;

	if (ch->ipc == NULL)
		return;
	buf_init(&b);
	for (i = 0; i < p.ncreds; i++)
		if (credstore_is_virtual(p.creds[i].name))
			rec_put_str(&b, T_ACCOUNT, p.creds[i].name);
	parent_send_chunked(ch->ipc, IMSG_P_ACCOUNTS, &b);
	buf_free(&b);
}

/* The smtp process's certificate chain and key, as PEM text. */
static void
parent_send_tls(struct child *ch)
{
	struct buf b;

	buf_init(&b);
	certs_records(&p.certs, &b);
	ipc_send(ch->ipc, IMSG_P_TLS, b.data, b.len, -1);
	if (b.data)
		explicit_bzero(b.data, b.cap);
	buf_free(&b);
}

static void
parent_send_role(struct child *ch)
{
	size_t i;

	if (ch == &p.vault) {
		parent_send_init(ch, 0);
		parent_send_secrets(ch);
		parent_pair(ch, &p.smtp);
		parent_pair(ch, &p.queue);	/* ternctl auth */
	} else if (ch == &p.queue) {
		parent_send_init(ch, 1);
		parent_send_accounts(ch);
		parent_send_fd(ch, IMSG_P_FD, FD_CONTROL, 0, p.ctlfd, 0);
		parent_pair(ch, &p.smtp);
		parent_pair(ch, &p.vault);
	} else {
		parent_send_init(ch, 1);
		parent_send_accounts(ch);
		parent_send_tls(ch);
		for (i = 0; i < p.nls; i++)
			parent_send_fd(ch, IMSG_P_FD, FD_LISTENER,
			    p.ls[i].listener, p.ls[i].fd, 0);
		if (p.submitfd >= 0)
			parent_send_fd(ch, IMSG_P_FD, FD_SUBMIT, 0,
			    p.submitfd, 0);
		parent_pair(ch, &p.queue);
		parent_pair(ch, &p.vault);
	}
	ipc_send(ch->ipc, IMSG_P_GO, NULL, 0, -1);
}

static void
parent_spawn(struct child *ch)
{
	if (parent_exec(ch) > 0)
		parent_send_role(ch);
}

/*
 * A role's last word before SIGSYS: the system call its filter refused.
 * Kept until the role is seen dead of SIGSYS; only then logged, so a
 * role cannot make the parent say anything by sending one.
 */
static void
parent_seccomp(struct child *ch, struct rec_reader *rd)
{
	struct rec r;
	uint64_t nr = 0;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_CODE)
			rec_u64(&r, &nr);
	ch->sysnr = nr < 100000 ? (int64_t)nr : -1;
}

static void
parent_seccomp_log(struct child *ch)
{
	char *name = NULL;

	if (ch->sysnr >= 0)
		name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE,
		    (int)ch->sysnr);
	log_warnx("event=seccomp result=killed role=%s pid=%d syscall=%s "
	    "nr=%lld reason=\"system call outside the role's filter\"",
	    ch->role, (int)ch->pid, name ? name : "unknown",
	    (long long)ch->sysnr);
	free(name);
}

/* The store changed (ternctl user): the accounts go to the vault anew. */
static void
parent_creds_reload(evutil_socket_t fd, short ev, void *arg)
{
	p.credlast = time(NULL);
	if (p.stopping || parent_creds(p.conf) == -1)
		return;
	parent_vprefix(p.conf, getpwnam(resolve_vaccount(p.conf)));
	if (p.vault.ipc)
		parent_send_secrets(&p.vault);
	parent_send_accounts(&p.smtp);
	parent_send_accounts(&p.queue);
}

/*
 * The queue passes on ternctl's notice.  It carries nothing, and one
 * re-read a second at most answers any number of them.
 */
static void
parent_creds_notice(void)
{
	struct timeval tv = { 0, 0 };

	if (p.credev == NULL)
		p.credev = evtimer_new(p.base, parent_creds_reload, NULL);
	if (evtimer_pending(p.credev, NULL))
		return;
	if (time(NULL) - p.credlast < 1)
		tv.tv_sec = 1;
	evtimer_add(p.credev, &tv);
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
	if (ch == &p.queue && type == IMSG_P_CREDENTIALS) {
		if (fd >= 0)
			close(fd);
		parent_creds_notice();
		return;
	}
	if (type == IMSG_P_SECCOMP) {
		parent_seccomp(ch, rd);
		if (fd >= 0)
			close(fd);
		return;
	}
	if (fd >= 0)
		close(fd);
	log_warnx("event=ipc result=error reason=\"unexpected message %d\"",
	    type);
}

/*
 * A role's channel failed while the role runs: it sent what no role
 * sends (a malformed datagram) or closed its end.  Such a role is broken
 * or taken over: it is killed, and restarted as after any crash.  A role
 * that is exiting closes its channel too, a moment before SIGCHLD; so the
 * verdict waits a second, and SIGCHLD (which forgets the channel) wins.
 */
static void
parent_channel_check(evutil_socket_t fd, short ev, void *arg)
{
	struct child *ch = arg;

	/* The same channel of the same process: a restarted role's new
	   channel may sit at the freed one's address. */
	if (ch->ipc == NULL || ch->ipc != ch->deadipc || ch->pid <= 0 ||
	    ch->pid != ch->deadpid || p.stopping)
		return;
	log_warnx("event=ipc result=error role=%s pid=%d reason=\"channel "
	    "closed or malformed\" action=kill", ch->role, (int)ch->pid);
	kill(ch->pid, SIGKILL);
}

static void
parent_child_closed(struct ipc *c, void *arg)
{
	struct child *ch = arg;
	struct timeval tv = { 1, 0 };

	if (c != ch->ipc || ch->pid <= 0 || p.stopping)
		return;
	ch->deadipc = c;
	ch->deadpid = ch->pid;
	event_base_once(p.base, -1, EV_TIMEOUT, parent_channel_check, ch, &tv);
}

static void
parent_restart_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct child *ch = arg;

	if (p.stopping)
		return;
	parent_spawn(ch);
}

/* What a dead role sent last (its seccomp report) is still read. */
static void
parent_drain(struct child *ch)
{
	static unsigned char b[IPC_MAX + 4];
	struct rec_reader rd;
	int type, fd, i;
	size_t len;

	for (i = 0; i < 64 && ch->ipc; i++) {
		if (ipc_recv_wait(ipc_fd(ch->ipc), &type, b, sizeof(b), &len,
		    &fd, 0) == -1)
			return;
		if (fd >= 0)
			close(fd);
		rec_reader_init(&rd, b, len);
		if (type == IMSG_P_SECCOMP)
			parent_seccomp(ch, &rd);
	}
}

/* Restart a dead child at once, then with a growing delay if it repeats. */
static void
parent_child_died(struct child *ch, int status)
{
	struct timeval tv = { 0, 0 };

	if (ch->ipc)
		parent_drain(ch);
	if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
		parent_seccomp_log(ch);
	ch->deadipc = NULL;
	ch->deadpid = 0;
	ch->sysnr = -1;
	log_warnx("event=child-exit role=%s pid=%d status=%d%s%s", ch->role,
	    (int)ch->pid, WIFEXITED(status) ? WEXITSTATUS(status) :
	    128 + WTERMSIG(status), WIFSIGNALED(status) &&
	    WTERMSIG(status) == SIGSYS ? " reason=seccomp" : "",
	    p.stopping ? "" : " action=restart");
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
	if (!p.stopping || p.smtp.pid || p.queue.pid || p.vault.pid ||
	    p.oldsmtp)
		return;
	if (p.workers || lworker_count() || maildrop_busy())
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
		if (worker_reaped(pid, status) || lworker_reaped(pid, status) ||
		    maildrop_reaped(pid, status))
			continue;
		if (pid == p.oldsmtp) {
			p.oldsmtp = 0;
			ipc_free(p.oldipc);
			p.oldipc = NULL;
			if (p.stopping && p.vault.pid && !p.smtp.pid)
				kill(p.vault.pid, SIGTERM);
			continue;
		}
		if (pid == p.smtp.pid) {
			parent_child_died(&p.smtp, status);
			/* The vault serves smtp until smtp has gone. */
			if (p.stopping && p.vault.pid && !p.oldsmtp)
				kill(p.vault.pid, SIGTERM);
		} else if (pid == p.queue.pid)
			parent_child_died(&p.queue, status);
		else if (pid == p.vault.pid)
			parent_child_died(&p.vault, status);
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
	if (p.vault.pid)
		kill(p.vault.pid, SIGKILL);
	if (p.oldsmtp)
		kill(p.oldsmtp, SIGKILL);
	for (w = p.workers; w; w = w->next)
		kill(w->pid, SIGKILL);
	lworker_kill();
	maildrop_kill();
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
	maildrop_stop();
	lworker_stop();
	log_info("event=stop reason=\"signal %d\"", (int)sig);
	if (p.oldsmtp)
		kill(p.oldsmtp, SIGTERM);
	if (p.smtp.pid)
		kill(p.smtp.pid, SIGTERM);
	/* It serves smtp until smtp has gone, then waits for deliveries. */
	if (p.queue.pid)
		kill(p.queue.pid, SIGTERM);
	if (!p.smtp.pid && !p.oldsmtp && p.vault.pid)
		kill(p.vault.pid, SIGTERM);
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
	struct certs certs;
	size_t nls;
	char err[1024];
	struct buf b;

	if (p.stopping)
		return;
	buf_init(&text);
	certs_init(&certs);
	if ((c = parent_load(&text, &certs, err, sizeof(err))) == NULL) {
		log_warnx("event=reload result=refused reason=\"%s\"", log_q(err));
		buf_free(&text);
		return;
	}
	if (parent_tls(c, &certs, err, sizeof(err)) == -1 ||
	    parent_listeners(c, p.conf, &ls, &nls, err, sizeof(err)) == -1) {
		log_warnx("event=reload result=refused reason=\"%s\"", log_q(err));
		certs_free(&certs);
		conf_free(c);
		buf_free(&text);
		return;
	}
	/* The new smtp process gets the certificate read just now. */
	certs_free(&p.certs);
	p.certs = certs;
	parent_close_listeners();
	p.ls = ls;
	p.nls = nls;
	conf_free(p.conf);
	p.conf = c;
	maildrop_conf(c);
	buf_free(&p.text);
	p.text = text;
	(void)parent_creds(c);
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
	if (p.vault.ipc)
		parent_send_secrets(&p.vault);
	parent_spawn(&p.smtp);
	if (p.queue.ipc) {
		buf_init(&b);
		rec_put(&b, T_CONF, p.text.data, p.text.len);
		ipc_send(p.queue.ipc, IMSG_P_CONF, b.data, b.len, -1);
		buf_free(&b);
		parent_send_accounts(&p.queue);
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
		/*
		 * Exit 0 only once the daemon is listening with its pidfile;
		 * anything else it sends is why it failed, for the terminal.
		 */
		char msg[2048];
		ssize_t n;

		close(pfd[1]);
		if ((n = read(pfd[0], &c, 1)) == 1 && c == '1')
			_exit(0);
		if (n == 1) {
			(void)!write(STDERR_FILENO, &c, 1);
			while ((n = read(pfd[0], msg, sizeof(msg))) > 0)
				(void)!write(STDERR_FILENO, msg, (size_t)n);
		} else {
			static const char gone[] = "ternd: exited during "
			    "start-up (see the mail log)\n";

			(void)!write(STDERR_FILENO, gone, sizeof(gone) - 1);
		}
		_exit(1);
	}
	close(pfd[0]);
	log_startup(-1);
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
	log_startup(ready_fd);
}

static void
parent_ready(void)
{
	if (ready_fd < 0)
		return;
	log_startup(-1);
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
		static char self[256];

		p.uid = getuid();
		p.gid = getgid();
		/* Virtual mailboxes are this user's too (children inherit). */
		if ((pw = getpwuid(p.uid)) != NULL) {
			str_copy(self, pw->pw_name, sizeof(self));
			resolve_self = self;
		}
		return;
	}
	if ((pw = getpwnam(conf_str(c, K_USER))) == NULL)
		fatalx("event=start result=error reason=\"user %s does not "
		    "exist (rc/deps.sh creates it)\"", log_q(conf_str(c, K_USER)));
	if (pw->pw_uid == 0)
		fatalx("event=start result=error reason=\"user %s is root\"",
		    log_q(conf_str(c, K_USER)));
	p.uid = pw->pw_uid;
	p.gid = pw->pw_gid;
}

/* The smtp process's channel, for the maildrop's pickups. */
static struct ipc *
parent_smtp_channel(void)
{
	return p.stopping ? NULL : p.smtp.ipc;
}

static void
parent_maildrop(void)
{
	struct maildrop_env env;

	env.root = p.root;
	env.uid = p.uid;
	env.gid = p.gid;
	env.fork = parent_safe_fork;
	env.smtp = parent_smtp_channel;
	maildrop_prepare(p.conf, &env);
}

static void
parent_evlog(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_debug("event=libevent msg=\"%s\"", log_q(msg));
}

int
main(int argc, char *argv[])
{
	static char cwd[4096];
	int ch, check = 0, print = 0, embedded = 0;
	char err[1024];
	struct event *ev;
	struct timeval wd = { 5, 0 };

	p.confpath = TERND_CONF;
	p.ctlfd = -1;
	p.submitfd = -1;
	p.smtp.role = "smtp";
	p.queue.role = "queue";
	p.vault.role = "vault";
	while ((ch = getopt(argc, argv, "dDf:nPvX:")) != -1) {
		switch (ch) {
		case 'X':
			if (optind != argc)
				usage();
			role_start(argc, argv, optarg);
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
	certs_init(&p.certs);
	if ((p.conf = parent_load(&p.text, &p.certs, err, sizeof(err))) == NULL) {
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
	if (!p.foreground)
		log_startup(STDERR_FILENO);	/* the terminal, until detached */
	event_set_log_callback(parent_evlog);
	parent_user(p.conf);
	parent_spool(p.conf);
	parent_maildrop();
	parent_reach(p.conf);
	(void)parent_creds(p.conf);
	parent_vdirs(p.conf);
	parent_srs_key(p.conf);
	if (parent_tls(p.conf, &p.certs, err, sizeof(err)) == -1)
		fatalx("event=start result=error reason=\"%s\"", log_q(err));
	if (parent_listeners(p.conf, NULL, &p.ls, &p.nls, err, sizeof(err)) == -1)
		fatalx("event=start result=error reason=\"%s\"", log_q(err));
	if (!p.foreground)
		parent_daemonize();
	p.ctlfd = parent_control(p.conf);
	p.submitfd = parent_submit(p.conf);
	parent_pidfile(p.conf);
	signal(SIGPIPE, SIG_IGN);
	p.base = event_base_new();
	lworker_init(p.base, p.root, parent_safe_fork);
	parent_spawn(&p.vault);
	parent_spawn(&p.queue);
	parent_spawn(&p.smtp);
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
	maildrop_start(p.base, p.conf);
	log_info("event=start result=ok pid=%d config=%s", (int)getpid(),
	    p.confpath ? p.confpath : "(embedded)");
	parent_ready();
	event_base_dispatch(p.base);
	return 0;
}
