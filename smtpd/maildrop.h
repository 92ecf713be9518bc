/*
 * maildrop: the root parent's side of spool/maildrop, where sendmail
 * keeps what ternd could not take (ctl/maildrop.c writes it, ctl/pickup.c
 * submits it).  The parent makes the directory, watches it (inotify, and
 * a scan every minute), and for each complete file runs a pickup worker
 * as the file's owner; it looks only at names, owners and sizes, never at
 * what the files hold.
 */
#ifndef TERN_SMTPD_MAILDROP_H
#define TERN_SMTPD_MAILDROP_H

#include <sys/types.h>

struct conf;
struct event_base;
struct ipc;

struct maildrop_env {
	int		  root;		/* the parent runs as root */
	uid_t		  uid;		/* the unprivileged user */
	gid_t		  gid;
	pid_t		(*fork)(void);	/* the parent's fork, signals safe */
	struct ipc	*(*smtp)(void);	/* the current smtp channel, or NULL */
};

/* At start, as root: spool/maildrop, root's, drop-group's, mode 1730. */
void	maildrop_prepare(const struct conf *, const struct maildrop_env *);
/* Start watching (after the roles are started); first scan at once. */
void	maildrop_start(struct event_base *, const struct conf *);
/* A reloaded configuration (a new spool takes a restart). */
void	maildrop_conf(const struct conf *);
/* SIGCHLD: 1 if pid was a pickup worker (then it is handled). */
int	maildrop_reaped(pid_t, int status);
/* Stopping: start no more pickups; 1 while some still run. */
void	maildrop_stop(void);
int	maildrop_busy(void);
void	maildrop_kill(void);

#endif
