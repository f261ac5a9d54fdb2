/* policy_rcpt.c — smtpd's RCPT checks and the chains that hold them:
 *   relay      the address is in one of our domains, or in relay_domains
 *              (not source-routed unless trusted), or the client may relay
 *              (authenticated or in relay.trusted_networks); hikyaku never
 *              relays for anyone else.
 *   recipient  a local address names a user (asked through the
 *              asynchronous lookup below), postmaster, or an alias; or
 *              accept_any_user.
 *   alias      an alias is expanded (conf/aliases.h) into deliverable
 *              targets, returned in the request for the transaction.
 * The recipient probe of a route (verify) is in policy_verify.c and sits
 * between recipient and alias in the chain; FCrDNS (policy_fcrdns.c) is the
 * connect chain.
 *
 * Runs in smtpd on the event loop. The address comes from the client,
 * parsed by mail/address.c. */
#include "policy/policy_smtp.h"
#include "dauth/dmarc.h"
#include "conf/aliases.h"
#include "conf/conf.h"
#include "lib/rstate.h"
#include "auth/users.h"
#include "deliver/maildir.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A users source that does not answer (the auth process, later) leaves the
 * RCPT with 451 4.3.0 after this long; the in-process table answers at
 * once and never starts the timer. */
#define POLICY_USER_TIMEOUT_MS 10000

void policy_rcpt_req_clear(struct policy_rcpt_req *r)
{
	aliases_targets_free(&r->targets, r->ntargets);
	r->ntargets = 0;
	r->alias = false;
}

/* TODO(issue 9): the auth process (RCPT_CHECK) becomes the source
 * (policy_smtp_set_user_source); its answer comes from the loop, and the
 * checks below already wait for it. */
struct policy_user_query *policy_user_lookup(struct policy_smtp *ps, const char *mailbox,
                                             const char *domain, policy_user_fn *cb, void *arg)
{
	if (ps->users_src.lookup != NULL)
		return ps->users_src.lookup(ps->users_src.ctx, mailbox, domain, cb, arg);
	cb(users_exists(ps->users, mailbox, domain) ? POLICY_USER_KNOWN : POLICY_USER_UNKNOWN, arg);
	return NULL;
}

void policy_user_cancel(struct policy_smtp *ps, struct policy_user_query *q)
{
	if (q != NULL && ps->users_src.cancel != NULL)
		ps->users_src.cancel(ps->users_src.ctx, q);
}

void policy_smtp_set_user_source(struct policy_smtp *ps, const struct policy_user_source *src)
{
	ps->users_src = *src;
}

static void rcpt_unknown(struct policy_job *job, const struct mail_addr *to)
{
	policy_job_reply(job, 550, "5.1.1", "<%s@%s>: Recipient address rejected: User unknown",
	                 to->local, to->domain);
}

/* relay: no open relay, ever. */
static void relay_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct conf *conf = ps->conf;
	struct mail_addr *to = req->rcpt.to;
	if (to->is_postmaster) {
		/* RFC 5321 §4.5.1: <postmaster> without a domain is ours. */
		const char *dom =
		    conf->n_local_domains > 0 ? conf->local_domains[0] : conf->hostname;
		snprintf(to->domain, sizeof(to->domain), "%s", dom);
		to->is_postmaster = false;
		str_lower(to->domain);
	}
	if (conf_is_local_domain(conf, to->domain)) {
		policy_job_dunno(job);
		return;
	}
	bool trusted = req->client->auth_user != NULL || req->client->local ||
	               conf_is_trusted_network(conf, (const struct sockaddr *)&req->client->ss);
	/* relay_domains: ours to pass on, from anyone (a gateway or backup
	 * MX); the route may verify the user (policy_verify.c). Not a
	 * source-routed local part (user%host, host!user, "user@host") from an
	 * untrusted client: the server behind us might route it on, making us
	 * an open relay (Postfix's allow_untrusted_routing = no). */
	if (conf_is_relay_domain(conf, to->domain)) {
		if (trusted || strpbrk(to->local, "%!@") == NULL)
			policy_job_dunno(job);
		else
			policy_job_reply(job, 554, "5.7.1",
			                 "<%s@%s>: Relay access denied: source routing", to->local,
			                 to->domain);
		return;
	}
	/* Relaying: only for an authenticated user or a trusted network
	 * (relay.trusted_networks), never for anyone else. */
	if (trusted)
		policy_job_dunno(job);
	else
		policy_job_reply(job, 554, "5.7.1", "<%s@%s>: Relay access denied", to->local,
		                 to->domain);
}

