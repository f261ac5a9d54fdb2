/* greytab.c — the shared greylisting table and its file (greytab.h).
 * The smtpd processes write the table at once (atomics only); the master
 * reads it to save it. The file is written and read by the master (root)
 * in the spool directory, which the unprivileged queue can write: it is
 * opened with O_NOFOLLOW, the temporary file created exclusively, its size
 * bounded and its contents checked (magic, count, SipHash checksum) before
 * anything is used. */
#include "lib/greytab.h"

#include "lib/alloc.h"
#include "lib/siphash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define GREYTAB_MAGIC 0x686b6772u /* "hkgr" */
#define GREYTAB_FILE_MAGIC "HKGREY01"

struct greytab_hdr {
	uint32_t magic;
	uint32_t nslots;
	unsigned char key[SIPHASH_KEY_LEN];
};

struct greytab_slot {
	_Atomic uint64_t key; /* 0: empty */
	_Atomic uint32_t first;
	_Atomic uint32_t last;
	_Atomic uint32_t passed; /* 0: not yet */
	uint32_t pad;
};

/* The file: header, then count records, then a SipHash of the records. */
struct greytab_file_hdr {
	char magic[8];
	uint32_t count;
	uint32_t pad;
	unsigned char key[SIPHASH_KEY_LEN];
};
struct greytab_rec {
	uint64_t key;
	uint32_t first, last, passed, pad;
};

struct greytab {
	int fd;
	size_t size;
	struct greytab_hdr *h;
	struct greytab_slot *slots;
};

static struct greytab *greytab_map(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	struct greytab *t = xcalloc(1, sizeof(*t));
	t->fd = fd;
	t->size = size;
	t->h = p;
	t->slots = (struct greytab_slot *)(void *)((char *)p + 64);
	return t;
}

struct greytab *greytab_create(size_t nslots)
{
	uint32_t n = GREYTAB_SLOTS_MIN;
	while (n < nslots && n < GREYTAB_SLOTS_MAX)
		n <<= 1;
	size_t size = 64 + (size_t)n * sizeof(struct greytab_slot);
	int fd = memfd_create("hikyaku-greylist", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct greytab *t = greytab_map(fd, size);
	if (t == NULL) {
		close(fd);
		return NULL;
	}
	t->h->magic = GREYTAB_MAGIC;
	t->h->nslots = n;
	if (getrandom(t->h->key, sizeof(t->h->key), 0) != (ssize_t)sizeof(t->h->key))
		memset(t->h->key, 0x6b, sizeof(t->h->key));
	return t;
}

struct greytab *greytab_attach(int fd)
{
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || (size_t)st.st_size < 64)
		return NULL;
	struct greytab *t = greytab_map(fd, (size_t)st.st_size);
	if (t == NULL)
		return NULL;
	uint32_t n = t->h->nslots;
	if (t->h->magic != GREYTAB_MAGIC || n == 0 || (n & (n - 1)) != 0 ||
	    64 + (size_t)n * sizeof(struct greytab_slot) > t->size) {
		munmap(t->h, t->size);
		free(t);
		return NULL;
	}
	return t;
}

int greytab_fd(const struct greytab *t)
{
	return t->fd;
}

void greytab_free(struct greytab **tp)
{
	struct greytab *t = *tp;
	if (t == NULL)
		return;
	*tp = NULL;
	munmap(t->h, t->size);
	close(t->fd);
	free(t);
}

/* Has the entry expired at now (a passed one unseen for retention, a
 * pending one older than the retry window)? */
static int greytab_expired(uint32_t first, uint32_t last, uint32_t passed, uint32_t now,
                           const struct greytab_times *tm)
{
	if (passed != 0)
		return now > last && now - last > tm->retention;
	return now > first && now - first > tm->retry_window;
}

/* The slot of fp, or a fresh one (*fresh_r). NULL only under contention. */
static struct greytab_slot *greytab_slot(struct greytab *t, uint64_t fp, int *fresh_r)
{
	uint32_t mask = t->h->nslots - 1;
	uint32_t home = (uint32_t)(fp >> 32) & mask;
	*fresh_r = 0;
	for (int tries = 0; tries < 4; tries++) {
		struct greytab_slot *empty = NULL, *victim = NULL;
		uint32_t oldest = UINT32_MAX;
		for (uint32_t i = 0; i < GREYTAB_PROBE; i++) {
			struct greytab_slot *s = &t->slots[(home + i) & mask];
			uint64_t k = atomic_load(&s->key);
			if (k == fp)
				return s;
			if (k == 0) {
				if (empty == NULL)
					empty = s;
				continue;
			}
			uint32_t last = atomic_load(&s->last);
			if (last < oldest) {
				oldest = last;
				victim = s;
			}
		}
		struct greytab_slot *s = empty != NULL ? empty : victim;
		uint64_t old = atomic_load(&s->key);
		if ((empty != NULL && old != 0) || old == fp)
			continue;
		if (atomic_compare_exchange_strong(&s->key, &old, fp)) {
			*fresh_r = 1;
			return s;
		}
	}
	return NULL;
}

static uint64_t greytab_fp(const struct greytab *t, const void *key, size_t keylen)
{
	uint64_t h = siphash24(t->h->key, key, keylen);
	return h != 0 ? h : 1;
}

