/*
 * main: runs every unit test suite and prints "N passed, N failed".
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
void
unit_rm_tree(const char *dir)
{
	struct dirent *de;
	char p[PATH_MAX + 256];
	DIR *d;

	if ((d = opendir(dir)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 ||
			    strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			if (unlink(p) == -1)
				unit_rm_tree(p);
		}
		closedir(d);
	}
	rmdir(dir);
}

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
