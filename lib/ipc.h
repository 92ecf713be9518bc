/*
 * ipc: small typed messages between ternd's processes over SOCK_SEQPACKET
 * socketpairs, each optionally carrying one file descriptor.  A message is
 * a 4-byte header (type, reserved) and a rec-encoded payload; the receiver
 * treats the payload as untrusted and checks every record.
 */
#ifndef TERN_IPC_H
#define TERN_IPC_H

#include <stddef.h>
#include <stdint.h>

#include "lib/rec.h"

#define IPC_MAX		(192 * 1024)	/* fits a SEQPACKET datagram */

/* Message types; see docs/ARCHITECTURE.md for who sends what. */
enum ipc_type {
	IMSG_NONE,
	IMSG_Q_CREATE,		/* smtp -> queue: a new message file, please */
	IMSG_Q_CREATED,		/* queue -> smtp: id and fd, or an error */
	IMSG_Q_RCPTS,		/* smtp -> queue: recipients (may repeat) */
	IMSG_Q_COMMIT,		/* smtp -> queue: envelope; make it durable */
	IMSG_Q_COMMITTED,	/* queue -> smtp: durable, or why not */
	IMSG_Q_ABORT,		/* smtp -> queue: drop an incoming message */
	IMSG_P_DELIVER,		/* queue -> parent: run a local delivery */
	IMSG_P_DELIVERED,	/* parent -> queue: its outcome */
	IMSG_P_PEER,		/* parent -> role: a peer channel (T_KIND) */
	IMSG_P_CONF,		/* parent -> queue: reloaded config text */
	IMSG_P_INIT,		/* parent -> new role: config and identity */
	IMSG_P_FD,		/* parent -> new role: a listener or socket */
	IMSG_P_SECRETS,		/* parent -> vault: SRS key, route credentials */
	IMSG_P_GO,		/* parent -> new role: start-up is complete */
	IMSG_P_SECCOMP,		/* role -> parent: a system call was refused */
	IMSG_M_DELIVER,		/* queue -> smtp: a remote delivery job */
	IMSG_M_RESULT,		/* smtp -> queue: its per-recipient outcome */
	IMSG_V_SRS_REVERSE,	/* smtp -> vault: reverse an SRS address */
	IMSG_V_SRS_FORWARD,	/* smtp -> vault: rewrite a forwarded sender */
	IMSG_V_ROUTE_AUTH,	/* smtp -> vault: one route's credentials */
	IMSG_V_REPLY,		/* vault -> smtp: the answer (T_JOB names it) */
	IMSG_V_AUTH,		/* smtp -> vault: check a user's password */
	IMSG_P_ACCOUNTS,	/* parent -> smtp, queue: virtual accounts */
	IMSG_P_CREDENTIALS,	/* queue -> parent: the store has changed */
	IMSG_P_TLS,		/* parent -> new smtp: certificate chain, key */
	IMSG_V_THROTTLE,	/* queue -> vault: list (or clear) the AUTH
				   throttle's entries */
	IMSG_V_DKIM_SIGN,	/* smtp -> vault: sign DKIM digests */
	IMSG_Q_DMARC,		/* smtp -> queue: a DMARC evaluation to keep */
	IMSG_P_FORWARD,		/* smtp -> parent: has this account a usable
				   ~/.forward?  parent -> smtp: the answer */
	IMSG__MAX
};

