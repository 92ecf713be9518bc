/*
 * mta: the outgoing SMTP client of the smtp process (see mta.h).  Every
 * reply from a remote server is untrusted input: lines are bounded, codes
 * checked, text sanitised before it is stored or logged.  Timeouts follow
 * RFC 5321 section 4.5.3.2.
 */
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "auth/vault.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "lib/addr.h"
#include "lib/ipc.h"
#include "lib/esmtp.h"
#include "lib/log.h"
#include "queue/mta.h"
#include "lib/rec.h"
#include "lib/util.h"

#define MTA_LINE_MAX	4096		/* longest reply line we read */
#define MTA_REPLY_LINES	200		/* lines of one multi-line reply */
#define MTA_CHUNK	(64 * 1024)	/* message bytes read per refill */
#define MTA_TEXT	400

/* RFC 5321 4.5.3.2 client timeouts, in seconds. */
#define TO_GREETING	300
#define TO_EHLO		300
#define TO_MAIL		300
#define TO_RCPT		300
#define TO_DATA		120
#define TO_BLOCK		180
#define TO_DOT		600

enum cstate {
	C_CONNECT, C_GREETING, C_EHLO, C_HELO, C_STARTTLS, C_TLS, C_CREDS,
	C_AUTH,
	C_AUTH_USER, C_AUTH_PASS, C_IDLE, C_RSET, C_TXN, C_BODY, C_DOT, C_QUIT
};

struct mta_rcpt {
	char	*addr;
	unsigned notify;	/* NOTIFY=, for a peer that takes DSN */
	char	*orcpt;		/* ORCPT=, decoded "type;addr"; or NULL */
	int	 status;	/* -1 = no outcome yet */
	char	 reply[MTA_TEXT];
};

struct mta_host {
	char	name[256];
	int	port;
};

struct mta_job;

struct mta_conn {
	struct mta_conn		*next;
	struct bufferevent	*bev;
	struct event		*idle;
	struct mta_job		*job;
	char			 key[300];	/* host:port, for reuse */
	char			 relay[320];	/* host[addr]:port, for logs */
	char			 host[256];
	const struct route	*route;		/* its TLS and AUTH policy */
	enum cstate		 st;
	int			 tls;		/* TLS is up */
	int			 notls;		/* handshake failed: plain */
	int			 authed;
	uint64_t		 id;		/* names it to the vault */
	char			*authuser;	/* the route's, for this */
	char			*authpass;	/* connection only */
	int			 ext_pipe, ext_8bit, ext_utf8, ext_tls, ext_size;
	int			 ext_plain, ext_login;
	int			 ext_dsn, ext_chunk, ext_binary;
	int			 bdat;		/* this body goes by BDAT */
	long long		 maxsize;
	int			 msgs;
	int			 dirty;		/* needs RSET before reuse */
	int			 code;		/* reply being read */
	int			 lines;
	char			 text[MTA_TEXT];
	/* transaction */
	int			 mail_code;
	size_t			 replies;	/* replies read in this txn */
	size_t			 sent_rcpts;
	int			 accepted;
	off_t			 off;
	int			 bol;
	char			 tlsinfo[160];
};

struct mta_job {
	struct mta_job		*next;
	struct ipc		*q;
	uint64_t		 id;
	char			 qid[32];
	char			*sender;
	char			 domain[256];
	int			 fd;
	uint64_t		 size;
	int			 body8, utf8;	/* body8: 2 BINARYMIME */
	int			 eai;		/* an address needs SMTPUTF8 */
	int			 ret;		/* RET=, DSN_RET_* */
	char			*envid;		/* ENVID=, decoded */
	int			 dsnpassed;	/* the peer took NOTIFY= */
	struct mta_rcpt		*r;
	size_t			 nr;
	const struct route	*route;
	struct mta_host		*hosts;
	size_t			 nhosts, hi;
	struct sockaddr_storage	 addrs[16];
	size_t			 naddrs, ai;
	int			 pending;	/* address lookups in flight */
	struct dns_query	*dq[2];
	struct mta_conn		*conn;
	char			 lasterr[MTA_TEXT];
	int			 lasttemp;
	char			 relay[320];
	char			 tlsinfo[160];
	int			 notls;		/* retry this address in plain */
	int			 reusing;	/* on a kept-open connection */
	int			 noreuse;	/* that failed: open a new one */
	uint64_t		 flags;		/* MTA_F_* */
	int			 srswait;	/* waiting for the vault */
};

static struct {
	struct event_base	*base;
	const struct conf	*conf;
	struct mta_conn		*inreply;	/* cleared if freed meanwhile */
	SSL_CTX			*ctx;
	struct mta_job		*jobs;
	struct mta_conn		*idle;
	size_t			 nconns;
	struct route		 lmtp;		/* local-delivery lmtp's server */
} mta;

static void	mta_next_host(struct mta_job *);
static void	mta_next_addr(struct mta_job *);
static void	mta_conn_free(struct mta_conn *);
static void	mta_start_txn(struct mta_conn *);
static void	mta_body_start(struct mta_conn *);
static void	mta_readcb(struct bufferevent *, void *);
static void	mta_writecb(struct bufferevent *, void *);
static void	mta_eventcb(struct bufferevent *, short, void *);

/* ---- setup ----------------------------------------------------------------- */

void
mta_init(struct event_base *base, const struct conf *conf)
{
	const char *ca;

	mta.base = base;
	mta.conf = conf;
	mta.ctx = SSL_CTX_new(TLS_client_method());
	if (mta.ctx == NULL)
		fatalx("event=start result=error reason=\"TLS client context\"");
	SSL_CTX_set_min_proto_version(mta.ctx, TLS1_2_VERSION);
	/*
	 * A bundle is parsed whole into memory (over a megabyte for the
	 * system one); the hashed directory is read a certificate at a time
	 * as chains need them, so it is the default.
	 */
	if ((ca = conf_str(conf, K_CA_FILE)) != NULL && *ca != '\0') {
		if (SSL_CTX_load_verify_locations(mta.ctx, ca, NULL) != 1)
			log_warnx("event=start result=warn reason=\"cannot "
			    "load ca-file %s: certificates will not verify\"",
			    log_q(ca));
	} else if ((ca = conf_str(conf, K_CA_PATH)) != NULL && *ca != '\0') {
		struct stat st;

		/* OpenSSL takes a missing directory without a word. */
		if (stat(ca, &st) == -1 || !S_ISDIR(st.st_mode) ||
		    SSL_CTX_load_verify_locations(mta.ctx, NULL, ca) != 1)
			log_warnx("event=start result=warn reason=\"cannot "
			    "use ca-path %s: certificates will not verify\"",
			    log_q(ca));
	}
	ERR_clear_error();
	/* local-delivery lmtp: the lmtp knob as a route (conf checked it). */
	mta.lmtp.domain = "lmtp";
	mta.lmtp.lmtp = 1;
	mta.lmtp.tls = ROUTE_TLS_NONE;
	if (conf_str(conf, K_LMTP) != NULL)
		(void)conf_lmtp_spec(conf_str(conf, K_LMTP), &mta.lmtp);
}

static int
mta_lmtp(const struct mta_conn *c)
{
	return c->route != NULL && c->route->lmtp;
}

size_t
mta_busy(void)
{
	size_t n = 0;
	const struct mta_job *j;

	for (j = mta.jobs; j; j = j->next)
		n++;
	return n;
}

void
mta_shutdown(void)
{
	while (mta.idle)
		mta_conn_free(mta.idle);
}

