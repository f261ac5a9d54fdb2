/* cmd_auth.c — SMTP AUTH (RFC 4954) for smtpd: the command, the 334
 * exchange and the replies. The SASL state machine, the password checks and
 * the failure counting with its slow-down and lock-out run in the auth
 * service (auth/authd.c); this file relays each decoded response to it
 * through auth/authc.h and turns its answers into replies. smtpd never
 * sees a secret.
 *
 * Runs in smtpd on the event loop. The responses are hostile and carry
 * secrets: they are decoded, handed on and wiped, in the session's line
 * buffer too; no credential or AUTH payload ever reaches a log line. If
 * the auth service is gone, AUTH answers 454 4.7.0 and the session goes
 * on. */
#include "smtpd/session.h"
#include "auth/authc.h"
#include "auth/passwd.h"
#include "auth/sasl.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/log.h"
#include "lib/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void auth_lockout(struct smtpd_session *s, const char *why)
{
	log_info("event=auth_lockout sid=%s client=%s", s->sid, s->client_addr);
	smtpd_reply(s, 421, "4.7.0", "%s Too many authentication failures, %s",
	            s->srv->conf->hostname, why);
	smtpd_session_close(s);
}

bool smtpd_auth_offered(const struct smtpd_session *s)
{
	return s->lconf->auth && s->srv->authc != NULL && authc_has_users(s->srv->authc) &&
	       (s->tls_active || s->lconf->plaintext_auth);
}

const char *smtpd_auth_line(struct smtpd_session *s)
{
	struct smtpd *srv = s->srv;
	unsigned mechs = srv->authc != NULL ? authc_mechs(srv->authc) : 0;
	size_t off = (size_t)snprintf(srv->auth_line, sizeof(srv->auth_line), "250-AUTH");
	for (int m = SASL_PLAIN; m <= SASL_SCRAM_SHA_256; m++)
		if (mechs & SASL_MECH_BIT(m))
			off += (size_t)snprintf(srv->auth_line + off, sizeof(srv->auth_line) - off,
			                        " %s", sasl_mech_name((enum sasl_mech)m));
	snprintf(srv->auth_line + off, sizeof(srv->auth_line) - off, "\r\n");
	return srv->auth_line;
}

void smtpd_auth_abort(struct smtpd_session *s)
{
	/* The service gives the reservation back if the exchange was left
	 * midway (cancelled, bad base64, an over-long response, the client
	 * gone); one whose password is out for verification keeps it. */
	if (s->auth_xid != 0 && s->srv->authc != NULL)
		authc_exchange_end(s->srv->authc, s->auth_sess, s->auth_xid, &s->auth_req);
	s->auth_xid = 0;
	s->auth_req = NULL;
}

/* The exchange is over on both sides. */
static void auth_done(struct smtpd_session *s)
{
	s->auth_xid = 0;
	smtpd_session_set_state(s, SMTPD_S_READY);
}

static void auth_end(struct smtpd_session *s)
{
	smtpd_auth_abort(s);
	smtpd_session_set_state(s, SMTPD_S_READY);
}

/* An answer came while the session waited: it may have lost its client. */
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

static void auth_tempfail(struct smtpd_session *s)
{
	auth_end(s);
	smtpd_reply(s, 454, "4.7.0", "Temporary authentication failure");
}

static void auth_challenge(struct smtpd_session *s, const unsigned char *data, size_t len)
{
	struct buf b64;
	buf_init(&b64, 0);
	buf_append_str(&b64, "334 ");
	base64_encode(data, len, &b64);
	buf_append_str(&b64, "\r\n");
	smtpd_reply_raw(s, (const char *)b64.data, b64.len);
	buf_free(&b64);
	smtpd_session_set_state(s, SMTPD_S_AUTH);
}

static void auth_succeeded(struct smtpd_session *s, const char *user)
{
	s->auth_user = xstrdup(user);
	char qu[LOG_Q_MAX];
	metrics_inc(METRIC_AUTH_SUCCESS);
	log_info("event=auth sid=%s client=%s mech=%s user=%s", s->sid, s->client_addr,
	         sasl_mech_name((enum sasl_mech)s->sasl_mech), log_qs(qu, s->auth_user));
	auth_done(s);
	smtpd_reply(s, 235, "2.7.0", "Authentication successful");
}

/* The service delayed the answer by what the address's failures earn and
 * says whether the address is now locked out. */
