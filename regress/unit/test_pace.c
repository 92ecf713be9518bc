/*
 * test_pace: the pacing rule of queue/dest.c against a simulated receiver
 * (a token bucket: a burst, then a rate), on a clock the test moves, at
 * three time scales; and the reply classes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "lib/util.h"
#include "queue/dest.h"
#include "regress/unit/unit.h"

void test_pace(void);

struct bucket {
	double	 tokens, burst, rate, t;
};

static int
bucket_take(struct bucket *b, double now)
{
	b->tokens += (now - b->t) * b->rate;
	if (b->tokens > b->burst)
		b->tokens = b->burst;
	b->t = now;
	if (b->tokens < 1)
		return 0;
	b->tokens -= 1;
	return 1;
}

/*
 * Deliver n recipients one a transaction, one transaction at a time,
 * starting each as soon as the rule allows.  Returns the time the last
 * was accepted; *refused counts throttling replies.
 */
static double
simulate(double rate, double burst, int n, int *refused)
{
	struct dest_pace p;
	struct bucket b = { burst, burst, rate, 0 };
	double now = 0, first = 60.0 / (rate * 3600 / 60);	/* retry-min */
	int left = n, guard;
	uint32_t e;

	pace_init(&p, 5);
	*refused = 0;
	for (guard = 0; left > 0 && guard < 100000; guard++) {
		if (!pace_open_now(&p, 0, 5, now)) {
			now = p.next_ok;
			continue;
		}
		e = pace_open(&p, 1, now);
		now += 0.001 / rate;		/* the transaction's own time */
		if (bucket_take(&b, now)) {
			left--;
			pace_result(&p, 1, DEST_SIG_NONE, e, now, first, 5);
		} else {
			(*refused)++;
			pace_result(&p, 0, DEST_SIG_THROTTLE, e, now, first, 5);
		}
	}
	return left == 0 ? now : -1;
}

/* The config statements of pacing: destination, fallback-relay. */
static void
pace_conf(void)
{
	static const char ok[] =
	    "destination isp.example connections 2 recipients 5 "
	    "messages-per-minute 30 messages-per-connection 10\n"
	    "destination MX1.ISP.example recipients 1\n"
	    "fallback-relay relay.example:2525 tls required\n"
	    "fallback-after 2h\npacing no\nlisten mx 127.0.0.1 port 25\n";
	static const char *bad[] = {
	    "destination isp.example\n",
	    "destination isp.example connections\n",
	    "destination isp.example connections 0\n",
	    "destination isp.example speed 3\n",
	    "destination isp.example connections 1\n"
	    "destination isp.example recipients 1\n",
	    "destination bad..name connections 1\n",
	    "fallback-relay\n",
	    "route !fallback via x.example\n",
	    "pacing maybe\n",
	};
	char err[512];
	struct conf *c;
	const struct shape *s;
	const struct route *r;
	struct buf b;
	size_t i;

	c = conf_parse("t", ok, sizeof(ok) - 1, "/", err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		printf("%s\n", err);
		return;
	}
	s = conf_find_shape(c, "ISP.example");
	CHECK(s && s->conns == 2 && s->rcpts == 5 && s->mpm == 30 &&
	    s->mpc == 10);
	s = conf_find_shape(c, "mx1.isp.example");
	CHECK(s && s->rcpts == 1 && s->conns == 0);
	CHECK(conf_find_shape(c, "other.example") == NULL);
	r = conf_fallback_route(c);
	CHECK(r && strcmp(r->host, "relay.example") == 0 && r->port == 2525 &&
	    r->tls == ROUTE_TLS_REQUIRED);
	CHECK(conf_find_route(c, "isp.example") == NULL);
	CHECK(conf_num(c, NULL, K_FALLBACK_AFTER) == 2 * 3600 * 1000);
	CHECK(strcmp(conf_str(c, K_PACING), "no") == 0);
	buf_init(&b);
	conf_print(c, &b);
	buf_putc(&b, '\0');
	CHECK(strstr(b.data, "destination \"isp.example\" connections 2 "
	    "recipients 5 messages-per-minute 30 messages-per-connection 10")
	    != NULL);
	CHECK(strstr(b.data, "fallback-relay \"relay.example\" port 2525")
	    != NULL);
	buf_free(&b);
	conf_free(c);
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		char text[256];

		snprintf(text, sizeof(text), "%slisten mx 127.0.0.1 port 25\n",
		    bad[i]);
		c = conf_parse("t", text, strlen(text), "/", err, sizeof(err));
		CHECK(c == NULL);
		if (c)
			conf_free(c);
	}
}

