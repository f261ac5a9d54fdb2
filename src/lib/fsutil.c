/* fsutil.c — small filesystem helpers. Any process. */
#include "lib/fsutil.h"

#include <errno.h>
#include <limits.h>
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
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -1;
		buf[i] = c;
	}
	return 0;
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
