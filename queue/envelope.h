/*
 * envelope: a queued message's facts (sender, recipients, arrival, each
 * recipient's delivery state) and their on-disk form: typed records after
 * a magic and version, closed by an END record holding a CRC32 of all that
 * precedes it.  A file without a valid END is incomplete, never trusted.
 */
#ifndef TERN_ENVELOPE_H
#define TERN_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

struct buf;

#define QID_LEN		16

enum rcpt_state {
	RS_PENDING,	/* to be tried (again) */
	RS_DONE,	/* delivered */
	RS_HELD,	/* kept: a delivery form not available yet */
	RS_FAILED	/* permanent failure, DSN owed */
};

struct env_rcpt {
	char		*addr;		/* recipient as accepted at RCPT */
	enum rcpt_state	 state;
	uint32_t	 attempts;
	uint64_t	 last_try;	/* unix seconds, 0 = never */
	uint64_t	 next_try;
	char		*last_error;	/* sanitised; NULL = none */
	char		**done;		/* delivery targets already served */
	size_t		 ndone;
	char		*fwd_from;	/* added by that recipient's .forward */
	unsigned	 notify;	/* NOTIFY=, DSN_NOTIFY_*; 0: not given */
	char		*orcpt;		/* ORCPT=, "type;addr"; NULL: none */
};

struct envelope {
	char		 id[QID_LEN + 1];
	char		*sender;	/* "" for the null sender */
	char		*helo;
	char		*client;	/* "[192.0.2.1]" */
	char		*proto;		/* "ESMTP", "SMTP", "LOCAL" */
	int		 body8bit;	/* 0 7BIT, 1 8BITMIME, 2 BINARYMIME */
	int		 smtputf8;
	uint64_t	 size;		/* bytes of the spooled message */
	uint64_t	 arrival;	/* unix seconds */
	uint64_t	 flags;		/* ENV_* */
	char		*account;	/* who submitted it (AUTH name, or
					 * "local:NAME"); NULL: nobody */
	int		 ret;		/* RET=, DSN_RET_*; 0: not given */
	char		*envid;		/* ENVID=, decoded; NULL: none */
	struct env_rcpt	*rcpts;
	size_t		 nrcpts;
};

#define ENV_WARNED	0x01	/* the delay notice went out */
#define ENV_HOLD	0x02	/* held by the admin: not scheduled */
#define ENV_DSN		0x04	/* a notice we made (null sender) */
#define ENV_DOUBLE	0x08	/* a notice to the postmaster: never bounced */
#define ENV_SUSPENDED	0x10	/* held because its account is suspended */
#define ENV_URGENT	0x20	/* first in each destination's queue */
#define ENV_QUARANTINE	0x40	/* DMARC quarantine: Maildir .Junk */

void	envelope_encode(const struct envelope *, struct buf *);
/* 0 ok; -1 with *why ("truncated", "bad checksum", ...). */
int	envelope_decode(const void *, size_t, struct envelope *,
	    const char **why);
void	envelope_free(struct envelope *);
void	envelope_add_rcpt(struct envelope *, const char *addr);
int	envelope_rcpt_done(const struct env_rcpt *, const char *target);
void	envelope_mark_done(struct env_rcpt *, const char *target);
void	envelope_set_error(struct env_rcpt *, const char *text);
const char *envelope_state_name(enum rcpt_state);

#endif
