/* qserver.c — message files and commits for the smtpd processes
 * (qserver.h). Loop thread, except the publish job. */
#include "queue/qserver.h"

#include "dauth/dmarcrep.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "mail/envelope.h"
#include "master/proto.h"
#include "queue/qmgr.h"
#include "queue/spool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct qs_file {
	uint64_t token;
	uint64_t slot; /* spool_incoming_take: a reused file, or 0 */
	int fd;        /* the queue's own descriptor of the file */
};

struct qs_client {
	struct qserver *qs;
	struct qs_client *next, *prev;
	struct ipc_chan *ch; /* NULL once closed */
	uint64_t owner;        /* this writer, for the reuse of its spent files */
	struct qs_file *files; /* handed out, not yet committed or aborted */
	size_t ntokens, cap;
	size_t inflight; /* publish jobs holding this client */
};

struct qserver {
	struct event_base *base;
	struct spool *spool;
	struct qmgr *qmgr;
	struct workq *wq;
	struct qs_client *clients;
	uint64_t next_token;
	uint64_t next_owner;
	size_t files_max; /* per smtpd: one per session in DATA, and a pool */
	struct dmarcrep_writer *dmarc; /* DMARC_RECORD frames go here */
	unsigned dmarc_bad;             /* records refused (logged: the first few) */
};

struct qs_job {
	struct qs_client *c;
	int fd;
	uint64_t slot;
	struct envelope env; /* decoded by the publish: handed to the qmgr */
	uint64_t id;
	char qid[QID_LEN + 1];
	int ret, err;
	const char *error;
};

static void qs_client_maybe_free(struct qs_client *c)
{
	if (c->ch != NULL || c->inflight > 0)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->qs->clients = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	free(c->files);
	free(c);
}

/* The fd of the file token (the caller owns it now), or -1. */
static int qs_token_take(struct qs_client *c, uint64_t token, uint64_t *slot_r)
{
	for (size_t i = 0; i < c->ntokens; i++) {
		if (c->files[i].token == token) {
			int fd = c->files[i].fd;
			*slot_r = c->files[i].slot;
			c->files[i] = c->files[--c->ntokens];
			return fd;
		}
	}
	return -1;
}

static void qs_send(struct qs_client *c, struct buf *b, int fd)
{
	if (c->ch != NULL)
		(void)ipc_send(c->ch, b, fd);
}

static void qs_give_files(struct qs_client *c, uint64_t want)
{
	struct qserver *qs = c->qs;
	struct buf b;
	if (want > 2 * PROTO_FDS_BATCH)
		want = 2 * PROTO_FDS_BATCH;
	buf_init(&b, IPC_FRAME_MAX);
	for (uint64_t i = 0; i < want && c->ntokens < c->qs->files_max; i++) {
		uint64_t token = ++qs->next_token, slot;
		int fd = spool_incoming_take(qs->spool, c->owner, &slot);
		if (fd < 0)
			break; /* logged; smtpd asks again when it needs one */
		if (c->ntokens == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 64;
			c->files = xreallocarray(c->files, c->cap, sizeof(*c->files));
		}
		c->files[c->ntokens].token = token;
		c->files[c->ntokens].fd = fd;
		c->files[c->ntokens].slot = slot;
		c->ntokens++;
		buf_reset(&b);
		size_t st = ipc_frame_begin(&b, P_T_FD);
		ipc_frame_add_u64(&b, P_F_TOKEN, token);
		ipc_frame_end(&b, st);
		qs_send(c, &b, fd);
	}
	buf_free(&b);
}

static void qs_publish_run(void *arg)
{
	struct qs_job *j = arg;
	j->ret = spool_publish(j->c->qs->spool, j->fd, j->slot, j->qid, &j->env, &j->error);
	j->err = j->ret < 0 ? errno : 0;
	if (j->ret < 0) {
		close(j->fd);
		j->fd = -1;
	}
}

static void qs_publish_done(void *arg)
{
	struct qs_job *j = arg;
	struct qs_client *c = j->c;
	struct buf b;
	if (j->ret == 0) /* whether or not smtpd is still there; fd and envelope go too */
		qmgr_enqueue_new(c->qs->qmgr, j->qid, c->owner, &j->env, j->fd);
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, j->ret == 0 ? P_T_COMMITTED : P_T_FAILED);
	ipc_frame_add_u64(&b, P_F_ID, j->id);
	if (j->ret < 0) {
		ipc_frame_add_u64(&b, P_F_ERRNO, (uint64_t)(j->err > 0 ? j->err : 0));
		ipc_frame_add_str(&b, P_F_MESSAGE, j->error);
	}
	ipc_frame_end(&b, st);
	qs_send(c, &b, -1);
	buf_free(&b);
	c->inflight--;
	envelope_clear(&j->env); /* empty unless the qmgr did not take it */
	free(j);
	qs_client_maybe_free(c);
}

static void qs_fail(struct qs_client *c, uint64_t id, const char *why)
{
	struct buf b;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, P_T_FAILED);
	ipc_frame_add_u64(&b, P_F_ID, id);
	ipc_frame_add_u64(&b, P_F_ERRNO, 0);
	ipc_frame_add_str(&b, P_F_MESSAGE, why);
	ipc_frame_end(&b, st);
	qs_send(c, &b, -1);
	buf_free(&b);
}

