/* test_keyproxy.c — TLS private keys behind the key proxy (tls/keyproxy.c).
 *
 * The keys half runs on a thread over a socketpair(AF_UNIX, SOCK_SEQPACKET)
 * with an RSA-2048 and an ECDSA P-256 key generated here; the smtpd half is
 * an SSL_CTX holding only the certificate and a proxied key. Handshakes run
 * in memory (a BIO pair pumped in this thread) against a plain OpenSSL
 * client, TLS 1.3 and 1.2, PKCS#1 and PSS. Also: the proxied key has no
 * private component, a vanished or silent keys process fails the handshake
 * cleanly, hostile requests get error answers, the codec refuses malformed
 * frames, and the master → keys / smtpd flow through tls.c works. */
#define OPENSSL_SUPPRESS_DEPRECATED /* RSA_get0_d, EC_KEY_get0_private_key */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "ctl/ctl.h"
#include "dauth/dkim.h"
#include "tls/keyproxy.h"
#include "tls/tls.h"

enum { KEY_RSA = 0, KEY_EC = 1 };

struct fixture {
	EVP_PKEY *keys[2]; /* private, only the keys half sees them */
	X509 *certs[2];
	struct keyproxy_server *server;
	struct keyproxy_client *client;
	pthread_t thread;
};

static struct fixture fx;

static X509 *cert_make(EVP_PKEY *pkey, const char *cn)
{
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, pkey);
	assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
	return x;
}

/* A keys thread serving a fresh socketpair; returns the smtpd end. The
 * thread ends when that end closes; join it with serve_join. */
static int serve_pair(struct keyproxy_server *server, pthread_t *thread_r)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(keyproxy_serve_thread(server, sv[1], thread_r), 0);
	return sv[0];
}

static int group_setup(void **state)
{
	(void)state;
	fx.keys[KEY_RSA] = EVP_RSA_gen(2048);
	fx.keys[KEY_EC] = EVP_EC_gen("P-256");
	if (fx.keys[0] == NULL || fx.keys[1] == NULL)
		return -1;
	fx.certs[KEY_RSA] = cert_make(fx.keys[KEY_RSA], "rsa.test");
	fx.certs[KEY_EC] = cert_make(fx.keys[KEY_EC], "ec.test");
	const char *error = NULL;
	fx.server = keyproxy_server_create(fx.keys, 2, &error);
	if (fx.server == NULL)
		return -1;
	fx.client = keyproxy_client_create(serve_pair(fx.server, &fx.thread));
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	keyproxy_client_free(&fx.client); /* closes the socket: the thread ends */
	pthread_join(fx.thread, NULL);
	keyproxy_server_free(&fx.server);
	for (int i = 0; i < 2; i++) {
		X509_free(fx.certs[i]);
		EVP_PKEY_free(fx.keys[i]);
	}
	return 0;
}

/* --- Handshakes ----------------------------------------------------------- */

/* The smtpd side: certificate i and a proxied key on client. */
static SSL_CTX *server_ctx(struct keyproxy_client *client, int i)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, fx.certs[i]), 1);
	const char *error = NULL;
	assert_int_equal(keyproxy_client_use(client, ctx, (uint64_t)i, &error), 0);
	return ctx;
}

static SSL_CTX *client_ctx(int max_version, const char *sigalgs)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_version), 1);
	if (sigalgs != NULL)
		assert_int_equal(SSL_CTX_set1_sigalgs_list(ctx, sigalgs), 1);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	return ctx;
}

