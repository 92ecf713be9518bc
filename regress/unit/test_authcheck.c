/*
 * test_authcheck: the vault's password check with the time given: right,
 * wrong, unknown (one hash all the same, about as long) and locked
 * accounts; the delays growing with failures (before a right answer too),
 * the refusal after the limit and its end after the window; counting per
 * client (IPv6 by /64) and per account; the tables' bound and LRU order;
 * known clients (IPv4 by /24) that the account's lockout lets through,
 * their window and bounds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/authcheck.h"
#include "auth/vault.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_authcheck(void);

#define T0	((time_t)1700000000)
#define PW_ANNA	"Anna-test-Pw-7Rq2"
#define PW_BOB	"Bob-test-Pw-3Kx9"

static struct authcheck *
make(void)
{
	struct authcheck *ac = authcheck_new();
	struct cred *v = xcalloc(2, sizeof(*v));

	/* Given out of order: the module sorts. */
	str_copy(v[0].name, "bob", sizeof(v[0].name));
	v[0].locked = 1;
	CHECK(credstore_hash(PW_BOB, v[0].hash, sizeof(v[0].hash)) == 0);
	str_copy(v[1].name, "anna@example.org", sizeof(v[1].name));
	CHECK(credstore_hash(PW_ANNA, v[1].hash, sizeof(v[1].hash)) == 0);
	authcheck_set_accounts(ac, v, 2);
	CHECK(authcheck_count(ac) == 2);
	return ac;
}

static double
timed(struct authcheck *ac, const char *user, const char *pass,
    const char *client, struct authcheck_result *r)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	authcheck_run(ac, user, pass, client, T0, r);
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a.tv_sec) * 1e3 +
	    (double)(b.tv_nsec - a.tv_nsec) / 1e6;
}

static void
test_authcheck_outcomes(void)
{
	struct authcheck *ac = make();
	struct authcheck_result r;
	double known = 0, unknown = 0;
	int i;

	authcheck_run(ac, "Anna@Example.ORG", PW_ANNA, "192.0.2.1", T0, &r);
	CHECK(r.status == VAULT_OK && r.hashed && r.delay == 0);
	CHECK(strcmp(r.text, "anna@example.org") == 0);	/* canonical */
	CHECK(r.failures == 0);
	authcheck_run(ac, "bob", PW_BOB, "192.0.2.2", T0, &r);
	CHECK(r.status == VAULT_INVALID && strcmp(r.text, "locked") == 0);
	CHECK(r.failures == 1);
	authcheck_run(ac, "bob", PW_ANNA, "192.0.2.3", T0, &r);
	CHECK(r.status == VAULT_INVALID && strcmp(r.text, "bad password") == 0);
	authcheck_run(ac, "carl@example.org", PW_ANNA, "192.0.2.4", T0, &r);
	CHECK(r.status == VAULT_INVALID && strcmp(r.text, "unknown user") == 0);
	CHECK(r.hashed);
	authcheck_run(ac, "not a name", PW_ANNA, "192.0.2.5", T0, &r);
	CHECK(r.status == VAULT_INVALID && r.hashed);
	authcheck_run(ac, "anna@example.org", "", "192.0.2.6", T0, &r);
	CHECK(r.status == VAULT_INVALID && strcmp(r.text, "bad password") == 0);
	/* An unknown name costs a hash like a known one (not a shortcut). */
	for (i = 0; i < 3; i++) {
		known += timed(ac, "anna@example.org", "wrong-1", "198.51.100.1",
		    &r);
		unknown += timed(ac, "zed@example.org", "wrong-1",
		    "198.51.100.2", &r);
	}
	printf("authcheck: known account %.1f ms, unknown %.1f ms a check\n",
	    known / 3, unknown / 3);
	CHECK(unknown > known * 0.4 && known > unknown * 0.4);
	/* With no accounts at all, a check still hashes (the dummy). */
	authcheck_set_accounts(ac, NULL, 0);
	CHECK(timed(ac, "anna@example.org", PW_ANNA, "198.51.100.3", &r) >
	    known / 3 * 0.4);
	CHECK(r.status == VAULT_INVALID && r.hashed);
	authcheck_free(ac);
}

