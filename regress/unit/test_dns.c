/*
 * test_dns: the DNS wire format (query names, query encoding, the
 * response parser on hand-built packets, good and hostile) and the
 * resolver's event-loop contract against a tiny UDP responder in-process.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "dns/dns.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_dns(void);

/* ---- a tiny packet builder ------------------------------------------ */

struct pb {
	unsigned char	b[4096];
	size_t		len;
};

static void
pb_u8(struct pb *p, unsigned v)
{
	p->b[p->len++] = (unsigned char)v;
}

static void
pb_u16(struct pb *p, unsigned v)
{
	pb_u8(p, v >> 8 & 0xff);
	pb_u8(p, v & 0xff);
}

static void
pb_u32(struct pb *p, uint32_t v)
{
	pb_u16(p, v >> 16);
	pb_u16(p, v & 0xffff);
}

static void
pb_bytes(struct pb *p, const void *d, size_t n)
{
	memcpy(p->b + p->len, d, n);
	p->len += n;
}

/* Labels of a dotted name, no terminator. */
static void
pb_labels(struct pb *p, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t n = dot ? (size_t)(dot - name) : strlen(name);

		pb_u8(p, (unsigned)n);
		pb_bytes(p, name, n);
		name += n + (dot != NULL);
	}
}

static void
pb_name(struct pb *p, const char *name)
{
	pb_labels(p, name);
	pb_u8(p, 0);
}

/* Labels then a compression pointer to off. */
static void
pb_nameptr(struct pb *p, const char *labels, unsigned off)
{
	pb_labels(p, labels);
	pb_u16(p, 0xc000 | off);
}

static void
pb_header(struct pb *p, unsigned id, unsigned flags, unsigned qd,
    unsigned an, unsigned ns, unsigned ar)
{
	p->len = 0;
	pb_u16(p, id);
	pb_u16(p, flags);
	pb_u16(p, qd);
	pb_u16(p, an);
	pb_u16(p, ns);
	pb_u16(p, ar);
}

static void
pb_question(struct pb *p, const char *name, unsigned type)
{
	pb_name(p, name);
	pb_u16(p, type);
	pb_u16(p, 1);
}

/* Type, class IN, ttl; returns where rdlength goes (fill with pb_end). */
static size_t
pb_rr(struct pb *p, unsigned type, uint32_t ttl)
{
	size_t at;

	pb_u16(p, type);
	pb_u16(p, 1);
	pb_u32(p, ttl);
	at = p->len;
	pb_u16(p, 0);
	return at;
}

static void
pb_end(struct pb *p, size_t at)
{
	size_t n = p->len - at - 2;

	p->b[at] = (unsigned char)(n >> 8);
	p->b[at + 1] = (unsigned char)n;
}

static void
pb_soa(struct pb *p, uint32_t ttl, uint32_t minimum)
{
	size_t at;

	/* example.test inside the question nx.example.test */
	pb_nameptr(p, "", 12 + 3);
	at = pb_rr(p, 6, ttl);
	pb_nameptr(p, "ns", 12 + 3);
	pb_nameptr(p, "hostmaster", 12 + 3);
	pb_u32(p, 2024010101);
	pb_u32(p, 3600);
	pb_u32(p, 600);
	pb_u32(p, 86400);
	pb_u32(p, minimum);
	pb_end(p, at);
}

#define QR	0x8180		/* QR, RD, RA */
#define ID	0x4242

static int
parse(const struct pb *p, const char *name, enum dns_type t,
    struct dns_result *r, int *tc)
{
	/* an exact-size copy, so ASan sees any read past the end */
	unsigned char *copy = xmalloc(p->len ? p->len : 1);
	int rc;

	memcpy(copy, p->b, p->len);
	rc = dns_parse_response(copy, p->len, ID, name, t, r, tc);
	free(copy);
	return rc;
}

static int
addr_is(const struct sockaddr_storage *ss, const char *want)
{
	char buf[INET6_ADDRSTRLEN];
	const void *a;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)ss;

		if (sin->sin_port != 0)
			return 0;
		a = &sin->sin_addr;
	} else {
		const struct sockaddr_in6 *sin6 = (const void *)ss;

		if (sin6->sin6_port != 0)
			return 0;
		a = &sin6->sin6_addr;
	}
	return inet_ntop(ss->ss_family, a, buf, sizeof(buf)) != NULL &&
	    strcmp(buf, want) == 0;
}

/* ---- names and encoding --------------------------------------------- */

