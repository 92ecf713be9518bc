/*
 * conf: the configuration grammar.  A line-based, pf-like language whose
 * scalar settings are all declared once in knob_defs[] below; the rest are
 * the few structured statements (local-domain, trusted-network, listen,
 * virtual).  The root parent parses the file at start-up and on reload;
 * every child parses the very same text again from IPC, so this code must
 * be deterministic and must treat its input as untrusted (it is fuzzed).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/dkim.h"
#include "conf/conf.h"
#include "lib/addr.h"
#include "lib/util.h"

#define CONF_MAX_FILE	(1024 * 1024)
#define KIB		1024LL
#define MIB		(1024LL * 1024)
#define GIB		(1024LL * 1024 * 1024)
#define SEC		1000LL
#define MIN		(60 * SEC)
#define HOUR		(60 * MIN)
#define DAY		(24 * HOUR)

const struct knob_def knob_defs[K__COUNT] = {
	[K_HOSTNAME] = { "hostname", KNOB_STRING, NULL, 0, 0, 0,
	    "name used in the greeting, Received: and EHLO (default: gethostname)" },
	[K_ORIGIN] = { "origin", KNOB_STRING, NULL, 0, 0, 0,
	    "domain sendmail adds to a sender or recipient without one "
	    "(default: the first local-domain, else hostname)" },
	[K_USER] = { "user", KNOB_STRING, "tern", 0, 0, 0,
	    "unprivileged user the children run as" },
	[K_SPOOL] = { "spool", KNOB_PATH, "/var/spool/tern", 0, 0, 0,
	    "queue directory" },
	[K_PIDFILE] = { "pidfile", KNOB_PATH, "/run/tern/ternd.pid", 0, 0, 0,
	    "file holding the parent's process id" },
	[K_CONTROL_SOCKET] = { "control-socket", KNOB_PATH,
	    "/run/tern/control.sock", 0, 0, 0,
	    "unix socket ternctl talks to" },
	[K_CONTROL_GROUP] = { "control-group", KNOB_STRING, "adm", 0, 0, 0,
	    "group allowed to use the control socket" },
	[K_SUBMIT_SOCKET] = { "submit-socket", KNOB_PATH,
	    "/run/tern/submit.sock", 0, 0, 0,
	    "unix socket sendmail(1) submits through; any local user may" },
	[K_DROP_GROUP] = { "drop-group", KNOB_STRING, "terndrop", 0, 0, 0,
	    "group that may leave mail in spool/maildrop while ternd is "
	    "down; ternctl is installed setgid to it" },
	[K_ALIASES] = { "aliases", KNOB_PATH, "/etc/tern/aliases", 0, 0, 0,
	    "aliases source file; newaliases compiles it to <file>.db" },
	[K_MAILDIR] = { "maildir", KNOB_STRING, "~/Maildir", 0, 0, 0,
	    "system users' Maildir; \"~/\" is the user's home" },
	[K_VIRTUAL_USER] = { "virtual-user", KNOB_STRING, "vmail", 0, 0, 0,
	    "account that virtual mailbox deliveries run as" },
	[K_MAX_MESSAGE_SIZE] = { "max-message-size", KNOB_SIZE, "35M",
	    KIB, 2 * GIB, 1, "largest message accepted (SIZE in EHLO)" },
	[K_MAX_RECIPIENTS] = { "max-recipients", KNOB_INT, "100",
	    1, 100000, 1, "recipients per message" },
	[K_MAX_TRUSTED_RECIPIENTS] = { "max-trusted-recipients", KNOB_INT,
	    "1000", 1, 100000, 1, "recipients per message from trusted "
	    "networks, local submission and authenticated accounts" },
	[K_MAX_ERRORS] = { "max-errors", KNOB_INT, "10",
	    1, 1000, 1, "failed commands before the session is dropped" },
	[K_MAX_COMMAND_LENGTH] = { "max-command-length", KNOB_SIZE, "2048",
	    512, 64 * KIB, 1, "longest SMTP command line" },
	[K_MAX_LINE_LENGTH] = { "max-line-length", KNOB_SIZE, "16384",
	    1000, MIB, 1, "longest line inside DATA" },
	[K_MAX_HOPS] = { "max-hops", KNOB_INT, "100", 10, 1000, 0,
	    "Received: headers a message may carry (mail loop guard)" },
	[K_MAX_CONNECTIONS] = { "max-connections", KNOB_INT, "4096",
	    1, 100000, 0, "concurrent SMTP sessions, all listeners together" },
	[K_MAX_CONNECTIONS_PER_IP] = { "max-connections-per-ip", KNOB_INT,
	    "20", 1, 10000, 0, "concurrent SMTP sessions from one address" },
	[K_STRESS_THRESHOLD] = { "stress-threshold", KNOB_INT, "75",
	    1, 100, 0, "percent of max-connections in use that is stress: "
	    "idle sessions get stress-command-timeout" },
	[K_STRESS_COMMAND_TIMEOUT] = { "stress-command-timeout",
	    KNOB_DURATION, "10s", SEC, HOUR, 1,
	    "command-timeout while under stress" },
	[K_COMMAND_TIMEOUT] = { "command-timeout", KNOB_DURATION, "5m",
	    SEC, HOUR, 1, "idle time allowed between commands" },
	[K_DATA_TIMEOUT] = { "data-timeout", KNOB_DURATION, "10m",
	    SEC, DAY, 1, "time allowed for the whole DATA phase" },
	[K_GREETING_DELAY] = { "greeting-delay", KNOB_DURATION, "1s",
	    0, MIN, 1, "pause before the banner; early talkers are refused" },
	[K_QUEUE_LIFETIME] = { "queue-lifetime", KNOB_DURATION, "5d",
	    MIN, 60 * DAY, 0, "how long a message is retried before it bounces" },
	[K_RETRY_MIN] = { "retry-min", KNOB_DURATION, "1m",
	    SEC, DAY, 0, "first retry interval after a temporary failure" },
	[K_RETRY_MAX] = { "retry-max", KNOB_DURATION, "1h",
	    SEC, 7 * DAY, 0, "longest retry interval" },
	[K_DELAY_WARNING] = { "delay-warning", KNOB_DURATION, "4h",
	    0, 30 * DAY, 0, "send a delay notice after this long; 0: never" },
	[K_MAX_DELIVERIES] = { "max-deliveries", KNOB_INT, "50",
	    1, 10000, 0, "deliveries in flight, every destination together" },
	[K_MAX_DOMAIN_CONNECTIONS] = { "max-domain-connections", KNOB_INT,
	    "5", 1, 1000, 0, "concurrent connections to one destination" },
	[K_MAX_TXN_RECIPIENTS] = { "max-transaction-recipients", KNOB_INT,
	    "50", 1, 10000, 0, "recipients sent in one outgoing transaction" },
	[K_CONNECT_TIMEOUT] = { "connect-timeout", KNOB_DURATION, "30s",
	    SEC, 10 * MIN, 0, "outgoing TCP connection timeout" },
	[K_REMOTE_PORT] = { "remote-port", KNOB_INT, "25", 1, 65535, 0,
	    "TCP port of MX hosts (routes name their own)" },
	[K_TLS_VERIFY] = { "tls-verify", KNOB_STRING, "no", 0, 0, 0,
	    "yes: outgoing STARTTLS must present a valid certificate" },
	[K_CA_FILE] = { "ca-file", KNOB_PATH, NULL, 0, 0, 0,
	    "CA bundle trusted instead of ca-path (loaded whole at start)" },
	[K_CA_PATH] = { "ca-path", KNOB_PATH, "/etc/ssl/certs", 0, 0, 0,
	    "hashed CA directory, read on demand, when ca-file is unset" },
	[K_DNSSEC_TRUST_ANCHOR] = { "dnssec-trust-anchor", KNOB_STRING,
	    "none", 0, 0, 0, "DNSSEC trust anchor file (absolute path, e.g. "
	    "/usr/share/dns/root.key) the resolver validates from; none (the "
	    "default): no validation" },
	[K_SRS_SECRET] = { "srs-secret", KNOB_PATH, "/var/lib/tern/srs.key",
	    0, 0, 0, "SRS key file, created with a random key if missing" },
	[K_SRS_DOMAIN] = { "srs-domain", KNOB_STRING, NULL, 0, 0, 0,
	    "domain of SRS-rewritten senders (default: the first "
	    "local-domain, else hostname)" },
	[K_LOCAL_DELIVERY] = { "local-delivery", KNOB_STRING, "maildir",
	    0, 0, 0, "how system accounts get mail: maildir, mbox or lmtp" },
	[K_MBOX_DIR] = { "mbox-dir", KNOB_PATH, "/var/mail", 0, 0, 0,
	    "directory of mbox files, for local-delivery mbox" },
	[K_LMTP] = { "lmtp", KNOB_STRING, NULL, 0, 0, 0,
	    "LMTP server for local-delivery lmtp: unix:/path or host:port" },
	[K_LOCAL_WORKER_IDLE] = { "local-worker-idle", KNOB_DURATION, "10s",
	    0, HOUR, 0, "how long a Maildir delivery worker waits for the "
	    "next message to its account; 0: a process per delivery" },
	[K_MAX_ACCOUNT_DELIVERIES] = { "max-account-deliveries", KNOB_INT,
	    "4", 1, 10000, 0, "local deliveries in flight to one account; "
	    "more wait for one of them to end" },
	[K_VAULT_TIMEOUT] = { "vault-timeout", KNOB_DURATION, "60s", SEC,
	    HOUR, 0, "how long a session waits for the secrets process (a "
	    "password check, a DKIM signature) before it answers 4xx" },
	[K_LOCAL_WORKER_TIMEOUT] = { "local-worker-timeout", KNOB_DURATION,
	    "2m", SEC, HOUR, 0, "how long a local worker's Maildir "
	    "delivery may take before the worker is killed" },
	[K_LMTP_VERIFY] = { "lmtp-verify", KNOB_STRING, "probe", 0, 0, 0,
	    "how RCPT checks recipients delivered over LMTP: probe (ask the "
	    "LMTP server) or map (the lmtp-recipients file)" },
	[K_LMTP_RECIPIENTS] = { "lmtp-recipients", KNOB_PATH, NULL, 0, 0, 0,
	    "for lmtp-verify map: addresses (or @domain) one a line" },
	[K_LMTP_VERIFY_CACHE] = { "lmtp-verify-cache", KNOB_DURATION, "10m",
	    0, DAY, 0, "how long a recipient the LMTP server took is known" },
	[K_LMTP_VERIFY_NEGATIVE] = { "lmtp-verify-negative-cache",
	    KNOB_DURATION, "1m", 0, DAY, 0,
	    "how long a recipient the LMTP server refused is known" },
	[K_CREDENTIALS] = { "credentials", KNOB_PATH,
	    "/etc/tern/credentials.db", 0, 0, 0,
	    "credential store (ternctl user ...); root's, mode 0600" },
	[K_VIRTUAL_MAILDIR] = { "virtual-maildir", KNOB_PATH,
	    "/var/mail/vhosts/%d/%u/Maildir", 0, 0, 0,
	    "Maildir of a virtual account of the credential store; %d is "
	    "its domain, %u its local part" },
	[K_SPF] = { "spf", KNOB_STRING, NULL, 0, 0, 1,
	    "yes: check SPF (RFC 7208) for MAIL FROM or HELO; unset: yes on "
	    "mx listeners, no elsewhere" },
	[K_DMARC] = { "dmarc", KNOB_STRING, NULL, 0, 0, 1,
	    "enforce: apply the From: domain's DMARC policy (RFC 7489) at the "
	    "end of data; monitor: evaluate, record and mark only; off; "
	    "unset: enforce on mx listeners, off elsewhere" },
	[K_SPF_TIMEOUT] = { "spf-timeout", KNOB_DURATION, "20s", 1000,
	    300000, 0, "longest wait for an SPF verdict; then temperror" },
	[K_AUTH_REQUIRED] = { "auth-required", KNOB_STRING, NULL, 0, 0, 1,
	    "yes: MAIL needs AUTH first (530 5.7.0); unset: yes on msa "
	    "listeners, no elsewhere" },
	[K_AUTH_KNOWN_CLIENTS] = { "auth-known-clients", KNOB_DURATION,
	    "30d", 0, 365 * DAY, 0, "how long a client (its /24, an IPv6 "
	    "one's /64) that logged in to an account is known to it: the "
	    "account's failed-login lockout does not refuse it; 0: none is" },
	[K_TLS] = { "tls", KNOB_STRING, "starttls", 0, 0, 1,
	    "starttls: offer STARTTLS; implicit: TLS from the first byte "
	    "(RFC 8314, msa listeners, port 465); none: no TLS" },
	[K_TLS_CERT] = { "tls-cert", KNOB_PATH, NULL, 0, 0, 0,
	    "certificate chain (PEM, server certificate first) for our "
	    "listeners; unset: a self-signed one next to srs-secret" },
	[K_TLS_KEY] = { "tls-key", KNOB_PATH, NULL, 0, 0, 0,
	    "private key (PEM) of tls-cert; unset: read from tls-cert" },
	[K_LIMIT_MESSAGES_HOUR] = { "limit-messages-hour", KNOB_INT, "100",
	    0, 10000000, 0, "messages an account (or local user) may submit "
	    "in an hour; 0: no limit; `limit` sets one account's" },
	[K_LIMIT_MESSAGES_DAY] = { "limit-messages-day", KNOB_INT, "500",
	    0, 10000000, 0, "messages an account may submit in a day" },
	[K_LIMIT_RECIPIENTS_HOUR] = { "limit-recipients-hour", KNOB_INT, "500",
	    0, 10000000, 0, "recipients an account may submit to in an hour" },
	[K_LIMIT_RECIPIENTS_DAY] = { "limit-recipients-day", KNOB_INT, "2000",
	    0, 10000000, 0, "recipients an account may submit to in a day" },
	[K_BREAKER_FACTOR] = { "breaker-factor", KNOB_INT, "10", 0, 1000, 0,
	    "suspend an account whose messages in the last hour exceed this "
	    "many times its usual hourly rate (and breaker-floor); 0: never" },
	[K_BREAKER_FLOOR] = { "breaker-floor", KNOB_INT, "50", 1, 10000000, 0,
	    "the breaker never trips at or below this many messages an hour" },
	[K_BREAKER_REJECT_PERCENT] = { "breaker-reject-percent", KNOB_INT,
	    "50", 0, 100, 0, "suspend an account when this share of its "
	    "recipients in the last hour was rejected; 0: never" },
	[K_BREAKER_REJECT_MIN] = { "breaker-reject-min", KNOB_INT, "20",
	    1, 10000000, 0, "rejected recipients in an hour before "
	    "breaker-reject-percent applies" },
	[K_PACING] = { "pacing", KNOB_STRING, "yes", 0, 0, 0,
	    "yes: learn how fast each destination takes mail from its "
	    "replies and keep under it; no: only the connection limits" },
	[K_THROTTLE_REPLIES] = { "throttle-replies", KNOB_PATH,
	    "/etc/tern/throttle-replies", 0, 0, 0,
	    "file of reply texts that mean \"slow down\" (or not)" },
	[K_RETRY_JITTER] = { "retry-jitter", KNOB_INT, "10", 0, 100, 0,
	    "percent of a retry interval added at random, the same for "
	    "every recipient of a message" },
	[K_QUEUE_SWEEP] = { "queue-sweep", KNOB_DURATION, "5m", SEC, DAY, 0,
	    "how often every queued message is looked at, due or not" },
	[K_CONNECTION_IDLE] = { "connection-idle-time", KNOB_DURATION, "10s",
	    100, HOUR, 0, "how long an idle outgoing connection is kept for "
	    "the next message to the same host" },
	[K_CONNECTION_MESSAGES] = { "max-connection-messages", KNOB_INT,
	    "100", 1, 100000, 0, "transactions on one outgoing connection" },
	[K_FALLBACK_AFTER] = { "fallback-after", KNOB_DURATION, "30m", SEC,
	    30 * DAY, 0, "mail deferred this long goes through fallback-relay, "
	    "if one is set" },
	[K_DKIM_KEY_DIR] = { "dkim-key-dir", KNOB_PATH, "/etc/tern/dkim",
	    0, 0, 0, "where ternctl dkim keygen writes DKIM private keys" },
	[K_DKIM_SIGN_TRUSTED] = { "dkim-sign-trusted", KNOB_STRING, "no",
	    0, 0, 0, "yes: DKIM-sign mail from trusted-network clients too "
	    "(authenticated and local submissions always are)" },
	[K_DKIM_VERIFY] = { "dkim-verify", KNOB_STRING, NULL, 0, 0, 1,
	    "yes: verify DKIM signatures (RFC 6376) of received mail; unset: "
	    "yes on mx listeners, no elsewhere" },
	[K_AUTHSERV_ID] = { "authserv-id", KNOB_STRING, NULL, 0, 0, 0,
	    "the name in our Authentication-Results fields (RFC 8601); "
	    "unset: hostname" },
};

const char *const conf_limit_names[LIM__COUNT] = {
	"messages-hour", "messages-day", "recipients-hour", "recipients-day"
};

static const enum knob_id conf_limit_knob[LIM__COUNT] = {
	K_LIMIT_MESSAGES_HOUR, K_LIMIT_MESSAGES_DAY, K_LIMIT_RECIPIENTS_HOUR,
	K_LIMIT_RECIPIENTS_DAY
};

/* Per-parse state; nothing survives a call of conf_parse. */
struct parser {
	struct conf	*conf;
	const char	*basedir;
	char		*err;
	size_t		 errlen;
	int		 line;
	struct buf	 tokbuf;	/* this line's tokens, NUL-separated */
	char		**tok;
	size_t		 ntok;
	int		 knob_line[K__COUNT];
	int		*domain_line;	/* parallel to conf->domains */
	int		*vuser_line;	/* parallel to conf->vusers */
};

