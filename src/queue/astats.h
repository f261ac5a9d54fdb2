/* astats.h — delivery analytics, the in-memory side (issue 13): the batch
 * of events the queue collects between two writes to the store
 * (astore.c), the fixed log-scale delay histogram and its
 * percentiles, and the normalisation of deferral and bounce reasons.
 *
 * Pure data structures and arithmetic (no I/O). The queue records from any
 * thread (finish workers, the loop): one mutex, held for a hash lookup per
 * event. The domains come from envelopes (hostile, but valid domains by
 * then) and are cut to ASTATS_DOMAIN_MAX; reasons come from remote servers'
 * replies (hostile) and are reduced to a short, bounded, printable text.
 * A batch is bounded (ASTATS_CELLS_MAX keys): beyond it, events count under
 * "(other)", so a flood of domains cannot grow the queue's memory. */
#ifndef HK_QUEUE_ASTATS_H
#define HK_QUEUE_ASTATS_H

#include <stddef.h>
#include <stdint.h>

#define ASTATS_BINS 32 /* bin 0: < 1 ms; bin i: [2^(i-1), 2^i) ms; the last open */
#define ASTATS_OTHER "(other)"
#define ASTATS_NULL_SENDER "<>"
#define ASTATS_DOMAIN_MAX 255
#define ASTATS_REASON_MAX 80
#define ASTATS_TLSVER_MAX 16
#define ASTATS_CELLS_MAX 4096
#define ASTATS_REASONS_MAX 1024
#define ASTATS_TLS_MAX 16
#define ASTATS_HOUR_US 3600000000ULL

enum astats_ev { ASTATS_ACCEPTED, ASTATS_DELIVERED, ASTATS_DEFERRED, ASTATS_BOUNCED, ASTATS_NEV };

/* Counts of one hour, destination domain and sender domain. */
struct astats_cell {
	uint64_t hour; /* Unix hours */
	char rdom[ASTATS_DOMAIN_MAX + 1], sdom[ASTATS_DOMAIN_MAX + 1];
	uint64_t n[ASTATS_NEV];
	uint64_t bins[ASTATS_BINS]; /* delays of the delivered ones */
};

/* One normalised reason of one hour and destination domain. */
struct astats_reason {
	uint64_t hour;
	uint8_t kind; /* ASTATS_DEFERRED or ASTATS_BOUNCED */
	char rdom[ASTATS_DOMAIN_MAX + 1];
	char reason[ASTATS_REASON_MAX + 1];
	uint64_t n;
};

/* Outbound SMTP transactions of one hour by TLS version ("none" without). */
struct astats_tls {
	uint64_t hour;
	char version[ASTATS_TLSVER_MAX];
	uint64_t n;
};

struct astats_batch {
	struct astats_cell *cells;
	size_t n_cells;
	struct astats_reason *reasons;
	size_t n_reasons;
	struct astats_tls tls[ASTATS_TLS_MAX];
	size_t n_tls;
	uint32_t *cidx, *ridx; /* open-addressing indexes into cells and reasons (+1; 0 empty) */
};

/* ---- histogram (pure) ---- */
unsigned astats_bin(uint64_t delay_us);
/* A bin's bounds in milliseconds (the last bin's upper bound is its lower
 * bound doubled, for interpolation). */
uint64_t astats_bin_lo_ms(unsigned i);
uint64_t astats_bin_hi_ms(unsigned i);
/* The p-th percentile (0 < p <= 1) of a histogram, in milliseconds,
 * interpolated linearly inside its bin; -1 for an empty histogram. */
double astats_percentile(const uint64_t bins[ASTATS_BINS], double p);

/* ---- reasons (pure) ---- */
/* "5.1.1 user unknown" from an enhanced status and a reply text
 * ("550 5.1.1 <bob@example.org>: User unknown"): the reply and enhanced
 * codes and addresses in angle brackets dropped, digit runs as "N",
 * anything not printable ASCII as a space, lower case, white space collapsed,
 * at most ASTATS_REASON_MAX octets. */
void astats_reason_norm(const char *status, const char *diag, char *out, size_t outlen);
/* "TLSv1.3" from "TLSv1.3:TLS_AES_256_GCM_SHA384"; "none" for "" / "none". */
void astats_tls_version(const char *tls_info, char *out, size_t outlen);
/* The domain of an address, lower case, cut; ASTATS_NULL_SENDER for "". */
void astats_domain(const char *addr, char *out, size_t outlen);

/* ---- the batch ---- */
struct astats_batch *astats_batch_new(void);
void astats_batch_free(struct astats_batch **b);
/* Add an event (delay_us only counts for ASTATS_DELIVERED). */
void astats_batch_event(struct astats_batch *b, uint64_t hour, const char *rdom, const char *sdom,
                        enum astats_ev ev, uint64_t delay_us);
void astats_batch_reason(struct astats_batch *b, uint64_t hour, enum astats_ev kind,
                         const char *rdom, const char *reason);
void astats_batch_tls(struct astats_batch *b, uint64_t hour, const char *version);

/* ---- the collector (thread-safe) ---- */
struct astats;
struct astats *astats_create(void);
void astats_free(struct astats **a);
/* A recipient's event at now_us; rcpt and sender are addresses. */
void astats_event(struct astats *a, uint64_t now_us, const char *rcpt, const char *sender,
                  enum astats_ev ev, uint64_t delay_us);
/* A deferral or bounce reason of a recipient. */
void astats_reason(struct astats *a, uint64_t now_us, const char *rcpt, enum astats_ev kind,
                   const char *status, const char *diag);
void astats_tls(struct astats *a, uint64_t now_us, const char *tls_info);
/* Take the batch collected so far (NULL when empty); a new one starts. */
struct astats_batch *astats_take(struct astats *a);

#endif
