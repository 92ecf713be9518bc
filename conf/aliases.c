/*
 * aliases: the sendmail-format aliases file and its Berkeley DB map.
 * newaliases (ternctl, run by the admin) parses the source and writes
 * "<src>.db" under a temporary name, fsyncs it and renames it into place,
 * so it is the map's only writer.  The delivery side of ternd opens the map
 * read-only, notices a replaced file on the next lookup and reopens it.
 * Values are typed records decoded with every length checked, since a
 * damaged map must not turn into a wrong delivery.
 */
#include <sys/stat.h>

#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "lib/util.h"

#define ALIASES_MAX_FILE	(16 * 1024 * 1024)
#define ALIASES_MAX_LINE	(64 * 1024)
#define ALIASES_MAX_NAME	64

struct aliases {
	char		*path;		/* the map: source + ".db" */
	DB		*db;		/* NULL until the map exists */
	struct stat	 st;		/* of the file db was opened from */
};

/* Per-parse state of aliases_parse. */
struct aparser {
	const char		*file;
	char			*err;
	size_t			 errlen;
	struct alias_entry	*v;
	size_t			 n;
	size_t			*slots;		/* name hash: index + 1 */
	size_t			 nslots;
	struct buf		 cur;		/* entry being collected */
	int			 curline;	/* 0: no entry open */
};

static int	 aliases_error(struct aparser *, int, const char *, ...)
		    __attribute__((format(printf, 3, 4)));

static int
aliases_error(struct aparser *p, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->errlen)
		snprintf(p->err, p->errlen, "%s:%d: %s", p->file, line, msg);
	return -1;
}

static int
aliases_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int
aliases_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

/* ---- targets ------------------------------------------------------------ */

static int
aliases_local_ok(const char *s)
{
	if (*s == '\0' || *s == '-')	/* never looks like an option */
		return 0;
	for (; *s; s++)
		if (!aliases_alnum(*s) && strchr("._+=-", *s) == NULL)
			return 0;
	return 1;
}

static int
aliases_domain_ok(const char *d)
{
	size_t label = 0, total = strlen(d);

	if (total == 0 || total > 253)
		return 0;
	for (const char *s = d;; s++) {
		if (*s == '.' || *s == '\0') {
			if (label == 0 || s[-1] == '-')
				return 0;
			if (*s == '\0')
				return 1;
			label = 0;
		} else if (++label > 63 || (*s == '-' && label == 1) ||
		    (!aliases_alnum(*s) && *s != '-'))
			return 0;
	}
}

static int
aliases_address_ok(const char *a)
{
	const char *at = strrchr(a, '@');
	size_t llen = (size_t)(at - a);

	if (llen == 0 || llen > 64 || a[0] == '.' || at[-1] == '.')
		return 0;
	for (const char *s = a; s < at; s++)
		if ((!aliases_alnum(*s) &&
		    strchr("!#$%&'*+-/=?^_`{|}~.", *s) == NULL) ||
		    (*s == '.' && s[1] == '.'))
			return 0;
	return aliases_domain_ok(at + 1);
}

static const char *
aliases_skip_blanks(const char *s)
{
	while (aliases_blank(*s))
		s++;
	return s;
}

/* Decides the kind of one unquoted target text; NULL or why not. */
static const char *
aliases_classify(char *v, struct alias_target *t)
{
	const char *rest;

	if (v[0] == '|') {
		rest = aliases_skip_blanks(v + 1);
		if (*rest == '\0')
			return "empty command";
		t->kind = ALIAS_PIPE;
		t->value = xstrdup(rest);
	} else if (v[0] == '/') {
		t->kind = ALIAS_FILE;
		t->value = xstrdup(v);
	} else if (strncasecmp(v, ":include:", 9) == 0) {
		rest = aliases_skip_blanks(v + 9);
		if (*rest != '/')
			return ":include: path must be absolute";
		t->kind = ALIAS_INCLUDE;
		t->value = xstrdup(rest);
	} else if (strchr(v, '@') != NULL) {
		if (!aliases_address_ok(v))
			return "invalid address";
		t->kind = ALIAS_ADDRESS;
		t->value = xstrdup(v);
	} else {
		if (!aliases_local_ok(v))
			return "invalid local name";
		t->kind = ALIAS_LOCAL;
		t->value = xstrdup(v);
		str_lower(t->value);
	}
	return NULL;
}

