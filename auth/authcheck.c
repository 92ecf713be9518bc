/*
 * authcheck: password checks and their throttle, for the vault (see
 * authcheck.h).  Pure but for the hash itself: no I/O, the time comes
 * from the caller.  The tables are scanned linearly: a few thousand
 * comparisons cost microseconds beside the ~25 ms of the hash, and no
 * chosen key can make one lookup slower than another.
 */
#include <sys/random.h>

#include <arpa/inet.h>
#include <crypt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/authcheck.h"
#include "auth/vault.h"
#include "lib/util.h"

struct tslot {
	char		 key[CRED_NAME_MAX + 1];
	uint64_t	 h;
	unsigned	 failures;
	time_t		 last;		/* the last failure counted */
	uint64_t	 used;		/* for LRU eviction */
};

struct ttable {
	struct tslot	*s;
	size_t		 n, cap;
	uint64_t	 tick;
};

/* A client that logged in to an account: its known key, the last time. */
struct kslot {
	char		 account[CRED_NAME_MAX + 1];
	char		 key[AUTHCHECK_CLIENT_MAX + 1];
	uint64_t	 h;		/* of the account */
	time_t		 last;		/* the last success */
};

struct authcheck {
	struct cred	*acct;		/* sorted by name */
	size_t		 nacct;
	char		 dummy[CRYPT_GENSALT_OUTPUT_SIZE];
	struct ttable	 clients, accounts;
	struct kslot	*known;		/* AUTHCHECK_KNOWN_MAX once used */
	size_t		 nknown;
	time_t		 known_window;	/* seconds; 0: no client is known */
};

/* ---- the throttle tables -------------------------------------------------- */

static uint64_t
tt_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static struct tslot *
tt_find(struct ttable *t, const char *key)
{
	uint64_t h = tt_hash(key);
	size_t i;

	for (i = 0; i < t->n; i++)
		if (t->s[i].h == h && strcmp(t->s[i].key, key) == 0)
			return &t->s[i];
	return NULL;
}

static int
tt_expired(const struct tslot *s, time_t now)
{
	return now - s->last >= AUTHCHECK_WINDOW || now < s->last - 60;
}

static unsigned
tt_count(struct ttable *t, const char *key, time_t now)
{
	struct tslot *s = tt_find(t, key);

	return s == NULL || tt_expired(s, now) ? 0 : s->failures;
}

/* A slot for a new key: a free one, else the stalest (expired first). */
static struct tslot *
tt_take(struct ttable *t, time_t now)
{
	size_t i, best = 0;
	uint64_t score, min = UINT64_MAX;

	if (t->n < t->cap) {
		if (t->s == NULL)
			t->s = xreallocarray(NULL, t->cap, sizeof(*t->s));
		return &t->s[t->n++];
	}
	for (i = 0; i < t->n; i++) {
		score = tt_expired(&t->s[i], now) ? 0 : t->s[i].used;
		if (score < min) {
			min = score;
			best = i;
		}
	}
	return &t->s[best];
}

static unsigned
tt_bump(struct ttable *t, const char *key, time_t now)
{
	struct tslot *s = tt_find(t, key);

	if (s == NULL) {
		s = tt_take(t, now);
		memset(s, 0, sizeof(*s));
		str_copy(s->key, key, sizeof(s->key));
		s->h = tt_hash(s->key);
	} else if (tt_expired(s, now))
		s->failures = 0;
	if (s->failures < UINT32_MAX)
		s->failures++;
	s->last = now;
	s->used = ++t->tick;
	return s->failures;
}

static void
tt_clear(struct ttable *t, const char *key)
{
	struct tslot *s = tt_find(t, key);

	if (s == NULL)
		return;
	*s = t->s[--t->n];
	memset(&t->s[t->n], 0, sizeof(t->s[t->n]));
}

/* ---- clients ---------------------------------------------------------------- */

