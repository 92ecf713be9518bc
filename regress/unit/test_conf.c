/* test_conf: the configuration grammar, accepted and rejected inputs. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_conf(void);

#define LISTEN	"listen mx 127.0.0.1 port 25\n"

static const struct {
	const char *text;
	const char *err;
} rejected[] = {
	{ "foo bar\n", "t.conf:1: unknown keyword \"foo\"" },
	{ "\nhostname\n", "t.conf:2: hostname: missing value" },
	{ "hostname a\n# c\nhostname b\n",
	    "t.conf:3: hostname: already set at line 1" },
	{ "hostname a b\n", "t.conf:1: hostname: unexpected \"b\"" },
	{ "hostname \"\"\n", "t.conf:1: hostname: empty value" },
	{ "hostname \"abc\n", "t.conf:1: unterminated quoted string" },
	{ "hostname \"abc\\\"\n", "t.conf:1: unterminated quoted string" },
	{ "user \"a\\nb\"\n", "t.conf:1: invalid escape \"\\n\" in quoted "
	    "string (only \\\" and \\\\)" },
	{ "user \"a\tb\"\n", "t.conf:1: tab in quoted string" },
	{ "user a\x01\n", "t.conf:1: control character 0x01 in "
	    "configuration" },
	{ "hostname \"bad host\"\n", "t.conf:1: hostname: invalid host name "
	    "\"bad host\": only letters, digits, hyphens and dots allowed" },
	{ "max-message-size 5\n",
	    "t.conf:1: max-message-size: 5 is below the minimum 1K" },
	{ "max-message-size 3G\n",
	    "t.conf:1: max-message-size: 3G is above the maximum 2G" },
	{ "max-message-size 10X\n", "t.conf:1: max-message-size: expected "
	    "a size like 512K, 35M or 1G, got \"10X\"" },
	{ "max-message-size 1KB\n", "t.conf:1: max-message-size: expected "
	    "a size like 512K, 35M or 1G, got \"1KB\"" },
	{ "max-message-size 99999999999999999999K\n",
	    "t.conf:1: max-message-size: 99999999999999999999K is above the "
	    "maximum 2G" },
	{ "max-command-length 100\n",
	    "t.conf:1: max-command-length: 100 is below the minimum 512" },
	{ "max-line-length 999\n",
	    "t.conf:1: max-line-length: 999 is below the minimum 1000" },
	{ "max-line-length 2M\n",
	    "t.conf:1: max-line-length: 2M is above the maximum 1M" },
	{ "max-recipients 0\n",
	    "t.conf:1: max-recipients: 0 is below the minimum 1" },
	{ "max-recipients 1k\n",
	    "t.conf:1: max-recipients: expected a number, got \"1k\"" },
	{ "max-recipients -1\n",
	    "t.conf:1: max-recipients: expected a number, got \"-1\"" },
	{ "command-timeout 5y\n", "t.conf:1: command-timeout: expected a "
	    "duration like 500ms, 30s, 5m, 1h or 2d, got \"5y\"" },
	{ "command-timeout 1.5h\n", "t.conf:1: command-timeout: expected a "
	    "duration like 500ms, 30s, 5m, 1h or 2d, got \"1.5h\"" },
	{ "command-timeout 2h\n",
	    "t.conf:1: command-timeout: 2h is above the maximum 1h" },
	{ "command-timeout 999ms\n",
	    "t.conf:1: command-timeout: 999ms is below the minimum 1s" },
	{ "data-timeout 0\n",
	    "t.conf:1: data-timeout: 0 is below the minimum 1s" },
	{ "greeting-delay 99999999999999999999\n", "t.conf:1: "
	    "greeting-delay: 99999999999999999999 is above the maximum 1m" },
	{ "retry-max 8d\n", "t.conf:1: retry-max: 8d is above the maximum 7d" },
	{ "queue-lifetime 59s\n",
	    "t.conf:1: queue-lifetime: 59s is below the minimum 1m" },
	{ "maildir Maildir\n", "t.conf:1: maildir: must start with \"~/\" "
	    "or \"/\", got \"Maildir\"" },
	{ "local-domain\n", "t.conf:1: local-domain: missing domain" },
	{ "local-domain a..b\n",
	    "t.conf:1: local-domain: invalid domain \"a..b\": empty label" },
	{ "local-domain a.org.\n",
	    "t.conf:1: local-domain: invalid domain \"a.org.\": empty label" },
	{ "local-domain -a.org\n", "t.conf:1: local-domain: invalid domain "
	    "\"-a.org\": label starts with a hyphen" },
	{ "local-domain a_b.org\n", "t.conf:1: local-domain: invalid domain "
	    "\"a_b.org\": only letters, digits, hyphens and dots allowed" },
	{ "local-domain "
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    ".org\n", "t.conf:1: local-domain: invalid domain "
	    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    ".org\": label longer than 63 characters" },
	{ "local-domain a b\n", "t.conf:1: local-domain: unexpected \"b\"" },
	{ "local-domain Example.org\nlocal-domain example.ORG\n",
	    "t.conf:2: local-domain: \"example.ORG\" already listed at line 1" },
	{ "trusted-network\n", "t.conf:1: trusted-network: missing network" },
	{ "trusted-network 10.0.0.1/8\n",
	    "t.conf:1: trusted-network: host bits set in 10.0.0.1/8" },
	{ "trusted-network 2001:db8::1/64\n",
	    "t.conf:1: trusted-network: host bits set in 2001:db8::1/64" },
	{ "trusted-network 10.0.0.0/33\n", "t.conf:1: trusted-network: "
	    "prefix length must be 1-32, got \"33\"" },
	{ "trusted-network 0.0.0.0/0\n", "t.conf:1: trusted-network: "
	    "prefix length must be 1-32, got \"0\"" },
	{ "trusted-network fe80::/129\n", "t.conf:1: trusted-network: "
	    "prefix length must be 1-128, got \"129\"" },
	{ "trusted-network 10.0.0.0/\n", "t.conf:1: trusted-network: "
	    "prefix length must be 1-32, got \"\"" },
	{ "trusted-network bogus/8\n",
	    "t.conf:1: trusted-network: invalid address \"bogus\"" },
	{ "listen\n", "t.conf:1: listen: missing role" },
	{ "listen smtp 127.0.0.1 port 25\n", "t.conf:1: listen: unknown role "
	    "\"smtp\" (expected mx or msa)" },
	{ "listen mx\n", "t.conf:1: listen: missing address" },
	{ "listen mx localhost port 25\n", "t.conf:1: listen: expected an "
	    "IPv4 or IPv6 address, got \"localhost\"" },
	{ "listen mx 127.0.0.1 25\n",
	    "t.conf:1: listen: expected \"port\" after the address" },
	{ "listen mx 127.0.0.1 port\n", "t.conf:1: port: missing value" },
	{ "listen mx 127.0.0.1 port x\n",
	    "t.conf:1: port: expected a number 1-65535, got \"x\"" },
	{ "listen mx 127.0.0.1 port 65536\n",
	    "t.conf:1: port: expected a number 1-65535, got \"65536\"" },
	{ "listen mx 127.0.0.1 port 25 max-connections 5\n",
	    "t.conf:1: max-connections cannot be set per listener" },
	{ "listen mx 127.0.0.1 port 25 max-recipients\n",
	    "t.conf:1: max-recipients: missing value" },
	{ "listen mx 127.0.0.1 port 25 bogus 1\n",
	    "t.conf:1: listen: unknown setting \"bogus\"" },
	{ "listen mx 127.0.0.1 port 25 max-recipients 0\n",
	    "t.conf:1: max-recipients: 0 is below the minimum 1" },
	{ "listen mx 127.0.0.1 port 25 max-recipients 5 max-recipients 6\n",
	    "t.conf:1: listen: max-recipients given twice" },
	{ LISTEN "listen msa 127.0.0.1 port 25\n",
	    "t.conf:2: listen: 127.0.0.1 port 25 already used at line 1" },
	{ "listen mx ::1 port 25\nlisten mx 0:0::1 port 25\n",
	    "t.conf:2: listen: 0:0::1 port 25 already used at line 1" },
	{ "virtual\n", "t.conf:1: virtual: missing address" },
	{ "virtual bogus maildir /x\n",
	    "t.conf:1: virtual: invalid address \"bogus\"" },
	{ "virtual a@b..org maildir /x\n",
	    "t.conf:1: virtual: invalid address \"a@b..org\"" },
	{ "virtual a@b.org /x\n",
	    "t.conf:1: virtual: expected \"maildir\" after the address" },
	{ "virtual a@b.org maildir\n",
	    "t.conf:1: virtual: missing maildir path" },
	{ "virtual a@b.org maildir /x /y\n",
	    "t.conf:1: virtual: unexpected \"/y\"" },
	{ "local-domain b.org\nvirtual A@b.org maildir /x\n"
	    "virtual a@B.org maildir /y\n",
	    "t.conf:3: virtual: \"a@b.org\" already defined at line 2" },
	{ "local-domain b.org\nvirtual a@c.org maildir /x\n" LISTEN,
	    "t.conf:2: virtual: domain of \"a@c.org\" is not a local-domain" },
	{ "", "t.conf:1: no listen statement" },
	{ "hostname a\n\n# end\n", "t.conf:3: no listen statement" },
	{ "resolver\n", "t.conf:1: resolver: missing address" },
	{ "resolver dns.example\n", "t.conf:1: resolver: expected an IPv4 or "
	    "IPv6 address, got \"dns.example\"" },
	{ "resolver 127.0.0.1 port 0\n",
	    "t.conf:1: port: expected a number 1-65535, got \"0\"" },
	{ "resolver 127.0.0.1 53\n", "t.conf:1: resolver: unexpected \"53\"" },
	{ "route example.org\n", "t.conf:1: route: expected \"route <domain> "
	    "via <host>\"" },
	{ "route bad..org via relay\n", "t.conf:1: route: invalid domain "
	    "\"bad..org\": empty label" },
	{ "route * via relay tls maybe\n", "t.conf:1: route: tls must be "
	    "opportunistic, required, verify or none, got \"maybe\"" },
	{ "route * via relay auth /s\n", "t.conf:1: route: auth needs \"tls "
	    "required\" or \"tls verify\" (no password in clear text)" },
	{ "route * via relay:99999\n", "t.conf:1: route: bad port in "
	    "\"relay:99999\"" },
	{ "route * via a\nroute * via b\n",
	    "t.conf:2: route: * already routed at line 1" },
	{ "route * via relay colour blue\n",
	    "t.conf:1: route: unexpected \"colour\"" },
	{ "route l.example via lmtp\n", "t.conf:1: route: via lmtp needs "
	    "unix:/path or host:port" },
	{ "route * via lmtp 127.0.0.1\n", "t.conf:1: route: * cannot go via "
	    "lmtp" },
	{ "route l.example via lmtp mailman.example port 8024\n",
	    "t.conf:1: route: via lmtp expects unix:/path, address:port or "
	    "address port N, got \"mailman.example\"" },
	{ "route l.example via lmtp unix:/s port 24 colour x\n",
	    "t.conf:1: route: unexpected \"colour\"" },
	{ "local-domain l.example\nroute l.example via lmtp 127.0.0.1\n"
	    LISTEN, "t.conf:2: route: l.example is a local-domain (use "
	    "local-delivery lmtp)" },
	{ "lmtp-verify guess\n", "t.conf:1: lmtp-verify: expected probe or "
	    "map, got \"guess\"" },
	{ "lmtp-verify map\n" LISTEN, "t.conf:2: lmtp-verify map needs an "
	    "lmtp-recipients file" },
	{ "tls-verify maybe\n", "t.conf:1: tls-verify: expected yes or no, "
	    "got \"maybe\"" },
	{ "local-delivery procmail\n", "t.conf:1: local-delivery: expected "
	    "maildir, mbox or lmtp, got \"procmail\"" },
	{ "local-delivery lmtp\n" LISTEN, "t.conf:2: local-delivery lmtp "
	    "needs an lmtp setting" },
	{ "lmtp dovecot\n", "t.conf:1: lmtp: expected unix:/path or "
	    "host:port, got \"dovecot\"" },
	{ "tls maybe\n", "t.conf:1: tls: expected starttls, implicit or "
	    "none, got \"maybe\"" },
	{ "tls implicit\n", "t.conf:1: tls implicit belongs on a listen msa "
	    "line (RFC 8314 submission, port 465)" },
	{ "listen mx 127.0.0.1 port 465 tls implicit\n", "t.conf:1: listen: "
	    "tls implicit is for msa listeners (port 465); mx peers use "
	    "STARTTLS on port 25" },
	{ "listen msa 127.0.0.1 port 465 tls implicit tls none\n",
	    "t.conf:1: listen: tls given twice" },
	{ "listen msa 127.0.0.1 port 465 tls\n", "t.conf:1: tls: missing "
	    "value" },
	{ LISTEN "\ntls-key /k.pem\n", "t.conf:3: tls-key needs tls-cert "
	    "(the certificate it belongs to)" },
	{ "tls-cert a\ntls-cert b\n", "t.conf:2: tls-cert: already set at "
	    "line 1" },
	{ LISTEN "listen msa 127.0.0.1 port 465 tls-cert /c.pem\n",
	    "t.conf:2: tls-cert cannot be set per listener" },
	{ "origin bad..org\n", "t.conf:1: origin: invalid domain "
	    "\"bad..org\": empty label" },
	{ "origin \"a b\"\n", "t.conf:1: origin: invalid domain \"a b\": "
	    "only letters, digits, hyphens and dots allowed" },
};

static void
test_conf_routes(void)
{
	static const char text[] = LISTEN
	    "local-domain example.org\n"
	    "resolver 127.0.0.1 port 5353\n"
	    "resolver ::1\n"
	    "route Example.COM via relay.example:2525 tls required auth sec\n"
	    "route * via smart.example port 587 tls verify\n";
	const struct route *r;
	char err[256];
	struct conf *c;

	c = conf_parse("t.conf", text, strlen(text), "/base", err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "routes: %s\n", err);
		return;
	}
	CHECK(c->nresolvers == 2);
	CHECK(c->resolvers[0].ss_family == AF_INET);
	CHECK(ntohs(((struct sockaddr_in *)&c->resolvers[0])->sin_port) == 5353);
	CHECK(ntohs(((struct sockaddr_in6 *)&c->resolvers[1])->sin6_port) == 53);
	r = conf_find_route(c, "example.com");
	CHECK(r && strcmp(r->host, "relay.example") == 0 && r->port == 2525);
	CHECK(r && r->tls == ROUTE_TLS_REQUIRED);
	CHECK(r && strcmp(r->authfile, "/base/sec") == 0);
	r = conf_find_route(c, "other.net");
	CHECK(r && strcmp(r->host, "smart.example") == 0 && r->port == 587);
	CHECK(r && r->tls == ROUTE_TLS_VERIFY && r->authfile == NULL);
	CHECK(strcmp(conf_str(c, K_SRS_DOMAIN), "example.org") == 0);
	CHECK(strcmp(conf_str(c, K_ORIGIN), "example.org") == 0);
	CHECK(conf_num(c, NULL, K_DELAY_WARNING) == 4LL * 3600 * 1000);
	/* The auth file is read only when the parent asks. */
	CHECK(conf_load_secrets(c, err, sizeof(err)) == -1);
	CHECK(strstr(err, "t.conf:5: route auth file /base/sec") == err);
	conf_free(c);

	/* A bracketed IPv6 relay, with and without a port. */
	{
		static const char v6[] = LISTEN
		    "route a.example via [2001:db8::1]:2525\n"
		    "route b.example via [2001:db8::2]\n";

		c = conf_parse("t.conf", v6, strlen(v6), "/base", err,
		    sizeof(err));
		CHECK(c != NULL);
		if (c) {
			r = conf_find_route(c, "a.example");
			CHECK(r && strcmp(r->host, "2001:db8::1") == 0 &&
			    r->port == 2525);
			r = conf_find_route(c, "b.example");
			CHECK(r && strcmp(r->host, "2001:db8::2") == 0 &&
			    r->port == 25);
			conf_free(c);
		}
	}
	/* LMTP routes: an address and port, host:port, a unix socket. */
	{
		static const char lm[] = LISTEN
		    "route a.example via lmtp 127.0.0.1 port 8024\n"
		    "route b.example via lmtp [::1]:2424\n"
		    "route c.example via lmtp unix:/run/dovecot/lmtp\n"
		    "route d.example via lmtp localhost\n"
		    "route e.example via relay.example\n";

		c = conf_parse("t.conf", lm, strlen(lm), "/base", err,
		    sizeof(err));
		CHECK(c != NULL);
		if (c) {
			r = conf_lmtp_route(c, "A.example");
			CHECK(r && r->lmtp && strcmp(r->host, "127.0.0.1") == 0
			    && r->port == 8024 && r->tls == ROUTE_TLS_NONE);
			r = conf_lmtp_route(c, "b.example");
			CHECK(r && strcmp(r->host, "::1") == 0 && r->port == 2424);
			r = conf_lmtp_route(c, "c.example");
			CHECK(r && r->path && r->host == NULL &&
			    strcmp(r->path, "/run/dovecot/lmtp") == 0);
			r = conf_lmtp_route(c, "d.example");
			CHECK(r && strcmp(r->host, "127.0.0.1") == 0 &&
			    r->port == 24);
			CHECK(conf_lmtp_route(c, "e.example") == NULL);
			CHECK(conf_find_route(c, "e.example") != NULL);
			CHECK(conf_num(c, NULL, K_MAX_TRUSTED_RECIPIENTS) == 1000);
			conf_free(c);
		}
	}
	/* The hostname is local, so a virtual user may live there. */
	{
		static const char vh[] = LISTEN "hostname mx.example\n"
		    "virtual \"u@mx.example\" maildir /m\n";

		c = conf_parse("t.conf", vh, strlen(vh), "/base", err,
		    sizeof(err));
		CHECK(c != NULL && conf_is_local_domain(c, "MX.example"));
		CHECK(c != NULL && conf_is_local_domain(c, "localhost"));
		CHECK(c != NULL && !conf_is_local_domain(c, "example"));
		conf_free(c);
	}
}

