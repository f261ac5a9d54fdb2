/* dkim_cmd.h — `hikyaku dkim keygen|check` (src/dauth/dkim_cmd.c). */
#ifndef HK_DAUTH_DKIM_CMD_H
#define HK_DAUTH_DKIM_CMD_H

/* argv[0] is "dkim". Exit status: 0 ok; 1 the published record is missing,
 * revoked or another key (check), or the key could not be made (keygen);
 * 2 usage or configuration error; 3 DNS failure (try again). */
int dkim_command(int argc, char **argv);

#endif
