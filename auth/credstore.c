/*
 * credstore: the credential store's names, records, hashes and file (see
 * credstore.h).  ternctl writes the file, the root parent reads it, and
 * the vault verifies passwords with credstore_verify().  A record is a
 * version byte and typed records (lib/rec.h) decoded with every length
 * checked: a damaged store must not turn into a wrong login, so anything
 * malformed fails the whole read and the reader keeps what it had.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <crypt.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "auth/credstore.h"
#include "lib/rec.h"
#include "lib/util.h"

/* Tags of a record's fields, after the version byte. */
enum { CR_HASH = 1, CR_LOCKED, CR_CREATED, CR_CHANGED };

#define CRED_FILE_MAX	100000	/* accounts a store may hold */

/* ---- names -------------------------------------------------------------- */

static int
cred_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* A system account: [a-z_][a-z0-9_.-]*, at most 32 (useradd's rule). */
static const char *
cred_system_problem(const char *s)
{
	size_t i, n = strlen(s);

	if (n > 32)
		return "a system account name has at most 32 characters";
	if (!(s[0] == '_' || (s[0] >= 'a' && s[0] <= 'z')))
		return "a system account name starts with a letter or \"_\"";
	for (i = 1; i < n; i++)
		if (!cred_lower_alnum(s[i]) && !strchr("_.-", s[i]))
			return "a system account name has letters, digits and "
			    "\"_.-\" only";
	return NULL;
}

static const char *
cred_local_problem(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > CRED_LOCAL_MAX)
		return "the local part has 1 to 64 characters";
	if (s[0] == '.' || s[n - 1] == '.')
		return "the local part starts or ends with a dot";
	for (i = 0; i < n; i++) {
		if (!cred_lower_alnum(s[i]) && !strchr("._-", s[i]))
			return "the local part has letters, digits and \"._-\" "
			    "only";
		if (s[i] == '.' && s[i + 1] == '.')
			return "the local part has two dots in a row";
	}
	return NULL;
}

static const char *
cred_domain_problem(const char *d)
{
	size_t i, n = strlen(d), label = 0;

	if (n == 0 || n > 253)
		return "the domain has 1 to 253 characters";
	for (i = 0; i <= n; i++) {
		if (i == n || d[i] == '.') {
			if (label == 0 || label > 63)
				return "a domain label has 1 to 63 characters";
			if (d[i - 1] == '-' || d[i - label] == '-')
				return "a domain label starts or ends with "
				    "\"-\"";
			label = 0;
			continue;
		}
		if (!cred_lower_alnum(d[i]) && d[i] != '-')
			return "the domain has letters, digits, \"-\" and dots "
			    "only";
		label++;
	}
	return NULL;
}

int
credstore_name(const char *in, char *out, size_t outlen, const char **why)
{
	char name[CRED_NAME_MAX + 1], *at;
	const char *w;

	*why = NULL;
	if (str_copy(name, in, sizeof(name)) >= sizeof(name) || *in == '\0') {
		*why = "an account name has 1 to 320 characters";
		return -1;
	}
	str_lower(name);
	if ((at = strchr(name, '@')) == NULL)
		w = cred_system_problem(name);
	else if (strchr(at + 1, '@') != NULL)
		w = "an account name has at most one \"@\"";
	else if ((w = cred_local_problem(name, (size_t)(at - name))) == NULL)
		w = cred_domain_problem(at + 1);
	if (w == NULL && str_copy(out, name, outlen) >= outlen)
		w = "account name too long";
	*why = w;
	return w ? -1 : 0;
}

int
credstore_is_virtual(const char *name)
{
	return strchr(name, '@') != NULL;
}

/* ---- records ------------------------------------------------------------ */

