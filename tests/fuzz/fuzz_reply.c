/* fuzz_reply.c — libFuzzer target for the client's reply parser (reply.c).
 *
 * Input: one seed octet, then what a server would send. The stream is parsed
 * once in one piece and once split at pseudo-random points drawn from the
 * seed; both must give the same sequence of replies and the same final
 * outcome (error or not), which is the parser's resumability property. Every
 * complete reply also goes through smtp_ehlo_caps_parse, and its invariants
 * are checked: code in range, text NUL-terminated within bounds, enhanced
 * code of the reply's class. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpc/reply.h"

#define FUZZ_REPLIES_MAX 64

struct fuzz_run {
	struct smtp_reply replies[FUZZ_REPLIES_MAX];
	size_t n;
	int last; /* 0 or -1 */
};

static void fuzz_reply_check(const struct smtp_reply *r)
{
	struct smtp_ehlo_caps caps;

	if (r->code < 200 || r->code > 599 || r->nlines == 0 || r->nlines > SMTP_REPLY_LINES_MAX)
		abort();
	if (memchr(r->text, '\0', sizeof(r->text)) == NULL)
		abort();
	if (r->enh[0] != '\0' && r->enh[0] != '0' + r->code / 100)
		abort();
	smtp_ehlo_caps_parse(r, &caps);
}

static void fuzz_reply_run(const char *in, size_t len, unsigned seed, struct fuzz_run *run)
{
	struct smtp_reply_parser p;
	struct smtp_reply r;
	size_t off = 0;
	const char *err;

	smtp_reply_parser_init(&p);
	run->n = 0;
	run->last = 0;
	while (off < len) {
		size_t n = len - off;
		if (seed != 0) {
			seed = seed * 1103515245u + 12345u;
			size_t piece = (seed >> 16) % 17 + 1;
			if (piece < n)
				n = piece;
		}
		size_t used = 0;
		int ret = smtp_reply_parse(&p, in + off, n, &used, &r, &err);
		if (used > n)
			abort();
		off += used;
		if (ret < 0) {
			run->last = -1;
			return;
		}
		if (ret == 1) {
			fuzz_reply_check(&r);
			if (run->n < FUZZ_REPLIES_MAX)
				run->replies[run->n] = r;
			run->n++;
		} else if (used != n) {
			abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_run whole, split;

	if (size < 1)
		return 0;
	fuzz_reply_run((const char *)data + 1, size - 1, 0, &whole);
	fuzz_reply_run((const char *)data + 1, size - 1, data[0] | 0x100u, &split);
	if (whole.n != split.n || whole.last != split.last)
		abort();
	for (size_t i = 0; i < whole.n && i < FUZZ_REPLIES_MAX; i++) {
		const struct smtp_reply *a = &whole.replies[i], *b = &split.replies[i];
		if (a->code != b->code || a->nlines != b->nlines || strcmp(a->enh, b->enh) != 0 ||
		    strcmp(a->text, b->text) != 0)
			abort();
	}
	return 0;
}
