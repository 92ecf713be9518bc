/*
 * ternctl dkim keygen DOMAIN SELECTOR [rsa|ed25519]: make a DKIM signing
 * key (RSA-2048 by default, or Ed25519) under the config's dkim-key-dir,
 * readable by its owner alone (the root parent reads it; the vault gets
 * it from the parent), and print the DNS TXT record to publish, in
 * zone-file syntax, with the dkim-key line for the config.  It never
 * overwrites a key: a selector names one key for as long as it is
 * published.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "auth/dkim.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/util.h"

#define DKIM_TXT_CHUNK	250	/* characters per TXT string (<= 255) */

static int
dkim_name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	return n > 0 && n <= max && s[0] != '.' && s[0] != '-' &&
	    s[n - 1] != '.' && strstr(s, "..") == NULL &&
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789-_.") == n;
}

/* The record, its value cut into strings a zone file accepts (also for
 * ternctl dns). */
void
dkim_print_record(const char *domain, const char *selector, const char *txt)
{
	size_t i, n = strlen(txt);

	printf("%s._domainkey.%s. IN TXT (", selector, domain);
	for (i = 0; i < n; i += DKIM_TXT_CHUNK)
		printf("%s\"%.*s\"", i ? "\n\t" : " ",
		    (int)(n - i < DKIM_TXT_CHUNK ? n - i : DKIM_TXT_CHUNK),
		    txt + i);
	printf(" )\n");
}

static int
dkim_keygen(const struct conf *c, const char *domain, const char *selector,
    const char *type)
{
	const char *dir = conf_str(c, K_DKIM_KEY_DIR);
	struct buf pem, txt, path;
	int alg, fd, rv = 1;

	if (!dkim_name_ok(domain, DKIM_DOMAIN_MAX) || strchr(domain, '.') ==
	    NULL || strchr(domain, '_')) {
		fprintf(stderr, "ternctl: bad domain \"%s\"\n", domain);
		return 1;
	}
	if (!dkim_name_ok(selector, DKIM_SELECTOR_MAX)) {
		fprintf(stderr, "ternctl: bad selector \"%s\"\n", selector);
		return 1;
	}
	if (strcmp(type, "rsa") == 0)
		alg = DKIM_ALG_RSA;
	else if (strcmp(type, "ed25519") == 0)
		alg = DKIM_ALG_ED25519;
	else {
		fprintf(stderr, "ternctl: key type is rsa or ed25519\n");
		return 1;
	}
	if (mkdir(dir, 0700) == -1 && errno != EEXIST) {
		fprintf(stderr, "ternctl: %s: %s\n", dir, strerror(errno));
		return 1;
	}
	buf_init(&pem);
	buf_init(&txt);
	buf_init(&path);
	buf_printf(&path, "%s/%s.%s.key", dir, domain, selector);
	str_lower(path.data + strlen(dir));
	if (dkim_key_generate(alg, &pem, &txt) == -1) {
		fprintf(stderr, "ternctl: key generation failed\n");
		goto done;
	}
	/* Created 0600 and never replaced: O_EXCL, no symlink followed. */
	if ((fd = open(path.data, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
	    O_CLOEXEC, 0600)) == -1) {
		fprintf(stderr, "ternctl: %s: %s\n", path.data,
		    errno == EEXIST ? "exists (choose a new selector)" :
		    strerror(errno));
		goto done;
	}
	if (fd_write_all(fd, pem.data, pem.len) == -1 || fsync(fd) == -1 ||
	    close(fd) == -1) {
		fprintf(stderr, "ternctl: %s: %s\n", path.data,
		    strerror(errno));
		unlink(path.data);
		goto done;
	}
	printf("; the key: %s (mode 0600)\n", path.data);
	printf("; add to the config, then reload ternd:\n");
	printf(";   dkim-key %s %s %s\n", domain, selector, path.data);
	printf("; publish in the DNS zone of %s:\n", domain);
	dkim_print_record(domain, selector, txt.data);
	rv = 0;
done:
	if (pem.data)
		explicit_bzero(pem.data, pem.cap);
	buf_free(&pem);
	buf_free(&txt);
	buf_free(&path);
	return rv;
}

/* ternctl dkim keygen DOMAIN SELECTOR [rsa|ed25519] */
int
dkim_main(const struct conf *c, int argc, char *argv[])
{
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "keygen") == 0)
		return dkim_keygen(c, argv[2], argv[3], argc == 5 ? argv[4] :
		    "rsa");
	fprintf(stderr, "usage: ternctl dkim keygen DOMAIN SELECTOR "
	    "[rsa|ed25519]\n");
	return 1;
}
