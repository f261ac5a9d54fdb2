/* policy_dnsbl.c — DNS block and allow lists (RFC 5782) of the client:
 *   dnsbl_start  (connect) sends an A query for the client's reversed
 *                address under every zone of dnsbl.lists and
 *                dnsbl.allow_lists at once, and lets the chain go on: the
 *                lookups belong to the client (policy_client.dnsbl) and run
 *                while FCrDNS runs and the client says EHLO.
 *   dnsbl_wait   (connect, last) waits for the answers, at most
 *                dnsbl.timeout; lists that did not answer by then do not
 *                count (fail open: a slow list never holds mail).
 *   dnsbl        (RCPT) refuses with 554 5.7.1 naming the list when the
 *                score (block weights minus allow weights) reaches
 *                dnsbl.threshold.
 * Authenticated clients and access.allow networks are exempt; loopback
 * clients are not looked up unless policy.fcrdns_loopback (tests).
 *
 * Runs in smtpd on the event loop. The answers are hostile: only A records
 * of 4 octets are read, and only the configured codes count. */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "milter/milter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dnsbl_lookup {
	struct policy_dnsbl *d;
	struct dns_query *q; /* NULL once answered */
	const struct conf_dnsbl_list *list;
	const struct cidr_codes *codes;
	bool allow;
};

struct policy_dnsbl {
	struct policy_client *client;
	struct policy_job *waiter; /* dnsbl_wait, while it waits */
	size_t n, pending;
	long best_weight; /* of the heaviest block list that listed the client */
	struct dnsbl_lookup l[];
};

/* RFC 5782 §2.1 and §2.4: "2.0.0.127.zone", nibbles for IPv6. */
static bool dnsbl_name(const struct sockaddr_storage *ss, const char *zone, char *out,
                       size_t outlen)
{
	int family;
	unsigned char a[16];
	if (!cidr_sockaddr((const struct sockaddr *)ss, &family, a))
		return false;
	size_t n = 0;
	if (family == AF_INET) {
		n = (size_t)snprintf(out, outlen, "%u.%u.%u.%u.%s", a[3], a[2], a[1], a[0], zone);
		return n < outlen;
	}
	static const char hex[] = "0123456789abcdef";
	if (outlen < 64 + strlen(zone) + 1)
		return false;
	for (int i = 15; i >= 0; i--) {
		out[n++] = hex[a[i] & 15];
		out[n++] = '.';
		out[n++] = hex[a[i] >> 4];
		out[n++] = '.';
	}
	snprintf(out + n, outlen - n, "%s", zone);
	return true;
}

void policy_dnsbl_free(struct policy_dnsbl **dp)
{
	struct policy_dnsbl *d = *dp;
	if (d == NULL)
		return;
	*dp = NULL;
	for (size_t i = 0; i < d->n; i++)
		dns_cancel(d->l[i].q);
	free(d);
}

void policy_client_clear(struct policy_client *c)
{
	policy_dnsbl_free(&c->dnsbl);
	milter_sess_free(&c->milter);
}

static void dnsbl_finish(struct policy_dnsbl *d)
{
	struct policy_client *c = d->client;
	struct policy_job *w = d->waiter;
	c->dnsbl_done = true;
	log_info("event=dnsbl sid=%s client=%s score=%ld list=%s dnswl=%s", c->sid, c->addr,
	         c->dnsbl_score, c->dnsbl_list[0] != '\0' ? c->dnsbl_list : "-",
	         c->dnswl ? "yes" : "no");
	/* the client keeps d until it ends (nothing left to cancel) */
	d->waiter = NULL;
	if (w != NULL) {
		policy_job_set_state(w, NULL);
		policy_job_dunno(w);
	}
}

static void dnsbl_on_answer(const struct dns_raw_result *res, void *arg)
{
	struct dnsbl_lookup *lk = arg;
	struct policy_dnsbl *d = lk->d;
	struct policy_client *c = d->client;
	lk->q = NULL; /* freed after this callback */
	d->pending--;
	bool listed = false;
	if (res->status == DNS_OK) {
		for (size_t i = 0; i < res->n && !listed; i++)
			listed = res->len[i] == 4 && cidr_codes_match(lk->codes, res->rdata[i]);
	} else if (res->status == DNS_TEMPFAIL) {
		log_info("event=dnsbl_tempfail sid=%s client=%s zone=%s reason=\"%s\"", c->sid,
		         c->addr, lk->list->zone, res->error != NULL ? res->error : "?");
	}
	if (listed) {
		long w = (long)lk->list->weight;
		if (lk->allow) {
			c->dnsbl_score -= w;
			c->dnswl = true;
		} else {
			c->dnsbl_score += w;
			if (w > d->best_weight) {
				d->best_weight = w;
				snprintf(c->dnsbl_list, sizeof(c->dnsbl_list), "%s",
				         lk->list->zone);
			}
		}
	}
	if (d->pending == 0)
		dnsbl_finish(d);
}

