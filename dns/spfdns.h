/*
 * spfdns: the DNS layer libspf2 calls, on a blocking libunbound context
 * that forwards to the configured resolver (`resolver ADDR port N`), so
 * SPF sees the same nameserver as every other lookup and tests keep their
 * loopback DNS.  It blocks by design: it runs in the smtp process's SPF
 * worker threads (smtpd/policy.c) and in `ternctl check`, never on an
 * event loop.  One context is shared by every thread (libunbound locks it)
 * and caches answers for their TTL.
 *
 * It also watches what it answers for one evaluation (struct spfdns_track,
 * per thread): void lookups (NXDOMAIN or no data) for RFC 7208 4.6.4, and
 * every SPF record libspf2 fetches, so auth/spf.c can check their syntax
 * where libspf2 is lax.
 */
#ifndef TERN_SPFDNS_H
#define TERN_SPFDNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SPFDNS_RECORDS	16	/* records kept per evaluation */
#define SPFDNS_PTRS	10	/* PTR names checked (RFC 7208 4.6.4) */
#define SPFDNS_SOCKETS	74	/* query sockets of the resolver thread
				   (outgoing-range 64, outgoing-num-tcp 10) */

struct spf_macro_vals;

struct spfdns_track {
	int	 fix;		/* rewrite records for libspf2 (auth/spf.c) */
	int	 v6;		/* ...for an IPv6 client */
	int	 mx_over;	/* an MX answer of more than 10 records */
	int	 last_void;	/* the last TXT lookup was void */
	int	 last_temp;	/* ...or failed for now */
	int	 last_index;	/* ...and was lookup number this */
	int	 lookups;	/* queries made */
	int	 voids;		/* NXDOMAIN or no data */
	int	 temp;		/* queries that failed for now */
	int	 failed;	/* a query had no usable answer (even one
				   the evaluation took as none) */
	int	 ttl_seen;	/* an answer came from DNS... */
	uint32_t ttl_min;	/* ...and the least TTL of them */
	int	 nrec;
	char	*rec[SPFDNS_RECORDS];	/* "v=spf1" records seen (malloc'd) */
	char	*recdom[SPFDNS_RECORDS];	/* ...and the name they came from */
	int	 overflow;	/* more records than kept */
	/* The last TXT lookup: on fail, libspf2's explanation (exp=) one. */
	int	 last_txt;	/* a TXT lookup was made */
	int	 last_spf;	/* ...whose answer held an SPF record */
	int	 last_n;	/* ...with this many records */
	char	*last_text;	/* ...the first of them (malloc'd) */
	uint64_t deadline_ms;	/* CLOCK_MONOTONIC ms: no lookup after (0: none) */
	/* The request's macro values (d unset): for spf_record_truncate. */
	const struct spf_macro_vals *mv;
	/* The names of the last PTR answer not yet looked up: a DNS error
	 * in their address lookups skips the name (RFC 7208 5.5). */
	int	 nptr;
	char	 ptr[SPFDNS_PTRS][256];
};

struct spfdns;

/*
 * A resolver forwarding to servers (none: /etc/resolv.conf).  timeout_ms
 * bounds how long an unanswered server is waited for.  NULL on error, with
 * a reason in err.
 */
struct spfdns	*spfdns_new(const struct sockaddr_storage *servers,
		    const socklen_t *lens, size_t nservers, int timeout_ms,
		    char *err, size_t errlen);
void		 spfdns_free(struct spfdns *);

/* The libspf2 layer (an SPF_dns_server_t *), one per SPF server object. */
void		*spfdns_layer(struct spfdns *);

/*
 * TXT records of name (DKIM keys), each record's character-strings
 * joined, NUL-separated into out (*n of them), waiting at most until
 * deadline_ms (CLOCK_MONOTONIC; 0: libunbound's own timeouts).  0: found,
 * 1: no such record (NXDOMAIN, no data), -1: failed for now (timeout,
 * SERVFAIL, a DNSSEC-bogus answer).  ttl: the answer's TTL (0 when it
 * failed).
 */
struct buf;
int		 spfdns_txt(struct spfdns *, const char *name,
		    uint64_t deadline_ms, struct buf *out, size_t *n,
		    uint32_t *ttl);

/* Watch this thread's queries into t until spfdns_track_end. */
void		 spfdns_track_begin(struct spfdns_track *t);
void		 spfdns_track_end(struct spfdns_track *t);

/*
 * One plain question (ternctl dns --check), answered through the same
 * forwarder, parsed by dns/wire.c into res (free with dns_result_free):
 * DNS_TEMPFAIL with res->why when there is no usable answer.  name is a
 * domain, or for DNS_PTR an address literal.  -1 for a bad name.
 */
struct dns_result;
int		 spfdns_query(struct spfdns *, const char *name, int type,
		    struct dns_result *res);

#endif
