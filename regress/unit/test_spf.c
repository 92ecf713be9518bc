/*
 * test_spf: the SPF record checks libspf2 lacks (auth/spfrec.c): a table
 * of records accepted and refused, macro expansion (RFC 7208 7.4's
 * examples), the rewriting of /0 prefixes and modifiers for libspf2, and
 * the default policy's replies.
 */
#include <sys/socket.h>

#include <netinet/in.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "auth/spf.h"
#include "dns/dns.h"
#include "dns/spfdns.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_spf(void);

static const char *const good[] = {
	"v=spf1", "v=spf1 -all", "V=SPF1 +A -ALL", "v=spf1 ip4:192.0.2.0/24 ~all",
	"v=spf1 ip4:1.2.3.4/0", "v=spf1 ip6:2001:db8::/32 -all",
	"v=spf1 a:example.com/24//64 mx/0 ptr ?all",
	"v=spf1 include:_spf.example.com redirect=_spf.example.net",
	"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d} -all",
	"v=spf1 -all exp=explain._spf.%{d}",
	"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all",
	"v=spf1 a:%{H}.example.org", "v=spf1 a:example.com.",
	"v=spf1 a:foo.%{d}", "v=spf1 x=", "v=spf1 a:foo:bar/baz.example.com",
	NULL
};

static const char *const bad[] = {
	"v=spf10", "spf1 -all", "v=spf1 -all.", "v=spf1 -all:foobar",
	"v=spf1 -all/8", "v=spf1 ip4:1.2.3.4/33", "v=spf1 ip4:01.2.3.4",
	"v=spf1 ip4:1.2.3", "v=spf1 ip6:::1/129", "v=spf1 a:example.-com",
	"v=spf1 a:example.123",
	"v=spf1 include", "v=spf1 include:", "v=spf1 exists:", "v=spf1 moo",
	"v=spf1 redirect=a.example.com redirect=b.example.com",
	"v=spf1 exp=a.example.com exp=b.example.com",
	"v=spf1 redirect=", "v=spf1 a:%{x}.example.com",
	"v=spf1 a:%{c}.example.com", "v=spf1 a:%(d).example.com",
	"v=spf1 a:foo%.example.com", "v=spf1 a:%{d",
	"v=spf1 a:\xc3\xa9.example.com", "v=spf1 ip4:1.2.3.4 \x7f", NULL
};

static const char *
expand(const char *tmpl, int exp, char *out, size_t cap)
{
	struct spf_macro_vals mv = {
		.s = "strong-bad@email.example.com", .l = "strong-bad",
		.o = "email.example.com", .d = "email.example.com",
		.i = "192.0.2.3", .v = "in-addr", .h = "mx.example.org",
		.c = "192.0.2.3", .r = "mx.tern.test", .t = "1700000000"
	};
	struct buf b;

	buf_init(&b);
	if (spf_macro_expand(tmpl, strlen(tmpl), &mv, exp, &b) == -1) {
		buf_free(&b);
		return NULL;
	}
	buf_putc(&b, '\0');
	str_copy(out, b.data, cap);
	buf_free(&b);
	return out;
}

static int
rewrites(const char *rec, int v6, const char *want)
{
	struct buf b;
	int ok;

	buf_init(&b);
	spf_record_rewrite(rec, v6, "T", &b);
	buf_putc(&b, '\0');
	ok = strcmp(b.data, want) == 0;
	buf_free(&b);
	return ok;
}

static void
test_policy(void)
{
	struct spf_verdict v;
	char reply[512];

	memset(&v, 0, sizeof(v));
	str_copy(v.domain, "example.org", sizeof(v.domain));
	v.result = SPF_FAIL;
	str_copy(v.exp, "example.org does not designate 192.0.2.3",
	    sizeof(v.exp));
	CHECK(spf_policy(&v, reply, sizeof(reply)) == SPF_REJECT);
	CHECK(strncmp(reply, "550 5.7.23 ", 11) == 0);
	v.result = SPF_TEMPERROR;
	CHECK(spf_policy(&v, reply, sizeof(reply)) == SPF_TEMPFAIL);
	CHECK(strncmp(reply, "451 4.7.24 ", 11) == 0);
	for (int r = SPF_NONE; r <= SPF_PERMERROR; r++) {
		if (r == SPF_FAIL || r == SPF_TEMPERROR)
			continue;
		v.result = (enum spf_result)r;
		CHECK(spf_policy(&v, reply, sizeof(reply)) == SPF_ACCEPT);
	}
}

