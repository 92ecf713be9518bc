/*
 * ternctl dns DOMAIN [--check]: the DNS records a local domain needs for
 * its mail to be received and trusted (MX, the host's A/AAAA and PTR,
 * SPF for the domain and for the HELO name, DKIM for every dkim-key of
 * the domain, DMARC), printed in zone-file syntax; with --check, each
 * looked up through the configured resolver (dns/spfdns.c, blocking,
 * which is fine in a command) and judged one line at a time:
 *
 *   ok|missing|wrong|danger|error KIND NAME: what was found
 *
 * Exit status 0 when every line is ok, 1 when one is not, 2 for a usage
 * or config error.  Text that came from the DNS is printed with anything
 * outside printable ASCII replaced.  The record checks themselves are in
 * auth/dnsrec.c (tag lists, SPF lookup counting) and auth/spfrec.c (SPF
 * syntax); SPF is also evaluated for the host's own addresses with the
 * MX's own evaluator (auth/spf.c), which is what receivers will do.
 */
#include <sys/types.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth/dkim.h"
#include "auth/dnsrec.h"
#include "auth/spf.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "dns/dns.h"
#include "dns/spfdns.h"
#include "lib/addr.h"
#include "lib/util.h"

#define DNSCTL_ADDRS		16	/* host addresses looked at */
#define DNSCTL_SPF_LIMIT	10	/* RFC 7208 4.6.4 */
#define DNSCTL_SPF_RECORDS	30	/* SPF records fetched at most */
#define DNSCTL_KEY_MAX		(64 * 1024)

struct dnsctl {
	const struct conf *c;
	const char	*domain;	/* A-labels, lower case */
	const char	*host;		/* hostname, lower case */
	struct spfdns	*dns;
	int		 timeout_ms;
	int		 problems;
	char		 addr[DNSCTL_ADDRS][INET6_ADDRSTRLEN];
	int		 private[DNSCTL_ADDRS];	/* ...not reachable */
	size_t		 naddr;
	/* SPF records followed while counting lookups */
	char		 seen[DNSCTL_SPF_RECORDS][256];
	size_t		 nseen;
};

static void
dnsctl_usage(void)
{
	fprintf(stderr, "usage: ternctl dns DOMAIN [--check]\n");
	exit(2);
}

/* One line of --check: printable ASCII only (DNS text is untrusted). */
static void
dnsctl_say(struct dnsctl *z, const char *status, const char *kind,
    const char *name, const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	buf_init(&b);
	buf_printf(&b, "%s %s %s: ", status, kind, name);
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	for (size_t i = 0; i < b.len; i++)
		putchar((unsigned char)b.data[i] >= 0x20 &&
		    (unsigned char)b.data[i] < 0x7f ? b.data[i] : '?');
	putchar('\n');
	buf_free(&b);
	if (strcmp(status, "ok") != 0)
		z->problems++;
}

static uint64_t
dnsctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A lookup bounded by spf-timeout; res freed by the caller. */
static void
dnsctl_query(struct dnsctl *z, const char *name, enum dns_type type,
    struct dns_result *res)
{
	struct spfdns_track t;

	spfdns_track_begin(&t);
	t.deadline_ms = dnsctl_now_ms() + (uint64_t)z->timeout_ms;
	if (spfdns_query(z->dns, name, (int)type, res) == -1)
		res->why = "not a name that can be looked up";
	spfdns_track_end(&t);
}

/* Loopback, private, link-local, ULA, unspecified: unreachable from
 * other servers. */
static int
dnsctl_addr_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const unsigned char *a = (const unsigned char *)
		    &((const struct sockaddr_in *)sa)->sin_addr;

		return a[0] == 0 || a[0] == 10 || a[0] == 127 ||
		    (a[0] == 169 && a[1] == 254) ||
		    (a[0] == 172 && (a[1] & 0xf0) == 16) ||
		    (a[0] == 192 && a[1] == 168) ||
		    (a[0] == 100 && (a[1] & 0xc0) == 64);
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LOOPBACK(a) ||
		    IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_V4MAPPED(a) ||
		    (a->s6_addr[0] & 0xfe) == 0xfc;
	}
	return 1;
}

