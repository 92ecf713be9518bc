/*
 * vault: the secrets process (see vault.h).  It runs as the unprivileged
 * user, non-dumpable, under the strictest seccomp filter of the roles; its
 * only inputs are the root parent's channel and the smtp processes'
 * channels, and every request is checked record by record.  Secrets are
 * wiped when replaced.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/crypto.h>

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
};

static struct {
	struct event_base	*base;
	struct ipc		*parent;
	struct vpeer		*peers;
	unsigned char		 key[SRS_KEY_MAX];
	size_t			 keylen;
	char			 domain[256];	/* srs-domain */
	struct vroute		 routes[VAULT_ROUTES_MAX];
	size_t			 nroutes;
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

/* IMSG_P_SECRETS replaces everything held; the parent is trusted. */
int
vault_load(const void *data, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	char *s;
	int n;

	vault_forget();
	rec_reader_init(&rd, data, len);
	while ((n = rec_next(&rd, &r)) == 1) {
		switch (r.tag) {
		case T_KEY:
			if (r.len > sizeof(v.key))
				return -1;
			memcpy(v.key, r.data, r.len);
			v.keylen = r.len;
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
vault_answer(struct buf *out, int type, uint64_t job, int status,
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
vault_do_reverse(struct buf *c, uint64_t job, const char *addr)
{
	char out[1024];
	const char *why = NULL;
	int r;

	if (v.keylen == 0) {
		vault_answer(c, IMSG_V_SRS_REVERSE, job, VAULT_NONE, NULL, NULL);
		return;
	}
	r = srs_reverse(addr, v.key, v.keylen, time(NULL), VAULT_SRS_DAYS,
	    out, sizeof(out), &why);
	if (r == 1)
		vault_answer(c, IMSG_V_SRS_REVERSE, job, VAULT_OK, out, NULL);
	else if (r == 0)
		vault_answer(c, IMSG_V_SRS_REVERSE, job, VAULT_NONE, NULL, NULL);
	else
		vault_answer(c, IMSG_V_SRS_REVERSE, job, VAULT_INVALID,
		    why ? why : "invalid", NULL);
}

static void
vault_do_forward(struct buf *c, uint64_t job, const char *sender)
{
	char out[SRS_ADDR_MAX + 1];

	if (v.keylen == 0 || v.domain[0] == '\0' || srs_forward(sender,
	    v.domain, v.key, v.keylen, time(NULL), out, sizeof(out)) == -1)
		vault_answer(c, IMSG_V_SRS_FORWARD, job, VAULT_NONE, NULL, NULL);
	else
		vault_answer(c, IMSG_V_SRS_FORWARD, job, VAULT_OK, out, NULL);
}

static void
vault_do_auth(struct buf *c, uint64_t job, const char *path)
{
	const struct vroute *vr = vault_route(path);

	if (vr == NULL)
		vault_answer(c, IMSG_V_ROUTE_AUTH, job, VAULT_NONE, NULL, NULL);
	else
		vault_answer(c, IMSG_V_ROUTE_AUTH, job, VAULT_OK, vr->user,
		    vr->pass);
}

/*
 * One request from an smtp process (untrusted: it parses the network), its
 * answer appended to reply.  -1: malformed, no answer.
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

	if (fd >= 0)
		close(fd);
	buf_init(&out);
	if (vault_request(type, rd->p, rd->len, &out) == -1)
		log_warnx("event=ipc result=error reason=\"bad request\" "
		    "type=%d", type);
	else
		ipc_send(c, IMSG_V_REPLY, out.data, out.len, -1);
	if (out.data)
		explicit_bzero(out.data, out.cap);
	buf_free(&out);
}

static void
vault_peer_closed(struct ipc *c, void *arg)
{
	struct vpeer **pp, *pe;

	for (pp = &v.peers; (pe = *pp) != NULL; pp = &pe->next)
		if (pe->ipc == c) {
			*pp = pe->next;
			free(pe);
			break;
		}
	ipc_free(c);
}

static void
vault_add_peer(int fd)
{
	struct vpeer *pe = xcalloc(1, sizeof(*pe));

	pe->ipc = ipc_new(v.base, fd, vault_peer_msg, vault_peer_closed, NULL);
	pe->next = v.peers;
	v.peers = pe;
}

static void
vault_parent_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	if (type == IMSG_P_PEER && fd >= 0) {
		vault_add_peer(fd);
		return;
	}
	if (fd >= 0)
		close(fd);
	if (type == IMSG_P_SECRETS) {
		if (vault_load(rd->p, rd->len) == -1)
			log_warnx("event=reload result=error reason=\"malformed "
			    "secrets\"");
		else
			log_info("event=reload result=ok routes=%zu", v.nroutes);
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
	_exit(0);
}

static void
vault_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	vault_forget();
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

	OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG, NULL);
	if (srs_forward("warm@up.invalid", "vault.invalid", key, sizeof(key),
	    time(NULL), out, sizeof(out)) == 0)
		(void)srs_reverse(out, key, sizeof(key), time(NULL),
		    VAULT_SRS_DAYS, back, sizeof(back), &why);
}

void
vault_main(const void *secrets, size_t len, int parentfd, int *peers,
    size_t npeers)
{
	struct event *ev;
	size_t i;

	/* Same user as smtp: only root may read this process's memory. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	v.base = event_base_new();
	if (vault_load(secrets, len) == -1)
		fatalx("event=start result=error reason=\"malformed secrets\"");
	explicit_bzero((void *)(uintptr_t)secrets, len);	/* held once */
	v.parent = ipc_new(v.base, parentfd, vault_parent_msg,
	    vault_parent_closed, NULL);
	for (i = 0; i < npeers; i++)
		vault_add_peer(peers[i]);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(v.base, SIGTERM, vault_sigterm, NULL);
	evsignal_add(ev, NULL);
	vault_warm_up();
	proc_confine("vault");
	log_info("event=start result=ok routes=%zu srs=%s", v.nroutes,
	    v.keylen ? "yes" : "no");
	event_base_dispatch(v.base);
	exit(0);
}
