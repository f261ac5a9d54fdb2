/* spf.c — check_host() of RFC 7208 (§4), asynchronous on a libevent loop.
 *
 * Runs in smtpd (and `hikyaku spf check`). One query evaluates one identity:
 * a stack of frames (the checked domain, then one per include:), each with
 * its parsed record and the index of its next term; redirect= replaces the
 * frame's record (§6.1). At most one DNS lookup is pending at a time; its
 * answer continues the evaluation in spf_run(). Limits (§4.6.4): 10
 * DNS-querying terms (include, a, mx, ptr, exists, redirect), 2 void
 * lookups, 10 MX names (more is permerror) and 10 PTR names (the rest are
 * ignored), plus an overall deadline that ends in temperror.
 *
 * Hostile: every DNS answer, the sender and the HELO name. */
#include "dauth/spf.h"
#include "dauth/spf_record.h"
#include "lib/alloc.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPF_LOOKUP_LIMIT 10
#define SPF_VOID_LIMIT 2
#define SPF_NAMES_LIMIT 10
#define SPF_DEPTH_MAX (SPF_LOOKUP_LIMIT + 2)
#define SPF_SENDER_MAX 320 /* RFC 5321 §4.5.3.1.3: a path is at most 256 octets */
#define SPF_NAME_BUF (SPF_DOMAIN_MAX + 1)

enum spf_step {
	SPF_STEP_NONE,
	SPF_STEP_RECORD,
	SPF_STEP_A,
	SPF_STEP_MX,
	SPF_STEP_MX_ADDR,
	SPF_STEP_PTR,
	SPF_STEP_PTR_ADDR,
	SPF_STEP_EXISTS,
	SPF_STEP_EXP,
};

/* What to do once the client's names are known (ptr, %{p}). */
enum spf_resume {
	SPF_RESUME_RUN,      /* re-enter the term (or redirect) that needed %{p} */
	SPF_RESUME_PTR_MECH, /* judge the ptr mechanism */
	SPF_RESUME_EXP,      /* expand exp= */
	SPF_RESUME_EXP_TEXT, /* expand the explanation text */
};

struct spf_frame {
	struct spf_record rec;
	char domain[SPF_NAME_BUF];
	size_t next;     /* index of the next term; the current one is next - 1 */
	bool redirected; /* rec came from redirect=: no record is permerror */
};

struct spf_query {
	struct spf_resolver res;
	struct event_base *base;
	spf_done_fn *cb;
	void *arg;
	struct event *deadline;
	struct event *kick;
	struct spf_lookup *pending;
	bool inflight; /* a lookup's callback is owed, pending or not */
	bool zombie;   /* ended, but an uncancellable lookup's answer is owed */
	enum spf_step step;

	unsigned char ip[16];
	size_t iplen;
	char sender[SPF_SENDER_MAX + 1];
	char local[SPF_SENDER_MAX + 1];
	char sender_domain[SPF_SENDER_MAX + 1];
	char helo[SPF_NAME_BUF];
	char receiver[SPF_NAME_BUF];
	const char *identity;
	time_t now;
	char default_exp[SPF_EXPAND_MAX + 1];
	spf_trace_fn *trace;
	void *trace_arg;

	struct spf_frame *frames[SPF_DEPTH_MAX];
	size_t depth;
	unsigned lookups, voids;

	char target[SPF_NAME_BUF];                 /* the current term's domain */
	char names[SPF_NAMES_LIMIT][SPF_NAME_BUF]; /* MX or PTR names */
	size_t nnames, iname;

	bool ptr_done;
	enum spf_resume resume;
	char validated[SPF_NAMES_LIMIT][SPF_NAME_BUF];
	size_t nvalidated;

	enum spf_result result;
	bool exp_tried;
	char mechanism[128];
	char reason[256];
	char explanation[SPF_EXPAND_MAX + 1];
	char exp_text[SPF_EXPAND_MAX + 1];
};

static const char *const spf_result_names[] = {"none",     "neutral",   "pass",     "fail",
                                               "softfail", "temperror", "permerror"};

const char *spf_result_name(enum spf_result r)
{
	return (unsigned)r < sizeof(spf_result_names) / sizeof(spf_result_names[0])
	           ? spf_result_names[r]
	           : "?";
}

static struct spf_lookup *spf_dns_lookup(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
                                         void *arg)
{
	return (struct spf_lookup *)dns_resolve_raw(ctx, name, rrtype, cb, arg);
}

static void spf_dns_cancel(void *ctx, struct spf_lookup *l)
{
	(void)ctx;
	dns_cancel((struct dns_query *)l);
}

void spf_resolver_dns(struct spf_resolver *r, struct dns *dns)
{
	r->lookup = spf_dns_lookup;
	r->cancel = spf_dns_cancel;
	r->ctx = dns;
}

__attribute__((format(printf, 2, 3))) static void spf_trace(struct spf_query *q, const char *fmt,
                                                            ...)
{
	if (q->trace == NULL)
		return;
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	q->trace(line, q->trace_arg);
}

static const char *spf_rrtype_name(int t)
{
	switch (t) {
	case DNS_RR_A:
		return "A";
	case DNS_RR_AAAA:
		return "AAAA";
	case DNS_RR_MX:
		return "MX";
	case DNS_RR_PTR:
		return "PTR";
	case DNS_RR_TXT:
		return "TXT";
	default:
		return "?";
	}
}

