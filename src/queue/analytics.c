/* analytics.c — delivery analytics in the queue process (analytics.h).
 * The counting sites run on the loop and the finish workers; the store is
 * written and read by one "analytics" worker thread only, so SQLite's
 * writes and fsyncs (at checkpoints) never block the loop or a delivery,
 * and a batch of events is one transaction (analytics.flush_interval). */
#include "queue/analytics.h"

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

struct analytics {
	struct event_base *base;
	struct astats *stats;
	struct astore *store;
	struct workq *wq; /* one thread: the store's only user */
	struct event *timer;
	bool failing; /* the last write failed: log the next success */
};

struct analytics_flush {
	struct analytics *an;
	struct astats_batch *batch;
	uint64_t now_h;
};

struct analytics_req {
	struct analytics *an;
	struct astore_query q;
	analytics_done_fn *done; /* NULL: cancelled */
	void *arg;
	struct buf out;
	int rc;
	const char *error;
	char errbuf[256];
};

static uint64_t analytics_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* ---- writing ---- */

static void analytics_write(struct analytics *an, struct astats_batch *b, uint64_t now_h)
{
	const char *error = NULL;
	char qe[LOG_Q_MAX];
	if (astore_apply(an->store, b, now_h, &error) < 0) {
		/* The batch is lost, the queue goes on: statistics are not
		 * mail. Logged once per failing stretch. */
		if (!an->failing)
			log_err("event=analytics_error op=write reason=%s", log_qs(qe, error));
		an->failing = true;
	} else if (an->failing) {
		log_info("event=analytics_recovered");
		an->failing = false;
	}
}

static void analytics_flush_run(void *arg)
{
	struct analytics_flush *f = arg;
	analytics_write(f->an, f->batch, f->now_h);
	astats_batch_free(&f->batch);
	free(f);
}

static void analytics_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct analytics *an = arg;
	struct analytics_flush *f = xcalloc(1, sizeof(*f));
	f->an = an;
	f->batch = astats_take(an->stats); /* NULL: only the hourly prune */
	f->now_h = analytics_now_us() / ASTATS_HOUR_US;
	workq_submit(an->wq, analytics_flush_run, NULL, f);
}

struct analytics *analytics_create(struct event_base *base, const struct conf *conf)
{
	const char *error = NULL;
	char qe[LOG_Q_MAX];
	struct astore *store = NULL;
	if (!conf->analytics.enabled)
		return NULL;
	if (astore_open(conf->spool_dir, conf->analytics.retention / 3600000,
	                (size_t)conf->analytics.top_domains, &store, &error) < 0) {
		log_err("event=analytics_error op=open reason=%s (analytics are off)",
		        log_qs(qe, error));
		return NULL;
	}
	struct analytics *an = xcalloc(1, sizeof(*an));
	an->base = base;
	an->store = store;
	an->stats = astats_create();
	an->wq = workq_create(base, 1, "analytics");
	an->timer = event_new(base, -1, EV_PERSIST, analytics_on_timer, an);
	uint64_t ms = conf->analytics.flush_interval;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_add(an->timer, &tv);
	return an;
}

void analytics_free(struct analytics **anp)
{
	struct analytics *an = *anp;
	if (an == NULL)
		return;
	*anp = NULL;
	event_free(an->timer);
	workq_free(&an->wq); /* the writes and queries in flight */
	struct astats_batch *b = astats_take(an->stats);
	if (b != NULL)
		analytics_write(an, b, analytics_now_us() / ASTATS_HOUR_US);
	astats_batch_free(&b);
	astats_free(&an->stats);
	astore_close(&an->store);
	free(an);
}

/* ---- counting ---- */

void analytics_event(struct analytics *an, const char *rcpt, const char *sender,
                     enum astats_ev ev, uint64_t delay_us)
{
	if (an != NULL)
		astats_event(an->stats, analytics_now_us(), rcpt, sender, ev, delay_us);
}

void analytics_reason(struct analytics *an, const char *rcpt, enum astats_ev kind,
                      const char *status, const char *diag)
{
	if (an != NULL)
		astats_reason(an->stats, analytics_now_us(), rcpt, kind, status, diag);
}

void analytics_tls(struct analytics *an, const char *tls_info)
{
	if (an != NULL)
		astats_tls(an->stats, analytics_now_us(), tls_info);
}

/* ---- queries ---- */

static void analytics_query_run(void *arg)
{
	struct analytics_req *r = arg;
	buf_init(&r->out, ASTORE_ANSWER_MAX);
	const char *error = NULL;
	r->rc = astore_query(r->an->store, &r->q, &r->out, &error);
	if (r->rc < 0) {
		snprintf(r->errbuf, sizeof(r->errbuf), "%s", error);
		r->error = r->errbuf;
	}
}

static void analytics_query_done(void *arg)
{
	struct analytics_req *r = arg;
	if (r->done != NULL)
		r->done(r->rc, &r->out, r->error, r->arg);
	buf_free(&r->out);
	free(r);
}

struct analytics_req *analytics_query(struct analytics *an, const struct astore_query *q,
                                      analytics_done_fn *done, void *arg)
{
	struct analytics_req *r = xcalloc(1, sizeof(*r));
	r->an = an;
	r->q = *q;
	r->done = done;
	r->arg = arg;
	workq_submit(an->wq, analytics_query_run, analytics_query_done, r);
	return r;
}

void analytics_cancel(struct analytics_req *r)
{
	if (r != NULL)
		r->done = NULL;
}
