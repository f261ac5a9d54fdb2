/* envelope.c — the in-memory envelope of one queued message, and queue ids.
 *
 * Runs in smtpd (building the envelope of a transaction, generating queue
 * ids) and in queue (envelopes decoded from the spool). No I/O except
 * getrandom(2) and the clock for queue ids. Strings stored here came from
 * the network, but by now they have been parsed; nothing here interprets
 * them. */
#include "mail/envelope.h"
#include "lib/alloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void envelope_init(struct envelope *e)
{
	memset(e, 0, sizeof(*e));
}

void envelope_clear(struct envelope *e)
{
	for (size_t i = 0; i < e->nrcpts; i++) {
		free(e->rcpts[i].addr);
		free(e->rcpts[i].orcpt);
	}
	free(e->rcpts);
	free(e->sender);
	free(e->envid);
	free(e->client_addr);
	free(e->client_helo);
	free(e->inbox);
	envelope_init(e);
}

void envelope_set_str(char **field, const char *value)
{
	/* Duplicate first: value may alias the old string. */
	char *n = value != NULL ? xstrdup(value) : NULL;
	free(*field);
	*field = n;
}

struct envelope_rcpt *envelope_add_rcpt(struct envelope *e, const char *addr)
{
	if (e->nrcpts == e->cap) {
		size_t ncap = e->cap != 0 ? e->cap * 2 : 4;
		e->rcpts = xreallocarray(e->rcpts, ncap, sizeof(*e->rcpts));
		e->cap = ncap;
	}
	struct envelope_rcpt *r = &e->rcpts[e->nrcpts++];
	r->addr = xstrdup(addr != NULL ? addr : "");
	r->orcpt = NULL;
	r->notify = 0;
	r->done = false;
	return r;
}

size_t envelope_pending(const struct envelope *e)
{
	size_t n = 0;
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (!e->rcpts[i].done)
			n++;
	}
	return n;
}

/* Queue ids.
 *
 *   TTTTTTTT CCC RRRRR     (16 characters of [0-9A-Za-z])
 *
 * T: base-62 ticks of 16 us since 2000-01-01T00:00:00Z, most significant
 *    first. The alphabet is in ASCII order, so comparing ids as strings
 *    compares arrival times. 62^8 ticks of 16 us last ~110 years (to ~2110);
 *    times outside the range are clamped.
 * C: a per-process atomic counter (offset by a random salt), modulo 62^3:
 *    distinct within one process unless it makes more than 238,328 ids in
 *    one 16 us tick, which it cannot.
 * R: fresh getrandom(2) bytes, modulo 62^5: separates processes (including
 *    forked children, which inherit the counter, and processes in other pid
 *    namespaces sharing the spool) that make an id in the same tick.
 *
 * The counter and salt are the module's only mutable state: an id generator
 * must be process-wide to be unique, so they cannot live in a context. */
#define QID_TIME_LEN 8
#define QID_CTR_LEN 3
#define QID_RAND_LEN 5
#define QID_EPOCH_US 946684800000000ULL /* 2000-01-01T00:00:00Z */
#define QID_TICK_US 16

static const char qid_alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static _Atomic uint64_t qid_counter;
static _Atomic uint64_t qid_salt; /* 0 until first use */

static uint64_t qid_pow62(unsigned n)
{
	uint64_t v = 1;
	while (n-- > 0)
		v *= 62;
	return v;
}

/* Write v as exactly n base-62 digits, most significant first. */
static void qid_put62(char *out, unsigned n, uint64_t v)
{
	for (unsigned i = n; i > 0; i--) {
		out[i - 1] = qid_alphabet[v % 62];
		v /= 62;
	}
}

static uint64_t qid_mix(uint64_t x) /* splitmix64 finalizer */
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t qid_random(uint64_t ctr)
{
	uint64_t v;
	ssize_t n;
	do {
		n = getrandom(&v, sizeof(v), 0);
	} while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(v))
		return v;
	/* No getrandom (seccomp, ancient kernel): weaker but still varied. */
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return qid_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^
	               ((uint64_t)getpid() << 40) ^ qid_mix(ctr));
}

static uint64_t qid_time_ticks(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t max = qid_pow62(QID_TIME_LEN) - 1;
	if (ts.tv_sec < 0)
		return 0;
	uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	if (us < QID_EPOCH_US)
		return 0;
	uint64_t t = (us - QID_EPOCH_US) / QID_TICK_US;
	return t > max ? max : t;
}

void qid_generate(char out[QID_LEN + 1])
{
	uint64_t ctr = atomic_fetch_add(&qid_counter, 1);
	uint64_t salt = atomic_load(&qid_salt);
	if (salt == 0) {
		uint64_t expect = 0;
		uint64_t s = qid_random(ctr) | 1; /* never 0: 0 means "unset" */
		/* Whoever wins the race sets the salt; everyone uses that one. */
		atomic_compare_exchange_strong(&qid_salt, &expect, s);
		salt = atomic_load(&qid_salt);
	}
	qid_put62(out, QID_TIME_LEN, qid_time_ticks());
	qid_put62(out + QID_TIME_LEN, QID_CTR_LEN, (salt + ctr) % qid_pow62(QID_CTR_LEN));
	qid_put62(out + QID_TIME_LEN + QID_CTR_LEN, QID_RAND_LEN,
	          qid_random(ctr) % qid_pow62(QID_RAND_LEN));
	out[QID_LEN] = '\0';
}

bool qid_valid(const char *s)
{
	if (s == NULL)
		return false;
	for (size_t i = 0; i < QID_LEN; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return false; /* also stops at a NUL in a short string */
	}
	return s[QID_LEN] == '\0';
}