static bool hs_step(SSL *ssl, bool *done)
{
	if (*done)
		return true;
	int r = SSL_do_handshake(ssl);
	if (r == 1) {
		*done = true;
		return true;
	}
	int e = SSL_get_error(ssl, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

/* 1 if both sides finish; 0 if either fails. *sig_nid_r: the signature
 * type the client saw (NID_rsassaPss, NID_rsaEncryption, EC). sni, if not
 * NULL, is the name the client asks for. No cmocka asserts in here: the
 * parallel test runs it on several threads. */
static int handshake_sni(SSL_CTX *sctx, SSL_CTX *cctx, const char *sni, int *sig_nid_r)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *bs = NULL, *bc = NULL;
	bool sdone = false, cdone = false;
	bool ok = s != NULL && c != NULL && BIO_new_bio_pair(&bs, 0, &bc, 0) == 1 &&
	          (sni == NULL || SSL_set_tlsext_host_name(c, sni) == 1);
	if (ok) {
		SSL_set_bio(s, bs, bs);
		SSL_set_bio(c, bc, bc);
		SSL_set_accept_state(s);
		SSL_set_connect_state(c);
	}
	for (int i = 0; i < 50 && ok && !(sdone && cdone); i++)
		ok = hs_step(c, &cdone) && hs_step(s, &sdone);
	int nid = NID_undef;
	if (ok && sdone && cdone && sig_nid_r != NULL &&
	    SSL_get_peer_signature_type_nid(c, &nid) == 1)
		*sig_nid_r = nid;
	SSL_free(s);
	SSL_free(c);
	ERR_clear_error();
	return ok && sdone && cdone;
}

/* A full handshake, then one resuming its session (a TLS 1.3 ticket is read
 * after the first one). 1 when both finish and the second resumed. */
static int handshake_resumed(SSL_CTX *sctx, SSL_CTX *cctx)
{
	SSL_SESSION *sess = NULL;
	int resumed = 0;
	for (int round = 0; round < 2; round++) {
		SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
		BIO *bs = NULL, *bc = NULL;
		if (s == NULL || c == NULL || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
			return 0;
		SSL_set_bio(s, bs, bs);
		SSL_set_bio(c, bc, bc);
		SSL_set_accept_state(s);
		SSL_set_connect_state(c);
		if (sess != NULL)
			SSL_set_session(c, sess);
		bool sdone = false, cdone = false, ok = true;
		for (int i = 0; i < 50 && ok && !(sdone && cdone); i++)
			ok = hs_step(c, &cdone) && hs_step(s, &sdone);
		unsigned char b;
		(void)SSL_read(c, &b, 1); /* takes in the NewSessionTicket */
		if (round == 0)
			sess = ok && sdone && cdone ? SSL_get1_session(c) : NULL;
		else
			resumed = ok && sdone && cdone && SSL_session_reused(c) == 1;
		/* a clean end: SSL_free after an unclean one makes the session
		 * unresumable (ssl_clear_bad_session) */
		SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
		SSL_free(s);
		SSL_free(c);
	}
	SSL_SESSION_free(sess);
	ERR_clear_error();
	return resumed;
}

static int handshake(SSL_CTX *sctx, SSL_CTX *cctx, int *sig_nid_r)
{
	return handshake_sni(sctx, cctx, NULL, sig_nid_r);
}

static void check_handshake(int key, int version, const char *sigalgs, int want_nid)
{
	SSL_CTX *sctx = server_ctx(fx.client, key);
	SSL_CTX *cctx = client_ctx(version, sigalgs);
	uint64_t before = keyproxy_server_signed(fx.server);
	int nid = NID_undef;
	assert_int_equal(handshake(sctx, cctx, &nid), 1);
	assert_int_equal(nid, want_nid);
	/* the signature was made by the keys half, not here */
	assert_int_equal(keyproxy_server_signed(fx.server), before + 1);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
}

static void test_rsa_tls13_pss(void **state)
{
	(void)state;
	check_handshake(KEY_RSA, TLS1_3_VERSION, NULL, NID_rsassaPss);
}

static void test_rsa_tls12_pkcs1(void **state)
{
	(void)state;
	check_handshake(KEY_RSA, TLS1_2_VERSION, "RSA+SHA256", NID_rsaEncryption);
}

static void test_rsa_tls12_pss(void **state)
{
	(void)state;
	check_handshake(KEY_RSA, TLS1_2_VERSION, "rsa_pss_rsae_sha256", NID_rsassaPss);
}

static void test_ec_tls13(void **state)
{
	(void)state;
	check_handshake(KEY_EC, TLS1_3_VERSION, NULL, NID_X9_62_id_ecPublicKey);
}

static void test_ec_tls12(void **state)
{
	(void)state;
	check_handshake(KEY_EC, TLS1_2_VERSION, "ECDSA+SHA384", NID_X9_62_id_ecPublicKey);
}

/* smtpd's key object holds the public key only. */
static void test_no_private_component(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++) {
		SSL_CTX *sctx = server_ctx(fx.client, i);
		EVP_PKEY *pkey = SSL_CTX_get0_privatekey(sctx);
		assert_non_null(pkey);
		BIGNUM *d = NULL;
		assert_int_not_equal(EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &d), 1);
		assert_null(d);
		/* OpenSSL's export of a public-only EC_KEY reports "priv" as 0 */
		if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &d) == 1)
			assert_true(BN_is_zero(d));
		BN_free(d);
		if (i == KEY_RSA) {
			const RSA *rsa = EVP_PKEY_get0_RSA(pkey);
			assert_non_null(rsa);
			assert_null(RSA_get0_d(rsa));
			assert_null(RSA_get0_p(rsa));
		} else {
			const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
			assert_non_null(ec);
			assert_null(EC_KEY_get0_private_key(ec));
		}
		/* and it is the certificate's public key */
		assert_int_equal(EVP_PKEY_eq(pkey, X509_get0_pubkey(fx.certs[i])), 1);
		SSL_CTX_free(sctx);
		ERR_clear_error();
	}
}

/* The OpenSSL error a signature with pkey fails with ("" if it succeeds). */
static const char *sign_error(EVP_PKEY *pkey)
{
	static char text[256];
	unsigned char sig[1024];
	size_t len = sizeof(sig);
	const char *data = NULL;
	int flags = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	ERR_clear_error();
	text[0] = '\0';
	if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
	    EVP_DigestSign(md, sig, &len, (const unsigned char *)"x", 1) != 1) {
		unsigned long e;
		while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0)
			if (ERR_GET_LIB(e) == ERR_LIB_USER && (flags & ERR_TXT_STRING) != 0)
				snprintf(text, sizeof(text), "%s", data);
	}
	EVP_MD_CTX_free(md);
	return text;
}

/* A keys process that is stopped (never answers in time) or killed (socket
 * closed): every handshake fails, nothing crashes, the caller goes on; a
 * late answer to a timed-out request is told apart by its id. The keys half
 * runs in a forked child here, so it can be stopped and killed. */
