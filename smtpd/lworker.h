/*
 * lworker: long-lived local delivery workers, run by the parent.  A worker
 * is forked for one account (name, uid, gid, extra group), drops to it and
 * takes Maildir deliveries over its own channel, one after another, until
 * the parent lets it go after local-worker-idle without work.  The parent
 * still checks every request (its own expansion, the account, the walk
 * into the Maildir) before it hands one over; a worker never serves
 * another account and is never root.
 */
#ifndef TERN_LWORKER_H
#define TERN_LWORKER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct event_base;

struct lw_account {
	const char	*name;
	uid_t		 uid;
	gid_t		 gid;
	gid_t		 mailgid;	/* extra group, or (gid_t)-1 */
};

/* One Maildir delivery: md is relative to dirfd (-1: md is absolute). */
struct lw_req {
	int		 msgfd;
	int		 dirfd;
	const char	*md, *shown, *sender, *rcpt, *qid;
	int		 junk;	/* DMARC quarantine: .Junk if it is there */
};

/*
 * The outcome: an MDA_* code and the worker's (sanitised) text, or
 * LW_DIED when the worker died before it answered (retry).
 */
#define LW_DIED	(-1)
typedef void	(*lw_done_fn)(void *arg, int code, const char *text);

/* root: the parent is root and workers drop; fork: its safe fork. */
void	lworker_init(struct event_base *, int root, pid_t (*fork)(void));
/* 0: handed to a worker (done is called later), -1: do it another way. */
int	lworker_deliver(const struct lw_account *, const struct lw_req *,
	    int idle_ms, lw_done_fn, void *arg);
/* SIGCHLD: 1 if pid was a worker (its unanswered deliveries fail). */
int	lworker_reaped(pid_t, int status);
/* A worker busy on one delivery for longer than secs is killed. */
void	lworker_watchdog(time_t now, time_t secs);
void	lworker_stop(void);	/* idle workers go now, busy ones when done */
void	lworker_kill(void);
int	lworker_count(void);	/* workers not yet reaped */

/* A worker's answer (untrusted): 0 with its token, code and text, or -1. */
int	lworker_answer_parse(const void *, size_t, uint64_t *token, int *code,
	    char *text, size_t textlen);

/* Drop to the account (initgroups, the extra group, gid, uid; not root). */
int	lworker_become(const struct lw_account *, char *err, size_t errlen);

#endif