/* ---- replies ----------------------------------------------------------------- */

int
mta_reply_line(const char *line, size_t len, int *code, int *more)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
	    line[1] > '9' || line[2] < '0' || line[2] > '9')
		return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	*code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	*more = len > 3 && line[3] == '-';
	return 0;
}

static void
mta_text_add(struct mta_conn *c, const char *line)
{
	size_t have = strlen(c->text);
	char clean[MTA_TEXT];

	if (have + 2 >= sizeof(c->text))
		return;
	log_sanitize(clean, line, sizeof(clean));
	if (have)
		c->text[have++] = ' ';
	str_copy(c->text + have, clean, sizeof(c->text) - have);
}

/* AUTH's mechanisms: whole words, any case (RFC 4954 4). */
static int
mta_auth_mechs(const char *s)
{
	char w[32];
	size_t n;
	int ext = 0;

	while (*s) {
		while (*s == ' ' || *s == '=')	/* "AUTH=LOGIN PLAIN" too */
			s++;
		for (n = 0; s[n] && s[n] != ' ' && s[n] != '='; n++)
			;
		if (n < sizeof(w)) {
			memcpy(w, s, n);
			w[n] = '\0';
			if (strcasecmp(w, "PLAIN") == 0)
				ext |= MTA_EXT_AUTH_PLAIN;
			else if (strcasecmp(w, "LOGIN") == 0)
				ext |= MTA_EXT_AUTH_LOGIN;
		}
		s += n;
	}
	return ext;
}

int
mta_ehlo_keyword(const char *kw, long long *size)
{
	static const struct { const char *name; int ext; } kws[] = {
		{ "PIPELINING", MTA_EXT_PIPELINING },
		{ "8BITMIME", MTA_EXT_8BITMIME },
		{ "SMTPUTF8", MTA_EXT_SMTPUTF8 },
		{ "STARTTLS", MTA_EXT_STARTTLS },
		{ "DSN", MTA_EXT_DSN },
		{ "CHUNKING", MTA_EXT_CHUNKING },
		{ "BINARYMIME", MTA_EXT_BINARYMIME },
	};
	char up[64], *end;
	long long v;
	size_t i, k;

	*size = 0;
	for (i = 0; i + 1 < sizeof(up) && kw[i] && kw[i] != ' ' &&
	    kw[i] != '='; i++)
		up[i] = (char)((kw[i] >= 'a' && kw[i] <= 'z') ? kw[i] - 32 :
		    kw[i]);
	up[i] = '\0';
	for (k = 0; k < sizeof(kws) / sizeof(*kws); k++)
		if (strcmp(up, kws[k].name) == 0)
			return kws[k].ext;
	if (strcmp(up, "SIZE") == 0) {
		if (kw[i] == ' ') {
			errno = 0;
			v = strtoll(kw + i + 1, &end, 10);
			if (errno == 0 && v > 0 && end != kw + i + 1)
				*size = v;
		}
		return MTA_EXT_SIZE;
	}
	if (strcmp(up, "AUTH") == 0)
		return mta_auth_mechs(kw + i);
	return 0;
}

/* EHLO keywords, one per reply line. */
static void
mta_ehlo_line(struct mta_conn *c, const char *kw)
{
	long long size;
	int ext = mta_ehlo_keyword(kw, &size);

	if (ext & MTA_EXT_PIPELINING)
		c->ext_pipe = 1;
	if (ext & MTA_EXT_8BITMIME)
		c->ext_8bit = 1;
	if (ext & MTA_EXT_SMTPUTF8)
		c->ext_utf8 = 1;
	if (ext & MTA_EXT_STARTTLS)
		c->ext_tls = 1;
	if (ext & MTA_EXT_DSN)
		c->ext_dsn = 1;
	if (ext & MTA_EXT_CHUNKING)
		c->ext_chunk = 1;
	if (ext & MTA_EXT_BINARYMIME)
		c->ext_binary = 1;
	if (ext & MTA_EXT_SIZE) {
		c->ext_size = 1;
		c->maxsize = size;
	}
	if (ext & MTA_EXT_AUTH_PLAIN)
		c->ext_plain = 1;
	if (ext & MTA_EXT_AUTH_LOGIN)
		c->ext_login = 1;
}

/* ---- sending ----------------------------------------------------------------- */

static void
mta_send(struct mta_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
mta_send(struct mta_conn *c, const char *fmt, ...)
{
	struct buf b;
	va_list ap;

	/* One piece per command: under TLS each piece becomes a record. */
	buf_init(&b);
	va_start(ap, fmt);
	buf_vprintf(&b, fmt, ap);
	va_end(ap);
	buf_append(&b, "\r\n", 2);
	bufferevent_write(c->bev, b.data, b.len);
	buf_free(&b);
}

static void
mta_timeout(struct mta_conn *c, int secs)
{
	struct timeval tv = { secs, 0 };

	bufferevent_set_timeouts(c->bev, &tv, &tv);
}

/* ---- job outcome --------------------------------------------------------------- */

static void
mta_job_free(struct mta_job *j)
{
	struct mta_job **pp;
	size_t i;

	for (pp = &mta.jobs; *pp; pp = &(*pp)->next)
		if (*pp == j) {
			*pp = j->next;
			break;
		}
	for (i = 0; i < 2; i++)
		if (j->dq[i])
			dns_cancel(j->dq[i]);
	for (i = 0; i < j->nr; i++) {
		free(j->r[i].addr);
		free(j->r[i].orcpt);
	}
	free(j->r);
	free(j->envid);
	free(j->hosts);
	free(j->sender);
	if (j->fd >= 0)
		close(j->fd);
	free(j);
}

static void
mta_job_done(struct mta_job *j)
{
	struct buf b;
	size_t i;

	/* Closed before the report: the queue reuses a message's file only
	   when nobody holds it open any more. */
	if (j->fd >= 0)
		close(j->fd);
	j->fd = -1;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, j->id);
	rec_put_str(&b, T_RELAY, j->relay[0] ? j->relay : "none");
	rec_put_str(&b, T_TLS, j->tlsinfo);
	/* LMTP is final delivery (RFC 2033): the reports stay ours. */
	if (j->route != NULL && j->route->lmtp)
		rec_put_u64(&b, T_DSN, 2);
	else if (j->dsnpassed)
		rec_put_u64(&b, T_DSN, 1);
	for (i = 0; i < j->nr; i++) {
		struct mta_rcpt *r = &j->r[i];

		if (r->status == -1) {
			r->status = j->lasttemp || j->lasterr[0] == '\0' ?
			    MTA_TEMP : MTA_PERM;
			str_copy(r->reply, j->lasterr[0] ? j->lasterr :
			    "delivery not attempted", sizeof(r->reply));
		}
		rec_put_str(&b, T_RCPT, r->addr);
		rec_put_u64(&b, T_STATUS, (uint64_t)r->status);
		rec_put_str(&b, T_TEXT, r->reply);
	}
	if (j->q)
		ipc_send(j->q, IMSG_M_RESULT, b.data, b.len, -1);
	buf_free(&b);
	if (j->conn)
		j->conn->job = NULL;
	mta_job_free(j);
}

/* Every recipient without an outcome gets this one. */
static void
mta_fail_all(struct mta_job *j, int status, const char *text)
{
	size_t i;

	for (i = 0; i < j->nr; i++)
		if (j->r[i].status == -1) {
			j->r[i].status = status;
			str_copy(j->r[i].reply, text, sizeof(j->r[i].reply));
		}
}

