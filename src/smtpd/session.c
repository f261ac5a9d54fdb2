/* session.c — one SMTP session: reading command lines with bounds, the state
 * machine, replies, timeouts, the transaction's lifetime.
 * Runs in smtpd on the event loop. Everything read from the socket is
 * hostile: lines are bounded (limits.command_line), output that the client
 * does not read stops further input processing (no unbounded reply queue),
 * and every wait has a timeout plus a whole-session deadline. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/strutil.h"
#include "queue/spool.h"
#include "smtpd/smtpd.h"
#include "tls/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Stop processing pipelined input while this much reply text is unsent. */
#define SMTPD_OUT_HIGH (64 * 1024)
/* Read no further while this much unprocessed input is buffered; always
 * more than one whole command line (limits.command_line is at most 64 KiB). */
#define SMTPD_IN_HIGH (128 * 1024)

static const char *const smtpd_state_names[] = {
	"init", "ready", "mail", "rcpt", "data", "bdat", "commit", "auth", "auth_wait",
	"closing",
};

/* RFC 4954 §4: an AUTH command or response line may be 12288 octets. */
#define SMTPD_AUTH_LINE_MAX 12288

static void smtpd_session_process(struct smtpd_session *s);
static void smtpd_session_greet_start(struct smtpd_session *s);

bool smtpd_session_busy(const struct smtpd_session *s)
{
	/* Commands after EHLO/HELO wait for the connect chain (FCrDNS): MAIL
	 * applies its verdict and Received names the client. */
	return s->state == SMTPD_S_COMMIT || s->state == SMTPD_S_AUTH_WAIT || s->pending != NULL ||
	       (s->connect_run != NULL && s->state != SMTPD_S_INIT);
}

/* A verdict came from the loop: the session goes on, or ends if it lost
 * its client meanwhile (the reply is still owed to a half-closed one). */
static void smtpd_session_unpark(struct smtpd_session *s)
{
	if (smtpd_session_busy(s))
		return;
	if (s->bev == NULL) {
		smtpd_session_set_state(s, SMTPD_S_CLOSING);
		smtpd_session_free(&s);
		return;
	}
	if (s->gone) {
		smtpd_session_close(s);
		return;
	}
	smtpd_session_resume(s);
}

bool smtpd_session_sandboxed(const struct smtpd_session *s)
{
	return !s->local && conf_listener_sandboxed(s->srv->conf, s->lconf);
}

static void smtpd_session_on_verdict(const struct policy_verdict *v, void *arg)
{
	struct smtpd_session *s = arg;
	bool later = !s->in_policy;
	s->pending = NULL;
	/* A sandbox listener runs the checks without enforcing them: the
	 * developer sees what production would do (the log line, the
	 * Authentication-Results field) and the mail is captured anyway. */
	struct policy_verdict relaxed;
	if (v->result == POLICY_REPLY && smtpd_session_sandboxed(s) &&
	    s->pending_stage != POLICY_CONNECT) {
		log_info("event=sandbox_not_enforced sid=%s stage=%s check=%s code=%d", s->sid,
			 policy_stage_name(s->pending_stage), v->check != NULL ? v->check : "-",
			 v->code);
		relaxed = *v;
		relaxed.result = POLICY_DUNNO;
		relaxed.code = 0;
		v = &relaxed;
	}
	s->pending_then(s, v);
	if (later)
		smtpd_session_unpark(s);
}

void smtpd_session_policy(struct smtpd_session *s, enum policy_stage stage, void *req,
			  void (*then)(struct smtpd_session *s, const struct policy_verdict *v))
{
	s->pending_then = then;
	s->pending_stage = stage;
	s->client.auth_user = s->auth_user; /* STARTTLS and AUTH change it */
	s->in_policy = true;
	struct policy_run *run =
		policy_run(s->srv->policy->engine, stage, req, smtpd_session_on_verdict, s);
	s->in_policy = false;
	s->pending = run;
}

/* The connect chain mostly learns about the client (access lists, DNS
 * lists, FCrDNS) for later stages to act on; only a denied network is
 * refused here (access.reject_at: connect), from inside policy_run(),
 * before the greeting. */
