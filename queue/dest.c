/*
 * dest: per-destination state, kept in one place and run by the queue
 * process: how many transactions are open to a domain, what pacing
 * learned about it, and how recent attempts went.  Destinations live as
 * long as the process; what pacing learned is kept in the spool's
 * "pacing" file too (written at most DEST_SAVE_SECS after a change and at
 * a clean stop, read at start), so a restart in the middle of a throttled
 * announcement does not start hammering the receiver again.
 *
 * Pacing.  A receiver that limits a client answers "try again later" (a
 * 421, enhanced codes 4.7.0, 4.7.28, 4.7.650, or a provider's rate-limit
 * text, listed in the throttle-replies file) once the client goes faster
 * than it allows.  Such a reply is about the destination, not about one
 * message: the destination stops taking transactions until the window
 * should reopen, and every recipient queued for it waits for that (the
 * scheduler's blocked list), not only the one that was refused.
 *
 * The rule, on a rate in recipients a second:
 * - until the first throttling reply there is no rate (no pacing): mail
 *   goes out as fast as the connection limits allow;
 * - a throttling reply lowers the rate multiplicatively.  The estimate is
 *   what the receiver accepted since the previous throttling reply divided
 *   by the time between them (both replies mean its bucket was empty),
 *   times 0.95, kept between half and 0.95 of the rate; half of it at the first
 *   reply (what the receiver took then is its burst, an upper bound);
 *   with nothing accepted in between (throttles in a row), half the rate.
 *   Transactions that were in flight at the decrease report into its
 *   measure, which may raise the rate again (pace_late).  The
 *   destination reopens after one recipient's worth of time at the new
 *   rate; concurrency halves too;
 * - a success raises the rate: by 1/8 a recipient until the first decrease
 *   (the receiver's limit is not known yet), then additively by a step of
 *   1/64 of the rate at the last decrease a recipient, so the agent settles
 *   just under the receiver's limit and probes it gently; the step doubles
 *   every 8 recipients accepted in a row, so a rate far below the limit
 *   (the limit rose, or a decrease overshot) recovers in a few dozen;
 * - a transaction carries what the pacing clock allows (pace_clock: one
 *   recipient every 1/rate, and what waited longer goes in the next);
 * - a 452 or 4.5.3 is about recipients per transaction: the next ones
 *   carry no more than the receiver took.
 * Nothing in it is in seconds except the first pause (retry-min) when a
 * destination refuses before accepting anything; every other time comes
 * from the receiver's replies and from when mail waited.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/dest.h"
#include "queue/qint.h"
#include "queue/sched.h"
#include "queue/spool.h"

static struct dest *dests;	/* every destination seen */
static struct event *reopen_ev;	/* wakes the scheduler when one reopens */
static double reopen_at;
static struct event *save_ev;	/* writes the pacing file */

#define DEST_FILE	"pacing"
#define DEST_FILE_MAGIC	"tern-pacing 1"
#define DEST_SAVE_SECS	30
#define DEST_KEEP_SECS	(2 * 86400.0)	/* older knowledge is dropped */
#define DEST_FILE_MAX	20000		/* destinations read at most */

static void	dest_save_later(void);
static void	dest_save_cb(evutil_socket_t, short, void *);

/* ---- reply classes ---------------------------------------------------- */

struct dest_pat {
	int	 sig;		/* DEST_SIG_* */
	char	*text;		/* lower case; matched as a substring */
};

static struct dest_pat *pats;
static size_t npats;

/* Used when the file cannot be read: the same as the shipped file. */
static const char *const builtin_pats[] = {
	"rcpts 4.5.3", "rcpts too many recipients", "ignore greylist", "ignore mailbox busy", "ignore 4.2.0",
	"ignore 4.7.1", "throttle 4.7.0", "throttle 4.7.28",
	"throttle 4.7.650", "throttle try again later",
	"throttle rate limit", "throttle ratelimit", "throttle too many",
	"throttle temporarily deferred", "throttle throttl",
	"throttle unusual rate", "throttle [ts01]", "throttle [ts02]",
	"throttle [ts03]", "throttle rp-001", "throttle 4.2.1",
};