static void
test_authcheck_delays(void)
{
	static const unsigned want[] = { 0, 1, 2, 4, 8, 16, 16, 16, 16, 16 };
	struct authcheck *ac = make();
	struct authcheck_result r;
	unsigned i;

	for (i = 0; i < AUTHCHECK_LIMIT; i++) {
		authcheck_run(ac, "anna@example.org", "wrong", "203.0.113.9",
		    T0 + i, &r);
		CHECK(r.status == VAULT_INVALID && r.delay == want[i]);
		CHECK(r.failures == i + 1);
	}
	/* The limit: refused at once, the password not even checked. */
	authcheck_run(ac, "anna@example.org", PW_ANNA, "203.0.113.9", T0 + 20,
	    &r);
	CHECK(r.status == VAULT_TEMP && !r.hashed && r.delay == 0);
	CHECK(strstr(r.text, "too many failures") != NULL);
	/* The account is blocked from everywhere, the client for everyone. */
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.77", T0 + 20,
	    &r);
	CHECK(r.status == VAULT_TEMP);
	authcheck_run(ac, "bob", PW_BOB, "203.0.113.9", T0 + 20, &r);
	CHECK(r.status == VAULT_TEMP);
	/* Refusals do not prolong it: the window runs from the last failure. */
	authcheck_run(ac, "anna@example.org", PW_ANNA, "203.0.113.9",
	    T0 + 9 + AUTHCHECK_WINDOW - 1, &r);
	CHECK(r.status == VAULT_TEMP);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "203.0.113.9",
	    T0 + 9 + AUTHCHECK_WINDOW, &r);
	CHECK(r.status == VAULT_OK && r.delay == 0 && r.failures == 0);
	authcheck_free(ac);
}

static void
test_authcheck_counting(void)
{
	struct authcheck *ac = make();
	struct authcheck_result r;
	char key[80];

	/* The right password waits like a wrong one, then clears the
	 * account's count but not the client's. */
	authcheck_run(ac, "anna@example.org", "x1", "192.0.2.10", T0, &r);
	authcheck_run(ac, "anna@example.org", "x2", "192.0.2.10", T0, &r);
	CHECK(r.failures == 2);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.10", T0, &r);
	CHECK(r.status == VAULT_OK && r.delay == 2 && r.failures == 2);
	CHECK(authcheck_failures(ac, NULL, "anna@example.org", T0) == 0);
	CHECK(authcheck_failures(ac, "192.0.2.10", NULL, T0) == 2);
	/* Per account, across clients (not of 192.0.2.0/24: known now). */
	authcheck_run(ac, "anna@example.org", "y", "198.51.100.11", T0, &r);
	authcheck_run(ac, "anna@example.org", "y", "198.51.100.12", T0, &r);
	authcheck_run(ac, "anna@example.org", "y", "198.51.100.13", T0, &r);
	CHECK(r.failures == 3 && !r.known);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "198.51.100.14", T0,
	    &r);
	CHECK(r.status == VAULT_OK && r.delay == 4);
	/* Unknown names are counted for the client only. */
	authcheck_run(ac, "nobody@example.org", "z", "192.0.2.20", T0, &r);
	CHECK(authcheck_failures(ac, NULL, "nobody@example.org", T0) == 0);
	CHECK(authcheck_failures(ac, "192.0.2.20", NULL, T0) == 1);
	/* IPv6 clients are counted by /64; mapped IPv4 as IPv4. */
	authcheck_client_key("2001:db8:1:2::1", key, sizeof(key));
	CHECK(strcmp(key, "2001:db8:1:2::/64") == 0);
	authcheck_client_key("[IPv6:2001:db8:1:2:aa:bb:cc:dd]", key,
	    sizeof(key));
	CHECK(strcmp(key, "2001:db8:1:2::/64") == 0);
	authcheck_client_key("::ffff:192.0.2.20", key, sizeof(key));
	CHECK(strcmp(key, "192.0.2.20") == 0);
	authcheck_client_key("198.51.100.7", key, sizeof(key));
	CHECK(strcmp(key, "198.51.100.7") == 0);
	authcheck_fail(ac, "2001:db8:1:2::1", NULL, T0);
	authcheck_fail(ac, "2001:db8:1:2:ffff::9", NULL, T0);
	CHECK(authcheck_failures(ac, "2001:db8:1:2::77", NULL, T0) == 2);
	CHECK(authcheck_failures(ac, "2001:db8:1:3::1", NULL, T0) == 0);
	CHECK(authcheck_failures(ac, "::ffff:192.0.2.20", NULL, T0) == 1);
	/* Forgotten after the window; a clock gone back forgets too. */
	CHECK(authcheck_failures(ac, "192.0.2.10", NULL,
	    T0 + AUTHCHECK_WINDOW) == 0);
	CHECK(authcheck_failures(ac, "192.0.2.10", NULL, T0 - 3600) == 0);
	authcheck_free(ac);
}

