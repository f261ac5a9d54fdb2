/* test_milter.c — unit tests for the milter frames (milter/milter_proto.c)
 * and the header section rewrite (milter/milter_msg.c): table-driven
 * decoding of replies, bounds, resumability over split input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/buf.h"
#include "milter/milter.h"
#include "milter/milter_proto.h"

#include <string.h>

static void test_encode_optneg(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(milter_frame_optneg(&b, 6, 0xff, 0x1ff), 0);
	const unsigned char want[] = {0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0, 0xff, 0, 0, 1, 0xff};
	assert_int_equal(b.len, sizeof(want));
	assert_memory_equal(b.data, want, sizeof(want));
	buf_free(&b);
}

static void test_encode_connect_strs(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(milter_frame_connect(&b, "host", '4', 2525, "1.2.3.4"), 0);
	const unsigned char want[] = "\0\0\0\x11"
	                             "Chost\0"
	                             "4\x09\xdd"
	                             "1.2.3.4";
	assert_int_equal(b.len, sizeof(want)); /* the trailing NUL is the address's */
	assert_memory_equal(b.data, want, sizeof(want));
	buf_reset(&b);
	const char *s[] = {"<a@b>", "SIZE=10"};
	assert_int_equal(milter_frame_put_strs(&b, SMFIC_MAIL, s, 2), 0);
	assert_int_equal(b.len, 4 + 1 + 6 + 8);
	assert_int_equal(b.data[3], 15);
	buf_free(&b);
}

static void test_decode_split(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	const char *hv[] = {"X-A", "1"};
	milter_frame_put_strs(&b, SMFIR_ADDHEADER, hv, 2);
	milter_frame_put(&b, SMFIR_ACCEPT, NULL, 0);
	struct milter_reply r;
	size_t used;
	const char *err = NULL;
	for (size_t cut = 0; cut < 4 + 1 + 6; cut++)
		assert_int_equal(milter_reply_decode(b.data, cut, &r, &used, &err), 0);
	assert_int_equal(milter_reply_decode(b.data, b.len, &r, &used, &err), 1);
	assert_int_equal(r.cmd, SMFIR_ADDHEADER);
	assert_int_equal(used, 11);
	const char *s[2];
	size_t n;
	assert_int_equal(milter_reply_strs(&r, 0, s, 2, 2, &n), 0);
	assert_string_equal(s[0], "X-A");
	assert_string_equal(s[1], "1");
	assert_int_equal(milter_reply_decode(b.data + used, b.len - used, &r, &used, &err), 1);
	assert_int_equal(r.cmd, SMFIR_ACCEPT);
	assert_int_equal(r.len, 0);
	buf_free(&b);
}

static void test_decode_bounds(void **state)
{
	(void)state;
	struct milter_reply r;
	size_t used;
	const char *err = NULL;
	const unsigned char empty[] = {0, 0, 0, 0, 'a'};
	assert_int_equal(milter_reply_decode(empty, 5, &r, &used, &err), -1);
	/* 64 KiB + 1 of data for a header is too much; for a body chunk not */
	const unsigned char big_h[] = {0, 1, 0, 2, 'h'};
	assert_int_equal(milter_reply_decode(big_h, 5, &r, &used, &err), -1);
	const unsigned char big_b[] = {0, 1, 0, 2, 'b'};
	assert_int_equal(milter_reply_decode(big_b, 5, &r, &used, &err), 0);
	const unsigned char huge_b[] = {0, 0x10, 0, 2, 'b'};
	assert_int_equal(milter_reply_decode(huge_b, 5, &r, &used, &err), -1);
	/* a string without its NUL */
	const unsigned char nonul[] = {0, 0, 0, 4, 'h', 'X', 0, 'y'};
	assert_int_equal(milter_reply_decode(nonul, sizeof(nonul), &r, &used, &err), 1);
	const char *s[2];
	size_t n;
	assert_int_equal(milter_reply_strs(&r, 0, s, 2, 2, &n), -1);
	/* a header index without room for it */
	const unsigned char shortidx[] = {0, 0, 0, 3, 'm', 0, 0};
	uint32_t idx;
	const char *nm, *val;
	assert_int_equal(milter_reply_decode(shortidx, sizeof(shortidx), &r, &used, &err), 1);
	assert_int_equal(milter_reply_header(&r, &idx, &nm, &val), -1);
}

