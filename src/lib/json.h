/* json.h — writing JSON strings into a struct buf.
 * One escaper for every JSON producer (the CLI's --json, the HTTP API):
 * invalid UTF-8 becomes U+FFFD, C0/C1 controls and DEL are \u-escaped, and
 * '<', '>', '&' are escaped too so that a string is safe to embed in HTML. */
#ifndef HK_LIB_JSON_H
#define HK_LIB_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

/* Length of the valid UTF-8 sequence at p (RFC 3629 §4), 0 if invalid. */
size_t json_utf8_len(const uint8_t *p, size_t len);
/* Append p[0..len) as a quoted JSON string. -1 if the buffer's max is hit. */
int json_append_str(struct buf *b, const void *p, size_t len);
/* The same for a NUL-terminated string; NULL writes null. */
int json_append_cstr(struct buf *b, const char *s);

#endif
