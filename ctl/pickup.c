/*
 * pickup: ternctl run by ternd's parent on one maildrop file.  The parent
 * (ternd.c) opened the file, saw who owns it, and started this as that
 * user (or as nobody for a file of root's), with the file on standard
 * input, a report pipe on standard error and, as descriptor 3, a
 * connection whose other end it gave the smtp process, naming the owner:
 *
 *	sendmail --tern-pickup UID HOSTNAME EXPIRED
 *
 * The file is untrusted (its owner wrote it through sendmail, or anyhow):
 * decoded with every length checked, and refused unless it names its
 * owner.  The message then takes the path of any local submission, in
 * transactions as large as ternd takes.  As Postfix's pickup does, the
 * recipients ternd refuses for good do not hold the others back: the
 * message goes to the rest and a delivery status notification to the
 * sender lists the refused ones (to the postmaster when the sender is
 * the null sender).  A temporary refusal leaves the file for the next
 * try; once the file is older than queue-lifetime (EXPIRED 1) it counts
 * as final.  The exit status tells the parent what to do with the file:
 * 0 remove it, 65 (malformed, forged) or 69 (refused and not even a
 * bounce could be sent) move it aside, anything else try again later.
 * What went wrong is written to standard error, which the parent logs.
 */
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "ctl/sendmail.h"
#include "lib/drop.h"
#include "lib/util.h"
#include "queue/dsn.h"
#include "smtpd/smtp_parse.h"

#define PICKUP_FD		3
#define PICKUP_DSN_FULL		50000	/* message returned whole up to this */

enum { PK_PENDING, PK_SENT, PK_FAILED };

struct pickup {
	struct sm	 sm;
	struct client	 c;
	int		 expired;	/* temporary refusals are final now */
	time_t		 dropped;
	int		*state;		/* per recipient */
	char		**reply;	/* a failed recipient's reply line */
	size_t		 nsent, nfailed;
};

static int __attribute__((noreturn))
pickup_die(int code, const char *what, const char *why)
{
	fprintf(stderr, "%s: %s\n", what, why);
	exit(code);
}

/* The file on standard input, whole, bounded. */
static void
pickup_read(struct buf *b)
{
	char tmp[65536];
	ssize_t n;

	for (;;) {
		n = read(STDIN_FILENO, tmp, sizeof(tmp));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			pickup_die(EX_TEMPFAIL, "reading the drop file",
			    strerror(errno));
		if (n == 0)
			return;
		if (b->len + (size_t)n > DROP_FILE_MAX)
			pickup_die(EX_DATAERR, "malformed drop file",
			    "too large");
		buf_append(b, tmp, (size_t)n);
	}
}

/* Decode the file and check it names its owner (the parent's word). */
static void
pickup_load(struct drop *d, uid_t owner)
{
	struct passwd *pw;
	struct buf b;
	const char *why;
	char msg[DROP_USER_MAX + 128];

	buf_init(&b);
	pickup_read(&b);
	if (drop_decode(b.data ? b.data : "", b.len, d, &why) == -1)
		pickup_die(EX_DATAERR, "malformed drop file", why);
	buf_free(&b);
	if (d->uid != (uint64_t)owner) {
		snprintf(msg, sizeof(msg), "it names user id %llu but belongs "
		    "to user id %u", (unsigned long long)d->uid,
		    (unsigned)owner);
		pickup_die(EX_DATAERR, "forged drop file", msg);
	}
	if ((pw = getpwuid(owner)) == NULL || strcmp(pw->pw_name, d->user)) {
		snprintf(msg, sizeof(msg), "it names user %s, not the "
		    "owner's account", d->user);
		pickup_die(EX_DATAERR, "forged drop file", msg);
	}
}

/* The first line of the last reply, for the notice and the log. */
static char *
pickup_reply_line(const struct client *c)
{
	const char *nl;

	if (c->reply.len == 0)
		return xstrdup(c->why ? c->why : "no reply");
	nl = memchr(c->reply.data, '\n', c->reply.len);
	return xstrndup(c->reply.data, nl ? (size_t)(nl - c->reply.data) :
	    c->reply.len);
}

