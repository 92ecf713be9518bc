/*
 * spool: the queue process's spool on disk, of which it is the only
 * writer.  It holds the spool's directories and makes every file in them:
 * the files in incoming/ that the smtp process writes messages into, their
 * publication into queue/ (the group commit calls it, partly from its
 * thread), the message files deliveries and notices read, the envelope
 * updates (at once, or lazily in groups), the removals, and the recovery
 * at start.
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
	int		 spoolfd, incfd, qfd;
	struct event	*stateev;	/* lazy envelope updates */
} spool;

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

int
spool_create(char id[QID_LEN + 1])
{
	int fd, tries;

	for (tries = 0; tries < 10; tries++) {
		spool_newid(id);
		fd = openat(spool.incfd, id, O_WRONLY | O_CREAT | O_EXCL |
		    O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1;
}

void
spool_unlink_incoming(const char *id)
{
	char env[QID_LEN + 8];

	unlinkat(spool.incfd, id, 0);
	snprintf(env, sizeof(env), "%s.env", id);
	unlinkat(spool.incfd, env, 0);
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

/* Write all of b to a new file name in dir; 0 or -1 with errno. */
static int
spool_write_file(int dirfd, const char *name, const struct buf *b, int sync)
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

/* A message's envelope in incoming/, before the commit; as above. */
int
spool_write_incoming(const char *name, const struct buf *b)
{
	return spool_write_file(spool.incfd, name, b, 0);
}

int
spool_publish(const char *id)
{
	char from[QID_LEN + 8], to[QID_LEN + 8];

	snprintf(to, sizeof(to), "%s.msg", id);
	if (renameat(spool.incfd, id, spool.qfd, to) == -1)
		return -1;
	snprintf(from, sizeof(from), "%s.env", id);
	snprintf(to, sizeof(to), "%s.env", id);
	if (renameat(spool.incfd, from, spool.qfd, to) == -1) {
		snprintf(to, sizeof(to), "%s.msg", id);
		renameat(spool.qfd, to, spool.incfd, id);
		return -1;
	}
	return 0;
}

/* fdatasync of one file of incoming/; 0 or errno. */
int
spool_sync_incoming(const char *name)
{
	int fd, e = 0;

	if ((fd = openat(spool.incfd, name, O_RDONLY | O_CLOEXEC)) == -1)
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
	unlinkat(spool.qfd, name, 0);
	snprintf(name, sizeof(name), "%s.msg", id);
	unlinkat(spool.qfd, name, 0);
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
		if (spool_write_file(spool.qfd, tmp, &b, 0) == -1) {
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
		if (renameat(spool.qfd, tmp, spool.qfd, name) == 0)
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
	if (spool_write_file(spool.qfd, tmp, &b, 1) == 0 &&
	    renameat(spool.qfd, tmp, spool.qfd, name) == 0)
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
	if (spool_write_file(spool.spoolfd, tmp, b, sync) == -1)
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
	spool.stateev = evtimer_new(base, spool_state_flush, NULL);
	event_priority_set(spool.stateev, 1);
}