static void
mta_lasterr(struct mta_job *j, int temp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
mta_lasterr(struct mta_job *j, int temp, const char *fmt, ...)
{
	char raw[MTA_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	log_sanitize(j->lasterr, raw, sizeof(j->lasterr));
	j->lasttemp = temp;
}

/* ---- connections ----------------------------------------------------------------- */

/* A route's credentials live only while a connection logs in. */
static void
mta_creds_wipe(struct mta_conn *c)
{
	if (c->authuser) {
		explicit_bzero(c->authuser, strlen(c->authuser));
		free(c->authuser);
		c->authuser = NULL;
	}
	if (c->authpass) {
		explicit_bzero(c->authpass, strlen(c->authpass));
		free(c->authpass);
		c->authpass = NULL;
	}
}

static void
mta_conn_free(struct mta_conn *c)
{
	struct mta_conn **pp;

	for (pp = &mta.idle; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	if (c->idle)
		event_free(c->idle);
	if (c->bev)
		bufferevent_free(c->bev);
	if (c->job && c->job->conn == c)
		c->job->conn = NULL;
	if (mta.inreply == c)
		mta.inreply = NULL;
	mta.nconns--;
	mta_creds_wipe(c);
	free(c);
}

/* The host failed before any transaction was committed: try the next. */
static void
mta_conn_abandon(struct mta_conn *c, int temp, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
mta_conn_abandon(struct mta_conn *c, int temp, const char *fmt, ...)
{
	struct mta_job *j = c->job;
	char raw[MTA_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (j) {
		mta_lasterr(j, temp, "%s", raw);
		log_info("q=%s event=mta relay=%s result=fail reason=\"%s\"",
		    j->qid, c->relay, log_q(j->lasterr));
		j->conn = NULL;
		if (j->reusing) {
			/* A kept connection died: the host gets a fresh one. */
			j->reusing = 0;
			j->noreuse = 1;
			j->hi--;
		}
	}
	c->job = NULL;
	mta_conn_free(c);
	if (j)
		mta_next_addr(j);
}

static void
mta_idle_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct mta_conn *c = arg;

	mta_send(c, "QUIT");
	c->st = C_QUIT;
	mta_timeout(c, 5);
	bufferevent_flush(c->bev, EV_WRITE, BEV_NORMAL);
	/* Freed on EOF or timeout; no reply matters now. */
	{
		struct mta_conn **pp;

		for (pp = &mta.idle; *pp; pp = &(*pp)->next)
			if (*pp == c) {
				*pp = c->next;
				break;
			}
	}
}

static void
mta_conn_park(struct mta_conn *c)
{
	long long ms = conf_num(mta.conf, NULL, K_CONNECTION_IDLE);
	long long most = conf_num(mta.conf, NULL, K_CONNECTION_MESSAGES);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	const struct shape *s = conf_find_shape(mta.conf, c->host);

	if (s == NULL && c->job)
		s = conf_find_shape(mta.conf, c->job->domain);
	if (s && s->mpc)
		most = s->mpc;
	c->job = NULL;
	if (c->msgs >= most) {
		mta_idle_timeout(-1, 0, c);
		return;
	}
	c->st = C_IDLE;
	c->next = mta.idle;
	mta.idle = c;
	if (c->idle == NULL)
		c->idle = evtimer_new(mta.base, mta_idle_timeout, c);
	evtimer_add(c->idle, &tv);
	mta_timeout(c, (int)(ms / 1000) + 5);
}

/*
 * A kept connection serves only jobs with the same route: the TLS level it
 * reached and the AUTH identity it holds were decided by that policy.
 */
static struct mta_conn *
mta_conn_reuse(const char *key, const struct route *route)
{
	struct mta_conn **pp, *c;

	for (pp = &mta.idle; (c = *pp) != NULL; pp = &c->next)
		if (strcmp(c->key, key) == 0 && c->route == route) {
			*pp = c->next;
			evtimer_del(c->idle);
			return c;
		}
	return NULL;
}

static int
mta_tls_wanted(const struct mta_job *j)
{
	return j->route ? j->route->tls : (strcmp(conf_str(mta.conf,
	    K_TLS_VERIFY), "yes") == 0 ? ROUTE_TLS_VERIFY :
	    ROUTE_TLS_OPPORTUNISTIC);
}

static void
mta_ehlo(struct mta_conn *c)
{
	c->ext_pipe = c->ext_8bit = c->ext_utf8 = c->ext_tls = 0;
	c->ext_size = 0;
	c->ext_plain = c->ext_login = 0;
	c->ext_dsn = c->ext_chunk = c->ext_binary = 0;
	c->maxsize = 0;
	mta_send(c, "%s %s", mta_lmtp(c) ? "LHLO" : "EHLO",
	    conf_str(mta.conf, K_HOSTNAME));
	c->st = C_EHLO;
	mta_timeout(c, TO_EHLO);
}

static int
mta_b64(const char *in, size_t len, char *out, size_t outlen)
{
	if (outlen < 4 * ((len + 2) / 3) + 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)in,
	    (int)len);
	return 0;
}

static void
mta_auth(struct mta_conn *c)
{
	char raw[600], enc[900];
	size_t ul = strlen(c->authuser), pl = strlen(c->authpass);

	if (c->ext_plain && ul + pl + 2 < sizeof(raw)) {
		raw[0] = '\0';
		memcpy(raw + 1, c->authuser, ul);
		raw[1 + ul] = '\0';
		memcpy(raw + 2 + ul, c->authpass, pl);
		if (mta_b64(raw, ul + pl + 2, enc, sizeof(enc)) == 0) {
			mta_send(c, "AUTH PLAIN %s", enc);
			explicit_bzero(raw, sizeof(raw));
			explicit_bzero(enc, sizeof(enc));
			c->st = C_AUTH;
			mta_timeout(c, TO_MAIL);
			return;
		}
	}
	if (c->ext_login) {
		mta_send(c, "AUTH LOGIN");
		c->st = C_AUTH_USER;
		mta_timeout(c, TO_MAIL);
		return;
	}
	mta_conn_abandon(c, 1, "%s offers no AUTH PLAIN or LOGIN", c->host);
}

static void
mta_auth_step(struct mta_conn *c, const char *secret)
{
	char enc[900];

	if (mta_b64(secret, strlen(secret), enc, sizeof(enc)) == -1) {
		mta_conn_abandon(c, 1, "AUTH credentials too long");
		return;
	}
	mta_send(c, "%s", enc);
	explicit_bzero(enc, sizeof(enc));
	c->st = c->st == C_AUTH_USER ? C_AUTH_PASS : C_AUTH;
}

static struct mta_conn *
mta_conn_by_id(uint64_t id)
{
	struct mta_job *j;

	for (j = mta.jobs; j; j = j->next)
		if (j->conn && j->conn->id == id)
			return j->conn;
	return NULL;
}

/* The vault's answer: the route's credentials for this connection. */
static void
mta_creds_done(uint64_t cookie, int status, const char *user,
    const char *pass)
{
	struct mta_conn *c = mta_conn_by_id(cookie);

	if (c == NULL || c->st != C_CREDS)
		return;
	if (status != VAULT_OK || user == NULL || pass == NULL) {
		mta_conn_abandon(c, 1, "no credentials for the route to %s%s",
		    c->host, status == VAULT_TEMP ? " (vault unavailable)" :
		    "");
		return;
	}
	c->authuser = xstrdup(user);
	c->authpass = xstrdup(pass);
	mta_auth(c);
}

/* Credentials come from the vault, for this connection only. */
static void
mta_creds(struct mta_conn *c)
{
	static uint64_t nextid;

	c->id = ++nextid;
	if (vault_route_auth(c->job->route->authfile, mta_creds_done,
	    c->id) == -1) {
		mta_conn_abandon(c, 1, "no credentials for the route to %s "
		    "(vault unavailable)", c->host);
		return;
	}
	c->st = C_CREDS;
}

/* After EHLO (or HELO, or TLS): TLS, then AUTH, then the transaction. */
static void
mta_ready(struct mta_conn *c)
{
	struct mta_job *j = c->job;
	int want = mta_tls_wanted(j);

	if (!c->tls && !c->notls && c->ext_tls && want != ROUTE_TLS_NONE) {
		mta_send(c, "STARTTLS");
		c->st = C_STARTTLS;
		mta_timeout(c, TO_EHLO);
		return;
	}
	if (!c->tls && (want == ROUTE_TLS_REQUIRED || want == ROUTE_TLS_VERIFY)) {
		mta_conn_abandon(c, 1, "TLS is required, but %s does not offer "
		    "STARTTLS", c->host);
		return;
	}
	if (j->route && j->route->authfile && !c->authed) {
		if (c->authuser == NULL)
			mta_creds(c);
		else
			mta_auth(c);
		return;
	}
	mta_start_txn(c);
}

static void
mta_tls_record(struct mta_conn *c)
{
	SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
	long v = SSL_get_verify_result(ssl);

	snprintf(c->tlsinfo, sizeof(c->tlsinfo), "%s %s verified=%s",
	    SSL_get_version(ssl), SSL_get_cipher_name(ssl),
	    v == X509_V_OK ? "yes" : "no");
	log_info("q=%s event=tls relay=%s protocol=%s cipher=%s verified=%s%s%s",
	    c->job ? c->job->qid : "-", c->relay, SSL_get_version(ssl),
	    SSL_get_cipher_name(ssl), v == X509_V_OK ? "yes" : "no",
	    v == X509_V_OK ? "" : " reason=", v == X509_V_OK ? "" :
	    X509_verify_cert_error_string(v));
}

static void
mta_starttls(struct mta_conn *c)
{
	struct bufferevent *tb;
	SSL *ssl;
	int want = mta_tls_wanted(c->job);

	/* RFC 3207: nothing may follow the 220; anything that does is junk. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
		mta_conn_abandon(c, 1, "%s sent data after its STARTTLS reply",
		    c->host);
		return;
	}
	if ((ssl = SSL_new(mta.ctx)) == NULL) {
		mta_conn_abandon(c, 1, "cannot create a TLS session");
		return;
	}
	SSL_set_tlsext_host_name(ssl, c->host);
	SSL_set1_host(ssl, c->host);
	SSL_set_verify(ssl, want == ROUTE_TLS_VERIFY ? SSL_VERIFY_PEER :
	    SSL_VERIFY_NONE, NULL);
	tb = bufferevent_openssl_filter_new(mta.base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE |
	    BEV_OPT_DEFER_CALLBACKS);
	if (tb == NULL) {
		SSL_free(ssl);
		mta_conn_abandon(c, 1, "cannot start TLS");
		return;
	}
	c->bev = tb;
	bufferevent_setcb(tb, mta_readcb, mta_writecb, mta_eventcb, c);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	c->st = C_TLS;
	mta_timeout(c, TO_EHLO);
}

/* ---- the transaction ----------------------------------------------------------- */

/*
 * An address as it goes out: canonical (quoted only where it must be),
 * and for a peer without SMTPUTF8 with A-labels (RFC 6531 3.2).  The
 * job keeps the queue's spelling, which names it in the results.
 */
static const char *
mta_wire(const struct mta_conn *c, const char *a, char *w, size_t len)
{
	int r;

	if (*a == '\0')
		return a;
	r = c->ext_utf8 ? addr_canon(a, ADDR_F_UTF8, w, len, NULL) :
	    addr_ascii(a, w, len);
	return r == 0 ? w : a;	/* checked when the job came */
}

static void
mta_send_rcpt(struct mta_conn *c, size_t i)
{
	struct mta_rcpt *r = &c->job->r[i];
	char w[ADDR_STR_MAX];
	struct buf p;

	buf_init(&p);
	buf_puts(&p, "");
	if (c->ext_dsn)
		esmtp_rcpt_print(&p, r->notify, r->orcpt);
	mta_send(c, "RCPT TO:<%s>%s", mta_wire(c, r->addr, w, sizeof(w)),
	    p.data);
	buf_free(&p);
	c->sent_rcpts = i + 1;
}

/*
 * Does the header of an SMTPUTF8 message carry UTF-8?  Then a peer without
 * SMTPUTF8 must not get it (RFC 6531 3.5); an all-ASCII one may, without
 * the parameter.  A header beyond 64 KiB or unreadable counts as UTF-8.
 */
static int
mta_header8(struct mta_job *j)
{
	char h[65536];
	ssize_t n;
	size_t i;

	if ((n = pread(j->fd, h, sizeof(h), 0)) <= 0)
		return 1;
	for (i = 0; i < (size_t)n; i++) {
		if ((unsigned char)h[i] >= 0x80)
			return 1;
		if (h[i] == '\n' && i + 2 < (size_t)n && h[i + 1] == '\r' &&
		    h[i + 2] == '\n')
			return 0;
	}
	return 1;
}

/*
 * The body of a BINARYMIME message goes in one BDAT ... LAST chunk, as
 * it is in the spool: no dot-stuffing, no end-of-data line.
 */
static void
mta_send_bdat(struct mta_conn *c)
{
	struct stat st;

	if (fstat(c->job->fd, &st) == -1) {
		mta_conn_abandon(c, 1, "local error reading the message: %s",
		    strerror(errno));
		return;
	}
	mta_send(c, "BDAT %lld LAST", (long long)st.st_size);
	mta_body_start(c);
}

/*
 * After the last RCPT reply: the body's command, or -1 when no
 * recipient was accepted.  c may be gone when it returns 0.
 */
static int
mta_send_body_cmd(struct mta_conn *c)
{
	if (!c->accepted)
		return -1;
	if (c->bdat) {
		mta_send_bdat(c);
		return 0;
	}
	mta_send(c, "DATA");
	mta_timeout(c, TO_DATA);
	return 0;
}

static void
mta_start_txn(struct mta_conn *c)
{
	struct mta_job *j = c->job;
	char params[80] = "", w[ADDR_STR_MAX];
	size_t i;

	str_copy(j->relay, c->relay, sizeof(j->relay));
	str_copy(j->tlsinfo, c->tls ? c->tlsinfo : "none", sizeof(j->tlsinfo));
	/* Outcomes of a transaction that never ended are not outcomes: the
	   new one decides every recipient again (else one it delivers could
	   be reported deferred, and sent twice). */
	for (i = 0; i < j->nr; i++)
		j->r[i].status = -1;
	if (c->maxsize > 0 && j->size > (uint64_t)c->maxsize) {
		char t[MTA_TEXT];

		snprintf(t, sizeof(t), "552 5.3.4 message size %llu exceeds "
		    "the limit of %lld bytes at %s", (unsigned long long)j->size,
		    c->maxsize, c->host);
		mta_fail_all(j, MTA_PERM, t);
		mta_conn_park(c);
		mta_job_done(j);
		return;
	}
	/* RFC 3030: binary goes by BDAT, to a peer that says it takes it. */
	if (j->body8 == 2 && (!c->ext_chunk || !c->ext_binary)) {
		mta_fail_all(j, MTA_PERM, "554 5.6.3 the destination does not "
		    "support BINARYMIME and CHUNKING, which this message needs");
		mta_conn_park(c);
		mta_job_done(j);
		return;
	}
	c->bdat = j->body8 == 2;
	if (!c->ext_utf8 && (j->eai || (j->utf8 && mta_header8(j)))) {
		mta_fail_all(j, MTA_PERM, "553 5.6.7 the destination does not "
		    "support SMTPUTF8, which this message needs");
		mta_conn_park(c);
		mta_job_done(j);
		return;
	}
	if (c->ext_size)
		snprintf(params, sizeof(params), " SIZE=%llu",
		    (unsigned long long)j->size);
	if (j->body8 && c->ext_8bit)
		str_copy(params + strlen(params), j->body8 == 2 ?
		    " BODY=BINARYMIME" : " BODY=8BITMIME",
		    sizeof(params) - strlen(params));
	if ((j->utf8 || j->eai) && c->ext_utf8)
		str_copy(params + strlen(params), " SMTPUTF8",
		    sizeof(params) - strlen(params));
	j->dsnpassed = c->ext_dsn;
	c->msgs++;
	c->dirty = 1;
	c->replies = 0;
	c->accepted = 0;
	c->mail_code = 0;
	c->sent_rcpts = 0;
	if (c->ext_dsn) {
		struct buf e;

		buf_init(&e);
		buf_puts(&e, "");
		esmtp_mail_print(&e, j->ret, j->envid);
		mta_send(c, "MAIL FROM:<%s>%s%s",
		    mta_wire(c, j->sender, w, sizeof(w)), params, e.data);
		buf_free(&e);
	} else
		mta_send(c, "MAIL FROM:<%s>%s",
		    mta_wire(c, j->sender, w, sizeof(w)), params);
	if (c->ext_pipe) {
		/* RFC 2920: the whole envelope and DATA in one write. */
		for (i = 0; i < j->nr; i++)
			mta_send_rcpt(c, i);
		if (!c->bdat)
			mta_send(c, "DATA");
	}
	c->st = C_TXN;
	mta_timeout(c, TO_MAIL);
}

static void
mta_rcpt_outcome(struct mta_conn *c, size_t i, int code)
{
	struct mta_rcpt *r = &c->job->r[i];

	if (code / 100 == 2) {
		c->accepted++;
		return;
	}
	r->status = code / 100 == 4 ? MTA_TEMP : MTA_PERM;
	str_copy(r->reply, c->text, sizeof(r->reply));
}

static void
mta_body_refill(struct mta_conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	char in[MTA_CHUNK], *o;
	ssize_t n, i;
	size_t k = 0;

	n = pread(c->job->fd, in, sizeof(in), c->off);
	if (n < 0) {
		mta_conn_abandon(c, 1, "local error reading the message: %s",
		    strerror(errno));
		return;
	}
	if (n == 0) {
		/* The spool holds CRLF lines, so the end is always a line end. */
		if (!c->bol && !c->bdat)
			evbuffer_add(out, "\r\n", 2);
		if (!c->bdat)
			evbuffer_add(out, ".\r\n", 3);
		c->st = C_DOT;
		mta_timeout(c, TO_DOT);
		return;
	}
	o = xmalloc((size_t)n * 2);
	for (i = 0; i < n; i++) {
		if (c->bol && in[i] == '.' && !c->bdat)
			o[k++] = '.';	/* dot-stuffing, RFC 5321 4.5.2 */
		o[k++] = in[i];
		c->bol = in[i] == '\n';
	}
	evbuffer_add(out, o, k);
	free(o);
	c->off += n;
}

static void
mta_body_start(struct mta_conn *c)
{
	c->st = C_BODY;
	c->off = 0;
	c->bol = 1;
	bufferevent_setwatermark(c->bev, EV_WRITE, MTA_CHUNK / 2, 0);
	mta_timeout(c, TO_BLOCK);
	mta_body_refill(c);
}

/* One reply inside the (possibly pipelined) MAIL/RCPT/DATA exchange. */
static void
mta_txn_reply(struct mta_conn *c)
{
	struct mta_job *j = c->job;
	size_t idx = c->replies++;

	if (idx == 0) {
		c->mail_code = c->code;
		if (c->code / 100 != 2)
			mta_fail_all(j, c->code / 100 == 4 ? MTA_TEMP : MTA_PERM,
			    c->text);
		if (!c->ext_pipe) {
			if (c->code / 100 != 2)
				goto finished;
			mta_send_rcpt(c, 0);
			mta_timeout(c, TO_RCPT);
		}
		return;
	}
	if (idx <= j->nr) {
		if (c->mail_code / 100 == 2)
			mta_rcpt_outcome(c, idx - 1, c->code);
		if (c->ext_pipe && c->bdat && idx == j->nr) {
			/* BDAT waits for the recipients' replies. */
			if (mta_send_body_cmd(c) == -1)
				goto finished;
			return;
		}
		if (!c->ext_pipe && idx < j->nr) {
			mta_send_rcpt(c, idx);
			mta_timeout(c, TO_RCPT);
		} else if (!c->ext_pipe && mta_send_body_cmd(c) == -1)
			goto finished;
		return;
	}
	/* The DATA reply. */
	if (c->code == 354 && c->accepted > 0 && c->mail_code / 100 == 2) {
		mta_body_start(c);
		return;
	}
	if (c->code == 354 && mta_lmtp(c)) {
		/* An LMTP server answers an empty message with nothing. */
		mta_fail_all(j, MTA_TEMP, "no recipient accepted");
		c->job = NULL;
		j->conn = NULL;
		mta_conn_free(c);
		mta_job_done(j);
		return;
	}
	if (c->code == 354) {
		/* Nothing to send after all (RFC 2920 3.1): end it empty. */
		mta_send(c, ".");
		c->st = C_DOT;
		c->accepted = 0;
		mta_timeout(c, TO_DOT);
		return;
	}
	if (c->accepted)
		mta_fail_all(j, c->code / 100 == 4 ? MTA_TEMP : MTA_PERM,
		    c->text);
finished:
	mta_fail_all(j, MTA_TEMP, "no recipient accepted");
	mta_conn_park(c);
	mta_job_done(j);
}

/*
 * LMTP (RFC 2033 4.2): after the final dot, one reply per recipient that
 * RCPT accepted, in the order of the RCPTs.  The connection is done when
 * the last has come.  0 while more are due.
 */
static int
mta_lmtp_dot_reply(struct mta_conn *c)
{
	struct mta_job *j = c->job;
	size_t i;

	for (i = 0; i < j->nr && j->r[i].status != -1; i++)
		;
	if (i < j->nr) {
		j->r[i].status = c->code / 100 == 2 ? MTA_OK :
		    c->code / 100 == 4 ? MTA_TEMP : MTA_PERM;
		str_copy(j->r[i].reply, c->text, sizeof(j->r[i].reply));
	}
	if (c->accepted > 0)
		c->accepted--;
	return c->accepted == 0 || i >= j->nr;
}

static void
mta_dot_reply(struct mta_conn *c)
{
	struct mta_job *j = c->job;

	if (mta_lmtp(c) && c->accepted > 0 && !mta_lmtp_dot_reply(c))
		return;
	c->dirty = 0;
	bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
	if (c->accepted)
		mta_fail_all(j, c->code / 100 == 2 ? MTA_OK : c->code / 100 == 4 ?
		    MTA_TEMP : MTA_PERM, c->text);
	else
		mta_fail_all(j, MTA_TEMP, "no recipient accepted");
	mta_conn_park(c);
	mta_job_done(j);
}

/*
 * A 421, wherever it comes: the host closes the channel and asks us to
 * wait.  The job ends here, every recipient without an outcome deferred
 * with the host's own words (the queue reads them as a throttle), and
 * neither this host nor the next is tried at once.
 */
static void
mta_conn_stop(struct mta_conn *c)
{
	struct mta_job *j = c->job;

	mta_lasterr(j, 1, "%s", c->text);
	log_info("q=%s event=mta relay=%s result=throttled reason=\"%s\"",
	    j->qid, c->relay, log_q(j->lasterr));
	mta_fail_all(j, MTA_TEMP, j->lasterr);
	if (j->relay[0] == '\0')
		str_copy(j->relay, c->relay, sizeof(j->relay));
	c->job = NULL;
	j->conn = NULL;
	mta_conn_free(c);
	mta_job_done(j);
}

/* A whole reply has arrived: act on it according to the state. */
static void
mta_reply(struct mta_conn *c)
{
	int ok = c->code / 100 == 2;

	if (c->code == 421 && c->job && c->st != C_QUIT) {
		mta_conn_stop(c);
		return;
	}
	switch (c->st) {
	case C_GREETING:
		if (!ok) {
			mta_conn_abandon(c, c->code / 100 != 5,
			    "host %s greeted: %s", c->host, c->text);
			return;
		}
		mta_ehlo(c);
		return;
	case C_EHLO:
		if (ok) {
			mta_ready(c);
			return;
		}
		if (mta_lmtp(c)) {
			mta_conn_abandon(c, c->code / 100 != 5, "host %s refused "
			    "LHLO: %s", c->host, c->text);
			return;
		}
		mta_send(c, "HELO %s", conf_str(mta.conf, K_HOSTNAME));
		c->st = C_HELO;
		return;
	case C_HELO:
		if (!ok) {
			mta_conn_abandon(c, c->code / 100 != 5, "host %s refused "
			    "HELO: %s", c->host, c->text);
			return;
		}
		mta_ready(c);
		return;
	case C_STARTTLS:
		if (c->code == 220) {
			mta_starttls(c);
			return;
		}
		c->ext_tls = 0;		/* refused: go on without, if allowed */
		mta_ready(c);
		return;
	case C_AUTH:
		if (c->code != 235) {
			mta_conn_abandon(c, 1, "authentication at %s failed: %s",
			    c->host, c->text);
			return;
		}
		c->authed = 1;
		mta_creds_wipe(c);
		mta_start_txn(c);
		return;
	case C_AUTH_USER:
	case C_AUTH_PASS:
		if (c->code != 334) {
			mta_conn_abandon(c, 1, "authentication at %s failed: %s",
			    c->host, c->text);
			return;
		}
		mta_auth_step(c, c->st == C_AUTH_USER ? c->authuser :
		    c->authpass);
		return;
	case C_RSET:
		if (!ok) {
			mta_conn_abandon(c, 1, "RSET refused");
			return;
		}
		c->dirty = 0;
		mta_start_txn(c);
		return;
	case C_TXN:
		mta_txn_reply(c);
		return;
	case C_DOT:
		mta_dot_reply(c);
		return;
	case C_QUIT:
	case C_IDLE:
	case C_CREDS:
	case C_CONNECT:
	case C_TLS:
	case C_BODY:
		/* Unsolicited: a server talking out of turn is dropped. */
		if (c->job)
			mta_conn_abandon(c, 1, "unexpected reply from %s: %s",
			    c->host, c->text);
		else
			mta_conn_free(c);
		return;
	}
}

static void
mta_readcb(struct bufferevent *bev, void *arg)
{
	struct mta_conn *c = arg;
	struct evbuffer *in;
	char *line;
	size_t len;
	int code, more, guard;

	for (guard = 0; guard < 1000; guard++) {
		/* STARTTLS may have replaced the bufferevent: ask each time. */
		in = bufferevent_get_input(c->bev);
		line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
		if (line == NULL) {
			if (evbuffer_get_length(in) > MTA_LINE_MAX) {
				if (c->job)
					mta_conn_abandon(c, 1, "reply line from "
					    "%s too long", c->host);
				else
					mta_conn_free(c);
			}
			return;
		}
		if (mta_reply_line(line, len, &code, &more) == -1 ||
		    (c->lines > 0 && code != c->code) ||
		    ++c->lines > MTA_REPLY_LINES || len > MTA_LINE_MAX) {
			free(line);
			if (c->job)
				mta_conn_abandon(c, 1, "malformed reply from %s",
				    c->host);
			else
				mta_conn_free(c);
			return;
		}
		if (c->lines == 1) {
			c->code = code;
			c->text[0] = '\0';
		}
		if (c->st == C_EHLO && c->lines > 1 && len > 4)
			mta_ehlo_line(c, line + 4);
		if (c->lines <= 3)
			mta_text_add(c, line);
		free(line);
		if (more)
			continue;
		c->lines = 0;
		/* Pipelined replies come together: go on while c lives. */
		mta.inreply = c;
		mta_reply(c);
		if (mta.inreply != c)
			return;
		mta.inreply = NULL;
		if (c->st == C_TLS || c->st == C_BODY)
			return;
	}
}

static void
mta_writecb(struct bufferevent *bev, void *arg)
{
	struct mta_conn *c = arg;

	if (c->st == C_BODY)
		mta_body_refill(c);
}

static const char *
mta_state_name(enum cstate st)
{
	static const char *n[] = { "connect", "greeting", "EHLO", "HELO",
	    "STARTTLS", "TLS handshake", "AUTH", "AUTH", "AUTH", "idle",
	    "RSET", "MAIL/RCPT/DATA", "message data", "end of data", "QUIT" };

	return n[st];
}

static void
mta_eventcb(struct bufferevent *bev, short what, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();	/* before anything resets it */
	struct mta_conn *c = arg;
	struct mta_job *j = c->job;

	if (what & BEV_EVENT_CONNECTED) {
		if (c->st == C_TLS) {
			c->tls = 1;
			mta_tls_record(c);
			mta_ehlo(c);
			return;
		}
		c->st = C_GREETING;
		mta_timeout(c, TO_GREETING);
		return;
	}
	if (j == NULL) {
		mta_conn_free(c);
		return;
	}
	if (c->st == C_TLS && mta_tls_wanted(j) == ROUTE_TLS_OPPORTUNISTIC) {
		/* Opportunistic TLS that fails is retried in plain text. */
		unsigned long e = bufferevent_get_openssl_error(bev);

		log_info("q=%s event=tls relay=%s result=fail reason=\"%s\" "
		    "action=retry-plain", j->qid, c->relay,
		    log_q(e ? ERR_reason_error_string(e) : "handshake failed"));
		j->notls = 1;
		j->ai--;
		c->job = NULL;
		j->conn = NULL;
		mta_conn_free(c);
		mta_next_addr(j);
		return;
	}
	if (c->st == C_DOT) {
		/* The data went; its fate did not come back.  Retry later. */
		mta_lasterr(j, 1, "lost connection with %s after end of data",
		    c->relay);
		c->job = NULL;
		j->conn = NULL;
		mta_conn_free(c);
		mta_job_done(j);
		return;
	}
	mta_conn_abandon(c, 1, "%s with %s while in %s%s%s",
	    (what & BEV_EVENT_TIMEOUT) ? "timeout" : (what & BEV_EVENT_EOF) ?
	    "lost connection" : c->st == C_CONNECT ? "cannot connect" :
	    "connection error", c->relay, mta_state_name(c->st),
	    (what & BEV_EVENT_ERROR) && err && !c->tls && c->st != C_TLS ?
	    ": " : "",
	    (what & BEV_EVENT_ERROR) && err && !c->tls && c->st != C_TLS ?
	    evutil_socket_error_to_string(err) : "");
}

/* ---- routing -------------------------------------------------------------------- */

static void
mta_format_relay(const struct mta_host *h, const struct sockaddr_storage *ss,
    char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_UNIX) {
		snprintf(out, len, "unix:%s", h->name);
		return;
	}
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr,
		    a, sizeof(a));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->
		    sin6_addr, a, sizeof(a));
	snprintf(out, len, "%s[%s]:%d", h->name, a, h->port);
}

static void
mta_connect(struct mta_job *j, const struct sockaddr_storage *ss)
{
	struct mta_host *h = &j->hosts[j->hi - 1];
	struct mta_conn *c = xcalloc(1, sizeof(*c));
	struct sockaddr_storage sa = *ss;
	socklen_t salen;
	long long ms = conf_num(mta.conf, NULL, K_CONNECT_TIMEOUT);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	mta.nconns++;
	j->reusing = 0;
	c->job = j;
	j->conn = c;
	c->notls = j->notls;
	j->notls = 0;
	str_copy(c->host, h->name, sizeof(c->host));
	c->route = j->route;
	snprintf(c->key, sizeof(c->key), "%s:%d", h->name, h->port);
	mta_format_relay(h, ss, c->relay, sizeof(c->relay));
	if (sa.ss_family == AF_UNIX)
		salen = sizeof(struct sockaddr_un);
	else if (sa.ss_family == AF_INET) {
		((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)h->port);
		salen = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)h->port);
		salen = sizeof(struct sockaddr_in6);
	}
	c->st = C_CONNECT;
	c->bev = bufferevent_socket_new(mta.base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(c->bev, mta_readcb, mta_writecb, mta_eventcb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	log_debug("q=%s event=mta-connect relay=%s", j->qid, c->relay);
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sa,
	    (int)salen) == -1) {
		mta_conn_abandon(c, 1, "cannot connect to %s: %s", c->relay,
		    strerror(errno));
		return;
	}
	/* Commands and the final dot are small: do not wait for ACKs. */
	{
		int on = 1;

		setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY,
		    &on, sizeof(on));
	}
}

