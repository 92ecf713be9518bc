/*
 * spf: one SPF evaluation (RFC 7208) on libspf2, blocking on DNS through
 * dns/spfdns.c.  Runs in the smtp process's SPF worker threads and in
 * ternctl check.
 *
 * libspf2 1.2.10 departs from the RFC in ways its test suite shows; this
 * file wraps it rather than patching it: the client address is made IPv4
 * when it is IPv4-mapped IPv6, every SPF record libspf2 fetched is checked
 * for syntax libspf2 accepts but the RFC does not (spfrec.c), void lookups
 * are counted (4.6.4), SPF_RESULT_INVALID is mapped, and the explanation
 * is rebuilt from printable ASCII so nothing it mangled reaches a reply.
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <spf2/spf.h>

#include "auth/spf.h"
#include "dns/dns.h"
#include "dns/spfdns.h"
#include "lib/util.h"

#define SPF_VOID_MAX	2	/* RFC 7208 4.6.4 */

struct spf {
	SPF_server_t	*srv;
	struct spfdns	*dns;
	char		 receiver[256];
};

#define SPF_TTL_NODNS	3600	/* a verdict that read no DNS */
#define SPF_EXP_DEFAULT	"%{o} does not designate %{c} as permitted sender"

static const char *const spf_names[] = {
	[SPF_NONE] = "none", [SPF_NEUTRAL] = "neutral", [SPF_PASS] = "pass",
	[SPF_FAIL] = "fail", [SPF_SOFTFAIL] = "softfail",
	[SPF_TEMPERROR] = "temperror", [SPF_PERMERROR] = "permerror"
};

const char *
spf_result_name(enum spf_result r)
{
	return (unsigned)r < sizeof(spf_names) / sizeof(*spf_names) ?
	    spf_names[r] : "permerror";
}

struct spf *
spf_new(struct spfdns *dns, const char *receiver)
{
	struct spf *s = xcalloc(1, sizeof(*s));
	SPF_response_t *resp;

	s->srv = SPF_server_new_dns(spfdns_layer(dns), 0);
	if (s->srv == NULL) {
		free(s);
		return NULL;
	}
	SPF_server_set_rec_dom(s->srv, receiver);
	s->dns = dns;
	str_copy(s->receiver, receiver, sizeof(s->receiver));
	/* libspf2's default points at a web site long gone. */
	resp = NULL;
	SPF_server_set_explanation(s->srv, "%{o} does not designate %{i} as "
	    "permitted sender", &resp);
	if (resp)
		SPF_response_free(resp);
	return s;
}

void
spf_free(struct spf *s)
{
	if (s == NULL)
		return;
	SPF_server_free(s->srv);
	free(s);
}

/* Printable ASCII only, blanks as spaces (none leading or trailing: the
 * text as published, RFC 7208 6.2), at most cap-1 bytes. */
static void
spf_clean(char *out, size_t cap, const char *in)
{
	size_t o = 0, sp = 0;

	for (; in && *in && o + 1 < cap; in++) {
		unsigned char c = (unsigned char)*in;

		if (c == ' ' || c == '\t') {
			sp += o > 0;
			continue;
		}
		if (c < 0x21 || c > 0x7e)
			c = '?';
		for (; sp > 0 && o + 2 < cap; sp--)
			out[o++] = ' ';
		sp = 0;
		out[o++] = (char)c;
	}
	out[o] = '\0';
}

static enum spf_result
spf_map(SPF_result_t r, SPF_errcode_t err)
{
	switch (r) {
	case SPF_RESULT_NEUTRAL:	return SPF_NEUTRAL;
	case SPF_RESULT_PASS:		return SPF_PASS;
	case SPF_RESULT_FAIL:		return SPF_FAIL;
	case SPF_RESULT_SOFTFAIL:	return SPF_SOFTFAIL;
	case SPF_RESULT_NONE:		return SPF_NONE;
	case SPF_RESULT_TEMPERROR:	return SPF_TEMPERROR;
	case SPF_RESULT_PERMERROR:	return SPF_PERMERROR;
	case SPF_RESULT_INVALID:
	default:
		/* libspf2 "should never return this"; it does, for errors
		 * it met before a result: DNS trouble is temporary, the
		 * rest is the record's fault. */
		return err == SPF_E_DNS_ERROR ? SPF_TEMPERROR : SPF_PERMERROR;
	}
}

