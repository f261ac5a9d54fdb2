/* test_dkim.c — src/dauth/dkim*: tag lists (table), the RFC 6376 §3.4.6
 * canonicalization example, chunking invariance of the streaming body
 * canonicalizer and of the whole verifier, l=, x= expiry, revoked and
 * strict keys, several signatures, a body hash mismatch told apart from a
 * signature mismatch, the bounds, and an asynchronous resolver. Keys are
 * made here; the resolver is injected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "dauth/arc.h"
#include "dauth/dkim.h"
#include "conf/conf.h"

/* ---- tag lists ---------------------------------------------------------- */

static void test_tags(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		int rc;
		size_t n;
	} cases[] = {
	    {"v=1; a=rsa-sha256", 0, 2},
	    {"v=1; a=rsa-sha256;", 0, 2},
	    {"v=1; a=rsa-sha256; ", 0, 2},
	    {" v = 1 ;\r\n\ta=rsa-sha256", 0, 2},
	    {"", 0, 0},
	    {"v=", 0, 1},
	    {"b=abc\r\n def; bh=x", 0, 2},
	    {"v=1;; a=b", -1, 0},
	    {";v=1", -1, 0},
	    {"v=1; v=2", -1, 0}, /* duplicate: permerror (§3.2) */
	    {"v 1", -1, 0},
	    {"1v=1", -1, 0},
	    {"v=1; a=b\x01", -1, 0},
	    {"v_x2=1", 0, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dkim_tags t;
		const char *error = NULL;
		int rc = dkim_tags_parse(cases[i].in, strlen(cases[i].in), &t, &error);
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d", i, cases[i].in, rc);
		if (rc == 0)
			assert_int_equal(t.n, cases[i].n);
		else
			assert_non_null(error);
	}
	struct dkim_tags t;
	const char *error = NULL;
	const char *s = " b = abc\r\n def ; bh=x";
	assert_int_equal(dkim_tags_parse(s, strlen(s), &t, &error), 0);
	const struct dkim_tag *b = dkim_tags_get(&t, "b");
	assert_non_null(b);
	assert_int_equal(b->value_len, strlen("abc\r\n def"));
	assert_memory_equal(b->value, "abc\r\n def", b->value_len);
	assert_null(dkim_tags_get(&t, "B")); /* names are case-sensitive */
	char many[2000] = "";
	for (int i = 0; i < DKIM_TAGS_MAX + 1; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many), "t%d=1;", i);
	assert_int_equal(dkim_tags_parse(many, strlen(many), &t, &error), -1);
}

static void test_sig_parse(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "v=2; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA",
	    "v=1; a=rsa-md5; d=x.org; s=s; h=from; bh=AAAA; b=AAAA",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=to; bh=AAAA; b=AAAA", /* no From */
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA",       /* no b= */
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA; i=@y.org",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA; t=10; x=5",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA; c=fancy",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA; q=http",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AA!A; b=AAAA",
	    "v=1; a=rsa-sha256; d=x.org; s=s; h=from; bh=AAAA; b=AAAA; l=x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dkim_sig sig;
		const char *error = NULL;
		if (dkim_sig_parse(bad[i], strlen(bad[i]), &sig, &error) != -1)
			fail_msg("accepted: %s", bad[i]);
		assert_non_null(error);
		dkim_sig_clear(&sig);
	}
	const char *ok = "v=1; a=ed25519-sha256; c=relaxed; d=Sub.X.org; s=sel.a;"
	                 " h=From : To:subject; bh=AAAA; b=QUJD\r\n REVG; i=u@a.sub.x.org; l=12;"
	                 " t=100; x=200; q=dns/txt";
	struct dkim_sig sig;
	const char *error = NULL;
	assert_int_equal(dkim_sig_parse(ok, strlen(ok), &sig, &error), 0);
	assert_int_equal(sig.alg, DKIM_ALG_ED25519_SHA256);
	assert_int_equal(sig.hcanon, DKIM_CANON_RELAXED);
	assert_int_equal(sig.bcanon, DKIM_CANON_SIMPLE);
	assert_string_equal(sig.domain, "sub.x.org");
	assert_string_equal(sig.selector, "sel.a");
	assert_int_equal(sig.n_hnames, 3);
	assert_string_equal(sig.hnames[2], "subject");
	assert_int_equal(sig.b_len, 6);
	assert_memory_equal(sig.b, "ABCDEF", 6);
	assert_string_equal(sig.b_prefix, "QUJDREVG");
	assert_true(sig.has_l && sig.l == 12 && sig.t == 100 && sig.x == 200);
	dkim_sig_clear(&sig);
}

