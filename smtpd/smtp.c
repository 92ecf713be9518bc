/*
 * smtp: the SMTP server engine, run by the unprivileged smtp process.  One
 * engine serves every listener; a listener's role and knobs (its profile)
 * change limits and checks, never the code path.  Input hygiene lives in
 * the line reader: only CRLF ends a line, bare CR or LF, NUL bytes and
 * overlong lines are refused there, before any parser sees the text.
 * TLS is a profile option too: STARTTLS (RFC 3207) switches a session's
 * plain bufferevent for a TLS one on the same socket, and an implicit-TLS
 * listener (RFC 8314) starts every session with that switch done; a
 * plaintext session holds no TLS state at all.  Messages are written into
 * a spool file the queue process creates and hands over; the 250 goes out
 * only when the queue says it is durable.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <sys/un.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "lib/addr.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "queue/mta.h"
#include "lib/proc.h"
#include "queue/resolve.h"
#include "smtpd/clients.h"
#include "smtpd/policy.h"
#include "smtpd/dkimsign.h"
#include "smtpd/sasl.h"
#include "smtpd/smtp_parse.h"
#include "smtpd/tls.h"
#include "smtpd/verify.h"
#include "auth/srs.h"
#include "auth/vault.h"
#include "lib/util.h"
#include "lib/esmtp.h"

#define SMTP_WBUF	(64 * 1024)	/* spool write chunk */
#define SMTP_INMAX	(256 * 1024)	/* input buffered while busy */
#define SMTP_OUTMAX	(64 * 1024)	/* unread replies before we pause */
#define SMTP_DRAIN_SECS	20		/* SIGTERM grace for transactions */
#define SMTP_FD_RESERVE	32		/* listeners, channels, maps, spare */
#define SMTP_FD_PER_DELIVERY 3		/* connection, message, spare */
#define SMTP_ACCEPT_PAUSE 1		/* seconds without accept() on EMFILE */

enum sstate {
	SS_PREGREET,	/* greeting delayed; input now means a bad client */
	SS_CMD,		/* reading commands */
	SS_WAIT,	/* waiting for the queue; input is held */
	SS_VAULT,	/* waiting for the vault (SRS); input is held */
	SS_POLICY,	/* waiting for a policy verdict (SPF, DKIM); input held */
	SS_DATA,	/* reading message data */
	SS_BDAT,	/* reading a BDAT chunk (RFC 3030) */
	SS_STARTTLS,	/* our 220 to STARTTLS queued; TLS once it is sent */
	SS_HANDSHAKE,	/* the TLS handshake, as the server */
	SS_CLOSING	/* final reply queued; close when written */
};

/* A recipient's NOTIFY= and ORCPT= (RFC 3461); orcpt NULL: not given. */
struct rcpt_dsn {
	unsigned	 notify;
	char		*orcpt;
};

/* Why a message in DATA is refused at its end. */
enum data_err {
	DE_NONE, DE_SIZE, DE_LINE, DE_BARE, DE_NUL, DE_HOPS, DE_WRITE, DE_QUEUE,
	DE_FROM, DE_DKIM, DE_POLICY
};
static const char *const data_err_name[] = {
	"none", "size", "line-length", "bare-cr-lf", "nul", "hops", "write",
	"queue", "from-not-owned", "dkim-sign", "policy"
};

/* A SASL exchange in progress: the next line is a response, not a verb. */
enum sasl_state { SASL_NONE, SASL_PLAIN, SASL_LOGIN_USER, SASL_LOGIN_PASS };

#define SMTP_HDR_MAX	4096	/* a header field kept for checking */

struct session {
	struct session		*next, *prev;
	uint64_t		 id;
	struct bufferevent	*bev;
	struct event		*timer;
	const struct listener	*l;
	struct sockaddr_storage	 ss;
	char			 addr[96];
	enum sstate		 state;
	int			 esmtp;
	char			*helo;
	int			 errors;
	int			 skip;		/* discarding an overlong line */
	int			 skipcr;	/* ...whose last byte was CR */
	int			 closing;	/* shutdown: close after txn */
	int			 local;		/* submit socket: sendmail(1) */
	int			 tls;		/* the handshake is done */
	int			 authed;	/* AUTH done (ESMTPA) */
	char			*authuser;	/* the account it proved */
	enum sasl_state		 sasl;
	char			*saslname;	/* LOGIN: the name given */
	int			 authwait;	/* the vault checks a password */
	int			 goodbye;	/* we close: TLS close_notify */
	uint64_t		 active;	/* ms: last input (or connect) */
	uid_t			 uid;		/* its peer's uid */
	int			 probe;		/* PROBE_*: the queue is asked */
	char			 localacct[80];	/* "local:NAME": its limits */
	/* transaction */
	char			*sender;	/* NULL = no MAIL yet */
	struct mail_params	 mp;
	char			**rcpts;
	size_t			 nrcpts;
	char			 qid[32];
	int			 committing;	/* Q_COMMIT sent, no answer yet */
	int			 msgfd;
	struct buf		 wbuf;
	uint64_t		 msgsize;
	enum data_err		 derr;
	int			 werrno;
	int			 prevcrlf;	/* last DATA line ended in CRLF */
	int			 inheaders;
	long long		 hops;		/* Received: fields seen */
	char			*vaultrcpt;	/* RCPT the vault is checking */
	char			*verifyrcpt;	/* RCPT an LMTP probe checks */
	uint64_t		 nrejected;	/* RCPTs refused as unknown */
	/* header checks of an authenticated submission */
	struct buf		 hdr;		/* the field being read */
	int			 hasdate, hasmsgid;
	char			*badfrom;	/* a From: address not its own */
	struct policy_txn	*pol;		/* verdicts, headers to prepend:
					   from MAIL to the transaction's end */
	/* BDAT: the chunk being read; DSN: each recipient's parameters */
	int			 bdat;		/* this transaction uses BDAT */
	int			 bok;		/* the chunk is the message's */
	int			 blast, blong;	/* LAST given; line too long */
	uint64_t		 bleft;		/* chunk octets still to read */
	char			 breply[160];	/* refusal sent after the chunk */
	struct buf		 bline;		/* the line being assembled */
	struct rcpt_dsn		 rcur;		/* of the RCPT being checked */
	struct rcpt_dsn		*rdsn;		/* parallel to rcpts */
	int			 urgent;	/* Priority: urgent */
	struct dsign		*dkim;		/* DKIM signing, or NULL */
};

/* The profile of the local submission socket: no per-address limits. */
static struct listener smtp_local = { .role = ROLE_LOCAL, .addr = "local" };
/* The same, for the maildrop's pickups, which the parent hands over. */
static struct listener smtp_pickup = { .role = ROLE_LOCAL,
    .addr = "maildrop" };

static struct {
	struct event_base	*base;
	struct conf		*conf;
	struct aliases		*aliases;
	struct ipc		*parent;
	struct ipc		*queue;
	struct evconnlistener	**lev;
	size_t			 nlev;
	struct session		*sessions;
	size_t			 nsessions;
	uint64_t		 nextid;
	int			 stopping;	/* SIGTERM */
	int			 draining;	/* SIGUSR1: reload handover */
	struct event		*deadline;
	size_t			 maxconn;	/* max-connections, or fewer */
	int			 stress;	/* most slots taken: short timeouts */
	struct event		*resume;	/* accepting again after EMFILE */
	int			 paused;	/* ...not until then */
	time_t			 pauselog;	/* last time a pause was logged */
	char			*linebuf;
	size_t			 linecap;
} smtp;

static void	session_reply(struct session *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));
static void	session_process(struct session *);
static void	session_close(struct session *, const char *);
static void	session_reset(struct session *);
static void	smtp_maybe_exit(void);
static void	smtp_accept_resume(evutil_socket_t, short, void *);
static void	smtp_stress_check(void);

static long long
session_knob(const struct session *s, enum knob_id k)
{
	return conf_num(smtp.conf, s->l, k);
}

static uint64_t
smtp_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * The wait for a client's next command: command-timeout, or under stress
 * (most slots taken) the shorter stress-command-timeout, as Postfix's
 * smtpd does in stress mode, so idle connections cannot hold the server.
 */
