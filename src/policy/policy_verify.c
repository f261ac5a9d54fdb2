/* policy_verify.c — the "verify" RCPT check: recipients of relay_domains
 * verified at their route's server during the SMTP session
 * (routes[].verify_recipients), as Postfix's reject_unverified_recipient:
 * a short LMTP/SMTP connection through smtpc (LHLO/EHLO, MAIL FROM:<>,
 * RCPT TO, then RSET/QUIT; never DATA), so an unknown user gets 550 at RCPT
 * instead of a bounce later.
 *
 * The check answers later; the session waits for the chain's verdict
 * (policy.h) without reading, so the replies to pipelined commands behind
 * this RCPT (RFC 2920) keep their order. The engine bounds the wait
 * (relay.verify_timeout): then the RCPT gets routes[].verify_tempfail and
 * the probe is cancelled (smtpc's own per-stage timeouts would let a tarpit
 * hold it far longer). At most VERIFY_PROBES_MAX probes are in flight per
 * server, whatever the number of sessions: past that a RCPT gets the
 * tempfail answer without a probe, so a slow backend cannot make us pile up
 * connections.
 * Only the reply to the RCPT itself is an answer about the user: a failed
 * connection, greeting, EHLO/LHLO, STARTTLS or MAIL is a tempfail.
 * Definite answers are cached briefly (relay.verify_positive_ttl,
 * relay.verify_negative_ttl) in a fixed-size table, so a client cannot
 * grow it; a collision only costs another probe.
 *
 * Runs in smtpd on the event loop. The address comes from the client and
 * was parsed by mail/address.c; the probe's replies are parsed by smtpc. */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"
#include "mail/idna.h"
#include "smtpc/client.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/time.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_CACHE_SLOTS 1024
#define VERIFY_TEXT_MAX 200
/* Probes in flight per smtpd server: each holds a socket for up to
 * relay.verify_timeout. A constant well below limits.connections' default
 * (1000) and the descriptor limit. */
#define VERIFY_PROBES_MAX 64

/* The smtpd processes share the bound: each may have its part in flight. */
static unsigned verify_probes_max = VERIFY_PROBES_MAX;

void policy_verify_set_processes(unsigned n)
{
	verify_probes_max = n > 1 ? (VERIFY_PROBES_MAX + n - 1) / n : VERIFY_PROBES_MAX;
}

struct verify_entry {
	char addr[MAIL_PATH_MAX + 1]; /* "" for a free slot */
	uint64_t expires_us;
	int code; /* the RCPT reply: 2xx or 5xx */
	char enh[16];
	char text[VERIFY_TEXT_MAX];
};

struct verify_probe;

struct policy_verify {
	const struct conf *conf;
	struct smtpc *smtpc; /* our own client: its idle cache stays empty */
	struct verify_entry *cache;
	struct verify_probe *probes; /* in flight */
	size_t n_probes;
};

struct verify_probe {
	struct policy_verify *v;
	struct policy_job *job;
	const char *sid;
	const struct conf_route *route;
	struct smtpc_session *delivery; /* until its result or a cancel */
	char addr[MAIL_PATH_MAX + 1];
	const char *rcpts[1];
	struct smtpc_target target;
	struct smtpc_dest dest;
	struct smtpc_msg msg;
	char unix_path[108];
	char helo[256];
	struct verify_probe *next, *prev;
};

static uint64_t verify_now_us(void)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* FNV-1a of the address: the slot it is cached in. */
static size_t verify_slot(const char *addr)
{
	uint64_t h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (size_t)(h % VERIFY_CACHE_SLOTS);
}

static const struct verify_entry *verify_cache_get(struct policy_verify *v, const char *addr)
{
	const struct verify_entry *e = &v->cache[verify_slot(addr)];
	if (e->addr[0] == '\0' || strcmp(e->addr, addr) != 0 || e->expires_us <= verify_now_us())
		return NULL;
	return e;
}

static void verify_cache_put(struct policy_verify *v, const struct conf *conf, const char *addr,
                             const struct smtpc_rcpt_result *rr)
{
	uint64_t ttl = rr->ok ? conf->relay.verify_positive_ttl : conf->relay.verify_negative_ttl;
	if (ttl == 0 || (!rr->ok && !rr->permanent))
		return;
	struct verify_entry *e = &v->cache[verify_slot(addr)];
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	e->expires_us = verify_now_us() + ttl * 1000;
	e->code = rr->ok ? 250 : rr->code / 100 == 5 ? rr->code : 550;
	snprintf(e->enh, sizeof(e->enh), "%s", rr->enh);
	size_t n = strnlen(rr->text, sizeof(e->text) - 1);
	memcpy(e->text, rr->text, n);
	e->text[n] = '\0';
}