static void
pickup_fail(struct pickup *pk, size_t i)
{
	pk->state[i] = PK_FAILED;
	pk->reply[i] = pickup_reply_line(&pk->c);
	pk->nfailed++;
}

/* A temporary failure: the file stays for the next try. */
static int
pickup_temp(struct pickup *pk, const char *what, int code)
{
	char *line = pickup_reply_line(&pk->c);

	fprintf(stderr, "%s: ", what);
	sm_put_clean(stderr, line, strlen(line));
	fprintf(stderr, code == -1 ? "\n" : " (will try again)\n");
	free(line);
	if (code != -1 && code != 421)
		client_bye(&pk->c, 1);
	return EX_TEMPFAIL;
}

static int
pickup_final(const struct pickup *pk, int code)
{
	return code / 100 == 5 || (pk->expired && code / 100 == 4);
}

/* RCPT for each pending recipient until ternd takes no more (452). */
static int
pickup_rcpts(struct pickup *pk, size_t *acc, size_t *nacc)
{
	struct sm *sm = &pk->sm;
	size_t i;
	int code;

	*nacc = 0;
	for (i = 0; i < sm->rcpts.n; i++) {
		if (pk->state[i] != PK_PENDING)
			continue;
		code = client_cmd(&pk->c, "RCPT TO:<%s>", sm->rcpts.v[i]);
		if (code == 250 || code == 251)
			acc[(*nacc)++] = i;
		else if (code == 452 && *nacc > 0)
			break;		/* the rest in the next transaction */
		else if (code == -1 || code == 421)
			return pickup_temp(pk, "recipient", code);
		else if (pickup_final(pk, code))
			pickup_fail(pk, i);
		else
			return pickup_temp(pk, "recipient", code);
	}
	return 0;
}

static int
pickup_data(struct pickup *pk, const size_t *acc, size_t nacc)
{
	size_t i;
	int code;

	if ((code = client_cmd(&pk->c, "DATA")) == 354) {
		if (client_body(&pk->c, &pk->sm.msg) == -1)
			code = client_last_word(&pk->c);
		else
			code = client_reply(&pk->c);
	}
	if (code == 250) {
		for (i = 0; i < nacc; i++)
			pk->state[acc[i]] = PK_SENT;
		pk->nsent += nacc;
		return 0;
	}
	if (code == -1 || code == 421 || !pickup_final(pk, code))
		return pickup_temp(pk, "message", code);
	for (i = 0; i < nacc; i++)
		pickup_fail(pk, acc[i]);
	if ((code = client_cmd(&pk->c, "RSET")) != 250)
		return pickup_temp(pk, "RSET", code);
	return 0;
}

static int
pickup_pending(const struct pickup *pk)
{
	size_t i;

	for (i = 0; i < pk->sm.rcpts.n; i++)
		if (pk->state[i] == PK_PENDING)
			return 1;
	return 0;
}

/* One transaction after another until every recipient is sent or failed. */
static int
pickup_send(struct pickup *pk)
{
	size_t *acc, nacc, i;
	int code, r = 0;

	acc = xcalloc(pk->sm.rcpts.n + 1, sizeof(*acc));
	while (r == 0 && pickup_pending(pk)) {
		code = client_mail(&pk->c, &pk->sm);
		if (code != 250 && (code == -1 || code == 421 ||
		    !pickup_final(pk, code))) {
			r = pickup_temp(pk, "sender", code);
			break;
		}
		if (code != 250) {
			for (i = 0; i < pk->sm.rcpts.n; i++)
				if (pk->state[i] == PK_PENDING)
					pickup_fail(pk, i);
			break;
		}
		if ((r = pickup_rcpts(pk, acc, &nacc)) != 0)
			break;
		if (nacc == 0) {
			if ((code = client_cmd(&pk->c, "RSET")) != 250)
				r = pickup_temp(pk, "RSET", code);
			continue;
		}
		r = pickup_data(pk, acc, nacc);
	}
	free(acc);
	return r;
}

