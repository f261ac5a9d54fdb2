/* qmgr.c — the queue manager: messages, attempts, retries, expiry and
 * delivery status notifications. Runs on the main loop; everything that
 * touches the disk (loading a message, Maildir delivery, recording results,
 * committing bounces) runs on the delivery worker threads, and remote
 * delivery (qmgr_remote.c) is event-driven on the loop.
 *
 * One attempt of a message:
 *   load (worker): the envelope from the spool, whose file stays open for
 *     the attempt (the content is read in 64 KiB windows by Maildir, smtpc
 *     and bounces, never loaded whole); local recipients are delivered to
 *     their Maildirs right there;
 *   remote (loop): the other recipients, grouped by destination, go out
 *     through DNS and the SMTP/LMTP client;
 *   finish (worker): expiry and DSN decisions, bounces committed to the
 *     spool as new messages, DONE/SCHED records appended (or the message
 *     removed when every recipient has a final result).
 * Nothing is removed before it is delivered or bounced; a crash between a
 * delivery and its DONE record delivers that copy again (DESIGN.md). The
 * retry schedule is a SCHED record in the envelope, so it survives restarts;
 * its decisions (intervals, due times, delay warnings, expiry) are
 * sched/sched.c. */
#include "queue/qmgr.h"
#include "queue/qmgr_int.h"
#include "queue/analytics.h"
#include "conf/conf.h"
#include "deliver/bounce.h"
#include "deliver/maildir.h"
#include "lib/fsutil.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"
#include "lib/workq.h"
#include "mail/address.h"
#include "mail/idna.h"
#include "mail/smtp_params.h"
#include "obs/sbxstore.h"
#include "queue/spool.h"
#include "sched/sched.h"
#include "smtpc/client.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

/* Threads that read message windows for smtpc (qmgr_int.h, rq). */
#define QMGR_READ_THREADS 2

const char *qmgr_domain_of(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at != NULL ? at + 1 : "";
}

void qmgr_rres_set(struct qmgr_rres *r, enum qmgr_rstate st, const char *status,
		   const char *diag, const char *relay)
{
	r->state = st;
	r->sent = QMGR_SENT_DELIVERED;
	snprintf(r->status, sizeof(r->status), "%s", status);
	snprintf(r->diag, sizeof(r->diag), "%s", diag != NULL ? diag : "");
	snprintf(r->relay, sizeof(r->relay), "%s", relay != NULL ? relay : "");
	r->tls[0] = '\0';
}

static struct qmgr_msg *qmgr_msg_new(struct qmgr *q, const char *qid)
{
	struct qmgr_msg *m = xcalloc(1, sizeof(*m));
	m->q = q;
	memcpy(m->qid, qid, QID_LEN);
	m->qid[QID_LEN] = '\0';
	envelope_init(&m->env);
	m->fd = -1;
	return m;
}

/* Drop what one attempt loaded; the message itself stays. */
static void qmgr_msg_reset(struct qmgr_msg *m)
{
	envelope_clear(&m->env);
	if (m->fd >= 0)
		close(m->fd);
	m->fd = -1;
	m->lf_known = false;
	free(m->res);
	m->res = NULL;
	m->load_failed = m->not_due = m->removed = m->force = false;
	m->groups_left = 0;
	m->n_bounces = 0;
}

void qmgr_msg_free(struct qmgr_msg **mp)
{
	struct qmgr_msg *m = *mp;
	if (m == NULL)
		return;
	*mp = NULL;
	qmgr_msg_reset(m);
	if (m->timer != NULL)
		event_free(m->timer);
	free(m);
}

static void qmgr_ready_push(struct qmgr *q, struct qmgr_msg *m)
{
	m->next = NULL;
	if (q->ready_tail != NULL)
		q->ready_tail->next = m;
	else
		q->ready_head = m;
	q->ready_tail = m;
}

/* ---- load (worker) ---- */

