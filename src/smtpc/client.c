/* client.c — the one SMTP/LMTP client (RFC 5321, RFC 2033): one
 * smtpc_deliver() is one session that delivers one message to one
 * destination, trying its addresses in order.
 *
 * Runs in the queue manager on its libevent loop and never blocks: the
 * connection is a bufferevent (wrapped in a bufferevent_openssl filter after
 * STARTTLS, RFC 3207), every wait has a timer (RFC 5321 §4.5.3.2), and the
 * message body is dot-stuffed in chunks as the socket drains.
 *
 * Hostile input: every octet from the server. Replies go through reply.c
 * (bounded, strict), unknown or out-of-sequence replies end the session, and
 * octets that follow the 220 reply to STARTTLS are a protocol error (they
 * would otherwise be read as if they came over TLS). AUTH secrets are never
 * logged and are wiped from our buffers after use.
 *
 * Session steps (explicit states, changed only by session_set_state()):
 *   CONNECT -> GREETING -> EHLO|LHLO [-> HELO] [-> STARTTLS -> TLS -> EHLO]
 *   [-> AUTH] -> TX (MAIL, RCPT..., DATA; pipelined per RFC 2920 when offered)
 *   -> BODY -> DOT -> QUIT.
 * Before the transaction, a failure moves to the next target; after MAIL is
 * sent, it ends the attempt and the recipients without their own result get
 * the message-level one.
 *
 * Connection reuse (issue 4): with dest->reuse_key, a session whose
 * transaction ended with no reply outstanding parks its connection in an
 * idle cache instead of QUIT (RFC 5321 §3.3 lets a new MAIL follow a
 * completed transaction; an aborted one gets RSET first, §4.1.1.5). A later
 * session with the same key starts at START -> [RSET ->] TX on it. A cached
 * connection that fails before the MAIL reply (the server dropped it while
 * idle, or says 421) is closed and the session connects afresh, silently.
 * Idle connections are bounded, closed on any octet or EOF from the server,
 * and sent QUIT after the idle timeout. The server's octets while idle are
 * hostile too: they are never parsed, any of them ends the connection. */
#include "smtpc/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "smtpc/reply.h"
#include "smtpd/parse.h"
#include "tls/tls.h"

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

static const char *const smtpc_state_names[] = {
    "start", "connect", "greeting", "ehlo", "helo", "starttls", "tls",
    "auth",  "tx",      "body",     "dot",  "quit", "rset",
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
	int fd;                  /* our dup of the caller's */
	uint64_t base;           /* the content's offset in fd */
	size_t len;              /* of the content */
	size_t next;             /* content offset of the next window to read */
	unsigned char win[SMTPC_WINDOW];
	size_t win_len;
	bool reading; /* a read is on the work queue */
	bool ready;   /* win holds the window at data_off, not yet queued */
	int err;      /* errno of a failed read */
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
	bool data_lf;              /* the last octet queued was LF */
	struct smtpc_body *body; /* the message read from a file; NULL for data */
	bool *rcpt_done;     /* has its final result */
	bool *rcpt_accepted; /* 2xx to RCPT */

	struct smtpc_result res;
};

/* --- results ------------------------------------------------------------- */

/* Reply text is multiline; results and logs want one line. */
static void smtpc_text_copy(char *dst, size_t dstlen, const char *src)
{
	size_t i = 0;
	for (; src[i] != '\0' && i + 1 < dstlen; i++)
		dst[i] = src[i] == '\n' ? ' ' : src[i];
	dst[i] = '\0';
}

static void session_record(struct smtpc_session *s, bool permanent, int code, const char *enh,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void session_record(struct smtpc_session *s, bool permanent, int code, const char *enh,
                           const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->res.text, sizeof(s->res.text), fmt, ap);
	va_end(ap);
	s->res.permanent = permanent;
	s->res.code = code;
	snprintf(s->res.enh, sizeof(s->res.enh), "%s", enh);
}

/* A reply as the message-level outcome; 5xx is permanent only where the
 * caller says so (a 5xx greeting still lets another target be tried). */
static void session_record_reply(struct smtpc_session *s, const struct smtp_reply *r,
                                 bool may_be_permanent)
{
	s->res.permanent = may_be_permanent && r->code >= 500;
	s->res.code = r->code;
	snprintf(s->res.enh, sizeof(s->res.enh), "%s", r->enh);
	smtpc_text_copy(s->res.text, sizeof(s->res.text), r->text);
}

static void session_rcpt_set(struct smtpc_session *s, size_t i, const struct smtp_reply *r)
{
	struct smtpc_rcpt_result *rr = &s->res.rcpts[i];
	rr->ok = r->code >= 200 && r->code < 300;
	rr->permanent = r->code >= 500;
	rr->code = r->code;
	rr->answered = true;
	snprintf(rr->enh, sizeof(rr->enh), "%s", r->enh);
	smtpc_text_copy(rr->text, sizeof(rr->text), r->text);
	s->rcpt_done[i] = true;
}

/* --- session plumbing ----------------------------------------------------- */

static void session_set_state(struct smtpc_session *s, enum smtpc_state st)
{
	log_debug("smtpc: relay=%s state=%s->%s",
	          s->res.remote_mta[0] != '\0' ? s->res.remote_mta : "-",
	          smtpc_state_names[s->state], smtpc_state_names[st]);
	s->state = st;
}

static void session_timer_arm(struct smtpc_session *s, uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
	                     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(s->timer, &tv);
}

static uint64_t session_command_timeout(const struct smtpc_session *s)
{
	return s->dest->command_timeout_ms != 0 ? s->dest->command_timeout_ms
	                                        : SMTPC_COMMAND_TIMEOUT_MS;
}

/* Wait for a reply in state st. */
static void session_expect(struct smtpc_session *s, enum smtpc_state st)
{
	session_set_state(s, st);
	session_timer_arm(s, session_command_timeout(s));
}

static void session_close(struct smtpc_session *s)
{
	if (s->bev != NULL) {
		bufferevent_free(s->bev);
		s->bev = NULL;
	}
	evtimer_del(s->timer);
}

static void session_unlink(struct smtpc_session *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		s->c->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
}

static void body_release(struct smtpc_body **bp);

static void session_free(struct smtpc_session *s)
{
	session_close(s);
	body_release(&s->body);
	event_free(s->timer);
	free(s->res.rcpts);
	free(s->rcpt_done);
	free(s->rcpt_accepted);
	free(s);
}

/* The end: every recipient without a final result shares the message-level
 * outcome; the callback runs once, after the session has let go of the
 * connection and the loop (it may free the client). */
static void session_finish(struct smtpc_session *s)
{
	session_close(s);
	for (size_t i = 0; i < s->res.nrcpts; i++) {
		if (s->rcpt_done[i])
			continue;
		struct smtpc_rcpt_result *rr = &s->res.rcpts[i];
		rr->ok = false;
		rr->permanent = s->res.permanent;
		rr->code = s->res.code;
		snprintf(rr->enh, sizeof(rr->enh), "%s", s->res.enh);
		snprintf(rr->text, sizeof(rr->text), "%s", s->res.text);
	}
	log_debug("smtpc: relay=%s done code=%d enh=%s permanent=%d", s->res.remote_mta,
	          s->res.code, s->res.enh[0] != '\0' ? s->res.enh : "-", s->res.permanent);
	session_unlink(s);
	s->cb(&s->res, s->arg);
	session_free(s);
}

