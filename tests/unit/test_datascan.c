/* test_datascan.c — table-driven tests of the DATA/BDAT content scanner.
 * Every case runs fed in one piece, split at every single point, and byte by
 * byte; all runs must give the same output, flags, counts and consumed total
 * (the scanner is resumable across any split of the input). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtpd/datascan.h"

#define F_LF DATASCAN_BARE_LF
#define F_CR DATASCAN_BARE_CR
#define F_LONG DATASCAN_LONG_LINE
#define F_BIG DATASCAN_TOO_BIG
#define F_HDR DATASCAN_HEADER_BIG
#define F_HOPS DATASCAN_TOO_MANY_HOPS
#define F_NUL DATASCAN_NUL

#define ALL SIZE_MAX /* expected consumed: the whole input */

struct tcase {
	const char *name;
	enum datascan_mode mode;
	/* input and expected content; when gen is set it builds both instead */
	const char *in;
	size_t in_len; /* 0: strlen(in) */
	const char *out;
	size_t out_len; /* 0: strlen(out) */
	void (*gen)(struct buf *in, struct buf *out);
	struct datascan_limits lim; /* max_line 0: the defaults below */
	size_t out_max;             /* 0: unbounded out */
	bool finish;                /* call datascan_finish() at the end */
	/* expected */
	unsigned flags;
	size_t consumed;
	bool done;
	uint64_t header_size;
	unsigned received;
	bool eight_bit;
	bool message_id; /* a Message-ID: field in the header section */
	bool date;       /* a Date: field in the header section */
};

static const struct datascan_limits default_lim = {
    .max_line = 1000,
    .max_size = 1 << 20,
    .max_header = 64 * 1024,
    .max_received = 50,
};

static void gen_repeat(struct buf *b, char c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		assert_int_equal(buf_append_byte(b, (unsigned char)c), 0);
}

static void gen_line(struct buf *in, struct buf *out, bool stuffed, size_t n)
{
	if (stuffed)
		buf_append_str(in, ".");
	gen_repeat(in, 'x', n);
	buf_append_str(in, "\r\n.\r\n");
	gen_repeat(out, 'x', n);
	buf_append_str(out, "\r\n");
}

/* 998 + CRLF = 1000: at the limit of RFC 5321 §4.5.3.1.6 */
static void gen_line_998(struct buf *in, struct buf *out)
{
	gen_line(in, out, false, 998);
}

static void gen_line_999(struct buf *in, struct buf *out)
{
	gen_line(in, out, false, 999);
}

/* the stuffing dot does not count toward the line length */
static void gen_line_998_stuffed(struct buf *in, struct buf *out)
{
	gen_line(in, out, true, 998);
}

static void gen_received(struct buf *in, struct buf *out, unsigned n)
{
	static const char *const forms[] = {"Received: from a\r\n", "received :x\r\n",
	                                    "RECEIVED\t: y\r\n", "Received:\r\n\tcontinued\r\n"};
	for (unsigned i = 0; i < n; i++) {
		buf_append_str(in, forms[i % 4]);
		buf_append_str(out, forms[i % 4]);
	}
	buf_append_str(in, "\r\nReceived: body\r\n.\r\n");
	buf_append_str(out, "\r\nReceived: body\r\n");
}

static void gen_received_50(struct buf *in, struct buf *out)
{
	gen_received(in, out, 50);
}

static void gen_received_51(struct buf *in, struct buf *out)
{
	gen_received(in, out, 51);
}

/* header sizes of gen_received(): the four forms cycle */
#define RECV_HDR(n)                                                                                \
	((uint64_t)((n) / 4 * (18 + 13 + 14 + 23)) + ((n) % 4 >= 1 ? 18 : 0) +                     \
	 ((n) % 4 >= 2 ? 13 : 0) + ((n) % 4 >= 3 ? 14 : 0))

