/* qmgr.c — queue manager: a FIFO of ready messages, a bounded number of
 * deliveries in flight on worker threads, and retry timers with doubling
 * backoff. Runs on the main loop; delivery (Maildir writes, fsync, spool
 * updates) runs on the delivery worker threads.
 *
 * Delivery order per message: every pending recipient is delivered; the
 * successful ones are recorded as DONE in the envelope file when some remain,
 * and the message is removed once none remain. A crash between a Maildir
 * write and the DONE record duplicates that recipient's copy; nothing is
 * ever removed before it is delivered (DESIGN.md, spool contract). */
#include "queue/qmgr.h"
#include "conf/conf.h"
#include "deliver/maildir.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "mail/address.h"
#include "mail/envelope.h"
#include "queue/spool.h"

#include <errno.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

struct qmgr_item {
	struct qmgr *q;
	char qid[QID_LEN + 1];
	unsigned attempts;
	struct event *retry_ev; /* armed while waiting for a retry */
	/* results of the last attempt, filled by the worker */
	size_t delivered;
	size_t deferred;
	bool finished; /* removed from the spool */
	struct qmgr_item *next;
	struct qmgr_item *prev;
};

struct qmgr {
	struct event_base *base;
	const struct conf *conf;
	struct spool *spool;
	struct workq *wq;
	size_t max_active;
	size_t active;
	struct qmgr_item *ready_head; /* FIFO of items to start */
	struct qmgr_item *ready_tail;
	struct qmgr_item *waiting; /* items with an armed retry timer */
};

static void qmgr_dispatch(struct qmgr *q);

static uint64_t qmgr_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static void qmgr_ready_push(struct qmgr *q, struct qmgr_item *it)
{
	it->next = NULL;
	if (q->ready_tail != NULL)
		q->ready_tail->next = it;
	else
		q->ready_head = it;
	q->ready_tail = it;
}

static struct qmgr_item *qmgr_item_new(struct qmgr *q, const char *qid)
{
	struct qmgr_item *it = xcalloc(1, sizeof(*it));
	it->q = q;
	memcpy(it->qid, qid, QID_LEN);
	it->qid[QID_LEN] = '\0';
	return it;
}

static void qmgr_item_free(struct qmgr_item **itp)
{
	struct qmgr_item *it = *itp;
	if (it == NULL)
		return;
	*itp = NULL;
	if (it->retry_ev != NULL)
		event_free(it->retry_ev);
	free(it);
}

/* One recipient into its Maildir. Returns 0 delivered, -1 deferred. */
static int qmgr_deliver_rcpt(struct qmgr *q, const struct envelope *e,
			     const struct envelope_rcpt *r, const struct buf *data, char *err,
			     size_t errlen)
{
	const char *at = strrchr(r->addr, '@');
	char local[MAIL_LOCAL_MAX + 1], mailbox[MAILDIR_MAILBOX_MAX + 1];
	if (at == NULL || (size_t)(at - r->addr) >= sizeof(local)) {
		snprintf(err, errlen, "malformed recipient");
		return -1;
	}
	if (!conf_is_local_domain(q->conf, at + 1)) {
		/* Relayed mail (authenticated or trusted clients) waits here
		 * until outbound delivery exists. TODO(issue 4): MX/smarthost. */
		snprintf(err, errlen, "no outbound transport for remote domains yet");
		return -1;
	}
	memcpy(local, r->addr, (size_t)(at - r->addr));
	local[at - r->addr] = '\0';
	if (maildir_mailbox_name(local, mailbox) < 0) {
		snprintf(err, errlen, "unusable mailbox name");
		return -1;
	}
	struct maildir_msg m = {
		.data = data->data,
		.len = data->len,
		.return_path = e->sender,
		.delivered_to = r->addr,
		.hostname = q->conf->hostname,
	};
	return maildir_deliver(q->conf->maildir_root, at + 1, mailbox, &m, err, errlen);
}

