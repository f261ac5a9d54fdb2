/* test_spf.c — SPF (src/dauth/spf_record.c, spf.c): the record parser
 * (table of valid and invalid records), the macro expander (RFC 7208 §7.4's
 * examples, escapes, the 253-octet cut), and the evaluator's limits and
 * contracts with a table resolver: 10 DNS-querying terms, 2 void lookups,
 * 10 MX names, the deadline, no callback from inside spf_check(),
 * spf_cancel(), and a Received-SPF field built from hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dauth/spf.h"
#include "dauth/spf_record.h"
#include "lib/alloc.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* Parser ------------------------------------------------------------- */

struct parse_case {
	const char *rec;
	int ret;
	size_t nterms;
};

static const struct parse_case parse_cases[] = {
    {"v=spf1", 0, 0},
    {"v=spf1 ", 0, 0},
    {"V=SPF1 -ALL", 0, 1},
    {"v=spf1  ip4:192.0.2.0/24   ~all ", 0, 2},
    {"v=spf1 +all -all ~all ?all", 0, 4},
    {"v=spf1 a mx ptr a:example.com mx:example.com/24 a//64 a/24//64 a:x.example/0", 0, 8},
    {"v=spf1 ip4:192.0.2.1 ip4:0.0.0.0/0 ip6:2001:db8::/32 ip6:::1 ip6:::ffff:1.2.3.4", 0, 5},
    {"v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} -all", 0, 3},
    {"v=spf1 redirect=_spf.example.com", 0, 0},
    {"v=spf1 exp=explain._spf.%{d} -all", 0, 1},
    {"v=spf1 foo=bar moo.cow-far_out=man:dog/cat ip4:1.2.3.4", 0, 1},
    {"v=spf1 a:foo:bar/baz.example.com", 0, 1}, /* §7.1: any visible char */
    {"v=spf1 a:%{d}", 0, 1},
    {"v=spf1 a:foo.example-dash", 0, 1},
    {"v=spf1 a:foo.1-2", 0, 1},
    /* errors */
    {"v=spf10", -1, 0},
    {"spf1 -all", -1, 0},
    {"v=spf1 -all:foo", -1, 0},
    {"v=spf1 all/24", -1, 0},
    {"v=spf1 include", -1, 0},
    {"v=spf1 include:", -1, 0},
    {"v=spf1 exists", -1, 0},
    {"v=spf1 a:", -1, 0},
    {"v=spf1 a:com", -1, 0},     /* no "." toplabel */
    {"v=spf1 a:foo.123", -1, 0}, /* numeric toplabel */
    {"v=spf1 a:111.222.33.44", -1, 0},
    {"v=spf1 a:foo.-bar", -1, 0},
    {"v=spf1 a/33", -1, 0},
    {"v=spf1 a//129", -1, 0},
    {"v=spf1 a/024", -1, 0}, /* no leading zeros */
    {"v=spf1 a/", -1, 0},
    {"v=spf1 mx:example.com/24/", -1, 0},
    {"v=spf1 ip4:1.2.3.4/33", -1, 0},
    {"v=spf1 ip4:1.2.3", -1, 0},
    {"v=spf1 ip4:1.2.3.4//32", -1, 0},
    {"v=spf1 ip6:1.2.3.4", -1, 0},
    {"v=spf1 ip6:::1/129", -1, 0},
    {"v=spf1 ip4", -1, 0},
    {"v=spf1 ptr:", -1, 0},
    {"v=spf1 foo", -1, 0}, /* unknown mechanism */
    {"v=spf1 =all", -1, 0},
    {"v=spf1 -all redirect=a.example redirect=b.example", -1, 0},
    {"v=spf1 exp=a.example exp=b.example", -1, 0},
    {"v=spf1 redirect=", -1, 0},
    {"v=spf1 a:%{x}.example.com", -1, 0},
    {"v=spf1 a:%{d0}.example.com", -1, 0},
    {"v=spf1 a:%{c}.example.com", -1, 0}, /* c only in explanations */
    {"v=spf1 a:50%.example.com", -1, 0},
    {"v=spf1 a:%{d.example.com", -1, 0},
    {"v=spf1 foo=%", -1, 0},
    {"v=spf1 -all\t", -1, 0},
    {"v=spf1 a:caf\xc3\xa9.example.com", -1, 0},
};

