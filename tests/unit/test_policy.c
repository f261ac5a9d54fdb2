/* test_policy.c — the asynchronous policy engine (src/policy/policy.c):
 * a chain answered at once, a refusal that ends the chain, checks that
 * answer later from the loop, timeouts in both failure modes, runs that
 * finish in another order than they started, and a run cancelled while a
 * check is pending (ASan checks nothing is touched after). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "lib/alloc.h"
#include "policy/policy.h"
#include "policy/policy_smtp.h"

/* What a test check does: answer now, later (after delay_ms), or never. */
enum behave { NOW, LATER, NEVER };

struct tcheck {
	struct policy_check check;
	enum behave behave;
	enum policy_result result;
	unsigned delay_ms;
	int code;
	/* observed */
	int started, cancelled_timeout, cancelled_abort, answered;
};

struct tstate {
	struct event *ev;
	struct policy_job *job;
	struct tcheck *tc;
};

struct tresult {
	int calls;
	int order; /* global call order stamp */
	struct policy_verdict v;
};

static int call_stamp;

static void tcheck_answer(struct policy_job *job, struct tcheck *tc)
{
	tc->answered++;
	if (tc->result == POLICY_REPLY)
		policy_job_reply(job, tc->code, "5.7.1", "refused by %s", tc->check.name);
	else if (tc->result == POLICY_OK)
		policy_job_ok(job);
	else
		policy_job_dunno(job);
}

static void tcheck_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct tstate *st = arg;
	struct policy_job *job = st->job;
	struct tcheck *tc = st->tc;
	(void)fd;
	(void)what;
	event_free(st->ev);
	free(st);
	policy_job_set_state(job, NULL);
	tcheck_answer(job, tc);
}

static struct event_base *test_base;

static void tcheck_start(struct policy_job *job)
{
	struct tcheck *tc = policy_job_ctx(job);
	tc->started++;
	if (tc->behave == NOW) {
		tcheck_answer(job, tc);
		return;
	}
	struct tstate *st = xcalloc(1, sizeof(*st));
	st->job = job;
	st->tc = tc;
	policy_job_set_state(job, st);
	if (tc->behave == LATER) {
		struct timeval tv = {0, (suseconds_t)tc->delay_ms * 1000};
		st->ev = evtimer_new(test_base, tcheck_on_timer, st);
		evtimer_add(st->ev, &tv);
	}
}

static void tcheck_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct tcheck *tc = policy_job_ctx(job);
	struct tstate *st = policy_job_state(job);
	if (why == POLICY_CANCEL_TIMEOUT)
		tc->cancelled_timeout++;
	else
		tc->cancelled_abort++;
	if (st != NULL) {
		if (st->ev != NULL)
			event_free(st->ev);
		free(st);
	}
}

static void tcheck_init(struct tcheck *tc, const char *name, enum behave b, enum policy_result r)
{
	memset(tc, 0, sizeof(*tc));
	tc->check.name = name;
	tc->check.stage = POLICY_RCPT;
	tc->check.start = tcheck_start;
	tc->check.cancel = tcheck_cancel;
	tc->behave = b;
	tc->result = r;
	tc->delay_ms = 20;
	tc->code = 550;
}

static void on_result(const struct policy_verdict *v, void *arg)
{
	struct tresult *r = arg;
	r->calls++;
	r->order = ++call_stamp;
	r->v = *v;
}

static int setup(void **state)
{
	(void)state;
	test_base = event_base_new();
	call_stamp = 0;
	return test_base == NULL ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	event_base_free(test_base);
	return 0;
}

static void run_loop(void)
{
	event_base_dispatch(test_base);
}

/* Every check answers at once: the verdict comes from inside policy_run. */
static void test_sync_chain(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b;
	struct tresult r = {0};
	tcheck_init(&a, "a", NOW, POLICY_DUNNO);
	tcheck_init(&b, "b", NOW, POLICY_DUNNO);
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	assert_int_equal(policy_count(p, POLICY_RCPT), 2);
	assert_int_equal(policy_count(p, POLICY_MAIL), 0);
	assert_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.result, POLICY_OK);
	assert_null(r.v.check);
	assert_int_equal(a.started + b.started, 2);
	/* an empty chain accepts, at once */
	struct tresult e = {0};
	assert_null(policy_run(p, POLICY_MAIL, NULL, on_result, &e));
	assert_int_equal(e.calls, 1);
	assert_int_equal(e.v.result, POLICY_OK);
	policy_free(&p);
	assert_null(p);
}

