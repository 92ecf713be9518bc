/*
 * maildrop: where sendmail keeps a message that ternd cannot take now,
 * spool/maildrop, for ternd's parent to pick up (ternd.c, pickup.c).  The
 * directory is root's, group drop-group, mode 1730: members of the group
 * may create files there but not list, read or remove them, and nobody
 * else may enter it.  ternctl is installed setgid to that group and never
 * setuid: it gives the group up at once (maildrop_privs), keeps it only as
 * its saved group id, and takes it back for the two calls that need it,
 * creating the temporary file and renaming it to its final name.  The
 * file belongs to the user, mode 0600; its owner is what names the user
 * at pickup, so nobody can drop mail as someone else.  A file is written
 * whole, synced, then renamed: a name without the ".tmp." prefix is a
 * complete file.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "ctl/sendmail.h"
#include "lib/drop.h"
#include "lib/log.h"
#include "lib/util.h"

#define MAILDROP_TRIES	16	/* names tried before giving up */

static gid_t	maildrop_gid = (gid_t)-1;	/* the setgid group, saved */

/*
 * Called first in ternctl's main(): with keep, the drop group stays only
 * as the saved group id; without, it is gone for good.  Either way the
 * effective group is the user's own from here on.
 */
void
maildrop_privs(int keep)
{
	gid_t rgid = getgid(), egid = getegid();

	if (rgid == egid)
		return;
	if (setresgid(rgid, rgid, keep ? egid : rgid) == -1) {
		fprintf(stderr, "ternctl: cannot give up group %u: %s\n",
		    (unsigned)egid, strerror(errno));
		exit(71);
	}
	if (keep)
		maildrop_gid = egid;
}

void
maildrop_privs_forget(void)
{
	gid_t rgid = getgid();

	if (maildrop_gid == (gid_t)-1)
		return;
	if (setresgid(rgid, rgid, rgid) == -1)
		abort();
	maildrop_gid = (gid_t)-1;
}

static int
maildrop_raise(void)
{
	if (maildrop_gid == (gid_t)-1)
		return 0;
	return setresgid((gid_t)-1, maildrop_gid, (gid_t)-1);
}

static void
maildrop_lower(void)
{
	if (maildrop_gid == (gid_t)-1)
		return;
	if (setresgid((gid_t)-1, getgid(), (gid_t)-1) == -1)
		abort();	/* never go on with the group */
}

/* 16 hex digits: the time and 32 random bits, as queue ids are made. */
static void
maildrop_name(char *out, size_t len, const char *prefix)
{
	uint32_t rnd;
	struct timespec ts;

	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		clock_gettime(CLOCK_REALTIME, &ts);
		rnd = (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16);
	}
	snprintf(out, len, "%s%08llX%08X", prefix,
	    (unsigned long long)time(NULL) & 0xffffffffULL, (unsigned)rnd);
}

static int
maildrop_create(int dirfd, char *tmp, size_t tmplen)
{
	int fd = -1, i, e;

	for (i = 0; i < MAILDROP_TRIES && fd == -1; i++) {
		maildrop_name(tmp, tmplen, DROP_TMP_PREFIX);
		if (maildrop_raise() == -1)
			return -1;
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL |
		    O_NOFOLLOW | O_CLOEXEC, 0600);
		e = errno;
		maildrop_lower();
		errno = e;
		if (fd == -1 && errno != EEXIST)
			return -1;
	}
	return fd;
}

static int
maildrop_publish(int dirfd, const char *tmp, char *name, size_t namelen)
{
	int i, r = -1, e;

	for (i = 0; i < MAILDROP_TRIES; i++) {
		maildrop_name(name, namelen, "");
		if (maildrop_raise() == -1)
			return -1;
		r = renameat2(dirfd, tmp, dirfd, name, RENAME_NOREPLACE);
		e = errno;
		maildrop_lower();
		errno = e;
		if (r == 0 || errno != EEXIST)
			break;
	}
	return r;
}

/*
 * The rename must be on disk before sendmail says "sent".  The directory
 * is not readable to the group, so it cannot be opened for an fsync; a
 * syncfs of its file system covers it (and runs only when ternd is down
 * or refusing, not on every message).
 */
static int
maildrop_sync_dir(const char *dir, int fd)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (dfd >= 0) {
		r = fsync(dfd);
		close(dfd);
		return r;
	}
	return syncfs(fd);
}

