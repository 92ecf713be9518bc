/*
 * dns: lookups for the event loop of the smtp process (MX and addresses
 * for the SMTP client, client names for the sessions) on libunbound.
 * It calls dns_init once, on its own event base, at start.
 *
 * libunbound runs on the same event base (ub_ctx_create_event): it sends
 * the queries to the configured servers as forwarders (UDP, TCP on
 * truncation, EDNS fallback, the next server when one fails), joins equal
 * questions in flight, caches answers for their TTL and negative ones per
 * RFC 2308, and validates DNSSEC when a trust anchor is set.  It hands
 * back the answer packet and its security status; dns/wire.c parses the
 * packet into a struct dns_result, as it did for our own transport.
 *
 * libunbound calls back from inside ub_resolve_event when it can answer
 * at once (cache, local data), and from inside its own event handlers
 * otherwise.  Neither is a place to run a caller's code (which may start
 * or cancel lookups: re-entering libunbound from its callback), so every
 * answer is parked on the query and delivered from our own event, one
 * loop turn later.  Each query also has a deadline (timeout_ms * attempts
 * * servers): libunbound's own retries against a black-holed server can
 * take far longer, so past it the query is cancelled and its caller told
 * TEMPFAIL "timeout".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <unbound.h>
#include <unbound-event.h>

#include "dns/dns.h"
#include "lib/log.h"
#include "lib/util.h"

#define MAXSERVERS	8
#define DEF_TIMEOUT_MS	2000
#define DEF_ATTEMPTS	2
#define RESOLV_CONF	"/etc/resolv.conf"
#define RC_SERVFAIL	2
#define RC_REFUSED	5

struct dns_query {
	struct dns_query	*prev, *next;
	int			 listed;	/* on dns.queries */
	int			 running;	/* libunbound has it (ubid) */
	int			 answered;	/* res holds the outcome */
	int			 ubid;
	unsigned		 gen;		/* the context it runs in */
	struct event		*ev;		/* deadline, and delivery */
	struct dns_result	 res;
	char			 qname[256];
	enum dns_type		 type;
	dns_cb			 cb;
	void			*arg;
};

static struct {
	struct event_base	*base;
	struct ub_ctx		*ub;
	unsigned		 gen;		/* bumped per context */
	struct dns_server	 servers[MAXSERVERS];
	size_t			 nservers;
	int			 timeout_ms;
	int			 attempts;
	int			 deadline_ms;	/* per lookup */
	char			*anchor;	/* trust anchor file, or NULL */
	int			 validating;
	struct dns_query	*queries;
	struct dns_query	*calling;	/* inside ub_resolve_event */
	size_t			 hits;
} dns;

static const char *
type_name(enum dns_type t)
{
	switch (t) {
	case DNS_A:
		return "A";
	case DNS_AAAA:
		return "AAAA";
	case DNS_MX:
		return "MX";
	case DNS_TXT:
		return "TXT";
	case DNS_PTR:
		return "PTR";
	}
	return "?";
}

static const char *
sec_name(enum dns_sec s)
{
	return s == DNS_SEC_SECURE ? "secure" : s == DNS_SEC_BOGUS ? "bogus" :
	    "insecure";
}

/* ---- queries -------------------------------------------------------- */

static void
query_link(struct dns_query *q)
{
	q->listed = 1;
	q->prev = NULL;
	q->next = dns.queries;
	if (dns.queries)
		dns.queries->prev = q;
	dns.queries = q;
}

static void
query_unlink(struct dns_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		dns.queries = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	q->listed = 0;
}

/* Take the query back from libunbound: its callback will not run. */
static void
query_stop(struct dns_query *q)
{
	if (q->running && dns.ub != NULL && q->gen == dns.gen)
		(void)ub_cancel(dns.ub, q->ubid);
	q->running = 0;
}

static void
query_free(struct dns_query *q)
{
	query_stop(q);
	if (q->ev)
		event_free(q->ev);
	dns_result_free(&q->res);
	free(q);
}