static void test_parse_table(void **state)
{
	(void)state;
	struct spf_record *rec = xmalloc(sizeof(*rec));
	for (size_t i = 0; i < N_ELEMENTS(parse_cases); i++) {
		const struct parse_case *c = &parse_cases[i];
		const char *err = NULL;
		int ret = spf_record_parse(c->rec, strlen(c->rec), rec, &err);
		if (ret != c->ret || (ret == 0 && rec->nterms != c->nterms))
			fail_msg("case %zu \"%s\": ret %d nterms %zu (%s)", i, c->rec, ret,
			         rec->nterms, err != NULL ? err : "");
		if (ret < 0)
			assert_non_null(err);
	}
	free(rec);
}

static void test_parse_fields(void **state)
{
	(void)state;
	struct spf_record *rec = xmalloc(sizeof(*rec));
	const char *err;
	const char *s = "v=spf1 ~a:mail.example.com/24//64 ?ip6:2001:db8::/48 "
	                "redirect=_spf.example.org exp=why.%{d}";
	assert_int_equal(spf_record_parse(s, strlen(s), rec, &err), 0);
	assert_int_equal(rec->nterms, 2);
	const struct spf_term *a = &rec->terms[0];
	assert_int_equal(a->mech, SPF_MECH_A);
	assert_int_equal(a->qualifier, '~');
	assert_int_equal(a->cidr4, 24);
	assert_int_equal(a->cidr6, 64);
	assert_int_equal(a->spec.len, strlen("mail.example.com"));
	assert_memory_equal(rec->text + a->spec.off, "mail.example.com", a->spec.len);
	const struct spf_term *ip6 = &rec->terms[1];
	assert_int_equal(ip6->mech, SPF_MECH_IP6);
	assert_int_equal(ip6->qualifier, '?');
	assert_int_equal(ip6->cidr6, 48);
	assert_int_equal(ip6->addr[0], 0x20);
	assert_int_equal(ip6->addr[1], 0x01);
	assert_memory_equal(rec->text + rec->redirect.off, "_spf.example.org", rec->redirect.len);
	assert_memory_equal(rec->text + rec->exp.off, "why.%{d}", rec->exp.len);

	/* bounds: too long, too many terms */
	char *big = xmalloc(SPF_RECORD_MAX + 64);
	memset(big, ' ', SPF_RECORD_MAX + 63);
	memcpy(big, "v=spf1", 6);
	big[SPF_RECORD_MAX + 63] = '\0';
	assert_int_equal(spf_record_parse(big, strlen(big), rec, &err), -1);
	size_t k = (size_t)snprintf(big, SPF_RECORD_MAX, "v=spf1");
	for (size_t i = 0; i <= SPF_TERMS_MAX; i++)
		k += (size_t)snprintf(big + k, SPF_RECORD_MAX - k, " a");
	assert_int_equal(spf_record_parse(big, k, rec, &err), -1);
	assert_string_equal(err, "too many terms");
	free(big);
	free(rec);
}

/* Macros -------------------------------------------------------------- */

static const unsigned char ip4_192_0_2_3[4] = {192, 0, 2, 3};
static unsigned char ip6_cb01[16];

static void macro_ctx(struct spf_macro_ctx *ctx, bool v6)
{
	*ctx = (struct spf_macro_ctx){
	    .sender = "strong-bad@email.example.com",
	    .local = "strong-bad",
	    .sender_domain = "email.example.com",
	    .domain = "email.example.com",
	    .ip = v6 ? ip6_cb01 : ip4_192_0_2_3,
	    .iplen = v6 ? 16 : 4,
	    .helo = "mx.example.org",
	    .p = "unknown",
	    .receiver = "mx.example.net",
	    .now = 1700000000,
	};
	inet_pton(AF_INET6, "2001:db8::cb01", ip6_cb01);
}

