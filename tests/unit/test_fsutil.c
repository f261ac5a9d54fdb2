/* test_fsutil.c — lib/fsutil.h: path normalization and containment (the
 * nested-roots check), and opening a directory without following links
 * (root's chown at start). Table-driven; the last test uses a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/fsutil.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_normalize(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"/", "/"},
	    {"//", "/"},
	    {"/var/spool/hikyaku", "/var/spool/hikyaku"},
	    {"/var//spool/./hikyaku/", "/var/spool/hikyaku"},
	    {"/var/mail/../spool", "/var/spool"},
	    {"/..", "/"},
	    {"/a/b/../../..", "/"},
	    {"/a/.b/..c", "/a/.b/..c"},
	};
	char out[256];
	for (size_t i = 0; i < N(cases); i++) {
		assert_int_equal(fs_path_normalize(cases[i].in, out, sizeof(out)), 0);
		assert_string_equal(out, cases[i].want);
	}
	/* relative: against the working directory */
	char cwd[256], want[300];
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	snprintf(want, sizeof(want), "%s/x", strcmp(cwd, "/") == 0 ? "" : cwd);
	assert_int_equal(fs_path_normalize("./x/y/..", out, sizeof(out)), 0);
	assert_string_equal(out, want);
	/* too long for out */
	assert_int_equal(fs_path_normalize("/abcdef", out, 4), -1);
	assert_int_equal(errno, ENAMETOOLONG);
}

static void test_within(void **state)
{
	(void)state;
	static const struct {
		const char *a, *b;
		bool want;
	} cases[] = {
	    {"/var/spool", "/var/spool", true},
	    {"/var/spool/mail", "/var/spool", true},
	    {"/var/spool2", "/var/spool", false},
	    {"/var", "/var/spool", false},
	    {"/anything", "/", true},
	    {"/var/spoo", "/var/spool", false},
	};
	for (size_t i = 0; i < N(cases); i++)
		assert_int_equal(fs_path_within(cases[i].a, cases[i].b), cases[i].want);
}

static void test_dir_open_nofollow(void **state)
{
	(void)state;
	char base[] = "/tmp/hk-test-fsutil-XXXXXX", p[512], t[512];
	const char *bad = NULL;
	assert_non_null(mkdtemp(base));
	/* missing components are made, the last with its own mode */
	snprintf(p, sizeof(p), "%s/a/b", base);
	mode_t old = umask(022);
	int fd = fs_dir_open_nofollow(p, 0755, 0750, &bad);
	umask(old);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0750);
	close(fd);
	snprintf(t, sizeof(t), "%s/a", base);
	assert_int_equal(stat(t, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	/* a symbolic link on the way: refused, and bad names it */
	snprintf(t, sizeof(t), "%s/link", base);
	snprintf(p, sizeof(p), "%s/a", base);
	assert_int_equal(symlink(p, t), 0);
	snprintf(p, sizeof(p), "%s/link/b", base);
	assert_int_equal(fs_dir_open_nofollow(p, 0755, 0750, &bad), -1);
	assert_true(errno == ELOOP || errno == ENOTDIR);
	assert_true(strncmp(bad, "link/", 5) == 0);
	/* the last component a link: refused too, nothing made behind it */
	assert_int_equal(fs_dir_open_nofollow(t, 0755, 0750, &bad), -1);
	/* cleanup */
	unlink(t);
	snprintf(p, sizeof(p), "%s/a/b", base);
	rmdir(p);
	snprintf(p, sizeof(p), "%s/a", base);
	rmdir(p);
	rmdir(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_normalize),
	    cmocka_unit_test(test_within),
	    cmocka_unit_test(test_dir_open_nofollow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
