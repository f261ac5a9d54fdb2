/* maildir.c — Maildir delivery (https://cr.yp.to/proto/maildir.html).
 * Queue process, delivery worker threads (blocking disk I/O). */
#include "deliver/maildir.h"
#include "lib/buf.h"
#include "lib/fsutil.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
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

/* The message with CRLF turned into LF, prefixed by our two headers. */
static int maildir_render(const struct maildir_msg *msg, struct buf *out)
{
	if (buf_printf(out, "Return-Path: <%s>\nDelivered-To: %s\n", msg->return_path,
		       msg->delivered_to) < 0 ||
	    buf_reserve(out, msg->len) < 0)
		return -1;
	const unsigned char *p = msg->data, *end = msg->data + msg->len;
	while (p < end) {
		const unsigned char *cr = memchr(p, '\r', (size_t)(end - p));
		if (cr == NULL) {
			buf_append(out, p, (size_t)(end - p));
			break;
		}
		buf_append(out, p, (size_t)(cr - p));
		if (cr + 1 < end && cr[1] == '\n')
			p = cr + 1; /* drop the CR, keep the LF */
		else {
			buf_append_byte(out, '\r');
			p = cr + 1;
		}
	}
	return 0;
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

static int maildir_store(const char *base, const struct buf *content,
			 const struct maildir_msg *msg, char *err, size_t errlen)
{
	char uniq[400], sized[32], tmp[4600], dst[4700], newdir[4200];
	struct stat st;

	maildir_unique(msg, uniq, sizeof(uniq));
	snprintf(sized, sizeof(sized), ",S=%zu", content->len);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/tmp/%s", base, uniq) >= sizeof(tmp) ||
	    (size_t)snprintf(dst, sizeof(dst), "%s/new/%s%s", base, uniq, sized) >= sizeof(dst) ||
	    (size_t)snprintf(newdir, sizeof(newdir), "%s/new", base) >= sizeof(newdir)) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	if (msg->unique != NULL) {
		/* Delivered before a crash: the copy is whole (it was renamed
		 * into new/ only after its fsync), keep it. */
		if (stat(dst, &st) == 0 || (msg->search_cur && maildir_in_cur(base, uniq, sized)))
			return 1;
		/* What a crash before the rename left in tmp/ is ours. */
		unlink(tmp);
	}

	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "open tmp: %s", strerror(errno));
		return -1;
	}
	if (fs_write_all(fd, content->data, content->len) < 0 || fsync(fd) < 0) {
		snprintf(err, errlen, "write tmp: %s", strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, dst) < 0) {
		snprintf(err, errlen, "rename: %s", strerror(errno));
		unlink(tmp);
		return -1;
	}
	int dfd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		snprintf(err, errlen, "fsync new/: %s", strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1; /* the file may survive: a retry duplicates, never loses */
	}
	close(dfd);
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
	int n = snprintf(base, sizeof(base), "%s/%s/%s/Maildir", root, domain, mailbox);
	if (n < 0 || (size_t)n >= sizeof(base) - 512) {
		snprintf(err, errlen, "path too long");
		return -1;
	}
	if (maildir_prepare(base, err, errlen) < 0)
		return -1;
	struct buf content;
	buf_init(&content, 0);
	int ret = -1;
	if (maildir_render(msg, &content) < 0)
		snprintf(err, errlen, "message too large");
	else
		ret = maildir_store(base, &content, msg, err, errlen);
	buf_free(&content);
	return ret;
}
