/*
 * limits: per-account sending limits and the circuit breaker, run by the
 * queue process, the one writer of the spool, so that old and new smtp
 * processes (a reload) and a restarted smtp see the same figures.
 *
 * Each account has a day of 5-minute slots counting its committed
 * messages, their recipients, and its rejected recipients (refused at RCPT
 * as unknown, or by a remote server with 5xx).  The last 12 slots are "the
 * last hour".  The breaker trips when the last hour's messages exceed both
 * breaker-floor and breaker-factor times the account's usual hourly rate
 * (its messages in the rest of the day over the hours of it we know), or
 * when breaker-reject-percent of its recipients in the last hour were
 * rejected (at least breaker-reject-min of them).  A suspended account's
 * queued mail is held (ENV_HOLD with ENV_SUSPENDED), never deleted; the
 * postmaster gets a notice; `ternctl user release` undoes it.
 */
#include <sys/random.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "queue/commit.h"
#include "queue/ctl.h"
#include "queue/envelope.h"
#include "queue/limits.h"
#include "queue/qint.h"
#include "queue/spool.h"

#define LIM_SLOT	300		/* seconds a slot counts */
#define LIM_NSLOTS	288		/* a day */
#define LIM_HOUR	12		/* slots in an hour */
#define LIM_FILE	"accounts"
#define LIM_NAME_MAX	300
#define LIM_MAX_ACCTS	100000

struct acct {
	struct acct	*next;
	char		*name;
	uint64_t	 first;		/* unix seconds: first counted */
	uint64_t	 slot;		/* absolute index of the newest slot */
	uint32_t	 msgs[LIM_NSLOTS];
	uint32_t	 rcpts[LIM_NSLOTS];
	uint32_t	 bad[LIM_NSLOTS];	/* rejected recipients */
	uint64_t	 suspended;	/* unix seconds; 0: not */
	char		*reason;
	uint64_t	 rmsgs, rrcpts;	/* being received: given a file, not
					   yet committed (memory only) */
};

static struct {
	struct acct	*accts;
	size_t		 naccts;
	struct event	*saveev;	/* lazy write of the counters */
} lim;

static const char lim_magic[8] = { 'T', 'E', 'R', 'N', 'A', 'C', 'C', 1 };

enum lim_tag {
	A_NAME = 1, A_FIRST, A_SLOT, A_MSGS, A_RCPTS, A_BAD, A_SUSPENDED,
	A_REASON, A_END = 0xff
};

/* ---- counting ------------------------------------------------------------ */

static uint64_t
lim_now_slot(time_t now)
{
	return (uint64_t)now / LIM_SLOT;
}

/* Forget the slots that have slid out of the day since a was last used. */
static void
lim_roll(struct acct *a, time_t now)
{
	uint64_t s = lim_now_slot(now), i;

	if (s <= a->slot)
		return;
	if (s - a->slot >= LIM_NSLOTS) {
		memset(a->msgs, 0, sizeof(a->msgs));
		memset(a->rcpts, 0, sizeof(a->rcpts));
		memset(a->bad, 0, sizeof(a->bad));
	} else
		for (i = a->slot + 1; i <= s; i++) {
			a->msgs[i % LIM_NSLOTS] = 0;
			a->rcpts[i % LIM_NSLOTS] = 0;
			a->bad[i % LIM_NSLOTS] = 0;
		}
	a->slot = s;
}

/* The sum of the newest n slots. */
static uint64_t
lim_sum(const struct acct *a, const uint32_t *v, size_t n)
{
	uint64_t sum = 0;
	size_t i;

	for (i = 0; i < n; i++)
		sum += v[(a->slot + LIM_NSLOTS - i) % LIM_NSLOTS];
	return sum;
}

static struct acct *
lim_find(const char *name, int create)
{
	struct acct *a;

	for (a = lim.accts; a; a = a->next)
		if (strcmp(a->name, name) == 0)
			return a;
	if (!create || lim.naccts >= LIM_MAX_ACCTS)
		return NULL;
	a = xcalloc(1, sizeof(*a));
	a->name = xstrdup(name);
	a->first = (uint64_t)time(NULL);
	a->slot = lim_now_slot(time(NULL));
	a->next = lim.accts;
	lim.accts = a;
	lim.naccts++;
	return a;
}

