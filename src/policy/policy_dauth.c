/* policy_dauth.c — sender domain authentication on inbound mail (issue 10):
 * SPF (src/dauth/spf.c) starts when MAIL FROM is accepted, the DKIM
 * verifier (src/dauth/dkim.c) is fed the content as it streams in, and the
 * end-of-data check "dauth" waits for both (bounded by dauth.timeout),
 * finds the DMARC policy of the From domain (src/dauth/dmarc.c), adds
 * Authentication-Results (RFC 8601) and Received-SPF (RFC 7208 §9.1) above
 * the message, and enforces: DMARC reject (550 5.7.1), quarantine (a header
 * and the recipient's .Junk folder), DMARC temperror (dauth.temperror) and
 * SPF fail (550 5.7.23, dauth.spf_reject, only when DMARC did not pass:
 * RFC 7489 §10.1). ARC (RFC 8617, src/dauth/arc.c): the chain is verified
 * beside DKIM (arc.verify, arc= in Authentication-Results), and a message
 * we forward gets our ARC set (arc.seal), its signatures made by the keys
 * process through the callback smtpd hands in.
 *
 * Authenticated sessions, loopback clients (unless dauth.loopback) and
 * dauth.inbound false get no checks. Runs in smtpd on the event loop.
 * Hostile: the client's names and addresses, the message's header fields
 * and every DNS answer; all text written into our fields is reduced to
 * what RFC 8601 allows (values that cannot be written safely are left
 * out). */
#include "conf/conf.h"
#include "dauth/arc.h"
#include "dauth/dkim.h"
#include "dauth/dmarc.h"
#include "dauth/dmarcrep.h"
#include "dauth/spf.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "mail/header.h"
#include "mail/idna.h"
#include "policy/policy_smtp.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DAUTH_FIELD_MAX 4096 /* one field we write */

struct dauth_tx {
	struct policy_smtp *ps;
	char sid[16];
	/* SPF, from MAIL FROM on */
	struct spf_resolver spf_res;
	struct spf_query *spf;
	bool spf_done;
	enum spf_result spf_result;
	bool null_sender;
	char spf_domain[256]; /* the domain checked (MAIL FROM's or HELO's) */
	char spf_sender[MAIL_PATH_MAX + 1];
	char spf_helo[256];
	char spf_reason[160];
	char received_spf[DAUTH_FIELD_MAX]; /* the Received-SPF field, "" if none */
	/* DKIM, fed as the content streams in */
	struct dkim_resolver dkim_res;
	struct dkim_verify *dkim;
	bool dkim_done, dkim_timed_out;
	/* ARC (RFC 8617): the chain, fed beside DKIM (NULL: arc.verify off) */
	struct arc_verify *arc;
	bool arc_done;
	char client_ip[NET_ADDRSTR_MAX]; /* smtp.remote-ip of arc= */
	/* ARC sealing of a message we forward: smtpd feeds the settled message */
	struct arc_seal *seal;
	struct arc_seal_conf seal_conf;
	struct dkim_sign_key seal_key;
	/* end of data */
	struct policy_job *job;
	struct policy_eod_req *eod;
	struct event *timer;
	struct event *finish_ev; /* the verdict, from its own turn of the loop */
	bool starting, finishing;
	struct dmarc_resolver dmarc_res;
	struct dmarc_discovery *dq;
	bool dmarc_done;
	struct dmarc_policy_found found;
	bool from_ok;
	char from[DMARC_DOMAIN_MAX + 1];
	const char *from_error;
	char report_ip[INET6_ADDRSTRLEN]; /* source_ip of the DMARC aggregate reports */
};

static bool dauth_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

static void dauth_maybe_finish(struct dauth_tx *t);

/* The client's address as a report's source_ip: IPv4 for a v4-mapped one. */
static void dauth_client_ip(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
	out[0] = '\0';
	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)outlen);
	} else if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)outlen);
		else
			inet_ntop(AF_INET6, a, out, (socklen_t)outlen);
	}
}

/* ---- SPF ---- */

