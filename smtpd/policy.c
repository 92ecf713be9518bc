/*
 * policy: verdict steps of the SMTP session, in the smtp process (see
 * policy.h).  SPF runs on libspf2, whose DNS layer blocks, so evaluations
 * run in a few worker threads of this process and never on the loop: a
 * job goes to the workers over a mutex-guarded list, the verdict comes
 * back through a pipe the loop reads.  A verdict later than spf-timeout
 * is replaced by temperror; the worker's late answer is dropped.
 *
 * The end-of-data step uses the same workers: a message's DKIM
 * signatures whose key is still needed go as one job (kind
 * POLICY_STEP_DATA), each key lookup bounded by the same deadline; the
 * body hashes and the signed header's digest were computed on the loop
 * as DATA streamed (auth/dkimverify.c).
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

#include "auth/authres.h"
#include "auth/dkimverify.h"
#include "auth/spfcache.h"
#include "auth/txtcache.h"
#include "conf/conf.h"
#include "dns/spfdns.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/util.h"
#include "smtpd/policy.h"

#define POLICY_THREADS	4	/* started with */
/* The longest dmarc= entry: "dmarc=temperror (" a reason of at most 48
   ", pct sampled out) header.from=" a domain " policy.dmarc=quarantine" */
#define POLICY_DMARC_AR_ROOM	400
#define POLICY_MAX_THREADS 32	/* grown to while checks wait */

