/*
 * policy: verdict steps of the SMTP session, in the smtp process (see
 * policy.h).  SPF runs on libspf2, whose DNS layer blocks, so evaluations
 * run in a few worker threads of this process and never on the loop: a
 * job goes to the workers over a mutex-guarded list, the verdict comes
 * back through a pipe the loop reads.  A verdict later than spf-timeout
 * is replaced by temperror; the worker's late answer is dropped.
 */
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "dns/spfdns.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/util.h"
#include "smtpd/policy.h"

#define POLICY_THREADS	4	/* started with */
#define POLICY_MAX_THREADS 32	/* grown to while checks wait */

struct policy_job {
	struct policy_job	*next;
	uint64_t		 sid;
	struct policy_txn	*txn;		/* NULL once given up */
	char			 ip[64];
	char			*helo, *sender;
	struct spf_verdict	 v;
	struct event		*timer;
	int			 queued;	/* in the list or a worker's */
	int			 taken;		/* a worker's (under pol.lock) */
	uint64_t		 deadline_ms;	/* its lookups end then */
};

static struct {
	struct event_base	*base;
	const struct conf	*conf;
	policy_cb		 cb;
	struct spfdns		*dns;
	pthread_mutex_t		 lock;
	pthread_cond_t		 cond;
	struct policy_job	*head, **tail;
	int			 pipe[2];
	struct event		*ev;
	uint64_t		 timeout_ms;
	int			 nidle, nqueue;	/* under lock */
	int			 nthreads;	/* the loop's */
} pol = { .lock = PTHREAD_MUTEX_INITIALIZER,
	  .cond = PTHREAD_COND_INITIALIZER };

static void *
policy_worker(void *arg)
{
	struct spf *spf = arg;

	for (;;) {
		struct policy_job *j;
		struct spf_request q;

		pthread_mutex_lock(&pol.lock);
		pol.nidle++;
		while (pol.head == NULL)
			pthread_cond_wait(&pol.cond, &pol.lock);
		pol.nidle--;
		pol.nqueue--;
		j = pol.head;
		pol.head = j->next;
		if (pol.head == NULL)
			pol.tail = &pol.head;
		j->taken = 1;
		pthread_mutex_unlock(&pol.lock);
		memset(&q, 0, sizeof(q));
		q.ip = j->ip;
		q.helo = j->helo;
		q.sender = j->sender;
		q.deadline_ms = j->deadline_ms;
		spf_check(spf, &q, &j->v);
		/* The pointer itself: a pipe write this small is atomic. */
		if (write(pol.pipe[1], &j, sizeof(j)) != sizeof(j))
			log_warnx("event=spf result=error reason=\"lost a "
			    "verdict\"");
	}
	return NULL;
}

static void
policy_job_free(struct policy_job *j)
{
	if (j->timer)
		event_free(j->timer);
	free(j->helo);
	free(j->sender);
	free(j);
}

/*
 * The session no longer wants j: a job no worker has taken yet leaves the
 * list and is freed (1); a taken one's late answer is dropped (0).
 */
static int
policy_forget(struct policy_job *j)
{
	struct policy_job **pp;
	int gone = 0;

	j->txn = NULL;
	if (!j->queued)
		return 1;
	pthread_mutex_lock(&pol.lock);
	if (!j->taken) {
		for (pp = &pol.head; *pp != j; pp = &(*pp)->next)
			;
		if ((*pp = j->next) == NULL)
			pol.tail = pp;
		pol.nqueue--;
		gone = 1;
	}
	pthread_mutex_unlock(&pol.lock);
	return gone;
}

static uint64_t
policy_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
policy_log(const struct policy_job *j, const struct spf_verdict *v)
{
	log_info("s=%016llx event=spf result=%s identity=%s "
	    "domain=<%s> client=[%s] reason=\"%s\"",
	    (unsigned long long)j->sid, spf_result_name(v->result),
	    v->identity, log_a(v->domain), j->ip, log_q(v->reason));
}

/* A verdict for the session's transaction; its header to prepend. */
static void
policy_deliver(struct policy_job *j, const struct spf_verdict *v)
{
	struct policy_txn *t = j->txn;
	struct spf_request q = { .ip = j->ip, .helo = j->helo,
	    .sender = j->sender };

	t->pending = NULL;
	t->spf = *v;
	t->spf_done = 1;
	spf_received_header(&t->headers, v, &q,
	    conf_str(pol.conf, K_HOSTNAME));
	policy_log(j, v);
	pol.cb(j->sid);
}

static void
policy_readcb(evutil_socket_t fd, short ev, void *arg)
{
	struct policy_job *j;

	while (read(fd, &j, sizeof(j)) == sizeof(j)) {
		if (j->txn == NULL) {		/* timed out, or session gone */
			policy_job_free(j);
			continue;
		}
		evtimer_del(j->timer);
		policy_deliver(j, &j->v);
		policy_job_free(j);
	}
}

static void
policy_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct policy_job *j = arg;
	struct spf_verdict v;
	const char *at = strrchr(j->sender, '@');

	/* The worker may still be writing j->v: a verdict of our own. */
	memset(&v, 0, sizeof(v));
	v.result = SPF_TEMPERROR;
	v.identity = j->sender[0] ? "mailfrom" : "helo";
	str_copy(v.domain, j->sender[0] ? (at ? at + 1 : j->sender) : j->helo,
	    sizeof(v.domain));
	str_copy(v.reason, j->queued ? "timed out" : "no resolver",
	    sizeof(v.reason));
	policy_deliver(j, &v);
	if (policy_forget(j))
		policy_job_free(j);
}

