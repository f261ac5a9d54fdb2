/* http_parse.c — HTTP/1.1 request parser (http_parse.h). Pure; runs in the
 * http process on octets from the network. */
#include "obs/http_parse.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>

bool http_view_eq(struct http_view v, const char *s)
{
	size_t n = strlen(s);
	return v.len == n && memcmp(v.p, s, n) == 0;
}

static bool http_tchar(unsigned char c)
{
	/* RFC 9110 §5.6.2 token characters */
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool http_vchar_target(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/* The end of the line starting at p (the offset of its CR), or -1 when no
 * CRLF within max octets; -2 for a bare LF or CR. */
static long http_line_end(const char *p, size_t len, size_t max, bool *more_r)
{
	*more_r = false;
	for (size_t i = 0; i < len && i < max; i++) {
		if (p[i] == '\n')
			return -2;
		if (p[i] == '\r') {
			if (i + 1 >= len) {
				*more_r = true;
				return -1;
			}
			return p[i + 1] == '\n' ? (long)i : -2;
		}
	}
	*more_r = len < max;
	return -1;
}

static int http_fail(int *status_r, int status)
{
	*status_r = status;
	return -1;
}

static int http_request_line(const char *p, size_t n, struct http_request *req, int *status_r)
{
	const char *sp1 = memchr(p, ' ', n);
	if (sp1 == NULL || sp1 == p)
		return http_fail(status_r, 400);
	req->method = (struct http_view){p, (size_t)(sp1 - p)};
	for (size_t i = 0; i < req->method.len; i++)
		if (!http_tchar((unsigned char)p[i]))
			return http_fail(status_r, 400);
	const char *t = sp1 + 1, *end = p + n;
	const char *sp2 = memchr(t, ' ', (size_t)(end - t));
	if (sp2 == NULL || sp2 == t || *t != '/')
		return http_fail(status_r, 400);
	for (const char *c = t; c < sp2; c++)
		if (!http_vchar_target((unsigned char)*c))
			return http_fail(status_r, 400);
	const char *q = memchr(t, '?', (size_t)(sp2 - t));
	req->path = (struct http_view){t, (size_t)((q != NULL ? q : sp2) - t)};
	req->query = q != NULL ? (struct http_view){q + 1, (size_t)(sp2 - q - 1)}
	                       : (struct http_view){sp2, 0};
	const char *v = sp2 + 1;
	if ((size_t)(end - v) != 8 || memcmp(v, "HTTP/1.", 7) != 0)
		return http_fail(status_r,
		                 (size_t)(end - v) == 8 && memcmp(v, "HTTP/", 5) == 0 ? 505 : 400);
	if (v[7] != '0' && v[7] != '1')
		return http_fail(status_r, 505);
	req->minor = v[7] - '0';
	req->close = req->minor == 0;
	return 0;
}

static bool http_has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);
	for (size_t i = 0; i + tl <= n; i++) {
		if (strncasecmp(v + i, tok, tl) == 0 &&
		    (i == 0 || v[i - 1] == ',' || v[i - 1] == ' ') &&
		    (i + tl == n || v[i + tl] == ',' || v[i + tl] == ' '))
			return true;
	}
	return false;
}

/* Where a field the API reads is kept, or NULL. */
static struct http_view *http_field_view(const char *name, size_t nl, struct http_request *req)
{
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
	    {"Host", offsetof(struct http_request, host)},
	    {"Origin", offsetof(struct http_request, origin)},
	    {"Content-Type", offsetof(struct http_request, content_type)},
	    {"Sec-Fetch-Site", offsetof(struct http_request, sec_fetch_site)},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (nl == strlen(fields[i].name) && strncasecmp(name, fields[i].name, nl) == 0)
			return (struct http_view *)((char *)req + fields[i].off);
	return NULL;
}

