/*
 * credstore: the credential store, a Berkeley DB map (the `credentials`
 * setting) of accounts: a system account ("anna") or a virtual one
 * ("anna@example.org") to its record: a yescrypt hash, a locked flag, and
 * when it was created and last changed.  ternctl (root) is its only
 * writer and replaces the file whole (temp file, fsync, rename, directory
 * fsync); the root parent reads it and hands the hashes to the vault,
 * which alone checks passwords.  The file is root's, mode 0600.
 */
#ifndef TERN_CREDSTORE_H
#define TERN_CREDSTORE_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define CRED_LOCAL_MAX	64	/* local part of a virtual account */
#define CRED_NAME_MAX	320	/* local part, '@', a 253-byte domain, slack */
#define CRED_HASH_MAX	255
#define CRED_PASS_MAX	1024	/* longest password accepted */
#define CRED_COST	5	/* yescrypt: 16 MiB, ~25 ms (Debian's shadow) */
#define CRED_VERSION	1	/* first byte of every record */

struct cred {
	char	 name[CRED_NAME_MAX + 1];	/* canonical (lower case) */
	char	 hash[CRED_HASH_MAX + 1];
	int	 locked;
	int64_t	 created, changed;		/* seconds since the epoch */
};

/*
 * The canonical form of an account name: a system account name, or
 * local@domain with a lower-cased dot-atom local part of letters, digits
 * and "._-" (no "+": it separates an extension) and an LDH domain.
 * 0 with out set, or -1 with why.
 */
int	credstore_name(const char *in, char *out, size_t outlen,
	    const char **why);
int	credstore_is_virtual(const char *name);

/* A record as stored: version byte, then typed records (lib/rec.h). */
void	credstore_encode(const struct cred *, struct buf *);
/* 0, or -1 for a record that is malformed or of another version. */
int	credstore_decode(const char *name, const void *, size_t,
	    struct cred *);

/* A new yescrypt hash of pass: 0, or -1 (no randomness, libcrypt error). */
int	credstore_hash(const char *pass, char *out, size_t outlen);
/*
 * 1 if pass matches hash, else 0 (also for an unusable hash).  One
 * yescrypt computation, then a comparison in constant time.
 */
int	credstore_verify(const char *pass, const char *hash);

/*
 * Read every account, sorted by name.  A missing file is an empty store.
 * The file must belong to root (or to the reading user) and give group
 * and others no access.  0, or -1 with err.
 */
int	credstore_read(const char *path, struct cred **, size_t *, char *err,
	    size_t errlen);
/* Replace the file with these accounts (any order): 0, or -1 with err. */
int	credstore_write(const char *path, const struct cred *, size_t,
	    char *err, size_t errlen);
/* Serialise writers: an exclusive lock on PATH.lock; the fd, or -1. */
int	credstore_lock(const char *path, char *err, size_t errlen);
/* Wipe and free what credstore_read returned. */
void	credstore_free(struct cred *, size_t);
struct cred *credstore_find(struct cred *, size_t, const char *name);

#endif