static void spf_free(struct spf_query **qp)
{
	struct spf_query *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	if (q->inflight && q->pending != NULL && q->res.cancel != NULL) {
		q->res.cancel(q->res.ctx, q->pending);
		q->inflight = false;
	}
	q->pending = NULL;
	if (q->inflight) {
		/* the answer will come: spf_on_answer() frees the query then */
		q->zombie = true;
		if (q->deadline != NULL)
			event_del(q->deadline);
		if (q->kick != NULL)
			event_del(q->kick);
		return;
	}
	if (q->deadline != NULL)
		event_free(q->deadline);
	if (q->kick != NULL)
		event_free(q->kick);
	for (size_t i = 0; i < q->depth; i++)
		free(q->frames[i]);
	free(q);
}

void spf_cancel(struct spf_query **q)
{
	spf_free(q);
}

/* Whatever reached a text from the client or the DNS becomes '?'. */
static void spf_printable(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

static void spf_deliver(struct spf_query *q)
{
	spf_printable(q->reason);
	spf_printable(q->explanation);
	struct spf_outcome o = {
	    .result = q->result,
	    .identity = q->identity,
	    .sender = q->sender,
	    .domain = q->sender_domain,
	    .mechanism = q->mechanism,
	    .explanation = q->result == SPF_FAIL ? q->explanation : "",
	    .reason = q->reason,
	    .lookups = q->lookups,
	    .void_lookups = q->voids,
	};
	spf_trace(q, "result %s (%s)", spf_result_name(q->result), q->reason);
	spf_done_fn *cb = q->cb;
	void *arg = q->arg;
	cb(&o, arg);
	spf_free(&q);
}

static void spf_on_answer(const struct dns_raw_result *r, void *arg);

static void spf_lookup(struct spf_query *q, const char *name, int rrtype, enum spf_step step)
{
	q->step = step;
	spf_trace(q, "lookup %s %s", spf_rrtype_name(rrtype), name);
	q->inflight = true;
	q->pending = q->res.lookup(q->res.ctx, name, rrtype, spf_on_answer, q);
}

static void spf_exp_start(struct spf_query *q);
static void spf_exp_expand(struct spf_query *q);

/* A wire-format name (PTR, MX target) to text: 1, or 0 for the root and
 * -1 for a malformed one. Unlike dns_wire_name() any visible ASCII is kept
 * (the test suite has "foo:bar/baz.example.com"); the resolver judges it
 * when it is looked up. */
static int spf_wire_name(const unsigned char *p, size_t n, char out[SPF_NAME_BUF])
{
	size_t i = 0, k = 0;
	while (i < n && p[i] != 0) {
		size_t l = p[i++];
		if (l > 63 || i + l > n || k + l + 1 > SPF_DOMAIN_MAX + 1)
			return -1;
		if (k > 0)
			out[k++] = '.';
		for (size_t j = 0; j < l; j++) {
			unsigned char c = p[i + j];
			if (c <= 0x20 || c >= 0x7f || c == '.')
				return -1;
			out[k++] = (char)c;
		}
		i += l;
	}
	if (i >= n || k > SPF_DOMAIN_MAX)
		return -1;
	out[k] = '\0';
	return k > 0 ? 1 : 0;
}

/* The end of the evaluation: result with a reason. For fail, exp= is
 * looked up first (§6.2). Always called from the loop. */
__attribute__((format(printf, 3, 4))) static void spf_finish(struct spf_query *q, enum spf_result r,
                                                             const char *fmt, ...)
{
	q->result = r;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(q->reason, sizeof(q->reason), fmt, ap);
	va_end(ap);
	snprintf(q->explanation, sizeof(q->explanation), "%s", q->default_exp);
	if (r == SPF_FAIL && q->depth > 0 && q->frames[0]->rec.exp.len > 0) {
		spf_exp_start(q);
		return;
	}
	spf_deliver(q);
}

/* A name that can be looked up (§4.3): labels of 1..63 octets, at most 253
 * octets, and at least two labels for the checked domain itself. */
static bool spf_name_valid(const char *d, bool multi_label)
{
	size_t len = strlen(d);
	if (len == 0 || len > SPF_DOMAIN_MAX)
		return false;
	size_t label = 0, labels = 1;
	for (size_t i = 0; i < len; i++) {
		char c = d[i];
		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			if (i + 1 < len)
				labels++;
			continue;
		}
		/* control octets and non-ASCII (from a macro's %{l}, say) name
		 * nothing that can exist */
		if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
			return false;
		if (++label > 63)
			return false;
	}
	return !multi_label || labels >= 2;
}

static void spf_macro_ctx(struct spf_query *q, const char *domain, struct spf_macro_ctx *ctx);

/* Expand a domain-spec of the current frame (or the current domain when
 * absent) into q->target. -1 has finished the query. */
static int spf_expand_target(struct spf_query *q, const char *rtext, struct spf_span spec)
{
	struct spf_frame *f = q->frames[q->depth - 1];
	if (spec.len == 0) {
		snprintf(q->target, sizeof(q->target), "%s", f->domain);
		return 0;
	}
	struct spf_macro_ctx ctx;
	const char *err;
	spf_macro_ctx(q, f->domain, &ctx);
	if (spf_macro_expand(rtext + spec.off, spec.len, &ctx, false, q->target, sizeof(q->target),
	                     &err) < 0) {
		spf_finish(q, SPF_PERMERROR, "%s in \"%.*s\"", err, (int)spec.len,
		           rtext + spec.off);
		return -1;
	}
	return 0;
}

