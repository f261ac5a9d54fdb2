/* spool.c — the on-disk queue: writing, committing, recovering, marking and
 * removing messages (contract in spool.h, DESIGN.md "The spool").
 *
 * Runs in smtpd (create/append/commit) and queue (recover, load, mark,
 * remove), on worker threads for everything that waits on the disk. Hostile
 * inputs: message content (opaque octets, never parsed here), and the spool
 * directory itself after a crash or tampering: file names are checked to be
 * a queue id (or an old <qid>.msg / <qid>.env) before use, the header's
 * offset is checked against the file, and envelopes go through the strict
 * record decoder. Every path is relative to a directory fd (openat & co), so
 * the spool can be moved or renamed under us without us following it. */
#include "queue/spool.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "queue/record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define SPOOL_NAME_MAX (QID_LEN + 4) /* "<qid>" or an old "<qid>.msg" */
#define SPOOL_READ_CHUNK 65536
#define SPOOL_MAGIC "HKMSG\0\1\n"
#define SPOOL_MAGIC_LEN 8

/* A spent message file in reuse/ under the name p<seq>: reusable by
 * the writer that had it before (owner) once an fsync of queue/ has made
 * its removal from there durable (ticket), or at once when it never was
 * in queue/ (clean). */
struct spool_pooled {
	uint64_t seq;
	uint64_t owner;
	uint64_t ticket;
	uint64_t size;
	bool clean;
};

/* At most this many spent files, of at most SPOOL_POOL_FILE_MAX octets
 * each, wait for reuse: a few seconds' worth at the rates a 2-core machine
 * takes, and small enough that the disk they hold does not matter. */
#define SPOOL_POOL_MAX 512
#define SPOOL_POOL_FILE_MAX (256 * 1024)
#define SPOOL_POOL_BYTES_MAX (32 * 1024 * 1024)
#define SPOOL_POOL_NAME_MAX 24 /* "p" and 16 hex digits */

struct spool {
	char *dir;
	int dirfd;   /* <dir> */
	int incfd;   /* <dir>/incoming */
	int queuefd; /* <dir>/queue */
	int reusefd; /* <dir>/reuse: spent message files (spool_retire) */

	/* Group commit of queue/ fsyncs: a committer takes a ticket after its
	 * renames; an fsync that starts after ticket t was taken makes every
	 * ticket <= t durable. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t ticket; /* last ticket handed out */
	uint64_t synced; /* tickets <= synced are durable */
	uint64_t failed; /* tickets <= failed saw an fsync fail: never trusted */
	bool syncing;    /* an fsync is running (without the lock) */
	uint64_t nsyncs;

	/* Spent message files kept for reuse (see spool_retire), oldest
	 * first, in a ring under lock. */
	struct spool_pooled pool[SPOOL_POOL_MAX];
	size_t pool_head, pool_len;
	uint64_t pool_seq;   /* names reuse/p<seq> */
	uint64_t pool_bytes; /* their sizes when retired */
	uint64_t reused;     /* files handed out again */
	uint64_t *owners;    /* writers alive (spool_owner_add), unsorted */
	size_t nowners, owners_cap;
};

struct spool_msg {
	struct spool *spool;
	char qid[QID_LEN + 1];
	bool qid_ok;
	int fd; /* incoming/<qid>, -1 until created */
	bool created;
	uint64_t content_off; /* file offset of the first octet of size */
	uint64_t size;        /* octets so far: added header fields and content */
};

_Static_assert(SPOOL_HDR_LEN == RECORD_CONTENT_OFF_DEFAULT,
	       "files without REC_CONTENT_OFF have their content after the header");

/* errno as a log value; "-" when the failure was not a system call's
 * (callers set errno = 0 for those). */
static const char *spool_strerror(int err, char buf[128])
{
	if (err == 0)
		return "-";
	return strerror_r(err, buf, 128); /* GNU: returns the string */
}

/* "<qid>", or "<qid>.<ext>" for the halves of an old two-file message. */
static void spool_name(char out[SPOOL_NAME_MAX + 1], const char *qid, const char *ext)
{
	memcpy(out, qid, QID_LEN);
	out[QID_LEN] = '\0';
	if (ext != NULL) {
		out[QID_LEN] = '.';
		memcpy(out + QID_LEN + 1, ext, 3);
		out[SPOOL_NAME_MAX] = '\0';
	}
}

