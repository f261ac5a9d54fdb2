/* test_logline.c — `hikyaku log summary`'s line parser (obs/logline.h),
 * table-driven over both log formats, and a round trip: lines that
 * lib/log.c writes (key=value and JSON) parse back to the values logged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/log.h"
#include "obs/logline.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct ll_case {
	const char *name;
	const char *in;
	int rc;
	int hour;
	const char *key, *value; /* one field to check */
};

static const struct ll_case cases[] = {
    {"kv", "2026-12-03T09:05:01.001Z info hikyaku/queue[1]: event=delivery to=a@b status=sent", 0,
     9, "to", "a@b"},
    {"kv quoted",
     "2026-12-03T23:00:00.000Z warn hikyaku/queue[1]: event=x reason=\"a \\\"b\\\" c\"", 0, 23,
     "reason", "a \"b\" c"},
    {"kv hex escape", "2026-12-03T01:00:00.000Z info hikyaku/smtpd[1]: from=\"x\\x01y\"", 0, 1,
     "from", "x\001y"},
    {"kv free words", "2026-12-03T01:00:00.000Z info hikyaku/master: event=reload (keeping it)", 0,
     1, "event", "reload"},
    {"kv trailing newline", "2026-12-03T02:00:00.000Z info hikyaku/master: event=x\r\n", 0, 2,
     "event", "x"},
    {"kv not ours", "2026-12-03T01:00:00.000Z info postfix/smtpd[1]: event=x", -1, -1, NULL, NULL},
    {"kv no colon", "2026-12-03T01:00:00.000Z info hikyaku event=x", -1, -1, NULL, NULL},
    {"garbage", "hello", -1, -1, NULL, NULL},
    {"empty", "", -1, -1, NULL, NULL},
    {"json",
     "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"level\":\"info\",\"proc\":\"hikyaku/q[1]\","
     "\"event\":\"accept\",\"from\":\"<a@b>\"}",
     0, 10, "from", "<a@b>"},
    {"json escapes",
     "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"proc\":\"hikyaku/q\",\"r\":\"\\u0022x\\\\"
     "\\u00e9\\n\"}",
     0, 10, "r", "\"x\\?\n"},
    {"json not ours", "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"proc\":\"other\",\"event\":\"x\"}",
     -1, -1, NULL, NULL},
    {"json unterminated", "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"proc\":\"hikyaku\",\"e\":\"x", -1,
     -1, NULL, NULL},
    {"json bad escape", "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"proc\":\"hikyaku\",\"e\":\"\\q\"}",
     -1, -1, NULL, NULL},
    {"json number", "{\"ts\":\"2026-12-03T10:30:00.000Z\",\"proc\":\"hikyaku\",\"e\":1}", -1, -1,
     NULL, NULL},
    {"json bad hour", "{\"ts\":\"2026-12-03T25:30:00.000Z\",\"proc\":\"hikyaku\",\"e\":\"1\"}", 0,
     -1, "e", "1"},
};

static void test_table(void **state)
{
	(void)state;
	static struct logline l;
	for (size_t i = 0; i < N(cases); i++) {
		const struct ll_case *c = &cases[i];
		int rc = logline_parse(c->in, strlen(c->in), &l);
		if (rc != c->rc)
			fail_msg("%s: rc %d", c->name, rc);
		if (rc < 0)
			continue;
		if (l.hour != c->hour)
			fail_msg("%s: hour %d", c->name, l.hour);
		const char *v = logline_get(&l, c->key);
		if (v == NULL || strcmp(v, c->value) != 0)
			fail_msg("%s: %s=%s", c->name, c->key, v != NULL ? v : "(none)");
	}
}

/* Long values are cut, fields past the bound dropped, never overflowed. */
static void test_bounds(void **state)
{
	(void)state;
	static char line[8192];
	static struct logline l;
	size_t n =
	    (size_t)snprintf(line, sizeof(line), "2026-12-03T01:00:00.000Z info hikyaku/x: big=");
	memset(line + n, 'v', 3000);
	n += 3000;
	for (int i = 0; i < 40; i++)
		n += (size_t)snprintf(line + n, sizeof(line) - n, " k%d=%d", i, i);
	assert_int_equal(logline_parse(line, n, &l), 0);
	assert_int_equal(l.n, LOGLINE_FIELDS);
	assert_int_equal(strlen(logline_get(&l, "big")), LOGLINE_VALUE_MAX - 1);
	assert_null(logline_get(&l, "k30"));
}

static void fixed_clock(struct timespec *now)
{
	now->tv_sec = 1796288700; /* 2026-12-03T09:05:00Z */
	now->tv_nsec = 0;
}

/* What log.c writes comes back: both formats. */
static void test_round_trip(void **state)
{
	(void)state;
	for (int json = 0; json < 2; json++) {
		char path[] = "/tmp/test_logline_XXXXXX";
		int fd = mkstemp(path);
		assert_true(fd >= 0);
		unlink(path);
		log_init(LOG_LVL_INFO, "hikyaku/test[1]");
		log_set_output(fd);
		log_set_clock(fixed_clock);
		log_set_json(json);
		char q1[LOG_Q_MAX], q2[LOG_Q_MAX];
		log_info("event=delivery to=%s reason=%s status=sent",
		         log_qs(q1, "a b@example.org"), log_qs(q2, "say \"hi\"\x01 caf\xc3\xa9"));
		log_flush();
		log_set_json(false);
		log_set_output(2);
		char buf[4096];
		ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
		close(fd);
		assert_true(n > 0);
		buf[n] = '\0';
		static struct logline l;
		assert_int_equal(logline_parse(buf, (size_t)n, &l), 0);
		assert_int_equal(l.hour, 9);
		assert_string_equal(logline_get(&l, "event"), "delivery");
		assert_string_equal(logline_get(&l, "to"), "a b@example.org");
		assert_string_equal(logline_get(&l, "status"), "sent");
		/* JSON keeps UTF-8 but \u-escapes controls (kept as octets) */
		assert_string_equal(logline_get(&l, "reason"), "say \"hi\"\x01 caf\xc3\xa9");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_table),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
