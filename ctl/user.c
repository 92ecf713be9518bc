/*
 * user: `ternctl user add|passwd|del|lock|unlock NAME` and `ternctl user
 * list`, the credential store's one writer (auth/credstore.c), run by
 * root.  A new password is the first line of standard input when that is
 * not a terminal, else it is asked twice with echo off; a password
 * libpwquality judges weak is refused with its reason.  Writers take the
 * store's lock for the whole read, change and write; readers need none,
 * since the file is replaced whole.  After a change the running daemon is
 * told to read the store again.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <pwquality.h>

#include "auth/credstore.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/util.h"

enum user_op { U_ADD, U_PASSWD, U_DEL, U_LOCK, U_UNLOCK, U__LIST };

static const char *const user_ops[] = {
	[U_ADD] = "add", [U_PASSWD] = "passwd", [U_DEL] = "del",
	[U_LOCK] = "lock", [U_UNLOCK] = "unlock",
};

static struct termios	user_saved;
static volatile sig_atomic_t user_echo_off;

/* Interrupted while echo is off: give the terminal back first. */
static void
user_signal(int sig)
{
	if (user_echo_off)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &user_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/*
 * One line from fd, byte by byte (no stdio buffer keeps a copy), without
 * its CR LF.  0 ok; -1 at end of input before any byte or for a line
 * longer than len - 1 (then *why says so).
 */
static int
user_getline(int fd, char *out, size_t len, const char **why)
{
	size_t n = 0;
	ssize_t r;
	char ch;
	int over = 0;

	*why = "no password given";
	for (;;) {
		r = read(fd, &ch, 1);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (n == 0 && !over)
				return -1;
			break;
		}
		if (ch == '\n')
			break;
		if (n + 1 < len)
			out[n++] = ch;
		else
			over = 1;
	}
	out[n] = '\0';
	if (n > 0 && out[n - 1] == '\r')
		out[--n] = '\0';
	if (over) {
		explicit_bzero(out, len);
		*why = "the password is longer than 1024 bytes";
		return -1;
	}
	return 0;
}

static int
user_ask(const char *prompt, char *out, size_t len, const char **why)
{
	struct termios t;
	int r;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(STDIN_FILENO, &user_saved) == -1) {
		*why = strerror(errno);
		return -1;
	}
	t = user_saved;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK);
	t.c_lflag |= ECHONL;
	user_echo_off = 1;
	signal(SIGINT, user_signal);
	signal(SIGTERM, user_signal);
	signal(SIGTSTP, SIG_IGN);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &t);
	r = user_getline(STDIN_FILENO, out, len, why);
	tcsetattr(STDIN_FILENO, TCSAFLUSH, &user_saved);
	user_echo_off = 0;
	return r;
}

/* The new password, from standard input or asked twice. */
static int
user_password(const char *name, char *pass, size_t len)
{
	char again[CRED_PASS_MAX + 2], prompt[400];
	const char *why;
	int r;

	if (!isatty(STDIN_FILENO))
		r = user_getline(STDIN_FILENO, pass, len, &why);
	else {
		snprintf(prompt, sizeof(prompt), "New password for %s: ", name);
		r = user_ask(prompt, pass, len, &why);
		if (r == 0 && (r = user_ask("Retype the password: ", again,
		    sizeof(again), &why)) == 0 && strcmp(pass, again) != 0) {
			why = "the passwords differ";
			r = -1;
		}
		explicit_bzero(again, sizeof(again));
	}
	if (r == 0 && pass[0] == '\0') {
		why = "the password is empty";
		r = -1;
	}
	if (r == 0 && strlen(pass) > CRED_PASS_MAX) {
		why = "the password is longer than 1024 bytes";
		r = -1;
	}
	if (r == -1) {
		explicit_bzero(pass, len);
		fprintf(stderr, "ternctl: %s\n", why);
	}
	return r;
}

/*
 * libpwquality's judgement, with the system's pwquality.conf, against the
 * account's user name (the local part of a virtual account).
 */
static int
user_quality(const char *name, const char *pass)
{
	char user[CRED_NAME_MAX + 1], msg[PWQ_MAX_ERROR_MESSAGE_LEN];
	pwquality_settings_t *pq;
	void *aux = NULL;
	const char *text;
	char *at;
	int rc;

	str_copy(user, name, sizeof(user));
	if ((at = strchr(user, '@')) != NULL)
		*at = '\0';
	if ((pq = pwquality_default_settings()) == NULL) {
		fprintf(stderr, "ternctl: libpwquality: out of memory\n");
		return -1;
	}
	(void)pwquality_read_config(pq, NULL, &aux);	/* defaults without */
	aux = NULL;
	rc = pwquality_check(pq, pass, NULL, user, &aux);
	pwquality_free_settings(pq);
	if (rc >= 0)
		return 0;
	text = pwquality_strerror(msg, sizeof(msg), rc, aux);
	fprintf(stderr, "ternctl: password refused: %s%s\n", text,
	    strstr(text, "loading dictionary") ? " (is cracklib-runtime "
	    "installed?)" : "");
	return -1;
}

