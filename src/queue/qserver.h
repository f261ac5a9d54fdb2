/* qserver.h — the queue process's side of smtpd (master/proto.h): it hands
 * each smtpd process message files (incoming/t<token>), and on COMMIT
 * checks the seal, renames the file into queue/, fsyncs queue/ (on the
 * commit workers), tells the queue manager and answers COMMITTED. Files an
 * smtpd took and never committed are removed when it aborts them or goes
 * away; a commit that completes after its smtpd went away is still queued
 * (the client did not hear 250 and may send it again: a duplicate, never a
 * loss). */
#ifndef HK_QUEUE_QSERVER_H
#define HK_QUEUE_QSERVER_H

#include <stddef.h>

struct event_base;
struct spool;
struct qmgr;
struct qserver;

/* max_sessions bounds the files one smtpd may hold (limits.connections). */
struct qserver *qserver_create(struct event_base *base, struct spool *spool, struct qmgr *q,
			       unsigned commit_threads, size_t max_sessions);
/* A connection from an smtpd process (from the master). */
void qserver_add_client(struct qserver *qs, int fd);
/* DMARC_RECORD frames are appended by w (NULL: dropped); w outlives qs. */
struct dmarcrep_writer;
void qserver_set_dmarc(struct qserver *qs, struct dmarcrep_writer *w);
/* Commits in flight finish (and are queued) first. */
void qserver_free(struct qserver **qs);

#endif
