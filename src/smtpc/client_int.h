/* client_int.h — internals of the SMTP/LMTP client shared by its files
 * (not an interface: other components use client.h). Loop thread only,
 * except struct smtpc_body's window, which a worker fills while the loop
 * does not look at it (reading set).
 *
 *   client.c  the API, results, session plumbing, events
 *   conn.c    connecting, greeting, EHLO/LHLO/HELO, STARTTLS, AUTH
 *   idle.c    the idle cache (connection reuse)
 *   tx.c      MAIL, RCPT, DATA, the replies after the dot
 *   body.c    the message body (dot-stuffing, windows read on a work queue)
 */
#ifndef HK_SMTPC_CLIENT_INT_H
#define HK_SMTPC_CLIENT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <event2/bufferevent.h>
#include <openssl/ssl.h>

#include "smtpc/client.h"
#include "smtpc/reply.h"

struct workq;

#define SMTPC_CONNECT_TIMEOUT_MS 30000ULL
#define SMTPC_COMMAND_TIMEOUT_MS 300000ULL /* RFC 5321 §4.5.3.2.2-5: 5 minutes */
#define SMTPC_DATA_TIMEOUT_MS 600000ULL    /* §4.5.3.2.6: 10 minutes after the dot */
#define SMTPC_QUIT_WAIT_MS 2000ULL         /* do not wait long for 221 */
#define SMTPC_CHUNK SMTPC_WINDOW           /* body octets queued per refill */
#define SMTPC_ARG_MAX 1000                 /* a path or parameter we put in a command */
/* Defaults of the idle cache; the queue manager sets delivery.idle_timeout,
 * delivery.destination_idle and delivery.total_idle. */
#define SMTPC_IDLE_TIMEOUT_MS 5000ULL /* a cached connection, unused */
#define SMTPC_IDLE_MAX 64             /* cached connections in all */
#define SMTPC_IDLE_PER_KEY 8          /* cached connections per destination */

enum smtpc_state {
	SMTPC_S_START,
	SMTPC_S_CONNECT,
	SMTPC_S_GREETING,
	SMTPC_S_EHLO, /* also LHLO */
	SMTPC_S_HELO,
	SMTPC_S_STARTTLS,
	SMTPC_S_TLS, /* handshake */
	SMTPC_S_AUTH,
	SMTPC_S_TX, /* MAIL, RCPT, DATA replies */
	SMTPC_S_BODY,
	SMTPC_S_DOT,
	SMTPC_S_QUIT,
	SMTPC_S_RSET, /* a reused connection after an aborted transaction */
};

/* What a reply handler tells the read loop: keep reading, or stop because
 * the session ended or its bufferevent changed. */
enum smtpc_go { SMTPC_GO, SMTPC_STOP };

struct smtpc_session;
struct smtpc_idle;

/* A message read from a file, one window at a time on a worker thread
 * while the loop sends the window before it. Owned by its session; if the
 * session ends while a read is in flight, the read's completion frees it. */
struct smtpc_body {
	struct smtpc_session *s; /* NULL: orphaned, freed when the read completes */
	int fd;                  /* the caller's (smtpc_msg.fd) */
	uint64_t base;           /* the content's offset in fd */
	size_t len;              /* of the content */
	size_t next;             /* content offset of the next window to read */
	size_t win_len;
	bool reading; /* a read is on the work queue */
	bool ready;   /* win holds the window at data_off, not yet queued */
	int err;      /* errno of a failed read */
	unsigned char win[]; /* min(len, SMTPC_WINDOW) octets */
};

struct smtpc {
	struct event_base *base;
	SSL_CTX *ssl_ctx;
	struct smtpc_session *sessions;
	struct smtpc_idle *idle; /* newest first */
	size_t nidle;
	struct workq *wq;         /* reads of a message from a file; NULL: none */
	uint64_t idle_timeout_ms; /* 0: no cache */
	size_t idle_per_key;      /* at least 1 */
	size_t idle_max;          /* at least 1 */
};

/* A connection in the reuse cache, between two transactions. The key is the
 * caller's reuse_key plus everything that shaped the session (TLS policy,
 * AUTH user, LMTP, HELO name): a connection is only taken by a delivery that
 * would have set it up the same way. */
