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
	int			 dmarc;		/* DMARC discovery, not SPF */
	int			 ndomains;
	char			 (*domains)[256];
	struct dmarc_policy_found *found;
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

/* DMARC's TXT lookups, bounded by the job's deadline (worker thread). */
static int
policy_txt(void *arg, const char *name, struct dmarc_txt *out)
{
	const struct policy_job *j = arg;
	struct buf b;
	size_t n;
	int r;

	buf_init(&b);
	r = spfdns_txt(pol.dns, name, j->deadline_ms, &b, &n);
	if (r == 0)
		dmarc_txt_take(out, b.data, n);
	buf_free(&b);
	return r == 0 ? DMARC_DNS_OK : r == 1 ? DMARC_DNS_NONE : DMARC_DNS_TEMP;
}

/* DMARC policy discovery for each From: domain (worker thread). */
static void
policy_discover(struct policy_job *j)
{
	for (int i = 0; i < j->ndomains; i++)
		dmarc_discover(policy_txt, j, j->domains[i], &j->found[i]);
}

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
		if (j->dmarc) {
			policy_discover(j);
			goto done;
		}
		memset(&q, 0, sizeof(q));
		q.ip = j->ip;
		q.helo = j->helo;
		q.sender = j->sender;
		q.deadline_ms = j->deadline_ms;
		spf_check(spf, &q, &j->v);
done:
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
	free(j->domains);
	free(j->found);
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

static void	policy_dmarc_back(struct policy_job *);

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
		if (j->dmarc)
			policy_dmarc_back(j);
		else
			policy_deliver(j, &j->v);
		policy_job_free(j);
	}
}

/* DMARC discovery is back (or given up): the found policies are the
   transaction's; the end of data may be waiting for them. */
static void
policy_dmarc_back(struct policy_job *j)
{
	struct policy_txn *t = j->txn;

	t->dpending = NULL;
	t->found = j->found;
	j->found = NULL;
	t->dmarc_done = 1;
	if (t->eod_wait) {
		t->eod_wait = 0;
		pol.cb(j->sid);
	}
}

static void
policy_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct policy_job *j = arg;
	struct spf_verdict v;

	if (j->dmarc) {
		/* The worker may still be writing j->found: ours instead. */
		struct dmarc_policy_found *f = xcalloc((size_t)j->ndomains +
		    1, sizeof(*f));
		struct policy_txn *t = j->txn;

		for (int i = 0; i < j->ndomains; i++) {
			f[i].found = DMARC_FOUND_TEMP;
			f[i].why = j->queued ? "policy lookup timed out" :
			    "no resolver";
			str_copy(f[i].domain, j->domains[i],
			    sizeof(f[i].domain));
		}
		t->dpending = NULL;
		t->found = f;
		t->dmarc_done = 1;
		if (t->eod_wait) {
			t->eod_wait = 0;
			pol.cb(j->sid);
		}
		if (policy_forget(j))
			policy_job_free(j);
		return;
	}
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
		on |= conf_spf_enabled(conf, &conf->listeners[i]) ||
		    conf_dmarc_mode(conf, &conf->listeners[i]) !=
		    DMARC_MODE_OFF;
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
	/* The public suffix list is read now, before the filter. */
	if (dmarc_init(NULL) == -1)
		log_warnx("event=start result=warn reason=\"no public suffix "
		    "list: DMARC's relaxed alignment is exact\"");
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
policy_data(struct policy_txn *t, const struct listener *l,
    const struct sockaddr_storage *ss, int exempt)
{
	t->dmarc_mode = conf_dmarc_mode(pol.conf, l);
	if (exempt || t->dmarc_mode == DMARC_MODE_OFF ||
	    conf_is_trusted(pol.conf, (const struct sockaddr *)ss)) {
		t->dmarc_mode = DMARC_MODE_OFF;
		return;
	}
	t->from = xmalloc(sizeof(*t->from));
	dmarc_from_init(t->from);
}