/* The validated name for %{p} (§7.3): one that is the domain or under it,
 * else any, else "unknown". */
static const char *spf_p_value(const struct spf_query *q, const char *domain)
{
	size_t dlen = strlen(domain);
	for (size_t i = 0; i < q->nvalidated; i++) {
		const char *n = q->validated[i];
		size_t nlen = strlen(n);
		if (strcasecmp(n, domain) == 0 || (nlen > dlen && n[nlen - dlen - 1] == '.' &&
		                                   strcasecmp(n + nlen - dlen, domain) == 0))
			return n;
	}
	return q->nvalidated > 0 ? q->validated[0] : "unknown";
}

static void spf_macro_ctx(struct spf_query *q, const char *domain, struct spf_macro_ctx *ctx)
{
	*ctx = (struct spf_macro_ctx){
	    .sender = q->sender,
	    .local = q->local,
	    .sender_domain = q->sender_domain,
	    .domain = domain,
	    .ip = q->ip,
	    .iplen = q->iplen,
	    .helo = q->helo,
	    .p = q->ptr_done ? spf_p_value(q, domain) : NULL,
	    .receiver = q->receiver,
	    .now = q->now,
	};
}

static void spf_ptr_start(struct spf_query *q, enum spf_resume resume)
{
	char name[80];
	size_t k = 0;
	static const char hex[] = "0123456789abcdef";
	if (q->iplen == 4) {
		snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa", q->ip[3], q->ip[2],
		         q->ip[1], q->ip[0]);
	} else {
		for (size_t i = 16; i-- > 0;) {
			name[k++] = hex[q->ip[i] & 15];
			name[k++] = '.';
			name[k++] = hex[q->ip[i] >> 4];
			name[k++] = '.';
		}
		snprintf(name + k, sizeof(name) - k, "ip6.arpa");
	}
	q->resume = resume;
	q->nnames = q->iname = 0;
	spf_lookup(q, name, DNS_RR_PTR, SPF_STEP_PTR);
}

/* Whether a domain-spec needs %{p} that is not known yet: then the PTR
 * names are looked up first and the caller is resumed. */
static bool spf_need_p(struct spf_query *q, const char *rtext, struct spf_span spec,
                       enum spf_resume resume)
{
	if (q->ptr_done || spec.len == 0 || !spf_macro_uses_p(rtext + spec.off, spec.len))
		return false;
	spf_ptr_start(q, resume);
	return true;
}

