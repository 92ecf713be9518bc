/*
 * stdio: sendmail -bs, an SMTP server dialogue on standard input and
 * output, the transport Symfony Mailer and other libraries use by default.
 * It is sendmail with an SMTP front: each message it accepts is completed
 * and submitted exactly as a sendmail invocation's (sendmail.c), or kept
 * in the maildrop when ternd cannot take it now, and the reply to the end
 * of the data tells which (250, or the refusal).  Recipients are checked
 * then, with the message: all or nothing, as sendmail does.
 *
 * Input hygiene as in ternd's line reader, but a line may end in LF as
 * well as CRLF (clients on a pipe send either): a CR anywhere else, a NUL
 * or a line over the limit is refused (a command with 500, data at the
 * end of the message), and the dialogue goes on.  Commands may be at most
 * max-command-length long, data lines max-line-length, a message
 * max-message-size (and sendmail's own 64 MiB); each command must come
 * within command-timeout, the data within data-timeout; max-errors
 * refused commands end the dialogue.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "ctl/sendmail.h"
#include "lib/util.h"
#include "smtpd/smtp_parse.h"

enum bs_bad { BS_OK, BS_LONG, BS_CR, BS_NUL, BS_SIZE };

struct bs {
	struct sm	*sm;
	struct buf	 in;		/* read, not yet a whole line */
	int		 eof;
	struct buf	 out;		/* replies not yet written */
	int		 helo;
	char		*sender;	/* MAIL FROM, NULL before it */
	struct strv	 rcpts;
	struct mail_params mp;
	size_t		 cmdmax, linemax, msgmax, rcptmax;
	long long	 cmdtimeout, datatimeout;	/* ms */
	long long	 errors, maxerrors;
};

static void	bs_reply(struct bs *, const char *, ...)
		    __attribute__((format(printf, 2, 3)));

static long long
bs_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
bs_flush(struct bs *bs)
{
	if (bs->out.len > 0 && fd_write_all(STDOUT_FILENO, bs->out.data,
	    bs->out.len) == -1)
		exit(EX_IOERR);		/* the client has gone */
	buf_reset(&bs->out);
}

static void
bs_reply(struct bs *bs, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	buf_vprintf(&bs->out, fmt, ap);
	va_end(ap);
	buf_puts(&bs->out, "\r\n");
}

static void __attribute__((noreturn))
bs_close(struct bs *bs, const char *line)
{
	bs_reply(bs, "%s", line);
	bs_flush(bs);
	exit(0);
}

/* Read more input, by the deadline; 0, or -1 at its end. */
static int
bs_fill(struct bs *bs, long long deadline)
{
	struct pollfd pfd = { STDIN_FILENO, POLLIN, 0 };
	char tmp[65536];
	long long left;
	ssize_t n;

	for (;;) {
		if ((left = deadline - bs_now()) <= 0)
			bs_close(bs, "421 4.4.2 timeout, closing");
		if (poll(&pfd, 1, left > 60000 ? 60000 : (int)left) <= 0)
			continue;
		n = read(STDIN_FILENO, tmp, sizeof(tmp));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0)
			return -1;
		buf_append(&bs->in, tmp, (size_t)n);
		return 0;
	}
}

/*
 * The next line, without its LF or CRLF, into line.  *bad says what is
 * wrong with it: longer than max, a CR not before the LF, a NUL.  0, or
 * -1 at the end of the input (a last line without LF is dropped).
 */
static int
bs_line(struct bs *bs, size_t max, long long timeout, struct buf *line,
    enum bs_bad *bad)
{
	long long deadline = bs_now() + timeout;
	const char *nl;
	size_t n;
	int toolong = 0;

	for (;;) {
		nl = bs->in.len ? memchr(bs->in.data, '\n', bs->in.len) : NULL;
		if (nl != NULL)
			break;
		if (bs->in.len > max + 1) {
			toolong = 1;		/* keep nothing of it */
			buf_reset(&bs->in);
		}
		if (bs->eof || bs_fill(bs, deadline) == -1) {
			bs->eof = 1;
			return -1;
		}
	}
	n = (size_t)(nl - bs->in.data);
	buf_reset(line);
	buf_append(line, bs->in.data, n);
	buf_consume(&bs->in, n + 1);
	if (line->len > 0 && line->data[line->len - 1] == '\r')
		line->data[--line->len] = '\0';
	if (toolong || line->len > max)
		*bad = BS_LONG;
	else if (memchr(line->data, '\r', line->len) != NULL)
		*bad = BS_CR;
	else if (memchr(line->data, '\0', line->len) != NULL)
		*bad = BS_NUL;
	else
		*bad = BS_OK;
	return 0;
}

static void
bs_error(struct bs *bs, const char *line)
{
	bs_reply(bs, "%s", line);
	if (++bs->errors >= bs->maxerrors)
		bs_close(bs, "421 4.7.0 too many errors, closing");
}

static void
bs_reset(struct bs *bs)
{
	size_t i;

	free(bs->sender);
	bs->sender = NULL;
	for (i = 0; i < bs->rcpts.n; i++)
		free(bs->rcpts.v[i]);
	free(bs->rcpts.v);
	bs->rcpts.v = NULL;
	bs->rcpts.n = 0;
}

