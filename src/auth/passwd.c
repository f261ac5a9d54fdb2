/* passwd.c — stored password secrets in Dovecot's passwd-file schemes:
 * verification (PLAIN/LOGIN and `hikyaku user`), hashing (`hikyaku user`),
 * the CRAM-MD5 digest check and the SCRAM-SHA-256 key parse (sasl.c).
 *
 * Runs in smtpd (passwd_verify on a worker thread, the rest on the event
 * loop) and in the `hikyaku user` command. Hostile inputs: the password and
 * the CRAM-MD5 response come from an unauthenticated client; the stored
 * string comes from the root-owned users file and is still parsed with
 * bounds. Nothing here logs; every buffer that held a password or a key
 * derived from one is wiped before it is released.
 *
 * Thread-safety: crypt_rn() with a struct crypt_data on the caller's stack,
 * OpenSSL one-shot functions, no static mutable state. */
#define OPENSSL_SUPPRESS_DEPRECATED /* MD5_CTX state words for {CRAM-MD5}, see below */

#include "auth/passwd.h"
#include "lib/base64.h"
#include "lib/buf.h"

#include "lib/alloc.h"
#include "lib/strutil.h"

#include <crypt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define PASSWD_CRAM_HEX_LEN 64 /* 2 states x 4 words x 4 octets, hex */
#define PASSWD_SCRAM_ITER 4096 /* RFC 7677 §4: at least 4096 */
#define PASSWD_SCRAM_ITER_MAX 10000000u
#define PASSWD_SCRAM_SALT_LEN 16
#define PASSWD_PLAIN_MAX 1024 /* longest password we hash or verify */

static const struct {
	const char *name;
	enum passwd_scheme scheme;
} passwd_schemes[] = {
    {"CRYPT", PASSWD_CRYPT},
    {"BLF-CRYPT", PASSWD_BLF_CRYPT},
    {"SHA512-CRYPT", PASSWD_SHA512_CRYPT},
    {"CRAM-MD5", PASSWD_CRAM_MD5},
    {"SCRAM-SHA-256", PASSWD_SCRAM_SHA_256},
};

static enum passwd_scheme passwd_scheme_lookup(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(passwd_schemes) / sizeof(passwd_schemes[0]); i++)
		if (str_case_eq(name, len, passwd_schemes[i].name))
			return passwd_schemes[i].scheme;
	return PASSWD_UNKNOWN;
}

enum passwd_scheme passwd_scheme_parse(const char *name)
{
	return name != NULL ? passwd_scheme_lookup(name, strlen(name)) : PASSWD_UNKNOWN;
}

const char *passwd_scheme_name(enum passwd_scheme s)
{
	for (size_t i = 0; i < sizeof(passwd_schemes) / sizeof(passwd_schemes[0]); i++)
		if (passwd_schemes[i].scheme == s)
			return passwd_schemes[i].name;
	return "UNKNOWN";
}

/* "{SCHEME}rest": the scheme and, through body_r, where the secret starts. */
static enum passwd_scheme passwd_split(const char *stored, const char **body_r)
{
	const char *end;

	if (stored == NULL || stored[0] != '{' || (end = strchr(stored, '}')) == NULL)
		return PASSWD_UNKNOWN;
	*body_r = end + 1;
	return passwd_scheme_lookup(stored + 1, (size_t)(end - stored - 1));
}

enum passwd_scheme passwd_scheme_of(const char *stored)
{
	const char *body;
	return passwd_split(stored, &body);
}

void passwd_wipe(void *p, size_t n)
{
	if (p != NULL && n > 0)
		OPENSSL_cleanse(p, n);
}

/* ---- base64 into fixed-size fields, on lib/base64 (strict RFC 4648) ---- */

size_t passwd_b64_encode(const unsigned char *in, size_t len, char *out, size_t outmax)
{
	struct buf b;
	if (outmax < (len + 2) / 3 * 4 + 1)
		return 0;
	buf_init(&b, 0);
	base64_encode(in, len, &b);
	memcpy(out, buf_cstr(&b), b.len + 1);
	size_t n = b.len;
	buf_free(&b);
	return n;
}

