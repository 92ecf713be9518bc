/*
 * notice: what the queue process owes senders: the permanent failures of
 * their recipients, sent at once in one DSN per message and round, and one
 * warning when a message is still deferred after delay-warning.  Notices
 * are built by dsn.c (RFC 3464) and queued from the null sender through
 * the group commit like any message; a message from the null sender is
 * never bounced to it (its failures go once to the postmaster).  The
 * sender's DSN parameters (RFC 3461) decide: NOTIFY= which notices a
 * recipient is sent (NEVER: none; SUCCESS: one when it is delivered here or
 * relayed to a peer that does not take DSN), RET=HDRS the headers only,
 * and ENVID and ORCPT are reported back as given.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/esmtp.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/commit.h"
#include "queue/dsn.h"
#include "queue/envelope.h"
#include "queue/notice.h"
#include "queue/qint.h"
#include "queue/spool.h"

#define NOTICE_DSN_READ		(256 * 1024)	/* of the original, for DSNs */
#define NOTICE_DSN_FULL		50000	/* returned whole up to this size */

/* A permanent failure owed to the sender in a DSN. */
struct failure {
	struct failure	*next;
	char		*rcpt, *orcpt, *status, *diag, *relay;
	int		 delayed;	/* NOTICE_* */
};

/* "550 5.1.1 ..." -> "5.1.1"; else the class from the reply code. */
void
notice_esc(const char *text, int perm, char *out, size_t len)
{
	const char *p = text ? strchr(text, ' ') : NULL;

	if (p && (p[1] == '2' || p[1] == '4' || p[1] == '5') && p[2] == '.') {
		size_t n = strcspn(p + 1, " ");

		if (n < len && n >= 5) {
			memcpy(out, p + 1, n);
			out[n] = '\0';
			return;
		}
	}
	str_copy(out, perm ? "5.0.0" : "4.0.0", len);
}

/* Does recipient ri's NOTIFY= ask for this kind of notice? */
static int
notice_wanted(const struct qmsg *m, size_t ri, int kind)
{
	unsigned n = m->env.rcpts[ri].notify;

	if (n == 0)
		return kind == NOTICE_FAILED || kind == NOTICE_DELAYED;
	if (kind == NOTICE_FAILED)
		return (n & DSN_NOTIFY_FAILURE) != 0;
	if (kind == NOTICE_DELAYED)
		return (n & DSN_NOTIFY_DELAY) != 0;
	return (n & DSN_NOTIFY_SUCCESS) != 0;
}

void
notice_add(struct qmsg *m, size_t ri, const char *rcpt,
    const char *text, const char *relay, int delayed)
{
	struct failure *f;
	char esc[16];

	if (delayed >= NOTICE_DELIVERED && (m->env.sender[0] == '\0' ||
	    (m->env.flags & ENV_DSN)))
		return;		/* no success report to <> */
	if (!notice_wanted(m, ri, delayed)) {
		if (delayed == NOTICE_FAILED || delayed == NOTICE_DELAYED)
			log_info("q=%s event=dsn result=suppressed to=<%s> "
			    "type=%s reason=\"NOTIFY=%s\"", m->env.id,
			    log_a(rcpt), delayed ? "delay" : "failure",
			    m->env.rcpts[ri].notify & DSN_NOTIFY_NEVER ?
			    "NEVER" : delayed ? "without DELAY" :
			    "without FAILURE");
		return;
	}
	f = xcalloc(1, sizeof(*f));
	if (delayed >= NOTICE_DELIVERED)
		str_copy(esc, "2.0.0", sizeof(esc));
	else
		notice_esc(text, !delayed, esc, sizeof(esc));
	f->rcpt = xstrdup(rcpt);
	/* ORCPT as the client gave it; else the address before aliases. */
	f->orcpt = m->env.rcpts[ri].orcpt ? xstrdup(m->env.rcpts[ri].orcpt) :
	    strcmp(rcpt, m->env.rcpts[ri].addr) ?
	    xstrdup(m->env.rcpts[ri].addr) : NULL;
	f->status = xstrdup(esc);
	f->diag = text ? xstrdup(text) : NULL;
	f->relay = relay ? xstrdup(relay) : NULL;
	f->delayed = delayed;
	f->next = m->fails;
	m->fails = f;
}

void
notice_free(struct qmsg *m)
{
	struct failure *f, *n;

	for (f = m->fails; f; f = n) {
		n = f->next;
		free(f->rcpt);
		free(f->orcpt);
		free(f->status);
		free(f->diag);
		free(f->relay);
		free(f);
	}
	m->fails = NULL;
}

static void
notice_read_original(const struct qmsg *m, struct buf *b, int *whole)
{
	char tmp[8192];
	ssize_t n = -1;
	off_t off = 0;
	int fd = spool_msg_fd(m);

	*whole = 0;
	if (fd == -1)
		return;
	while (b->len < NOTICE_DSN_READ &&
	    (n = pread(fd, tmp, sizeof(tmp), off)) > 0) {
		buf_append(b, tmp, (size_t)n);
		off += n;
	}
	*whole = n == 0;
	close(fd);
}

