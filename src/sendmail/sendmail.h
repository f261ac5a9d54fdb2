/* sendmail.h — `hikyaku sendmail`, and the binary called as sendmail,
 * mailq or newaliases: local submission for programs (cron, PHP's mail(),
 * git send-email). Runs as the calling user, unprivileged. */
#ifndef HK_SENDMAIL_SENDMAIL_H
#define HK_SENDMAIL_SENDMAIL_H

/* argv[first..argc) are sendmail's options; prog is "sendmail", "mailq"
 * or "newaliases" (what -bp and -bi also select). Returns a sysexits.h
 * status. */
int sendmail_main(const char *prog, int argc, char **argv, int first);

#endif