int passwd_b64_decode(const char *in, size_t len, unsigned char *out, size_t outmax, size_t *len_r)
{
	struct buf b;
	int ret = -1;
	buf_init(&b, 0);
	if (base64_decode(in, len, &b) == 0 && b.len <= outmax) {
		if (b.len > 0)
			memcpy(out, b.data, b.len);
		*len_r = b.len;
		ret = 0;
	}
	if (b.data != NULL)
		passwd_wipe(b.data, b.cap); /* SCRAM proofs and keys */
	buf_free(&b);
	return ret;
}

static int passwd_hex_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
	if (len != outlen * 2)
		return -1;
	for (size_t i = 0; i < outlen; i++) {
		int hi = 0, lo = 0;
		for (int k = 0; k < 2; k++) {
			char c = in[2 * i + (size_t)k];
			int v = c >= '0' && c <= '9'   ? c - '0'
			        : c >= 'a' && c <= 'f' ? c - 'a' + 10
			        : c >= 'A' && c <= 'F' ? c - 'A' + 10
			                               : -1;
			if (v < 0)
				return -1;
			if (k == 0)
				hi = v;
			else
				lo = v;
		}
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* ---- crypt(3) ---- */

/* libxcrypt's struct crypt_data is 32 KiB: on the worker's stack, as the
 * header requires, so concurrent verifications share nothing. */
static int passwd_crypt_verify(const char *setting, const char *password)
{
	struct crypt_data data;
	size_t slen = strlen(setting);
	int ok = 0;

	if (slen == 0 || setting[0] == '*')
		return 0;
	memset(&data, 0, sizeof(data));
	const char *out = crypt_rn(password, setting, &data, (int)sizeof(data));
	if (out != NULL && out[0] != '*' && strlen(out) == slen)
		ok = CRYPTO_memcmp(out, setting, slen) == 0;
	passwd_wipe(&data, sizeof(data));
	return ok;
}

/* ---- CRAM-MD5 (RFC 2195) as Dovecot stores it ----
 * HMAC-MD5(K, m) = MD5((K ^ opad) || MD5((K ^ ipad) || m)) (RFC 2104 §2).
 * Both inner calls start with one 64-octet key block, so Dovecot stores the
 * MD5 chaining state after that block for each, and the server finishes the
 * HMAC from those states without the password. The state words are only
 * reachable through the deprecated MD5_CTX API (OpenSSL 3 keeps the struct
 * public); hence OPENSSL_SUPPRESS_DEPRECATED above. */

struct passwd_cram_ctx {
	uint32_t inner[4];
	uint32_t outer[4];
};

static void passwd_cram_context(const char *password, size_t len, struct passwd_cram_ctx *r)
{
	unsigned char key[64] = {0}, block[64];
	MD5_CTX md;

	if (len > sizeof(key)) /* RFC 2104 §2: a long key is hashed first */
		MD5((const unsigned char *)password, len, key);
	else
		memcpy(key, password, len);
	for (int pass = 0; pass < 2; pass++) {
		unsigned char pad = pass == 0 ? 0x36 : 0x5c; /* ipad, opad */
		uint32_t *st = pass == 0 ? r->inner : r->outer;
		for (size_t i = 0; i < sizeof(block); i++)
			block[i] = key[i] ^ pad;
		MD5_Init(&md);
		MD5_Update(&md, block, sizeof(block));
		st[0] = md.A;
		st[1] = md.B;
		st[2] = md.C;
		st[3] = md.D;
	}
	passwd_wipe(key, sizeof(key));
	passwd_wipe(block, sizeof(block));
	passwd_wipe(&md, sizeof(md));
}

/* 32 octets: outer A,B,C,D then inner A,B,C,D, each word little-endian.
 * Outer first is Dovecot's order (hmac_md5_get_cram_context()); checked
 * against a `doveadm pw` hash in test_auth.c. */
static void passwd_cram_serialize(const struct passwd_cram_ctx *c, unsigned char out[32])
{
	for (int i = 0; i < 8; i++) {
		uint32_t w = i < 4 ? c->outer[i] : c->inner[i - 4];
		for (int k = 0; k < 4; k++)
			out[i * 4 + k] = (unsigned char)(w >> (8 * k));
	}
}

static int passwd_cram_parse(const char *stored, struct passwd_cram_ctx *r)
{
	unsigned char raw[32];
	const char *body;

	if (passwd_split(stored, &body) != PASSWD_CRAM_MD5 ||
	    passwd_hex_decode(body, strlen(body), raw, sizeof(raw)) < 0)
		return -1;
	for (int i = 0; i < 8; i++) {
		uint32_t w = (uint32_t)raw[i * 4] | (uint32_t)raw[i * 4 + 1] << 8 |
		             (uint32_t)raw[i * 4 + 2] << 16 | (uint32_t)raw[i * 4 + 3] << 24;
		if (i < 4)
			r->outer[i] = w;
		else
			r->inner[i - 4] = w;
	}
	passwd_wipe(raw, sizeof(raw));
	return 0;
}

/* Resume MD5 after one 64-octet block: the bit count is 512. */
static void passwd_md5_resume(MD5_CTX *md, const uint32_t st[4])
{
	MD5_Init(md);
	md->A = st[0];
	md->B = st[1];
	md->C = st[2];
	md->D = st[3];
	md->Nl = 512;
	md->Nh = 0;
}

int passwd_cram_md5_check(const char *stored, const unsigned char *challenge, size_t clen,
                          const char *response_hex, size_t rlen)
{
	struct passwd_cram_ctx ctx;
	unsigned char inner[MD5_DIGEST_LENGTH], digest[MD5_DIGEST_LENGTH];
	unsigned char want[MD5_DIGEST_LENGTH];
	MD5_CTX md;
	int ok;

	if (response_hex == NULL || passwd_hex_decode(response_hex, rlen, want, sizeof(want)) < 0 ||
	    passwd_cram_parse(stored, &ctx) < 0)
		return 0;
	passwd_md5_resume(&md, ctx.inner);
	MD5_Update(&md, challenge, clen);
	MD5_Final(inner, &md);
	passwd_md5_resume(&md, ctx.outer);
	MD5_Update(&md, inner, sizeof(inner));
	MD5_Final(digest, &md);
	ok = CRYPTO_memcmp(digest, want, sizeof(digest)) == 0;
	passwd_wipe(&ctx, sizeof(ctx));
	passwd_wipe(&md, sizeof(md));
	return ok;
}

static int passwd_cram_verify(const char *stored, const char *password, size_t len)
{
	struct passwd_cram_ctx want, got;
	int ok;

	if (passwd_cram_parse(stored, &want) < 0)
		return 0;
	passwd_cram_context(password, len, &got);
	ok = CRYPTO_memcmp(&want, &got, sizeof(want)) == 0;
	passwd_wipe(&want, sizeof(want));
	passwd_wipe(&got, sizeof(got));
	return ok;
}

/* ---- SCRAM-SHA-256 (RFC 5802 §3, RFC 7677) ---- */

int passwd_scram_parse(const char *stored, struct passwd_scram *r)
{
	const char *body, *f[4];
	size_t flen[4], n;
	uint64_t iter;

	memset(r, 0, sizeof(*r));
	if (passwd_split(stored, &body) != PASSWD_SCRAM_SHA_256)
		return -1;
	for (int i = 0; i < 4; i++) {
		const char *comma = strchr(body, ',');
		if ((comma == NULL) != (i == 3))
			return -1;
		f[i] = body;
		flen[i] = comma != NULL ? (size_t)(comma - body) : strlen(body);
		body = comma != NULL ? comma + 1 : body;
	}
	if (str_parse_u64(f[0], flen[0], 1, PASSWD_SCRAM_ITER_MAX, &iter) < 0 ||
	    passwd_b64_decode(f[1], flen[1], r->salt, sizeof(r->salt), &r->salt_len) < 0 ||
	    r->salt_len == 0 ||
	    passwd_b64_decode(f[2], flen[2], r->stored_key, sizeof(r->stored_key), &n) < 0 ||
	    n != sizeof(r->stored_key) ||
	    passwd_b64_decode(f[3], flen[3], r->server_key, sizeof(r->server_key), &n) < 0 ||
	    n != sizeof(r->server_key)) {
		passwd_wipe(r, sizeof(*r));
		return -1;
	}
	r->iterations = (unsigned)iter;
	return 0;
}

/* SaltedPassword = Hi(password, salt, i) (PBKDF2-HMAC-SHA256), then
 * ClientKey, StoredKey and ServerKey (RFC 5802 §3). */
static int passwd_scram_keys(const char *password, size_t len, struct passwd_scram *k)
{
	unsigned char salted[32], client_key[32];
	unsigned int mdlen = 0;
	int rc = -1;

	if (PKCS5_PBKDF2_HMAC(password, (int)len, k->salt, (int)k->salt_len, (int)k->iterations,
	                      EVP_sha256(), sizeof(salted), salted) != 1)
		goto out;
	if (HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Client Key", 10,
	         client_key, &mdlen) == NULL ||
	    HMAC(EVP_sha256(), salted, sizeof(salted), (const unsigned char *)"Server Key", 10,
	         k->server_key, &mdlen) == NULL)
		goto out;
	SHA256(client_key, sizeof(client_key), k->stored_key);
	rc = 0;
out:
	passwd_wipe(salted, sizeof(salted));
	passwd_wipe(client_key, sizeof(client_key));
	return rc;
}

