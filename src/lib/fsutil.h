/* fsutil.h — small filesystem helpers. Any process. */
#ifndef HK_LIB_FSUTIL_H
#define HK_LIB_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* mkdir -p with mode for each created component; 0 or -1 (errno). */
int fs_mkdir_p(const char *path, mode_t mode);
/* write(2) all len octets, retrying on EINTR and short writes; 0 or -1
 * (errno; EIO when write returned 0). */
int fs_write_all(int fd, const void *p, size_t len);
/* pread(2) exactly len octets at off; 0 or -1 (errno; EIO for a file that
 * ends first). */
int fs_pread_all(int fd, void *p, size_t len, uint64_t off);

#endif
