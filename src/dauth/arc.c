/* arc.c — ARC (RFC 8617) verification and sealing on the DKIM pieces:
 * header collection (dkim_msg.c), canonicalization (dkim_canon.c), tag
 * lists and key records (dkim_tags.c), key lookups through the injectable
 * resolver, signatures through the sign callback (the keys process).
 * Runs in smtpd. Hostile: every ARC field of the message, the DNS answers;
 * at most ARC_SETS_MAX sets, one lookup per seal plus one. */
#include "dauth/arc.h"
#include "dauth/dkim_int.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/strutil.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const char *arc_result_name(enum arc_result r)
{
	return r == ARC_RESULT_PASS ? "pass" : r == ARC_RESULT_FAIL ? "fail" : "none";
}

/* ---- the ARC sets of a header section ------------------------------------------ */

enum arc_cv { ARC_CV_NONE, ARC_CV_PASS, ARC_CV_FAIL };

struct arc_sets {
	int aar[ARC_SETS_MAX + 1], ams[ARC_SETS_MAX + 1], as[ARC_SETS_MAX + 1]; /* field index */
	unsigned n;        /* highest instance seen */
	const char *error; /* structural error, NULL if none */
};

/* "i=N;" at the start of an ARC-Authentication-Results value (§4.1.1). */
static unsigned arc_aar_instance(const char *p, size_t len)
{
	size_t i = 0;
	uint64_t v = 0;
	while (i < len && strchr(" \t\r\n", p[i]) != NULL)
		i++;
	if (i >= len || p[i++] != 'i')
		return 0;
	while (i < len && strchr(" \t\r\n", p[i]) != NULL)
		i++;
	if (i >= len || p[i++] != '=')
		return 0;
	while (i < len && strchr(" \t\r\n", p[i]) != NULL)
		i++;
	size_t d = i;
	while (i < len && p[i] >= '0' && p[i] <= '9')
		i++;
	if (i == d || i - d > 2 || str_parse_u64(p + d, i - d, 1, ARC_SETS_MAX, &v) < 0)
		return 0;
	while (i < len && strchr(" \t\r\n", p[i]) != NULL)
		i++;
	return i < len && p[i] == ';' ? (unsigned)v : 0;
}

static unsigned arc_tag_instance(const char *p, size_t len)
{
	struct dkim_tags tags;
	const char *error = NULL;
	uint64_t v = 0;
	if (dkim_tags_parse(p, len, &tags, &error) < 0)
		return 0;
	const struct dkim_tag *t = dkim_tags_get(&tags, "i");
	if (t == NULL || str_parse_u64(t->value, t->value_len, 1, ARC_SETS_MAX, &v) < 0)
		return 0;
	return (unsigned)v;
}

static void arc_sets_scan(const struct dkim_msg *m, struct arc_sets *s)
{
	memset(s, 0, sizeof(*s));
	for (size_t k = 0; k <= ARC_SETS_MAX; k++)
		s->aar[k] = s->ams[k] = s->as[k] = -1;
	for (size_t k = 0; k < m->n_fields; k++) {
		const struct dkim_field *f = &m->fields[k];
		int *slot;
		size_t vl;
		const char *val = dkim_field_value(m, f, &vl);
		unsigned i;
		if (dkim_field_is(m, f, "ARC-Authentication-Results")) {
			i = arc_aar_instance(val, vl);
			slot = s->aar;
		} else if (dkim_field_is(m, f, "ARC-Message-Signature")) {
			i = arc_tag_instance(val, vl);
			slot = s->ams;
		} else if (dkim_field_is(m, f, "ARC-Seal")) {
			i = arc_tag_instance(val, vl);
			slot = s->as;
		} else {
			continue;
		}
		if (i == 0) {
			s->error = "ARC field without a valid instance";
			continue;
		}
		if (slot[i] >= 0)
			s->error = "ARC field instance repeated";
		slot[i] = (int)k;
		if (i > s->n)
			s->n = i;
	}
	for (unsigned i = 1; i <= s->n && s->error == NULL; i++)
		if (s->aar[i] < 0 || s->ams[i] < 0 || s->as[i] < 0)
			s->error = "ARC set missing or incomplete";
}

