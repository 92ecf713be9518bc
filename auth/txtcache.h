/*
 * txtcache: TXT answers the smtp process looked up lately (DKIM key
 * records, DMARC policy records), each kept for its TTL (at most
 * TXTCACHE_TTL_MAX), and for a DKIM key record the key read from it
 * (auth/dkimverify.h's struct dkim_key, its EVP_PKEY parsed once).  A
 * message whose lookups are all here is checked on the event loop,
 * without a trip to the policy workers (smtpd/policy.c).  Filled by the
 * workers, read by both: every call locks.  Bounded in entries and in
 * bytes; when full, expired entries go first, then the oldest.  Only
 * answers are kept (found or none), never a failure, nor a TTL of 0.
 * Times are CLOCK_MONOTONIC milliseconds, passed in (tests set them).
 */
#ifndef TERN_TXTCACHE_H
#define TERN_TXTCACHE_H

#include <stddef.h>
#include <stdint.h>

#define TXTCACHE_ENTRIES	128
#define TXTCACHE_BYTES		(256 * 1024)
#define TXTCACHE_TTL_MAX	3600	/* seconds */

struct buf;
struct dkim_key;

/* The answer for name: found 0 with n NUL-ended records one after
 * another in recs (len bytes), or 1 none exists; held ttl seconds. */
void	txtcache_put(const char *name, int found, const char *recs,
	    size_t len, size_t n, uint32_t ttl, uint64_t now_ms);
/* A live answer: found (0 or 1) with the records appended to recs and
 * their count in *n, or -2 when there is none. */
int	txtcache_get(const char *name, uint64_t now_ms, struct buf *recs,
	    size_t *n);
/* A live answer read as a DKIM key (read at the first call, the first
 * 8 records): 0 with a reference in *key (dkim_key_unref it), or -2. */
int	txtcache_key(const char *name, uint64_t now_ms, struct dkim_key **key);

/* Emptied, and limits set (0: the default); for tests. */
void	txtcache_reset(size_t entries, size_t bytes);
/* Entries and bytes held, for tests. */
void	txtcache_stats(size_t *entries, size_t *bytes);

#endif
