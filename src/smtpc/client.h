/* client.h — the one SMTP/LMTP client (RFC 5321, RFC 2033), used for MX
 * delivery, smarthost relaying and LMTP. Event-driven on libevent
 * bufferevents (with bufferevent_openssl for STARTTLS); never blocks.
 * Runs in the queue manager. Every reply is hostile: parsed by reply.c with
 * bounds, every wait has a timeout (RFC 5321 §4.5.3.2).
 *
 * One smtpc_deliver() call delivers one message to one destination: it
 * tries the addresses in order (a connection failure or a 4xx greeting
 * moves to the next), then EHLO (HELO if EHLO is refused; LHLO for LMTP),
 * STARTTLS per policy, AUTH if credentials are given, MAIL with SIZE /
 * BODY / SMTPUTF8 / DSN parameters when offered, one RCPT per recipient,
 * DATA (dot-stuffed) and QUIT, pipelined when PIPELINING is offered. Each
 * recipient gets its own result (for LMTP, from its own post-DATA reply).
 * With dest->reuse_key, the connection may instead be kept for the next
 * message to the same destination (a small idle cache, closed after an
 * idle timeout). */
#ifndef HK_SMTPC_CLIENT_H
#define HK_SMTPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct smtpc;

enum smtpc_tls {
	SMTPC_TLS_NONE,    /* never STARTTLS */
	SMTPC_TLS_MAY,     /* STARTTLS when offered, no verification; plaintext otherwise */
	SMTPC_TLS_ENCRYPT, /* STARTTLS required, no verification */
	SMTPC_TLS_VERIFY,  /* STARTTLS required, certificate chain + host name verified */
};

struct smtpc_target {
	struct sockaddr_storage addr; /* port set */
	socklen_t addrlen;
	char host[256]; /* the name for SNI and verification, "" for none */
};

/* A route's "host:port" or "[v6]:port" (target.c): 1 for a numeric host
 * (t is ready), 0 for a name (t->host and the port in t->addr are set, the
 * address is to be looked up), -1 for a malformed address. */
int smtpc_target_parse(const char *addr, struct smtpc_target *t);

struct smtpc_dest {
	const struct smtpc_target *targets; /* tried in order */
	size_t ntargets;
	const char *unix_path; /* LMTP over a unix socket instead of targets */
	bool lmtp;
	enum smtpc_tls tls;
	const char *helo_name;
	const char *auth_user; /* NULL: no AUTH (smarthost credentials otherwise) */
	const char *auth_pass;
	uint64_t connect_timeout_ms;  /* default 30 s when 0 */
	uint64_t command_timeout_ms;  /* greeting, EHLO, MAIL, RCPT: default 5 min */
	uint64_t data_timeout_ms;     /* after the final dot: default 10 min */
	/* Connection reuse (issue 4): NULL for none. Otherwise, after a
	 * transaction that leaves the server in a known state the connection is
	 * kept idle instead of QUIT, and a later delivery with a reuse_key whose
	 * first target is that server's address (for unix_path: the same key
	 * and path), with the same tls, auth_user, lmtp and helo_name (and, for
	 * SMTPC_TLS_VERIFY, target host), takes it (newest first) instead of
	 * connecting; a cached connection found dead before the MAIL reply is
	 * replaced by a fresh one transparently. */
	const char *reuse_key;
};

struct smtpc_msg {
	const char *sender; /* "" for the null sender */
	const char *const *rcpts;
	const unsigned *notify;     /* SMTP_NOTIFY_* per recipient (mail/smtp_params.h), or NULL */
	const char *const *orcpts;  /* per recipient or NULL entries, or NULL */
	size_t nrcpts;
	const char *envid;          /* DSN ENVID or NULL */
	unsigned ret;               /* enum smtp_ret */
	unsigned body;              /* enum smtp_body */
	bool smtputf8;              /* the message needs SMTPUTF8 (RFC 6531) */
	const unsigned char *data;  /* the message, CRLF lines, not dot-stuffed */
	size_t len;
	/* Or, with data NULL and len > 0: len octets of fd from fd_off (the
	 * spool file). They are read SMTPC_WINDOW octets at a time on the
	 * client's work queue (smtpc_set_workq), never on the loop, and sent
	 * as the socket drains: a session holds about two windows of the
	 * message whatever its size. fd must stay open until cb has run
	 * (or the session is cancelled: a read still in flight then reads
	 * into a window that is thrown away). */
	int fd;
	uint64_t fd_off;
	/* A recipient probe (smtpd's verify_recipients, as Postfix's address
	 * verification): MAIL and the RCPTs only, never DATA; each recipient
	 * gets the reply to its RCPT, then the transaction ends (RSET or QUIT). */
	bool probe;
};