static enum smtpc_go session_send(struct smtpc_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum smtpc_go session_send(struct smtpc_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
	return SMTPC_GO;
}

static void session_connect(struct smtpc_session *s);
static void session_on_read(struct bufferevent *bev, void *arg);
static void session_on_event(struct bufferevent *bev, short what, void *arg);
static enum smtpc_go session_lost(struct smtpc_session *s, const char *why);

/* The current target failed before a transaction: try the next one, or end
 * with the recorded (temporary) outcome. */
static enum smtpc_go session_next_target(struct smtpc_session *s)
{
	session_close(s);
	s->res.permanent = false;
	s->tls_fallback = false;
	s->ti++;
	if (s->ti >= s->ntargets) {
		session_finish(s);
		return SMTPC_STOP;
	}
	session_connect(s);
	return SMTPC_STOP;
}

static enum smtpc_go session_quit(struct smtpc_session *s, bool next_target)
{
	s->reused = false; /* what happens now is no failure of the cached connection */
	s->quit_next = next_target;
	session_send(s, "QUIT\r\n");
	session_set_state(s, SMTPC_S_QUIT);
	uint64_t t = session_command_timeout(s);
	session_timer_arm(s, t < SMTPC_QUIT_WAIT_MS ? t : SMTPC_QUIT_WAIT_MS);
	return SMTPC_GO;
}

/* After QUIT (its 221, the server's EOF or the short wait): a clean end, so
 * TLS ends with our close_notify (RFC 8446 §6.1), not a bare FIN. */
static enum smtpc_go session_quit_done(struct smtpc_session *s)
{
	if (s->tls_active)
		tls_bufferevent_close_notify(s->bev);
	if (s->quit_next)
		return session_next_target(s);
	session_finish(s);
	return SMTPC_STOP;
}

/* --- the idle cache (connection reuse) ------------------------------------ */

static enum smtpc_go session_tx_start(struct smtpc_session *s);

static bool smtpc_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static bool smtpc_addr_eq(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
		const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
		       x->sin6_scope_id == y->sin6_scope_id;
	}
	return false;
}

/* Would this delivery have set the connection up the same way, with the
 * same server? For TCP the server must be the delivery's first target (the
 * one it would connect to, RFC 5321 §5.1 order and equal-preference
 * randomisation kept), whatever the key; the name TLS verified must be its
 * name. For a unix socket, the same key and path. */
static bool idle_matches(const struct smtpc_idle *ic, const struct smtpc_dest *d)
{
	if (ic->quitting || ic->tls != d->tls || ic->lmtp != d->lmtp ||
	    !smtpc_str_eq(ic->auth_user, d->auth_user) ||
	    !smtpc_str_eq(ic->helo_name, d->helo_name))
		return false;
	if (d->unix_path != NULL)
		return ic->addr.ss_family == AF_UNSPEC && strcmp(ic->key, d->reuse_key) == 0 &&
		       strcmp(ic->remote_addr, d->unix_path) == 0;
	if (d->ntargets == 0 || !smtpc_addr_eq(&ic->addr, &d->targets[0].addr))
		return false;
	return d->tls != SMTPC_TLS_VERIFY || strcmp(ic->host, d->targets[0].host) == 0;
}

/* Two cached connections that any delivery would take alike. */
static bool idle_same(const struct smtpc_idle *a, const struct smtpc_idle *b)
{
	if (a->quitting || b->quitting || a->tls != b->tls || a->lmtp != b->lmtp ||
	    !smtpc_str_eq(a->auth_user, b->auth_user) || !smtpc_str_eq(a->helo_name, b->helo_name))
		return false;
	if (a->addr.ss_family == AF_UNSPEC)
		return b->addr.ss_family == AF_UNSPEC && strcmp(a->key, b->key) == 0 &&
		       strcmp(a->remote_addr, b->remote_addr) == 0;
	return smtpc_addr_eq(&a->addr, &b->addr) && strcmp(a->host, b->host) == 0;
}

static void idle_free(struct smtpc_idle *ic)
{
	struct smtpc *c = ic->c;
	if (ic->prev != NULL)
		ic->prev->next = ic->next;
	else
		c->idle = ic->next;
	if (ic->next != NULL)
		ic->next->prev = ic->prev;
	c->nidle--;
	if (ic->bev != NULL) {
		/* closed by us (timeout, QUIT, limits) or by the server: no
		 * error, the session is between transactions */
		if (ic->tls_active)
			tls_bufferevent_close_notify(ic->bev);
		bufferevent_free(ic->bev);
	}
	event_free(ic->timer);
	free(ic->key);
	free(ic->auth_user);
	free(ic->helo_name);
	free(ic);
}

/* Idle, a server only speaks to say it is going away (421, RFC 5321 §3.8)
 * or, after our QUIT, to say 221: either way the connection is done. */
static void idle_on_read(struct bufferevent *bev, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)bev;
	log_debug("smtpc: relay=%s idle connection: server spoke, closing", ic->remote_mta);
	idle_free(ic);
}

static void idle_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)bev;
	(void)what;
	log_debug("smtpc: relay=%s idle connection closed by the server", ic->remote_mta);
	idle_free(ic);
}

static void idle_timer_arm(struct smtpc_idle *ic, uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
	                     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(ic->timer, &tv);
}

/* Idle too long: QUIT (RFC 5321 §4.1.1.10) and wait briefly for the 221. */
static void idle_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc_idle *ic = arg;
	(void)fd;
	(void)what;
	if (ic->quitting) {
		idle_free(ic);
		return;
	}
	log_debug("smtpc: relay=%s idle timeout, QUIT", ic->remote_mta);
	ic->quitting = true;
	evbuffer_add(bufferevent_get_output(ic->bev), "QUIT\r\n", 6);
	idle_timer_arm(ic, SMTPC_QUIT_WAIT_MS);
}

/* The oldest connections of all beyond the total. */
static void idle_trim_total(struct smtpc *c)
{
	while (c->nidle > c->idle_max) {
		struct smtpc_idle *ic = c->idle;
		while (ic->next != NULL)
			ic = ic->next;
		idle_free(ic);
	}
}

/* Keep the cache bounded: the oldest connection like the new one beyond
 * the per-destination limit, then the oldest of all beyond the total. */
static void idle_trim(struct smtpc *c, const struct smtpc_idle *nic)
{
	struct smtpc_idle *oldest = NULL;
	size_t same = 0;
	for (struct smtpc_idle *ic = c->idle; ic != NULL; ic = ic->next) {
		if (idle_same(ic, nic)) {
			same++;
			oldest = ic;
		}
	}
	if (same > c->idle_per_key && oldest != NULL)
		idle_free(oldest);
	idle_trim_total(c);
}

/* The transaction is over with no reply outstanding: keep the connection for
 * the next message to this destination. False when it cannot be kept. */