struct policy_job {
	struct policy_job	*next;
	enum policy_step	 kind;
	uint64_t		 sid;
	struct policy_txn	*txn;		/* NULL once given up */
	char			 ip[64];
	char			*helo, *sender;
	struct spf_verdict	 v;
	struct event		*timer;
	int			 queued;	/* in the list or a worker's */
	int			 taken;		/* a worker's (under pol.lock) */
	uint64_t		 deadline_ms;	/* its lookups end then */
	struct dkim_check	*dk;		/* DATA: the signatures */
	size_t			 ndk;
	int			 dmarc;		/* DMARC policy discovery */
	int			 ndomains;
	char			 (*domains)[256];
	struct dmarc_policy_found *found;
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

static uint64_t	policy_now_ms(void);

/*
 * Decide one signature from its key: from the cache (auth/txtcache.h:
 * the record read as a key once, for its TTL), or (lookup) from the
 * DNS.  0: not in the cache and not looked up.
 */
static int
policy_key_check(struct dkim_check *c, uint64_t deadline_ms, int lookup)
{
	char name[DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 16];
	const char *txt[8];
	struct dkim_key *key = NULL;
	struct buf recs;
	size_t n = 0, k;
	uint32_t ttl;
	int r;

	dkim_check_keyname(c, name, sizeof(name));
	if (txtcache_key(name, policy_now_ms(), &key) == 0) {
		dkim_check_with(c, key);
		dkim_key_unref(key);
		return 1;
	}
	if (!lookup)
		return 0;
	buf_init(&recs);
	r = spfdns_txt(pol.dns, name, deadline_ms, &recs, &n, &ttl);
	if (r >= 0) {
		txtcache_put(name, r, recs.data, recs.len, n, ttl,
		    policy_now_ms());
		if (txtcache_key(name, policy_now_ms(), &key) == 0) {
			dkim_check_with(c, key);
			dkim_key_unref(key);
			buf_free(&recs);
			return 1;
		}
	}
	/* Not kept (a TTL of 0, a failure): read for this message. */
	for (k = 0; r == 0 && k < n && k < 8; k++)
		txt[k] = k == 0 ? recs.data : txt[k - 1] + strlen(txt[k - 1]) +
		    1;
	dkim_check_key(c, r, txt, r == 0 ? k : 0);
	buf_free(&recs);
	return 1;
}

/* A message's signatures whose keys are needed (in a worker). */
static void
policy_dkim_run(struct policy_job *j)
{
	size_t i;

	for (i = 0; i < j->ndk; i++)
		if (j->dk[i].result == DKIM_NONE)
			(void)policy_key_check(&j->dk[i], j->deadline_ms, 1);
}

/* DMARC's TXT lookups, bounded by the job's deadline (worker thread). */
static int
policy_txt(void *arg, const char *name, struct dmarc_txt *out)
{
	const struct policy_job *j = arg;
	struct buf b;
	size_t n;
	uint32_t ttl;
	int r;

	buf_init(&b);
	r = spfdns_txt(pol.dns, name, j->deadline_ms, &b, &n, &ttl);
	if (r >= 0)
		txtcache_put(name, r, b.data, b.len, n, ttl, policy_now_ms());
	if (r == 0)
		dmarc_txt_take(out, b.data, n);
	buf_free(&b);
	return r == 0 ? DMARC_DNS_OK : r == 1 ? DMARC_DNS_NONE : DMARC_DNS_TEMP;
}

/* DMARC's TXT lookups from the cache alone (on the loop): a name not
 * there sets *miss, and the discovery is left to a worker. */
static int
policy_txt_cached(void *arg, const char *name, struct dmarc_txt *out)
{
	int *miss = arg;
	struct buf b;
	size_t n = 0;
	int r;

	buf_init(&b);
	if ((r = txtcache_get(name, policy_now_ms(), &b, &n)) == -2)
		*miss = 1;
	else if (r == 0)
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
			if (write(pol.pipe[1], &j, sizeof(j)) != sizeof(j))
				log_warnx("event=dmarc result=error "
				    "reason=\"lost a verdict\"");
			continue;
		}
		if (j->kind == POLICY_STEP_DATA) {
			policy_dkim_run(j);
			if (write(pol.pipe[1], &j, sizeof(j)) != sizeof(j))
				log_warnx("event=dkim result=error "
				    "reason=\"lost a verdict\"");
			continue;
		}
		memset(&q, 0, sizeof(q));
		q.ip = j->ip;
		q.helo = j->helo;
		q.sender = j->sender;
		q.deadline_ms = j->deadline_ms;
		spf_check(spf, &q, &j->v);
		spfcache_put(j->ip, j->helo, j->sender, &j->v,
		    policy_now_ms());
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
	free(j->dk);
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
policy_log(uint64_t sid, const char *ip, const struct spf_verdict *v)
{
	log_info("s=%016llx event=spf result=%s identity=%s "
	    "domain=<%s> client=[%s] reason=\"%s\"",
	    (unsigned long long)sid, spf_result_name(v->result),
	    v->identity, log_a(v->domain), ip, log_q(v->reason));
}

/* A verdict for the session's transaction; its header to prepend. */
static void
policy_spf_set(struct policy_txn *t, const struct spf_request *q,
    const struct spf_verdict *v)
{
	struct buf ar;

	t->step = POLICY_STEP_MAIL;
	t->spf = *v;
	t->spf_done = 1;
	spf_received_header(&t->headers, v, q,
	    conf_str(pol.conf, K_HOSTNAME));
	buf_init(&ar);
	spf_ar_part(&ar, v, q);
	str_copy(t->eod.ar.spf, ar.data, sizeof(t->eod.ar.spf));
	buf_free(&ar);
	policy_log(t->sid, q->ip, v);
}

/* A worker's verdict (or the timeout's): the session is called back. */
static void
policy_deliver(struct policy_job *j, const struct spf_verdict *v)
{
	struct spf_request q = { .ip = j->ip, .helo = j->helo,
	    .sender = j->sender };

	j->txn->pending = NULL;
	policy_spf_set(j->txn, &q, v);
	pol.cb(j->sid);
}

/* The end-of-data step's verdicts are all in (DKIM keys, DMARC policy):
 * the waiting session is called back. */
static void
policy_eod_ready(struct policy_txn *t)
{
	struct policy_eod *e = &t->eod;

	if (!e->wait || e->dkim_wait || (t->from && !t->dmarc_done))
		return;
	e->wait = 0;
	e->done = 1;
	t->step = POLICY_STEP_DATA;
	pol.cb(t->sid);
}

/* DMARC discovery is back (found: the worker's, or ours on a timeout). */
static void
policy_dmarc_back(struct policy_txn *t, struct dmarc_policy_found *found)
{
	t->dpending = NULL;
	free(t->found);
	t->found = found;
	t->dmarc_done = 1;
	policy_eod_ready(t);
}

static void
policy_dkim_log(uint64_t sid, const struct authres_dkim *d)
{
	log_info("s=%016llx event=dkim result=%s d=<%s> s=<%s> reason=\"%s\"",
	    (unsigned long long)sid, dkim_result_name(d->result), log_a(d->d),
	    log_a(d->s), log_q(d->comment));
}

/* The signatures' verdicts (dk: what the worker found, or NULL: it
 * took too long, and those still waiting are temperror). */
static void
policy_dkim_deliver(struct policy_job *j, const struct dkim_check *dk)
{
	struct policy_txn *t = j->txn;
	size_t i;

	t->pending = NULL;
	t->step = POLICY_STEP_DATA;
	for (i = 0; i < j->ndk && i < t->eod.ar.ndkim; i++) {
		struct authres_dkim *d = &t->eod.ar.dk[i];

		if (d->result != DKIM_NONE)
			continue;
		if (dk != NULL) {
			d->result = dk[i].result;
			str_copy(d->comment, dk[i].comment, sizeof(d->comment));
		} else {
			d->result = DKIM_TEMPERROR;
			str_copy(d->comment, j->queued ? "key lookup timed out" :
			    "no resolver", sizeof(d->comment));
		}
		policy_dkim_log(j->sid, d);
	}
	t->eod.dkim_wait = 0;
	policy_eod_ready(t);
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
		if (j->dmarc) {
			policy_dmarc_back(j->txn, j->found);
			j->found = NULL;
		} else if (j->kind == POLICY_STEP_DATA)
			policy_dkim_deliver(j, j->dk);
		else
			policy_deliver(j, &j->v);
		policy_job_free(j);
	}
}