static void
lim_add(uint32_t *v, uint64_t n)
{
	*v = (*v > UINT32_MAX - n) ? UINT32_MAX : *v + (uint32_t)n;
}

/* ---- the state file ------------------------------------------------------ */

static void
lim_put_slots(struct buf *b, uint8_t tag, const uint32_t *v)
{
	unsigned char raw[LIM_NSLOTS * 4];
	size_t i;

	for (i = 0; i < LIM_NSLOTS; i++) {
		raw[i * 4] = (unsigned char)(v[i] >> 24);
		raw[i * 4 + 1] = (unsigned char)(v[i] >> 16);
		raw[i * 4 + 2] = (unsigned char)(v[i] >> 8);
		raw[i * 4 + 3] = (unsigned char)v[i];
	}
	rec_put(b, tag, raw, sizeof(raw));
}

static int
lim_take_slots(const struct rec *r, uint32_t *v)
{
	size_t i;

	if (r->len != LIM_NSLOTS * 4)
		return -1;
	for (i = 0; i < LIM_NSLOTS; i++)
		v[i] = ((uint32_t)r->data[i * 4] << 24) |
		    ((uint32_t)r->data[i * 4 + 1] << 16) |
		    ((uint32_t)r->data[i * 4 + 2] << 8) | r->data[i * 4 + 3];
	return 0;
}

/* An account worth keeping: suspended, or counted in the last day. */
static int
lim_live(struct acct *a, time_t now)
{
	lim_roll(a, now);
	return a->suspended || lim_sum(a, a->msgs, LIM_NSLOTS) ||
	    lim_sum(a, a->bad, LIM_NSLOTS);
}

static void
lim_encode(struct buf *b)
{
	struct acct *a;
	time_t now = time(NULL);
	uint32_t crc;
	unsigned char c[4];

	buf_append(b, lim_magic, sizeof(lim_magic));
	for (a = lim.accts; a; a = a->next) {
		if (!lim_live(a, now))
			continue;
		rec_put_str(b, A_NAME, a->name);
		rec_put_u64(b, A_FIRST, a->first);
		rec_put_u64(b, A_SLOT, a->slot);
		lim_put_slots(b, A_MSGS, a->msgs);
		lim_put_slots(b, A_RCPTS, a->rcpts);
		lim_put_slots(b, A_BAD, a->bad);
		if (a->suspended) {
			rec_put_u64(b, A_SUSPENDED, a->suspended);
			rec_put_str(b, A_REASON, a->reason ? a->reason : "");
		}
	}
	crc = crc32_update(0, b->data, b->len);
	c[0] = (unsigned char)(crc >> 24);
	c[1] = (unsigned char)(crc >> 16);
	c[2] = (unsigned char)(crc >> 8);
	c[3] = (unsigned char)crc;
	rec_put(b, A_END, c, sizeof(c));
}

static void
lim_free_all(void)
{
	struct acct *a;

	while ((a = lim.accts) != NULL) {
		lim.accts = a->next;
		free(a->name);
		free(a->reason);
		free(a);
	}
	lim.naccts = 0;
}

/* Forget a, which holds nothing: no count of the day, no suspension. */
static void
lim_forget(struct acct *a)
{
	struct acct **pp;

	for (pp = &lim.accts; *pp != NULL; pp = &(*pp)->next)
		if (*pp == a) {
			*pp = a->next;
			lim.naccts--;
			free(a->name);
			free(a->reason);
			free(a);
			return;
		}
}

size_t
limits_accounts(void)
{
	return lim.naccts;
}

/* One record into the account being read (the latest A_NAME). */
static int
lim_decode_rec(struct acct *a, const struct rec *r)
{
	char *s;

	if (a == NULL)
		return -1;
	switch (r->tag) {
	case A_FIRST:
		return rec_u64(r, &a->first);
	case A_SLOT:
		return rec_u64(r, &a->slot);
	case A_MSGS:
		return lim_take_slots(r, a->msgs);
	case A_RCPTS:
		return lim_take_slots(r, a->rcpts);
	case A_BAD:
		return lim_take_slots(r, a->bad);
	case A_SUSPENDED:
		return rec_u64(r, &a->suspended);
	case A_REASON:
		if ((s = rec_str(r, 1024)) == NULL)
			return -1;
		free(a->reason);
		a->reason = s;
		return 0;
	}
	return -1;
}

