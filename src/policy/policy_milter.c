/* policy_milter.c — the milters (src/milter) as checks of smtpd's chains:
 *   milter_connect  opens the session's milter connections (one per
 *                   milter, kept to the session's end) and sends CONNECT;
 *                   last in the connect chain, so the confirmed rDNS name
 *                   is known. A reject is 554 5.7.1, a tempfail 421 4.7.0:
 *                   instead of the greeting, and the session is closed.
 *   milter_helo     HELO/EHLO: 550 5.7.1 or 451 4.7.1 for that command.
 *   milter_mail     MAIL FROM (ABORT first to what an earlier transaction
 *                   left open): 550 5.7.1 or 451 4.7.1.
 *   milter_rcpt     each RCPT TO: 550 5.7.1 or 451 4.7.1 for that
 *                   recipient alone.
 * A milter's own SMFIR_REPLYCODE (checked: 4xx/5xx, an enhanced code of the
 * same class, printable text of bounded length) replaces the default. A
 * discard accepts the command, and the message is dropped at the end of
 * data (data_milter.c). A failed milter answers its failure mode (the
 * milter bounds every wait with its timeouts: the checks have none of
 * their own). Runs in smtpd on the event loop; milter replies are hostile. */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "mail/address.h"
#include "milter/milter.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct milter_job {
	struct policy_job *job;
	struct policy_client *client;
	enum milter_stage stage;
	struct milter_info info;
	char client_name[300];
	char helo[256];
	char sender[MAIL_PATH_MAX + 1];
	char rcpt[MAIL_PATH_MAX + 1];
	char *rcpts[1];
};

static const char *const milter_stage_names[] = {"connect", "helo", "mail", "rcpt", "eob"};

static void milter_check_done(struct milter_result *r, void *arg)
{
	struct milter_job *mj = arg;
	struct policy_job *job = mj->job;
	enum milter_stage st = mj->stage;
	const struct policy_client *c = mj->client;
	free(mj);
	policy_job_set_state(job, NULL);
	char qt[LOG_Q_MAX];
	if (r->verdict == MILTER_DISCARD)
		log_info("event=milter_discard sid=%s milter=%s stage=%s", c->sid, r->milter,
		         milter_stage_names[st]);
	if (r->verdict != MILTER_REJECT && r->verdict != MILTER_TEMPFAIL) {
		milter_result_free(&r);
		policy_job_dunno(job);
		return;
	}
	int code = r->code;
	char enh[16];
	snprintf(enh, sizeof(enh), "%s", r->enh);
	if (st == MILTER_STAGE_CONNECT) {
		/* at connect a temporary refusal closes the session: 421 */
		if (r->verdict == MILTER_TEMPFAIL) {
			code = 421;
			if (!r->custom || enh[0] == '\0')
				snprintf(enh, sizeof(enh), "4.7.0");
		} else if (!r->custom) {
			code = 554;
		}
	}
	if (!r->failed)
		log_info("event=milter_reject sid=%s milter=%s stage=%s code=%d text=%s", c->sid,
		         r->milter, milter_stage_names[st], code, log_qs(qt, r->text));
	policy_job_reply(job, code, enh[0] != '\0' ? enh : NULL, "%s", r->text);
	milter_result_free(&r);
}

static void milter_check_cancel(struct policy_job *job, enum policy_cancel why)
{
	(void)why;
	struct milter_job *mj = policy_job_state(job);
	if (mj == NULL)
		return;
	milter_sess_cancel(mj->client->milter);
	free(mj);
	policy_job_set_state(job, NULL);
}