static bool session_park(struct smtpc_session *s, bool need_rset)
{
	struct smtpc *c = s->c;
	const struct smtpc_dest *d = s->dest;

	if (d->reuse_key == NULL || c->idle_timeout_ms == 0 || s->bev == NULL)
		return false;
	/* octets we did not ask for: the server is not where we think it is */
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 || s->parser.len > 0)
		return false;
	struct smtpc_idle *ic = xcalloc(1, sizeof(*ic));
	ic->c = c;
	ic->timer = evtimer_new(c->base, idle_on_timer, ic);
	if (ic->timer == NULL) {
		log_err("smtpc: cannot create a timer");
		abort();
	}
	ic->key = xstrdup(d->reuse_key);
	ic->tls = d->tls;
	ic->auth_user = d->auth_user != NULL ? xstrdup(d->auth_user) : NULL;
	ic->lmtp = d->lmtp;
	ic->helo_name = d->helo_name != NULL ? xstrdup(d->helo_name) : NULL;
	ic->need_rset = need_rset;
	if (d->unix_path == NULL) {
		const struct smtpc_target *t = &d->targets[s->ti];
		if (t->addrlen <= sizeof(ic->addr))
			memcpy(&ic->addr, &t->addr, t->addrlen);
		snprintf(ic->host, sizeof(ic->host), "%s", t->host);
	}
	ic->caps = s->caps;
	ic->tls_active = s->tls_active;
	ic->authed = s->authed;
	snprintf(ic->remote_mta, sizeof(ic->remote_mta), "%s", s->res.remote_mta);
	snprintf(ic->remote_addr, sizeof(ic->remote_addr), "%s", s->res.remote_addr);
	snprintf(ic->tls_info, sizeof(ic->tls_info), "%s", s->res.tls_info);
	ic->bev = s->bev;
	s->bev = NULL;
	evtimer_del(s->timer);
	bufferevent_setwatermark(ic->bev, EV_WRITE, 0, 0);
	bufferevent_setcb(ic->bev, idle_on_read, NULL, idle_on_event, ic);
	bufferevent_enable(ic->bev, EV_READ | EV_WRITE);
	ic->next = c->idle;
	if (c->idle != NULL)
		c->idle->prev = ic;
	c->idle = ic;
	c->nidle++;
	idle_timer_arm(ic, c->idle_timeout_ms);
	log_debug("smtpc: relay=%s connection kept idle rset=%d", ic->remote_mta, need_rset);
	idle_trim(c, ic);
	return true;
}

/* The end of a transaction that left the server in a known state: park the
 * connection, or QUIT. */
static enum smtpc_go session_tx_end(struct smtpc_session *s, bool need_rset)
{
	if (session_park(s, need_rset)) {
		session_finish(s);
		return SMTPC_STOP;
	}
	return session_quit(s, false);
}

/* At START: take the newest idle connection for this destination, if any,
 * and go straight to the transaction (after RSET if the last one was
 * aborted). */
static bool session_reuse(struct smtpc_session *s)
{
	struct smtpc_idle *ic = s->c->idle;

	if (s->dest->reuse_key == NULL)
		return false;
	while (ic != NULL && !idle_matches(ic, s->dest))
		ic = ic->next;
	if (ic == NULL)
		return false;
	bool rset = ic->need_rset;
	s->bev = ic->bev;
	ic->bev = NULL;
	s->caps = ic->caps;
	s->tls_active = ic->tls_active;
	s->authed = ic->authed;
	s->helo_tried = s->pipelining = s->tls_fallback = false;
	s->auth_step = 0;
	s->ti = 0;
	s->reused = true;
	s->res.connected = true;
	/* the same server, maybe under another of its names (another domain's MX) */
	const char *host = s->dest->unix_path == NULL ? s->dest->targets[0].host : "";
	snprintf(s->res.remote_mta, sizeof(s->res.remote_mta), "%s",
	         host[0] != '\0' ? host : ic->remote_mta);
	snprintf(s->res.remote_addr, sizeof(s->res.remote_addr), "%s", ic->remote_addr);
	snprintf(s->res.tls_info, sizeof(s->res.tls_info), "%s", ic->tls_info);
	idle_free(ic);
	smtp_reply_parser_init(&s->parser);
	bufferevent_setcb(s->bev, session_on_read, NULL, session_on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("smtpc: relay=%s reusing a connection rset=%d", s->res.remote_mta, rset);
	if (rset) {
		session_send(s, "RSET\r\n"); /* RFC 5321 §4.1.1.5 */
		session_expect(s, SMTPC_S_RSET);
	} else {
		session_tx_start(s);
	}
	return true;
}

/* A cached connection failed before its MAIL reply: it was dropped while
 * idle (RFC 5321 §4.5.3.2.7 lets a server do so) or is closing (421). That
 * is no failure of the message: forget it and connect afresh. */
static enum smtpc_go session_reuse_failed(struct smtpc_session *s, const char *why)
{
	log_debug("smtpc: relay=%s reused connection failed (%s), reconnecting", s->res.remote_mta,
	          why);
	session_close(s);
	s->reused = false;
	s->res.connected = false;
	s->res.permanent = false;
	s->res.dsn_offered = false;
	s->res.code = 0;
	s->res.enh[0] = s->res.text[0] = '\0';
	s->res.remote_mta[0] = s->res.remote_addr[0] = '\0';
	s->tx_next = s->accepted = 0;
	s->ti = 0;
	session_connect(s);
	return SMTPC_STOP;
}

static enum smtpc_go session_on_rset(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		char why[32];
		snprintf(why, sizeof(why), "RSET: %d", r->code);
		return session_reuse_failed(s, why);
	}
	return session_tx_start(s);
}

/* --- connecting ----------------------------------------------------------- */

static void session_on_write(struct bufferevent *bev, void *arg);

static bool smtpc_addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr))
			return true;
		return IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr) && sin6->sin6_addr.s6_addr[12] == 127;
	}
	return false;
}

