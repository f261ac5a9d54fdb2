/* policy_limits.c — smtpd's rate limits and greylisting, on tables in
 * shared memory that the master creates, so that they hold across the
 * smtpd processes (lib/shmrate.h, lib/greytab.h):
 *   rate_mail   (MAIL, last) one message more for the client's network
 *               (IPv4 address, IPv6 /64; limits.message_rate) or for the
 *               authenticated user (limits.user_message_rate): past the
 *               limit 450 4.7.1.
 *   rate_rcpt   (RCPT, last) the same for recipients.
 *   greylist    (RCPT) the (client /24 or /64, sender, recipient) triplet
 *               must have been tried greylist.delay before: else 451 4.7.1.
 * access.allow networks are exempt from all three, authenticated clients
 * and DNSWL-listed ones from greylisting. A refusal is logged by smtpd's
 * rejection log, which is rate-suppressed.
 *
 * With state.redis (lib/rstate.h) the three ask Redis instead, shared by
 * several nodes: asynchronously, each under state.redis_timeout, and when
 * Redis is down or slow they follow state.redis_failure (451 4.3.0, or no
 * objection).
 *
 * Runs in smtpd on the event loop; the addresses are hostile (they are
 * only hashed, with a key the master chose, or stored as opaque octets
 * in Redis). */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "lib/greytab.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/rstate.h"
#include "lib/shmrate.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LIMITS_REDIS_BACKSTOP_MS 1000

static uint64_t limits_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The rate key of the user (kind 'u'.. with the name) or the client
 * network (kind 'c'..) into key, its length into *len; returns the limit
 * that applies (0: none). */
static uint64_t limits_key(const struct policy_client *c, char what, uint64_t user_limit,
                           uint64_t client_limit, unsigned char key[2 + 17 + 256], size_t *len)
{
	if (c->auth_user != NULL) {
		size_t ulen = strnlen(c->auth_user, 255);
		key[0] = 'u';
		key[1] = (unsigned char)what;
		memcpy(key + 2, c->auth_user, ulen);
		*len = 2 + ulen;
		return user_limit;
	}
	key[0] = 'c';
	key[1] = (unsigned char)what;
	*len = 2 + policy_client_net_key(&c->ss, 32, key + 2);
	return client_limit;
}

/* A check waiting for Redis. */
struct limits_wait {
	struct policy_job *job;
	struct rstate_req *req;
	char what; /* 'm', 'r', 'g' */
	char rcpt[MAIL_LOCAL_MAX + MAIL_DOMAIN_MAX + 2];
};

/* Redis did not answer (down, an error): state.redis_failure. */
static void limits_redis_failed(struct policy_smtp *ps, struct policy_job *job)
{
	if (ps->conf->state.redis_failure == CONF_STATE_FAIL_ACCEPT)
		policy_job_dunno(job);
	else
		policy_job_reply(job, 451, "4.3.0", "Error: temporary failure, try again later");
}

static void limits_rate_refuse(struct policy_job *job, char what)
{
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	policy_job_reply(job, 450, "4.7.1",
	                 "Error: too many %s from %s%s%s, slow down and try again later",
	                 what == 'm' ? "messages" : "recipients",
	                 c->auth_user != NULL ? "user " : "[",
	                 c->auth_user != NULL ? c->auth_user : c->addr,
	                 c->auth_user != NULL ? "" : "]");
}

static void greylist_answer(struct policy_job *job, const char *rcpt, long long v);

static void limits_on_redis(bool ok, long long value, void *arg)
{
	struct limits_wait *w = arg;
	struct policy_job *job = w->job;
	struct policy_smtp *ps = policy_job_ctx(job);
	char what = w->what;
	char rcpt[sizeof(w->rcpt)];
	memcpy(rcpt, w->rcpt, sizeof(rcpt));
	w->req = NULL;
	policy_job_set_state(job, NULL);
	free(w);
	if (!ok)
		limits_redis_failed(ps, job);
	else if (what == 'g')
		greylist_answer(job, rcpt, value);
	else if (value == 1)
		policy_job_dunno(job);
	else
		limits_rate_refuse(job, what);
}

static void limits_redis_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct limits_wait *w = policy_job_state(job);
	(void)why;
	if (w == NULL)
		return;
	rstate_cancel(&w->req);
	policy_job_set_state(job, NULL);
	free(w);
}

/* Start waiting for Redis: the job's timeout and failure mode from
 * state.redis_*; req NULL when the callback already answered. */
static struct limits_wait *limits_wait_new(struct policy_smtp *ps, struct policy_job *job,
                                           char what)
{
	struct limits_wait *w = xcalloc(1, sizeof(*w));
	w->job = job;
	w->what = what;
	/* rstate answers within state.redis_timeout itself (a failure,
	 * logged rate-suppressed); the engine's timeout is only a backstop. */
	policy_job_set_timeout(job, ps->conf->state.redis_timeout + LIMITS_REDIS_BACKSTOP_MS,
	                       ps->conf->state.redis_failure == CONF_STATE_FAIL_ACCEPT
	                           ? POLICY_FAIL_ACCEPT
	                           : POLICY_FAIL_TEMPFAIL);
	policy_job_set_state(job, w);
	return w;
}

