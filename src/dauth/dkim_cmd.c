/* dkim_cmd.c — `hikyaku dkim keygen|check` (issue 10): make a signing key
 * and the DNS record to publish for it; compare a published record with
 * the configured key. Runs as a command line tool (root, to read the keys);
 * hostile input: the DNS answer to `check`. */
#include "dauth/dkim_cmd.h"
#include "dauth/dkim.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/strutil.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void dkim_cmd_usage(void)
{
	fprintf(stderr, "usage: hikyaku dkim keygen --domain D --selector S [--type ed25519|rsa]\n"
	                "                           [--bits 2048] [--out FILE]\n"
	                "       hikyaku dkim check DOMAIN SELECTOR [-c FILE] [-k KEYFILE]\n");
}

/* The TXT record for the key, its text split into strings of at most 255
 * octets (RFC 1035 §3.3.14; RFC 6376 §3.6.2.2 joins them). */
static void dkim_cmd_print_record(const char *domain, const char *selector, EVP_PKEY *pk)
{
	struct buf txt;
	buf_init(&txt, 0);
	buf_printf(&txt, "v=DKIM1; k=%s; p=",
	           EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519 ? "ed25519" : "rsa");
	dkim_pkey_public_b64(pk, &txt);
	printf("%s._domainkey.%s. IN TXT", selector, domain);
	for (size_t i = 0; i < txt.len; i += 255)
		printf(" \"%.*s\"", (int)(txt.len - i < 255 ? txt.len - i : 255), txt.data + i);
	putchar('\n');
	buf_free(&txt);
}

static int dkim_cmd_write_key(const char *path, EVP_PKEY *pk)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		fprintf(stderr, "hikyaku: %s: %s%s\n", path, strerror(errno),
		        errno == EEXIST ? " (not overwritten)" : "");
		return -1;
	}
	FILE *f = fdopen(fd, "w");
	if (f == NULL) {
		close(fd);
		return -1;
	}
	int ok = PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL) == 1;
	if (fflush(f) != 0 || fsync(fd) != 0)
		ok = 0;
	if (fclose(f) != 0)
		ok = 0;
	if (!ok) {
		fprintf(stderr, "hikyaku: %s: cannot write the key\n", path);
		unlink(path);
		return -1;
	}
	return 0;
}

static bool dkim_cmd_name_ok(const char *s)
{
	if (*s == '\0' || strlen(s) > 200)
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static int dkim_cmd_keygen(int argc, char **argv)
{
	const char *domain = NULL, *selector = NULL, *type = "rsa", *out = NULL;
	uint64_t bits = 2048;
	for (int i = 2; i < argc; i += 2) { /* --option value pairs */
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL) {
			dkim_cmd_usage();
			return 2;
		}
		if (strcmp(argv[i], "--domain") == 0)
			domain = v;
		else if (strcmp(argv[i], "--selector") == 0)
			selector = v;
		else if (strcmp(argv[i], "--type") == 0)
			type = v;
		else if (strcmp(argv[i], "--out") == 0)
			out = v;
		else if (strcmp(argv[i], "--bits") == 0) {
			if (str_parse_u64(v, strlen(v), 1024, 8192, &bits) < 0) {
				fprintf(stderr, "hikyaku: --bits: 1024..8192 (2048 recommended)\n");
				return 2;
			}
		} else {
			dkim_cmd_usage();
			return 2;
		}
	}
	if (domain == NULL || selector == NULL || !dkim_cmd_name_ok(domain) ||
	    !dkim_cmd_name_ok(selector) ||
	    (strcmp(type, "rsa") != 0 && strcmp(type, "ed25519") != 0)) {
		dkim_cmd_usage();
		return 2;
	}
	EVP_PKEY *pk = strcmp(type, "rsa") == 0 ? EVP_RSA_gen((unsigned)bits)
	                                        : EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (pk == NULL) {
		fprintf(stderr, "hikyaku: key generation failed\n");
		return 1;
	}
	char def[512];
	if (out == NULL) {
		snprintf(def, sizeof(def), "%s.%s.key", domain, selector);
		out = def;
	}
	int rc = dkim_cmd_write_key(out, pk);
	if (rc == 0) {
		dkim_cmd_print_record(domain, selector, pk);
		fprintf(stderr,
		        "hikyaku: wrote %s (mode 0600); publish the record above, then add to the "
		        "configuration:\n  dkim: { sign: [ { domain: %s, selector: %s, key: %s, "
		        "type: %s } ] }\n",
		        out, domain, selector, out, type);
	}
	EVP_PKEY_free(pk);
	return rc == 0 ? 0 : 1;
}

/* ---- check ---------------------------------------------------------------------- */

struct dkim_cmd_check {
	struct event_base *base;
	struct buf want; /* the configured key's public half, as p= decodes */
	enum dkim_key_type want_type;
	int rc; /* 0 the record matches, 1 it does not, 3 DNS failure */
};

/* Does the record hold the configured key? Decoded keys are compared: the
 * published base64 may be split or spaced differently. */
static void dkim_cmd_record(struct dkim_cmd_check *c, size_t i, const char *txt)
{
	struct dkim_key *key = xmalloc(sizeof(*key));
	const char *error = NULL;
	if (dkim_key_parse(txt, strlen(txt), key, &error) < 0) {
		printf("record %zu: not a DKIM key record: %s\n", i, error);
	} else if (key->revoked) {
		printf("record %zu: the key is revoked (empty p=)\n", i);
	} else if (key->type != c->want_type) {
		printf("record %zu: k=%s, but the configured key is %s\n", i,
		       key->type == DKIM_KEY_ED25519 ? "ed25519" : "rsa",
		       c->want_type == DKIM_KEY_ED25519 ? "ed25519" : "rsa");
	} else if (key->p_len != c->want.len || memcmp(key->p, c->want.data, key->p_len) != 0) {
		printf("record %zu: a different key is published\n", i);
	} else {
		printf("record %zu: matches the configured key%s\n", i,
		       key->testing ? " (t=y: testing mode)" : "");
		c->rc = 0;
	}
	free(key);
}

