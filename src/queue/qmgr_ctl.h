/* qmgr_ctl.h — queue control operations for the control socket (ctl/):
 * list, show, flush, delete, hold, release. Loop thread only; the spool
 * reads and writes they need run on their own worker thread, and the answer
 * comes back through a callback on the loop (possibly before the request
 * function returns).
 *
 * A held message (ENVELOPE_SCHED_HELD in its last SCHED record) is not in
 * the queue manager's memory at all: it stays in the spool, is "parked" in
 * the control table, and goes back to the queue on release. A message whose
 * delivery attempt is in flight is never touched on disk: hold or delete is
 * recorded and applied when the attempt ends (qmgr_ctl_intercept). */
#ifndef HK_QUEUE_QMGR_CTL_H
#define HK_QUEUE_QMGR_CTL_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "mail/envelope.h"

#define QMGR_CTL_REASON_MAX 320
#define QMGR_CTL_HEADERS_MAX 65536 /* show: the first 64 KiB of the header section */
#define QMGR_CTL_LIST_MAX 100000   /* list: messages at most */

struct qmgr;
struct qmgr_ctl;

enum qmgr_ctl_op {
	QMGR_CTL_LIST,
	QMGR_CTL_SHOW,
	QMGR_CTL_FLUSH_ALL,
	QMGR_CTL_FLUSH_QID,
	QMGR_CTL_FLUSH_DOMAIN,
	QMGR_CTL_DELETE,
	QMGR_CTL_HOLD,
	QMGR_CTL_RELEASE,
};

struct qmgr_ctl_item {
	struct envelope env;  /* as in the spool */
	const char *state;    /* "active", "deferred", "held" */
	uint64_t next_try_us; /* 0 when unknown */
	const char *action;   /* "hold"/"delete" after the current attempt, or NULL */
	char last_error[QMGR_CTL_REASON_MAX];
	struct buf headers; /* show only */
};

struct qmgr_ctl_result {
	int status;          /* 0 done, -1 refused (message says why) */
	const char *message; /* never NULL */
	size_t count;        /* messages affected */
	const struct qmgr_ctl_item *items;
	size_t n_items;
};

/* r and everything it points to live only during the call. */
typedef void qmgr_ctl_done_fn(const struct qmgr_ctl_result *r, void *arg);

struct qmgr_ctl *qmgr_ctl_attach(struct qmgr *q);
/* Finish the pending control work (callbacks run), detach, free. */
void qmgr_ctl_detach(struct qmgr_ctl **c);
/* arg: the qid (SHOW, FLUSH_QID, DELETE, HOLD, RELEASE) or the domain
 * (FLUSH_DOMAIN); NULL otherwise. done is called exactly once. */
void qmgr_ctl_request(struct qmgr_ctl *c, enum qmgr_ctl_op op, const char *arg,
                      qmgr_ctl_done_fn *done, void *done_arg);

/* Pure helpers, exported for tests: the header section of a message (up to
 * and including the line ending that ends the last header line) within its
 * first len octets. */
size_t qmgr_ctl_header_len(const unsigned char *p, size_t len);

#endif
