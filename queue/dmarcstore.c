/*
 * dmarcstore: DMARC evaluations kept for aggregate reports (queue
 * process).  The smtp process evaluates and sends each one in Q_DMARC;
 * the queue process, the only writer of the spool, appends it to
 * spool/dmarc/YYYYMMDD (the UTC day of arrival), 0600.  An entry is the
 * magic "DMR1", a 32-bit big-endian payload length, the payload (typed
 * records, auth/dmarc.h's DS_* tags) and the CRC32 of the payload; a
 * reader stops at the first entry that is torn or whose CRC is wrong (a
 * crash during a write).  The file is written as each evaluation comes
 * and reaches the disk with the spool's next sync (the group commit's
 * syncfs): a power loss may cost the last moments' records, never the
 * messages.  A day file is never rewritten; the report job reads the
 * finished days and removes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/dmarc.h"
#include "lib/log.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "queue/dmarcstore.h"

#define DMARCSTORE_MAGIC	"DMR1"

static struct {
	int	 dirfd;
	int	 fd;
	char	 day[16];
} ds = { -1, -1, "" };

void
dmarcstore_open(const char *spool)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/dmarc", spool);
	ds.dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ds.dirfd == -1)
		log_warnx("event=start result=warn reason=\"%s: %s; DMARC "
		    "evaluations are not kept\"", log_q(path), strerror(errno));
}

static void
dmarcstore_put32(struct buf *b, uint32_t v)
{
	unsigned char x[4] = { (unsigned char)(v >> 24),
	    (unsigned char)(v >> 16), (unsigned char)(v >> 8),
	    (unsigned char)v };

	buf_append(b, x, 4);
}

void
dmarcstore_frame(struct buf *b, const void *p, size_t len)
{
	buf_append(b, DMARCSTORE_MAGIC, 4);
	dmarcstore_put32(b, (uint32_t)len);
	buf_append(b, p, len);
	dmarcstore_put32(b, crc32_update(0, p, len));
}

static uint32_t
dmarcstore_get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

int
dmarcstore_walk(const void *data, size_t len, int *bad,
    void (*fn)(const void *, size_t, void *), void *arg)
{
	const unsigned char *p = data;
	size_t off = 0;
	int n = 0;

	*bad = 0;
	while (off < len) {
		uint32_t l;

		if (len - off < 8 || memcmp(p + off, DMARCSTORE_MAGIC, 4)) {
			*bad = 1;
			break;
		}
		l = dmarcstore_get32(p + off + 4);
		if (l > len - off - 8 || len - off - 8 - l < 4 ||
		    dmarcstore_get32(p + off + 8 + l) !=
		    crc32_update(0, p + off + 8, l)) {
			*bad = 1;
			break;
		}
		fn(p + off + 8, l, arg);
		n++;
		off += 12 + (size_t)l;
	}
	return n;
}

/* The day's file, opened (or reopened when the day changes). */
static int
dmarcstore_file(void)
{
	char day[16];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(day, sizeof(day), "%Y%m%d", &tm);
	if (ds.fd >= 0 && strcmp(day, ds.day) == 0)
		return ds.fd;
	if (ds.fd >= 0)
		close(ds.fd);
	ds.fd = openat(ds.dirfd, day, O_WRONLY | O_APPEND | O_CREAT |
	    O_CLOEXEC | O_NOFOLLOW, 0600);
	if (ds.fd == -1) {
		log_warnx("event=dmarc-store result=error reason=\"open "
		    "dmarc/%s: %s\"", day, strerror(errno));
		return -1;
	}
	str_copy(ds.day, day, sizeof(ds.day));
	return ds.fd;
}

void
dmarcstore_append(struct rec_reader *rd)
{
	const unsigned char *p = rd->p + rd->off;
	size_t len = rd->len - rd->off;
	struct buf b;
	int fd;

	if (dmarc_store_check(p, len) == -1) {
		log_warnx("event=ipc result=error reason=\"malformed DMARC "
		    "evaluation from smtp\"");
		return;
	}
	if (ds.dirfd == -1 || (fd = dmarcstore_file()) == -1)
		return;
	buf_init(&b);
	dmarcstore_frame(&b, p, len);
	/* One write of the whole entry: O_APPEND keeps entries whole. */
	if (fd_write_all(fd, b.data, b.len) == -1)
		log_warnx("event=dmarc-store result=error reason=\"write "
		    "dmarc/%s: %s\"", ds.day, strerror(errno));
	buf_free(&b);
}