static const char *
notice_postmaster(char *out, size_t len)
{
	snprintf(out, len, "postmaster@%s", queue_conf()->ndomains ?
	    queue_conf()->domains[0] : conf_str(queue_conf(), K_HOSTNAME));
	return out;
}

/* One DSN for the given failures (or delays) of m. */
static int
notice_dsn(struct qmsg *m, struct failure *list, int delayed)
{
	struct dsn_rcpt *dr;
	struct dsn_msg dm;
	struct failure *f;
	struct buf orig, out;
	char to[300], relay[340];
	size_t n = 0, i;
	int whole, r, success = 1;
	uint64_t flags = ENV_DSN;
	static const char *const action[] = { "failed", "delayed",
	    "delivered", "relayed" };

	for (f = list; f; f = f->next) {
		n++;
		if (f->delayed < NOTICE_DELIVERED)
			success = 0;
	}
	if (n == 0)
		return 0;
	if (m->env.sender[0] == '\0') {
		if (m->env.flags & ENV_DOUBLE) {
			log_warnx("q=%s event=dsn result=dropped reason=\"a "
			    "failed notice to the postmaster is not bounced\"",
			    m->env.id);
			return 0;
		}
		if (delayed)
			return 0;
		/* No bounce to <>: a failing bounce goes to the postmaster. */
		notice_postmaster(to, sizeof(to));
		flags |= ENV_DOUBLE;
	} else
		str_copy(to, m->env.sender, sizeof(to));
	dr = xcalloc(n, sizeof(*dr));
	for (f = list, i = 0; f; f = f->next, i++) {
		dr[i].rcpt = f->rcpt;
		dr[i].orcpt = f->orcpt;
		dr[i].status = f->status;
		dr[i].action = action[f->delayed & 3];
		if (f->relay && strcmp(f->relay, "local") && strcmp(f->relay,
		    "none")) {
			snprintf(relay, sizeof(relay), "dns; %.*s", (int)strcspn(
			    f->relay, "["), f->relay);
			dr[i].remote_mta = xstrdup(relay);
		}
		dr[i].diagnostic = f->diag;
		dr[i].last_attempt = (long long)time(NULL);
	}
	memset(&dm, 0, sizeof(dm));
	dm.reporting_mta = conf_str(queue_conf(), K_HOSTNAME);
	dm.to = to;
	dm.queue_id = m->env.id;
	dm.arrival = (long long)m->env.arrival;
	dm.delayed = delayed;
	dm.success = success;
	dm.envid = m->env.envid;
	buf_init(&orig);
	buf_init(&out);
	notice_read_original(m, &orig, &whole);
	dm.original = orig.data;
	dm.original_len = orig.len;
	/* RET=HDRS, a success and a binary body: the headers alone. */
	dm.return_full = whole && !success && m->env.ret != DSN_RET_HDRS &&
	    m->env.body8bit != 2;
	dm.max_full = NOTICE_DSN_FULL;
	r = dsn_build(&dm, dr, n, &out);
	if (r == 0)
		r = commit_inject(to, &out, flags);
	log_info("q=%s event=dsn result=%s to=<%s> type=%s nrcpt=%zu", m->env.id,
	    r == 0 ? "ok" : "error", log_a(to), delayed ? "delay" : success ?
	    "success" : "failure", n);
	for (i = 0; i < n; i++)
		free((char *)dr[i].remote_mta);
	free(dr);
	buf_free(&orig);
	buf_free(&out);
	return r;
}

/*
 * The arrival is kept in whole seconds, and the message came at any time
 * within that second: a second more, so that the warning never comes
 * before delay-warning has passed.
 */
uint64_t
notice_warn_due(const struct qmsg *m)
{
	long long warn = conf_num(queue_conf(), NULL, K_DELAY_WARNING) / 1000;

	return warn > 0 ? m->env.arrival + (uint64_t)warn + 1 : 0;
}

/* Owed notices of m: failures at once, one delay warning when late. */
void
notice_send(struct qmsg *m)
{
	uint64_t now = (uint64_t)time(NULL), due = notice_warn_due(m);
	size_t i, late = 0;

	if (m->fails && notice_dsn(m, m->fails, 0) == 0)
		notice_free(m);
	if (m->fails)
		return;		/* could not queue it: try again next time */
	if (due == 0 || (m->env.flags & (ENV_WARNED | ENV_DSN)) ||
	    m->env.sender[0] == '\0' || now < due)
		return;
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct env_rcpt *r = &m->env.rcpts[i];

		if (r->state == RS_PENDING && r->attempts > 0) {
			late++;
			notice_add(m, i, r->addr, r->last_error, NULL,
			    NOTICE_DELAYED);
		}
	}
	/* Warned, or NOTIFY= wanted no warning: either way, once. */
	if (late > 0 && (m->fails == NULL ||
	    notice_dsn(m, m->fails, 1) == 0)) {
		m->env.flags |= ENV_WARNED;
		m->dirty = 1;
	}
	notice_free(m);
}

