/* qclient.c — smtpd's side of the queue (qclient.h, master/proto.h). */
#include "smtpd/qclient.h"

#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "mail/envelope.h"
#include "master/proto.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define QCLIENT_POOL_LOW 8
#define QCLIENT_COMMIT_MAX_US (120ULL * 1000000)

enum qreq_kind { QREQ_FILE, QREQ_COMMIT };

struct qclient_req {
	struct qclient_req *next, *prev;
	enum qreq_kind kind;
	uint64_t id;
	uint64_t since_us;
	struct qclient_file f;
	qclient_file_cb fcb;
	qclient_commit_cb ccb;
	void *arg;
	int fail_err;           /* for a commit failed before it was sent */
	const char *fail_reason; /* static text */
};

struct qclient {
	struct event_base *base;
	struct ipc_chan *ch;
	uint64_t gen;
	struct qclient_file *pool;
	size_t npool, cap;
	size_t asked; /* files asked for and not yet come */
	struct qclient_req *reqs;  /* waiting for a file or the queue's word */
	struct qclient_req *fails; /* commits to fail from the loop */
	struct event *fail_ev;
	struct event *tick;
	uint64_t next_id;
};

static uint64_t qclient_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void qclient_link(struct qclient_req **head, struct qclient_req *r)
{
	r->prev = NULL;
	r->next = *head;
	if (*head != NULL)
		(*head)->prev = r;
	*head = r;
}

static void qclient_unlink(struct qclient_req **head, struct qclient_req *r)
{
	if (r->prev != NULL)
		r->prev->next = r->next;
	else
		*head = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

static void qclient_send(struct qclient *qc, uint8_t type, uint8_t tag1, uint64_t v1,
			 const char *qid)
{
	struct buf b;
	if (!ipc_chan_open(qc->ch))
		return;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, type);
	ipc_frame_add_u64(&b, tag1, v1);
	if (qid != NULL)
		ipc_frame_add_str(&b, P_F_QID, qid);
	ipc_frame_end(&b, st);
	(void)ipc_send(qc->ch, &b, -1);
	buf_free(&b);
}

void qclient_dmarc_record(struct qclient *qc, const void *body, size_t len)
{
	struct buf b;
	if (!ipc_chan_open(qc->ch))
		return;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, P_T_DMARC_RECORD);
	if (ipc_frame_add(&b, P_F_DMARC, body, len) == 0 && ipc_frame_end(&b, st) == 0)
		(void)ipc_send(qc->ch, &b, -1);
	buf_free(&b);
}

static void qclient_refill(struct qclient *qc)
{
	if (!ipc_chan_open(qc->ch) || qc->npool + qc->asked >= QCLIENT_POOL_LOW)
		return;
	qc->asked += PROTO_FDS_BATCH;
	qclient_send(qc, P_T_FDS_WANT, P_F_COUNT, PROTO_FDS_BATCH, NULL);
}

static void qclient_pool_add(struct qclient *qc, const struct qclient_file *f)
{
	if (qc->npool == qc->cap) {
		qc->cap = qc->cap ? qc->cap * 2 : 32;
		qc->pool = xreallocarray(qc->pool, qc->cap, sizeof(*qc->pool));
	}
	qc->pool[qc->npool++] = *f;
}

static void qclient_on_file(struct qclient *qc, uint64_t token, int fd)
{
	struct qclient_file f = {.fd = fd, .token = token, .gen = qc->gen};
	if (qc->asked > 0)
		qc->asked--;
	/* The oldest waiter first: waiters are linked newest first. */
	struct qclient_req *w = NULL;
	for (struct qclient_req *r = qc->reqs; r != NULL; r = r->next) {
		if (r->kind == QREQ_FILE)
			w = r;
	}
	if (w != NULL) {
		qclient_unlink(&qc->reqs, w);
		w->fcb(w->arg, &f);
		free(w);
	} else {
		qclient_pool_add(qc, &f);
	}
	qclient_refill(qc);
}

