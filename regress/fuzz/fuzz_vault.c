/*
 * fuzz_vault: the vault's request handler on arbitrary requests, as a
 * taken-over smtp process could send them, and the throttle request the
 * queue process sends (ternctl auth: list, or clear a key).  The first
 * byte picks the request type; the rest is the payload.  A request is answered or
 * refused, never more than one answer, and the secrets it holds are never
 * in an answer to anything but a route-credentials request.  A first
 * byte of 0xf0 or more makes a DKIM signing request (fuzz.example has
 * the Ed25519 key ed1): its answer never holds the private key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
	rec_put_str(&b, T_DKIM, "fuzz.example");
	rec_put_str(&b, T_SELECTOR, "ed1");
	rec_put_str(&b, T_PEM, dkim_pem);
	if (vault_load(b.data, b.len) != 0)
		abort();
	buf_free(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct buf out;
	int type;

	load_once();
	if (len < 1)
		return 0;
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
