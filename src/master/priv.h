/* priv.h — privileges of hikyaku's processes. */
#ifndef HK_MASTER_PRIV_H
#define HK_MASTER_PRIV_H

#include <sys/types.h>

struct conf;
struct passwd;

/* The master, as root: create a service directory (0750) and hand it to
 * the service user without following a symbolic link on the way. */
int priv_own_dir(const char *dir, const struct passwd *pw);

#endif