static void
dnsctl_addr_text(const struct sockaddr *sa, char *out, size_t cap)
{
	const void *a = sa->sa_family == AF_INET ?
	    (const void *)&((const struct sockaddr_in *)sa)->sin_addr :
	    (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;

	if (inet_ntop(sa->sa_family, a, out, (socklen_t)cap) == NULL)
		str_copy(out, "?", cap);
}

static void
dnsctl_addr_add(char list[][INET6_ADDRSTRLEN], size_t *n, const char *a)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i], a) == 0)
			return;
	if (*n < DNSCTL_ADDRS)
		str_copy(list[(*n)++], a, INET6_ADDRSTRLEN);
}

/*
 * The host's public addresses as this machine knows them: the mx
 * listeners bound to one address, else its interfaces' (fromif set).
 */
static size_t
dnsctl_local_addrs(const struct conf *c, char list[][INET6_ADDRSTRLEN],
    int *fromif)
{
	struct ifaddrs *ifa, *i;
	char a[INET6_ADDRSTRLEN];
	size_t n = 0;

	*fromif = 0;
	for (size_t l = 0; l < c->nlisteners; l++) {
		const struct sockaddr *sa =
		    (const struct sockaddr *)&c->listeners[l].ss;

		if (c->listeners[l].role != ROLE_MX ||
		    (sa->sa_family != AF_INET && sa->sa_family != AF_INET6) ||
		    dnsctl_addr_private(sa))
			continue;
		dnsctl_addr_text(sa, a, sizeof(a));
		dnsctl_addr_add(list, &n, a);
	}
	if (n > 0 || getifaddrs(&ifa) == -1)
		return n;
	for (i = ifa; i != NULL; i = i->ifa_next)
		if (i->ifa_addr && (i->ifa_flags & IFF_UP) &&
		    (i->ifa_addr->sa_family == AF_INET ||
		    i->ifa_addr->sa_family == AF_INET6) &&
		    !dnsctl_addr_private(i->ifa_addr)) {
			dnsctl_addr_text(i->ifa_addr, a, sizeof(a));
			dnsctl_addr_add(list, &n, a);
		}
	freeifaddrs(ifa);
	*fromif = n > 0;
	return n;
}

/* The TXT value of a dkim-key's public half; -1 with why. */
static int
dnsctl_key_txt(const struct dkimkey *k, struct buf *txt, const char **why)
{
	struct buf pem;
	int rv = 0;

	buf_init(&pem);
	if (file_read_all(k->path, DNSCTL_KEY_MAX, &pem) == -1) {
		*why = strerror(errno);
		rv = -1;
	} else if (dkim_key_txt(pem.data, pem.len, txt) == -1) {
		*why = "not a PEM private key";
		rv = -1;
	}
	if (pem.data)
		explicit_bzero(pem.data, pem.cap);
	buf_free(&pem);
	return rv;
}

static int
dnsctl_key_is(const struct dkimkey *k, const char *domain)
{
	return str_casecmp(k->domain, domain) == 0;
}

static size_t
dnsctl_nkeys(const struct dnsctl *z)
{
	size_t n = 0;

	for (size_t i = 0; i < z->c->ndkimkeys; i++)
		n += dnsctl_key_is(&z->c->dkimkeys[i], z->domain);
	return n;
}

/* The relay all outgoing mail (or deferred mail) leaves through. */
static const char *
dnsctl_relay(const struct conf *c)
{
	const struct route *r = conf_find_route(c, "*");

	if (r == NULL || strcmp(r->domain, "*") != 0)
		r = conf_fallback_route(c);
	return r && r->host && !r->lmtp ? r->host : NULL;
}

/* ---- the records to publish ---- */

