/*
 * conf: the configuration grammar, its knob table and the parsed result.
 * The parent parses the file; the smtp and queue roles receive the same
 * text over their channel (IMSG_P_INIT, IMSG_P_CONF) and parse it again, so
 * they hold an identical struct conf.  Secrets the file names (route auth
 * files) are read by the parent alone and go to the vault only.
 */
#ifndef TERN_CONF_H
#define TERN_CONF_H

#include <stddef.h>
#include <sys/socket.h>

struct buf;

enum knob_type { KNOB_STRING, KNOB_PATH, KNOB_INT, KNOB_SIZE, KNOB_DURATION };

/* Every scalar setting is declared once, in conf.c's knob table. */
enum knob_id {
	K_HOSTNAME,		/* string: name in greeting, Received:, EHLO */
	K_ORIGIN,		/* string: domain sendmail(1) adds to bare names */
	K_USER,			/* string: unprivileged user children run as */
	K_SPOOL,		/* path: queue directory */
	K_PIDFILE,		/* path */
	K_CONTROL_SOCKET,	/* path: ternctl's socket */
	K_CONTROL_GROUP,	/* string: group allowed on the control socket */
	K_SUBMIT_SOCKET,	/* path: local submission (sendmail) socket */
	K_DROP_GROUP,		/* string: group of spool/maildrop (ternctl's) */
	K_ALIASES,		/* path: aliases source; the map is path + ".db" */
	K_MAILDIR,		/* string: system users' Maildir, "~/" = home */
	K_VIRTUAL_USER,		/* string: account virtual deliveries run as */
	K_MAX_MESSAGE_SIZE,	/* size (bytes), per listener */
	K_MAX_RECIPIENTS,	/* int, per listener */
	K_MAX_TRUSTED_RECIPIENTS, /* int: for trusted and local clients */
	K_MAX_ERRORS,		/* int, per listener */
	K_MAX_COMMAND_LENGTH,	/* size, per listener */
	K_MAX_LINE_LENGTH,	/* size: longest DATA line, per listener */
	K_MAX_HOPS,		/* int: Received: headers before a loop */
	K_MAX_CONNECTIONS,	/* int: all listeners together */
	K_MAX_CONNECTIONS_PER_IP, /* int */
	K_STRESS_THRESHOLD,	/* int: % of max-connections that is stress */
	K_STRESS_COMMAND_TIMEOUT, /* duration (ms): command-timeout under
				   * stress, per listener */
	K_COMMAND_TIMEOUT,	/* duration (ms), per listener */
	K_DATA_TIMEOUT,		/* duration (ms), whole DATA phase, per listener */
	K_GREETING_DELAY,	/* duration (ms), per listener */
	K_QUEUE_LIFETIME,	/* duration (ms) */
	K_RETRY_MIN,		/* duration (ms): first retry interval */
	K_RETRY_MAX,		/* duration (ms): longest retry interval */
	K_DELAY_WARNING,	/* duration (ms): delay DSN after this; 0 = none */
	K_MAX_DELIVERIES,	/* int: deliveries in flight, all destinations */
	K_MAX_DOMAIN_CONNECTIONS, /* int: connections to one destination */
	K_MAX_TXN_RECIPIENTS,	/* int: recipients per outgoing transaction */
	K_CONNECT_TIMEOUT,	/* duration (ms): outgoing TCP connect */
	K_REMOTE_PORT,		/* int: port of MX hosts (25; tests change it) */
	K_TLS_VERIFY,		/* string yes|no: verify peers' certificates */
	K_CA_FILE,		/* path: CA bundle for verification */
	K_CA_PATH,		/* path: hashed CA directory (c_rehash) */
	K_DNSSEC_TRUST_ANCHOR,	/* string: anchor file, absolute; none: off */
	K_SRS_SECRET,		/* path: SRS key file (made at first start) */
	K_SRS_DOMAIN,		/* string: domain of rewritten senders */
	K_LOCAL_DELIVERY,	/* string maildir|mbox|lmtp: system accounts */
	K_MBOX_DIR,		/* path: mbox spool, /var/mail */
	K_LMTP,			/* string: "unix:/path" or "host:port" */
	K_LOCAL_WORKER_IDLE,	/* duration (ms): a local worker's idle life */
	K_MAX_ACCOUNT_DELIVERIES, /* int: local deliveries to one account */
	K_VAULT_TIMEOUT,	/* duration (ms): a vault request's answer */
	K_LOCAL_WORKER_TIMEOUT,	/* duration (ms): a worker's Maildir write */
	K_LMTP_VERIFY,		/* string probe|map: RCPT of LMTP recipients */
	K_LMTP_RECIPIENTS,	/* path: the map for lmtp-verify map */
	K_LMTP_VERIFY_CACHE,	/* duration (ms): a probe's yes is kept */
	K_LMTP_VERIFY_NEGATIVE,	/* duration (ms): a probe's no is kept */
	K_CREDENTIALS,		/* path: the credential store (Berkeley DB) */
	K_VIRTUAL_MAILDIR,	/* path: store accounts' Maildir, %d %u */
	K_TLS,			/* string starttls|implicit|none, per listener
				 * (n holds the TLS_MODE_*) */
	K_TLS_CERT,		/* path: certificate chain (PEM), read by the
				 * parent; unset: a self-signed one is made */
	K_TLS_KEY,		/* path: its private key (default: in tls-cert) */
	K_AUTH_REQUIRED,	/* string yes|no, per listener; unset: msa yes */
	K_AUTH_KNOWN_CLIENTS,	/* duration (ms): a client that logged in to
				 * an account passes its lockout this long */
	K_LIMIT_MESSAGES_HOUR,	/* int: per account (and local user); 0 none */
	K_LIMIT_MESSAGES_DAY,	/* int */
	K_LIMIT_RECIPIENTS_HOUR, /* int */
	K_LIMIT_RECIPIENTS_DAY,	/* int */
	K_BREAKER_FACTOR,	/* int: trip above this times the usual rate */
	K_BREAKER_FLOOR,	/* int: ...and above this many messages an hour */
	K_BREAKER_REJECT_PERCENT, /* int: trip at this share of rejected
				   * recipients in the last hour (0: never) */
	K_BREAKER_REJECT_MIN,	/* int: ...once at least this many were */
	K_SPF,			/* string yes|no, per listener; unset: mx yes */
	K_SPF_TIMEOUT,		/* duration (ms): longest wait for a verdict */
	K_PACING,		/* string yes|no: learn each destination's rate */
	K_THROTTLE_REPLIES,	/* path: replies that mean "slow down" */
	K_RETRY_JITTER,		/* int: % of a retry interval added at random */
	K_QUEUE_SWEEP,		/* duration (ms): look at every message this often */
	K_CONNECTION_IDLE,	/* duration (ms): keep an idle outgoing one */
	K_CONNECTION_MESSAGES,	/* int: transactions on one outgoing one */
	K_FALLBACK_AFTER,	/* duration (ms): deferred this long: fallback */
	K_DKIM_KEY_DIR,		/* path: where ternctl dkim keygen writes */
	K_DKIM_SIGN_TRUSTED,	/* string yes|no: sign trusted-network mail */
	K_DMARC,		/* string enforce|monitor|off, per listener;
				 * unset: enforce on mx */
	K_DKIM_VERIFY,		/* string yes|no, per listener; unset: mx yes */
	K_AUTHSERV_ID,		/* string: Authentication-Results id; hostname */
	K__COUNT
};

