/* analytics.h — delivery analytics in the queue process (issue 13): the
 * collector (astats.h) that the counting sites feed, a timer on the loop
 * that hands the collected batch every analytics.flush_interval to one
 * worker thread, and that thread, which alone writes and reads the store
 * (astore.h). Queries from the control socket run on the same thread and
 * answer on the loop. The counting functions accept a NULL analytics (off). */
#ifndef HK_QUEUE_ANALYTICS_H
#define HK_QUEUE_ANALYTICS_H

#include <stdint.h>

#include "lib/buf.h"
#include "queue/astats.h"
#include "queue/astore.h"

struct conf;
struct event_base;
struct analytics;

/* NULL (logged) when analytics.enabled is false or the store cannot be
 * opened: the queue runs on without it. */
struct analytics *analytics_create(struct event_base *base, const struct conf *conf);
/* Write what is collected (synchronously, after the worker is joined),
 * close the store. */
void analytics_free(struct analytics **an);

/* Counting sites (any thread). */
void analytics_event(struct analytics *an, const char *rcpt, const char *sender, enum astats_ev ev,
                     uint64_t delay_us);
void analytics_reason(struct analytics *an, const char *rcpt, enum astats_ev kind,
                      const char *status, const char *diag);
void analytics_tls(struct analytics *an, const char *tls_info);

/* The JSON answer of q (rc 0) or an error text (rc -1), on the loop,
 * never before this returns; the buffer is the callee's. The handle
 * stays valid until done runs; analytics_cancel() (loop thread) means
 * done is not called. an must not be NULL here. */
struct analytics_req;
typedef void analytics_done_fn(int rc, const struct buf *json, const char *error, void *arg);
struct analytics_req *analytics_query(struct analytics *an, const struct astore_query *q,
                                      analytics_done_fn *done, void *arg);
void analytics_cancel(struct analytics_req *r);

#endif
