/* session.h — smtpd internals shared by session.c, cmd.c, cmd_data.c and
 * server.c. Not a public interface: other components use smtpd.h. */
#ifndef HK_SMTPD_SESSION_H
#define HK_SMTPD_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "dauth/dkim.h"
#include "lib/buf.h"
#include "lib/logrl.h"
#include "lib/net.h"
#include "mail/envelope.h"
#include "policy/policy.h"
#include "policy/policy_smtp.h"
#include "smtpd/datascan.h"
#include "smtpd/parse.h"
#include "smtpd/qclient.h"

struct bufferevent;
struct keyproxy_client;
struct event;
struct event_base;
struct evbuffer;
struct conf;
struct conf_listener;
struct users;
struct aliases;
struct authc;
struct authc_req;
struct tls_server;
struct spool;
struct spool_msg;
struct qmgr;
struct workq;

/* Rejection log lines: per session SMTPD_REJECT_LOG_BURST lines per
 * SMTPD_REJECT_LOG_WINDOW_US, over all sessions SMTPD_REJECT_LOG_ALL a
 * second; the rest are counted and reported as "event=suppressed". */
#define SMTPD_REJECT_LOG_BURST 5
#define SMTPD_REJECT_LOG_WINDOW_US (10 * 1000000ULL)
#define SMTPD_REJECT_LOG_ALL 200
#define SMTPD_REJECT_LOG_ALL_WINDOW_US 1000000ULL
/* Connections refused at accept (limits): 20 lines per 10 s per process. */
#define SMTPD_REFUSE_LOG_BURST 20
#define SMTPD_REFUSE_LOG_WINDOW_US (10 * 1000000ULL)

/* The most that the end-of-data checks may add above the content: what the
 * spool file's gap holds (queue/spool.h SPOOL_CONTENT_GAP). More is
 * refused with 451 rather than written over the content. */
#define SMTPD_TOP_MAX (4096 - 16)

/* Session states (RFC 5321 §4.1.4 command ordering). */
enum smtpd_state {
	SMTPD_S_INIT,    /* greeted, no EHLO/HELO yet */
	SMTPD_S_READY,   /* EHLO/HELO done, no transaction */
	SMTPD_S_MAIL,    /* MAIL accepted, no recipient yet */
	SMTPD_S_RCPT,    /* at least one recipient */
	SMTPD_S_DATA,    /* reading DATA content */
	SMTPD_S_BDAT,    /* reading a BDAT chunk */
	SMTPD_S_COMMIT,  /* waiting for the spool to make the message durable */
	SMTPD_S_AUTH,    /* reading a SASL response line (RFC 4954 §4) */
	SMTPD_S_AUTH_WAIT, /* password check on a worker, or a failure delay */
	SMTPD_S_CLOSING, /* flushing the last reply */
};
#define SMTPD_SB(st) (1u << (st))

/* The server: shared by every session (loop thread only). */
struct smtpd {
	struct event_base *base;
	const struct conf *conf;
	const struct users *users;
	const struct aliases *aliases; /* NULL when there is no aliases file */
	struct qclient *qc;      /* the queue process: message files, commits */
	struct workq *commit_wq; /* sealing message files (write, fdatasync) */
	struct tls_server *tls;  /* NULL when TLS is not configured */
	struct authc *authc;     /* the auth service (auth/authc.h), NULL: no AUTH */
	struct policy_smtp *policy; /* the policy chains (src/policy) */
	struct keyproxy_client *dkim_kc; /* DKIM signing (the keys process), or NULL */
	char auth_line[80];      /* "250-AUTH PLAIN LOGIN ...\r\n" for EHLO */
	struct smtpd_listener *listeners;
	size_t n_listeners;
	/* The local submission socket's settings: no TLS, no AUTH (the
	 * kernel names the caller), relays like an authenticated client. */
	struct conf_listener local_lconf;
	struct smtpd_session *sessions; /* all live sessions */
	size_t n_sessions;
	struct shmcount *conns; /* connection counts of all smtpd processes */
	struct shmrate *rates;  /* rate counters of all smtpd processes */
	struct rstate *redis;   /* state.redis (owned by policy), NULL: none */
	struct server_conn_wait *conn_waits; /* accepts waiting for Redis's rate */
	struct logrl refuse_rl; /* refusals at accept */
	uint64_t next_sid;
	bool shutting_down;
	/* Rejection log lines of all sessions together, per second; what is
	 * held back is reported by reject_rl_ev (session.c). */
	struct logrl reject_rl;
	struct event *reject_rl_ev;
	/* Free space on the spool's file system (queue.min_free_space),
	 * refreshed at most once a second, and the SIZE= declared by the
	 * transactions in progress. */
	uint64_t space_avail;
	uint64_t space_checked_us;
	bool space_low; /* below queue.min_free_space at the last check */
};