/* Reads a quoted target after its opening quote; *pos ends past it. */
static const char *
aliases_quoted(const char *s, size_t len, size_t *pos, struct buf *b)
{
	size_t i = *pos;

	for (;; i++) {
		if (i >= len)
			return "unterminated quoted string";
		if (s[i] == '"')
			break;
		if (s[i] == '\\' && i + 1 < len &&
		    (s[i + 1] == '"' || s[i + 1] == '\\'))
			i++;
		buf_putc(b, s[i]);
	}
	for (i++; i < len && aliases_blank(s[i]); i++)
		;
	if (i < len && s[i] != ',')
		return "text after a quoted string";
	*pos = i;
	return NULL;
}

/* One target starting at *pos (blanks skipped); stops at ',' or end. */
static const char *
aliases_one_target(const char *s, size_t len, size_t *pos, struct buf *b)
{
	size_t i = *pos, end;

	buf_reset(b);
	buf_append(b, "", 0);
	if (i < len && s[i] == '"') {
		*pos = i + 1;
		return aliases_quoted(s, len, pos, b);
	}
	while (i < len && s[i] != ',') {
		if (s[i] == '"')
			return "quote inside an unquoted target";
		i++;
	}
	for (end = i; end > *pos && aliases_blank(s[end - 1]); end--)
		;
	buf_append(b, s + *pos, end - *pos);
	*pos = i;
	return NULL;
}

static int
aliases_has_controls(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

static const char *
aliases_targets(const char *s, size_t len, struct alias_target **out,
    size_t *nout, struct buf *b)
{
	size_t pos = 0;
	const char *why;
	struct alias_target t;

	if (aliases_has_controls(s, len))
		return "control character in target list";
	for (;;) {
		while (pos < len && aliases_blank(s[pos]))
			pos++;
		if (pos == len && *nout == 0)
			return "no targets";
		if ((why = aliases_one_target(s, len, &pos, b)) != NULL)
			return why;
		if (b->len == 0)
			return "empty target";
		if ((why = aliases_classify(b->data, &t)) != NULL)
			return why;
		*out = xreallocarray(*out, *nout + 1, sizeof(**out));
		(*out)[(*nout)++] = t;
		if (pos == len)
			return NULL;
		pos++;		/* the comma */
	}
}

int
aliases_parse_targets(const char *s, size_t len, struct alias_target **out,
    size_t *nout, const char **why)
{
	struct buf b;
	const char *w;

	*out = NULL;
	*nout = 0;
	buf_init(&b);
	w = aliases_targets(s, len, out, nout, &b);
	buf_free(&b);
	if (w != NULL) {
		aliases_free_targets(*out, *nout);
		*out = NULL;
		*nout = 0;
		if (why)
			*why = w;
		return -1;
	}
	return 0;
}

void
aliases_free_targets(struct alias_target *t, size_t n)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free(t[i].value);
	free(t);
}

void
aliases_free_entries(struct alias_entry *e, size_t n)
{
	if (e == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(e[i].name);
		aliases_free_targets(e[i].targets, e[i].ntargets);
	}
	free(e);
}

/* ---- entries ------------------------------------------------------------ */

static size_t
aliases_hash(const char *s)
{
	size_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* Finds name in the table; returns its slot (empty or holding it). */
static size_t
aliases_slot(const struct aparser *p, const char *name)
{
	size_t i = aliases_hash(name) & (p->nslots - 1);

	while (p->slots[i] != 0 &&
	    strcmp(p->v[p->slots[i] - 1].name, name) != 0)
		i = (i + 1) & (p->nslots - 1);
	return i;
}

static void
aliases_grow_table(struct aparser *p)
{
	size_t old = p->nslots, *olds = p->slots;

	if (p->nslots != 0 && p->n * 2 < p->nslots)
		return;
	p->nslots = old ? old * 2 : 64;
	p->slots = xcalloc(p->nslots, sizeof(*p->slots));
	for (size_t i = 0; i < old; i++)
		if (olds[i] != 0)
			p->slots[aliases_slot(p, p->v[olds[i] - 1].name)] =
			    olds[i];
	free(olds);
}

static int
aliases_name_ok(const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c <= 0x20 || c >= 0x7f || strchr("\",\\", c) != NULL)
			return 0;
	}
	return 1;
}