const struct policy_check policy_check_relay = {
    .name = "relay",
    .stage = POLICY_RCPT,
    .start = relay_start,
};

static void recipient_on_user(enum policy_user_answer a, void *arg)
{
	struct policy_job *job = arg;
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct mail_addr *to = req->rcpt.to;
	char full[MAIL_LOCAL_MAX + 1 + MAIL_DOMAIN_MAX + 1];
	policy_job_set_state(job, NULL); /* the query is over */
	if (a == POLICY_USER_KNOWN) {
		policy_job_dunno(job);
		return;
	}
	if (a == POLICY_USER_TEMPFAIL) {
		policy_job_reply(job, 451, "4.3.0", "<%s@%s>: Temporary lookup failure", to->local,
		                 to->domain);
		return;
	}
	/* the "@domain" catch-all takes only what no user takes */
	snprintf(full, sizeof(full), "%s@%s", to->local, to->domain);
	if (aliases_has(ps->aliases, full)) {
		req->rcpt.alias = true;
		policy_job_dunno(job);
		return;
	}
	rcpt_unknown(job, to);
}

/* recipient: a local address must be deliverable. An exact alias wins over
 * a user of that name; the catch-all takes only what nothing else takes. */
static void recipient_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct conf *conf = ps->conf;
	const struct mail_addr *to = req->rcpt.to;
	char mailbox[MAILDIR_MAILBOX_MAX + 1];
	char full[MAIL_LOCAL_MAX + 1 + MAIL_DOMAIN_MAX + 1];
	if (!conf_is_local_domain(conf, to->domain)) {
		policy_job_dunno(job);
		return;
	}
	if (maildir_mailbox_name(to->local, mailbox) < 0) {
		rcpt_unknown(job, to);
		return;
	}
	snprintf(full, sizeof(full), "%s@%s", to->local, to->domain);
	if (aliases_has_exact(ps->aliases, full)) {
		req->rcpt.alias = true;
		policy_job_dunno(job);
		return;
	}
	/* postmaster@ any of our domains is always deliverable (RFC 5321
	 * §4.5.1), through its alias when it has one (above). */
	if (strcmp(mailbox, "postmaster") == 0 || conf->accept_any_user) {
		policy_job_dunno(job);
		return;
	}
	struct policy_user_query *q =
	    policy_user_lookup(ps, mailbox, to->domain, recipient_on_user, job);
	if (q != NULL)
		policy_job_set_state(job, q); /* pending: a cancel ends it */
}

static void recipient_cancel(struct policy_job *job, enum policy_cancel why)
{
	(void)why;
	policy_user_cancel(policy_job_ctx(job), policy_job_state(job));
}

const struct policy_check policy_check_recipient = {
    .name = "recipient",
    .stage = POLICY_RCPT,
    .start = recipient_start,
    .cancel = recipient_cancel,
    .timeout_ms = POLICY_USER_TIMEOUT_MS,
    .failmode = POLICY_FAIL_TEMPFAIL,
};

/* Alias expansion in progress: targets checked one after the other through
 * the asynchronous user lookup, in a loop while answers come at once. */
struct alias_state {
	struct policy_job *job;
	char addr[MAIL_PATH_MAX + 1];
	char **t;
	size_t n, i, kept;
	bool in_call, answered;
	enum policy_user_answer answer;
	struct policy_user_query *q; /* a lookup pending */
};

/* Is addr "postmaster@..." (any case, any +tag)? */
static bool alias_is_postmaster(const char *addr)
{
	size_t len = strcspn(addr, "+@");
	return len == 10 && strncasecmp(addr, "postmaster", 10) == 0;
}

/* Can an alias target be delivered without asking for the user? 1 yes, 0
 * no, -1 ask (mailbox_r set). Remote targets: yes, relaying for our own
 * alias is allowed since the client did not choose them. */
static int alias_target_static(struct policy_smtp *ps, const char *addr,
                               char mailbox_r[MAILDIR_MAILBOX_MAX + 1])
{
	const char *at = strrchr(addr, '@');
	char local[MAIL_LOCAL_MAX + 1];
	if (at == NULL)
		return 0;
	if (!conf_is_local_domain(ps->conf, at + 1))
		return 1;
	if ((size_t)(at - addr) > MAIL_LOCAL_MAX)
		return 0;
	memcpy(local, addr, (size_t)(at - addr));
	local[at - addr] = '\0';
	if (maildir_mailbox_name(local, mailbox_r) < 0)
		return 0;
	if (strcmp(mailbox_r, "postmaster") == 0 || ps->conf->accept_any_user)
		return 1;
	return -1;
}