static void
test_names(void)
{
	char out[256], big[300];

	CHECK(dns_query_name("Example.TEST.", DNS_MX, out, sizeof(out)) == 0 &&
	    strcmp(out, "example.test") == 0);
	CHECK(dns_query_name("_dmarc.example.test", DNS_TXT, out,
	    sizeof(out)) == 0 && strcmp(out, "_dmarc.example.test") == 0);
	CHECK(dns_query_name("", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name(".", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("a..b", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name(".a.b", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("a.b..", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("exa mple.test", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("a/b.test", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("caf\xc3\xa9.test", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("x\ny.test", DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name(NULL, DNS_A, out, sizeof(out)) == -1);
	memset(big, 'a', 63);
	str_copy(big + 63, ".test", 10);
	CHECK(dns_query_name(big, DNS_A, out, sizeof(out)) == 0);
	memset(big, 'a', 64);
	str_copy(big + 64, ".test", 10);
	CHECK(dns_query_name(big, DNS_A, out, sizeof(out)) == -1);
	/* 253 characters pass, 254 do not */
	for (int i = 0; i < 253; i++)
		big[i] = i % 2 ? '.' : 'a';
	big[253] = '\0';
	CHECK(dns_query_name(big, DNS_A, out, sizeof(out)) == 0);
	big[253] = 'a';
	big[254] = '\0';
	CHECK(dns_query_name(big, DNS_A, out, sizeof(out)) == -1);
	CHECK(dns_query_name("example.test", DNS_A, out, 5) == -1);

	CHECK(dns_query_name("127.0.0.2", DNS_PTR, out, sizeof(out)) == 0 &&
	    strcmp(out, "2.0.0.127.in-addr.arpa") == 0);
	CHECK(dns_query_name("2001:db8::1", DNS_PTR, out, sizeof(out)) == 0 &&
	    strcmp(out, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0."
	    "8.b.d.0.1.0.0.2.ip6.arpa") == 0);
	CHECK(dns_query_name("::1", DNS_PTR, out, sizeof(out)) == 0 &&
	    strncmp(out, "1.0.0.0.", 8) == 0 && strlen(out) == 72);
	CHECK(dns_query_name("2.0.0.127.IN-ADDR.arpa", DNS_PTR, out,
	    sizeof(out)) == 0 && strcmp(out, "2.0.0.127.in-addr.arpa") == 0);
	CHECK(dns_query_name("2001:db8::zz", DNS_PTR, out, sizeof(out)) == -1);
	CHECK(dns_query_name("[::1]", DNS_PTR, out, sizeof(out)) == -1);
}

static void
test_encode(void)
{
	unsigned char q[512];
	struct dns_result r;
	struct pb p;
	size_t len, qend;
	int tc;
	static const unsigned char want[] = {
		0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1,
		7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 4, 't', 'e', 's', 't', 0,
		0, 15, 0, 1,
		0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0 };

	CHECK(dns_encode_query(0x1234, "Example.TEST.", DNS_MX, q, sizeof(q),
	    &len) == 0);
	CHECK(len == sizeof(want) && memcmp(q, want, len) == 0);
	CHECK(dns_encode_query(1, "example.test", DNS_MX, q, len - 1,
	    &len) == -1);
	CHECK(dns_encode_query(1, "bad name", DNS_MX, q, sizeof(q),
	    &len) == -1);
	CHECK(dns_encode_query(1, "example.test", (enum dns_type)99, q,
	    sizeof(q), &len) == -1);
	CHECK(dns_encode_query(1, "127.0.0.2", DNS_PTR, q, sizeof(q),
	    &len) == 0 && q[12] == 1 && q[13] == '2' &&
	    memcmp(q + 22, "\7in-addr\4arpa\0\0\14", 16) == 0);

	/* round trip: the query becomes a response with one MX */
	CHECK(dns_encode_query(ID, "example.test", DNS_MX, q, sizeof(q),
	    &len) == 0);
	qend = len - 11;		/* drop our OPT */
	memcpy(p.b, q, qend);
	p.len = qend;
	p.b[2] = 0x81;
	p.b[3] = 0x80;
	p.b[7] = 1;			/* ANCOUNT */
	p.b[11] = 0;			/* ARCOUNT */
	pb_u16(&p, 0xc00c);
	{
		size_t at = pb_rr(&p, 15, 3600);

		pb_u16(&p, 10);
		pb_nameptr(&p, "mx", 12);
		pb_end(&p, at);
	}
	CHECK(parse(&p, "EXAMPLE.test", DNS_MX, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && tc == 0 && r.nmx == 1 && r.ttl == 3600);
	CHECK(r.nmx == 1 && strcmp(r.mx[0].host, "mx.example.test") == 0 &&
	    r.mx[0].pref == 10);
	dns_result_free(&r);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	CHECK(parse(&p, "other.test", DNS_MX, &r, &tc) == -1);
}

/* ---- parser tables -------------------------------------------------- */

/* MX example.test: prefs 20, 10, 10, compressed, mixed case, and an OPT */
static void
build_mx(struct pb *p)
{
	size_t at;

	pb_header(p, ID, QR, 1, 3, 0, 1);
	pb_question(p, "example.test", 15);
	pb_u16(p, 0xc00c);
	at = pb_rr(p, 15, 300);
	pb_u16(p, 20);
	pb_nameptr(p, "backup", 12);
	pb_end(p, at);
	pb_u16(p, 0xc00c);
	at = pb_rr(p, 15, 100);
	pb_u16(p, 10);
	pb_nameptr(p, "MX1", 12);
	pb_end(p, at);
	pb_u16(p, 0xc00c);
	at = pb_rr(p, 15, 200);
	pb_u16(p, 10);
	pb_name(p, "mx2.Example.Test");
	pb_end(p, at);
	pb_u8(p, 0);			/* OPT */
	pb_u16(p, 41);
	pb_u16(p, 1232);
	pb_u32(p, 0);
	pb_u16(p, 0);
}

static void
test_types(void)
{
	struct dns_result r, c;
	struct pb p;
	size_t at;
	int tc;

	build_mx(&p);
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.nmx == 3 && r.ttl == 100);
	if (r.nmx == 3) {
		CHECK(strcmp(r.mx[0].host, "mx1.example.test") == 0);
		CHECK(strcmp(r.mx[1].host, "mx2.example.test") == 0);
		CHECK(strcmp(r.mx[2].host, "backup.example.test") == 0);
		CHECK(r.mx[0].pref == 10 && r.mx[1].pref == 10 &&
		    r.mx[2].pref == 20);
	}
	dns_result_copy(&c, &r);
	dns_result_free(&r);
	CHECK(c.nmx == 3 && strcmp(c.mx[2].host, "backup.example.test") == 0);
	dns_result_free(&c);
	CHECK(c.mx == NULL && c.nmx == 0);

	/* A: two records, the smaller TTL wins; a type we did not ask for */
	pb_header(&p, ID, QR, 1, 3, 0, 0);
	pb_question(&p, "example.test", 1);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\x00\x00\x02", 4);
	pb_end(&p, at);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 16, 5);
	pb_bytes(&p, "\3abc", 4);
	pb_end(&p, at);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 30);
	pb_bytes(&p, "\xc0\x00\x02\x01", 4);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.naddr == 2 && r.ttl == 30);
	CHECK(r.naddr == 2 && addr_is(&r.addr[0], "127.0.0.2") &&
	    addr_is(&r.addr[1], "192.0.2.1"));
	dns_result_free(&r);

	/* AAAA */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 28);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 28, 0x80000000U);	/* RFC 2181: zero */
	pb_bytes(&p, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_AAAA, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.naddr == 1 && r.ttl == 0 &&
	    r.addr[0].ss_family == AF_INET6 &&
	    addr_is(&r.addr[0], "2001:db8::1"));
	dns_result_free(&r);

	/* TXT: strings of one record joined, records apart, empty strings */
	pb_header(&p, ID, QR, 1, 2, 0, 0);
	pb_question(&p, "example.test", 16);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 16, 3600);
	pb_bytes(&p, "\7v=spf1 \x0cinclude:a.b \0\4-all", 27);
	pb_end(&p, at);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 16, 3600);
	pb_bytes(&p, "\5other", 6);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_TXT, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.ntxt == 2);
	CHECK(r.ntxt == 2 && strcmp(r.txt[0], "v=spf1 include:a.b -all") == 0 &&
	    strcmp(r.txt[1], "other") == 0);
	dns_result_free(&r);

	/* PTR for an address literal */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "2.0.0.127.in-addr.arpa", 12);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 12, 86400 * 7);
	pb_name(&p, "Host.Example.TEST");
	pb_end(&p, at);
	CHECK(parse(&p, "127.0.0.2", DNS_PTR, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.ntxt == 1 && r.ttl == 86400 &&
	    strcmp(r.txt[0], "host.example.test") == 0);
	dns_result_free(&r);
	CHECK(parse(&p, "127.0.0.3", DNS_PTR, &r, &tc) == -1);

	/* a question echoed in another case still matches (0x20) */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "ExAmPlE.TeSt", 1);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\x00\x00\x02", 4);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0 &&
	    r.status == DNS_OK && r.naddr == 1);
	dns_result_free(&r);
}