/*
 * Two transactions open at once; the second is refused at MAIL and ends
 * first, with nothing measured yet: the rate can only be guessed (a
 * recipient a first pause).  The first then reports what it delivered
 * (an older epoch): the guess gives way to the measure, or the
 * destination would crawl back from one recipient a minute.
 */
static void
pace_first_guess(void)
{
	struct dest_pace p, q;
	uint32_t e1, e2;

	pace_init(&p, 5);
	e1 = pace_open(&p, 10, 1000.0);
	e2 = pace_open(&p, 10, 1000.01);
	pace_result(&p, 0, DEST_SIG_THROTTLE, e2, 1000.02, 60, 5);
	CHECK(p.rate > 0 && p.rate < 0.02 && p.next_ok > 1060);
	pace_result(&p, 5, DEST_SIG_THROTTLE, e1, 1000.1, 60, 5);
	CHECK(p.rate > 24 && p.rate < 26);		/* 5 in 0.1 s, halved */
	CHECK(p.next_ok < 1000.2);
	/* The same with the first ending well. */
	pace_init(&q, 5);
	e1 = pace_open(&q, 10, 1000.0);
	e2 = pace_open(&q, 10, 1000.01);
	pace_result(&q, 0, DEST_SIG_THROTTLE, e2, 1000.02, 60, 5);
	pace_result(&q, 10, DEST_SIG_NONE, e1, 1000.1, 60, 5);
	CHECK(q.rate > 49 && q.rate < 51.5 && q.next_ok < 1000.2);
	/* A measure, once taken, is not replaced by a later success. */
	pace_result(&q, 1, DEST_SIG_NONE, e1, 1000.5, 60, 5);
	CHECK(q.rate < 52);
}


/*
 * The first transactions, opened together before anything was known,
 * each take one recipient of the receiver's burst and are refused
 * after it.  The first to end decreases the rate from its own recipient
 * alone; the others report later (older epoch), and what they took
 * belongs to that measure: after all five the rate is half of 5 in the
 * interval, not of 1, and the next measure starts from nothing.
 */
static void
pace_late_reports(void)
{
	struct dest_pace p;
	uint32_t e[5];
	int i;

	pace_init(&p, 5);
	for (i = 0; i < 5; i++)
		e[i] = pace_open(&p, 10, 1000.0);
	pace_result(&p, 1, DEST_SIG_THROTTLE, e[0], 1000.05, 60, 5);
	CHECK(p.rate > 9 && p.rate < 11);		/* 1 in 0.05 s, halved */
	for (i = 1; i < 5; i++)
		pace_result(&p, 1, DEST_SIG_THROTTLE, e[i], 1000.05 +
		    0.001 * i, 60, 5);
	CHECK(p.rate > 45 && p.rate < 50);		/* 5 in 0.054 s */
	CHECK(p.accepted == 0 && p.epoch == 1);
	CHECK(p.next_ok < 1000.054 + 1.0 / 45);
	/* A late report of fewer recipients over a longer time never
	   lowers what was measured. */
	{
		double r = p.rate;

		pace_result(&p, 0, DEST_SIG_NONE, e[0], 1001, 60, 5);
		CHECK(p.rate == r);
	}
}

