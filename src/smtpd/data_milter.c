/* data_milter.c — the milters at the end of data (src/milter): over the
 * session's milter connections (policy_milter.c opened them at connect and
 * asked them at HELO, MAIL and RCPT), smtpd hands the milters the message
 * once it is complete and before it is committed, one milter after the
 * other, and applies each one's answer before the next sees the message:
 * a refusal, a discard (250, nothing queued), or the modifications
 * (sender, recipients, header fields, body, quarantine). A discard decided
 * earlier (at CONNECT, HELO, MAIL or RCPT) drops the message here without
 * asking anyone.
 * Kept apart from cmd_data.c so that it can become one step of an
 * end-of-data chain; cmd_data.c calls smtpd_milter_wanted() and
 * smtpd_milter_start() and nothing else.
 *
 * Header or body changes rewrite the content: the header section is small
 * (limits.header_size) and is rebuilt in memory; the body is copied from
 * the first file (or replaced), into memory when the message had not
 * spilled to the spool yet, else into a new file from the queue (the first
 * is given up). Runs in smtpd on the loop; milter answers are hostile. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "milter/milter.h"
#include "queue/spool.h"
#include "smtpd/qclient.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct smtpd_milter {
	struct smtpd_session *s;
	smtpd_milter_cont_fn *cont;
	struct milter_info info;
	struct milter_content content;
	char **rcpts;
	size_t next; /* the milter to ask next */
	bool running;
};

bool smtpd_milter_wanted(const struct smtpd_session *s)
{
	return s->srv->conf->n_milters > 0 && s->client.milter != NULL && !s->tx->milter_done;
}

static void milter_step(struct smtpd_milter *m);

static void milter_state_free(struct smtpd_milter **mp)
{
	struct smtpd_milter *m = *mp;
	if (m == NULL)
		return;
	*mp = NULL;
	if (m->running)
		milter_sess_cancel(m->s->client.milter); /* NULL once the session ended */
	free(m->rcpts);
	free(m);
}

void smtpd_milter_tx_end(struct smtpd_session *s)
{
	milter_sess_abort(s->client.milter);
}

void smtpd_milter_cancel(struct smtpd_tx *tx)
{
	milter_state_free(&tx->milter);
}

/* The transaction ended here (refused or discarded): the session goes on. */
static void milter_end(struct smtpd_session *s)
{
	smtpd_tx_reset(s);
	if (s->bev == NULL) {
		smtpd_session_free(&s);
		return;
	}
	smtpd_session_timeouts(s, false);
	if (s->gone) {
		smtpd_session_close(s);
		return;
	}
	smtpd_session_resume(s);
}

static void milter_del_rcpt(struct envelope *env, const char *addr)
{
	for (size_t i = 0; i < env->nrcpts; i++) {
		if (strcasecmp(env->rcpts[i].addr, addr) != 0)
			continue;
		free(env->rcpts[i].addr);
		free(env->rcpts[i].orcpt);
		memmove(&env->rcpts[i], &env->rcpts[i + 1],
		        (env->nrcpts - i - 1) * sizeof(env->rcpts[0]));
		env->nrcpts--;
		return;
	}
}

static void milter_envelope(struct smtpd_session *s, const struct milter_result *r)
{
	struct envelope *env = &s->tx->env;
	if (r->new_sender != NULL)
		envelope_set_str(&env->sender, r->new_sender);
	for (size_t i = 0; i < r->n_del; i++)
		milter_del_rcpt(env, r->del_rcpts[i]);
	for (size_t i = 0; i < r->n_add; i++) {
		bool dup = false;
		for (size_t k = 0; k < env->nrcpts && !dup; k++)
			dup = strcasecmp(env->rcpts[k].addr, r->add_rcpts[i]) == 0;
		if (!dup && r->add_rcpts[i][0] != '\0')
			envelope_add_rcpt(env, r->add_rcpts[i]);
	}
}

/* A replaced body with every line ending made CRLF. */
static int milter_body_crlf(struct buf *out, const struct buf *in)
{
	for (size_t i = 0; i < in->len; i++) {
		unsigned char c = in->data[i];
		if (c == '\r' && i + 1 < in->len && in->data[i + 1] == '\n')
			continue;
		if (c == '\n' || c == '\r') {
			if (buf_append(out, "\r\n", 2) < 0)
				return -1;
			continue;
		}
		if (buf_append_byte(out, c) < 0)
			return -1;
	}
	if (out->len >= 2 && memcmp(out->data + out->len - 2, "\r\n", 2) != 0)
		return buf_append(out, "\r\n", 2);
	return 0;
}

