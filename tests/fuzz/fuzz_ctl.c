/* fuzz_ctl.c — libFuzzer target for the control socket's frame decoder
 * (ctl/ctl_frame.c). Input: the octets a local process writes to
 * control.sock (requests) or a daemon answers (responses), hostile either
 * way. Checks that ctl_frame_decode() never reads past the input, that a
 * frame it accepts walks cleanly field by field within its body, and that
 * re-encoding the accepted fields gives the very same octets. Consecutive
 * frames in one input are decoded in turn, as a connection would. Seeds in
 * corpus/ctl/ are encoder outputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

static void fuzz_check_frame(const uint8_t *p, size_t used, const struct ctl_frame *f, size_t max)
{
	struct buf b;
	struct ctl_field fld;
	size_t off = 0;
	buf_init(&b, 0);
	size_t start = ctl_frame_begin(&b, f->type);
	while (ctl_field_next(f, &off, &fld)) {
		if (fld.p < f->body || fld.p + fld.len > f->body + f->body_len)
			abort();
		if (ctl_frame_add(&b, fld.tag, fld.p, fld.len) < 0)
			abort();
		(void)ctl_field_u64(&fld);
	}
	if (off != f->body_len)
		abort(); /* a checked frame is walked to its end */
	if (ctl_frame_end(&b, start, max) < 0 || b.len != used || memcmp(b.data, p, used) != 0)
		abort();
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const size_t maxes[2] = {CTL_REQ_MAX, CTL_RESP_MAX};
	for (size_t k = 0; k < 2; k++) {
		size_t off = 0;
		while (off < size) {
			struct ctl_frame f;
			size_t used = 0;
			const char *error = NULL;
			int r =
			    ctl_frame_decode(data + off, size - off, maxes[k], &f, &used, &error);
			if (r < 0 && error == NULL)
				abort();
			if (r <= 0)
				break;
			if (used < CTL_HDR_LEN || used > size - off || used > maxes[k])
				abort();
			fuzz_check_frame(data + off, used, &f, maxes[k]);
			off += used;
		}
	}
	return 0;
}
