/* test_json.c — the JSON string escaper (lib/json.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "lib/json.h"

static void esc(const char *in, size_t len, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(json_append_str(&b, in, len), 0);
	assert_string_equal(buf_cstr(&b), want);
	buf_free(&b);
}

static void test_plain_and_specials(void **state)
{
	(void)state;
	esc("abc", 3, "\"abc\"");
	esc("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
	esc("l1\r\nl2\t", 7, "\"l1\\r\\nl2\\t\"");
	esc("</script>&", 10, "\"\\u003c/script\\u003e\\u0026\"");
	esc("a\0b", 3, "\"a\\u0000b\"");
	esc("\x7f", 1, "\"\\u007f\"");
}

static void test_utf8(void **state)
{
	(void)state;
	esc("h\xc3\xa9", 3, "\"h\xc3\xa9\"");            /* é kept */
	esc("\xc2\x85", 2, "\"\\u0085\"");               /* C1 NEL escaped */
	esc("\xff" "a", 2, "\"\\ufffda\"");              /* invalid byte */
	esc("\xc0\xaf", 2, "\"\\ufffd\\ufffd\"");        /* overlong */
	esc("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* surrogate */
	esc("\xe2\x82", 2, "\"\\ufffd\\ufffd\"");        /* truncated */
	esc("\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"");
}

static void test_bound_all_or_nothing(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 8);
	assert_int_equal(buf_append_str(&b, "x"), 0);
	assert_int_equal(json_append_str(&b, "0123456789", 10), -1);
	assert_string_equal(buf_cstr(&b), "x");
	assert_int_equal(json_append_cstr(&b, NULL), 0);
	assert_string_equal(buf_cstr(&b), "xnull");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_and_specials),
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_bound_all_or_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