static void dkim_cmd_answer(const struct dns_raw_result *res, void *arg)
{
	struct dkim_cmd_check *c = arg;
	event_base_loopbreak(c->base);
	if (res->status == DNS_TEMPFAIL) {
		printf("temporary DNS failure: %s\n", res->error != NULL ? res->error : "");
		c->rc = 3;
		return;
	}
	c->rc = 1;
	if (res->status != DNS_OK || res->n == 0) {
		printf("no record published\n");
		return;
	}
	for (size_t i = 0; i < res->n; i++) {
		char txt[DKIM_TXT_MAX];
		int jl = dns_txt_join(res->rdata[i], res->len[i], txt, sizeof(txt));
		if (jl < 0 || (size_t)jl != strlen(txt))
			printf("record %zu: malformed TXT (or a NUL octet in it)\n", i);
		else
			dkim_cmd_record(c, i, txt);
	}
}

static EVP_PKEY *dkim_cmd_read_key(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "hikyaku: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
	fclose(f);
	enum dkim_alg alg;
	if (pk == NULL || dkim_pkey_alg(pk, &alg) < 0) {
		fprintf(stderr, "hikyaku: %s: not an RSA or Ed25519 private key\n", path);
		EVP_PKEY_free(pk);
		return NULL;
	}
	return pk;
}

/* The key file: -k, else the dkim.sign entry for domain and selector. */
static const char *dkim_cmd_key_path(const struct conf *conf, const char *domain,
                                     const char *selector, const char *opt)
{
	if (opt != NULL)
		return opt;
	for (size_t i = 0; i < conf->dkim.n_sign; i++)
		if (strcasecmp(conf->dkim.sign[i].domain, domain) == 0 &&
		    strcmp(conf->dkim.sign[i].selector, selector) == 0)
			return conf->dkim.sign[i].key;
	return NULL;
}

static int dkim_cmd_lookup(const struct conf *conf, const char *name, struct dkim_cmd_check *c)
{
	struct dns_conf dc = {.forwarders = (const char *const *)conf->dns.forwarders,
	                      .n_forwarders = conf->dns.n_forwarders,
	                      .trust_anchor_file = conf->dns.trust_anchor,
	                      .ipv6 = true,
	                      .timeout_ms = (unsigned)conf->dns.timeout};
	struct dns *dns = NULL;
	char err[256];
	c->base = event_base_new();
	if (dns_create(c->base, &dc, &dns, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: dns: %s\n", err);
		event_base_free(c->base);
		return 2;
	}
	c->rc = 3;
	dns_resolve_raw(dns, name, DNS_RR_TXT, dkim_cmd_answer, c);
	event_base_dispatch(c->base);
	dns_free(&dns);
	event_base_free(c->base);
	return c->rc;
}

static int dkim_cmd_check(int argc, char **argv)
{
	const char *path = NULL, *keyopt = NULL, *words[2];
	int nw = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc)
			keyopt = argv[++i];
		else if (nw < 2 && argv[i][0] != '-')
			words[nw++] = argv[i];
		else
			nw = 3;
	}
	if (nw != 2 || !dkim_cmd_name_ok(words[0]) || !dkim_cmd_name_ok(words[1])) {
		dkim_cmd_usage();
		return 2;
	}
	struct conf *conf = NULL;
	char err[1024];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 2;
	}
	const char *kp = dkim_cmd_key_path(conf, words[0], words[1], keyopt);
	if (kp == NULL) {
		fprintf(stderr,
		        "hikyaku: no dkim.sign entry for %s selector %s in %s (or give -k)\n",
		        words[0], words[1], conf->file);
		conf_free(&conf);
		return 2;
	}
	EVP_PKEY *pk = dkim_cmd_read_key(kp);
	if (pk == NULL) {
		conf_free(&conf);
		return 2;
	}
	struct dkim_cmd_check c = {0};
	c.want_type =
	    EVP_PKEY_get_base_id(pk) == EVP_PKEY_ED25519 ? DKIM_KEY_ED25519 : DKIM_KEY_RSA;
	struct buf b64;
	buf_init(&b64, 0);
	buf_init(&c.want, 0);
	dkim_pkey_public_b64(pk, &b64);
	base64_decode((const char *)b64.data, b64.len, &c.want);
	EVP_PKEY_free(pk);
	char name[512];
	snprintf(name, sizeof(name), "%s._domainkey.%s", words[1], words[0]);
	printf("%s: ", name);
	fflush(stdout);
	int rc = dkim_cmd_lookup(conf, name, &c);
	printf("%s\n", rc == 0   ? "ok: the published key is the configured one"
	               : rc == 3 ? "could not check: DNS failure, try again"
	                         : "MISMATCH: publish the record `hikyaku dkim keygen` printed");
	buf_free(&b64);
	buf_free(&c.want);
	conf_free(&conf);
	return rc;
}

int dkim_command(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "keygen") == 0)
		return dkim_cmd_keygen(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "check") == 0)
		return dkim_cmd_check(argc, argv);
	dkim_cmd_usage();
	return 2;
}
