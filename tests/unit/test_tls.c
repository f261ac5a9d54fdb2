/* test_tls.c — TLS contexts: SNI selection, protocol and cipher policy,
 * session resumption (tickets and cache), load errors, the self-signed pair.
 * Handshakes run in memory: a client SSL and a server SSL joined by a BIO
 * pair, pumped until both finish or one fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <ftw.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "tls/tls.h"

#define N_ELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Test fixture: a temp dir with three certificate pairs. */
struct fixture {
	char dir[64];
	char a_cert[128], a_key[128]; /* CN/SAN mail.a.test (self-signed ensure) */
	char b_cert[128], b_key[128]; /* SAN *.b.test (self-signed ensure) */
	char c_cert[128], c_key[128]; /* subject CN cn.c.test, no SAN */
	char d_cert[128], d_key[128]; /* SAN x.b.test: exact beats *.b.test */
};

static struct fixture fx;

static void path_join(char *out, size_t outlen, const char *dir, const char *name)
{
	int n = snprintf(out, outlen, "%s/%s", dir, name);
	assert_true(n > 0 && (size_t)n < outlen);
}

/* A certificate without subjectAltName, to exercise the CN fallback. */
static void write_cn_only_pair(const char *dir, const char *cn, const char *cert_path,
                               const char *key_path)
{
	assert_int_equal(mkdir(dir, 0700), 0);
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	assert_non_null(pkey);
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, pkey);
	assert_true(X509_sign(x, pkey, EVP_sha256()) > 0);
	FILE *fp = fopen(cert_path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_X509(fp, x), 1);
	fclose(fp);
	fp = fopen(key_path, "w");
	assert_non_null(fp);
	assert_int_equal(PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
	X509_free(x);
	EVP_PKEY_free(pkey);
}