static void
session_timeouts(struct session *s)
{
	struct timeval tv;
	long long ms = session_knob(s, K_COMMAND_TIMEOUT);

	if (smtp.stress && session_knob(s, K_STRESS_COMMAND_TIMEOUT) < ms)
		ms = session_knob(s, K_STRESS_COMMAND_TIMEOUT);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

/* One event line with the session's ids; warn: at warning level. */
static void
session_vlog(const struct session *s, int warn, const char *fmt, va_list ap)
{
	void (*emit)(const char *, ...) = warn ? log_warnx : log_info;
	struct buf b;

	buf_init(&b);
	buf_vprintf(&b, fmt, ap);
	if (s->qid[0])
		emit("s=%016llx q=%s %s client=%s", (unsigned long long)s->id,
		    s->qid, b.data, s->addr);
	else
		emit("s=%016llx %s client=%s", (unsigned long long)s->id,
		    b.data, s->addr);
	buf_free(&b);
}

static void
session_log(const struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
session_log(const struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vlog(s, 0, fmt, ap);
	va_end(ap);
}

/* For what the admin should look at. */
static void
session_warn(const struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
session_warn(const struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vlog(s, 1, fmt, ap);
	va_end(ap);
}

static void
session_vreply(struct session *s, const char *fmt, va_list ap)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);

	evbuffer_add_vprintf(out, fmt, ap);
	evbuffer_add(out, "\r\n", 2);
}

static void
session_reply(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vreply(s, fmt, ap);
	va_end(ap);
}

/* A refused command: count it, and end sessions that only make errors. */
static void
session_error(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
session_error(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	session_vreply(s, fmt, ap);
	va_end(ap);
	if (++s->errors >= session_knob(s, K_MAX_ERRORS)) {
		session_reply(s, "421 4.7.0 %s too many errors, closing",
		    conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "too many errors");
	}
}

/*
 * A transaction's policy state (SPF's verdict, the DKIM and DMARC steps,
 * the header fields to prepend) is several KiB: it is made at MAIL (or
 * when the data path first needs it) and given back when the transaction
 * ends, so an idle connection does not hold it.
 */
static struct policy_txn *
session_pol(struct session *s)
{
	if (s->pol == NULL) {
		s->pol = xcalloc(1, sizeof(*s->pol));
		buf_init(&s->pol->headers);
		buf_init(&s->pol->dmarc_rec);
	}
	return s->pol;
}

static void
session_pol_free(struct session *s)
{
	if (s->pol) {
		policy_txn_free(s->pol);
		free(s->pol);
		s->pol = NULL;
	}
}

static void
session_free(struct session *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		smtp.sessions = s->next;
	if (s->next)
		s->next->prev = s->prev;
	smtp.nsessions--;
	if (s->msgfd >= 0)
		close(s->msgfd);
	if (s->qid[0] && smtp.queue)
		ipc_send(smtp.queue, IMSG_Q_ABORT, s->qid, strlen(s->qid), -1);
	session_reset(s);
	free(s->helo);
	free(s->rcur.orcpt);
	free(s->vaultrcpt);
	free(s->verifyrcpt);
	free(s->authuser);
	free(s->saslname);
	free(s->badfrom);
	session_pol_free(s);
	buf_free(&s->hdr);
	buf_free(&s->wbuf);
	buf_free(&s->bline);
	if (s->timer)
		event_free(s->timer);
	/* Our last reply is sent: say so in TLS too (RFC 8446 6.1). */
	if (s->tls && s->goodbye)
		SSL_shutdown(bufferevent_openssl_get_ssl(s->bev));
	bufferevent_free(s->bev);
	clients_remove(&s->ss);
	free(s);
	/* A descriptor is free: a pause for EMFILE can end now. */
	smtp_accept_resume(-1, 0, NULL);
	smtp_stress_check();
	smtp_maybe_exit();
}

static void
session_close(struct session *s, const char *why)
{
	if (s->state == SS_CLOSING)
		return;
	session_log(s, "event=disconnect reason=\"%s\"", log_q(why));
	s->state = SS_CLOSING;
	s->goodbye = 1;
	bufferevent_disable(s->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_output(s->bev)) == 0)
		session_free(s);
}

/* Forget the transaction (RSET, end of DATA); keep HELO. */
static void
session_reset(struct session *s)
{
	size_t i;

	free(s->sender);
	s->sender = NULL;
	for (i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	for (i = 0; i < s->nrcpts; i++)
		free(s->rdsn[i].orcpt);
	free(s->rdsn);
	s->rdsn = NULL;
	s->nrcpts = 0;
	/* A chunk being read stays to be read (bleft): its reply is sent. */
	s->bdat = s->bok = s->blong = 0;
	s->breply[0] = '\0';
	buf_reset(&s->bline);
	if (s->msgfd >= 0) {
		close(s->msgfd);
		s->msgfd = -1;
	}
	s->qid[0] = '\0';
	s->committing = 0;
	s->nrejected = 0;
	buf_reset(&s->wbuf);
	s->msgsize = 0;
	s->derr = DE_NONE;
	s->werrno = 0;
	buf_reset(&s->hdr);
	s->hasdate = s->hasmsgid = s->urgent = 0;
	free(s->badfrom);
	s->badfrom = NULL;
	session_pol_free(s);
	dsign_free(s->dkim);
	s->dkim = NULL;
}

/* ---- line reader ------------------------------------------------------ */

enum line_status { LN_NONE, LN_OK, LN_LONG, LN_BARE, LN_NUL };

/*
 * Take one line from the input.  Only CRLF ends a line; a line ended by a
 * bare LF, or holding a CR not followed by LF, is LN_BARE; an overlong
 * line is discarded through its end and reported once as LN_LONG.
 * *len excludes the line terminator.
 */
static enum line_status
session_getline(struct session *s, size_t max, char **line, size_t *len,
    int *crlf)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_ptr p;
	size_t n, avail = evbuffer_get_length(in), need;

	p = evbuffer_search(in, "\n", 1, NULL);
	if (s->skip) {
		if (p.pos == -1) {
			s->skipcr = avail > 0 &&
			    evbuffer_pullup(in, -1)[avail - 1] == '\r';
			evbuffer_drain(in, avail);
			return LN_NONE;
		}
		/* Whether this overlong line ended in CRLF or a bare LF. */
		*crlf = p.pos > 0 ? evbuffer_pullup(in, p.pos + 1)[p.pos - 1] ==
		    '\r' : s->skipcr;
		evbuffer_drain(in, (size_t)p.pos + 1);
		s->skip = 0;
		return LN_LONG;
	}
	if (p.pos == -1) {
		if (avail > max + 1) {
			s->skipcr = evbuffer_pullup(in, -1)[avail - 1] == '\r';
			evbuffer_drain(in, avail);
			s->skip = 1;
		}
		return LN_NONE;
	}
	n = (size_t)p.pos + 1;
	if (n > max + 2) {
		*crlf = evbuffer_pullup(in, (ssize_t)n)[n - 2] == '\r';
		evbuffer_drain(in, n);
		return LN_LONG;
	}
	need = n + 1;
	if (need > smtp.linecap) {
		smtp.linebuf = xreallocarray(smtp.linebuf, need, 1);
		smtp.linecap = need;
	}
	evbuffer_remove(in, smtp.linebuf, n);
	smtp.linebuf[n] = '\0';
	*line = smtp.linebuf;
	*crlf = n >= 2 && smtp.linebuf[n - 2] == '\r';
	*len = *crlf ? n - 2 : n - 1;
	smtp.linebuf[*len] = '\0';
	if (!*crlf || memchr(smtp.linebuf, '\r', *len) != NULL)
		return LN_BARE;
	if (memchr(smtp.linebuf, '\0', *len) != NULL)
		return LN_NUL;
	return LN_OK;
}

/* ---- commands ----------------------------------------------------------- */

/* STARTTLS is offered on a starttls listener, once, with a certificate. */
static int
session_tls_offered(const struct session *s)
{
	return !s->tls && !s->local && tls_server_ready() &&
	    conf_tls_mode(smtp.conf, s->l) == TLS_MODE_STARTTLS;
}

/* AUTH: on submission listeners, inside TLS, once. */
static int
session_auth_offered(const struct session *s)
{
	return s->l->role == ROLE_MSA && s->tls && !s->authed;
}

static void
cmd_helo(struct session *s, const char *arg, int esmtp)
{
	const char *why;
	const char *host = conf_str(smtp.conf, K_HOSTNAME);

	if (smtp_parse_helo(arg, &why) == -1) {
		session_error(s, "501 5.5.4 %s", why ? why : "bad HELO argument");
		return;
	}
	session_reset(s);
	free(s->helo);
	s->helo = xstrndup(arg, strcspn(arg, " "));	/* the name alone */
	s->esmtp = esmtp;
	if (!esmtp) {
		session_reply(s, "250 %s", host);
		return;
	}
	session_reply(s, "250-%s", host);
	if (session_tls_offered(s))
		session_reply(s, "250-STARTTLS");
	if (session_auth_offered(s))
		session_reply(s, "250-AUTH PLAIN LOGIN");
	session_reply(s, "250-PIPELINING");
	session_reply(s, "250-SIZE %lld", session_knob(s, K_MAX_MESSAGE_SIZE));
	session_reply(s, "250-8BITMIME");
	session_reply(s, "250-SMTPUTF8");
	session_reply(s, "250-CHUNKING");
	session_reply(s, "250-BINARYMIME");
	session_reply(s, "250-DSN");
	if (s->local)
		session_reply(s, "250-XPROGRAM");	/* sendmail's caller */
	session_reply(s, "250 ENHANCEDSTATUSCODES");
}

/*
 * Whose sending limits a submission counts against: the account it
 * proved with AUTH, or the local user of a sendmail(1) session (with the
 * program that ran sendmail, when it said: XPROGRAM); NULL for
 * the MX and trusted networks, which have no limits of their own.
 */
static const char *
session_account(const struct session *s)
{
	static char key[sizeof(s->localacct) + SMTP_PROGRAM_MAX + 2];

	if (s->authed && s->authuser)
		return s->authuser;
	if (!s->local)
		return NULL;
	if (s->mp.program[0] == '\0')
		return s->localacct;
	/* "local:USER/PROGRAM": a web form's mail() has its own limits and
	   breaker, apart from cron's, within its user's (queue/limits.c). */
	snprintf(key, sizeof(key), "%s/%s", s->localacct, s->mp.program);
	str_lower(key);
	return key;
}

/*
 * Sending limits asked early: at MAIL (an account already over its
 * message limit or suspended) and at each RCPT (its recipient limit), so
 * a client learns before sending the data.  The queue answers from the
 * same figures as at DATA (Q_CREATE with Q_F_PROBE: no file, nothing
 * held); DATA's answer still decides.  The session waits (SS_WAIT).
 */
enum { PROBE_NONE, PROBE_MAIL, PROBE_RCPT };

/* 0: asked, the answer comes to limits_probed; -1: nothing to ask. */
static int
limits_probe(struct session *s, int kind)
{
	struct buf b;
	int rv;

	if (session_account(s) == NULL || smtp.queue == NULL)
		return -1;
	buf_init(&b);
	rec_put_u64(&b, T_SID, s->id);
	rec_put_u64(&b, T_FLAGS, Q_F_PROBE);
	rec_put_str(&b, T_ACCOUNT, session_account(s));
	rec_put_u64(&b, T_NRCPT, s->nrcpts);
	rv = ipc_send(smtp.queue, IMSG_Q_CREATE, b.data, b.len, -1);
	buf_free(&b);
	if (rv == -1)
		return -1;
	s->probe = kind;
	s->state = SS_WAIT;
	return 0;
}

/* The queue's answer (code 0: within the limits; no queue: the same). */
static void
limits_probed(struct session *s, int code, const char *text)
{
	int kind = s->probe;

	s->probe = PROBE_NONE;
	s->state = SS_CMD;
	if (code == 0)
		session_reply(s, kind == PROBE_MAIL ? "250 2.1.0 sender ok" :
		    "250 2.1.5 recipient ok");
	else {
		session_log(s, "event=%s result=tempfail code=%d reason=\"%s\" "
		    "account=<%s> from=<%s>%s%s%s", kind == PROBE_MAIL ? "mail" :
		    "rcpt", code, log_q(text), log_a(session_account(s)),
		    log_a(s->sender), kind == PROBE_MAIL ? "" : " to=<",
		    kind == PROBE_MAIL ? "" : log_a(s->rcpts[s->nrcpts - 1]),
		    kind == PROBE_MAIL ? "" : ">");
		session_reply(s, "%d %s", code, text);
		if (kind == PROBE_MAIL)
			session_reset(s);
		else			/* this recipient only */
			free(s->rcpts[--s->nrcpts]);
	}
	session_process(s);
}

/*
 * The address as stored and sent on (lib/addr.c): the local part quoted
 * only when it must be, the domain in lower case (U-labels normalised).
 * A domain that is not valid IDNA is refused here, not bounced later.
 */
static int
session_addr(struct session *s, const struct smtp_path *p, char *out,
    size_t len, const char *esc)
{
	char raw[SMTP_PATH_MAX * 2];
	const char *why = NULL;
	int r;

	smtp_path_string(p, raw, sizeof(raw));
	if ((r = addr_canon(raw, ADDR_F_UTF8, out, len, &why)) == 0)
		return 0;
	if (r == ADDR_EIDNA)
		session_error(s, "553 5.1.3 %s", why);
	else
		session_error(s, "501 %s %s", esc, why ? why : "bad address");
	return -1;
}

/* Sender ownership compares domains in their A-label form. */
static int
session_sender_allowed(struct session *s, const char *addr)
{
	char ascii[ADDR_STR_MAX];

	if (*addr != '\0' && addr_ascii(addr, ascii, sizeof(ascii)) == 0)
		addr = ascii;
	return conf_sender_allowed(smtp.conf, s->authuser, addr);
}

static struct session	*smtp_find(uint64_t);

/* The MAIL step of the policy pipeline (SPF); 1: the session waits. */
static int
smtp_policy_mail(struct session *s)
{
	char ip[INET6_ADDRSTRLEN + 2];
	size_t n;

	str_copy(ip, s->addr[0] == '[' ? s->addr + 1 : s->addr, sizeof(ip));
	if ((n = strlen(ip)) > 0 && ip[n - 1] == ']')
		ip[n - 1] = '\0';
	if (!policy_mail(session_pol(s), s->id, s->l, &s->ss, ip, s->helo, s->sender,
	    s->authed || s->local))
		return 0;
	s->state = SS_POLICY;
	return 1;
}

static void	data_commit_checked(struct session *);

static void
smtp_policy_done(uint64_t sid)
{
	struct session *s = smtp_find(sid);

	if (s == NULL || s->state != SS_POLICY)
		return;
	if (s->pol && s->pol->step == POLICY_STEP_DATA) {	/* the end-of-data step */
		data_commit_checked(s);
		if (s->state == SS_CMD)
			session_process(s);
		return;
	}
	s->state = SS_CMD;
	session_reply(s, "250 2.1.0 sender ok");
	session_process(s);
}

static void
cmd_mail(struct session *s, const char *arg)
{
	struct smtp_path p;
	const char *rest, *why = NULL;
	char addr[SMTP_PATH_MAX * 2] = "";
	int flags = PATH_ALLOW_NULL, r;

	if (s->helo == NULL) {
		session_error(s, "503 5.5.1 send HELO or EHLO first");
		return;
	}
	if (s->sender != NULL) {
		session_error(s, "503 5.5.1 sender already given");
		return;
	}
	if (!s->authed && !s->local && conf_auth_required(smtp.conf, s->l)) {
		session_log(s, "event=mail result=reject code=530 esc=5.7.0 "
		    "reason=\"authentication required\"");
		session_error(s, "530 5.7.0 authentication required%s",
		    s->tls ? "" : " (STARTTLS first)");
		return;
	}
	if (smtp_parse_path(arg, flags | PATH_ALLOW_UTF8, &p, &rest, &why) == -1) {
		session_error(s, "501 5.1.7 %s", why ? why : "bad sender address");
		return;
	}
	if (!s->esmtp && *rest != '\0') {
		session_error(s, "501 5.5.4 parameters need EHLO");
		return;
	}
	if ((r = smtp_parse_mail_params(rest, &s->mp, &why)) != 0) {
		session_error(s, "%s 5.5.4 %s", r == -3 ? "501" : "555",
		    why ? why : "bad parameters");
		return;
	}
	if (s->mp.program[0] != '\0' && !s->local) {
		session_error(s, "555 5.5.4 unsupported parameter XPROGRAM");
		return;
	}
	if (p.utf8 && !s->mp.smtputf8) {
		session_error(s, "553 5.6.7 non-ASCII address requires SMTPUTF8");
		return;
	}
	if (s->mp.size > session_knob(s, K_MAX_MESSAGE_SIZE)) {
		session_error(s, "552 5.3.4 message size exceeds fixed maximum "
		    "of %lld bytes", session_knob(s, K_MAX_MESSAGE_SIZE));
		return;
	}
	if (!p.null && session_addr(s, &p, addr, sizeof(addr), "5.1.7") == -1)
		return;
	if (s->authed && !session_sender_allowed(s, addr)) {
		session_log(s, "event=mail result=reject code=553 esc=5.7.1 "
		    "reason=\"sender not owned\" user=<%s> from=<%s>",
		    log_a(s->authuser), log_a(addr));
		session_error(s, "553 5.7.1 <%s>: sender address not owned by "
		    "user %s", addr, s->authuser);
		return;
	}
	s->sender = xstrdup(addr);
	if (limits_probe(s, PROBE_MAIL) == 0)
		return;		/* 250 when the queue has answered */
	if (smtp_policy_mail(s))
		return;		/* 250 when the verdict is in */
	session_reply(s, "250 2.1.0 sender ok");
}

/* The recipient as stored: Postmaster gets our primary local domain. */
static int
rcpt_normalise(struct session *s, const struct smtp_path *p, char *out,
    size_t len)
{
	if (p->domain[0] == '\0') {
		const char *d = smtp.conf->ndomains ? smtp.conf->domains[0] :
		    conf_str(smtp.conf, K_HOSTNAME);

		snprintf(out, len, "postmaster@%s", d);
		return 0;
	}
	return session_addr(s, p, out, len, "5.1.3");
}

/* Is it a bounce to an address we rewrote with SRS when forwarding? */
static int
rcpt_is_srs(const struct smtp_path *p)
{
	return p->domain[0] != '\0' && srs_is_srs(p->local) &&
	    str_casecmp(p->domain, conf_str(smtp.conf, K_SRS_DOMAIN)) == 0;
}

static int
rcpt_local_addr(const char *addr)
{
	struct addr a;

	if (addr_parse(addr, ADDR_F_UTF8, &a, NULL) != 0)
		return 1;	/* resolve_exists() refuses it */
	return conf_is_local_domain(smtp.conf, a.domain);
}

static void
rcpt_add(struct session *s, const char *addr)
{
	s->rcpts = xreallocarray(s->rcpts, s->nrcpts + 1, sizeof(*s->rcpts));
	s->rdsn = xreallocarray(s->rdsn, s->nrcpts + 1, sizeof(*s->rdsn));
	s->rdsn[s->nrcpts] = s->rcur;
	s->rcur.orcpt = NULL;		/* the recipient's now */
	s->rcpts[s->nrcpts++] = xstrdup(addr);
	if (limits_probe(s, PROBE_RCPT) == -1)
		session_reply(s, "250 2.1.5 recipient ok");
}

static void	rcpt_verify_done(uint64_t, int, const char *);

/* The LMTP server's (or the map's) word on an LMTP recipient. */
static void
rcpt_verdict(struct session *s, const char *addr, int v, const char *why)
{
	if (v == VERIFY_OK) {
		session_log(s, "event=rcpt result=ok reason=\"lmtp verified\" "
		    "to=<%s>", log_a(addr));
		rcpt_add(s, addr);
	} else if (v == VERIFY_NO) {
		s->nrejected++;
		session_log(s, "event=rcpt result=reject code=550 esc=5.1.1 "
		    "reason=\"%s\" to=<%s>", log_q(why), log_a(addr));
		session_error(s, "550 5.1.1 <%s>: recipient unknown", addr);
	} else {
		session_log(s, "event=rcpt result=tempfail code=451 esc=4.4.1 "
		    "reason=\"%s\" to=<%s>", log_q(why), log_a(addr));
		session_reply(s, "451 4.4.1 <%s>: recipient cannot be verified "
		    "now, try again later", addr);
	}
}

static void
rcpt_verify_done(uint64_t sid, int v, const char *why)
{
	struct session *s = smtp_find(sid);
	char *addr;

	if (s == NULL || s->state != SS_VAULT || s->verifyrcpt == NULL)
		return;
	addr = s->verifyrcpt;
	s->verifyrcpt = NULL;
	s->state = SS_CMD;
	rcpt_verdict(s, addr, v, why);
	free(addr);
	if (s->state == SS_CMD)
		session_process(s);
}

/* A local recipient must exist; any other needs a client allowed to relay. */
static void
rcpt_check(struct session *s, const char *addr)
{
	char why[400];
	int r;

	if ((r = verify_rcpt(addr, s->id, rcpt_verify_done, why,
	    sizeof(why))) == VERIFY_WAIT) {
		s->verifyrcpt = xstrdup(addr);
		s->state = SS_VAULT;
		return;
	} else if (r != VERIFY_SKIP) {
		rcpt_verdict(s, addr, r, why);
		return;
	}
	if (rcpt_local_addr(addr)) {
		r = resolve_exists(smtp.conf, smtp.aliases, addr);
		if (r == -1) {
			session_log(s, "event=rcpt result=tempfail code=451 "
			    "esc=4.3.0 reason=\"aliases map unreadable\"");
			session_reply(s, "451 4.3.0 <%s>: temporary lookup "
			    "failure", addr);
			return;
		}
		if (r == 0) {
			s->nrejected++;		/* the breaker's business */
			session_log(s, "event=rcpt result=reject code=550 "
			    "esc=5.1.1 reason=\"unknown user\" to=<%s>", log_a(addr));
			session_error(s, "550 5.1.1 <%s>: recipient unknown", addr);
			return;
		}
	} else if (!s->local && !s->authed &&
	    !conf_is_trusted(smtp.conf, (struct sockaddr *)&s->ss)) {
		session_log(s, "event=rcpt result=reject code=554 esc=5.7.1 "
		    "reason=\"relaying denied\" to=<%s>", log_a(addr));
		session_error(s, "554 5.7.1 <%s>: relaying denied", addr);
		return;
	}
	rcpt_add(s, addr);
}

/*
 * The vault's verdict on an SRS recipient: reversed, it is relayed to the
 * original sender; not one of ours, it is an ordinary recipient.
 */
static void
rcpt_srs_done(uint64_t sid, int status, const char *out, const char *unused)
{
	struct session *s = smtp_find(sid);
	char *addr;

	if (s == NULL || s->state != SS_VAULT || s->vaultrcpt == NULL)
		return;
	addr = s->vaultrcpt;
	s->vaultrcpt = NULL;
	s->state = SS_CMD;
	if (status == VAULT_OK && out) {
		session_log(s, "event=rcpt result=ok reason=\"SRS reversed\" "
		    "to=<%s> orig_to=<%s>", log_a(out), log_a(addr));
		rcpt_add(s, out);
	} else if (status == VAULT_NONE)
		rcpt_check(s, addr);
	else if (status == VAULT_INVALID) {
		session_log(s, "event=rcpt result=reject code=550 esc=5.1.1 "
		    "reason=\"bad SRS address: %s\" to=<%s>",
		    log_q(out ? out : "invalid"), log_a(addr));
		session_error(s, "550 5.1.1 <%s>: invalid or expired return "
		    "address", addr);
	} else {
		session_log(s, "event=rcpt result=tempfail code=451 esc=4.3.0 "
		    "reason=\"vault unavailable\" to=<%s>", log_a(addr));
		session_reply(s, "451 4.3.0 <%s>: temporary failure, try again "
		    "later", addr);
	}
	free(addr);
	if (s->state == SS_CMD)
		session_process(s);
}

/* The SRS key is the vault's: ask it, holding the session's input. */
static void
rcpt_srs(struct session *s, const char *addr)
{
	if (vault_srs_reverse(addr, rcpt_srs_done, s->id) == -1) {
		session_log(s, "event=rcpt result=tempfail code=451 esc=4.3.0 "
		    "reason=\"vault unavailable\" to=<%s>", log_a(addr));
		session_reply(s, "451 4.3.0 <%s>: temporary failure, try again "
		    "later", addr);
		return;
	}
	s->vaultrcpt = xstrdup(addr);
	s->state = SS_VAULT;
}

static void
cmd_rcpt(struct session *s, const char *arg)
{
	struct smtp_path p;
	struct dsn_rcpt_params rp;
	const char *rest, *why = NULL;
	char addr[SMTP_PATH_MAX * 2], reply[SPF_EXP_MAX + 128];
	int flags = PATH_ALLOW_POSTMASTER, r;

	if (s->sender == NULL) {
		session_error(s, "503 5.5.1 send MAIL first");
		return;
	}
	if (smtp_parse_path(arg, flags | PATH_ALLOW_UTF8, &p, &rest, &why) == -1) {
		session_error(s, "501 5.1.3 %s", why ? why : "bad recipient address");
		return;
	}
	if (p.utf8 && !s->mp.smtputf8) {
		session_error(s, "553 5.6.7 non-ASCII address requires SMTPUTF8");
		return;
	}
	if ((r = esmtp_rcpt(rest, &rp, &why)) != 0) {
		session_error(s, "%s 5.5.4 %s", r == -1 ? "501" : "555",
		    why ? why : "bad parameters");
		return;
	}
	free(s->rcur.orcpt);
	s->rcur.notify = rp.notify;
	s->rcur.orcpt = rp.orcpt[0] ? xstrdup(rp.orcpt) : NULL;
	/* Trusted clients (list managers) get the larger limit. */
	if (s->nrcpts >= (size_t)session_knob(s, s->local || s->authed ||
	    conf_is_trusted(smtp.conf, (struct sockaddr *)&s->ss) ?
	    K_MAX_TRUSTED_RECIPIENTS : K_MAX_RECIPIENTS)) {
		session_reply(s, "452 4.5.3 too many recipients");
		return;
	}
	if (rcpt_normalise(s, &p, addr, sizeof(addr)) == -1)
		return;
	if (s->pol && policy_rcpt(s->pol, rcpt_is_srs(&p), reply,
	    sizeof(reply))) {
		session_log(s, "event=rcpt result=%s reason=\"SPF %s\" to=<%s>",
		    reply[0] == '5' ? "reject" : "tempfail",
		    spf_result_name(s->pol->spf.result), log_a(addr));
		session_reply(s, "%s", reply);
		return;
	}
	if (rcpt_is_srs(&p))
		rcpt_srs(s, addr);
	else
		rcpt_check(s, addr);
}

/* Ask the queue for a message file; -1 if the channel is gone. */
static int
data_request(struct session *s)
{
	struct buf b;

	if (smtp.queue == NULL)
		return -1;
	buf_init(&b);
	rec_put_u64(&b, T_SID, s->id);
	/* The queue answers for the account's limits before a file exists. */
	if (session_account(s)) {
		rec_put_str(&b, T_ACCOUNT, session_account(s));
		rec_put_u64(&b, T_NRCPT, s->nrcpts);
	}
	if (ipc_send(smtp.queue, IMSG_Q_CREATE, b.data, b.len, -1) == -1) {
		buf_free(&b);
		return -1;
	}
	buf_free(&b);
	s->state = SS_WAIT;
	return 0;
}

static void
cmd_data(struct session *s)
{
	if (s->sender == NULL) {
		session_error(s, "503 5.5.1 send MAIL first");
		return;
	}
	/* RFC 3030 3: no DATA in a BDAT transaction, none for binary. */
	if (s->bdat || s->mp.body == BODY_BINARYMIME) {
		session_error(s, "503 5.5.1 %s", s->bdat ? "DATA after BDAT "
		    "in one transaction" : "BODY=BINARYMIME needs BDAT");
		return;
	}
	if (s->nrcpts == 0) {
		session_error(s, "554 5.5.1 no valid recipients");
		return;
	}
	if (data_request(s) == -1)
		session_reply(s, "451 4.3.0 queue unavailable, try again later");
}

static void	bdat_start(struct session *, const char *);
static void	bdat_read(struct session *);

/*
 * STARTTLS (RFC 3207).  Whatever the client sent after the command in the
 * same packet was read before TLS and must not be taken as said inside it
 * (CVE-2011-0411): such a session is refused, its input thrown away.
 * Otherwise reading stops, so the client's handshake stays in the socket,
 * and TLS starts once the 220 is written (session_writecb).
 */
static void
cmd_starttls(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	if (s->tls) {
		session_error(s, "503 5.5.1 TLS is already active");
		return;
	}
	if (!session_tls_offered(s)) {
		session_error(s, "502 5.5.1 command not implemented");
		return;
	}
	if (s->sender != NULL) {
		session_error(s, "503 5.5.1 STARTTLS is not allowed inside a "
		    "mail transaction");
		return;
	}
	if (evbuffer_get_length(in) > 0 || s->skip) {
		session_warn(s, "event=starttls result=reject reason=\"input "
		    "pipelined after STARTTLS (plaintext injection)\" "
		    "bytes=%zu", evbuffer_get_length(in));
		evbuffer_drain(in, evbuffer_get_length(in));
		session_reply(s, "421 4.7.0 %s commands pipelined after "
		    "STARTTLS, closing", conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "input pipelined after STARTTLS");
		return;
	}
	session_reply(s, "220 2.0.0 ready to start TLS");
	bufferevent_disable(s->bev, EV_READ);
	s->state = SS_STARTTLS;
}

/* ---- AUTH (RFC 4954): PLAIN and LOGIN, checked by the vault ---------------- */

static void
auth_done(uint64_t sid, int status, const char *account, const char *unused)
{
	struct session *s = smtp_find(sid);

	if (s == NULL || s->state != SS_VAULT || !s->authwait)
		return;
	s->authwait = 0;
	s->state = SS_CMD;
	if (status == VAULT_OK && account != NULL) {
		s->authed = 1;
		free(s->authuser);
		s->authuser = xstrdup(account);
		session_log(s, "event=auth result=ok user=<%s>",
		    log_a(account));
		session_reply(s, "235 2.7.0 authentication successful");
	} else if (status == VAULT_INVALID) {
		session_log(s, "event=auth result=fail code=535 esc=5.7.8 "
		    "reason=\"%s\" user=<%s>", log_q(account ? account :
		    "invalid"), log_a(s->saslname ? s->saslname : ""));
		session_error(s, "535 5.7.8 authentication credentials "
		    "invalid");
	} else {
		session_log(s, "event=auth result=tempfail code=454 esc=4.7.0 "
		    "reason=\"%s\"", log_q(account ? account :
		    "vault unavailable"));
		session_reply(s, "454 4.7.0 temporary authentication failure, "
		    "try again later");
	}
	free(s->saslname);
	s->saslname = NULL;
	if (s->state == SS_CMD)
		session_process(s);
}

/* The vault checks the password; the session waits, holding its input. */
static void
auth_check(struct session *s, const char *user, size_t ulen,
    const char *pass, size_t plen)
{
	char addr[INET6_ADDRSTRLEN + 1], *name;
	size_t n;

	s->sasl = SASL_NONE;
	if (!sasl_text_ok(user, ulen, 255) || !sasl_text_ok(pass, plen, 1024)) {
		session_error(s, "535 5.7.8 authentication credentials "
		    "invalid");
		return;
	}
	name = xstrndup(user, ulen);	/* user may be s->saslname */
	free(s->saslname);
	s->saslname = name;
	/* s->addr is "[192.0.2.1]"; the vault counts by the bare address. */
	n = str_copy(addr, s->addr[0] == '[' ? s->addr + 1 : s->addr,
	    sizeof(addr));
	if (n > 0 && n < sizeof(addr) && addr[n - 1] == ']')
		addr[n - 1] = '\0';
	if (vault_check_password(s->saslname, pass, addr, auth_done,
	    s->id) == -1) {
		session_log(s, "event=auth result=tempfail code=454 esc=4.7.0 "
		    "reason=\"vault unavailable\"");
		session_reply(s, "454 4.7.0 temporary authentication failure, "
		    "try again later");
		return;
	}
	s->authwait = 1;
	s->state = SS_VAULT;
}

/* PLAIN: authzid NUL authcid NUL password; authzid empty or authcid. */
static void
auth_plain(struct session *s, const char *b64)
{
	char buf[2048];
	const char *user, *pass;
	size_t len, ulen, plen;

	if (strcmp(b64, "=") == 0)
		len = 0, buf[0] = '\0';
	else if (sasl_decode(b64, buf, sizeof(buf), &len) == -1) {
		s->sasl = SASL_NONE;
		session_error(s, "501 5.5.2 cannot decode the response");
		return;
	}
	if (sasl_plain_split(buf, len, &user, &ulen, &pass, &plen) == -1) {
		s->sasl = SASL_NONE;
		explicit_bzero(buf, sizeof(buf));
		session_error(s, "535 5.7.8 authentication credentials "
		    "invalid");
		return;
	}
	auth_check(s, user, ulen, pass, plen);
	explicit_bzero(buf, sizeof(buf));
}

/* A line while a SASL exchange runs: the client's response. */
static void
auth_response(struct session *s, char *line)
{
	char buf[1100];
	size_t len;

	if (strcmp(line, "*") == 0) {
		s->sasl = SASL_NONE;
		free(s->saslname);
		s->saslname = NULL;
		session_error(s, "501 5.0.0 authentication cancelled");
		return;
	}
	if (s->sasl == SASL_PLAIN) {
		auth_plain(s, line);
		explicit_bzero(line, strlen(line));
		return;
	}
	if (sasl_decode(line, buf, sizeof(buf), &len) == -1) {
		s->sasl = SASL_NONE;
		session_error(s, "501 5.5.2 cannot decode the response");
		return;
	}
	if (s->sasl == SASL_LOGIN_USER) {
		free(s->saslname);
		s->saslname = xstrndup(buf, len);
		s->sasl = SASL_LOGIN_PASS;
		session_reply(s, "334 UGFzc3dvcmQ6");	/* "Password:" */
		return;
	}
	auth_check(s, s->saslname ? s->saslname : "", s->saslname ?
	    strlen(s->saslname) : 0, buf, len);
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(line, strlen(line));
}

static void
cmd_auth(struct session *s, const char *arg)
{
	char mech[32], *ir;
	size_t n = strcspn(arg, " ");

	if (s->l->role != ROLE_MSA) {
		session_error(s, "502 5.5.1 AUTH is for submission (port 587 "
		    "or 465)");
		return;
	}
	if (!s->tls) {
		session_error(s, "538 5.7.11 encryption required for "
		    "authentication (STARTTLS first)");
		return;
	}
	if (s->helo == NULL || !s->esmtp) {
		session_error(s, "503 5.5.1 send EHLO first");
		return;
	}
	if (s->authed) {
		session_error(s, "503 5.5.1 already authenticated");
		return;
	}
	if (s->sender != NULL) {
		session_error(s, "503 5.5.1 AUTH is not allowed in a mail "
		    "transaction");
		return;
	}
	if (n == 0 || n >= sizeof(mech)) {
		session_error(s, "501 5.5.4 AUTH needs a mechanism");
		return;
	}
	memcpy(mech, arg, n);
	mech[n] = '\0';
	ir = arg[n] == ' ' ? (char *)arg + n + 1 : NULL;
	if (strcasecmp(mech, "PLAIN") == 0) {
		s->sasl = SASL_PLAIN;
		if (ir)
			auth_response(s, ir);
		else
			session_reply(s, "334 ");
	} else if (strcasecmp(mech, "LOGIN") == 0) {
		s->sasl = SASL_LOGIN_USER;
		if (ir)
			auth_response(s, ir);
		else
			session_reply(s, "334 VXNlcm5hbWU6");	/* "Username:" */
	} else
		session_error(s, "504 5.5.4 mechanism not supported; PLAIN "
		    "and LOGIN are");
}

static void
session_command(struct session *s, char *line)
{
	struct smtp_command cmd;
	const char *why = NULL;

	if (smtp_parse_command(line, &cmd, &why) == -1) {
		session_error(s, "501 5.5.4 %s", why ? why : "syntax error");
		return;
	}
	switch (cmd.verb) {
	case VERB_HELO:
		cmd_helo(s, cmd.arg, 0);
		break;
	case VERB_EHLO:
		cmd_helo(s, cmd.arg, 1);
		break;
	case VERB_MAIL:
		cmd_mail(s, cmd.arg);
		break;
	case VERB_RCPT:
		cmd_rcpt(s, cmd.arg);
		break;
	case VERB_DATA:
		cmd_data(s);
		break;
	case VERB_RSET:
		session_reset(s);
		session_reply(s, "250 2.0.0 reset");
		break;
	case VERB_NOOP:
		session_reply(s, "250 2.0.0 ok");
		break;
	case VERB_HELP:
		session_reply(s, "214 2.0.0 commands: HELO EHLO MAIL RCPT DATA "
		    "RSET NOOP HELP QUIT");
		break;
	case VERB_QUIT:
		session_reply(s, "221 2.0.0 %s closing",
		    conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "quit");
		break;
	case VERB_VRFY:
	case VERB_EXPN:
		session_error(s, "502 5.5.1 VRFY and EXPN are disabled");
		break;
	case VERB_STARTTLS:
		cmd_starttls(s);
		break;
	case VERB_AUTH:
		cmd_auth(s, cmd.arg);
		break;
	case VERB_BDAT:
		bdat_start(s, cmd.arg);
		break;
	case VERB_UNKNOWN:
		session_error(s, "500 5.5.2 command unrecognized");
		break;
	}
}

static void
session_cmdline(struct session *s)
{
	enum line_status st;
	size_t len;
	char *line;
	int crlf;

	st = session_getline(s, (size_t)session_knob(s, K_MAX_COMMAND_LENGTH),
	    &line, &len, &crlf);
	switch (st) {
	case LN_NONE:
		return;
	case LN_LONG:
		session_error(s, "500 5.5.2 line too long");
		return;
	case LN_BARE:
		session_error(s, "500 5.5.2 bare CR or LF not allowed, "
		    "use CRLF");
		return;
	case LN_NUL:
		session_error(s, "500 5.5.2 NUL byte in command");
		return;
	case LN_OK:
		if (s->sasl != SASL_NONE)
			auth_response(s, line);
		else
			session_command(s, line);
		return;
	}
}

/* ---- DATA ----------------------------------------------------------------- */

static void
data_write(struct session *s, int final)
{
	if (s->derr == DE_WRITE || s->msgfd < 0)
		return;
	if (!final && s->wbuf.len < SMTP_WBUF)
		return;
	if (fd_write_all(s->msgfd, s->wbuf.data, s->wbuf.len) == -1) {
		s->werrno = errno;	/* the real cause, or 0: short write */
		s->derr = DE_WRITE;
	}
	buf_reset(&s->wbuf);
}

/*
 * The protocol (RFC 3848, RFC 6531): ESMTP, with S for TLS and A for
 * AUTH; with utf8 (Received:), UTF8SMTP likewise for SMTPUTF8 mail (the
 * envelope has its own record of that).  HELO has no registered TLS form:
 * plain SMTP, and Received:'s TLS comment says the rest.
 */
static const char *
session_protocol(const struct session *s, int utf8)
{
	static const char *const esmtp[] = { "ESMTP", "ESMTPS", "ESMTPA",
	    "ESMTPSA" }, *const utf8s[] = { "UTF8SMTP", "UTF8SMTPS",
	    "UTF8SMTPA", "UTF8SMTPSA" };
	int i = (s->tls ? 1 : 0) + (s->authed ? 2 : 0);

	if (s->local)
		return "LOCAL";
	if (!s->esmtp)
		return "SMTP";
	return utf8 && s->mp.smtputf8 ? utf8s[i] : esmtp[i];
}

static void
data_received(struct session *s)
{
	char date[64], rcpt[600] = "", tls[200] = "", a[ADDR_STR_MAX];
	time_t now = time(NULL);
	struct tm tm;
	const char *proto, *cipher;
	int bits;

	localtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
	buf_append(&s->wbuf, session_pol(s)->headers.data,
	    session_pol(s)->headers.len);
	/* A-labels: a U-label here alone would keep it from a peer without
	   SMTPUTF8 (queue/mta.c, mta_header8) */
	if (s->nrcpts == 1)
		snprintf(rcpt, sizeof(rcpt), "\r\n\tfor <%s>",
		    addr_ascii(s->rcpts[0], a, sizeof(a)) == 0 ? a :
		    s->rcpts[0]);
	if (s->local) {
		/* The user is the kernel's word; the program, sendmail's. */
		buf_printf(&s->wbuf, "Received: by %s (Tern, from %s%s%s)\r\n\t"
		    "id %s%s;\r\n\t%s\r\n", conf_str(smtp.conf, K_HOSTNAME),
		    s->addr, s->mp.program[0] ? " program=" : "",
		    s->mp.program, s->qid, rcpt, date);
		return;
	}
	if (s->tls) {
		tls_describe(bufferevent_openssl_get_ssl(s->bev), &proto,
		    &cipher, &bits);
		snprintf(tls, sizeof(tls), "\r\n\t(using %s with cipher %s "
		    "(%d/%d bits))", proto, cipher, bits, bits);
	}
	buf_printf(&s->wbuf, "Received: from %s (%s)%s\r\n\tby %s (Tern) with "
	    "%s id %s%s;\r\n\t%s\r\n", s->helo, s->addr, tls,
	    conf_str(smtp.conf, K_HOSTNAME), session_protocol(s, 1), s->qid, rcpt,
	    date);
}

/* The message is refused at its end; tell the client why. */
static void
data_refuse(struct session *s)
{
	if (s->derr == DE_WRITE && (s->werrno == ENOSPC ||
	    s->werrno == EDQUOT)) {
		session_log(s, "event=data result=tempfail code=452 "
		    "esc=4.3.1 reason=\"spool full: %s\"",
		    strerror(s->werrno));
		session_reply(s, "452 4.3.1 insufficient system storage");
	} else if (s->derr == DE_WRITE) {
		session_log(s, "event=data result=tempfail code=451 "
		    "reason=\"spool write: %s\"", fd_strerror(s->werrno));
		session_reply(s, "451 4.3.0 local error writing the "
		    "message");
	} else if (s->derr == DE_DKIM) {
		session_log(s, "event=data result=tempfail code=451 "
		    "esc=4.3.0 reason=\"DKIM signing failed\"");
		session_reply(s, "451 4.3.0 message could not be signed, try "
		    "again later");
	} else if (s->derr == DE_QUEUE) {
		session_log(s, "event=data result=tempfail code=451 "
		    "esc=4.3.0 reason=\"queue lost during DATA\"");
		session_reply(s, "451 4.3.0 queue unavailable, try again "
		    "later");
	} else if (s->derr == DE_FROM) {
		session_log(s, "event=data result=reject code=553 esc=5.7.1 "
		    "reason=\"From: not owned\" user=<%s> header_from=<%s>",
		    log_a(s->authuser ? s->authuser : ""), log_a(s->badfrom));
		session_reply(s, "553 5.7.1 From: <%s> is not an address of "
		    "user %s", s->badfrom, s->authuser ? s->authuser : "?");
	} else if (s->derr == DE_POLICY) {
		session_log(s, "event=data result=%s reason=\"%s\"",
		    s->pol->eod.reply[0] == '4' ? "tempfail" : "reject",
		    log_q(s->pol->eod.reply));
		session_reply(s, "%s", s->pol->eod.reply);
	} else if (s->derr == DE_SIZE) {
		session_reply(s, "552 5.3.4 message size exceeds fixed "
		    "maximum of %lld bytes",
		    session_knob(s, K_MAX_MESSAGE_SIZE));
	} else if (s->derr == DE_LINE) {
		session_reply(s, "554 5.6.0 message refused: line "
		    "longer than %lld octets",
		    session_knob(s, K_MAX_LINE_LENGTH));
	} else if (s->derr == DE_HOPS) {
		session_reply(s, "554 5.4.6 message refused: too many "
		    "hops (%lld Received: header fields), a mail loop?",
		    s->hops);
	} else if (s->derr == DE_BARE) {
		session_reply(s, "554 5.5.2 message refused: bare CR "
		    "or LF in DATA, use CRLF");
	} else {
		session_reply(s, "554 5.6.0 message refused: NUL byte "
		    "in DATA");
	}
	if (s->derr != DE_WRITE && s->derr != DE_QUEUE && s->derr != DE_DKIM &&
	    s->derr != DE_POLICY)
		session_log(s, "event=data result=reject code=5xx "
		    "reason=%s", data_err_name[s->derr]);
	if (s->qid[0] && smtp.queue)
		ipc_send(smtp.queue, IMSG_Q_ABORT, s->qid, strlen(s->qid), -1);
	s->qid[0] = '\0';
	session_reset(s);
	s->state = SS_CMD;
}

/*
 * Send the recipients and the envelope facts.  -1 when the queue channel
 * is already dead: the commit never left, so the outcome is known.
 */
static int
data_send_commit(struct session *s)
{
	struct buf b;
	size_t i;
	int r = 0;

	buf_init(&b);
	for (i = 0; i < s->nrcpts; i++) {
		if (b.len > IPC_MAX / 3) {
			r |= ipc_send(smtp.queue, IMSG_Q_RCPTS, b.data, b.len,
			    -1);
			buf_reset(&b);
		}
		if (b.len == 0) {
			rec_put_u64(&b, T_SID, s->id);
			rec_put_str(&b, T_ID, s->qid);
		}
		rec_put_str(&b, T_RCPT, s->rcpts[i]);
		if (s->rdsn[i].notify)
			rec_put_u64(&b, T_DSN, s->rdsn[i].notify);
		if (s->rdsn[i].orcpt)
			rec_put_str(&b, T_ORCPT, s->rdsn[i].orcpt);
	}
	r |= ipc_send(smtp.queue, IMSG_Q_RCPTS, b.data, b.len, -1);
	buf_reset(&b);
	rec_put_u64(&b, T_SID, s->id);
	rec_put_str(&b, T_ID, s->qid);
	rec_put_str(&b, T_SENDER, s->sender);
	rec_put_str(&b, T_HELO, s->helo);
	rec_put_str(&b, T_CLIENT, s->addr);
	rec_put_str(&b, T_PROTO, session_protocol(s, 0));
	rec_put_u64(&b, T_BODY, (uint64_t)s->mp.body);	/* 0, 1, 2 */
	if (s->mp.ret)
		rec_put_u64(&b, T_RET, (uint64_t)s->mp.ret);
	if (s->mp.envid[0])
		rec_put_str(&b, T_ENVID, s->mp.envid);
	rec_put_u64(&b, T_UTF8, (uint64_t)s->mp.smtputf8);
	rec_put_u64(&b, T_SIZE, s->msgsize);
	if (session_account(s)) {
		rec_put_str(&b, T_ACCOUNT, session_account(s));
		rec_put_u64(&b, T_REJECTED, s->nrejected);
		if (s->urgent)
			rec_put_u64(&b, T_URGENT, 1);
	}
	if (s->pol && s->pol->quarantine)
		rec_put_u64(&b, T_QUARANTINE, 1);
	if (r == 0)
		r = ipc_send(smtp.queue, IMSG_Q_COMMIT, b.data, b.len, -1);
	buf_free(&b);
	return r == 0 ? 0 : -1;
}

static void	data_hend(struct session *);
static void	data_commit_end(struct session *);

/* The vault has signed (or not): the fields go over their room. */
static void
data_dkim_done(uint64_t sid, int status, const char *sigs, const char *b)
{
	struct session *s = smtp_find(sid);
	const char *why;
	char what[300];

	if (s == NULL || s->state != SS_VAULT || s->dkim == NULL ||
	    s->msgfd < 0)
		return;
	dsign_describe(s->dkim, what, sizeof(what));
	if (dsign_write(s->dkim, s->msgfd, status, sigs, &why) == -1) {
		session_log(s, "event=dkim-sign result=error %s reason=\"%s\"",
		    what, log_q(why));
		s->derr = DE_DKIM;
	} else
		session_log(s, "event=dkim-sign result=ok %s", what);
	data_commit_end(s);
	if (s->state == SS_CMD)
		session_process(s);
}

static void
data_commit(struct session *s)
{
	if (s->inheaders && s->derr == DE_NONE)
		data_hend(s);		/* a message that is all header */
	if (s->badfrom != NULL && s->derr == DE_NONE)
		s->derr = DE_FROM;
	data_write(s, 1);
	if (s->derr == DE_NONE && s->msgfd >= 0 &&
	    policy_data_end(session_pol(s), s->id)) {
		s->state = SS_POLICY;	/* DKIM keys: smtp_policy_done */
		return;
	}
	data_commit_checked(s);
}

/* The end-of-data verdicts are in: our header fields, then signing. */
static void
data_commit_checked(struct session *s)
{
	int r;

	if (s->derr == DE_NONE && s->msgfd >= 0 &&
	    (r = policy_data_done(session_pol(s), s->msgfd)) != 0) {
		s->werrno = r == -1 ? errno : 0;
		s->derr = r == -1 ? DE_WRITE : DE_POLICY;
	}
	/* every DMARC evaluation is kept for the aggregate reports */
	if (s->pol && s->pol->dmarc_rec.len > 0 && smtp.queue)
		ipc_send(smtp.queue, IMSG_Q_DMARC, s->pol->dmarc_rec.data,
		    s->pol->dmarc_rec.len, -1);
	if (s->pol)
		buf_reset(&s->pol->dmarc_rec);
	if (s->dkim && s->derr == DE_NONE && s->msgfd >= 0) {
		if ((r = dsign_request(s->dkim, data_dkim_done, s->id)) == 0) {
			s->state = SS_VAULT;
			return;
		}
		if (r == -1)
			s->derr = DE_DKIM;
	}
	data_commit_end(s);
}

static void
data_commit_end(struct session *s)
{
	off_t end;

	/* The file may be a reused one, longer than this message: it ends
	   where the message does. */
	if (s->derr == DE_NONE && s->msgfd >= 0 &&
	    ((end = lseek(s->msgfd, 0, SEEK_CUR)) == -1 ||
	    ftruncate(s->msgfd, end) == -1)) {
		s->werrno = errno;
		s->derr = DE_WRITE;
	}
	if (s->msgfd >= 0)
		close(s->msgfd);
	s->msgfd = -1;
	if (s->derr == DE_NONE && (smtp.queue == NULL ||
	    data_send_commit(s) == -1))
		s->derr = DE_QUEUE;
	if (s->derr != DE_NONE) {
		data_refuse(s);
		return;
	}
	s->committing = 1;
	s->state = SS_WAIT;
}

/*
 * The addresses of a From: field body, comments and display names left
 * out; each is checked against what the account may send as.  Returns
 * the first address it may not use (copied to bad), or 0.
 */
static int
hdr_from_check(struct session *s, const char *v, char *bad, size_t badlen)
{
	char one[512];
	size_t n = 0;
	int depth = 0, quoted = 0, angle = 0, inangle = 0, count = 0, cut = 0;

	for (;; v++) {
		char ch = *v;

		if (ch == '\0' || (ch == ',' && !quoted && !depth && !angle)) {
			one[n] = '\0';
			/* trim, and take <...> if there was one */
			while (n > 0 && one[n - 1] == ' ')
				one[--n] = '\0';
			if (n > 0 || inangle) {
				const char *a = one + strspn(one, " ");

				if (++count > 20 || cut || !conf_sender_allowed(
				    smtp.conf, s->authuser, a)) {
					str_copy(bad, a, badlen);
					return 1;
				}
			}
			n = 0;
			inangle = cut = 0;
			if (ch == '\0')
				return 0;
			continue;
		}
		if (quoted) {
			if (ch == '"')
				quoted = 0;
			else if (ch == '\\' && v[1])
				v++;
			continue;
		}
		if (depth) {
			depth += ch == '(' ? 1 : ch == ')' ? -1 : 0;
			continue;
		}
		if (ch == '(') {
			depth = 1;
		} else if (ch == '"' && !angle) {
			quoted = 1;
		} else if (ch == '<') {
			angle = inangle = 1;
			n = cut = 0;	/* the display name is not the address */
		} else if (ch == '>') {
			angle = 0;
		} else if (inangle && !angle) {
			;		/* after <...>: nothing counts */
		} else if (n + 1 < sizeof(one) && (ch != ' ' || n > 0))
			one[n++] = ch;
		else if (ch != ' ' || n > 0)
			cut = 1;	/* too long to check: not its own */
	}
}

/* One whole header field of an authenticated submission is read. */
static void
hdr_field_done(struct session *s)
{
	char bad[512];
	const char *v;

	if (s->hdr.len == 0)
		return;
	v = s->hdr.data;
	if (strncasecmp(v, "Date:", 5) == 0)
		s->hasdate = 1;
	else if (strncasecmp(v, "Message-ID:", 11) == 0)
		s->hasmsgid = 1;
	else if (strncasecmp(v, "Priority:", 9) == 0 && strcasestr(v + 9,
	    "non-urgent") == NULL && strcasestr(v + 9, "urgent") != NULL)
		s->urgent = 1;	/* RFC 2156: goes first at each destination */
	else if (strncasecmp(v, "From:", 5) == 0 && s->badfrom == NULL &&
	    hdr_from_check(s, v + 5, bad, sizeof(bad)))
		s->badfrom = xstrdup(bad);
	buf_reset(&s->hdr);
}

/* The header ends: what a mail program left out, a submission gets. */
static void
hdr_complete(struct session *s)
{
	char date[64];
	time_t now = time(NULL);
	struct tm tm;

	hdr_field_done(s);
	if (!s->hasdate) {
		localtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
		buf_printf(&s->wbuf, "Date: %s\r\n", date);
		s->msgsize += 8 + strlen(date);
	}
	if (!s->hasmsgid) {
		buf_printf(&s->wbuf, "Message-ID: <%s@%s>\r\n", s->qid,
		    conf_str(smtp.conf, K_HOSTNAME));
		s->msgsize += 20 + strlen(s->qid) +
		    strlen(conf_str(smtp.conf, K_HOSTNAME));
	}
	s->hasdate = s->hasmsgid = 1;
}

/*
 * The header ends: a submission gets what it left out, then a signed
 * message the room for its DKIM-Signature fields.
 */
static void
data_hend(struct session *s)
{
	size_t at;
	off_t off;

	if (s->derr == DE_NONE && s->msgfd >= 0) {
		/* Our Authentication-Results room, at the top if it can be. */
		if ((off = lseek(s->msgfd, 0, SEEK_CUR)) == -1) {
			s->werrno = errno;
			s->derr = DE_WRITE;
		} else
			s->msgsize += policy_hend(session_pol(s), &s->wbuf, off == 0,
			    off);
	}
	at = s->wbuf.len;
	if (s->authed)
		hdr_complete(s);
	if (s->dkim == NULL || s->derr != DE_NONE)
		return;
	dsign_htext(s->dkim, s->wbuf.data + at, s->wbuf.len - at);
	if ((off = lseek(s->msgfd, 0, SEEK_CUR)) == -1)
		s->derr = DE_DKIM;
	else
		s->msgsize += dsign_hend(s->dkim, &s->wbuf,
		    off + (off_t)s->wbuf.len);
}

/* Header lines of an authenticated submission, unfolded, bounded. */
static void
hdr_line(struct session *s, const char *line, size_t len)
{
	if (len > 0 && (line[0] == ' ' || line[0] == '\t')) {
		if (s->hdr.len + len < SMTP_HDR_MAX) {
			buf_putc(&s->hdr, ' ');
			buf_append(&s->hdr, line + 1, len - 1);
		}
		return;
	}
	hdr_field_done(s);
	if (len > 0)
		buf_append(&s->hdr, line, len < SMTP_HDR_MAX ? len :
		    SMTP_HDR_MAX);
}

static void
data_line(struct session *s, const char *line, size_t len)
{
	uint64_t max = (uint64_t)session_knob(s, K_MAX_MESSAGE_SIZE);

	if (line[0] == '.' && !s->bdat) {	/* dot-stuffing, 4.5.2 */
		line++;
		len--;
	}
	if (s->dkim && s->derr == DE_NONE && s->inheaders)
		dsign_hline(s->dkim, line, len);
	else if (s->dkim && s->derr == DE_NONE)
		dsign_bline(s->dkim, line, len);
	if (!s->inheaders && s->derr == DE_NONE)
		policy_bline(session_pol(s), line, len);
	if (s->inheaders && s->authed)
		hdr_line(s, line, len);
	if (s->inheaders && len == 0) {
		data_hend(s);
		s->inheaders = 0;
	}
	/*
	 * RFC 5321 6.3: counting Received: fields finds loops; ours is one
	 * more, so the client may bring one fewer than max-hops.
	 */
	if (s->inheaders && len >= 9 && strncasecmp(line, "Received:", 9) == 0 &&
	    ++s->hops >= conf_num(smtp.conf, NULL, K_MAX_HOPS) &&
	    s->derr == DE_NONE)
		s->derr = DE_HOPS;
	if (s->derr != DE_NONE)
		return;
	s->msgsize += len + 2;
	if (s->msgsize > max) {
		s->derr = DE_SIZE;
		return;
	}
	if (s->inheaders)	/* forged Authentication-Results left out */
		policy_hline(session_pol(s), line, len, &s->wbuf);
	else {
		buf_append(&s->wbuf, line, len);
		buf_append(&s->wbuf, "\r\n", 2);
	}
	data_write(s, 0);
}

static void
session_dataline(struct session *s)
{
	enum line_status st;
	size_t len;
	char *line;
	int crlf = 0;

	st = session_getline(s, (size_t)session_knob(s, K_MAX_LINE_LENGTH),
	    &line, &len, &crlf);
	switch (st) {
	case LN_NONE:
		return;
	case LN_LONG:
		if (s->derr == DE_NONE)
			s->derr = DE_LINE;
		s->prevcrlf = crlf;
		return;
	case LN_BARE:
		/* Only CRLF.CRLF ends the data: "\n.\r\n" is not an end. */
		if (s->derr == DE_NONE)
			s->derr = DE_BARE;
		s->prevcrlf = crlf;
		return;
	case LN_NUL:
		if (s->derr == DE_NONE)
			s->derr = DE_NUL;
		s->prevcrlf = 1;
		return;
	case LN_OK:
		break;
	}
	if (len == 1 && line[0] == '.' && s->prevcrlf) {
		if (s->timer)
			event_del(s->timer);
		data_commit(s);
		return;
	}
	s->prevcrlf = 1;
	data_line(s, line, len);
}

static void
session_datatimeout(evutil_socket_t fd, short ev, void *arg)
{
	struct session *s = arg;

	session_reply(s, "421 4.4.2 %s data timeout, closing",
	    conf_str(smtp.conf, K_HOSTNAME));
	session_close(s, "data timeout");
}

static void
data_start(struct session *s, const char *qid, int fd)
{
	struct timeval tv;
	long long ms = session_knob(s, K_DATA_TIMEOUT);

	str_copy(s->qid, qid, sizeof(s->qid));
	s->msgfd = fd;
	s->state = SS_DATA;
	s->prevcrlf = 1;
	s->inheaders = 1;
	s->hops = 0;
	data_received(s);
	policy_data(session_pol(s));
	if (s->authed || s->local || (conf_is_trusted(smtp.conf,
	    (struct sockaddr *)&s->ss) && strcmp(conf_str(smtp.conf,
	    K_DKIM_SIGN_TRUSTED), "yes") == 0))
		s->dkim = dsign_new();
	if (s->bdat) {
		/* No 354, no deadline of its own: chunks are commands. */
		s->state = SS_BDAT;
		bdat_read(s);
		if (s->state == SS_CMD)
			session_process(s);
		return;
	}
	session_reply(s, "354 end data with <CR><LF>.<CR><LF>");
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	if (s->timer == NULL)
		s->timer = evtimer_new(smtp.base, session_datatimeout, s);
	else
		event_assign(s->timer, smtp.base, -1, 0, session_datatimeout, s);
	evtimer_add(s->timer, &tv);
}

/* ---- BDAT (RFC 3030) ------------------------------------------------------ */

/*
 * A chunk's bytes are cut into lines as DATA's are, with the same rules:
 * only CRLF ends a line (the CR may end one chunk and the LF start the
 * next), a bare CR or LF or a NUL refuses the message at its end, a line
 * over max-line-length too.  Nothing in a chunk ends the message, a
 * "." line included; there is no dot-stuffing to undo.
 */
static void
bdat_line(struct session *s)
{
	char *l = s->bline.data ? s->bline.data : "";
	size_t len = s->bline.len;

	if (s->blong) {
		s->blong = 0;
		if (s->derr == DE_NONE)
			s->derr = DE_LINE;
	} else if (len == 0 || l[len - 1] != '\r' ||
	    memchr(l, '\r', len - 1) != NULL) {
		if (s->derr == DE_NONE)
			s->derr = DE_BARE;
	} else if (memchr(l, '\0', len - 1) != NULL) {
		if (s->derr == DE_NONE)
			s->derr = DE_NUL;
	} else {
		l[len - 1] = '\0';
		data_line(s, l, len - 1);
	}
	buf_reset(&s->bline);
}

static void
bdat_bytes(struct session *s, const char *p, size_t n)
{
	size_t max = (size_t)session_knob(s, K_MAX_LINE_LENGTH) + 1;
	const char *nl;
	size_t take;

	while (n > 0) {
		nl = memchr(p, '\n', n);
		take = nl ? (size_t)(nl - p) : n;
		if (s->blong || s->bline.len + take > max)
			s->blong = 1;	/* kept short; refused at the end */
		else
			buf_append(&s->bline, p, take);
		if (nl == NULL)
			return;
		bdat_line(s);
		p = nl + 1;
		n -= take + 1;
	}
}

/* A refused chunk is read to its end, then answered (and counted). */
static void
bdat_refused(struct session *s)
{
	char reply[sizeof(s->breply)];

	str_copy(reply, s->breply, sizeof(reply));
	if (s->qid[0] && smtp.queue)
		ipc_send(smtp.queue, IMSG_Q_ABORT, s->qid, strlen(s->qid), -1);
	s->qid[0] = '\0';
	if (s->bdat)
		session_reset(s);	/* RFC 3030 2: the transaction is lost */
	s->state = SS_CMD;
	session_error(s, "%s", reply);
}

/* The chunk is read: answer it, or end the message with LAST. */
static void
bdat_chunk_end(struct session *s)
{
	if (s->breply[0] != '\0') {
		bdat_refused(s);
		return;
	}
	if (!s->bok) {		/* answered already (queue refused it) */
		s->state = SS_CMD;
		return;
	}
	if (s->blast) {
		/* A last line without CRLF gets one; a CR there is bare. */
		if (s->bline.len > 0 && !s->blong &&
		    s->bline.data[s->bline.len - 1] == '\r') {
			if (s->derr == DE_NONE)
				s->derr = DE_BARE;
			buf_reset(&s->bline);
		} else if (s->bline.len > 0 && !s->blong)
			buf_putc(&s->bline, '\r');
		if (s->bline.len > 0 || s->blong)
			bdat_line(s);
		data_commit(s);		/* 250 once durable, or the refusal */
		return;
	}
	if (s->derr == DE_SIZE) {
		data_refuse(s);		/* 552 now, the chunk was read */
		return;
	}
	s->state = SS_CMD;
	session_reply(s, "250 2.0.0 %llu octets received",
	    (unsigned long long)s->msgsize);
}

static void
bdat_read(struct session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t n = evbuffer_get_length(in);

	if (n > s->bleft)
		n = (size_t)s->bleft;
	if (n > SMTP_WBUF)
		n = SMTP_WBUF;
	if (n > 0) {
		if (s->bok && s->msgfd >= 0)
			bdat_bytes(s, (const char *)evbuffer_pullup(in,
			    (ssize_t)n), n);
		evbuffer_drain(in, n);
		s->bleft -= n;
	}
	if (s->bleft == 0)
		bdat_chunk_end(s);
}

/*
 * BDAT size [LAST].  The chunk is always read, so the session stays in
 * step with the client, and the reply comes after it; a size that
 * cannot be read, or one over max-message-size, cannot be skipped in
 * step, and the connection is closed.
 */
static void
bdat_start(struct session *s, const char *arg)
{
	const char *why = NULL;
	uint64_t size = 0;
	int last = 0, r;
	long long max = session_knob(s, K_MAX_MESSAGE_SIZE);

	r = esmtp_bdat(arg, &size, &last, &why);
	if (r == -1 || size > (uint64_t)max) {
		session_log(s, "event=bdat result=reject code=%d reason=\"%s\"",
		    r == -1 ? 501 : 552, r == -1 ? log_q(why) : "chunk over "
		    "max-message-size");
		if (r == -1)
			session_reply(s, "501 5.5.4 %s; closing", why);
		else
			session_reply(s, "552 5.3.4 chunk exceeds fixed maximum "
			    "message size of %lld bytes; closing", max);
		if (s->qid[0] && smtp.queue)
			ipc_send(smtp.queue, IMSG_Q_ABORT, s->qid,
			    strlen(s->qid), -1);
		s->qid[0] = '\0';
		session_close(s, "BDAT out of step");
		return;
	}
	s->bleft = size;
	s->blast = last;
	s->bok = 0;
	s->breply[0] = '\0';
	s->state = SS_BDAT;
	if (r == -2)
		snprintf(s->breply, sizeof(s->breply), "501 5.5.4 %s", why);
	else if (s->sender == NULL)
		str_copy(s->breply, "503 5.5.1 send MAIL first",
		    sizeof(s->breply));
	else if (s->nrcpts == 0)
		str_copy(s->breply, "554 5.5.1 no valid recipients",
		    sizeof(s->breply));
	else if (s->msgfd >= 0 || s->bdat)
		s->bok = 1;
	else {
		s->bdat = s->bok = 1;
		if (data_request(s) == 0)
			return;		/* SS_WAIT; data_start reads on */
		s->bdat = 0;
		str_copy(s->breply, "451 4.3.0 queue unavailable, try again "
		    "later", sizeof(s->breply));
	}
	bdat_read(s);
}

/* ---- the session loop ------------------------------------------------------ */

static void
session_process(struct session *s)
{
	struct evbuffer *in, *out;
	int guard;

	for (guard = 0; guard < 100000; guard++) {
		if (s->state == SS_CMD && s->bleft > 0)
			s->state = SS_BDAT;	/* a refused chunk is read */
		if (s->state != SS_CMD && s->state != SS_DATA &&
		    s->state != SS_BDAT)
			return;
		/* STARTTLS replaces the bufferevent: ask each time. */
		in = bufferevent_get_input(s->bev);
		out = bufferevent_get_output(s->bev);
		if (evbuffer_get_length(out) > SMTP_OUTMAX)
			return;	/* resumed by the write callback */
		if (evbuffer_get_length(in) == 0)
			return;
		if (s->state == SS_CMD && s->closing && s->sender == NULL) {
			session_reply(s, "421 4.3.2 %s shutting down",
			    conf_str(smtp.conf, K_HOSTNAME));
			session_close(s, "shutdown");
			return;
		}
		if (s->state == SS_CMD)
			session_cmdline(s);
		else if (s->state == SS_BDAT)
			bdat_read(s);
		else
			session_dataline(s);
		if (s->state == SS_CMD &&
		    evbuffer_search(in, "\n", 1, NULL).pos == -1 && !s->skip &&
		    evbuffer_get_length(in) <= (size_t)session_knob(s,
		    K_MAX_COMMAND_LENGTH) + 1)
			return;
		if (s->state == SS_DATA &&
		    evbuffer_search(in, "\n", 1, NULL).pos == -1 && !s->skip &&
		    evbuffer_get_length(in) <= (size_t)session_knob(s,
		    K_MAX_LINE_LENGTH) + 1)
			return;
	}
}

static void
session_readcb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	s->active = smtp_now_ms();
	if (s->state == SS_PREGREET) {
		session_log(s, "event=pregreet result=reject reason=\"client "
		    "spoke before the greeting\"");
		s->state = SS_CLOSING;
		session_free(s);
		return;
	}
	session_process(s);
}