/* The identity's domain: after the last '@' of the sender, or HELO. */
static void
spf_identity(const struct spf_request *q, struct spf_verdict *v)
{
	const char *at;

	if (q->sender[0] == '\0') {
		v->identity = "helo";
		str_copy(v->domain, q->helo, sizeof(v->domain));
		return;
	}
	v->identity = "mailfrom";
	at = strrchr(q->sender, '@');
	str_copy(v->domain, at ? at + 1 : q->sender, sizeof(v->domain));
}

/* A client address as libspf2 wants it; an IPv4-mapped one as IPv4. */
static int
spf_set_ip(SPF_request_t *req, const char *ip, int libonly)
{
	struct in_addr a4;
	struct in6_addr a6;

	if (inet_pton(AF_INET, ip, &a4) == 1)
		return SPF_request_set_ipv4(req, a4);
	if (inet_pton(AF_INET6, ip, &a6) != 1)
		return -1;
	if (!libonly && IN6_IS_ADDR_V4MAPPED(&a6)) {
		memcpy(&a4, a6.s6_addr + 12, 4);
		return SPF_request_set_ipv4(req, a4);
	}
	return SPF_request_set_ipv6(req, a6);
}

/*
 * SPF_request_query_mailfrom without its "localhost always passes": a
 * loopback client (a local filter, or a test) is evaluated like any
 * other; exemptions are the caller's policy (trusted networks).
 */
static SPF_errcode_t
spf_query(SPF_request_t *req, SPF_response_t **resp)
{
	SPF_record_t *rec = NULL;
	SPF_errcode_t err;

	*resp = SPF_response_new(req);
	if (*resp == NULL)
		return SPF_E_NO_MEMORY;
	req->cur_dom = req->use_helo ? req->helo_dom : req->env_from_dp;
	err = SPF_server_get_record(req->spf_server, req, *resp, &rec);
	if (err != SPF_E_SUCCESS) {
		if (rec)
			SPF_record_free(rec);
		return err;
	}
	(*resp)->spf_record_exp = rec;
	err = SPF_record_interpret(rec, req, *resp, 0);
	SPF_record_free(rec);
	return err;
}

/* The request's macro values but d, r, t and p (RFC 7208 7.3), in the
 * caller's buffers: sender[600], local[300], ip[80], nib[80]. */
static void
spf_vals(const struct spf_request *q, struct spf_macro_vals *mv,
    char *sender, char *local, char *ip, char *nib)
{
	const char *at;

	memset(mv, 0, sizeof(*mv));
	if (q->sender[0])
		str_copy(sender, q->sender, 600);
	else
		snprintf(sender, 600, "postmaster@%s", q->helo);
	at = strrchr(sender, '@');
	snprintf(local, 300, "%.*s", at ? (int)(at - sender) : 0, sender);
	mv->v = spf_macro_ip(q->ip, ip, 80, nib, 80);
	mv->s = sender;
	mv->l = local[0] ? local : "postmaster";
	mv->o = at ? at + 1 : sender;
	mv->i = nib;
	mv->h = q->helo;
	mv->c = ip;
}

/*
 * The p macro for an explanation (RFC 7208 7.3, 5.5): the client's PTR
 * names (the first 10) whose addresses include the client, one picked by
 * spf_macro_pick_p; "unknown" on any DNS error.  ip is the c macro's value.
 */
