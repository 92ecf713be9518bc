/*
 * spfdns: libspf2's DNS layer on a blocking libunbound context (see
 * spfdns.h).  Runs in the smtp process's SPF worker threads and in
 * ternctl; never on an event loop.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>
#include <spf2/spf_dns_rr.h>
#include <unbound.h>

#include "auth/spf.h"
#include "dns/dns.h"
#include "dns/spfdns.h"
#include "lib/util.h"

struct spfdns {
	struct ub_ctx		*ub;
	SPF_dns_server_t	 layer;
	char			 token[24];	/* label of our own names */
};

static __thread struct spfdns_track *spfdns_cur;

/* An asynchronous question; freed by whichever side is last. */
struct spfdns_q {
	int			 done, abandoned, err;
	struct ub_result	*res;
};
static pthread_mutex_t spfdns_qlock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
spfdns_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Called in whichever thread runs ub_process. */
static void
spfdns_answer(void *arg, int err, struct ub_result *res)
{
	struct spfdns_q *q = arg;

	pthread_mutex_lock(&spfdns_qlock);
	if (q->abandoned) {
		pthread_mutex_unlock(&spfdns_qlock);
		if (res)
			ub_resolve_free(res);
		free(q);
		return;
	}
	q->done = 1;
	q->err = err;
	q->res = res;
	pthread_mutex_unlock(&spfdns_qlock);
}

/*
 * ub_resolve, bounded by the evaluation's deadline when it has one: a
 * black-holed nameserver costs a worker no more than what is left of
 * spf-timeout (libunbound's own retries can take much longer), and past
 * the deadline nothing more is asked.  UB_TIMEOUT-like failure: -1.
 */
static int
spfdns_resolve(struct ub_ctx *ub, const char *name, int type,
    struct ub_result **out)
{
	uint64_t dl = spfdns_cur ? spfdns_cur->deadline_ms : 0, now;
	struct spfdns_q *q;
	int id, r, fd;

	*out = NULL;
	if (dl == 0)
		return ub_resolve(ub, name, type, 1, out);
	if ((now = spfdns_now_ms()) >= dl)
		return -1;
	q = xcalloc(1, sizeof(*q));
	if ((r = ub_resolve_async(ub, name, type, 1, q, spfdns_answer,
	    &id)) != 0) {
		free(q);
		return r;
	}
	fd = ub_fd(ub);
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		uint64_t left;

		pthread_mutex_lock(&spfdns_qlock);
		if (q->done) {
			pthread_mutex_unlock(&spfdns_qlock);
			break;
		}
		pthread_mutex_unlock(&spfdns_qlock);
		if ((now = spfdns_now_ms()) >= dl) {
			int gone = ub_cancel(ub, id) == 0;

			pthread_mutex_lock(&spfdns_qlock);
			if (gone || q->done) {
				pthread_mutex_unlock(&spfdns_qlock);
				if (q->res)
					ub_resolve_free(q->res);
				free(q);
			} else {	/* its answer is on the way: it frees */
				q->abandoned = 1;
				pthread_mutex_unlock(&spfdns_qlock);
			}
			return -1;
		}
		/* Several threads may wait on the one descriptor: short
		 * naps, so an answer another thread read is seen soon. */
		left = dl - now;
		(void)poll(&pfd, 1, left > 100 ? 100 : (int)left);
		(void)ub_process(ub);
	}
	r = q->err;
	*out = q->res;
	free(q);
	if (r == 0 && *out == NULL)
		r = -1;
	return r;
}

/*
 * A name in uncompressed wire form (rdata as libunbound hands it over) as
 * text without the trailing dot.  -1 for a malformed one.
 */
static int
spfdns_wire_name(const unsigned char *p, size_t len, char *out, size_t cap)
{
	size_t i = 0, o = 0;

	while (i < len) {
		size_t l = p[i++];

		if (l == 0) {
			if (o == 0)
				out[o++] = '.';
			out[o] = '\0';
			return 0;
		}
		if (l > 63 || i + l > len || o + l + 2 > cap)
			return -1;
		if (o)
			out[o++] = '.';
		memcpy(out + o, p + i, l);
		for (size_t k = 0; k < l; k++)
			if (out[o + k] == '\0')
				return -1;
		o += l;
		i += l;
	}
	return -1;
}

