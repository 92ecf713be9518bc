/*
 * fuzz_dns: the DNS response parser on arbitrary bytes, as the answer to
 * each query type.  The id is taken from the packet so the parser gets
 * past the header; the names are the ones the seeds ask for.  A parsed
 * result must keep the promises of dns.h.
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dns/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
host_check(const char *h)
{
	size_t n = strlen(h);

	if (n > 253 || (n > 0 && h[n - 1] == '.'))
		abort();
	for (; *h; h++)
		if (!((*h >= 'a' && *h <= 'z') || (*h >= '0' && *h <= '9') ||
		    *h == '-' || *h == '_' || *h == '.'))
			abort();
}

static void
result_check(const struct dns_result *r, enum dns_type t)
{
	struct dns_result c;

	if (r->status == DNS_OK && r->nmx + r->naddr + r->ntxt == 0)
		abort();
	if (r->status != DNS_OK && r->nmx + r->naddr + r->ntxt != 0)
		abort();
	if (r->status == DNS_OK && r->ttl > 86400)
		abort();
	if ((r->status == DNS_NXDOMAIN || r->status == DNS_NODATA) &&
	    r->ttl > 10800)
		abort();
	if (r->why == NULL)
		abort();
	for (size_t i = 0; i < r->nmx; i++) {
		host_check(r->mx[i].host);
		if (i > 0 && r->mx[i - 1].pref > r->mx[i].pref)
			abort();
	}
	for (size_t i = 0; i < r->naddr; i++) {
		int fam = r->addr[i].ss_family;

		if (fam != (t == DNS_A ? AF_INET : AF_INET6))
			abort();
		if (fam == AF_INET &&
		    ((const struct sockaddr_in *)&r->addr[i])->sin_port != 0)
			abort();
	}
	for (size_t i = 0; i < r->ntxt; i++)
		if (t == DNS_PTR)
			host_check(r->txt[i]);
	if ((r->nmx && t != DNS_MX) || (r->naddr && t != DNS_A &&
	    t != DNS_AAAA) || (r->ntxt && t != DNS_TXT && t != DNS_PTR))
		abort();
	dns_result_copy(&c, r);
	dns_result_free(&c);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct {
		const char	*name;
		enum dns_type	 type;
	} q[] = {
		{ "example.test", DNS_MX },
		{ "example.test", DNS_A },
		{ "example.test", DNS_AAAA },
		{ "example.test", DNS_TXT },
		{ "_dmarc.example.test", DNS_TXT },
		{ "alias.example.test", DNS_MX },
		{ "nx.example.test", DNS_MX },
		{ "127.0.0.2", DNS_PTR },
		{ "2001:db8::1", DNS_PTR },
	};
	struct dns_result r;
	uint16_t id;
	int tc;

	if (size < 2)
		id = 0;
	else
		id = (uint16_t)(data[0] << 8 | data[1]);
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++) {
		if (dns_parse_response(data, size, id, q[i].name, q[i].type, &r,
		    &tc) == -1) {
			if (r.nmx || r.naddr || r.ntxt || r.mx || r.addr ||
			    r.txt)
				abort();
			continue;
		}
		result_check(&r, q[i].type);
		dns_result_free(&r);
	}
	return 0;
}