int
policy_fds(const struct conf *conf)
{
	int on = 0;

	for (size_t i = 0; i < conf->nlisteners; i++)
		on |= conf_spf_enabled(conf, &conf->listeners[i]);
	/* Our pipe, libunbound's pipes and resolver thread (its UDP and TCP
	 * query sockets, see spfdns_new), a socket per worker. */
	return on ? 2 + 8 + SPFDNS_SOCKETS + 2 * POLICY_MAX_THREADS : 0;
}

/* One more worker (pol.nthreads counts it); 0 or -1. */
static int
policy_spawn(void)
{
	struct spf *spf = spf_new(pol.dns, conf_str(pol.conf, K_HOSTNAME));
	pthread_t t;

	if (spf == NULL || pthread_create(&t, NULL, policy_worker, spf) != 0) {
		log_warnx("event=spf result=warn reason=\"no new worker\"");
		return -1;
	}
	pthread_detach(t);
	pol.nthreads++;
	return 0;
}

int
policy_init(struct event_base *base, const struct conf *conf, policy_cb cb)
{
	char err[256];

	pol.base = base;
	pol.conf = conf;
	pol.cb = cb;
	pol.tail = &pol.head;
	if (policy_fds(conf) == 0)
		return 0;
	pol.timeout_ms = (uint64_t)conf_num(conf, NULL, K_SPF_TIMEOUT);
	pol.dns = spfdns_new(conf->resolvers, conf->resolverlen,
	    conf->nresolvers, (int)pol.timeout_ms, err, sizeof(err));
	if (pol.dns == NULL) {
		log_warnx("event=start result=warn reason=\"SPF resolver: %s; "
		    "SPF answers temperror\"", log_q(err));
		return -1;
	}
	if (pipe2(pol.pipe, O_CLOEXEC) == -1)
		return -1;
	fcntl(pol.pipe[0], F_SETFL, O_NONBLOCK);
	pol.ev = event_new(base, pol.pipe[0], EV_READ | EV_PERSIST,
	    policy_readcb, NULL);
	event_add(pol.ev, NULL);
	for (int i = 0; i < POLICY_THREADS; i++)
		if (policy_spawn() == -1)
			return -1;
	return 0;
}

int
policy_mail(struct policy_txn *t, uint64_t sid, const struct listener *l,
    const struct sockaddr_storage *ss, const char *ip, const char *helo,
    const char *sender, int exempt)
{
	struct policy_job *j;
	struct timeval tv;
	char ascii[1024];
	int grow;

	policy_txn_reset(t);
	if (exempt || !conf_spf_enabled(pol.conf, l) ||
	    conf_is_trusted(pol.conf, (const struct sockaddr *)ss))
		return 0;
	j = xcalloc(1, sizeof(*j));
	j->sid = sid;
	j->txn = t;
	str_copy(j->ip, ip, sizeof(j->ip));
	j->helo = xstrdup(helo);
	/* SPF names domains by their A-labels (RFC 8616 4): a U-label
	 * sender domain is the same domain, not an unknown one. */
	if (*sender != '\0' && addr_has8bit(sender) &&
	    addr_ascii(sender, ascii, sizeof(ascii)) == 0)
		sender = ascii;
	j->sender = xstrdup(sender);
	if (pol.dns == NULL) {		/* no resolver: temperror at once */
		t->pending = j;
		j->timer = evtimer_new(pol.base, policy_timeout, j);
		tv.tv_sec = 0;
		tv.tv_usec = 0;
		evtimer_add(j->timer, &tv);
		return 1;
	}
	t->pending = j;
	j->queued = 1;
	j->deadline_ms = policy_now_ms() + pol.timeout_ms;
	j->timer = evtimer_new(pol.base, policy_timeout, j);
	tv.tv_sec = (time_t)(pol.timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(pol.timeout_ms % 1000) * 1000;
	evtimer_add(j->timer, &tv);
	/* A check waits behind slow ones only when POLICY_MAX_THREADS
	 * are busy: a few sessions on a black-holed nameserver do not
	 * hold up everyone else's until spf-timeout. */
	pthread_mutex_lock(&pol.lock);
	*pol.tail = j;
	pol.tail = &j->next;
	pol.nqueue++;
	grow = pol.nqueue > pol.nidle && pol.nthreads < POLICY_MAX_THREADS;
	pthread_cond_signal(&pol.cond);
	pthread_mutex_unlock(&pol.lock);
	if (grow)
		(void)policy_spawn();
	return 1;
}

int
policy_rcpt(const struct policy_txn *t, int srs, char *reply, size_t cap)
{
	if (!t->spf_done || srs)
		return 0;
	return spf_policy(&t->spf, reply, cap) != SPF_ACCEPT;
}

void
policy_txn_reset(struct policy_txn *t)
{
	struct policy_job *j = t->pending;

	if (j) {
		t->pending = NULL;
		evtimer_del(j->timer);
		if (policy_forget(j))
			policy_job_free(j);
	}
	t->spf_done = 0;
	memset(&t->spf, 0, sizeof(t->spf));
	buf_reset(&t->headers);
}

void
policy_txn_free(struct policy_txn *t)
{
	policy_txn_reset(t);
	buf_free(&t->headers);
}
