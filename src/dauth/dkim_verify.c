/* dkim_verify.c — DKIM verification (RFC 6376 §6.1, RFC 8463, RFC 8301):
 * fed the message as it streams in, it keeps the header section, hashes the
 * body once per signature while it arrives, then looks the keys up
 * asynchronously and gives one result per signature. Runs in smtpd (on its
 * event loop: nothing here blocks). Hostile: the message and the DNS
 * answers; at most sigs_max signatures are evaluated. */
/* d2i_RSA_PUBKEY and EVP_PKEY_assign_RSA: see dkim_key_pkey. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "dauth/dkim_int.h"
#include "dns/dns.h"
#include "lib/alloc.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

struct dkim_vsig {
	struct dkim_verify *v;
	struct dkim_sig sig;
	size_t field; /* index into v->msg.fields */
	bool parsed;
	bool pending; /* key lookup under way */
	void *query;
	EVP_MD_CTX *bmd; /* body hash */
	struct dkim_bodycanon bc;
	unsigned char bh[EVP_MAX_MD_SIZE];
	unsigned bh_len;
	struct dkim_verify_sig res;
};

struct dkim_verify {
	struct dkim_verify_conf conf;
	struct dkim_resolver resolver;
	struct dkim_msg msg;
	struct dkim_vsig sigs[DKIM_SIGS_MAX];
	size_t n;
	bool started; /* signatures set up (end of header section) */
	size_t pending;
	bool in_finish;
	bool finishing; /* finish was called: lookups under way or done */
	bool done;
	dkim_verify_cb *cb;
	void *cb_arg;
};

struct dkim_verify *dkim_verify_create(const struct dkim_verify_conf *conf,
                                       const struct dkim_resolver *resolver)
{
	struct dkim_verify *v = xcalloc(1, sizeof(*v));
	if (conf != NULL)
		v->conf = *conf;
	if (v->conf.sigs_max == 0 || v->conf.sigs_max > DKIM_SIGS_MAX)
		v->conf.sigs_max = DKIM_SIGS_MAX;
	if (v->conf.header_max == 0)
		v->conf.header_max = DKIM_HEADER_MAX;
	v->resolver = *resolver;
	dkim_msg_init(&v->msg, v->conf.header_max);
	return v;
}

static void dkim_vsig_set(struct dkim_vsig *vs, enum dkim_result r, const char *reason)
{
	vs->res.result = r;
	vs->res.reason = reason;
}

static void dkim_body_emit(void *arg, const void *p, size_t n)
{
	EVP_DigestUpdate(arg, p, n);
}

static void dkim_vsig_setup(struct dkim_verify *v, struct dkim_vsig *vs)
{
	const struct dkim_field *f = &v->msg.fields[vs->field];
	size_t vlen;
	const char *val = dkim_field_value(&v->msg, f, &vlen);
	const char *error = "";
	vs->res.reason = "";
	if (dkim_sig_parse(val, vlen, &vs->sig, &error) < 0) {
		dkim_vsig_set(vs, DKIM_RESULT_NEUTRAL, error);
		/* what did parse still helps the report */
		memcpy(vs->res.domain, vs->sig.domain, sizeof(vs->res.domain));
		memcpy(vs->res.selector, vs->sig.selector, sizeof(vs->res.selector));
		return;
	}
	vs->parsed = true;
	memcpy(vs->res.domain, vs->sig.domain, sizeof(vs->res.domain));
	memcpy(vs->res.selector, vs->sig.selector, sizeof(vs->res.selector));
	memcpy(vs->res.auid, vs->sig.auid, sizeof(vs->res.auid));
	memcpy(vs->res.b_prefix, vs->sig.b_prefix, sizeof(vs->res.b_prefix));
	snprintf(vs->res.algorithm, sizeof(vs->res.algorithm), "%s", dkim_alg_name(vs->sig.alg));
	vs->bmd = EVP_MD_CTX_new();
	EVP_DigestInit_ex(vs->bmd, vs->sig.alg == DKIM_ALG_RSA_SHA1 ? EVP_sha1() : EVP_sha256(),
	                  NULL);
	dkim_bodycanon_init(&vs->bc, vs->sig.bcanon, vs->sig.has_l, vs->sig.l, dkim_body_emit,
	                    vs->bmd);
}