static void test_key_parse(void **state)
{
	(void)state;
	struct dkim_key k;
	const char *error = NULL;
	const char *t =
	    "v=DKIM1; k=ed25519; t=y:s; h=sha256; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
	assert_int_equal(dkim_key_parse(t, strlen(t), &k, &error), 0);
	assert_int_equal(k.type, DKIM_KEY_ED25519);
	assert_true(k.testing && k.strict && k.sha256_ok && !k.sha1_ok && !k.revoked);
	assert_int_equal(k.p_len, 32);
	t = "v=DKIM1; p=";
	assert_int_equal(dkim_key_parse(t, strlen(t), &k, &error), 0);
	assert_true(k.revoked);
	assert_int_equal(k.type, DKIM_KEY_RSA);
	static const char *const bad[] = {
	    "v=DKIM2; p=", "k=dsa; p=", "s=web; p=", "k=rsa", "p=AAAA; v=DKIM1", "p=A!"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (dkim_key_parse(bad[i], strlen(bad[i]), &k, &error) != -1)
			fail_msg("accepted key %s", bad[i]);
	t = "s=email:*; p=";
	assert_int_equal(dkim_key_parse(t, strlen(t), &k, &error), 0);
}

/* ---- canonicalization (RFC 6376 §3.4.6) ------------------------------------- */

static void emit_buf(void *arg, const void *p, size_t n)
{
	buf_append(arg, p, n);
}

static void body_canon(enum dkim_canon c, const char *body, size_t len, size_t chunk, bool has_l,
                       uint64_t l, struct buf *out)
{
	struct dkim_bodycanon bc;
	buf_reset(out);
	dkim_bodycanon_init(&bc, c, has_l, l, emit_buf, out);
	for (size_t off = 0; off < len;) {
		size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
		dkim_bodycanon_feed(&bc, body + off, n);
		off += n;
	}
	dkim_bodycanon_finish(&bc);
}

static void test_canon_rfc_example(void **state)
{
	(void)state;
	struct buf out;
	buf_init(&out, 0);
	const char *a = "A: X", *b = "B : Y\t\r\n\tZ  ";
	dkim_canon_header(DKIM_CANON_RELAXED, a, strlen(a), &out);
	dkim_canon_header(DKIM_CANON_RELAXED, b, strlen(b), &out);
	assert_string_equal(buf_cstr(&out), "a:X\r\nb:Y Z\r\n");
	buf_reset(&out);
	dkim_canon_header(DKIM_CANON_SIMPLE, b, strlen(b), &out);
	assert_string_equal(buf_cstr(&out), "B : Y\t\r\n\tZ  \r\n");

	static const char body[] = " C \r\nD \t E\r\n\r\n\r\n";
	body_canon(DKIM_CANON_RELAXED, body, sizeof(body) - 1, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), " C\r\nD E\r\n");
	body_canon(DKIM_CANON_SIMPLE, body, sizeof(body) - 1, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), " C \r\nD \t E\r\n");

	/* empty bodies: simple is one CRLF, relaxed is empty (erratum 1384) */
	body_canon(DKIM_CANON_SIMPLE, "", 0, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), "\r\n");
	body_canon(DKIM_CANON_RELAXED, "\r\n\r\n", 4, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), "");
	/* a missing final CRLF is added; a bare CR is content */
	body_canon(DKIM_CANON_SIMPLE, "abc", 3, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), "abc\r\n");
	body_canon(DKIM_CANON_RELAXED, "a\rb  \r\n \t\r\n", 11, 0, false, 0, &out);
	assert_string_equal(buf_cstr(&out), "a\rb\r\n");
	/* l= cuts the canonical output */
	body_canon(DKIM_CANON_SIMPLE, body, sizeof(body) - 1, 0, true, 5, &out);
	assert_string_equal(buf_cstr(&out), " C \r\n");
	buf_free(&out);
}

