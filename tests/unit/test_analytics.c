/* test_analytics.c — delivery analytics (issue 13): the log-scale delay
 * histogram and its percentiles, reason and TLS normalisation, the batch's
 * bounds, the SQLite store (upserts, the per-hour domain cap, retention,
 * queries) and the ANALYTICS control frame. Table-driven where it fits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ctl/ctl.h"
#include "queue/astats.h"
#include "queue/astore.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_bins(void **state)
{
	(void)state;
	static const struct {
		uint64_t us;
		unsigned bin;
	} cases[] = {
	    {0, 0},
	    {999, 0},
	    {1000, 1},
	    {1999, 1},
	    {2000, 2},
	    {3999, 2},
	    {4000, 3},
	    {1000000, 10},
	    {1023999, 10},
	    {1024000, 11},
	    {UINT64_MAX, ASTATS_BINS - 1},
	};
	for (size_t i = 0; i < N(cases); i++) {
		unsigned b = astats_bin(cases[i].us);
		assert_int_equal(b, cases[i].bin);
		if (b < ASTATS_BINS - 1) {
			assert_true(cases[i].us / 1000 >= astats_bin_lo_ms(b));
			assert_true(cases[i].us / 1000 < astats_bin_hi_ms(b));
		}
	}
}

static void test_percentiles(void **state)
{
	(void)state;
	uint64_t bins[ASTATS_BINS] = {0};
	assert_true(astats_percentile(bins, 0.5) < 0); /* empty */
	/* 100 values in [512, 1024) ms: bin 10. */
	bins[10] = 100;
	double p50 = astats_percentile(bins, 0.5);
	assert_true(p50 >= 512 && p50 <= 1024);
	assert_true(p50 > 760 && p50 < 780); /* 512 + 512 * 0.5 */
	/* 90 fast (bin 1: [1, 2) ms) and 10 slow (bin 20: [2^19, 2^20) ms). */
	memset(bins, 0, sizeof(bins));
	bins[1] = 90;
	bins[20] = 10;
	assert_true(astats_percentile(bins, 0.5) < 2);
	assert_true(astats_percentile(bins, 0.9) <= 2);
	double p99 = astats_percentile(bins, 0.99);
	assert_true(p99 >= 524288 && p99 <= 1048576);
	assert_true(astats_percentile(bins, 1.0) <= 1048576);
	/* Monotonic in p. */
	double last = -1;
	for (double p = 0.01; p <= 1.0; p += 0.01) {
		double v = astats_percentile(bins, p);
		assert_true(v >= last);
		last = v;
	}
}

static void test_reason_norm(void **state)
{
	(void)state;
	static const struct {
		const char *status, *diag, *want;
	} cases[] = {
	    {"5.1.1", "550 5.1.1 <bob@example.org>: User unknown", "5.1.1 user unknown"},
	    {"4.2.0", "451 4.2.0 Mailbox busy, try later", "4.2.0 mailbox busy, try later"},
	    {"4.7.1", "450 4.7.1 Greylisted for 300 seconds", "4.7.1 greylisted for N seconds"},
	    {"4.4.1", "connect to 192.0.2.1:25 refused", "4.4.1 connect to N:N refused"},
	    {"5.0.0", "", "5.0.0"},
	    {"", "", "unknown"},
	    {"4.3.0", "not attempted", "4.3.0 not attempted"},
	    {"5.7.1", "554-5.7.1 Rejected\r\n\t\x01\xff  by   policy", "5.7.1 rejected by policy"},
	    {"4.0.0", "421 mx1.example.net closing", "4.0.0 mxN.example.net closing"},
	};
	for (size_t i = 0; i < N(cases); i++) {
		char out[ASTATS_REASON_MAX + 1];
		astats_reason_norm(cases[i].status, cases[i].diag, out, sizeof(out));
		assert_string_equal(out, cases[i].want);
	}
	/* Bounded, whatever comes. */
	char big[2000], out[ASTATS_REASON_MAX + 1];
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	astats_reason_norm("4.0.0", big, out, sizeof(out));
	assert_true(strlen(out) <= ASTATS_REASON_MAX);
}

static void test_tls_and_domain(void **state)
{
	(void)state;
	char v[ASTATS_TLSVER_MAX], d[ASTATS_DOMAIN_MAX + 1];
	astats_tls_version("TLSv1.3:TLS_AES_256_GCM_SHA384", v, sizeof(v));
	assert_string_equal(v, "TLSv1.3");
	astats_tls_version("", v, sizeof(v));
	assert_string_equal(v, "none");
	astats_tls_version("none", v, sizeof(v));
	assert_string_equal(v, "none");
	astats_tls_version("<script>:x", v, sizeof(v));
	assert_string_equal(v, "script");
	astats_domain("Bob@Example.ORG", d, sizeof(d));
	assert_string_equal(d, "example.org");
	astats_domain("", d, sizeof(d));
	assert_string_equal(d, ASTATS_NULL_SENDER);
}

