/*
 * ctl: the queue process's control socket, which ternctl talks to (see
 * ctl.c for the requests).
 */
#ifndef TERN_CTL_H
#define TERN_CTL_H

struct event_base;

/* Serve the control socket the parent bound (-1: there is none). */
void	ctl_start(struct event_base *, int controlfd);
/* Retry now: every message (domain NULL), or the recipients at domain. */
void	ctl_flush(const char *domain);

#endif
