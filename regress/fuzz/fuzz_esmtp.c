/*
 * fuzz_esmtp: the BDAT argument, RCPT's DSN parameters, MAIL's ENVID
 * and RET, and xtext.  What is accepted must be bounded and printable,
 * and must survive a round trip through the printer the SMTP client uses
 * for the next hop.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/esmtp.h"
#include "lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static void
check_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			abort();
}

/* ENVID= and RET= as MAIL's parser passes them, printed and read back. */
static void
check_mail(const char *v, size_t n)
{
	char envid[DSN_ENVID_MAX + 1], again[DSN_ENVID_MAX + 1];
	const char *why = NULL, *p;
	struct buf b;
	int ret = DSN_RET_NONE, ret2;

	if (esmtp_ret(v, n, &ret, &why) == -1 && why == NULL)
		abort();
	why = NULL;
	if (esmtp_envid(v, n, envid, sizeof(envid), &why) == -1) {
		if (why == NULL)
			abort();
		return;
	}
	check_printable(envid);
	buf_init(&b);
	esmtp_mail_print(&b, ret, envid);
	buf_putc(&b, '\0');
	p = b.data;
	if (ret != DSN_RET_NONE) {
		if (strncmp(p, " RET=", 5) != 0 || esmtp_ret(p + 5, 4, &ret2,
		    &why) != 0 || ret2 != ret)
			abort();
		p += 9;
	}
	if (strncmp(p, " ENVID=", 7) != 0 || esmtp_envid(p + 7, strlen(p + 7),
	    again, sizeof(again), &why) != 0 || strcmp(envid, again) != 0)
		abort();
	buf_free(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dsn_rcpt_params rp, again;
	char out[DSN_ORCPT_MAX + 1], *line;
	const char *why = NULL;
	uint64_t n;
	int last, r;
	struct buf b;

	if (memchr(data, '\0', size) != NULL)
		return 0;
	if ((line = malloc(size + 1)) == NULL)
		return 0;
	memcpy(line, data, size);
	line[size] = '\0';
	r = esmtp_bdat(line, &n, &last, &why);
	if ((r == 0 && n > 999999999999999999ULL) || (r != 0 && why == NULL))
		abort();
	r = esmtp_xtext_decode(line, size, out, sizeof(out));
	if (r >= 0) {
		if ((size_t)r != strlen(out) || (size_t)r > size)
			abort();
		check_printable(out);
	}
	why = NULL;
	if (esmtp_rcpt(line, &rp, &why) == 0) {
		check_printable(rp.orcpt);
		buf_init(&b);
		esmtp_rcpt_print(&b, rp.notify, rp.orcpt);
		if (b.len > 0 && esmtp_rcpt(b.data, &again, &why) != 0)
			abort();
		if (b.len > 0 && (again.notify != rp.notify ||
		    strcmp(again.orcpt, rp.orcpt) != 0))
			abort();
		buf_free(&b);
	} else if (why == NULL)
		abort();
	check_mail(line, size);
	free(line);
	return 0;
}
