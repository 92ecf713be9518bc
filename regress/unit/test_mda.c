/*
 * test_mda: what the delivery agents report when the file system refuses
 * part of a write.  A file size limit below the message makes a write come
 * up short and the next one fail (EFBIG), as a full disk does (ENOSPC):
 * the report must name that cause, not whatever errno held before.
 */
#include <sys/resource.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/mda.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_mda(void);

#define MDA_TEST_LIMIT	4096	/* bytes a file may grow to */

/* A spooled message of about 200 kB, CRLF lines. */
static int
big_message(const char *dir)
{
	char path[512], line[100];
	size_t i;
	int fd;

	snprintf(path, sizeof(path), "%s/msg", dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600)) == -1)
		return -1;
	unlink(path);
	(void)!write(fd, "Subject: big\r\n\r\n", 16);
	memset(line, 'x', sizeof(line) - 2);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	for (i = 0; i < 2000; i++)
		(void)!write(fd, line, sizeof(line));
	return fd;
}

static size_t
count_files(const char *dir)
{
	struct dirent *de;
	size_t n = 0;
	DIR *d;

	if ((d = opendir(dir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* Run one delivery with the file size limit in force. */
static void
limit_files(int on)
{
	static struct rlimit old;
	struct rlimit lim;

	if (on) {
		signal(SIGXFSZ, SIG_IGN);
		getrlimit(RLIMIT_FSIZE, &old);
		lim = old;
		lim.rlim_cur = MDA_TEST_LIMIT;
		setrlimit(RLIMIT_FSIZE, &lim);
	} else {
		setrlimit(RLIMIT_FSIZE, &old);
		signal(SIGXFSZ, SIG_DFL);
	}
}

static void
test_mda_maildir_short_write(const char *dir, int msgfd)
{
	char md[512], sub[600], err[1024];
	int code;

	snprintf(md, sizeof(md), "%s/Maildir", dir);
	code = mda_maildir(msgfd, md, md, "a@example.org", "b@example.test",
	    "0123456789ABCDEF", err, sizeof(err));
	CHECK(code == MDA_OK);
	limit_files(1);
	code = mda_maildir(msgfd, md, md, "a@example.org", "b@example.test",
	    "0123456789ABCDEF", err, sizeof(err));
	limit_files(0);
	CHECK(code == MDA_TEMP);
	CHECK(strstr(err, strerror(EFBIG)) != NULL);
	CHECK(strstr(err, strerror(EEXIST)) == NULL);
	snprintf(sub, sizeof(sub), "%s/tmp", md);
	CHECK(count_files(sub) == 0);		/* no half message left */
	snprintf(sub, sizeof(sub), "%s/new", md);
	CHECK(count_files(sub) == 1);
}

static void
test_mda_mbox_short_write(const char *dir, int msgfd)
{
	struct mda_job j;
	struct stat st;
	char box[512], err[1024];
	int code;

	memset(&j, 0, sizeof(j));
	j.msgfd = msgfd;
	j.sender = "a@example.org";
	j.rcpt = j.orcpt = "b@example.test";
	j.qid = "0123456789ABCDEF";
	snprintf(box, sizeof(box), "%s/box", dir);
	limit_files(1);
	code = mda_file(&j, box, err, sizeof(err));
	limit_files(0);
	CHECK(code == MDA_TEMP);
	CHECK(strstr(err, strerror(EFBIG)) != NULL);
	CHECK(stat(box, &st) == 0 && st.st_size == 0);	/* cut back */
}

void
test_mda(void)
{
	char dir[] = "/tmp/tern-unit-mda.XXXXXX";
	int msgfd;

	if (mkdtemp(dir) == NULL) {
		CHECK(!"mkdtemp");
		return;
	}
	if ((msgfd = big_message(dir)) == -1) {
		CHECK(!"message file");
		unit_rm_tree(dir);
		return;
	}
	test_mda_maildir_short_write(dir, msgfd);
	test_mda_mbox_short_write(dir, msgfd);
	close(msgfd);
	unit_rm_tree(dir);
}