/* End of the header section: find and parse the signatures, top first. */
static void dkim_verify_start(struct dkim_verify *v)
{
	v->started = true;
	if (v->msg.overflow || v->msg.too_many_fields) {
		v->n = 1;
		v->sigs[0].v = v;
		dkim_vsig_set(&v->sigs[0], DKIM_RESULT_PERMERROR, "header section too large");
		return;
	}
	for (size_t i = 0; i < v->msg.n_fields && v->n < v->conf.sigs_max; i++) {
		if (!dkim_field_is(&v->msg, &v->msg.fields[i], "DKIM-Signature"))
			continue;
		struct dkim_vsig *vs = &v->sigs[v->n++];
		vs->v = v;
		vs->field = i;
		dkim_vsig_setup(v, vs);
	}
}

static void dkim_verify_body(struct dkim_verify *v, const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < v->n; i++)
		if (v->sigs[i].parsed)
			dkim_bodycanon_feed(&v->sigs[i].bc, p, n);
}

void dkim_verify_feed(struct dkim_verify *v, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (v->done || v->finishing)
		return;
	if (!v->msg.in_body) {
		size_t h = dkim_msg_feed(&v->msg, p, len);
		p += h;
		len -= h;
		if (!v->msg.in_body)
			return;
		dkim_verify_start(v);
	}
	dkim_verify_body(v, p, len);
}

/* ---- evaluation, once the key is known -------------------------------------- */

EVP_PKEY *dkim_key_pkey(const struct dkim_key *key, unsigned *bits_r)
{
	if (key->type == DKIM_KEY_ED25519) {
		if (key->p_len != 32)
			return NULL;
		*bits_r = 256;
		return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, key->p, key->p_len);
	}
	/* The RSA-specific decoders, not d2i_PUBKEY: OpenSSL 3's generic
	 * decoder costs about 0.5 ms a key, five times the verification. */
	const unsigned char *p = key->p;
	RSA *rsa = d2i_RSA_PUBKEY(NULL, &p, (long)key->p_len);
	if (rsa == NULL) { /* some publish the bare RSAPublicKey (RFC 3447 A.1.1) */
		p = key->p;
		rsa = d2i_RSAPublicKey(NULL, &p, (long)key->p_len);
	}
	if (rsa == NULL)
		return NULL;
	EVP_PKEY *pk = EVP_PKEY_new();
	if (EVP_PKEY_assign_RSA(pk, rsa) != 1) {
		RSA_free(rsa);
		EVP_PKEY_free(pk);
		return NULL;
	}
	*bits_r = (unsigned)EVP_PKEY_get_bits(pk);
	return pk;
}

/* §6.1.2 key checks; 0 if the key may be used, else the result is set. */
static int dkim_key_check(struct dkim_vsig *vs, const struct dkim_key *key)
{
	const struct dkim_sig *s = &vs->sig;
	vs->res.testing = key->testing;
	if (key->revoked) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "key revoked");
		return -1;
	}
	bool ed = s->alg == DKIM_ALG_ED25519_SHA256;
	if ((ed && key->type != DKIM_KEY_ED25519) || (!ed && key->type != DKIM_KEY_RSA)) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "key type does not match a=");
		return -1;
	}
	if (s->alg == DKIM_ALG_RSA_SHA1 ? !key->sha1_ok : !key->sha256_ok) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "key h= excludes the hash");
		return -1;
	}
	const char *at = strrchr(s->auid, '@');
	if (key->strict && (at == NULL || strcasecmp(at + 1, s->domain) != 0)) {
		dkim_vsig_set(vs, DKIM_RESULT_POLICY, "key t=s and i= in a subdomain of d=");
		return -1;
	}
	return 0;
}