/* ARC-Seal tags (§4.1.3): i, a, b, cv, d, s (t optional). */
struct arc_as {
	enum arc_cv cv;
	enum dkim_alg alg;
	char d[256], s[256];
	unsigned char b[DKIM_SIG_MAX];
	size_t b_len;
};

static int arc_tag_copy(const struct dkim_tags *tags, const char *name, char *out, size_t outlen)
{
	const struct dkim_tag *t = dkim_tags_get(tags, name);
	if (t == NULL || t->value_len == 0 || t->value_len >= outlen)
		return -1;
	memcpy(out, t->value, t->value_len);
	out[t->value_len] = '\0';
	return 0;
}

static int arc_as_parse(const char *p, size_t len, struct arc_as *as)
{
	struct dkim_tags tags;
	const char *error = NULL;
	char tmp[32];
	memset(as, 0, sizeof(*as));
	if (dkim_tags_parse(p, len, &tags, &error) < 0 || dkim_tags_get(&tags, "h") != NULL ||
	    arc_tag_copy(&tags, "d", as->d, sizeof(as->d)) < 0 ||
	    arc_tag_copy(&tags, "s", as->s, sizeof(as->s)) < 0 ||
	    arc_tag_copy(&tags, "cv", tmp, sizeof(tmp)) < 0)
		return -1;
	if (strcasecmp(tmp, "none") == 0)
		as->cv = ARC_CV_NONE;
	else if (strcasecmp(tmp, "pass") == 0)
		as->cv = ARC_CV_PASS;
	else if (strcasecmp(tmp, "fail") == 0)
		as->cv = ARC_CV_FAIL;
	else
		return -1;
	if (arc_tag_copy(&tags, "a", tmp, sizeof(tmp)) < 0)
		return -1;
	if (strcasecmp(tmp, "rsa-sha256") == 0)
		as->alg = DKIM_ALG_RSA_SHA256;
	else if (strcasecmp(tmp, "ed25519-sha256") == 0)
		as->alg = DKIM_ALG_ED25519_SHA256;
	else
		return -1;
	const struct dkim_tag *b = dkim_tags_get(&tags, "b");
	if (b == NULL)
		return -1;
	struct buf clean, dec;
	buf_init(&clean, 4 * DKIM_SIG_MAX);
	buf_init(&dec, DKIM_SIG_MAX);
	int rc = 0;
	for (size_t i = 0; i < b->value_len && rc == 0; i++)
		if (strchr(" \t\r\n", b->value[i]) == NULL)
			rc = buf_append_byte(&clean, (unsigned char)b->value[i]);
	if (rc == 0 && clean.len > 0 &&
	    base64_decode((const char *)clean.data, clean.len, &dec) == 0) {
		memcpy(as->b, dec.data, dec.len);
		as->b_len = dec.len;
	}
	buf_free(&clean);
	buf_free(&dec);
	return as->b_len > 0 ? 0 : -1;
}

/* §5.1.1 / §5.2: the seal of instance i covers AAR, AMS, AS of 1..i in
 * order, relaxed; when verifying (strip), the last AS is the seal itself:
 * its b= value removed and no CRLF. Sealing takes 1..i whole. */
static void arc_seal_input(const struct dkim_msg *m, const struct arc_sets *s, unsigned first,
                           unsigned i, bool strip, struct buf *out)
{
	for (unsigned j = first; j <= i; j++) {
		const int idx[3] = {s->aar[j], s->ams[j], s->as[j]};
		for (int k = 0; k < 3; k++) {
			const struct dkim_field *f = &m->fields[idx[k]];
			const char *text = (const char *)m->hdr.data + f->off;
			if (!strip || j < i || k < 2) {
				dkim_canon_header(DKIM_CANON_RELAXED, text, f->len, out);
				continue;
			}
			struct buf stripped;
			buf_init(&stripped, 0);
			dkim_strip_b(text, f->len, &stripped);
			dkim_canon_header(DKIM_CANON_RELAXED, (const char *)stripped.data,
			                  stripped.len, out);
			out->len -= 2;
			buf_free(&stripped);
		}
	}
}

/* ---- verify ---------------------------------------------------------------------------- */

struct arc_lookup {
	struct arc_verify *v;
	bool pending;
	void *query;
	enum dkim_dns_status status;
	bool have_key;
	struct dkim_key key;
};