static int passwd_scram_verify(const char *stored, const char *password, size_t len)
{
	struct passwd_scram want, got;
	int ok = 0;

	if (passwd_scram_parse(stored, &want) < 0)
		return 0;
	got = want;
	if (passwd_scram_keys(password, len, &got) == 0)
		ok = CRYPTO_memcmp(want.stored_key, got.stored_key, sizeof(want.stored_key)) == 0;
	passwd_wipe(&want, sizeof(want));
	passwd_wipe(&got, sizeof(got));
	return ok;
}

/* ---- verify and hash ---- */

int passwd_verify(const char *stored, const char *password, size_t len)
{
	const char *body;
	char *plain;
	int ok = 0;

	if (password == NULL || len > PASSWD_PLAIN_MAX || memchr(password, '\0', len) != NULL)
		return 0;
	plain = xstrndup(password, len); /* crypt_rn wants a C string */
	switch (passwd_split(stored, &body)) {
	case PASSWD_CRYPT:
	case PASSWD_BLF_CRYPT:
	case PASSWD_SHA512_CRYPT:
		ok = passwd_crypt_verify(body, plain);
		break;
	case PASSWD_CRAM_MD5:
		ok = passwd_cram_verify(stored, plain, len);
		break;
	case PASSWD_SCRAM_SHA_256:
		ok = passwd_scram_verify(stored, plain, len);
		break;
	case PASSWD_UNKNOWN:
		break;
	}
	passwd_wipe(plain, len);
	free(plain);
	return ok;
}