/* The whole file or nothing: 0, or -1 with *why. */
static int
lim_decode(const unsigned char *p, size_t len, const char **why)
{
	struct rec_reader rd;
	struct rec r;
	struct acct *a = NULL, *next;
	size_t before;
	char *name;
	uint32_t want;

	*why = "bad magic";
	if (len < sizeof(lim_magic) || memcmp(p, lim_magic, sizeof(lim_magic)))
		return -1;
	rec_reader_init(&rd, p + sizeof(lim_magic), len - sizeof(lim_magic));
	*why = "malformed record";
	for (;;) {
		before = sizeof(lim_magic) + rd.off;
		if (rec_next(&rd, &r) != 1)
			return -1;	/* ended without its END: truncated */
		if (r.tag == A_END)
			break;
		if (r.tag == A_NAME) {
			if ((name = rec_str(&r, LIM_NAME_MAX)) == NULL ||
			    lim_find(name, 0) != NULL) {
				free(name);
				return -1;
			}
			a = lim_find(name, 1);
			free(name);
			if (a == NULL)
				return -1;
		} else if (lim_decode_rec(a, &r) == -1)
			return -1;
	}
	*why = "bad checksum";
	if (r.len != 4 || rd.off != rd.len)
		return -1;
	/* A clock set back: slots "from the future" would never expire. */
	for (a = lim.accts; a; a = a->next)
		if (a->slot > lim_now_slot(time(NULL)))
			a->slot = lim_now_slot(time(NULL));
	/* Each account was put first: the file's order again, so a file
	   written back reads the same. */
	for (a = lim.accts, lim.accts = NULL; a; a = next) {
		next = a->next;
		a->next = lim.accts;
		lim.accts = a;
	}
	want = ((uint32_t)r.data[0] << 24) | ((uint32_t)r.data[1] << 16) |
	    ((uint32_t)r.data[2] << 8) | r.data[3];
	return want == crc32_update(0, p, before) ? 0 : -1;
}

int
limits_decode(const void *p, size_t len, const char **why)
{
	lim_free_all();
	if (lim_decode(p, len, why) == -1) {
		lim_free_all();
		return -1;
	}
	return 0;
}

void
limits_encode(struct buf *b)
{
	lim_encode(b);
}

/* Write the state now; sync for a suspension or a release. */
static void
lim_save(int sync)
{
	struct buf b;

	buf_init(&b);
	lim_encode(&b);
	if (spool_write_state(LIM_FILE, &b, sync) == -1)
		log_warnx("event=limits result=error reason=\"writing %s: %s\"",
		    LIM_FILE, fd_strerror(errno));
	buf_free(&b);
}

static void
lim_save_cb(evutil_socket_t fd, short ev, void *arg)
{
	lim_save(0);
}

/* The counters are written lazily: a crash loses a few seconds of them. */
static void
lim_save_later(void)
{
	struct timeval tv = { 5, 0 };

	if (!evtimer_pending(lim.saveev, NULL))
		evtimer_add(lim.saveev, &tv);
}

void
limits_start(struct event_base *base)
{
	struct buf b;
	const char *why;

	lim.saveev = evtimer_new(base, lim_save_cb, NULL);
	buf_init(&b);
	if (spool_read_state(LIM_FILE, &b) == -1) {
		if (errno != ENOENT)
			log_warnx("event=limits result=error reason=\"reading "
			    "%s: %s\"", LIM_FILE, strerror(errno));
	} else if (limits_decode(b.data, b.len, &why) == -1) {
		/* Counters start again; suspended mail stays held anyway. */
		log_warnx("event=limits result=error reason=\"%s: %s; "
		    "counting starts again\"", LIM_FILE, why);
	}
	buf_free(&b);
}

void
limits_flush(void)
{
	if (lim.saveev && evtimer_pending(lim.saveev, NULL)) {
		evtimer_del(lim.saveev);
		lim_save(1);
	}
}

/* ---- the questions ------------------------------------------------------- */

/*
 * A program's key, "local:USER/PROGRAM" (sendmail(1) run by a web form's
 * PHP, by cron): its own limits and breaker, and its user's limits over
 * all of that user's keys, "local:USER" (a session naming no program)
 * among them.  A local key's user key into user; 0 if not a local key.
 */