static void
test_negative(void)
{
	struct dns_result r;
	struct pb p;
	size_t at;
	int tc;

	/* NXDOMAIN: min(SOA TTL, MINIMUM) */
	pb_header(&p, ID, 0x8183, 1, 0, 1, 0);
	pb_question(&p, "nx.example.test", 15);
	pb_soa(&p, 3600, 600);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == 0);
	CHECK(r.status == DNS_NXDOMAIN && r.ttl == 600 && r.nmx == 0);
	dns_result_free(&r);
	pb_header(&p, ID, 0x8183, 1, 0, 1, 0);
	pb_question(&p, "nx.example.test", 15);
	pb_soa(&p, 60, 600);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == 0 &&
	    r.status == DNS_NXDOMAIN && r.ttl == 60);
	dns_result_free(&r);
	/* capped at 3 hours */
	pb_header(&p, ID, 0x8183, 1, 0, 1, 0);
	pb_question(&p, "nx.example.test", 15);
	pb_soa(&p, 86400, 86400);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == 0 &&
	    r.ttl == 10800);
	dns_result_free(&r);
	/* no SOA: five minutes */
	pb_header(&p, ID, 0x8183, 1, 0, 0, 0);
	pb_question(&p, "nx.example.test", 15);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == 0 &&
	    r.status == DNS_NXDOMAIN && r.ttl == 300);
	dns_result_free(&r);
	/* a malformed SOA fails the packet */
	pb_header(&p, ID, 0x8183, 1, 0, 1, 0);
	pb_question(&p, "nx.example.test", 15);
	pb_u16(&p, 0xc00f);
	at = pb_rr(&p, 6, 60);
	pb_name(&p, "ns.example.test");
	pb_name(&p, "h.example.test");
	pb_u32(&p, 1);
	pb_end(&p, at);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == -1);

	/* NODATA: NOERROR, answers of another type only, SOA */
	pb_header(&p, ID, QR, 1, 1, 1, 0);
	pb_question(&p, "nx.example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\0\0\1", 4);
	pb_end(&p, at);
	pb_soa(&p, 900, 1200);
	CHECK(parse(&p, "nx.example.test", DNS_MX, &r, &tc) == 0);
	CHECK(r.status == DNS_NODATA && r.ttl == 900);
	dns_result_free(&r);

	/* SERVFAIL, REFUSED, FORMERR: temporary */
	pb_header(&p, ID, 0x8182, 1, 0, 0, 0);
	pb_question(&p, "example.test", 1);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0 &&
	    r.status == DNS_TEMPFAIL && strcmp(r.why, "servfail") == 0);
	pb_header(&p, ID, 0x8185, 1, 0, 0, 0);
	pb_question(&p, "example.test", 1);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0 &&
	    r.status == DNS_TEMPFAIL && strcmp(r.why, "refused") == 0);
	pb_header(&p, ID, 0x8181, 0, 0, 0, 0);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0 &&
	    r.status == DNS_TEMPFAIL && strcmp(r.why, "formerr") == 0);

	/* TC=1 */
	pb_header(&p, ID, 0x8380, 1, 0, 0, 0);
	pb_question(&p, "example.test", 16);
	CHECK(parse(&p, "example.test", DNS_TXT, &r, &tc) == 0 && tc == 1 &&
	    r.status == DNS_TEMPFAIL);
	CHECK(parse(&p, "example.test", DNS_TXT, &r, NULL) == 0);
}

