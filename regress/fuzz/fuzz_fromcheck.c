/*
 * fuzz_fromcheck: the From: ownership decision (smtpd/fromcheck.c) on
 * arbitrary field text, for two accounts of a fixed configuration.
 * - It never fails open: when it allows a field, every <...> in it (past
 *   quoted strings and comments, read here by a separate small scanner)
 *   that holds a plain address holds one the account owns.
 * - For fields this harness can judge on its own (letters, digits and
 *   . + - _ @ space , < > only; each element "addr" or "name <addr>"), a
 *   simple re-implementation of the rules (own address, +extension,
 *   allow-sender grants, local domains for a bare account name) must
 *   reach the same allowed/refused.
 * - It is deterministic, and bad is always a bounded string.
 * The first byte picks the account and how the rest is read: as bytes,
 * or each byte choosing a fragment (addresses, specials) from a table.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "smtpd/fromcheck.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char ff_text[] =
    "local-domain \"example.org\"\nlocal-domain \"league.test\"\n"
    "listen msa 127.0.0.1 port 587\n"
    "allow-sender anna@example.org board@league.test @news.example\n"
    "allow-sender bob info@example.org\n";

static const char *const ff_frag[] = {
	"anna", "bob", "@", "example.org", "league.test", "news.example",
	"evil.example", "+x", ".", " ", ",", "<", ">", "\"", "(", ")", "\\",
	":", ";", "Anna", "board", "info", "ANNA", "EXAMPLE.ORG", "\t",
	"=?utf-8?q?x?=", "[192.0.2.1]", "x", "sub.", "-", "\r\n ", "\xc3\xa9",
};

/* The rules, written again: may account send as addr (lower case)? */
static int
ff_owned(const char *account, const char *addr)
{
	char a[600], *at, *plus;

	if (strlen(addr) >= sizeof(a))
		return 0;
	for (size_t i = 0; addr[i]; i++)
		a[i] = (char)tolower((unsigned char)addr[i]);
	a[strlen(addr)] = '\0';
	at = strchr(a, '@');
	if (strcmp(account, "anna@example.org") == 0 &&
	    (strcmp(a, "board@league.test") == 0 ||
	    strcmp(at, "@news.example") == 0))
		return 1;
	if (strcmp(account, "bob") == 0 && strcmp(a, "info@example.org") == 0)
		return 1;
	if ((plus = memchr(a, '+', (size_t)(at - a))) != NULL)
		memmove(plus, at, strlen(at) + 1);
	if (strcmp(account, "anna@example.org") == 0)
		return strcmp(a, "anna@example.org") == 0;
	return strcmp(a, "bob@example.org") == 0 ||
	    strcmp(a, "bob@league.test") == 0;
}

/*
 * A plain address: dot-atoms of [A-Za-z0-9+_-] around one '@', a local
 * part of at most 64, labels of at most 63 not starting or ending with
 * '-', a domain with a dot.  1 yes, 0 no.
 */
static int
ff_plain(const char *s, size_t n)
{
	size_t i, at = n, lab = 0, dots = 0;

	for (i = 0; i < n; i++)
		if (s[i] == '@') {
			if (at != n)
				return 0;
			at = i;
		}
	if (at == n || at == 0 || at > 64 || at + 1 == n || n - at > 200)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (c == '.' || c == '@' || i + 1 == n) {
			size_t end = (c == '.' || c == '@') ? i : i + 1;

			if (end == lab)
				return 0;
			if (i > at && (s[lab] == '-' || s[end - 1] == '-' ||
			    end - lab > 63))
				return 0;
			if (c == '.' && i > at)
				dots++;
			lab = i + 1;
		} else if (!isalnum((unsigned char)c) && !(i < at &&
		    (c == '+' || c == '_' || c == '-')) && !(i > at && c == '-'))
			return 0;
	}
	return dots > 0;
}

static char *
ff_trim(char *s, size_t *n)
{
	while (*n > 0 && s[0] == ' ') {
		s++;
		(*n)--;
	}
	while (*n > 0 && s[*n - 1] == ' ')
		(*n)--;
	return s;
}

/*
 * The simple judge: 1 allowed, 0 refused, -1 cannot judge.
 */
