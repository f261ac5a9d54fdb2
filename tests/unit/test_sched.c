/* test_sched.c — sched/sched.h: retry intervals, destination back-off,
 * due times (with the clock set back), delay warnings and expiry.
 * Table-driven; no clock except one sanity check of sched_now_us(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/time.h>

#include "conf/conf.h"
#include "mail/envelope.h"
#include "sched/sched.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))
#define SEC_MS 1000ULL
#define SEC_US 1000000ULL

static void test_conf_init(struct conf *c, uint64_t rmin, uint64_t rmax)
{
	memset(c, 0, sizeof(*c));
	c->queue.retry_min = rmin;
	c->queue.retry_max = rmax;
	c->delivery.max_lifetime = 5 * 86400 * SEC_MS;
	c->delivery.delay_warning = 4 * 3600 * SEC_MS;
}

static void test_retry_delay(void **state)
{
	(void)state;
	static const struct {
		uint64_t rmin, rmax;
		uint32_t attempts;
		uint64_t want;
	} cases[] = {
	    {300 * SEC_MS, 3600 * SEC_MS, 0, 300 * SEC_MS},
	    {300 * SEC_MS, 3600 * SEC_MS, 1, 300 * SEC_MS},
	    {300 * SEC_MS, 3600 * SEC_MS, 2, 600 * SEC_MS},
	    {300 * SEC_MS, 3600 * SEC_MS, 3, 1200 * SEC_MS},
	    {300 * SEC_MS, 3600 * SEC_MS, 4, 2400 * SEC_MS},
	    {300 * SEC_MS, 3600 * SEC_MS, 5, 3600 * SEC_MS}, /* capped */
	    {300 * SEC_MS, 3600 * SEC_MS, UINT32_MAX, 3600 * SEC_MS},
	    {SEC_MS, SEC_MS, 7, SEC_MS},
	    {SEC_MS, 2 * SEC_MS, 2, 2 * SEC_MS},
	    {SEC_MS, 2 * SEC_MS, 3, 2 * SEC_MS},
	};
	struct conf c;
	for (size_t i = 0; i < N(cases); i++) {
		test_conf_init(&c, cases[i].rmin, cases[i].rmax);
		assert_int_equal(sched_retry_delay_ms(&c, cases[i].attempts), cases[i].want);
	}
}

static void test_dest_backoff(void **state)
{
	(void)state;
	static const struct {
		unsigned failures;
		uint64_t want;
	} cases[] = {
	    {2, 300 * SEC_MS},  {3, 600 * SEC_MS},  {4, 1200 * SEC_MS},
	    {5, 2400 * SEC_MS}, {6, 3600 * SEC_MS}, {1000, 3600 * SEC_MS},
	};
	struct conf c;
	test_conf_init(&c, 300 * SEC_MS, 3600 * SEC_MS);
	for (size_t i = 0; i < N(cases); i++)
		assert_int_equal(sched_dest_backoff_ms(&c, cases[i].failures), cases[i].want);
}

static void test_not_yet_due(void **state)
{
	(void)state;
	const uint64_t now = 1700000000 * SEC_US;
	static const struct {
		int64_t ahead_us; /* next_try_us - now */
		bool want;
	} cases[] = {
	    {-(int64_t)SEC_US, false},           /* overdue */
	    {0, false},                          /* due now */
	    {(int64_t)SEC_US, false},            /* within a second counts as due */
	    {(int64_t)SEC_US + 1, true},         /* wait */
	    {3600 * (int64_t)SEC_US, true},      /* exactly retry_max ahead */
	    {3600 * (int64_t)SEC_US + 1, false}, /* clock went back: due now */
	    {86400 * (int64_t)SEC_US, false},
	};
	struct conf c;
	test_conf_init(&c, 300 * SEC_MS, 3600 * SEC_MS);
	for (size_t i = 0; i < N(cases); i++)
		assert_int_equal(sched_not_yet_due(&c, now + (uint64_t)cases[i].ahead_us, now),
		                 cases[i].want);
}

static void test_age_expiry_warning(void **state)
{
	(void)state;
	struct conf c;
	struct envelope e;
	test_conf_init(&c, 300 * SEC_MS, 3600 * SEC_MS);
	envelope_init(&e);
	e.arrival_us = 1700000000 * SEC_US;
	const uint64_t life = c.delivery.max_lifetime * 1000,
	               warn = c.delivery.delay_warning * 1000;

	/* The clock set back past arrival: age 0, never expired. */
	assert_int_equal(sched_age_us(&e, e.arrival_us - SEC_US), 0);
	assert_false(sched_expired(&c, &e, e.arrival_us - SEC_US));
	assert_int_equal(sched_age_us(&e, e.arrival_us + 42), 42);

	assert_false(sched_expired(&c, &e, e.arrival_us + life));
	assert_true(sched_expired(&c, &e, e.arrival_us + life + 1));

	assert_false(sched_delay_warning_due(&c, &e, 0, e.arrival_us + warn));
	assert_true(sched_delay_warning_due(&c, &e, 0, e.arrival_us + warn + 1));
	assert_false(
	    sched_delay_warning_due(&c, &e, ENVELOPE_SCHED_DELAY_WARNED, e.arrival_us + warn + 1));
	assert_true(sched_delay_warning_due(&c, &e, ENVELOPE_SCHED_HELD, e.arrival_us + warn + 1));
	c.delivery.delay_warning = 0; /* disabled */
	assert_false(sched_delay_warning_due(&c, &e, 0, e.arrival_us + life));
	envelope_clear(&e);
}

static void test_now(void **state)
{
	(void)state;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	uint64_t before = (uint64_t)tv.tv_sec * SEC_US + (uint64_t)tv.tv_usec;
	uint64_t now = sched_now_us();
	assert_true(now >= before && now - before < 60 * SEC_US);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_retry_delay), cmocka_unit_test(test_dest_backoff),
	    cmocka_unit_test(test_not_yet_due), cmocka_unit_test(test_age_expiry_warning),
	    cmocka_unit_test(test_now),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
