/* test_authfail.c — SipHash-2-4 against the paper's vectors, and the AUTH
 * failure table (auth/authfail.c): one budget per address however many
 * guesses are in flight, IPv6 per /64, no eviction of an address with
 * failures, the shared overflow count, the window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "auth/authfail.h"
#include "lib/siphash.h"

#define WINDOW 60000 /* ms */

/* SipHash paper, Appendix A: key 00 01 .. 0f, message 00 01 .. (len-1). */
static void test_siphash_vectors(void **state)
{
	(void)state;
	static const struct {
		size_t len;
		uint64_t want;
	} cases[] = {
	    {0, 0x726fdb47dd0e0e31ULL},
	    {8, 0x93f5f5799a932462ULL},
	    {15, 0xa129ca6149be45e5ULL}, /* the paper's worked example */
	};
	unsigned char key[16], msg[64];
	for (int i = 0; i < 16; i++)
		key[i] = (unsigned char)i;
	for (int i = 0; i < 64; i++)
		msg[i] = (unsigned char)i;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = siphash24(key, msg, cases[i].len);
		if (got != cases[i].want)
			fail_msg("len %zu: %016llx, want %016llx", cases[i].len,
			         (unsigned long long)got, (unsigned long long)cases[i].want);
	}
	/* keyed: another key, another hash */
	key[0] ^= 1;
	assert_true(siphash24(key, msg, 15) != 0xa129ca6149be45e5ULL);
}

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

static const unsigned char test_key[16] = "0123456789abcdef";

/* The parallel-connection bypass: 50 guesses reserved before any result
 * came back each passed a check made only at AUTH. Now the 6th waits. */
static void test_reserve_is_the_budget(void **state)
{
	(void)state;
	struct authfail *t = authfail_create(4096, test_key);
	struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2");
	int ok = 0;

	for (int i = 0; i < 50; i++)
		ok += authfail_reserve(t, &a, 1000, WINDOW, 5) == 0;
	assert_int_equal(ok, 5);
	assert_int_equal(authfail_count(t, &a, 1000, WINDOW), 5);
	assert_int_equal(authfail_count(t, &b, 1000, WINDOW), 0);
	/* a success gives its reservation back, once */
	authfail_release(t, &a, 1001, WINDOW);
	assert_int_equal(authfail_count(t, &a, 1001, WINDOW), 4);
	assert_int_equal(authfail_reserve(t, &a, 1002, WINDOW, 5), 0);
	assert_int_equal(authfail_reserve(t, &a, 1002, WINDOW, 5), -1);
	/* the window ends: a fresh budget */
	assert_int_equal(authfail_count(t, &a, 1000 + WINDOW + 1, WINDOW), 0);
	assert_int_equal(authfail_reserve(t, &a, 1000 + WINDOW + 1, WINDOW, 5), 0);
	assert_int_equal(authfail_count(t, &a, 1000 + WINDOW + 1, WINDOW), 1);
	/* releasing what was never reserved does nothing */
	authfail_release(t, &b, 1000, WINDOW);
	assert_int_equal(authfail_count(t, &b, 1000, WINDOW), 0);
	authfail_free(&t);
	assert_null(t);
	authfail_free(&t);
}

