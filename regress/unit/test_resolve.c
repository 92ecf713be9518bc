/*
 * test_resolve: the parent's check of delivery requests (resolve_check):
 * a request is run only if expanding its original recipient again gives
 * exactly that kind, account and path; and the ~/.forward parser.
 */
#include <sys/stat.h>

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/ipc.h"
#include "queue/mda.h"
#include "queue/resolve.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_resolve(void);

static int
put_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	if (fclose(f) != 0)
		return -1;
	return chmod(path, mode);
}

/* 0 allowed, 1 refused, -1 temporary; out's account checked when given. */
static int
check(const struct conf *c, struct aliases *a, const char *orcpt,
    const char *kind, const char *user, const char *path)
{
	struct target *t;
	char why[512];
	int r;

	r = resolve_check(c, a, orcpt, kind, user, path, &t, why, sizeof(why));
	if (r == 0) {
		if (strcmp(t->user, user) != 0 || strcmp(t->path, path) != 0)
			r = 99;
		resolve_free(t, 1);
	} else if (why[0] == '\0')
		r = 98;		/* a refusal always says why */
	return r;
}

static void
test_resolve_check(void)
{
	char dir[] = "/tmp/tern-resolve-XXXXXX", src[256], inc[256], err[512];
	char owner[64], conftext[2048], md[300], cmd[1024];
	struct passwd *me = getpwuid(getuid());
	const char *other = getuid() == 0 ? "daemon" : "root";
	struct aliases *a;
	struct conf *c;
	uid_t ouid;
	gid_t ogid;

	if (me == NULL || mkdtemp(dir) == NULL) {
		CHECK(!"setup");
		return;
	}
	/* Root's files run as nobody; anyone else's as that account. */
	CHECK(resolve_runas(getuid(), owner, sizeof(owner), &ouid, &ogid) == 0);
	CHECK(ouid != 0);
	snprintf(src, sizeof(src), "%s/aliases", dir);
	snprintf(inc, sizeof(inc), "%s/list.inc", dir);
	snprintf(md, sizeof(md), "%s/v/Maildir", dir);
	snprintf(conftext, sizeof(conftext), "listen mx 127.0.0.1 port 25\n"
	    "local-domain example.org\naliases \"%s\"\nvirtual-user \"%s\"\n"
	    "virtual \"v@example.org\" maildir \"%s\"\n", src, me->pw_name, md);
	c = conf_parse("t.conf", conftext, strlen(conftext), "/", err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "resolve: %s\n", err);
		return;
	}
	CHECK(put_file(inc, "# list\nv\n|/usr/bin/inc-cmd\n", 0644) == 0);
	snprintf(cmd, sizeof(cmd), "postmaster: v\nprog: \"|/usr/bin/prog -x\"\n"
	    "box: /var/tmp/box\nlist: :include:%s\nwide: :include:%s.w\n",
	    inc, inc);
	CHECK(put_file(src, cmd, 0644) == 0);
	snprintf(cmd, sizeof(cmd), "%s.w", inc);
	CHECK(put_file(cmd, "v\n", 0666) == 0);
	CHECK(chmod(cmd, 0666) == 0);
	CHECK(aliases_compile(src, err, sizeof(err), NULL) == 0);
	a = aliases_open(src);

	/* what the config gives */
	CHECK(check(c, a, "v@example.org", "maildir", me->pw_name, md) == 0);
	CHECK(check(c, a, "V+tag@Example.org", "maildir", me->pw_name, md)
	    == 0);
	CHECK(check(c, a, "prog@example.org", "pipe", owner,
	    "/usr/bin/prog -x") == 0);
	CHECK(check(c, a, "prog+x@example.org", "pipe", owner,
	    "/usr/bin/prog -x") == 0);
	CHECK(check(c, a, "box@example.org", "file", owner, "/var/tmp/box")
	    == 0);
	CHECK(check(c, a, "list@example.org", "maildir", me->pw_name, md) == 0);
	CHECK(check(c, a, "list@example.org", "pipe", owner,
	    "/usr/bin/inc-cmd") == 0);

	/* a forged path, command, account or kind is refused */
	CHECK(check(c, a, "v@example.org", "maildir", me->pw_name,
	    "/etc/cron.d") == 1);
	CHECK(check(c, a, "v@example.org", "maildir", other, md) == 1);
	CHECK(check(c, a, "v@example.org", "mbox", me->pw_name, md) == 1);
	CHECK(check(c, a, "prog@example.org", "pipe", owner, "/bin/sh -c id")
	    == 1);
	CHECK(check(c, a, "prog@example.org", "pipe", other,
	    "/usr/bin/prog -x") == 1);
	CHECK(check(c, a, "prog@example.org", "file", owner,
	    "/usr/bin/prog -x") == 1);
	CHECK(check(c, a, "box@example.org", "file", owner, "/etc/passwd")
	    == 1);
	CHECK(check(c, a, "box@example.org", "pipe", owner, "/var/tmp/box")
	    == 1);
	CHECK(check(c, a, "v@example.org", "pipe", owner, "/usr/bin/prog -x")
	    == 1);
	CHECK(check(c, a, "far@remote.example", "remote", "",
	    "far@remote.example") == 1);
	CHECK(check(c, a, "nosuchuser-xyz@example.org", "maildir",
	    me->pw_name, md) == 1);
	CHECK(check(c, a, "not an address", "maildir", me->pw_name, md) == 1);
	/* a writable include is not expanded at all */
	CHECK(check(c, a, "wide@example.org", "maildir", me->pw_name, md)
	    == -1);

	aliases_close(a);
	conf_free(c);
	unlink(src);
	snprintf(cmd, sizeof(cmd), "%s.db", src);
	unlink(cmd);
	unlink(inc);
	snprintf(cmd, sizeof(cmd), "%s.w", inc);
	unlink(cmd);
	rmdir(dir);
}

