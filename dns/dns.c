/*
 * dns: the non-blocking stub resolver and its cache, on the libevent loop
 * of the smtp process, which does every lookup (MX and addresses for the
 * SMTP client; client names, and later SPF and DMARC, for the sessions).
 * It calls dns_init once, on its own event base, at start.
 *
 * A lookup joins the transaction ("flight") already asking for the same
 * (name, type), or starts one.  Each try of a flight uses a fresh UDP
 * socket (a new random source port, connected so the kernel drops other
 * sources) and a fresh random id; a truncated answer is asked again over
 * TCP of the same server, a failure moves on to the next server.  Only the
 * final outcome reaches the callers and, unless it is a temporary failure,
 * the cache.  Callbacks always run from the event loop, never from
 * dns_lookup, so a caller never sees its callback before its handle.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "dns/dns.h"
#include "lib/log.h"
#include "lib/util.h"

#define MAXSERVERS	8
#define DEF_TIMEOUT_MS	2000
#define DEF_ATTEMPTS	2
#define QUERY_MAX	512
#define OPT_LEN		11	/* see dns_encode_query */
#define RESOLV_CONF	"/etc/resolv.conf"

#define CACHE_MAX	10000
#define CACHE_BUCKETS	16384	/* a power of two */

struct dns_flight;

struct dns_query {
	struct dns_query	 *prev, *next;
	struct dns_query	**head;		/* list it is on; NULL: running */
	struct dns_flight	 *flight;	/* NULL: answered from the cache */
	struct event		 *ev;		/* cache answer delivery */
	struct dns_result	  res;		/* cache answer */
	dns_cb			  cb;
	void			 *arg;
};

struct dns_flight {
	struct dns_flight	*prev, *next;
	char			 qname[256];
	enum dns_type		 type;
	struct dns_query	*waiters;
	unsigned char		 pkt[QUERY_MAX];
	size_t			 pktlen;
	uint16_t		 id;
	int			 edns;
	unsigned		 try, ntries;
	size_t			 server;
	int			 fd;
	int			 tcp;
	struct event		*ev_io;
	struct event		*ev_timer;	/* the try's deadline */
	unsigned char		*tbuf;		/* TCP: query out, answer in */
	size_t			 tlen, toff;
	unsigned char		 tlenbuf[2];
	int			 twriting;
	const char		*why;		/* why the last try failed */
	struct dns_result	 res;
};

struct cache_entry {
	struct cache_entry	*hnext;		/* bucket chain */
	struct cache_entry	*older, *newer;
	char			*name;
	enum dns_type		 type;
	uint32_t		 hash;
	int64_t			 expires;	/* monotonic ms */
	struct dns_result	 res;
};

static struct {
	struct event_base	*base;
	struct dns_server	 servers[MAXSERVERS];
	size_t			 nservers;
	size_t			 preferred;	/* the last server that answered */
	int			 timeout_ms;
	int			 attempts;
	struct dns_flight	*flights;
	struct dns_flight	*delivering;
	struct dns_query	*pending;	/* cache answers not yet run */
	size_t			 hits;
	struct cache_entry	*buckets[CACHE_BUCKETS];
	struct cache_entry	*oldest, *newest;
	size_t			 ncache;
} dns;

static unsigned char udpbuf[65536];

static void	flight_next(struct dns_flight *);
static void	flight_done(struct dns_flight *);
static void	flight_send(struct dns_flight *);
static void	flight_tcp(struct dns_flight *);

/* ---- lists ---------------------------------------------------------- */

static void
query_link(struct dns_query **head, struct dns_query *q)
{
	q->head = head;
	q->prev = NULL;
	q->next = *head;
	if (*head)
		(*head)->prev = q;
	*head = q;
}

static void
query_unlink(struct dns_query *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		*q->head = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->head = NULL;
	q->prev = q->next = NULL;
}

static void
query_free(struct dns_query *q)
{
	if (q->ev)
		event_free(q->ev);
	dns_result_free(&q->res);
	free(q);
}

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

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- cache ---------------------------------------------------------- */

static uint32_t
cache_hash(const char *name, enum dns_type type)
{
	uint32_t h = 2166136261U ^ (uint32_t)type;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 16777619U;
	return h;
}

