/*
 * ctl: the queue process's control socket, which ternctl talks to (see
 * ctl.c for the requests).
 */
#ifndef TERN_CTL_H
#define TERN_CTL_H

struct buf;
struct bufferevent;
struct event_base;

/* Serve the control socket the parent bound (-1: there is none). */
void	ctl_start(struct event_base *, int controlfd);
/* Answer a control client (the whole reply in o) and close it. */
void	ctl_reply(struct bufferevent *, const struct buf *o);
/* Retry now: every message (domain NULL), or the recipients at domain. */
void	ctl_flush(const char *domain);

#endif