static int qmgr_read_msg(struct qmgr *q, const char *qid, struct buf *data, const char **error_r)
{
	int fd = spool_msg_open(q->spool, qid);
	if (fd < 0) {
		*error_r = "cannot open message file";
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || buf_reserve(data, (size_t)st.st_size) < 0) {
		close(fd);
		*error_r = "cannot size message file";
		return -1;
	}
	for (;;) {
		ssize_t r = read(fd, data->data + data->len, data->cap - data->len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			close(fd);
			*error_r = "cannot read message file";
			return -1;
		}
		if (r == 0)
			break;
		data->len += (size_t)r;
		if (data->len + 1 >= data->cap && buf_reserve(data, 65536) < 0)
			break;
	}
	close(fd);
	return 0;
}

static void qmgr_log_delivery(const struct envelope *e, const struct envelope_rcpt *r,
			      uint64_t now, bool ok, const char *why)
{
	char qto[LOG_Q_MAX], qwhy[LOG_Q_MAX];
	double delay = (double)(now - e->arrival_us) / 1e6;
	if (ok)
		log_info("event=delivery qid=%s to=%s relay=maildir delay=%.3f dsn=2.0.0 "
			 "status=sent",
			 e->qid, log_qs(qto, r->addr), delay);
	else
		log_warn("event=delivery qid=%s to=%s relay=maildir delay=%.3f dsn=4.3.0 "
			 "status=deferred reason=%s",
			 e->qid, log_qs(qto, r->addr), delay, log_qs(qwhy, why));
}

/* Worker thread. */
static void qmgr_attempt_run(void *arg)
{
	struct qmgr_item *it = arg;
	struct qmgr *q = it->q;
	struct envelope e;
	struct buf data;
	const char *error = NULL;
	char qwhy[LOG_Q_MAX];

	envelope_init(&e);
	buf_init(&data, 0);
	it->delivered = it->deferred = 0;
	if (spool_env_load(q->spool, it->qid, &e, &error) < 0 ||
	    qmgr_read_msg(q, it->qid, &data, &error) < 0) {
		log_err("event=queue_error qid=%s reason=%s", it->qid, log_qs(qwhy, error));
		it->deferred = 1;
		goto out;
	}
	uint32_t *done = xcalloc(e.nrcpts, sizeof(*done));
	size_t ndone = 0;
	uint64_t now = qmgr_now_us();
	for (size_t i = 0; i < e.nrcpts; i++) {
		struct envelope_rcpt *r = &e.rcpts[i];
		char err[256];
		if (r->done)
			continue;
		bool ok = qmgr_deliver_rcpt(q, &e, r, &data, err, sizeof(err)) == 0;
		qmgr_log_delivery(&e, r, now, ok, err);
		if (ok) {
			r->done = true;
			done[ndone++] = (uint32_t)i;
		} else {
			it->deferred++;
		}
	}
	it->delivered = ndone;
	if (envelope_pending(&e) == 0) {
		if (spool_remove(q->spool, it->qid) == 0) {
			it->finished = true;
			log_info("event=removed qid=%s", it->qid);
		} else if (spool_mark_done(q->spool, it->qid, done, ndone, &error) == 0) {
			/* Everything is delivered but the files stay: with the
			 * DONE records written, a retry only removes them. */
			it->deferred = 1;
		}
		/* else: neither worked; the message stays in queue/ and the
		 * next start delivers it again (a duplicate, never a loss). */
	} else if (ndone > 0 && spool_mark_done(q->spool, it->qid, done, ndone, &error) < 0) {
		log_err("event=queue_error qid=%s reason=%s", it->qid, log_qs(qwhy, error));
	}
	free(done);
out:
	envelope_clear(&e);
	buf_free(&data);
}

