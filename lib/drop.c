/*
 * drop: encoder and hostile-input decoder of maildrop files.  Run by
 * ternctl: sendmail writes one when ternd cannot take a message, and the
 * pickup (ternctl again, as the file's owner, started by ternd's parent)
 * reads it.  The decoder accepts only what the encoder writes: each field
 * once (recipients once or more), in bounds, no unknown record.
 */
#include <stdlib.h>
#include <string.h>

#include "lib/drop.h"
#include "lib/rec.h"
#include "lib/util.h"

static const char drop_magic[8] = { 'T', 'E', 'R', 'N', 'D', 'R', 'P', 1 };

enum drop_tag {
	D_UID = 1, D_USER, D_PROGRAM, D_TIME, D_SENDER, D_RCPT, D_MSG,
	D_END = 0xff
};

void
drop_encode(const struct drop *d, struct buf *b)
{
	unsigned char c[4];
	uint32_t crc;
	size_t i;

	buf_append(b, drop_magic, sizeof(drop_magic));
	rec_put_u64(b, D_UID, d->uid);
	rec_put_str(b, D_USER, d->user);
	rec_put_str(b, D_PROGRAM, d->program ? d->program : "");
	rec_put_u64(b, D_TIME, d->time);
	rec_put_str(b, D_SENDER, d->sender);
	for (i = 0; i < d->nrcpts; i++)
		rec_put_str(b, D_RCPT, d->rcpts[i]);
	rec_put(b, D_MSG, d->msg ? d->msg : "", d->msglen);
	crc = crc32_update(0, b->data, b->len);
	c[0] = (unsigned char)(crc >> 24);
	c[1] = (unsigned char)(crc >> 16);
	c[2] = (unsigned char)(crc >> 8);
	c[3] = (unsigned char)crc;
	rec_put(b, D_END, c, sizeof(c));
}

/* A process name as ternctl sends it: letters, digits, ".", "_", "+", "-". */
int
drop_program_ok(const char *s, size_t n)
{
	size_t i;

	if (n > DROP_PROGRAM_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		    (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
		    s[i] == '_' || s[i] == '+' || s[i] == '-'))
			return 0;
	return 1;
}

/* What can go between <> on an SMTP line: no controls, no angle brackets. */
int
drop_addr_ok(const char *s, size_t n)
{
	size_t i;

	if (n > DROP_ADDR_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 32 || ch == 127 || ch == '<' || ch == '>')
			return 0;
	}
	return 1;
}

int
drop_name_ok(const char *s)
{
	size_t i;

	for (i = 0; i < DROP_NAME_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'A' && s[i] <= 'F')))
			return 0;
	return s[i] == '\0';
}

/* An account name: printable ASCII without spaces. */
static int
drop_user_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > DROP_USER_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 32 || (unsigned char)s[i] >= 127)
			return 0;
	return 1;
}

static int
drop_take_str(const struct rec *r, char **dst, int (*ok)(const char *,
    size_t))
{
	if (*dst != NULL || memchr(r->data, '\0', r->len) != NULL ||
	    !ok((const char *)r->data, r->len))
		return -1;
	*dst = xstrndup((const char *)r->data, r->len);
	return 0;
}

static int
drop_take_u64(const struct rec *r, uint64_t *v, int *seen)
{
	if (*seen || rec_u64(r, v) == -1)
		return -1;
	*seen = 1;
	return 0;
}

static int
drop_rcpt_ok(const char *s, size_t n)
{
	return n > 0 && drop_addr_ok(s, n);
}

static int
drop_take_rcpt(struct drop *d, const struct rec *r)
{
	char *a = NULL;

	if (d->nrcpts >= DROP_RCPTS_MAX || drop_take_str(r, &a,
	    drop_rcpt_ok) == -1)
		return -1;
	d->rcpts = xreallocarray(d->rcpts, d->nrcpts + 1, sizeof(*d->rcpts));
	d->rcpts[d->nrcpts++] = a;
	return 0;
}

/* The message: bounded, and every line ends in LF (the client relies on it). */
static int
drop_take_msg(struct drop *d, const struct rec *r)
{
	if (d->msg != NULL || r->len > DROP_MSG_MAX ||
	    (r->len > 0 && r->data[r->len - 1] != '\n'))
		return -1;
	d->msg = xmalloc(r->len + 1);
	memcpy(d->msg, r->data, r->len);
	d->msg[r->len] = '\0';
	d->msglen = r->len;
	return 0;
}

static int
drop_rec(struct drop *d, const struct rec *r, int *seen_uid, int *seen_time)
{
	switch (r->tag) {
	case D_UID:
		return drop_take_u64(r, &d->uid, seen_uid);
	case D_TIME:
		return drop_take_u64(r, &d->time, seen_time);
	case D_USER:
		return drop_take_str(r, &d->user, drop_user_ok);
	case D_PROGRAM:
		return drop_take_str(r, &d->program, drop_program_ok);
	case D_SENDER:
		return drop_take_str(r, &d->sender, drop_addr_ok);
	case D_RCPT:
		return drop_take_rcpt(d, r);
	case D_MSG:
		return drop_take_msg(d, r);
	default:
		return -1;
	}
}

static int
drop_check_end(const unsigned char *p, size_t endoff, const struct rec *r)
{
	uint32_t want;

	if (r->len != 4)
		return -1;
	want = ((uint32_t)r->data[0] << 24) | ((uint32_t)r->data[1] << 16) |
	    ((uint32_t)r->data[2] << 8) | r->data[3];
	return want == crc32_update(0, p, endoff) ? 0 : -1;
}

int
drop_decode(const void *data, size_t len, struct drop *d, const char **why)
{
	struct rec_reader rd;
	struct rec r;
	size_t before;
	int seen_uid = 0, seen_time = 0;

	memset(d, 0, sizeof(*d));
	if (len < sizeof(drop_magic) || memcmp(data, drop_magic,
	    sizeof(drop_magic)) != 0) {
		*why = "bad magic or version";
		return -1;
	}
	rec_reader_init(&rd, data, len);
	rd.off = sizeof(drop_magic);
	for (;;) {
		before = rd.off;
		if (rec_next(&rd, &r) != 1) {
			*why = "truncated (no END record)";
			goto bad;
		}
		if (r.tag == D_END)
			break;
		if (drop_rec(d, &r, &seen_uid, &seen_time) == -1) {
			*why = "malformed record";
			goto bad;
		}
	}
	if (drop_check_end(data, before, &r) == -1) {
		*why = "bad checksum";
		goto bad;
	}
	if (rd.off != len) {
		*why = "data after END record";
		goto bad;
	}
	if (!seen_uid || !seen_time || d->user == NULL || d->sender == NULL ||
	    d->nrcpts == 0 || d->msg == NULL) {
		*why = "missing user, sender, recipients or message";
		goto bad;
	}
	if (d->program == NULL)
		d->program = xstrdup("");
	return 0;
bad:
	drop_free(d);
	return -1;
}

void
drop_free(struct drop *d)
{
	size_t i;

	free(d->user);
	free(d->program);
	free(d->sender);
	for (i = 0; i < d->nrcpts; i++)
		free(d->rcpts[i]);
	free(d->rcpts);
	free(d->msg);
	memset(d, 0, sizeof(*d));
}