static void spool_put_u64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--) {
		p[i] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static uint64_t spool_get_u64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static int spool_fdatasync(int fd)
{
	int r;
	do {
		r = fdatasync(fd);
	} while (r < 0 && errno == EINTR);
	return r;
}

static int spool_fsync(int fd)
{
	int r;
	do {
		r = fsync(fd);
	} while (r < 0 && errno == EINTR);
	return r;
}

/* Open (creating if missing) a subdirectory of dfd; *created_r is set when it
 * had to be made, so that the caller fsyncs dfd. */
static int spool_subdir_open(int dfd, const char *name, bool *created_r)
{
	if (mkdirat(dfd, name, 0700) == 0)
		*created_r = true;
	else if (errno != EEXIST)
		return -1;
	return openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Rename without ever replacing a committed file: two messages can only
 * share a name through a bug, and then the second must fail, not clobber
 * the first. Falls back to plain renameat on file systems without
 * RENAME_NOREPLACE. */
static int spool_rename(int from_fd, const char *from, int to_fd, const char *to)
{
	if (renameat2(from_fd, from, to_fd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	if (faccessat(to_fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		return -1;
	}
	return renameat(from_fd, from, to_fd, to);
}

int spool_open(const char *dir, struct spool **spool_r, const char **error_r)
{
	char eb[128];
	bool created = false;
	int dfd = -1, ifd = -1, qfd = -1, rfd = -1;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		goto fail;
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		goto fail;
	ifd = spool_subdir_open(dfd, "incoming", &created);
	if (ifd < 0)
		goto fail;
	qfd = spool_subdir_open(dfd, "queue", &created);
	if (qfd < 0)
		goto fail;
	rfd = spool_subdir_open(dfd, "reuse", &created);
	if (rfd < 0)
		goto fail;
	if (created && spool_fsync(dfd) < 0)
		goto fail;

	struct spool *s = xcalloc(1, sizeof(*s));
	s->dir = xstrdup(dir);
	s->dirfd = dfd;
	s->incfd = ifd;
	s->queuefd = qfd;
	s->reusefd = rfd;
	/* Names of this run never meet a leftover of an earlier one. */
	s->pool_seq = (uint64_t)time(NULL) << 20;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	*spool_r = s;
	return 0;
fail:
	log_err("event=spool_open_failed dir=%s error=%s", log_qs((char[LOG_Q_MAX]){0}, dir),
	        spool_strerror(errno, eb));
	if (rfd >= 0)
		close(rfd);
	if (qfd >= 0)
		close(qfd);
	if (ifd >= 0)
		close(ifd);
	if (dfd >= 0)
		close(dfd);
	*error_r = "cannot open spool directory";
	return -1;
}

void spool_close(struct spool **spool)
{
	struct spool *s = *spool;
	if (s == NULL)
		return;
	*spool = NULL;
	close(s->reusefd);
	close(s->queuefd);
	close(s->incfd);
	close(s->dirfd);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->owners);
	free(s->dir);
	free(s);
}

int spool_free_space(struct spool *spool, uint64_t *avail_r)
{
	struct statvfs sv;
	if (fstatvfs(spool->dirfd, &sv) < 0)
		return -1;
	*avail_r = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
	return 0;
}

const char *spool_dir(const struct spool *spool)
{
	return spool->dir;
}

uint64_t spool_queue_fsyncs(struct spool *spool)
{
	pthread_mutex_lock(&spool->lock);
	uint64_t n = spool->nsyncs;
	pthread_mutex_unlock(&spool->lock);
	return n;
}

/* ---- writing a message ---- */

struct spool_msg *spool_msg_create(struct spool *spool, const char *qid)
{
	struct spool_msg *m = xcalloc(1, sizeof(*m));
	m->spool = spool;
	m->fd = -1;
	m->content_off = SPOOL_HDR_LEN;
	/* A bad id cannot become a path: the message then fails at the first
	 * append or at commit, like any I/O error. */
	m->qid_ok = qid_valid(qid);
	if (m->qid_ok)
		memcpy(m->qid, qid, QID_LEN + 1);
	return m;
}

/* Create incoming/<qid> with a header whose envelope offset is 0: "not
 * finished" until the commit sets it. */
static int spool_msg_ensure_open(struct spool_msg *m)
{
	char name[SPOOL_NAME_MAX + 1];
	char eb[128];
	unsigned char hdr[SPOOL_HDR_LEN] = {0};

	if (m->fd >= 0)
		return 0;
	if (!m->qid_ok) {
		log_err("event=spool_write_failed error=\"invalid queue id\"");
		errno = EINVAL;
		return -1;
	}
	spool_name(name, m->qid, NULL);
	m->fd = openat(m->spool->incfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (m->fd < 0) {
		int err = errno;
		log_err("event=spool_write_failed qid=%s op=create error=%s", m->qid,
		        spool_strerror(err, eb));
		errno = err; /* for the caller's own report */
		return -1;
	}
	m->created = true;
	memcpy(hdr, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	if (fs_write_all(m->fd, hdr, sizeof(hdr)) < 0) {
		int err = errno;
		log_err("event=spool_write_failed qid=%s op=write error=%s", m->qid,
		        spool_strerror(err, eb));
		errno = err;
		return -1;
	}
	return 0;
}

int spool_msg_append(struct spool_msg *m, const void *p, size_t len)
{
	char eb[128];
	if (spool_msg_ensure_open(m) < 0)
		return -1;
	if (fs_write_all(m->fd, p, len) < 0) {
		int err = errno;
		log_err("event=spool_write_failed qid=%s op=write error=%s", m->qid,
		        spool_strerror(err, eb));
		errno = err;
		return -1;
	}
	m->size += len;
	return 0;
}

static void spool_msg_free(struct spool_msg *m)
{
	if (m->fd >= 0)
		close(m->fd);
	free(m);
}

void spool_msg_abort(struct spool_msg **mp)
{
	struct spool_msg *m = *mp;
	char name[SPOOL_NAME_MAX + 1];
	if (m == NULL)
		return;
	*mp = NULL;
	if (m->created) {
		spool_name(name, m->qid, NULL);
		(void)unlinkat(m->spool->incfd, name, 0);
	}
	spool_msg_free(m);
}

/* ---- commit ---- */

/* Make every rename done before this call durable: group commit (see struct
 * spool). Returns 0 or -1. */
static int spool_queue_sync(struct spool *s)
{
	char eb[128];
	int rc = 0;

	pthread_mutex_lock(&s->lock);
	uint64_t my = ++s->ticket;
	for (;;) {
		if (my <= s->failed) {
			/* After a failed fsync a later success proves nothing
			 * (the kernel may have dropped the dirty state). */
			rc = -1;
			break;
		}
		if (my <= s->synced)
			break;
		if (s->syncing) {
			/* The running fsync may have started before our
			 * renames: wait for it, then look again. */
			pthread_cond_wait(&s->cond, &s->lock);
			continue;
		}
		uint64_t target = s->ticket;
		s->syncing = true;
		pthread_mutex_unlock(&s->lock);
		int r = spool_fsync(s->queuefd);
		int err = errno;
		pthread_mutex_lock(&s->lock);
		s->syncing = false;
		s->nsyncs++;
		if (r == 0) {
			s->synced = target;
		} else {
			s->failed = target;
			log_err("event=spool_fsync_failed dir=queue error=%s",
			        spool_strerror(err, eb));
		}
		pthread_cond_broadcast(&s->cond);
	}
	pthread_mutex_unlock(&s->lock);
	if (rc < 0)
		errno = EIO;
	return rc;
}

/* A reused file (spool_incoming_take) still holds the end of its earlier,
 * longer message: the envelope must end the file. A new one is cut at
 * nothing (one fstat). */
static int spool_cut_tail(int fd, uint64_t end)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -1;
	if ((uint64_t)st.st_size <= end)
		return 0;
	return ftruncate(fd, (off_t)end);
}

/* Finish incoming/<qid> (envelope after the content, then the header's
 * offset), fdatasync and close it. */
static int spool_msg_finish(struct spool_msg *m, struct envelope *e, bool sync,
			    const char **error_r)
{
	struct buf b;
	unsigned char off[8];
	int rc = -1;

	buf_init(&b, RECORD_MAX_FILE);
	e->content_off = m->content_off;
	if (record_encode(e, &b) < 0) {
		*error_r = "cannot encode envelope";
		errno = 0;
		goto out;
	}
	spool_put_u64(off, m->content_off + m->size);
	if (fs_write_all(m->fd, b.data, b.len) < 0 ||
	    pwrite(m->fd, off, sizeof(off), SPOOL_MAGIC_LEN) != (ssize_t)sizeof(off) ||
	    spool_cut_tail(m->fd, m->content_off + m->size + b.len) < 0 ||
	    (sync && spool_fdatasync(m->fd) < 0)) {
		*error_r = "cannot write message file";
		goto out;
	}
	int r = close(m->fd);
	m->fd = -1;
	if (r < 0) {
		*error_r = "cannot write message file";
		goto out;
	}
	rc = 0;
out:
	buf_free(&b);
	return rc;
}

static int spool_commit_steps(struct spool_msg *m, struct envelope *e, const void *tail,
                              size_t tail_len, bool *moved_r, const char **error_r)
{
	struct spool *s = m->spool;
	char name[SPOOL_NAME_MAX + 1];

	if (!m->qid_ok || strcmp(e->qid, m->qid) != 0) {
		*error_r = "queue id mismatch";
		errno = 0;
		return -1;
	}
	if (spool_msg_append(m, tail, tail_len) < 0) {
		*error_r = "cannot write message file";
		return -1;
	}
	e->size = m->size;
	if (spool_msg_finish(m, e, true, error_r) < 0)
		return -1;
	spool_name(name, m->qid, NULL);
	if (spool_rename(s->incfd, name, s->queuefd, name) < 0) {
		*error_r = "cannot move message file into queue";
		return -1;
	}
	*moved_r = true;
	if (spool_queue_sync(s) < 0) {
		*error_r = "cannot sync queue directory";
		return -1;
	}
	return 0;
}

int spool_commit(struct spool_msg **mp, struct envelope *e, const void *tail, size_t tail_len,
                 const char **error_r)
{
	struct spool_msg *m = *mp;
	bool moved = false;
	const char *error = "spool commit failed";
	char name[SPOOL_NAME_MAX + 1], eb[128];

	*mp = NULL;
	if (spool_commit_steps(m, e, tail, tail_len, &moved, &error) < 0) {
		int err = errno;
		log_err("event=spool_commit_failed qid=%s error=%s errno=%s",
		        m->qid_ok ? m->qid : "-", log_qs((char[LOG_Q_MAX]){0}, error),
		        spool_strerror(err, eb));
		/* Remove only what we made: never a queue/ file we did not
		 * rename there ourselves. */
		if (m->qid_ok && m->created) {
			spool_name(name, m->qid, NULL);
			(void)unlinkat(moved ? m->spool->queuefd : m->spool->incfd, name, 0);
		}
		spool_msg_free(m);
		if (error_r != NULL)
			*error_r = error;
		errno = err; /* the caller tells ENOSPC from EIO */
		return -1;
	}
	spool_msg_free(m);
	return 0;
}

/* ---- message files handed to another process (master/proto.h) ---- */

/* An unnamed file in incoming/ (O_TMPFILE): nothing to clean up after a
 * crash or an abort, and publishing it is one link into queue/. */
int spool_incoming_create(struct spool *s)
{
	char eb[128];
	unsigned char hdr[SPOOL_HDR_LEN] = {0};
	int fd = openat(s->incfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		int err = errno;
		log_err("event=spool_write_failed op=create error=%s", spool_strerror(err, eb));
		errno = err;
		return -1;
	}
	memcpy(hdr, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	if (fs_write_all(fd, hdr, sizeof(hdr)) < 0) {
		int err = errno;
		log_err("event=spool_write_failed op=write error=%s", spool_strerror(err, eb));
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* ---- reuse of spent message files ----
 *
 * Every message file costs an inode to make and one to free, and on ext4
 * making one gets slower with every inode freed in the last seconds (the
 * allocator steps over them). A delivered message's file therefore goes
 * to reuse/ as p<seq> (spool_retire) and is handed out again instead of a
 * new unnamed file.
 *
 * Two rules keep this as safe as a new file:
 * - Privilege: the writer (an smtpd process) keeps its descriptors as long
 *   as it likes, so a file only ever goes back to the writer that had it
 *   before (owner): a process sees no octet of a message it did not
 *   receive itself. Files of a writer that is gone are unlinked, also
 *   when its messages are delivered later (spool_owner_add/_gone).
 * - Trust: the queue takes nothing from the writer on trust. The publish
 *   refuses a file whose envelope does not end it (a tail of the old
 *   message the writer failed to cut) or that carries delivery state.
 * - Durability: the content is overwritten only after an fsync of queue/
 *   that started after the file left it: a crash can never bring back
 *   queue/<old qid> naming new content. The retire takes a ticket of the
 *   group commit for that; in a busy queue the next commit's fsync covers
 *   it.
 * reuse/ holds them, idle or handed out (published by a rename from there
 * into queue/); incoming/ keeps its meaning: unnamed files being written.
 * Start-up empties reuse/ as it empties incoming/, except a name whose
 * file also has a name in queue/ (what a crash can leave on a file system
 * that does not order the two halves of a rename). */

static void spool_pool_name(char out[SPOOL_POOL_NAME_MAX], uint64_t seq)
{
	snprintf(out, SPOOL_POOL_NAME_MAX, "p%016llx", (unsigned long long)seq);
}

/* Under lock. */
static bool spool_pool_ready(const struct spool *s, const struct spool_pooled *p,
			     uint64_t owner)
{
	if (p->owner != owner)
		return false;
	return p->clean || (p->ticket <= s->synced && p->ticket > s->failed);
}

/* Under lock: take the entry k places after the oldest out of the ring. */
static struct spool_pooled spool_pool_take_at(struct spool *s, size_t k)
{
	struct spool_pooled p = s->pool[(s->pool_head + k) % SPOOL_POOL_MAX];
	for (size_t j = k; j > 0; j--)
		s->pool[(s->pool_head + j) % SPOOL_POOL_MAX] =
			s->pool[(s->pool_head + j - 1) % SPOOL_POOL_MAX];
	s->pool_head = (s->pool_head + 1) % SPOOL_POOL_MAX;
	s->pool_len--;
	s->pool_bytes -= p.size;
	return p;
}

/* Put p at the newest end; *evicted_r gets the seq of an entry pushed out
 * to make room (its file is the caller's to unlink), or 0. false: over the
 * byte bound, not taken. */
static bool spool_pool_push(struct spool *s, const struct spool_pooled *p, uint64_t *evicted_r)
{
	*evicted_r = 0;
	pthread_mutex_lock(&s->lock);
	bool ok = s->pool_bytes + p->size <= SPOOL_POOL_BYTES_MAX;
	if (ok && s->pool_len == SPOOL_POOL_MAX)
		*evicted_r = spool_pool_take_at(s, 0).seq;
	if (ok) {
		s->pool[(s->pool_head + s->pool_len) % SPOOL_POOL_MAX] = *p;
		s->pool_len++;
		s->pool_bytes += p->size;
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static void spool_pool_unlink(struct spool *s, uint64_t seq)
{
	char name[SPOOL_POOL_NAME_MAX];
	if (seq == 0)
		return;
	spool_pool_name(name, seq);
	(void)unlinkat(s->reusefd, name, 0);
}

/* Open reuse/p<seq> for a new message: only a regular file with no
 * other name (never a queue/ file), with a fresh header saying "not
 * finished". It is not emptied: the new message is written over the old
 * one in place and the seal cuts what is left after its envelope
 * (spool_cut_tail), so the disk blocks are kept: no allocation, no
 * discard, and an fdatasync that need not write the inode when the size
 * is unchanged. The writer can read the rest of the old message meanwhile:
 * its own (see the privilege rule above). */
static int spool_pool_open(struct spool *s, uint64_t seq)
{
	char name[SPOOL_POOL_NAME_MAX], eb[128];
	unsigned char hdr[SPOOL_HDR_LEN] = {0};
	struct stat st;
	spool_pool_name(name, seq);
	int fd = openat(s->reusefd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
	memcpy(hdr, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1 &&
	    fs_write_all(fd, hdr, sizeof(hdr)) == 0)
		return fd;
	log_warn("event=spool_reuse_failed file=%s error=%s", name,
		 fd >= 0 && errno == 0 ? "\"not a single-link regular file\""
					: spool_strerror(errno, eb));
	if (fd >= 0)
		close(fd);
	(void)unlinkat(s->reusefd, name, 0);
	return -1;
}

int spool_incoming_take(struct spool *s, uint64_t owner, uint64_t *slot_r)
{
	*slot_r = 0;
	while (owner != 0) {
		struct spool_pooled p;
		bool found = false;
		pthread_mutex_lock(&s->lock);
		for (size_t k = 0; k < s->pool_len; k++) {
			if (spool_pool_ready(s, &s->pool[(s->pool_head + k) % SPOOL_POOL_MAX],
					     owner)) {
				p = spool_pool_take_at(s, k);
				found = true;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!found)
			break;
		errno = 0;
		int fd = spool_pool_open(s, p.seq);
		if (fd >= 0) {
			pthread_mutex_lock(&s->lock);
			s->reused++;
			pthread_mutex_unlock(&s->lock);
			*slot_r = p.seq;
			return fd;
		}
	}
	return spool_incoming_create(s);
}

void spool_incoming_drop(struct spool *s, int fd, uint64_t slot, uint64_t owner)
{
	struct stat st;
	uint64_t evicted = 0;
	if (slot != 0) {
		/* Never in queue/: reusable at once by the same writer. */
		struct spool_pooled p = {.seq = slot, .owner = owner, .clean = true};
		bool keep = owner != 0 && fstat(fd, &st) == 0 &&
			    (uint64_t)st.st_size <= SPOOL_POOL_FILE_MAX;
		p.size = keep ? (uint64_t)st.st_size : 0;
		if (!keep || !spool_pool_push(s, &p, &evicted))
			spool_pool_unlink(s, slot);
		spool_pool_unlink(s, evicted);
	}
	close(fd);
}

/* Under lock. */
static bool spool_owner_alive(const struct spool *s, uint64_t owner)
{
	for (size_t i = 0; i < s->nowners; i++)
		if (s->owners[i] == owner)
			return true;
	return false;
}

void spool_owner_add(struct spool *s, uint64_t owner)
{
	pthread_mutex_lock(&s->lock);
	if (s->nowners == s->owners_cap) {
		s->owners_cap = s->owners_cap ? 2 * s->owners_cap : 16;
		s->owners = xreallocarray(s->owners, s->owners_cap, sizeof(*s->owners));
	}
	s->owners[s->nowners++] = owner;
	pthread_mutex_unlock(&s->lock);
}

void spool_owner_gone(struct spool *s, uint64_t owner)
{
	uint64_t seqs[SPOOL_POOL_MAX];
	size_t n = 0;
	pthread_mutex_lock(&s->lock);
	for (size_t i = 0; i < s->nowners; i++) {
		if (s->owners[i] == owner) {
			s->owners[i] = s->owners[--s->nowners];
			break;
		}
	}
	for (size_t k = 0; k < s->pool_len;) {
		if (s->pool[(s->pool_head + k) % SPOOL_POOL_MAX].owner == owner)
			seqs[n++] = spool_pool_take_at(s, k).seq;
		else
			k++;
	}
	pthread_mutex_unlock(&s->lock);
	for (size_t i = 0; i < n; i++)
		spool_pool_unlink(s, seqs[i]);
}

uint64_t spool_files_reused(struct spool *s)
{
	pthread_mutex_lock(&s->lock);
	uint64_t n = s->reused;
	pthread_mutex_unlock(&s->lock);
	return n;
}

static int spool_env_decode_fd(int fd, const char *qid, struct envelope *e, uint64_t *off_r,
                               size_t *used_r, bool whole, bool *io_r, const char **error_r);

static int spool_publish_steps(struct spool *s, int fd, uint64_t slot, const char *qid,
			       struct envelope *e_out, bool *linked_r, const char **error_r)
{
	uint64_t off;
	char name[SPOOL_NAME_MAX + 1];

	if (!qid_valid(qid)) {
		*error_r = "invalid queue id";
		errno = 0;
		return -1;
	}
	/* The writer is another process: take nothing on trust but the
	 * content. An unsealed file (envelope offset 0) never enters queue/,
	 * nor one whose envelope the queue would refuse to load: it must
	 * decode, name this qid, and place the message (REC_CONTENT_OFF,
	 * SIZE) exactly before it. A small pread of what is in the page
	 * cache; the client hears 451 instead of leaving a message the
	 * queue cannot deliver. */
	struct envelope e;
	bool io = false;
	envelope_init(&e);
	int rc = spool_env_decode_fd(fd, qid, &e, &off, NULL, true, &io, error_r);
	if (rc == 0 && (envelope_pending(&e) != e.nrcpts || e.next_try_us != 0 ||
			e.attempts != 0 || e.sched_flags != 0)) {
		envelope_clear(&e);
		*error_r = "a new message carries delivery state";
		rc = -1;
	}
	if (rc == 0 && e_out != NULL) {
		envelope_clear(e_out);
		*e_out = e; /* moved: the caller owns it now */
	} else {
		envelope_clear(&e);
	}
	if (rc < 0) {
		if (!io)
			errno = 0;
		return -1;
	}
	/* The writer sealed it without an fdatasync: the queue makes the
	 * content durable itself, before it has a name in queue/ (and takes
	 * no writer's word for it). */
	if (spool_fdatasync(fd) < 0) {
		*error_r = "cannot write message file";
		return -1;
	}
	spool_name(name, qid, NULL);
	if (slot != 0) {
		char pname[SPOOL_POOL_NAME_MAX];
		spool_pool_name(pname, slot);
		if (spool_rename(s->reusefd, pname, s->queuefd, name) < 0) {
			*error_r = "cannot move message file into queue";
			return -1;
		}
	} else if (fs_link_unnamed(fd, s->queuefd, name) < 0) {
		*error_r = "cannot move message file into queue";
		return -1;
	}
	*linked_r = true;
	if (spool_queue_sync(s) < 0) {
		*error_r = "cannot sync queue directory";
		return -1;
	}
	return 0;
}

int spool_publish(struct spool *s, int fd, uint64_t slot, const char *qid, struct envelope *e_out,
		  const char **error_r)
{
	char name[SPOOL_NAME_MAX + 1], eb[128];
	bool linked = false;
	const char *error = "spool commit failed";
	if (spool_publish_steps(s, fd, slot, qid, e_out, &linked, &error) < 0) {
		int err = errno;
		log_err("event=spool_commit_failed qid=%s error=%s errno=%s",
		        qid_valid(qid) ? qid : "-", log_qs((char[LOG_Q_MAX]){0}, error),
		        spool_strerror(err, eb));
		if (linked) {
			spool_name(name, qid, NULL);
			(void)unlinkat(s->queuefd, name, 0);
		} else if (slot != 0) {
			char pname[SPOOL_POOL_NAME_MAX];
			spool_pool_name(pname, slot);
			(void)unlinkat(s->reusefd, pname, 0);
		}
		*error_r = error;
		errno = err;
		return -1;
	}
	return 0;
}

struct spool_msg *spool_msg_adopt(int fd, const char *qid)
{
	struct spool_msg *m = spool_msg_create(NULL, qid);
	m->fd = fd;
	/* The content goes after a gap that the header fields added at the
	 * end of data fill from its end (spool_msg_prepend); unwritten, the
	 * gap is a hole and costs no disk. The queue wrote the header
	 * through the same open file: seek whatever that left the offset at. */
	m->content_off = SPOOL_CONTENT_GAP;
	(void)lseek(fd, SPOOL_CONTENT_GAP, SEEK_SET);
	return m;
}

int spool_msg_prepend(struct spool_msg *m, const void *p, size_t len, const char **error_r)
{
	char eb[128];
	if (len == 0)
		return 0; /* the common case costs no write */
	if (len > m->content_off - SPOOL_HDR_LEN) {
		*error_r = "added header fields do not fit before the content";
		errno = EMSGSIZE;
		return -1;
	}
	if (spool_msg_ensure_open(m) < 0) {
		*error_r = "cannot write message file";
		return -1;
	}
	uint64_t at = m->content_off - len;
	if (fs_pwrite_all(m->fd, p, len, at) < 0) {
		int err = errno;
		log_err("event=spool_write_failed qid=%s op=write error=%s", m->qid,
		        spool_strerror(err, eb));
		*error_r = "cannot write message file";
		errno = err;
		return -1;
	}
	m->content_off = at;
	m->size += len;
	return 0;
}

int spool_msg_seal(struct spool_msg **mp, struct envelope *e, const void *tail, size_t tail_len,
		   const char **error_r)
{
	struct spool_msg *m = *mp;
	int rc = -1;
	*mp = NULL;
	if (!m->qid_ok || strcmp(e->qid, m->qid) != 0) {
		*error_r = "queue id mismatch";
		errno = 0;
	} else if (spool_msg_append(m, tail, tail_len) < 0) {
		*error_r = "cannot write message file";
	} else {
		e->size = m->size;
		rc = spool_msg_finish(m, e, false, error_r); /* spool_publish syncs */
	}
	int err = errno;
	spool_msg_free(m);
	errno = err;
	return rc;
}

/* ---- reading ---- */

/* Read fd from off to its end into b (whose max bounds the size). */
static int spool_read_rest(int fd, uint64_t off, struct buf *b, const char **error_r)
{
	for (;;) {
		size_t room = b->max - b->len;
		size_t want = room < SPOOL_READ_CHUNK ? room : SPOOL_READ_CHUNK;
		unsigned char c;
		if (want > 0 && buf_reserve(b, want) < 0)
			want = 0;
		/* At the maximum, one more octet tells EOF from too large. */
		ssize_t n = want > 0 ? pread(fd, b->data + b->len, want, (off_t)off)
		                     : pread(fd, &c, 1, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0)
			return 0;
		if (n < 0) {
			*error_r = "cannot read envelope";
			return -1;
		}
		if (want == 0) {
			*error_r = "envelope too large";
			errno = 0;
			return -1;
		}
		b->len += (size_t)n;
		off += (uint64_t)n;
	}
}

int spool_header_parse(const unsigned char *hdr, uint64_t file_size, uint64_t *off_r,
                       const char **error_r)
{
	if (file_size < SPOOL_HDR_LEN || memcmp(hdr, SPOOL_MAGIC, SPOOL_MAGIC_LEN) != 0) {
		*error_r = "not a message file";
		return -1;
	}
	uint64_t off = spool_get_u64(hdr + SPOOL_MAGIC_LEN);
	if (off < SPOOL_HDR_LEN || off >= file_size) {
		*error_r = "envelope offset outside the file";
		return -1;
	}
	*off_r = off;
	return 0;
}

/* Where a message file's envelope starts: from the header, checked. On
 * failure *io_r tells a read error from a file that is not a finished
 * message (errno 0). */
static int spool_env_offset(int fd, uint64_t *off_r, bool *io_r, const char **error_r)
{
	unsigned char hdr[SPOOL_HDR_LEN] = {0};
	struct stat st;

	*io_r = true;
	if (fstat(fd, &st) < 0) {
		*error_r = "cannot stat message file";
		return -1;
	}
	bool reg = S_ISREG(st.st_mode);
	if (reg && st.st_size >= SPOOL_HDR_LEN && fs_pread_all(fd, hdr, sizeof(hdr), 0) < 0) {
		*error_r = "cannot read message file";
		return -1;
	}
	*io_r = false;
	errno = 0;
	if (!reg) {
		*error_r = "not a message file";
		return -1;
	}
	return spool_header_parse(hdr, (uint64_t)st.st_size, off_r, error_r);
}

/* Decode the envelope of an open message file. *off_r: where it starts;
 * *used_r as in record_decode_used(), counted from there; whole: refuse a
 * file that goes on after its last record (a publish: nothing may follow
 * a new envelope). *io_r tells an unreadable file (left alone) from one
 * that was read and refused. */
static int spool_env_decode_fd(int fd, const char *qid, struct envelope *e, uint64_t *off_r,
                               size_t *used_r, bool whole, bool *io_r, const char **error_r)
{
	size_t used = 0;
	struct buf b;
	uint64_t off = 0;
	int rc = -1;

	if (spool_env_offset(fd, &off, io_r, error_r) < 0)
		return -1;
	buf_init(&b, RECORD_MAX_FILE);
	if (spool_read_rest(fd, off, &b, error_r) < 0) {
		*io_r = errno != 0;
		goto out;
	}
	*io_r = false;
	errno = 0; /* from here on, failures are the envelope's */
	if (record_decode_used(b.data, b.len, e, &used, error_r) < 0)
		goto out;
	if (used_r != NULL)
		*used_r = used;
	if (whole && used != b.len) {
		/* What follows the envelope is no record of it (b holds the
		 * file to its end): a tail the writer did not cut from a
		 * reused file, or a torn one. */
		envelope_clear(e);
		*error_r = "envelope does not end the message file";
		goto out;
	}
	if (strcmp(e->qid, qid) != 0) {
		envelope_clear(e);
		*error_r = "queue id in envelope does not match file name";
		goto out;
	}
	if (e->content_off > off || e->size != off - e->content_off) {
		envelope_clear(e);
		*error_r = "message size differs from envelope";
		goto out;
	}
	*off_r = off;
	rc = 0;
out:
	buf_free(&b);
	return rc;
}

static int spool_open_queued(struct spool *spool, const char *qid, int flags)
{
	char name[SPOOL_NAME_MAX + 1];
	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	spool_name(name, qid, NULL);
	return openat(spool->queuefd, name, flags | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
}

static int spool_recover_old_pair(struct spool *s, const char *qid);

/* An old two-file message that start-up could not convert (no space, an
 * I/O error) is converted when it is first loaded: its delivery retries
 * retry the conversion. Returns the opened file, or -1 (errno ENOENT when
 * there is no such pair). */
static int spool_open_converting(struct spool *spool, const char *qid)
{
	char name[SPOOL_NAME_MAX + 1];
	spool_name(name, qid, "env");
	if (faccessat(spool->queuefd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0 ||
	    spool_recover_old_pair(spool, qid) != 1) {
		errno = ENOENT;
		return -1;
	}
	return spool_open_queued(spool, qid, O_RDONLY);
}

/* Envelope and, when content is not NULL, content of queue/<qid>. */
static int spool_read(struct spool *spool, const char *qid, struct envelope *e,
                      struct buf *content, bool *io_r, const char **error_r)
{
	uint64_t off;
	*io_r = true;
	int fd = spool_open_queued(spool, qid, O_RDONLY);
	if (fd < 0 && errno == ENOENT)
		fd = spool_open_converting(spool, qid);
	if (fd < 0) {
		*error_r = errno == EINVAL ? "invalid queue id" : "cannot open message file";
		return -1;
	}
	int rc = spool_env_decode_fd(fd, qid, e, &off, NULL, false, io_r, error_r);
	if (rc == 0 && content != NULL) {
		size_t len = (size_t)e->size;
		if (e->size >= SIZE_MAX || buf_reserve(content, len) < 0) {
			*error_r = "message too large";
			rc = -1;
		} else if (fs_pread_all(fd, content->data + content->len, len,
		                           e->content_off) < 0) {
			*io_r = true;
			*error_r = "cannot read message file";
			rc = -1;
		} else {
			content->len += len;
			content->data[content->len] = '\0';
		}
		if (rc < 0)
			envelope_clear(e);
	}
	close(fd);
	return rc;
}

int spool_env_load(struct spool *spool, const char *qid, struct envelope *e, const char **error_r)
{
	bool io;
	const char *error = NULL;
	if (spool_read(spool, qid, e, NULL, &io, &error) < 0) {
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	return 0;
}

int spool_load(struct spool *spool, const char *qid, struct envelope *e, struct buf *content,
               const char **error_r)
{
	bool io;
	const char *error = NULL;
	if (spool_read(spool, qid, e, content, &io, &error) < 0) {
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	return 0;
}

int spool_load_fd(struct spool *spool, const char *qid, struct envelope *e, int *fd_r,
                  const char **error_r)
{
	uint64_t off;
	bool io;
	const char *error = NULL;
	int fd = spool_open_queued(spool, qid, O_RDONLY);
	if (fd < 0 && errno == ENOENT)
		fd = spool_open_converting(spool, qid);
	if (fd < 0) {
		if (error_r != NULL)
			*error_r = errno == EINVAL ? "invalid queue id" : "cannot open message file";
		return -1;
	}
	if (spool_env_decode_fd(fd, qid, e, &off, NULL, false, &io, &error) < 0) {
		int err = errno;
		close(fd);
		errno = err;
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	*fd_r = fd;
	return 0;
}

int spool_msg_open(struct spool *spool, const char *qid, uint64_t *len_r)
{
	struct envelope e;
	uint64_t off = 0;
	bool io;
	const char *error;
	int fd = spool_open_queued(spool, qid, O_RDONLY);
	if (fd < 0)
		return -1;
	/* The envelope says where the content starts (REC_CONTENT_OFF). */
	envelope_init(&e);
	if (spool_env_decode_fd(fd, qid, &e, &off, NULL, false, &io, &error) < 0 ||
	    lseek(fd, (off_t)e.content_off, SEEK_SET) < 0) {
		envelope_clear(&e);
		close(fd);
		errno = EINVAL;
		return -1;
	}
	*len_r = e.size;
	envelope_clear(&e);
	return fd;
}

bool spool_name_qid(const char *name, char qid[QID_LEN + 1])
{
	if (strlen(name) != QID_LEN)
		return false;
	memcpy(qid, name, QID_LEN + 1);
	return qid_valid(qid);
}

/* ---- after delivery ---- */

struct spool_sched_rec {
	bool set;
	uint64_t next_try_us;
	uint32_t attempts;
	uint32_t flags;
};

static int spool_done_append(int fd, const char *qid, const uint32_t *idx, size_t n,
                             const struct spool_sched_rec *sched, const char **error_r)
{
	struct envelope e;
	struct buf b;
	uint64_t off = 0;
	size_t used = 0;
	bool io;
	int rc = -1;

	envelope_init(&e);
	buf_init(&b, 0);
	/* Check the indexes against the envelope: a DONE out of range would
	 * make the whole file undecodable. */
	if (spool_env_decode_fd(fd, qid, &e, &off, &used, false, &io, error_r) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (idx[i] >= e.nrcpts) {
			*error_r = "recipient index out of range";
			errno = 0;
			goto out;
		}
	}
	struct record_sched rs = {sched->next_try_us, sched->attempts, sched->flags};
	(void)record_encode_mark(idx, n, sched->set ? &rs : NULL, &b);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*error_r = "cannot stat message file";
		goto out;
	}
	/* Cut a torn record left by a crash, so ours is not written after it. */
	uint64_t end = off + used;
	if ((uint64_t)st.st_size > end && ftruncate(fd, (off_t)end) < 0) {
		*error_r = "cannot repair envelope";
		goto out;
	}
	if (fs_write_all(fd, b.data, b.len) < 0) {
		int err = errno;
		(void)ftruncate(fd, (off_t)end); /* leave no torn record behind */
		errno = err;
		*error_r = "cannot append to envelope";
		goto out;
	}
	if (spool_fdatasync(fd) < 0) {
		*error_r = "cannot sync message file";
		goto out;
	}
	rc = 0;
out:
	buf_free(&b);
	envelope_clear(&e);
	return rc;
}

static int spool_mark_common(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
                             const struct spool_sched_rec *sched, const char **error_r)
{
	char eb[128];
	const char *error = NULL;

	if (!qid_valid(qid)) {
		if (error_r != NULL)
			*error_r = "invalid queue id";
		return -1;
	}
	if (n == 0 && !sched->set)
		return 0;
	int fd = spool_open_queued(spool, qid, O_RDWR | O_APPEND);
	int rc = -1;
	if (fd < 0)
		error = "cannot open message file";
	else
		rc = spool_done_append(fd, qid, idx, n, sched, &error);
	if (rc < 0) {
		int err = errno;
		log_err("event=spool_mark_done_failed qid=%s error=%s errno=%s", qid,
		        log_qs((char[LOG_Q_MAX]){0}, error), spool_strerror(err, eb));
		if (error_r != NULL)
			*error_r = error;
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

int spool_mark_done(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
                    const char **error_r)
{
	struct spool_sched_rec none = {.set = false};
	return spool_mark_common(spool, qid, idx, n, &none, error_r);
}

int spool_mark(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
               uint64_t next_try_us, uint32_t attempts, uint32_t flags, const char **error_r)
{
	struct spool_sched_rec sched = {true, next_try_us, attempts, flags};
	return spool_mark_common(spool, qid, idx, n, &sched, error_r);
}

int spool_remove(struct spool *spool, const char *qid)
{
	char name[SPOOL_NAME_MAX + 1];
	char eb[128];

	if (!qid_valid(qid))
		return -1;
	spool_name(name, qid, NULL);
	if (unlinkat(spool->queuefd, name, 0) < 0 && errno != ENOENT) {
		log_err("event=spool_remove_failed qid=%s error=%s", qid,
		        spool_strerror(errno, eb));
		return -1;
	}
	return 0;
}

int spool_retire(struct spool *s, const char *qid, uint64_t owner, uint64_t size)
{
	char name[SPOOL_NAME_MAX + 1], pname[SPOOL_POOL_NAME_MAX];
	if (owner == 0 || size > SPOOL_POOL_FILE_MAX || !qid_valid(qid))
		return spool_remove(s, qid);
	pthread_mutex_lock(&s->lock);
	bool alive = spool_owner_alive(s, owner);
	struct spool_pooled p = {.seq = ++s->pool_seq, .owner = owner, .size = size};
	pthread_mutex_unlock(&s->lock);
	if (!alive)
		return spool_remove(s, qid); /* its writer is gone: nobody may have it */
	spool_name(name, qid, NULL);
	spool_pool_name(pname, p.seq);
	if (spool_rename(s->queuefd, name, s->reusefd, pname) < 0) {
		char eb[128];
		if (errno == ENOENT)
			return 0;
		log_warn("event=spool_retire_failed qid=%s error=%s action=unlink", qid,
			 spool_strerror(errno, eb));
		return spool_remove(s, qid);
	}
	/* The ticket of this removal: reusable after an fsync of queue/ that
	 * starts from here on (see spool_queue_sync). */
	pthread_mutex_lock(&s->lock);
	p.ticket = ++s->ticket;
	pthread_mutex_unlock(&s->lock);
	uint64_t evicted;
	if (!spool_pool_push(s, &p, &evicted))
		spool_pool_unlink(s, p.seq);
	spool_pool_unlink(s, evicted);
	return 0;
}

/* ---- recovery ---- */

/* Sorted per qid in this order: the file, then an old pair's halves. */
enum spool_kind { SPOOL_KIND_FILE = 0, SPOOL_KIND_ENV = 1, SPOOL_KIND_MSG = 2 };

struct spool_entry {
	char qid[QID_LEN + 1];
	enum spool_kind kind;
};

struct spool_list {
	struct spool_entry *v;
	size_t n, cap;
	ino_t *inos; /* of every entry of queue/, sorted (reuse/ keeps what they share) */
	size_t ninos, inos_cap;
};

static void spool_list_add(struct spool_list *l, const char *qid, enum spool_kind kind)
{
	if (l->n == l->cap) {
		l->cap = l->cap != 0 ? l->cap * 2 : 64;
		l->v = xreallocarray(l->v, l->cap, sizeof(*l->v));
	}
	memcpy(l->v[l->n].qid, qid, QID_LEN + 1);
	l->v[l->n].kind = kind;
	l->n++;
}

static int spool_entry_cmp(const void *a, const void *b)
{
	const struct spool_entry *x = a, *y = b;
	int c = strcmp(x->qid, y->qid);
	if (c != 0)
		return c;
	return (int)x->kind - (int)y->kind;
}

/* A fresh DIR stream on dfd (its own offset, so dfd stays usable). */
static DIR *spool_opendir(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	DIR *d = fdopendir(fd);
	if (d == NULL)
		close(fd);
	return d;
}

static int spool_ino_cmp(const void *a, const void *b)
{
	ino_t x = *(const ino_t *)a, y = *(const ino_t *)b;
	return x < y ? -1 : x > y;
}

/* incoming/ holds only messages that were never acknowledged, reuse/ only
 * spent files and ones being written: all go, but a name whose inode is in
 * keep (sorted: those of queue/). Each file of incoming/ is logged; reuse/
 * (up to SPOOL_POOL_MAX files, none of them mail) gets one line. */

static int spool_empty_dir(int dfd, const char *dir, bool log_each, const ino_t *keep,
			   size_t nkeep)
{
	char q[LOG_Q_MAX], eb[128];
	unsigned long n = 0;
	DIR *d = spool_opendir(dfd);
	if (d == NULL)
		return -1;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (de == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (nkeep > 0 && bsearch(&de->d_ino, keep, nkeep, sizeof(*keep), spool_ino_cmp)) {
			/* A crash between the halves of a rename can leave a
			 * published file under both names: the queue/ one is
			 * a message, and this name is left alone. */
			log_warn("event=spool_%s_kept file=%s reason=\"also in queue/\"", dir,
				 log_qs(q, de->d_name));
			continue;
		}
		if (unlinkat(dfd, de->d_name, 0) < 0) {
			log_warn("event=spool_%s_unlink_failed file=%s error=%s", dir,
				 log_qs(q, de->d_name), spool_strerror(errno, eb));
		} else {
			n++;
			if (log_each)
				log_info("event=spool_%s_removed file=%s", dir, log_qs(q, de->d_name));
		}
	}
	int rc = errno != 0 ? -1 : 0;
	closedir(d);
	if (!log_each && n > 0)
		log_info("event=spool_%s_removed files=%lu", dir, n);
	return rc;
}


/* "<qid>", or an old "<qid>.msg" / "<qid>.env" -> qid and kind; anything
 * else -> -1. */
static int spool_name_parse(const char *name, char qid[QID_LEN + 1], enum spool_kind *kind_r)
{
	size_t len = strlen(name);
	if (len == QID_LEN) {
		*kind_r = SPOOL_KIND_FILE;
	} else if (len == SPOOL_NAME_MAX && name[QID_LEN] == '.') {
		if (strcmp(name + QID_LEN + 1, "msg") == 0)
			*kind_r = SPOOL_KIND_MSG;
		else if (strcmp(name + QID_LEN + 1, "env") == 0)
			*kind_r = SPOOL_KIND_ENV;
		else
			return -1;
	} else {
		return -1;
	}
	memcpy(qid, name, QID_LEN);
	qid[QID_LEN] = '\0';
	return qid_valid(qid) ? 0 : -1;
}

static int spool_scan_queue(struct spool *s, struct spool_list *l)
{
	char q[LOG_Q_MAX], qid[QID_LEN + 1];
	enum spool_kind kind;
	DIR *d = spool_opendir(s->queuefd);
	if (d == NULL)
		return -1;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (de == NULL)
			break;
		if (de->d_name[0] == '.')
			continue;
		if (l->ninos == l->inos_cap) {
			l->inos_cap = l->inos_cap ? 2 * l->inos_cap : 256;
			l->inos = xreallocarray(l->inos, l->inos_cap, sizeof(*l->inos));
		}
		l->inos[l->ninos++] = de->d_ino;
		if (spool_name_parse(de->d_name, qid, &kind) < 0) {
			log_warn("event=spool_unknown_file dir=queue file=%s",
			         log_qs(q, de->d_name));
			continue;
		}
		spool_list_add(l, qid, kind);
	}
	int rc = errno != 0 ? -1 : 0;
	closedir(d);
	if (l->ninos > 1)
		qsort(l->inos, l->ninos, sizeof(*l->inos), spool_ino_cmp);
	return rc;
}

/* Remove one half of an old pair; reason NULL: expected, not logged. */
static void spool_unlink_old(struct spool *s, const char *qid, const char *ext,
                             const char *reason)
{
	char name[SPOOL_NAME_MAX + 1], eb[128];
	spool_name(name, qid, ext);
	if (reason != NULL)
		log_warn("event=spool_orphan qid=%s file=%s reason=%s", qid, ext, reason);
	if (unlinkat(s->queuefd, name, 0) < 0 && errno != ENOENT)
		log_err("event=spool_orphan_unlink_failed qid=%s file=%s error=%s", qid, ext,
		        spool_strerror(errno, eb));
}

/* Move a message whose envelope is refused into <dir>/corrupt/ for a human:
 * it was acknowledged, so it is never deleted. exts: NULL for the message
 * file, or the halves of an old pair. */
static void spool_quarantine(struct spool *s, const char *qid, const char *reason,
                             const char *const *exts, size_t n)
{
	char name[SPOOL_NAME_MAX + 1], eb[128];
	bool created = false;

	log_warn("event=spool_corrupt qid=%s reason=%s action=quarantine", qid,
	         log_qs((char[LOG_Q_MAX]){0}, reason));
	int cfd = spool_subdir_open(s->dirfd, "corrupt", &created);
	if (cfd < 0 || (created && spool_fsync(s->dirfd) < 0)) {
		log_err("event=spool_quarantine_failed qid=%s error=%s", qid,
		        spool_strerror(errno, eb));
		if (cfd >= 0)
			close(cfd);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		spool_name(name, qid, exts[i]);
		if (spool_rename(s->queuefd, name, cfd, name) < 0 || spool_fsync(cfd) < 0) {
			log_err("event=spool_quarantine_failed qid=%s file=%s error=%s", qid,
			        log_qs((char[LOG_Q_MAX]){0}, name), spool_strerror(errno, eb));
			break;
		}
	}
	close(cfd);
}

/* Keep a message file if its envelope decodes and fits the file. Returns 1
 * (keep), 0 (quarantined) or -1 (left alone: could not read). */
static int spool_recover_file(struct spool *s, const char *qid)
{
	static const char *const file[1] = {NULL};
	char eb[128];
	struct envelope e;
	const char *error = NULL;
	bool io = false;

	envelope_init(&e);
	if (spool_read(s, qid, &e, NULL, &io, &error) < 0) {
		if (io) {
			log_err("event=spool_unreadable qid=%s error=%s errno=%s", qid,
			        log_qs((char[LOG_Q_MAX]){0}, error), spool_strerror(errno, eb));
			return -1;
		}
		spool_quarantine(s, qid, error, file, 1);
		return 0;
	}
	envelope_clear(&e);
	return 1;
}

/* Copy the old <qid>.msg (size octets) to fd. */
static int spool_copy_old_msg(struct spool *s, const char *qid, uint64_t size, int out,
                              const char **error_r)
{
	char name[SPOOL_NAME_MAX + 1];
	unsigned char chunk[SPOOL_READ_CHUNK];
	struct stat st;
	int rc = -1;

	spool_name(name, qid, "msg");
	int fd = openat(s->queuefd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fstat(fd, &st) < 0) {
		*error_r = "cannot open old message file";
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
		*error_r = "message size differs from envelope";
		errno = 0;
		goto out;
	}
	for (uint64_t off = 0; off < size;) {
		size_t want = size - off < sizeof(chunk) ? (size_t)(size - off) : sizeof(chunk);
		if (fs_pread_all(fd, chunk, want, off) < 0 ||
		    fs_write_all(out, chunk, want) < 0) {
			*error_r = "cannot copy old message file";
			goto out;
		}
		off += want;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Write queue/<qid> from an old pair's envelope image (img, len) and its
 * <qid>.msg, through incoming/ like any commit. */
static int spool_convert(struct spool *s, const char *qid, const unsigned char *img, size_t len,
                         uint64_t size, bool *refused_r, const char **error_r)
{
	char name[SPOOL_NAME_MAX + 1];
	unsigned char hdr[SPOOL_HDR_LEN];

	spool_name(name, qid, NULL);
	int fd = openat(s->incfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		*error_r = "cannot create message file";
		return -1;
	}
	memcpy(hdr, SPOOL_MAGIC, SPOOL_MAGIC_LEN);
	spool_put_u64(hdr + SPOOL_MAGIC_LEN, SPOOL_HDR_LEN + size);
	int rc = -1;
	if (fs_write_all(fd, hdr, sizeof(hdr)) < 0) {
		*error_r = "cannot write message file";
	} else if (spool_copy_old_msg(s, qid, size, fd, error_r) < 0) {
		*refused_r = errno == 0;
	} else if (fs_write_all(fd, img, len) < 0 || spool_fdatasync(fd) < 0) {
		*error_r = "cannot write message file";
	} else {
		rc = 0;
	}
	if (close(fd) < 0 && rc == 0) {
		*error_r = "cannot write message file";
		rc = -1;
	}
	if (rc == 0 && spool_rename(s->incfd, name, s->queuefd, name) < 0) {
		*error_r = "cannot move message file into queue";
		rc = -1;
	}
	if (rc < 0) {
		int err = errno;
		(void)unlinkat(s->incfd, name, 0);
		errno = err;
		return -1;
	}
	if (spool_queue_sync(s) < 0) {
		*error_r = "cannot sync queue directory";
		return -1; /* the file stays: it is complete, the next start keeps it */
	}
	return 0;
}

/* An old two-file message: convert it into one file, then remove the pair.
 * Returns 1 (converted), 0 (quarantined) or -1 (left alone). */
static int spool_recover_old_pair(struct spool *s, const char *qid)
{
	static const char *const pair[2] = {"msg", "env"};
	char name[SPOOL_NAME_MAX + 1], eb[128];
	struct envelope e;
	struct buf b;
	const char *error = NULL;
	size_t used = 0;
	bool refused = false;
	int rc = -1;

	envelope_init(&e);
	buf_init(&b, RECORD_MAX_FILE);
	spool_name(name, qid, "env");
	int fd = openat(s->queuefd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || spool_read_rest(fd, 0, &b, &error) < 0) {
		refused = fd >= 0 && errno == 0;
		if (error == NULL)
			error = "cannot open old envelope file";
		goto out;
	}
	errno = 0;
	if (b.len == 0) {
		error = "empty envelope file";
		refused = true;
		goto out;
	}
	if (record_decode_used(b.data, b.len, &e, &used, &error) < 0) {
		refused = true;
		goto out;
	}
	if (strcmp(e.qid, qid) != 0) {
		error = "queue id in envelope does not match file name";
		refused = true;
		goto out;
	}
	if (spool_convert(s, qid, b.data, used, e.size, &refused, &error) < 0)
		goto out;
	log_info("event=spool_converted qid=%s", qid);
	spool_unlink_old(s, qid, "env", NULL);
	spool_unlink_old(s, qid, "msg", NULL);
	rc = 1;
out:
	if (fd >= 0)
		close(fd);
	if (rc < 0 && refused) {
		spool_quarantine(s, qid, error, pair, 2);
		rc = 0;
	} else if (rc < 0) {
		log_err("event=spool_convert_failed qid=%s error=%s errno=%s", qid,
		        log_qs((char[LOG_Q_MAX]){0}, error), spool_strerror(errno, eb));
	}
	envelope_clear(&e);
	buf_free(&b);
	return rc;
}

/* Decide one queue id from what queue/ holds for it: 1 keep, 0 gone (to
 * corrupt/ or removed), -1 unreadable for now (queued all the same: its
 * loading is retried like a delivery, and never deletes anything). */
static int spool_recover_one(struct spool *s, const char *qid, const bool have[3])
{
	static const char *const env_only[1] = {"env"};
	bool pair = have[SPOOL_KIND_ENV] && have[SPOOL_KIND_MSG];

	if (have[SPOOL_KIND_FILE]) {
		int keep = spool_recover_file(s, qid);
		if (keep == 1) {
			/* A conversion that crashed after its rename: the file
			 * is good, the old halves are leftovers. */
			if (have[SPOOL_KIND_ENV])
				spool_unlink_old(s, qid, "env", "already_converted");
			if (have[SPOOL_KIND_MSG])
				spool_unlink_old(s, qid, "msg", "already_converted");
			return 1;
		}
		if (keep < 0 || !(have[SPOOL_KIND_ENV] || have[SPOOL_KIND_MSG]))
			return keep;
		/* The file was refused (and quarantined): the old pair next to
		 * it is the good copy. Go on with it. */
	}
	if (pair)
		return spool_recover_old_pair(s, qid);
	if (have[SPOOL_KIND_ENV]) {
		/* A lone .env is what an interrupted quarantine of a pair
		 * leaves (.msg is moved first): it follows its .msg. */
		spool_quarantine(s, qid, "half of a quarantined pair", env_only, 1);
		return 0;
	}
	/* A lone .msg was never committed (.env was renamed last) or was
	 * half removed (.env was unlinked first). */
	spool_unlink_old(s, qid, "msg", "half_of_old_pair");
	return 0;
}

/* Walk the sorted entries, one qid at a time; the qids to queue are
 * compacted to the front of l (still sorted). Returns how many. */
static size_t spool_recover_queue(struct spool *s, struct spool_list *l)
{
	size_t nvalid = 0;
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), spool_entry_cmp);
	for (size_t i = 0; i < l->n;) {
		bool have[3] = {false, false, false};
		size_t j = i;
		for (; j < l->n && strcmp(l->v[j].qid, l->v[i].qid) == 0; j++)
			have[l->v[j].kind] = true;
		if (spool_recover_one(s, l->v[i].qid, have) != 0)
			l->v[nvalid++] = l->v[i];
		i = j;
	}
	return nvalid;
}

int spool_recover(struct spool *spool, void (*cb)(const char *qid, void *arg), void *arg,
                  const char **error_r)
{
	struct spool_list l = {0};
	char eb[128];

	if (spool_empty_dir(spool->incfd, "incoming", true, NULL, 0) < 0 ||
	    spool_scan_queue(spool, &l) < 0 ||
	    spool_empty_dir(spool->reusefd, "reuse", false, l.inos, l.ninos) < 0) {
		log_err("event=spool_recover_failed error=%s", spool_strerror(errno, eb));
		free(l.inos);
		free(l.v);
		if (error_r != NULL)
			*error_r = "cannot read spool directory";
		return -1;
	}
	size_t n = spool_recover_queue(spool, &l);
	if (n > INT_MAX)
		n = INT_MAX; /* not reachable with any real file system */
	for (size_t i = 0; i < n; i++)
		cb(l.v[i].qid, arg);
	free(l.inos);
	free(l.v);
	return (int)n;
}
