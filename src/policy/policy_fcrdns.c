/* policy_fcrdns.c — the "fcrdns" connect check: the client's reverse DNS,
 * forward-confirmed. The PTR names of its address (RFC 1035 §3.5, RFC 3596
 * §2.5), then A/AAAA of at most POLICY_FCRDNS_NAMES_MAX of them in
 * parallel; the first name whose addresses hold the client's is confirmed
 * (Postfix's "reverse/forward lookup", RFC 8601 §2.7.3 "iprev"). It is
 * what Received names (policy_client_received) and, with
 * policy.require_fcrdns, a condition to send mail: 450 4.7.25 (RFC 7372).
 *
 * Loopback clients are "localhost" without a lookup unless
 * policy.fcrdns_loopback (for tests against a DNS server on loopback).
 * The resolver (src/dns on libunbound, dns.forwarders) is made at the
 * first lookup; no lookup blocks the loop.
 *
 * Runs in smtpd on the event loop. Every DNS answer is hostile: src/dns
 * keeps only well-formed LDH names, and a PTR name that is an address
 * literal ("192.0.2.1") is never "resolved" as one. */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "dauth/dmarc.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fcrdns_state;
struct fcrdns_fwd { /* the argument of one forward lookup */
	struct fcrdns_state *st;
	size_t i;
};

struct fcrdns_state {
	struct policy_job *job;
	struct policy_client *client;
	struct dns_query *ptr;
	struct dns_query *fwd[POLICY_FCRDNS_NAMES_MAX];
	struct fcrdns_fwd fwd_arg[POLICY_FCRDNS_NAMES_MAX];
	char names[POLICY_FCRDNS_NAMES_MAX][256];
	size_t n, pending;
	bool tempfail; /* a forward lookup failed: "none" is not certain */
};

const char *policy_rdns_status_name(enum policy_rdns st)
{
	static const char *const names[] = {"pending", "confirmed", "none", "tempfail"};
	return st <= POLICY_RDNS_TEMPFAIL ? names[st] : "?";
}

void policy_client_received(const struct policy_client *c, char *out, size_t outlen)
{
	const char *name = c->rdns_status == POLICY_RDNS_CONFIRMED ? c->rdns : "unknown";
	snprintf(out, outlen, "%s [%s]", name, c->addr);
}

static bool fcrdns_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
	}
	return false;
}

/* Is sa the client's address? A v4-mapped client matches an A record. */
static bool fcrdns_same_addr(const struct sockaddr_storage *client, const struct sockaddr *sa)
{
	const uint8_t *c, *a;
	if (client->ss_family == AF_INET6) {
		const struct in6_addr *c6 = &((const struct sockaddr_in6 *)client)->sin6_addr;
		if (sa->sa_family == AF_INET6)
			return memcmp(c6, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16) == 0;
		if (!IN6_IS_ADDR_V4MAPPED(c6) || sa->sa_family != AF_INET)
			return false;
		c = c6->s6_addr + 12;
	} else if (client->ss_family == AF_INET && sa->sa_family == AF_INET) {
		c = (const uint8_t *)&((const struct sockaddr_in *)client)->sin_addr;
	} else {
		return false;
	}
	a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	return memcmp(c, a, 4) == 0;
}

static void fcrdns_cancel_queries(struct fcrdns_state *st)
{
	dns_cancel(st->ptr);
	st->ptr = NULL;
	for (size_t i = 0; i < st->n; i++) {
		dns_cancel(st->fwd[i]);
		st->fwd[i] = NULL;
	}
}

static void fcrdns_log(const struct policy_client *c)
{
	log_info("event=fcrdns sid=%s client=%s rdns=%s status=%s", c->sid, c->addr,
	         c->rdns_status == POLICY_RDNS_CONFIRMED ? c->rdns : "unknown",
	         policy_rdns_status_name(c->rdns_status));
}

static void fcrdns_finish(struct fcrdns_state *st, enum policy_rdns status, const char *name)
{
	struct policy_job *job = st->job;
	struct policy_client *c = st->client;
	fcrdns_cancel_queries(st);
	c->rdns_status = status;
	snprintf(c->rdns, sizeof(c->rdns), "%s", status == POLICY_RDNS_CONFIRMED ? name : "");
	fcrdns_log(c);
	policy_job_set_state(job, NULL);
	free(st);
	policy_job_dunno(job); /* the MAIL check "fcrdns_required" decides */
}

static void fcrdns_on_forward(const struct dns_mx_result *res, void *arg)
{
	const struct fcrdns_fwd *fa = arg;
	struct fcrdns_state *st = fa->st;
	st->fwd[fa->i] = NULL; /* freed after this callback: not to cancel */
	st->pending--;
	if (res->status == DNS_TEMPFAIL)
		st->tempfail = true;
	for (size_t h = 0; h < res->nhosts; h++) {
		const struct dns_host *host = &res->hosts[h];
		for (size_t k = 0; k < host->naddrs; k++) {
			if (fcrdns_same_addr(&st->client->ss,
			                     (const struct sockaddr *)&host->addrs[k])) {
				fcrdns_finish(st, POLICY_RDNS_CONFIRMED, st->names[fa->i]);
				return;
			}
		}
	}
	if (st->pending == 0)
		fcrdns_finish(st, st->tempfail ? POLICY_RDNS_TEMPFAIL : POLICY_RDNS_NONE, NULL);
}