static void dauth_on_spf(const struct spf_outcome *o, void *arg)
{
	struct dauth_tx *t = arg;
	t->spf = NULL;
	t->spf_done = true;
	t->spf_result = o->result;
	snprintf(t->spf_domain, sizeof(t->spf_domain), "%s", o->domain);
	snprintf(t->spf_reason, sizeof(t->spf_reason), "%s", o->reason);
	struct spf_request req = {.sender = t->spf_sender, .helo = t->spf_helo};
	if (spf_received_header(o, &req, t->ps->conf->hostname, t->received_spf,
	                        sizeof(t->received_spf)) < 0)
		t->received_spf[0] = '\0';
	dauth_maybe_finish(t);
}

struct dauth_tx *policy_dauth_begin(struct policy_smtp *ps, const struct policy_client *c,
                                    const char *sender, const char *helo)
{
	const struct conf *conf = ps->conf;
	if (!conf->dauth.inbound || c->auth_user != NULL ||
	    (c->ss.ss_family != AF_INET && c->ss.ss_family != AF_INET6) ||
	    (!conf->dauth.loopback && dauth_loopback(&c->ss)))
		return NULL;
	struct dns *dns = policy_smtp_dns(ps);
	if (dns == NULL)
		return NULL; /* no resolver (logged when it failed): no results to give */
	if (ps->dmarc == NULL)
		ps->dmarc = dmarc_create(); /* normally made before the sandbox */
	struct dauth_tx *t = xcalloc(1, sizeof(*t));
	t->ps = ps;
	snprintf(t->sid, sizeof(t->sid), "%s", c->sid != NULL ? c->sid : "-");
	snprintf(t->spf_sender, sizeof(t->spf_sender), "%s", sender);
	snprintf(t->spf_helo, sizeof(t->spf_helo), "%s", helo);
	t->null_sender = sender[0] == '\0';
	dauth_client_ip(&c->ss, t->report_ip, sizeof(t->report_ip));
	{
		spf_resolver_dns(&t->spf_res, dns);
		dkim_resolver_dns(&t->dkim_res, dns);
		dmarc_resolver_dns(&t->dmarc_res, dns);
		struct spf_request req = {
		    .client = (const struct sockaddr *)&c->ss,
		    .sender = sender,
		    .helo = helo,
		    .hostname = conf->hostname,
		    .identity = SPF_ID_MAILFROM,
		    .timeout_ms = (unsigned)conf->dauth.timeout,
		};
		t->spf = spf_check(&t->spf_res, ps->base, &req, dauth_on_spf, t);
	}
	struct dkim_verify_conf vc = {0};
	t->dkim = dkim_verify_create(&vc, &t->dkim_res);
	snprintf(t->client_ip, sizeof(t->client_ip), "%s", c->addr);
	if (conf->arc.verify) /* one header section for both, kept by DKIM's */
		t->arc = arc_verify_create_shared(0, &t->dkim_res, t->dkim);
	return t;
}

void policy_dauth_feed(struct dauth_tx *t, const void *p, size_t n)
{
	if (t != NULL && n > 0) {
		dkim_verify_feed(t->dkim, p, n);
		if (t->arc != NULL)
			arc_verify_feed(t->arc, p, n);
	}
}

bool policy_dauth_seal_begin(struct dauth_tx *t, bool forwarded, policy_dauth_sign_fn *sign,
                             void *sign_ctx)
{
	if (t == NULL || t->seal != NULL || sign == NULL)
		return false;
	const struct conf *conf = t->ps->conf;
	size_t idx = 0;
	const struct conf_dkim_key *k = conf_arc_key(conf, &idx);
	if (conf->arc.seal == CONF_ARC_SEAL_NEVER || k == NULL ||
	    (conf->arc.seal == CONF_ARC_SEAL_FORWARDED && !forwarded))
		return false;
	t->seal_key = (struct dkim_sign_key){
	    .domain = k->domain,
	    .selector = k->selector,
	    .alg = DKIM_ALG_RSA_SHA256, /* conf allows arc: true on rsa keys only */
	    .key_id = idx,
	};
	/* authres and chain are known at the end of data (dauth_seal) */
	t->seal_conf =
	    (struct arc_seal_conf){.key = &t->seal_key, .sign = sign, .sign_ctx = sign_ctx};
	t->seal = arc_seal_create(&t->seal_conf);
	return true;
}

