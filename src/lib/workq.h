/* workq.h — a small pool of worker threads for blocking work (fsync, Maildir
 * writes, later password hashing) that must never run on an event loop.
 * run() executes on a worker thread; done() then executes on the loop thread
 * that owns the queue, so completion handling needs no locks. */
#ifndef HK_LIB_WORKQ_H
#define HK_LIB_WORKQ_H

#include <stddef.h>

struct event_base;
struct workq;

typedef void workq_fn(void *arg);

struct workq *workq_create(struct event_base *base, unsigned nthreads, const char *name);
/* Queue a job. done may be NULL. Never blocks. */
void workq_submit(struct workq *q, workq_fn *run, workq_fn *done, void *arg);
/* Jobs queued or running (loop thread only). */
size_t workq_pending(const struct workq *q);
/* Finish every queued job (running their done callbacks), join, free. */
void workq_free(struct workq **q);

#endif
