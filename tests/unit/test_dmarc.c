/* test_dmarc.c — unit tests for DMARC (dauth/dmarc.c): the record parser
 * (table-driven), the organizational domain from the public suffix list,
 * policy discovery over an injected resolver, alignment and pct. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dauth/dmarc.h"

#include <string.h>

static void test_dmarc_record(void **state)
{
	(void)state;
	static const struct {
		const char *txt;
		int rc;
		enum dmarc_policy p, sp;
		unsigned pct;
		bool adkim_s, aspf_s;
		size_t nrua;
	} cases[] = {
	    {"v=DMARC1; p=reject", 0, DMARC_P_REJECT, DMARC_P_REJECT, 100, false, false, 0},
	    {"v=DMARC1;p=none;sp=quarantine;pct=20;adkim=s;aspf=s", 0, DMARC_P_NONE,
	     DMARC_P_QUARANTINE, 20, true, true, 0},
	    {" v = DMARC1 ; p = Quarantine ; ", 0, DMARC_P_QUARANTINE, DMARC_P_QUARANTINE, 100,
	     false, false, 0},
	    {"v=DMARC1; p=reject; rua=mailto:a@example.com!10m, mailto:b@example.com", 0,
	     DMARC_P_REJECT, DMARC_P_REJECT, 100, false, false, 2},
	    {"v=DMARC1; p=reject; pct=101; adkim=x; foo=bar", 0, DMARC_P_REJECT, DMARC_P_REJECT,
	     100, false, false, 0},
	    /* §6.6.3 step 6: without a valid p, a usable rua makes it p=none */
	    {"v=DMARC1; rua=mailto:d@example.com", 0, DMARC_P_NONE, DMARC_P_NONE, 100, false, false,
	     1},
	    {"v=DMARC1; p=bogus; rua=mailto:d@example.com", 0, DMARC_P_NONE, DMARC_P_NONE, 100,
	     false, false, 1},
	    {"v=DMARC1; p=reject; sp=bogus; rua=mailto:d@example.com", 0, DMARC_P_NONE,
	     DMARC_P_NONE, 100, false, false, 1},
	    {"v=DMARC1", -1, 0, 0, 0, false, false, 0},
	    {"v=DMARC1; p=bogus", -1, 0, 0, 0, false, false, 0},
	    {"v=DMARC1; p=reject; sp=bogus", -1, 0, 0, 0, false, false, 0},
	    {"v=DMARC1; p=reject; p=none", -1, 0, 0, 0, false, false, 0},
	    {"v=DMARC1; p=reject; garbage", -1, 0, 0, 0, false, false, 0},
	    /* not DMARC records at all: discarded */
	    {"p=reject; v=DMARC1", 1, 0, 0, 0, false, false, 0},
	    {"v=dmarc1; p=reject", 1, 0, 0, 0, false, false, 0},
	    {"v=spf1 -all", 1, 0, 0, 0, false, false, 0},
	    {"", 1, 0, 0, 0, false, false, 0},
	    {"v=DMARC10; p=reject", 1, 0, 0, 0, false, false, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dmarc_record r;
		const char *err = NULL;
		int rc = dmarc_record_parse(cases[i].txt, strlen(cases[i].txt), &r, &err);
		if (rc != cases[i].rc)
			fail_msg("case %zu \"%s\": rc %d (%s)", i, cases[i].txt, rc,
			         err ? err : "-");
		if (rc == -1)
			assert_non_null(err);
		if (rc != 0)
			continue;
		assert_int_equal(r.p, cases[i].p);
		assert_int_equal(r.sp, cases[i].sp);
		assert_int_equal(r.pct, cases[i].pct);
		assert_int_equal(r.adkim_strict, cases[i].adkim_s);
		assert_int_equal(r.aspf_strict, cases[i].aspf_s);
		assert_int_equal(r.nrua, cases[i].nrua);
	}
}