static void
mta_next_addr(struct mta_job *j)
{
	if (j->ai < j->naddrs) {
		mta_connect(j, &j->addrs[j->ai++]);
		return;
	}
	mta_next_host(j);
}

static void
mta_addr_result(struct mta_job *j, int which, const struct dns_result *res)
{
	size_t i;

	j->dq[which] = NULL;
	j->pending--;
	if (res->status == DNS_OK)
		for (i = 0; i < res->naddr && j->naddrs < 16; i++)
			j->addrs[j->naddrs++] = res->addr[i];
	else if (res->status == DNS_TEMPFAIL)
		mta_lasterr(j, 1, "DNS lookup of %s failed: %s",
		    j->hosts[j->hi - 1].name, res->why ? res->why :
		    "temporary failure");
	if (j->pending > 0)
		return;
	if (j->naddrs == 0 && j->lasterr[0] == '\0')
		mta_lasterr(j, 1, "host %s has no address",
		    j->hosts[j->hi - 1].name);
	mta_next_addr(j);
}

static void
mta_aaaa_cb(const struct dns_result *res, void *arg)
{
	mta_addr_result(arg, 0, res);
}

static void
mta_a_cb(const struct dns_result *res, void *arg)
{
	mta_addr_result(arg, 1, res);
}

/* An address literal needs no lookup. */
static int
mta_literal(const char *host, struct sockaddr_storage *ss)
{
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		return 1;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		return 1;
	}
	return 0;
}