static bool spf_addr_match(const struct spf_query *q, const unsigned char *a, size_t alen,
                           int cidr4, int cidr6)
{
	if (alen != q->iplen)
		return false;
	int bits = alen == 4 ? cidr4 : cidr6;
	size_t full = (size_t)bits / 8;
	if (memcmp(a, q->ip, full) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
	return (a[full] & mask) == (q->ip[full] & mask);
}

static void spf_run(struct spf_query *q);

static struct spf_frame *spf_top(struct spf_query *q)
{
	return q->frames[q->depth - 1];
}

static const struct spf_term *spf_current_term(struct spf_query *q)
{
	struct spf_frame *f = spf_top(q);
	return &f->rec.terms[f->next - 1];
}

/* The frame's record has a result (a mechanism matched, or neutral by
 * default): the query's result at the top, else the include's (§5.2). */
static void spf_frame_result(struct spf_query *q, enum spf_result r, const char *mech)
{
	if (q->depth == 1) {
		snprintf(q->mechanism, sizeof(q->mechanism), "%s", mech);
		if (strcmp(mech, "default") == 0)
			spf_finish(q, r, "no mechanism matched, default %s", spf_result_name(r));
		else
			spf_finish(q, r, "mechanism %s matched", mech);
		return;
	}
	spf_trace(q, "include of %s: %s", spf_top(q)->domain, spf_result_name(r));
	free(q->frames[--q->depth]);
	q->frames[q->depth] = NULL;
	if (r == SPF_PASS) {
		const struct spf_term *t = spf_current_term(q);
		char text[128];
		struct spf_frame *f = spf_top(q);
		snprintf(text, sizeof(text), "%.*s", (int)t->text.len, f->rec.text + t->text.off);
		static const char quals[] = "+-~?";
		static const enum spf_result results[] = {SPF_PASS, SPF_FAIL, SPF_SOFTFAIL,
		                                          SPF_NEUTRAL};
		spf_frame_result(q, results[strchr(quals, t->qualifier) - quals], text);
		return;
	}
	spf_run(q);
}

static void spf_term_matched(struct spf_query *q, bool matched)
{
	const struct spf_term *t = spf_current_term(q);
	struct spf_frame *f = spf_top(q);
	spf_trace(q, "%.*s: %s", (int)t->text.len, f->rec.text + t->text.off,
	          matched ? "match" : "no match");
	if (!matched) {
		spf_run(q);
		return;
	}
	static const char quals[] = "+-~?";
	static const enum spf_result results[] = {SPF_PASS, SPF_FAIL, SPF_SOFTFAIL, SPF_NEUTRAL};
	char text[128];
	snprintf(text, sizeof(text), "%.*s", (int)t->text.len, f->rec.text + t->text.off);
	spf_frame_result(q, results[strchr(quals, t->qualifier) - quals], text);
}

/* NXDOMAIN or an empty answer of a mechanism's lookup (§4.6.4). -1 has
 * finished the query. */
static int spf_void(struct spf_query *q)
{
	if (++q->voids > SPF_VOID_LIMIT) {
		spf_finish(q, SPF_PERMERROR, "more than %d void DNS lookups", SPF_VOID_LIMIT);
		return -1;
	}
	return 0;
}

static void spf_fetch_record(struct spf_query *q, const char *domain)
{
	struct spf_frame *f = spf_top(q);
	snprintf(f->domain, sizeof(f->domain), "%s", domain);
	f->next = 0;
	f->rec.nterms = 0;
	f->rec.redirect.len = f->rec.exp.len = 0;
	spf_lookup(q, f->domain, DNS_RR_TXT, SPF_STEP_RECORD);
}

/* The record has no more terms: redirect= or the default, neutral (§4.7). */
static void spf_end_of_record(struct spf_query *q)
{
	struct spf_frame *f = spf_top(q);
	struct spf_span rd = f->rec.redirect;
	if (rd.len == 0) {
		spf_frame_result(q, SPF_NEUTRAL, "default");
		return;
	}
	if (spf_need_p(q, f->rec.text, rd, SPF_RESUME_RUN))
		return;
	if (++q->lookups > SPF_LOOKUP_LIMIT) {
		spf_finish(q, SPF_PERMERROR, "more than %d DNS lookups", SPF_LOOKUP_LIMIT);
		return;
	}
	if (spf_expand_target(q, f->rec.text, rd) < 0)
		return;
	spf_trace(q, "redirect=%s", q->target);
	if (!spf_name_valid(q->target, false)) {
		spf_finish(q, SPF_PERMERROR, "redirect to an invalid domain");
		return;
	}
	f->redirected = true;
	char target[SPF_NAME_BUF];
	memcpy(target, q->target, sizeof(target));
	spf_fetch_record(q, target);
}

static void spf_ptr_match(struct spf_query *q);

/* Start the current term (f->next - 1); it ends in spf_term_matched() or
 * spf_finish(), now or from a lookup's answer. */
static void spf_term_start(struct spf_query *q, const struct spf_term *t)
{
	struct spf_frame *f = spf_top(q);
	bool v4 = q->iplen == 4;
	switch (t->mech) {
	case SPF_MECH_ALL:
		spf_term_matched(q, true);
		return;
	case SPF_MECH_IP4:
	case SPF_MECH_IP6:
		spf_term_matched(q,
		                 (t->mech == SPF_MECH_IP4) == v4 &&
		                     spf_addr_match(q, t->addr, v4 ? 4 : 16, t->cidr4, t->cidr6));
		return;
	default:
		break;
	}
	if (++q->lookups > SPF_LOOKUP_LIMIT) {
		spf_finish(q, SPF_PERMERROR, "more than %d DNS lookups", SPF_LOOKUP_LIMIT);
		return;
	}
	if (spf_expand_target(q, f->rec.text, t->spec) < 0)
		return;
	if (!spf_name_valid(q->target, false)) {
		/* a name that cannot exist finds nothing: a void lookup */
		spf_trace(q, "invalid name %s", q->target);
		if (t->mech == SPF_MECH_INCLUDE) {
			spf_finish(q, SPF_PERMERROR, "include of an invalid domain");
			return;
		}
		if (spf_void(q) == 0)
			spf_term_matched(q, false);
		return;
	}
	switch (t->mech) {
	case SPF_MECH_INCLUDE:
		if (q->depth >= SPF_DEPTH_MAX) {
			spf_finish(q, SPF_PERMERROR, "includes nested too deep");
			return;
		}
		q->frames[q->depth++] = xcalloc(1, sizeof(struct spf_frame));
		spf_fetch_record(q, q->target);
		return;
	case SPF_MECH_A:
		spf_lookup(q, q->target, v4 ? DNS_RR_A : DNS_RR_AAAA, SPF_STEP_A);
		return;
	case SPF_MECH_MX:
		spf_lookup(q, q->target, DNS_RR_MX, SPF_STEP_MX);
		return;
	case SPF_MECH_EXISTS:
		spf_lookup(q, q->target, DNS_RR_A, SPF_STEP_EXISTS); /* A even for IPv6 (§5.7) */
		return;
	case SPF_MECH_PTR:
		if (!q->ptr_done) {
			spf_ptr_start(q, SPF_RESUME_PTR_MECH);
			return;
		}
		spf_ptr_match(q);
		return;
	default:
		return;
	}
}

/* §5.5: a validated name of the client that is the target or under it. */
static void spf_ptr_match(struct spf_query *q)
{
	size_t tlen = strlen(q->target);
	for (size_t i = 0; i < q->nvalidated; i++) {
		const char *n = q->validated[i];
		size_t nlen = strlen(n);
		if (strcasecmp(n, q->target) == 0 ||
		    (nlen > tlen && n[nlen - tlen - 1] == '.' &&
		     strcasecmp(n + nlen - tlen, q->target) == 0)) {
			spf_term_matched(q, true);
			return;
		}
	}
	spf_term_matched(q, false);
}

/* Evaluate the top frame's next term, or its end. */
static void spf_run(struct spf_query *q)
{
	struct spf_frame *f = spf_top(q);
	if (f->next >= f->rec.nterms) {
		spf_end_of_record(q);
		return;
	}
	const struct spf_term *t = &f->rec.terms[f->next];
	if (spf_need_p(q, f->rec.text, t->spec, SPF_RESUME_RUN))
		return;
	f->next++;
	spf_term_start(q, t);
}

static void spf_on_record(struct spf_query *q, const struct dns_raw_result *r)
{
	struct spf_frame *f = spf_top(q);
	bool top = q->depth == 1 && !f->redirected;
	if (r->status == DNS_TEMPFAIL) {
		spf_finish(q, SPF_TEMPERROR, "DNS error looking up TXT %s", f->domain);
		return;
	}
	/* one TXT rdata joins to less than 64 KiB; ours are at most SPF_RECORD_MAX */
	size_t txtlen = 65536;
	char *txt = xmalloc(txtlen);
	size_t nspf = 0, found = 0;
	/* dns_txt_join() gives the length: a record may hold NUL octets and
	 * must not be read as shorter than it is (the suite's "a-null") */
	for (size_t i = 0; r->status == DNS_OK && i < r->n; i++) {
		int len = dns_txt_join(r->rdata[i], r->len[i], txt, txtlen);
		if (len >= 0 && spf_record_is_spf(txt, (size_t)len)) {
			nspf++;
			found = i;
		}
	}
	if (nspf != 1) {
		free(txt);
		if (nspf > 1)
			spf_finish(q, SPF_PERMERROR, "more than one SPF record at %s", f->domain);
		else if (top)
			spf_finish(q, SPF_NONE, "no SPF record at %s", f->domain);
		else
			spf_finish(q, SPF_PERMERROR, "no SPF record at %s (%s)", f->domain,
			           f->redirected ? "redirect" : "include");
		return;
	}
	int txtn = dns_txt_join(r->rdata[found], r->len[found], txt, txtlen);
	spf_trace(q, "record %s: %s", f->domain, txt);
	const char *err;
	int rc = spf_record_parse(txt, (size_t)(txtn > 0 ? txtn : 0), &f->rec, &err);
	free(txt);
	if (rc < 0) {
		spf_finish(q, SPF_PERMERROR, "SPF record at %s: %s", f->domain, err);
		return;
	}
	f->next = 0;
	spf_run(q);
}

static void spf_on_a(struct spf_query *q, const struct dns_raw_result *r)
{
	const struct spf_term *t = spf_current_term(q);
	if (r->status == DNS_TEMPFAIL) {
		spf_finish(q, SPF_TEMPERROR, "DNS error looking up %s", q->target);
		return;
	}
	if (r->status != DNS_OK || r->n == 0) {
		if (spf_void(q) == 0)
			spf_term_matched(q, false);
		return;
	}
	if (t->mech == SPF_MECH_EXISTS) {
		spf_term_matched(q, true);
		return;
	}
	for (size_t i = 0; i < r->n; i++) {
		if (spf_addr_match(q, r->rdata[i], r->len[i], t->cidr4, t->cidr6)) {
			spf_term_matched(q, true);
			return;
		}
	}
	spf_term_matched(q, false);
}

static void spf_mx_next(struct spf_query *q)
{
	if (q->iname >= q->nnames) {
		spf_term_matched(q, false);
		return;
	}
	spf_lookup(q, q->names[q->iname++], q->iplen == 4 ? DNS_RR_A : DNS_RR_AAAA,
	           SPF_STEP_MX_ADDR);
}

static void spf_on_mx(struct spf_query *q, const struct dns_raw_result *r)
{
	if (r->status == DNS_TEMPFAIL) {
		spf_finish(q, SPF_TEMPERROR, "DNS error looking up MX %s", q->target);
		return;
	}
	if (r->status != DNS_OK || r->n == 0) {
		if (spf_void(q) == 0)
			spf_term_matched(q, false);
		return;
	}
	if (r->n > SPF_NAMES_LIMIT) {
		spf_finish(q, SPF_PERMERROR, "more than %d MX records at %s", SPF_NAMES_LIMIT,
		           q->target);
		return;
	}
	q->nnames = q->iname = 0;
	for (size_t i = 0; i < r->n; i++) {
		if (r->len[i] < 3 ||
		    spf_wire_name(r->rdata[i] + 2, r->len[i] - 2, q->names[q->nnames]) != 1)
			continue; /* "." (RFC 7505) or malformed: no address */
		q->nnames++;
	}
	spf_mx_next(q);
}

static void spf_on_mx_addr(struct spf_query *q, const struct dns_raw_result *r)
{
	const struct spf_term *t = spf_current_term(q);
	if (r->status == DNS_TEMPFAIL) {
		spf_finish(q, SPF_TEMPERROR, "DNS error looking up %s", q->names[q->iname - 1]);
		return;
	}
	for (size_t i = 0; r->status == DNS_OK && i < r->n; i++) {
		if (spf_addr_match(q, r->rdata[i], r->len[i], t->cidr4, t->cidr6)) {
			spf_term_matched(q, true);
			return;
		}
	}
	spf_mx_next(q);
}

static void spf_ptr_done(struct spf_query *q)
{
	q->ptr_done = true;
	switch (q->resume) {
	case SPF_RESUME_RUN:
		spf_run(q);
		return;
	case SPF_RESUME_PTR_MECH:
		spf_ptr_match(q);
		return;
	case SPF_RESUME_EXP:
		spf_exp_start(q);
		return;
	case SPF_RESUME_EXP_TEXT:
		spf_exp_expand(q);
		return;
	}
}

static void spf_ptr_next(struct spf_query *q)
{
	if (q->iname >= q->nnames) {
		spf_ptr_done(q);
		return;
	}
	spf_lookup(q, q->names[q->iname++], q->iplen == 4 ? DNS_RR_A : DNS_RR_AAAA,
	           SPF_STEP_PTR_ADDR);
}

static void spf_on_ptr(struct spf_query *q, const struct dns_raw_result *r)
{
	q->nnames = q->iname = 0;
	if (r->status == DNS_OK && r->n == 0 && q->resume == SPF_RESUME_PTR_MECH) {
		if (spf_void(q) < 0)
			return;
	} else if (r->status == DNS_NXDOMAIN && q->resume == SPF_RESUME_PTR_MECH) {
		if (spf_void(q) < 0)
			return;
	}
	/* §5.5: a DNS error fails to match; only the first 10 names are used */
	for (size_t i = 0; r->status == DNS_OK && i < r->n && q->nnames < SPF_NAMES_LIMIT; i++) {
		if (spf_wire_name(r->rdata[i], r->len[i], q->names[q->nnames]) == 1)
			q->nnames++;
	}
	spf_ptr_next(q);
}

static void spf_on_ptr_addr(struct spf_query *q, const struct dns_raw_result *r)
{
	for (size_t i = 0; r->status == DNS_OK && i < r->n; i++) {
		if (spf_addr_match(q, r->rdata[i], r->len[i], 32, 128)) {
			memcpy(q->validated[q->nvalidated++], q->names[q->iname - 1], SPF_NAME_BUF);
			break;
		}
	}
	spf_ptr_next(q);
}

static void spf_exp_start(struct spf_query *q)
{
	struct spf_frame *f = q->frames[0];
	q->exp_tried = true;
	if (spf_need_p(q, f->rec.text, f->rec.exp, SPF_RESUME_EXP))
		return;
	struct spf_macro_ctx ctx;
	const char *err;
	char name[SPF_NAME_BUF];
	spf_macro_ctx(q, f->domain, &ctx);
	if (spf_macro_expand(f->rec.text + f->rec.exp.off, f->rec.exp.len, &ctx, false, name,
	                     sizeof(name), &err) < 0 ||
	    !spf_name_valid(name, false)) {
		spf_deliver(q);
		return;
	}
	spf_lookup(q, name, DNS_RR_TXT, SPF_STEP_EXP);
}

/* Expand the exp= text kept in q->exp_text (§6.2); any problem leaves the
 * default explanation. */
static void spf_exp_expand(struct spf_query *q)
{
	struct spf_macro_ctx ctx;
	const char *err;
	char out[SPF_EXPAND_MAX + 1];
	spf_macro_ctx(q, q->frames[0]->domain, &ctx);
	if (spf_macro_expand(q->exp_text, strlen(q->exp_text), &ctx, true, out, sizeof(out),
	                     &err) == 0)
		memcpy(q->explanation, out, strlen(out) + 1);
	else
		spf_trace(q, "exp= text ignored: %s", err);
	spf_deliver(q);
}

/* §6.2: exactly one TXT record, expanded with c, r and t. */
static void spf_on_exp(struct spf_query *q, const struct dns_raw_result *r)
{
	/* a text holding a NUL octet is not used */
	int n = r->status == DNS_OK && r->n == 1
	            ? dns_txt_join(r->rdata[0], r->len[0], q->exp_text, sizeof(q->exp_text))
	            : -1;
	if (n < 0 || (size_t)n != strlen(q->exp_text)) {
		spf_deliver(q);
		return;
	}
	struct spf_span all = {0, (uint16_t)strlen(q->exp_text)};
	if (spf_need_p(q, q->exp_text, all, SPF_RESUME_EXP_TEXT))
		return;
	spf_exp_expand(q);
}

static void spf_on_answer(const struct dns_raw_result *r, void *arg)
{
	struct spf_query *q = arg;
	q->pending = NULL;
	q->inflight = false;
	if (q->zombie) {
		spf_free(&q);
		return;
	}
	if (r->status == DNS_OK)
		spf_trace(q, "answer: %zu record%s", r->n, r->n == 1 ? "" : "s");
	else
		spf_trace(q, "answer: %s (%s)", r->status == DNS_NXDOMAIN ? "NXDOMAIN" : "TEMPFAIL",
		          r->error != NULL ? r->error : "");
	switch (q->step) {
	case SPF_STEP_RECORD:
		spf_on_record(q, r);
		break;
	case SPF_STEP_A:
	case SPF_STEP_EXISTS:
		spf_on_a(q, r);
		break;
	case SPF_STEP_MX:
		spf_on_mx(q, r);
		break;
	case SPF_STEP_MX_ADDR:
		spf_on_mx_addr(q, r);
		break;
	case SPF_STEP_PTR:
		spf_on_ptr(q, r);
		break;
	case SPF_STEP_PTR_ADDR:
		spf_on_ptr_addr(q, r);
		break;
	case SPF_STEP_EXP:
		spf_on_exp(q, r);
		break;
	case SPF_STEP_NONE:
		break;
	}
}

static void spf_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct spf_query *q = arg;
	/* spf_deliver() cancels the pending lookup as it frees the query */
	if (q->exp_tried) {
		/* the result is known; only exp= (§6.2) was late: the default */
		snprintf(q->explanation, sizeof(q->explanation), "%s", q->default_exp);
		spf_deliver(q);
		return;
	}
	q->mechanism[0] = '\0';
	q->result = SPF_TEMPERROR;
	snprintf(q->reason, sizeof(q->reason), "SPF check timed out");
	spf_deliver(q);
}