static void test_dmarc_org_domain(void **state)
{
	(void)state;
	struct dmarc *d = dmarc_create();
	char out[256];
	dmarc_org_domain(d, "mail.example.com", out, sizeof(out));
	assert_string_equal(out, "example.com");
	dmarc_org_domain(d, "a.b.example.co.uk", out, sizeof(out));
	assert_string_equal(out, "example.co.uk");
	dmarc_org_domain(d, "example.com", out, sizeof(out));
	assert_string_equal(out, "example.com");
	dmarc_org_domain(d, "co.uk", out, sizeof(out)); /* a public suffix: itself */
	assert_string_equal(out, "co.uk");
	dmarc_free(&d);
	assert_null(d);
}

/* A resolver from a table; answers inside the call, or later (held) when
 * asked to, so both paths of dmarc_discover() run. */
struct fake_zone {
	const char *name;
	enum dmarc_dns_status st;
	const char *txt[3];
};
struct fake_res {
	const struct fake_zone *zone;
	size_t n;
	unsigned asked;
	bool hold;
	dmarc_txt_cb *held_cb;
	void *held_arg;
	const char *held_name;
};

static void fake_answer(struct fake_res *f, const char *name, dmarc_txt_cb *cb, void *arg)
{
	for (size_t i = 0; i < f->n; i++) {
		if (strcmp(f->zone[i].name, name) != 0)
			continue;
		size_t n = 0;
		while (n < 3 && f->zone[i].txt[n] != NULL)
			n++;
		cb(f->zone[i].st, f->zone[i].txt, n, arg);
		return;
	}
	cb(DMARC_DNS_NXDOMAIN, NULL, 0, arg);
}

static void *fake_txt(void *ctx, const char *name, dmarc_txt_cb *cb, void *arg)
{
	struct fake_res *f = ctx;
	f->asked++;
	if (f->hold) {
		f->held_cb = cb;
		f->held_arg = arg;
		f->held_name = name; /* the caller's buffer: copy before returning in real code */
		return f;
	}
	fake_answer(f, name, cb, arg);
	return NULL;
}

static void fake_cancel(void *ctx, void *h)
{
	(void)ctx;
	(void)h;
}

static struct dmarc_policy_found got;
static int ncalls;

static void on_found(const struct dmarc_policy_found *f, void *arg)
{
	(void)arg;
	got = *f;
	ncalls++;
}

static const struct fake_zone zone[] = {
    {"_dmarc.example.com", DMARC_DNS_OK, {"v=spf1 -all", "v=DMARC1; p=reject; sp=quarantine"}},
    {"_dmarc.two.example", DMARC_DNS_OK, {"v=DMARC1; p=reject", "v=DMARC1; p=none"}},
    {"_dmarc.bad.example", DMARC_DNS_OK, {"v=DMARC1; p=nope"}},
    {"_dmarc.temp.example", DMARC_DNS_TEMPFAIL, {NULL}},
    {"_dmarc.sub.nodata.example", DMARC_DNS_OK, {NULL}},
};

static void discover(struct dmarc *d, struct fake_res *f, const char *dom)
{
	struct dmarc_resolver res = {fake_txt, fake_cancel, f};
	ncalls = 0;
	f->asked = 0;
	assert_null(dmarc_discover(d, &res, dom, on_found, NULL));
	assert_int_equal(ncalls, 1);
}

