/*
 * test_srs: SRS0/SRS1 forward and reverse, refusals, and a cross-check
 * against an independent Python rendering of the libsrs2 formula (itself
 * checked against postsrsd's published vector first).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth/srs.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_srs(void);

static const unsigned char key[] = "0123456789abcdef-tern-test-key";
#define KEYLEN	(sizeof(key) - 1)
#define NOW	((time_t)1700000000)	/* day 19675, stamp "G3" */
#define DAY	((time_t)86400)

static int
rev(const char *addr, time_t now, char *out, size_t outlen, const char **why)
{
	return srs_reverse(addr, key, KEYLEN, now, 21, out, outlen, why);
}

/* Run the Python formula; it prints the SRS0 and SRS1 we must produce. */
static int
python_vectors(char *srs0, size_t n0, char *srs1, size_t n1)
{
	static const char cmd[] =
	    "/usr/bin/python3 -c '\n"
	    "import hmac, hashlib, base64\n"
	    "A = \"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567\"\n"
	    "def tt(now):\n"
	    "    d = (now // 86400) % 1024\n"
	    "    return A[d >> 5] + A[d & 31]\n"
	    "def h(s, *a):\n"
	    "    m = hmac.new(s, \"\".join(a).lower().encode(), hashlib.sha1)\n"
	    "    return base64.b64encode(m.digest()).decode()[:4]\n"
	    "t = tt(1577836860)\n"
	    "assert (t, h(b\"tops3cr3t\", t, \"otherdomain.com\", \"test\"))"
	    " == (\"2W\", \"vmyz\")\n"
	    "s = b\"0123456789abcdef-tern-test-key\"\n"
	    "t = tt(1700000000)\n"
	    "l, d = \"Alice.Smith\", \"Example.ORG\"\n"
	    "r0 = \"=%s=%s=%s=%s\" % (h(s, t, d, l), t, d, l)\n"
	    "print(\"SRS0\" + r0 + \"@srs.example.net\")\n"
	    "print(\"SRS1=%s=%s=%s@fwd.example\" % (h(s, \"srs.example.net\","
	    " r0), \"srs.example.net\", r0))\n"
	    "'";
	FILE *fp;
	int ok;

	if ((fp = popen(cmd, "r")) == NULL)
		return -1;
	ok = fgets(srs0, (int)n0, fp) != NULL &&
	    fgets(srs1, (int)n1, fp) != NULL;
	if (pclose(fp) != 0 || !ok)
		return -1;
	srs0[strcspn(srs0, "\n")] = '\0';
	srs1[strcspn(srs1, "\n")] = '\0';
	return 0;
}

static void
test_srs_vector(void)
{
	char want0[300], want1[300], got[300];

	CHECK(python_vectors(want0, sizeof(want0), want1, sizeof(want1)) == 0);
	CHECK(srs_forward("Alice.Smith@Example.ORG", "srs.example.net", key,
	    KEYLEN, NOW, got, sizeof(got)) == 0);
	CHECK(strcmp(got, want0) == 0);
	CHECK(strncmp(got, "SRS0=", 5) == 0 &&
	    strcmp(got + 9, "=G3=Example.ORG=Alice.Smith@srs.example.net") == 0);
	CHECK(srs_forward(want0, "fwd.example", key, KEYLEN, NOW, got,
	    sizeof(got)) == 0);
	CHECK(strcmp(got, want1) == 0);
}

