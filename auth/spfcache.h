/*
 * spfcache: SPF verdicts the smtp process reached lately, so a client
 * that sends again within seconds is not evaluated again (smtpd/policy.c
 * looks here on the event loop before it hands MAIL to a policy worker).
 * A verdict is keyed by everything its evaluation reads from the
 * session: the client's address, the HELO name and the MAIL FROM
 * address, each exactly as given (the receiver's name is the process's
 * own); what it read from DNS is bounded by its lifetime, the least TTL
 * of every answer the evaluation used (struct spf_verdict's ttl, which
 * auth/spf.c leaves 0 for a verdict that must not be kept: temperror,
 * fail, a lookup that failed), and at most SPFCACHE_TTL_MAX.  Bounded in
 * entries; when full, the expired go first, then the oldest.  Locked
 * (the workers fill it).  Times are CLOCK_MONOTONIC milliseconds.
 */
#ifndef TERN_SPFCACHE_H
#define TERN_SPFCACHE_H

#include <stddef.h>
#include <stdint.h>

#define SPFCACHE_ENTRIES	128
#define SPFCACHE_TTL_MAX	60	/* seconds */

struct spf_verdict;

/* v kept for v->ttl seconds (0: not kept). */
void	spfcache_put(const char *ip, const char *helo, const char *sender,
	    const struct spf_verdict *v, uint64_t now_ms);
/* 0 with the live verdict in *v, or -1. */
int	spfcache_get(const char *ip, const char *helo, const char *sender,
	    uint64_t now_ms, struct spf_verdict *v);

/* Emptied, at most entries kept (0: the default); for tests. */
void	spfcache_reset(size_t entries);
size_t	spfcache_count(void);

#endif