static void
cache_remove(struct cache_entry *e)
{
	struct cache_entry **pp = &dns.buckets[e->hash & (CACHE_BUCKETS - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		dns.oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		dns.newest = e->older;
	dns.ncache--;
	dns_result_free(&e->res);
	free(e->name);
	free(e);
}

static struct cache_entry *
cache_find(const char *name, enum dns_type type, int64_t now)
{
	uint32_t h = cache_hash(name, type);
	struct cache_entry *e;

	for (e = dns.buckets[h & (CACHE_BUCKETS - 1)]; e; e = e->hnext)
		if (e->hash == h && e->type == type && !strcmp(e->name, name))
			break;
	if (e && e->expires <= now) {
		cache_remove(e);
		e = NULL;
	}
	return e;
}

/* Keep a final answer for its TTL (at least a second). */
static void
cache_put(const char *name, enum dns_type type, const struct dns_result *res)
{
	int64_t now = now_ms();
	struct cache_entry *e;
	uint32_t ttl = res->ttl ? res->ttl : 1;

	if ((e = cache_find(name, type, now)) != NULL)
		cache_remove(e);
	while (dns.oldest && (dns.ncache >= CACHE_MAX ||
	    dns.oldest->expires <= now))
		cache_remove(dns.oldest);
	e = xcalloc(1, sizeof(*e));
	e->name = xstrdup(name);
	e->type = type;
	e->hash = cache_hash(name, type);
	e->expires = now + (int64_t)ttl * 1000;
	dns_result_copy(&e->res, res);
	e->hnext = dns.buckets[e->hash & (CACHE_BUCKETS - 1)];
	dns.buckets[e->hash & (CACHE_BUCKETS - 1)] = e;
	e->older = dns.newest;
	if (dns.newest)
		dns.newest->newer = e;
	else
		dns.oldest = e;
	dns.newest = e;
	dns.ncache++;
}

static void
cache_clear(void)
{
	while (dns.oldest)
		cache_remove(dns.oldest);
}

size_t
dns_cache_hits(void)
{
	return dns.hits;
}

/* ---- one flight: tries over UDP, TCP on truncation ------------------ */

static uint16_t
random16(void)
{
	uint16_t v;
	ssize_t n;

	while ((n = getrandom(&v, sizeof(v), 0)) == -1 && errno == EINTR)
		;
	if (n != sizeof(v))
		panicx("dns: getrandom failed");
	return v;
}

static const struct dns_server *
flight_server(const struct dns_flight *f)
{
	return &dns.servers[f->server % dns.nservers];
}

/* Close the current try's socket; the flight itself stays. */
static void
flight_close(struct dns_flight *f)
{
	if (f->ev_io) {
		event_free(f->ev_io);
		f->ev_io = NULL;
	}
	if (f->fd != -1) {
		close(f->fd);
		f->fd = -1;
	}
	evtimer_del(f->ev_timer);
	free(f->tbuf);
	f->tbuf = NULL;
	f->tlen = f->toff = 0;
	f->tcp = f->twriting = 0;
}

/* The try failed before it got going: move on from the event loop. */
static void
flight_fail_soon(struct dns_flight *f, const char *why)
{
	struct timeval tv = { 0, 0 };

	if (f->ev_io) {
		event_free(f->ev_io);
		f->ev_io = NULL;
	}
	f->why = why;
	evtimer_add(f->ev_timer, &tv);
}

static void
flight_arm(struct dns_flight *f)
{
	struct timeval tv;

	tv.tv_sec = dns.timeout_ms / 1000;
	tv.tv_usec = (dns.timeout_ms % 1000) * 1000;
	f->why = "timeout";
	evtimer_add(f->ev_timer, &tv);
}

static int
flight_encode(struct dns_flight *f)
{
	f->id = random16();
	if (dns_encode_query(f->id, f->qname, f->type, f->pkt, sizeof(f->pkt),
	    &f->pktlen) == -1)
		return -1;
	if (!f->edns) {
		f->pktlen -= OPT_LEN;
		f->pkt[10] = f->pkt[11] = 0;
	}
	return 0;
}

static void
flight_response(struct dns_flight *f, const unsigned char *pkt, size_t len)
{
	struct dns_result r;
	int tc;

	if (dns_parse_response(pkt, len, f->id, f->qname, f->type, &r,
	    &tc) == -1) {
		log_debug("dns: name=%s type=%s id=%u event=bad-response "
		    "len=%zu%s", f->qname, type_name(f->type), f->id, len,
		    f->tcp ? " tcp" : "");
		if (!f->tcp)
			return;		/* perhaps forged: keep listening */
		f->why = "malformed response";
		flight_next(f);
		return;
	}
	if (tc) {
		dns_result_free(&r);
		if (f->tcp) {
			f->why = "truncated over tcp";
			flight_next(f);
		} else
			flight_tcp(f);
		return;
	}
	if (r.status == DNS_TEMPFAIL) {
		dns_result_free(&r);
		/* FORMERR to an EDNS query: ask the same server without */
		if ((pkt[3] & 0xf) == 1 && f->edns) {
			f->edns = 0;
			flight_close(f);
			flight_send(f);
			return;
		}
		f->why = r.why;
		flight_next(f);
		return;
	}
	dns.preferred = f->server % dns.nservers;
	f->res = r;
	flight_done(f);
}

static void
flight_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	flight_next(arg);
}

static void
udp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_flight *f = arg;
	ssize_t n;

	n = recv(fd, udpbuf, sizeof(udpbuf), 0);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		f->why = errno == ECONNREFUSED ? "connection refused" :
		    "network error";
		flight_next(f);
		return;
	}
	flight_response(f, udpbuf, (size_t)n);
}

