/*
 * vault: the secrets process (see vault.h).  It runs as the unprivileged
 * user, non-dumpable, under the strictest seccomp filter of the roles; its
 * only inputs are the root parent's channel and the smtp processes'
 * channels, and every request is checked record by record.  Secrets are
 * wiped when replaced.
 *
 * Password checks (auth/authcheck.c) cost one yescrypt hash each, some
 * tens of milliseconds: they wait in a queue and the loop takes one per
 * turn, so SRS and route requests are answered between two of them.  An
 * answer the throttle holds back waits on a timer, not in the loop.
 */
#include <sys/queue.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "auth/authcheck.h"
#include "auth/credstore.h"
#include "auth/dkim.h"
#include "auth/srs.h"
#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/util.h"

struct vroute {
	char	*path;		/* the auth file the config names */
	char	*user;
	char	*pass;
};

struct vpeer {
	struct vpeer	*next;
	struct ipc	*ipc;
	int		 queue;		/* the queue process: throttle requests
					   only; else smtp: no throttle */
};

/* A password check: waiting its turn, then (timer set) held back. */
struct vauth {
	TAILQ_ENTRY(vauth) entry;
	struct vpeer	*peer;
	uint64_t	 job;
	char		*user, *pass, *client;
	struct event	*timer;
	int		 status;
	char		 text[CRED_NAME_MAX + 1];
};
TAILQ_HEAD(vauths, vauth);

/* A DKIM signing key, parsed once. */
struct vdkim {
	char		*domain, *selector;
	void		*key;		/* EVP_PKEY */
};

#define VAULT_ACCOUNTS_MAX	100000
#define VAULT_AUTH_MAX		1024		/* checks waiting or held */
#define VAULT_SECRETS_MAX	(64u << 20)	/* one P_SECRETS, all chunks */
#define VAULT_USER_MAX		512
#define VAULT_THROTTLE_MAX	(IPC_MAX - 4096)	/* one answer's entries */

static struct {
	struct event_base	*base;
	struct ipc		*parent;
	struct vpeer		*peers;
	unsigned char		 key[SRS_KEY_MAX];
	size_t			 keylen;
	char			 domain[256];	/* srs-domain */
	struct vroute		 routes[VAULT_ROUTES_MAX];
	size_t			 nroutes;
	struct authcheck	*ac;		/* accounts and throttle */
	struct vauths		 waiting, held;
	size_t			 nauth;
	struct event		*authev;	/* the next check, next turn */
	struct buf		 pending;	/* P_SECRETS chunks so far */
	struct vdkim		 dkim[DKIM_KEYS_MAX];
	size_t			 ndkim;
} v;

