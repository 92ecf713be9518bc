/*
 * sendmail: what the parts of ternctl's sendmail personality share: the
 * message being sent (struct sm), the SMTP client of the submit socket
 * (client.c), the maildrop (maildrop.c), the pickup of a drop file
 * (pickup.c) and the SMTP dialogue on standard input (stdio.c).
 */
#ifndef TERN_CTL_SENDMAIL_H
#define TERN_CTL_SENDMAIL_H

#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

#include "lib/util.h"

struct conf;
struct drop;

#define SM_MSG_MAX	(64u << 20)	/* largest message read into memory */
#define SM_ADDR_MAX	1000		/* longer is no address (RFC 5321: 256) */
#define SM_TIMEOUT_MS	(5LL * 60 * 1000) /* the whole SMTP dialogue */
#define SM_BYE_MS	(10LL * 1000)	/* RSET/QUIT after a failure */
#define SM_CONNECT_MS	(30LL * 1000)	/* retrying while the backlog is full */
#define SM_REPLY_MAX	(64u * 1024)	/* longest reply accepted */
#define SM_CHUNK	(64u * 1024)	/* DATA is written in pieces this big */
#define SM_PROGRAM_MAX	32		/* the calling program's name */

struct strv {
	char		**v;
	size_t		  n;
};

struct sm {
	const char	*confpath;
	const char	*argv0;
	const char	*sender;	/* -f/-r as given; NULL: the user */
	const char	*fullname;	/* -F */
	int		 tflag;
	int		 iflag;		/* a lone "." does not end the input */
	char		 mode;		/* 'm' deliver, 'p' mailq, 'i' newaliases,
					   's' SMTP on stdin */
	struct conf	*conf;
	const char	*hostname;	/* Message-ID: */
	const char	*origin;	/* domain of bare names */
	char		 program[SM_PROGRAM_MAX + 1];	/* who ran us */
	char		*from;		/* envelope sender, "" = null sender */
	char		*author;	/* address for an added From: */
	char		*authorname;	/* phrase for an added From:, or NULL */
	struct strv	 rcpts;
	struct buf	 msg;		/* the message to send, LF line ends */
	size_t		 hdrlen;	/* its header section, separator included */
	char		*sent;		/* per recipient: the daemon has it */
};

struct client {
	int		 fd;
	const char	*path;
	long long	 deadline;	/* CLOCK_MONOTONIC, ms */
	const char	*why;		/* why the last call returned -1 */
	struct buf	 in;		/* read, not yet part of a reply */
	struct buf	 reply;		/* the last reply, its lines LF-ended */
	struct buf	 out;
	int		 size, eightbit, utf8, xprogram;  /* offered in EHLO */
	const char	*stage;		/* client_hello's failing step */
};

/*
 * Where diagnostics go: stderr, or a memory stream while a submission
 * may still end in the maildrop (then nothing is printed).
 */
extern FILE	*sm_err;

void	 sm_die(int, const char *, ...)
	    __attribute__((format(printf, 2, 3), noreturn));
/* Untrusted or user text for the terminal: printable ASCII only. */
void	 sm_put_clean(FILE *, const char *, size_t);
/* Each line of a reply, "sendmail: <what>: <line>". */
void	 sm_print_reply(const char *what, const struct buf *);
/* Read one complete message (LF, CRLF or CR lines) into out. */
void	 sm_read(int fd, int iflag, struct buf *out);
/* Complete the header of in (From:, Date:, Message-ID:; no Bcc:) into
   sm->msg; with -t, take its recipients. */
void	 sm_build(struct sm *, const struct buf *in);
/* Envelope sender and author from -f/-F and the account. */
void	 sm_identity(struct sm *);
/* A recipient from the command line or a header; exits on a bad one. */
void	 sm_add_rcpt(struct sm *, const char *, size_t, int badexit,
	    const char *where);
void	 sm_reset(struct sm *);
/* Submit sm over the submit socket, or keep it in the maildrop. */
int	 sm_send(struct sm *);
/* The header section's length in a built message (through its blank line). */
size_t	 sm_header_len(const char *, size_t);

/* client.c: the SMTP client. */
void	 client_init(struct client *);
void	 client_free(struct client *);
int	 client_connect(struct client *, const char *path);
/* An already connected socket (the pickup's), made non-blocking. */
void	 client_attach(struct client *, int fd, const char *name);
void	 client_close(struct client *);
int	 client_reply(struct client *);
int	 client_last_word(struct client *);
int	 client_cmd(struct client *, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
void	 client_bye(struct client *, int rset);
int	 client_body(struct client *, const struct buf *);
/* EHLO, or HELO if refused: 0, or the failing reply's code (-1: none). */
int	 client_hello(struct client *);
/* MAIL FROM with the parameters the server offered; the reply's code. */
int	 client_mail(struct client *, const struct sm *);

/* maildrop.c */
/* At the start of ternctl: keep the drop group only where it is needed. */
void	 maildrop_privs(int keep);
void	 maildrop_privs_forget(void);
/* Write the drop file for sm's recipients not yet sent.  0 (its name in
   name), or -1 with err. */
int	 maildrop_write(const struct sm *, const char *why, char *name,
	    size_t namelen, char *err, size_t errlen);

/* pickup.c: ternctl started by ternd's parent on a drop file. */
int	 pickup_main(int argc, char *argv[]);

/* stdio.c: sendmail -bs. */
int	 stdio_main(struct sm *);

#endif
