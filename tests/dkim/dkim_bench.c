/* dkim_bench.c — what DKIM costs per message (issue 10, "Speed").
 *
 * Usage: dkim_bench [N] [SIZE]   (N messages per line, default 200; body of
 *                                SIZE octets, default 4096, as bench/run.sh)
 *
 * Signs N messages with RSA-2048, with Ed25519 and with both (dual), once
 * with the keys in this process and once through the keys process's DKIM
 * operation (a keys thread over socketpair(AF_UNIX, SOCK_SEQPACKET), as in
 * the daemon); then verifies N messages carrying both signatures (keys from
 * an injected resolver that answers at once: DNS is not measured, it is
 * cached and asynchronous in the daemon). ARC (RFC 8617): sealing (two RSA
 * signatures through the keys process) and verifying chains of one and
 * two sets, as smtpd does for forwarded mail. Prints µs per message and
 * messages per second of one core. Not a test: figures for docs, best read
 * from a build without sanitizers (meson setup build; ninja -C build). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "dauth/arc.h"
#include "dauth/dkim.h"
#include "lib/strutil.h"
#include "tls/keyproxy.h"

static double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct bench {
	EVP_PKEY *pk[2]; /* rsa, ed25519 */
	char txt[2][1024];
	struct buf msg;
	struct keyproxy_client *kc;
};

static void bench_message(struct buf *m, size_t size)
{
	buf_append_str(m,
	               "From: Alice <alice@example.org>\r\nTo: bob@example.com\r\n"
	               "Subject: a benchmark message\r\nDate: Thu, 03 Dec 2026 20:00:00 +0000\r\n"
	               "Message-ID: <bench@example.org>\r\nMIME-Version: 1.0\r\n"
	               "Content-Type: text/plain; charset=us-ascii\r\n\r\n");
	for (size_t n = 0; n < size; n += 64)
		buf_append_str(
		    m, "The quick brown fox jumps over the lazy dog, again  and again.\r\n");
}

/* Sign one message with keys[which]; the signed message into out if given. */
static void bench_sign(struct bench *b, const int *which, size_t n, bool proxied, struct buf *out)
{
	struct dkim_sign_key keys[2];
	for (size_t i = 0; i < n; i++)
		keys[i] = (struct dkim_sign_key){"example.org", which[i] == 0 ? "rsa1" : "ed1",
		                                 which[i] == 0 ? DKIM_ALG_RSA_SHA256
		                                               : DKIM_ALG_ED25519_SHA256,
		                                 (uint64_t)which[i]};
	struct dkim_pkeys pk = {b->pk, 2};
	struct dkim_sign_conf sc = {.keys = keys,
	                            .n_keys = n,
	                            .sign = proxied ? keyproxy_dkim_sign : dkim_sign_with_pkeys,
	                            .sign_ctx = proxied ? (void *)b->kc : (void *)&pk};
	struct dkim_sign *s = dkim_sign_create(&sc);
	for (size_t off = 0; off < b->msg.len; off += 8192)
		dkim_sign_feed(s, b->msg.data + off,
		               b->msg.len - off < 8192 ? b->msg.len - off : 8192);
	const char *error = NULL;
	if (dkim_sign_finish(s, NULL, NULL, &error) != 1) {
		fprintf(stderr, "sign: %s\n", error);
		exit(1);
	}
	if (out != NULL) {
		buf_reset(out);
		buf_append_str(out, dkim_sign_header(s, &error));
		buf_append(out, b->msg.data, b->msg.len);
	}
	dkim_sign_free(&s);
}

static void *bench_lookup(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	struct bench *b = ctx;
	const char *t = strncmp(name, "rsa1.", 5) == 0 ? b->txt[0] : b->txt[1];
	cb(arg, DKIM_DNS_OK, &t, 1);
	return NULL;
}