/* One record's rdata into rr[idx]; 0, or -1 to skip it. */
static int
spfdns_put(SPF_dns_rr_t *rr, int idx, ns_type type, const unsigned char *d,
    size_t len)
{
	char name[1100];
	size_t i, o;

	switch (type) {
	case ns_t_a:
		if (len != 4 || SPF_dns_rr_buf_realloc(rr, idx, 4))
			return -1;
		memcpy(&rr->rr[idx]->a, d, 4);
		return 0;
	case ns_t_aaaa:
		if (len != 16 || SPF_dns_rr_buf_realloc(rr, idx, 16))
			return -1;
		memcpy(&rr->rr[idx]->aaaa, d, 16);
		return 0;
	case ns_t_mx:
	case ns_t_ptr:
		if (type == ns_t_mx) {
			if (len < 3)
				return -1;
			d += 2;
			len -= 2;
		}
		if (spfdns_wire_name(d, len, name, sizeof(name)) == -1 ||
		    SPF_dns_rr_buf_realloc(rr, idx, strlen(name) + 1))
			return -1;
		memcpy(rr->rr[idx]->ptr, name, strlen(name) + 1);
		return 0;
	case ns_t_txt:
	case ns_t_spf:
		/* The character-strings of one record, joined (RFC 7208 3.3). */
		if (SPF_dns_rr_buf_realloc(rr, idx, len + 1))
			return -1;
		for (i = 0, o = 0; i < len; ) {
			size_t l = d[i++];

			if (l > len - i)
				l = len - i;
			memcpy(rr->rr[idx]->txt + o, d + i, l);
			o += l;
			i += l;
		}
		rr->rr[idx]->txt[o] = '\0';
		/* A NUL inside: kept visible, so the syntax check refuses it. */
		for (i = 0; i < o; i++)
			if (rr->rr[idx]->txt[i] == '\0')
				rr->rr[idx]->txt[i] = '\x7f';
		return 0;
	default:
		return -1;
	}
}

/* Rewrite an SPF record so libspf2 takes what the RFC allows. */
static int
spfdns_fix(const struct spfdns *d, SPF_dns_rr_t *rr, int idx)
{
	struct spfdns_track *t = spfdns_cur;
	struct buf b;
	int r = 0;

	if (t == NULL || !t->fix || strncasecmp(rr->rr[idx]->txt, "v=spf1", 6))
		return 0;
	buf_init(&b);
	spf_record_rewrite(rr->rr[idx]->txt, t->v6, d->token, &b);
	buf_putc(&b, '\0');
	if (t->mv != NULL && strchr(b.data, '%') != NULL) {
		struct spf_macro_vals mv = *t->mv;
		struct buf c;

		mv.d = rr->domain;
		buf_init(&c);
		if (spf_record_truncate(b.data, &mv, &c)) {
			buf_reset(&b);
			buf_append(&b, c.data, c.len);
			buf_putc(&b, '\0');
		}
		buf_free(&c);
	}
	if (SPF_dns_rr_buf_realloc(rr, idx, b.len))
		r = -1;
	else
		memcpy(rr->rr[idx]->txt, b.data, b.len);
	buf_free(&b);
	return r;
}

/* An answer the evaluation used: its verdict holds no longer. */
static void
spfdns_note_ttl(const struct ub_result *res)
{
	struct spfdns_track *t = spfdns_cur;
	uint32_t ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;

	if (t == NULL)
		return;
	if (!t->ttl_seen || ttl < t->ttl_min)
		t->ttl_min = ttl;
	t->ttl_seen = 1;
}

/* Remember an SPF record libspf2 fetched, for auth/spf.c's checks. */
static void
spfdns_note_record(const char *domain, const char *txt)
{
	struct spfdns_track *t = spfdns_cur;

	if (t == NULL)
		return;
	if (strncasecmp(txt, "v=spf1", 6) != 0 ||
	    (txt[6] != '\0' && txt[6] != ' '))
		return;
	if (t->nrec >= SPFDNS_RECORDS) {
		t->overflow = 1;
		return;
	}
	t->rec[t->nrec] = xstrdup(txt);
	t->recdom[t->nrec++] = xstrdup(domain);
}

