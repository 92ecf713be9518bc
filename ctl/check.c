/*
 * ternctl check: the MX's message checks run on a message file, without
 * an SMTP session, with the configured resolver.  Prints the headers the
 * MX would add (Received-SPF, Authentication-Results) and, last,
 * action=accept|reject|tempfail reason="...".  Today the checks are SPF
 * (auth/spf.c); DKIM and DMARC come with their issues.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/spf.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "dns/spfdns.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/util.h"

static void
check_usage(void)
{
	fprintf(stderr, "usage: ternctl check --client-ip IP --helo NAME "
	    "--mail-from ADDR < message\n");
	exit(2);
}

/* The reason, printable and without quotes or backslashes unescaped. */
static void
check_print_reason(const char *r)
{
	putchar('"');
	for (; *r; r++) {
		unsigned char c = (unsigned char)*r;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	printf("\"\n");
}

/* Read and discard the message: the checks that read it come later. */
static void
check_read_message(void)
{
	char buf[8192];

	if (isatty(0))
		return;
	while (fread(buf, 1, sizeof(buf), stdin) > 0)
		;
}

int
check_main(const struct conf *c, int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "client-ip", required_argument, NULL, 'i' },
		{ "helo", required_argument, NULL, 'h' },
		{ "mail-from", required_argument, NULL, 'm' },
		{ "libspf2-only", no_argument, NULL, 'L' },
		{ NULL, 0, NULL, 0 }
	};
	struct spf_request q = { .ip = NULL, .helo = NULL, .sender = NULL };
	struct spf_verdict v;
	struct spfdns *dns;
	struct spf *spf;
	struct buf b;
	char err[256], reply[512];
	const char *host = conf_str(c, K_HOSTNAME), *action;
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'i': q.ip = optarg; break;
		case 'h': q.helo = optarg; break;
		case 'm': q.sender = optarg; break;
		case 'L': q.libonly = 1; break;
		default: check_usage();
		}
	}
	if (q.ip == NULL || q.helo == NULL || q.sender == NULL ||
	    optind != argc)
		check_usage();
	/* <a@b> as in MAIL FROM; <> is the null sender. */
	if (q.sender[0] == '<') {
		size_t n = strlen(q.sender);
		char *s = xstrdup(q.sender + 1);

		if (n >= 2 && s[n - 2] == '>')
			s[n - 2] = '\0';
		q.sender = s;
	}
	{	/* as the MX does: SPF asks for the A-labels (RFC 8616) */
		static char ascii[1024];

		if (addr_has8bit(q.sender) && addr_ascii(q.sender, ascii,
		    sizeof(ascii)) == 0)
			q.sender = ascii;
	}
	check_read_message();
	dns = spfdns_new(c->resolvers, c->resolverlen, c->nresolvers,
	    (int)conf_num(c, NULL, K_SPF_TIMEOUT), err, sizeof(err));
	if (dns == NULL) {
		fprintf(stderr, "ternctl: %s\n", err);
		return 1;
	}
	spf = spf_new(dns, host);
	if (spf == NULL) {
		fprintf(stderr, "ternctl: libspf2 set-up failed\n");
		return 1;
	}
	spf_check(spf, &q, &v);
	buf_init(&b);
	spf_received_header(&b, &v, &q, host);
	buf_printf(&b, "Authentication-Results: %s;\r\n\t", host);
	spf_ar_part(&b, &v, &q);
	buf_printf(&b, "\r\n");
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
	switch (spf_policy(&v, reply, sizeof(reply))) {
	case SPF_REJECT: action = "reject"; break;
	case SPF_TEMPFAIL: action = "tempfail"; break;
	default: action = "accept"; break;
	}
	printf("spf=%s reason=", spf_result_name(v.result));
	check_print_reason(v.reason);
	if (v.exp[0]) {
		printf("explanation=");
		check_print_reason(v.exp);
	}
	printf("action=%s reason=", action);
	check_print_reason(reply[0] ? reply : "spf ok");
	spf_free(spf);
	spfdns_free(dns);
	return 0;
}