static int
lim_user_of(const char *account, char *user, size_t len)
{
	const char *slash;
	size_t n;

	if (strncmp(account, "local:", 6) != 0)
		return 0;
	slash = strchr(account, '/');
	n = slash ? (size_t)(slash - account) : strlen(account);
	if (n >= len)
		return 0;
	memcpy(user, account, n);
	user[n] = '\0';
	return 1;
}

/* Add what a's slots and reservations hold to have[]. */
static void
lim_have(struct acct *a, uint64_t have[LIM__COUNT])
{
	lim_roll(a, time(NULL));
	have[LIM_MSG_HOUR] += a->rmsgs + lim_sum(a, a->msgs, LIM_HOUR);
	have[LIM_MSG_DAY] += a->rmsgs + lim_sum(a, a->msgs, LIM_NSLOTS);
	have[LIM_RCPT_HOUR] += a->rrcpts + lim_sum(a, a->rcpts, LIM_HOUR);
	have[LIM_RCPT_DAY] += a->rrcpts + lim_sum(a, a->rcpts, LIM_NSLOTS);
}

/* have[] against name's limits: 0, or the refusal. */
static int
lim_over(const char *name, const uint64_t have[LIM__COUNT], size_t nrcpts,
    char *text, size_t len)
{
	static const char *const what[LIM__COUNT] = {
		"messages an hour", "messages a day", "recipients an hour",
		"recipients a day" };
	uint64_t add;
	long long max;
	int k;

	for (k = 0; k < LIM__COUNT; k++) {
		max = conf_limit(queue_conf(), name, (enum limit_kind)k);
		add = k <= LIM_MSG_DAY ? 1 : nrcpts;
		if (max <= 0 || have[k] + add <= (uint64_t)max)
			continue;
		log_info("event=limit result=refused account=<%s> limit=%s "
		    "max=%lld count=%llu add=%llu", log_a(name),
		    conf_limit_names[k], max, (unsigned long long)have[k],
		    (unsigned long long)add);
		snprintf(text, len, "%s sending limit of %lld %s reached for "
		    "%s", k <= LIM_MSG_DAY ? "4.7.1" : "4.5.3", max, what[k],
		    name);
		return k <= LIM_MSG_DAY ? 451 : 452;
	}
	return 0;
}

int
limits_check(const char *account, size_t nrcpts, char *text, size_t len)
{
	struct acct *a = lim_find(account, 0), *b;
	uint64_t have[LIM__COUNT] = { 0, 0, 0, 0 };
	char user[LIM_NAME_MAX + 1];
	size_t n;
	int code;

	if (a && a->suspended) {
		snprintf(text, len, "4.7.1 account %s suspended for unusual "
		    "sending; the postmaster has been told", account);
		return 451;
	}
	if (lim_user_of(account, user, sizeof(user))) {
		/* The user's limits hold over all of its programs together
		   (checked first: with the defaults, its name is the one a
		   refusal should give). */
		n = strlen(user);
		for (b = lim.accts; b; b = b->next)
			if (strncmp(b->name, user, n) == 0 &&
			    (b->name[n] == '\0' || b->name[n] == '/'))
				lim_have(b, have);
		if ((code = lim_over(user, have, nrcpts, text, len)) != 0 ||
		    strcmp(user, account) == 0)
			return code;
		memset(have, 0, sizeof(have));
	}
	if (a)
		lim_have(a, have);
	return lim_over(account, have, nrcpts, text, len);
}

int
limits_reserve(const char *account, size_t nrcpts)
{
	struct acct *a = lim_find(account, 1);

	if (a == NULL)
		return -1;
	a->rmsgs++;
	a->rrcpts += nrcpts;
	return 0;
}

void
limits_unreserve(const char *account, size_t nrcpts)
{
	struct acct *a = lim_find(account, 0);

	if (a == NULL)
		return;
	a->rmsgs -= a->rmsgs ? 1 : 0;
	a->rrcpts -= a->rrcpts >= nrcpts ? nrcpts : a->rrcpts;
	/* A name made for a message that was never committed (XPROGRAM is
	   the caller's word: a new one per session) takes no place. */
	if (a->rmsgs == 0 && a->rrcpts == 0 && !lim_live(a, time(NULL)))
		lim_forget(a);
}

/* ---- the breaker --------------------------------------------------------- */

