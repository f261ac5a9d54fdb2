/* test_web.c — the embedded front-end files (obs/web.h): the generated
 * table (sorted, typed, tagged), the URL routes, If-None-Match matching
 * (RFC 9110 §13.1.2) and the answers' fields (200, 304, HEAD). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/buffer.h>

#include "obs/web.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_table(void **state)
{
	(void)state;
	assert_true(web_n_files >= 3);
	for (size_t i = 0; i < web_n_files; i++) {
		const struct web_file *f = &web_files[i];
		if (i > 0)
			assert_true(strcmp(web_files[i - 1].path, f->path) < 0);
		assert_non_null(f->type);
		/* strong, quoted, 32 hex digits */
		assert_int_equal(strlen(f->etag), 34);
		assert_int_equal(f->etag[0], '"');
		assert_int_equal(f->etag[33], '"');
		assert_ptr_equal(web_find(f->path), f);
	}
	const struct web_file *ix = web_find("sandbox/index.html");
	assert_non_null(ix);
	assert_string_equal(ix->type, "text/html; charset=utf-8");
	assert_true(ix->len > 0 && memmem(ix->data, ix->len, "<html", 5) != NULL);
	const struct web_file *js = web_find("sandbox/assets/app.js");
	assert_non_null(js);
	assert_string_equal(js->type, "text/javascript; charset=utf-8");
	assert_string_not_equal(js->etag, ix->etag);
	assert_null(web_find("sandbox/nope.html"));
	assert_null(web_find(""));
}

static void test_route(void **state)
{
	(void)state;
	assert_ptr_equal(web_route("/", true), web_find("sandbox/index.html"));
	assert_null(web_route("/", false)); /* only on a sandbox listener */
	assert_false(web_is_path("/", false));
	assert_true(web_is_path("/", true));
	assert_ptr_equal(web_route("/assets/app.js", false), web_find("sandbox/assets/app.js"));
	assert_ptr_equal(web_route("/assets/app.css", true), web_find("sandbox/assets/app.css"));
	assert_null(web_route("/assets/", true));
	assert_null(web_route("/assets/../index.html", true));
	assert_null(web_route("/assets/app.js/", true));
	assert_null(web_route("/index.html", true));
	assert_null(web_route("/sandbox/index.html", true));
	assert_null(web_route("/api/v1/messages", true));
	assert_false(web_is_path("/api/v1/messages", true));
	assert_false(web_is_path("/metrics", true));
	assert_true(web_is_path("/assets/x", false));
	assert_true(web_is_path("/dashboard", false));
	assert_true(web_is_path("/dashboard/", false));
	assert_false(web_is_path("/dashboardx", false));
	char longp[600];
	memset(longp, 'a', sizeof(longp));
	memcpy(longp, "/assets/", 8);
	longp[sizeof(longp) - 1] = '\0';
	assert_null(web_route(longp, true));
}

struct inm_case {
	const char *field;
	bool match;
};

static void test_etag_match(void **state)
{
	(void)state;
	const char *tag = "\"0123abcd\"";
	static const struct inm_case cases[] = {
	    {"\"0123abcd\"", true},
	    {"W/\"0123abcd\"", true}, /* weak comparison */
	    {"\"x\", \"0123abcd\"", true},
	    {"\"x\",\"0123abcd\"", true},
	    {"  \"0123abcd\"  ", true},
	    {"*", true},
	    {" * ", true},
	    {"", false},
	    {"\"0123abcd", false},
	    {"0123abcd", false},
	    {"\"0123abc\"", false},
	    {"\"0123abcde\"", false},
	    {"\"0123abcd\"x", false},
	    {"*, \"0123abcd\"", false},
	    {"W/", false},
	    {"W/0123abcd", false},
	    {"\"a\" \"0123abcd\"", true},
	    {",,,", false},
	};
	for (size_t i = 0; i < N(cases); i++) {
		bool m = web_etag_match(cases[i].field, strlen(cases[i].field), tag);
		if (m != cases[i].match)
			fail_msg("If-None-Match: %s: %d", cases[i].field, m);
	}
}

static char *drain(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);
	evbuffer_remove(b, s, n);
	s[n] = '\0';
	return s;
}

static void test_respond(void **state)
{
	(void)state;
	const struct web_file *f = web_find("sandbox/index.html");
	struct evbuffer *b = evbuffer_new();
	assert_int_equal(web_respond(b, f, false, NULL, 0, false), 200);
	char *s = drain(b);
	assert_non_null(strstr(s, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(s, "Content-Type: text/html; charset=utf-8\r\n"));
	char want[128];
	snprintf(want, sizeof(want), "Content-Length: %zu\r\n", f->len);
	assert_non_null(strstr(s, want));
	snprintf(want, sizeof(want), "ETag: %s\r\n", f->etag);
	assert_non_null(strstr(s, want));
	assert_non_null(strstr(s, "Cache-Control: no-cache\r\n"));
	assert_non_null(strstr(s, "X-Content-Type-Options: nosniff\r\n"));
	assert_non_null(strstr(s, "X-Frame-Options: DENY\r\n"));
	assert_non_null(strstr(s, "frame-ancestors 'none'"));
	assert_non_null(strstr(s, "Content-Security-Policy: default-src 'self'"));
	assert_null(strstr(s, "unsafe-inline"));
	assert_null(strstr(s, "unsafe-eval"));
	assert_null(strstr(s, "Connection: close"));
	char *body = strstr(s, "\r\n\r\n");
	assert_non_null(body);
	assert_int_equal(strlen(body + 4), f->len);
	assert_memory_equal(body + 4, f->data, f->len);
	free(s);

	/* HEAD: the same fields, no body */
	assert_int_equal(web_respond(b, f, true, NULL, 0, true), 200);
	s = drain(b);
	assert_non_null(strstr(s, want));
	assert_non_null(strstr(s, "Connection: close\r\n"));
	assert_string_equal(strstr(s, "\r\n\r\n"), "\r\n\r\n");
	free(s);

	/* a matching If-None-Match: 304 with the tag, no body */
	assert_int_equal(web_respond(b, f, false, f->etag, strlen(f->etag), false), 304);
	s = drain(b);
	assert_non_null(strstr(s, "HTTP/1.1 304 Not Modified\r\n"));
	assert_non_null(strstr(s, want));
	assert_null(strstr(s, "Content-Length"));
	assert_string_equal(strstr(s, "\r\n\r\n"), "\r\n\r\n");
	free(s);

	/* another file's tag: the whole file */
	const struct web_file *g = web_find("sandbox/assets/app.js");
	assert_int_equal(web_respond(b, f, false, g->etag, strlen(g->etag), false), 200);
	s = drain(b);
	free(s);
	evbuffer_free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_route),
	    cmocka_unit_test(test_etag_match),
	    cmocka_unit_test(test_respond),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
