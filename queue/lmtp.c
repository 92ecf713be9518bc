/*
 * lmtp: the LMTP client (RFC 2033) of local-delivery lmtp, for handing an
 * account's mail to a local store such as Dovecot.  Runs in a delivery
 * worker the parent dropped to an unprivileged account (virtual-user): it
 * needs only the socket.  LHLO, MAIL, RCPT, DATA, then one reply per
 * accepted recipient after the final dot; 2xx sent, 4xx deferred, 5xx
 * failed; a timeout or a broken dialogue is temporary.  Replies are
 * sanitised before they reach the log or a DSN.
 */
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/mda.h"
#include "lib/util.h"

#define LMTP_CONNECT_SECS	30
#define LMTP_CMD_SECS		300
#define LMTP_DATA_SECS		180	/* one write of the message stalls */
#define LMTP_DONE_SECS		600	/* the replies after the final dot */
#define LMTP_REPLY_LINES	100
#define LMTP_LINE_MAX		512

struct lmtp {
	int	 fd;
	time_t	 deadline;	/* of the whole delivery */
	char	 in[4096];
	size_t	 ilen;
	int	 secs;		/* the current step's timeout */
};

/* Milliseconds to wait: the step's timeout, within the deadline. */
static int
lmtp_ms(const struct lmtp *l)
{
	time_t now = time(NULL), end = now + l->secs;

	if (end > l->deadline)
		end = l->deadline;
	return end > now ? (int)(end - now) * 1000 : 0;
}

static int
lmtp_wait(struct lmtp *l, short ev)
{
	struct pollfd pf;
	int ms, r;

	for (;;) {
		if ((ms = lmtp_ms(l)) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		pf.fd = l->fd;
		pf.events = ev;
		if ((r = poll(&pf, 1, ms)) > 0)
			return 0;
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (errno != EINTR)
			return -1;
	}
}

/* "unix:/path", "host:port", "[v6]:port"; names other than localhost are
   not looked up here (every lookup goes through dns/). */
static int
lmtp_addr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char host[256];
	const char *colon;
	long long port;
	size_t n;

	memset(ss, 0, sizeof(*ss));
	if (strncmp(spec, "unix:", 5) == 0) {
		sun->sun_family = AF_UNIX;
		if (str_copy(sun->sun_path, spec + 5, sizeof(sun->sun_path)) >=
		    sizeof(sun->sun_path))
			return -1;
		*len = sizeof(*sun);
		return 0;
	}
	if ((colon = strrchr(spec, ':')) == NULL ||
	    parse_ll(colon + 1, 1, 65535, &port) == -1)
		return -1;
	n = (size_t)(colon - spec);
	if (n >= 2 && spec[0] == '[' && spec[n - 1] == ']') {
		spec++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(host))
		return -1;
	memcpy(host, spec, n);
	host[n] = '\0';
	if (strcmp(host, "localhost") == 0)
		str_copy(host, "127.0.0.1", sizeof(host));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*len = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*sin6);
		return 0;
	}
	return -1;
}

static int
lmtp_connect(struct lmtp *l, const char *spec, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len, elen;
	int e = 0;

	if (lmtp_addr(spec, &ss, &len) == -1) {
		snprintf(err, errlen, "lmtp %s: not unix:/path or address:port",
		    spec);
		return -1;
	}
	l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (l->fd == -1) {
		snprintf(err, errlen, "lmtp %s: socket: %s", spec,
		    strerror(errno));
		return -1;
	}
	l->secs = LMTP_CONNECT_SECS;
	if (connect(l->fd, (struct sockaddr *)&ss, len) == -1) {
		if (errno != EINPROGRESS)
			e = errno;
		else if (lmtp_wait(l, POLLOUT) == -1)
			e = errno;
		else {
			elen = sizeof(e);
			if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &e,
			    &elen) == -1)
				e = errno;
		}
	}
	if (e) {
		snprintf(err, errlen, "lmtp %s: connect: %s", spec,
		    strerror(e));
		close(l->fd);
		l->fd = -1;
		return -1;
	}
	return 0;
}

