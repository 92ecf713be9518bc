/*
 * fuzz_vault: the vault's request handler on arbitrary requests, as a
 * taken-over smtp process could send them, and the throttle request the
 * queue process sends (ternctl auth: list, or clear a key).  The first
 * byte picks the request type; the rest is the payload.  A request is answered or
 * refused, never more than one answer, and the secrets it holds are never
 * in an answer to anything but a route-credentials request.  A first
 * byte of 0xf0 or more makes a DKIM signing request (fuzz.example has
 * the Ed25519 key ed1): its answer never holds the private key.
 *
 * A first byte below 0xf0 that is 5 modulo 6 drives the AUTH throttle's
 * known clients (auth/authcheck.c)
 * with the client addresses an smtp process passes on: a list of
 * operations (failure, success, question, listing), each an op byte, an
 * account byte, a time step byte and a client up to a newline.  The
 * known sets stay within their bounds, a success makes its client known,
 * a client key is a fixed point, and the listing's known counts add up.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/authcheck.h"
#include "lib/ipc.h"
#include "lib/proc.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static const char key[] = "fuzz-vault-key-0123456789abcdef";
/* A test key made for this target alone. */
static const char dkim_pem[] = "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VwBCIEIIcDnuzkez4dhknimu18Q6EYlxBngqeIoRZohXwmlvVs\n"
    "-----END PRIVATE KEY-----\n";
static const char dkim_secret[] = "MC4CAQAwBQYDK2VwBCIEIIcDnuzkez4dhkni";

static void
load_once(void)
{
	static int done;
	struct buf b;

	if (done)
		return;
	done = 1;
	buf_init(&b);
	rec_put(&b, T_KEY, key, sizeof(key) - 1);
	rec_put_str(&b, T_DOMAIN, "fwd.example");
	rec_put_str(&b, T_PATH, "/etc/tern/relay.secret");
	rec_put_str(&b, T_USER, "relayuser");
	rec_put_str(&b, T_PASS, "relay-password-xyz");
	rec_put_u64(&b, T_KNOWN, 3600);
	rec_put_str(&b, T_DKIM, "fuzz.example");
	rec_put_str(&b, T_SELECTOR, "ed1");
	rec_put_str(&b, T_PEM, dkim_pem);
	if (vault_load(b.data, b.len) != 0)
		abort();
	buf_free(&b);
}

static size_t walk_known;

static void
walk_cb(void *arg, int kind, const char *key, unsigned failures,
    unsigned delay, int refused, time_t until, unsigned known)
{
	if (kind == 0 && known != 0)
		abort();
	if (known > AUTHCHECK_KNOWN_PER || failures == 0)
		abort();
	walk_known += known;
}

static void
fuzz_known(const uint8_t *data, size_t len)
{
	struct authcheck *ac = authcheck_new();
	char client[AUTHCHECK_CLIENT_MAX + 1], acct[16], k1[80], k2[80];
	time_t now = 1700000000;
	size_t n;
	uint8_t op;

	authcheck_set_known_window(ac, 600);
	while (len >= 3) {
		op = data[0];
		snprintf(acct, sizeof(acct), "user%u", data[1] % 16u);
		now += data[2];
		data += 3;
		len -= 3;
		for (n = 0; n < len && n < AUTHCHECK_CLIENT_MAX &&
		    data[n] != '\n'; n++)
			;
		memcpy(client, data, n);
		client[n] = '\0';
		data += n + (n < len);
		len -= n + (n < len);
		/* The vault takes letters, digits and ".:_-" alone. */
		if (strspn(client, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:_-") != n)
			continue;
		authcheck_known_key(client, k1, sizeof(k1));
		authcheck_known_key(k1, k2, sizeof(k2));
		if (strlen(k1) > AUTHCHECK_CLIENT_MAX || strcmp(k1, k2) != 0)
			abort();
		switch (op % 4) {
		case 0:
			authcheck_fail(ac, client, acct, now);
			break;
		case 1:
			authcheck_known_add(ac, acct, client, now);
			if (!authcheck_known(ac, acct, client, now))
				abort();
			break;
		case 2:
			if (authcheck_known(ac, acct, client, now) &&
			    authcheck_known_count(ac, acct, now) == 0)
				abort();
			break;
		case 3:
			walk_known = 0;
			authcheck_walk(ac, now, walk_cb, NULL);
			if (walk_known > authcheck_known_total(ac, now))
				abort();
			break;
		}
		if (authcheck_known_count(ac, acct, now) > AUTHCHECK_KNOWN_PER ||
		    authcheck_known_total(ac, now) > AUTHCHECK_KNOWN_MAX)
			abort();
	}
	authcheck_free(ac);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct buf out;
	int type;

	load_once();
	if (len < 1)
		return 0;
	if (data[0] < 0xf0 && data[0] % 6 == 5) {
		fuzz_known(data + 1, len - 1);
		return 0;
	}
	type = data[0] >= 0xf0 ? IMSG_V_DKIM_SIGN : data[0] % 5 == 4 ?
	    IMSG_V_THROTTLE : IMSG_V_SRS_REVERSE + data[0] % 4;
	buf_init(&out);
	if ((type == IMSG_V_THROTTLE ? vault_throttle_request(data + 1,
	    len - 1, 1700000000, &out) : vault_request(type, data + 1,
	    len - 1, &out)) == 0) {
		if (out.len == 0)
			abort();
		/* A secret in an answer is a leak, unless the request
		   itself carried those bytes (an address echoed back). */
		if (type != IMSG_V_ROUTE_AUTH && out.data &&
		    ((memmem(out.data, out.len, key, sizeof(key) - 1) &&
		    !memmem(data, len, key, sizeof(key) - 1)) ||
		    (memmem(out.data, out.len, "relay-password-xyz", 18) &&
		    !memmem(data, len, "relay-password-xyz", 18))))
			abort();
		if (out.data && memmem(out.data, out.len, dkim_secret,
		    sizeof(dkim_secret) - 1) && !memmem(data, len,
		    dkim_secret, sizeof(dkim_secret) - 1))
			abort();
	} else if (out.len != 0)
		abort();
	buf_free(&out);
	return 0;
}
