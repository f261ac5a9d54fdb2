/* authfail.h — AUTH failures per client address, for the lock-out of
 * auth.max_failures within auth.failure_window (issue 8).
 *
 * A guess is reserved (counted as a failure) before it is evaluated, and
 * given back only if it succeeds or was never made: parallel sessions from
 * one address share one budget and cannot each get a free guess. IPv6
 * clients are counted per /64 (one customer's allocation), IPv4 per
 * address. The table has a fixed size (bounded memory whatever the number
 * of attackers), is indexed by SipHash under a random key (nobody can
 * choose addresses that collide), and never evicts an address that has
 * failures in its window. An address that finds no free slot is counted
 * with the other such addresses of its network (IPv4 /24, IPv6 /48) in a
 * second table, and only when that is full too in one overflow count
 * shared by all: a conservative budget rather than a fresh one. Filling
 * the first table (an attacker's many addresses) so locks out newcomers
 * of the attacker's own networks, not of everyone's.
 *
 * Runs in the auth service (auth/authd.c) on its event loop (not thread-safe). Times are passed in
 * (milliseconds, monotonic), so tests control the clock. */
#ifndef HK_AUTH_AUTHFAIL_H
#define HK_AUTH_AUTHFAIL_H

#include <stdint.h>
#include <sys/socket.h>

#include "lib/siphash.h"

struct authfail;

/* slots > 0. key NULL: a random key from getrandom(2) (aborts if the
 * kernel has none to give); tests pass their own. */
struct authfail *authfail_create(size_t slots, const unsigned char key[SIPHASH_KEY_LEN]);
void authfail_free(struct authfail **t);

/* Reserve one guess for the client's address: 0 (now counted), or -1 when
 * the address already has max within the window (locked out). */
int authfail_reserve(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                     uint64_t window_ms, unsigned max);
/* Give a reserved guess back: it succeeded, or none was made (a cancelled
 * or malformed exchange). */
void authfail_release(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                      uint64_t window_ms);
/* Failures (and guesses in flight) of the address within the window. */
unsigned authfail_count(struct authfail *t, const struct sockaddr_storage *ss, uint64_t now_ms,
                        uint64_t window_ms);

/* The 16-octet key of an address: IPv4 (or v4-mapped IPv6) as ::ffff:a.b.c.d,
 * other IPv6 as its /64 with the interface identifier zeroed. */
void authfail_addr_key(const struct sockaddr_storage *ss, unsigned char out[16]);

#endif