static void qclient_on_answer(struct qclient *qc, const struct ipc_frame *fr)
{
	struct ipc_field fld;
	size_t off = 0;
	uint64_t id = 0, err = 0;
	char msg[256] = "commit failed";
	while (ipc_field_next(fr, &off, &fld)) {
		if (fld.tag == P_F_ID)
			id = ipc_field_u64(&fld);
		else if (fld.tag == P_F_ERRNO)
			err = ipc_field_u64(&fld);
		else if (fld.tag == P_F_MESSAGE)
			(void)ipc_field_str(&fld, msg, sizeof(msg));
	}
	for (struct qclient_req *r = qc->reqs; r != NULL; r = r->next) {
		if (r->kind != QREQ_COMMIT || r->id != id)
			continue;
		qclient_unlink(&qc->reqs, r);
		if (fr->type == P_T_COMMITTED)
			r->ccb(r->arg, 0, NULL);
		else
			r->ccb(r->arg, err < 4096 ? (int)err : EIO, msg);
		free(r);
		return;
	}
	/* Cancelled: the session went away meanwhile. */
}

static void qclient_on_frame(struct ipc_chan *ch, const struct ipc_frame *fr, int fd, void *arg)
{
	(void)ch;
	struct qclient *qc = arg;
	struct ipc_field fld;
	size_t off = 0;
	uint64_t token = 0;
	bool have_token = false;
	if (fr->type == P_T_FD) {
		while (ipc_field_next(fr, &off, &fld)) {
			if (fld.tag == P_F_TOKEN) {
				token = ipc_field_u64(&fld);
				have_token = true;
			}
		}
		if (fd < 0 || !have_token) {
			if (fd >= 0)
				close(fd);
			/* Lost on the way (we were out of descriptors): the
			 * queue drops its copy, and we may ask again. */
			if (qc->asked > 0)
				qc->asked--;
			if (have_token)
				qclient_send(qc, P_T_ABORT, P_F_TOKEN, token, NULL);
			return;
		}
		qclient_on_file(qc, token, fd);
		return;
	}
	if (fd >= 0)
		close(fd);
	qclient_on_answer(qc, fr);
}

/* The queue is gone: its files are void, and so are its commits in flight
 * (the client hears 451 and sends again). */
static void qclient_on_close(struct ipc_chan *ch, const char *why, void *arg)
{
	struct qclient *qc = arg;
	log_warn("event=queue_lost reason=\"%s\" files=%zu", why, qc->npool);
	ipc_chan_free(&ch);
	qc->ch = NULL;
	qc->gen++;
	for (size_t i = 0; i < qc->npool; i++)
		close(qc->pool[i].fd);
	qc->npool = 0;
	qc->asked = 0;
	struct qclient_req *r = qc->reqs;
	while (r != NULL) {
		struct qclient_req *next = r->next;
		if (r->kind == QREQ_COMMIT) {
			qclient_unlink(&qc->reqs, r);
			r->ccb(r->arg, ESTALE, "queue process restarted");
			free(r);
		}
		r = next;
	}
}

void qclient_attach(struct qclient *qc, int fd)
{
	if (qc->ch != NULL)
		qclient_on_close(qc->ch, "replaced", qc);
	qc->gen++;
	qc->ch = ipc_chan_new(qc->base, fd, &proto_queue_to_smtpd, qclient_on_frame,
			      qclient_on_close, qc);
	qclient_refill(qc);
}

bool qclient_connected(const struct qclient *qc)
{
	return ipc_chan_open(qc->ch);
}

bool qclient_take(struct qclient *qc, struct qclient_file *f)
{
	bool ok = qc->npool > 0;
	if (ok)
		*f = qc->pool[--qc->npool];
	else
		f->fd = -1;
	qclient_refill(qc);
	return ok;
}

void qclient_put_back(struct qclient *qc, const struct qclient_file *f)
{
	if (f->gen == qc->gen && ipc_chan_open(qc->ch))
		qclient_pool_add(qc, f);
	else
		close(f->fd);
}

void qclient_abort(struct qclient *qc, const struct qclient_file *f)
{
	if (f->gen == qc->gen)
		qclient_send(qc, P_T_ABORT, P_F_TOKEN, f->token, NULL);
}

struct qclient_req *qclient_wait_file(struct qclient *qc, qclient_file_cb cb, void *arg)
{
	struct qclient_req *r = xcalloc(1, sizeof(*r));
	r->kind = QREQ_FILE;
	r->since_us = qclient_now_us();
	r->fcb = cb;
	r->arg = arg;
	qclient_link(&qc->reqs, r);
	qclient_refill(qc);
	return r;
}

