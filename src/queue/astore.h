/* astore.h — the delivery analytics store (issue 13): SQLite in WAL mode
 * at <spool_dir>/stats.db, written and read by one thread of the queue
 * process (analytics.c's worker), never by the event loop.
 *
 * Tables, by Unix hour: traffic (destination domain, sender domain:
 * accepted, delivered, deferred, bounced, a histogram of the delivered
 * ones' delays, astats.h's fixed bins), reasons (destination domain, kind,
 * normalised reason: count) and tls (version: outbound transactions).
 * Bounded: while an hour runs, at most ASTORE_SLACK * `top` destination
 * and as many sender domains (the first ones seen; the rest under
 * "(other)"); once it is over, its `top` busiest of each are kept and
 * the rest folded into "(other)" (astore_compact); at most
 * ASTORE_REASONS_PER_HOUR reasons per hour and kind, rows older than the
 * retention deleted once an hour. A batch is one transaction; with
 * synchronous=NORMAL a commit in WAL mode does not fsync (only checkpoints
 * do), so a crash may lose the last seconds of statistics, never the
 * store. */
#ifndef HK_QUEUE_ASTORE_H
#define HK_QUEUE_ASTORE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "queue/astats.h"

#define ASTORE_FILE "stats.db"
#define ASTORE_REASONS_PER_HOUR 100
#define ASTORE_SLACK 2        /* domains written per hour: ASTORE_SLACK * top, compacted to top */
#define ASTORE_LIST_MAX 50    /* domains in a "domains" answer, per list */
#define ASTORE_REASONS_MAX 10 /* reasons in a "reasons" answer, per kind */
#define ASTORE_ANSWER_MAX (8u * 1024 * 1024)
#define ASTORE_QUERY_MAX_S 20 /* a query is cut off after this much SQLite work */

enum astore_kind {
	ASTORE_SERIES,
	ASTORE_DOMAINS,
	ASTORE_DELAYS,
	ASTORE_REASONS,
	ASTORE_TLS,
	ASTORE_DMARC,
	ASTORE_NKINDS,
};

struct astore_query {
	enum astore_kind kind;
	uint64_t from_h, to_h;              /* Unix hours, both included */
	char domain[ASTATS_DOMAIN_MAX + 1]; /* destination domain; "" all */
	char sender[ASTATS_DOMAIN_MAX + 1]; /* sender domain; "" all */
};

struct astore;

/* "series" ... "dmarc" -> enum astore_kind; -1 for anything else. */
int astore_kind_parse(const char *s);
const char *astore_kind_name(enum astore_kind k);

/* Open (create) dir/stats.db. retention_h: hours kept; top: domains per
 * hour and list. */
int astore_open(const char *dir, uint64_t retention_h, size_t top, struct astore **s_r,
                const char **error_r);
void astore_close(struct astore **s);
/* Write a batch in one transaction; once per hour (of now_h) delete what
 * is older than the retention. */
int astore_apply(struct astore *s, const struct astats_batch *b, uint64_t now_h,
                 const char **error_r);
/* The JSON answer of q into out. */
int astore_query(struct astore *s, const struct astore_query *q, struct buf *out,
                 const char **error_r);

#endif
