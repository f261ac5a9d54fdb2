/* policy.c — the asynchronous policy engine (policy.h): chains of checks
 * per stage, run one check after the other, each under its own timeout.
 *
 * A run walks its chain in a loop, not by recursion: a check that answers
 * from inside its start function is picked up by the loop, one that answers
 * later resumes the loop from its callback. So a chain of synchronous checks
 * costs no stack, and the caller's callback runs exactly once, after the run
 * is freed (it may start another run or free the caller's session).
 *
 * Runs on the event loop of the owning process. The requests carry hostile
 * data (addresses, names) that only the checks interpret. */
#include "policy/policy.h"
#include "lib/alloc.h"
#include "lib/log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct policy_entry {
	const struct policy_check *check;
	void *ctx;
};

struct policy {
	struct event_base *base;
	struct policy_entry *chain[POLICY_NSTAGES];
	size_t n[POLICY_NSTAGES];
};

struct policy_job {
	struct policy_run *run;
	const struct policy_check *check;
	void *ctx;
	void *state;
	uint64_t timeout_ms;
	enum policy_failmode failmode;
	struct policy_verdict tempfail; /* the answer of a timeout in tempfail mode */
	bool done;
	struct policy_verdict verdict;
};

struct policy_run {
	struct policy *p;
	enum policy_stage stage;
	void *req;
	policy_result_fn *cb;
	void *arg;
	size_t next; /* index of the next check in the chain */
	bool in_start;
	struct policy_job job;
	struct event *timer;
	struct policy_verdict final;
};

static const char *const policy_stage_names[POLICY_NSTAGES] = {
    "connect", "helo", "mail", "rcpt", "data", "eod",
};

const char *policy_stage_name(enum policy_stage stage)
{
	return stage < POLICY_NSTAGES ? policy_stage_names[stage] : "?";
}

struct policy *policy_create(struct event_base *base)
{
	struct policy *p = xcalloc(1, sizeof(*p));
	p->base = base;
	return p;
}

void policy_free(struct policy **pp)
{
	struct policy *p = *pp;
	if (p == NULL)
		return;
	*pp = NULL;
	for (size_t i = 0; i < POLICY_NSTAGES; i++)
		free(p->chain[i]);
	free(p);
}

void policy_add(struct policy *p, const struct policy_check *check, void *ctx)
{
	enum policy_stage st = check->stage;
	p->chain[st] = xrealloc(p->chain[st], (p->n[st] + 1) * sizeof(*p->chain[st]));
	p->chain[st][p->n[st]].check = check;
	p->chain[st][p->n[st]].ctx = ctx;
	p->n[st]++;
}

size_t policy_count(const struct policy *p, enum policy_stage stage)
{
	return p->n[stage];
}

static void policy_verdict_vset(struct policy_verdict *v, int code, const char *enh,
                                const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void policy_verdict_vset(struct policy_verdict *v, int code, const char *enh,
                                const char *fmt, va_list ap)
{
	v->result = POLICY_REPLY;
	v->code = code;
	snprintf(v->enh, sizeof(v->enh), "%s", enh != NULL ? enh : "");
	vsnprintf(v->text, sizeof(v->text), fmt, ap);
}

void policy_verdict_set(struct policy_verdict *v, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	policy_verdict_vset(v, code, enh, fmt, ap);
	va_end(ap);
}

/* Take the job's verdict: true when it ends the run (run->final set). */
static bool policy_run_decide(struct policy_run *run)
{
	struct policy_job *job = &run->job;
	if (job->verdict.result == POLICY_DUNNO)
		return false;
	run->final = job->verdict;
	run->final.check = job->check->name;
	return true;
}

static void policy_run_destroy(struct policy_run *run)
{
	if (run->timer != NULL)
		event_free(run->timer);
	free(run);
}

/* The run is over: free it, then tell the caller (who may free anything). */
static void policy_run_finish(struct policy_run *run)
{
	struct policy_verdict v = run->final;
	policy_result_fn *cb = run->cb;
	void *arg = run->arg;
	policy_run_destroy(run);
	cb(&v, arg);
}

static void policy_on_timeout(evutil_socket_t fd, short what, void *arg);

/* Start checks until one is pending (false) or the run is decided (true). */
static bool policy_run_step(struct policy_run *run)
{
	const struct policy *p = run->p;
	while (run->next < p->n[run->stage]) {
		const struct policy_entry *e = &p->chain[run->stage][run->next++];
		struct policy_job *job = &run->job;
		memset(job, 0, sizeof(*job));
		job->run = run;
		job->check = e->check;
		job->ctx = e->ctx;
		job->timeout_ms = e->check->timeout_ms;
		job->failmode = e->check->failmode;
		/* RFC 3463 X.3.0: a local check could not answer */
		policy_verdict_set(&job->tempfail, 451, "4.3.0",
		                   "Temporary local problem, try again later");
		run->in_start = true;
		e->check->start(job);
		run->in_start = false;
		if (!job->done) {
			if (job->timeout_ms > 0) {
				struct timeval tv = {
				    .tv_sec = (time_t)(job->timeout_ms / 1000),
				    .tv_usec = (suseconds_t)(job->timeout_ms % 1000 * 1000)};
				if (run->timer == NULL)
					run->timer = evtimer_new(p->base, policy_on_timeout, run);
				evtimer_add(run->timer, &tv);
			}
			return false;
		}
		if (policy_run_decide(run))
			return true;
	}
	memset(&run->final, 0, sizeof(run->final));
	run->final.result = POLICY_OK;
	return true;
}

/* A pending check answered (or timed out): go on with the chain. */
static void policy_run_continue(struct policy_run *run)
{
	if (run->timer != NULL)
		evtimer_del(run->timer);
	if (policy_run_decide(run) || policy_run_step(run))
		policy_run_finish(run);
}

static void policy_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct policy_run *run = arg;
	struct policy_job *job = &run->job;
	(void)fd;
	(void)what;
	if (job->check->cancel != NULL)
		job->check->cancel(job, POLICY_CANCEL_TIMEOUT);
	log_info("event=policy_timeout check=%s stage=%s timeout_ms=%llu action=%s",
	         job->check->name, policy_stage_name(run->stage),
	         (unsigned long long)job->timeout_ms,
	         job->failmode == POLICY_FAIL_ACCEPT ? "accept" : "tempfail");
	job->done = true;
	if (job->failmode == POLICY_FAIL_ACCEPT) {
		memset(&job->verdict, 0, sizeof(job->verdict));
		job->verdict.result = POLICY_DUNNO;
	} else {
		job->verdict = job->tempfail;
	}
	job->verdict.timed_out = true;
	policy_run_continue(run);
}

