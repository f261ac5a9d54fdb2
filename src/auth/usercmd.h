/* usercmd.h — `hikyaku user`: manage the users file (Dovecot passwd-file
 * format, see auth/users.h) from the command line.
 *
 *   hikyaku user add NAME [--scheme SCHEME] (-f USERSFILE | -c CONFIG)
 *   hikyaku user passwd NAME [--scheme SCHEME] (-f USERSFILE | -c CONFIG)
 *   hikyaku user del NAME (-f USERSFILE | -c CONFIG)
 *   hikyaku user list (-f USERSFILE | -c CONFIG)
 *
 * Passwords come from the terminal (no echo, asked twice) or, when stdin is
 * not a terminal, from one line of stdin; never from argv. Runs as the
 * operator (usually root), not in a daemon. */
#ifndef HK_AUTH_USERCMD_H
#define HK_AUTH_USERCMD_H

/* argv[0] is "user". Returns the process exit status: 0 done, 1 failure
 * (reason on stderr), 2 usage error. */
int auth_user_command(int argc, char **argv);

#endif
