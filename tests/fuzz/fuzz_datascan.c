/* fuzz_datascan.c — libFuzzer target for the DATA/BDAT content scanner.
 *
 * Input: 6 octets of settings, then the octets the client sends.
 *   [0] bit 0: RAW mode; bit 1: call datascan_finish() at the end
 *   [1] max_line (0: 1000)   [2] max_size / 4 (0: unlimited)
 *   [3] max_header / 2 (0: unlimited)   [4] max_received % 16
 *   [5] out's own max / 3 (0: unbounded)
 * Checks:
 *   - fed in one piece, in pseudo-random chunks derived from the input, and
 *     byte by byte, the results are identical (resumable across any split);
 *   - all results agree with a slow, obviously written reference scanner
 *     below that works on the whole input at once. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/alloc.h"
#include "smtpd/datascan.h"

struct fz_result {
	struct buf out;
	unsigned flags;
	uint64_t size, header_size;
	unsigned received;
	bool eight_bit;
	bool message_id, date;
	size_t consumed;
	bool done;
};

struct fz_setup {
	enum datascan_mode mode;
	bool finish;
	struct datascan_limits lim;
	size_t out_max;
};

static uint64_t fz_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

/* chunks: 0 = one piece, 1 = byte by byte, else pseudo-random from seed */
static void fz_run(const struct fz_setup *su, const unsigned char *in, size_t len, int how,
                   uint64_t seed, struct fz_result *r)
{
	struct datascan s;

	datascan_init(&s, su->mode, &su->lim);
	buf_init(&r->out, su->out_max);
	r->consumed = 0;
	r->done = false;
	do {
		size_t n = len - r->consumed;
		if (how == 1 && n > 1)
			n = 1;
		else if (how == 2 && n > 0)
			n = (size_t)(fz_rand(&seed) % (n < 64 ? n + 1 : 64)); /* 0 too */
		size_t c = datascan_feed(&s, in + r->consumed, n, &r->out, &r->done);
		if (c > n || (!r->done && c != n))
			abort();
		r->consumed += c;
	} while (r->consumed < len && !r->done);
	if (r->done && datascan_feed(&s, in + r->consumed, len - r->consumed, &r->out, NULL) != 0)
		abort();
	if (su->finish)
		datascan_finish(&s);
	r->flags = s.flags;
	r->size = s.size;
	r->header_size = s.header_size;
	r->received = s.received;
	r->eight_bit = s.eight_bit;
	r->message_id = s.message_id;
	r->date = s.date;
}

static void fz_compare(const struct fz_result *a, const struct fz_result *b)
{
	if (a->out.len != b->out.len ||
	    (a->out.len > 0 && memcmp(a->out.data, b->out.data, a->out.len) != 0) ||
	    a->flags != b->flags || a->size != b->size || a->header_size != b->header_size ||
	    a->received != b->received || a->eight_bit != b->eight_bit ||
	    a->message_id != b->message_id || a->date != b->date ||
	    a->consumed != b->consumed || a->done != b->done)
		abort();
}

/* Reference, step 1: unstuffed content, consumed and done, octet by octet.
 * RFC 5321 §4.5.2: a line starts only after CR LF; a leading dot is dropped;
 * a line that is exactly "." CRLF ends the data. */
static void ref_content(const struct fz_setup *su, const unsigned char *in, size_t len,
                        unsigned char *c, size_t *n_r, size_t *consumed_r, bool *done_r)
{
	size_t i = 0, n = 0;
	bool line_start = su->mode == DATASCAN_DOT;

	*done_r = false;
	while (i < len) {
		if (line_start && in[i] == '.') {
			if (i + 2 < len && in[i + 1] == '\r' && in[i + 2] == '\n') {
				*done_r = true;
				i += 3;
				break;
			}
			if (i + 2 == len && in[i + 1] == '\r')
				break; /* ".CR" undecided: the CR is not content yet */
			i++;
			if (i == len)
				break;
		}
		line_start = false;
		c[n++] = in[i];
		if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n') {
			c[n++] = '\n';
			i++;
			line_start = su->mode == DATASCAN_DOT;
		}
		i++;
	}
	/* ".CR" at the very end is consumed even though its fate is open */
	*n_r = n;
	*consumed_r = *done_r ? i : len;
}