/* A refusal ends the chain: the next check never starts. */
static void test_reply_stops_chain(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b, c;
	struct tresult r = {0};
	tcheck_init(&a, "a", NOW, POLICY_DUNNO);
	tcheck_init(&b, "b", LATER, POLICY_REPLY);
	tcheck_init(&c, "c", NOW, POLICY_DUNNO);
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	policy_add(p, &c.check, &c);
	struct policy_run *run = policy_run(p, POLICY_RCPT, NULL, on_result, &r);
	assert_non_null(run);
	assert_int_equal(r.calls, 0);
	run_loop();
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.result, POLICY_REPLY);
	assert_int_equal(r.v.code, 550);
	assert_string_equal(r.v.enh, "5.7.1");
	assert_string_equal(r.v.text, "refused by b");
	assert_string_equal(r.v.check, "b");
	assert_false(r.v.timed_out);
	assert_int_equal(c.started, 0);
	policy_free(&p);
}

/* OK ends the chain too, and an asynchronous answer resumes it. */
static void test_async_then_sync(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b, c;
	struct tresult r = {0};
	tcheck_init(&a, "a", LATER, POLICY_DUNNO);
	tcheck_init(&b, "b", NOW, POLICY_OK);
	tcheck_init(&c, "c", NOW, POLICY_REPLY);
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	policy_add(p, &c.check, &c);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	assert_int_equal(b.started, 0); /* waits for a */
	run_loop();
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.result, POLICY_OK);
	assert_string_equal(r.v.check, "b");
	assert_int_equal(c.started, 0);
	policy_free(&p);
}

/* A check that never answers: at its timeout it is cancelled, and the run
 * ends in its failure mode, tempfail (its reply) or accept (go on). */
static void test_timeout_tempfail(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b;
	struct tresult r = {0};
	tcheck_init(&a, "slow", NEVER, POLICY_DUNNO);
	a.check.timeout_ms = 30;
	a.check.failmode = POLICY_FAIL_TEMPFAIL;
	tcheck_init(&b, "b", NOW, POLICY_DUNNO);
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	run_loop();
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.result, POLICY_REPLY);
	assert_int_equal(r.v.code, 451);
	assert_string_equal(r.v.enh, "4.3.0");
	assert_true(r.v.timed_out);
	assert_string_equal(r.v.check, "slow");
	assert_int_equal(a.cancelled_timeout, 1);
	assert_int_equal(a.cancelled_abort, 0);
	assert_int_equal(b.started, 0);
	policy_free(&p);
}

static void tcheck_custom_start(struct policy_job *job)
{
	/* a check may set its own timeout and reply for this job */
	policy_job_set_timeout(job, 20, POLICY_FAIL_TEMPFAIL);
	policy_job_set_tempfail(job, 450, "4.4.1", "try <%s> later", "x@y");
	tcheck_start(job);
}

static void test_timeout_custom_reply(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a;
	struct tresult r = {0};
	tcheck_init(&a, "probe", NEVER, POLICY_DUNNO);
	a.check.start = tcheck_custom_start;
	policy_add(p, &a.check, &a);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	run_loop();
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.code, 450);
	assert_string_equal(r.v.enh, "4.4.1");
	assert_string_equal(r.v.text, "try <x@y> later");
	policy_free(&p);
}

static void test_timeout_accept(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b;
	struct tresult r = {0};
	tcheck_init(&a, "slow", NEVER, POLICY_DUNNO);
	a.check.timeout_ms = 30;
	a.check.failmode = POLICY_FAIL_ACCEPT;
	tcheck_init(&b, "b", LATER, POLICY_REPLY);
	b.code = 554;
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	run_loop();
	/* accepted past the timeout: the next check decided */
	assert_int_equal(a.cancelled_timeout, 1);
	assert_int_equal(b.started, 1);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.code, 554);
	assert_string_equal(r.v.check, "b");
	assert_false(r.v.timed_out);
	policy_free(&p);
}

/* An answer before the timeout disarms it: no late cancel, one verdict. */
static void test_answer_before_timeout(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a;
	struct tresult r = {0};
	tcheck_init(&a, "a", LATER, POLICY_REPLY);
	a.delay_ms = 10;
	a.check.timeout_ms = 60;
	policy_add(p, &a.check, &a);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r));
	run_loop();
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.v.code, 550);
	assert_int_equal(a.cancelled_timeout, 0);
	policy_free(&p);
}

/* Two runs at once, the first slower: each gets its own verdict, in the
 * order their checks answer (keeping reply order is the session's job). */