static void bench_verify(struct bench *b, const struct buf *m)
{
	struct dkim_resolver r = {bench_lookup, NULL, b};
	struct dkim_verify *v = dkim_verify_create(NULL, &r);
	for (size_t off = 0; off < m->len; off += 8192)
		dkim_verify_feed(v, m->data + off, m->len - off < 8192 ? m->len - off : 8192);
	if (dkim_verify_finish(v, NULL, NULL) != 1 || dkim_verify_count(v) != 2 ||
	    dkim_verify_result(v, 0)->result != DKIM_RESULT_PASS ||
	    dkim_verify_result(v, 1)->result != DKIM_RESULT_PASS) {
		fprintf(stderr, "verify did not pass\n");
		exit(1);
	}
	dkim_verify_free(&v);
}

/* Seal m (RSA key 0 through the keys process) into out. */
static void bench_arc_seal(struct bench *b, const struct buf *m, enum arc_result chain,
                           struct buf *out)
{
	struct dkim_sign_key key = {"example.org", "rsa1", DKIM_ALG_RSA_SHA256, 0};
	struct arc_seal_conf sc = {.key = &key,
	                           .authres = "bench.example; spf=pass smtp.mailfrom=example.org",
	                           .chain = chain,
	                           .sign = keyproxy_dkim_sign,
	                           .sign_ctx = b->kc};
	struct arc_seal *s = arc_seal_create(&sc);
	for (size_t off = 0; off < m->len; off += 8192)
		arc_seal_feed(s, m->data + off, m->len - off < 8192 ? m->len - off : 8192);
	const char *error = NULL;
	if (arc_seal_finish(s, NULL, NULL, &error) != 1) {
		fprintf(stderr, "arc seal: %s\n", error);
		exit(1);
	}
	if (out != NULL) {
		buf_reset(out);
		buf_append_str(out, arc_seal_header(s, &error));
		buf_append(out, m->data, m->len);
	}
	arc_seal_free(&s);
}

static void bench_arc_verify(struct bench *b, const struct buf *m, unsigned want_sets)
{
	struct dkim_resolver r = {bench_lookup, NULL, b};
	struct arc_verify *v = arc_verify_create(0, &r);
	for (size_t off = 0; off < m->len; off += 8192)
		arc_verify_feed(v, m->data + off, m->len - off < 8192 ? m->len - off : 8192);
	unsigned sets = 0;
	const char *why = NULL;
	if (arc_verify_finish(v, NULL, NULL) != 1 ||
	    arc_verify_result(v, &sets, &why) != ARC_RESULT_PASS || sets != want_sets) {
		fprintf(stderr, "arc verify did not pass: %s\n", why != NULL ? why : "");
		exit(1);
	}
	arc_verify_free(&v);
}

static void bench_line(const char *what, double secs, size_t n)
{
	printf("%-34s %9.1f us/msg %9.0f msg/s\n", what, secs * 1e6 / (double)n, (double)n / secs);
}

static struct keyproxy_server *bench_server(struct bench *b)
{
	const char *error = NULL;
	EVP_PKEY *tls = EVP_EC_gen("P-256");
	struct keyproxy_server *srv = keyproxy_server_create(&tls, 1, &error);
	EVP_PKEY_free(tls);
	unsigned char *pems[2];
	size_t lens[2];
	char err[256];
	for (int i = 0; i < 2; i++) {
		BIO *bio = BIO_new(BIO_s_mem());
		char *p = NULL;
		PEM_write_bio_PrivateKey(bio, b->pk[i], NULL, NULL, 0, NULL, NULL);
		long n = BIO_get_mem_data(bio, &p);
		pems[i] = malloc((size_t)n);
		memcpy(pems[i], p, (size_t)n);
		lens[i] = (size_t)n;
		BIO_free(bio);
	}
	if (srv == NULL || keyproxy_server_set_dkim_pem(srv, (const unsigned char *const *)pems,
	                                                lens, 2, err, sizeof(err)) < 0) {
		fprintf(stderr, "keys: %s\n", err);
		exit(1);
	}
	free(pems[0]);
	free(pems[1]);
	return srv;
}