/* Send the query to the current server over a fresh UDP socket. */
static void
flight_send(struct dns_flight *f)
{
	const struct dns_server *s = flight_server(f);

	if (flight_encode(f) == -1) {
		flight_fail_soon(f, "encoding failed");
		return;
	}
	f->fd = socket(s->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (f->fd == -1 || connect(f->fd, (const struct sockaddr *)&s->ss,
	    s->sslen) == -1 || send(f->fd, f->pkt, f->pktlen, 0) !=
	    (ssize_t)f->pktlen) {
		flight_fail_soon(f, "network error");
		return;
	}
	f->ev_io = event_new(dns.base, f->fd, EV_READ | EV_PERSIST,
	    udp_read_cb, f);
	if (f->ev_io == NULL || event_add(f->ev_io, NULL) == -1) {
		flight_fail_soon(f, "event error");
		return;
	}
	flight_arm(f);
	log_debug("dns: name=%s type=%s id=%u event=query try=%u%s",
	    f->qname, type_name(f->type), f->id, f->try + 1,
	    f->edns ? "" : " noedns");
}

static void
tcp_read(struct dns_flight *f)
{
	unsigned char *p;
	size_t want, len;
	ssize_t n;

	if (f->tbuf == NULL) {
		want = 2 - f->toff;
		n = recv(f->fd, f->tlenbuf + f->toff, want, 0);
	} else
		n = recv(f->fd, f->tbuf + f->toff, f->tlen - f->toff, 0);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK ||
	    errno == EINTR))
		return;
	if (n <= 0) {
		f->why = n == 0 ? "tcp closed" : "tcp error";
		flight_next(f);
		return;
	}
	f->toff += (size_t)n;
	if (f->tbuf == NULL) {
		if (f->toff < 2)
			return;
		f->tlen = (size_t)f->tlenbuf[0] << 8 | f->tlenbuf[1];
		f->toff = 0;
		f->tbuf = xmalloc(f->tlen ? f->tlen : 1);
		if (f->tlen > 0)
			return;
	}
	if (f->toff < f->tlen)
		return;
	p = f->tbuf;
	len = f->tlen;
	f->tbuf = NULL;
	flight_response(f, p, len);
	free(p);
}

static void	tcp_cb(evutil_socket_t, short, void *);

static void
tcp_write(struct dns_flight *f)
{
	ssize_t n;
	int err = 0;
	socklen_t errlen = sizeof(err);

	if (f->toff == 0 && (getsockopt(f->fd, SOL_SOCKET, SO_ERROR, &err,
	    &errlen) == -1 || err != 0)) {
		f->why = err == ECONNREFUSED ? "tcp refused" : "tcp error";
		flight_next(f);
		return;
	}
	n = send(f->fd, f->tbuf + f->toff, f->tlen - f->toff, MSG_NOSIGNAL);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		f->why = "tcp error";
		flight_next(f);
		return;
	}
	f->toff += (size_t)n;
	if (f->toff < f->tlen)
		return;
	free(f->tbuf);
	f->tbuf = NULL;
	f->tlen = f->toff = 0;
	f->twriting = 0;
	event_free(f->ev_io);
	f->ev_io = event_new(dns.base, f->fd, EV_READ | EV_PERSIST, tcp_cb, f);
	if (f->ev_io == NULL || event_add(f->ev_io, NULL) == -1)
		flight_fail_soon(f, "event error");
}

