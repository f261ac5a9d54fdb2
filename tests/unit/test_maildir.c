/* test_maildir.c — Maildir delivery (src/deliver/maildir.c): the content as
 * stored, and the repeatable file names that keep a delivery repeated after
 * a crash from writing a second copy (found in new/, or in cur/ once a mail
 * client moved it there). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/maildir.h"

static char root[256];

static int setup(void **state)
{
	(void)state;
	snprintf(root, sizeof(root), "/tmp/hk-test-maildir-XXXXXX");
	return mkdtemp(root) == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[512];
	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

/* Names in <root>/example.org/bob/Maildir/<sub>; returns how many, the
 * first one in first (if any). */
static size_t count_files(const char *sub, char *first, size_t firstlen)
{
	char dir[512];
	size_t n = 0;
	snprintf(dir, sizeof(dir), "%s/example.org/bob/Maildir/%s", root, sub);
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	const struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n++ == 0 && first != NULL)
			snprintf(first, firstlen, "%s", de->d_name);
	}
	closedir(d);
	return n;
}

static const unsigned char body[] = "Subject: x\r\n\r\nhello\r\n";

static struct maildir_msg msg_with(const char *unique, bool search_cur)
{
	struct maildir_msg m = {
		.data = body,
		.len = sizeof(body) - 1,
		.return_path = "",
		.delivered_to = "bob@example.org",
		.hostname = "mx/1:test",
		.unique = unique,
		.search_cur = search_cur,
	};
	return m;
}

static void test_unique_for(void **state)
{
	char u[MAILDIR_UNIQUE_MAX];
	(void)state;
	maildir_unique_for(1700000000123456ULL, "0123456789abcdef", 7, u);
	assert_string_equal(u, "1700000000.Q0123456789abcdefR7");
}

static void test_content_and_name(void **state)
{
	char err[256], name[512], path[1024], data[256];
	(void)state;
	struct maildir_msg m = msg_with("1.QaR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	/* '/' and ':' of the host name are escaped; the size is Maildir++'s S=. */
	const char *want = "Return-Path: <>\nDelivered-To: bob@example.org\nSubject: x\n\nhello\n";
	char expect[128];
	snprintf(expect, sizeof(expect), "1.QaR0.mx\\0571\\072test,S=%zu", strlen(want));
	assert_string_equal(name, expect);
	snprintf(path, sizeof(path), "%s/example.org/bob/Maildir/new/%s", root, name);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	size_t n = fread(data, 1, sizeof(data) - 1, f);
	fclose(f);
	data[n] = '\0';
	assert_string_equal(data, want);
}

static void test_repeat_finds_new(void **state)
{
	char err[256];
	(void)state;
	struct maildir_msg m = msg_with("2.QbR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	assert_int_equal(count_files("new", NULL, 0), 1);
	/* Another recipient index is another copy. */
	struct maildir_msg m1 = msg_with("2.QbR1", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m1, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

static void test_repeat_finds_cur(void **state)
{
	char err[256], name[512], from[1024], to[1100];
	(void)state;
	struct maildir_msg m = msg_with("3.QcR0", true);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", name, sizeof(name)), 1);
	/* A mail client reads it: new/NAME -> cur/NAME:2,S */
	snprintf(from, sizeof(from), "%s/example.org/bob/Maildir/new/%s", root, name);
	snprintf(to, sizeof(to), "%s/example.org/bob/Maildir/cur/%s:2,S", root, name);
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 1);
	assert_int_equal(count_files("new", NULL, 0), 0);
	assert_int_equal(count_files("cur", NULL, 0), 1);
	/* A prefix of another name is not a match: R0 is not R01. */
	struct maildir_msg m2 = msg_with("3.QcR01", true);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m2, err, sizeof(err)), 0);
}

static void test_stale_tmp_is_replaced(void **state)
{
	char err[256], path[1024];
	(void)state;
	struct maildir_msg m = msg_with("4.QdR0", false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	/* What a crash between the write and the rename leaves behind. */
	struct maildir_msg m2 = msg_with("4.QdR1", false);
	snprintf(path, sizeof(path), "%s/example.org/bob/Maildir/tmp/4.QdR1.mx\\0571\\072test", root);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("half", f);
	fclose(f);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m2, err, sizeof(err)), 0);
	assert_int_equal(count_files("tmp", NULL, 0), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

static void test_random_names_differ(void **state)
{
	char err[256];
	(void)state;
	struct maildir_msg m = msg_with(NULL, false);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(maildir_deliver(root, "example.org", "bob", &m, err, sizeof(err)), 0);
	assert_int_equal(count_files("new", NULL, 0), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_unique_for),
	    cmocka_unit_test_setup_teardown(test_content_and_name, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repeat_finds_new, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_repeat_finds_cur, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stale_tmp_is_replaced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_random_names_differ, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
