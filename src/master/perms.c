/* perms.c — ownership and modes (perms.h), for `hikyaku check` and
 * `hikyaku fix-permissions` (like `postfix set-permissions`), run from the
 * command line, usually as root.
 *
 * Hostile input: the spool and Maildir trees. The service user owns them
 * and everything in them, so anything there may be a symbolic link to
 * /etc/shadow, a hard link to it, or a directory swapped for a link
 * between two system calls. They are walked by descriptors only: each
 * entry is looked at with fstatat(AT_SYMLINK_NOFOLLOW), opened relative to
 * its directory's descriptor with O_NOFOLLOW, checked to be the same inode
 * that was looked at, and changed through that descriptor (fchown,
 * fchmod). A path is only ever built for messages. Symbolic links,
 * files with more than one link and sockets are left alone, and so is
 * what is inside a sticky directory (a drop box: the maildrop's files
 * belong to the local users who wrote them); the walk stays on the root's
 * file system. The configuration is trusted. */
#include "master/perms.h"

#include "conf/conf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PERMS_DEPTH_MAX 32          /* deeper than any spool or Maildir++ tree */
#define PERMS_REPORT_MAX 10         /* lines about one tree; then a count */
#define PERMS_CHECK_MAILDIR_DEPTH 3 /* check: root/domain/user/Maildir */

struct perms_walk {
	FILE *out;
	bool fix;
	uid_t uid;
	gid_t gid;
	const char *owner; /* the service user's name, for messages */
	dev_t dev;         /* the root's file system */
	unsigned max_depth;
	unsigned reported;   /* lines printed about this tree */
	unsigned bad;        /* entries not as they should be (check) */
	unsigned changed;    /* entries changed (fix) */
	unsigned skipped;    /* links left alone */
	unsigned failed;     /* changes that failed (fix) */
	char path[PATH_MAX]; /* for messages only */
};

static __attribute__((format(printf, 2, 3))) void perms_say(struct perms_walk *w, const char *fmt,
                                                            ...)
{
	va_list ap;
	w->reported++;
	if (w->reported > PERMS_REPORT_MAX)
		return;
	va_start(ap, fmt);
	vfprintf(w->out, fmt, ap);
	va_end(ap);
	fputc('\n', w->out);
}

/* Group and other write never; for files also no set-id or execute. */
static mode_t perms_want_mode(mode_t mode)
{
	if (S_ISDIR(mode) && (mode & S_ISVTX))
		return mode & 07777; /* a drop box: as its maker wants it */
	mode_t m = mode & 07777 & ~(mode_t)(S_IWGRP | S_IWOTH);
	if (!S_ISDIR(mode))
		m &= ~(mode_t)(S_ISUID | S_ISGID | S_IXUSR | S_IXGRP | S_IXOTH);
	return m;
}

/* One opened entry (fd), already verified to be the inode looked at. */
static void perms_entry(struct perms_walk *w, int fd, const struct stat *st)
{
	mode_t want = perms_want_mode(st->st_mode);
	bool own_ok = st->st_uid == w->uid && st->st_gid == w->gid;
	bool mode_ok = (st->st_mode & 07777) == want;
	if (own_ok && mode_ok)
		return;
	if (!w->fix) {
		w->bad++;
		perms_say(w, "error: %s is owned by %u:%u mode %04o, not by %s (%u:%u) mode %04o",
		          w->path, (unsigned)st->st_uid, (unsigned)st->st_gid,
		          (unsigned)(st->st_mode & 07777), w->owner, (unsigned)w->uid,
		          (unsigned)w->gid, (unsigned)want);
		return;
	}
	if ((!own_ok && fchown(fd, w->uid, w->gid) < 0) || (!mode_ok && fchmod(fd, want) < 0)) {
		w->failed++;
		perms_say(w, "error: %s: %s", w->path, strerror(errno));
		return;
	}
	w->changed++;
}

static void perms_walk_dir(struct perms_walk *w, int dfd, unsigned depth);

/* name inside dfd: looked at without following, opened without following,
 * and the same inode, or left alone. */