/* Splits "name: targets" into *name (lower-cased) and the target text. */
static int
aliases_split(struct aparser *p, char **name, const char **rest)
{
	const char *s = p->cur.data, *colon = strchr(s, ':');
	const char *end;

	if (colon == NULL)
		return aliases_error(p, p->curline, "missing \":\" after the "
		    "alias name");
	for (end = colon; end > s && aliases_blank(end[-1]); end--)
		;
	if (end == s)
		return aliases_error(p, p->curline, "empty alias name");
	if (end - s > ALIASES_MAX_NAME)
		return aliases_error(p, p->curline, "alias name longer than "
		    "%d characters", ALIASES_MAX_NAME);
	*name = xstrndup(s, (size_t)(end - s));
	if (!aliases_name_ok(*name)) {
		aliases_error(p, p->curline, "invalid alias name \"%s\"",
		    *name);
		free(*name);
		return -1;
	}
	str_lower(*name);
	*rest = colon + 1;
	return 0;
}

static int
aliases_add(struct aparser *p, char *name, struct alias_target *t, size_t n)
{
	size_t slot;

	aliases_grow_table(p);
	slot = aliases_slot(p, name);
	if (p->slots[slot] != 0) {
		aliases_error(p, p->curline, "duplicate alias \"%s\" (first at "
		    "line %d)", name, p->v[p->slots[slot] - 1].line);
		free(name);
		aliases_free_targets(t, n);
		return -1;
	}
	p->v = xreallocarray(p->v, p->n + 1, sizeof(*p->v));
	p->v[p->n].name = name;
	p->v[p->n].targets = t;
	p->v[p->n].ntargets = n;
	p->v[p->n].line = p->curline;
	p->slots[slot] = ++p->n;
	return 0;
}

/* Parses the collected entry, if any. */
static int
aliases_flush(struct aparser *p)
{
	struct alias_target *t;
	const char *rest = NULL, *why = NULL;
	char *name = NULL;
	size_t n;
	int line = p->curline;

	if (line == 0)
		return 0;
	if (aliases_split(p, &name, &rest) == -1)
		return -1;
	if (aliases_parse_targets(rest, strlen(rest), &t, &n, &why) == -1) {
		aliases_error(p, line, "%s: %s", name, why);
		free(name);
		return -1;
	}
	if (aliases_add(p, name, t, n) == -1)
		return -1;
	p->curline = 0;
	return 0;
}

static int
aliases_line(struct aparser *p, const char *s, size_t len, int line)
{
	size_t i = 0;

	while (i < len && aliases_blank(s[i]))
		i++;
	if (i == len)
		return aliases_flush(p);	/* a blank line ends an entry */
	if (s[i] == '#')
		return 0;
	if (i == 0) {
		if (aliases_flush(p) == -1)
			return -1;
		buf_reset(&p->cur);
		p->curline = line;
	} else if (p->curline == 0)
		return aliases_error(p, line, "continuation line without an "
		    "alias");
	else
		buf_putc(&p->cur, ' ');
	buf_append(&p->cur, s + i, len - i);
	return 0;
}

static int
aliases_lines(struct aparser *p, const char *text, size_t len)
{
	size_t pos = 0, end, llen;
	const char *nl;
	int line = 0;

	while (pos < len) {
		line++;
		nl = memchr(text + pos, '\n', len - pos);
		end = nl ? (size_t)(nl - text) : len;
		llen = end - pos;
		if (llen > ALIASES_MAX_LINE)
			return aliases_error(p, line, "line longer than %d "
			    "bytes", ALIASES_MAX_LINE);
		if (memchr(text + pos, '\0', llen) != NULL)
			return aliases_error(p, line, "NUL byte in file");
		if (llen > 0 && text[end - 1] == '\r')
			llen--;
		if (aliases_line(p, text + pos, llen, line) == -1)
			return -1;
		pos = end + 1;
	}
	return aliases_flush(p);
}

int
aliases_parse(const char *name, const char *text, size_t len,
    struct alias_entry **out, size_t *nout, char *err, size_t errlen)
{
	struct aparser p;
	int r;