static void smtpc_addr_format(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	const void *a = NULL;
	if (ss->ss_family == AF_INET)
		a = &((const struct sockaddr_in *)ss)->sin_addr;
	else if (ss->ss_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (a == NULL || inet_ntop(ss->ss_family, a, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "%s", "unknown");
}

/* Build the address of target s->ti; -1 with *why when it cannot be. */
static int session_target_addr(struct smtpc_session *s, struct sockaddr_storage *ss,
                               socklen_t *len_r, const char **why)
{
	memset(ss, 0, sizeof(*ss));
	if (s->dest->unix_path != NULL) {
		struct sockaddr_un *sun = (struct sockaddr_un *)ss;
		size_t n = strlen(s->dest->unix_path);
		if (n >= sizeof(sun->sun_path)) {
			*why = "unix socket path too long";
			return -1;
		}
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, s->dest->unix_path, n + 1);
		*len_r = (socklen_t)sizeof(*sun);
		snprintf(s->res.remote_addr, sizeof(s->res.remote_addr), "%s", s->dest->unix_path);
		snprintf(s->res.remote_mta, sizeof(s->res.remote_mta), "%s", s->dest->unix_path);
		return 0;
	}
	const struct smtpc_target *t = &s->dest->targets[s->ti];
	if (t->addrlen == 0 || t->addrlen > sizeof(*ss)) {
		*why = "bad target address";
		return -1;
	}
	memcpy(ss, &t->addr, t->addrlen);
	*len_r = t->addrlen;
	smtpc_addr_format(&t->addr, s->res.remote_addr, sizeof(s->res.remote_addr));
	snprintf(s->res.remote_mta, sizeof(s->res.remote_mta), "%s",
	         t->host[0] != '\0' ? t->host : s->res.remote_addr);
	return 0;
}

/* Reset what belongs to one connection and start connecting to target ti.
 * Immediate failures go to the next target (we are in a loop callback). */
static void session_connect(struct smtpc_session *s)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	const char *why = NULL;

	smtp_reply_parser_init(&s->parser);
	memset(&s->caps, 0, sizeof(s->caps));
	s->helo_tried = s->tls_active = s->authed = s->pipelining = false;
	s->auth_step = 0;
	s->res.tls_info[0] = '\0';
	session_set_state(s, SMTPC_S_CONNECT);
	if (session_target_addr(s, &ss, &sslen, &why) < 0) {
		session_record(s, false, 0, "4.4.1", "%s", why);
		session_next_target(s);
		return;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		session_record(s, false, 0, "4.4.1", "socket: %s", strerror(errno));
		session_next_target(s);
		return;
	}
	s->bev = bufferevent_socket_new(s->c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		session_record(s, false, 0, "4.4.1", "%s", "cannot create a bufferevent");
		session_next_target(s);
		return;
	}
	bufferevent_setcb(s->bev, session_on_read, NULL, session_on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("smtpc: connect relay=%s addr=%s", s->res.remote_mta, s->res.remote_addr);
	uint64_t t = s->dest->connect_timeout_ms != 0 ? s->dest->connect_timeout_ms
	                                              : SMTPC_CONNECT_TIMEOUT_MS;
	session_timer_arm(s, t);
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
		session_record(s, false, 0, "4.4.1", "connect to %s: %s", s->res.remote_addr,
		               strerror(errno != 0 ? errno : ECONNREFUSED));
		session_next_target(s);
	}
}

/* --- STARTTLS (RFC 3207) -------------------------------------------------- */

static enum smtpc_go session_tls_start(struct smtpc_session *s)
{
	const struct smtpc_target *t = s->dest->unix_path == NULL ? &s->dest->targets[s->ti] : NULL;
	const char *host = t != NULL ? t->host : "";
	SSL *ssl = SSL_new(s->c->ssl_ctx);

	if (ssl == NULL) {
		session_record(s, false, 0, "4.7.5", "%s", "TLS: cannot create a session");
		return session_next_target(s);
	}
	if (host[0] != '\0')
		SSL_set_tlsext_host_name(ssl, host); /* SNI, RFC 6066 §3 */
	if (s->dest->tls == SMTPC_TLS_VERIFY) {
		if (host[0] == '\0') {
			SSL_free(ssl);
			session_record(s, false, 0, "4.7.5", "%s",
			               "TLS required but not available: no host name to verify");
			return session_next_target(s);
		}
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		SSL_set1_host(ssl, host);
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	struct bufferevent *f = bufferevent_openssl_filter_new(
	    s->c->base, s->bev, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (f == NULL) {
		SSL_free(ssl);
		session_record(s, false, 0, "4.7.5", "%s", "TLS: cannot create a filter");
		return session_next_target(s);
	}
	s->bev = f;
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	bufferevent_setcb(f, session_on_read, NULL, session_on_event, s);
	bufferevent_enable(f, EV_READ | EV_WRITE);
	session_expect(s, SMTPC_S_TLS);
	return SMTPC_STOP;
}

/* Why a handshake failed, from what OpenSSL recorded for this connection:
 * the chain's verification result only when it was checked and is the
 * cause (policy verify); otherwise the first error of the queue, e.g. the
 * peer's alert ("tlsv1 alert protocol version") or our own refusal
 * ("unsupported protocol"). Under policies may and encrypt OpenSSL still
 * notes a self-signed chain it was told not to care about: never report
 * that as the cause. */
static void session_tls_why(struct smtpc_session *s, short what, char *why, size_t whylen)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	unsigned long first = 0;
	unsigned long e;

	while ((e = bufferevent_get_openssl_error(s->bev)) != 0)
		if (first == 0 && ERR_GET_LIB(e) != 0)
			first = e; /* libevent puts the SSL_get_error() code first */
	long v = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;
	if (s->dest->tls == SMTPC_TLS_VERIFY && v != X509_V_OK &&
	    (first == 0 || ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED)) {
		snprintf(why, whylen, "certificate verification failed: %s",
		         X509_verify_cert_error_string(v));
	} else if (first != 0) {
		const char *r = ERR_reason_error_string(first);
		if (r != NULL)
			snprintf(why, whylen, "%s", r);
		else
			ERR_error_string_n(first, why, whylen);
	} else if (what & BEV_EVENT_EOF) {
		/* how far it got: "SSLv3/TLS write client hello" means the
		 * server hung up on our ClientHello */
		snprintf(why, whylen, "connection closed by the server during the handshake (%s)",
		         ssl != NULL ? SSL_state_string_long(ssl) : "no TLS state");
	} else {
		int err = EVUTIL_SOCKET_ERROR();
		snprintf(why, whylen, "handshake failed: %s", err != 0 ? strerror(err) : "error");
	}
}

static void session_tls_failed(struct smtpc_session *s, short what)
{
	char why[256];

	session_tls_why(s, what, why, sizeof(why));
	session_record(s, false, 0, "4.7.5", "TLS with %s failed: %s", s->res.remote_mta, why);
	if (s->dest->tls == SMTPC_TLS_MAY && !s->tls_fallback) {
		/* RFC 7435 §3: opportunistic TLS falls back to cleartext; a new
		 * connection, as the old one is in an unknown TLS state. */
		char qw[LOG_Q_MAX];
		log_warn("event=tls_fallback relay=%s addr=%s reason=%s", s->res.remote_mta,
		         s->res.remote_addr, log_qs(qw, why));
		s->tls_fallback = true;
		session_close(s);
		session_connect(s);
		return;
	}
	session_next_target(s);
}

/* --- the steps ------------------------------------------------------------ */

static enum smtpc_go session_auth_start(struct smtpc_session *s);

static enum smtpc_go session_hello(struct smtpc_session *s)
{
	session_send(s, "%s %s\r\n", s->dest->lmtp ? "LHLO" : "EHLO", s->dest->helo_name);
	session_expect(s, SMTPC_S_EHLO);
	return SMTPC_GO;
}

/* After TLS is settled (or refused by policy MAY): AUTH, then the mail. */
static enum smtpc_go session_after_tls(struct smtpc_session *s)
{
	if (s->dest->auth_user != NULL && !s->authed)
		return session_auth_start(s);
	return session_tx_start(s);
}

static enum smtpc_go session_after_hello(struct smtpc_session *s)
{
	if (!s->tls_active && s->dest->tls != SMTPC_TLS_NONE && !s->tls_fallback) {
		if (s->caps.starttls) {
			session_send(s, "STARTTLS\r\n");
			session_expect(s, SMTPC_S_STARTTLS);
			return SMTPC_GO;
		}
		if (s->dest->tls != SMTPC_TLS_MAY) {
			session_record(s, false, 0, "4.7.5", "%s",
			               "TLS required but not available: STARTTLS not offered");
			return session_quit(s, true);
		}
	}
	return session_after_tls(s);
}

static enum smtpc_go session_on_greeting(struct smtpc_session *s, const struct smtp_reply *r)
{
	s->res.connected = true;
	if (r->code == 220)
		return session_hello(s);
	/* RFC 5321 §3.1: 554 (or any refusal) — QUIT and try elsewhere */
	session_record_reply(s, r, false);
	return session_quit(s, true);
}

static enum smtpc_go session_on_ehlo(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 == 2) {
		smtp_ehlo_caps_parse(r, &s->caps);
		return session_after_hello(s);
	}
	/* RFC 5321 §3.2: a server that does not know EHLO gets HELO */
	if (!s->dest->lmtp && r->code / 100 == 5 && !s->helo_tried && !s->tls_active) {
		s->helo_tried = true;
		session_send(s, "HELO %s\r\n", s->dest->helo_name);
		session_expect(s, SMTPC_S_HELO);
		return SMTPC_GO;
	}
	session_record_reply(s, r, false);
	return session_quit(s, true);
}