struct knob_def {
	const char	*name;
	enum knob_type	 type;
	const char	*def;		/* default, in config syntax; NULL = unset */
	long long	 min, max;	/* numeric bounds (after unit scaling) */
	int		 per_listener;	/* may be set on a listen line */
	const char	*help;
};

extern const struct knob_def knob_defs[K__COUNT];

struct knob_val {
	char		*s;		/* STRING and PATH */
	long long	 n;		/* INT, SIZE (bytes), DURATION (ms) */
	int		 set;		/* set explicitly (for listener overrides) */
	int		 line;		/* where, for messages; 0: the default */
};

/* A listener's TLS (knob tls): STARTTLS offered, TLS from the first byte
 * (RFC 8314, msa only), or none. */
#define TLS_MODE_STARTTLS	0
#define TLS_MODE_IMPLICIT	1
#define TLS_MODE_NONE		2

enum role { ROLE_MX, ROLE_MSA, ROLE_LOCAL };	/* LOCAL: sendmail(1) */

struct listener {
	enum role		 role;
	char			 addr[64];	/* as written: 127.0.0.1, ::1, * */
	int			 port;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen;
	struct knob_val		 knobs[K__COUNT];	/* only per_listener used */
	int			 line;
};

struct netmask {
	int		 family;	/* AF_INET or AF_INET6 */
	unsigned char	 addr[16];
	int		 bits;
};