static void
dnsctl_print_addrs(struct dnsctl *z)
{
	char list[DNSCTL_ADDRS][INET6_ADDRSTRLEN], ptr[256];
	size_t n;
	int fromif;

	n = dnsctl_local_addrs(z->c, list, &fromif);
	printf("\n; A/AAAA: the addresses of %s, %s\n", z->host, n == 0 ?
	    "which the config does not name (listen on 0.0.0.0): fill in "
	    "this server's public addresses" : fromif ? "from this machine's "
	    "interfaces (check they are the public ones)" : "from the "
	    "config's listen lines");
	if (n == 0) {
		printf(";%s.\tIN A\tPUBLIC-IPV4-ADDRESS\n", z->host);
		printf(";%s.\tIN AAAA\tPUBLIC-IPV6-ADDRESS\t; if it has one\n",
		    z->host);
	}
	for (size_t i = 0; i < n; i++)
		printf("%s.\tIN %s\t%s\n", z->host, strchr(list[i], ':') ?
		    "AAAA" : "A", list[i]);
	printf("\n; PTR: in the reverse zone of each address, not in yours: "
	    "ask the provider\n; of the address (your VPS host) to set it; "
	    "%s must resolve back to it\n", z->host);
	if (n == 0)
		printf(";ADDRESS-REVERSED.in-addr.arpa.\tIN PTR\t%s.\n",
		    z->host);
	for (size_t i = 0; i < n; i++)
		if (dns_query_name(list[i], DNS_PTR, ptr, sizeof(ptr)) == 0)
			printf("%s.\tIN PTR\t%s.\n", ptr, z->host);
}

static void
dnsctl_print_dkim(struct dnsctl *z)
{
	size_t n = 0;

	for (size_t i = 0; i < z->c->ndkimkeys; i++) {
		const struct dkimkey *k = &z->c->dkimkeys[i];
		const char *why;
		struct buf txt;

		if (!dnsctl_key_is(k, z->domain))
			continue;
		n++;
		buf_init(&txt);
		printf("\n; DKIM: the public half of dkim-key %s %s %s\n",
		    k->domain, k->selector, k->path);
		if (dnsctl_key_txt(k, &txt, &why) == -1)
			printf("; cannot read the key: %s (run ternctl as "
			    "root): publish\n; the record ternctl dkim keygen "
			    "printed\n", why);
		else
			dkim_print_record(z->domain, k->selector, txt.data);
		buf_free(&txt);
	}
	if (n == 0)
		printf("\n; DKIM: no dkim-key for %s in the config: make one "
		    "with\n;   ternctl dkim keygen %s SELECTOR\n; add the "
		    "dkim-key line it prints, reload ternd, run this again\n",
		    z->domain, z->domain);
}

static int
dnsctl_print(struct dnsctl *z)
{
	const char *relay = dnsctl_relay(z->c);

	printf("; DNS records for %s, whose mail %s receives and sends.\n"
	    "; Publish them in the zone of %s; check them with\n"
	    ";   ternctl dns %s --check\n", z->domain, z->host, z->domain,
	    z->domain);
	printf("\n; MX: mail for %s goes to %s (a name with A/AAAA records, "
	    "never a CNAME)\n", z->domain, z->host);
	printf("%s.\tIN MX\t10 %s.\n", z->domain, z->host);
	dnsctl_print_addrs(z);
	printf("\n; SPF: only the MX host%s sends mail from @%s; receivers "
	    "fail the rest\n", relay ? " and the relay" : "", z->domain);
	if (relay)
		printf("; (mail leaves through %s: if its provider documents "
		    "an include:, use that\n; instead of a:%s)\n", relay,
		    relay);
	printf("%s.\tIN TXT\t\"v=spf1 mx%s%s -all\"\n", z->domain,
	    relay ? " a:" : "", relay ? relay : "");
	if (str_casecmp(z->host, z->domain) != 0) {
		printf("\n; SPF for the HELO name: receivers check bounces "
		    "(null sender) against it\n");
		printf("%s.\tIN TXT\t\"v=spf1 a%s%s -all\"\n", z->host,
		    relay ? " a:" : "", relay ? relay : "");
	}
	dnsctl_print_dkim(z);
	printf("\n; DMARC: p=none to start: read the daily reports sent to "
	    "rua (postmaster\n; must reach a person), then raise p= to "
	    "quarantine once your mail passes\n");
	printf("_dmarc.%s.\tIN TXT\t\"v=DMARC1; p=none; "
	    "rua=mailto:postmaster@%s\"\n", z->domain, z->domain);
	return 0;
}

/* ---- --check ---- */

