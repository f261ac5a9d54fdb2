/* test_shmrate.c — the shared rate counters (src/lib/shmrate.c) and the
 * greylisting table (src/lib/greytab.c): a limit exact within a window,
 * the sliding estimate across the window's edge, a second mapping (another
 * process) sharing the counts, eviction in a full table, and the greylist's
 * first/early/late/remembered/expired results and its file round trip
 * (checksum, truncation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/greytab.h"
#include "lib/shmrate.h"

#define W 60000 /* a one-minute window, in ms */

static void test_limit_in_window(void **state)
{
	(void)state;
	struct shmrate *r = shmrate_create(1024);
	assert_non_null(r);
	uint64_t t = 10ULL * W; /* the start of a window */
	for (int i = 0; i < 5; i++)
		assert_true(shmrate_take(r, "a", 1, 5, W, t + (uint64_t)i));
	assert_false(shmrate_take(r, "a", 1, 5, W, t + 10));
	assert_false(shmrate_take(r, "a", 1, 5, W, t + 20)); /* refused ones do not count */
	assert_int_equal(shmrate_peek(r, "a", 1, W, t + 20), 5);
	assert_true(shmrate_take(r, "b", 1, 5, W, t + 20)); /* its own key */
	/* the next window: the previous one's 5 weigh what is left of it */
	assert_int_equal(shmrate_peek(r, "a", 1, W, t + W + W / 2), 2);
	assert_true(shmrate_take(r, "a", 1, 5, W, t + W + W / 2));
	assert_true(shmrate_take(r, "a", 1, 5, W, t + W + W / 2));
	assert_true(shmrate_take(r, "a", 1, 5, W, t + W + W / 2));
	assert_false(shmrate_take(r, "a", 1, 5, W, t + W + W / 2));
	/* two windows later nothing is left */
	assert_int_equal(shmrate_peek(r, "a", 1, W, t + 3 * W), 0);
	assert_true(shmrate_take(r, "a", 1, 1, W, t + 3 * W));
	shmrate_free(&r);
	assert_null(r);
}

static void test_shared_between_mappings(void **state)
{
	(void)state;
	struct shmrate *r = shmrate_create(1024);
	struct shmrate *other = shmrate_attach(dup(shmrate_fd(r)));
	assert_non_null(other);
	assert_true(shmrate_take(r, "k", 1, 2, W, 5 * W));
	assert_true(shmrate_take(other, "k", 1, 2, W, 5 * W));
	assert_false(shmrate_take(r, "k", 1, 2, W, 5 * W));
	assert_false(shmrate_take(other, "k", 1, 2, W, 5 * W));
	shmrate_free(&other);
	shmrate_free(&r);
	assert_null(shmrate_attach(-1));
}

static void test_eviction_is_bounded(void **state)
{
	(void)state;
	struct shmrate *r = shmrate_create(1024);
	char key[16];
	/* far more keys than slots: every take still answers, none spins */
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		assert_true(shmrate_take(r, key, (size_t)n, 3, W, 7 * W + (uint64_t)i));
	}
	/* a key counted a moment ago is still there (the evicted are the
	 * idle ones: this one was the last) */
	int n = snprintf(key, sizeof(key), "k%d", 19999);
	assert_int_equal(shmrate_peek(r, key, (size_t)n, W, 7 * W + 20000), 1);
	shmrate_free(&r);
}

static const struct greytab_times TM = {.delay = 300, .retry_window = 3600, .retention = 86400};

static void test_greylist(void **state)
{
	(void)state;
	struct greytab *t = greytab_create(1024);
	uint32_t wait, now = 1700000000;
	assert_int_equal(greytab_check(t, "x", 1, now, &TM, &wait), GREYTAB_NEW);
	assert_int_equal(wait, 300);
	assert_int_equal(greytab_check(t, "x", 1, now + 100, &TM, &wait), GREYTAB_EARLY);
	assert_int_equal(wait, 200);
	assert_int_equal(greytab_check(t, "x", 1, now + 300, &TM, &wait), GREYTAB_PASS);
	assert_int_equal(greytab_check(t, "x", 1, now + 5000, &TM, &wait), GREYTAB_PASS);
	/* unseen for longer than the retention: forgotten */
	assert_int_equal(greytab_check(t, "x", 1, now + 5000 + 86401, &TM, &wait), GREYTAB_NEW);
	/* a retry after the retry window starts over */
	assert_int_equal(greytab_check(t, "y", 1, now, &TM, &wait), GREYTAB_NEW);
	assert_int_equal(greytab_check(t, "y", 1, now + 3601, &TM, &wait), GREYTAB_NEW);
	assert_int_equal(greytab_check(t, "y", 1, now + 3601 + 300, &TM, &wait), GREYTAB_PASS);
	greytab_free(&t);
}

static void test_greylist_file(void **state)
{
	(void)state;
	char dir[] = "/tmp/hk_test_greytab_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof(path), "%s/greylist.db", dir);
	char err[256];
	size_t loaded;
	uint32_t wait, now = 1700000000;
	struct greytab *t = greytab_create(1024);
	assert_int_equal(greytab_load(t, path, now, &TM, &loaded, err, sizeof(err)), 0);
	assert_int_equal(loaded, 0); /* no file yet */
	assert_int_equal(greytab_check(t, "passed", 6, now, &TM, &wait), GREYTAB_NEW);
	assert_int_equal(greytab_check(t, "passed", 6, now + 300, &TM, &wait), GREYTAB_PASS);
	assert_int_equal(greytab_check(t, "pending", 7, now + 300, &TM, &wait), GREYTAB_NEW);
	assert_int_equal(greytab_save(t, path, now + 300, &TM, err, sizeof(err)), 0);
	greytab_free(&t);

	t = greytab_create(1024);
	assert_int_equal(greytab_load(t, path, now + 400, &TM, &loaded, err, sizeof(err)), 0);
	assert_int_equal(loaded, 2);
	assert_int_equal(greytab_check(t, "passed", 6, now + 400, &TM, &wait), GREYTAB_PASS);
	assert_int_equal(greytab_check(t, "pending", 7, now + 400, &TM, &wait), GREYTAB_EARLY);
	greytab_free(&t);

	/* a damaged file is refused whole */
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 40, SEEK_SET);
	fputc(0x55, f);
	fclose(f);
	t = greytab_create(1024);
	assert_int_equal(greytab_load(t, path, now, &TM, &loaded, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "checksum"));
	assert_int_equal(truncate(path, 10), 0);
	assert_int_equal(greytab_load(t, path, now, &TM, &loaded, err, sizeof(err)), -1);
	greytab_free(&t);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_limit_in_window),
	    cmocka_unit_test(test_shared_between_mappings),
	    cmocka_unit_test(test_eviction_is_bounded),
	    cmocka_unit_test(test_greylist),
	    cmocka_unit_test(test_greylist_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