/* Started from the loop: the first lookup, or a result known without DNS. */
static void spf_on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct spf_query *q = arg;
	if (q->depth == 0) {
		spf_deliver(q);
		return;
	}
	spf_trace(q, "check_host(%s, %s, %s)", q->identity, q->sender_domain, q->sender);
	spf_lookup(q, q->frames[0]->domain, DNS_RR_TXT, SPF_STEP_RECORD);
}

static void spf_client_ip(const struct sockaddr *sa, unsigned char ip[16], size_t *iplen_r)
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	if (sa != NULL && sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (memcmp(s6->sin6_addr.s6_addr, mapped, 12) == 0) {
			memcpy(ip, s6->sin6_addr.s6_addr + 12, 4); /* §5: IPv4 in IPv6 */
			*iplen_r = 4;
		} else {
			memcpy(ip, s6->sin6_addr.s6_addr, 16);
			*iplen_r = 16;
		}
	} else if (sa != NULL && sa->sa_family == AF_INET) {
		memcpy(ip, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		*iplen_r = 4;
	} else {
		memset(ip, 0, 4); /* 0.0.0.0: matches nothing useful */
		*iplen_r = 4;
	}
}

/* The identity (§2.3, §2.4, §4.3): "local@domain"; a sender without local
 * part is postmaster; null MAIL FROM is postmaster@HELO. Returns false when
 * the domain is not one SPF can check (result none). */