static void
mta_next_host(struct mta_job *j)
{
	struct mta_conn *c;
	struct mta_host *h;
	char key[300];

	if (j->hi >= j->nhosts) {
		mta_job_done(j);
		return;
	}
	h = &j->hosts[j->hi++];
	snprintf(key, sizeof(key), "%s:%d", h->name, h->port);
	if (!j->noreuse && (c = mta_conn_reuse(key, j->route)) != NULL) {
		j->reusing = 1;
		log_debug("q=%s event=mta-reuse relay=%s", j->qid, c->relay);
		c->job = j;
		j->conn = c;
		if (c->dirty) {
			mta_send(c, "RSET");
			c->st = C_RSET;
			mta_timeout(c, TO_MAIL);
			return;
		}
		mta_start_txn(c);
		return;
	}
	j->naddrs = j->ai = 0;
	if (j->route && j->route->path) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&j->addrs[0];

		memset(sun, 0, sizeof(*sun));
		sun->sun_family = AF_UNIX;
		str_copy(sun->sun_path, j->route->path, sizeof(sun->sun_path));
		j->naddrs = 1;
		mta_next_addr(j);
		return;
	}
	if (mta_literal(h->name, &j->addrs[0])) {
		j->naddrs = 1;
		mta_next_addr(j);
		return;
	}
	j->pending = 2;
	j->dq[0] = dns_lookup(h->name, DNS_AAAA, mta_aaaa_cb, j);
	j->dq[1] = dns_lookup(h->name, DNS_A, mta_a_cb, j);
	if (j->dq[0] == NULL)
		j->pending--;
	if (j->dq[1] == NULL)
		j->pending--;
	if (j->pending == 0) {
		mta_lasterr(j, 0, "invalid host name %s", h->name);
		mta_next_host(j);
	}
}

