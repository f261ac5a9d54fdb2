/* test_aliases.c — table-driven tests of the aliases file
 * (src/conf/aliases.c): parse errors with their line numbers, exact and
 * catch-all lookups, "+tag", recursion, loops, deduplication,
 * self-reference and limits. Hermetic: files live in a mkdtemp() dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/aliases.h"
#include "lib/alloc.h"
#include "lib/buf.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static char test_dir[256];
static char test_path[512];

static int test_dir_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	snprintf(test_dir, sizeof(test_dir), "%s/hk-aliases-XXXXXX",
	         tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	if (mkdtemp(test_dir) == NULL)
		return -1;
	snprintf(test_path, sizeof(test_path), "%s/aliases", test_dir);
	return 0;
}

static int test_dir_teardown(void **state)
{
	(void)state;
	unlink(test_path);
	return rmdir(test_dir);
}

static int test_load(const char *text, size_t len, struct aliases **a, char *err, size_t errlen)
{
	FILE *f = fopen(test_path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return aliases_load(test_path, a, err, errlen);
}

struct parse_case {
	const char *text;
	size_t line;      /* 0: loads; else the line the error names */
	const char *what; /* substring of the error */
	size_t count;
	size_t len; /* 0: strlen(text) */
};

static const struct parse_case parse_cases[] = {
    {"", 0, NULL, 0, 0},
    {"# only a comment\n\n   \n", 0, NULL, 0, 0},
    {"a@d: b@d\n", 0, NULL, 1, 0},
    {"a@d: b@d\r\n@d: c@d\n", 0, NULL, 2, 0},
    {"a@d: b@d,\n   c@x.example,\n\td@d\n", 0, NULL, 1, 0},
    {"A@D : b@d , c@d\n", 0, NULL, 1, 0},
    {"a@d: b@d\n# c\n  # indented comment\nb@d: c@d\n", 0, NULL, 2, 0},
    {"a@d b@d\n", 1, "missing ':'", 0, 0},
    {"a@d: b@d\nnoat: b@d\n", 2, "exactly one '@'", 0, 0},
    {"@: b@d\n", 1, "needs a domain", 0, 0},
    {"@d@e: b@d\n", 1, "bad character", 0, 0},
    {": b@d\n", 1, "empty alias", 0, 0},
    {"a@d:\n", 1, "without targets", 0, 0},
    {"a@d: ,\n", 1, "without targets", 0, 0},
    {"\n\na@d: b@d\nx@d: b@d\nA@d: c@d\n", 5, "first on line 3", 0, 0},
    {"  b@d\n", 1, "continuation line", 0, 0},
    {"a@d: b@d, not an address\n", 1, "bad target", 0, 0},
    {"a@d: b@d, nodomain\n", 1, "bad target", 0, 0},
    {"a@d: b@d\n  <c@d>\n", 2, "bad target", 0, 0},
    {"a@d: b@d\0x\n", 1, "NUL", 0, 11},
    {"a@d: b@d\n\xff@d: b@d\n", 0, NULL, 2, 0}, /* users_name_check allows 8-bit */
};

static void test_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct aliases *a = NULL;
		char err[512], want[600];
		size_t len = c->len != 0 ? c->len : strlen(c->text);
		int rc = test_load(c->text, len, &a, err, sizeof(err));
		if (c->line == 0) {
			if (rc != 0)
				fail_msg("case %zu: %s", i, err);
			assert_int_equal(aliases_count(a), c->count);
		} else {
			assert_int_equal(rc, -1);
			assert_null(a);
			snprintf(want, sizeof(want), "%s:%zu: ", test_path, c->line);
			if (strncmp(err, want, strlen(want)) != 0 || strstr(err, c->what) == NULL)
				fail_msg("case %zu: got \"%s\", want \"%s...%s\"", i, err, want,
				         c->what);
		}
		aliases_free(&a);
		assert_null(a);
	}
}

static void test_parse_long_line(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	buf_append_str(&b, "a@d: b@d\n");
	buf_append_str(&b, "x@d: ");
	for (size_t i = 0; i < 4200; i++)
		buf_append(&b, " ", 1);
	buf_append_str(&b, "y@d\n");
	struct aliases *a = NULL;
	char err[512];
	assert_int_equal(test_load((const char *)b.data, b.len, &a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":2: line longer"));
	buf_free(&b);
	/* more than 1000 targets under one key */
	buf_init(&b, 0);
	buf_append_str(&b, "big@d: t0@d\n");
	for (size_t i = 1; i <= 1000; i++) {
		char t[32];
		int n = snprintf(t, sizeof(t), " t%zu@d\n", i);
		buf_append(&b, t, (size_t)n);
	}
	assert_int_equal(test_load((const char *)b.data, b.len, &a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":1001: more than 1000"));
	buf_free(&b);
}

/* Expansion cases against one file. */
static const char expand_file[] =
    "# the test file\n"
    "team@d: alice@d, bob@d\n"
    "all@d: team@d, carol@d, Alice@D\n"
    "alice@d: alice@d, archive@d\n"
    "tagged+x@d: special@d\n"
    "tagged@d: plain@d\n"
    "remote@d: someone@far.example\n"
    "@d: catch@d\n"
    "@e: x@d, other@e\n"
    "loop1@d: loop2@d\n"
    "loop2@d: loop3@d\n"
    "loop3@d: loop1@d\n"
    "selfloop@d: selfloop+t@d, z@d\n"
    "deep0@d: deep1@d\ndeep1@d: deep2@d\ndeep2@d: deep3@d\ndeep3@d: deep4@d\n"
    "deep4@d: deep5@d\ndeep5@d: deep6@d\ndeep6@d: deep7@d\ndeep7@d: deep8@d\n"
    "deep8@d: deep9@d\ndeep9@d: deep10@d\ndeep10@d: deep11@d\ndeep11@d: end@d\n"
    "ok0@d: ok1@d\nok1@d: ok2@d\nok2@d: ok3@d\nok3@d: ok4@d\nok4@d: ok5@d\n"
    "ok5@d: ok6@d\nok6@d: ok7@d\nok7@d: ok8@d\nok8@d: ok9@d\nok9@d: ok10@d\n"
    "ok10@d: fin@d\n"
    "diamond@d: team@d, all@d, bob@d\n";

