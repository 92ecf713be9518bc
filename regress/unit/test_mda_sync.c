/*
 * test_mda_sync: a Maildir delivery reported done survives a crash even
 * when it made the Maildir (a new account's first mail, folders removed
 * since): each directory it made is fsync'd in the directory holding it,
 * not only new/ itself.  fsync(2) is wrapped here to note which
 * directories were synced; it still syncs.
 */
#include <sys/stat.h>
#include <sys/syscall.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/mda.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_mda_sync(void);

#define SYNCED_MAX	32

static struct {
	int	 on;
	size_t	 n;
	char	 path[SYNCED_MAX][PATH_MAX];
} synced;

/* Every fsync of the unit binary comes here; noted while on. */
int
fsync(int fd)
{
	char link[64];
	ssize_t n;

	if (synced.on && synced.n < SYNCED_MAX) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, synced.path[synced.n], PATH_MAX - 1);
		if (n > 0)
			synced.path[synced.n++][n] = '\0';
	}
	return (int)syscall(SYS_fsync, fd);
}

static int
was_synced(const char *path)
{
	size_t i;

	for (i = 0; i < synced.n; i++)
		if (strcmp(synced.path[i], path) == 0)
			return 1;
	return 0;
}

void
test_mda_sync(void)
{
	char dir[] = "/tmp/tern-unit-mdasync.XXXXXX", real[PATH_MAX];
	char md[PATH_MAX + 32], p[PATH_MAX + 64], err[1024];
	int msgfd, code;

	if (mkdtemp(dir) == NULL || realpath(dir, real) == NULL) {
		CHECK(!"mkdtemp");
		return;
	}
	snprintf(p, sizeof(p), "%s/msg", real);
	if ((msgfd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600)) == -1) {
		CHECK(!"message file");
		unit_rm_tree(dir);
		return;
	}
	(void)!write(msgfd, "Subject: x\r\n\r\nbody\r\n", 20);

	/* Nothing of it there yet: domain, user and Maildir are made. */
	snprintf(md, sizeof(md), "%s/example.org/anna/Maildir", real);
	synced.on = 1;
	synced.n = 0;
	code = mda_maildir(msgfd, md, md, "a@example.org", "anna@example.org",
	    "0123456789ABCDEF", err, sizeof(err));
	synced.on = 0;
	CHECK(code == MDA_OK);
	snprintf(p, sizeof(p), "%s/new", md);
	CHECK(was_synced(p));			/* the message's entry */
	CHECK(was_synced(md));			/* new/ in the Maildir */
	snprintf(p, sizeof(p), "%s/example.org/anna", real);
	CHECK(was_synced(p));			/* Maildir/ in anna/ */
	snprintf(p, sizeof(p), "%s/example.org", real);
	CHECK(was_synced(p));
	CHECK(was_synced(real));

	/* Only new/ removed since: made again, and the Maildir synced. */
	snprintf(p, sizeof(p), "%s/new", md);
	unit_rm_tree(p);
	synced.on = 1;
	synced.n = 0;
	code = mda_maildir(msgfd, md, md, "a@example.org", "anna@example.org",
	    "0123456789ABCDEF", err, sizeof(err));
	synced.on = 0;
	CHECK(code == MDA_OK);
	CHECK(was_synced(p));
	CHECK(was_synced(md));

	/* All there: new/ alone is synced, nothing above it. */
	synced.on = 1;
	synced.n = 0;
	code = mda_maildir(msgfd, md, md, "a@example.org", "anna@example.org",
	    "0123456789ABCDEF", err, sizeof(err));
	synced.on = 0;
	CHECK(code == MDA_OK);
	CHECK(was_synced(p));
	CHECK(!was_synced(md));
	close(msgfd);
	unit_rm_tree(dir);
}
