/*
 * job: deliveries, in the queue process.  It turns a message's due
 * recipients into jobs: each is expanded with the current config and
 * aliases, local targets go to the parent as P_DELIVER (the parent runs
 * them as the recipient), remote ones are grouped by destination into
 * transactions for the smtp process (M_DELIVER), within the
 * destination's and the process's limits.  It records what each job comes
 * to (P_DELIVERED, M_RESULT, or an smtp process gone): targets served,
 * retries with backoff, failures owed to the sender.
 */
#include <sys/types.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "lib/esmtp.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/dest.h"
#include "queue/envelope.h"
#include "queue/job.h"
#include "queue/limits.h"
#include "queue/mta.h"
#include "queue/notice.h"
#include "queue/qint.h"
#include "queue/sched.h"
#include "queue/resolve.h"
#include "queue/spool.h"

#define JOB_HELD_RETRY		3600	/* seconds between held re-checks */

/* One target in flight; a remote transaction is several with one id. */
struct job {
	struct job	*next;
	uint64_t	 id;
	struct qmsg	*msg;
	size_t		 rcpt;
	char		*target;	/* the target's key */
	char		*desc;		/* its address */
	int		 remote;
	uint32_t	 epoch;		/* remote: the destination's, at start */
	double		 opened;	/* remote: when (dest_clock) */
	struct ipc	*peer;		/* remote: the smtp process doing it */
	char		*domain;	/* remote: the destination */
	char		*account;	/* local: the account it runs as */
	struct target	*mailbox;	/* a ~/.forward stage: the LMTP
					   delivery to the own mailbox next */
	time_t		 start;
};

/* What a recipient's current round of deliveries came to. */
struct rround {
	int	 temp, perm, held, wait;
	uint64_t reopen;	/* throttled: when its destination reopens */
	char	 err[512];
	char	 waitdom[256];	/* waiting for a slot at this destination */
	char	 waitacct[256];	/* waiting for a slot of this account */
	int	 served;	/* a target was served in this round */
	uint32_t saved_attempts;	/* a round that only waited is undone */
	uint64_t saved_last;
	int	 saved_dirty;
};

static struct {
	struct job		*list;
	size_t			 nlocal;	/* local deliveries in flight */
	size_t			 nremote;	/* remote transactions in flight */
	uint64_t		 nextjob;
} jobs;

void
job_init(void)
{
	/* Job ids of an earlier queue process may still come back. */
	jobs.nextjob = (uint64_t)time(NULL) << 24;
}

/* Local deliveries in flight: their outcomes are still to be recorded. */
size_t
job_local(void)
{
	return jobs.nlocal;
}

/*
 * The retry interval after a temporary failure.  The random part is drawn
 * per message and attempt, not per recipient, so a message's recipients
 * deferred together come due together and go out in one transaction.
 */
static uint64_t
job_backoff(const struct qmsg *m, uint32_t attempts)
{
	uint64_t min = (uint64_t)conf_num(queue_conf(), NULL, K_RETRY_MIN) /
	    1000;
	uint64_t max = (uint64_t)conf_num(queue_conf(), NULL, K_RETRY_MAX) /
	    1000;
	uint64_t d = min ? min : 1, pct = (uint64_t)conf_num(queue_conf(),
	    NULL, K_RETRY_JITTER), jitter;
	uint32_t i;

	for (i = 1; i < attempts && d < max; i++)
		d *= 2;
	if (d > max)
		d = max;
	/* Jitter, so retries of different messages do not stay in step. */
	jitter = 0xcbf29ce484222325ULL;		/* FNV-1a of the id */
	for (i = 0; m->env.id[i]; i++)
		jitter = (jitter ^ (unsigned char)m->env.id[i]) *
		    0x100000001b3ULL;
	jitter ^= (uint64_t)attempts * 0x9e3779b97f4a7c15ULL;
	jitter ^= jitter >> 29;
	if (d * pct / 100 > 0)
		d += jitter % (d * pct / 100 + 1);
	return d;
}

static struct rround *
job_rr(struct qmsg *m, size_t ri)
{
	if (m->rr == NULL || m->nrr < m->env.nrcpts) {
		m->rr = xreallocarray(m->rr, m->env.nrcpts, sizeof(*m->rr));
		memset(m->rr + m->nrr, 0, (m->env.nrcpts - m->nrr) *
		    sizeof(*m->rr));
		m->nrr = m->env.nrcpts;
	}
	return &m->rr[ri];
}