static int
lmtp_put(void *arg, const char *p, size_t n)
{
	struct lmtp *l = arg;
	ssize_t w;

	while (n > 0) {
		if ((w = write(l->fd, p, n)) > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w == -1 && errno == EINTR)
			continue;
		else if (w == -1 && errno == EAGAIN) {
			if (lmtp_wait(l, POLLOUT) == -1)
				return -1;
		} else
			return -1;
	}
	return 0;
}

/* One reply line without its line end; a longer line is cut. */
static int
lmtp_line(struct lmtp *l, char *line, size_t len)
{
	size_t o = 0, i;
	ssize_t n;

	for (;;) {
		for (i = 0; i < l->ilen; i++)
			if (l->in[i] == '\n')
				break;
		for (size_t k = 0; k < i; k++)
			if (o + 1 < len)
				line[o++] = l->in[k];
		if (i < l->ilen) {
			memmove(l->in, l->in + i + 1, l->ilen - i - 1);
			l->ilen -= i + 1;
			if (o && line[o - 1] == '\r')
				o--;
			line[o] = '\0';
			return 0;
		}
		l->ilen = 0;
		if (lmtp_wait(l, POLLIN) == -1)
			return -1;
		n = read(l->fd, l->in, sizeof(l->in));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = ECONNRESET;
			return -1;
		}
		l->ilen = (size_t)n;
	}
}

/*
 * A whole reply: its code, or -1 on a broken dialogue (errno set).  text
 * gets "code text text...", sanitised.
 */
static int
lmtp_reply(struct lmtp *l, int secs, char *text, size_t textlen)
{
	char line[LMTP_LINE_MAX], clean[LMTP_LINE_MAX];
	struct buf b;
	int code = -1, i;

	l->secs = secs;
	buf_init(&b);
	for (i = 0; i < LMTP_REPLY_LINES; i++) {
		if (lmtp_line(l, line, sizeof(line)) == -1)
			break;
		if (strlen(line) < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '9' || line[2] < '0' ||
		    line[2] > '9' || (line[3] != '\0' && line[3] != ' ' &&
		    line[3] != '-')) {
			errno = EPROTO;
			break;
		}
		mda_clean(clean, sizeof(clean), line + (line[3] ? 4 : 3),
		    strlen(line + (line[3] ? 4 : 3)));
		if (i == 0)
			buf_append(&b, line, 3);
		if (clean[0] && b.len < textlen)
			buf_printf(&b, " %s", clean);
		if (line[3] != '-') {
			code = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
			    (line[2] - '0');
			break;
		}
	}
	if (i == LMTP_REPLY_LINES)
		errno = EPROTO;
	str_copy(text, b.len ? b.data : "", textlen);
	buf_free(&b);
	return code;
}

static int
lmtp_cmd(struct lmtp *l, const char *line)
{
	struct buf b;
	int r;

	buf_init(&b);
	buf_printf(&b, "%s\r\n", line);
	l->secs = LMTP_CMD_SECS;
	r = lmtp_put(l, b.data, b.len);
	buf_free(&b);
	return r;
}

/* The outcome of a reply to cmd: MDA_OK when it is want, else why not. */
static int
lmtp_expect(struct lmtp *l, const char *spec, const char *cmd, int want,
    int secs, char *err, size_t errlen)
{
	char text[1024];
	int code = lmtp_reply(l, secs, text, sizeof(text));

	if (code == -1) {
		snprintf(err, errlen, "lmtp %s: %s after %s", spec,
		    strerror(errno), cmd);
		return MDA_TEMP;
	}
	if (code / 100 == want / 100)
		return MDA_OK;
	snprintf(err, errlen, "%s (lmtp %s, after %s)", text, spec, cmd);
	return code / 100 == 5 ? MDA_PERM : MDA_TEMP;
}