static void
mta_add_host(struct mta_job *j, const char *name, int port)
{
	j->hosts = xreallocarray(j->hosts, j->nhosts + 1, sizeof(*j->hosts));
	str_copy(j->hosts[j->nhosts].name, name, sizeof(j->hosts->name));
	j->hosts[j->nhosts++].port = port;
}

/*
 * RFC 5321 5.1: hosts of equal preference are tried in random order, so
 * load spreads over them.  hosts[] follows res->mx[] (sorted), minus
 * null entries, which only a lone null MX has.
 */
static void
mta_shuffle_equal(struct mta_job *j, const struct dns_result *res)
{
	size_t a, b, k;
	uint32_t r;

	if (j->nhosts != res->nmx || j->nhosts > 16)
		return;
	for (a = 0; a < j->nhosts; a = b) {
		for (b = a + 1; b < j->nhosts && res->mx[b].pref ==
		    res->mx[a].pref; b++)
			;
		for (k = b - 1; k > a; k--) {
			struct mta_host tmp;
			size_t m;

			if (getrandom(&r, sizeof(r), 0) != sizeof(r))
				return;
			m = a + r % (k - a + 1);
			tmp = j->hosts[k];
			j->hosts[k] = j->hosts[m];
			j->hosts[m] = tmp;
		}
	}
}