static void
dnsctl_fail(struct dnsctl *z, const char *kind, const char *name,
    const struct dns_result *r, const char *missing)
{
	if (r->status == DNS_TEMPFAIL)
		dnsctl_say(z, "error", kind, name, "lookup failed (%s)",
		    r->why ? r->why : "?");
	else
		dnsctl_say(z, "missing", kind, name, "%s", missing);
}

static void
dnsctl_check_mx(struct dnsctl *z)
{
	struct dns_result r;
	struct buf others;
	int ours = 0;

	dnsctl_query(z, z->domain, DNS_MX, &r);
	if (r.status != DNS_OK) {
		dnsctl_fail(z, "MX", z->domain, &r, "no MX record: mail to "
		    "the domain cannot find this host");
		dns_result_free(&r);
		return;
	}
	buf_init(&others);
	for (size_t i = 0; i < r.nmx; i++) {
		if (str_casecmp(r.mx[i].host, z->host) == 0)
			ours = r.mx[i].pref + 1;
		else
			buf_printf(&others, "%s%u %s", others.len ? ", " : "",
			    r.mx[i].pref, r.mx[i].host[0] ? r.mx[i].host : ".");
	}
	buf_putc(&others, '\0');
	if (r.nmx == 1 && r.mx[0].host[0] == '\0')
		dnsctl_say(z, "wrong", "MX", z->domain, "a null MX (RFC 7505) "
		    "says the domain takes no mail");
	else if (!ours)
		dnsctl_say(z, "wrong", "MX", z->domain, "points at %s, not at "
		    "%s", others.data, z->host);
	else
		dnsctl_say(z, "ok", "MX", z->domain, "%d %s%s%s%s", ours - 1,
		    z->host, others.data[0] ? " (also: " : "", others.data,
		    others.data[0] ? ")" : "");
	buf_free(&others);
	dns_result_free(&r);
}

static void
dnsctl_check_addrs(struct dnsctl *z)
{
	static const enum dns_type types[] = { DNS_A, DNS_AAAA };
	char local[DNSCTL_ADDRS][INET6_ADDRSTRLEN];
	int temp = 0, fromif;
	size_t nlocal;

	for (size_t t = 0; t < 2; t++) {
		struct dns_result r;

		dnsctl_query(z, z->host, types[t], &r);
		temp |= r.status == DNS_TEMPFAIL;
		if (r.status == DNS_TEMPFAIL)
			dnsctl_say(z, "error", t ? "AAAA" : "A", z->host,
			    "lookup failed (%s)", r.why ? r.why : "?");
		for (size_t i = 0; i < r.naddr; i++) {
			const struct sockaddr *sa =
			    (const struct sockaddr *)&r.addr[i];
			char a[INET6_ADDRSTRLEN];

			dnsctl_addr_text(sa, a, sizeof(a));
			if (dnsctl_addr_private(sa))
				dnsctl_say(z, "danger", t ? "AAAA" : "A",
				    z->host, "%s is a private or loopback "
				    "address: other servers cannot reach it",
				    a);
			else
				dnsctl_say(z, "ok", t ? "AAAA" : "A", z->host,
				    "%s", a);
			dnsctl_addr_add(z->addr, &z->naddr, a);
			if (z->naddr > 0 && strcmp(z->addr[z->naddr - 1], a) == 0)
				z->private[z->naddr - 1] =
				    dnsctl_addr_private(sa);
		}
		dns_result_free(&r);
	}
	if (z->naddr == 0 && !temp)
		dnsctl_say(z, "missing", "A", z->host, "no A or AAAA record: "
		    "the MX host has no address");
	/* An mx listener bound to one address: the DNS must name it. */
	nlocal = dnsctl_local_addrs(z->c, local, &fromif);
	for (size_t i = 0; i < nlocal && !fromif && z->naddr > 0; i++) {
		size_t j;

		for (j = 0; j < z->naddr; j++)
			if (strcmp(local[i], z->addr[j]) == 0)
				break;
		if (j == z->naddr)
			dnsctl_say(z, "wrong", strchr(local[i], ':') ? "AAAA" :
			    "A", z->host, "%s (an mx listen address) is not "
			    "among its addresses", local[i]);
	}
}