static void
spf_ptr_name(const struct spf *s, const char *ip, const char *domain,
    char *out, size_t cap)
{
	struct dns_result ptr, a;
	struct sockaddr_storage want;
	char *valid[10];
	size_t n = 0;
	int v6 = strchr(ip, ':') != NULL, fam = v6 ? AF_INET6 : AF_INET;

	str_copy(out, "unknown", cap);
	memset(&want, 0, sizeof(want));
	if (inet_pton(fam, ip, v6 ? (void *)&((struct sockaddr_in6 *)&want)->
	    sin6_addr : (void *)&((struct sockaddr_in *)&want)->sin_addr) != 1)
		return;
	if (spfdns_query(s->dns, ip, DNS_PTR, &ptr) == -1)
		return;
	for (size_t k = 0; ptr.status == DNS_OK && k < ptr.ntxt && k < 10;
	    k++) {
		int ok = 0;

		if (spfdns_query(s->dns, ptr.txt[k], v6 ? DNS_AAAA : DNS_A,
		    &a) == -1)
			continue;
		for (size_t j = 0; a.status == DNS_OK && j < a.naddr; j++) {
			const struct sockaddr_storage *g = &a.addr[j];

			if (g->ss_family != fam)
				continue;
			if (v6 ? memcmp(&((const struct sockaddr_in6 *)g)->
			    sin6_addr, &((struct sockaddr_in6 *)&want)->
			    sin6_addr, 16) == 0 :
			    ((const struct sockaddr_in *)g)->sin_addr.s_addr ==
			    ((struct sockaddr_in *)&want)->sin_addr.s_addr)
				ok = 1;
		}
		dns_result_free(&a);
		if (ok)
			valid[n++] = ptr.txt[k];
	}
	str_copy(out, spf_macro_pick_p(valid, n, domain), cap);
	dns_result_free(&ptr);
}

/*
 * The explanation of a fail, expanded here rather than taken from
 * libspf2, which turns its blanks into '%' and leaves macros unexpanded:
 * the text of the exp= lookup when there was one with a single record
 * (RFC 7208 6.2), else our default.
 */
static void
spf_explain(const struct spf *s, const struct spf_request *q,
    struct spf_verdict *v, const struct spfdns_track *t)
{
	struct spf_macro_vals mv;
	char sender[600], local[300], ip[80], nib[80], ts[32], pname[256];
	const char *tmpl = SPF_EXP_DEFAULT;
	struct buf b;

	if (t->last_txt && !t->last_spf && t->last_n == 1 && t->last_text)
		tmpl = t->last_text;
	spf_vals(q, &mv, sender, local, ip, nib);
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	/* The PTR lookups only when the text asks for them. */
	mv.p = NULL;
	for (const char *m = tmpl; (m = strchr(m, '%')) != NULL; m += 2) {
		if (m[1] == '{' && (m[2] == 'p' || m[2] == 'P')) {
			spf_ptr_name(s, ip, v->domain, pname, sizeof(pname));
			mv.p = pname;
			break;
		}
		if (m[1] == '\0')
			break;
	}
	mv.d = v->domain;
	mv.r = s->receiver;
	mv.t = ts;
	buf_init(&b);
	if (spf_macro_expand(tmpl, strlen(tmpl), &mv, 1, &b) == -1) {
		buf_reset(&b);
		spf_macro_expand(SPF_EXP_DEFAULT, strlen(SPF_EXP_DEFAULT), &mv,
		    1, &b);
	}
	buf_putc(&b, '\0');
	spf_clean(v->exp, sizeof(v->exp), b.data);
	buf_free(&b);
}

