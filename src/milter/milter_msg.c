/* milter_msg.c — the header section as a list of fields, and the header
 * modifications of milters applied to it (SMFIR_ADDHEADER, INSHEADER,
 * CHGHEADER). Pure; runs in smtpd. The fields are the client's (hostile,
 * but bounded by limits.header_size and checked by datascan); names and
 * values from milters are hostile too: a name must be printable without
 * ':' and a value gets no bare CR or LF. */
#include "milter/milter.h"
#include "lib/alloc.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void hdrs_add(struct milter_hdrs *h, size_t off, size_t len, size_t name_len,
                     size_t value_off)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 32;
		h->f = xreallocarray(h->f, h->cap, sizeof(*h->f));
	}
	h->f[h->n++] = (struct milter_field){off, len, name_len, value_off, false};
}

int milter_hdrs_parse(struct milter_hdrs *h, const unsigned char *p, size_t len, uint64_t total)
{
	size_t i = 0, end = len;
	bool found = false;
	buf_init(&h->raw, 0);
	/* the blank line that ends the section (RFC 5322 §2.1) */
	for (size_t k = 0; k + 1 < len; k++) {
		if (p[k] == '\r' && p[k + 1] == '\n' && (k == 0 || (k >= 2 && p[k - 1] == '\n'))) {
			end = k;
			found = true;
			break;
		}
	}
	if (!found && len < total)
		return -1;
	if (buf_append(&h->raw, p, end) < 0)
		return -1;
	h->body_off = found ? end + 2 : len;
	const unsigned char *r = h->raw.data;
	while (i < end) {
		size_t start = i, colon;
		const unsigned char *c = memchr(r + i, ':', end - i);
		const unsigned char *nl = memchr(r + i, '\n', end - i);
		if (c == NULL || (nl != NULL && nl < c) || r[i] == ' ' || r[i] == '\t' ||
		    c == r + i) {
			/* not a field: the body starts here, without its blank
			 * line (RFC 5322 §2.1 wants one; the rewrite adds it) */
			h->body_off = start;
			return 0;
		}
		colon = (size_t)(c - r);
		/* the field ends at a line end not followed by a blank */
		for (i = colon; i < end; i++)
			if (r[i] == '\n' &&
			    (i + 1 >= end || (r[i + 1] != ' ' && r[i + 1] != '\t'))) {
				i++;
				break;
			}
		size_t v = colon + 1;
		while (v < i && (r[v] == ' ' || r[v] == '\t'))
			v++;
		hdrs_add(h, start, i - start, colon - start, v);
	}
	return 0;
}

void milter_hdrs_free(struct milter_hdrs *h)
{
	buf_free(&h->raw);
	free(h->f);
	h->f = NULL;
	h->n = h->cap = 0;
}

/* "Name: value\r\n", the value's LF or CRLF line ends made CRLF, lone CRs
 * dropped. */
static int hdr_put(struct buf *out, const char *name, const char *value)
{
	if (buf_printf(out, "%s:%s", name, value[0] == ' ' || value[0] == '\t' ? "" : " ") < 0)
		return -1;
	for (const char *v = value; *v != '\0'; v++) {
		if (*v == '\r')
			continue;
		if (*v == '\n') {
			if (buf_append(out, "\r\n", 2) < 0)
				return -1;
			if (v[1] != ' ' && v[1] != '\t' && v[1] != '\0' &&
			    buf_append_byte(out, '\t') < 0)
				return -1; /* a continuation must start with a blank */
			continue;
		}
		if (buf_append_byte(out, (unsigned char)*v) < 0)
			return -1;
	}
	return buf_append(out, "\r\n", 2);
}

struct hdr_out {
	const char *name, *value; /* a new field; NULL name: the original field */
	size_t orig;
};

int milter_hdrs_apply(const struct milter_hdrs *h, const struct milter_hdr_op *ops, size_t n,
                      struct buf *out)
{
	size_t cap = h->n + n, cnt = h->n;
	struct hdr_out *l = xcalloc(cap + 1, sizeof(*l));
	int rc = 0;
	for (size_t i = 0; i < h->n; i++)
		l[i] = (struct hdr_out){NULL, NULL, i};
	for (size_t k = 0; k < n; k++) {
		const struct milter_hdr_op *op = &ops[k];
		if (op->kind == MILTER_HDR_ADD || op->kind == MILTER_HDR_INSERT) {
			size_t at = op->kind == MILTER_HDR_ADD || op->idx > cnt ? cnt : op->idx;
			memmove(l + at + 1, l + at, (cnt - at) * sizeof(*l));
			l[at] = (struct hdr_out){op->name, op->value, 0};
			cnt++;
			continue;
		}
		/* CHANGE: the idx-th field of that name (libmilter counts from
		 * 1); past the last one, a new field at the end (as sendmail
		 * and Postfix: clamav-milter's "AddHeader Replace" relies on it) */
		uint32_t seen = 0;
		bool done = false;
		for (size_t i = 0; i < cnt && !done; i++) {
			size_t nl;
			const char *nm;
			if (l[i].name != NULL) {
				nm = l[i].name;
				nl = strlen(nm);
			} else {
				nm = (const char *)h->raw.data + h->f[l[i].orig].off;
				nl = h->f[l[i].orig].name_len;
			}
			if (nl != strlen(op->name) || strncasecmp(nm, op->name, nl) != 0)
				continue;
			if (++seen != (op->idx == 0 ? 1 : op->idx))
				continue;
			if (op->value[0] == '\0') {
				memmove(l + i, l + i + 1, (cnt - i - 1) * sizeof(*l));
				cnt--;
			} else {
				l[i] = (struct hdr_out){op->name, op->value, 0};
			}
			done = true;
		}
		if (!done && op->value[0] != '\0')
			l[cnt++] = (struct hdr_out){op->name, op->value, 0};
	}
	for (size_t i = 0; i < cnt && rc == 0; i++) {
		if (l[i].name != NULL)
			rc = hdr_put(out, l[i].name, l[i].value);
		else
			rc =
			    buf_append(out, h->raw.data + h->f[l[i].orig].off, h->f[l[i].orig].len);
	}
	if (rc == 0)
		rc = buf_append(out, "\r\n", 2);
	free(l);
	return rc;
}

void milter_addr_strip(const char *in, char *out, size_t outlen)
{
	size_t len = strlen(in);
	while (len > 0 && (*in == ' ' || *in == '<')) {
		in++;
		len--;
	}
	while (len > 0 && (in[len - 1] == ' ' || in[len - 1] == '>'))
		len--;
	if (len >= outlen)
		len = outlen - 1;
	memcpy(out, in, len);
	out[len] = '\0';
}