static void	session_tls_start(struct session *);
static void	session_tls_event(struct session *, short);

/* The connection is gone or hopeless: free the session now. */
static void
smtp_drop(struct session *s)
{
	s->state = SS_CLOSING;
	session_free(s);
}

static void
session_writecb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	/*
	 * A TLS bufferevent calls this deferred, after the write that
	 * emptied the buffer: replies queued since are not written yet.
	 */
	if (evbuffer_get_length(bufferevent_get_output(bev)) > 0 &&
	    (s->state == SS_CLOSING || s->state == SS_STARTTLS))
		return;
	if (s->state == SS_CLOSING) {
		session_free(s);
		return;
	}
	if (s->state == SS_STARTTLS) {
		session_tls_start(s);	/* the 220 is in the kernel's hands */
		return;
	}
	session_process(s);
}

static void
session_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == SS_HANDSHAKE) {
		session_tls_event(s, what);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->state == SS_CLOSING) {
			session_free(s);
			return;
		}
		if (s->state == SS_WAIT) {
			/*
			 * The client waits for us, the queue; a 421 now would
			 * leave a commit in flight with no answer.
			 */
			bufferevent_enable(s->bev, EV_READ | EV_WRITE);
			return;
		}
		session_reply(s, "421 4.4.2 %s timeout, closing",
		    conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "timeout");
		bufferevent_enable(s->bev, EV_WRITE);
		return;
	}
	session_log(s, "event=disconnect reason=\"%s\"",
	    (what & BEV_EVENT_EOF) ? "client closed" : "connection error");
	/*
	 * OpenSSL drops a session from the resumption cache when its SSL is
	 * freed without a shutdown, in case it was attacked.  A client that
	 * hangs up after QUIT without close_notify (Postfix does not wait for
	 * the 221) had no TLS error: its session stays resumable.
	 */
	if (s->tls && (what & BEV_EVENT_EOF))
		SSL_set_shutdown(bufferevent_openssl_get_ssl(s->bev),
		    SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	smtp_drop(s);
}