int
job_count(const struct qmsg *m, size_t rcpt)
{
	const struct job *j;
	int n = 0;

	for (j = jobs.list; j; j = j->next)
		if (j->msg == m && j->rcpt == rcpt)
			n++;
	return n;
}

/* Settle a recipient whose round has no deliveries left in flight. */
static void
job_rcpt_finish(struct qmsg *m, size_t ri)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct rround *rr = job_rr(m, ri);
	time_t now = time(NULL);
	uint64_t life = (uint64_t)conf_num(queue_conf(), NULL,
	    K_QUEUE_LIFETIME) / 1000;

	m->dirty = 1;
	if (rr->temp && (uint64_t)now > m->env.arrival + life) {
		r->state = RS_FAILED;
		envelope_set_error(r, rr->err[0] ? rr->err : "expired");
		notice_add(m, ri, r->addr, "message expired: retried for "
		    "the whole queue lifetime; last error follows", NULL, 0);
		if (rr->err[0])
			notice_add(m, ri, r->addr, rr->err, NULL, 0);
	} else if (rr->temp) {
		r->state = RS_PENDING;
		r->next_try = rr->reopen ? rr->reopen : (uint64_t)now +
		    job_backoff(m, r->attempts);
		envelope_set_error(r, rr->err);
	} else if (rr->held) {
		r->state = RS_HELD;
		r->next_try = (uint64_t)now + JOB_HELD_RETRY;
		envelope_set_error(r, rr->err);
	} else if (rr->wait) {
		/*
		 * Only waited for a slot at the destination: not an attempt,
		 * nothing to write; still due, tried when a slot frees.
		 */
		char dom[256], acct[256];

		r->attempts = rr->saved_attempts;
		r->last_try = rr->saved_last;
		/* A target served meanwhile is written down all the same. */
		m->dirty = rr->saved_dirty || rr->served;
		str_copy(dom, rr->waitdom, sizeof(dom));
		str_copy(acct, rr->waitacct, sizeof(acct));
		memset(rr, 0, sizeof(*rr));
		str_copy(rr->waitdom, dom, sizeof(rr->waitdom));
		str_copy(rr->waitacct, acct, sizeof(rr->waitacct));
		return;
	} else if (rr->perm) {
		r->state = RS_FAILED;
		envelope_set_error(r, rr->err);
	} else {
		r->state = RS_DONE;
		envelope_set_error(r, NULL);
	}
	memset(rr, 0, sizeof(*rr));
}

/*
 * A target another recipient of the same message already reached, or is
 * reaching now, is not delivered twice (alice listed twice, or through
 * two aliases).
 */
static int
job_target_covered(const struct qmsg *m, size_t ri, const char *key)
{
	const struct job *j;
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (i != ri && envelope_rcpt_done(&m->env.rcpts[i], key))
			return 1;
	for (j = jobs.list; j; j = j->next)
		if (j->msg == m && strcmp(j->target, key) == 0)
			return 1;
	return 0;
}

static struct job *
job_new(struct qmsg *m, size_t ri, const struct target *t, uint64_t id)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->id = id;
	j->msg = m;
	j->rcpt = ri;
	j->target = xstrdup(t->key);
	j->desc = xstrdup(t->kind == TG_REMOTE ? t->path : t->rcpt);
	j->start = time(NULL);
	j->next = jobs.list;
	jobs.list = j;
	m->jobs++;
	return j;
}

/*
 * Local deliveries in flight to the account t runs as are at most
 * max-account-deliveries: an account whose deliveries do not end (its
 * worker stopped by its owner) holds that many of max-deliveries, not
 * all of them.
 */
static int
job_account_full(const char *user)
{
	const struct job *j;
	size_t n = 0, max = (size_t)conf_num(queue_conf(), NULL,
	    K_MAX_ACCOUNT_DELIVERIES);

	/* virtual-user is no one's login: nobody can stop its workers, and
	   every virtual mailbox shares it. */
	if (strcmp(user, conf_str(queue_conf(), K_VIRTUAL_USER)) == 0)
		return 0;
	for (j = jobs.list; j; j = j->next)
		if (!j->remote && j->account && strcmp(j->account, user) == 0 &&
		    ++n >= max)
			return 1;
	return 0;
}

