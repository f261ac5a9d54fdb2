/* dmarcrep_cmd.h — `hikyaku dmarc report|stats` (src/dauth/dmarcrep_cmd.c). */
#ifndef HK_DAUTH_DMARCREP_CMD_H
#define HK_DAUTH_DMARCREP_CMD_H

/* argv[0] is "dmarc". Exit status: 0 done; 1 an error (a day file that
 * cannot be read); 2 usage or configuration error; 3 some reports must be
 * sent again later (the daemon is down, a DNS failure). */
int dmarcrep_command(int argc, char **argv);

#endif
