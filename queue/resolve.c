/*
 * resolve: local recipient lookup and alias expansion, shared by the smtp
 * process (existence at RCPT) and the queue process (targets at delivery).
 * Addresses are data: they select map entries, never become paths or
 * commands themselves; commands and paths come only from the aliases file,
 * the :include: files it names, or the config.  The parent runs the same
 * expansion again to check every delivery request the queue sends it.
 *
 * A |command or /file runs as the owner of the file that names it (the
 * aliases source, or the :include: file), and as "nobody" when that owner
 * is root: nothing an alias names ever runs as root.
 */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/addr.h"
#include "lib/ipc.h"
#include "queue/resolve.h"
#include "lib/util.h"

#define RESOLVE_DEPTH	10
#define RESOLVE_MAX	1000	/* targets one recipient may expand to */
#define RESOLVE_INCLUDE_MAX	(1024 * 1024)	/* bytes of one :include: */

/* The account a command or file runs as. */
struct runas {
	char	name[64];
	uid_t	uid;
	gid_t	gid;
};

struct expand {
	const struct conf	*conf;
	struct aliases		*aliases;
	struct target		*t;
	size_t			 n;
	char			**seen;
	size_t			 nseen;
	char			*err;
	size_t			 errlen;
	int			 temp;
	int			 have_owner;	/* aliases_owner is known */
	struct runas		 aliases_owner;
};

/*
 * The mailbox's name, not its spelling: "bob"@x and bob@x are one local
 * part (lib/addr.c removes quotes); a name that needs quotes ("john doe")
 * matches no account, alias or virtual user, so it is refused at RCPT.
 */
int
resolve_split(const char *addr, char *local, size_t llen, char *domain,
    size_t dlen)
{
	struct addr a;

	if (addr_parse(addr, ADDR_F_UTF8, &a, NULL) != 0)
		return -1;
	if (str_copy(local, a.local, llen) >= llen ||
	    str_copy(domain, a.domain, dlen) >= dlen)
		return -1;
	str_lower(local);
	return 0;
}

/* "user+tag" -> "user"; returns 0 when there is no extension. */
const char *resolve_self;

const char *
resolve_vaccount(const struct conf *c)
{
	return resolve_self ? resolve_self : conf_str(c, K_VIRTUAL_USER);
}

static int
resolve_base(const char *local, char *base, size_t len)
{
	const char *plus = strchr(local, '+');
	size_t n;

	if (plus == NULL || plus == local)
		return 0;
	n = (size_t)(plus - local);
	if (n >= len)
		return 0;
	memcpy(base, local, n);
	base[n] = '\0';
	return 1;
}

/* A system account that can receive: exists and has a home directory. */
static struct passwd *
resolve_account(const char *name)
{
	struct passwd *pw;
	struct stat st;

	if (*name == '\0' || strchr(name, '"') || strchr(name, '/'))
		return NULL;
	if ((pw = getpwnam(name)) == NULL)
		return NULL;
	if (pw->pw_dir == NULL || stat(pw->pw_dir, &st) == -1 ||
	    !S_ISDIR(st.st_mode))
		return NULL;
	return pw;
}

static const struct vuser *
resolve_vuser(const struct conf *c, const char *local, const char *domain)
{
	char addr[512], base[256];
	const struct vuser *v;

	snprintf(addr, sizeof(addr), "%s@%s", local, domain);
	if ((v = conf_find_vuser(c, addr)) != NULL)
		return v;
	if (resolve_base(local, base, sizeof(base))) {
		snprintf(addr, sizeof(addr), "%s@%s", base, domain);
		return conf_find_vuser(c, addr);
	}
	return NULL;
}

/* ---- virtual accounts of the credential store ------------------------ */

#define RESOLVE_ACCOUNTS_MAX	100000

static struct {
	char	**names;	/* sorted */
	size_t	  n;
	char	**next;		/* chunks of the set to come */
	size_t	  nnext, capnext;
} raccts;

static int
resolve_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
resolve_names_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
resolve_accounts_set(char **names, size_t n)
{
	resolve_names_free(raccts.names, raccts.n);
	if (n > 1)
		qsort(names, n, sizeof(*names), resolve_name_cmp);
	raccts.names = names;
	raccts.n = n;
}