static int	 conf_error(struct parser *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static int
conf_error(struct parser *p, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->errlen)
		snprintf(p->err, p->errlen, "%s:%d: %s", p->conf->file,
		    p->line, msg);
	return -1;
}

/* ---- lexical level ------------------------------------------------------ */

static int
conf_is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Control characters could end up in SMTP replies and logs: refuse them. */
static int
conf_check_bytes(struct parser *p, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\0')
			return conf_error(p, "NUL byte in configuration");
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return conf_error(p, "control character 0x%02x in "
			    "configuration", c);
	}
	return 0;
}

/* Reads a quoted string starting after the quote; returns bytes used. */
static int
conf_lex_quoted(struct parser *p, const char *s, size_t len, size_t *used)
{
	size_t i = 0;

	for (;;) {
		if (i >= len)
			return conf_error(p, "unterminated quoted string");
		if (s[i] == '"')
			break;
		if (s[i] == '\t')
			return conf_error(p, "tab in quoted string");
		if (s[i] == '\\') {
			if (i + 1 >= len)
				return conf_error(p,
				    "unterminated quoted string");
			if (s[i + 1] != '"' && s[i + 1] != '\\')
				return conf_error(p, "invalid escape \"\\%c\" "
				    "in quoted string (only \\\" and \\\\)",
				    s[i + 1]);
			i++;
		}
		buf_putc(&p->tokbuf, s[i]);
		i++;
	}
	*used = i + 1;
	return 0;
}

static int
conf_lex_line(struct parser *p, const char *s, size_t len)
{
	size_t i = 0, used = 0, ntok = 0;

	buf_reset(&p->tokbuf);
	if (conf_check_bytes(p, s, len) == -1)
		return -1;
	while (i < len) {
		if (conf_is_blank(s[i])) {
			i++;
			continue;
		}
		if (s[i] == '#')
			break;
		if (s[i] == '"') {
			if (conf_lex_quoted(p, s + i + 1, len - i - 1,
			    &used) == -1)
				return -1;
			i += 1 + used;
		} else {
			size_t start = i;

			while (i < len && !conf_is_blank(s[i]) &&
			    s[i] != '"' && s[i] != '#')
				i++;
			buf_append(&p->tokbuf, s + start, i - start);
		}
		buf_putc(&p->tokbuf, '\0');
		ntok++;
	}
	p->tok = xreallocarray(p->tok, ntok + 1, sizeof(*p->tok));
	for (size_t t = 0, off = 0; t < ntok; t++) {
		p->tok[t] = p->tokbuf.data + off;
		off += strlen(p->tok[t]) + 1;
	}
	p->tok[ntok] = NULL;
	p->ntok = ntok;
	return 0;
}

/* ---- values --------------------------------------------------------------- */