static void smtpd_session_on_connect_verdict(const struct policy_verdict *v, void *arg)
{
	struct smtpd_session *s = arg;
	bool later = s->connect_run != NULL;
	s->connect_run = NULL;
	if (v->result == POLICY_REPLY && (v->code >= 500 || v->code == 421)) {
		s->cur_verb = "CONNECT";
		s->greeting_pending = false;
		s->greet_after_connect = false;
		smtpd_reply(s, v->code, v->enh[0] != '\0' ? v->enh : NULL, "%s", v->text);
		smtpd_session_close(s);
		return;
	}
	if (s->greet_after_connect) {
		/* the milters let the client in (smtpd_session_start) */
		s->greet_after_connect = false;
		if (s->bev == NULL) {
			smtpd_session_unpark(s);
			return;
		}
		smtpd_session_greet_start(s);
		return;
	}
	if (later)
		smtpd_session_unpark(s);
}

/* The client went away for good (an error, not a half-close): nobody is
 * left to answer, so checks in progress are cancelled. */
static void smtpd_session_policy_cancel(struct smtpd_session *s)
{
	policy_run_cancel(&s->pending);
	policy_run_cancel(&s->connect_run);
	policy_rcpt_req_clear(&s->preq.rcpt);
}

const char *smtpd_session_protocol(const struct smtpd_session *s)
{
	/* RFC 3848 and RFC 6531 §3.7.3 "with" keywords. */
	static const char *const names[2][4] = {
		{"ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"},
		{"UTF8SMTP", "UTF8SMTPS", "UTF8SMTPA", "UTF8SMTPSA"},
	};
	if (!s->esmtp)
		return "SMTP";
	bool utf8 = s->tx != NULL && s->tx->mail.smtputf8;
	return names[utf8][(s->tls_active ? 1 : 0) + (s->auth_user != NULL ? 2 : 0)];
}

uint64_t smtpd_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

void smtpd_session_set_state(struct smtpd_session *s, enum smtpd_state st)
{
	if (s->state == st)
		return;
	log_debug("event=state sid=%s from=%s to=%s", s->sid, smtpd_state_names[s->state],
		  smtpd_state_names[st]);
	s->state = st;
}

static struct timeval smtpd_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
	return tv;
}

void smtpd_session_timeouts(struct smtpd_session *s, bool data)
{
	const struct conf_timeouts *t = &s->srv->conf->timeouts;
	struct timeval rd = smtpd_tv(data ? t->data : t->command);
	struct timeval wr = smtpd_tv(t->command);
	bufferevent_set_timeouts(s->bev, &rd, &wr);
}

void smtpd_reply_raw(struct smtpd_session *s, const char *text, size_t len)
{
	if (s->bev != NULL)
		evbuffer_add(bufferevent_get_output(s->bev), text, len);
}

/* Rejection log lines are rate-suppressed (the bounds are in session.h): a
 * client that sends thousands of refused commands must not turn each into
 * a log line (issue 8: one connection grew the log by 401 MB). What is
 * held back is reported in one "event=suppressed" line when the burst is
 * over or the session ends. */

/* The session's suppressed lines, if any, in one line. */
static void smtpd_reject_log_report(struct smtpd_session *s)
{
	uint64_t n = logrl_take(&s->reject_rl);
	if (n > 0)
		log_info("event=suppressed sid=%s client=%s what=reject cmd=%s count=%llu", s->sid,
			 s->client_addr, s->reject_what != NULL ? s->reject_what : "-",
			 (unsigned long long)n);
	s->reject_what = NULL;
}

void smtpd_reject_log_flush(struct smtpd *srv)
{
	uint64_t n = logrl_take(&srv->reject_rl);
	if (n > 0)
		log_info("event=suppressed sid=* what=reject count=%llu window=1s",
			 (unsigned long long)n);
}

static void smtpd_reject_log_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtpd_reject_log_flush(arg);
}

/* May this session write a rejection line now? Counts it otherwise. */
static bool smtpd_reject_log_allow(struct smtpd_session *s)
{
	struct smtpd *srv = s->srv;
	uint64_t now = smtpd_now_us();
	if (s->reject_rl.suppressed > 0 && logrl_burst_over(&s->reject_rl, now))
		smtpd_reject_log_report(s);
	if (!logrl_allow(&s->reject_rl, now)) {
		const char *verb = s->cur_verb != NULL ? s->cur_verb : "-";
		if (s->reject_what == NULL)
			s->reject_what = verb;
		else if (strcmp(s->reject_what, verb) != 0)
			s->reject_what = "*";
		return false;
	}
	if (logrl_allow(&srv->reject_rl, now))
		return true;
	if (srv->reject_rl_ev == NULL)
		srv->reject_rl_ev = evtimer_new(srv->base, smtpd_reject_log_on_timer, srv);
	if (!evtimer_pending(srv->reject_rl_ev, NULL)) {
		struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
		evtimer_add(srv->reject_rl_ev, &tv);
	}
	return false;
}

