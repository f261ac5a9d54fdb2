/* qmgr_int.h — queue manager internals shared by qmgr.c (messages, attempts,
 * retries, bounces) and qmgr_remote.c (destinations, DNS, the SMTP client).
 * Not a public interface: other components use qmgr.h. Loop thread only,
 * except where a field says a worker writes it. */
#ifndef HK_QUEUE_QMGR_INT_H
#define HK_QUEUE_QMGR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "lib/metrics.h"
#include "queue/dstats.h"
#include "mail/envelope.h"

struct event;
struct event_base;
struct conf;
struct conf_route;
struct spool;
struct workq;
struct dns;
struct smtpc;
struct qmgr_ctl;

enum qmgr_rstate {
	QMGR_R_PENDING = 0, /* not tried in this attempt, or no final result */
	QMGR_R_SENT,        /* delivered (or relayed): final */
	QMGR_R_FAILED,      /* permanent failure: final, bounced */
	QMGR_R_DEFERRED,    /* temporary failure: retried */
};

/* For QMGR_R_SENT: how far our responsibility went, which decides the
 * NOTIFY=SUCCESS notice (RFC 3461 §5.2). */
enum qmgr_sent {
	QMGR_SENT_DELIVERED = 0, /* final delivery (Maildir, LMTP): "delivered" (§5.2.3) */
	QMGR_SENT_RELAYED,       /* to an SMTP server without DSN: "relayed" (§5.2.2) */
	QMGR_SENT_DSN_PASSED,    /* to an SMTP server with DSN: NOTIFY went with the
	                          * message and that server reports; we do not (§5.2.1) */
};

/* At most one notice of each enum bounce_kind per attempt. */
#define QMGR_NOTICES_MAX 4

/* One recipient's outcome in the current attempt. */
struct qmgr_rres {
	enum qmgr_rstate state;
	enum qmgr_sent sent; /* QMGR_R_SENT only */
	char status[16];  /* RFC 3463 code, "2.0.0" */
	char diag[512];   /* the remote reply or our reason */
	char relay[300];  /* "maildir", "mx.example.net[192.0.2.1]:25" */
	char tls[128];    /* SMTP/LMTP: "TLSv1.3:TLS_AES_256_GCM_SHA384" or "none"; else "" */
	/* For the delivery line's delays=a/b/c/d (us; 0 unknown): when this
	 * recipient's delivery step started (local write; remote: the group
	 * ran, DNS included), its connection setup and its transfer. */
	uint64_t start_us, conn_us, xfer_us;
	enum metric_transport transport;
};

struct qmgr_msg {
	struct qmgr *q;
	char qid[QID_LEN + 1];
	struct event *timer;
	struct qmgr_msg *next; /* ready FIFO */
	/* filled by the load worker, used by the loop until the attempt ends */
	struct envelope env;
	uint64_t attempt_us; /* this attempt was dispatched (Unix time, us) */
	uint64_t arrival_us; /* env.arrival_us, kept between attempts (0: never loaded) */
	/* The spool file, open for the attempt: the content is e->size octets
	 * from env.content_off, read in windows (Maildir and bounces on delivery
	 * workers, smtpc on the spoolread pool), never loaded whole. -1 when
	 * closed (qmgr_msg_reset, when the attempt ends). */
	int fd;
	uint64_t lf_len; /* the content's size with LF line ends (Maildir S=) */
	bool lf_known;
	struct qmgr_rres *res; /* env.nrcpts entries */
	bool load_failed;
	bool not_due; /* recovered before its persisted retry time */
	bool force;   /* qmgr_flush: try now, whatever the schedule says */
	bool recovered; /* found in the spool at start: may be partly delivered */
	bool fresh;     /* just committed by smtpd: count it as accepted once loaded */
	uint64_t pool_owner; /* the writer whose file it is (spool_retire), 0: none */
	bool preloaded; /* env and fd came with the commit: the first load reads nothing */
	bool tried;     /* a local delivery was attempted in this process */
	bool finished;  /* the load worker also ran the finish (no remote recipient) */
	/* During the local deliveries of one attempt: the content of a message
	 * of at most MAILDIR_WINDOW octets, read once for every recipient (and
	 * for the Maildir S= count); NULL otherwise. */
	unsigned char *small;
	size_t groups_left;
	/* filled by the finish worker */
	char bounce_qids[QMGR_NOTICES_MAX][QID_LEN + 1];
	size_t n_bounces;
	bool removed;
	uint64_t retry_delay_ms; /* chosen by finish, for the log */
	/* queue control (qmgr_ctl.c) */
	bool held;            /* load found ENVELOPE_SCHED_HELD: do not deliver */
	char last_error[320]; /* of the last attempt, for `hikyaku queue list` */
};

