/*
 * resolve: local recipient lookup and alias expansion, shared by the smtp
 * process (existence at RCPT) and the queue process (targets at delivery).
 * Addresses are data: they select map entries, never become paths or
 * commands themselves; commands and paths come only from the aliases file
 * or the config.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aliases.h"
#include "conf.h"
#include "resolve.h"
#include "util.h"

#define RESOLVE_DEPTH	10
#define RESOLVE_MAX	1000	/* targets one recipient may expand to */

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
};

int
resolve_split(const char *addr, char *local, size_t llen, char *domain,
    size_t dlen)
{
	const char *at = strrchr(addr, '@');
	size_t n;

	if (at == NULL || at == addr || at[1] == '\0')
		return -1;
	n = (size_t)(at - addr);
	if (n >= llen || strlen(at + 1) >= dlen)
		return -1;
	memcpy(local, addr, n);
	local[n] = '\0';
	str_copy(domain, at + 1, dlen);
	str_lower(local);
	str_lower(domain);
	return 0;
}

/* "user+tag" -> "user"; returns 0 when there is no extension. */
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
		return resolve_account(base) != NULL;
	}
	return resolve_account(local) != NULL;
}

static void
expand_add(struct expand *x, enum target_kind kind, const char *rcpt,
    const struct passwd *pw, const char *path)
{
	struct target *t;
	struct buf key;
	size_t i;

	buf_init(&key);
	buf_printf(&key, "%s:%s:%s", resolve_kind_name(kind),
	    pw ? pw->pw_name : "", path);
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
	t->user = xstrdup(pw ? pw->pw_name : "");
	t->uid = pw ? pw->pw_uid : (uid_t)-1;
	t->gid = pw ? pw->pw_gid : (gid_t)-1;
	t->path = xstrdup(path);
}

static void
expand_maildir(struct expand *x, const char *rcpt, const struct passwd *pw)
{
	const char *md = conf_str(x->conf, K_MAILDIR);
	struct buf p;

	buf_init(&p);
	if (md[0] == '~' && md[1] == '/')
		buf_printf(&p, "%s/%s", pw->pw_dir, md + 2);
	else
		buf_puts(&p, md);
	expand_add(x, TG_MAILDIR, rcpt, pw, p.data);
	buf_free(&p);
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

static void
expand_targets(struct expand *x, struct alias_target *t, size_t n,
    const char *rcpt, const char *domain, int depth)
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
				expand_add(x, TG_REMOTE, t[i].value, NULL,
				    t[i].value);
			break;
		case ALIAS_PIPE:
			expand_add(x, TG_PIPE, rcpt, NULL, t[i].value);
			break;
		case ALIAS_FILE:
			expand_add(x, TG_FILE, rcpt, NULL, t[i].value);
			break;
		case ALIAS_INCLUDE:
			expand_add(x, TG_INCLUDE, rcpt, NULL, t[i].value);
			break;
		}
	}
}

/* Deliver to the account itself: the name is not (or no longer) an alias. */
static int
expand_account(struct expand *x, const char *name, const char *rcpt)
{
	struct passwd *pw;

	if ((pw = resolve_account(name)) == NULL &&
	    strcmp(name, "postmaster") == 0)
		pw = resolve_account("root");
	if (pw == NULL) {
		snprintf(x->err, x->errlen, "unknown user \"%s\"", name);
		return -1;
	}
	expand_maildir(x, rcpt, pw);
	return 0;
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

	snprintf(rcpt, sizeof(rcpt), "%s@%s", local, domain);
	if (depth > RESOLVE_DEPTH) {
		snprintf(x->err, x->errlen, "alias loop or nesting too deep "
		    "at \"%s\"", local);
		return -1;
	}
	if ((v = resolve_vuser(x->conf, local, domain)) != NULL) {
		if ((pw = getpwnam(conf_str(x->conf, K_VIRTUAL_USER))) == NULL) {
			snprintf(x->err, x->errlen, "virtual-user \"%s\" does "
			    "not exist", conf_str(x->conf, K_VIRTUAL_USER));
			x->temp = 1;
			return -1;
		}
		expand_add(x, TG_MAILDIR, rcpt, pw, v->maildir);
		return 0;
	}
	if (expand_seen(x, local))
		return expand_account(x, local, rcpt);
	r = aliases_lookup(x->aliases, local, &t, &n);
	if (r == 0 && resolve_base(local, base, sizeof(base)))
		r = aliases_lookup(x->aliases, base, &t, &n);
	if (r == -1) {
		snprintf(x->err, x->errlen, "aliases map unreadable");
		x->temp = 1;
		return -1;
	}
	if (r == 1) {
		expand_targets(x, t, n, rcpt, domain, depth);
		aliases_free_targets(t, n);
		return 0;
	}
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
		expand_add(&x, TG_REMOTE, addr, NULL, addr);
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
	}
	return "?";
}