/* One line of the file: "class text".  0 taken, -1 malformed. */
static int
dest_pat_add(struct dest_pat **tab, size_t *n, const char *line)
{
	const char *sp = strchr(line, ' ');
	struct dest_pat *p;
	int sig;
	size_t i;

	if (sp == NULL || sp[1] == '\0')
		return -1;
	if (strncmp(line, "throttle ", 9) == 0)
		sig = DEST_SIG_THROTTLE;
	else if (strncmp(line, "rcpts ", 6) == 0)
		sig = DEST_SIG_RCPTS;
	else if (strncmp(line, "ignore ", 7) == 0)
		sig = DEST_SIG_NONE;
	else
		return -1;
	*tab = xreallocarray(*tab, *n + 1, sizeof(**tab));
	p = &(*tab)[(*n)++];
	p->sig = sig;
	p->text = xstrdup(sp + 1);
	for (i = 0; p->text[i]; i++)
		p->text[i] = (char)tolower((unsigned char)p->text[i]);
	return 0;
}

static void
dest_pats_free(struct dest_pat *tab, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(tab[i].text);
	free(tab);
}

/*
 * Read the file into a new table; the one in force is replaced only when
 * the file could be read.  A line that is not "throttle|rcpts|ignore
 * TEXT" is skipped with file:line in the log.  At start a file that
 * cannot be read leaves the built-in table; at a reload, the table in
 * force.
 */
int
dest_load_signals(const char *path)
{
	struct dest_pat *tab = NULL;
	size_t i, n, ntab = 0, lineno = 0;
	FILE *f;
	char line[512];

	if (path == NULL || (f = fopen(path, "r")) == NULL) {
		if (pats != NULL) {
			log_warnx("event=reload result=warn reason=\"cannot "
			    "read %s: %s; the throttle replies in force are "
			    "kept\"", log_q(path ? path : "(none)"),
			    path ? strerror(errno) : "not set");
			return -1;
		}
		if (path)
			log_warnx("event=start result=warn reason=\"cannot read "
			    "%s: built-in throttle replies used\"", log_q(path));
		for (i = 0; i < sizeof(builtin_pats) / sizeof(*builtin_pats);
		    i++)
			(void)dest_pat_add(&pats, &npats, builtin_pats[i]);
		return path ? -1 : 0;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		n = strcspn(line, "\r\n");
		line[n] = '\0';
		while (n > 0 && (line[n - 1] == ' ' || line[n - 1] == '\t'))
			line[--n] = '\0';
		if (line[0] != '#' && line[0] != '\0' &&
		    dest_pat_add(&tab, &ntab, line) == -1)
			log_warnx("event=config result=warn reason=\"%s:%zu: "
			    "not throttle, rcpts or ignore followed by a text; "
			    "line skipped\"", log_q(path), lineno);
	}
	fclose(f);
	dest_pats_free(pats, npats);
	pats = tab;
	npats = ntab;
	return 0;
}

/*
 * The first pattern found in the text wins, in file order, so "ignore"
 * lines listed first keep greylisting out of the throttle class.  Any
 * 421 is a throttle: the receiver closes the channel.  An unmatched 452
 * without a storage code is about recipients.  Only 4xx replies are
 * classified.
 */
int
dest_classify(const char *text)
{
	char low[512];
	size_t i;

	if (text == NULL || text[0] != '4')
		return DEST_SIG_NONE;
	for (i = 0; i + 1 < sizeof(low) && text[i]; i++)
		low[i] = (char)tolower((unsigned char)text[i]);
	low[i] = '\0';
	if (strncmp(low, "421", 3) == 0)
		return DEST_SIG_THROTTLE;
	if (npats == 0)
		dest_load_signals(NULL);
	for (i = 0; i < npats; i++)
		if (strstr(low, pats[i].text) != NULL)
			return pats[i].sig;
	/* A bare 452 is "too many recipients" (RFC 5321 4.5.3.1.10); one
	   about storage (4.2.x, 4.3.x) is the mailbox's or the host's. */
	if (strncmp(low, "452", 3) == 0 && strstr(low, " 4.2.") == NULL &&
	    strstr(low, " 4.3.") == NULL)
		return DEST_SIG_RCPTS;
	return DEST_SIG_NONE;
}

