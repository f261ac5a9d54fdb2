/* header.c — RFC 5322 header fields over (ptr, len) views (header.h).
 * Runs in smtpd on the header section of every message received: the
 * input is hostile, every scan is bounded by its length. Pure, no I/O. */
#include "mail/header.h"

#include <string.h>

#define HDR_ADDR_MAX 512 /* an addr-spec longer than this is not one (RFC 5321 §4.5.3.1) */

static bool hdr_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static char hdr_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

bool mail_hdr_next(const char *hdr, size_t len, size_t *pos, struct mail_hdr_field *f)
{
	size_t i = *pos;
	if (i >= len)
		return false;
	size_t start = i, end = i;
	/* The field ends at a CRLF whose next line does not start with WSP. */
	for (;;) {
		const char *lf = memchr(hdr + i, '\n', len - i);
		if (lf == NULL) {
			end = i = len;
			break;
		}
		i = (size_t)(lf - hdr) + 1;
		end = i;
		if (i >= len || !hdr_wsp(hdr[i]))
			break;
	}
	memset(f, 0, sizeof(*f));
	f->off = start;
	f->len = end - start;
	size_t vend = end;
	if (vend > start && hdr[vend - 1] == '\n')
		vend--;
	if (vend > start && hdr[vend - 1] == '\r')
		vend--;
	const char *colon = memchr(hdr + start, ':', vend - start);
	/* A colon on a continuation line does not make a name. */
	const char *nl = memchr(hdr + start, '\n', vend - start);
	if (colon != NULL && (nl == NULL || colon < nl)) {
		size_t nlen = (size_t)(colon - (hdr + start));
		while (nlen > 0 && hdr_wsp(hdr[start + nlen - 1]))
			nlen--;
		f->name = hdr + start;
		f->name_len = nlen;
		f->value = colon + 1;
		f->value_len = (size_t)(hdr + vend - (colon + 1));
	}
	*pos = end;
	return true;
}

bool mail_hdr_name_is(const struct mail_hdr_field *f, const char *name)
{
	size_t n = strlen(name);
	if (f->name_len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (hdr_lower(f->name[i]) != hdr_lower(name[i]))
			return false;
	}
	return true;
}

/* Skip CFWS (RFC 5322 §3.2.2): whitespace, folds and nested comments with
 * quoted-pairs. Returns the new position; an unclosed comment runs to the
 * end. */
static size_t hdr_skip_cfws(const char *v, size_t len, size_t i)
{
	unsigned depth = 0;
	for (; i < len; i++) {
		char c = v[i];
		if (depth > 0) {
			if (c == '\\')
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			continue;
		}
		if (c == '(')
			depth = 1;
		else if (!hdr_wsp(c) && c != '\r' && c != '\n')
			break;
	}
	return i;
}

int mail_hdr_ar_authserv_id(const char *v, size_t len, const char **id_r, size_t *id_len_r)
{
	size_t i = hdr_skip_cfws(v, len, 0);
	if (i >= len)
		return -1;
	if (v[i] == '"') {
		/* a quoted-string: the id is its content (without escapes only;
		 * a quoted-pair inside is kept as written) */
		size_t s = ++i;
		while (i < len && v[i] != '"') {
			if (v[i] == '\\')
				i++;
			i++;
		}
		if (i >= len)
			return -1;
		*id_r = v + s;
		*id_len_r = i - s;
		return *id_len_r > 0 ? 0 : -1;
	}
	/* a token (RFC 2045 §5.1): up to a tspecial, space or control */
	size_t s = i;
	while (i < len && (unsigned char)v[i] > ' ' && v[i] != 0x7f &&
	       strchr("()<>@,;:\\\"/[]?=", v[i]) == NULL)
		i++;
	*id_r = v + s;
	*id_len_r = i - s;
	return *id_len_r > 0 ? 0 : -1;
}

/* The domain of one addr-spec (quoted local parts kept, comments gone):
 * after the last "@" outside quotes, trimmed, a domain name (LDH labels,
 * "_" tolerated as in real DNS names, UTF-8 octets), lowercased. */
