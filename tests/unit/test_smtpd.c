/* test_smtpd.c — smtpd pieces tested without a daemon: the rejection log
 * rate suppression (lib/logrl.h) and connection accounting when a session
 * cannot start (a real server object on a private event loop over
 * loopback). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/logrl.h"
#include "lib/shmcount.h"
#include "smtpd/smtpd.h"

/* Bursts, windows, the count of what was held back. */
static void test_logrl(void **state)
{
	(void)state;
	struct logrl rl;
	logrl_init(&rl, 3, 1000);
	for (int i = 0; i < 3; i++)
		assert_true(logrl_allow(&rl, 100 + (uint64_t)i));
	for (int i = 0; i < 500; i++)
		assert_false(logrl_allow(&rl, 200));
	assert_false(logrl_burst_over(&rl, 1099));
	assert_true(logrl_burst_over(&rl, 1100));
	assert_int_equal(logrl_take(&rl), 500);
	assert_int_equal(logrl_take(&rl), 0);
	/* a new window lets a new burst through */
	assert_true(logrl_allow(&rl, 1100));
	assert_true(logrl_allow(&rl, 1101));
	assert_true(logrl_allow(&rl, 1102));
	assert_false(logrl_allow(&rl, 1103));
	assert_int_equal(logrl_take(&rl), 1);
	/* a clock that goes back ends the window instead of freezing it */
	assert_true(logrl_burst_over(&rl, 50));
	assert_true(logrl_allow(&rl, 50));
	/* burst 0: everything is counted */
	logrl_init(&rl, 0, 1000);
	assert_false(logrl_allow(&rl, 1));
	assert_int_equal(logrl_take(&rl), 1);
}

/* A port that was free a moment ago (the test binds it right after). */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

static struct conf *load_conf(const char *yaml)
{
	char path[] = "/tmp/hk-test-smtpd-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
	close(fd);
	struct conf *conf = NULL;
	char err[512];
	int rc = conf_load(path, &conf, err, sizeof(err));
	unlink(path);
	if (rc < 0)
		fail_msg("conf_load: %s", err);
	return conf;
}

/* Connect to the server and return what it sends before closing (at most
 * len - 1 octets, NUL-terminated), turning the loop until then. */
static size_t connect_and_read(struct event_base *base, int port, char *out, size_t len)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	size_t got = 0;
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	for (int i = 0; i < 200; i++) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 10) == 1) {
			ssize_t n = recv(fd, out + got, len - 1 - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
	}
	out[got] = '\0';
	close(fd);
	return got;
}

/* An implicit-TLS listener whose TLS cannot be set up (here: no contexts
 * installed) closes each connection at once. The connection was counted at
 * accept; it must be released, or after limits.connections_per_ip such
 * failures the address is refused for good ("421 Too many connections"). */
static void test_implicit_tls_failure_releases_count(void **state)
{
	(void)state;
	int port = free_port();
	char yaml[512], got[512];
	snprintf(yaml, sizeof(yaml),
	         "listen:\n  - address: 127.0.0.1:%d\n    tls: implicit\n"
	         "tls:\n  self_signed_dir: /tmp/hk-test-smtpd-unused\n"
	         "local_domains: [example.org]\naccept_any_user: true\n"
	         "limits:\n  connections_per_ip: 2\n",
	         port);
	struct conf *conf = load_conf(yaml);
	struct event_base *base = event_base_new();
	struct smtpd *srv = NULL;
	const char *error = NULL;
	struct smtpd_bound *bound = NULL;
	size_t nbound = 0;
	assert_int_equal(smtpd_listeners_bind(conf, &bound, &nbound, &error), 0);
	struct shmcount *conns = shmcount_create(conf->limits.connections, 1);
	assert_non_null(conns);
	assert_int_equal(smtpd_create(base, conf, NULL, NULL, bound, nbound, conns, &srv, &error),
			 0);
	free(bound);
	smtpd_start(srv); /* no smtpd_set_tls: the wrap fails */
	for (int i = 0; i < 5; i++) {
		connect_and_read(base, port, got, sizeof(got));
		assert_null(strstr(got, "Too many connections"));
		assert_int_equal(smtpd_session_count(srv), 0);
	}
	assert_int_equal(shmcount_total(conns), 0);
	smtpd_free(&srv);
	shmcount_free(&conns);
	event_base_free(base);
	conf_free(&conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_logrl),
	    cmocka_unit_test(test_implicit_tls_failure_releases_count),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