static int
fwd_is(const struct fwd_target *t, size_t n, size_t i, enum fwd_kind k,
    const char *v)
{
	return i < n && t[i].kind == k && strcmp(t[i].value, v) == 0;
}

static void
test_resolve_forward(void)
{
	static const char text[] =
	    "# comment\n"
	    "\\joe, bob\n"
	    "\n"
	    "  far@remote.example,\"|/usr/bin/vacation -a joe\"\n"
	    "|/usr/bin/procmail\n"
	    "/home/joe/archive, joe@example.org, Joe+x@Example.Org, bob\n";
	static const char ctext[] = "listen mx 127.0.0.1 port 25\n"
	    "local-domain example.org\n";
	static const char *bad[] = {
	    ":include:/etc/list\n", "\"|unterminated\n", "a b\n",
	    "x@\n", "-rf\n",
	};
	struct fwd_target *t;
	char err[512], why[256];
	struct conf *c;
	struct buf many;
	size_t n, i;

	c = conf_parse("t.conf", ctext, strlen(ctext), "/", err, sizeof(err));
	CHECK(c != NULL);
	if (c == NULL)
		return;
	CHECK(forward_parse(c, text, strlen(text), "joe", "example.org", &t, &n,
	    why, sizeof(why)) == 0);
	CHECK(n == 6);
	CHECK(fwd_is(t, n, 0, FWD_SELF, ""));
	CHECK(fwd_is(t, n, 1, FWD_ADDRESS, "bob@example.org"));
	CHECK(fwd_is(t, n, 2, FWD_ADDRESS, "far@remote.example"));
	CHECK(fwd_is(t, n, 3, FWD_PIPE, "/usr/bin/vacation -a joe"));
	CHECK(fwd_is(t, n, 4, FWD_PIPE, "/usr/bin/procmail"));
	CHECK(fwd_is(t, n, 5, FWD_FILE, "/home/joe/archive"));
	forward_free(t, n);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(forward_parse(c, bad[i], strlen(bad[i]), "joe",
		    "example.org", &t, &n, why, sizeof(why)) == -1);
		CHECK(t == NULL && n == 0 && why[0] != '\0');
	}
	buf_init(&many);
	for (i = 0; i <= FORWARD_MAX; i++)
		buf_printf(&many, "u%zu@remote.example\n", i);
	CHECK(forward_parse(c, many.data, many.len, "joe", "example.org", &t,
	    &n, why, sizeof(why)) == -1);
	buf_free(&many);
	conf_free(c);
}