static int
lmtp_dialogue(struct lmtp *l, const struct mda_job *j, const char *spec,
    const char *addr, char *err, size_t errlen)
{
	char line[2900], text[1024];
	int r, code, dsn;

	if ((r = lmtp_expect(l, spec, "connect", 220, LMTP_CMD_SECS, err,
	    errlen)) != MDA_OK)
		return r;
	snprintf(line, sizeof(line), "LHLO %s", j->helo);
	if (lmtp_cmd(l, line) == -1)
		goto broken;
	/* DSN parameters go to a server that offers DSN (RFC 3461). */
	code = lmtp_reply(l, LMTP_CMD_SECS, text, sizeof(text));
	dsn = strstr(text, " DSN ") != NULL || (strlen(text) >= 4 &&
	    strcmp(text + strlen(text) - 4, " DSN") == 0);
	if (code / 100 != 2) {
		r = code == -1 ? MDA_OK : code / 100 == 5 ? MDA_PERM : MDA_TEMP;
		snprintf(err, errlen, "%s (lmtp %s, after LHLO)", text, spec);
		goto broken;
	}
	snprintf(line, sizeof(line), "MAIL FROM:<%s>%s", j->sender,
	    dsn && j->dsn_mail ? j->dsn_mail : "");
	if (lmtp_cmd(l, line) == -1 || (r = lmtp_expect(l, spec, "MAIL FROM",
	    250, LMTP_CMD_SECS, err, errlen)) != MDA_OK)
		goto broken;
	snprintf(line, sizeof(line), "RCPT TO:<%s>%s", addr,
	    dsn && j->dsn_rcpt ? j->dsn_rcpt : "");
	if (lmtp_cmd(l, line) == -1 || (r = lmtp_expect(l, spec, "RCPT TO",
	    250, LMTP_CMD_SECS, err, errlen)) != MDA_OK)
		goto broken;
	if (lmtp_cmd(l, "DATA") == -1 || (r = lmtp_expect(l, spec, "DATA",
	    354, LMTP_CMD_SECS, err, errlen)) != MDA_OK)
		goto broken;
	l->secs = LMTP_DATA_SECS;
	if (mda_stream(j->msgfd, NULL, MS_DOTSTUFF | MS_FINALEOL, lmtp_put,
	    l) == -1 || lmtp_put(l, ".\r\n", 3) == -1) {
		snprintf(err, errlen, "lmtp %s: %s while sending the message",
		    spec, strerror(errno));
		return MDA_TEMP;
	}
	/* One reply per accepted recipient; this session has one. */
	if ((code = lmtp_reply(l, LMTP_DONE_SECS, text, sizeof(text))) == -1) {
		snprintf(err, errlen, "lmtp %s: %s after the end of data", spec,
		    strerror(errno));
		return MDA_TEMP;
	}
	if (code / 100 == 2) {
		snprintf(err, errlen, "delivered to lmtp %s: %s", spec, text);
		r = MDA_OK;
	} else {
		snprintf(err, errlen, "%s (lmtp %s, after end of data)", text,
		    spec);
		r = code / 100 == 5 ? MDA_PERM : MDA_TEMP;
	}
	(void)lmtp_cmd(l, "QUIT");
	return r;
broken:
	if (r == MDA_OK) {
		snprintf(err, errlen, "lmtp %s: %s", spec, strerror(errno));
		r = MDA_TEMP;
	}
	(void)lmtp_cmd(l, "QUIT");
	return r;
}

int
lmtp_deliver(const struct mda_job *j, const char *spec, const char *addr,
    char *err, size_t errlen)
{
	struct lmtp l;
	int r;

	memset(&l, 0, sizeof(l));
	l.deadline = j->deadline;
	if (lmtp_connect(&l, spec, err, errlen) == -1)
		return MDA_TEMP;
	r = lmtp_dialogue(&l, j, spec, addr, err, errlen);
	close(l.fd);
	return r;
}
