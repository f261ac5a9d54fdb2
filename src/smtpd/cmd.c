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

#define CMD_PRE_TX (SMTPD_SB(SMTPD_S_INIT) | SMTPD_SB(SMTPD_S_READY))
#define CMD_ANY (CMD_PRE_TX | SMTPD_SB(SMTPD_S_MAIL) | SMTPD_SB(SMTPD_S_RCPT))
/* Envelope recipients of one transaction once aliases are expanded;
 * limits.recipients bounds the RCPT commands themselves. */
#define CMD_RCPT_EXPANDED_MAX ALIASES_TARGETS_MAX

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
			 smtpd_auth_offered(s) && s->auth_user == NULL ? smtpd_auth_line(s) : "");
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
 * unauthenticated client may never do (no open relay, ever). *alias_r is
 * set when the address is to be expanded by the aliases file: an exact
 * alias wins over a user of that name, the "@domain" catch-all takes only
 * what no user and no exact alias takes. */
static int cmd_rcpt_policy(struct smtpd_session *s, struct mail_addr *to, bool *alias_r)
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
		bool trusted = s->auth_user != NULL ||
			       conf_is_trusted_network(conf, (const struct sockaddr *)&s->client_ss);
		/* relay_domains: ours to pass on, from anyone (a gateway or
		 * backup MX); the route may verify the user (cmd_rcpt_verify.c).
		 * Not a source-routed local part (user%host, host!user,
		 * "user@host") from an untrusted client: the server behind us
		 * might route it on, making us an open relay (Postfix's
		 * allow_untrusted_routing = no). */
		if (conf_is_relay_domain(conf, to->domain)) {
			if (trusted || strpbrk(to->local, "%!@") == NULL)
				return 0;
			smtpd_reply(s, 554, "5.7.1",
				    "<%s@%s>: Relay access denied: source routing", to->local,
				    to->domain);
			return -1;
		}
		/* Relaying: only for an authenticated user or a trusted
		 * network (relay.trusted_networks), never for anyone else. */
		if (trusted)
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
	char full[MAIL_LOCAL_MAX + 1 + MAIL_DOMAIN_MAX + 1];
	snprintf(full, sizeof(full), "%s@%s", to->local, to->domain);
	if (aliases_has_exact(s->srv->aliases, full)) {
		*alias_r = true;
		return 0;
	}
	/* postmaster@ any of our domains is always deliverable (RFC 5321
	 * §4.5.1), through its alias when it has one (above). */
	if (strcmp(mailbox, "postmaster") == 0 || conf->accept_any_user ||
	    users_exists(s->srv->users, mailbox, to->domain))
		return 0;
	if (aliases_has(s->srv->aliases, full)) {
		*alias_r = true;
		return 0;
	}
	smtpd_reply(s, 550, "5.1.1", "<%s@%s>: Recipient address rejected: User unknown",
		    to->local, to->domain);
	return -1;
}

/* Can an alias target be delivered? Remote targets: yes, relaying for our
 * own alias is allowed since the client did not choose them. Local targets
 * must name a user (or postmaster, or any with accept_any_user). */
