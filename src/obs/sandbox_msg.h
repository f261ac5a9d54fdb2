/* sandbox_msg.h — message inspection for the mail sandbox (issue 13): the
 * Mailpit-compatible JSON of a captured message, its list summary, one
 * decoded part, its HTML made safe to show, and the checks the UI shows.
 * Pure: bytes in (one raw RFC 5322 message, hostile), JSON or bytes out;
 * no storage, no HTTP, no globals. The http process calls it.
 *
 * Showing the HTML (sbx_msg_html) — what the caller must do:
 *   1. Serve the returned document on its own URL with
 *        Content-Type: text/html; charset=utf-8
 *        Content-Security-Policy: default-src 'none'; img-src data:;
 *          style-src 'unsafe-inline'; font-src data:; base-uri 'none';
 *          form-action 'none'; frame-ancestors 'self'; sandbox
 *      and, when the user asked for remote images (allow_remote), img-src
 *        data: https: http: (and nothing else widened);
 *        X-Content-Type-Options: nosniff
 *        Referrer-Policy: no-referrer
 *        Cache-Control: no-store
 *   2. Embed it only as <iframe sandbox src="..."> with no allow-scripts and
 *      no allow-same-origin (allow-popups and
 *      allow-popups-to-escape-sandbox may be added so that links open in
 *      a new tab), and referrerpolicy="no-referrer".
 * The rewriting here is defence in depth, not the guard: cid: references
 * become data: URIs of the message's inline image/font parts; unless
 * allow_remote, every resource URL (src, background, poster, srcset, link
 * and svg href, CSS url(), @import, image-set) that is not a data: image
 * or font is replaced by "data:," and CSS escapes are defused; always,
 * on* handlers, ping, srcdoc, <meta http-equiv> and <base href> are
 * dropped. Scripts are left to the CSP and the sandbox (the CSP has no
 * script-src, the iframe no allow-scripts).
 */
#ifndef HK_OBS_SANDBOX_MSG_H
#define HK_OBS_SANDBOX_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define SBX_SNIPPET_CHARS 250
#define SBX_MAX_ADDRS 1000             /* per address header */
#define SBX_MAX_LINKS 500              /* links listed by sbx_msg_check */
#define SBX_HTML_INLINE_MAX (8u << 20) /* decoded octets turned into data: URIs */
#define SBX_HTML_CID_MAX 1024          /* cid: references resolved; later ones blocked */
#define SBX_MAX_FIELDS 4096            /* header fields listed by sbx_msg_headers_json */
#define SBX_SIZE_WARN (10u << 20)
#define SBX_SIZE_ERROR (25u << 20)

struct sbx_addr {
	char *name;    /* display name, RFC 2047-decoded UTF-8; "" if none */
	char *address; /* addr-spec as written; "" if none */
};

struct sbx_addr_list {
	struct sbx_addr *v;
	size_t n;
};

/* What the sandbox store indexes for the message list (Mailpit's
 * MessageSummary). All strings UTF-8, NUL-terminated, never NULL. */
struct sbx_msg_summary {
	struct sbx_addr from;
	struct sbx_addr_list to, cc, bcc, reply_to;
	char *subject;
	char *message_id; /* without <> */
	char *snippet;    /* up to SBX_SNIPPET_CHARS characters, whitespace collapsed */
	int64_t date;     /* Unix seconds: the Date field, else `received` */
	int date_tz_min;  /* the Date field's zone offset in minutes (0 if none) */
	bool date_valid;  /* the Date field parsed */
	size_t attachments;
	size_t size;
};

/* Mailpit's v1 "Message" object for raw[0..len) into out: ID (id),
 * MessageID, From, To, Cc, Bcc, ReplyTo, ReturnPath, Subject, Date (RFC
 * 3339; `received` when there is no valid Date field), Tags ([]), Text
 * (the HTML's text when there is no text/plain part, as Mailpit does),
 * HTML, Size, Inline[] and Attachments[] ({PartID, FileName, ContentType,
 * ContentID, Size}), ListUnsubscribe {Header, Links, Errors, HeaderPost}.
 * Mailpit's Username is not known here (the store has the login).
 * 0, or -1 if out refuses (its max). */
