/*
 * role: start-up of an exec'd role process (smtp, queue, vault): receive
 * what the parent sends, drop privileges, run the role.  Never returns.
 */
#ifndef TERN_ROLE_H
#define TERN_ROLE_H

void	role_start(int argc, char *argv[], const char *role)
	    __attribute__((noreturn));

#endif
