/* test_ctl.c — the control socket's frame encoder and decoder (ctl/ctl.h)
 * and the header-section cut used by `hikyaku queue show`. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ctl/ctl.h"
#include "queue/qmgr_ctl.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct rt_field {
	uint8_t tag;
	const char *s; /* NULL: a u64 field */
	uint64_t v;
};

struct rt_case {
	const char *name;
	uint8_t type;
	struct rt_field fields[6];
	size_t n;
};

static const struct rt_case rt_cases[] = {
    {"list, no fields", CTL_T_LIST, {{0}}, 0},
    {"show qid", CTL_T_SHOW, {{CTL_F_QID, "F48HcEYagnfxxbOR", 0}}, 1},
    {"flush domain", CTL_T_FLUSH, {{CTL_F_DOMAIN, "example.org", 0}}, 1},
    {"empty string", CTL_T_OK, {{CTL_F_MESSAGE, "", 0}, {CTL_F_COUNT, NULL, 0}}, 2},
    {"u64 extremes",
     CTL_T_ITEM,
     {{CTL_F_ARRIVAL, NULL, UINT64_MAX},
      {CTL_F_SIZE, NULL, 1},
      {CTL_F_RCPT, "a@b", 0},
      {CTL_F_RCPT_DONE, NULL, 1},
      {CTL_F_HEADERS, "Subject: x\r\n", 0}},
     5},
    {"error", CTL_T_ERROR, {{CTL_F_MESSAGE, "no such message", 0}}, 1},
    {"end", CTL_T_END, {{CTL_F_MESSAGE, "2 messages", 0}, {CTL_F_COUNT, NULL, 2}}, 2},
};

static void encode_case(const struct rt_case *c, struct buf *b)
{
	size_t start = ctl_frame_begin(b, c->type);
	for (size_t i = 0; i < c->n; i++) {
		const struct rt_field *f = &c->fields[i];
		int r = f->s != NULL ? ctl_frame_add_str(b, f->tag, f->s)
		                     : ctl_frame_add_u64(b, f->tag, f->v);
		assert_int_equal(r, 0);
	}
	assert_int_equal(ctl_frame_end(b, start, CTL_RESP_MAX), 0);
}

static void test_round_trip(void **state)
{
	(void)state;
	for (size_t k = 0; k < N(rt_cases); k++) {
		const struct rt_case *c = &rt_cases[k];
		struct buf b;
		struct ctl_frame f;
		struct ctl_field fld;
		size_t used = 0, off = 0, i = 0;
		const char *error = NULL;
		buf_init(&b, CTL_RESP_MAX);
		encode_case(c, &b);
		/* Two frames back to back: the first is decoded alone. */
		size_t one = b.len;
		encode_case(c, &b);
		assert_int_equal(ctl_frame_decode(b.data, b.len, CTL_RESP_MAX, &f, &used, &error),
		                 1);
		assert_int_equal(used, one);
		assert_int_equal(f.type, c->type);
		while (ctl_field_next(&f, &off, &fld)) {
			assert_true(i < c->n);
			const struct rt_field *want = &c->fields[i++];
			assert_int_equal(fld.tag, want->tag);
			if (want->s != NULL) {
				assert_int_equal(fld.len, strlen(want->s));
				assert_memory_equal(fld.p, want->s, fld.len);
			} else {
				assert_true(ctl_field_u64(&fld) == want->v);
			}
		}
		assert_int_equal(i, c->n);
		/* Every strict prefix asks for more octets. */
		for (size_t len = 0; len < one; len++)
			assert_int_equal(
			    ctl_frame_decode(b.data, len, CTL_RESP_MAX, &f, &used, &error), 0);
		buf_free(&b);
	}
}

struct dec_case {
	const char *name;
	const char *bytes;
	size_t len;
	size_t max;
	int rc;
	const char *error; /* substring, rc == -1 */
};

