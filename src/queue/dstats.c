/* dstats.c — per-domain delivery statistics (dstats.h). The queue
 * process; the domains come from recipient addresses (hostile, but
 * already valid domains by then), cut to 255 octets. */
#include "queue/dstats.h"

#include "lib/alloc.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DSTATS_BUCKETS 24 /* delay histogram: up to 10 ms * 2^i (23 h), the last open */
#define HOUR_US 3600000000ULL

struct dstats_hour {
	uint64_t hour; /* Unix hours; 0: unused */
	uint64_t n[3];
	uint32_t delays[DSTATS_BUCKETS];
};

struct dstats_dom {
	char name[256];
	struct dstats_hour h[DSTATS_HOURS]; /* ring, by hour % DSTATS_HOURS */
};

struct dstats {
	pthread_mutex_t lock;
	struct dstats_dom *doms; /* n of them; the last may be "(other)" */
	size_t n;
};

struct dstats *dstats_create(void)
{
	struct dstats *d = xcalloc(1, sizeof(*d));
	pthread_mutex_init(&d->lock, NULL);
	d->doms = xcalloc(DSTATS_DOMAINS + 1, sizeof(*d->doms));
	return d;
}

void dstats_free(struct dstats **dp)
{
	struct dstats *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	pthread_mutex_destroy(&d->lock);
	free(d->doms);
	free(d);
}

static struct dstats_dom *dstats_dom(struct dstats *d, const char *domain)
{
	for (size_t i = 0; i < d->n; i++)
		if (strcasecmp(d->doms[i].name, domain) == 0)
			return &d->doms[i];
	if (d->n >= DSTATS_DOMAINS) {
		/* full: the overflow domain, made once */
		for (size_t i = 0; i < d->n; i++)
			if (strcmp(d->doms[i].name, DSTATS_OTHER) == 0)
				return &d->doms[i];
		domain = DSTATS_OTHER;
	}
	struct dstats_dom *m = &d->doms[d->n++];
	snprintf(m->name, sizeof(m->name), "%s", domain);
	return m;
}

void dstats_record(struct dstats *d, const char *domain, enum dstats_result r, uint64_t delay_us,
                   uint64_t now_us)
{
	uint64_t hour = now_us / HOUR_US;
	unsigned b = 0;
	for (uint64_t lim = 10000; b < DSTATS_BUCKETS - 1 && delay_us > lim; lim *= 2)
		b++;
	pthread_mutex_lock(&d->lock);
	struct dstats_dom *m = dstats_dom(d, domain != NULL && domain[0] ? domain : "(none)");
	struct dstats_hour *h = &m->h[hour % DSTATS_HOURS];
	if (h->hour != hour) {
		memset(h, 0, sizeof(*h));
		h->hour = hour;
	}
	h->n[r]++;
	if (r == DSTATS_SENT)
		h->delays[b]++;
	pthread_mutex_unlock(&d->lock);
}

static uint64_t dstats_median_ms(const uint32_t *delays)
{
	uint64_t total = 0, seen = 0;
	for (unsigned i = 0; i < DSTATS_BUCKETS; i++)
		total += delays[i];
	if (total == 0)
		return 0;
	for (unsigned i = 0; i < DSTATS_BUCKETS; i++) {
		seen += delays[i];
		if (2 * seen >= total)
			return 10ULL << i;
	}
	return 10ULL << (DSTATS_BUCKETS - 1);
}

struct dstats_rank {
	size_t dom;
	uint64_t total;
};

static int dstats_rank_cmp(const void *a, const void *b)
{
	const struct dstats_rank *x = a, *y = b;
	return x->total != y->total ? (x->total < y->total ? 1 : -1)
	                            : (x->dom < y->dom ? -1 : x->dom > y->dom);
}

size_t dstats_snapshot(struct dstats *d, uint64_t now_us, size_t top, struct dstats_row **rows_r)
{
	uint64_t now_h = now_us / HOUR_US;
	pthread_mutex_lock(&d->lock);
	struct dstats_rank *rank = xcalloc(d->n + 1, sizeof(*rank));
	for (size_t i = 0; i < d->n; i++) {
		rank[i].dom = i;
		for (size_t k = 0; k < DSTATS_HOURS; k++) {
			const struct dstats_hour *h = &d->doms[i].h[k];
			if (h->hour != 0 && h->hour + DSTATS_HOURS > now_h && h->hour <= now_h)
				rank[i].total += h->n[0] + h->n[1] + h->n[2];
		}
	}
	qsort(rank, d->n, sizeof(*rank), dstats_rank_cmp);
	size_t ndom = top != 0 && top < d->n ? top : d->n;
	struct dstats_row *rows = xcalloc(ndom * DSTATS_HOURS + 1, sizeof(*rows));
	size_t n = 0;
	for (size_t r = 0; r < ndom && rank[r].total > 0; r++) {
		const struct dstats_dom *m = &d->doms[rank[r].dom];
		for (uint64_t hr = now_h + 1 - DSTATS_HOURS; hr <= now_h; hr++) {
			const struct dstats_hour *h = &m->h[hr % DSTATS_HOURS];
			if (h->hour != hr || h->n[0] + h->n[1] + h->n[2] == 0)
				continue;
			struct dstats_row *row = &rows[n++];
			memcpy(row->domain, m->name, sizeof(row->domain));
			row->hour_us = hr * HOUR_US;
			row->sent = h->n[0];
			row->deferred = h->n[1];
			row->bounced = h->n[2];
			row->median_delay_ms = dstats_median_ms(h->delays);
		}
	}
	pthread_mutex_unlock(&d->lock);
	free(rank);
	*rows_r = rows;
	return n;
}
