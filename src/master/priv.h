/* priv.h — privileges of hikyaku's processes. */
#ifndef HK_MASTER_PRIV_H
#define HK_MASTER_PRIV_H

#include <sys/types.h>

struct conf;
struct passwd;

/* In a child: become conf->user for good (setgroups, setgid, setuid, and
 * check that setuid(0) fails), then PR_SET_NO_NEW_PRIVS, and die with the
 * master (PR_SET_PDEATHSIG, which a change of user clears: set after it).
 * As a non-root user: no change of user, the rest the same. -1 (printed)
 * when it cannot. */
int priv_drop(const struct conf *conf, pid_t parent);

/* The master, as root: create a service directory (0750) and hand it to
 * the service user without following a symbolic link on the way. */
int priv_own_dir(const char *dir, const struct passwd *pw);

#endif