bool dkim_crypto_verify(enum dkim_alg alg, EVP_PKEY *pk, const unsigned char *sig, size_t sig_len,
                        const struct buf *data)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;
	if (alg == DKIM_ALG_ED25519_SHA256) {
		/* RFC 8463 §3: Ed25519 over the SHA-256 hash of the header data */
		unsigned char h[32];
		SHA256(data->data, data->len, h);
		ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig, sig_len, h, sizeof(h)) == 1;
	} else {
		const EVP_MD *md = alg == DKIM_ALG_RSA_SHA1 ? EVP_sha1() : EVP_sha256();
		ok = EVP_DigestVerifyInit(ctx, NULL, md, NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig, sig_len, data->data, data->len) == 1;
	}
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

static void dkim_vsig_evaluate(struct dkim_vsig *vs, const struct dkim_key *key)
{
	struct dkim_verify *v = vs->v;
	if (dkim_key_check(vs, key) < 0)
		return;
	EVP_PKEY *pk = dkim_key_pkey(key, &vs->res.key_bits);
	if (pk == NULL) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "key unusable");
		return;
	}
	if (vs->sig.alg != DKIM_ALG_ED25519_SHA256 &&
	    (vs->res.key_bits < DKIM_RSA_MIN_BITS || vs->res.key_bits > DKIM_RSA_MAX_BITS)) {
		EVP_PKEY_free(pk);
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "RSA key size out of bounds");
		return;
	}
	if (vs->bh_len != vs->sig.bh_len || memcmp(vs->bh, vs->sig.bh, vs->bh_len) != 0) {
		EVP_PKEY_free(pk);
		vs->res.body_hash_mismatch = true;
		dkim_vsig_set(vs, DKIM_RESULT_FAIL, "body hash did not verify");
		return;
	}
	const struct dkim_field *f = &v->msg.fields[vs->field];
	struct buf sigf, data;
	buf_init(&sigf, 0);
	buf_init(&data, 0);
	dkim_strip_b((const char *)v->msg.hdr.data + f->off, f->len, &sigf);
	dkim_hash_input(&v->msg, vs->sig.hcanon, vs->sig.hnames, vs->sig.n_hnames,
	                (const char *)sigf.data, sigf.len, &data);
	bool ok = dkim_crypto_verify(vs->sig.alg, pk, vs->sig.b, vs->sig.b_len, &data);
	buf_free(&sigf);
	buf_free(&data);
	EVP_PKEY_free(pk);
	if (!ok)
		dkim_vsig_set(vs, DKIM_RESULT_FAIL, "signature did not verify");
	else if (vs->sig.alg == DKIM_ALG_RSA_SHA1)
		dkim_vsig_set(vs, DKIM_RESULT_POLICY, "rsa-sha1 is not accepted (RFC 8301)");
	else
		dkim_vsig_set(vs, DKIM_RESULT_PASS, "");
}

static void dkim_verify_done(struct dkim_verify *v)
{
	v->done = true;
	if (!v->in_finish && v->cb != NULL)
		v->cb(v, v->cb_arg);
}

static void dkim_key_answer(void *arg, enum dkim_dns_status st, const char *const *txts, size_t n)
{
	struct dkim_vsig *vs = arg;
	struct dkim_verify *v = vs->v;
	vs->pending = false;
	vs->query = NULL;
	if (st == DKIM_DNS_TEMPFAIL) {
		dkim_vsig_set(vs, DKIM_RESULT_TEMPERROR, "key lookup failed");
	} else if (st == DKIM_DNS_NOTFOUND || n == 0) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "no key for signature");
	} else {
		struct dkim_key *key = xmalloc(sizeof(*key));
		const char *error = "key record invalid";
		size_t i;
		for (i = 0; i < n; i++)
			if (dkim_key_parse(txts[i], strlen(txts[i]), key, &error) == 0)
				break;
		if (i == n)
			dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, error);
		else
			dkim_vsig_evaluate(vs, key);
		free(key);
	}
	if (--v->pending == 0)
		dkim_verify_done(v);
}

