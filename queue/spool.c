/*
 * spool: the queue process's spool on disk, of which it is the only
 * writer.  It holds the spool's directories and makes every file in them:
 * the message files the smtp process writes into, the publication of
 * their envelopes into queue/ (the group commit calls it, partly from its
 * thread), the message files deliveries and notices read, the envelope
 * updates (at once, or lazily in groups), the removals, and the recovery
 * at start.
 *
 * Spool layout (see docs/ARCHITECTURE.md):
 *   queue/ID.msg     a message; from its first byte (smtp writes it), but
 *                    without its envelope it is not one
 *   queue/ID.env     committed envelope: its presence is the commit point
 *   free/ENNN        an envelope written at commit, before the sync; the
 *                    commit renames it to queue/ID.env
 *   incoming/        empty (spools of earlier versions), emptied at start
 *   corrupt/         envelopes that failed to decode, kept for the admin
 *   free/            spent files, waiting to be used again
 *
 * Files are reused: a removed message's files are moved to free/, and a
 * new message's file is made by moving one back (its envelope is written
 * in place there), written over and cut to its length.  A file made and
 * removed per message costs the filesystem an inode allocation and a
 * release each time (on ext4 without a journal, every allocation skips
 * the inodes released in the last minutes, which made creating a file
 * the queue's largest cost); a rename costs neither.  A message file is
 * reused only when nobody else has it open (a write lease, which the
 * kernel grants only then, proves it): a delivery agent still reading it
 * must never see another message's bytes.  Envelopes never leave this
 * process.
 */
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/envelope.h"
#include "queue/qint.h"
#include "queue/spool.h"

static struct {
	int		 spoolfd, incfd, qfd, freefd;
	struct event	*stateev;	/* lazy envelope updates */
	struct {			/* free/ files by kind: */
		uint64_t	 name[SPOOL_POOL_MAX];
		size_t		 n;
	}		 pool[2];	/* SPOOL_MSG, SPOOL_ENV */
	uint64_t	 nextfree;	/* the next name given to a free file */
	int		 noleases;	/* the kernel refused one: no reuse of
					   message files */
} spool;

/* ---- reused files -------------------------------------------------------- */

/* Message files and envelopes are kept apart: sizes alike, blocks kept. */
enum { SPOOL_MSG, SPOOL_ENV };
static const char spool_kind[2] = { 'M', 'E' };

static void
spool_free_name(char *out, size_t len, int kind, uint64_t n)
{
	snprintf(out, len, "%c%016llX", spool_kind[kind],
	    (unsigned long long)n);
}

/*
 * A file for dir/name, new or reused, opened for writing; name must not
 * exist (EEXIST).  -1 with errno.
 */
static int
spool_take(int dirfd, const char *name, int kind)
{
	char f[24];
	int fd;

	while (spool.pool[kind].n > 0) {
		spool_free_name(f, sizeof(f), kind,
		    spool.pool[kind].name[--spool.pool[kind].n]);
		if (renameat2(spool.freefd, f, dirfd, name,
		    RENAME_NOREPLACE) == -1) {
			if (errno == EEXIST) {	/* still free: back */
				spool.pool[kind].n++;
				return -1;
			}
			continue;	/* gone meanwhile: the next one */
		}
		/* Not truncated: its blocks are written over, and the writer
		   cuts the file where its content ends. */
		if ((fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC |
		    O_NOFOLLOW)) != -1)
			return fd;
		unlinkat(dirfd, name, 0);
		break;
	}
	return openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
	    0600);
}

/*
 * Retire dir/name: moved to free/ when the pool has room, else unlinked.
 * Its blocks stay with it, to be written over (a message file over
 * SPOOL_REUSE_MAX is unlinked: the pool holds little disk).  A file that
 * others may hold open (a message file) is reused only when a write
 * lease shows nobody does.  Either way the name is gone when this
 * returns, unless unlinking it failed too.
 */
static void
spool_give(int dirfd, const char *name, int kind)
{
	int shared = kind == SPOOL_MSG;
	struct stat st;
	char f[24];
	int fd, ok;

	if (spool.pool[kind].n >= SPOOL_POOL_MAX ||
	    (shared && spool.noleases))
		goto unlink;
	if (shared) {
		if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC |
		    O_NOFOLLOW)) == -1)
			goto unlink;
		ok = fstat(fd, &st) == 0 && st.st_size <= SPOOL_REUSE_MAX;
		if (ok && fcntl(fd, F_SETLEASE, F_WRLCK) == -1) {
			ok = 0;
			if (errno != EAGAIN && errno != EBUSY) {
				/* Leases off (fs.leases-enable) or not ours. */
				log_info("event=spool result=warn reason=\"no "
				    "write lease (%s): message files are not "
				    "reused\"", strerror(errno));
				spool.noleases = 1;
			}
		} else if (ok)
			fcntl(fd, F_SETLEASE, F_UNLCK);
		close(fd);
		if (!ok)
			goto unlink;
	}
	spool_free_name(f, sizeof(f), kind, spool.nextfree++);
	if (renameat2(dirfd, name, spool.freefd, f, RENAME_NOREPLACE) == 0) {
		spool.pool[kind].name[spool.pool[kind].n++] =
		    spool.nextfree - 1;
		return;
	}
