/* dkim_msg.c — the header section of a streaming message for DKIM: kept
 * (bounded) until the empty line, split into fields, and the header hash
 * input of RFC 6376 §3.7 built from it. Pure code, any process; the
 * message is hostile. */
#include "dauth/dkim_int.h"
#include "lib/alloc.h"
#include "lib/strutil.h"

#include <string.h>

void dkim_msg_init(struct dkim_msg *m, size_t header_max)
{
	memset(m, 0, sizeof(*m));
	m->header_max = header_max;
	buf_init(&m->hdr, 0);
}

void dkim_msg_clear(struct dkim_msg *m)
{
	buf_free(&m->hdr);
	free(m->fields);
	m->fields = NULL;
	m->n_fields = 0;
}

static void dkim_msg_split(struct dkim_msg *m)
{
	const char *h = (const char *)m->hdr.data;
	size_t len = m->hdr.len, i = 0, cap = 0;
	while (i < len) {
		size_t start = i;
		/* a field: its first line, then lines starting with WSP */
		for (;;) {
			const char *nl = memchr(h + i, '\n', len - i);
			i = nl != NULL ? (size_t)(nl - h) + 1 : len;
			if (i >= len || (h[i] != ' ' && h[i] != '\t'))
				break;
		}
		size_t flen = i - start;
		if (flen >= 1 && h[start + flen - 1] == '\n')
			flen--;
		if (flen >= 1 && h[start + flen - 1] == '\r')
			flen--;
		if (m->n_fields == DKIM_FIELDS_MAX) {
			m->too_many_fields = true;
			break;
		}
		if (m->n_fields == cap) {
			cap = cap == 0 ? 32 : cap * 2;
			m->fields = xreallocarray(m->fields, cap, sizeof(*m->fields));
		}
		const char *colon = memchr(h + start, ':', flen);
		size_t nl = colon != NULL ? (size_t)(colon - (h + start)) : flen;
		while (nl > 0 && (h[start + nl - 1] == ' ' || h[start + nl - 1] == '\t'))
			nl--;
		m->fields[m->n_fields++] = (struct dkim_field){start, flen, nl};
	}
}

size_t dkim_eoh_scan(unsigned *state, bool *in_body, const unsigned char *p, size_t n)
{
	size_t i;
	if (*in_body)
		return 0;
	/* states: 0 line start, 1 CR at line start, 2 in a line, 3 CR in a line */
	for (i = 0; i < n; i++) {
		unsigned char c = p[i];
		unsigned s = *state;
		if (s == 1 && c == '\n') {
			i++;
			*in_body = true;
			break;
		}
		if (c == '\r')
			*state = s == 0 ? 1 : 3;
		else if (c == '\n' && s == 3)
			*state = 0;
		else
			*state = 2;
	}
	return i;
}

size_t dkim_msg_feed(struct dkim_msg *m, const unsigned char *p, size_t n)
{
	if (m->in_body)
		return 0;
	size_t i = dkim_eoh_scan(&m->eoh_state, &m->in_body, p, n);
	if (!m->overflow) {
		size_t keep = i;
		if (m->in_body && i >= 2) {
			keep = i - 2; /* the empty line is not part of any field */
		} else if (m->in_body) {
			/* the empty line's CR came in an earlier chunk */
			keep = 0;
			if (m->hdr.len > 0 && m->hdr.data[m->hdr.len - 1] == '\r')
				m->hdr.len--;
		}
		if (m->hdr.len + keep > m->header_max)
			m->overflow = true;
		else
			buf_append(&m->hdr, p, keep);
	}
	if (m->in_body && !m->overflow)
		dkim_msg_split(m);
	return i;
}

void dkim_msg_end(struct dkim_msg *m)
{
	if (m->in_body)
		return;
	m->in_body = true;
	if (!m->overflow)
		dkim_msg_split(m);
}

bool dkim_field_is(const struct dkim_msg *m, const struct dkim_field *f, const char *name)
{
	return str_case_eq((const char *)m->hdr.data + f->off, f->name_len, name);
}

const char *dkim_field_value(const struct dkim_msg *m, const struct dkim_field *f, size_t *len_r)
{
	const char *s = (const char *)m->hdr.data + f->off;
	const char *colon = memchr(s, ':', f->len);
	if (colon == NULL) {
		*len_r = 0;
		return s + f->len;
	}
	*len_r = f->len - (size_t)(colon + 1 - s);
	return colon + 1;
}

int dkim_hash_input(const struct dkim_msg *m, enum dkim_canon c, char *const *hnames, size_t n,
                    const char *sigfield, size_t siglen, struct buf *out)
{
	bool used_small[DKIM_FIELDS_MAX];
	memset(used_small, 0, sizeof(bool) * m->n_fields);
	for (size_t k = 0; k < n; k++) {
		for (size_t j = m->n_fields; j-- > 0;) {
			const struct dkim_field *f = &m->fields[j];
			if (used_small[j] || !dkim_field_is(m, f, hnames[k]))
				continue;
			used_small[j] = true;
			if (dkim_canon_header(c, (const char *)m->hdr.data + f->off, f->len, out) <
			    0)
				return -1;
			break;
		}
	}
	if (dkim_canon_header(c, sigfield, siglen, out) < 0)
		return -1;
	out->len -= 2; /* §3.7: the signature field without its final CRLF */
	out->data[out->len] = '\0';
	return 0;
}

/* b= of the field's tag list, not bh=: the tag whose name (FWS trimmed) is
 * exactly "b"; its value up to ';' or the end goes. */
int dkim_strip_b(const char *field, size_t len, struct buf *out)
{
	const char *colon = memchr(field, ':', len);
	size_t i = colon != NULL ? (size_t)(colon - field) + 1 : 0;
	while (i < len) {
		const char *semi = memchr(field + i, ';', len - i);
		size_t end = semi != NULL ? (size_t)(semi - field) : len;
		const char *eq = memchr(field + i, '=', end - i);
		if (eq != NULL) {
			size_t a = i, b = (size_t)(eq - field);
			while (a < b && strchr(" \t\r\n", field[a]) != NULL)
				a++;
			while (b > a && strchr(" \t\r\n", field[b - 1]) != NULL)
				b--;
			if (b - a == 1 && field[a] == 'b') {
				size_t v = (size_t)(eq - field) + 1;
				if (buf_append(out, field, v) < 0 ||
				    buf_append(out, field + end, len - end) < 0)
					return -1;
				return 0;
			}
		}
		i = end + 1;
	}
	return buf_append(out, field, len);
}
