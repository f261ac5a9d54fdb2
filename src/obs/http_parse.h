/* http_parse.h — the HTTP/1.1 request parser of the http process
 * (RFC 9112). Pure: octets in, a request or an error out, no I/O, no
 * allocation; the result points into the input. Hostile input (anyone who
 * can reach the listener): everything is bounded — the request line
 * (HTTP_LINE_MAX, else 414), the header section (HTTP_HEADERS_MAX, else
 * 431), the number of fields (HTTP_FIELDS_MAX, else 431) and the body
 * (HTTP_BODY_MAX via Content-Length, else 413). Transfer-Encoding is not
 * implemented (501: no API call has a body worth chunking); obs-fold,
 * bare LF line ends, a field name with white space before its colon
 * (request smuggling, RFC 9112 §5.1) and duplicate Content-Length are 400. */
#ifndef HK_OBS_HTTP_PARSE_H
#define HK_OBS_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_LINE_MAX 2048
#define HTTP_HEADERS_MAX 8192
#define HTTP_FIELDS_MAX 32
#define HTTP_BODY_MAX 4096

struct http_view {
	const char *p;
	size_t len;
};

struct http_request {
	struct http_view method;
	struct http_view path;          /* the target before '?', percent-encoded */
	struct http_view query;         /* after '?', without it; len 0 when none */
	struct http_view authorization; /* the Authorization field, if any */
	struct http_view host, origin, content_type, sec_fetch_site; /* if any */
	struct http_view body;
	struct http_view if_none_match; /* If-None-Match (web.c), if any */
	int minor;   /* HTTP/1.minor */
	bool close;  /* Connection: close, or HTTP/1.0 without keep-alive */
	size_t used; /* octets of the whole request, body included */
};

/* Parse one request at the start of (p, len). Returns 1 with *req set, 0
 * when more octets are needed (and none of the bounds is passed yet), -1
 * with *status_r (400, 413, 414, 431, 501, 505) when the request is bad. */
int http_parse_request(const char *p, size_t len, struct http_request *req, int *status_r);

/* Does v equal the NUL-terminated s (exactly)? */
bool http_view_eq(struct http_view v, const char *s);

/* The value of key in a query string ("a=1&b=2"), percent-decoded into
 * out (NUL-terminated, at most outlen - 1 octets). 1 found, 0 absent, -1
 * malformed or too long (or decoding to a NUL). */
int http_query_get(struct http_view query, const char *key, char *out, size_t outlen);

/* Percent-decode a path segment into out: 0, or -1 as above. */
int http_pct_decode(const char *p, size_t len, char *out, size_t outlen);

#endif