int main(int argc, char **argv)
{
	uint64_t n = 200, size = 4096;
	if ((argc > 1 && str_parse_u64(argv[1], strlen(argv[1]), 1, 1000000, &n) < 0) ||
	    (argc > 2 && str_parse_u64(argv[2], strlen(argv[2]), 0, 100 << 20, &size) < 0)) {
		fprintf(stderr, "usage: dkim_bench [N] [SIZE]\n");
		return 2;
	}
	struct bench b = {0};
	b.pk[0] = EVP_RSA_gen(2048);
	b.pk[1] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	for (int i = 0; i < 2; i++) {
		struct buf t;
		buf_init(&t, 0);
		buf_printf(&t, "v=DKIM1; k=%s; p=", i == 0 ? "rsa" : "ed25519");
		dkim_pkey_public_b64(b.pk[i], &t);
		snprintf(b.txt[i], sizeof(b.txt[i]), "%s", buf_cstr(&t));
		buf_free(&t);
	}
	buf_init(&b.msg, 0);
	bench_message(&b.msg, (size_t)size);
	struct keyproxy_server *srv = bench_server(&b);
	int sv[2];
	pthread_t thread;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0 ||
	    keyproxy_serve_thread(srv, sv[1], &thread) < 0)
		return 1;
	b.kc = keyproxy_client_create(sv[0]);
	printf("%llu messages of %zu octets\n", (unsigned long long)n, b.msg.len);

	static const int rsa[] = {0}, ed[] = {1}, both[] = {0, 1};
	static const struct {
		const char *name;
		const int *which;
		size_t n;
	} lines[] = {
	    {"sign rsa-2048", rsa, 1}, {"sign ed25519", ed, 1}, {"sign both (dual)", both, 2}};
	for (size_t l = 0; l < 3; l++) {
		for (int proxied = 0; proxied < 2; proxied++) {
			double t0 = bench_now();
			for (uint64_t i = 0; i < n; i++)
				bench_sign(&b, lines[l].which, lines[l].n, proxied, NULL);
			char what[64];
			snprintf(what, sizeof(what), "%s%s", lines[l].name,
			         proxied ? ", keys process" : "");
			bench_line(what, bench_now() - t0, n);
		}
	}
	struct buf signed_msg;
	buf_init(&signed_msg, 0);
	bench_sign(&b, both, 2, false, &signed_msg);
	double t0 = bench_now();
	for (uint64_t i = 0; i < n; i++)
		bench_verify(&b, &signed_msg);
	bench_line("verify rsa-2048 + ed25519", bench_now() - t0, n);

	struct buf one, two;
	buf_init(&one, 0);
	buf_init(&two, 0);
	t0 = bench_now();
	for (uint64_t i = 0; i < n; i++)
		bench_arc_seal(&b, &b.msg, ARC_RESULT_NONE, NULL);
	bench_line("arc seal rsa-2048, keys process", bench_now() - t0, n);
	bench_arc_seal(&b, &b.msg, ARC_RESULT_NONE, &one);
	bench_arc_seal(&b, &one, ARC_RESULT_PASS, &two);
	t0 = bench_now();
	for (uint64_t i = 0; i < n; i++)
		bench_arc_verify(&b, &one, 1);
	bench_line("arc verify, 1 set", bench_now() - t0, n);
	t0 = bench_now();
	for (uint64_t i = 0; i < n; i++)
		bench_arc_verify(&b, &two, 2);
	bench_line("arc verify, 2 sets", bench_now() - t0, n);
	buf_free(&one);
	buf_free(&two);

	keyproxy_client_free(&b.kc);
	pthread_join(thread, NULL);
	keyproxy_server_free(&srv);
	buf_free(&signed_msg);
	buf_free(&b.msg);
	EVP_PKEY_free(b.pk[0]);
	EVP_PKEY_free(b.pk[1]);
	return 0;
}
