/* credentials.h — the SMTP AUTH secrets of the smarthost and of relay/lmtp
 * routes: each file one line "user:password" (delivery.smarthost_credentials,
 * routes[].credentials), documented as root-only (mode 0600).
 *
 * Loaded by the master while it is still root, before the privilege drop,
 * and kept in memory for the queue manager (issue 8: reading them on first
 * use, as the service user, failed for every root-only file). SIGHUP reads
 * them again, now as the service user: a file that cannot be read then
 * keeps what was loaded before, and the error is logged with its errno.
 * The files are trusted (root-owned) but still read with bounds; secrets
 * are never logged and are wiped when replaced or freed. */
#ifndef HK_CONF_CREDENTIALS_H
#define HK_CONF_CREDENTIALS_H

#include <stdbool.h>

struct conf;
struct credentials;

/* Read every credentials file conf names. Never fails as a whole: a file
 * that cannot be read or parsed is logged (event=credentials_error, with
 * strerror for I/O errors) and has no pair until a reload succeeds. */
struct credentials *credentials_load(const struct conf *conf);
/* Read every file again (SIGHUP). A file that fails keeps its previous
 * pair; one that succeeds replaces it in place, so the pointers that
 * credentials_get() returned stay valid. */
void credentials_reload(struct credentials *cr);
/* The pair read from file; false when it has none (never read). The strings
 * live as long as cr. */
bool credentials_get(const struct credentials *cr, const char *file, const char **user_r,
                     const char **pass_r);
void credentials_free(struct credentials **cr);

#endif