static void test_keys_gone(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		_exit(keyproxy_serve(fx.server, sv[1]) == 0 ? 0 : 1);
	}
	close(sv[1]);
	struct keyproxy_client *kc = keyproxy_client_create(sv[0]);
	keyproxy_client_set_timeout(kc, 300);
	SSL_CTX *rsa = server_ctx(kc, KEY_RSA), *ec = server_ctx(kc, KEY_EC);
	SSL_CTX *c13 = client_ctx(TLS1_3_VERSION, NULL), *c12 = client_ctx(TLS1_2_VERSION, NULL);
	const char *error = NULL;
	SSL_CTX *other = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(other, fx.certs[KEY_EC]), 1);
	assert_int_equal(keyproxy_client_use(kc, other, 5, &error), -1);       /* no key 5 */
	assert_int_equal(keyproxy_client_use(kc, other, KEY_RSA, &error), -1); /* not its key */
	assert_int_equal(handshake(ec, c13, NULL), 1);

	/* stopped: the round trip times out */
	assert_int_equal(kill(pid, SIGSTOP), 0);
	assert_string_equal(sign_error(SSL_CTX_get0_privatekey(rsa)),
	                    "keys process: no answer in time");
	assert_int_equal(handshake(ec, c13, NULL), 0);
	assert_int_equal(handshake(rsa, c12, NULL), 0);
	/* resumed: its late answers are dropped, the next round trip works */
	assert_int_equal(kill(pid, SIGCONT), 0);
	assert_int_equal(handshake(rsa, c13, NULL), 1);
	assert_int_equal(handshake(ec, c12, NULL), 1);

	/* killed */
	assert_int_equal(kill(pid, SIGKILL), 0);
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(handshake(rsa, c13, NULL), 0);
	assert_int_equal(handshake(rsa, c12, NULL), 0);
	assert_int_equal(handshake(ec, c13, NULL), 0);
	assert_int_equal(handshake(ec, c12, NULL), 0);
	assert_int_equal(keyproxy_client_use(kc, other, KEY_EC, &error), -1);
	assert_string_equal(sign_error(SSL_CTX_get0_privatekey(ec)), "keys process: gone");

	/* a new keys process: the same contexts sign again */
	pthread_t thread;
	keyproxy_client_reconnect(kc, serve_pair(fx.server, &thread));
	assert_int_equal(handshake(rsa, c13, NULL), 1);
	assert_int_equal(handshake(ec, c12, NULL), 1);

	/* the client object outlives the caller's reference through its keys */
	keyproxy_client_free(&kc);
	assert_null(kc);
	assert_int_equal(handshake(ec, c12, NULL), 1); /* its keys still hold it */
	SSL_CTX_free(other);
	SSL_CTX_free(rsa);
	SSL_CTX_free(ec); /* the last references: the socket closes */
	assert_int_equal(pthread_join(thread, NULL), 0);
	SSL_CTX_free(c13);
	SSL_CTX_free(c12);
}

/* N smtpd processes sign in parallel: two threads share one client (one
 * socket, its mutex keeps request and answer together) and two more have a
 * socket each, all answered by their own keys threads. */
#define PAR_THREADS 4
#define PAR_HANDSHAKES 15

struct par_arg {
	SSL_CTX *sctx, *cctx;
	int ok;
};

static void *par_main(void *p)
{
	struct par_arg *a = p;
	for (int i = 0; i < PAR_HANDSHAKES; i++)
		a->ok += handshake(a->sctx, a->cctx, NULL);
	return NULL;
}

static void test_parallel(void **state)
{
	(void)state;
	pthread_t serve[2], th[PAR_THREADS];
	struct keyproxy_client *own[2];
	struct par_arg args[PAR_THREADS];
	SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, NULL);
	for (int i = 0; i < 2; i++)
		own[i] = keyproxy_client_create(serve_pair(fx.server, &serve[i]));
	uint64_t before = keyproxy_server_signed(fx.server);
	for (int i = 0; i < PAR_THREADS; i++) {
		struct keyproxy_client *kc = i < 2 ? fx.client : own[i - 2];
		args[i] = (struct par_arg){.sctx = server_ctx(kc, i % 2), .cctx = cctx};
	}
	for (int i = 0; i < PAR_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, par_main, &args[i]), 0);
	for (int i = 0; i < PAR_THREADS; i++) {
		assert_int_equal(pthread_join(th[i], NULL), 0);
		assert_int_equal(args[i].ok, PAR_HANDSHAKES);
		SSL_CTX_free(args[i].sctx);
	}
	/* each context's load probe, then one signature per handshake */
	assert_int_equal(keyproxy_server_signed(fx.server),
	                 before + PAR_THREADS + PAR_THREADS * PAR_HANDSHAKES);
	for (int i = 0; i < 2; i++) {
		keyproxy_client_free(&own[i]);
		assert_int_equal(pthread_join(serve[i], NULL), 0);
	}
	SSL_CTX_free(cctx);
}

/* A new generation of keys on a live connection: contexts whose key
 * moved fail (the window between keys' and smtpd's reload), contexts for
 * the new order load and sign; a refused generation keeps the old one. */