/* One transaction, MAIL .. end of data: created whole, destroyed whole. */
struct smtpd_tx {
	struct envelope env; /* qid, sender, recipients, DSN options */
	struct smtp_mail_args mail;
	struct spool_msg *msg;
	struct qclient_file file; /* msg's file from the queue process */
	struct buf body; /* content not yet written to the spool file */
	/* Header fields known only at the end of data (Authentication-Results,
	 * Received-SPF, ...): written above the content at the seal
	 * (spool_msg_prepend), so the first of them is the message's top. */
	struct buf top;
	struct datascan scan;
	uint64_t bdat_left;   /* octets of the current BDAT chunk still to read */
	bool bdat_started;    /* CHUNKING transaction in progress */
	bool bdat_last;       /* the current chunk is the LAST one */
	bool io_failed;       /* a spool write failed: 452 or 451 at the end */
	int io_errno;         /* its errno (ENOSPC: 452 4.3.1) */
	bool data_started;    /* DATA or first BDAT seen: Received written */
	size_t hdr_at;        /* end of our Received in body, for added fields */
	bool hdr_decided;     /* missing Message-ID/Date settled (cmd_data.c) */
	bool hdr_seen;        /* the client's header section looked at (cmd_data.c) */
	struct buf hdrs;      /* a copy of it, for the end-of-data checks */
	struct dauth_tx *dauth; /* SPF, DKIM, DMARC of this message (src/policy), or NULL */
	/* DKIM signing of an authenticated submission (cmd_data.c) */
	bool sign_decided;
	struct dkim_sign *signer;
	struct dkim_sign_key sign_keys[DKIM_SIGS_MAX];
	struct dkim_sign_conf sign_conf;
	size_t sign_fed; /* octets of body already fed to the signer */
	/* ARC sealing of inbound mail (cmd_data.c, policy_dauth.c) */
	bool forwarded;    /* a recipient is an alias target outside local_domains */
	bool seal_decided; /* policy_dauth_seal_begin() asked */
	bool sealing;      /* and a sealer is fed */
	size_t seal_fed;   /* octets of body already fed to the sealer */
	size_t n_rcpt_cmds;   /* RCPTs accepted: limits.recipients counts these */
	size_t n_rcpt_dups;   /* RCPTs repeating a recipient: they count too */
	uint64_t spilled;     /* content octets written to the spool file so far */
	struct smtpd_milter *milter; /* the milters at work on it (data_milter.c) */
	bool milter_done;     /* the milters accepted it and their changes are in */
};