static struct job *
job_dispatch(struct qmsg *m, size_t ri, const struct target *t)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct job *j;
	struct buf b;
	int fd;

	if ((fd = spool_msg_fd(m)) == -1)
		return NULL;
	j = job_new(m, ri, t, ++jobs.nextjob);
	j->account = xstrdup(t->user);
	jobs.nlocal++;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, jobs.nextjob);
	rec_put_str(&b, T_KIND, resolve_kind_name(t->kind));
	rec_put_str(&b, T_USER, t->user);
	rec_put_str(&b, T_PATH, t->path);
	rec_put_str(&b, T_SENDER, m->env.sender);
	rec_put_str(&b, T_RCPT, t->rcpt);
	rec_put_str(&b, T_ORCPT, r->addr);
	rec_put_str(&b, T_ID, m->env.id);
	if (m->env.flags & ENV_QUARANTINE)
		rec_put_u64(&b, T_QUARANTINE, 1);
	ipc_send(queue_parent(), IMSG_P_DELIVER, b.data, b.len, fd);
	buf_free(&b);
	return j;
}

/* ---- remote transactions ------------------------------------------------- */

struct pending {
	size_t		 rcpt;
	struct target	 t;	/* copied: key, rcpt, path (the address) */
	char		 domain[256];
	int		 forwarded;
	int		 lmtp;	/* to local-delivery lmtp's server */
};

static struct pending *pend;
static size_t npend;

static void
job_pend_add(size_t ri, const struct target *t, int forwarded)
{
	struct pending *p;
	char lmtp[600];
	const char *at;

	if (t->kind == TG_LMTP)
		resolve_lmtp_addr(t, lmtp, sizeof(lmtp));
	at = strrchr(t->kind == TG_LMTP ? lmtp : t->path, '@');

	pend = xreallocarray(pend, npend + 1, sizeof(*pend));
	p = &pend[npend++];
	memset(p, 0, sizeof(*p));
	p->rcpt = ri;
	p->t.kind = t->kind;
	p->t.key = xstrdup(t->key);
	p->t.rcpt = xstrdup(t->rcpt);
	p->t.path = xstrdup(t->kind == TG_LMTP ? lmtp : t->path);
	p->t.user = xstrdup("");
	str_copy(p->domain, at ? at + 1 : "", sizeof(p->domain));
	str_lower(p->domain);
	p->forwarded = forwarded;
	p->lmtp = t->kind == TG_LMTP;
}

static void
job_pend_clear(void)
{
	size_t i;

	for (i = 0; i < npend; i++) {
		free(pend[i].t.key);
		free(pend[i].t.rcpt);
		free(pend[i].t.path);
		free(pend[i].t.user);
	}
	npend = 0;
}

/*
 * Mail deferred longer than fallback-after goes through fallback-relay,
 * if one is set: the relay is a destination of its own ("relay:HOST"),
 * paced like any other, so a throttled domain's mail leaves by it.
 */
static struct dest *
job_fallback(const struct qmsg *m, size_t ri, const char *domain)
{
	const struct route *r = conf_fallback_route(queue_conf());
	uint64_t after = (uint64_t)conf_num(queue_conf(), NULL,
	    K_FALLBACK_AFTER) / 1000;
	const struct dest *d;
	char key[300];

	if (r == NULL || (uint64_t)time(NULL) < m->env.arrival + after ||
	    conf_lmtp_route(queue_conf(), domain) != NULL)
		return NULL;
	/* Deferred before, or waiting for a destination that throttles. */
	if (m->env.rcpts[ri].attempts < 2 && ((d = dest_find(domain)) ==
	    NULL || dest_paced(d)->pace.throttles == 0 || !dest_full(d)))
		return NULL;
	snprintf(key, sizeof(key), "relay:%s", r->host);
	str_lower(key);
	return dest_get(key);
}

