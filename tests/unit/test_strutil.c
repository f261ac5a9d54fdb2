/* test_strutil.c — number, size and duration parsing; log value quoting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/strutil.h"

struct size_case {
	const char *in;
	int ret;
	uint64_t want;
};

static void test_size(void **state)
{
	(void)state;
	static const struct size_case cases[] = {
		{"0", 0, 0},
		{"512", 0, 512},
		{"100K", 0, 102400},
		{"25M", 0, 25u * 1024 * 1024},
		{"2G", 0, 2ULL * 1024 * 1024 * 1024},
		{"25m", 0, 25u * 1024 * 1024},
		{"25MiB", 0, 25u * 1024 * 1024},
		{"25X", -1, 0},
		{"", -1, 0},
		{"-1", -1, 0},
		{"M", -1, 0},
		{"18446744073709551615", 0, UINT64_MAX},
		{"18446744073709551616", -1, 0},
		{"17179869184G", -1, 0},
		{"1000T", 0, 1000ULL << 40},
		{"16777216T", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 0;
		int r = str_parse_size(cases[i].in, &v);
		assert_int_equal(r, cases[i].ret);
		if (r == 0)
			assert_true(v == cases[i].want);
	}
}

static void test_duration(void **state)
{
	(void)state;
	static const struct size_case cases[] = {
		{"30", 0, 30000}, {"30s", 0, 30000},    {"5m", 0, 300000},
		{"2h", 0, 7200000}, {"5d", 0, 432000000}, {"250ms", 0, 250},
		{"5x", -1, 0},    {"m", -1, 0},         {"", -1, 0},
		{"5 m", -1, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t v = 0;
		int r = str_parse_duration_ms(cases[i].in, &v);
		assert_int_equal(r, cases[i].ret);
		if (r == 0)
			assert_true(v == cases[i].want);
	}
}

static void test_format_roundtrip(void **state)
{
	(void)state;
	static const uint64_t sizes[] = {0, 1, 1000, 1024, 102400, 26214400, 1ULL << 31,
					       100ULL << 40};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char out[32];
		uint64_t back;
		str_format_size(sizes[i], out, sizeof(out));
		assert_int_equal(str_parse_size(out, &back), 0);
		assert_true(back == sizes[i]);
	}
	static const uint64_t durs[] = {250, 1000, 60000, 300000, 3600000, 86400000, 90000};
	for (size_t i = 0; i < sizeof(durs) / sizeof(durs[0]); i++) {
		char out[32];
		uint64_t back;
		str_format_duration_ms(durs[i], out, sizeof(out));
		assert_int_equal(str_parse_duration_ms(out, &back), 0);
		assert_true(back == durs[i]);
	}
}

struct q_case {
	const char *in;
	const char *want;
};

static void test_log_quote(void **state)
{
	(void)state;
	static const struct q_case cases[] = {
		{"plain", "plain"},
		{"", "\"\""},
		{"two words", "\"two words\""},
		{"a=b", "\"a=b\""},
		{"new\nline", "\"new\\x0aline\""},
		{"q\"uote", "\"q\\\"uote\""},
		/* well-formed UTF-8 as is (issue 8); the rest escaped octet by octet */
		{"\xc3\xa9", "\xc3\xa9"},
		{"\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.test",
		 "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.test"},
		{"\xf0\x9f\x93\xa8", "\xf0\x9f\x93\xa8"},
		{"\xc2\x9b[2J", "\"\\xc2\\x9b[2J\""},         /* C1 CSI */
		{"\xc2\xa0", "\xc2\xa0"},                     /* U+00A0: not C1 */
		{"\x9b", "\"\\x9b\""},                         /* lone continuation */
		{"\xc3", "\"\\xc3\""},                         /* truncated */
		{"\xc3x", "\"\\xc3x\""},
		{"\xc0\xaf", "\"\\xc0\\xaf\""},               /* overlong '/' */
		{"\xe0\x80\xaf", "\"\\xe0\\x80\\xaf\""},      /* overlong */
		{"\xed\xa0\x80", "\"\\xed\\xa0\\x80\""},      /* surrogate */
		{"\xf4\x90\x80\x80", "\"\\xf4\\x90\\x80\\x80\""}, /* past U+10FFFF */
		{"\xe7\x94\n", "\"\\xe7\\x94\\x0a\""},
		{"a\\b", "\"a\\\\b\""},
		{"\x7f", "\"\\x7f\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[LOG_Q_MAX];
		assert_string_equal(log_qs(out, cases[i].in), cases[i].want);
	}
	char big[1000];
	memset(big, 'x', sizeof(big));
	char out[LOG_Q_MAX];
	const char *q = log_q(out, big, sizeof(big));
	assert_true(strlen(q) < LOG_Q_MAX);
	assert_non_null(strstr(q, "..."));
	/* a long UTF-8 value is cut between characters, never inside one */
	char wide[900];
	for (size_t i = 0; i + 3 <= sizeof(wide); i += 3)
		memcpy(wide + i, "\xe4\xbe\x8b", 3);
	q = log_q(out, wide, sizeof(wide));
	assert_true(strlen(q) < LOG_Q_MAX);
	const char *dots = strstr(q, "...");
	assert_non_null(dots);
	assert_true((size_t)(dots - q - 1) % 3 == 0);
}

