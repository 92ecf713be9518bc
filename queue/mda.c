/*
 * mda: local delivery into a Maildir, an mbox file, or a command.  Runs in
 * a short-lived worker the parent forks and drops to the account it chose
 * (never root), reading the spooled message through the descriptor the
 * queue process passed along.
 *
 * Maildir: tmp/, fsync, link into new/, fsync new/; files a killed
 * delivery left in tmp/ go after 36 hours.  mbox (the account's
 * spool file, or a /file target): a dotlock and an fcntl lock, a From_
 * line, mboxrd quoting, fsync; on any error the file is cut back to its
 * old size, so no half message remains.  |command: /bin/sh -c with a clean
 * environment, in its own process group, killed at the deadline; its exit
 * status decides (0 sent, 75 deferred, other failed, a signal deferred).
 * Every delivery is durable before it is reported.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <sys/prctl.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "lib/log.h"
#include "queue/mda.h"
#include "lib/proc.h"
#include "lib/util.h"

#define EX_OK_		0
#define EX_TEMPFAIL_	75
#define EX_CANTCREAT_	73

#define MDA_TMP_STALE	(36 * 3600)	/* the Maildir convention */
#define MDA_TMP_SCAN	(8 * 3600)	/* between two looks into a tmp/ */

/*
 * mkdir, and the directory holding the new one synced: a delivery into
 * it is reported done only once all of it would survive a crash.  -1
 * with errno (EEXIST: it was there, nothing to sync).
 */
