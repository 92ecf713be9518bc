/*
 * clients: per-address session counts for the smtp process.  A chained
 * hash table keyed by the address bytes, with a random seed so a client
 * cannot choose addresses that all land in one chain; it grows with the
 * number of addresses, which max-connections bounds.  Counting at accept
 * and finding the busiest address when full cost no scan of the sessions.
 */
#include <sys/random.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "smtpd/clients.h"

struct client {
	struct client	*next;
	int		 family;
	unsigned char	 addr[16];
	size_t		 n;
};

static struct {
	struct client	**tab;
	size_t		 size;		/* buckets, a power of two */
	size_t		 count;		/* addresses */
	uint64_t	 seed;
} clients;

/* The address bytes of a socket address; 0 for one we do not count. */
static size_t
clients_key(const struct sockaddr_storage *ss, const unsigned char **p)
{
	if (ss->ss_family == AF_INET) {
		*p = (const unsigned char *)
		    &((const struct sockaddr_in *)ss)->sin_addr;
		return 4;
	}
	if (ss->ss_family == AF_INET6) {
		*p = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		return 16;
	}
	return 0;
}

static uint64_t
clients_hash(int family, const unsigned char *p, size_t len)
{
	uint64_t h = clients.seed ^ 14695981039346656037ULL;
	size_t i;

	h = (h ^ (uint64_t)family) * 1099511628211ULL;
	for (i = 0; i < len; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h ^ (h >> 29);
}

static void
clients_grow(void)
{
	struct client **tab, *c, *next;
	size_t size = clients.size ? clients.size * 2 : 64, i, b;

	if (clients.size == 0 && getrandom(&clients.seed, sizeof(clients.seed),
	    GRND_NONBLOCK) != sizeof(clients.seed))
		clients.seed = (uint64_t)(uintptr_t)&clients ^ (uint64_t)rand();
	tab = xcalloc(size, sizeof(*tab));
	for (i = 0; i < clients.size; i++)
		for (c = clients.tab[i]; c; c = next) {
			next = c->next;
			b = clients_hash(c->family, c->addr, c->family ==
			    AF_INET ? 4 : 16) & (size - 1);
			c->next = tab[b];
			tab[b] = c;
		}
	free(clients.tab);
	clients.tab = tab;
	clients.size = size;
}

/* The bucket slot holding this address's entry (or where it would go). */
static struct client **
clients_slot(const struct sockaddr_storage *ss)
{
	const unsigned char *p = NULL;
	size_t len = clients_key(ss, &p);
	struct client **cp;

	if (len == 0 || clients.size == 0)
		return NULL;
	cp = &clients.tab[clients_hash(ss->ss_family, p, len) &
	    (clients.size - 1)];
	for (; *cp; cp = &(*cp)->next)
		if ((*cp)->family == ss->ss_family &&
		    memcmp((*cp)->addr, p, len) == 0)
			break;
	return cp;
}

size_t
clients_add(const struct sockaddr_storage *ss)
{
	const unsigned char *p = NULL;
	size_t len = clients_key(ss, &p);
	struct client **cp, *c;

	if (len == 0)
		return 0;
	if (clients.count >= clients.size)
		clients_grow();
	cp = clients_slot(ss);
	if ((c = *cp) == NULL) {
		c = xcalloc(1, sizeof(*c));
		c->family = ss->ss_family;
		memcpy(c->addr, p, len);
		*cp = c;
		clients.count++;
	}
	return ++c->n;
}

void
clients_remove(const struct sockaddr_storage *ss)
{
	struct client **cp = clients_slot(ss), *c;

	if (cp == NULL || (c = *cp) == NULL)
		return;
	if (--c->n > 0)
		return;
	*cp = c->next;
	free(c);
	clients.count--;
}

size_t
clients_count(const struct sockaddr_storage *ss)
{
	struct client **cp = clients_slot(ss);

	return cp && *cp ? (*cp)->n : 0;
}

size_t
clients_busiest(struct sockaddr_storage *out)
{
	const struct client *c, *best = NULL;
	size_t i;

	for (i = 0; i < clients.size; i++)
		for (c = clients.tab[i]; c; c = c->next)
			if (best == NULL || c->n > best->n)
				best = c;
	memset(out, 0, sizeof(*out));
	if (best == NULL)
		return 0;
	out->ss_family = (sa_family_t)best->family;
	if (best->family == AF_INET)
		memcpy(&((struct sockaddr_in *)out)->sin_addr, best->addr, 4);
	else
		memcpy(((struct sockaddr_in6 *)out)->sin6_addr.s6_addr,
		    best->addr, 16);
	return best->n;
}

int
clients_same(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	const unsigned char *pa = NULL, *pb = NULL;
	size_t la = clients_key(a, &pa), lb = clients_key(b, &pb);

	return la != 0 && la == lb && a->ss_family == b->ss_family &&
	    memcmp(pa, pb, la) == 0;
}

void
clients_clear(void)
{
	struct client *c, *next;
	size_t i;

	for (i = 0; i < clients.size; i++)
		for (c = clients.tab[i]; c; c = next) {
			next = c->next;
			free(c);
		}
	free(clients.tab);
	clients.tab = NULL;
	clients.size = clients.count = 0;
}
