/* test_policy_filter.c — the filtering checks of smtpd's chains
 * (src/policy/policy_filter.c, policy_limits.c, policy_dnsbl.c) without a
 * daemon: the access verdict at connect and RCPT, the HELO name syntax,
 * the message and recipient rates on a real shared table, greylisting on a
 * real greylist table, and the exemptions (allowed network, authenticated,
 * DNSWL). The connect chain's FCrDNS is cancelled once the access check
 * has answered (it runs first, synchronously). Hermetic: a mkdtemp() dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/greytab.h"
#include "lib/shmrate.h"
#include "mail/address.h"
#include "policy/policy_smtp.h"

struct fixture {
	char dir[256];
	struct event_base *base;
	struct conf *conf;
	struct policy_smtp *ps;
	struct shmrate *rates;
	struct greytab *grey;
	struct policy_client client;
	struct policy_smtp_req req;
	struct mail_addr to;
	int calls;
	struct policy_verdict v;
};

static int setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	char path[512], err[512];
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/hk-policy-filter-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(path, sizeof(path), "%s/c.yaml", fx->dir);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs("hostname: mx.example.org\n"
	      "listen: [{address: \"127.0.0.1:2525\", tls: none}]\n"
	      "local_domains: [example.org]\n"
	      "accept_any_user: true\n"
	      "access: {deny: [192.0.2.0/24], allow: [192.0.2.9, \"2001:db8::/32\"],"
	      " reject_at: rcpt}\n"
	      "limits: {message_rate: 2, recipient_rate: 3, user_message_rate: 1}\n"
	      "greylist: {enabled: true, delay: 1s}\n"
	      "filter: {helo_syntax: true}\n",
	      f);
	assert_int_equal(fclose(f), 0);
	if (conf_load(path, &fx->conf, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	unlink(path);
	fx->base = event_base_new();
	fx->ps = policy_smtp_create(fx->base, fx->conf, NULL, NULL);
	struct cidr_list access;
	assert_int_equal(policy_access_load(fx->conf, &access, err, sizeof(err)), 0);
	policy_smtp_set_access(fx->ps, &access);
	fx->rates = shmrate_create(1024);
	fx->grey = greytab_create(1024);
	policy_smtp_set_shared(fx->ps, fx->rates, fx->grey);
	fx->client.sid = "test";
	fx->req.client = &fx->client;
	fx->req.sender = "sender@example.net";
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	policy_rcpt_req_clear(&fx->req.rcpt);
	policy_client_clear(&fx->client);
	policy_smtp_free(&fx->ps);
	shmrate_free(&fx->rates);
	greytab_free(&fx->grey);
	conf_free(&fx->conf);
	event_base_free(fx->base);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static void on_verdict(const struct policy_verdict *v, void *arg)
{
	struct fixture *fx = arg;
	fx->calls++;
	fx->v = *v;
}

/* A new connection from addr: the connect chain's access check answers
 * at once; what is still pending after it (FCrDNS) is cancelled. */
static void connect_from(struct fixture *fx, const char *addr)
{
	policy_client_clear(&fx->client);
	memset(&fx->client, 0, sizeof(fx->client));
	fx->client.sid = "test";
	if (strchr(addr, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&fx->client.ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&fx->client.ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
	}
	snprintf(fx->client.addr, sizeof(fx->client.addr), "%s", addr);
	struct policy_run *run =
	    policy_run(policy_smtp_engine(fx->ps), POLICY_CONNECT, &fx->req, on_verdict, fx);
	policy_run_cancel(&run);
}

static const struct policy_verdict *run_stage(struct fixture *fx, enum policy_stage st)
{
	fx->calls = 0;
	struct policy_run *run =
	    policy_run(policy_smtp_engine(fx->ps), st, &fx->req, on_verdict, fx);
	assert_null(run); /* these checks answer at once */
	assert_int_equal(fx->calls, 1);
	return &fx->v;
}

static const struct policy_verdict *rcpt(struct fixture *fx, const char *addr)
{
	const char *error = NULL;
	size_t used = 0;
	char path[600];
	snprintf(path, sizeof(path), "<%s>", addr);
	if (mail_addr_parse_path(path, strlen(path), 0, &fx->to, &used, &error) < 0)
		fail_msg("%s: %s", addr, error);
	policy_rcpt_req_clear(&fx->req.rcpt);
	memset(&fx->req.rcpt, 0, sizeof(fx->req.rcpt));
	fx->req.rcpt.to = &fx->to;
	return run_stage(fx, POLICY_RCPT);
}

static void test_access(void **state)
{
	struct fixture *fx = *state;
	connect_from(fx, "192.0.2.7");
	assert_int_equal(fx->client.access, POLICY_ACCESS_DENY);
	const struct policy_verdict *v = rcpt(fx, "alice@example.org");
	assert_int_equal(v->code, 554);
	assert_string_equal(v->enh, "5.7.1");
	assert_string_equal(v->check, "access");
	assert_string_equal(v->text, "Client host [192.0.2.7] rejected: Access denied");
	connect_from(fx, "192.0.2.9"); /* the longer allow prefix wins */
	assert_int_equal(fx->client.access, POLICY_ACCESS_ALLOW);
	/* allowed: no greylisting, no rate limit */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
		assert_int_equal(rcpt(fx, "alice@example.org")->result, POLICY_OK);
	}
	connect_from(fx, "2001:db8::5");
	assert_int_equal(fx->client.access, POLICY_ACCESS_ALLOW);
	connect_from(fx, "198.51.100.1");
	assert_int_equal(fx->client.access, POLICY_ACCESS_NONE);
}

