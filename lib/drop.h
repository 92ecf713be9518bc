/*
 * drop: the maildrop file, a message that sendmail(1) kept in
 * spool/maildrop because ternd could not take it.  ternctl writes it (as
 * the submitting user, with the drop group for the write alone) and reads
 * it again at pickup (as the file's owner); the root parent only looks at
 * its name, owner and size, and renames or removes it.  Any local user can
 * make one, so the decoder takes its input as hostile: an 8-byte magic
 * with a version, typed records (lib/rec.h), every length checked, and an
 * END record with the CRC32 of everything before it, as the queue's
 * envelopes have.
 */
#ifndef TERN_DROP_H
#define TERN_DROP_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define DROP_NAME_LEN	16		/* final names: 16 upper-case hex */
#define DROP_TMP_PREFIX	".tmp."		/* names being written */
#define DROP_USER_MAX	256
#define DROP_PROGRAM_MAX 32
#define DROP_ADDR_MAX	1000		/* as sendmail's own limit */
#define DROP_RCPTS_MAX	100000
#define DROP_MSG_MAX	((64u << 20) + (1u << 20))	/* + added fields */
/* The largest file worth opening: message, recipients, records. */
#define DROP_FILE_MAX	((size_t)DROP_MSG_MAX + (96u << 20))

struct drop {
	uint64_t	 uid;		/* the writer's real user id */
	char		*user;		/* its account name */
	char		*program;	/* the writer's parent process, or "" */
	uint64_t	 time;		/* when it was dropped, unix seconds */
	char		*sender;	/* envelope sender, "" the null sender */
	char		**rcpts;
	size_t		 nrcpts;
	char		*msg;		/* LF-ended lines (none: empty) */
	size_t		 msglen;
};

void	drop_encode(const struct drop *, struct buf *);
/* 0, or -1 with *why ("bad checksum", "bad recipient", ...). */
int	drop_decode(const void *, size_t, struct drop *, const char **why);
void	drop_free(struct drop *);

/* The checks the decoder makes, for the writer (and smtp's XPROGRAM). */
int	drop_program_ok(const char *, size_t);
int	drop_addr_ok(const char *, size_t);
/* A final drop file name: DROP_NAME_LEN upper-case hex digits. */
int	drop_name_ok(const char *);

#endif