static bool spf_identity_set(struct spf_query *q, const struct spf_request *req)
{
	const char *sender = req->sender != NULL ? req->sender : "";
	const char *helo = req->helo != NULL ? req->helo : "";
	snprintf(q->helo, sizeof(q->helo), "%s", helo);
	char buf[SPF_SENDER_MAX + 1];
	if (req->identity == SPF_ID_HELO || sender[0] == '\0') {
		q->identity = req->identity == SPF_ID_HELO ? "helo" : "mailfrom";
		snprintf(buf, sizeof(buf), "postmaster@%s", helo);
	} else {
		q->identity = "mailfrom";
		if (strlen(sender) > SPF_SENDER_MAX) {
			snprintf(q->sender, sizeof(q->sender), "%.*s", SPF_SENDER_MAX, sender);
			snprintf(q->reason, sizeof(q->reason), "sender address too long");
			return false;
		}
		snprintf(buf, sizeof(buf), "%s", sender);
	}
	memcpy(q->sender, buf, sizeof(buf));
	const char *at = strrchr(buf, '@');
	if (at == NULL) {
		snprintf(q->local, sizeof(q->local), "postmaster");
		snprintf(q->sender_domain, sizeof(q->sender_domain), "%s", buf);
	} else {
		snprintf(q->local, sizeof(q->local), "%.*s", (int)(at - buf), buf);
		if (q->local[0] == '\0')
			snprintf(q->local, sizeof(q->local), "postmaster");
		snprintf(q->sender_domain, sizeof(q->sender_domain), "%s", at + 1);
	}
	size_t dl = strlen(q->sender_domain);
	if (dl > 0 && q->sender_domain[dl - 1] == '.')
		q->sender_domain[dl - 1] = '\0';
	for (const char *p = q->sender_domain; *p != '\0'; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.')) {
			snprintf(q->reason, sizeof(q->reason), "not a domain name: no SPF check");
			return false;
		}
	}
	if (!spf_name_valid(q->sender_domain, true)) {
		snprintf(q->reason, sizeof(q->reason), "not a valid domain name: no SPF check");
		return false;
	}
	return true;
}