static void perms_walk_entry(struct perms_walk *w, int dfd, const char *name, unsigned depth)
{
	struct stat st, fst;
	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT) /* gone meanwhile: a delivered message */
			perms_say(w, "error: %s: %s", w->path, strerror(errno));
		return;
	}
	if (S_ISLNK(st.st_mode)) {
		w->skipped++;
		perms_say(w, "warning: %s is a symbolic link: left alone, not followed", w->path);
		return;
	}
	if (st.st_dev != w->dev) {
		w->skipped++;
		perms_say(w, "warning: %s is on another file system: left alone", w->path);
		return;
	}
	if (S_ISREG(st.st_mode) && st.st_nlink > 1) {
		/* The queue and Maildir deliveries leave one name per file. */
		w->skipped++;
		perms_say(w,
		          "warning: %s has %lu hard links: left alone (it may be another "
		          "file of the system)",
		          w->path, (unsigned long)st.st_nlink);
		return;
	}
	if (S_ISSOCK(st.st_mode))
		return; /* made again at each start, by whoever serves it */
	if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) {
		/* A FIFO or a device: not opened; a link swapped in is
		 * changed itself, never what it points to. */
		if (st.st_uid == w->uid && st.st_gid == w->gid)
			return;
		if (!w->fix) {
			w->bad++;
			perms_say(w, "error: %s is owned by %u:%u, not by %s", w->path,
			          (unsigned)st.st_uid, (unsigned)st.st_gid, w->owner);
		} else if (fchownat(dfd, name, w->uid, w->gid, AT_SYMLINK_NOFOLLOW) < 0) {
			w->failed++;
			perms_say(w, "error: %s: %s", w->path, strerror(errno));
		} else {
			w->changed++;
		}
		return;
	}
	int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
	            (S_ISDIR(st.st_mode) ? O_DIRECTORY : 0);
	int fd = openat(dfd, name, flags);
	if (fd < 0) {
		if (errno != ENOENT)
			perms_say(w, "error: %s: %s", w->path, strerror(errno));
		return;
	}
	if (fstat(fd, &fst) < 0 || fst.st_dev != st.st_dev || fst.st_ino != st.st_ino ||
	    (fst.st_mode & S_IFMT) != (st.st_mode & S_IFMT) ||
	    (S_ISREG(fst.st_mode) && fst.st_nlink > 1)) {
		w->skipped++;
		perms_say(w, "warning: %s changed while it was looked at: left alone", w->path);
		close(fd);
		return;
	}
	perms_entry(w, fd, &fst);
	/* A sticky directory is a drop box (the maildrop, 1733): each file
	 * in it belongs to the local user who wrote it. */
	if (S_ISDIR(fst.st_mode) && !(fst.st_mode & S_ISVTX))
		perms_walk_dir(w, fd, depth + 1);
	close(fd);
}

static void perms_walk_dir(struct perms_walk *w, int dfd, unsigned depth)
{
	if (depth >= w->max_depth) {
		if (w->fix)
			perms_say(w, "warning: %s: deeper than %u levels, not walked", w->path,
			          w->max_depth);
		return;
	}
	int dup_fd = dup(dfd);
	DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
	if (d == NULL) {
		perms_say(w, "error: %s: %s", w->path, strerror(errno));
		if (dup_fd >= 0)
			close(dup_fd);
		return;
	}
	size_t len = strlen(w->path);
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(w->path + len, sizeof(w->path) - len, "/%s", de->d_name);
		perms_walk_entry(w, dfd, de->d_name, depth);
		w->path[len] = '\0';
	}
	closedir(d);
}

/* Opens an existing directory by a trusted path, following no symbolic
 * link on the way (the service user may own a parent). -1 with errno;
 * ENOENT: it is not there (the master creates it at start). */