static void
vault_wipe_str(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

static void
vault_forget(void)
{
	size_t i;

	for (i = 0; i < v.nroutes; i++) {
		free(v.routes[i].path);
		vault_wipe_str(v.routes[i].user);
		vault_wipe_str(v.routes[i].pass);
	}
	v.nroutes = 0;
	for (i = 0; i < v.ndkim; i++) {
		free(v.dkim[i].domain);
		free(v.dkim[i].selector);
		dkim_key_free(v.dkim[i].key);
	}
	v.ndkim = 0;
	explicit_bzero(v.key, sizeof(v.key));
	v.keylen = 0;
	v.domain[0] = '\0';
}

/* A route record is T_PATH, then its T_USER and T_PASS. */
static int
vault_route_rec(const struct rec *r)
{
	struct vroute *vr;
	char **dst;

	if (r->tag == T_PATH) {
		if (v.nroutes >= VAULT_ROUTES_MAX)
			return -1;
		vr = &v.routes[v.nroutes++];
		memset(vr, 0, sizeof(*vr));
		return (vr->path = rec_str(r, 4096)) ? 0 : -1;
	}
	if (v.nroutes == 0)
		return -1;
	vr = &v.routes[v.nroutes - 1];
	dst = r->tag == T_USER ? &vr->user : &vr->pass;
	if (*dst != NULL)
		return -1;
	return (*dst = rec_str(r, 512)) ? 0 : -1;
}

/* A DKIM key is T_DKIM (its domain), then T_SELECTOR and T_PEM. */
static int
vault_dkim_rec(const struct rec *r)
{
	struct vdkim *k;

	if (r->tag == T_DKIM) {
		if (v.ndkim >= DKIM_KEYS_MAX)
			return -1;
		k = &v.dkim[v.ndkim++];
		memset(k, 0, sizeof(*k));
		return (k->domain = rec_str(r, DKIM_DOMAIN_MAX)) ? 0 : -1;
	}
	if (v.ndkim == 0)
		return -1;
	k = &v.dkim[v.ndkim - 1];
	if (r->tag == T_SELECTOR)
		return k->selector == NULL && (k->selector = rec_str(r,
		    DKIM_SELECTOR_MAX)) ? 0 : -1;
	if (k->key != NULL)
		return -1;
	k->key = dkim_key_parse((const char *)r->data, r->len);
	return k->key ? 0 : -1;
}

/* Accounts: T_ACCOUNT, then its T_HASH and T_LOCKED. */
static int
vault_account_rec(const struct rec *r, struct cred *a, size_t cap,
    size_t *n)
{
	struct cred *c;
	uint64_t x;

	if (r->tag == T_ACCOUNT) {
		if (*n >= cap || r->len == 0 || r->len > CRED_NAME_MAX ||
		    memchr(r->data, '\0', r->len))
			return -1;
		c = &a[(*n)++];
		memcpy(c->name, r->data, r->len);
		return 0;
	}
	if (*n == 0)
		return -1;
	c = &a[*n - 1];
	if (r->tag == T_HASH) {
		if (c->hash[0] || r->len == 0 || r->len > CRED_HASH_MAX ||
		    memchr(r->data, '\0', r->len))
			return -1;
		memcpy(c->hash, r->data, r->len);
		return 0;
	}
	if (rec_u64(r, &x) == -1)
		return -1;
	c->locked = x != 0;
	return 0;
}

/* The accounts of a secrets message, all or none. */
static int
vault_load_accounts(const void *data, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	struct cred *a;
	size_t cap = 0, n = 0, i;
	int k;

	rec_reader_init(&rd, data, len);
	while ((k = rec_next(&rd, &r)) == 1)
		cap += r.tag == T_ACCOUNT;
	if (k == -1 || cap > VAULT_ACCOUNTS_MAX)
		return -1;
	/* Sized once: no copy of a hash is left behind by a realloc. */
	a = cap ? xcalloc(cap, sizeof(*a)) : NULL;
	rec_reader_init(&rd, data, len);
	while ((k = rec_next(&rd, &r)) == 1)
		if ((r.tag == T_ACCOUNT || r.tag == T_HASH ||
		    r.tag == T_LOCKED) && vault_account_rec(&r, a, cap,
		    &n) == -1)
			break;
	for (i = 0; k == 0 && i < n; i++)
		if (a[i].hash[0] == '\0')
			k = -1;
	if (k != 0) {
		credstore_free(a, cap);
		return -1;
	}
	if (v.ac == NULL)
		v.ac = authcheck_new();
	authcheck_set_accounts(v.ac, a, n);
	return 0;
}

/* IMSG_P_SECRETS replaces everything held; the parent is trusted. */
int
vault_load(const void *data, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	uint64_t u;
	char *s;
	int n;

	vault_forget();
	if (vault_load_accounts(data, len) == -1)
		return -1;
	rec_reader_init(&rd, data, len);
	while ((n = rec_next(&rd, &r)) == 1) {
		switch (r.tag) {
		case T_KEY:
			if (r.len > sizeof(v.key))
				return -1;
			memcpy(v.key, r.data, r.len);
			v.keylen = r.len;
			break;
		case T_KNOWN:
			if (rec_u64(&r, &u) == -1 || u > 3650 * 86400ULL)
				return -1;
			if (v.ac == NULL)
				v.ac = authcheck_new();
			authcheck_set_known_window(v.ac, (time_t)u);
			break;
		case T_DOMAIN:
			if ((s = rec_str(&r, sizeof(v.domain) - 1)) == NULL)
				return -1;
			str_copy(v.domain, s, sizeof(v.domain));
			free(s);
			break;
		case T_PATH:
		case T_USER:
		case T_PASS:
			if (vault_route_rec(&r) == -1)
				return -1;
			break;
		case T_DKIM:
		case T_SELECTOR:
		case T_PEM:
			if (vault_dkim_rec(&r) == -1)
				return -1;
			break;
		}
	}
	return n == -1 ? -1 : 0;
}

static const struct vroute *
vault_route(const char *path)
{
	size_t i;

	for (i = 0; i < v.nroutes; i++)
		if (strcmp(v.routes[i].path, path) == 0 &&
		    v.routes[i].user && v.routes[i].pass)
			return &v.routes[i];
	return NULL;
}

/* One request: T_JOB, then T_RCPT, T_SENDER or T_PATH. */
static int
vault_req_parse(struct rec_reader *rd, uint64_t *job, uint8_t want,
    char **arg)
{
	struct rec r;
	int n;

	*job = 0;
	*arg = NULL;
	while ((n = rec_next(rd, &r)) == 1) {
		if (r.tag == T_JOB && rec_u64(&r, job) == -1)
			break;
		if (r.tag == want && (*arg != NULL ||
		    (*arg = rec_str(&r, 4096)) == NULL))
			break;
	}
	if (n != 0 || *job == 0 || *arg == NULL) {
		free(*arg);
		*arg = NULL;
		return -1;
	}
	return 0;
}

static void
vault_reply_put(struct buf *out, int type, uint64_t job, int status,
    const char *a, const char *b)
{
	rec_put_u64(out, T_JOB, job);
	rec_put_u64(out, T_KIND, (uint64_t)type);
	rec_put_u64(out, T_STATUS, (uint64_t)status);
	if (a)
		rec_put_str(out, T_TEXT, a);
	if (b)
		rec_put_str(out, T_PASS, b);
}

static void
vault_send_wipe(struct ipc *c, struct buf *out)
{
	ipc_send(c, IMSG_V_REPLY, out->data, out->len, -1);
	if (out->data)
		explicit_bzero(out->data, out->cap);
	buf_free(out);
}

static void
vault_answer(struct ipc *c, int type, uint64_t job, int status,
    const char *a, const char *b)
{
	struct buf out;

	buf_init(&out);
	vault_reply_put(&out, type, job, status, a, b);
	vault_send_wipe(c, &out);
}

static void
vault_do_reverse(struct buf *c, uint64_t job, const char *addr)
{
	char out[1024];
	const char *why = NULL;
	int r;

	if (v.keylen == 0) {
		vault_reply_put(c, IMSG_V_SRS_REVERSE, job, VAULT_NONE, NULL, NULL);
		return;
	}
	r = srs_reverse(addr, v.key, v.keylen, time(NULL), VAULT_SRS_DAYS,
	    out, sizeof(out), &why);
	if (r == 1)
		vault_reply_put(c, IMSG_V_SRS_REVERSE, job, VAULT_OK, out, NULL);
	else if (r == 0)
		vault_reply_put(c, IMSG_V_SRS_REVERSE, job, VAULT_NONE, NULL, NULL);
	else
		vault_reply_put(c, IMSG_V_SRS_REVERSE, job, VAULT_INVALID,
		    why ? why : "invalid", NULL);
}

static void
vault_do_forward(struct buf *c, uint64_t job, const char *sender)
{
	char out[SRS_ADDR_MAX + 1];

	if (v.keylen == 0 || v.domain[0] == '\0' || srs_forward(sender,
	    v.domain, v.key, v.keylen, time(NULL), out, sizeof(out)) == -1)
		vault_reply_put(c, IMSG_V_SRS_FORWARD, job, VAULT_NONE, NULL, NULL);
	else
		vault_reply_put(c, IMSG_V_SRS_FORWARD, job, VAULT_OK, out, NULL);
}

static void
vault_do_auth(struct buf *c, uint64_t job, const char *path)
{
	const struct vroute *vr = vault_route(path);

	if (vr == NULL)
		vault_reply_put(c, IMSG_V_ROUTE_AUTH, job, VAULT_NONE, NULL, NULL);
	else
		vault_reply_put(c, IMSG_V_ROUTE_AUTH, job, VAULT_OK, vr->user,
		    vr->pass);
}

/* ---- password checks --------------------------------------------------- */

/* A client address as smtp gives it: no brackets, nothing to escape. */
static int
vault_client_ok(const char *s)
{
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') ||
		    (*s >= 'A' && *s <= 'Z') || strchr(".:_-", *s)))
			return 0;
	return 1;
}