/* The outcome is known: deliver it from the loop, never from here. */
static void
query_answered(struct dns_query *q)
{
	q->answered = 1;
	evtimer_del(q->ev);
	event_active(q->ev, EV_TIMEOUT, 1);
}

static void
query_fail(struct dns_query *q, const char *why)
{
	dns_result_free(&q->res);
	memset(&q->res, 0, sizeof(q->res));
	q->res.status = DNS_TEMPFAIL;
	q->res.why = why;
}

/* Our event: the answer parked by ub_answer, or the deadline. */
static void
query_event(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	if (!q->answered) {
		query_stop(q);
		query_fail(q, "timeout");
	}
	log_debug("dns: name=%s type=%s event=answer status=%d ttl=%u "
	    "sec=%s why=\"%s\"", q->qname, type_name(q->type),
	    (int)q->res.status, q->res.ttl, sec_name(q->res.sec),
	    log_q(q->res.why ? q->res.why : ""));
	query_unlink(q);
	q->cb(&q->res, q->arg);
	query_free(q);
}

/*
 * libunbound's answer: rcode is not 0 for its own failures (all servers
 * failed or refused, out of memory), then the packet is not to be read;
 * otherwise the packet is the answer (NXDOMAIN and NODATA included) and
 * sec its validation status.
 */
static void
ub_answer(void *arg, int rcode, void *pkt, int len, int sec, char *why_bogus,
    int ratelimited)
{
	struct dns_query *q = arg;
	const unsigned char *p = pkt;
	int tc = 0;

	q->running = 0;
	if (q == dns.calling)
		dns.hits++;
	dns_result_free(&q->res);
	if (sec == 1) {
		log_info("dns: name=%s type=%s event=bogus why=\"%s\"",
		    q->qname, type_name(q->type),
		    log_q(why_bogus ? why_bogus : ""));
		query_fail(q, "dnssec bogus");
		q->res.sec = DNS_SEC_BOGUS;
	} else if (rcode != 0 || p == NULL || len < 2)
		query_fail(q, rcode == RC_REFUSED ? "refused" : "servfail");
	else if (dns_parse_response(p, (size_t)len, (uint16_t)(p[0] << 8 |
	    p[1]), q->qname, q->type, &q->res, &tc) == -1 || tc) {
		log_debug("dns: name=%s type=%s event=bad-response len=%d",
		    q->qname, type_name(q->type), len);
		query_fail(q, "malformed response");
	} else if (sec == 2)
		q->res.sec = DNS_SEC_SECURE;
	query_answered(q);
}

struct dns_query *
dns_lookup(const char *name, enum dns_type type, dns_cb cb, void *arg)
{
	struct timeval tv;
	struct dns_query *q;
	int r;

	if (dns.base == NULL)
		panicx("dns: lookup before dns_init");
	if (type != DNS_A && type != DNS_AAAA && type != DNS_MX &&
	    type != DNS_TXT && type != DNS_PTR)
		return NULL;
	q = xcalloc(1, sizeof(*q));
	if (cb == NULL || dns_query_name(name, type, q->qname,
	    sizeof(q->qname)) == -1) {
		free(q);
		return NULL;
	}
	q->type = type;
	q->cb = cb;
	q->arg = arg;
	if ((q->ev = evtimer_new(dns.base, query_event, q)) == NULL)
		panicx("dns: evtimer_new failed");
	query_link(q);
	tv.tv_sec = dns.deadline_ms / 1000;
	tv.tv_usec = (dns.deadline_ms % 1000) * 1000;
	evtimer_add(q->ev, &tv);
	q->running = 1;
	q->gen = dns.gen;
	dns.calling = q;
	r = ub_resolve_event(dns.ub, q->qname, (int)type, 1, q, ub_answer,
	    &q->ubid);
	dns.calling = NULL;
	if (r != 0) {
		q->running = 0;
		log_warnx("dns: name=%s type=%s event=error why=\"%s\"",
		    q->qname, type_name(type), log_q(ub_strerror(r)));
		if (!q->answered) {
			query_fail(q, "resolver error");
			query_answered(q);
		}
	} else if (q->running)
		log_debug("dns: name=%s type=%s event=query", q->qname,
		    type_name(type));
	return q;
}

