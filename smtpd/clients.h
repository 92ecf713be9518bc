/*
 * clients: how many sessions each client address holds, kept by the smtp
 * process for max-connections-per-ip and for choosing, when every slot is
 * taken, the address that holds the most.  Addresses are IPv4 or IPv6;
 * anything else (the local submission socket) is not counted.
 */
#ifndef TERN_CLIENTS_H
#define TERN_CLIENTS_H

#include <stddef.h>
#include <sys/socket.h>

/* Count one more session from this address; returns its new count. */
size_t	clients_add(const struct sockaddr_storage *);
/* One session fewer; an address with none is forgotten. */
void	clients_remove(const struct sockaddr_storage *);
size_t	clients_count(const struct sockaddr_storage *);
/* The address holding the most sessions (into *out) and how many. */
size_t	clients_busiest(struct sockaddr_storage *out);
/* Whether two socket addresses name the same client address. */
int	clients_same(const struct sockaddr_storage *,
	    const struct sockaddr_storage *);
/* Forget every address (tests). */
void	clients_clear(void);

#endif
