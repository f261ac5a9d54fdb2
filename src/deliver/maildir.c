/* maildir.c — Maildir delivery (https://cr.yp.to/proto/maildir.html).
 * Queue process, delivery worker threads (blocking disk I/O). The content
 * is copied from the spool file through one MAILDIR_WINDOW buffer (CRLF
 * turned into LF on the way), so a delivery's memory does not depend on
 * the message's size. */
#include "deliver/maildir.h"
#include "lib/alloc.h"
#include "lib/fsutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

int maildir_mailbox_name(const char *local, char out[MAILDIR_MAILBOX_MAX + 1])
{
	size_t n = 0;
	if (local[0] == '\0' || local[0] == '.' || local[0] == '"' || local[0] == '+')
		return -1;
	for (const char *p = local; *p != '\0' && *p != '+'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x21 || c == 0x7f || c == '/' || c == '\\' || c == '"')
			return -1;
		if (n >= MAILDIR_MAILBOX_MAX)
			return -1;
		out[n++] = (char)tolower(c);
	}
	out[n] = '\0';
	return 0;
}

static int maildir_mkdir(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	return -1;
}

/* mkdir -p for <root>/<domain>/<mailbox>/Maildir/{tmp,new,cur}. The common
 * case (everything exists) costs one stat, of cur/: it is made last, so when
 * another delivery thread is creating the same Maildir, seeing cur/ means
 * tmp/ and new/ are there too (checking tmp/ let a concurrent delivery
 * rename into a new/ that did not exist yet). */
static int maildir_prepare(const char *base, char *err, size_t errlen)
{
	char path[4096];
	struct stat st;
	if ((size_t)snprintf(path, sizeof(path), "%s/cur", base) >= sizeof(path)) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	if (stat(path, &st) == 0)
		return 0;
	size_t len = strlen(base);
	if (len >= sizeof(path) - 8) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	memcpy(path, base, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (path[i] != '/' && path[i] != '\0')
			continue;
		char c = path[i];
		path[i] = '\0';
		if (maildir_mkdir(path) < 0) {
			snprintf(err, errlen, "mkdir %s: %s", path, strerror(errno));
			return -1;
		}
		path[i] = c;
	}
	static const char *const sub[] = {"tmp", "new", "cur"};
	for (size_t i = 0; i < 3; i++) {
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", base, sub[i]) >= sizeof(path) ||
		    maildir_mkdir(path) < 0) {
			snprintf(err, errlen, "mkdir %s: %s", path, strerror(errno));
			return -1;
		}
	}
	return 0;
}

/* Octets [pos, pos + n) of the content into p. */
static int maildir_src_read(const struct maildir_msg *msg, uint64_t pos, unsigned char *p, size_t n)
{
	if (msg->data != NULL) {
		memcpy(p, msg->data + pos, n);
		return 0;
	}
	return fs_pread_all(msg->fd, p, n, msg->off + pos);
}

/* Turn one window's CRLFs into LFs in place; *cr carries a CR that ended
 * the previous window (its LF may start this one). A CR not followed by
 * LF is kept. Returns the converted length. */
static size_t maildir_lf_window(unsigned char *p, size_t n, bool last, bool *cr, bool *lead_cr)
{
	size_t o = 0, i = 0;
	*lead_cr = false;
	if (*cr) {
		*cr = false;
		if (n == 0 || p[0] != '\n')
			*lead_cr = true; /* the carried CR stays: the caller writes it first */
	}
	for (; i < n; i++) {
		if (p[i] == '\r') {
			if (i + 1 < n) {
				if (p[i + 1] == '\n')
					continue; /* drop the CR, keep the LF */
			} else if (!last) {
				*cr = true; /* decided by the next window */
				continue;
			}
		}
		p[o++] = p[i];
	}
	return o;
}

/* A window for msg: MAILDIR_WINDOW octets, or fewer for a smaller
 * message (most are: no fresh pages to fault in for a 4 KiB message). */
static size_t maildir_window_size(const struct maildir_msg *msg)
{
	return msg->len < MAILDIR_WINDOW ? (msg->len > 0 ? msg->len : 1) : MAILDIR_WINDOW;
}

int maildir_lf_size(const struct maildir_msg *msg, uint64_t *size_r)
{
	size_t wsize = maildir_window_size(msg);
	unsigned char *w = xmalloc(wsize);
	uint64_t pos = 0, size = 0;
	bool cr = false, lead;
	int rc = 0;
	while (pos < msg->len) {
		size_t n = msg->len - pos < wsize ? (size_t)(msg->len - pos) : wsize;
		if (maildir_src_read(msg, pos, w, n) < 0) {
			rc = -1;
			break;
		}
		pos += n;
		size += maildir_lf_window(w, n, pos == msg->len, &cr, &lead) + (lead ? 1 : 0);
	}
	free(w);
	*size_r = size;
	return rc;
}

