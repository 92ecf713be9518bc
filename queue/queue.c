/*
 * queue: the queue process, sole writer of the spool, and what holds its
 * parts together: the process's state (the configuration and aliases in
 * force, the channels to the parent and to the smtp processes, every
 * queued message), the requests on those channels handed to the part
 * that serves them, a message settled once nothing of it is in flight,
 * reload, and the stop on SIGTERM.  The parts: spool.c (the files and the
 * recovery at start), commit.c (messages coming in, the group commit and
 * its thread), sched.c (when each message is looked at), job.c
 * (deliveries and their outcomes), dest.c (per-destination state),
 * notice.c (DSNs and delay warnings) and ctl.c (ternctl on the control
 * socket).  Runs unprivileged; local deliveries are run by the parent as
 * the recipient user, with the message fd passed along.
 */
#include <sys/queue.h>
#include <sys/types.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/util.h"
#include "queue/commit.h"
#include "queue/ctl.h"
#include "queue/envelope.h"
#include "queue/job.h"
#include "queue/limits.h"
#include "queue/notice.h"
#include "queue/dest.h"
#include "queue/qint.h"
#include "queue/resolve.h"
#include "queue/sched.h"
#include "queue/spool.h"
#include "queue/throttle.h"

/* Where ternd started: relative config paths resolve against it. */

#define QUEUE_STOP_SECS		25	/* the parent kills at 30 s */

struct peer {
	struct peer	*next;
	struct ipc	*ipc;
};

static struct {
	struct event_base	*base;
	struct conf		*conf;
	struct aliases		*aliases;
	struct ipc		*parent;
	struct peer		*peers;
	int			 stopping;	/* SIGTERM: no new deliveries */
	struct event		*stopev;	/* the stop's deadline */
} q;

struct qmsgs queue_all = TAILQ_HEAD_INITIALIZER(queue_all);

/* The configuration in force (a reload replaces it). */
struct conf *
queue_conf(void)
{
	return q.conf;
}

/* The aliases map in force. */
struct aliases *
queue_aliases(void)
{
	return q.aliases;
}

/* The channel to the parent, which runs local deliveries. */
struct ipc *
queue_parent(void)
{
	return q.parent;
}

/* The smtp process that gets remote jobs; NULL if there is none. */
struct ipc *
queue_smtp(void)
{
	return q.peers ? q.peers->ipc : NULL;	/* the newest smtp process */
}

/* ---- smtp channels ------------------------------------------------------- */

static void
queue_peer_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	if (fd >= 0)
		close(fd);
	switch (type) {
	case IMSG_Q_CREATE:
		commit_create(c, rd);
		break;
	case IMSG_Q_RCPTS:
		commit_rcpts(c, rd);
		break;
	case IMSG_Q_COMMIT:
		commit_request(c, rd);
		break;
	case IMSG_Q_ABORT:
		commit_abort(c, rd);
		break;
	case IMSG_M_RESULT:
		job_remote_result(c, rd);
		break;
	default:
		log_warnx("event=ipc result=error reason=\"unexpected "
		    "message %d from smtp\"", type);
	}
}

static void
queue_peer_closed(struct ipc *c, void *arg)
{
	struct peer **p, *pe;

	commit_forget(c);
	for (p = &q.peers; (pe = *p) != NULL; p = &pe->next)
		if (pe->ipc == c) {
			*p = pe->next;
			free(pe);
			break;
		}
	job_txn_lost(c);
	ipc_free(c);
	queue_stop_check();
}

static void
queue_add_peer(int fd)
{
	struct peer *p = xcalloc(1, sizeof(*p));

	p->ipc = ipc_new(q.base, fd, queue_peer_msg, queue_peer_closed, NULL);
	p->next = q.peers;
	q.peers = p;
	/* Remote deliveries that found no smtp process can start now. */
	sched_unblock();
}

/* ---- messages ------------------------------------------------------------ */

/* Oldest first; a new message is due at once. */
void
queue_append_msg(struct qmsg *m)
{
	TAILQ_INSERT_TAIL(&queue_all, m, entry);
	sched_wake(m, 0);
}

static void
queue_unlink_msg(struct qmsg *m)
{
	TAILQ_REMOVE(&queue_all, m, entry);
	sched_forget(m);
	notice_free(m);
	free(m->rr);
	envelope_free(&m->env);
	free(m);
}

static int
queue_all_final(const struct qmsg *m)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (m->env.rcpts[i].state != RS_DONE &&
		    m->env.rcpts[i].state != RS_FAILED)
			return 0;
	return 1;
}

/* Called when a message may have no deliveries in flight; 1: m is gone. */
int
queue_settle(struct qmsg *m)
{
	if (m->jobs > 0)
		return 0;
	if (m->removed) {
		spool_remove(m->env.id);
		queue_unlink_msg(m);
		return 1;
	}
	notice_send(m);
	if (queue_all_final(m)) {
		spool_remove(m->env.id);
		log_info("q=%s event=removed reason=\"%s\"", m->env.id,
		    "delivered or bounced");
		queue_unlink_msg(m);
		return 1;
	}
	if (m->dirty)
		spool_state_later();
	return 0;
}

/* ---- parent channel ------------------------------------------------------ */

