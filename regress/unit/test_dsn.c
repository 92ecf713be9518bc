/*
 * test_dsn: delivery status notifications are parsed back here (MIME
 * structure, per-recipient fields, the attached original, line hygiene)
 * and by Python's email package as an independent reader.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "queue/dsn.h"
#include "regress/unit/unit.h"
#include "lib/util.h"

void test_dsn(void);

#define MAXPARTS	8

struct part {
	const char	*hdr;
	size_t		 hlen;
	const char	*body;
	size_t		 blen;
};

struct parsed {
	char		 boundary[128];
	const char	*top;		/* top-level header section */
	size_t		 toplen;
	struct part	 part[MAXPARTS];
	size_t		 nparts;
};

static const char orig_text[] =
    "Received: from client.example (client.example [192.0.2.1])\r\n"
    "\tby mail.example.org with ESMTP id 7A3F9C12\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.net, carol@example.net\r\n"
    "Subject: lunch\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "See you at noon.\r\n"
    "--=_tern_ not our boundary\r\n";
#define ORIG_HDRLEN	(sizeof(orig_text) - 1 - \
			    strlen("\r\nSee you at noon.\r\n--=_tern_ not our boundary\r\n"))

/* Every line ends in CRLF, none is longer than 998, no stray controls. */
static int
lines_ok(const char *s, size_t n)
{
	size_t i, col = 0;

	for (i = 0; i < n; i++) {
		if (s[i] == '\r') {
			if (i + 1 >= n || s[i + 1] != '\n')
				return 0;
			i++;
			col = 0;
			continue;
		}
		if (s[i] == '\n' || ++col > DSN_LINE_MAX)
			return 0;
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			return 0;
		if (s[i] == 0x7f)
			return 0;
	}
	return n >= 2 && s[n - 2] == '\r' && s[n - 1] == '\n';
}

static int
has(const char *hay, size_t n, const char *needle)
{
	return memmem(hay, n, needle, strlen(needle)) != NULL;
}

/* Value of a field in a header block, unfolded; 1 if found. */
static int
field(const char *blk, size_t n, const char *name, char *val, size_t vlen)
{
	const char *p = blk, *end = blk + n, *eol;
	size_t nl = strlen(name), o = 0;
	int in = 0;

	while (p < end) {
		if ((eol = memmem(p, (size_t)(end - p), "\r\n", 2)) == NULL)
			eol = end;
		if (in && (*p == ' ' || *p == '\t')) {
			while (p < eol && o + 1 < vlen)
				val[o++] = *p++;
		} else if (in) {
			break;
		} else if ((size_t)(eol - p) > nl && p[nl] == ':' &&
		    strncasecmp(p, name, nl) == 0) {
			in = 1;
			p += nl + 1;
			while (p < eol && *p == ' ')
				p++;
			while (p < eol && o + 1 < vlen)
				val[o++] = *p++;
		}
		if (eol == end)
			break;
		p = eol + 2;
	}
	val[o] = '\0';
	return in;
}

