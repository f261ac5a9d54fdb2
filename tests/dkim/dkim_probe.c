/* dkim_probe.c — test driver for src/dauth/dkim*: verifies or signs the
 * message on stdin, for tests/integration/test_dkim.py (dkimpy interop,
 * with a dnslib server) and bench/.
 *
 *   dkim_probe verify [-f FWD] [-T TIMEOUT_MS] [-n NOW] [-c CHUNK] < msg
 *       one JSON line per signature, then {"event":"done","sync":0|1}
 *   dkim_probe sign [-n NOW] [-x EXPIRE_S] [-c CHUNK] -k KEY -d DOMAIN -s SELECTOR
 *                   [-k KEY -d DOMAIN -s SELECTOR]... < msg
 *       the signed message (DKIM-Signature fields prepended) on stdout
 *
 *   dkim_probe arc-verify [-f FWD] [-T TIMEOUT_MS] [-c CHUNK] < msg
 *       {"arc":"pass|fail|none","sets":N,"reason":"..."}
 *   dkim_probe arc-seal -k KEY -d DOMAIN -s SELECTOR -r AUTHRES
 *                       [-v pass|fail|none] [-n NOW] < msg
 *       the sealed message (the new ARC set prepended) on stdout
 *
 * CHUNK feeds the message in pieces of that many octets (0: all at once).
 * Input: the test's own messages and DNS server, trusted. */
#include "dauth/arc.h"
#include "dauth/dkim.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/strutil.h"

#include <event2/event.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void probe_json_str(const char *s)
{
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void probe_read_all(struct buf *b)
{
	unsigned char tmp[65536];
	ssize_t n;
	while ((n = read(0, tmp, sizeof(tmp))) > 0)
		buf_append(b, tmp, (size_t)n);
}

static uint64_t probe_num(const char *s)
{
	uint64_t v = 0;
	if (str_parse_u64(s, strlen(s), 0, UINT64_MAX / 2, &v) < 0) {
		fprintf(stderr, "bad number %s\n", s);
		exit(2);
	}
	return v;
}

struct probe_verify {
	struct event_base *base;
	bool called;
};

static void probe_verify_done(struct dkim_verify *v, void *arg)
{
	struct probe_verify *p = arg;
	(void)v;
	p->called = true;
	event_base_loopbreak(p->base);
}

static void probe_print(const struct dkim_verify *v, int sync)
{
	for (size_t i = 0; i < dkim_verify_count(v); i++) {
		const struct dkim_verify_sig *r = dkim_verify_result(v, i);
		fputs("{\"result\":", stdout);
		probe_json_str(dkim_result_name(r->result));
		fputs(",\"reason\":", stdout);
		probe_json_str(r->reason != NULL ? r->reason : "");
		printf(",\"bh_mismatch\":%s,\"testing\":%s,\"bits\":%u,\"d\":",
		       r->body_hash_mismatch ? "true" : "false", r->testing ? "true" : "false",
		       r->key_bits);
		probe_json_str(r->domain);
		fputs(",\"s\":", stdout);
		probe_json_str(r->selector);
		fputs(",\"i\":", stdout);
		probe_json_str(r->auid);
		fputs(",\"a\":", stdout);
		probe_json_str(r->algorithm);
		fputs(",\"b\":", stdout);
		probe_json_str(r->b_prefix);
		fputs("}\n", stdout);
	}
	printf("{\"event\":\"done\",\"n\":%zu,\"sync\":%d}\n", dkim_verify_count(v), sync);
}

static int probe_verify(int argc, char **argv)
{
	const char *fwd[4];
	size_t nfwd = 0, chunk = 0;
	struct dkim_verify_conf vc = {0};
	struct dns_conf dc = {0};
	int c;
	while ((c = getopt(argc, argv, "f:T:n:c:")) != -1) {
		if (c == 'f' && nfwd < 4)
			fwd[nfwd++] = optarg;
		else if (c == 'T')
			dc.timeout_ms = (unsigned)probe_num(optarg);
		else if (c == 'n')
			vc.now = (time_t)probe_num(optarg);
		else if (c == 'c')
			chunk = (size_t)probe_num(optarg);
		else
			return 2;
	}
	dc.forwarders = fwd;
	dc.n_forwarders = nfwd;
	struct probe_verify p = {.base = event_base_new()};
	struct dns *dns = NULL;
	char err[256];
	if (dns_create(p.base, &dc, &dns, err, sizeof(err)) < 0) {
		fprintf(stderr, "dns: %s\n", err);
		return 1;
	}
	struct dkim_resolver r;
	dkim_resolver_dns(&r, dns);
	struct dkim_verify *v = dkim_verify_create(&vc, &r);
	struct buf msg;
	buf_init(&msg, 0);
	probe_read_all(&msg);
	for (size_t off = 0; off < msg.len;) {
		size_t n = chunk == 0 || msg.len - off < chunk ? msg.len - off : chunk;
		dkim_verify_feed(v, msg.data + off, n);
		off += n;
	}
	int sync = dkim_verify_finish(v, probe_verify_done, &p);
	if (sync == 0)
		event_base_dispatch(p.base);
	probe_print(v, sync);
	dkim_verify_free(&v);
	dns_free(&dns);
	event_base_free(p.base);
	buf_free(&msg);
	return 0;
}

static EVP_PKEY *probe_key(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		perror(path);
		exit(2);
	}
	EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if (k == NULL) {
		fprintf(stderr, "%s: not a private key\n", path);
		exit(2);
	}
	return k;
}

