/* fuzz_milter.c — libFuzzer target for the milter reply decoder and the
 * parsers of reply data (milter/milter_proto.c), and the header section
 * parser and rewrite (milter/milter_msg.c).
 *
 * Input: what a milter would send. The stream is decoded frame by frame,
 * whole and then octet by octet (the decoder must never claim a frame
 * before all of it is there, and both walks must agree); each frame goes
 * through every data parser, whose views must stay inside the frame. The
 * input is also parsed as a header section and rewritten. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "milter/milter.h"
#include "milter/milter_proto.h"

static void fuzz_frame(const struct milter_reply *r)
{
	const char *s[4], *nm, *val;
	size_t n;
	uint32_t a, b, c, idx;
	char enh[16], text[400];
	int code;
	if (milter_reply_strs(r, 0, s, 0, 4, &n) == 0)
		for (size_t i = 0; i < n; i++)
			if ((const unsigned char *)s[i] < r->data ||
			    (const unsigned char *)s[i] + strlen(s[i]) >= r->data + r->len)
				abort();
	if (milter_reply_header(r, &idx, &nm, &val) == 0 &&
	    (const unsigned char *)val + strlen(val) >= r->data + r->len)
		abort();
	(void)milter_reply_optneg(r, &a, &b, &c);
	if (milter_reply_code(r, &code, enh, sizeof(enh), text, sizeof(text)) == 0 &&
	    (code < 400 || code > 599 || strlen(text) >= sizeof(text)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0, frames = 0;
	struct milter_reply r;
	size_t used;
	const char *err;
	while (off < size) {
		int rc = milter_reply_decode(data + off, size - off, &r, &used, &err);
		if (rc <= 0)
			break;
		if (used > size - off || r.data + r.len != data + off + used)
			abort();
		/* a frame is not complete one octet short */
		struct milter_reply r2;
		size_t used2;
		if (milter_reply_decode(data + off, used - 1, &r2, &used2, &err) == 1)
			abort();
		fuzz_frame(&r);
		off += used;
		frames++;
	}
	(void)frames;
	struct milter_hdrs h = {0};
	if (milter_hdrs_parse(&h, data, size, size) == 0) {
		struct milter_hdr_op ops[] = {
		    {MILTER_HDR_CHANGE, 1, "Subject", ""},
		    {MILTER_HDR_INSERT, 1, "X-A", "v\nw"},
		    {MILTER_HDR_ADD, 0, "X-B", "b"},
		    {MILTER_HDR_CHANGE, 2, "Received", "r"},
		};
		struct buf out;
		buf_init(&out, 0);
		if (milter_hdrs_apply(&h, ops, 4, &out) < 0)
			abort();
		buf_free(&out);
		if (h.body_off > size)
			abort();
	}
	milter_hdrs_free(&h);
	return 0;
}