static bool dnsbl_is_loopback(const struct sockaddr_storage *ss)
{
	int family;
	unsigned char a[16];
	if (!cidr_sockaddr((const struct sockaddr *)ss, &family, a))
		return false;
	static const unsigned char lo6[16] = {[15] = 1};
	return family == AF_INET ? a[0] == 127 : memcmp(a, lo6, 16) == 0;
}

static void dnsbl_start_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct policy_client *c = req->client;
	const struct conf_dnsbl *cf = &ps->conf->dnsbl;
	size_t n = cf->n_lists + cf->n_allow_lists;
	struct dns *dns;
	if (n == 0 || c->access == POLICY_ACCESS_ALLOW || c->dnsbl != NULL ||
	    (!ps->conf->policy.fcrdns_loopback && dnsbl_is_loopback(&c->ss)) ||
	    (dns = policy_smtp_dns(ps)) == NULL) {
		c->dnsbl_done = true;
		policy_job_dunno(job);
		return;
	}
	struct policy_dnsbl *d = xcalloc(1, sizeof(*d) + n * sizeof(d->l[0]));
	d->client = c;
	c->dnsbl = d;
	/* all queries first: answers come from the loop, never from inside */
	for (size_t i = 0; i < n; i++) {
		struct dnsbl_lookup *lk = &d->l[i];
		bool allow = i >= cf->n_lists;
		const struct conf_dnsbl_list *list =
		    allow ? &cf->allow_lists[i - cf->n_lists] : &cf->lists[i];
		char name[512];
		if (!dnsbl_name(&c->ss, list->zone, name, sizeof(name)))
			continue;
		lk->d = d;
		lk->list = list;
		lk->codes = &ps->dnsbl_codes[i];
		lk->allow = allow;
		lk->q = dns_resolve_raw(dns, name, DNS_RR_A, dnsbl_on_answer, lk);
		d->pending++;
	}
	d->n = n;
	if (d->pending == 0)
		c->dnsbl_done = true;
	policy_job_dunno(job);
}

const struct policy_check policy_check_dnsbl_start = {
    .name = "dnsbl_start",
    .stage = POLICY_CONNECT,
    .start = dnsbl_start_start,
};

static void dnsbl_wait_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct policy_dnsbl *d = req->client->dnsbl;
	if (d == NULL || d->pending == 0) {
		policy_job_dunno(job);
		return;
	}
	d->waiter = job;
	policy_job_set_state(job, d);
	policy_job_set_timeout(job, ps->conf->dnsbl.timeout, POLICY_FAIL_ACCEPT);
}

static void dnsbl_wait_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct policy_dnsbl *d = policy_job_state(job);
	if (d == NULL)
		return;
	d->waiter = NULL;
	if (why == POLICY_CANCEL_TIMEOUT) {
		/* what answered counts; the rest never will */
		for (size_t i = 0; i < d->n; i++) {
			dns_cancel(d->l[i].q);
			d->l[i].q = NULL;
		}
		d->pending = 0;
		dnsbl_finish(d);
	}
}

const struct policy_check policy_check_dnsbl_wait = {
    .name = "dnsbl_wait",
    .stage = POLICY_CONNECT,
    .start = dnsbl_wait_start,
    .cancel = dnsbl_wait_cancel,
};

static void dnsbl_rcpt_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	if (c->auth_user != NULL || c->access == POLICY_ACCESS_ALLOW ||
	    c->dnsbl_score < (long)ps->conf->dnsbl.threshold) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 554, "5.7.1",
	                 "Service unavailable; Client host [%s] blocked using %s", c->addr,
	                 c->dnsbl_list[0] != '\0' ? c->dnsbl_list : "DNS lists");
}

const struct policy_check policy_check_dnsbl = {
    .name = "dnsbl",
    .stage = POLICY_RCPT,
    .start = dnsbl_rcpt_start,
};