static enum smtpc_go session_on_helo(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		session_record_reply(s, r, false);
		return session_quit(s, true);
	}
	memset(&s->caps, 0, sizeof(s->caps)); /* HELO: no extensions at all */
	return session_after_hello(s);
}

static enum smtpc_go session_on_starttls(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code == 220) {
		/* RFC 3207 §5 / CVE-2011-0411: nothing may follow the 220 in
		 * plaintext; it would be taken as coming over TLS. */
		if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 || s->parser.len > 0) {
			session_record(s, false, 0, "4.7.5", "%s",
			               "protocol error: data after the STARTTLS reply");
			return session_next_target(s);
		}
		return session_tls_start(s);
	}
	if (s->dest->tls == SMTPC_TLS_MAY) {
		char t[LOG_Q_MAX], why[LOG_Q_MAX + 32], qw[LOG_Q_MAX];
		smtpc_text_copy(t, sizeof(t), r->text);
		snprintf(why, sizeof(why), "STARTTLS refused: %d %s", r->code, t);
		log_warn("event=tls_fallback relay=%s addr=%s reason=%s", s->res.remote_mta,
		         s->res.remote_addr, log_qs(qw, why));
		return session_after_tls(s);
	}
	char t[LOG_Q_MAX];
	smtpc_text_copy(t, sizeof(t), r->text);
	session_record(s, false, 0, "4.7.5", "TLS required but not available: STARTTLS: %d %s",
	               r->code, t);
	return session_quit(s, true);
}

/* --- AUTH (RFC 4954), PLAIN (RFC 4616) or LOGIN --------------------------- */

static bool session_is_loopback(const struct smtpc_session *s)
{
	return s->dest->unix_path != NULL || smtpc_addr_is_loopback(&s->dest->targets[s->ti].addr);
}

/* Send prefix + base64(p, n) + CRLF, then wipe our copies. */
static void session_send_secret(struct smtpc_session *s, const char *prefix, const void *p,
                                size_t n)
{
	struct buf b;
	buf_init(&b, 0);
	buf_append_str(&b, prefix);
	base64_encode(p, n, &b);
	buf_append_str(&b, "\r\n");
	evbuffer_add(bufferevent_get_output(s->bev), b.data, b.len);
	explicit_bzero(b.data, b.cap);
	buf_free(&b);
}

static enum smtpc_go session_auth_start(struct smtpc_session *s)
{
	const char *user = s->dest->auth_user;
	const char *pass = s->dest->auth_pass != NULL ? s->dest->auth_pass : "";

	if (!s->tls_active && !session_is_loopback(s)) {
		session_record(s, false, 0, "4.7.0", "%s",
		               "refusing to send AUTH credentials without TLS");
		return session_quit(s, false);
	}
	if (s->caps.auth_plain) {
		size_t ul = strlen(user), pl = strlen(pass);
		char *m = xmalloc(ul + pl + 2);
		m[0] = '\0';
		memcpy(m + 1, user, ul);
		m[ul + 1] = '\0';
		memcpy(m + ul + 2, pass, pl);
		session_send_secret(s, "AUTH PLAIN ", m, ul + pl + 2);
		explicit_bzero(m, ul + pl + 2);
		free(m);
		s->auth_step = 0;
	} else if (s->caps.auth_login) {
		session_send(s, "AUTH LOGIN\r\n");
		s->auth_step = 1;
	} else {
		session_record(
		    s, false, 0, "4.7.0", "%s",
		    "credentials are set but the server offers neither AUTH PLAIN nor LOGIN");
		return session_quit(s, false);
	}
	log_debug("smtpc: relay=%s AUTH %s", s->res.remote_mta,
	          s->caps.auth_plain ? "PLAIN" : "LOGIN");
	session_expect(s, SMTPC_S_AUTH);
	return SMTPC_GO;
}

static enum smtpc_go session_on_auth(struct smtpc_session *s, const struct smtp_reply *r)
{
	if ((s->auth_step == 1 || s->auth_step == 2) && r->code == 334) {
		const char *v = s->auth_step == 1 ? s->dest->auth_user : s->dest->auth_pass;
		if (v == NULL)
			v = "";
		session_send_secret(s, "", v, strlen(v));
		s->auth_step++;
		session_expect(s, SMTPC_S_AUTH);
		return SMTPC_GO;
	}
	if ((s->auth_step == 0 || s->auth_step == 3) && r->code / 100 == 2) {
		s->authed = true;
		return session_tx_start(s);
	}
	/* A refused login is our configuration's problem, not the message's:
	 * temporary, with the server's reply recorded. */
	session_record_reply(s, r, false);
	return session_quit(s, false);
}

/* --- the transaction ------------------------------------------------------ */

/* Envelope strings go into command lines: no control octets, bounded. */
static bool smtpc_arg_ok(const char *v)
{
	size_t n = 0;
	for (; v[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)v[n];
		if (ch < 0x20 || ch == 0x7f || n >= SMTPC_ARG_MAX)
			return false;
	}
	return true;
}

static bool session_envelope_ok(const struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	if (!smtpc_arg_ok(m->sender) || (m->envid != NULL && !smtpc_arg_ok(m->envid)))
		return false;
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (!smtpc_arg_ok(m->rcpts[i]))
			return false;
		if (m->orcpts != NULL && m->orcpts[i] != NULL && !smtpc_arg_ok(m->orcpts[i]))
			return false;
	}
	return true;
}