/* What the last TXT lookup found (see spfdns.h). */
static void
spfdns_note_txt(const SPF_dns_rr_t *rr)
{
	struct spfdns_track *t = spfdns_cur;

	t->last_txt = 1;
	t->last_spf = 0;
	t->last_index = t->lookups;
	t->last_void = rr->herrno == HOST_NOT_FOUND || rr->herrno == NO_DATA;
	t->last_temp = rr->herrno == TRY_AGAIN;
	t->last_n = rr->herrno == NETDB_SUCCESS ? rr->num_rr : 0;
	free(t->last_text);
	t->last_text = t->last_n ? xstrdup(rr->rr[0]->txt) : NULL;
	for (int i = 0; i < t->last_n; i++)
		if (strncasecmp(rr->rr[i]->txt, "v=spf1", 6) == 0)
			t->last_spf = 1;
}

/* One question for the synthetic names: 1 data, 0 none, -1 temporary. */
static int
spfdns_has(struct spfdns *d, const char *name, int type, struct ub_result **out)
{
	struct ub_result *res = NULL;
	int r;

	if (spfdns_resolve(d->ub, name, type, &res) != 0 || res == NULL) {
		if (res)
			ub_resolve_free(res);
		if (spfdns_cur)
			spfdns_cur->failed = 1;
		return -1;
	}
	r = res->havedata && res->rcode == 0 && !res->bogus ? 1 :
	    res->nxdomain || (res->rcode == 0 && !res->bogus) ? 0 : -1;
	if (r == -1 && spfdns_cur)
		spfdns_cur->failed = 1;
	spfdns_note_ttl(res);
	if (out)
		*out = res;
	else
		ub_resolve_free(res);
	return r;
}

/*
 * NAME.KIND.token (from spf_record_rewrite): a6, "NAME has an AAAA
 * record"; mx4 and mx6, "one of NAME's MX hosts (10 at most) has an A,
 * or AAAA, record".  Answered as an A record when true, NXDOMAIN when
 * not, TRY_AGAIN when DNS failed.
 */
static SPF_dns_rr_t *
spfdns_synthetic(SPF_dns_server_t *layer, struct spfdns *d,
    const char *domain, size_t nlen)
{
	char name[300], kind[4];
	const char *dot;
	struct ub_result *mx = NULL;
	SPF_dns_rr_t *rr;
	int r = 0, i;

	dot = memrchr(domain, '.', nlen);
	if (dot == NULL || (size_t)(domain + nlen - dot - 1) >= sizeof(kind) ||
	    (size_t)(dot - domain) >= sizeof(name))
		return SPF_dns_rr_new_init(layer, domain, ns_t_a, 0,
		    HOST_NOT_FOUND);
	memcpy(kind, dot + 1, (size_t)(domain + nlen - dot - 1));
	kind[domain + nlen - dot - 1] = '\0';
	memcpy(name, domain, (size_t)(dot - domain));
	name[dot - domain] = '\0';
	if (strcmp(kind, "a6") == 0)
		r = spfdns_has(d, name, ns_t_aaaa, NULL);
	else if ((r = spfdns_has(d, name, ns_t_mx, &mx)) == 1) {
		char host[1100];

		r = 0;
		for (i = 0; mx->data[i] && r != 1; i++) {
			int h;

			if (i == 10) {
				if (spfdns_cur)
					spfdns_cur->mx_over = 1;
				break;
			}
			if (mx->len[i] < 3 || spfdns_wire_name((unsigned char *)
			    mx->data[i] + 2, (size_t)mx->len[i] - 2, host,
			    sizeof(host)) == -1)
				continue;
			h = spfdns_has(d, host, strcmp(kind, "mx6") == 0 ?
			    ns_t_aaaa : ns_t_a, NULL);
			if (h == -1 && r == 0)
				r = -1;
			else if (h == 1)
				r = 1;
		}
	}
	if (mx)
		ub_resolve_free(mx);
	if (r == -1) {
		if (spfdns_cur)
			spfdns_cur->temp++;
		return SPF_dns_rr_new_init(layer, domain, ns_t_a, 0, TRY_AGAIN);
	}
	if (r == 0) {
		if (spfdns_cur)
			spfdns_cur->voids++;
		return SPF_dns_rr_new_init(layer, domain, ns_t_a, 0,
		    HOST_NOT_FOUND);
	}
	rr = SPF_dns_rr_new_init(layer, domain, ns_t_a, 0, NETDB_SUCCESS);
	if (rr && SPF_dns_rr_buf_realloc(rr, 0, 4) == 0) {
		static const unsigned char one[4] = { 127, 0, 0, 2 };

		memcpy(&rr->rr[0]->a, one, 4);
		rr->num_rr = 1;
	}
	return rr;
}

