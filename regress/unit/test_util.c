/* test_util: the string type, checked arithmetic, whole writes. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "regress/unit/unit.h"
#include "lib/util.h"

void test_util(void);

/* A full disk says ENOSPC, and that is what the caller gets to report. */
static void
test_util_write_all(void)
{
	char tmpl[] = "/tmp/tern-unit-write.XXXXXX", big[100000];
	int fd;

	memset(big, 'x', sizeof(big));
	if ((fd = open("/dev/full", O_WRONLY | O_CLOEXEC)) >= 0) {
		errno = EEXIST;			/* left over from elsewhere */
		CHECK(fd_write_all(fd, big, sizeof(big)) == -1);
		CHECK(errno == ENOSPC);
		CHECK(strcmp(fd_strerror(errno), strerror(ENOSPC)) == 0);
		close(fd);
	}
	if ((fd = mkstemp(tmpl)) >= 0) {
		unlink(tmpl);
		CHECK(fd_write_all(fd, big, sizeof(big)) == 0);
		CHECK(lseek(fd, 0, SEEK_END) == (off_t)sizeof(big));
		CHECK(fd_write_all(fd, big, 0) == 0);
		close(fd);
	}
	CHECK(strcmp(fd_strerror(0), "short write") == 0);
}

void
test_util(void)
{
	struct buf b;
	size_t r;
	long long v;
	char small[4];

	buf_init(&b);
	buf_printf(&b, "%s=%d", "a", 42);
	CHECK(b.len == 4 && strcmp(b.data, "a=42") == 0);
	buf_consume(&b, 2);
	CHECK(strcmp(b.data, "42") == 0);
	for (int i = 0; i < 1000; i++)
		buf_putc(&b, 'x');
	CHECK(b.len == 1002);
	buf_free(&b);
	/* The wiping append grows the same way. */
	buf_init(&b);
	for (int i = 0; i < 1000; i++)
		buf_append_wipe(&b, "ab", 2);
	CHECK(b.len == 2000 && b.cap > 2000 && b.data[2000] == '\0');
	CHECK(memcmp(b.data + 1998, "ab", 2) == 0 && b.data[0] == 'a');
	buf_free(&b);

	CHECK(size_add(SIZE_MAX, 1, &r) == -1);
	CHECK(size_add(1, 2, &r) == 0 && r == 3);
	CHECK(size_mul(SIZE_MAX / 2, 3, &r) == -1);
	CHECK(str_copy(small, "hello", sizeof(small)) == 5);
	CHECK(strcmp(small, "hel") == 0);
	CHECK(str_casecmp("PostMaster", "postmaster") == 0);
	CHECK(parse_ll("123", 0, 1000, &v) == 0 && v == 123);
	CHECK(parse_ll("1234", 0, 1000, &v) == -1);
	CHECK(parse_ll("99999999999999999999", 0, 1000, &v) == -1);
	CHECK(parse_ll("", 0, 10, &v) == -1);
	CHECK(parse_ll("-1", -5, 10, &v) == -1);
	test_util_write_all();
}
