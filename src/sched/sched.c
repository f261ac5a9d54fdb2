/* sched.c — the delivery schedule (sched.h): retry intervals, destination
 * back-off, due times, delay warnings and expiry. Pure functions of the
 * config, the envelope's persisted schedule and the clock; called by the
 * queue manager on the loop and on its delivery workers. Its inputs are
 * our own spool records and config, never peer data. */
#include "sched/sched.h"

#include <stddef.h>
#include <sys/time.h>

#include "conf/conf.h"
#include "mail/envelope.h"

uint64_t sched_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

uint64_t sched_age_us(const struct envelope *e, uint64_t now_us)
{
	return now_us > e->arrival_us ? now_us - e->arrival_us : 0;
}

bool sched_expired(const struct conf *conf, const struct envelope *e, uint64_t now_us)
{
	return sched_age_us(e, now_us) > conf->delivery.max_lifetime * 1000;
}

uint64_t sched_retry_delay_ms(const struct conf *conf, uint32_t attempts)
{
	uint64_t delay = conf->queue.retry_min;
	for (uint32_t i = 1; i < attempts && delay < conf->queue.retry_max; i++)
		delay *= 2;
	return delay < conf->queue.retry_max ? delay : conf->queue.retry_max;
}

bool sched_not_yet_due(const struct conf *conf, uint64_t next_try_us, uint64_t now_us)
{
	return next_try_us > now_us + 1000000 &&
	       next_try_us - now_us <= conf->queue.retry_max * 1000;
}

uint64_t sched_dest_backoff_ms(const struct conf *conf, unsigned failures)
{
	uint64_t ms = conf->queue.retry_min;
	for (unsigned i = 2; i < failures && ms < conf->queue.retry_max; i++)
		ms *= 2;
	if (ms > conf->queue.retry_max)
		ms = conf->queue.retry_max;
	return ms;
}

bool sched_delay_warning_due(const struct conf *conf, const struct envelope *e, uint32_t flags,
                             uint64_t now_us)
{
	return !(flags & ENVELOPE_SCHED_DELAY_WARNED) && conf->delivery.delay_warning > 0 &&
	       sched_age_us(e, now_us) > conf->delivery.delay_warning * 1000;
}
