/* tls.h — server-side TLS contexts on OpenSSL 3 (RFC 8446, RFC 5246).
 *
 * One tls_server holds an SSL_CTX per certificate; the first is the default
 * and SNI (RFC 6066 §3) switches to the one whose names match. Policy is
 * fixed here, not configurable: TLS 1.2 minimum, TLS 1.3 preferred, only
 * AEAD cipher suites with forward secrecy, server cipher preference,
 * compression and renegotiation off, SSL_MODE_RELEASE_BUFFERS so an idle
 * connection holds no record buffers. Session resumption works through the
 * server session cache and, unless switched off, session tickets.
 *
 * Reload (SIGHUP): build a new tls_server and free the old one; SSL objects
 * already handed out keep their own references to their SSL_CTX, so live
 * sessions are not disturbed.
 *
 * Runs in the master (loading, self-signed generation) and in smtpd
 * (tls_server_new_ssl, tls_describe). The peer's handshake is hostile, but it
 * is OpenSSL that parses it. */
#ifndef HK_TLS_TLS_H
#define HK_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

#include "lib/buf.h"

struct conf_tls;
struct tls_server;
struct keyproxy_client;

/* Build from tls.certificates (or, if there are none and
 * tls.self_signed_dir is set, from the self-signed pair there, generating
 * it first). Errors name the file and OpenSSL's reason. *tls_r is NULL with
 * return 0 when TLS is not configured at all. */
int tls_server_create(const struct conf_tls *conf, const char *hostname,
		      struct tls_server **tls_r, char *err, size_t errlen);
void tls_server_free(struct tls_server **tls);

/* A new server-side SSL (accept state) on the default context. */
SSL *tls_server_new_ssl(struct tls_server *tls);

/* Make sure dir/cert.pem and dir/key.pem exist: if missing, generate a
 * self-signed certificate for hostname (and "localhost", 127.0.0.1, ::1 as
 * subject alternative names), ECDSA P-256, valid 825 days, key file mode
 * 0600, written atomically (temp file + rename). */
int tls_self_signed_ensure(const char *dir, const char *hostname, char *err, size_t errlen);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)" style text for the
 * Received header and logs; out must hold 128 octets. */
const char *tls_describe(SSL *ssl, char *out, size_t outlen);

/* A clean end of a TLS connection that libevent's bufferevent_openssl would
 * end silently: send our close_notify (RFC 8446 §6.1; GnuTLS peers such as
 * Exim log "non-properly terminated" without it, and OpenSSL drops an
 * unshut session from its cache) just before bev is freed. The alert goes
 * out at once without blocking: through the socket BIO, or, for a filter
 * bufferevent, from the underlying bufferevent's output with send(2)
 * (MSG_DONTWAIT, MSG_NOSIGNAL). Does nothing for a bufferevent without TLS,
 * a handshake that did not finish, or after a fatal TLS error. Called on
 * QUIT and clean closes only, never on a protocol error. */
struct bufferevent;
void tls_bufferevent_close_notify(struct bufferevent *bev);

/* --- Keys held by the keys process (src/tls/keyproxy.h) --------------------
 *
 * The master reads every pair as root (tls_conf_read_pems, generating the
 * self-signed pair first if that is configured), gives the keys' PEM bytes to
 * the keys process (keyproxy_server_create_pem) and the certificates' to each
 * smtpd, which builds its contexts with tls_server_create_proxied_pem over
 * its socket to keys. Pair i is key index i in both, as in tls_server_create.
 * Signing then blocks the handshaking thread for one round trip to keys. */

#define TLS_PEM_MAX (1024 * 1024) /* one certificate chain or key file */

struct tls_pem {
	struct buf cert; /* leaf then chain */
	struct buf key;  /* the private key; empty when not asked for */
};

/* The configured pairs (or the self-signed one, generated if missing) as
 * PEM bytes; keys only if with_keys. *pems_r is NULL and *n_r 0 when TLS is
 * not configured. Errors name the file. */
int tls_conf_read_pems(const struct conf_tls *conf, const char *hostname, bool with_keys,
                       struct tls_pem **pems_r, size_t *n_r, char *err, size_t errlen);
/* Frees the array, wiping the keys. */
void tls_pems_free(struct tls_pem **pems, size_t n);

/* tls_server_create's contexts from certificate PEMs alone (pems[i].key is
 * not looked at): context i's private key is index i in the keys process
 * behind kc. The contexts keep references to kc. */
int tls_server_create_proxied_pem(const struct tls_pem *pems, size_t n, bool session_tickets,
                                  struct keyproxy_client *kc, struct tls_server **tls_r, char *err,
                                  size_t errlen);
/* The same, reading the certificate files named by conf (never the keys,
 * never generating: the master has). *tls_r NULL with 0 if TLS is off. */
int tls_server_create_proxied(const struct conf_tls *conf, const char *hostname,
                              struct keyproxy_client *kc, struct tls_server **tls_r, char *err,
                              size_t errlen);

/* Session ticket keys shared by every smtpd process (the master makes
 * them once), so a ticket from one resumes on any: 16 octets of key name,
 * 32 of HMAC key, 32 of AES key. */
#define TLS_TICKET_KEYS_LEN 80
int tls_server_set_ticket_keys(struct tls_server *tls, const unsigned char *keys, size_t len);

/* The certificate's subject names (SAN DNS names, else CN) of context i, for
 * tests and `hikyaku check`; returns the number of contexts. */
size_t tls_server_count(const struct tls_server *tls);

#endif