/* Split a multipart message into its parts; 0 ok, -1 malformed. */
static int
parse(const char *msg, size_t len, struct parsed *ps)
{
	char ct[512], delim[160];
	const char *hend, *p, *q, *b, *end = msg + len;
	size_t dl;

	memset(ps, 0, sizeof(*ps));
	if ((hend = memmem(msg, len, "\r\n\r\n", 4)) == NULL)
		return -1;
	ps->top = msg;
	ps->toplen = (size_t)(hend - msg) + 2;
	if (!field(msg, ps->toplen, "Content-Type", ct, sizeof(ct)) ||
	    (b = strstr(ct, "boundary=\"")) == NULL)
		return -1;
	b += strlen("boundary=\"");
	if ((q = strchr(b, '"')) == NULL || (size_t)(q - b) >= 100)
		return -1;
	memcpy(ps->boundary, b, (size_t)(q - b));
	dl = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", ps->boundary);
	/* the preamble runs to the first delimiter */
	if ((p = memmem(hend, (size_t)(end - hend), delim, dl)) == NULL)
		return -1;
	for (;;) {
		p += dl;
		if (end - p == 4 && memcmp(p, "--\r\n", 4) == 0)
			return ps->nparts > 0 ? 0 : -1;
		if (end - p < 2 || memcmp(p, "\r\n", 2) != 0 ||
		    ps->nparts == MAXPARTS)
			return -1;
		p += 2;
		if ((q = memmem(p, (size_t)(end - p), delim, dl)) == NULL)
			return -1;
		struct part *pt = &ps->part[ps->nparts++];
		pt->hdr = p;
		if ((size_t)(q - p) >= 2 && memcmp(p, "\r\n", 2) == 0) {
			pt->hlen = 0;
			pt->body = p + 2;
		} else if ((hend = memmem(p, (size_t)(q - p), "\r\n\r\n",
		    4)) != NULL) {
			pt->hlen = (size_t)(hend - p) + 2;
			pt->body = hend + 4;
		} else {
			pt->hlen = (size_t)(q - p);
			pt->body = q;
		}
		pt->blen = (size_t)(q - pt->body);
		p = q;
	}
}

static int
part_type(const struct part *pt, const char *want)
{
	char v[256];

	return field(pt->hdr, pt->hlen, "Content-Type", v, sizeof(v)) &&
	    strncasecmp(v, want, strlen(want)) == 0;
}

/* The n-th blank-line separated block of a delivery-status body. */
static int
block(const struct part *pt, size_t n, const char **bp, size_t *bl)
{
	const char *p = pt->body, *end = pt->body + pt->blen, *q;

	*bp = "";
	*bl = 0;
	for (;;) {
		q = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		if (n == 0) {
			*bp = p;
			*bl = (q ? q + 2 : end) - p;
			return 1;
		}
		if (q == NULL)
			return 0;
		p = q + 4;
		n--;
	}
}

static size_t
nblocks(const struct part *pt)
{
	const char *bp;
	size_t bl, n = 0;

	while (block(pt, n, &bp, &bl))
		n++;
	return n;
}

/* Python's email package must read the DSN the same way. */
static int
python_agrees(const struct buf *b, const char *third, const char *want)
{
	char path[] = "/tmp/tern-dsn-XXXXXX", cmd[4096];
	int fd, rc;
	static const char script[] =
	    "import sys, email, email.policy\n"
	    "raw = open(sys.argv[1], \"rb\").read()\n"
	    "m = email.message_from_bytes(raw, policy=email.policy.default)\n"
	    "assert m.get_content_type() == \"multipart/report\"\n"
	    "assert m.get_param(\"report-type\") == \"delivery-status\"\n"
	    "assert str(m[\"Auto-Submitted\"]) == \"auto-replied\"\n"
	    "parts = list(m.iter_parts())\n"
	    "assert parts[0].get_content_type() == \"text/plain\"\n"
	    "ds = parts[1]\n"
	    "assert ds.get_content_type() == \"message/delivery-status\"\n"
	    "blocks = ds.get_payload()\n"
	    "assert str(blocks[0][\"Reporting-MTA\"]).startswith(\"dns;\")\n"
	    "got = [str(x[\"Action\"]) + \":\" + str(x[\"Status\"])"
	    " for x in blocks[1:]]\n"
	    "assert all(x[\"Final-Recipient\"] for x in blocks[1:])\n"
	    "assert got == sys.argv[3].split(\",\"), got\n"
	    "want = sys.argv[2]\n"
	    "assert (parts[2].get_content_type() if len(parts) > 2 else"
	    " \"none\") == want, want\n"
	    "assert not m.defects and not any(p.defects for p in parts)\n";

	if ((fd = mkstemp(path)) == -1)
		return 0;
	if (write(fd, b->data, b->len) != (ssize_t)b->len) {
		close(fd);
		unlink(path);
		return 0;
	}
	close(fd);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 -c '%s' %s %s %s",
	    script, path, third, want);
	rc = system(cmd);
	unlink(path);
	return rc == 0;
}