static int group_setup(void **state)
{
	(void)state;
	char err[512];
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/hk_test_tls_XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return -1;
	char a[128], b[128], c[128], d[128];
	path_join(a, sizeof(a), fx.dir, "a");
	path_join(b, sizeof(b), fx.dir, "b");
	path_join(c, sizeof(c), fx.dir, "c");
	path_join(d, sizeof(d), fx.dir, "d");
	if (tls_self_signed_ensure(a, "mail.a.test", err, sizeof(err)) < 0 ||
	    tls_self_signed_ensure(b, "*.b.test", err, sizeof(err)) < 0 ||
	    tls_self_signed_ensure(d, "x.b.test", err, sizeof(err)) < 0) {
		fprintf(stderr, "setup: %s\n", err);
		return -1;
	}
	path_join(fx.a_cert, sizeof(fx.a_cert), a, "cert.pem");
	path_join(fx.a_key, sizeof(fx.a_key), a, "key.pem");
	path_join(fx.b_cert, sizeof(fx.b_cert), b, "cert.pem");
	path_join(fx.b_key, sizeof(fx.b_key), b, "key.pem");
	path_join(fx.d_cert, sizeof(fx.d_cert), d, "cert.pem");
	path_join(fx.d_key, sizeof(fx.d_key), d, "key.pem");
	path_join(fx.c_cert, sizeof(fx.c_cert), c, "cert.pem");
	path_join(fx.c_key, sizeof(fx.c_key), c, "key.pem");
	write_cn_only_pair(c, "cn.c.test", fx.c_cert, fx.c_key);
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int group_teardown(void **state)
{
	(void)state;
	/* Our own mkdtemp directory: remove it whole, depth first. */
	return nftw(fx.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- Server and handshake helpers ----------------------------------------- */

static struct tls_server *server_make(bool tickets, size_t n, const char *const *which)
{
	struct conf_tls_cert certs[4];
	assert_true(n <= N_ELEM(certs));
	for (size_t i = 0; i < n; i++) {
		switch (which[i][0]) {
		case 'a':
			certs[i] = (struct conf_tls_cert){.cert = fx.a_cert, .key = fx.a_key};
			break;
		case 'b':
			certs[i] = (struct conf_tls_cert){.cert = fx.b_cert, .key = fx.b_key};
			break;
		case 'c':
			certs[i] = (struct conf_tls_cert){.cert = fx.c_cert, .key = fx.c_key};
			break;
		default:
			certs[i] = (struct conf_tls_cert){.cert = fx.d_cert, .key = fx.d_key};
			break;
		}
	}
	struct conf_tls conf = {
	    .certs = certs, .n_certs = n, .self_signed_dir = "", .session_tickets = tickets};
	struct tls_server *tls = NULL;
	char err[512] = "";
	int r = tls_server_create(&conf, "unused", &tls, err, sizeof(err));
	if (r != 0)
		fprintf(stderr, "tls_server_create: %s\n", err);
	assert_int_equal(r, 0);
	assert_non_null(tls);
	assert_int_equal(tls_server_count(tls), n);
	return tls;
}

struct client_opts {
	const char *sni;
	int min_version, max_version; /* 0: library default */
	const char *ciphers;          /* TLS 1.2 list, NULL: default */
	const char *suites;           /* TLS 1.3 list, NULL: default */
	const char *groups;           /* NULL: default */
	int seclevel;                 /* -1: default */
	SSL_SESSION *session;         /* to resume, or NULL */
	const char *trust;            /* CA file for verification, or NULL */
};

struct hs {
	SSL_CTX *cctx;
	SSL *client, *server;
	bool ok;
	unsigned long server_err; /* first queued error when the server failed */
};

static SSL *client_make(struct hs *h, const struct client_opts *o)
{
	h->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(h->cctx);
	if (o->seclevel >= 0)
		SSL_CTX_set_security_level(h->cctx, o->seclevel);
	if (o->min_version != 0)
		assert_int_equal(SSL_CTX_set_min_proto_version(h->cctx, o->min_version), 1);
	if (o->max_version != 0)
		assert_int_equal(SSL_CTX_set_max_proto_version(h->cctx, o->max_version), 1);
	if (o->ciphers != NULL)
		assert_int_equal(SSL_CTX_set_cipher_list(h->cctx, o->ciphers), 1);
	if (o->suites != NULL)
		assert_int_equal(SSL_CTX_set_ciphersuites(h->cctx, o->suites), 1);
	if (o->groups != NULL)
		assert_int_equal(SSL_CTX_set1_groups_list(h->cctx, o->groups), 1);
	if (o->trust != NULL)
		assert_int_equal(SSL_CTX_load_verify_locations(h->cctx, o->trust, NULL), 1);
	SSL *c = SSL_new(h->cctx);
	assert_non_null(c);
	SSL_set_connect_state(c);
	if (o->sni != NULL)
		assert_int_equal(SSL_set_tlsext_host_name(c, o->sni), 1);
	if (o->session != NULL)
		assert_int_equal(SSL_set_session(c, o->session), 1);
	return c;
}

static bool side_failed(SSL *ssl, int r)
{
	if (r == 1)
		return false;
	int e = SSL_get_error(ssl, r);
	return e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
}

/* Run a handshake between a fresh client and server (taken over by h). */
static void hs_run(struct hs *h, SSL *server, const struct client_opts *o)
{
	memset(h, 0, sizeof(*h));
	ERR_clear_error();
	h->server = server;
	h->client = client_make(h, o);
	BIO *cb = NULL, *sb = NULL;
	assert_int_equal(BIO_new_bio_pair(&cb, 0, &sb, 0), 1);
	SSL_set_bio(h->client, cb, cb);
	SSL_set_bio(h->server, sb, sb);
	for (int i = 0; i < 50; i++) {
		int rc = SSL_do_handshake(h->client);
		if (side_failed(h->client, rc)) {
			ERR_clear_error();
			return;
		}
		int rs = SSL_do_handshake(h->server);
		if (side_failed(h->server, rs)) {
			h->server_err = ERR_peek_error();
			ERR_clear_error();
			return;
		}
		if (rc == 1 && rs == 1) {
			/* TLS 1.3 tickets arrive after the handshake; read them. */
			char byte;
			assert_true(SSL_read(h->client, &byte, 1) <= 0);
			ERR_clear_error();
			h->ok = true;
			return;
		}
	}
	fail_msg("handshake did not finish");
}

static void hs_free(struct hs *h)
{
	SSL_free(h->client);
	SSL_free(h->server);
	SSL_CTX_free(h->cctx);
}

static const struct client_opts client_default = {.seclevel = -1};

/* The subject CN of the certificate the client was shown. */
static void peer_cn(SSL *client, char *out, size_t outlen)
{
	X509 *peer = SSL_get0_peer_certificate(client);
	assert_non_null(peer);
	int n = X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, out,
	                                  (int)outlen);
	assert_true(n > 0);
}

/* --- Tests ------------------------------------------------------------------ */

static void test_sni(void **state)
{
	(void)state;
	static const struct {
		const char *sni; /* NULL: no server_name extension */
		const char *want_cn;
	} cases[] = {
	    {"mail.a.test", "mail.a.test"},
	    {"MAIL.A.Test", "mail.a.test"},
	    {"localhost", "mail.a.test"}, /* both self-signed certs list it: first wins */
	    {"y.b.test", "*.b.test"},
	    {"Other.B.TEST", "*.b.test"},
	    {"x.b.test", "x.b.test"}, /* exact beats an earlier wildcard */
	    {"X.B.test", "x.b.test"},
	    {"b.test", "mail.a.test"},     /* wildcard needs one label */
	    {"y.x.b.test", "mail.a.test"}, /* ... and only one */
	    {".b.test", "mail.a.test"},    /* empty label */
	    {"xb.test", "mail.a.test"},
	    {"cn.c.test", "cn.c.test"}, /* CN when there is no SAN */
	    {"CN.C.TEST", "cn.c.test"},
	    {"c.test", "mail.a.test"},
	    {"unknown.example", "mail.a.test"},
	    {"a.test", "mail.a.test"},
	    {NULL, "mail.a.test"},
	};
	static const char *const which[] = {"a", "b", "c", "d"};
	struct tls_server *tls = server_make(true, 4, which);
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct client_opts o = client_default;
		o.sni = cases[i].sni;
		struct hs h;
		hs_run(&h, tls_server_new_ssl(tls), &o);
		assert_true(h.ok);
		char cn[256];
		peer_cn(h.client, cn, sizeof(cn));
		if (strcmp(cn, cases[i].want_cn) != 0)
			fail_msg("sni %s: got %s, want %s", cases[i].sni ? cases[i].sni : "(none)",
			         cn, cases[i].want_cn);
		hs_free(&h);
	}
	tls_server_free(&tls);
	assert_null(tls);
	tls_server_free(&tls); /* NULL is fine */
}

static void test_versions_ciphers(void **state)
{
	(void)state;
	static const struct {
		const char *label;
		int max_version, seclevel;
		const char *ciphers, *suites, *groups;
		bool want_ok;
		int want_reason;          /* server-side failure reason, 0: any */
		const char *want_version; /* on success */
		const char *want_cipher;  /* exact, or NULL: checked against the policy */
	} cases[] = {
	    {"tls1.1", TLS1_1_VERSION, 0, "DEFAULT:@SECLEVEL=0", NULL, NULL, false,
	     SSL_R_UNSUPPORTED_PROTOCOL, NULL, NULL},
	    {"tls1.2", TLS1_2_VERSION, -1, NULL, NULL, NULL, true, 0, "TLSv1.2", NULL},
	    {"tls1.2 chacha", TLS1_2_VERSION, -1, "ECDHE-ECDSA-CHACHA20-POLY1305", NULL, NULL, true,
	     0, "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305"},
	    {"tls1.2 cbc/rsa/dhe only", TLS1_2_VERSION, -1,
	     "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-GCM-SHA256:"
	     "DHE-RSA-AES128-GCM-SHA256",
	     NULL, NULL, false, SSL_R_NO_SHARED_CIPHER, NULL, NULL},
	    {"tls1.3", 0, -1, NULL, NULL, NULL, true, 0, "TLSv1.3", NULL},
	    {"tls1.3 server preference", 0, -1, NULL,
	     "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384", NULL, true, 0, "TLSv1.3",
	     "TLS_AES_256_GCM_SHA384"},
	    {"tls1.3 P-384", 0, -1, NULL, NULL, "P-384", true, 0, "TLSv1.3", NULL},
	    {"tls1.3 no shared group", 0, -1, NULL, NULL, "P-521:ffdhe2048", false, 0, NULL, NULL},
	};
	static const char *const which[] = {"a"};
	struct tls_server *tls = server_make(true, 1, which);
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct client_opts o = client_default;
		o.max_version = cases[i].max_version;
		o.seclevel = cases[i].seclevel;
		o.ciphers = cases[i].ciphers;
		o.suites = cases[i].suites;
		o.groups = cases[i].groups;
		if (cases[i].max_version == TLS1_1_VERSION)
			o.min_version = TLS1_VERSION;
		struct hs h;
		hs_run(&h, tls_server_new_ssl(tls), &o);
		if (h.ok != cases[i].want_ok)
			fail_msg("%s: ok=%d", cases[i].label, h.ok);
		if (!h.ok) {
			if (cases[i].want_reason != 0 &&
			    ERR_GET_REASON(h.server_err) != cases[i].want_reason)
				fail_msg("%s: server error %lx", cases[i].label, h.server_err);
			hs_free(&h);
			continue;
		}
		assert_string_equal(SSL_get_version(h.server), cases[i].want_version);
		const char *cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(h.server));
		if (cases[i].want_cipher != NULL) {
			assert_string_equal(cipher, cases[i].want_cipher);
		} else if (strcmp(cases[i].want_version, "TLSv1.2") == 0) {
			assert_true(strncmp(cipher, "ECDHE-", 6) == 0);
			assert_true(strstr(cipher, "GCM") != NULL ||
			            strstr(cipher, "CHACHA20") != NULL);
		} else {
			assert_true(strcmp(cipher, "TLS_AES_256_GCM_SHA384") == 0 ||
			            strcmp(cipher, "TLS_CHACHA20_POLY1305_SHA256") == 0 ||
			            strcmp(cipher, "TLS_AES_128_GCM_SHA256") == 0);
		}
		/* No compression, no renegotiation, whatever the client asks. */
		assert_null(SSL_get_current_compression(h.server));
		assert_true(SSL_get_options(h.server) & SSL_OP_NO_RENEGOTIATION);
		assert_true(SSL_get_options(h.server) & SSL_OP_CIPHER_SERVER_PREFERENCE);
		assert_true(SSL_get_mode(h.server) & SSL_MODE_RELEASE_BUFFERS);
		hs_free(&h);
	}
	tls_server_free(&tls);
}