static void
session_greet(struct session *s)
{
	char c;

	/*
	 * Input already waiting means the client did not wait for us.  Under
	 * TLS the socket holds records, not commands: only the decrypted
	 * input counts.
	 */
	if ((!s->tls && recv(bufferevent_getfd(s->bev), &c, 1, MSG_PEEK |
	    MSG_DONTWAIT) > 0) ||
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		session_log(s, "event=pregreet result=reject reason=\"client "
		    "spoke before the greeting\"");
		s->state = SS_CLOSING;
		session_free(s);
		return;
	}
	s->state = SS_CMD;
	session_reply(s, "220 %s ESMTP Tern", conf_str(smtp.conf, K_HOSTNAME));
}

static void
session_greettimer(evutil_socket_t fd, short ev, void *arg)
{
	session_greet(arg);
}

static void
smtp_format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr,
		    a, sizeof(a));
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6,
		    &((const struct sockaddr_in6 *)ss)->sin6_addr, a, sizeof(a));
	snprintf(out, len, "[%s]", a);
}

/* Refuse a connection over a limit with one line, without a session. */
static void
smtp_refuse(int fd, const char *why)
{
	char line[128];
	int n;

	n = snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n",
	    conf_str(smtp.conf, K_HOSTNAME), why);
	(void)!send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	close(fd);
}

