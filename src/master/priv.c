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

int priv_drop(const struct conf *conf, pid_t parent)
{
	if (geteuid() == 0) {
		if (conf->user[0] == '\0') {
			fprintf(stderr, "hikyaku: refusing to run as root without user: in the "
					"configuration\n");
			return -1;
		}
		struct passwd *pw = getpwnam(conf->user);
		if (pw == NULL) {
			fprintf(stderr, "hikyaku: user %s does not exist\n", conf->user);
			return -1;
		}
		if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
			fprintf(stderr, "hikyaku: cannot drop privileges: %s\n", strerror(errno));
			return -1;
		}
		if (setuid(0) == 0) {
			fprintf(stderr, "hikyaku: privileges were not dropped\n");
			return -1;
		}
		log_info("event=privileges user=%s uid=%u", conf->user, (unsigned)pw->pw_uid);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		fprintf(stderr, "hikyaku: PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
		return -1;
	}
	if (parent > 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent) /* it died before we asked */
			return -1;
	}
	return 0;
}

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