/* "5.1.1" from "550 5.1.1 no such user", or NULL. */
static const char *
pickup_status(const char *line, char *out, size_t len)
{
	size_t n;

	if (strlen(line) < 9 || (line[3] != ' ' && line[3] != '-'))
		return NULL;
	n = strspn(line + 4, "0123456789.");
	if (n < 5 || n >= len || line[4] != line[0] || line[5] != '.')
		return NULL;
	memcpy(out, line + 4, n);
	out[n] = '\0';
	return out;
}

/* The notice: the refused recipients, the original (CRLF) attached. */
static int
pickup_notice(const struct pickup *pk, const char *to, const char *host,
    struct buf *out)
{
	struct dsn_rcpt *dr;
	struct dsn_msg dm;
	struct buf orig;
	char (*st)[16];
	size_t i, n = 0;
	const char *p, *end;
	int r;

	dr = xcalloc(pk->nfailed, sizeof(*dr));
	st = xcalloc(pk->nfailed, sizeof(*st));
	for (i = 0; i < pk->sm.rcpts.n; i++) {
		if (pk->state[i] != PK_FAILED)
			continue;
		dr[n].rcpt = pk->sm.rcpts.v[i];
		dr[n].status = pickup_status(pk->reply[i], st[n],
		    sizeof(st[n]));
		dr[n].action = "failed";
		dr[n].diagnostic = pk->reply[i];
		dr[n].last_attempt = (long long)time(NULL);
		n++;
	}
	buf_init(&orig);
	for (p = pk->sm.msg.data, end = p + pk->sm.msg.len; p < end; ) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		buf_append(&orig, p, (size_t)(nl - p));
		buf_puts(&orig, "\r\n");
		p = nl + 1;
	}
	memset(&dm, 0, sizeof(dm));
	dm.reporting_mta = host;
	dm.to = to;
	dm.arrival = (long long)pk->dropped;
	dm.original = orig.data ? orig.data : "";
	dm.original_len = orig.len;
	dm.return_full = 1;
	dm.max_full = PICKUP_DSN_FULL;
	r = dsn_build(&dm, dr, n, out);
	buf_free(&orig);
	free(dr);
	free(st);
	return r;
}

/* CRLF lines (dsn_build's) to LF lines (client_body's). */
static void
pickup_lf(const struct buf *in, struct buf *out)
{
	size_t i;

	for (i = 0; i < in->len; i++)
		if (!(in->data[i] == '\r' && i + 1 < in->len &&
		    in->data[i + 1] == '\n'))
			buf_putc(out, in->data[i]);
	if (out->len > 0 && out->data[out->len - 1] != '\n')
		buf_putc(out, '\n');
}

/*
 * Tell the sender, as the queue's own notices do, from the null sender;
 * a message from the null sender is a notice itself: its failures go to
 * the postmaster.
 */
static int
pickup_bounce(struct pickup *pk, const char *host)
{
	const char *to = pk->sm.from[0] ? pk->sm.from : "postmaster";
	struct buf dsn, lf;
	struct sm bounce;
	int code;

	buf_init(&dsn);
	if (pickup_notice(pk, to, host, &dsn) == -1) {
		fprintf(stderr, "cannot make the notice\n");
		return EX_TEMPFAIL;
	}
	buf_init(&lf);
	pickup_lf(&dsn, &lf);
	buf_free(&dsn);
	memset(&bounce, 0, sizeof(bounce));
	bounce.from = "";
	bounce.msg = lf;
	bounce.hdrlen = sm_header_len(lf.data, lf.len);
	str_copy(bounce.program, pk->sm.program, sizeof(bounce.program));
	code = client_mail(&pk->c, &bounce);
	if (code == 250)
		code = client_cmd(&pk->c, "RCPT TO:<%s>", to);
	if (code == 250 || code == 251)
		code = client_cmd(&pk->c, "DATA");
	if (code == 354) {
		code = client_body(&pk->c, &lf) == -1 ?
		    client_last_word(&pk->c) : client_reply(&pk->c);
	}
	buf_free(&lf);
	if (code == 250)
		return 0;
	if (code == -1 || code / 100 != 5)
		return pickup_temp(pk, "notice", code);
	fprintf(stderr, "notice to <");
	sm_put_clean(stderr, to, strlen(to));
	fprintf(stderr, "> refused: ");
	sm_put_clean(stderr, pk->c.reply.data, pk->c.reply.len ?
	    pk->c.reply.len - 1 : 0);
	fprintf(stderr, "\n");
	return EX_UNAVAILABLE;
}

