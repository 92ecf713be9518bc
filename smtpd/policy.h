/*
 * policy: the SMTP session's verdict steps (smtp process).  A step may
 * wait (SPF on DNS) without holding up other sessions: the session asks,
 * holds its input, and is called back on the loop.  Each transaction keeps
 * its verdicts and the header fields to prepend to the message (struct
 * policy_txn).  Today: SPF at MAIL, applied at RCPT.  DKIM and DMARC will
 * add their steps at the end of data the same way.
 */
#ifndef TERN_POLICY_H
#define TERN_POLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/dmarc.h"
#include "auth/spf.h"
#include "lib/util.h"

struct conf;
struct event_base;
struct listener;

struct policy_job;

struct policy_txn {
	struct policy_job	*pending;	/* a step under way */
	int			 spf_done;	/* a verdict is here */
	struct spf_verdict	 spf;
	struct buf		 headers;	/* prepended, CRLF-terminated */
	/* DMARC (RFC 7489): From: read as the header streams, policy
	   discovery started at the end of the header, the verdict at the
	   end of data. */
	int			 dmarc_mode;	/* DMARC_MODE_*, for this message */
	struct dmarc_from	*from;		/* NULL: no DMARC for it */
	struct policy_job	*dpending;	/* discovery under way */
	int			 dmarc_done;	/* discovery is back */
	int			 eod_wait;	/* the end of data waits for it */
	struct dmarc_policy_found *found;	/* per From: domain */
	struct dmarc_verdict	 dmarc;
	int			 quarantine;	/* the verdict says Junk */
};

/* Actions of the end-of-data step. */
enum policy_action { POLICY_ACCEPT, POLICY_REJECT, POLICY_TEMPFAIL };

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

/*
 * DATA starts: does DMARC apply to this message (the listener's dmarc
 * knob; exempt: authenticated or local; trusted networks skip it)?
 */
void	 policy_data(struct policy_txn *, const struct listener *,
	    const struct sockaddr_storage *, int exempt);
/*
 * A header line as received, without CRLF; the empty line ends the header
 * and starts DMARC policy discovery (in the workers).
 */
void	 policy_hline(struct policy_txn *, uint64_t sid, const char *line,
	    size_t len);
/*
 * End of data: 1 when DMARC discovery is still under way (the callback
 * comes when it is back), 0 when the verdict can be made now.
 */
int	 policy_eod_wait(struct policy_txn *, uint64_t sid);
/*
 * End of data: the DMARC verdict from SPF (the MAIL step's) and the DKIM
 * results in au (spf fields ignored).  Appends dmarc= to ar (the
 * Authentication-Results field being built; may be NULL), sets
 * t->quarantine, logs, and encodes the evaluation for the store into
 * rec (may be NULL).  POLICY_REJECT and _TEMPFAIL put the reply (no
 * CRLF) in reply.  Monitor mode always accepts.
 */
enum policy_action policy_dmarc(struct policy_txn *, uint64_t sid,
	    const char *ip, const char *mailfrom, const struct dmarc_auth *au,
	    struct buf *ar, struct buf *rec, char *reply, size_t cap);

/* Forget the transaction's verdicts (a step under way is dropped). */
void	 policy_txn_reset(struct policy_txn *);
void	 policy_txn_free(struct policy_txn *);

#endif