static void
sample(struct dsn_msg *m, struct dsn_rcpt *r)
{
	memset(m, 0, sizeof(*m));
	m->reporting_mta = "mail.example.org";
	m->from_addr = "MAILER-DAEMON@mail.example.org";
	m->to = "alice@example.org";
	m->queue_id = "7A3F9C12";
	m->arrival = 1700000000;
	m->now = 1700003600;
	m->original = orig_text;
	m->original_len = sizeof(orig_text) - 1;
	m->max_full = 100000;
	memset(r, 0, 3 * sizeof(*r));
	r[0].rcpt = "bob@example.net";
	r[0].orcpt = "rfc822;Bob@example.net";
	r[0].status = "5.1.1";
	r[0].action = "failed";
	r[0].remote_mta = "dns; mx.example.net";
	r[0].diagnostic = "smtp; 550 5.1.1 <bob@example.net>: no such user";
	r[0].last_attempt = 1700003000;
	r[1].rcpt = "carol@example.net";
	r[1].status = "5.2.2";
	r[1].action = "failed";
	r[1].remote_mta = "mx.example.net";
	r[1].diagnostic = "552 5.2.2 mailbox full";
	r[1].last_attempt = 1700003001;
	r[2].rcpt = "dave@example.net";
	r[2].action = "failed";
}