static void test_reload(void **state)
{
	(void)state;
	const char *error = NULL;
	EVP_PKEY *swapped[2] = {fx.keys[KEY_EC], fx.keys[KEY_RSA]};
	struct keyproxy_server *server = keyproxy_server_create(fx.keys, 2, &error);
	assert_non_null(server);
	pthread_t thread;
	struct keyproxy_client *kc = keyproxy_client_create(serve_pair(server, &thread));
	SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, NULL);
	SSL_CTX *old_ec = server_ctx(kc, KEY_EC); /* EC certificate, index 1 */
	assert_int_equal(handshake(old_ec, cctx, NULL), 1);

	/* refused: an Ed25519 key (no method hook), or too many keys */
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	assert_non_null(ed);
	EVP_PKEY *bad[2] = {fx.keys[KEY_RSA], ed};
	assert_int_equal(keyproxy_server_update(server, bad, 2, &error), -1);
	assert_int_equal(keyproxy_server_update(server, bad, KEYPROXY_KEYS_MAX + 1, &error), -1);
	assert_int_equal(handshake(old_ec, cctx, NULL), 1); /* the old keys stay */

	assert_int_equal(keyproxy_server_update(server, swapped, 2, &error), 0);
	assert_int_equal(handshake(old_ec, cctx, NULL), 0); /* index 1 is RSA now */
	SSL_CTX *new_ec = SSL_CTX_new(TLS_server_method());
	assert_int_equal(SSL_CTX_use_certificate(new_ec, fx.certs[KEY_EC]), 1);
	assert_int_equal(keyproxy_client_use(kc, new_ec, 1, &error), -1); /* RSA now */
	assert_int_equal(keyproxy_client_use(kc, new_ec, 0, &error), 0);
	assert_int_equal(handshake(new_ec, cctx, NULL), 1);

	EVP_PKEY_free(ed);
	SSL_CTX_free(old_ec);
	SSL_CTX_free(new_ec);
	SSL_CTX_free(cctx);
	keyproxy_client_free(&kc);
	assert_int_equal(pthread_join(thread, NULL), 0);
	keyproxy_server_free(&server);
}

/* A keys half that answers wrongly: smtpd checks the answer as it checks
 * anything from another process, and the signature fails, nothing worse. */
enum liar_mode { LIAR_SHORT, LIAR_LONG, LIAR_GARBAGE, LIAR_OTHER_ID, LIAR_ERROR, LIAR_N };

struct liar {
	int fd;
	int served;
};

static void *liar_main(void *p)
{
	struct liar *l = p;
	unsigned char in[KEYPROXY_FRAME_MAX], out[KEYPROXY_OUTPUT_MAX];
	struct buf b;
	buf_init(&b, 0);
	memset(out, 0x42, sizeof(out));
	for (int mode = 0; mode < LIAR_N; mode++) {
		ssize_t n = recv(l->fd, in, sizeof(in), 0);
		struct keyproxy_request req;
		const char *error = NULL;
		if (n <= 0 || keyproxy_request_decode(in, (size_t)n, &req, &error) < 0)
			break;
		struct keyproxy_answer ans = {.id = req.id, .status = KEYPROXY_S_OK, .output = out};
		ans.output_len = mode == LIAR_SHORT  ? 10
		                 : mode == LIAR_LONG ? KEYPROXY_OUTPUT_MAX
		                                     : 0;
		if (mode == LIAR_OTHER_ID) {
			ans.id = req.id + 1;
			ans.output_len = 10;
		}
		if (mode == LIAR_ERROR)
			ans.status = KEYPROXY_S_FAILED;
		buf_reset(&b);
		if (mode == LIAR_GARBAGE)
			buf_append(&b, "\0\0\0\x02\x61\x60", 6);
		else if (keyproxy_answer_encode(&b, &ans) < 0)
			break;
		if (send(l->fd, b.data, b.len, 0) != (ssize_t)b.len)
			break;
		l->served++;
	}
	buf_free(&b);
	return NULL;
}

static void test_lying_keys(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	struct keyproxy_client *kc = keyproxy_client_create(sv[0]);
	keyproxy_client_set_timeout(kc, 200);
	struct liar liar = {.fd = sv[1]};
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, liar_main, &liar), 0);
	const char *error = NULL;
	const char *want[LIAR_N] = {
	    "keys process: answer of the wrong length", "keys process: answer of the wrong length",
	    "keys process: malformed answer", "keys process: no answer in time",
	    "keys process: signing refused"};
	for (int mode = 0; mode < LIAR_N; mode++) {
		/* RSA: a short or long block; EC: a block longer than ECDSA_size */
		int key = mode == LIAR_LONG ? KEY_EC : KEY_RSA;
		EVP_PKEY *pkey = keyproxy_client_pkey(kc, fx.certs[key], (uint64_t)key, &error);
		assert_non_null(pkey);
		assert_string_equal(sign_error(pkey), want[mode]);
		EVP_PKEY_free(pkey);
	}
	assert_int_equal(pthread_join(thread, NULL), 0);
	assert_int_equal(liar.served, LIAR_N);
	keyproxy_client_free(&kc);
	close(sv[1]);
}

/* --- Hostile requests to the keys half ------------------------------------ */

struct reply {
	uint64_t id, status;
	unsigned char out[KEYPROXY_OUTPUT_MAX];
	size_t out_len;
};