struct arc_verify {
	time_t now;
	struct dkim_resolver resolver;
	struct dkim_msg own;  /* the header section, unless shared */
	struct dkim_msg *msg; /* &own, or the DKIM verifier's (fed first) */
	unsigned eoh_state;   /* shared: where the header section ends */
	bool in_body;
	struct arc_sets sets;
	struct dkim_sig ams; /* AMS(N) */
	EVP_MD_CTX *bmd;
	struct dkim_bodycanon bc;
	struct arc_as as[ARC_SETS_MAX + 1];
	struct arc_lookup lk[ARC_SETS_MAX + 1]; /* [0]: AMS(N)'s key, [i]: AS(i)'s */
	bool decided;                           /* result known before any key */
	enum arc_result result;
	const char *reason;
	size_t pending;
	bool in_finish, finishing, done;
	arc_verify_cb *cb;
	void *cb_arg;
};

struct arc_verify *arc_verify_create(time_t now, const struct dkim_resolver *resolver)
{
	struct arc_verify *v = xcalloc(1, sizeof(*v));
	v->now = now;
	v->resolver = *resolver;
	dkim_msg_init(&v->own, DKIM_HEADER_MAX);
	v->msg = &v->own;
	return v;
}

struct arc_verify *arc_verify_create_shared(time_t now, const struct dkim_resolver *resolver,
                                            struct dkim_verify *dkim)
{
	struct arc_verify *v = arc_verify_create(now, resolver);
	v->msg = dkim_verify_msg(dkim);
	return v;
}

static void arc_decide(struct arc_verify *v, enum arc_result r, const char *reason)
{
	v->decided = true;
	v->result = r;
	v->reason = reason;
}

static void arc_body_emit(void *arg, const void *p, size_t n)
{
	EVP_DigestUpdate(arg, p, n);
}

/* End of the header section: structure (§5.2 steps 1-3), then the body
 * hash of the latest AMS. */
static void arc_verify_start(struct arc_verify *v)
{
	if (v->msg->overflow || v->msg->too_many_fields) {
		arc_decide(v, ARC_RESULT_FAIL, "header section too large");
		return;
	}
	struct arc_sets *s = &v->sets;
	arc_sets_scan(v->msg, s);
	if (s->n == 0 && s->error == NULL) {
		arc_decide(v, ARC_RESULT_NONE, "no ARC sets");
		return;
	}
	if (s->error != NULL) {
		arc_decide(v, ARC_RESULT_FAIL, s->error);
		return;
	}
	for (unsigned i = 1; i <= s->n; i++) {
		size_t vl;
		const char *val = dkim_field_value(v->msg, &v->msg->fields[s->as[i]], &vl);
		if (arc_as_parse(val, vl, &v->as[i]) < 0) {
			arc_decide(v, ARC_RESULT_FAIL, "ARC-Seal does not parse");
			return;
		}
		if (v->as[i].cv == ARC_CV_FAIL ||
		    (i == 1 ? v->as[i].cv != ARC_CV_NONE : v->as[i].cv != ARC_CV_PASS)) {
			arc_decide(v, ARC_RESULT_FAIL, "ARC-Seal cv= breaks the chain");
			return;
		}
	}
	size_t vl;
	unsigned inst = 0;
	const char *error = NULL;
	const char *val = dkim_field_value(v->msg, &v->msg->fields[s->ams[s->n]], &vl);
	if (dkim_sig_parse_ams(val, vl, &v->ams, &inst, &error) < 0 || inst != s->n ||
	    v->ams.alg == DKIM_ALG_RSA_SHA1) {
		arc_decide(v, ARC_RESULT_FAIL, "latest ARC-Message-Signature does not parse");
		return;
	}
	v->bmd = EVP_MD_CTX_new();
	EVP_DigestInit_ex(v->bmd, EVP_sha256(), NULL);
	dkim_bodycanon_init(&v->bc, v->ams.bcanon, v->ams.has_l, v->ams.l, arc_body_emit, v->bmd);
}

