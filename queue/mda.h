/*
 * mda: the local delivery agents a delivery worker runs, after the parent
 * forked it and dropped it to the account the parent chose: Maildir, mbox
 * (the account's spool file, or a /file from an alias or ~/.forward),
 * |command, and the reading of ~/.forward (LMTP is the SMTP client's,
 * queue/mta.c).  Each returns a sysexits-style code (MDA_OK, MDA_TEMP, or a permanent one) and writes a
 * one-line, printable reason into err.
 */
#ifndef TERN_MDA_H
#define TERN_MDA_H

#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct conf;
struct buf;

#define MDA_OK		0
#define MDA_PERM	69	/* EX_UNAVAILABLE */
#define MDA_CANTCREAT	73	/* EX_CANTCREAT: temporary, as before */
#define MDA_TEMP	75	/* EX_TEMPFAIL */

#define MDA_OUTPUT_MAX	512	/* bytes of a command's output kept */
#define FORWARD_MAX_FILE (64 * 1024)
#define FORWARD_MAX	100	/* addresses one ~/.forward may forward to */
#define FORWARD_ADDR_MAX 512

/* One delivery: the message and the facts it is delivered with. */
struct mda_job {
	int		 msgfd;		/* the spooled message (CRLF) */
	const char	*sender;	/* "" is the null sender */
	const char	*rcpt;		/* Delivered-To:, RECIPIENT */
	const char	*orcpt;		/* the envelope recipient */
	const char	*qid;
	const char	*user;		/* the account this process runs as */
	const char	*home;
	const char	*helo;		/* our name, for LHLO */
	time_t		 deadline;	/* commands stop here */
};

/*
 * Write the spooled CRLF message through put(): hdr first (as is), then
 * the lines with LF (MS_LF) or CRLF ends, mboxrd ">From " quoting
 * (MS_FROMQUOTE), SMTP dot-stuffing (MS_DOTSTUFF), ending with a line end
 * (MS_FINALEOL).  0, or -1 when reading or put() failed.
 */
#define MS_LF		0x01
#define MS_FROMQUOTE	0x02
#define MS_DOTSTUFF	0x04
#define MS_FINALEOL	0x08
int	mda_stream(int msgfd, const char *hdr, int flags,
	    int (*put)(void *, const char *, size_t), void *arg);

/* Printable ASCII on one line: what a command or a server said. */
void	mda_clean(char *dst, size_t dstlen, const char *src, size_t n);

/* path is where to write; shown is how messages name it (the full path). */
int	mda_maildir(int msgfd, const char *path, const char *shown,
	    const char *sender, const char *rcpt, const char *qid, char *err,
	    size_t errlen);
/*
 * DMARC quarantine: md's Maildir++ Junk folder (md/.Junk) into out when it
 * is a directory (not a link), 1; else 0 (deliver to md itself).
 */
int	mda_junk(const char *md, char *out, size_t cap);
/* mda_maildir without the fsync of new/: *newdir is new/, the caller's. */
struct mda_put {
	const char	*md, *shown;
	char		 tmp[4096], new[4200];
	int		 fd;		/* the file in tmp/, written */
};
/* ... in two halves: written to tmp/, then (synced and) linked. */
int	mda_maildir_write(int msgfd, const char *path, const char *shown,
	    const char *sender, const char *rcpt, const char *qid,
	    struct mda_put *, char *err, size_t errlen);
int	mda_maildir_link(struct mda_put *, int synced, int *newdir,
	    char *err, size_t errlen);
int	mda_maildir_put(int msgfd, const char *path, const char *shown,
	    const char *sender, const char *rcpt, const char *qid, int *newdir,
	    char *err, size_t errlen);
/* The account's mailbox in mbox-dir: created 0600, may be 0660 user:mail. */
int	mda_mbox(const struct mda_job *, const char *path, char *err, size_t);
/* A /file target: regular, not a link, not group or world writable. */
int	mda_file(const struct mda_job *, const char *path, char *err, size_t);
/* A |command target, run with /bin/sh -c in a clean environment. */
int	mda_pipe(const struct mda_job *, const char *cmd, char *err, size_t);

enum fwd_kind { FWD_SELF, FWD_PIPE, FWD_FILE, FWD_ADDRESS };

struct fwd_target {
	enum fwd_kind	 kind;
	char		*value;		/* command, path or address */
};

/*
 * Parse ~/.forward text of account self (mail to it arrived for domain):
 * targets separated by commas or newlines, '#' lines skipped; "\self",
 * "self" and self@local-domain mean the account's own mailbox.  0, or -1
 * with why.
 */
int	forward_parse(const struct conf *, const char *text, size_t len,
	    const char *self, const char *domain, struct fwd_target **,
	    size_t *, char *why, size_t whylen);
void	forward_free(struct fwd_target *, size_t);
/*
 * The account's ~/.forward, run by a worker as the account: deliver its
 * commands and files, and say whether the own mailbox is wanted (*self)
 * and which addresses to forward to (T_FORWARD records appended to fwd).
 */
int	forward_deliver(const struct mda_job *, const struct conf *,
	    int *self, struct buf *fwd, char *err, size_t errlen);

#endif