enum greytab_result greytab_check(struct greytab *t, const void *key, size_t keylen, uint32_t now,
                                  const struct greytab_times *tm, uint32_t *wait_r)
{
	int fresh;
	struct greytab_slot *s = greytab_slot(t, greytab_fp(t, key, keylen), &fresh);
	*wait_r = tm->delay;
	if (s == NULL)
		return GREYTAB_NEW; /* contended: defer, the retry finds a slot */
	uint32_t first = atomic_load(&s->first), last = atomic_load(&s->last);
	uint32_t passed = atomic_load(&s->passed);
	if (fresh || first == 0 || greytab_expired(first, last, passed, now, tm)) {
		atomic_store(&s->passed, 0);
		atomic_store(&s->first, now);
		atomic_store(&s->last, now);
		return GREYTAB_NEW;
	}
	atomic_store(&s->last, now);
	if (passed != 0)
		return GREYTAB_PASS;
	if (now >= first && now - first >= tm->delay) {
		atomic_store(&s->passed, now);
		return GREYTAB_PASS;
	}
	*wait_r = now >= first ? tm->delay - (now - first) : tm->delay;
	return GREYTAB_EARLY;
}

static uint64_t greytab_sum(const unsigned char key[SIPHASH_KEY_LEN], const void *p, size_t len)
{
	return siphash24(key, p, len);
}

int greytab_save(struct greytab *t, const char *path, uint32_t now, const struct greytab_times *tm,
                 char *err, size_t errlen)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	size_t cap = t->h->nslots, n = 0;
	struct greytab_rec *recs = xreallocarray(NULL, cap, sizeof(*recs));
	for (size_t i = 0; i < cap; i++) {
		struct greytab_slot *s = &t->slots[i];
		uint64_t k = atomic_load(&s->key);
		uint32_t first = atomic_load(&s->first), last = atomic_load(&s->last);
		uint32_t passed = atomic_load(&s->passed);
		if (k == 0 || first == 0 || greytab_expired(first, last, passed, now, tm))
			continue;
		recs[n++] =
		    (struct greytab_rec){.key = k, .first = first, .last = last, .passed = passed};
	}
	struct greytab_file_hdr fh = {.count = (uint32_t)n};
	memcpy(fh.magic, GREYTAB_FILE_MAGIC, 8);
	memcpy(fh.key, t->h->key, sizeof(fh.key));
	uint64_t sum = greytab_sum(t->h->key, recs, n * sizeof(*recs));
	(void)unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	int rc = -1;
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		free(recs);
		return -1;
	}
	if (write(fd, &fh, sizeof(fh)) != (ssize_t)sizeof(fh) ||
	    write(fd, recs, n * sizeof(*recs)) != (ssize_t)(n * sizeof(*recs)) ||
	    write(fd, &sum, sizeof(sum)) != (ssize_t)sizeof(sum) || fsync(fd) < 0)
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
	else if (rename(tmp, path) < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	else
		rc = 0;
	close(fd);
	if (rc < 0)
		(void)unlink(tmp);
	free(recs);
	return rc;
}

/* Put one saved record in the table (its slot, or the first free one). */
static void greytab_put(struct greytab *t, const struct greytab_rec *r)
{
	int fresh;
	struct greytab_slot *s = greytab_slot(t, r->key, &fresh);
	if (s == NULL)
		return;
	atomic_store(&s->first, r->first);
	atomic_store(&s->last, r->last);
	atomic_store(&s->passed, r->passed);
}

int greytab_load(struct greytab *t, const char *path, uint32_t now, const struct greytab_times *tm,
                 size_t *loaded_r, char *err, size_t errlen)
{
	struct greytab_file_hdr fh;
	struct stat st;
	*loaded_r = 0;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	int rc = -1;
	struct greytab_rec *recs = NULL;
	size_t max = (size_t)GREYTAB_SLOTS_MAX * sizeof(struct greytab_rec) + sizeof(fh) + 8;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		snprintf(err, errlen, "%s: not a regular file of a sane size", path);
		goto out;
	}
	if (read(fd, &fh, sizeof(fh)) != (ssize_t)sizeof(fh) ||
	    memcmp(fh.magic, GREYTAB_FILE_MAGIC, 8) != 0 || fh.count > GREYTAB_SLOTS_MAX ||
	    (size_t)st.st_size != sizeof(fh) + (size_t)fh.count * sizeof(*recs) + 8) {
		snprintf(err, errlen, "%s: not a greylist file (or truncated)", path);
		goto out;
	}
	size_t len = (size_t)fh.count * sizeof(*recs);
	uint64_t sum;
	recs = xreallocarray(NULL, fh.count + 1, sizeof(*recs));
	if (read(fd, recs, len) != (ssize_t)len || read(fd, &sum, 8) != 8 ||
	    greytab_sum(fh.key, recs, len) != sum) {
		snprintf(err, errlen, "%s: checksum mismatch", path);
		goto out;
	}
	/* The fingerprints were made with the file's key: take it over (the
	 * table is still empty, no smtpd has it yet). */
	memcpy(t->h->key, fh.key, sizeof(fh.key));
	for (size_t i = 0; i < fh.count; i++) {
		if (recs[i].key == 0 || recs[i].first == 0 ||
		    greytab_expired(recs[i].first, recs[i].last, recs[i].passed, now, tm))
			continue;
		greytab_put(t, &recs[i]);
		(*loaded_r)++;
	}
	rc = 0;
out:
	free(recs);
	close(fd);
	return rc;
}