/*
 * A receiver enforcing its limit may answer 421 and close while our
 * pipelined commands are in flight; the reset can swallow the 421.  At a
 * destination that has throttled before, such a drop is read as one more
 * throttle, not as a failure of one recipient with its own backoff.
 */
int
dest_signal(const struct dest *d, const char *text)
{
	int s = dest_classify(text);

	if (s == DEST_SIG_NONE && d && text &&
	    dest_paced(d)->pace.throttles > 0 &&
	    (strncmp(text, "lost connection", 15) == 0 ||
	    strncmp(text, "connection error", 16) == 0))
		s = DEST_SIG_THROTTLE;
	return s;
}

/* ---- the rule ----------------------------------------------------------- */

void
pace_init(struct dest_pace *p, int conc)
{
	memset(p, 0, sizeof(*p));
	p->conc = conc > 0 ? conc : 1;
}

int
pace_open_now(const struct dest_pace *p, int active, int maxconc,
    double now)
{
	int conc = (int)p->conc;

	if (conc > maxconc)
		conc = maxconc;
	if (conc < 1)
		conc = 1;
	return active < conc && now >= p->next_ok;
}

/*
 * The pacing clock: recipients are due one every 1/rate from next_ok,
 * and by now 1 + (now - next_ok) * rate may go, but only for time that
 * mail spent waiting for the destination (from when a recipient first
 * found it closed, p->waiting): after a pause with nothing to send, the
 * receiver's bucket may be smaller than what the pause would let
 * through, and right after a reopening one recipient goes.  What waited
 * longer than the rate asked (the transaction before took longer than
 * 1/rate, or the scheduler was busy) goes in the next transaction, so
 * neither the round trips nor a busy queue lower the rate.  A
 * transaction moves the clock by what it took, from where the clock
 * stood, not from now: what waited is charged once.
 */
static double
pace_clock(const struct dest_pace *p, double now)
{
	double from = p->waiting > 0 && p->waiting < now ? p->waiting : now;

	return p->next_ok > from ? p->next_ok : from;
}

double
pace_allow(const struct dest_pace *p, double now)
{
	double can;

	if (p->rate <= 0)
		return 0;
	can = 1 + (now - pace_clock(p, now)) * p->rate;
	return can < 1 ? 1 : can;
}

void
pace_wait(struct dest_pace *p, double now)
{
	if (p->waiting == 0)
		p->waiting = now;
}

uint32_t
pace_open(struct dest_pace *p, size_t n, double now)
{
	if (p->since == 0)
		p->since = now;
	if (p->rate > 0)
		p->next_ok = pace_clock(p, now) + (double)n / p->rate;
	p->waiting = 0;
	return p->epoch;
}

/*
 * The rate a decrease sets, from the rate before it (prev, a guess or
 * not), the throttles in a row before it (streak), the measure (what the
 * receiver accepted over the interval, a second) and the first pause.
 * *guess: nothing measured yet, a recipient a first pause.
 */
static double
pace_estimate(double prev, int prev_guess, uint32_t streak, double measured,
    double first, int *guess)
{
	double r;

	*guess = prev == 0 && measured == 0;
	if (*guess)
		r = 1.0 / (first > 0 ? first : 60);
	else if (prev == 0 || (prev_guess && measured > 0))
		r = measured / 2;
	else if (streak > 0 || measured == 0)
		r = prev / 2;
	else {
		r = measured * 0.95;
		if (r < prev / 2)
			r = prev / 2;
		if (r > prev * 0.95)
			r = prev * 0.95;
	}
	return r < 1e-9 ? 1e-9 : r;	/* a recipient in 30 years: no lower */
}

