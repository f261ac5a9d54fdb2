/* dmarc.c — DMARC (RFC 7489): record parser, policy discovery, alignment
 * and disposition (dmarc.h, where the choices the RFC leaves open are
 * listed). Runs in smtpd on the event loop. Hostile inputs: TXT records
 * from the DNS (any octets, any length) and the From domain. */
#include "dauth/dmarc.h"
#include "dns/dns.h"
#include "lib/alloc.h"

#include <libpsl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DMARC_TXT_MAX 4096 /* one TXT record, joined; longer ones are dropped */

struct dmarc {
	psl_ctx_t *psl;
};

/* ---- the record (§6.3, §6.4: a DKIM-style tag-list) ---- */

static bool dmarc_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void dmarc_trim(const char **p, size_t *n)
{
	while (*n > 0 && dmarc_wsp(**p)) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && dmarc_wsp((*p)[*n - 1]))
		(*n)--;
}

static bool dmarc_eq(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

static int dmarc_policy_value(const char *v, size_t n, enum dmarc_policy *p)
{
	if (dmarc_eq(v, n, "none"))
		*p = DMARC_P_NONE;
	else if (dmarc_eq(v, n, "quarantine"))
		*p = DMARC_P_QUARANTINE;
	else if (dmarc_eq(v, n, "reject"))
		*p = DMARC_P_REJECT;
	else
		return -1;
	return 0;
}

/* The size limit of a dmarc-uri (§6.2: "!" 1*DIGIT [ "k" / "m" / "g" /
 * "t" ]) in octets; 0 (no limit) when it does not parse or overflows. */
static unsigned long long dmarc_rua_size(const char *p, size_t n)
{
	while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	unsigned long long v = 0;
	size_t i = 0;
	for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
		if (v > (1ULL << 40))
			return 0;
		v = v * 10 + (unsigned long long)(p[i] - '0');
	}
	if (i == 0)
		return 0;
	unsigned shift = 0;
	if (i < n) {
		const char *units = "kmgt", *u = memchr(units, p[i] | 0x20, 4);
		if (u == NULL || i + 1 != n)
			return 0;
		shift = 10 * (unsigned)(u - units + 1);
	}
	if (v > (~0ULL >> shift))
		return 0;
	return v << shift;
}

/* rua: comma-separated dmarc-uri (§6.4); mailto: URIs are what reports
 * can use, and what makes a record without p still count (§6.6.3). A
 * size limit suffix ("!10m") is not part of the address. */
static void dmarc_rua(struct dmarc_record *r, const char *v, size_t n)
{
	while (n > 0) {
		const char *comma = memchr(v, ',', n);
		size_t len = comma != NULL ? (size_t)(comma - v) : n;
		const char *u = v;
		size_t ulen = len;
		dmarc_trim(&u, &ulen);
		const char *bang = memchr(u, '!', ulen);
		size_t full = ulen;
		if (bang != NULL)
			ulen = (size_t)(bang - u);
		bool printable = true; /* a URI (RFC 3986): no controls, no spaces */
		for (size_t i = 0; i < ulen && printable; i++)
			printable = (unsigned char)u[i] > 0x20 && (unsigned char)u[i] < 0x7f;
		if (printable && ulen > 7 && strncasecmp(u, "mailto:", 7) == 0 &&
		    memchr(u + 7, '@', ulen - 7) && ulen < sizeof(r->rua[0]) &&
		    r->nrua < DMARC_RUA_MAX) {
			memcpy(r->rua[r->nrua], u, ulen);
			r->rua[r->nrua][ulen] = '\0';
			r->rua_max[r->nrua] = bang != NULL ? dmarc_rua_size(bang + 1, full - ulen - 1) : 0;
			r->nrua++;
		}
		if (comma == NULL)
			break;
		n -= len + 1;
		v = comma + 1;
	}
}