/* Copy content[from..) (the first file, then what is in memory) to msg. */
static int milter_copy_body(struct smtpd_milter *m, uint64_t from, struct spool_msg *msg)
{
	const struct milter_content *c = &m->content;
	unsigned char chunk[65536];
	uint64_t off = from;
	while (off < c->file_len) {
		size_t want =
		    c->file_len - off < sizeof(chunk) ? (size_t)(c->file_len - off) : sizeof(chunk);
		ssize_t n = pread(c->fd, chunk, want, (off_t)(c->off + off));
		if (n <= 0 || spool_msg_append(msg, chunk, (size_t)n) < 0)
			return -1;
		off += (uint64_t)n;
	}
	size_t t = (size_t)(off - c->file_len);
	if (t < c->tail_len && spool_msg_append(msg, c->tail + t, c->tail_len - t) < 0)
		return -1;
	return 0;
}

/* The new content: the header section after the milters' changes, then
 * the body (replaced, or the original). 0, or -1 (451). */
static int milter_rewrite(struct smtpd_milter *m, struct milter_result *r)
{
	struct smtpd_session *s = m->s;
	struct smtpd_tx *tx = s->tx;
	struct buf out;
	buf_init(&out, 0);
	if (milter_hdrs_apply(&r->hdrs, r->ops, r->n_ops, &out) < 0 ||
	    (r->body_replaced && milter_body_crlf(&out, &r->body) < 0)) {
		buf_free(&out);
		return -1;
	}
	if (tx->msg == NULL) {
		/* all of it in memory: tx->body is the content */
		if (!r->body_replaced && buf_append(&out, tx->body.data + r->hdrs.body_off,
		                                    tx->body.len - (size_t)r->hdrs.body_off) < 0) {
			buf_free(&out);
			return -1;
		}
		buf_free(&tx->body);
		tx->body = out;
		return 0;
	}
	struct qclient_file f;
	if (!qclient_take(s->srv->qc, &f)) {
		buf_free(&out);
		return -1; /* no file at hand: 451, rare (the pool is refilled) */
	}
	struct spool_msg *msg = spool_msg_adopt(f.fd, tx->env.qid);
	if (spool_msg_append(msg, out.data, out.len) < 0 ||
	    (!r->body_replaced && milter_copy_body(m, r->hdrs.body_off, msg) < 0)) {
		buf_free(&out);
		spool_msg_abort(&msg);
		qclient_abort(s->srv->qc, &f);
		return -1;
	}
	/* what the new file holds: the next milter reads it back */
	uint64_t spilled = out.len;
	if (!r->body_replaced)
		spilled += m->content.file_len + m->content.tail_len - r->hdrs.body_off;
	buf_free(&out);
	spool_msg_abort(&tx->msg);
	qclient_abort(s->srv->qc, &tx->file);
	tx->msg = msg;
	tx->file = f;
	tx->spilled = spilled;
	buf_reset(&tx->body);
	return 0;
}

/* The message refused or discarded: the transaction ends here. */
static void milter_discard(struct smtpd_milter *m, const char *who)
{
	struct smtpd_session *s = m->s;
	struct smtpd_tx *tx = s->tx;
	log_info("event=milter_discard sid=%s qid=%s milter=%s", s->sid, tx->env.qid,
	         who[0] != '\0' ? who : "-");
	if (s->bev != NULL)
		smtpd_reply(s, 250, "2.0.0", "Ok: queued as %s", tx->env.qid);
	milter_state_free(&tx->milter);
	milter_end(s);
}

/* One milter's answer at the end of body: applied before the next milter
 * sees the message. */
