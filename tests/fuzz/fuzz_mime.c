/* fuzz_mime.c — libFuzzer target for the bounded MIME parser (mail/mime.c).
 * Input: a whole message, any octets. Checks the bounds the header promises
 * (depth, part count, views inside the input, parents before children,
 * unique part IDs) and runs every decoder over every part: transfer
 * decoding, charset conversion, parameters and encoded-words. Seeds in
 * corpus/mime/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/mime.h"

static void fuzz_part(const struct mime_msg *m, size_t i, struct buf *b)
{
	const struct mime_part *p = &m->parts[i];
	if (p->depth > MIME_MAX_DEPTH || p->hdr_off + p->hdr_len > m->len ||
	    p->body_off + p->body_len > m->len)
		abort();
	if (i == 0 ? p->parent != -1 : (p->parent < 0 || (size_t)p->parent >= i))
		abort();
	if (i > 0 && p->depth != m->parts[p->parent].depth + 1)
		abort();
	if (mime_part_by_id(m, p->id) != p)
		abort(); /* IDs are unique */
	buf_reset(b);
	if (mime_part_text(m, p, b) != 0)
		abort();
	buf_reset(b);
	if (mime_hdr_get(m->raw + p->hdr_off, p->hdr_len, "Content-Type", b) == 1) {
		struct buf o;
		buf_init(&o, 0);
		(void)mime_param_get(buf_cstr(b), b->len, "filename", &o);
		(void)mime_decode_words(buf_cstr(b), b->len, &o);
		buf_free(&o);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *p = malloc(size > 0 ? size : 1); /* exact size: ASan sees overreads */
	if (p == NULL)
		return 0;
	memcpy(p, data, size);
	struct mime_msg *m = mime_parse(p, size);
	if (m->nparts == 0 || m->nparts > MIME_MAX_PARTS)
		abort();
	struct buf b;
	buf_init(&b, 0);
	for (size_t i = 0; i < m->nparts; i++)
		fuzz_part(m, i, &b);
	/* the charset path on the raw input too (an arbitrary charset name from the front) */
	if (size > 2 && size - 1 > (size_t)(data[0] % 24)) {
		char cs[32];
		size_t n = data[0] % 24;
		memcpy(cs, p + 1, n);
		cs[n] = '\0';
		buf_reset(&b);
		(void)mime_to_utf8(cs, p + 1 + n, size - 1 - n, &b);
	}
	buf_free(&b);
	mime_msg_free(&m);
	free(p);
	return 0;
}