void policy_dauth_seal_feed(struct dauth_tx *t, const void *p, size_t n)
{
	if (t == NULL || t->seal == NULL || n == 0)
		return;
	if (arc_seal_feed(t->seal, p, n) < 0) {
		log_warn("event=arc_seal_failed sid=%s reason=\"header section too large\"",
		         t->sid);
		arc_seal_free(&t->seal);
	}
}

static void dauth_stop(struct dauth_tx *t)
{
	if (t->timer != NULL)
		event_free(t->timer);
	t->timer = NULL;
	if (t->finish_ev != NULL)
		event_free(t->finish_ev);
	t->finish_ev = NULL;
	t->finishing = false;
	dmarc_discovery_cancel(&t->dq);
	t->job = NULL;
	t->eod = NULL;
}

void policy_dauth_free(struct dauth_tx **tp)
{
	struct dauth_tx *t = *tp;
	if (t == NULL)
		return;
	*tp = NULL;
	dauth_stop(t);
	spf_cancel(&t->spf);
	arc_verify_free(&t->arc); /* before the DKIM verifier, whose header it shares */
	dkim_verify_free(&t->dkim);
	arc_seal_free(&t->seal);
	free(t);
}

/* ---- Authentication-Results (RFC 8601) ---- */

/* A pvalue (§2.2): the text as it is when it is a dot-atom-ish token or an
 * address of such; a quoted-string when printable; nothing (false) when it
 * cannot be written safely. */
static bool dauth_ar_value(struct buf *b, const char *s)
{
	bool plain = s[0] != '\0', printable = true;
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p < 0x21 || *p > 0x7e)
			printable = false;
		else if (strchr("()<>,;:\\\"[]", *p) != NULL)
			plain = false;
	}
	if (!printable)
		return false;
	if (plain)
		return buf_append_str(b, s) == 0;
	(void)buf_append_byte(b, '"');
	for (const char *p = s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			(void)buf_append_byte(b, '\\');
		(void)buf_append_byte(b, (unsigned char)*p);
	}
	return buf_append_byte(b, '"') == 0;
}

/* A comment "(text)": printable ASCII only, parentheses and backslashes
 * escaped (RFC 5322 §3.2.2 quoted-pair). */
static void dauth_ar_comment(struct buf *b, const char *s)
{
	if (s == NULL || s[0] == '\0')
		return;
	(void)buf_append_str(b, " (");
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		unsigned char c = *p < 0x20 || *p > 0x7e ? '?' : *p;
		if (c == '(' || c == ')' || c == '\\')
			(void)buf_append_byte(b, '\\');
		(void)buf_append_byte(b, c);
	}
	(void)buf_append_byte(b, ')');
}

static void dauth_ar_prop(struct buf *b, const char *name, const char *v)
{
	size_t mark = b->len;
	(void)buf_printf(b, " %s=", name);
	if (!dauth_ar_value(b, v))
		b->len = mark; /* left out */
}

static void dauth_ar_spf(struct dauth_tx *t, struct buf *b)
{
	(void)buf_printf(b, ";\r\n\tspf=%s", spf_result_name(t->spf_result));
	dauth_ar_comment(b, t->spf_reason);
	if (t->null_sender)
		dauth_ar_prop(b, "smtp.helo", t->spf_helo);
	else
		dauth_ar_prop(b, "smtp.mailfrom", t->spf_sender);
}

static void dauth_ar_dkim(struct dauth_tx *t, struct buf *b)
{
	size_t n = t->dkim_timed_out ? 0 : dkim_verify_count(t->dkim);
	if (t->dkim_timed_out) {
		(void)buf_append_str(b, ";\r\n\tdkim=temperror (key lookup timed out)");
		return;
	}
	if (n == 0) {
		(void)buf_append_str(b, ";\r\n\tdkim=none");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		const struct dkim_verify_sig *sig = dkim_verify_result(t->dkim, i);
		(void)buf_printf(b, ";\r\n\tdkim=%s", dkim_result_name(sig->result));
		char why[160];
		if (sig->reason[0] == '\0' && sig->key_bits > 0)
			snprintf(why, sizeof(why), "%u-bit key%s", sig->key_bits,
			         sig->testing ? "; test mode" : "");
		else
			snprintf(why, sizeof(why), "%s%s", sig->reason,
			         sig->testing ? "; test mode" : "");
		dauth_ar_comment(b, why);
		if (sig->domain[0] != '\0')
			dauth_ar_prop(b, "header.d", sig->domain);
		if (sig->selector[0] != '\0')
			dauth_ar_prop(b, "header.s", sig->selector);
		if (sig->algorithm[0] != '\0')
			dauth_ar_prop(b, "header.a", sig->algorithm);
		if (sig->b_prefix[0] != '\0')
			dauth_ar_prop(b, "header.b", sig->b_prefix);
	}
}

