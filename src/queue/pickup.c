/* pickup.c — the maildrop pickup (pickup.h). Runs in the queue process:
 * a timer on the loop (1 s after the start, then every PICKUP_INTERVAL_S),
 * the scan and the submissions on a worker thread of its own (they block).
 *
 * The files are hostile: any local user writes them. Each is opened
 * without following links and must be a regular file with one link and a
 * bounded size; its owner (st_uid, which the kernel sets and the writer
 * cannot change) is the identity smtpd records; the content goes through
 * maildrop_decode and then through smtpd like any local submission (policy,
 * aliases, Received, Date/Message-ID). Why not write the spool directly:
 * smtpd's checks and alias expansion would be skipped.
 *
 * Outcomes: accepted → removed (a crash between the 250 and the unlink
 * submits it again: duplicated, never lost); refused for good (a bad file,
 * recipients refused) → recipients refused get a notice to the sender, a
 * bad file is renamed "x..." and kept for the operator; temporary (smtpd
 * not up yet, 4xx) → left for the next scan. */
#include "queue/pickup.h"

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "mail/maildrop.h"
#include "sendmail/submit.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define PICKUP_FIRST_MS 1000
#define PICKUP_INTERVAL_S 5
#define PICKUP_PER_SCAN 100

struct pickup {
	struct event_base *base;
	const struct conf *conf;
	struct workq *wq;
	struct event *timer;
	bool busy;
	pthread_mutex_t lock; /* stopping and fd, between the loop and the worker */
	bool stopping;
	int fd; /* the submission in progress, -1 none */
};

static void pickup_on_fd(void *arg, int fd)
{
	struct pickup *p = arg;
	pthread_mutex_lock(&p->lock);
	p->fd = fd;
	if (p->stopping && fd >= 0)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&p->lock);
}

static bool pickup_stopping(struct pickup *p)
{
	pthread_mutex_lock(&p->lock);
	bool s = p->stopping;
	pthread_mutex_unlock(&p->lock);
	return s;
}

/* Keep a refused file for the operator under "x...". */
static void pickup_keep(int dfd, const char *name, const char *why)
{
	char x[MAILDROP_NAME_LEN + 1];
	snprintf(x, sizeof(x), "x%s", name + 1);
	/* A symbolic link cannot be renamed under our Landlock rules (no
	 * MAKE_SYM): it is no message, it goes. */
	bool kept = renameat(dfd, name, dfd, x) == 0;
	if (!kept)
		(void)unlinkat(dfd, name, 0);
	char qw[LOG_Q_MAX];
	log_warn("event=maildrop_refused file=%s reason=%s kept=%s", name, log_qs(qw, why),
	         kept ? x : "-");
}

/* 1: done with this file, 0: try later (stop the scan), -1 refused. */
static int pickup_one(struct pickup *p, int dfd, const char *name)
{
	const struct conf *conf = p->conf;
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		if (err == ENOENT)
			return 1;
		if (err == EMFILE || err == ENFILE || err == ENOMEM || err == EINTR)
			return 0;
		/* a symbolic link (ELOOP), a name we may not read, ... */
		pickup_keep(dfd, name, strerror(err));
		return -1;
	}
	uint64_t max = conf->limits.message_size + 65536 +
	               (uint64_t)MAILDROP_RCPTS_MAX * (MAILDROP_ADDR_MAX + 5);
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || (uint64_t)st.st_size > max) {
		close(fd);
		pickup_keep(dfd, name, "not a plain file of one link, or too large");
		return -1;
	}
	struct buf data;
	buf_init(&data, 0);
	int rc = buf_reserve(&data, (size_t)st.st_size);
	if (rc == 0 && st.st_size > 0)
		rc = fs_pread_all(fd, data.data, (size_t)st.st_size, 0);
	close(fd);
	if (rc < 0) {
		buf_free(&data);
		return 0;
	}
	data.len = (size_t)st.st_size;
	struct maildrop_msg *dm = xcalloc(1, sizeof(*dm));
	const char *error = NULL;
	if (maildrop_decode(data.data, data.len, dm, &error) < 0) {
		pickup_keep(dfd, name, error);
		free(dm);
		buf_free(&data);
		return -1;
	}
	char sender[MAILDROP_ADDR_MAX + 1];
	char **rcpts = xcalloc(dm->nrcpts, sizeof(*rcpts));
	snprintf(sender, sizeof(sender), "%.*s", (int)dm->sender_len, dm->sender);
	for (size_t i = 0; i < dm->nrcpts; i++)
		rcpts[i] = xstrndup(dm->rcpts[i], dm->rcpt_lens[i]);
	int *codes = xcalloc(dm->nrcpts, sizeof(*codes));
	struct submit_msg m = {.sender = sender,
	                       .rcpts = (const char *const *)rcpts,
	                       .nrcpts = dm->nrcpts,
	                       .content = dm->content,
	                       .content_len = dm->content_len,
	                       .xuid = (long long)st.st_uid,
	                       .on_fd = pickup_on_fd,
	                       .on_fd_arg = p};
	struct submit_result r = {.rcpt_code = codes};
	int ret = 1;
	char qs[LOG_Q_MAX], qr[LOG_Q_MAX];
	if (submit_all(conf->spool_dir, &m, &r) < 0 || r.status == SUBMIT_TEMP) {
		/* Recipients accepted in an earlier round of this attempt get
		 * it again next time: duplicated, never lost. */
		log_debug("event=pickup_deferred file=%s uid=%u reason=%s", name,
		          (unsigned)st.st_uid, log_qs(qr, r.reply));
		ret = 0;
	} else {
		struct buf errors;
		buf_init(&errors, 0);
		for (size_t i = 0; i < dm->nrcpts; i++) {
			if (codes[i] >= 500)
				buf_printf(&errors, "<%s>: %s\r\n", rcpts[i], r.reply);
		}
		if (errors.len > 0) {
			log_info("event=pickup_refused file=%s uid=%u from=<%s> reason=%s", name,
			         (unsigned)st.st_uid, log_qs(qs, sender), log_qs(qr, r.reply));
			submit_notice(conf->spool_dir, conf->hostname, sender, buf_cstr(&errors));
		}
		buf_free(&errors);
		log_info("event=pickup file=%s uid=%u from=<%s> nrcpt=%zu", name,
		         (unsigned)st.st_uid, log_qs(qs, sender), dm->nrcpts);
		(void)unlinkat(dfd, name, 0);
	}
	for (size_t i = 0; i < dm->nrcpts; i++)
		free(rcpts[i]);
	free(rcpts);
	free(codes);
	free(dm);
	buf_free(&data);
	return ret;
}