/*
 * The checks a ~/.forward must pass, the same whether the worker makes
 * them on its open file or the parent on an lstat (RCPT of an LMTP
 * mailbox): a regular file of the account or root, nobody else may
 * write it, at most 64 KiB.
 */
static void
test_resolve_forward_unsafe(void)
{
	static const struct {
		mode_t	 mode;
		uid_t	 uid;
		off_t	 size;
		int	 ok;
	} cases[] = {
		{ S_IFREG | 0644, 1000, 10, 1 },
		{ S_IFREG | 0600, 1000, 10, 1 },
		{ S_IFREG | 0644, 0, 10, 1 },		/* root's */
		{ S_IFREG | 0644, 1000, FORWARD_MAX_FILE, 1 },
		{ S_IFREG | 0644, 1001, 10, 0 },	/* another user's */
		{ S_IFREG | 0664, 1000, 10, 0 },	/* group writable */
		{ S_IFREG | 0646, 1000, 10, 0 },	/* world writable */
		{ S_IFREG | 0644, 1000, FORWARD_MAX_FILE + 1, 0 },
		{ S_IFLNK | 0777, 1000, 10, 0 },	/* lstat of a link */
		{ S_IFDIR | 0755, 1000, 10, 0 },
		{ S_IFIFO | 0600, 1000, 0, 0 },
	};
	struct stat st;
	const char *why;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&st, 0, sizeof(st));
		st.st_mode = cases[i].mode;
		st.st_uid = cases[i].uid;
		st.st_size = cases[i].size;
		why = forward_unsafe(&st, 1000);
		CHECK((why == NULL) == cases[i].ok);
		CHECK(why == NULL || why[0] != '\0');
	}
}

/* The smtp process's question to the parent: one plain account name. */
static int
query(const char *user, const char *user2, char *out, size_t outlen)
{
	struct buf b;
	uint64_t id;
	int r;

	buf_init(&b);
	rec_put_u64(&b, T_JOB, 42);
	if (user)
		rec_put_str(&b, T_USER, user);
	if (user2)
		rec_put_str(&b, T_USER, user2);
	r = forward_query_parse(b.data, b.len, &id, out, outlen);
	if (r == 0 && id != 42)
		r = 99;
	buf_free(&b);
	return r;
}

