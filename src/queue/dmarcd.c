/* dmarcd.c — the daily DMARC aggregate report run in the queue process
 * (dmarcd.h). The timer is on the loop thread; the run (files, DNS on its
 * own event base, the local submission socket) on a worker thread of its
 * own, since it blocks. Inputs: the day files the queue wrote itself
 * (checked again by the reader) and DNS answers. */
#include "queue/dmarcd.h"

#include "conf/conf.h"
#include "dauth/dmarcrep.h"
#include "dauth/dmarcrep_report.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"

#include <event2/event.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

#define DMARCD_FIRST_S 15         /* the catch-up run after a start (smtpd is up by then) */
#define DMARCD_AT_S (5 * 60)      /* 00:05 UTC */
#define DMARCD_JITTER_S (10 * 60) /* plus up to this much: not every server at once */
#define DMARCD_RETRY_S 3600

struct dmarcd {
	struct event_base *base;
	const struct conf *conf;
	struct workq *wq;
	struct event *timer;
	bool busy;
	bool retry; /* the last run left something to send */
	pthread_mutex_t lock;
	bool stopping;
	int fd; /* the submission in progress, -1 none */
};

static void dmarcd_on_fd(void *arg, int fd)
{
	struct dmarcd *d = arg;
	pthread_mutex_lock(&d->lock);
	d->fd = fd;
	if (d->stopping && fd >= 0)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&d->lock);
}

static bool dmarcd_stopping(void *arg)
{
	struct dmarcd *d = arg;
	pthread_mutex_lock(&d->lock);
	bool s = d->stopping;
	pthread_mutex_unlock(&d->lock);
	return s;
}

/* Worker: every finished day of the last DMARCD_CATCHUP_DAYS not done. */
static void dmarcd_run(void *arg)
{
	struct dmarcd *d = arg;
	time_t now = time(NULL);
	bool retry = false;
	for (int back = DMARCD_CATCHUP_DAYS; back >= 1 && !dmarcd_stopping(d); back--) {
		char day[9];
		dmarcrep_day_name(now - (time_t)back * 86400, day);
		if (dmarcrep_day_done(d->conf->spool_dir, day))
			continue;
		struct dmarcrep_opts o = {
		    .day = day, .on_fd = dmarcd_on_fd, .stopping = dmarcd_stopping, .arg = d};
		const char *error = NULL;
		int rc = dmarcrep_run(d->conf, &o, &error);
		if (rc < 0)
			log_warn("event=dmarc_report_failed day=%s error=\"%s\"", day, error);
		if (rc == 1)
			retry = true;
	}
	d->retry = retry; /* read by dmarcd_done on the loop, after this returns */
}

/* Seconds until the next 00:05 UTC plus the jitter. */
static long dmarcd_next(void)
{
	time_t now = time(NULL);
	long into = (long)(now % 86400);
	long wait = DMARCD_AT_S - into;
	if (wait <= 0)
		wait += 86400;
	unsigned char r[2] = {0};
	(void)RAND_bytes(r, sizeof(r));
	return wait + (long)((r[0] << 8 | r[1]) % DMARCD_JITTER_S);
}

static void dmarcd_arm(struct dmarcd *d, long s)
{
	struct timeval tv = {(time_t)s, 0};
	evtimer_add(d->timer, &tv);
}

static void dmarcd_done(void *arg)
{
	struct dmarcd *d = arg;
	d->busy = false;
	long next = dmarcd_next();
	if (d->retry && next > DMARCD_RETRY_S)
		next = DMARCD_RETRY_S;
	dmarcd_arm(d, next);
}

static void dmarcd_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct dmarcd *d = arg;
	(void)fd;
	(void)what;
	if (d->busy)
		return;
	d->busy = true;
	workq_submit(d->wq, dmarcd_run, dmarcd_done, d);
}

struct dmarcd *dmarcd_create(struct event_base *base, const struct conf *conf)
{
	struct dmarcd *d = xcalloc(1, sizeof(*d));
	d->base = base;
	d->conf = conf;
	d->fd = -1;
	pthread_mutex_init(&d->lock, NULL);
	d->wq = workq_create(base, 1, "dmarc");
	d->timer = evtimer_new(base, dmarcd_on_timer, d);
	dmarcd_arm(d, DMARCD_FIRST_S);
	return d;
}

void dmarcd_free(struct dmarcd **dp)
{
	struct dmarcd *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	/* A submission in progress waits on this process's own loop (the
	 * commit): cut it; the report is sent again at the next run. */
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	if (d->fd >= 0)
		shutdown(d->fd, SHUT_RDWR);
	pthread_mutex_unlock(&d->lock);
	event_free(d->timer);
	workq_free(&d->wq);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