static void
test_dsn_failed(void)
{
	struct dsn_msg m;
	struct dsn_rcpt r[3];
	struct parsed ps;
	struct buf b;
	char v[1024];
	const char *bp;
	size_t bl;

	sample(&m, r);
	buf_init(&b);
	CHECK(dsn_build(&m, r, 3, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0);
	CHECK(ps.nparts == 3);
	CHECK(strncmp(ps.boundary, "=_tern_", 7) == 0);
	CHECK(memmem(orig_text, sizeof(orig_text) - 1, ps.boundary,
	    strlen(ps.boundary)) == NULL);

	CHECK(field(ps.top, ps.toplen, "Subject", v, sizeof(v)) &&
	    strcmp(v, "Undelivered Mail Returned to Sender") == 0);
	CHECK(field(ps.top, ps.toplen, "From", v, sizeof(v)) &&
	    strcmp(v, "Mail Delivery System <MAILER-DAEMON@mail.example.org>")
	    == 0);
	CHECK(field(ps.top, ps.toplen, "To", v, sizeof(v)) &&
	    strcmp(v, "<alice@example.org>") == 0);
	CHECK(field(ps.top, ps.toplen, "Auto-Submitted", v, sizeof(v)) &&
	    strcmp(v, "auto-replied") == 0);
	CHECK(field(ps.top, ps.toplen, "MIME-Version", v, sizeof(v)) &&
	    strcmp(v, "1.0") == 0);
	CHECK(field(ps.top, ps.toplen, "Message-ID", v, sizeof(v)) &&
	    v[0] == '<' && strstr(v, "@mail.example.org>") != NULL);
	CHECK(field(ps.top, ps.toplen, "Date", v, sizeof(v)) &&
	    strlen(v) == strlen("Tue, 14 Nov 2023 23:13:20 +0000") &&
	    v[3] == ',' && strstr(v, " 2023 ") != NULL);
	CHECK(field(ps.top, ps.toplen, "Content-Type", v, sizeof(v)) &&
	    strstr(v, "multipart/report") == v &&
	    strstr(v, "report-type=delivery-status") != NULL);
	CHECK(!field(ps.top, ps.toplen, "Content-Transfer-Encoding", v,
	    sizeof(v)));

	/* part 1: a readable explanation naming each recipient */
	CHECK(part_type(&ps.part[0], "text/plain"));
	CHECK(has(ps.part[0].body, ps.part[0].blen,
	    "<bob@example.net>: 550 5.1.1"));
	CHECK(has(ps.part[0].body, ps.part[0].blen,
	    "<dave@example.net>: delivery failed (status 5.0.0)"));

	/* part 2: the machine-readable report */
	CHECK(part_type(&ps.part[1], "message/delivery-status"));
	CHECK(nblocks(&ps.part[1]) == 4);
	CHECK(block(&ps.part[1], 0, &bp, &bl));
	CHECK(field(bp, bl, "Reporting-MTA", v, sizeof(v)) &&
	    strcmp(v, "dns; mail.example.org") == 0);
	CHECK(field(bp, bl, "X-Queue-ID", v, sizeof(v)) &&
	    strcmp(v, "7A3F9C12") == 0);
	CHECK(field(bp, bl, "Arrival-Date", v, sizeof(v)));
	CHECK(!field(bp, bl, "Original-Envelope-Id", v, sizeof(v)));
	CHECK(block(&ps.part[1], 1, &bp, &bl));
	CHECK(field(bp, bl, "Original-Recipient", v, sizeof(v)) &&
	    strcmp(v, "rfc822; Bob@example.net") == 0);
	CHECK(field(bp, bl, "Final-Recipient", v, sizeof(v)) &&
	    strcmp(v, "rfc822; bob@example.net") == 0);
	CHECK(field(bp, bl, "Action", v, sizeof(v)) &&
	    strcmp(v, "failed") == 0);
	CHECK(field(bp, bl, "Status", v, sizeof(v)) &&
	    strcmp(v, "5.1.1") == 0);
	CHECK(field(bp, bl, "Remote-MTA", v, sizeof(v)) &&
	    strcmp(v, "dns; mx.example.net") == 0);
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strcmp(v, "smtp; 550 5.1.1 <bob@example.net>: no such user") == 0);
	CHECK(field(bp, bl, "Last-Attempt-Date", v, sizeof(v)));
	CHECK(!field(bp, bl, "Will-Retry-Until", v, sizeof(v)));
	CHECK(block(&ps.part[1], 2, &bp, &bl));
	CHECK(!field(bp, bl, "Original-Recipient", v, sizeof(v)));
	CHECK(field(bp, bl, "Remote-MTA", v, sizeof(v)) &&
	    strcmp(v, "dns; mx.example.net") == 0);
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strcmp(v, "smtp; 552 5.2.2 mailbox full") == 0);
	CHECK(field(bp, bl, "Status", v, sizeof(v)) &&
	    strcmp(v, "5.2.2") == 0);
	CHECK(block(&ps.part[1], 3, &bp, &bl));
	CHECK(field(bp, bl, "Final-Recipient", v, sizeof(v)) &&
	    strcmp(v, "rfc822; dave@example.net") == 0);
	CHECK(field(bp, bl, "Status", v, sizeof(v)) &&
	    strcmp(v, "5.0.0") == 0);
	CHECK(!field(bp, bl, "Diagnostic-Code", v, sizeof(v)));
	CHECK(!field(bp, bl, "Last-Attempt-Date", v, sizeof(v)));

	/* part 3: the original's header section, byte for byte */
	CHECK(part_type(&ps.part[2], "text/rfc822-headers"));
	CHECK(ps.part[2].blen == ORIG_HDRLEN &&
	    memcmp(ps.part[2].body, orig_text, ORIG_HDRLEN) == 0);
	CHECK(python_agrees(&b, "text/rfc822-headers",
	    "failed:5.1.1,failed:5.2.2,failed:5.0.0"));

	/* appended to what out held; two builds differ in boundary */
	buf_reset(&b);
	buf_puts(&b, "X");
	CHECK(dsn_build(&m, r, 1, &b) == 0 && b.data[0] == 'X');
	CHECK(parse(b.data + 1, b.len - 1, &ps) == 0 && ps.nparts == 3);
	{
		struct parsed ps2;
		struct buf b2;

		buf_init(&b2);
		CHECK(dsn_build(&m, r, 1, &b2) == 0);
		CHECK(parse(b2.data, b2.len, &ps2) == 0);
		CHECK(strcmp(ps.boundary, ps2.boundary) != 0);
		buf_free(&b2);
	}
	buf_free(&b);
}