static void
vault_auth_free(struct vauth *a)
{
	if (a->timer)
		event_free(a->timer);
	free(a->user);
	vault_wipe_str(a->pass);
	free(a->client);
	free(a);
}

static void
vault_auth_answer(struct vauth *a)
{
	vault_answer(a->peer->ipc, IMSG_V_AUTH, a->job, a->status, a->text,
	    NULL);
}

/*
 * T_JOB, T_USER, T_PASS and T_CLIENT, each once.  A request that names
 * its job but is otherwise malformed is answered VAULT_TEMP, so that the
 * session waiting for it goes on.
 */
static struct vauth *
vault_auth_parse(struct rec_reader *rd, struct vpeer *pe)
{
	struct vauth *a = xcalloc(1, sizeof(*a));
	struct rec r;
	char **dst;
	size_t max;
	int n;

	while ((n = rec_next(rd, &r)) == 1) {
		if (r.tag == T_JOB) {
			if (a->job != 0 || rec_u64(&r, &a->job) == -1)
				break;
			continue;
		}
		if (r.tag == T_USER) {
			dst = &a->user;
			max = VAULT_USER_MAX;
		} else if (r.tag == T_PASS) {
			dst = &a->pass;
			max = CRED_PASS_MAX;
		} else if (r.tag == T_CLIENT) {
			dst = &a->client;
			max = AUTHCHECK_CLIENT_MAX;
		} else
			continue;
		if (*dst != NULL || (*dst = rec_str(&r, max)) == NULL)
			break;
	}
	if (n != 0 || a->job == 0 || a->user == NULL || a->pass == NULL ||
	    a->client == NULL || !vault_client_ok(a->client)) {
		if (a->job != 0) {
			a->peer = pe;
			a->status = VAULT_TEMP;
			str_copy(a->text, "malformed request", sizeof(a->text));
			vault_auth_answer(a);
		}
		vault_auth_free(a);
		return NULL;
	}
	return a;
}

