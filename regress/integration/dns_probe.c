/*
 * dns_probe: runs lookups through dns/ on a libevent loop against the
 * servers given, for test_dns.py (which compiles it against libtern.a).
 *
 *   dns_probe [-v] [-t timeout_ms] [-a attempts] [-r rounds] [-w wait_ms]
 *       [-K anchor] [-n answers] [-C] servers ports type name...
 *
 * servers and ports are comma-separated lists of equal length.  Every
 * round looks up all names at once and waits for all of them; one line
 * per answer (rounds wait_ms apart), tab-separated, tabs and newlines in values escaped:
 *
 *   round  name  type  status  ttl  sec  why  value...
 *
 * with values "pref:host" for MX, addresses for A/AAAA, strings for TXT
 * and PTR, sec "insecure", "secure" or "bogus".  -K validates DNSSEC from
 * the trust anchor file given.  -n ends a round once that many answers
 * came (the rest are cancelled, "unanswered <n>").  The last line is "hits <n>" (answers
 * libunbound gave at once: cache, local data).  -C (cancel)
 * first starts and cancels every lookup, runs the loop for the longest a
 * flight can take and prints "cancelled <callbacks>"; then the rounds;
 * then lookups that come from the cache are cancelled too, printing
 * "cancelled-cached <callbacks>".  The exit status is 0 unless something
 * went wrong in the probe itself.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "dns/dns.h"
#include "lib/log.h"
#include "lib/util.h"

static struct event_base *base;
static int outstanding, round_no, stray, enough;
static enum dns_type qtype;

static const char *
status_name(enum dns_status s)
{
	switch (s) {
	case DNS_OK:
		return "OK";
	case DNS_NODATA:
		return "NODATA";
	case DNS_NXDOMAIN:
		return "NXDOMAIN";
	case DNS_TEMPFAIL:
		return "TEMPFAIL";
	}
	return "?";
}

static void
put_escaped(const char *s)
{
	for (; *s; s++) {
		if (*s == '\t')
			fputs("\\t", stdout);
		else if (*s == '\n')
			fputs("\\n", stdout);
		else if (*s == '\\')
			fputs("\\\\", stdout);
		else
			putchar(*s);
	}
}

static void
answer_cb(const struct dns_result *r, void *arg)
{
	const char *name = arg;
	char a[INET6_ADDRSTRLEN];

	printf("%d\t%s\t%s\t%s\t%u\t%s\t", round_no, name,
	    qtype == DNS_MX ? "MX" : qtype == DNS_A ? "A" : qtype == DNS_AAAA ?
	    "AAAA" : qtype == DNS_TXT ? "TXT" : "PTR", status_name(r->status),
	    r->ttl, r->sec == DNS_SEC_SECURE ? "secure" :
	    r->sec == DNS_SEC_BOGUS ? "bogus" : "insecure");
	put_escaped(r->why ? r->why : "");
	for (size_t i = 0; i < r->nmx; i++)
		printf("\t%u:%s", r->mx[i].pref, r->mx[i].host);
	for (size_t i = 0; i < r->naddr; i++) {
		const struct sockaddr_storage *ss = &r->addr[i];
		const void *p = ss->ss_family == AF_INET ?
		    (const void *)&((const struct sockaddr_in *)ss)->sin_addr :
		    (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;

		printf("\t%s", inet_ntop(ss->ss_family, p, a, sizeof(a)) ?
		    a : "?");
	}
	for (size_t i = 0; i < r->ntxt; i++) {
		putchar('\t');
		put_escaped(r->txt[i]);
	}
	putchar('\n');
	fflush(stdout);
	if (--outstanding == 0 || --enough == 0)
		event_base_loopbreak(base);
}

static void
stray_cb(const struct dns_result *r, void *arg)
{
	stray++;
}

static void
run_for(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static int
servers_parse(char *hosts, char *ports, struct dns_server *srv, size_t max,
    size_t *n)
{
	char *h, *p, *hn, *pn;
	long long port;

	*n = 0;
	for (h = hosts, p = ports; h && p; h = hn, p = pn) {
		struct dns_server *s = &srv[*n];

		if (*n == max)
			return -1;
		if ((hn = strchr(h, ',')) != NULL)
			*hn++ = '\0';
		if ((pn = strchr(p, ',')) != NULL)
			*pn++ = '\0';
		if (parse_ll(p, 1, 65535, &port) == -1)
			return -1;
		memset(s, 0, sizeof(*s));
		if (inet_pton(AF_INET, h,
		    &((struct sockaddr_in *)&s->ss)->sin_addr) == 1) {
			((struct sockaddr_in *)&s->ss)->sin_family = AF_INET;
			((struct sockaddr_in *)&s->ss)->sin_port =
			    htons((uint16_t)port);
			s->sslen = sizeof(struct sockaddr_in);
		} else if (inet_pton(AF_INET6, h,
		    &((struct sockaddr_in6 *)&s->ss)->sin6_addr) == 1) {
			((struct sockaddr_in6 *)&s->ss)->sin6_family = AF_INET6;
			((struct sockaddr_in6 *)&s->ss)->sin6_port =
			    htons((uint16_t)port);
			s->sslen = sizeof(struct sockaddr_in6);
		} else
			return -1;
		(*n)++;
	}
	return (h || p) ? -1 : 0;
}

static int
type_parse(const char *s, enum dns_type *t)
{
	static const struct {
		const char	*name;
		enum dns_type	 type;
	} types[] = { { "A", DNS_A }, { "AAAA", DNS_AAAA }, { "MX", DNS_MX },
	    { "TXT", DNS_TXT }, { "PTR", DNS_PTR } };

	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(s, types[i].name) == 0) {
			*t = types[i].type;
			return 0;
		}
	return -1;
}

static void
usage(void)
{
	fprintf(stderr, "usage: dns_probe [-vC] [-t ms] [-a attempts] "
	    "[-r rounds] [-w ms] [-K anchor] servers ports type name...\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct dns_server srv[8];
	size_t nsrv;
	long long timeout = 500, attempts = 1, rounds = 2, wait = 0, want = 0;
	struct dns_query *qs[64];
	int c, verbose = 0, cancel = 0, nnames;
	char **names;

	while ((c = getopt(argc, argv, "a:CK:n:r:t:vw:")) != -1) {
		switch (c) {
		case 'n':
			if (parse_ll(optarg, 1, 64, &want) == -1)
				usage();
			break;
		case 'K':
			dns_trust_anchor(optarg);
			break;
		case 'a':
			if (parse_ll(optarg, 1, 10, &attempts) == -1)
				usage();
			break;
		case 'C':
			cancel = 1;
			break;
		case 'r':
			if (parse_ll(optarg, 0, 10, &rounds) == -1)
				usage();
			break;
		case 't':
			if (parse_ll(optarg, 1, 60000, &timeout) == -1)
				usage();
			break;
		case 'v':
			verbose = 1;
			break;
		case 'w':
			if (parse_ll(optarg, 0, 60000, &wait) == -1)
				usage();
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 4 || servers_parse(argv[0], argv[1], srv, 8, &nsrv) == -1 ||
	    type_parse(argv[2], &qtype) == -1)
		usage();
	names = argv + 3;
	nnames = argc - 3;
	if (nnames > 64)
		usage();
	log_init("dns_probe", 1, verbose);
	if ((base = event_base_new()) == NULL ||
	    dns_init(base, srv, nsrv, (int)timeout, (int)attempts) == -1) {
		fprintf(stderr, "dns_probe: init failed\n");
		return 1;
	}
	if (cancel) {
		for (int i = 0; i < nnames; i++) {
			struct dns_query *q = dns_lookup(names[i], qtype,
			    stray_cb, NULL);

			if (q == NULL) {
				fprintf(stderr, "invalid name %s\n", names[i]);
				return 1;
			}
			dns_cancel(q);
		}
		run_for((int)(timeout * attempts * (long long)nsrv) + 300);
		printf("cancelled\t%d\n", stray);
	}
	for (round_no = 1; round_no <= rounds; round_no++) {
		if (round_no > 1 && wait > 0)
			run_for((int)wait);
		outstanding = 0;
		enough = want ? (int)want : -1;
		for (int i = 0; i < nnames; i++) {
			qs[i] = dns_lookup(names[i], qtype, answer_cb,
			    names[i]);
			if (qs[i] == NULL) {
				printf("%d\t%s\t%s\tINVALID\n", round_no,
				    names[i], argv[2]);
				continue;
			}
			outstanding++;
		}
		if (outstanding > 0)
			event_base_dispatch(base);
		if (want && outstanding > 0) {
			/* the answered ones are gone: only cancel the rest */
			printf("unanswered\t%d\n", outstanding);
			dns_shutdown();
			return 0;
		}
	}
	if (cancel) {
		stray = 0;
		for (int i = 0; i < nnames; i++)
			dns_cancel(dns_lookup(names[i], qtype, stray_cb, NULL));
		run_for(100);
		printf("cancelled-cached\t%d\n", stray);
	}
	printf("hits\t%zu\n", dns_cache_hits());
	dns_shutdown();
	event_base_free(base);
	return 0;
}
