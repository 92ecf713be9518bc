/*
 * dest: the queue process's per-destination state, the scheduler's unit
 * for remote delivery: one object per destination domain, holding the
 * transactions open to it, its limit and how recent attempts went.  The
 * delivery jobs open and close transactions and report outcomes here;
 * pacing that adapts the limit to what a destination accepts builds on it.
 */
#ifndef TERN_DEST_H
#define TERN_DEST_H

#include <stdint.h>
#include <time.h>

struct dest {
	struct dest	*next;
	char		 domain[256];
	int		 active;	/* transactions in flight */
	int		 limit;
	uint32_t	 ok, temp, perm;	/* outcomes since start */
	uint32_t	 streak;	/* consecutive temporary failures */
	time_t		 last;		/* last outcome */
	char		 lasterr[256];
};

/* The destination of a domain (lower case), made on first use. */
struct dest	*dest_get(const char *domain);
/* The destination of a domain if it was ever seen, else NULL. */
struct dest	*dest_find(const char *domain);
/* How many transactions it may have open at once. */
int		 dest_limit(const struct dest *);
/* Every one of its slots is in use: what is due for it waits. */
int		 dest_full(const struct dest *);
/* A transaction to it starts, or ends (whatever its outcome). */
void		 dest_open(struct dest *);
void		 dest_close(struct dest *);
/* One recipient's outcome there: 0 sent, 1 deferred, 2 failed. */
void		 dest_outcome(struct dest *, int status, const char *text);

#endif