static void dauth_ar_dmarc(struct dauth_tx *t, const struct dmarc_result *r, struct buf *b)
{
	(void)buf_printf(b, ";\r\n\tdmarc=%s", dmarc_status_name(r->status));
	char why[200];
	if (r->status == DMARC_FAIL || r->status == DMARC_PASS)
		snprintf(why, sizeof(why), "p=%s sp=%s dis=%s", dmarc_policy_name(t->found.rec.p),
		         dmarc_policy_name(t->found.rec.sp),
		         r->disp == DMARC_DISP_REJECT       ? "reject"
		         : r->disp == DMARC_DISP_QUARANTINE ? "quarantine"
		                                            : "none");
	else
		snprintf(why, sizeof(why), "%s", r->reason != NULL ? r->reason : "");
	dauth_ar_comment(b, why);
	if (t->from_ok)
		dauth_ar_prop(b, "header.from", t->from);
}

/* arc= (the method RFC 8617 adds to RFC 8601's registry): the chain's
 * result, the number of sets or why it failed, and the client's address
 * as smtp.remote-ip (the common practice, the address the chain was
 * received from). Left out when arc.verify is off. */
static void dauth_ar_arc(struct dauth_tx *t, struct buf *b)
{
	if (t->arc == NULL)
		return;
	unsigned sets = 0;
	const char *why = NULL;
	enum arc_result r = arc_verify_result(t->arc, &sets, &why);
	(void)buf_printf(b, ";\r\n\tarc=%s", arc_result_name(r));
	char comment[200];
	if (r == ARC_RESULT_PASS)
		snprintf(comment, sizeof(comment), "i=%u", sets);
	else
		snprintf(comment, sizeof(comment), "%s", r == ARC_RESULT_FAIL ? why : "");
	dauth_ar_comment(b, comment);
	dauth_ar_prop(b, "smtp.remote-ip", t->client_ip);
}

/* Our ARC set on top of everything (RFC 8617 §5.1): the AAR is our
 * Authentication-Results (ar: the whole field), cv= the verified chain. A
 * failure or a top block without room leaves the message unsealed
 * (logged): the seal is a courtesy to the next hop, never a reason to
 * refuse. The keys process answers within the call. */
static void dauth_seal(struct dauth_tx *t, struct policy_eod_req *eod, const struct buf *ar)
{
	static const char name[] = "Authentication-Results: ";
	const char *err = NULL, *hdr = NULL;
	unsigned sets = 0;
	if (t->seal == NULL)
		return;
	t->seal_conf.authres = (const char *)ar->data + (sizeof(name) - 1);
	t->seal_conf.chain = t->arc != NULL ? arc_verify_result(t->arc, &sets, NULL)
	                                    : ARC_RESULT_FAIL; /* unknown: cv=fail if sets */
	int rc = arc_seal_finish(t->seal, NULL, NULL, &err);
	if (rc == 1)
		hdr = arc_seal_header(t->seal, &err);
	else if (rc == 0)
		err = "signer did not answer at once"; /* keyproxy_dkim_sign always does */
	size_t n = hdr != NULL ? strlen(hdr) : 0;
	if (n < 2 || eod->top == NULL ||
	    (eod->top->max != 0 && eod->top->len + n > eod->top->max)) {
		log_warn("event=arc_seal_failed sid=%s qid=%s reason=\"%s\"", t->sid, eod->qid,
		         err != NULL ? err : "no room above the message");
		if (rc != 0)
			arc_seal_free(&t->seal);
		return;
	}
	(void)policy_eod_add_field(eod, hdr, n - 2);
	log_info("event=arc_sealed sid=%s qid=%s d=%s s=%s", t->sid, eod->qid, t->seal_key.domain,
	         t->seal_key.selector);
	arc_seal_free(&t->seal);
}

