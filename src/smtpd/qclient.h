/* qclient.h — smtpd's side of the queue (master/proto.h): a pool of
 * message files the queue handed over, and commits waiting for the queue's
 * word. Runs on smtpd's event loop.
 *
 * The queue connection comes from the master (qclient_attach) and is
 * replaced when the queue process restarts: files and commits of the old
 * connection then fail (451, the client sends again; nothing that got 250
 * is lost), and commits made while no queue is connected wait for the next
 * one, up to QCLIENT_WAIT_MAX_US. */
#ifndef HK_SMTPD_QCLIENT_H
#define HK_SMTPD_QCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct qclient;
struct qclient_req;

#define QCLIENT_WAIT_MAX_US (30ULL * 1000000)

/* A message file: fd (-1 when none was available) and its token, valid
 * for the connection generation gen. */
struct qclient_file {
	int fd;
	uint64_t token;
	uint64_t gen;
};

struct qclient *qclient_create(struct event_base *base);
void qclient_free(struct qclient **qc);
/* A (new) connection to the queue. */
void qclient_attach(struct qclient *qc, int fd);
bool qclient_connected(const struct qclient *qc);

/* Take a file from the pool now; false when the pool is empty (asks the
 * queue for more in any case). */
bool qclient_take(struct qclient *qc, struct qclient_file *f);
/* Return a file taken and not written to the pool. */
void qclient_put_back(struct qclient *qc, const struct qclient_file *f);
/* Give up a file taken: the queue removes it. fd is closed by the caller. */
void qclient_abort(struct qclient *qc, const struct qclient_file *f);

/* done(arg, fd, token, gen) once a file comes (try qclient_take first:
 * this waits for the next file the queue sends, not the pool) (fd -1: none came
 * within QCLIENT_WAIT_MAX_US). */
typedef void (*qclient_file_cb)(void *arg, const struct qclient_file *f);
struct qclient_req *qclient_wait_file(struct qclient *qc, qclient_file_cb cb, void *arg);

/* Ask the queue to commit the sealed file as qid. done(arg, 0, NULL) when
 * it is in queue/ and durable; done(arg, errno or 0, reason) when not;
 * ESTALE: the file was a queue process's that is gone (a restart), and a
 * copy into a new file may still be committed. */
typedef void (*qclient_commit_cb)(void *arg, int err, const char *reason);
struct qclient_req *qclient_commit(struct qclient *qc, const struct qclient_file *f,
				   const char *qid, qclient_commit_cb cb, void *arg);
/* The requester is gone: no callback (a file that still comes is
 * returned to the pool). */
void qclient_cancel(struct qclient *qc, struct qclient_req *req);

/* One DMARC-evaluated message (dauth/dmarcrep.h) for the aggregate
 * reports: sent now if a queue is connected, else dropped (no answer). */
void qclient_dmarc_record(struct qclient *qc, const void *body, size_t len);

/* fstatvfs of a pooled file: the spool's free space, without a path. */
int qclient_free_space(struct qclient *qc, uint64_t *avail_r);

#endif