/* Leading decimal digits of s as a number; *end is the suffix. */
static int
conf_digits(const char *s, long long *v, const char **end)
{
	long long n = 0;
	const char *q = s;

	for (; *q >= '0' && *q <= '9'; q++) {
		if (n > (9223372036854775807LL - (*q - '0')) / 10)
			n = -1;		/* remember overflow, keep scanning */
		if (n >= 0)
			n = n * 10 + (*q - '0');
	}
	if (q == s)
		return -1;
	*v = n;
	*end = q;
	return 0;
}

static int
conf_scale(long long n, long long unit, long long *out)
{
	if (n < 0 || n > 9223372036854775807LL / unit)
		*out = -1;	/* overflow: above any maximum */
	else
		*out = n * unit;
	return 0;
}

static int
conf_parse_int(const char *s, long long *out)
{
	const char *suf;

	if (conf_digits(s, out, &suf) == -1 || *suf != '\0')
		return -1;
	return 0;
}

static int
conf_parse_size(const char *s, long long *out)
{
	long long n, unit = 1;
	const char *suf;

	if (conf_digits(s, &n, &suf) == -1)
		return -1;
	if (*suf != '\0') {
		if (suf[1] != '\0')
			return -1;
		switch (*suf) {
		case 'k': case 'K': unit = KIB; break;
		case 'm': case 'M': unit = MIB; break;
		case 'g': case 'G': unit = GIB; break;
		default: return -1;
		}
	}
	return conf_scale(n, unit, out);
}

static int
conf_parse_duration(const char *s, long long *out)
{
	long long n, unit;
	const char *suf;

	if (conf_digits(s, &n, &suf) == -1)
		return -1;
	if (strcmp(suf, "") == 0 || strcmp(suf, "s") == 0)
		unit = SEC;
	else if (strcmp(suf, "ms") == 0)
		unit = 1;
	else if (strcmp(suf, "m") == 0)
		unit = MIN;
	else if (strcmp(suf, "h") == 0)
		unit = HOUR;
	else if (strcmp(suf, "d") == 0)
		unit = DAY;
	else
		return -1;
	return conf_scale(n, unit, out);
}

/* A bound in the unit a human would write it in. */
static void
conf_fmt_bound(enum knob_type type, long long v, char *out, size_t len)
{
	static const struct { long long unit; const char *suffix; }
	    sizes[] = { { GIB, "G" }, { MIB, "M" }, { KIB, "K" } },
	    durs[] = { { DAY, "d" }, { HOUR, "h" }, { MIN, "m" },
		{ SEC, "s" } };
	const char *last = type == KNOB_DURATION ? "ms" : "";

	for (size_t i = 0; v != 0 && type == KNOB_SIZE && i < 3; i++)
		if (v % sizes[i].unit == 0) {
			snprintf(out, len, "%lld%s", v / sizes[i].unit,
			    sizes[i].suffix);
			return;
		}
	for (size_t i = 0; v != 0 && type == KNOB_DURATION && i < 4; i++)
		if (v % durs[i].unit == 0) {
			snprintf(out, len, "%lld%s", v / durs[i].unit,
			    durs[i].suffix);
			return;
		}
	snprintf(out, len, "%lld%s", v, v ? last : "");
}

static int
conf_check_bounds(struct parser *p, enum knob_id id, const char *word,
    long long n)
{
	const struct knob_def *k = &knob_defs[id];
	char b[32];

	if (n >= 0 && n < k->min) {
		conf_fmt_bound(k->type, k->min, b, sizeof(b));
		return conf_error(p, "%s: %s is below the minimum %s",
		    k->name, word, b);
	}
	if (n < 0 || n > k->max) {
		conf_fmt_bound(k->type, k->max, b, sizeof(b));
		return conf_error(p, "%s: %s is above the maximum %s",
		    k->name, word, b);
	}
	return 0;
}

static char *
conf_abspath(struct parser *p, const char *path)
{
	struct buf b;
	size_t blen;

	if (path[0] == '/')
		return xstrdup(path);
	buf_init(&b);
	buf_puts(&b, p->basedir);
	blen = strlen(p->basedir);
	if (blen == 0 || p->basedir[blen - 1] != '/')
		buf_putc(&b, '/');
	buf_puts(&b, path);
	return buf_steal(&b);
}

/* Why a domain name is not LDH labels, or NULL if it is one. */
static const char *
conf_domain_problem(const char *d)
{
	size_t total = strlen(d), label = 0;

	if (total == 0)
		return "empty name";
	if (total > 253)
		return "longer than 253 characters";
	for (const char *s = d;; s++) {
		if (*s == '.' || *s == '\0') {
			if (label == 0)
				return "empty label";
			if (s[-1] == '-')
				return "label ends with a hyphen";
			if (*s == '\0')
				return NULL;
			label = 0;
			continue;
		}
		if (++label > 63)
			return "label longer than 63 characters";
		if (*s == '-' && label == 1)
			return "label starts with a hyphen";
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		    (*s >= '0' && *s <= '9') || *s == '-'))
			return "only letters, digits, hyphens and dots allowed";
	}
}

/* virtual-maildir: %u (each account its own), %d and %% only. */
static const char *
conf_pattern_problem(const char *w)
{
	int user = 0;

	for (; *w; w++) {
		if (*w != '%')
			continue;
		w++;
		if (*w == 'u')
			user = 1;
		else if (*w != 'd' && *w != '%')
			return "only %u, %d and %% may follow a %";
	}
	return user ? NULL : "it must contain %u";
}

static int
conf_parse_string(struct parser *p, enum knob_id id, const char *word,
    struct knob_val *out)
{
	const char *why;

	if (id == K_MAILDIR && strncmp(word, "~/", 2) != 0 && word[0] != '/')
		return conf_error(p, "maildir: must start with \"~/\" or "
		    "\"/\", got \"%s\"", word);
	if (id == K_HOSTNAME && (why = conf_domain_problem(word)) != NULL)
		return conf_error(p, "hostname: invalid host name \"%s\": %s",
		    word, why);
	if (id == K_SRS_DOMAIN && (why = conf_domain_problem(word)) != NULL)
		return conf_error(p, "srs-domain: invalid domain \"%s\": %s",
		    word, why);
	if (id == K_SPF && strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "spf: expected yes or no, got \"%s\"",
		    word);
	if (id == K_DMARC && strcmp(word, "enforce") &&
	    strcmp(word, "monitor") && strcmp(word, "off"))
		return conf_error(p, "dmarc: expected enforce, monitor or off, "
		    "got \"%s\"", word);
	if (id == K_DKIM_VERIFY && strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "dkim-verify: expected yes or no, got "
		    "\"%s\"", word);
	if (id == K_AUTHSERV_ID && (why = conf_domain_problem(word)) != NULL)
		return conf_error(p, "authserv-id: invalid name \"%s\": %s",
		    word, why);
	if (id == K_AUTH_REQUIRED && strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "auth-required: expected yes or no, got "
		    "\"%s\"", word);
	if (id == K_ORIGIN && (why = conf_domain_problem(word)) != NULL)
		return conf_error(p, "origin: invalid domain \"%s\": %s",
		    word, why);
	if ((id == K_TLS_VERIFY || id == K_DKIM_SIGN_TRUSTED) &&
	    strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "%s: expected yes or no, got \"%s\"",
		    knob_defs[id].name, word);
	if (id == K_TLS_VERIFY && strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "tls-verify: expected yes or no, got "
		    "\"%s\"", word);
	if (id == K_PACING && strcmp(word, "yes") && strcmp(word, "no"))
		return conf_error(p, "pacing: expected yes or no, got \"%s\"",
		    word);
	if (id == K_LOCAL_DELIVERY && strcmp(word, "maildir") &&
	    strcmp(word, "mbox") && strcmp(word, "lmtp"))
		return conf_error(p, "local-delivery: expected maildir, mbox "
		    "or lmtp, got \"%s\"", word);
	if (id == K_VIRTUAL_MAILDIR && (why = conf_pattern_problem(word)))
		return conf_error(p, "virtual-maildir: %s, got \"%s\"", why,
		    word);
	if (id == K_TLS && strcmp(word, "starttls") == 0)
		out->n = TLS_MODE_STARTTLS;
	else if (id == K_TLS && strcmp(word, "implicit") == 0)
		out->n = TLS_MODE_IMPLICIT;
	else if (id == K_TLS && strcmp(word, "none") == 0)
		out->n = TLS_MODE_NONE;
	else if (id == K_TLS)
		return conf_error(p, "tls: expected starttls, implicit or "
		    "none, got \"%s\"", word);
	if (id == K_LMTP_VERIFY && strcmp(word, "probe") && strcmp(word, "map"))
		return conf_error(p, "lmtp-verify: expected probe or map, got "
		    "\"%s\"", word);
	if (id == K_LMTP && conf_lmtp_spec(word, NULL) == -1)
		return conf_error(p, "lmtp: expected unix:/path or host:port, "
		    "got \"%s\"", word);
	out->s = knob_defs[id].type == KNOB_PATH ? conf_abspath(p, word) :
	    xstrdup(word);
	return 0;
}

/* Parses one knob value; on success the old value in out is replaced. */
static int
conf_parse_knob(struct parser *p, enum knob_id id, const char *word,
    struct knob_val *out)
{
	const struct knob_def *k = &knob_defs[id];
	long long n = 0;
	int r;

	if (*word == '\0')
		return conf_error(p, "%s: empty value", k->name);
	switch (k->type) {
	case KNOB_STRING:
	case KNOB_PATH:
		free(out->s);
		out->s = NULL;
		return conf_parse_string(p, id, word, out);
	case KNOB_INT:
		if (conf_parse_int(word, &n) == -1)
			return conf_error(p, "%s: expected a number, got "
			    "\"%s\"", k->name, word);
		break;
	case KNOB_SIZE:
		if (conf_parse_size(word, &n) == -1)
			return conf_error(p, "%s: expected a size like 512K, "
			    "35M or 1G, got \"%s\"", k->name, word);
		break;
	case KNOB_DURATION:
		if (conf_parse_duration(word, &n) == -1)
			return conf_error(p, "%s: expected a duration like "
			    "500ms, 30s, 5m, 1h or 2d, got \"%s\"", k->name,
			    word);
		break;
	}
	if ((r = conf_check_bounds(p, id, word, n)) == 0)
		out->n = n;
	return r;
}

static int
conf_knob_lookup(const char *name)
{
	for (int i = 0; i < K__COUNT; i++)
		if (strcmp(knob_defs[i].name, name) == 0)
			return i;
	return -1;
}