struct spf_query *spf_check(const struct spf_resolver *res, struct event_base *base,
                            const struct spf_request *req, spf_done_fn *cb, void *arg)
{
	struct spf_query *q = xcalloc(1, sizeof(*q));
	q->res = *res;
	q->base = base;
	q->cb = cb;
	q->arg = arg;
	q->trace = req->trace;
	q->trace_arg = req->trace_arg;
	q->now = req->now != 0 ? req->now : time(NULL);
	q->result = SPF_NONE;
	spf_client_ip(req->client, q->ip, &q->iplen);
	snprintf(q->receiver, sizeof(q->receiver), "%s",
	         req->hostname != NULL && req->hostname[0] != '\0' ? req->hostname : "unknown");
	snprintf(q->default_exp, sizeof(q->default_exp), "%s",
	         req->default_explanation != NULL ? req->default_explanation
	                                          : SPF_EXPLANATION_DEFAULT);
	if (spf_identity_set(q, req)) {
		q->frames[0] = xcalloc(1, sizeof(struct spf_frame));
		q->depth = 1;
		/* spf_name_valid() held it to SPF_DOMAIN_MAX */
		memcpy(q->frames[0]->domain, q->sender_domain, strlen(q->sender_domain) + 1);
	}
	q->kick = evtimer_new(base, spf_on_kick, q);
	q->deadline = evtimer_new(base, spf_on_deadline, q);
	if (q->kick == NULL || q->deadline == NULL)
		abort(); /* out of memory, as xmalloc */
	unsigned ms = req->timeout_ms != 0 ? req->timeout_ms : SPF_TIMEOUT_DEFAULT_MS;
	struct timeval zero = {0, 0};
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(q->kick, &zero);
	evtimer_add(q->deadline, &tv);
	return q;
}

