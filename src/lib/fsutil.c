/* fsutil.c — small filesystem helpers. Any process. */
#include "lib/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t len = strlen(path);
	if (len == 0 || len >= sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(buf, path, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		char c = buf[i];
		buf[i] = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST) {
			/* "." or a directory in a parent we may not write:
			 * mkdir says EACCES even though it exists. */
			struct stat st;
			int err = errno;
			if (stat(buf, &st) < 0 || !S_ISDIR(st.st_mode)) {
				errno = err;
				return -1;
			}
		}
		buf[i] = c;
	}
	return 0;
}

int fs_dir_open_nofollow(const char *path, mode_t parent_mode, mode_t mode, const char **bad_r)
{
	const int flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
	const char *p = path;
	int dfd = open(path[0] == '/' ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	*bad_r = path;
	while (dfd >= 0) {
		while (*p == '/')
			p++;
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
		*bad_r = p;
		p += len;
		bool last = p[strspn(p, "/")] == '\0';
		int fd = openat(dfd, name, flags);
		if (fd < 0 && errno == ENOENT &&
		    (mkdirat(dfd, name, last ? mode : parent_mode) == 0 || errno == EEXIST))
			fd = openat(dfd, name, flags);
		int err = errno;
		close(dfd);
		errno = err;
		dfd = fd;
	}
	return -1;
}

int fs_path_normalize(const char *path, char *out, size_t outlen)
{
	char cwd[PATH_MAX];
	size_t n = 0;
	if (outlen < 2) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (path[0] != '/') {
		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return -1;
		if (fs_path_normalize(cwd, out, outlen) < 0)
			return -1;
		n = strcmp(out, "/") == 0 ? 0 : strlen(out);
	}
	for (const char *p = path;;) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		size_t len = strcspn(p, "/");
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--; /* the slash before it; ".." of "/" is "/" */
		} else if (!(len == 1 && p[0] == '.')) {
			if (n + 1 + len + 1 > outlen) {
				errno = ENAMETOOLONG;
				return -1;
			}
			out[n++] = '/';
			memcpy(out + n, p, len);
			n += len;
		}
		p += len;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	return 0;
}

bool fs_path_within(const char *a, const char *b)
{
	size_t bl = strlen(b);
	if (strcmp(b, "/") == 0)
		return true;
	return strncmp(a, b, bl) == 0 && (a[bl] == '\0' || a[bl] == '/');
}

int fs_write_all(int fd, const void *p, size_t len)
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

int fs_pread_all(int fd, void *p, size_t len, uint64_t off)
{
	unsigned char *q = p;
	while (len > 0) {
		ssize_t n = pread(fd, q, len, (off_t)off);
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
		off += (uint64_t)n;
	}
	return 0;
}

int fs_pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
	const unsigned char *q = p;
	while (len > 0) {
		ssize_t n = pwrite(fd, q, len, (off_t)off);
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
		off += (uint64_t)n;
	}
	return 0;
}

static atomic_bool fs_empty_path_refused;

int fs_link_unnamed(int fd, int dirfd, const char *name)
{
	if (!atomic_load_explicit(&fs_empty_path_refused, memory_order_relaxed)) {
		if (linkat(fd, "", dirfd, name, AT_EMPTY_PATH) == 0)
			return 0;
		if (errno != ENOENT && errno != EPERM)
			return -1;
		atomic_store_explicit(&fs_empty_path_refused, true, memory_order_relaxed);
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return linkat(AT_FDCWD, path, dirfd, name, AT_SYMLINK_FOLLOW);
}