static void qclient_on_fail(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct qclient *qc = arg;
	while (qc->fails != NULL) {
		struct qclient_req *r = qc->fails;
		qclient_unlink(&qc->fails, r);
		r->ccb(r->arg, r->fail_err, r->fail_reason);
		free(r);
	}
}

struct qclient_req *qclient_commit(struct qclient *qc, const struct qclient_file *f,
				   const char *qid, qclient_commit_cb cb, void *arg)
{
	struct qclient_req *r = xcalloc(1, sizeof(*r));
	r->kind = QREQ_COMMIT;
	r->id = ++qc->next_id;
	r->since_us = qclient_now_us();
	r->f = *f;
	r->ccb = cb;
	r->arg = arg;
	if (f->gen != qc->gen || !ipc_chan_open(qc->ch)) {
		r->fail_reason = "queue process restarted";
		r->fail_err = ESTALE;
		qclient_link(&qc->fails, r);
		event_active(qc->fail_ev, EV_TIMEOUT, 0);
		return r;
	}
	struct buf b;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, P_T_COMMIT);
	ipc_frame_add_u64(&b, P_F_ID, r->id);
	ipc_frame_add_u64(&b, P_F_TOKEN, f->token);
	ipc_frame_add_str(&b, P_F_QID, qid);
	ipc_frame_end(&b, st);
	(void)ipc_send(qc->ch, &b, -1);
	buf_free(&b);
	qclient_link(&qc->reqs, r);
	return r;
}

void qclient_cancel(struct qclient *qc, struct qclient_req *r)
{
	if (r == NULL)
		return;
	bool failing = false;
	for (struct qclient_req *x = qc->fails; x != NULL; x = x->next)
		failing |= x == r;
	qclient_unlink(failing ? &qc->fails : &qc->reqs, r);
	free(r);
}

static void qclient_on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct qclient *qc = arg;
	uint64_t now = qclient_now_us();
	struct qclient_req *r = qc->reqs;
	while (r != NULL) {
		struct qclient_req *next = r->next;
		uint64_t max = r->kind == QREQ_FILE ? QCLIENT_WAIT_MAX_US : QCLIENT_COMMIT_MAX_US;
		if (now - r->since_us >= max) {
			qclient_unlink(&qc->reqs, r);
			if (r->kind == QREQ_FILE) {
				struct qclient_file f = {.fd = -1};
				r->fcb(r->arg, &f);
			} else {
				r->ccb(r->arg, 0, "no answer from the queue process");
			}
			free(r);
		}
		r = next;
	}
}

int qclient_free_space(struct qclient *qc, uint64_t *avail_r)
{
	struct statvfs sv;
	if (qc->npool == 0) {
		errno = EAGAIN;
		return -1;
	}
	if (fstatvfs(qc->pool[0].fd, &sv) < 0)
		return -1;
	*avail_r = (uint64_t)sv.f_bavail * sv.f_frsize;
	return 0;
}

struct qclient *qclient_create(struct event_base *base)
{
	struct qclient *qc = xcalloc(1, sizeof(*qc));
	qc->base = base;
	qc->fail_ev = event_new(base, -1, 0, qclient_on_fail, qc);
	qc->tick = event_new(base, -1, EV_PERSIST, qclient_on_tick, qc);
	struct timeval tv = {1, 0};
	event_add(qc->tick, &tv);
	return qc;
}

void qclient_free(struct qclient **qcp)
{
	struct qclient *qc = *qcp;
	if (qc == NULL)
		return;
	*qcp = NULL;
	ipc_chan_free(&qc->ch);
	for (size_t i = 0; i < qc->npool; i++)
		close(qc->pool[i].fd);
	free(qc->pool);
	while (qc->reqs != NULL) {
		struct qclient_req *r = qc->reqs;
		qclient_unlink(&qc->reqs, r);
		free(r);
	}
	while (qc->fails != NULL) {
		struct qclient_req *r = qc->fails;
		qclient_unlink(&qc->fails, r);
		free(r);
	}
	event_free(qc->fail_ev);
	event_free(qc->tick);
	free(qc);
}