static void smtpd_log_reject(struct smtpd_session *s, int code, const char *enh, const char *text)
{
	char qt[LOG_Q_MAX], qf[LOG_Q_MAX];
	if (!smtpd_reject_log_allow(s))
		return;
	const char *qid = s->tx != NULL ? s->tx->env.qid : "-";
	const char *from = s->tx != NULL ? s->tx->env.sender : NULL;
	log_info("event=reject sid=%s qid=%s client=%s cmd=%s code=%d dsn=%s from=%s reason=%s",
		 s->sid, qid[0] != '\0' ? qid : "-", s->client_addr,
		 s->cur_verb != NULL ? s->cur_verb : "-", code, enh,
		 from != NULL ? log_qs(qf, from) : "-", log_qs(qt, text));
}

void smtpd_reply(struct smtpd_session *s, int code, const char *enh, const char *fmt, ...)
{
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (s->bev != NULL) {
		struct evbuffer *out = bufferevent_get_output(s->bev);
		if (enh != NULL)
			evbuffer_add_printf(out, "%d %s %s\r\n", code, enh, text);
		else
			evbuffer_add_printf(out, "%d %s\r\n", code, text);
	}
	if (code < 400 || code == 421)
		return;
	metrics_reject(code, enh);
	smtpd_log_reject(s, code, enh != NULL ? enh : "-", text);
	/* RFC 5321 §4.5.3.1.10: a client over the recipient limit is to send
	 * the rest in a later transaction. That is flow control, not an
	 * error: counting it would close the session and lose the recipients
	 * already accepted. But only up to limits.recipient_overshoot (as
	 * Postfix): past that it is a flood, and each counts. */
	if (enh != NULL && strcmp(enh, "4.5.3") == 0 &&
	    ++s->rcpt_overshoot <= s->srv->conf->limits.recipient_overshoot)
		return;
	/* RFC 5321 §4.5.3.2 leaves error limits to the server; a client that
	 * keeps failing is a scanner or broken, and holds a slot. */
	if (++s->errors >= s->srv->conf->limits.errors && s->state != SMTPD_S_CLOSING) {
		smtpd_reply(s, 421, "4.7.0", "%s Too many errors, closing connection",
			    s->srv->conf->hostname);
		log_info("event=error_limit sid=%s client=%s errors=%u", s->sid, s->client_addr,
			 s->errors);
		smtpd_session_close(s);
	}
}

void smtpd_reply_perr(struct smtpd_session *s, const struct smtp_perr *err)
{
	smtpd_reply(s, err->code, err->enh, "%s", err->text);
}

struct smtpd_tx *smtpd_tx_create(struct smtpd_session *s)
{
	struct smtpd_tx *tx = xcalloc(1, sizeof(*tx));
	envelope_init(&tx->env);
	buf_init(&tx->body, s->srv->conf->limits.message_size + 1024 * 1024);
	buf_init(&tx->top, SMTPD_TOP_MAX);
	buf_init(&tx->hdrs, s->srv->conf->limits.header_size);
	s->tx = tx;
	return tx;
}

void smtpd_tx_reset(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	if (tx != NULL) {
		smtpd_milter_cancel(tx);
		smtpd_milter_tx_end(s);
		if (tx->msg != NULL) {
			spool_msg_abort(&tx->msg);
			qclient_abort(s->srv->qc, &tx->file);
		}
		envelope_clear(&tx->env);
		buf_free(&tx->body);
		buf_free(&tx->top);
		buf_free(&tx->hdrs);
		policy_dauth_free(&tx->dauth);
		dkim_sign_free(&tx->signer);
		free(tx);
		s->tx = NULL;
	}
	if (s->state == SMTPD_S_MAIL || s->state == SMTPD_S_RCPT || s->state == SMTPD_S_DATA ||
	    s->state == SMTPD_S_BDAT || s->state == SMTPD_S_COMMIT)
		smtpd_session_set_state(s, SMTPD_S_READY);
}

