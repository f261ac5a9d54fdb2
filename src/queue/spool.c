/* spool.c — the on-disk queue: writing, committing, recovering, marking and
 * removing messages (contract in spool.h, DESIGN.md "The spool").
 *
 * Runs in smtpd (create/append/commit) and queue (recover, load, mark,
 * remove), on worker threads for everything that waits on the disk. Hostile
 * inputs: message content (opaque octets, never parsed here), and the spool
 * directory itself after a crash or tampering: file names are checked to be
 * <qid>.msg / <qid>.env before use and envelopes go through the strict
 * record decoder. Every path is relative to a directory fd (openat & co), so
 * the spool can be moved or renamed under us without us following it. */
#include "queue/spool.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "queue/record.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_NAME_LEN (QID_LEN + 4) /* "<qid>.msg" */
#define SPOOL_READ_CHUNK 65536

struct spool {
	char *dir;
	int dirfd;   /* <dir> */
	int incfd;   /* <dir>/incoming */
	int queuefd; /* <dir>/queue */

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
};

struct spool_msg {
	struct spool *spool;
	char qid[QID_LEN + 1];
	bool qid_ok;
	int fd; /* incoming/<qid>.msg, -1 until created */
	bool created;
	uint64_t size;
};

/* errno as a log value; "-" when the failure was not a system call's
 * (callers set errno = 0 for those). */
static const char *spool_strerror(int err, char buf[128])
{
	if (err == 0)
		return "-";
	return strerror_r(err, buf, 128); /* GNU: returns the string */
}

static void spool_name(char out[SPOOL_NAME_LEN + 1], const char *qid, const char *ext)
{
	memcpy(out, qid, QID_LEN);
	out[QID_LEN] = '.';
	memcpy(out + QID_LEN + 1, ext, 3);
	out[SPOOL_NAME_LEN] = '\0';
}

static int spool_write_all(int fd, const void *p, size_t len)
{
	const unsigned char *q = p;
	while (len > 0) {
		ssize_t n = write(fd, q, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		q += n;
		len -= (size_t)n;
	}
	return 0;
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
	int dfd = -1, ifd = -1, qfd = -1;

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
	if (created && spool_fsync(dfd) < 0)
		goto fail;

	struct spool *s = xcalloc(1, sizeof(*s));
	s->dir = xstrdup(dir);
	s->dirfd = dfd;
	s->incfd = ifd;
	s->queuefd = qfd;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	*spool_r = s;
	return 0;
fail:
	log_err("event=spool_open_failed dir=%s error=%s", log_qs((char[LOG_Q_MAX]){0}, dir),
	        spool_strerror(errno, eb));
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
	close(s->queuefd);
	close(s->incfd);
	close(s->dirfd);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s->dir);
	free(s);
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
	/* A bad id cannot become a path: the message then fails at the first
	 * append or at commit, like any I/O error. */
	m->qid_ok = qid_valid(qid);
	if (m->qid_ok)
		memcpy(m->qid, qid, QID_LEN + 1);
	return m;
}

