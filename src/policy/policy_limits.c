/* policy_limits.c — smtpd's rate limits and greylisting, on tables in
 * shared memory that the master creates, so that they hold across the
 * smtpd processes (lib/shmrate.h, lib/greytab.h):
 *   rate_mail   (MAIL, last) one message more for the client's network
 *               (IPv4 address, IPv6 /64; limits.message_rate) or for the
 *               authenticated user (limits.user_message_rate): past the
 *               limit 450 4.7.1.
 *   rate_rcpt   (RCPT, last) the same for recipients.
 *   greylist    (RCPT) the (client /24 or /64, sender, recipient) triplet
 *               must have been tried greylist.delay before: else 451 4.7.1.
 * access.allow networks are exempt from all three, authenticated clients
 * and DNSWL-listed ones from greylisting. A refusal is logged by smtpd's
 * rejection log, which is rate-suppressed.
 *
 * Runs in smtpd on the event loop; the addresses are hostile (they are
 * only hashed, with a key the master chose). */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "lib/greytab.h"
#include "lib/log.h"
#include "lib/shmrate.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static uint64_t limits_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Take one event for the user (kind 'u'.. with the name) or the client
 * network (kind 'c'..): true when allowed. */
static bool limits_take(struct policy_smtp *ps, const struct policy_client *c, char what,
                        uint64_t user_limit, uint64_t client_limit)
{
	unsigned char key[2 + 17 + 256];
	size_t len;
	uint64_t limit;
	if (c->auth_user != NULL) {
		size_t ulen = strnlen(c->auth_user, 255);
		key[0] = 'u';
		key[1] = (unsigned char)what;
		memcpy(key + 2, c->auth_user, ulen);
		len = 2 + ulen;
		limit = user_limit;
	} else {
		key[0] = 'c';
		key[1] = (unsigned char)what;
		len = 2 + policy_client_net_key(&c->ss, 32, key + 2);
		limit = client_limit;
	}
	if (limit == 0)
		return true;
	return shmrate_take(ps->rates, key, len, (unsigned)limit, ps->conf->limits.rate_window,
	                    limits_now_ms());
}

static void rate_mail_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	const struct conf_limits *l = &ps->conf->limits;
	if (ps->rates == NULL || c->access == POLICY_ACCESS_ALLOW ||
	    limits_take(ps, c, 'm', l->user_message_rate, l->message_rate)) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 450, "4.7.1",
	                 "Error: too many messages from %s%s%s, slow down and try again later",
	                 c->auth_user != NULL ? "user " : "[",
	                 c->auth_user != NULL ? c->auth_user : c->addr,
	                 c->auth_user != NULL ? "" : "]");
}

const struct policy_check policy_check_rate_mail = {
    .name = "rate_mail",
    .stage = POLICY_MAIL,
    .start = rate_mail_start,
};

static void rate_rcpt_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	const struct conf_limits *l = &ps->conf->limits;
	if (ps->rates == NULL || c->access == POLICY_ACCESS_ALLOW ||
	    limits_take(ps, c, 'r', l->user_recipient_rate, l->recipient_rate)) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 450, "4.7.1",
	                 "Error: too many recipients from %s%s%s, slow down and try again later",
	                 c->auth_user != NULL ? "user " : "[",
	                 c->auth_user != NULL ? c->auth_user : c->addr,
	                 c->auth_user != NULL ? "" : "]");
}

const struct policy_check policy_check_rate_rcpt = {
    .name = "rate_rcpt",
    .stage = POLICY_RCPT,
    .start = rate_rcpt_start,
};

/* Lowercase copy of s into key at *len (bounded), then a NUL. */
static void greylist_key_add(unsigned char *key, size_t *len, size_t cap, const char *s)
{
	for (; *s != '\0' && *len + 1 < cap; s++)
		key[(*len)++] = (unsigned char)tolower((unsigned char)*s);
	key[(*len)++] = '\0';
}

static void greylist_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	const struct conf_greylist *g = &ps->conf->greylist;
	if (!g->enabled || ps->grey == NULL || c->auth_user != NULL ||
	    c->access == POLICY_ACCESS_ALLOW || c->dnswl || req->rcpt.to == NULL) {
		policy_job_dunno(job);
		return;
	}
	unsigned char key[17 + 2 * 600];
	size_t len = policy_client_net_key(&c->ss, 24, key);
	char rcpt[MAIL_LOCAL_MAX + MAIL_DOMAIN_MAX + 2];
	snprintf(rcpt, sizeof(rcpt), "%s@%s", req->rcpt.to->local, req->rcpt.to->domain);
	greylist_key_add(key, &len, sizeof(key) / 2, req->sender != NULL ? req->sender : "");
	greylist_key_add(key, &len, sizeof(key), rcpt);
	struct greytab_times tm = {
	    .delay = (uint32_t)(g->delay / 1000),
	    .retry_window = (uint32_t)(g->retry_window / 1000),
	    .retention = (uint32_t)(g->retention / 1000),
	};
	uint32_t wait = 0;
	enum greytab_result r = greytab_check(ps->grey, key, len, (uint32_t)time(NULL), &tm, &wait);
	char q1[LOG_Q_MAX], q2[LOG_Q_MAX];
	log_info("event=greylist sid=%s client=%s from=%s to=%s result=%s", c->sid, c->addr,
	         log_qs(q1, req->sender != NULL ? req->sender : ""), log_qs(q2, rcpt),
	         r == GREYTAB_PASS  ? "pass"
	         : r == GREYTAB_NEW ? "new"
	                            : "early");
	if (r == GREYTAB_PASS) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 451, "4.7.1",
	                 "<%s>: Recipient address rejected: Greylisted, try again in %u seconds",
	                 rcpt, (unsigned)wait);
}

const struct policy_check policy_check_greylist = {
    .name = "greylist",
    .stage = POLICY_RCPT,
    .start = greylist_start,
};
