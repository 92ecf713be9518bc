/*
 * vault_client: the smtp process's side of the vault channel.  Each
 * request gets a number; the answer names it, and the requester's
 * callback runs with the cookie it gave.  If the channel closes, every
 * waiting request completes with VAULT_TEMP, from the event loop; so does
 * one the vault has not answered within the timeout (a stopped or
 * wedged vault must not hold sessions for ever: the client is told to
 * try again later, and a late answer finds nothing).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"

struct vreq {
	struct vreq	*next;
	uint64_t	 id;
	int		 type;
	vault_cb	 cb;
	uint64_t	 cookie;
	struct timespec	 sent;		/* CLOCK_MONOTONIC */
};

static struct {
	struct ipc	*ipc;
	struct vreq	*reqs;
	size_t		 nreqs;
	uint64_t	 nextid;
	struct event	*timer;		/* the oldest request's deadline */
	unsigned	 timeout_ms;
} vc = { .timeout_ms = VAULT_TIMEOUT_MS };

static struct vreq *
vault_req_take(uint64_t id)
{
	struct vreq **pp, *r;

	for (pp = &vc.reqs; (r = *pp) != NULL; pp = &r->next)
		if (r->id == id) {
			*pp = r->next;
			vc.nreqs--;
			return r;
		}
	return NULL;
}

struct vreply {
	uint64_t	 job, kind, status;
	char		*text, *pass;
};

static int
vault_reply_parse(struct rec_reader *rd, struct vreply *a)
{
	struct rec r;
	char **dst;
	int n;

	memset(a, 0, sizeof(*a));
	while ((n = rec_next(rd, &r)) == 1) {
		dst = NULL;
		if ((r.tag == T_JOB && rec_u64(&r, &a->job) == -1) ||
		    (r.tag == T_KIND && rec_u64(&r, &a->kind) == -1) ||
		    (r.tag == T_STATUS && rec_u64(&r, &a->status) == -1))
			return -1;
		if (r.tag == T_TEXT)
			dst = &a->text;
		else if (r.tag == T_PASS)
			dst = &a->pass;
		if (dst && (*dst != NULL || (*dst = rec_str(&r, 4096)) == NULL))
			return -1;
	}
	return n == 0 && a->status <= VAULT_TEMP ? 0 : -1;
}

static void
vault_reply_free(struct vreply *a)
{
	free(a->text);
	if (a->pass) {
		explicit_bzero(a->pass, strlen(a->pass));
		free(a->pass);
	}
}

static void
vault_client_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	struct vreply a;
	struct vreq *r;

	if (fd >= 0)
		close(fd);
	if (type != IMSG_V_REPLY || vault_reply_parse(rd, &a) == -1) {
		log_warnx("event=ipc result=error reason=\"bad message from "
		    "vault\" type=%d", type);
		return;
	}
	if ((r = vault_req_take(a.job)) != NULL) {
		if ((uint64_t)r->type == a.kind)
			r->cb(r->cookie, (int)a.status, a.text, a.pass);
		else
			r->cb(r->cookie, VAULT_TEMP, NULL, NULL);
		free(r);
	}
	vault_reply_free(&a);
}

/* Waiting requests fail as temporary; a new vault answers the next ones. */
static void
vault_client_fail_all(void)
{
	struct vreq *r;

	while ((r = vc.reqs) != NULL) {
		vc.reqs = r->next;
		vc.nreqs--;
		r->cb(r->cookie, VAULT_TEMP, NULL, NULL);
		free(r);
	}
}

static long long
vault_ms_since(const struct timespec *t, const struct timespec *now)
{
	return (long long)(now->tv_sec - t->tv_sec) * 1000 +
	    (now->tv_nsec - t->tv_nsec) / 1000000;
}