void
authcheck_client_key(const char *client, char *out, size_t outlen)
{
	char tmp[AUTHCHECK_CLIENT_MAX + 1], *p = tmp;
	unsigned char a[16];
	size_t n;

	str_copy(tmp, client, sizeof(tmp));
	if (*p == '[')
		p++;
	if ((n = strlen(p)) > 0 && p[n - 1] == ']')
		p[n - 1] = '\0';
	/* Only a real IPv6 literal loses its tag: any other string is its
	   own key, the same however often it is made one. */
	if (strncmp(p, "IPv6:", 5) == 0 && inet_pton(AF_INET6, p + 5, a) == 1)
		p += 5;
	if (inet_pton(AF_INET6, p, a) == 1) {
		static const unsigned char mapped[12] = { [10] = 0xff,
		    [11] = 0xff };

		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			inet_ntop(AF_INET, a + 12, tmp, sizeof(tmp));
			str_copy(out, tmp, outlen);
			return;
		}
		/* One host is given a /64 at least: it is counted as one. */
		memset(a + 8, 0, 8);
		inet_ntop(AF_INET6, a, tmp, sizeof(tmp) - 3);
		n = strlen(tmp);
		memcpy(tmp + n, "/64", 4);
		p = tmp;
	}
	str_copy(out, p, outlen);
}

void
authcheck_known_key(const char *client, char *out, size_t outlen)
{
	char ck[AUTHCHECK_CLIENT_MAX + 1], *dot;
	struct in_addr a4;

	authcheck_client_key(client, ck, sizeof(ck));
	if (inet_pton(AF_INET, ck, &a4) == 1 &&
	    (dot = strrchr(ck, '.')) != NULL &&
	    (size_t)(dot - ck) + sizeof(".0/24") <= sizeof(ck))
		memcpy(dot, ".0/24", sizeof(".0/24"));
	str_copy(out, ck, outlen);
}

/* ---- known clients ---------------------------------------------------------- */

static int
ks_expired(const struct authcheck *ac, const struct kslot *k, time_t now)
{
	return now - k->last >= ac->known_window || now < k->last - 60;
}

static struct kslot *
ks_find(struct authcheck *ac, const char *account, const char *key)
{
	uint64_t h = tt_hash(account);
	size_t i;

	for (i = 0; i < ac->nknown; i++)
		if (ac->known[i].h == h &&
		    strcmp(ac->known[i].key, key) == 0 &&
		    strcmp(ac->known[i].account, account) == 0)
			return &ac->known[i];
	return NULL;
}

void
authcheck_set_known_window(struct authcheck *ac, time_t secs)
{
	ac->known_window = secs < 0 ? 0 : secs;
}

int
authcheck_known(struct authcheck *ac, const char *account,
    const char *client, time_t now)
{
	char kk[AUTHCHECK_CLIENT_MAX + 1];
	const struct kslot *k;

	if (ac->known_window == 0)
		return 0;
	authcheck_known_key(client, kk, sizeof(kk));
	return (k = ks_find(ac, account, kk)) != NULL &&
	    !ks_expired(ac, k, now);
}

void
authcheck_known_add(struct authcheck *ac, const char *account,
    const char *client, time_t now)
{
	char kk[AUTHCHECK_CLIENT_MAX + 1];
	struct kslot *k, *old = NULL, *mine = NULL;
	uint64_t h = tt_hash(account);
	size_t i, n = 0;

	if (ac->known_window == 0)
		return;
	authcheck_known_key(client, kk, sizeof(kk));
	if ((k = ks_find(ac, account, kk)) != NULL) {
		k->last = now;
		return;
	}
	/* The account's oldest when it has its share, else a free slot,
	   else the oldest of all (an expired one is the oldest). */
	for (i = 0; i < ac->nknown; i++) {
		k = &ac->known[i];
		if (old == NULL || (!ks_expired(ac, old, now) &&
		    (ks_expired(ac, k, now) || k->last < old->last)))
			old = k;
		if (k->h == h && strcmp(k->account, account) == 0 &&
		    (n++, mine == NULL || k->last < mine->last))
			mine = k;
	}
	if (n >= AUTHCHECK_KNOWN_PER)
		k = mine;
	else if (ac->nknown < AUTHCHECK_KNOWN_MAX) {
		if (ac->known == NULL)
			ac->known = xreallocarray(NULL, AUTHCHECK_KNOWN_MAX,
			    sizeof(*ac->known));
		k = &ac->known[ac->nknown++];
	} else
		k = old;
	memset(k, 0, sizeof(*k));
	str_copy(k->account, account, sizeof(k->account));
	str_copy(k->key, kk, sizeof(k->key));
	k->h = h;
	k->last = now;
}