/* The local submitter, named by the kernel, not by what it says. */
static void
smtp_peer_user(int fd, struct session *s)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct passwd *pw;

	s->local = 1;
	s->uid = (uid_t)-1;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) {
		str_copy(s->addr, "local:uid=?", sizeof(s->addr));
		str_copy(s->localacct, "local:?", sizeof(s->localacct));
		return;
	}
	s->uid = cred.uid;
	pw = getpwuid(cred.uid);
	snprintf(s->addr, sizeof(s->addr), "local:uid=%u(%s)",
	    (unsigned)cred.uid, pw ? pw->pw_name : "?");
	if (pw)
		snprintf(s->localacct, sizeof(s->localacct), "local:%s",
		    pw->pw_name);
	else
		snprintf(s->localacct, sizeof(s->localacct), "local:uid=%u",
		    (unsigned)cred.uid);
	str_lower(s->localacct);
}

/*
 * The session's bufferevent on fd: plain, or with ssl a TLS one whose
 * server handshake starts at once.  Out of memory is fatal, as in xmalloc.
 */
static void
session_bev(struct session *s, evutil_socket_t fd, SSL *ssl)
{
	if (ssl == NULL)
		s->bev = bufferevent_socket_new(smtp.base, fd,
		    BEV_OPT_CLOSE_ON_FREE);
	else if ((s->bev = bufferevent_openssl_socket_new(smtp.base, fd, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)) != NULL)
		/* A client that hangs up without close_notify is just gone. */
		bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	if (s->bev == NULL)
		fatalx("event=connect result=error reason=\"out of memory for "
		    "a session\"");
	bufferevent_setcb(s->bev, session_readcb, session_writecb,
	    session_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_INMAX);
	session_timeouts(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/* ssl: an implicit-TLS listener's session (RFC 8314), else NULL. */
static struct session *
smtp_session_new(evutil_socket_t fd, const struct listener *l,
    const struct sockaddr_storage *ss, const char *addr, SSL *ssl)
{
	struct session *s;

	s = xcalloc(1, sizeof(*s));
	s->id = smtp.nextid++;
	s->l = l;
	s->ss = *ss;
	s->active = smtp_now_ms();
	s->msgfd = -1;
	s->state = ssl ? SS_HANDSHAKE : SS_PREGREET;
	str_copy(s->addr, addr, sizeof(s->addr));
	buf_init(&s->wbuf);
	session_bev(s, fd, ssl);
	clients_add(&s->ss);
	s->next = smtp.sessions;
	if (smtp.sessions)
		smtp.sessions->prev = s;
	smtp.sessions = s;
	smtp.nsessions++;
	smtp_stress_check();
	return s;
}

/* The 220, now or after greeting-delay. */
static void
session_greet_start(struct session *s)
{
	struct timeval tv;
	long long ms;

	ms = s->local ? 0 : session_knob(s, K_GREETING_DELAY);
	if (ms <= 0) {
		session_greet(s);
		return;
	}
	s->state = SS_PREGREET;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	s->timer = evtimer_new(smtp.base, session_greettimer, s);
	evtimer_add(s->timer, &tv);
}

/* An implicit-TLS session is greeted once its handshake is done. */
static void
smtp_start_session(struct session *s)
{
	session_log(s, "event=connect listener=%s:%d%s", s->l->addr,
	    s->l->port, s->state == SS_HANDSHAKE ? " tls=implicit" : "");
	if (s->state != SS_HANDSHAKE)
		session_greet_start(s);
}

/* ---- TLS ------------------------------------------------------------------ */

/*
 * STARTTLS: our 220 is written, nothing after it was read.  The plain
 * bufferevent lets go of the socket (without closing it) and a TLS one
 * takes it over; the client's ClientHello is still in the socket.
 */
static void
session_tls_start(struct session *s)
{
	evutil_socket_t fd = bufferevent_getfd(s->bev);
	SSL *ssl;

	if ((ssl = tls_server_new()) == NULL) {
		session_warn(s, "event=tls result=error reason=\"cannot make a "
		    "TLS session\"");
		s->state = SS_CLOSING;
		session_free(s);
		return;
	}
	bufferevent_setfd(s->bev, -1);
	bufferevent_free(s->bev);
	s->bev = NULL;
	s->state = SS_HANDSHAKE;
	session_bev(s, fd, ssl);
}

/* The handshake is done: log it, forget the plaintext part, go on. */
static void
session_tls_up(struct session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	const char *proto, *cipher;
	int bits;

	s->tls = 1;
	tls_describe(ssl, &proto, &cipher, &bits);
	session_log(s, "event=tls result=ok protocol=%s cipher=%s bits=%d "
	    "resumed=%s", proto, cipher, bits, SSL_session_reused(ssl) ?
	    "yes" : "no");
	/* RFC 3207 4.2: nothing the client said before TLS counts. */
	free(s->helo);
	s->helo = NULL;
	s->esmtp = 0;
	session_reset(s);
	if (s->closing) {
		session_reply(s, "421 4.3.2 %s shutting down",
		    conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "shutdown");
		return;
	}
	if (conf_tls_mode(smtp.conf, s->l) == TLS_MODE_IMPLICIT) {
		session_greet_start(s);
		return;
	}
	s->state = SS_CMD;
	session_process(s);
}

/* During the handshake: done, or failed (logged; the session goes). */
static void
session_tls_event(struct session *s, short what)
{
	unsigned long e;

	if (what & BEV_EVENT_CONNECTED) {
		session_tls_up(s);
		return;
	}
	e = bufferevent_get_openssl_error(s->bev);
	session_log(s, "event=tls result=fail reason=\"%s\"",
	    (what & BEV_EVENT_TIMEOUT) ? "timeout in the handshake" :
	    e ? log_q(tls_error_string(e)) : (what & BEV_EVENT_EOF) ?
	    "connection closed in the handshake" : "handshake failed");
	smtp_drop(s);
}

/*
 * Stress: most slots are taken (stress-threshold percent of the cap).
 * Entered at the threshold, left a tenth below it, so a server hovering
 * there does not re-time every session on each connection.
 */
static void
smtp_stress_check(void)
{
	size_t hi = smtp.maxconn * (size_t)conf_num(smtp.conf, NULL,
	    K_STRESS_THRESHOLD) / 100, lo;
	struct session *s;
	int on;

	if (hi == 0)
		hi = 1;
	lo = hi - (hi / 10 > 0 ? hi / 10 : 1);
	on = smtp.stress ? smtp.nsessions > lo : smtp.nsessions >= hi;
	if (on == smtp.stress)
		return;
	smtp.stress = on;
	log_warnx("event=stress result=%s sessions=%zu threshold=%zu "
	    "max-connections=%zu", on ? "on" : "off", smtp.nsessions, hi,
	    smtp.maxconn);
	for (s = smtp.sessions; s; s = s->next)
		if (s->state != SS_CLOSING)
			session_timeouts(s);
}

/* The longest-idle session, between commands, from this address. */
static struct session *
smtp_idlest(const struct sockaddr_storage *ss)
{
	struct session *s, *best = NULL;

	for (s = smtp.sessions; s; s = s->next)
		if (s->state == SS_CMD && !s->closing &&
		    clients_same(&s->ss, ss) &&
		    (best == NULL || s->active < best->active))
			best = s;
	return best;
}

/*
 * Full.  Rather than refuse someone who is not connected yet, close the
 * longest-idle session of the address holding the most, if it holds at
 * least two more than the newcomer's: room for new clients, and no churn
 * between addresses that hold as many.  0 if a session was closed.
 */
static int
smtp_evict(const struct sockaddr_storage *ss, const char *addr)
{
	struct sockaddr_storage top;
	struct session *v;
	size_t most = clients_busiest(&top);

	if (most < clients_count(ss) + 2 || (v = smtp_idlest(&top)) == NULL)
		return -1;
	session_log(v, "event=evict reason=\"server full; this address holds "
	    "%zu sessions\" idle=%llums for=%s", most,
	    (unsigned long long)(smtp_now_ms() - v->active), addr);
	session_reply(v, "421 4.7.0 %s too many connections from your "
	    "address, closing", conf_str(smtp.conf, K_HOSTNAME));
	session_close(v, "evicted for a new client");
	return 0;
}

static int
smtp_over_limits(evutil_socket_t fd, const struct sockaddr_storage *ss,
    const char *addr)
{
	if (ss->ss_family != AF_UNIX && clients_count(ss) >=
	    (size_t)conf_num(smtp.conf, NULL, K_MAX_CONNECTIONS_PER_IP)) {
		log_info("event=connect result=reject reason=\"too many "
		    "connections from this address\" client=%s", addr);
		smtp_refuse(fd, "too many connections from your address");
		return 1;
	}
	if (smtp.nsessions >= smtp.maxconn && smtp_evict(ss, addr) == -1) {
		log_info("event=connect result=reject reason=\"too many "
		    "connections\" client=%s", addr);
		smtp_refuse(fd, "too many connections, try again later");
		return 1;
	}
	return 0;
}

static void
smtp_listen_all(int on)
{
	size_t i;

	for (i = 0; i < smtp.nlev; i++) {
		if (smtp.lev[i] == NULL)
			continue;
		if (on)
			evconnlistener_enable(smtp.lev[i]);
		else
			evconnlistener_disable(smtp.lev[i]);
	}
}

static void
smtp_accept_resume(evutil_socket_t fd, short ev, void *arg)
{
	if (!smtp.paused)
		return;
	smtp.paused = 0;
	evtimer_del(smtp.resume);
	if (!smtp.stopping && !smtp.draining)
		smtp_listen_all(1);
}

/*
 * accept() failed with something other than a vanished client: most
 * often EMFILE or ENFILE.  The connection stays in the backlog and the
 * listener stays readable, so trying again at once would spin.  Stop
 * accepting until a session ends (a descriptor is free again) or the
 * pause is over, and log at most once per pause interval.
 */
static void
smtp_accept_error(struct evconnlistener *lev, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	struct timeval tv = { SMTP_ACCEPT_PAUSE, 0 };
	time_t now = time(NULL);

	if (smtp.paused)
		return;
	if (now - smtp.pauselog >= SMTP_ACCEPT_PAUSE) {
		log_warnx("event=accept result=error reason=\"%s\" "
		    "action=pause pause=%ds sessions=%zu", strerror(e),
		    SMTP_ACCEPT_PAUSE, smtp.nsessions);
		smtp.pauselog = now;
	}
	smtp.paused = 1;
	smtp_listen_all(0);
	if (smtp.resume == NULL)
		smtp.resume = evtimer_new(smtp.base, smtp_accept_resume, NULL);
	evtimer_add(smtp.resume, &tv);
}

/*
 * A session may hold two descriptors (its connection and, in DATA, its
 * spool file) and a delivery three.  Raise the soft open-file limit to
 * what the settings need; the hard limit is the admin's (ulimit -Hn,
 * LimitNOFILE).  If even that is too low, serve fewer sessions than
 * max-connections and say so, as OpenSMTPD does, rather than run out of
 * descriptors in accept() later.
 */
static void
smtp_fd_budget(void)
{
	long long conns = conf_num(smtp.conf, NULL, K_MAX_CONNECTIONS);
	long long fixed = SMTP_FD_RESERVE + SMTP_FD_PER_DELIVERY *
	    conf_num(smtp.conf, NULL, K_MAX_DELIVERIES) + policy_fds(smtp.conf) +
	    DNS_SOCKETS;
	long long need = 2 * conns + fixed, cur, was;
	struct rlimit rl;

	smtp.maxconn = (size_t)conns;
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		return;
	was = (long long)rl.rlim_cur;
	if (was < need) {
		rl.rlim_cur = rl.rlim_max != RLIM_INFINITY &&
		    rl.rlim_max < (rlim_t)need ? rl.rlim_max : (rlim_t)need;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	cur = (long long)rl.rlim_cur;
	if (cur >= need) {
		if (was < cur)
			log_info("event=start result=ok reason=\"open-file limit "
			    "raised\" nofile=%lld was=%lld", cur, was);
		return;
	}
	smtp.maxconn = cur > fixed + 2 ? (size_t)((cur - fixed) / 2) : 1;
	log_warnx("event=start result=warn reason=\"open-file limit too low "
	    "for max-connections; serving fewer sessions\" "
	    "max-connections=%lld effective=%zu nofile=%lld need=%lld "
	    "hint=\"raise the hard limit (LimitNOFILE, ulimit -n) or lower "
	    "max-connections\"", conns, smtp.maxconn, cur, need);
}

static void
smtp_accept(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	const struct listener *l = arg;
	struct sockaddr_storage ss;
	struct session *s;
	SSL *ssl = NULL;
	char addr[INET6_ADDRSTRLEN + 2];

	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, (size_t)salen < sizeof(ss) ? (size_t)salen : sizeof(ss));
	if (l->role == ROLE_LOCAL) {
		ss.ss_family = AF_UNIX;
		str_copy(addr, "local", sizeof(addr));
	} else
		smtp_format_addr(&ss, addr, sizeof(addr));
	if (smtp_over_limits(fd, &ss, addr))
		return;
	if (l->role != ROLE_LOCAL) {
		int on = 1;

		/* Replies are small; pipelined clients wait for each. */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	}
	if (l->role != ROLE_LOCAL &&
	    conf_tls_mode(smtp.conf, l) == TLS_MODE_IMPLICIT &&
	    (ssl = tls_server_new()) == NULL) {
		log_warnx("event=connect result=reject reason=\"TLS is not "
		    "available\" client=%s listener=%s:%d", addr, l->addr,
		    l->port);
		close(fd);
		return;
	}
	s = smtp_session_new(fd, l, &ss, addr, ssl);
	if (l->role == ROLE_LOCAL)
		smtp_peer_user(fd, s);
	smtp_start_session(s);
}

/* ---- queue replies ------------------------------------------------------------ */

static struct session *
smtp_find(uint64_t sid)
{
	struct session *s;

	for (s = smtp.sessions; s; s = s->next)
		if (s->id == sid)
			return s;
	return NULL;
}

struct qreply {
	uint64_t	 sid;
	char		*id;
	uint64_t	 code;
	char		*text;
	uint64_t	 policy;	/* a limit: text is the client's */
};

static int
qreply_parse(struct rec_reader *rd, struct qreply *q)
{
	struct rec r;
	int n;

	memset(q, 0, sizeof(*q));
	while ((n = rec_next(rd, &r)) == 1) {
		if (r.tag == T_SID && rec_u64(&r, &q->sid) == -1)
			return -1;
		if (r.tag == T_CODE && rec_u64(&r, &q->code) == -1)
			return -1;
		if (r.tag == T_ID && q->id == NULL &&
		    (q->id = rec_str(&r, 31)) == NULL)
			return -1;
		if (r.tag == T_TEXT && q->text == NULL &&
		    (q->text = rec_str(&r, 512)) == NULL)
			return -1;
		if (r.tag == T_POLICY && rec_u64(&r, &q->policy) == -1)
			return -1;
	}
	return n;
}

/*
 * The queue refused the message for the account's limits or a tripped
 * breaker: its code (4xx only) and text go to the client, printable
 * ASCII only, so nothing the queue says can end the reply line.
 */
static void
smtp_policy_refused(struct session *s, const struct qreply *q)
{
	char text[512];
	size_t i;
	int code = (q->code >= 400 && q->code < 500) ? (int)q->code : 451;

	str_copy(text, q->text ? q->text : "4.7.1 sending limit reached",
	    sizeof(text));
	for (i = 0; text[i]; i++)
		if (text[i] < 0x20 || text[i] > 0x7e)
			text[i] = '?';
	if (s->probe) {
		limits_probed(s, code, text);
		return;
	}
	session_log(s, "event=limit result=tempfail code=%d reason=\"%s\" "
	    "account=<%s> from=<%s> nrcpt=%zu", code, log_q(text),
	    log_a(session_account(s) ? session_account(s) : ""),
	    log_a(s->sender ? s->sender : ""), s->nrcpts);
	session_reply(s, "%d %s", code, text);
	s->state = SS_CMD;
	session_reset(s);
}

static void
smtp_created(struct session *s, struct qreply *q, int fd)
{
	if (s->state == SS_WAIT && q->policy && q->code != 0) {
		if (fd >= 0)
			close(fd);
		smtp_policy_refused(s, q);
		return;
	}
	if (s->state == SS_WAIT && s->probe) {
		if (fd >= 0)
			close(fd);
		limits_probed(s, 0, NULL);	/* DATA decides the rest */
		return;
	}
	if (s->state != SS_WAIT || q->code != 0 || fd < 0 || q->id == NULL) {
		if (fd >= 0)
			close(fd);
		if (q->id && q->code == 0)
			ipc_send(smtp.queue, IMSG_Q_ABORT, q->id,
			    strlen(q->id), -1);
		if (s->state == SS_WAIT) {
			if (q->code == 452)
				session_reply(s, "452 4.3.1 insufficient "
				    "system storage");
			else
				session_reply(s, "451 4.3.0 queue error, try "
				    "again later");
			s->state = SS_CMD;
			session_reset(s);
		}
		return;
	}
	data_start(s, q->id, fd);
}

static void
smtp_committed(struct session *s, struct qreply *q)
{
	if (s->state != SS_WAIT || q->id == NULL || strcmp(q->id, s->qid))
		return;
	if (q->code == 0) {
		session_log(s, "event=queued result=ok from=<%s> nrcpt=%zu "
		    "size=%llu%s%s", log_a(s->sender), s->nrcpts,
		    (unsigned long long)s->msgsize, s->mp.program[0] ?
		    " program=" : "", s->mp.program);
		session_reply(s, "250 2.0.0 Ok: queued as %s", s->qid);
	} else if (q->code == 452) {
		session_log(s, "event=queued result=tempfail code=452 "
		    "esc=4.3.1 reason=\"spool full: %s\"",
		    log_q(q->text ? q->text : "no reason given"));
		session_reply(s, "452 4.3.1 insufficient system storage");
	} else {
		session_log(s, "event=queued result=tempfail code=451 "
		    "reason=\"%s\"", log_q(q->text ? q->text : "queue error"));
		session_reply(s, "451 4.3.0 queue error, try again later");
	}
	s->qid[0] = '\0';	/* committed or refused: nothing to abort */
	session_reset(s);
	s->state = SS_CMD;
	if (s->closing) {
		session_reply(s, "421 4.3.2 %s shutting down",
		    conf_str(smtp.conf, K_HOSTNAME));
		session_close(s, "shutdown");
		return;
	}
	session_process(s);
}

static void
smtp_queue_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct session *s;
	struct qreply q;

	if (type == IMSG_M_DELIVER) {
		mta_job(c, rd, fd);
		return;
	}
	if (qreply_parse(rd, &q) == -1 ||
	    (type != IMSG_Q_CREATED && type != IMSG_Q_COMMITTED)) {
		log_warnx("event=ipc result=error reason=\"bad message from "
		    "queue\" type=%d", type);
		if (fd >= 0)
			close(fd);
		goto done;
	}
	if ((s = smtp_find(q.sid)) == NULL) {
		if (fd >= 0)
			close(fd);
		if (type == IMSG_Q_CREATED && q.id && q.code == 0)
			ipc_send(smtp.queue, IMSG_Q_ABORT, q.id, strlen(q.id),
			    -1);
		goto done;
	}
	if (type == IMSG_Q_CREATED)
		smtp_created(s, &q, fd);
	else
		smtp_committed(s, &q);
done:
	free(q.id);
	free(q.text);
}

/*
 * The queue died after this session's commit request left and before its
 * answer came: the message may be on disk (the new queue then delivers
 * it) or not.  RFC 5321 has no "maybe"; 421 and closing the connection
 * tell the client not to trust the transaction, and the log names the
 * queue id so the admin can look it up (ternctl show).
 */
static void
smtp_commit_unknown(struct session *s)
{
	session_warn(s, "event=queued result=unknown code=421 esc=4.3.0 "
	    "reason=\"queue lost before answering the commit; the message "
	    "may be queued\" from=<%s> nrcpt=%zu size=%llu", log_a(s->sender),
	    s->nrcpts, (unsigned long long)s->msgsize);
	session_reply(s, "421 4.3.0 %s queue lost before confirming "
	    "message %s: transaction outcome unknown, closing",
	    conf_str(smtp.conf, K_HOSTNAME), s->qid);
	s->qid[0] = '\0';
	session_reset(s);
	session_close(s, "commit outcome unknown");
}

/* One session's answer when the queue it waits on is gone. */
static void
smtp_queue_gone(struct session *s)
{
	if (s->state == SS_WAIT && s->probe) {
		limits_probed(s, 0, NULL);	/* asked again at DATA */
		return;
	}
	if (s->state == SS_WAIT && s->committing) {
		smtp_commit_unknown(s);
		return;
	}
	if (s->state == SS_DATA || (s->state == SS_BDAT && s->msgfd >= 0)) {
		/* Known not committed: 451 at the end of the data. */
		close(s->msgfd);
		s->msgfd = -1;
		s->qid[0] = '\0';
		if (s->derr == DE_NONE)
			s->derr = DE_QUEUE;
		return;
	}
	if (s->state != SS_WAIT)
		return;
	s->qid[0] = '\0';
	session_reset(s);
	s->state = SS_CMD;
	session_log(s, "event=data result=tempfail code=451 esc=4.3.0 "
	    "reason=\"queue lost\"");
	session_reply(s, "451 4.3.0 queue unavailable, try again later");
	session_process(s);
}

/*
 * The queue channel is gone: answer every session waiting on it, now,
 * and refuse new transactions until a new channel comes.
 */
static void
smtp_queue_lost(struct ipc *c)
{
	struct session *s, *next;

	mta_forget(c);
	if (smtp.queue == c)
		smtp.queue = NULL;
	ipc_free(c);
	for (s = smtp.sessions; s; s = next) {
		next = s->next;
		smtp_queue_gone(s);
	}
}

static void
smtp_queue_closed(struct ipc *c, void *arg)
{
	log_warnx("event=ipc result=error reason=\"queue channel closed\"");
	smtp_queue_lost(c);
}

/*
 * A new queue channel.  The parent sends one only when the old queue is
 * gone, and it may arrive before the old channel's end: read what the old
 * queue answered before it died, then answer whoever it left waiting.
 */
static void
smtp_queue_replace(int fd)
{
	struct ipc *old = smtp.queue;

	if (old != NULL) {
		if (ipc_drain(old) == 0)
			log_warnx("event=ipc result=error reason=\"old queue "
			    "channel still open; closing it\"");
		else
			log_warnx("event=ipc result=error reason=\"queue "
			    "channel closed\"");
		smtp_queue_lost(old);
	}
	smtp.queue = ipc_new(smtp.base, fd, smtp_queue_msg,
	    smtp_queue_closed, NULL);
	log_info("event=ipc result=ok reason=\"new queue channel\"");
}

static int
smtp_peer_kind(struct rec_reader *rd, const char *kind)
{
	struct rec r;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_KIND && r.len == strlen(kind) &&
		    memcmp(r.data, kind, r.len) == 0)
			return 1;
	return 0;
}

