/* tx.c — the transaction: MAIL, RCPT, DATA and the replies after the dot.
 * Part of the SMTP/LMTP client (see client.c for the whole, and
 * client_int.h for the parts). Loop thread; every reply is hostile. */
#include "smtpc/client_int.h"

#include <stdio.h>
#include <time.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/log.h"
#include "mail/smtp_params.h"

/* --- the transaction ------------------------------------------------------ */

/* Envelope strings go into command lines: no control octets, bounded. */
static bool smtpc_arg_ok(const char *v)
{
	size_t n = 0;
	for (; v[n] != '\0'; n++) {
		unsigned char ch = (unsigned char)v[n];
		if (ch < 0x20 || ch == 0x7f || n >= SMTPC_ARG_MAX)
			return false;
	}
	return true;
}

static bool session_envelope_ok(const struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	if (!smtpc_arg_ok(m->sender) || (m->envid != NULL && !smtpc_arg_ok(m->envid)))
		return false;
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (!smtpc_arg_ok(m->rcpts[i]))
			return false;
		if (m->orcpts != NULL && m->orcpts[i] != NULL && !smtpc_arg_ok(m->orcpts[i]))
			return false;
	}
	return true;
}

static void session_send_mail(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	struct evbuffer *out = bufferevent_get_output(s->bev);

	/* the parameters below go on to the next hop exactly when it offers DSN */
	s->res.dsn_offered = s->caps.dsn;
	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		s->res.mail_us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	}
	evbuffer_add_printf(out, "MAIL FROM:<%s>", m->sender);
	if (s->caps.size) /* RFC 1870 §6 */
		evbuffer_add_printf(out, " SIZE=%zu", m->len);
	if (m->body == SMTP_BODY_8BITMIME && s->caps.eightbitmime) /* RFC 6152 */
		evbuffer_add_printf(out, " BODY=8BITMIME");
	if (m->smtputf8) /* RFC 6531 §3.4 */
		evbuffer_add_printf(out, " SMTPUTF8");
	if (s->caps.dsn) { /* RFC 3461 §4.3, §4.4 */
		if (m->ret == SMTP_RET_FULL || m->ret == SMTP_RET_HDRS)
			evbuffer_add_printf(out, " RET=%s",
			                    m->ret == SMTP_RET_FULL ? "FULL" : "HDRS");
		if (m->envid != NULL && m->envid[0] != '\0')
			evbuffer_add_printf(out, " ENVID=%s", m->envid);
	}
	evbuffer_add(out, "\r\n", 2);
}

static void session_send_rcpt(struct smtpc_session *s, size_t i)
{
	const struct smtpc_msg *m = s->msg;
	struct evbuffer *out = bufferevent_get_output(s->bev);

	evbuffer_add_printf(out, "RCPT TO:<%s>", m->rcpts[i]);
	if (s->caps.dsn) { /* RFC 3461 §4.1, §4.2 */
		unsigned n = m->notify != NULL ? m->notify[i] : 0;
		if (n & SMTP_NOTIFY_NEVER) {
			evbuffer_add_printf(out, " NOTIFY=NEVER");
		} else if (n != 0) {
			const char *sep = " NOTIFY=";
			static const struct {
				unsigned bit;
				const char *name;
			} kw[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
			          {SMTP_NOTIFY_FAILURE, "FAILURE"},
			          {SMTP_NOTIFY_DELAY, "DELAY"}};
			for (size_t k = 0; k < sizeof(kw) / sizeof(kw[0]); k++) {
				if (n & kw[k].bit) {
					evbuffer_add_printf(out, "%s%s", sep, kw[k].name);
					sep = ",";
				}
			}
		}
		if (m->orcpts != NULL && m->orcpts[i] != NULL && m->orcpts[i][0] != '\0')
			evbuffer_add_printf(out, " ORCPT=%s", m->orcpts[i]);
	}
	evbuffer_add(out, "\r\n", 2);
}

