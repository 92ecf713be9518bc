/*
 * ctl: the queue process's control socket, which ternctl talks to: one
 * request line (queue, summary, show ID, remove ID, hold ID, release ID,
 * flush [DOMAIN], credentials, accounts, account-release NAME, auth,
 * auth-clear KEY), one reply ("ok" or "error ...", then
 * text).  The socket was bound by the parent; its mode and group limit it
 * to root and control-group.  "credentials" (sent by ternctl user after a
 * change) is passed on to the parent, which reads the store again; it
 * carries nothing, so it can make the parent do no more than that.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/ipc.h"
#include "queue/ctl.h"
#include "queue/dest.h"
#include "queue/envelope.h"
#include "queue/limits.h"
#include "lib/esmtp.h"
#include "lib/log.h"
#include "queue/qint.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "queue/throttle.h"
#include "lib/util.h"

#define QUEUE_CTL_MAX		1024	/* longest control request */

static struct event_base *ctl_base;

static struct qmsg *
queue_find_msg(const char *id)
{
	struct qmsg *m;

	TAILQ_FOREACH(m, &queue_all, entry)
		if (str_casecmp(m->env.id, id) == 0)
			return m;
	return NULL;
}

static void
ctl_rcpt_status(struct buf *o, const struct env_rcpt *r)
{
	buf_printf(o, "%s", envelope_state_name(r->state));
	if (r->last_error)
		buf_printf(o, ": %s", r->last_error);
}

static void
ctl_list(struct buf *o)
{
	struct qmsg *m;
	size_t i, n = 0;
	uint64_t bytes = 0;
	char date[64];

	TAILQ_FOREACH(m, &queue_all, entry) {
		time_t t = (time_t)m->env.arrival;
		struct tm tm;

		if (m->removed)
			continue;
		if (n++ == 0)
			buf_puts(o, "-Queue ID-------- --Size-- ----Arrival Time---- "
			    "-Sender/Recipient-------\n");
		localtime_r(&t, &tm);
		strftime(date, sizeof(date), "%a %b %e %H:%M:%S", &tm);
		buf_printf(o, "%-16s%c %8llu %-20s  %s\n", m->env.id,
		    (m->env.flags & ENV_HOLD) ? '!' : ' ',
		    (unsigned long long)m->env.size, date,
		    m->env.sender[0] ? m->env.sender : "MAILER-DAEMON");
		bytes += m->env.size;
		for (i = 0; i < m->env.nrcpts; i++) {
			const struct env_rcpt *r = &m->env.rcpts[i];

			if (r->state == RS_DONE)
				continue;
			buf_printf(o, "%49s(", "");
			ctl_rcpt_status(o, r);
			buf_printf(o, ")\n%49s%s\n", "", r->addr);
		}
		buf_putc(o, '\n');
	}
	if (n == 0)
		buf_puts(o, "Mail queue is empty\n");
	else
		buf_printf(o, "-- %llu Kbytes in %zu Request%s.\n",
		    (unsigned long long)((bytes + 1023) / 1024), n,
		    n == 1 ? "" : "s");
}

static void
ctl_show_dsn(struct buf *o, const char *label, int ret, const char *envid,
    unsigned notify, const char *orcpt)
{
	struct buf p;

	/* The DSN parameters as the client gave them (xtext: plain text). */
	buf_init(&p);
	esmtp_mail_print(&p, ret, envid);
	esmtp_rcpt_print(&p, notify, orcpt);
	if (p.len)
		buf_printf(o, "%s%s\n", label, p.data);
	buf_free(&p);
}