static void
tcp_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_flight *f = arg;

	if (f->twriting)
		tcp_write(f);
	else
		tcp_read(f);
}

/* TC=1: the same question over TCP to the same server (RFC 7766). */
static void
flight_tcp(struct dns_flight *f)
{
	const struct dns_server *s = flight_server(f);

	flight_close(f);
	f->tcp = 1;
	if (flight_encode(f) == -1) {
		flight_fail_soon(f, "encoding failed");
		return;
	}
	f->fd = socket(s->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (f->fd == -1 || (connect(f->fd, (const struct sockaddr *)&s->ss,
	    s->sslen) == -1 && errno != EINPROGRESS)) {
		flight_fail_soon(f, "tcp error");
		return;
	}
	f->tlen = f->pktlen + 2;
	f->tbuf = xmalloc(f->tlen);
	f->tbuf[0] = (unsigned char)(f->pktlen >> 8);
	f->tbuf[1] = (unsigned char)f->pktlen;
	memcpy(f->tbuf + 2, f->pkt, f->pktlen);
	f->toff = 0;
	f->twriting = 1;
	f->ev_io = event_new(dns.base, f->fd, EV_WRITE | EV_PERSIST, tcp_cb, f);
	if (f->ev_io == NULL || event_add(f->ev_io, NULL) == -1) {
		flight_fail_soon(f, "event error");
		return;
	}
	flight_arm(f);
	log_debug("dns: name=%s type=%s id=%u event=query tcp", f->qname,
	    type_name(f->type), f->id);
}

/* The current try failed (f->why): the next server, or give up. */
static void
flight_next(struct dns_flight *f)
{
	log_debug("dns: name=%s type=%s event=try-failed try=%u why=\"%s\"",
	    f->qname, type_name(f->type), f->try + 1, log_q(f->why));
	flight_close(f);
	if (++f->try >= f->ntries) {
		memset(&f->res, 0, sizeof(f->res));
		f->res.status = DNS_TEMPFAIL;
		f->res.why = f->why;
		flight_done(f);
		return;
	}
	f->server++;
	flight_send(f);
}

static void
flight_unlink(struct dns_flight *f)
{
	if (f->prev)
		f->prev->next = f->next;
	else
		dns.flights = f->next;
	if (f->next)
		f->next->prev = f->prev;
	f->prev = f->next = NULL;
}

static void
flight_free(struct dns_flight *f)
{
	struct dns_query *q;

	flight_close(f);
	event_free(f->ev_timer);
	while ((q = f->waiters) != NULL) {
		query_unlink(q);
		query_free(q);
	}
	dns_result_free(&f->res);
	free(f);
}

/* The final outcome: into the cache, then to every waiter once. */
static void
flight_done(struct dns_flight *f)
{
	struct dns_flight *outer = dns.delivering;
	struct dns_query *q;

	flight_close(f);
	flight_unlink(f);
	if (f->res.status != DNS_TEMPFAIL)
		cache_put(f->qname, f->type, &f->res);
	log_debug("dns: name=%s type=%s event=answer status=%d ttl=%u "
	    "why=\"%s\"", f->qname, type_name(f->type), (int)f->res.status,
	    f->res.ttl, log_q(f->res.why ? f->res.why : ""));
	dns.delivering = f;
	while ((q = f->waiters) != NULL) {
		query_unlink(q);
		q->cb(&f->res, q->arg);
		query_free(q);
	}
	dns.delivering = outer;
	flight_free(f);
}

static struct dns_flight *
flight_start(const char *qname, enum dns_type type)
{
	struct dns_flight *f = xcalloc(1, sizeof(*f));

	str_copy(f->qname, qname, sizeof(f->qname));
	f->type = type;
	f->fd = -1;
	f->edns = 1;
	f->server = dns.preferred;
	f->ntries = (unsigned)dns.nservers * (unsigned)dns.attempts;
	f->ev_timer = evtimer_new(dns.base, flight_timer_cb, f);
	if (f->ev_timer == NULL)
		panicx("dns: evtimer_new failed");
	f->next = dns.flights;
	if (dns.flights)
		dns.flights->prev = f;
	dns.flights = f;
	flight_send(f);
	return f;
}

static struct dns_flight *
flight_find(const char *qname, enum dns_type type)
{
	struct dns_flight *f;

	for (f = dns.flights; f; f = f->next)
		if (f->type == type && strcmp(f->qname, qname) == 0)
			return f;
	return NULL;
}

/* ---- lookups -------------------------------------------------------- */

static void
cached_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	query_unlink(q);
	event_free(q->ev);
	q->ev = NULL;
	q->cb(&q->res, q->arg);
	query_free(q);
}

