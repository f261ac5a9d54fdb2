/* conn.c — connecting, the greeting, EHLO/LHLO/HELO, STARTTLS and AUTH.
 * Part of the SMTP/LMTP client (see client.c for the whole, and
 * client_int.h for the parts). Loop thread; every reply is hostile. */
#include "smtpc/client_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
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
#include "lib/log.h"
#include "tls/tls.h"

static enum smtpc_go session_auth_start(struct smtpc_session *s);

/* --- connecting ----------------------------------------------------------- */

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
void smtpc_session_connect(struct smtpc_session *s)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	const char *why = NULL;

	smtp_reply_parser_init(&s->parser);
	memset(&s->caps, 0, sizeof(s->caps));
	s->helo_tried = s->tls_active = s->authed = s->pipelining = false;
	s->auth_step = 0;
	s->res.tls_info[0] = '\0';
	smtpc_session_set_state(s, SMTPC_S_CONNECT);
	if (session_target_addr(s, &ss, &sslen, &why) < 0) {
		smtpc_session_record(s, false, 0, "4.4.1", "%s", why);
		smtpc_session_next_target(s);
		return;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		smtpc_session_record(s, false, 0, "4.4.1", "socket: %s", strerror(errno));
		smtpc_session_next_target(s);
		return;
	}
	s->bev = bufferevent_socket_new(s->c->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (s->bev == NULL) {
		close(fd);
		smtpc_session_record(s, false, 0, "4.4.1", "%s", "cannot create a bufferevent");
		smtpc_session_next_target(s);
		return;
	}
	bufferevent_setcb(s->bev, smtpc_session_on_read, NULL, smtpc_session_on_event, s);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("smtpc: connect relay=%s addr=%s", s->res.remote_mta, s->res.remote_addr);
	uint64_t t = s->dest->connect_timeout_ms != 0 ? s->dest->connect_timeout_ms
	                                              : SMTPC_CONNECT_TIMEOUT_MS;
	smtpc_session_timer_arm(s, t);
	if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&ss, (int)sslen) < 0) {
		smtpc_session_record(s, false, 0, "4.4.1", "connect to %s: %s", s->res.remote_addr,
		                     strerror(errno != 0 ? errno : ECONNREFUSED));
		smtpc_session_next_target(s);
	}
}

/* --- STARTTLS (RFC 3207) -------------------------------------------------- */

static enum smtpc_go session_tls_start(struct smtpc_session *s)
{
	const struct smtpc_target *t = s->dest->unix_path == NULL ? &s->dest->targets[s->ti] : NULL;
	const char *host = t != NULL ? t->host : "";
	SSL *ssl = SSL_new(s->c->ssl_ctx);