static bool pickup_name_ok(const char *n)
{
	if (n[0] != 'd' || strlen(n) != MAILDROP_NAME_LEN)
		return false;
	return strspn(n + 1, "0123456789abcdef") == MAILDROP_NAME_LEN - 1;
}

static void pickup_run(void *arg)
{
	struct pickup *p = arg;
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/%s", p->conf->spool_dir, MAILDROP_DIR);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int lfd = dfd >= 0 ? dup(dfd) : -1;
	DIR *d = lfd >= 0 ? fdopendir(lfd) : NULL;
	if (d == NULL) {
		if (lfd >= 0)
			close(lfd);
		if (dfd >= 0)
			close(dfd);
		return;
	}
	/* Names first: the loop below renames and removes. */
	char(*names)[MAILDROP_NAME_LEN + 1] = xcalloc(PICKUP_PER_SCAN, sizeof(*names));
	size_t n = 0;
	struct dirent *de;
	while (n < PICKUP_PER_SCAN && (de = readdir(d)) != NULL) {
		if (pickup_name_ok(de->d_name))
			memcpy(names[n++], de->d_name, MAILDROP_NAME_LEN + 1);
	}
	closedir(d);
	for (size_t i = 0; i < n && !pickup_stopping(p); i++) {
		if (pickup_one(p, dfd, names[i]) == 0)
			break; /* smtpd not there yet, or busy: next time */
	}
	free(names);
	close(dfd);
}

static void pickup_done(void *arg)
{
	struct pickup *p = arg;
	p->busy = false;
}

static void pickup_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct pickup *p = arg;
	(void)fd;
	(void)what;
	if (!p->busy) {
		p->busy = true;
		workq_submit(p->wq, pickup_run, pickup_done, p);
	}
	struct timeval tv = {PICKUP_INTERVAL_S, 0};
	evtimer_add(p->timer, &tv);
}

struct pickup *pickup_create(struct event_base *base, const struct conf *conf)
{
	struct pickup *p = xcalloc(1, sizeof(*p));
	p->base = base;
	p->conf = conf;
	p->fd = -1;
	pthread_mutex_init(&p->lock, NULL);
	p->wq = workq_create(base, 1, "pickup");
	p->timer = evtimer_new(base, pickup_on_timer, p);
	struct timeval tv = {0, PICKUP_FIRST_MS * 1000};
	evtimer_add(p->timer, &tv);
	return p;
}

void pickup_free(struct pickup **pp)
{
	struct pickup *p = *pp;
	if (p == NULL)
		return;
	*pp = NULL;
	/* A submission in progress may wait on this process's own loop (the
	 * commit): cut it, the file stays for the next start. */
	pthread_mutex_lock(&p->lock);
	p->stopping = true;
	if (p->fd >= 0)
		shutdown(p->fd, SHUT_RDWR);
	pthread_mutex_unlock(&p->lock);
	event_free(p->timer);
	workq_free(&p->wq);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
