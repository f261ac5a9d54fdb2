/* sbxcmd.h — `hikyaku sandbox [--smtp A] [--http A] [--dir D]` and
 * `hikyaku sandbox inboxes` (issue 13). */
#ifndef HK_MASTER_SBXCMD_H
#define HK_MASTER_SBXCMD_H

struct buf;

/* argv[first..]: the words after "sandbox". Exit status. */
int sbxcmd_main(int argc, char **argv, int first);
/* The YAML `hikyaku sandbox` runs, appended to out: 0, or -1 for an
 * argument that cannot be written into it. */
int sbxcmd_config_text(const char *smtp, const char *http, const char *dir, struct buf *out);

#endif