/* Send one transaction to d: entries idx[0..n) of pend, all one domain. */
static void
job_send_txn(struct qmsg *m, struct dest *d, size_t *idx, size_t n,
    int forwarded, int lmtp)
{
	struct ipc *smtp = queue_smtp();
	struct buf b;
	size_t i;
	uint32_t epoch;
	uint64_t flags = 0;
	int fd;

	if (smtp == NULL || (fd = spool_msg_fd(m)) == -1) {
		for (i = 0; i < n; i++)
			job_rr(m, pend[idx[i]].rcpt)->wait = 1;
		return;
	}
	epoch = dest_open(d, n);
	jobs.nremote++;
	++jobs.nextjob;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, jobs.nextjob);
	rec_put_str(&b, T_ID, m->env.id);
	rec_put_str(&b, T_SENDER, m->env.sender);
	/* Forwarded mail to another domain goes out with an SRS sender, so it
	   passes SPF where it lands; the smtp process asks the vault for it,
	   and bounces to it come back and are reversed at RCPT. */
	if (lmtp)
		flags |= MTA_F_LMTP;
	else if (forwarded && m->env.sender[0] != '\0')
		flags |= MTA_F_SRS;
	if (strcmp(d->domain, pend[idx[0]].domain) != 0)
		flags |= MTA_F_FALLBACK;
	if (flags)
		rec_put_u64(&b, T_FLAGS, flags);
	rec_put_str(&b, T_DOMAIN, pend[idx[0]].domain);
	rec_put_u64(&b, T_SIZE, m->env.size);
	rec_put_u64(&b, T_BODY, (uint64_t)m->env.body8bit);
	rec_put_u64(&b, T_UTF8, (uint64_t)m->env.smtputf8);
	if (m->env.ret)
		rec_put_u64(&b, T_RET, (uint64_t)m->env.ret);
	if (m->env.envid)
		rec_put_str(&b, T_ENVID, m->env.envid);
	for (i = 0; i < n; i++) {
		struct pending *p = &pend[idx[i]];
		struct job *j = job_new(m, p->rcpt, &p->t, jobs.nextjob);
		const struct env_rcpt *er = &m->env.rcpts[p->rcpt];

		j->remote = 1;
		j->epoch = epoch;
		j->opened = dest_clock();
		j->peer = smtp;
		j->domain = xstrdup(d->domain);
		rec_put_str(&b, T_RCPT, p->t.path);
		/* RFC 3461 for a next hop that takes DSN (mta.c decides). */
		if (er->notify)
			rec_put_u64(&b, T_DSN, er->notify);
		if (er->orcpt)
			rec_put_str(&b, T_ORCPT, er->orcpt);
	}
	ipc_send(smtp, IMSG_M_DELIVER, b.data, b.len, fd);
	buf_free(&b);
}

/*
 * Group the message's remote targets by domain and by sender (forwarded
 * copies carry another one) into transactions of at most
 * max-transaction-recipients, within the destination's connection limit.
 */
static void
job_flush_remote(struct qmsg *m)
{
	size_t max;
	size_t *idx = xcalloc(npend + 1, sizeof(*idx));
	char *used = xcalloc(npend + 1, 1);
	size_t i, k, n;

	for (i = 0; i < npend; i++) {
		struct dest *d;

		if (used[i])
			continue;
		/* An LMTP server is where the mail ends: no fallback. */
		d = pend[i].lmtp ? NULL : job_fallback(m, pend[i].rcpt,
		    pend[i].domain);
		if (d == NULL)
			d = dest_get(pend[i].domain);
		max = dest_rcpt_max(d);
		n = 0;
		for (k = i; k < npend && n < max; k++)
			if (!used[k] && strcmp(pend[k].domain, pend[i].domain) ==
			    0 && pend[k].forwarded == pend[i].forwarded &&
			    pend[k].lmtp == pend[i].lmtp) {
				idx[n++] = k;
				used[k] = 1;
			}
		if (dest_full(d) || jobs.nlocal + jobs.nremote >=
		    (size_t)conf_num(queue_conf(), NULL, K_MAX_DELIVERIES)) {
			for (k = 0; k < n; k++) {
				struct rround *w = job_rr(m, pend[idx[k]].rcpt);

				w->wait = 1;
				str_copy(w->waitdom, d->domain,
				    sizeof(w->waitdom));
			}
			continue;
		}
		job_send_txn(m, d, idx, n, pend[i].forwarded, pend[i].lmtp);
	}
	free(idx);
	free(used);
	job_pend_clear();
}

/* ~/.forward stages of m's LMTP mailboxes in flight. */
static int
job_stages_busy(const struct qmsg *m)
{
	const struct job *j;

	for (j = jobs.list; j; j = j->next)
		if (j->msg == m && j->mailbox != NULL)
			return 1;
	return 0;
}

static struct target *
job_target_dup(const struct target *t)
{
	struct target *c = xcalloc(1, sizeof(*c));

	*c = *t;
	c->key = xstrdup(t->key);
	c->rcpt = xstrdup(t->rcpt);
	c->user = xstrdup(t->user);
	c->path = xstrdup(t->path);
	return c;
}