static void test_canon_chunking(void **state)
{
	(void)state;
	static const char body[] =
	    "  lead\t \r\n\r\nmid \r\n\r\r\n\t\r\n tail  x \r\n\r\n  \r\n\r\nend"
	    "\r\n\r\n\r\n";
	struct buf whole, part;
	buf_init(&whole, 0);
	buf_init(&part, 0);
	for (int c = 0; c < 2; c++) {
		for (int l = 0; l < 2; l++) {
			body_canon((enum dkim_canon)c, body, sizeof(body) - 1, 0, l, 17, &whole);
			for (size_t chunk = 1; chunk < sizeof(body); chunk++) {
				body_canon((enum dkim_canon)c, body, sizeof(body) - 1, chunk, l, 17,
				           &part);
				assert_int_equal(part.len, whole.len);
				assert_memory_equal(part.data, whole.data, whole.len);
			}
		}
	}
	buf_free(&whole);
	buf_free(&part);
}

/* ---- sign and verify ------------------------------------------------------------ */

struct keys {
	EVP_PKEY *pk[2]; /* rsa1, ed1 */
	char txt[3][2048];
	const char *override; /* a key record to serve instead */
	enum dkim_dns_status status;
	bool async; /* answer from dkim_fire, not at once */
	dkim_txt_cb *cb[8];
	void *arg[8];
	char names[8][300];
	size_t npending;
	size_t lookups;
};
static struct keys K;

static void *txt_lookup(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	struct keys *k = ctx;
	k->lookups++;
	if (k->async) {
		k->cb[k->npending] = cb;
		k->arg[k->npending] = arg;
		snprintf(k->names[k->npending++], sizeof(k->names[0]), "%s", name);
		return &k->cb[k->npending - 1];
	}
	const char *t = k->override;
	if (t == NULL)
		t = strncmp(name, "rsa1._domainkey.", 16) == 0 ? k->txt[0] : k->txt[1];
	cb(arg, k->status, &t, k->status == DKIM_DNS_OK ? 1 : 0);
	return NULL;
}

static void txt_cancel(void *ctx, void *handle)
{
	(void)ctx;
	*(dkim_txt_cb **)handle = NULL;
}

