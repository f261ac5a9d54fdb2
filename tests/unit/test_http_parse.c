/* test_http_parse.c — the http process's request parser (obs/http_parse.h):
 * table-driven requests with their results, every one also fed octet by
 * octet (a prefix of a good request is never an error), and the query and
 * percent decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "obs/http_parse.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct req_case {
	const char *name;
	const char *in;
	int rc;     /* 1, 0 or -1 */
	int status; /* for -1 */
	const char *method, *path, *query, *auth;
	bool close;
};

static const struct req_case cases[] = {
    {"simple get", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 1, 0, "GET", "/metrics", "", NULL,
     false},
    {"query and token",
     "GET /api/v1/messages?sender=a%40b HTTP/1.1\r\n"
     "Authorization:  Bearer abc \r\n\r\n",
     1, 0, "GET", "/api/v1/messages", "sender=a%40b", "Bearer abc", false},
    {"http/1.0 closes", "GET / HTTP/1.0\r\n\r\n", 1, 0, "GET", "/", "", NULL, true},
    {"connection close", "GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", 1, 0, "GET", "/", "", NULL,
     true},
    {"1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, 0, "GET", "/", "",
     NULL, false},
    {"body read", "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 1, 0, "POST", "/x", "", NULL,
     false},
    {"body incomplete", "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", 0, 0, NULL, NULL, NULL,
     NULL, false},
    {"incomplete line", "GET /metrics HTTP/1.1\r", 0, 0, NULL, NULL, NULL, NULL, false},
    {"bare lf", "GET / HTTP/1.1\nHost: x\n\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"bare cr", "GET / HTTP/1.1\rX", -1, 400, NULL, NULL, NULL, NULL, false},
    {"space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL,
     false},
    {"obs-fold", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"two if-none-match", "GET / HTTP/1.1\r\nIf-None-Match: \"a\"\r\nif-none-match: \"b\"\r\n\r\n",
     -1, 400, NULL, NULL, NULL, NULL, false},
    {"two content-lengths", "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", -1,
     400, NULL, NULL, NULL, NULL, false},
    {"two authorizations", "GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", -1,
     400, NULL, NULL, NULL, NULL, false},
    {"content-length sign", "GET / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", -1, 400, NULL, NULL,
     NULL, NULL, false},
    {"body too large", "GET / HTTP/1.1\r\nContent-Length: 4097\r\n\r\n", -1, 413, NULL, NULL, NULL,
     NULL, false},
    {"huge content-length", "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", -1,
     413, NULL, NULL, NULL, NULL, false},
    {"chunked", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", -1, 501, NULL, NULL, NULL,
     NULL, false},
    {"http/2", "GET / HTTP/2.0\r\n\r\n", -1, 505, NULL, NULL, NULL, NULL, false},
    {"http/1.2", "GET / HTTP/1.2\r\n\r\n", -1, 505, NULL, NULL, NULL, NULL, false},
    {"not http", "GET / FTP/1.1\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"no path", "GET HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"relative target", "GET metrics HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"control in target", "GET /a\x01 HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"bad method char", "G(T / HTTP/1.1\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
    {"control in value", "GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL,
     false},
    {"empty field name", "GET / HTTP/1.1\r\n: b\r\n\r\n", -1, 400, NULL, NULL, NULL, NULL, false},
};

static void check_case(const struct req_case *c, const char *in, size_t len)
{
	struct http_request req;
	int status = 0;
	int rc = http_parse_request(in, len, &req, &status);
	if (rc != c->rc)
		fail_msg("%s: rc %d, want %d (status %d)", c->name, rc, c->rc, status);
	if (rc < 0) {
		assert_int_equal(status, c->status);
		return;
	}
	if (rc == 0)
		return;
	assert_int_equal(req.used, len);
	assert_true(http_view_eq(req.method, c->method));
	assert_true(http_view_eq(req.path, c->path));
	assert_true(http_view_eq(req.query, c->query));
	if (c->auth == NULL)
		assert_null(req.authorization.p);
	else
		assert_true(http_view_eq(req.authorization, c->auth));
	assert_int_equal(req.close, c->close);
}

static void test_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(cases); i++)
		check_case(&cases[i], cases[i].in, strlen(cases[i].in));
}