struct macro_case {
	const char *in;
	bool v6, exp;
	const char *out; /* NULL: error */
};

static const struct macro_case macro_cases[] = {
    /* RFC 7208 §7.4 */
    {"%{s}", false, false, "strong-bad@email.example.com"},
    {"%{o}", false, false, "email.example.com"},
    {"%{d}", false, false, "email.example.com"},
    {"%{d4}", false, false, "email.example.com"},
    {"%{d3}", false, false, "email.example.com"},
    {"%{d2}", false, false, "example.com"},
    {"%{d1}", false, false, "com"},
    {"%{dr}", false, false, "com.example.email"},
    {"%{d2r}", false, false, "example.email"},
    {"%{l}", false, false, "strong-bad"},
    {"%{l-}", false, false, "strong.bad"},
    {"%{lr}", false, false, "strong-bad"},
    {"%{lr-}", false, false, "bad.strong"},
    {"%{l1r-}", false, false, "strong"},
    {"%{ir}.%{v}._spf.%{d2}", false, false, "3.2.0.192.in-addr._spf.example.com"},
    {"%{lr-}.lp._spf.%{d2}", false, false, "bad.strong.lp._spf.example.com"},
    {"%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", false, false,
     "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
    {"%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", false, false,
     "3.2.0.192.in-addr.strong.lp._spf.example.com"},
    {"%{d2}.trusted-domains.example.net", false, false, "example.com.trusted-domains.example.net"},
    {"%{ir}.%{v}._spf.%{d2}", true, false,
     "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"},
    /* escapes, upper case (URL-escaped), h, p, trailing dot */
    {"%%%_%-", false, true, "% %20"},
    {"%{L}", false, false, "strong-bad"},
    {"%{S}", false, false, "strong-bad%40email.example.com"},
    {"%{h}.", false, false, "mx.example.org"},
    {"%{p}.example.com", false, false, "unknown.example.com"},
    {"%{d2+}", false, false, "email.example.com"}, /* no '+' in it: one part */
    {"%{s2r.}", false, false, "example.strong-bad@email"},
    /* explanation-only macros */
    {"%{c} at %{r} on %{t}", false, true, "192.0.2.3 at mx.example.net on 1700000000"},
    {"%{c}", true, true, "2001:db8::cb01"},
    {"%{c}", false, false, NULL},
    {"%{r}", false, false, NULL},
    {"%{t}", false, false, NULL},
    /* malformed */
    {"%", false, false, NULL},
    {"%a", false, false, NULL},
    {"%{", false, false, NULL},
    {"%{d", false, false, NULL},
    {"%{d0}", false, false, NULL},
    {"%{dx}", false, false, NULL},
    {"%{x}", false, false, NULL},
    {"a b", false, false, NULL},
    {"%{d99999999999999999999}", false, false, "email.example.com"},
};

static void test_macro_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(macro_cases); i++) {
		const struct macro_case *c = &macro_cases[i];
		struct spf_macro_ctx ctx;
		char out[SPF_EXPAND_MAX + 1];
		const char *err = NULL;
		macro_ctx(&ctx, c->v6);
		int ret =
		    spf_macro_expand(c->in, strlen(c->in), &ctx, c->exp, out, sizeof(out), &err);
		if (c->out == NULL) {
			if (ret != -1)
				fail_msg("case %zu \"%s\": expanded to \"%s\"", i, c->in, out);
			continue;
		}
		if (ret != 0 || strcmp(out, c->out) != 0)
			fail_msg("case %zu \"%s\": ret %d \"%s\" (%s)", i, c->in, ret,
			         ret == 0 ? out : "", err != NULL ? err : "");
	}
}