static void
test_authcheck_bounded(void)
{
	struct authcheck *ac = authcheck_new();
	char client[64];
	int i;

	authcheck_fail(ac, "10.0.0.0", "anna", T0);
	authcheck_fail(ac, "10.0.0.1", NULL, T0);
	/* 10.0.0.0 is used again: the least recently used is now .1 */
	authcheck_fail(ac, "10.0.0.0", NULL, T0 + 1);
	for (i = 2; i < AUTHCHECK_CLIENTS + 1; i++) {
		snprintf(client, sizeof(client), "10.0.%d.%d", i / 256, i % 256);
		authcheck_fail(ac, client, NULL, T0 + 2);
	}
	CHECK(authcheck_failures(ac, "10.0.0.0", NULL, T0 + 2) == 2);
	CHECK(authcheck_failures(ac, "10.0.0.1", NULL, T0 + 2) == 0);
	CHECK(authcheck_failures(ac, "10.0.16.0", NULL, T0 + 2) == 1);
	/* A flood of clients does not push an account out. */
	CHECK(authcheck_failures(ac, NULL, "anna", T0 + 2) == 1);
	/* Once full, an expired entry goes before the least recently used. */
	authcheck_fail(ac, "10.0.0.0", NULL, T0 - 100);	/* used late, old */
	authcheck_fail(ac, "10.1.0.0", NULL, T0 + AUTHCHECK_WINDOW - 50);
	CHECK(authcheck_failures(ac, "10.0.0.2", NULL, T0 + 2) == 1);
	CHECK(authcheck_failures(ac, "10.0.0.0", NULL, T0 - 100) == 0);
	CHECK(authcheck_failures(ac, "10.1.0.0", NULL,
	    T0 + AUTHCHECK_WINDOW - 50) == 1);
	authcheck_free(ac);
}

struct seen {
	char		key[80];
	int		kind, refused;
	unsigned	failures, delay, known;
	time_t		until;
};

static struct seen seen[8];
static size_t nseen;

static void
view_cb(void *arg, int kind, const char *key, unsigned failures,
    unsigned delay, int refused, time_t until, unsigned known)
{
	struct seen *e;

	if (nseen >= sizeof(seen) / sizeof(seen[0]))
		return;
	e = &seen[nseen++];
	str_copy(e->key, key, sizeof(e->key));
	e->kind = kind;
	e->failures = failures;
	e->delay = delay;
	e->refused = refused;
	e->until = until;
	e->known = known;
}

static const struct seen *
view_find(int kind, const char *key)
{
	size_t i;

	for (i = 0; i < nseen; i++)
		if (seen[i].kind == kind && strcmp(seen[i].key, key) == 0)
			return &seen[i];
	return NULL;
}

