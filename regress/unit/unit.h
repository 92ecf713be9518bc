/*
 * unit: the tiny unit-test harness.  Each regress/unit/test_*.c defines
 * one or more `void test_<name>(void)` listed in main.c; CHECK counts.
 */
#ifndef TERN_UNIT_H
#define TERN_UNIT_H

void	unit_check(int ok, const char *expr, const char *file, int line);
#define CHECK(c)	unit_check((c) != 0, #c, __FILE__, __LINE__)

/* Remove a test's scratch directory and everything below it. */
void	unit_rm_tree(const char *dir);

#endif
