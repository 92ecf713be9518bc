/* test_aliases: the aliases grammar and the compiled map's round trip. */
#include <sys/stat.h>

#include <db.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_aliases(void);

static const struct {
	const char *text;
	const char *err;
} rejected[] = {
	{ "foo\n", "a:1: missing \":\" after the alias name" },
	{ ": root\n", "a:1: empty alias name" },
	{ "a b: root\n", "a:1: invalid alias name \"a b\"" },
	{ "a\"b: root\n", "a:1: invalid alias name \"a\"b\"" },
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: r\n",
	    "a:1: alias name longer than 64 characters" },
	{ "x:\n", "a:1: x: no targets" },
	{ "x:   \t\n", "a:1: x: no targets" },
	{ "x: a,,b\n", "a:1: x: empty target" },
	{ "x: a,\n", "a:1: x: empty target" },
	{ "x: a, \"\"\n", "a:1: x: empty target" },
	{ "ok: a\nx: a,\n  , b\n", "a:2: x: empty target" },
	{ "x: \"abc\n", "a:1: x: unterminated quoted string" },
	{ "x: \"a\" b\n", "a:1: x: text after a quoted string" },
	{ "x: a\"b\"\n", "a:1: x: quote inside an unquoted target" },
	{ "x: |\n", "a:1: x: empty command" },
	{ "x: \"|  \"\n", "a:1: x: empty command" },
	{ "x: :include:list\n", "a:1: x: :include: path must be absolute" },
	{ "x: a@\n", "a:1: x: invalid address" },
	{ "x: @b.org\n", "a:1: x: invalid address" },
	{ "x: a b@c.org\n", "a:1: x: invalid address" },
	{ "x: a@b_c.org\n", "a:1: x: invalid address" },
	{ "x: a b\n", "a:1: x: invalid local name" },
	{ "x: -rf\n", "a:1: x: invalid local name" },
	{ "x: \\root\n", "a:1: x: invalid local name" },
	{ "x: a\x01\n", "a:1: x: control character in target list" },
	{ "x: a\ny: b\nX: c\n", "a:3: duplicate alias \"x\" (first at line 1)" },
	{ " b\n", "a:1: continuation line without an alias" },
	{ "x: a\n\n b\n", "a:3: continuation line without an alias" },
};

static void
test_aliases_rejected(void)
{
	struct alias_entry *e;
	size_t n;
	char err[256];
	struct buf big;

	for (size_t i = 0; i < sizeof(rejected) / sizeof(rejected[0]); i++) {
		e = (void *)1;
		n = 1;
		CHECK(aliases_parse("a", rejected[i].text,
		    strlen(rejected[i].text), &e, &n, err, sizeof(err)) == -1);
		if (strcmp(err, rejected[i].err) != 0)
			fprintf(stderr, "aliases rejected[%zu]: got \"%s\"\n",
			    i, err);
		CHECK(strcmp(err, rejected[i].err) == 0);
		CHECK(e == NULL && n == 0);
	}
	CHECK(aliases_parse("a", "x: a\ny: b\0\n", 11, &e, &n, err,
	    sizeof(err)) == -1);
	CHECK(strcmp(err, "a:2: NUL byte in file") == 0);

	buf_init(&big);
	buf_puts(&big, "x: a\ny: ");
	for (int i = 0; i < 70000; i++)
		buf_putc(&big, 'b');
	CHECK(aliases_parse("a", big.data, big.len, &e, &n, err,
	    sizeof(err)) == -1);
	CHECK(strcmp(err, "a:2: line longer than 65536 bytes") == 0);
	buf_free(&big);
}

static const char accepted[] =
    "# Aliases\n"
    "Postmaster: Root\n"
    "abuse:  postmaster , \"Foo.Bar\"\r\n"
    "\n"
    "list: a@Example.org,\n"
    "  b,\n"
    "# a comment inside an entry\n"
    "\t\"|/usr/bin/prog --x, y\", /var/mail/file ,\n"
    "    # an indented comment\n"
    "  :INCLUDE: /etc/tern/list\n"
    "quoted: \"/path with spaces/f\", \"|\\\"q\\\" \\\\\"\n"
    "MAILER-DAEMON:postmaster\n"
    "pipe: | /bin/cat -n\n";

static int
target_is(const struct alias_entry *e, size_t i, enum alias_kind kind,
    const char *value)
{
	return i < e->ntargets && e->targets[i].kind == kind &&
	    strcmp(e->targets[i].value, value) == 0;
}