/* The p macro (RFC 7208 7.3): which validated name, and its expansion. */
static void
test_macro_p(void)
{
	char *names[] = { "mx.example.org", "a.mail.example.com",
	    "example.com" };
	struct spf_macro_vals mv = {
		.s = "a@example.com", .l = "a", .o = "example.com",
		.d = "example.com", .i = "192.0.2.3", .v = "in-addr",
		.h = "mx.example.org", .c = "192.0.2.3", .r = "mx.tern.test",
		.t = "1", .p = NULL
	};
	struct buf b;

	CHECK(strcmp(spf_macro_pick_p(names, 3, "example.com"),
	    "example.com") == 0);
	CHECK(strcmp(spf_macro_pick_p(names, 2, "Example.COM"),
	    "a.mail.example.com") == 0);
	CHECK(strcmp(spf_macro_pick_p(names, 1, "example.com"),
	    "mx.example.org") == 0);
	CHECK(strcmp(spf_macro_pick_p(names, 0, "example.com"),
	    "unknown") == 0);
	/* "bexample.com" is not a subdomain of example.com */
	names[0] = "bexample.com";
	CHECK(strcmp(spf_macro_pick_p(names, 1, "example.com"),
	    "bexample.com") == 0);
	buf_init(&b);
	CHECK(spf_macro_expand("%{p}", 4, &mv, 1, &b) == 0);
	CHECK(b.len == 7 && memcmp(b.data, "unknown", 7) == 0);
	buf_reset(&b);
	mv.p = "mx.example.org";
	CHECK(spf_macro_expand("%{p}/%{p2}", 10, &mv, 1, &b) == 0);
	CHECK(b.len == 26 && memcmp(b.data, "mx.example.org/example.org",
	    26) == 0);
	buf_free(&b);
}

/* A domain-spec expanded past 253 bytes loses labels on its left
 * (RFC 7208 7.3). */
static void
test_truncate(void)
{
	struct spf_macro_vals mv = {
		.s = "a@somewhat.long.exp.example.com", .l = "a",
		.o = "somewhat.long.exp.example.com",
		.d = "somewhat.long.exp.example.com", .i = "192.0.2.3",
		.v = "in-addr", .h = "mx.example.org", .c = "192.0.2.3",
		.r = "mx.tern.test", .t = "1"
	};
	const char *o8 = "%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}.%{o}";
	char rec[512], want[512];
	struct buf b;

	snprintf(rec, sizeof(rec), "v=spf1 -all exp=foobar.%s.example.com",
	    o8);
	str_copy(want, "v=spf1 -all exp=", sizeof(want));
	for (int k = 0; k < 8; k++)
		snprintf(want + strlen(want), sizeof(want) - strlen(want),
		    "%s.", mv.o);
	snprintf(want + strlen(want), sizeof(want) - strlen(want),
	    "example.com");
	buf_init(&b);
	CHECK(spf_record_truncate(rec, &mv, &b) == 1);
	buf_putc(&b, '\0');
	CHECK(strcmp(b.data, want) == 0);
	CHECK(strlen(want) - strlen("v=spf1 -all exp=") == 251);
	/* Short enough, or with p (libspf2's): left alone. */
	buf_reset(&b);
	CHECK(spf_record_truncate("v=spf1 ~include:%{o} exists:%{d}.x", &mv,
	    &b) == 0);
	buf_putc(&b, '\0');
	CHECK(strcmp(b.data, "v=spf1 ~include:%{o} exists:%{d}.x") == 0);
	snprintf(rec, sizeof(rec), "v=spf1 redirect=%%{p}.%s", o8);
	buf_reset(&b);
	CHECK(spf_record_truncate(rec, &mv, &b) == 0);
	buf_free(&b);
}

/* The c, i and v macros of a client address (RFC 7208 7.3). */
static void
test_macro_ip(void)
{
	char c[80], i[80];

	CHECK(strcmp(spf_macro_ip("CAFE:BABE::1", c, sizeof(c), i,
	    sizeof(i)), "ip6") == 0);
	CHECK(strcmp(c, "cafe:babe::1") == 0);
	CHECK(strcmp(i, "C.A.F.E.B.A.B.E.0.0.0.0.0.0.0.0."
	    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1") == 0);
	CHECK(strcmp(spf_macro_ip("::ffff:192.0.2.3", c, sizeof(c), i,
	    sizeof(i)), "in-addr") == 0);
	CHECK(strcmp(c, "192.0.2.3") == 0 && strcmp(i, "192.0.2.3") == 0);
	CHECK(strcmp(spf_macro_ip("192.0.2.3", c, sizeof(c), i,
	    sizeof(i)), "in-addr") == 0);
	CHECK(strcmp(c, "192.0.2.3") == 0 && strcmp(i, "192.0.2.3") == 0);
}

/*
 * A PTR name of a documentation or private range is asked of the
 * configured server, not answered NXDOMAIN by libunbound's built-in
 * zones (RFC 7208 5.5 needs the real PTR records).  The "server" is a
 * loopback socket that never answers: the query must reach it.
 */
static void
test_spfdns_lan_zones(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	socklen_t len = sizeof(*sin);
	struct dns_result res;
	struct spfdns *d;
	char err[256], pkt[512];
	int fd;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(fd != -1);
	CHECK(bind(fd, (struct sockaddr *)sin, len) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)sin, &len) == 0);
	d = spfdns_new(&ss, &len, 1, 200, err, sizeof(err));
	CHECK(d != NULL);
	if (d == NULL) {
		close(fd);
		return;
	}
	CHECK(spfdns_query(d, "2001:db8::1", DNS_PTR, &res) == 0);
	CHECK(res.status == DNS_TEMPFAIL);
	CHECK(recv(fd, pkt, sizeof(pkt), MSG_DONTWAIT) > 12);
	dns_result_free(&res);
	spfdns_free(d);
	close(fd);
}

