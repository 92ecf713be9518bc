/*
 * throttle: `ternctl auth`, in the queue process, which serves the
 * control socket: the AUTH throttle lives in the vault (auth/authcheck.c),
 * so the queue asks it over their channel (the parent hands one out, like
 * the smtp process's) and answers the control client when the vault has.
 */
#ifndef TERN_THROTTLE_H
#define TERN_THROTTLE_H

struct bufferevent;
struct event_base;

/* The channel to the vault (a new one replaces the old: a restart). */
void	throttle_channel(struct event_base *, int fd);
/*
 * A control client's "auth" (key NULL: the list) or "auth-clear KEY".
 * The answer is written to bev later (ctl_reply); bev belongs to this
 * module until then.
 */
void	throttle_ask(struct bufferevent *bev, const char *key);

#endif
