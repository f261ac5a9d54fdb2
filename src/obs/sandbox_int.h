/* sandbox_int.h — the pieces shared by sandbox_msg.c, sandbox_html.c and
 * sandbox_check.c; not a public interface (callers use sandbox_msg.h). */
#ifndef HK_OBS_SANDBOX_INT_H
#define HK_OBS_SANDBOX_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"
#include "mail/mime.h"

/* Where the text and HTML bodies of a parsed message are, and which parts
 * are inline (Mailpit's Inline[]) or attachments. Parts inside an attached
 * message/rfc822 belong to that message, not this one. */
enum sbx_role { SBX_ROLE_NONE = 0, SBX_ROLE_TEXT, SBX_ROLE_HTML, SBX_ROLE_INLINE, SBX_ROLE_ATTACH };

struct sbx_bodies {
	const struct mime_part *text, *html;
	enum sbx_role *role; /* one per part */
	size_t ninline, nattach;
};

void sbx_bodies_find(const struct mime_msg *m, struct sbx_bodies *b);
void sbx_bodies_free(struct sbx_bodies *b);

/* A resolver for cid: URLs (RFC 2392): appends "data:type;base64,..." for
 * the Content-ID cid[0..len) (percent-decoded) and returns 1; 0 if it has
 * no such part or its budget is spent. */
typedef int (*sbx_cid_fn)(void *ctx, const char *cid, size_t len, struct buf *out);

/* The HTML rewritten for display (sandbox_msg.h, sbx_msg_html). */
int sbx_html_rewrite(const char *h, size_t n, bool allow_remote, sbx_cid_fn cid, void *ctx,
                     struct buf *out);
/* The text a reader sees: tags dropped, script/style/head contents dropped,
 * character references decoded, whitespace collapsed; at most max_chars
 * characters (0: no limit). */
int sbx_html_text(const char *h, size_t n, size_t max_chars, struct buf *out);
/* Whitespace runs collapsed to one space, trimmed, at most max_chars
 * characters (0: no limit). */
int sbx_collapse_ws(const char *s, size_t n, size_t max_chars, struct buf *out);

/* A link found in an HTML body: url (character references decoded) and,
 * for <a>/<area>, the text shown for it. Return non-zero to stop. */
typedef int (*sbx_link_fn)(void *ctx, const char *url, size_t ulen, const char *text, size_t tlen);
int sbx_html_links(const char *h, size_t n, sbx_link_fn fn, void *ctx);

#endif
