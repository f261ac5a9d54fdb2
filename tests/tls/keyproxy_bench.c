/* keyproxy_bench.c — what the key proxy costs a TLS handshake.
 *
 * Usage: keyproxy_bench [N]   (7 interleaved batches of N handshakes per
 *                             setup and line, medians; default N 50)
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

static double bench_clock(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the whole process (the keys thread included): what the
 * proxy costs in work, less disturbed by other load than the wall clock. */
static bool bench_cpu;

static double bench_now(void)
{
	return bench_clock(bench_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC);
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

static double bench_batch(SSL_CTX *sctx, SSL_CTX *cctx, int n)
{
	double t0 = bench_now();
	for (int i = 0; i < n; i++)
		bench_handshake(sctx, cctx);
	return (bench_now() - t0) / n;
}

static int bench_cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Median seconds per handshake over BENCH_ROUNDS batches of n each, the
 * two setups interleaved batch by batch so that a busy machine (other
 * builds share these cores) weighs on both alike. */
#define BENCH_ROUNDS 7
static void bench_pair(SSL_CTX *a, SSL_CTX *b, SSL_CTX *cctx, int n, double *a_r, double *b_r)
{
	double ta[BENCH_ROUNDS], tb[BENCH_ROUNDS];
	bench_handshake(a, cctx); /* warm up */
	bench_handshake(b, cctx);
	for (int r = 0; r < BENCH_ROUNDS; r++) {
		ta[r] = bench_batch(a, cctx, n);
		tb[r] = bench_batch(b, cctx, n);
	}
	qsort(ta, BENCH_ROUNDS, sizeof(double), bench_cmp);
	qsort(tb, BENCH_ROUNDS, sizeof(double), bench_cmp);
	*a_r = ta[BENCH_ROUNDS / 2];
	*b_r = tb[BENCH_ROUNDS / 2];
}

static double bench_sign_batch(EVP_PKEY *pkey, int n)
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

/* Median microseconds per signature, the two keys interleaved. */
static void bench_sign_pair(EVP_PKEY *a, EVP_PKEY *b, int n, double *a_r, double *b_r)
{
	double ta[BENCH_ROUNDS], tb[BENCH_ROUNDS];
	for (int r = 0; r < BENCH_ROUNDS; r++) {
		ta[r] = bench_sign_batch(a, n);
		tb[r] = bench_sign_batch(b, n);
	}
	qsort(ta, BENCH_ROUNDS, sizeof(double), bench_cmp);
	qsort(tb, BENCH_ROUNDS, sizeof(double), bench_cmp);
	*a_r = ta[BENCH_ROUNDS / 2];
	*b_r = tb[BENCH_ROUNDS / 2];
}

/* Median microseconds of one bare round trip (a SIGN for a key index the
 * server lacks: decode, refuse, answer), wall clock: the proxy's own cost
 * per signature, without the signing. */
static double bench_round_trip_us(int fd, int n)
{
	unsigned char digest[32] = {0}, in[KEYPROXY_FRAME_MAX];
	struct keyproxy_request req = {.key = KEYPROXY_KEYS_MAX,
	                               .op = KEYPROXY_OP_ECDSA_SIGN,
	                               .input = digest,
	                               .input_len = sizeof(digest)};
	double t[BENCH_ROUNDS];
	struct buf b;
	buf_init(&b, KEYPROXY_FRAME_MAX);
	for (int r = 0; r < BENCH_ROUNDS; r++) {
		double t0 = bench_clock(CLOCK_MONOTONIC);
		for (int i = 0; i < n; i++) {
			req.id++;
			buf_reset(&b);
			if (keyproxy_request_encode(&b, &req) < 0 ||
			    send(fd, b.data, b.len, 0) != (ssize_t)b.len ||
			    recv(fd, in, sizeof(in), 0) <= 0)
				abort();
		}
		t[r] = (bench_clock(CLOCK_MONOTONIC) - t0) / n * 1e6;
	}
	buf_free(&b);
	qsort(t, BENCH_ROUNDS, sizeof(double), bench_cmp);
	return t[BENCH_ROUNDS / 2];
}

/* Both protocol versions and one signature for key (index in the proxy). */
static void bench_key(struct keyproxy_client *kc, EVP_PKEY *key, uint64_t index, const char *name,
                      int n)
{
	const char *error = NULL;
	X509 *cert = bench_cert(key);
	SSL_CTX *direct = SSL_CTX_new(TLS_server_method());
	SSL_CTX *proxied = SSL_CTX_new(TLS_server_method());
	SSL_CTX_use_certificate(direct, cert);
	SSL_CTX_use_PrivateKey(direct, key);
	SSL_CTX_use_certificate(proxied, cert);
	if (keyproxy_client_use(kc, proxied, index, &error) < 0)
		abort();
	for (int v = 0; v < 2; v++) {
		SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_max_proto_version(cctx, v == 0 ? TLS1_3_VERSION : TLS1_2_VERSION);
		double d, p;
		bench_pair(direct, proxied, cctx, n, &d, &p);
		printf("%-9s %-8s %12.0f %12.0f %14.1f\n", name, v == 0 ? "TLS1.3" : "TLS1.2",
		       1 / d, 1 / p, (p - d) * 1e6);
		SSL_CTX_free(cctx);
	}
	double sd, sp;
	bench_sign_pair(key, SSL_CTX_get0_privatekey(proxied), n, &sd, &sp);
	printf("%-9s one signature: in-process %.1f us, through the proxy %.1f us\n", name, sd, sp);
	SSL_CTX_free(direct);
	SSL_CTX_free(proxied);
	X509_free(cert);
}

int main(int argc, char **argv)
{
	int n = 50;
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

	for (int pass = 0; pass < 2; pass++) {
		bench_cpu = pass == 1;
		printf("%s\n%-9s %-8s %12s %12s %14s\n",
		       bench_cpu ? "CPU time of the process (both threads)" : "wall clock", "key",
		       "protocol", "direct hs/s", "proxied hs/s", "extra us/hs");
		for (int k = 0; k < 2; k++)
			bench_key(kc, keys[k], (uint64_t)k, names[k], n);
	}
	int rv[2];
	pthread_t rt;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, rv) < 0 ||
	    keyproxy_serve_thread(server, rv[1], &rt) < 0)
		abort();
	printf("bare round trip (refused request, no signing): %.1f us\n",
	       bench_round_trip_us(rv[0], n * 20));
	close(rv[0]);
	pthread_join(rt, NULL);
	keyproxy_client_free(&kc);
	pthread_join(thread, NULL);
	keyproxy_server_free(&server);
	EVP_PKEY_free(keys[0]);
	EVP_PKEY_free(keys[1]);
	return 0;
}