/* What crypt(3) writes: "$id$...", from its base64 alphabet and "$=,". */
static int
cred_hash_ok(const char *h)
{
	size_t i, n = strlen(h);

	if (n < 4 || n > CRED_HASH_MAX || h[0] != '$')
		return 0;
	for (i = 0; i < n; i++)
		if (!((h[i] >= 'A' && h[i] <= 'Z') || (h[i] >= 'a' &&
		    h[i] <= 'z') || (h[i] >= '0' && h[i] <= '9') ||
		    strchr("./$=,-", h[i])))
			return 0;
	return 1;
}

void
credstore_encode(const struct cred *c, struct buf *b)
{
	buf_reset(b);
	buf_putc(b, CRED_VERSION);
	rec_put_str(b, CR_HASH, c->hash);
	rec_put_u64(b, CR_LOCKED, c->locked ? 1 : 0);
	rec_put_u64(b, CR_CREATED, (uint64_t)c->created);
	rec_put_u64(b, CR_CHANGED, (uint64_t)c->changed);
}

/* One field into c; each at most once (seen is a bit per tag). */
static int
cred_field(const struct rec *r, struct cred *c, unsigned *seen)
{
	uint64_t v;

	if (r->tag > CR_CHANGED)
		return 0;		/* a later field: not ours to judge */
	if (*seen & (1u << r->tag))
		return -1;
	*seen |= 1u << r->tag;
	if (r->tag == CR_HASH) {
		if (r->len > CRED_HASH_MAX || memchr(r->data, '\0', r->len))
			return -1;
		memcpy(c->hash, r->data, r->len);
		c->hash[r->len] = '\0';
		return cred_hash_ok(c->hash) ? 0 : -1;
	}
	if (rec_u64(r, &v) == -1 || v > INT64_MAX)
		return -1;
	if (r->tag == CR_LOCKED) {
		if (v > 1)
			return -1;
		c->locked = (int)v;
	} else if (r->tag == CR_CREATED)
		c->created = (int64_t)v;
	else
		c->changed = (int64_t)v;
	return 0;
}

int
credstore_decode(const char *name, const void *data, size_t len,
    struct cred *c)
{
	const unsigned char *p = data;
	struct rec_reader rd;
	struct rec r;
	const char *why;
	unsigned seen = 0;
	int n;

	memset(c, 0, sizeof(*c));
	if (credstore_name(name, c->name, sizeof(c->name), &why) == -1 ||
	    strcmp(c->name, name) != 0)
		return -1;	/* stored names are canonical */
	if (len < 1 || p[0] != CRED_VERSION)
		return -1;
	rec_reader_init(&rd, p + 1, len - 1);
	while ((n = rec_next(&rd, &r)) == 1)
		if (cred_field(&r, c, &seen) == -1)
			return -1;
	if (n == -1 || !(seen & (1u << CR_HASH)))
		return -1;
	return 0;
}

/* ---- hashes ------------------------------------------------------------- */

int
credstore_hash(const char *pass, char *out, size_t outlen)
{
	char setting[CRYPT_GENSALT_OUTPUT_SIZE];
	struct crypt_data *cd;
	const char *h;
	int r = -1;

	/* No random bytes given: libcrypt takes them from getrandom(2). */
	if (crypt_gensalt_rn("$y$", CRED_COST, NULL, 0, setting,
	    sizeof(setting)) == NULL)
		return -1;
	cd = xcalloc(1, sizeof(*cd));
	h = crypt_rn(pass, setting, cd, sizeof(*cd));
	if (h != NULL && cred_hash_ok(h) && str_copy(out, h, outlen) < outlen)
		r = 0;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return r;
}

int
credstore_verify(const char *pass, const char *hash)
{
	struct crypt_data *cd;
	const char *h;
	size_t n = strlen(hash);
	int ok = 0;

	cd = xcalloc(1, sizeof(*cd));
	h = crypt_rn(pass, hash, cd, sizeof(*cd));
	/* Lengths are no secret: one setting gives one length. */
	if (h != NULL && h[0] == '$' && strlen(h) == n &&
	    CRYPTO_memcmp(h, hash, n) == 0)
		ok = 1;
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return ok;
}