static int group_setup(void **state)
{
	(void)state;
	K.pk[0] = EVP_RSA_gen(1024); /* fast; 2048 in the interop tests */
	K.pk[1] = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	for (int i = 0; i < 2; i++) {
		struct buf b;
		buf_init(&b, 0);
		buf_printf(&b, "v=DKIM1; k=%s; p=", i == 0 ? "rsa" : "ed25519");
		dkim_pkey_public_b64(K.pk[i], &b);
		snprintf(K.txt[i], sizeof(K.txt[i]), "%s", buf_cstr(&b));
		buf_free(&b);
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	EVP_PKEY_free(K.pk[0]);
	EVP_PKEY_free(K.pk[1]);
	return 0;
}

static void reset_resolver(void)
{
	K.override = NULL;
	K.status = DKIM_DNS_OK;
	K.async = false;
	K.npending = 0;
	K.lookups = 0;
}

static const char MSG[] = "From: Alice <alice@example.org>\r\n"
                          "To: bob@example.com\r\n"
                          "Subject: test  message\r\n"
                          "Date: Thu, 03 Dec 2026 20:00:00 +0000\r\n"
                          "\r\n"
                          "Body line one \r\n"
                          "\r\n"
                          "line three\r\n\r\n";

/* MSG signed by the keys named in which ("r" rsa1, "e" ed1), in order. */
static void sign(const char *which, time_t now, uint64_t expire, struct buf *out)
{
	struct dkim_sign_key keys[4];
	size_t n = 0;
	for (const char *w = which; *w != '\0'; w++, n++)
		keys[n] = (struct dkim_sign_key){
		    "example.org", *w == 'r' ? "rsa1" : "ed1",
		    *w == 'r' ? DKIM_ALG_RSA_SHA256 : DKIM_ALG_ED25519_SHA256, *w == 'r' ? 0 : 1};
	struct dkim_pkeys pk = {K.pk, 2};
	struct dkim_sign_conf sc = {.keys = keys,
	                            .n_keys = n,
	                            .now = now,
	                            .expire_s = expire,
	                            .sign = dkim_sign_with_pkeys,
	                            .sign_ctx = &pk};
	struct dkim_sign *s = dkim_sign_create(&sc);
	for (size_t i = 0; i < sizeof(MSG) - 1; i += 5)
		assert_int_equal(
		    dkim_sign_feed(s, MSG + i, sizeof(MSG) - 1 - i < 5 ? sizeof(MSG) - 1 - i : 5),
		    0);
	const char *error = NULL;
	assert_int_equal(dkim_sign_finish(s, NULL, NULL, &error), 1);
	const char *h = dkim_sign_header(s, &error);
	assert_non_null(h);
	buf_reset(out);
	buf_append_str(out, h);
	buf_append(out, MSG, sizeof(MSG) - 1);
	dkim_sign_free(&s);
}

static struct dkim_verify *verify(const struct buf *msg, size_t chunk, time_t now)
{
	struct dkim_resolver r = {txt_lookup, txt_cancel, &K};
	struct dkim_verify_conf vc = {.now = now};
	struct dkim_verify *v = dkim_verify_create(&vc, &r);
	for (size_t off = 0; off < msg->len;) {
		size_t n = chunk == 0 || msg->len - off < chunk ? msg->len - off : chunk;
		dkim_verify_feed(v, msg->data + off, n);
		off += n;
	}
	return v;
}

static enum dkim_result verify1(const struct buf *msg, size_t i)
{
	struct dkim_verify *v = verify(msg, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_true(i < dkim_verify_count(v));
	enum dkim_result r = dkim_verify_result(v, i)->result;
	dkim_verify_free(&v);
	return r;
}

static void test_sign_verify_chunked(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("re", 0, 0, &m);
	for (size_t chunk = 0; chunk < 40; chunk++) {
		struct dkim_verify *v = verify(&m, chunk, 0);
		assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
		assert_int_equal(dkim_verify_count(v), 2);
		for (size_t i = 0; i < 2; i++) {
			const struct dkim_verify_sig *r = dkim_verify_result(v, i);
			if (r->result != DKIM_RESULT_PASS)
				fail_msg("chunk %zu sig %zu: %s %s", chunk, i,
				         dkim_result_name(r->result), r->reason);
		}
		assert_string_equal(dkim_verify_result(v, 0)->algorithm, "rsa-sha256");
		assert_string_equal(dkim_verify_result(v, 1)->domain, "example.org");
		assert_string_equal(dkim_verify_result(v, 1)->auid, "@example.org");
		assert_int_equal(strlen(dkim_verify_result(v, 1)->b_prefix), 8);
		if (chunk == 0) {
			struct buf ar;
			char want[128];
			buf_init(&ar, 0);
			assert_int_equal(dkim_verify_ar(v, &ar), 0);
			snprintf(
			    want, sizeof(want),
			    ";\r\n\tdkim=pass header.d=\"example.org\" header.i=\"@example.org\" "
			    "header.s=\"ed1\" header.a=\"ed25519-sha256\" header.b=\"%s\"",
			    dkim_verify_result(v, 1)->b_prefix);
			assert_non_null(strstr(buf_cstr(&ar), want));
			assert_true(
			    strncmp(buf_cstr(&ar), "dkim=pass header.d=\"example.org\" ", 33) == 0);
			buf_free(&ar);
		}
		dkim_verify_free(&v);
	}
	buf_free(&m);
}

static void replace(struct buf *m, const char *from, const char *to)
{
	char *p = strstr((char *)m->data, from);
	assert_non_null(p);
	assert_int_equal(strlen(from), strlen(to));
	memcpy(p, to, strlen(to));
}

static void test_body_vs_header_mismatch(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("e", 0, 0, &m);
	replace(&m, "line three", "line THREE");
	struct dkim_verify *v = verify(&m, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_FAIL);
	assert_true(dkim_verify_result(v, 0)->body_hash_mismatch);
	dkim_verify_free(&v);
	sign("e", 0, 0, &m);
	replace(&m, "test  message", "best  message");
	v = verify(&m, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_FAIL);
	assert_false(dkim_verify_result(v, 0)->body_hash_mismatch);
	dkim_verify_free(&v);
	/* relaxed: whitespace changes in the body do not matter */
	sign("r", 0, 0, &m);
	replace(&m, "Body line one \r\n", "Body  line one\r\n");
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PASS);
	buf_free(&m);
}

static void test_keys_and_expiry(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("r", 1000, 100, &m);
	struct dkim_verify *v = verify(&m, 0, 1050);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_PASS);
	dkim_verify_free(&v);
	v = verify(&m, 0, 1101);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_POLICY);
	assert_int_equal(K.lookups, 1); /* expired: no lookup */
	dkim_verify_free(&v);

	sign("r", 0, 0, &m);
	K.override = "v=DKIM1; k=rsa; p=";
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PERMERROR);
	K.override = K.txt[1]; /* ed25519 key for an rsa signature */
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PERMERROR);
	K.override = "v=DKIM1; k=rsa; h=sha1; p=AAAA";
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PERMERROR);
	K.override = "garbage";
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PERMERROR);
	K.override = NULL;
	K.status = DKIM_DNS_TEMPFAIL;
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_TEMPERROR);
	K.status = DKIM_DNS_NOTFOUND;
	assert_int_equal(verify1(&m, 0), DKIM_RESULT_PERMERROR);
	K.status = DKIM_DNS_OK;
	/* t=y: still evaluated, flagged */
	char testing[2100];
	snprintf(testing, sizeof(testing), "%s; t=y", K.txt[0]);
	K.override = testing;
	v = verify(&m, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_PASS);
	assert_true(dkim_verify_result(v, 0)->testing);
	dkim_verify_free(&v);
	reset_resolver();
	buf_free(&m);
}