/*
 * A pickup of the maildrop: the parent ran sendmail on a drop file as
 * its owner (or, for root's, as nobody) and hands over the other end of
 * that sendmail's connection with the file owner's uid and name, which it
 * took from the kernel (fstat).  A local session as from the submit
 * socket, but named by the parent: SO_PEERCRED would name the parent.
 */
static void
smtp_pickup_session(struct rec_reader *rd, int fd)
{
	struct sockaddr_storage ss;
	struct session *s;
	struct rec r;
	char *user = NULL;
	uint64_t uid = UINT64_MAX;
	int kind = 0;

	while (rec_next(rd, &r) == 1) {
		if (r.tag == T_KIND && r.len == strlen(FD_PICKUP) &&
		    memcmp(r.data, FD_PICKUP, r.len) == 0)
			kind = 1;
		else if (r.tag == T_UID && rec_u64(&r, &uid) == -1)
			uid = UINT64_MAX;
		else if (r.tag == T_USER && user == NULL)
			user = rec_str(&r, 256);
	}
	if (!kind || uid > UINT32_MAX - 1 || user == NULL || smtp.stopping ||
	    smtp.draining) {
		free(user);
		close(fd);	/* the pickup sees EOF and tries again later */
		return;
	}
	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_UNIX;
	evutil_make_socket_nonblocking(fd);
	if (smtp_over_limits(fd, &ss, "local")) {
		free(user);
		return;
	}
	s = smtp_session_new(fd, &smtp_pickup, &ss, "local", NULL);
	s->local = 1;
	s->uid = (uid_t)uid;
	snprintf(s->addr, sizeof(s->addr), "local:uid=%u(%s)", (unsigned)uid,
	    user);
	/* Its limits are the file owner's, as on the submit socket. */
	snprintf(s->localacct, sizeof(s->localacct), "local:%s", user);
	str_lower(s->localacct);
	free(user);
	smtp_start_session(s);
}

