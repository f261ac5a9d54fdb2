/* test_reply.c — table-driven tests for the client's reply parser
 * (src/smtpc/reply.c): single and multiline replies, enhanced codes, line
 * ends, bounds and malformed input, each case fed whole, octet by octet and
 * split at every position; and the EHLO capability parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc/reply.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

struct reply_case {
	const char *in;
	int ret; /* of the first reply: 1 complete, 0 needs more, -1 error */
	int code;
	const char *enh;
	const char *text;
	size_t nlines;
	size_t used; /* octets used by the first reply (when ret == 1), 0: all */
};

static const struct reply_case reply_cases[] = {
    {"250 OK\r\n", 1, 250, "", "OK", 1, 0},
    {"250\r\n", 1, 250, "", "", 1, 0},
    {"250 \r\n", 1, 250, "", "", 1, 0},
    {"250 2.1.5 Ok\r\n", 1, 250, "2.1.5", "Ok", 1, 0},
    {"250 2.1.5\r\n", 1, 250, "2.1.5", "", 1, 0},
    {"550 5.1.1 <x@y>: user unknown\r\n", 1, 550, "5.1.1", "<x@y>: user unknown", 1, 0},
    {"451 4.123.999 later\r\n", 1, 451, "4.123.999", "later", 1, 0},
    /* class digit must match the reply's first digit (RFC 2034 §4) */
    {"250 5.1.1 no\r\n", 1, 250, "", "5.1.1 no", 1, 0},
    {"250 2.1234.5 x\r\n", 1, 250, "", "2.1234.5 x", 1, 0},
    {"250 2.1.5x y\r\n", 1, 250, "", "2.1.5x y", 1, 0},
    {"250 2.1 y\r\n", 1, 250, "", "2.1 y", 1, 0},
    {"250-mx.example.org\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 1, 250, "",
     "mx.example.org\nPIPELINING\nSIZE 1000", 3, 0},
    {"550-5.7.1 first\r\n550 5.7.1 second\r\n", 1, 550, "5.7.1", "first\nsecond", 2, 0},
    {"550-5.7.1 first\r\n550 second\r\n", 1, 550, "5.7.1", "first\nsecond", 2, 0},
    /* bare LF accepted as a line end */
    {"220 hi\n", 1, 220, "", "hi", 1, 0},
    {"250-a\n250 b\r\n", 1, 250, "", "a\nb", 2, 0},
    /* a bare CR is not a line end; control octets become '?' */
    {"250 a\rb\r\n", 1, 250, "", "a?b", 1, 0},
    {"250 a\r250 b", 0, 0, "", "", 0, 0},
    {"250 a\x01\tb\r\n", 1, 250, "", "a?\tb", 1, 0},
    /* two replies: the first is returned, the rest is left */
    {"250 a\r\n354 go\r\n", 1, 250, "", "a", 1, 7},
    /* incomplete */
    {"250-a\r\n", 0, 0, "", "", 0, 0},
    {"250 a", 0, 0, "", "", 0, 0},
    {"", 0, 0, "", "", 0, 0},
    /* errors */
    {"199 x\r\n", -1, 0, "", "", 0, 0},
    {"600 x\r\n", -1, 0, "", "", 0, 0},
    {"099 x\r\n", -1, 0, "", "", 0, 0},
    {"25 x\r\n", -1, 0, "", "", 0, 0},
    {"2a0 x\r\n", -1, 0, "", "", 0, 0},
    {"250x\r\n", -1, 0, "", "", 0, 0},
    {"\r\n", -1, 0, "", "", 0, 0},
    {"250-a\r\n251 b\r\n", -1, 0, "", "", 0, 0},
    {"250-a\r\nxyz\r\n", -1, 0, "", "", 0, 0},
};

/* Feed in, split into pieces of at most step octets; return the first
 * result and fill r. */
static int reply_feed(const char *in, size_t len, size_t step, struct smtp_reply *r, size_t *used_r)
{
	struct smtp_reply_parser p;
	size_t off = 0;
	const char *err = NULL;

	smtp_reply_parser_init(&p);
	*used_r = 0;
	while (off < len || len == 0) {
		size_t n = len - off < step ? len - off : step;
		size_t used = 0;
		int ret = smtp_reply_parse(&p, in + off, n, &used, r, &err);
		if (ret != 0) {
			if (ret < 0)
				assert_non_null(err);
			*used_r = off + used;
			return ret;
		}
		assert_int_equal(used, n);
		off += n;
		if (len == 0)
			break;
	}
	*used_r = len;
	return 0;
}

static void test_reply_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(reply_cases); i++) {
		const struct reply_case *c = &reply_cases[i];
		size_t len = strlen(c->in);
		size_t steps[] = {len + 1, 1, 2, 3, 7};

		for (size_t k = 0; k < N_ELEMENTS(steps); k++) {
			struct smtp_reply r;
			size_t used;
			memset(&r, 0, sizeof(r));
			int ret = reply_feed(c->in, len, steps[k], &r, &used);
			if (ret != c->ret)
				fail_msg("case %zu (%s) step %zu: ret %d, want %d", i, c->in,
				         steps[k], ret, c->ret);
			if (ret != 1)
				continue;
			assert_int_equal(r.code, c->code);
			assert_string_equal(r.enh, c->enh);
			assert_string_equal(r.text, c->text);
			assert_int_equal(r.nlines, c->nlines);
			assert_int_equal(used, c->used != 0 ? c->used : len);
		}
	}
}

/* Several replies in one buffer come out one by one, and the parser resets
 * between them (a multiline reply does not leak into the next). */