/* The delay is over: the answer goes. */
static void
vault_auth_release(evutil_socket_t fd, short ev, void *arg)
{
	struct vauth *a = arg;

	TAILQ_REMOVE(&v.held, a, entry);
	v.nauth--;
	vault_auth_answer(a);
	vault_auth_free(a);
}

static void
vault_auth_kick(void)
{
	static const struct timeval now = { 0, 0 };

	if (!TAILQ_EMPTY(&v.waiting) && !evtimer_pending(v.authev, NULL))
		evtimer_add(v.authev, &now);
}

static void
vault_auth_log(const struct vauth *a, const struct authcheck_result *r)
{
	if (r->status == VAULT_OK)
		log_info("event=auth result=ok user=<%s> client=[%s] "
		    "failures=%u delay=%us known=%s", log_a(r->text),
		    a->client, r->failures, r->delay, r->known ? "yes" : "no");
	else if (r->status == VAULT_INVALID)
		log_info("event=auth result=fail user=<%s> client=[%s] "
		    "failures=%u delay=%us reason=\"%s\" known=%s",
		    log_a(a->user), a->client, r->failures, r->delay,
		    log_q(r->text), r->known ? "yes" : "no");
	else
		log_info("event=auth result=tempfail user=<%s> client=[%s] "
		    "failures=%u delay=0s reason=\"%s\"", log_a(a->user),
		    a->client, r->failures, log_q(r->text));
}

/*
 * One check per turn of the loop (a zero timer runs after the loop has
 * polled its channels again), so other requests wait one hash at most.
 */
