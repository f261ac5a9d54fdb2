/* sendmail.h — `hikyaku sendmail`, and the binary called as sendmail,
 * mailq or newaliases: local submission for programs (cron, PHP's mail(),
 * git send-email). Runs as the calling user, unprivileged. */
#ifndef HK_SENDMAIL_SENDMAIL_H
#define HK_SENDMAIL_SENDMAIL_H

/* argv[first..argc) are sendmail's options; prog is "sendmail", "mailq"
 * or "newaliases" (what -bp and -bi also select). Returns a sysexits.h
 * status. */
int sendmail_main(const char *prog, int argc, char **argv, int first);
/* The configuration a local program means when it names none: given, else
 * $HIKYAKU_CONFIG, else /etc/hikyaku/hikyaku.yaml when it exists, else NULL
 * (the embedded development default). For sendmail and mailq. */
const char *sendmail_conf_path(const char *given);

#endif