static void
test_cname(void)
{
	struct dns_result r;
	struct pb p;
	size_t at, target;
	int tc;

	/* alias.example.test CNAME target.example.test, target MX */
	pb_header(&p, ID, QR, 1, 3, 0, 0);
	pb_question(&p, "alias.example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 5, 120);
	target = p.len;
	pb_nameptr(&p, "target", 12 + 6);
	pb_end(&p, at);
	pb_u16(&p, 0xc00c);		/* a record for the alias itself */
	at = pb_rr(&p, 15, 999);	/* (illegal beside a CNAME: ignored */
	pb_u16(&p, 1);			/* only if records of the type win) */
	pb_nameptr(&p, "wrong", 12 + 6);
	pb_end(&p, at);
	pb_u16(&p, 0xc000 | target);
	at = pb_rr(&p, 15, 3600);
	pb_u16(&p, 5);
	pb_nameptr(&p, "mx", 12 + 6);
	pb_end(&p, at);
	CHECK(parse(&p, "alias.example.test", DNS_MX, &r, &tc) == 0);
	/* the alias owns an MX itself, so that one is the answer */
	CHECK(r.status == DNS_OK && r.nmx == 1 &&
	    strcmp(r.mx[0].host, "wrong.example.test") == 0);
	dns_result_free(&r);

	pb_header(&p, ID, QR, 1, 3, 0, 0);
	pb_question(&p, "alias.example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 5, 120);
	target = p.len;
	pb_nameptr(&p, "target", 12 + 6);
	pb_end(&p, at);
	pb_name(&p, "unrelated.test");
	at = pb_rr(&p, 15, 999);
	pb_u16(&p, 1);
	pb_name(&p, "nope.test");
	pb_end(&p, at);
	pb_u16(&p, 0xc000 | target);
	at = pb_rr(&p, 15, 3600);
	pb_u16(&p, 5);
	pb_nameptr(&p, "mx", 12 + 6);
	pb_end(&p, at);
	CHECK(parse(&p, "alias.example.test", DNS_MX, &r, &tc) == 0);
	CHECK(r.status == DNS_OK && r.nmx == 1 && r.ttl == 120 &&
	    strcmp(r.mx[0].host, "mx.example.test") == 0 && r.mx[0].pref == 5);
	dns_result_free(&r);

	/* a CNAME to nothing here: NODATA for the target */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "alias.example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 5, 120);
	pb_nameptr(&p, "target", 12 + 6);
	pb_end(&p, at);
	CHECK(parse(&p, "alias.example.test", DNS_MX, &r, &tc) == 0 &&
	    r.status == DNS_NODATA);
	/* ... and with NXDOMAIN, the target does not exist */
	p.b[3] = 0x83;
	CHECK(parse(&p, "alias.example.test", DNS_MX, &r, &tc) == 0 &&
	    r.status == DNS_NXDOMAIN);

	/* a loop: a -> b -> a */
	pb_header(&p, ID, QR, 1, 2, 0, 0);
	pb_question(&p, "a.example.test", 1);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 5, 60);
	target = p.len;
	pb_nameptr(&p, "b", 12 + 2);
	pb_end(&p, at);
	pb_u16(&p, 0xc000 | target);
	at = pb_rr(&p, 5, 60);
	pb_u16(&p, 0xc00c);
	pb_end(&p, at);
	CHECK(parse(&p, "a.example.test", DNS_A, &r, &tc) == 0 &&
	    r.status == DNS_TEMPFAIL);
	dns_result_free(&r);

	/* a CNAME whose target runs past its rdata */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "alias.example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 5, 120);
	pb_nameptr(&p, "target", 12 + 6);
	pb_end(&p, at);
	p.b[at + 1] -= 2;
	CHECK(parse(&p, "alias.example.test", DNS_MX, &r, &tc) == -1);
}

static void
test_hostile(void)
{
	struct dns_result r;
	struct pb p, good;
	size_t at, loop;
	int tc, fails;

	/* every prefix of a good packet fails cleanly */
	build_mx(&good);
	fails = 0;
	for (size_t n = 0; n < good.len; n++) {
		p = good;
		p.len = n;
		if (parse(&p, "example.test", DNS_MX, &r, &tc) == -1 &&
		    r.nmx == 0 && r.mx == NULL)
			fails++;
		else
			dns_result_free(&r);
	}
	CHECK((size_t)fails == good.len);

	/* wrong id, not a response, a query opcode we did not send */
	p = good;
	p.b[1] ^= 1;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[2] &= 0x7f;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[2] |= 0x10;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	/* wrong question: name, type, class, count */
	CHECK(parse(&good, "example.tesu", DNS_MX, &r, &tc) == -1);
	CHECK(parse(&good, "www.example.test", DNS_MX, &r, &tc) == -1);
	CHECK(parse(&good, "example.test", DNS_TXT, &r, &tc) == -1);
	p = good;
	p.b[12 + 14 + 3] = 3;		/* class CH */
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[5] = 2;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[5] = 0;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	/* more records claimed than present */
	p = good;
	p.b[7] = 4;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[9] = 1;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[7] = 0xff;
	p.b[6] = 0xff;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	/* trailing bytes after the last section are ignored */
	p = good;
	pb_bytes(&p, "junk", 4);
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == 0 && r.nmx == 3);
	dns_result_free(&r);

	/* rdlength past the end of the packet */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 1);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\0\0\1", 4);
	pb_end(&p, at);
	p.b[at + 1] = 5;
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	p.b[at + 1] = 3;		/* short A */
	p.len--;
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);

	/* pointer loops: to itself, forward, two pointers in a cycle */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 1);
	loop = p.len;
	pb_u16(&p, 0xc000 | loop);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\0\0\1", 4);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	p.b[loop + 1] = (unsigned char)(loop + 2);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 1);
	loop = p.len;
	pb_u8(&p, 1);			/* "x" then a pointer back to it */
	pb_u8(&p, 'x');
	pb_u16(&p, 0xc000 | loop);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\0\0\1", 4);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	/* a pointer into the header, and a reserved label type */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 1);
	pb_u16(&p, 0xc002);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\x7f\0\0\1", 4);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	p.b[30] = 0x40;
	CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
	/*
	 * Names of 5 x 60 + 14 bytes (too long) and 3 x 60 + 14 (fine, but
	 * not ours), built from labels and pointers to pointers inside the
	 * rdata of a TXT record that nobody asked for.
	 */
	for (int segs = 5; segs >= 3; segs -= 2) {
		size_t prev = 12;
		char lab[64];

		memset(lab, 'a', 59);
		lab[59] = '\0';
		pb_header(&p, ID, QR, 1, 2, 0, 0);
		pb_question(&p, "example.test", 1);
		pb_u16(&p, 0xc00c);
		at = pb_rr(&p, 16, 60);
		for (int i = 0; i < segs; i++) {
			size_t here = p.len;

			pb_nameptr(&p, lab, prev);
			prev = here;
		}
		pb_end(&p, at);
		pb_u16(&p, 0xc000 | prev);
		at = pb_rr(&p, 1, 60);
		pb_bytes(&p, "\x7f\0\0\1", 4);
		pb_end(&p, at);
		if (segs == 5)
			CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == -1);
		else
			CHECK(parse(&p, "example.test", DNS_A, &r, &tc) == 0 &&
			    r.status == DNS_NODATA);
	}

	/* malformed MX: short rdata, name past rdata, bytes after name */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 15, 60);
	pb_u16(&p, 10);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 15, 60);
	pb_u16(&p, 10);
	pb_nameptr(&p, "mx", 12);
	pb_end(&p, at);
	good = p;
	p.b[at + 1] -= 1;
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	p = good;
	p.b[at + 1] += 1;
	pb_u8(&p, 0);
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == -1);
	CHECK(parse(&good, "example.test", DNS_MX, &r, &tc) == 0 &&
	    r.nmx == 1);
	dns_result_free(&r);
	/* an MX host that is no host name is dropped; "." is a null MX */
	pb_header(&p, ID, QR, 1, 2, 0, 0);
	pb_question(&p, "example.test", 15);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 15, 60);
	pb_u16(&p, 10);
	pb_nameptr(&p, "m x", 12);
	pb_end(&p, at);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 15, 60);
	pb_u16(&p, 0);
	pb_u8(&p, 0);
	pb_end(&p, at);
	CHECK(parse(&p, "example.test", DNS_MX, &r, &tc) == 0 &&
	    r.status == DNS_OK && r.nmx == 1 && r.mx[0].host[0] == '\0' &&
	    r.mx[0].pref == 0);
	dns_result_free(&r);

	/* the last record's rdlength runs past the packet */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 16);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 16, 60);
	pb_bytes(&p, "\3abc", 4);
	pb_end(&p, at);
	p.b[at + 1] = 200;
	CHECK(parse(&p, "example.test", DNS_TXT, &r, &tc) == -1);
	p.b[at + 1] = 5;
	CHECK(parse(&p, "example.test", DNS_TXT, &r, &tc) == -1);

	/* TXT whose string runs past its rdata */
	pb_header(&p, ID, QR, 1, 1, 0, 0);
	pb_question(&p, "example.test", 16);
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 16, 60);
	pb_bytes(&p, "\5abc", 4);
	pb_end(&p, at);
	pb_bytes(&p, "de", 2);
	CHECK(parse(&p, "example.test", DNS_TXT, &r, &tc) == -1);
}