static int
conf_defaults(struct parser *p)
{
	for (int i = 0; i < K__COUNT; i++) {
		if (knob_defs[i].def == NULL)
			continue;
		if (conf_parse_knob(p, i, knob_defs[i].def,
		    &p->conf->v[i]) == -1)
			return -1;
	}
	return 0;
}

/* ---- statements ----------------------------------------------------------- */

static int
conf_extra(struct parser *p, size_t want)
{
	if (p->ntok > want)
		return conf_error(p, "%s: unexpected \"%s\"", p->tok[0],
		    p->tok[want]);
	return 0;
}

static int
conf_stmt_knob(struct parser *p, enum knob_id id)
{
	struct knob_val *v = &p->conf->v[id];

	if (p->ntok < 2)
		return conf_error(p, "%s: missing value", knob_defs[id].name);
	if (conf_extra(p, 2) == -1)
		return -1;
	if (p->knob_line[id])
		return conf_error(p, "%s: already set at line %d",
		    knob_defs[id].name, p->knob_line[id]);
	if (conf_parse_knob(p, id, p->tok[1], v) == -1)
		return -1;
	if (id == K_TLS && v->n == TLS_MODE_IMPLICIT)
		return conf_error(p, "tls implicit belongs on a listen msa "
		    "line (RFC 8314 submission, port 465)");
	v->set = 1;
	v->line = p->line;
	p->knob_line[id] = p->line;
	return 0;
}

static int
conf_stmt_domain(struct parser *p)
{
	struct conf *c = p->conf;
	const char *why = "longer than 253 characters";
	char *d, ad[256];

	if (p->ntok < 2)
		return conf_error(p, "local-domain: missing domain");
	if (conf_extra(p, 2) == -1)
		return -1;
	/* U-labels are kept as A-labels: one form to compare (lib/addr.c) */
	if (str_copy(ad, p->tok[1], sizeof(ad)) >= sizeof(ad) ||
	    (addr_has8bit(ad) &&
	    addr_domain_ascii(p->tok[1], ad, sizeof(ad), &why) == -1) ||
	    (why = conf_domain_problem(ad)) != NULL)
		return conf_error(p, "local-domain: invalid domain \"%s\": %s",
		    p->tok[1], why);
	d = xstrdup(ad);
	str_lower(d);
	for (size_t i = 0; i < c->ndomains; i++)
		if (strcmp(c->domains[i], d) == 0) {
			free(d);
			return conf_error(p, "local-domain: \"%s\" already "
			    "listed at line %d", p->tok[1], p->domain_line[i]);
		}
	c->domains = xreallocarray(c->domains, c->ndomains + 1,
	    sizeof(*c->domains));
	p->domain_line = xreallocarray(p->domain_line, c->ndomains + 1,
	    sizeof(*p->domain_line));
	p->domain_line[c->ndomains] = p->line;
	c->domains[c->ndomains++] = d;
	return 0;
}

/*
 * allow-sender ACCOUNT ADDRESS|@DOMAIN ...: an authenticated account may
 * send as these too (its own address it always may).
 */
static int
conf_stmt_grant(struct parser *p)
{
	struct conf *c = p->conf;
	const char *why, *a;
	size_t i;

	if (p->ntok < 3)
		return conf_error(p, "allow-sender: expected an account and "
		    "one or more addresses or @domains");
	if (strlen(p->tok[1]) > 255 || strchr(p->tok[1], ' '))
		return conf_error(p, "allow-sender: invalid account \"%s\"",
		    p->tok[1]);
	for (i = 2; i < (size_t)p->ntok; i++) {
		a = p->tok[i];
		if (a[0] == '@')
			why = conf_domain_problem(a + 1);
		else if (strchr(a, '@') == NULL || strlen(a) > 254)
			why = "expected local@domain or @domain";
		else
			why = conf_domain_problem(strrchr(a, '@') + 1);
		if (why != NULL)
			return conf_error(p, "allow-sender: invalid address "
			    "\"%s\": %s", a, why);
		c->grants = xreallocarray(c->grants, c->ngrants + 1,
		    sizeof(*c->grants));
		c->grants[c->ngrants].account = xstrdup(p->tok[1]);
		str_lower(c->grants[c->ngrants].account);
		c->grants[c->ngrants].address = xstrdup(a);
		str_lower(c->grants[c->ngrants].address);
		c->ngrants++;
	}
	return 0;
}

/*
 * limit ACCOUNT messages-hour N [messages-day N] [recipients-hour N]
 * [recipients-day N]: one account's own limits (a list's sender), the
 * rest from the limit-* knobs.  A local user is "local:NAME".
 */
static int
conf_stmt_limit(struct parser *p)
{
	struct conf *c = p->conf;
	struct acct_limit al;
	long long n;
	size_t i, k;

	if (p->ntok < 4 || p->ntok % 2 != 0)
		return conf_error(p, "limit: expected an account and one or "
		    "more pairs like messages-hour N");
	if (strlen(p->tok[1]) > 255 || strchr(p->tok[1], ' '))
		return conf_error(p, "limit: invalid account \"%s\"",
		    p->tok[1]);
	for (i = 0; i < c->nlimits; i++)
		if (str_casecmp(c->limits[i].account, p->tok[1]) == 0)
			return conf_error(p, "limit: \"%s\" already has its "
			    "limits", p->tok[1]);
	for (k = 0; k < LIM__COUNT; k++)
		al.v[k] = -1;
	for (i = 2; i < (size_t)p->ntok; i += 2) {
		for (k = 0; k < LIM__COUNT; k++)
			if (strcmp(p->tok[i], conf_limit_names[k]) == 0)
				break;
		if (k == LIM__COUNT)
			return conf_error(p, "limit: unknown limit \"%s\"",
			    p->tok[i]);
		if (conf_parse_int(p->tok[i + 1], &n) == -1 || n < 0 ||
		    n > 10000000)
			return conf_error(p, "limit: %s: expected a number "
			    "from 0 to 10000000", p->tok[i]);
		al.v[k] = n;
	}
	al.account = xstrdup(p->tok[1]);
	str_lower(al.account);
	c->limits = xreallocarray(c->limits, c->nlimits + 1,
	    sizeof(*c->limits));
	c->limits[c->nlimits++] = al;
	return 0;
}

long long
conf_limit(const struct conf *c, const char *account, enum limit_kind k)
{
	size_t i;

	for (i = 0; i < c->nlimits; i++)
		if (str_casecmp(c->limits[i].account, account) == 0 &&
		    c->limits[i].v[k] >= 0)
			return c->limits[i].v[k];
	return conf_num(c, NULL, conf_limit_knob[k]);
}

/* Parses "a.b.c.d" or an IPv6 literal; returns the family or -1. */
static int
conf_parse_addr(const char *s, unsigned char addr[16])
{
	memset(addr, 0, 16);
	if (inet_pton(AF_INET, s, addr) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, addr) == 1)
		return AF_INET6;
	return -1;
}

static int
conf_host_bits_set(const unsigned char *a, int bits, int total)
{
	for (int b = bits; b < total; b++)
		if (a[b / 8] & (0x80 >> (b % 8)))
			return 1;
	return 0;
}

static int
conf_stmt_network(struct parser *p)
{
	struct conf *c = p->conf;
	struct netmask nm;
	char host[64];
	const char *slash;
	long long bits;
	size_t hlen;
	int total;

	if (p->ntok < 2)
		return conf_error(p, "trusted-network: missing network");
	if (conf_extra(p, 2) == -1)
		return -1;
	slash = strchr(p->tok[1], '/');
	hlen = slash ? (size_t)(slash - p->tok[1]) : strlen(p->tok[1]);
	if (hlen >= sizeof(host))
		return conf_error(p, "trusted-network: invalid address \"%s\"",
		    p->tok[1]);
	memcpy(host, p->tok[1], hlen);
	host[hlen] = '\0';
	memset(&nm, 0, sizeof(nm));
	if ((nm.family = conf_parse_addr(host, nm.addr)) == -1)
		return conf_error(p, "trusted-network: invalid address \"%s\"",
		    host);
	total = nm.family == AF_INET ? 32 : 128;
	bits = total;
	if (slash && parse_ll(slash + 1, 1, total, &bits) == -1)
		return conf_error(p, "trusted-network: prefix length must be "
		    "1-%d, got \"%s\"", total, slash + 1);
	nm.bits = (int)bits;
	if (conf_host_bits_set(nm.addr, nm.bits, total))
		return conf_error(p, "trusted-network: host bits set in %s",
		    p->tok[1]);
	c->trusted = xreallocarray(c->trusted, c->ntrusted + 1,
	    sizeof(*c->trusted));
	c->trusted[c->ntrusted++] = nm;
	return 0;
}

static int
conf_listen_addr(struct parser *p, struct listener *l, const char *s,
    long long port)
{
	unsigned char a[16];
	int af = conf_parse_addr(s, a);

	if (af == -1 || strlen(s) >= sizeof(l->addr))
		return conf_error(p, "listen: expected an IPv4 or IPv6 address, "
		    "got \"%s\"", s);
	str_copy(l->addr, s, sizeof(l->addr));
	memset(&l->ss, 0, sizeof(l->ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&l->ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		memcpy(&sin->sin_addr, a, 4);
		l->sslen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&l->ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		memcpy(&sin6->sin6_addr, a, 16);
		l->sslen = sizeof(*sin6);
	}
	return 0;
}

static int
conf_listen_knobs(struct parser *p, struct listener *l, size_t i)
{
	int id;

	for (; i < p->ntok; i += 2) {
		if ((id = conf_knob_lookup(p->tok[i])) == -1)
			return conf_error(p, "listen: unknown setting \"%s\"",
			    p->tok[i]);
		if (!knob_defs[id].per_listener)
			return conf_error(p, "%s cannot be set per listener",
			    p->tok[i]);
		if (i + 1 >= p->ntok)
			return conf_error(p, "%s: missing value", p->tok[i]);
		if (l->knobs[id].set)
			return conf_error(p, "listen: %s given twice",
			    p->tok[i]);
		if (conf_parse_knob(p, id, p->tok[i + 1], &l->knobs[id]) == -1)
			return -1;
		l->knobs[id].set = 1;
		l->knobs[id].line = p->line;
	}
	return 0;
}

static void
conf_listener_free(struct listener *l)
{
	for (int i = 0; i < K__COUNT; i++)
		free(l->knobs[i].s);
}

static int
conf_listen_dup(struct parser *p, const struct listener *l)
{
	const struct conf *c = p->conf;

	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct listener *o = &c->listeners[i];

		if (o->sslen == l->sslen && memcmp(&o->ss, &l->ss,
		    l->sslen) == 0)
			return conf_error(p, "listen: %s port %d already used "
			    "at line %d", l->addr, l->port, o->line);
	}
	return 0;
}