static void
maildrop_encode(const struct sm *sm, const char *user, struct buf *b)
{
	struct drop d;
	size_t i;

	memset(&d, 0, sizeof(d));
	d.uid = getuid();
	d.user = (char *)user;
	d.program = (char *)sm->program;
	d.time = (uint64_t)time(NULL);
	d.sender = sm->from;
	d.rcpts = xcalloc(sm->rcpts.n + 1, sizeof(*d.rcpts));
	for (i = 0; i < sm->rcpts.n; i++)
		if (sm->sent == NULL || !sm->sent[i])
			d.rcpts[d.nrcpts++] = sm->rcpts.v[i];
	d.msg = sm->msg.data;
	d.msglen = sm->msg.len;
	drop_encode(&d, b);
	free(d.rcpts);
}

static int
maildrop_fail(char *err, size_t errlen, const char *what, int dirfd,
    const char *tmp)
{
	int e = errno;

	snprintf(err, errlen, "%s: %s", what, fd_strerror(e));
	if (tmp != NULL && tmp[0] != '\0' && maildrop_raise() == 0) {
		unlinkat(dirfd, tmp, 0);
		maildrop_lower();
	}
	if (dirfd >= 0)
		close(dirfd);
	errno = e;
	return -1;
}

int
maildrop_write(const struct sm *sm, const char *why, char *name,
    size_t namelen, char *err, size_t errlen)
{
	struct passwd *pw = getpwuid(getuid());
	char dir[4096], tmp[64] = "", user[DROP_USER_MAX + 1];
	struct buf b;
	size_t i, left = 0;
	int dirfd, fd;

	if (pw == NULL || pw->pw_name == NULL || pw->pw_name[0] == '\0' ||
	    strlen(pw->pw_name) > DROP_USER_MAX) {
		snprintf(err, errlen, "user id %u has no account name",
		    (unsigned)getuid());
		return -1;
	}
	str_copy(user, pw->pw_name, sizeof(user));
	if ((size_t)snprintf(dir, sizeof(dir), "%s/maildrop",
	    conf_str(sm->conf, K_SPOOL)) >= sizeof(dir)) {
		snprintf(err, errlen, "spool path too long");
		return -1;
	}
	/* O_PATH: only the levels above must be searchable. */
	if ((dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) == -1)
		return maildrop_fail(err, errlen, dir, -1, NULL);
	if ((fd = maildrop_create(dirfd, tmp, sizeof(tmp))) == -1)
		return maildrop_fail(err, errlen, dir, dirfd, NULL);
	buf_init(&b);
	maildrop_encode(sm, user, &b);
	if (fd_write_all(fd, b.data, b.len) == -1 || fsync(fd) == -1) {
		buf_free(&b);
		close(fd);
		return maildrop_fail(err, errlen, "writing the drop file",
		    dirfd, tmp);
	}
	buf_free(&b);
	if (maildrop_publish(dirfd, tmp, name, namelen) == -1) {
		close(fd);
		return maildrop_fail(err, errlen, "naming the drop file",
		    dirfd, tmp);
	}
	if (maildrop_sync_dir(dir, fd) == -1) {
		close(fd);
		/* It is complete and named: ternd will take it anyway. */
		return maildrop_fail(err, errlen, "syncing the maildrop",
		    dirfd, NULL);
	}
	close(fd);
	close(dirfd);
	for (i = 0; i < sm->rcpts.n; i++)
		left += sm->sent == NULL || !sm->sent[i];
	log_info("event=drop result=ok file=%s uid=%u user=\"%s\" "
	    "program=%s from=<%s> nrcpt=%zu size=%zu reason=\"%s\"", name,
	    (unsigned)getuid(), log_q(user), sm->program[0] ? sm->program :
	    "-", log_a(sm->from), left, sm->msg.len, log_q(why));
	return 0;
}

#if defined(__SANITIZE_ADDRESS__)
/*
 * Sanitizer builds only.  A setgid process is not dumpable: the sanitizer
 * cannot read its options from /proc/self/environ, and the leak check,
 * which stops the process's threads with ptrace, cannot run.  So a setgid
 * test copy of ternctl defaults to no leak check.
 */
const char *__asan_default_options(void);

const char *
__asan_default_options(void)
{
	return "detect_leaks=0";
}
#endif