/* ---- the file ----------------------------------------------------------- */

/* Berkeley DB's own messages would go to stderr; our errors say enough. */
static void
cred_dberr(const DB_ENV *env, const char *pfx, const char *msg)
{
}

static int
cred_db_create(DB **db)
{
	int ret;

	if ((ret = db_create(db, NULL, 0)) == 0)
		(*db)->set_errcall(*db, cred_dberr);
	return ret;
}

static int
cred_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cred *)a)->name,
	    ((const struct cred *)b)->name);
}

struct cred *
credstore_find(struct cred *c, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(c[i].name, name) == 0)
			return &c[i];
	return NULL;
}

void
credstore_free(struct cred *c, size_t n)
{
	if (c == NULL)
		return;
	explicit_bzero(c, n * sizeof(*c));
	free(c);
}

/* Root's (or the reader's own), a regular file, nothing for the others. */
static const char *
cred_mode_problem(DB *db)
{
	struct stat st;
	int fd;

	if (db->fd(db, &fd) != 0 || fstat(fd, &st) == -1)
		return "cannot stat the open file";
	if (!S_ISREG(st.st_mode))
		return "not a regular file";
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return "not owned by root";
	if (st.st_mode & 077)
		return "group or others have access: it must be mode 0600 "
		    "(chmod 600)";
	return NULL;
}

/*
 * Room for more accounts: the array doubles (one more each time would
 * copy the whole array per account, quadratic in the store's size), and
 * the old copy, hashes and all, is wiped before it is freed.
 */
static struct cred *
cred_grow(struct cred *v, size_t n, size_t *cap)
{
	size_t ncap = *cap ? *cap * 2 : 64;
	struct cred *nv = xcalloc(ncap, sizeof(*nv));

	if (n)
		memcpy(nv, v, n * sizeof(*v));
	credstore_free(v, *cap);
	*cap = ncap;
	return nv;
}

/* Every entry of an open map, decoded; 0 or -1 with err. */
static int
cred_read_all(DB *db, const char *path, struct cred **out, size_t *nout,
    char *err, size_t errlen)
{
	char name[CRED_NAME_MAX + 1];
	struct cred *v = NULL;
	size_t n = 0, cap = 0;
	DBC *dbc;
	DBT k, d;
	int ret;

	if ((ret = db->cursor(db, NULL, &dbc, 0)) != 0) {
		snprintf(err, errlen, "%s: %s", path, db_strerror(ret));
		return -1;
	}
	memset(&k, 0, sizeof(k));
	memset(&d, 0, sizeof(d));
	while ((ret = dbc->get(dbc, &k, &d, DB_NEXT)) == 0) {
		if (n >= CRED_FILE_MAX || k.size == 0 || k.size > CRED_NAME_MAX ||
		    memchr(k.data, '\0', k.size) != NULL) {
			ret = EINVAL;
			break;
		}
		memcpy(name, k.data, k.size);
		name[k.size] = '\0';
		if (n == cap)
			v = cred_grow(v, n, &cap);
		if (credstore_decode(name, d.data, d.size, &v[n]) == -1) {
			snprintf(err, errlen, "%s: the record of \"%s\" is "
			    "damaged", path, name);
			dbc->close(dbc);
			credstore_free(v, cap);
			return -1;
		}
		n++;
	}
	dbc->close(dbc);
	if (ret != DB_NOTFOUND) {
		snprintf(err, errlen, "%s: %s", path, ret == EINVAL ?
		    "a damaged entry" : db_strerror(ret));
		credstore_free(v, cap);
		return -1;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), cred_cmp);
	*out = v;
	*nout = n;
	return 0;
}

