/*
 * proc: what ternd's processes share: the role entry points, privilege
 * dropping, kernel confinement and the parent's bookkeeping of listening
 * sockets.
 */
#ifndef TERN_PROC_H
#define TERN_PROC_H

#include <stddef.h>
#include <sys/types.h>

struct buf;
struct conf;

struct lsock {
	int	fd;
	size_t	listener;	/* index into conf->listeners */
};

/* The role's channel to the parent, in an exec'd role process. */
#define PROC_PARENT_FD	3

/*
 * Role entry points, after role_start() (smtpd/role.c) set them up.  smtp
 * loads the TLS chain and key from tls (IMSG_P_TLS), then wipes and frees it.
 */
void	smtp_main(struct conf *, struct lsock *, size_t, int submitfd,
	    int parentfd, int queuefd, int vaultfd, struct buf *tls)
	    __attribute__((noreturn));
void	queue_main(struct conf *, const char *conftext, size_t conflen,
	    int parentfd, int controlfd, int smtpfd, int vaultfd)
	    __attribute__((noreturn));
void	vault_main(const void *secrets, size_t len, int parentfd, int *peers,
	    size_t npeers, int queuefd) __attribute__((noreturn));
/* The vault's secrets message (also used by tests): 0 or -1 malformed. */
int	vault_load(const void *, size_t);
/* One request to the vault, its answer appended to reply; -1 malformed. */
struct buf;
int	vault_request(int type, const void *, size_t, struct buf *reply);
/* The queue's request for the AUTH throttle (list, or clear T_ID). */
int	vault_throttle_request(const void *, size_t, time_t now,
	    struct buf *reply);

/*
 * Enter the role's seccomp filter (lib/confine.c): from here on, a system
 * call outside the role's list kills the process, which first reports it
 * to the parent.  Call last, just before the event loop.
 */
void	proc_confine(const char *role);
/* The process title `ternd: role` (in ps and /proc/PID/cmdline). */
void	proc_title(int argc, char *argv[], const char *role);

/* Delivery worker, forked by the parent: returns a sysexits code. */
/* path is where to write; shown is how messages name it (the full path). */
int	mda_maildir(int msgfd, const char *path, const char *shown,
	    const char *sender, const char *rcpt, const char *qid, char *err,
	    size_t errlen);

extern const char *proc_basedir;

#define SRS_KEY_MAX	64

#endif