/* Hold every queued message of the account; the count held. */
static size_t
lim_hold(const char *account)
{
	struct qmsg *m;
	size_t n = 0;

	TAILQ_FOREACH(m, &queue_all, entry) {
		if (m->removed || m->env.account == NULL ||
		    strcmp(m->env.account, account) != 0 ||
		    (m->env.flags & ENV_HOLD))
			continue;
		m->env.flags |= ENV_HOLD | ENV_SUSPENDED;
		spool_write_env(m);
		log_info("q=%s event=hold reason=\"account suspended\" "
		    "account=<%s>", m->env.id, log_a(account));
		n++;
	}
	return n;
}

/* The postmaster's notice: which account, why, how to undo it. */
static void
lim_notice(const struct acct *a, size_t held)
{
	const struct conf *c = queue_conf();
	const char *host = conf_str(c, K_HOSTNAME);
	char to[300], date[64], id[QID_LEN + 1];
	time_t now = time(NULL);
	struct tm tm;
	struct buf b;
	uint32_t r;

	snprintf(to, sizeof(to), "postmaster@%s", c->ndomains ?
	    c->domains[0] : host);
	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (uint32_t)rand();
	snprintf(id, sizeof(id), "%08X%08X", (unsigned)now, r);
	buf_init(&b);
	buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\nSubject: Account %s suspended for unusual sending\r\n"
	    "Date: %s\r\nMessage-ID: <%s.breaker@%s>\r\nAuto-Submitted: "
	    "auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; "
	    "charset=utf-8\r\n\r\n", host, to, a->name, date, id, host);
	buf_printf(&b, "Tern on %s has suspended the account %s.\r\n\r\n"
	    "Why: %s.\r\n\r\n", host, a->name, a->reason);
	buf_printf(&b, "Until it is released, its new submissions are refused "
	    "with \"451 4.7.1 account\r\nsuspended\", and its %zu queued "
	    "message(s) are held (not deleted;\r\n`ternctl queue` marks them "
	    "with !).\r\n\r\n", held);
	buf_printf(&b, "A sudden burst is how a guessed or stolen password "
	    "usually shows. If\r\nthe sending was not the account's owner, "
	    "change the password first\r\n(ternctl user passwd %s) and "
	    "remove the held mail (ternctl remove ID).\r\n\r\nTo lift the "
	    "suspension and let the held mail go:\r\n\r\n    ternctl user "
	    "release %s\r\n", a->name, a->name);
	if (commit_inject(to, &b, ENV_DSN | ENV_DOUBLE) == -1)
		log_warnx("event=breaker result=error reason=\"cannot queue "
		    "the notice to the postmaster: %s\"", fd_strerror(errno));
	buf_free(&b);
}

static void
lim_trip(struct acct *a, const char *reason)
{
	size_t held;

	a->suspended = (uint64_t)time(NULL);
	free(a->reason);
	a->reason = xstrdup(reason);
	held = lim_hold(a->name);
	log_warnx("event=breaker result=tripped account=<%s> held=%zu "
	    "reason=\"%s\"", log_a(a->name), held, log_q(reason));
	lim_save(1);
	lim_notice(a, held);
}

/* Trip if the last hour is far above the usual or mostly rejected. */
static void
lim_breaker(struct acct *a)
{
	const struct conf *c = queue_conf();
	long long factor = conf_num(c, NULL, K_BREAKER_FACTOR);
	long long floor_ = conf_num(c, NULL, K_BREAKER_FLOOR);
	long long pct = conf_num(c, NULL, K_BREAKER_REJECT_PERCENT);
	long long rmin = conf_num(c, NULL, K_BREAKER_REJECT_MIN);
	uint64_t hour = lim_sum(a, a->msgs, LIM_HOUR);
	uint64_t older = lim_sum(a, a->msgs, LIM_NSLOTS) - hour;
	uint64_t bad = lim_sum(a, a->bad, LIM_HOUR);
	uint64_t tried = lim_sum(a, a->rcpts, LIM_HOUR) + bad;
	long long known = ((long long)time(NULL) - (long long)a->first) / 3600;
	double usual;
	char why[300];

	if (a->suspended)
		return;
	if (known < 1)
		known = 1;
	if (known > 23)
		known = 23;
	usual = (double)older / (double)known;
	if (factor > 0 && hour > (uint64_t)floor_ &&
	    (double)hour > (double)factor * usual) {
		snprintf(why, sizeof(why), "%llu messages in the last hour, "
		    "against a usual %.1f an hour (breaker-factor %lld, "
		    "breaker-floor %lld)", (unsigned long long)hour, usual,
		    factor, floor_);
		lim_trip(a, why);
	} else if (pct > 0 && bad >= (uint64_t)rmin &&
	    bad * 100 >= (uint64_t)pct * tried) {
		snprintf(why, sizeof(why), "%llu of %llu recipients in the "
		    "last hour were rejected (breaker-reject-percent %lld)",
		    (unsigned long long)bad, (unsigned long long)tried, pct);
		lim_trip(a, why);
	}
}

