/* cmd.c — the SMTP command table (the single source of truth for which
 * command is valid in which state) and the handlers of the short commands.
 * DATA and BDAT live in cmd_data.c. Runs in smtpd on the event loop; the
 * arguments are hostile and reach only the pure parsers in parse.c. */
#include "smtpd/session.h"
#include "conf/aliases.h"
#include "conf/conf.h"
#include "auth/users.h"
#include "deliver/maildir.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CMD_PRE_TX (SMTPD_SB(SMTPD_S_INIT) | SMTPD_SB(SMTPD_S_READY))
#define CMD_ANY (CMD_PRE_TX | SMTPD_SB(SMTPD_S_MAIL) | SMTPD_SB(SMTPD_S_RCPT))
/* Envelope recipients of one transaction once aliases are expanded;
 * limits.recipients bounds the RCPT commands themselves. */
#define CMD_RCPT_EXPANDED_MAX ALIASES_TARGETS_MAX

static void cmd_ehlo(struct smtpd_session *s, const char *args, size_t len);
static void cmd_helo(struct smtpd_session *s, const char *args, size_t len);
static void cmd_mail(struct smtpd_session *s, const char *args, size_t len);
static void cmd_mail_verdict(struct smtpd_session *s, const struct policy_verdict *v);
static void cmd_rcpt(struct smtpd_session *s, const char *args, size_t len);
static void cmd_rset(struct smtpd_session *s, const char *args, size_t len);
static void cmd_noop(struct smtpd_session *s, const char *args, size_t len);
static void cmd_quit(struct smtpd_session *s, const char *args, size_t len);
static void cmd_vrfy(struct smtpd_session *s, const char *args, size_t len);
static void cmd_help(struct smtpd_session *s, const char *args, size_t len);
static void cmd_xuid(struct smtpd_session *s, const char *args, size_t len);

static const struct smtpd_cmd smtpd_cmds[] = {
	{"EHLO", cmd_ehlo, CMD_ANY, NULL},
	{"HELO", cmd_helo, CMD_ANY, NULL},
	{"MAIL", cmd_mail, SMTPD_SB(SMTPD_S_READY), "Nested MAIL command"},
	{"RCPT", cmd_rcpt, SMTPD_SB(SMTPD_S_MAIL) | SMTPD_SB(SMTPD_S_RCPT), "Need MAIL command"},
	{"DATA", smtpd_cmd_data, SMTPD_SB(SMTPD_S_MAIL) | SMTPD_SB(SMTPD_S_RCPT),
	 "Need MAIL command"},
	/* BDAT is accepted in every state so that a refused chunk is still
	 * read and skipped (RFC 3030 §3): the handler checks the state. */
	{"BDAT", smtpd_cmd_bdat, CMD_ANY, NULL},
	{"STARTTLS", smtpd_cmd_starttls, CMD_PRE_TX,
	 "STARTTLS not allowed during a mail transaction"},
	{"AUTH", smtpd_cmd_auth, SMTPD_SB(SMTPD_S_READY),
	 "AUTH not allowed during a mail transaction"},
	{"RSET", cmd_rset, CMD_ANY, NULL},
	{"NOOP", cmd_noop, CMD_ANY, NULL},
	{"QUIT", cmd_quit, CMD_ANY, NULL},
	{"VRFY", cmd_vrfy, CMD_ANY, NULL},
	{"HELP", cmd_help, CMD_ANY, NULL},
	/* Local submission only: the maildrop pickup names a drop's owner. */
	{"XUID", cmd_xuid, CMD_PRE_TX, "XUID not allowed during a mail transaction"},
};

const struct smtpd_cmd *smtpd_cmd_find(const char *verb, size_t len)
{
	for (size_t i = 0; i < sizeof(smtpd_cmds) / sizeof(smtpd_cmds[0]); i++) {
		if (str_case_eq(verb, len, smtpd_cmds[i].name))
			return &smtpd_cmds[i];
	}
	return NULL;
}

