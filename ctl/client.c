/*
 * client: sendmail's SMTP client of ternd's submit socket (or of the
 * connection ternd's parent hands a pickup).  Every reply is untrusted:
 * bounded, checked line by line, and only its code is acted upon; the
 * whole dialogue has one deadline.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "ctl/sendmail.h"
#include "lib/util.h"

void
client_init(struct client *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	buf_init(&c->in);
	buf_init(&c->reply);
	buf_init(&c->out);
}

void
client_free(struct client *c)
{
	client_close(c);
	buf_free(&c->in);
	buf_free(&c->reply);
	buf_free(&c->out);
}

static long long
client_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
client_wait(struct client *c, short events)
{
	struct pollfd pfd;
	long long left;
	int r;

	for (;;) {
		if ((left = c->deadline - client_now()) <= 0) {
			c->why = "timed out";
			return -1;
		}
		pfd.fd = c->fd;
		pfd.events = events;
		pfd.revents = 0;
		r = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (r > 0)
			return 0;
		if (r == -1 && errno != EINTR) {
			c->why = strerror(errno);
			return -1;
		}
	}
}

int
client_connect(struct client *c, const char *path)
{
	struct sockaddr_un sun;
	long long until = client_now() + SM_CONNECT_MS;
	struct timespec pause = { 0, 100 * 1000 * 1000 };
	int err;
	socklen_t elen = sizeof(err);

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	c->path = path;
	c->deadline = client_now() + SM_TIMEOUT_MS;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd == -1)
		return -1;
	for (;;) {
		if (connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && client_now() < until) {
			nanosleep(&pause, NULL);	/* backlog full */
			continue;
		}
		if (errno != EINPROGRESS)
			break;
		if (client_wait(c, POLLOUT) == -1) {
			errno = ETIMEDOUT;
			break;
		}
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1)
			break;
		if (err == 0)
			return 0;
		errno = err;
		break;
	}
	err = errno;
	close(c->fd);
	c->fd = -1;
	errno = err;
	return -1;
}

void
client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int
client_write(struct client *c, const char *p, size_t n)
{
	ssize_t w;

	if (c->fd < 0) {
		c->why = "connection closed";
		return -1;
	}
	while (n > 0) {
		w = send(c->fd, p, n, MSG_NOSIGNAL);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w == -1 && errno == EINTR)
			continue;
		else if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (client_wait(c, POLLOUT) == -1)
				return -1;
		} else {
			c->why = w == -1 ? strerror(errno) : "write failed";
			return -1;
		}
	}
	return 0;
}

/* Take one reply line from c->in; 1 if it was the last, 0 if not, -1. */
static int
client_reply_line(struct client *c, const char *nl, int *code)
{
	const char *l = c->in.data;
	size_t ll = (size_t)(nl - l), used = ll + 1;
	int last;

	if (ll > 0 && l[ll - 1] == '\r')
		ll--;
	if (ll < 3 || l[0] < '1' || l[0] > '5' || l[1] < '0' || l[1] > '9' ||
	    l[2] < '0' || l[2] > '9' || (ll > 3 && l[3] != ' ' && l[3] != '-')) {
		c->why = "protocol error: malformed reply";
		return -1;
	}
	if (c->reply.len + ll + 1 > SM_REPLY_MAX) {
		c->why = "protocol error: reply too long";
		return -1;
	}
	*code = (l[0] - '0') * 100 + (l[1] - '0') * 10 + (l[2] - '0');
	last = ll == 3 || l[3] == ' ';
	buf_append(&c->reply, l, ll);
	buf_putc(&c->reply, '\n');
	buf_consume(&c->in, used);
	return last;
}

/* Read one (possibly multi-line) reply; its code, or -1 (c->why). */
int
client_reply(struct client *c)
{
	char tmp[8192];
	const char *nl;
	ssize_t n;
	int code = 0, r;

	buf_reset(&c->reply);
	if (c->fd < 0) {
		c->why = "connection closed";
		return -1;
	}
	for (;;) {
		while (c->in.len > 0 &&
		    (nl = memchr(c->in.data, '\n', c->in.len)) != NULL) {
			if ((r = client_reply_line(c, nl, &code)) == -1)
				return -1;
			if (r == 1)
				return code;
		}
		if (c->in.len > SM_REPLY_MAX) {
			c->why = "protocol error: reply too long";
			return -1;
		}
		if (client_wait(c, POLLIN) == -1)
			return -1;
		n = read(c->fd, tmp, sizeof(tmp));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			c->why = n == 0 ? "connection closed by ternd" :
			    strerror(errno);
			return -1;
		}
		buf_append(&c->in, tmp, (size_t)n);
	}
}