static void
vault_auth_next(evutil_socket_t fd, short ev, void *arg)
{
	struct authcheck_result r;
	struct timeval tv = { 0, 0 };
	struct vauth *a;

	if ((a = TAILQ_FIRST(&v.waiting)) == NULL)
		return;
	TAILQ_REMOVE(&v.waiting, a, entry);
	authcheck_run(v.ac, a->user, a->pass, a->client, time(NULL), &r);
	explicit_bzero(a->pass, strlen(a->pass));
	vault_auth_log(a, &r);
	a->status = r.status;
	str_copy(a->text, r.text, sizeof(a->text));
	if (r.delay == 0) {
		v.nauth--;
		vault_auth_answer(a);
		vault_auth_free(a);
	} else {
		tv.tv_sec = (time_t)r.delay;
		a->timer = evtimer_new(v.base, vault_auth_release, a);
		TAILQ_INSERT_TAIL(&v.held, a, entry);
		evtimer_add(a->timer, &tv);
	}
	vault_auth_kick();
}

static void
vault_auth_request(struct vpeer *pe, struct rec_reader *rd)
{
	struct vauth *a;

	if ((a = vault_auth_parse(rd, pe)) == NULL) {
		log_warnx("event=ipc result=error reason=\"bad request\" "
		    "type=%d", IMSG_V_AUTH);
		return;
	}
	a->peer = pe;
	if (v.nauth >= VAULT_AUTH_MAX) {
		a->status = VAULT_TEMP;
		str_copy(a->text, "too many checks at once, try later",
		    sizeof(a->text));
		log_warnx("event=auth result=tempfail user=<%s> client=[%s] "
		    "reason=\"%s\"", log_a(a->user), a->client, a->text);
		vault_auth_answer(a);
		vault_auth_free(a);
		return;
	}
	TAILQ_INSERT_TAIL(&v.waiting, a, entry);
	v.nauth++;
	vault_auth_kick();
}

/* A peer is gone: nobody waits for its checks any more. */
static void
vault_auth_drop(struct vpeer *pe)
{
	struct vauths *lists[] = { &v.waiting, &v.held };
	struct vauth *a, *next;
	size_t i;

	for (i = 0; i < 2; i++)
		for (a = TAILQ_FIRST(lists[i]); a != NULL; a = next) {
			next = TAILQ_NEXT(a, entry);
			if (a->peer != pe)
				continue;
			TAILQ_REMOVE(lists[i], a, entry);
			v.nauth--;
			vault_auth_free(a);
		}
}

/* ---- the throttle, for ternctl auth (through the queue) ------------------ */

struct vthrottle {
	struct buf	*out;
	uint64_t	 left;		/* entries that did not fit */
};

static void
vault_throttle_entry(void *arg, int kind, const char *key, unsigned failures,
    unsigned delay, int refused, time_t until, unsigned known)
{
	struct vthrottle *t = arg;
	struct buf e;

	if (t->out->len > VAULT_THROTTLE_MAX) {
		t->left++;
		return;
	}
	buf_init(&e);
	rec_put_u64(&e, T_KIND, (uint64_t)kind);
	rec_put_str(&e, T_ID, key);
	rec_put_u64(&e, T_CODE, failures);
	rec_put_u64(&e, T_SIZE, delay);
	rec_put_u64(&e, T_STATUS, (uint64_t)refused);
	rec_put_u64(&e, T_ARRIVAL, until < 0 ? 0 : (uint64_t)until);
	if (kind == 1)
		rec_put_u64(&e, T_KNOWN, known);
	rec_put(t->out, T_THROTTLE, e.data, e.len);
	buf_free(&e);
}

/*
 * From the queue process (ternctl auth): T_JOB, and T_ID to clear that
 * client or account; without T_ID, the list.  The answer: T_JOB, T_KIND,
 * T_STATUS (VAULT_OK; VAULT_NONE: nothing to clear), the entries
 * (T_THROTTLE each) and T_CODE, the entries left out for room.  Keys are
 * addresses the vault accepted and account names of the store: no
 * secret.  -1: malformed, no answer.
 */
