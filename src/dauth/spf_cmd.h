/* spf_cmd.h — `hikyaku spf check [-c FILE] IP SENDER [HELO]`: run the SPF
 * check a receiving smtpd would run and print the result and why (every
 * term, lookup and answer). Runs in the command-line process. */
#ifndef HK_DAUTH_SPF_CMD_H
#define HK_DAUTH_SPF_CMD_H

/* argv[0] is "spf". Returns the exit status: 0 the check ran (whatever its
 * result), 1 it could not run (resolver), 2 usage. */
int spf_command(int argc, char **argv);

#endif