size_t
resolve_accounts_count(void)
{
	return raccts.n;
}

int
resolve_accounts_msg(const void *data, size_t len)
{
	struct rec_reader rd;
	struct rec r;
	uint64_t fl;
	char *s;
	int more = 0, k;

	rec_reader_init(&rd, data, len);
	while ((k = rec_next(&rd, &r)) == 1) {
		if (r.tag == T_FLAGS && rec_u64(&r, &fl) == 0 &&
		    (fl & IPC_F_MORE))
			more = 1;
		if (r.tag != T_ACCOUNT)
			continue;
		s = NULL;
		if (raccts.nnext >= RESOLVE_ACCOUNTS_MAX ||
		    (s = rec_str(&r, 320)) == NULL || strchr(s, '@') == NULL) {
			free(s);
			k = -1;
			break;
		}
		if (raccts.nnext == raccts.capnext) {	/* doubling: linear */
			raccts.capnext = raccts.capnext ? raccts.capnext * 2 :
			    64;
			raccts.next = xreallocarray(raccts.next, raccts.capnext,
			    sizeof(*raccts.next));
		}
		raccts.next[raccts.nnext++] = s;
	}
	if (k == -1) {
		resolve_names_free(raccts.next, raccts.nnext);
		raccts.next = NULL;
		raccts.nnext = raccts.capnext = 0;
		return -1;
	}
	if (more)
		return 0;
	resolve_accounts_set(raccts.next, raccts.nnext);
	raccts.next = NULL;
	raccts.nnext = raccts.capnext = 0;
	return 1;
}

/*
 * A virtual account of the store: its Maildir from the pattern, in md.
 * The names were checked when the store was read (letters, digits,
 * "._-", no leading dot); a "/" or a leading dot is refused here anyway.
 */
static int
resolve_store_one(const struct conf *c, const char *local,
    const char *domain, struct buf *md)
{
	char addr[600], *key = addr;
	const char *pat = conf_str(c, K_VIRTUAL_MAILDIR);

	if (raccts.n == 0 || pat == NULL || strchr(local, '/') ||
	    strchr(domain, '/') || local[0] == '.' || domain[0] == '.')
		return 0;
	snprintf(addr, sizeof(addr), "%s@%s", local, domain);
	if (bsearch(&key, raccts.names, raccts.n, sizeof(*raccts.names),
	    resolve_name_cmp) == NULL)
		return 0;
	for (; *pat; pat++) {
		if (*pat != '%')
			buf_putc(md, *pat);
		else if (pat[1] == 'u' || pat[1] == 'd' || pat[1] == '%') {
			pat++;
			if (*pat == 'u')
				buf_puts(md, local);
			else if (*pat == 'd')
				buf_puts(md, domain);
			else
				buf_putc(md, '%');
		} else
			return 0;	/* the parser refuses it */
	}
	return 1;
}

/* The account, or the base name of a +extension. */
static int
resolve_store(const struct conf *c, const char *local, const char *domain,
    struct buf *md)
{
	char base[256];

	if (resolve_store_one(c, local, domain, md))
		return 1;
	buf_reset(md);
	if (resolve_base(local, base, sizeof(base)) &&
	    resolve_store_one(c, base, domain, md))
		return 1;
	buf_reset(md);
	return 0;
}

static int
resolve_store_exists(const struct conf *c, const char *local,
    const char *domain)
{
	struct buf md;
	int r;

	buf_init(&md);
	r = resolve_store(c, local, domain, &md);
	buf_free(&md);
	return r;
}

/* ---- existence and expansion ------------------------------------------ */

int
resolve_exists(const struct conf *c, struct aliases *al, const char *addr)
{
	char local[256], domain[256], base[256];
	struct alias_target *t;
	size_t n;
	int r;

	if (resolve_split(addr, local, sizeof(local), domain,
	    sizeof(domain)) == -1)
		return 0;
	if (resolve_vuser(c, local, domain))
		return 1;
	if (strcmp(local, "postmaster") == 0)
		return 1;
	if ((r = aliases_lookup(al, local, &t, &n)) != 0) {
		if (r == 1)
			aliases_free_targets(t, n);
		return r;
	}
	if (resolve_base(local, base, sizeof(base))) {
		if ((r = aliases_lookup(al, base, &t, &n)) != 0) {
			if (r == 1)
				aliases_free_targets(t, n);
			return r;
		}
	}
	if (resolve_store_exists(c, local, domain))
		return 1;
	if (resolve_base(local, base, sizeof(base)))
		return resolve_account(base) != NULL;
	return resolve_account(local) != NULL;
}