static int
mda_mkdir(const char *path)
{
	char up[4096];
	const char *slash = strrchr(path, '/');
	int fd, rc, e;

	if (mkdir(path, 0700) == -1)
		return -1;
	if (slash == NULL)
		str_copy(up, ".", sizeof(up));
	else if (slash == path)
		str_copy(up, "/", sizeof(up));
	else if ((size_t)(slash - path) < sizeof(up)) {
		memcpy(up, path, (size_t)(slash - path));
		up[slash - path] = '\0';
	} else {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(up, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	rc = fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* mkdir -p, each created level 0700. */
static int
mda_mkdirs(const char *path)
{
	char tmp[4096];
	size_t i, len = strlen(path);

	if (len == 0 || len >= sizeof(tmp))
		return -1;
	memcpy(tmp, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		tmp[i] = '\0';
		if (mda_mkdir(tmp) == -1 && errno != EEXIST)
			return -1;
		tmp[i] = path[i];
	}
	return 0;
}

static int
mda_prepare(const char *md, char *err, size_t errlen)
{
	static const char *sub[] = { "tmp", "new", "cur" };
	char p[4096];
	size_t i;

	for (i = 0; i < 3; i++) {
		if (snprintf(p, sizeof(p), "%s/%s", md, sub[i]) >= (int)sizeof(p) ||
		    (mda_mkdir(p) == -1 && errno != EEXIST &&
		    mda_mkdirs(p) == -1)) {
			snprintf(err, errlen, "cannot create %s: %s", p,
			    strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Copy the spooled CRLF message as LF lines after our trace headers. */
static int
mda_copy(int in, int out, const char *hdr, size_t *size)
{
	char ib[65536], ob[65536 + 8];
	size_t o = 0, hl = strlen(hdr);
	ssize_t n;
	int cr = 0;
	off_t off = 0;

	if (fd_write_all(out, hdr, hl) == -1)
		return -1;
	*size = hl;
	while ((n = pread(in, ib, sizeof(ib), off)) > 0) {
		ssize_t i;

		off += n;
		for (i = 0; i < n; i++) {
			if (cr && ib[i] != '\n')
				ob[o++] = '\r';
			cr = ib[i] == '\r';
			if (!cr)
				ob[o++] = ib[i];
			if (o >= sizeof(ob) - 4) {
				if (fd_write_all(out, ob, o) == -1)
					return -1;
				*size += o;
				o = 0;
			}
		}
	}
	if (n == -1)
		return -1;
	if (cr)
		ob[o++] = '\r';
	if (o && fd_write_all(out, ob, o) == -1)
		return -1;
	*size += o;
	return 0;
}

/* Untouched (neither read nor written) for 36 hours: garbage. */
static int
mda_tmp_stale(int dirfd, const char *name, time_t now)
{
	struct stat st;
	time_t t;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    S_ISDIR(st.st_mode))
		return 0;
	t = st.st_mtime > st.st_atime ? st.st_mtime : st.st_atime;
	return t < now - MDA_TMP_STALE;
}

/*
 * A delivery killed between tmp/ and new/ leaves its file in tmp/, where
 * no reader ever looks.  Looking costs a readdir and a stat per entry, so
 * tmp/ is looked at only when its atime says nobody did for MDA_TMP_SCAN
 * hours (as Dovecot does); the look sets the atime itself, so this holds
 * on a noatime mount too.  In between, the cost is one fstat of a
 * directory the delivery is about to write in anyway.
 */
static void
mda_tmp_clean(const char *md, const char *shown, const char *qid)
{
	const struct timespec ts[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } };
	time_t now = time(NULL);
	char path[4096];
	struct dirent *de;
	struct stat st;
	int fd, removed = 0;
	DIR *d;

	if (snprintf(path, sizeof(path), "%s/tmp", md) >= (int)sizeof(path) ||
	    (fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC)) == -1)
		return;
	/* An atime in the future (the clock went back) is not trusted. */
	if (fstat(fd, &st) == -1 || (st.st_atime > now - MDA_TMP_SCAN &&
	    st.st_atime <= now + 60) || (d = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") &&
		    mda_tmp_stale(dirfd(d), de->d_name, now) &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	(void)futimens(dirfd(d), ts);
	closedir(d);
	if (removed)
		log_info("q=%s event=maildir-clean result=ok removed=%d "
		    "dir=\"%s/tmp\"", qid, removed, log_q(shown));
}

/* DMARC quarantine: md/.Junk when it is a directory of its own. */
int
mda_junk(const char *md, char *out, size_t cap)
{
	struct stat st;

	if ((size_t)snprintf(out, cap, "%s/.Junk", md) >= cap ||
	    lstat(out, &st) == -1 || !S_ISDIR(st.st_mode))
		return 0;
	return 1;
}

/*
 * The first half of a Maildir delivery: the message written to tmp/,
 * not yet synced; put holds the file and its names for mda_maildir_link.
 */
int
mda_maildir_write(int msgfd, const char *md, const char *shown,
    const char *sender, const char *rcpt, const char *qid,
    struct mda_put *put, char *err, size_t errlen)
{
	static unsigned int seq;	/* a worker delivers many */
	static char host[256];		/* a worker delivers many */
	char name[512], final[4200], hdr[2048];
	struct timeval tv;
	size_t size;
	int fd;

	put->fd = -1;
	put->md = md;
	put->shown = shown;
	/* tmp/ is looked at first: made only when it is not there. */
	mda_tmp_clean(md, shown, qid);
	if (host[0] == '\0') {
		if (gethostname(host, sizeof(host) - 1) == -1 || !host[0])
			str_copy(host, "localhost", sizeof(host));
		for (char *p = host; *p; p++)
			if (*p == '/' || *p == ':')
				*p = '_';
	}
	gettimeofday(&tv, NULL);
	snprintf(name, sizeof(name), "%lld.M%06ldP%dN%uQ%s.%s",
	    (long long)tv.tv_sec, (long)tv.tv_usec, (int)getpid(), ++seq, qid,
	    host);
	if (snprintf(put->tmp, sizeof(put->tmp), "%s/tmp/%s", md, name) >=
	    (int)sizeof(put->tmp)) {
		snprintf(err, errlen, "maildir path too long");
		return EX_CANTCREAT_;
	}
	fd = open(put->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1 && errno == ENOENT) {
		if (mda_prepare(md, err, errlen) == -1)
			return EX_TEMPFAIL_;
		fd = open(put->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		    0600);
	}
	if (fd == -1) {
		snprintf(err, errlen, "cannot create %s/tmp/%s: %s", shown, name,
		    strerror(errno));
		return EX_TEMPFAIL_;
	}
	snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\nDelivered-To: %s\n",
	    sender, rcpt);
	if (mda_copy(msgfd, fd, hdr, &size) == -1) {
		snprintf(err, errlen, "write %s/tmp/%s: %s", shown, name,
		    fd_strerror(errno));
		close(fd);
		unlink(put->tmp);
		return EX_TEMPFAIL_;
	}
	snprintf(final, sizeof(final), "%s,S=%zu", name, size);
	if (snprintf(put->new, sizeof(put->new), "%s/new/%s", md, final) >=
	    (int)sizeof(put->new)) {
		snprintf(err, errlen, "maildir path too long");
		close(fd);
		unlink(put->tmp);
		return EX_CANTCREAT_;
	}
	put->fd = fd;
	return EX_OK_;
}

/*
 * The second half: unless the caller has synced the file already (one
 * syncfs for a batch), fsync it; then link it into new/.  Everything but
 * the fsync of new/, which the caller does (once for several deliveries
 * into the same Maildir, in a local worker); on success *newdir is new/,
 * open for that fsync.  The file is closed either way.
 */
int
mda_maildir_link(struct mda_put *put, int synced, int *newdir, char *err,
    size_t errlen)
{
	char dir[4096];
	int dfd, rc;

	*newdir = -1;
	if (!synced && fsync(put->fd) == -1) {
		snprintf(err, errlen, "write %s: %s", put->tmp,
		    fd_strerror(errno));
		close(put->fd);
		put->fd = -1;
		unlink(put->tmp);
		return EX_TEMPFAIL_;
	}
	close(put->fd);
	put->fd = -1;
	rc = link(put->tmp, put->new);
	if (rc == -1 && errno == ENOENT &&
	    mda_prepare(put->md, err, errlen) == 0)
		rc = link(put->tmp, put->new);	/* new/ was gone: made again */
	if (rc == -1 && rename(put->tmp, put->new) == -1) {
		snprintf(err, errlen, "link %s/new/%s: %s", put->shown,
		    strrchr(put->new, '/') + 1, strerror(errno));
		unlink(put->tmp);
		return EX_TEMPFAIL_;
	}
	unlink(put->tmp);
	(void)!snprintf(dir, sizeof(dir), "%s/new", put->md);
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "fsync %s/new: %s", put->shown,
		    strerror(errno));
		return EX_TEMPFAIL_;
	}
	*newdir = dfd;
	snprintf(err, errlen, "delivered to maildir %s", put->shown);
	return EX_OK_;
}

/* Both halves for one message. */
int
mda_maildir_put(int msgfd, const char *md, const char *shown,
    const char *sender, const char *rcpt, const char *qid, int *newdir,
    char *err, size_t errlen)
{
	struct mda_put put;
	int code;

	*newdir = -1;
	code = mda_maildir_write(msgfd, md, shown, sender, rcpt, qid, &put,
	    err, errlen);
	return code != EX_OK_ ? code : mda_maildir_link(&put, 0, newdir, err,
	    errlen);
}

int
mda_maildir(int msgfd, const char *md, const char *shown, const char *sender,
    const char *rcpt, const char *qid, char *err, size_t errlen)
{
	int code, dfd;

	code = mda_maildir_put(msgfd, md, shown, sender, rcpt, qid, &dfd, err,
	    errlen);
	if (code != EX_OK_)
		return code;
	if (fsync(dfd) == -1) {
		snprintf(err, errlen, "fsync %s/new: %s", shown, strerror(errno));
		close(dfd);
		return EX_TEMPFAIL_;
	}
	close(dfd);
	return EX_OK_;
}

/* ---- the message as a stream of lines ----------------------------------- */

struct mstream {
	int	 flags;
	int	(*put)(void *, const char *, size_t);
	void	*arg;
	char	 out[65536];
	size_t	 olen;
	char	 line[16384];
	size_t	 llen;
	int	 first;		/* line[] holds the start of a line */
	int	 ended;		/* the last thing written ends a line */
};

static int
ms_flush(struct mstream *m)
{
	if (m->olen && m->put(m->arg, m->out, m->olen) == -1)
		return -1;
	m->olen = 0;
	return 0;
}

static int
ms_out(struct mstream *m, const char *p, size_t n)
{
	size_t k;

	while (n > 0) {
		k = sizeof(m->out) - m->olen;
		if (k > n)
			k = n;
		memcpy(m->out + m->olen, p, k);
		m->olen += k;
		p += k;
		n -= k;
		if (m->olen == sizeof(m->out) && ms_flush(m) == -1)
			return -1;
	}
	return 0;
}

/* Write line[]: a whole line (eol) or a piece of a very long one. */
static int
ms_line(struct mstream *m, int eol)
{
	const char *l = m->line;
	size_t n = m->llen, i = 0;

	if (m->first && (m->flags & MS_FROMQUOTE)) {
		while (i < n && l[i] == '>')
			i++;
		if (n - i >= 5 && memcmp(l + i, "From ", 5) == 0 &&
		    ms_out(m, ">", 1) == -1)
			return -1;
	}
	if (m->first && (m->flags & MS_DOTSTUFF) && n && l[0] == '.' &&
	    ms_out(m, ".", 1) == -1)
		return -1;
	if (ms_out(m, l, n) == -1)
		return -1;
	if (eol && ms_out(m, (m->flags & MS_LF) ? "\n" : "\r\n",
	    (m->flags & MS_LF) ? 1 : 2) == -1)
		return -1;
	if (n || eol)
		m->ended = eol;
	m->first = eol;
	m->llen = 0;
	return 0;
}

static int
ms_byte(struct mstream *m, char c)
{
	if (c == '\n') {
		if (m->llen && m->line[m->llen - 1] == '\r')
			m->llen--;
		return ms_line(m, 1);
	}
	if (m->llen == sizeof(m->line)) {
		/* Keep a CR at the cut: it may be the CR of a CRLF. */
		int cr = m->line[m->llen - 1] == '\r';

		m->llen -= (size_t)cr;
		if (ms_line(m, 0) == -1)
			return -1;
		if (cr)
			m->line[m->llen++] = '\r';
	}
	m->line[m->llen++] = c;
	return 0;
}

int
mda_stream(int msgfd, const char *hdr, int flags,
    int (*put)(void *, const char *, size_t), void *arg)
{
	struct mstream *m = xcalloc(1, sizeof(*m));
	char ib[65536];
	off_t off = 0;
	ssize_t n, i;
	int r = -1;

	m->flags = flags;
	m->put = put;
	m->arg = arg;
	m->first = m->ended = 1;
	if (hdr && ms_out(m, hdr, strlen(hdr)) == -1)
		goto out;
	while ((n = pread(msgfd, ib, sizeof(ib), off)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto out;
		off += n;
		for (i = 0; i < n; i++)
			if (ms_byte(m, ib[i]) == -1)
				goto out;
	}
	if (m->llen && ms_line(m, 0) == -1)
		goto out;
	if ((flags & MS_FINALEOL) && !m->ended &&
	    ms_out(m, (flags & MS_LF) ? "\n" : "\r\n", (flags & MS_LF) ? 1 : 2)
	    == -1)
		goto out;
	r = ms_flush(m);
out:
	free(m);
	return r;
}

/* ---- mbox: the account's spool file, and /file targets ------------------ */

#define MBOX_LOCK_TRIES		60	/* half seconds, for each lock */
#define MBOX_LOCK_STALE		300	/* seconds before a dotlock is stale */

enum mbox_how { MBOX_SPOOL, MBOX_FILE };

static int
fd_put(void *arg, const char *p, size_t n)
{
	return fd_write_all(*(int *)arg, p, n);
}

static void
mda_nap(void)
{
	struct timespec ts = { 0, 500 * 1000 * 1000 };

	nanosleep(&ts, NULL);
}

/*
 * Open (or create, 0600) a mailbox without following a link, and check
 * what it is: a regular file with one link, the same file the name still
 * names; a spool mailbox must be ours, a /file must not be group or world
 * writable.
 */
static int
mbox_open(const char *path, enum mbox_how how, char *err, size_t errlen)
{
	const int fl = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
	struct stat st, lst;
	const char *why = NULL;
	int fd = -1, tries;

	for (tries = 0; fd == -1 && tries < 3; tries++) {
		if ((fd = open(path, fl)) == -1 && errno == ENOENT)
			fd = open(path, fl | O_CREAT | O_EXCL, 0600);
		if (fd == -1 && errno != ENOENT && errno != EEXIST)
			break;
	}
	if (fd == -1) {
		snprintf(err, errlen, "cannot open %s: %s", path, errno == ELOOP ?
		    "it is a symbolic link" : strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1 || lstat(path, &lst) == -1)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	else if (st.st_dev != lst.st_dev || st.st_ino != lst.st_ino)
		why = "replaced while being opened";
	else if (st.st_nlink != 1)
		why = "it has more than one hard link";
	else if (how == MBOX_SPOOL && st.st_uid != getuid())
		why = "owned by another user";
	else if (how == MBOX_FILE && (st.st_mode & (S_IWGRP | S_IWOTH)))
		why = "group or world writable";
	if (why) {
		snprintf(err, errlen, "refusing to write %s: %s", path, why);
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * <file>.lock, made with O_EXCL; one older than 5 minutes is stale.  A
 * directory we may not write in gets no dotlock: the fcntl lock does.
 */
static int
mbox_dotlock(const char *lock, int *held, char *err, size_t errlen)
{
	struct stat st;
	char pid[32];
	int fd, i;

	*held = 0;
	for (i = 0; i < MBOX_LOCK_TRIES; i++) {
		fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
		if (fd >= 0) {
			snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
			(void)!write(fd, pid, strlen(pid));
			close(fd);
			*held = 1;
			return 0;
		}
		if (errno == EACCES || errno == EPERM || errno == EROFS)
			return 0;
		if (errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s: %s", lock,
			    strerror(errno));
			return -1;
		}
		if (lstat(lock, &st) == 0 &&
		    time(NULL) - st.st_mtime > MBOX_LOCK_STALE) {
			unlink(lock);
			continue;
		}
		mda_nap();
	}
	snprintf(err, errlen, "mailbox locked: %s exists", lock);
	return -1;
}

static int
mbox_fcntl(int fd, const char *path, char *err, size_t errlen)
{
	struct flock fl;
	int i;

	for (i = 0; i < MBOX_LOCK_TRIES; i++) {
		memset(&fl, 0, sizeof(fl));
		fl.l_type = F_WRLCK;
		fl.l_whence = SEEK_SET;
		if (fcntl(fd, F_SETLK, &fl) == 0)
			return 0;
		if (errno != EAGAIN && errno != EACCES && errno != EINTR) {
			snprintf(err, errlen, "cannot lock %s: %s", path,
			    strerror(errno));
			return -1;
		}
		mda_nap();
	}
	snprintf(err, errlen, "mailbox locked: %s", path);
	return -1;
}

/* The "From sender date" line, trace headers, the message, a blank line. */
static int
mbox_write(int fd, const struct mda_job *j)
{
	char date[64], from[600], hdr[2048];
	time_t now = time(NULL);
	struct tm tm;
	size_t i;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a %b %e %H:%M:%S %Y", &tm);
	str_copy(from, j->sender[0] ? j->sender : "MAILER-DAEMON",
	    sizeof(from));
	for (i = 0; from[i]; i++)
		if ((unsigned char)from[i] <= ' ' || from[i] == 0x7f)
			from[i] = '_';
	snprintf(hdr, sizeof(hdr), "From %s %s\nReturn-Path: <%s>\n"
	    "Delivered-To: %s\n", from, date, j->sender, j->rcpt);
	if (mda_stream(j->msgfd, hdr, MS_LF | MS_FROMQUOTE | MS_FINALEOL,
	    fd_put, &fd) == -1 || fd_put(&fd, "\n", 1) == -1)
		return -1;
	return fsync(fd);
}

static int
mbox_append(const struct mda_job *j, const char *path, enum mbox_how how,
    char *err, size_t errlen)
{
	char lock[4200];
	struct stat st;
	int fd, held = 0, code = MDA_TEMP;

	if (snprintf(lock, sizeof(lock), "%s.lock", path) >= (int)sizeof(lock)) {
		snprintf(err, errlen, "mailbox path too long");
		return MDA_CANTCREAT;
	}
	if ((fd = mbox_open(path, how, err, errlen)) == -1)
		return MDA_TEMP;
	if (mbox_dotlock(lock, &held, err, errlen) == -1 ||
	    mbox_fcntl(fd, path, err, errlen) == -1)
		goto out;
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (mbox_write(fd, j) == -1) {
		snprintf(err, errlen, "write %s: %s", path, fd_strerror(errno));
		/* No half message stays behind. */
		if (ftruncate(fd, st.st_size) == 0)
			(void)fsync(fd);
		goto out;
	}
	snprintf(err, errlen, "delivered to %s %s", how == MBOX_SPOOL ?
	    "mailbox" : "file", path);
	code = MDA_OK;
out:
	close(fd);		/* drops the fcntl lock */
	if (held)
		unlink(lock);
	return code;
}

int
mda_mbox(const struct mda_job *j, const char *path, char *err, size_t errlen)
{
	return mbox_append(j, path, MBOX_SPOOL, err, errlen);
}

int
mda_file(const struct mda_job *j, const char *path, char *err, size_t errlen)
{
	/* The classic "devnull: /dev/null" alias: mail to it is discarded. */
	if (strcmp(path, "/dev/null") == 0) {
		snprintf(err, errlen, "discarded (delivered to /dev/null)");
		return MDA_OK;
	}
	return mbox_append(j, path, MBOX_FILE, err, errlen);
}

/* ---- |command --------------------------------------------------------------- */

struct pipe_io {
	int	 in;		/* the command's stdin; -1 once closed */
	int	 out;		/* its stdout and stderr; -1 at end */
	char	 keep[MDA_OUTPUT_MAX];
	size_t	 nkeep;
	time_t	 deadline;
	int	 timedout;
};

static int
mda_ms_left(time_t deadline, int most)
{
	time_t now = time(NULL);

	if (now >= deadline)
		return 0;
	return deadline - now > most / 1000 ? most : (int)(deadline - now) * 1000;
}

/* Keep the first bytes of the command's output; read and drop the rest. */
static void
pipe_drain(struct pipe_io *io)
{
	char b[4096];
	ssize_t n;
	size_t k;
	int reads = 0;

	/* Bounded: a background process that keeps talking cannot hold us. */
	while (io->out >= 0 && reads++ < 64) {
		n = read(io->out, b, sizeof(b));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			return;
		if (n <= 0) {
			close(io->out);
			io->out = -1;
			return;
		}
		k = sizeof(io->keep) - io->nkeep;
		if (k > (size_t)n)
			k = (size_t)n;
		memcpy(io->keep + io->nkeep, b, k);
		io->nkeep += k;
	}
}

/* Feed the command, reading its output meanwhile so neither side blocks. */
static int
pipe_put(void *arg, const char *p, size_t n)
{
	struct pipe_io *io = arg;
	struct pollfd pf[2];
	ssize_t w;
	int ms;

	while (n > 0 && io->in >= 0) {
		if ((ms = mda_ms_left(io->deadline, 1000)) == 0) {
			io->timedout = 1;
			return -1;
		}
		pf[0].fd = io->in;
		pf[0].events = POLLOUT;
		pf[1].fd = io->out;	/* ignored by poll() when -1 */
		pf[1].events = POLLIN;
		pf[0].revents = pf[1].revents = 0;
		if (poll(pf, 2, ms) == -1 && errno != EINTR)
			return -1;
		if (pf[1].revents)
			pipe_drain(io);
		if (pf[0].revents == 0)
			continue;
		if ((w = write(io->in, p, n)) > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w == -1 && (errno == EAGAIN || errno == EINTR))
			continue;
		else {
			/* It stopped reading: its exit status decides. */
			close(io->in);
			io->in = -1;
		}
	}
	return 0;
}

void
mda_clean(char *dst, size_t dstlen, const char *src, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c == '\n' || c == '\r' || c == '\t' || c == ' ') {
			if (o > 0 && dst[o - 1] != ' ')
				dst[o++] = ' ';
		} else
			dst[o++] = (c > ' ' && c < 0x7f) ? (char)c : '?';
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

static void
pipe_env_add(char **env, size_t *n, const char *name, const char *value)
{
	struct buf b;

	buf_init(&b);
	buf_printf(&b, "%s=%s", name, value ? value : "");
	env[(*n)++] = buf_steal(&b);
}

/* The clean environment: the account and the message's addresses. */
static void
pipe_env(const struct mda_job *j, char **env)
{
	char local[512] = "", *domain, *plus;
	const char *at = strrchr(j->rcpt, '@');
	size_t n = 0;

	str_copy(local, j->rcpt, sizeof(local));
	if (at && (size_t)(at - j->rcpt) < sizeof(local))
		local[at - j->rcpt] = '\0';
	domain = at ? (char *)at + 1 : (char *)"";
	plus = strchr(local, '+');
	pipe_env_add(env, &n, "PATH", "/usr/bin:/bin");
	pipe_env_add(env, &n, "SHELL", "/bin/sh");
	pipe_env_add(env, &n, "HOME", j->home);
	pipe_env_add(env, &n, "USER", j->user);
	pipe_env_add(env, &n, "LOGNAME", j->user);
	pipe_env_add(env, &n, "SENDER", j->sender);
	pipe_env_add(env, &n, "RECIPIENT", j->rcpt);
	pipe_env_add(env, &n, "EXTENSION", plus && plus != local ? plus + 1 :
	    "");
	pipe_env_add(env, &n, "LOCAL", local);
	pipe_env_add(env, &n, "DOMAIN", domain);
	pipe_env_add(env, &n, "ORIGINAL_RECIPIENT", j->orcpt);
	env[n] = NULL;
}

static void __attribute__((noreturn))
pipe_child(int in, int out, const char *cmd, char **env)
{
	char *argv[] = { "sh", "-c", (char *)cmd, NULL };
	sigset_t none;
	int sig, fd;

	setpgid(0, 0);
	if (dup2(in, 0) == -1 || dup2(out, 1) == -1 || dup2(out, 2) == -1)
		_exit(MDA_TEMP);
	if (close_range(3, ~0U, 0) == -1)
		for (fd = 3; fd < 1024; fd++)
			close(fd);
	/* The daemon ignores SIGPIPE; a command gets the usual defaults. */
	for (sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (chdir("/") == -1)
		_exit(MDA_TEMP);
	execve("/bin/sh", argv, env);
	_exit(MDA_TEMP);
}

/* Wait for the command until the deadline, reading what it still says. */
static int
pipe_wait(pid_t pid, struct pipe_io *io)
{
	struct pollfd pf;
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	int status, ms;

	for (;;) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			break;
		if (io->timedout || (ms = mda_ms_left(io->deadline, 200)) == 0) {
			io->timedout = 1;
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		if (io->out >= 0) {
			pf.fd = io->out;
			pf.events = POLLIN;
			if (poll(&pf, 1, ms) > 0)
				pipe_drain(io);
		} else
			nanosleep(&ts, NULL);
	}
	pipe_drain(io);
	return status;
}

static int
pipe_outcome(const char *cmd, int status, struct pipe_io *io, char *err,
    size_t errlen)
{
	char said[MDA_OUTPUT_MAX + 1];

	mda_clean(said, sizeof(said), io->keep, io->nkeep);
	if (io->timedout) {
		snprintf(err, errlen, "command timed out: %s", cmd);
		return MDA_TEMP;
	}
	if (WIFSIGNALED(status)) {
		snprintf(err, errlen, "command killed by signal %d%s%s",
		    WTERMSIG(status), said[0] ? ": " : "", said);
		return MDA_TEMP;
	}
	if (WEXITSTATUS(status) == 0) {
		snprintf(err, errlen, "delivered to command: %s", cmd);
		return MDA_OK;
	}
	snprintf(err, errlen, "command exited %d%s%s%s", WEXITSTATUS(status),
	    WEXITSTATUS(status) == MDA_TEMP ? " (temporary failure)" : "",
	    said[0] ? ": " : "", said);
	return WEXITSTATUS(status) == MDA_TEMP ? MDA_TEMP : MDA_PERM;
}

int
mda_pipe(const struct mda_job *j, const char *cmd, char *err, size_t errlen)
{
	struct pipe_io io;
	char hdr[2048], *env[16];
	int in[2], out[2], status, i, readerr = 0;
	pid_t pid;

	memset(&io, 0, sizeof(io));
	io.deadline = j->deadline;
	if (pipe2(in, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return MDA_TEMP;
	}
	if (pipe2(out, O_CLOEXEC) == -1) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		close(in[0]);
		close(in[1]);
		return MDA_TEMP;
	}
	pipe_env(j, env);
	if ((pid = fork()) == 0)
		pipe_child(in[0], out[1], cmd, env);
	for (i = 0; env[i]; i++)
		free(env[i]);
	close(in[0]);
	close(out[1]);
	if (pid == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(in[1]);
		close(out[0]);
		return MDA_TEMP;
	}
	setpgid(pid, pid);
	io.in = in[1];
	io.out = out[0];
	fcntl(io.in, F_SETFL, O_NONBLOCK);
	fcntl(io.out, F_SETFL, O_NONBLOCK);
	snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\nDelivered-To: %s\n",
	    j->sender, j->rcpt);
	if (mda_stream(j->msgfd, hdr, MS_LF, pipe_put, &io) == -1 &&
	    !io.timedout) {
		/* The command must not take half a message for all of it. */
		snprintf(err, errlen, "cannot read the message: %s",
		    strerror(errno));
		kill(-pid, SIGKILL);
		readerr = 1;
	}
	if (io.in >= 0)
		close(io.in);
	io.in = -1;
	status = pipe_wait(pid, &io);
	if (io.out >= 0)
		close(io.out);
	if (readerr)
		return MDA_TEMP;
	return pipe_outcome(cmd, status, &io, err, errlen);
}