static void milter_check_start(struct policy_job *job, enum milter_stage st)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct policy_client *c = req->client;
	const struct conf *conf = ps->conf;
	if (conf->n_milters == 0) {
		policy_job_dunno(job);
		return;
	}
	if (st == MILTER_STAGE_CONNECT && c->milter == NULL)
		c->milter = milter_sess_new(ps->base, conf->milters, conf->n_milters, c->sid);
	/* no conversation (its CONNECT was never sent), or a discard already
	 * decided: nothing to ask (MAIL forgets a transaction's discard, not
	 * the session's) */
	if (c->milter == NULL || milter_sess_discarding_session(c->milter) ||
	    (st != MILTER_STAGE_MAIL && milter_sess_discarding(c->milter))) {
		policy_job_dunno(job);
		return;
	}
	struct milter_job *mj = xcalloc(1, sizeof(*mj));
	mj->job = job;
	mj->client = c;
	mj->stage = st;
	if (c->rdns_status == POLICY_RDNS_CONFIRMED && c->rdns[0] != '\0')
		snprintf(mj->client_name, sizeof(mj->client_name), "%s", c->rdns);
	else
		snprintf(mj->client_name, sizeof(mj->client_name), "[%s]", c->addr);
	unsigned port = 0;
	char family = '4';
	if (c->local)
		family = 'L';
	else if (c->ss.ss_family == AF_INET6) {
		family = '6';
		port = ntohs(((const struct sockaddr_in6 *)&c->ss)->sin6_port);
	} else if (c->ss.ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)&c->ss)->sin_port);
	if (st == MILTER_STAGE_HELO && req->helo != NULL)
		snprintf(mj->helo, sizeof(mj->helo), "%s", req->helo);
	if (req->sender != NULL && (st == MILTER_STAGE_MAIL || st == MILTER_STAGE_RCPT))
		snprintf(mj->sender, sizeof(mj->sender), "%s", req->sender);
	if (st == MILTER_STAGE_RCPT && req->rcpt.to != NULL &&
	    mail_addr_format(req->rcpt.to, mj->rcpt, sizeof(mj->rcpt)) < 0) {
		free(mj);
		policy_job_dunno(job); /* the RCPT check answers for its syntax */
		return;
	}
	mj->rcpts[0] = mj->rcpt;
	mj->info = (struct milter_info){
	    .hostname = conf->hostname,
	    .qid = NULL,
	    .client_name = mj->client_name,
	    .client_addr = c->addr,
	    .client_port = port,
	    .family = family,
	    .helo = mj->helo,
	    .auth_user = c->auth_user,
	    .sender = mj->sender,
	    .rcpts = mj->rcpts,
	    .nrcpts = st == MILTER_STAGE_RCPT ? 1 : 0,
	};
	policy_job_set_state(job, mj);
	if (milter_sess_run(c->milter, st, 0, milter_sess_count(c->milter), &mj->info, NULL, 0,
	                    milter_check_done, mj) < 0) {
		free(mj);
		policy_job_set_state(job, NULL);
		policy_job_dunno(job);
	}
}

static void milter_start_connect(struct policy_job *job)
{
	milter_check_start(job, MILTER_STAGE_CONNECT);
}

static void milter_start_helo(struct policy_job *job)
{
	milter_check_start(job, MILTER_STAGE_HELO);
}

static void milter_start_mail(struct policy_job *job)
{
	milter_check_start(job, MILTER_STAGE_MAIL);
}

static void milter_start_rcpt(struct policy_job *job)
{
	milter_check_start(job, MILTER_STAGE_RCPT);
}

const struct policy_check policy_check_milter_connect = {
    .name = "milter_connect",
    .stage = POLICY_CONNECT,
    .start = milter_start_connect,
    .cancel = milter_check_cancel,
};

const struct policy_check policy_check_milter_helo = {
    .name = "milter_helo",
    .stage = POLICY_HELO,
    .start = milter_start_helo,
    .cancel = milter_check_cancel,
};

const struct policy_check policy_check_milter_mail = {
    .name = "milter_mail",
    .stage = POLICY_MAIL,
    .start = milter_start_mail,
    .cancel = milter_check_cancel,
};

const struct policy_check policy_check_milter_rcpt = {
    .name = "milter_rcpt",
    .stage = POLICY_RCPT,
    .start = milter_start_rcpt,
    .cancel = milter_check_cancel,
};