static void
smtp_parent_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	if (type == IMSG_P_FD && fd >= 0) {
		smtp_pickup_session(rd, fd);
		return;
	}
	if (type == IMSG_P_PEER && fd >= 0 && smtp_peer_kind(rd, PEER_VAULT)) {
		vault_client_channel(smtp.base, fd);
		log_info("event=ipc result=ok reason=\"new vault channel\"");
		return;
	}
	if (type == IMSG_P_ACCOUNTS) {
		int r = resolve_accounts_msg(rd->p, rd->len);

		if (r == 1)
			log_info("event=reload result=ok accounts=%zu",
			    resolve_accounts_count());
		else if (r == -1)
			log_warnx("event=reload result=error reason=\"malformed "
			    "accounts\"");
	}
	if (type == IMSG_P_PEER && fd >= 0) {
		smtp_queue_replace(fd);
		return;
	}
	if (fd >= 0)
		close(fd);
}

static void
smtp_parent_closed(struct ipc *c, void *arg)
{
	/* The parent is gone: nothing supervises us, stop at once. */
	_exit(0);
}

/* ---- shutdown ------------------------------------------------------------------ */

static void
smtp_maybe_exit(void)
{
	/* A draining process also finishes the deliveries it started. */
	if ((smtp.stopping || smtp.draining) && smtp.nsessions == 0 &&
	    (smtp.stopping || mta_busy() == 0)) {
		mta_shutdown();
		log_info("event=stop result=ok");
		exit(0);
	}
}