/* What `add` needs beyond a valid name: the account or the domain. */
static int
user_may_add(const struct conf *c, const char *name)
{
	const char *at = strchr(name, '@');

	if (at != NULL && !conf_is_local_domain(c, at + 1)) {
		fprintf(stderr, "ternctl: %s is not a local-domain of the "
		    "configuration\n", at + 1);
		return -1;
	}
	if (at == NULL && getpwnam(name) == NULL) {
		fprintf(stderr, "ternctl: there is no system account %s (a "
		    "virtual account is name@domain)\n", name);
		return -1;
	}
	return 0;
}

/* Remove one account from the array. */
static void
user_remove(struct cred *v, size_t *n, struct cred *one)
{
	size_t i = (size_t)(one - v);

	memmove(&v[i], &v[i + 1], (*n - i - 1) * sizeof(*v));
	(*n)--;
	explicit_bzero(&v[*n], sizeof(*v));
}

/* The change itself, on the accounts read under the lock. */
static int
user_apply(enum user_op op, const char *name, struct cred **v, size_t *n,
    const char *hash)
{
	struct cred *one = credstore_find(*v, *n, name);
	time_t now = time(NULL);

	if (op == U_ADD && one != NULL) {
		fprintf(stderr, "ternctl: %s already exists\n", name);
		return -1;
	}
	if (op != U_ADD && one == NULL) {
		fprintf(stderr, "ternctl: no account %s\n", name);
		return -1;
	}
	if (op == U_ADD) {
		*v = xreallocarray(*v, *n + 1, sizeof(**v));
		one = &(*v)[(*n)++];
		memset(one, 0, sizeof(*one));
		str_copy(one->name, name, sizeof(one->name));
		one->created = now;
	}
	if (op == U_DEL) {
		user_remove(*v, n, one);
		return 0;
	}
	if (hash != NULL)
		str_copy(one->hash, hash, sizeof(one->hash));
	if (op == U_LOCK || op == U_UNLOCK)
		one->locked = op == U_LOCK;
	one->changed = now;
	return 0;
}

/*
 * Tell a running daemon to read the store again.  The change is made
 * either way: a daemon that is not running reads it when it starts.
 */
static void
user_notify(const struct conf *c)
{
	struct stat st;

	if (stat(conf_str(c, K_CONTROL_SOCKET), &st) == -1) {
		printf("ternctl: ternd is not running; it reads the store "
		    "when it starts\n");
		return;
	}
	fflush(stdout);
	if (ctl_request(c, "credentials") != 0)
		fprintf(stderr, "ternctl: the store is changed, but ternd did "
		    "not hear of it: reload it (SIGHUP)\n");
}

static int
user_change(const struct conf *c, enum user_op op, const char *name)
{
	const char *path = conf_str(c, K_CREDENTIALS);
	char pass[CRED_PASS_MAX + 2], hash[CRED_HASH_MAX + 1], err[1024];
	struct cred *v = NULL;
	size_t n = 0;
	int lockfd, r = 1;

	hash[0] = '\0';
	if (op == U_ADD || op == U_PASSWD) {
		if (user_password(name, pass, sizeof(pass)) == -1)
			return 1;
		if (user_quality(name, pass) == 0 &&
		    credstore_hash(pass, hash, sizeof(hash)) == -1)
			fprintf(stderr, "ternctl: cannot hash the password\n");
		explicit_bzero(pass, sizeof(pass));
		if (hash[0] == '\0')
			return 1;
	}
	if ((lockfd = credstore_lock(path, err, sizeof(err))) == -1) {
		fprintf(stderr, "ternctl: %s\n", err);
		return 1;
	}
	if (credstore_read(path, &v, &n, err, sizeof(err)) == -1)
		fprintf(stderr, "ternctl: %s\n", err);
	else if (user_apply(op, name, &v, &n, hash[0] ? hash : NULL) == 0) {
		if (credstore_write(path, v, n, err, sizeof(err)) == -1)
			fprintf(stderr, "ternctl: %s\n", err);
		else
			r = 0;
	}
	close(lockfd);
	credstore_free(v, n);
	explicit_bzero(hash, sizeof(hash));
	if (r == 0) {
		printf("ternctl: %s: %s\n", name, op == U_ADD ? "added" :
		    op == U_PASSWD ? "password changed" : op == U_DEL ?
		    "deleted" : op == U_LOCK ? "locked" : "unlocked");
		user_notify(c);
	}
	return r;
}

