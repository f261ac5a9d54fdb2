/* aliases.h — the aliases file: which addresses of our domains are
 * redirected to other (local or remote) addresses.
 *
 *   # comment
 *   key: target, target, ...
 *       target, ...          (a line starting with white space continues)
 *
 * A key is "local@domain" (exact) or "@domain" (catch-all of that domain);
 * targets are full addresses "user@domain". Keys compare without case.
 * Loaded by the master; the file is trusted (root-owned) but parsed with
 * bounds. Expansion is pure: no I/O, no logging.
 *
 * Loops inside this file are refused at RCPT (550 5.4.6). A loop across
 * machines (our alias to a remote alias back to us) is caught by smtpd's
 * Received hop count (limits.received_hops, 554 5.4.6, RFC 5321 §6.3). */
#ifndef HK_CONF_ALIASES_H
#define HK_CONF_ALIASES_H

#include <stdbool.h>
#include <stddef.h>

#define ALIASES_DEPTH_MAX 10     /* nested expansions before "alias loop" */
#define ALIASES_TARGETS_MAX 1000 /* distinct addresses one expansion yields */

struct aliases;

/* Returns -1 with "file:line: message" in err on a malformed line. */
int aliases_load(const char *path, struct aliases **r, char *err, size_t errlen);
void aliases_free(struct aliases **aliases);
size_t aliases_count(const struct aliases *aliases);
/* Is "local@domain" an alias: exact key (the full local part, then without
 * its "+tag"), or the "@domain" catch-all? NULL aliases: false. */
bool aliases_has(const struct aliases *aliases, const char *addr);
/* Like aliases_has() without the catch-all: an exact alias beats a real
 * user, a catch-all only catches what nothing else takes. */
bool aliases_has_exact(const struct aliases *aliases, const char *addr);
/* Expand addr recursively into distinct addresses (case-insensitive), in
 * file order. An address without alias yields itself. A target equal to the
 * key it is listed under means that mailbox itself (expansion stops); a
 * target equal to any other address being expanded is a loop. The catch-all
 * applies to addr only, never to targets (else "@d: x@d" would loop).
 * Returns 0 with a new array (free with aliases_targets_free) or -1 with
 * "alias loop" or "too many alias targets" in *error_r. */
int aliases_expand(const struct aliases *aliases, const char *addr, char ***targets_r, size_t *n_r,
                   const char **error_r);
void aliases_targets_free(char ***targets, size_t n);

#endif