/* Does name resolve (A or AAAA) to addr? */
static int
dnsctl_resolves_to(struct dnsctl *z, const char *name, const char *addr)
{
	enum dns_type type = strchr(addr, ':') ? DNS_AAAA : DNS_A;
	struct dns_result r;
	int found = 0;

	dnsctl_query(z, name, type, &r);
	for (size_t i = 0; i < r.naddr && !found; i++) {
		char a[INET6_ADDRSTRLEN];

		dnsctl_addr_text((const struct sockaddr *)&r.addr[i], a,
		    sizeof(a));
		found = strcmp(a, addr) == 0;
	}
	dns_result_free(&r);
	return found;
}

static void
dnsctl_check_ptr(struct dnsctl *z)
{
	for (size_t i = 0; i < z->naddr; i++) {
		const char *a = z->addr[i];
		struct dns_result r;
		size_t j;

		if (z->private[i])
			continue;	/* said above: unreachable anyway */
		dnsctl_query(z, a, DNS_PTR, &r);
		if (r.status != DNS_OK) {
			dnsctl_fail(z, "PTR", a, &r, "no PTR record: many "
			    "receivers refuse mail from it (ask the provider "
			    "of the address for one naming the host)");
			dns_result_free(&r);
			continue;
		}
		for (j = 0; j < r.ntxt; j++)
			if (str_casecmp(r.txt[j], z->host) == 0)
				break;
		if (j < r.ntxt)
			dnsctl_say(z, "ok", "PTR", a, "%s (forward-confirmed)",
			    z->host);
		else if (dnsctl_resolves_to(z, r.txt[0], a))
			dnsctl_say(z, "wrong", "PTR", a, "names %s, not the "
			    "hostname %s (the HELO name should be the PTR "
			    "name)", r.txt[0], z->host);
		else
			dnsctl_say(z, "wrong", "PTR", a, "names %s, which does "
			    "not resolve back to %s (not forward-confirmed), "
			    "not %s", r.txt[0], a, z->host);
		dns_result_free(&r);
	}
}

/*
 * The SPF records at name (res kept for the caller); the number of them,
 * -1 when the lookup failed for now.  *rec is the first.
 */
static int
dnsctl_spf_records(struct dnsctl *z, const char *name,
    struct dns_result *r, const char **rec)
{
	int n = 0;

	*rec = NULL;
	dnsctl_query(z, name, DNS_TXT, r);
	if (r->status == DNS_TEMPFAIL)
		return -1;
	for (size_t i = 0; i < r->ntxt; i++)
		if (dnsrec_is_spf(r->txt[i]) && n++ == 0)
			*rec = r->txt[i];
	return n;
}

static int
dnsctl_seen(struct dnsctl *z, const char *name)
{
	for (size_t i = 0; i < z->nseen; i++)
		if (strcmp(z->seen[i], name) == 0)
			return 1;
	if (z->nseen < DNSCTL_SPF_RECORDS)
		str_copy(z->seen[z->nseen++], name, sizeof(z->seen[0]));
	return 0;
}

/*
 * Count the lookups of the records include: and redirect= lead to,
 * saying what is wrong with them on the way.  Adds to *lookups; returns
 * the number of problems found.
 */
static int
dnsctl_spf_follow(struct dnsctl *z, const char *top,
    const struct dnsrec_spf *s, int depth, int *lookups)
{
	int bad = 0;

	for (size_t i = 0; i < s->ntargets; i++) {
		const char *t = s->target[i], *rec, *why;
		struct dns_result r;
		struct dnsrec_spf sub;
		int n;

		if (dnsctl_seen(z, t) || z->nseen >= DNSCTL_SPF_RECORDS)
			continue;
		n = dnsctl_spf_records(z, t, &r, &rec);
		if (n != 1 || spf_record_check(rec, &why) == -1) {
			if (n == -1)
				dnsctl_say(z, "error", "SPF", top, "%s: lookup "
				    "failed (%s)", t, r.why ? r.why : "?");
			else
				dnsctl_say(z, "wrong", "SPF", top, "%s: %s "
				    "(permerror)", t, n == 0 ? "no SPF record" :
				    n > 1 ? "several SPF records" : why);
			dns_result_free(&r);
			bad++;
			continue;
		}
		dnsrec_spf_scan(rec, &sub);
		if (sub.all == '+') {
			dnsctl_say(z, "danger", "SPF", top, "%s ends in +all: "
			    "it passes every sender", t);
			bad++;
		}
		*lookups += sub.lookups;
		dns_result_free(&r);
		if (depth < DNSCTL_SPF_LIMIT)
			bad += dnsctl_spf_follow(z, top, &sub, depth + 1,
			    lookups);
	}
	return bad;
}

