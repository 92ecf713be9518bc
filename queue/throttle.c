/*
 * throttle: the queue process's half of `ternctl auth` (see throttle.h).
 * A control request becomes one IMSG_V_THROTTLE to the vault, named by a
 * job number; the vault's answer (records, untrusted like any peer's) is
 * turned into the text ternctl prints: times are formatted here, since
 * the vault may open no file (the time zone).  A control client that
 * goes away, or a vault that dies, ends the wait.
 */
#include <sys/queue.h>

#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/ctl.h"
#include "queue/throttle.h"

#define THROTTLE_WAITING_MAX	64	/* control requests in flight */

struct twait {
	TAILQ_ENTRY(twait) entry;
	uint64_t		 job;
	struct bufferevent	*bev;
	char			*key;	/* clearing it; NULL: the list */
};
TAILQ_HEAD(twaits, twait);

static struct {
	struct ipc	*vault;
	struct twaits	 waiting;
	size_t		 n;
	uint64_t	 nextjob;
	int		 init;
} th;

static void
throttle_init(void)
{
	if (!th.init) {
		TAILQ_INIT(&th.waiting);
		th.init = 1;
	}
}

static void
throttle_done(struct twait *w, struct buf *o)
{
	TAILQ_REMOVE(&th.waiting, w, entry);
	th.n--;
	ctl_reply(w->bev, o);
	free(w->key);
	free(w);
}

static void
throttle_fail(struct twait *w, const char *why)
{
	struct buf o;

	buf_init(&o);
	buf_printf(&o, "error %s\n", why);
	throttle_done(w, &o);
	buf_free(&o);
}

/* The control client is gone (or timed out) before the vault answered. */
static void
throttle_bev_event(struct bufferevent *bev, short what, void *arg)
{
	struct twait *w = arg;

	TAILQ_REMOVE(&th.waiting, w, entry);
	th.n--;
	bufferevent_free(w->bev);
	free(w->key);
	free(w);
}

/* One T_THROTTLE entry as a line; -1 if malformed. */
static int
throttle_line(struct buf *o, const struct rec *er)
{
	struct rec_reader rd;
	struct rec r;
	uint64_t kind = 2, fail = 0, delay = 0, refused = 0, until = 0;
	uint64_t known = UINT64_MAX;
	char *key = NULL, date[64] = "-", d[24] = "-", kn[24] = "-";
	time_t t;
	struct tm tm;
	int n;

	rec_reader_init(&rd, er->data, er->len);
	while ((n = rec_next(&rd, &r)) == 1) {
		if (r.tag == T_ID) {
			if (key != NULL || (key = rec_str(&r, 512)) == NULL)
				break;
		} else if ((r.tag == T_KIND && rec_u64(&r, &kind) == -1) ||
		    (r.tag == T_CODE && rec_u64(&r, &fail) == -1) ||
		    (r.tag == T_SIZE && rec_u64(&r, &delay) == -1) ||
		    (r.tag == T_STATUS && rec_u64(&r, &refused) == -1) ||
		    (r.tag == T_ARRIVAL && rec_u64(&r, &until) == -1) ||
		    (r.tag == T_KNOWN && rec_u64(&r, &known) == -1))
			break;
	}
	if (n != 0 || key == NULL || kind > 1 || until > INT64_MAX / 2) {
		free(key);
		return -1;
	}
	t = (time_t)until;
	if (until && localtime_r(&t, &tm) != NULL)
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	if (delay)
		snprintf(d, sizeof(d), "%llus", (unsigned long long)delay);
	if (known != UINT64_MAX)
		snprintf(kn, sizeof(kn), "%llu", (unsigned long long)known);
	buf_printf(o, "%-8s %-40s %8llu %6s  %-8s %5s  %s\n", kind ?
	    "account" : "client", key, (unsigned long long)fail, d, refused ?
	    "refused" : "delayed", kn, date);
	free(key);
	return 0;
}

