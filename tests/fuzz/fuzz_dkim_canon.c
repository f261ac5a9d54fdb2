/* fuzz_dkim_canon.c — libFuzzer target for DKIM canonicalization
 * (src/dauth/dkim_canon.c) and the verifier's message splitting
 * (dkim_msg.c, dkim_verify.c). Input: byte 0 picks the canonicalization,
 * byte 1 the chunk size, the rest is a message body or a whole message,
 * hostile. Checks that:
 * - the streaming body canonicalizer gives the same octets whatever the
 *   chunking (all at once vs. byte 1's chunk size), with and without l=;
 * - its output is canonical: relaxed has no WSP before CRLF nor runs of WSP,
 *   both end in CRLF (or are empty: relaxed), no trailing empty lines;
 * - header canonicalization of any field terminates and ends in CRLF;
 * - the verifier fed the input as a message in chunks never crashes, with
 *   a resolver that answers at once, and gives at most DKIM_SIGS_MAX results;
 *   the same for the ARC verifier (arc.c), whose result is one of three;
 *   and with a resolver that never answers, arc_verify_cancel() (smtpd's
 *   dauth.timeout) cancels every lookup it started and leaves a fail; and
 *   sharing the DKIM verifier's header section gives the same result.
 * Seeds in corpus/dkim_canon/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/arc.h"
#include "dauth/dkim.h"

static void emit(void *arg, const void *p, size_t n)
{
	buf_append(arg, p, n);
}

static void canon(enum dkim_canon c, const uint8_t *p, size_t n, size_t chunk, bool has_l,
                  uint64_t l, struct buf *out)
{
	struct dkim_bodycanon bc;
	dkim_bodycanon_init(&bc, c, has_l, l, emit, out);
	for (size_t off = 0; off < n;) {
		size_t k = chunk == 0 || n - off < chunk ? n - off : chunk;
		dkim_bodycanon_feed(&bc, p + off, k);
		off += k;
	}
	dkim_bodycanon_finish(&bc);
}

static void check_canonical(enum dkim_canon c, const struct buf *b)
{
	const unsigned char *d = b->data;
	size_t n = b->len;
	if (n == 0) {
		if (c == DKIM_CANON_SIMPLE)
			abort();
		return;
	}
	if (n < 2 || d[n - 2] != '\r' || d[n - 1] != '\n')
		abort();
	if (n >= 4 && memcmp(d + n - 4, "\r\n\r\n", 4) == 0)
		abort();
	if (c == DKIM_CANON_RELAXED)
		for (size_t i = 0; i + 1 < n; i++) {
			bool w = d[i] == ' ' || d[i] == '\t';
			bool eol = i + 2 < n && d[i + 1] == '\r' && d[i + 2] == '\n';
			if (d[i] == '\t' || (w && (d[i + 1] == ' ' || eol)))
				abort();
		}
}

static void *lookup(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	const char *t = ctx;
	(void)name;
	cb(arg, DKIM_DNS_OK, &t, 1);
	return NULL;
}

/* The ARC verifier sharing the DKIM verifier's header section (as smtpd
 * runs it) comes to the same result as the one keeping its own. */
static void arc_shared_same(const uint8_t *p, size_t n, size_t chunk, const struct dkim_resolver *r,
                            const struct arc_verify *own)
{
	struct dkim_verify_conf vc = {.now = 1700000000};
	struct dkim_verify *dv = dkim_verify_create(&vc, r);
	struct arc_verify *av = arc_verify_create_shared(1700000000, r, dv);
	for (size_t off = 0; off < n;) {
		size_t k = n - off < chunk ? n - off : chunk;
		dkim_verify_feed(dv, p + off, k);
		arc_verify_feed(av, p + off, k);
		off += k;
	}
	unsigned s1 = 0, s2 = 0;
	const char *why1 = NULL, *why2 = NULL;
	if (dkim_verify_finish(dv, NULL, NULL) != 1 || arc_verify_finish(av, NULL, NULL) != 1 ||
	    arc_verify_result(av, &s2, &why2) != arc_verify_result(own, &s1, &why1) || s1 != s2 ||
	    strcmp(why1, why2) != 0)
		abort();
	arc_verify_free(&av);
	dkim_verify_free(&dv);
}