static const struct tcase cases[] = {
    {.name = "normal",
     .in = "From: a\r\nTo: b\r\n\r\nHello\r\n.\r\n",
     .out = "From: a\r\nTo: b\r\n\r\nHello\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 16},
    {.name = "dot-stuffing",
     .in = "a\r\n..foo\r\n..\r\n...\r\n.\r\n",
     .out = "a\r\n.foo\r\n.\r\n..\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 16},
    {.name = "lone dot removed",
     .in = ".foo\r\n.bar\r\n.\r\n",
     .out = "foo\r\nbar\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "dot not at line start kept",
     .in = "a.b\r\nc.\r\n.\r\n",
     .out = "a.b\r\nc.\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 9},
    {.name = "empty message", .in = ".\r\n", .out = "", .consumed = ALL, .done = true},
    {.name = "empty line only", .in = "\r\n.\r\n", .out = "\r\n", .consumed = ALL, .done = true},
    {.name = "pipelined next command",
     .in = "Hi\r\n.\r\nQUIT\r\n",
     .out = "Hi\r\n",
     .consumed = 7,
     .done = true,
     .header_size = 4},
    {.name = "empty then pipelined", .in = ".\r\nRSET\r\n", .out = "", .consumed = 3, .done = true},
    {.name = "incomplete", .in = "a\r\nb", .out = "a\r\nb", .consumed = ALL, .header_size = 4},
    {.name = "incomplete dot", .in = "a\r\n.", .out = "a\r\n", .consumed = ALL, .header_size = 3},
    {.name = "incomplete dot CR",
     .in = "a\r\n.\r",
     .out = "a\r\n",
     .consumed = ALL,
     .header_size = 3},

    /* SMTP smuggling (2023): none of these may end the message */
    {.name = "smuggle LF.LF",
     .in = "a\n.\nMAIL FROM:<x>\r\n.\r\n",
     .out = "a\n.\nMAIL FROM:<x>\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 19},
    {.name = "smuggle CR.CR",
     .in = "a\r.\rMAIL\r\n.\r\n",
     .out = "a\r.\rMAIL\r\n",
     .flags = F_CR,
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "smuggle LF.CRLF",
     .in = "a\n.\r\nMAIL\r\n.\r\n",
     .out = "a\n.\r\nMAIL\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 11},
    {.name = "smuggle CRLF.LF",
     .in = "a\r\n.\nMAIL\r\n.\r\n",
     .out = "a\r\n\nMAIL\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "smuggle CRLF.CR",
     .in = "a\r\n.\rMAIL\r\n.\r\n",
     .out = "a\r\n\rMAIL\r\n",
     .flags = F_CR,
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "smuggle tail LF.LF",
     .in = "a\n.\n",
     .out = "a\n.\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 4},
    {.name = "smuggle tail CR.CR",
     .in = "a\r.\rb",
     .out = "a\r.\rb",
     .flags = F_CR,
     .consumed = ALL,
     .header_size = 5},
    {.name = "smuggle tail LF.CRLF",
     .in = "a\n.\r\n",
     .out = "a\n.\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 5},
    {.name = "smuggle tail CRLF.LF",
     .in = "a\r\n.\n",
     .out = "a\r\n\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 4},
    {.name = "smuggle tail CRLF.CR",
     .in = "a\r\n.\rx",
     .out = "a\r\n\rx",
     .flags = F_CR,
     .consumed = ALL,
     .header_size = 5},
    {.name = "smuggle start .LF",
     .in = ".\n",
     .out = "\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 1},
    {.name = "smuggle start .CR",
     .in = ".\rx",
     .out = "\rx",
     .flags = F_CR,
     .consumed = ALL,
     .header_size = 2},
    {.name = "smuggle start LF.LF",
     .in = "\n.\n",
     .out = "\n.\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 3},
    {.name = "CR CRLF",
     .in = "a\r\r\n.\r\n",
     .out = "a\r\r\n",
     .flags = F_CR,
     .consumed = ALL,
     .done = true,
     .header_size = 4},
    {.name = "CR CR LF dot",
     .in = "a\r\r\n.\r\r\n.\r\n",
     .out = "a\r\r\n\r\r\n",
     .flags = F_CR,
     .consumed = ALL,
     .done = true,
     .header_size = 7},

    /* line length, measured on content including CRLF */
    {.name = "line 998+CRLF ok",
     .gen = gen_line_998,
     .consumed = ALL,
     .done = true,
     .header_size = 1000},
    {.name = "line 999+CRLF long",
     .gen = gen_line_999,
     .flags = F_LONG,
     .consumed = ALL,
     .done = true,
     .header_size = 1001},
    {.name = "stuffed line 998+CRLF ok",
     .gen = gen_line_998_stuffed,
     .consumed = ALL,
     .done = true,
     .header_size = 1000},
    {.name = "bare LF does not reset line",
     .in = "aaaa\nbbbb\r\n.\r\n",
     .out = "aaaa\nbbbb\r\n",
     .lim = {10, 1000, 1000, 50},
     .flags = F_LONG | F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 11},
    {.name = "CRLF resets line",
     .in = "aaaaaaaa\r\nbbbbbbbb\r\n.\r\n",
     .out = "aaaaaaaa\r\nbbbbbbbb\r\n",
     .lim = {10, 1000, 1000, 50},
     .consumed = ALL,
     .done = true,
     .header_size = 20},
    {.name = "unterminated line long",
     .in = "aaaaaaaaaaa",
     .out = "aaaaaaaaaaa",
     .lim = {10, 1000, 1000, 50},
     .flags = F_LONG,
     .consumed = ALL,
     .header_size = 11},

    /* size */
    {.name = "size at limit",
     .in = "12345678\r\n.\r\n",
     .out = "12345678\r\n",
     .lim = {1000, 10, 1000, 50},
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "size over limit",
     .in = "123456789\r\n.\r\nQUIT\r\n",
     .out = "123456789\r",
     .lim = {1000, 10, 1000, 50},
     .flags = F_BIG,
     .consumed = 14,
     .done = true,
     .header_size = 11},
    {.name = "size over, stuffed",
     .in = "..23456789\r\n.\r\n",
     .out = ".23456789\r",
     .lim = {1000, 10, 1000, 50},
     .flags = F_BIG,
     .consumed = ALL,
     .done = true,
     .header_size = 11},
    {.name = "size zero",
     .in = "a\r\n.\r\n",
     .out = "",
     .lim = {1000, 0, 1000, 50},
     .flags = F_BIG,
     .consumed = ALL,
     .done = true,
     .header_size = 3},
    {.name = "out max",
     .in = "123456789\r\n.\r\n",
     .out = "12345",
     .out_max = 5,
     .flags = F_BIG,
     .consumed = ALL,
     .done = true,
     .header_size = 11},

    /* header section */
    {.name = "header at limit",
     .in = "Ab: 1234\r\n\r\nbody body body\r\n.\r\n",
     .out = "Ab: 1234\r\n\r\nbody body body\r\n",
     .lim = {1000, 1000, 10, 50},
     .consumed = ALL,
     .done = true,
     .header_size = 10},
    {.name = "header over limit",
     .in = "Ab: 12345\r\n\r\nbody\r\n.\r\n",
     .out = "Ab: 12345\r\n\r\nbody\r\n",
     .lim = {1000, 1000, 10, 50},
     .flags = F_HDR,
     .consumed = ALL,
     .done = true,
     .header_size = 11},
    {.name = "no header end",
     .in = "Ab: 1234\r\nCd: 5\r\n.\r\n",
     .out = "Ab: 1234\r\nCd: 5\r\n",
     .lim = {1000, 1000, 10, 50},
     .flags = F_HDR,
     .consumed = ALL,
     .done = true,
     .header_size = 17},
    {.name = "bare CR line not empty",
     .in = "\r\r\nReceived: x\r\n\r\n.\r\n",
     .out = "\r\r\nReceived: x\r\n\r\n",
     .flags = F_CR,
     .consumed = ALL,
     .done = true,
     .header_size = 16,
     .received = 1},
    {.name = "bare LF line not empty",
     .in = "a\r\n\n\r\nReceived: x\r\n\r\n.\r\n",
     .out = "a\r\n\n\r\nReceived: x\r\n\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 19,
     .received = 1},

    /* Message-ID: and Date: presence (added on submission when missing) */
    {.name = "message-id and date",
     .in = "Message-ID: <a@b>\r\nDATE\t: x\r\nReceived: r\r\n\r\nDate: body\r\n.\r\n",
     .out = "Message-ID: <a@b>\r\nDATE\t: x\r\nReceived: r\r\n\r\nDate: body\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 42,
     .received = 1,
     .message_id = true,
     .date = true},
    {.name = "neither message-id nor date",
     .in = "Message-IDx: y\r\nX-Date: z\r\n Date: c\r\nDat: d\r\nMessage-I: e\r\nDate-x: f\r\n\r\nDate: body\r\nMessage-ID: <x@y>\r\n.\r\n",
     .out = "Message-IDx: y\r\nX-Date: z\r\n Date: c\r\nDat: d\r\nMessage-I: e\r\nDate-x: f\r\n\r\nDate: body\r\nMessage-ID: <x@y>\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 70},

    /* Received: counting */
    {.name = "received 50 of 50",
     .gen = gen_received_50,
     .consumed = ALL,
     .done = true,
     .header_size = RECV_HDR(50),
     .received = 50},
    {.name = "received 51 of 50",
     .gen = gen_received_51,
     .flags = F_HOPS,
     .consumed = ALL,
     .done = true,
     .header_size = RECV_HDR(51),
     .received = 51},
    {.name = "received in body",
     .in = "Received: a\r\n\r\nReceived: b\r\n.\r\n",
     .out = "Received: a\r\n\r\nReceived: b\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 13,
     .received = 1},
    {.name = "received continuation",
     .in = "Received: a\r\n Received: b\r\n\tReceived: c\r\n.\r\n",
     .out = "Received: a\r\n Received: b\r\n\tReceived: c\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 41,
     .received = 1},
    {.name = "not received",
     .in = "Received-SPF: x\r\nXReceived: x\r\nReceivedx: x\r\nReceived x: y\r\n"
           "Receive: z\r\nRe\nceived: w\r\nX: Received: v\r\n.\r\n",
     .out = "Received-SPF: x\r\nXReceived: x\r\nReceivedx: x\r\nReceived x: y\r\n"
            "Receive: z\r\nRe\nceived: w\r\nX: Received: v\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 102},
    {.name = "received after bare LF",
     .in = "a\nReceived: x\r\n.\r\n",
     .out = "a\nReceived: x\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .done = true,
     .header_size = 15},
    {.name = "received stuffed",
     .in = ".Received: x\r\n..Received: y\r\n.\r\n",
     .out = "Received: x\r\n.Received: y\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 27,
     .received = 1},
    {.name = "received limit zero",
     .in = "Received: x\r\n.\r\n",
     .out = "Received: x\r\n",
     .lim = {1000, 1000, 1000, 0},
     .flags = F_HOPS,
     .consumed = ALL,
     .done = true,
     .header_size = 13,
     .received = 1},

    /* octets */
    {.name = "8bit",
     .in = "Subject: caf\xc3\xa9\r\n.\r\n",
     .out = "Subject: caf\xc3\xa9\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 16,
     .eight_bit = true},
    {.name = "7bit",
     .in = "a\x7f\r\n.\r\n",
     .out = "a\x7f\r\n",
     .consumed = ALL,
     .done = true,
     .header_size = 4},
    {.name = "NUL",
     .in = "a\0b\r\n.\r\n",
     .in_len = 8,
     .out = "a\0b\r\n",
     .out_len = 5,
     .flags = F_NUL,
     .consumed = ALL,
     .done = true,
     .header_size = 5},

    /* RAW (BDAT, RFC 3030): no unstuffing, no end */
    {.name = "raw",
     .mode = DATASCAN_RAW,
     .in = "a\r\n..b\r\n.\r\nc",
     .out = "a\r\n..b\r\n.\r\nc",
     .consumed = ALL,
     .header_size = 12},
    {.name = "raw finish trailing CR",
     .mode = DATASCAN_RAW,
     .in = "abc\r",
     .out = "abc\r",
     .finish = true,
     .flags = F_CR,
     .consumed = ALL,
     .header_size = 4},
    {.name = "raw trailing CR unfinished",
     .mode = DATASCAN_RAW,
     .in = "abc\r",
     .out = "abc\r",
     .consumed = ALL,
     .header_size = 3},
    {.name = "raw finish CRLF",
     .mode = DATASCAN_RAW,
     .in = "abc\r\n",
     .out = "abc\r\n",
     .finish = true,
     .consumed = ALL,
     .header_size = 5},
    {.name = "raw bare LF",
     .mode = DATASCAN_RAW,
     .in = "a\nb\r\n",
     .out = "a\nb\r\n",
     .flags = F_LF,
     .consumed = ALL,
     .header_size = 5},
    {.name = "raw headers",
     .mode = DATASCAN_RAW,
     .in = "Received: a\r\n\r\nb\r\n",
     .out = "Received: a\r\n\r\nb\r\n",
     .finish = true,
     .consumed = ALL,
     .header_size = 13,
     .received = 1},
    {.name = "raw size",
     .mode = DATASCAN_RAW,
     .in = "0123456789ab",
     .out = "0123456789",
     .lim = {1000, 10, 1000, 50},
     .flags = F_BIG,
     .consumed = ALL,
     .header_size = 12},
};

struct result {
	struct buf out;
	unsigned flags;
	uint64_t size;
	uint64_t header_size;
	unsigned received;
	bool eight_bit;
	bool message_id, date;
	size_t consumed;
	bool done;
};

/* Feed in[] as a first chunk of `first` octets then chunks of `step`. */
static void scan_run(const struct tcase *tc, const unsigned char *in, size_t len, size_t first,
                     size_t step, struct result *r)
{
	struct datascan s;
	const struct datascan_limits *lim = tc->lim.max_line != 0 ? &tc->lim : &default_lim;

	datascan_init(&s, tc->mode, lim);
	buf_init(&r->out, tc->out_max);
	r->consumed = 0;
	r->done = false;
	size_t chunk = first;
	do {
		size_t n = len - r->consumed < chunk ? len - r->consumed : chunk;
		size_t c = datascan_feed(&s, in + r->consumed, n, &r->out, &r->done);
		assert_true(c <= n);
		if (!r->done && c != n)
			fail_msg("case '%s': consumed %zu of %zu before the end", tc->name, c, n);
		r->consumed += c;
		chunk = step;
	} while (r->consumed < len && !r->done);
	if (r->done) {
		/* the rest is the next command: a further feed takes nothing */
		bool done2 = false;
		size_t olen = r->out.len;
		assert_int_equal(
		    datascan_feed(&s, in + r->consumed, len - r->consumed, &r->out, &done2), 0);
		assert_true(done2);
		assert_int_equal(r->out.len, olen);
	}
	if (tc->finish)
		datascan_finish(&s);
	r->flags = s.flags;
	r->size = s.size;
	r->header_size = s.header_size;
	r->received = s.received;
	r->eight_bit = s.eight_bit;
	r->message_id = s.message_id;
	r->date = s.date;
}

static void result_compare(const struct tcase *tc, const char *how, const struct result *a,
                           const struct result *b)
{
	if (a->out.len != b->out.len ||
	    (a->out.len > 0 && memcmp(a->out.data, b->out.data, a->out.len) != 0))
		fail_msg("case '%s' %s: output differs", tc->name, how);
	if (a->flags != b->flags)
		fail_msg("case '%s' %s: flags 0x%x vs 0x%x", tc->name, how, a->flags, b->flags);
	if (a->size != b->size || a->header_size != b->header_size || a->received != b->received ||
	    a->eight_bit != b->eight_bit || a->message_id != b->message_id || a->date != b->date)
		fail_msg("case '%s' %s: counts differ", tc->name, how);
	if (a->consumed != b->consumed || a->done != b->done)
		fail_msg("case '%s' %s: consumed %zu/%d vs %zu/%d", tc->name, how, a->consumed,
		         a->done, b->consumed, b->done);
}

static void tcase_input(const struct tcase *tc, struct buf *in, struct buf *exp)
{
	buf_init(in, 0);
	buf_init(exp, 0);
	if (tc->gen != NULL) {
		tc->gen(in, exp);
		return;
	}
	assert_int_equal(buf_append(in, tc->in, tc->in_len ? tc->in_len : strlen(tc->in)), 0);
	assert_int_equal(buf_append(exp, tc->out, tc->out_len ? tc->out_len : strlen(tc->out)), 0);
}

static void tcase_check_expected(const struct tcase *tc, const struct buf *in,
                                 const struct buf *exp, const struct result *r)
{
	size_t consumed = tc->consumed == ALL ? in->len : tc->consumed;
	uint64_t size = exp->len;

	if (tc->flags & F_BIG) {
		/* out holds a prefix; size is the true content size */
		size = r->size;
		assert_true(r->size > exp->len);
	}
	if (r->out.len != exp->len || (exp->len > 0 && memcmp(r->out.data, exp->data, exp->len)))
		fail_msg("case '%s': output '%.*s' (%zu)", tc->name, (int)r->out.len,
		         buf_cstr(&r->out), r->out.len);
	if (r->flags != tc->flags)
		fail_msg("case '%s': flags 0x%x, expected 0x%x", tc->name, r->flags, tc->flags);
	if (r->consumed != consumed || r->done != tc->done)
		fail_msg("case '%s': consumed %zu done %d, expected %zu %d", tc->name, r->consumed,
		         r->done, consumed, tc->done);
	if (r->size != size)
		fail_msg("case '%s': size %llu, expected %llu", tc->name,
		         (unsigned long long)r->size, (unsigned long long)size);
	if (r->header_size != tc->header_size)
		fail_msg("case '%s': header_size %llu, expected %llu", tc->name,
		         (unsigned long long)r->header_size, (unsigned long long)tc->header_size);
	if (r->received != tc->received)
		fail_msg("case '%s': received %u, expected %u", tc->name, r->received,
		         tc->received);
	if (r->eight_bit != tc->eight_bit)
		fail_msg("case '%s': eight_bit %d", tc->name, r->eight_bit);
	if (r->message_id != tc->message_id || r->date != tc->date)
		fail_msg("case '%s': message_id %d date %d", tc->name, r->message_id, r->date);
}

static void test_datascan_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tcase *tc = &cases[i];
		struct buf in, exp;
		struct result whole, part;
		char how[64];

		tcase_input(tc, &in, &exp);
		scan_run(tc, in.data, in.len, in.len, in.len, &whole);
		tcase_check_expected(tc, &in, &exp, &whole);

		for (size_t k = 0; k <= in.len; k++) {
			snprintf(how, sizeof(how), "split at %zu", k);
			scan_run(tc, in.data, in.len, k, in.len, &part);
			result_compare(tc, how, &whole, &part);
			buf_free(&part.out);
		}
		scan_run(tc, in.data, in.len, 1, 1, &part);
		result_compare(tc, "byte by byte", &whole, &part);
		buf_free(&part.out);
		scan_run(tc, in.data, in.len, 2, 3, &part);
		result_compare(tc, "2+3s", &whole, &part);
		buf_free(&part.out);

		buf_free(&whole.out);
		buf_free(&in);
		buf_free(&exp);
	}
}

/* An empty feed changes nothing and consumes nothing. */
static void test_datascan_empty_feed(void **state)
{
	(void)state;
	struct datascan s;
	struct buf out;
	bool done = true;

	datascan_init(&s, DATASCAN_DOT, &default_lim);
	buf_init(&out, 0);
	assert_int_equal(datascan_feed(&s, (const unsigned char *)"", 0, &out, &done), 0);
	assert_false(done);
	assert_int_equal(out.len, 0);
	assert_int_equal(s.flags, 0);
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_datascan_cases),
	    cmocka_unit_test(test_datascan_empty_feed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