int
vault_throttle_request(const void *data, size_t len, time_t now,
    struct buf *reply)
{
	struct vthrottle t = { reply, 0 };
	struct rec_reader rd;
	struct rec r;
	uint64_t job = 0;
	char *key = NULL;
	int n, status = VAULT_OK;

	rec_reader_init(&rd, data, len);
	while ((n = rec_next(&rd, &r)) == 1) {
		if (r.tag == T_JOB && (job != 0 || rec_u64(&r, &job) == -1))
			break;
		if (r.tag == T_ID && (key != NULL ||
		    (key = rec_str(&r, CRED_NAME_MAX)) == NULL))
			break;
	}
	if (n != 0 || job == 0 || (key != NULL && key[0] == '\0')) {
		free(key);
		return -1;
	}
	if (v.ac == NULL)
		v.ac = authcheck_new();
	if (key != NULL && authcheck_clear(v.ac, key) == 0)
		status = VAULT_NONE;
	else if (key != NULL)
		log_info("event=auth-throttle result=cleared key=<%s>",
		    log_a(key));
	vault_reply_put(reply, IMSG_V_THROTTLE, job, status, NULL, NULL);
	if (key == NULL) {
		authcheck_walk(v.ac, now, vault_throttle_entry, &t);
		rec_put_u64(reply, T_CODE, t.left);
	}
	free(key);
	return 0;
}

/* ---- DKIM ---------------------------------------------------------------- */

static const struct vdkim *
vault_dkim_key(const char *domain, const char *selector)
{
	size_t i;

	for (i = 0; i < v.ndkim; i++)
		if (v.dkim[i].key && v.dkim[i].selector &&
		    strcmp(v.dkim[i].domain, domain) == 0 &&
		    strcmp(v.dkim[i].selector, selector) == 0)
			return &v.dkim[i];
	return NULL;
}

/*
 * T_JOB, T_DOMAIN, then up to DKIM_DOMAIN_KEYS pairs of T_SELECTOR and
 * T_DIGEST (32 bytes).  The answer: VAULT_OK with the base64 signatures
 * in order, separated by spaces; VAULT_NONE when a key is not held;
 * VAULT_TEMP when signing fails.  It signs only digests of the domain's
 * own keys: a taken-over smtp process can have mail signed for the
 * domains configured, as it can submit mail, but never read a key.
 */
static int
vault_dkim_request(const void *data, size_t len, struct buf *reply)
{
	struct rec_reader rd;
	struct rec r;
	const struct vdkim *k[DKIM_DOMAIN_KEYS];
	unsigned char d[DKIM_DOMAIN_KEYS][DKIM_DIGEST_LEN];
	char *domain = NULL, *sel = NULL;
	uint64_t job = 0;
	size_t nk = 0, nd = 0, i;
	struct buf sigs;
	int n, status = VAULT_OK;

	rec_reader_init(&rd, data, len);
	while ((n = rec_next(&rd, &r)) == 1) {
		if (r.tag == T_JOB) {
			if (job != 0 || rec_u64(&r, &job) == -1)
				break;
		} else if (r.tag == T_DOMAIN) {
			if (domain != NULL || (domain = rec_str(&r,
			    DKIM_DOMAIN_MAX)) == NULL)
				break;
		} else if (r.tag == T_SELECTOR) {
			if (domain == NULL || nk != nd || nk >=
			    DKIM_DOMAIN_KEYS || (sel = rec_str(&r,
			    DKIM_SELECTOR_MAX)) == NULL)
				break;
			if ((k[nk++] = vault_dkim_key(domain, sel)) == NULL)
				status = VAULT_NONE;
			free(sel);
		} else if (r.tag == T_DIGEST) {
			if (nd + 1 != nk || r.len != DKIM_DIGEST_LEN)
				break;
			memcpy(d[nd++], r.data, DKIM_DIGEST_LEN);
		}
	}
	free(domain);
	if (n != 0 || job == 0 || nk == 0 || nk != nd)
		return -1;
	buf_init(&sigs);
	for (i = 0; status == VAULT_OK && i < nk; i++) {
		if (i > 0)
			buf_putc(&sigs, ' ');
		if (dkim_key_sign(k[i]->key, d[i], DKIM_DIGEST_LEN,
		    &sigs) == -1)
			status = VAULT_TEMP;
	}
	vault_reply_put(reply, IMSG_V_DKIM_SIGN, job, status,
	    status == VAULT_OK ? sigs.data : status == VAULT_NONE ?
	    "no such key" : "signing failed", NULL);
	buf_free(&sigs);
	return 0;
}

