/* users.h — the users file, Dovecot passwd-file format:
 *   user@domain:{SCHEME}secret:uid:gid:gecos:home:shell:extra
 * Only the first field matters for delivery; the secret is kept for SMTP
 * AUTH (issue 3). Blank lines and lines starting with '#' are ignored.
 * Loaded by the master; the file is trusted (root-owned) but still parsed
 * with bounds. */
#ifndef HK_AUTH_USERS_H
#define HK_AUTH_USERS_H

#include <stdbool.h>
#include <stddef.h>

struct users;

/* Returns -1 with "file:line: message" in err on a malformed line. */
int users_load(const char *path, struct users **users_r, char *err, size_t errlen);
void users_free(struct users **users);
/* Exact, case-insensitive lookup of "local@domain" (without +tag). */
bool users_exists(const struct users *users, const char *local, const char *domain);
size_t users_count(const struct users *users);
/* How many users have a "{scheme}..." secret (case-insensitive scheme name):
 * `hikyaku check` warns when auth.mechanisms offers CRAM-MD5 or
 * SCRAM-SHA-256 to a file where some users have no secret of that scheme. */
size_t users_count_scheme(const struct users *users, const char *scheme);
/* The stored secret of "local@domain" (case-insensitive, like users_exists):
 * the second field as written ("{SCHEME}..."), "" when the line has none, or
 * NULL for an unknown user. Owned by the table: valid until users_free(). */
const char *users_secret(const struct users *users, const char *user);
/* The secret of the i-th user (0 <= i < users_count(), in no stated order),
 * NULL when its line has none: for the work smtpd prepares once per file
 * (auth/sasl.c). Owned by the table. */
const char *users_secret_at(const struct users *users, size_t i);
/* Is name[0..len) acceptable as the first field of a users line: exactly one
 * '@', non-empty local part (at most 64 octets) and domain (at most 255), no
 * space, control character or ':'? Returns NULL if so, else the reason. */
const char *users_name_check(const char *name, size_t len);

#endif
