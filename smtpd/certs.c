/*
 * certs: the server certificate and key, on the root parent's side.  The
 * key file of a real certificate is typically root's alone (certbot's
 * privkey.pem is mode 0600), and the smtp process runs as `tern`: so the
 * parent reads the chain and the key that tls-cert and tls-key name, checks
 * with the smtp process's own loader (smtpd/tls.c) that they load and
 * belong together, and keeps their PEM text to send to every smtp process
 * it starts (IMSG_P_TLS), which loads it from memory and wipes it.  A
 * renewed certificate is picked up by a reload (SIGHUP starts a new smtp
 * process); a bad one is refused with file and line, and the old one stays.
 *
 * Without tls-cert, the parent makes a self-signed certificate for the
 * hostname at the first start (a P-256 key: quick to make and accepted by
 * every TLS 1.2 client), next to the SRS key in a directory only root
 * enters, mode 0600, and reuses it afterwards, so that a fresh install
 * offers STARTTLS at once.  Runs in the parent only; parses no network
 * input.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "lib/ipc.h"
#include "lib/rec.h"
#include "smtpd/certs.h"
#include "smtpd/tls.h"

#define CERTS_FILE_MAX	(64 * 1024)	/* a long chain is 10 KiB */
#define CERTS_SELF_CERT	"selfsigned-cert.pem"
#define CERTS_SELF_KEY	"selfsigned-key.pem"
#define CERTS_SELF_DAYS	3650
#define CERTS_SELF_RENEW (30L * 86400)	/* made again this long before expiry */

void
certs_init(struct certs *cs)
{
	memset(cs, 0, sizeof(*cs));
	buf_init(&cs->chain);
	buf_init(&cs->key);
}

static void
certs_wipe(struct buf *b)
{
	if (b->data)
		explicit_bzero(b->data, b->cap);
	buf_free(b);
}

void
certs_free(struct certs *cs)
{
	certs_wipe(&cs->chain);
	certs_wipe(&cs->key);
	certs_init(cs);
}

/*
 * A whole (small, regular) file into one allocation: no copies of a key
 * left in freed buffers or on the stack.  0, or -1 with errno.
 */
static int
certs_read(const char *path, struct buf *out)
{
	struct stat st;
	size_t size, off = 0;
	ssize_t n;
	int fd, e;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1)
		return -1;
	if (fstat(fd, &st) == -1)
		goto fail;
	if (!S_ISREG(st.st_mode)) {
		errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto fail;
	}
	if (st.st_size > CERTS_FILE_MAX) {
		errno = EFBIG;
		goto fail;
	}
	size = (size_t)st.st_size;
	certs_wipe(out);
	out->data = xmalloc(size + 1);
	out->cap = size + 1;
	while (off < size) {
		n = read(fd, out->data + off, size - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto fail;
		if (n == 0)
			break;
		off += (size_t)n;
	}
	out->len = off;
	out->data[off] = '\0';
	close(fd);
	return 0;
fail:
	e = errno;
	close(fd);
	errno = e;
	return -1;
}

static int
certs_file_error(const struct conf *c, enum knob_id id, const char *path,
    char *err, size_t errlen)
{
	snprintf(err, errlen, "%s:%d: %s %s: %s", c->file, c->v[id].line,
	    knob_defs[id].name, path, errno == EFBIG ? "larger than 64 KiB" :
	    errno == EINVAL ? "not a regular file" : strerror(errno));
	return -1;
}