static void auth_failed(struct smtpd_session *s, unsigned failures, bool lockout)
{
	metrics_inc(METRIC_AUTH_FAILURE);
	log_info("event=auth_failed sid=%s client=%s mech=%s failures=%u", s->sid, s->client_addr,
	         sasl_mech_name((enum sasl_mech)s->sasl_mech), failures);
	auth_done(s);
	smtpd_reply(s, 535, "5.7.8", "Authentication credentials invalid");
	if (lockout)
		auth_lockout(s, "closing");
}

static void auth_on_answer(void *arg, const struct authc_step_result *r)
{
	struct smtpd_session *s = arg;
	s->auth_req = NULL;
	if (r->status != AUTHC_CHALLENGE)
		s->auth_xid = 0; /* over at the service: nothing to cancel */
	if (auth_session_gone(s))
		return;
	switch (r->status) {
	case AUTHC_CHALLENGE:
		auth_challenge(s, r->data, r->len);
		break;
	case AUTHC_OK:
		auth_succeeded(s, r->user);
		break;
	case AUTHC_FAIL:
		auth_failed(s, r->failures, r->lockout);
		if (r->lockout)
			return;
		break;
	case AUTHC_LOCKED:
		auth_done(s);
		auth_lockout(s, "try later");
		return;
	case AUTHC_MALFORMED:
		auth_done(s);
		if (s->auth_bad_b64)
			smtpd_reply(s, 501, "5.5.2", "Invalid base64 in authentication exchange");
		else
			smtpd_reply(s, 501, "5.5.2", "Malformed authentication exchange");
		break;
	case AUTHC_TEMPFAIL:
		auth_tempfail(s);
		break;
	}
	smtpd_session_resume(s);
}

/* Decode one response (or the initial one) and send it to the service;
 * mech >= 0 on the first step. b64 points into the session's line buffer
 * and is wiped here. */
static void auth_step(struct smtpd_session *s, int mech, bool has_data, const char *b64, size_t len)
{
	struct buf in;
	buf_init(&in, SASL_RESPONSE_MAX);
	bool bad = has_data && !(len == 1 && b64[0] == '=') && base64_decode(b64, len, &in) < 0;
	if (has_data)
		explicit_bzero((char *)b64, len);
	if (bad && mech < 0) {
		auth_end(s); /* no guess was made: the service gives it back */
		smtpd_reply(s, 501, "5.5.2", "Invalid base64 in authentication exchange");
	} else {
		/* A bad initial response still goes: the exchange's guess is
		 * reserved (a locked-out address gets its 421) and given back. */
		s->auth_bad_b64 = bad;
		s->auth_req = authc_step(s->srv->authc, s->auth_sess, s->auth_xid, mech,
		                         mech >= 0 ? &s->client_ss : NULL, has_data, bad, in.data,
		                         in.len, auth_on_answer, s);
		if (s->auth_req == NULL)
			auth_tempfail(s);
		else
			smtpd_session_set_state(s, SMTPD_S_AUTH_WAIT);
	}
	if (in.data != NULL)
		passwd_wipe(in.data, in.cap);
	buf_free(&in);
}

void smtpd_cmd_auth(struct smtpd_session *s, const char *args, size_t len)
{
	struct authc *c = s->srv->authc;
	if (!s->esmtp) {
		smtpd_reply(s, 503, "5.5.1", "Send EHLO first");
		return;
	}
	if (s->auth_user != NULL) {
		smtpd_reply(s, 503, "5.5.1", "Already authenticated");
		return;
	}
	if (!s->lconf->auth || c == NULL || !authc_has_users(c)) {
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
	    (authc_mechs(c) & SASL_MECH_BIT(mech)) == 0) {
		smtpd_reply(s, 504, "5.5.4", "Unrecognized authentication type");
		return;
	}
	if (!authc_connected(c)) {
		smtpd_reply(s, 454, "4.7.0", "Temporary authentication failure");
		return;
	}
	/* The service reserves the exchange's guess before any is evaluated:
	 * parallel sessions from one address share auth.max_failures (issue
	 * 8), across smtpd processes too. */
	if (s->auth_sess == 0)
		s->auth_sess = authc_new_id(c);
	s->auth_xid = authc_new_id(c);
	s->sasl_mech = (int)mech;
	if (sp != NULL)
		auth_step(s, (int)mech, true, sp + 1, len - mlen - 1);
	else
		auth_step(s, (int)mech, false, NULL, 0);
}

void smtpd_auth_response(struct smtpd_session *s, const char *line, size_t len)
{
	if (len == 1 && line[0] == '*') {
		auth_end(s); /* a cancel is not a guess: the reservation goes back */
		smtpd_reply(s, 501, "5.7.0", "Authentication cancelled");
		return;
	}
	auth_step(s, -1, true, line, len);
}