static bool cmd_rcpt_target_ok(struct smtpd_session *s, const char *addr)
{
	const struct conf *conf = s->srv->conf;
	const char *at = strrchr(addr, '@');
	char local[MAIL_LOCAL_MAX + 1], mailbox[MAILDIR_MAILBOX_MAX + 1];

	if (at == NULL)
		return false;
	if (!conf_is_local_domain(conf, at + 1))
		return true;
	if ((size_t)(at - addr) > MAIL_LOCAL_MAX)
		return false;
	memcpy(local, addr, (size_t)(at - addr));
	local[at - addr] = '\0';
	if (maildir_mailbox_name(local, mailbox) < 0)
		return false;
	return strcmp(mailbox, "postmaster") == 0 || conf->accept_any_user ||
	       users_exists(s->srv->users, mailbox, at + 1);
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

/* Keep the deliverable targets of t[0..n) (logging the others), then
 * return how many of them are not yet recipients. */
static size_t cmd_rcpt_targets_filter(struct smtpd_session *s, const char *addr, char **t,
				      size_t *n)
{
	char q1[LOG_Q_MAX], q2[LOG_Q_MAX];
	size_t kept = 0, fresh = 0;

	for (size_t i = 0; i < *n; i++) {
		if (!cmd_rcpt_target_ok(s, t[i])) {
			log_warn("event=alias_skip sid=%s rcpt=%s target=%s reason=unknown_user",
				 s->sid, log_qs(q1, addr), log_qs(q2, t[i]));
			free(t[i]);
			continue;
		}
		t[kept++] = t[i];
		fresh += !cmd_rcpt_is_dup(s->tx, t[kept - 1]);
	}
	*n = kept;
	return fresh;
}

/* Is addr "postmaster@..." (any case, any +tag)? */
static bool cmd_rcpt_is_postmaster(const char *addr)
{
	size_t len = strcspn(addr, "+@");
	return len == 10 && strncasecmp(addr, "postmaster", 10) == 0;
}

/* RCPT to an alias: expand it (conf/aliases.h) into envelope recipients.
 * Returns 0 when the reply for the original address is still to be sent. */
static int cmd_rcpt_alias(struct smtpd_session *s, const struct smtp_rcpt_args *r,
			  const char *addr)
{
	struct smtpd_tx *tx = s->tx;
	char **t = NULL, q[LOG_Q_MAX], q2[LOG_Q_MAX];
	size_t n = 0;
	const char *error = "alias loop";
	int rc = aliases_expand(s->srv->aliases, addr, &t, &n, &error);

	if (rc < 0 && cmd_rcpt_is_postmaster(addr)) {
		/* RFC 5321 §4.5.1: postmaster stays deliverable whatever its
		 * alias says; fall back to its own mailbox. */
		log_warn("event=alias_error sid=%s rcpt=%s reason=%s fallback=mailbox", s->sid,
			 log_qs(q, addr), log_qs(q2, error));
		t = xcalloc(1, sizeof(*t));
		t[0] = xstrdup(addr);
		n = 1;
	} else if (rc < 0) {
		log_warn("event=alias_error sid=%s rcpt=%s reason=%s", s->sid, log_qs(q, addr),
			 log_qs(q2, error));
		/* RFC 3463 X.4.6 routing loop; X.5.3 too many recipients */
		if (strcmp(error, "alias loop") == 0)
			smtpd_reply(s, 550, "5.4.6", "<%s>: Alias loop detected", addr);
		else
			smtpd_reply(s, 550, "5.5.3", "<%s>: Alias expands to too many recipients",
				    addr);
		return -1;
	}
	size_t fresh = cmd_rcpt_targets_filter(s, addr, t, &n);
	if (n == 0 && cmd_rcpt_is_postmaster(addr)) {
		t[n++] = xstrdup(addr);
		fresh = !cmd_rcpt_is_dup(tx, addr);
	}
	rc = -1;
	if (n == 0) {
		smtpd_reply(s, 550, "5.1.1", "<%s>: Recipient address rejected: User unknown",
			    addr);
	} else if (tx->env.nrcpts + fresh > CMD_RCPT_EXPANDED_MAX) {
		smtpd_reply(s, 452, "4.5.3", "Too many recipients");
	} else {
		char orcpt[SMTP_ORCPT_MAX + 1];
		if (r->orcpt[0] != '\0')
			snprintf(orcpt, sizeof(orcpt), "%s", r->orcpt);
		else
			cmd_rcpt_orcpt_make(addr, orcpt, sizeof(orcpt));
		for (size_t i = 0; i < n; i++) {
			if (cmd_rcpt_is_dup(tx, t[i]))
				continue;
			struct envelope_rcpt *er = envelope_add_rcpt(&tx->env, t[i]);
			er->notify = r->notify;
			envelope_set_str(&er->orcpt, orcpt);
		}
		log_info("event=alias sid=%s rcpt=%s targets=%zu new=%zu", s->sid,
			 log_qs(q, addr), n, fresh);
		rc = 0;
	}
	aliases_targets_free(&t, n);
	return rc;
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
	bool alias = false;
	if (cmd_rcpt_policy(s, &r.to, &alias) < 0)
		return;
	char addr[MAIL_PATH_MAX + 1];
	if (mail_addr_format(&r.to, addr, sizeof(addr)) < 0) {
		smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
		return;
	}
	if (alias) {
		if (cmd_rcpt_alias(s, &r, addr) < 0)
			return;
		tx->n_rcpt_cmds++;
		smtpd_session_set_state(s, SMTPD_S_RCPT);
		smtpd_reply(s, 250, "2.1.5", "Recipient <%s> OK", addr);
		return;
	}
	if (cmd_rcpt_is_dup(tx, addr)) {
		/* already a recipient (RFC 5321 §3.3: duplicates are the
		 * client's business): 250 again, without verifying it anew */
		tx->n_rcpt_dups++;
		smtpd_session_set_state(s, SMTPD_S_RCPT);
		smtpd_reply(s, 250, "2.1.5", "Recipient <%s> OK", addr);
		return;
	}
	if (smtpd_rcpt_verify(s, &r, addr))
		return;
	smtpd_rcpt_accept(s, &r, addr);
}

void smtpd_rcpt_accept(struct smtpd_session *s, const struct smtp_rcpt_args *r, const char *addr)
{
	struct smtpd_tx *tx = s->tx;
	if (!cmd_rcpt_is_dup(tx, addr)) {
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