static void test_address_keys(void **state)
{
	(void)state;
	struct authfail *t = authfail_create(4096, NULL);
	static const struct {
		const char *a, *b;
		int same;
	} cases[] = {
	    {"2001:db8:1:2::1", "2001:db8:1:2:ffff:eeee:dddd:cccc", 1}, /* one /64 */
	    {"2001:db8:1:2::1", "2001:db8:1:3::1", 0},
	    {"192.0.2.1", "::ffff:192.0.2.1", 1}, /* v4-mapped is IPv4 */
	    {"192.0.2.1", "192.0.2.2", 0},        /* IPv4 per address */
	    {"::ffff:192.0.2.1", "::ffff:192.0.2.2", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage a = addr(cases[i].a), b = addr(cases[i].b);
		uint64_t now = 10 * WINDOW * (i + 1); /* each case in a fresh window */
		assert_int_equal(authfail_reserve(t, &a, now, WINDOW, 3), 0);
		unsigned want = cases[i].same ? 1 : 0;
		if (authfail_count(t, &b, now, WINDOW) != want)
			fail_msg("%s and %s: count %u, want %u", cases[i].a, cases[i].b,
			         authfail_count(t, &b, now, WINDOW), want);
	}
	authfail_free(&t);
}

/* The eviction attack: with the table full, new addresses must not push
 * out the counts of those that have failures; they share their network's
 * budget instead, which is conservative (they lock each other out) but
 * leaves other networks alone. */
static void test_no_eviction(void **state)
{
	(void)state;
	struct authfail *t = authfail_create(8, test_key); /* every probe sees all 8 */
	char text[32];
	struct sockaddr_storage victims[8];

	for (int i = 0; i < 8; i++) {
		snprintf(text, sizeof(text), "198.51.100.%d", i + 1);
		victims[i] = addr(text);
		for (int k = 0; k < 4; k++)
			assert_int_equal(authfail_reserve(t, &victims[i], 1000, WINDOW, 5), 0);
	}
	/* 100 new addresses, one guess each: the first five get one, the rest
	 * none, and no victim loses a failure */
	int ok = 0;
	for (int i = 0; i < 100; i++) {
		snprintf(text, sizeof(text), "203.0.113.%d", i + 1);
		struct sockaddr_storage x = addr(text);
		ok += authfail_reserve(t, &x, 2000, WINDOW, 5) == 0;
	}
	assert_int_equal(ok, 5);
	for (int i = 0; i < 8; i++) {
		assert_int_equal(authfail_count(t, &victims[i], 2000, WINDOW), 4);
		assert_int_equal(authfail_reserve(t, &victims[i], 2000, WINDOW, 5), 0);
		assert_int_equal(authfail_reserve(t, &victims[i], 2000, WINDOW, 5), -1);
	}
	struct sockaddr_storage late = addr("203.0.113.200");
	assert_int_equal(authfail_count(t, &late, 2000, WINDOW), 5);
	assert_int_equal(authfail_reserve(t, &late, 2000, WINDOW, 5), -1);
	/* The 100 addresses shared their network's count (203.0.113.0/24):
	 * a newcomer from another network is not locked out by them. */
	struct sockaddr_storage other = addr("192.0.2.7");
	assert_int_equal(authfail_count(t, &other, 2000, WINDOW), 0);
	assert_int_equal(authfail_reserve(t, &other, 2000, WINDOW, 5), 0);
	assert_int_equal(authfail_count(t, &other, 2000, WINDOW), 1);
	/* IPv6: one /48 shares a count, another /48 has its own. */
	for (int i = 0; i < 5; i++) {
		snprintf(text, sizeof(text), "2001:db8:1:%x::1", i);
		struct sockaddr_storage x = addr(text);
		assert_int_equal(authfail_reserve(t, &x, 2000, WINDOW, 5), 0);
	}
	struct sockaddr_storage same48 = addr("2001:db8:1:ff::1");
	assert_int_equal(authfail_reserve(t, &same48, 2000, WINDOW, 5), -1);
	struct sockaddr_storage other48 = addr("2001:db8:2::1");
	assert_int_equal(authfail_reserve(t, &other48, 2000, WINDOW, 5), 0);
	/* once the victims' window is over their slots are free again */
	assert_int_equal(authfail_reserve(t, &late, 1000 + WINDOW + 1, WINDOW, 5), 0);
	assert_int_equal(authfail_count(t, &late, 1000 + WINDOW + 1, WINDOW), 1);
	authfail_free(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_siphash_vectors),
	    cmocka_unit_test(test_reserve_is_the_budget),
	    cmocka_unit_test(test_address_keys),
	    cmocka_unit_test(test_no_eviction),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
