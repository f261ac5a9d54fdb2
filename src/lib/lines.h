/* lines.h — a bounded line reader for small local text files (the users
 * and aliases files): one line at a time without its "\n" or "\r\n", a
 * bound on the length of a line and, optionally, on the number of lines,
 * and the line number kept for "path:line: message" errors. Blocking
 * stdio; any process.
 *
 * The octets of a line are wiped when the next one is read and when the
 * reader is closed, so a file of secrets (users) leaves nothing behind in
 * the reader's buffer. */
#ifndef HK_LIB_LINES_H
#define HK_LIB_LINES_H

#include <stddef.h>
#include <stdio.h>

struct lines {
	FILE *f;
	const char *path; /* the caller's; for messages */
	char *buf;        /* max_len + 2 octets: the line, its '\r', a NUL */
	size_t used;      /* octets of buf holding the last line, wiped next */
	size_t max_len;   /* octets of a line, without the line ending */
	size_t max_lines; /* 0: no limit */
	size_t lineno;    /* the line last returned, or the one that failed */
};

/* Open path for reading. Returns 0, or -1 with "path: cannot open: reason"
 * in err (err may be NULL). path must outlive the reader. */
int lines_open(struct lines *l, const char *path, size_t max_len, size_t max_lines, char *err,
               size_t errlen);
/* The next line: 1 with *line_r (NUL-terminated, len octets, valid until the
 * next call) and l->lineno its number; 0 at the end of the file; -1 with
 * "path:N: line longer than M octets", "path:N: more than M lines" or
 * "path:N: <read error>" in err. A last line without "\n" counts. */
int lines_next(struct lines *l, char **line_r, size_t *len_r, char *err, size_t errlen);
/* "path:line: message" into err (err may be NULL). */
void lines_error(const struct lines *l, size_t line, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Close the file and wipe and free the buffer; l may be closed twice. */
void lines_close(struct lines *l);

#endif