static void smtpd_session_on_free(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct smtpd_session *s = arg;
	smtpd_session_free(&s);
}

/* Never frees synchronously: callers up the stack may still hold s. The
 * session is freed once the last reply is written (or after a short linger
 * if the client does not read it). */
void smtpd_session_close(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CLOSING)
		return;
	if (smtpd_session_busy(s)) {
		/* the completion of the commit or AUTH check closes it */
		s->gone = true;
		return;
	}
	smtpd_session_set_state(s, SMTPD_S_CLOSING);
	if (s->bev == NULL)
		return;
	bufferevent_disable(s->bev, EV_READ);
	struct timeval linger = {.tv_sec = 5, .tv_usec = 0};
	struct timeval now = {0, 0};
	if (s->free_ev == NULL)
		s->free_ev = evtimer_new(s->srv->base, smtpd_session_on_free, s);
	bool drained = evbuffer_get_length(bufferevent_get_output(s->bev)) == 0;
	evtimer_add(s->free_ev, drained ? &now : &linger);
}

/* Closing a socket with unread input makes the kernel send a reset, which
 * can destroy the last reply (a 421) before the client reads it: the client
 * of a pipelined burst cut off by limits.errors would see only "connection
 * reset". Read what is already there (bounded, non-blocking) and send the
 * FIN behind the reply first, as server_refuse() does. */