/* ---- the end-of-data check ---- */

/* The author domain: exactly one From field with a usable address
 * (RFC 7489 §6.6.1; the choices are in dauth/dmarc.h). */
static void dauth_from(struct dauth_tx *t, const char *hdr, size_t len)
{
	struct mail_hdr_field f, from = {0};
	size_t pos = 0, n = 0;
	while (mail_hdr_next(hdr, len, &pos, &f)) {
		if (mail_hdr_name_is(&f, "From")) {
			from = f;
			n++;
		}
	}
	t->from_ok = false;
	if (n == 0) {
		t->from_error = "no From field";
		return;
	}
	if (n > 1) {
		t->from_error = "several From fields";
		return;
	}
	char dom[256];
	int rc = mail_hdr_from_domain(from.value, from.value_len, dom, sizeof(dom));
	if (rc == MAIL_HDR_FROM_MULTI) {
		t->from_error = "From authors of different domains";
		return;
	}
	if (rc < 0 || strlen(dom) > DMARC_DOMAIN_MAX) {
		t->from_error = "unparsable From field";
		return;
	}
	/* An SMTPUTF8 From may have U-labels: DNS and alignment use A-labels. */
	char ascii[256];
	if (mail_domain_to_ascii(dom, strlen(dom), ascii, sizeof(ascii), NULL) < 0 ||
	    strlen(ascii) > DMARC_DOMAIN_MAX) {
		t->from_error = "unparsable From field";
		return;
	}
	snprintf(t->from, sizeof(t->from), "%s", ascii);
	t->from_ok = true;
}

static unsigned dauth_sample(void)
{
	unsigned char r[2];
	if (RAND_bytes(r, sizeof(r)) != 1)
		return 0; /* in the sample: the stricter choice */
	return (unsigned)((r[0] << 8) | r[1]) % 100;
}

static void dauth_evaluate(struct dauth_tx *t, struct dmarc_result *r)
{
	struct dmarc_dkim_sig sigs[DKIM_SIGS_MAX];
	size_t n = 0, count = t->dkim_timed_out ? 0 : dkim_verify_count(t->dkim);
	for (size_t i = 0; i < count && n < DKIM_SIGS_MAX; i++) {
		const struct dkim_verify_sig *s = dkim_verify_result(t->dkim, i);
		sigs[n].domain = s->domain;
		sigs[n].pass = s->result == DKIM_RESULT_PASS && !s->testing;
		n++;
	}
	struct dmarc_input in = {
	    .from_domain = t->from_ok ? t->from : NULL,
	    .from_error = t->from_error,
	    .spf_domain = t->spf_domain,
	    .spf_pass = t->spf_result == SPF_PASS,
	    .dkim = sigs,
	    .ndkim = n,
	    .sample = dauth_sample(),
	};
	dmarc_evaluate(t->ps->dmarc, &in, &t->found, r);
}

/* ---- the record for the aggregate reports (RFC 7489 §7.2) ---- */

static void dauth_rec_domain(char *out, size_t outlen, const char *addr_or_domain)
{
	const char *at = strrchr(addr_or_domain, '@');
	const char *d = at != NULL ? at + 1 : addr_or_domain;
	size_t n = strlen(d);
	out[0] = '\0';
	for (size_t i = 0; i < n; i++) /* a token dmarcrep_rec_decode takes */
		if ((unsigned char)d[i] < 0x21 || (unsigned char)d[i] > 0x7e)
			return;
	if (n < outlen) {
		for (size_t i = 0; i <= n; i++)
			out[i] = (char)(d[i] >= 'A' && d[i] <= 'Z' ? d[i] + 32 : d[i]);
	}
}

/* Messages whose From domain publishes a policy are recorded, with what was
 * applied (disposition: after dauth.dmarc_enforce) and why it differs from
 * what the domain asked (§7.2.1.1 PolicyOverrideType). */
