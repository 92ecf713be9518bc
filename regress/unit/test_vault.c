/*
 * test_vault: the real vault process (vault_main in a forked child, under
 * its seccomp filter) asked over a socketpair through the smtp side's
 * client (vault_check_password): a right password gives the canonical
 * name; wrong, unknown and locked ones give the reason; an answer held
 * back after a failure does not hold back an SRS request sent after it,
 * nor does a queue of checks; secrets sent in chunks at a reload replace
 * the accounts once the last chunk is in; the failure is logged.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth/credstore.h"
#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_vault(void);

#define PW_ANNA	"Anna-test-Pw-7Rq2"
#define PW_BOB	"Bob-test-Pw-3Kx9"
#define PW_CARL	"Carl-test-Pw-5Tz8"
#define MAXANS	32

static struct answer {
	uint64_t	 cookie;
	int		 status;
	char		 a[400];
	double		 at;		/* seconds since the start */
} ans[MAXANS];
static int nans;
static struct timespec t0;

static double
now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0.tv_sec) +
	    (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static void
got(uint64_t cookie, int status, const char *a, const char *b)
{
	if (nans >= MAXANS)
		return;
	ans[nans].cookie = cookie;
	ans[nans].status = status;
	str_copy(ans[nans].a, a ? a : "", sizeof(ans[nans].a));
	ans[nans].at = now_s();
	nans++;
}

static const struct answer *
find(uint64_t cookie)
{
	int i;

	for (i = 0; i < nans; i++)
		if (ans[i].cookie == cookie)
			return &ans[i];
	return NULL;
}

static int
index_of(uint64_t cookie)
{
	int i;

	for (i = 0; i < nans; i++)
		if (ans[i].cookie == cookie)
			return i;
	return -1;
}

static void
tick(evutil_socket_t fd, short ev, void *arg)
{
}

/* Run the loop until n answers are in (or 20 s pass). */
static void
wait_answers(struct event_base *base, int n)
{
	double end = now_s() + 20;

	while (nans < n && now_s() < end)
		event_base_loop(base, EVLOOP_ONCE);
}

static int
log_has(const char *path, const char *needle)
{
	struct buf b;
	int r;

	buf_init(&b);
	r = file_read_all(path, 1 << 20, &b) == 0 && b.data &&
	    strstr(b.data, needle) != NULL;
	buf_free(&b);
	return r;
}

static void
account(struct buf *b, const char *name, const char *pw, int locked)
{
	char h[CRED_HASH_MAX + 1];

	CHECK(credstore_hash(pw, h, sizeof(h)) == 0);
	rec_put_str(b, T_ACCOUNT, name);
	rec_put_str(b, T_HASH, h);
	rec_put_u64(b, T_LOCKED, (uint64_t)locked);
}

static pid_t
start_vault(int *parentfd, int *peerfd, const char *logpath)
{
	static const unsigned char key[32] = "tern-test-srs-key-0123456789abc";
	int psv[2], vsv[2], fd, peer;
	struct buf b;
	pid_t pid;

	buf_init(&b);
	rec_put(&b, T_KEY, key, sizeof(key));
	rec_put_str(&b, T_DOMAIN, "srs.example.test");
	account(&b, "bob", PW_BOB, 1);
	account(&b, "anna@example.test", PW_ANNA, 0);
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, psv) == 0);
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, vsv) == 0);
	fflush(NULL);
	if ((pid = fork()) == 0) {
		/* The role's layout: its parent channel is descriptor 3. */
		peer = fcntl(vsv[1], F_DUPFD, 20);
		close(psv[0]);		/* the test's ends: EOF must reach us */
		close(vsv[0]);
		if (dup2(psv[1], PROC_PARENT_FD) == -1)
			_exit(99);
		if ((fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC,
		    0600)) == -1 || dup2(fd, STDERR_FILENO) == -1)
			_exit(98);
		log_init("vault", 1, 0);
		vault_main(b.data, b.len, PROC_PARENT_FD, &peer, 1, -1);
	}
	close(psv[1]);
	close(vsv[1]);
	buf_free(&b);
	*parentfd = psv[0];
	*peerfd = vsv[0];
	return pid;
}

/* A reload: the accounts become carl alone, in two chunks. */
static void
reload_in_chunks(int parentfd)
{
	static const unsigned char key[32] = "tern-test-srs-key-0123456789abc";
	char h[CRED_HASH_MAX + 1];
	unsigned char msg[2048];
	struct buf b;
	int i;

	CHECK(credstore_hash(PW_CARL, h, sizeof(h)) == 0);
	for (i = 0; i < 2; i++) {
		buf_init(&b);
		if (i == 0) {
			rec_put(&b, T_KEY, key, sizeof(key));
			rec_put_str(&b, T_DOMAIN, "srs.example.test");
			rec_put_str(&b, T_ACCOUNT, "carl");
			rec_put_u64(&b, T_FLAGS, IPC_F_MORE);
		} else
			rec_put_str(&b, T_HASH, h);
		msg[0] = (unsigned char)(IMSG_P_SECRETS >> 8);
		msg[1] = (unsigned char)IMSG_P_SECRETS;
		msg[2] = msg[3] = 0;
		memcpy(msg + 4, b.data, b.len);
		CHECK(send(parentfd, msg, b.len + 4, 0) == (ssize_t)(b.len + 4));
		buf_free(&b);
	}
}