/*
 * A transaction that started before the last decrease reports now: what
 * it delivered was taken from the receiver's bucket before that decrease
 * (the bucket ran dry in it), so it belongs to that decrease's measure,
 * not the next.  Transactions that were in flight together (the first
 * ones, all opened before anything was known) report one by one: the
 * first to end alone would set the rate from its own recipients, a
 * fraction of what the receiver took, and climbing back by additive
 * steps takes dozens of recipients' time.  The measure runs to the last
 * such report; the decrease is computed again, and raises the rate if it
 * comes out higher (a late report never lowers it).  A first decrease
 * that had nothing to measure (refused at MAIL while the others still
 * took recipients) was a guess, and is replaced the same way.
 */
static void
pace_late(struct dest_pace *p, size_t ok, double now, double first)
{
	double el = now - p->m_since, r;
	int guess;

	p->m_acc += (uint32_t)ok;
	if (p->m_acc == 0 || p->m_since <= 0 || el <= 0)
		return;
	r = pace_estimate(p->m_prev, p->m_prev_guess, p->m_streak,
	    p->m_acc / el, first, &guess);
	if (guess)
		return;
	p->guess = 0;
	if (r <= p->rate)
		return;
	p->rate = r;
	p->step = r / 64;
	if (p->next_ok > now + 1.0 / r)
		p->next_ok = now + 1.0 / r;
}

static void
pace_success(struct dest_pace *p, size_t ok, uint32_t epoch, int maxconc,
    double now, double first)
{
	/* The recipients that made a measure do not raise it again. */
	if (epoch != p->epoch)
		pace_late(p, ok, now, first);
	else
		p->accepted += (uint32_t)ok;
	p->streak = 0;
	if (p->rate > 0 && epoch == p->epoch) {
		if (p->step > 0)
			p->rate += p->step * (double)ok;
		else
			p->rate *= 1.0 + (double)ok / 8;
		/* A long run of successes means the limit moved up, or the
		   last decrease overshot: the step doubles every 8. */
		for (p->run += (uint32_t)ok; p->run >= 8; p->run -= 8)
			p->step *= 2;
	}
	p->conc += 1.0 / p->conc;
	if (p->conc > maxconc)
		p->conc = maxconc;
}

static void
pace_throttle(struct dest_pace *p, size_t ok, uint32_t epoch, double now,
    double first)
{
	double el = now - p->since, measured = 0, r;
	int guess;

	p->throttles++;
	/* Replies to transactions that started before the last decrease
	   say nothing new: one decrease per reopening. */
	if (epoch != p->epoch) {
		pace_late(p, ok, now, first);
		if (p->next_ok < now + 1.0 / p->rate)
			p->next_ok = now + 1.0 / p->rate;
		return;
	}
	p->accepted += (uint32_t)ok;
	if (p->accepted > 0 && p->since > 0 && el > 0)
		measured = p->accepted / el;
	/* Refused after taking some: the receiver accepted recipients
	   since its last refusal, so this one is not in a row with it and
	   the measure says how many (halving blindly would drop a rate at
	   the limit to half of it, and climbing back takes dozens). */
	if (ok > 0)
		p->streak = 0;
	r = pace_estimate(p->rate, p->guess, p->streak, measured, first,
	    &guess);
	/* What the decrease came from, for the reports still in flight. */
	p->m_since = p->since;
	p->m_acc = p->accepted;
	p->m_prev = p->rate;
	p->m_prev_guess = p->guess;
	p->m_streak = p->streak;
	p->rate = r;
	p->step = r / 64;
	p->guess = guess;
	p->run = 0;
	p->streak++;
	p->conc /= 2;
	if (p->conc < 1)
		p->conc = 1;
	p->last_dec = now;
	p->epoch++;
	p->since = now;
	p->accepted = 0;
	p->next_ok = now + 1.0 / r;
}