static void test_batch(void **state)
{
	(void)state;
	struct astats_batch *b = astats_batch_new();
	astats_batch_event(b, 10, "a.test", "s.test", ASTATS_ACCEPTED, 0);
	astats_batch_event(b, 10, "a.test", "s.test", ASTATS_DELIVERED, 1500);
	astats_batch_event(b, 10, "a.test", "s.test", ASTATS_DELIVERED, 1500);
	astats_batch_event(b, 11, "a.test", "s.test", ASTATS_BOUNCED, 0);
	assert_int_equal(b->n_cells, 2);
	assert_int_equal(b->cells[0].n[ASTATS_ACCEPTED], 1);
	assert_int_equal(b->cells[0].n[ASTATS_DELIVERED], 2);
	assert_int_equal(b->cells[0].bins[1], 2);
	assert_int_equal(b->cells[1].n[ASTATS_BOUNCED], 1);
	/* Bounded: a flood of domains ends in (other). */
	char dom[64];
	for (int i = 0; i < ASTATS_CELLS_MAX + 100; i++) {
		snprintf(dom, sizeof(dom), "d%d.test", i);
		astats_batch_event(b, 12, dom, "s.test", ASTATS_ACCEPTED, 0);
	}
	assert_int_equal(b->n_cells, ASTATS_CELLS_MAX);
	uint64_t total = 0;
	for (size_t i = 0; i < b->n_cells; i++)
		if (b->cells[i].hour == 12)
			total += b->cells[i].n[ASTATS_ACCEPTED];
	assert_int_equal(total, ASTATS_CELLS_MAX + 100);
	astats_batch_reason(b, 10, ASTATS_DEFERRED, "a.test", "4.2.0 busy");
	astats_batch_reason(b, 10, ASTATS_DEFERRED, "a.test", "4.2.0 busy");
	astats_batch_reason(b, 10, ASTATS_BOUNCED, "a.test", "4.2.0 busy");
	assert_int_equal(b->n_reasons, 2);
	assert_int_equal(b->reasons[0].n, 2);
	astats_batch_tls(b, 10, "TLSv1.3");
	astats_batch_tls(b, 10, "TLSv1.3");
	astats_batch_tls(b, 10, "none");
	assert_int_equal(b->n_tls, 2);
	assert_int_equal(b->tls[0].n, 2);
	astats_batch_free(&b);
	assert_null(b);
}

static void test_collector(void **state)
{
	(void)state;
	struct astats *a = astats_create();
	assert_null(astats_take(a));
	astats_event(a, 7 * ASTATS_HOUR_US + 5, "x@A.test", "", ASTATS_DELIVERED, 2000);
	astats_reason(a, 7 * ASTATS_HOUR_US, "x@a.test", ASTATS_DEFERRED, "4.4.1", "451 4.4.1 no");
	astats_tls(a, 7 * ASTATS_HOUR_US, "TLSv1.2:ECDHE");
	struct astats_batch *b = astats_take(a);
	assert_non_null(b);
	assert_int_equal(b->n_cells, 1);
	assert_int_equal(b->cells[0].hour, 7);
	assert_string_equal(b->cells[0].rdom, "a.test");
	assert_string_equal(b->cells[0].sdom, ASTATS_NULL_SENDER);
	assert_string_equal(b->reasons[0].reason, "4.4.1 no");
	assert_string_equal(b->tls[0].version, "TLSv1.2");
	assert_null(astats_take(a));
	astats_batch_free(&b);
	astats_free(&a);
}

/* ---- the store ---- */

static char tmpdir[64];

static int store_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/hk-astore-XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int store_teardown(void **state)
{
	(void)state;
	char p[128];
	static const char *const f[] = {"stats.db", "stats.db-wal", "stats.db-shm"};
	for (size_t i = 0; i < N(f); i++) {
		snprintf(p, sizeof(p), "%s/%s", tmpdir, f[i]);
		unlink(p);
	}
	return rmdir(tmpdir);
}

static char *store_q(struct astore *s, enum astore_kind k, uint64_t from, uint64_t to,
                     const char *domain)
{
	struct astore_query q = {.kind = k, .from_h = from, .to_h = to};
	snprintf(q.domain, sizeof(q.domain), "%s", domain);
	struct buf b;
	const char *error = NULL;
	buf_init(&b, ASTORE_ANSWER_MAX);
	assert_int_equal(astore_query(s, &q, &b, &error), 0);
	char *r = strdup((const char *)b.data);
	buf_free(&b);
	return r;
}