static void
policy_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct policy_job *j = arg;
	struct spf_verdict v;
	const char *at;

	if (j->dmarc) {
		/* The worker may still be writing j->found: ours instead. */
		struct dmarc_policy_found *f = xcalloc((size_t)j->ndomains,
		    sizeof(*f));

		for (int i = 0; i < j->ndomains; i++) {
			f[i].found = DMARC_FOUND_TEMP;
			f[i].why = j->queued ? "policy lookup timed out" :
			    "no resolver";
			str_copy(f[i].domain, j->domains[i],
			    sizeof(f[i].domain));
		}
		policy_dmarc_back(j->txn, f);
		if (policy_forget(j))
			policy_job_free(j);
		return;
	}
	if (j->kind == POLICY_STEP_DATA) {
		policy_dkim_deliver(j, NULL);
		if (policy_forget(j))
			policy_job_free(j);
		return;
	}
	at = strrchr(j->sender, '@');
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
		    conf_dkim_verify_enabled(conf, &conf->listeners[i]) ||
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

/* A job to the workers, with its deadline (or timed out at once when
 * there is no resolver). */
static void
policy_queue(struct policy_job *j)
{
	struct timeval tv;
	int grow;

	if (j->dmarc)
		j->txn->dpending = j;
	else
		j->txn->pending = j;
	if (pol.dns == NULL) {		/* no resolver: temperror at once */
		j->timer = evtimer_new(pol.base, policy_timeout, j);
		tv.tv_sec = 0;
		tv.tv_usec = 0;
		evtimer_add(j->timer, &tv);
		return;
	}
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
}

