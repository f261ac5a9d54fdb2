/* users.h — the users file, Dovecot passwd-file format:
 *   user@domain:{SCHEME}secret:uid:gid:gecos:home:shell:extra
 * Only the first field matters for delivery; the secret is kept for SMTP
 * AUTH (issue 3). Blank lines and lines starting with '#' are ignored.
 * Loaded by the master; the file is trusted (root-owned) but still parsed
 * with bounds. */
#ifndef HK_CONF_USERS_H
#define HK_CONF_USERS_H

#include <stdbool.h>
#include <stddef.h>

struct users;

/* Returns -1 with "file:line: message" in err on a malformed line. */
int users_load(const char *path, struct users **users_r, char *err, size_t errlen);
void users_free(struct users **users);
/* Exact, case-insensitive lookup of "local@domain" (without +tag). */
bool users_exists(const struct users *users, const char *local, const char *domain);
size_t users_count(const struct users *users);

#endif