/* A resolver that never answers: ctx counts the lookups not yet cancelled. */
static void *lookup_silent(void *ctx, const char *name, dkim_txt_cb *cb, void *arg)
{
	(void)name;
	(void)cb;
	(void)arg;
	++*(size_t *)ctx;
	return ctx;
}

static void cancel_silent(void *ctx, void *q)
{
	if (q != ctx || *(size_t *)ctx == 0)
		abort();
	--*(size_t *)ctx;
}

static void never_called(struct arc_verify *v, void *arg)
{
	(void)v;
	(void)arg;
	abort();
}

static void arc_cancelled(const uint8_t *p, size_t n, size_t chunk)
{
	size_t open = 0;
	struct dkim_resolver r = {lookup_silent, cancel_silent, &open};
	struct arc_verify *av = arc_verify_create(1700000000, &r);
	for (size_t off = 0; off < n;) {
		size_t k = n - off < chunk ? n - off : chunk;
		arc_verify_feed(av, p + off, k);
		off += k;
	}
	int rc = arc_verify_finish(av, never_called, NULL);
	if (rc == 0) {
		if (open == 0)
			abort();
		arc_verify_cancel(av, "timed out");
		if (open != 0 || arc_verify_result(av, NULL, NULL) != ARC_RESULT_FAIL)
			abort();
	} else if (rc != 1 || open != 0) {
		abort();
	}
	arc_verify_free(&av);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	enum dkim_canon c = data[0] & 1 ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
	size_t chunk = data[1] % 17 + 1;
	const uint8_t *p = data + 2;
	size_t n = size - 2;
	struct buf whole, part;
	buf_init(&whole, 0);
	buf_init(&part, 0);
	canon(c, p, n, 0, false, 0, &whole);
	canon(c, p, n, chunk, false, 0, &part);
	if (whole.len != part.len || memcmp(whole.data, part.data, whole.len) != 0)
		abort();
	check_canonical(c, &whole);
	buf_reset(&part);
	canon(c, p, n, chunk, true, data[1], &part);
	if (part.len != (whole.len < data[1] ? whole.len : data[1]) ||
	    memcmp(part.data, whole.data, part.len) != 0)
		abort();
	buf_reset(&part);
	if (dkim_canon_header(c, (const char *)p, n, &part) < 0 || part.len < 2 ||
	    part.data[part.len - 1] != '\n')
		abort();
	buf_free(&whole);
	buf_free(&part);

	struct dkim_resolver r = {
	    lookup, NULL,
	    (void *)"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="};
	struct dkim_verify_conf vc = {.now = 1700000000, .header_max = 4096};
	struct dkim_verify *v = dkim_verify_create(&vc, &r);
	for (size_t off = 0; off < n;) {
		size_t k = n - off < chunk ? n - off : chunk;
		dkim_verify_feed(v, p + off, k);
		off += k;
	}
	if (dkim_verify_finish(v, NULL, NULL) != 1 || dkim_verify_count(v) > DKIM_SIGS_MAX)
		abort();
	for (size_t i = 0; i < dkim_verify_count(v); i++)
		if (dkim_verify_result(v, i)->result == DKIM_RESULT_NONE)
			abort();
	dkim_verify_free(&v);

	struct arc_verify *av = arc_verify_create(1700000000, &r);
	for (size_t off = 0; off < n;) {
		size_t k = n - off < chunk ? n - off : chunk;
		arc_verify_feed(av, p + off, k);
		off += k;
	}
	unsigned sets = 0;
	const char *reason = NULL;
	if (arc_verify_finish(av, NULL, NULL) != 1 ||
	    arc_verify_result(av, &sets, &reason) > ARC_RESULT_FAIL || sets > ARC_SETS_MAX ||
	    reason == NULL)
		abort();
	arc_shared_same(p, n, chunk, &r, av);
	arc_verify_free(&av);
	arc_cancelled(p, n, chunk);
	return 0;
}
