/*
 * ternctl check: the MX's message checks run on a message file, without
 * an SMTP session, with the configured resolver.  Prints the headers the
 * MX would add (Received-SPF, Authentication-Results) and, last,
 * action=accept|quarantine|reject|tempfail reason="...".  The checks are
 * SPF (auth/spf.c), DKIM (auth/dkimverify.c, keys looked up blocking)
 * and DMARC (auth/dmarc.c) as the MX listeners' dmarc knob applies it.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/authres.h"
#include "auth/dkimverify.h"
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

/*
 * The message, line by line (CRLF or LF ends), to the DKIM verifier as
 * the MX would see it.  NULL when stdin is a terminal.
 */
static struct dkimv *
check_read_message(struct dmarc_from *from)
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
			dmarc_from_end(from);
			inhead = 0;
		} else if (inhead) {
			dkimv_hline(v, line, len);
			dmarc_from_line(from, line, len);
		}
		else
			dkimv_bline(v, line, len);
	}
	free(line);
	dmarc_from_end(from);
	return v;
}

static int
check_txt(void *arg, const char *name, struct dmarc_txt *out)
{
	struct buf b;
	size_t n;
	uint32_t ttl;
	int r;

	buf_init(&b);
	r = spfdns_txt(arg, name, 0, &b, &n, &ttl);
	if (r == 0)
		dmarc_txt_take(out, b.data, n);
	buf_free(&b);
	return r == 0 ? DMARC_DNS_OK : r == 1 ? DMARC_DNS_NONE : DMARC_DNS_TEMP;
}

/*
 * DMARC on the message as the MX would apply it in mode: its dmarc=
 * entry into ar, its action and reply (empty: accept).
 */
static const char *
check_dmarc(struct spfdns *dns, const struct dmarc_from *from,
    const struct spf_verdict *sv, struct authres *ar, int mode,
    struct dmarc_verdict *v, char *reply, size_t cap)
{
	struct dmarc_policy_found found[DMARC_FROM_DOMAINS];
	struct dmarc_auth au;
	struct buf b;
	const char *action = "accept";

	dmarc_init(NULL);
	for (int i = 0; i < from->ndomains; i++)
		dmarc_discover(check_txt, dns, from->domain[i], &found[i]);
	memset(&au, 0, sizeof(au));
	au.spf = sv->result;
	str_copy(au.spf_domain, sv->domain, sizeof(au.spf_domain));
	for (size_t i = 0; i < ar->ndkim && i < DMARC_DKIM_MAX; i++) {
		str_copy(au.dkim[au.ndkim].d, ar->dk[i].d, sizeof(au.dkim[0].d));
		au.dkim[au.ndkim++].pass = ar->dk[i].result == DKIM_PASS;
	}
	dmarc_evaluate(from, found, &au, arc4random_uniform(100), v);
	buf_init(&b);
	dmarc_ar_part(&b, v);
	ar->extra[0].room = sizeof(ar->extra[0].text) - 1;
	str_copy(ar->extra[0].text, b.data, sizeof(ar->extra[0].text));
	buf_free(&b);
	*reply = '\0';
	if (v->result == DMARC_RES_TEMPERROR) {
		action = "tempfail";
		snprintf(reply, cap, "451 4.7.5 DMARC policy of %s not found "
		    "for now (%s)", v->from_domain, v->reason);
	} else if ((v->result == DMARC_RES_FAIL ||
	    v->result == DMARC_RES_PERMERROR) &&
	    v->disposition == DMARC_POL_REJECT) {
		action = "reject";
		if (v->result == DMARC_RES_PERMERROR)
			snprintf(reply, cap, "550 5.7.1 message refused: %s",
			    v->reason);
		else
			snprintf(reply, cap, "550 5.7.1 DMARC: %s refuses "
			    "mail it has not authenticated (%s)",
			    v->from_domain, v->reason);
	} else if (v->result == DMARC_RES_FAIL &&
	    v->disposition == DMARC_POL_QUARANTINE) {
		action = "quarantine";
		snprintf(reply, cap, "DMARC quarantine for %s (%s)",
		    v->from_domain, v->reason);
		if (mode == DMARC_MODE_ENFORCE) {	/* the MX's mark */
			ar->markroom = sizeof(ar->mark) - 1;
			snprintf(ar->mark, sizeof(ar->mark), "X-Tern-DMARC: "
			    "quarantine; header.from=%.253s", v->from_domain);
		}
	}
	if (mode == DMARC_MODE_MONITOR && strcmp(action, "accept") != 0) {
		char was[600];

		snprintf(was, sizeof(was), "dmarc monitor: %s not applied: %s",
		    action, reply);
		str_copy(reply, was, cap);
		action = "accept";
	}
	return action;
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
	struct dmarc_from from;
	struct dmarc_verdict dmv;
	char dreply[512];
	const char *daction = "accept";
	int mode = DMARC_MODE_OFF;
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
	dmarc_from_init(&from);
	dv = check_read_message(&from);
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
	/* DMARC as the MX listeners apply it (the strictest of them) */
	for (size_t i = 0; i < c->nlisteners; i++)
		if (c->listeners[i].role == ROLE_MX &&
		    conf_dmarc_mode(c, &c->listeners[i]) > mode)
			mode = conf_dmarc_mode(c, &c->listeners[i]);
	memset(&dmv, 0, sizeof(dmv));
	dreply[0] = '\0';
	if (mode != DMARC_MODE_OFF)
		daction = check_dmarc(dns, &from, &v, &ar, mode, &dmv, dreply,
		    sizeof(dreply));
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
	/* SPF refuses first (at RCPT); then DMARC, at the end of data */
	if (strcmp(action, "accept") == 0 && mode != DMARC_MODE_OFF) {
		action = daction;
		str_copy(reply, dreply, sizeof(reply));
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
	if (mode != DMARC_MODE_OFF) {
		printf("dmarc=%s header.from=%s reason=",
		    dmarc_result_name(dmv.result), dmv.from_domain[0] ?
		    dmv.from_domain : "-");
		check_print_reason(dmv.reason ? dmv.reason : "");
	}
	printf("action=%s reason=", action);
	check_print_reason(reply[0] ? reply : mode == DMARC_MODE_OFF ?
	    "spf ok" : "spf and dmarc ok");
	spf_free(spf);
	spfdns_free(dns);
	return 0;
}