static void test_helo_syntax(void **state)
{
	struct fixture *fx = *state;
	static const struct {
		const char *name;
		int ok;
	} cases[] = {
	    {"mail.example.org", 1},   {"localhost", 1},
	    {"mail.example.org.", 1},  {"[192.0.2.1]", 1},
	    {"[IPv6:2001:db8::1]", 1}, {"a-b.c", 1},
	    {"bad_name", 0},           {"-lead.example", 0},
	    {"trail-.example", 0},     {"a..b", 0},
	    {"192.0.2.1", 0},          {"[192.0.2.256]", 0},
	    {"[IPv6:nope]", 0},        {".", 0},
	};
	connect_from(fx, "198.51.100.2");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fx->req.helo = cases[i].name;
		const struct policy_verdict *v = run_stage(fx, POLICY_HELO);
		if (cases[i].ok != (v->result == POLICY_OK))
			fail_msg("%s: %d", cases[i].name, v->code);
		if (!cases[i].ok) {
			assert_int_equal(v->code, 501);
			assert_string_equal(v->enh, "5.5.2");
		}
	}
}

static void test_rates(void **state)
{
	struct fixture *fx = *state;
	connect_from(fx, "198.51.100.3");
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	const struct policy_verdict *v = run_stage(fx, POLICY_MAIL);
	assert_int_equal(v->code, 450);
	assert_string_equal(v->enh, "4.7.1");
	assert_string_equal(v->check, "rate_mail");
	/* another address of the same /64 is the same client; IPv4 is per address */
	connect_from(fx, "198.51.100.4");
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	connect_from(fx, "2001:db9::1");
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	connect_from(fx, "2001:db9::2");
	assert_int_equal(run_stage(fx, POLICY_MAIL)->code, 450);
	connect_from(fx, "2001:db9:0:1::1");
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	/* an authenticated client counts as its user */
	connect_from(fx, "198.51.100.3");
	fx->client.auth_user = "alice@example.org";
	assert_int_equal(run_stage(fx, POLICY_MAIL)->result, POLICY_OK);
	v = run_stage(fx, POLICY_MAIL);
	assert_int_equal(v->code, 450);
	assert_non_null(strstr(v->text, "user alice@example.org"));
	fx->client.auth_user = NULL;
}

static void test_greylist(void **state)
{
	struct fixture *fx = *state;
	connect_from(fx, "203.0.113.5");
	const struct policy_verdict *v = rcpt(fx, "alice@example.org");
	assert_int_equal(v->code, 451);
	assert_string_equal(v->enh, "4.7.1");
	assert_string_equal(v->check, "greylist");
	/* the same /24, sender and recipient in any case: still early */
	connect_from(fx, "203.0.113.99");
	assert_int_equal(rcpt(fx, "ALICE@example.org")->code, 451);
	/* DNSWL-listed and authenticated clients bypass it */
	fx->client.dnswl = true;
	assert_int_equal(rcpt(fx, "bob@example.org")->result, POLICY_OK);
	fx->client.dnswl = false;
	fx->client.auth_user = "u";
	assert_int_equal(rcpt(fx, "bob@example.org")->result, POLICY_OK);
	fx->client.auth_user = NULL;
	sleep(2);
	assert_int_equal(rcpt(fx, "alice@example.org")->result, POLICY_OK);
	/* the recipient rate (3 for this address) counted only the accepted
	 * ones (bob as DNSWL, alice now; bob authenticated counts as "u") */
	assert_int_equal(rcpt(fx, "alice@example.org")->result, POLICY_OK);
	assert_int_equal(rcpt(fx, "alice@example.org")->code, 450);
	assert_string_equal(fx->v.check, "rate_rcpt");
}

static void test_dnsbl_score(void **state)
{
	struct fixture *fx = *state;
	connect_from(fx, "198.51.100.77");
	/* no lists configured: the score is whatever the client has */
	fx->client.dnsbl_score = 1;
	snprintf(fx->client.dnsbl_list, sizeof(fx->client.dnsbl_list), "bl.example");
	fx->client.dnswl = true; /* greylisting off for it */
	const struct policy_verdict *v = rcpt(fx, "alice@example.org");
	assert_int_equal(v->code, 554);
	assert_string_equal(v->check, "dnsbl");
	assert_non_null(strstr(v->text, "blocked using bl.example"));
	fx->client.auth_user = "u";
	assert_int_equal(rcpt(fx, "alice@example.org")->result, POLICY_OK);
	fx->client.auth_user = NULL;
}

static void test_net_key(void **state)
{
	(void)state;
	struct sockaddr_storage a, b;
	unsigned char ka[17], kb[17];
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	struct sockaddr_in *a4 = (struct sockaddr_in *)&a, *b4 = (struct sockaddr_in *)&b;
	a4->sin_family = b4->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &a4->sin_addr);
	inet_pton(AF_INET, "192.0.2.200", &b4->sin_addr);
	size_t la = policy_client_net_key(&a, 24, ka), lb = policy_client_net_key(&b, 24, kb);
	assert_true(la == lb && memcmp(ka, kb, la) == 0);
	la = policy_client_net_key(&a, 32, ka);
	lb = policy_client_net_key(&b, 32, kb);
	assert_false(la == lb && memcmp(ka, kb, la) == 0);
	/* a v4-mapped client is its IPv4 address */
	struct sockaddr_in6 *m6 = (struct sockaddr_in6 *)&b;
	memset(&b, 0, sizeof(b));
	m6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "::ffff:192.0.2.1", &m6->sin6_addr);
	la = policy_client_net_key(&a, 32, ka);
	lb = policy_client_net_key(&b, 32, kb);
	assert_true(la == lb && memcmp(ka, kb, la) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_access, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_helo_syntax, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rates, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_greylist, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_dnsbl_score, setup, teardown),
	    cmocka_unit_test(test_net_key),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