static void
expand_add(struct expand *x, enum target_kind kind, const char *rcpt,
    const char *user, uid_t uid, gid_t gid, const char *path, int account)
{
	struct target *t;
	struct buf key;
	size_t i;

	buf_init(&key);
	buf_printf(&key, "%s:%s:%s", resolve_kind_name(kind), user, path);
	for (i = 0; i < x->n; i++)
		if (strcmp(x->t[i].key, key.data) == 0) {
			buf_free(&key);
			return;	/* the same target twice is delivered once */
		}
	if (x->n >= RESOLVE_MAX) {
		buf_free(&key);
		return;
	}
	x->t = xreallocarray(x->t, x->n + 1, sizeof(*x->t));
	t = &x->t[x->n++];
	t->kind = kind;
	t->key = buf_steal(&key);
	t->rcpt = xstrdup(rcpt);
	t->user = xstrdup(user);
	t->uid = uid;
	t->gid = gid;
	t->path = xstrdup(path);
	t->account = account;
}

/* A system account's own mailbox, in the form local-delivery names. */
static void
expand_mailbox(struct expand *x, const char *rcpt, const struct passwd *pw)
{
	const char *how = conf_str(x->conf, K_LOCAL_DELIVERY);
	const char *md = conf_str(x->conf, K_MAILDIR);
	enum target_kind kind = TG_MAILDIR;
	struct buf p;

	buf_init(&p);
	if (strcmp(how, "mbox") == 0) {
		kind = TG_MBOX;
		buf_printf(&p, "%s/%s", conf_str(x->conf, K_MBOX_DIR),
		    pw->pw_name);
	} else if (strcmp(how, "lmtp") == 0) {
		kind = TG_LMTP;
		buf_puts(&p, conf_str(x->conf, K_LMTP));
	} else if (md[0] == '~' && md[1] == '/')
		buf_printf(&p, "%s/%s", pw->pw_dir, md + 2);
	else
		buf_puts(&p, md);
	expand_add(x, kind, rcpt, pw->pw_name, pw->pw_uid, pw->pw_gid, p.data,
	    1);
	buf_free(&p);
}

int
resolve_runas(uid_t uid, char *name, size_t len, uid_t *uidp, gid_t *gidp)
{
	struct passwd *pw = uid == 0 ? getpwnam("nobody") : getpwuid(uid);

	if (pw == NULL || pw->pw_uid == 0 ||
	    str_copy(name, pw->pw_name, len) >= len)
		return -1;
	*uidp = pw->pw_uid;
	*gidp = pw->pw_gid;
	return 0;
}

static int
expand_runas(struct expand *x, uid_t owner, const char *file,
    struct runas *ra)
{
	if (resolve_runas(owner, ra->name, sizeof(ra->name), &ra->uid,
	    &ra->gid) == 0)
		return 0;
	snprintf(x->err, x->errlen, "%s: no account to run as (owner uid "
	    "%lu%s)", file, (unsigned long)owner, owner == 0 ?
	    ", and no \"nobody\"" : "");
	x->temp = 1;
	return -1;
}

/* Commands and files of the aliases file run as its owner. */
static const struct runas *
expand_aliases_owner(struct expand *x)
{
	const char *src = conf_str(x->conf, K_ALIASES);
	struct stat st;

	if (x->have_owner)
		return &x->aliases_owner;
	if (stat(src, &st) == -1) {
		snprintf(x->err, x->errlen, "%s: %s", src, strerror(errno));
		x->temp = 1;
		return NULL;
	}
	if (expand_runas(x, st.st_uid, src, &x->aliases_owner) == -1)
		return NULL;
	x->have_owner = 1;
	return &x->aliases_owner;
}

static int	expand_name(struct expand *, const char *local,
		    const char *domain, int depth);