static void test_resumption(void **state)
{
	(void)state;
	static const struct {
		bool tickets;
		int max_version;
		const char *sni;
		bool want_resumable, want_ticket, want_reused;
	} cases[] = {
	    {true, 0, NULL, true, true, true},
	    {true, TLS1_2_VERSION, NULL, true, true, true},
	    {true, 0, "x.b.test", true, true, true},
	    {true, TLS1_2_VERSION, "x.b.test", true, true, true},
	    /* Tickets off: TLS 1.2 resumes from the server cache by session
	     * ID; TLS 1.3 gets no NewSessionTicket, so nothing to resume. */
	    {false, TLS1_2_VERSION, NULL, true, false, true},
	    {false, TLS1_2_VERSION, "x.b.test", true, false, true},
	    {false, 0, NULL, false, false, false},
	};
	static const char *const which[] = {"a", "b"};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct tls_server *tls = server_make(cases[i].tickets, 2, which);
		struct client_opts o = client_default;
		o.max_version = cases[i].max_version;
		o.sni = cases[i].sni;
		struct hs h1, h2;
		hs_run(&h1, tls_server_new_ssl(tls), &o);
		assert_true(h1.ok);
		assert_false(SSL_session_reused(h1.client));
		SSL_SESSION *sess = SSL_get1_session(h1.client);
		assert_non_null(sess);
		assert_int_equal(SSL_SESSION_is_resumable(sess), cases[i].want_resumable);
		assert_int_equal(SSL_SESSION_has_ticket(sess), cases[i].want_ticket);
		o.session = cases[i].want_resumable ? sess : NULL;
		hs_run(&h2, tls_server_new_ssl(tls), &o);
		assert_true(h2.ok);
		if (SSL_session_reused(h2.client) != cases[i].want_reused)
			fail_msg("case %zu: reused=%d", i, SSL_session_reused(h2.client));
		assert_int_equal(SSL_session_reused(h2.server), cases[i].want_reused);
		SSL_SESSION_free(sess);
		hs_free(&h1);
		hs_free(&h2);
		tls_server_free(&tls);
	}
}

