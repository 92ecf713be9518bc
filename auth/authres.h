/*
 * authres: the Authentication-Results header field (RFC 8601) the MX
 * adds: our verdicts under our authserv-id (spf=, dkim=, later dmarc=),
 * and the test that finds fields from outside claiming that id, which
 * the session removes.  Pure; used by the smtp process's end-of-data
 * step (smtpd/policy.c) and by ternctl check.
 *
 * The field is written into a room reserved where the message's header
 * ends being read, before the DKIM results are known: authres_room says
 * how long the field can be once the signatures (and their d=, s=, b=)
 * are known, and authres_format pads each entry to its longest form with
 * blanks (CFWS, which RFC 8601's grammar allows before each ";" and at
 * the end), so the field fits its room exactly.
 */
#ifndef TERN_AUTHRES_H
#define TERN_AUTHRES_H

#include <stddef.h>

#include "auth/dkimverify.h"

struct buf;

#define AUTHRES_SPF_MAX		1100	/* "spf=... smtp.mailfrom=..." */
#define AUTHRES_COMMENT_MAX	96	/* a result's comment, bytes */

/* One DKIM signature's verdict (what DMARC reads: d=, s=, result). */
struct authres_dkim {
	enum dkim_result result;
	char		 d[DKIM_DOMAIN_MAX + 1];	/* "" when unreadable */
	char		 s[DKIM_SELECTOR_MAX + 1];
	char		 b8[9];		/* b='s first 8 characters */
	char		 comment[AUTHRES_COMMENT_MAX];
};

/*
 * Another method's entry (DMARC's): its longest form's length is set
 * where the header ends (room; 0: no entry), its text ("dmarc=pass
 * header.from=example.org") at the end; it is padded to room.
 */
#define AUTHRES_EXTRA		2
#define AUTHRES_ENTRY_MAX	512

struct authres_entry {
	size_t	 room;
	char	 text[AUTHRES_ENTRY_MAX];
};

struct authres {
	char			 spf[AUTHRES_SPF_MAX];	/* "" : not checked */
	int			 dkim;		/* DKIM was checked */
	size_t			 ndkim;		/* signatures (0: dkim=none) */
	struct authres_dkim	 dk[DKIM_VERIFY_MAX];
	struct authres_entry	 extra[AUTHRES_EXTRA];	/* after dkim= */
};

/* Nothing to say: no field at all. */
int	authres_empty(const struct authres *);

/* The longest the field can be, given what is known (0: empty). */
size_t	authres_room(const struct authres *, const char *authserv_id);

/*
 * Append the field, CRLF-terminated: room 0, as short as it is;
 * otherwise exactly room bytes (-1, nothing written, if it cannot be).
 */
int	authres_format(struct buf *, const char *authserv_id,
	    const struct authres *, size_t room);

/*
 * Is this header field (as it arrived: name, colon, value, folds as
 * CRLF) an Authentication-Results field whose authserv-id is id
 * (case-insensitive)?  RFC 8601 5: such fields from outside are removed.
 * 0, 1, or -1: an Authentication-Results field not yet readable that
 * far (more text may decide).
 */
int	authres_claims(const char *field, size_t len, const char *id);

#endif