static void
user_time(char *out, size_t len, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0 || localtime_r(&tt, &tm) == NULL)
		str_copy(out, "-", len);
	else
		strftime(out, len, "%Y-%m-%d %H:%M", &tm);
}

static int
user_list(const struct conf *c)
{
	char err[1024], created[32], changed[32];
	struct cred *v = NULL;
	size_t n = 0, i;

	if (credstore_read(conf_str(c, K_CREDENTIALS), &v, &n, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "ternctl: %s\n", err);
		return 1;
	}
	if (n == 0)
		printf("(no accounts)\n");
	else
		printf("%-40s %-8s %-17s %s\n", "ACCOUNT", "STATE", "CREATED",
		    "CHANGED");
	for (i = 0; i < n; i++) {
		user_time(created, sizeof(created), v[i].created);
		user_time(changed, sizeof(changed), v[i].changed);
		printf("%-40s %-8s %-17s %s\n", v[i].name,
		    v[i].locked ? "locked" : "active", created, changed);
	}
	credstore_free(v, n);
	return 0;
}

static void
user_usage(void)
{
	fprintf(stderr,
	    "usage: ternctl [-f file] user add|passwd|del|lock|unlock NAME\n"
	    "       ternctl [-f file] user list\n"
	    "       ternctl [-f file] user limits\n"
	    "       ternctl [-f file] user release NAME|local:USER[/PROGRAM]\n");
	exit(1);
}

/*
 * ternctl user release NAME: lift the breaker's suspension of an account
 * (or of a local user, "local:NAME") and release its held mail; the
 * queue process owns that state, so this is a control request only.
 */
static int
user_release(const struct conf *c, const char *arg)
{
	char name[CRED_NAME_MAX + 1], req[CRED_NAME_MAX + 40];
	const char *why;
	size_t i;

	if (strncmp(arg, "local:", 6) == 0) {
		for (i = 6; arg[i]; i++)
			if (!isalnum((unsigned char)arg[i]) &&
			    strchr("._-", arg[i]) == NULL)
				break;
		/* local:USER/PROGRAM: a program's own suspension. */
		if (i > 6 && arg[i] == '/' && arg[i + 1] != '\0' &&
		    strlen(arg + i + 1) <= 32 && strspn(arg + i + 1,
		    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789._+-") == strlen(arg + i + 1))
			i += strlen(arg + i);
		if (i == 6 || arg[i] != '\0' || i > 64 + 33) {
			fprintf(stderr, "ternctl: bad local user \"%s\"\n",
			    arg);
			return 1;
		}
		str_copy(name, arg, sizeof(name));
		str_lower(name);
	} else if (credstore_name(arg, name, sizeof(name), &why) == -1) {
		fprintf(stderr, "ternctl: bad account name \"%s\": %s\n",
		    arg, why);
		return 1;
	}
	snprintf(req, sizeof(req), "account-release %s", name);
	return ctl_request(c, req);
}

int
user_main(const struct conf *c, int argc, char *argv[])
{
	char name[CRED_NAME_MAX + 1];
	const char *why;
	size_t op;

	if (argc == 3 && strcmp(argv[1], "release") == 0)
		return user_release(c, argv[2]);
	if (argc == 2 && strcmp(argv[1], "limits") == 0)
		return ctl_request(c, "accounts");

	if (argc == 2 && strcmp(argv[1], "list") == 0)
		op = U__LIST;
	else if (argc != 3)
		user_usage();
	else {
		for (op = 0; op < sizeof(user_ops) / sizeof(user_ops[0]); op++)
			if (strcmp(argv[1], user_ops[op]) == 0)
				break;
		if (op == sizeof(user_ops) / sizeof(user_ops[0]))
			user_usage();
	}
	if (geteuid() != 0) {
		fprintf(stderr, "ternctl: user: only root may read or change "
		    "the credential store\n");
		return 1;
	}
	if (op == U__LIST)
		return user_list(c);
	if (credstore_name(argv[2], name, sizeof(name), &why) == -1) {
		fprintf(stderr, "ternctl: bad account name \"%s\": %s\n",
		    argv[2], why);
		return 1;
	}
	if (op == U_ADD && user_may_add(c, name) == -1)
		return 1;
	return user_change(c, (enum user_op)op, name);
}
