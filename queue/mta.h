/*
 * mta: the SMTP client, run by the unprivileged smtp process, which already
 * does all of ternd's network I/O.  The queue process sends it jobs (one
 * message, one destination domain, some recipients, the message fd); it
 * finds the hosts (route, MX, or the domain's own address), connects,
 * speaks ESMTP with opportunistic or required STARTTLS, and reports one
 * outcome per recipient.  Idle connections are kept briefly and reused for
 * the next message to the same destination.
 */
#ifndef TERN_MTA_H
#define TERN_MTA_H

#include <stddef.h>

struct conf;
struct event_base;
struct ipc;
struct rec_reader;

void	mta_init(struct event_base *, const struct conf *);
/* IMSG_M_DELIVER from the queue channel c; takes the fd. */
void	mta_job(struct ipc *c, struct rec_reader *, int fd);
/* The queue channel c went away: finish nothing for it. */
void	mta_forget(struct ipc *c);
/* Jobs or connections still active (a draining process waits for them). */
size_t	mta_busy(void);
/* Close idle connections (process stopping). */
void	mta_shutdown(void);

/* IMSG_M_DELIVER flags (T_FLAGS). */
#define MTA_F_SRS	0x1	/* forwarded: send with the vault's SRS sender */
#define MTA_F_LMTP	0x2	/* to the lmtp server of local-delivery lmtp */
#define MTA_F_FALLBACK	0x4	/* deferred too long: through fallback-relay */

/* Status of one recipient in IMSG_M_RESULT. */
#define MTA_OK		0
#define MTA_TEMP	1
#define MTA_PERM	2

/* Parse one SMTP reply line "250-text"; exposed for tests and fuzzing. */
int	mta_reply_line(const char *line, size_t len, int *code, int *more);

/*
 * One line of a peer's EHLO (or LHLO) reply after its first, the text
 * past "250-": which extension it offers (MTA_EXT_*, 0 for one we do not
 * use) and, for SIZE, the peer's limit in *size (0: none given, never
 * negative).  Exposed for tests and fuzzing.
 */
#define MTA_EXT_PIPELINING	0x001
#define MTA_EXT_8BITMIME	0x002
#define MTA_EXT_SMTPUTF8	0x004
#define MTA_EXT_STARTTLS	0x008
#define MTA_EXT_DSN		0x010
#define MTA_EXT_CHUNKING	0x020
#define MTA_EXT_BINARYMIME	0x040
#define MTA_EXT_SIZE		0x080
#define MTA_EXT_AUTH_PLAIN	0x100
#define MTA_EXT_AUTH_LOGIN	0x200
#define MTA_EXT_ALL		0x3ff
int	mta_ehlo_keyword(const char *kw, long long *size);

#endif