static void
ctl_show(struct buf *o, const struct qmsg *m)
{
	char date[64];
	time_t t = (time_t)m->env.arrival;
	struct tm tm;
	size_t i, j;

	localtime_r(&t, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S %z", &tm);
	buf_printf(o, "id: %s\narrival: %s\nsize: %llu\nsender: <%s>\n"
	    "client: %s\nhelo: %s\nprotocol: %s\nbody: %s%s\n", m->env.id,
	    date, (unsigned long long)m->env.size, m->env.sender,
	    m->env.client ? m->env.client : "", m->env.helo ? m->env.helo : "",
	    m->env.proto ? m->env.proto : "", m->env.body8bit == 2 ?
	    "BINARYMIME" : m->env.body8bit ? "8BITMIME" : "7BIT",
	    m->env.smtputf8 ? " SMTPUTF8" : "");
	if (m->env.flags & ENV_HOLD)
		buf_puts(o, "held: by the admin (ternctl release)\n");
	ctl_show_dsn(o, "dsn:", m->env.ret, m->env.envid, 0, NULL);
	if (m->env.flags & ENV_URGENT)
		buf_puts(o, "urgent: first at each destination\n");
	for (i = 0; i < m->env.nrcpts; i++) {
		const struct env_rcpt *r = &m->env.rcpts[i];

		buf_printf(o, "recipient: <%s>\n  status: %s\n  attempts: %u\n",
		    r->addr, envelope_state_name(r->state), r->attempts);
		ctl_show_dsn(o, "  dsn:", 0, NULL, r->notify, r->orcpt);
		if (r->last_try) {
			t = (time_t)r->last_try;
			localtime_r(&t, &tm);
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
			buf_printf(o, "  last try: %s\n", date);
		}
		if (r->next_try && r->state != RS_DONE &&
		    r->state != RS_FAILED) {
			t = (time_t)r->next_try;
			localtime_r(&t, &tm);
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
			buf_printf(o, "  next try: %s\n", date);
		}
		if (r->last_error)
			buf_printf(o, "  last error: %s\n", r->last_error);
		for (j = 0; j < r->ndone; j++)
			buf_printf(o, "  delivered: %s\n", r->done[j]);
	}
}

static int
ctl_domain_match(const char *addr, const char *domain)
{
	const char *at = strrchr(addr, '@');

	return domain == NULL || (at && str_casecmp(at + 1, domain) == 0);
}

/* Retry now: everything, or the recipients at one domain. */
void
ctl_flush(const char *domain)
{
	struct qmsg *m;
	size_t i;

	TAILQ_FOREACH(m, &queue_all, entry)
		for (i = 0; i < m->env.nrcpts; i++) {
			struct env_rcpt *r = &m->env.rcpts[i];

			if ((r->state == RS_PENDING || r->state == RS_HELD) &&
			    ctl_domain_match(r->addr, domain)) {
				r->next_try = 0;
				r->state = RS_PENDING;
				sched_wake(m, 0);
			}
		}
	dest_flush(domain);
	sched_unblock();
}

/* flush --urgent ID: first in each destination's queue, tried now. */
static void
ctl_urgent(struct buf *o, struct qmsg *m)
{
	m->env.flags |= ENV_URGENT;
	spool_write_env(m);
	log_info("q=%s event=urgent reason=\"admin\"", m->env.id);
	buf_printf(o, "ok\n%s marked urgent\n", m->env.id);
	sched_wake(m, 0);
	sched_unblock();
}

static void
ctl_age(char *out, size_t len, long s)
{
	if (s < 0)
		snprintf(out, len, "-");
	else if (s < 120)
		snprintf(out, len, "%lds", s);
	else if (s < 7200)
		snprintf(out, len, "%ldm", s / 60);
	else
		snprintf(out, len, "%ldh", s / 3600);
}

/*
 * Per destination: what pacing learned (rate in recipients a minute,
 * concurrency), what waits for it, since when, the last reply and when
 * the next transaction may start.
 */
static void
ctl_destinations(struct buf *o)
{
	struct dest *d;
	struct qmsg *m;
	time_t now = time(NULL);
	size_t i, queued;
	uint64_t oldest;
	char age[32], next[32], rate[32];

	buf_printf(o, "%-24s %8s %4s %6s %6s %6s %7s  %s\n", "destination",
	    "rate/min", "conc", "active", "queued", "oldest", "next", "last reply");
	for (d = dest_first(); d; d = d->next) {
		const struct dest *p = dest_paced(d);

		queued = 0;
		oldest = 0;
		TAILQ_FOREACH(m, &queue_all, entry)
			for (i = 0; i < m->env.nrcpts; i++) {
				const struct env_rcpt *r = &m->env.rcpts[i];
				const char *at = strrchr(r->addr, '@');

				if (m->removed || (r->state != RS_PENDING &&
				    r->state != RS_HELD) || at == NULL ||
				    str_casecmp(at + 1, d->domain) != 0)
					continue;
				queued++;
				if (oldest == 0 || m->env.arrival < oldest)
					oldest = m->env.arrival;
			}
		ctl_age(age, sizeof(age), oldest ? (long)(now - (time_t)oldest) :
		    -1);
		if ((time_t)p->pace.next_ok > now)
			ctl_age(next, sizeof(next), (long)((time_t)p->pace.next_ok
			    - now));
		else
			snprintf(next, sizeof(next), "now");
		if (p->pace.rate > 0)
			snprintf(rate, sizeof(rate), "%.3g", p->pace.rate * 60);
		else
			snprintf(rate, sizeof(rate), "-");
		buf_printf(o, "%-24s %8s %4d %6d %6zu %6s %7s  %s\n", d->domain,
		    rate, (int)p->pace.conc, d->active, queued, age, next,
		    d->lasterr);
	}
	if (dest_first() == NULL)
		buf_puts(o, "(no remote destination yet)\n");
}

static void
ctl_hold(struct buf *o, struct qmsg *m, int hold)
{
	if (hold)
		m->env.flags |= ENV_HOLD;
	else
		m->env.flags &= ~(uint64_t)ENV_HOLD;
	spool_write_env(m);
	log_info("q=%s event=%s reason=\"admin\"", m->env.id, hold ? "hold" :
	    "release");
	buf_printf(o, "ok\n%s %s\n", m->env.id, hold ? "held" : "released");
	if (!hold)
		ctl_flush(NULL);
}

struct ctl_dom {
	char		 domain[256];
	size_t		 rcpts, msgs;
	uint64_t	 oldest;
	char		 lasterr[160];
	const struct qmsg *lastmsg;
};

/* Per destination domain: what waits, since when, and why. */
static void
ctl_summary(struct buf *o)
{
	struct ctl_dom *d = NULL;
	size_t nd = 0, i, k;
	struct qmsg *m;
	struct dest *de;

	TAILQ_FOREACH(m, &queue_all, entry)
		for (i = 0; i < m->env.nrcpts; i++) {
			const struct env_rcpt *r = &m->env.rcpts[i];
			const char *at = strrchr(r->addr, '@');

			if (r->state == RS_DONE || m->removed)
				continue;
			for (k = 0; k < nd; k++)
				if (str_casecmp(d[k].domain, at ? at + 1 : "") == 0)
					break;
			if (k == nd) {
				d = xreallocarray(d, nd + 1, sizeof(*d));
				memset(&d[nd], 0, sizeof(*d));
				str_copy(d[nd].domain, at ? at + 1 : "",
				    sizeof(d[nd].domain));
				str_lower(d[nd].domain);
				nd++;
			}
			d[k].rcpts++;
			if (d[k].lastmsg != m)
				d[k].msgs++;
			d[k].lastmsg = m;
			if (d[k].oldest == 0 || m->env.arrival < d[k].oldest)
				d[k].oldest = m->env.arrival;
			if (r->last_error)
				str_copy(d[k].lasterr, r->last_error,
				    sizeof(d[k].lasterr));
		}
	buf_printf(o, "%-30s %6s %6s %8s %6s  %s\n", "domain", "msgs", "rcpts",
	    "oldest", "conns", "last error");
	for (k = 0; k < nd; k++) {
		long age = (long)(time(NULL) - (time_t)d[k].oldest);
		int conns = 0;

		if ((de = dest_find(d[k].domain)) != NULL)
			conns = de->active;
		buf_printf(o, "%-30s %6zu %6zu %7ldm %6d  %s\n", d[k].domain,
		    d[k].msgs, d[k].rcpts, age / 60, conns, d[k].lasterr);
	}
	if (nd == 0)
		buf_puts(o, "(queue empty)\n");
	free(d);
}

static void
ctl_execute(const char *req, struct buf *o)
{
	const char *arg = strchr(req, ' ');
	struct qmsg *m = NULL;

	if (arg && (strncmp(req, "show ", 5) == 0 || strncmp(req, "remove ",
	    7) == 0 || strncmp(req, "hold ", 5) == 0 ||
	    strncmp(req, "release ", 8) == 0 ||
	    strncmp(req, "urgent ", 7) == 0)) {
		if ((m = queue_find_msg(arg + 1)) == NULL || m->removed) {
			buf_puts(o, "error no such message\n");
			return;
		}
	}
	if (strcmp(req, "queue") == 0) {
		buf_puts(o, "ok\n");
		ctl_list(o);
	} else if (strcmp(req, "destinations") == 0) {
		buf_puts(o, "ok\n");
		ctl_destinations(o);
	} else if (m && strncmp(req, "urgent ", 7) == 0) {
		ctl_urgent(o, m);
	} else if (strcmp(req, "summary") == 0) {
		buf_puts(o, "ok\n");
		ctl_summary(o);
	} else if (strcmp(req, "flush") == 0) {
		ctl_flush(NULL);
		buf_puts(o, "ok\nqueue flush started\n");
	} else if (arg && strncmp(req, "flush ", 6) == 0) {
		ctl_flush(arg + 1);
		buf_printf(o, "ok\nflush of %s started\n", arg + 1);
	} else if (m && strncmp(req, "show ", 5) == 0) {
		buf_puts(o, "ok\n");
		ctl_show(o, m);
	} else if (m && strncmp(req, "hold ", 5) == 0) {
		ctl_hold(o, m, 1);
	} else if (m && strncmp(req, "release ", 8) == 0) {
		ctl_hold(o, m, 0);
	} else if (arg && strncmp(req, "account-release ", 16) == 0) {
		limits_release(arg + 1, o);
	} else if (strcmp(req, "accounts") == 0) {
		limits_list(o);
	} else if (strcmp(req, "credentials") == 0) {
		/* ternctl user changed the store: the parent reads it again. */
		queue_tell_parent(IMSG_P_CREDENTIALS);
		buf_puts(o, "ok\nternd reads the credential store again\n");
	} else if (m && strncmp(req, "remove ", 7) == 0) {
		log_info("q=%s event=removed reason=\"admin\"", m->env.id);
		buf_printf(o, "ok\n%s removed\n", m->env.id);
		m->removed = 1;
		queue_settle(m);
	} else
		buf_puts(o, "error unknown request\n");
}

static void
ctl_done(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void
ctl_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void
ctl_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t len;
	struct buf o;

	line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > QUEUE_CTL_MAX)
			bufferevent_free(bev);
		return;
	}
	buf_init(&o);
	if (len > QUEUE_CTL_MAX || memchr(line, '\0', len))
		buf_puts(&o, "error request too long\n");
	else if (strcmp(line, "auth") == 0 || (strncmp(line, "auth-clear ",
	    11) == 0 && line[11] != '\0')) {
		/* The vault holds the AUTH throttle: answered later. */
		throttle_ask(bev, line[4] ? line + 11 : NULL);
		free(line);
		buf_free(&o);
		return;
	} else
		ctl_execute(line, &o);
	free(line);
	ctl_reply(bev, &o);
	buf_free(&o);
}

void
ctl_reply(struct bufferevent *bev, const struct buf *o)
{
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, ctl_done, ctl_event, NULL);
	bufferevent_write(bev, o->data, o->len);
}

static void
ctl_accept(evutil_socket_t lfd, short ev, void *arg)
{
	struct bufferevent *bev;
	struct timeval tv = { 10, 0 };
	int fd;

	if ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) == -1)
		return;
	bev = bufferevent_socket_new(ctl_base, fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, ctl_read, NULL, ctl_event, NULL);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void
ctl_start(struct event_base *base, int controlfd)
{
	struct event *ev;

	ctl_base = base;
	if (controlfd < 0)
		return;
	evutil_make_socket_nonblocking(controlfd);
	ev = event_new(base, controlfd, EV_READ | EV_PERSIST, ctl_accept, NULL);
	event_add(ev, NULL);
}
