/*
 * spool: the queue process's files.  It alone holds the spool's
 * directories: every file the queue creates, syncs, renames or removes is
 * named here, by queue id.  The functions the group commit calls from its
 * thread touch only the directory descriptors, which are fixed at start.
 */
#ifndef TERN_SPOOL_H
#define TERN_SPOOL_H

#include <stdint.h>

#include <event2/util.h>

#include "queue/envelope.h"

/* Spent files kept in free/ to be used again. */
#define SPOOL_POOL_MAX	512
#define SPOOL_REUSE_MAX	(128 * 1024)	/* a larger message file is unlinked */

struct buf;
struct event_base;
struct qmsg;

/* At start: the directories (fatal if missing), then what they hold. */
void	spool_open(struct event_base *, const char *path);
void	spool_recover(void);

/* queue/ID.msg for a new message under a new id: its fd, or -1 (errno).
   Without its envelope it is not a message. */
int	spool_create(char id[QID_LEN + 1]);
/* Its envelope written (not synced) into free/; *env names it there.
   0 or -1 with errno. */
int	spool_write_incoming(const struct buf *, uint64_t *env);
/* A message never committed: its file, and its envelope if env != 0. */
void	spool_unlink_incoming(const char *id, uint64_t env);

/* The group commit: sync, publish the envelope into queue/, sync queue/. */
int	spool_sync_incoming(const char *id, uint64_t env); /* 0 or errno */
int	spool_syncfs(void);			/* 0 or -1 with errno */
int	spool_publish(const char *id, uint64_t env);	/* 0 or -1, errno */
int	spool_sync_queue(void);			/* 0 or -1 with errno */

/* queue/ID.msg, opened for reading; -1 with errno. */
int	spool_msg_fd(const struct qmsg *);
/* Remove a message from queue/: the envelope first. */
void	spool_remove(const char *id);

/* The queue's own state files in the spool's top directory. */
int	spool_write_state(const char *name, const struct buf *, int sync);
int	spool_read_state(const char *name, struct buf *);

/* Write m's envelope now (fsync, then rename over the old one). */
void	spool_write_env(struct qmsg *);
/* Write every changed envelope soon, in one group ... */
void	spool_state_later(void);
/* ... which this event callback does; also called at stop. */
void	spool_state_flush(evutil_socket_t, short, void *);

#endif
