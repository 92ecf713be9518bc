/*
 * forward: a system account's ~/.forward, read and carried out by a
 * delivery worker running as that account (never as root).  The file must
 * be a regular file of at most 64 KiB, owned by the account or root and
 * not group or world writable; it is opened without following a link and
 * checked on the open descriptor.  A file failing those checks, or one
 * that does not parse, is ignored (the mail goes to the own mailbox) and
 * the reason is reported.
 *
 * Its targets use the aliases syntax, separated by commas or newlines:
 * |command and /file are delivered here, as the account; "\user", "user"
 * and user@local-domain for the account itself mean its own mailbox, which
 * the parent then delivers per local-delivery; every other address goes
 * back to the parent and the queue as a new recipient.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/ipc.h"
#include "queue/mda.h"
#include "queue/resolve.h"
#include "lib/util.h"

struct fparse {
	const struct conf	*conf;
	const char		*self;
	const char		*domain;
	struct fwd_target	*t;
	size_t			 n;
	size_t			 naddr;
	char			*why;
	size_t			 whylen;
};

void
forward_free(struct fwd_target *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(t[i].value);
	free(t);
}

/* "name" or "name+ext" of the account itself. */
static int
forward_is_self(const char *local, const char *self)
{
	size_t n = strlen(self);

	return strncmp(local, self, n) == 0 &&
	    (local[n] == '\0' || local[n] == '+');
}

static int
forward_add(struct fparse *f, enum fwd_kind kind, const char *value)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (f->t[i].kind == kind && strcmp(f->t[i].value, value) == 0)
			return 0;	/* listed twice, done once */
	if (kind == FWD_ADDRESS) {
		if (strlen(value) > FORWARD_ADDR_MAX) {
			snprintf(f->why, f->whylen, "address too long");
			return -1;
		}
		if (++f->naddr > FORWARD_MAX) {
			snprintf(f->why, f->whylen, "more than %d addresses",
			    FORWARD_MAX);
			return -1;
		}
	}
	f->t = xreallocarray(f->t, f->n + 1, sizeof(*f->t));
	f->t[f->n].kind = kind;
	f->t[f->n].value = xstrdup(value);
	f->n++;
	return 0;
}

/* One target of the list, blanks trimmed. */
static int
forward_token(struct fparse *f, const char *s, size_t len)
{
	struct alias_target *t;
	char local[256], dom[256];
	const char *why;
	struct buf b;
	size_t n;
	int r = 0;

	if (len && *s == '\\') {	/* "\user": no further forwarding */
		s++;
		len--;
	}
	if (len == 0)
		return 0;
	if (aliases_parse_targets(s, len, &t, &n, &why) == -1) {
		snprintf(f->why, f->whylen, "%s", why);
		return -1;
	}
	switch (t[0].kind) {
	case ALIAS_PIPE:
		r = forward_add(f, FWD_PIPE, t[0].value);
		break;
	case ALIAS_FILE:
		r = forward_add(f, FWD_FILE, t[0].value);
		break;
	case ALIAS_INCLUDE:
		snprintf(f->why, f->whylen, ":include: is not allowed here");
		r = -1;
		break;
	case ALIAS_LOCAL:
		if (forward_is_self(t[0].value, f->self)) {
			r = forward_add(f, FWD_SELF, "");
			break;
		}
		buf_init(&b);
		buf_printf(&b, "%s@%s", t[0].value, f->domain);
		r = forward_add(f, FWD_ADDRESS, b.data);
		buf_free(&b);
		break;
	case ALIAS_ADDRESS:
		if (resolve_split(t[0].value, local, sizeof(local), dom,
		    sizeof(dom)) == 0 && conf_is_local_domain(f->conf, dom) &&
		    forward_is_self(local, f->self))
			r = forward_add(f, FWD_SELF, "");
		else
			r = forward_add(f, FWD_ADDRESS, t[0].value);
		break;
	}
	aliases_free_targets(t, n);
	return r;
}