struct smtpd_session {
	struct smtpd *srv;
	struct bufferevent *bev;
	struct event *deadline_ev; /* whole-session deadline */
	struct event *free_ev;     /* deferred free after the last reply */
	struct event *greet_ev;    /* filter.greet_delay */
	bool greeting_pending;     /* no 220 yet: input now is an early talker */
	bool greet_after_connect;  /* the greeting waits for the connect chain (milters) */
	enum smtpd_state state;
	char sid[13];
	char client_addr[NET_ADDRSTR_MAX];
	unsigned client_port;
	struct sockaddr_storage client_ss;
	char listener[NET_ADDRSTR_MAX + 8];
	const struct conf_listener *lconf;
	/* Local submission (<spool>/public/submit): the caller's uid from
	 * SO_PEERCRED, never from what it says (XUID: only the queue's
	 * maildrop pickup, running as our own uid, may name another). */
	bool local;
	uid_t local_uid;
	pid_t local_pid;
	bool tls_active;      /* the handshake completed */
	char tls_info[128];   /* "TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)" */
	char *auth_user;      /* authenticated login, or NULL */
	struct authc_req *auth_req; /* a SASL step out at the auth service */
	uint64_t auth_sess;       /* this session's key at the auth service */
	uint64_t auth_xid;        /* the AUTH exchange in progress, 0 none */
	bool auth_bad_b64;        /* its last response was not base64 */
	int sasl_mech;
	size_t line_cap;      /* size of line[] */
	char helo[256];
	bool esmtp;
	const char *cur_verb; /* for rejection logs */
	char *line;           /* command line buffer, limits.command_line + 1 */
	bool discard_line;    /* skipping the rest of an over-long line */
	bool gone;            /* the client left while a commit was in flight */
	bool bdat_discard_mode;      /* skipping the chunk of a refused BDAT */
	uint64_t bdat_discard;       /* its octets still to skip (RFC 3030 §3) */
	struct smtp_perr bdat_err;   /* the reply once it is skipped */
	enum smtpd_state bdat_prev_state;
	unsigned errors;
	unsigned rcpt_overshoot;   /* 452 4.5.3 replies so far */
	struct logrl reject_rl;    /* this session's rejection log lines */
	const char *reject_what;   /* verb of the lines held back, "*" if several */
	unsigned messages;
	uint64_t started_us;
	struct smtpd_tx *tx;
	/* The policy (src/policy). A command whose verdict is pending holds
	 * the session: no input is read until it comes, so the replies keep
	 * command order (RFC 2920) and pipelined input stays buffered. */
	struct policy_client client;  /* the connection as the checks see it */
	struct policy_smtp_req creq;  /* the connect chain's request */
	struct policy_run *connect_run; /* connect chain in progress */
	struct policy_smtp_req preq;  /* the pending command's request */
	char phelo[256];              /* the EHLO/HELO name it is about */
	bool pesmtp;
	struct smtp_mail_args pmail;  /* the MAIL it is about */
	char psender[MAIL_PATH_MAX + 1];
	struct smtp_rcpt_args prcpt;  /* the RCPT it is about */
	struct policy_run *pending;   /* the command's chain in progress */
	void (*pending_then)(struct smtpd_session *s, const struct policy_verdict *v);
	bool in_policy;               /* inside policy_run(): answered at once */
	enum policy_stage pending_stage; /* of the run pending_then waits for */
	struct smtpd_session *next;
	struct smtpd_session *prev;
};

/* session.c */
/* false when no session could be made (fd closed): the caller releases what
 * it counted for the connection. */
struct ucred;
/* local: the peer's credentials on the local submission socket, else NULL. */
bool smtpd_session_start(struct smtpd *srv, int fd, const struct sockaddr *sa, socklen_t salen,
			 const char *listener, const struct conf_listener *lconf,
			 const struct ucred *local);
void smtpd_session_attach(struct smtpd_session *s);
/* Waiting on a worker or timer: the session must outlive the wait. */
bool smtpd_session_busy(const struct smtpd_session *s);
/* The "with" protocol of RFC 3848 / RFC 6531 §3.7.3 for Received. */
const char *smtpd_session_protocol(const struct smtpd_session *s);
/* Does this session's mail go into the sandbox (issue 13)? A sandbox
 * listener's; never a local submission (sendmail, a released message). */