static void test_buf_max(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 10);
	assert_int_equal(buf_append(&b, "0123456789", 10), 0);
	assert_int_equal(buf_append(&b, "x", 1), -1);
	assert_int_equal(b.len, 10);
	buf_consume(&b, 4);
	assert_memory_equal(b.data, "456789", 6);
	assert_int_equal(buf_printf(&b, "%d", 1234), 0);
	assert_int_equal(buf_printf(&b, "%d", 5), -1);
	assert_string_equal(buf_cstr(&b), "4567891234");
	buf_free(&b);
}

struct b64_case {
	const char *plain; /* NULL: the encoded form must be refused */
	const char *encoded;
};

static void test_base64(void **state)
{
	(void)state;
	static const struct b64_case cases[] = {
		/* RFC 4648 §10 vectors */
		{"", ""},
		{"f", "Zg=="},
		{"fo", "Zm8="},
		{"foo", "Zm9v"},
		{"foob", "Zm9vYg=="},
		{"fooba", "Zm9vYmE="},
		{"foobar", "Zm9vYmFy"},
		{"\0user\0pass", "AHVzZXIAcGFzcw=="},
		{NULL, "Zg="},       /* not a multiple of 4 */
		{NULL, "Zg=a"},      /* data after padding */
		{NULL, "Z==="},      /* too much padding */
		{NULL, "Zh=="},      /* stray bits under the padding */
		{NULL, "Zm9v Zm9v"}, /* whitespace */
		{NULL, "Zm9v\r\n"},
		{NULL, "Zm9-"},      /* base64url alphabet */
		{NULL, "=Zm9"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct b64_case *c = &cases[i];
		struct buf out;
		buf_init(&out, 0);
		int r = base64_decode(c->encoded, strlen(c->encoded), &out);
		if (c->plain == NULL) {
			assert_int_equal(r, -1);
			buf_free(&out);
			continue;
		}
		size_t plen = c->plain[0] == '\0' && i == 7 ? 10 : strlen(c->plain);
		assert_int_equal(r, 0);
		assert_int_equal(out.len, plen);
		assert_memory_equal(out.data != NULL ? out.data : (unsigned char *)"", c->plain,
				    plen);
		struct buf enc;
		buf_init(&enc, 0);
		assert_int_equal(base64_encode((const unsigned char *)c->plain, plen, &enc), 0);
		assert_string_equal(buf_cstr(&enc), c->encoded);
		buf_free(&enc);
		buf_free(&out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_size),         cmocka_unit_test(test_duration),
		cmocka_unit_test(test_format_roundtrip), cmocka_unit_test(test_log_quote),
		cmocka_unit_test(test_buf_max),      cmocka_unit_test(test_base64),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