/* ---- the resolver on an event loop, against an in-process responder */

struct responder {
	int		 fd;
	int		 queries;
	int		 mode;		/* 0 answer, 1 drop, 2 wrong id first */
	struct event	*ev;
};

static void
responder_cb(evutil_socket_t fd, short what, void *arg)
{
	struct responder *rs = arg;
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct pb p;
	ssize_t n;
	size_t qend, at;

	n = recvfrom(fd, p.b, sizeof(p.b), 0, (struct sockaddr *)&from,
	    &fromlen);
	if (n < 12 + 11 + 5)
		return;
	rs->queries++;
	if (rs->mode == 1)
		return;
	qend = (size_t)n - 11;
	p.len = qend;
	p.b[2] = 0x81;
	p.b[3] = 0x80;
	p.b[7] = 1;
	p.b[11] = 0;
	pb_u16(&p, 0xc00c);
	at = pb_rr(&p, 1, 60);
	pb_bytes(&p, "\xc0\0\2\7", 4);
	pb_end(&p, at);
	if (rs->mode == 2) {
		p.b[0] ^= 0x55;		/* a forgery first, then the answer */
		sendto(fd, p.b, p.len, 0, (struct sockaddr *)&from, fromlen);
		p.b[0] ^= 0x55;
	}
	sendto(fd, p.b, p.len, 0, (struct sockaddr *)&from, fromlen);
}