struct qmgr {
	struct event_base *base;
	const struct conf *conf;
	struct spool *spool;
	struct workq *wq;
	/* Reads of message windows for smtpc: short pread(2)s from the page
	 * cache, kept off the delivery pool so that they never wait behind a
	 * Maildir copy and its fsync (QMGR_READ_THREADS). */
	struct workq *rq;
	struct dns *dns;
	struct smtpc *smtpc;
	size_t max_active;
	size_t active;
	size_t preloaded; /* messages waiting in the ready list with an open file */
	struct qmgr_msg *ready_head;
	struct qmgr_msg *ready_tail;
	size_t n_waiting; /* messages waiting for a retry timer */
	struct qmgr_msg **waiting; /* all messages with an armed timer, for free */
	size_t waiting_cap;
	struct qmgr_dest **dests; /* destination table (qmgr_remote.c) */
	size_t dest_buckets;
	struct qmgr_group *group_wait_head; /* groups waiting for a slot */
	struct qmgr_group *group_wait_tail;
	size_t remote_active; /* SMTP/LMTP sessions in flight */
	struct qmgr_group *groups; /* every live group, for shutdown */
	const struct credentials *creds; /* route credentials, the master's (may be NULL) */
	bool stopping;        /* qmgr_free: start nothing new */
	bool draining;        /* qmgr_drain: start nothing new, finish the rest */
	void (*drained)(void *arg);
	void *drained_arg;
	struct event *drain_timer;
	struct qmgr_ctl *ctl; /* control socket state, or NULL (qmgr_ctl.c) */
	struct sbx_store *sbx; /* the sandbox's store (issue 13), or NULL */
	struct event *gauge_ev; /* the queue's gauges in the metrics, each second */
	struct dstats *dstats;  /* delivery statistics per domain (dstats.h) */
	struct analytics *an;   /* delivery analytics (analytics.h), NULL when off */
};

/* An address's domain, or "" (points into addr). */
const char *qmgr_domain_of(const char *addr);

/* qmgr_remote.c: deliver every pending non-local recipient of m; calls
 * qmgr_groups_done(m) once all of its destinations have answered. Returns
 * the number of groups started (0: nothing remote to do). */
size_t qmgr_remote_start(struct qmgr *q, struct qmgr_msg *m);
void qmgr_groups_done(struct qmgr_msg *m);
void qmgr_remote_free(struct qmgr *q);
/* Forget a message in flight at shutdown (it stays in the spool). */
void qmgr_msg_drop(struct qmgr *q, struct qmgr_msg *m);

/* qmgr_remote.c: the arrival of the oldest message with a remote
 * delivery in flight (0: none). */
uint64_t qmgr_remote_oldest(const struct qmgr *q);

/* qmgr_ctl.c: how many messages are held (parked). */
size_t qmgr_ctl_held(const struct qmgr_ctl *c);

/* qmgr_ctl.c: an attempt is over and m is about to wait for its timer.
 * Returns true when the control interface took m (held or deleted). */
bool qmgr_ctl_intercept(struct qmgr *q, struct qmgr_msg *m);
void qmgr_msg_free(struct qmgr_msg **mp);
void qmgr_dispatch(struct qmgr *q);

/* Sets every field; a sent recipient counts as delivered until the caller
 * says otherwise (r->sent). */
void qmgr_rres_set(struct qmgr_rres *r, enum qmgr_rstate st, const char *status,
		   const char *diag, const char *relay);

#endif
