/* policy.h — the asynchronous policy engine: a chain of checks per SMTP
 * stage (connect, HELO, MAIL, RCPT, DATA, end of data). A check may answer
 * now or later; each has a timeout and a failure mode (tempfail or accept).
 * The caller gets one verdict per run through a callback, possibly from
 * inside policy_run() itself.
 *
 * The engine knows nothing of SMTP sessions: a run carries an opaque
 * request that the stage's checks understand (policy_smtp.h for smtpd's).
 * Runs on the event loop of the process that owns the base. */
#ifndef HK_POLICY_POLICY_H
#define HK_POLICY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct policy;
struct policy_run;
struct policy_job;

enum policy_stage {
	POLICY_CONNECT,
	POLICY_HELO,
	POLICY_MAIL,
	POLICY_RCPT,
	POLICY_DATA,
	POLICY_EOD, /* end of data */
	POLICY_NSTAGES,
};

enum policy_result {
	POLICY_DUNNO, /* no objection: the next check decides */
	POLICY_OK,    /* accepted: the rest of the chain is skipped */
	POLICY_REPLY, /* refused (4xx or 5xx) with the verdict's reply */
};

/* What a check does when it does not answer in time. */
enum policy_failmode {
	POLICY_FAIL_TEMPFAIL, /* the job's tempfail reply (451 4.3.0 unless set) */
	POLICY_FAIL_ACCEPT,   /* as POLICY_DUNNO */
};

#define POLICY_TEXT_MAX 400

struct policy_verdict {
	enum policy_result result;
	int code;     /* POLICY_REPLY: 4xx or 5xx */
	char enh[16]; /* "4.7.25", "" for none */
	char text[POLICY_TEXT_MAX];
	const char *check; /* the check that decided; NULL for an accepted chain */
	bool timed_out;    /* decided by a check's timeout */
};

enum policy_cancel {
	POLICY_CANCEL_TIMEOUT, /* the check's timeout passed */
	POLICY_CANCEL_ABORT,   /* the run was cancelled (the session ended) */
};

struct policy_check {
	const char *name;
	enum policy_stage stage;
	/* Start the check for job (policy_job_request(), policy_job_ctx()).
	 * It ends with exactly one policy_job_done(), from inside start or
	 * later from the loop, unless the engine cancels it first. */
	void (*start)(struct policy_job *job);
	/* Stop a started, unfinished check: no policy_job_done() after this.
	 * May be NULL for checks that always answer inside start. */
	void (*cancel)(struct policy_job *job, enum policy_cancel why);
	uint64_t timeout_ms; /* 0: none (the check bounds itself) */
	enum policy_failmode failmode;
};

/* The verdict of a whole run; v is valid only during the call. */
typedef void policy_result_fn(const struct policy_verdict *v, void *arg);

struct policy *policy_create(struct event_base *base);
void policy_free(struct policy **p); /* no run may be in progress */
/* Append check to its stage's chain; ctx is handed to its jobs. */
void policy_add(struct policy *p, const struct policy_check *check, void *ctx);
size_t policy_count(const struct policy *p, enum policy_stage stage);

/* Run the chain of stage on req. cb is called exactly once, unless the run
 * is cancelled: from inside this call when every check answered at once
 * (then NULL is returned), else later (then the run's handle is returned
 * for policy_run_cancel()). */
struct policy_run *policy_run(struct policy *p, enum policy_stage stage, void *req,
                              policy_result_fn *cb, void *arg);
/* Cancel a run whose callback has not been called; clears *run. */
void policy_run_cancel(struct policy_run **run);

/* For checks. */
void *policy_job_request(const struct policy_job *job);
void *policy_job_ctx(const struct policy_job *job);
/* The check's own state between start and done or cancel. */
void policy_job_set_state(struct policy_job *job, void *state);
void *policy_job_state(const struct policy_job *job);
/* Override the check's timeout, failure mode and tempfail reply for this
 * job; only from inside start. */
void policy_job_set_timeout(struct policy_job *job, uint64_t ms, enum policy_failmode mode);
void policy_job_set_tempfail(struct policy_job *job, int code, const char *enh, const char *fmt,
                             ...) __attribute__((format(printf, 4, 5)));
void policy_job_done(struct policy_job *job, const struct policy_verdict *v);
/* Shorthands for policy_job_done(). */
void policy_job_dunno(struct policy_job *job);
void policy_job_ok(struct policy_job *job);
void policy_job_reply(struct policy_job *job, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Verdict helpers. */
void policy_verdict_set(struct policy_verdict *v, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
const char *policy_stage_name(enum policy_stage stage);

#endif
