/*
 * taglist: the tag=value lists of RFC 6376 3.2, in which DKIM-Signature
 * fields and DKIM key records are written, and DMARC records too (RFC
 * 7489 6.3, 6.4).  Pure: no I/O, no allocation; a tag is two spans of
 * the text parsed.  The DKIM verifier (auth/dkimverify.c), the DMARC
 * evaluator (auth/dmarc.c) and the record checks of ternctl dns --check
 * (auth/dnsrec.c) read their lists here; each decides what a tag means.
 *
 *   tag-list  = tag-spec *( ";" tag-spec ) [ ";" ]
 *   tag-spec  = [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
 *   tag-name  = ALPHA *( ALPHA / DIGIT / "_" )
 *   tag-value = [ tval *( 1*( WSP / FWS ) tval ) ]
 *   tval      = 1*VALCHAR   (%x21-3A / %x3C-7E: no ";")
 *
 * FWS is blanks (SP, HT) with folds (CRLF followed by a blank) among
 * them; a bare CR or LF is not.  Blanks after the final ";" are taken.
 */
#ifndef TERN_TAGLIST_H
#define TERN_TAGLIST_H

#include <stddef.h>

#define TAGLIST_MAX	32		/* tags of one list the callers keep */

/* Flags */
#define TAGLIST_LOOSE	0x1	/* blanks are SP, HT, CR and LF anywhere,
				   a value any octet but ";", empty
				   tag-specs skipped (the DMARC evaluator's
				   tolerance) */
#define TAGLIST_NOCASE	0x2	/* tag names compared without case (DMARC's
				   ABNF strings, RFC 7489 6.4) */

struct taglist_tag {
	const char	*name, *val;	/* into the parsed text, not NUL-ended */
	size_t		 nlen, vlen;	/* the value without FWS around it */
	size_t		 voff, vend;	/* offsets of what follows "=" up to
					   the ";" (or the end) */
};

/* A cursor over a list's tag-specs, one at a time. */
struct taglist_iter {
	const char	*s;
	size_t		 len;
	size_t		 pos;		/* len + 1: past the end */
	unsigned	 flags;
};

void	taglist_begin(struct taglist_iter *, const char *s, size_t len,
	    unsigned flags);

/*
 * The next tag-spec: 1 with *t; 0 at the end of the list; -1 with why
 * for a tag-spec that is not tag=value (or, without TAGLIST_LOOSE, an
 * empty one before a ";"), the cursor then past its ";", so a caller
 * may go on and ignore it (DMARC) or give up (DKIM).  Duplicates are
 * the caller's (or taglist_parse's) to find.
 */
int	taglist_next(struct taglist_iter *, struct taglist_tag *t,
	    const char **why);

/*
 * A whole list into tags (at most max): every tag-spec read, at least
 * one, no name twice (RFC 6376 3.2: the whole list is then invalid).
 * 0, or -1 with why.
 */
int	taglist_parse(const char *s, size_t len, unsigned flags,
	    struct taglist_tag *tags, size_t max, size_t *n, const char **why);

/* The tag named name (NUL-ended; flags: TAGLIST_NOCASE), or NULL. */
const struct taglist_tag *taglist_find(const struct taglist_tag *tags,
	    size_t n, const char *name, unsigned flags);

/*
 * Is the list's first tag-spec name=value exactly (the name per flags,
 * the value with case)?  DMARC's "v=DMARC1" first (RFC 7489 6.3).
 */
int	taglist_first_is(const char *s, size_t len, unsigned flags,
	    const char *name, const char *value);

#endif