/* Does the line p[0..n) start a field called name (lowercase), any case? */
static bool ref_is_field(const unsigned char *p, size_t n, const char *name)
{
	size_t i;

	for (i = 0; name[i] != '\0'; i++) {
		unsigned char want = (unsigned char)name[i];
		bool letter = want >= 'a' && want <= 'z';
		if (i >= n || (letter ? (p[i] | 0x20) != want || !((p[i] >= 'a' && p[i] <= 'z') ||
								(p[i] >= 'A' && p[i] <= 'Z'))
				      : p[i] != want))
			return false;
	}
	while (i < n && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < n && p[i] == ':';
}

/* Reference, step 2: what the scanner reports about content c[0..n). */
static void ref_check(const struct fz_setup *su, const unsigned char *c, size_t n,
                      const struct fz_result *r)
{
	/* a trailing CR waits for its LF unless finish settled it */
	size_t eff = n > 0 && c[n - 1] == '\r' && !su->finish ? n - 1 : n;
	unsigned flags = 0;
	uint64_t hdr = 0;
	unsigned recv = 0;
	bool in_hdr = true, eight = false, mid = false, date = false;

	for (size_t k = 0; k < eff; k++) {
		if (c[k] == '\n' && (k == 0 || c[k - 1] != '\r'))
			flags |= DATASCAN_BARE_LF;
		if (c[k] == '\r' && (k + 1 >= eff || c[k + 1] != '\n'))
			flags |= DATASCAN_BARE_CR;
		if (c[k] == 0)
			flags |= DATASCAN_NUL;
		if (c[k] >= 0x80)
			eight = true;
	}
	for (size_t i = 0; i < eff;) {
		size_t j = i;
		while (j < eff && !(c[j] == '\r' && j + 1 < eff && c[j + 1] == '\n'))
			j++;
		size_t end = j < eff ? j + 2 : eff;
		if (end - i > su->lim.max_line)
			flags |= DATASCAN_LONG_LINE;
		if (in_hdr) {
			if (j == i && end == i + 2) {
				in_hdr = false;
			} else {
				hdr += end - i;
				if (ref_is_field(c + i, end - i, "received"))
					recv++;
				mid |= ref_is_field(c + i, end - i, "message-id");
				date |= ref_is_field(c + i, end - i, "date");
			}
		}
		i = end;
	}
	if (hdr > su->lim.max_header)
		flags |= DATASCAN_HEADER_BIG;
	if (recv > su->lim.max_received)
		flags |= DATASCAN_TOO_MANY_HOPS;
	size_t keep = n;
	if (keep > su->lim.max_size)
		keep = (size_t)su->lim.max_size;
	if (su->out_max != 0 && keep > su->out_max)
		keep = su->out_max;
	if (keep < n)
		flags |= DATASCAN_TOO_BIG;

	if (r->flags != flags || r->size != n || r->header_size != hdr || r->received != recv ||
	    r->eight_bit != eight || r->message_id != mid || r->date != date ||
	    r->out.len != keep ||
	    (keep > 0 && memcmp(r->out.data, c, keep) != 0))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_setup su;
	struct fz_result one, other;

	if (size < 6)
		return 0;
	su.mode = data[0] & 1 ? DATASCAN_RAW : DATASCAN_DOT;
	su.finish = (data[0] & 2) != 0;
	su.lim.max_line = data[1] != 0 ? data[1] : 1000;
	su.lim.max_size = data[2] != 0 ? (uint64_t)data[2] * 4 : UINT64_MAX;
	su.lim.max_header = data[3] != 0 ? (size_t)data[3] * 2 : SIZE_MAX;
	su.lim.max_received = data[4] % 16;
	su.out_max = (size_t)data[5] * 3;
	const unsigned char *in = data + 6;
	size_t len = size - 6;

	uint64_t seed = 1469598103934665603ULL; /* FNV-1a of the input */
	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 1099511628211ULL;

	fz_run(&su, in, len, 0, 0, &one);
	fz_run(&su, in, len, 1, 0, &other);
	fz_compare(&one, &other);
	buf_free(&other.out);
	for (int k = 0; k < 3; k++) {
		fz_run(&su, in, len, 2, (seed + (uint64_t)k * 0x9e3779b97f4a7c15ULL) | 1, &other);
		fz_compare(&one, &other);
		buf_free(&other.out);
	}

	unsigned char *c = xmalloc(len + 1);
	size_t n, consumed;
	bool done;
	ref_content(&su, in, len, c, &n, &consumed, &done);
	if (one.consumed != consumed || one.done != done)
		abort();
	ref_check(&su, c, n, &one);
	free(c);
	buf_free(&one.out);
	return 0;
}
