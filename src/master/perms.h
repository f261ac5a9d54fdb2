/* perms.h — ownership and modes of hikyaku's files: what `hikyaku check`
 * reports and `hikyaku fix-permissions` repairs. */
#ifndef HK_MASTER_PERMS_H
#define HK_MASTER_PERMS_H

#include <stdio.h>

struct conf;

/* Checks the private keys (TLS), the certificates, the users file, the
 * spool tree and the top of the Maildir tree against the service user
 * (conf->user; without one, whoever runs it). Lines "error: ..." and
 * "warning: ..." go to out; returns the number of errors, and adds the
 * warnings to *warnings_r. */
int perms_check(const struct conf *conf, FILE *out, int *warnings_r);

/* As root: gives the spool and Maildir trees to the service user (and
 * its group) and takes group and other write permission (and set-id and
 * execute bits of files) away, walking by descriptors: a symbolic link,
 * a hard link or a directory swapped in meanwhile is left alone, never
 * followed. Returns 0 or -1 (an error, said on out). */
int perms_fix(const struct conf *conf, FILE *out);

#endif