static void
test_aliases_accepted(void)
{
	struct alias_entry *e;
	struct alias_target *t;
	const char *why;
	size_t n;
	char err[256];

	CHECK(aliases_parse("a", accepted, strlen(accepted), &e, &n, err,
	    sizeof(err)) == 0);
	CHECK(n == 6);
	if (n != 6) {
		fprintf(stderr, "aliases accepted: %s\n", err);
		aliases_free_entries(e, n);
		return;
	}
	CHECK(strcmp(e[0].name, "postmaster") == 0 && e[0].line == 2);
	CHECK(e[0].ntargets == 1 && target_is(&e[0], 0, ALIAS_LOCAL, "root"));
	CHECK(strcmp(e[1].name, "abuse") == 0 && e[1].ntargets == 2);
	CHECK(target_is(&e[1], 0, ALIAS_LOCAL, "postmaster"));
	CHECK(target_is(&e[1], 1, ALIAS_LOCAL, "foo.bar"));
	CHECK(strcmp(e[2].name, "list") == 0 && e[2].line == 5);
	CHECK(e[2].ntargets == 5);
	CHECK(target_is(&e[2], 0, ALIAS_ADDRESS, "a@Example.org"));
	CHECK(target_is(&e[2], 1, ALIAS_LOCAL, "b"));
	CHECK(target_is(&e[2], 2, ALIAS_PIPE, "/usr/bin/prog --x, y"));
	CHECK(target_is(&e[2], 3, ALIAS_FILE, "/var/mail/file"));
	CHECK(target_is(&e[2], 4, ALIAS_INCLUDE, "/etc/tern/list"));
	CHECK(strcmp(e[3].name, "quoted") == 0 && e[3].line == 11);
	CHECK(target_is(&e[3], 0, ALIAS_FILE, "/path with spaces/f"));
	CHECK(target_is(&e[3], 1, ALIAS_PIPE, "\"q\" \\"));
	CHECK(strcmp(e[4].name, "mailer-daemon") == 0);
	CHECK(target_is(&e[4], 0, ALIAS_LOCAL, "postmaster"));
	CHECK(target_is(&e[5], 0, ALIAS_PIPE, "/bin/cat -n"));
	aliases_free_entries(e, n);

	for (size_t i = 0; i < sizeof(accepted); i++) {
		int r = aliases_parse("a", accepted, i, &e, &n, err,
		    sizeof(err));

		CHECK(r == 0 || strncmp(err, "a:", 2) == 0);
		if (r == 0)
			aliases_free_entries(e, n);
	}
	CHECK(aliases_parse("a", "", 0, &e, &n, err, sizeof(err)) == 0);
	CHECK(n == 0);
	aliases_free_entries(e, n);

	CHECK(aliases_parse_targets("a, |cmd", 7, &t, &n, &why) == 0);
	CHECK(n == 2 && t[0].kind == ALIAS_LOCAL && t[1].kind == ALIAS_PIPE);
	aliases_free_targets(t, n);
	why = NULL;
	CHECK(aliases_parse_targets("", 0, &t, &n, &why) == -1);
	CHECK(t == NULL && n == 0 && why && strcmp(why, "no targets") == 0);
}

static int
write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* Looks name up and checks that it maps to exactly one given target. */
static int
maps_to(struct aliases *a, const char *name, enum alias_kind kind,
    const char *value)
{
	struct alias_target *t;
	size_t n;
	int r, ok;

	r = aliases_lookup(a, name, &t, &n);
	ok = r == 1 && n == 1 && t[0].kind == kind &&
	    strcmp(t[0].value, value) == 0;
	aliases_free_targets(t, n);
	return ok;
}

static int
dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A map written behind newaliases' back: its decoder must refuse it. */
static void
test_aliases_corrupt(const char *dir)
{
	char src[512], db[520];
	static const char badkind[] = "\x09root";	/* with its NUL */
	static const char nonul[] = { 0, 'r', 'o' };
	static const char empty[] = { 0, 0 };
	const struct { const char *k; const void *v; size_t len; } recs[] = {
		{ "badkind", badkind, sizeof(badkind) },
		{ "nonul", nonul, sizeof(nonul) },
		{ "empty", empty, sizeof(empty) },
		{ "nothing", "", 0 },
		{ "good", "\0root\0\x03/x", 10 },
	};
	struct alias_target *t;
	struct aliases *a;
	DBT key, data;
	DB *d;
	size_t n;

	snprintf(src, sizeof(src), "%s/bad", dir);
	snprintf(db, sizeof(db), "%s.db", src);
	CHECK(db_create(&d, NULL, 0) == 0);
	CHECK(d->open(d, NULL, db, NULL, DB_HASH, DB_CREATE, 0644) == 0);
	for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
		memset(&key, 0, sizeof(key));
		memset(&data, 0, sizeof(data));
		key.data = (void *)recs[i].k;
		key.size = (u_int32_t)strlen(recs[i].k);
		data.data = (void *)recs[i].v;
		data.size = (u_int32_t)recs[i].len;
		CHECK(d->put(d, NULL, &key, &data, 0) == 0);
	}
	d->close(d, 0);
	a = aliases_open(src);
	CHECK(aliases_lookup(a, "badkind", &t, &n) == -1);
	CHECK(aliases_lookup(a, "nonul", &t, &n) == -1);
	CHECK(aliases_lookup(a, "empty", &t, &n) == -1);
	CHECK(aliases_lookup(a, "nothing", &t, &n) == -1);
	CHECK(aliases_lookup(a, "good", &t, &n) == 1 && n == 2);
	CHECK(n == 2 && t[0].kind == ALIAS_LOCAL && t[1].kind == ALIAS_FILE);
	aliases_free_targets(t, n);
	aliases_close(a);
	unlink(db);
}