/*
 * Whether an address lookup of domain is the ptr mechanism's (or %{p}'s)
 * check of a name from the last PTR answer, each name once; any other
 * lookup ends that answer's checks.  A DNS error there skips the name,
 * and one in the PTR lookup itself fails to match (RFC 7208 5.5): neither
 * makes the evaluation temperror.
 */
static int
spfdns_ptr_check(struct spfdns_track *t, const char *domain, ns_type type)
{
	size_t n = strlen(domain);

	if (n > 0 && domain[n - 1] == '.')
		n--;
	if (type == ns_t_a || type == ns_t_aaaa)
		for (int i = 0; i < t->nptr; i++)
			if (strncasecmp(t->ptr[i], domain, n) == 0 &&
			    t->ptr[i][n] == '\0') {
				t->ptr[i][0] = '\0';
				return 1;
			}
	t->nptr = 0;
	return 0;
}

/* The names of a PTR answer, for spfdns_ptr_check. */
static void
spfdns_note_ptr(struct spfdns_track *t, const SPF_dns_rr_t *rr)
{
	t->nptr = 0;
	for (int i = 0; i < rr->num_rr && t->nptr < SPFDNS_PTRS; i++) {
		size_t n;

		if (rr->rr[i] == NULL)
			continue;
		str_copy(t->ptr[t->nptr], rr->rr[i]->ptr, sizeof(t->ptr[0]));
		n = strlen(t->ptr[t->nptr]);
		if (n > 0 && t->ptr[t->nptr][n - 1] == '.')
			t->ptr[t->nptr][n - 1] = '\0';
		t->nptr++;
	}
}

static SPF_dns_rr_t *
spfdns_lookup(SPF_dns_server_t *layer, const char *domain, ns_type type,
    int should_cache)
{
	struct spfdns *d = layer->hook;
	struct ub_result *res = NULL;
	SPF_dns_rr_t *rr;
	int i, n, herr, r, ptrerr = type == ns_t_ptr;

	if (spfdns_cur) {
		spfdns_cur->lookups++;
		if (spfdns_ptr_check(spfdns_cur, domain, type))
			ptrerr = 1;
	}
	{
		size_t nl = strlen(domain), tl = strlen(d->token);

		if (type == ns_t_a && nl > tl + 1 && domain[nl - tl - 1] == '.' &&
		    strcasecmp(domain + nl - tl, d->token) == 0)
			return spfdns_synthetic(layer, d, domain, nl - tl - 1);
	}
	r = spfdns_resolve(d->ub, domain, type, &res);
	if (r == UB_SYNTAX) {
		/* Not a name DNS can carry (a label over 63 bytes, an empty
		 * one): it exists nowhere. */
		if (res)
			ub_resolve_free(res);
		if (spfdns_cur && !ptrerr)
			spfdns_cur->voids++;
		return SPF_dns_rr_new_init(layer, domain, type, 0,
		    HOST_NOT_FOUND);
	}
	if (r != 0 || res == NULL || (ptrerr && !res->nxdomain &&
	    (res->rcode != 0 || res->bogus))) {
		if (res)
			ub_resolve_free(res);
		if (spfdns_cur)
			spfdns_cur->failed = 1;
		/* The ptr mechanism's lookups: as no answer (above), unless
		 * the check's deadline passed (-1). */
		if (ptrerr && r != -1)
			return SPF_dns_rr_new_init(layer, domain, type, 0,
			    HOST_NOT_FOUND);
		if (spfdns_cur)
			spfdns_cur->temp++;
		return SPF_dns_rr_new_init(layer, domain, type, 0, TRY_AGAIN);
	}
	if (res->nxdomain)
		herr = HOST_NOT_FOUND;
	else if (res->rcode != 0 || res->bogus)
		herr = TRY_AGAIN;
	else if (!res->havedata)
		herr = NO_DATA;
	else
		herr = NETDB_SUCCESS;
	if (herr == TRY_AGAIN && spfdns_cur)
		spfdns_cur->failed = 1;
	spfdns_note_ttl(res);
	rr = SPF_dns_rr_new_init(layer, domain, type,
	    herr == NETDB_SUCCESS ? res->ttl : 0, herr);
	if (rr == NULL) {
		ub_resolve_free(res);
		return NULL;
	}
	for (i = 0, n = 0; herr == NETDB_SUCCESS && res->data[i]; i++) {
		if (spfdns_put(rr, n, type, (unsigned char *)res->data[i],
		    (size_t)res->len[i]) == -1)
			continue;
		if (type == ns_t_txt) {
			spfdns_note_record(domain, rr->rr[n]->txt);
			if (spfdns_fix(d, rr, n) == -1)
				continue;
		}
		n++;
	}
	/* Past 10 PTR names the rest are ignored (RFC 7208 4.6.4); libspf2
	 * makes the evaluation permerror when the first 10 do not match. */
	if (type == ns_t_ptr && n > SPFDNS_PTRS)
		n = SPFDNS_PTRS;
	rr->num_rr = n;
	if (herr == NETDB_SUCCESS && n == 0)
		rr->herrno = NO_DATA;
	if (spfdns_cur && type == ns_t_txt)
		spfdns_note_txt(rr);
	if (spfdns_cur) {
		/* The PTR records, and their names' addresses, are the
		 * client's, not the record's (RFC 7208 4.6.4 limits what a
		 * record makes one ask in vain). */
		if ((rr->herrno == HOST_NOT_FOUND || rr->herrno == NO_DATA) &&
		    !ptrerr)
			spfdns_cur->voids++;
		if (rr->herrno == TRY_AGAIN)
			spfdns_cur->temp++;
		if (type == ns_t_ptr)
			spfdns_note_ptr(spfdns_cur, rr);
		if (type == ns_t_mx && n > 10)
			spfdns_cur->mx_over = 1;
	}
	ub_resolve_free(res);
	return rr;
}