static int probe_sign(int argc, char **argv)
{
	EVP_PKEY *pkeys[DKIM_SIGS_MAX];
	struct dkim_sign_key keys[DKIM_SIGS_MAX];
	size_t nk = 0, nd = 0, ns = 0, chunk = 0;
	struct dkim_sign_conf sc = {0};
	int c;
	while ((c = getopt(argc, argv, "k:d:s:n:x:c:")) != -1) {
		if (c == 'k' && nk < DKIM_SIGS_MAX) {
			pkeys[nk] = probe_key(optarg);
			keys[nk].key_id = nk;
			if (dkim_pkey_alg(pkeys[nk], &keys[nk].alg) < 0)
				return 2;
			nk++;
		} else if (c == 'd' && nd < DKIM_SIGS_MAX)
			keys[nd++].domain = optarg;
		else if (c == 's' && ns < DKIM_SIGS_MAX)
			keys[ns++].selector = optarg;
		else if (c == 'n')
			sc.now = (time_t)probe_num(optarg);
		else if (c == 'x')
			sc.expire_s = probe_num(optarg);
		else if (c == 'c')
			chunk = (size_t)probe_num(optarg);
		else
			return 2;
	}
	if (nk == 0 || nd != nk || ns != nk) {
		fprintf(stderr, "each -k needs its -d and -s\n");
		return 2;
	}
	struct dkim_pkeys pk = {pkeys, nk};
	sc.keys = keys;
	sc.n_keys = nk;
	sc.sign = dkim_sign_with_pkeys;
	sc.sign_ctx = &pk;
	struct dkim_sign *s = dkim_sign_create(&sc);
	struct buf msg;
	buf_init(&msg, 0);
	probe_read_all(&msg);
	for (size_t off = 0; off < msg.len;) {
		size_t n = chunk == 0 || msg.len - off < chunk ? msg.len - off : chunk;
		dkim_sign_feed(s, msg.data + off, n);
		off += n;
	}
	const char *error = NULL;
	if (dkim_sign_finish(s, NULL, NULL, &error) != 1) {
		fprintf(stderr, "sign: %s\n", error != NULL ? error : "pending");
		return 1;
	}
	const char *h = dkim_sign_header(s, &error);
	fwrite(h, 1, strlen(h), stdout);
	fwrite(msg.data, 1, msg.len, stdout);
	dkim_sign_free(&s);
	for (size_t i = 0; i < nk; i++)
		EVP_PKEY_free(pkeys[i]);
	buf_free(&msg);
	return 0;
}

static void probe_arc_done(struct arc_verify *v, void *arg)
{
	(void)v;
	event_base_loopbreak(arg);
}

