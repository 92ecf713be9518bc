/*
 * ipc: SOCK_SEQPACKET message channels on libevent.  Used by every ternd
 * process.  Each datagram is one whole message, so there is no framing to
 * get wrong; an oversized or short datagram closes the channel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <poll.h>
#include <unistd.h>

#include <event2/event.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/util.h"

struct ipc_out {
	struct ipc_out	*next;
	size_t		 len;
	int		 fd;
	unsigned char	 data[];
};

struct ipc {
	int		 fd;
	struct event	*rev, *wev;
	struct event	*closeev;	/* the close callback, from the loop */
	ipc_cb		 cb;
	ipc_close_cb	 closecb;
	void		*arg;
	struct ipc_out	*head, *tail;
	int		 dead;
	unsigned char	*rbuf;
};

static void	ipc_read(evutil_socket_t, short, void *);
static void	ipc_write(evutil_socket_t, short, void *);
static void	ipc_closed(evutil_socket_t, short, void *);

struct ipc *
ipc_new(struct event_base *base, int fd, ipc_cb cb, ipc_close_cb closecb,
    void *arg)
{
	struct ipc *c = xcalloc(1, sizeof(*c));

	evutil_make_socket_nonblocking(fd);
	evutil_make_socket_closeonexec(fd);
	c->fd = fd;
	c->cb = cb;
	c->closecb = closecb;
	c->arg = arg;
	c->rbuf = xmalloc(IPC_MAX + 4);
	c->rev = event_new(base, fd, EV_READ | EV_PERSIST, ipc_read, c);
	c->wev = event_new(base, fd, EV_WRITE, ipc_write, c);
	c->closeev = event_new(base, -1, 0, ipc_closed, c);
	/* Top priority where the loop has several: requests before flushes. */
	event_priority_set(c->rev, 0);
	event_priority_set(c->wev, 0);
	event_add(c->rev, NULL);
	return c;
}

int
ipc_fd(const struct ipc *c)
{
	return c->fd;
}

void
ipc_free(struct ipc *c)
{
	struct ipc_out *o, *n;

	if (c == NULL)
		return;
	event_free(c->rev);
	event_free(c->wev);
	event_free(c->closeev);
	for (o = c->head; o; o = n) {
		n = o->next;
		if (o->fd >= 0)
			close(o->fd);
		explicit_bzero(o->data, o->len);
		free(o);
	}
	close(c->fd);
	free(c->rbuf);
	free(c);
}

/*
 * A dead channel is reported from the event loop, never from inside
 * ipc_send() or a receive callback: the owner's close callback frees the
 * channel, and its callers must not find it freed under them.
 */
static void
ipc_fail(struct ipc *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	event_del(c->rev);
	event_del(c->wev);
	event_active(c->closeev, EV_TIMEOUT, 1);
}

static void
ipc_closed(evutil_socket_t fd, short ev, void *arg)
{
	struct ipc *c = arg;

	if (c->closecb)
		c->closecb(c, c->arg);
}

static int
ipc_sendone(struct ipc *c, struct ipc_out *o)
{
	struct msghdr msg;
	struct iovec iov;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int))];
	} cm;
	ssize_t n;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = o->data;
	iov.iov_len = o->len;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	if (o->fd >= 0) {
		struct cmsghdr *h;

		memset(&cm, 0, sizeof(cm));
		msg.msg_control = cm.buf;
		msg.msg_controllen = sizeof(cm.buf);
		h = CMSG_FIRSTHDR(&msg);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &o->fd, sizeof(int));
	}
	do
		n = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return (errno == EAGAIN || errno == ENOBUFS) ? 0 : -1;
	return 1;
}

static void
ipc_flush(struct ipc *c)
{
	struct ipc_out *o;
	int r;

	while ((o = c->head) != NULL) {
		r = ipc_sendone(c, o);
		if (r == 0) {
			event_add(c->wev, NULL);
			return;
		}
		if (r == -1) {
			ipc_fail(c);
			return;
		}
		c->head = o->next;
		if (c->head == NULL)
			c->tail = NULL;
		if (o->fd >= 0)
			close(o->fd);
		explicit_bzero(o->data, o->len);	/* a password, a hash */
		free(o);
	}
}