/* One DMARC-evaluated message (dauth/dmarcrep.h), fire and forget: the
 * writer decodes it again (smtpd is not trusted) and appends it to the
 * day's file: one write() on the loop, the file opened (and a torn tail
 * cut) once a day. A bad record is dropped, not fatal to the channel that
 * also carries commits. */
static void qs_dmarc_record(struct qserver *qs, const struct ipc_field *fld)
{
	const char *error = NULL;
	if (qs->dmarc == NULL || fld->p == NULL)
		return;
	if (dmarcrep_writer_append(qs->dmarc, fld->p, fld->len, time(NULL), &error) < 0 &&
	    qs->dmarc_bad++ < 10)
		log_warn("event=dmarc_record_dropped error=\"%s\"", error);
}

static void qs_on_frame(struct ipc_chan *ch, const struct ipc_frame *f, int fd, void *arg)
{
	(void)ch;
	struct qs_client *c = arg;
	struct ipc_field fld;
	size_t off = 0;
	uint64_t count = 0, id = 0, token = 0, slot = 0;
	char qid[QID_LEN + 1] = "";
	bool qid_ok = false;
	struct ipc_field dmarc = {0};
	if (fd >= 0)
		close(fd); /* smtpd sends no descriptors */
	while (ipc_field_next(f, &off, &fld)) {
		switch (fld.tag) {
		case P_F_COUNT:
			count = ipc_field_u64(&fld);
			break;
		case P_F_ID:
			id = ipc_field_u64(&fld);
			break;
		case P_F_TOKEN:
			token = ipc_field_u64(&fld);
			break;
		case P_F_QID:
			qid_ok = ipc_field_str(&fld, qid, sizeof(qid)) && qid_valid(qid);
			break;
		case P_F_DMARC:
			dmarc = fld;
			break;
		default:
			break;
		}
	}
	switch (f->type) {
	case P_T_FDS_WANT:
		qs_give_files(c, count);
		break;
	case P_T_ABORT: {
		int tfd = qs_token_take(c, token, &slot);
		if (tfd >= 0)
			spool_incoming_drop(c->qs->spool, tfd, slot, c->owner);
		break;
	}
	case P_T_COMMIT: {
		if (!qid_ok) {
			qs_fail(c, id, "invalid queue id");
			break;
		}
		int tfd = qs_token_take(c, token, &slot);
		if (tfd < 0) {
			qs_fail(c, id, "unknown message file");
			break;
		}
		struct qs_job *j = xcalloc(1, sizeof(*j));
		j->c = c;
		j->id = id;
		j->fd = tfd;
		j->slot = slot;
		envelope_init(&j->env);
		memcpy(j->qid, qid, sizeof(qid));
		c->inflight++;
		workq_submit(c->qs->wq, qs_publish_run, qs_publish_done, j);
		break;
	}
	case P_T_DMARC_RECORD:
		qs_dmarc_record(c->qs, &dmarc);
		break;
	default:
		break;
	}
}

static void qs_on_close(struct ipc_chan *ch, const char *why, void *arg)
{
	struct qs_client *c = arg;
	log_info("event=smtpd_gone reason=\"%s\" files_dropped=%zu commits_in_flight=%zu", why,
		 c->ntokens, c->inflight);
	/* Its files, and the spent ones kept for it, are never handed to
	 * another writer. */
	for (size_t i = 0; i < c->ntokens; i++)
		spool_incoming_drop(c->qs->spool, c->files[i].fd, c->files[i].slot, 0);
	c->ntokens = 0;
	spool_owner_gone(c->qs->spool, c->owner);
	ipc_chan_free(&ch);
	c->ch = NULL;
	qs_client_maybe_free(c);
}

void qserver_add_client(struct qserver *qs, int fd)
{
	struct qs_client *c = xcalloc(1, sizeof(*c));
	c->qs = qs;
	c->owner = ++qs->next_owner;
	spool_owner_add(qs->spool, c->owner);
	c->next = qs->clients;
	if (qs->clients != NULL)
		qs->clients->prev = c;
	qs->clients = c;
	c->ch = ipc_chan_new(qs->base, fd, &proto_smtpd_to_queue, qs_on_frame, qs_on_close, c);
}

struct qserver *qserver_create(struct event_base *base, struct spool *spool, struct qmgr *q,
			       unsigned commit_threads, size_t max_sessions)
{
	struct qserver *qs = xcalloc(1, sizeof(*qs));
	qs->files_max = max_sessions + 4 * PROTO_FDS_BATCH;
	qs->base = base;
	qs->spool = spool;
	qs->qmgr = q;
	qs->wq = workq_create(base, commit_threads, "commit");
	/* Above any token of an earlier queue process whose files an smtpd
	 * may still hold (start-up emptied incoming/ of them anyway). */
	qs->next_token = (uint64_t)time(NULL) << 24;
	return qs;
}

void qserver_set_dmarc(struct qserver *qs, struct dmarcrep_writer *w)
{
	qs->dmarc = w;
}

void qserver_free(struct qserver **qsp)
{
	struct qserver *qs = *qsp;
	if (qs == NULL)
		return;
	*qsp = NULL;
	workq_free(&qs->wq); /* runs the done callbacks: commits are queued */
	while (qs->clients != NULL) {
		struct qs_client *c = qs->clients;
		if (c->ch != NULL)
			qs_on_close(c->ch, "stopping", c); /* frees c */
		else
			qs_client_maybe_free(c);
	}
	free(qs);
}
