/* keyproxy.h — TLS private keys held by the `keys` process; smtpd signs by
 * asking it (issue 9, "The next structure" in docs/ARCHITECTURE.md; the
 * model is OpenSMTPD's ca.c).
 *
 * Two halves over one socketpair(AF_UNIX, SOCK_SEQPACKET) per smtpd process:
 *
 *   keys  (server half): holds the private keys, one per configured
 *         certificate, indexed as tls.c indexes its contexts (tls.certificates
 *         in order; the self-signed pair is index 0). One thread per smtpd
 *         socket answers SIGN with SIGNATURE. It parses no network input;
 *         the smtpd's frames are hostile (an smtpd may be compromised), so
 *         every length is bounded and anything odd gets an error answer.
 *   smtpd (client half): an EVP_PKEY with the certificate's public key only,
 *         whose private operation sends SIGN and waits for SIGNATURE. The
 *         round trip blocks the calling thread (as OpenSMTPD does), bounded
 *         by KEYPROXY_TIMEOUT_MS; if the keys process is gone the operation
 *         fails at once (EOF), the handshake fails, the session ends, smtpd
 *         goes on. A keys process that hangs stalls each handshake's thread
 *         for the timeout: smtpd's event loop included, as long as signing
 *         is not moved off it (ASYNC jobs, not built).
 *
 * One request is outstanding per socket at a time (the client's mutex); a
 * keys thread answers its socket's requests in order.
 *
 * Wiring, per process:
 *   master  tls_conf_read_pems(conf, host, true, ...) as root: key PEMs to
 *           keys, certificate PEMs to each smtpd; then tls_pems_free.
 *   keys    keyproxy_server_create_pem once; keyproxy_serve_thread(server,
 *           fd, NULL) per smtpd socket; keyproxy_server_update_pem on reload.
 *   smtpd   kc = keyproxy_client_create(keys_fd) once;
 *           tls_server_create_proxied_pem(pems, n, tickets, kc, &tls) at
 *           start and reload; keyproxy_client_reconnect(kc, fd) when keys
 *           was restarted.
 *
 * What a compromised smtpd can still do: have keys sign anything with our
 * keys while it runs (an oracle, as with OpenSMTPD); it cannot read them,
 * and they are gone from it when it is gone.
 *
 * Frames are the control frames' format (src/ctl/ctl.h: u32 length, u8
 * type, tagged fields), one frame per datagram, with the types and tags
 * below (numbers chosen not to collide with enum ctl_type / ctl_tag):
 *
 *   SIGN       ID u64, KEY u64 (index), OP u64, PADDING u64 (RSA only),
 *              INPUT bytes (1..KEYPROXY_INPUT_MAX)
 *   SIGNATURE  ID u64, STATUS u64 (enum keyproxy_status), OUTPUT bytes
 *              (present iff STATUS is OK)
 *
 * DKIM (issue 10): KEYPROXY_OP_DKIM_SIGN signs for src/dauth/dkim_sign.c
 * with the DKIM keys (config dkim.sign, in order; a set apart from the TLS
 * keys, loaded by keyproxy_server_set_dkim_pem): KEY is the DKIM key index,
 * INPUT the 32-octet SHA-256 of the canonical header data, OUTPUT the
 * RSA PKCS#1 v1.5 (SHA-256 DigestInfo) or Ed25519 (RFC 8463) signature.
 *
 * Operations: RSA private encryption of INPUT with PKCS#1 type 1 padding
 * (TLS 1.2 PKCS#1 signatures: OpenSSL builds the DigestInfo) or with no
 * padding (RSA-PSS, TLS 1.2 and 1.3: OpenSSL pads, the key only exponentiates),
 * and ECDSA over a digest (DER signature out). Ed25519 and RSA decryption
 * are not offered: the TLS policy (tls.c) allows only ECDHE key exchange, and
 * Ed25519 keys have no method hook in OpenSSL 3.0. */
#ifndef HK_TLS_KEYPROXY_H
#define HK_TLS_KEYPROXY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include "lib/buf.h"

#define KEYPROXY_INPUT_MAX 1024  /* octets: an RSA-8192 block, or a digest */
#define KEYPROXY_OUTPUT_MAX 1024 /* octets: an RSA-8192 block, a DER ECDSA sig */
#define KEYPROXY_FRAME_MAX 1280  /* one frame, header included */
#define KEYPROXY_KEYS_MAX 256    /* keys one server holds */
#define KEYPROXY_TIMEOUT_MS 2000 /* a round trip, then the handshake fails */