/* Does each of the host's addresses pass for sender (or HELO when "")? */
static int
dnsctl_spf_eval(struct dnsctl *z, const char *name, const char *sender)
{
	struct spf *spf = spf_new(z->dns, z->host);
	int bad = 0;

	if (spf == NULL) {
		dnsctl_say(z, "error", "SPF", name, "libspf2 set-up failed");
		return 1;
	}
	for (size_t i = 0; i < z->naddr; i++) {
		struct spf_request q = { .ip = z->addr[i], .helo = z->host,
		    .sender = sender };
		struct spf_verdict v;

		q.deadline_ms = dnsctl_now_ms() + (uint64_t)z->timeout_ms;
		spf_check(spf, &q, &v);
		if (v.result == SPF_PASS)
			continue;
		dnsctl_say(z, "wrong", "SPF", name, "this host's %s gets %s, "
		    "not pass (%s)", z->addr[i], spf_result_name(v.result),
		    v.reason);
		bad++;
	}
	spf_free(spf);
	return bad;
}

static void
dnsctl_check_spf(struct dnsctl *z, const char *name, const char *sender)
{
	struct dns_result r;
	struct dnsrec_spf s;
	const char *rec, *why;
	char *copy;
	int n, lookups, bad = 0;

	n = dnsctl_spf_records(z, name, &r, &rec);
	if (n <= 0) {
		dnsctl_fail(z, "SPF", name, &r, sender[0] ? "no SPF record: "
		    "anyone may send as the domain" : "no SPF record for the "
		    "HELO name: receivers check bounces against it");
		dns_result_free(&r);
		return;
	}
	if (n > 1) {
		dnsctl_say(z, "wrong", "SPF", name, "%d SPF records: "
		    "receivers get a permerror (publish one)", n);
		dns_result_free(&r);
		return;
	}
	if (spf_record_check(rec, &why) == -1) {
		dnsctl_say(z, "wrong", "SPF", name, "\"%s\": %s (permerror)",
		    rec, why);
		dns_result_free(&r);
		return;
	}
	copy = xstrdup(rec);
	dns_result_free(&r);
	dnsrec_spf_scan(copy, &s);
	if (s.all == '+' || s.all == '?') {
		dnsctl_say(z, "danger", "SPF", name, "ends in %call: mail "
		    "from anywhere %s", s.all, s.all == '+' ? "passes" :
		    "is neutral, never failed");
		bad++;
	} else if (s.all == 0 && s.ntargets == 0 && s.macro_targets == 0) {
		dnsctl_say(z, "danger", "SPF", name, "no -all or ~all: mail "
		    "from anywhere else is neutral");
		bad++;
	}
	if (s.ptr) {
		dnsctl_say(z, "danger", "SPF", name, "uses ptr, which RFC 7208 "
		    "5.5 says not to use: slow, and many receivers ignore it");
		bad++;
	}
	z->nseen = 0;
	(void)dnsctl_seen(z, name);
	lookups = s.lookups;
	bad += dnsctl_spf_follow(z, name, &s, 1, &lookups);
	if (lookups > DNSCTL_SPF_LIMIT) {
		dnsctl_say(z, "wrong", "SPF", name, "%s%d DNS-querying terms, "
		    "includes counted (more than %d: permerror)",
		    z->nseen >= DNSCTL_SPF_RECORDS ? "at least " : "", lookups,
		    DNSCTL_SPF_LIMIT);
		bad++;
	}
	if (bad == 0)
		bad += dnsctl_spf_eval(z, name, sender);
	if (bad == 0)
		dnsctl_say(z, "ok", "SPF", name, "\"%s\" (%d DNS-querying "
		    "term%s; this host passes)", copy, lookups,
		    lookups == 1 ? "" : "s");
	free(copy);
}