static void qmgr_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct qmgr_item *it = arg;
	struct qmgr *q = it->q;
	/* unlink from the waiting list */
	if (it->prev != NULL)
		it->prev->next = it->next;
	else
		q->waiting = it->next;
	if (it->next != NULL)
		it->next->prev = it->prev;
	it->prev = NULL;
	qmgr_ready_push(q, it);
	qmgr_dispatch(q);
}

static void qmgr_schedule_retry(struct qmgr *q, struct qmgr_item *it)
{
	uint64_t delay = q->conf->queue.retry_min;
	for (unsigned i = 1; i < it->attempts && delay < q->conf->queue.retry_max; i++)
		delay *= 2;
	if (delay > q->conf->queue.retry_max)
		delay = q->conf->queue.retry_max;
	struct timeval tv = {.tv_sec = (time_t)(delay / 1000),
			     .tv_usec = (suseconds_t)((delay % 1000) * 1000)};
	if (it->retry_ev == NULL)
		it->retry_ev = evtimer_new(q->base, qmgr_on_retry, it);
	evtimer_add(it->retry_ev, &tv);
	it->prev = NULL;
	it->next = q->waiting;
	if (q->waiting != NULL)
		q->waiting->prev = it;
	q->waiting = it;
	log_info("event=deferred qid=%s attempts=%u retry_in=%llums", it->qid, it->attempts,
		 (unsigned long long)delay);
}

/* Loop thread. */
static void qmgr_attempt_done(void *arg)
{
	struct qmgr_item *it = arg;
	struct qmgr *q = it->q;
	q->active--;
	it->attempts++;
	if (it->finished || it->deferred == 0)
		qmgr_item_free(&it);
	else
		qmgr_schedule_retry(q, it);
	qmgr_dispatch(q);
}

static void qmgr_dispatch(struct qmgr *q)
{
	while (q->active < q->max_active && q->ready_head != NULL) {
		struct qmgr_item *it = q->ready_head;
		q->ready_head = it->next;
		if (q->ready_head == NULL)
			q->ready_tail = NULL;
		it->next = NULL;
		q->active++;
		workq_submit(q->wq, qmgr_attempt_run, qmgr_attempt_done, it);
	}
}

struct qmgr *qmgr_create(struct event_base *base, const struct conf *conf, struct spool *spool)
{
	struct qmgr *q = xcalloc(1, sizeof(*q));
	q->base = base;
	q->conf = conf;
	q->spool = spool;
	q->wq = workq_create(base, (unsigned)conf->queue.delivery_threads, "delivery");
	q->max_active = (size_t)conf->queue.delivery_threads * 2;
	return q;
}

void qmgr_enqueue(struct qmgr *q, const char *qid)
{
	qmgr_ready_push(q, qmgr_item_new(q, qid));
	qmgr_dispatch(q);
}

static void qmgr_recover_one(const char *qid, void *arg)
{
	struct qmgr *q = arg;
	qmgr_ready_push(q, qmgr_item_new(q, qid));
}

int qmgr_recover(struct qmgr *q, const char **error_r)
{
	int n = spool_recover(q->spool, qmgr_recover_one, q, error_r);
	if (n >= 0)
		qmgr_dispatch(q);
	return n;
}

size_t qmgr_active(const struct qmgr *q)
{
	return q->active;
}

void qmgr_free(struct qmgr **qp)
{
	struct qmgr *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	/* Queued-but-unstarted items must not start while we shut down. */
	struct qmgr_item *it = q->ready_head;
	q->ready_head = q->ready_tail = NULL;
	while (it != NULL) {
		struct qmgr_item *next = it->next;
		qmgr_item_free(&it);
		it = next;
	}
	workq_free(&q->wq); /* finishes in-flight attempts */
	it = q->waiting;
	while (it != NULL) {
		struct qmgr_item *next = it->next;
		qmgr_item_free(&it);
		it = next;
	}
	it = q->ready_head; /* attempts that ended during workq_free */
	while (it != NULL) {
		struct qmgr_item *next = it->next;
		qmgr_item_free(&it);
		it = next;
	}
	free(q);
}