enum keyproxy_type {
	KEYPROXY_T_SIGN = 0x60,      /* smtpd -> keys */
	KEYPROXY_T_SIGNATURE = 0x61, /* keys -> smtpd */
};

enum keyproxy_tag {
	KEYPROXY_F_ID = 0x60,      /* u64: request id, echoed in the answer */
	KEYPROXY_F_KEY = 0x61,     /* u64: key index */
	KEYPROXY_F_OP = 0x62,      /* u64: enum keyproxy_op */
	KEYPROXY_F_PADDING = 0x63, /* u64: enum keyproxy_padding */
	KEYPROXY_F_INPUT = 0x64,   /* bytes */
	KEYPROXY_F_STATUS = 0x65,  /* u64: enum keyproxy_status */
	KEYPROXY_F_OUTPUT = 0x66,  /* bytes */
};

enum keyproxy_op {
	KEYPROXY_OP_RSA_PRIV_ENC = 1, /* with PADDING */
	KEYPROXY_OP_ECDSA_SIGN = 2,   /* INPUT is the digest; OUTPUT is DER */
	KEYPROXY_OP_DKIM_SIGN = 3,    /* KEY: DKIM key index; INPUT: SHA-256 (32 octets) */
};

enum keyproxy_padding {
	KEYPROXY_PAD_NONE = 0,  /* raw RSA: INPUT is exactly the modulus size */
	KEYPROXY_PAD_PKCS1 = 1, /* PKCS#1 v1.5 type 1 (RFC 8017 §9.2) */
};

enum keyproxy_status {
	KEYPROXY_S_OK = 0,
	KEYPROXY_S_MALFORMED = 1, /* not a valid SIGN frame */
	KEYPROXY_S_NO_KEY = 2,    /* unknown key index */
	KEYPROXY_S_BAD_OP = 3,    /* unknown operation, or wrong for the key type */
	KEYPROXY_S_FAILED = 4,    /* the private operation itself failed */
};

struct keyproxy_request {
	uint64_t id;
	uint64_t key;
	uint64_t op;
	uint64_t padding;
	const unsigned char *input; /* points into the decoded frame */
	size_t input_len;
};

struct keyproxy_answer {
	uint64_t id;
	uint64_t status;
	const unsigned char *output; /* points into the decoded frame */
	size_t output_len;
};

/* ---- codec (pure; fuzzed by tests/fuzz/fuzz_keyproxy.c) ---- */

/* Encode one frame into out (appended). -1 if a bound is passed. */
int keyproxy_request_encode(struct buf *out, const struct keyproxy_request *req);
int keyproxy_answer_encode(struct buf *out, const struct keyproxy_answer *ans);

/* Decode exactly one frame occupying all of (p, len). -1 with *error_r for
 * anything but a well-formed frame of the right type with every required
 * field once; req->id is set even then whenever an ID field could be read,
 * so the error answer can name the request. */
int keyproxy_request_decode(const void *p, size_t len, struct keyproxy_request *req,
                            const char **error_r);
int keyproxy_answer_decode(const void *p, size_t len, struct keyproxy_answer *ans,
                           const char **error_r);

/* ---- server half (the keys process) ---- */

struct keyproxy_server;

/* Takes a reference to each key (RSA or EC; others are refused). keys[i]
 * answers KEY i. NULL with *error_r on a refused key or too many. */
struct keyproxy_server *keyproxy_server_create(EVP_PKEY *const *keys, size_t n,
                                               const char **error_r);
/* The same from PEM private keys as the master read them (pems[i] is lens[i]
 * octets). Errors name the index and OpenSSL's reason. */
int keyproxy_server_create_pem(const unsigned char *const *pems, const size_t *lens, size_t n,
                               struct keyproxy_server **server_r, char *err, size_t errlen);
/* A new generation (SIGHUP): the same checks, then requests from now on
 * use these keys, on every connection; signatures under way finish with
 * the old ones. On error the old keys stay. Send keys their new keys before
 * smtpd its new certificates: a context loads only after its probe
 * signature verifies, so smtpd keeps its old contexts if keys lags, and
 * old contexts fail their handshakes only between the two steps. */