void arc_verify_feed(struct arc_verify *v, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (v->done || v->finishing)
		return;
	if (!v->in_body) {
		size_t h;
		if (v->msg == &v->own) {
			h = dkim_msg_feed(&v->own, p, len);
			v->in_body = v->own.in_body;
		} else {
			/* the DKIM verifier has kept and split these octets */
			h = dkim_eoh_scan(&v->eoh_state, &v->in_body, p, len);
		}
		p += h;
		len -= h;
		if (!v->in_body)
			return;
		if (!v->msg->in_body)
			arc_decide(v, ARC_RESULT_FAIL, "header section not shared"); /* misuse */
		else
			arc_verify_start(v);
	}
	if (!v->decided && len > 0)
		dkim_bodycanon_feed(&v->bc, p, len);
}

/* A usable public key for alg from lookup lk, or NULL with the reason. */
static EVP_PKEY *arc_key(const struct arc_lookup *lk, enum dkim_alg alg, const char **reason_r)
{
	unsigned bits = 0;
	if (lk->status == DKIM_DNS_TEMPFAIL) {
		*reason_r = "key lookup failed (temporary)";
		return NULL;
	}
	if (!lk->have_key || lk->key.revoked) {
		*reason_r = "no key, or key revoked";
		return NULL;
	}
	if ((alg == DKIM_ALG_ED25519_SHA256) != (lk->key.type == DKIM_KEY_ED25519) ||
	    !lk->key.sha256_ok) {
		*reason_r = "key does not match a=";
		return NULL;
	}
	EVP_PKEY *pk = dkim_key_pkey(&lk->key, &bits);
	if (pk != NULL && alg == DKIM_ALG_RSA_SHA256 &&
	    (bits < DKIM_RSA_MIN_BITS || bits > DKIM_RSA_MAX_BITS)) {
		EVP_PKEY_free(pk);
		pk = NULL;
	}
	if (pk == NULL)
		*reason_r = "key unusable";
	return pk;
}

static bool arc_check(const struct arc_lookup *lk, enum dkim_alg alg, const unsigned char *sig,
                      size_t sig_len, const struct buf *data, const char **reason_r,
                      const char *fail_reason)
{
	EVP_PKEY *pk = arc_key(lk, alg, reason_r);
	if (pk == NULL)
		return false;
	bool ok = dkim_crypto_verify(alg, pk, sig, sig_len, data);
	EVP_PKEY_free(pk);
	if (!ok)
		*reason_r = fail_reason;
	return ok;
}

/* §5.2 steps 4-6, once every key is known. */
static void arc_evaluate(struct arc_verify *v)
{
	const struct arc_sets *s = &v->sets;
	const char *reason = NULL;
	struct buf data, stripped;
	buf_init(&data, 0);
	buf_init(&stripped, 0);
	const struct dkim_field *f = &v->msg->fields[s->ams[s->n]];
	dkim_strip_b((const char *)v->msg->hdr.data + f->off, f->len, &stripped);
	dkim_hash_input(v->msg, v->ams.hcanon, v->ams.hnames, v->ams.n_hnames,
	                (const char *)stripped.data, stripped.len, &data);
	bool ok = arc_check(&v->lk[0], v->ams.alg, v->ams.b, v->ams.b_len, &data, &reason,
	                    "latest ARC-Message-Signature did not verify");
	for (unsigned i = s->n; ok && i >= 1; i--) {
		buf_reset(&data);
		arc_seal_input(v->msg, s, 1, i, true, &data);
		ok = arc_check(&v->lk[i], v->as[i].alg, v->as[i].b, v->as[i].b_len, &data, &reason,
		               "an ARC-Seal did not verify");
	}
	buf_free(&data);
	buf_free(&stripped);
	v->result = ok ? ARC_RESULT_PASS : ARC_RESULT_FAIL;
	v->reason = ok ? "" : reason;
}

static void arc_verify_done(struct arc_verify *v)
{
	v->done = true;
	if (!v->in_finish && v->cb != NULL)
		v->cb(v, v->cb_arg);
}

static void arc_key_answer(void *arg, enum dkim_dns_status st, const char *const *txts, size_t n)
{
	struct arc_lookup *lk = arg;
	struct arc_verify *v = lk->v;
	const char *error = NULL;
	lk->pending = false;
	lk->query = NULL;
	lk->status = st;
	for (size_t i = 0; st == DKIM_DNS_OK && i < n && !lk->have_key; i++)
		lk->have_key = dkim_key_parse(txts[i], strlen(txts[i]), &lk->key, &error) == 0;
	if (--v->pending == 0) {
		arc_evaluate(v);
		arc_verify_done(v);
	}
}

