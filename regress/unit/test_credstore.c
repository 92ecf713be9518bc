/*
 * test_credstore: account names (accepted and refused, canonical form),
 * the record encoding (round trip, versions, every malformed shape the
 * decoder must refuse), yescrypt hashes and their verification (and the
 * time one check costs, printed), and the file: written 0600, read back,
 * refused when others may read it.
 */
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include "auth/credstore.h"
#include "lib/rec.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_credstore(void);

static const struct {
	const char	*in, *canon;	/* canon NULL: refused */
} names[] = {
	{ "anna", "anna" },
	{ "Anna", "anna" },
	{ "_svc", "_svc" },
	{ "a.b-c_d", "a.b-c_d" },
	{ "anna@example.org", "anna@example.org" },
	{ "Anna.Smith@Example.ORG", "anna.smith@example.org" },
	{ "a-b_c.d@x", "a-b_c.d@x" },
	{ "1anna", NULL },		/* system names start with a letter */
	{ "", NULL },
	{ "anna bob", NULL },
	{ "anna/../root", NULL },
	{ "abcdefghijabcdefghijabcdefghijabc", NULL },	/* 33 */
	{ "anna+tag@example.org", NULL },
	{ "anna@@example.org", NULL },
	{ "@example.org", NULL },
	{ "anna@", NULL },
	{ ".anna@example.org", NULL },
	{ "anna.@example.org", NULL },
	{ "an..na@example.org", NULL },
	{ "an/na@example.org", NULL },
	{ "an%na@example.org", NULL },
	{ "anna@exa mple.org", NULL },
	{ "anna@-example.org", NULL },
	{ "anna@example-.org", NULL },
	{ "anna@example..org", NULL },
	{ "anna@.example.org", NULL },
	{ "anna@example.org.", NULL },
	{ "anna@a@example.org", NULL },
	{ "anna@exa_mple.org", NULL },
};

static void
test_credstore_names(void)
{
	char out[CRED_NAME_MAX + 1], longname[400];
	const char *why;
	size_t i;
	int r;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		r = credstore_name(names[i].in, out, sizeof(out), &why);
		if (names[i].canon) {
			CHECK(r == 0 && strcmp(out, names[i].canon) == 0);
			CHECK(why == NULL);
		} else
			CHECK(r == -1 && why != NULL);
		if ((r == 0) != (names[i].canon != NULL))
			fprintf(stderr, "credstore name: %s\n", names[i].in);
	}
	/* 65-byte local part; a 254-byte domain */
	memset(longname, 'a', 65);
	str_copy(longname + 65, "@example.org", sizeof(longname) - 65);
	CHECK(credstore_name(longname, out, sizeof(out), &why) == -1);
	CHECK(credstore_name(longname + 1, out, sizeof(out), &why) == 0);
	longname[0] = 'a';
	longname[1] = '@';
	for (i = 2; i < 2 + 254; i++)
		longname[i] = (i % 50 == 0) ? '.' : 'b';
	longname[i] = '\0';
	CHECK(credstore_name(longname, out, sizeof(out), &why) == -1);
	CHECK(credstore_is_virtual("anna@example.org"));
	CHECK(!credstore_is_virtual("anna"));
}

static void
test_credstore_records(void)
{
	struct cred c, d;
	struct buf b, x;

	memset(&c, 0, sizeof(c));
	str_copy(c.name, "anna@example.org", sizeof(c.name));
	str_copy(c.hash, "$y$j9T$abc$def", sizeof(c.hash));
	c.locked = 1;
	c.created = 1700000000;
	c.changed = 1700000123;
	buf_init(&b);
	buf_init(&x);
	credstore_encode(&c, &b);
	CHECK(b.len > 1 && (unsigned char)b.data[0] == CRED_VERSION);
	CHECK(credstore_decode("anna@example.org", b.data, b.len, &d) == 0);
	CHECK(strcmp(d.name, c.name) == 0 && strcmp(d.hash, c.hash) == 0);
	CHECK(d.locked == 1 && d.created == c.created &&
	    d.changed == c.changed);
	/* A stored name is canonical, and valid. */
	CHECK(credstore_decode("Anna@example.org", b.data, b.len, &d) == -1);
	CHECK(credstore_decode("an na", b.data, b.len, &d) == -1);
	/* Another version, empty, truncated at every length. */
	b.data[0] = CRED_VERSION + 1;
	CHECK(credstore_decode("anna@example.org", b.data, b.len, &d) == -1);
	b.data[0] = CRED_VERSION;
	CHECK(credstore_decode("anna@example.org", b.data, 0, &d) == -1);
	for (size_t n = 1; n < b.len; n++) {
		int r = credstore_decode("anna@example.org", b.data, n, &d);

		/* only a cut between two records can decode, hash included */
		if (r == 0)
			CHECK(strcmp(d.hash, c.hash) == 0);
	}
	CHECK(credstore_decode("anna@example.org", b.data, 1, &d) == -1);
	/* No hash; a hash twice; a bad hash; locked 2; a short number. */
	buf_putc(&x, CRED_VERSION);
	rec_put_u64(&x, 2, 0);
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put_str(&x, 1, "$y$j9T$abc$def");
	rec_put_str(&x, 1, "$y$j9T$abc$def");
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put_str(&x, 1, "$y$j9T$a c$def");
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put(&x, 1, "$y$j9T\0$abc", 11);
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put_str(&x, 1, "$y$j9T$abc$def");
	rec_put_u64(&x, 2, 2);
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put_str(&x, 1, "$y$j9T$abc$def");
	rec_put(&x, 3, "\0\0\0\1", 4);
	CHECK(credstore_decode("anna", x.data, x.len, &d) == -1);
	/* A field of a later release is skipped; defaults are unlocked, 0. */
	buf_reset(&x);
	buf_putc(&x, CRED_VERSION);
	rec_put_str(&x, 1, "$y$j9T$abc$def");
	rec_put_str(&x, 77, "future");
	CHECK(credstore_decode("anna", x.data, x.len, &d) == 0);
	CHECK(d.locked == 0 && d.created == 0 && strcmp(d.name, "anna") == 0);
	buf_free(&b);
	buf_free(&x);
}