static void smtpd_session_half_close(struct smtpd_session *s)
{
	char junk[4096];
	int fd = (int)bufferevent_getfd(s->bev);
	if (fd < 0)
		return;
	for (int i = 0; i < 16 && recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
		;
	shutdown(fd, SHUT_WR);
}

void smtpd_session_free(struct smtpd_session **sp)
{
	struct smtpd_session *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	double secs = (double)(smtpd_now_us() - s->started_us) / 1e6;
	smtpd_reject_log_report(s);
	log_info("event=disconnect sid=%s client=%s rdns=%s messages=%u errors=%u duration=%.3f",
		 s->sid, s->client_addr,
		 s->client.rdns_status == POLICY_RDNS_CONFIRMED ? s->client.rdns : "unknown",
		 s->messages, s->errors, secs);
	smtpd_session_policy_cancel(s);
	policy_client_clear(&s->client);
	smtpd_tx_reset(s);
	smtpd_auth_abort(s);
	free(s->auth_user);
	if (s->bev != NULL) {
		/* Not an error close (those free s->bev in the event callback):
		 * end TLS with close_notify (issue 8: GnuTLS peers log every
		 * session as "non-properly terminated" without it), before the
		 * FIN of the half close. A shut session also stays in the
		 * server cache, which TLS 1.2 session-ID resumption needs
		 * (tls.session_tickets false). */
		if (s->tls_active)
			tls_bufferevent_close_notify(s->bev);
		smtpd_session_half_close(s);
		bufferevent_free(s->bev);
	}
	if (s->deadline_ev != NULL)
		event_free(s->deadline_ev);
	if (s->free_ev != NULL)
		event_free(s->free_ev);
	if (s->greet_ev != NULL)
		event_free(s->greet_ev);
	smtpd_server_session_gone(s->srv, s);
	free(s->line);
	free(s);
}

/* AUTH command lines and SASL responses may be longer than other
 * commands (RFC 4954 §4). */
static bool smtpd_line_is_auth(struct smtpd_session *s, struct evbuffer *in)
{
	unsigned char head[5];
	if (s->state == SMTPD_S_AUTH)
		return true;
	if (evbuffer_copyout(in, head, sizeof(head)) != (ssize_t)sizeof(head))
		return false;
	return str_case_prefix((const char *)head, sizeof(head), "AUTH ");
}

/* The 500 to an over-long SASL response is the AUTH command's final reply
 * (RFC 4954 §4): the exchange is over, so the next line is a command again,
 * never read as a response. */
static void smtpd_session_line_too_long(struct smtpd_session *s, size_t limit)
{
	s->cur_verb = NULL;
	if (s->state == SMTPD_S_AUTH) {
		smtpd_auth_abort(s);
		smtpd_session_set_state(s, SMTPD_S_READY);
	}
	smtpd_reply(s, 500, "5.5.2", "Line too long (limit %zu octets)", limit);
}

/* Did the client send more after this command line without waiting for
 * its reply, while PIPELINING (RFC 2920 §3.1) is not in effect: before the
 * reply to EHLO (the line is an EHLO or HELO, or none came yet), or in a
 * HELO session? A client that waited for our reply cannot have sent more
 * yet: the reply is written only after this line is processed. */
static bool smtpd_session_unauth_pipelining(const struct smtpd_session *s, struct evbuffer *in,
					    const char *line)
{
	if (!s->srv->conf->filter.reject_unauth_pipelining || evbuffer_get_length(in) == 0)
		return false;
	return !s->esmtp || str_case_prefix(line, 5, "EHLO ") || str_case_prefix(line, 5, "HELO ");
}

/* One command line from in, or false if a whole line is not there yet.
 * Lines end at LF; an LF without CR before it is refused, never obeyed as a
 * line end of a different command (RFC 5321 §2.3.8: lines end with CRLF). */
static bool smtpd_session_read_line(struct smtpd_session *s, struct evbuffer *in)
{
	size_t limit = s->srv->conf->limits.command_line;
	size_t avail = evbuffer_get_length(in);
	struct evbuffer_ptr end = evbuffer_search_range(in, "\n", 1, NULL, NULL);
	if (limit < SMTPD_AUTH_LINE_MAX + 2 && smtpd_line_is_auth(s, in))
		limit = SMTPD_AUTH_LINE_MAX + 2;
	if (end.pos < 0) {
		if (s->discard_line) {
			evbuffer_drain(in, avail);
			return false;
		}
		if (avail > limit) {
			evbuffer_drain(in, avail);
			s->discard_line = true;
			smtpd_session_line_too_long(s, limit);
			return true;
		}
		return false;
	}
	size_t linelen = (size_t)end.pos + 1;
	if (s->discard_line) {
		evbuffer_drain(in, linelen);
		s->discard_line = false;
		return true;
	}
	if (linelen > limit) {
		evbuffer_drain(in, linelen);
		smtpd_session_line_too_long(s, limit);
		return true;
	}
	if (linelen + 1 > s->line_cap) {
		s->line = xrealloc(s->line, linelen + 1);
		s->line_cap = linelen + 1;
	}
	evbuffer_remove(in, s->line, linelen);
	s->line[linelen] = '\0';
	if (linelen < 2 || s->line[linelen - 2] != '\r') {
		s->cur_verb = NULL;
		smtpd_reply(s, 500, "5.5.2", "Command line must end with CRLF");
		return true;
	}
	if (s->state != SMTPD_S_AUTH && smtpd_session_unauth_pipelining(s, in, s->line)) {
		s->cur_verb = NULL;
		log_info("event=unauth_pipelining sid=%s client=%s state=%s", s->sid, s->client_addr,
			 smtpd_state_names[s->state]);
		smtpd_reply(s, 554, "5.5.0", "Error: improper command pipelining");
		smtpd_session_close(s);
		return true;
	}
	if (s->state == SMTPD_S_AUTH)
		smtpd_auth_response(s, s->line, linelen - 2);
	else
		smtpd_cmd_dispatch(s, s->line, linelen - 2);
	if (s->line_cap > s->srv->conf->limits.command_line + 1 && s->state != SMTPD_S_AUTH) {
		/* an AUTH line grew it: give the memory back (and wipe it) */
		explicit_bzero(s->line, s->line_cap);
		s->line_cap = s->srv->conf->limits.command_line + 1;
		s->line = xrealloc(s->line, s->line_cap);
	}
	return true;
}

/* RFC 5321 §3.1: the client waits for the greeting. One that talks first
 * is a robot that does not read replies (postscreen's "pregreet"). */
static void smtpd_session_early_talker(struct smtpd_session *s)
{
	log_info("event=early_talker sid=%s client=%s", s->sid, s->client_addr);
	s->greeting_pending = false;
	s->cur_verb = "CONNECT";
	smtpd_reply(s, 554, "5.5.0", "%s Protocol error: talking before the greeting",
		    s->srv->conf->hostname);
	smtpd_session_close(s);
}

/* Is this session watched for talking first? Only during a greeting
 * delay (filter.greet_delay), which neither an allowed network nor a
 * submission listener's client (a mail program, RFC 6409) gets. */
static bool smtpd_session_early_checked(const struct smtpd_session *s)
{
	const struct conf_filter *f = &s->srv->conf->filter;
	return f->reject_early_talkers && f->greet_delay > 0 && !s->lconf->submission &&
	       s->client.access != POLICY_ACCESS_ALLOW;
}

/* Has the client sent anything yet? What libevent read, or what waits in
 * the socket (a plain one: with implicit TLS the client speaks first). */
static bool smtpd_session_input_waiting(struct smtpd_session *s)
{
	if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0)
		return true;
	if (s->lconf->tls == CONF_TLS_IMPLICIT)
		return false;
	char c;
	int fd = (int)bufferevent_getfd(s->bev);
	return fd >= 0 && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static void smtpd_session_greet(struct smtpd_session *s)
{
	if (s->state == SMTPD_S_CLOSING || s->bev == NULL)
		return;
	if (smtpd_session_early_checked(s) && smtpd_session_input_waiting(s)) {
		smtpd_session_early_talker(s);
		return;
	}
	s->greeting_pending = false;
	smtpd_reply(s, 220, NULL, "%s ESMTP hikyaku", s->srv->conf->hostname);
	smtpd_session_process(s); /* what came meanwhile, when talking first is allowed */
}

static void smtpd_session_on_greet(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	smtpd_session_greet(arg);
}

/* Stopping (SIGTERM, smtpd_shutdown): a session outside a transaction
 * gets 421 and is closed at once; one in a transaction comes back here
 * when it ends (250 or an error, RSET), and is closed then. Before a
 * command is read, so pipelined commands behind a transaction's end are
 * not started (RFC 5321 §3.8: 421 at any point). */
static bool smtpd_session_stop_between_tx(struct smtpd_session *s)
{
	if (!s->srv->shutting_down || (s->state != SMTPD_S_INIT && s->state != SMTPD_S_READY))
		return false;
	smtpd_reply(s, 421, "4.3.2", "%s Service shutting down, closing connection",
		    s->srv->conf->hostname);
	smtpd_session_close(s);
	return true;
}

static void smtpd_session_process(struct smtpd_session *s)
{
	bool out_full = false;
	if (s->greeting_pending && smtpd_session_early_checked(s) &&
	    evbuffer_get_length(bufferevent_get_input(s->bev)) > 0) {
		smtpd_session_early_talker(s);
		return;
	}
	for (;;) {
		if (s->state == SMTPD_S_CLOSING || smtpd_session_busy(s) || s->greeting_pending)
			break;
		if (smtpd_session_stop_between_tx(s))
			break;
		/* fetched each time: STARTTLS replaces s->bev */
		struct evbuffer *in = bufferevent_get_input(s->bev);
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) > SMTPD_OUT_HIGH) {
			out_full = true;
			break;
		}
		bool progress;
		if (s->state == SMTPD_S_DATA || s->state == SMTPD_S_BDAT)
			progress = smtpd_data_input(s, in);
		else
			progress = smtpd_session_read_line(s, in);
		if (!progress)
			break;
	}
	if (s->state == SMTPD_S_CLOSING)
		return;
	/* Reading stops while a commit is pending or replies pile up; the
	 * write callback resumes it. While a policy verdict is pending it goes
	 * on up to the input watermark (SMTPD_IN_HIGH), unprocessed: so a
	 * client that resets the connection is seen and its checks are
	 * cancelled at once, not when they end (after an EOF there is nothing
	 * more to see). */
	bool policy_wait = (s->pending != NULL || s->connect_run != NULL) && !s->gone;
	if ((smtpd_session_busy(s) && !policy_wait) || out_full)
		bufferevent_disable(s->bev, EV_READ);
	else
		bufferevent_enable(s->bev, EV_READ);
}