static void test_load_errors(void **state)
{
	(void)state;
	char missing[160], notpem[160], blocker[160], under[200];
	path_join(missing, sizeof(missing), fx.dir, "missing.pem");
	path_join(notpem, sizeof(notpem), fx.dir, "notpem.pem");
	path_join(blocker, sizeof(blocker), fx.dir, "blocker");
	path_join(under, sizeof(under), blocker, "sub");
	FILE *fp = fopen(notpem, "w");
	assert_non_null(fp);
	fputs("not a certificate\n", fp);
	fclose(fp);
	fp = fopen(blocker, "w");
	assert_non_null(fp);
	fclose(fp);
	const struct {
		const char *cert, *key, *self_signed_dir;
		const char *want_in_err; /* the file the error must name */
	} cases[] = {
	    {missing, fx.a_key, NULL, missing},
	    {fx.a_cert, missing, NULL, missing},
	    {notpem, fx.a_key, NULL, notpem},
	    {fx.a_cert, notpem, NULL, notpem},
	    {fx.a_cert, fx.b_key, NULL, fx.b_key}, /* key does not match the cert */
	    {fx.b_key, fx.b_key, NULL, fx.b_key},  /* a key where the cert goes */
	    {NULL, NULL, under, under},            /* self-signed dir not creatable */
	};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct conf_tls_cert pair = {.cert = (char *)cases[i].cert,
		                             .key = (char *)cases[i].key};
		struct conf_tls conf = {.session_tickets = true};
		if (cases[i].cert != NULL) {
			conf.certs = &pair;
			conf.n_certs = 1;
		}
		conf.self_signed_dir = (char *)cases[i].self_signed_dir;
		struct tls_server *tls = (struct tls_server *)&conf; /* must be reset */
		char err[512] = "";
		assert_int_equal(tls_server_create(&conf, "mx.test", &tls, err, sizeof(err)), -1);
		assert_null(tls);
		if (strstr(err, cases[i].want_in_err) == NULL)
			fail_msg("case %zu: error \"%s\" does not name %s", i, err,
			         cases[i].want_in_err);
		/* "FILE: reason": something follows the name. */
		const char *after =
		    strstr(err, cases[i].want_in_err) + strlen(cases[i].want_in_err);
		assert_true(strncmp(after, ": ", 2) == 0 && strlen(after) > 2);
		assert_int_equal(ERR_peek_error(), 0); /* queue left clean */
	}
	/* Host names that cannot go in a certificate are refused. */
	static const char *const bad_hosts[] = {"", "a,DNS:evil.test", "a b", "x*.test", "*"};
	for (size_t i = 0; i < N_ELEM(bad_hosts); i++) {
		char dir[160], err[512] = "";
		int n = snprintf(dir, sizeof(dir), "%s/bad%zu", fx.dir, i);
		assert_true(n > 0 && (size_t)n < sizeof(dir));
		assert_int_equal(tls_self_signed_ensure(dir, bad_hosts[i], err, sizeof(err)), -1);
		assert_non_null(strstr(err, dir));
	}
}

