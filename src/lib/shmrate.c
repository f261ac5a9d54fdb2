/* shmrate.c — shared sliding-window rate counters (shmrate.h). Written by
 * every smtpd process at once: only atomics on the shared slots. */
#include "lib/shmrate.h"

#include "lib/alloc.h"
#include "lib/siphash.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHMRATE_MAGIC 0x686b7274u /* "hkrt" */
#define SHMRATE_CLAIM_TRIES 4

struct shmrate_hdr {
	uint32_t magic;
	uint32_t nslots; /* a power of two */
	unsigned char key[SIPHASH_KEY_LEN];
};

/* cur and prev: (window index << 32) | count. */
struct shmrate_slot {
	_Atomic uint64_t key; /* 0: empty */
	_Atomic uint64_t cur;
	_Atomic uint64_t prev;
	uint64_t pad;
};

struct shmrate {
	int fd;
	size_t size;
	struct shmrate_hdr *h;
	struct shmrate_slot *slots;
};

static struct shmrate *shmrate_map(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct shmrate *r = xcalloc(1, sizeof(*r));
	r->fd = fd;
	r->size = size;
	r->h = p;
	r->slots = (struct shmrate_slot *)(void *)((char *)p + 64);
	return r;
}

struct shmrate *shmrate_create(size_t nslots)
{
	uint32_t n = SHMRATE_SLOTS_MIN;
	while (n < nslots && n < SHMRATE_SLOTS_MAX)
		n <<= 1;
	size_t size = 64 + (size_t)n * sizeof(struct shmrate_slot);
	int fd = memfd_create("hikyaku-rates", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct shmrate *r = shmrate_map(fd, size);
	if (r == NULL) {
		close(fd);
		return NULL;
	}
	r->h->magic = SHMRATE_MAGIC;
	r->h->nslots = n;
	if (getrandom(r->h->key, sizeof(r->h->key), 0) != (ssize_t)sizeof(r->h->key))
		memset(r->h->key, 0x3c, sizeof(r->h->key));
	return r;
}

struct shmrate *shmrate_attach(int fd)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || (size_t)st.st_size < 64)
		return NULL;
	struct shmrate *r = shmrate_map(fd, (size_t)st.st_size);
	if (r == NULL)
		return NULL;
	uint32_t n = r->h->nslots;
	if (r->h->magic != SHMRATE_MAGIC || n == 0 || (n & (n - 1)) != 0 ||
	    64 + (size_t)n * sizeof(struct shmrate_slot) > r->size) {
		munmap(r->h, r->size);
		free(r);
		return NULL;
	}
	return r;
}

int shmrate_fd(const struct shmrate *r)
{
	return r->fd;
}

void shmrate_free(struct shmrate **rp)
{
	struct shmrate *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	munmap(r->h, r->size);
	close(r->fd);
	free(r);
}

#define W_IDX(v) ((uint32_t)((v) >> 32))
#define W_CNT(v) ((uint32_t)(v))

/* The slot of fp: found, or claimed (empty, or the one idle longest).
 * NULL when others kept claiming under us. */
static struct shmrate_slot *shmrate_slot(struct shmrate *r, uint64_t fp, uint32_t idx)
{
	uint32_t mask = r->h->nslots - 1;
	uint32_t home = (uint32_t)fp & mask;
	for (int t = 0; t < SHMRATE_CLAIM_TRIES; t++) {
		struct shmrate_slot *empty = NULL, *victim = NULL;
		uint32_t victim_idx = UINT32_MAX;
		for (uint32_t i = 0; i < SHMRATE_PROBE; i++) {
			struct shmrate_slot *s = &r->slots[(home + i) & mask];
			uint64_t k = atomic_load(&s->key);
			if (k == fp)
				return s;
			if (k == 0) {
				if (empty == NULL)
					empty = s;
				continue;
			}
			uint32_t si = W_IDX(atomic_load(&s->cur));
			/* idle longest: the oldest window (ahead of idx: clock skew,
			 * treat as new) */
			uint32_t age = si <= idx ? si : idx;
			if (age < victim_idx) {
				victim_idx = age;
				victim = s;
			}
		}
		if (empty != NULL) {
			uint64_t zero = 0;
			if (atomic_compare_exchange_strong(&empty->key, &zero, fp))
				return empty; /* its counts are 0 already */
			continue;
		}
		uint64_t old = atomic_load(&victim->key);
		if (old != 0 && old != fp &&
		    atomic_compare_exchange_strong(&victim->key, &old, fp)) {
			atomic_store(&victim->cur, 0);
			atomic_store(&victim->prev, 0);
			return victim;
		}
	}
	return NULL;
}

static uint64_t shmrate_fp(const struct shmrate *r, const void *key, size_t keylen)
{
	uint64_t h = siphash24(r->h->key, key, keylen);
	return h != 0 ? h : 1;
}

/* The previous window's count weighted by what of it is still inside the
 * sliding window. */
static uint64_t shmrate_weighted_prev(uint64_t prev, uint32_t idx, uint64_t window_ms,
                                      uint64_t now_ms)
{
	if (W_IDX(prev) != idx - 1)
		return 0;
	uint64_t elapsed = now_ms % window_ms;
	return (uint64_t)W_CNT(prev) * (window_ms - elapsed) / window_ms;
}

bool shmrate_take(struct shmrate *r, const void *key, size_t keylen, unsigned limit,
                  uint64_t window_ms, uint64_t now_ms)
{
	if (window_ms == 0)
		window_ms = 1;
	uint32_t idx = (uint32_t)(now_ms / window_ms);
	struct shmrate_slot *s = shmrate_slot(r, shmrate_fp(r, key, keylen), idx);
	if (s == NULL)
		return true;
	for (int spin = 0; spin < 64; spin++) {
		uint64_t c = atomic_load(&s->cur);
		if (W_IDX(c) != idx) {
			/* a new window: the current count becomes the previous */
			uint64_t prev = W_IDX(c) == idx - 1 ? c : 0;
			if (atomic_compare_exchange_strong(&s->cur, &c, (uint64_t)idx << 32))
				atomic_store(&s->prev, prev);
			continue;
		}
		uint64_t est =
		    W_CNT(c) + shmrate_weighted_prev(atomic_load(&s->prev), idx, window_ms, now_ms);
		if (est >= limit)
			return false;
		if (atomic_compare_exchange_strong(&s->cur, &c, c + 1))
			return true;
	}
	return true; /* contended beyond reason: allow rather than spin */
}

unsigned shmrate_peek(struct shmrate *r, const void *key, size_t keylen, uint64_t window_ms,
                      uint64_t now_ms)
{
	if (window_ms == 0)
		window_ms = 1;
	uint32_t idx = (uint32_t)(now_ms / window_ms);
	uint64_t fp = shmrate_fp(r, key, keylen);
	uint32_t mask = r->h->nslots - 1;
	for (uint32_t i = 0; i < SHMRATE_PROBE; i++) {
		struct shmrate_slot *s = &r->slots[(((uint32_t)fp & mask) + i) & mask];
		if (atomic_load(&s->key) != fp)
			continue;
		uint64_t c = atomic_load(&s->cur);
		uint64_t prev = atomic_load(&s->prev);
		if (W_IDX(c) == idx)
			return (unsigned)(W_CNT(c) +
			                  shmrate_weighted_prev(prev, idx, window_ms, now_ms));
		if (W_IDX(c) == idx - 1)
			return (unsigned)shmrate_weighted_prev(c, idx, window_ms, now_ms);
		return 0;
	}
	return 0;
}
