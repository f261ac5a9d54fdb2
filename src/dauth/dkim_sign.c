/* dkim_sign.c — DKIM signing (RFC 6376 §5, RFC 8463): relaxed/relaxed,
 * rsa-sha256 and ed25519-sha256, one signature per configured key (dual
 * signing), the default header list oversigning From, To, Subject and Date
 * (§8.15: an extra, empty instance in h= so none can be added later).
 * Runs in smtpd for outbound mail; the private operation is the caller's
 * sign callback (the keys process). The message is the sender's, not
 * trusted: bounded like the verifier's. Also the in-process key helpers
 * used by the keys process, the CLI and the tests. */
#include "dauth/dkim_int.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/base64.h"

#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>

struct dkim_sign {
	const struct dkim_sign_conf *conf;
	struct dkim_msg msg;
	bool failed;
	const char *error;
	EVP_MD_CTX *bmd;
	struct dkim_bodycanon bc;
	char bh_b64[64];
	struct buf out;          /* the DKIM-Signature fields made so far */
	struct buf unsigned_sig; /* the one being signed: its text up to "b=" */
	size_t next;             /* key being signed */
	bool in_finish;
	bool done;
	dkim_sign_cb *cb;
	void *cb_arg;
};

static const char *const dkim_oversign[] = {"From", "To", "Subject", "Date"};
static const char *const dkim_sign_if_present[] = {
    "Cc", "Reply-To", "Message-ID", "MIME-Version", "Content-Type", "In-Reply-To", "References"};

static void dkim_sign_emit(void *arg, const void *p, size_t n)
{
	EVP_DigestUpdate(arg, p, n);
}

struct dkim_sign *dkim_sign_create(const struct dkim_sign_conf *conf)
{
	struct dkim_sign *s = xcalloc(1, sizeof(*s));
	s->conf = conf;
	dkim_msg_init(&s->msg, DKIM_HEADER_MAX);
	s->bmd = EVP_MD_CTX_new();
	EVP_DigestInit_ex(s->bmd, EVP_sha256(), NULL);
	dkim_bodycanon_init(&s->bc, DKIM_CANON_RELAXED, false, 0, dkim_sign_emit, s->bmd);
	buf_init(&s->out, 0);
	buf_init(&s->unsigned_sig, 0);
	return s;
}

int dkim_sign_feed(struct dkim_sign *s, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (s->failed)
		return -1;
	if (!s->msg.in_body) {
		size_t h = dkim_msg_feed(&s->msg, p, len);
		p += h;
		len -= h;
		if (s->msg.overflow || s->msg.too_many_fields) {
			s->failed = true;
			s->error = "header section too large to sign";
			return -1;
		}
	}
	if (len > 0)
		dkim_bodycanon_feed(&s->bc, p, len);
	return 0;
}

static size_t dkim_count_fields(const struct dkim_msg *m, const char *name)
{
	size_t n = 0;
	for (size_t i = 0; i < m->n_fields; i++)
		n += dkim_field_is(m, &m->fields[i], name);
	return n;
}

/* The h= list: configured names as given (each instance present), or the
 * default list; oversigned names once more than present. */
static void dkim_sign_hnames(struct dkim_sign *s, char **names, size_t *n_r)
{
	size_t n = 0;
	const struct dkim_sign_conf *c = s->conf;
	if (c->headers != NULL) {
		for (size_t i = 0; i < c->n_headers && n < DKIM_HNAMES_MAX; i++)
			names[n++] = (char *)c->headers[i];
		*n_r = n;
		return;
	}
	for (size_t i = 0; i < 4; i++) {
		size_t k = dkim_count_fields(&s->msg, dkim_oversign[i]) + 1;
		for (; k > 0 && n < DKIM_HNAMES_MAX; k--)
			names[n++] = (char *)dkim_oversign[i];
	}
	for (size_t i = 0; i < sizeof(dkim_sign_if_present) / sizeof(dkim_sign_if_present[0]);
	     i++) {
		size_t k = dkim_count_fields(&s->msg, dkim_sign_if_present[i]);
		for (; k > 0 && n < DKIM_HNAMES_MAX; k--)
			names[n++] = (char *)dkim_sign_if_present[i];
	}
	*n_r = n;
}

/* The field up to "b=", folded at tag boundaries only: the text signed is
 * the text sent, so relaxed canonicalization sees the same on both sides. */