static void milter_on_done(struct milter_result *r, void *arg)
{
	struct smtpd_milter *m = arg;
	struct smtpd_session *s = m->s;
	struct smtpd_tx *tx = s->tx;
	m->running = false;
	char qf[LOG_Q_MAX];
	if (r->verdict == MILTER_ACCEPT && milter_sess_discarding(s->client.milter)) {
		milter_result_free(&r);
		milter_discard(m, milter_sess_discarder(s->client.milter));
		return;
	}
	if (r->verdict == MILTER_REJECT || r->verdict == MILTER_TEMPFAIL) {
		log_info("event=milter_reject sid=%s qid=%s milter=%s stage=eob code=%d text=%s",
		         s->sid, tx->env.qid, r->milter, r->code, log_qs(qf, r->text));
		if (s->bev != NULL)
			smtpd_reply(s, r->code, r->enh[0] != '\0' ? r->enh : NULL, "%s", r->text);
		milter_result_free(&r);
		milter_state_free(&tx->milter);
		milter_end(s);
		return;
	}
	milter_envelope(s, r);
	if (r->verdict == MILTER_DISCARD || tx->env.nrcpts == 0) {
		char who[64];
		snprintf(who, sizeof(who), "%s", r->milter);
		milter_result_free(&r);
		milter_discard(m, who);
		return;
	}
	if (r->quarantine != NULL) {
		/* as DMARC's quarantine: the envelope flag (local delivery
		 * into the recipient's .Junk), and in the message itself a
		 * header field naming the reason, and a log line */
		tx->env.flags |= ENVELOPE_FLAG_JUNK;
		log_info("event=milter_quarantine sid=%s qid=%s reason=%s", s->sid, tx->env.qid,
		         log_qs(qf, r->quarantine));
		r->ops = xreallocarray(r->ops, r->n_ops + 1, sizeof(*r->ops));
		r->ops[r->n_ops++] = (struct milter_hdr_op){
		    MILTER_HDR_INSERT, 0, xstrdup("X-Hikyaku-Quarantine"), xstrdup(r->quarantine)};
	}
	int rc = 0;
	if (r->n_ops > 0 || r->body_replaced)
		rc = milter_rewrite(m, r);
	milter_result_free(&r);
	if (rc < 0) {
		log_err("event=milter_rewrite_failed sid=%s qid=%s", s->sid, tx->env.qid);
		if (s->bev != NULL)
			smtpd_reply(s, 451, "4.3.0", "Local error in processing, try again later");
		milter_state_free(&tx->milter);
		milter_end(s);
		return;
	}
	milter_step(m);
}

/* The envelope and content as they are now, for the next milter. */
static void milter_snapshot(struct smtpd_milter *m)
{
	struct smtpd_session *s = m->s;
	struct smtpd_tx *tx = s->tx;
	free(m->rcpts);
	m->rcpts = xcalloc(tx->env.nrcpts + 1, sizeof(char *));
	for (size_t i = 0; i < tx->env.nrcpts; i++)
		m->rcpts[i] = tx->env.rcpts[i].addr;
	m->info = (struct milter_info){
	    .hostname = s->srv->conf->hostname,
	    .qid = tx->env.qid,
	    .client_name = "",
	    .client_addr = s->client_addr,
	    .client_port = s->client_port,
	    .family = s->local                              ? 'L'
	              : strchr(s->client_addr, ':') != NULL ? '6'
	                                                    : '4',
	    .helo = s->helo,
	    .auth_user = s->auth_user,
	    .sender = tx->env.sender != NULL ? tx->env.sender : "",
	    .rcpts = m->rcpts,
	    .nrcpts = tx->env.nrcpts,
	};
	m->content = (struct milter_content){
	    .fd = tx->msg != NULL ? tx->file.fd : -1,
	    .off = SPOOL_CONTENT_GAP, /* spool_msg_adopt() leaves the gap */
	    .file_len = tx->msg != NULL ? tx->spilled : 0,
	    .tail = tx->body.data,
	    .tail_len = tx->body.len,
	};
}

/* The next milter, or back to the commit once every one has had its say. */
static void milter_step(struct smtpd_milter *m)
{
	struct smtpd_session *s = m->s;
	struct smtpd_tx *tx = s->tx;
	struct milter_sess *ms = s->client.milter;
	if (m->next >= milter_sess_count(ms)) {
		smtpd_milter_cont_fn *cont = m->cont;
		milter_state_free(&tx->milter);
		tx->milter_done = true;
		cont(s);
		return;
	}
	milter_snapshot(m);
	size_t i = m->next++;
	m->running = true;
	if (milter_sess_run(ms, MILTER_STAGE_EOB, i, i + 1, &m->info, &m->content,
	                    s->srv->conf->limits.message_size, milter_on_done, m) < 0) {
		/* cannot happen: the session runs one stage at a time */
		m->running = false;
		log_err("event=milter_busy sid=%s qid=%s", s->sid, tx->env.qid);
		if (s->bev != NULL)
			smtpd_reply(s, 451, "4.3.0", "Local error in processing, try again later");
		milter_state_free(&tx->milter);
		milter_end(s);
	}
}

void smtpd_milter_start(struct smtpd_session *s, smtpd_milter_cont_fn *cont)
{
	struct smtpd_tx *tx = s->tx;
	struct smtpd_milter *m = xcalloc(1, sizeof(*m));
	m->s = s;
	m->cont = cont;
	tx->milter = m;
	smtpd_session_set_state(s, SMTPD_S_COMMIT);
	if (milter_sess_discarding(s->client.milter)) {
		/* a milter said discard at CONNECT, HELO, MAIL or RCPT: no
		 * milter is asked (an empty run, for the answer from the loop) */
		m->next = milter_sess_count(s->client.milter);
		m->running = true;
		milter_sess_run(s->client.milter, MILTER_STAGE_EOB, 0, 0, &m->info, NULL, 0,
		                milter_on_done, m);
		return;
	}
	milter_step(m);
}
