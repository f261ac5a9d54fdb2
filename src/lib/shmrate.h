/* shmrate.h — rate counters shared by the smtpd processes: a fixed-size
 * hash table in a shared memory file the master creates and every smtpd
 * maps (MAP_SHARED), so a limit holds across N processes instead of
 * allowing N times it. Each slot counts one key (a client network, a user)
 * in a sliding window approximated by two fixed windows (the current count
 * plus the previous one weighted by the part of it still inside the
 * window), updated with compare-and-swap: no lock, so a process that dies
 * holds nothing. Bounded: a key goes in one of SHMRATE_PROBE slots from its
 * hash; when all are taken, the one idle the longest is evicted (an
 * attacker with many addresses can evict counts, never grow the table).
 * Two processes rolling the same slot into a new window at the same instant
 * may forget up to one window's previous count: a limit is approximate
 * only at window edges. Knows nothing of SMTP. */
#ifndef HK_LIB_SHMRATE_H
#define HK_LIB_SHMRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHMRATE_PROBE 16
#define SHMRATE_SLOTS_MIN 1024
#define SHMRATE_SLOTS_MAX (1u << 22)

struct shmrate;

/* The master: a table of at least nslots slots (rounded up to a power of
 * two, 32 octets each). */
struct shmrate *shmrate_create(size_t nslots);
/* A child: map the master's table. NULL if fd is not one. */
struct shmrate *shmrate_attach(int fd);
int shmrate_fd(const struct shmrate *r);
void shmrate_free(struct shmrate **r);

/* Count one event of key (keylen octets) at now_ms unless limit events are
 * counted already in the window_ms before it: true when counted (allowed),
 * false when over the limit (nothing counted). A table too contended to
 * find a slot allows (and counts nothing). */
bool shmrate_take(struct shmrate *r, const void *key, size_t keylen, unsigned limit,
                  uint64_t window_ms, uint64_t now_ms);
/* The estimate shmrate_take() compares with limit, for tests and logs. */
unsigned shmrate_peek(struct shmrate *r, const void *key, size_t keylen, uint64_t window_ms,
                      uint64_t now_ms);

#endif