static void test_store(void **state)
{
	(void)state;
	struct astore *s = NULL;
	const char *error = NULL;
	uint64_t now = 500000; /* Unix hours */
	assert_int_equal(astore_open(tmpdir, 48, 2, &s, &error), 0);
	struct astats_batch *b = astats_batch_new();
	astats_batch_event(b, now, "a.test", "s.test", ASTATS_ACCEPTED, 0);
	astats_batch_event(b, now, "a.test", "s.test", ASTATS_DELIVERED, 3000);
	astats_batch_event(b, now, "b.test", "s.test", ASTATS_DEFERRED, 0);
	astats_batch_event(b, now, "c.test", "s.test", ASTATS_BOUNCED, 0);
	astats_batch_event(b, now, "d.test", "s.test", ASTATS_ACCEPTED, 0);
	/* top 2: while the hour runs, 2 * 2 domains; the fifth is (other) */
	astats_batch_event(b, now, "e.test", "s.test", ASTATS_ACCEPTED, 0);
	astats_batch_event(b, now - 100, "old.test", "s.test", ASTATS_ACCEPTED, 0);
	astats_batch_reason(b, now, ASTATS_DEFERRED, "b.test", "4.2.0 busy");
	astats_batch_reason(b, now, ASTATS_BOUNCED, "c.test", "5.1.1 user unknown");
	astats_batch_tls(b, now, "TLSv1.3");
	astats_batch_tls(b, now, "none");
	assert_int_equal(astore_apply(s, b, now, &error), 0);
	/* The same again: counts add up, histograms too. */
	assert_int_equal(astore_apply(s, b, now, &error), 0);
	astats_batch_free(&b);

	char *j = store_q(s, ASTORE_SERIES, now - 200, now, "");
	assert_non_null(strstr(j, "\"accepted\":6,\"delivered\":2,\"deferred\":2,\"bounced\":2"));
	assert_null(strstr(j, "old.test")); /* older than 48 hours: not kept */
	assert_non_null(strstr(j, "\"t\":"));
	assert_null(strstr(strstr(j, "\"t\":") + 1, "\"t\":")); /* one hour only */
	free(j);
	j = store_q(s, ASTORE_DOMAINS, now - 200, now, "");
	for (const char *const *d =
	         (const char *const[]){"a.test", "b.test", "c.test", "d.test", NULL};
	     *d != NULL; d++)
		assert_non_null(strstr(j, *d));
	assert_null(strstr(j, "e.test"));
	assert_non_null(strstr(j, "\"domain\":\"(other)\",\"accepted\":2,\"delivered\":0,"
	                          "\"deferred\":0,\"bounced\":0"));
	free(j);
	/* The next hour's first write compacts this one to its 2 busiest
	 * domains (a.test 4, then b.test by name among the 2s); c.test and
	 * d.test fold into (other), their reasons too. */
	assert_int_equal(astore_apply(s, NULL, now + 1, &error), 0);
	j = store_q(s, ASTORE_DOMAINS, now, now, "");
	assert_non_null(strstr(j, "\"domain\":\"a.test\",\"accepted\":2,\"delivered\":2"));
	assert_non_null(strstr(j, "\"domain\":\"b.test\""));
	assert_null(strstr(j, "c.test"));
	assert_null(strstr(j, "d.test"));
	assert_non_null(strstr(j, "\"domain\":\"(other)\",\"accepted\":4,\"delivered\":0,"
	                          "\"deferred\":0,\"bounced\":2"));
	free(j);
	j = store_q(s, ASTORE_SERIES, now, now, ""); /* nothing lost in the fold */
	assert_non_null(strstr(j, "\"accepted\":6,\"delivered\":2,\"deferred\":2,\"bounced\":2"));
	free(j);
	j = store_q(s, ASTORE_REASONS, now, now, "(other)");
	assert_non_null(strstr(j, "\"bounced\":[{\"reason\":\"5.1.1 user unknown\",\"count\":2}]"));
	free(j);
	j = store_q(s, ASTORE_DELAYS, now, now, "a.test");
	assert_non_null(strstr(j, "\"all\":{\"count\":2,\"p50_ms\":"));
	assert_non_null(strstr(j, "{\"lo_ms\":2,\"hi_ms\":4,\"n\":2}"));
	free(j);
	j = store_q(s, ASTORE_REASONS, now, now, "");
	assert_non_null(strstr(j, "\"deferred\":[{\"reason\":\"4.2.0 busy\",\"count\":2}]"));
	free(j);
	j = store_q(s, ASTORE_TLS, now, now, "");
	assert_non_null(strstr(j, "\"total\":4,\"with_tls\":2"));
	free(j);
	/* A domain filter that matches nothing, and SQL in it, is just text. */
	j = store_q(s, ASTORE_SERIES, now, now, "x' OR '1'='1");
	assert_non_null(strstr(j, "\"hours\":[]"));
	free(j);
	struct astore_query q = {.kind = ASTORE_DMARC, .from_h = now, .to_h = now};
	struct buf out;
	buf_init(&out, 4096);
	assert_int_equal(astore_query(s, &q, &out, &error), -1);
	buf_free(&out);
	astore_close(&s);
	/* Reopened: the data is there. */
	assert_int_equal(astore_open(tmpdir, 48, 2, &s, &error), 0);
	j = store_q(s, ASTORE_SERIES, now, now, "a.test");
	assert_non_null(strstr(j, "\"accepted\":2,\"delivered\":2"));
	free(j);
	/* Fifty hours on, the first write of the hour prunes: hour now is
	 * older than the 48 kept. */
	b = astats_batch_new();
	astats_batch_event(b, now + 50, "late.test", "s.test", ASTATS_ACCEPTED, 0);
	assert_int_equal(astore_apply(s, b, now + 50, &error), 0);
	astats_batch_free(&b);
	j = store_q(s, ASTORE_DOMAINS, now - 200, now + 50, "");
	assert_non_null(strstr(j, "late.test"));
	assert_null(strstr(j, "a.test"));
	free(j);
	astore_close(&s);
	assert_null(s);
}