static int perms_open_root(const char *path)
{
	int dfd = open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	const char *p = path;
	while (dfd >= 0) {
		p += strspn(p, "/");
		if (*p == '\0')
			return dfd;
		size_t len = strcspn(p, "/");
		char name[NAME_MAX + 1];
		if (len > NAME_MAX) {
			close(dfd);
			errno = ENAMETOOLONG;
			return -1;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		p += len;
		int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		int err = errno;
		close(dfd);
		errno = err;
		dfd = fd;
	}
	return -1;
}

/* A root and, below it, max_depth levels. Returns the errors found (check)
 * or that a change failed (fix). */
static unsigned perms_tree(struct perms_walk *w, const char *key, const char *path,
                           unsigned max_depth, int *warnings_r)
{
	if (path[0] == '\0')
		return 0;
	int fd = perms_open_root(path);
	if (fd < 0) {
		if (errno == ENOENT) {
			fprintf(w->out,
			        "info: %s %s does not exist yet: the master creates it at "
			        "start (0750, owned by %s)\n",
			        key, path, w->owner);
			return 0;
		}
		fprintf(w->out, "error: %s %s: %s%s\n", key, path, strerror(errno),
		        errno == ELOOP || errno == ENOTDIR
		            ? " (a symbolic link or a file where a directory is expected: "
		              "root follows no link here; give the real path)"
		            : "");
		return 1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		fprintf(w->out, "error: %s %s: %s\n", key, path, strerror(errno));
		close(fd);
		return 1;
	}
	w->dev = st.st_dev;
	w->max_depth = max_depth;
	w->reported = w->bad = w->changed = w->skipped = w->failed = 0;
	snprintf(w->path, sizeof(w->path), "%s", path);
	perms_entry(w, fd, &st);
	perms_walk_dir(w, fd, 0);
	close(fd);
	if (w->reported > PERMS_REPORT_MAX)
		fprintf(w->out, "%s %s: %u more lines not shown\n", key, path,
		        w->reported - PERMS_REPORT_MAX);
	if (w->fix)
		fprintf(w->out, "%s %s: %u changed, %u links left alone, %u failed\n", key, path,
		        w->changed, w->skipped, w->failed);
	else if (w->bad > 0)
		fprintf(w->out,
		        "error: %s %s: %u entries not owned by %s as they should be: "
		        "run hikyaku fix-permissions\n",
		        key, path, w->bad, w->owner);
	*warnings_r += (int)w->skipped;
	return w->fix ? w->failed : w->bad;
}

/* The service user: conf->user, else whoever runs this. */
static int perms_owner(const struct conf *conf, struct perms_walk *w, FILE *out)
{
	if (conf->user[0] == '\0') {
		w->uid = geteuid();
		w->gid = getegid();
		w->owner = "the user running hikyaku";
		return 0;
	}
	struct passwd *pw = getpwnam(conf->user);
	if (pw == NULL) {
		fprintf(out,
		        "error: user: %s does not exist (create it: adduser --system "
		        "--group %s)\n",
		        conf->user, conf->user);
		return -1;
	}
	if (pw->pw_uid == 0) {
		fprintf(out, "error: user: %s is root; give an unprivileged user\n", conf->user);
		return -1;
	}
	w->uid = pw->pw_uid;
	w->gid = pw->pw_gid;
	w->owner = conf->user;
	return 0;
}

/* A file root reads before handing anything over: a private key, a
 * certificate, the users file. Writable by anyone but root, it can be
 * replaced; a secret readable by others is out. */
static int perms_check_file(const struct conf *conf, const char *what, const char *path,
                            bool secret, bool others_read_is_error, FILE *out, int *warnings_r)
{
	struct stat st;
	if (path == NULL || path[0] == '\0')
		return 0;
	if (stat(path, &st) < 0) {
		fprintf(out, "error: %s %s: %s\n", what, path, strerror(errno));
		return 1;
	}
	unsigned mode = (unsigned)(st.st_mode & 07777);
	if (!S_ISREG(st.st_mode)) {
		fprintf(out, "error: %s %s is not a regular file\n", what, path);
		return 1;
	}
	int n = 0;
	uid_t want_uid = conf->user[0] != '\0' ? 0 : geteuid();
	if (st.st_uid != want_uid && st.st_uid != 0) {
		fprintf(out,
		        "error: %s %s is owned by uid %u, not root: its owner can replace "
		        "it (chown root %s)\n",
		        what, path, (unsigned)st.st_uid, path);
		n++;
	}
	if (mode & (S_IWGRP | S_IWOTH)) {
		fprintf(out,
		        "error: %s %s is writable by group or others (mode %04o): chmod "
		        "go-w %s\n",
		        what, path, mode, path);
		n++;
	}
	if (secret && (mode & S_IROTH)) {
		if (others_read_is_error) {
			fprintf(out,
			        "error: %s %s is readable by others (mode %04o): chmod o-r %s "
			        "(0600, or 0640 for a group that needs it)\n",
			        what, path, mode, path);
			n++;
		} else {
			fprintf(out,
			        "warning: %s %s is readable by others (mode %04o): its "
			        "password hashes can be copied; chmod 600 %s\n",
			        what, path, mode, path);
			(*warnings_r)++;
		}
	}
	return n;
}

int perms_check(const struct conf *conf, FILE *out, int *warnings_r)
{
	struct perms_walk w = {.out = out, .fix = false};
	int n = 0;
	if (perms_owner(conf, &w, out) < 0)
		return 1;
	for (size_t i = 0; i < conf->tls.n_certs; i++) {
		n += perms_check_file(conf, "tls key", conf->tls.certs[i].key, true, true, out,
		                      warnings_r);
		n += perms_check_file(conf, "tls certificate", conf->tls.certs[i].cert, false,
		                      false, out, warnings_r);
	}
	/* DKIM keys: private like TLS keys (conf_check_dkim also checks their
	 * type and size) */
	for (size_t i = 0; i < conf->dkim.n_sign; i++)
		n += perms_check_file(conf, "dkim key", conf->dkim.sign[i].key, true, true, out,
		                      warnings_r);
	n += perms_check_file(conf, "users_file", conf->users_file, true, false, out, warnings_r);
	n += (int)perms_tree(&w, "spool_dir", conf->spool_dir, PERMS_DEPTH_MAX, warnings_r);
	n += (int)perms_tree(&w, "maildir_root", conf->maildir_root, PERMS_CHECK_MAILDIR_DEPTH,
	                     warnings_r);
	return n;
}

int perms_fix(const struct conf *conf, FILE *out)
{
	struct perms_walk w = {.out = out, .fix = true};
	int warnings = 0;
	if (geteuid() != 0) {
		fprintf(out, "error: fix-permissions changes owners: run it as root\n");
		return -1;
	}
	if (conf->user[0] == '\0') {
		fprintf(out, "error: no user: in the configuration: nothing to give the spool "
		             "and the Maildirs to\n");
		return -1;
	}
	if (perms_owner(conf, &w, out) < 0)
		return -1;
	unsigned failed = perms_tree(&w, "spool_dir", conf->spool_dir, PERMS_DEPTH_MAX, &warnings);
	failed += perms_tree(&w, "maildir_root", conf->maildir_root, PERMS_DEPTH_MAX, &warnings);
	return failed == 0 ? 0 : -1;
}