struct smtpc_rcpt_result {
	bool ok;          /* accepted (and, for LMTP, delivered) */
	bool permanent;   /* 5xx: do not retry */
	int code;         /* 0 when never sent */
	/* The result is the reply to this recipient's own RCPT, not the
	 * message-level outcome (greeting, EHLO, MAIL, STARTTLS, connection,
	 * a local refusal) shared by every recipient without one. */
	bool answered;
	char enh[16];
	char text[512];
};

struct smtpc_result {
	/* Message-level outcome; when not ok every recipient without its own
	 * result shares it. */
	bool connected;   /* a server greeted us */
	bool permanent;   /* e.g. 5xx to MAIL or DATA, SMTPUTF8 not offered */
	int code;         /* the deciding reply, 0 for a local/network error */
	char enh[16];
	char text[512];   /* reply text or our own description of the error */
	char remote_mta[256]; /* host name of the server that answered */
	char remote_addr[64];
	char tls_info[128]; /* "TLSv1.3:TLS_AES_256_GCM_SHA384", "" if plaintext */
	/* The server of the transaction offered DSN (RFC 3461 §3), so MAIL and
	 * RCPT carried RET, ENVID, NOTIFY and ORCPT: for SMTP, reporting a
	 * successful delivery is now its job (§5.2.1); without it, a NOTIFY=SUCCESS
	 * notice of ours says "relayed" (§5.2.2). Set when MAIL is sent. */
	bool dsn_offered;
	/* When MAIL was sent (Unix time, us; 0: never): what came before is
	 * connection setup, what came after transfer (Postfix's delays=c/d). */
	uint64_t mail_us;
	struct smtpc_rcpt_result *rcpts; /* nrcpts entries */
	size_t nrcpts;
};

typedef void smtpc_done_cb(const struct smtpc_result *res, void *arg);

/* ca_file: PEM bundle for SMTPC_TLS_VERIFY, NULL for the system default. */
struct smtpc *smtpc_create(struct event_base *base, const char *ca_file, char *err, size_t errlen);
/* Closes idle connections too (without waiting for the 221). */
void smtpc_free(struct smtpc **c);
/* How long a connection may stay idle in the reuse cache before it is closed
 * with QUIT; default 5 s, 0 disables the cache. */
void smtpc_set_idle_timeout(struct smtpc *c, uint64_t ms);
/* How many idle connections the cache keeps for one server (connections
 * any delivery would take alike) and in all; the oldest beyond either is
 * closed. Defaults 8 and 64; 0 counts as 1. */
void smtpc_set_idle_limits(struct smtpc *c, size_t per_destination, size_t total);
/* Where a message read from a file (smtpc_msg.fd) is read: a pool of
 * worker threads of the caller's loop, which outlives the client (freed
 * after smtpc_free: a read in flight then finishes into a buffer nobody
 * waits for). Without one, such a message defers (4.3.0). */
struct workq;
#define SMTPC_WINDOW 65536
void smtpc_set_workq(struct smtpc *c, struct workq *wq);
/* A delivery in progress: a handle for smtpc_cancel until its cb runs. */
struct smtpc_session;

/* dest and msg (and everything they point to) must stay valid until cb
 * runs. cb is always called exactly once, later, from the event loop,
 * unless the delivery is cancelled first. */
struct smtpc_session *smtpc_deliver(struct smtpc *c, const struct smtpc_dest *dest,
				    const struct smtpc_msg *msg, smtpc_done_cb *cb, void *arg);
/* End a delivery whose cb has not run yet: its connection is closed
 * without QUIT and cb is never called (a caller's own deadline, e.g.
 * smtpd's recipient verification). Clears *sp; NULL is a no-op. */
void smtpc_cancel(struct smtpc_session **sp);

#endif