static void
test_dsn_full_delayed(void)
{
	struct dsn_msg m;
	struct dsn_rcpt r[3];
	struct parsed ps;
	struct buf b;
	char v[1024], *big;
	const char *bp;
	size_t bl;

	/* RET=FULL and small enough: the whole message */
	sample(&m, r);
	m.return_full = 1;
	m.envid = "QQ314159";
	buf_init(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(part_type(&ps.part[2], "message/rfc822"));
	CHECK(ps.part[2].blen == sizeof(orig_text) - 1 &&
	    memcmp(ps.part[2].body, orig_text, sizeof(orig_text) - 1) == 0);
	CHECK(block(&ps.part[1], 0, &bp, &bl));
	CHECK(field(bp, bl, "Original-Envelope-Id", v, sizeof(v)) &&
	    strcmp(v, "QQ314159") == 0);
	CHECK(python_agrees(&b, "message/rfc822", "failed:5.1.1,failed:5.2.2"));

	/* too big for max_full: headers only */
	m.max_full = sizeof(orig_text) - 2;
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(part_type(&ps.part[2], "text/rfc822-headers"));
	CHECK(ps.part[2].blen == ORIG_HDRLEN);
	m.max_full = sizeof(orig_text) - 1;
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(parse(b.data, b.len, &ps) == 0 &&
	    part_type(&ps.part[2], "message/rfc822"));

	/* a body line over 998 octets cannot ride along: headers only */
	big = xmalloc(3000);
	memcpy(big, "Subject: x\r\n\r\n", 14);
	memset(big + 14, 'a', 2000);
	memcpy(big + 2014, "\r\n", 2);
	m.original = big;
	m.original_len = 2016;
	m.max_full = 100000;
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 1, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0 &&
	    part_type(&ps.part[2], "text/rfc822-headers"));
	CHECK(ps.part[2].blen == 12);
	free(big);

	/* 8-bit original: CTE 8bit on the part and the message */
	m.original = "Subject: caf\xc3\xa9\r\n\r\nd\xc3\xa9j\xc3\xa0\r\n";
	m.original_len = strlen(m.original);
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 1, &b) == 0);
	CHECK(parse(b.data, b.len, &ps) == 0);
	CHECK(field(ps.top, ps.toplen, "Content-Transfer-Encoding", v,
	    sizeof(v)) && strcmp(v, "8bit") == 0);
	CHECK(field(ps.part[2].hdr, ps.part[2].hlen,
	    "Content-Transfer-Encoding", v, sizeof(v)) &&
	    strcmp(v, "8bit") == 0);
	CHECK(ps.part[2].blen == m.original_len &&
	    memcmp(ps.part[2].body, m.original, m.original_len) == 0);

	/* delay warning */
	sample(&m, r);
	m.delayed = 1;
	r[0].action = "delayed";
	r[0].status = "4.4.1";
	r[0].diagnostic = "connect to mx.example.net: timed out";
	r[0].retry_until = 1700400000;
	r[1].action = NULL;
	r[1].status = "bogus";
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(field(ps.top, ps.toplen, "Subject", v, sizeof(v)) &&
	    strcmp(v, "Delayed Mail (still being retried)") == 0);
	CHECK(block(&ps.part[1], 1, &bp, &bl));
	CHECK(field(bp, bl, "Action", v, sizeof(v)) &&
	    strcmp(v, "delayed") == 0);
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strcmp(v, "smtp; connect to mx.example.net: timed out") == 0);
	CHECK(field(bp, bl, "Will-Retry-Until", v, sizeof(v)) &&
	    strstr(v, " 2023 ") != NULL);
	CHECK(block(&ps.part[1], 2, &bp, &bl));
	CHECK(field(bp, bl, "Action", v, sizeof(v)) &&
	    strcmp(v, "delayed") == 0);
	CHECK(field(bp, bl, "Status", v, sizeof(v)) &&
	    strcmp(v, "4.0.0") == 0);
	CHECK(has(ps.part[0].body, ps.part[0].blen, "keep trying"));
	CHECK(python_agrees(&b, "text/rfc822-headers",
	    "delayed:4.4.1,delayed:4.0.0"));
	buf_free(&b);
}