/*
 * A throttle right after another, in a transaction that took some
 * recipients first: the receiver accepted recipients between the two,
 * so the rate comes from the measure, not from halving (which, at the
 * limit, halves a right rate).
 */
static void
pace_partial_throttle(void)
{
	struct dest_pace p;
	uint32_t e;

	pace_init(&p, 5);
	e = pace_open(&p, 60, 1000);
	pace_result(&p, 60, DEST_SIG_THROTTLE, e, 1001, 60, 5);
	CHECK(p.rate > 29.9 && p.rate < 30.1 && p.streak == 1);
	e = pace_open(&p, 2, 1001 + 1.0 / 30);
	pace_result(&p, 2, DEST_SIG_THROTTLE, e, 1001 + 2.0 / 28, 60, 5);
	CHECK(p.rate > 26 && p.rate < 27);		/* 0.95 of 28 */
	/* Refused with none taken: in a row, halved. */
	e = pace_open(&p, 1, p.next_ok);
	pace_result(&p, 0, DEST_SIG_THROTTLE, e, p.next_ok + 0.001, 60, 5);
	CHECK(p.rate > 13 && p.rate < 13.5);
}

/*
 * The pacing clock.  Time that mail waited beyond the rate (the
 * transaction before took longer than 1/rate) goes in the next
 * transaction, and is charged once: transactions that each take 3/rate,
 * one at a time, carry 3 recipients each, so the destination gets its
 * rate (charged twice, they alternate 3 and 1).  Nothing waited: one.
 */
static void
pace_clock_credit(void)
{
	struct dest_pace p;
	double t = 10, sent = 0;
	int k;

	pace_init(&p, 1);
	p.rate = 10;
	for (k = 0; k < 10; k++) {
		double n = (double)(size_t)pace_allow(&p, t);

		pace_open(&p, (size_t)n, t);
		sent += n;
		pace_wait(&p, t + 0.001);	/* the rest waits for it */
		t += 0.3;
	}
	CHECK(sent >= 28 && sent <= 31);
	pace_open(&p, (size_t)pace_allow(&p, t), t);
	/* After a pause with nothing waiting, one recipient, not the
	   pause's worth. */
	CHECK(pace_allow(&p, t + 100) < 1.5);
	pace_wait(&p, t + 100);
	CHECK(pace_allow(&p, t + 100.5) > 5.9 && pace_allow(&p, t + 100.5)
	    < 6.1);
	pace_open(&p, 6, t + 100.5);
	CHECK(p.waiting == 0 && pace_allow(&p, t + 100.5) < 1.5);
	/* Not paced yet: no bound. */
	pace_init(&p, 1);
	CHECK(pace_allow(&p, 1) == 0);
}

/*
 * The bench's start, on the test's clock: 16 messages of 10 recipients
 * for one receiver (a burst of 5, then `rate` a second), 5 transactions
 * at once before anything is known, each transaction taking `txn`
 * seconds and the scheduler acting `lag` after each event.  At three
 * time scales with the same txn and lag (real seconds, as on a machine),
 * the rule finishes near the minimum and is refused a bounded number of
 * times.  Returns the finish time, -1 if not done.
 */
struct sim_txn {
	double	 end;
	size_t	 msg, n;
	uint32_t epoch;
	int	 open;
};

