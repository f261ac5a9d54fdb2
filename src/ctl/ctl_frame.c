/* ctl_frame.c — encoder and decoder of the control frames (format in ctl.h).
 * Pure: no I/O, no allocation beyond the caller's buffer. Used by the daemon
 * (ctl_server.c) on request frames from any local process that can open the
 * socket, and by the CLI (ctl_client.c) on response frames; both treat the
 * other side's octets as hostile: every length is checked against the frame
 * before use, and a frame longer than the caller's maximum is refused from
 * its length field alone, before anything is buffered. */
#include "ctl/ctl.h"

#include <stdio.h>
#include <string.h>

enum ctl_kind { CTL_K_NONE = 0, CTL_K_U64, CTL_K_STR, CTL_K_BYTES };

/* One table: the kind of every tag (unknown tags stay CTL_K_NONE). */
static const unsigned char ctl_tag_kind[CTL_F_MAX + 1] = {
    [CTL_F_QID] = CTL_K_STR,        [CTL_F_DOMAIN] = CTL_K_STR,    [CTL_F_MESSAGE] = CTL_K_STR,
    [CTL_F_COUNT] = CTL_K_U64,      [CTL_F_ARRIVAL] = CTL_K_U64,   [CTL_F_SIZE] = CTL_K_U64,
    [CTL_F_SENDER] = CTL_K_STR,     [CTL_F_STATE] = CTL_K_STR,     [CTL_F_NEXT_TRY] = CTL_K_U64,
    [CTL_F_ATTEMPTS] = CTL_K_U64,   [CTL_F_FLAGS] = CTL_K_U64,     [CTL_F_LAST_ERROR] = CTL_K_STR,
    [CTL_F_ACTION] = CTL_K_STR,     [CTL_F_NRCPTS] = CTL_K_U64,    [CTL_F_NPENDING] = CTL_K_U64,
    [CTL_F_RCPT] = CTL_K_STR,       [CTL_F_RCPT_DONE] = CTL_K_U64, [CTL_F_RCPT_NOTIFY] = CTL_K_U64,
    [CTL_F_RCPT_ORCPT] = CTL_K_STR, [CTL_F_ENVID] = CTL_K_STR,     [CTL_F_RET] = CTL_K_U64,
    [CTL_F_BODY] = CTL_K_U64,       [CTL_F_SMTPUTF8] = CTL_K_U64,  [CTL_F_CLIENT] = CTL_K_STR,
    [CTL_F_HELO] = CTL_K_STR,       [CTL_F_HEADERS] = CTL_K_BYTES, [CTL_F_OMITTED] = CTL_K_U64,
    [CTL_F_HOUR] = CTL_K_U64,       [CTL_F_SENT] = CTL_K_U64,      [CTL_F_DEFERRED] = CTL_K_U64,
    [CTL_F_BOUNCED] = CTL_K_U64,    [CTL_F_MEDIAN_MS] = CTL_K_U64,  [CTL_F_KIND] = CTL_K_STR,
    [CTL_F_FROM] = CTL_K_U64,       [CTL_F_TO] = CTL_K_U64,        [CTL_F_JSON] = CTL_K_BYTES,
};

static void ctl_put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t ctl_get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

bool ctl_type_is_request(uint8_t type)
{
	return type >= CTL_T_LIST && type <= CTL_T_ANALYTICS;
}

static bool ctl_type_known(uint8_t type)
{
	return ctl_type_is_request(type) || (type >= CTL_T_OK && type <= CTL_T_AJSON);
}

size_t ctl_frame_begin(struct buf *out, uint8_t type)
{
	size_t start = out->len;
	unsigned char hdr[CTL_HDR_LEN] = {0, 0, 0, 0, type};
	/* The header fits whenever anything fits; if not, ctl_frame_end()
	 * finds the frame short and refuses it. */
	(void)buf_append(out, hdr, sizeof(hdr));
	return start;
}