	memset(&p, 0, sizeof(p));
	p.file = name ? name : "aliases";
	p.err = err;
	p.errlen = errlen;
	if (errlen)
		err[0] = '\0';
	buf_init(&p.cur);
	r = aliases_lines(&p, text, len);
	buf_free(&p.cur);
	free(p.slots);
	if (r == -1) {
		aliases_free_entries(p.v, p.n);
		*out = NULL;
		*nout = 0;
		return -1;
	}
	*out = p.v;
	*nout = p.n;
	return 0;
}

/* ---- the map: encoding ---------------------------------------------------- */

/* Records: one kind byte, the value, a NUL; repeated. */
static void
aliases_encode(const struct alias_entry *e, struct buf *b)
{
	buf_reset(b);
	for (size_t i = 0; i < e->ntargets; i++) {
		buf_putc(b, (int)e->targets[i].kind);
		buf_append(b, e->targets[i].value,
		    strlen(e->targets[i].value) + 1);
	}
}

/* Counts the records of a value, or -1 if any is malformed. */
static int
aliases_count_records(const unsigned char *p, size_t len, size_t *n)
{
	size_t pos = 0;
	const unsigned char *nul;

	*n = 0;
	while (pos < len) {
		if (p[pos] > ALIAS_INCLUDE || len - pos < 3)
			return -1;
		nul = memchr(p + pos + 1, '\0', len - pos - 1);
		if (nul == NULL || nul == p + pos + 1)
			return -1;
		pos = (size_t)(nul - p) + 1;
		(*n)++;
	}
	return *n == 0 ? -1 : 0;
}

static int
aliases_decode(const unsigned char *p, size_t len, struct alias_target **out,
    size_t *nout)
{
	struct alias_target *t;
	size_t n, pos = 0;

	if (aliases_count_records(p, len, &n) == -1)
		return -1;
	t = xcalloc(n, sizeof(*t));
	for (size_t i = 0; i < n; i++) {
		t[i].kind = (enum alias_kind)p[pos];
		t[i].value = xstrdup((const char *)p + pos + 1);
		pos += strlen(t[i].value) + 2;
	}
	*out = t;
	*nout = n;
	return 0;
}

/* ---- the map: newaliases ------------------------------------------------ */

static int
aliases_put_all(DB *db, const struct alias_entry *e, size_t n)
{
	struct buf val;
	DBT key, data;
	int ret = 0;

	buf_init(&val);
	for (size_t i = 0; i < n && ret == 0; i++) {
		aliases_encode(&e[i], &val);
		memset(&key, 0, sizeof(key));
		memset(&data, 0, sizeof(data));
		key.data = e[i].name;
		key.size = (u_int32_t)strlen(e[i].name);
		data.data = val.data;
		data.size = (u_int32_t)val.len;
		ret = db->put(db, NULL, &key, &data, DB_NOOVERWRITE);
	}
	buf_free(&val);
	return ret;
}

static int
aliases_fsync_path(const char *path, int flags)
{
	int fd, r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | flags)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int