/* Received-SPF (§9.1) -------------------------------------------------- */

struct spf_hdr {
	char *out;
	size_t len, cap;
	size_t col;
	bool overflow;
};

static void spf_hdr_raw(struct spf_hdr *h, const char *s, size_t n)
{
	if (h->len + n + 1 > h->cap) {
		h->overflow = true;
		return;
	}
	memcpy(h->out + h->len, s, n);
	h->len += n;
	h->out[h->len] = '\0';
	h->col += n;
}

/* One word, folded onto a new line (CRLF TAB) when the line would pass 78. */
static void spf_hdr_word(struct spf_hdr *h, const char *w)
{
	size_t n = strlen(w);
	if (h->col + 1 + n > 78 && h->col > 14) {
		spf_hdr_raw(h, "\r\n\t", 3);
		h->col = 1;
	} else {
		spf_hdr_raw(h, " ", 1);
	}
	spf_hdr_raw(h, w, n);
}

/* Text safe inside a comment: printable ASCII and spaces without ( ) \ ;
 * at most max. */
static void spf_hdr_clean(const char *s, char *out, size_t max)
{
	size_t k = 0;
	for (; s != NULL && *s != '\0' && k + 1 < max; s++) {
		unsigned char c = (unsigned char)*s;
		out[k++] =
		    (c >= 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\') ? (char)c : '?';
	}
	out[k] = '\0';
}

/* key=value; value as a dot-atom when it is one, else a quoted-string with
 * '"' and '\' escaped and anything not printable ASCII replaced by '?'. */
static void spf_hdr_pair(struct spf_hdr *h, const char *key, const char *val)
{
	char buf[600];
	size_t k = (size_t)snprintf(buf, sizeof(buf), "%s=", key);
	bool atom = val[0] != '\0' && val[0] != '.';
	for (const char *p = val; *p != '\0'; p++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr("!#$%&'*+-/=?^_`{|}~.:", c) != NULL))
			atom = false;
	}
	if (!atom)
		buf[k++] = '"';
	for (const char *p = val; *p != '\0' && k + 4 < sizeof(buf) - 2; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c >= 0x7f)
			c = '?';
		if (!atom && (c == '"' || c == '\\'))
			buf[k++] = '\\';
		buf[k++] = (char)c;
	}
	if (!atom)
		buf[k++] = '"';
	buf[k++] = ';';
	buf[k] = '\0';
	spf_hdr_word(h, buf);
}

int spf_received_header(const struct spf_outcome *o, const struct spf_request *req,
                        const char *receiver, char *out, size_t outlen)
{
	struct spf_hdr h = {out, 0, outlen, 0, false};
	if (outlen == 0)
		return -1;
	out[0] = '\0';
	char ip[INET6_ADDRSTRLEN] = "0.0.0.0";
	unsigned char addr[16] = {0};
	size_t alen;
	spf_client_ip(req->client, addr, &alen);
	inet_ntop(alen == 16 ? AF_INET6 : AF_INET, addr, ip, sizeof(ip));
	char recv[SPF_NAME_BUF], who[SPF_SENDER_MAX + 1], why[300];
	spf_hdr_clean(receiver != NULL ? receiver : "unknown", recv, sizeof(recv));
	spf_hdr_clean(o->sender, who, sizeof(who));
	spf_hdr_clean(o->reason, why, sizeof(why));
	spf_hdr_raw(&h, "Received-SPF: ", 14);
	spf_hdr_raw(&h, spf_result_name(o->result), strlen(spf_result_name(o->result)));
	char comment[1024];
	switch (o->result) {
	case SPF_PASS:
		snprintf(comment, sizeof(comment),
		         "(%s: domain of %s designates %s as permitted sender)", recv, who, ip);
		break;
	case SPF_FAIL:
	case SPF_SOFTFAIL:
		snprintf(comment, sizeof(comment),
		         "(%s: domain of %s does not designate %s as permitted sender)", recv, who,
		         ip);
		break;
	default:
		snprintf(comment, sizeof(comment), "(%s: %s)", recv, why);
		break;
	}
	/* the comment's words fold like the rest */
	for (char *w = comment; *w != '\0';) {
		char *sp = strchr(w, ' ');
		if (sp != NULL)
			*sp = '\0';
		spf_hdr_word(&h, w);
		w = sp != NULL ? sp + 1 : w + strlen(w);
	}
	spf_hdr_pair(&h, "client-ip", ip);
	const char *from = req->sender != NULL ? req->sender : "";
	if (strcmp(o->identity, "mailfrom") == 0 || from[0] != '\0')
		spf_hdr_pair(&h, "envelope-from", from[0] != '\0' ? from : o->sender);
	spf_hdr_pair(&h, "helo", req->helo != NULL ? req->helo : "");
	spf_hdr_pair(&h, "receiver", receiver != NULL ? receiver : "unknown");
	spf_hdr_pair(&h, "identity", o->identity);
	if (o->result == SPF_TEMPERROR || o->result == SPF_PERMERROR)
		spf_hdr_pair(&h, "problem", o->reason);
	else if (o->mechanism[0] != '\0')
		spf_hdr_pair(&h, "mechanism", o->mechanism);
	spf_hdr_raw(&h, "\r\n", 2);
	return h.overflow ? -1 : (int)h.len;
}
