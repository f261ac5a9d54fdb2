/* sbxquery.h — the pure parsers of the sandbox API (issue 13): the search
 * query (a subset of Mailpit's syntax), the JSON bodies of PUT/DELETE/POST
 * calls, and the message path (/api/v1/message/{ID}/{what}). Runs in the
 * http process; every input is hostile (the HTTP client), every output is
 * bounded. No I/O, no allocation. */
#ifndef HK_OBS_SBXQUERY_H
#define HK_OBS_SBXQUERY_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

#define SBX_QUERY_TERMS_MAX 8
#define SBX_TERM_MAX 256
#define SBX_ID_MAX 64 /* an ID's octets (ours are 16) */
#define SBX_BODY_IDS_MAX 256
#define SBX_BODY_TO_MAX 16
#define SBX_ADDR_MAX 320

enum sbx_field { SBX_F_TEXT, SBX_F_FROM, SBX_F_TO, SBX_F_SUBJECT };

struct sbx_term {
	enum sbx_field field;
	bool neg;                 /* "-term" or "!term" */
	char value[SBX_TERM_MAX]; /* UTF-8, never empty */
};

struct sbx_query {
	struct sbx_term terms[SBX_QUERY_TERMS_MAX];
	size_t n;
	int read; /* -1 any, 0 is:unread, 1 is:read */
};

/* Parse q[0..len): words separated by spaces; a word is [-|!][field:]value
 * where field is from, to, subject (anything else is free text) and value
 * is a bare word or a "quoted phrase"; is:read and is:unread filter on the
 * read flag. 0, or -1 with *error_r (too many terms, a term too long, an
 * unterminated quote, a NUL). */
int sbx_query_parse(const char *q, size_t len, struct sbx_query *out, const char **error_r);

/* The FTS5 MATCH expression of one term into out (NUL-terminated): a
 * column filter and a quoted phrase whose last token is a prefix, quotes
 * doubled ({fromf} : "ali"*). -1 if out is too small. */
int sbx_term_fts(const struct sbx_term *t, char *out, size_t outlen);

/* A JSON request body: {"IDs": [..], "Read": bool, "To": [..]}, other keys
 * skipped (nesting at most 8). */
struct sbx_body {
	char ids[SBX_BODY_IDS_MAX][SBX_ID_MAX + 1];
	size_t n_ids;
	bool has_ids;
	int read; /* -1 absent */
	char to[SBX_BODY_TO_MAX][SBX_ADDR_MAX + 1];
	size_t n_to;
};
int sbx_body_parse(const char *p, size_t len, struct sbx_body *out, const char **error_r);

/* Is s a message ID as the store makes them (1..SBX_ID_MAX of [0-9A-Za-z])? */
bool sbx_id_valid(const char *s, size_t len);

/* After /api/v1/message/: "{ID}" or "{ID}/{what}" (what: raw, headers,
 * check, release, part/{PartID}). id is an ID or "latest"; what "" for the
 * message itself; part the PartID ("1.2": digits and dots). 0 or -1. */
struct sbx_path {
	char id[SBX_ID_MAX + 1];
	char what[16];
	char part[32];
};
int sbx_path_parse(const char *rest, struct sbx_path *out);

#endif