static int
conf_listen_head(struct parser *p, struct listener *l)
{
	long long port;

	if (p->ntok < 2)
		return conf_error(p, "listen: missing role");
	if (strcmp(p->tok[1], "mx") == 0)
		l->role = ROLE_MX;
	else if (strcmp(p->tok[1], "msa") == 0)
		l->role = ROLE_MSA;
	else
		return conf_error(p, "listen: unknown role \"%s\" (expected "
		    "mx or msa)", p->tok[1]);
	if (p->ntok < 3)
		return conf_error(p, "listen: missing address");
	if (p->ntok < 4 || strcmp(p->tok[3], "port") != 0)
		return conf_error(p, "listen: expected \"port\" after the "
		    "address");
	if (p->ntok < 5)
		return conf_error(p, "port: missing value");
	if (parse_ll(p->tok[4], 1, 65535, &port) == -1)
		return conf_error(p, "port: expected a number 1-65535, got "
		    "\"%s\"", p->tok[4]);
	l->port = (int)port;
	l->line = p->line;
	return conf_listen_addr(p, l, p->tok[2], port);
}

static int
conf_stmt_listen(struct parser *p)
{
	struct conf *c = p->conf;
	struct listener l;

	memset(&l, 0, sizeof(l));
	if (conf_listen_head(p, &l) == -1 || conf_listen_knobs(p, &l, 5) == -1
	    || conf_listen_dup(p, &l) == -1) {
		conf_listener_free(&l);
		return -1;
	}
	/* Implicit TLS is submission's (RFC 8314); MX peers use STARTTLS. */
	if (l.role == ROLE_MX && l.knobs[K_TLS].set &&
	    l.knobs[K_TLS].n == TLS_MODE_IMPLICIT) {
		conf_listener_free(&l);
		return conf_error(p, "listen: tls implicit is for msa "
		    "listeners (port 465); mx peers use STARTTLS on port 25");
	}
	c->listeners = xreallocarray(c->listeners, c->nlisteners + 1,
	    sizeof(*c->listeners));
	c->listeners[c->nlisteners++] = l;
	return 0;
}

static int
conf_local_part_ok(const char *s, size_t len)
{
	if (len == 0 || len > 64 || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '.' && s[i + 1] == '.')
			return 0;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') ||
		    strchr("!#$%&'*+-/=?^_`{|}~.", ch) != NULL))
			return 0;
	}
	return 1;
}

static int
conf_vaddr_ok(const char *a)
{
	const char *at = strchr(a, '@');

	return at != NULL && conf_local_part_ok(a, (size_t)(at - a)) &&
	    conf_domain_problem(at + 1) == NULL;
}

/* The address with its domain's U-labels as A-labels, lower case. */
static int
conf_vaddr_ascii(const char *a, char *out, size_t len)
{
	const char *at = strrchr(a, '@');
	char dom[256];
	size_t n;

	if (at == NULL || str_copy(out, a, len) >= len)
		return -1;
	if (addr_has8bit(at + 1)) {
		n = (size_t)(at - a) + 1;
		if (addr_domain_ascii(at + 1, dom, sizeof(dom), NULL) == -1 ||
		    str_copy(out + n, dom, len - n) >= len - n)
			return -1;
	}
	str_lower(out);
	return 0;
}

static int
conf_stmt_virtual(struct parser *p)
{
	struct conf *c = p->conf;
	struct vuser v;
	char va[320];

	if (p->ntok < 2)
		return conf_error(p, "virtual: missing address");
	if (conf_vaddr_ascii(p->tok[1], va, sizeof(va)) == -1 ||
	    !conf_vaddr_ok(va))
		return conf_error(p, "virtual: invalid address \"%s\"",
		    p->tok[1]);
	if (p->ntok < 3 || strcmp(p->tok[2], "maildir") != 0)
		return conf_error(p, "virtual: expected \"maildir\" after the "
		    "address");
	if (p->ntok < 4 || p->tok[3][0] == '\0')
		return conf_error(p, "virtual: missing maildir path");
	if (conf_extra(p, 4) == -1)
		return -1;
	for (size_t i = 0; i < c->nvusers; i++)
		if (strcmp(c->vusers[i].address, va) == 0)
			return conf_error(p, "virtual: \"%s\" already defined "
			    "at line %d", va, p->vuser_line[i]);
	v.address = xstrdup(va);
	v.maildir = conf_abspath(p, p->tok[3]);
	c->vusers = xreallocarray(c->vusers, c->nvusers + 1,
	    sizeof(*c->vusers));
	p->vuser_line = xreallocarray(p->vuser_line, c->nvusers + 1,
	    sizeof(*p->vuser_line));
	p->vuser_line[c->nvusers] = p->line;
	c->vusers[c->nvusers++] = v;
	return 0;
}

/* resolver <address> [port <n>] */
static int
conf_stmt_resolver(struct parser *p)
{
	struct conf *c = p->conf;
	struct listener tmp;
	long long port = 53;

	if (p->ntok < 2)
		return conf_error(p, "resolver: missing address");
	if (p->ntok >= 3) {
		if (strcmp(p->tok[2], "port") != 0)
			return conf_error(p, "resolver: unexpected \"%s\"",
			    p->tok[2]);
		if (p->ntok < 4)
			return conf_error(p, "port: missing value");
		if (parse_ll(p->tok[3], 1, 65535, &port) == -1)
			return conf_error(p, "port: expected a number 1-65535, "
			    "got \"%s\"", p->tok[3]);
		if (conf_extra(p, 4) == -1)
			return -1;
	}
	memset(&tmp, 0, sizeof(tmp));
	if (conf_parse_addr(p->tok[1], (unsigned char[16]){ 0 }) == -1)
		return conf_error(p, "resolver: expected an IPv4 or IPv6 "
		    "address, got \"%s\"", p->tok[1]);
	if (conf_listen_addr(p, &tmp, p->tok[1], port) == -1)
		return -1;
	c->resolvers = xreallocarray(c->resolvers, c->nresolvers + 1,
	    sizeof(*c->resolvers));
	c->resolverlen = xreallocarray(c->resolverlen, c->nresolvers + 1,
	    sizeof(*c->resolverlen));
	c->resolvers[c->nresolvers] = tmp.ss;
	c->resolverlen[c->nresolvers++] = tmp.sslen;
	return 0;
}

static int
conf_route_opts(struct parser *p, struct route *r, size_t i)
{
	long long port;

	for (; i < p->ntok; i++) {
		const char *o = p->tok[i];

		if (strcmp(o, "port") == 0 && i + 1 < p->ntok) {
			if (parse_ll(p->tok[++i], 1, 65535, &port) == -1)
				return conf_error(p, "port: expected a number "
				    "1-65535, got \"%s\"", p->tok[i]);
			r->port = (int)port;
		} else if (strcmp(o, "tls") == 0 && i + 1 < p->ntok) {
			o = p->tok[++i];
			if (strcmp(o, "required") == 0)
				r->tls = ROUTE_TLS_REQUIRED;
			else if (strcmp(o, "verify") == 0)
				r->tls = ROUTE_TLS_VERIFY;
			else if (strcmp(o, "none") == 0)
				r->tls = ROUTE_TLS_NONE;
			else if (strcmp(o, "opportunistic") == 0)
				r->tls = ROUTE_TLS_OPPORTUNISTIC;
			else
				return conf_error(p, "route: tls must be "
				    "opportunistic, required, verify or none, "
				    "got \"%s\"", o);
		} else if (strcmp(o, "auth") == 0 && i + 1 < p->ntok &&
		    r->authfile == NULL) {
			r->authfile = conf_abspath(p, p->tok[++i]);
		} else
			return conf_error(p, "route: unexpected \"%s\"", o);
	}
	if (r->authfile && r->tls != ROUTE_TLS_REQUIRED &&
	    r->tls != ROUTE_TLS_VERIFY)
		return conf_error(p, "route: auth needs \"tls required\" or "
		    "\"tls verify\" (no password in clear text)");
	return 0;
}

static void
conf_route_free(struct route *r)
{
	free(r->domain);
	free(r->host);
	free(r->authfile);
	free(r->authuser);
	if (r->authpass)
		explicit_bzero(r->authpass, strlen(r->authpass));
	free(r->authpass);
	free(r->path);
}

int
conf_lmtp_spec(const char *spec, struct route *r)
{
	const char *colon = strrchr(spec, ':');
	char a[INET6_ADDRSTRLEN];
	struct in6_addr in6;
	long long port;
	size_t n;

	if (strncmp(spec, "unix:/", 6) == 0) {
		if (strlen(spec + 5) >= 108)	/* sun_path */
			return -1;
		if (r)
			r->path = xstrdup(spec + 5);
		return 0;
	}
	if (colon == NULL || colon == spec ||
	    parse_ll(colon + 1, 1, 65535, &port) == -1)
		return -1;
	n = (size_t)(colon - spec);
	if (spec[0] == '[' && n >= 2 && spec[n - 1] == ']') {
		spec++;
		n -= 2;
	}
	if (n == 0 || n >= INET6_ADDRSTRLEN)
		return -1;
	/* An address: LMTP servers are local, and names are not looked up. */
	memcpy(a, spec, n);
	a[n] = '\0';
	if (strcmp(a, "localhost") == 0)
		str_copy(a, "127.0.0.1", sizeof(a));
	if (inet_pton(AF_INET, a, &in6) != 1 && inet_pton(AF_INET6, a, &in6) != 1)
		return -1;
	if (r) {
		r->host = xstrdup(a);
		r->port = (int)port;
	}
	return 0;
}