int
policy_mail(struct policy_txn *t, uint64_t sid, const struct listener *l,
    const struct sockaddr_storage *ss, const char *ip, const char *helo,
    const char *sender, int exempt)
{
	struct policy_job *j;
	struct spf_verdict v;
	char ascii[1024];

	policy_txn_reset(t);
	t->l = l;
	t->sid = sid;
	str_copy(t->ip, ip, sizeof(t->ip));
	str_copy(t->mfdom, strrchr(sender, '@') ? strrchr(sender, '@') + 1 :
	    "", sizeof(t->mfdom));
	t->checks = !exempt && !conf_is_trusted(pol.conf,
	    (const struct sockaddr *)ss);
	if (!t->checks || !conf_spf_enabled(pol.conf, l))
		return 0;
	/* SPF names domains by their A-labels (RFC 8616 4): a U-label
	 * sender domain is the same domain, not an unknown one. */
	if (*sender != '\0' && addr_has8bit(sender) &&
	    addr_ascii(sender, ascii, sizeof(ascii)) == 0)
		sender = ascii;
	/* The same request lately: its verdict, here and now. */
	if (pol.dns != NULL && spfcache_get(ip, helo, sender, policy_now_ms(),
	    &v) == 0) {
		struct spf_request q = { .ip = ip, .helo = helo,
		    .sender = sender };

		policy_spf_set(t, &q, &v);
		return 0;
	}
	j = xcalloc(1, sizeof(*j));
	j->sid = sid;
	j->txn = t;
	str_copy(j->ip, ip, sizeof(j->ip));
	j->helo = xstrdup(helo);
	j->sender = xstrdup(sender);
	policy_queue(j);
	return 1;
}

int
policy_rcpt(const struct policy_txn *t, int srs, char *reply, size_t cap)
{
	if (!t->spf_done || srs)
		return 0;
	return spf_policy(&t->spf, reply, cap) != SPF_ACCEPT;
}

/* ---- the end-of-data step ------------------------------------------------ */

#define POLICY_HELD_MAX	(16 * 1024)	/* an Authentication-Results field
					   held while its authserv-id is
					   not yet read */

const char *
policy_authserv_id(void)
{
	const char *id = conf_str(pol.conf, K_AUTHSERV_ID);

	return id ? id : conf_str(pol.conf, K_HOSTNAME);
}

void
policy_data(struct policy_txn *t)
{
	struct policy_eod *e = &t->eod;

	e->on = t->checks;
	if (!e->on)
		return;
	/* The header is kept for every checked message (DMARC reads its
	 * From:); signatures are read when DKIM is verified. */
	e->dkimv = dkimv_new(time(NULL));
	if (conf_dkim_verify_enabled(pol.conf, t->l))
		e->ar.dkim = 1;
	else
		dkimv_headers_only(e->dkimv);
	t->dmarc_mode = conf_dmarc_mode(pol.conf, t->l);
	if (t->dmarc_mode != DMARC_MODE_OFF) {
		t->from = xmalloc(sizeof(*t->from));
		dmarc_from_init(t->from);
	}
}

static void
policy_put(struct buf *out, const char *text, size_t len)
{
	buf_append(out, text, len);
	buf_append(out, "\r\n", 2);
}

/* The held field is complete, or as read as it will be: kept or not. */
static void
policy_held_end(struct policy_txn *t, struct buf *out)
{
	struct policy_eod *e = &t->eod;

	if (e->held.len > 0) {
		if (authres_claims(e->held.data, e->held.len,
		    policy_authserv_id()) == 1)
			e->removed++;
		else
			policy_put(out, e->held.data, e->held.len);
	}
	buf_reset(&e->held);
	e->dropping = 0;
}

/* The held field grew: decide as soon as its authserv-id is read. */
static void
policy_held_try(struct policy_txn *t, struct buf *out)
{
	struct policy_eod *e = &t->eod;
	int r = authres_claims(e->held.data, e->held.len, policy_authserv_id());

	if (r == 1) {		/* RFC 8601 5: ours, from outside: removed */
		e->removed++;
		e->dropping = 1;
		buf_reset(&e->held);
	} else if (r == 0 || e->held.len > POLICY_HELD_MAX) {
		policy_put(out, e->held.data, e->held.len);
		buf_reset(&e->held);
	}
}

void
policy_hline(struct policy_txn *t, const char *line, size_t len,
    struct buf *out)
{
	struct policy_eod *e = &t->eod;