void
pace_result(struct dest_pace *p, size_t ok, int sig, uint32_t epoch,
    double now, double first_pause, int maxconc)
{
	/* Too many recipients, with some taken: a recipient count; with
	   none taken, the receiver counts over time: a throttle. */
	if (sig == DEST_SIG_RCPTS && ok > 0)
		p->rcpt_max = (int)ok;
	else if (sig == DEST_SIG_RCPTS)
		sig = DEST_SIG_THROTTLE;
	if (sig == DEST_SIG_THROTTLE)
		pace_throttle(p, ok, epoch, now, first_pause);
	else if (ok > 0)
		pace_success(p, ok, epoch, maxconc, now, first_pause);
}

/* ---- destinations -------------------------------------------------------- */

double
dest_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
dest_reopened(evutil_socket_t fd, short ev, void *arg)
{
	reopen_at = 0;
	sched_unblock();
}

struct dest *
dest_paced(const struct dest *d)
{
	return d->via ? d->via : (struct dest *)d;
}

/* Transactions open under p's pacing: its own, or its domains'. */
static int
dest_active(const struct dest *p)
{
	const struct dest *d;
	int n = p->active;

	for (d = dests; d; d = d->next)
		if (d->via == p)
			n += d->active;
	return n;
}

void
dest_set_mx(struct dest *d, const char *relay)
{
	char host[256], key[260];
	struct dest *h;

	if (relay == NULL || strcmp(relay, "none") == 0)
		return;
	str_copy(d->mx, relay, sizeof(d->mx));
	if (strncmp(d->domain, "relay:", 6) == 0 ||
	    strncmp(d->domain, "mx:", 3) == 0)
		return;
	str_copy(host, relay, sizeof(host));
	host[strcspn(host, "[")] = '\0';
	str_lower(host);
	snprintf(key, sizeof(key), "mx:%s", host);
	h = dest_get(key);
	if (d->via == h)
		return;
	/* A host new to pacing starts from what the domain knew alone
	   (transactions in flight carry the domain's epochs). */
	if (h->pace.since == 0)
		h->pace = dest_paced(d)->pace;
	d->via = h;
}

/* Wake the scheduler when d reopens (the earliest such time wins). */
static void
dest_arm(const struct dest *d)
{
	double now = dest_clock(), t = dest_paced(d)->pace.next_ok;
	struct timeval tv;

	if (d->static_next > t)
		t = d->static_next;
	if (reopen_ev == NULL || t <= now)
		return;
	if (reopen_at > now && reopen_at <= t &&
	    evtimer_pending(reopen_ev, NULL))
		return;
	reopen_at = t;
	t -= now;
	tv.tv_sec = (time_t)t;
	tv.tv_usec = (suseconds_t)((t - (double)tv.tv_sec) * 1e6) + 1000;
	evtimer_add(reopen_ev, &tv);
}

void
dest_init(struct event_base *base)
{
	reopen_ev = evtimer_new(base, dest_reopened, NULL);
	save_ev = evtimer_new(base, dest_save_cb, NULL);
}

struct dest *
dest_find(const char *domain)
{
	struct dest *d;

	for (d = dests; d; d = d->next)
		if (strcmp(d->domain, domain) == 0)
			return d;
	return NULL;
}

struct dest *
dest_first(void)
{
	return dests;
}

struct dest *
dest_get(const char *domain)
{
	struct dest *d;

	if ((d = dest_find(domain)) != NULL)
		return d;
	d = xcalloc(1, sizeof(*d));
	str_copy(d->domain, domain, sizeof(d->domain));
	pace_init(&d->pace, dest_limit(d));
	d->next = dests;
	dests = d;
	return d;
}

/* The admin's shaping for d: its domain's, else its MX host's. */
static const struct shape *
dest_shape(const struct dest *d)
{
	const struct shape *s = conf_find_shape(queue_conf(), d->domain);
	char host[256];

	if (s == NULL && d->mx[0]) {
		str_copy(host, d->mx, sizeof(host));
		host[strcspn(host, "[")] = '\0';
		s = conf_find_shape(queue_conf(), host);
	}
	return s;
}