unsigned
authcheck_known_count(struct authcheck *ac, const char *account, time_t now)
{
	uint64_t h = tt_hash(account);
	unsigned n = 0;
	size_t i;

	for (i = 0; i < ac->nknown; i++)
		if (ac->known[i].h == h && !ks_expired(ac, &ac->known[i],
		    now) && strcmp(ac->known[i].account, account) == 0)
			n++;
	return n;
}

size_t
authcheck_known_total(struct authcheck *ac, time_t now)
{
	size_t i, n = 0;

	for (i = 0; i < ac->nknown; i++)
		n += !ks_expired(ac, &ac->known[i], now);
	return n;
}

/* ---- accounts --------------------------------------------------------------- */

static int
ac_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cred *)a)->name,
	    ((const struct cred *)b)->name);
}

static const struct cred *
ac_find(const struct authcheck *ac, const char *name)
{
	struct cred key;

	if (ac->nacct == 0)
		return NULL;
	str_copy(key.name, name, sizeof(key.name));
	return bsearch(&key, ac->acct, ac->nacct, sizeof(*ac->acct), ac_cmp);
}

struct authcheck *
authcheck_new(void)
{
	struct authcheck *ac = xcalloc(1, sizeof(*ac));
	unsigned char rnd[16] = { 0 };

	(void)!getrandom(rnd, sizeof(rnd), 0);	/* a dummy needs no secret */
	if (crypt_gensalt_rn("$y$", CRED_COST, (const char *)rnd, sizeof(rnd),
	    ac->dummy, sizeof(ac->dummy)) == NULL)
		str_copy(ac->dummy, "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$",
		    sizeof(ac->dummy));
	ac->clients.cap = AUTHCHECK_CLIENTS;
	ac->accounts.cap = AUTHCHECK_ACCOUNTS;
	ac->known_window = AUTHCHECK_KNOWN_DAYS * 24 * 3600;
	return ac;
}

void
authcheck_free(struct authcheck *ac)
{
	if (ac == NULL)
		return;
	credstore_free(ac->acct, ac->nacct);
	free(ac->clients.s);
	free(ac->accounts.s);
	free(ac->known);
	free(ac);
}

void
authcheck_set_accounts(struct authcheck *ac, struct cred *v, size_t n)
{
	credstore_free(ac->acct, ac->nacct);
	if (n > 1)
		qsort(v, n, sizeof(*v), ac_cmp);
	ac->acct = v;
	ac->nacct = n;
}

size_t
authcheck_count(const struct authcheck *ac)
{
	return ac->nacct;
}

unsigned
authcheck_failures(struct authcheck *ac, const char *client,
    const char *account, time_t now)
{
	char ck[AUTHCHECK_CLIENT_MAX + 1];
	unsigned fc = 0, fa = 0;

	if (client) {
		authcheck_client_key(client, ck, sizeof(ck));
		fc = tt_count(&ac->clients, ck, now);
	}
	if (account)
		fa = tt_count(&ac->accounts, account, now);
	return fc > fa ? fc : fa;
}

void
authcheck_fail(struct authcheck *ac, const char *client, const char *account,
    time_t now)
{
	char ck[AUTHCHECK_CLIENT_MAX + 1];

	authcheck_client_key(client, ck, sizeof(ck));
	(void)tt_bump(&ac->clients, ck, now);
	if (account)
		(void)tt_bump(&ac->accounts, account, now);
}