static void session_send_mail(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	struct evbuffer *out = bufferevent_get_output(s->bev);

	/* the parameters below go on to the next hop exactly when it offers DSN */
	s->res.dsn_offered = s->caps.dsn;
	evbuffer_add_printf(out, "MAIL FROM:<%s>", m->sender);
	if (s->caps.size) /* RFC 1870 §6 */
		evbuffer_add_printf(out, " SIZE=%zu", m->len);
	if (m->body == SMTP_BODY_8BITMIME && s->caps.eightbitmime) /* RFC 6152 */
		evbuffer_add_printf(out, " BODY=8BITMIME");
	if (m->smtputf8) /* RFC 6531 §3.4 */
		evbuffer_add_printf(out, " SMTPUTF8");
	if (s->caps.dsn) { /* RFC 3461 §4.3, §4.4 */
		if (m->ret == SMTP_RET_FULL || m->ret == SMTP_RET_HDRS)
			evbuffer_add_printf(out, " RET=%s",
			                    m->ret == SMTP_RET_FULL ? "FULL" : "HDRS");
		if (m->envid != NULL && m->envid[0] != '\0')
			evbuffer_add_printf(out, " ENVID=%s", m->envid);
	}
	evbuffer_add(out, "\r\n", 2);
}

static void session_send_rcpt(struct smtpc_session *s, size_t i)
{
	const struct smtpc_msg *m = s->msg;
	struct evbuffer *out = bufferevent_get_output(s->bev);

	evbuffer_add_printf(out, "RCPT TO:<%s>", m->rcpts[i]);
	if (s->caps.dsn) { /* RFC 3461 §4.1, §4.2 */
		unsigned n = m->notify != NULL ? m->notify[i] : 0;
		if (n & SMTP_NOTIFY_NEVER) {
			evbuffer_add_printf(out, " NOTIFY=NEVER");
		} else if (n != 0) {
			const char *sep = " NOTIFY=";
			static const struct {
				unsigned bit;
				const char *name;
			} kw[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
			          {SMTP_NOTIFY_FAILURE, "FAILURE"},
			          {SMTP_NOTIFY_DELAY, "DELAY"}};
			for (size_t k = 0; k < sizeof(kw) / sizeof(kw[0]); k++) {
				if (n & kw[k].bit) {
					evbuffer_add_printf(out, "%s%s", sep, kw[k].name);
					sep = ",";
				}
			}
		}
		if (m->orcpts != NULL && m->orcpts[i] != NULL && m->orcpts[i][0] != '\0')
			evbuffer_add_printf(out, " ORCPT=%s", m->orcpts[i]);
	}
	evbuffer_add(out, "\r\n", 2);
}

static enum smtpc_go session_tx_start(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;

	if (m->smtputf8 && !s->caps.smtputf8) {
		/* RFC 6531 §3.2: cannot be downgraded here; bounce */
		session_record(s, true, 0, "5.6.7", "%s",
		               "the message needs SMTPUTF8 and the server does not offer it");
		return session_tx_end(s, false);
	}
	if (s->caps.size && s->caps.size_max != 0 && m->len > s->caps.size_max) {
		/* RFC 1870 §6.2: do not send what the server said it will refuse */
		session_record(s, true, 552, "5.3.4",
		               "message size %zu exceeds the server's limit %llu", m->len,
		               s->caps.size_max);
		return session_tx_end(s, false);
	}
	if (!session_envelope_ok(s)) {
		session_record(s, true, 0, "5.1.3", "%s", "invalid envelope address");
		return session_tx_end(s, false);
	}
	if (m->nrcpts == 0) {
		session_record(s, true, 0, "5.1.3", "%s", "no recipients");
		return session_tx_end(s, false);
	}
	s->pipelining = s->caps.pipelining;
	s->tx_next = 0;
	s->accepted = 0;
	session_send_mail(s);
	if (s->pipelining) { /* RFC 2920 §3.1: MAIL, RCPT..., DATA in one group */
		for (size_t i = 0; i < m->nrcpts; i++)
			session_send_rcpt(s, i);
		if (!m->probe)
			session_send(s, "DATA\r\n");
	}
	log_debug("smtpc: relay=%s MAIL rcpts=%zu size=%zu pipelining=%d", s->res.remote_mta,
	          m->nrcpts, m->len, s->pipelining);
	session_expect(s, SMTPC_S_TX);
	return SMTPC_GO;
}

static void session_body_fill(struct smtpc_session *s);
static bool session_body_open(struct smtpc_session *s);

static enum smtpc_go session_body_start(struct smtpc_session *s)
{
	s->data_off = 0;
	s->data_bol = true;
	s->data_lf = false;
	if (!session_body_open(s)) {
		/* nothing sent yet after the 354: the connection goes, so the
		 * server drops the transaction (RFC 5321 §4.1.1.4) */
		session_finish(s);
		return SMTPC_STOP;
	}
	session_set_state(s, SMTPC_S_BODY);
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTPC_CHUNK / 2, 0);
	bufferevent_setcb(s->bev, session_on_read, session_on_write, session_on_event, s);
	session_timer_arm(s, session_command_timeout(s)); /* also while the disk is read */
	session_body_fill(s);
	return SMTPC_GO;
}

/* One MAIL/RCPT/DATA reply, in order (RFC 2920 §3.1 keeps the order). */
static enum smtpc_go session_on_tx(struct smtpc_session *s, const struct smtp_reply *r)
{
	size_t n = s->msg->nrcpts;
	size_t idx = s->tx_next++;

