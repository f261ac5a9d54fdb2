/* qmgr_ctl.c — queue control: what `hikyaku queue list|show|flush|delete|
 * hold|release` does inside the daemon (issue 4). Runs in the queue manager
 * on the main loop; the control socket (ctl/ctl_server.c) calls it with a
 * request from the CLI.
 *
 * Every request starts with a look at the spool on this module's own worker
 * thread (the spool is never read on the loop): one envelope, or the whole
 * queue/ directory. Back on the loop the answer merges what the spool says
 * with what the queue manager knows: a message waiting for its retry timer
 * is "deferred", one with ENVELOPE_SCHED_HELD is "held", anything else is
 * "active" (being delivered, or about to be).
 *
 * Changing a message follows one rule: the files of a message are written
 * only when no delivery attempt uses them. A waiting message is taken out of
 * the queue manager first; a parked (held) message is not in it at all; a
 * message in flight gets the change recorded here and applied when its
 * attempt ends (qmgr_ctl_intercept(), called by qmgr.c before the message
 * would wait for its next retry). The table of these states is bounded by
 * the number of held messages plus the requests in flight.
 *
 * Hostile inputs: the request argument (checked: a qid must be valid, a
 * domain is only compared), and the spool contents (the strict record
 * decoder; file names are checked before use). */
#include "queue/qmgr_ctl.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "queue/qmgr.h"
#include "queue/qmgr_int.h"
#include "queue/spool.h"
#include "sched/sched.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define QMGR_CTL_ARG_MAX 255

/* Where a message stands for the control interface. */
enum qmgr_ctl_est {
	QMGR_CTL_PARKED,         /* held: in the spool only */
	QMGR_CTL_PENDING_HOLD,   /* in flight: hold when the attempt ends */
	QMGR_CTL_PENDING_DELETE, /* in flight: delete when the attempt ends */
	QMGR_CTL_BUSY,           /* a control job is writing its files */
};

struct qmgr_ctl_entry {
	char qid[QID_LEN + 1];
	enum qmgr_ctl_est st;
};

struct qmgr_ctl {
	struct qmgr *q;
	struct workq *wq; /* one thread: spool scans and control writes */
	struct qmgr_ctl_entry *tab;
	size_t n_tab;
	size_t cap_tab;
};

struct qmgr_ctl_job {
	struct qmgr_ctl *c;
	enum qmgr_ctl_op op;
	char arg[QMGR_CTL_ARG_MAX + 1];
	qmgr_ctl_done_fn *done; /* NULL for work started by an attempt's end */
	void *done_arg;
	struct qmgr_msg *m; /* taken out of the queue manager for a write */
	/* set by the worker */
	struct qmgr_ctl_item *items;
	size_t n_items;
	size_t cap_items;
	bool truncated;
	int rc;
	const char *error;
	bool expired; /* RELEASE of a message past delivery.max_lifetime */
};

/* ---- the table ---- */

size_t qmgr_ctl_held(const struct qmgr_ctl *c)
{
	size_t n = 0;
	for (size_t i = 0; c != NULL && i < c->n_tab; i++)
		n += c->tab[i].st == QMGR_CTL_PARKED;
	return n;
}

static struct qmgr_ctl_entry *qmgr_ctl_find(struct qmgr_ctl *c, const char *qid)
{
	if (c == NULL)
		return NULL;
	for (size_t i = 0; i < c->n_tab; i++) {
		if (memcmp(c->tab[i].qid, qid, QID_LEN) == 0)
			return &c->tab[i];
	}
	return NULL;
}

static struct qmgr_ctl_entry *qmgr_ctl_set(struct qmgr_ctl *c, const char *qid,
                                           enum qmgr_ctl_est st)
{
	struct qmgr_ctl_entry *e = qmgr_ctl_find(c, qid);
	if (e == NULL) {
		if (c->n_tab == c->cap_tab) {
			c->cap_tab = c->cap_tab ? c->cap_tab * 2 : 16;
			c->tab = xreallocarray(c->tab, c->cap_tab, sizeof(*c->tab));
		}
		e = &c->tab[c->n_tab++];
		memcpy(e->qid, qid, QID_LEN);
		e->qid[QID_LEN] = '\0';
	}
	e->st = st;
	return e;
}