static int probe_arc_verify(int argc, char **argv)
{
	const char *fwd[4];
	size_t nfwd = 0, chunk = 0;
	struct dns_conf dc = {0};
	int c;
	while ((c = getopt(argc, argv, "f:T:c:")) != -1) {
		if (c == 'f' && nfwd < 4)
			fwd[nfwd++] = optarg;
		else if (c == 'T')
			dc.timeout_ms = (unsigned)probe_num(optarg);
		else if (c == 'c')
			chunk = (size_t)probe_num(optarg);
		else
			return 2;
	}
	dc.forwarders = fwd;
	dc.n_forwarders = nfwd;
	struct event_base *base = event_base_new();
	struct dns *dns = NULL;
	char err[256];
	if (dns_create(base, &dc, &dns, err, sizeof(err)) < 0) {
		fprintf(stderr, "dns: %s\n", err);
		return 1;
	}
	struct dkim_resolver r;
	dkim_resolver_dns(&r, dns);
	struct arc_verify *v = arc_verify_create(0, &r);
	struct buf msg;
	buf_init(&msg, 0);
	probe_read_all(&msg);
	for (size_t off = 0; off < msg.len;) {
		size_t n = chunk == 0 || msg.len - off < chunk ? msg.len - off : chunk;
		arc_verify_feed(v, msg.data + off, n);
		off += n;
	}
	if (arc_verify_finish(v, probe_arc_done, base) == 0)
		event_base_dispatch(base);
	unsigned sets = 0;
	const char *reason = NULL;
	enum arc_result res = arc_verify_result(v, &sets, &reason);
	fputs("{\"arc\":", stdout);
	probe_json_str(arc_result_name(res));
	printf(",\"sets\":%u,\"reason\":", sets);
	probe_json_str(reason);
	fputs("}\n", stdout);
	arc_verify_free(&v);
	dns_free(&dns);
	event_base_free(base);
	buf_free(&msg);
	return 0;
}

static int probe_arc_seal(int argc, char **argv)
{
	EVP_PKEY *pk = NULL;
	struct dkim_sign_key key = {0};
	struct arc_seal_conf ac = {.key = &key, .chain = ARC_RESULT_NONE};
	int c;
	while ((c = getopt(argc, argv, "k:d:s:r:v:n:")) != -1) {
		if (c == 'k') {
			pk = probe_key(optarg);
			if (dkim_pkey_alg(pk, &key.alg) < 0)
				return 2;
		} else if (c == 'd')
			key.domain = optarg;
		else if (c == 's')
			key.selector = optarg;
		else if (c == 'r')
			ac.authres = optarg;
		else if (c == 'v')
			ac.chain = strcmp(optarg, "pass") == 0   ? ARC_RESULT_PASS
			           : strcmp(optarg, "fail") == 0 ? ARC_RESULT_FAIL
			                                         : ARC_RESULT_NONE;
		else if (c == 'n')
			ac.now = (time_t)probe_num(optarg);
		else
			return 2;
	}
	if (pk == NULL || key.domain == NULL || key.selector == NULL || ac.authres == NULL)
		return 2;
	struct dkim_pkeys keys = {&pk, 1};
	ac.sign = dkim_sign_with_pkeys;
	ac.sign_ctx = &keys;
	struct arc_seal *s = arc_seal_create(&ac);
	struct buf msg;
	buf_init(&msg, 0);
	probe_read_all(&msg);
	arc_seal_feed(s, msg.data, msg.len);
	const char *error = NULL;
	if (arc_seal_finish(s, NULL, NULL, &error) != 1) {
		fprintf(stderr, "seal: %s\n", error != NULL ? error : "pending");
		return 1;
	}
	const char *h = arc_seal_header(s, &error);
	fwrite(h, 1, strlen(h), stdout);
	fwrite(msg.data, 1, msg.len, stdout);
	arc_seal_free(&s);
	EVP_PKEY_free(pk);
	buf_free(&msg);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: dkim_probe verify|sign ...\n");
		return 2;
	}
	if (strcmp(argv[1], "verify") == 0)
		return probe_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "sign") == 0)
		return probe_sign(argc - 1, argv + 1);
	if (strcmp(argv[1], "arc-verify") == 0)
		return probe_arc_verify(argc - 1, argv + 1);
	if (strcmp(argv[1], "arc-seal") == 0)
		return probe_arc_seal(argc - 1, argv + 1);
	return 2;
}