static void
queue_reload(struct rec_reader *rd)
{
	struct rec r;
	struct conf *c;
	char err[512];

	if (rec_next(rd, &r) != 1 || r.tag != T_CONF)
		return;
	c = conf_parse(q.conf->file, (const char *)r.data, r.len,
	    proc_basedir, err, sizeof(err));
	if (c == NULL) {
		log_warnx("event=reload result=error reason=\"%s\"", log_q(err));
		return;
	}
	if (strcmp(conf_str(c, K_SPOOL), conf_str(q.conf, K_SPOOL)) != 0)
		log_warnx("event=reload result=warn reason=\"spool change "
		    "needs a restart\"");
	conf_free(q.conf);
	q.conf = c;
	aliases_close(q.aliases);
	q.aliases = aliases_open(conf_str(c, K_ALIASES));
	(void)dest_load_signals(conf_str(c, K_THROTTLE_REPLIES));
	log_info("event=reload result=ok");
	ctl_flush(NULL);
}

/* A notice without payload (the control socket's "credentials"). */
void
queue_tell_parent(int type)
{
	if (q.parent)
		ipc_send(q.parent, type, NULL, 0, -1);
}

/* A peer channel's kind: the vault's (ternctl auth), or an smtp's. */
static int
queue_peer_is_vault(struct rec_reader *rd)
{
	struct rec r;

	while (rec_next(rd, &r) == 1)
		if (r.tag == T_KIND)
			return r.len == strlen(PEER_VAULT) &&
			    memcmp(r.data, PEER_VAULT, r.len) == 0;
	return 0;
}

static void
queue_parent_msg(struct ipc *c, int type, struct rec_reader *rd, int fd,
    void *arg)
{
	switch (type) {
	case IMSG_P_PEER:
		if (fd >= 0 && queue_peer_is_vault(rd))
			throttle_channel(q.base, fd);
		else if (fd >= 0)
			queue_add_peer(fd);
		fd = -1;
		break;
	case IMSG_P_DELIVERED:
		job_delivered(rd);
		break;
	case IMSG_P_CONF:
		queue_reload(rd);
		break;
	case IMSG_P_ACCOUNTS:
		switch (resolve_accounts_msg(rd->p, rd->len)) {
		case 1:
			log_info("event=reload result=ok accounts=%zu",
			    resolve_accounts_count());
			break;
		case -1:
			log_warnx("event=reload result=error reason=\"malformed "
			    "accounts\"");
			break;
		}
		break;
	}
	if (fd >= 0)
		close(fd);
}

static void
queue_parent_closed(struct ipc *c, void *arg)
{
	_exit(0);
}

/* Stopping: the last batch and every changed envelope go to disk. */
static void __attribute__((noreturn))
queue_stop(const char *result)
{
	struct qmsg *m;

	commit_flush_all();
	spool_state_flush(-1, 0, NULL);
	limits_flush();
	dest_flush_file();
	TAILQ_FOREACH(m, &queue_all, entry)
		if (m->dirty)
			spool_write_env(m);
	/* The renames and removals of the last outcomes, too. */
	if (spool_sync_queue() == -1)
		log_warnx("event=stop result=warn reason=\"fsync queue/: %s\"",
		    strerror(errno));
	log_info("event=stop result=%s deliveries=%zu", result, job_local());
	exit(0);
}

/*
 * Once stopping, the queue exits when nothing can bring it news: every
 * smtp process it serves is gone (their last commits answered) and every
 * local delivery it started has reported.  A delivery whose outcome is
 * not recorded would be made again at the next start.
 */
void
queue_stop_check(void)
{
	if (q.stopping && job_local() == 0 && q.peers == NULL)
		queue_stop("ok");
}

static void
queue_stop_deadline(evutil_socket_t fd, short ev, void *arg)
{
	/* What is still out may be delivered again: a duplicate, no loss. */
	queue_stop("timeout");
}

/*
 * SIGTERM (from the parent, with the smtp processes'): start no more
 * deliveries, go on answering the smtp processes until they have gone and
 * recording the outcomes of local deliveries in flight, then exit; at the
 * latest after QUEUE_STOP_SECS, under the parent's own stop timeout.
 */
static void
queue_sigterm(evutil_socket_t sig, short ev, void *arg)
{
	struct timeval tv = { QUEUE_STOP_SECS, 0 };

	if (q.stopping)
		return;
	q.stopping = 1;
	sched_stop();
	log_info("event=stop result=wait deliveries=%zu", job_local());
	q.stopev = evtimer_new(q.base, queue_stop_deadline, NULL);
	evtimer_add(q.stopev, &tv);
	queue_stop_check();
}

void
queue_main(struct conf *conf, const char *text, size_t len, int parentfd,
    int controlfd, int smtpfd, int vaultfd)
{
	struct event *ev;

	(void)text;
	(void)len;
	q.conf = conf;
	job_init();
	q.base = event_base_new();
	event_base_priority_init(q.base, 2);
	q.aliases = aliases_open(conf_str(conf, K_ALIASES));
	spool_open(q.base, conf_str(conf, K_SPOOL));
	sched_init(q.base);
	dest_init(q.base);
	dest_load_signals(conf_str(conf, K_THROTTLE_REPLIES));
	dest_restore();
	spool_recover();
	limits_start(q.base);
	q.parent = ipc_new(q.base, parentfd, queue_parent_msg,
	    queue_parent_closed, NULL);
	if (smtpfd >= 0)
		queue_add_peer(smtpfd);
	if (vaultfd >= 0)
		throttle_channel(q.base, vaultfd);
	commit_start(q.base);
	ctl_start(q.base, controlfd);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	ev = evsignal_new(q.base, SIGTERM, queue_sigterm, NULL);
	evsignal_add(ev, NULL);
	sched_arm(0);
	proc_confine("queue");
	log_info("event=start result=ok");
	event_base_dispatch(q.base);
	exit(0);
}
