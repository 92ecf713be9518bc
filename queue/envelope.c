/*
 * envelope: encoder and hostile-input decoder for queue envelopes.  Run
 * by the queue process, the only writer of the spool.
 */
#include <stdlib.h>
#include <string.h>

#include "queue/envelope.h"
#include "lib/log.h"
#include "lib/rec.h"
#include "lib/util.h"

static const char env_magic[8] = { 'T', 'E', 'R', 'N', 'E', 'N', 'V', 1 };

enum env_tag {
	E_ID = 1, E_SENDER, E_HELO, E_CLIENT, E_PROTO, E_BODY8, E_UTF8,
	E_SIZE, E_ARRIVAL, E_RCPT, E_R_STATE, E_R_ATTEMPTS, E_R_LAST,
	E_R_NEXT, E_R_ERROR, E_R_DONE, E_FLAGS, E_R_FWD,
	E_ACCOUNT,	/* newer: absent from older envelopes, and optional */
	E_RET, E_ENVID, E_R_NOTIFY, E_R_ORCPT,	/* DSN (RFC 3461), optional */
	E_END = 0xff
};

#define ENV_STR_MAX	4096

void
envelope_encode(const struct envelope *e, struct buf *b)
{
	size_t i, j;
	uint32_t crc;
	unsigned char c[4];

	buf_append(b, env_magic, sizeof(env_magic));
	rec_put_str(b, E_ID, e->id);
	rec_put_str(b, E_SENDER, e->sender);
	rec_put_str(b, E_HELO, e->helo ? e->helo : "");
	rec_put_str(b, E_CLIENT, e->client ? e->client : "");
	rec_put_str(b, E_PROTO, e->proto ? e->proto : "ESMTP");
	rec_put_u64(b, E_BODY8, (uint64_t)e->body8bit);
	rec_put_u64(b, E_UTF8, (uint64_t)e->smtputf8);
	rec_put_u64(b, E_SIZE, e->size);
	rec_put_u64(b, E_ARRIVAL, e->arrival);
	if (e->flags)
		rec_put_u64(b, E_FLAGS, e->flags);
	if (e->account)
		rec_put_str(b, E_ACCOUNT, e->account);
	if (e->ret)
		rec_put_u64(b, E_RET, (uint64_t)e->ret);
	if (e->envid)
		rec_put_str(b, E_ENVID, e->envid);
	for (i = 0; i < e->nrcpts; i++) {
		const struct env_rcpt *r = &e->rcpts[i];

		rec_put_str(b, E_RCPT, r->addr);
		rec_put_u64(b, E_R_STATE, (uint64_t)r->state);
		rec_put_u64(b, E_R_ATTEMPTS, r->attempts);
		rec_put_u64(b, E_R_LAST, r->last_try);
		rec_put_u64(b, E_R_NEXT, r->next_try);
		if (r->last_error)
			rec_put_str(b, E_R_ERROR, r->last_error);
		for (j = 0; j < r->ndone; j++)
			rec_put_str(b, E_R_DONE, r->done[j]);
		if (r->fwd_from)
			rec_put_str(b, E_R_FWD, r->fwd_from);
		if (r->notify)
			rec_put_u64(b, E_R_NOTIFY, r->notify);
		if (r->orcpt)
			rec_put_str(b, E_R_ORCPT, r->orcpt);
	}
	crc = crc32_update(0, b->data, b->len);
	c[0] = (unsigned char)(crc >> 24);
	c[1] = (unsigned char)(crc >> 16);
	c[2] = (unsigned char)(crc >> 8);
	c[3] = (unsigned char)crc;
	rec_put(b, E_END, c, sizeof(c));
}

static int
env_take_str(const struct rec *r, char **dst)
{
	char *s = rec_str(r, ENV_STR_MAX);

	if (s == NULL || *dst != NULL) {
		free(s);
		return -1;
	}
	*dst = s;
	return 0;
}

static int
env_take_u64(const struct rec *r, uint64_t *v, uint64_t max)
{
	return (rec_u64(r, v) == -1 || *v > max) ? -1 : 0;
}

/* Apply one recipient-scoped record to the latest recipient. */
static int
env_rcpt_rec(struct envelope *e, const struct rec *r)
{
	struct env_rcpt *rc;
	uint64_t v;
	char *s = NULL;

	if (e->nrcpts == 0)
		return -1;
	rc = &e->rcpts[e->nrcpts - 1];
	switch (r->tag) {
	case E_R_STATE:
		if (env_take_u64(r, &v, RS_FAILED) == -1)
			return -1;
		rc->state = (enum rcpt_state)v;
		return 0;
	case E_R_ATTEMPTS:
		if (env_take_u64(r, &v, UINT32_MAX) == -1)
			return -1;
		rc->attempts = (uint32_t)v;
		return 0;
	case E_R_LAST:
		return env_take_u64(r, &rc->last_try, UINT64_MAX);
	case E_R_NEXT:
		return env_take_u64(r, &rc->next_try, UINT64_MAX);
	case E_R_ERROR:
		return env_take_str(r, &rc->last_error);
	case E_R_FWD:
		return env_take_str(r, &rc->fwd_from);
	case E_R_ORCPT:
		return env_take_str(r, &rc->orcpt);
	case E_R_NOTIFY:
		if (env_take_u64(r, &v, 0xf) == -1)
			return -1;
		rc->notify = (unsigned)v;
		return 0;
	case E_R_DONE:
		if (env_take_str(r, &s) == -1)
			return -1;
		rc->done = xreallocarray(rc->done, rc->ndone + 1,
		    sizeof(*rc->done));
		rc->done[rc->ndone++] = s;
		return 0;
	}
	return -1;
}