static void
test_conf_rejected(void)
{
	char err[256];
	struct conf *c;

	for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
		c = conf_parse("t.conf", rejected[i].text,
		    strlen(rejected[i].text), "/base", err, sizeof(err));
		CHECK(c == NULL);
		if (c != NULL || strcmp(err, rejected[i].err) != 0)
			fprintf(stderr, "rejected[%zu]: got \"%s\"\n", i, err);
		CHECK(strcmp(err, rejected[i].err) == 0);
		conf_free(c);
	}
	/* a NUL byte, which strlen-based callers would never show us */
	c = conf_parse("t.conf", "user a\0b\n" LISTEN, 9 + strlen(LISTEN),
	    "/base", err, sizeof(err));
	CHECK(c == NULL);
	CHECK(strcmp(err, "t.conf:1: NUL byte in configuration") == 0);
}

static struct conf *
parse(const char *text, const char *basedir)
{
	char err[256];
	struct conf *c;

	c = conf_parse("t.conf", text, strlen(text), basedir, err, sizeof(err));
	if (c == NULL)
		fprintf(stderr, "unexpected error: %s\n", err);
	return c;
}

static struct sockaddr_storage *
addr(const char *s)
{
	static struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1)
		sin->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1)
		sin6->sin6_family = AF_INET6;
	return &ss;
}