static void qmgr_deliver_local(struct qmgr *q, struct qmgr_msg *m, size_t i)
{
	const struct envelope_rcpt *r = &m->env.rcpts[i];
	const char *at = strrchr(r->addr, '@');
	char local[MAIL_LOCAL_MAX + 1], mailbox[MAILDIR_MAILBOX_MAX + 1], err[256];
	if (at == NULL || (size_t)(at - r->addr) >= sizeof(local)) {
		qmgr_rres_set(&m->res[i], QMGR_R_FAILED, "5.1.3", "malformed recipient", "maildir");
		return;
	}
	memcpy(local, r->addr, (size_t)(at - r->addr));
	local[at - r->addr] = '\0';
	if (maildir_mailbox_name(local, mailbox) < 0) {
		qmgr_rres_set(&m->res[i], QMGR_R_FAILED, "5.1.1", "unusable mailbox name",
			      "maildir");
		return;
	}
	/* The file name comes from the queue id and the recipient: a copy
	 * delivered before a crash (or before a spool update that failed) is
	 * found and kept, not written twice. */
	char unique[MAILDIR_UNIQUE_MAX];
	maildir_unique_for(m->env.arrival_us, m->qid, i, unique);
	struct maildir_msg mm = {
		.data = m->small,
		.fd = m->fd,
		.off = m->env.content_off,
		.len = (size_t)m->env.size,
		.return_path = m->env.sender,
		.delivered_to = r->addr,
		.hostname = q->conf->hostname,
		.unique = unique,
		.search_cur = m->recovered || m->env.attempts > 0,
		.fresh = !m->recovered && m->env.attempts == 0 && !m->tried,
		/* DMARC quarantine (smtpd): the user's Junk folder (Maildir++) */
		.folder = (m->env.flags & ENVELOPE_FLAG_JUNK) ? ".Junk" : NULL,
	};
	/* One directory per domain, whichever form (RFC 5890 U-labels or
	 * A-labels) the client wrote: the A-label form, lowercase. */
	char domain[MAIL_DOMAIN_MAX + 1];
	if (mail_domain_to_ascii(at + 1, strlen(at + 1), domain, sizeof(domain), NULL) < 0) {
		qmgr_rres_set(&m->res[i], QMGR_R_FAILED, "5.1.2", "invalid domain name", "maildir");
		return;
	}
	/* The S= of the file name is needed before the copy is written: one
	 * counting pass over the content, shared by every local recipient. */
	if (m->small == NULL && !m->lf_known) {
		if (maildir_lf_size(&mm, &m->lf_len) < 0) {
			snprintf(err, sizeof(err), "read spool: %s", strerror(errno));
			qmgr_rres_set(&m->res[i], QMGR_R_DEFERRED, "4.3.0", err, "maildir");
			return;
		}
		m->lf_known = true;
	}
	mm.lf_len = m->lf_len;
	m->tried = true;
	uint64_t t0 = sched_now_us();
	int rc = maildir_deliver(q->conf->maildir_root, domain, mailbox, &mm, err, sizeof(err));
	uint64_t t1 = sched_now_us();
	if (rc == 0)
		qmgr_rres_set(&m->res[i], QMGR_R_SENT, "2.0.0", "delivered to maildir", "maildir");
	else if (rc > 0)
		qmgr_rres_set(&m->res[i], QMGR_R_SENT, "2.0.0",
			      "delivered to maildir (earlier copy found)", "maildir");
	else
		qmgr_rres_set(&m->res[i], QMGR_R_DEFERRED, "4.3.0", err, "maildir");
	m->res[i].start_us = t0;
	m->res[i].xfer_us = t1 - t0;
}

static void qmgr_finish_run(void *arg);

/* The sandbox's "delivery": the message is captured into the store (a
 * file fsynced and renamed, a row committed) and counts as sent for every
 * recipient; nothing leaves the host. A failure defers, as a full disk
 * would for a Maildir. Runs on a delivery worker. */
static void qmgr_capture(struct qmgr *q, struct qmgr_msg *m)
{
	char err[512] = "";
	int rc = -1;
	uint64_t t0 = sched_now_us();
	if (q->sbx != NULL) {
		char **rcpts = xcalloc(m->env.nrcpts, sizeof(*rcpts));
		for (size_t i = 0; i < m->env.nrcpts; i++)
			rcpts[i] = m->env.rcpts[i].addr;
		struct sbx_capture c = {
		    .id = m->qid,
		    .inbox = m->env.inbox,
		    .created_us = m->env.arrival_us,
		    .fd = m->fd,
		    .off = m->env.content_off,
		    .len = m->env.size,
		    .env_from = m->env.sender,
		    .rcpts = rcpts,
		    .nrcpts = m->env.nrcpts,
		};
		rc = sbx_store_capture(q->sbx, &c, NULL, err, sizeof(err));
		free(rcpts);
	} else {
		snprintf(err, sizeof(err), "the sandbox store is not open");
	}
	uint64_t t1 = sched_now_us();
	for (size_t i = 0; i < m->env.nrcpts; i++) {
		if (m->env.rcpts[i].done)
			continue;
		if (rc == 0)
			qmgr_rres_set(&m->res[i], QMGR_R_SENT, "2.0.0", "captured in the sandbox",
				      "sandbox");
		else
			qmgr_rres_set(&m->res[i], QMGR_R_DEFERRED, "4.3.0", err, "sandbox");
		m->res[i].start_us = t0;
		m->res[i].xfer_us = t1 - t0;
	}
	if (rc == 0)
		log_info("event=sandbox_captured qid=%s inbox=%s size=%llu", m->qid,
			 m->env.inbox != NULL ? m->env.inbox : "default",
			 (unsigned long long)m->env.size);
}