/* Our checks over what libspf2 concluded (see the file comment). */
static void
spf_fixup(struct spf_verdict *v, const struct spfdns_track *t)
{
	const char *why;
	int voids = t->voids, temp = t->temp;

	/* On fail the last TXT lookup may be exp='s: its failure only
	 * costs the explanation (RFC 7208 6.2). */
	if (v->result == SPF_FAIL && t->last_txt && !t->last_spf &&
	    t->last_index == t->lookups) {
		voids -= t->last_void;
		temp -= t->last_temp;
	}
	for (int i = 0; i < t->nrec; i++) {
		if (spf_record_check(t->rec[i], &why) == -1) {
			v->result = SPF_PERMERROR;
			snprintf(v->reason, sizeof(v->reason), "bad record at "
			    "%s: %s", t->recdom[i], why);
			return;
		}
	}
	/* libspf2 takes a lookup that failed for now as "no match" or
	 * "no record": the RFC makes the whole evaluation temperror. */
	if (temp > 0) {
		v->result = SPF_TEMPERROR;
		str_copy(v->reason, "DNS lookup failed for now",
		    sizeof(v->reason));
		return;
	}
	if (v->result == SPF_PERMERROR || v->result == SPF_TEMPERROR)
		return;
	if (t->mx_over) {
		v->result = SPF_PERMERROR;
		str_copy(v->reason, "more than 10 MX records",
		    sizeof(v->reason));
		return;
	}
	if (voids > SPF_VOID_MAX) {
		v->result = SPF_PERMERROR;
		snprintf(v->reason, sizeof(v->reason), "more than %d void "
		    "lookups", SPF_VOID_MAX);
	}
}

void
spf_check(struct spf *s, const struct spf_request *q, struct spf_verdict *v)
{
	SPF_request_t *req;
	SPF_response_t *resp = NULL;
	SPF_errcode_t err;
	struct spfdns_track t;
	struct spf_macro_vals mv;
	char sender[600], local[300], ip[80], nib[80];

	memset(v, 0, sizeof(*v));
	spf_identity(q, v);
	/* RFC 7208 4.3: not a multi-label domain name (an address literal,
	 * one label) is none at once, and nothing is asked of DNS. */
	{
		const char *dot = strchr(v->domain, '.');

		if (v->domain[0] == '[' || dot == NULL || dot[1] == '\0') {
			v->result = SPF_NONE;
			str_copy(v->reason, "not a domain name",
			    sizeof(v->reason));
			v->ttl = SPF_TTL_NODNS;
			return;
		}
	}
	req = SPF_request_new(s->srv);
	if (req == NULL || spf_set_ip(req, q->ip, q->libonly) != 0) {
		v->result = SPF_PERMERROR;
		str_copy(v->reason, "bad client address", sizeof(v->reason));
		if (req)
			SPF_request_free(req);
		return;
	}
	SPF_request_set_helo_dom(req, q->helo);
	if (q->sender[0] != '\0')
		SPF_request_set_env_from(req, q->sender);
	spfdns_track_begin(&t);
	t.fix = !q->libonly;
	spf_vals(q, &mv, sender, local, ip, nib);
	t.mv = &mv;
	t.deadline_ms = q->deadline_ms;
	t.v6 = strchr(q->ip, ':') != NULL && strchr(q->ip, '.') == NULL;
	err = q->libonly ? SPF_request_query_mailfrom(req, &resp) :
	    spf_query(req, &resp);
	if (resp == NULL) {
		v->result = err == SPF_E_DNS_ERROR ? SPF_TEMPERROR :
		    SPF_PERMERROR;
		snprintf(v->reason, sizeof(v->reason), "%s",
		    SPF_strerror(err));
	} else {
		v->result = spf_map(SPF_response_result(resp),
		    SPF_response_errcode(resp));
		spf_clean(v->reason, sizeof(v->reason),
		    SPF_response_errcode(resp) != SPF_E_SUCCESS ?
		    SPF_strerror(SPF_response_errcode(resp)) :
		    SPF_strreason(SPF_response_reason(resp)));
		if (v->result == SPF_FAIL)
			spf_clean(v->exp, sizeof(v->exp),
			    SPF_response_get_explanation(resp));
		/* libspf2 keeps why a record was refused in its messages. */
		if (SPF_response_messages(resp) > 0 &&
		    (v->result == SPF_PERMERROR || v->result == SPF_TEMPERROR))
			spf_clean(v->reason, sizeof(v->reason),
			    SPF_error_message(SPF_response_message(resp, 0)));
	}
	if (!q->libonly) {
		spf_fixup(v, &t);
		v->exp[0] = '\0';
		if (v->result == SPF_FAIL)
			spf_explain(s, q, v, &t);
	}
	/* How long the same request gets the same verdict: while every
	 * answer read holds.  Not a failure for now, nor a fail (its
	 * explanation may name the time), nor one a lookup failed in. */
	if (!q->libonly && !t.failed && t.temp == 0 &&
	    v->result != SPF_TEMPERROR && v->result != SPF_FAIL)
		v->ttl = t.ttl_seen ? t.ttl_min : SPF_TTL_NODNS;
	spfdns_track_end(&t);
	if (resp)
		SPF_response_free(resp);
	SPF_request_free(req);
}

