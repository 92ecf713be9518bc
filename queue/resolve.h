/*
 * resolve: what a local recipient address means.  The smtp process asks
 * whether it exists (at RCPT); the queue process expands it into delivery
 * targets at delivery time, from the current config and aliases map, so a
 * fixed alias fixes queued mail.
 */
#ifndef TERN_RESOLVE_H
#define TERN_RESOLVE_H

#include <stddef.h>
#include <sys/types.h>

struct conf;
struct aliases;

enum target_kind {
	TG_MAILDIR,	/* a Maildir, written as uid/gid */
	TG_REMOTE,	/* an address at another domain */
	TG_PIPE,	/* |command from the aliases file */
	TG_FILE,	/* /path from the aliases file */
	TG_INCLUDE	/* :include:/path */
};

struct target {
	enum target_kind kind;
	char	*key;		/* stable identity, for "already delivered" */
	char	*rcpt;		/* final address (Delivered-To:) */
	char	*user;		/* account the delivery runs as */
	uid_t	 uid;
	gid_t	 gid;
	char	*path;		/* Maildir path, command, file or address */
};

/* 1 exists, 0 unknown, -1 temporary failure (map unreadable). */
int	resolve_exists(const struct conf *, struct aliases *, const char *addr);
/*
 * Expand addr into targets.  0 ok, -1 temporary failure with err set.
 * An unknown local recipient yields no targets and err set (returns 0).
 */
int	resolve_expand(const struct conf *, struct aliases *, const char *addr,
	    struct target **, size_t *, char *err, size_t errlen);
void	resolve_free(struct target *, size_t);
const char *resolve_kind_name(enum target_kind);
/* Split "local@domain" at the last '@' into lower-cased parts. */
int	resolve_split(const char *addr, char *local, size_t, char *domain,
	    size_t);

#endif
