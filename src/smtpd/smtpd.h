/* smtpd.h — the SMTP server component: listeners, sessions, the command
 * engine. The master binds the listeners (smtpd_create) while it may still
 * be root, then hands over the spool and queue manager (smtpd_start) after
 * privileges are dropped. */
#ifndef HK_SMTPD_SMTPD_H
#define HK_SMTPD_SMTPD_H

#include <stddef.h>

struct event_base;
struct conf;
struct users;
struct aliases;
struct spool;
struct qmgr;
struct smtpd;
struct tls_server;
struct authc;

/* users and aliases may be NULL (no file); both outlive the server. */
int smtpd_create(struct event_base *base, const struct conf *conf, const struct users *users,
		 const struct aliases *aliases, struct smtpd **smtpd_r, const char **error_r);
void smtpd_start(struct smtpd *smtpd, struct spool *spool, struct qmgr *qmgr);
/* Install the TLS contexts (owned by smtpd from now on); used at start and
 * on SIGHUP to reload certificates without dropping sessions. */
void smtpd_set_tls(struct smtpd *smtpd, struct tls_server *tls);
/* The client of the auth service (auth/authc.h), owned by smtpd from now
 * on: AUTH runs through it. Without one, AUTH is not offered. */
void smtpd_set_authc(struct smtpd *smtpd, struct authc *authc);
/* Stop accepting; sessions end at their next command boundary. */
void smtpd_shutdown(struct smtpd *smtpd);
size_t smtpd_session_count(const struct smtpd *smtpd);
void smtpd_free(struct smtpd **smtpd);

#endif