static void test_length_tag(void **state)
{
	(void)state;
	/* l= with dkimpy's signatures: tests/integration/test_dkim.py */
	struct dkim_bodycanon bc;
	struct buf out;
	buf_init(&out, 0);
	dkim_bodycanon_init(&bc, DKIM_CANON_RELAXED, true, 0, emit_buf, &out);
	dkim_bodycanon_feed(&bc, "abc\r\n", 5);
	dkim_bodycanon_finish(&bc);
	assert_int_equal(out.len, 0); /* l=0: nothing of the body is hashed */
	buf_reset(&out);
	dkim_bodycanon_init(&bc, DKIM_CANON_SIMPLE, true, 4, emit_buf, &out);
	dkim_bodycanon_feed(&bc, "ab", 2);
	dkim_bodycanon_feed(&bc, "c\r\nmore text\r\n", 15);
	dkim_bodycanon_finish(&bc);
	assert_int_equal(out.len, 4);
	assert_memory_equal(out.data, "abc\r", 4);
	buf_free(&out);
}

static void verify_cb(struct dkim_verify *v, void *arg)
{
	(void)v;
	(*(int *)arg)++;
}

static void test_async_and_cancel(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("rer", 0, 0, &m);
	K.async = true;
	int called = 0;
	struct dkim_verify *v = verify(&m, 0, 0);
	assert_int_equal(dkim_verify_finish(v, verify_cb, &called), 0);
	assert_int_equal(dkim_verify_finish(v, verify_cb, &called), 0); /* no second round */
	assert_int_equal(K.npending, 3);
	for (size_t i = 0; i < K.npending; i++) {
		const char *t = strncmp(K.names[i], "rsa1.", 5) == 0 ? K.txt[0] : K.txt[1];
		assert_int_equal(called, 0);
		K.cb[i](K.arg[i], DKIM_DNS_OK, &t, 1);
	}
	assert_int_equal(called, 1);
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(dkim_verify_result(v, i)->result, DKIM_RESULT_PASS);
	dkim_verify_free(&v);
	/* freed with lookups pending: cancelled, no callback */
	K.npending = 0;
	v = verify(&m, 0, 0);
	assert_int_equal(dkim_verify_finish(v, verify_cb, &called), 0);
	dkim_verify_free(&v);
	for (size_t i = 0; i < K.npending; i++)
		assert_null(K.cb[i]);
	assert_int_equal(called, 1);
	reset_resolver();
	buf_free(&m);
}

