/* metrics.h — the counters every process adds to and the http process
 * reads (Prometheus /metrics, issue 12).
 *
 * One shared memory region (a memfd made by the master, MAP_SHARED in every
 * child, as lib/shmcount.c): a header and METRICS_SLOTS slots of
 * METRIC_N 64-bit cells. Each process writes only its own slot (smtpd its
 * connection-count region, the queue the last slot but one, other roles the
 * last), so a cell's cache line never bounces between writers; a reader
 * sums the slots. Writers use relaxed atomic adds (metrics_add()), the
 * whole cost on the hot path: one `lock add` on a line this process owns.
 * Slots are never cleared: a restarted smtpd goes on from its
 * predecessor's counts, so counters only grow (Prometheus' rule), except
 * across a restart of the master, which makes a new region.
 *
 * Gauges (queue size by state, the oldest message) are stored by the one
 * process that owns them (the queue) in its slot (metrics_set()).
 *
 * A cell is named by enum metric; labels are part of the enum (one cell
 * per label value), except the listener of the connection counters, which
 * is an index (0..METRICS_LISTENERS-1) added to the first cell. The text
 * exposition (metrics_render) knows each cell's family, labels and kind. */
#ifndef HK_LIB_METRICS_H
#define HK_LIB_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define METRICS_LISTENERS 16 /* listeners counted apart; more share the last */

enum metric_conn_result {
	METRIC_CONN_ACCEPTED, /* a session started */
	METRIC_CONN_REFUSED,  /* limits.connections(_per_ip): 421 at connect */
	METRIC_CONN_N,
};

/* Histogram bucket upper bounds, in microseconds. */
#define METRICS_ACCEPT_BUCKETS 12   /* 1 ms .. 10 s, then +Inf */
#define METRICS_DELIVERY_BUCKETS 12 /* 100 ms .. 1 day, then +Inf */

enum metric {
	/* hikyaku_smtp_connections_total{listener,result} */
	METRIC_CONN_FIRST = 0,
	METRIC_CONN_LAST = METRIC_CONN_FIRST + METRICS_LISTENERS * METRIC_CONN_N - 1,
	/* hikyaku_tls_sessions_total{version} */
	METRIC_TLS_V12,
	METRIC_TLS_V13,
	METRIC_TLS_OTHER,
	METRIC_TLS_FAILED, /* handshakes that failed */
	/* hikyaku_auth_total{result} */
	METRIC_AUTH_SUCCESS,
	METRIC_AUTH_FAILURE,
	/* hikyaku_messages_accepted_total */
	METRIC_MSG_ACCEPTED,
	/* hikyaku_messages_rejected_total{class}, by the reply (session.c) */
	METRIC_REJ_POLICY,    /* x.7.x security or policy (relay denied, AUTH failed) */
	METRIC_REJ_RECIPIENT, /* 5.1.x unknown user, bad address */
	METRIC_REJ_SENDER,    /* 5.1.7/5.1.8, 553 sender */
	METRIC_REJ_SIZE,      /* x.3.4 message too big */
	METRIC_REJ_PROTOCOL,  /* 5.5.x syntax, sequence */
	METRIC_REJ_CONTENT,   /* 5.6.x */
	METRIC_REJ_TEMPFAIL,  /* any other 4xx */
	METRIC_REJ_OTHER,     /* any other 5xx */
	/* hikyaku_deliveries_total{transport,status}: transport major, status
	 * minor (enum metric_transport x enum metric_dstatus) */
	METRIC_DLV_FIRST,
	METRIC_DLV_LAST = METRIC_DLV_FIRST + 4 * 3 - 1,
	/* hikyaku_dns_lookups_total, hikyaku_dns_errors_total */
	METRIC_DNS_LOOKUPS,
	METRIC_DNS_ERRORS,
	/* hikyaku_accept_latency_seconds: buckets (not cumulative), count, sum (us) */
	METRIC_ACCEPT_B0,
	METRIC_ACCEPT_COUNT = METRIC_ACCEPT_B0 + METRICS_ACCEPT_BUCKETS + 1,
	METRIC_ACCEPT_SUM_US,
	/* hikyaku_delivery_latency_seconds */
	METRIC_DELIVERY_B0,
	METRIC_DELIVERY_COUNT = METRIC_DELIVERY_B0 + METRICS_DELIVERY_BUCKETS + 1,
	METRIC_DELIVERY_SUM_US,
	/* gauges, queue slot only: hikyaku_queue_messages{state} and
	 * hikyaku_queue_oldest_arrival (Unix time in us; 0: empty) */
	METRIC_Q_ACTIVE,
	METRIC_Q_DEFERRED,
	METRIC_Q_HELD,
	METRIC_Q_OLDEST_US,
	METRIC_N,
};

enum metric_transport { METRIC_TR_LOCAL, METRIC_TR_SMTP, METRIC_TR_LMTP, METRIC_TR_RELAY };
enum metric_dstatus { METRIC_DS_SENT, METRIC_DS_DEFERRED, METRIC_DS_BOUNCED };

struct metrics;

/* Master: a region for nslots writers. NULL with errno on failure. */
struct metrics *metrics_create(unsigned nslots);
/* Child: map the master's region (fd is kept); write to slot. A reader
 * (the http process) maps it read-only (slot ignored). NULL when fd is not
 * a region. */
struct metrics *metrics_attach(int fd, unsigned slot);
struct metrics *metrics_attach_ro(int fd);
int metrics_fd(const struct metrics *m);
unsigned metrics_nslots(const struct metrics *m);
void metrics_free(struct metrics **m);

/* This process's metrics: set once at start (before threads), then
 * metrics_add() etc. count there. Without one they do nothing. */
void metrics_set_process(struct metrics *m);

/* The hot path: one relaxed atomic add in this process's slot. */
void metrics_add(enum metric which, uint64_t n);
void metrics_inc(enum metric which);
void metrics_set(enum metric which, uint64_t v);
void metrics_conn(size_t listener, enum metric_conn_result r);
void metrics_delivery(enum metric_transport t, enum metric_dstatus s);
void metrics_observe_accept(uint64_t us);
void metrics_observe_delivery(uint64_t us);
/* A rejection, classed by its reply (code 4xx/5xx, enhanced "x.y.z"). */
void metrics_reject(int code, const char *enhanced);

/* Sum of one cell over every slot. */
uint64_t metrics_read(const struct metrics *m, enum metric which);

/* The Prometheus text exposition (format 0.0.4) of every family into out;
 * listener_names[i] names listener i (n of them). now_us for the age of
 * the oldest message. */
void metrics_render(const struct metrics *m, const char *const *listener_names, size_t n,
                    uint64_t now_us, struct buf *out);

#endif