struct smtpc_idle {
	struct smtpc *c;
	struct smtpc_idle *prev, *next;
	char *key;
	enum smtpc_tls tls;
	char *auth_user; /* NULL: none */
	bool lmtp;
	char *helo_name;
	struct sockaddr_storage addr; /* the server's; AF_UNSPEC for a unix socket */
	char host[256];               /* the name TLS was verified against */
	struct bufferevent *bev;
	struct event *timer;
	bool quitting;  /* QUIT sent after the idle timeout */
	bool need_rset; /* the last transaction was aborted */
	struct smtp_ehlo_caps caps;
	bool tls_active, authed;
	char remote_mta[256];
	char remote_addr[64];
	char tls_info[128];
};

struct smtpc_session {
	struct smtpc *c;
	struct smtpc_session *prev, *next;
	const struct smtpc_dest *dest;
	const struct smtpc_msg *msg;
	smtpc_done_cb *cb;
	void *arg;

	enum smtpc_state state;
	size_t ntargets, ti;
	struct bufferevent *bev;
	struct event *timer;
	struct smtp_reply_parser parser;
	struct smtp_reply reply;

	/* per connection */
	struct smtp_ehlo_caps caps;
	bool helo_tried, tls_active, authed, pipelining;
	int auth_step;
	bool quit_next;    /* after QUIT: try the next target (else finish) */
	bool tls_fallback; /* policy MAY: TLS with this target failed, plaintext now */
	bool reused;       /* taken from the idle cache, no MAIL reply yet */

	/* the transaction */
	size_t tx_next; /* next reply: 0 MAIL, 1..n RCPT, n+1 DATA */
	size_t accepted;
	size_t dot_next; /* LMTP: the next recipient to get a post-DATA reply */
	size_t data_off;
	bool data_bol;
	bool data_lf;            /* the last octet queued was LF */
	struct smtpc_body *body; /* the message read from a file; NULL for data */
	bool *rcpt_done;         /* has its final result */
	bool *rcpt_accepted;     /* 2xx to RCPT */

	struct smtpc_result res;
};

/* client.c */
void smtpc_session_close(struct smtpc_session *s);
uint64_t smtpc_session_command_timeout(const struct smtpc_session *s);
void smtpc_session_expect(struct smtpc_session *s, enum smtpc_state st);
void smtpc_session_finish(struct smtpc_session *s);
enum smtpc_go smtpc_session_next_target(struct smtpc_session *s);
void smtpc_session_on_event(struct bufferevent *bev, short what, void *arg);
void smtpc_session_on_read(struct bufferevent *bev, void *arg);
void smtpc_session_on_write(struct bufferevent *bev, void *arg);
enum smtpc_go smtpc_session_quit(struct smtpc_session *s, bool next_target);
void smtpc_session_rcpt_set(struct smtpc_session *s, size_t i, const struct smtp_reply *r);
void smtpc_session_record(struct smtpc_session *s, bool permanent, int code, const char *enh,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void smtpc_session_record_reply(struct smtpc_session *s, const struct smtp_reply *r,
                                bool may_be_permanent);
enum smtpc_go smtpc_session_send(struct smtpc_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void smtpc_session_set_state(struct smtpc_session *s, enum smtpc_state st);
void smtpc_session_timer_arm(struct smtpc_session *s, uint64_t ms);
void smtpc_text_copy(char *dst, size_t dstlen, const char *src);

/* conn.c */
void smtpc_session_connect(struct smtpc_session *s);
enum smtpc_go smtpc_session_hello(struct smtpc_session *s);
enum smtpc_go smtpc_session_on_auth(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_on_ehlo(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_on_greeting(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_on_helo(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_on_starttls(struct smtpc_session *s, const struct smtp_reply *r);
void smtpc_session_tls_failed(struct smtpc_session *s, short what);

/* idle.c */
void smtpc_idle_free(struct smtpc_idle *ic);
void smtpc_idle_trim_total(struct smtpc *c);
enum smtpc_go smtpc_session_on_rset(struct smtpc_session *s, const struct smtp_reply *r);
bool smtpc_session_reuse(struct smtpc_session *s);
enum smtpc_go smtpc_session_reuse_failed(struct smtpc_session *s, const char *why);
enum smtpc_go smtpc_session_tx_end(struct smtpc_session *s, bool need_rset);

/* tx.c */
enum smtpc_go smtpc_session_on_dot(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_on_tx(struct smtpc_session *s, const struct smtp_reply *r);
enum smtpc_go smtpc_session_tx_start(struct smtpc_session *s);

/* body.c */
void smtpc_body_release(struct smtpc_body **bp);
void smtpc_session_body_fill(struct smtpc_session *s);
enum smtpc_go smtpc_session_body_start(struct smtpc_session *s);

#endif
