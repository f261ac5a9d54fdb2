/* qmgr.h — the queue manager: schedules committed messages for delivery,
 * retries temporary failures with backoff, removes what is finished.
 * Today it runs inside the one hikyaku process on the main loop and hands the
 * blocking delivery work to its own worker threads; its interface is the one
 * a separate queue process will take over a socketpair (DESIGN.md). */
#ifndef HK_QUEUE_QMGR_H
#define HK_QUEUE_QMGR_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct spool;
struct qmgr;

struct qmgr *qmgr_create(struct event_base *base, const struct conf *conf, struct spool *spool);
/* The relay credentials the master read before dropping privileges
 * (conf/credentials.h); cr must outlive q. Without it, routes that name
 * credentials defer with 4.7.0. */
struct credentials;
/* The sandbox's store (owned by the caller, outliving q): messages with
 * ENVELOPE_FLAG_SANDBOX are captured there instead of delivered. */
struct sbx_store;
void qmgr_set_sandbox(struct qmgr *q, struct sbx_store *sbx);
void qmgr_set_credentials(struct qmgr *q, const struct credentials *cr);
/* A message was committed to the spool (smtpd, on the loop thread). */
void qmgr_enqueue(struct qmgr *q, const char *qid);
/* The same for a message smtpd just committed (counted as accepted in the
 * analytics once its envelope is loaded), written by the smtpd owner
 * (spool_retire). e (moved from, left empty) and fd (owned from here) are
 * its envelope and open file from the publish: kept for its first attempt
 * when few others wait, else closed and read again then. */
struct envelope;
void qmgr_enqueue_new(struct qmgr *q, const char *qid, uint64_t owner, struct envelope *e, int fd);
/* The delivery analytics (queue/analytics.h), NULL when off. */
struct analytics *qmgr_analytics(struct qmgr *q);
/* Rebuild the queue from the spool alone; returns how many messages, or -1. */
int qmgr_recover(struct qmgr *q, const char **error_r);
size_t qmgr_active(const struct qmgr *q);
/* Try every waiting message now (SIGUSR1, like `postqueue -f`); returns
 * how many were waiting. */
size_t qmgr_flush(struct qmgr *q);
/* Graceful stop: start no new attempt, let those in flight finish and
 * record their results, then call done(arg) on the loop — at the latest
 * after timeout_ms, when what is still in flight is abandoned (it stays in
 * the spool and is tried again after the restart). */
void qmgr_drain(struct qmgr *q, unsigned timeout_ms, void (*done)(void *arg), void *arg);
void qmgr_free(struct qmgr **q);
/* Delivery statistics per destination domain (queue/dstats.h). */
struct dstats *qmgr_dstats(struct qmgr *q);

#endif