/*
 * Forget a lookup before its callback: no callback, ever.  libunbound
 * goes on without it (its answer still fills the cache).  From within
 * the query's own callback this does nothing; after it, q is gone.
 */
void
dns_cancel(struct dns_query *q)
{
	if (q == NULL || !q->listed)
		return;
	query_unlink(q);
	query_free(q);
}

size_t
dns_cache_hits(void)
{
	return dns.hits;
}

/* ---- set-up --------------------------------------------------------- */

static int
server_add(const char *addr, uint16_t port)
{
	struct dns_server *s;
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2], *pct;

	if (dns.nservers >= MAXSERVERS ||
	    str_copy(host, addr, sizeof(host)) >= sizeof(host))
		return -1;
	s = &dns.servers[dns.nservers];
	memset(s, 0, sizeof(*s));
	if ((pct = strchr(host, '%')) != NULL)
		*pct++ = '\0';
	if (pct == NULL && inet_pton(AF_INET, host,
	    &((struct sockaddr_in *)&s->ss)->sin_addr) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&s->ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		s->sslen = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host,
	    &((struct sockaddr_in6 *)&s->ss)->sin6_addr) == 1) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s->ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		if (pct && (sin6->sin6_scope_id = if_nametoindex(pct)) == 0) {
			long long v;

			if (parse_ll(pct, 1, UINT32_MAX, &v) == -1)
				return -1;
			sin6->sin6_scope_id = (uint32_t)v;
		}
		s->sslen = sizeof(*sin6);
	} else
		return -1;
	dns.nservers++;
	return 0;
}

/* `nameserver <address>` lines; everything else is left to libc. */
static void
resolv_conf_read(void)
{
	struct buf b;
	char *line, *end, *p, *tok;

	buf_init(&b);
	if (file_read_all(RESOLV_CONF, 1 << 16, &b) == -1) {
		buf_free(&b);
		return;
	}
	for (line = b.data; line && *line; line = end) {
		if ((end = strchr(line, '\n')) != NULL)
			*end++ = '\0';
		for (p = line; *p == ' ' || *p == '\t'; p++)
			;
		if (strncmp(p, "nameserver", 10) != 0 ||
		    (p[10] != ' ' && p[10] != '\t'))
			continue;
		for (p += 10; *p == ' ' || *p == '\t'; p++)
			;
		for (tok = p; *p && *p != ' ' && *p != '\t' && *p != '\r' &&
		    *p != '#' && *p != ';'; p++)
			;
		*p = '\0';
		if (server_add(tok, 53) == -1)
			log_debug("dns: %s: ignoring nameserver \"%s\"",
			    RESOLV_CONF, log_q(tok));
	}
	buf_free(&b);
}

static int
server_ok(const struct dns_server *s)
{
	if (s->ss.ss_family == AF_INET)
		return s->sslen >= sizeof(struct sockaddr_in);
	if (s->ss.ss_family == AF_INET6)
		return s->sslen >= sizeof(struct sockaddr_in6);
	return 0;
}

/* "address@port" (with "%scope" for a link-local IPv6) for ub_ctx_set_fwd. */
static int
server_string(const struct dns_server *s, char *out, size_t outlen)
{
	char host[INET6_ADDRSTRLEN];
	unsigned port;
	int n;

	if (s->ss.ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)&s->ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
		n = snprintf(out, outlen, "%s@%u", host, port);
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)&s->ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
		if (sin6->sin6_scope_id)
			n = snprintf(out, outlen, "%s%%%u@%u", host,
			    (unsigned)sin6->sin6_scope_id, port);
		else
			n = snprintf(out, outlen, "%s@%u", host, port);
	}
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static void
ub_ignore(void *arg, int rcode, void *pkt, int len, int sec, char *why,
    int ratelimited)
{
	(*(int *)arg)++;
}

