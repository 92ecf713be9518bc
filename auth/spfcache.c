/*
 * spfcache: recent SPF verdicts (see spfcache.h).  Runs in the smtp
 * process, on its loop and in its policy workers, under one mutex.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "auth/spf.h"
#include "auth/spfcache.h"
#include "lib/util.h"

struct spfent {
	char			*key;	/* ip NUL helo NUL sender NUL; NULL: free */
	size_t			 klen;
	struct spf_verdict	 v;
	uint64_t		 until_ms, seq;
};

static struct {
	pthread_mutex_t	 lock;
	struct spfent	*e;
	size_t		 max, n;
	uint64_t	 seq;
} sc = { .lock = PTHREAD_MUTEX_INITIALIZER, .max = SPFCACHE_ENTRIES };

/* The three strings, each with its NUL: no two requests share a key. */
static char *
spfcache_key(const char *ip, const char *helo, const char *sender,
    size_t *len)
{
	size_t a = strlen(ip) + 1, b = strlen(helo) + 1, c = strlen(sender) + 1;
	char *k = xmalloc(a + b + c);

	memcpy(k, ip, a);
	memcpy(k + a, helo, b);
	memcpy(k + a + b, sender, c);
	*len = a + b + c;
	return k;
}

static void
spfcache_drop(struct spfent *e)
{
	if (e->key == NULL)
		return;
	free(e->key);
	memset(e, 0, sizeof(*e));
	sc.n--;
}

static struct spfent *
spfcache_find(const char *k, size_t klen)
{
	for (size_t i = 0; sc.e != NULL && i < sc.max; i++)
		if (sc.e[i].key != NULL && sc.e[i].klen == klen &&
		    memcmp(sc.e[i].key, k, klen) == 0)
			return &sc.e[i];
	return NULL;
}

/* A free slot: an expired entry goes first, then the oldest. */
static struct spfent *
spfcache_slot(uint64_t now_ms)
{
	struct spfent *free_e = NULL, *old = NULL;
	size_t i;

	for (i = 0; i < sc.max; i++) {
		struct spfent *e = &sc.e[i];

		if (e->key != NULL && e->until_ms <= now_ms)
			spfcache_drop(e);
		if (e->key == NULL) {
			if (free_e == NULL)
				free_e = e;
		} else if (old == NULL || e->seq < old->seq)
			old = e;
	}
	if (free_e == NULL) {
		spfcache_drop(old);
		free_e = old;
	}
	return free_e;
}

void
spfcache_put(const char *ip, const char *helo, const char *sender,
    const struct spf_verdict *v, uint64_t now_ms)
{
	struct spfent *e;
	uint32_t ttl = v->ttl;
	size_t klen;
	char *k;

	if (ttl == 0)
		return;
	if (ttl > SPFCACHE_TTL_MAX)
		ttl = SPFCACHE_TTL_MAX;
	k = spfcache_key(ip, helo, sender, &klen);
	pthread_mutex_lock(&sc.lock);
	if (sc.e == NULL)
		sc.e = xcalloc(sc.max, sizeof(*sc.e));
	if ((e = spfcache_find(k, klen)) != NULL)
		spfcache_drop(e);
	e = spfcache_slot(now_ms);
	e->key = k;
	e->klen = klen;
	e->v = *v;
	e->until_ms = now_ms + (uint64_t)ttl * 1000;
	e->seq = ++sc.seq;
	sc.n++;
	pthread_mutex_unlock(&sc.lock);
}

int
spfcache_get(const char *ip, const char *helo, const char *sender,
    uint64_t now_ms, struct spf_verdict *v)
{
	struct spfent *e;
	size_t klen;
	char *k = spfcache_key(ip, helo, sender, &klen);
	int r = -1;

	pthread_mutex_lock(&sc.lock);
	if ((e = spfcache_find(k, klen)) != NULL) {
		if (e->until_ms <= now_ms)
			spfcache_drop(e);
		else {
			*v = e->v;
			r = 0;
		}
	}
	pthread_mutex_unlock(&sc.lock);
	free(k);
	return r;
}

void
spfcache_reset(size_t entries)
{
	pthread_mutex_lock(&sc.lock);
	for (size_t i = 0; sc.e != NULL && i < sc.max; i++)
		spfcache_drop(&sc.e[i]);
	free(sc.e);
	sc.e = NULL;
	sc.max = entries ? entries : SPFCACHE_ENTRIES;
	sc.n = 0;
	pthread_mutex_unlock(&sc.lock);
}

size_t
spfcache_count(void)
{
	size_t n;

	pthread_mutex_lock(&sc.lock);
	n = sc.n;
	pthread_mutex_unlock(&sc.lock);
	return n;
}