static void test_not_configured(void **state)
{
	(void)state;
	static const struct {
		char *self_signed_dir;
	} cases[] = {{NULL}, {""}};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct conf_tls conf = {.self_signed_dir = cases[i].self_signed_dir};
		struct tls_server *tls = (struct tls_server *)&conf;
		char err[64] = "";
		assert_int_equal(tls_server_create(&conf, "mx.test", &tls, err, sizeof(err)), 0);
		assert_null(tls);
		assert_int_equal(tls_server_count(tls), 0);
	}
}

static void file_read(const char *path, char *out, size_t outlen, size_t *len_r)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	*len_r = fread(out, 1, outlen, fp);
	assert_true(*len_r > 0 && *len_r < outlen);
	fclose(fp);
}

static void test_self_signed(void **state)
{
	(void)state;
	static const struct {
		const char *host;
		const char *check_host; /* X509_check_host must accept */
		const char *check_ip;
	} cases[] = {
	    {"mx.example.test", "mx.example.test", "127.0.0.1"},
	    {"mx.example.test", "localhost", "::1"},
	    {"localhost", "localhost", "127.0.0.1"},
	};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		char dir[160], cert[200], key[200], err[512] = "";
		int n = snprintf(dir, sizeof(dir), "%s/ss%zu/deeper", fx.dir, i);
		assert_true(n > 0 && (size_t)n < sizeof(dir));
		path_join(cert, sizeof(cert), dir, "cert.pem");
		path_join(key, sizeof(key), dir, "key.pem");
		assert_int_equal(tls_self_signed_ensure(dir, cases[i].host, err, sizeof(err)), 0);

		struct stat dst, kst, cst;
		assert_int_equal(stat(dir, &dst), 0);
		assert_int_equal(dst.st_mode & 0777, 0700);
		assert_int_equal(stat(key, &kst), 0);
		assert_int_equal(kst.st_mode & 0777, 0600);
		assert_int_equal(stat(cert, &cst), 0);

		static char k1[8192], c1[8192], k2[8192], c2[8192];
		size_t k1n, c1n, k2n, c2n;
		file_read(key, k1, sizeof(k1), &k1n);
		file_read(cert, c1, sizeof(c1), &c1n);
		assert_true(strncmp(k1, "-----BEGIN PRIVATE KEY-----", 27) == 0); /* PKCS#8 */

		/* The second call keeps the pair. */
		assert_int_equal(tls_self_signed_ensure(dir, "other.test", err, sizeof(err)), 0);
		struct stat kst2, cst2;
		assert_int_equal(stat(key, &kst2), 0);
		assert_int_equal(stat(cert, &cst2), 0);
		assert_true(kst2.st_ino == kst.st_ino && cst2.st_ino == cst.st_ino);
		assert_true(kst2.st_mtim.tv_sec == kst.st_mtim.tv_sec &&
		            kst2.st_mtim.tv_nsec == kst.st_mtim.tv_nsec);
		file_read(key, k2, sizeof(k2), &k2n);
		file_read(cert, c2, sizeof(c2), &c2n);
		assert_true(k1n == k2n && memcmp(k1, k2, k1n) == 0);
		assert_true(c1n == c2n && memcmp(c1, c2, c1n) == 0);

		/* What is inside. */
		FILE *fp = fopen(cert, "r");
		assert_non_null(fp);
		X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
		fclose(fp);
		assert_non_null(x);
		assert_int_equal(X509_get_version(x), X509_VERSION_3);
		assert_int_equal(X509_check_host(x, cases[i].check_host, 0, 0, NULL), 1);
		assert_int_equal(X509_check_host(x, "not.listed.test", 0, 0, NULL), 0);
		assert_int_equal(X509_check_ip_asc(x, cases[i].check_ip, 0), 1);
		assert_int_equal(X509_check_ca(x), 0);
		assert_true(X509_get_extension_flags(x) & EXFLAG_SS);
		assert_true(X509_get_key_usage(x) == KU_DIGITAL_SIGNATURE);
		assert_true(X509_get_extended_key_usage(x) == XKU_SSL_SERVER);
		assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
		EVP_PKEY *pub = X509_get0_pubkey(x);
		assert_true(EVP_PKEY_is_a(pub, "EC"));
		char group[32];
		assert_int_equal(EVP_PKEY_get_group_name(pub, group, sizeof(group), NULL), 1);
		assert_string_equal(group, "prime256v1");
		const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
		assert_int_equal(ASN1_STRING_length(serial), 16);
		/* notBefore about an hour ago, notAfter 825 days on. */
		int days, secs;
		assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notBefore(x)), 1);
		assert_true(days == 0 && secs <= -3500 && secs >= -3700);
		assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
		assert_true(days == 824 || days == 825);
		X509_free(x);

		/* And it loads as a server through tls.self_signed_dir. */
		struct conf_tls conf = {.self_signed_dir = dir, .session_tickets = true};
		struct tls_server *tls = NULL;
		assert_int_equal(tls_server_create(&conf, cases[i].host, &tls, err, sizeof(err)),
		                 0);
		assert_non_null(tls);
		assert_int_equal(tls_server_count(tls), 1);
		tls_server_free(&tls);
	}
}

