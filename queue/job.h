/*
 * job: the queue process's deliveries: due recipients become local jobs
 * (run by the parent) and remote transactions (run by the smtp process),
 * whose outcomes are recorded on the message.
 */
#ifndef TERN_JOB_H
#define TERN_JOB_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct ipc;
struct qmsg;
struct rec_reader;

void	job_init(void);
/* Start deliveries for m's due recipients; *soonest: a later next try. */
void	job_try(struct qmsg *m, time_t now, uint64_t *soonest);
/* Deliveries of m's recipient rcpt in flight. */
int	job_count(const struct qmsg *m, size_t rcpt);
/* Local deliveries in flight. */
size_t	job_local(void);

/* P_DELIVERED from the parent: a local delivery's outcome. */
void	job_delivered(struct rec_reader *);
/* M_RESULT from the smtp process on channel c: a transaction's outcomes. */
void	job_remote_result(struct ipc *c, struct rec_reader *);
/* The smtp process on channel c is gone: its transactions are retried. */
void	job_txn_lost(struct ipc *c);

#endif