void
limits_count(struct qmsg *m, uint64_t rejected)
{
	struct acct *a;

	if (m->env.account == NULL || (m->env.flags & ENV_DSN))
		return;
	if ((a = lim_find(m->env.account, 1)) == NULL)
		return;
	lim_roll(a, time(NULL));
	lim_add(&a->msgs[a->slot % LIM_NSLOTS], 1);
	lim_add(&a->rcpts[a->slot % LIM_NSLOTS], m->env.nrcpts);
	lim_add(&a->bad[a->slot % LIM_NSLOTS], rejected);
	lim_save_later();
	if (a->suspended) {
		/* Committed while the breaker tripped: held like the rest. */
		m->env.flags |= ENV_HOLD | ENV_SUSPENDED;
		spool_write_env(m);
		return;
	}
	lim_breaker(a);
}

void
limits_rejected(const struct qmsg *m)
{
	struct acct *a;

	if (m->env.account == NULL || (m->env.flags & ENV_DSN) ||
	    (a = lim_find(m->env.account, 1)) == NULL)
		return;
	lim_roll(a, time(NULL));
	lim_add(&a->bad[a->slot % LIM_NSLOTS], 1);
	lim_save_later();
	lim_breaker(a);
}

/* ---- the admin ----------------------------------------------------------- */

void
limits_release(const char *account, struct buf *o)
{
	struct acct *a = lim_find(account, 0);
	struct qmsg *m;
	size_t n = 0;
	int was = a && a->suspended;

	if (a && a->suspended) {
		a->suspended = 0;
		free(a->reason);
		a->reason = NULL;
		/* Counts start again, so the release is not tripped at once. */
		memset(a->msgs, 0, sizeof(a->msgs));
		memset(a->rcpts, 0, sizeof(a->rcpts));
		memset(a->bad, 0, sizeof(a->bad));
		a->first = (uint64_t)time(NULL);
		lim_save(1);
	}
	/* Its held mail, even if the state file was lost meanwhile. */
	TAILQ_FOREACH(m, &queue_all, entry) {
		if (!(m->env.flags & ENV_SUSPENDED) || m->env.account == NULL ||
		    strcmp(m->env.account, account) != 0)
			continue;
		m->env.flags &= ~(uint64_t)(ENV_HOLD | ENV_SUSPENDED);
		spool_write_env(m);
		n++;
	}
	if (!was && n == 0) {
		buf_printf(o, "error %s is not suspended\n", account);
		return;
	}
	log_info("event=breaker result=released account=<%s> released=%zu",
	    log_a(account), n);
	buf_printf(o, "ok\n%s released; %zu held message(s) released\n",
	    account, n);
	ctl_flush(NULL);
}

void
limits_list(struct buf *o)
{
	struct acct *a;
	time_t now = time(NULL);

	buf_printf(o, "ok\n%-40s %8s %8s %8s %8s  %s\n", "ACCOUNT", "msgs/h",
	    "msgs/d", "rcpts/h", "rcpts/d", "STATE");
	for (a = lim.accts; a; a = a->next) {
		if (!lim_live(a, now))
			continue;
		buf_printf(o, "%-40s %8llu %8llu %8llu %8llu  %s%s\n", a->name,
		    (unsigned long long)lim_sum(a, a->msgs, LIM_HOUR),
		    (unsigned long long)lim_sum(a, a->msgs, LIM_NSLOTS),
		    (unsigned long long)lim_sum(a, a->rcpts, LIM_HOUR),
		    (unsigned long long)lim_sum(a, a->rcpts, LIM_NSLOTS),
		    a->suspended ? "suspended: " : "active",
		    a->suspended && a->reason ? a->reason : "");
	}
}