static int
trusted(const struct conf *c, const char *s)
{
	return conf_is_trusted(c, (const struct sockaddr *)addr(s));
}

static void
test_conf_values(void)
{
	struct conf *c;

	c = parse("# a comment\r\n"
	    "hostname \"mx.Example.org\"   # trailing comment\r\n"
	    "user \"a#b \\\"q\\\" \\\\\"\n"
	    "spool run/spool\n"
	    "pidfile ~/x.pid\n"
	    "aliases \"/etc/my aliases\"\n"
	    "max-message-size 10m\n"
	    "max-command-length 1k\n"
	    "max-line-length 1000\n"
	    "command-timeout 90\n"
	    "data-timeout 1d\n"
	    "greeting-delay 500ms\n"
	    "queue-lifetime 60d\n"
	    "retry-max 2h\n"
	    "local-domain Example.ORG\n"
	    "local-domain localhost\n"
	    "trusted-network 192.168.0.0/23\n"
	    "trusted-network 2001:db8::/32\n"
	    "trusted-network 10.1.2.3\n"
	    "listen mx 127.0.0.1 port 25 max-message-size 2G "
	    "greeting-delay 0 max-recipients 7\n"
	    "listen msa ::1 port 587\n"
	    "virtual \"Demo@Example.org\" maildir mail/demo\n", "/srv/tern/");
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(strcmp(conf_str(c, K_HOSTNAME), "mx.Example.org") == 0);
	CHECK(strcmp(conf_str(c, K_USER), "a#b \"q\" \\") == 0);
	CHECK(strcmp(conf_str(c, K_SPOOL), "/srv/tern/run/spool") == 0);
	CHECK(strcmp(conf_str(c, K_PIDFILE), "/srv/tern/~/x.pid") == 0);
	CHECK(strcmp(conf_str(c, K_ALIASES), "/etc/my aliases") == 0);
	CHECK(strcmp(conf_str(c, K_CONTROL_GROUP), "adm") == 0);
	CHECK(strcmp(conf_str(c, K_MAILDIR), "~/Maildir") == 0);
	CHECK(c->v[K_USER].set && !c->v[K_CONTROL_GROUP].set);
	CHECK(conf_num(c, NULL, K_MAX_MESSAGE_SIZE) == 10LL * 1024 * 1024);
	CHECK(conf_num(c, NULL, K_MAX_COMMAND_LENGTH) == 1024);
	CHECK(conf_num(c, NULL, K_MAX_LINE_LENGTH) == 1000);
	CHECK(conf_num(c, NULL, K_COMMAND_TIMEOUT) == 90000);
	CHECK(conf_num(c, NULL, K_DATA_TIMEOUT) == 86400000LL);
	CHECK(conf_num(c, NULL, K_GREETING_DELAY) == 500);
	CHECK(conf_num(c, NULL, K_QUEUE_LIFETIME) == 60LL * 86400000);
	CHECK(conf_num(c, NULL, K_RETRY_MIN) == 60000);
	CHECK(conf_num(c, NULL, K_RETRY_MAX) == 7200000);
	CHECK(conf_num(c, NULL, K_MAX_RECIPIENTS) == 100);
	CHECK(conf_num(c, NULL, K_MAX_CONNECTIONS) == 4096);
	CHECK(conf_num(c, NULL, K_STRESS_THRESHOLD) == 75);
	CHECK(conf_num(c, NULL, K_STRESS_COMMAND_TIMEOUT) == 10000);

	CHECK(c->nlisteners == 2);
	if (c->nlisteners == 2) {
		const struct listener *mx = &c->listeners[0];
		const struct listener *msa = &c->listeners[1];
		const struct sockaddr_in *sin = (const void *)&mx->ss;
		const struct sockaddr_in6 *sin6 = (const void *)&msa->ss;

		CHECK(mx->role == ROLE_MX && msa->role == ROLE_MSA);
		CHECK(strcmp(mx->addr, "127.0.0.1") == 0 && mx->port == 25);
		CHECK(sin->sin_family == AF_INET && sin->sin_port == htons(25));
		CHECK(mx->sslen == sizeof(*sin));
		CHECK(sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));
		CHECK(sin6->sin6_family == AF_INET6 &&
		    sin6->sin6_port == htons(587));
		CHECK(msa->sslen == sizeof(*sin6));
		CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
		CHECK(mx->line == 20 && msa->line == 21);
		/* the listener's value beats the global one */
		CHECK(conf_num(c, mx, K_MAX_MESSAGE_SIZE) ==
		    2LL * 1024 * 1024 * 1024);
		CHECK(conf_num(c, mx, K_GREETING_DELAY) == 0);
		CHECK(conf_num(c, mx, K_MAX_RECIPIENTS) == 7);
		/* and falls back to the global one, or the default */
		CHECK(conf_num(c, msa, K_MAX_MESSAGE_SIZE) == 10LL * 1024 *
		    1024);
		CHECK(conf_num(c, msa, K_GREETING_DELAY) == 500);
		CHECK(conf_num(c, mx, K_MAX_ERRORS) == 10);
		CHECK(conf_num(c, mx, K_MAX_CONNECTIONS) == 4096);
	}

	CHECK(c->ndomains == 2 && strcmp(c->domains[0], "example.org") == 0);
	CHECK(conf_is_local_domain(c, "EXAMPLE.org"));
	CHECK(conf_is_local_domain(c, "localhost"));
	CHECK(!conf_is_local_domain(c, "sub.example.org"));
	CHECK(!conf_is_local_domain(c, "example.org."));
	CHECK(!conf_is_local_domain(c, "xample.org"));

	CHECK(trusted(c, "192.168.0.1"));
	CHECK(trusted(c, "192.168.1.255"));
	CHECK(!trusted(c, "192.168.2.0"));
	CHECK(!trusted(c, "192.167.255.255"));
	CHECK(trusted(c, "10.1.2.3"));
	CHECK(!trusted(c, "10.1.2.4"));
	CHECK(trusted(c, "2001:db8:ffff::1"));
	CHECK(!trusted(c, "2001:db9::1"));
	CHECK(trusted(c, "::ffff:192.168.1.7"));
	CHECK(!trusted(c, "::ffff:192.168.2.7"));
	CHECK(!trusted(c, "::1"));
	CHECK(!trusted(c, "::192.168.1.7"));	/* compatible, not mapped */
	CHECK(!conf_is_trusted(c, NULL));

	CHECK(c->nvusers == 1);
	CHECK(conf_find_vuser(c, "DEMO@example.ORG") != NULL);
	CHECK(conf_find_vuser(c, "demo@example.org.") == NULL);
	if (conf_find_vuser(c, "demo@example.org") != NULL) {
		const struct vuser *v = conf_find_vuser(c, "demo@example.org");

		CHECK(strcmp(v->address, "demo@example.org") == 0);
		CHECK(strcmp(v->maildir, "/srv/tern/mail/demo") == 0);
	}
	conf_free(c);
}