static void raw_call(int fd, const void *p, size_t len, struct reply *rep)
{
	assert_int_equal(send(fd, p, len, 0), (ssize_t)len);
	unsigned char in[KEYPROXY_FRAME_MAX];
	ssize_t n = recv(fd, in, sizeof(in), 0);
	assert_true(n > 0);
	struct keyproxy_answer ans;
	const char *error = NULL;
	assert_int_equal(keyproxy_answer_decode(in, (size_t)n, &ans, &error), 0);
	rep->id = ans.id;
	rep->status = ans.status;
	rep->out_len = ans.output_len;
	if (ans.output_len > 0)
		memcpy(rep->out, ans.output, ans.output_len);
}

static void req_call(int fd, const struct keyproxy_request *req, struct reply *rep)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(keyproxy_request_encode(&b, req), 0);
	raw_call(fd, b.data, b.len, rep);
	buf_free(&b);
}

static void test_bad_requests(void **state)
{
	(void)state;
	pthread_t thread;
	int fd = serve_pair(fx.server, &thread);
	unsigned char digest[32];
	memset(digest, 0xab, sizeof(digest));
	struct keyproxy_request req = {.id = 7,
	                               .key = KEY_EC,
	                               .op = KEYPROXY_OP_ECDSA_SIGN,
	                               .input = digest,
	                               .input_len = sizeof(digest)};
	struct reply rep;

	/* garbage: refused, id unknown */
	raw_call(fd, "hello", 5, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_MALFORMED);
	assert_int_equal(rep.id, 0);
	assert_int_equal(rep.out_len, 0);

	/* oversized datagram: refused from its length alone */
	struct buf b;
	buf_init(&b, 0);
	size_t start = ctl_frame_begin(&b, KEYPROXY_T_SIGN);
	assert_int_equal(ctl_frame_add_u64(&b, KEYPROXY_F_ID, 99), 0);
	unsigned char big[4000] = {0};
	assert_int_equal(ctl_frame_add(&b, KEYPROXY_F_INPUT, big, sizeof(big)), 0);
	assert_int_equal(ctl_frame_end(&b, start, SIZE_MAX), 0);
	raw_call(fd, b.data, b.len, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_MALFORMED);

	/* an input one octet over the bound, inside the frame bound */
	buf_reset(&b);
	start = ctl_frame_begin(&b, KEYPROXY_T_SIGN);
	ctl_frame_add_u64(&b, KEYPROXY_F_ID, 8);
	ctl_frame_add_u64(&b, KEYPROXY_F_KEY, KEY_EC);
	ctl_frame_add_u64(&b, KEYPROXY_F_OP, KEYPROXY_OP_ECDSA_SIGN);
	ctl_frame_add(&b, KEYPROXY_F_INPUT, big, KEYPROXY_INPUT_MAX + 1);
	assert_int_equal(ctl_frame_end(&b, start, KEYPROXY_FRAME_MAX), 0);
	raw_call(fd, b.data, b.len, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_MALFORMED);
	assert_int_equal(rep.id, 8); /* the error answer names the request */

	/* a request of the wrong type (an answer frame) */
	buf_reset(&b);
	struct keyproxy_answer fake = {.id = 9, .status = KEYPROXY_S_FAILED};
	assert_int_equal(keyproxy_answer_encode(&b, &fake), 0);
	raw_call(fd, b.data, b.len, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_MALFORMED);
	buf_free(&b);

	/* unknown key index, huge index, unknown op, op for the other key type,
	 * unknown padding, raw RSA of the wrong size */
	req.key = 2;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_NO_KEY);
	assert_int_equal(rep.id, 7);
	req.key = UINT64_MAX;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_NO_KEY);
	req.key = KEY_EC;
	req.op = 99;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_BAD_OP);
	req.op = KEYPROXY_OP_RSA_PRIV_ENC;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_BAD_OP);
	req.key = KEY_RSA;
	req.padding = 5;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_BAD_OP);
	req.padding = KEYPROXY_PAD_NONE; /* 32 octets, not 256 */
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_FAILED);

	/* after all that, the same connection still signs, and correctly */
	req.key = KEY_EC;
	req.op = KEYPROXY_OP_ECDSA_SIGN;
	req.id = 12;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_OK);
	assert_int_equal(rep.id, 12);
	EVP_PKEY_CTX *vctx = EVP_PKEY_CTX_new(X509_get0_pubkey(fx.certs[KEY_EC]), NULL);
	assert_int_equal(EVP_PKEY_verify_init(vctx), 1);
	assert_int_equal(EVP_PKEY_verify(vctx, rep.out, rep.out_len, digest, sizeof(digest)), 1);
	EVP_PKEY_CTX_free(vctx);

	req.key = KEY_RSA;
	req.op = KEYPROXY_OP_RSA_PRIV_ENC;
	req.padding = KEYPROXY_PAD_PKCS1;
	req_call(fd, &req, &rep);
	assert_int_equal(rep.status, KEYPROXY_S_OK);
	assert_int_equal(rep.out_len, 256);
	vctx = EVP_PKEY_CTX_new(X509_get0_pubkey(fx.certs[KEY_RSA]), NULL);
	assert_int_equal(EVP_PKEY_verify_init(vctx), 1);
	assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(vctx, RSA_PKCS1_PADDING), 1);
	assert_int_equal(EVP_PKEY_verify(vctx, rep.out, rep.out_len, digest, sizeof(digest)), 1);
	EVP_PKEY_CTX_free(vctx);
	close(fd);
	assert_int_equal(pthread_join(thread, NULL), 0);
}