int ctl_frame_add(struct buf *out, uint8_t tag, const void *p, size_t len)
{
	unsigned char hdr[CTL_FIELD_HDR_LEN];
	if (len > UINT32_MAX - CTL_FIELD_HDR_LEN)
		return -1;
	hdr[0] = tag;
	ctl_put_be32(hdr + 1, (uint32_t)len);
	if (buf_reserve(out, sizeof(hdr) + len) < 0)
		return -1;
	(void)buf_append(out, hdr, sizeof(hdr));
	(void)buf_append(out, p, len);
	return 0;
}

int ctl_frame_add_str(struct buf *out, uint8_t tag, const char *s)
{
	if (s == NULL)
		s = "";
	return ctl_frame_add(out, tag, s, strlen(s));
}

int ctl_frame_add_u64(struct buf *out, uint8_t tag, uint64_t v)
{
	unsigned char b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * (7 - i)));
	return ctl_frame_add(out, tag, b, sizeof(b));
}

int ctl_frame_end(struct buf *out, size_t start, size_t max)
{
	if (out->len < start + CTL_HDR_LEN || out->len - start > max ||
	    out->len - start - 4 > UINT32_MAX) {
		if (out->len > start)
			out->len = start;
		if (out->data != NULL)
			out->data[out->len] = '\0';
		return -1;
	}
	ctl_put_be32(out->data + start, (uint32_t)(out->len - start - 4));
	return 0;
}

static int ctl_fields_check(const unsigned char *p, size_t len, const char **error_r)
{
	size_t off = 0;
	while (off < len) {
		if (len - off < CTL_FIELD_HDR_LEN) {
			*error_r = "truncated field header";
			return -1;
		}
		uint8_t tag = p[off];
		size_t flen = ctl_get_be32(p + off + 1);
		off += CTL_FIELD_HDR_LEN;
		if (flen > len - off) {
			*error_r = "field runs past the frame";
			return -1;
		}
		unsigned kind = tag <= CTL_F_MAX ? ctl_tag_kind[tag] : CTL_K_NONE;
		if (kind == CTL_K_NONE) {
			*error_r = "unknown field tag";
			return -1;
		}
		if (kind == CTL_K_U64 && flen != 8) {
			*error_r = "number field is not 8 octets";
			return -1;
		}
		if (kind == CTL_K_STR && memchr(p + off, '\0', flen) != NULL) {
			*error_r = "NUL in a string field";
			return -1;
		}
		off += flen;
	}
	return 0;
}

int ctl_frame_decode(const void *p, size_t len, size_t max, struct ctl_frame *f, size_t *used_r,
                     const char **error_r)
{
	const unsigned char *b = p;
	if (len < 4)
		return 0;
	uint32_t flen = ctl_get_be32(b);
	if (flen == 0) {
		*error_r = "empty frame";
		return -1;
	}
	if (max < 4 || flen > max - 4) {
		*error_r = "frame too large";
		return -1;
	}
	if (len < 5) /* the type is checked as soon as it arrives */
		return 0;
	if (!ctl_type_known(b[4])) {
		*error_r = "unknown frame type";
		return -1;
	}
	if (len - 4 < flen)
		return 0;
	if (ctl_fields_check(b + CTL_HDR_LEN, flen - 1, error_r) < 0)
		return -1;
	f->type = b[4];
	f->body = b + CTL_HDR_LEN;
	f->body_len = flen - 1;
	*used_r = (size_t)flen + 4;
	return 1;
}

int ctl_field_next(const struct ctl_frame *f, size_t *off, struct ctl_field *fld)
{
	/* The frame was checked by ctl_frame_decode(); stay safe anyway. */
	if (*off >= f->body_len || f->body_len - *off < CTL_FIELD_HDR_LEN)
		return 0;
	size_t flen = ctl_get_be32(f->body + *off + 1);
	if (flen > f->body_len - *off - CTL_FIELD_HDR_LEN)
		return 0;
	fld->tag = f->body[*off];
	fld->p = f->body + *off + CTL_FIELD_HDR_LEN;
	fld->len = flen;
	*off += CTL_FIELD_HDR_LEN + flen;
	return 1;
}