/* The vault's answer: the list, or whether a clear found anything. */
static void
throttle_answer(struct twait *w, struct rec_reader *rd)
{
	struct buf o, lines;
	struct rec r;
	uint64_t status = VAULT_TEMP, left = 0, x;
	size_t count = 0;
	int n;

	buf_init(&o);
	buf_init(&lines);
	while ((n = rec_next(rd, &r)) == 1) {
		if (r.tag == T_STATUS && rec_u64(&r, &x) == 0)
			status = x;
		else if (r.tag == T_CODE && rec_u64(&r, &x) == 0)
			left = x;
		else if (r.tag == T_THROTTLE) {
			if (throttle_line(&lines, &r) == -1)
				break;
			count++;
		}
	}
	if (n != 0) {
		log_warnx("event=ipc result=error reason=\"bad throttle "
		    "answer from the vault\"");
		buf_puts(&o, "error bad answer from the vault\n");
	} else if (w->key && status == VAULT_OK) {
		log_info("event=auth-throttle result=cleared key=<%s>",
		    log_a(w->key));
		buf_printf(&o, "ok\n%s: failed logins forgotten\n", w->key);
	} else if (w->key)
		buf_printf(&o, "error %s is not throttled\n", w->key);
	else if (count == 0)
		buf_puts(&o, "ok\nno client or account has failed logins "
		    "counted\n");
	else {
		buf_printf(&o, "ok\n%-8s %-40s %8s %6s  %-8s %5s  %s\n",
		    "KIND", "CLIENT OR ACCOUNT", "FAILURES", "DELAY", "STATE",
		    "KNOWN", "UNTIL");
		buf_append(&o, lines.data, lines.len);
		if (left)
			buf_printf(&o, "(%llu more not shown)\n",
			    (unsigned long long)left);
	}
	throttle_done(w, &o);
	buf_free(&o);
	buf_free(&lines);
}

static void
throttle_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct rec_reader peek = *rd;
	struct rec r;
	struct twait *w;
	uint64_t job = 0;

	if (fd >= 0)
		close(fd);
	if (type != IMSG_V_REPLY) {
		log_warnx("event=ipc result=error reason=\"unexpected "
		    "message %d from the vault\"", type);
		return;
	}
	while (rec_next(&peek, &r) == 1)
		if (r.tag == T_JOB && rec_u64(&r, &job) == 0)
			break;
	TAILQ_FOREACH(w, &th.waiting, entry)
		if (w->job == job && job != 0) {
			throttle_answer(w, rd);
			return;
		}
}

/* The vault is gone: nobody answers what waits. */
static void
throttle_closed(struct ipc *c, void *arg)
{
	struct twait *w;

	if (th.vault == c)
		th.vault = NULL;
	ipc_free(c);
	while ((w = TAILQ_FIRST(&th.waiting)) != NULL)
		throttle_fail(w, "the vault restarted; try again");
}

void
throttle_channel(struct event_base *base, int fd)
{
	struct twait *w;

	throttle_init();
	if (th.vault != NULL) {
		ipc_free(th.vault);
		while ((w = TAILQ_FIRST(&th.waiting)) != NULL)
			throttle_fail(w, "the vault restarted; try again");
	}
	th.vault = ipc_new(base, fd, throttle_msg, throttle_closed, NULL);
}

void
throttle_ask(struct bufferevent *bev, const char *key)
{
	struct twait *w;
	struct buf b;

	throttle_init();
	w = xcalloc(1, sizeof(*w));
	w->bev = bev;
	w->key = key ? xstrdup(key) : NULL;
	w->job = ++th.nextjob;
	TAILQ_INSERT_TAIL(&th.waiting, w, entry);
	th.n++;
	if (th.vault == NULL || th.n > THROTTLE_WAITING_MAX) {
		throttle_fail(w, th.vault ? "too many requests at once" :
		    "the vault is not running");
		return;
	}
	/* Until the answer, only the client's going away matters. */
	bufferevent_setcb(bev, NULL, NULL, throttle_bev_event, w);
	buf_init(&b);
	rec_put_u64(&b, T_JOB, w->job);
	if (key)
		rec_put_str(&b, T_ID, key);
	if (ipc_send(th.vault, IMSG_V_THROTTLE, b.data, b.len, -1) == -1)
		throttle_fail(w, "the vault is not running");
	buf_free(&b);
}