/* §7.3: a domain over 253 octets loses labels on the left. */
static void test_macro_truncate(void **state)
{
	(void)state;
	char local[200];
	memset(local, 'a', sizeof(local) - 1);
	local[sizeof(local) - 1] = '\0';
	for (size_t i = 9; i < sizeof(local) - 1; i += 10)
		local[i] = '.';
	struct spf_macro_ctx ctx;
	macro_ctx(&ctx, false);
	ctx.local = local;
	char out[SPF_DOMAIN_MAX + 1];
	const char *err;
	const char *spec = "%{l}.%{l}.example.com";
	assert_int_equal(spf_macro_expand(spec, strlen(spec), &ctx, false, out, sizeof(out), &err),
	                 0);
	assert_true(strlen(out) <= SPF_DOMAIN_MAX);
	assert_true(strlen(out) > SPF_DOMAIN_MAX - 12);
	assert_string_equal(out + strlen(out) - 12, ".example.com");
	assert_true(out[0] == 'a');
	/* the work buffer is bounded too: a huge expansion is an error */
	char huge[4000];
	size_t k = 0;
	while (k + 5 < sizeof(huge)) {
		memcpy(huge + k, "%{s}", 4);
		k += 4;
	}
	huge[k] = '\0';
	assert_int_equal(spf_macro_expand(huge, k, &ctx, false, out, sizeof(out), &err), -1);
	assert_true(spf_macro_uses_p("a.%{p}.b", 8));
	assert_true(spf_macro_uses_p("%{P2r}", 6));
	assert_false(spf_macro_uses_p("%%{p}", 5));
	assert_false(spf_macro_uses_p("%{d}.p", 6));
}

/* Evaluator with a table resolver ---------------------------------------- */

struct zrr {
	const char *name;
	int type;
	const char *val; /* TXT text, A/AAAA address, MX "name", PTR name;
	                  * "TEMPFAIL"; "HANG": never answers */
};

struct zone {
	struct event_base *base;
	const struct zrr *rr;
	size_t n;
	unsigned lookups, cancels, pending;
};

struct spf_lookup {
	struct event *ev;
	struct zone *z;
	char name[300];
	int type;
	dns_raw_cb *cb;
	void *arg;
};

static size_t wire_name(const char *name, unsigned char *out)
{
	size_t k = 0;
	while (*name != '\0') {
		size_t l = strcspn(name, ".");
		out[k++] = (unsigned char)l;
		memcpy(out + k, name, l);
		k += l;
		name += l;
		if (*name == '.')
			name++;
	}
	out[k++] = 0;
	return k;
}

static void zone_answer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct spf_lookup *l = arg;
	struct dns_raw_result res = {.status = DNS_NXDOMAIN, .rrtype = l->type, .error = "nx"};
	static unsigned char bufs[DNS_RAW_MAX][300];
	for (size_t i = 0; i < l->z->n; i++) {
		const struct zrr *rr = &l->z->rr[i];
		if (strcasecmp(rr->name, l->name) != 0)
			continue;
		if (strcmp(rr->val, "TEMPFAIL") == 0 && rr->type == l->type) {
			res.status = DNS_TEMPFAIL;
			break;
		}
		res.status = DNS_OK;
		if (rr->type != l->type || res.n >= DNS_RAW_MAX)
			continue;
		unsigned char *b = bufs[res.n];
		size_t len = 0;
		switch (rr->type) {
		case DNS_RR_A:
			inet_pton(AF_INET, rr->val, b);
			len = 4;
			break;
		case DNS_RR_AAAA:
			inet_pton(AF_INET6, rr->val, b);
			len = 16;
			break;
		case DNS_RR_TXT:
			len = strlen(rr->val);
			b[0] = (unsigned char)len;
			memcpy(b + 1, rr->val, len);
			len++;
			break;
		case DNS_RR_MX:
			b[0] = 0;
			b[1] = 10;
			len = 2 + wire_name(rr->val, b + 2);
			break;
		case DNS_RR_PTR:
			len = wire_name(rr->val, b);
			break;
		}
		res.rdata[res.n] = b;
		res.len[res.n++] = len;
	}
	if (res.status != DNS_OK)
		res.n = 0;
	l->z->pending--;
	dns_raw_cb *cb = l->cb;
	void *cbarg = l->arg;
	event_free(l->ev);
	free(l);
	cb(&res, cbarg);
}