/*
 * Unbound answers some names itself (RFC 6761 and 6303 zones); ours come
 * from the configured servers like any other: tests use .test names and
 * loopback, documentation and private addresses.
 */
static const char *const ub_transparent[] = {
	"test.", "127.in-addr.arpa.", "10.in-addr.arpa.",
	"168.192.in-addr.arpa.", "2.0.192.in-addr.arpa.",
	"100.51.198.in-addr.arpa.", "113.0.203.in-addr.arpa.",
	"8.b.d.0.1.0.0.2.ip6.arpa.",
	("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
	    "ip6.arpa."),
};

/* A libunbound context on base forwarding to dns.servers, finalised. */
static struct ub_ctx *
ub_setup(struct event_base *base)
{
	struct ub_ctx *ub;
	char addr[INET6_ADDRSTRLEN + IF_NAMESIZE + 16];
	int r = 0, answered = 0, id;

	if ((ub = ub_ctx_create_event(base)) == NULL) {
		log_warnx("dns: ub_ctx_create_event failed");
		return NULL;
	}
	/* A loopback forwarder is what tests (and local caches) use. */
	r |= ub_ctx_set_option(ub, "do-not-query-localhost:", "no");
	r |= ub_ctx_set_option(ub, "outgoing-range:", "64");
	r |= ub_ctx_set_option(ub, "outgoing-num-tcp:", "10");
	r |= ub_ctx_set_option(ub, "num-queries-per-thread:", "4096");
	/* A server that timed out is still tried, one query at a time,
	 * rather than left for 15 min.  Its timeout is left to unbound:
	 * capping it at timeout_ms would make one black-holed name mark the
	 * server down for every other lookup (our deadline bounds the wait) */
	r |= ub_ctx_set_option(ub, "infra-keep-probing:", "yes");
	/* Caches for a small server's working set: at most ~4.5 MB in
	 * all (unbound's defaults allow 13 MB), filled as answers come. */
	r |= ub_ctx_set_option(ub, "msg-cache-size:", "1m");
	r |= ub_ctx_set_option(ub, "rrset-cache-size:", "2m");
	r |= ub_ctx_set_option(ub, "key-cache-size:", "1m");
	r |= ub_ctx_set_option(ub, "neg-cache-size:", "512k");
	/* Records in the order the server gave them. */
	r |= ub_ctx_set_option(ub, "rrset-roundrobin:", "no");
	r |= ub_ctx_set_option(ub, "unblock-lan-zones:", "yes");
	r |= ub_ctx_set_option(ub, "insecure-lan-zones:", "yes");
	for (size_t i = 0; i < sizeof(ub_transparent) /
	    sizeof(ub_transparent[0]); i++) {
		char zone[128];

		snprintf(zone, sizeof(zone), "%s transparent",
		    ub_transparent[i]);
		r |= ub_ctx_set_option(ub, "local-zone:", zone);
	}
	r |= ub_ctx_set_option(ub, "local-data:",
	    DNS_LOCAL_NAME ". 3600 IN A 127.0.0.1");
	for (size_t i = 0; i < dns.nservers && r == 0; i++) {
		if (server_string(&dns.servers[i], addr, sizeof(addr)) == -1)
			r = UB_SYNTAX;
		else
			r = ub_ctx_set_fwd(ub, addr);
	}
	dns.validating = 0;
	if (r == 0 && dns.anchor != NULL) {
		if (access(dns.anchor, R_OK) == -1)
			log_warnx("dns: trust anchor %s: %s; no DNSSEC "
			    "validation", dns.anchor, strerror(errno));
		else if ((r = ub_ctx_add_ta_file(ub, dns.anchor)) == 0)
			dns.validating = 1;
	}
	if (r != 0) {
		log_warnx("dns: libunbound set-up: %s", ub_strerror(r));
		ub_ctx_delete(ub);
		return NULL;
	}
	/* Finalise now (the anchor is read here), while files may be
	 * opened: the local name is answered before the call returns. */
	r = ub_resolve_event(ub, DNS_LOCAL_NAME, DNS_A, 1, &answered,
	    ub_ignore, &id);
	if (r != 0 || answered != 1) {
		log_warnx("dns: libunbound start: %s", r ? ub_strerror(r) :
		    "no local answer");
		if (r == 0 && !answered)
			(void)ub_cancel(ub, id);
		ub_ctx_delete(ub);
		return NULL;
	}
	return ub;
}

