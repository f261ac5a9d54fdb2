/* milter_proto.c — milter frames: encoding commands, decoding replies.
 * Runs in smtpd; reply octets are hostile: every length is checked against
 * the frame and the bounds before anything is read. */
#include "milter/milter_proto.h"
#include "lib/buf.h"

#include <stdio.h>
#include <string.h>

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int milter_frame_put(struct buf *out, char cmd, const void *data, size_t len)
{
	unsigned char hdr[5];
	if (len >= UINT32_MAX)
		return -1;
	put32(hdr, (uint32_t)len + 1);
	hdr[4] = (unsigned char)cmd;
	if (buf_append(out, hdr, sizeof(hdr)) < 0 || (len > 0 && buf_append(out, data, len) < 0))
		return -1;
	return 0;
}

int milter_frame_put_strs(struct buf *out, char cmd, const char *const *strs, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += strlen(strs[i]) + 1;
	if (len >= UINT32_MAX)
		return -1;
	unsigned char hdr[5];
	put32(hdr, (uint32_t)len + 1);
	hdr[4] = (unsigned char)cmd;
	if (buf_append(out, hdr, sizeof(hdr)) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (buf_append(out, strs[i], strlen(strs[i]) + 1) < 0)
			return -1;
	return 0;
}

int milter_frame_optneg(struct buf *out, uint32_t version, uint32_t actions, uint32_t protocol)
{
	unsigned char d[12];
	put32(d, version);
	put32(d + 4, actions);
	put32(d + 8, protocol);
	return milter_frame_put(out, SMFIC_OPTNEG, d, sizeof(d));
}

int milter_frame_connect(struct buf *out, const char *host, char family, uint16_t port,
                         const char *addr)
{
	/* 'L' (unknown) has no port; '4', '6' and 'U' (port 0) have one */
	unsigned char fp[3] = {(unsigned char)family, (unsigned char)(port >> 8),
	                       (unsigned char)port};
	size_t hl = strlen(host) + 1, al = strlen(addr) + 1, fl = family == 'L' ? 1 : 3;
	unsigned char hdr[5];
	if (hl + fl + al >= UINT32_MAX)
		return -1;
	put32(hdr, (uint32_t)(hl + fl + al) + 1);
	hdr[4] = SMFIC_CONNECT;
	if (buf_append(out, hdr, sizeof(hdr)) < 0 || buf_append(out, host, hl) < 0 ||
	    buf_append(out, fp, fl) < 0 || buf_append(out, addr, al) < 0)
		return -1;
	return 0;
}

int milter_reply_decode(const unsigned char *p, size_t len, struct milter_reply *r, size_t *used_r,
                        const char **error_r)
{
	if (len < 5)
		return 0;
	uint32_t flen = get32(p);
	if (flen == 0) {
		*error_r = "empty milter frame";
		return -1;
	}
	size_t max = p[4] == SMFIR_REPLBODY ? MILTER_REPLBODY_MAX : MILTER_REPLY_MAX;
	if (flen - 1 > max) {
		*error_r = "milter frame too long";
		return -1;
	}
	if (len - 4 < flen)
		return 0;
	r->cmd = (char)p[4];
	r->data = p + 5;
	r->len = flen - 1;
	*used_r = 4 + (size_t)flen;
	return 1;
}

int milter_reply_optneg(const struct milter_reply *r, uint32_t *version_r, uint32_t *actions_r,
                        uint32_t *protocol_r)
{
	if (r->cmd != SMFIC_OPTNEG || r->len < 12)
		return -1;
	*version_r = get32(r->data);
	*actions_r = get32(r->data + 4);
	*protocol_r = get32(r->data + 8);
	return 0;
}

int milter_reply_strs(const struct milter_reply *r, size_t skip, const char **strs, size_t min,
                      size_t max, size_t *n_r)
{
	size_t n = 0, i = skip;
	if (skip > r->len)
		return -1;
	while (i < r->len && n < max) {
		const unsigned char *z = memchr(r->data + i, '\0', r->len - i);
		if (z == NULL)
			return -1; /* a string without its NUL */
		strs[n++] = (const char *)r->data + i;
		i = (size_t)(z - r->data) + 1;
	}
	if (n < min)
		return -1;
	*n_r = n;
	return 0;
}

int milter_reply_header(const struct milter_reply *r, uint32_t *idx_r, const char **name_r,
                        const char **value_r)
{
	const char *s[2];
	size_t n;
	if (r->len < 4 || milter_reply_strs(r, 4, s, 2, 2, &n) < 0)
		return -1;
	*idx_r = get32(r->data);
	*name_r = s[0];
	*value_r = s[1];
	return 0;
}

int milter_reply_code(const struct milter_reply *r, int *code_r, char *enh, size_t enhlen,
                      char *text, size_t textlen)
{
	const char *s[1];
	size_t n;
	if (milter_reply_strs(r, 0, s, 1, 1, &n) < 0)
		return -1;
	const char *p = s[0];
	if (strlen(p) < 3 || (p[0] != '4' && p[0] != '5') || p[1] < '0' || p[1] > '9' ||
	    p[2] < '0' || p[2] > '9' || (p[3] != '\0' && p[3] != ' ' && p[3] != '-'))
		return -1;
	*code_r = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
	p += p[3] == '\0' ? 3 : 4;
	enh[0] = '\0';
	/* an enhanced code of the same class: "5.7.1 " */
	size_t e = strspn(p, "0123456789.");
	if (e >= 5 && e < enhlen && (p[0] == '2' || p[0] == '4' || p[0] == '5') && p[1] == '.' &&
	    (p[e] == ' ' || p[e] == '\0')) {
		/* one of another class is dropped, not passed on as text
		 * that a client would read as the enhanced code */
		if (p[0] == s[0][0]) {
			memcpy(enh, p, e);
			enh[e] = '\0';
		}
		p += e;
		while (*p == ' ')
			p++;
	}
	size_t o = 0;
	for (; *p != '\0' && o + 1 < textlen; p++) {
		unsigned char c = (unsigned char)*p;
		/* one line of printable ASCII: a multi-line reply from the
		 * milter is flattened, controls become spaces */
		text[o++] = c >= 0x20 && c < 0x7f ? (char)c : ' ';
	}
	text[o] = '\0';
	return 0;
}
