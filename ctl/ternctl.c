/*
 * ternctl: the admin command, also answering as mailq and newaliases (and
 * sendmail, see sendmail.c) by the name it is invoked under.  Queue
 * commands go to the queue process over the control socket; the answers
 * are untrusted text, printed with control characters replaced.
 */
#include <sys/socket.h>
#include <sys/un.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "smtpd/smtp_parse.h"
#include "lib/util.h"

#define CTL_CONF	"/etc/tern/tern.conf"
#define CTL_REPLY_MAX	(64u << 20)

/* How a config error exits: ternctl dns says 2 (1 means problems). */
static int ctl_config_status = 1;

static void
ctl_usage(void)
{
	fprintf(stderr,
	    "usage: ternctl [-D] [-f file] command [argument]\n"
	    "commands:\n"
	    "  queue            list the queue (also: mailq)\n"
	    "  show ID          a message's envelope and recipients\n"
	    "  remove ID        remove a message from the queue\n"
	    "  flush [domain]   try every queued message (to domain) now\n"
	    "  flush --urgent ID  send a message first at each destination\n"
	    "  destinations     per destination: learned rate, queue, next try\n"
	    "  hold ID          keep a message from being delivered\n"
	    "  release ID       let a held message go\n"
	    "  summary          the queue per destination domain\n"
	    "  newaliases       compile the aliases file (also: newaliases)\n"
	    "  user add|passwd|del|lock|unlock NAME\n"
	    "                   change the credential store (root; a new\n"
	    "                   password is read from standard input)\n"
	    "  user list        the accounts, locked or active\n"
	    "  user limits      what each account sent, suspended or active\n"
	    "  user release NAME  lift the breaker's suspension, release "
	    "its mail\n"
	    "  auth             clients and accounts with failed logins "
	    "(the AUTH throttle)\n"
	    "  auth clear ADDR|ACCOUNT\n"
	    "                   forget their failed logins\n"
	    "  check --client-ip IP --helo NAME --mail-from ADDR < message\n"
	    "                   the MX's checks (SPF) on a message\n"
	    "  dkim keygen DOMAIN SELECTOR [rsa|ed25519]\n"
	    "                   a DKIM signing key and its DNS record\n"
	    "  dns DOMAIN [--check]\n"
	    "                   the DNS records to publish for DOMAIN; with\n"
	    "                   --check, what is missing, wrong or dangerous\n");
	exit(1);
}

struct conf *
ctl_config(const char *path, int embedded)
{
	char err[1024], cwd[4096];
	struct buf text;
	struct conf *c;

	if (getcwd(cwd, sizeof(cwd)) == NULL)
		str_copy(cwd, "/", sizeof(cwd));
	buf_init(&text);
	if (embedded)
		c = conf_parse("(embedded)", conf_default_text,
		    strlen(conf_default_text), cwd, err, sizeof(err));
	else
		c = conf_load(path, cwd, &text, err, sizeof(err));
	buf_free(&text);
	if (c == NULL) {
		fprintf(stderr, "%s\n", err);
		exit(ctl_config_status);
	}
	return c;
}

/* Print untrusted text: printable ASCII, tab and newline pass. */
static void
ctl_print(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		putchar((ch >= 32 && ch < 127) || ch == '\n' || ch == '\t' ?
		    ch : '?');
	}
}

int
ctl_request(const struct conf *c, const char *req)
{
	const char *path = conf_str(c, K_CONTROL_SOCKET);
	struct sockaddr_un sun;
	struct buf reply;
	char tmp[8192], *nl;
	ssize_t n;
	int fd, ok;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (str_copy(sun.sun_path, path, sizeof(sun.sun_path)) >=
	    sizeof(sun.sun_path)) {
		fprintf(stderr, "ternctl: control socket path too long\n");
		return 1;
	}
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		if (errno == EACCES)
			fprintf(stderr, "ternctl: %s: permission denied: it "
			    "needs root or group %s (control-group), and "
			    "search access to the socket's directory\n", path,
			    conf_str(c, K_CONTROL_GROUP));
		else
			fprintf(stderr, "ternctl: %s: %s (is ternd running?)\n",
			    path, strerror(errno));
		return 1;
	}
	if (write(fd, req, strlen(req)) == -1 || write(fd, "\n", 1) == -1) {
		fprintf(stderr, "ternctl: write: %s\n", strerror(errno));
		return 1;
	}
	buf_init(&reply);
	while ((n = read(fd, tmp, sizeof(tmp))) > 0 && reply.len < CTL_REPLY_MAX)
		buf_append(&reply, tmp, (size_t)n);
	close(fd);
	if (reply.len == 0 || (nl = memchr(reply.data, '\n', reply.len)) == NULL) {
		fprintf(stderr, "ternctl: no answer from ternd\n");
		return 1;
	}
	ok = (size_t)(nl - reply.data) == 2 && memcmp(reply.data, "ok", 2) == 0;
	if (!ok) {
		fputs("ternctl: ", stderr);
		fflush(stdout);
		ctl_print(reply.data, (size_t)(nl - reply.data) + 1);
		fflush(stdout);
	} else
		ctl_print(nl + 1, reply.len - (size_t)(nl - reply.data) - 1);
	buf_free(&reply);
	return ok ? 0 : 1;
}

