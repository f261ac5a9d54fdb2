/* mime.h — a bounded MIME parser (RFC 2045, 2046, 2047, 2231) over the bytes
 * of one message, for the mail sandbox's message inspection
 * (obs/sandbox_msg.c). Pure: no I/O besides the bytes it is given, no
 * globals. Every input is hostile (captured mail from anyone).
 *
 * Bounds: nesting depth MIME_MAX_DEPTH (a multipart or message/rfc822
 * deeper than that is kept as one opaque leaf and MIME_W_DEPTH is set),
 * MIME_MAX_PARTS entities (later ones are dropped, MIME_W_PARTS), an
 * unfolded header field is cut at MIME_MAX_FIELD octets, a boundary is at
 * most MIME_MAX_BOUNDARY octets. Each nesting level scans only its own
 * range once, so the work is at most MIME_MAX_DEPTH passes over the input.
 *
 * Part IDs are dotted numbers as Mailpit (enmime) gives them: the message
 * itself is "0", the children of a top-level multipart are "1", "2", and
 * theirs "1.1", "1.2", ... The entity inside a message/rfc822 part "2" is
 * "2.0", and the children of that entity (if multipart) "2.1", "2.2"
 * (IMAP's numbering, RFC 3501 §6.4.5). IDs depend only on the structure,
 * so they are stable across parses. */
#ifndef HK_MAIL_MIME_H
#define HK_MAIL_MIME_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

#define MIME_MAX_DEPTH 16
#define MIME_MAX_PARTS 512
#define MIME_MAX_FIELD 65536  /* one unfolded header field */
#define MIME_MAX_BOUNDARY 200 /* RFC 2046 §5.1.1 says 70; be lenient */
#define MIME_MAX_PARAM 4096   /* one parameter value, decoded */
#define MIME_ID_MAX 96

/* Warnings (struct mime_msg.warn): the parse went on, with a fallback. */
#define MIME_W_DEPTH 0x01       /* nesting deeper than MIME_MAX_DEPTH */
#define MIME_W_PARTS 0x02       /* more than MIME_MAX_PARTS entities */
#define MIME_W_NO_BOUNDARY 0x04 /* multipart without a usable boundary */
#define MIME_W_NO_CLOSE 0x08    /* close-delimiter missing (RFC 2046 §5.1.1) */
#define MIME_W_NO_BODY_SEP 0x10 /* header section without its empty line */

enum mime_cte {
	MIME_CTE_7BIT = 0,
	MIME_CTE_8BIT,
	MIME_CTE_BINARY,
	MIME_CTE_QP,
	MIME_CTE_BASE64,
	MIME_CTE_OTHER, /* unknown: the body is passed on undecoded */
};

enum mime_disp {
	MIME_DISP_NONE = 0,
	MIME_DISP_INLINE,
	MIME_DISP_ATTACHMENT,
};

struct mime_part {
	char id[MIME_ID_MAX];
	int parent;     /* index in mime_msg.parts, -1 for the message */
	unsigned depth; /* 0 for the message */
	unsigned nchild;
	/* Views into the message: the header section (without the empty
	 * line) and the body as sent (still transfer-encoded). */
	size_t hdr_off, hdr_len;
	size_t body_off, body_len;
	/* "type/subtype", lowercased; "text/plain" when absent or invalid
	 * (RFC 2045 §5.2), "message/rfc822" by default in multipart/digest. */
	char type[128];
	char charset[48]; /* lowercased; "" when not given */
	enum mime_cte cte;
	enum mime_disp disp;
	bool is_multipart; /* parsed into children */
	bool is_message;   /* message/rfc822 parsed into one child */
	char *filename;    /* UTF-8, from filename= or name=, NULL if none */
	char *content_id;  /* without <>, NULL if none */
};

struct mime_msg {
	const char *raw;
	size_t len;
	struct mime_part *parts; /* parts[0] is the message; depth-first order */
	size_t nparts;
	unsigned warn; /* MIME_W_* */
};

/* Parse raw[0..len) (kept by reference: it must outlive the result).
 * Never fails on content: malformed input gives a best-effort tree and
 * warn bits. */
struct mime_msg *mime_parse(const void *raw, size_t len);
void mime_msg_free(struct mime_msg **m);
/* The part with this ID, or NULL. */
const struct mime_part *mime_part_by_id(const struct mime_msg *m, const char *id);

/* The body of p with its Content-Transfer-Encoding undone, appended to
 * out. -1 only if out refuses (its max). Lenient: base64 skips octets
 * outside the alphabet, quoted-printable keeps a malformed '=' as is. */
int mime_part_decode(const struct mime_msg *m, const struct mime_part *p, struct buf *out);
/* The same, then converted from the part's charset to UTF-8. */
int mime_part_text(const struct mime_msg *m, const struct mime_part *p, struct buf *out);

/* Transfer decodings over (ptr, len) (RFC 2045 §6.7, §6.8). */
int mime_qp_decode(const char *in, size_t len, struct buf *out);
int mime_b64_decode(const char *in, size_t len, struct buf *out);

/* in[0..len) in charset to UTF-8 appended to out. UTF-8 and US-ASCII are
 * checked here, ISO-8859-1 and windows-1252 are read here as
 * windows-1252 (as the WHATWG Encoding Standard does); others go through
 * iconv(3). Invalid or truncated input becomes U+FFFD. An unknown charset
 * (or one iconv cannot load: it needs the C library's gconv modules) passes
 * valid UTF-8 through and reads anything else as windows-1252. */
int mime_to_utf8(const char *charset, const void *in, size_t len, struct buf *out);

/* The first field called name in the header section hdr[0..len), unfolded
 * (RFC 5322 §2.2.3: CRLF before WSP removed), leading and trailing WSP
 * trimmed, cut at MIME_MAX_FIELD. 1 if found, 0 if not, -1 if out refuses. */
int mime_hdr_get(const char *hdr, size_t len, const char *name, struct buf *out);
/* An unstructured header value with its RFC 2047 encoded-words decoded
 * (whitespace between adjacent encoded-words dropped, §6.2), as UTF-8. */
int mime_decode_words(const char *v, size_t len, struct buf *out);
/* A parameter of a Content-Type or Content-Disposition value: RFC 2231
 * continuations (name*0, name*1*) and charset'lang'%XX values, else the
 * plain name= (quoted-string unquoted, RFC 2047 words decoded as mail
 * programs send them in filenames). UTF-8 into out. 1 found, 0 not, -1. */
int mime_param_get(const char *v, size_t len, const char *name, struct buf *out);

#endif