static void
test_dsn_hostile(void)
{
	struct dsn_msg m;
	struct dsn_rcpt r[3];
	struct parsed ps;
	struct buf b;
	char v[8192], *longdiag, *word;
	const char *bp;
	size_t bl, i;

	/* control characters and line breaks from a remote reply */
	sample(&m, r);
	r[0].diagnostic = "smtp; 550 no\r\nX-Injected: yes\r\n\r\n--=_tern_"
	    "\x01\x1b[31mred\x7f\x00";
	r[1].remote_mta = "dns; mx\r\nBcc: victim@example.com";
	r[1].rcpt = "carol@example.net\r\nX-Evil: 1";
	m.to = "alice@example.org>\r\nBcc: x@example.com";
	m.envid = "E\r\nX-Bad: 1";
	buf_init(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(memchr(b.data, 0x1b, b.len) == NULL);
	CHECK(memchr(b.data, 0x01, b.len) == NULL);
	CHECK(memchr(b.data, 0x7f, b.len) == NULL);
	CHECK(!has(b.data, b.len, "\r\nX-Injected"));
	CHECK(!has(b.data, b.len, "\r\nBcc"));
	CHECK(!has(b.data, b.len, "\r\nX-Evil"));
	CHECK(!has(b.data, b.len, "\r\nX-Bad"));
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(nblocks(&ps.part[1]) == 3);
	CHECK(block(&ps.part[1], 1, &bp, &bl));
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strcmp(v, "smtp; 550 no X-Injected: yes --=_tern_??[31mred?") == 0);
	CHECK(python_agrees(&b, "text/rfc822-headers",
	    "failed:5.1.1,failed:5.2.2"));

	/* a long reply is folded, a long word cut: no line over 998 */
	longdiag = xmalloc(6000);
	for (i = 0; i < 5999; i++)
		longdiag[i] = i % 9 == 8 ? ' ' : 'a' + (char)(i % 26);
	longdiag[5999] = '\0';
	word = xmalloc(5000);
	memcpy(word, "smtp; 550 ", 10);
	memset(word + 10, 'W', 4989);
	word[4999] = '\0';
	sample(&m, r);
	r[0].diagnostic = longdiag;
	r[1].diagnostic = word;
	r[2].rcpt = "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example";
	r[2].orcpt = "utf-8;\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90"
	    ".example";
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 3, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(block(&ps.part[1], 1, &bp, &bl));
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strlen(v) > 2000 && strstr(v, "...") != NULL);
	CHECK(block(&ps.part[1], 2, &bp, &bl));
	CHECK(field(bp, bl, "Diagnostic-Code", v, sizeof(v)) &&
	    strlen(v) > 2000);
	/* SMTPUTF8 recipient: utf-8 address type, 7-bit xtext form */
	CHECK(block(&ps.part[1], 3, &bp, &bl));
	CHECK(field(bp, bl, "Final-Recipient", v, sizeof(v)) &&
	    strcmp(v, "utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.example")
	    == 0);
	CHECK(field(bp, bl, "Original-Recipient", v, sizeof(v)) &&
	    strcmp(v, "utf-8; \\x{7528}\\x{6237}@\\x{4F8B}\\x{5B50}.example")
	    == 0);
	CHECK(python_agrees(&b, "text/rfc822-headers",
	    "failed:5.1.1,failed:5.2.2,failed:5.0.0"));
	free(longdiag);
	free(word);

	/* '+' and '=' are escaped in a utf-8 address, kept in rfc822 */
	sample(&m, r);
	r[0].rcpt = "a+b=\xc3\xa9@example.net";
	r[1].rcpt = "a+b=c@example.net";
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 2, &b) == 0);
	CHECK(has(b.data, b.len,
	    "Final-Recipient: utf-8; a\\x{2B}b\\x{3D}\\x{E9}@example.net\r\n"));
	CHECK(has(b.data, b.len,
	    "Final-Recipient: rfc822; a+b=c@example.net\r\n"));

	/* an original without a header/body separator is all header */
	sample(&m, r);
	m.original = "Subject: cut short\r\nX-A: b";
	m.original_len = strlen(m.original);
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 1, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 3);
	CHECK(ps.part[2].blen == m.original_len + 2 &&
	    memcmp(ps.part[2].body, m.original, m.original_len) == 0);
	/* no original at all: two parts */
	m.original = NULL;
	m.original_len = 0;
	buf_reset(&b);
	CHECK(dsn_build(&m, r, 1, &b) == 0);
	CHECK(parse(b.data, b.len, &ps) == 0 && ps.nparts == 2);
	CHECK(python_agrees(&b, "none", "failed:5.1.1"));

	/* refusals leave out untouched */
	sample(&m, r);
	buf_reset(&b);
	buf_puts(&b, "keep");
	CHECK(dsn_build(&m, r, 0, &b) == -1);
	m.to = "";
	CHECK(dsn_build(&m, r, 1, &b) == -1);
	m.to = NULL;
	CHECK(dsn_build(&m, r, 1, &b) == -1);
	sample(&m, r);
	m.reporting_mta = NULL;
	CHECK(dsn_build(&m, r, 1, &b) == -1);
	sample(&m, r);
	r[0].rcpt = NULL;
	CHECK(dsn_build(&m, r, 1, &b) == -1);
	CHECK(b.len == 4 && strcmp(b.data, "keep") == 0);
	buf_free(&b);
}