struct spfdns *
spfdns_new(const struct sockaddr_storage *servers, const socklen_t *lens,
    size_t nservers, int timeout_ms, char *err, size_t errlen)
{
	struct spfdns *d = xcalloc(1, sizeof(*d));
	char addr[INET6_ADDRSTRLEN + 16], rtt[32];
	int r = 0;

	d->ub = ub_ctx_create();
	if (d->ub == NULL) {
		snprintf(err, errlen, "ub_ctx_create failed");
		free(d);
		return NULL;
	}
	/* A loopback forwarder is what tests (and local caches) use. */
	r |= ub_ctx_set_option(d->ub, "do-not-query-localhost:", "no");
	/* Bounded lookups (spfdns_resolve) use a resolver thread. */
	r |= ub_ctx_async(d->ub, 1);
	r |= ub_ctx_set_option(d->ub, "outgoing-range:", "64");
	r |= ub_ctx_set_option(d->ub, "outgoing-num-tcp:", "10");
	/* Unbound answers RFC 6761 names itself; ours come from the
	 * configured server like any other (tests use .test). */
	r |= ub_ctx_set_option(d->ub, "local-zone:", "test. transparent");
	r |= ub_ctx_set_option(d->ub, "local-zone:",
	    "127.in-addr.arpa. transparent");
	/* Likewise the reverse zones of private and documentation ranges
	 * (RFC 6303): a ptr mechanism needs their real PTR records
	 * (RFC 7208 5.5), which the configured server may well have. */
	r |= ub_ctx_set_option(d->ub, "unblock-lan-zones:", "yes");
	r |= ub_ctx_set_option(d->ub, "insecure-lan-zones:", "yes");
	/* An unanswered server is given up on after timeout_ms. */
	if (timeout_ms <= 0)
		timeout_ms = 5000;
	snprintf(rtt, sizeof(rtt), "%d", timeout_ms);
	r |= ub_ctx_set_option(d->ub, "infra-cache-max-rtt:", rtt);
	for (size_t i = 0; i < nservers && r == 0; i++) {
		char host[INET6_ADDRSTRLEN];
		int port;

		(void)lens;
		if (servers[i].ss_family == AF_INET) {
			const struct sockaddr_in *s4 =
			    (const struct sockaddr_in *)&servers[i];

			inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
			port = ntohs(s4->sin_port);
		} else {
			const struct sockaddr_in6 *s6 =
			    (const struct sockaddr_in6 *)&servers[i];

			inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
			port = ntohs(s6->sin6_port);
		}
		snprintf(addr, sizeof(addr), "%s@%d", host, port ? port : 53);
		r |= ub_ctx_set_fwd(d->ub, addr);
	}
	if (r == 0 && nservers == 0)
		r = ub_ctx_resolvconf(d->ub, NULL);
	if (r != 0) {
		snprintf(err, errlen, "libunbound set-up: %s", ub_strerror(r));
		ub_ctx_delete(d->ub);
		free(d);
		return NULL;
	}
	{
		unsigned char rnd[6];

		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			memset(rnd, 0x5a, sizeof(rnd));
		snprintf(d->token, sizeof(d->token), "tern-%02x%02x%02x%02x%02x"
		    "%02x", rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5]);
	}
	d->layer.destroy = NULL;	/* ours: spfdns_free */
	d->layer.lookup = spfdns_lookup;
	d->layer.name = "tern";
	d->layer.hook = d;
	return d;
}