/* Frames written out octet by octet: length (4), type, fields. */
static const struct dec_case dec_cases[] = {
    {"nothing", "", 0, CTL_REQ_MAX, 0, NULL},
    {"partial length", "\0\0\0", 3, CTL_REQ_MAX, 0, NULL},
    {"length only", "\0\0\0\1", 4, CTL_REQ_MAX, 0, NULL},
    {"zero length", "\0\0\0\0\1", 5, CTL_REQ_MAX, -1, "empty frame"},
    {"oversized, refused from the length alone", "\0\1\0\0", 4, CTL_REQ_MAX, -1, "too large"},
    {"just over the maximum", "\0\0\x10\0", 4, CTL_REQ_MAX, -1, "too large"},
    {"exactly the maximum is fine until complete", "\0\0\x0f\xfc\1", 5, CTL_REQ_MAX, 0, NULL},
    {"huge length", "\xff\xff\xff\xff", 4, CTL_RESP_MAX, -1, "too large"},
    {"unknown type", "\0\0\0\1\x99", 5, CTL_REQ_MAX, -1, "unknown frame type"},
    {"type zero", "\0\0\0\1\0", 5, CTL_REQ_MAX, -1, "unknown frame type"},
    {"wrong type seen before the body", "\0\0\0\x20\x7f", 5, CTL_REQ_MAX, -1, "unknown"},
    {"list, complete", "\0\0\0\1\1", 5, CTL_REQ_MAX, 1, NULL},
    {"truncated body", "\0\0\0\x0b\2\1\0\0\0\x10", 10, CTL_REQ_MAX, 0, NULL},
    {"truncated field header", "\0\0\0\3\2\1\0", 7, CTL_REQ_MAX, -1, "truncated field"},
    {"field runs past the frame", "\0\0\0\7\2\1\0\0\0\3ab", 12, CTL_REQ_MAX, -1, "past"},
    {"unknown tag", "\0\0\0\6\2\x63\0\0\0\0", 10, CTL_REQ_MAX, -1, "unknown field"},
    {"tag zero", "\0\0\0\6\2\0\0\0\0\0", 10, CTL_REQ_MAX, -1, "unknown field"},
    {"u64 of 7 octets", "\0\0\0\x0d\x41\4\0\0\0\7\0\0\0\0\0\0\0", 17, CTL_REQ_MAX, -1, "8 octets"},
    {"NUL in a string", "\0\0\0\x08\2\1\0\0\0\2a\0", 12, CTL_REQ_MAX, -1, "NUL"},
    {"NUL in bytes is fine", "\0\0\0\x08\x43\x1a\0\0\0\2a\0", 12, CTL_RESP_MAX, 1, NULL},
    {"empty string field", "\0\0\0\6\2\1\0\0\0\0", 10, CTL_REQ_MAX, 1, NULL},
};

static void test_decode(void **state)
{
	(void)state;
	for (size_t k = 0; k < N(dec_cases); k++) {
		const struct dec_case *c = &dec_cases[k];
		struct ctl_frame f;
		size_t used = 0;
		const char *error = NULL;
		int r = ctl_frame_decode(c->bytes, c->len, c->max, &f, &used, &error);
		if (r != c->rc)
			fail_msg("%s: got %d, want %d (%s)", c->name, r, c->rc,
			         error != NULL ? error : "-");
		if (c->rc == 1)
			assert_int_equal(used, c->len);
		if (c->rc == -1) {
			assert_non_null(error);
			if (strstr(error, c->error) == NULL)
				fail_msg("%s: error '%s', want '%s'", c->name, error, c->error);
		}
	}
}

struct enc_case {
	const char *name;
	size_t value_len;
	size_t max;
	int rc;
};

static const struct enc_case enc_cases[] = {
    {"fits", 100, CTL_REQ_MAX, 0},
    {"exactly the maximum", CTL_REQ_MAX - CTL_HDR_LEN - CTL_FIELD_HDR_LEN, CTL_REQ_MAX, 0},
    {"one octet over", CTL_REQ_MAX - CTL_HDR_LEN - CTL_FIELD_HDR_LEN + 1, CTL_REQ_MAX, -1},
    {"far over", 100000, CTL_REQ_MAX, -1},
};