int
dest_limit(const struct dest *d)
{
	const struct shape *s = dest_shape(d);

	if (s && s->conns)
		return s->conns;
	return (int)conf_num(queue_conf(), NULL, K_MAX_DOMAIN_CONNECTIONS);
}

static int
dest_pacing(void)
{
	return strcmp(conf_str(queue_conf(), K_PACING), "no") != 0;
}

/*
 * Recipients in the next transaction.  A paced destination takes what
 * its rate allows by now (at least one), so a receiver that counts
 * recipients is not sent more than it will accept.
 */
size_t
dest_rcpt_max(const struct dest *d)
{
	size_t max = (size_t)conf_num(queue_conf(), NULL,
	    K_MAX_TXN_RECIPIENTS);
	const struct shape *s = dest_shape(d);
	const struct dest_pace *p = &dest_paced(d)->pace;
	double can;

	if (s && s->rcpts && (size_t)s->rcpts < max)
		max = (size_t)s->rcpts;
	if (!dest_pacing())
		return max;
	if (p->rcpt_max > 0 && (size_t)p->rcpt_max < max)
		max = (size_t)p->rcpt_max;
	if (p->rate > 0 && (can = pace_allow(p, dest_clock())) < (double)max)
		max = (size_t)can;
	return max;
}

int
dest_full(const struct dest *d)
{
	double now = dest_clock();
	struct dest *p = dest_paced(d);

	if (d->static_next > now) {
		pace_wait(&p->pace, now);
		dest_arm(d);
		return 1;
	}
	if (!dest_pacing() || d->active >= dest_limit(d)) {
		if (d->active < dest_limit(d))
			return 0;
		pace_wait(&p->pace, now);
		return 1;
	}
	if (pace_open_now(&p->pace, dest_active(p), p == d ? dest_limit(d) :
	    dest_limit(p), now))
		return 0;
	pace_wait(&p->pace, now);
	dest_arm(d);
	return 1;
}

uint32_t
dest_open(struct dest *d, size_t n)
{
	const struct shape *s = dest_shape(d);
	double now = dest_clock();

	/* messages-per-minute: starts spaced evenly over the minute. */
	if (s && s->mpm)
		d->static_next = (d->static_next > now ? d->static_next : now) +
		    60.0 / s->mpm;
	d->active++;
	return dest_pacing() ? pace_open(&dest_paced(d)->pace, n,
	    dest_clock()) : dest_paced(d)->pace.epoch;
}

void
dest_close(struct dest *d)
{
	if (d->active > 0)
		d->active--;
}

void
dest_outcome(struct dest *d, int status, const char *text)
{
	d->last = time(NULL);
	log_sanitize(d->lasterr, text ? text : "", sizeof(d->lasterr));
	if (status == 0) {
		d->ok++;
		return;
	}
	if (status == 1)
		d->temp++;
	else
		d->perm++;
}

void
dest_txn_end(struct dest *d, size_t ok, int sig, uint32_t epoch,
    double opened)
{
	double first = (double)conf_num(queue_conf(), NULL, K_RETRY_MIN) /
	    1000;
	struct dest *p = dest_paced(d);

	if (!dest_pacing())
		return;
	if (opened > 0 && dest_clock() > opened)
		p->pace.rtt = p->pace.rtt > 0 ? 0.75 * p->pace.rtt + 0.25 *
		    (dest_clock() - opened) : dest_clock() - opened;
	pace_result(&p->pace, ok, sig, epoch, dest_clock(), first,
	    dest_limit(d));
	dest_save_later();
	if (sig == DEST_SIG_THROTTLE)
		log_info("event=pace domain=%s via=%s result=throttled "
		    "rate=%.4g conc=%d reopen=%.1fs reason=\"%s\"", d->domain,
		    p->domain, p->pace.rate, (int)p->pace.conc, p->pace.next_ok -
		    dest_clock(), log_q(d->lasterr));
	dest_arm(d);
}