static int
ff_judge(const char *account, const char *f, size_t len)
{
	char addr[600];
	size_t i, start = 0, n, count = 0;
	int verdict = 1;

	for (i = 0; i < len; i++)
		if (!isalnum((unsigned char)f[i]) &&
		    (f[i] == '\0' || strchr(".+-_@ ,<>", f[i]) == NULL))
			return -1;
	for (i = 0; i <= len; i++) {
		char *e, *lt, *gt;

		if (i < len && f[i] != ',')
			continue;
		n = i - start;
		if (n >= sizeof(addr))
			return -1;
		memcpy(addr, f + start, n);
		addr[n] = '\0';
		start = i + 1;
		e = ff_trim(addr, &n);
		e[n] = '\0';
		if (n == 0)
			continue;
		lt = strchr(e, '<');
		gt = strchr(e, '>');
		if (lt != NULL) {
			if (gt == NULL || gt != e + n - 1 || strchr(lt + 1, '<') ||
			    strchr(e, '>') != gt)
				return 0;	/* malformed: refused */
			e = lt + 1;
			n = (size_t)(gt - e);
			e = ff_trim(e, &n);
		} else if (gt != NULL)
			return 0;
		/* "a @b" is one address, "a b@c" none: not judged here */
		if (memchr(e, ' ', n) != NULL)
			return -1;
		if (++count > FROM_ADDRS_MAX)
			return 0;
		if (!ff_plain(e, n))
			return -1;
		e[n] = '\0';
		if (!ff_owned(account, e))
			verdict = 0;
	}
	return verdict;
}

/* Past quoted strings and comments: is every plain <addr> owned? */
static int
ff_angles_owned(const char *account, const char *f, size_t len)
{
	char a[600];
	size_t i, n = 0;
	int depth = 0, quoted = 0, in = 0;

	for (i = 0; i < len; i++) {
		char c = f[i];

		if (c == '\\' && (quoted || depth)) {
			i++;
			continue;
		}
		if (quoted) {
			quoted = c != '"';
			continue;
		}
		if (depth) {
			depth += c == '(' ? 1 : c == ')' ? -1 : 0;
			continue;
		}
		if (c == '"' && !in)
			quoted = 1;
		else if (c == '(')
			depth = 1;
		else if (c == '<') {
			in = 1;
			n = 0;
		} else if (c == '>' && in) {
			in = 0;
			if (ff_plain(a, n)) {
				a[n] = '\0';
				if (!ff_owned(account, a))
					return 0;
			}
		} else if (in && c != ' ' && c != '\t' && c != '\r' &&
		    c != '\n' && n + 1 < sizeof(a))
			a[n++] = c;
	}
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct conf *c;
	static const char *const accounts[] = { "anna@example.org", "bob" };
	char *f, bad[64], bad2[64];
	const char *account;
	size_t n = 0, i, nfrag = sizeof(ff_frag) / sizeof(ff_frag[0]);
	enum from_verdict v;
	int judge;

	if (c == NULL) {
		char err[256];

		if ((c = conf_parse("f.conf", ff_text, strlen(ff_text), "/",
		    err, sizeof(err))) == NULL)
			abort();
	}
	if (size < 1)
		return 0;
	account = accounts[data[0] & 1];
	if ((f = malloc(size * 16 + 1)) == NULL)
		return 0;
	for (i = 1; i < size; i++) {
		if (data[0] & 2) {
			const char *p = ff_frag[data[i] % nfrag];

			memcpy(f + n, p, strlen(p));
			n += strlen(p);
		} else
			f[n++] = (char)data[i];
	}
	f[n] = '\0';
	memset(bad, 'z', sizeof(bad));
	v = fromcheck_field(c, account, f, n, bad, sizeof(bad));
	if (memchr(bad, '\0', sizeof(bad)) == NULL)
		abort();
	if (fromcheck_field(c, account, f, n, bad2, sizeof(bad2)) != v ||
	    strcmp(bad, bad2) != 0)
		abort();
	if (v == FROM_OK && !ff_angles_owned(account, f, n))
		abort();
	judge = ff_judge(account, f, n);
	if (judge >= 0 && judge != (v == FROM_OK))
		abort();
	free(f);
	return 0;
}