static void qmgr_load_run(void *arg)
{
	struct qmgr_msg *m = arg;
	struct qmgr *q = m->q;
	const char *error = NULL;
	char qe[LOG_Q_MAX];
	if (m->preloaded) {
		m->preloaded = false; /* envelope and file from the publish */
	} else if (spool_load_fd(q->spool, m->qid, &m->env, &m->fd, &error) < 0) {
		/* A file that is gone (removed by hand) is not retried: there
		 * is nothing left to deliver. Any other failure is. */
		m->removed = errno == ENOENT;
		log_err("event=queue_error qid=%s reason=%s%s", m->qid, log_qs(qe, error),
			m->removed ? " action=forget" : "");
		m->load_failed = true;
		return;
	}
	if (m->fresh) { /* committed by smtpd just now: accepted */
		m->fresh = false;
		for (size_t i = 0; i < m->env.nrcpts; i++)
			analytics_event(q->an, m->env.rcpts[i].addr, m->env.sender, ASTATS_ACCEPTED, 0);
	}
	/* Held from the control socket: not delivered until released. */
	if (m->env.sched_flags & ENVELOPE_SCHED_HELD) {
		m->held = true;
		return;
	}
	/* Recovered before its persisted retry time: wait for it (unless a
	 * flush forces it), see sched_not_yet_due(). */
	if (!m->force && sched_not_yet_due(q->conf, m->env.next_try_us, sched_now_us())) {
		m->not_due = true;
		return;
	}
	m->res = xcalloc(m->env.nrcpts, sizeof(*m->res));
	if (m->env.flags & ENVELOPE_FLAG_SANDBOX) {
		qmgr_capture(q, m);
		qmgr_finish_run(m);
		m->finished = true;
		return;
	}
	bool remote = false;
	for (size_t i = 0; i < m->env.nrcpts; i++) {
		if (m->env.rcpts[i].done)
			continue;
		const struct conf_route *route =
			conf_route_for(q->conf, qmgr_domain_of(m->env.rcpts[i].addr));
		if (route->transport != CONF_TRANSPORT_LOCAL) {
			remote = true;
			continue;
		}
		/* A small message is read once for all its local copies; a
		 * failed read leaves the window-by-window path to report it. */
		if (m->small == NULL && m->env.size > 0 && m->env.size <= MAILDIR_WINDOW) {
			m->small = xmalloc((size_t)m->env.size);
			if (fs_pread_all(m->fd, m->small, (size_t)m->env.size,
					  m->env.content_off) < 0) {
				free(m->small);
				m->small = NULL;
			}
		}
		qmgr_deliver_local(q, m, i);
	}
	free(m->small);
	m->small = NULL;
	/* Nothing left for the loop to send: record the results here, in the
	 * same worker turn, instead of a second trip through the loop. */
	if (!remote) {
		qmgr_finish_run(m);
		m->finished = true;
	}
}

/* ---- finish (worker) ---- */

static bool qmgr_is_postmaster(const char *addr)
{
	return strncasecmp(addr, "postmaster@", 11) == 0;
}

static const char *qmgr_notice_name(enum bounce_kind kind)
{
	switch (kind) {
	case BOUNCE_DELAYED:
		return "delay";
	case BOUNCE_DELIVERED:
		return "success";
	case BOUNCE_RELAYED:
		return "relayed";
	case BOUNCE_FAILED:
		break;
	}
	return "failure";
}

static int qmgr_bounce_sink(void *arg, const void *p, size_t len)
{
	return spool_msg_append(arg, p, len);
}

/* Commit one notification to the spool as a new message from <>. The
 * report is written into the new spool file as it is built (the original
 * it quotes is read from m->fd in windows), so a report quoting 10 MiB
 * costs no more memory than one quoting headers. Returns -1 only when the
 * spool could not take it (worth trying again later); a notice that cannot
 * be built at all is logged and counts as done. */
static int qmgr_bounce_commit(struct qmgr *q, struct qmgr_msg *m, struct bounce_info *bi,
                              const char *to)
{
	struct buf out;
	struct envelope e;
	const char *error = NULL;
	char qe[LOG_Q_MAX], qt[LOG_Q_MAX];
	int rc = 0;
	buf_init(&out, 0);
	envelope_init(&e);
	if (m->n_bounces >= QMGR_NOTICES_MAX) {
		log_err("event=bounce_failed qid=%s reason=\"cannot build notification\"", m->qid);
		goto out;
	}
	qid_generate(e.qid);
	struct spool_msg *sm = spool_msg_create(q->spool, e.qid);
	bi->sink = qmgr_bounce_sink;
	bi->sink_arg = sm;
	int brc = bounce_build(bi, &out);
	if (brc < 0) {
		spool_msg_abort(&sm);
		if (brc == -2) {
			log_err("event=bounce_failed qid=%s reason=\"cannot read the message or write "
			        "the notification\"",
			        m->qid);
			rc = -1;
		} else {
			log_err("event=bounce_failed qid=%s reason=\"cannot build notification\"",
			        m->qid);
		}
		goto out;
	}
	e.arrival_us = sched_now_us();
	envelope_set_str(&e.sender, "");
	envelope_set_str(&e.client_addr, "127.0.0.1");
	e.body = SMTP_BODY_8BITMIME;
	e.smtputf8 = m->env.smtputf8;
	envelope_add_rcpt(&e, to);
	if (spool_commit(&sm, &e, out.data, out.len, &error) < 0) {
		log_err("event=bounce_failed qid=%s reason=%s", m->qid, log_qs(qe, error));
		rc = -1;
		goto out;
	}
	log_info("event=notify qid=%s kind=%s to=%s notify_qid=%s", m->qid,
		 qmgr_notice_name(bi->kind), log_qs(qt, to), e.qid);
	memcpy(m->bounce_qids[m->n_bounces++], e.qid, QID_LEN + 1);
out:
	envelope_clear(&e);
	buf_free(&out);
	return rc;
}