static void
bs_helo(struct bs *bs, const char *arg, int esmtp)
{
	const char *why, *host = conf_str(bs->sm->conf, K_HOSTNAME);

	if (smtp_parse_helo(arg, &why) == -1) {
		bs_error(bs, "501 5.5.4 bad HELO argument");
		return;
	}
	bs_reset(bs);
	bs->helo = 1;
	if (!esmtp) {
		bs_reply(bs, "250 %s", host);
		return;
	}
	bs_reply(bs, "250-%s", host);
	bs_reply(bs, "250-PIPELINING");
	bs_reply(bs, "250-SIZE %zu", bs->msgmax);
	bs_reply(bs, "250-8BITMIME");
	bs_reply(bs, "250-SMTPUTF8");
	bs_reply(bs, "250 ENHANCEDSTATUSCODES");
}

static void
bs_mail(struct bs *bs, const char *arg)
{
	struct smtp_path p;
	const char *rest, *why = NULL;
	char addr[SMTP_PATH_MAX * 2];

	if (!bs->helo) {
		bs_error(bs, "503 5.5.1 send HELO or EHLO first");
		return;
	}
	if (bs->sender != NULL) {
		bs_error(bs, "503 5.5.1 sender already given");
		return;
	}
	if (smtp_parse_path(arg, PATH_ALLOW_NULL | PATH_ALLOW_UTF8, &p, &rest,
	    &why) == -1) {
		bs_error(bs, "501 5.1.7 bad sender address");
		return;
	}
	if (smtp_parse_mail_params(rest, &bs->mp, &why) != 0 ||
	    bs->mp.program[0] != '\0') {
		bs_error(bs, "555 5.5.4 unsupported or bad parameter");
		return;
	}
	if (bs->mp.size > (long long)bs->msgmax) {
		bs_error(bs, "552 5.3.4 message size exceeds fixed maximum");
		return;
	}
	smtp_path_string(&p, addr, sizeof(addr));
	bs->sender = xstrdup(p.null ? "" : addr);
	bs_reply(bs, "250 2.1.0 sender ok");
}

static void
bs_rcpt(struct bs *bs, const char *arg)
{
	struct smtp_path p;
	const char *rest, *why = NULL;
	char addr[SMTP_PATH_MAX * 2];

	if (bs->sender == NULL) {
		bs_error(bs, "503 5.5.1 send MAIL first");
		return;
	}
	if (smtp_parse_path(arg, PATH_ALLOW_UTF8 | PATH_ALLOW_POSTMASTER, &p,
	    &rest, &why) == -1) {
		bs_error(bs, "501 5.1.3 bad recipient address");
		return;
	}
	if (smtp_parse_rcpt_params(rest, &why) == -1) {
		bs_error(bs, "555 5.5.4 unsupported parameter");
		return;
	}
	if (bs->rcpts.n >= bs->rcptmax) {
		bs_reply(bs, "452 4.5.3 too many recipients");
		return;
	}
	smtp_path_string(&p, addr, sizeof(addr));
	bs->rcpts.v = xreallocarray(bs->rcpts.v, bs->rcpts.n + 1,
	    sizeof(*bs->rcpts.v));
	bs->rcpts.v[bs->rcpts.n++] = xstrdup(p.domain[0] ? addr : p.local);
	bs_reply(bs, "250 2.1.5 recipient ok");
}

/* The data, dot-unstuffed, LF lines, into msg; what was wrong with it. */
static enum bs_bad
bs_data_read(struct bs *bs, struct buf *msg)
{
	long long deadline = bs_now() + bs->datatimeout;
	enum bs_bad bad, worst = BS_OK;
	struct buf line;
	const char *p;
	size_t n;

	buf_init(&line);
	for (;;) {
		if (bs_line(bs, bs->linemax, deadline - bs_now(), &line,
		    &bad) == -1)
			exit(0);	/* the client went away mid-message */
		if (bad == BS_OK && line.len == 1 && line.data[0] == '.')
			break;
		if (bad != BS_OK) {
			if (worst == BS_OK)
				worst = bad;
			continue;
		}
		p = line.data ? line.data : "";
		n = line.len;
		if (n > 0 && p[0] == '.') {
			p++;
			n--;
		}
		if (msg->len + n + 1 > bs->msgmax) {
			worst = BS_SIZE;
			continue;
		}
		buf_append(msg, p, n);
		buf_putc(msg, '\n');
	}
	buf_free(&line);
	return worst;
}

