/*
 * fuzz_smtp: libFuzzer target for smtpd/smtp_parse.c, the parsers the
 * unprivileged smtp process runs on untrusted network lines.  Each input is
 * one command line (the line reader has removed CRLF and refused NUL); the
 * verb's argument goes through the path parser under every flag combination
 * and through the parameter parsers, and the whole line is also tried as a
 * HELO domain.  Results are checked against the parsers' own promises.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "smtpd/smtp_parse.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define ALL_FLAGS	(PATH_ALLOW_NULL | PATH_ALLOW_UTF8 | PATH_ALLOW_POSTMASTER)

/* What a successful path parse promises the caller. */
static void
fuzz_path_check(const char *arg, int flags, const struct smtp_path *p,
    const char *rest)
{
	char s[SMTP_LOCAL_MAX * 2 + SMTP_DOMAIN_MAX + 8], out[ADDR_STR_MAX];
	int r;

	if (strlen(p->local) > SMTP_LOCAL_MAX ||
	    strlen(p->domain) > SMTP_DOMAIN_MAX)
		abort();
	if (rest <= arg || rest[-1] != '>' || (*rest != '\0' && *rest != ' '))
		abort();
	if ((size_t)(rest - arg) > SMTP_PATH_MAX + 2)
		abort();
	if (p->null && !(flags & PATH_ALLOW_NULL))
		abort();
	if (p->utf8 && !(flags & PATH_ALLOW_UTF8))
		abort();
	if (!p->null && p->domain[0] == '\0' &&
	    !(flags & PATH_ALLOW_POSTMASTER))
		abort();
	if (!p->null && p->domain[0] != '\0' &&
	    smtp_check_domain(p->domain, flags & PATH_ALLOW_UTF8) != 0)
		abort();
	smtp_path_string(p, s, sizeof(s));
	/* The session stores what the path parser took in lib/addr.c's
	   canonical form: an ASCII mailbox the one takes, the other takes
	   too (IDNA, and the length of a domain's A-labels, only lib/addr.c
	   checks). */
	if (!p->null && !p->utf8 && p->domain[0] != '\0' && (r = addr_canon(s,
	    ADDR_F_UTF8, out, sizeof(out), NULL)) != 0)
		abort();
}

static void
fuzz_path(const char *arg, int mail)
{
	struct mail_params mp;
	struct smtp_path p;
	const char *rest, *why;
	int flags;

	for (flags = 0; flags <= ALL_FLAGS; flags++) {
		why = NULL;
		if (smtp_parse_path(arg, flags, &p, &rest, &why) != 0) {
			if (why == NULL)
				abort();
			continue;
		}
		fuzz_path_check(arg, flags, &p, rest);
		if (mail && smtp_parse_mail_params(rest, &mp, &why) == 0 &&
		    mp.size < -1)
			abort();
		(void)smtp_parse_rcpt_params(rest, &why);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_command cmd;
	struct mail_params mp;
	const char *why = NULL;
	char *line;

	if (memchr(data, '\0', size) != NULL)
		return 0;
	if ((line = malloc(size + 1)) == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';

	if (smtp_parse_command(line, &cmd, &why) == 0) {
		if (cmd.verb == VERB_MAIL || cmd.verb == VERB_RCPT)
			fuzz_path(cmd.arg, cmd.verb == VERB_MAIL);
	} else if (why == NULL)
		abort();
	why = NULL;
	if (smtp_parse_mail_params(line, &mp, &why) != 0 && why == NULL)
		abort();
	(void)smtp_parse_helo(line, &why);
	(void)smtp_check_domain(line, 0);
	(void)smtp_check_domain(line, 1);
	free(line);
	return 0;
}