static void test_dmarc_discover(void **state)
{
	(void)state;
	struct dmarc *d = dmarc_create();
	struct fake_res f = {zone, sizeof(zone) / sizeof(zone[0]), 0, false, NULL, NULL, NULL};

	discover(d, &f, "example.com");
	assert_int_equal(got.status, DMARC_PASS);
	assert_false(got.at_org);
	assert_int_equal(got.rec.p, DMARC_P_REJECT);
	assert_int_equal(f.asked, 1);

	/* a subdomain without its own record: the org domain's, with sp */
	discover(d, &f, "mail.example.com");
	assert_int_equal(got.status, DMARC_PASS);
	assert_true(got.at_org);
	assert_string_equal(got.domain, "example.com");
	assert_int_equal(f.asked, 2);

	discover(d, &f, "nothing.example");
	assert_int_equal(got.status, DMARC_NONE);
	discover(d, &f, "two.example");
	assert_int_equal(got.status, DMARC_PERMERROR);
	discover(d, &f, "bad.example");
	assert_int_equal(got.status, DMARC_PERMERROR);
	discover(d, &f, "temp.example");
	assert_int_equal(got.status, DMARC_TEMPERROR);
	discover(d, &f, "sub.nodata.example"); /* NODATA, then the org domain: none */
	assert_int_equal(got.status, DMARC_NONE);
	assert_int_equal(f.asked, 2);

	/* answered later, and cancelled while pending */
	struct dmarc_resolver res = {fake_txt, fake_cancel, &f};
	f.hold = true;
	ncalls = 0;
	struct dmarc_discovery *q = dmarc_discover(d, &res, "example.com", on_found, NULL);
	assert_non_null(q);
	assert_int_equal(ncalls, 0);
	f.hold = false;
	fake_answer(&f, "_dmarc.example.com", f.held_cb, f.held_arg);
	assert_int_equal(ncalls, 1);
	assert_int_equal(got.status, DMARC_PASS);
	f.hold = true;
	q = dmarc_discover(d, &res, "example.com", on_found, NULL);
	dmarc_discovery_cancel(&q);
	assert_null(q);
	dmarc_free(&d);
}

static void test_dmarc_evaluate(void **state)
{
	(void)state;
	struct dmarc *d = dmarc_create();
	struct dmarc_policy_found f = {.status = DMARC_PASS};
	struct dmarc_result r;
	const char *e = NULL;
	assert_int_equal(
	    dmarc_record_parse("v=DMARC1; p=reject; sp=quarantine; pct=50", 41, &f.rec, &e), 0);
	struct dmarc_dkim_sig sigs[2] = {{"other.example", true}, {"mail.example.com", false}};
	struct dmarc_input in = {.from_domain = "example.com",
	                         .spf_domain = "bounce.example.com",
	                         .spf_pass = true,
	                         .dkim = sigs,
	                         .ndkim = 2,
	                         .sample = 0};

	dmarc_evaluate(d, &in, &f, &r); /* relaxed SPF alignment */
	assert_int_equal(r.status, DMARC_PASS);
	assert_true(r.spf_aligned);
	assert_false(r.dkim_aligned);

	f.rec.aspf_strict = true; /* strict: bounce.example.com is not example.com */
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.status, DMARC_FAIL);
	assert_int_equal(r.disp, DMARC_DISP_REJECT);

	sigs[1].pass = true; /* a relaxed-aligned DKIM pass */
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.status, DMARC_PASS);
	assert_true(r.dkim_aligned);
	f.rec.adkim_strict = true;
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.status, DMARC_FAIL);

	/* outside the pct sample: the next policy down */
	in.sample = 50;
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.policy, DMARC_P_REJECT);
	assert_int_equal(r.disp, DMARC_DISP_QUARANTINE);
	/* found at the org domain: sp */
	in.sample = 0;
	f.at_org = true;
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.policy, DMARC_P_QUARANTINE);
	assert_int_equal(r.disp, DMARC_DISP_QUARANTINE);

	/* an unusable From */
	in.from_domain = NULL;
	in.from_error = "no From field";
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.status, DMARC_PERMERROR);
	assert_int_equal(r.disp, DMARC_DISP_REJECT);
	assert_string_equal(r.reason, "no From field");

	/* no policy: none, nothing asked */
	in.from_domain = "example.com";
	f.status = DMARC_NONE;
	f.reason = "no DMARC record";
	dmarc_evaluate(d, &in, &f, &r);
	assert_int_equal(r.status, DMARC_NONE);
	assert_int_equal(r.disp, DMARC_DISP_NONE);
	assert_string_equal(dmarc_status_name(DMARC_TEMPERROR), "temperror");
	dmarc_free(&d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_dmarc_record),
	    cmocka_unit_test(test_dmarc_org_domain),
	    cmocka_unit_test(test_dmarc_discover),
	    cmocka_unit_test(test_dmarc_evaluate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
