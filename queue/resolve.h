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
	TG_INCLUDE,	/* not produced: :include: files are expanded */
	TG_MBOX,	/* an account's mbox in mbox-dir (local-delivery mbox) */
	TG_LMTP		/* an account's mail to the LMTP server (path: lmtp) */
};

struct target {
	enum target_kind kind;
	char	*key;		/* stable identity, for "already delivered" */
	char	*rcpt;		/* final address (Delivered-To:) */
	char	*user;		/* account the delivery runs as: the owner,
				   for a pipe or file (root's: "nobody") */
	uid_t	 uid;
	gid_t	 gid;
	char	*path;		/* Maildir path, command, file or address */
	int	 account;	/* a system account's mailbox: ~/.forward applies */
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
/* The address an LMTP target is given: the account's own with its
   +extension, or the recipient itself for the LMTP server's own users. */
void	resolve_lmtp_addr(const struct target *, char *out, size_t len);
/* Delivered by a local worker the parent runs (not TG_REMOTE). */
int	resolve_is_local(enum target_kind);
/*
 * The account virtual mailboxes belong to: virtual-user, or, in a daemon
 * started by a normal user (resolve_self set before the children fork),
 * that user.
 */
extern const char *resolve_self;
const char *resolve_vaccount(const struct conf *);
/*
 * The parent's check of a delivery request: expand orcpt again and find
 * the target with this kind, user and path.  0 with *out filled (free it
 * with resolve_free(out, 1)), 1 not among the targets (why set), -1
 * temporary failure (why set).
 */
int	resolve_check(const struct conf *, struct aliases *, const char *orcpt,
	    const char *kind, const char *user, const char *path,
	    struct target **out, char *why, size_t whylen);
/* Where a command or file named by a file owned by uid runs: the owner, or
   "nobody" for root; 0 or -1 when that account does not exist. */
int	resolve_runas(uid_t uid, char *name, size_t, uid_t *, gid_t *);
/*
 * The virtual accounts of the credential store (names only: the parent
 * reads the store and sends them, IMSG_P_ACCOUNTS).  Each receives mail
 * in the Maildir virtual-maildir names, unless a `virtual` statement or
 * an alias of its name says otherwise.  resolve_accounts_set takes the
 * array (and its strings); resolve_accounts_msg applies one chunk of the
 * message: 1 the set is replaced, 0 more chunks to come, -1 malformed.
 */
void	resolve_accounts_set(char **names, size_t n);
int	resolve_accounts_msg(const void *data, size_t len);
size_t	resolve_accounts_count(void);
/* Split "local@domain" at the last '@' into lower-cased parts. */
int	resolve_split(const char *addr, char *local, size_t, char *domain,
	    size_t);

#endif