static void test_generate_via_create(void **state)
{
	(void)state;
	char dir[160], err[512] = "";
	path_join(dir, sizeof(dir), fx.dir, "gen");
	struct conf_tls conf = {.self_signed_dir = dir, .session_tickets = false};
	struct tls_server *tls = NULL;
	assert_int_equal(tls_server_create(&conf, "gen.test", &tls, err, sizeof(err)), 0);
	assert_non_null(tls);
	struct client_opts o = client_default;
	o.sni = "gen.test";
	struct hs h;
	hs_run(&h, tls_server_new_ssl(tls), &o);
	assert_true(h.ok);
	char cn[256];
	peer_cn(h.client, cn, sizeof(cn));
	assert_string_equal(cn, "gen.test");
	hs_free(&h);
	tls_server_free(&tls);
}

/* Self-signed certificates verify against themselves for each SAN. */
static void test_verify(void **state)
{
	(void)state;
	static const struct {
		const char *host, *ip;
		long want;
	} cases[] = {
	    {"mail.a.test", NULL, X509_V_OK},
	    {"localhost", NULL, X509_V_OK},
	    {NULL, "127.0.0.1", X509_V_OK},
	    {NULL, "::1", X509_V_OK},
	    {"other.test", NULL, X509_V_ERR_HOSTNAME_MISMATCH},
	    {NULL, "10.0.0.1", X509_V_ERR_IP_ADDRESS_MISMATCH},
	};
	static const char *const which[] = {"a"};
	struct tls_server *tls = server_make(true, 1, which);
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct client_opts o = client_default;
		o.trust = fx.a_cert;
		struct hs h;
		/* Verify the chain the client received against the client's
		 * trust store, with the identity of this case. */
		hs_run(&h, tls_server_new_ssl(tls), &o);
		assert_true(h.ok);
		X509 *peer = SSL_get0_peer_certificate(h.client);
		X509_STORE_CTX *sc = X509_STORE_CTX_new();
		assert_non_null(sc);
		assert_int_equal(
		    X509_STORE_CTX_init(sc, SSL_CTX_get_cert_store(h.cctx), peer, NULL), 1);
		X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(sc);
		X509_VERIFY_PARAM_set_purpose(vp, X509_PURPOSE_SSL_SERVER);
		if (cases[i].host != NULL)
			X509_VERIFY_PARAM_set1_host(vp, cases[i].host, 0);
		else
			X509_VERIFY_PARAM_set1_ip_asc(vp, cases[i].ip);
		X509_verify_cert(sc);
		long got = X509_STORE_CTX_get_error(sc);
		if (got != cases[i].want)
			fail_msg("case %zu: %s", i, X509_verify_cert_error_string(got));
		X509_STORE_CTX_free(sc);
		hs_free(&h);
	}
	tls_server_free(&tls);
}

