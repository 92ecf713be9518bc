/*
 * mda: local delivery into a Maildir.  Runs in a short-lived worker the
 * parent forks and drops to the recipient's uid/gid, reading the spooled
 * message through the descriptor the queue process passed along.  The
 * message is written to tmp/, fsync'd, then linked into new/ and the
 * directory fsync'd: a Maildir delivery is durable before it is reported.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "util.h"

#define EX_OK_		0
#define EX_TEMPFAIL_	75
#define EX_CANTCREAT_	73

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
		if (mkdir(tmp, 0700) == -1 && errno != EEXIST)
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
		    mda_mkdirs(p) == -1) {
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

	if (write(out, hdr, hl) != (ssize_t)hl)
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
				if (write(out, ob, o) != (ssize_t)o)
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
	if (o && write(out, ob, o) != (ssize_t)o)
		return -1;
	*size += o;
	return 0;
}

int
mda_maildir(int msgfd, const char *md, const char *sender, const char *rcpt,
    const char *qid, char *err, size_t errlen)
{
	char host[256] = "localhost", name[512], tmp[4096], new[4096];
	char final[4200], hdr[2048];
	struct timeval tv;
	size_t size;
	int fd, dfd;

	if (mda_prepare(md, err, errlen) == -1)
		return EX_TEMPFAIL_;
	gethostname(host, sizeof(host) - 1);
	for (char *p = host; *p; p++)
		if (*p == '/' || *p == ':')
			*p = '_';
	gettimeofday(&tv, NULL);
	snprintf(name, sizeof(name), "%lld.M%06ldP%dQ%s.%s", (long long)tv.tv_sec,
	    (long)tv.tv_usec, (int)getpid(), qid, host);
	if (snprintf(tmp, sizeof(tmp), "%s/tmp/%s", md, name) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "maildir path too long");
		return EX_CANTCREAT_;
	}
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1) {
		snprintf(err, errlen, "cannot create %s: %s", tmp,
		    strerror(errno));
		return EX_TEMPFAIL_;
	}
	snprintf(hdr, sizeof(hdr), "Return-Path: <%s>\nDelivered-To: %s\n",
	    sender, rcpt);
	if (mda_copy(msgfd, fd, hdr, &size) == -1 || fsync(fd) == -1) {
		snprintf(err, errlen, "write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return EX_TEMPFAIL_;
	}
	close(fd);
	snprintf(final, sizeof(final), "%s,S=%zu", name, size);
	if (snprintf(new, sizeof(new), "%s/new/%s", md, final) >= (int)sizeof(new)) {
		snprintf(err, errlen, "maildir path too long");
		unlink(tmp);
		return EX_CANTCREAT_;
	}
	if (link(tmp, new) == -1 && rename(tmp, new) == -1) {
		snprintf(err, errlen, "link %s: %s", new, strerror(errno));
		unlink(tmp);
		return EX_TEMPFAIL_;
	}
	unlink(tmp);
	(void)!snprintf(tmp, sizeof(tmp), "%s/new", md);
	if ((dfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    fsync(dfd) == -1) {
		snprintf(err, errlen, "fsync %s: %s", tmp, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return EX_TEMPFAIL_;
	}
	close(dfd);
	snprintf(err, errlen, "delivered to maildir %s", md);
	return EX_OK_;
}