/* --- Codec ---------------------------------------------------------------- */

static void test_codec(void **state)
{
	(void)state;
	unsigned char in[3] = {1, 2, 3};
	struct keyproxy_request req = {.id = 1ULL << 40,
	                               .key = 3,
	                               .op = KEYPROXY_OP_RSA_PRIV_ENC,
	                               .padding = KEYPROXY_PAD_PKCS1,
	                               .input = in,
	                               .input_len = sizeof(in)},
	                        got;
	struct buf b;
	const char *error = NULL;
	buf_init(&b, 0);
	assert_int_equal(keyproxy_request_encode(&b, &req), 0);
	assert_int_equal(keyproxy_request_decode(b.data, b.len, &got, &error), 0);
	assert_int_equal(got.id, req.id);
	assert_int_equal(got.key, 3);
	assert_int_equal(got.padding, KEYPROXY_PAD_PKCS1);
	assert_int_equal(got.input_len, 3);
	assert_memory_equal(got.input, in, 3);

	/* every truncation is refused: the length field must match */
	for (size_t cut = 0; cut < b.len; cut++)
		assert_int_equal(keyproxy_request_decode(b.data, cut, &got, &error), -1);
	/* a length field that lies */
	b.data[3]--;
	assert_int_equal(keyproxy_request_decode(b.data, b.len, &got, &error), -1);
	b.data[3]++;
	/* a repeated field */
	size_t len = b.len;
	assert_int_equal(ctl_frame_add_u64(&b, KEYPROXY_F_KEY, 0), 0);
	assert_int_equal(ctl_frame_end(&b, 0, KEYPROXY_FRAME_MAX), 0);
	assert_int_equal(keyproxy_request_decode(b.data, b.len, &got, &error), -1);
	assert_string_equal(error, "repeated field");
	/* a control-socket tag */
	b.len = len;
	assert_int_equal(ctl_frame_add_str(&b, CTL_F_QID, "x"), 0);
	assert_int_equal(ctl_frame_end(&b, 0, KEYPROXY_FRAME_MAX), 0);
	assert_int_equal(keyproxy_request_decode(b.data, b.len, &got, &error), -1);
	/* a missing INPUT, and an empty one */
	req.input_len = 0;
	buf_reset(&b);
	assert_int_equal(keyproxy_request_encode(&b, &req), -1);
	assert_int_equal(b.len, 0);

	/* answers: OK carries output, errors none */
	struct keyproxy_answer ans = {.id = 5,
	                              .status = KEYPROXY_S_OK,
	                              .output = in,
	                              .output_len = 3},
	                       agot;
	buf_reset(&b);
	assert_int_equal(keyproxy_answer_encode(&b, &ans), 0);
	assert_int_equal(keyproxy_answer_decode(b.data, b.len, &agot, &error), 0);
	assert_int_equal(agot.id, 5);
	assert_int_equal(agot.output_len, 3);
	assert_int_equal(keyproxy_request_decode(b.data, b.len, &got, &error), -1);
	ans.output_len = 0;
	buf_reset(&b);
	assert_int_equal(keyproxy_answer_encode(&b, &ans), -1);
	ans.status = KEYPROXY_S_NO_KEY;
	assert_int_equal(keyproxy_answer_encode(&b, &ans), 0);
	assert_int_equal(keyproxy_answer_decode(b.data, b.len, &agot, &error), 0);
	assert_int_equal(agot.status, KEYPROXY_S_NO_KEY);
	assert_null(agot.output);
	buf_free(&b);
}

/* --- The master → keys / smtpd flow through tls.c ------------------------- */

static void write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	if (key != NULL)
		assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
	else
		assert_int_equal(PEM_write_X509(fp, cert), 1);
	assert_int_equal(fclose(fp), 0);
}