static void dauth_record(struct dauth_tx *t, const struct policy_eod_req *eod,
                         const struct dmarc_result *r, enum dmarc_disposition applied)
{
	struct policy_smtp *ps = t->ps;
	if (ps->dmarc_sink == NULL || !t->from_ok || t->found.status != DMARC_PASS ||
	    (r->status != DMARC_PASS && r->status != DMARC_FAIL) || t->report_ip[0] == '\0')
		return;
	struct dmarcrep_rec *rec = xcalloc(1, sizeof(*rec));
	const struct dmarc_record *pr = &t->found.rec;
	rec->time = (uint64_t)time(NULL);
	dauth_rec_domain(rec->policy_domain, sizeof(rec->policy_domain), t->found.domain);
	rec->p = (uint8_t)pr->p;
	rec->sp = (uint8_t)pr->sp;
	rec->pct = (uint8_t)pr->pct;
	rec->adkim_strict = pr->adkim_strict;
	rec->aspf_strict = pr->aspf_strict;
	for (size_t i = 0; i < pr->nrua && i < DMARC_RUA_MAX; i++) {
		snprintf(rec->rua[rec->nrua], sizeof(rec->rua[0]), "%s", pr->rua[i]);
		rec->rua_max[rec->nrua++] = pr->rua_max[i];
	}
	snprintf(rec->source_ip, sizeof(rec->source_ip), "%s", t->report_ip);
	rec->disposition = (uint8_t)applied;
	rec->dkim_aligned = r->dkim_aligned;
	rec->spf_aligned = r->spf_aligned;
	if (r->status == DMARC_FAIL && (int)r->disp < (int)r->policy)
		rec->reason = DMARCREP_REASON_SAMPLED_OUT; /* pct: the next policy down */
	if (applied != r->disp)
		rec->reason = DMARCREP_REASON_LOCAL_POLICY; /* dauth.dmarc_enforce */
	dauth_rec_domain(rec->header_from, sizeof(rec->header_from), t->from);
	dauth_rec_domain(rec->env_from, sizeof(rec->env_from),
	                 t->null_sender ? t->spf_helo : t->spf_sender);
	if (eod->first_rcpt != NULL)
		dauth_rec_domain(rec->env_to, sizeof(rec->env_to), eod->first_rcpt);
	size_t n = t->dkim_timed_out ? 0 : dkim_verify_count(t->dkim);
	for (size_t i = 0; i < n && rec->ndkim < DMARCREP_DKIM_MAX; i++) {
		const struct dkim_verify_sig *sig = dkim_verify_result(t->dkim, i);
		struct dmarcrep_dkim *d = &rec->dkim[rec->ndkim];
		dauth_rec_domain(d->domain, sizeof(d->domain), sig->domain);
		if (d->domain[0] == '\0')
			continue; /* the schema wants a domain */
		dauth_rec_domain(d->selector, sizeof(d->selector), sig->selector);
		d->result = (uint8_t)((unsigned)sig->result < DMARCREP_DKIM_N ? (unsigned)sig->result : 0);
		rec->ndkim++;
	}
	dauth_rec_domain(rec->spf_domain, sizeof(rec->spf_domain), t->spf_domain);
	rec->spf_helo = t->null_sender;
	rec->spf_result = (uint8_t)((unsigned)t->spf_result < DMARCREP_SPF_N ? (unsigned)t->spf_result : 0);
	struct buf b;
	buf_init(&b, DMARCREP_BODY_MAX);
	if (dmarcrep_rec_encode(rec, &b) == 0)
		ps->dmarc_sink(ps->dmarc_sink_arg, b.data, b.len);
	buf_free(&b);
	free(rec);
}