static void test_bounds(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("e", 0, 0, &m);
	/* more signatures than evaluated: only the first sigs_max count */
	struct buf many;
	buf_init(&many, 0);
	const char *hdr_end = strstr((const char *)m.data, "\r\nFrom:") + 2;
	for (int i = 0; i < DKIM_SIGS_MAX + 3; i++)
		buf_append(&many, m.data, (size_t)(hdr_end - (const char *)m.data));
	buf_append_str(&many, MSG);
	struct dkim_verify *v = verify(&many, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_count(v), DKIM_SIGS_MAX);
	assert_int_equal(K.lookups, DKIM_SIGS_MAX);
	dkim_verify_free(&v);
	/* a header section past the bound: one permerror, no lookups */
	struct dkim_resolver r = {txt_lookup, txt_cancel, &K};
	struct dkim_verify_conf vc = {.header_max = 100};
	v = dkim_verify_create(&vc, &r);
	dkim_verify_feed(v, m.data, m.len);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_count(v), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_PERMERROR);
	dkim_verify_free(&v);
	/* a signature that does not parse (here h= without From): neutral, no lookup */
	buf_reset(&many);
	buf_append_str(&many, "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=rsa1; h=to;"
	                      " bh=AAAA; b=AAAA\r\n");
	buf_append_str(&many, MSG);
	K.lookups = 0;
	v = verify(&many, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_count(v), 1);
	assert_int_equal(dkim_verify_result(v, 0)->result, DKIM_RESULT_NEUTRAL);
	struct buf ar;
	buf_init(&ar, 0);
	dkim_verify_ar(v, &ar);
	assert_string_equal(buf_cstr(&ar),
	                    "dkim=neutral (h= does not sign From) header.d=\"example.org\" "
	                    "header.s=\"rsa1\"");
	buf_free(&ar);
	assert_non_null(strstr(dkim_verify_result(v, 0)->reason, "From"));
	assert_string_equal(dkim_verify_result(v, 0)->domain, "example.org");
	assert_int_equal(K.lookups, 0);
	dkim_verify_free(&v);
	/* no signature: no results */
	buf_reset(&many);
	buf_append_str(&many, MSG);
	v = verify(&many, 0, 0);
	assert_int_equal(dkim_verify_finish(v, NULL, NULL), 1);
	assert_int_equal(dkim_verify_count(v), 0);
	buf_init(&ar, 0);
	dkim_verify_ar(v, &ar);
	assert_string_equal(buf_cstr(&ar), "dkim=none");
	buf_free(&ar);
	dkim_verify_free(&v);
	buf_free(&many);
	buf_free(&m);
}

static void test_oversigning(void **state)
{
	(void)state;
	struct buf m;
	buf_init(&m, 0);
	reset_resolver();
	sign("e", 0, 0, &m);
	assert_non_null(
	    strstr((const char *)m.data, "h=From:From:To:To:Subject:Subject:Date:Date"));
	/* a second Subject added below the signature breaks it */
	struct buf f;
	buf_init(&f, 0);
	buf_append(&f, m.data, m.len);
	char *body = strstr((char *)f.data, "\r\n\r\n");
	size_t at = (size_t)(body - (char *)f.data) + 2;
	struct buf g;
	buf_init(&g, 0);
	buf_append(&g, f.data, at);
	buf_append_str(&g, "Subject: added\r\n");
	buf_append(&g, f.data + at, f.len - at);
	assert_int_equal(verify1(&g, 0), DKIM_RESULT_FAIL);
	buf_free(&f);
	buf_free(&g);
	buf_free(&m);
}

