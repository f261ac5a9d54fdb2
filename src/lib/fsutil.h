/* fsutil.h — small filesystem helpers. Any process. */
#ifndef HK_LIB_FSUTIL_H
#define HK_LIB_FSUTIL_H

#include <sys/types.h>

/* mkdir -p with mode for each created component; 0 or -1 (errno). */
int fs_mkdir_p(const char *path, mode_t mode);

#endif