	if (e->dkimv)
		dkimv_hline(e->dkimv, line, len);
	if (t->from)
		dmarc_from_line(t->from, line, len);
	if (len > 0 && (line[0] == ' ' || line[0] == '\t')) {
		if (e->dropping)
			return;
		if (e->held.len == 0) {
			policy_put(out, line, len);
			return;
		}
		buf_append(&e->held, "\r\n", 2);
		buf_append(&e->held, line, len);
		policy_held_try(t, out);
		return;
	}
	policy_held_end(t, out);
	if (len >= 22 && strncasecmp(line, "Authentication-Results", 22) == 0) {
		buf_append(&e->held, line, len);
		policy_held_try(t, out);
		return;
	}
	policy_put(out, line, len);
}

/* The header has ended: DMARC discovery for each From: domain. */
static void
policy_dmarc_start(struct policy_txn *t)
{
	struct policy_job *j;

	struct dmarc_policy_found *f;
	int miss = 0;

	if (t->from->status != DMARC_FROM_OK || t->from->ndomains == 0) {
		t->dmarc_done = 1;	/* nothing to look up */
		return;
	}
	/* Every record in the cache: discovered here and now. */
	f = xcalloc((size_t)t->from->ndomains, sizeof(*f));
	for (int i = 0; i < t->from->ndomains && !miss; i++)
		dmarc_discover(policy_txt_cached, &miss, t->from->domain[i],
		    &f[i]);
	if (!miss) {
		free(t->found);
		t->found = f;
		t->dmarc_done = 1;
		return;
	}
	free(f);
	j = xcalloc(1, sizeof(*j));
	j->dmarc = 1;
	j->kind = POLICY_STEP_DATA;
	j->sid = t->sid;
	j->txn = t;
	j->ndomains = t->from->ndomains;
	j->domains = xcalloc((size_t)j->ndomains, sizeof(*j->domains));
	j->found = xcalloc((size_t)j->ndomains, sizeof(*j->found));
	for (int i = 0; i < j->ndomains; i++)
		str_copy(j->domains[i], t->from->domain[i],
		    sizeof(j->domains[i]));
	policy_queue(j);
}

/* The end of data, DKIM done: wait for DMARC discovery if it is out. */
static int
policy_eod_wait(struct policy_txn *t)
{
	if (t->from && !t->dmarc_done) {
		t->eod.wait = 1;
		return 1;
	}
	t->eod.done = 1;
	return 0;
}

/*
 * The DMARC verdict (RFC 7489 6.6.2): SPF's result from MAIL, the DKIM
 * signatures verified here, the policies discovered.  The dmarc= entry
 * and a quarantine's mark go into the field; reject and temperror are
 * the step's refusal, unless the mode is monitor; the evaluation is
 * encoded for the store.
 */
