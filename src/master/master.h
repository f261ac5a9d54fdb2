/* master.h — `hikyaku serve`: the master process and its children.
 *
 *   master (root)  parses the configuration, binds the listeners, creates
 *                  the spool and Maildir roots for the service user, starts
 *                  the children and restarts them with back-off, handles
 *                  signals; parses no network input and holds no secret.
 *   queue (1)      the spool, the scheduler, delivery, bounces, the
 *                  control socket; hands message files to smtpd.
 *   smtpd (N)      sessions, TLS, the command engine; shares the listeners.
 *
 * Each child is this binary again (execve of /proc/self/exe, so it shares
 * no memory with the master), started as root to read the files it alone
 * needs, and then drops to the service user for good. docs/ARCHITECTURE.md
 * has the whole picture. */
#ifndef HK_MASTER_MASTER_H
#define HK_MASTER_MASTER_H

int master_serve(const char *path);
/* The same with the configuration's text given (`hikyaku sandbox`); path
 * NULL. A reload reads the same text again. */
int master_serve_text(const char *path, const char *text);
/* argv[1] is "__child": the entry point of a child process. */
int child_main(int argc, char **argv);
/* argv[1] is "__probe": become a child's sandbox and try to open paths. */
int child_probe_main(int argc, char **argv);

#endif
