/* web.h — the front-end files (web/) compiled into the binary, and how the
 * http process serves them (issue 13): the sandbox UI at / and /assets/...
 * on a sandbox listener, the analytics dashboard at /dashboard/.
 *
 * The table is generated at build time by scripts/web_embed.py
 * (web/meson.build): nothing is read from disk at run time, so the http
 * process's sandbox needs no path for it and a served file is exactly the
 * reviewed one. Hostile input: the request path and If-None-Match (bounded
 * by http_parse.h); a path is only ever compared with the table's names,
 * never used to open anything. */
#ifndef HK_OBS_WEB_H
#define HK_OBS_WEB_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

struct web_file {
	const char *path; /* relative to web/: "sandbox/index.html" */
	const char *type; /* Content-Type */
	const unsigned char *data;
	size_t len;
	const char *etag; /* strong, quoted: "\"<128-bit sha256 prefix, hex>\"" */
};

/* The generated table, sorted by path (bytewise). */
extern const struct web_file web_files[];
extern const size_t web_n_files;

/* The file named path in the table, or NULL. */
const struct web_file *web_find(const char *path);

/* The file a (percent-decoded) request path names, or NULL when the path is
 * not a front-end path or names no file: "/" (only when sandbox_ui),
 * "/assets/X" (sandbox/assets/X), "/dashboard/" and "/dashboard/X". */
const struct web_file *web_route(const char *url_path, bool sandbox_ui);

/* Is url_path one of the front-end prefixes (so that a miss is a 404 of
 * ours and not some other component's path)? */
bool web_is_path(const char *url_path, bool sandbox_ui);

/* Does an If-None-Match field value (p, len) match etag? RFC 9110 §13.1.2:
 * "*" or a comma-separated list of entity tags, compared weakly (W/ is
 * ignored). Malformed lists match nothing. */
bool web_etag_match(const char *p, size_t len, const char *etag);

/* Append the whole answer for f to out: 304 when inm (p, len; p NULL when
 * the field was absent) matches, else 200 with the body (none for HEAD),
 * with the caching and security fields (web.c says which and why).
 * close: add "Connection: close". Returns the status written. */
int web_respond(struct evbuffer *out, const struct web_file *f, bool head, const char *inm,
                size_t inm_len, bool close);

#endif
