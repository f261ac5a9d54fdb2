/* json.c — JSON string escaping (json.h). */
#include "lib/json.h"

size_t json_utf8_len(const uint8_t *p, size_t len)
{
	size_t n;
	uint32_t min, cp;
	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xe0) == 0xc0) {
		n = 2, min = 0x80, cp = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3, min = 0x800, cp = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		n = 4, min = 0x10000, cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

int json_append_str(struct buf *b, const void *vp, size_t len)
{
	const uint8_t *p = vp;
	size_t start = b->len;
	int rc = buf_append_byte(b, '"');
	for (size_t i = 0; i < len && rc == 0;) {
		uint8_t c = p[i];
		size_t n = json_utf8_len(p + i, len - i);
		if (n == 0) {
			rc = buf_append_str(b, "\\ufffd");
			i++;
			continue;
		}
		if (c == '"' || c == '\\') {
			char esc[2] = {'\\', (char)c};
			rc = buf_append(b, esc, 2);
		} else if (c == '\n') {
			rc = buf_append_str(b, "\\n");
		} else if (c == '\r') {
			rc = buf_append_str(b, "\\r");
		} else if (c == '\t') {
			rc = buf_append_str(b, "\\t");
		} else if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&') {
			rc = buf_printf(b, "\\u%04x", c);
		} else if (n == 2 && c == 0xc2 && p[i + 1] < 0xa0) {
			rc = buf_printf(b, "\\u%04x", p[i + 1]); /* C1 control */
		} else {
			rc = buf_append(b, p + i, n);
		}
		i += n;
	}
	if (rc == 0)
		rc = buf_append_byte(b, '"');
	if (rc != 0 && b->data != NULL) {
		b->len = start; /* all or nothing */
		b->data[start] = '\0';
	}
	return rc;
}

int json_append_cstr(struct buf *b, const char *s)
{
	if (s == NULL)
		return buf_append_str(b, "null");
	size_t n = 0;
	while (s[n] != '\0')
		n++;
	return json_append_str(b, s, n);
}