static void qmgr_ctl_unset(struct qmgr_ctl *c, const char *qid)
{
	struct qmgr_ctl_entry *e = qmgr_ctl_find(c, qid);
	if (e != NULL)
		*e = c->tab[--c->n_tab];
}

/* ---- the queue manager's memory ---- */

static struct qmgr_msg *qmgr_ctl_waiting(struct qmgr *q, const char *qid, size_t *idx_r)
{
	for (size_t i = 0; i < q->n_waiting; i++) {
		if (memcmp(q->waiting[i]->qid, qid, QID_LEN) == 0) {
			if (idx_r != NULL)
				*idx_r = i;
			return q->waiting[i];
		}
	}
	return NULL;
}

static struct qmgr_msg *qmgr_ctl_ready(struct qmgr *q, const char *qid)
{
	for (struct qmgr_msg *m = q->ready_head; m != NULL; m = m->next) {
		if (memcmp(m->qid, qid, QID_LEN) == 0)
			return m;
	}
	return NULL;
}

static void qmgr_ctl_ready_push(struct qmgr *q, struct qmgr_msg *m)
{
	m->next = NULL;
	if (q->ready_tail != NULL)
		q->ready_tail->next = m;
	else
		q->ready_head = m;
	q->ready_tail = m;
}

/* Take a waiting or ready message out of the queue manager, for a write to
 * its files; NULL when it is in neither (in flight, parked, or unknown). */
static struct qmgr_msg *qmgr_ctl_take(struct qmgr *q, const char *qid)
{
	size_t i;
	struct qmgr_msg *m = qmgr_ctl_waiting(q, qid, &i);
	if (m != NULL) {
		q->waiting[i] = q->waiting[--q->n_waiting];
		evtimer_del(m->timer);
		return m;
	}
	struct qmgr_msg *prev = NULL;
	for (m = q->ready_head; m != NULL; prev = m, m = m->next) {
		if (memcmp(m->qid, qid, QID_LEN) != 0)
			continue;
		if (prev != NULL)
			prev->next = m->next;
		else
			q->ready_head = m->next;
		if (q->ready_tail == m)
			q->ready_tail = prev;
		m->next = NULL;
		return m;
	}
	return NULL;
}

/* Move one waiting message to the ready FIFO, forced (qmgr_flush()). */
static bool qmgr_ctl_flush_one(struct qmgr *q, const char *qid)
{
	size_t i;
	struct qmgr_msg *m = qmgr_ctl_waiting(q, qid, &i);
	if (m == NULL)
		return false;
	q->waiting[i] = q->waiting[--q->n_waiting];
	evtimer_del(m->timer);
	m->force = true;
	qmgr_ctl_ready_push(q, m);
	return true;
}

/* ---- worker side ---- */

static int qmgr_ctl_item_cmp(const void *a, const void *b)
{
	const struct qmgr_ctl_item *x = a, *y = b;
	if (x->env.arrival_us != y->env.arrival_us)
		return x->env.arrival_us < y->env.arrival_us ? -1 : 1;
	return strcmp(x->env.qid, y->env.qid);
}

static struct qmgr_ctl_item *qmgr_ctl_item_add(struct qmgr_ctl_job *j)
{
	if (j->n_items == j->cap_items) {
		j->cap_items = j->cap_items ? j->cap_items * 2 : 16;
		j->items = xreallocarray(j->items, j->cap_items, sizeof(*j->items));
	}
	struct qmgr_ctl_item *it = &j->items[j->n_items];
	memset(it, 0, sizeof(*it));
	envelope_init(&it->env);
	buf_init(&it->headers, QMGR_CTL_HEADERS_MAX + 1);
	return it;
}