static void
test_srs_roundtrip(void)
{
	char a[300], b[300], c[300], t[300];
	const char *why;

	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, a, sizeof(a)) == 0);
	CHECK(strlen(a) == strlen("SRS0=HHHH=G3=example.org=alice@srs.example.net"));
	CHECK(rev(a, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, "alice@example.org") == 0);
	/* a '=' in the local part survives */
	CHECK(srs_forward("a=b+c@example.org", "srs.example.net", key, KEYLEN,
	    NOW, a, sizeof(a)) == 0);
	CHECK(rev(a, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, "a=b+c@example.org") == 0);

	/* ages: 21 days ok, 22 not; a day ahead is skew, two are not */
	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, a, sizeof(a)) == 0);
	CHECK(rev(a, NOW + 21 * DAY, b, sizeof(b), &why) == 1);
	why = NULL;
	CHECK(rev(a, NOW + 22 * DAY, b, sizeof(b), &why) == -1);
	CHECK(why != NULL && strcmp(why, "timestamp expired") == 0);
	CHECK(rev(a, NOW - DAY, b, sizeof(b), &why) == 1);
	CHECK(rev(a, NOW - 2 * DAY, b, sizeof(b), &why) == -1);
	CHECK(why != NULL && strcmp(why, "timestamp in the future") == 0);
	/* after the 1024-day wrap the stamp is still old, not new */
	CHECK(rev(a, NOW + 1024 * DAY, b, sizeof(b), &why) == 1);
	CHECK(srs_reverse(a, key, KEYLEN, NOW + 3 * DAY, 2, b, sizeof(b),
	    &why) == -1);
	CHECK(srs_reverse(a, key, KEYLEN, NOW, 0, b, sizeof(b), &why) == 1);
	CHECK(srs_reverse(a, key, KEYLEN, NOW, -1, b, sizeof(b), &why) == -1);

	/* separators + and - on input; any case in the hash and the tag */
	memcpy(t, a, strlen(a) + 1);
	t[4] = '+';
	CHECK(rev(t, NOW, b, sizeof(b), &why) == 1);
	t[4] = '-';
	CHECK(rev(t, NOW, b, sizeof(b), &why) == 1);
	t[4] = '*';
	CHECK(rev(t, NOW, b, sizeof(b), &why) == 0);
	memcpy(t, a, strlen(a) + 1);
	for (int i = 5; i < 9; i++)
		if (t[i] >= 'a' && t[i] <= 'z')
			t[i] = (char)(t[i] - 'a' + 'A');
		else if (t[i] >= 'A' && t[i] <= 'Z')
			t[i] = (char)(t[i] - 'A' + 'a');
	t[0] = 's';
	t[10] = 'g';	/* stamp */
	CHECK(rev(t, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, "alice@example.org") == 0);
	/* the host part may have been case-folded on the way back */
	memcpy(t, a, strlen(a) + 1);
	memcpy(t + 13, "EXAMPLE.ORG", 11);
	CHECK(rev(t, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, "alice@EXAMPLE.ORG") == 0);

	/* SRS1 from SRS0, and back, hop by hop */
	CHECK(srs_forward(a, "fwd.example", key, KEYLEN, NOW, b,
	    sizeof(b)) == 0);
	CHECK(strncmp(b, "SRS1=", 5) == 0);
	snprintf(t, sizeof(t), "=srs.example.net=%.*s@fwd.example",
	    (int)(strchr(a, '@') - a - 4), a + 4);
	CHECK(strcmp(b + 9, t) == 0);
	CHECK(rev(b, NOW, c, sizeof(c), &why) == 1);
	CHECK(strcmp(c, a) == 0);
	/* SRS1 forwarded again keeps its first hop */
	CHECK(srs_forward(b, "third.example", key, KEYLEN, NOW, c,
	    sizeof(c)) == 0);
	CHECK(strncmp(c, "SRS1=", 5) == 0 && strstr(c, "@third.example"));
	CHECK(rev(c, NOW, t, sizeof(t), &why) == 1);
	CHECK(strcmp(t, a) == 0);
	/* an SRS0 with '+' keeps its separator through SRS1 */
	memcpy(t, a, strlen(a) + 1);
	t[4] = '+';
	CHECK(srs_forward(t, "fwd.example", key, KEYLEN, NOW, b,
	    sizeof(b)) == 0);
	CHECK(strstr(b, "=srs.example.net=+") != NULL);
	CHECK(rev(b, NOW, c, sizeof(c), &why) == 1);
	CHECK(strcmp(c, t) == 0);
	b[4] = '-';
	CHECK(rev(b, NOW, c, sizeof(c), &why) == 1);
	CHECK(strcmp(c, t) == 0);

	/* a sender already in the SRS domain is left alone */
	CHECK(srs_forward("bob@SRS.example.net", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == 0);
	CHECK(strcmp(b, "bob@SRS.example.net") == 0);
}

