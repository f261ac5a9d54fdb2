/* cmd_auth.c — SMTP AUTH (RFC 4954) for smtpd: the command, the 334
 * exchange, the off-loop password check, failure slow-down and lock-out
 * (each exchange reserves a guess in auth/authfail.c before it starts).
 * Runs in smtpd on the event loop. The responses are hostile and carry
 * secrets: they go to the SASL state machine (auth/sasl.c) and are wiped;
 * no credential or AUTH payload ever reaches a log line. */
#include "smtpd/session.h"
#include "auth/authfail.h"
#include "auth/passwd.h"
#include "auth/sasl.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/log.h"
#include "lib/workq.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

/* Each failure from an address delays its 535 a little more. */
#define AUTH_DELAY_STEP_MS 200
#define AUTH_DELAY_MAX_MS 2000

struct auth_verify {
	struct smtpd_session *s;
	char *stored;
	char *password;
	size_t password_len;
	bool ok;
};

static void auth_result(struct smtpd_session *s, enum sasl_result r, struct buf *out);

/* The failure table (auth/authfail.h) for this session's client address. */
static int auth_reserve(struct smtpd_session *s)
{
	const struct conf_auth *ca = &s->srv->conf->auth;
	return authfail_reserve(s->srv->authfail, &s->client_ss, smtpd_now_us() / 1000,
				ca->failure_window, (unsigned)ca->max_failures);
}

static void auth_release(struct smtpd_session *s)
{
	authfail_release(s->srv->authfail, &s->client_ss, smtpd_now_us() / 1000,
			 s->srv->conf->auth.failure_window);
}

static unsigned auth_failures(struct smtpd_session *s)
{
	return authfail_count(s->srv->authfail, &s->client_ss, smtpd_now_us() / 1000,
			      s->srv->conf->auth.failure_window);
}

static void auth_lockout(struct smtpd_session *s, const char *why)
{
	log_info("event=auth_lockout sid=%s client=%s", s->sid, s->client_addr);
	smtpd_reply(s, 421, "4.7.0", "%s Too many authentication failures, %s",
		    s->srv->conf->hostname, why);
	smtpd_session_close(s);
}

bool smtpd_auth_offered(const struct smtpd_session *s)
{
	return s->lconf->auth && s->srv->users != NULL &&
	       (s->tls_active || s->lconf->plaintext_auth);
}

void smtpd_auth_abort(struct smtpd_session *s)
{
	/* An exchange left midway (cancelled, bad base64, an over-long
	 * response, the client gone) made no guess: its reservation goes back.
	 * One whose password is out for verification keeps it. */
	if (s->sasl != NULL && sasl_server_midway(s->sasl))
		auth_release(s);
	sasl_server_free(&s->sasl);
	if (s->auth_ev != NULL) {
		event_free(s->auth_ev);
		s->auth_ev = NULL;
	}
}

static void auth_end(struct smtpd_session *s)
{
	smtpd_auth_abort(s);
	smtpd_session_set_state(s, SMTPD_S_READY);
}

/* A worker or timer finished: the session may have lost its client. */
static bool auth_session_gone(struct smtpd_session *s)
{
	if (s->bev == NULL) {
		smtpd_session_set_state(s, SMTPD_S_CLOSING);
		smtpd_session_free(&s);
		return true;
	}
	if (s->gone) {
		auth_end(s);
		smtpd_session_close(s);
		return true;
	}
	return false;
}

static void auth_verify_run(void *arg)
{
	struct auth_verify *v = arg;
	v->ok = passwd_verify(v->stored, v->password, v->password_len) == 1;
	passwd_wipe(v->password, v->password_len);
}

static void auth_verify_done(void *arg)
{
	struct auth_verify *v = arg;
	struct smtpd_session *s = v->s;
	bool ok = v->ok;
	free(v->password);
	free(v->stored);
	free(v);
	if (auth_session_gone(s))
		return;
	struct buf out;
	buf_init(&out, 4096);
	auth_result(s, sasl_server_verified(s->sasl, ok), &out);
	buf_free(&out);
	smtpd_session_resume(s);
}

static void auth_on_delay(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct smtpd_session *s = arg;
	if (auth_session_gone(s))
		return;
	auth_end(s);
	smtpd_reply(s, 535, "5.7.8", "Authentication credentials invalid");
	if (auth_failures(s) >= s->srv->conf->auth.max_failures) {
		auth_lockout(s, "closing");
		return;
	}
	smtpd_session_resume(s);
}

/* The guess was counted when AUTH reserved it (smtpd_cmd_auth). */
static void auth_failed(struct smtpd_session *s)
{
	unsigned n = auth_failures(s);
	if (n == 0)
		n = 1;
	log_info("event=auth_failed sid=%s client=%s mech=%s failures=%u", s->sid, s->client_addr,
		 sasl_mech_name((enum sasl_mech)s->sasl_mech), n);
	uint64_t ms = (uint64_t)n * AUTH_DELAY_STEP_MS;
	if (ms > AUTH_DELAY_MAX_MS)
		ms = AUTH_DELAY_MAX_MS;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
	sasl_server_free(&s->sasl);
	if (s->auth_ev == NULL)
		s->auth_ev = evtimer_new(s->srv->base, auth_on_delay, s);
	evtimer_add(s->auth_ev, &tv);
	smtpd_session_set_state(s, SMTPD_S_AUTH_WAIT);
}