/* The header has ended: discovery for each From: domain, in a worker. */
static void
policy_dmarc_start(struct policy_txn *t, uint64_t sid)
{
	struct policy_job *j;
	struct timeval tv;
	int grow;

	if (t->from->status != DMARC_FROM_OK || t->from->ndomains == 0) {
		t->dmarc_done = 1;	/* nothing to look up */
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->dmarc = 1;
	j->sid = sid;
	j->txn = t;
	j->ndomains = t->from->ndomains;
	j->domains = xcalloc((size_t)j->ndomains, sizeof(*j->domains));
	j->found = xcalloc((size_t)j->ndomains, sizeof(*j->found));
	for (int i = 0; i < j->ndomains; i++)
		str_copy(j->domains[i], t->from->domain[i],
		    sizeof(j->domains[i]));
	t->dpending = j;
	j->timer = evtimer_new(pol.base, policy_timeout, j);
	if (pol.dns == NULL) {		/* no resolver: temperror at once */
		tv.tv_sec = 0;
		tv.tv_usec = 0;
		evtimer_add(j->timer, &tv);
		return;
	}
	j->queued = 1;
	j->deadline_ms = policy_now_ms() + pol.timeout_ms;
	tv.tv_sec = (time_t)(pol.timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(pol.timeout_ms % 1000) * 1000;
	evtimer_add(j->timer, &tv);
	pthread_mutex_lock(&pol.lock);
	*pol.tail = j;
	pol.tail = &j->next;
	pol.nqueue++;
	grow = pol.nqueue > pol.nidle && pol.nthreads < POLICY_MAX_THREADS;
	pthread_cond_signal(&pol.cond);
	pthread_mutex_unlock(&pol.lock);
	if (grow)
		(void)policy_spawn();
}

void
policy_hline(struct policy_txn *t, uint64_t sid, const char *line,
    size_t len)
{
	if (t->from == NULL || t->from->done)
		return;
	dmarc_from_line(t->from, line, len);
	if (t->from->done)
		policy_dmarc_start(t, sid);
}

int
policy_eod_wait(struct policy_txn *t, uint64_t sid)
{
	if (t->from == NULL)
		return 0;
	if (!t->from->done) {		/* a message that is all header */
		dmarc_from_end(t->from);
		policy_dmarc_start(t, sid);
	}
	if (t->dmarc_done)
		return 0;
	t->eod_wait = 1;
	return 1;
}

enum policy_action
policy_dmarc(struct policy_txn *t, uint64_t sid, const char *ip,
    const char *mailfrom, const struct dmarc_auth *dk, struct buf *ar,
    struct buf *rec, char *reply, size_t cap)
{
	struct dmarc_auth au;
	struct dmarc_verdict *v = &t->dmarc;
	const char *at, *override = "";
	enum policy_action act = POLICY_ACCEPT;
	int disp;

	*reply = '\0';
	if (t->from == NULL || !t->dmarc_done)
		return POLICY_ACCEPT;
	memset(&au, 0, sizeof(au));
	if (dk)
		au = *dk;
	au.spf = t->spf_done ? t->spf.result : SPF_NONE;
	/* DMARC takes SPF's MAIL FROM result (RFC 7489 4.1); for <> that
	   is the HELO identity (RFC 7208 2.4) */
	str_copy(au.spf_domain, t->spf_done ? t->spf.domain : "",
	    sizeof(au.spf_domain));
	dmarc_evaluate(t->from, t->found, &au, arc4random_uniform(100), v);
	disp = v->disposition;
	if (v->result == DMARC_RES_TEMPERROR)
		act = POLICY_TEMPFAIL;
	else if (disp == DMARC_POL_REJECT)
		act = POLICY_REJECT;
	if (v->result != DMARC_RES_FAIL && v->result != DMARC_RES_PERMERROR &&
	    v->result != DMARC_RES_TEMPERROR)
		disp = DMARC_POL_NONE;
	if (v->sampled_out)
		override = "sampled_out";
	if (t->dmarc_mode == DMARC_MODE_MONITOR && (act != POLICY_ACCEPT ||
	    disp != DMARC_POL_NONE)) {
		act = POLICY_ACCEPT;
		disp = DMARC_POL_NONE;
		override = "local_policy";
	}
	if (act == POLICY_TEMPFAIL)
		disp = DMARC_POL_NONE;
	t->quarantine = act == POLICY_ACCEPT && disp == DMARC_POL_QUARANTINE;
	if (act == POLICY_REJECT)
		snprintf(reply, cap, "550 5.7.1 %s: message refused by the "
		    "DMARC policy of %s (%s)", v->result ==
		    DMARC_RES_PERMERROR ? "From: field" : "DMARC",
		    v->from_domain[0] ? v->from_domain : "the sender",
		    v->reason ? v->reason : "fail");
	else if (act == POLICY_TEMPFAIL)
		snprintf(reply, cap, "451 4.7.5 DMARC policy of %s could not "
		    "be found (%s), try again later", v->from_domain,
		    v->reason ? v->reason : "temperror");
	if (v->result == DMARC_RES_PERMERROR && act == POLICY_REJECT)
		snprintf(reply, cap, "550 5.7.1 message refused: %s (RFC 5322 "
		    "3.6, RFC 7489 6.6.1)", v->reason);
	if (ar)
		dmarc_ar_part(ar, v);
	at = strrchr(mailfrom, '@');
	if (rec)
		dmarc_store_encode(rec, (uint64_t)time(NULL), ip,
		    at ? at + 1 : "", &au, v, act == POLICY_REJECT ?
		    DMARC_POL_REJECT : disp, override);
	log_info("s=%016llx event=dmarc result=%s from_domain=<%s> "
	    "policy=%s disposition=%s action=%s%s%s spf=%s spf_aligned=%d "
	    "dkim_aligned=%d client=[%s] reason=\"%s\"",
	    (unsigned long long)sid, dmarc_result_name(v->result),
	    log_a(v->from_domain), v->has_rec ? dmarc_policy_name(v->policy) :
	    "none", dmarc_policy_name(act == POLICY_REJECT ? DMARC_POL_REJECT :
	    disp), act == POLICY_REJECT ? "reject" : act == POLICY_TEMPFAIL ?
	    "tempfail" : t->quarantine ? "quarantine" : "accept",
	    *override ? " override=" : "", override,
	    spf_result_name(au.spf), v->spf_aligned, v->dkim_aligned, ip,
	    log_q(v->reason ? v->reason : ""));
	return act;
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
	if ((j = t->dpending) != NULL) {
		t->dpending = NULL;
		evtimer_del(j->timer);
		if (policy_forget(j))
			policy_job_free(j);
	}
	free(t->from);
	t->from = NULL;
	free(t->found);
	t->found = NULL;
	t->dmarc_done = t->eod_wait = t->quarantine = 0;
	t->dmarc_mode = DMARC_MODE_OFF;
	memset(&t->dmarc, 0, sizeof(t->dmarc));
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