static void	test_conf_print_roundtrip(const struct conf *);

/* Each listener's TLS: its own setting, else the global one. */
static void
test_conf_tls(void)
{
	struct conf *c;

	c = parse("tls none\ntls-cert certs/chain.pem\n"
	    "listen mx 127.0.0.1 port 25\n"
	    "listen mx 127.0.0.1 port 26 tls starttls\n"
	    "listen msa 127.0.0.1 port 587 tls starttls\n"
	    "listen msa 127.0.0.1 port 465 tls implicit\n", "/base");
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(conf_tls_mode(c, NULL) == TLS_MODE_NONE);
	CHECK(conf_tls_mode(c, &c->listeners[0]) == TLS_MODE_NONE);
	CHECK(conf_tls_mode(c, &c->listeners[1]) == TLS_MODE_STARTTLS);
	CHECK(conf_tls_mode(c, &c->listeners[2]) == TLS_MODE_STARTTLS);
	CHECK(conf_tls_mode(c, &c->listeners[3]) == TLS_MODE_IMPLICIT);
	CHECK(strcmp(conf_str(c, K_TLS_CERT), "/base/certs/chain.pem") == 0);
	CHECK(c->v[K_TLS_CERT].line == 2 && c->v[K_TLS].line == 1);
	CHECK(conf_str(c, K_TLS_KEY) == NULL);
	test_conf_print_roundtrip(c);
	conf_free(c);

	c = parse(LISTEN, "/base");
	CHECK(c != NULL && conf_tls_mode(c, &c->listeners[0]) ==
	    TLS_MODE_STARTTLS);
	CHECK(c != NULL && conf_str(c, K_TLS_CERT) == NULL &&
	    c->v[K_TLS_CERT].line == 0);
	conf_free(c);
}