unlink:
	unlinkat(dirfd, name, 0);
}

/*
 * free/ at start: its files join the pool, as many as it holds.  A file
 * with another name too is not taken: a crash in the middle of a move
 * can leave both names on a filesystem without a journal (fsck keeps
 * both), and the other may be a message.
 */
static int
spool_recover_free(int dirfd, const char *name)
{
	unsigned long long n;
	char f[24], *end;
	struct stat st;
	int kind;

	for (kind = 0; kind < 2; kind++) {
		if (name[0] != spool_kind[kind] || strlen(name) != 17)
			continue;
		n = strtoull(name + 1, &end, 16);
		spool_free_name(f, sizeof(f), kind, n);
		if (*end != '\0' || strcmp(f, name) != 0 || n == 0 ||
		    spool.pool[kind].n >= SPOOL_POOL_MAX ||
		    fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
		    !S_ISREG(st.st_mode) || st.st_nlink != 1)
			break;
		spool.pool[kind].name[spool.pool[kind].n++] = n;
		if (n >= spool.nextfree)
			spool.nextfree = n + 1;
		return 1;
	}
	unlinkat(dirfd, name, 0);
	return 0;
}

/* ---- files --------------------------------------------------------------- */

static int
spool_newid(char id[QID_LEN + 1])
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)rand();
	snprintf(id, QID_LEN + 1, "%08X%08X", (unsigned)time(NULL), r);
	return 0;
}

static const char *
spool_msgname(char name[QID_LEN + 8], const char *id)
{
	snprintf(name, QID_LEN + 8, "%s.msg", id);
	return name;
}

/*
 * A new message's file is queue/ID.msg from the start: without its
 * envelope it is nothing (recovery removes it), and the commit then has
 * one rename less to do.
 */