/* NOTIFY=SUCCESS: a success report, its own subject and actions. */
static void
test_dsn_success(void)
{
	struct dsn_msg m;
	struct dsn_rcpt r[3];
	struct parsed ps;
	struct buf b;
	char v[1024];
	const char *bp;
	size_t bl;

	sample(&m, r);
	m.success = 1;
	r[0].action = "delivered";
	r[0].status = "2.0.0";
	r[0].diagnostic = NULL;
	r[0].orcpt = "rfc822;old@example.net";
	buf_init(&b);
	CHECK(dsn_build(&m, r, 1, &b) == 0);
	CHECK(lines_ok(b.data, b.len));
	CHECK(memmem(b.data, b.len, "Subject: Successful Mail Delivery Report",
	    40) != NULL);
	CHECK(memmem(b.data, b.len, "delivery failed", 15) == NULL);
	CHECK(parse(b.data, b.len, &ps) == 0);
	CHECK(block(&ps.part[1], 1, &bp, &bl));
	CHECK(field(bp, bl, "Action", v, sizeof(v)) &&
	    strcmp(v, "delivered") == 0);
	CHECK(field(bp, bl, "Status", v, sizeof(v)) && strcmp(v, "2.0.0") == 0);
	CHECK(field(bp, bl, "Original-Recipient", v, sizeof(v)) &&
	    strcmp(v, "rfc822; old@example.net") == 0);
	buf_free(&b);
}

void
test_dsn(void)
{
	test_dsn_success();
	test_dsn_failed();
	test_dsn_full_delayed();
	test_dsn_hostile();
}