/* ternctl auth's view: entries, their delay or refusal, and clearing. */
static void
test_authcheck_view(void)
{
	struct authcheck *ac = authcheck_new();
	const struct seen *e;
	int i;

	for (i = 0; i < AUTHCHECK_LIMIT + 2; i++)
		authcheck_fail(ac, "203.0.113.9", "anna@example.org", T0 + i);
	for (i = 0; i < 3; i++)
		authcheck_fail(ac, "2001:db8::1", NULL, T0);
	nseen = 0;
	authcheck_walk(ac, T0 + 20, view_cb, NULL);
	CHECK(nseen == 3);
	CHECK((e = view_find(0, "203.0.113.9")) != NULL && e->refused &&
	    e->failures == AUTHCHECK_LIMIT + 2 && e->delay == 0 &&
	    e->until == T0 + AUTHCHECK_LIMIT + 1 + AUTHCHECK_WINDOW);
	CHECK((e = view_find(1, "anna@example.org")) != NULL && e->refused);
	CHECK((e = view_find(0, "2001:db8::/64")) != NULL && !e->refused &&
	    e->failures == 3 && e->delay == 4 && e->until == T0 +
	    AUTHCHECK_WINDOW);
	/* Forgotten after the window: not shown. */
	nseen = 0;
	authcheck_walk(ac, T0 + AUTHCHECK_WINDOW, view_cb, NULL);
	CHECK(nseen == 2 && view_find(0, "2001:db8::/64") == NULL);
	/* Clearing: an address of the same /64, an account by any case. */
	CHECK(authcheck_clear(ac, "2001:db8::5") == 1);
	CHECK(authcheck_clear(ac, "[IPv6:2001:db8::7]") == 0);
	CHECK(authcheck_clear(ac, "Anna@Example.ORG") == 1);
	CHECK(authcheck_failures(ac, "203.0.113.9", "anna@example.org",
	    T0 + 20) == AUTHCHECK_LIMIT + 2);
	CHECK(authcheck_failures(ac, NULL, "anna@example.org", T0 + 20) == 0);
	CHECK(authcheck_clear(ac, "203.0.113.9") == 1);
	CHECK(authcheck_failures(ac, "203.0.113.9", NULL, T0 + 20) == 0);
	CHECK(authcheck_clear(ac, "203.0.113.9") == 0);
	nseen = 0;
	authcheck_walk(ac, T0 + 20, view_cb, NULL);
	CHECK(nseen == 0);
	authcheck_free(ac);
}

/* Guesses from elsewhere lock the account, but not for a client it knows. */
static void
test_authcheck_known(void)
{
	struct authcheck *ac = make();
	struct authcheck_result r;
	const struct seen *e;
	char key[80];
	int i;

	authcheck_known_key("192.0.2.77", key, sizeof(key));
	CHECK(strcmp(key, "192.0.2.0/24") == 0);
	authcheck_known_key("::ffff:192.0.2.77", key, sizeof(key));
	CHECK(strcmp(key, "192.0.2.0/24") == 0);
	authcheck_known_key("[IPv6:2001:db8:1:2::9]", key, sizeof(key));
	CHECK(strcmp(key, "2001:db8:1:2::/64") == 0);

	/* The user logs in from home: the first time, not yet known. */
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.10", T0, &r);
	CHECK(r.status == VAULT_OK && !r.known);
	CHECK(authcheck_known(ac, "anna@example.org", "192.0.2.10", T0));
	CHECK(authcheck_known(ac, "anna@example.org", "192.0.2.200", T0));
	CHECK(!authcheck_known(ac, "anna@example.org", "192.0.3.10", T0));
	CHECK(!authcheck_known(ac, "bob", "192.0.2.10", T0));
	/* Someone guesses from elsewhere until the account is refused. */
	for (i = 0; i < AUTHCHECK_LIMIT + 2; i++)
		authcheck_run(ac, "anna@example.org", "guess", "203.0.113.9",
		    T0 + 1 + i, &r);
	CHECK(authcheck_failures(ac, NULL, "anna@example.org", T0 + 20) >=
	    AUTHCHECK_LIMIT);
	/* A new client is refused without a check, the known one passes
	 * with no delay, and its success does not end the refusal. */
	authcheck_run(ac, "anna@example.org", PW_ANNA, "198.51.100.5",
	    T0 + 20, &r);
	CHECK(r.status == VAULT_TEMP && !r.hashed && !r.known);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.10", T0 + 20,
	    &r);
	CHECK(r.status == VAULT_OK && r.known && r.delay == 0 &&
	    r.failures == 0);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.11", T0 + 20,
	    &r);
	CHECK(r.status == VAULT_OK && r.known);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "198.51.100.5",
	    T0 + 21, &r);
	CHECK(r.status == VAULT_TEMP);
	/* ternctl auth: the refused account, with its one known client. */
	nseen = 0;
	authcheck_walk(ac, T0 + 21, view_cb, NULL);
	CHECK((e = view_find(1, "anna@example.org")) != NULL && e->refused &&
	    e->known == 1);
	CHECK((e = view_find(0, "203.0.113.9")) != NULL && e->known == 0);
	/* A known client's own failures still count: for the account too,
	 * and for itself up to its own refusal. */
	for (i = 0; i < AUTHCHECK_LIMIT; i++) {
		authcheck_run(ac, "anna@example.org", "typo", "192.0.2.10",
		    T0 + 30, &r);
		CHECK(r.status == VAULT_INVALID && r.known);
	}
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.10", T0 + 30,
	    &r);
	CHECK(r.status == VAULT_TEMP && !r.hashed);
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.99", T0 + 30,
	    &r);
	CHECK(r.status == VAULT_OK && r.known);
	/* Known for the window after the last success, then no more. */
	CHECK(authcheck_known(ac, "anna@example.org", "192.0.2.99",
	    T0 + 30 + AUTHCHECK_KNOWN_DAYS * 86400 - 1));
	CHECK(!authcheck_known(ac, "anna@example.org", "192.0.2.99",
	    T0 + 30 + AUTHCHECK_KNOWN_DAYS * 86400));
	/* auth-known-clients 0: no client is known, none is remembered. */
	authcheck_set_known_window(ac, 0);
	CHECK(!authcheck_known(ac, "anna@example.org", "192.0.2.99", T0 + 30));
	authcheck_run(ac, "anna@example.org", PW_ANNA, "192.0.2.99", T0 + 30,
	    &r);
	CHECK(r.status == VAULT_TEMP);
	authcheck_free(ac);
}

