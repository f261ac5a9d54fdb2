/* base64.h — RFC 4648 §4 base64, strict decoding (SMTP AUTH, RFC 4954 §4).
 * Pure; any process. */
#ifndef HK_LIB_BASE64_H
#define HK_LIB_BASE64_H

#include <stddef.h>

#include "lib/buf.h"

int base64_encode(const unsigned char *in, size_t len, struct buf *out);
/* Padding required; no whitespace; -1 on any invalid input or if out refuses. */
int base64_decode(const char *in, size_t len, struct buf *out);

#endif
