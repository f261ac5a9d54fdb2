/* test_policy_rcpt.c — smtpd's RCPT chain (src/policy/policy_rcpt.c)
 * against a users source that answers later, as the auth process will
 * (policy_smtp_set_user_source): the recipient check and alias expansion
 * wait for the answers, a temporary failure is a 451, and a run cancelled
 * while a lookup is pending cancels that lookup (ASan checks that nothing
 * is called after). Hermetic: config and aliases files in a mkdtemp() dir. */
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

#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "mail/address.h"
#include "policy/policy_smtp.h"

#define FAKE_MAX 8

/* A users source whose answers the test gives by hand. */
struct fake_query {
	char mailbox[80];
	char domain[80];
	policy_user_fn *cb;
	void *arg;
	bool pending, cancelled;
};

struct fake_users {
	struct fake_query q[FAKE_MAX];
	size_t n;
};

static struct policy_user_query *fake_lookup(void *ctx, const char *mailbox, const char *domain,
                                             policy_user_fn *cb, void *arg)
{
	struct fake_users *f = ctx;
	assert_true(f->n < FAKE_MAX);
	struct fake_query *q = &f->q[f->n++];
	snprintf(q->mailbox, sizeof(q->mailbox), "%s", mailbox);
	snprintf(q->domain, sizeof(q->domain), "%s", domain);
	q->cb = cb;
	q->arg = arg;
	q->pending = true;
	return (struct policy_user_query *)q;
}

static void fake_cancel(void *ctx, struct policy_user_query *h)
{
	struct fake_query *q = (struct fake_query *)h;
	(void)ctx;
	assert_true(q->pending);
	q->pending = false;
	q->cancelled = true;
}

static void fake_answer(struct fake_users *f, size_t i, enum policy_user_answer a)
{
	struct fake_query *q = &f->q[i];
	assert_true(i < f->n);
	assert_true(q->pending);
	q->pending = false;
	q->cb(a, q->arg);
}

struct fixture {
	char dir[256];
	struct event_base *base;
	struct conf *conf;
	struct aliases *aliases;
	struct policy_smtp *ps;
	struct fake_users users;
	struct policy_client client;
	struct policy_smtp_req req;
	struct mail_addr to;
	int calls;
	struct policy_verdict v;
};

