/* priv.c — privileges of hikyaku's processes (priv.h). */
#include "master/priv.h"

#include "conf/conf.h"
#include "lib/fsutil.h"
#include "lib/log.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

int priv_own_dir(const char *dir, const struct passwd *pw)
{
	const char *bad = dir;
	struct stat st;
	int fd = fs_dir_open_nofollow(dir, 0755, 0750, &bad);
	if (fd < 0) {
		int err = errno;
		fprintf(stderr, "hikyaku: %s: %s at \"%.*s\"%s\n", dir, strerror(err),
			(int)(strcspn(bad, "/") + (size_t)(bad - dir)), dir,
			err == ELOOP || err == ENOTDIR
			    ? ": a symbolic link or a file where a directory is expected; "
			      "root follows no link here, give the real path"
			    : "");
		return -1;
	}
	int rc = fstat(fd, &st);
	if (rc == 0 && (st.st_uid != pw->pw_uid || st.st_gid != pw->pw_gid))
		rc = fchown(fd, pw->pw_uid, pw->pw_gid);
	if (rc < 0)
		fprintf(stderr, "hikyaku: %s: %s\n", dir, strerror(errno));
	close(fd);
	return rc;
}
