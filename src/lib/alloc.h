/* alloc.h — allocation wrappers that abort on out-of-memory.
 * Any process. Callers never check for NULL (STYLE.md). */
#ifndef HK_LIB_ALLOC_H
#define HK_LIB_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);

#endif