/* Record tags used in payloads. */
enum ipc_tag {
	T_SID = 1, T_ID, T_ERRNO, T_CODE, T_TEXT, T_SENDER, T_RCPT, T_HELO,
	T_CLIENT, T_PROTO, T_BODY, T_UTF8, T_SIZE, T_ARRIVAL, T_JOB, T_KIND,
	T_USER, T_UID, T_GID, T_PATH, T_STATUS, T_CONF, T_HOME, T_ORCPT,
	T_AUTH, T_DOMAIN, T_RELAY, T_TLS, T_DSN,
	T_FORWARD,	/* an address a ~/.forward sends the message on to */
	T_SELF,		/* worker -> parent -> queue: ~/.forward keeps
			   a copy */
	T_KEY,		/* parent -> vault: the SRS key; -> smtp: TLS key */
	T_PASS,		/* parent -> vault, vault -> smtp: a route password */
	T_FLAGS,	/* parent -> role: ROLE_F_* */
	T_INDEX,	/* parent -> role: a listener's index in the config */
	T_ACCOUNT,	/* parent -> vault, smtp, queue: an account's name */
	T_HASH,		/* parent -> vault: its password hash */
	T_LOCKED,	/* parent -> vault: 1 if it may not log in */
	T_CERT,		/* parent -> smtp: the certificate chain (PEM) */
	T_NRCPT,	/* smtp -> queue (Q_CREATE): recipients accepted */
	T_REJECTED,	/* smtp -> queue (Q_COMMIT): recipients refused */
	T_POLICY,	/* queue -> smtp (Q_CREATED): a limit refused it;
			 * T_TEXT is the reply after the code */
	T_THROTTLE,	/* vault -> queue (V_THROTTLE): one entry, itself
			 * records: T_KIND, T_ID, T_CODE failures, T_SIZE
			 * delay, T_STATUS refused, T_ARRIVAL until,
			 * T_KNOWN known clients (accounts) */
	T_RET,		/* smtp -> queue (Q_COMMIT): RET=, DSN_RET_* */
	T_ENVID,	/* smtp -> queue, queue -> smtp: ENVID=, decoded */
	T_URGENT,	/* smtp -> queue (Q_COMMIT): "Priority: urgent" from
			 * an authenticated sender */
	T_DKIM,		/* parent -> smtp (P_INIT): a key's public facts,
			 * "alg siglen domain selector"; parent -> vault
			 * (P_SECRETS): a key's domain, then T_SELECTOR, T_PEM */
	T_SELECTOR,	/* a DKIM selector */
	T_PEM,		/* parent -> vault: a DKIM private key (PEM) */
	T_DIGEST,	/* smtp -> vault (V_DKIM_SIGN): a digest to sign */
	T_QUARANTINE,	/* smtp -> queue (Q_COMMIT), queue -> parent (P_DELIVER),
			 * parent -> local worker: DMARC quarantine, into the
			 * Maildir's .Junk folder where there is one */
	T_KNOWN,	/* parent -> vault: the auth-known-clients window
			 * (seconds); in a T_THROTTLE account entry: the
			 * clients known to it */
};

/* T_FLAGS of a message sent in chunks (P_SECRETS, P_ACCOUNTS). */
#define IPC_F_MORE	0x1	/* more chunks follow; apply them together */
/* T_FLAGS of Q_CREATE: only ask whether the account's limits allow it
   (MAIL, RCPT); the answer is Q_CREATED without a file. */
#define Q_F_PROBE	0x1

/* IMSG_P_FD kinds (T_KIND) and IMSG_P_PEER kinds. */
#define FD_LISTENER	"listener"
#define FD_SUBMIT	"submit"
#define FD_CONTROL	"control"
#define FD_PICKUP	"pickup"	/* a maildrop pickup's connection */
#define PEER_QUEUE	"queue"
#define PEER_SMTP	"smtp"
#define PEER_VAULT	"vault"

/* IMSG_P_INIT flags. */
#define ROLE_F_FOREGROUND	0x1
#define ROLE_F_VERBOSE		0x2

struct event_base;
struct ipc;

typedef void (*ipc_cb)(struct ipc *, int type, struct rec_reader *,
    int fd, void *arg);
typedef void (*ipc_close_cb)(struct ipc *, void *arg);

struct ipc	*ipc_new(struct event_base *, int fd, ipc_cb, ipc_close_cb,
		    void *arg);
/*
 * Queue a message (payload may be NULL); takes ownership of fd if >= 0.
 * -1: the channel is dead, so the peer will never see this message; 0:
 * handed to the kernel or queued for it (the peer may still die first).
 */
int		 ipc_send(struct ipc *, int type, const void *, size_t, int fd);
/*
 * Dispatch every message already received, now, to the channel's
 * callback: for a channel about to be replaced, whose peer is known to be
 * gone, so no reply it sent before dying is thrown away.  Returns 1 if the
 * peer has closed (its close callback will still come from the loop,
 * unless the channel is freed first), 0 if it is still open.
 */
int		 ipc_drain(struct ipc *);
void		 ipc_free(struct ipc *);
int		 ipc_fd(const struct ipc *);
/*
 * Blocking receive of one message, for a role's start-up before its event
 * loop runs: the type, the payload in buf (cap bytes) and its length, and
 * a descriptor or -1.  Waits at most timeout_ms.  -1 on error, EOF or
 * timeout.
 */
int		 ipc_recv_wait(int fd, int *type, void *buf, size_t cap,
		    size_t *len, int *msgfd, int timeout_ms);

#endif