static double
ms_since(const struct timespec *a)
{
	struct timespec b;

	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) * 1e3 +
	    (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

static void
test_credstore_hashes(void)
{
	char h1[CRED_HASH_MAX + 1], h2[CRED_HASH_MAX + 1];
	struct timespec t0;
	double ms;
	int i;

	CHECK(credstore_hash("Tern-test-Pw-9f3Kq", h1, sizeof(h1)) == 0);
	CHECK(credstore_hash("Tern-test-Pw-9f3Kq", h2, sizeof(h2)) == 0);
	CHECK(strncmp(h1, "$y$j9T$", 7) == 0);	/* yescrypt, cost 5 */
	CHECK(strcmp(h1, h2) != 0);		/* a salt each */
	CHECK(credstore_hash("x", h2, 20) == -1);	/* no room */
	CHECK(credstore_verify("Tern-test-Pw-9f3Kq", h1) == 1);
	CHECK(credstore_verify("Tern-test-Pw-9f3Kr", h1) == 0);
	CHECK(credstore_verify("", h1) == 0);
	CHECK(credstore_verify("Tern-test-Pw-9f3Kq", "$y$garbage") == 0);
	CHECK(credstore_verify("Tern-test-Pw-9f3Kq", "*") == 0);
	CHECK(credstore_verify("Tern-test-Pw-9f3Kq", "") == 0);
	h1[strlen(h1) - 1] ^= 1;		/* one bit of the hash */
	CHECK(credstore_verify("Tern-test-Pw-9f3Kq", h1) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < 5; i++)
		(void)credstore_verify("Tern-test-Pw-9f3Kq", h2);
	ms = ms_since(&t0) / 5;
	printf("credstore: one password check (yescrypt cost %d) takes "
	    "%.1f ms\n", CRED_COST, ms);
	CHECK(ms > 0.5);	/* a real key derivation, not a shortcut */
}

static void
test_credstore_file(void)
{
	char dir[] = "/tmp/tern-cred-XXXXXX", path[256], err[512];
	struct cred c[3], *got = NULL;
	struct stat st;
	size_t n = 99;
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/credentials.db", dir);
	CHECK(credstore_read(path, &got, &n, err, sizeof(err)) == 0);
	CHECK(n == 0 && got == NULL);		/* missing: empty store */
	memset(c, 0, sizeof(c));
	str_copy(c[0].name, "zed@example.org", sizeof(c[0].name));
	str_copy(c[1].name, "anna", sizeof(c[1].name));
	str_copy(c[2].name, "bob@example.org", sizeof(c[2].name));
	str_copy(c[0].hash, "$y$j9T$aaa$bbb", sizeof(c[0].hash));
	str_copy(c[1].hash, "$y$j9T$ccc$ddd", sizeof(c[1].hash));
	str_copy(c[2].hash, "$y$j9T$eee$fff", sizeof(c[2].hash));
	c[2].locked = 1;
	umask(0);	/* the store is 0600 whatever the umask says */
	CHECK(credstore_write(path, c, 3, err, sizeof(err)) == 0);
	umask(022);
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(credstore_read(path, &got, &n, err, sizeof(err)) == 0);
	CHECK(n == 3);
	if (n == 3) {
		CHECK(strcmp(got[0].name, "anna") == 0);	/* sorted */
		CHECK(strcmp(got[1].name, "bob@example.org") == 0 &&
		    got[1].locked == 1);
		CHECK(strcmp(got[2].hash, "$y$j9T$aaa$bbb") == 0);
		CHECK(credstore_find(got, n, "bob@example.org") == &got[1]);
		CHECK(credstore_find(got, n, "carl") == NULL);
	}
	credstore_free(got, n);
	/* An account twice is refused and the old file stays. */
	str_copy(c[1].name, "zed@example.org", sizeof(c[1].name));
	CHECK(credstore_write(path, c, 3, err, sizeof(err)) == -1);
	CHECK(credstore_read(path, &got, &n, err, sizeof(err)) == 0 && n == 3);
	credstore_free(got, n);
	/* Others may read it: refused, with the reason. */
	CHECK(chmod(path, 0640) == 0);
	CHECK(credstore_read(path, &got, &n, err, sizeof(err)) == -1);
	CHECK(strstr(err, "0600") != NULL);
	CHECK(chmod(path, 0600) == 0);
	/* Not a map at all. */
	CHECK(unlink(path) == 0);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	CHECK(fd >= 0 && write(fd, "anna:x\n", 7) == 7);
	close(fd);
	CHECK(credstore_read(path, &got, &n, err, sizeof(err)) == -1);
	fd = credstore_lock(path, err, sizeof(err));
	CHECK(fd >= 0);
	close(fd);
	snprintf(err, sizeof(err), "rm -rf '%s'", dir);
	CHECK(system(err) == 0);
}

void
test_credstore(void)
{
	test_credstore_names();
	test_credstore_records();
	test_credstore_hashes();
	test_credstore_file();
}