static void
test_conf_defaults(void)
{
	struct conf *c;
	struct buf b;

	c = parse(LISTEN, "/base");
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(conf_str(c, K_HOSTNAME) != NULL && *conf_str(c, K_HOSTNAME));
	CHECK(!c->v[K_HOSTNAME].set);
	CHECK(strcmp(conf_str(c, K_USER), "tern") == 0);
	CHECK(strcmp(conf_str(c, K_SPOOL), "/var/spool/tern") == 0);
	CHECK(strcmp(conf_str(c, K_PIDFILE), "/run/tern/ternd.pid") == 0);
	CHECK(strcmp(conf_str(c, K_CONTROL_SOCKET),
	    "/run/tern/control.sock") == 0);
	CHECK(strcmp(conf_str(c, K_ALIASES), "/etc/tern/aliases") == 0);
	CHECK(strcmp(conf_str(c, K_VIRTUAL_USER), "vmail") == 0);
	CHECK(strcmp(conf_str(c, K_DROP_GROUP), "terndrop") == 0);
	/* origin: the host name when there is no local-domain */
	CHECK(strcmp(conf_str(c, K_ORIGIN), conf_str(c, K_HOSTNAME)) == 0);
	CHECK(conf_str(c, K_MAX_RECIPIENTS) == NULL);
	CHECK(conf_num(c, NULL, K_MAX_MESSAGE_SIZE) == 35LL * 1024 * 1024);
	CHECK(conf_num(c, NULL, K_MAX_COMMAND_LENGTH) == 2048);
	CHECK(conf_num(c, NULL, K_MAX_LINE_LENGTH) == 16384);
	CHECK(conf_num(c, NULL, K_MAX_CONNECTIONS_PER_IP) == 20);
	CHECK(conf_num(c, NULL, K_COMMAND_TIMEOUT) == 300000);
	CHECK(conf_num(c, NULL, K_DATA_TIMEOUT) == 600000);
	CHECK(conf_num(c, NULL, K_GREETING_DELAY) == 1000);
	CHECK(conf_num(c, NULL, K_QUEUE_LIFETIME) == 5LL * 86400000);
	CHECK(conf_num(c, NULL, K_RETRY_MAX) == 3600000);
	/* DNSSEC validation is asked for, never assumed: a resolver that
	   strips signatures would hold back mail to every signed domain. */
	CHECK(strcmp(conf_str(c, K_DNSSEC_TRUST_ANCHOR), "none") == 0);
	CHECK(conf_num(c, NULL, K_VAULT_TIMEOUT) == 60000);
	CHECK(conf_num(c, &c->listeners[0], K_COMMAND_TIMEOUT) == 300000);
	CHECK(c->ndomains == 0 && c->ntrusted == 0 && c->nvusers == 0);
	CHECK(!trusted(c, "127.0.0.1"));

	buf_init(&b);
	conf_print(c, &b);
	CHECK(strstr(b.data, "\nmax-message-size 36700160\n") != NULL);
	CHECK(strstr(b.data, "\ncommand-timeout 300000ms\n") != NULL);
	CHECK(strstr(b.data, "\nspool \"/var/spool/tern\"\n") != NULL);
	CHECK(strstr(b.data, "\nlisten mx 127.0.0.1 port 25 max-message-size "
	    "36700160 max-recipients 100 ") != NULL);
	buf_free(&b);
	conf_free(c);

	/* every row of the table is in enum order and has help */
	for (int i = 0; i < K__COUNT; i++)
		CHECK(knob_defs[i].name != NULL && knob_defs[i].help != NULL);
	CHECK(strcmp(knob_defs[K_RETRY_MAX].name, "retry-max") == 0);
	CHECK(strcmp(knob_defs[K_HOSTNAME].name, "hostname") == 0);

	/* origin: set, or the first local-domain */
	c = parse(LISTEN "local-domain a.example\nlocal-domain b.example\n",
	    "/base");
	CHECK(c && strcmp(conf_str(c, K_ORIGIN), "a.example") == 0);
	conf_free(c);
	c = parse(LISTEN "local-domain a.example\norigin Mail.B.example\n",
	    "/base");
	CHECK(c && strcmp(conf_str(c, K_ORIGIN), "Mail.B.example") == 0);
	conf_free(c);
}

