/*
 * verify: RCPT checks of recipients that only an LMTP server knows (a
 * domain routed via lmtp, or a local domain with local-delivery lmtp), run
 * by the smtp process.  With lmtp-verify probe, the LMTP server itself is
 * asked (LHLO, MAIL FROM:<>, RCPT, QUIT) on the smtp process's event loop,
 * and its answer kept for lmtp-verify-cache (yes) or
 * lmtp-verify-negative-cache (no); a server that does not answer fails
 * closed, for now.  With lmtp-verify map, the lmtp-recipients file decides.
 * Either way a system account whose ~/.forward will be read is taken
 * first: the forward takes its mail (the parent looks, see verify.c).
 */
#ifndef TERN_VERIFY_H
#define TERN_VERIFY_H

#include <stddef.h>
#include <stdint.h>

struct aliases;
struct conf;
struct event_base;
struct ipc;
struct rec_reader;

#define VERIFY_SKIP	0	/* not delivered over LMTP: the usual checks */
#define VERIFY_OK	1	/* the server (or the map) takes it */
#define VERIFY_NO	2	/* it does not: 550 */
#define VERIFY_TEMP	3	/* cannot tell now: 451 */
#define VERIFY_WAIT	4	/* a probe runs: the callback follows */

typedef void (*verify_cb)(uint64_t sid, int result, const char *text);

void	verify_init(struct event_base *, const struct conf *,
	    struct aliases *);
/*
 * Check addr for session sid.  VERIFY_SKIP, OK, NO or TEMP at once (text
 * says why, for the reply), or VERIFY_WAIT: cb(sid, ...) is called later
 * from the event loop, never from inside this call.
 */
int	verify_rcpt(const char *addr, uint64_t sid, verify_cb cb, char *text,
	    size_t textlen);
/*
 * The channel to the parent, which says whether a system account has a
 * ~/.forward that takes its mail (IMSG_P_FORWARD), and its answer.
 */
void	verify_parent(struct ipc *);
void	verify_forward_answer(struct rec_reader *);
/* Recipients the map (text, one address or @domain a line) holds. */
int	verify_map_has(const char *text, size_t len, const char *addr);

#endif