enum smtpc_go smtpc_session_tx_start(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;

	if (m->smtputf8 && !s->caps.smtputf8) {
		/* RFC 6531 §3.2: cannot be downgraded here; bounce */
		smtpc_session_record(s, true, 0, "5.6.7", "%s",
		                     "the message needs SMTPUTF8 and the server does not offer it");
		return smtpc_session_tx_end(s, false);
	}
	if (s->caps.size && s->caps.size_max != 0 && m->len > s->caps.size_max) {
		/* RFC 1870 §6.2: do not send what the server said it will refuse */
		smtpc_session_record(s, true, 552, "5.3.4",
		                     "message size %zu exceeds the server's limit %llu", m->len,
		                     s->caps.size_max);
		return smtpc_session_tx_end(s, false);
	}
	if (!session_envelope_ok(s)) {
		smtpc_session_record(s, true, 0, "5.1.3", "%s", "invalid envelope address");
		return smtpc_session_tx_end(s, false);
	}
	if (m->nrcpts == 0) {
		smtpc_session_record(s, true, 0, "5.1.3", "%s", "no recipients");
		return smtpc_session_tx_end(s, false);
	}
	s->pipelining = s->caps.pipelining;
	s->tx_next = 0;
	s->accepted = 0;
	session_send_mail(s);
	if (s->pipelining) { /* RFC 2920 §3.1: MAIL, RCPT..., DATA in one group */
		for (size_t i = 0; i < m->nrcpts; i++)
			session_send_rcpt(s, i);
		if (!m->probe)
			smtpc_session_send(s, "DATA\r\n");
	}
	log_debug("smtpc: relay=%s MAIL rcpts=%zu size=%zu pipelining=%d", s->res.remote_mta,
	          m->nrcpts, m->len, s->pipelining);
	smtpc_session_expect(s, SMTPC_S_TX);
	return SMTPC_GO;
}

/* One MAIL/RCPT/DATA reply, in order (RFC 2920 §3.1 keeps the order). */
enum smtpc_go smtpc_session_on_tx(struct smtpc_session *s, const struct smtp_reply *r)
{
	size_t n = s->msg->nrcpts;
	size_t idx = s->tx_next++;

	if (idx == 0) {
		if (s->reused && r->code == 421)
			return smtpc_session_reuse_failed(s, "421 to MAIL");
		s->reused = false;
		if (r->code / 100 != 2) { /* MAIL refused: for every recipient */
			smtpc_session_record_reply(s, r, true);
			if (!s->pipelining && r->code != 421)
				return smtpc_session_tx_end(s, true);
			return smtpc_session_quit(s, false);
		}
		if (!s->pipelining)
			session_send_rcpt(s, 0);
		smtpc_session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (idx <= n && s->msg->probe) {
		smtpc_session_rcpt_set(s, idx - 1, r);
		if (idx == n)
			return smtpc_session_tx_end(s, true);
		if (!s->pipelining)
			session_send_rcpt(s, idx);
		smtpc_session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (idx <= n) {
		size_t i = idx - 1;
		if (r->code / 100 == 2) {
			s->rcpt_accepted[i] = true;
			s->accepted++;
		} else {
			smtpc_session_rcpt_set(s, i, r);
		}
		if (idx < n) {
			if (!s->pipelining)
				session_send_rcpt(s, idx);
		} else if (s->accepted == 0) {
			/* every recipient has its own refusal; the pipelined DATA
			 * reply is read (and ignored) in the QUIT state */
			smtpc_session_record_reply(s, r, true);
			if (!s->pipelining && r->code != 421)
				return smtpc_session_tx_end(s, true);
			return smtpc_session_quit(s, false);
		} else if (!s->pipelining) {
			smtpc_session_send(s, "DATA\r\n");
		}
		smtpc_session_expect(s, SMTPC_S_TX);
		return SMTPC_GO;
	}
	if (r->code == 354)
		return smtpc_session_body_start(s);
	smtpc_session_record_reply(s, r, true); /* DATA refused: for the accepted ones */
	if (r->code != 421)
		return smtpc_session_tx_end(s, true);
	return smtpc_session_quit(s, false);
}

/* After the dot: one reply (SMTP) or one per accepted recipient in RCPT
 * order (LMTP, RFC 2033 §4.2). */
enum smtpc_go smtpc_session_on_dot(struct smtpc_session *s, const struct smtp_reply *r)
{
	size_t n = s->msg->nrcpts;

	if (!s->dest->lmtp) {
		for (size_t i = 0; i < n; i++)
			if (s->rcpt_accepted[i] && !s->rcpt_done[i])
				smtpc_session_rcpt_set(s, i, r);
		smtpc_session_record_reply(s, r, true);
		/* RFC 5321 §4.1.1.4: the reply to the dot ends the transaction */
		if (r->code != 421)
			return smtpc_session_tx_end(s, r->code / 100 != 2);
		return smtpc_session_quit(s, false);
	}
	size_t i = s->dot_next;
	while (i < n && !s->rcpt_accepted[i])
		i++;
	if (i < n)
		smtpc_session_rcpt_set(s, i, r);
	for (i++; i < n && !s->rcpt_accepted[i]; i++)
		;
	s->dot_next = i;
	if (i < n) {
		smtpc_session_timer_arm(s, s->dest->data_timeout_ms != 0 ? s->dest->data_timeout_ms
		                                                         : SMTPC_DATA_TIMEOUT_MS);
		return SMTPC_GO;
	}
	smtpc_session_record_reply(s, r, true);
	if (r->code != 421)
		return smtpc_session_tx_end(s, r->code / 100 != 2);
	return smtpc_session_quit(s, false);
}