/* Does the pair load, as the smtp process will load it?  0 or -1. */
static int
certs_check(const struct conf *c, struct certs *cs, char *err, size_t errlen)
{
	const char *cert = conf_str(c, K_TLS_CERT), *key = conf_str(c, K_TLS_KEY);
	enum knob_id id = K_TLS_CERT;
	char why[512];
	SSL_CTX *ctx;
	int bad;

	ctx = tls_ctx_new(cs->chain.data, cs->chain.len, cs->key.data,
	    cs->key.len, &bad, why, sizeof(why));
	if (ctx == NULL) {
		if (bad == TLS_BAD_KEY && key != NULL)
			id = K_TLS_KEY;
		snprintf(err, errlen, "%s:%d: %s %s: %s%s", c->file,
		    c->v[id].line, knob_defs[id].name, id == K_TLS_KEY ? key :
		    cert, why, bad == TLS_BAD_KEY && key == NULL ?
		    " (tls-key names the key's file when it is not in "
		    "tls-cert)" : "");
		return -1;
	}
	cs->expired = tls_ctx_expired(ctx);
	SSL_CTX_free(ctx);
	return 0;
}

int
certs_load(const struct conf *c, struct certs *cs, char *err, size_t errlen)
{
	const char *cert = conf_str(c, K_TLS_CERT), *key = conf_str(c, K_TLS_KEY);

	if (cert == NULL)
		return 0;
	if (certs_read(cert, &cs->chain) == -1)
		return certs_file_error(c, K_TLS_CERT, cert, err, errlen);
	if (key == NULL)
		buf_append(&cs->key, cs->chain.data, cs->chain.len);
	else if (certs_read(key, &cs->key) == -1)
		return certs_file_error(c, K_TLS_KEY, key, err, errlen);
	if (certs_check(c, cs, err, errlen) == -1)
		return -1;
	snprintf(cs->origin, sizeof(cs->origin), "%s%s%s", cert,
	    key ? " " : "", key ? key : "");
	return 0;
}

/* ---- the self-signed certificate --------------------------------------- */

static int
certs_self_path(const struct conf *c, const char *name, char *out,
    size_t len)
{
	const char *srs = conf_str(c, K_SRS_SECRET);
	const char *slash = strrchr(srs, '/');
	int n;

	n = snprintf(out, len, "%.*s/%s", slash ? (int)(slash - srs) : 1,
	    slash ? srs : ".", name);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Made for this hostname, and good for a while yet? */
static int
certs_self_usable(const struct conf *c, const struct certs *cs)
{
	char cn[256] = "", why[512];
	time_t soon = time(NULL) + CERTS_SELF_RENEW;
	SSL_CTX *ctx;
	X509 *x;
	int bad, ok;

	ctx = tls_ctx_new(cs->chain.data, cs->chain.len, cs->key.data,
	    cs->key.len, &bad, why, sizeof(why));
	if (ctx == NULL)
		return 0;
	x = SSL_CTX_get0_certificate(ctx);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
	    sizeof(cn));
	ok = strcmp(cn, conf_str(c, K_HOSTNAME)) == 0 &&
	    X509_cmp_time(X509_get0_notAfter(x), &soon) > 0;
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

static int
certs_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v;
	X509_EXTENSION *e;
	int r;

	X509V3_set_ctx_nodb(&v);
	X509V3_set_ctx(&v, x, x, NULL, NULL, 0);
	if ((e = X509V3_EXT_conf_nid(NULL, &v, nid, value)) == NULL)
		return -1;
	r = X509_add_ext(x, e, -1);
	X509_EXTENSION_free(e);
	return r == 1 ? 0 : -1;
}

/* The certificate for host, signed by its own key. */
static X509 *
certs_self_x509(EVP_PKEY *pk, const char *host)
{
	unsigned char serial[16];
	char san[300];
	X509_NAME *name;
	BIGNUM *bn = NULL;
	X509 *x;

	if ((x = X509_new()) == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
		goto fail;
	serial[0] &= 0x7f;	/* positive */
	snprintf(san, sizeof(san), "DNS:%s", host);	/* LDH: conf checked */
	name = X509_get_subject_name(x);
	if (X509_set_version(x, 2) != 1 ||
	    (bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
	    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x),
	    (long)CERTS_SELF_DAYS * 86400) == NULL ||
	    X509_set_pubkey(x, pk) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	    (const unsigned char *)host, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 ||
	    certs_ext(x, NID_basic_constraints, "critical,CA:FALSE") == -1 ||
	    certs_ext(x, NID_subject_alt_name, san) == -1 ||
	    certs_ext(x, NID_ext_key_usage, "serverAuth") == -1 ||
	    certs_ext(x, NID_subject_key_identifier, "hash") == -1 ||
	    X509_sign(x, pk, EVP_sha256()) == 0)
		goto fail;
	BN_free(bn);
	return x;
fail:
	BN_free(bn);
	X509_free(x);
	return NULL;
}