/* Arm the timer for the oldest waiting request, if any. */
static void
vault_timer_arm(void)
{
	struct timespec now;
	struct timeval tv;
	struct vreq *r, *old = NULL;
	long long left;

	if (vc.timer == NULL)
		return;
	for (r = vc.reqs; r; r = r->next)
		old = r;		/* the list is newest first */
	if (old == NULL) {
		evtimer_del(vc.timer);
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	left = (long long)vc.timeout_ms - vault_ms_since(&old->sent, &now);
	if (left < 0)
		left = 0;
	tv.tv_sec = (time_t)(left / 1000);
	tv.tv_usec = (suseconds_t)(left % 1000) * 1000;
	evtimer_add(vc.timer, &tv);
}

/* Requests past the timeout fail as temporary (oldest are last). */
static void
vault_client_expire(evutil_socket_t fd, short ev, void *arg)
{
	struct timespec now;
	struct vreq **pp, *r, *late = NULL;
	size_t n = 0;

	(void)fd; (void)ev; (void)arg;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (pp = &vc.reqs; (r = *pp) != NULL; ) {
		if (vault_ms_since(&r->sent, &now) >= (long long)vc.timeout_ms) {
			*pp = r->next;
			vc.nreqs--;
			r->next = late;
			late = r;
			n++;
		} else
			pp = &r->next;
	}
	if (n)
		log_warnx("event=vault result=timeout requests=%zu "
		    "reason=\"no answer from the vault in %ums\"", n,
		    vc.timeout_ms);
	/* Callbacks last: one may send a new request. */
	while ((r = late) != NULL) {
		late = r->next;
		r->cb(r->cookie, VAULT_TEMP, "vault timeout", NULL);
		free(r);
	}
	vault_timer_arm();
}

void
vault_client_timeout(unsigned ms)
{
	vc.timeout_ms = ms ? ms : VAULT_TIMEOUT_MS;
}

static void
vault_client_closed(struct ipc *c, void *arg)
{
	log_warnx("event=ipc result=error reason=\"vault channel closed\"");
	if (vc.ipc == c)
		vc.ipc = NULL;
	ipc_free(c);
	vault_client_fail_all();
}

void
vault_client_channel(struct event_base *base, int fd)
{
	if (vc.ipc) {
		ipc_free(vc.ipc);
		vc.ipc = NULL;
		vault_client_fail_all();
	}
	vc.ipc = ipc_new(base, fd, vault_client_msg, vault_client_closed, NULL);
	if (vc.timer == NULL)
		vc.timer = evtimer_new(base, vault_client_expire, NULL);
}

/* A request sent: its answer will name vc.nextid. */
static void
vault_req_add(int type, vault_cb cb, uint64_t cookie)
{
	struct vreq *r = xcalloc(1, sizeof(*r));

	r->id = vc.nextid;
	r->type = type;
	r->cb = cb;
	r->cookie = cookie;
	clock_gettime(CLOCK_MONOTONIC, &r->sent);
	r->next = vc.reqs;
	vc.reqs = r;
	vc.nreqs++;
	if (vc.timer && !evtimer_pending(vc.timer, NULL))
		vault_timer_arm();
}

static int
vault_request(int type, uint8_t tag, const char *arg, vault_cb cb,
    uint64_t cookie)
{
	struct buf b;
	int rv;

	if (vc.ipc == NULL)
		return -1;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, ++vc.nextid);
	rec_put_str(&b, tag, arg);
	rv = ipc_send(vc.ipc, type, b.data, b.len, -1);
	buf_free(&b);
	if (rv == -1)
		return -1;
	vault_req_add(type, cb, cookie);
	return 0;
}

int
vault_srs_reverse(const char *addr, vault_cb cb, uint64_t cookie)
{
	return vault_request(IMSG_V_SRS_REVERSE, T_RCPT, addr, cb, cookie);
}

int
vault_srs_forward(const char *sender, vault_cb cb, uint64_t cookie)
{
	return vault_request(IMSG_V_SRS_FORWARD, T_SENDER, sender, cb, cookie);
}

int
vault_route_auth(const char *authfile, vault_cb cb, uint64_t cookie)
{
	return vault_request(IMSG_V_ROUTE_AUTH, T_PATH, authfile, cb, cookie);
}

/*
 * A password check: the answer is VAULT_OK with the canonical account
 * name, VAULT_INVALID with a reason for the log, or VAULT_TEMP; it may
 * come seconds later (the vault's throttle).  The request's copy of the
 * password is wiped once it is sent.
 */
int
vault_check_password(const char *user, const char *pass,
    const char *client_addr, vault_cb cb, uint64_t cookie)
{
	struct buf b;
	int rv;

	if (vc.ipc == NULL)
		return -1;
	buf_init(&b);
	buf_reserve(&b, 64 + strlen(user) + strlen(pass) +
	    strlen(client_addr));
	rec_put_u64(&b, T_JOB, ++vc.nextid);
	rec_put_str(&b, T_USER, user);
	rec_put_str(&b, T_PASS, pass);
	rec_put_str(&b, T_CLIENT, client_addr);
	rv = ipc_send(vc.ipc, IMSG_V_AUTH, b.data, b.len, -1);
	explicit_bzero(b.data, b.cap);
	buf_free(&b);
	if (rv == -1)
		return -1;
	vault_req_add(IMSG_V_AUTH, cb, cookie);
	return 0;
}

/* DKIM: sign n digests with domain's keys named by selectors. */
int
vault_dkim_sign(const char *domain, const char *const *selectors,
    const unsigned char (*digests)[32], size_t n, vault_cb cb,
    uint64_t cookie)
{
	struct buf b;
	size_t i;
	int rv;

	if (vc.ipc == NULL)
		return -1;
	buf_init(&b);
	rec_put_u64(&b, T_JOB, ++vc.nextid);
	rec_put_str(&b, T_DOMAIN, domain);
	for (i = 0; i < n; i++) {
		rec_put_str(&b, T_SELECTOR, selectors[i]);
		rec_put(&b, T_DIGEST, digests[i], 32);
	}
	rv = ipc_send(vc.ipc, IMSG_V_DKIM_SIGN, b.data, b.len, -1);
	buf_free(&b);
	if (rv == -1)
		return -1;
	vault_req_add(IMSG_V_DKIM_SIGN, cb, cookie);
	return 0;
}

size_t
vault_client_pending(void)
{
	return vc.nreqs;
}