static void alias_state_free(struct alias_state *st)
{
	aliases_targets_free(&st->t, st->n);
	free(st);
}

static void alias_keep(struct alias_state *st, bool ok)
{
	char q1[LOG_Q_MAX], q2[LOG_Q_MAX];
	struct policy_smtp_req *req = policy_job_request(st->job);
	char *t = st->t[st->i];
	st->t[st->i++] = NULL;
	if (!ok) {
		log_warn("event=alias_skip sid=%s rcpt=%s target=%s reason=unknown_user",
		         req->client->sid, log_qs(q1, st->addr), log_qs(q2, t));
		free(t);
		return;
	}
	st->t[st->kept++] = t;
}

static void alias_done(struct alias_state *st)
{
	struct policy_job *job = st->job;
	struct policy_smtp_req *req = policy_job_request(job);
	st->n = st->kept;
	if (st->n == 0 && alias_is_postmaster(st->addr))
		st->t[st->n++] = xstrdup(st->addr);
	policy_job_set_state(job, NULL);
	if (st->n == 0) {
		policy_job_reply(job, 550, "5.1.1",
		                 "<%s>: Recipient address rejected: User unknown", st->addr);
		alias_state_free(st);
		return;
	}
	req->rcpt.targets = st->t;
	req->rcpt.ntargets = st->n;
	st->t = NULL;
	st->n = 0;
	alias_state_free(st);
	policy_job_dunno(job);
}

static void alias_on_user(enum policy_user_answer a, void *arg);

static void alias_filter(struct alias_state *st)
{
	struct policy_smtp *ps = policy_job_ctx(st->job);
	char mailbox[MAILDIR_MAILBOX_MAX + 1];
	while (st->i < st->n) {
		const char *t = st->t[st->i];
		int ok = alias_target_static(ps, t, mailbox);
		if (ok >= 0) {
			alias_keep(st, ok == 1);
			continue;
		}
		st->in_call = true;
		st->answered = false;
		st->q = policy_user_lookup(ps, mailbox, strrchr(t, '@') + 1, alias_on_user, st);
		st->in_call = false;
		if (!st->answered)
			return; /* alias_on_user() goes on */
		alias_keep(st, st->answer == POLICY_USER_KNOWN);
	}
	alias_done(st);
}

static void alias_on_user(enum policy_user_answer a, void *arg)
{
	struct alias_state *st = arg;
	st->q = NULL;
	st->answer = a;
	st->answered = true;
	if (st->in_call)
		return;
	alias_keep(st, a == POLICY_USER_KNOWN);
	alias_filter(st);
}

/* alias: expand an address the recipient check found to be an alias. */
static void alias_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	char q[LOG_Q_MAX], q2[LOG_Q_MAX];
	const char *error = "alias loop";
	if (!req->rcpt.alias) {
		policy_job_dunno(job);
		return;
	}
	struct alias_state *st = xcalloc(1, sizeof(*st));
	st->job = job;
	if (mail_addr_format(req->rcpt.to, st->addr, sizeof(st->addr)) < 0) {
		free(st); /* the smtpd answers 501 */
		policy_job_dunno(job);
		return;
	}
	int rc = aliases_expand(ps->aliases, st->addr, &st->t, &st->n, &error);
	if (rc < 0 && alias_is_postmaster(st->addr)) {
		/* RFC 5321 §4.5.1: postmaster stays deliverable whatever its
		 * alias says; fall back to its own mailbox. */
		log_warn("event=alias_error sid=%s rcpt=%s reason=%s fallback=mailbox",
		         req->client->sid, log_qs(q, st->addr), log_qs(q2, error));
		st->t = xcalloc(1, sizeof(*st->t));
		st->t[0] = xstrdup(st->addr);
		st->n = 1;
	} else if (rc < 0) {
		log_warn("event=alias_error sid=%s rcpt=%s reason=%s", req->client->sid,
		         log_qs(q, st->addr), log_qs(q2, error));
		/* RFC 3463 X.4.6 routing loop; X.5.3 too many recipients */
		if (strcmp(error, "alias loop") == 0)
			policy_job_reply(job, 550, "5.4.6", "<%s>: Alias loop detected", st->addr);
		else
			policy_job_reply(job, 550, "5.5.3",
			                 "<%s>: Alias expands to too many recipients", st->addr);
		free(st);
		return;
	}
	policy_job_set_state(job, st);
	alias_filter(st);
}

