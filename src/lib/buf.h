/* buf.h — the one growable byte buffer (len, cap, max).
 * Binary-safe and overflow-checked; appends that would pass max fail with -1
 * and leave the buffer unchanged, so a hostile peer cannot grow it unbounded.
 * The data is always NUL-terminated one past len for convenience. */
#ifndef HK_LIB_BUF_H
#define HK_LIB_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	unsigned char *data;
	size_t len;
	size_t cap;
	size_t max; /* 0 means SIZE_MAX */
};

void buf_init(struct buf *b, size_t max);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_append_byte(struct buf *b, unsigned char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drop n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Transfer ownership of the storage; the buffer is left empty. */
unsigned char *buf_steal(struct buf *b, size_t *len_r);
static inline const char *buf_cstr(const struct buf *b)
{
	return b->data != NULL ? (const char *)b->data : "";
}

#endif