/* Does recipient i of this attempt belong in a notice of this kind? */
static bool qmgr_notify_wants(const struct qmgr_msg *m, size_t i, enum bounce_kind kind)
{
	unsigned notify = m->env.rcpts[i].notify;
	const struct qmgr_rres *r = &m->res[i];
	if (notify & SMTP_NOTIFY_NEVER)
		return false;
	switch (kind) {
	case BOUNCE_FAILED:
		/* RFC 3461 §4.1: without NOTIFY, failures are reported. */
		return r->state == QMGR_R_FAILED && (notify == 0 || (notify & SMTP_NOTIFY_FAILURE));
	case BOUNCE_DELAYED:
		return r->state == QMGR_R_DEFERRED && (notify & SMTP_NOTIFY_DELAY);
	case BOUNCE_DELIVERED:
		return r->state == QMGR_R_SENT && r->sent == QMGR_SENT_DELIVERED &&
		       (notify & SMTP_NOTIFY_SUCCESS);
	case BOUNCE_RELAYED:
		return r->state == QMGR_R_SENT && r->sent == QMGR_SENT_RELAYED &&
		       (notify & SMTP_NOTIFY_SUCCESS);
	}
	return false;
}

/* NOTIFY=SUCCESS recipients relayed to a server that offers DSN get no
 * notice from us: NOTIFY, ORCPT, RET and ENVID went on with the message,
 * and that server (or the next) reports the delivery (RFC 3461 §5.2.1).
 * Say so, since the sender asked for a notice. */
static void qmgr_log_dsn_passed(const struct qmgr_msg *m)
{
	char qto[LOG_Q_MAX], qrel[LOG_Q_MAX];
	for (size_t i = 0; i < m->env.nrcpts; i++) {
		const struct qmgr_rres *r = &m->res[i];
		unsigned notify = m->env.rcpts[i].notify;
		if (r->state != QMGR_R_SENT || r->sent != QMGR_SENT_DSN_PASSED ||
		    !(notify & SMTP_NOTIFY_SUCCESS) || (notify & SMTP_NOTIFY_NEVER))
			continue;
		log_info("event=notify_passed qid=%s to=%s relay=%s kind=success "
			 "reason=\"the next hop offers DSN and reports the delivery\"",
			 m->qid, log_qs(qto, m->env.rcpts[i].addr), log_qs(qrel, r->relay));
	}
}

/* Notify the sender about the recipients that want a notice of this kind.
 * Returns -1 when the notice was not committed to the spool. */
static int qmgr_notify(struct qmgr *q, struct qmgr_msg *m, enum bounce_kind kind, uint64_t now)
{
	int rc = 0;
	/* A captured message tells nobody outside anything (issue 13). */
	if (m->env.flags & ENVELOPE_FLAG_SANDBOX)
		return 0;
	const struct envelope *e = &m->env;
	struct bounce_rcpt *br = xcalloc(e->nrcpts, sizeof(*br));
	/* Remote-MTA is "dns; <host name>" (RFC 3464 §2.3.5): the relay
	 * without the "[address]:port" our logs add. */
	char(*mta)[sizeof(m->res[0].relay)] = xcalloc(e->nrcpts, sizeof(*mta));
	size_t n = 0;
	bool to_postmaster_ok = true;
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (!qmgr_notify_wants(m, i, kind))
			continue;
		if (e->sender[0] == '\0' && qmgr_is_postmaster(e->rcpts[i].addr))
			to_postmaster_ok = false;
		br[n].addr = e->rcpts[i].addr;
		br[n].orcpt = e->rcpts[i].orcpt;
		br[n].status = m->res[i].status;
		br[n].diagnostic = m->res[i].diag[0] != '\0' ? m->res[i].diag : NULL;
		if (strcmp(m->res[i].relay, "maildir") != 0 && m->res[i].relay[0] != '\0') {
			size_t len = strcspn(m->res[i].relay, "[");
			memcpy(mta[n], m->res[i].relay, len);
			br[n].remote_mta = mta[n];
		}
		br[n].last_attempt_us = now;
		n++;
	}
	if (n > 0) {
		struct bounce_info bi = {
			.kind = kind,
			.reporting_mta = q->conf->hostname,
			.qid = m->qid,
			.sender = e->sender,
			.envid = e->envid,
			.arrival_us = e->arrival_us,
			.retry_until_us = e->arrival_us + q->conf->delivery.max_lifetime * 1000,
			.full = e->ret == SMTP_RET_FULL,
			.msg_fd = m->fd,
			.msg_off = e->content_off,
			.msglen = (size_t)e->size,
			.rcpts = br,
			.nrcpts = n,
		};
		if (e->sender[0] != '\0') {
			rc = qmgr_bounce_commit(q, m, &bi, e->sender);
		} else if (kind == BOUNCE_FAILED && to_postmaster_ok) {
			/* A notification that failed goes to the postmaster, once. */
			char pm[MAIL_PATH_MAX + 1];
			const char *dom = q->conf->n_local_domains > 0 ? q->conf->local_domains[0]
								       : q->conf->hostname;
			snprintf(pm, sizeof(pm), "postmaster@%s", dom);
			bi.sender = pm;
			rc = qmgr_bounce_commit(q, m, &bi, pm);
		} else if (kind == BOUNCE_FAILED) {
			log_warn("event=bounce_dropped qid=%s reason=\"double bounce to postmaster\"",
				 m->qid);
		}
	}
	free(mta);
	free(br);
	return rc;
}

