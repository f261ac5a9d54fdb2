/* alloc.c — allocation wrappers that abort on out-of-memory.
 * Running out of memory in an MTA is not recoverable per call site; the
 * master restarts the process and the spool keeps what was acknowledged. */
#include "lib/alloc.h"
#include "lib/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void alloc_die(size_t n)
{
	log_flush(); /* the lines that led here first; allocates nothing */
	fprintf(stderr, "hikyaku: out of memory allocating %zu bytes\n", n);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		alloc_die(n);
	return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
	if (p == NULL)
		alloc_die(nmemb * size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		alloc_die(n);
	return q;
}

void *xreallocarray(void *p, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > (size_t)-1 / size)
		alloc_die((size_t)-1);
	return xrealloc(p, nmemb * size);
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *d = xmalloc(len + 1);
	memcpy(d, s, len);
	d[len] = '\0';
	return d;
}

void *xmemdup(const void *p, size_t n)
{
	void *d = xmalloc(n);
	if (n > 0)
		memcpy(d, p, n);
	return d;
}