aliases_write_db(const char *tmp, const struct alias_entry *e, size_t n,
    char *err, size_t errlen)
{
	DB *db;
	int ret, cret;

	if ((ret = db_create(&db, NULL, 0)) != 0) {
		snprintf(err, errlen, "%s: %s", tmp, db_strerror(ret));
		return -1;
	}
	ret = db->open(db, NULL, tmp, NULL, DB_HASH, DB_CREATE | DB_EXCL,
	    0644);
	if (ret == 0)
		ret = aliases_put_all(db, e, n);
	cret = db->close(db, 0);
	if (ret == 0)
		ret = cret;
	if (ret != 0) {
		snprintf(err, errlen, "%s: %s", tmp, db_strerror(ret));
		return -1;
	}
	/* the umask must not decide who may read the map */
	if (chmod(tmp, 0644) == -1 || aliases_fsync_path(tmp, 0) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	return 0;
}

static char *
aliases_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

/* Writes the entries to src.db by temporary file, fsync and rename. */
static int
aliases_install(const char *src, const struct alias_entry *e, size_t n,
    char *err, size_t errlen)
{
	struct buf tmp, dst;
	char *dir;
	int r = -1;

	buf_init(&tmp);
	buf_init(&dst);
	buf_printf(&tmp, "%s.db.tmp.%ld", src, (long)getpid());
	buf_printf(&dst, "%s.db", src);
	dir = aliases_dirname(src);
	(void)unlink(tmp.data);
	if (aliases_write_db(tmp.data, e, n, err, errlen) == -1)
		goto out;
	if (rename(tmp.data, dst.data) == -1) {
		snprintf(err, errlen, "%s: %s", dst.data, strerror(errno));
		goto out;
	}
	if (aliases_fsync_path(dir, O_DIRECTORY) == -1) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (r == -1)
		(void)unlink(tmp.data);
	free(dir);
	buf_free(&tmp);
	buf_free(&dst);
	return r;
}

int
aliases_compile(const char *src, char *err, size_t errlen, size_t *count)
{
	struct alias_entry *e = NULL;
	struct buf text;
	size_t n = 0;
	int r = -1;

	buf_init(&text);
	if (file_read_all(src, ALIASES_MAX_FILE, &text) == -1) {
		if (errno == EFBIG)
			snprintf(err, errlen, "%s: larger than the 16 MiB "
			    "limit", src);
		else
			snprintf(err, errlen, "%s: %s", src, strerror(errno));
		goto out;
	}
	if (aliases_parse(src, text.data, text.len, &e, &n, err,
	    errlen) == -1)
		goto out;
	if (aliases_install(src, e, n, err, errlen) == -1)
		goto out;
	if (count)
		*count = n;
	r = 0;
out:
	aliases_free_entries(e, n);
	buf_free(&text);
	return r;
}

/* ---- the map: lookups ------------------------------------------------------ */

static void
aliases_drop(struct aliases *a)
{
	if (a->db != NULL)
		a->db->close(a->db, 0);
	a->db = NULL;
}

/* Opens the map; 0 ok, 1 it does not exist (yet), -1 error. */
static int
aliases_reopen(struct aliases *a)
{
	DB *db;
	int ret, fd;

	aliases_drop(a);
	if (db_create(&db, NULL, 0) != 0)
		return -1;
	ret = db->open(db, NULL, a->path, NULL, DB_HASH, DB_RDONLY, 0);
	if (ret == 0 && (db->fd(db, &fd) != 0 || fstat(fd, &a->st) == -1))
		ret = EIO;
	if (ret != 0) {
		db->close(db, 0);
		return ret == ENOENT ? 1 : -1;
	}
	a->db = db;
	return 0;
}

struct aliases *
aliases_open(const char *src)
{
	struct aliases *a = xcalloc(1, sizeof(*a));
	struct buf b;

	buf_init(&b);
	buf_printf(&b, "%s.db", src);
	a->path = buf_steal(&b);
	(void)aliases_reopen(a);	/* a missing map is fine until used */
	return a;
}

void
aliases_close(struct aliases *a)
{
	if (a == NULL)
		return;
	aliases_drop(a);
	free(a->path);
	free(a);
}

static int
aliases_changed(const struct stat *a, const struct stat *b)
{
	return a->st_dev != b->st_dev || a->st_ino != b->st_ino ||
	    a->st_size != b->st_size ||
	    a->st_mtim.tv_sec != b->st_mtim.tv_sec ||
	    a->st_mtim.tv_nsec != b->st_mtim.tv_nsec;
}

/* Makes a->db the current map; 0 ok, 1 no map, -1 error. */
static int
aliases_refresh(struct aliases *a)
{
	struct stat st;

	if (stat(a->path, &st) == -1) {
		aliases_drop(a);
		return errno == ENOENT ? 1 : -1;
	}
	if (a->db != NULL && !aliases_changed(&st, &a->st))
		return 0;
	return aliases_reopen(a);
}

int
aliases_lookup(struct aliases *a, const char *name,
    struct alias_target **out, size_t *nout)
{
	char key[ALIASES_MAX_NAME + 1];
	DBT k, d;
	int r;

	*out = NULL;
	*nout = 0;
	if (str_copy(key, name, sizeof(key)) >= sizeof(key) || key[0] == '\0')
		return 0;	/* no such name can be in the map */
	str_lower(key);
	if ((r = aliases_refresh(a)) != 0)
		return r == 1 ? 0 : -1;
	memset(&k, 0, sizeof(k));
	memset(&d, 0, sizeof(d));
	k.data = key;
	k.size = (u_int32_t)strlen(key);
	r = a->db->get(a->db, NULL, &k, &d, 0);
	if (r == DB_NOTFOUND)
		return 0;
	if (r != 0)
		return -1;
	return aliases_decode(d.data, d.size, out, nout) == -1 ? -1 : 1;
}
