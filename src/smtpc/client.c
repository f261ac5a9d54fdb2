/* client.c — the one SMTP/LMTP client (RFC 5321, RFC 2033): one
 * smtpc_deliver() is one session that delivers one message to one
 * destination, trying its addresses in order.
 *
 * Runs in the queue manager on its libevent loop and never blocks: the
 * connection is a bufferevent (wrapped in a bufferevent_openssl filter after
 * STARTTLS, RFC 3207), every wait has a timer (RFC 5321 §4.5.3.2), and the
 * message body is dot-stuffed in chunks as the socket drains. A message in
 * the spool file is read a 64 KiB window at a time on a work queue (never
 * on the loop), the next window while the socket sends the one before, so
 * a session's memory does not grow with the message.
 *
 * Files (client_int.h holds what they share): this one has the API, the
 * results, the session plumbing and the event handlers; conn.c connects and
 * runs the greeting, EHLO/LHLO/HELO, STARTTLS and AUTH; idle.c is the idle
 * cache; tx.c the transaction (MAIL, RCPT, DATA, the replies after the dot);
 * body.c the body.
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

#include "smtpc/client_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "lib/alloc.h"
#include "lib/log.h"
#include "tls/tls.h"

static const char *const smtpc_state_names[] = {
    "start", "connect", "greeting", "ehlo", "helo", "starttls", "tls",
    "auth",  "tx",      "body",     "dot",  "quit", "rset",
};

static enum smtpc_go session_lost(struct smtpc_session *s, const char *why);

/* --- results ------------------------------------------------------------- */

/* Reply text is multiline; results and logs want one line. */
void smtpc_text_copy(char *dst, size_t dstlen, const char *src)
{
	size_t i = 0;
	for (; src[i] != '\0' && i + 1 < dstlen; i++)
		dst[i] = src[i] == '\n' ? ' ' : src[i];
	dst[i] = '\0';
}

