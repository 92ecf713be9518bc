/*
 * ternctl check: the MX's message checks run on a message file, without
 * an SMTP session, with the configured resolver.  Prints the headers the
 * MX would add (Received-SPF, Authentication-Results) and, last,
 * action=accept|quarantine|reject|tempfail reason="...".  The checks are
 * SPF (auth/spf.c) and DMARC (auth/dmarc.c) as the MX's enforce mode
 * applies them.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/dmarc.h"
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

/* Read the message (its header is what DMARC reads). */
static void
check_read_message(struct buf *m)
{
	char buf[8192];
	size_t n;

	if (isatty(0))
		return;
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		if (m->len < 64 * 1024 * 1024)
			buf_append(m, buf, n);
}

struct check_dns {
	struct spfdns	*dns;
	uint64_t	 timeout_ms;
};

static int
check_txt(void *arg, const char *name, struct dmarc_txt *out)
{
	const struct check_dns *cd = arg;
	struct buf b;
	size_t n;
	int r;

	buf_init(&b);
	r = spfdns_txt(cd->dns, name, 0, &b, &n);
	if (r == 0)
		dmarc_txt_take(out, b.data, n);
	buf_free(&b);
	return r == 0 ? DMARC_DNS_OK : r == 1 ? DMARC_DNS_NONE : DMARC_DNS_TEMP;
}

/* DMARC on the message: the A-R part into b, the verdict into v. */
static void
check_dmarc(struct spfdns *dns, const struct buf *m,
    const struct spf_verdict *sv, struct dmarc_verdict *v)
{
	struct dmarc_from f;
	struct dmarc_policy_found found[DMARC_FROM_DOMAINS];
	struct dmarc_auth au;
	struct check_dns cd = { dns, 0 };

	dmarc_init(NULL);
	dmarc_from_header(&f, m->data ? m->data : "", m->len);
	for (int i = 0; i < f.ndomains; i++)
		dmarc_discover(check_txt, &cd, f.domain[i], &found[i]);
	memset(&au, 0, sizeof(au));
	au.spf = sv->result;
	str_copy(au.spf_domain, sv->domain, sizeof(au.spf_domain));
	dmarc_evaluate(&f, found, &au, arc4random_uniform(100), v);
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
	struct buf b, msg;
	struct dmarc_verdict dv;
	char err[256], reply[512];
	const char *host = conf_str(c, K_HOSTNAME), *action;
	int ch, mode = DMARC_MODE_OFF;

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
	buf_init(&msg);
	check_read_message(&msg);
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
	/* DMARC as the MX listeners apply it (the strictest of them) */
	for (size_t i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].role == ROLE_MX &&
		    conf_dmarc_mode(c, &c->listeners[i]) > mode)
			mode = conf_dmarc_mode(c, &c->listeners[i]);
	memset(&dv, 0, sizeof(dv));
	if (mode != DMARC_MODE_OFF)
		check_dmarc(dns, &msg, &v, &dv);
	buf_init(&b);
	spf_received_header(&b, &v, &q, host);
	buf_printf(&b, "Authentication-Results: %s;\r\n\t", host);
	spf_ar_part(&b, &v, &q);
	if (mode != DMARC_MODE_OFF) {
		buf_printf(&b, ";\r\n\t");
		dmarc_ar_part(&b, &dv);
	}
	buf_printf(&b, "\r\n");
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
	switch (spf_policy(&v, reply, sizeof(reply))) {
	case SPF_REJECT: action = "reject"; break;
	case SPF_TEMPFAIL: action = "tempfail"; break;
	default: action = "accept"; break;
	}
	/* SPF's refusals come first (at RCPT); then DMARC's, at the end of
	   data, as the MX's enforce mode applies them */
	if (strcmp(action, "accept") == 0 && mode == DMARC_MODE_MONITOR &&
	    (dv.result == DMARC_RES_TEMPERROR ||
	    dv.disposition != DMARC_POL_NONE))
		snprintf(reply, sizeof(reply), "dmarc monitor: %s %s not "
		    "applied", dmarc_result_name(dv.result),
		    dmarc_policy_name(dv.disposition));
	else if (strcmp(action, "accept") == 0 && mode != DMARC_MODE_OFF) {
		if (dv.result == DMARC_RES_TEMPERROR) {
			action = "tempfail";
			snprintf(reply, sizeof(reply), "451 4.7.5 DMARC policy "
			    "of %s could not be found (%s)", dv.from_domain,
			    dv.reason);
		} else if (dv.disposition == DMARC_POL_REJECT) {
			action = "reject";
			snprintf(reply, sizeof(reply), "550 5.7.1 %s (%s)",
			    dv.result == DMARC_RES_PERMERROR ?
			    "message refused" : "DMARC policy of the From: "
			    "domain", dv.reason ? dv.reason : "fail");
		} else if (dv.disposition == DMARC_POL_QUARANTINE &&
		    dv.result == DMARC_RES_FAIL) {
			action = "quarantine";
			snprintf(reply, sizeof(reply), "DMARC quarantine "
			    "for %s (%s)", dv.from_domain, dv.reason);
		}
	}
	printf("spf=%s reason=", spf_result_name(v.result));
	check_print_reason(v.reason);
	if (v.exp[0]) {
		printf("explanation=");
		check_print_reason(v.exp);
	}
	if (mode != DMARC_MODE_OFF) {
		printf("dmarc=%s header.from=%s reason=",
		    dmarc_result_name(dv.result), dv.from_domain[0] ?
		    dv.from_domain : "-");
		check_print_reason(dv.reason ? dv.reason : "");
	}
	printf("action=%s reason=", action);
	check_print_reason(reply[0] ? reply : mode == DMARC_MODE_OFF ?
	    "spf ok" : "spf and dmarc ok");
	buf_free(&msg);
	spf_free(spf);
	spfdns_free(dns);
	return 0;
}