static void
policy_dmarc_verdict(struct policy_txn *t)
{
	struct policy_eod *e = &t->eod;
	struct dmarc_verdict *v = &t->dmarc;
	struct dmarc_auth au;
	struct buf b;
	const char *override = "", *act;
	int disp;

	memset(&au, 0, sizeof(au));
	au.spf = t->spf_done ? t->spf.result : SPF_NONE;
	/* DMARC takes SPF's MAIL FROM result (RFC 7489 4.1); for <> that
	   is the HELO identity (RFC 7208 2.4) */
	str_copy(au.spf_domain, t->spf_done ? t->spf.domain : "",
	    sizeof(au.spf_domain));
	for (size_t i = 0; i < e->ar.ndkim && i < DMARC_DKIM_MAX; i++) {
		str_copy(au.dkim[au.ndkim].d, e->ar.dk[i].d,
		    sizeof(au.dkim[0].d));
		au.dkim[au.ndkim++].pass = e->ar.dk[i].result == DKIM_PASS;
	}
	dmarc_evaluate(t->from, t->found, &au, arc4random_uniform(100), v);
	disp = v->result == DMARC_RES_FAIL ||
	    v->result == DMARC_RES_PERMERROR ? v->disposition : DMARC_POL_NONE;
	if (v->sampled_out)
		override = "sampled_out";
	if (t->dmarc_mode == DMARC_MODE_MONITOR &&
	    (disp != DMARC_POL_NONE || v->result == DMARC_RES_TEMPERROR)) {
		disp = DMARC_POL_NONE;
		override = "local_policy";
	} else if (v->result == DMARC_RES_TEMPERROR) {
		e->refuse = 1;
		snprintf(e->reply, sizeof(e->reply), "451 4.7.5 DMARC policy "
		    "of %.80s not found for now (%s), try again later",
		    v->from_domain, v->reason ? v->reason : "temperror");
	} else if (disp == DMARC_POL_REJECT) {
		e->refuse = 1;
		if (v->result == DMARC_RES_PERMERROR)
			snprintf(e->reply, sizeof(e->reply), "550 5.7.1 "
			    "message refused: %s (RFC 5322 3.6)", v->reason);
		else
			snprintf(e->reply, sizeof(e->reply), "550 5.7.1 "
			    "DMARC: %.100s refuses mail it has not "
			    "authenticated (%s)", v->from_domain, v->reason);
	}
	t->quarantine = !e->refuse && disp == DMARC_POL_QUARANTINE;
	buf_init(&b);
	dmarc_ar_part(&b, v);
	str_copy(e->ar.extra[0].text, b.data, sizeof(e->ar.extra[0].text));
	buf_free(&b);
	if (t->quarantine)
		snprintf(e->ar.mark, sizeof(e->ar.mark), "X-Tern-DMARC: "
		    "quarantine; header.from=%.253s", v->from_domain);
	dmarc_store_encode(&t->dmarc_rec, (uint64_t)time(NULL), t->ip,
	    t->mfdom, &au, v, e->refuse && disp == DMARC_POL_REJECT ?
	    DMARC_POL_REJECT : e->refuse ? DMARC_POL_NONE : disp, override);
	act = e->refuse ? (e->reply[0] == '4' ? "tempfail" : "reject") :
	    t->quarantine ? "quarantine" : "accept";
	log_info("s=%016llx event=dmarc result=%s from_domain=<%s> "
	    "policy=%s disposition=%s action=%s%s%s spf=%s spf_aligned=%d "
	    "dkim_aligned=%d client=[%s] reason=\"%s\"",
	    (unsigned long long)t->sid, dmarc_result_name(v->result),
	    log_a(v->from_domain), v->has_rec ? dmarc_policy_name(v->policy) :
	    "none", dmarc_policy_name(disp), act, *override ? " override=" :
	    "", override, spf_result_name(au.spf), v->spf_aligned,
	    v->dkim_aligned, t->ip, log_q(v->reason ? v->reason : ""));
}

size_t
policy_hend(struct policy_txn *t, struct buf *out, int top, int64_t off)
{
	struct policy_eod *e = &t->eod;
	const char *d, *sel, *b8;
	struct buf room;
	size_t i, n;

	policy_held_end(t, out);
	if (t->from) {
		dmarc_from_end(t->from);
		policy_dmarc_start(t);
		/* room for the dmarc= entry and a quarantine's mark */
		e->ar.extra[0].room = POLICY_DMARC_AR_ROOM;
		e->ar.markroom = AUTHRES_MARK_MAX - 1;
	}
	if (e->dkimv)
		dkimv_hend(e->dkimv);
	if (e->dkimv && e->ar.dkim) {
		n = dkimv_nsigs(e->dkimv);
		e->ar.ndkim = n < DKIM_VERIFY_MAX ? n : DKIM_VERIFY_MAX;
		for (i = 0; i < e->ar.ndkim; i++) {
			dkimv_sig_ids(e->dkimv, i, &d, &sel, &b8);
			str_copy(e->ar.dk[i].d, d, sizeof(e->ar.dk[i].d));
			str_copy(e->ar.dk[i].s, sel, sizeof(e->ar.dk[i].s));
			str_copy(e->ar.dk[i].b8, b8, sizeof(e->ar.dk[i].b8));
		}
	}
	if (!e->on || (e->room = authres_room(&e->ar,
	    policy_authserv_id())) == 0)
		return 0;
	/* Blanks until the end of data: the file is not committed before
	 * policy_data_done writes the field over them. */
	buf_init(&room);
	n = e->room > 2 ? e->room - 2 : 0;
	buf_reserve(&room, n + 2);
	memset(room.data, ' ', n);
	room.len = n;
	buf_append(&room, "\r\n", 2);
	if (top) {
		e->room_off = off;
		buf_append(&room, out->data, out->len);
		buf_reset(out);
		buf_append(out, room.data, room.len);
	} else {
		e->room_off = off + (int64_t)out->len;
		buf_append(out, room.data, room.len);
	}
	buf_free(&room);
	return e->room;
}