/* A write failed: ternd may have said why (421) before it closed. */
int
client_last_word(struct client *c)
{
	const char *why = c->why;
	int code;

	if ((code = client_reply(c)) == -1)
		c->why = why;
	return code;
}

int
client_cmd(struct client *c, const char *fmt, ...)
{
	va_list ap;

	buf_reset(&c->out);
	va_start(ap, fmt);
	buf_vprintf(&c->out, fmt, ap);
	va_end(ap);
	buf_puts(&c->out, "\r\n");
	if (client_write(c, c->out.data, c->out.len) == -1)
		return client_last_word(c);
	return client_reply(c);
}

/* After a failure: end the session politely, briefly, then close. */
void
client_bye(struct client *c, int rset)
{
	long long soon = client_now() + SM_BYE_MS;

	if (c->fd < 0)
		return;
	if (c->deadline > soon || c->deadline <= client_now())
		c->deadline = soon;
	if (!rset || client_cmd(c, "RSET") != -1)
		(void)client_cmd(c, "QUIT");
	client_close(c);
}

/* The message, dot-stuffed, CRLF-ended, then the end marker. */
int
client_body(struct client *c, const struct buf *msg)
{
	const char *p = msg->data, *end = msg->data + msg->len, *nl;

	buf_reset(&c->out);
	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (*p == '.')
			buf_putc(&c->out, '.');
		buf_append(&c->out, p, (size_t)(nl - p));
		buf_puts(&c->out, "\r\n");
		p = nl + 1;
		if (c->out.len >= SM_CHUNK) {
			if (client_write(c, c->out.data, c->out.len) == -1)
				return -1;
			buf_reset(&c->out);
		}
	}
	buf_puts(&c->out, ".\r\n");
	return client_write(c, c->out.data, c->out.len);
}


void
client_attach(struct client *c, int fd, const char *name)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl != -1)
		fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	c->fd = fd;
	c->path = name;
	c->deadline = client_now() + SM_TIMEOUT_MS;
}

static void
client_extensions(struct client *c)
{
	const char *p = c->reply.data, *nl, *kw;
	size_t left = c->reply.len, kl;

	c->size = c->eightbit = c->utf8 = c->xprogram = 0;
	while (left > 0 && (nl = memchr(p, '\n', left)) != NULL) {
		kw = p + 4;
		if (nl - p > 4) {
			for (kl = 0; kw + kl < nl && kw[kl] != ' '; kl++)
				;
			if (kl == 4 && strncasecmp(kw, "SIZE", 4) == 0)
				c->size = 1;
			else if (kl == 8 && strncasecmp(kw, "8BITMIME", 8) == 0)
				c->eightbit = 1;
			else if (kl == 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0)
				c->utf8 = 1;
			else if (kl == 8 && strncasecmp(kw, "XPROGRAM", 8) == 0)
				c->xprogram = 1;
		}
		left -= (size_t)(nl - p) + 1;
		p = nl + 1;
	}
}

int
client_hello(struct client *c)
{
	int code;

	c->stage = "greeting";
	if ((code = client_reply(c)) != 220)
		return code;
	c->stage = "HELO";
	code = client_cmd(c, "EHLO localhost");
	if (code == 250) {
		client_extensions(c);
		return 0;
	}
	if (code / 100 == 5)
		code = client_cmd(c, "HELO localhost");
	return code == 250 ? 0 : code;
}

static int
client_has8bit(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] >= 128)
			return 1;
	return 0;
}

int
client_mail(struct client *c, const struct sm *sm)
{
	struct buf params;
	size_t i, lines = 0, size;
	int utf8, code;

	buf_init(&params);
	buf_append(&params, "", 0);
	utf8 = client_has8bit(sm->from, strlen(sm->from)) ||
	    client_has8bit(sm->msg.data, sm->hdrlen);
	for (i = 0; i < sm->rcpts.n && !utf8; i++)
		utf8 = client_has8bit(sm->rcpts.v[i], strlen(sm->rcpts.v[i]));
	if (c->size) {
		for (i = 0; i < sm->msg.len; i++)
			lines += sm->msg.data[i] == '\n';
		size = sm->msg.len + lines;	/* each LF is sent as CRLF */
		buf_printf(&params, " SIZE=%zu", size);
	}
	if (c->eightbit && client_has8bit(sm->msg.data, sm->msg.len))
		buf_puts(&params, " BODY=8BITMIME");
	if (c->utf8 && utf8)
		buf_puts(&params, " SMTPUTF8");
	/* Who ran sendmail, for ternd's Received: field and log. */
	if (c->xprogram && sm->program[0] != '\0')
		buf_printf(&params, " XPROGRAM=%s", sm->program);
	code = client_cmd(c, "MAIL FROM:<%s>%s", sm->from, params.data);
	buf_free(&params);
	return code;
}