/* The one TXT record at name that pred accepts; its count (-1 tempfail). */
static int
dnsctl_txt_one(struct dnsctl *z, const char *name, int (*pred)(const char *),
    struct dns_result *r, const char **rec)
{
	int n = 0;

	*rec = NULL;
	dnsctl_query(z, name, DNS_TXT, r);
	if (r->status == DNS_TEMPFAIL)
		return -1;
	for (size_t i = 0; i < r->ntxt; i++)
		if ((pred == NULL || pred(r->txt[i])) && n++ == 0)
			*rec = r->txt[i];
	return n;
}

static void
dnsctl_check_key(struct dnsctl *z, const struct dkimkey *k)
{
	struct dnsrec_dkim got, want;
	struct dns_result r;
	struct buf name, txt;
	const char *rec, *why, *rwhy = NULL;
	int n, readable;

	buf_init(&name);
	buf_init(&txt);
	buf_printf(&name, "%s._domainkey.%s", k->selector, z->domain);
	memset(&want, 0, sizeof(want));
	readable = dnsctl_key_txt(k, &txt, &rwhy) == 0 &&
	    dnsrec_dkim_parse(txt.data, &want, &why) == 0;
	n = dnsctl_txt_one(z, name.data, NULL, &r, &rec);
	if (n <= 0)
		dnsctl_fail(z, "DKIM", name.data, &r, "no TXT record: "
		    "receivers cannot verify the signatures");
	else if (n > 1)
		dnsctl_say(z, "wrong", "DKIM", name.data, "%d TXT records: "
		    "publish one", n);
	else if (dnsrec_dkim_parse(rec, &got, &why) == -1) {
		dnsctl_say(z, "wrong", "DKIM", name.data, "not a usable key "
		    "record: %s", why);
		dnsrec_dkim_free(&got);
	} else {
		if (got.revoked)
			dnsctl_say(z, "wrong", "DKIM", name.data, "p= is "
			    "empty: the key is revoked");
		else if (got.alg == DKIM_ALG_RSA && got.bits < 1024)
			dnsctl_say(z, "danger", "DKIM", name.data, "an RSA key "
			    "of %d bits: verifiers refuse keys under 1024",
			    got.bits);
		else if (!readable)
			dnsctl_say(z, "error", "DKIM", name.data, "cannot "
			    "read %s: %s (run ternctl as root)", k->path,
			    rwhy ? rwhy : "not a key");
		else if (got.alg != want.alg || strcmp(got.p, want.p) != 0)
			dnsctl_say(z, "wrong", "DKIM", name.data, "does not "
			    "match the key in %s (publish what ternctl dns "
			    "prints)", k->path);
		else if (got.testing)
			dnsctl_say(z, "danger", "DKIM", name.data, "t=y: "
			    "receivers treat the signatures as testing only");
		else
			dnsctl_say(z, "ok", "DKIM", name.data, "%s, %d bits, "
			    "matches %s", dkim_alg_name(got.alg), got.bits,
			    k->path);
		dnsrec_dkim_free(&got);
	}
	dnsrec_dkim_free(&want);
	dns_result_free(&r);
	buf_free(&txt);
	buf_free(&name);
}

static void
dnsctl_check_dkim(struct dnsctl *z)
{
	if (dnsctl_nkeys(z) == 0) {
		dnsctl_say(z, "missing", "DKIM", z->domain, "no dkim-key for "
		    "the domain in the config: mail leaves unsigned (ternctl "
		    "dkim keygen %s SELECTOR)", z->domain);
		return;
	}
	for (size_t i = 0; i < z->c->ndkimkeys; i++)
		if (dnsctl_key_is(&z->c->dkimkeys[i], z->domain))
			dnsctl_check_key(z, &z->c->dkimkeys[i]);
}