/* One line per recipient and attempt, as Postfix's: to, relay, delay (since
 * arrival) and delays=a/b/c/d in seconds: a waiting in the queue before
 * this attempt (retries included), b this attempt before its delivery step
 * (spool read; for remote recipients also a destination slot), c
 * connection setup (DNS, connect, greeting, EHLO, STARTTLS, AUTH; 0 for
 * Maildir), d the transfer (MAIL to the final reply; the Maildir write). */
static void qmgr_log_result(const struct qmgr_msg *m, size_t i, uint64_t now)
{
	static const char *const names[] = {"pending", "sent", "bounced", "deferred"};
	static const enum metric_dstatus dst[] = {METRIC_DS_DEFERRED, METRIC_DS_SENT,
						  METRIC_DS_BOUNCED, METRIC_DS_DEFERRED};
	const struct qmgr_rres *r = &m->res[i];
	char qto[LOG_Q_MAX], qwhy[LOG_Q_MAX], qrel[LOG_Q_MAX], qfrom[LOG_Q_MAX];
	uint64_t age = sched_age_us(&m->env, now);
	uint64_t at = m->attempt_us != 0 ? m->attempt_us : now;
	uint64_t start = r->start_us != 0 && r->start_us >= at ? r->start_us : at;
	double a = at > m->env.arrival_us ? (double)(at - m->env.arrival_us) / 1e6 : 0;
	double b = (double)(start - at) / 1e6;
	log_msg(r->state == QMGR_R_SENT ? LOG_LVL_INFO : LOG_LVL_WARN,
		"event=delivery qid=%s from=%s to=%s relay=%s tls=%s delay=%.3f "
		"delays=%.3f/%.3f/%.3f/%.3f dsn=%s status=%s reason=%s",
		m->qid, log_qs(qfrom, m->env.sender[0] != '\0' ? m->env.sender : "<>"),
		log_qs(qto, m->env.rcpts[i].addr), log_qs(qrel, r->relay),
		r->tls[0] != '\0' ? r->tls : "-", (double)age / 1e6, a, b,
		(double)r->conn_us / 1e6, (double)r->xfer_us / 1e6, r->status, names[r->state],
		log_qs(qwhy, r->diag));
	metrics_delivery(r->transport, dst[r->state]);
	static const enum dstats_result dsr[] = {DSTATS_DEFERRED, DSTATS_SENT, DSTATS_BOUNCED,
						 DSTATS_DEFERRED};
	dstats_record(m->q->dstats, qmgr_domain_of(m->env.rcpts[i].addr), dsr[r->state], age, now);
	static const enum astats_ev aev[] = {ASTATS_DEFERRED, ASTATS_DELIVERED, ASTATS_BOUNCED,
					     ASTATS_DEFERRED};
	analytics_event(m->q->an, m->env.rcpts[i].addr, m->env.sender, aev[r->state], age);
	if (aev[r->state] != ASTATS_DELIVERED)
		analytics_reason(m->q->an, m->env.rcpts[i].addr, aev[r->state], r->status, r->diag);
	if (r->state == QMGR_R_SENT)
		metrics_observe_delivery(age);
}

