/*
 * ternctl check: the MX's message checks run on a message file, without
 * an SMTP session, with the configured resolver.  Prints the headers the
 * MX would add (Received-SPF, Authentication-Results) and, last,
 * action=accept|reject|tempfail reason="...".  The checks are SPF
 * (auth/spf.c) and DKIM (auth/dkimverify.c, keys looked up blocking);
 * DMARC comes with its issue.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/authres.h"
#include "auth/dkimverify.h"
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

/*
 * The message, line by line (CRLF or LF ends), to the DKIM verifier as
 * the MX would see it.  NULL when stdin is a terminal.
 */
static struct dkimv *
check_read_message(void)
{
	struct dkimv *v;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int inhead = 1;

	if (isatty(0))
		return NULL;
	v = dkimv_new(time(NULL));
	while ((n = getline(&line, &cap, stdin)) > 0) {
		size_t len = (size_t)n;

		if (len > 0 && line[len - 1] == '\n')
			len--;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (inhead && len == 0) {
			dkimv_hend(v);
			inhead = 0;
		} else if (inhead)
			dkimv_hline(v, line, len);
		else
			dkimv_bline(v, line, len);
	}
	free(line);
	return v;
}

/* Every signature's verdict, keys looked up now; into ar. */
static void
check_dkim(struct dkimv *v, struct spfdns *dns, uint64_t timeout_ms,
    struct authres *ar)
{
	struct dkim_check dk[DKIM_VERIFY_MAX];
	char name[DKIM_DOMAIN_MAX + DKIM_SELECTOR_MAX + 16];
	const char *txt[8];
	struct buf recs;
	struct timespec ts;
	uint64_t dl;
	size_t i, k, n, nt;
	uint32_t ttl;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	dl = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 +
	    timeout_ms;
	buf_init(&recs);
	n = dkimv_end(v, dk, DKIM_VERIFY_MAX);
	ar->dkim = 1;
	ar->ndkim = n;
	for (i = 0; i < n; i++) {
		if (dk[i].result == DKIM_NONE) {
			dkim_check_keyname(&dk[i], name, sizeof(name));
			buf_reset(&recs);
			r = spfdns_txt(dns, name, dl, &recs, &nt, &ttl);
			for (k = 0; r == 0 && k < nt && k < 8; k++)
				txt[k] = k == 0 ? recs.data : txt[k - 1] +
				    strlen(txt[k - 1]) + 1;
			dkim_check_key(&dk[i], r, txt, r == 0 ? k : 0);
		}
		ar->dk[i].result = dk[i].result;
		str_copy(ar->dk[i].d, dk[i].d, sizeof(ar->dk[i].d));
		str_copy(ar->dk[i].s, dk[i].s, sizeof(ar->dk[i].s));
		str_copy(ar->dk[i].b8, dk[i].b8, sizeof(ar->dk[i].b8));
		str_copy(ar->dk[i].comment, dk[i].comment,
		    sizeof(ar->dk[i].comment));
	}
	buf_free(&recs);
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
	struct authres ar;
	struct dkimv *dv;
	struct spfdns *dns;
	struct spf *spf;
	struct buf b;
	char err[256], reply[512];
	const char *host = conf_str(c, K_HOSTNAME), *action, *id;
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
	dv = check_read_message();
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
	memset(&ar, 0, sizeof(ar));
	buf_init(&b);
	spf_ar_part(&b, &v, &q);
	str_copy(ar.spf, b.data, sizeof(ar.spf));
	buf_reset(&b);
	if (dv != NULL)
		check_dkim(dv, dns, (uint64_t)conf_num(c, NULL, K_SPF_TIMEOUT),
		    &ar);
	dkimv_free(dv);
	spf_received_header(&b, &v, &q, host);
	id = conf_str(c, K_AUTHSERV_ID) ? conf_str(c, K_AUTHSERV_ID) : host;
	(void)authres_format(&b, id, &ar, 0);
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
	for (size_t i = 0; i < ar.ndkim; i++) {
		printf("dkim=%s d=%s s=%s reason=", dkim_result_name(
		    ar.dk[i].result), ar.dk[i].d, ar.dk[i].s);
		check_print_reason(ar.dk[i].comment);
	}
	printf("action=%s reason=", action);
	check_print_reason(reply[0] ? reply : "spf ok");
	spf_free(spf);
	spfdns_free(dns);
	return 0;
}