static void test_tls_proxied(void **state)
{
	(void)state;
	char dir[] = "/tmp/hk_test_keyproxy_XXXXXX";
	assert_non_null(mkdtemp(dir));
	char cert[2][128], key[2][128];
	struct conf_tls_cert pairs[2];
	for (int i = 0; i < 2; i++) {
		snprintf(cert[i], sizeof(cert[i]), "%s/cert%d.pem", dir, i);
		snprintf(key[i], sizeof(key[i]), "%s/key%d.pem", dir, i);
		write_pem(cert[i], NULL, fx.certs[i]);
		write_pem(key[i], fx.keys[i], NULL);
		pairs[i] = (struct conf_tls_cert){.cert = cert[i], .key = key[i]};
	}
	/* EC first this time: the index is the configuration's order */
	struct conf_tls_cert swapped[2] = {pairs[1], pairs[0]};
	struct conf_tls conf = {.certs = swapped, .n_certs = 2, .session_tickets = true};
	char err[256];

	/* master: read both, keys included; the keys process gets the keys */
	struct tls_pem *pems = NULL;
	size_t n = 0;
	assert_int_equal(tls_conf_read_pems(&conf, "mx.test", true, &pems, &n, err, sizeof(err)),
	                 0);
	assert_int_equal(n, 2);
	assert_true(pems[0].key.len > 0);
	const unsigned char *kp[2] = {pems[0].key.data, pems[1].key.data};
	size_t kl[2] = {pems[0].key.len, pems[1].key.len};
	struct keyproxy_server *server = NULL;
	assert_int_equal(keyproxy_server_create_pem(kp, kl, 2, &server, err, sizeof(err)), 0);
	pthread_t thread;
	struct keyproxy_client *kc = keyproxy_client_create(serve_pair(server, &thread));

	/* smtpd: certificates only */
	struct tls_server *tls = NULL;
	assert_int_equal(tls_server_create_proxied_pem(pems, n, true, kc, &tls, err, sizeof(err)),
	                 0);
	tls_pems_free(&pems, n);
	assert_null(pems);
	assert_int_equal(tls_server_count(tls), 2);
	assert_int_equal(keyproxy_server_signed(server), 2); /* the load's probes */
	SSL_CTX *cctx = client_ctx(TLS1_3_VERSION, NULL);
	SSL *s = tls_server_new_ssl(tls);
	SSL_CTX *def = SSL_get_SSL_CTX(s); /* tls holds it */
	SSL_free(s);
	assert_int_equal(handshake(def, cctx, NULL), 1);
	assert_int_equal(keyproxy_server_signed(server), 3);
	/* SNI picks context 1, the RSA certificate: signed with key index 1 */
	int nid = NID_undef;
	assert_int_equal(handshake_sni(def, cctx, "rsa.test", &nid), 1);
	assert_int_equal(nid, NID_rsassaPss);
	nid = NID_undef;
	assert_int_equal(handshake_sni(def, cctx, "ec.test", &nid), 1);
	assert_int_equal(nid, NID_X9_62_id_ecPublicKey);
	assert_int_equal(keyproxy_server_signed(server), 5);
	/* a resumed session (TLS 1.3 ticket, TLS 1.2 session id) signs nothing */
	SSL_CTX *c12 = client_ctx(TLS1_2_VERSION, NULL);
	assert_int_equal(handshake_resumed(def, cctx), 1);
	assert_int_equal(handshake_resumed(def, c12), 1);
	assert_int_equal(keyproxy_server_signed(server), 7); /* the two first ones */
	SSL_CTX_free(c12);
	tls_server_free(&tls);

	/* from the configured files, a mismatched pair is refused at load */
	assert_int_equal(tls_server_create_proxied(&conf, "mx.test", kc, &tls, err, sizeof(err)),
	                 0);
	assert_int_equal(tls_server_count(tls), 2);
	tls_server_free(&tls);
	conf.certs = pairs; /* RSA certificate, but index 0 is the EC key */
	assert_int_equal(tls_server_create_proxied(&conf, "mx.test", kc, &tls, err, sizeof(err)),
	                 -1);
	assert_null(tls);
	assert_non_null(strstr(err, "certificate 0"));

	/* a key file that is not a key */
	const unsigned char *bad[1] = {(const unsigned char *)"nope"};
	size_t bad_len[1] = {4};
	struct keyproxy_server *s2 = NULL;
	assert_int_equal(keyproxy_server_create_pem(bad, bad_len, 1, &s2, err, sizeof(err)), -1);
	assert_null(s2);
	assert_non_null(strstr(err, "key 0"));
	/* an encrypted key: refused, not prompted for on a terminal */
	BIO *mem = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(mem, fx.keys[KEY_EC], EVP_aes_256_cbc(),
	                                          (unsigned char *)"pw", 2, NULL, NULL),
	                 1);
	char *enc = NULL;
	long enc_len = BIO_get_mem_data(mem, &enc);
	const unsigned char *encp[1] = {(const unsigned char *)enc};
	size_t encl[1] = {(size_t)enc_len};
	assert_int_equal(keyproxy_server_create_pem(encp, encl, 1, &s2, err, sizeof(err)), -1);
	assert_null(s2);
	BIO_free(mem);

	SSL_CTX_free(cctx);
	keyproxy_client_free(&kc);
	assert_int_equal(pthread_join(thread, NULL), 0);
	keyproxy_server_free(&server);
	for (int i = 0; i < 2; i++) {
		unlink(cert[i]);
		unlink(key[i]);
	}
	rmdir(dir);
}

/* --- DKIM signing through the keys process (issue 10) ---------------------- */

static unsigned char *pem_of(EVP_PKEY *k, size_t *len_r)
{
	BIO *bio = BIO_new(BIO_s_mem());
	assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
	char *p = NULL;
	long n = BIO_get_mem_data(bio, &p);
	unsigned char *copy = malloc((size_t)n);
	memcpy(copy, p, (size_t)n);
	*len_r = (size_t)n;
	BIO_free(bio);
	return copy;
}

struct dkim_txt_fixture {
	const char *txt[2]; /* rsa1, ed1 */
};

static void *dkim_txt_lookup(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	struct dkim_txt_fixture *f = ctx;
	const char *t = strncmp(name, "rsa1.", 5) == 0 ? f->txt[0] : f->txt[1];
	cb(arg, DKIM_DNS_OK, &t, 1);
	return NULL;
}