/* ---- the check -------------------------------------------------------------- */

static unsigned
ac_delay(unsigned failures)
{
	if (failures == 0)
		return 0;
	if (failures > 5)
		return AUTHCHECK_DELAY_MAX;
	return 1u << (failures - 1);
}

/* ---- the admin's view --------------------------------------------------------- */

void
authcheck_walk(struct authcheck *ac, time_t now,
    void (*fn)(void *, int, const char *, unsigned, unsigned, int, time_t,
    unsigned), void *arg)
{
	struct ttable *t[2] = { &ac->clients, &ac->accounts };
	const struct tslot *s;
	size_t k, i;

	for (k = 0; k < 2; k++)
		for (i = 0; i < t[k]->n; i++) {
			s = &t[k]->s[i];
			if (s->failures == 0 || tt_expired(s, now))
				continue;
			fn(arg, (int)k, s->key, s->failures,
			    s->failures >= AUTHCHECK_LIMIT ? 0 :
			    ac_delay(s->failures), s->failures >=
			    AUTHCHECK_LIMIT, s->last + AUTHCHECK_WINDOW,
			    k ? authcheck_known_count(ac, s->key, now) : 0);
		}
}

int
authcheck_clear(struct authcheck *ac, const char *key)
{
	char ck[AUTHCHECK_CLIENT_MAX + 1], canon[CRED_NAME_MAX + 1];
	const char *why;
	int n = 0;

	if (credstore_name(key, canon, sizeof(canon), &why) == 0)
		key = canon;
	authcheck_client_key(key, ck, sizeof(ck));
	if (tt_find(&ac->clients, ck) != NULL) {
		tt_clear(&ac->clients, ck);
		n++;
	}
	if (tt_find(&ac->accounts, key) != NULL) {
		tt_clear(&ac->accounts, key);
		n++;
	}
	return n;
}

void
authcheck_run(struct authcheck *ac, const char *user, const char *pass,
    const char *client, time_t now, struct authcheck_result *out)
{
	char canon[CRED_NAME_MAX + 1], ck[AUTHCHECK_CLIENT_MAX + 1];
	const struct cred *a = NULL;
	const char *why, *setting;
	unsigned fc, fa, f;
	int match;

	memset(out, 0, sizeof(*out));
	authcheck_client_key(client, ck, sizeof(ck));
	if (credstore_name(user, canon, sizeof(canon), &why) == 0)
		a = ac_find(ac, canon);
	fc = tt_count(&ac->clients, ck, now);
	fa = a ? tt_count(&ac->accounts, a->name, now) : 0;
	/* The account's failures do not hold back a client it knows. */
	out->known = a != NULL && authcheck_known(ac, a->name, client, now);
	f = out->known || fc > fa ? fc : fa;
	out->failures = f;
	if (f >= AUTHCHECK_LIMIT) {
		out->status = VAULT_TEMP;
		str_copy(out->text, "too many failures, try later",
		    sizeof(out->text));
		return;
	}
	out->delay = ac_delay(f);
	/* Every attempt costs one hash: an unknown name the first account's. */
	setting = a ? a->hash : ac->nacct ? ac->acct[0].hash : ac->dummy;
	match = credstore_verify(pass, setting);
	out->hashed = 1;
	if (a != NULL && match && !a->locked) {
		out->status = VAULT_OK;
		str_copy(out->text, a->name, sizeof(out->text));
		/* A refusal runs its window out, known client or not. */
		if (fa < AUTHCHECK_LIMIT)
			tt_clear(&ac->accounts, a->name);
		authcheck_known_add(ac, a->name, client, now);
		out->failures = fc;
		return;
	}
	out->status = VAULT_INVALID;
	str_copy(out->text, a == NULL ? "unknown user" : !match ?
	    "bad password" : "locked", sizeof(out->text));
	fc = tt_bump(&ac->clients, ck, now);
	fa = a ? tt_bump(&ac->accounts, a->name, now) : 0;
	out->failures = fc > fa ? fc : fa;
}