static char *passwd_hash_crypt(const char *prefix, unsigned long cost, const char *scheme,
                               const char *password, const char **error_r)
{
	struct crypt_data data;
	char *setting, *r = NULL;

	setting = crypt_gensalt_ra(prefix, cost, NULL, 0);
	if (setting == NULL) {
		*error_r = "crypt_gensalt failed (no random source or unsupported scheme)";
		return NULL;
	}
	memset(&data, 0, sizeof(data));
	const char *out = crypt_rn(password, setting, &data, (int)sizeof(data));
	if (out == NULL || out[0] == '*') {
		*error_r = "crypt failed";
	} else {
		size_t n = strlen(scheme) + strlen(out) + 3;
		r = xmalloc(n);
		snprintf(r, n, "{%s}%s", scheme, out);
	}
	passwd_wipe(&data, sizeof(data));
	free(setting);
	return r;
}

static char *passwd_hash_cram(const char *password, size_t len)
{
	struct passwd_cram_ctx ctx;
	unsigned char raw[32];
	static const char hex[] = "0123456789abcdef";
	const char *prefix = "{CRAM-MD5}";
	size_t plen = strlen(prefix);
	char *r = xmalloc(plen + PASSWD_CRAM_HEX_LEN + 1);

	passwd_cram_context(password, len, &ctx);
	passwd_cram_serialize(&ctx, raw);
	memcpy(r, prefix, plen);
	for (size_t i = 0; i < sizeof(raw); i++) {
		r[plen + 2 * i] = hex[raw[i] >> 4];
		r[plen + 2 * i + 1] = hex[raw[i] & 15];
	}
	r[plen + PASSWD_CRAM_HEX_LEN] = '\0';
	passwd_wipe(&ctx, sizeof(ctx));
	passwd_wipe(raw, sizeof(raw));
	return r;
}