static void arc_lookup_start(struct arc_verify *v, struct arc_lookup *lk, const char *sel,
                             const char *dom)
{
	char name[600];
	lk->v = v;
	lk->pending = true;
	snprintf(name, sizeof(name), "%s._domainkey.%s", sel, dom);
	void *q = v->resolver.lookup(v->resolver.ctx, name, arc_key_answer, lk);
	if (lk->pending)
		lk->query = q;
}

int arc_verify_finish(struct arc_verify *v, arc_verify_cb *cb, void *arg)
{
	if (v->done)
		return 1;
	if (v->finishing)
		return 0; /* called again while the lookups run: the first cb stands */
	v->finishing = true;
	if (!v->in_body) {
		/* all header: dkim_msg_end is idempotent, the owner may have
		 * called it already */
		dkim_msg_end(v->msg);
		v->in_body = true;
		arc_verify_start(v);
	}
	if (!v->decided) {
		unsigned char bh[EVP_MAX_MD_SIZE];
		unsigned bhl = 0;
		dkim_bodycanon_finish(&v->bc);
		EVP_DigestFinal_ex(v->bmd, bh, &bhl);
		if (bhl != v->ams.bh_len || memcmp(bh, v->ams.bh, bhl) != 0)
			arc_decide(v, ARC_RESULT_FAIL,
			           "latest ARC-Message-Signature body hash mismatch");
	}
	if (v->decided) {
		v->done = true;
		return 1;
	}
	v->cb = cb;
	v->cb_arg = arg;
	v->in_finish = true;
	v->pending = 1 + v->sets.n + 1; /* +1 held by this call */
	arc_lookup_start(v, &v->lk[0], v->ams.selector, v->ams.domain);
	for (unsigned i = 1; i <= v->sets.n; i++)
		arc_lookup_start(v, &v->lk[i], v->as[i].s, v->as[i].d);
	v->in_finish = false;
	if (--v->pending == 0) {
		arc_evaluate(v);
		v->done = true;
		return 1;
	}
	return 0;
}

enum arc_result arc_verify_result(const struct arc_verify *v, unsigned *sets_r,
                                  const char **reason_r)
{
	if (sets_r != NULL)
		*sets_r = v->sets.n;
	if (reason_r != NULL)
		*reason_r = v->reason != NULL ? v->reason : "";
	return v->result;
}

static void arc_lookups_cancel(struct arc_verify *v)
{
	for (size_t i = 0; i <= ARC_SETS_MAX; i++) {
		if (v->lk[i].pending && v->lk[i].query != NULL && v->resolver.cancel != NULL)
			v->resolver.cancel(v->resolver.ctx, v->lk[i].query);
		v->lk[i].pending = false;
		v->lk[i].query = NULL;
	}
}

void arc_verify_cancel(struct arc_verify *v, const char *reason)
{
	if (v->done)
		return;
	arc_lookups_cancel(v);
	v->pending = 0;
	v->cb = NULL;
	v->done = v->finishing = true;
	v->result = ARC_RESULT_FAIL;
	v->reason = reason;
}

void arc_verify_free(struct arc_verify **vp)
{
	struct arc_verify *v = *vp;
	if (v == NULL)
		return;
	arc_lookups_cancel(v);
	dkim_sig_clear(&v->ams);
	EVP_MD_CTX_free(v->bmd);
	dkim_msg_clear(&v->own);
	free(v);
	*vp = NULL;
}

/* ---- seal -------------------------------------------------------------------------------- */

struct arc_seal {
	const struct arc_seal_conf *conf;
	struct dkim_msg msg;
	EVP_MD_CTX *bmd;
	struct dkim_bodycanon bc;
	struct arc_sets sets;
	unsigned inst;
	bool chain_failed;
	struct buf aar, ams, as, out;
	int step; /* 0 signing the AMS, 1 the AS */
	bool failed, in_finish, done;
	const char *error;
	arc_seal_cb *cb;
	void *cb_arg;
};