static struct spf_lookup *zone_lookup(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
                                      void *arg)
{
	struct zone *z = ctx;
	struct spf_lookup *l = xcalloc(1, sizeof(*l));
	z->lookups++;
	z->pending++;
	l->z = z;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->type = rrtype;
	l->cb = cb;
	l->arg = arg;
	l->ev = evtimer_new(z->base, zone_answer, l);
	bool hang = false, slow = false;
	for (size_t i = 0; i < z->n; i++) {
		if (strcasecmp(z->rr[i].name, name) == 0 && strcmp(z->rr[i].val, "HANG") == 0)
			hang = true;
		if (strcasecmp(z->rr[i].name, name) == 0 && strcmp(z->rr[i].val, "SLOW") == 0)
			slow = true;
	}
	if (!hang) {
		struct timeval tv = {0, slow ? 300000 : 0};
		evtimer_add(l->ev, &tv);
	}
	return l;
}

static void zone_cancel(void *ctx, struct spf_lookup *l)
{
	struct zone *z = ctx;
	z->cancels++;
	z->pending--;
	event_free(l->ev);
	free(l);
}

struct run {
	bool done;
	enum spf_result result;
	char reason[256], explanation[SPF_EXPAND_MAX + 1], mechanism[128], identity[16];
	char header[2048];
	unsigned lookups;
	const struct spf_request *req;
};

static void run_done(const struct spf_outcome *o, void *arg)
{
	struct run *r = arg;
	r->done = true;
	r->result = o->result;
	r->lookups = o->lookups;
	snprintf(r->reason, sizeof(r->reason), "%s", o->reason);
	snprintf(r->explanation, sizeof(r->explanation), "%s", o->explanation);
	snprintf(r->mechanism, sizeof(r->mechanism), "%s", o->mechanism);
	snprintf(r->identity, sizeof(r->identity), "%s", o->identity);
	assert_true(spf_received_header(o, r->req, "mx.example.net", r->header, sizeof(r->header)) >
	            0);
}