/* route <domain> via lmtp <host> [port n] | <host:port> | unix:/path */
static int
conf_route_lmtp(struct parser *p, struct route *r)
{
	const char *h = p->tok[4];
	struct buf b;
	int bad;

	r->lmtp = 1;
	r->tls = ROUTE_TLS_NONE;
	r->port = 24;
	if (strcmp(r->domain, "*") == 0)
		return conf_error(p, "route: * cannot go via lmtp");
	buf_init(&b);
	if (strncmp(h, "unix:", 5) == 0 || strchr(h, ':') != NULL)
		buf_puts(&b, h);
	else
		buf_printf(&b, "%s:%d", h, r->port);
	bad = conf_lmtp_spec(b.data, r);
	buf_free(&b);
	if (bad)
		return conf_error(p, "route: via lmtp expects unix:/path, "
		    "address:port or address port N, got \"%s\"", h);
	if (conf_route_opts(p, r, 5) == -1)
		return -1;
	if (r->path && r->port != 24)
		return conf_error(p, "route: a unix socket has no port");
	return 0;
}

/*
 * route <domain|*> via <host>[:port] [port n] [tls ...] [auth file]
 * fallback-relay <host>[:port] [tls ...] [auth file] is read as a route
 * for the domain ROUTE_FALLBACK.
 */
static int
conf_stmt_route(struct parser *p)
{
	struct conf *c = p->conf;
	struct route r;
	const char *why;
	char *colon;
	long long port;

	memset(&r, 0, sizeof(r));
	r.port = 25;
	r.line = p->line;
	if (p->ntok < 4 || strcmp(p->tok[2], "via") != 0)
		return conf_error(p, "route: expected \"route <domain> via "
		    "<host>\"");
	if (strcmp(p->tok[1], "*") != 0 &&
	    strcmp(p->tok[1], ROUTE_FALLBACK) != 0 &&
	    (why = conf_domain_problem(p->tok[1])) != NULL)
		return conf_error(p, "route: invalid domain \"%s\": %s",
		    p->tok[1], why);
	r.domain = xstrdup(p->tok[1]);
	str_lower(r.domain);
	if (strcmp(p->tok[3], "lmtp") == 0) {
		if (p->ntok < 5 || conf_route_lmtp(p, &r) == -1) {
			if (p->ntok < 5)
				conf_error(p, "route: via lmtp needs unix:/path "
				    "or host:port");
			conf_route_free(&r);
			return -1;
		}
	} else if ((r.host = xstrdup(p->tok[3]))[0] == '[' &&
	    (colon = strchr(r.host, ']')) != NULL) {
		/* [2001:db8::1] or [2001:db8::1]:587 */
		char *inner = xstrndup(r.host + 1, (size_t)(colon - r.host - 1));

		if (colon[1] == ':') {
			if (parse_ll(colon + 2, 1, 65535, &port) == -1) {
				free(inner);
				conf_route_free(&r);
				return conf_error(p, "route: bad port in \"%s\"",
				    p->tok[3]);
			}
			r.port = (int)port;
		}
		free(r.host);
		r.host = inner;
	} else if ((colon = strrchr(r.host, ':')) != NULL &&
	    strchr(r.host, ':') == colon && strchr(colon + 1, '.') == NULL) {
		*colon = '\0';
		if (parse_ll(colon + 1, 1, 65535, &port) == -1) {
			conf_route_free(&r);
			return conf_error(p, "route: bad port in \"%s\"",
			    p->tok[3]);
		}
		r.port = (int)port;
	}
	if (!r.lmtp && conf_route_opts(p, &r, 4) == -1) {
		conf_route_free(&r);
		return -1;
	}
	for (size_t i = 0; i < c->nroutes; i++)
		if (strcmp(c->routes[i].domain, r.domain) == 0) {
			int first = c->routes[i].line;

			conf_route_free(&r);
			return conf_error(p, "route: %s already routed at line "
			    "%d", p->tok[1], first);
		}
	c->routes = xreallocarray(c->routes, c->nroutes + 1,
	    sizeof(*c->routes));
	c->routes[c->nroutes++] = r;
	return 0;
}

/* fallback-relay <host>[:port] [tls ...] [auth file] */
static int
conf_stmt_fallback(struct parser *p)
{
	static char kw_route[] = "route", kw_dom[] = ROUTE_FALLBACK,
	    kw_via[] = "via";
	char **save = p->tok, **tok;
	size_t n = p->ntok, i;
	int rc;

	if (n < 2)
		return conf_error(p, "fallback-relay: expected a host");
	tok = xcalloc(n + 2, sizeof(*tok));
	tok[0] = kw_route;
	tok[1] = kw_dom;
	tok[2] = kw_via;
	for (i = 1; i < n; i++)
		tok[i + 2] = save[i];
	p->tok = tok;
	p->ntok = n + 2;
	rc = conf_stmt_route(p);
	p->tok = save;
	p->ntok = n;
	free(tok);
	return rc;
}

/*
 * destination <domain|host> [connections N] [recipients N]
 *     [messages-per-minute N] [messages-per-connection N]
 */
static int
conf_stmt_shape(struct parser *p)
{
	struct conf *c = p->conf;
	struct shape s;
	const char *why;
	long long v;
	size_t i;

	memset(&s, 0, sizeof(s));
	if (p->ntok < 4 || p->ntok % 2 != 0)
		return conf_error(p, "destination: expected \"destination "
		    "<domain|host> <setting> <number> ...\"");
	if ((why = conf_domain_problem(p->tok[1])) != NULL)
		return conf_error(p, "destination: invalid name \"%s\": %s",
		    p->tok[1], why);
	for (i = 0; i < c->nshapes; i++)
		if (str_casecmp(c->shapes[i].name, p->tok[1]) == 0)
			return conf_error(p, "destination: %s given twice",
			    p->tok[1]);
	for (i = 2; i + 1 < p->ntok; i += 2) {
		if (parse_ll(p->tok[i + 1], 1, 100000, &v) == -1)
			return conf_error(p, "destination: bad number \"%s\"",
			    p->tok[i + 1]);
		if (strcmp(p->tok[i], "connections") == 0)
			s.conns = (int)v;
		else if (strcmp(p->tok[i], "recipients") == 0)
			s.rcpts = (int)v;
		else if (strcmp(p->tok[i], "messages-per-minute") == 0)
			s.mpm = (int)v;
		else if (strcmp(p->tok[i], "messages-per-connection") == 0)
			s.mpc = (int)v;
		else
			return conf_error(p, "destination: unknown setting "
			    "\"%s\"", p->tok[i]);
	}
	s.name = xstrdup(p->tok[1]);
	str_lower(s.name);
	c->shapes = xreallocarray(c->shapes, c->nshapes + 1,
	    sizeof(*c->shapes));
	c->shapes[c->nshapes++] = s;
	return 0;
}

static int
conf_selector_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > DKIM_SELECTOR_MAX || s[0] == '.' || s[n - 1] == '.')
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.") == n;
}

/* dkim-key DOMAIN SELECTOR PATH */
static int
conf_stmt_dkim(struct parser *p)
{
	struct conf *c = p->conf;
	struct dkimkey k;
	const char *why;

	if (p->ntok < 4)
		return conf_error(p, "dkim-key: expected \"dkim-key <domain> "
		    "<selector> <key file>\"");
	if (conf_extra(p, 4) == -1)
		return -1;
	if ((why = conf_domain_problem(p->tok[1])) != NULL)
		return conf_error(p, "dkim-key: invalid domain \"%s\": %s",
		    p->tok[1], why);
	if (!conf_selector_ok(p->tok[2]))
		return conf_error(p, "dkim-key: invalid selector \"%s\"",
		    p->tok[2]);
	if (c->ndkimkeys >= DKIM_KEYS_MAX)
		return conf_error(p, "dkim-key: more than %d keys",
		    DKIM_KEYS_MAX);
	memset(&k, 0, sizeof(k));
	k.domain = xstrdup(p->tok[1]);
	str_lower(k.domain);
	for (size_t i = 0; i < c->ndkimkeys; i++)
		if (strcmp(c->dkimkeys[i].domain, k.domain) == 0 &&
		    strcmp(c->dkimkeys[i].selector, p->tok[2]) == 0) {
			free(k.domain);
			return conf_error(p, "dkim-key: %s %s already at line "
			    "%d", p->tok[1], p->tok[2], c->dkimkeys[i].line);
		}
	k.selector = xstrdup(p->tok[2]);
	k.path = conf_abspath(p, p->tok[3]);
	k.line = p->line;
	c->dkimkeys = xreallocarray(c->dkimkeys, c->ndkimkeys + 1,
	    sizeof(*c->dkimkeys));
	c->dkimkeys[c->ndkimkeys++] = k;
	return 0;
}

static int
conf_statement(struct parser *p)
{
	const char *kw = p->tok[0];
	int id;

	if ((id = conf_knob_lookup(kw)) != -1)
		return conf_stmt_knob(p, id);
	if (strcmp(kw, "local-domain") == 0)
		return conf_stmt_domain(p);
	if (strcmp(kw, "trusted-network") == 0)
		return conf_stmt_network(p);
	if (strcmp(kw, "listen") == 0)
		return conf_stmt_listen(p);
	if (strcmp(kw, "virtual") == 0)
		return conf_stmt_virtual(p);
	if (strcmp(kw, "resolver") == 0)
		return conf_stmt_resolver(p);
	if (strcmp(kw, "route") == 0 && p->ntok > 1 &&
	    strcmp(p->tok[1], ROUTE_FALLBACK) != 0)
		return conf_stmt_route(p);
	if (strcmp(kw, "fallback-relay") == 0)
		return conf_stmt_fallback(p);
	if (strcmp(kw, "destination") == 0)
		return conf_stmt_shape(p);
	if (strcmp(kw, "allow-sender") == 0)
		return conf_stmt_grant(p);
	if (strcmp(kw, "limit") == 0)
		return conf_stmt_limit(p);
	if (strcmp(kw, "dkim-key") == 0)
		return conf_stmt_dkim(p);
	return conf_error(p, "unknown keyword \"%s\"", kw);
}

/* ---- whole file ----------------------------------------------------------- */