void
test_vault(void)
{
	char logpath[] = "/tmp/tern-vault-log-XXXXXX";
	const struct answer *a, *s;
	struct event_base *base;
	struct event *ev;
	struct timeval tv = { 0, 50000 };
	int parentfd, peerfd, status, i, lfd;
	double sent;
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK((lfd = mkstemp(logpath)) >= 0);
	close(lfd);
	pid = start_vault(&parentfd, &peerfd, logpath);
	CHECK(pid > 0);
	base = event_base_new();
	ev = event_new(base, -1, EV_PERSIST, tick, NULL);
	event_add(ev, &tv);
	vault_client_channel(base, peerfd);

	/* Right, wrong, unknown, locked. */
	CHECK(vault_check_password("Anna@Example.TEST", PW_ANNA, "192.0.2.1",
	    got, 1) == 0);
	CHECK(vault_check_password("anna@example.test", "nope", "192.0.2.9",
	    got, 2) == 0);
	CHECK(vault_check_password("zed@example.test", PW_ANNA, "192.0.2.50",
	    got, 3) == 0);
	CHECK(vault_check_password("bob", PW_BOB, "2001:db8::5", got, 4) == 0);
	wait_answers(base, 4);
	CHECK((a = find(1)) && a->status == VAULT_OK &&
	    strcmp(a->a, "anna@example.test") == 0);
	CHECK((a = find(2)) && a->status == VAULT_INVALID &&
	    strcmp(a->a, "bad password") == 0);
	CHECK((a = find(3)) && a->status == VAULT_INVALID &&
	    strcmp(a->a, "unknown user") == 0);
	CHECK((a = find(4)) && a->status == VAULT_INVALID &&
	    strcmp(a->a, "locked") == 0);

	/* A malformed request (a client address in brackets) is answered
	 * all the same, as temporary. */
	CHECK(vault_check_password("anna@example.test", PW_ANNA, "[192.0.2.1]",
	    got, 40) == 0);
	wait_answers(base, 5);
	CHECK((a = find(40)) && a->status == VAULT_TEMP &&
	    strcmp(a->a, "malformed request") == 0);

	/* A second failure is answered a second later; an SRS request
	 * sent after it is answered at once. */
	sent = now_s();
	CHECK(vault_check_password("anna@example.test", "nope2", "192.0.2.9",
	    got, 5) == 0);
	CHECK(vault_srs_forward("someone@example.org", got, 6) == 0);
	wait_answers(base, 7);
	CHECK((a = find(5)) && a->status == VAULT_INVALID);
	CHECK((s = find(6)) && s->status == VAULT_OK &&
	    strncmp(s->a, "SRS0=", 5) == 0);
	CHECK(index_of(6) < index_of(5));
	CHECK(a && a->at - sent >= 0.9);
	CHECK(s && s->at - sent < 0.9);

	/* Five checks in a row do not hold back a route request. */
	for (i = 0; i < 5; i++)
		CHECK(vault_check_password("anna@example.test", PW_ANNA,
		    "198.51.100.1", got, 10 + (uint64_t)i) == 0);
	CHECK(vault_route_auth("/no/such/route", got, 20) == 0);
	wait_answers(base, 13);
	CHECK((a = find(20)) && a->status == VAULT_NONE);
	CHECK(index_of(20) < index_of(14));
	CHECK((a = find(14)) && a->status == VAULT_OK);

	/* Secrets in chunks: the new accounts once the last chunk is in. */
	reload_in_chunks(parentfd);
	for (i = 0; i < 100 && !log_has(logpath, "accounts=1"); i++)
		usleep(50000);
	CHECK(log_has(logpath, "event=reload result=ok routes=0 accounts=1"));
	CHECK(vault_check_password("carl", PW_CARL, "192.0.2.1", got, 30) == 0);
	CHECK(vault_check_password("anna@example.test", PW_ANNA, "192.0.2.1",
	    got, 31) == 0);
	wait_answers(base, 15);
	CHECK((a = find(30)) && a->status == VAULT_OK);
	CHECK((a = find(31)) && a->status == VAULT_INVALID &&
	    strcmp(a->a, "unknown user") == 0);

	/* The log says who failed, from where, how often, how long held. */
	CHECK(log_has(logpath, "event=auth result=fail "
	    "user=<anna@example.test> client=[192.0.2.9] failures=2 delay=1s "
	    "reason=\"bad password\""));
	CHECK(log_has(logpath, "event=auth result=ok user=<anna@example.test> "
	    "client=[192.0.2.1]"));
	CHECK(!log_has(logpath, PW_ANNA) && !log_has(logpath, "nope2"));

	/* The parent goes away: the vault stops, not killed by its filter. */
	close(parentfd);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || nans < 15) {
		struct buf b;

		buf_init(&b);
		if (file_read_all(logpath, 1 << 20, &b) == 0 && b.data)
			fprintf(stderr, "vault log:\n%s", b.data);
		buf_free(&b);
	}
	event_free(ev);
	unlink(logpath);
}