static void
test_aliases_map(void)
{
	char dir[] = "/tmp/tern-aliases-XXXXXX", src[512], db[520], err[512];
	struct alias_target *t;
	struct aliases *a;
	struct stat st;
	size_t count = 0, n;

	if (mkdtemp(dir) == NULL) {
		CHECK(!"mkdtemp");
		return;
	}
	snprintf(src, sizeof(src), "%s/aliases", dir);
	snprintf(db, sizeof(db), "%s.db", src);

	/* no map yet: a handle, and nothing found */
	a = aliases_open(src);
	CHECK(a != NULL);
	CHECK(aliases_lookup(a, "postmaster", &t, &n) == 0 && n == 0);
	CHECK(aliases_compile(src, err, sizeof(err), &count) == -1);
	CHECK(strstr(err, "/aliases: No such file or directory") != NULL);

	CHECK(write_file(src, "postmaster: root\nlist: a@b.org, \"|/bin/x "
	    "y\"\n") == 0);
	CHECK(aliases_compile(src, err, sizeof(err), &count) == 0);
	CHECK(count == 2);
	CHECK(stat(db, &st) == 0 && (st.st_mode & 0777) == 0644);
	CHECK(dir_entries(dir) == 2);
	CHECK(maps_to(a, "postmaster", ALIAS_LOCAL, "root"));
	CHECK(maps_to(a, "PostMaster", ALIAS_LOCAL, "root"));
	CHECK(aliases_lookup(a, "list", &t, &n) == 1 && n == 2);
	CHECK(n == 2 && t[0].kind == ALIAS_ADDRESS && t[1].kind == ALIAS_PIPE);
	CHECK(n == 2 && strcmp(t[1].value, "/bin/x y") == 0);
	aliases_free_targets(t, n);
	CHECK(aliases_lookup(a, "nobody", &t, &n) == 0 && t == NULL);

	/* newaliases replaces the map; the open handle sees the new one */
	CHECK(write_file(src, "postmaster: alice@example.org\n") == 0);
	CHECK(aliases_compile(src, err, sizeof(err), &count) == 0);
	CHECK(count == 1);
	CHECK(maps_to(a, "postmaster", ALIAS_ADDRESS, "alice@example.org"));
	CHECK(aliases_lookup(a, "list", &t, &n) == 0);

	/* a bad source leaves the old map and no temporary file */
	CHECK(write_file(src, "postmaster: bob\npostmaster: carol\n") == 0);
	CHECK(aliases_compile(src, err, sizeof(err), &count) == -1);
	CHECK(strstr(err, "/aliases:2: duplicate alias \"postmaster\" (first "
	    "at line 1)") != NULL);
	CHECK(dir_entries(dir) == 2);
	CHECK(maps_to(a, "postmaster", ALIAS_ADDRESS, "alice@example.org"));

	/* the map disappears: not found, then found again when it is back */
	CHECK(unlink(db) == 0);
	CHECK(aliases_lookup(a, "postmaster", &t, &n) == 0);
	CHECK(write_file(src, "postmaster: dave\n") == 0);
	CHECK(aliases_compile(src, err, sizeof(err), NULL) == 0);
	CHECK(maps_to(a, "postmaster", ALIAS_LOCAL, "dave"));
	aliases_close(a);

	/* the packaged file compiles */
	{
		struct buf text;
		struct alias_entry *e;

		buf_init(&text);
		CHECK(file_read_all("conf/aliases", 1 << 20, &text) == 0);
		CHECK(aliases_parse("conf/aliases", text.data, text.len, &e,
		    &n, err, sizeof(err)) == 0);
		CHECK(n > 10);
		aliases_free_entries(e, n);
		buf_free(&text);
	}

	test_aliases_corrupt(dir);
	unlink(db);
	unlink(src);
	CHECK(rmdir(dir) == 0);
}

void
test_aliases(void)
{
	test_aliases_rejected();
	test_aliases_accepted();
	test_aliases_map();
}
