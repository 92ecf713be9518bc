/*
 * authcheck: the vault's password checks, with no socket and no clock of
 * its own (the caller gives the time), so that the decision and the
 * throttle are tested directly.  It holds the accounts the parent sent
 * (name, hash, locked) and counts failed attempts per client address (an
 * IPv6 client by its /64) and per account, in two fixed-size tables that
 * forget the least recently used entry when full.
 *
 * One check is one yescrypt computation, known account or not: an unknown
 * name is hashed against the first account's setting (same cost, result
 * thrown away).  The answer waits `delay` seconds, which grows with the
 * failures counted before the attempt (0, 1, 2, 4, 8, 16, 16 ...), and
 * applies to a right password too, so that a client cannot tell a wrong
 * guess by the time the answer takes.  After AUTHCHECK_LIMIT failures the
 * client or account gets VAULT_TEMP without a check, until
 * AUTHCHECK_WINDOW seconds have passed since its last failure.
 *
 * Known clients: each account remembers the clients that logged in to it
 * with its password within the known window (auth-known-clients, 30 days
 * by default), an IPv4 one by its /24, an IPv6 one by its /64, at most
 * AUTHCHECK_KNOWN_PER an account and AUTHCHECK_KNOWN_MAX in all (the
 * oldest success is forgotten first).  The account's failures neither
 * refuse nor delay a known client (its own failures still do), so that
 * guesses from elsewhere cannot lock the account's users out; a client
 * the account has not seen is refused as before.  A success ends the
 * account's count only while it is below the limit: a refusal runs its
 * window out.
 */
#ifndef TERN_AUTHCHECK_H
#define TERN_AUTHCHECK_H

#include <stddef.h>
#include <time.h>

#include "auth/credstore.h"

#define AUTHCHECK_CLIENTS	4096	/* client entries kept */
#define AUTHCHECK_ACCOUNTS	4096	/* account entries kept */
#define AUTHCHECK_LIMIT		10	/* failures, then refused for ... */
#define AUTHCHECK_WINDOW	(15 * 60)	/* ... this long after the last */
#define AUTHCHECK_DELAY_MAX	16	/* seconds */
#define AUTHCHECK_CLIENT_MAX	64	/* a client key: an address, or /64 */
#define AUTHCHECK_KNOWN_PER	8	/* known clients of one account */
#define AUTHCHECK_KNOWN_MAX	8192	/* known clients, all accounts */
#define AUTHCHECK_KNOWN_DAYS	30	/* the known window's default */

struct authcheck;

struct authcheck_result {
	int		 status;	/* VAULT_OK, VAULT_INVALID, VAULT_TEMP */
	char		 text[CRED_NAME_MAX + 1];	/* OK: canonical name;
							   else the reason */
	unsigned	 failures;	/* counted after this attempt (the
					   client's or the account's, larger) */
	unsigned	 delay;		/* seconds to hold the answer back */
	int		 hashed;	/* a hash was computed */
	int		 known;		/* a known client of the account */
};

struct authcheck *authcheck_new(void);
void	authcheck_free(struct authcheck *);
/* Replace the accounts; takes v (malloc'd), wipes what it replaces. */
void	authcheck_set_accounts(struct authcheck *, struct cred *v, size_t n);
size_t	authcheck_count(const struct authcheck *);
void	authcheck_run(struct authcheck *, const char *user, const char *pass,
	    const char *client, time_t now, struct authcheck_result *);
/* Count one failure for a client and (if not NULL) an account. */
void	authcheck_fail(struct authcheck *, const char *client,
	    const char *account, time_t now);
/* The failures counted now for a client and for an account (0 if none). */
unsigned authcheck_failures(struct authcheck *, const char *client,
	    const char *account, time_t now);
/* How long a success keeps a client known, in seconds (0: none is). */
void	authcheck_set_known_window(struct authcheck *, time_t);
/* Remember a success of a client to an account (done by a right password
   in authcheck_run); whether a client is known to an account now. */
void	authcheck_known_add(struct authcheck *, const char *account,
	    const char *client, time_t now);
int	authcheck_known(struct authcheck *, const char *account,
	    const char *client, time_t now);
/* Known clients of an account now, and of all accounts (at most
   AUTHCHECK_KNOWN_MAX, expired ones left out). */
unsigned authcheck_known_count(struct authcheck *, const char *account,
	    time_t now);
size_t	authcheck_known_total(struct authcheck *, time_t now);
/* The known key of a client: an IPv4 address's /24, an IPv6 one's /64. */
void	authcheck_known_key(const char *client, char *out, size_t outlen);
/*
 * What the throttle holds now, for `ternctl auth`: calls fn once per
 * client (kind 0) and account (kind 1) with failures not yet forgotten:
 * its key, the failures counted, the delay its next attempt waits, and
 * until when its failures count (it is refused until then when refused
 * is set), and for an account the clients known to it (else 0).
 */
void	authcheck_walk(struct authcheck *, time_t now,
	    void (*fn)(void *arg, int kind, const char *key, unsigned failures,
	    unsigned delay, int refused, time_t until, unsigned known),
	    void *arg);
/* Forget a client's or an account's failures (`ternctl auth clear`): the
   number of entries cleared (a key can name a client and an account). */
int	authcheck_clear(struct authcheck *, const char *key);
/* The throttle's key for a client: the address, an IPv6 one as its /64. */
void	authcheck_client_key(const char *client, char *out, size_t outlen);

#endif