static void
pickup_summary(const struct pickup *pk)
{
	size_t i;

	for (i = 0; i < pk->sm.rcpts.n; i++) {
		if (pk->state[i] != PK_FAILED)
			continue;
		fprintf(stderr, "recipient <");
		sm_put_clean(stderr, pk->sm.rcpts.v[i],
		    strlen(pk->sm.rcpts.v[i]));
		fprintf(stderr, "> refused: ");
		sm_put_clean(stderr, pk->reply[i], strlen(pk->reply[i]));
		fprintf(stderr, "\n");
	}
	if (pk->nfailed > 0)
		fprintf(stderr, "sent to %zu recipient%s, %zu refused and "
		    "bounced\n", pk->nsent, pk->nsent == 1 ? "" : "s",
		    pk->nfailed);
}

static void
pickup_free(struct pickup *pk, struct drop *d)
{
	size_t i;

	for (i = 0; i < pk->sm.rcpts.n; i++)
		free(pk->reply[i]);
	free(pk->reply);
	free(pk->state);
	buf_free(&pk->sm.msg);
	drop_free(d);
}

int
pickup_main(int argc, char *argv[])
{
	struct pickup pk;
	struct drop d;
	long long uid;
	int r, code;

	maildrop_privs_forget();	/* a pickup never drops again */
	sm_err = stderr;
	if (argc != 5 || parse_ll(argv[2], 0, UINT_MAX - 1, &uid) == -1 ||
	    smtp_check_domain(argv[3], 0) == -1 ||
	    (strcmp(argv[4], "0") != 0 && strcmp(argv[4], "1") != 0))
		pickup_die(EX_SOFTWARE, "pickup", "bad arguments (ternd "
		    "starts this)");
	pickup_load(&d, (uid_t)uid);
	memset(&pk, 0, sizeof(pk));
	pk.expired = argv[4][0] == '1';
	pk.dropped = (time_t)d.time;
	pk.sm.from = d.sender;
	pk.sm.rcpts.v = d.rcpts;
	pk.sm.rcpts.n = d.nrcpts;
	buf_init(&pk.sm.msg);
	buf_append(&pk.sm.msg, d.msg, d.msglen);
	pk.sm.hdrlen = sm_header_len(d.msg, d.msglen);
	str_copy(pk.sm.program, d.program, sizeof(pk.sm.program));
	pk.state = xcalloc(d.nrcpts, sizeof(*pk.state));
	pk.reply = xcalloc(d.nrcpts, sizeof(*pk.reply));
	client_init(&pk.c);
	client_attach(&pk.c, PICKUP_FD, "ternd");
	if ((code = client_hello(&pk.c)) != 0)
		r = pickup_temp(&pk, pk.c.stage, code);
	else if ((r = pickup_send(&pk)) == 0) {
		pickup_summary(&pk);
		if (pk.nfailed > 0)
			r = pickup_bounce(&pk, argv[3]);
		if (r == 0)
			(void)client_cmd(&pk.c, "QUIT");
	}
	client_free(&pk.c);
	pickup_free(&pk, &d);
	return r;
}