/*
 * A system account's mailbox under local-delivery lmtp: its ~/.forward
 * comes first, carried out by the parent's worker as the account exactly
 * as before a Maildir (a P_DELIVER of the LMTP target: the parent runs
 * the .forward stage only and says whether the own mailbox is wanted);
 * the LMTP delivery follows in job_delivered.  The stage is a target of
 * its own ("forward:" and the mailbox's key), so a retry of the mailbox
 * alone runs no .forward command again.  1 started, 0 not now (waits, or
 * another recipient's stage serves this account), -1 done already.
 */
static int
job_forward_stage(struct qmsg *m, size_t ri, const struct target *t)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct rround *rr = job_rr(m, ri);
	struct target st = *t;
	struct job *j;
	struct buf key;
	int rc = 0;

	buf_init(&key);
	buf_printf(&key, "forward:%s", t->key);
	st.key = key.data;
	if (envelope_rcpt_done(r, key.data))
		rc = -1;
	else if (job_target_covered(m, ri, key.data)) {
		/* The account reached twice: one stage decides for both. */
		envelope_mark_done(r, key.data);
		envelope_mark_done(r, t->key);
		m->dirty = 1;
	} else if (job_account_full(t->user)) {
		rr->wait = 1;
		str_copy(rr->waitacct, t->user, sizeof(rr->waitacct));
	} else if ((j = job_dispatch(m, ri, &st)) != NULL) {
		j->mailbox = job_target_dup(t);
		rc = 1;
	} else {
		rr->temp = 1;
		snprintf(rr->err, sizeof(rr->err), "cannot open the queued "
		    "message: %s", strerror(errno));
	}
	buf_free(&key);
	return rc;
}

/*
 * Try one recipient: expand it with the current aliases and config, hand
 * every target not yet served to its agent, and note what cannot be
 * delivered by this version (it stays queued, held, with the reason).
 */
static void
job_try_rcpt(struct qmsg *m, size_t ri)
{
	struct env_rcpt *r = &m->env.rcpts[ri];
	struct rround *rr = job_rr(m, ri);
	struct target *t;
	size_t n, i, before = npend;
	char err[512];
	int started = 0;

	memset(rr, 0, sizeof(*rr));
	rr->saved_attempts = r->attempts;
	rr->saved_last = r->last_try;
	rr->saved_dirty = m->dirty;
	r->attempts++;
	r->last_try = (uint64_t)time(NULL);
	m->dirty = 1;
	if (resolve_expand(queue_conf(), queue_aliases(), r->addr, &t, &n, err,
	    sizeof(err)) == -1 || n == 0) {
		log_info("q=%s event=deliver to=<%s> status=deferred "
		    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(err[0] ? err :
		    "no targets"));
		rr->temp = 1;
		str_copy(rr->err, err[0] ? err : "no delivery targets",
		    sizeof(rr->err));
		job_rcpt_finish(m, ri);
		return;
	}
	for (i = 0; i < n; i++) {
		if (envelope_rcpt_done(r, t[i].key))
			continue;
		if (job_target_covered(m, ri, t[i].key)) {
			envelope_mark_done(r, t[i].key);
			continue;
		}
		if (t[i].kind == TG_LMTP && t[i].account && t[i].uid != 0) {
			int k = job_forward_stage(m, ri, &t[i]);

			started += k > 0;
			if (k >= 0)
				continue;	/* else the stage is done */
			if (job_stages_busy(m)) {
				/* The last stage to answer wakes the message:
				   the copies go in one transaction. */
				rr->wait = 1;
				continue;
			}
		}
		if (t[i].kind == TG_REMOTE || t[i].kind == TG_LMTP) {
			/* Through an alias or .forward: the copy is forwarded;
			   LMTP goes through the SMTP client, many at once. */
			job_pend_add(ri, &t[i], t[i].kind == TG_REMOTE &&
			    (r->fwd_from != NULL ||
			    str_casecmp(t[i].path, r->addr) != 0));
			continue;
		}
		if (!resolve_is_local(t[i].kind)) {
			rr->held = 1;
			snprintf(rr->err, sizeof(rr->err), "%s delivery to \"%s\" "
			    "is not available in this version; kept in the "
			    "queue", resolve_kind_name(t[i].kind), t[i].path);
			log_info("q=%s event=deliver to=<%s> status=held "
			    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(rr->err));
			continue;
		}
		if (job_account_full(t[i].user)) {
			/* Waits, not an attempt, for one of those to end. */
			rr->wait = 1;
			str_copy(rr->waitacct, t[i].user, sizeof(rr->waitacct));
			continue;
		}
		if (job_dispatch(m, ri, &t[i]) != NULL)
			started++;
		else {
			/* Not delivered, so not done: retried later. */
			rr->temp = 1;
			snprintf(rr->err, sizeof(rr->err), "cannot open the "
			    "queued message: %s", strerror(errno));
			log_warnx("q=%s event=deliver to=<%s> status=deferred "
			    "reason=\"%s\"", m->env.id, log_a(r->addr), log_q(rr->err));
		}
	}
	resolve_free(t, n);
	if (started == 0 && npend == before)
		job_rcpt_finish(m, ri);
}