/* ---- ARC ------------------------------------------------------------------------------ */

static void arc_seal_msg(const struct buf *in, enum arc_result chain, const char *authres,
                         struct buf *out)
{
	struct dkim_sign_key key = {"example.org", "rsa1", DKIM_ALG_RSA_SHA256, 0};
	struct dkim_pkeys pk = {K.pk, 2};
	struct arc_seal_conf ac = {.key = &key,
	                           .authres = authres,
	                           .chain = chain,
	                           .now = 1000,
	                           .sign = dkim_sign_with_pkeys,
	                           .sign_ctx = &pk};
	struct arc_seal *s = arc_seal_create(&ac);
	for (size_t i = 0; i < in->len; i += 3)
		assert_int_equal(arc_seal_feed(s, in->data + i, in->len - i < 3 ? in->len - i : 3),
		                 0);
	const char *error = NULL;
	assert_int_equal(arc_seal_finish(s, NULL, NULL, &error), 1);
	buf_reset(out);
	buf_append_str(out, arc_seal_header(s, &error));
	buf_append(out, in->data, in->len);
	arc_seal_free(&s);
}

static enum arc_result arc_check_msg(const struct buf *m, size_t chunk, unsigned *sets,
                                     const char **reason)
{
	struct dkim_resolver r = {txt_lookup, txt_cancel, &K};
	struct arc_verify *v = arc_verify_create(0, &r);
	for (size_t off = 0; off < m->len;) {
		size_t n = chunk == 0 || m->len - off < chunk ? m->len - off : chunk;
		arc_verify_feed(v, m->data + off, n);
		off += n;
	}
	assert_int_equal(arc_verify_finish(v, NULL, NULL), 1);
	enum arc_result res = arc_verify_result(v, sets, reason);
	arc_verify_free(&v);
	return res;
}

static void test_arc(void **state)
{
	(void)state;
	struct buf m, one, two;
	unsigned sets = 0;
	const char *reason = NULL;
	buf_init(&m, 0);
	buf_init(&one, 0);
	buf_init(&two, 0);
	reset_resolver();
	buf_append_str(&m, MSG);
	assert_int_equal(arc_check_msg(&m, 0, &sets, &reason), ARC_RESULT_NONE);
	arc_seal_msg(&m, ARC_RESULT_NONE, "mx1.example.org; spf=pass", &one);
	assert_non_null(strstr((const char *)one.data, "ARC-Seal: i=1; a=rsa-sha256; cv=none;"));
	arc_seal_msg(&one, ARC_RESULT_PASS, "mx2.example.org; arc=pass", &two);
	assert_non_null(strstr((const char *)two.data, "ARC-Seal: i=2; a=rsa-sha256; cv=pass;"));
	for (size_t chunk = 0; chunk < 12; chunk += 5) {
		assert_int_equal(arc_check_msg(&two, chunk, &sets, &reason), ARC_RESULT_PASS);
		assert_int_equal(sets, 2);
	}
	/* the first hop's results changed: its seal (and so the chain) fails */
	replace(&two, "spf=pass", "spf=FAIL");
	assert_int_equal(arc_check_msg(&two, 0, &sets, &reason), ARC_RESULT_FAIL);
	assert_non_null(strstr(reason, "Seal"));
	/* a chain that failed is sealed with cv=fail, and stays failed */
	arc_seal_msg(&two, ARC_RESULT_FAIL, "mx3.example.org; arc=fail", &one);
	assert_non_null(strstr((const char *)one.data, "cv=fail"));
	assert_int_equal(arc_check_msg(&one, 0, &sets, &reason), ARC_RESULT_FAIL);
	/* DNS failure is a failed chain, never a hang; freeing with lookups pending */
	arc_seal_msg(&m, ARC_RESULT_NONE, "mx1.example.org; spf=pass", &one);
	K.status = DKIM_DNS_TEMPFAIL;
	assert_int_equal(arc_check_msg(&one, 0, &sets, &reason), ARC_RESULT_FAIL);
	reset_resolver();
	K.async = true;
	struct dkim_resolver r = {txt_lookup, txt_cancel, &K};
	struct arc_verify *v = arc_verify_create(0, &r);
	arc_verify_feed(v, one.data, one.len);
	assert_int_equal(arc_verify_finish(v, NULL, NULL), 0);
	assert_int_equal(K.npending, 2);
	arc_verify_free(&v);
	assert_null(K.cb[0]);
	assert_null(K.cb[1]);
	/* sealing needs an RSA key */
	struct dkim_sign_key ed = {"example.org", "ed1", DKIM_ALG_ED25519_SHA256, 1};
	struct arc_seal_conf ac = {.key = &ed, .authres = "x; none", .sign = dkim_sign_with_pkeys};
	struct arc_seal *s = arc_seal_create(&ac);
	assert_int_equal(arc_seal_finish(s, NULL, NULL, &reason), -1);
	arc_seal_free(&s);
	reset_resolver();
	buf_free(&m);
	buf_free(&one);
	buf_free(&two);
}

