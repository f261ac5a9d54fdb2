/* lines.c — the bounded line reader of lines.h. Runs wherever a small
 * local text file is loaded (the master, at start and on SIGHUP; the CLI).
 * The files are trusted (root-owned) but still read with bounds: a line
 * longer than max_len, or more than max_lines lines, is an error that names
 * the line, never a silent truncation. */
#include "lib/lines.h"

#include "lib/alloc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int lines_open(struct lines *l, const char *path, size_t max_len, size_t max_lines, char *err,
               size_t errlen)
{
	*l = (struct lines){.path = path, .max_len = max_len, .max_lines = max_lines};
	l->f = fopen(path, "re");
	if (l->f == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	l->buf = xmalloc(max_len + 2);
	return 0;
}

void lines_error(const struct lines *l, size_t line, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err == NULL || errlen == 0)
		return;
	n = snprintf(err, errlen, "%s:%zu: ", l->path, line);
	if (n < 0 || (size_t)n >= errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static int lines_too_long(struct lines *l, char *err, size_t errlen)
{
	lines_error(l, ++l->lineno, err, errlen, "line longer than %zu octets", l->max_len);
	return -1;
}

int lines_next(struct lines *l, char **line_r, size_t *len_r, char *err, size_t errlen)
{
	size_t n = 0;
	int c;

	explicit_bzero(l->buf, l->used);
	while ((c = getc(l->f)) != EOF && c != '\n') {
		if (n == l->max_len + 1) /* room for a '\r' before the '\n', no more */
			return lines_too_long(l, err, errlen);
		l->buf[n++] = (char)c;
		l->used = n;
	}
	l->used = n + 1; /* with the NUL below */
	if (c == EOF && n == 0) {
		if (ferror(l->f)) {
			lines_error(l, l->lineno, err, errlen, "%s", strerror(errno));
			return -1;
		}
		return 0;
	}
	if (n > 0 && l->buf[n - 1] == '\r')
		n--;
	if (n > l->max_len)
		return lines_too_long(l, err, errlen);
	if (l->max_lines != 0 && l->lineno == l->max_lines) {
		lines_error(l, ++l->lineno, err, errlen, "more than %zu lines", l->max_lines);
		return -1;
	}
	l->lineno++;
	l->buf[n] = '\0';
	*line_r = l->buf;
	*len_r = n;
	return 1;
}

void lines_close(struct lines *l)
{
	if (l->f != NULL)
		fclose(l->f);
	l->f = NULL;
	if (l->buf != NULL) {
		explicit_bzero(l->buf, l->max_len + 2);
		free(l->buf);
	}
	l->buf = NULL;
	l->used = 0;
}