/* A header value: a dot-atom as is, anything else quoted. */
static void
spf_hval(struct buf *b, const char *s)
{
	int atom = *s != '\0';

	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr(".-_@+", *p))
			atom = 0;
	if (atom) {
		buf_printf(b, "%s", s);
		return;
	}
	buf_putc(b, '"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c > 0x7e)
			buf_printf(b, "?");
		else if (c == '"' || c == '\\')
			buf_printf(b, "\\%c", c);
		else
			buf_putc(b, (char)c);
	}
	buf_putc(b, '"');
}

static const char *
spf_comment(enum spf_result r)
{
	switch (r) {
	case SPF_PASS:		return "designates";
	case SPF_FAIL:		return "does not designate";
	case SPF_SOFTFAIL:	return "does not designate (softfail)";
	case SPF_NEUTRAL:	return "neither permits nor denies";
	case SPF_NONE:		return "publishes no SPF record for";
	case SPF_TEMPERROR:	return "could not be checked now for";
	default:		return "has an unusable SPF record for";
	}
}

void
spf_received_header(struct buf *b, const struct spf_verdict *v,
    const struct spf_request *q, const char *receiver)
{
	char dom[256];

	spf_clean(dom, sizeof(dom), v->domain);
	buf_printf(b, "Received-SPF: %s (%s: domain of %s %s %s)\r\n\t",
	    spf_result_name(v->result), receiver, dom,
	    spf_comment(v->result), q->ip);
	buf_printf(b, "client-ip=%s; envelope-from=", q->ip);
	spf_hval(b, q->sender);
	buf_printf(b, ";\r\n\thelo=");
	spf_hval(b, q->helo);
	buf_printf(b, "; receiver=%s; identity=%s;\r\n", receiver,
	    v->identity);
}

void
spf_ar_part(struct buf *b, const struct spf_verdict *v,
    const struct spf_request *q)
{
	/* RFC 8601 2.7.2: smtp.mailfrom is the address, smtp.helo the name */
	buf_printf(b, "spf=%s smtp.%s=", spf_result_name(v->result),
	    v->identity);
	spf_hval(b, q->sender[0] ? q->sender : q->helo);
}

enum spf_action
spf_policy(const struct spf_verdict *v, char *reply, size_t cap)
{
	char dom[256];

	spf_clean(dom, sizeof(dom), v->domain);
	reply[0] = '\0';
	if (v->result == SPF_FAIL) {
		if (v->exp[0])
			snprintf(reply, cap, "550 5.7.23 SPF: %s", v->exp);
		else
			snprintf(reply, cap, "550 5.7.23 SPF: %s does not "
			    "allow this host to send for it", dom);
		return SPF_REJECT;
	}
	if (v->result == SPF_TEMPERROR) {
		snprintf(reply, cap, "451 4.7.24 SPF: temporary DNS error "
		    "checking %s, try again later", dom);
		return SPF_TEMPFAIL;
	}
	return SPF_ACCEPT;
}
