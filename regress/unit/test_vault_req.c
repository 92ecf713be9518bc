/*
 * test_vault_req: the vault's answers to the smtp process's requests, with
 * secrets loaded as the parent sends them: SRS forward and reverse round
 * trips, route credentials by auth file, and refusals of malformed
 * requests (no answer at all).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/vault.h"
#include "lib/ipc.h"
#include "lib/proc.h"
#include "lib/util.h"
#include "regress/unit/unit.h"

void test_vault_req(void);

struct answer {
	uint64_t	job, kind, status;
	char		text[1024], pass[256];
};

static int
ask(int type, uint8_t tag, const char *arg, uint64_t job, struct answer *a)
{
	struct rec_reader rd;
	struct buf req, out;
	struct rec r;
	char *s;
	int rv;

	buf_init(&req);
	buf_init(&out);
	if (job)
		rec_put_u64(&req, T_JOB, job);
	if (arg)
		rec_put_str(&req, tag, arg);
	rv = vault_request(type, req.data ? req.data : "", req.len, &out);
	memset(a, 0, sizeof(*a));
	rec_reader_init(&rd, out.data ? out.data : "", out.len);
	while (rec_next(&rd, &r) == 1) {
		if (r.tag == T_JOB)
			rec_u64(&r, &a->job);
		else if (r.tag == T_KIND)
			rec_u64(&r, &a->kind);
		else if (r.tag == T_STATUS)
			rec_u64(&r, &a->status);
		else if ((r.tag == T_TEXT || r.tag == T_PASS) &&
		    (s = rec_str(&r, 1000)) != NULL) {
			str_copy(r.tag == T_TEXT ? a->text : a->pass, s,
			    r.tag == T_TEXT ? sizeof(a->text) : sizeof(a->pass));
			free(s);
		}
	}
	if (rv == -1)
		CHECK(out.len == 0);
	buf_free(&req);
	buf_free(&out);
	return rv;
}

static void
load(int with_key)
{
	struct buf b;

	buf_init(&b);
	if (with_key)
		rec_put(&b, T_KEY, "0123456789abcdef-vault-key", 26);
	rec_put_str(&b, T_DOMAIN, "fwd.example");
	rec_put_str(&b, T_PATH, "/etc/tern/relay.secret");
	rec_put_str(&b, T_USER, "relayuser");
	rec_put_str(&b, T_PASS, "s3cret pass");
	CHECK(vault_load(b.data, b.len) == 0);
	buf_free(&b);
}

void
test_vault_req(void)
{
	struct answer a, b;
	struct buf bad;

	load(1);
	/* A forwarded sender is rewritten, and reverses to itself. */
	CHECK(ask(IMSG_V_SRS_FORWARD, T_SENDER, "joe@example.org", 5, &a) == 0);
	CHECK(a.job == 5 && a.kind == IMSG_V_SRS_FORWARD &&
	    a.status == VAULT_OK);
	CHECK(strncmp(a.text, "SRS0=", 5) == 0);
	CHECK(strstr(a.text, "@fwd.example") != NULL);
	CHECK(ask(IMSG_V_SRS_REVERSE, T_RCPT, a.text, 6, &b) == 0);
	CHECK(b.job == 6 && b.status == VAULT_OK);
	CHECK(strcmp(b.text, "joe@example.org") == 0);
	/* A forged hash is invalid, with a reason; a plain address is none. */
	a.text[5] = a.text[5] == 'A' ? 'B' : 'A';
	CHECK(ask(IMSG_V_SRS_REVERSE, T_RCPT, a.text, 7, &b) == 0);
	CHECK(b.status == VAULT_INVALID && b.text[0] != '\0');
	CHECK(ask(IMSG_V_SRS_REVERSE, T_RCPT, "joe@fwd.example", 8, &b) == 0);
	CHECK(b.status == VAULT_NONE);
	/* Route credentials by the auth file the config names. */
	CHECK(ask(IMSG_V_ROUTE_AUTH, T_PATH, "/etc/tern/relay.secret", 9,
	    &a) == 0);
	CHECK(a.status == VAULT_OK && strcmp(a.text, "relayuser") == 0 &&
	    strcmp(a.pass, "s3cret pass") == 0);
	CHECK(ask(IMSG_V_ROUTE_AUTH, T_PATH, "/etc/other", 10, &a) == 0);
	CHECK(a.status == VAULT_NONE && a.pass[0] == '\0');
	/* Malformed: no job, no argument, the wrong tag, another type. */
	CHECK(ask(IMSG_V_SRS_REVERSE, T_RCPT, "x@y", 0, &a) == -1);
	CHECK(ask(IMSG_V_SRS_REVERSE, T_RCPT, NULL, 11, &a) == -1);
	CHECK(ask(IMSG_V_SRS_REVERSE, T_PATH, "x@y", 12, &a) == -1);
	CHECK(ask(IMSG_P_SECRETS, T_RCPT, "x@y", 13, &a) == -1);
	CHECK(ask(IMSG_V_REPLY, T_RCPT, "x@y", 14, &a) == -1);
	/* Two arguments, or a truncated record: refused. */
	buf_init(&bad);
	rec_put_u64(&bad, T_JOB, 15);
	rec_put_str(&bad, T_RCPT, "a@b");
	rec_put_str(&bad, T_RCPT, "c@d");
	{
		struct buf out;

		buf_init(&out);
		CHECK(vault_request(IMSG_V_SRS_REVERSE, bad.data, bad.len,
		    &out) == -1);
		CHECK(vault_request(IMSG_V_SRS_REVERSE, bad.data,
		    bad.len - 3, &out) == -1);
		CHECK(out.len == 0);
		buf_free(&out);
	}
	buf_free(&bad);
	/* The queue's throttle request: smtp's requests do not take it, it
	   takes none of theirs; a list, a clear of nothing, malformed. */
	CHECK(ask(IMSG_V_THROTTLE, T_ID, "192.0.2.1", 20, &a) == -1);
	{
		struct buf req, out;

		buf_init(&req);
		buf_init(&out);
		rec_put_u64(&req, T_JOB, 21);
		CHECK(vault_throttle_request(req.data, req.len, 1700000000,
		    &out) == 0 && out.len > 0);
		buf_reset(&out);
		rec_put_str(&req, T_ID, "192.0.2.1");
		CHECK(vault_throttle_request(req.data, req.len, 1700000000,
		    &out) == 0);
		CHECK(memmem(out.data, out.len, "\0\0\0\0\0\0\0\1", 8) != NULL);
		buf_reset(&out);
		CHECK(vault_throttle_request(req.data, req.len - 2, 1700000000,
		    &out) == -1 && out.len == 0);
		rec_put_str(&req, T_ID, "192.0.2.2");	/* two keys */
		CHECK(vault_throttle_request(req.data, req.len, 1700000000,
		    &out) == -1 && out.len == 0);
		buf_reset(&req);
		rec_put_str(&req, T_ID, "192.0.2.1");	/* no job */
		CHECK(vault_throttle_request(req.data, req.len, 1700000000,
		    &out) == -1 && out.len == 0);
		buf_free(&req);
		buf_free(&out);
	}
	/* Without a key, SRS is off: nothing rewritten, nothing reversed. */
	load(0);
	CHECK(ask(IMSG_V_SRS_FORWARD, T_SENDER, "joe@example.org", 16,
	    &a) == 0);
	CHECK(a.status == VAULT_NONE);
	/* Secrets a second message replaces are gone. */
	{
		struct buf b2;

		buf_init(&b2);
		rec_put_str(&b2, T_DOMAIN, "fwd.example");
		CHECK(vault_load(b2.data, b2.len) == 0);
		buf_free(&b2);
	}
	CHECK(ask(IMSG_V_ROUTE_AUTH, T_PATH, "/etc/tern/relay.secret", 17,
	    &a) == 0);
	CHECK(a.status == VAULT_NONE);
	/* A route record without its path first is malformed. */
	buf_init(&bad);
	rec_put_str(&bad, T_USER, "u");
	CHECK(vault_load(bad.data, bad.len) == -1);
	buf_free(&bad);
}