/* Every proper prefix of a complete request needs more; never an error. */
static void test_prefixes(void **state)
{
	(void)state;
	for (size_t i = 0; i < N(cases); i++) {
		if (cases[i].rc != 1)
			continue;
		size_t len = strlen(cases[i].in);
		for (size_t n = 0; n < len; n++) {
			struct http_request req;
			int status;
			int rc = http_parse_request(cases[i].in, n, &req, &status);
			if (rc != 0)
				fail_msg("%s: prefix %zu gave %d", cases[i].name, n, rc);
		}
	}
}

/* Two pipelined requests: the first is parsed, used says where the
 * second starts. */
static void test_pipelined(void **state)
{
	(void)state;
	const char *in = "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
	struct http_request req;
	int status;
	assert_int_equal(http_parse_request(in, strlen(in), &req, &status), 1);
	assert_true(http_view_eq(req.path, "/a"));
	assert_int_equal(http_parse_request(in + req.used, strlen(in) - req.used, &req, &status),
	                 1);
	assert_true(http_view_eq(req.path, "/b"));
}

static void test_bounds(void **state)
{
	(void)state;
	static char big[HTTP_LINE_MAX + HTTP_HEADERS_MAX + 64];
	struct http_request req;
	int status;
	/* A request line past HTTP_LINE_MAX without its end: 414 at once. */
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /", 5);
	assert_int_equal(http_parse_request(big, HTTP_LINE_MAX + 1, &req, &status), -1);
	assert_int_equal(status, 414);
	/* A header section past HTTP_HEADERS_MAX: 431. */
	size_t n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX: ");
	memset(big + n, 'b', sizeof(big) - n);
	assert_int_equal(http_parse_request(big, sizeof(big), &req, &status), -1);
	assert_int_equal(status, 431);
	/* More than HTTP_FIELDS_MAX fields: 431. */
	n = (size_t)snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n");
	for (int i = 0; i <= HTTP_FIELDS_MAX; i++)
		n += (size_t)snprintf(big + n, sizeof(big) - n, "X: y\r\n");
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n");
	assert_int_equal(http_parse_request(big, n, &req, &status), -1);
	assert_int_equal(status, 431);
}

static void test_query(void **state)
{
	(void)state;
	struct http_view q = {"a=1&sender=x%40y.z&r=a+b&bad=%zz&nul=%00&empty=", 0};
	char out[16];
	q.len = strlen(q.p);
	assert_int_equal(http_query_get(q, "sender", out, sizeof(out)), 1);
	assert_string_equal(out, "x@y.z");
	assert_int_equal(http_query_get(q, "r", out, sizeof(out)), 1);
	assert_string_equal(out, "a b");
	assert_int_equal(http_query_get(q, "a", out, sizeof(out)), 1);
	assert_string_equal(out, "1");
	assert_int_equal(http_query_get(q, "empty", out, sizeof(out)), 1);
	assert_string_equal(out, "");
	assert_int_equal(http_query_get(q, "missing", out, sizeof(out)), 0);
	assert_int_equal(http_query_get(q, "bad", out, sizeof(out)), -1);
	assert_int_equal(http_query_get(q, "nul", out, sizeof(out)), -1);
	assert_int_equal(http_pct_decode("0123456789abcdef", 16, out, sizeof(out)), -1);
	assert_int_equal(http_pct_decode("%4", 2, out, sizeof(out)), -1);
	assert_int_equal(http_pct_decode("%41", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "A");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),     cmocka_unit_test(test_prefixes),
	    cmocka_unit_test(test_pipelined), cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_query),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