int
ipc_send(struct ipc *c, int type, const void *payload, size_t len, int fd)
{
	struct ipc_out *o;

	if (c->dead || len > IPC_MAX) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	o = xmalloc(sizeof(*o) + len + 4);
	o->next = NULL;
	o->fd = fd;
	o->len = len + 4;
	o->data[0] = (unsigned char)(type >> 8);
	o->data[1] = (unsigned char)type;
	o->data[2] = o->data[3] = 0;
	if (len)
		memcpy(o->data + 4, payload, len);
	if (c->tail)
		c->tail->next = o;
	else
		c->head = o;
	c->tail = o;
	if (c->head == o)
		ipc_flush(c);
	/* A peer already gone took nothing: the caller may say so. */
	return c->dead ? -1 : 0;
}

static void
ipc_write(evutil_socket_t fd, short ev, void *arg)
{
	ipc_flush(arg);
}

/* One datagram into rbuf: its length, 0 on EOF, -1 on error or EAGAIN. */
static ssize_t
ipc_recvbuf(int fd, unsigned char *rbuf, size_t cap, int *fdp)
{
	struct msghdr msg;
	struct iovec iov;
	struct cmsghdr *h;
	union {
		struct cmsghdr	hdr;
		char		buf[CMSG_SPACE(sizeof(int) * 4)];
	} cm;
	ssize_t n;

	memset(&msg, 0, sizeof(msg));
	iov.iov_base = rbuf;
	iov.iov_len = cap;
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = cm.buf;
	msg.msg_controllen = sizeof(cm.buf);
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n == -1 && errno == EINTR);
	*fdp = -1;
	if (n <= 0)
		return n;
	for (h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
		size_t nfd, i;

		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		nfd = (h->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfd; i++) {
			int f;

			memcpy(&f, CMSG_DATA(h) + i * sizeof(int), sizeof(int));
			if (*fdp == -1)
				*fdp = f;
			else
				close(f);	/* only one fd per message */
		}
	}
	if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
		if (*fdp >= 0)
			close(*fdp);
		errno = EMSGSIZE;
		return -1;
	}
	return n;
}

static ssize_t
ipc_recvone(struct ipc *c, int *fdp)
{
	return ipc_recvbuf(c->fd, c->rbuf, IPC_MAX + 4, fdp);
}

int
ipc_recv_wait(int fd, int *type, void *buf, size_t cap, size_t *len,
    int *msgfd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	unsigned char *b = buf;
	ssize_t n;
	int r;

	*msgfd = -1;
	do
		r = poll(&pfd, 1, timeout_ms);
	while (r == -1 && errno == EINTR);
	if (r != 1)
		return -1;
	n = ipc_recvbuf(fd, buf, cap, msgfd);
	if (n < 4) {
		if (n > 0 && *msgfd >= 0)
			close(*msgfd);
		*msgfd = -1;
		return -1;
	}
	*type = (b[0] << 8) | b[1];
	*len = (size_t)n - 4;
	memmove(b, b + 4, *len);
	return 0;
}

/*
 * Dispatch up to max received messages.  Returns 1 when the channel is
 * dead (peer closed, or a bad datagram), 0 when nothing more is waiting,
 * -1 when max was reached with more perhaps waiting.
 */
static int
ipc_take(struct ipc *c, int max)
{
	struct rec_reader r;
	int type, mfd, i;
	ssize_t n;

	for (i = 0; i < max; i++) {
		if (c->dead)
			return 1;
		n = ipc_recvone(c, &mfd);
		if (n == -1 && errno == EAGAIN)
			return 0;
		if (n <= 0 || n < 4) {
			if (n > 0 && mfd >= 0)
				close(mfd);
			ipc_fail(c);
			return 1;
		}
		type = (c->rbuf[0] << 8) | c->rbuf[1];
		rec_reader_init(&r, c->rbuf + 4, (size_t)n - 4);
		c->cb(c, type, &r, mfd, c->arg);
		/* What a message carried (a route password) is not kept. */
		explicit_bzero(c->rbuf, (size_t)n);
	}
	return c->dead ? 1 : -1;
}

static void
ipc_read(evutil_socket_t fd, short ev, void *arg)
{
	/* Drain what is there, so the receiver sees bursts (group commit). */
	ipc_take(arg, 256);
}

int
ipc_drain(struct ipc *c)
{
	int r, rounds;

	/* Bounded: a live peer could keep sending. */
	for (rounds = 0; rounds < 64; rounds++)
		if ((r = ipc_take(c, 256)) != -1)
			return r;
	return 0;
}