static int
mta_port(void)
{
	return (int)conf_num(mta.conf, NULL, K_REMOTE_PORT);
}

static void
mta_mx_cb(const struct dns_result *res, void *arg)
{
	struct mta_job *j = arg;
	size_t i;

	j->dq[0] = NULL;
	switch (res->status) {
	case DNS_OK:
		if (res->nmx == 1 && res->mx[0].host[0] == '\0') {
			/* RFC 7505: a null MX says "no mail here", at once. */
			mta_fail_all(j, MTA_PERM, "556 5.1.10 the domain does not "
			    "accept mail (null MX)");
			mta_job_done(j);
			return;
		}
		for (i = 0; i < res->nmx && i < 16; i++)
			if (res->mx[i].host[0])
				mta_add_host(j, res->mx[i].host, mta_port());
		mta_shuffle_equal(j, res);
		break;
	case DNS_NODATA:
		/* RFC 5321 5.1: no MX, the domain itself is the host. */
		mta_add_host(j, j->domain, mta_port());
		break;
	case DNS_NXDOMAIN:
		mta_fail_all(j, MTA_PERM, "550 5.1.2 the domain does not exist "
		    "(DNS: NXDOMAIN)");
		mta_job_done(j);
		return;
	case DNS_TEMPFAIL:
		mta_lasterr(j, 1, "MX lookup for %s failed: %s", j->domain,
		    res->why ? res->why : "temporary DNS failure");
		mta_job_done(j);
		return;
	}
	mta_next_host(j);
}