/* Add our fields (the last added is the message's first line) and decide. */
static void dauth_finish(struct dauth_tx *t)
{
	const struct conf *conf = t->ps->conf;
	struct policy_job *job = t->job;
	struct policy_eod_req *eod = t->eod;
	struct dmarc_result r;
	dauth_evaluate(t, &r);
	dauth_stop(t);

	bool quarantine = false, reject = false;
	enum conf_dmarc_enforce en = conf->dauth.dmarc_enforce;
	if (r.disp == DMARC_DISP_REJECT && en == CONF_DMARC_REJECT)
		reject = true;
	else if (r.disp != DMARC_DISP_NONE && en != CONF_DMARC_NONE)
		quarantine = true;

	struct buf b;
	buf_init(&b, DAUTH_FIELD_MAX);
	if (quarantine) {
		(void)buf_printf(&b, "X-Hikyaku-Quarantine: dmarc=%s", dmarc_status_name(r.status));
		if (t->from_ok)
			dauth_ar_prop(&b, "header.from", t->from);
		(void)policy_eod_add_field(eod, (const char *)b.data, b.len);
		eod->quarantine = true;
		buf_reset(&b);
	}
	size_t rs = strlen(t->received_spf);
	if (rs >= 2 && t->received_spf[rs - 2] == '\r')
		(void)policy_eod_add_field(eod, t->received_spf, rs - 2);
	const char *id =
	    conf->dauth.authserv_id[0] != '\0' ? conf->dauth.authserv_id : conf->hostname;
	(void)buf_printf(&b, "Authentication-Results: %s", id);
	dauth_ar_spf(t, &b);
	dauth_ar_dkim(t, &b);
	dauth_ar_dmarc(t, &r, &b);
	dauth_ar_arc(t, &b);
	(void)policy_eod_add_field(eod, (const char *)b.data, b.len);
	/* a message refused below is not sealed: two signatures for nothing
	 * (the same conditions as the replies below) */
	bool tempfail =
	    r.status == DMARC_TEMPERROR && conf->dauth.temperror == CONF_DAUTH_TEMPERROR_TEMPFAIL;
	bool spf_refused =
	    conf->dauth.spf_reject && t->spf_result == SPF_FAIL && r.status != DMARC_PASS;
	if (!reject && !tempfail && !spf_refused)
		dauth_seal(t, eod, &b);
	buf_free(&b);

	char qf[LOG_Q_MAX];
	log_info("event=dauth sid=%s qid=%s spf=%s dkim_sigs=%zu dmarc=%s from=%s disposition=%s"
	         " arc=%s",
	         t->sid, eod->qid, spf_result_name(t->spf_result),
	         t->dkim_timed_out ? 0 : dkim_verify_count(t->dkim), dmarc_status_name(r.status),
	         t->from_ok ? log_qs(qf, t->from) : "-",
	         reject       ? "reject"
	         : quarantine ? "quarantine"
	                      : "none",
	         t->arc != NULL ? arc_result_name(arc_verify_result(t->arc, NULL, NULL)) : "-");
	dauth_record(t, eod, &r,
	             reject       ? DMARC_DISP_REJECT
	             : quarantine ? DMARC_DISP_QUARANTINE
	                          : DMARC_DISP_NONE);
	if (reject) {
		policy_job_reply(job, 550, "5.7.1", "Email rejected per DMARC policy for %s",
		                 t->from_ok ? t->from : "the From domain");
	} else if (r.status == DMARC_TEMPERROR &&
	           conf->dauth.temperror == CONF_DAUTH_TEMPERROR_TEMPFAIL) {
		policy_job_reply(job, 451, "4.7.1", "Temporary DMARC error, try again later");
	} else if (conf->dauth.spf_reject && t->spf_result == SPF_FAIL && r.status != DMARC_PASS) {
		/* RFC 7489 §10.1: only after DMARC had its say */
		policy_job_reply(job, 550, "5.7.23", "SPF validation failed");
	} else {
		policy_job_dunno(job);
	}
}

/* All answered: the verdict comes from its own turn of the loop, never from
 * inside an SPF, DKIM or DNS callback, since a refusal frees the
 * transaction (and with it the verifier whose callback is running). */
static void dauth_maybe_finish(struct dauth_tx *t)
{
	if (t->job == NULL || t->starting || t->finishing || !t->spf_done || !t->dkim_done ||
	    !t->dmarc_done || !t->arc_done)
		return;
	t->finishing = true;
	event_active(t->finish_ev, EV_TIMEOUT, 0);
}

static void dauth_on_finish_ev(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	dauth_finish(arg);
}