static void auth_succeeded(struct smtpd_session *s)
{
	auth_release(s); /* a login is not a failure */
	s->auth_user = xstrdup(sasl_server_user(s->sasl));
	char qu[LOG_Q_MAX];
	log_info("event=auth sid=%s client=%s mech=%s user=%s", s->sid, s->client_addr,
		 sasl_mech_name((enum sasl_mech)s->sasl_mech), log_qs(qu, s->auth_user));
	auth_end(s);
	smtpd_reply(s, 235, "2.7.0", "Authentication successful");
}

static void auth_result(struct smtpd_session *s, enum sasl_result r, struct buf *out)
{
	switch (r) {
	case SASL_R_CONTINUE: {
		struct buf b64;
		buf_init(&b64, 0);
		buf_append_str(&b64, "334 ");
		base64_encode(out->data, out->len, &b64);
		buf_append_str(&b64, "\r\n");
		smtpd_reply_raw(s, (const char *)b64.data, b64.len);
		buf_free(&b64);
		smtpd_session_set_state(s, SMTPD_S_AUTH);
		return;
	}
	case SASL_R_VERIFY: {
		struct auth_verify *v = xcalloc(1, sizeof(*v));
		const char *pw = sasl_server_password(s->sasl);
		v->s = s;
		v->stored = xstrdup(sasl_server_stored(s->sasl));
		v->password_len = strlen(pw);
		v->password = xmemdup(pw, v->password_len + 1);
		smtpd_session_set_state(s, SMTPD_S_AUTH_WAIT);
		workq_submit(s->srv->auth_wq, auth_verify_run, auth_verify_done, v);
		return;
	}
	case SASL_R_OK:
		auth_succeeded(s);
		return;
	case SASL_R_FAIL:
		auth_failed(s);
		return;
	case SASL_R_MALFORMED: /* no guess was evaluated; the exchange is over */
		auth_release(s);
		auth_end(s);
		smtpd_reply(s, 501, "5.5.2", "Malformed authentication exchange");
		return;
	}
}

static void auth_step(struct smtpd_session *s, bool has_data, const char *b64, size_t len)
{
	struct buf in, out;
	buf_init(&in, SASL_RESPONSE_MAX);
	buf_init(&out, 4096);
	if (has_data && !(len == 1 && b64[0] == '=') && base64_decode(b64, len, &in) < 0) {
		auth_end(s);
		smtpd_reply(s, 501, "5.5.2", "Invalid base64 in authentication exchange");
	} else {
		auth_result(s, sasl_server_step(s->sasl, has_data, in.data, in.len, &out), &out);
	}
	if (in.data != NULL)
		passwd_wipe(in.data, in.cap);
	buf_free(&in);
	buf_free(&out);
}

void smtpd_cmd_auth(struct smtpd_session *s, const char *args, size_t len)
{
	if (!s->esmtp) {
		smtpd_reply(s, 503, "5.5.1", "Send EHLO first");
		return;
	}
	if (s->auth_user != NULL) {
		smtpd_reply(s, 503, "5.5.1", "Already authenticated");
		return;
	}
	if (!s->lconf->auth || s->srv->users == NULL) {
		smtpd_reply(s, 503, "5.5.1", "Authentication not enabled");
		return;
	}
	if (!smtpd_auth_offered(s)) {
		smtpd_reply(s, 530, "5.7.0", "Must issue a STARTTLS command first");
		return;
	}
	const char *sp = memchr(args, ' ', len);
	size_t mlen = sp != NULL ? (size_t)(sp - args) : len;
	enum sasl_mech mech;
	/* RFC 4954 §4: 504 for a mechanism we do not offer, even one we
	 * implement (auth.mechanisms, or not usable by every user). */
	if (mlen == 0 || sasl_mech_parse(args, mlen, &mech) < 0 ||
	    (s->srv->auth_mechs & SASL_MECH_BIT(mech)) == 0) {
		smtpd_reply(s, 504, "5.5.4", "Unrecognized authentication type");
		return;
	}
	/* Each exchange reserves its guess before any is evaluated: parallel
	 * sessions from one address share auth.max_failures instead of each
	 * getting a guess past the limit (issue 8). */
	if (auth_reserve(s) < 0) {
		auth_lockout(s, "try later");
		return;
	}
	s->sasl_mech = (int)mech;
	s->sasl = sasl_server_create(mech, s->srv->sasl_ctx);
	if (sp != NULL)
		auth_step(s, true, sp + 1, len - mlen - 1);
	else
		auth_step(s, false, NULL, 0);
}

void smtpd_auth_response(struct smtpd_session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		auth_end(s); /* a cancel is not a guess: the reservation goes back */
		smtpd_reply(s, 501, "5.7.0", "Authentication cancelled");
		return;
	}
	auth_step(s, true, line, len);
}