struct vuser {
	char		*address;	/* lower-cased local@domain */
	char		*maildir;	/* absolute path */
};

/* A relay for one domain, or for everything ("*": the smarthost). */
struct route {
	char		*domain;	/* lower-cased, or "*" */
	char		*host;
	int		 port;		/* default 25 */
	int		 tls;		/* ROUTE_TLS_* */
	char		*authfile;	/* "user:password" file, or NULL */
	char		*authuser;	/* read by the parent at load */
	char		*authpass;
	int		 line;
	int		 lmtp;		/* via lmtp: speak LMTP (RFC 2033) */
	char		*path;		/* via lmtp unix:PATH, else NULL */
};

#define ROUTE_TLS_OPPORTUNISTIC	0	/* STARTTLS when offered */
#define ROUTE_TLS_REQUIRED	1	/* STARTTLS or fail (temporarily) */
#define ROUTE_TLS_VERIFY	2	/* required, certificate verified */
#define ROUTE_TLS_NONE		3	/* never */

/* allow-sender ACCOUNT ADDRESS|@DOMAIN: what ACCOUNT may send as. */
struct grant {
	char		*account;	/* lower-cased login name */
	char		*address;	/* lower-cased address or "@domain" */
};

/* The per-account sending limits (limit-* knobs, `limit` statements). */
enum limit_kind { LIM_MSG_HOUR, LIM_MSG_DAY, LIM_RCPT_HOUR, LIM_RCPT_DAY,
	LIM__COUNT };

/* limit ACCOUNT messages-hour N ...: one account's own limits. */
struct acct_limit {
	char		*account;	/* lower-cased; "local:NAME" for sendmail */
	long long	 v[LIM__COUNT];	/* -1: the global knob */
};

/* destination NAME ...: static shaping for a domain or an MX host. */
struct shape {
	char		*name;		/* lower-cased domain or host */
	int		 conns;		/* 0: the global knob */
	int		 rcpts;		/* recipients per transaction; 0: knob */
	int		 mpm;		/* messages a minute; 0: no limit */
	int		 mpc;		/* messages per connection; 0: knob */
};

/* The fallback-relay statement is kept as a route with this domain. */
#define ROUTE_FALLBACK	"!fallback"

/* dkim-key DOMAIN SELECTOR PATH: a signing key (read by the parent). */
struct dkimkey {
	char		*domain;	/* lower-cased */
	char		*selector;
	char		*path;
	char		*pem;		/* the parent's copy, for the vault */
	size_t		 pemlen;
	int		 alg;		/* DKIM_ALG_* */
	size_t		 siglen;
	int		 line;
};