static void
mta_route(struct mta_job *j)
{
	j->route = j->flags & MTA_F_LMTP ? &mta.lmtp :
	    conf_find_route(mta.conf, j->domain);
	if ((j->flags & MTA_F_FALLBACK) && conf_fallback_route(mta.conf))
		j->route = conf_fallback_route(mta.conf);
	if (j->route) {
		mta_add_host(j, j->route->path ? j->route->path :
		    j->route->host ? j->route->host : "", j->route->port);
		mta_next_host(j);
		return;
	}
	j->dq[0] = dns_lookup(j->domain, DNS_MX, mta_mx_cb, j);
	if (j->dq[0] == NULL) {
		mta_fail_all(j, MTA_PERM, "550 5.1.2 invalid destination domain");
		mta_job_done(j);
	}
}

/* ---- jobs from the queue ---------------------------------------------------------- */

/*
 * Addresses are data: each must be a Mailbox (lib/addr.c), and goes out in
 * its canonical form (mta_wire), so nothing in it can break the dialogue.
 */
static int
mta_addr(const char *a, int *eai)
{
	char out[ADDR_STR_MAX];
	struct addr x;

	if (addr_parse(a, ADDR_F_UTF8, &x, NULL) != 0 ||
	    addr_format(&x, out, sizeof(out)) >= sizeof(out))
		return -1;
	*eai |= x.utf8;
	return 0;
}

static int
mta_job_addrs(struct mta_job *j)
{
	char dom[ADDR_DOMAIN_MAX + 1];
	size_t i;

	for (i = 0; i < j->nr; i++)
		if (mta_addr(j->r[i].addr, &j->eai) == -1)
			return -1;
	if (*j->sender != '\0' && mta_addr(j->sender, &j->eai) == -1)
		return -1;
	if (addr_domain_ascii(j->domain, dom, sizeof(dom), NULL) == -1)
		return -1;
	str_copy(j->domain, dom, sizeof(j->domain));
	return 0;
}

static int
mta_parse_job(struct mta_job *j, struct rec_reader *rd)
{
	struct rec r;
	char *s;
	uint64_t v;
	int n;

	while ((n = rec_next(rd, &r)) == 1) {
		switch (r.tag) {
		case T_JOB:
			if (rec_u64(&r, &j->id) == -1)
				return -1;
			break;
		case T_ID:
			if ((s = rec_str(&r, 31)) == NULL)
				return -1;
			str_copy(j->qid, s, sizeof(j->qid));
			free(s);
			break;
		case T_SENDER:
			if (j->sender || (j->sender = rec_str(&r, 512)) == NULL)
				return -1;
			break;
		case T_DOMAIN:
			if ((s = rec_str(&r, 255)) == NULL)
				return -1;
			str_copy(j->domain, s, sizeof(j->domain));
			str_lower(j->domain);
			free(s);
			break;
		case T_RCPT:
			if ((s = rec_str(&r, 512)) == NULL)
				return -1;
			j->r = xreallocarray(j->r, j->nr + 1, sizeof(*j->r));
			memset(&j->r[j->nr], 0, sizeof(*j->r));
			j->r[j->nr].addr = s;
			j->r[j->nr++].status = -1;
			break;
		case T_SIZE:
			if (rec_u64(&r, &j->size) == -1)
				return -1;
			break;
		case T_BODY:
			if (rec_u64(&r, &v) == -1)
				return -1;
			j->body8 = v > 2 ? 1 : (int)v;
			break;
		case T_FLAGS:
			if (rec_u64(&r, &j->flags) == -1)
				return -1;
			break;
		case T_RET:
			if (rec_u64(&r, &v) == -1 || v > 2)
				return -1;
			j->ret = (int)v;
			break;
		case T_ENVID:
			if (j->envid || (j->envid = rec_str(&r,
			    DSN_ENVID_MAX)) == NULL)
				return -1;
			break;
		case T_DSN:	/* of the recipient before it */
			if (j->nr == 0 || rec_u64(&r, &v) == -1 || v > 0xf)
				return -1;
			j->r[j->nr - 1].notify = (unsigned)v;
			break;
		case T_ORCPT:
			if (j->nr == 0 || j->r[j->nr - 1].orcpt ||
			    (j->r[j->nr - 1].orcpt = rec_str(&r,
			    DSN_ORCPT_MAX)) == NULL)
				return -1;
			break;
		case T_UTF8:
			if (rec_u64(&r, &v) == -1)
				return -1;
			j->utf8 = v != 0;
			break;
		}
	}
	if (n == -1 || j->sender == NULL || j->domain[0] == '\0' || j->nr == 0)
		return -1;
	return mta_job_addrs(j);
}

static struct mta_job *
mta_job_by_id(uint64_t id)
{
	struct mta_job *j;

	for (j = mta.jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

/* The vault's SRS sender for a forwarded copy; none: the original. */
static void
mta_srs_done(uint64_t cookie, int status, const char *sender,
    const char *unused)
{
	struct mta_job *j = mta_job_by_id(cookie);

	if (j == NULL || !j->srswait)
		return;
	j->srswait = 0;
	if (status == VAULT_TEMP) {
		mta_fail_all(j, MTA_TEMP, "SRS rewriting unavailable");
		mta_job_done(j);
		return;
	}
	if (status == VAULT_OK && sender) {
		free(j->sender);
		j->sender = xstrdup(sender);
	}
	mta_route(j);
}

static void
mta_srs(struct mta_job *j)
{
	j->srswait = 1;
	if (vault_srs_forward(j->sender, mta_srs_done, j->id) == -1) {
		j->srswait = 0;
		mta_fail_all(j, MTA_TEMP, "SRS rewriting unavailable");
		mta_job_done(j);
	}
}

void
mta_job(struct ipc *c, struct rec_reader *rd, int fd)
{
	struct mta_job *j = xcalloc(1, sizeof(*j));

	j->q = c;
	j->fd = fd;
	if (fd < 0 || mta_parse_job(j, rd) == -1) {
		log_warnx("event=mta result=error reason=\"malformed job from "
		    "queue\"");
		if (j->id && j->nr) {
			mta_fail_all(j, MTA_TEMP, "malformed job");
			j->next = mta.jobs;
			mta.jobs = j;
			mta_job_done(j);
			return;
		}
		j->next = mta.jobs;
		mta.jobs = j;
		mta_job_free(j);
		return;
	}
	j->next = mta.jobs;
	mta.jobs = j;
	if (j->flags & MTA_F_SRS)
		mta_srs(j);
	else
		mta_route(j);
}

void
mta_forget(struct ipc *c)
{
	struct mta_job *j;

	for (j = mta.jobs; j; j = j->next)
		if (j->q == c)
			j->q = NULL;
}