static void limits_rate_start(struct policy_job *job, char what, uint64_t user_limit,
                              uint64_t client_limit)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	const struct conf_limits *l = &ps->conf->limits;
	unsigned char key[2 + 17 + 256];
	size_t len;
	uint64_t limit = limits_key(c, what, user_limit, client_limit, key, &len);
	if ((ps->rates == NULL && ps->redis == NULL) || c->access == POLICY_ACCESS_ALLOW ||
	    limit == 0) {
		policy_job_dunno(job);
		return;
	}
	if (ps->redis != NULL) {
		struct limits_wait *w = limits_wait_new(ps, job, what);
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
		struct rstate_req *r = rstate_rate_take(ps->redis, key, len, (unsigned)limit,
		                                        l->rate_window, now, limits_on_redis, w);
		if (r != NULL)
			w->req = r;
		return;
	}
	if (shmrate_take(ps->rates, key, len, (unsigned)limit, l->rate_window, limits_now_ms()))
		policy_job_dunno(job);
	else
		limits_rate_refuse(job, what);
}

static void rate_mail_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	const struct conf_limits *l = &ps->conf->limits;
	limits_rate_start(job, 'm', l->user_message_rate, l->message_rate);
}

const struct policy_check policy_check_rate_mail = {
    .name = "rate_mail",
    .stage = POLICY_MAIL,
    .start = rate_mail_start,
    .cancel = limits_redis_cancel,
};

static void rate_rcpt_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	const struct conf_limits *l = &ps->conf->limits;
	limits_rate_start(job, 'r', l->user_recipient_rate, l->recipient_rate);
}

const struct policy_check policy_check_rate_rcpt = {
    .name = "rate_rcpt",
    .stage = POLICY_RCPT,
    .start = rate_rcpt_start,
    .cancel = limits_redis_cancel,
};

/* Lowercase copy of s into key at *len (bounded), then a NUL. */
static void greylist_key_add(unsigned char *key, size_t *len, size_t cap, const char *s)
{
	for (; *s != '\0' && *len + 1 < cap; s++)
		key[(*len)++] = (unsigned char)tolower((unsigned char)*s);
	key[(*len)++] = '\0';
}

/* v: 0 pass, > 0 a new triplet (seconds to wait), < 0 an early retry. */
static void greylist_answer(struct policy_job *job, const char *rcpt, long long v)
{
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	char q1[LOG_Q_MAX], q2[LOG_Q_MAX];
	log_info("event=greylist sid=%s client=%s from=%s to=%s result=%s", c->sid, c->addr,
	         log_qs(q1, req->sender != NULL ? req->sender : ""), log_qs(q2, rcpt),
	         v == 0  ? "pass"
	         : v > 0 ? "new"
	                 : "early");
	if (v == 0) {
		policy_job_dunno(job);
		return;
	}
	unsigned long long wait = v > 0 ? (unsigned long long)v : (unsigned long long)-v;
	policy_job_reply(job, 451, "4.7.1",
	                 "<%s>: Recipient address rejected: Greylisted, try again in %llu seconds",
	                 rcpt, wait);
}

static void greylist_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	const struct conf_greylist *g = &ps->conf->greylist;
	if (!g->enabled || (ps->grey == NULL && ps->redis == NULL) || c->auth_user != NULL ||
	    c->access == POLICY_ACCESS_ALLOW || c->dnswl || req->rcpt.to == NULL) {
		policy_job_dunno(job);
		return;
	}
	unsigned char key[17 + 2 * 600];
	size_t len = policy_client_net_key(&c->ss, 24, key);
	char rcpt[MAIL_LOCAL_MAX + MAIL_DOMAIN_MAX + 2];
	snprintf(rcpt, sizeof(rcpt), "%s@%s", req->rcpt.to->local, req->rcpt.to->domain);
	greylist_key_add(key, &len, sizeof(key) / 2, req->sender != NULL ? req->sender : "");
	greylist_key_add(key, &len, sizeof(key), rcpt);
	if (ps->redis != NULL) {
		struct limits_wait *w = limits_wait_new(ps, job, 'g');
		snprintf(w->rcpt, sizeof(w->rcpt), "%s", rcpt);
		struct rstate_req *r = rstate_grey_check(
		    ps->redis, key, len, (uint64_t)time(NULL), (uint32_t)(g->delay / 1000),
		    (uint32_t)(g->retry_window / 1000), (uint32_t)(g->retention / 1000),
		    limits_on_redis, w);
		if (r != NULL)
			w->req = r;
		return;
	}
	struct greytab_times tm = {
	    .delay = (uint32_t)(g->delay / 1000),
	    .retry_window = (uint32_t)(g->retry_window / 1000),
	    .retention = (uint32_t)(g->retention / 1000),
	};
	uint32_t wait = 0;
	enum greytab_result r = greytab_check(ps->grey, key, len, (uint32_t)time(NULL), &tm, &wait);
	greylist_answer(job, rcpt,
	                r == GREYTAB_PASS  ? 0
	                : r == GREYTAB_NEW ? (long long)(wait > 0 ? wait : 1)
	                                   : -(long long)(wait > 0 ? wait : 1));
}

const struct policy_check policy_check_greylist = {
    .name = "greylist",
    .stage = POLICY_RCPT,
    .start = greylist_start,
    .cancel = limits_redis_cancel,
};