/* Submit one message as sendmail would; the reply to the data says how. */
static void
bs_submit(struct bs *bs, const struct buf *data)
{
	struct sm *sm = bs->sm;
	size_t i;
	int ex;

	sm_reset(sm);
	sm->sender = bs->sender;
	for (i = 0; i < bs->rcpts.n; i++)
		sm_add_rcpt(sm, bs->rcpts.v[i], strlen(bs->rcpts.v[i]),
		    EX_USAGE, "");
	sm_identity(sm);
	sm_build(sm, data);
	ex = sm_send(sm);
	sm->sender = NULL;
	if (ex == 0)
		bs_reply(bs, "250 2.0.0 message accepted for delivery");
	else if (ex == EX_TEMPFAIL)
		bs_reply(bs, "451 4.3.0 message not accepted, try again later");
	else if (ex == EX_NOUSER)
		bs_reply(bs, "550 5.1.1 a recipient was refused; message not "
		    "sent");
	else if (ex == EX_DATAERR)
		bs_reply(bs, "554 5.6.0 message refused");
	else
		bs_reply(bs, "554 5.3.0 message not sent");
}

static void
bs_data(struct bs *bs)
{
	struct buf msg;
	enum bs_bad bad;

	if (bs->sender == NULL) {
		bs_error(bs, "503 5.5.1 send MAIL first");
		return;
	}
	if (bs->rcpts.n == 0) {
		bs_error(bs, "554 5.5.1 no valid recipients");
		return;
	}
	bs_reply(bs, "354 end data with <CR><LF>.<CR><LF>");
	bs_flush(bs);
	buf_init(&msg);
	buf_append(&msg, "", 0);
	bad = bs_data_read(bs, &msg);
	if (bad == BS_SIZE)
		bs_reply(bs, "552 5.3.4 message size exceeds fixed maximum");
	else if (bad == BS_LONG)
		bs_reply(bs, "554 5.5.2 line too long");
	else if (bad != BS_OK)
		bs_reply(bs, "554 5.6.0 bare CR or NUL in message");
	else
		bs_submit(bs, &msg);
	buf_free(&msg);
	bs_reset(bs);
}

static void
bs_command(struct bs *bs, const char *line)
{
	struct smtp_command cmd;
	const char *why = NULL;

	if (smtp_parse_command(line, &cmd, &why) == -1) {
		bs_error(bs, "501 5.5.4 syntax error");
		return;
	}
	switch (cmd.verb) {
	case VERB_HELO:
	case VERB_EHLO:
		bs_helo(bs, cmd.arg, cmd.verb == VERB_EHLO);
		break;
	case VERB_MAIL:
		bs_mail(bs, cmd.arg);
		break;
	case VERB_RCPT:
		bs_rcpt(bs, cmd.arg);
		break;
	case VERB_DATA:
		bs_data(bs);
		break;
	case VERB_RSET:
		bs_reset(bs);
		bs_reply(bs, "250 2.0.0 ok");
		break;
	case VERB_NOOP:
		bs_reply(bs, "250 2.0.0 ok");
		break;
	case VERB_HELP:
		bs_reply(bs, "214 2.0.0 commands: HELO EHLO MAIL RCPT DATA "
		    "RSET NOOP QUIT");
		break;
	case VERB_QUIT:
		bs_close(bs, "221 2.0.0 bye");
	case VERB_UNKNOWN:
		bs_error(bs, "500 5.5.2 command unrecognized");
		break;
	default:
		bs_error(bs, "502 5.5.1 command not implemented");
		break;
	}
}

int
stdio_main(struct sm *sm)
{
	struct bs bs;
	struct buf line;
	enum bs_bad bad;
	long long size = conf_num(sm->conf, NULL, K_MAX_MESSAGE_SIZE);

	signal(SIGPIPE, SIG_IGN);
	memset(&bs, 0, sizeof(bs));
	bs.sm = sm;
	buf_init(&bs.in);
	buf_init(&bs.out);
	buf_init(&line);
	bs.cmdmax = (size_t)conf_num(sm->conf, NULL, K_MAX_COMMAND_LENGTH);
	bs.linemax = (size_t)conf_num(sm->conf, NULL, K_MAX_LINE_LENGTH);
	bs.msgmax = size > 0 && size < SM_MSG_MAX ? (size_t)size : SM_MSG_MAX;
	bs.rcptmax = (size_t)conf_num(sm->conf, NULL, K_MAX_TRUSTED_RECIPIENTS);
	bs.cmdtimeout = conf_num(sm->conf, NULL, K_COMMAND_TIMEOUT);
	bs.datatimeout = conf_num(sm->conf, NULL, K_DATA_TIMEOUT);
	bs.maxerrors = conf_num(sm->conf, NULL, K_MAX_ERRORS);
	bs_reply(&bs, "220 %s ESMTP Tern (sendmail -bs)",
	    conf_str(sm->conf, K_HOSTNAME));
	for (;;) {
		/* Replies wait while pipelined commands are at hand. */
		if (bs.in.len == 0 || memchr(bs.in.data, '\n', bs.in.len) ==
		    NULL)
			bs_flush(&bs);
		if (bs_line(&bs, bs.cmdmax, bs.cmdtimeout, &line, &bad) == -1)
			break;
		if (bad == BS_LONG)
			bs_error(&bs, "500 5.5.2 line too long");
		else if (bad != BS_OK)
			bs_error(&bs, "500 5.5.2 bare CR or NUL in command");
		else
			bs_command(&bs, line.data ? line.data : "");
	}
	bs_flush(&bs);
	return 0;
}