static void test_describe(void **state)
{
	(void)state;
	static const struct {
		int max_version;
		const char *ciphers, *suites;
		const char *want;
	} cases[] = {
	    {0, NULL, "TLS_CHACHA20_POLY1305_SHA256",
	     "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256 (256/256 bits)"},
	    {0, NULL, "TLS_AES_128_GCM_SHA256", "TLSv1.3 TLS_AES_128_GCM_SHA256 (128/128 bits)"},
	    {0, NULL, NULL, "TLSv1.3 TLS_AES_256_GCM_SHA384 (256/256 bits)"},
	    {TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", NULL,
	     "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256 (128/128 bits)"},
	    {TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", NULL,
	     "TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)"},
	};
	static const char *const which[] = {"a"};
	struct tls_server *tls = server_make(true, 1, which);
	char out[128];
	SSL *fresh = tls_server_new_ssl(tls);
	assert_string_equal(tls_describe(fresh, out, sizeof(out)), "none");
	SSL_free(fresh);
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		struct client_opts o = client_default;
		o.max_version = cases[i].max_version;
		o.ciphers = cases[i].ciphers;
		o.suites = cases[i].suites;
		struct hs h;
		hs_run(&h, tls_server_new_ssl(tls), &o);
		assert_true(h.ok);
		assert_ptr_equal(tls_describe(h.server, out, sizeof(out)), out);
		assert_string_equal(out, cases[i].want);
		assert_string_equal(tls_describe(h.client, out, sizeof(out)), cases[i].want);
		hs_free(&h);
	}
	tls_server_free(&tls);
}