static void
certs_bio_take(BIO *b, struct buf *out)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);

	if (n > 0)
		buf_append(out, p, (size_t)n);
}

/* A new key and certificate, as PEM in cs.  0 or -1. */
static int
certs_self_make(const struct conf *c, struct certs *cs)
{
	EVP_PKEY *pk;
	X509 *x = NULL;
	BIO *kb = NULL, *cb = NULL;
	int r = -1;

	if ((pk = EVP_EC_gen("P-256")) == NULL ||
	    (x = certs_self_x509(pk, conf_str(c, K_HOSTNAME))) == NULL ||
	    (kb = BIO_new(BIO_s_secmem())) == NULL ||
	    (cb = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(kb, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_X509(cb, x) != 1)
		goto done;
	certs_bio_take(kb, &cs->key);
	certs_bio_take(cb, &cs->chain);
	r = cs->key.len && cs->chain.len ? 0 : -1;
done:
	BIO_free(kb);
	BIO_free(cb);
	X509_free(x);
	EVP_PKEY_free(pk);
	return r;
}

/* Written whole under a temporary name, synced, renamed into place. */
static int
certs_write(const char *path, const struct buf *b)
{
	char tmp[4200];
	int fd, e;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600)) == -1)
		return -1;
	if (fd_write_all(fd, b->data, b->len) == -1 || fsync(fd) == -1) {
		e = errno;
		close(fd);
		unlink(tmp);
		errno = e ? e : EIO;
		return -1;
	}
	close(fd);
	return rename(tmp, path);
}

static int
certs_sync_dir(const char *file)
{
	char dir[4200], *slash;
	int fd, r;

	str_copy(dir, file, sizeof(dir));
	if ((slash = strrchr(dir, '/')) == NULL)
		return 0;
	*slash = '\0';
	if ((fd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY |
	    O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

int
certs_selfsigned(const struct conf *c, struct certs *cs, char *err,
    size_t errlen)
{
	char cert[4096], key[4096];

	certs_free(cs);
	if (certs_self_path(c, CERTS_SELF_CERT, cert, sizeof(cert)) == -1 ||
	    certs_self_path(c, CERTS_SELF_KEY, key, sizeof(key)) == -1) {
		snprintf(err, errlen, "self-signed certificate: path too long");
		return -1;
	}
	cs->selfsigned = 1;
	snprintf(cs->origin, sizeof(cs->origin), "%s %s", cert, key);
	if (certs_read(cert, &cs->chain) == 0 && certs_read(key, &cs->key) == 0
	    && certs_self_usable(c, cs))
		return 0;
	certs_wipe(&cs->chain);
	certs_wipe(&cs->key);
	if (certs_self_make(c, cs) == -1) {
		snprintf(err, errlen, "cannot make a self-signed certificate: "
		    "%s", tls_error_string(ERR_peek_last_error()));
		ERR_clear_error();
		return -1;
	}
	/* The key first: a certificate on disk means its key is there. */
	if (certs_write(key, &cs->key) == -1 ||
	    certs_write(cert, &cs->chain) == -1 || certs_sync_dir(cert) == -1) {
		snprintf(err, errlen, "self-signed certificate %s: %s", cert,
		    strerror(errno));
		return -1;
	}
	cs->made = 1;
	return 0;
}

void
certs_records(const struct certs *cs, struct buf *b)
{
	rec_put(b, T_CERT, cs->chain.data, cs->chain.len);
	rec_put(b, T_KEY, cs->key.data, cs->key.len);
}
