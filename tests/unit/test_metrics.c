/* test_metrics.c — the shared metrics region (lib/metrics.h): slots of
 * different processes add up, a forked writer's adds are seen by the
 * reader, histograms are cumulative in the exposition, rejections are
 * classed by their enhanced code, and an attach refuses what is not a
 * region. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/metrics.h"

static void test_slots_add_up(void **state)
{
	(void)state;
	struct metrics *m = metrics_create(4);
	assert_non_null(m);
	for (unsigned slot = 0; slot < 4; slot++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct metrics *c = metrics_attach(dup(metrics_fd(m)), slot);
			if (c == NULL)
				_exit(1);
			metrics_set_process(c);
			for (int i = 0; i < 1000; i++)
				metrics_inc(METRIC_MSG_ACCEPTED);
			metrics_conn(1, METRIC_CONN_REFUSED);
			metrics_conn(99, METRIC_CONN_ACCEPTED); /* past the table: the last */
			_exit(0);
		}
		int st;
		waitpid(pid, &st, 0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	assert_int_equal(metrics_read(m, METRIC_MSG_ACCEPTED), 4000);
	assert_int_equal(
	    metrics_read(m, (enum metric)(METRIC_CONN_FIRST + 1 * METRIC_CONN_N + METRIC_CONN_REFUSED)),
	    4);
	assert_int_equal(metrics_read(m, (enum metric)(METRIC_CONN_FIRST +
						       (METRICS_LISTENERS - 1) * METRIC_CONN_N +
						       METRIC_CONN_ACCEPTED)),
			 4);
	metrics_free(&m);
}

static void test_render(void **state)
{
	(void)state;
	struct metrics *m = metrics_create(1);
	struct metrics *me = metrics_attach(dup(metrics_fd(m)), 0);
	metrics_set_process(me);
	metrics_observe_accept(500);      /* <= 1 ms */
	metrics_observe_accept(3000);     /* <= 5 ms */
	metrics_observe_accept(99000000); /* +Inf */
	metrics_reject(554, "5.7.1");
	metrics_reject(550, "5.1.1");
	metrics_reject(452, "4.5.3");
	metrics_reject(552, "5.3.4");
	metrics_reject(500, "5.5.2");
	metrics_reject(451, "4.3.0");
	metrics_reject(553, "5.1.7");
	metrics_reject(550, "5.6.0");
	metrics_reject(554, NULL);
	metrics_delivery(METRIC_TR_LMTP, METRIC_DS_BOUNCED);
	metrics_set(METRIC_Q_OLDEST_US, 1000000);
	struct buf b;
	buf_init(&b, 1 << 20);
	const char *names[] = {"127.0.0.1:25"};
	metrics_render(m, names, 1, 11000000, &b);
	const char *t = buf_cstr(&b);
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_bucket{le=\"0.001\"} 1\n"));
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_bucket{le=\"0.005\"} 2\n"));
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_bucket{le=\"10\"} 2\n"));
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_count 3\n"));
	assert_non_null(strstr(t, "hikyaku_accept_latency_seconds_sum 99.003500\n"));
	static const char *const classes[] = {"policy",   "recipient", "size",  "protocol",
					      "tempfail", "sender",    "content"};
	char want[128];
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
		snprintf(want, sizeof(want), "hikyaku_messages_rejected_total{class=\"%s\"} %d\n",
			 classes[i], strcmp(classes[i], "recipient") == 0 ? 2 : 1);
		if (strstr(t, want) == NULL)
			fail_msg("missing %s", want);
	}
	assert_non_null(strstr(t, "hikyaku_messages_rejected_total{class=\"other\"} 1\n"));
	assert_non_null(
	    strstr(t, "hikyaku_deliveries_total{transport=\"lmtp\",status=\"bounced\"} 1\n"));
	assert_non_null(strstr(t, "hikyaku_queue_oldest_message_age_seconds 10.000\n"));
	assert_non_null(strstr(
	    t, "hikyaku_smtp_connections_total{listener=\"127.0.0.1:25\",result=\"accepted\"} 0\n"));
	buf_free(&b);
	metrics_set_process(NULL);
	metrics_free(&me);
	metrics_free(&m);
}

static void test_attach_refuses(void **state)
{
	(void)state;
	int fd = memfd_create("not-metrics", 0);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 4096), 0);
	assert_null(metrics_attach(fd, 0));
	close(fd);
	/* no process slot: counting is a no-op */
	metrics_set_process(NULL);
	metrics_inc(METRIC_MSG_ACCEPTED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_slots_add_up),
	    cmocka_unit_test(test_render),
	    cmocka_unit_test(test_attach_refuses),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