uint64_t
dest_reopen(const struct dest *d)
{
	if (!dest_pacing())
		return 0;	/* the usual backoff */
	/* Rounded down: due by then, it waits for the reopening timer,
	   which is precise, instead of for the next whole second. */
	return (uint64_t)dest_paced(d)->pace.next_ok;
}

void
dest_flush(const char *domain)
{
	struct dest *d;

	for (d = dests; d; d = d->next)
		if (domain == NULL || strcmp(d->domain, domain) == 0) {
			d->pace.next_ok = 0;
			dest_paced(d)->pace.next_ok = 0;
		}
	dest_save_later();
}

/* ---- the pacing file ------------------------------------------------------ */

/*
 * One line a destination that learned something (a rate, a recipient
 * limit, a throttle, its MX host), after a first line naming the format:
 *
 *	NAME MX RATE STEP CONC NEXT_OK RCPT_MAX THROTTLES STREAK SAVED
 *
 * MX is "-" when unknown; times are seconds since the epoch (pacing runs
 * on the wall clock).  The file is the queue's own (in the spool); a line
 * that does not read is skipped and named, never trusted in part.
 */
static int
dest_worth_keeping(const struct dest *d)
{
	return d->pace.rate > 0 || d->pace.rcpt_max > 0 ||
	    d->pace.throttles > 0 || d->mx[0] != '\0';
}

void
dest_encode(struct buf *b, double now)
{
	const struct dest *d;
	char line[900];
	int n;

	buf_append(b, DEST_FILE_MAGIC "\n", sizeof(DEST_FILE_MAGIC));
	for (d = dests; d; d = d->next) {
		if (!dest_worth_keeping(d))
			continue;
		n = snprintf(line, sizeof(line), "%s %s %.17g %.17g %.17g "
		    "%.3f %d %u %u %.0f\n", d->domain, d->mx[0] ? d->mx : "-",
		    d->pace.rate, d->pace.step, d->pace.conc, d->pace.next_ok,
		    d->pace.rcpt_max, d->pace.throttles, d->pace.streak, now);
		if (n > 0 && (size_t)n < sizeof(line))
			buf_append(b, line, (size_t)n);
	}
}

/* A name or MX as we write them: no space, no control, not empty. */
static int
dest_token_ok(const char *t)
{
	if (*t == '\0')
		return 0;
	for (; *t; t++)
		if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 0x7f)
			return 0;
	return 1;
}

static int
dest_num_ok(double v, double max)
{
	return v == v && v >= 0 && v <= max;	/* v == v: not NaN */
}

/* One line into its destination: 0, or -1 with why. */
static int
dest_decode_line(char *line, double now, int *kept, const char **why)
{
	char name[256], mx[256];
	double rate, step, conc, next_ok, saved;
	int rcpt_max, used;
	unsigned throttles, streak;
	struct dest *d;

	*kept = 0;
	*why = "malformed line";
	if (sscanf(line, "%255s %255s %lf %lf %lf %lf %d %u %u %lf%n", name,
	    mx, &rate, &step, &conc, &next_ok, &rcpt_max, &throttles, &streak,
	    &saved, &used) != 10 || line[used] != '\0')
		return -1;
	*why = "value out of range";
	if (!dest_token_ok(name) || !dest_token_ok(mx) ||
	    !dest_num_ok(rate, 1e9) || !dest_num_ok(step, 1e9) ||
	    !dest_num_ok(conc, 1e6) || !dest_num_ok(next_ok, 1e11) ||
	    rcpt_max < 0 || rcpt_max > 1000000 || !dest_num_ok(saved, 1e11))
		return -1;
	if (saved + DEST_KEEP_SECS < now || saved > now + 86400)
		return 0;		/* stale, or from a clock set back */
	d = dest_get(name);
	d->pace.rate = rate;
	d->pace.step = step;
	d->pace.conc = conc < 1 ? 1 : conc;
	/* A wait asked for long ago cannot last beyond the keeping time. */
	d->pace.next_ok = next_ok > now + DEST_KEEP_SECS ? now : next_ok;
	d->pace.rcpt_max = rcpt_max;
	d->pace.throttles = throttles;
	d->pace.streak = streak;
	/* Measuring starts again: what was accepted before the restart is
	   not known, and transactions in flight then are gone. */
	d->pace.since = rate > 0 || throttles > 0 ? now : 0;
	d->pace.accepted = 0;
	if (strcmp(mx, "-") != 0)
		str_copy(d->mx, mx, sizeof(d->mx));
	*kept = 1;
	return 0;
}