static bool dmarc_tag_name_ok(const char *p, size_t n)
{
	if (n == 0 || !((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z'))
		return false;
	for (size_t i = 1; i < n; i++) {
		char c = p[i];
		bool ok =
		    ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9') || c == '_';
		if (!ok)
			return false;
	}
	return true;
}

enum { T_V, T_P, T_SP, T_ADKIM, T_ASPF, T_PCT, T_RUA, T_NTAGS };

struct dmarc_parse {
	struct dmarc_record *r;
	unsigned seen;
	bool p_ok, sp_bad;
};

/* One known tag's value; unknown tags are ignored (§6.3), and a value
 * that does not parse falls back to the default (§6.3: "syntax errors in
 * the remainder of the record SHOULD be discarded in favor of default
 * values"), except p and sp (§6.6.3 step 6). */
static void dmarc_tag(struct dmarc_parse *ps, int tag, const char *v, size_t n)
{
	struct dmarc_record *r = ps->r;
	switch (tag) {
	case T_P:
		ps->p_ok = dmarc_policy_value(v, n, &r->p) == 0;
		break;
	case T_SP:
		ps->sp_bad = dmarc_policy_value(v, n, &r->sp) < 0;
		break;
	case T_ADKIM:
		r->adkim_strict = dmarc_eq(v, n, "s");
		break;
	case T_ASPF:
		r->aspf_strict = dmarc_eq(v, n, "s");
		break;
	case T_PCT: {
		unsigned pct = 0;
		bool ok = n > 0 && n <= 3;
		for (size_t i = 0; i < n && ok; i++) {
			ok = v[i] >= '0' && v[i] <= '9';
			pct = pct * 10 + (unsigned)(v[i] - '0');
		}
		if (ok && pct <= 100)
			r->pct = pct;
		break;
	}
	case T_RUA:
		dmarc_rua(r, v, n);
		break;
	default:
		break;
	}
}

static int dmarc_tag_id(const char *name, size_t n)
{
	static const char *const names[T_NTAGS] = {"v", "p", "sp", "adkim", "aspf", "pct", "rua"};
	for (int i = 0; i < T_NTAGS; i++) {
		if (dmarc_eq(name, n, names[i]))
			return i;
	}
	return -1;
}

int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *r, const char **error_r)
{
	struct dmarc_parse ps = {.r = r};
	bool sp_given = false;
	memset(r, 0, sizeof(*r));
	r->pct = 100;
	for (size_t i = 0, ntag = 0; i <= len; ntag++) {
		const char *semi = memchr(txt + i, ';', len - i);
		size_t end = semi != NULL ? (size_t)(semi - txt) : len;
		const char *spec = txt + i, *eq;
		size_t slen = end - i;
		i = end + 1;
		dmarc_trim(&spec, &slen);
		if (slen == 0 && ntag > 0)
			continue; /* an empty tag-spec: "a=b;" */
		eq = memchr(spec, '=', slen);
		const char *name = spec, *val = eq != NULL ? eq + 1 : NULL;
		size_t nlen = eq != NULL ? (size_t)(eq - spec) : slen;
		size_t vlen = eq != NULL ? slen - nlen - 1 : 0;
		dmarc_trim(&name, &nlen);
		if (val != NULL)
			dmarc_trim(&val, &vlen);
		int tag = eq != NULL ? dmarc_tag_id(name, nlen) : -1;
		if (ntag == 0) {
			/* v=DMARC1 first, its value as written (§6.4) */
			if (tag != T_V || vlen != 6 || memcmp(val, "DMARC1", 6) != 0)
				return 1;
			ps.seen |= 1u << T_V;
			continue;
		}
		if (eq == NULL || !dmarc_tag_name_ok(name, nlen)) {
			*error_r = "malformed tag-list";
			return -1;
		}
		if (tag < 0)
			continue;
		if (ps.seen & (1u << tag)) {
			*error_r = "duplicate tag";
			return -1;
		}
		ps.seen |= 1u << tag;
		sp_given |= tag == T_SP;
		dmarc_tag(&ps, tag, val, vlen);
	}
	if (!ps.p_ok || ps.sp_bad) {
		/* §6.6.3 step 6: with a usable rua, as if p=none */
		if (r->nrua == 0) {
			*error_r = ps.p_ok ? "invalid sp tag" : "no valid p tag";
			return -1;
		}
		r->p = r->sp = DMARC_P_NONE;
		return 0;
	}
	if (!sp_given)
		r->sp = r->p;
	return 0;
}

/* ---- names ---- */

const char *dmarc_status_name(enum dmarc_status st)
{
	static const char *const names[] = {"none", "pass", "fail", "temperror", "permerror"};
	return names[st];
}

const char *dmarc_policy_name(enum dmarc_policy p)
{
	static const char *const names[] = {"none", "quarantine", "reject"};
	return names[p];
}

/* ---- the public suffix list ---- */

struct dmarc *dmarc_create(void)
{
	struct dmarc *d = xcalloc(1, sizeof(*d));
	/* The newest of the system's list and the built-in one; read now,
	 * before the sandbox closes the file system. */
	d->psl = psl_latest(NULL);
	if (d->psl == NULL)
		d->psl = (psl_ctx_t *)psl_builtin();
	return d;
}

void dmarc_free(struct dmarc **dp)
{
	struct dmarc *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	if (d->psl != NULL && d->psl != psl_builtin())
		psl_free(d->psl);
	free(d);
}

void dmarc_org_domain(const struct dmarc *d, const char *domain, char *out, size_t outlen)
{
	const char *reg =
	    d != NULL && d->psl != NULL ? psl_registrable_domain(d->psl, domain) : NULL;
	const char *src = reg != NULL ? reg : domain;
	size_t n = strlen(src);
	if (n >= outlen)
		n = outlen - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = src[i] >= 'A' && src[i] <= 'Z' ? (char)(src[i] | 0x20) : src[i];
	out[n] = '\0';
}

/* ---- discovery (§6.6.3) ---- */

struct dmarc_discovery {
	struct dmarc *d;
	struct dmarc_resolver res;
	dmarc_discover_cb *cb;
	void *arg;
	char from[DMARC_DOMAIN_MAX + 1];
	char org[DMARC_DOMAIN_MAX + 1];
	bool at_org;
	void *handle;
	bool in_start, done;
	struct dmarc_policy_found f;
};

static void dmarc_lookup(struct dmarc_discovery *q);

static void dmarc_result_set(struct dmarc_discovery *q, enum dmarc_status st, const char *reason)
{
	q->f.status = st;
	q->f.reason = reason;
	q->f.at_org = q->at_org;
	snprintf(q->f.domain, sizeof(q->f.domain), "%s", q->at_org ? q->org : q->from);
	q->done = true;
}

static void dmarc_finish(struct dmarc_discovery *q, enum dmarc_status st, const char *reason)
{
	dmarc_result_set(q, st, reason);
	if (q->in_start)
		return; /* dmarc_discover() answers */
	q->cb(&q->f, q->arg);
	free(q);
}

static void dmarc_on_txt(enum dmarc_dns_status st, const char *const *txts, size_t n, void *arg)
{
	struct dmarc_discovery *q = arg;
	const char *error = NULL;
	size_t found = 0;
	int bad = 0;
	q->handle = NULL;
	if (st == DMARC_DNS_TEMPFAIL) {
		dmarc_finish(q, DMARC_TEMPERROR, "DNS lookup of the policy failed");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct dmarc_record r;
		const char *e = NULL;
		int rc = dmarc_record_parse(txts[i], strlen(txts[i]), &r, &e);
		if (rc == 1)
			continue;
		found++;
		if (rc == 0)
			q->f.rec = r;
		else {
			bad++;
			error = e;
		}
	}
	if (found == 0) {
		/* Not at the From domain: its organizational domain. */
		if (!q->at_org && strcmp(q->org, q->from) != 0) {
			q->at_org = true;
			dmarc_lookup(q);
			return;
		}
		dmarc_finish(q, DMARC_NONE, "no DMARC record");
	} else if (found > 1) {
		dmarc_finish(q, DMARC_PERMERROR, "several DMARC records");
	} else if (bad > 0) {
		dmarc_finish(q, DMARC_PERMERROR, error);
	} else {
		dmarc_finish(q, DMARC_PASS, NULL);
	}
}

static void dmarc_lookup(struct dmarc_discovery *q)
{
	char name[DMARC_DOMAIN_MAX + 16];
	snprintf(name, sizeof(name), "_dmarc.%s", q->at_org ? q->org : q->from);
	q->handle = q->res.txt(q->res.ctx, name, dmarc_on_txt, q);
}

struct dmarc_discovery *dmarc_discover(struct dmarc *d, const struct dmarc_resolver *res,
                                       const char *from_domain, dmarc_discover_cb *cb, void *arg)
{
	struct dmarc_discovery *q = xcalloc(1, sizeof(*q));
	q->d = d;
	q->res = *res;
	q->cb = cb;
	q->arg = arg;
	snprintf(q->from, sizeof(q->from), "%s", from_domain);
	dmarc_org_domain(d, q->from, q->org, sizeof(q->org));
	q->in_start = true;
	if (from_domain[0] == '\0' || strlen(from_domain) > DMARC_DOMAIN_MAX)
		dmarc_result_set(q, DMARC_PERMERROR, "unusable From domain");
	else
		dmarc_lookup(q);
	q->in_start = false;
	if (!q->done)
		return q;
	cb(&q->f, arg);
	free(q);
	return NULL;
}

void dmarc_discovery_cancel(struct dmarc_discovery **qp)
{
	struct dmarc_discovery *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	if (q->handle != NULL && q->res.cancel != NULL)
		q->res.cancel(q->res.ctx, q->handle);
	free(q);
}

/* ---- evaluation ---- */

/* §3.1.1/§3.1.2: strict is equality; relaxed is the same organizational
 * domain. Domains compare without case. */
static bool dmarc_aligned(const struct dmarc *d, const char *id, const char *from, bool strict)
{
	char a[DMARC_DOMAIN_MAX + 1], b[DMARC_DOMAIN_MAX + 1];
	if (id == NULL || id[0] == '\0')
		return false;
	if (strcasecmp(id, from) == 0)
		return true;
	if (strict)
		return false;
	dmarc_org_domain(d, id, a, sizeof(a));
	dmarc_org_domain(d, from, b, sizeof(b));
	return strcmp(a, b) == 0;
}

void dmarc_evaluate(const struct dmarc *d, const struct dmarc_input *in,
                    const struct dmarc_policy_found *found, struct dmarc_result *out)
{
	memset(out, 0, sizeof(*out));
	if (in->from_domain == NULL) {
		/* §6.6.1: see dmarc.h */
		out->status = DMARC_PERMERROR;
		out->policy = DMARC_P_REJECT;
		out->disp = DMARC_DISP_REJECT;
		out->reason = in->from_error != NULL ? in->from_error : "unusable From field";
		return;
	}
	if (found->status != DMARC_PASS) {
		out->status = found->status;
		out->reason = found->reason;
		return;
	}
	const struct dmarc_record *r = &found->rec;
	out->spf_aligned =
	    in->spf_pass && dmarc_aligned(d, in->spf_domain, in->from_domain, r->aspf_strict);
	for (size_t i = 0; i < in->ndkim && !out->dkim_aligned; i++)
		out->dkim_aligned =
		    in->dkim[i].pass &&
		    dmarc_aligned(d, in->dkim[i].domain, in->from_domain, r->adkim_strict);
	if (out->spf_aligned || out->dkim_aligned) {
		out->status = DMARC_PASS;
		return;
	}
	out->status = DMARC_FAIL;
	out->policy = found->at_org ? r->sp : r->p;
	enum dmarc_policy p = out->policy;
	/* §6.6.4: outside the pct sample, the next policy down applies. */
	if (in->sample >= r->pct && p != DMARC_P_NONE)
		p = p == DMARC_P_REJECT ? DMARC_P_QUARANTINE : DMARC_P_NONE;
	out->disp = p == DMARC_P_REJECT       ? DMARC_DISP_REJECT
	            : p == DMARC_P_QUARANTINE ? DMARC_DISP_QUARANTINE
	                                      : DMARC_DISP_NONE;
}

/* ---- the resolver over src/dns ---- */

struct dmarc_dns_q {
	dmarc_txt_cb *cb;
	void *arg;
	struct dns_query *q;
};

static void dmarc_dns_on_raw(const struct dns_raw_result *res, void *arg)
{
	struct dmarc_dns_q *dq = arg;
	char *txt[DNS_RAW_MAX] = {0};
	size_t n = 0;
	enum dmarc_dns_status st = res->status == DNS_OK         ? DMARC_DNS_OK
	                           : res->status == DNS_NXDOMAIN ? DMARC_DNS_NXDOMAIN
	                                                         : DMARC_DNS_TEMPFAIL;
	for (size_t i = 0; st == DMARC_DNS_OK && i < res->n && i < DNS_RAW_MAX; i++) {
		char *t = xmalloc(DMARC_TXT_MAX);
		int n_t = dns_txt_join(res->rdata[i], res->len[i], t, DMARC_TXT_MAX);
		if (n_t < 0 || memchr(t, '\0', (size_t)n_t) != NULL) {
			/* malformed, too long, or with a NUL octet (which would cut
			 * it short): not a policy record */
			free(t);
			continue;
		}
		txt[n++] = t;
	}
	dq->cb(st, (const char *const *)txt, n, dq->arg);
	for (size_t i = 0; i < n; i++)
		free(txt[i]);
	free(dq);
}

static void *dmarc_dns_txt(void *ctx, const char *name, dmarc_txt_cb *cb, void *arg)
{
	struct dmarc_dns_q *dq = xcalloc(1, sizeof(*dq));
	dq->cb = cb;
	dq->arg = arg;
	/* always answers later, from the loop (dns.h) */
	dq->q = dns_resolve_raw(ctx, name, DNS_RR_TXT, dmarc_dns_on_raw, dq);
	return dq;
}

static void dmarc_dns_cancel(void *ctx, void *handle)
{
	struct dmarc_dns_q *dq = handle;
	(void)ctx;
	dns_cancel(dq->q);
	free(dq);
}

void dmarc_resolver_dns(struct dmarc_resolver *r, struct dns *dns)
{
	r->txt = dmarc_dns_txt;
	r->cancel = dmarc_dns_cancel;
	r->ctx = dns;
}