void smtpd_cmd_dispatch(struct smtpd_session *s, const char *line, size_t len)
{
	struct smtp_cmdline cl;
	struct smtp_perr err;
	s->cur_verb = NULL;
	if (smtp_cmdline_split(line, len, &cl, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return;
	}
	const struct smtpd_cmd *cmd = smtpd_cmd_find(cl.verb, cl.verb_len);
	if (cmd == NULL) {
		smtpd_reply(s, 500, "5.5.2", "Command unrecognized");
		return;
	}
	s->cur_verb = cmd->name;
	if (!(cmd->states & SMTPD_SB(s->state))) {
		if (s->state == SMTPD_S_INIT)
			smtpd_reply(s, 503, "5.5.1", "Send EHLO/HELO first");
		else
			smtpd_reply(s, 503, "5.5.1", "%s",
				    cmd->seq_error != NULL ? cmd->seq_error
							   : "Bad sequence of commands");
		return;
	}
	cmd->handler(s, cl.args, cl.args_len);
}

static void cmd_hello_verdict(struct smtpd_session *s, const struct policy_verdict *v);

/* EHLO and HELO: the name is parsed, then the HELO chain (src/policy)
 * decides; the session takes the name only when it is accepted. */
static void cmd_hello(struct smtpd_session *s, const char *args, size_t len, bool esmtp)
{
	struct smtp_perr err;
	if (smtp_parse_helo(args, len, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return;
	}
	memcpy(s->phelo, args, len);
	s->phelo[len] = '\0';
	s->pesmtp = esmtp;
	s->preq.helo = s->phelo;
	smtpd_session_policy(s, POLICY_HELO, &s->preq, cmd_hello_verdict);
}

static void cmd_ehlo_reply(struct smtpd_session *s)
{
	const struct conf *conf = s->srv->conf;
	/* hostname (<= 255) + HELO name (<= 255) + address + keywords: never
	 * truncated, a cut reply would leave the client waiting for its end */
	char line[1024];
	int n = snprintf(line, sizeof(line),
			 "250-%s Hello %s [%s]\r\n"
			 "250-PIPELINING\r\n"
			 "250-SIZE %llu\r\n"
			 "250-8BITMIME\r\n"
			 "250-ENHANCEDSTATUSCODES\r\n"
			 "250-SMTPUTF8\r\n"
			 "250-CHUNKING\r\n"
			 "%s%s"
			 "250 DSN\r\n",
			 conf->hostname, s->helo, s->client_addr,
			 (unsigned long long)conf->limits.message_size,
			 smtpd_tls_offered(s) ? "250-STARTTLS\r\n" : "",
			 smtpd_auth_offered(s) && s->auth_user == NULL ? smtpd_auth_line(s) : "");
	smtpd_reply_raw(s, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void cmd_hello_verdict(struct smtpd_session *s, const struct policy_verdict *v)
{
	if (v->result == POLICY_REPLY) {
		smtpd_reply(s, v->code, v->enh[0] != '\0' ? v->enh : NULL, "%s", v->text);
		return;
	}
	/* RFC 5321 §4.1.4: EHLO/HELO in a transaction is an implied RSET. */
	smtpd_tx_reset(s);
	memcpy(s->helo, s->phelo, sizeof(s->helo));
	s->esmtp = s->pesmtp;
	smtpd_session_set_state(s, SMTPD_S_READY);
	if (s->esmtp)
		cmd_ehlo_reply(s);
	else
		smtpd_reply(s, 250, NULL, "%s", s->srv->conf->hostname);
}

static void cmd_ehlo(struct smtpd_session *s, const char *args, size_t len)
{
	cmd_hello(s, args, len, true);
}

static void cmd_helo(struct smtpd_session *s, const char *args, size_t len)
{
	cmd_hello(s, args, len, false);
}

static bool cmd_mail_has_esmtp_params(const struct smtp_mail_args *m)
{
	return m->has_size || m->body != SMTP_BODY_NONE || m->smtputf8 || m->ret != SMTP_RET_NONE ||
	       m->envid[0] != '\0';
}

static void cmd_mail(struct smtpd_session *s, const char *args, size_t len)
{
	const struct conf *conf = s->srv->conf;
	struct smtp_mail_args m;
	struct smtp_perr err;
	if (s->srv->shutting_down) {
		smtpd_reply(s, 421, "4.3.2", "%s Service shutting down", conf->hostname);
		smtpd_session_close(s);
		return;
	}
	if (s->lconf->submission && s->auth_user == NULL) {
		/* RFC 6409 §4.3 submission: authenticate first */
		smtpd_reply(s, 530, "5.7.0", "Authentication required");
		return;
	}
	if (smtp_parse_mail(args, len, &m, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return;
	}
	if (!s->esmtp && cmd_mail_has_esmtp_params(&m)) {
		smtpd_reply(s, 555, "5.5.4", "ESMTP parameters need EHLO");
		return;
	}
	if (m.has_size && m.size > conf->limits.message_size) {
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		return;
	}
	/* RFC 3463 X.3.1 "mail system full": a client must not be able to
	 * fill the spool's disk (queue.min_free_space). */
	if (smtpd_server_space_low(s->srv, m.has_size ? m.size : 0)) {
		smtpd_reply(s, 452, "4.3.1", "Insufficient system storage");
		return;
	}
	char sender[MAIL_PATH_MAX + 1];
	if (mail_addr_format(&m.from, sender, sizeof(sender)) < 0) {
		smtpd_reply(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	if (s->auth_user != NULL && !smtpd_session_sandboxed(s) &&
	    !conf_sender_allowed(conf, sender, s->auth_user)) {
		smtpd_reply(s, 553, "5.7.1", "<%s>: Sender address not owned by user", sender);
		return;
	}
	s->pmail = m;
	snprintf(s->psender, sizeof(s->psender), "%s", sender);
	s->preq.sender = s->psender;
	smtpd_session_policy(s, POLICY_MAIL, &s->preq, cmd_mail_verdict);
}

/* The MAIL chain's verdict (fcrdns_required: src/policy): the transaction
 * begins. */
static void cmd_mail_verdict(struct smtpd_session *s, const struct policy_verdict *v)
{
	const struct smtp_mail_args *m = &s->pmail;
	const char *sender = s->psender;
	if (v->result == POLICY_REPLY) {
		smtpd_reply(s, v->code, v->enh[0] != '\0' ? v->enh : NULL, "%s", v->text);
		return;
	}
	struct smtpd_tx *tx = smtpd_tx_create(s);
	tx->mail = *m;
	qid_generate(tx->env.qid);
	tx->env.arrival_us = smtpd_now_us();
	envelope_set_str(&tx->env.sender, sender);
	if (m->envid[0] != '\0')
		envelope_set_str(&tx->env.envid, m->envid);
	tx->env.ret = m->ret;
	tx->env.body = m->body;
	tx->env.smtputf8 = m->smtputf8;
	envelope_set_str(&tx->env.client_addr, s->client_addr);
	envelope_set_str(&tx->env.client_helo, s->helo);
	/* The sandbox: captured by the queue, into the inbox of the login. */
	if (smtpd_session_sandboxed(s)) {
		tx->env.flags |= ENVELOPE_FLAG_SANDBOX;
		if (s->auth_user != NULL)
			envelope_set_str(&tx->env.inbox, s->auth_user);
	}
	/* SPF runs while the recipients and the content come in; local
	 * submissions (sendmail) are ours, not a peer's to check. */
	if (!s->local)
		tx->dauth = policy_dauth_begin(s->srv->policy, &s->client, sender, s->helo);
	smtpd_session_set_state(s, SMTPD_S_MAIL);
	smtpd_reply(s, 250, "2.1.0", "Sender <%s> OK", sender);
}

/* ORCPT for the targets of an alias when the client gave none: the address
 * it wrote, as "rfc822;" xtext (RFC 3461 §4: '+', '=' and octets outside
 * 33..126 become "+HH"), so DSNs name what the sender knows. */
static void cmd_rcpt_orcpt_make(const char *addr, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = (size_t)snprintf(out, outlen, "rfc822;");

	for (const unsigned char *p = (const unsigned char *)addr; *p != '\0'; p++) {
		if (n + 4 > outlen)
			break;
		if (*p < 33 || *p > 126 || *p == '+' || *p == '=') {
			out[n++] = '+';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		} else {
			out[n++] = (char)*p;
		}
	}
	out[n] = '\0';
}

static bool cmd_rcpt_is_dup(const struct smtpd_tx *tx, const char *addr)
{
	for (size_t i = 0; i < tx->env.nrcpts; i++)
		if (strcasecmp(tx->env.rcpts[i].addr, addr) == 0)
			return true;
	return false;
}

static bool cmd_rcpt_dup_cb(void *arg, const char *addr)
{
	return cmd_rcpt_is_dup(arg, addr);
}

/* RCPT to an alias: its targets (expanded and filtered by the alias check,
 * src/policy) become envelope recipients. */
static void cmd_rcpt_alias(struct smtpd_session *s, const struct smtp_rcpt_args *r,
			   const char *addr)
{
	struct smtpd_tx *tx = s->tx;
	struct policy_rcpt_req *pr = &s->preq.rcpt;
	char q[LOG_Q_MAX];
	size_t fresh = 0;
	for (size_t i = 0; i < pr->ntargets; i++)
		fresh += !cmd_rcpt_is_dup(tx, pr->targets[i]);
	if (tx->env.nrcpts + fresh > CMD_RCPT_EXPANDED_MAX) {
		smtpd_reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	char orcpt[SMTP_ORCPT_MAX + 1];
	if (r->orcpt[0] != '\0')
		snprintf(orcpt, sizeof(orcpt), "%s", r->orcpt);
	else
		cmd_rcpt_orcpt_make(addr, orcpt, sizeof(orcpt));
	for (size_t i = 0; i < pr->ntargets; i++) {
		if (cmd_rcpt_is_dup(tx, pr->targets[i]))
			continue;
		struct envelope_rcpt *er = envelope_add_rcpt(&tx->env, pr->targets[i]);
		er->notify = r->notify;
		envelope_set_str(&er->orcpt, orcpt);
		/* re-routed off-site by us: ARC sealing (arc.seal forwarded) */
		const char *at = strrchr(pr->targets[i], '@');
		if (at != NULL && !conf_is_local_domain(s->srv->conf, at + 1))
			tx->forwarded = true;
	}
	log_info("event=alias sid=%s rcpt=%s targets=%zu new=%zu", s->sid, log_qs(q, addr),
		 pr->ntargets, fresh);
	tx->n_rcpt_cmds++;
	smtpd_session_set_state(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.1.5", "Recipient <%s> OK", addr);
}

/* A recipient that passed every check joins the transaction, 250. */
static void cmd_rcpt_accept(struct smtpd_session *s, const struct smtp_rcpt_args *r,
			    const char *addr)
{
	struct smtpd_tx *tx = s->tx;
	if (cmd_rcpt_is_dup(tx, addr)) {
		/* already a recipient (RFC 5321 §3.3: duplicates are the
		 * client's business): 250 again, without verifying it anew */
		tx->n_rcpt_dups++;
	} else {
		if (tx->env.nrcpts >= CMD_RCPT_EXPANDED_MAX) {
			smtpd_reply(s, 452, "4.5.3", "Too many recipients");
			return;
		}
		tx->n_rcpt_cmds++;
		struct envelope_rcpt *er = envelope_add_rcpt(&tx->env, addr);
		er->notify = r->notify;
		if (r->orcpt[0] != '\0')
			envelope_set_str(&er->orcpt, r->orcpt);
	}
	smtpd_session_set_state(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.1.5", "Recipient <%s> OK", addr);
}

/* The RCPT chain's verdict (relay, recipient, verify, alias: src/policy). */
static void cmd_rcpt_verdict(struct smtpd_session *s, const struct policy_verdict *v)
{
	const struct smtp_rcpt_args *r = &s->prcpt;
	char addr[MAIL_PATH_MAX + 1];
	if (v->result == POLICY_REPLY)
		smtpd_reply(s, v->code, v->enh[0] != '\0' ? v->enh : NULL, "%s", v->text);
	else if (mail_addr_format(&r->to, addr, sizeof(addr)) < 0)
		smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
	else if (s->preq.rcpt.alias)
		cmd_rcpt_alias(s, r, addr);
	else
		cmd_rcpt_accept(s, r, addr);
	policy_rcpt_req_clear(&s->preq.rcpt);
}

static void cmd_rcpt(struct smtpd_session *s, const char *args, size_t len)
{
	struct smtpd_tx *tx = s->tx;
	struct smtp_rcpt_args r;
	struct smtp_perr err;
	if (tx->bdat_started) {
		smtpd_reply(s, 503, "5.5.1", "RCPT not allowed during BDAT transfer");
		return;
	}
	/* Repeats count as well: an endless stream of one address must also
	 * reach the 452s, then limits.recipient_overshoot, then 421. */
	if (tx->n_rcpt_cmds + tx->n_rcpt_dups >= s->srv->conf->limits.recipients) {
		smtpd_reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	if (smtp_parse_rcpt(args, len, tx->mail.smtputf8, &r, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return;
	}
	s->prcpt = r;
	memset(&s->preq.rcpt, 0, sizeof(s->preq.rcpt));
	s->preq.rcpt.to = &s->prcpt.to;
	s->preq.rcpt.smtputf8 = tx->mail.smtputf8;
	s->preq.rcpt.is_dup = cmd_rcpt_dup_cb;
	s->preq.rcpt.dup_arg = tx;
	s->preq.sender = tx->env.sender;
	smtpd_session_policy(s, POLICY_RCPT, &s->preq, cmd_rcpt_verdict);
}

static void cmd_rset(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	if (len != 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: RSET");
		return;
	}
	smtpd_tx_reset(s);
	smtpd_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_noop(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	(void)len; /* RFC 5321 §4.1.1.9: a NOOP argument is ignored */
	smtpd_reply(s, 250, "2.0.0", "Ok");
}

/* "XUID <uid>": the queue's maildrop pickup (src/queue/pickup.c) submits
 * a drop file for its owner. Believed only on the local socket from a
 * caller that is root or our own uid (the service user, who owns the
 * spool anyway); for anyone else the kernel's answer stands. */
static void cmd_xuid(struct smtpd_session *s, const char *args, size_t len)
{
	uint64_t uid;
	if (!s->local || (s->local_uid != 0 && s->local_uid != getuid())) {
		smtpd_reply(s, 550, "5.7.0", "XUID not allowed");
		return;
	}
	if (str_parse_u64(args, len, 0, UINT32_MAX - 1, &uid) < 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: XUID <uid>");
		return;
	}
	log_info("event=xuid sid=%s uid=%llu by=%u", s->sid, (unsigned long long)uid,
		 (unsigned)s->local_uid);
	s->local_uid = (uid_t)uid;
	smtpd_reply(s, 250, "2.0.0", "Ok");
}

static void cmd_quit(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	if (len != 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: QUIT");
		return;
	}
	smtpd_reply(s, 221, "2.0.0", "%s Bye", s->srv->conf->hostname);
	smtpd_session_close(s);
}

static void cmd_vrfy(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	if (len == 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	/* RFC 5321 §3.5.3: 252 without disclosing which users exist. */
	smtpd_reply(s, 252, "2.5.2",
		    "Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_help(struct smtpd_session *s, const char *args, size_t len)
{
	(void)args;
	(void)len;
	char text[256];
	size_t n = 0;
	for (size_t i = 0; i < sizeof(smtpd_cmds) / sizeof(smtpd_cmds[0]); i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%s", i ? " " : "",
				      smtpd_cmds[i].name);
	smtpd_reply(s, 214, "2.0.0", "Commands: %s", text);
}