struct arc_seal *arc_seal_create(const struct arc_seal_conf *conf)
{
	struct arc_seal *s = xcalloc(1, sizeof(*s));
	s->conf = conf;
	dkim_msg_init(&s->msg, DKIM_HEADER_MAX);
	s->bmd = EVP_MD_CTX_new();
	EVP_DigestInit_ex(s->bmd, EVP_sha256(), NULL);
	dkim_bodycanon_init(&s->bc, DKIM_CANON_RELAXED, false, 0, arc_body_emit, s->bmd);
	buf_init(&s->aar, 0);
	buf_init(&s->ams, 0);
	buf_init(&s->as, 0);
	buf_init(&s->out, 0);
	return s;
}

int arc_seal_feed(struct arc_seal *s, const void *data, size_t len)
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
			s->error = "header section too large to seal";
			return -1;
		}
	}
	if (len > 0)
		dkim_bodycanon_feed(&s->bc, p, len);
	return 0;
}

static void arc_seal_complete(struct arc_seal *s)
{
	s->done = true;
	if (!s->in_finish && s->cb != NULL)
		s->cb(s, s->cb_arg);
}

static void arc_b64_fold(struct buf *out, const unsigned char *sig, size_t len)
{
	struct buf b64;
	buf_init(&b64, 0);
	base64_encode(sig, len, &b64);
	for (size_t i = 0; i < b64.len; i += 72) {
		if (i > 0)
			buf_append_str(out, "\r\n\t ");
		buf_append(out, b64.data + i, b64.len - i < 72 ? b64.len - i : 72);
	}
	buf_free(&b64);
}

static void arc_seal_step(struct arc_seal *s);

static void arc_seal_signed(void *arg, const unsigned char *sig, size_t len, const char *error)
{
	struct arc_seal *s = arg;
	if (sig == NULL || len == 0) {
		s->failed = true;
		s->error = error != NULL ? error : "signing failed";
		arc_seal_complete(s);
		return;
	}
	arc_b64_fold(s->step == 0 ? &s->ams : &s->as, sig, len);
	s->step++;
	arc_seal_step(s);
}

/* The AMS's h=: the DKIM default list (oversigned From, To, Subject, Date)
 * and the DKIM signatures and Authentication-Results present. */
static size_t arc_hnames(const struct dkim_msg *m, char **names)
{
	static const char *const over[] = {"From", "To", "Subject", "Date"};
	static const char *const present[] = {
	    "Cc",          "Reply-To",   "Message-ID",     "MIME-Version",          "Content-Type",
	    "In-Reply-To", "References", "DKIM-Signature", "Authentication-Results"};
	size_t n = 0;
	for (size_t i = 0; i < 4; i++) {
		size_t k = 1;
		for (size_t j = 0; j < m->n_fields; j++)
			k += dkim_field_is(m, &m->fields[j], over[i]);
		for (; k > 0 && n < DKIM_HNAMES_MAX; k--)
			names[n++] = (char *)over[i];
	}
	for (size_t i = 0; i < sizeof(present) / sizeof(present[0]); i++)
		for (size_t j = 0; j < m->n_fields && n < DKIM_HNAMES_MAX; j++)
			if (dkim_field_is(m, &m->fields[j], present[i]))
				names[n++] = (char *)present[i];
	return n;
}

static void arc_seal_ams_text(struct arc_seal *s, char **names, size_t n, const char *bh,
                              time_t now)
{
	const struct dkim_sign_key *k = s->conf->key;
	buf_printf(&s->ams,
	           "ARC-Message-Signature: i=%u; a=%s; c=relaxed/relaxed;\r\n\td=%s; s=%s; t=%llu;"
	           "\r\n\th=",
	           s->inst, dkim_alg_name(k->alg), k->domain, k->selector, (unsigned long long)now);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && i % 6 == 0)
			buf_append_str(&s->ams, "\r\n\t ");
		buf_printf(&s->ams, "%s%s", i > 0 ? ":" : "", names[i]);
	}
	buf_printf(&s->ams, ";\r\n\tbh=%s;\r\n\tb=", bh);
}