static bool dkim_dns_label_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

/* Checks that need no key; true if a lookup is needed. */
static bool dkim_vsig_prepare(struct dkim_verify *v, struct dkim_vsig *vs, time_t now)
{
	if (!vs->parsed)
		return false;
	dkim_bodycanon_finish(&vs->bc);
	EVP_DigestFinal_ex(vs->bmd, vs->bh, &vs->bh_len);
	(void)v;
	if (vs->sig.has_x && (uint64_t)now > vs->sig.x) {
		dkim_vsig_set(vs, DKIM_RESULT_POLICY, "signature expired (x=)");
		return false;
	}
	if (!dkim_dns_label_ok(vs->sig.selector) || !dkim_dns_label_ok(vs->sig.domain) ||
	    strlen(vs->sig.selector) + strlen(vs->sig.domain) + 12 > 253) {
		dkim_vsig_set(vs, DKIM_RESULT_PERMERROR, "d= or s= not a usable DNS name");
		return false;
	}
	return true;
}

int dkim_verify_finish(struct dkim_verify *v, dkim_verify_cb *cb, void *arg)
{
	if (v->done)
		return 1;
	if (v->finishing)
		return 0; /* called again while the lookups run: the first cb stands */
	v->finishing = true;
	if (!v->msg.in_body) {
		dkim_msg_end(&v->msg);
		dkim_verify_start(v);
	}
	time_t now = v->conf.now != 0 ? v->conf.now : time(NULL);
	bool need[DKIM_SIGS_MAX] = {false};
	v->pending = 1; /* held by this call until every lookup is started */
	for (size_t i = 0; i < v->n; i++)
		if ((need[i] = dkim_vsig_prepare(v, &v->sigs[i], now)))
			v->pending++;
	v->cb = cb;
	v->cb_arg = arg;
	v->in_finish = true;
	for (size_t i = 0; i < v->n; i++) {
		if (!need[i])
			continue;
		struct dkim_vsig *vs = &v->sigs[i];
		char name[300];
		snprintf(name, sizeof(name), "%s._domainkey.%s", vs->sig.selector, vs->sig.domain);
		vs->pending = true;
		void *q = v->resolver.lookup(v->resolver.ctx, name, dkim_key_answer, vs);
		if (vs->pending)
			vs->query = q;
	}
	v->in_finish = false;
	if (--v->pending == 0) {
		v->done = true;
		return 1;
	}
	return 0;
}

void dkim_verify_cancel(struct dkim_verify *v)
{
	for (size_t i = 0; i < v->n; i++) {
		struct dkim_vsig *vs = &v->sigs[i];
		if (vs->pending && vs->query != NULL && v->resolver.cancel != NULL)
			v->resolver.cancel(v->resolver.ctx, vs->query);
		if (vs->pending)
			dkim_vsig_set(vs, DKIM_RESULT_TEMPERROR, "cancelled");
		vs->pending = false;
		vs->query = NULL;
	}
	v->cb = NULL;
	v->pending = 0;
}

struct dkim_msg *dkim_verify_msg(struct dkim_verify *v)
{
	return &v->msg;
}

size_t dkim_verify_count(const struct dkim_verify *v)
{
	return v->n;
}

const struct dkim_verify_sig *dkim_verify_result(const struct dkim_verify *v, size_t i)
{
	return i < v->n ? &v->sigs[i].res : NULL;
}

void dkim_verify_free(struct dkim_verify **vp)
{
	struct dkim_verify *v = *vp;
	if (v == NULL)
		return;
	dkim_verify_cancel(v);
	for (size_t i = 0; i < v->n; i++) {
		dkim_sig_clear(&v->sigs[i].sig);
		EVP_MD_CTX_free(v->sigs[i].bmd);
	}
	dkim_msg_clear(&v->msg);
	free(v);
	*vp = NULL;
}