struct probe {
	int			 calls;
	enum dns_status		 status;
	size_t			 naddr;
	int			 in_lookup;
	int			 early;
	struct event_base	*base;
};

static void
probe_cb(const struct dns_result *r, void *arg)
{
	struct probe *pr = arg;

	if (pr->in_lookup)
		pr->early++;
	pr->calls++;
	pr->status = r->status;
	pr->naddr = r->naddr;
	if (r->status == DNS_OK && r->naddr == 1 &&
	    !addr_is(&r->addr[0], "192.0.2.7"))
		pr->naddr = 99;
}

static void
never_cb(const struct dns_result *r, void *arg)
{
	(*(int *)arg)++;
}

/* A callback that starts the same lookup again from inside itself, twice. */
struct chain {
	int	calls;
	int	early;
	int	inside;
};

static void
chain_cb(const struct dns_result *r, void *arg)
{
	struct chain *ch = arg;
	struct dns_query *q;

	if (ch->inside)
		ch->early++;
	ch->calls++;
	if (ch->calls >= 3 || r->status != DNS_OK)
		return;
	ch->inside = 1;
	q = dns_lookup(DNS_LOCAL_NAME, DNS_A, chain_cb, ch);
	ch->inside = 0;
	if (q == NULL)
		ch->early += 100;
}