static int
expand_seen(struct expand *x, const char *what)
{
	size_t i;

	for (i = 0; i < x->nseen; i++)
		if (strcmp(x->seen[i], what) == 0)
			return 1;
	x->seen = xreallocarray(x->seen, x->nseen + 1, sizeof(*x->seen));
	x->seen[x->nseen++] = xstrdup(what);
	return 0;
}

static void	expand_targets(struct expand *, struct alias_target *, size_t,
		    const char *, const char *, int, const struct runas *);

/* Read an :include: file: a regular file nobody else may write. */
static int
include_read(struct expand *x, const char *path, struct buf *text,
    struct stat *st)
{
	char tmp[8192];
	const char *why = NULL;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd == -1 || fstat(fd, st) == -1)
		why = strerror(errno);
	else if (!S_ISREG(st->st_mode))
		why = "not a regular file";
	else if (st->st_mode & (S_IWGRP | S_IWOTH))
		why = "group or world writable";
	else if (st->st_size > RESOLVE_INCLUDE_MAX)
		why = "larger than 1 MiB";
	while (why == NULL && (n = read(fd, tmp, sizeof(tmp))) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			why = strerror(errno);
		else if (text->len + (size_t)n > RESOLVE_INCLUDE_MAX)
			why = "larger than 1 MiB";
		else
			buf_append(text, tmp, (size_t)n);
	}
	if (fd >= 0)
		close(fd);
	if (why == NULL)
		return 0;
	snprintf(x->err, x->errlen, ":include:%s: %s", path, why);
	x->temp = 1;	/* kept queued until the admin fixes the file */
	return -1;
}

/* One line of an include without its blanks; 0 when nothing is left. */
static size_t
include_trim(const char **line, size_t len)
{
	const char *s = *line;

	if (len && s[len - 1] == '\r')
		len--;
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	*line = s;
	return (len == 0 || *s == '#') ? 0 : len;
}

/*
 * :include:/path: each line of the file is a target list, as after the
 * colon of an alias; '#' lines and blank lines are skipped.  Its commands
 * and files run as the file's owner ("nobody" for root).
 */
static void
expand_include(struct expand *x, const char *path, const char *rcpt,
    const char *domain, int depth)
{
	struct alias_target *t;
	struct runas owner;
	struct stat st;
	struct buf text, seen;
	const char *line, *end, *why;
	size_t n, len;
	int lineno = 0, dup;

	if (depth + 1 > RESOLVE_DEPTH) {
		snprintf(x->err, x->errlen, ":include:%s: nested too deep",
		    path);
		x->temp = 1;
		return;
	}
	buf_init(&seen);
	buf_printf(&seen, ":include:%s", path);
	dup = expand_seen(x, seen.data);
	buf_free(&seen);
	if (dup)
		return;		/* expanded once already */
	buf_init(&text);
	buf_append(&text, "", 0);
	if (include_read(x, path, &text, &st) == -1 ||
	    expand_runas(x, st.st_uid, path, &owner) == -1) {
		buf_free(&text);
		return;
	}
	for (line = text.data; line < text.data + text.len && !x->temp;
	    line = end + 1) {
		end = memchr(line, '\n', (size_t)(text.data + text.len - line));
		if (end == NULL)
			end = text.data + text.len;
		lineno++;
		if ((len = include_trim(&line, (size_t)(end - line))) == 0)
			continue;
		if (aliases_parse_targets(line, len, &t, &n, &why) == -1) {
			snprintf(x->err, x->errlen, ":include:%s:%d: %s", path,
			    lineno, why);
			x->temp = 1;
			break;
		}
		expand_targets(x, t, n, rcpt, domain, depth + 1, &owner);
		aliases_free_targets(t, n);
	}
	buf_free(&text);
}