/* ---- the ANALYTICS frame ---- */

static int frame_of(const struct buf *b, struct ctl_frame *f)
{
	size_t used;
	const char *error;
	return ctl_frame_decode(b->data, b->len, CTL_REQ_MAX, f, &used, &error);
}

static void test_frame(void **state)
{
	(void)state;
	struct ctl_analytics_req in = {.kind = "delays", .from = 3600, .to = 7200}, out;
	snprintf(in.domain, sizeof(in.domain), "example.org");
	struct buf b;
	struct ctl_frame f;
	const char *error = NULL;
	buf_init(&b, CTL_REQ_MAX);
	assert_int_equal(ctl_analytics_build(&in, &b), 0);
	assert_int_equal(frame_of(&b, &f), 1);
	assert_true(ctl_type_is_request(f.type));
	assert_int_equal(ctl_analytics_decode(&f, &out, &error), 0);
	assert_string_equal(out.kind, "delays");
	assert_string_equal(out.domain, "example.org");
	assert_string_equal(out.sender, "");
	assert_int_equal(out.from, 3600);
	assert_int_equal(out.to, 7200);
	/* Refused: to before from, a span too long, a missing kind, a kind
	 * that is not letters, a field twice, an unknown field. */
	static const struct {
		const char *kind;
		uint64_t from, to;
		uint8_t extra_tag;
	} bad[] = {
	    {"series", 10, 5, 0},
	    {"series", 0, CTL_ANALYTICS_SPAN_MAX + 1, 0},
	    {"", 0, 1, 0},
	    {"se ries", 0, 1, 0},
	    {"series", 0, 1, CTL_F_KIND},
	    {"series", 0, 1, CTL_F_QID},
	};
	for (size_t i = 0; i < N(bad); i++) {
		buf_reset(&b);
		size_t start = ctl_frame_begin(&b, CTL_T_ANALYTICS);
		if (bad[i].kind[0] != '\0')
			ctl_frame_add_str(&b, CTL_F_KIND, bad[i].kind);
		ctl_frame_add_u64(&b, CTL_F_FROM, bad[i].from);
		ctl_frame_add_u64(&b, CTL_F_TO, bad[i].to);
		if (bad[i].extra_tag != 0)
			ctl_frame_add_str(&b, bad[i].extra_tag, "series");
		assert_int_equal(ctl_frame_end(&b, start, CTL_REQ_MAX), 0);
		assert_int_equal(frame_of(&b, &f), 1);
		assert_int_equal(ctl_analytics_decode(&f, &out, &error), -1);
		assert_non_null(error);
	}
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_bins),
	    cmocka_unit_test(test_percentiles),
	    cmocka_unit_test(test_reason_norm),
	    cmocka_unit_test(test_tls_and_domain),
	    cmocka_unit_test(test_batch),
	    cmocka_unit_test(test_collector),
	    cmocka_unit_test_setup_teardown(test_store, store_setup, store_teardown),
	    cmocka_unit_test(test_frame),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