static void alias_cancel(struct policy_job *job, enum policy_cancel why)
{
	(void)why;
	struct alias_state *st = policy_job_state(job);
	if (st == NULL)
		return;
	policy_user_cancel(policy_job_ctx(job), st->q);
	alias_state_free(st);
}

const struct policy_check policy_check_alias = {
    .name = "alias",
    .stage = POLICY_RCPT,
    .start = alias_start,
    .cancel = alias_cancel,
    .timeout_ms = POLICY_USER_TIMEOUT_MS,
    .failmode = POLICY_FAIL_TEMPFAIL,
};

struct policy_smtp *policy_smtp_create(struct event_base *base, const struct conf *conf,
                                       const struct users *users, const struct aliases *aliases)
{
	struct policy_smtp *ps = xcalloc(1, sizeof(*ps));
	ps->base = base;
	ps->conf = conf;
	ps->users = users;
	ps->aliases = aliases;
	ps->engine = policy_create(base);
	/* The DNS lists' codes, checked at load: parsed once here. */
	size_t nl = conf->dnsbl.n_lists + conf->dnsbl.n_allow_lists;
	ps->dnsbl_codes = xcalloc(nl + 1, sizeof(*ps->dnsbl_codes));
	for (size_t i = 0; i < nl; i++) {
		const char *error = NULL;
		const struct conf_dnsbl_list *l = i < conf->dnsbl.n_lists
		                                      ? &conf->dnsbl.lists[i]
		                                      : &conf->dnsbl.allow_lists[i - conf->dnsbl.n_lists];
		if (cidr_codes_parse(l->codes, &ps->dnsbl_codes[i], &error) < 0)
			abort();
	}
	/* Connect: the access lists first (a denied client hears its 554
	 * instead of the greeting, decided inside policy_run), then the DNS
	 * lists' queries and FCrDNS in parallel, then the wait for the lists. */
	policy_add(ps->engine, &policy_check_access_connect, ps);
	policy_add(ps->engine, &policy_check_dnsbl_start, ps);
	policy_add(ps->engine, &policy_check_fcrdns, ps);
	policy_add(ps->engine, &policy_check_dnsbl_wait, ps);
	policy_add(ps->engine, &policy_check_helo_syntax, ps);
	policy_add(ps->engine, &policy_check_fcrdns_required, ps);
	policy_add(ps->engine, &policy_check_sender_domain, ps);
	policy_add(ps->engine, &policy_check_rate_mail, ps);
	/* RCPT: the client's refusals first (cheap, and before any probe),
	 * then the recipient, then greylisting of a valid recipient, and the
	 * recipient rate last so that only accepted recipients count. */
	policy_add(ps->engine, &policy_check_access_rcpt, ps);
	policy_add(ps->engine, &policy_check_dnsbl, ps);
	policy_add(ps->engine, &policy_check_relay, ps);
	policy_add(ps->engine, &policy_check_recipient, ps);
	policy_add(ps->engine, &policy_check_verify, ps);
	policy_add(ps->engine, &policy_check_alias, ps);
	policy_add(ps->engine, &policy_check_greylist, ps);
	policy_add(ps->engine, &policy_check_rate_rcpt, ps);
	policy_add(ps->engine, &policy_check_dauth, ps);
	/* The milters last at each stage (policy_milter.c): they are asked
	 * only what every other check let through, and at connect they hear
	 * the confirmed rDNS name. */
	if (conf->n_milters > 0) {
		policy_add(ps->engine, &policy_check_milter_connect, ps);
		policy_add(ps->engine, &policy_check_milter_helo, ps);
		policy_add(ps->engine, &policy_check_milter_mail, ps);
		policy_add(ps->engine, &policy_check_milter_rcpt, ps);
	}
	return ps;
}

void policy_smtp_free(struct policy_smtp **psp)
{
	struct policy_smtp *ps = *psp;
	if (ps == NULL)
		return;
	*psp = NULL;
	policy_verify_free(&ps->verify);
	rstate_free(&ps->redis);
	cidr_list_clear(&ps->access);
	free(ps->dnsbl_codes);
	dns_free(&ps->dns);
	dmarc_free(&ps->dmarc);
	policy_free(&ps->engine);
	free(ps);
}

struct policy *policy_smtp_engine(struct policy_smtp *ps)
{
	return ps->engine;
}
