/*
 * reply: the SMTP client's reply reader (see reply.h).  A peer's bytes
 * are untrusted: lines are bounded, every line's code is checked against
 * the reply's first, the number of lines is bounded, text is sanitised
 * before anyone stores or logs it.
 */
#include <string.h>

#include "lib/log.h"
#include "lib/util.h"
#include "queue/mta.h"
#include "queue/reply.h"

void
reply_init(struct reply *r)
{
	memset(r, 0, sizeof(*r));
}

static void
reply_text_add(struct reply *r, const char *line)
{
	size_t have = strlen(r->text);
	char clean[REPLY_TEXT];

	if (have + 2 >= sizeof(r->text))
		return;
	log_sanitize(clean, line, sizeof(clean));
	if (have)
		r->text[have++] = ' ';
	str_copy(r->text + have, clean, sizeof(r->text) - have);
}

/* One whole line (NUL-terminated at len): REPLY_MORE, _DONE or an error. */
static enum reply_status
reply_line(struct reply *r, const char *line, size_t len)
{
	long long size;
	int code, more, ext;

	if (mta_reply_line(line, len, &code, &more) == -1 ||
	    (r->lines > 0 && code != r->code) || ++r->lines > REPLY_LINES_MAX)
		return REPLY_EMALFORMED;
	if (r->lines == 1)
		r->code = code;
	else if (len > 4) {
		ext = mta_ehlo_keyword(line + 4, &size);
		r->ext |= ext;
		if (ext & MTA_EXT_SIZE)
			r->size = size;
	}
	if (r->lines <= 3)
		reply_text_add(r, line);
	return more ? REPLY_MORE : REPLY_DONE;
}

enum reply_status
reply_feed(struct reply *r, const char *p, size_t n, size_t *used)
{
	enum reply_status st;
	size_t i, len;

	*used = 0;
	if (r->err != REPLY_MORE)
		return r->err;
	if (r->done) {
		r->code = r->lines = r->ext = r->done = 0;
		r->size = 0;
		r->text[0] = '\0';
	}
	for (i = 0; i < n; i++) {
		if (p[i] != '\n') {
			/* Holding REPLY_LINE_MAX + 1 bytes, the line is too
			   long whatever follows (a CR is not an end). */
			if (r->len > REPLY_LINE_MAX) {
				*used = i + 1;
				return r->err = REPLY_ELONG;
			}
			r->line[r->len++] = p[i];
			continue;
		}
		len = r->len;
		if (len > 0 && r->line[len - 1] == '\r')
			len--;
		r->len = 0;
		r->line[len] = '\0';
		st = len > REPLY_LINE_MAX ? REPLY_ELONG :
		    reply_line(r, r->line, len);
		if (st == REPLY_MORE)
			continue;
		*used = i + 1;
		if (st == REPLY_DONE)
			r->done = 1;
		else
			r->err = st;
		return st;
	}
	*used = n;
	return REPLY_MORE;
}