/* "{SCRAM-SHA-256}4096,salt,StoredKey,ServerKey" as `doveadm pw -s
 * SCRAM-SHA-256` writes it. */
static char *passwd_hash_scram(const char *password, size_t len, unsigned iterations,
                               const char **error_r)
{
	struct passwd_scram k = {.iterations = iterations, .salt_len = PASSWD_SCRAM_SALT_LEN};
	char salt[32], stored[48], server[48];
	char *r = NULL;

	if (RAND_bytes(k.salt, PASSWD_SCRAM_SALT_LEN) != 1) {
		*error_r = "no random source";
		return NULL;
	}
	if (passwd_scram_keys(password, len, &k) < 0) {
		*error_r = "PBKDF2 failed";
	} else {
		passwd_b64_encode(k.salt, k.salt_len, salt, sizeof(salt));
		passwd_b64_encode(k.stored_key, sizeof(k.stored_key), stored, sizeof(stored));
		passwd_b64_encode(k.server_key, sizeof(k.server_key), server, sizeof(server));
		size_t n = sizeof("{SCRAM-SHA-256}4096,,,") + strlen(salt) + strlen(stored) +
		           strlen(server) + 8;
		r = xmalloc(n);
		snprintf(r, n, "{SCRAM-SHA-256}%u,%s,%s,%s", k.iterations, salt, stored, server);
	}
	passwd_wipe(&k, sizeof(k));
	return r;
}

char *passwd_hash(enum passwd_scheme s, const char *password, size_t len, const char **error_r)
{
	const char *dummy;
	char *plain, *r = NULL;

	if (error_r == NULL)
		error_r = &dummy;
	if (password == NULL || len == 0) {
		*error_r = "empty password";
		return NULL;
	}
	if (len > PASSWD_PLAIN_MAX || memchr(password, '\0', len) != NULL) {
		*error_r = "password too long or contains a NUL octet";
		return NULL;
	}
	plain = xstrndup(password, len);
	switch (s) {
	case PASSWD_CRYPT:
		r = passwd_hash_crypt("$y$", 0, "CRYPT", plain, error_r);
		break;
	case PASSWD_BLF_CRYPT:
		r = passwd_hash_crypt("$2b$", 10, "BLF-CRYPT", plain, error_r);
		break;
	case PASSWD_SHA512_CRYPT:
		r = passwd_hash_crypt("$6$", 0, "SHA512-CRYPT", plain, error_r);
		break;
	case PASSWD_CRAM_MD5:
		r = passwd_hash_cram(plain, len);
		break;
	case PASSWD_SCRAM_SHA_256:
		r = passwd_hash_scram(plain, len, PASSWD_SCRAM_ITER, error_r);
		break;
	case PASSWD_UNKNOWN:
		*error_r = "unknown password scheme";
		break;
	}
	passwd_wipe(plain, len);
	free(plain);
	return r;
}

