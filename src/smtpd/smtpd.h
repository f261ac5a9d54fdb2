/* smtpd.h — the SMTP server component: listeners, sessions, the command
 * engine, in each smtpd process. The master binds the listeners while it
 * is root and hands them to the smtpd processes, which share them. */
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
struct qclient;
struct authc;

struct shmcount;

/* A bound listening socket and the index of its conf->listeners entry, or
 * SMTPD_LISTENER_LOCAL: the local submission socket. */
#define SMTPD_LISTENER_LOCAL 9999
struct smtpd_bound {
	int fd;
	size_t listener;
};

/* The master, as root: bind every listener (an address may give two
 * sockets, IPv4 and IPv6). */
int smtpd_listeners_bind(const struct conf *conf, struct smtpd_bound **b_r, size_t *n_r,
			 const char **error_r);
/* The master: bind <spool>/public/submit (0666) in the directory dfd
 * (<spool>/public, already checked and ours) and append it to *b_r. */
int smtpd_local_bind(int dfd, struct smtpd_bound **b_r, size_t *n_r, const char **error_r);

/* In an smtpd process: users and aliases may be NULL (no file); both, and
 * conns (connection counts shared with the other smtpd processes), outlive
 * the server, which takes over the sockets. */
int smtpd_create(struct event_base *base, const struct conf *conf, const struct users *users,
		 const struct aliases *aliases, const struct smtpd_bound *bound, size_t nbound,
		 struct shmcount *conns, struct smtpd **smtpd_r, const char **error_r);
/* The access lists (taken over: *access is emptied), the rate counters and
 * the greylist (may be NULL) shared by the smtpd processes, which outlive
 * the server. */
struct cidr_list;
struct shmrate;
struct greytab;
/* state.redis: the rates and greylisting ask this connection (the server
 * owns it; lib/rstate.h). */
struct rstate;
void smtpd_set_redis(struct smtpd *smtpd, struct rstate *rs);
void smtpd_set_filter(struct smtpd *smtpd, struct cidr_list *access, struct shmrate *rates,
		      struct greytab *grey);
/* The connection to the queue process (again after the queue restarted). */
void smtpd_set_queue(struct smtpd *smtpd, int fd);
void smtpd_start(struct smtpd *smtpd);
/* What must be opened before the sandbox (the FCrDNS resolver). */
void smtpd_prepare(struct smtpd *smtpd);
struct qclient *smtpd_qclient(struct smtpd *smtpd);
/* Install the TLS contexts (owned by smtpd from now on); used at start and
 * on SIGHUP to reload certificates without dropping sessions. */
void smtpd_set_tls(struct smtpd *smtpd, struct tls_server *tls);
/* A reload: stop accepting for good (close this process's listeners);
 * the sessions go on. */
void smtpd_stop_listening(struct smtpd *smtpd);
/* The client of the auth service (auth/authc.h), owned by smtpd from now
 * on: AUTH runs through it. Without one, AUTH is not offered. */
void smtpd_set_authc(struct smtpd *smtpd, struct authc *authc);
/* The keys process's client (tls/keyproxy.h, not owned): authenticated
 * submissions are DKIM-signed through it with the dkim.sign keys of their
 * From domain. Without one, nothing is signed. */
struct keyproxy_client;
void smtpd_set_dkim_signer(struct smtpd *smtpd, struct keyproxy_client *kc);
/* Stop accepting; sessions end at their next command boundary. */
void smtpd_shutdown(struct smtpd *smtpd);
size_t smtpd_session_count(const struct smtpd *smtpd);
void smtpd_free(struct smtpd **smtpd);

#endif
