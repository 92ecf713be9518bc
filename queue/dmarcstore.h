/*
 * dmarcstore: the record of every DMARC evaluation (queue process, its
 * only writer), read later by aggregate reports (RFC 7489 7.2).  One
 * append-only file a day (UTC) under spool/dmarc/, see dmarcstore.c.
 */
#ifndef TERN_DMARCSTORE_H
#define TERN_DMARCSTORE_H

#include <stddef.h>
#include <stdint.h>

struct buf;
struct rec_reader;

/* Open spool/dmarc (made by the parent); a missing one: nothing kept. */
void	 dmarcstore_open(const char *spool);
/* Q_DMARC from the smtp process: check the evaluation, append it. */
void	 dmarcstore_append(struct rec_reader *);
/* The framed entry for one evaluation's payload (for tests). */
void	 dmarcstore_frame(struct buf *, const void *, size_t);
/*
 * Walk a day file's bytes: calls fn with each good entry's payload;
 * stops at a torn or damaged entry.  Returns the entries given, and in
 * *bad whether the walk stopped early.
 */
int	 dmarcstore_walk(const void *, size_t, int *bad,
	    void (*fn)(const void *, size_t, void *), void *arg);

#endif