/* owner: who runs the list's commands and files (NULL: the aliases file's). */
static void
expand_targets(struct expand *x, struct alias_target *t, size_t n,
    const char *rcpt, const char *domain, int depth, const struct runas *owner)
{
	char local[256], dom[256];
	size_t i;

	for (i = 0; i < n && !x->temp; i++) {
		switch (t[i].kind) {
		case ALIAS_LOCAL:
			expand_name(x, t[i].value, domain, depth + 1);
			break;
		case ALIAS_ADDRESS:
			if (resolve_split(t[i].value, local, sizeof(local),
			    dom, sizeof(dom)) == 0 &&
			    conf_is_local_domain(x->conf, dom))
				expand_name(x, local, dom, depth + 1);
			else
				expand_add(x, TG_REMOTE, t[i].value, "",
				    (uid_t)-1, (gid_t)-1, t[i].value, 0);
			break;
		case ALIAS_PIPE:
		case ALIAS_FILE:
			if (owner == NULL &&
			    (owner = expand_aliases_owner(x)) == NULL)
				break;
			expand_add(x, t[i].kind == ALIAS_PIPE ? TG_PIPE :
			    TG_FILE, rcpt, owner->name, owner->uid, owner->gid,
			    t[i].value, 0);
			break;
		case ALIAS_INCLUDE:
			expand_include(x, t[i].value, rcpt, domain, depth);
			break;
		}
	}
}

/* A virtual account of the store: its Maildir, as virtual-user. */
static int
expand_store(struct expand *x, const char *local, const char *domain,
    const char *rcpt)
{
	struct passwd *pw;
	struct buf md;

	buf_init(&md);
	if (!resolve_store(x->conf, local, domain, &md)) {
		buf_free(&md);
		return 0;
	}
	if ((pw = getpwnam(resolve_vaccount(x->conf))) == NULL) {
		snprintf(x->err, x->errlen, "virtual-user \"%s\" does not "
		    "exist", resolve_vaccount(x->conf));
		x->temp = 1;
	} else
		expand_add(x, TG_MAILDIR, rcpt, pw->pw_name, pw->pw_uid,
		    pw->pw_gid, md.data, 0);
	buf_free(&md);
	return 1;
}

/* Deliver to the account itself: the name is not (or no longer) an alias. */
static int
expand_account(struct expand *x, const char *name, const char *rcpt)
{
	struct passwd *pw;

	if ((pw = resolve_account(name)) == NULL &&
	    strcmp(name, "postmaster") == 0)
		pw = resolve_account("root");
	if (pw == NULL && strcmp(conf_str(x->conf, K_LOCAL_DELIVERY),
	    "lmtp") == 0) {
		/* The LMTP server's own users (RCPT asked it): by address. */
		expand_add(x, TG_LMTP, rcpt, rcpt, (uid_t)-1, (gid_t)-1,
		    conf_str(x->conf, K_LMTP), 0);
		return 0;
	}
	if (pw == NULL) {
		snprintf(x->err, x->errlen, "unknown user \"%s\"", name);
		return -1;
	}
	expand_mailbox(x, rcpt, pw);
	return 0;
}

/* local@domain in the form SMTP and Delivered-To: want (quoted if need be). */
static void
resolve_join(const char *local, const char *domain, char *out, size_t len)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	str_copy(a.local, local, sizeof(a.local));
	str_copy(a.domain, domain, sizeof(a.domain));
	addr_format(&a, out, len);
}

static int
expand_name(struct expand *x, const char *local, const char *domain,
    int depth)
{
	char rcpt[600], base[256];
	const struct vuser *v;
	struct alias_target *t;
	struct passwd *pw;
	size_t n;
	int r;

	resolve_join(local, domain, rcpt, sizeof(rcpt));
	if (depth > RESOLVE_DEPTH) {
		snprintf(x->err, x->errlen, "alias loop or nesting too deep "
		    "at \"%s\"", local);
		return -1;
	}
	if ((v = resolve_vuser(x->conf, local, domain)) != NULL) {
		if ((pw = getpwnam(resolve_vaccount(x->conf))) == NULL) {
			snprintf(x->err, x->errlen, "virtual-user \"%s\" does "
			    "not exist", resolve_vaccount(x->conf));
			x->temp = 1;
			return -1;
		}
		expand_add(x, TG_MAILDIR, rcpt, pw->pw_name, pw->pw_uid,
		    pw->pw_gid, v->maildir, 0);
		return 0;
	}
	if (expand_seen(x, local)) {
		if (expand_store(x, local, domain, rcpt))
			return x->temp ? -1 : 0;
		return expand_account(x, local, rcpt);
	}
	r = aliases_lookup(x->aliases, local, &t, &n);
	if (r == 0 && resolve_base(local, base, sizeof(base)))
		r = aliases_lookup(x->aliases, base, &t, &n);
	if (r == -1) {
		snprintf(x->err, x->errlen, "aliases map unreadable");
		x->temp = 1;
		return -1;
	}
	if (r == 1) {
		expand_targets(x, t, n, rcpt, domain, depth, NULL);
		aliases_free_targets(t, n);
		return 0;
	}
	if (expand_store(x, local, domain, rcpt))
		return x->temp ? -1 : 0;
	if (resolve_base(local, base, sizeof(base)))
		return expand_account(x, base, rcpt);
	return expand_account(x, local, rcpt);
}