int
dest_decode(char *text, size_t len, double now, size_t *nkept)
{
	char *line, *end, *stop = text + len;
	const char *why;
	size_t lineno = 1, n = 0;
	struct dest *d;
	int kept;

	*nkept = 0;
	end = memchr(text, '\n', len);
	if (end == NULL || (size_t)(end - text) != strlen(DEST_FILE_MAGIC) ||
	    memcmp(text, DEST_FILE_MAGIC, strlen(DEST_FILE_MAGIC)) != 0) {
		log_warnx("event=pace result=error reason=\"%s:1: not a "
		    "pacing file of this version; learned rates start "
		    "again\"", DEST_FILE);
		return -1;
	}
	for (line = end + 1; line < stop && n < DEST_FILE_MAX;
	    line = end + 1, n++) {
		lineno++;
		if ((end = memchr(line, '\n', (size_t)(stop - line))) == NULL) {
			log_warnx("event=pace result=warn reason=\"%s:%zu: "
			    "cut short; line skipped\"", DEST_FILE, lineno);
			break;
		}
		*end = '\0';
		if (memchr(line, '\0', (size_t)(end - line)) != NULL ||
		    dest_decode_line(line, now, &kept, &why) == -1)
			log_warnx("event=pace result=warn reason=\"%s:%zu: %s; "
			    "line skipped\"", DEST_FILE, lineno, why);
		*nkept += (size_t)kept;
	}
	/* The domains' MX hosts again: shared state, as before the stop. */
	for (d = dests; d; d = d->next)
		if (d->mx[0] && d->via == NULL)
			dest_set_mx(d, d->mx);
	return 0;
}

static void
dest_save(void)
{
	struct buf b;

	buf_init(&b);
	dest_encode(&b, dest_clock());
	if (spool_write_state(DEST_FILE, &b, 0) == -1)
		log_warnx("event=pace result=error reason=\"writing %s: %s\"",
		    DEST_FILE, fd_strerror(errno));
	buf_free(&b);
}

static void
dest_save_cb(evutil_socket_t fd, short ev, void *arg)
{
	dest_save();
}

static void
dest_save_later(void)
{
	struct timeval tv = { DEST_SAVE_SECS, 0 };

	if (save_ev && !evtimer_pending(save_ev, NULL))
		evtimer_add(save_ev, &tv);
}

void
dest_flush_file(void)
{
	if (save_ev && evtimer_pending(save_ev, NULL)) {
		evtimer_del(save_ev);
		dest_save();
	}
}

void
dest_restore(void)
{
	struct buf b;
	size_t kept = 0;

	buf_init(&b);
	if (spool_read_state(DEST_FILE, &b) == -1) {
		if (errno != ENOENT)
			log_warnx("event=pace result=error reason=\"reading "
			    "%s: %s\"", DEST_FILE, strerror(errno));
	} else if (b.len > 0 && dest_decode(b.data, b.len, dest_clock(),
	    &kept) == 0 && kept > 0) {
		log_info("event=pace result=ok reason=\"restored what pacing "
		    "learned about %zu destinations\"", kept);
		/* Wake the scheduler when a restored wait ends. */
		for (struct dest *d = dests; d; d = d->next)
			dest_arm(d);
	}
	buf_free(&b);
}