/* Our two header lines, then the content with LF line ends, window by
 * window. The header lines sit in front of the first window, so a small
 * message is one write. -1 with err on a read or write error. */
static int maildir_copy(int fd, const char *head, size_t headlen, const struct maildir_msg *msg,
                        char *err, size_t errlen)
{
	size_t wsize = maildir_window_size(msg);
	/* [1, 1 + headlen): the header lines, right in front of the window;
	 * later windows put a CR carried over from the previous one at w - 1. */
	unsigned char *buf = xmalloc(headlen + 1 + wsize);
	unsigned char *w = buf + headlen + 1;
	uint64_t pos = 0;
	bool cr = false, lead, first = true;
	int rc = 0;
	memcpy(buf + 1, head, headlen);
	while (rc == 0 && (first || pos < msg->len)) {
		size_t n = msg->len - pos < wsize ? (size_t)(msg->len - pos) : wsize;
		if (n > 0 && maildir_src_read(msg, pos, w, n) < 0) {
			snprintf(err, errlen, "read spool: %s", strerror(errno));
			free(buf);
			return -1;
		}
		pos += n;
		size_t o = maildir_lf_window(w, n, pos == msg->len, &cr, &lead);
		unsigned char *from = w;
		if (first)
			from = buf + 1; /* nothing is carried into the first window */
		else if (lead)
			*--from = '\r';
		if (fs_write_all(fd, from, (size_t)(w + o - from)) < 0)
			rc = -1;
		first = false;
	}
	free(buf);
	if (rc < 0)
		snprintf(err, errlen, "write: %s", strerror(errno));
	return rc;
}

void maildir_unique_for(uint64_t arrival_us, const char *qid, size_t rcpt_index,
			char out[MAILDIR_UNIQUE_MAX])
{
	snprintf(out, MAILDIR_UNIQUE_MAX, "%llu.Q%.20sR%zu",
		 (unsigned long long)(arrival_us / 1000000), qid, rcpt_index);
}

/* '/' and ':' cannot appear in the host part (Maildir spec). */
static void maildir_host_part(const char *hostname, char host[256])
{
	size_t h = 0;

	for (const char *p = hostname; *p != '\0' && h < 256 - 5; p++) {
		if (*p == '/' || *p == ':') {
			memcpy(host + h, *p == '/' ? "\\057" : "\\072", 4);
			h += 4;
		} else {
			host[h++] = *p;
		}
	}
	host[h] = '\0';
}

static void maildir_unique(const struct maildir_msg *msg, char *out, size_t outlen)
{
	static atomic_uint_fast64_t counter;
	struct timeval tv;
	uint32_t rnd = 0;
	char host[256];

	maildir_host_part(msg->hostname, host);
	if (msg->unique != NULL) {
		snprintf(out, outlen, "%s.%s", msg->unique, host);
		return;
	}
	gettimeofday(&tv, NULL);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) < 0)
		rnd = (uint32_t)tv.tv_usec;
	snprintf(out, outlen, "%lld.M%06ldP%dQ%lluR%08x.%s", (long long)tv.tv_sec,
		 (long)tv.tv_usec, (int)getpid(),
		 (unsigned long long)atomic_fetch_add(&counter, 1), rnd, host);
}

/* Group commit of new/ fsyncs, as the spool does for queue/: a delivery
 * takes a ticket of its directory after its rename; an fsync of that
 * directory that starts after the ticket was taken makes the rename
 * durable. Deliveries into one Maildir from several worker threads at
 * once share fsyncs. Directories are told apart by path; a slot lives
 * while someone waits on it, and with every slot busy a delivery fsyncs
 * alone. */
#define MAILDIR_DSYNC_SLOTS 16
struct maildir_dsync {
	char *dir; /* NULL: free */
	unsigned users;
	uint64_t ticket, synced, failed;
	bool syncing;
};
static struct maildir_dsync maildir_dsyncs[MAILDIR_DSYNC_SLOTS];
static pthread_mutex_t maildir_dsync_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t maildir_dsync_cond = PTHREAD_COND_INITIALIZER;
static atomic_uint_fast64_t maildir_dsync_count;

uint64_t maildir_dir_syncs(void)
{
	return atomic_load(&maildir_dsync_count);
}

static int maildir_fsync_path(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	atomic_fetch_add(&maildir_dsync_count, 1);
	int r = fsync(fd);
	int err = errno;
	close(fd);
	errno = err;
	return r;
}