/* Checks that need the whole file: they report the offending line. */
static int
conf_finish(struct parser *p)
{
	struct conf *c = p->conf;
	char host[256];

	/* First: the hostname counts as a local domain in the checks below. */
	if (c->v[K_HOSTNAME].s == NULL) {
		if (gethostname(host, sizeof(host)) == -1 || host[0] == '\0')
			str_copy(host, "localhost", sizeof(host));
		host[sizeof(host) - 1] = '\0';
		c->v[K_HOSTNAME].s = xstrdup(host);
	}
	for (size_t i = 0; i < c->nvusers; i++) {
		const char *d = strchr(c->vusers[i].address, '@') + 1;

		if (!conf_is_local_domain(c, d)) {
			p->line = p->vuser_line[i];
			return conf_error(p, "virtual: domain of \"%s\" is not "
			    "a local-domain", c->vusers[i].address);
		}
	}
	if (c->nlisteners == 0)
		return conf_error(p, "no listen statement");
	if (c->v[K_SRS_DOMAIN].s == NULL)
		c->v[K_SRS_DOMAIN].s = xstrdup(c->ndomains ? c->domains[0] :
		    c->v[K_HOSTNAME].s);
	if (c->v[K_ORIGIN].s == NULL)
		c->v[K_ORIGIN].s = xstrdup(c->ndomains ? c->domains[0] :
		    c->v[K_HOSTNAME].s);
	if (strcmp(c->v[K_LOCAL_DELIVERY].s, "lmtp") == 0 &&
	    c->v[K_LMTP].s == NULL)
		return conf_error(p, "local-delivery lmtp needs an lmtp "
		    "setting");
	for (size_t i = 0; i < c->nroutes; i++)
		if (c->routes[i].lmtp &&
		    conf_is_local_domain(c, c->routes[i].domain)) {
			p->line = c->routes[i].line;
			return conf_error(p, "route: %s is a local-domain (use "
			    "local-delivery lmtp)", c->routes[i].domain);
		}
	if (strcmp(c->v[K_LMTP_VERIFY].s, "map") == 0 &&
	    c->v[K_LMTP_RECIPIENTS].s == NULL)
		return conf_error(p, "lmtp-verify map needs an lmtp-recipients "
		    "file");
	if (c->v[K_TLS_KEY].s != NULL && c->v[K_TLS_CERT].s == NULL) {
		p->line = c->v[K_TLS_KEY].line;
		return conf_error(p, "tls-key needs tls-cert (the certificate "
		    "it belongs to)");
	}
	return 0;
}

static int
conf_parse_lines(struct parser *p, const char *text, size_t len)
{
	size_t pos = 0, end, llen;
	const char *nl;

	while (pos < len) {
		p->line++;
		nl = memchr(text + pos, '\n', len - pos);
		end = nl ? (size_t)(nl - text) : len;
		llen = end - pos;
		if (llen > 0 && text[end - 1] == '\r')
			llen--;
		if (conf_lex_line(p, text + pos, llen) == -1)
			return -1;
		if (p->ntok > 0 && conf_statement(p) == -1)
			return -1;
		pos = end + 1;
	}
	if (p->line == 0)
		p->line = 1;
	return 0;
}

struct conf *
conf_parse(const char *name, const char *text, size_t len,
    const char *basedir, char *err, size_t errlen)
{
	struct parser p;
	char cwd[4096];
	int r;

	memset(&p, 0, sizeof(p));
	p.conf = xcalloc(1, sizeof(*p.conf));
	p.conf->file = xstrdup(name ? name : "config");
	p.err = err;
	p.errlen = errlen;
	if (errlen)
		err[0] = '\0';
	buf_init(&p.tokbuf);
	if (basedir == NULL)
		basedir = getcwd(cwd, sizeof(cwd)) ? cwd : "/";
	p.basedir = basedir;
	r = conf_defaults(&p);
	if (r == 0)
		r = conf_parse_lines(&p, text, len);
	if (r == 0)
		r = conf_finish(&p);
	buf_free(&p.tokbuf);
	free(p.tok);
	free(p.domain_line);
	free(p.vuser_line);
	if (r == -1) {
		conf_free(p.conf);
		return NULL;
	}
	return p.conf;
}

struct conf *
conf_load(const char *path, const char *basedir, struct buf *text,
    char *err, size_t errlen)
{
	buf_reset(text);
	if (file_read_all(path, CONF_MAX_FILE, text) == -1) {
		if (errno == EFBIG)
			snprintf(err, errlen, "%s: larger than the 1 MiB limit",
			    path);
		else
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	return conf_parse(path, text->data, text->len, basedir, err, errlen);
}

void
conf_free(struct conf *c)
{
	if (c == NULL)
		return;
	free(c->file);
	for (int i = 0; i < K__COUNT; i++)
		free(c->v[i].s);
	for (size_t i = 0; i < c->ndomains; i++)
		free(c->domains[i]);
	free(c->domains);
	free(c->trusted);
	for (size_t i = 0; i < c->nlisteners; i++)
		conf_listener_free(&c->listeners[i]);
	free(c->listeners);
	for (size_t i = 0; i < c->nvusers; i++) {
		free(c->vusers[i].address);
		free(c->vusers[i].maildir);
	}
	free(c->vusers);
	free(c->resolvers);
	free(c->resolverlen);
	for (size_t i = 0; i < c->nroutes; i++)
		conf_route_free(&c->routes[i]);
	free(c->routes);
	for (size_t i = 0; i < c->ngrants; i++) {
		free(c->grants[i].account);
		free(c->grants[i].address);
	}
	free(c->grants);
	for (size_t i = 0; i < c->nlimits; i++)
		free(c->limits[i].account);
	free(c->limits);
	for (size_t i = 0; i < c->nshapes; i++)
		free(c->shapes[i].name);
	free(c->shapes);
	for (size_t i = 0; i < c->ndkimkeys; i++) {
		free(c->dkimkeys[i].domain);
		free(c->dkimkeys[i].selector);
		free(c->dkimkeys[i].path);
		if (c->dkimkeys[i].pem)
			explicit_bzero(c->dkimkeys[i].pem, c->dkimkeys[i].pemlen);
		free(c->dkimkeys[i].pem);
	}
	free(c->dkimkeys);
	free(c);
}

int
conf_auth_required(const struct conf *c, const struct listener *l)
{
	const char *v = NULL;

	if (l && l->knobs[K_AUTH_REQUIRED].set)
		v = l->knobs[K_AUTH_REQUIRED].s;
	else if (c->v[K_AUTH_REQUIRED].s)
		v = c->v[K_AUTH_REQUIRED].s;
	if (v)
		return strcmp(v, "yes") == 0;
	return l && l->role == ROLE_MSA;
}

int
conf_spf_enabled(const struct conf *c, const struct listener *l)
{
	const char *v = NULL;

	if (l && l->knobs[K_SPF].set)
		v = l->knobs[K_SPF].s;
	else if (c->v[K_SPF].s)
		v = c->v[K_SPF].s;
	if (v)
		return strcmp(v, "yes") == 0;
	return l && l->role == ROLE_MX;
}

int
conf_dmarc_mode(const struct conf *c, const struct listener *l)
{
	const char *v = NULL;

	if (l && l->knobs[K_DMARC].set)
		v = l->knobs[K_DMARC].s;
	else if (c->v[K_DMARC].s)
		v = c->v[K_DMARC].s;
	if (v == NULL)
		return l && l->role == ROLE_MX ? DMARC_MODE_ENFORCE :
		    DMARC_MODE_OFF;
	return strcmp(v, "enforce") == 0 ? DMARC_MODE_ENFORCE :
	    strcmp(v, "monitor") == 0 ? DMARC_MODE_MONITOR : DMARC_MODE_OFF;
}

int
conf_dkim_verify_enabled(const struct conf *c, const struct listener *l)
{
	const char *v = NULL;

	if (l && l->knobs[K_DKIM_VERIFY].set)
		v = l->knobs[K_DKIM_VERIFY].s;
	else if (c->v[K_DKIM_VERIFY].s)
		v = c->v[K_DKIM_VERIFY].s;
	if (v)
		return strcmp(v, "yes") == 0;
	return l && l->role == ROLE_MX;
}

/*
 * An account's own address: a virtual account's name (with any
 * +extension), a system account at any local domain; then what
 * allow-sender grants.  addr is compared without case.
 */
int
conf_sender_allowed(const struct conf *c, const char *account,
    const char *addr)
{
	char a[512], acct[256], *at, *plus;
	size_t i;

	if (str_copy(a, addr, sizeof(a)) >= sizeof(a) ||
	    str_copy(acct, account, sizeof(acct)) >= sizeof(acct))
		return 0;
	str_lower(a);
	str_lower(acct);
	if ((at = strrchr(a, '@')) == NULL || at == a)
		return 0;
	for (i = 0; i < c->ngrants; i++)
		if (strcmp(c->grants[i].account, acct) == 0 &&
		    (strcmp(c->grants[i].address, a) == 0 ||
		    (c->grants[i].address[0] == '@' &&
		    strcmp(c->grants[i].address + 1, at + 1) == 0)))
			return 1;
	/* local+extension@domain is local@domain's. */
	if ((plus = memchr(a, '+', (size_t)(at - a))) != NULL)
		memmove(plus, at, strlen(at) + 1);
	at = strrchr(a, '@');
	if (strchr(acct, '@') != NULL)
		return strcmp(a, acct) == 0;
	*at = '\0';
	return strcmp(a, acct) == 0 && conf_is_local_domain(c, at + 1);
}

/* ---- queries ------------------------------------------------------------- */

const struct route *
conf_lmtp_route(const struct conf *c, const char *domain)
{
	for (size_t i = 0; i < c->nroutes; i++)
		if (c->routes[i].lmtp &&
		    str_casecmp(c->routes[i].domain, domain) == 0)
			return &c->routes[i];
	return NULL;
}

const struct route *
conf_find_route(const struct conf *c, const char *domain)
{
	const struct route *any = NULL;

	for (size_t i = 0; i < c->nroutes; i++) {
		if (str_casecmp(c->routes[i].domain, domain) == 0)
			return &c->routes[i];
		if (strcmp(c->routes[i].domain, "*") == 0)
			any = &c->routes[i];
	}
	return any;
}

const struct route *
conf_fallback_route(const struct conf *c)
{
	for (size_t i = 0; i < c->nroutes; i++)
		if (strcmp(c->routes[i].domain, ROUTE_FALLBACK) == 0)
			return &c->routes[i];
	return NULL;
}

const struct shape *
conf_find_shape(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->nshapes; i++)
		if (str_casecmp(c->shapes[i].name, name) == 0)
			return &c->shapes[i];
	return NULL;
}