static void test_runs_are_independent(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct policy *q = policy_create(test_base);
	struct tcheck slow, fast;
	struct tresult r1 = {0}, r2 = {0};
	tcheck_init(&slow, "slow", LATER, POLICY_REPLY);
	slow.delay_ms = 60;
	slow.code = 551;
	tcheck_init(&fast, "fast", LATER, POLICY_REPLY);
	fast.delay_ms = 5;
	fast.code = 552;
	policy_add(p, &slow.check, &slow);
	policy_add(q, &fast.check, &fast);
	assert_non_null(policy_run(p, POLICY_RCPT, NULL, on_result, &r1));
	assert_non_null(policy_run(q, POLICY_RCPT, NULL, on_result, &r2));
	run_loop();
	assert_int_equal(r1.v.code, 551);
	assert_int_equal(r2.v.code, 552);
	assert_true(r2.order < r1.order);
	policy_free(&p);
	policy_free(&q);
}

/* A run cancelled with a check pending (the session ended): the check is
 * cancelled, the callback never comes, nothing is left behind. */
static void test_cancel_pending(void **state)
{
	(void)state;
	struct policy *p = policy_create(test_base);
	struct tcheck a, b;
	struct tresult r = {0};
	tcheck_init(&a, "a", LATER, POLICY_DUNNO);
	a.check.timeout_ms = 30;
	tcheck_init(&b, "b", NOW, POLICY_DUNNO);
	policy_add(p, &a.check, &a);
	policy_add(p, &b.check, &b);
	struct policy_run *run = policy_run(p, POLICY_RCPT, NULL, on_result, &r);
	assert_non_null(run);
	policy_run_cancel(&run);
	assert_null(run);
	policy_run_cancel(&run); /* NULL is fine */
	run_loop();              /* neither the check's timer nor the timeout fire */
	assert_int_equal(r.calls, 0);
	assert_int_equal(a.cancelled_abort, 1);
	assert_int_equal(a.cancelled_timeout, 0);
	assert_int_equal(a.answered, 0);
	assert_int_equal(b.started, 0);
	policy_free(&p);
}

/* The verdict callback may start the next run (as a session does for the
 * next pipelined command). */
struct chain_ctx {
	struct policy *p;
	int runs;
	struct tresult last;
};

static void on_result_rerun(const struct policy_verdict *v, void *arg)
{
	struct chain_ctx *cc = arg;
	cc->last.v = *v;
	if (++cc->runs < 3)
		(void)policy_run(cc->p, POLICY_RCPT, NULL, on_result_rerun, cc);
}

static void test_rerun_from_callback(void **state)
{
	(void)state;
	struct chain_ctx cc = {.p = policy_create(test_base)};
	struct tcheck a;
	tcheck_init(&a, "a", LATER, POLICY_REPLY);
	a.delay_ms = 5;
	policy_add(cc.p, &a.check, &a);
	assert_non_null(policy_run(cc.p, POLICY_RCPT, NULL, on_result_rerun, &cc));
	run_loop();
	assert_int_equal(cc.runs, 3);
	assert_int_equal(a.started, 3);
	assert_int_equal(cc.last.v.code, 550);
	policy_free(&cc.p);
}

/* Fields added at the end of data: the last one on top, and an addition
 * that would pass the block's bound is refused and marks the request (the
 * session then answers 451 instead of writing over the content). */
static void test_eod_add_field(void **state)
{
	(void)state;
	struct buf top;
	struct policy_eod_req r = {.top = &top};
	buf_init(&top, 40);
	assert_int_equal(policy_eod_add_field(&r, "B: 2", 4), 0);
	assert_int_equal(policy_eod_add_field(&r, "A: 1", 4), 0);
	assert_int_equal(top.len, 12);
	assert_memory_equal(top.data, "A: 1\r\nB: 2\r\n", 12);
	assert_false(r.top_full);
	char big[64];
	memset(big, 'x', sizeof(big));
	assert_int_equal(policy_eod_add_field(&r, big, 27), -1);
	assert_true(r.top_full);
	assert_int_equal(top.len, 12); /* nothing written */
	assert_int_equal(policy_eod_add_field(&r, big, 26), 0); /* exactly full */
	assert_int_equal(top.len, 40);
	buf_free(&top);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_sync_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_stops_chain, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_async_then_sync, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_tempfail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_custom_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_timeout_accept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_answer_before_timeout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_runs_are_independent, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_pending, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rerun_from_callback, setup, teardown),
	    cmocka_unit_test(test_eod_add_field),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