bool smtpd_session_sandboxed(const struct smtpd_session *s);
void smtpd_session_set_state(struct smtpd_session *s, enum smtpd_state st);
void smtpd_reply(struct smtpd_session *s, int code, const char *enh, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void smtpd_reply_perr(struct smtpd_session *s, const struct smtp_perr *err);
void smtpd_reply_raw(struct smtpd_session *s, const char *text, size_t len);
void smtpd_session_close(struct smtpd_session *s);
void smtpd_session_free(struct smtpd_session **s);
void smtpd_session_resume(struct smtpd_session *s);
/* The milters at the end of data (data_milter.c): wanted when configured
 * and not run on this message yet; start them (state COMMIT), and on
 * acceptance, with their changes applied to the transaction, call cont. */
typedef void smtpd_milter_cont_fn(struct smtpd_session *s);
bool smtpd_milter_wanted(const struct smtpd_session *s);
void smtpd_milter_start(struct smtpd_session *s, smtpd_milter_cont_fn *cont);
void smtpd_milter_cancel(struct smtpd_tx *tx);
/* The transaction ended (RSET, EHLO, refused, committed): SMFIC_ABORT to
 * the milters that still hold it open (data_milter.c). */
void smtpd_milter_tx_end(struct smtpd_session *s);
void smtpd_session_timeouts(struct smtpd_session *s, bool data);
struct smtpd_tx *smtpd_tx_create(struct smtpd_session *s);
void smtpd_tx_reset(struct smtpd_session *s); /* RSET, errors, end of message */
uint64_t smtpd_now_us(void);
/* Report rejection log lines held back by srv->reject_rl (at exit). */
void smtpd_reject_log_flush(struct smtpd *srv);

/* cmd.c: the command table, the single source of truth. */
struct smtpd_cmd {
	const char *name;
	void (*handler)(struct smtpd_session *s, const char *args, size_t len);
	unsigned states;       /* SMTPD_SB() mask of states it is valid in */
	const char *seq_error; /* 503 text when the state is wrong */
};
const struct smtpd_cmd *smtpd_cmd_find(const char *verb, size_t len);
void smtpd_cmd_dispatch(struct smtpd_session *s, const char *line, size_t len);

/* cmd_data.c: DATA, BDAT and the end of a message. */
void smtpd_cmd_data(struct smtpd_session *s, const char *args, size_t len);
void smtpd_cmd_bdat(struct smtpd_session *s, const char *args, size_t len);
/* Consume message content from in. Returns true if it made progress. */
bool smtpd_data_input(struct smtpd_session *s, struct evbuffer *in);

/* cmd_tls.c: STARTTLS and the TLS bufferevent. */
void smtpd_cmd_starttls(struct smtpd_session *s, const char *args, size_t len);
/* Implicit TLS (RFC 8314) at accept: wrap the fresh socket; false on error. */
bool smtpd_tls_wrap_accept(struct smtpd_session *s, int fd);
bool smtpd_tls_offered(const struct smtpd_session *s);
void smtpd_tls_handshake_done(struct smtpd_session *s);
void smtpd_tls_log_error(struct smtpd_session *s);

/* session.c: run the chain of stage on req; then(s, verdict) is called
 * once, now or when the verdict comes (the session reads nothing
 * meanwhile). A session that ends first cancels the run. */
void smtpd_session_policy(struct smtpd_session *s, enum policy_stage stage, void *req,
			  void (*then)(struct smtpd_session *s, const struct policy_verdict *v));

/* cmd_auth.c: AUTH (RFC 4954). */
void smtpd_cmd_auth(struct smtpd_session *s, const char *args, size_t len);
void smtpd_auth_response(struct smtpd_session *s, const char *line, size_t len);
bool smtpd_auth_offered(const struct smtpd_session *s);
void smtpd_auth_abort(struct smtpd_session *s);
/* "250-AUTH PLAIN LOGIN ...\r\n" for EHLO: what the auth service offers. */
const char *smtpd_auth_line(struct smtpd_session *s);

/* server.c */
/* Would a message of need octets (SIZE=, or 0) take the spool's file system
 * below queue.min_free_space? A cached comparison: statvfs at most once a
 * second. */
bool smtpd_server_space_low(struct smtpd *srv, uint64_t need);
void smtpd_server_session_gone(struct smtpd *srv, struct smtpd_session *s);

#endif