static void test_replycode(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int rc, code;
		const char *enh, *text;
	} cases[] = {
	    {"554 5.7.1 Spam\r\n here", 0, 554, "5.7.1", "Spam   here"},
	    {"451 4.7.1", 0, 451, "4.7.1", ""},
	    {"550 no enh", 0, 550, "", "no enh"},
	    {"550 4.7.1 wrong class", 0, 550, "", "wrong class"},
	    {"451 5.7.1", 0, 451, "", ""},
	    {"250 ok", -1, 0, "", ""},
	    {"55", -1, 0, "", ""},
	    {"5x0 bad", -1, 0, "", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct milter_reply r = {SMFIR_REPLYCODE, (const unsigned char *)cases[i].in,
		                         strlen(cases[i].in) + 1};
		int code = 0;
		char enh[16], text[64];
		assert_int_equal(milter_reply_code(&r, &code, enh, sizeof(enh), text, sizeof(text)),
		                 cases[i].rc);
		if (cases[i].rc < 0)
			continue;
		assert_int_equal(code, cases[i].code);
		assert_string_equal(enh, cases[i].enh);
		assert_string_equal(text, cases[i].text);
	}
}

static void test_hdrs_apply(void **state)
{
	(void)state;
	const char *msg = "Received: from x\r\n\tby y\r\nSubject: a\r\nTo: b\r\nsubject: c\r\n"
	                  "\r\nbody\r\n";
	struct milter_hdrs h = {0};
	assert_int_equal(
	    milter_hdrs_parse(&h, (const unsigned char *)msg, strlen(msg), strlen(msg)), 0);
	assert_int_equal(h.n, 4);
	assert_int_equal(h.body_off, strlen(msg) - 6);
	struct milter_hdr_op ops[] = {
	    {MILTER_HDR_CHANGE, 2, "Subject", "C2"},  {MILTER_HDR_CHANGE, 1, "To", ""},
	    {MILTER_HDR_INSERT, 0, "X-Top", "t"},     {MILTER_HDR_ADD, 0, "X-End", "a\nb"},
	    {MILTER_HDR_CHANGE, 5, "Subject", "new"}, /* no such field: added */
	    {MILTER_HDR_CHANGE, 1, "X-None", ""},     /* no such field: nothing */
	};
	struct buf out;
	buf_init(&out, 0);
	assert_int_equal(milter_hdrs_apply(&h, ops, 6, &out), 0);
	assert_string_equal((const char *)out.data,
	                    "X-Top: t\r\nReceived: from x\r\n\tby y\r\nSubject: a\r\n"
	                    "Subject: C2\r\nX-End: a\r\n\tb\r\nSubject: new\r\n\r\n");
	buf_free(&out);
	milter_hdrs_free(&h);
	/* a line that is not a field starts the body */
	const char *nofield = "Subject: a\r\nnot a field\r\n\r\nrest\r\n";
	assert_int_equal(
	    milter_hdrs_parse(&h, (const unsigned char *)nofield, strlen(nofield), strlen(nofield)),
	    0);
	assert_int_equal(h.n, 1);
	assert_int_equal(h.body_off, 12);
	milter_hdrs_free(&h);
	/* a section that does not end within what was read */
	const char *open = "Subject: a\r\nTo: b";
	assert_int_equal(milter_hdrs_parse(&h, (const unsigned char *)open, strlen(open), 100), -1);
	milter_hdrs_free(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_encode_optneg), cmocka_unit_test(test_encode_connect_strs),
	    cmocka_unit_test(test_decode_split),  cmocka_unit_test(test_decode_bounds),
	    cmocka_unit_test(test_replycode),     cmocka_unit_test(test_hdrs_apply),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