static int maildir_dir_sync(const char *dir)
{
	struct maildir_dsync *d = NULL, *free_slot = NULL;
	int rc = 0, err = 0;

	pthread_mutex_lock(&maildir_dsync_lock);
	for (size_t i = 0; i < MAILDIR_DSYNC_SLOTS && d == NULL; i++) {
		struct maildir_dsync *x = &maildir_dsyncs[i];
		if (x->dir == NULL && free_slot == NULL)
			free_slot = x;
		else if (x->dir != NULL && strcmp(x->dir, dir) == 0)
			d = x;
	}
	if (d == NULL && free_slot == NULL) {
		pthread_mutex_unlock(&maildir_dsync_lock);
		return maildir_fsync_path(dir);
	}
	if (d == NULL) {
		d = free_slot;
		*d = (struct maildir_dsync){.dir = xstrdup(dir)};
	}
	d->users++;
	uint64_t my = ++d->ticket;
	for (;;) {
		if (my <= d->failed) {
			/* after a failed fsync a later success proves nothing */
			rc = -1;
			err = EIO;
			break;
		}
		if (my <= d->synced)
			break;
		if (d->syncing) {
			pthread_cond_wait(&maildir_dsync_cond, &maildir_dsync_lock);
			continue;
		}
		uint64_t target = d->ticket;
		d->syncing = true;
		pthread_mutex_unlock(&maildir_dsync_lock);
		int r = maildir_fsync_path(dir);
		int e = errno;
		pthread_mutex_lock(&maildir_dsync_lock);
		d->syncing = false;
		if (r == 0) {
			d->synced = target;
		} else {
			d->failed = target;
			if (my <= target) {
				rc = -1;
				err = e;
				pthread_cond_broadcast(&maildir_dsync_cond);
				break;
			}
		}
		pthread_cond_broadcast(&maildir_dsync_cond);
	}
	if (--d->users == 0) {
		free(d->dir);
		d->dir = NULL;
	}
	pthread_mutex_unlock(&maildir_dsync_lock);
	if (rc < 0)
		errno = err;
	return rc;
}

/* An earlier copy in cur/: "<uniq>,S=<size>" followed by nothing, more
 * ",X=" fields, or the ":2,<flags>" info a mail client adds. */
static bool maildir_in_cur(const char *base, const char *uniq, const char *sized)
{
	char cur[4200];
	size_t ul = strlen(uniq);
	bool found = false;

	if ((size_t)snprintf(cur, sizeof(cur), "%s/cur", base) >= sizeof(cur))
		return false;
	DIR *d = opendir(cur);
	if (d == NULL)
		return false;
	const struct dirent *de;
	while (!found && (de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, uniq, ul) != 0)
			continue;
		const char *rest = de->d_name + ul;
		size_t sl = strlen(sized);
		found = (strncmp(rest, sized, sl) == 0 &&
			 (rest[sl] == '\0' || rest[sl] == ',' || rest[sl] == ':')) ||
			rest[0] == ':';
	}
	closedir(d);
	return found;
}

/* Set once O_TMPFILE is refused (a file system without it): tmp/ from then. */
static atomic_bool maildir_no_tmpfile;
/* The name was taken by this very delivery (a repeat after a crash): keep
 * that copy, once durable (1). */
static int maildir_sync_kept(const char *newdir, char *err, size_t errlen)
{
	if (maildir_dir_sync(newdir) < 0) {
		snprintf(err, errlen, "fsync new/: %s", strerror(errno));
		return -1;
	}
	return 1;
}

/* maildir_store with fd an unnamed file in new/ (closed here); -2: it
 * cannot be linked, use tmp/. */
static int maildir_store_tmpfile(int fd, const char *head, size_t hl,
				 const struct maildir_msg *msg, const char *dst, const char *newdir,
				 char *err, size_t errlen)
{
	if (maildir_copy(fd, head, hl, msg, err, errlen) < 0 || fsync(fd) < 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "write new/: %s", strerror(errno));
		close(fd);
		return -1;
	}
	int r = fs_link_unnamed(fd, AT_FDCWD, dst);
	int e = errno;
	close(fd);
	if (r < 0) {
		/* The name holds the queue id and recipient (msg->unique):
		 * taken means this very delivery is already there. */
		if (e == EEXIST && msg->unique != NULL)
			return maildir_sync_kept(newdir, err, errlen);
		if ((e == ENOENT || e == EPERM || e == EACCES) && access("/proc/self/fd", X_OK) != 0) {
			/* No way to name an unnamed file here (an old kernel
			 * and no /proc): tmp/ from now on. */
			atomic_store_explicit(&maildir_no_tmpfile, true, memory_order_relaxed);
			return -2;
		}
		snprintf(err, errlen, "link into new/: %s", strerror(e));
		return -1;
	}
	if (maildir_dir_sync(newdir) < 0) {
		snprintf(err, errlen, "fsync new/: %s", strerror(errno));
		return -1; /* the file may survive: a retry finds it, never loses */
	}
	return 0;
}