static void qmgr_finish_run(void *arg)
{
	struct qmgr_msg *m = arg;
	struct qmgr *q = m->q;
	const struct conf *conf = q->conf;
	struct envelope *e = &m->env;
	uint64_t now = sched_now_us();
	bool expired = sched_expired(conf, e, now);
	const char *error = NULL;
	char qto[LOG_Q_MAX];

	for (size_t i = 0; i < e->nrcpts; i++) {
		struct qmgr_rres *r = &m->res[i];
		if (e->rcpts[i].done)
			continue;
		if (r->state == QMGR_R_PENDING)
			qmgr_rres_set(r, QMGR_R_DEFERRED, "4.3.0", "not attempted", "");
		if (r->state == QMGR_R_DEFERRED && expired) {
			/* qmgr_rres_set copies into r: never from r itself. */
			char diag[sizeof(r->diag)], relay[sizeof(r->relay)];
			snprintf(diag, sizeof(diag), "message expired in the queue; last error: %.400s",
				 r->diag);
			memcpy(relay, r->relay, sizeof(relay));
			qmgr_rres_set(r, QMGR_R_FAILED, "4.4.7", diag, relay);
		}
		qmgr_log_result(m, i, now);
	}
	/* A failure notice that the spool did not take keeps its recipients
	 * in the queue: the next attempt fails them again and notifies then.
	 * (A lost success notice is only logged: keeping a delivered
	 * recipient would deliver it twice.) */
	bool failure_notice_lost = qmgr_notify(q, m, BOUNCE_FAILED, now) < 0;
	qmgr_notify(q, m, BOUNCE_DELIVERED, now);
	qmgr_notify(q, m, BOUNCE_RELAYED, now);
	qmgr_log_dsn_passed(m);
	uint32_t flags = e->sched_flags;
	if (sched_delay_warning_due(conf, e, flags, now)) {
		size_t before = m->n_bounces;
		qmgr_notify(q, m, BOUNCE_DELAYED, now);
		if (m->n_bounces > before)
			flags |= ENVELOPE_SCHED_DELAY_WARNED;
	}

	uint32_t *done = xcalloc(e->nrcpts, sizeof(*done));
	size_t ndone = 0, pending = 0;
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (e->rcpts[i].done)
			continue;
		if (m->res[i].state == QMGR_R_FAILED && failure_notice_lost &&
		    qmgr_notify_wants(m, i, BOUNCE_FAILED)) {
			log_warn("event=bounce_deferred qid=%s to=%s reason=\"failure notice not "
				 "queued; the recipient stays until it is\"",
				 m->qid, log_qs(qto, e->rcpts[i].addr));
			pending++;
		} else if (m->res[i].state == QMGR_R_SENT || m->res[i].state == QMGR_R_FAILED) {
			e->rcpts[i].done = true;
			done[ndone++] = (uint32_t)i;
		} else {
			pending++;
		}
	}
	e->attempts++;
	if (pending == 0 && spool_retire(q->spool, m->qid, m->pool_owner, e->size) == 0) {
		m->removed = true;
		log_info("event=removed qid=%s", m->qid);
	} else {
		uint64_t delay = pending == 0 ? 1000 : sched_retry_delay_ms(conf, e->attempts);
		m->retry_delay_ms = delay;
		e->next_try_us = now + delay * 1000;
		e->sched_flags = flags;
		if (spool_mark(q->spool, m->qid, done, ndone, e->next_try_us, e->attempts, flags,
			       &error) < 0)
			log_err("event=queue_error qid=%s reason=\"cannot record results\"", m->qid);
	}
	free(done);
}

/* ---- loop side ---- */

static void qmgr_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct qmgr_msg *m = arg;
	struct qmgr *q = m->q;
	for (size_t i = 0; i < q->n_waiting; i++) {
		if (q->waiting[i] == m) {
			q->waiting[i] = q->waiting[--q->n_waiting];
			break;
		}
	}
	qmgr_ready_push(q, m);
	qmgr_dispatch(q);
}

/* The attempt is over (or was not due): wait until next_try_us. */
static void qmgr_wait(struct qmgr *q, struct qmgr_msg *m, uint64_t next_try_us)
{
	if (q->stopping) {
		qmgr_msg_free(&m); /* it stays in the spool for the next start */
		return;
	}
	if (qmgr_ctl_intercept(q, m))
		return; /* held, or deleted, from the control socket */
	uint64_t now = sched_now_us();
	uint64_t us = next_try_us > now ? next_try_us - now : 0;
	struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};
	if (m->timer == NULL)
		m->timer = evtimer_new(q->base, qmgr_on_timer, m);
	evtimer_add(m->timer, &tv);
	if (q->n_waiting == q->waiting_cap) {
		q->waiting_cap = q->waiting_cap ? q->waiting_cap * 2 : 64;
		q->waiting = xreallocarray(q->waiting, q->waiting_cap, sizeof(*q->waiting));
	}
	q->waiting[q->n_waiting++] = m;
	if (m->retry_delay_ms > 0)
		log_info("event=deferred qid=%s attempts=%u retry_in=%llums", m->qid,
			 m->env.attempts, (unsigned long long)m->retry_delay_ms);
	else
		log_info("event=scheduled qid=%s attempts=%u retry_in=%.0fs", m->qid,
			 m->env.attempts, (double)us / 1e6);
	m->retry_delay_ms = 0;
	qmgr_msg_reset(m);
}

static void qmgr_finish_done(void *arg)
{
	struct qmgr_msg *m = arg;
	struct qmgr *q = m->q;
	q->active--;
	for (size_t i = 0; i < m->n_bounces && !q->stopping; i++)
		qmgr_enqueue(q, m->bounce_qids[i]);
	if (m->removed)
		qmgr_msg_free(&m);
	else
		qmgr_wait(q, m, m->env.next_try_us);
	qmgr_dispatch(q);
}

void qmgr_groups_done(struct qmgr_msg *m)
{
	if (m->q->stopping) {
		m->q->active--;
		qmgr_msg_free(&m);
		return;
	}
	workq_submit(m->q->wq, qmgr_finish_run, qmgr_finish_done, m);
}