struct dns_query *
dns_lookup(const char *name, enum dns_type type, dns_cb cb, void *arg)
{
	char qname[256];
	struct cache_entry *e;
	struct dns_query *q;
	int64_t now;

	if (dns.base == NULL)
		panicx("dns: lookup before dns_init");
	if (type != DNS_A && type != DNS_AAAA && type != DNS_MX &&
	    type != DNS_TXT && type != DNS_PTR)
		return NULL;
	if (cb == NULL || dns_query_name(name, type, qname,
	    sizeof(qname)) == -1)
		return NULL;
	q = xcalloc(1, sizeof(*q));
	q->cb = cb;
	q->arg = arg;
	now = now_ms();
	if ((e = cache_find(qname, type, now)) != NULL) {
		dns.hits++;
		dns_result_copy(&q->res, &e->res);
		q->res.ttl = (uint32_t)((e->expires - now + 999) / 1000);
		q->ev = event_new(dns.base, -1, 0, cached_cb, q);
		if (q->ev == NULL)
			panicx("dns: event_new failed");
		query_link(&dns.pending, q);
		event_active(q->ev, EV_TIMEOUT, 1);
		return q;
	}
	q->flight = flight_find(qname, type);
	if (q->flight == NULL)
		q->flight = flight_start(qname, type);
	query_link(&q->flight->waiters, q);
	return q;
}

/*
 * Forget a lookup before its callback: no callback, ever.  The flight
 * goes on without it (its answer still fills the cache).  From within the
 * query's own callback this does nothing; after it, q is gone.
 */
void
dns_cancel(struct dns_query *q)
{
	if (q == NULL || q->head == NULL)
		return;
	query_unlink(q);
	query_free(q);
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

/*
 * The state of another event base, as a child inherits it from fork:
 * dropped without touching its events, whose epoll set may be the
 * parent's.
 */
static void
dns_forget(void)
{
	struct dns_flight *f;
	struct dns_query *q;

	while ((f = dns.flights) != NULL) {
		flight_unlink(f);
		while ((q = f->waiters) != NULL) {
			query_unlink(q);
			dns_result_free(&q->res);
			free(q);
		}
		if (f->fd != -1)
			close(f->fd);
		free(f->tbuf);
		dns_result_free(&f->res);
		free(f);
	}
	while ((q = dns.pending) != NULL) {
		query_unlink(q);
		dns_result_free(&q->res);
		free(q);
	}
	cache_clear();
}

/*
 * Called again on the same base, this replaces the servers and timeouts
 * and keeps the cache and the lookups in flight.
 */
int
dns_init(struct event_base *base, const struct dns_server *servers,
    size_t nservers, int timeout_ms, int attempts)
{
	if (base == NULL || timeout_ms < 0 || attempts < 0 ||
	    (nservers > 0 && servers == NULL))
		return -1;
	for (size_t i = 0; i < nservers; i++)
		if (!server_ok(&servers[i]))
			return -1;
	if (dns.base != NULL && dns.base != base)
		dns_forget();
	dns.base = base;
	dns.nservers = 0;
	dns.preferred = 0;
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
	return 0;
}

/* Drop every lookup (no callbacks) and the cache. */
void
dns_shutdown(void)
{
	struct dns_query *q;
	struct dns_flight *f;

	while ((f = dns.flights) != NULL) {
		flight_unlink(f);
		flight_free(f);
	}
	if (dns.delivering) {
		while ((q = dns.delivering->waiters) != NULL) {
			query_unlink(q);
			query_free(q);
		}
	}
	while ((q = dns.pending) != NULL) {
		query_unlink(q);
		query_free(q);
	}
	cache_clear();
	dns.base = NULL;
	dns.nservers = 0;
}
