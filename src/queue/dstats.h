/* dstats.h — delivery statistics per destination domain over time, kept
 * by the queue for the API (GET /api/v1/stats/domains) and `hikyaku queue
 * stats`: per domain and per hour, the recipients sent, deferred and
 * bounced and a histogram of their delays, for the last DSTATS_HOURS
 * hours. Bounded: at most DSTATS_DOMAINS domains; the rest are counted
 * under "(other)". Any thread (the queue's finish workers record, the
 * loop reads): one mutex, taken once per recipient result. */
#ifndef HK_QUEUE_DSTATS_H
#define HK_QUEUE_DSTATS_H

#include <stddef.h>
#include <stdint.h>

#define DSTATS_HOURS 48
#define DSTATS_DOMAINS 256
#define DSTATS_OTHER "(other)"

enum dstats_result { DSTATS_SENT, DSTATS_DEFERRED, DSTATS_BOUNCED };

struct dstats;

struct dstats_row {
	char domain[256];
	uint64_t hour_us; /* start of the hour, Unix time in us */
	uint64_t sent, deferred, bounced;
	uint64_t median_delay_ms; /* of the sent ones (upper bound of its bucket); 0 none */
};

struct dstats *dstats_create(void);
void dstats_free(struct dstats **d);
/* A recipient's result at now_us, delay_us after its message's arrival. */
void dstats_record(struct dstats *d, const char *domain, enum dstats_result r, uint64_t delay_us,
                   uint64_t now_us);
/* The rows with any count in the last DSTATS_HOURS before now_us, of the
 * top domains (by recipients in the window; 0: all), domain by domain,
 * hours ascending. *rows_r is freed by the caller. */
size_t dstats_snapshot(struct dstats *d, uint64_t now_us, size_t top, struct dstats_row **rows_r);

#endif
