/* test_rstate.c — the Redis state client (src/lib/rstate.c): the
 * state.redis address parser at its bounds, the password file's checks,
 * and that a request to a server that is not there fails through its
 * callback (at once, or when the connect fails) instead of hanging. The
 * exchanges with a real redis-server are in tests/integration/test_redis.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <event2/event.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/rstate.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static void test_addr_parse(void **state)
{
	static const struct {
		const char *in;
		int rc;
		bool is_unix;
		const char *host_or_path;
		unsigned port;
	} cases[] = {
	    {"127.0.0.1:6379", 0, false, "127.0.0.1", 6379},
	    {"10.77.0.1:1", 0, false, "10.77.0.1", 1},
	    {"[::1]:65535", 0, false, "::1", 65535},
	    {"[2001:db8::5]:6380", 0, false, "2001:db8::5", 6380},
	    {"unix:/run/redis/redis-server.sock", 0, true, "/run/redis/redis-server.sock", 0},
	    {"127.0.0.1:0", -1, false, NULL, 0},
	    {"127.0.0.1:65536", -1, false, NULL, 0},
	    {"127.0.0.1:99999999999999999999", -1, false, NULL, 0},
	    {"127.0.0.1:", -1, false, NULL, 0},
	    {"127.0.0.1:6379x", -1, false, NULL, 0},
	    {"127.0.0.1:-1", -1, false, NULL, 0},
	    {"127.0.0.1", -1, false, NULL, 0},
	    {":6379", -1, false, NULL, 0},
	    {"redis.example:6379", -1, false, NULL, 0}, /* no names: smtpd resolves none */
	    {"::1:6379", -1, false, NULL, 0},           /* IPv6 needs brackets */
	    {"[::1:6379", -1, false, NULL, 0},
	    {"[]:6379", -1, false, NULL, 0},
	    {"[127.0.0.1]:6379", 0, false, "127.0.0.1", 6379},
	    {"unix:relative.sock", -1, true, NULL, 0},
	    {"unix:", -1, true, NULL, 0},
	    {"", -1, false, NULL, 0},
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct rstate_addr a;
		const char *error = NULL;
		int rc = rstate_addr_parse(cases[i].in, &a, &error);
		if (rc != cases[i].rc)
			fail_msg("%s: rc %d", cases[i].in, rc);
		if (rc < 0) {
			assert_non_null(error);
			continue;
		}
		assert_int_equal(a.is_unix, cases[i].is_unix);
		assert_string_equal(a.is_unix ? a.path : a.host, cases[i].host_or_path);
		assert_int_equal(a.port, cases[i].port);
	}
	/* sun_path's bound: 107 octets and the NUL. */
	char longp[5 + 1 + 120];
	memcpy(longp, "unix:/", 6);
	memset(longp + 6, 'a', sizeof(longp) - 7);
	longp[sizeof(longp) - 1] = '\0';
	struct rstate_addr a;
	const char *error = NULL;
	assert_int_equal(rstate_addr_parse(longp, &a, &error), -1);
	longp[5 + 107] = '\0';
	assert_int_equal(rstate_addr_parse(longp, &a, &error), 0);
	assert_int_equal(strlen(a.path), 107);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void test_password_read(void **state)
{
	(void)state;
	char dir[] = "/tmp/test_rstate.XXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[64], pw[RSTATE_PASSWORD_MAX], err[256];
	snprintf(path, sizeof(path), "%s/pw", dir);
	write_file(path, "s3cret\r\nsecond line\n", 0600);
	int rc = rstate_password_read(path, pw, sizeof(pw), err, sizeof(err));
	if (geteuid() == 0) {
		assert_int_equal(rc, 0);
		assert_string_equal(pw, "s3cret");
	} else {
		assert_int_equal(rc, -1); /* only root's file will do */
	}
	write_file(path, "s3cret\n", 0640); /* the group may read it */
	assert_int_equal(rstate_password_read(path, pw, sizeof(pw), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "mode"));
	write_file(path, "\n", 0600);
	assert_int_equal(rstate_password_read(path, pw, sizeof(pw), err, sizeof(err)), -1);
	unlink(path);
	assert_int_equal(rstate_password_read(path, pw, sizeof(pw), err, sizeof(err)), -1);
	rmdir(dir);
}

struct answer {
	int calls;
	bool ok;
	struct event_base *base;
};

static void on_answer(bool ok, long long value, void *arg)
{
	struct answer *a = arg;
	(void)value;
	a->calls++;
	a->ok = ok;
	event_base_loopbreak(a->base);
}

/* Nothing listens on port 1 of 127.0.0.1: the request fails through its
 * callback, once, well inside a second. */
static void test_unreachable(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct rstate_addr addr;
	const char *error = NULL;
	assert_int_equal(rstate_addr_parse("127.0.0.1:1", &addr, &error), 0);
	struct rstate *rs = rstate_create(base, &addr, NULL, 200);
	struct answer a = {.base = base};
	struct rstate_req *req =
	    rstate_rate_take(rs, "ckey", 4, 5, 60000, 123456789, on_answer, &a);
	struct timeval tv = {.tv_sec = 2};
	if (req != NULL) {
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_int_equal(a.calls, 1);
	assert_false(a.ok);
	assert_false(rstate_connected(rs));
	/* While it is down a request fails inside the call. */
	a.calls = 0;
	req = rstate_grey_check(rs, "g", 1, 1000, 300, 3600, 86400, on_answer, &a);
	assert_null(req);
	assert_int_equal(a.calls, 1);
	rstate_free(&rs);
	assert_null(rs);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_addr_parse),
	    cmocka_unit_test(test_password_read),
	    cmocka_unit_test(test_unreachable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
