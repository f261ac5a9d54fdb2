/* shmcount.c — shared connection counts (shmcount.h). */
#include "lib/shmcount.h"

#include "lib/alloc.h"
#include "lib/siphash.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHMCOUNT_WINDOW 32
#define SHMCOUNT_MAGIC 0x686b636eu /* "hkcn" */

struct shmcount_hdr {
	uint32_t magic;
	uint32_t nslots;   /* per region, a power of two */
	uint32_t nregions;
	uint32_t pad;
	unsigned char key[SIPHASH_KEY_LEN];
};

/* A region: its total, then its slots. */
struct shmcount_region {
	_Atomic uint64_t total;
	_Atomic uint64_t slots[];
};

struct shmcount {
	int fd;
	size_t size;
	unsigned region; /* the one this process writes */
	struct shmcount_hdr *h;
};

static size_t shmcount_region_size(uint32_t nslots)
{
	return sizeof(struct shmcount_region) + (size_t)nslots * sizeof(uint64_t);
}

static struct shmcount_region *shmcount_reg(const struct shmcount *sc, unsigned i)
{
	unsigned char *base = (unsigned char *)sc->h + sizeof(struct shmcount_hdr);
	return (struct shmcount_region *)(base + (size_t)i * shmcount_region_size(sc->h->nslots));
}

static struct shmcount *shmcount_map(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct shmcount *sc = xcalloc(1, sizeof(*sc));
	sc->fd = fd;
	sc->size = size;
	sc->h = p;
	return sc;
}

struct shmcount *shmcount_create(size_t max_conns, unsigned nregions)
{
	uint32_t n = 1024;
	while (n < 4 * max_conns && n < (1u << 22))
		n <<= 1;
	if (nregions == 0)
		nregions = 1;
	size_t size = sizeof(struct shmcount_hdr) + nregions * shmcount_region_size(n);
	int fd = memfd_create("hikyaku-conns", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct shmcount *sc = shmcount_map(fd, size);
	if (sc == NULL) {
		close(fd);
		return NULL;
	}
	sc->h->magic = SHMCOUNT_MAGIC;
	sc->h->nslots = n;
	sc->h->nregions = nregions;
	if (getrandom(sc->h->key, sizeof(sc->h->key), 0) != (ssize_t)sizeof(sc->h->key))
		memset(sc->h->key, 0x5a, sizeof(sc->h->key)); /* still correct, less even */
	return sc;
}

struct shmcount *shmcount_attach(int fd, unsigned region)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(struct shmcount_hdr))
		return NULL;
	struct shmcount *sc = shmcount_map(fd, (size_t)st.st_size);
	if (sc == NULL)
		return NULL;
	uint32_t n = sc->h->nslots;
	if (sc->h->magic != SHMCOUNT_MAGIC || n == 0 || (n & (n - 1)) != 0 ||
	    region >= sc->h->nregions ||
	    sizeof(struct shmcount_hdr) + sc->h->nregions * shmcount_region_size(n) > sc->size) {
		shmcount_free(&sc);
		return NULL;
	}
	sc->region = region;
	return sc;
}

int shmcount_fd(const struct shmcount *sc)
{
	return sc->fd;
}

void shmcount_free(struct shmcount **scp)
{
	struct shmcount *sc = *scp;
	if (sc == NULL)
		return;
	*scp = NULL;
	munmap(sc->h, sc->size);
	close(sc->fd);
	free(sc);
}

void shmcount_clear_region(struct shmcount *sc, unsigned region)
{
	if (region >= sc->h->nregions)
		return;
	struct shmcount_region *r = shmcount_reg(sc, region);
	for (uint32_t i = 0; i < sc->h->nslots; i++)
		atomic_store(&r->slots[i], 0);
	atomic_store(&r->total, 0);
}

static void shmcount_hash(const struct shmcount *sc, const unsigned char key[16], uint32_t *fp_r,
			  uint32_t *home_r)
{
	uint64_t h = siphash24(sc->h->key, key, 16);
	*fp_r = (uint32_t)(h >> 32) | 1; /* never 0: 0 is an empty slot */
	*home_r = (uint32_t)h & (sc->h->nslots - 1);
}

#define SLOT_FP(v) ((uint32_t)((v) >> 32))
#define SLOT_COUNT(v) ((uint32_t)(v))

/* In one region: the sum of key's counts; its first slot and the first
 * empty one in the window (-1 for none). */
static uint64_t shmcount_scan(const struct shmcount *sc, struct shmcount_region *r, uint32_t fp,
			      uint32_t home, int *match_r, int *empty_r)
{
	uint32_t mask = sc->h->nslots - 1;
	uint64_t sum = 0;
	*match_r = *empty_r = -1;
	for (uint32_t i = 0; i < SHMCOUNT_WINDOW; i++) {
		uint32_t at = (home + i) & mask;
		uint64_t v = atomic_load_explicit(&r->slots[at], memory_order_relaxed);
		if (v != 0 && SLOT_FP(v) == fp) {
			sum += SLOT_COUNT(v);
			if (*match_r < 0)
				*match_r = (int)at;
		} else if (v == 0 && *empty_r < 0) {
			*empty_r = (int)at;
		}
	}
	return sum;
}

enum shmcount_result shmcount_acquire(struct shmcount *sc, const unsigned char key[16],
				      unsigned total_max, unsigned per_key_max)
{
	uint32_t fp, home;
	int match, empty;
	uint64_t total = 0, sum = 0;
	shmcount_hash(sc, key, &fp, &home);
	for (unsigned i = 0; i < sc->h->nregions; i++) {
		struct shmcount_region *r = shmcount_reg(sc, i);
		total += atomic_load_explicit(&r->total, memory_order_relaxed);
		if (i != sc->region)
			sum += shmcount_scan(sc, r, fp, home, &match, &empty);
	}
	if (total >= total_max)
		return SHMCOUNT_TOTAL;
	struct shmcount_region *mine = shmcount_reg(sc, sc->region);
	sum += shmcount_scan(sc, mine, fp, home, &match, &empty);
	if (sum >= per_key_max)
		return SHMCOUNT_PER_KEY;
	/* Only this process writes its region: plain stores, atomic for the
	 * readers. A full window (4 slots per connection make it all but
	 * impossible) counts nothing and refuses nothing. */
	if (match >= 0)
		atomic_fetch_add(&mine->slots[match], 1);
	else if (empty >= 0)
		atomic_store(&mine->slots[empty], (uint64_t)fp << 32 | 1);
	atomic_fetch_add(&mine->total, 1);
	return SHMCOUNT_OK;
}

void shmcount_release(struct shmcount *sc, const unsigned char key[16])
{
	uint32_t fp, home;
	int match, empty;
	struct shmcount_region *mine = shmcount_reg(sc, sc->region);
	shmcount_hash(sc, key, &fp, &home);
	if (shmcount_scan(sc, mine, fp, home, &match, &empty) > 0 && match >= 0) {
		uint64_t v = atomic_load(&mine->slots[match]);
		atomic_store(&mine->slots[match], SLOT_COUNT(v) <= 1 ? 0 : v - 1);
	}
	if (atomic_load(&mine->total) > 0)
		atomic_fetch_sub(&mine->total, 1);
}

unsigned shmcount_total(const struct shmcount *sc)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < sc->h->nregions; i++)
		total += atomic_load(&shmcount_reg(sc, i)->total);
	return (unsigned)total;
}
