/*
 * vault: the process that holds the secrets and parses no network input.
 * It gets them from the root parent (IMSG_P_SECRETS: the SRS key, every
 * route's credentials and the credential store's accounts with their
 * hashes, again at each reload and store change) and answers small,
 * length-checked requests from the smtp process over its channel: reverse
 * an SRS address, rewrite a forwarded sender, hand over one route's
 * credentials for one connection, check a user's password
 * (auth/authcheck.c), sign a DKIM digest with a domain's key (the keys
 * come in IMSG_P_SECRETS too).  Nothing in it reads a file or a socket other than
 * its channels.
 *
 * The client half (vault_client_*) runs in the smtp process: requests
 * carry a cookie and complete by callback, always from the event loop.
 */
#ifndef TERN_VAULT_H
#define TERN_VAULT_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define VAULT_SRS_DAYS	21	/* how long a rewritten sender stays valid */
#define VAULT_ROUTES_MAX 256	/* route credentials it holds at most */

/* Outcomes given to a client callback. */
#define VAULT_OK	0	/* done: the answer is in a (and b) */
#define VAULT_NONE	1	/* nothing to do: not ours, no credentials */
#define VAULT_INVALID	2	/* an SRS address of ours that fails, a wrong
				   password, an unknown or locked user:
				   a = why */
#define VAULT_TEMP	3	/* the vault is unavailable: try again later */

/*
 * cookie names the requester's object (a session or job id) so that an
 * answer for one that is gone finds nothing.  a and b live only during
 * the call: copy what is kept (b, a password, is wiped after).
 */
typedef void (*vault_cb)(uint64_t cookie, int status, const char *a,
    const char *b);

/* The smtp process's channel to the vault (a new one replaces the old). */
void	vault_client_channel(struct event_base *, int fd);
/*
 * How long a request may wait for its answer before it completes with
 * VAULT_TEMP (vault-timeout; 0: the default).  Longer than the vault's
 * own hold-back after failed logins (AUTHCHECK_DELAY_MAX).
 */
#define VAULT_TIMEOUT_MS	60000
void	vault_client_timeout(unsigned ms);
/* Requests: 0 sent, -1 no vault now (the callback is not called). */
int	vault_srs_reverse(const char *addr, vault_cb, uint64_t cookie);
int	vault_srs_forward(const char *sender, vault_cb, uint64_t cookie);
int	vault_route_auth(const char *authfile, vault_cb, uint64_t cookie);
/*
 * Check a user's password (SMTP AUTH).  client_addr is the client's IP
 * address as text, without brackets (letters, digits and ".:_-" only, or
 * the answer is VAULT_TEMP "malformed request"): the vault throttles
 * failures per address (an IPv6 one per /64) and per account.  The answer: VAULT_OK
 * (a = the canonical account name), VAULT_INVALID (a = "unknown user",
 * "bad password" or "locked": for the log, not for the client) or
 * VAULT_TEMP (a = why: too many failures, a busy or missing vault).  It
 * may come seconds later: the vault holds answers back after failures.
 */
int	vault_check_password(const char *user, const char *pass,
	    const char *client_addr, vault_cb, uint64_t cookie);
/*
 * DKIM: sign n SHA-256 digests (32 bytes each) with the keys of domain
 * that selectors name.  The answer: VAULT_OK (a = the base64 signatures
 * in order, separated by one space), VAULT_NONE (a key is not held) or
 * VAULT_TEMP.
 */
int	vault_dkim_sign(const char *domain, const char *const *selectors,
	    const unsigned char (*digests)[32], size_t n, vault_cb,
	    uint64_t cookie);
/* Requests waiting for an answer (shutdown waits for none). */
size_t	vault_client_pending(void);

#endif
