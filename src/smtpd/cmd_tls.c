/* cmd_tls.c — STARTTLS (RFC 3207) and implicit TLS (RFC 8314) for smtpd.
 * Runs in smtpd on the event loop; the TLS records are parsed by OpenSSL
 * inside libevent's bufferevent_openssl, never blocking the loop.
 *
 * RFC 3207 §4.2: after the handshake the session starts over. Everything
 * the client sent in plaintext behind STARTTLS is discarded unread, never
 * executed (the CVE-2011-0411 command injection), and the EHLO, the
 * transaction and any AUTH login are forgotten. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "tls/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

bool smtpd_tls_offered(const struct smtpd_session *s)
{
	return s->srv->tls != NULL && s->lconf->tls == CONF_TLS_STARTTLS && !s->tls_active;
}

/* libevent reserves room for its largest single read on every SSL read (16
 * KiB, rounded up to a 32 KiB chunk) and an idle session keeps that chunk.
 * SMTP commands are short: 4 KiB reads keep an idle TLS session small. */
#define SMTPD_TLS_READ_MAX 4096

static void tls_read_size(struct smtpd_session *s)
{
	bufferevent_set_max_single_read(s->bev, SMTPD_TLS_READ_MAX);
}

static void tls_handshake_timeouts(struct smtpd_session *s)
{
	uint64_t ms = s->srv->conf->tls.handshake_timeout;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)((ms % 1000) * 1000)};
	bufferevent_set_timeouts(s->bev, &tv, &tv);
}

bool smtpd_tls_wrap_accept(struct smtpd_session *s, int fd)
{
	if (s->srv->tls == NULL) {
		log_err("event=tls_error sid=%s reason=\"implicit TLS listener without TLS\"",
			s->sid);
		return false;
	}
	SSL *ssl = tls_server_new_ssl(s->srv->tls);
	if (ssl == NULL)
		return false;
	s->bev = bufferevent_openssl_socket_new(s->srv->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
						BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		SSL_free(ssl);
		return false;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	tls_read_size(s);
	tls_handshake_timeouts(s);
	return true;
}

void smtpd_cmd_starttls(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	if (len != 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: STARTTLS");
		return;
	}
	if (s->tls_active) {
		smtpd_reply(s, 503, "5.5.1", "TLS already active");
		return;
	}
	if (!smtpd_tls_offered(s)) {
		smtpd_reply(s, 454, "4.7.0", "TLS not available");
		return;
	}
	SSL *ssl = tls_server_new_ssl(s->srv->tls);
	if (ssl == NULL) {
		smtpd_reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return;
	}
	smtpd_reply(s, 220, "2.0.0", "Ready to start TLS");

	struct bufferevent *under = s->bev;
	struct evbuffer *in = bufferevent_get_input(under);
	size_t junk = evbuffer_get_length(in);
	if (junk > 0) {
		log_info("event=starttls_injection sid=%s client=%s discarded=%zu", s->sid,
			 s->client_addr, junk);
		evbuffer_drain(in, junk);
	}
	/* RFC 3207 §4.2: discard all knowledge obtained from the client,
	 * including a login: AUTH sent in plaintext may have been injected by
	 * someone on the path, and must not carry over into TLS. */
	smtpd_tx_reset(s);
	s->helo[0] = '\0';
	s->esmtp = false;
	smtpd_auth_abort(s);
	free(s->auth_user);
	s->auth_user = NULL;
	smtpd_session_set_state(s, SMTPD_S_INIT);

	/* The 220 is already queued on the socket bufferevent; the filter
	 * writes its handshake records behind it, so the order on the wire
	 * is right. */
	bufferevent_set_timeouts(under, NULL, NULL);
	s->bev = bufferevent_openssl_filter_new(s->srv->base, under, ssl,
						BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		SSL_free(ssl);
		s->bev = under;
		smtpd_session_close(s);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(s->bev, 1);
	tls_read_size(s);
	smtpd_session_attach(s);
	tls_handshake_timeouts(s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

void smtpd_tls_handshake_done(struct smtpd_session *s)
{
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	if (ssl == NULL || s->tls_active)
		return; /* the read callback may have seen the end first */
	s->tls_active = true;
	tls_describe(ssl, s->tls_info, sizeof(s->tls_info));
	int v = SSL_version(ssl);
	metrics_inc(v == TLS1_3_VERSION   ? METRIC_TLS_V13
		    : v == TLS1_2_VERSION ? METRIC_TLS_V12
					  : METRIC_TLS_OTHER);
	log_info("event=tls sid=%s client=%s tls=\"%s\" resumed=%s", s->sid, s->client_addr,
		 s->tls_info, SSL_session_reused(ssl) ? "yes" : "no");
	smtpd_session_timeouts(s, false);
}

void smtpd_tls_log_error(struct smtpd_session *s)
{
	if (s->bev == NULL || bufferevent_openssl_get_ssl(s->bev) == NULL)
		return;
	unsigned long e, ssl_code = 0;
	bool any = false;
	if (!s->tls_active)
		metrics_inc(METRIC_TLS_FAILED);
	while ((e = bufferevent_get_openssl_error(s->bev)) != 0) {
		/* libevent queues SSL_get_error()'s code too ("lib(0)::
		 * reason(1)"): not an OpenSSL error, and it said nothing new */
		if (ERR_GET_LIB(e) == 0) {
			ssl_code = e;
			continue;
		}
		char reason[256];
		ERR_error_string_n(e, reason, sizeof(reason));
		log_info("event=tls_failed sid=%s client=%s handshake=%s reason=\"%s\"", s->sid,
			 s->client_addr, s->tls_active ? "done" : "incomplete", reason);
		any = true;
	}
	if (!any && ssl_code != 0)
		log_info("event=tls_failed sid=%s client=%s handshake=%s reason=\"ssl error %lu\"",
			 s->sid, s->client_addr, s->tls_active ? "done" : "incomplete", ssl_code);
	else if (!any && !s->tls_active)
		log_info("event=tls_failed sid=%s client=%s handshake=incomplete reason=eof",
			 s->sid, s->client_addr);
}