/* The route's address as the probe's destination: "unix:/path", or a
 * numeric "host:port" / "[v6]:port" (conf_routes_check made sure). */
static int verify_dest(struct verify_probe *p, const struct conf *conf)
{
	static const enum smtpc_tls pol[] = {SMTPC_TLS_NONE, SMTPC_TLS_MAY, SMTPC_TLS_ENCRYPT,
	                                     SMTPC_TLS_VERIFY};
	const char *addr = p->route->address;
	p->dest.lmtp = p->route->transport == CONF_TRANSPORT_LMTP;
	p->dest.tls = pol[p->route->tls];
	snprintf(p->helo, sizeof(p->helo), "%s",
	         conf->delivery.helo_name[0] != '\0' ? conf->delivery.helo_name : conf->hostname);
	p->dest.helo_name = p->helo;
	p->dest.connect_timeout_ms = conf->relay.verify_timeout;
	p->dest.command_timeout_ms = conf->relay.verify_timeout;
	p->dest.data_timeout_ms = conf->relay.verify_timeout;
	if (strncmp(addr, "unix:", 5) == 0) {
		snprintf(p->unix_path, sizeof(p->unix_path), "%s", addr + 5);
		p->dest.unix_path = p->unix_path;
		return 0;
	}
	struct smtpc_target *t = &p->target;
	if (smtpc_target_parse(addr, t) != 1)
		return -1; /* a name: conf_routes_check allows only numeric hosts here */
	p->dest.targets = t;
	p->dest.ntargets = 1;
	return 0;
}

/* Answer the RCPT: ok (code 2xx), refused (5xx) or not known (any other
 * code, 0 for no answer). */
static void verify_answer(struct policy_job *job, const char *sid, const struct conf_route *route,
                          const char *addr, int code, const char *enh, const char *text,
                          bool probed)
{
	char q[LOG_Q_MAX], qt[LOG_Q_MAX];
	const char *result = code / 100 == 2 ? "ok" : code / 100 == 5 ? "refused" : "tempfail";

	/* info for a probe (bounded by the probes), debug for an answer
	 * without one (cache hits come as fast as a client can send) */
	log_msg(probed ? LOG_LVL_INFO : LOG_LVL_DEBUG,
	        "event=rcpt_verify sid=%s rcpt=%s result=%s code=%d cached=%s text=%s", sid,
	        log_qs(q, addr), result, code, probed ? "no" : "yes", log_qs(qt, text));
	if (code / 100 == 2 || (code / 100 != 5 && route->verify_tempfail == CONF_VERIFY_ACCEPT)) {
		policy_job_dunno(job);
	} else if (code / 100 == 5) {
		/* the server's own code (550 5.1.1 for an unknown user), its text
		 * on one line of printable ASCII: it goes into our reply */
		bool ok_enh = enh[0] == '5' && enh[1] == '.';
		char why[VERIFY_TEXT_MAX];
		size_t n = 0;
		for (; text[n] != '\0' && n + 1 < sizeof(why); n++)
			why[n] = text[n] >= 0x20 && text[n] < 0x7f ? text[n] : '?';
		why[n] = '\0';
		policy_job_reply(job, code >= 550 && code <= 559 ? code : 550,
		                 ok_enh ? enh : "5.1.1", "<%s>: Recipient address rejected: %s",
		                 addr, n > 0 ? why : "unknown user");
	} else {
		/* RFC 3463 X.4.1: no answer from the host */
		policy_job_reply(job, 450, "4.4.1",
		                 "<%s>: Recipient address verification failed, try again later",
		                 addr);
	}
}

static void verify_probe_free(struct verify_probe *p)
{
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		p->v->probes = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	p->v->n_probes--;
	free(p);
}

static void verify_on_result(const struct smtpc_result *res, void *arg)
{
	struct verify_probe *p = arg;
	const struct smtpc_rcpt_result *rr = &res->rcpts[0];
	struct policy_job *job = p->job;
	const char *sid = p->sid;
	const struct conf_route *route = p->route;
	char addr[MAIL_PATH_MAX + 1];
	int code = 0;
	p->delivery = NULL; /* smtpc frees it after this callback */
	snprintf(addr, sizeof(addr), "%s", p->addr);
	if (rr->answered) {
		verify_cache_put(p->v, p->v->conf, p->addr, rr);
		code = rr->ok ? 250 : rr->code / 100 == 5 ? rr->code : 0;
	}
	/* Not answered: no reply to the RCPT itself (the greeting, EHLO/LHLO,
	 * MAIL FROM:<>, STARTTLS or the connection failed, or smtpc refused
	 * locally: SMTPUTF8 not offered). That says nothing about the user, and
	 * a misconfigured or busy backend must not turn into cached 550s for
	 * the whole domain: not known, not cached. */
	verify_probe_free(p);
	policy_job_set_state(job, NULL);
	verify_answer(job, sid, route, addr, code, rr->answered ? rr->enh : "", rr->text, true);
}