static void arc_seal_step(struct arc_seal *s)
{
	const struct arc_seal_conf *c = s->conf;
	struct buf data;
	unsigned char h[32];
	buf_init(&data, 0);
	if (s->step == 0) {
		char *names[DKIM_HNAMES_MAX];
		size_t n = arc_hnames(&s->msg, names);
		dkim_hash_input(&s->msg, DKIM_CANON_RELAXED, names, n, (const char *)s->ams.data,
		                s->ams.len, &data);
	} else if (s->step == 1) {
		/* earlier sets (all of them, or none when the chain failed), then ours */
		if (!s->chain_failed && s->inst > 1)
			arc_seal_input(&s->msg, &s->sets, 1, s->inst - 1, false, &data);
		dkim_canon_header(DKIM_CANON_RELAXED, (const char *)s->aar.data, s->aar.len, &data);
		dkim_canon_header(DKIM_CANON_RELAXED, (const char *)s->ams.data, s->ams.len, &data);
		dkim_canon_header(DKIM_CANON_RELAXED, (const char *)s->as.data, s->as.len, &data);
		data.len -= 2;
	} else {
		buf_free(&data);
		buf_printf(&s->out, "%s\r\n%s\r\n%s\r\n", buf_cstr(&s->as), buf_cstr(&s->ams),
		           buf_cstr(&s->aar));
		arc_seal_complete(s);
		return;
	}
	SHA256(data.data, data.len, h);
	buf_free(&data);
	c->sign(c->sign_ctx, c->key, h, sizeof(h), arc_seal_signed, s);
}

int arc_seal_finish(struct arc_seal *s, arc_seal_cb *cb, void *arg, const char **error_r)
{
	const struct arc_seal_conf *c = s->conf;
	if (s->failed || c->sign == NULL || c->key == NULL || c->authres == NULL) {
		*error_r = s->failed ? s->error : "no key or no results to seal";
		return -1;
	}
	if (c->key->alg != DKIM_ALG_RSA_SHA256) {
		/* RFC 8617 §4.1.3 names rsa-sha256 only; receivers (dkimpy) know no other */
		*error_r = "ARC seals need an RSA key (rsa-sha256)";
		return -1;
	}
	dkim_msg_end(&s->msg);
	arc_sets_scan(&s->msg, &s->sets);
	s->inst = s->sets.n + 1;
	if (s->inst > ARC_SETS_MAX) {
		*error_r = "ARC chain already has 50 sets";
		return -1;
	}
	s->chain_failed = s->sets.error != NULL || (s->sets.n > 0 && c->chain != ARC_RESULT_PASS);
	const char *cv = s->chain_failed ? "fail" : s->sets.n == 0 ? "none" : "pass";
	time_t now = c->now != 0 ? c->now : time(NULL);
	unsigned char bh[32];
	unsigned bhl = 0;
	dkim_bodycanon_finish(&s->bc);
	EVP_DigestFinal_ex(s->bmd, bh, &bhl);
	struct buf bh64;
	buf_init(&bh64, 0);
	base64_encode(bh, bhl, &bh64);
	buf_printf(&s->aar, "ARC-Authentication-Results: i=%u; %s", s->inst, c->authres);
	char *names[DKIM_HNAMES_MAX];
	size_t n = arc_hnames(&s->msg, names);
	arc_seal_ams_text(s, names, n, buf_cstr(&bh64), now);
	buf_free(&bh64);
	buf_printf(&s->as, "ARC-Seal: i=%u; a=%s; cv=%s;\r\n\td=%s; s=%s; t=%llu;\r\n\tb=", s->inst,
	           dkim_alg_name(c->key->alg), cv, c->key->domain, c->key->selector,
	           (unsigned long long)now);
	s->cb = cb;
	s->cb_arg = arg;
	s->in_finish = true;
	arc_seal_step(s);
	s->in_finish = false;
	if (!s->done)
		return 0;
	if (s->failed) {
		*error_r = s->error;
		return -1;
	}
	return 1;
}

const char *arc_seal_header(const struct arc_seal *s, const char **error_r)
{
	if (!s->done || s->failed) {
		*error_r = s->failed ? s->error : "sealing not finished";
		return NULL;
	}
	return buf_cstr(&s->out);
}

void arc_seal_free(struct arc_seal **sp)
{
	struct arc_seal *s = *sp;
	if (s == NULL)
		return;
	dkim_msg_clear(&s->msg);
	EVP_MD_CTX_free(s->bmd);
	buf_free(&s->aar);
	buf_free(&s->ams);
	buf_free(&s->as);
	buf_free(&s->out);
	free(s);
	*sp = NULL;
}
