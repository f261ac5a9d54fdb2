/* fuzz_sbx_msg.c — libFuzzer target for the sandbox's message inspection
 * (obs/sandbox_msg.c, sandbox_html.c, sandbox_check.c). Input: a whole
 * captured message. Runs every entry point; checks that JSON output never
 * carries a raw '<' (the escaper's promise, so it is safe in HTML), that
 * the rewritten HTML with remote resources blocked loads no http(s) URL
 * from a src attribute, and that every listed part can be fetched. Seeds
 * in corpus/sbx_msg/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "obs/sandbox_msg.h"

static void fuzz_no_lt(const struct buf *b)
{
	if (memchr(b->data, '<', b->len) != NULL)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = malloc(size > 0 ? size : 1);
	if (p == NULL)
		return 0;
	memcpy(p, data, size);
	struct buf b;
	buf_init(&b, 0);
	if (sbx_msg_json(p, size, "id", 0, &b) != 0)
		abort();
	fuzz_no_lt(&b);
	buf_reset(&b);
	if (sbx_msg_check(p, size, &b) != 0)
		abort();
	fuzz_no_lt(&b);
	buf_reset(&b);
	struct sbx_msg_summary s;
	sbx_msg_summary(p, size, 0, &s);
	if (sbx_msg_summary_json(&s, "id", true, 0, &b) != 0)
		abort();
	fuzz_no_lt(&b);
	sbx_msg_summary_clear(&s);
	buf_reset(&b);
	if (sbx_msg_headers_json(p, size, &b) != 0)
		abort();
	fuzz_no_lt(&b);
	buf_reset(&b);
	if (sbx_msg_parts_json(p, size, &b) != 0)
		abort();
	fuzz_no_lt(&b);
	buf_reset(&b);
	if (sbx_msg_html(p, size, false, &b) < 0)
		abort();
	/* the rewriting never makes a remote src (text that already says so
	 * may be copied as text) */
	if (b.len > 0 && strcasestr((const char *)b.data, "src=\"http") != NULL &&
	    memmem(p, size, "src=", 4) == NULL && memmem(p, size, "SRC=", 4) == NULL)
		abort();
	buf_reset(&b);
	(void)sbx_msg_html(p, size, true, &b);
	const char *ids[] = {"0", "1", "2", "1.1", "1.2", "2.0", "2.1"};
	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		char *ct, *fn;
		buf_reset(&b);
		if (sbx_msg_part(p, size, ids[i], &b, &ct, &fn) == 0) {
			if (ct == NULL || fn == NULL)
				abort();
			free(ct);
			free(fn);
		}
	}
	buf_free(&b);
	free(p);
	return 0;
}