size_t qmgr_ctl_header_len(const unsigned char *p, size_t len)
{
	/* RFC 5322 §2.1: the header section ends at the first empty line. */
	if (len >= 1 && p[0] == '\n')
		return 0;
	if (len >= 2 && p[0] == '\r' && p[1] == '\n')
		return 0;
	for (size_t i = 0; i + 1 < len; i++) {
		if (p[i] != '\n')
			continue;
		if (p[i + 1] == '\n' || (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n'))
			return i + 1;
	}
	return len;
}

static void qmgr_ctl_read_headers(struct spool *spool, const char *qid, struct buf *out)
{
	uint64_t len = 0;
	int fd = spool_msg_open(spool, qid, &len);
	if (fd < 0 || buf_reserve(out, QMGR_CTL_HEADERS_MAX) < 0) {
		if (fd >= 0)
			close(fd);
		return;
	}
	size_t want = len < QMGR_CTL_HEADERS_MAX ? (size_t)len : QMGR_CTL_HEADERS_MAX;
	while (out->len < want) {
		ssize_t n = read(fd, out->data + out->len, want - out->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		out->len += (size_t)n;
	}
	close(fd);
	out->len = qmgr_ctl_header_len(out->data, out->len);
	out->data[out->len] = '\0';
}

/* One envelope (SHOW and the qid requests). */
static void qmgr_ctl_load_run(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct spool *spool = j->c->q->spool;
	struct qmgr_ctl_item *it = qmgr_ctl_item_add(j);
	const char *error = NULL;
	if (spool_env_load(spool, j->arg, &it->env, &error) < 0) {
		envelope_clear(&it->env);
		buf_free(&it->headers);
		j->rc = -1;
		j->error = error;
		return;
	}
	j->n_items = 1;
	if (j->op == QMGR_CTL_SHOW)
		qmgr_ctl_read_headers(spool, j->arg, &it->headers);
}

/* Every envelope in queue/ (LIST, FLUSH_DOMAIN). A message removed while
 * we read is simply not listed. */
static void qmgr_ctl_scan_run(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct spool *spool = j->c->q->spool;
	char path[4096];
	snprintf(path, sizeof(path), "%s/queue", spool_dir(spool));
	DIR *d = opendir(path);
	if (d == NULL) {
		j->rc = -1;
		j->error = "cannot read the queue directory";
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		char qid[QID_LEN + 1];
		if (!spool_name_qid(name, qid))
			continue;
		if (j->n_items >= QMGR_CTL_LIST_MAX) {
			j->truncated = true;
			break;
		}
		struct qmgr_ctl_item *it = qmgr_ctl_item_add(j);
		if (spool_env_load(spool, qid, &it->env, NULL) < 0) {
			envelope_clear(&it->env);
			buf_free(&it->headers);
			continue;
		}
		j->n_items++;
	}
	closedir(d);
	if (j->n_items > 1) /* items is NULL for an empty queue: qsort wants non-NULL */
		qsort(j->items, j->n_items, sizeof(*j->items), qmgr_ctl_item_cmp);
}

/* HOLD, RELEASE, DELETE: no delivery attempt uses the files now. */
static void qmgr_ctl_write_run(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct spool *spool = j->c->q->spool;
	struct envelope e;
	const char *error = NULL;
	if (j->op == QMGR_CTL_DELETE) {
		j->rc = spool_remove(spool, j->arg);
		j->error = "cannot remove the message from the spool";
		return;
	}
	envelope_init(&e);
	j->rc = spool_env_load(spool, j->arg, &e, &error);
	if (j->rc == 0) {
		/* A SCHED record with no DONE indexes: only the flags change;
		 * a released message is due at once. Held mail does not expire
		 * while held; released past its lifetime, it gets one attempt
		 * and what fails then fails for good (as in Postfix). */
		uint32_t flags = e.sched_flags;
		uint64_t next = e.next_try_us;
		if (j->op == QMGR_CTL_HOLD) {
			flags |= ENVELOPE_SCHED_HELD;
		} else {
			flags &= ~(uint32_t)ENVELOPE_SCHED_HELD;
			next = sched_now_us();
			j->expired = sched_expired(j->c->q->conf, &e, next);
		}
		j->rc = spool_mark(spool, j->arg, NULL, 0, next, e.attempts, flags, &error);
	}
	j->error = error;
	envelope_clear(&e);
}

/* ---- answers ---- */

static void qmgr_ctl_job_free(struct qmgr_ctl_job *j)
{
	for (size_t i = 0; i < j->n_items; i++) {
		envelope_clear(&j->items[i].env);
		buf_free(&j->items[i].headers);
	}
	free(j->items);
	free(j);
}

static void qmgr_ctl_reply(struct qmgr_ctl_job *j, int status, size_t count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Answer and free the job. */
static void qmgr_ctl_reply(struct qmgr_ctl_job *j, int status, size_t count, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (j->done != NULL) {
		struct qmgr_ctl_result r = {
		    .status = status,
		    .message = msg,
		    .count = count,
		    .items = status == 0 ? j->items : NULL,
		    .n_items = status == 0 ? j->n_items : 0,
		};
		j->done(&r, j->done_arg);
	}
	qmgr_ctl_job_free(j);
}

/* What the loop knows about one spooled message. */
static void qmgr_ctl_item_merge(struct qmgr_ctl *c, struct qmgr_ctl_item *it)
{
	struct qmgr *q = c->q;
	struct qmgr_msg *m = qmgr_ctl_waiting(q, it->env.qid, NULL);
	struct qmgr_ctl_entry *e = qmgr_ctl_find(c, it->env.qid);
	if (m == NULL)
		m = qmgr_ctl_ready(q, it->env.qid);
	it->state = "active";
	it->next_try_us = 0;
	if (it->env.sched_flags & ENVELOPE_SCHED_HELD) {
		it->state = "held";
	} else if (m != NULL && m->timer != NULL && evtimer_pending(m->timer, NULL)) {
		struct timeval tv;
		it->state = "deferred";
		/* libevent reports a pending timeout in wall-clock time. */
		if (evtimer_pending(m->timer, &tv))
			it->next_try_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
	}
	if (it->next_try_us == 0 && !(it->env.sched_flags & ENVELOPE_SCHED_HELD))
		it->next_try_us = it->env.next_try_us;
	if (m != NULL)
		snprintf(it->last_error, sizeof(it->last_error), "%s", m->last_error);
	if (e != NULL && e->st == QMGR_CTL_PENDING_HOLD)
		it->action = "hold";
	else if (e != NULL && e->st == QMGR_CTL_PENDING_DELETE)
		it->action = "delete";
}

static bool qmgr_ctl_item_exists(const struct qmgr_ctl_job *j, const char *qid)
{
	for (size_t i = 0; i < j->n_items; i++) {
		if (strcmp(j->items[i].env.qid, qid) == 0)
			return true;
	}
	return false;
}

/* Forget table entries of messages that left the spool (an attempt that
 * delivered everything ends without qmgr_ctl_intercept()). */
static void qmgr_ctl_prune(struct qmgr_ctl *c, const struct qmgr_ctl_job *j)
{
	if (j->truncated)
		return;
	for (size_t i = 0; i < c->n_tab;) {
		if (c->tab[i].st != QMGR_CTL_BUSY && !qmgr_ctl_item_exists(j, c->tab[i].qid))
			c->tab[i] = c->tab[--c->n_tab];
		else
			i++;
	}
}

static bool qmgr_ctl_domain_pending(const struct envelope *e, const char *domain)
{
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (!e->rcpts[i].done && strcasecmp(qmgr_domain_of(e->rcpts[i].addr), domain) == 0)
			return true;
	}
	return false;
}

static void qmgr_ctl_scan_done(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct qmgr_ctl *c = j->c;
	char qd[LOG_Q_MAX];
	if (j->rc < 0) {
		qmgr_ctl_reply(j, -1, 0, "%s", j->error);
		return;
	}
	qmgr_ctl_prune(c, j);
	if (j->op == QMGR_CTL_LIST) {
		for (size_t i = 0; i < j->n_items; i++)
			qmgr_ctl_item_merge(c, &j->items[i]);
		qmgr_ctl_reply(j, 0, j->n_items, "%zu messages%s", j->n_items,
		               j->truncated ? " (list truncated)" : "");
		return;
	}
	size_t n = 0;
	for (size_t i = 0; i < j->n_items; i++) {
		const struct envelope *e = &j->items[i].env;
		if (qmgr_ctl_domain_pending(e, j->arg) && qmgr_ctl_flush_one(c->q, e->qid))
			n++;
	}
	log_info("event=flush messages=%zu domain=%s by=control", n, log_qs(qd, j->arg));
	qmgr_dispatch(c->q);
	qmgr_ctl_reply(j, 0, n, "%zu message%s flushed", n, n == 1 ? "" : "s");
}

static void qmgr_ctl_write_done(void *arg);

/* Start the write job for a message that nothing else touches now. */
static void qmgr_ctl_write_start(struct qmgr_ctl_job *j, struct qmgr_msg *m)
{
	qmgr_ctl_set(j->c, j->arg, QMGR_CTL_BUSY);
	j->m = m;
	j->rc = 0;
	j->error = NULL;
	workq_submit(j->c->wq, qmgr_ctl_write_run, qmgr_ctl_write_done, j);
}

static void qmgr_ctl_write_done(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct qmgr_ctl *c = j->c;
	struct qmgr *q = c->q;
	char qe[LOG_Q_MAX];
	const char *what = j->op == QMGR_CTL_HOLD      ? "held"
	                   : j->op == QMGR_CTL_RELEASE ? "released"
	                                               : "deleted";
	if (j->rc < 0) {
		log_err("event=control_failed qid=%s op=%s reason=%s", j->arg, what,
		        log_qs(qe, j->error != NULL ? j->error : "spool error"));
		/* The message goes on as it was: parked if it was held, else
		 * back to the queue manager. */
		if (j->op == QMGR_CTL_RELEASE) {
			qmgr_ctl_set(c, j->arg, QMGR_CTL_PARKED);
		} else {
			qmgr_ctl_unset(c, j->arg);
			if (j->m != NULL) {
				qmgr_msg_free(&j->m);
				qmgr_enqueue(q, j->arg);
			}
		}
		qmgr_ctl_reply(j, -1, 0, "%s: %s", j->arg,
		               j->error != NULL ? j->error : "spool error");
		return;
	}
	log_info("event=%s qid=%s by=control%s", what, j->arg, j->expired ? " expired=yes" : "");
	if (j->m != NULL)
		qmgr_msg_free(&j->m);
	if (j->op == QMGR_CTL_HOLD) {
		qmgr_ctl_set(c, j->arg, QMGR_CTL_PARKED);
	} else {
		qmgr_ctl_unset(c, j->arg);
		if (j->op == QMGR_CTL_RELEASE)
			qmgr_enqueue(q, j->arg);
	}
	qmgr_ctl_reply(j, 0, 1, "%s: %s%s", j->arg, what,
	               j->expired ? " past delivery.max_lifetime: one attempt, then it bounces (4.4.7)" : "");
}

static void qmgr_ctl_do_flush(struct qmgr_ctl_job *j, bool held)
{
	struct qmgr *q = j->c->q;
	struct qmgr_ctl_entry *e = qmgr_ctl_find(j->c, j->arg);
	if (held || (e != NULL && e->st == QMGR_CTL_PARKED)) {
		qmgr_ctl_reply(j, -1, 0, "%s: message is held; release it first", j->arg);
		return;
	}
	if (!qmgr_ctl_flush_one(q, j->arg)) {
		qmgr_ctl_reply(j, 0, 0, "%s: already being delivered", j->arg);
		return;
	}
	log_info("event=flush messages=1 qid=%s by=control", j->arg);
	qmgr_dispatch(q);
	qmgr_ctl_reply(j, 0, 1, "%s: flushed", j->arg);
}

static void qmgr_ctl_do_delete(struct qmgr_ctl_job *j)
{
	struct qmgr_ctl_entry *e = qmgr_ctl_find(j->c, j->arg);
	if (e != NULL && e->st == QMGR_CTL_PARKED) {
		qmgr_ctl_write_start(j, NULL);
		return;
	}
	struct qmgr_msg *m = qmgr_ctl_take(j->c->q, j->arg);
	if (m != NULL) {
		qmgr_ctl_write_start(j, m);
		return;
	}
	qmgr_ctl_set(j->c, j->arg, QMGR_CTL_PENDING_DELETE);
	log_info("event=delete_pending qid=%s by=control", j->arg);
	qmgr_ctl_reply(j, 0, 1, "%s: will be deleted when its current delivery attempt ends",
	               j->arg);
}

static void qmgr_ctl_do_hold(struct qmgr_ctl_job *j, bool held)
{
	struct qmgr_ctl_entry *e = qmgr_ctl_find(j->c, j->arg);
	if (held || (e != NULL && e->st == QMGR_CTL_PARKED)) {
		qmgr_ctl_reply(j, 0, 0, "%s: already held", j->arg);
		return;
	}
	if (e != NULL && e->st == QMGR_CTL_PENDING_DELETE) {
		qmgr_ctl_reply(j, -1, 0, "%s: is being deleted", j->arg);
		return;
	}
	struct qmgr_msg *m = qmgr_ctl_take(j->c->q, j->arg);
	if (m != NULL) {
		qmgr_ctl_write_start(j, m);
		return;
	}
	qmgr_ctl_set(j->c, j->arg, QMGR_CTL_PENDING_HOLD);
	qmgr_ctl_reply(j, 0, 1, "%s: will be held when its current delivery attempt ends", j->arg);
}

static void qmgr_ctl_do_release(struct qmgr_ctl_job *j, bool held)
{
	struct qmgr_ctl_entry *e = qmgr_ctl_find(j->c, j->arg);
	if (e != NULL && e->st == QMGR_CTL_PARKED) {
		qmgr_ctl_write_start(j, NULL);
		return;
	}
	if (e != NULL && e->st == QMGR_CTL_PENDING_HOLD) {
		qmgr_ctl_unset(j->c, j->arg);
		qmgr_ctl_reply(j, 0, 1, "%s: hold cancelled", j->arg);
		return;
	}
	if (held) /* being loaded: it parks itself in a moment */
		qmgr_ctl_reply(j, -1, 0, "%s: busy, try again", j->arg);
	else
		qmgr_ctl_reply(j, -1, 0, "%s: message is not held", j->arg);
}

static void qmgr_ctl_load_done(void *arg)
{
	struct qmgr_ctl_job *j = arg;
	struct qmgr_ctl *c = j->c;
	if (j->rc < 0) {
		/* A vanished message leaves no state behind. */
		struct qmgr_ctl_entry *e = qmgr_ctl_find(c, j->arg);
		if (e != NULL && e->st != QMGR_CTL_BUSY)
			qmgr_ctl_unset(c, j->arg);
		qmgr_ctl_reply(j, -1, 0, "%s: no such message in the queue", j->arg);
		return;
	}
	struct qmgr_ctl_entry *e = qmgr_ctl_find(c, j->arg);
	if (e != NULL && e->st == QMGR_CTL_BUSY && j->op != QMGR_CTL_SHOW) {
		qmgr_ctl_reply(j, -1, 0, "%s: busy, try again", j->arg);
		return;
	}
	bool held = (j->items[0].env.sched_flags & ENVELOPE_SCHED_HELD) != 0;
	switch (j->op) {
	case QMGR_CTL_SHOW:
		qmgr_ctl_item_merge(c, &j->items[0]);
		qmgr_ctl_reply(j, 0, 1, "1 message");
		break;
	case QMGR_CTL_FLUSH_QID:
		qmgr_ctl_do_flush(j, held);
		break;
	case QMGR_CTL_DELETE:
		qmgr_ctl_do_delete(j);
		break;
	case QMGR_CTL_HOLD:
		qmgr_ctl_do_hold(j, held);
		break;
	case QMGR_CTL_RELEASE:
		qmgr_ctl_do_release(j, held);
		break;
	default:
		qmgr_ctl_reply(j, -1, 0, "unsupported request");
		break;
	}
}

/* ---- requests ---- */

void qmgr_ctl_request(struct qmgr_ctl *c, enum qmgr_ctl_op op, const char *arg,
                      qmgr_ctl_done_fn *done, void *done_arg)
{
	struct qmgr_ctl_job *j = xcalloc(1, sizeof(*j));
	j->c = c;
	j->op = op;
	j->done = done;
	j->done_arg = done_arg;
	if (arg != NULL && strlen(arg) > QMGR_CTL_ARG_MAX) {
		qmgr_ctl_reply(j, -1, 0, "argument too long");
		return;
	}
	snprintf(j->arg, sizeof(j->arg), "%s", arg != NULL ? arg : "");
	switch (op) {
	case QMGR_CTL_LIST:
		workq_submit(c->wq, qmgr_ctl_scan_run, qmgr_ctl_scan_done, j);
		return;
	case QMGR_CTL_FLUSH_DOMAIN:
		if (j->arg[0] == '\0' || strchr(j->arg, '@') != NULL) {
			qmgr_ctl_reply(j, -1, 0, "flush: not a domain: %s", j->arg);
			return;
		}
		workq_submit(c->wq, qmgr_ctl_scan_run, qmgr_ctl_scan_done, j);
		return;
	case QMGR_CTL_FLUSH_ALL: {
		size_t n = qmgr_flush(c->q);
		qmgr_ctl_reply(j, 0, n, "%zu message%s flushed", n, n == 1 ? "" : "s");
		return;
	}
	default:
		break;
	}
	if (!qid_valid(j->arg)) {
		qmgr_ctl_reply(j, -1, 0, "not a queue id: %s", j->arg);
		return;
	}
	workq_submit(c->wq, qmgr_ctl_load_run, qmgr_ctl_load_done, j);
}

/* ---- the end of an attempt (called from qmgr.c) ---- */

static void qmgr_ctl_note_error(struct qmgr_msg *m)
{
	if (m->load_failed) {
		snprintf(m->last_error, sizeof(m->last_error),
		         "cannot load the message from the spool");
		return;
	}
	if (m->res == NULL)
		return;
	size_t n = 0, first = 0;
	for (size_t i = 0; i < m->env.nrcpts; i++) {
		if (m->res[i].state == QMGR_R_DEFERRED && n++ == 0)
			first = i;
	}
	if (n == 0) {
		m->last_error[0] = '\0';
		return;
	}
	const struct qmgr_rres *r = &m->res[first];
	int len = snprintf(m->last_error, sizeof(m->last_error), "%.80s: %s %s",
	                   m->env.rcpts[first].addr, r->status, r->diag);
	if (n > 1 && len > 0 && (size_t)len < sizeof(m->last_error))
		snprintf(m->last_error + len, sizeof(m->last_error) - (size_t)len,
		         " (and %zu more)", n - 1);
}

bool qmgr_ctl_intercept(struct qmgr *q, struct qmgr_msg *m)
{
	struct qmgr_ctl *c = q->ctl;
	struct qmgr_ctl_entry *e = qmgr_ctl_find(c, m->qid);
	qmgr_ctl_note_error(m);
	if (e != NULL &&
	    (e->st == QMGR_CTL_PENDING_DELETE || (e->st == QMGR_CTL_PENDING_HOLD && !m->held))) {
		/* The attempt is over: its files are free for the change. */
		struct qmgr_ctl_job *j = xcalloc(1, sizeof(*j));
		j->c = c;
		j->op = e->st == QMGR_CTL_PENDING_DELETE ? QMGR_CTL_DELETE : QMGR_CTL_HOLD;
		memcpy(j->arg, m->qid, QID_LEN + 1);
		qmgr_ctl_write_start(j, m);
		return true;
	}
	if (!m->held)
		return false;
	/* Held: the message leaves memory until it is released. */
	if (c != NULL && (e == NULL || e->st != QMGR_CTL_BUSY))
		qmgr_ctl_set(c, m->qid, QMGR_CTL_PARKED);
	log_info("event=held qid=%s", m->qid);
	qmgr_msg_free(&m);
	return true;
}

/* ---- life cycle ---- */

struct qmgr_ctl *qmgr_ctl_attach(struct qmgr *q)
{
	struct qmgr_ctl *c = xcalloc(1, sizeof(*c));
	c->q = q;
	c->wq = workq_create(q->base, 1, "control");
	q->ctl = c;
	return c;
}

void qmgr_ctl_detach(struct qmgr_ctl **cp)
{
	struct qmgr_ctl *c = *cp;
	if (c == NULL)
		return;
	*cp = NULL;
	workq_free(&c->wq); /* runs the pending answers */
	c->q->ctl = NULL;
	free(c->tab);
	free(c);
}
