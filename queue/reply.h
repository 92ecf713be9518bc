/*
 * reply: gathers a peer's SMTP or LMTP replies from the bytes it sends,
 * for the SMTP client (queue/mta.c) in the smtp process.  Pure and
 * incremental: bytes go in in chunks of any size, complete replies come
 * out one at a time, the same whatever the chunks were; memory is the
 * struct (one line at most) whatever the peer sends.  A line ends at LF,
 * a CR just before it dropped (peers that end lines with a bare LF are
 * read too); each line is checked by mta_reply_line().
 */
#ifndef TERN_REPLY_H
#define TERN_REPLY_H

#include <stddef.h>

#define REPLY_LINE_MAX	4096	/* longest line, its CR LF not counted */
#define REPLY_LINES_MAX	200	/* lines of one multi-line reply */
#define REPLY_TEXT	400	/* text kept: its first three lines */

enum reply_status {
	REPLY_MORE,		/* every byte taken, no reply complete yet */
	REPLY_DONE,		/* a reply is complete: code, text, ext */
	REPLY_EMALFORMED,	/* a bad line, codes that differ, too many */
	REPLY_ELONG		/* a line over REPLY_LINE_MAX */
};

struct reply {
	/* The reply, whole when reply_feed() says REPLY_DONE. */
	int		 code;
	int		 lines;
	/* Its first three lines, sanitised (log_sanitize: up to a NUL,
	   controls and 8-bit as '?'), joined by spaces. */
	char		 text[REPLY_TEXT];
	/* What its lines after the first offer, read as an EHLO reply's
	   (mta_ehlo_keyword, MTA_EXT_*), and the last SIZE limit given. */
	int		 ext;
	long long	 size;
	/* The reader's own. */
	enum reply_status err;		/* an error stays */
	int		 done;		/* the next byte starts a reply */
	size_t		 len;		/* bytes of the line so far */
	char		 line[REPLY_LINE_MAX + 2];
};

void	reply_init(struct reply *);
/*
 * Take bytes p[0..n) up to the end of the first reply they complete;
 * *used says how many.  REPLY_DONE: the reply is in r, the rest of the
 * bytes (n - *used) are the caller's to feed again, or to keep (after
 * a reply to STARTTLS nothing may follow).  REPLY_MORE: all were taken.
 * An error is final: every later call returns it and takes nothing.
 */
enum reply_status reply_feed(struct reply *, const char *p, size_t n,
	    size_t *used);

#endif
