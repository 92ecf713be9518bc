/*
 * test_ipc: a channel whose peer vanished while its requests were still
 * queued.  The reply fails inside the receive callback; the close callback
 * (which frees the channel) must run later, from the loop, exactly once.
 * ipc_drain hands over, at once, what a dead peer sent before it died
 * (the smtp process does so when a new queue channel overtakes the old
 * one's end), and says whether the peer is gone.
 */
#include <sys/socket.h>

#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/ipc.h"
#include "regress/unit/unit.h"

void test_ipc(void);

static int got, closed;

static void
ipc_test_closecb(struct ipc *c, void *arg)
{
	closed++;
	ipc_free(c);
}

static void
ipc_test_cb(struct ipc *c, int type, struct rec_reader *r, int fd, void *arg)
{
	got++;
	ipc_send(c, 2, "x", 1, -1);	/* fails: the peer is gone */
}

static int drained;

static void
ipc_test_count(struct ipc *c, int type, struct rec_reader *r, int fd,
    void *arg)
{
	drained++;
}

static void
ipc_test_noclose(struct ipc *c, void *arg)
{
	closed += 100;		/* must not run: freed before the loop */
}

static void
test_ipc_drain(void)
{
	struct event_base *base = event_base_new();
	char m[4] = { 0, 1, 0, 0 };
	struct ipc *c;
	int sv[2], i;

	/* A live peer: what is there is taken, and it is still open. */
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	c = ipc_new(base, sv[0], ipc_test_count, ipc_test_noclose, NULL);
	CHECK(send(sv[1], m, sizeof(m), 0) == 4);
	drained = 0;
	CHECK(ipc_drain(c) == 0);
	CHECK(drained == 1);
	CHECK(ipc_send(c, 2, "x", 1, -1) == 0);
	ipc_free(c);
	close(sv[1]);

	/* A dead peer: three answers, then its end, all without the loop. */
	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	c = ipc_new(base, sv[0], ipc_test_count, ipc_test_noclose, NULL);
	for (i = 0; i < 3; i++)
		CHECK(send(sv[1], m, sizeof(m), 0) == 4);
	close(sv[1]);
	drained = 0;
	closed = 0;
	CHECK(ipc_drain(c) == 1);
	CHECK(drained == 3);
	CHECK(ipc_send(c, 2, "x", 1, -1) == -1);	/* never reaches it */
	ipc_free(c);
	for (i = 0; i < 3; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CHECK(closed == 0);
	event_base_free(base);
}

void
test_ipc(void)
{
	struct event_base *base = event_base_new();
	char m[4] = { 0, 1, 0, 0 };
	int sv[2], i;

	CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
	ipc_new(base, sv[0], ipc_test_cb, ipc_test_closecb, NULL);
	CHECK(send(sv[1], m, sizeof(m), 0) == 4);
	CHECK(send(sv[1], m, sizeof(m), 0) == 4);
	close(sv[1]);
	for (i = 0; i < 10 && closed == 0; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	CHECK(got >= 1);
	CHECK(closed == 1);
	event_base_free(base);
	test_ipc_drain();
}