int
resolve_expand(const struct conf *c, struct aliases *al, const char *addr,
    struct target **out, size_t *nout, char *err, size_t errlen)
{
	char local[256], domain[256];
	struct expand x;
	size_t i;

	memset(&x, 0, sizeof(x));
	x.conf = c;
	x.aliases = al;
	x.err = err;
	x.errlen = errlen;
	err[0] = '\0';
	if (resolve_split(addr, local, sizeof(local), domain,
	    sizeof(domain)) == -1) {
		snprintf(err, errlen, "malformed address");
		*out = NULL;
		*nout = 0;
		return 0;
	}
	if (conf_is_local_domain(c, domain))
		expand_name(&x, local, domain, 0);
	else
		expand_add(&x, TG_REMOTE, addr, "", (uid_t)-1, (gid_t)-1, addr,
		    0);
	for (i = 0; i < x.nseen; i++)
		free(x.seen[i]);
	free(x.seen);
	if (x.temp) {
		resolve_free(x.t, x.n);
		*out = NULL;
		*nout = 0;
		return -1;
	}
	*out = x.t;
	*nout = x.n;
	return 0;
}

void
resolve_free(struct target *t, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(t[i].key);
		free(t[i].rcpt);
		free(t[i].user);
		free(t[i].path);
	}
	free(t);
}

void
resolve_lmtp_addr(const struct target *t, char *out, size_t len)
{
	const char *at = strrchr(t->rcpt, '@');
	size_t n = strlen(t->user);

	if (strchr(t->user, '@') != NULL ||
	    (at && (size_t)(at - t->rcpt) >= n &&
	    strncmp(t->rcpt, t->user, n) == 0 &&
	    (t->rcpt[n] == '@' || t->rcpt[n] == '+')))
		str_copy(out, t->rcpt, len);
	else
		snprintf(out, len, "%s@%s", t->user, at ? at + 1 : "localhost");
}

const char *
resolve_kind_name(enum target_kind k)
{
	switch (k) {
	case TG_MAILDIR:
		return "maildir";
	case TG_REMOTE:
		return "remote";
	case TG_PIPE:
		return "pipe";
	case TG_FILE:
		return "file";
	case TG_INCLUDE:
		return "include";
	case TG_MBOX:
		return "mbox";
	case TG_LMTP:
		return "lmtp";
	}
	return "?";
}

int
resolve_is_local(enum target_kind k)
{
	return k == TG_MAILDIR || k == TG_MBOX || k == TG_LMTP ||
	    k == TG_PIPE || k == TG_FILE;
}

int
resolve_check(const struct conf *c, struct aliases *al, const char *orcpt,
    const char *kind, const char *user, const char *path,
    struct target **out, char *why, size_t whylen)
{
	struct target *t, *one;
	size_t n, i;
	char err[512];

	*out = NULL;
	if (resolve_expand(c, al, orcpt, &t, &n, err, sizeof(err)) == -1) {
		snprintf(why, whylen, "cannot check the request: %s", err);
		return -1;
	}
	for (i = 0; i < n; i++)
		if (resolve_is_local(t[i].kind) &&
		    strcmp(resolve_kind_name(t[i].kind), kind) == 0 &&
		    strcmp(t[i].user, user) == 0 &&
		    strcmp(t[i].path, path) == 0)
			break;
	if (i == n) {
		resolve_free(t, n);
		snprintf(why, whylen, "%s delivery as \"%s\" to \"%s\" is not "
		    "what the configuration gives <%s>", kind, user, path,
		    orcpt);
		return 1;
	}
	one = xcalloc(1, sizeof(*one));
	*one = t[i];
	t[i].key = t[i].rcpt = t[i].user = t[i].path = NULL;
	resolve_free(t, n);
	*out = one;
	return 0;
}