/* A loopback "server" that answers a few queries: those for a name
 * starting "4." with 11 PTR records, the others NXDOMAIN. */
static void *
nx_server(void *arg)
{
	int fd = ((int *)arg)[0], stop = ((int *)arg)[1];

	for (int k = 0; k < 8; k++) {
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN },
		    { .fd = stop, .events = POLLIN } };
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		unsigned char pkt[512];
		ssize_t n;

		if (poll(pfd, 2, 5000) < 1 || pfd[1].revents)
			break;
		n = recvfrom(fd, pkt, sizeof(pkt), 0, (struct sockaddr *)&from,
		    &fl);
		if (n < 12)
			continue;
		pkt[2] |= 0x80;			/* QR */
		pkt[3] = (unsigned char)((pkt[3] & 0x70) | 0x80 | 3);
		memset(pkt + 6, 0, 6);		/* no answers */
		if (pkt[12] == 1 && pkt[13] == '4') {
			size_t o = 12;

			while (o < (size_t)n && pkt[o] != 0)	/* the question */
				o += (size_t)pkt[o] + 1;
			o += 5;		/* root label, type, class; no OPT */

			pkt[3] &= 0xf0;		/* NOERROR */
			pkt[7] = 11;
			for (int r = 0; r < 11 && o + 32 < sizeof(pkt); r++) {
				static const unsigned char rr[] = { 0xc0, 12,
				    0, 12, 0, 1, 0, 0, 0, 60, 0, 17, 3, 'p',
				    't', 'r', 7, 'e', 'x', 'a', 'm', 'p', 'l',
				    'e', 3, 'c', 'o', 'm', 0 };

				memcpy(pkt + o, rr, sizeof(rr));
				pkt[o + 13] = (unsigned char)('a' + r);
				o += sizeof(rr);
			}
			n = (ssize_t)o;
		}
		(void)sendto(fd, pkt, (size_t)n, 0, (struct sockaddr *)&from,
		    fl);
	}
	return NULL;
}

/* A PTR lookup that finds nothing is not a void lookup of the record's
 * (RFC 7208 4.6.4, 5.5): the PTR records are the client's; one that
 * finds more than 10 names gives the first 10. */
static void
test_spfdns_ptr_not_void(void)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	socklen_t len = sizeof(*sin);
	struct spfdns_track t;
	SPF_dns_rr_t *rr;
	struct spfdns *d;
	pthread_t th;
	char err[256];
	int fd, p[2], fds[2];

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(fd != -1);
	CHECK(bind(fd, (struct sockaddr *)sin, len) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)sin, &len) == 0);
	CHECK(pipe(p) == 0);
	fds[0] = fd;
	fds[1] = p[0];
	CHECK(pthread_create(&th, NULL, nx_server, fds) == 0);
	d = spfdns_new(&ss, &len, 1, 2000, err, sizeof(err));
	CHECK(d != NULL);
	if (d != NULL) {
		spfdns_track_begin(&t);
		rr = SPF_dns_lookup(spfdns_layer(d),
		    "3.2.0.192.in-addr.arpa", ns_t_ptr, 0);
		CHECK(rr != NULL && rr->herrno == HOST_NOT_FOUND);
		CHECK(t.voids == 0 && t.temp == 0);
		if (rr)
			SPF_dns_rr_free(rr);
		/* Past 10 PTR names the rest are ignored (RFC 7208 4.6.4). */
		rr = SPF_dns_lookup(spfdns_layer(d),
		    "4.2.0.192.in-addr.arpa", ns_t_ptr, 0);
		CHECK(rr != NULL && rr->herrno == NETDB_SUCCESS &&
		    rr->num_rr == 10);
		if (rr)
			SPF_dns_rr_free(rr);
		spfdns_track_end(&t);
		spfdns_free(d);
	}
	CHECK(write(p[1], "x", 1) == 1);
	pthread_join(th, NULL);
	close(p[0]);
	close(p[1]);
	close(fd);
}