int
credstore_read(const char *path, struct cred **out, size_t *nout, char *err,
    size_t errlen)
{
	const char *why;
	DB *db;
	int ret;

	*out = NULL;
	*nout = 0;
	if ((ret = cred_db_create(&db)) != 0) {
		snprintf(err, errlen, "%s: %s", path, db_strerror(ret));
		return -1;
	}
	ret = db->open(db, NULL, path, NULL, DB_BTREE, DB_RDONLY, 0);
	if (ret == ENOENT) {
		db->close(db, 0);
		return 0;	/* no store yet: no accounts */
	}
	if (ret != 0) {
		snprintf(err, errlen, "%s: %s", path, ret == EINVAL ?
		    "not a credentials map" : db_strerror(ret));
		db->close(db, 0);
		return -1;
	}
	if ((why = cred_mode_problem(db)) != NULL) {
		snprintf(err, errlen, "%s: %s", path, why);
		db->close(db, 0);
		return -1;
	}
	ret = cred_read_all(db, path, out, nout, err, errlen);
	db->close(db, 0);
	return ret;
}

static int
cred_put_all(DB *db, const struct cred *c, size_t n)
{
	struct buf val;
	DBT k, d;
	int ret = 0;
	size_t i;

	buf_init(&val);
	for (i = 0; i < n && ret == 0; i++) {
		credstore_encode(&c[i], &val);
		memset(&k, 0, sizeof(k));
		memset(&d, 0, sizeof(d));
		k.data = (void *)(uintptr_t)c[i].name;
		k.size = (u_int32_t)strlen(c[i].name);
		d.data = val.data;
		d.size = (u_int32_t)val.len;
		ret = db->put(db, NULL, &k, &d, DB_NOOVERWRITE);
	}
	if (val.cap)
		explicit_bzero(val.data, val.cap);
	buf_free(&val);
	return ret;
}

static int
cred_fsync_path(const char *path, int flags)
{
	int fd, r;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | flags)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int
cred_write_db(const char *tmp, const struct cred *c, size_t n, char *err,
    size_t errlen)
{
	DB *db;
	int ret, cret;

	if ((ret = cred_db_create(&db)) != 0) {
		snprintf(err, errlen, "%s: %s", tmp, db_strerror(ret));
		return -1;
	}
	/* Created 0600: the hashes are never readable by anyone else. */
	ret = db->open(db, NULL, tmp, NULL, DB_BTREE, DB_CREATE | DB_EXCL,
	    0600);
	if (ret == 0)
		ret = cred_put_all(db, c, n);
	cret = db->close(db, 0);
	if (ret == 0)
		ret = cret;
	if (ret != 0) {
		snprintf(err, errlen, "%s: %s", tmp, ret == DB_KEYEXIST ?
		    "an account twice" : db_strerror(ret));
		return -1;
	}
	if (chmod(tmp, 0600) == -1 || cred_fsync_path(tmp, 0) == -1) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	return 0;
}

static char *
cred_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

int
credstore_write(const char *path, const struct cred *c, size_t n, char *err,
    size_t errlen)
{
	struct buf tmp;
	char *dir;
	int r = -1;

	buf_init(&tmp);
	buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
	dir = cred_dirname(path);
	(void)unlink(tmp.data);
	if (cred_write_db(tmp.data, c, n, err, errlen) == -1)
		goto out;
	if (rename(tmp.data, path) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (cred_fsync_path(dir, O_DIRECTORY) == -1) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	if (r == -1)
		(void)unlink(tmp.data);
	free(dir);
	buf_free(&tmp);
	return r;
}

int
credstore_lock(const char *path, char *err, size_t errlen)
{
	struct buf lk;
	int fd;

	buf_init(&lk);
	buf_printf(&lk, "%s.lock", path);
	fd = open(lk.data, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1 || flock(fd, LOCK_EX) == -1) {
		snprintf(err, errlen, "%s: %s", lk.data, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	buf_free(&lk);
	return fd;
}
