/* test_lines.c — the bounded line reader (src/lib/lines.c): line endings,
 * the length and count bounds at and just past their limits, line numbers
 * in errors, read errors, and the wiping of lines already read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/lines.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))
#define MAX_LEN 8

struct lines_case {
	const char *name;
	const char *in;
	size_t in_len; /* 0: strlen(in) */
	size_t max_lines;
	const char *want[4]; /* the lines, in order; NULL ends (at most 3) */
	const char *error;   /* NULL: the file ends cleanly; else after "path:" */
	size_t first_len;    /* of want[0] when it holds a NUL; 0: strlen */
};

static const struct lines_case cases[] = {
    {.name = "empty file", .in = ""},
    {.name = "LF", .in = "a\nb\n", .want = {"a", "b"}},
    {.name = "CRLF, last line without an ending", .in = "a\r\nb", .want = {"a", "b"}},
    {.name = "empty lines count", .in = "\n\r\n\n", .want = {"", "", ""}},
    {.name = "a CR inside a line is kept", .in = "a\rb\n", .want = {"a\rb"}},
    {.name = "a final CR at the end of the file goes", .in = "a\r", .want = {"a"}},
    {.name = "NUL octets are data", .in = "a\0b\n", .in_len = 4, .want = {"a\0b"}, .first_len = 3},
    {.name = "exactly max_len", .in = "12345678\n", .want = {"12345678"}},
    {.name = "exactly max_len, CRLF", .in = "12345678\r\n", .want = {"12345678"}},
    {.name = "exactly max_len, no ending", .in = "12345678", .want = {"12345678"}},
    {.name = "max_len + 1", .in = "123456789\n", .error = "1: line longer than 8 octets"},
    {.name = "max_len + 1, no ending", .in = "123456789", .error = "1: line longer than 8 octets"},
    {.name = "max_len + 1 with a CR",
     .in = "12345678\rx\n",
     .error = "1: line longer than 8 octets"},
    {.name = "long line numbered",
     .in = "ok\n\n1234567890123\r\nnever\n",
     .want = {"ok", ""},
     .error = "3: line longer than 8 octets"},
    {.name = "max_lines reached exactly", .in = "a\nb\n", .max_lines = 2, .want = {"a", "b"}},
    {.name = "max_lines reached, no ending", .in = "a\nb", .max_lines = 2, .want = {"a", "b"}},
    {.name = "max_lines + 1",
     .in = "a\nb\nc\n",
     .max_lines = 2,
     .want = {"a", "b"},
     .error = "3: more than 2 lines"},
    {.name = "max_lines + 1 empty line",
     .in = "a\n\n",
     .max_lines = 1,
     .want = {"a"},
     .error = "2: more than 1 lines"},
};

static char tmpdir[64];

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void run_case(const struct lines_case *c)
{
	char path[128], err[256], want_err[256];
	struct lines l;
	char *line;
	size_t len, i = 0, in_len = c->in_len != 0 ? c->in_len : strlen(c->in);
	int rc;

	snprintf(path, sizeof(path), "%s/f", tmpdir);
	write_file(path, c->in, in_len);
	assert_int_equal(lines_open(&l, path, MAX_LEN, c->max_lines, err, sizeof(err)), 0);
	err[0] = '\0';
	while ((rc = lines_next(&l, &line, &len, err, sizeof(err))) > 0) {
		if (i >= N_ELEMENTS(c->want) || c->want[i] == NULL)
			fail_msg("%s: unexpected line %zu \"%s\"", c->name, i + 1, line);
		size_t want_len = i == 0 && c->first_len != 0 ? c->first_len : strlen(c->want[i]);
		if (len != want_len || memcmp(line, c->want[i], len) != 0 || line[len] != '\0')
			fail_msg("%s: line %zu is \"%s\" (%zu octets)", c->name, i + 1, line, len);
		assert_int_equal(l.lineno, i + 1);
		i++;
	}
	if (i < N_ELEMENTS(c->want) && c->want[i] != NULL)
		fail_msg("%s: only %zu lines", c->name, i);
	if (c->error == NULL) {
		if (rc != 0)
			fail_msg("%s: rc=%d err=%s", c->name, rc, err);
		assert_string_equal(err, "");
		assert_int_equal(lines_next(&l, &line, &len, err, sizeof(err)),
		                 0); /* stays at EOF */
	} else {
		snprintf(want_err, sizeof(want_err), "%s:%s", path, c->error);
		if (rc != -1 || strcmp(err, want_err) != 0)
			fail_msg("%s: rc=%d err=%s, want %s", c->name, rc, err, want_err);
	}
	lines_close(&l);
	lines_close(&l); /* twice is harmless */
	assert_null(l.buf);
	assert_null(l.f);
	unlink(path);
}

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++)
		run_case(&cases[i]);
}

/* A line is wiped from the buffer once the next one is asked for. */
static void test_wipes_lines(void **state)
{
	(void)state;
	char path[128], err[256];
	struct lines l;
	char *line;
	size_t len;

	snprintf(path, sizeof(path), "%s/secret", tmpdir);
	write_file(path, "pass1234\r\n", 10);
	assert_int_equal(lines_open(&l, path, MAX_LEN, 0, err, sizeof(err)), 0);
	assert_int_equal(lines_next(&l, &line, &len, err, sizeof(err)), 1);
	assert_string_equal(line, "pass1234");
	assert_int_equal(lines_next(&l, &line, &len, err, sizeof(err)), 0);
	for (size_t i = 0; i < MAX_LEN + 2; i++)
		assert_int_equal(l.buf[i], 0);
	lines_close(&l);
	unlink(path);
}

static void test_open_and_read_errors(void **state)
{
	(void)state;
	char path[128], err[256], want[256];
	struct lines l;
	char *line;
	size_t len;

	snprintf(path, sizeof(path), "%s/missing", tmpdir);
	assert_int_equal(lines_open(&l, path, MAX_LEN, 0, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
	assert_string_equal(err, want);
	assert_null(l.buf);
	lines_close(&l);
	assert_int_equal(lines_open(&l, path, MAX_LEN, 0, NULL, 0), -1); /* err is optional */

	/* a directory opens, then fails to read: line 0, no line read */
	assert_int_equal(lines_open(&l, tmpdir, MAX_LEN, 0, err, sizeof(err)), 0);
	assert_int_equal(lines_next(&l, &line, &len, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:0: Is a directory", tmpdir);
	assert_string_equal(err, want);
	lines_close(&l);
}

/* lines_error formats "path:line: message" and truncates safely. */
static void test_error_format(void **state)
{
	(void)state;
	struct lines l = {.path = "/etc/x"};
	char err[16];

	lines_error(&l, 12, err, sizeof(err), "bad %s", "thing");
	assert_string_equal(err, "/etc/x:12: bad "); /* 15 octets and the NUL */
	lines_error(&l, 12, err, 4, "bad");
	assert_string_equal(err, "/et");
	lines_error(&l, 1, NULL, 0, "nothing written");
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hk_test_lines_XXXXXX");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_wipes_lines),
	    cmocka_unit_test(test_open_and_read_errors),
	    cmocka_unit_test(test_error_format),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