void
test_spf(void)
{
	char out[512];
	const char *why;

	for (int i = 0; good[i]; i++)
		CHECK(spf_record_check(good[i], &why) == 0);
	for (int i = 0; bad[i]; i++) {
		int r = spf_record_check(bad[i], &why);

		if (r != -1)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK(r == -1);
	}
	/* RFC 7208 7.4 */
	CHECK(expand("%{s}", 0, out, sizeof(out)) &&
	    strcmp(out, "strong-bad@email.example.com") == 0);
	CHECK(expand("%{d4}", 0, out, sizeof(out)) &&
	    strcmp(out, "email.example.com") == 0);
	CHECK(expand("%{d2}", 0, out, sizeof(out)) &&
	    strcmp(out, "example.com") == 0);
	CHECK(expand("%{d1}", 0, out, sizeof(out)) &&
	    strcmp(out, "com") == 0);
	CHECK(expand("%{dr}", 0, out, sizeof(out)) &&
	    strcmp(out, "com.example.email") == 0);
	CHECK(expand("%{d2r}", 0, out, sizeof(out)) &&
	    strcmp(out, "example.email") == 0);
	CHECK(expand("%{l}", 0, out, sizeof(out)) &&
	    strcmp(out, "strong-bad") == 0);
	CHECK(expand("%{l-}", 0, out, sizeof(out)) &&
	    strcmp(out, "strong.bad") == 0);
	CHECK(expand("%{lr-}", 0, out, sizeof(out)) &&
	    strcmp(out, "bad.strong") == 0);
	CHECK(expand("%{l1r-}", 0, out, sizeof(out)) &&
	    strcmp(out, "strong") == 0);
	CHECK(expand("%{ir}.%{v}._spf.%{d2}", 0, out, sizeof(out)) &&
	    strcmp(out, "3.2.0.192.in-addr._spf.example.com") == 0);
	CHECK(expand("%{S}", 0, out, sizeof(out)) &&
	    strcmp(out, "strong-bad%40email.example.com") == 0);
	CHECK(expand("a%%b%_c%-d", 1, out, sizeof(out)) &&
	    strcmp(out, "a%b c%20d") == 0);
	CHECK(expand("%{c} by %{r}", 1, out, sizeof(out)) &&
	    strcmp(out, "192.0.2.3 by mx.tern.test") == 0);
	CHECK(expand("%{c}", 0, out, sizeof(out)) == NULL);
	CHECK(expand("%{d0}", 0, out, sizeof(out)) == NULL);
	CHECK(expand("%{x}", 1, out, sizeof(out)) == NULL);
	CHECK(expand("50%", 1, out, sizeof(out)) == NULL);
	/* What libspf2 refuses, said another way. */
	CHECK(rewrites("v=spf1 ip4:1.2.3.4/0 -all", 0,
	    "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all"));
	CHECK(rewrites("v=spf1 -ip6:::1/0", 1, "v=spf1 -ip6:::/1 -ip6:8000::/1"));
	CHECK(rewrites("v=spf1 a/0 -all", 0, "v=spf1 exists:%{d} -all"));
	CHECK(rewrites("v=spf1 ~a:foo.test/0//64", 0,
	    "v=spf1 ~exists:foo.test"));
	CHECK(rewrites("v=spf1 a/0 -all", 1, "v=spf1 a -all"));
	CHECK(rewrites("v=spf1 mx/24//0", 0, "v=spf1 mx/24"));
	CHECK(rewrites("v=spf1 mx/0 -all", 0,
	    "v=spf1 exists:%{d}.mx4.T -all"));
	CHECK(rewrites("v=spf1 mx:example.org.//0", 1,
	    "v=spf1 exists:example.org.mx6.T"));
	CHECK(rewrites("v=spf1 -a//0", 1, "v=spf1 -exists:%{d}.a6.T"));
	CHECK(rewrites("v=spf1 redirect=x.test ~all", 0, "v=spf1 ~all"));
	CHECK(rewrites("v=spf1 a redirect=x.test", 0,
	    "v=spf1 a redirect=x.test"));
	CHECK(rewrites("v=spf1 moo.cow=x ip4:1.2.3.4 exp=e.test", 0,
	    "v=spf1 ip4:1.2.3.4 exp=e.test"));
	test_macro_ip();
	test_macro_p();
	test_truncate();
	test_spfdns_lan_zones();
	test_spfdns_ptr_not_void();
	test_policy();
}