static void fcrdns_on_ptr(const struct dns_mx_result *res, void *arg)
{
	struct fcrdns_state *st = arg;
	struct policy_smtp *ps = policy_job_ctx(st->job);
	st->ptr = NULL; /* freed after this callback */
	if (res->status != DNS_OK) {
		fcrdns_finish(st,
		              res->status == DNS_TEMPFAIL ? POLICY_RDNS_TEMPFAIL : POLICY_RDNS_NONE,
		              NULL);
		return;
	}
	for (size_t i = 0; i < res->nhosts && st->n < POLICY_FCRDNS_NAMES_MAX; i++) {
		unsigned char buf[sizeof(struct in6_addr)];
		/* a PTR name "192.0.2.1" is a name, not the address it spells */
		if (inet_pton(AF_INET, res->hosts[i].name, buf) == 1 ||
		    inet_pton(AF_INET6, res->hosts[i].name, buf) == 1)
			continue;
		snprintf(st->names[st->n++], sizeof(st->names[0]), "%s", res->hosts[i].name);
	}
	if (st->n == 0) {
		fcrdns_finish(st, POLICY_RDNS_NONE, NULL);
		return;
	}
	/* all queries first: their callbacks come from the loop, never from
	 * inside dns_resolve_host() */
	for (size_t i = 0; i < st->n; i++) {
		st->fwd_arg[i].st = st;
		st->fwd_arg[i].i = i;
		st->fwd[i] =
		    dns_resolve_host(ps->dns, st->names[i], fcrdns_on_forward, &st->fwd_arg[i]);
	}
	st->pending = st->n;
}

struct dns *policy_smtp_dns(struct policy_smtp *ps)
{
	if (ps->dns != NULL || ps->dns_failed)
		return ps->dns;
	const struct conf *conf = ps->conf;
	char err[256];
	struct dns_conf dc = {
	    .forwarders = (const char *const *)conf->dns.forwarders,
	    .n_forwarders = conf->dns.n_forwarders,
	    .trust_anchor_file = conf->dns.trust_anchor,
	    .ipv6 = true, /* the client may be on either family */
	    /* the check's own timeout (the engine's) ends it first; this
	     * only bounds the resolver's queries */
	    .timeout_ms = (unsigned)conf->policy.fcrdns_timeout * 2,
	};
	if (dns_create(ps->base, &dc, &ps->dns, err, sizeof(err)) < 0) {
		log_err("event=dns_error reason=\"%s\" (client names will be unknown)", err);
		ps->dns_failed = true;
	}
	return ps->dns;
}

void policy_smtp_prepare(struct policy_smtp *ps)
{
	/* The resolver reads its files now, and so does the public suffix
	 * list of DMARC: the sandbox closes the file system after this. */
	(void)policy_smtp_dns(ps);
	if (ps->conf->dauth.inbound && ps->dmarc == NULL)
		ps->dmarc = dmarc_create();
}

static void fcrdns_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct policy_client *c = req->client;
	/* A local submission is this host: "localhost", no lookup. */
	if (c->local || (!ps->conf->policy.fcrdns_loopback && fcrdns_is_loopback(&c->ss))) {
		c->rdns_status = POLICY_RDNS_CONFIRMED;
		snprintf(c->rdns, sizeof(c->rdns), "localhost");
		policy_job_dunno(job);
		return;
	}
	struct dns *dns = policy_smtp_dns(ps);
	if (dns == NULL) {
		c->rdns_status = POLICY_RDNS_TEMPFAIL;
		fcrdns_log(c);
		policy_job_dunno(job);
		return;
	}
	struct fcrdns_state *st = xcalloc(1, sizeof(*st));
	st->job = job;
	st->client = c;
	policy_job_set_state(job, st);
	st->ptr = dns_resolve_ptr(dns, (const struct sockaddr *)&c->ss, fcrdns_on_ptr, st);
}

static void fcrdns_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct fcrdns_state *st = policy_job_state(job);
	if (st == NULL)
		return;
	fcrdns_cancel_queries(st);
	if (why == POLICY_CANCEL_TIMEOUT) {
		st->client->rdns_status = POLICY_RDNS_TEMPFAIL;
		st->client->rdns[0] = '\0';
		fcrdns_log(st->client);
	}
	free(st);
}

/* A timeout leaves the name unknown (the cancel above): the connect stage
 * only finds the name, so it accepts; "fcrdns_required" refuses at MAIL.
 * The timeout is set per job from policy.fcrdns_timeout. */
static void fcrdns_start_timed(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	policy_job_set_timeout(job, ps->conf->policy.fcrdns_timeout, POLICY_FAIL_ACCEPT);
	fcrdns_start(job);
}

const struct policy_check policy_check_fcrdns = {
    .name = "fcrdns",
    .stage = POLICY_CONNECT,
    .start = fcrdns_start_timed,
    .cancel = fcrdns_cancel,
};

/* fcrdns_required (MAIL): with policy.require_fcrdns, a client without a
 * confirmed name is refused, at each MAIL, as Postfix's smtpd_delay_reject
 * gives client restrictions at RCPT: the client learns why, and one that
 * authenticated or sends from relay.trusted_networks is exempt. */
static void fcrdns_required_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	if (!ps->conf->policy.require_fcrdns || c->rdns_status == POLICY_RDNS_CONFIRMED ||
	    c->auth_user != NULL || c->local ||
	    conf_is_trusted_network(ps->conf, (const struct sockaddr *)&c->ss)) {
		policy_job_dunno(job);
		return;
	}
	/* RFC 7372 X.7.25 "reverse DNS validation failed"; 450 for the
	 * temporary and the definite case alike, as Postfix's
	 * unknown_client_reject_code: a DNS fixed later lets the mail in. */
	policy_job_reply(job, 450, "4.7.25",
	                 "Client host rejected: cannot find your hostname, [%s]", c->addr);
}

const struct policy_check policy_check_fcrdns_required = {
    .name = "fcrdns_required",
    .stage = POLICY_MAIL,
    .start = fcrdns_required_start,
};
