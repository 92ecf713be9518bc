/*
 * dns: the non-blocking resolver every lookup of ternd's event loop goes
 * through (MX, A, AAAA, TXT, PTR).  libunbound does the transport (UDP,
 * TCP on truncation, EDNS fallback, server selection), the cache and
 * DNSSEC validation on the caller's libevent loop; dns/wire.c parses the
 * answer packets it hands back.  Nameservers come from the config
 * (`resolver 127.0.0.1 port 5353`) or /etc/resolv.conf and are used as
 * forwarders.
 */
#ifndef TERN_DNS_H
#define TERN_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

enum dns_status {
	DNS_OK,		/* answer records present */
	DNS_NODATA,	/* the name exists, no records of this type (permanent) */
	DNS_NXDOMAIN,	/* the name does not exist (permanent) */
	DNS_TEMPFAIL	/* timeout, SERVFAIL, REFUSED, network error */
};

/* DNSSEC: what libunbound's validator said of an answer. */
enum dns_sec {
	DNS_SEC_INSECURE,	/* not signed, or no trust anchor configured */
	DNS_SEC_SECURE,		/* validated from the trust anchor */
	DNS_SEC_BOGUS		/* signed but failed validation: status is
				   DNS_TEMPFAIL, why "dnssec bogus" */
};

/* Query sockets libunbound may hold open at once (outgoing-range 64,
 * outgoing-num-tcp 10): the process's descriptor budget counts them. */
#define DNS_SOCKETS	74

/* A name libunbound answers itself (127.0.0.1), at once: dns_init asks
 * it to finish libunbound's set-up before the process is confined. */
#define DNS_LOCAL_NAME	"tern-init.invalid"

struct dns_mx {
	char		host[256];	/* lower-case, no trailing dot */
	uint16_t	pref;
};

/* A list of answers; the callback does not own it (copy what you keep). */
struct dns_result {
	enum dns_status		 status;
	uint32_t		 ttl;		/* smallest TTL of the answer */
	struct dns_mx		*mx;		/* MX: sorted by preference */
	size_t			 nmx;
	struct sockaddr_storage	*addr;		/* A / AAAA: port 0 */
	size_t			 naddr;
	char			**txt;		/* TXT: strings of one record
						   joined; PTR: names */
	size_t			 ntxt;
	const char		*why;		/* for logs: "timeout", ... */
	enum dns_sec		 sec;
};

typedef void (*dns_cb)(const struct dns_result *, void *arg);

enum dns_type { DNS_A = 1, DNS_PTR = 12, DNS_MX = 15, DNS_TXT = 16,
    DNS_AAAA = 28 };

struct dns_server {
	struct sockaddr_storage	ss;
	socklen_t		sslen;
};

/*
 * Set up the resolver for this process.  servers/nservers may be 0 to read
 * /etc/resolv.conf (falling back to 127.0.0.1:53).  timeout_ms is the
 * longest libunbound waits for one try; a lookup is answered (TEMPFAIL
 * "timeout" at worst) within timeout_ms * attempts * servers.  libunbound
 * is made ready here (files read, context finalised), so call it before
 * the process confines itself.  Returns 0 or -1.
 */
int	 dns_init(struct event_base *, const struct dns_server *,
	    size_t nservers, int timeout_ms, int attempts);
void	 dns_shutdown(void);
/*
 * The DNSSEC trust anchor file (DS or DNSKEY records, e.g. Debian's
 * /usr/share/dns/root.key) the next dns_init validates from; NULL or ""
 * (the default): no validation, every answer insecure.  A file that
 * cannot be read is logged and leaves validation off.
 */
void	 dns_trust_anchor(const char *path);

struct dns_query;
/*
 * Start a lookup of name (a domain, or for DNS_PTR an IP address literal).
 * The callback runs exactly once, later (never from within dns_lookup),
 * unless the query is cancelled first.  A cached answer (which libunbound
 * gives before its call returns) also comes through the event loop.  Returns NULL only for an invalid name (the callback will
 * not run).
 */
struct dns_query *dns_lookup(const char *name, enum dns_type, dns_cb,
	    void *arg);
void	 dns_cancel(struct dns_query *);

/* Wire format, exposed for unit tests and the fuzz target. */
int	 dns_encode_query(uint16_t id, const char *name, enum dns_type,
	    unsigned char *out, size_t outlen, size_t *len);
/*
 * Parse a response to (id, name, type): fills res (caller frees with
 * dns_result_free).  Returns 0, or -1 for a malformed packet or one that
 * does not answer this question.  *truncated is set for TC=1.
 */
int	 dns_parse_response(const unsigned char *pkt, size_t len, uint16_t id,
	    const char *name, enum dns_type, struct dns_result *res,
	    int *truncated);
void	 dns_result_free(struct dns_result *);

/* Lookups libunbound answered at once (cache, local data), for tests. */
size_t	 dns_cache_hits(void);

/*
 * The name dns_lookup asks for: lower-case, no trailing dot, letters,
 * digits, '-', '_' only; for DNS_PTR an IPv4 or IPv6 literal becomes its
 * in-addr.arpa or ip6.arpa name.  out needs 256 bytes.  0, or -1 for an
 * invalid name.
 */
int	 dns_query_name(const char *name, enum dns_type, char *out,
	    size_t outlen);
/* A deep copy of src for a caller that keeps a result (free dst). */
void	 dns_result_copy(struct dns_result *dst, const struct dns_result *src);

#endif