static void
smtp_drain_check(evutil_socket_t fd, short ev, void *arg)
{
	smtp_maybe_exit();
}

static void
smtp_deadline(evutil_socket_t fd, short ev, void *arg)
{
	log_info("event=stop result=ok reason=\"aborted %zu sessions\"",
	    smtp.nsessions);
	exit(0);
}

static void
smtp_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct session *s, *next;
	struct timeval tv = { SMTP_DRAIN_SECS, 0 };

	if (smtp.stopping)
		return;
	smtp.stopping = 1;
	smtp_listen_all(0);
	for (s = smtp.sessions; s; s = next) {
		next = s->next;
		s->closing = 1;
		if (s->state == SS_CMD && s->sender == NULL) {
			session_reply(s, "421 4.3.2 %s shutting down",
			    conf_str(smtp.conf, K_HOSTNAME));
			session_close(s, "shutdown");
		} else if (s->state == SS_PREGREET) {
			s->state = SS_CLOSING;
			session_free(s);
		}
	}
	smtp.deadline = evtimer_new(smtp.base, smtp_deadline, NULL);
	evtimer_add(smtp.deadline, &tv);
	smtp_maybe_exit();
}

static void
smtp_sigusr1(evutil_socket_t sig, short ev, void *arg)
{
	/* Reload: a new smtp process took the listeners; finish and go. */
	struct timeval tv = { 1, 0 };
	struct event *tick;

	smtp.draining = 1;
	smtp_listen_all(0);
	log_info("event=drain sessions=%zu deliveries=%zu", smtp.nsessions,
	    mta_busy());
	tick = event_new(smtp.base, -1, EV_PERSIST, smtp_drain_check, NULL);
	evtimer_add(tick, &tv);
	smtp_maybe_exit();
}

static void
smtp_dns_init(const struct conf *conf)
{
	struct dns_server *sv = xcalloc(conf->nresolvers + 1, sizeof(*sv));
	const char *ta = conf_str(conf, K_DNSSEC_TRUST_ANCHOR);
	size_t i;

	for (i = 0; i < conf->nresolvers; i++) {
		sv[i].ss = conf->resolvers[i];
		sv[i].sslen = conf->resolverlen[i];
	}
	dns_trust_anchor(ta && strcmp(ta, "none") != 0 ? ta : NULL);
	if (dns_init(smtp.base, sv, conf->nresolvers, 0, 0) == -1)
		fatalx("event=start result=error reason=\"resolver set-up "
		    "failed\"");
	free(sv);
}

/*
 * The server's TLS context, from the chain and key the parent sent; then
 * the PEM text is wiped.  Without it (nothing sent, or it does not load)
 * the server runs without TLS: STARTTLS is not offered and implicit-TLS
 * listeners close their connections.
 */
static void
smtp_tls_init(struct buf *pem)
{
	char err[512];

	if (pem->data == NULL)
		log_warnx("event=start result=warn reason=\"no TLS certificate "
		    "from the parent: no TLS\"");
	else if (tls_server_init(pem->data, pem->len, err, sizeof(err)) == -1)
		log_warnx("event=start result=warn reason=\"TLS certificate "
		    "not loaded: %s; no TLS\"", log_q(err));
	if (pem->data)
		explicit_bzero(pem->data, pem->cap);
	buf_free(pem);
}

void
smtp_main(struct conf *conf, struct lsock *ls, size_t nls, int submitfd,
    int parentfd, int queuefd, int vaultfd, struct buf *tls)
{
	struct event *ev;
	size_t i;

	smtp.conf = conf;
	vault_client_timeout((unsigned)conf_num(conf, NULL, K_VAULT_TIMEOUT));
	smtp_tls_init(tls);
	smtp_fd_budget();
	smtp.base = event_base_new();
	smtp.aliases = aliases_open(conf_str(conf, K_ALIASES));
	smtp_dns_init(conf);
	mta_init(smtp.base, conf);
	verify_init(smtp.base, conf, smtp.aliases);
	policy_init(smtp.base, conf, smtp_policy_done);
	smtp.nextid = ((uint64_t)time(NULL) << 24) ^ ((uint64_t)getpid() << 8);
	smtp.parent = ipc_new(smtp.base, parentfd, smtp_parent_msg,
	    smtp_parent_closed, NULL);
	if (queuefd >= 0)
		smtp.queue = ipc_new(smtp.base, queuefd, smtp_queue_msg,
		    smtp_queue_closed, NULL);
	if (vaultfd >= 0)
		vault_client_channel(smtp.base, vaultfd);
	smtp.lev = xcalloc(nls + 1, sizeof(*smtp.lev));
	smtp.nlev = nls + (submitfd >= 0);
	for (i = 0; i < nls; i++) {
		evutil_make_socket_nonblocking(ls[i].fd);
		/* Backlog 0: the parent's listen(512) stays (-1 is 128). */
		smtp.lev[i] = evconnlistener_new(smtp.base, smtp_accept,
		    &conf->listeners[ls[i].listener],
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, ls[i].fd);
		if (smtp.lev[i] == NULL)
			fatalx("event=start result=error reason=\"cannot "
			    "listen on fd %d\"", ls[i].fd);
		evconnlistener_set_error_cb(smtp.lev[i], smtp_accept_error);
	}
	if (submitfd >= 0) {
		evutil_make_socket_nonblocking(submitfd);
		smtp.lev[nls] = evconnlistener_new(smtp.base, smtp_accept,
		    &smtp_local, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
		    -1, submitfd);
		if (smtp.lev[nls])
			evconnlistener_set_error_cb(smtp.lev[nls],
			    smtp_accept_error);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(smtp.base, SIGTERM, smtp_sigterm, NULL);
	evsignal_add(ev, NULL);
	ev = evsignal_new(smtp.base, SIGUSR1, smtp_sigusr1, NULL);
	evsignal_add(ev, NULL);
	proc_confine("smtp");
	log_info("event=start result=ok listeners=%zu", nls);
	event_base_dispatch(smtp.base);
	exit(0);
}
