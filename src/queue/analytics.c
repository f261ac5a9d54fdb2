/* analytics.c — delivery analytics in the queue process (analytics.h).
 * The counting sites run on the loop and the finish workers; the store is
 * written and read by one "analytics" worker thread only, so SQLite's
 * writes and fsyncs (at checkpoints) never block the loop or a delivery,
 * and a batch of events is one transaction (analytics.flush_interval). */
#include "queue/analytics.h"

#include "conf/conf.h"
#include "dauth/dmarcrep.h"
#include "lib/json.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

struct analytics {
	struct event_base *base;
	struct astats *stats;
	struct astore *store;
	struct workq *wq; /* one thread: the store's only user */
	struct event *timer;
	bool failing;    /* the last write failed: log the next success */
	char *spool_dir; /* for the DMARC records, <spool>/dmarc/ */
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
	an->spool_dir = xstrdup(conf->spool_dir);
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
	free(an->spool_dir);
	free(an);
}

/* ---- counting ---- */

void analytics_event(struct analytics *an, const char *rcpt, const char *sender, enum astats_ev ev,
                     uint64_t delay_us)
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

/* DMARC aggregate results: the records the queue appends for aggregate
 * reports (dauth/dmarcrep.h, one file per UTC day under <spool>/dmarc/),
 * read back and counted here, on the analytics thread. The domain filter
 * is the policy domain. */
#define ANALYTICS_DMARC_DOMAINS 256
#define ANALYTICS_DMARC_DAY_MAX (256u * 1024 * 1024)

struct analytics_dmarc_dom {
	char name[DMARC_DOMAIN_MAX + 1];
	uint64_t n, pass, disp[3];
};

struct analytics_dmarc {
	const struct astore_query *q;
	uint64_t total, pass, dkim, spf, disp[3];
	struct analytics_dmarc_dom *doms;
	size_t n_doms;
	uint64_t *days; /* per day of the range: messages, passed */
	size_t n_days;
};

static int analytics_dmarc_rec(const struct dmarcrep_rec *r, void *arg)
{
	struct analytics_dmarc *d = arg;
	const struct astore_query *q = d->q;
	if (r->time < q->from_h * 3600 || r->time >= (q->to_h + 1) * 3600)
		return 0;
	if (q->domain[0] != '\0' && strcasecmp(q->domain, r->policy_domain) != 0)
		return 0;
	bool pass = r->dkim_aligned || r->spf_aligned;
	unsigned disp = r->disposition < 3 ? r->disposition : 0;
	d->total++;
	d->pass += pass;
	d->dkim += r->dkim_aligned;
	d->spf += r->spf_aligned;
	d->disp[disp]++;
	size_t day = (size_t)((r->time - q->from_h * 3600) / 86400);
	if (day < d->n_days) {
		d->days[2 * day]++;
		d->days[2 * day + 1] += pass;
	}
	struct analytics_dmarc_dom *dom = NULL;
	for (size_t i = 0; i < d->n_doms && dom == NULL; i++)
		if (strcasecmp(d->doms[i].name, r->policy_domain) == 0)
			dom = &d->doms[i];
	if (dom == NULL && d->n_doms < ANALYTICS_DMARC_DOMAINS) {
		dom = &d->doms[d->n_doms++];
		snprintf(dom->name, sizeof(dom->name), "%s",
		         d->n_doms == ANALYTICS_DMARC_DOMAINS ? ASTATS_OTHER : r->policy_domain);
	} else if (dom == NULL) {
		dom = &d->doms[ANALYTICS_DMARC_DOMAINS - 1]; /* "(other)" */
	}
	dom->n++;
	dom->pass += pass;
	dom->disp[disp]++;
	return 0;
}

static int analytics_dmarc_cmp(const void *a, const void *b)
{
	const struct analytics_dmarc_dom *x = a, *y = b;
	return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->name, y->name);
}

static int analytics_dmarc_query(const char *spool_dir, const struct astore_query *q,
                                 struct buf *out, const char **error_r)
{
	static const char *const dn[] = {"none", "quarantine", "reject"};
	struct analytics_dmarc d = {.q = q};
	uint64_t from = q->from_h * 3600, to = q->to_h * 3600 + 3599;
	d.n_days = (size_t)((to - from) / 86400 + 1);
	d.days = xcalloc(2 * d.n_days, sizeof(*d.days));
	d.doms = xcalloc(ANALYTICS_DMARC_DOMAINS, sizeof(*d.doms));
	int rc = 0;
	/* Each UTC day file that overlaps the range, once. */
	for (uint64_t t = from - from % 86400; t <= to && rc == 0; t += 86400) {
		char day[9];
		struct dmarcrep_scan st;
		memset(&st, 0, sizeof(st));
		dmarcrep_day_name((time_t)t, day);
		if (dmarcrep_day_read(spool_dir, day, ANALYTICS_DMARC_DAY_MAX, analytics_dmarc_rec,
		                      &d, &st, error_r) < 0)
			rc = -1;
	}
	if (rc == 0) {
		buf_printf(out, "{\"kind\":\"dmarc\",\"from\":%llu,\"to\":%llu,\"domain\":",
		           (unsigned long long)from, (unsigned long long)to);
		json_append_cstr(out, q->domain);
		buf_printf(out,
		           ",\"total\":%llu,\"pass\":%llu,\"dkim_aligned\":%llu,"
		           "\"spf_aligned\":%llu,\"disposition\":{",
		           (unsigned long long)d.total, (unsigned long long)d.pass,
		           (unsigned long long)d.dkim, (unsigned long long)d.spf);
		for (int i = 0; i < 3; i++)
			buf_printf(out, "%s\"%s\":%llu", i > 0 ? "," : "", dn[i],
			           (unsigned long long)d.disp[i]);
		buf_append_str(out, "},\"days\":[");
		for (size_t i = 0, n = 0; i < d.n_days; i++)
			if (d.days[2 * i] > 0)
				buf_printf(out, "%s{\"t\":%llu,\"count\":%llu,\"pass\":%llu}",
				           n++ > 0 ? "," : "",
				           (unsigned long long)(from + i * 86400),
				           (unsigned long long)d.days[2 * i],
				           (unsigned long long)d.days[2 * i + 1]);
		buf_append_str(out, "],\"domains\":[");
		qsort(d.doms, d.n_doms, sizeof(*d.doms), analytics_dmarc_cmp);
		for (size_t i = 0; i < d.n_doms && i < ASTORE_LIST_MAX; i++) {
			buf_append_str(out, i > 0 ? ",{\"domain\":" : "{\"domain\":");
			json_append_cstr(out, d.doms[i].name);
			buf_printf(out, ",\"count\":%llu,\"pass\":%llu",
			           (unsigned long long)d.doms[i].n,
			           (unsigned long long)d.doms[i].pass);
			for (int k = 0; k < 3; k++)
				buf_printf(out, ",\"%s\":%llu", dn[k],
				           (unsigned long long)d.doms[i].disp[k]);
			buf_append_byte(out, '}');
		}
		if (buf_append_str(out, "]}\n") < 0) {
			*error_r = "answer too large";
			rc = -1;
		}
	}
	free(d.days);
	free(d.doms);
	return rc;
}

static void analytics_query_run(void *arg)
{
	struct analytics_req *r = arg;
	buf_init(&r->out, ASTORE_ANSWER_MAX);
	const char *error = NULL;
	if (r->q.kind == ASTORE_DMARC)
		r->rc = analytics_dmarc_query(r->an->spool_dir, &r->q, &r->out, &error);
	else
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