/*
 * A recipient still waiting: for a destination, an account or both, and
 * none of them has a free slot yet.
 */
static int
job_still_waiting(struct qmsg *m, size_t ri)
{
	const struct rround *rr;
	int waits = 0, avail = 0;

	if (m->rr == NULL || ri >= m->nrr)
		return 0;
	rr = &m->rr[ri];
	if (rr->waitdom[0] != '\0') {
		waits = 1;
		avail |= !dest_full(dest_get(rr->waitdom));
	}
	if (rr->waitacct[0] != '\0') {
		waits = 1;
		avail |= !job_account_full(rr->waitacct);
	}
	return waits && !avail;
}

void
job_try(struct qmsg *m, time_t now, uint64_t *soonest)
{
	size_t i;

	if ((m->env.flags & ENV_HOLD) || m->removed)
		return;
	for (i = 0; i < m->env.nrcpts; i++) {
		struct env_rcpt *r = &m->env.rcpts[i];

		if (r->state != RS_PENDING && r->state != RS_HELD)
			continue;
		if (r->next_try > (uint64_t)now) {
			if (*soonest == 0 || r->next_try < *soonest)
				*soonest = r->next_try;
			continue;
		}
		if (jobs.nlocal + jobs.nremote >= (size_t)conf_num(queue_conf(),
		    NULL, K_MAX_DELIVERIES))
			break;		/* a finishing delivery kicks us again */
		if (job_still_waiting(m, i))
			continue;	/* so does a slot freeing there */
		if (job_count(m, i) == 0)
			job_try_rcpt(m, i);
	}
	job_flush_remote(m);
	/* Recipients whose copies all waited for a slot end their round. */
	for (i = 0; i < m->env.nrcpts; i++)
		if (job_count(m, i) == 0 && m->rr && i < m->nrr &&
		    m->rr[i].wait)
			job_rcpt_finish(m, i);
}

/* ---- outcomes ------------------------------------------------------------ */

/* One target's outcome, from a local worker or a remote transaction. */
static void
job_target_result(struct job *j, int status, const char *text,
    const char *relay, const struct dest *d)
{
	struct qmsg *m = j->msg;
	struct env_rcpt *rc = &m->env.rcpts[j->rcpt];
	struct rround *rr = job_rr(m, j->rcpt);
	char esc[16];

	notice_esc(text, status == 2, esc, sizeof(esc));
	log_info("q=%s event=deliver to=<%s> orig_to=<%s> relay=%s delay=%lds "
	    "dsn=%s status=%s reason=\"%s\"", m->env.id, log_a(j->desc), log_a(rc->addr),
	    relay, (long)(time(NULL) - (time_t)m->env.arrival),
	    status == 0 ? "2.0.0" : esc, status == 0 ? "sent" : status == 1 ?
	    "deferred" : "bounced", log_q(text ? text : ""));
	if (status != 1)
		rr->served = 1;
	if (status == 0)
		envelope_mark_done(rc, j->target);
	else if (status == 1) {
		rr->temp = 1;
		str_copy(rr->err, text ? text : "temporary failure",
		    sizeof(rr->err));
		/* The destination said "slow down": this recipient waits for
		   it to reopen with the rest of its queue, not a backoff. */
		if (d && dest_signal(d, text) != DEST_SIG_NONE)
			rr->reopen = dest_reopen(d);
	} else {
		/* Served, with a failure the sender hears about in a DSN. */
		envelope_mark_done(rc, j->target);
		rr->perm = 1;
		str_copy(rr->err, text ? text : "permanent failure",
		    sizeof(rr->err));
		notice_add(m, j->rcpt, j->desc, text, relay, 0);
		if (relay && strcmp(relay, "local") != 0)
			limits_rejected(m);	/* may trip the breaker */
	}
	m->dirty = 1;
}