uint64_t ctl_field_u64(const struct ctl_field *fld)
{
	uint64_t v = 0;
	if (fld->len != 8)
		return 0;
	for (size_t i = 0; i < 8; i++)
		v = v << 8 | fld->p[i];
	return v;
}

int ctl_socket_path(const char *spool_dir, char *out, size_t outlen)
{
	/* sun_path is 108 octets on Linux, NUL included. */
	size_t limit = outlen < 108 ? outlen : 108;
	int n = snprintf(out, outlen, "%s/%s", spool_dir, CTL_SOCKET_NAME);
	if (n < 0 || (size_t)n >= limit)
		return -1;
	return 0;
}

/* ---- ANALYTICS requests ---- */

int ctl_analytics_build(const struct ctl_analytics_req *req, struct buf *out)
{
	size_t start = ctl_frame_begin(out, CTL_T_ANALYTICS);
	if (ctl_frame_add_str(out, CTL_F_KIND, req->kind) < 0 ||
	    ctl_frame_add_u64(out, CTL_F_FROM, req->from) < 0 ||
	    ctl_frame_add_u64(out, CTL_F_TO, req->to) < 0 ||
	    (req->domain[0] != '\0' && ctl_frame_add_str(out, CTL_F_DOMAIN, req->domain) < 0) ||
	    (req->sender[0] != '\0' && ctl_frame_add_str(out, CTL_F_SENDER, req->sender) < 0))
		return -1;
	return ctl_frame_end(out, start, CTL_REQ_MAX);
}

/* Copy a str field of printable ASCII (no space) into out[outlen]. */
static int ctl_analytics_str(const struct ctl_field *fld, char *out, size_t outlen, bool letters)
{
	if (fld->len == 0 || fld->len >= outlen || out[0] != '\0')
		return -1; /* empty, too long, or given twice */
	for (size_t i = 0; i < fld->len; i++) {
		unsigned char c = fld->p[i];
		if (letters ? !(c >= 'a' && c <= 'z') : (c <= 0x20 || c >= 0x7f))
			return -1;
	}
	memcpy(out, fld->p, fld->len);
	out[fld->len] = '\0';
	return 0;
}

int ctl_analytics_decode(const struct ctl_frame *f, struct ctl_analytics_req *req,
                         const char **error_r)
{
	struct ctl_field fld;
	size_t off = 0;
	bool have_from = false, have_to = false;
	memset(req, 0, sizeof(*req));
	*error_r = "malformed analytics request";
	if (f->type != CTL_T_ANALYTICS)
		return -1;
	while (ctl_field_next(f, &off, &fld)) {
		switch (fld.tag) {
		case CTL_F_KIND:
			if (ctl_analytics_str(&fld, req->kind, sizeof(req->kind), true) < 0)
				return -1;
			break;
		case CTL_F_DOMAIN:
			if (ctl_analytics_str(&fld, req->domain, sizeof(req->domain), false) < 0)
				return -1;
			break;
		case CTL_F_SENDER:
			if (ctl_analytics_str(&fld, req->sender, sizeof(req->sender), false) < 0)
				return -1;
			break;
		case CTL_F_FROM:
			if (have_from)
				return -1;
			have_from = true;
			req->from = ctl_field_u64(&fld);
			break;
		case CTL_F_TO:
			if (have_to)
				return -1;
			have_to = true;
			req->to = ctl_field_u64(&fld);
			break;
		default:
			return -1;
		}
	}
	if (off != f->body_len || req->kind[0] == '\0' || !have_from || !have_to)
		return -1;
	if (req->from > req->to || req->to - req->from > CTL_ANALYTICS_SPAN_MAX) {
		*error_r = "bad time range (from after to, or more than 400 days)";
		return -1;
	}
	return 0;
}