static double
simulate_start(double rate, double txn, double lag, int *refused)
{
	double when[200];
	int nwhen = 0, w;
	struct dest_pace p;
	struct bucket b = { 5, 5, rate, 1000 };
	struct sim_txn t[5];
	size_t left[16], inflight[16], i, k, done = 0;
	double now = 1000, wake;
	int active = 0, guard;

	pace_init(&p, 5);
	memset(t, 0, sizeof(t));
	for (i = 0; i < 16; i++) {
		left[i] = 10;
		inflight[i] = 0;
	}
	*refused = 0;
	for (guard = 0; done < 160 && guard < 100000; guard++) {
		/* Open what the rule allows, oldest message first. */
		for (i = 0; i < 16 && active < 5; i++) {
			double can;
			size_t n;

			if (left[i] == inflight[i] || inflight[i] > 0)
				continue;
			if (!pace_open_now(&p, active, 5, now)) {
				pace_wait(&p, now);
				break;
			}
			can = pace_allow(&p, now);
			n = left[i];
			if (can > 0 && can < (double)n)
				n = (size_t)can;
			for (k = 0; t[k].open; k++)
				;
			t[k].open = 1;
			t[k].msg = i;
			t[k].n = n;
			t[k].end = now + txn;
			t[k].epoch = pace_open(&p, n, now);
			inflight[i] = n;
			active++;
		}
		/* The next event: a transaction ends, or the rule reopens. */
		wake = 1e18;
		for (k = 0; k < 5; k++)
			if (t[k].open && t[k].end < wake)
				wake = t[k].end;
		if (active < 5 && p.next_ok > now && p.next_ok < wake)
			wake = p.next_ok + lag;
		if (wake >= 1e18)
			break;
		now = wake;
		for (k = 0; k < 5; k++) {
			size_t ok = 0, j;

			if (!t[k].open || t[k].end > now)
				continue;
			/* The receiver counts at the transaction's end. */
			for (j = 0; j < t[k].n; j++)
				ok += (size_t)bucket_take(&b, t[k].end);
			if (ok < t[k].n && nwhen < 200)
				when[nwhen++] = now;
			left[t[k].msg] -= ok;
			inflight[t[k].msg] = 0;
			done += ok;
			t[k].open = 0;
			active--;
			pace_result(&p, ok, ok < t[k].n ? DEST_SIG_THROTTLE :
			    DEST_SIG_NONE, t[k].epoch, now + lag, 60 / rate /
			    60, 5);
			if (getenv("PACE_TRACE"))
				printf("%.3f n=%zu ok=%zu rate=%.3g conc=%.2g "
				    "tokens=%.2f\n", now, t[k].n, ok, p.rate,
				    p.conc, b.tokens);
		}
		now += lag;
	}
	/* The most in one hour of the receiver's (60 recipients' time),
	   where 20 would put the client in its penalty box. */
	for (w = 0; w < nwhen; w++) {
		int in = 0, x;

		for (x = w; x < nwhen && when[x] < when[w] + 60 / rate; x++)
			in++;
		if (in > *refused)
			*refused = in;
	}
	return done == 160 ? now - 1000 : -1;
}