struct conf {
	char		*file;		/* name used in error messages */
	struct knob_val	 v[K__COUNT];
	char		**domains;	/* lower-cased local domains */
	size_t		 ndomains;
	struct netmask	*trusted;
	size_t		 ntrusted;
	struct listener	*listeners;
	size_t		 nlisteners;
	struct vuser	*vusers;
	size_t		 nvusers;
	struct sockaddr_storage *resolvers;	/* empty: /etc/resolv.conf */
	socklen_t	*resolverlen;
	size_t		 nresolvers;
	struct route	*routes;
	size_t		 nroutes;
	struct grant	*grants;	/* allow-sender: more senders for */
	size_t		 ngrants;	/* an account */
	struct acct_limit *limits;	/* limit: per-account overrides */
	size_t		 nlimits;
	struct shape	*shapes;	/* destination: static shaping */
	size_t		 nshapes;
	struct dkimkey	*dkimkeys;	/* dkim-key */
	size_t		 ndkimkeys;
};

/*
 * Parse configuration text.  Relative paths are made absolute against
 * basedir (the directory ternd was started in).  On error returns NULL and
 * writes "file:line: message" into err.
 */
struct conf	*conf_parse(const char *name, const char *text, size_t len,
		    const char *basedir, char *err, size_t errlen);
struct conf	*conf_load(const char *path, const char *basedir,
		    struct buf *text, char *err, size_t errlen);
void		 conf_free(struct conf *);

const char	*conf_str(const struct conf *, enum knob_id);
/* Listener value if set there, else global, else default. l may be NULL. */
long long	 conf_num(const struct conf *, const struct listener *,
		    enum knob_id);
int		 conf_is_local_domain(const struct conf *, const char *);
/* Does this listener check SPF (knob spf; unset: on MX listeners)? */
int		 conf_spf_enabled(const struct conf *, const struct listener *);
/* DMARC on this listener (knob dmarc; unset: enforce on MX listeners). */
#define DMARC_MODE_OFF		0
#define DMARC_MODE_MONITOR	1
#define DMARC_MODE_ENFORCE	2
int		 conf_dmarc_mode(const struct conf *, const struct listener *);
/* ...verify DKIM signatures (knob dkim-verify; unset: on MX listeners)? */
int		 conf_dkim_verify_enabled(const struct conf *,
		    const struct listener *);
/* Whether an authenticated account may use addr as sender or From:. */
int		 conf_sender_allowed(const struct conf *, const char *account,
		    const char *addr);
/* An account's sending limit of one kind; 0 means none. */
long long	 conf_limit(const struct conf *, const char *account,
		    enum limit_kind);
/* The limit statement's words, by enum limit_kind. */
extern const char *const conf_limit_names[LIM__COUNT];
/* Whether the listener requires AUTH before MAIL (msa: yes by default). */
int		 conf_auth_required(const struct conf *, const struct listener *);
/* A listener's TLS_MODE_* (l may be NULL: the global setting). */
int		 conf_tls_mode(const struct conf *, const struct listener *);
int		 conf_is_trusted(const struct conf *, const struct sockaddr *);
const struct vuser *conf_find_vuser(const struct conf *, const char *);
/* The route for a destination domain: exact match, then "*", or NULL. */
const struct route *conf_find_route(const struct conf *, const char *);
/* The LMTP route of a domain (route ... via lmtp), or NULL. */
const struct route *conf_lmtp_route(const struct conf *, const char *);
/* Fill r from "unix:/path", "host:port" or "[v6]:port" (lmtp knob). */
int		 conf_lmtp_spec(const char *spec, struct route *r);
/* The relay for mail deferred longer than fallback-after, or NULL. */
const struct route *conf_fallback_route(const struct conf *);
/* Static shaping of a domain or MX host (lower case), or NULL. */
const struct shape *conf_find_shape(const struct conf *, const char *);
/* Read every route's auth file and DKIM key (the parent does, as root). */
int		 conf_load_secrets(struct conf *, char *err, size_t errlen);
/* ternd -P: effective settings, globally and per listener. */
void		 conf_print(const struct conf *, struct buf *);

extern const char conf_default_text[];	/* embedded development config */

#endif