static void check(const struct zrr *rr, size_t n, const char *ip, const char *sender,
                  const char *helo, enum spf_identity id, struct run *r)
{
	struct event_base *base = event_base_new();
	struct zone z = {base, rr, n, 0, 0, 0};
	struct spf_resolver res = {zone_lookup, zone_cancel, &z};
	struct sockaddr_storage ss = {0};
	if (inet_pton(AF_INET, ip, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	struct spf_request req = {.client = (struct sockaddr *)&ss,
	                          .sender = sender,
	                          .helo = helo,
	                          .hostname = "mx.example.net",
	                          .identity = id,
	                          .timeout_ms = 200};
	memset(r, 0, sizeof(*r));
	r->req = &req;
	spf_check(&res, base, &req, run_done, r);
	assert_false(r->done); /* never from inside spf_check() */
	while (!r->done)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(z.pending, 0);
	event_base_free(base);
}

static void test_eval_basic(void **state)
{
	(void)state;
	static const struct zrr zone[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 ip4:192.0.2.0/24 a:mail.example.com -all"},
	    {"example.com", DNS_RR_TXT, "google-site-verification=xyz"},
	    {"mail.example.com", DNS_RR_A, "198.51.100.7"},
	    {"helo.example.org", DNS_RR_TXT, "v=spf1 mx ~all exp=why.example.org"},
	    {"helo.example.org", DNS_RR_MX, "mx1.example.org"},
	    {"mx1.example.org", DNS_RR_AAAA, "2001:db8::25"},
	    {"why.example.org", DNS_RR_TXT, "%{i} is not %{d}'s"},
	};
	struct run r;
	check(zone, N_ELEMENTS(zone), "192.0.2.77", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PASS);
	assert_string_equal(r.mechanism, "ip4:192.0.2.0/24");
	assert_string_equal(r.reason, "mechanism ip4:192.0.2.0/24 matched");
	assert_non_null(strstr(r.header, "Received-SPF: pass (mx.example.net: domain of "
	                                 "a@example.com designates\r\n\t192.0.2.77 as permitted "
	                                 "sender) client-ip=192.0.2.77;"));
	assert_non_null(strstr(r.header, "mechanism=ip4:192.0.2.0/24;\r\n"));
	check(zone, N_ELEMENTS(zone), "198.51.100.7", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PASS);
	assert_int_equal(r.lookups, 1);
	check(zone, N_ELEMENTS(zone), "198.51.100.8", "a@EXAMPLE.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL);
	assert_string_equal(r.explanation, SPF_EXPLANATION_DEFAULT);
	/* null sender: postmaster@HELO; and the HELO identity */
	check(zone, N_ELEMENTS(zone), "2001:db8::25", "", "helo.example.org", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PASS);
	assert_string_equal(r.identity, "mailfrom");
	check(zone, N_ELEMENTS(zone), "2001:db8::26", "a@example.com", "helo.example.org",
	      SPF_ID_HELO, &r);
	assert_int_equal(r.result, SPF_SOFTFAIL);
	assert_string_equal(r.identity, "helo");
	/* v4-mapped client is IPv4 */
	check(zone, N_ELEMENTS(zone), "::ffff:192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM,
	      &r);
	assert_int_equal(r.result, SPF_PASS);
	/* no record, not a domain */
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@example.net", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_NONE);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@[192.0.2.1]", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_NONE);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "", "localhost", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_NONE);
}

static void test_eval_exp(void **state)
{
	(void)state;
	static const struct zrr zone[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 -all exp=why.example.com"},
	    {"why.example.com", DNS_RR_TXT, "%{i} may not send for %{d} (%{r})"},
	    {"slow.example.com", DNS_RR_TXT, "v=spf1 -all exp=hang.example.com"},
	    {"hang.example.com", DNS_RR_TXT, "HANG"},
	    {"who.example.com", DNS_RR_TXT,
	     "v=spf1 exists:%{l}.example.com -all exp=e.example.com"},
	    {"e.example.com", DNS_RR_TXT, "%{l} is not allowed"},
	};
	struct run r;
	check(zone, N_ELEMENTS(zone), "192.0.2.9", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL);
	assert_string_equal(r.explanation,
	                    "192.0.2.9 may not send for example.com (mx.example.net)");
	/* the client's octets come out printable */
	check(zone, N_ELEMENTS(zone), "192.0.2.9", "\x01\r\n\xc3\xa9@example.com", "x",
	      SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL);
	assert_string_equal(r.explanation,
	                    "192.0.2.9 may not send for example.com (mx.example.net)");
	check(zone, N_ELEMENTS(zone), "192.0.2.9", "\x01\r\n\xc3\xa9@who.example.com", "x",
	      SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL); /* the exists: name is void, not looked up */
	assert_string_equal(r.explanation, "???\?? is not allowed");
	/* the deadline during the exp= lookup keeps the fail, with the default */
	check(zone, N_ELEMENTS(zone), "192.0.2.9", "a@slow.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL);
	assert_string_equal(r.explanation, SPF_EXPLANATION_DEFAULT);
}

/* §4.6.4: the 11th DNS-querying term is a permerror, and so is the third
 * void lookup. */
static void test_eval_limits(void **state)
{
	(void)state;
	static const struct zrr chain[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 include:i1.example.com -all"},
	    {"i1.example.com", DNS_RR_TXT, "v=spf1 include:i2.example.com"},
	    {"i2.example.com", DNS_RR_TXT, "v=spf1 include:i3.example.com"},
	    {"i3.example.com", DNS_RR_TXT, "v=spf1 a a a a a a a"},
	    {"i3.example.com", DNS_RR_A, "203.0.113.1"},
	};
	struct run r;
	check(chain, N_ELEMENTS(chain), "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL); /* exactly 10 */
	assert_int_equal(r.lookups, 10);
	static const struct zrr chain11[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 include:i1.example.com -all"},
	    {"i1.example.com", DNS_RR_TXT, "v=spf1 include:i2.example.com"},
	    {"i2.example.com", DNS_RR_TXT, "v=spf1 include:i3.example.com"},
	    {"i3.example.com", DNS_RR_TXT, "v=spf1 a a a a a a a a"},
	    {"i3.example.com", DNS_RR_A, "203.0.113.1"},
	};
	check(chain11, N_ELEMENTS(chain11), "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	assert_string_equal(r.reason, "more than 10 DNS lookups");
	assert_non_null(strstr(r.header, "problem="));
	static const struct zrr loop[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 include:example.com"},
	};
	check(loop, N_ELEMENTS(loop), "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	static const struct zrr voids[] = {
	    {"example.com", DNS_RR_TXT,
	     "v=spf1 a:n1.example.com mx:n2.example.com exists:n3.example.com -all"},
	};
	check(voids, N_ELEMENTS(voids), "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	assert_string_equal(r.reason, "more than 2 void DNS lookups");
	static const struct zrr mx11[] = {
	    {"example.com", DNS_RR_TXT, "v=spf1 mx -all"},
	    {"example.com", DNS_RR_MX, "m1.example.com"},
	    {"example.com", DNS_RR_MX, "m2.example.com"},
	    {"example.com", DNS_RR_MX, "m3.example.com"},
	    {"example.com", DNS_RR_MX, "m4.example.com"},
	    {"example.com", DNS_RR_MX, "m5.example.com"},
	    {"example.com", DNS_RR_MX, "m6.example.com"},
	    {"example.com", DNS_RR_MX, "m7.example.com"},
	    {"example.com", DNS_RR_MX, "m8.example.com"},
	    {"example.com", DNS_RR_MX, "m9.example.com"},
	    {"example.com", DNS_RR_MX, "m10.example.com"},
	    {"example.com", DNS_RR_MX, "m11.example.com"},
	};
	check(mx11, N_ELEMENTS(mx11), "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	check(mx11, N_ELEMENTS(mx11) - 1, "192.0.2.1", "a@example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_FAIL);
}

static void test_eval_errors(void **state)
{
	(void)state;
	static const struct zrr zone[] = {
	    {"tmp.example.com", DNS_RR_TXT, "TEMPFAIL"},
	    {"hang.example.com", DNS_RR_TXT, "HANG"},
	    {"two.example.com", DNS_RR_TXT, "v=spf1 -all"},
	    {"two.example.com", DNS_RR_TXT, "v=spf1 +all"},
	    {"bad.example.com", DNS_RR_TXT, "v=spf1 ip4:1.2.3.4/40 -all"},
	    {"inc.example.com", DNS_RR_TXT, "v=spf1 include:none.example.com -all"},
	    {"none.example.com", DNS_RR_A, "192.0.2.1"},
	    {"atmp.example.com", DNS_RR_TXT, "v=spf1 a:t.example.com -all"},
	    {"t.example.com", DNS_RR_A, "TEMPFAIL"},
	    {"rd.example.com", DNS_RR_TXT, "v=spf1 redirect=none.example.com"},
	};
	struct run r;
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@tmp.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_TEMPERROR);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@hang.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_TEMPERROR);
	assert_string_equal(r.reason, "SPF check timed out");
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@two.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@bad.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@inc.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@atmp.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_TEMPERROR);
	check(zone, N_ELEMENTS(zone), "192.0.2.1", "a@rd.example.com", "x", SPF_ID_MAILFROM, &r);
	assert_int_equal(r.result, SPF_PERMERROR);
}

static void cancel_done(const struct spf_outcome *o, void *arg)
{
	(void)o;
	(void)arg;
	fail_msg("callback after spf_cancel()");
}

static void test_cancel(void **state)
{
	(void)state;
	static const struct zrr zone[] = {{"example.com", DNS_RR_TXT, "HANG"}};
	struct event_base *base = event_base_new();
	struct zone z = {base, zone, 1, 0, 0, 0};
	struct spf_resolver res = {zone_lookup, zone_cancel, &z};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct spf_request req = {
	    .client = (struct sockaddr *)&sin, .sender = "a@example.com", .timeout_ms = 50};
	/* before the first lookup started */
	struct spf_query *q = spf_check(&res, base, &req, cancel_done, NULL);
	spf_cancel(&q);
	assert_null(q);
	spf_cancel(&q);
	/* with a lookup pending */
	q = spf_check(&res, base, &req, cancel_done, NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(z.pending, 1);
	spf_cancel(&q);
	assert_int_equal(z.pending, 0);
	assert_int_equal(z.cancels, 1);
	struct timeval tv = {0, 100000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	event_base_free(base);
}

/* A resolver that gives no handle (and cannot cancel): the query that
 * times out waits for the late answer, unseen, and is freed then. */
static struct spf_lookup *nohandle_lookup(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
                                          void *arg)
{
	(void)zone_lookup(ctx, name, rrtype, cb, arg);
	return NULL;
}

static void test_uncancellable(void **state)
{
	(void)state;
	static const struct zrr zone[] = {{"example.com", DNS_RR_TXT, "SLOW"}};
	struct event_base *base = event_base_new();
	struct zone z = {base, zone, 1, 0, 0, 0};
	struct spf_resolver res = {nohandle_lookup, NULL, &z};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	struct spf_request req = {
	    .client = (struct sockaddr *)&sin, .sender = "a@example.com", .timeout_ms = 50};
	struct run r;
	memset(&r, 0, sizeof(r));
	r.req = &req;
	spf_check(&res, base, &req, run_done, &r);
	while (!r.done)
		event_base_loop(base, EVLOOP_ONCE);
	assert_int_equal(r.result, SPF_TEMPERROR);
	assert_int_equal(z.pending, 1);
	while (z.pending > 0) /* the late answer frees the query (LeakSanitizer) */
		event_base_loop(base, EVLOOP_ONCE);
	/* and spf_cancel() of a query whose lookup cannot be cancelled */
	struct spf_query *q = spf_check(&res, base, &req, cancel_done, NULL);
	event_base_loop(base, EVLOOP_NONBLOCK);
	assert_int_equal(z.pending, 1);
	spf_cancel(&q);
	while (z.pending > 0)
		event_base_loop(base, EVLOOP_ONCE);
	event_base_free(base);
}

/* The trace field from hostile input: no CR or LF but the folds, quotes
 * escaped, lines within 78 columns where there is a place to fold. */
static void test_received_header(void **state)
{
	(void)state;
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	struct spf_request req = {.client = (struct sockaddr *)&s6,
	                          .sender = "\"evil\\\"\r\nX-Injected: yes\"@example.com",
	                          .helo = "a(b)c\r\nd"};
	struct spf_outcome o = {.result = SPF_FAIL,
	                        .identity = "mailfrom",
	                        .sender = req.sender,
	                        .domain = "example.com",
	                        .mechanism = "-all",
	                        .explanation = "",
	                        .reason = "x"};
	char out[1024];
	int n = spf_received_header(&o, &req, "mx.example.net", out, sizeof(out));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(out));
	assert_null(strstr(out, "\r\nX-Injected"));
	assert_non_null(strstr(out, "client-ip=2001:db8::1;"));
	assert_non_null(strstr(out, "mechanism=\"-all\";") ? "" : strstr(out, "mechanism=-all;"));
	assert_non_null(
	    strstr(out, "envelope-from=\"\\\"evil\\\\\\\"??X-Injected: yes\\\"@example.com\";"));
	assert_non_null(strstr(out, "helo=\"a(b)c??d\";"));
	for (const char *p = out; *p != '\0'; p++) {
		if (*p == '\r') {
			assert_true(p[1] == '\n');
			assert_true(p[2] == '\t' || p[2] == '\0');
		}
		if (*p == '\n')
			assert_true(p > out && p[-1] == '\r');
	}
	assert_int_equal(spf_received_header(&o, &req, "mx.example.net", out, 40), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_table),     cmocka_unit_test(test_parse_fields),
	    cmocka_unit_test(test_macro_table),     cmocka_unit_test(test_macro_truncate),
	    cmocka_unit_test(test_eval_basic),      cmocka_unit_test(test_eval_exp),
	    cmocka_unit_test(test_eval_limits),     cmocka_unit_test(test_eval_errors),
	    cmocka_unit_test(test_cancel),          cmocka_unit_test(test_uncancellable),
	    cmocka_unit_test(test_received_header),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
