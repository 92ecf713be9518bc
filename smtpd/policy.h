/*
 * policy: the SMTP session's verdict steps (smtp process).  A step may
 * wait (SPF on DNS) without holding up other sessions: the session asks,
 * holds its input, and is called back on the loop.  Each transaction keeps
 * its verdicts and the header fields to prepend to the message (struct
 * policy_txn).  Today: SPF at MAIL, applied at RCPT; at the end of data
 * DKIM (and, next, DMARC), whose verdicts go into one
 * Authentication-Results field.
 *
 * The end-of-data step, as the session drives it:
 *   policy_data      DATA (or the first BDAT) starts
 *   policy_hline     each header line, which it writes to the message
 *                    itself (an Authentication-Results field from outside
 *                    claiming our authserv-id is left out)
 *   policy_hend      the header ends: the room for our field is reserved
 *   policy_bline     each body line (body hashes as it streams)
 *   policy_data_end  the message ends: 1 when the session must wait for
 *                    the callback (with t->step == POLICY_STEP_DATA)
 *   policy_data_done the verdicts are in: the field is written into its
 *                    room, and the step's action (accept, or a reply)
 * Its state (struct policy_eod) holds what DMARC reads: the SPF verdict
 * and its domain (t->spf: identity "mailfrom"/"helo", domain), each DKIM
 * signature's d=, s= and result (eod.ar.dk), the From: fields
 * (policy_header_fields), a slot for its own Authentication-Results
 * entry (eod.ar.extra: room set before policy_hend sizes the field,
 * text before policy_data_done writes it) and the action (eod.refuse,
 * eod.reply).
 */
#ifndef TERN_POLICY_H
#define TERN_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/authres.h"
#include "auth/spf.h"
#include "lib/util.h"

struct conf;
struct event_base;
struct listener;

struct policy_job;
struct dkimv;

enum policy_step { POLICY_STEP_MAIL, POLICY_STEP_DATA };

/* The end-of-data step's state. */
struct policy_eod {
	int			 on;		/* checks run on this message */
	int			 done;		/* its verdicts are in */
	struct dkimv		*dkimv;		/* the header kept, DKIM
						   verification (ar.dkim) */
	struct authres		 ar;		/* the verdicts, for the field */
	size_t			 room;		/* the field's room, bytes */
	int64_t			 room_off;	/* ...at this file offset */
	int			 refuse;	/* the action: 0 accept, else
						   reply holds the SMTP reply */
	char			 reply[256];
	/* The header pass: fields claiming our authserv-id, removed. */
	struct buf		 held;		/* such a field, still undecided */
	int			 dropping;	/* ...decided ours: dropped */
	size_t			 removed;	/* fields removed */
	uint64_t		 sid;		/* the session, for the log */
};

struct policy_txn {
	struct policy_job	*pending;	/* a step under way */
	enum policy_step	 step;		/* ...or whose callback this is */
	int			 spf_done;	/* a verdict is here */
	struct spf_verdict	 spf;
	struct buf		 headers;	/* prepended, CRLF-terminated */
	int			 checks;	/* MAIL: profile on, not exempt */
	const struct listener	*l;
	struct policy_eod	 eod;
};

/* The answer to one step: the session id it was asked for. */
typedef void (*policy_cb)(uint64_t sid);

/*
 * Descriptors the pipeline may hold at once (its pipe, libunbound's
 * context, a query socket per worker): 0 when no listener checks SPF,
 * and then policy_init starts nothing.
 */
int	 policy_fds(const struct conf *);

/* Start the SPF workers (before the seccomp filter).  0 or -1. */
int	 policy_init(struct event_base *, const struct conf *, policy_cb);

/*
 * The MAIL step: start SPF for this transaction if the listener's profile
 * asks for it and the client is not exempt (authenticated, local, trusted
 * network).  1: started, the callback comes later (never from within);
 * 0: nothing to wait for.
 */
int	 policy_mail(struct policy_txn *, uint64_t sid, const struct listener *,
	    const struct sockaddr_storage *, const char *ip, const char *helo,
	    const char *sender, int exempt);

/*
 * The RCPT step: 0 to go on, or an SMTP reply (550 5.7.23, 451 4.7.24)
 * in reply.  srs: the recipient is one of our SRS addresses (a bounce to
 * forwarded mail; SPF does not apply).
 */
int	 policy_rcpt(const struct policy_txn *, int srs, char *reply,
	    size_t cap);

/* ---- the end-of-data step ---- */

/* DATA starts (the header has not been read). */
void	 policy_data(struct policy_txn *);
/*
 * A header line (dot-unstuffed, no CRLF): observed, then appended to out
 * with its CRLF, or held (a field that may be a forged
 * Authentication-Results), or dropped.
 */
void	 policy_hline(struct policy_txn *, const char *line, size_t len,
	    struct buf *out);
/*
 * The header ends (before its empty line is written).  A held field is
 * written out; the room for our Authentication-Results is reserved in
 * out: at position 0 when top (nothing of the message is in the file
 * yet), else at its end.  off: the file offset of out's first byte.
 * Returns the bytes added to out.
 */
size_t	 policy_hend(struct policy_txn *, struct buf *out, int top,
	    int64_t off);
void	 policy_bline(struct policy_txn *, const char *line, size_t len);
/* The message ends.  1: wait for the callback; 0: go on now. */
int	 policy_data_end(struct policy_txn *, uint64_t sid);
/*
 * Write our field into its room in fd (before the message is committed).
 * 0: accept; 1: refused, reply (no CRLF) in t->eod.reply; -1: the write
 * failed (errno).
 */
int	 policy_data_done(struct policy_txn *, int fd);
/*
 * The header fields named name seen in this message (DMARC's From:),
 * from the end of the header until the transaction is reset; checked
 * messages only (0 otherwise).
 */
size_t	 policy_header_fields(const struct policy_txn *, const char *name,
	    const char **out, size_t *lens, size_t max);
/* Our authserv-id (knob authserv-id; unset: hostname). */
const char *policy_authserv_id(void);

/* Forget the transaction's verdicts (a step under way is dropped). */
void	 policy_txn_reset(struct policy_txn *);
void	 policy_txn_free(struct policy_txn *);

#endif