static void test_dkim_sign(void **state)
{
	(void)state;
	EVP_PKEY *dk[2] = {EVP_RSA_gen(2048), EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")};
	assert_non_null(dk[0]);
	assert_non_null(dk[1]);
	unsigned char *pems[2];
	size_t lens[2];
	char err[256] = "";
	for (int i = 0; i < 2; i++)
		pems[i] = pem_of(dk[i], &lens[i]);
	assert_int_equal(keyproxy_server_set_dkim_pem(fx.server, (const unsigned char *const *)pems,
	                                              lens, 2, err, sizeof(err)),
	                 0);
	uint64_t before = keyproxy_server_signed(fx.server);

	/* dual signing: both private operations are requests to the keys thread */
	struct dkim_sign_key keys[2] = {
	    {"example.org", "rsa1", DKIM_ALG_RSA_SHA256, 0},
	    {"example.org", "ed1", DKIM_ALG_ED25519_SHA256, 1},
	};
	struct dkim_sign_conf sc = {.keys = keys, .n_keys = 2, .sign = keyproxy_dkim_sign,
	                            .sign_ctx = fx.client};
	static const char msg[] = "From: a@example.org\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n";
	struct dkim_sign *sg = dkim_sign_create(&sc);
	assert_int_equal(dkim_sign_feed(sg, msg, sizeof(msg) - 1), 0);
	const char *error = NULL;
	assert_int_equal(dkim_sign_finish(sg, NULL, NULL, &error), 1);
	const char *hdr = dkim_sign_header(sg, &error);
	assert_non_null(hdr);
	assert_int_equal(keyproxy_server_signed(fx.server), before + 2);

	/* and both verify with the public halves */
	struct buf txt[2];
	struct dkim_txt_fixture tf;
	for (int i = 0; i < 2; i++) {
		buf_init(&txt[i], 0);
		buf_printf(&txt[i], "v=DKIM1; k=%s; p=", i == 0 ? "rsa" : "ed25519");
		assert_int_equal(dkim_pkey_public_b64(dk[i], &txt[i]), 0);
		tf.txt[i] = buf_cstr(&txt[i]);
	}
	struct dkim_resolver r = {dkim_txt_lookup, NULL, &tf};
	struct dkim_verify *v = dkim_verify_create(NULL, &r);
	dkim_verify_feed(v, hdr, strlen(hdr));
	dkim_verify_feed(v, msg, sizeof(msg) - 1);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_count(v), 2);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_PASS);
	assert_int_equal(dkim_verify_result(v, 1)->result, DKIM_RESULT_PASS);
	assert_string_equal(dkim_verify_result(v, 1)->algorithm, "ed25519-sha256");
	dkim_verify_free(&v);
	dkim_sign_free(&sg);

	/* an unknown DKIM index and a wrong hash length are refused, no signature */
	unsigned char hash[32] = {0}, out[KEYPROXY_OUTPUT_MAX];
	size_t olen = 0;
	assert_int_equal(keyproxy_client_dkim_sign(fx.client, 2, hash, 32, out, sizeof(out), &olen,
	                                           &error),
	                 -1);
	struct keyproxy_request req = {.id = 77, .key = 0, .op = KEYPROXY_OP_DKIM_SIGN,
	                               .input = hash, .input_len = 20};
	struct buf frame, ans_frame;
	buf_init(&frame, 0);
	buf_init(&ans_frame, 0);
	assert_int_equal(keyproxy_request_encode(&frame, &req), 0);
	keyproxy_server_answer(fx.server, frame.data, frame.len, &ans_frame);
	struct keyproxy_answer ans;
	assert_int_equal(keyproxy_answer_decode(ans_frame.data, ans_frame.len, &ans, &error), 0);
	assert_int_equal(ans.id, 77);
	assert_int_equal(ans.status, KEYPROXY_S_BAD_OP);
	/* a TLS key index is not a DKIM key: the sets are apart */
	assert_int_equal(keyproxy_server_signed(fx.server), before + 2);

	/* a key that is neither RSA nor Ed25519 is refused at load; the old set stays */
	EVP_PKEY *ec = EVP_EC_gen("P-256");
	size_t eclen;
	unsigned char *ecpem = pem_of(ec, &eclen);
	const unsigned char *ecp[1] = {ecpem};
	assert_int_equal(keyproxy_server_set_dkim_pem(fx.server, ecp, &eclen, 1, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "DKIM key 0"));
	assert_int_equal(keyproxy_client_dkim_sign(fx.client, 1, hash, 32, out, sizeof(out), &olen,
	                                           &error),
	                 0);
	assert_int_equal(olen, 64);
	free(ecpem);
	EVP_PKEY_free(ec);
	buf_free(&frame);
	buf_free(&ans_frame);
	for (int i = 0; i < 2; i++) {
		buf_free(&txt[i]);
		free(pems[i]);
		EVP_PKEY_free(dk[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rsa_tls13_pss), cmocka_unit_test(test_rsa_tls12_pkcs1),
	    cmocka_unit_test(test_rsa_tls12_pss), cmocka_unit_test(test_ec_tls13),
	    cmocka_unit_test(test_ec_tls12),      cmocka_unit_test(test_no_private_component),
	    cmocka_unit_test(test_keys_gone),     cmocka_unit_test(test_parallel),
	    cmocka_unit_test(test_reload),        cmocka_unit_test(test_lying_keys),
	    cmocka_unit_test(test_bad_requests),  cmocka_unit_test(test_codec),
	    cmocka_unit_test(test_tls_proxied),   cmocka_unit_test(test_dkim_sign),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