static void test_reply_sequence(void **state)
{
	(void)state;
	static const char in[] = "250-x\r\n250-2.0.0 y\r\n250 z\r\n550 5.1.1 no\r\n354 go\n";
	static const struct {
		int code;
		const char *enh, *text;
	} want[] = {{250, "2.0.0", "x\ny\nz"}, {550, "5.1.1", "no"}, {354, "", "go"}};
	struct smtp_reply_parser p;
	struct smtp_reply r;
	size_t off = 0, len = sizeof(in) - 1, used;
	const char *err;

	/* "250-x" has no enhanced code but the second line does: kept once */
	smtp_reply_parser_init(&p);
	for (size_t i = 0; i < N_ELEMENTS(want); i++) {
		assert_int_equal(smtp_reply_parse(&p, in + off, len - off, &used, &r, &err), 1);
		off += used;
		assert_int_equal(r.code, want[i].code);
		assert_string_equal(r.enh, want[i].enh);
		assert_string_equal(r.text, want[i].text);
	}
	assert_int_equal(off, len);
	assert_int_equal(smtp_reply_parse(&p, in + off, 0, &used, &r, &err), 0);
}

/* Bounds: line length, line count, text size. */
static void test_reply_bounds(void **state)
{
	(void)state;
	struct {
		size_t line_len; /* text octets per line */
		size_t nlines;
		int ret;
	} cases[] = {
	    {SMTP_REPLY_LINE_MAX - 4, 1, 1},   /* longest line with CRLF */
	    {SMTP_REPLY_LINE_MAX - 3, 1, -1},  /* one too long */
	    {SMTP_REPLY_LINE_MAX + 10, 1, -1}, /* much too long */
	    {1, SMTP_REPLY_LINES_MAX, 1},
	    {1, SMTP_REPLY_LINES_MAX + 1, -1},
	    {80, SMTP_REPLY_TEXT_MAX / 81 - 1, 1},
	    {1000, SMTP_REPLY_TEXT_MAX / 1000 + 1, -1}, /* text too long */
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		size_t cap = (cases[i].line_len + 8) * cases[i].nlines + 1;
		char *in = malloc(cap);
		size_t o = 0;
		assert_non_null(in);
		for (size_t l = 0; l < cases[i].nlines; l++) {
			bool last = l + 1 == cases[i].nlines;
			memcpy(in + o, last ? "250 " : "250-", 4);
			o += 4;
			memset(in + o, 'a', cases[i].line_len);
			o += cases[i].line_len;
			memcpy(in + o, "\r\n", 2);
			o += 2;
		}
		size_t steps[] = {o, 1, 100, 4095};
		for (size_t k = 0; k < N_ELEMENTS(steps); k++) {
			struct smtp_reply r;
			size_t used;
			int ret = reply_feed(in, o, steps[k], &r, &used);
			if (ret != cases[i].ret)
				fail_msg("bounds case %zu step %zu: ret %d", i, steps[k], ret);
			if (ret == 1)
				assert_int_equal(r.nlines, cases[i].nlines);
		}
		free(in);
	}
}

struct caps_case {
	const char *in;
	struct smtp_ehlo_caps want;
};

static const struct caps_case caps_cases[] = {
    {"250-mx\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
     "250-STARTTLS\r\n250-CHUNKING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n"
     "250 AUTH PLAIN LOGIN\r\n",
     {.pipelining = true,
      .size = true,
      .eightbitmime = true,
      .smtputf8 = true,
      .starttls = true,
      .chunking = true,
      .dsn = true,
      .enhanced = true,
      .size_max = 10240000,
      .auth_plain = true,
      .auth_login = true}},
    /* case-insensitive keywords, SIZE without a limit, old AUTH= form */
    {"250-mx says hi\r\n250-pipelining\r\n250-size\r\n250 auth=login\r\n",
     {.pipelining = true, .size = true, .auth_login = true}},
    {"250-mx\r\n250-Auth CRAM-MD5 plain\r\n250 SIZE junk\r\n", {.size = true, .auth_plain = true}},
    /* the greeting line is not a keyword */
    {"250 PIPELINING\r\n", {.pipelining = false}},
    /* prefixes are not keywords */
    {"250-mx\r\n250-PIPELININGX\r\n250 DSNX\r\n", {.dsn = false}},
    {"250-mx\r\n250 SIZE 0\r\n", {.size = true, .size_max = 0}},
    /* a failed EHLO has no capabilities */
    {"550-mx\r\n550 PIPELINING\r\n", {.pipelining = false}},
};

static void test_ehlo_caps(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(caps_cases); i++) {
		struct smtp_reply r;
		struct smtp_ehlo_caps caps;
		size_t used;
		const struct smtp_ehlo_caps *w = &caps_cases[i].want;

		assert_int_equal(
		    reply_feed(caps_cases[i].in, strlen(caps_cases[i].in), 1000, &r, &used), 1);
		memset(&caps, 0xa5, sizeof(caps));
		smtp_ehlo_caps_parse(&r, &caps);
		if (caps.pipelining != w->pipelining || caps.size != w->size ||
		    caps.eightbitmime != w->eightbitmime || caps.smtputf8 != w->smtputf8 ||
		    caps.starttls != w->starttls || caps.chunking != w->chunking ||
		    caps.dsn != w->dsn || caps.enhanced != w->enhanced ||
		    caps.size_max != w->size_max || caps.auth_plain != w->auth_plain ||
		    caps.auth_login != w->auth_login)
			fail_msg("caps case %zu differs", i);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_cases),
	    cmocka_unit_test(test_reply_sequence),
	    cmocka_unit_test(test_reply_bounds),
	    cmocka_unit_test(test_ehlo_caps),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