void
spfdns_free(struct spfdns *d)
{
	if (d == NULL)
		return;
	ub_ctx_delete(d->ub);
	free(d);
}

void *
spfdns_layer(struct spfdns *d)
{
	return &d->layer;
}

int
spfdns_txt(struct spfdns *d, const char *name, uint64_t deadline_ms,
    struct buf *out, size_t *n, uint32_t *ttl)
{
	struct spfdns_track t, *saved = spfdns_cur;
	struct ub_result *res = NULL;
	size_t i, k, l, len;
	int r;

	*n = 0;
	*ttl = 0;
	/* The deadline rides on a track of our own, as SPF's does. */
	memset(&t, 0, sizeof(t));
	t.deadline_ms = deadline_ms;
	spfdns_cur = &t;
	r = spfdns_resolve(d->ub, name, ns_t_txt, &res);
	spfdns_cur = saved;
	if (r == UB_SYNTAX) {
		if (res)
			ub_resolve_free(res);
		return 1;
	}
	if (r != 0 || res == NULL)
		return -1;
	if (res->nxdomain || (res->rcode == 0 && !res->bogus &&
	    !res->havedata)) {
		*ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
		ub_resolve_free(res);
		return 1;
	}
	if (res->rcode != 0 || res->bogus) {
		ub_resolve_free(res);
		return -1;
	}
	for (i = 0; res->data[i]; i++) {
		const unsigned char *p = (const unsigned char *)res->data[i];

		len = (size_t)res->len[i];
		for (k = 0; k < len; k += l) {
			l = p[k++];
			if (l > len - k)
				l = len - k;
			/* A NUL inside would cut the record: made visible. */
			for (size_t j = 0; j < l; j++)
				buf_putc(out, p[k + j] ? p[k + j] : 0x7f);
		}
		buf_putc(out, '\0');
		(*n)++;
	}
	*ttl = res->ttl > 0 ? (uint32_t)res->ttl : 0;
	ub_resolve_free(res);
	return *n > 0 ? 0 : 1;
}

void
spfdns_track_begin(struct spfdns_track *t)
{
	memset(t, 0, sizeof(*t));
	spfdns_cur = t;
}

void
spfdns_track_end(struct spfdns_track *t)
{
	for (int i = 0; i < t->nrec; i++) {
		free(t->rec[i]);
		free(t->recdom[i]);
	}
	t->nrec = 0;
	free(t->last_text);
	t->last_text = NULL;
	spfdns_cur = NULL;
}

int
spfdns_query(struct spfdns *d, const char *name, int type,
    struct dns_result *res)
{
	struct ub_result *r = NULL;
	char qname[256];
	const unsigned char *pkt;
	int rv;

	memset(res, 0, sizeof(*res));
	res->status = DNS_TEMPFAIL;
	if (dns_query_name(name, (enum dns_type)type, qname,
	    sizeof(qname)) == -1)
		return -1;
	if ((rv = spfdns_resolve(d->ub, qname, type, &r)) != 0 || r == NULL ||
	    r->answer_packet == NULL || r->answer_len < 12) {
		/* -1: spfdns_resolve's deadline passed */
		res->why = rv == -1 ? "timeout" : rv ? ub_strerror(rv) :
		    "no answer";
		if (r)
			ub_resolve_free(r);
		return 0;
	}
	pkt = r->answer_packet;
	if (r->rcode != 0 && r->rcode != 3) {	/* neither NOERROR nor NXDOMAIN */
		res->why = r->rcode == 2 ? "servfail" : r->rcode == 5 ?
		    "refused" : "error answer";
		ub_resolve_free(r);
		return 0;
	}
	if (dns_parse_response(pkt, (size_t)r->answer_len,
	    (uint16_t)(pkt[0] << 8 | pkt[1]), name, (enum dns_type)type, res,
	    NULL) == -1)
		res->why = "malformed answer";
	ub_resolve_free(r);
	return 0;
}