static int maildir_store(const char *base, const struct maildir_msg *msg, char *err,
                         size_t errlen)
{
	char uniq[400], sized[32], tmp[4600], dst[4700], newdir[4200], head[2200];
	struct stat st;
	uint64_t lf_len = msg->lf_len;

	if (msg->data != NULL && maildir_lf_size(msg, &lf_len) < 0) {
		snprintf(err, errlen, "cannot size the message");
		return -1;
	}
	int hl = snprintf(head, sizeof(head), "Return-Path: <%s>\nDelivered-To: %s\n",
	                  msg->return_path, msg->delivered_to);
	if (hl < 0 || (size_t)hl >= sizeof(head)) {
		snprintf(err, errlen, "address too long");
		return -1;
	}
	maildir_unique(msg, uniq, sizeof(uniq));
	snprintf(sized, sizeof(sized), ",S=%llu", (unsigned long long)(lf_len + (uint64_t)hl));
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp/%s", base, uniq) >= sizeof(tmp) ||
	    (size_t)snprintf(dst, sizeof(dst), "%s/new/%s%s", base, uniq, sized) >= sizeof(dst) ||
	    (size_t)snprintf(newdir, sizeof(newdir), "%s/new", base) >= sizeof(newdir)) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	if (msg->unique != NULL && !msg->fresh) {
		/* Delivered before a crash: the copy is whole (it was renamed
		 * into new/ only after its fsync), keep it. */
		if (stat(dst, &st) == 0 || (msg->search_cur && maildir_in_cur(base, uniq, sized)))
			return 1;
		/* What a crash before the rename left in tmp/ is ours. */
		unlink(tmp);
	}

	/* An unnamed file in new/, linked under its final name once written
	 * and fsynced: readers see it whole or not at all, as with tmp/ and a
	 * rename, but it costs no tmp/ entry to make and remove, and its
	 * fsync need not write tmp/ too (ext4 syncs the parent of a new
	 * entry). A file system without O_TMPFILE gets tmp/. */
	int fd = -1;
	if (!atomic_load_explicit(&maildir_no_tmpfile, memory_order_relaxed)) {
		fd = open(newdir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
		if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
			atomic_store_explicit(&maildir_no_tmpfile, true, memory_order_relaxed);
		else if (fd < 0) {
			snprintf(err, errlen, "open new/: %s", strerror(errno));
			return -1;
		}
	}
	if (fd >= 0) {
		int r = maildir_store_tmpfile(fd, head, (size_t)hl, msg, dst, newdir, err, errlen);
		if (r != -2)
			return r;
		err[0] = '\0';
	}

	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "open tmp: %s", strerror(errno));
		return -1;
	}
	if (maildir_copy(fd, head, (size_t)hl, msg, err, errlen) < 0 || fsync(fd) < 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "write tmp: %s", strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	/* link, not rename: never over an earlier copy, as with O_TMPFILE */
	if (link(tmp, dst) < 0) {
		int e = errno;
		unlink(tmp);
		if (e == EEXIST && msg->unique != NULL)
			return maildir_sync_kept(newdir, err, errlen);
		snprintf(err, errlen, "link into new/: %s", strerror(e));
		return -1;
	}
	unlink(tmp);
	if (maildir_dir_sync(newdir) < 0) {
		snprintf(err, errlen, "fsync new/: %s", strerror(errno));
		return -1; /* the file may survive: a retry finds it, never loses */
	}
	return 0;
}

int maildir_deliver(const char *root, const char *domain, const char *mailbox,
		    const struct maildir_msg *msg, char *err, size_t errlen)
{
	char base[4096];
	if (domain[0] == '\0' || domain[0] == '.' || strchr(domain, '/') != NULL ||
	    strlen(mailbox) == 0 || mailbox[0] == '.' || strchr(mailbox, '/') != NULL) {
		snprintf(err, errlen, "unsafe mailbox path");
		return -1;
	}
	const char *folder = msg->folder != NULL ? msg->folder : "";
	if (folder[0] != '\0' && (folder[0] != '.' || strchr(folder, '/') != NULL)) {
		snprintf(err, errlen, "unsafe folder name");
		return -1;
	}
	int n = snprintf(base, sizeof(base), "%s/%s/%s/Maildir%s%s", root, domain, mailbox,
			 folder[0] != '\0' ? "/" : "", folder);
	if (n < 0 || (size_t)n >= sizeof(base) - 512) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	if (maildir_prepare(base, err, errlen) < 0)
		return -1;
	err[0] = '\0';
	return maildir_store(base, msg, err, errlen);
}