static void
test_resolve_forward_query(void)
{
	static const char *bad[] = {
	    "", "../root", "a/b", "a b", "a\tb", "caf\xc3\xa9", "x\x7f",
	};
	char u[65], small[4];
	size_t i;

	CHECK(query("alice", NULL, u, sizeof(u)) == 0 &&
	    strcmp(u, "alice") == 0);
	CHECK(query("a.b-c_d", NULL, u, sizeof(u)) == 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(query(bad[i], NULL, u, sizeof(u)) == -1 && u[0] == '\0');
	CHECK(query(NULL, NULL, u, sizeof(u)) == -1);
	CHECK(query("bob", "eve", u, sizeof(u)) == -1);	/* two names */
	CHECK(query("alice", NULL, small, sizeof(small)) == -1);
	CHECK(forward_query_parse("\x11\x00\x00", 3, &(uint64_t){ 0 }, u,
	    sizeof(u)) == -1);
}

/*
 * Under local-delivery lmtp a system account's mailbox is an LMTP target
 * marked as the account's (its ~/.forward is read first); the parent
 * runs that .forward stage only for the account the config gives.
 */
static void
test_resolve_lmtp_account(void)
{
	static const char ctext[] = "listen mx 127.0.0.1 port 25\n"
	    "local-domain example.org\nlocal-delivery lmtp\n"
	    "lmtp \"unix:/run/dovecot/lmtp\"\n";
	const char *other = getuid() == 0 ? "daemon" : "root";
	struct passwd *me = getpwuid(getuid());
	struct target *t;
	struct aliases *a = aliases_open("/nonexistent/aliases");
	struct conf *c;
	char err[512], addr[300];
	size_t n;

	c = conf_parse("t.conf", ctext, strlen(ctext), "/", err, sizeof(err));
	CHECK(c != NULL && me != NULL);
	if (c == NULL || me == NULL)
		return;
	snprintf(addr, sizeof(addr), "%s@example.org", me->pw_name);
	CHECK(resolve_expand(c, a, addr, &t, &n, err, sizeof(err)) == 0);
	CHECK(n == 1 && t[0].kind == TG_LMTP && t[0].account == 1 &&
	    t[0].uid == me->pw_uid && strcmp(t[0].user, me->pw_name) == 0);
	if (n == 1)
		CHECK(check(c, a, addr, "lmtp", me->pw_name, t[0].path) == 0 &&
		    check(c, a, addr, "lmtp", other, t[0].path) == 1 &&
		    check(c, a, addr, "maildir", me->pw_name, t[0].path) == 1);
	resolve_free(t, n);
	/* The LMTP server's own users: no account, no .forward. */
	CHECK(resolve_expand(c, a, "nosuchuser-xyz@example.org", &t, &n, err,
	    sizeof(err)) == 0);
	CHECK(n == 1 && t[0].kind == TG_LMTP && t[0].account == 0);
	resolve_free(t, n);
	aliases_close(a);
	conf_free(c);
}

static int
accounts_msg(const char *const *names, size_t n, int more)
{
	struct buf b;
	size_t i;
	int r;

	buf_init(&b);
	for (i = 0; i < n; i++)
		rec_put_str(&b, T_ACCOUNT, names[i]);
	if (more)
		rec_put_u64(&b, T_FLAGS, IPC_F_MORE);
	r = resolve_accounts_msg(b.data, b.len);
	buf_free(&b);
	return r;
}

/* One target expected: its kind and path. */
static int
expands_to(const struct conf *c, struct aliases *a, const char *addr,
    enum target_kind kind, const char *path)
{
	struct target *t;
	size_t n;
	char err[512];
	int ok;

	if (resolve_expand(c, a, addr, &t, &n, err, sizeof(err)) == -1)
		return 0;
	ok = n == 1 && t[0].kind == kind && strcmp(t[0].path, path) == 0;
	resolve_free(t, n);
	return ok;
}

/* Virtual accounts of the credential store get the pattern's Maildir. */
static void
test_resolve_store(void)
{
	static const char *const first[] = { "anna@example.org" };
	static const char *const rest[] = { "sam@example.org",
	    "bob@example.net" };
	static const char *const bad[] = { "tern" };
	static const char nouser[] = "listen mx 127.0.0.1 port 25\n"
	    "virtual-maildir /v/%d/Maildir\n";
	static const char badpct[] = "listen mx 127.0.0.1 port 25\n"
	    "virtual-maildir /v/%u/%s\n";
	char dir[] = "/tmp/tern-rstore-XXXXXX", src[256], conftext[1024];
	char err[512], md[300];
	struct passwd *me = getpwuid(getuid());
	struct aliases *a;
	struct conf *c;

	if (me == NULL || mkdtemp(dir) == NULL) {
		CHECK(!"setup");
		return;
	}
	snprintf(src, sizeof(src), "%s/aliases", dir);
	CHECK(put_file(src, "sam: far@remote.example\n", 0644) == 0);
	CHECK(aliases_compile(src, err, sizeof(err), NULL) == 0);
	a = aliases_open(src);
	snprintf(conftext, sizeof(conftext), "listen mx 127.0.0.1 port 25\n"
	    "local-domain example.org\nlocal-domain example.net\n"
	    "aliases \"%s\"\nvirtual-user \"%s\"\n"
	    "virtual-maildir \"/srv/v/%%d/%%u/%%%%/Maildir\"\n", src,
	    me->pw_name);
	c = conf_parse("t.conf", conftext, strlen(conftext), "/", err,
	    sizeof(err));
	CHECK(c != NULL);
	if (c == NULL) {
		fprintf(stderr, "resolve: %s\n", err);
		return;
	}
	/* Before the set: nobody. */
	CHECK(resolve_exists(c, a, "anna@example.org") == 0);
	/* A set in two chunks applies when the last is in. */
	CHECK(accounts_msg(first, 1, 1) == 0);
	CHECK(resolve_accounts_count() == 0);
	CHECK(accounts_msg(rest, 2, 0) == 1);
	CHECK(resolve_accounts_count() == 3);
	CHECK(accounts_msg(bad, 1, 0) == -1);		/* virtual names only */
	CHECK(resolve_accounts_count() == 3);

	snprintf(md, sizeof(md), "/srv/v/example.org/anna/%%/Maildir");
	CHECK(resolve_exists(c, a, "anna@example.org") == 1);
	CHECK(resolve_exists(c, a, "Anna+list@Example.ORG") == 1);
	CHECK(resolve_exists(c, a, "bob@example.net") == 1);
	CHECK(resolve_exists(c, a, "bob@example.org") == 0);
	CHECK(resolve_exists(c, a, "zed@example.org") == 0);
	CHECK(expands_to(c, a, "anna@example.org", TG_MAILDIR, md));
	CHECK(expands_to(c, a, "anna+list@example.org", TG_MAILDIR, md));
	CHECK(expands_to(c, a, "bob@example.net", TG_MAILDIR,
	    "/srv/v/example.net/bob/%/Maildir"));
	/* An alias of the name says otherwise. */
	CHECK(expands_to(c, a, "sam@example.org", TG_REMOTE,
	    "far@remote.example"));
	/* The parent runs that delivery, as virtual-user, and no other. */
	CHECK(check(c, a, "anna@example.org", "maildir", me->pw_name, md) == 0);
	CHECK(check(c, a, "anna@example.org", "maildir", me->pw_name,
	    "/srv/v/example.org/bob/%/Maildir") == 1);
	/* Gone from the set: gone. */
	CHECK(accounts_msg(rest, 2, 0) == 1);
	CHECK(resolve_exists(c, a, "anna@example.org") == 0);
	resolve_accounts_set(NULL, 0);
	conf_free(c);
	aliases_close(a);

	/* The pattern names each account's own Maildir. */
	CHECK(conf_parse("t.conf", nouser, strlen(nouser), "/", err,
	    sizeof(err)) == NULL && strstr(err, "%u") != NULL);
	CHECK(conf_parse("t.conf", badpct, strlen(badpct), "/", err,
	    sizeof(err)) == NULL);
	snprintf(err, sizeof(err), "rm -rf '%s'", dir);
	CHECK(system(err) == 0);
}

/* Lookups use the mailbox's name: quotes gone, lower case, A-labels. */
static void
test_resolve_split(void)
{
	char l[128], d[256];

	CHECK(resolve_split("\"Bob\"@Example.TEST", l, sizeof(l), d,
	    sizeof(d)) == 0 && strcmp(l, "bob") == 0 &&
	    strcmp(d, "example.test") == 0);
	CHECK(resolve_split("\"john doe\"@example.test", l, sizeof(l), d,
	    sizeof(d)) == 0 && strcmp(l, "john doe") == 0);
	CHECK(resolve_split("friend@b\xc3\xbc" "cher.test", l, sizeof(l), d,
	    sizeof(d)) == 0 && strcmp(d, "xn--bcher-kva.test") == 0);
	CHECK(resolve_split("john doe@example.test", l, sizeof(l), d,
	    sizeof(d)) == -1);
	CHECK(resolve_split("bob@example.test", l, 3, d, sizeof(d)) == -1);
}

void
test_resolve(void)
{
	test_resolve_split();
	test_resolve_check();
	test_resolve_forward();
	test_resolve_forward_unsafe();
	test_resolve_forward_query();
	test_resolve_lmtp_account();
	test_resolve_store();
}