/* ---- channels ------------------------------------------------------------ */

/*
 * One request from an smtp process (untrusted: it parses the network), its
 * answer appended to reply.  -1: malformed, no answer.  Password checks
 * are not answered here: they wait their turn (vault_auth_request).
 */
int
vault_request(int type, const void *data, size_t len, struct buf *reply)
{
	static const uint8_t want[] = {
		[IMSG_V_SRS_REVERSE] = T_RCPT,
		[IMSG_V_SRS_FORWARD] = T_SENDER,
		[IMSG_V_ROUTE_AUTH] = T_PATH,
	};
	struct rec_reader rd;
	uint64_t job;
	char *a;

	if (type == IMSG_V_DKIM_SIGN)
		return vault_dkim_request(data, len, reply);
	if (type != IMSG_V_SRS_REVERSE && type != IMSG_V_SRS_FORWARD &&
	    type != IMSG_V_ROUTE_AUTH)
		return -1;
	rec_reader_init(&rd, data, len);
	if (vault_req_parse(&rd, &job, want[type], &a) == -1)
		return -1;
	if (type == IMSG_V_SRS_REVERSE)
		vault_do_reverse(reply, job, a);
	else if (type == IMSG_V_SRS_FORWARD)
		vault_do_forward(reply, job, a);
	else
		vault_do_auth(reply, job, a);
	free(a);
	return 0;
}

static void
vault_peer_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct buf out;

	struct vpeer *pe = arg;
	int rv;

	if (fd >= 0)
		close(fd);
	if (type == IMSG_V_AUTH && !pe->queue) {
		vault_auth_request(arg, rd);
		return;
	}
	buf_init(&out);
	/* Each peer its own requests: smtp never sees the throttle. */
	if (pe->queue)
		rv = type == IMSG_V_THROTTLE ? vault_throttle_request(rd->p,
		    rd->len, time(NULL), &out) : -1;
	else
		rv = vault_request(type, rd->p, rd->len, &out);
	if (rv == -1) {
		log_warnx("event=ipc result=error reason=\"bad request\" "
		    "type=%d", type);
		buf_free(&out);
		return;
	}
	vault_send_wipe(c, &out);
}

static void
vault_peer_closed(struct ipc *c, void *arg)
{
	struct vpeer **pp, *pe;

	for (pp = &v.peers; (pe = *pp) != NULL; pp = &pe->next)
		if (pe->ipc == c) {
			*pp = pe->next;
			vault_auth_drop(pe);
			free(pe);
			break;
		}
	ipc_free(c);
}

static void
vault_add_peer(int fd, int queue)
{
	struct vpeer *pe = xcalloc(1, sizeof(*pe));

	pe->queue = queue;
	pe->ipc = ipc_new(v.base, fd, vault_peer_msg, vault_peer_closed, pe);
	pe->next = v.peers;
	v.peers = pe;
}

/*
 * IMSG_P_SECRETS at a reload comes in chunks (T_FLAGS IPC_F_MORE on all
 * but the last); the whole is loaded at once, so no check ever sees half
 * of the accounts.
 */