static void
job_free(struct job *j)
{
	struct qmsg *m = j->msg;
	size_t ri = j->rcpt;

	m->jobs--;
	if (job_count(m, ri) == 0)
		job_rcpt_finish(m, ri);
	sched_wake(m, 0);	/* to settle, and for what is due next */
	free(j->target);
	free(j->desc);
	free(j->domain);
	free(j->account);
	if (j->mailbox)
		resolve_free(j->mailbox, 1);
	free(j);
}

/*
 * Take a job for an outcome.  peer NULL: a local job (the parent reports);
 * otherwise a remote job that this smtp process was given, so one process
 * cannot settle another's deliveries or a local one.
 */
static struct job *
job_take(uint64_t id, const char *desc, struct ipc *peer)
{
	struct job **pp, *j;

	for (pp = &jobs.list; (j = *pp) != NULL; pp = &j->next)
		if (j->id == id && (desc == NULL ||
		    str_casecmp(j->desc, desc) == 0) &&
		    (peer ? (j->remote && j->peer == peer) : !j->remote)) {
			*pp = j->next;
			return j;
		}
	return NULL;
}

/*
 * T_FORWARD records of a delivery to an account: the addresses its
 * ~/.forward sends the message on to become new recipients, delivered by
 * the usual path.  One already a recipient is not added again; a chain
 * back to a target already served ends in the per-message de-duplication
 * of targets (job_target_covered), so a loop delivers nothing twice.
 */
static void
job_forward(struct qmsg *m, size_t ri, struct rec_reader *rd)
{
	const size_t most = 1000;	/* recipients, forwarded ones included */
	struct rec r;
	char *addr;
	size_t i;

	while (rec_next(rd, &r) == 1) {
		if (r.tag != T_FORWARD || (addr = rec_str(&r, 512)) == NULL)
			continue;
		for (i = 0; i < m->env.nrcpts; i++)
			if (str_casecmp(m->env.rcpts[i].addr, addr) == 0)
				break;
		log_info("q=%s event=forward orig_to=<%s> to=<%s> result=%s",
		    m->env.id, log_a(m->env.rcpts[ri].addr), log_a(addr), i < m->env.nrcpts ?
		    "duplicate" : m->env.nrcpts >= most ? "too-many" : "ok");
		/* Marked as forwarded: a remote copy gets an SRS sender. */
		if (i == m->env.nrcpts && m->env.nrcpts < most) {
			envelope_add_rcpt(&m->env, addr);
			m->env.rcpts[m->env.nrcpts - 1].fwd_from =
			    xstrdup(m->env.rcpts[ri].addr);
			m->dirty = 1;
		}
		free(addr);
	}
}

/*
 * The ~/.forward stage kept a copy for the own mailbox (or there is no
 * .forward): the stage is done, and the recipient is due again at once
 * (job_free wakes the message), as after a wait for a slot, so the copy
 * goes to the LMTP server in one transaction with the other recipients
 * whose stages have answered by then.  Stopping, no run comes: the copy
 * waits for the next start.
 */
static void
job_stage_self(struct job *j, const char *text)
{
	struct qmsg *m = j->msg;
	struct rround *rr = job_rr(m, j->rcpt);

	if (text && text[0])
		log_info("q=%s event=forward orig_to=<%s> result=mailbox "
		    "reason=\"%s\"", m->env.id, log_a(m->env.rcpts[j->rcpt].addr),
		    log_q(text));
	envelope_mark_done(&m->env.rcpts[j->rcpt], j->target);
	rr->served = 1;
	rr->wait = 1;
	m->dirty = 1;
}

void
job_delivered(struct rec_reader *rd)
{
	struct rec r;
	struct rec_reader fwd = *rd;
	uint64_t jid = 0, status = 1, self = 0;
	char *text = NULL;
	struct job *j;
	struct qmsg *m;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_JOB)
			rec_u64(&r, &jid);
		else if (r.tag == T_STATUS)
			rec_u64(&r, &status);
		else if (r.tag == T_SELF)
			rec_u64(&r, &self);
		else if (r.tag == T_TEXT && text == NULL)
			text = rec_str(&r, 1024);
	}
	if ((j = job_take(jid, NULL, NULL)) == NULL) {
		free(text);
		return;
	}
	jobs.nlocal--;
	m = j->msg;
	if (j->mailbox && status == 0 && self)
		job_stage_self(j, text);
	else {
		job_target_result(j, status > 2 ? 1 : (int)status, text,
		    "local", NULL);
		/* A .forward stage that served the account ends its mailbox
		   too: the .forward kept no copy, or failed for good. */
		if (j->mailbox && status != 1)
			envelope_mark_done(&m->env.rcpts[j->rcpt],
			    j->mailbox->key);
		if (status == 0)
			notice_add(m, j->rcpt, j->desc, text, "local",
			    NOTICE_DELIVERED);
	}
	if (status == 0)
		job_forward(m, j->rcpt, &fwd);
	job_free(j);
	queue_settle(m);
	free(text);
	sched_unblock();
	queue_stop_check();
}