void smtpd_session_resume(struct smtpd_session *s)
{
	if (s->bev != NULL && s->state != SMTPD_S_CLOSING)
		smtpd_session_process(s);
}

static void smtpd_session_on_read(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	/* A TLS 1.3 client sends its EHLO right behind its Finished, and
	 * libevent may hand us that data before BEV_EVENT_CONNECTED: the
	 * session must be on TLS (no STARTTLS again, AUTH offered) first. */
	if (!s->tls_active) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);
		if (ssl != NULL && SSL_is_init_finished(ssl))
			smtpd_tls_handshake_done(s);
	}
	smtpd_session_process(s);
}

static void smtpd_session_on_write(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	if (s->state == SMTPD_S_CLOSING) {
		if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 && s->free_ev != NULL) {
			struct timeval now = {0, 0};
			evtimer_add(s->free_ev, &now);
		}
		return;
	}
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		smtpd_session_process(s);
	else if (!smtpd_session_busy(s))
		bufferevent_enable(bev, EV_READ);
}

static void smtpd_session_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct smtpd_session *s = arg;
	if (what & BEV_EVENT_CONNECTED) {
		smtpd_tls_handshake_done(s); /* bufferevent_openssl: handshake over */
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		log_info("event=timeout sid=%s client=%s state=%s", s->sid, s->client_addr,
			 smtpd_state_names[s->state]);
		if (!s->tls_active && bufferevent_openssl_get_ssl(s->bev) != NULL) {
			/* tls.handshake_timeout: no reply can pass an unfinished
			 * handshake, so close now rather than linger for one. */
			log_info("event=tls_failed sid=%s client=%s handshake=incomplete "
				 "reason=timeout", s->sid, s->client_addr);
			bufferevent_disable(s->bev, EV_READ | EV_WRITE);
			smtpd_session_set_state(s, SMTPD_S_CLOSING);
			if (s->free_ev == NULL)
				s->free_ev = evtimer_new(s->srv->base, smtpd_session_on_free, s);
			struct timeval now = {0, 0};
			evtimer_add(s->free_ev, &now);
			return;
		}
		if (s->state != SMTPD_S_CLOSING) {
			smtpd_reply(s, 421, "4.4.2", "%s Timeout exceeded, closing connection",
				    s->srv->conf->hostname);
			smtpd_session_close(s);
		}
		if (s->state == SMTPD_S_CLOSING && (what & BEV_EVENT_WRITING)) {
			struct timeval now = {0, 0};
			evtimer_add(s->free_ev, &now);
		}
		return;
	}
	/* EOF or error: the client is gone. */
	if (what & BEV_EVENT_ERROR)
		smtpd_tls_log_error(s);
	if (s->tx != NULL && s->state != SMTPD_S_COMMIT)
		log_info("event=lost sid=%s client=%s state=%s qid=%s", s->sid, s->client_addr,
			 smtpd_state_names[s->state], s->tx->env.qid[0] ? s->tx->env.qid : "-");
	if (!(what & BEV_EVENT_ERROR)) {
		/* A clean EOF may be a half-close after a pipelined batch: the
		 * replies queued (or the 250 of a commit in flight) are still
		 * owed, so flush them before the socket is closed. */
		smtpd_session_close(s);
		return;
	}
	bufferevent_free(s->bev);
	s->bev = NULL;
	smtpd_session_policy_cancel(s);
	if (smtpd_session_busy(s)) {
		s->gone = true;
		return;
	}
	smtpd_session_set_state(s, SMTPD_S_CLOSING);
	if (s->free_ev == NULL)
		s->free_ev = evtimer_new(s->srv->base, smtpd_session_on_free, s);
	struct timeval now = {0, 0};
	evtimer_add(s->free_ev, &now);
}