static void
vault_secrets_chunk(const void *data, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	uint64_t fl;
	int more = 0;

	rec_reader_init(&rd, data, len);
	while (rec_next(&rd, &r) == 1)
		if (r.tag == T_FLAGS && rec_u64(&r, &fl) == 0 &&
		    (fl & IPC_F_MORE))
			more = 1;
	if (v.pending.len + len > VAULT_SECRETS_MAX) {
		log_warnx("event=reload result=error reason=\"secrets larger "
		    "than %u bytes\"", VAULT_SECRETS_MAX);
		explicit_bzero(v.pending.data, v.pending.cap);
		buf_reset(&v.pending);
		return;
	}
	buf_append_wipe(&v.pending, data, len);
	if (more)
		return;
	if (vault_load(v.pending.data, v.pending.len) == -1)
		log_warnx("event=reload result=error reason=\"malformed "
		    "secrets\"");
	else
		log_info("event=reload result=ok routes=%zu accounts=%zu",
		    v.nroutes, authcheck_count(v.ac));
	explicit_bzero(v.pending.data, v.pending.cap);
	buf_reset(&v.pending);
}

static void
vault_parent_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct rec r;
	int queue = 0;

	if (type == IMSG_P_PEER && fd >= 0) {
		while (rec_next(rd, &r) == 1)
			if (r.tag == T_KIND && r.len == strlen(PEER_QUEUE) &&
			    memcmp(r.data, PEER_QUEUE, r.len) == 0)
				queue = 1;
		vault_add_peer(fd, queue);
		return;
	}
	if (fd >= 0)
		close(fd);
	if (type == IMSG_P_SECRETS) {
		vault_secrets_chunk(rd->p, rd->len);
		return;
	}
	log_warnx("event=ipc result=error reason=\"unexpected message %d\"",
	    type);
}

static void
vault_parent_closed(struct ipc *c, void *arg)
{
	/* The parent is gone: forget, and stop. */
	vault_forget();
	authcheck_free(v.ac);
	_exit(0);
}

static void
vault_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	vault_forget();
	authcheck_free(v.ac);
	v.ac = NULL;
	log_info("event=stop result=ok");
	exit(0);
}

/*
 * OpenSSL reads its configuration and loads its provider on first use;
 * the vault may open no file under its filter, so that first use is now.
 */
static void
vault_warm_up(void)
{
	static const unsigned char key[SRS_SECRET_MIN] = { 1 };
	char out[SRS_ADDR_MAX + 1], back[SRS_ADDR_MAX + 1];
	const char *why;

	char hash[CRED_HASH_MAX + 1];

	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	/* libcrypt too: its first hash, before the filter. */
	if (credstore_hash("warm-up", hash, sizeof(hash)) == 0)
		(void)credstore_verify("warm-up", hash);
	if (srs_forward("warm@up.invalid", "vault.invalid", key, sizeof(key),
	    time(NULL), out, sizeof(out)) == 0)
		(void)srs_reverse(out, key, sizeof(key), time(NULL),
		    VAULT_SRS_DAYS, back, sizeof(back), &why);
}

void
vault_main(const void *secrets, size_t len, int parentfd, int *peers,
    size_t npeers, int queuefd)
{
	struct event *ev;
	size_t i;

	/* Same user as smtp: only root may read this process's memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	v.base = event_base_new();
	TAILQ_INIT(&v.waiting);
	TAILQ_INIT(&v.held);
	buf_init(&v.pending);
	v.authev = evtimer_new(v.base, vault_auth_next, NULL);
	if (v.ac == NULL)
		v.ac = authcheck_new();
	if (vault_load(secrets, len) == -1)
		fatalx("event=start result=error reason=\"malformed secrets\"");
	explicit_bzero((void *)(uintptr_t)secrets, len);	/* held once */
	v.parent = ipc_new(v.base, parentfd, vault_parent_msg,
	    vault_parent_closed, NULL);
	for (i = 0; i < npeers; i++)
		vault_add_peer(peers[i], 0);
	if (queuefd >= 0)
		vault_add_peer(queuefd, 1);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(v.base, SIGTERM, vault_sigterm, NULL);
	evsignal_add(ev, NULL);
	vault_warm_up();
	proc_confine("vault");
	log_info("event=start result=ok routes=%zu srs=%s accounts=%zu",
	    v.nroutes, v.keylen ? "yes" : "no", authcheck_count(v.ac));
	event_base_dispatch(v.base);
	exit(0);
}