static int hdr_addr_domain(const char *a, size_t n, char *out, size_t outlen)
{
	bool q = false;
	size_t at = n;
	for (size_t i = 0; i < n; i++) {
		if (q && a[i] == '\\')
			i++;
		else if (a[i] == '"')
			q = !q;
		else if (!q && a[i] == '@')
			at = i;
	}
	if (at == n)
		return MAIL_HDR_FROM_BAD;
	size_t s = at + 1, e = n;
	while (s < e && (hdr_wsp(a[s]) || a[s] == '\r' || a[s] == '\n'))
		s++;
	while (e > s && (hdr_wsp(a[e - 1]) || a[e - 1] == '\r' || a[e - 1] == '\n'))
		e--;
	if (e > s && a[e - 1] == '.')
		e--; /* a trailing root dot names the same domain */
	if (e == s || e - s >= outlen || a[s] == '.' || a[e - 1] == '.')
		return MAIL_HDR_FROM_BAD; /* empty, too long, or an empty label */
	for (size_t i = s; i < e; i++) {
		unsigned char c = (unsigned char)a[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '_' || c >= 0x80 ||
		          (c == '.' && a[i - 1] != '.');
		if (!ok)
			return MAIL_HDR_FROM_BAD;
		out[i - s] = hdr_lower((char)c);
	}
	out[e - s] = '\0';
	return 0;
}

struct hdr_from {
	char addr[HDR_ADDR_MAX];
	size_t n;
	bool angle, angle_done, any;
	int nfound;
	char *out;
	size_t outlen;
};

static int hdr_from_put(struct hdr_from *st, char c)
{
	if (st->angle_done) /* after ">" only CFWS */
		return hdr_wsp(c) || c == '\r' || c == '\n' ? 0 : MAIL_HDR_FROM_BAD;
	if (st->n >= sizeof(st->addr))
		return MAIL_HDR_FROM_BAD;
	st->addr[st->n++] = c;
	return 0;
}

/* The end of one mailbox (a comma or the end): its domain must match the
 * others'. An empty element (obs-mbox-list) is skipped. */
static int hdr_from_end(struct hdr_from *st)
{
	char dom[256];
	if (st->angle)
		return MAIL_HDR_FROM_BAD;
	size_t i = 0;
	while (i < st->n && (hdr_wsp(st->addr[i]) || st->addr[i] == '\r' || st->addr[i] == '\n'))
		i++;
	if (i == st->n && !st->angle_done) {
		st->n = 0;
		return 0;
	}
	int rc = hdr_addr_domain(st->addr, st->n, dom, sizeof(dom));
	if (rc < 0)
		return rc;
	if (strlen(dom) >= st->outlen)
		return MAIL_HDR_FROM_BAD;
	if (st->nfound > 0 && strcmp(dom, st->out) != 0)
		return MAIL_HDR_FROM_MULTI;
	memcpy(st->out, dom, strlen(dom) + 1);
	st->nfound++;
	st->n = 0;
	st->angle_done = false;
	return 0;
}

/* One octet outside quotes and comments. */
static int hdr_from_octet(struct hdr_from *st, char c)
{
	switch (c) {
	case '<':
		if (st->angle || st->angle_done)
			return MAIL_HDR_FROM_BAD;
		st->angle = true;
		st->n = 0; /* the display name is not the address */
		return 0;
	case '>':
		if (!st->angle)
			return MAIL_HDR_FROM_BAD;
		st->angle = false;
		st->angle_done = true;
		return 0;
	case ',':
		return hdr_from_end(st);
	case ':': /* a group, or an obsolete route: not an author */
	case ';':
		return MAIL_HDR_FROM_BAD;
	default:
		return hdr_from_put(st, c);
	}
}

int mail_hdr_from_domain(const char *v, size_t len, char *out, size_t outlen)
{
	struct hdr_from st = {.out = out, .outlen = outlen};
	bool quoted = false;
	unsigned depth = 0;
	int rc = 0;
	if (outlen == 0)
		return MAIL_HDR_FROM_BAD;
	out[0] = '\0';
	for (size_t i = 0; i < len && rc == 0; i++) {
		char c = v[i];
		if (depth > 0) {
			if (c == '\\')
				i++;
			else if (c == '(')
				depth++;
			else if (c == ')')
				depth--;
			if (depth == 0)
				rc = hdr_from_put(&st, ' '); /* a comment separates like a space */
			continue;
		}
		if (quoted) {
			rc = hdr_from_put(&st, c);
			if (c == '\\' && i + 1 < len && rc == 0)
				rc = hdr_from_put(&st, v[++i]);
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == '(') {
			depth = 1;
		} else if (c == '"') {
			quoted = true;
			rc = hdr_from_put(&st, c);
		} else {
			rc = hdr_from_octet(&st, c);
		}
	}
	if (rc == 0 && (quoted || depth > 0))
		rc = MAIL_HDR_FROM_BAD;
	if (rc == 0)
		rc = hdr_from_end(&st);
	if (rc == 0 && st.nfound == 0)
		rc = MAIL_HDR_FROM_BAD;
	if (rc < 0)
		out[0] = '\0';
	return rc;
}
