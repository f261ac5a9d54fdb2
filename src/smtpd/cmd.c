/* cmd.c — the SMTP command table (the single source of truth for which
 * command is valid in which state) and the handlers of the short commands.
 * DATA and BDAT live in cmd_data.c. Runs in smtpd on the event loop; the
 * arguments are hostile and reach only the pure parsers in parse.c. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "conf/users.h"
#include "deliver/maildir.h"
#include "lib/log.h"
#include "lib/strutil.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define CMD_PRE_TX (SMTPD_SB(SMTPD_S_INIT) | SMTPD_SB(SMTPD_S_READY))
#define CMD_ANY (CMD_PRE_TX | SMTPD_SB(SMTPD_S_MAIL) | SMTPD_SB(SMTPD_S_RCPT))

static void cmd_ehlo(struct smtpd_session *s, const char *args, size_t len);
static void cmd_helo(struct smtpd_session *s, const char *args, size_t len);
static void cmd_mail(struct smtpd_session *s, const char *args, size_t len);
static void cmd_rcpt(struct smtpd_session *s, const char *args, size_t len);
static void cmd_rset(struct smtpd_session *s, const char *args, size_t len);
static void cmd_noop(struct smtpd_session *s, const char *args, size_t len);
static void cmd_quit(struct smtpd_session *s, const char *args, size_t len);
static void cmd_vrfy(struct smtpd_session *s, const char *args, size_t len);
static void cmd_help(struct smtpd_session *s, const char *args, size_t len);

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

static bool cmd_hello_common(struct smtpd_session *s, const char *args, size_t len, bool esmtp)
{
	struct smtp_perr err;
	if (smtp_parse_helo(args, len, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return false;
	}
	/* RFC 5321 §4.1.4: EHLO/HELO in a transaction is an implied RSET. */
	smtpd_tx_reset(s);
	memcpy(s->helo, args, len);
	s->helo[len] = '\0';
	s->esmtp = esmtp;
	smtpd_session_set_state(s, SMTPD_S_READY);
	return true;
}

static void cmd_ehlo(struct smtpd_session *s, const char *args, size_t len)
{
	if (!cmd_hello_common(s, args, len, true))
		return;
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
			 smtpd_auth_offered(s) && s->auth_user == NULL ? s->srv->auth_line : "");
	smtpd_reply_raw(s, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void cmd_helo(struct smtpd_session *s, const char *args, size_t len)
{
	if (cmd_hello_common(s, args, len, false))
		smtpd_reply(s, 250, NULL, "%s", s->srv->conf->hostname);
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
	char sender[MAIL_PATH_MAX + 1];
	if (mail_addr_format(&m.from, sender, sizeof(sender)) < 0) {
		smtpd_reply(s, 501, "5.1.7", "Bad sender address syntax");
		return;
	}
	if (s->auth_user != NULL && !conf_sender_allowed(conf, sender, s->auth_user)) {
		smtpd_reply(s, 553, "5.7.1", "<%s>: Sender address not owned by user", sender);
		return;
	}
	struct smtpd_tx *tx = smtpd_tx_create(s);
	tx->mail = m;
	qid_generate(tx->env.qid);
	tx->env.arrival_us = smtpd_now_us();
	envelope_set_str(&tx->env.sender, sender);
	if (m.envid[0] != '\0')
		envelope_set_str(&tx->env.envid, m.envid);
	tx->env.ret = m.ret;
	tx->env.body = m.body;
	tx->env.smtputf8 = m.smtputf8;
	envelope_set_str(&tx->env.client_addr, s->client_addr);
	envelope_set_str(&tx->env.client_helo, s->helo);
	smtpd_session_set_state(s, SMTPD_S_MAIL);
	smtpd_reply(s, 250, "2.1.0", "Sender <%s> OK", sender);
}

/* Local policy for one recipient: 0 ok, -1 refused (reply sent). The
 * address is in one of our domains or it is relaying, which an
 * unauthenticated client may never do (no open relay, ever). */
static int cmd_rcpt_policy(struct smtpd_session *s, struct mail_addr *to)
{
	const struct conf *conf = s->srv->conf;
	if (to->is_postmaster) {
		/* RFC 5321 §4.5.1: <postmaster> without a domain is ours. */
		const char *dom = conf->n_local_domains > 0 ? conf->local_domains[0]
							    : conf->hostname;
		snprintf(to->domain, sizeof(to->domain), "%s", dom);
		to->is_postmaster = false;
		str_lower(to->domain);
	}
	if (!conf_is_local_domain(conf, to->domain)) {
		/* Relaying: only for an authenticated user or a trusted
		 * network (relay.trusted_networks), never for anyone else. */
		if (s->auth_user != NULL ||
		    conf_is_trusted_network(conf, (const struct sockaddr *)&s->client_ss))
			return 0;
		smtpd_reply(s, 554, "5.7.1", "<%s@%s>: Relay access denied", to->local, to->domain);
		return -1;
	}
	char mailbox[MAILDIR_MAILBOX_MAX + 1];
	if (maildir_mailbox_name(to->local, mailbox) < 0) {
		smtpd_reply(s, 550, "5.1.1", "<%s@%s>: Recipient address rejected: User unknown",
			    to->local, to->domain);
		return -1;
	}
	if (strcmp(mailbox, "postmaster") == 0 || conf->accept_any_user ||
	    users_exists(s->srv->users, mailbox, to->domain))
		return 0;
	smtpd_reply(s, 550, "5.1.1", "<%s@%s>: Recipient address rejected: User unknown",
		    to->local, to->domain);
	return -1;
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
	if (tx->env.nrcpts >= s->srv->conf->limits.recipients) {
		smtpd_reply(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	if (smtp_parse_rcpt(args, len, tx->mail.smtputf8, &r, &err) < 0) {
		smtpd_reply_perr(s, &err);
		return;
	}
	if (cmd_rcpt_policy(s, &r.to) < 0)
		return;
	char addr[MAIL_PATH_MAX + 1];
	if (mail_addr_format(&r.to, addr, sizeof(addr)) < 0) {
		smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}
	bool dup = false;
	for (size_t i = 0; i < tx->env.nrcpts && !dup; i++)
		dup = strcasecmp(tx->env.rcpts[i].addr, addr) == 0;
	if (!dup) {
		struct envelope_rcpt *er = envelope_add_rcpt(&tx->env, addr);
		er->notify = r.notify;
		if (r.orcpt[0] != '\0')
			envelope_set_str(&er->orcpt, r.orcpt);
	}
	smtpd_session_set_state(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.1.5", "Recipient <%s> OK", addr);
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