static void dkim_sign_text(struct dkim_sign *s, const struct dkim_sign_key *k, char **names,
                           size_t n)
{
	const struct dkim_sign_conf *c = s->conf;
	struct buf *b = &s->unsigned_sig;
	time_t now = c->now != 0 ? c->now : time(NULL);
	buf_reset(b);
	buf_printf(b, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;\r\n\td=%s; s=%s;",
	           dkim_alg_name(k->alg), k->domain, k->selector);
	if (c->auid != NULL)
		buf_printf(b, " i=%s;", c->auid);
	buf_printf(b, "\r\n\tt=%llu;", (unsigned long long)now);
	if (c->expire_s != 0)
		buf_printf(b, " x=%llu;",
		           (unsigned long long)now + (unsigned long long)c->expire_s);
	buf_append_str(b, "\r\n\th=");
	size_t col = 3;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]) + 1;
		if (i > 0 && col + l > 72) {
			/* FWS in h= is allowed (§3.5) and canonicalizes the same on both sides */
			buf_append_str(b, "\r\n\t ");
			col = 1;
		}
		buf_printf(b, "%s%s", i > 0 ? ":" : "", names[i]);
		col += l;
	}
	buf_printf(b, ";\r\n\tbh=%s;\r\n\tb=", s->bh_b64);
}

static void dkim_sign_next(struct dkim_sign *s);

static void dkim_sign_complete(struct dkim_sign *s)
{
	s->done = true;
	if (!s->in_finish && s->cb != NULL)
		s->cb(s, s->cb_arg);
}

static void dkim_sign_done(void *arg, const unsigned char *sig, size_t len, const char *error)
{
	struct dkim_sign *s = arg;
	if (sig == NULL || len == 0) {
		s->failed = true;
		s->error = error != NULL ? error : "signing failed";
		dkim_sign_complete(s);
		return;
	}
	struct buf b64;
	buf_init(&b64, 0);
	base64_encode(sig, len, &b64);
	buf_append(&s->out, s->unsigned_sig.data, s->unsigned_sig.len);
	for (size_t i = 0; i < b64.len; i += 72) {
		if (i > 0)
			buf_append_str(&s->out, "\r\n\t ");
		buf_append(&s->out, b64.data + i, b64.len - i < 72 ? b64.len - i : 72);
	}
	buf_append_str(&s->out, "\r\n");
	buf_free(&b64);
	s->next++;
	dkim_sign_next(s);
}

/* Sign with key s->next, or complete. The callback may answer at once:
 * then the recursion is one level per key (at most DKIM_SIGS_MAX). */
static void dkim_sign_next(struct dkim_sign *s)
{
	const struct dkim_sign_conf *c = s->conf;
	if (s->next == c->n_keys) {
		dkim_sign_complete(s);
		return;
	}
	const struct dkim_sign_key *k = &c->keys[s->next];
	char *names[DKIM_HNAMES_MAX];
	size_t n;
	dkim_sign_hnames(s, names, &n);
	dkim_sign_text(s, k, names, n);
	struct buf data;
	buf_init(&data, 0);
	dkim_hash_input(&s->msg, DKIM_CANON_RELAXED, names, n, (const char *)s->unsigned_sig.data,
	                s->unsigned_sig.len, &data);
	/* the field ends "b=": nothing to strip; no CRLF is hashed (§3.7) */
	unsigned char h[32];
	SHA256(data.data, data.len, h);
	buf_free(&data);
	c->sign(c->sign_ctx, k, h, sizeof(h), dkim_sign_done, s);
}

int dkim_sign_finish(struct dkim_sign *s, dkim_sign_cb *cb, void *arg, const char **error_r)
{
	const struct dkim_sign_conf *c = s->conf;
	if (s->failed || c->n_keys == 0 || c->n_keys > DKIM_SIGS_MAX || c->sign == NULL) {
		*error_r = s->failed ? s->error : "no signing key";
		return -1;
	}
	dkim_msg_end(&s->msg);
	dkim_bodycanon_finish(&s->bc);
	unsigned char bh[32];
	unsigned bhl = 0;
	EVP_DigestFinal_ex(s->bmd, bh, &bhl);
	struct buf b64;
	buf_init(&b64, sizeof(s->bh_b64) - 1);
	base64_encode(bh, bhl, &b64);
	memcpy(s->bh_b64, b64.data, b64.len + 1);
	buf_free(&b64);
	s->cb = cb;
	s->cb_arg = arg;
	s->in_finish = true;
	dkim_sign_next(s);
	s->in_finish = false;
	if (!s->done)
		return 0;
	if (s->failed) {
		*error_r = s->error;
		return -1;
	}
	return 1;
}

const char *dkim_sign_header(const struct dkim_sign *s, const char **error_r)
{
	if (!s->done || s->failed) {
		*error_r = s->failed ? s->error : "signing not finished";
		return NULL;
	}
	return buf_cstr(&s->out);
}