/* One field line (p, n): name ":" OWS value OWS. */
static int http_field(const char *p, size_t n, struct http_request *req, long *clen, int *status_r)
{
	const char *colon = memchr(p, ':', n);
	if (colon == NULL || colon == p)
		return http_fail(status_r, 400);
	size_t nl = (size_t)(colon - p);
	for (size_t i = 0; i < nl; i++)
		if (!http_tchar((unsigned char)p[i]))
			return http_fail(status_r, 400); /* also white space before ':' */
	const char *v = colon + 1, *e = p + n;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	for (const char *c = v; c < e; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return http_fail(status_r, 400);
	size_t vl = (size_t)(e - v);
	if (nl == 13 && strncasecmp(p, "Authorization", 13) == 0) {
		if (req->authorization.p != NULL)
			return http_fail(status_r, 400);
		req->authorization = (struct http_view){v, vl};
	} else if (nl == 13 && strncasecmp(p, "If-None-Match", 13) == 0) {
		if (req->if_none_match.p != NULL)
			return http_fail(status_r, 400); /* one list, not two to merge */
		req->if_none_match = (struct http_view){v, vl};
	} else if (http_field_view(p, nl, req) != NULL) {
		/* The fields the sandbox API reads (CSRF, Host): a repeated one
		 * is ambiguous, 400. */
		struct http_view *fv = http_field_view(p, nl, req);
		if (fv->p != NULL)
			return http_fail(status_r, 400);
		*fv = (struct http_view){v, vl};
	} else if (nl == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
		if (*clen >= 0 || vl == 0 || vl > 9)
			return http_fail(status_r, vl > 9 ? 413 : 400);
		long x = 0;
		for (size_t i = 0; i < vl; i++) {
			if (v[i] < '0' || v[i] > '9')
				return http_fail(status_r, 400);
			x = x * 10 + (v[i] - '0');
		}
		if (x > HTTP_BODY_MAX)
			return http_fail(status_r, 413);
		*clen = x;
	} else if (nl == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) {
		return http_fail(status_r, 501);
	} else if (nl == 10 && strncasecmp(p, "Connection", 10) == 0) {
		if (http_has_token(v, vl, "close"))
			req->close = true;
		else if (http_has_token(v, vl, "keep-alive"))
			req->close = false;
	}
	return 0;
}

int http_parse_request(const char *p, size_t len, struct http_request *req, int *status_r)
{
	bool more;
	memset(req, 0, sizeof(*req));
	*status_r = 0;
	long e = http_line_end(p, len, HTTP_LINE_MAX, &more);
	if (e == -2)
		return http_fail(status_r, 400);
	if (e < 0)
		return more ? 0 : http_fail(status_r, 414);
	if (http_request_line(p, (size_t)e, req, status_r) < 0)
		return -1;
	size_t off = (size_t)e + 2, nfields = 0;
	long clen = -1;
	for (;;) {
		size_t room = off - (size_t)e - 2 < HTTP_HEADERS_MAX
		                  ? HTTP_HEADERS_MAX - (off - (size_t)e - 2)
		                  : 0;
		long fe = http_line_end(p + off, len - off, room, &more);
		if (fe == -2)
			return http_fail(status_r, 400);
		if (fe < 0)
			return more ? 0 : http_fail(status_r, 431);
		if (fe == 0) {
			off += 2;
			break;
		}
		if (p[off] == ' ' || p[off] == '\t')
			return http_fail(status_r, 400); /* obs-fold */
		if (++nfields > HTTP_FIELDS_MAX)
			return http_fail(status_r, 431);
		if (http_field(p + off, (size_t)fe, req, &clen, status_r) < 0)
			return -1;
		off += (size_t)fe + 2;
	}
	size_t blen = clen > 0 ? (size_t)clen : 0;
	if (len - off < blen)
		return 0;
	req->body = (struct http_view){p + off, blen};
	req->used = off + blen;
	return 1;
}

static int http_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int http_pct_decode(const char *p, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		if (c == '%') {
			int h, l;
			if (i + 2 >= len || (h = http_hex(p[i + 1])) < 0 ||
			    (l = http_hex(p[i + 2])) < 0)
				return -1;
			c = (char)(h << 4 | l);
			i += 2;
			if (c == '\0')
				return -1;
		} else if (c == '+') {
			c = ' ';
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = c;
	}
	if (outlen == 0)
		return -1;
	out[o] = '\0';
	return 0;
}

int http_query_get(struct http_view query, const char *key, char *out, size_t outlen)
{
	size_t kl = strlen(key);
	const char *p = query.p, *end = query.p + query.len;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *pe = amp != NULL ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(pe - p));
		if (eq != NULL && (size_t)(eq - p) == kl && memcmp(p, key, kl) == 0)
			return http_pct_decode(eq + 1, (size_t)(pe - eq - 1), out, outlen) < 0 ? -1
			                                                                       : 1;
		p = pe + 1;
	}
	return 0;
}