void smtpc_session_record(struct smtpc_session *s, bool permanent, int code, const char *enh,
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
void smtpc_session_record_reply(struct smtpc_session *s, const struct smtp_reply *r,
                                bool may_be_permanent)
{
	s->res.permanent = may_be_permanent && r->code >= 500;
	s->res.code = r->code;
	snprintf(s->res.enh, sizeof(s->res.enh), "%s", r->enh);
	smtpc_text_copy(s->res.text, sizeof(s->res.text), r->text);
}

void smtpc_session_rcpt_set(struct smtpc_session *s, size_t i, const struct smtp_reply *r)
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

void smtpc_session_set_state(struct smtpc_session *s, enum smtpc_state st)
{
	log_debug("smtpc: relay=%s state=%s->%s",
	          s->res.remote_mta[0] != '\0' ? s->res.remote_mta : "-",
	          smtpc_state_names[s->state], smtpc_state_names[st]);
	s->state = st;
}

void smtpc_session_timer_arm(struct smtpc_session *s, uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
	                     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(s->timer, &tv);
}

uint64_t smtpc_session_command_timeout(const struct smtpc_session *s)
{
	return s->dest->command_timeout_ms != 0 ? s->dest->command_timeout_ms
	                                        : SMTPC_COMMAND_TIMEOUT_MS;
}

/* Wait for a reply in state st. */
void smtpc_session_expect(struct smtpc_session *s, enum smtpc_state st)
{
	smtpc_session_set_state(s, st);
	smtpc_session_timer_arm(s, smtpc_session_command_timeout(s));
}

void smtpc_session_close(struct smtpc_session *s)
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

static void session_free(struct smtpc_session *s)
{
	smtpc_session_close(s);
	smtpc_body_release(&s->body);
	event_free(s->timer);
	free(s->res.rcpts);
	free(s->rcpt_done);
	free(s->rcpt_accepted);
	free(s);
}

/* The end: every recipient without a final result shares the message-level
 * outcome; the callback runs once, after the session has let go of the
 * connection and the loop (it may free the client). */
void smtpc_session_finish(struct smtpc_session *s)
{
	smtpc_session_close(s);
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

enum smtpc_go smtpc_session_send(struct smtpc_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

enum smtpc_go smtpc_session_send(struct smtpc_session *s, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(bufferevent_get_output(s->bev), fmt, ap);
	va_end(ap);
	return SMTPC_GO;
}

/* The current target failed before a transaction: try the next one, or end
 * with the recorded (temporary) outcome. */
enum smtpc_go smtpc_session_next_target(struct smtpc_session *s)
{
	smtpc_session_close(s);
	s->res.permanent = false;
	s->tls_fallback = false;
	s->ti++;
	if (s->ti >= s->ntargets) {
		smtpc_session_finish(s);
		return SMTPC_STOP;
	}
	smtpc_session_connect(s);
	return SMTPC_STOP;
}

enum smtpc_go smtpc_session_quit(struct smtpc_session *s, bool next_target)
{
	s->reused = false; /* what happens now is no failure of the cached connection */
	s->quit_next = next_target;
	smtpc_session_send(s, "QUIT\r\n");
	smtpc_session_set_state(s, SMTPC_S_QUIT);
	uint64_t t = smtpc_session_command_timeout(s);
	smtpc_session_timer_arm(s, t < SMTPC_QUIT_WAIT_MS ? t : SMTPC_QUIT_WAIT_MS);
	return SMTPC_GO;
}

/* After QUIT (its 221, the server's EOF or the short wait): a clean end, so
 * TLS ends with our close_notify (RFC 8446 §6.1), not a bare FIN. */
static enum smtpc_go session_quit_done(struct smtpc_session *s)
{
	if (s->tls_active)
		tls_bufferevent_close_notify(s->bev);
	if (s->quit_next)
		return smtpc_session_next_target(s);
	smtpc_session_finish(s);
	return SMTPC_STOP;
}

/* --- events ---------------------------------------------------------------- */

static enum smtpc_go session_on_reply(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (s->state != SMTPC_S_QUIT) /* the short QUIT wait is not extended */
		evtimer_del(s->timer);
	switch (s->state) {
	case SMTPC_S_GREETING:
		return smtpc_session_on_greeting(s, r);
	case SMTPC_S_EHLO:
		return smtpc_session_on_ehlo(s, r);
	case SMTPC_S_HELO:
		return smtpc_session_on_helo(s, r);
	case SMTPC_S_STARTTLS:
		return smtpc_session_on_starttls(s, r);
	case SMTPC_S_AUTH:
		return smtpc_session_on_auth(s, r);
	case SMTPC_S_TX:
		return smtpc_session_on_tx(s, r);
	case SMTPC_S_DOT:
		return smtpc_session_on_dot(s, r);
	case SMTPC_S_RSET:
		return smtpc_session_on_rset(s, r);
	case SMTPC_S_QUIT:
		if (r->code == 221)
			return session_quit_done(s);
		return SMTPC_GO; /* a leftover pipelined reply */
	case SMTPC_S_BODY: {
		/* the server gave up while we were still sending */
		smtpc_session_record_reply(s, r, true);
		smtpc_session_finish(s);
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
		return smtpc_session_reuse_failed(s, why);
	switch (s->state) {
	case SMTPC_S_QUIT:
		return session_quit_done(s);
	case SMTPC_S_CONNECT:
	case SMTPC_S_GREETING:
	case SMTPC_S_EHLO:
	case SMTPC_S_HELO:
	case SMTPC_S_STARTTLS:
	case SMTPC_S_TLS:
		smtpc_session_record(s, false, 0, "4.4.2", "%s (%s, %s)", why, s->res.remote_mta,
		                     smtpc_state_names[s->state]);
		return smtpc_session_next_target(s);
	default:
		smtpc_session_record(s, false, 0, "4.4.2", "%s (%s, %s)", why, s->res.remote_mta,
		                     smtpc_state_names[s->state]);
		smtpc_session_finish(s);
		return SMTPC_STOP;
	}
}

void smtpc_session_on_read(struct bufferevent *bev, void *arg)
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

void smtpc_session_on_write(struct bufferevent *bev, void *arg)
{
	struct smtpc_session *s = arg;
	(void)bev;
	if (s->state == SMTPC_S_BODY)
		smtpc_session_body_fill(s);
}

void smtpc_session_on_event(struct bufferevent *bev, short what, void *arg)
{
	struct smtpc_session *s = arg;
	(void)bev;

	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == SMTPC_S_CONNECT) {
			smtpc_session_expect(s, SMTPC_S_GREETING);
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
			smtpc_session_hello(s); /* RFC 3207 §4.2: forget everything, EHLO again */
		}
		return;
	}
	if (s->state == SMTPC_S_TLS) {
		smtpc_session_tls_failed(s, what);
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
			smtpc_session_record(s, false, 0, "4.4.1", "%s",
			                     "no address to deliver to");
			smtpc_session_finish(s);
			return;
		}
		if (!smtpc_session_reuse(s))
			smtpc_session_connect(s);
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
			smtpc_idle_free(c->idle);
}

void smtpc_set_idle_limits(struct smtpc *c, size_t per_destination, size_t total)
{
	c->idle_per_key = per_destination > 0 ? per_destination : 1;
	c->idle_max = total > 0 ? total : 1;
	smtpc_idle_trim_total(c);
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
		smtpc_idle_free(ic);
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
	smtpc_session_timer_arm(s, 0);
	return s;
}