/* Per account and in all, the oldest success is forgotten first. */
static void
test_authcheck_known_bounded(void)
{
	struct authcheck *ac = authcheck_new();
	char client[64], acct[64];
	int i;

	for (i = 0; i < AUTHCHECK_KNOWN_PER + 3; i++) {
		snprintf(client, sizeof(client), "10.%d.0.1", i);
		authcheck_known_add(ac, "anna", client, T0 + i);
	}
	/* Used again: 10.1.0.0/24 is now newer than 10.3 ... */
	authcheck_known_add(ac, "anna", "10.1.0.7", T0 + 100);
	authcheck_known_add(ac, "anna", "10.99.0.1", T0 + 101);
	CHECK(authcheck_known_count(ac, "anna", T0 + 101) ==
	    AUTHCHECK_KNOWN_PER);
	CHECK(authcheck_known(ac, "anna", "10.1.0.1", T0 + 101));
	CHECK(!authcheck_known(ac, "anna", "10.0.0.1", T0 + 101));
	CHECK(!authcheck_known(ac, "anna", "10.4.0.1", T0 + 101));
	CHECK(authcheck_known(ac, "anna", "10.5.0.1", T0 + 101));
	CHECK(authcheck_known(ac, "anna", "10.99.0.1", T0 + 101));
	/* Many accounts: bounded in all, the oldest (anna's) go first. */
	for (i = 0; i < AUTHCHECK_KNOWN_MAX; i++) {
		snprintf(acct, sizeof(acct), "user%d@example.org", i);
		authcheck_known_add(ac, acct, "192.0.2.1", T0 + 200 + i);
	}
	CHECK(authcheck_known_total(ac, T0 + 200 + AUTHCHECK_KNOWN_MAX) ==
	    AUTHCHECK_KNOWN_MAX);
	CHECK(authcheck_known_count(ac, "anna", T0 + 300) == 0);
	CHECK(authcheck_known(ac, "user0@example.org", "192.0.2.1", T0 + 300));
	/* Full: a new one takes the oldest's place. */
	authcheck_known_add(ac, "new", "192.0.2.1", T0 + 20000);
	CHECK(!authcheck_known(ac, "user0@example.org", "192.0.2.1",
	    T0 + 20000));
	CHECK(authcheck_known(ac, "user1@example.org", "192.0.2.1",
	    T0 + 20000));
	CHECK(authcheck_known(ac, "new", "192.0.2.1", T0 + 20000));
	authcheck_free(ac);
}

void
test_authcheck(void)
{
	test_authcheck_outcomes();
	test_authcheck_delays();
	test_authcheck_counting();
	test_authcheck_bounded();
	test_authcheck_view();
	test_authcheck_known();
	test_authcheck_known_bounded();
}