/* IMSG_M_RESULT: one outcome per recipient of a remote transaction. */
void
job_remote_result(struct ipc *peer, struct rec_reader *rd)
{
	struct rec r;
	uint64_t jid = 0, status = 1, passed = 0;
	char *relay = NULL, *addr = NULL, *text = NULL, *tls = NULL;
	struct qmsg *m = NULL;
	struct dest *d = NULL;
	struct job *j;
	size_t ok = 0;
	uint32_t epoch = 0;
	double opened = 0;
	int sig = DEST_SIG_NONE, s = 0, applied = 0;

	while (rec_next(rd, &r) == 1) {
		switch (r.tag) {
		case T_JOB:
			rec_u64(&r, &jid);
			break;
		case T_RELAY:
			free(relay);
			relay = rec_str(&r, 320);
			break;
		case T_TLS:
			free(tls);
			tls = rec_str(&r, 200);
			break;
		case T_DSN:	/* 1: the peer took NOTIFY, its reports; 2: LMTP */
			rec_u64(&r, &passed);
			break;
		case T_RCPT:
			free(addr);
			addr = rec_str(&r, 512);
			break;
		case T_STATUS:
			rec_u64(&r, &status);
			break;
		case T_TEXT:
			free(text);
			text = rec_str(&r, 1024);
			if (addr == NULL ||
			    (j = job_take(jid, addr, peer)) == NULL)
				break;
			m = j->msg;
			if (d == NULL && j->domain) {
				d = dest_get(j->domain);
				epoch = j->epoch;
				opened = j->opened;
				dest_set_mx(d, relay);
			}
			if (d)
				dest_outcome(d, status > 2 ? 1 : (int)status, text);
			if (status == 0)
				ok++;
			else if (status == 1 && (s = dest_signal(d, text)) ==
			    DEST_SIG_THROTTLE && d && !applied) {
				/* Before the recipient is settled: it waits
				   for the reopening this sets. */
				dest_txn_end(d, ok, s, epoch, opened);
				applied = 1;
			} else if (status == 1 && s == DEST_SIG_RCPTS)
				sig = s;
			job_target_result(j, status > 2 ? 1 : (int)status,
			    text, relay ? relay : "none", d);
			if (status == 0 && passed != 1)
				notice_add(m, j->rcpt, j->desc, text, relay,
				    passed == 2 ? NOTICE_DELIVERED :
				    NOTICE_RELAYED);
			job_free(j);
			break;
		}
	}
	/* Recipients the reply did not mention are retried. */
	while ((j = job_take(jid, NULL, peer)) != NULL) {
		m = j->msg;
		if (d == NULL && j->domain)
			d = dest_get(j->domain);
		job_target_result(j, 1, "no outcome reported", relay ?
		    relay : "none", NULL);
		job_free(j);
	}
	if (d) {
		dest_set_mx(d, relay);
		if (!applied)
			dest_txn_end(d, ok, sig, epoch, opened);
		dest_close(d);
	}
	if (jobs.nremote > 0)
		jobs.nremote--;
	if (m)
		queue_settle(m);
	free(relay);
	free(addr);
	free(text);
	free(tls);
	sched_unblock();
}

/*
 * The smtp process that had these transactions is gone: their outcome
 * will never come, so every recipient in them is retried.
 */
void
job_txn_lost(struct ipc *peer)
{
	struct job *j;
	struct qmsg *m;
	struct dest *d;
	uint64_t id;

	for (;;) {
		for (j = jobs.list; j; j = j->next)
			if (j->remote && j->peer == peer)
				break;
		if (j == NULL)
			break;
		id = j->id;
		d = j->domain ? dest_get(j->domain) : NULL;
		while ((j = job_take(id, NULL, peer)) != NULL) {
			m = j->msg;
			job_target_result(j, 1, "the delivering process went "
			    "away", "none", NULL);
			job_free(j);
			queue_settle(m);
		}
		if (d)
			dest_close(d);
		if (jobs.nremote > 0)
			jobs.nremote--;
	}
	sched_unblock();
}