/* ---- dummies: the same work for a user who has no usable secret ---- */

size_t passwd_crypt_params_len(const char *hash)
{
	const char *p, *q;

	if (hash == NULL || hash[0] != '$' || (p = strchr(hash + 1, '$')) == NULL)
		return 0; /* traditional DES or unknown: no cost field */
	p++;              /* past "$id$" */
	if (strncmp(hash, "$1$", 3) == 0 || strncmp(hash, "$5$", 3) == 0 ||
	    strncmp(hash, "$6$", 3) == 0) {
		/* MD5, SHA-256 and SHA-512 crypt: an optional "rounds=N$" */
		if (strncmp(p, "rounds=", 7) == 0 && (q = strchr(p, '$')) != NULL)
			return (size_t)(q + 1 - hash);
		return (size_t)(p - hash);
	}
	/* bcrypt "$2b$10$", yescrypt "$y$j9T$", scrypt "$7$...", gost-yescrypt:
	 * the field after the id is the cost */
	q = strchr(p, '$');
	return q != NULL ? (size_t)(q + 1 - hash) : (size_t)(p - hash);
}

char *passwd_cost_class(const char *stored)
{
	const char *body;
	struct passwd_scram k;
	char buf[64];
	enum passwd_scheme sc = passwd_split(stored, &body);

	switch (sc) {
	case PASSWD_CRYPT:
	case PASSWD_BLF_CRYPT:
	case PASSWD_SHA512_CRYPT: {
		size_t n = passwd_crypt_params_len(body);
		if (body[0] == '\0' || body[0] == '*' || n > sizeof(buf) - 8)
			return NULL;
		snprintf(buf, sizeof(buf), "crypt %.*s", (int)n, body);
		return xstrdup(buf);
	}
	case PASSWD_CRAM_MD5:
		return xstrdup("cram-md5");
	case PASSWD_SCRAM_SHA_256:
		if (passwd_scram_parse(stored, &k) < 0)
			return NULL;
		snprintf(buf, sizeof(buf), "scram %u", k.iterations);
		passwd_wipe(&k, sizeof(k));
		return xstrdup(buf);
	case PASSWD_UNKNOWN:
		break;
	}
	return NULL;
}

/* crypt(3) of password under the setting (method, cost and salt) of hash. */
static char *passwd_crypt_like(const char *stored, const char *body, const char *password)
{
	struct crypt_data data;
	char *r = NULL;

	memset(&data, 0, sizeof(data));
	const char *out = crypt_rn(password, body, &data, (int)sizeof(data));
	if (out != NULL && out[0] != '*') {
		size_t plen = (size_t)(body - stored), n = plen + strlen(out) + 1;
		r = xmalloc(n);
		snprintf(r, n, "%.*s%s", (int)plen, stored, out);
	}
	passwd_wipe(&data, sizeof(data));
	return r;
}

char *passwd_dummy_like(const char *stored)
{
	unsigned char raw[24];
	char pw[40];
	const char *body, *err;
	struct passwd_scram k;
	char *r = NULL;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return NULL;
	passwd_b64_encode(raw, sizeof(raw), pw, sizeof(pw));
	switch (passwd_split(stored, &body)) {
	case PASSWD_CRYPT:
	case PASSWD_BLF_CRYPT:
	case PASSWD_SHA512_CRYPT:
		r = passwd_crypt_like(stored, body, pw);
		break;
	case PASSWD_CRAM_MD5:
		r = passwd_hash_cram(pw, strlen(pw));
		break;
	case PASSWD_SCRAM_SHA_256:
		if (passwd_scram_parse(stored, &k) == 0)
			r = passwd_hash_scram(pw, strlen(pw), k.iterations, &err);
		passwd_wipe(&k, sizeof(k));
		break;
	case PASSWD_UNKNOWN:
		break;
	}
	passwd_wipe(raw, sizeof(raw));
	passwd_wipe(pw, sizeof(pw));
	return r;
}