struct policy_run *policy_run(struct policy *p, enum policy_stage stage, void *req,
                              policy_result_fn *cb, void *arg)
{
	if (p->n[stage] == 0) {
		/* nothing to ask: no allocation on the common path */
		struct policy_verdict v = {.result = POLICY_OK};
		cb(&v, arg);
		return NULL;
	}
	struct policy_run *run = xcalloc(1, sizeof(*run));
	run->p = p;
	run->stage = stage;
	run->req = req;
	run->cb = cb;
	run->arg = arg;
	if (policy_run_step(run)) {
		policy_run_finish(run);
		return NULL;
	}
	return run;
}

void policy_run_cancel(struct policy_run **runp)
{
	struct policy_run *run = *runp;
	if (run == NULL)
		return;
	*runp = NULL;
	if (!run->job.done && run->job.check != NULL && run->job.check->cancel != NULL)
		run->job.check->cancel(&run->job, POLICY_CANCEL_ABORT);
	policy_run_destroy(run);
}

void *policy_job_request(const struct policy_job *job)
{
	return job->run->req;
}

void *policy_job_ctx(const struct policy_job *job)
{
	return job->ctx;
}

void policy_job_set_state(struct policy_job *job, void *state)
{
	job->state = state;
}

void *policy_job_state(const struct policy_job *job)
{
	return job->state;
}

void policy_job_set_timeout(struct policy_job *job, uint64_t ms, enum policy_failmode mode)
{
	job->timeout_ms = ms;
	job->failmode = mode;
}

void policy_job_set_tempfail(struct policy_job *job, int code, const char *enh, const char *fmt,
                             ...)
{
	va_list ap;
	va_start(ap, fmt);
	policy_verdict_vset(&job->tempfail, code, enh, fmt, ap);
	va_end(ap);
}

/* After this call job may be freed (the run went on and ended). */
void policy_job_done(struct policy_job *job, const struct policy_verdict *v)
{
	if (job->done)
		return;
	job->done = true;
	job->verdict = *v;
	job->verdict.timed_out = false;
	if (job->run->in_start)
		return; /* policy_run_step() picks it up */
	policy_run_continue(job->run);
}

void policy_job_dunno(struct policy_job *job)
{
	struct policy_verdict v = {.result = POLICY_DUNNO};
	policy_job_done(job, &v);
}

void policy_job_ok(struct policy_job *job)
{
	struct policy_verdict v = {.result = POLICY_OK};
	policy_job_done(job, &v);
}

void policy_job_reply(struct policy_job *job, int code, const char *enh, const char *fmt, ...)
{
	struct policy_verdict v;
	va_list ap;
	memset(&v, 0, sizeof(v));
	va_start(ap, fmt);
	policy_verdict_vset(&v, code, enh, fmt, ap);
	va_end(ap);
	policy_job_done(job, &v);
}