static void dauth_on_dkim(struct dkim_verify *v, void *arg)
{
	struct dauth_tx *t = arg;
	(void)v;
	t->dkim_done = true;
	dauth_maybe_finish(t);
}

static void dauth_on_arc(struct arc_verify *v, void *arg)
{
	struct dauth_tx *t = arg;
	(void)v;
	t->arc_done = true;
	dauth_maybe_finish(t);
}

static void dauth_on_dmarc(const struct dmarc_policy_found *f, void *arg)
{
	struct dauth_tx *t = arg;
	t->dq = NULL;
	t->found = *f;
	t->dmarc_done = true;
	dauth_maybe_finish(t);
}

/* dauth.timeout: what has not answered is a temperror; never a hang. */
static void dauth_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct dauth_tx *t = arg;
	(void)fd;
	(void)what;
	log_info("event=dauth_timeout sid=%s spf=%s dkim=%s dmarc=%s arc=%s", t->sid,
	         t->spf_done ? "done" : "pending", t->dkim_done ? "done" : "pending",
	         t->dmarc_done ? "done" : "pending", t->arc_done ? "done" : "pending");
	if (!t->spf_done) {
		spf_cancel(&t->spf);
		t->spf_done = true;
		t->spf_result = SPF_TEMPERROR;
		snprintf(t->spf_reason, sizeof(t->spf_reason), "timed out");
		t->received_spf[0] = '\0';
	}
	if (!t->dkim_done) {
		dkim_verify_cancel(t->dkim);
		t->dkim_done = t->dkim_timed_out = true;
	}
	if (!t->arc_done) {
		/* RFC 8617 §5.2: a key that cannot be had fails the chain */
		arc_verify_cancel(t->arc, "key lookup timed out");
		t->arc_done = true;
	}
	if (!t->dmarc_done) {
		dmarc_discovery_cancel(&t->dq);
		t->dmarc_done = true;
		t->found.status = DMARC_TEMPERROR;
		t->found.reason = "policy lookup timed out";
	}
	dauth_maybe_finish(t);
}

static void dauth_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct dauth_tx *t = req->eod.dauth;
	if (t == NULL) {
		policy_job_dunno(job);
		return;
	}
	const struct conf *conf = ps->conf;
	policy_job_set_state(job, t);
	/* our own timer ends it first; the engine's is a backstop */
	policy_job_set_timeout(job, conf->dauth.timeout + 5000, POLICY_FAIL_TEMPFAIL);
	t->job = job;
	t->eod = &req->eod;
	t->starting = true;
	dauth_from(t, req->eod.hdr, req->eod.hdr_len);
	if (dkim_verify_finish(t->dkim, dauth_on_dkim, t) == 1)
		t->dkim_done = true;
	if (t->arc == NULL || arc_verify_finish(t->arc, dauth_on_arc, t) == 1)
		t->arc_done = true;
	if (!t->from_ok) {
		t->dmarc_done = true; /* dmarc_evaluate() decides from from_error */
	} else {
		t->dq = dmarc_discover(ps->dmarc, &t->dmarc_res, t->from, dauth_on_dmarc, t);
	}
	t->timer = evtimer_new(ps->base, dauth_on_timeout, t);
	t->finish_ev = evtimer_new(ps->base, dauth_on_finish_ev, t);
	struct timeval tv = {(time_t)(conf->dauth.timeout / 1000),
	                     (suseconds_t)(conf->dauth.timeout % 1000) * 1000};
	evtimer_add(t->timer, &tv);
	t->starting = false;
	dauth_maybe_finish(t);
}

static void dauth_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct dauth_tx *t = policy_job_state(job);
	(void)why;
	if (t == NULL)
		return;
	if (!t->dkim_done)
		dkim_verify_cancel(t->dkim);
	if (!t->arc_done && t->arc != NULL)
		arc_verify_cancel(t->arc, "cancelled");
	dauth_stop(t);
}

const struct policy_check policy_check_dauth = {
    .name = "dauth",
    .stage = POLICY_EOD,
    .start = dauth_start,
    .cancel = dauth_cancel,
    .timeout_ms = 0, /* set per job from dauth.timeout */
    .failmode = POLICY_FAIL_TEMPFAIL,
};
