/*
 * txtcache: recent TXT answers and the DKIM keys read from them (see
 * txtcache.h).  Runs in the smtp process, on its loop and in its policy
 * workers, under one mutex.  A small table searched linearly: it holds
 * the few domains a small server hears from within a TTL.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "auth/dkimverify.h"
#include "auth/txtcache.h"
#include "lib/util.h"

#define TXTCACHE_KEY_RECS	8	/* records read for a key */

struct txtent {
	char		*name;		/* NULL: a free slot */
	int		 found;
	char		*recs;		/* n NUL-ended records, len bytes */
	size_t		 len, n;
	uint64_t	 until_ms;
	uint64_t	 seq;		/* order of arrival */
	struct dkim_key	*key;		/* read at first use */
	size_t		 bytes;		/* what it holds */
};

static struct {
	pthread_mutex_t	 lock;
	struct txtent	*e;		/* max of them, made at first put */
	size_t		 max, maxbytes, n, bytes;
	uint64_t	 seq;
} tc = { .lock = PTHREAD_MUTEX_INITIALIZER, .max = TXTCACHE_ENTRIES,
	 .maxbytes = TXTCACHE_BYTES };

static void
txtcache_drop(struct txtent *e)
{
	if (e->name == NULL)
		return;
	tc.bytes -= e->bytes;
	tc.n--;
	free(e->name);
	free(e->recs);
	dkim_key_unref(e->key);
	memset(e, 0, sizeof(*e));
}

static struct txtent *
txtcache_find(const char *name)
{
	for (size_t i = 0; tc.e != NULL && i < tc.max; i++)
		if (tc.e[i].name != NULL && strcmp(tc.e[i].name, name) == 0)
			return &tc.e[i];
	return NULL;
}

/* Room for need more bytes and one more entry: the expired go first,
 * then the oldest.  A free slot, or NULL when need can never fit. */
static struct txtent *
txtcache_room(size_t need, uint64_t now_ms)
{
	struct txtent *slot = NULL;
	size_t i;

	if (need > tc.maxbytes)
		return NULL;
	for (i = 0; i < tc.max; i++)
		if (tc.e[i].name != NULL && tc.e[i].until_ms <= now_ms)
			txtcache_drop(&tc.e[i]);
	while (tc.n >= tc.max || tc.bytes + need > tc.maxbytes) {
		struct txtent *old = NULL;

		for (i = 0; i < tc.max; i++)
			if (tc.e[i].name != NULL && (old == NULL ||
			    tc.e[i].seq < old->seq))
				old = &tc.e[i];
		txtcache_drop(old);
	}
	for (i = 0; i < tc.max && slot == NULL; i++)
		if (tc.e[i].name == NULL)
			slot = &tc.e[i];
	return slot;
}

void
txtcache_put(const char *name, int found, const char *recs, size_t len,
    size_t n, uint32_t ttl, uint64_t now_ms)
{
	struct txtent *e;
	size_t need = sizeof(*e) + strlen(name) + 1 + len;

	if ((found != 0 && found != 1) || ttl == 0)
		return;
	if (ttl > TXTCACHE_TTL_MAX)
		ttl = TXTCACHE_TTL_MAX;
	pthread_mutex_lock(&tc.lock);
	if (tc.e == NULL)
		tc.e = xcalloc(tc.max, sizeof(*tc.e));
	if ((e = txtcache_find(name)) != NULL)	/* a new answer replaces */
		txtcache_drop(e);
	if ((e = txtcache_room(need, now_ms)) != NULL) {
		e->name = xstrdup(name);
		e->found = found;
		e->recs = found == 0 && len > 0 ? xmalloc(len) : NULL;
		if (e->recs != NULL)
			memcpy(e->recs, recs, len);
		e->len = e->recs != NULL ? len : 0;
		e->n = e->recs != NULL ? n : 0;
		e->until_ms = now_ms + (uint64_t)ttl * 1000;
		e->seq = ++tc.seq;
		e->bytes = need;
		tc.bytes += need;
		tc.n++;
	}
	pthread_mutex_unlock(&tc.lock);
}

static struct txtent *
txtcache_live(const char *name, uint64_t now_ms)
{
	struct txtent *e = txtcache_find(name);

	if (e != NULL && e->until_ms <= now_ms) {
		txtcache_drop(e);
		e = NULL;
	}
	return e;
}

int
txtcache_get(const char *name, uint64_t now_ms, struct buf *recs, size_t *n)
{
	struct txtent *e;
	int r = -2;

	pthread_mutex_lock(&tc.lock);
	if ((e = txtcache_live(name, now_ms)) != NULL) {
		if (e->len)
			buf_append(recs, e->recs, e->len);
		*n = e->n;
		r = e->found;
	}
	pthread_mutex_unlock(&tc.lock);
	return r;
}

/* The entry's records as a key (held under the lock). */
static void
txtcache_read_key(struct txtent *e)
{
	const char *txt[TXTCACHE_KEY_RECS];
	size_t k;

	for (k = 0; e->found == 0 && k < e->n && k < TXTCACHE_KEY_RECS; k++)
		txt[k] = k == 0 ? e->recs : txt[k - 1] + strlen(txt[k - 1]) +
		    1;
	e->key = dkim_key_new(e->found, txt, e->found == 0 ? k : 0);
	e->bytes += dkim_key_size(e->key);
	tc.bytes += dkim_key_size(e->key);
}

int
txtcache_key(const char *name, uint64_t now_ms, struct dkim_key **key)
{
	struct txtent *e;
	int r = -2;

	pthread_mutex_lock(&tc.lock);
	if ((e = txtcache_live(name, now_ms)) != NULL) {
		if (e->key == NULL)
			txtcache_read_key(e);
		*key = dkim_key_ref(e->key);
		r = 0;
		/* over the bound now: the oldest others make room */
		while (tc.bytes > tc.maxbytes && tc.n > 1) {
			struct txtent *old = NULL;

			for (size_t i = 0; i < tc.max; i++)
				if (tc.e[i].name != NULL && &tc.e[i] != e &&
				    (old == NULL || tc.e[i].seq < old->seq))
					old = &tc.e[i];
			txtcache_drop(old);
		}
	}
	pthread_mutex_unlock(&tc.lock);
	return r;
}

void
txtcache_reset(size_t entries, size_t bytes)
{
	pthread_mutex_lock(&tc.lock);
	for (size_t i = 0; tc.e != NULL && i < tc.max; i++)
		txtcache_drop(&tc.e[i]);
	free(tc.e);
	tc.e = NULL;
	tc.max = entries ? entries : TXTCACHE_ENTRIES;
	tc.maxbytes = bytes ? bytes : TXTCACHE_BYTES;
	tc.n = tc.bytes = 0;
	pthread_mutex_unlock(&tc.lock);
}

void
txtcache_stats(size_t *entries, size_t *bytes)
{
	pthread_mutex_lock(&tc.lock);
	*entries = tc.n;
	*bytes = tc.bytes;
	pthread_mutex_unlock(&tc.lock);
}