	if (idx == 0) {
		if (s->reused && r->code == 421)
			return session_reuse_failed(s, "421 to MAIL");
		s->reused = false;
		if (r->code / 100 != 2) { /* MAIL refused: for every recipient */
			session_record_reply(s, r, true);
			if (!s->pipelining && r->code != 421)
				return session_tx_end(s, true);
			return session_quit(s, false);
		}
		if (!s->pipelining)
			session_send_rcpt(s, 0);
		session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (idx <= n && s->msg->probe) {
		session_rcpt_set(s, idx - 1, r);
		if (idx == n)
			return session_tx_end(s, true);
		if (!s->pipelining)
			session_send_rcpt(s, idx);
		session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (idx <= n) {
		size_t i = idx - 1;
		if (r->code / 100 == 2) {
			s->rcpt_accepted[i] = true;
			s->accepted++;
		} else {
			session_rcpt_set(s, i, r);
		}
		if (idx < n) {
			if (!s->pipelining)
				session_send_rcpt(s, idx);
		} else if (s->accepted == 0) {
			/* every recipient has its own refusal; the pipelined DATA
			 * reply is read (and ignored) in the QUIT state */
			session_record_reply(s, r, true);
			if (!s->pipelining && r->code != 421)
				return session_tx_end(s, true);
			return session_quit(s, false);
		} else if (!s->pipelining) {
			session_send(s, "DATA\r\n");
		}
		session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (r->code == 354)
		return session_body_start(s);
	session_record_reply(s, r, true); /* DATA refused: for the accepted ones */
	if (r->code != 421)
		return session_tx_end(s, true);
	return session_quit(s, false);
}

/* --- the body, from memory or read from a file in windows ---------------- */

/* Queue n octets of the message, dot-stuffed (RFC 5321 §4.5.2): a line
 * that starts with "." gets another; the line state carries over. */
static void session_body_stuff(struct smtpc_session *s, const unsigned char *d, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t off = 0;
	while (off < n) {
		if (s->data_bol && d[off] == '.')
			evbuffer_add(out, ".", 1);
		const unsigned char *nl = memchr(d + off, '\n', n - off);
		size_t seg_end = nl != NULL ? (size_t)(nl - d) + 1 : n;
		evbuffer_add(out, d + off, seg_end - off);
		s->data_bol = nl != NULL;
		off = seg_end;
	}
	if (n > 0)
		s->data_lf = d[n - 1] == '\n';
	s->data_off += n;
}

static void body_read_run(void *arg)
{
	struct smtpc_body *b = arg;
	size_t n = b->len - b->next < SMTPC_WINDOW ? b->len - b->next : SMTPC_WINDOW;
	b->err = fs_pread_all(b->fd, b->win, n, b->base + b->next) < 0 ? (errno ? errno : EIO) : 0;
	b->win_len = n;
}

static void body_free(struct smtpc_body *b)
{
	close(b->fd);
	free(b);
}

static void body_read_done(void *arg)
{
	struct smtpc_body *b = arg;
	struct smtpc_session *s = b->s;
	b->reading = false;
	if (s == NULL) {
		body_free(b);
		return;
	}
	if (b->err != 0) {
		/* A message cut short must not reach the server as whole: end
		 * the connection without the final dot. */
		session_record(s, false, 0, "4.3.0", "cannot read the message from the spool: %s",
		               strerror(b->err));
		session_finish(s);
		return;
	}
	b->next += b->win_len;
	b->ready = true;
	session_body_fill(s);
}

static void body_read_start(struct smtpc_body *b)
{
	b->reading = true;
	workq_submit(b->s->c->wq, body_read_run, body_read_done, b);
}

/* The session lets go of its body: freed now, or by the read in flight. */
static void body_release(struct smtpc_body **bp)
{
	struct smtpc_body *b = *bp;
	if (b == NULL)
		return;
	*bp = NULL;
	b->s = NULL;
	if (!b->reading)
		body_free(b);
}

/* A message in a file: a dup of its descriptor (the caller may close its
 * own once we are done, while a read is still in flight after a cancel).
 * False with the outcome recorded when it cannot be read. */
static bool session_body_open(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	if (m->data != NULL || m->len == 0)
		return true;
	int fd = s->c->wq != NULL ? fcntl(m->fd, F_DUPFD_CLOEXEC, 0) : -1;
	if (fd < 0) {
		session_record(s, false, 0, "4.3.0", "cannot read the message from the spool: %s",
		               s->c->wq == NULL ? "no worker threads" : strerror(errno));
		return false;
	}
	struct smtpc_body *b = xcalloc(1, sizeof(*b));
	b->s = s;
	b->fd = fd;
	b->base = m->fd_off;
	b->len = m->len;
	s->body = b;
	body_read_start(b);
	return true;
}

/* After the last octet of the message: the end of data. */
static void session_body_end(struct smtpc_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	if (!s->data_lf)
		evbuffer_add(out, "\r\n", 2);
	evbuffer_add(out, ".\r\n", 3);
	bufferevent_setcb(s->bev, session_on_read, NULL, session_on_event, s);
	s->dot_next = 0;
	session_set_state(s, SMTPC_S_DOT);
	session_timer_arm(s, s->dest->data_timeout_ms != 0 ? s->dest->data_timeout_ms
	                                                   : SMTPC_DATA_TIMEOUT_MS);
}

/* Queue up to SMTPC_CHUNK more octets of the message when the socket has
 * drained below that, then the end of data. A file's next window is read
 * on the work queue as soon as the one before is queued, so it is usually
 * there when the socket wants it; if not, its completion calls again. */
static void session_body_fill(struct smtpc_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t len = s->msg->len;
	struct smtpc_body *b = s->body;

	if (s->state != SMTPC_S_BODY || evbuffer_get_length(out) >= SMTPC_CHUNK)
		return;
	if (b == NULL) {
		size_t n = len - s->data_off > SMTPC_CHUNK ? SMTPC_CHUNK : len - s->data_off;
		if (n > 0)
			session_body_stuff(s, s->msg->data + s->data_off, n);
	} else if (b->ready) {
		b->ready = false;
		session_body_stuff(s, b->win, b->win_len);
		if (b->next < b->len)
			body_read_start(b);
	} else {
		return; /* the window is being read */
	}
	if (s->data_off < len) {
		session_timer_arm(s, session_command_timeout(s));
		return;
	}
	session_body_end(s);
}

/* After the dot: one reply (SMTP) or one per accepted recipient in RCPT
 * order (LMTP, RFC 2033 §4.2). */
static enum smtpc_go session_on_dot(struct smtpc_session *s, const struct smtp_reply *r)
{
	size_t n = s->msg->nrcpts;

	if (!s->dest->lmtp) {
		for (size_t i = 0; i < n; i++)
			if (s->rcpt_accepted[i] && !s->rcpt_done[i])
				session_rcpt_set(s, i, r);
		session_record_reply(s, r, true);
		/* RFC 5321 §4.1.1.4: the reply to the dot ends the transaction */
		if (r->code != 421)
			return session_tx_end(s, r->code / 100 != 2);
		return session_quit(s, false);
	}
	size_t i = s->dot_next;
	while (i < n && !s->rcpt_accepted[i])
		i++;
	if (i < n)
		session_rcpt_set(s, i, r);
	for (i++; i < n && !s->rcpt_accepted[i]; i++)
		;
	s->dot_next = i;
	if (i < n) {
		session_timer_arm(s, s->dest->data_timeout_ms != 0 ? s->dest->data_timeout_ms
		                                                   : SMTPC_DATA_TIMEOUT_MS);
		return SMTPC_GO;
	}
	session_record_reply(s, r, true);
	if (r->code != 421)
		return session_tx_end(s, r->code / 100 != 2);
	return session_quit(s, false);
}

/* --- events ---------------------------------------------------------------- */

static enum smtpc_go session_on_reply(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (s->state != SMTPC_S_QUIT) /* the short QUIT wait is not extended */
		evtimer_del(s->timer);
	switch (s->state) {
	case SMTPC_S_GREETING:
		return session_on_greeting(s, r);
	case SMTPC_S_EHLO:
		return session_on_ehlo(s, r);
	case SMTPC_S_HELO:
		return session_on_helo(s, r);
	case SMTPC_S_STARTTLS:
		return session_on_starttls(s, r);
	case SMTPC_S_AUTH:
		return session_on_auth(s, r);
	case SMTPC_S_TX:
		return session_on_tx(s, r);
	case SMTPC_S_DOT:
		return session_on_dot(s, r);
	case SMTPC_S_RSET:
		return session_on_rset(s, r);
	case SMTPC_S_QUIT:
		if (r->code == 221)
			return session_quit_done(s);
		return SMTPC_GO; /* a leftover pipelined reply */
	case SMTPC_S_BODY: {
		/* the server gave up while we were still sending */
		session_record_reply(s, r, true);
		session_finish(s);
		return SMTPC_STOP;
	}
	default:
		return session_lost(s, "unexpected reply");
	}
}

/* A dropped connection, a timeout or a protocol error, by state. */
static enum smtpc_go session_lost(struct smtpc_session *s, const char *why)
{
	if (s->reused) /* a cached connection, before its MAIL reply */
		return session_reuse_failed(s, why);
	switch (s->state) {
	case SMTPC_S_QUIT:
		return session_quit_done(s);
	case SMTPC_S_CONNECT:
	case SMTPC_S_GREETING:
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
	case SMTPC_S_STARTTLS:
	case SMTPC_S_TLS:
		session_record(s, false, 0, "4.4.2", "%s (%s, %s)", why, s->res.remote_mta,
		               smtpc_state_names[s->state]);
		return session_next_target(s);
	default:
		session_record(s, false, 0, "4.4.2", "%s (%s, %s)", why, s->res.remote_mta,
		               smtpc_state_names[s->state]);
		session_finish(s);
		return SMTPC_STOP;
	}
}

static void session_on_read(struct bufferevent *bev, void *arg)
{
	struct smtpc_session *s = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	while (evbuffer_get_length(in) > 0) {
		size_t n = evbuffer_get_contiguous_space(in);
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
		size_t used = 0;
		const char *err = "malformed reply";
		int ret = smtp_reply_parse(&s->parser, p, n, &used, &s->reply, &err);
		evbuffer_drain(in, used);
		if (ret < 0) {
			char why[128];
			snprintf(why, sizeof(why), "protocol error: %s", err);
			session_lost(s, why);
			return;
		}
		if (ret == 1 && session_on_reply(s, &s->reply) != SMTPC_GO)
			return;
	}
}

static void session_on_write(struct bufferevent *bev, void *arg)
{
	struct smtpc_session *s = arg;
	(void)bev;
	if (s->state == SMTPC_S_BODY)
		session_body_fill(s);
}

static void session_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc_session *s = arg;
	(void)bev;

	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == SMTPC_S_CONNECT) {
			session_expect(s, SMTPC_S_GREETING);
		} else if (s->state == SMTPC_S_TLS) {
			SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
			s->tls_active = true;
			/* one token for the delivery log line: tls=TLSv1.3:TLS_AES_... */
			const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
			snprintf(s->res.tls_info, sizeof(s->res.tls_info), "%s:%s",
			         SSL_get_version(ssl),
			         ci != NULL ? SSL_CIPHER_get_name(ci) : "none");
			log_debug("smtpc: relay=%s tls=%s", s->res.remote_mta, s->res.tls_info);
			smtp_reply_parser_init(&s->parser);
			session_hello(s); /* RFC 3207 §4.2: forget everything, EHLO again */
		}
		return;
	}
	if (s->state == SMTPC_S_TLS) {
		session_tls_failed(s, what);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		session_lost(s, "connection closed by the server");
	} else {
		int e = EVUTIL_SOCKET_ERROR();
		char why[128];
		snprintf(why, sizeof(why), "%s: %s",
		         s->state == SMTPC_S_CONNECT ? "connect failed" : "connection lost",
		         e != 0 ? strerror(e) : "error");
		session_lost(s, why);
	}
}