static int
ctl_newaliases(const struct conf *c)
{
	char err[1024];
	size_t n;

	if (aliases_compile(conf_str(c, K_ALIASES), err, sizeof(err), &n) == -1) {
		fprintf(stderr, "newaliases: %s\n", err);
		return 1;
	}
	printf("newaliases: %zu aliases written to %s.db\n", n,
	    conf_str(c, K_ALIASES));
	return 0;
}

static int
ctl_valid_id(const char *id)
{
	size_t i, n = strlen(id);

	if (n == 0 || n > 32)
		return 0;
	for (i = 0; i < n; i++)
		if (!((id[i] >= '0' && id[i] <= '9') ||
		    (id[i] >= 'A' && id[i] <= 'F') ||
		    (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	return 1;
}

/* A client address or an account name: printable, no space, short. */
static int
ctl_valid_key(const char *k)
{
	size_t i, n = strlen(k);

	if (n == 0 || n > 255)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)k[i] <= ' ' || (unsigned char)k[i] >= 127)
			return 0;
	return 1;
}

int
main(int argc, char *argv[])
{
	const char *name = strrchr(argv[0], '/'), *path = CTL_CONF;
	char req[300];
	struct conf *c;
	int ch, embedded = 0;

	name = name ? name + 1 : argv[0];
	maildrop_privs(strcmp(name, "sendmail") == 0);
	if (getenv("TERN_CONF"))
		path = getenv("TERN_CONF");
	if (strcmp(name, "sendmail") == 0)
		return sendmail_main(argc, argv, path);
	while ((ch = getopt(argc, argv, "+Df:")) != -1) {
		switch (ch) {
		case 'D': embedded = 1; break;
		case 'f': path = optarg; break;
		default: ctl_usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc >= 1 && strcmp(argv[0], "dns") == 0)
		ctl_config_status = 2;
	c = ctl_config(path, embedded);
	if (strcmp(name, "mailq") == 0)
		return ctl_request(c, "queue");
	if (strcmp(name, "newaliases") == 0)
		return ctl_newaliases(c);
	if (argc < 1)
		ctl_usage();
	if (strcmp(argv[0], "queue") == 0 && argc == 1)
		return ctl_request(c, "queue");
	if (strcmp(argv[0], "flush") == 0 && argc == 1)
		return ctl_request(c, "flush");
	if (strcmp(argv[0], "summary") == 0 && argc == 1)
		return ctl_request(c, "summary");
	if (strcmp(argv[0], "destinations") == 0 && argc == 1)
		return ctl_request(c, "destinations");
	if (strcmp(argv[0], "flush") == 0 && argc == 3 &&
	    strcmp(argv[1], "--urgent") == 0) {
		if (!ctl_valid_id(argv[2])) {
			fprintf(stderr, "ternctl: bad queue id \"%s\"\n", argv[2]);
			return 1;
		}
		snprintf(req, sizeof(req), "urgent %s", argv[2]);
		return ctl_request(c, req);
	}
	if (strcmp(argv[0], "flush") == 0 && argc == 2) {
		if (smtp_check_domain(argv[1], 0) == -1) {
			fprintf(stderr, "ternctl: bad domain \"%s\"\n", argv[1]);
			return 1;
		}
		snprintf(req, sizeof(req), "flush %s", argv[1]);
		return ctl_request(c, req);
	}
	if (strcmp(argv[0], "newaliases") == 0 && argc == 1)
		return ctl_newaliases(c);
	if (strcmp(argv[0], "user") == 0)
		return user_main(c, argc, argv);
	if (strcmp(argv[0], "dkim") == 0)
		return dkim_main(c, argc, argv);
	if (strcmp(argv[0], "auth") == 0 && argc == 1)
		return ctl_request(c, "auth");
	if (strcmp(argv[0], "auth") == 0 && argc == 3 &&
	    strcmp(argv[1], "clear") == 0) {
		if (!ctl_valid_key(argv[2])) {
			fprintf(stderr, "ternctl: bad address or account \"%s\"\n",
			    argv[2]);
			return 1;
		}
		snprintf(req, sizeof(req), "auth-clear %s", argv[2]);
		return ctl_request(c, req);
	}
	if (strcmp(argv[0], "check") == 0)
		return check_main(c, argc, argv);
	if (strcmp(argv[0], "dns") == 0)
		return dnsctl_main(c, argc, argv);
	if ((strcmp(argv[0], "show") == 0 || strcmp(argv[0], "remove") == 0 ||
	    strcmp(argv[0], "hold") == 0 || strcmp(argv[0], "release") == 0) &&
	    argc == 2) {
		if (!ctl_valid_id(argv[1])) {
			fprintf(stderr, "ternctl: bad queue id \"%s\"\n", argv[1]);
			return 1;
		}
		snprintf(req, sizeof(req), "%s %s", argv[0], argv[1]);
		return ctl_request(c, req);
	}
	ctl_usage();
	return 1;
}