/* Split a line at the commas outside quoted strings. */
static int
forward_line(struct fparse *f, const char *s, size_t len)
{
	size_t i, start = 0, a, b;
	int quoted = 0;

	for (i = 0; i <= len; i++) {
		if (i < len && quoted && s[i] == '\\' && i + 1 < len) {
			i++;
			continue;
		}
		if (i < len && s[i] == '"')
			quoted = !quoted;
		if (i < len && (quoted || s[i] != ','))
			continue;
		for (a = start; a < i && (s[a] == ' ' || s[a] == '\t'); a++)
			;
		for (b = i; b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' ||
		    s[b - 1] == '\r'); b--)
			;
		if (forward_token(f, s + a, b - a) == -1)
			return -1;
		start = i + 1;
	}
	if (quoted) {
		snprintf(f->why, f->whylen, "unterminated quoted string");
		return -1;
	}
	return 0;
}

int
forward_parse(const struct conf *c, const char *text, size_t len,
    const char *self, const char *domain, struct fwd_target **out,
    size_t *nout, char *why, size_t whylen)
{
	struct fparse f;
	const char *line = text, *end, *s;
	int lineno = 0;

	memset(&f, 0, sizeof(f));
	f.conf = c;
	f.self = self;
	f.domain = domain;
	f.why = why;
	f.whylen = whylen;
	*out = NULL;
	*nout = 0;
	if (memchr(text, '\0', len)) {
		snprintf(why, whylen, "NUL byte");
		return -1;
	}
	for (; line < text + len; line = end + 1) {
		if ((end = memchr(line, '\n', (size_t)(text + len - line))) == NULL)
			end = text + len;
		lineno++;
		for (s = line; s < end && (*s == ' ' || *s == '\t'); s++)
			;
		if (s == end || *s == '#')
			continue;
		if (forward_line(&f, s, (size_t)(end - s)) == -1) {
			char tmp[256];

			str_copy(tmp, why, sizeof(tmp));
			snprintf(why, whylen, "line %d: %s", lineno, tmp);
			forward_free(f.t, f.n);
			return -1;
		}
	}
	*out = f.t;
	*nout = f.n;
	return 0;
}

const char *
forward_unsafe(const struct stat *st, uid_t uid)
{
	if (S_ISLNK(st->st_mode))
		return "a symbolic link";
	if (!S_ISREG(st->st_mode))
		return "not a regular file";
	if (st->st_uid != uid && st->st_uid != 0)
		return "owned by another user";
	if (st->st_mode & (S_IWGRP | S_IWOTH))
		return "group or world writable";
	if (st->st_size > FORWARD_MAX_FILE)
		return "larger than 64 KiB";
	return NULL;
}

int
forward_query_parse(const void *data, size_t len, uint64_t *id,
    char *user, size_t userlen)
{
	struct rec_reader rd;
	struct rec r;
	const unsigned char *u;
	char *name = NULL;
	int n, bad = 0;

	*id = 0;
	if (userlen > 0)
		user[0] = '\0';
	rec_reader_init(&rd, data, len);
	while ((n = rec_next(&rd, &r)) == 1)
		if (r.tag == T_JOB && rec_u64(&r, id) == -1)
			bad = 1;
		else if (r.tag == T_USER && (name != NULL ||
		    (name = rec_str(&r, 64)) == NULL))
			bad = 1;
	/* An account's name: printable, no '/', not empty. */
	for (u = (const unsigned char *)name; u && *u && !bad; u++)
		if (*u <= ' ' || *u == 0x7f || *u == '/' || *u >= 0x80)
			bad = 1;
	if (n == -1 || bad || name == NULL || name[0] == '\0' ||
	    str_copy(user, name, userlen) >= userlen) {
		free(name);
		if (userlen > 0)
			user[0] = '\0';
		return -1;
	}
	free(name);
	return 0;
}

/*
 * Read ~/.forward.  1 read, 0 none (or ignored: note says why), -1 a
 * temporary failure (err set).
 */