/* Reload: an SSL handed out before tls_server_free still completes its
 * handshake, SNI switch included, once the server object is gone. */
static void test_free_before_handshake(void **state)
{
	(void)state;
	static const struct {
		const char *sni, *want_cn;
	} cases[] = {
	    {"x.b.test", "*.b.test"},
	    {"mail.a.test", "mail.a.test"},
	    {NULL, "mail.a.test"},
	};
	for (size_t i = 0; i < N_ELEM(cases); i++) {
		static const char *const which[] = {"a", "b"};
		struct tls_server *tls = server_make(true, 2, which);
		SSL *s1 = tls_server_new_ssl(tls);
		SSL *s2 = tls_server_new_ssl(tls);
		assert_non_null(s1);
		tls_server_free(&tls);
		assert_null(tls);
		struct client_opts o = client_default;
		o.sni = cases[i].sni;
		struct hs h;
		hs_run(&h, s1, &o);
		assert_true(h.ok);
		char cn[256];
		peer_cn(h.client, cn, sizeof(cn));
		assert_string_equal(cn, cases[i].want_cn);
		hs_free(&h);
		hs_run(&h, s2, &o); /* the last reference */
		assert_true(h.ok);
		hs_free(&h);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sni),
	    cmocka_unit_test(test_versions_ciphers),
	    cmocka_unit_test(test_resumption),
	    cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_not_configured),
	    cmocka_unit_test(test_self_signed),
	    cmocka_unit_test(test_generate_via_create),
	    cmocka_unit_test(test_verify),
	    cmocka_unit_test(test_describe),
	    cmocka_unit_test(test_free_before_handshake),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