int keyproxy_server_update(struct keyproxy_server *server, EVP_PKEY *const *keys, size_t n,
                           const char **error_r);
int keyproxy_server_update_pem(struct keyproxy_server *server, const unsigned char *const *pems,
                               const size_t *lens, size_t n, char *err, size_t errlen);
/* The DKIM keys (PEM private keys, RSA 1024..8192 bits or Ed25519), at
 * start and on reload: requests from now on use these. On error the old
 * set stays. DKIM key i answers KEYPROXY_OP_DKIM_SIGN with KEY i. */
int keyproxy_server_set_dkim_pem(struct keyproxy_server *server, const unsigned char *const *pems,
                                 const size_t *lens, size_t n, char *err, size_t errlen);
/* Drops the caller's reference; serving threads hold their own. */
void keyproxy_server_free(struct keyproxy_server **server);

/* Answer requests on fd until EOF or a socket error (returns 0 on EOF, -1
 * on error). Does not close fd. One frame in, one frame out. */
int keyproxy_serve(struct keyproxy_server *server, int fd);
/* keyproxy_serve on a new thread that owns fd (closes it at the end) and a
 * reference to server: joinable, its id in *thread_r, or detached when
 * thread_r is NULL. -1 with errno if no thread started (fd is then still the
 * caller's). The thread ends when the smtpd end of the socket closes. */
int keyproxy_serve_thread(struct keyproxy_server *server, int fd, pthread_t *thread_r);
/* The answer frame to one request datagram of len octets, into out (reset
 * first): what keyproxy_serve sends, for a caller running its own loop. When
 * len exceeds KEYPROXY_FRAME_MAX, p is not read and the answer is MALFORMED
 * (recv with MSG_TRUNC gives the real length of an oversized datagram). */
void keyproxy_server_answer(struct keyproxy_server *server, const void *p, size_t len,
                            struct buf *out);
/* Signatures made so far, for tests and stats. */
uint64_t keyproxy_server_signed(const struct keyproxy_server *server);

/* ---- client half (smtpd) ---- */

struct keyproxy_client;

/* One per socket to the keys process; takes ownership of fd (closed when
 * the last reference goes: the caller's and one per key built on it).
 * Thread-safe: a mutex keeps one round trip on the socket at a time. */
struct keyproxy_client *keyproxy_client_create(int fd);
void keyproxy_client_free(struct keyproxy_client **client);
/* After the keys process was restarted: the new socket replaces the old
 * one (closed), and every key already built on client uses it from the
 * next signature on, so contexts need not be rebuilt. Takes fd. */
void keyproxy_client_reconnect(struct keyproxy_client *client, int fd);
/* The round-trip bound in milliseconds (tests shorten it). */
void keyproxy_client_set_timeout(struct keyproxy_client *client, int timeout_ms);

/* An EVP_PKEY with cert's public key (RSA or EC) whose private operations
 * are SIGN requests for key index `index` on client. NULL with *error_r. */
EVP_PKEY *keyproxy_client_pkey(struct keyproxy_client *client, X509 *cert, uint64_t index,
                               const char **error_r);
/* One DKIM signature by DKIM key index (KEYPROXY_OP_DKIM_SIGN): hash is the
 * 32-octet SHA-256; out holds cap octets. Blocks for the round trip (bounded
 * by the timeout). 0, or -1 with *error_r. */
int keyproxy_client_dkim_sign(struct keyproxy_client *client, uint64_t index,
                              const unsigned char *hash, size_t hash_len, unsigned char *out,
                              size_t cap, size_t *out_len, const char **error_r);
/* The same as a dkim_sign_fn (src/dauth/dkim.h) for dkim_sign_conf.sign:
 * ctx is the keyproxy_client, dkim_sign_key.key_id the DKIM key index.
 * done is called before this returns. */
struct dkim_sign_key;
void keyproxy_dkim_sign(void *ctx, const struct dkim_sign_key *key, const unsigned char *hash,
                        size_t hash_len,
                        void (*done)(void *, const unsigned char *, size_t, const char *),
                        void *done_arg);

/* Build that key for ctx's certificate (already set) and install it with
 * SSL_CTX_use_PrivateKey; SSL_CTX_check_private_key must pass. 0 / -1. */
int keyproxy_client_use(struct keyproxy_client *client, SSL_CTX *ctx, uint64_t index,
                        const char **error_r);

#endif