void
test_pace(void)
{
	struct dest_pace p;
	double scale[] = { 1.0 / 360, 1.0 / 60, 1.0 / 6 };	/* per second */
	size_t i;
	int refused, first_refused = -1;

	pace_conf();
	/* Classes of replies. */
	CHECK(dest_classify("421 4.7.0 Try again later, closing") ==
	    DEST_SIG_THROTTLE);
	CHECK(dest_classify("451 4.7.650 The mail server has been "
	    "temporarily rate limited") == DEST_SIG_THROTTLE);
	CHECK(dest_classify("450 4.7.28 unusual rate of mail") ==
	    DEST_SIG_THROTTLE);
	CHECK(dest_classify("451 4.7.1 greylisted, try again later") ==
	    DEST_SIG_NONE);
	CHECK(dest_classify("450 4.2.0 mailbox busy") == DEST_SIG_NONE);
	CHECK(dest_classify("452 4.5.3 Too many recipients") == DEST_SIG_RCPTS);
	CHECK(dest_classify("452 4.2.2 mailbox full") == DEST_SIG_NONE);
	CHECK(dest_classify("452 4.3.1 insufficient system storage") ==
	    DEST_SIG_NONE);
	CHECK(dest_classify("452 too many recipients this time") ==
	    DEST_SIG_RCPTS);
	CHECK(dest_classify("452 slow down please") == DEST_SIG_RCPTS);
	CHECK(dest_classify("550 5.7.0 rate limit") == DEST_SIG_NONE);
	CHECK(dest_classify("250 ok") == DEST_SIG_NONE);
	CHECK(dest_classify(NULL) == DEST_SIG_NONE);

	/* No pacing until the destination says so. */
	pace_init(&p, 5);
	CHECK(pace_open_now(&p, 4, 5, 0) && !pace_open_now(&p, 5, 5, 0));
	pace_open(&p, 10, 0);
	CHECK(p.next_ok == 0 && p.rate == 0);
	pace_result(&p, 10, DEST_SIG_NONE, 0, 1, 60, 5);
	CHECK(p.rate == 0 && p.conc == 5);

	/* A throttle: rate from what was accepted, half of it; closed for
	   one recipient's time; concurrency halves. */
	pace_result(&p, 0, DEST_SIG_THROTTLE, 0, 2, 60, 5);
	CHECK(p.rate > 0 && p.rate <= 5.0 + 1e-9);
	CHECK(p.conc == 2.5);
	CHECK(!pace_open_now(&p, 0, 5, 2) && pace_open_now(&p, 0, 5,
	    2 + 1.0 / p.rate));
	/* A reply to a transaction that was in flight: no second decrease. */
	{
		double r = p.rate;

		pace_result(&p, 0, DEST_SIG_THROTTLE, 0, 2.01, 60, 5);
		CHECK(p.rate == r);
	}
	/* Successes raise it additively. */
	{
		double r = p.rate;

		pace_result(&p, 2, DEST_SIG_NONE, p.epoch, 10, 60, 5);
		CHECK(p.rate > r && p.rate - r < r * 0.1);
	}
	/* A rate far below the limit recovers within a few dozen. */
	{
		struct dest_pace q;
		int k;

		pace_init(&q, 5);
		pace_result(&q, 0, DEST_SIG_THROTTLE, 0, 0, 10, 5);
		CHECK(q.rate > 0.09 && q.rate < 0.11);
		for (k = 0; k < 100 && q.rate < 2; k++)
			pace_result(&q, 1, DEST_SIG_NONE, q.epoch, 1 + k, 10, 5);
		CHECK(q.rate >= 2 && k < 60);
	}
	/* Recipients per transaction: what the receiver took. */
	pace_result(&p, 3, DEST_SIG_RCPTS, p.epoch, 11, 60, 5);
	CHECK(p.rcpt_max == 3);

	/*
	 * The same receiver shape (burst 5, then 60 an hour) at three time
	 * scales: the rule finishes 160 recipients near (160 - 5) / rate
	 * and is refused about as often at each, so no time scale is
	 * built in.
	 */
	for (i = 0; i < sizeof(scale) / sizeof(*scale); i++) {
		double min = (160 - 5) / scale[i];
		double t = simulate(scale[i], 5, 160, &refused);

		printf("pace: rate %.4g/s: done in %.3g of the minimum, "
		    "%d refusals\n", scale[i], t / min, refused);
		CHECK(t > 0 && t < min * 1.2);
		CHECK(refused < 40);
		if (first_refused == -1)
			first_refused = refused;
		CHECK(refused <= first_refused + 3 &&
		    refused + 3 >= first_refused);
	}
	pace_first_guess();
	pace_late_reports();
	pace_partial_throttle();
	pace_clock_credit();
	/* The bench's three time scales against the same machine. */
	for (i = 0; i < 3; i++) {
		double r = i == 0 ? 30 : i == 1 ? 3 : 0.3;	/* a second */
		double min = 155 / r, t = simulate_start(r, 0.03, 0.01,
		    &refused);

		printf("pace: start, rate %.3g/s: done in %.3g of the minimum, "
		    "at most %d refusals in the receiver's hour\n", r, t / min,
		    refused);
		CHECK(t > 0 && t < min * 1.05);
		CHECK(refused < 20);
	}
}