static int
env_rec(struct envelope *e, const struct rec *r)
{
	uint64_t v;
	char *s = NULL;

	switch (r->tag) {
	case E_ID:
		if (env_take_str(r, &s) == -1)
			return -1;
		if (strlen(s) != QID_LEN) {
			free(s);
			return -1;
		}
		memcpy(e->id, s, QID_LEN + 1);
		free(s);
		return 0;
	case E_SENDER:
		return env_take_str(r, &e->sender);
	case E_HELO:
		return env_take_str(r, &e->helo);
	case E_CLIENT:
		return env_take_str(r, &e->client);
	case E_PROTO:
		return env_take_str(r, &e->proto);
	case E_ACCOUNT:
		return env_take_str(r, &e->account);
	case E_ENVID:
		return env_take_str(r, &e->envid);
	case E_RET:
		if (env_take_u64(r, &v, 2) == -1)
			return -1;
		e->ret = (int)v;
		return 0;
	case E_BODY8:
		if (env_take_u64(r, &v, 2) == -1)
			return -1;
		e->body8bit = (int)v;
		return 0;
	case E_UTF8:
		if (env_take_u64(r, &v, 1) == -1)
			return -1;
		e->smtputf8 = (int)v;
		return 0;
	case E_SIZE:
		return env_take_u64(r, &e->size, UINT64_MAX);
	case E_ARRIVAL:
		return env_take_u64(r, &e->arrival, UINT64_MAX);
	case E_FLAGS:
		return env_take_u64(r, &e->flags, 0xff);
	case E_RCPT:
		if (env_take_str(r, &s) == -1)
			return -1;
		envelope_add_rcpt(e, s);
		free(s);
		return 0;
	}
	return env_rcpt_rec(e, r);
}

static int
env_check_end(const unsigned char *p, size_t endoff, const struct rec *r)
{
	uint32_t want, got;

	if (r->len != 4)
		return -1;
	want = ((uint32_t)r->data[0] << 24) | ((uint32_t)r->data[1] << 16) |
	    ((uint32_t)r->data[2] << 8) | r->data[3];
	got = crc32_update(0, p, endoff);
	return want == got ? 0 : -1;
}

int
envelope_decode(const void *data, size_t len, struct envelope *e,
    const char **why)
{
	struct rec_reader rd;
	struct rec r;
	size_t before;
	int n;

	memset(e, 0, sizeof(*e));
	if (len < sizeof(env_magic) || memcmp(data, env_magic,
	    sizeof(env_magic)) != 0) {
		*why = "bad magic or version";
		return -1;
	}
	rec_reader_init(&rd, data, len);
	rd.off = sizeof(env_magic);
	for (;;) {
		before = rd.off;
		if ((n = rec_next(&rd, &r)) != 1) {
			*why = "truncated (no END record)";
			goto bad;
		}
		if (r.tag == E_END)
			break;
		if (env_rec(e, &r) == -1) {
			*why = "malformed record";
			goto bad;
		}
	}
	if (env_check_end(data, before, &r) == -1) {
		*why = "bad checksum";
		goto bad;
	}
	if (rd.off != len) {
		*why = "data after END record";
		goto bad;
	}
	if (e->id[0] == '\0' || e->sender == NULL || e->nrcpts == 0) {
		*why = "missing id, sender or recipients";
		goto bad;
	}
	return 0;
bad:
	envelope_free(e);
	return -1;
}

void
envelope_free(struct envelope *e)
{
	size_t i, j;

	for (i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].last_error);
		free(e->rcpts[i].fwd_from);
		free(e->rcpts[i].orcpt);
		for (j = 0; j < e->rcpts[i].ndone; j++)
			free(e->rcpts[i].done[j]);
		free(e->rcpts[i].done);
	}
	free(e->rcpts);
	free(e->sender);
	free(e->helo);
	free(e->client);
	free(e->proto);
	free(e->account);
	free(e->envid);
	memset(e, 0, sizeof(*e));
}

void
envelope_add_rcpt(struct envelope *e, const char *addr)
{
	struct env_rcpt *r;

	e->rcpts = xreallocarray(e->rcpts, e->nrcpts + 1, sizeof(*e->rcpts));
	r = &e->rcpts[e->nrcpts++];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->state = RS_PENDING;
}

int
envelope_rcpt_done(const struct env_rcpt *r, const char *target)
{
	size_t i;

	for (i = 0; i < r->ndone; i++)
		if (strcmp(r->done[i], target) == 0)
			return 1;
	return 0;
}

void
envelope_mark_done(struct env_rcpt *r, const char *target)
{
	if (envelope_rcpt_done(r, target))
		return;
	r->done = xreallocarray(r->done, r->ndone + 1, sizeof(*r->done));
	r->done[r->ndone++] = xstrdup(target);
}

void
envelope_set_error(struct env_rcpt *r, const char *text)
{
	char clean[512];

	/* text may be r->last_error itself: copy before freeing. */
	if (text != NULL)
		log_sanitize(clean, text, sizeof(clean));
	free(r->last_error);
	r->last_error = text ? xstrdup(clean) : NULL;
}

const char *
envelope_state_name(enum rcpt_state s)
{
	switch (s) {
	case RS_PENDING:
		return "pending";
	case RS_DONE:
		return "delivered";
	case RS_HELD:
		return "held";
	case RS_FAILED:
		return "failed";
	}
	return "?";
}