static void qmgr_load_done(void *arg)
{
	struct qmgr_msg *m = arg;
	struct qmgr *q = m->q;
	if (!m->load_failed)
		m->arrival_us = m->env.arrival_us;
	if (m->load_failed && m->removed) {
		q->active--;
		qmgr_msg_free(&m);
		qmgr_dispatch(q);
		return;
	}
	if (m->load_failed) {
		q->active--;
		m->retry_delay_ms = sched_retry_delay_ms(q->conf, 1);
		qmgr_wait(q, m, sched_now_us() + m->retry_delay_ms * 1000);
		qmgr_dispatch(q);
		return;
	}
	if (m->not_due || m->held) {
		q->active--;
		qmgr_wait(q, m, m->env.next_try_us);
		qmgr_dispatch(q);
		return;
	}
	if (m->finished) {
		/* local only: delivered and recorded by the worker */
		m->finished = false;
		qmgr_finish_done(m);
		return;
	}
	if (q->stopping) {
		q->active--;
		qmgr_msg_free(&m);
		return;
	}
	if (qmgr_remote_start(q, m) == 0)
		qmgr_groups_done(m);
}

/* Draining and nothing left in flight (or out of time): tell the caller,
 * once. */
static void qmgr_drain_end(struct qmgr *q, bool timed_out)
{
	void (*cb)(void *) = q->drained;
	if (cb == NULL)
		return;
	q->drained = NULL;
	if (timed_out)
		log_warn("event=drain_timeout active=%zu reason=\"attempts abandoned; they stay "
			 "in the spool\"",
			 q->active);
	else
		log_info("event=drained");
	cb(q->drained_arg);
}

static void qmgr_on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
	struct qmgr *q = arg;
	(void)fd;
	(void)what;
	qmgr_drain_end(q, q->active > 0);
}

void qmgr_drain(struct qmgr *q, unsigned timeout_ms, void (*done)(void *arg), void *arg)
{
	q->draining = true;
	q->drained = done;
	q->drained_arg = arg;
	log_info("event=draining active=%zu", q->active);
	/* Also when nothing is in flight: the callback then runs from the
	 * loop, never from inside this call. */
	struct timeval tv = {.tv_sec = q->active > 0 ? timeout_ms / 1000 : 0,
			     .tv_usec = q->active > 0 ? (timeout_ms % 1000) * 1000 : 0};
	q->drain_timer = evtimer_new(q->base, qmgr_on_drain_timer, q);
	evtimer_add(q->drain_timer, &tv);
}

void qmgr_dispatch(struct qmgr *q)
{
	if (q->draining) {
		if (q->active == 0)
			qmgr_drain_end(q, false);
		return;
	}
	while (!q->stopping && q->active < q->max_active && q->ready_head != NULL) {
		struct qmgr_msg *m = q->ready_head;
		q->ready_head = m->next;
		if (q->ready_head == NULL)
			q->ready_tail = NULL;
		m->next = NULL;
		if (m->preloaded)
			q->preloaded--;
		q->active++;
		m->attempt_us = sched_now_us();
		workq_submit(q->wq, qmgr_load_run, qmgr_load_done, m);
	}
}

/* The queue's gauges (lib/metrics.h), once a second: counting the lists
 * costs O(queue) a second, nothing per message. The oldest message is
 * the oldest one not held and not in a local delivery (a held message's
 * arrival is in the spool only; a local delivery takes milliseconds). */
static void qmgr_on_gauges(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct qmgr *q = arg;
	uint64_t oldest = 0;
	size_t ready = 0;
	for (const struct qmgr_msg *m = q->ready_head; m != NULL; m = m->next, ready++)
		if (m->arrival_us != 0 && (oldest == 0 || m->arrival_us < oldest))
			oldest = m->arrival_us;
	for (size_t i = 0; i < q->n_waiting; i++) {
		uint64_t a = q->waiting[i]->arrival_us;
		if (a != 0 && (oldest == 0 || a < oldest))
			oldest = a;
	}
	uint64_t remote = qmgr_remote_oldest(q);
	if (remote != 0 && (oldest == 0 || remote < oldest))
		oldest = remote;
	metrics_set(METRIC_Q_ACTIVE, q->active + ready);
	metrics_set(METRIC_Q_DEFERRED, q->n_waiting);
	metrics_set(METRIC_Q_HELD, qmgr_ctl_held(q->ctl));
	metrics_set(METRIC_Q_OLDEST_US, oldest);
}

struct qmgr *qmgr_create(struct event_base *base, const struct conf *conf, struct spool *spool)
{
	struct qmgr *q = xcalloc(1, sizeof(*q));
	char err[512];
	q->base = base;
	q->conf = conf;
	q->spool = spool;
	q->wq = workq_create(base, (unsigned)conf->queue.delivery_threads, "delivery");
	q->rq = workq_create(base, QMGR_READ_THREADS, "spoolread");
	/* Messages in an attempt: local work is bounded by the threads, remote
	 * work by delivery.total_concurrency in qmgr_remote.c. */
	q->max_active = (size_t)conf->queue.delivery_threads * 2 + conf->delivery.total_concurrency;
	struct dns_conf dc = {
		.forwarders = (const char *const *)conf->dns.forwarders,
		.n_forwarders = conf->dns.n_forwarders,
		.trust_anchor_file = conf->dns.trust_anchor,
		.ipv6 = conf->delivery.ipv6,
		.timeout_ms = (unsigned)conf->dns.timeout,
	};
	if (dns_create(base, &dc, &q->dns, err, sizeof(err)) < 0)
		log_err("event=dns_error reason=\"%s\" (remote delivery will be deferred)", err);
	q->smtpc = smtpc_create(base, conf->delivery.ca_file[0] != '\0' ? conf->delivery.ca_file
									: NULL,
				err, sizeof(err));
	if (q->smtpc == NULL) {
		log_err("event=smtpc_error reason=\"%s\" (remote delivery will be deferred)", err);
	} else {
		smtpc_set_workq(q->smtpc, q->rq);
		smtpc_set_idle_timeout(q->smtpc, conf->delivery.idle_timeout);
		smtpc_set_idle_limits(q->smtpc, (size_t)conf->delivery.destination_idle,
				      (size_t)conf->delivery.total_idle);
	}
	q->dstats = dstats_create();
	q->an = analytics_create(base, conf);
	q->gauge_ev = event_new(base, -1, EV_PERSIST, qmgr_on_gauges, q);
	event_add(q->gauge_ev, &(struct timeval){1, 0});
	return q;
}