void dkim_sign_free(struct dkim_sign **sp)
{
	struct dkim_sign *s = *sp;
	if (s == NULL)
		return;
	dkim_msg_clear(&s->msg);
	EVP_MD_CTX_free(s->bmd);
	buf_free(&s->out);
	buf_free(&s->unsigned_sig);
	free(s);
	*sp = NULL;
}

/* ---- in-process keys ------------------------------------------------------------ */

int dkim_pkey_alg(EVP_PKEY *pkey, enum dkim_alg *alg_r)
{
	int id = EVP_PKEY_get_base_id(pkey);
	if (id == EVP_PKEY_ED25519) {
		*alg_r = DKIM_ALG_ED25519_SHA256;
		return 0;
	}
	if (id == EVP_PKEY_RSA && EVP_PKEY_get_bits(pkey) >= DKIM_RSA_MIN_BITS &&
	    EVP_PKEY_get_bits(pkey) <= DKIM_RSA_MAX_BITS) {
		*alg_r = DKIM_ALG_RSA_SHA256;
		return 0;
	}
	return -1;
}

int dkim_pkey_sign(EVP_PKEY *pkey, const unsigned char *hash, size_t hash_len, unsigned char *out,
                   size_t *out_len, const char **error_r)
{
	enum dkim_alg alg;
	int ok = 0;
	size_t len = DKIM_SIG_MAX;
	if (hash_len != 32 || dkim_pkey_alg(pkey, &alg) < 0 ||
	    (size_t)EVP_PKEY_get_size(pkey) > len) {
		*error_r = "not a DKIM key or not a SHA-256 hash";
		return -1;
	}
	if (alg == DKIM_ALG_ED25519_SHA256) {
		/* RFC 8463 §3: PureEdDSA over the 32-octet hash */
		EVP_MD_CTX *ctx = EVP_MD_CTX_new();
		ok = EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1 &&
		     EVP_DigestSign(ctx, out, &len, hash, hash_len) == 1;
		EVP_MD_CTX_free(ctx);
	} else {
		/* RSASSA-PKCS1-v1_5 over a precomputed SHA-256 (RFC 8017 §8.2) */
		EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(pkey, NULL);
		ok = pctx != NULL && EVP_PKEY_sign_init(pctx) == 1 &&
		     EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
		     EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) == 1 &&
		     EVP_PKEY_sign(pctx, out, &len, hash, hash_len) == 1;
		EVP_PKEY_CTX_free(pctx);
	}
	if (!ok) {
		*error_r = "private key operation failed";
		return -1;
	}
	*out_len = len;
	return 0;
}

int dkim_pkey_public_b64(EVP_PKEY *pkey, struct buf *out)
{
	unsigned char raw[32];
	size_t rl = sizeof(raw);
	if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_ED25519) {
		if (EVP_PKEY_get_raw_public_key(pkey, raw, &rl) != 1)
			return -1;
		return base64_encode(raw, rl, out);
	}
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(pkey, &der);
	if (n <= 0)
		return -1;
	int rc = base64_encode(der, (size_t)n, out);
	OPENSSL_free(der);
	return rc;
}

void dkim_sign_with_pkeys(void *ctx, const struct dkim_sign_key *key, const unsigned char *hash,
                          size_t hash_len, dkim_sign_done_fn *done, void *done_arg)
{
	const struct dkim_pkeys *pk = ctx;
	unsigned char sig[DKIM_SIG_MAX];
	size_t len = 0;
	const char *error = "no such key";
	if (key->key_id >= pk->n ||
	    dkim_pkey_sign(pk->keys[key->key_id], hash, hash_len, sig, &len, &error) < 0) {
		done(done_arg, NULL, 0, error);
		return;
	}
	done(done_arg, sig, len, NULL);
}

size_t dkim_sign_keys_for(const struct conf *conf, const char *domain, struct dkim_sign_key *keys,
                          size_t max)
{
	size_t idx[DKIM_SIGS_MAX];
	size_t n = conf_dkim_keys_for(conf, domain, idx, max < DKIM_SIGS_MAX ? max : DKIM_SIGS_MAX);
	for (size_t i = 0; i < n; i++) {
		const struct conf_dkim_key *k = &conf->dkim.sign[idx[i]];
		keys[i] = (struct dkim_sign_key){
		    .domain = k->domain,
		    .selector = k->selector,
		    .alg = k->type == CONF_DKIM_ED25519 ? DKIM_ALG_ED25519_SHA256
		                                        : DKIM_ALG_RSA_SHA256,
		    .key_id = idx[i],
		};
	}
	return n;
}
