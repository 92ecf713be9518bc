/*
 * dest: the queue process's per-destination state, the scheduler's unit
 * for remote delivery: one object per destination domain, holding the
 * transactions open to it and what pacing learned about it: how many
 * transactions it takes at once, how many recipients a second, how many
 * recipients in one transaction, and until when it asked us to wait.
 * The delivery jobs open and close transactions and report outcomes
 * here; the scheduler asks whether a destination is open now.
 *
 * The learning rule (dest_txn_end) is additive increase, multiplicative
 * decrease on a rate in recipients per second, with no time scale of its
 * own: the rate comes from what the receiver accepted between two of its
 * throttling replies, so the same code settles on a receiver whose window
 * is a minute and one whose window is an hour.
 */
#ifndef TERN_DEST_H
#define TERN_DEST_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* What a reply says about the destination (dest_classify). */
#define DEST_SIG_NONE		0	/* success, or about one mailbox */
#define DEST_SIG_THROTTLE	1	/* slow down: 421, 4.7.0, rate texts */
#define DEST_SIG_RCPTS		2	/* too many recipients (452, 4.5.3) */

struct dest_pace {
	double	 rate;		/* recipients a second; 0: not learned */
	double	 step;		/* additive increase per recipient */
	double	 conc;		/* transactions at once */
	double	 next_ok;	/* no transaction starts before this */
	double	 since;		/* start of the current measurement */
	double	 last_dec;	/* last decrease */
	uint32_t accepted;	/* recipients accepted since `since` */
	uint32_t run;		/* accepted since the step last grew */
	int	 rcpt_max;	/* recipients per transaction; 0: no limit */
	double	 rtt;		/* how long a transaction takes (average) */
	double	 waiting;	/* mail has waited since; 0: none waits */
	uint32_t throttles;	/* throttling replies seen */
	uint32_t epoch;		/* decreases so far */
	uint32_t streak;	/* throttles without a success between */
	int	 guess;		/* rate is a first pause, not a measure */
	/* The last decrease's measure, which reports of transactions in
	   flight then still join (pace_late). */
	double	 m_since;	/* its start */
	uint32_t m_acc;		/* recipients accepted in it */
	double	 m_prev;	/* the rate before the decrease */
	int	 m_prev_guess;	/* ... and whether it was a guess */
	uint32_t m_streak;	/* throttles in a row before it */
};

struct dest {
	struct dest	*next;
	char		 domain[256];
	char		 mx[256];	/* last host that answered */
	struct dest	*via;		/* paced with this MX host's state */
	int		 active;	/* transactions in flight */
	struct dest_pace pace;
	double		 static_next;	/* messages-per-minute: next start */
	uint32_t	 ok, temp, perm;	/* outcomes since start */
	time_t		 last;		/* last outcome */
	char		 lasterr[256];	/* last reply, any kind */
};

/*
 * Reply patterns from the throttle-replies file (NULL: the built-in),
 * at start and at every reload.  -1: the file could not be read (the
 * built-in table at start, the one in force at a reload, stays).
 */
int		 dest_load_signals(const char *path);
/* What the reply text (starting with its code) says; see DEST_SIG_*. */
int		 dest_classify(const char *text);
struct dest;
/* The same for an outcome at d: a connection that a destination known
   to throttle drops in the middle of a transaction is a throttle too. */
int		 dest_signal(const struct dest *d, const char *text);

/* The destination of a domain (lower case), made on first use. */
struct dest	*dest_get(const char *domain);
/* The destination of a domain if it was ever seen, else NULL. */
struct dest	*dest_find(const char *domain);
/*
 * The MX host that answered for d (relay "host[addr]:port"): from now on
 * d is paced with that host's state ("mx:HOST"), shared by every domain
 * it serves.
 */
void		 dest_set_mx(struct dest *, const char *relay);
/* Whose pacing state d uses: its MX host's, or its own. */
struct dest	*dest_paced(const struct dest *);
/* Every destination, for listing. */
struct dest	*dest_first(void);
/* How many transactions it may have open at once. */
int		 dest_limit(const struct dest *);
/* Recipients in one transaction there (config and learned). */
size_t		 dest_rcpt_max(const struct dest *);
/* No transaction may start there now: what is due for it waits. */
int		 dest_full(const struct dest *);
/* A transaction of n recipients starts, or ends (whatever its outcome). */
uint32_t	 dest_open(struct dest *, size_t n);
void		 dest_close(struct dest *);
/* One recipient's outcome there: 0 sent, 1 deferred, 2 failed. */
void		 dest_outcome(struct dest *, int status, const char *text);
/*
 * A transaction's end: ok recipients accepted, sig the strongest signal
 * among its replies, epoch what dest_open returned for it.  Adjusts the pacing and, when the destination is
 * told to wait, arms a wake-up for when it reopens.
 */
void		 dest_txn_end(struct dest *, size_t ok, int sig,
		    uint32_t epoch, double opened);
/* The clock pacing runs on (seconds, fractional); `opened` above. */
double		 dest_clock(void);
/* When a throttled recipient there is tried again (seconds). */
uint64_t	 dest_reopen(const struct dest *);
/* The admin's flush: forget the wait (the learned rate stays). */
void		 dest_flush(const char *domain);
/* Before any destination is used: the wake-up timer's loop. */
struct event_base;
void		 dest_init(struct event_base *);
/*
 * The pacing file in the spool: read at start (after dest_init), written
 * a while after a change and at a clean stop (dest_flush_file).  The
 * codec for tests: dest_decode takes a writable text and says how many
 * destinations it kept (stale ones are dropped); -1: not such a file.
 */
struct buf;
void		 dest_restore(void);
void		 dest_flush_file(void);
void		 dest_encode(struct buf *, double now);
int		 dest_decode(char *text, size_t len, double now, size_t *kept);

/* The rule itself, on a pace record, at time now (seconds). */
void		 pace_init(struct dest_pace *, int conc);
/* A transaction starts; what it returns goes back to pace_result. */
uint32_t	 pace_open(struct dest_pace *, size_t n, double now);
void		 pace_result(struct dest_pace *, size_t ok, int sig,
		    uint32_t epoch, double now, double first_pause, int maxconc);
int		 pace_open_now(const struct dest_pace *, int active,
		    int maxconc, double now);
/* Recipients the rate lets go by now (at least 1); 0: not paced. */
double		 pace_allow(const struct dest_pace *, double now);
/* Mail found the destination closed (the first time since it opened). */
void		 pace_wait(struct dest_pace *, double now);

#endif