/* ternd -P output reads back as the same configuration. */
static void
test_conf_print_roundtrip(const struct conf *c)
{
	struct buf a, b;
	struct conf *c2;
	char err[256];

	buf_init(&a);
	buf_init(&b);
	conf_print(c, &a);
	c2 = conf_parse(c->file, a.data, a.len, "/elsewhere", err,
	    sizeof(err));
	CHECK(c2 != NULL);
	if (c2 == NULL)
		fprintf(stderr, "print round trip: %s\n", err);
	if (c2 != NULL) {
		conf_print(c2, &b);
		CHECK(a.len == b.len && strcmp(a.data, b.data) == 0);
	}
	conf_free(c2);
	buf_free(&a);
	buf_free(&b);
}

static void
test_conf_files(void)
{
	struct conf *c;
	struct buf text;
	char err[256];

	c = parse(conf_default_text, "/base");
	CHECK(c != NULL);
	if (c != NULL) {
		CHECK(strcmp(conf_str(c, K_HOSTNAME), "localhost") == 0);
		CHECK(strcmp(conf_str(c, K_SPOOL), "/base/run/spool") == 0);
		CHECK(strcmp(conf_str(c, K_ALIASES), "/base/run/aliases") == 0);
		CHECK(c->nlisteners >= 1 && c->listeners[0].port == 2525);
		/* Submission: STARTTLS on 2587, implicit TLS on 2465. */
		CHECK(c->nlisteners == 3 && c->listeners[1].port == 2587 &&
		    c->listeners[1].role == ROLE_MSA &&
		    conf_tls_mode(c, &c->listeners[1]) == TLS_MODE_STARTTLS);
		CHECK(c->nlisteners == 3 && c->listeners[2].port == 2465 &&
		    c->listeners[2].role == ROLE_MSA &&
		    conf_tls_mode(c, &c->listeners[2]) == TLS_MODE_IMPLICIT);
		CHECK(conf_is_local_domain(c, "localhost"));
		CHECK(trusted(c, "127.0.0.1") && trusted(c, "::1"));
		CHECK(trusted(c, "::ffff:127.0.0.1"));
		CHECK(!trusted(c, "192.0.2.1") && !trusted(c, "::2"));
		CHECK(conf_num(c, NULL, K_GREETING_DELAY) == 0);
		CHECK(conf_num(c, NULL, K_RETRY_MIN) == 60000);
		CHECK(conf_find_vuser(c, "demo@localhost") != NULL);
		if (conf_find_vuser(c, "demo@localhost") != NULL)
			CHECK(strcmp(conf_find_vuser(c, "demo@localhost")->
			    maildir, "/base/run/mail/demo/Maildir") == 0);
		test_conf_print_roundtrip(c);
	}
	conf_free(c);

	buf_init(&text);
	c = conf_load("conf/tern.conf", "/", &text, err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		fprintf(stderr, "conf/tern.conf: %s\n", err);
	if (c != NULL) {
		CHECK(text.len > 0 && strstr(text.data, "listen mx") != NULL);
		CHECK(c->nlisteners == 2 && c->listeners[0].port == 25);
		CHECK(strcmp(conf_str(c, K_SPOOL), "/var/spool/tern") == 0);
		CHECK(trusted(c, "::1") && trusted(c, "127.1.2.3"));
		test_conf_print_roundtrip(c);
	}
	conf_free(c);

	c = conf_load("regress/unit/no-such.conf", "/", &text, err,
	    sizeof(err));
	CHECK(c == NULL);
	CHECK(strcmp(err, "regress/unit/no-such.conf: No such file or "
	    "directory") == 0);
	buf_free(&text);
}

/* Every prefix of a good file parses or fails cleanly (ASan watches). */
static void
test_conf_prefixes(void)
{
	size_t len = strlen(conf_default_text), fails = 0;
	char err[256];
	struct conf *c;

	for (size_t i = 0; i <= len; i++) {
		c = conf_parse("t.conf", conf_default_text, i, "/base", err,
		    sizeof(err));
		if (c == NULL && strncmp(err, "t.conf:", 7) != 0)
			fails++;
		conf_free(c);
	}
	CHECK(fails == 0);
}

/* Who may send as what: own address, +extensions, allow-sender grants. */
static void
test_conf_senders(void)
{
	static const char text[] =
	    "local-domain \"example.org\"\nlocal-domain \"league.test\"\n"
	    "listen mx 127.0.0.1 port 25\n"
	    "listen msa 127.0.0.1 port 587\n"
	    "listen msa 127.0.0.1 port 588 auth-required no\n"
	    "allow-sender anna@example.org board@league.test @news.example\n"
	    "allow-sender Bob info@example.org\n"
	    "limit-messages-hour 7\n"
	    "limit Lists@example.org messages-hour 300 recipients-day 0\n"
	    "limit local:backup messages-day 5\n"
	    "limit local:www-data/PHP-fpm8.2 messages-hour 20\n";
	static const char *bad[] = {
	    "allow-sender anna\n", "allow-sender anna nobody\n",
	    "allow-sender anna x@-bad-\n", "allow-sender anna @\n",
	    "auth-required maybe\n", "limit anna\n",
	    "limit anna messages-hour\n", "limit anna messages-week 3\n",
	    "limit anna messages-hour -1\n", "limit anna messages-hour x\n",
	    "limit a messages-hour 1\nlimit A messages-day 2\n",
	};
	char err[512];
	struct conf *c;
	size_t i;

	c = conf_parse("t.conf", text, strlen(text), "/base", err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(conf_sender_allowed(c, "anna@example.org", "anna@example.org"));
	CHECK(conf_sender_allowed(c, "anna@example.org",
	    "ANNA+lists@Example.ORG"));
	CHECK(conf_sender_allowed(c, "anna@example.org", "board@league.test"));
	CHECK(conf_sender_allowed(c, "anna@example.org", "x@news.example"));
	CHECK(!conf_sender_allowed(c, "anna@example.org", "anna@league.test"));
	CHECK(!conf_sender_allowed(c, "anna@example.org", "bob@example.org"));
	CHECK(!conf_sender_allowed(c, "anna@example.org", "x@sub.news.example"));
	CHECK(!conf_sender_allowed(c, "anna@example.org", ""));
	CHECK(!conf_sender_allowed(c, "anna@example.org", "anna@"));
	/* A system account: its name at every local domain. */
	CHECK(conf_sender_allowed(c, "bob", "bob@example.org"));
	CHECK(conf_sender_allowed(c, "bob", "bob@league.test"));
	CHECK(conf_sender_allowed(c, "bob", "info@example.org"));
	CHECK(!conf_sender_allowed(c, "bob", "bob@elsewhere.example"));
	CHECK(!conf_sender_allowed(c, "bob", "bobby@example.org"));
	/* AUTH before MAIL: msa by default, never the MX unless told. */
	CHECK(!conf_auth_required(c, &c->listeners[0]));
	CHECK(conf_auth_required(c, &c->listeners[1]));
	CHECK(!conf_auth_required(c, &c->listeners[2]));
	CHECK(!conf_auth_required(c, NULL));
	/* Sending limits: the knobs, and an account's own (case-blind). */
	CHECK(conf_limit(c, "anna@example.org", LIM_MSG_HOUR) == 7);
	CHECK(conf_limit(c, "anna@example.org", LIM_MSG_DAY) == 500);
	CHECK(conf_limit(c, "anna@example.org", LIM_RCPT_HOUR) == 500);
	CHECK(conf_limit(c, "anna@example.org", LIM_RCPT_DAY) == 2000);
	CHECK(conf_limit(c, "lists@EXAMPLE.org", LIM_MSG_HOUR) == 300);
	CHECK(conf_limit(c, "lists@example.org", LIM_MSG_DAY) == 500);
	CHECK(conf_limit(c, "lists@example.org", LIM_RCPT_DAY) == 0);
	CHECK(conf_limit(c, "local:backup", LIM_MSG_DAY) == 5);
	CHECK(conf_limit(c, "local:backup", LIM_MSG_HOUR) == 7);
	/* A program of a local user, as smtp names it (lower case). */
	CHECK(conf_limit(c, "local:www-data/php-fpm8.2", LIM_MSG_HOUR) == 20);
	CHECK(conf_limit(c, "local:www-data/php-fpm8.2", LIM_MSG_DAY) == 500);
	CHECK(conf_limit(c, "local:www-data", LIM_MSG_HOUR) == 7);
	test_conf_print_roundtrip(c);
	conf_free(c);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c = conf_parse("t.conf", bad[i], strlen(bad[i]), "/base", err,
		    sizeof(err));
		CHECK(c == NULL && (strncmp(err, "t.conf:1: ", 10) == 0 ||
		    strncmp(err, "t.conf:2: ", 10) == 0));
		conf_free(c);
	}
}

/* A local domain and a virtual user named with U-labels: kept as A-labels. */
static void
test_conf_idna(void)
{
	static const char t[] = LISTEN
	    "local-domain \"B\xc3\xbc" "cher.example\"\n"
	    "virtual \"anna@b\xc3\xbc" "cher.example\" maildir /m\n";
	static const char bad[] = LISTEN
	    "local-domain \"\xe2\x98\x83.example\"\n";
	char err[512];
	struct conf *c;

	c = conf_parse("t.conf", t, strlen(t), "/base", err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(c->ndomains == 1 &&
	    strcmp(c->domains[0], "xn--bcher-kva.example") == 0);
	CHECK(conf_is_local_domain(c, "XN--BCHER-KVA.example"));
	CHECK(conf_find_vuser(c, "anna@xn--bcher-kva.example") != NULL);
	conf_free(c);
	c = conf_parse("t.conf", bad, strlen(bad), "/base", err, sizeof(err));
	CHECK(c == NULL && strstr(err, "malformed internationalized domain"));
	conf_free(c);
}

void
test_conf(void)
{
	test_conf_idna();
	test_conf_senders();
	test_conf_routes();
	test_conf_rejected();
	test_conf_tls();
	test_conf_values();
	test_conf_defaults();
	test_conf_files();
	test_conf_prefixes();
}