struct expand_case {
	const char *addr;
	bool has, exact;
	const char *want; /* "a b c" expected targets in order, or NULL: error */
	const char *error;
};

static const struct expand_case expand_cases[] = {
    {"nobody@x", false, false, "nobody@x", NULL},
    {"team@d", true, true, "alice@d archive@d bob@d", NULL},
    {"TEAM@D", true, true, "alice@d archive@d bob@d", NULL},
    {"team+news@d", true, true, "alice@d archive@d bob@d", NULL},
    {"all@d", true, true, "alice@d archive@d bob@d carol@d", NULL},
    {"alice@d", true, true, "alice@d archive@d", NULL},
    {"tagged+x@d", true, true, "special@d", NULL},
    {"tagged+y@d", true, true, "plain@d", NULL},
    {"remote@d", true, true, "someone@far.example", NULL},
    {"unknown@d", true, false, "catch@d", NULL},
    {"unknown+t@d", true, false, "catch@d", NULL},
    {"q@e", true, false, "x@d other@e", NULL}, /* catch-all not applied to targets */
    {"loop1@d", true, true, NULL, "alias loop"},
    {"loop3@d", true, true, NULL, "alias loop"},
    {"selfloop@d", true, true, "selfloop+t@d z@d", NULL},
    {"deep0@d", true, true, NULL, "alias loop"},
    {"ok0@d", true, true, "fin@d", NULL},
    {"diamond@d", true, true, "alice@d archive@d bob@d carol@d", NULL},
};

static void test_expand(void **state)
{
	(void)state;
	struct aliases *a = NULL;
	char err[512];
	if (test_load(expand_file, sizeof(expand_file) - 1, &a, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	for (size_t i = 0; i < N_ELEMENTS(expand_cases); i++) {
		const struct expand_case *c = &expand_cases[i];
		char **t = NULL;
		size_t n = 99;
		const char *error = NULL;
		if (aliases_has(a, c->addr) != c->has || aliases_has_exact(a, c->addr) != c->exact)
			fail_msg("case %zu (%s): has/exact", i, c->addr);
		int rc = aliases_expand(a, c->addr, &t, &n, &error);
		if (c->want == NULL) {
			if (rc != -1 || t != NULL || n != 0 || strcmp(error, c->error) != 0)
				fail_msg("case %zu (%s): want error %s", i, c->addr, c->error);
			continue;
		}
		assert_int_equal(rc, 0);
		char got[1024] = "";
		size_t off = 0;
		for (size_t j = 0; j < n; j++)
			off += (size_t)snprintf(got + off, sizeof(got) - off, "%s%s", j ? " " : "",
			                        t[j]);
		if (strcmp(got, c->want) != 0)
			fail_msg("case %zu (%s): got \"%s\", want \"%s\"", i, c->addr, got,
			         c->want);
		aliases_targets_free(&t, n);
		assert_null(t);
	}
	aliases_free(&a);
	/* NULL table: nothing is an alias, an address expands to itself */
	char **t = NULL;
	size_t n = 0;
	assert_false(aliases_has(NULL, "a@d"));
	assert_int_equal(aliases_expand(NULL, "a@d", &t, &n, NULL), 0);
	assert_int_equal(n, 1);
	aliases_targets_free(&t, n);
}

/* 30 aliases of 40 distinct targets each under one: more than 1000. */
static void test_expand_limit(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	for (size_t list = 0; list < 30; list++) {
		char line[64];
		int k = snprintf(line, sizeof(line), "%stop@d: l%zu@d\n", list ? "  " : "", list);
		if (list > 0)
			k = snprintf(line, sizeof(line), "  l%zu@d\n", list);
		buf_append(&b, line, (size_t)k);
	}
	for (size_t list = 0; list < 30; list++) {
		char line[64];
		int k = snprintf(line, sizeof(line), "l%zu@d: m%zu_0@d\n", list, list);
		buf_append(&b, line, (size_t)k);
		for (size_t j = 1; j < 40; j++) {
			k = snprintf(line, sizeof(line), "  m%zu_%zu@d\n", list, j);
			buf_append(&b, line, (size_t)k);
		}
	}
	struct aliases *a = NULL;
	char err[512];
	if (test_load((const char *)b.data, b.len, &a, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	buf_free(&b);
	char **t = NULL;
	size_t n = 0;
	const char *error = NULL;
	struct {
		const char *addr;
		int rc;
		size_t n;
	} cases[] = {{"l0@d", 0, 40}, {"top@d", -1, 0}};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		assert_int_equal(aliases_expand(a, cases[i].addr, &t, &n, &error), cases[i].rc);
		assert_int_equal(n, cases[i].n);
		if (cases[i].rc < 0)
			assert_string_equal(error, "too many alias targets");
		aliases_targets_free(&t, n);
	}
	aliases_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_parse_long_line),
	    cmocka_unit_test(test_expand),
	    cmocka_unit_test(test_expand_limit),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