void
policy_bline(struct policy_txn *t, const char *line, size_t len)
{
	if (t->eod.dkimv)
		dkimv_bline(t->eod.dkimv, line, len);
}

int
policy_data_end(struct policy_txn *t, uint64_t sid)
{
	struct policy_eod *e = &t->eod;
	struct dkim_check *dk;
	struct policy_job *j;
	size_t i, n, wait = 0;

	t->step = POLICY_STEP_DATA;
	e->sid = sid;
	if (t->from && !t->from->done) {	/* a message that is all header */
		dmarc_from_end(t->from);
		policy_dmarc_start(t);
	}
	if (e->dkimv == NULL || !e->ar.dkim)
		return policy_eod_wait(t);
	dk = xcalloc(DKIM_VERIFY_MAX, sizeof(*dk));
	n = dkimv_end(e->dkimv, dk, DKIM_VERIFY_MAX);
	for (i = 0; i < n && i < e->ar.ndkim; i++) {
		struct authres_dkim *a = &e->ar.dk[i];

		/* A key in the cache: checked here and now. */
		if (dk[i].result == DKIM_NONE && pol.dns != NULL)
			(void)policy_key_check(&dk[i], 0, 0);
		a->result = dk[i].result;
		str_copy(a->comment, dk[i].comment, sizeof(a->comment));
		if (a->result == DKIM_NONE)
			wait++;
		else
			policy_dkim_log(sid, a);
	}
	if (wait == 0) {
		free(dk);
		return policy_eod_wait(t);
	}
	j = xcalloc(1, sizeof(*j));
	j->kind = POLICY_STEP_DATA;
	j->sid = sid;
	j->txn = t;
	j->dk = dk;
	j->ndk = n;
	e->dkim_wait = 1;
	e->wait = 1;
	policy_queue(j);
	return 1;
}

int
policy_data_done(struct policy_txn *t, int fd)
{
	struct policy_eod *e = &t->eod;
	struct buf b;
	ssize_t w;

	if (e->removed > 0)
		log_info("s=%016llx event=authres result=removed count=%zu "
		    "authserv_id=<%s>", (unsigned long long)e->sid, e->removed,
		    log_a(policy_authserv_id()));
	if (t->from)
		policy_dmarc_verdict(t);
	if (e->on && e->room > 0) {
		buf_init(&b);
		if (authres_format(&b, policy_authserv_id(), &e->ar,
		    e->room) == -1) {
			buf_free(&b);
			errno = EINVAL;
			return -1;
		}
		w = pwrite(fd, b.data, b.len, (off_t)e->room_off);
		buf_free(&b);
		if (w != (ssize_t)e->room) {
			if (w >= 0)
				errno = EIO;
			return -1;
		}
	}
	return e->refuse ? 1 : 0;
}

size_t
policy_header_fields(const struct policy_txn *t, const char *name,
    const char **out, size_t *lens, size_t max)
{
	return t->eod.dkimv ? dkimv_fields(t->eod.dkimv, name, out, lens,
	    max) : 0;
}

static void
policy_eod_reset(struct policy_eod *e)
{
	struct buf held = e->held;

	dkimv_free(e->dkimv);
	buf_reset(&held);
	memset(e, 0, sizeof(*e));
	e->held = held;
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
	t->step = POLICY_STEP_MAIL;
	t->checks = 0;
	policy_eod_reset(&t->eod);
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
	t->dmarc_done = t->quarantine = 0;
	t->dmarc_mode = DMARC_MODE_OFF;
	memset(&t->dmarc, 0, sizeof(t->dmarc));
	buf_reset(&t->dmarc_rec);
}

void
policy_txn_free(struct policy_txn *t)
{
	policy_txn_reset(t);
	buf_free(&t->headers);
	buf_free(&t->eod.held);
	buf_free(&t->dmarc_rec);
}