	if (ssl == NULL) {
		smtpc_session_record(s, false, 0, "4.7.5", "%s", "TLS: cannot create a session");
		return smtpc_session_next_target(s);
	}
	if (host[0] != '\0')
		SSL_set_tlsext_host_name(ssl, host); /* SNI, RFC 6066 §3 */
	if (s->dest->tls == SMTPC_TLS_VERIFY) {
		if (host[0] == '\0') {
			SSL_free(ssl);
			smtpc_session_record(
			    s, false, 0, "4.7.5", "%s",
			    "TLS required but not available: no host name to verify");
			return smtpc_session_next_target(s);
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
		smtpc_session_record(s, false, 0, "4.7.5", "%s", "TLS: cannot create a filter");
		return smtpc_session_next_target(s);
	}
	s->bev = f;
	bufferevent_openssl_set_allow_dirty_shutdown(f, 1);
	bufferevent_setcb(f, smtpc_session_on_read, NULL, smtpc_session_on_event, s);
	bufferevent_enable(f, EV_READ | EV_WRITE);
	smtpc_session_expect(s, SMTPC_S_TLS);
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

void smtpc_session_tls_failed(struct smtpc_session *s, short what)
{
	char why[256];

	session_tls_why(s, what, why, sizeof(why));
	smtpc_session_record(s, false, 0, "4.7.5", "TLS with %s failed: %s", s->res.remote_mta,
	                     why);
	if (s->dest->tls == SMTPC_TLS_MAY && !s->tls_fallback) {
		/* RFC 7435 §3: opportunistic TLS falls back to cleartext; a new
		 * connection, as the old one is in an unknown TLS state. */
		char qw[LOG_Q_MAX];
		log_warn("event=tls_fallback relay=%s addr=%s reason=%s", s->res.remote_mta,
		         s->res.remote_addr, log_qs(qw, why));
		s->tls_fallback = true;
		smtpc_session_close(s);
		smtpc_session_connect(s);
		return;
	}
	smtpc_session_next_target(s);
}

/* --- the steps ------------------------------------------------------------ */

enum smtpc_go smtpc_session_hello(struct smtpc_session *s)
{
	smtpc_session_send(s, "%s %s\r\n", s->dest->lmtp ? "LHLO" : "EHLO", s->dest->helo_name);
	smtpc_session_expect(s, SMTPC_S_EHLO);
	return SMTPC_GO;
}

/* After TLS is settled (or refused by policy MAY): AUTH, then the mail. */
static enum smtpc_go session_after_tls(struct smtpc_session *s)
{
	if (s->dest->auth_user != NULL && !s->authed)
		return session_auth_start(s);
	return smtpc_session_tx_start(s);
}

static enum smtpc_go session_after_hello(struct smtpc_session *s)
{
	if (!s->tls_active && s->dest->tls != SMTPC_TLS_NONE && !s->tls_fallback) {
		if (s->caps.starttls) {
			smtpc_session_send(s, "STARTTLS\r\n");
			smtpc_session_expect(s, SMTPC_S_STARTTLS);
			return SMTPC_GO;
		}
		if (s->dest->tls != SMTPC_TLS_MAY) {
			smtpc_session_record(
			    s, false, 0, "4.7.5", "%s",
			    "TLS required but not available: STARTTLS not offered");
			return smtpc_session_quit(s, true);
		}
	}
	return session_after_tls(s);
}

enum smtpc_go smtpc_session_on_greeting(struct smtpc_session *s, const struct smtp_reply *r)
{
	s->res.connected = true;
	if (r->code == 220)
		return smtpc_session_hello(s);
	/* RFC 5321 §3.1: 554 (or any refusal) — QUIT and try elsewhere */
	smtpc_session_record_reply(s, r, false);
	return smtpc_session_quit(s, true);
}

enum smtpc_go smtpc_session_on_ehlo(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 == 2) {
		smtp_ehlo_caps_parse(r, &s->caps);
		return session_after_hello(s);
	}
	/* RFC 5321 §3.2: a server that does not know EHLO gets HELO */
	if (!s->dest->lmtp && r->code / 100 == 5 && !s->helo_tried && !s->tls_active) {
		s->helo_tried = true;
		smtpc_session_send(s, "HELO %s\r\n", s->dest->helo_name);
		smtpc_session_expect(s, SMTPC_S_HELO);
		return SMTPC_GO;
	}
	smtpc_session_record_reply(s, r, false);
	return smtpc_session_quit(s, true);
}

enum smtpc_go smtpc_session_on_helo(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code / 100 != 2) {
		smtpc_session_record_reply(s, r, false);
		return smtpc_session_quit(s, true);
	}
	memset(&s->caps, 0, sizeof(s->caps)); /* HELO: no extensions at all */
	return session_after_hello(s);
}

enum smtpc_go smtpc_session_on_starttls(struct smtpc_session *s, const struct smtp_reply *r)
{
	if (r->code == 220) {
		/* RFC 3207 §5 / CVE-2011-0411: nothing may follow the 220 in
		 * plaintext; it would be taken as coming over TLS. */
		if (evbuffer_get_length(bufferevent_get_input(s->bev)) > 0 || s->parser.len > 0) {
			smtpc_session_record(s, false, 0, "4.7.5", "%s",
			                     "protocol error: data after the STARTTLS reply");
			return smtpc_session_next_target(s);
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
	smtpc_session_record(s, false, 0, "4.7.5",
	                     "TLS required but not available: STARTTLS: %d %s", r->code, t);
	return smtpc_session_quit(s, true);
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
		smtpc_session_record(s, false, 0, "4.7.0", "%s",
		                     "refusing to send AUTH credentials without TLS");
		return smtpc_session_quit(s, false);
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
		smtpc_session_send(s, "AUTH LOGIN\r\n");
		s->auth_step = 1;
	} else {
		smtpc_session_record(
		    s, false, 0, "4.7.0", "%s",
		    "credentials are set but the server offers neither AUTH PLAIN nor LOGIN");
		return smtpc_session_quit(s, false);
	}
	log_debug("smtpc: relay=%s AUTH %s", s->res.remote_mta,
	          s->caps.auth_plain ? "PLAIN" : "LOGIN");
	smtpc_session_expect(s, SMTPC_S_AUTH);
	return SMTPC_GO;
}

enum smtpc_go smtpc_session_on_auth(struct smtpc_session *s, const struct smtp_reply *r)
{
	if ((s->auth_step == 1 || s->auth_step == 2) && r->code == 334) {
		const char *v = s->auth_step == 1 ? s->dest->auth_user : s->dest->auth_pass;
		if (v == NULL)
			v = "";
		session_send_secret(s, "", v, strlen(v));
		s->auth_step++;
		smtpc_session_expect(s, SMTPC_S_AUTH);
		return SMTPC_GO;
	}
	if ((s->auth_step == 0 || s->auth_step == 3) && r->code / 100 == 2) {
		s->authed = true;
		return smtpc_session_tx_start(s);
	}
	/* A refused login is our configuration's problem, not the message's:
	 * temporary, with the server's reply recorded. */
	smtpc_session_record_reply(s, r, false);
	return smtpc_session_quit(s, false);
}
