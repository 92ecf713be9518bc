/*
 * dest: per-destination state, kept in one place and run by the queue
 * process: how many transactions are open to a domain, the limit, and how
 * recent attempts went.  The scheduler's unit for remote delivery; pacing
 * builds on this (a later version adapts the limit to what the
 * destination accepts).  Destinations live as long as the process.
 */
#include <string.h>
#include <time.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "queue/dest.h"
#include "queue/qint.h"

static struct dest *dests;	/* every destination seen */

struct dest *
dest_find(const char *domain)
{
	struct dest *d;

	for (d = dests; d; d = d->next)
		if (strcmp(d->domain, domain) == 0)
			return d;
	return NULL;
}

struct dest *
dest_get(const char *domain)
{
	struct dest *d;

	if ((d = dest_find(domain)) != NULL)
		return d;
	d = xcalloc(1, sizeof(*d));
	str_copy(d->domain, domain, sizeof(d->domain));
	d->next = dests;
	dests = d;
	return d;
}

int
dest_limit(const struct dest *d)
{
	(void)d;	/* one limit for all, until pacing adapts it */
	return (int)conf_num(queue_conf(), NULL, K_MAX_DOMAIN_CONNECTIONS);
}

int
dest_full(const struct dest *d)
{
	return d->active >= dest_limit(d);
}

void
dest_open(struct dest *d)
{
	d->active++;
}

void
dest_close(struct dest *d)
{
	if (d->active > 0)
		d->active--;
}

void
dest_outcome(struct dest *d, int status, const char *text)
{
	d->last = time(NULL);
	if (status == 0) {
		d->ok++;
		d->streak = 0;
		return;
	}
	if (status == 1) {
		d->temp++;
		d->streak++;
	} else
		d->perm++;
	log_sanitize(d->lasterr, text ? text : "", sizeof(d->lasterr));
}
