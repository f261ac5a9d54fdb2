/* sched.h — the delivery schedule: when a queued message is due, how long
 * to wait after a temporary failure (doubling from queue.retry_min up to
 * queue.retry_max), when a destination that reached no server is backed
 * off, when a message has waited long enough for a delay warning, and when
 * it has expired (delivery.max_lifetime, then 4.4.7).
 *
 * Pure decisions over the envelope's persisted schedule (next_try_us,
 * attempts, sched_flags: the SCHED record, queue/record.h) and the config;
 * no I/O, no event loop, no allocation. The queue manager (queue/qmgr*.c)
 * calls it from the loop and from its delivery workers; it is thread-safe.
 * Every time is Unix microseconds; every interval of the config is ms. */
#ifndef HK_SCHED_SCHED_H
#define HK_SCHED_SCHED_H

#include <stdbool.h>
#include <stdint.h>

struct conf;
struct envelope;

/* The wall clock, in microseconds. */
uint64_t sched_now_us(void);

/* How long a message has been queued at now_us; 0 when the clock was set
 * back past its arrival (unsigned arithmetic would make it ancient). */
uint64_t sched_age_us(const struct envelope *e, uint64_t now_us);

/* Older than delivery.max_lifetime: temporary failures become final (4.4.7). */
bool sched_expired(const struct conf *conf, const struct envelope *e, uint64_t now_us);

/* The wait after attempt number `attempts` (1 for the first) failed
 * temporarily: retry_min, doubled per further attempt, at most retry_max. */
uint64_t sched_retry_delay_ms(const struct conf *conf, uint32_t attempts);

/* A message loaded (recovered, or its timer fired early) before its
 * persisted next_try_us: it should wait. A next_try_us more than
 * queue.retry_max ahead was set under a clock that has since gone back:
 * due now, not after the step. Within a second counts as due. */
bool sched_not_yet_due(const struct conf *conf, uint64_t next_try_us, uint64_t now_us);

/* The back-off of a destination after `failures` consecutive attempts
 * that reached no server (RFC 5321 §4.5.4.1), for failures >= 2:
 * retry_min, doubled per further failure, at most retry_max. */
uint64_t sched_dest_backoff_ms(const struct conf *conf, unsigned failures);

/* A NOTIFY=DELAY warning is due: not sent yet (ENVELOPE_SCHED_DELAY_WARNED
 * in flags), delivery.delay_warning enabled, and the message older than it. */
bool sched_delay_warning_due(const struct conf *conf, const struct envelope *e, uint32_t flags,
                             uint64_t now_us);

#endif