/* A value as RFC 8601 §2.2 pvalue: a quoted-string of printable ASCII
 * without '"' and '\\' (anything else: the property is left out). */
static bool dkim_ar_value_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < 0x21 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

static void dkim_ar_prop(struct buf *out, const char *name, const char *value)
{
	if (value[0] != '\0' && dkim_ar_value_ok(value))
		buf_printf(out, " %s=\"%s\"", name, value);
}

int dkim_verify_ar(const struct dkim_verify *v, struct buf *out)
{
	if (v->n == 0)
		return buf_append_str(out, "dkim=none");
	for (size_t i = 0; i < v->n; i++) {
		const struct dkim_verify_sig *r = &v->sigs[i].res;
		if (i > 0)
			buf_append_str(out, ";\r\n\t");
		buf_printf(out, "dkim=%s", dkim_result_name(r->result));
		if (r->result != DKIM_RESULT_PASS && r->reason != NULL && r->reason[0] != '\0') {
			/* a comment (RFC 5322 §3.2.2) of our own static text, parentheses dropped
			 */
			buf_append_str(out, " (");
			for (const char *c = r->reason; *c != '\0'; c++)
				if (*c != '(' && *c != ')' && *c != '\\')
					buf_append_byte(out, (unsigned char)*c);
			buf_append_str(out, ")");
		}
		if (r->testing)
			buf_append_str(out, " (key in testing mode)");
		dkim_ar_prop(out, "header.d", r->domain);
		dkim_ar_prop(out, "header.i", r->auid);
		dkim_ar_prop(out, "header.s", r->selector);
		dkim_ar_prop(out, "header.a", r->algorithm);
		dkim_ar_prop(out, "header.b", r->b_prefix);
	}
	return 0;
}

/* ---- the default resolver: src/dns ------------------------------------------ */

struct dkim_dnsq {
	dkim_txt_cb *cb;
	void *arg;
	struct dns_query *q;
};

static void dkim_dns_answer(const struct dns_raw_result *res, void *arg)
{
	struct dkim_dnsq *dq = arg;
	enum dkim_dns_status st = DKIM_DNS_OK;
	char *txts[DNS_RAW_MAX] = {NULL};
	size_t n = 0;
	if (res->status == DNS_NXDOMAIN)
		st = DKIM_DNS_NOTFOUND;
	else if (res->status != DNS_OK)
		st = DKIM_DNS_TEMPFAIL;
	for (size_t i = 0; st == DKIM_DNS_OK && i < res->n; i++) {
		char *t = xmalloc(DKIM_TXT_MAX);
		int jl = dns_txt_join(res->rdata[i], res->len[i], t, DKIM_TXT_MAX);
		/* a record holding a NUL octet is no key record (nor a C string) */
		if (jl >= 0 && (size_t)jl == strlen(t))
			txts[n++] = t;
		else
			free(t);
	}
	if (st == DKIM_DNS_OK && n == 0)
		st = DKIM_DNS_NOTFOUND;
	dq->cb(dq->arg, st, (const char *const *)txts, n);
	for (size_t i = 0; i < n; i++)
		free(txts[i]);
	free(dq);
}

static void *dkim_dns_lookup(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	struct dkim_dnsq *dq = xmalloc(sizeof(*dq));
	dq->cb = cb;
	dq->arg = arg;
	dq->q = dns_resolve_raw(ctx, name, DNS_RR_TXT, dkim_dns_answer, dq);
	return dq;
}

static void dkim_dns_cancel(void *ctx, void *handle)
{
	struct dkim_dnsq *dq = handle;
	(void)ctx;
	if (dq->q != NULL)
		dns_cancel(dq->q);
	free(dq);
}

void dkim_resolver_dns(struct dkim_resolver *r, struct dns *dns)
{
	r->lookup = dkim_dns_lookup;
	r->cancel = dkim_dns_cancel;
	r->ctx = dns;
}