static void smtpd_session_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct smtpd_session *s = arg;
	log_info("event=deadline sid=%s client=%s state=%s", s->sid, s->client_addr,
		 smtpd_state_names[s->state]);
	if (smtpd_session_busy(s)) {
		s->gone = true; /* the commit or AUTH completion ends it */
		return;
	}
	if (s->state == SMTPD_S_CLOSING)
		return; /* the linger timer ends it */
	smtpd_reply(s, 421, "4.4.2", "%s Session deadline exceeded, closing connection",
		    s->srv->conf->hostname);
	smtpd_session_close(s);
}

/* (Re)install our callbacks on s->bev: at accept, and after STARTTLS put a
 * TLS filter on top of the socket. */
void smtpd_session_attach(struct smtpd_session *s)
{
	bufferevent_setcb(s->bev, smtpd_session_on_read, smtpd_session_on_write,
			  smtpd_session_on_event, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTPD_IN_HIGH);
}

bool smtpd_session_start(struct smtpd *srv, int fd, const struct sockaddr *sa, socklen_t salen,
			 const char *listener, const struct conf_listener *lconf,
			 const struct ucred *local)
{
	const struct conf *conf = srv->conf;
	struct smtpd_session *s = xcalloc(1, sizeof(*s));
	s->srv = srv;
	s->started_us = smtpd_now_us();
	snprintf(s->sid, sizeof(s->sid), "%012llx", (unsigned long long)srv->next_sid++);
	memcpy(&s->client_ss, sa, salen < sizeof(s->client_ss) ? salen : sizeof(s->client_ss));
	if (local != NULL) {
		s->local = true;
		s->local_uid = local->uid;
		s->local_pid = local->pid;
		snprintf(s->client_addr, sizeof(s->client_addr), "local");
	} else {
		net_host_str(sa, s->client_addr, sizeof(s->client_addr));
		s->client_port = sa->sa_family == AF_INET
					 ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
					 : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	}
	snprintf(s->listener, sizeof(s->listener), "%s", listener);
	s->lconf = lconf;
	s->line_cap = conf->limits.command_line + 1;
	s->line = xmalloc(s->line_cap);
	s->state = SMTPD_S_INIT;
	logrl_init(&s->reject_rl, SMTPD_REJECT_LOG_BURST, SMTPD_REJECT_LOG_WINDOW_US);

	if (lconf->tls == CONF_TLS_IMPLICIT) {
		if (!smtpd_tls_wrap_accept(s, fd)) {
			log_warn("event=tls_failed sid=%s client=%s handshake=none "
				 "reason=\"cannot set up implicit TLS\"", s->sid, s->client_addr);
			close(fd);
			free(s->line);
			free(s);
			return false;
		}
	} else {
		s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
		smtpd_session_timeouts(s, false);
	}
	smtpd_session_attach(s);
	s->deadline_ev = evtimer_new(srv->base, smtpd_session_on_deadline, s);
	struct timeval dl = smtpd_tv(conf->timeouts.session);
	evtimer_add(s->deadline_ev, &dl);

	s->next = srv->sessions;
	if (srv->sessions != NULL)
		srv->sessions->prev = s;
	srv->sessions = s;
	srv->n_sessions++;

	if (s->local)
		log_info("event=connect sid=%s client=local uid=%u pid=%ld listener=local", s->sid,
			 (unsigned)s->local_uid, (long)s->local_pid);
	else
		log_info("event=connect sid=%s client=%s port=%u listener=%s", s->sid,
			 s->client_addr, s->client_port, s->listener);
	s->greeting_pending = true;
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	/* The connect chain (access lists, DNS lists, FCrDNS) runs while the
	 * client greets us; a denied network is refused from inside it. */
	s->client.ss = s->client_ss;
	snprintf(s->client.addr, sizeof(s->client.addr), "%s", s->client_addr);
	s->client.sid = s->sid;
	s->client.local = s->local;
	/* A local submission is a user of this host: trusted as an allowed
	 * network is (no DNS lists, greylisting, per-client rates). */
	if (s->local)
		s->client.access = POLICY_ACCESS_ALLOW;
	s->creq.client = &s->client;
	s->preq.client = &s->client;
	s->connect_run = policy_run(srv->policy->engine, POLICY_CONNECT, &s->creq,
				    smtpd_session_on_connect_verdict, s);
	if (s->state == SMTPD_S_CLOSING)
		return true;
	if (s->connect_run != NULL && conf->n_milters > 0) {
		/* the milters answer CONNECT before the greeting: a refusal
		 * is said instead of it (smtpd_session_on_connect_verdict) */
		s->greet_after_connect = true;
		return true;
	}
	smtpd_session_greet_start(s);
	return true;
}

/* The greeting, now or after filter.greet_delay. */
static void smtpd_session_greet_start(struct smtpd_session *s)
{
	const struct conf *conf = s->srv->conf;
	if (conf->filter.greet_delay == 0 || s->client.access == POLICY_ACCESS_ALLOW ||
	    s->lconf->submission || s->local) {
		smtpd_session_greet(s);
		return;
	}
	/* filter.greet_delay: whatever the client sends meanwhile ends it */
	s->greet_ev = evtimer_new(s->srv->base, smtpd_session_on_greet, s);
	struct timeval gd = smtpd_tv(conf->filter.greet_delay);
	evtimer_add(s->greet_ev, &gd);
}