/* dkim.sign[] entries of the From domain become the signer's keys, in order,
 * key_id = the entry's index (the keys process's DKIM key index). */
static void test_sign_keys_from_conf(void **state)
{
	(void)state;
	static const char yaml[] =
	    "listen: [{address: '127.0.0.1:2525', tls: none}]\n"
	    "dkim:\n"
	    "  sign:\n"
	    "    - {domain: Example.ORG, selector: s1, key: /k1}\n"
	    "    - {domain: other.test, selector: s1, key: /k2}\n"
	    "    - {domain: example.org, selector: e1, key: /k3, type: ed25519}\n";
	struct conf *c = NULL;
	char err[512];
	if (conf_load_buffer("test.yaml", yaml, sizeof(yaml) - 1, &c, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	struct dkim_sign_key keys[4];
	assert_int_equal(dkim_sign_keys_for(c, "EXAMPLE.org", keys, 4), 2);
	assert_string_equal(keys[0].domain, "example.org");
	assert_string_equal(keys[0].selector, "s1");
	assert_int_equal(keys[0].alg, DKIM_ALG_RSA_SHA256);
	assert_int_equal(keys[0].key_id, 0);
	assert_int_equal(keys[1].alg, DKIM_ALG_ED25519_SHA256);
	assert_int_equal(keys[1].key_id, 2);
	assert_int_equal(dkim_sign_keys_for(c, "example.org", keys, 1), 1);
	assert_int_equal(dkim_sign_keys_for(c, "sub.example.org", keys, 4), 0);
	conf_free(&c);
	static const char bad[] = "listen: [{address: '127.0.0.1:2525', tls: none}]\n"
	                          "dkim: {sign: [{domain: x.test, selector: 'a..b', key: /k}]}\n";
	assert_int_equal(conf_load_buffer("bad.yaml", bad, sizeof(bad) - 1, &c, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "selector"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tags),
	    cmocka_unit_test(test_sig_parse),
	    cmocka_unit_test(test_key_parse),
	    cmocka_unit_test(test_canon_rfc_example),
	    cmocka_unit_test(test_canon_chunking),
	    cmocka_unit_test(test_sign_verify_chunked),
	    cmocka_unit_test(test_body_vs_header_mismatch),
	    cmocka_unit_test(test_keys_and_expiry),
	    cmocka_unit_test(test_length_tag),
	    cmocka_unit_test(test_async_and_cancel),
	    cmocka_unit_test(test_bounds),
	    cmocka_unit_test(test_oversigning),
	    cmocka_unit_test(test_arc),
	    cmocka_unit_test(test_sign_keys_from_conf),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