static void test_encode_bounds(void **state)
{
	(void)state;
	static char value[100000];
	memset(value, 'x', sizeof(value));
	for (size_t k = 0; k < N(enc_cases); k++) {
		const struct enc_case *c = &enc_cases[k];
		struct buf b;
		buf_init(&b, 0);
		(void)buf_append(&b, "prefix", 6);
		size_t start = ctl_frame_begin(&b, CTL_T_ERROR);
		assert_int_equal(ctl_frame_add(&b, CTL_F_MESSAGE, value, c->value_len), 0);
		int r = ctl_frame_end(&b, start, c->max);
		if (r != c->rc)
			fail_msg("%s: got %d", c->name, r);
		if (r < 0) {
			/* A refused frame is cut off again: nothing half-written. */
			assert_int_equal(b.len, 6);
		} else {
			struct ctl_frame f;
			size_t used = 0;
			const char *error = NULL;
			assert_int_equal(
			    ctl_frame_decode(b.data + 6, b.len - 6, c->max, &f, &used, &error), 1);
			assert_int_equal(used, b.len - 6);
		}
		buf_free(&b);
	}
	/* A buffer whose max stops the field leaves the frame unchanged. */
	struct buf small;
	buf_init(&small, 32);
	size_t start = ctl_frame_begin(&small, CTL_T_OK);
	assert_int_equal(ctl_frame_add(&small, CTL_F_MESSAGE, value, 64), -1);
	assert_int_equal(small.len, CTL_HDR_LEN);
	assert_int_equal(ctl_frame_end(&small, start, CTL_REQ_MAX), 0);
	buf_free(&small);
}

static void test_request_types(void **state)
{
	(void)state;
	static const struct {
		uint8_t type;
		bool request;
	} cases[] = {
	    {0, false},           {CTL_T_LIST, true},  {CTL_T_SHOW, true},    {CTL_T_FLUSH, true},
	    {CTL_T_DELETE, true}, {CTL_T_HOLD, true},  {CTL_T_RELEASE, true}, {CTL_T_STATS, true},
	    {CTL_T_ANALYTICS, true}, {9, false},     {CTL_T_DSTAT, false}, {CTL_T_AJSON, false},
	    {CTL_T_OK, false},    {CTL_T_ITEM, false}, {0xff, false},
	};
	for (size_t k = 0; k < N(cases); k++)
		assert_int_equal(ctl_type_is_request(cases[k].type), cases[k].request);
}

static void test_socket_path(void **state)
{
	(void)state;
	static char longdir[200];
	memset(longdir, 'd', sizeof(longdir) - 1);
	static const struct {
		const char *dir;
		size_t outlen;
		int rc;
		const char *want;
	} cases[] = {
	    {"/var/spool/hikyaku", 108, 0, "/var/spool/hikyaku/control.sock"},
	    {"rel", 108, 0, "rel/control.sock"},
	    {longdir, 108, -1, NULL},
	    {"/var/spool/hikyaku", 10, -1, NULL},
	};
	for (size_t k = 0; k < N(cases); k++) {
		char out[256];
		assert_int_equal(ctl_socket_path(cases[k].dir, out, cases[k].outlen), cases[k].rc);
		if (cases[k].want != NULL)
			assert_string_equal(out, cases[k].want);
	}
}

static void test_header_len(void **state)
{
	(void)state;
	static const struct {
		const char *msg;
		size_t want;
	} cases[] = {
	    {"Subject: a\r\n\r\nbody\r\n", 12},
	    {"Subject: a\r\nFrom: b\r\n\r\n", 21},
	    {"Subject: a\n\nbody\n", 11},
	    {"\r\nbody only\r\n", 0},
	    {"\nbody only\n", 0},
	    {"Subject: no end", 15},
	    {"Subject: a\r\n", 12},
	    {"Subject: a\r\n\r", 13},
	    {"", 0},
	};
	for (size_t k = 0; k < N(cases); k++) {
		const char *m = cases[k].msg;
		size_t got = qmgr_ctl_header_len((const unsigned char *)m, strlen(m));
		if (got != cases[k].want)
			fail_msg("case %zu: got %zu, want %zu", k, got, cases[k].want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_decode),
	    cmocka_unit_test(test_encode_bounds), cmocka_unit_test(test_request_types),
	    cmocka_unit_test(test_socket_path),   cmocka_unit_test(test_header_len),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