/* A DKIM key file: read, checked, kept for the vault. */
static int
conf_load_dkim(struct conf *c, struct dkimkey *k, char *err, size_t errlen)
{
	char why[128];
	struct buf b;

	buf_init(&b);
	if (file_read_all(k->path, 64 * 1024, &b) == -1) {
		snprintf(err, errlen, "%s:%d: dkim-key %s: %s", c->file,
		    k->line, k->path, strerror(errno));
		buf_free(&b);
		return -1;
	}
	if (dkim_key_check(b.data, b.len, &k->alg, &k->siglen, why,
	    sizeof(why)) == -1) {
		snprintf(err, errlen, "%s:%d: dkim-key %s: %s", c->file,
		    k->line, k->path, why);
		explicit_bzero(b.data, b.len);
		buf_free(&b);
		return -1;
	}
	k->pemlen = b.len;
	k->pem = buf_steal(&b);
	return 0;
}

int
conf_load_secrets(struct conf *c, char *err, size_t errlen)
{
	for (size_t i = 0; i < c->ndkimkeys; i++)
		if (conf_load_dkim(c, &c->dkimkeys[i], err, errlen) == -1)
			return -1;
	for (size_t i = 0; i < c->nroutes; i++) {
		struct route *r = &c->routes[i];
		struct buf b;
		char *colon, *nl;

		if (r->authfile == NULL)
			continue;
		buf_init(&b);
		if (file_read_all(r->authfile, 4096, &b) == -1) {
			snprintf(err, errlen, "%s:%d: route auth file %s: %s",
			    c->file, r->line, r->authfile, strerror(errno));
			buf_free(&b);
			return -1;
		}
		if ((nl = memchr(b.data, '\n', b.len)) != NULL)
			*nl = '\0';
		if ((nl = strchr(b.data, '\r')) != NULL)
			*nl = '\0';	/* a file written with CRLF */
		if ((colon = strchr(b.data, ':')) == NULL || colon == b.data) {
			snprintf(err, errlen, "%s:%d: route auth file %s: "
			    "expected one line \"user:password\"", c->file,
			    r->line, r->authfile);
			explicit_bzero(b.data, b.len);
			buf_free(&b);
			return -1;
		}
		*colon = '\0';
		free(r->authuser);
		free(r->authpass);
		r->authuser = xstrdup(b.data);
		r->authpass = xstrdup(colon + 1);
		explicit_bzero(b.data, b.len);
		buf_free(&b);
	}
	return 0;
}

const char *
conf_str(const struct conf *c, enum knob_id id)
{
	if ((unsigned)id >= K__COUNT)
		return NULL;
	return c->v[id].s;
}

long long
conf_num(const struct conf *c, const struct listener *l, enum knob_id id)
{
	if ((unsigned)id >= K__COUNT)
		return 0;
	if (l != NULL && l->knobs[id].set)
		return l->knobs[id].n;
	return c->v[id].n;
}

int
conf_tls_mode(const struct conf *c, const struct listener *l)
{
	return (int)conf_num(c, l, K_TLS);
}

int
conf_is_local_domain(const struct conf *c, const char *domain)
{
	/* Like Postfix's mydestination: the host's own name is always ours. */
	if (str_casecmp(domain, "localhost") == 0 ||
	    (c->v[K_HOSTNAME].s && str_casecmp(domain, c->v[K_HOSTNAME].s) == 0))
		return 1;
	for (size_t i = 0; i < c->ndomains; i++)
		if (str_casecmp(c->domains[i], domain) == 0)
			return 1;
	return 0;
}

static int
conf_net_match(const struct netmask *n, int family, const unsigned char *a)
{
	int full = n->bits / 8, rest = n->bits % 8;

	if (n->family != family)
		return 0;
	if (memcmp(n->addr, a, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((n->addr[full] ^ a[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

static int
conf_trusted_addr(const struct conf *c, int family, const unsigned char *a)
{
	for (size_t i = 0; i < c->ntrusted; i++)
		if (conf_net_match(&c->trusted[i], family, a))
			return 1;
	return 0;
}

int
conf_is_trusted(const struct conf *c, const struct sockaddr *sa)
{
	const struct sockaddr_in6 *sin6;
	const unsigned char *a6;

	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET)
		return conf_trusted_addr(c, AF_INET, (const unsigned char *)
		    &((const struct sockaddr_in *)sa)->sin_addr);
	if (sa->sa_family != AF_INET6)
		return 0;
	sin6 = (const struct sockaddr_in6 *)sa;
	a6 = sin6->sin6_addr.s6_addr;
	if (conf_trusted_addr(c, AF_INET6, a6))
		return 1;
	/* a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d */
	return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) &&
	    conf_trusted_addr(c, AF_INET, a6 + 12);
}

const struct vuser *
conf_find_vuser(const struct conf *c, const char *address)
{
	for (size_t i = 0; i < c->nvusers; i++)
		if (str_casecmp(c->vusers[i].address, address) == 0)
			return &c->vusers[i];
	return NULL;
}

/* ---- ternd -P --------------------------------------------------------------- */

static void
conf_print_quoted(struct buf *b, const char *s)
{
	buf_putc(b, '"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			buf_putc(b, '\\');
		buf_putc(b, *s);
	}
	buf_putc(b, '"');
}

static void
conf_print_value(struct buf *b, enum knob_id id, const struct knob_val *v)
{
	switch (knob_defs[id].type) {
	case KNOB_STRING:
	case KNOB_PATH:
		conf_print_quoted(b, v->s ? v->s : "");
		break;
	case KNOB_DURATION:
		buf_printf(b, "%lldms", v->n);
		break;
	default:
		buf_printf(b, "%lld", v->n);
		break;
	}
}

static void
conf_print_network(struct buf *b, const struct netmask *n)
{
	char a[INET6_ADDRSTRLEN];

	if (inet_ntop(n->family, n->addr, a, sizeof(a)) == NULL)
		return;
	buf_printf(b, "trusted-network %s/%d\n", a, n->bits);
}

static void
conf_print_listener(struct buf *b, const struct conf *c,
    const struct listener *l)
{
	buf_printf(b, "listen %s %s port %d", l->role == ROLE_MX ? "mx" : "msa",
	    l->addr, l->port);
	for (int i = 0; i < K__COUNT; i++) {
		struct knob_val v;

		if (!knob_defs[i].per_listener)
			continue;
		v = l->knobs[i].set ? l->knobs[i] : c->v[i];
		if (i == K_AUTH_REQUIRED) {	/* unset: by the listener's role */
			buf_printf(b, " %s %s", knob_defs[i].name,
			    conf_auth_required(c, l) ? "yes" : "no");
			continue;
		}
		if (i == K_SPF || i == K_DKIM_VERIFY) {
			buf_printf(b, " %s %s", knob_defs[i].name, (i == K_SPF ?
			    conf_spf_enabled(c, l) : conf_dkim_verify_enabled(c,
			    l)) ? "yes" : "no");
			continue;
		}
		if (i == K_DMARC) {
			static const char *m[] = { "off", "monitor",
			    "enforce" };

			buf_printf(b, " dmarc %s", m[conf_dmarc_mode(c, l)]);
			continue;
		}
		buf_printf(b, " %s ", knob_defs[i].name);
		conf_print_value(b, i, &v);
	}
	buf_putc(b, '\n');
}

void
conf_print(const struct conf *c, struct buf *b)
{
	buf_printf(b, "# effective settings of %s\n", c->file);
	for (int i = 0; i < K__COUNT; i++) {
		if ((knob_defs[i].type == KNOB_STRING ||
		    knob_defs[i].type == KNOB_PATH) && c->v[i].s == NULL) {
			buf_printf(b, "# %s is not set\n", knob_defs[i].name);
			continue;
		}
		buf_printf(b, "%s ", knob_defs[i].name);
		conf_print_value(b, i, &c->v[i]);
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->ndomains; i++) {
		buf_puts(b, "local-domain ");
		conf_print_quoted(b, c->domains[i]);
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->ngrants; i++) {
		buf_puts(b, "allow-sender ");
		conf_print_quoted(b, c->grants[i].account);
		buf_putc(b, ' ');
		conf_print_quoted(b, c->grants[i].address);
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->nlimits; i++) {
		buf_puts(b, "limit ");
		conf_print_quoted(b, c->limits[i].account);
		for (size_t k = 0; k < LIM__COUNT; k++)
			if (c->limits[i].v[k] >= 0)
				buf_printf(b, " %s %lld", conf_limit_names[k],
				    c->limits[i].v[k]);
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->ntrusted; i++)
		conf_print_network(b, &c->trusted[i]);
	for (size_t i = 0; i < c->nvusers; i++) {
		buf_puts(b, "virtual ");
		conf_print_quoted(b, c->vusers[i].address);
		buf_puts(b, " maildir ");
		conf_print_quoted(b, c->vusers[i].maildir);
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->nlisteners; i++)
		conf_print_listener(b, c, &c->listeners[i]);
	for (size_t i = 0; i < c->nresolvers; i++) {
		char a[INET6_ADDRSTRLEN] = "?";
		const struct sockaddr_storage *ss = &c->resolvers[i];
		int port;

		if (ss->ss_family == AF_INET) {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->
			    sin_addr, a, sizeof(a));
			port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
		} else {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->
			    sin6_addr, a, sizeof(a));
			port = ntohs(((const struct sockaddr_in6 *)ss)->
			    sin6_port);
		}
		buf_printf(b, "resolver %s port %d\n", a, port);
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		static const char *tls[] = { "opportunistic", "required",
		    "verify", "none" };
		const struct route *r = &c->routes[i];

		if (strcmp(r->domain, ROUTE_FALLBACK) == 0)
			buf_puts(b, "fallback-relay ");
		else {
			buf_puts(b, "route ");
			conf_print_quoted(b, r->domain);
			buf_puts(b, r->lmtp ? " via lmtp " : " via ");
		}
		if (r->path)
			buf_printf(b, "unix:%s", r->path);
		else
			conf_print_quoted(b, r->host);
		if (!r->path)
			buf_printf(b, " port %d", r->port);
		buf_printf(b, " tls %s", tls[r->tls]);
		if (r->authfile) {
			buf_puts(b, " auth ");
			conf_print_quoted(b, r->authfile);
		}
		buf_putc(b, '\n');
	}
	for (size_t i = 0; i < c->nshapes; i++) {
		const struct shape *s = &c->shapes[i];

		buf_puts(b, "destination ");
		conf_print_quoted(b, s->name);
		if (s->conns)
			buf_printf(b, " connections %d", s->conns);
		if (s->rcpts)
			buf_printf(b, " recipients %d", s->rcpts);
		if (s->mpm)
			buf_printf(b, " messages-per-minute %d", s->mpm);
		if (s->mpc)
			buf_printf(b, " messages-per-connection %d", s->mpc);
		buf_putc(b, '\n');
	}
}