struct batch {
	int			 left;
	int			 ok;
	struct event_base	*base;
};

static void
batch_cb(const struct dns_result *r, void *arg)
{
	struct batch *b = arg;

	if (r->status == DNS_OK)
		b->ok++;
	if (--b->left == 0)
		event_base_loopbreak(b->base);
}

/* Look up names n0..n1-1, 100 at a time (the responder's socket buffer
 * holds no more); how many came back OK. */
static int
batch_run(struct event_base *base, int n0, int n1)
{
	struct batch b = { 0, 0, base };
	char name[64];

	for (int i = n0; i < n1; ) {
		struct timeval tv = { 5, 0 };

		for (int j = 0; j < 100 && i < n1; j++, i++) {
			snprintf(name, sizeof(name), "n%d.example.test", i);
			if (dns_lookup(name, DNS_A, batch_cb, &b) != NULL)
				b.left++;
		}
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	return b.ok;
}

static void
loop_run(struct event_base *base, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void
test_resolver(void)
{
	struct event_base *base = event_base_new();
	struct responder rs = { -1, 0, 0, NULL };
	struct probe pr, pr2;
	struct dns_server srv;
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	struct dns_query *q;
	int never = 0;
	size_t hits;
	int before;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	rs.fd = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(rs.fd != -1 && bind(rs.fd, (struct sockaddr *)&sin,
	    sizeof(sin)) == 0 && getsockname(rs.fd, (struct sockaddr *)&sin,
	    &slen) == 0);
	rs.ev = event_new(base, rs.fd, EV_READ | EV_PERSIST, responder_cb, &rs);
	event_add(rs.ev, NULL);
	memset(&srv, 0, sizeof(srv));
	memcpy(&srv.ss, &sin, sizeof(sin));
	srv.sslen = sizeof(sin);
	/* set-up: bad arguments refused; no servers reads resolv.conf */
	{
		struct dns_server bad = srv;

		bad.ss.ss_family = AF_UNIX;
		CHECK(dns_init(base, &bad, 1, 300, 1) == -1);
		bad = srv;
		bad.sslen = 4;
		CHECK(dns_init(base, &bad, 1, 300, 1) == -1);
		CHECK(dns_init(NULL, &srv, 1, 300, 1) == -1);
		CHECK(dns_init(base, &srv, 1, -1, 1) == -1);
		CHECK(dns_init(base, NULL, 0, 0, 0) == 0);
	}
	CHECK(dns_init(base, &srv, 1, 300, 1) == 0);

	CHECK(dns_lookup("bad name", DNS_A, probe_cb, &pr) == NULL);

	/* an answer arrives through the loop, never from dns_lookup */
	memset(&pr, 0, sizeof(pr));
	pr.in_lookup = 1;
	q = dns_lookup("host.example.test", DNS_A, probe_cb, &pr);
	pr.in_lookup = 0;
	CHECK(q != NULL && pr.calls == 0);
	loop_run(base, 200);
	CHECK(pr.calls == 1 && pr.early == 0 && pr.status == DNS_OK &&
	    pr.naddr == 1 && rs.queries == 1);

	/* the cache answers, again through the loop */
	hits = dns_cache_hits();
	memset(&pr, 0, sizeof(pr));
	pr.in_lookup = 1;
	q = dns_lookup("HOST.example.test.", DNS_A, probe_cb, &pr);
	pr.in_lookup = 0;
	CHECK(q != NULL && pr.calls == 0);
	loop_run(base, 50);
	CHECK(pr.calls == 1 && pr.status == DNS_OK && pr.naddr == 1 &&
	    rs.queries == 1 && dns_cache_hits() == hits + 1);

	/* cancelled lookups, cached or not, never call back */
	q = dns_lookup("host.example.test", DNS_A, never_cb, &never);
	dns_cancel(q);
	q = dns_lookup("other.example.test", DNS_A, never_cb, &never);
	dns_cancel(q);
	dns_cancel(NULL);
	loop_run(base, 200);
	CHECK(never == 0 && rs.queries == 2);

	/* two lookups of one name share one query; a forgery is ignored */
	rs.mode = 2;
	memset(&pr, 0, sizeof(pr));
	memset(&pr2, 0, sizeof(pr2));
	CHECK(dns_lookup("third.example.test", DNS_A, probe_cb, &pr) != NULL);
	CHECK(dns_lookup("third.example.test", DNS_A, probe_cb, &pr2) != NULL);
	loop_run(base, 200);
	CHECK(pr.calls == 1 && pr2.calls == 1 && pr.status == DNS_OK &&
	    pr2.naddr == 1 && rs.queries == 3);

	/* no answer: TEMPFAIL by the deadline (300 ms), not cached */
	rs.mode = 1;
	before = rs.queries;
	memset(&pr, 0, sizeof(pr));
	CHECK(dns_lookup("dropped.example.test", DNS_A, probe_cb, &pr) != NULL);
	loop_run(base, 500);
	CHECK(pr.calls == 1 && pr.status == DNS_TEMPFAIL &&
	    rs.queries > before);
	memset(&pr, 0, sizeof(pr));
	CHECK(dns_lookup("dropped.example.test", DNS_A, probe_cb, &pr) != NULL);
	loop_run(base, 500);
	CHECK(pr.calls == 1 && pr.status == DNS_TEMPFAIL);

	/* a thousand answers are kept: asked again, none is sent */
	rs.mode = 0;
	loop_run(base, 100);
	rs.queries = 0;
	hits = dns_cache_hits();
	CHECK(batch_run(base, 0, 1000) == 1000 && rs.queries == 1000);
	CHECK(batch_run(base, 0, 1000) == 1000 && rs.queries == 1000 &&
	    dns_cache_hits() == hits + 1000);

	/*
	 * libunbound answers its local name before ub_resolve_event
	 * returns: the callback still comes from the loop, and a lookup
	 * started from that callback is not run inside libunbound's.
	 */
	memset(&pr, 0, sizeof(pr));
	pr.in_lookup = 1;
	hits = dns_cache_hits();
	q = dns_lookup(DNS_LOCAL_NAME, DNS_A, probe_cb, &pr);
	pr.in_lookup = 0;
	CHECK(q != NULL && pr.calls == 0 && dns_cache_hits() == hits + 1);
	loop_run(base, 50);
	/* one address, not the responder's (probe_cb: 99) */
	CHECK(pr.calls == 1 && pr.early == 0 && pr.status == DNS_OK &&
	    pr.naddr == 99);
	{
		struct chain ch = { 0, 0, 0 };

		CHECK(dns_lookup(DNS_LOCAL_NAME, DNS_A, chain_cb, &ch) != NULL);
		loop_run(base, 50);
		CHECK(ch.calls == 3 && ch.early == 0);
	}

	/* shutdown drops what is in flight without a callback */
	CHECK(dns_lookup("late.example.test", DNS_A, never_cb, &never) != NULL);
	dns_shutdown();
	loop_run(base, 50);
	CHECK(never == 0);

	event_free(rs.ev);
	close(rs.fd);
	event_base_free(base);
}

void
test_dns(void)
{
	test_names();
	test_encode();
	test_types();
	test_negative();
	test_cname();
	test_hostile();
	test_resolver();
}
