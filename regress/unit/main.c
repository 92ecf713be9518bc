/*
 * main: runs every unit test suite and prints "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>

#include "regress/unit/unit.h"

static int passed, failed;

void
unit_check(int ok, const char *expr, const char *file, int line)
{
	if (ok) {
		passed++;
		return;
	}
	failed++;
	fprintf(stderr, "%s:%d: check failed: %s\n", file, line, expr);
}

#define SUITE(name)	void test_##name(void);
#include "regress/unit/suites.h"
#undef SUITE

int
main(void)
{
#define SUITE(name)	test_##name();
#include "regress/unit/suites.h"
#undef SUITE
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