int sbx_msg_json(const void *raw, size_t len, const char *id, int64_t received, struct buf *out);

/* Fill s (zeroed first) from raw[0..len). Release with sbx_msg_summary_clear(). */
void sbx_msg_summary(const void *raw, size_t len, int64_t received, struct sbx_msg_summary *s);
void sbx_msg_summary_clear(struct sbx_msg_summary *s);
/* The summary as Mailpit's MessageSummary JSON object (ID, MessageID,
 * Read, From, To, Cc, Bcc, ReplyTo, Subject, Created, Tags, Size,
 * Attachments, Snippet); `created` is when it was captured. */
int sbx_msg_summary_json(const struct sbx_msg_summary *s, const char *id, bool read,
                         int64_t created, struct buf *out);

/* The decoded octets of part part_id ("1.2", as in Inline[] and
 * Attachments[]) appended to out, its content type ("type/subtype") and
 * file name (UTF-8, "" if none) into fresh strings the caller frees.
 * 0; -1 if there is no such part or out refuses. A caller serving it for
 * download sends Content-Disposition: attachment with the file name as
 * RFC 6266 filename*=UTF-8''..., and X-Content-Type-Options: nosniff. */
int sbx_msg_part(const void *raw, size_t len, const char *part_id, struct buf *out,
                 char **content_type_r, char **filename_r);

/* The HTML part (UTF-8) rewritten as the comment at the top says, into
 * out. 1 done, 0 when the message has no HTML part, -1 if out refuses. */
int sbx_msg_html(const void *raw, size_t len, bool allow_remote, struct buf *out);

/* Mailpit's /api/v1/message/{ID}/headers: the top-level header fields as
 * {"Name": ["value", ...]}, names in Go's canonical form ("Message-Id"),
 * sorted, values unfolded and trimmed in order of appearance, at most
 * SBX_MAX_FIELDS fields. 0, or -1 if out refuses. */
int sbx_msg_headers_json(const void *raw, size_t len, struct buf *out);

/* The MIME tree, depth-first, for the UI:
 *  {"Parts": [{"PartID", "Parent" (null for "0"), "Depth", "Children",
 *    "ContentType", "Charset", "Encoding", "Disposition" ("", "inline",
 *    "attachment"), "FileName", "ContentID", "Size" (decoded; 0 for a
 *    multipart)}], "Warnings": ["depth", "parts", "no-boundary",
 *    "no-close-delimiter", "no-body-separator"]}. 0, or -1. */
int sbx_msg_parts_json(const void *raw, size_t len, struct buf *out);

/* The checks as one JSON object:
 *  {"size": n, "warnings": [{"check": "size"|"line-length"|"header",
 *     "severity": "warning"|"error", "text": "..."}],
 *   "maxLineLength": n, "linesOver998": n, "linesOver78": n,
 *   "missingHeaders": ["Date", "Message-ID", "From"],
 *   "links": [{"url": "...", "text": "...", "source": "html"|"text",
 *     "malformed": bool, "reason": "..."}], "linksTruncated": bool,
 *   "authResults": null | {"authservId": "...", "spf": [R], "dkim": [R],
 *     "dmarc": [R], "arc": [R]},
 *   "spam": null | {"header": "X-Spamd-Result", "score": 7.0|null,
 *     "threshold": 15.0|null, "isSpam": bool|null}}
 * where "spam" is the content filter's verdict as its milter wrote it
 * (rspamd's X-Spamd-Result, X-Spam-Status, X-Spam-Score, X-Rspamd-Score,
 * X-Spam: the first present), and R is {"result": "pass", "reason": "..."|null, "props":
 * {"smtp.mailfrom": "...", ...}}, from the first (topmost)
 * Authentication-Results field (RFC 8601 §2.2). 0, or -1 if out refuses. */
int sbx_msg_check(const void *raw, size_t len, struct buf *out);

#endif