/* The engine gave up on the probe (relay.verify_timeout) or the session
 * ended: the probe ends too. */
static void verify_cancel(struct policy_job *job, enum policy_cancel why)
{
	struct verify_probe *p = policy_job_state(job);
	char q[LOG_Q_MAX];
	if (p == NULL)
		return;
	if (why == POLICY_CANCEL_TIMEOUT)
		log_info("event=rcpt_verify sid=%s rcpt=%s result=tempfail code=0 cached=no "
		         "text=timeout",
		         p->sid, log_qs(q, p->addr));
	smtpc_cancel(&p->delivery);
	verify_probe_free(p);
}

static struct policy_verify *verify_get(struct policy_smtp *ps)
{
	if (ps->verify != NULL)
		return ps->verify;
	char err[256];
	struct policy_verify *v = xcalloc(1, sizeof(*v));
	const char *ca = ps->conf->delivery.ca_file;
	v->smtpc = smtpc_create(ps->base, ca[0] != '\0' ? ca : NULL, err, sizeof(err));
	if (v->smtpc == NULL) {
		log_err("event=rcpt_verify_error reason=\"%s\"", err);
		free(v);
		return NULL;
	}
	smtpc_set_idle_timeout(v->smtpc, 0); /* one short connection per probe */
	v->conf = ps->conf;
	v->cache = xcalloc(VERIFY_CACHE_SLOTS, sizeof(*v->cache));
	ps->verify = v;
	return v;
}

static void verify_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct conf *conf = ps->conf;
	const struct mail_addr *to = req->rcpt.to;
	char addr[MAIL_PATH_MAX + 1];
	/* A repeat of a recipient of the transaction gets its 250 again
	 * without a probe; an address that cannot be written gets the
	 * smtpd's 501. */
	if (req->rcpt.alias || !conf_is_relay_domain(conf, to->domain) ||
	    mail_addr_format(to, addr, sizeof(addr)) < 0 ||
	    (req->rcpt.is_dup != NULL && req->rcpt.is_dup(req->rcpt.dup_arg, addr))) {
		policy_job_dunno(job);
		return;
	}
	const struct conf_route *route = conf_route_for(conf, to->domain);
	if (route == NULL || !route->verify_recipients) {
		policy_job_dunno(job);
		return;
	}
	const char *sid = req->client->sid;
	struct policy_verify *v = verify_get(ps);
	const struct verify_entry *e = v != NULL ? verify_cache_get(v, addr) : NULL;
	if (e != NULL) {
		verify_answer(job, sid, route, addr, e->code, e->enh, e->text, false);
		return;
	}
	if (v == NULL || v->n_probes >= verify_probes_max) {
		verify_answer(job, sid, route, addr, 0, "",
		              v == NULL ? "verification unavailable" : "too many probes in flight",
		              false);
		return;
	}
	struct verify_probe *p = xcalloc(1, sizeof(*p));
	p->v = v;
	p->route = route;
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	if (verify_dest(p, conf) < 0) {
		free(p);
		verify_answer(job, sid, route, addr, 0, "", "bad route address", false);
		return;
	}
	p->job = job;
	p->sid = sid;
	p->rcpts[0] = p->addr;
	p->msg.sender = "";
	p->msg.rcpts = p->rcpts;
	p->msg.nrcpts = 1;
	p->msg.smtputf8 = mail_str_is_utf8(addr, strlen(addr));
	p->msg.probe = true;
	p->next = v->probes;
	if (v->probes != NULL)
		v->probes->prev = p;
	v->probes = p;
	v->n_probes++;
	policy_job_set_state(job, p);
	policy_job_set_timeout(job, conf->relay.verify_timeout,
	                       route->verify_tempfail == CONF_VERIFY_ACCEPT ? POLICY_FAIL_ACCEPT
	                                                                    : POLICY_FAIL_TEMPFAIL);
	policy_job_set_tempfail(job, 450, "4.4.1",
	                        "<%s>: Recipient address verification failed, try again later",
	                        addr);
	p->delivery = smtpc_deliver(v->smtpc, &p->dest, &p->msg, verify_on_result, p);
}

const struct policy_check policy_check_verify = {
    .name = "verify",
    .stage = POLICY_RCPT,
    .start = verify_start,
    .cancel = verify_cancel,
};

void policy_verify_free(struct policy_verify **vp)
{
	struct policy_verify *v = *vp;
	if (v == NULL)
		return;
	*vp = NULL;
	smtpc_free(&v->smtpc); /* no callbacks: the probes go below */
	while (v->probes != NULL)
		verify_probe_free(v->probes);
	free(v->cache);
	free(v);
}