/*
 * The state of another event base, as a child inherits it from fork:
 * dropped without touching its events or libunbound's context, whose
 * epoll set may be the parent's (the context's memory is left).
 */
static void
dns_forget(void)
{
	struct dns_query *q;

	while ((q = dns.queries) != NULL) {
		query_unlink(q);
		dns_result_free(&q->res);
		free(q);
	}
	dns.ub = NULL;
	dns.gen++;
}

void
dns_trust_anchor(const char *path)
{
	free(dns.anchor);
	dns.anchor = path && *path ? xstrdup(path) : NULL;
}

/*
 * Called again on the same base, this replaces the servers and timeouts
 * with a new libunbound context (and an empty cache); lookups in flight
 * fail for now (TEMPFAIL, through the loop).
 */
int
dns_init(struct event_base *base, const struct dns_server *servers,
    size_t nservers, int timeout_ms, int attempts)
{
	struct dns_query *q;
	struct ub_ctx *ub;

	if (base == NULL || timeout_ms < 0 || attempts < 0 ||
	    (nservers > 0 && servers == NULL))
		return -1;
	for (size_t i = 0; i < nservers; i++)
		if (!server_ok(&servers[i]))
			return -1;
	if (dns.base != NULL && dns.base != base)
		dns_forget();
	dns.nservers = 0;
	for (size_t i = 0; i < nservers && i < MAXSERVERS; i++) {
		struct dns_server *s = &dns.servers[dns.nservers++];

		*s = servers[i];
		if (s->ss.ss_family == AF_INET &&
		    ((struct sockaddr_in *)&s->ss)->sin_port == 0)
			((struct sockaddr_in *)&s->ss)->sin_port = htons(53);
		if (s->ss.ss_family == AF_INET6 &&
		    ((struct sockaddr_in6 *)&s->ss)->sin6_port == 0)
			((struct sockaddr_in6 *)&s->ss)->sin6_port = htons(53);
	}
	if (nservers > MAXSERVERS)
		log_warnx("dns: using the first %d of %zu resolvers",
		    MAXSERVERS, nservers);
	if (nservers == 0)
		resolv_conf_read();
	if (dns.nservers == 0)
		server_add("127.0.0.1", 53);
	dns.timeout_ms = timeout_ms ? timeout_ms : DEF_TIMEOUT_MS;
	dns.attempts = attempts ? attempts : DEF_ATTEMPTS;
	dns.deadline_ms = dns.timeout_ms * dns.attempts * (int)dns.nservers;
	if ((ub = ub_setup(base)) == NULL)
		return -1;
	for (q = dns.queries; q; q = q->next)
		if (!q->answered) {
			query_stop(q);
			query_fail(q, "resolver restarted");
			query_answered(q);
		}
	if (dns.ub != NULL)
		ub_ctx_delete(dns.ub);
	dns.ub = ub;
	dns.gen++;
	dns.base = base;
	log_debug("dns: event=init servers=%zu timeout=%d attempts=%d "
	    "dnssec=%s", dns.nservers, dns.timeout_ms, dns.attempts,
	    dns.validating ? "yes" : "no");
	return 0;
}

/* Drop every lookup (no callbacks) and libunbound's context. */
void
dns_shutdown(void)
{
	struct dns_query *q;

	while ((q = dns.queries) != NULL) {
		query_unlink(q);
		query_free(q);
	}
	if (dns.ub != NULL)
		ub_ctx_delete(dns.ub);
	dns.ub = NULL;
	dns.gen++;
	dns.base = NULL;
	dns.nservers = 0;
}