static void write_file(const struct fixture *fx, const char *name, const char *text, char *path,
                       size_t pathlen)
{
	snprintf(path, pathlen, "%s/%s", fx->dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
	struct fixture *fx = xcalloc(1, sizeof(*fx));
	const char *tmp = getenv("TMPDIR");
	char path[512], err[512];
	snprintf(fx->dir, sizeof(fx->dir), "%s/hk-policy-XXXXXX", tmp != NULL ? tmp : "/tmp");
	assert_non_null(mkdtemp(fx->dir));
	write_file(fx, "c.yaml",
	           "hostname: mx.example.org\n"
	           "listen: [{address: \"127.0.0.1:2525\", tls: none}]\n"
	           "local_domains: [example.org]\n"
	           "relay_domains: [gw.example]\n",
	           path, sizeof(path));
	if (conf_load(path, &fx->conf, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	write_file(fx, "aliases",
	           "team@example.org: alice@example.org, ghost@example.org, far@remote.example\n",
	           path, sizeof(path));
	if (aliases_load(path, &fx->aliases, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	fx->base = event_base_new();
	fx->ps = policy_smtp_create(fx->base, fx->conf, NULL, fx->aliases);
	struct policy_user_source src = {
	    .lookup = fake_lookup, .cancel = fake_cancel, .ctx = &fx->users};
	policy_smtp_set_user_source(fx->ps, &src);
	struct sockaddr_in *sin = (struct sockaddr_in *)&fx->client.ss;
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &sin->sin_addr);
	snprintf(fx->client.addr, sizeof(fx->client.addr), "192.0.2.1");
	fx->client.sid = "test";
	fx->req.client = &fx->client;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char path[512];
	policy_rcpt_req_clear(&fx->req.rcpt);
	policy_smtp_free(&fx->ps);
	aliases_free(&fx->aliases);
	conf_free(&fx->conf);
	event_base_free(fx->base);
	snprintf(path, sizeof(path), "%s/c.yaml", fx->dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/aliases", fx->dir);
	unlink(path);
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

/* Run the RCPT chain for addr; returns the run (NULL: answered at once). */
static struct policy_run *rcpt_run(struct fixture *fx, const char *addr)
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
	fx->calls = 0;
	return policy_run(policy_smtp_engine(fx->ps), POLICY_RCPT, &fx->req, on_verdict, fx);
}

static void test_known_user_later(void **state)
{
	struct fixture *fx = *state;
	assert_non_null(rcpt_run(fx, "bob@example.org"));
	assert_int_equal(fx->calls, 0); /* waiting for the users source */
	assert_int_equal(fx->users.n, 1);
	assert_string_equal(fx->users.q[0].mailbox, "bob");
	assert_string_equal(fx->users.q[0].domain, "example.org");
	fake_answer(&fx->users, 0, POLICY_USER_KNOWN);
	assert_int_equal(fx->calls, 1);
	assert_int_equal(fx->v.result, POLICY_OK);
	assert_false(fx->req.rcpt.alias);
}

static void test_unknown_and_tempfail(void **state)
{
	struct fixture *fx = *state;
	assert_non_null(rcpt_run(fx, "bob@example.org"));
	fake_answer(&fx->users, 0, POLICY_USER_UNKNOWN);
	assert_int_equal(fx->calls, 1);
	assert_int_equal(fx->v.result, POLICY_REPLY);
	assert_int_equal(fx->v.code, 550);
	assert_string_equal(fx->v.enh, "5.1.1");
	assert_string_equal(fx->v.text,
	                    "<bob@example.org>: Recipient address rejected: User unknown");
	assert_string_equal(fx->v.check, "recipient");

	assert_non_null(rcpt_run(fx, "carol@example.org"));
	fake_answer(&fx->users, 1, POLICY_USER_TEMPFAIL);
	assert_int_equal(fx->calls, 1);
	assert_int_equal(fx->v.code, 451);
	assert_string_equal(fx->v.enh, "4.3.0");
}

/* Decided without asking for a user: relay refused, postmaster, relay
 * domain (with its source-routing rule). */
static void test_no_lookup_needed(void **state)
{
	struct fixture *fx = *state;
	assert_null(rcpt_run(fx, "x@elsewhere.example"));
	assert_int_equal(fx->calls, 1);
	assert_int_equal(fx->v.code, 554);
	assert_string_equal(fx->v.check, "relay");
	assert_null(rcpt_run(fx, "postmaster@example.org"));
	assert_int_equal(fx->v.result, POLICY_OK);
	assert_null(rcpt_run(fx, "anyone@gw.example"));
	assert_int_equal(fx->v.result, POLICY_OK);
	assert_null(rcpt_run(fx, "a%b@gw.example"));
	assert_int_equal(fx->v.code, 554);
	assert_non_null(strstr(fx->v.text, "source routing"));
	assert_int_equal(fx->users.n, 0);
}

/* An alias: its local targets are asked one after the other as answers
 * come; unknown ones are dropped, remote ones need no answer. */
static void test_alias_targets_later(void **state)
{
	struct fixture *fx = *state;
	assert_non_null(rcpt_run(fx, "team@example.org"));
	assert_int_equal(fx->users.n, 1);
	assert_string_equal(fx->users.q[0].mailbox, "alice");
	fake_answer(&fx->users, 0, POLICY_USER_KNOWN);
	assert_int_equal(fx->calls, 0);
	assert_int_equal(fx->users.n, 2);
	assert_string_equal(fx->users.q[1].mailbox, "ghost");
	fake_answer(&fx->users, 1, POLICY_USER_UNKNOWN);
	assert_int_equal(fx->calls, 1);
	assert_int_equal(fx->v.result, POLICY_OK);
	assert_true(fx->req.rcpt.alias);
	assert_int_equal(fx->req.rcpt.ntargets, 2);
	assert_string_equal(fx->req.rcpt.targets[0], "alice@example.org");
	assert_string_equal(fx->req.rcpt.targets[1], "far@remote.example");
}

/* The session ended while a lookup was pending: the run's cancel reaches
 * the users source, and no answer comes after. */
static void test_cancel_pending_lookup(void **state)
{
	struct fixture *fx = *state;
	struct policy_run *run = rcpt_run(fx, "bob@example.org");
	assert_non_null(run);
	policy_run_cancel(&run);
	assert_true(fx->users.q[0].cancelled);

	run = rcpt_run(fx, "team@example.org");
	assert_non_null(run);
	fake_answer(&fx->users, 1, POLICY_USER_KNOWN); /* alice */
	assert_true(fx->users.q[2].pending);           /* ghost */
	policy_run_cancel(&run);
	assert_true(fx->users.q[2].cancelled);
	assert_int_equal(fx->calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_known_user_later, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_and_tempfail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_lookup_needed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_alias_targets_later, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_pending_lookup, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