int
spool_create(char id[QID_LEN + 1])
{
	char name[QID_LEN + 8];
	int fd, tries;

	for (tries = 0; tries < 10; tries++) {
		spool_newid(id);
		fd = spool_take(spool.qfd, spool_msgname(name, id), SPOOL_MSG);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1;
}

/* A message that was not committed: its file, and its envelope if any. */
void
spool_unlink_incoming(const char *id, uint64_t env)
{
	char name[QID_LEN + 8], f[24];

	unlinkat(spool.qfd, spool_msgname(name, id), 0);
	if (env != 0) {
		spool_free_name(f, sizeof(f), SPOOL_ENV, env);
		unlinkat(spool.freefd, f, 0);
	}
}

static int
spool_valid_id(const char *id)
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

/* Write all of b to a new file name in dir (a reused one with reuse);
   0 or -1 with errno. */
static int
spool_write_file(int dirfd, const char *name, const struct buf *b, int sync,
    int reuse)
{
	int fd = -1, e;

	if (reuse)
		fd = spool_take(dirfd, name, SPOOL_ENV);
	if (fd == -1)
		fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC |
		    O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	if (fd_write_all(fd, b->data, b->len) == -1 ||
	    (reuse && ftruncate(fd, (off_t)b->len) == -1))
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

/*
 * A message's envelope before the commit, written in place into a free/
 * file (reused, or new); *env is its number there, which the commit's
 * rename publishes.  0 or -1 with errno (nothing left behind).
 */
int
spool_write_incoming(const struct buf *b, uint64_t *env)
{
	char f[24];
	int fd = -1, e;

	*env = 0;
	while (fd == -1 && spool.pool[SPOOL_ENV].n > 0) {
		*env = spool.pool[SPOOL_ENV].name[--spool.pool[SPOOL_ENV].n];
		spool_free_name(f, sizeof(f), SPOOL_ENV, *env);
		fd = openat(spool.freefd, f, O_WRONLY | O_CLOEXEC |
		    O_NOFOLLOW);
	}
	if (fd == -1) {
		*env = spool.nextfree++;
		spool_free_name(f, sizeof(f), SPOOL_ENV, *env);
		fd = openat(spool.freefd, f, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0600);
	}
	if (fd == -1) {
		*env = 0;
		return -1;
	}
	if (fd_write_all(fd, b->data, b->len) == -1 ||
	    ftruncate(fd, (off_t)b->len) == -1) {
		e = errno;	/* 0: a short write that said nothing */
		close(fd);
		unlinkat(spool.freefd, f, 0);
		*env = 0;
		errno = e;
		return -1;
	}
	if (close(fd) == -1) {
		e = errno;
		unlinkat(spool.freefd, f, 0);
		*env = 0;
		errno = e;
		return -1;
	}
	return 0;
}

/* The commit point: the envelope takes its name in queue/. */
int
spool_publish(const char *id, uint64_t env)
{
	char f[24], to[QID_LEN + 8];

	spool_free_name(f, sizeof(f), SPOOL_ENV, env);
	snprintf(to, sizeof(to), "%s.env", id);
	return renameat2(spool.freefd, f, spool.qfd, to, RENAME_NOREPLACE);
}

/* fdatasync of a message's file (env 0) or of its envelope; 0 or errno. */
int
spool_sync_incoming(const char *id, uint64_t env)
{
	char name[QID_LEN + 8];
	int fd, e = 0;

	if (env != 0) {
		spool_free_name(name, sizeof(name), SPOOL_ENV, env);
		fd = openat(spool.freefd, name, O_RDONLY | O_CLOEXEC);
	} else
		fd = openat(spool.qfd, spool_msgname(name, id),
		    O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return errno;
	if (fdatasync(fd) == -1)
		e = errno;
	close(fd);
	return e;
}

/* One syncfs of the spool's filesystem; 0 or -1 with errno. */
int
spool_syncfs(void)
{
	return syncfs(spool.spoolfd);
}

/* One fsync of queue/: its renames and removals are durable. */
int
spool_sync_queue(void)
{
	return fsync(spool.qfd);
}

int
spool_msg_fd(const struct qmsg *m)
{
	char name[QID_LEN + 8];

	snprintf(name, sizeof(name), "%s.msg", m->env.id);
	return openat(spool.qfd, name, O_RDONLY | O_CLOEXEC);
}

void
spool_remove(const char *id)
{
	char name[QID_LEN + 8];

	/* The envelope goes first: an orphan .msg is cleaned at start. */
	snprintf(name, sizeof(name), "%s.env", id);
	spool_give(spool.qfd, name, SPOOL_ENV);
	snprintf(name, sizeof(name), "%s.msg", id);
	spool_give(spool.qfd, name, SPOOL_MSG);
}

/*
 * A new envelope queue/tmp takes the place of queue/name in one step; the
 * old one's file is reused.  0 or -1 with errno.
 */
static int
spool_replace(const char *tmp, const char *name)
{
	if (renameat2(spool.qfd, tmp, spool.qfd, name, RENAME_EXCHANGE) == 0) {
		spool_give(spool.qfd, tmp, SPOOL_ENV);
		return 0;
	}
	return renameat(spool.qfd, tmp, spool.qfd, name);
}

/* ---- envelope updates ---------------------------------------------------- */

/*
 * Delivery state (attempts, next try, served targets) is written lazily
 * and in groups: every changed envelope is written to a temp file, one
 * syncfs covers them all, then each is renamed over its old version.  A
 * crash loses at most the latest state, which means an earlier retry or a
 * duplicate delivery, never a lost message.
 */
void
spool_state_flush(evutil_socket_t fd, short ev, void *arg)
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
		if (spool_write_file(spool.qfd, tmp, &b, 0, 1) == -1) {
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
	if (syncfs(spool.spoolfd) == -1)
		log_warnx("event=update result=error reason=\"syncfs: %s\"",
		    strerror(errno));
	TAILQ_FOREACH(m, &queue_all, entry) {
		if (m->dirty != 2)
			continue;
		snprintf(tmp, sizeof(tmp), "%s.env.tmp", m->env.id);
		snprintf(name, sizeof(name), "%s.env", m->env.id);
		if (spool_replace(tmp, name) == 0)
			m->dirty = 0;
		else
			m->dirty = 1;
	}
}

void
spool_state_later(void)
{
	struct timeval tv = { 0, 200 * 1000 };

	if (!evtimer_pending(spool.stateev, NULL))
		evtimer_add(spool.stateev, &tv);
}

void
spool_write_env(struct qmsg *m)
{
	char tmp[QID_LEN + 16], name[QID_LEN + 8];
	struct buf b;

	buf_init(&b);
	envelope_encode(&m->env, &b);
	snprintf(tmp, sizeof(tmp), "%s.env.tmp", m->env.id);
	snprintf(name, sizeof(name), "%s.env", m->env.id);
	/* fsync before rename: the old envelope stays until the new is whole. */
	if (spool_write_file(spool.qfd, tmp, &b, 1, 1) == 0 &&
	    spool_replace(tmp, name) == 0)
		m->dirty = 0;
	else
		log_warnx("q=%s event=update result=error reason=\"%s\"",
		    m->env.id, fd_strerror(errno));
	buf_free(&b);
}

/* ---- recovery ------------------------------------------------------------ */

static int
spool_open_dir(int parent, const char *name)
{
	int fd;

	fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		fatalx("event=start result=error reason=\"spool %s: %s\"",
		    name, strerror(errno));
	return fd;
}

static void
spool_to_corrupt(const char *id, const char *why)
{
	char name[QID_LEN + 8];
	int cfd = openat(spool.spoolfd, "corrupt", O_RDONLY | O_DIRECTORY);

	log_warnx("q=%s event=recover result=corrupt reason=\"%s\"", id, log_q(why));
	if (cfd == -1)
		return;
	snprintf(name, sizeof(name), "%s.env", id);
	renameat(spool.qfd, name, cfd, name);
	snprintf(name, sizeof(name), "%s.msg", id);
	renameat(spool.qfd, name, cfd, name);
	close(cfd);
}

static void
spool_load(const char *id)
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
	fd = openat(spool.qfd, name, O_RDONLY | O_CLOEXEC);
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
	} else if (fstatat(spool.qfd, name, &st, 0) == -1) {
		why = "message file missing";
		envelope_free(&e);
	}
	buf_free(&b);
	if (why) {
		spool_to_corrupt(id, why);
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
spool_scan(int dirfd, int (*fn)(int, const char *))
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
spool_recover_incoming(int dirfd, const char *name)
{
	return unlinkat(dirfd, name, 0) == 0;
}

/* queue/: load each envelope; an update left half written goes. */
static int
spool_recover_env(int dirfd, const char *name)
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
	if (!spool_valid_id(id))
		return 0;
	spool_load(id);
	return 1;
}

/* queue/: a message without its envelope was never committed, or is done. */
static int
spool_recover_msg(int dirfd, const char *name)
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

void
spool_recover(void)
{
	int removed, orphans, loaded;
	struct qmsg *m;

	spool_scan(spool.freefd, spool_recover_free);
	removed = spool_scan(spool.incfd, spool_recover_incoming);
	if ((loaded = spool_scan(spool.qfd, spool_recover_env)) == -1)
		fatalx("event=start result=error reason=\"spool unreadable\"");
	/* After the envelopes: one moved to corrupt/ took its message along. */
	orphans = spool_scan(spool.qfd, spool_recover_msg);
	TAILQ_FOREACH(m, &queue_all, entry) {
		size_t i;

		for (i = 0; i < m->env.nrcpts; i++)
			if (m->env.rcpts[i].state == RS_HELD)
				m->env.rcpts[i].state = RS_PENDING;
	}
	log_info("event=recover result=ok messages=%d removed_partial=%d",
	    loaded, (removed > 0 ? removed : 0) + (orphans > 0 ? orphans : 0));
}

/*
 * A state file of the queue's own in the spool's top directory (the
 * account limits): written under a temp name and renamed over the old
 * one; with sync, fsynced first and the directory after.  0 or -1.
 */
int
spool_write_state(const char *name, const struct buf *b, int sync)
{
	char tmp[128];

	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	if (spool_write_file(spool.spoolfd, tmp, b, sync, 0) == -1)
		return -1;
	if (renameat(spool.spoolfd, tmp, spool.spoolfd, name) == -1) {
		unlinkat(spool.spoolfd, tmp, 0);
		return -1;
	}
	return sync ? fsync(spool.spoolfd) : 0;
}

/* Such a file's content appended to b: 0, or -1 with errno (ENOENT). */
int
spool_read_state(const char *name, struct buf *b)
{
	char tmp[8192];
	ssize_t n;
	int fd;

	fd = openat(spool.spoolfd, name, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	while ((n = read(fd, tmp, sizeof(tmp))) > 0)
		buf_append(b, tmp, (size_t)n);
	close(fd);
	return n == 0 ? 0 : -1;
}

/* Open the spool's directories; a spool that is not there is fatal. */
void
spool_open(struct event_base *base, const char *path)
{
	spool.spoolfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (spool.spoolfd == -1)
		fatalx("event=start result=error reason=\"spool %s: %s\"",
		    log_q(path), strerror(errno));
	spool.incfd = spool_open_dir(spool.spoolfd, "incoming");
	spool.qfd = spool_open_dir(spool.spoolfd, "queue");
	spool.freefd = spool_open_dir(spool.spoolfd, "free");
	spool.nextfree = 1;		/* 0 names no file */
	spool.stateev = evtimer_new(base, spool_state_flush, NULL);
	event_priority_set(spool.stateev, 1);
}