static void
test_srs_refusals(void)
{
	static const unsigned char other[] = "another-secret-of-16+";
	char a[300], b[300], t[300];
	const char *why;
	char big[300];
	size_t n;

	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, a, sizeof(a)) == 0);
	n = strlen(a);

	/* tampered hash */
	memcpy(t, a, n + 1);
	t[5] = (t[5] == 'Q' || t[5] == 'q') ? 'Z' : 'Q';
	why = NULL;
	CHECK(rev(t, NOW, b, sizeof(b), &why) == -1);
	CHECK(why != NULL && strcmp(why, "bad hash") == 0);
	/* tampered local part, domain, stamp */
	memcpy(t, a, n + 1);
	memcpy(strstr(t, "alice"), "alicf", 5);
	CHECK(rev(t, NOW, b, sizeof(b), &why) == -1);
	memcpy(t, a, n + 1);
	memcpy(strstr(t, "example.org"), "example.com", 11);
	CHECK(rev(t, NOW, b, sizeof(b), &why) == -1);
	memcpy(t, a, n + 1);
	t[11] = '4';
	CHECK(rev(t, NOW, b, sizeof(b), &why) == -1);
	/* wrong secret */
	CHECK(srs_reverse(a, other, sizeof(other) - 1, NOW, 21, b, sizeof(b),
	    &why) == -1);
	/* short or long hash, bad stamp, missing fields */
	CHECK(rev("SRS0=abc=G3=example.org=alice@x", NOW, b, sizeof(b),
	    &why) == -1);
	CHECK(rev("SRS0=abcde=G3=example.org=alice@x", NOW, b, sizeof(b),
	    &why) == -1);
	CHECK(rev("SRS0=abcd=G1=example.org=alice@x", NOW, b, sizeof(b),
	    &why) == -1);
	CHECK(why != NULL && strcmp(why, "bad timestamp") == 0);
	CHECK(rev("SRS0=abcd=G3=example.org@x", NOW, b, sizeof(b), &why) == -1);
	CHECK(rev("SRS0=abcd=G3=example.org=@x", NOW, b, sizeof(b), &why) == -1);
	CHECK(rev("SRS0=@x", NOW, b, sizeof(b), &why) == -1);
	CHECK(rev("SRS1=abcd=host@x", NOW, b, sizeof(b), &why) == -1);
	CHECK(rev("SRS1=abcd=ho st==abcd=G3=d=l@x", NOW, b, sizeof(b),
	    &why) == -1);
	CHECK(rev("SRS0=abcd=G3=exa\rmple.org=alice@x", NOW, b, sizeof(b),
	    &why) == -1);
	/* not SRS at all */
	CHECK(rev("alice@example.org", NOW, b, sizeof(b), &why) == 0);
	CHECK(rev("SRS2=abcd@x", NOW, b, sizeof(b), &why) == 0);
	CHECK(rev("SRS", NOW, b, sizeof(b), &why) == 0);
	CHECK(rev("", NOW, b, sizeof(b), &why) == 0);
	CHECK(srs_reverse(a, key, 15, NOW, 21, b, sizeof(b), &why) == -1);

	CHECK(srs_is_srs("SRS0=x"));
	CHECK(srs_is_srs("srs1+x"));
	CHECK(srs_is_srs("Srs0-x"));
	CHECK(!srs_is_srs("SRS0"));
	CHECK(!srs_is_srs("SRS0x"));
	CHECK(!srs_is_srs("SRS3=x"));
	CHECK(!srs_is_srs("postmaster"));
	CHECK(!srs_is_srs(NULL));

	/* forward refusals: null sender, no domain, junk, short secret */
	CHECK(srs_forward("", "srs.example.net", key, KEYLEN, NOW, b,
	    sizeof(b)) == -1);
	CHECK(srs_forward("postmaster", "srs.example.net", key, KEYLEN, NOW,
	    b, sizeof(b)) == -1);
	CHECK(srs_forward("@example.org", "srs.example.net", key, KEYLEN, NOW,
	    b, sizeof(b)) == -1);
	CHECK(srs_forward("alice@", "srs.example.net", key, KEYLEN, NOW, b,
	    sizeof(b)) == -1);
	CHECK(srs_forward("<alice@example.org>", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("al ice@example.org", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("al\r\nice@example.org", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("alice@exa=mple.org", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("alice@[192.0.2.1]", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("alice@example.org", "", key, KEYLEN, NOW, b,
	    sizeof(b)) == -1);
	CHECK(srs_forward("alice@example.org", "srs.example.net", key, 15,
	    NOW, b, sizeof(b)) == -1);
	CHECK(srs_forward("SRS0=@example.org", "srs.example.net", key,
	    KEYLEN, NOW, b, sizeof(b)) == -1);
	/* SMTPUTF8 local parts go through */
	CHECK(srs_forward("j\xc3\xb6rg@example.org", "srs.example.net", key,
	    KEYLEN, NOW, a, sizeof(a)) == 0);
	CHECK(rev(a, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, "j\xc3\xb6rg@example.org") == 0);

	/* lengths: output is capped at SRS_ADDR_MAX and at outlen */
	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, a, sizeof(a)) == 0);
	n = strlen(a);
	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, b, n) == -1);
	CHECK(srs_forward("alice@example.org", "srs.example.net", key, KEYLEN,
	    NOW, b, n + 1) == 0);
	CHECK(rev(a, NOW, b, strlen("alice@example.org"), &why) == -1);
	CHECK(rev(a, NOW, b, strlen("alice@example.org") + 1, &why) == 1);
	/* SRS0= HHHH= TT= example.org= (25) + local + @srs.example.net (16) */
	memset(big, 'x', sizeof(big));
	n = SRS_ADDR_MAX - 25 - 16;
	memcpy(big + n, "@example.org", 13);
	CHECK(srs_forward(big, "srs.example.net", key, KEYLEN, NOW, a,
	    sizeof(a)) == 0);
	CHECK(strlen(a) == SRS_ADDR_MAX);
	CHECK(rev(a, NOW, b, sizeof(b), &why) == 1);
	CHECK(strcmp(b, big) == 0);
	memset(big, 'x', sizeof(big));
	memcpy(big + n + 1, "@example.org", 13);
	CHECK(srs_forward(big, "srs.example.net", key, KEYLEN, NOW, a,
	    sizeof(a)) == -1);
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "SRS0=", 5);
	CHECK(rev(big, NOW, b, sizeof(b), &why) == -1);
	CHECK(why != NULL && strcmp(why, "address too long") == 0);
}

void
test_srs(void)
{
	test_srs_vector();
	test_srs_roundtrip();
	test_srs_refusals();
}