static void
dnsctl_check_dmarc(struct dnsctl *z)
{
	struct dnsrec_dmarc m;
	struct dns_result r;
	struct buf name;
	const char *rec, *why;
	int n;

	buf_init(&name);
	buf_printf(&name, "_dmarc.%s", z->domain);
	n = dnsctl_txt_one(z, name.data, dnsrec_is_dmarc, &r, &rec);
	if (n <= 0)
		dnsctl_fail(z, "DMARC", name.data, &r, "no DMARC record: "
		    "receivers apply no policy and send no reports");
	else if (n > 1)
		dnsctl_say(z, "wrong", "DMARC", name.data, "%d DMARC records: "
		    "receivers then use none (publish one)", n);
	else if (dnsrec_dmarc_parse(rec, &m, &why) == -1)
		dnsctl_say(z, "wrong", "DMARC", name.data, "malformed: %s "
		    "(\"%s\")", why, rec);
	else if ((strcmp(m.p, "reject") == 0 || strcmp(m.sp, "reject") == 0)
	    && dnsctl_nkeys(z) == 0)
		dnsctl_say(z, "danger", "DMARC", name.data, "p=reject while no "
		    "dkim-key signs for %s: forwarded mail fails SPF and is "
		    "rejected", z->domain);
	else
		dnsctl_say(z, "ok", "DMARC", name.data, "p=%s%s, %d report "
		    "address%s", m.p, m.pct < 100 ? " (pct below 100)" : "",
		    m.nrua, m.nrua == 1 ? "" : "es");
	dns_result_free(&r);
	buf_free(&name);
}

static int
dnsctl_check(struct dnsctl *z)
{
	struct buf sender;
	char err[256];

	z->dns = spfdns_new(z->c->resolvers, z->c->resolverlen,
	    z->c->nresolvers, z->timeout_ms, err, sizeof(err));
	if (z->dns == NULL) {
		fprintf(stderr, "ternctl: %s\n", err);
		return 2;
	}
	dnsctl_check_mx(z);
	dnsctl_check_addrs(z);
	dnsctl_check_ptr(z);
	buf_init(&sender);
	buf_printf(&sender, "postmaster@%s", z->domain);
	dnsctl_check_spf(z, z->domain, sender.data);
	buf_free(&sender);
	if (str_casecmp(z->host, z->domain) != 0)
		dnsctl_check_spf(z, z->host, "");
	dnsctl_check_dkim(z);
	dnsctl_check_dmarc(z);
	spfdns_free(z->dns);
	printf("; %d problem%s\n", z->problems, z->problems == 1 ? "" : "s");
	return z->problems ? 1 : 0;
}

/* ternctl dns DOMAIN [--check] */
int
dnsctl_main(const struct conf *c, int argc, char *argv[])
{
	struct dnsctl z;
	const char *arg = NULL, *why;
	char domain[256], host[256];
	int check = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check") == 0)
			check = 1;
		else if (argv[i][0] == '-' || arg != NULL)
			dnsctl_usage();
		else
			arg = argv[i];
	}
	if (arg == NULL)
		dnsctl_usage();
	if (addr_domain_ascii(arg, domain, sizeof(domain), &why) == -1) {
		fprintf(stderr, "ternctl: bad domain \"%s\": %s\n", arg, why);
		return 2;
	}
	if (strchr(domain, '.') == NULL) {
		fprintf(stderr, "ternctl: %s is not a domain of the public "
		    "DNS\n", arg);
		return 2;
	}
	if (!conf_is_local_domain(c, arg) && !conf_is_local_domain(c, domain)) {
		fprintf(stderr, "ternctl: %s is not a local-domain of %s: "
		    "its records are not this server's to give\n", arg,
		    c->file);
		return 2;
	}
	str_copy(host, conf_str(c, K_HOSTNAME), sizeof(host));
	str_lower(host);
	if (strchr(host, '.') == NULL) {
		fprintf(stderr, "ternctl: hostname \"%s\" is not a fully "
		    "qualified name: set hostname in %s\n", host, c->file);
		return 2;
	}
	memset(&z, 0, sizeof(z));
	z.c = c;
	z.domain = domain;
	z.host = host;
	z.timeout_ms = (int)conf_num(c, NULL, K_SPF_TIMEOUT);
	return check ? dnsctl_check(&z) : dnsctl_print(&z);
}
