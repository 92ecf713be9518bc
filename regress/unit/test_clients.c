/*
 * test_clients: per-address session counts (IPv4 and IPv6 apart, the
 * local socket not counted), the busiest address, and growth of the table
 * through thousands of addresses without losing a count.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "regress/unit/unit.h"
#include "smtpd/clients.h"

void test_clients(void);

static struct sockaddr_storage
v4(unsigned a)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(a);
	sin->sin_port = htons((unsigned short)(a * 7));	/* ports differ */
	return ss;
}

static struct sockaddr_storage
v6(const char *text)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	sin6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, text, &sin6->sin6_addr);
	return ss;
}

static void
test_clients_many(void)
{
	struct sockaddr_storage a, top;
	unsigned i;
	int ok = 1;

	for (i = 0; i < 5000; i++) {
		a = v4(0x0a000000 + i);
		clients_add(&a);
		if (i % 7 == 0)
			clients_add(&a);
	}
	a = v4(0x0a000000 + 4242);
	clients_add(&a);
	clients_add(&a);
	clients_add(&a);
	CHECK(clients_busiest(&top) == 4u + (4242 % 7 == 0));
	CHECK(clients_same(&top, &a));
	for (i = 0; i < 5000; i++) {
		a = v4(0x0a000000 + i);
		if (clients_count(&a) != 1u + (i % 7 == 0) + 3u * (i == 4242))
			ok = 0;
	}
	CHECK(ok);
	clients_clear();
	CHECK(clients_busiest(&top) == 0);
}

void
test_clients(void)
{
	struct sockaddr_storage a = v4(0x7f000001), b = v4(0x7f000002);
	struct sockaddr_storage a2 = v4(0x7f000001), c = v6("2001:db8::1");
	struct sockaddr_storage d = v6("2001:db8::2"), top, local;

	memset(&local, 0, sizeof(local));
	local.ss_family = AF_UNIX;
	CHECK(clients_count(&a) == 0);
	CHECK(clients_busiest(&top) == 0);
	CHECK(clients_add(&a) == 1);
	CHECK(clients_add(&a2) == 2);	/* same address, other port */
	CHECK(clients_add(&b) == 1);
	CHECK(clients_add(&c) == 1);
	CHECK(clients_add(&local) == 0);
	CHECK(clients_count(&local) == 0);
	CHECK(clients_count(&d) == 0);
	CHECK(clients_busiest(&top) == 2 && clients_same(&top, &a));
	CHECK(!clients_same(&a, &b) && !clients_same(&c, &d));
	CHECK(!clients_same(&local, &local));
	clients_add(&c);
	clients_add(&c);
	CHECK(clients_busiest(&top) == 3 && clients_same(&top, &c));
	clients_remove(&a);
	clients_remove(&a);
	clients_remove(&a);		/* one too many: ignored */
	CHECK(clients_count(&a) == 0);
	clients_remove(&d);		/* never added */
	CHECK(clients_count(&b) == 1 && clients_count(&c) == 3);
	clients_clear();
	CHECK(clients_count(&c) == 0);
	test_clients_many();
}
