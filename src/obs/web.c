/* web.c — serve the embedded front-end files (web.h). Runs in the http
 * process on its event loop; pure lookups and formatting, no I/O of its
 * own (the caller's evbuffer goes to the socket).
 *
 * Fields on every file:
 * - ETag (strong, from the content) and Cache-Control: no-cache — a
 *   browser keeps the file but asks each time, and gets a 304 without a
 *   body while the binary is the same; the names carry no version, so a
 *   longer max-age would serve a stale UI after an upgrade.
 * - X-Content-Type-Options: nosniff — the type is the table's, never a
 *   guess.
 * - Content-Security-Policy: only this origin's scripts, styles, images
 *   and connections; no inline script or style, no eval, no plugins;
 *   frames only from this origin (the message view's iframe of
 *   /view/ID.html, itself sandboxed without scripts); no one may frame
 *   the UI (frame-ancestors 'none', and X-Frame-Options: DENY for older
 *   browsers), so clickjacking cannot drive its buttons.
 * - Referrer-Policy: no-referrer (a message's links must not learn the
 *   sandbox's URL), Cross-Origin-Opener-Policy and -Resource-Policy:
 *   same-origin. */
#include "obs/web.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

#define WEB_CSP                                                                                    \
	"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "          \
	"connect-src 'self'; frame-src 'self'; child-src 'self'; object-src 'none'; "              \
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

#define WEB_SECURITY_FIELDS                                                                        \
	"X-Content-Type-Options: nosniff\r\n"                                                      \
	"Content-Security-Policy: " WEB_CSP "\r\n"                                                 \
	"X-Frame-Options: DENY\r\n"                                                                \
	"Referrer-Policy: no-referrer\r\n"                                                         \
	"Cross-Origin-Opener-Policy: same-origin\r\n"                                              \
	"Cross-Origin-Resource-Policy: same-origin\r\n"

#define WEB_NAME_MAX 256

static int web_cmp(const void *key, const void *elem)
{
	return strcmp((const char *)key, ((const struct web_file *)elem)->path);
}

const struct web_file *web_find(const char *path)
{
	return bsearch(path, web_files, web_n_files, sizeof(web_files[0]), web_cmp);
}

/* dir + rest into name, or NULL when too long. */
static const struct web_file *web_find2(const char *dir, const char *rest)
{
	char name[WEB_NAME_MAX];
	size_t dl = strlen(dir), rl = strlen(rest);
	if (dl + rl + 1 > sizeof(name))
		return NULL;
	memcpy(name, dir, dl);
	memcpy(name + dl, rest, rl + 1);
	return web_find(name);
}

bool web_is_path(const char *url_path, bool sandbox_ui)
{
	return (sandbox_ui && strcmp(url_path, "/") == 0) ||
	       strncmp(url_path, "/assets/", 8) == 0 || strcmp(url_path, "/dashboard") == 0 ||
	       strncmp(url_path, "/dashboard/", 11) == 0;
}

const struct web_file *web_route(const char *url_path, bool sandbox_ui)
{
	if (sandbox_ui && strcmp(url_path, "/") == 0)
		return web_find("sandbox/index.html");
	if (strncmp(url_path, "/assets/", 8) == 0)
		return url_path[8] == '\0' ? NULL : web_find2("sandbox/assets/", url_path + 8);
	if (strcmp(url_path, "/dashboard/") == 0)
		return web_find("dashboard/index.html");
	if (strncmp(url_path, "/dashboard/", 11) == 0)
		return web_find2("dashboard/", url_path + 11);
	return NULL;
}

bool web_etag_match(const char *p, size_t len, const char *etag)
{
	size_t el = strlen(etag), i = 0;
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	if (i < len && p[i] == '*') {
		for (i++; i < len; i++)
			if (p[i] != ' ' && p[i] != '\t')
				return false;
		return true;
	}
	bool match = false;
	for (;;) {
		while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
			i++;
		if (i == len)
			return match;
		if (len - i >= 2 && p[i] == 'W' && p[i + 1] == '/')
			i += 2;
		if (i == len || p[i] != '"')
			return false;
		size_t s = i++;
		while (i < len && p[i] != '"')
			i++;
		if (i == len)
			return false;
		i++;
		if (i - s == el && memcmp(p + s, etag, el) == 0)
			match = true;
		if (i < len && p[i] != ',' && p[i] != ' ' && p[i] != '\t')
			return false;
	}
}

int web_respond(struct evbuffer *out, const struct web_file *f, bool head, const char *inm,
                size_t inm_len, bool close)
{
	const char *conn = close ? "Connection: close\r\n" : "";
	if (inm != NULL && web_etag_match(inm, inm_len, f->etag)) {
		/* RFC 9110 §15.4.5: the fields a 200 would carry that describe
		 * the cache entry (ETag, Cache-Control), no body. */
		evbuffer_add_printf(out,
		                    "HTTP/1.1 304 Not Modified\r\nETag: %s\r\n"
		                    "Cache-Control: no-cache\r\n" WEB_SECURITY_FIELDS "%s\r\n",
		                    f->etag, conn);
		return 304;
	}
	evbuffer_add_printf(out,
	                    "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                    "ETag: %s\r\nCache-Control: no-cache\r\n" WEB_SECURITY_FIELDS "%s\r\n",
	                    f->type, f->len, f->etag, conn);
	/* The bytes are the binary's own, alive for the process: no copy. */
	if (!head && f->len > 0)
		evbuffer_add_reference(out, f->data, f->len, NULL, NULL);
	return 200;
}