void qmgr_set_sandbox(struct qmgr *q, struct sbx_store *sbx)
{
	q->sbx = sbx;
}

void qmgr_set_credentials(struct qmgr *q, const struct credentials *cr)
{
	q->creds = cr;
}

void qmgr_enqueue(struct qmgr *q, const char *qid)
{
	if (q->stopping)
		return;
	qmgr_ready_push(q, qmgr_msg_new(q, qid));
	qmgr_dispatch(q);
}

/* Fresh messages waiting for a worker with their file open, at most. */
#define QMGR_PRELOADED_MAX 64

void qmgr_enqueue_new(struct qmgr *q, const char *qid, uint64_t owner, struct envelope *e, int fd)
{
	if (q->stopping) {
		envelope_clear(e);
		if (fd >= 0)
			close(fd);
		return;
	}
	struct qmgr_msg *m = qmgr_msg_new(q, qid);
	m->fresh = true;
	m->pool_owner = owner;
	/* Keep the file and envelope only while few wait for a worker: a
	 * backlog holds no descriptor per message. */
	if (fd >= 0 && q->preloaded >= QMGR_PRELOADED_MAX) {
		close(fd);
		envelope_clear(e);
		fd = -1;
	}
	if (fd >= 0) {
		q->preloaded++;
		m->env = *e; /* moved */
		envelope_init(e);
		m->fd = fd;
		m->preloaded = true;
	}
	qmgr_ready_push(q, m);
	qmgr_dispatch(q);
}

static void qmgr_recover_one(const char *qid, void *arg)
{
	struct qmgr *q = arg;
	struct qmgr_msg *m = qmgr_msg_new(q, qid);

	m->recovered = true; /* may have been delivered before the crash */
	qmgr_ready_push(q, m);
}

int qmgr_recover(struct qmgr *q, const char **error_r)
{
	int n = spool_recover(q->spool, qmgr_recover_one, q, error_r);
	if (n >= 0)
		qmgr_dispatch(q);
	return n;
}

size_t qmgr_active(const struct qmgr *q)
{
	return q->active;
}

size_t qmgr_flush(struct qmgr *q)
{
	size_t n = q->n_waiting;
	for (size_t i = 0; i < n; i++) {
		struct qmgr_msg *m = q->waiting[i];
		evtimer_del(m->timer);
		m->force = true;
		qmgr_ready_push(q, m);
	}
	q->n_waiting = 0;
	log_info("event=flush messages=%zu", n);
	qmgr_dispatch(q);
	return n;
}

struct dstats *qmgr_dstats(struct qmgr *q)
{
	return q->dstats;
}

struct analytics *qmgr_analytics(struct qmgr *q)
{
	return q->an;
}

void qmgr_free(struct qmgr **qp)
{
	struct qmgr *q = *qp;
	if (q == NULL)
		return;
	*qp = NULL;
	q->stopping = true;
	q->drained = NULL;
	if (q->gauge_ev != NULL)
		event_free(q->gauge_ev);
	dstats_free(&q->dstats);
	if (q->drain_timer != NULL)
		event_free(q->drain_timer);
	struct qmgr_msg *m = q->ready_head;
	q->ready_head = q->ready_tail = NULL;
	while (m != NULL) {
		struct qmgr_msg *next = m->next;
		qmgr_msg_free(&m);
		m = next;
	}
	/* Remote sessions and lookups are cancelled without their callbacks;
	 * the messages they were delivering stay in the spool for the next
	 * start. */
	dns_free(&q->dns);
	smtpc_free(&q->smtpc);
	qmgr_remote_free(q);
	workq_free(&q->wq); /* finishes in-flight worker jobs */
	workq_free(&q->rq); /* reads orphaned by smtpc_free: their buffers are freed */
	for (size_t i = 0; i < q->n_waiting; i++)
		qmgr_msg_free(&q->waiting[i]);
	free(q->waiting);
	m = q->ready_head; /* attempts that ended during workq_free */
	while (m != NULL) {
		struct qmgr_msg *next = m->next;
		qmgr_msg_free(&m);
		m = next;
	}
	analytics_free(&q->an); /* after the workers: their results are in it */
	free(q);
}

void qmgr_msg_drop(struct qmgr *q, struct qmgr_msg *m)
{
	q->active--;
	qmgr_msg_free(&m);
}