static int spool_msg_ensure_open(struct spool_msg *m)
{
	char name[SPOOL_NAME_LEN + 1];
	char eb[128];

	if (m->fd >= 0)
		return 0;
	if (!m->qid_ok) {
		log_err("event=spool_write_failed error=\"invalid queue id\"");
		errno = EINVAL;
		return -1;
	}
	spool_name(name, m->qid, "msg");
	m->fd = openat(m->spool->incfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (m->fd < 0) {
		int err = errno;
		log_err("event=spool_write_failed qid=%s op=create error=%s", m->qid,
		        spool_strerror(err, eb));
		errno = err; /* for the caller's own report */
		return -1;
	}
	m->created = true;
	return 0;
}

int spool_msg_append(struct spool_msg *m, const void *p, size_t len)
{
	char eb[128];
	if (spool_msg_ensure_open(m) < 0)
		return -1;
	if (spool_write_all(m->fd, p, len) < 0) {
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
	char name[SPOOL_NAME_LEN + 1];
	if (m == NULL)
		return;
	*mp = NULL;
	if (m->created) {
		spool_name(name, m->qid, "msg");
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

/* Write incoming/<qid>.env (created exclusively) and fdatasync it.
 * *created_r tells the caller there is a file to unlink on failure. */
static int spool_env_write(struct spool *s, const char *qid, const struct envelope *e,
                           bool *created_r, const char **error_r)
{
	char name[SPOOL_NAME_LEN + 1];
	struct buf b;
	int rc = -1;

	buf_init(&b, RECORD_MAX_FILE);
	if (record_encode(e, &b) < 0) {
		*error_r = "cannot encode envelope";
		errno = 0;
		goto out;
	}
	spool_name(name, qid, "env");
	int fd = openat(s->incfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		*error_r = "cannot create envelope file";
		goto out;
	}
	*created_r = true;
	int err = 0;
	if (spool_write_all(fd, b.data, b.len) < 0 || spool_fdatasync(fd) < 0)
		err = errno;
	if (close(fd) < 0 && err == 0)
		err = errno;
	if (err != 0) {
		*error_r = "cannot write envelope file";
		errno = err;
	} else {
		rc = 0;
	}
out:
	buf_free(&b);
	return rc;
}

struct spool_commit_state {
	bool env_created; /* incoming/<qid>.env is ours */
	bool msg_moved;   /* queue/<qid>.msg is ours */
	bool env_moved;   /* queue/<qid>.env is ours */
};

/* Undo a failed commit: remove every file of this message that we made, the
 * .env (commit point) first. Never touches a queue/ file we did not rename
 * there ourselves. */
static void spool_commit_undo(struct spool_msg *m, const struct spool_commit_state *st)
{
	struct spool *s = m->spool;
	char env[SPOOL_NAME_LEN + 1], msg[SPOOL_NAME_LEN + 1];

	if (!m->qid_ok)
		return;
	spool_name(env, m->qid, "env");
	spool_name(msg, m->qid, "msg");
	if (st->env_moved)
		(void)unlinkat(s->queuefd, env, 0);
	else if (st->env_created)
		(void)unlinkat(s->incfd, env, 0);
	if (st->msg_moved)
		(void)unlinkat(s->queuefd, msg, 0);
	else if (m->created)
		(void)unlinkat(s->incfd, msg, 0);
}

static int spool_commit_steps(struct spool_msg *m, struct envelope *e, const void *tail,
                              size_t tail_len, struct spool_commit_state *st, const char **error_r)
{
	struct spool *s = m->spool;
	char env[SPOOL_NAME_LEN + 1], msg[SPOOL_NAME_LEN + 1];

	if (!m->qid_ok || strcmp(e->qid, m->qid) != 0) {
		*error_r = "queue id mismatch";
		errno = 0;
		return -1;
	}
	if (spool_msg_append(m, tail, tail_len) < 0 || spool_fdatasync(m->fd) < 0) {
		*error_r = "cannot write message file";
		return -1;
	}
	int r = close(m->fd);
	m->fd = -1;
	if (r < 0) {
		*error_r = "cannot write message file";
		return -1;
	}
	e->size = m->size;
	if (spool_env_write(s, m->qid, e, &st->env_created, error_r) < 0)
		return -1;
	spool_name(env, m->qid, "env");
	spool_name(msg, m->qid, "msg");
	if (spool_rename(s->incfd, msg, s->queuefd, msg) < 0) {
		*error_r = "cannot move message file into queue";
		return -1;
	}
	st->msg_moved = true;
	if (spool_rename(s->incfd, env, s->queuefd, env) < 0) {
		*error_r = "cannot move envelope file into queue";
		return -1;
	}
	st->env_moved = true;
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
	struct spool_commit_state st = {0};
	const char *error = "spool commit failed";
	char eb[128];

	*mp = NULL;
	if (spool_commit_steps(m, e, tail, tail_len, &st, &error) < 0) {
		int err = errno;
		log_err("event=spool_commit_failed qid=%s error=%s errno=%s",
		        m->qid_ok ? m->qid : "-", log_qs((char[LOG_Q_MAX]){0}, error),
		        spool_strerror(err, eb));
		spool_commit_undo(m, &st);
		spool_msg_free(m);
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	spool_msg_free(m);
	return 0;
}

/* ---- reading ---- */

/* Read all of fd into b (whose max bounds the size). *io_r (if not NULL)
 * is true when the failure was a read error rather than an oversized file. */
static int spool_read_all(int fd, struct buf *b, bool *io_r, const char **error_r)
{
	bool io = false;
	int rc = -1;
	for (;;) {
		size_t room = b->max - b->len;
		size_t want = room < SPOOL_READ_CHUNK ? room : SPOOL_READ_CHUNK;
		unsigned char c;
		if (want > 0 && buf_reserve(b, want) < 0)
			want = 0;
		/* At the maximum, one more octet tells EOF from too large. */
		ssize_t n = want > 0 ? read(fd, b->data + b->len, want) : read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0) {
			rc = 0;
			break;
		}
		if (n < 0) {
			*error_r = "cannot read envelope file";
			io = true;
			break;
		}
		if (want == 0) {
			*error_r = "envelope file too large";
			errno = 0;
			break;
		}
		b->len += (size_t)n;
	}
	if (io_r != NULL)
		*io_r = io;
	return rc;
}

/* Load and decode an open .env; *used_r as in record_decode_used(). *io_r
 * (if not NULL) tells an unreadable file from one that was read and refused.
 */
static int spool_env_decode_fd(int fd, const char *qid, struct envelope *e, size_t *used_r,
                               bool *io_r, const char **error_r)
{
	struct buf b;
	int rc = -1;

	buf_init(&b, RECORD_MAX_FILE);
	if (spool_read_all(fd, &b, io_r, error_r) < 0)
		goto out;
	if (b.len == 0) {
		*error_r = "empty envelope file";
		errno = 0;
		goto out;
	}
	errno = 0; /* from here on, failures are the envelope's */
	if (record_decode_used(b.data, b.len, e, used_r, error_r) < 0)
		goto out;
	if (strcmp(e->qid, qid) != 0) {
		envelope_clear(e);
		*error_r = "queue id in envelope does not match file name";
		goto out;
	}
	rc = 0;
out:
	buf_free(&b);
	return rc;
}

/* As spool_env_load(), and *io_r tells an I/O error (file unreadable) from an
 * envelope that was read and refused. */
static int spool_env_load_io(struct spool *spool, const char *qid, struct envelope *e, bool *io_r,
                             const char **error_r)
{
	char name[SPOOL_NAME_LEN + 1];
	const char *error = NULL;

	*io_r = true;
	if (!qid_valid(qid)) {
		*error_r = "invalid queue id";
		return -1;
	}
	spool_name(name, qid, "env");
	int fd = openat(spool->queuefd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		*error_r = "cannot open envelope file";
		return -1;
	}
	int rc = spool_env_decode_fd(fd, qid, e, NULL, io_r, &error);
	close(fd);
	if (rc < 0)
		*error_r = error;
	return rc;
}

int spool_env_load(struct spool *spool, const char *qid, struct envelope *e, const char **error_r)
{
	bool io;
	const char *error = NULL;
	if (spool_env_load_io(spool, qid, e, &io, &error) < 0) {
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	return 0;
}

int spool_msg_open(struct spool *spool, const char *qid)
{
	char name[SPOOL_NAME_LEN + 1];
	if (!qid_valid(qid)) {
		errno = EINVAL;
		return -1;
	}
	spool_name(name, qid, "msg");
	return openat(spool->queuefd, name, O_RDONLY | O_CLOEXEC);
}

/* ---- after delivery ---- */

struct spool_sched_rec;
static int spool_mark_common(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
			     const struct spool_sched_rec *sched, const char **error_r);

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
	size_t used = 0;
	int rc = -1;

	envelope_init(&e);
	buf_init(&b, 0);
	/* Check the indexes against the envelope: a DONE out of range would
	 * make the whole file undecodable. */
	if (spool_env_decode_fd(fd, qid, &e, &used, NULL, error_r) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (idx[i] >= e.nrcpts) {
			*error_r = "recipient index out of range";
			errno = 0;
			goto out;
		}
		(void)record_encode_done(idx[i], &b);
	}
	if (sched->set)
		(void)record_encode_sched(sched->next_try_us, sched->attempts, sched->flags, &b);
	struct stat st;
	if (fstat(fd, &st) < 0) {
		*error_r = "cannot stat envelope file";
		goto out;
	}
	/* Cut a torn DONE left by a crash, so ours is not written after it. */
	if ((uint64_t)st.st_size > used && ftruncate(fd, (off_t)used) < 0) {
		*error_r = "cannot repair envelope file";
		goto out;
	}
	if (spool_write_all(fd, b.data, b.len) < 0) {
		int err = errno;
		(void)ftruncate(fd, (off_t)used); /* leave no torn record behind */
		errno = err;
		*error_r = "cannot append to envelope file";
		goto out;
	}
	if (spool_fdatasync(fd) < 0) {
		*error_r = "cannot sync envelope file";
		goto out;
	}
	rc = 0;
out:
	buf_free(&b);
	envelope_clear(&e);
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

static int spool_mark_common(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
			     const struct spool_sched_rec *sched, const char **error_r)
{
	char name[SPOOL_NAME_LEN + 1];
	char eb[128];
	const char *error = NULL;

	if (!qid_valid(qid)) {
		if (error_r != NULL)
			*error_r = "invalid queue id";
		return -1;
	}
	if (n == 0 && !sched->set)
		return 0;
	spool_name(name, qid, "env");
	int fd = openat(spool->queuefd, name, O_RDWR | O_APPEND | O_CLOEXEC);
	int rc = -1;
	if (fd < 0)
		error = "cannot open envelope file";
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

int spool_remove(struct spool *spool, const char *qid)
{
	char name[SPOOL_NAME_LEN + 1];
	char eb[128];

	if (!qid_valid(qid))
		return -1;
	spool_name(name, qid, "env");
	if (unlinkat(spool->queuefd, name, 0) < 0 && errno != ENOENT) {
		log_err("event=spool_remove_failed qid=%s file=env error=%s", qid,
		        spool_strerror(errno, eb));
		return -1;
	}
	spool_name(name, qid, "msg");
	if (unlinkat(spool->queuefd, name, 0) < 0 && errno != ENOENT) {
		/* The .env is gone, so recovery removes this orphan. */
		log_err("event=spool_remove_failed qid=%s file=msg error=%s", qid,
		        spool_strerror(errno, eb));
		return -1;
	}
	return 0;
}

/* ---- recovery ---- */

enum spool_kind { SPOOL_KIND_ENV = 0, SPOOL_KIND_MSG = 1 };

struct spool_entry {
	char qid[QID_LEN + 1];
	enum spool_kind kind;
};

struct spool_list {
	struct spool_entry *v;
	size_t n, cap;
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

/* incoming/ holds only messages that were never acknowledged: all go. */
static int spool_recover_incoming(struct spool *s)
{
	char q[LOG_Q_MAX], eb[128];
	DIR *d = spool_opendir(s->incfd);
	if (d == NULL)
		return -1;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (de == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(s->incfd, de->d_name, 0) < 0)
			log_warn("event=spool_incoming_unlink_failed file=%s error=%s",
			         log_qs(q, de->d_name), spool_strerror(errno, eb));
		else
			log_info("event=spool_incoming_removed file=%s", log_qs(q, de->d_name));
	}
	int rc = errno != 0 ? -1 : 0;
	closedir(d);
	return rc;
}

/* "<qid>.msg" / "<qid>.env" -> qid and kind; anything else -> -1. */
static int spool_name_parse(const char *name, char qid[QID_LEN + 1], enum spool_kind *kind_r)
{
	if (strlen(name) != SPOOL_NAME_LEN || name[QID_LEN] != '.')
		return -1;
	if (strcmp(name + QID_LEN + 1, "msg") == 0)
		*kind_r = SPOOL_KIND_MSG;
	else if (strcmp(name + QID_LEN + 1, "env") == 0)
		*kind_r = SPOOL_KIND_ENV;
	else
		return -1;
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
		if (spool_name_parse(de->d_name, qid, &kind) < 0) {
			log_warn("event=spool_unknown_file dir=queue file=%s",
			         log_qs(q, de->d_name));
			continue;
		}
		spool_list_add(l, qid, kind);
	}
	int rc = errno != 0 ? -1 : 0;
	closedir(d);
	return rc;
}

static void spool_unlink_orphan(struct spool *s, const char *qid, const char *ext,
                                const char *reason)
{
	char name[SPOOL_NAME_LEN + 1], eb[128];
	spool_name(name, qid, ext);
	log_warn("event=spool_orphan qid=%s file=%s reason=%s", qid, ext, reason);
	if (unlinkat(s->queuefd, name, 0) < 0 && errno != ENOENT)
		log_err("event=spool_orphan_unlink_failed qid=%s file=%s error=%s", qid, ext,
		        spool_strerror(errno, eb));
}

/* Move a message whose envelope is refused into <dir>/corrupt/ for a human:
 * it was acknowledged, so it is never deleted. The .msg goes first: if we
 * crash in between, the .env left in queue/ is an orphan (and it is the
 * broken half anyway). */
static void spool_quarantine(struct spool *s, const char *qid, const char *reason)
{
	char name[SPOOL_NAME_LEN + 1], eb[128];
	bool created = false;
	const char *ext[2] = {"msg", "env"};

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
	for (size_t i = 0; i < 2; i++) {
		spool_name(name, qid, ext[i]);
		if (spool_rename(s->queuefd, name, cfd, name) < 0 || spool_fsync(cfd) < 0) {
			log_err("event=spool_quarantine_failed qid=%s file=%s error=%s", qid,
			        ext[i], spool_strerror(errno, eb));
			break;
		}
	}
	close(cfd);
}

/* Both halves present: keep the message if its envelope decodes and its
 * size matches. Returns 1 (keep), 0 (dropped or quarantined) or -1 (left
 * alone: could not read). */
static int spool_recover_pair(struct spool *s, const char *qid)
{
	char name[SPOOL_NAME_LEN + 1], eb[128];
	struct envelope e;
	const char *error = NULL;
	bool io = false;
	struct stat st;
	int rc = 1;

	envelope_init(&e);
	if (spool_env_load_io(s, qid, &e, &io, &error) < 0) {
		if (io) {
			log_err("event=spool_env_unreadable qid=%s error=%s errno=%s", qid,
			        log_qs((char[LOG_Q_MAX]){0}, error), spool_strerror(errno, eb));
			return -1;
		}
		spool_quarantine(s, qid, error);
		return 0;
	}
	spool_name(name, qid, "msg");
	if (fstatat(s->queuefd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		log_err("event=spool_msg_unreadable qid=%s errno=%s", qid,
		        spool_strerror(errno, eb));
		rc = -1;
	} else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != e.size) {
		spool_quarantine(s, qid, "message size differs from envelope");
		rc = 0;
	}
	envelope_clear(&e);
	return rc;
}

/* Walk the sorted entries, one qid at a time; the valid qids are compacted
 * to the front of l (still sorted). Returns how many. */
static size_t spool_recover_queue(struct spool *s, struct spool_list *l)
{
	size_t nvalid = 0;
	if (l->n > 1)
		qsort(l->v, l->n, sizeof(*l->v), spool_entry_cmp);
	for (size_t i = 0; i < l->n;) {
		size_t j = i + 1;
		while (j < l->n && strcmp(l->v[j].qid, l->v[i].qid) == 0)
			j++;
		/* Sorted: ENV before MSG, and each kind at most once per name. */
		bool env = l->v[i].kind == SPOOL_KIND_ENV;
		bool msg = l->v[j - 1].kind == SPOOL_KIND_MSG;
		const char *qid = l->v[i].qid;
		if (env && !msg)
			spool_unlink_orphan(s, qid, "env", "no_message_file");
		else if (msg && !env)
			spool_unlink_orphan(s, qid, "msg", "no_envelope_file");
		else if (spool_recover_pair(s, qid) == 1)
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

	if (spool_recover_incoming(spool) < 0 || spool_scan_queue(spool, &l) < 0) {
		log_err("event=spool_recover_failed error=%s", spool_strerror(errno, eb));
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
	free(l.v);
	return (int)n;
}
