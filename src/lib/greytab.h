/* greytab.h — the greylisting table: a fixed-size hash table of triplet
 * fingerprints (SipHash of what the caller keys on) with the time each was
 * first seen, last seen and let through, in a shared memory file the
 * master creates and every smtpd maps (MAP_SHARED), lock-free (atomics per
 * field). The master loads it from a file at start and writes it back
 * periodically and at stop (greytab_save/greytab_load), so triplets survive
 * restarts. Bounded: a key goes in one of GREYTAB_PROBE slots from its
 * hash; when all are taken the one seen longest ago is evicted. Times are
 * wall-clock seconds (they must mean the same after a restart). Knows
 * nothing of SMTP. */
#ifndef HK_LIB_GREYTAB_H
#define HK_LIB_GREYTAB_H

#include <stddef.h>
#include <stdint.h>

#define GREYTAB_PROBE 16
#define GREYTAB_SLOTS_MIN 1024
#define GREYTAB_SLOTS_MAX (1u << 24)

struct greytab;

struct greytab_times {
	uint32_t delay;        /* seconds before a retry is let through */
	uint32_t retry_window; /* a retry later than this after the first is a new first */
	uint32_t retention;    /* a passed triplet unseen this long is forgotten */
};

enum greytab_result {
	GREYTAB_NEW,   /* first seen now: defer */
	GREYTAB_EARLY, /* retried before the delay: defer */
	GREYTAB_PASS,  /* retried after the delay, or passed before: accept */
};

struct greytab *greytab_create(size_t nslots);
struct greytab *greytab_attach(int fd);
int greytab_fd(const struct greytab *t);
void greytab_free(struct greytab **t);

/* Look key up at now (seconds) and record the attempt. *wait_r: seconds
 * until a retry passes (GREYTAB_NEW and GREYTAB_EARLY). */
enum greytab_result greytab_check(struct greytab *t, const void *key, size_t keylen, uint32_t now,
                                  const struct greytab_times *tm, uint32_t *wait_r);

/* The master: write the live entries to path (path.tmp, fsync, rename;
 * never through a symbolic link); load them back, dropping what expired.
 * A missing file loads nothing. 0, or -1 with a message in err. */
int greytab_save(struct greytab *t, const char *path, uint32_t now, const struct greytab_times *tm,
                 char *err, size_t errlen);
int greytab_load(struct greytab *t, const char *path, uint32_t now, const struct greytab_times *tm,
                 size_t *loaded_r, char *err, size_t errlen);

#endif
