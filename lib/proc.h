/*
 * proc: what ternd's processes share: the process entry points, privilege
 * dropping and the parent's bookkeeping of listening sockets.
 */
#ifndef TERN_PROC_H
#define TERN_PROC_H

#include <stddef.h>
#include <sys/types.h>

struct conf;

struct lsock {
	int	fd;
	size_t	listener;	/* index into conf->listeners */
};

/* Drop to the configured user when root; no-op otherwise. */
void	proc_drop(const struct conf *, const char *role);
/* Set in children by the signal handlers they install. */
void	smtp_main(struct conf *, struct lsock *, size_t, int submitfd,
	    int parentfd, int queuefd) __attribute__((noreturn));
void	queue_main(struct conf *, const char *conftext, size_t conflen,
	    int parentfd, int controlfd, int smtpfd) __attribute__((noreturn));
/* Delivery worker, forked by the parent: returns a sysexits code. */
/* path is where to write; shown is how messages name it (the full path). */
int	mda_maildir(int msgfd, const char *path, const char *shown,
	    const char *sender, const char *rcpt, const char *qid, char *err,
	    size_t errlen);

extern const char *proc_basedir;

/* The SRS key, read (or made) by the parent before it forks children. */
#define SRS_KEY_MAX	64
extern unsigned char	proc_srs_key[SRS_KEY_MAX];
extern size_t		proc_srs_keylen;

#endif
