/* keyproxy_bench.c — what the key proxy costs a TLS handshake.
 *
 * Usage: keyproxy_bench [N]   (N handshakes per line, default 300)
 *
 * For RSA-2048 and ECDSA P-256 certificates, TLS 1.3 and TLS 1.2, runs N
 * full handshakes (no resumption) in memory, client and server in this
 * thread joined by a BIO pair, once with the private key in the server's
 * SSL_CTX and once with the key behind the proxy: a keys thread answering
 * over socketpair(AF_UNIX, SOCK_SEQPACKET), as the keys process will. Prints
 * handshakes per second (both ends' work: the client's share is the same in
 * both columns) and the proxy's extra time per handshake; then the bare
 * round trip of one signature, proxied vs in-process. Not a test: figures
 * for docs and the lead, best read from a build without sanitizers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/keyproxy.h"

static double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static X509 *bench_cert(EVP_PKEY *pkey)
{
	X509 *x = X509_new();
	X509_set_version(x, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)"bench", -1,
	                           -1, 0);
	X509_set_issuer_name(x, name);
	X509_set_pubkey(x, pkey);
	if (X509_sign(x, pkey, EVP_sha256()) <= 0)
		abort();
	return x;
}

static bool bench_step(SSL *ssl, bool *done)
{
	if (*done)
		return true;
	int r = SSL_do_handshake(ssl);
	if (r == 1)
		return *done = true;
	int e = SSL_get_error(ssl, r);
	return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE;
}

static void bench_handshake(SSL_CTX *sctx, SSL_CTX *cctx)
{
	SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
	BIO *bs, *bc;
	if (s == NULL || c == NULL || BIO_new_bio_pair(&bs, 0, &bc, 0) != 1)
		abort();
	SSL_set_bio(s, bs, bs);
	SSL_set_bio(c, bc, bc);
	SSL_set_accept_state(s);
	SSL_set_connect_state(c);
	bool sd = false, cd = false, ok = true;
	for (int i = 0; i < 50 && ok && !(sd && cd); i++)
		ok = bench_step(c, &cd) && bench_step(s, &sd);
	if (!ok || !sd || !cd) {
		ERR_print_errors_fp(stderr);
		abort();
	}
	SSL_free(s);
	SSL_free(c);
}

static double bench_rate(SSL_CTX *sctx, SSL_CTX *cctx, int n)
{
	bench_handshake(sctx, cctx); /* warm up */
	double t0 = bench_now();
	for (int i = 0; i < n; i++)
		bench_handshake(sctx, cctx);
	return n / (bench_now() - t0);
}

static double bench_sign_us(EVP_PKEY *pkey, int n)
{
	unsigned char sig[1024];
	const unsigned char msg[] = "bench";
	double t0 = bench_now();
	for (int i = 0; i < n; i++) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		size_t len = sizeof(sig);
		if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
		    EVP_DigestSign(md, sig, &len, msg, sizeof(msg) - 1) != 1)
			abort();
		EVP_MD_CTX_free(md);
	}
	return (bench_now() - t0) / n * 1e6;
}

int main(int argc, char **argv)
{
	int n = 300;
	if (argc > 1) {
		char *end = NULL;
		long v = strtol(argv[1], &end, 10);
		if (end == argv[1] || *end != '\0' || v <= 0 || v > 1000000) {
			fprintf(stderr, "usage: keyproxy_bench [N]\n");
			return 2;
		}
		n = (int)v;
	}
	EVP_PKEY *keys[2] = {EVP_RSA_gen(2048), EVP_EC_gen("P-256")};
	const char *names[2] = {"RSA-2048", "P-256"};
	const char *error = NULL;
	struct keyproxy_server *server = keyproxy_server_create(keys, 2, &error);
	int sv[2];
	pthread_t thread;
	if (server == NULL || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0 ||
	    keyproxy_serve_thread(server, sv[1], &thread) < 0)
		abort();
	struct keyproxy_client *kc = keyproxy_client_create(sv[0]);

	printf("%-9s %-8s %12s %12s %14s\n", "key", "protocol", "direct hs/s", "proxied hs/s",
	       "extra us/hs");
	for (int k = 0; k < 2; k++) {
		X509 *cert = bench_cert(keys[k]);
		SSL_CTX *direct = SSL_CTX_new(TLS_server_method());
		SSL_CTX *proxied = SSL_CTX_new(TLS_server_method());
		SSL_CTX_use_certificate(direct, cert);
		SSL_CTX_use_PrivateKey(direct, keys[k]);
		SSL_CTX_use_certificate(proxied, cert);
		if (keyproxy_client_use(kc, proxied, (uint64_t)k, &error) < 0)
			abort();
		for (int v = 0; v < 2; v++) {
			SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
			SSL_CTX_set_max_proto_version(cctx, v == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
			double d = bench_rate(direct, cctx, n);
			double p = bench_rate(proxied, cctx, n);
			printf("%-9s %-8s %12.0f %12.0f %14.1f\n", names[k], v == 0 ? "TLS1.3" : "TLS1.2",
			       d, p, (1 / p - 1 / d) * 1e6);
			SSL_CTX_free(cctx);
		}
		EVP_PKEY *pk = SSL_CTX_get0_privatekey(proxied);
		printf("%-9s one signature: in-process %.1f us, through the proxy %.1f us\n",
		       names[k], bench_sign_us(keys[k], n), bench_sign_us(pk, n));
		SSL_CTX_free(direct);
		SSL_CTX_free(proxied);
		X509_free(cert);
	}
	keyproxy_client_free(&kc);
	pthread_join(thread, NULL);
	keyproxy_server_free(&server);
	EVP_PKEY_free(keys[0]);
	EVP_PKEY_free(keys[1]);
	return 0;
}