static int
forward_read(const char *home, struct buf *text, char *note, size_t notelen,
    char *err, size_t errlen)
{
	char path[4096], tmp[8192];
	const char *why = NULL;
	struct stat st;
	ssize_t n;
	int fd;

	if (snprintf(path, sizeof(path), "%s/.forward", home) >=
	    (int)sizeof(path))
		return 0;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		if (errno == ELOOP || errno == EACCES) {
			snprintf(note, notelen, "~/.forward ignored: %s",
			    errno == ELOOP ? "a symbolic link" : strerror(errno));
			return 0;
		}
		snprintf(err, errlen, "cannot open %s: %s", path,
		    strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1)
		why = strerror(errno);
	else
		why = forward_unsafe(&st, getuid());
	while (why == NULL && (n = read(fd, tmp, sizeof(tmp))) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			snprintf(err, errlen, "read %s: %s", path,
			    strerror(errno));
			close(fd);
			return -1;
		}
		if (text->len + (size_t)n > FORWARD_MAX_FILE)
			why = "larger than 64 KiB";
		else
			buf_append(text, tmp, (size_t)n);
	}
	close(fd);
	if (why) {
		snprintf(note, notelen, "~/.forward ignored: %s", why);
		return 0;
	}
	return 1;
}

static void
forward_summary(char *err, size_t errlen, const char *note, int self,
    size_t npipe, size_t nfile, size_t naddr)
{
	if (note[0]) {
		snprintf(err, errlen, "%s", note);
		return;
	}
	if (npipe + nfile + naddr == 0) {
		err[0] = '\0';
		return;
	}
	snprintf(err, errlen, "~/.forward: %s%zu command%s, %zu file%s, %zu "
	    "address%s forwarded", self ? "own mailbox, " : "", npipe,
	    npipe == 1 ? "" : "s", nfile, nfile == 1 ? "" : "s", naddr,
	    naddr == 1 ? "" : "es");
}

int
forward_deliver(const struct mda_job *j, const struct conf *c, int *self,
    struct buf *fwd, char *err, size_t errlen)
{
	char note[600] = "", why[512], local[256], domain[256], res[1024];
	struct fwd_target *t = NULL;
	size_t n = 0, i, npipe = 0, nfile = 0, naddr = 0;
	struct buf text;
	int r, code = MDA_OK;

	*self = 1;
	err[0] = '\0';
	if (resolve_split(j->rcpt, local, sizeof(local), domain,
	    sizeof(domain)) == -1)
		str_copy(domain, "localhost", sizeof(domain));
	buf_init(&text);
	buf_append(&text, "", 0);
	if ((r = forward_read(j->home, &text, note, sizeof(note), err,
	    errlen)) <= 0) {
		buf_free(&text);
		if (r == 0)
			forward_summary(err, errlen, note, 1, 0, 0, 0);
		return r == 0 ? MDA_OK : MDA_TEMP;
	}
	if (forward_parse(c, text.data, text.len, j->user, domain, &t, &n, why,
	    sizeof(why)) == -1)
		snprintf(note, sizeof(note), "~/.forward ignored: %s", why);
	buf_free(&text);
	if (n > 0)
		*self = 0;
	for (i = 0; i < n && code == MDA_OK; i++) {
		switch (t[i].kind) {
		case FWD_SELF:
			*self = 1;
			break;
		case FWD_PIPE:
			npipe++;
			code = mda_pipe(j, t[i].value, res, sizeof(res));
			break;
		case FWD_FILE:
			nfile++;
			code = mda_file(j, t[i].value, res, sizeof(res));
			break;
		case FWD_ADDRESS:
			naddr++;
			rec_put_str(fwd, T_FORWARD, t[i].value);
			break;
		}
	}
	forward_free(t, n);
	if (code != MDA_OK) {
		snprintf(err, errlen, "~/.forward: %s", res);
		return code;
	}
	forward_summary(err, errlen, note, *self, npipe, nfile, naddr);
	return MDA_OK;
}
