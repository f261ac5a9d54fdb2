/* fsutil.h — small filesystem helpers. Any process. */
#ifndef HK_LIB_FSUTIL_H
#define HK_LIB_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* mkdir -p with mode for each created component; 0 or -1 (errno). */
int fs_mkdir_p(const char *path, mode_t mode);
/* Open directory path for fchown/fstat without following a symbolic link
 * anywhere on the way: each component is opened with O_NOFOLLOW |
 * O_DIRECTORY relative to the one before, and created when missing (the
 * last with mode, the ones before with parent_mode). Returns the fd of the
 * last, or -1 (errno: ELOOP or ENOTDIR where a component is a symbolic
 * link or not a directory); *bad_r then points into path at the component
 * that failed. For root, who must never be led elsewhere by a link that a
 * less trusted user could have made. */
int fs_dir_open_nofollow(const char *path, mode_t parent_mode, mode_t mode, const char **bad_r);
/* Lexically normalized absolute form of path (relative to the working
 * directory; ".", ".." and repeated or trailing slashes resolved, symbolic
 * links not looked at): 0, or -1 (ENAMETOOLONG, or getcwd's errno). */
int fs_path_normalize(const char *path, char *out, size_t outlen);
/* Is normalized path a equal to, or below, normalized path b? */
bool fs_path_within(const char *a, const char *b);
/* write(2) all len octets, retrying on EINTR and short writes; 0 or -1
 * (errno; EIO when write returned 0). */
int fs_write_all(int fd, const void *p, size_t len);
/* pread(2) exactly len octets at off; 0 or -1 (errno; EIO for a file that
 * ends first). */
int fs_pread_all(int fd, void *p, size_t len, uint64_t off);
/* pwrite(2) all len octets at off, retrying on EINTR and short writes; 0 or
 * -1 (errno; EIO when pwrite returned 0). */
int fs_pwrite_all(int fd, const void *p, size_t len, uint64_t off);
/* Give the unnamed (O_TMPFILE) file fd the name dirfd/name, never over an
 * existing one (EEXIST): linkat(AT_EMPTY_PATH), or, once the kernel has
 * refused that (CAP_DAC_READ_SEARCH before Linux 6.10), the descriptor's
 * /proc/self/fd link from then on. 0 or -1 (errno). */
int fs_link_unnamed(int fd, int dirfd, const char *name);

#endif