static void session_on_timer(evutil_socket_t fd, short what, void *arg)
{
	struct smtpc_session *s = arg;
	(void)fd;
	(void)what;

	if (s->state == SMTPC_S_START) {
		if (s->ntargets == 0) {
			session_record(s, false, 0, "4.4.1", "%s", "no address to deliver to");
			session_finish(s);
			return;
		}
		if (!session_reuse(s))
			session_connect(s);
		return;
	}
	session_lost(s, "timeout");
}

/* --- API ------------------------------------------------------------------ */

struct smtpc *smtpc_create(struct event_base *base, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		snprintf(err, errlen, "%s", "SSL_CTX_new failed");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	int ok = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
	                         : SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		char e[256];
		ERR_error_string_n(ERR_get_error(), e, sizeof(e));
		snprintf(err, errlen, "%s: %s", ca_file != NULL ? ca_file : "default CA paths", e);
		SSL_CTX_free(ctx);
		return NULL;
	}
	struct smtpc *c = xcalloc(1, sizeof(*c));
	c->base = base;
	c->ssl_ctx = ctx;
	c->idle_timeout_ms = SMTPC_IDLE_TIMEOUT_MS;
	c->idle_per_key = SMTPC_IDLE_PER_KEY;
	c->idle_max = SMTPC_IDLE_MAX;
	return c;
}

void smtpc_set_workq(struct smtpc *c, struct workq *wq)
{
	c->wq = wq;
}

void smtpc_set_idle_timeout(struct smtpc *c, uint64_t ms)
{
	c->idle_timeout_ms = ms;
	if (ms == 0)
		while (c->idle != NULL)
			idle_free(c->idle);
}

void smtpc_set_idle_limits(struct smtpc *c, size_t per_destination, size_t total)
{
	c->idle_per_key = per_destination > 0 ? per_destination : 1;
	c->idle_max = total > 0 ? total : 1;
	idle_trim_total(c);
}

void smtpc_free(struct smtpc **cp)
{
	struct smtpc *c = *cp;
	if (c == NULL)
		return;
	while (c->sessions != NULL) {
		struct smtpc_session *s = c->sessions;
		session_unlink(s);
		session_free(s);
	}
	while (c->idle != NULL) {
		/* no loop to wait for the 221: a best-effort QUIT in plaintext */
		struct smtpc_idle *ic = c->idle;
		if (!ic->tls_active && !ic->quitting && ic->bev != NULL) {
			evutil_socket_t fd = bufferevent_getfd(ic->bev);
			if (fd >= 0 && send(fd, "QUIT\r\n", 6, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
				log_debug("smtpc: QUIT on close: %s", strerror(errno));
		}
		idle_free(ic);
	}
	SSL_CTX_free(c->ssl_ctx);
	free(c);
	*cp = NULL;
}

void smtpc_cancel(struct smtpc_session **sp)
{
	struct smtpc_session *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	log_debug("smtpc: relay=%s cancelled in state=%s",
	          s->res.remote_mta[0] != '\0' ? s->res.remote_mta : "-",
	          smtpc_state_names[s->state]);
	session_unlink(s);
	session_free(s); /* as smtpc_free does for each session */
}

struct smtpc_session *smtpc_deliver(struct smtpc *c, const struct smtpc_dest *dest,
                                    const struct smtpc_msg *msg, smtpc_done_cb *cb, void *arg)
{
	struct smtpc_session *s = xcalloc(1, sizeof(*s));
	s->c = c;
	s->dest = dest;
	s->msg = msg;
	s->cb = cb;
	s->arg = arg;
	s->ntargets = dest->unix_path != NULL ? 1 : dest->ntargets;
	s->res.nrcpts = msg->nrcpts;
	s->res.rcpts = xcalloc(msg->nrcpts > 0 ? msg->nrcpts : 1, sizeof(*s->res.rcpts));
	s->rcpt_done = xcalloc(msg->nrcpts > 0 ? msg->nrcpts : 1, sizeof(bool));
	s->rcpt_accepted = xcalloc(msg->nrcpts > 0 ? msg->nrcpts : 1, sizeof(bool));
	s->timer = evtimer_new(c->base, session_on_timer, s);
	if (s->timer == NULL) {
		log_err("smtpc: cannot create a timer");
		abort();
	}
	s->state = SMTPC_S_START;
	s->next = c->sessions;
	if (c->sessions != NULL)
		c->sessions->prev = s;
	c->sessions = s;
	/* never call back from here: start from the loop */
	session_timer_arm(s, 0);
	return s;
}
