/* maildrop.c — encoder and decoder of maildrop files (format in
 * maildrop.h). The decoder runs in the queue process on files any local
 * user wrote: every length is checked against what is left, every record
 * type and count against the layout; fuzz_maildrop drives it. */
#include "mail/maildrop.h"

#include "lib/buf.h"

#include <stdbool.h>
#include <string.h>

static void maildrop_put(struct buf *out, char type, const void *p, size_t len)
{
	unsigned char h[5] = {(unsigned char)type, (unsigned char)(len >> 24),
	                      (unsigned char)(len >> 16), (unsigned char)(len >> 8),
	                      (unsigned char)len};
	buf_append(out, h, sizeof(h));
	if (len > 0)
		buf_append(out, p, len);
}

void maildrop_encode(const struct maildrop_msg *m, struct buf *out)
{
	buf_append(out, MAILDROP_MAGIC, MAILDROP_MAGIC_LEN);
	maildrop_put(out, 'S', m->sender, m->sender_len);
	for (size_t i = 0; i < m->nrcpts; i++)
		maildrop_put(out, 'R', m->rcpts[i], m->rcpt_lens[i]);
	maildrop_put(out, 'M', m->content, m->content_len);
	maildrop_put(out, 'E', NULL, 0);
}

/* What may stand between < and > in an SMTP command we send: no space,
 * no control, no angle bracket (the pickup writes MAIL FROM:<...>). */
static bool maildrop_addr_ok(const unsigned char *p, size_t len, bool empty_ok)
{
	if (len == 0)
		return empty_ok;
	if (len > MAILDROP_ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] <= 0x20 || p[i] == 0x7f || p[i] == '<' || p[i] == '>')
			return false;
	}
	return true;
}

int maildrop_decode(const void *data, size_t len, struct maildrop_msg *m, const char **error_r)
{
	const unsigned char *p = data;
	size_t off = MAILDROP_MAGIC_LEN;
	bool have_s = false, have_m = false;

	memset(m, 0, sizeof(*m));
	if (len < MAILDROP_MAGIC_LEN || memcmp(p, MAILDROP_MAGIC, MAILDROP_MAGIC_LEN) != 0) {
		*error_r = "not a maildrop file";
		return -1;
	}
	for (;;) {
		if (len - off < 5) {
			*error_r = "truncated record";
			return -1;
		}
		char type = (char)p[off];
		size_t rlen = (size_t)p[off + 1] << 24 | (size_t)p[off + 2] << 16 |
		              (size_t)p[off + 3] << 8 | (size_t)p[off + 4];
		off += 5;
		if (rlen > len - off) {
			*error_r = "record longer than the file";
			return -1;
		}
		const unsigned char *v = p + off;
		off += rlen;
		if (type == 'S' && !have_s && m->nrcpts == 0 && !have_m) {
			if (!maildrop_addr_ok(v, rlen, true)) {
				*error_r = "bad sender";
				return -1;
			}
			m->sender = (const char *)v;
			m->sender_len = rlen;
			have_s = true;
		} else if (type == 'R' && have_s && !have_m) {
			if (m->nrcpts == MAILDROP_RCPTS_MAX || !maildrop_addr_ok(v, rlen, false)) {
				*error_r = "bad or too many recipients";
				return -1;
			}
			m->rcpts[m->nrcpts] = (const char *)v;
			m->rcpt_lens[m->nrcpts++] = rlen;
		} else if (type == 'M' && have_s && m->nrcpts > 0 && !have_m) {
			m->content = (const char *)v;
			m->content_len = rlen;
			have_m = true;
		} else if (type == 'E' && have_m && rlen == 0) {
			if (off != len) {
				*error_r = "data after the end record";
				return -1;
			}
			return 0;
		} else {
			*error_r = "unexpected record";
			return -1;
		}
	}
}
