/* shmcount.h — connection counts shared by the smtpd processes: the total
 * (limits.connections) and one count per client address
 * (limits.connections_per_ip), in a shared memory file the master creates
 * and every smtpd maps. Each smtpd process writes only its own region (one
 * per process slot) and reads all of them: a count is the sum over the
 * regions, and when a process dies the master clears its region before its
 * successor starts, so a crash leaks no count. A slot is one 64-bit word, a
 * 32-bit fingerprint of the address (SipHash with a key of the master's)
 * and a 32-bit count, stored atomically for the readers; an address's count
 * in a region is the sum over the slots of its fingerprint in its probe
 * window. Two processes admitting the same address at the same instant may
 * pass a limit by one each, as with any unlocked check. */
#ifndef HK_LIB_SHMCOUNT_H
#define HK_LIB_SHMCOUNT_H

#include <stdbool.h>
#include <stddef.h>

struct shmcount;

/* The master: a new table for up to max_conns connections in each of
 * nregions processes; its fd goes to the children (shmcount_fd), which map
 * it with shmcount_attach and write region `region`. */
struct shmcount *shmcount_create(size_t max_conns, unsigned nregions);
struct shmcount *shmcount_attach(int fd, unsigned region);
/* The master, after the process of that region has died. */
void shmcount_clear_region(struct shmcount *sc, unsigned region);
int shmcount_fd(const struct shmcount *sc);
void shmcount_free(struct shmcount **sc);

enum shmcount_result { SHMCOUNT_OK = 0, SHMCOUNT_TOTAL, SHMCOUNT_PER_KEY };

/* Count one connection of key (16 octets: an IPv6 address or an IPv4 one
 * mapped) if neither limit is reached. */
enum shmcount_result shmcount_acquire(struct shmcount *sc, const unsigned char key[16],
				      unsigned total_max, unsigned per_key_max);
void shmcount_release(struct shmcount *sc, const unsigned char key[16]);
unsigned shmcount_total(const struct shmcount *sc);

#endif
