/* cmd_data.c — DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030): reading the
 * content through the datascan parser, the Received header, the end-of-
 * message checks and the hand-off to the spool commit worker; the 250 with
 * the queue id is sent only after the spool says the message is durable.
 * Runs in smtpd on the event loop; the content is hostile. */
#include "smtpd/session.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/workq.h"
#include "mail/address.h"
#include "mail/header.h"
#include "queue/spool.h"
#include "smtpd/qclient.h"
#include "tls/keyproxy.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Content beyond this is written to the spool file as it arrives, so a
 * session holds at most this much of a message in memory. */
#define SMTPD_SPILL (256 * 1024)

_Static_assert(SMTPD_TOP_MAX == SPOOL_CONTENT_GAP - SPOOL_HDR_LEN,
	       "the added header fields fill at most the spool file's gap");

/* A commit owns what it works on: the session's transaction gives up its
 * file, the content not yet written and the envelope, so the worker that
 * seals the file reads no session state. */
struct smtpd_commit {
	struct smtpd_session *s;
	struct spool_msg *msg;
	struct qclient_file file;
	struct buf body;
	struct buf top; /* header fields added at the end of data */
	struct envelope env;
	struct qclient_req *req; /* waiting for a file, or for the queue's word */
	int keep_fd;   /* the first file, kept until committed: a copy source */
	uint64_t start_us; /* the end of data: accept latency (metrics) */
	bool rehomed;  /* copied into a new queue's file after a queue restart */
	struct event sealed_ev; /* COMMIT in the next loop turn (data_commit_seal) */
	int ret;
	int err; /* errno of a failed commit */
	const char *error;
};

/* The arrival time as an RFC 5322 §3.3 date-time. */
static void data_date(const struct smtpd_tx *tx, char *out, size_t outlen)
{
	time_t now = (time_t)(tx->env.arrival_us / 1000000u);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(out, outlen, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

/* A spool write that failed for lack of space is RFC 3463 X.3.1 "mail
 * system full" (452, try later); anything else (EIO) is a local error. */
static void data_reply_io_error(struct smtpd_session *s, int err)
{
	if (err == ENOSPC || err == EDQUOT)
		smtpd_reply(s, 452, "4.3.1", "Insufficient system storage");
	else
		smtpd_reply(s, 451, "4.3.0", "Local error in processing, try again later");
}

/* Client text for the Received field: printable ASCII except the octets
 * in forbid, and well-formed UTF-8 other than C1 controls when the message
 * is SMTPUTF8; anything else (C0, DEL, C1, other octets) becomes '?'. */
static void data_received_text(char *out, size_t outlen, const char *in, bool utf8,
			       const char *forbid)
{
	size_t o = 0, len = strlen(in);
	for (size_t i = 0; i < len && o + 1 < outlen;) {
		unsigned char c = (unsigned char)in[i];
		size_t n = c < 0x80 ? 1 : mail_utf8_char_len(in + i, len - i);
		bool ok = (c > 0x20 && c < 0x7f && strchr(forbid, c) == NULL) ||
			  (c >= 0x80 && utf8 && n > 0 && o + n < outlen &&
			   !(c == 0xc2 && (unsigned char)in[i + 1] < 0xa0));
		if (!ok) {
			out[o++] = '?';
			i++; /* per octet: what the client sent stays countable */
			continue;
		}
		memcpy(out + o, in + i, n);
		o += n;
		i += n;
	}
	out[o] = '\0';
}

/* The end of Received: "for" and the date. */
static void data_received_for(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	char date[64];
	data_date(tx, date, sizeof(date));
	/* Name the recipient only when there is one: a Bcc list must not leak. */
	if (tx->env.nrcpts == 1) {
		char rcpt[MAIL_PATH_MAX + 1];
		data_received_text(rcpt, sizeof(rcpt), tx->env.rcpts[0].addr, tx->mail.smtputf8,
				   "");
		buf_printf(&tx->body, "\r\n\tfor <%s>", rcpt);
	}
	buf_printf(&tx->body, ";\r\n\t%s\r\n", date);
}

/* RFC 5321 §4.4 time stamp line, written before any content. The HELO
 * name is hostile: "from" gets it only when it is a Domain or address
 * literal (§4.4 Extended-Domain); otherwise the client's address stands
 * there and the name, made safe, goes into a comment. */
static void data_received_header(struct smtpd_session *s)
{
	const struct conf *conf = s->srv->conf;
	struct smtpd_tx *tx = s->tx;
	char helo[sizeof(s->helo)], client[sizeof(s->client.rdns) + NET_ADDRSTR_MAX + 4];
	/* "name [addr]" as Postfix writes it: the forward-confirmed rDNS
	 * (src/policy, LDH only) or "unknown" */
	policy_client_received(&s->client, client, sizeof(client));
	if (s->local) {
		/* Local submission, as Postfix writes it: the caller's uid
		 * (SO_PEERCRED), not a host. */
		buf_printf(&tx->body, "Received: by %s (hikyaku, from userid %u)\r\n\twith %s id %s",
			   conf->hostname, (unsigned)s->local_uid, smtpd_session_protocol(s),
			   tx->env.qid);
		data_received_for(s);
		return;
	}
	if (mail_helo_domain_valid(s->helo, strlen(s->helo), tx->mail.smtputf8)) {
		buf_printf(&tx->body, "Received: from %s (%s)\r\n", s->helo, client);
	} else {
		/* in a comment: no "(", ")", "\\"; no ";", which ends the
		 * tokens before the date for many parsers */
		data_received_text(helo, sizeof(helo), s->helo, tx->mail.smtputf8, "()\\;");
		buf_printf(&tx->body, "Received: from [%s%s] (%s)\r\n\t(invalid HELO %s)\r\n",
			   strchr(s->client_addr, ':') != NULL ? "IPv6:" : "", s->client_addr,
			   client, helo);
	}
	if (s->tls_active)
		buf_printf(&tx->body, "\t(using %s)\r\n", s->tls_info);
	/* Naming the user is opt-in (auth.received_show_user): privacy first. */
	if (s->auth_user != NULL && conf->auth.received_show_user)
		buf_printf(&tx->body, "\t(Authenticated sender: %s)\r\n", s->auth_user);
	buf_printf(&tx->body, "\tby %s (hikyaku) with %s id %s", conf->hostname,
		   smtpd_session_protocol(s), tx->env.qid);
	data_received_for(s);
}

/* RFC 6409 §8.3: a submission server adds Message-ID: and Date: that the
 * client left out (curl sends neither), as Postfix does; a message that
 * has them keeps its own. Only on submission listeners and local
 * submissions (sendmail): mail relayed to us is not ours to change. The
 * fields go right after our Received, once the header section is
 * complete, and before the first spill writes that part to the spool. A header section still open at the first spill (only with
 * limits.header_size above 256 KiB) is left as it is. */
static void data_missing_fields(struct smtpd_session *s, bool at_end)
{
	struct smtpd_tx *tx = s->tx;
	bool spilling = tx->body.len >= SMTPD_SPILL;

	if (tx->hdr_decided || (!at_end && !spilling && tx->scan.in_header))
		return;
	tx->hdr_decided = true;
	if ((!s->lconf->submission && !s->local) || (tx->scan.message_id && tx->scan.date) ||
	    (!at_end && tx->scan.in_header))
		return;
	char date[64], stamp[32], add[512];
	size_t n = 0;
	if (!tx->scan.message_id) {
		time_t now = (time_t)(tx->env.arrival_us / 1000000u);
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S", &tm);
		n += (size_t)snprintf(add, sizeof(add), "Message-ID: <%s.%s@%s>\r\n", stamp,
				      tx->env.qid, s->srv->conf->hostname);
	}
	if (!tx->scan.date && n < sizeof(add)) {
		data_date(tx, date, sizeof(date));
		n += (size_t)snprintf(add + n, sizeof(add) - n, "Date: %s\r\n", date);
	}
	if (n >= sizeof(add) || buf_reserve(&tx->body, n) < 0)
		return;
	memmove(tx->body.data + tx->hdr_at + n, tx->body.data + tx->hdr_at,
		tx->body.len - tx->hdr_at);
	memcpy(tx->body.data + tx->hdr_at, add, n);
	tx->body.len += n;
	tx->body.data[tx->body.len] = '\0';
}

/* RFC 8601 §5: an Authentication-Results field that claims our
 * authserv-id did not come from us; it is removed before it can be
 * believed downstream (a forgery, or a copy from an earlier pass). */
static bool data_ar_forged(const struct conf *conf, const struct mail_hdr_field *f)
{
	const char *id, *ours = conf->dauth.authserv_id[0] != '\0' ? conf->dauth.authserv_id
								    : conf->hostname;
	size_t idlen;
	if (!mail_hdr_name_is(f, "Authentication-Results") ||
	    mail_hdr_ar_authserv_id(f->value, f->value_len, &id, &idlen) < 0)
		return false;
	return idlen == strlen(ours) && strncasecmp(id, ours, idlen) == 0;
}

/* The client's header section, once it is complete and before any of it
 * is written to the spool (the same moment as data_missing_fields()):
 * forged Authentication-Results fields go, and a copy of the rest is kept
 * for the end-of-data checks (From for DMARC, the fields DKIM signs). A
 * section still open at the first spill (limits.header_size above 256
 * KiB) is kept as far as it came, and nothing is removed from it. */
static void data_header_section(struct smtpd_session *s, bool at_end)
{
	struct smtpd_tx *tx = s->tx;
	bool spilling = tx->body.len >= SMTPD_SPILL;
	if (tx->hdr_seen || (!at_end && !spilling && tx->scan.in_header))
		return;
	tx->hdr_seen = true;
	size_t start = tx->hdr_at, len = tx->body.len - start;
	bool complete = !tx->scan.in_header || at_end;
	if (!tx->scan.in_header && tx->scan.header_size < len)
		len = (size_t)tx->scan.header_size;
	struct mail_hdr_field f;
	size_t pos = 0;
	while (complete && mail_hdr_next((const char *)tx->body.data + start, len, &pos, &f)) {
		if (!data_ar_forged(s->srv->conf, &f))
			continue;
		log_info("event=forged_ar_removed sid=%s qid=%s", s->sid, tx->env.qid);
		unsigned char *at = tx->body.data + start + f.off;
		memmove(at, at + f.len, tx->body.len - (start + f.off + f.len));
		tx->body.len -= f.len;
		tx->body.data[tx->body.len] = '\0';
		len -= f.len;
		pos = f.off;
	}
	(void)buf_append(&tx->hdrs, tx->body.data + start, len < tx->hdrs.max ? len : tx->hdrs.max);
}

/* The From domain of the client's header section: exactly one From with
 * one author domain, else -1. */
static int data_from_domain(const struct smtpd_tx *tx, char *out, size_t outlen)
{
	struct mail_hdr_field f, from = {0};
	size_t pos = 0, n = 0;
	while (mail_hdr_next((const char *)tx->hdrs.data, tx->hdrs.len, &pos, &f)) {
		if (mail_hdr_name_is(&f, "From")) {
			from = f;
			n++;
		}
	}
	if (n != 1 || mail_hdr_from_domain(from.value, from.value_len, out, outlen) < 0)
		return -1;
	return 0;
}

/* DKIM signing of an authenticated submission (RFC 6376 §5; the keys stay
 * in the keys process). Once the header section is settled (forged A-R
 * gone, our Message-ID/Date added), the From domain picks the dkim.sign
 * keys; the signer is fed the message from then on, as it will be
 * delivered, and its DKIM-Signature goes into the top block at the end. */
static void data_sign_feed(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	char dom[256];
	if (!tx->sign_decided) {
		if (!tx->hdr_decided)
			return;
		tx->sign_decided = true;
		if ((s->auth_user == NULL && !s->local) || s->srv->dkim_kc == NULL ||
		    data_from_domain(tx, dom, sizeof(dom)) < 0)
			return;
		size_t n = dkim_sign_keys_for(s->srv->conf, dom, tx->sign_keys, DKIM_SIGS_MAX);
		if (n == 0)
			return;
		tx->sign_conf = (struct dkim_sign_conf){
		    .keys = tx->sign_keys,
		    .n_keys = n,
		    .sign = keyproxy_dkim_sign,
		    .sign_ctx = s->srv->dkim_kc,
		};
		tx->signer = dkim_sign_create(&tx->sign_conf);
		tx->sign_fed = tx->hdr_at; /* the client's message, without our Received */
	}
	if (tx->signer != NULL && tx->body.len > tx->sign_fed) {
		if (dkim_sign_feed(tx->signer, tx->body.data + tx->sign_fed,
				   tx->body.len - tx->sign_fed) < 0) {
			log_warn("event=dkim_sign_failed sid=%s qid=%s reason=\"header section too "
				 "large\"",
				 s->sid, tx->env.qid);
			dkim_sign_free(&tx->signer);
		}
		tx->sign_fed = tx->body.len;
	}
}

/* ARC sealing of inbound mail we forward (arc.seal; the dauth check
 * adds the set at the end of data): like the DKIM signer, the sealer sees
 * the message from the settled header section on, as it will be
 * delivered, without our Received. */
static void data_seal_feed(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	if (!tx->seal_decided) {
		if (!tx->hdr_decided)
			return;
		tx->seal_decided = true;
		if (s->srv->dkim_kc == NULL ||
		    !policy_dauth_seal_begin(tx->dauth, tx->forwarded, keyproxy_dkim_sign,
					     s->srv->dkim_kc))
			return;
		tx->sealing = true;
		tx->seal_fed = tx->hdr_at;
	}
	if (tx->sealing && tx->body.len > tx->seal_fed) {
		policy_dauth_seal_feed(tx->dauth, tx->body.data + tx->seal_fed,
				       tx->body.len - tx->seal_fed);
		tx->seal_fed = tx->body.len;
	}
}

/* The end of a signed message: its DKIM-Signature field(s) on top. A
 * failure sends the message unsigned (logged), as a milter would. */
static void data_sign_finish(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	const char *err = NULL, *hdr = NULL;
	if (tx->signer == NULL)
		return;
	int rc = dkim_sign_finish(tx->signer, NULL, NULL, &err);
	if (rc == 1)
		hdr = dkim_sign_header(tx->signer, &err);
	else if (rc == 0)
		err = "signer did not answer at once"; /* keyproxy_dkim_sign always does */
	size_t n = hdr != NULL ? strlen(hdr) : 0;
	if (n == 0 || buf_reserve(&tx->top, n) < 0) {
		log_warn("event=dkim_sign_failed sid=%s qid=%s reason=\"%s\"", s->sid, tx->env.qid,
			 err != NULL ? err : "no room above the message");
		return;
	}
	memmove(tx->top.data + n, tx->top.data, tx->top.len);
	memcpy(tx->top.data, hdr, n);
	tx->top.len += n;
	tx->top.data[tx->top.len] = '\0';
	log_info("event=dkim_signed sid=%s qid=%s keys=%zu", s->sid, tx->env.qid,
		 tx->sign_conf.n_keys);
}

static void data_start(struct smtpd_session *s, enum datascan_mode mode)
{
	const struct conf_limits *l = &s->srv->conf->limits;
	struct smtpd_tx *tx = s->tx;
	struct datascan_limits lim = {
		.max_line = l->text_line,
		.max_size = l->message_size,
		.max_header = l->header_size,
		.max_received = (unsigned)l->received_hops,
	};
	datascan_init(&tx->scan, mode, &lim);
	tx->msg = NULL; /* a file from the queue, at the first spill or the end */
	tx->file.fd = -1;
	tx->data_started = true;
	data_received_header(s);
	tx->hdr_at = tx->body.len;
}

/* After a failed write the transaction is lost: its file is removed at
 * once (giving the space back to the messages already acknowledged and
 * the sessions in progress) and the rest of the content is read and
 * dropped, to answer 452/451 at its end (the end of DATA cannot be found
 * any other way). */
static void data_spill(struct smtpd_session *s, bool force)
{
	struct smtpd_tx *tx = s->tx;
	if (tx->body.len == 0 || (!force && tx->body.len < SMTPD_SPILL))
		return;
	if (!tx->io_failed && tx->msg == NULL) {
		/* No file at hand (the queue has not sent more yet): keep
		 * the content in memory a little longer. */
		if (!qclient_take(s->srv->qc, &tx->file))
			return;
		tx->msg = spool_msg_adopt(tx->file.fd, tx->env.qid);
	}
	if (!tx->io_failed && spool_msg_append(tx->msg, tx->body.data, tx->body.len) == 0)
		tx->spilled += tx->body.len; /* the milters read it back */
	else if (!tx->io_failed) {
		tx->io_failed = true;
		tx->io_errno = errno;
		spool_msg_abort(&tx->msg);
		qclient_abort(s->srv->qc, &tx->file);
	}
	buf_reset(&tx->body);
	tx->sign_fed = 0; /* the signer has seen all of it */
	tx->seal_fed = 0; /* and the sealer */
}

void smtpd_cmd_data(struct smtpd_session *s, const char *args, size_t len)
{
	struct smtpd_tx *tx = s->tx;
	(void)args;
	if (len != 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: DATA");
		return;
	}
	if (tx->bdat_started) {
		smtpd_reply(s, 503, "5.5.1", "DATA not allowed during BDAT transfer");
		return;
	}
	if (tx->env.nrcpts == 0) {
		smtpd_reply(s, 554, "5.5.1", "No valid recipients");
		return;
	}
	data_start(s, DATASCAN_DOT);
	smtpd_session_set_state(s, SMTPD_S_DATA);
	smtpd_session_timeouts(s, true);
	smtpd_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

/* The first reason to refuse the message, or 0 with nothing to refuse. */
static int data_verdict(struct smtpd_session *s)
{
	const struct conf_limits *l = &s->srv->conf->limits;
	unsigned f = s->tx->scan.flags;
	if (f & DATASCAN_TOO_BIG)
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
	else if (f & (DATASCAN_BARE_LF | DATASCAN_BARE_CR))
		smtpd_reply(s, 550, "5.6.0",
			    "Bare CR or LF in message content; lines must end with CRLF");
	else if (f & DATASCAN_LONG_LINE)
		smtpd_reply(s, 550, "5.6.0", "Message line longer than %llu octets",
			    (unsigned long long)l->text_line);
	else if (f & DATASCAN_HEADER_BIG)
		smtpd_reply(s, 552, "5.3.4", "Message header section exceeds %llu octets",
			    (unsigned long long)l->header_size);
	else if (f & DATASCAN_TOO_MANY_HOPS)
		smtpd_reply(s, 554, "5.4.6", "Too many hops: mail loop detected");
	else if (s->tx->io_failed)
		data_reply_io_error(s, s->tx->io_errno);
	else
		return 0;
	return -1;
}

/* Content and envelope into the file (page cache only: the queue's
 * publish fdatasyncs it). The loop for a first file; a commit worker for
 * the copy after a queue restart, which reads the whole message. */
static void data_commit_run(void *arg)
{
	struct smtpd_commit *c = arg;
	if (c->rehomed) {
		/* The content is in the first file (the queue that gave it is
		 * gone): copy it into this one, then seal it the same way.
		 * The added header fields are part of it already. */
		char buf[65536];
		uint64_t size = c->env.size, off = 0, from = c->env.content_off;
		while (off < size) {
			size_t want = size - off < sizeof(buf) ? (size_t)(size - off) : sizeof(buf);
			ssize_t n = pread(c->keep_fd, buf, want, (off_t)(from + off));
			if (n <= 0 || spool_msg_append(c->msg, buf, (size_t)n) < 0) {
				c->err = n < 0 ? errno : EIO;
				c->ret = -1;
				c->error = "cannot copy message file";
				spool_msg_abort(&c->msg);
				return;
			}
			off += (uint64_t)n;
		}
		c->ret = spool_msg_seal(&c->msg, &c->env, NULL, 0, &c->error);
	} else if (spool_msg_prepend(c->msg, c->top.data, c->top.len, &c->error) < 0) {
		c->ret = -1;
		c->err = errno;
		spool_msg_abort(&c->msg);
		return;
	} else {
		c->ret = spool_msg_seal(&c->msg, &c->env, c->body.data, c->body.len, &c->error);
	}
	c->err = c->ret < 0 ? errno : 0;
}

/* Loop thread: only now may the client hear 250. */
static void data_commit_finish(struct smtpd_commit *c)
{
	struct smtpd_session *s = c->s;
	char qf[LOG_Q_MAX];
	if (c->ret == 0) {
		s->messages++;
		metrics_inc(METRIC_MSG_ACCEPTED);
		metrics_observe_accept(smtpd_now_us() - c->start_us);
		char uid[24] = "";
		if (s->local)
			snprintf(uid, sizeof(uid), " uid=%u", (unsigned)s->local_uid);
		log_info("event=accept sid=%s qid=%s client=%s%s from=<%s> size=%llu nrcpt=%zu "
			 "proto=%s",
			 s->sid, c->env.qid, s->client_addr, uid,
			 c->env.sender[0] != '\0' ? log_qs(qf, c->env.sender) : "", /* <> */
			 (unsigned long long)c->env.size, c->env.nrcpts, smtpd_session_protocol(s));
		if (s->bev != NULL)
			smtpd_reply(s, 250, "2.0.0", "Ok: queued as %s", c->env.qid);
	} else {
		log_err("event=commit_failed sid=%s qid=%s reason=%s", s->sid, c->env.qid,
			log_qs(qf, c->error));
		if (s->bev != NULL)
			data_reply_io_error(s, c->err);
	}
	envelope_clear(&c->env);
	buf_free(&c->body);
	buf_free(&c->top);
	if (c->keep_fd >= 0)
		close(c->keep_fd);
	free(c);
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

static void data_commit_file(void *arg, const struct qclient_file *f);

static void data_commit_answer(void *arg, int err, const char *reason)
{
	struct smtpd_commit *c = arg;
	c->req = NULL;
	if (reason != NULL && err == ESTALE && !c->rehomed && c->keep_fd >= 0) {
		/* The queue restarted (a reload, a crash) under this commit:
		 * the new one gets a copy, the client its 250 all the same. */
		log_info("event=commit_again sid=%s qid=%s reason=\"%s\"", c->s->sid, c->env.qid,
			 reason);
		c->rehomed = true;
		struct qclient_file f;
		if (qclient_take(c->s->srv->qc, &f)) /* the new queue's pool may be there */
			data_commit_file(c, &f);
		else
			c->req = qclient_wait_file(c->s->srv->qc, data_commit_file, c);
		return;
	}
	if (reason != NULL) {
		c->ret = -1;
		c->err = err;
		c->error = reason;
	}
	data_commit_finish(c);
}

static void data_commit_sealed(void *arg)
{
	struct smtpd_commit *c = arg;
	struct qclient *qc = c->s->srv->qc;
	if (c->ret < 0) {
		qclient_abort(qc, &c->file);
		data_commit_finish(c);
		return;
	}
	c->req = qclient_commit(qc, &c->file, c->env.qid, data_commit_answer, c);
}

static void data_commit_sealed_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	data_commit_sealed(arg);
}

static void data_commit_seal(struct smtpd_commit *c)
{
	if (!c->rehomed && c->keep_fd < 0)
		c->keep_fd = fcntl(c->file.fd, F_DUPFD_CLOEXEC, 3);
	/* Up to SMTPD_SPILL octets of content (the rest went out as it
	 * arrived) and the envelope are writes to the page cache, as the
	 * loop already does while a message arrives: no hand-over to a
	 * worker and back for each message. A copy after a queue restart,
	 * or a whole message held in memory because no file was there to
	 * spill into, goes to a worker. */
	if (c->rehomed || c->body.len > SMTPD_SPILL) {
		workq_submit(c->s->srv->commit_wq, data_commit_run, data_commit_sealed, c);
		return;
	}
	data_commit_run(c);
	/* The rest in the next loop turn, as after a worker: whoever called
	 * us is not re-entered by the session's end or resumption. An
	 * event of the commit's own: nothing to allocate, nothing to fail. */
	event_assign(&c->sealed_ev, c->s->srv->base, -1, 0, data_commit_sealed_cb, c);
	event_active(&c->sealed_ev, EV_TIMEOUT, 0);
}

static void data_commit_file(void *arg, const struct qclient_file *f)
{
	struct smtpd_commit *c = arg;
	c->req = NULL;
	if (f->fd < 0) {
		c->ret = -1;
		c->err = 0;
		c->error = "no message file from the queue process";
		data_commit_finish(c);
		return;
	}
	c->file = *f;
	c->msg = spool_msg_adopt(f->fd, c->env.qid);
	data_commit_seal(c);
}

/* After the end-of-data chain: the message goes to the spool. */
static void data_commit_start(struct smtpd_session *s)
{
	/* milter: the end-of-body step, after the end-of-data chain
	 * (data_milter.c); back here once its changes are applied */
	if (smtpd_milter_wanted(s)) {
		smtpd_milter_start(s, data_commit_start);
		return;
	}
	/* end milter */
	struct smtpd_tx *tx = s->tx;
	/* Abort on out-of-memory like every allocation (STYLE.md): a NULL
	 * check here would be the only one in the server. */
	struct smtpd_commit *c = xcalloc(1, sizeof(*c));
	c->s = s;
	c->keep_fd = -1;
	c->start_us = smtpd_now_us();
	c->msg = tx->msg;
	tx->msg = NULL;
	c->file = tx->file;
	c->body = tx->body;
	buf_init(&tx->body, 0);
	c->top = tx->top;
	buf_init(&tx->top, 0);
	c->env = tx->env;
	envelope_init(&tx->env);
	memcpy(tx->env.qid, c->env.qid, sizeof(tx->env.qid));
	smtpd_session_set_state(s, SMTPD_S_COMMIT);
	if (c->msg == NULL) {
		struct qclient_file f;
		if (!qclient_take(s->srv->qc, &f)) {
			c->req = qclient_wait_file(s->srv->qc, data_commit_file, c);
			return;
		}
		c->file = f;
		c->msg = spool_msg_adopt(f.fd, c->env.qid);
	}
	data_commit_seal(c);
}

/* The end-of-data chain's verdict (src/policy: domain authentication and
 * later milters): a refusal ends the transaction, otherwise the message
 * is committed with the header fields the checks added above it. */
static void data_eod_verdict(struct smtpd_session *s, const struct policy_verdict *v)
{
	struct smtpd_tx *tx = s->tx;
	if (v->result == POLICY_REPLY) {
		log_info("event=eod_reject sid=%s qid=%s check=%s code=%d", s->sid, tx->env.qid,
			 v->check != NULL ? v->check : "-", v->code);
		smtpd_reply(s, v->code, v->enh[0] != '\0' ? v->enh : NULL, "%s", v->text);
	} else if (s->preq.eod.top_full) {
		/* More added fields than the spool file's gap holds: refused
		 * rather than written over the content. */
		log_err("event=eod_top_full sid=%s qid=%s", s->sid, tx->env.qid);
		smtpd_reply(s, 451, "4.3.0", "Local error in processing, try again later");
	} else {
		/* DMARC quarantine: the queue delivers into the Junk folder. */
		if (s->preq.eod.quarantine)
			tx->env.flags |= ENVELOPE_FLAG_JUNK;
		data_commit_start(s);
		return;
	}
	smtpd_tx_reset(s);
	smtpd_session_timeouts(s, false);
}

/* The content is complete: run the end-of-data chain (the session reads
 * no further input until its verdict, so pipelined commands keep their
 * order), then commit. */
static void data_end_of_message(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	if (data_verdict(s) < 0) {
		smtpd_tx_reset(s);
		smtpd_session_timeouts(s, false);
		return;
	}
	data_header_section(s, true);
	data_missing_fields(s, true);
	data_sign_feed(s);
	data_seal_feed(s);
	data_sign_finish(s);
	struct policy_eod_req *r = &s->preq.eod;
	memset(r, 0, sizeof(*r));
	r->qid = tx->env.qid;
	r->sender = tx->env.sender;
	r->helo = s->helo;
	r->authenticated = s->auth_user != NULL;
	r->hdr = tx->hdrs.data != NULL ? (const char *)tx->hdrs.data : "";
	r->hdr_len = tx->hdrs.len;
	r->top = &tx->top;
	r->dauth = tx->dauth;
	r->first_rcpt = tx->env.nrcpts > 0 ? tx->env.rcpts[0].addr : NULL;
	smtpd_session_policy(s, POLICY_EOD, &s->preq, data_eod_verdict);
}

static void bdat_chunk_end(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	if (s->bdat_discard_mode) {
		s->bdat_discard_mode = false;
		smtpd_session_set_state(s, s->bdat_prev_state);
		smtpd_session_timeouts(s, false);
		smtpd_reply_perr(s, &s->bdat_err);
		return;
	}
	if (tx->bdat_last) {
		datascan_finish(&tx->scan);
		data_end_of_message(s);
		return;
	}
	smtpd_session_timeouts(s, false);
	if (tx->io_failed) {
		/* RFC 3030 §2: a 4xx to a chunk fails the transaction; end
		 * it now rather than read chunks that cannot be kept. */
		data_reply_io_error(s, tx->io_errno);
		smtpd_tx_reset(s);
		return;
	}
	smtpd_session_set_state(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.0.0", "%llu octets received",
		    (unsigned long long)tx->scan.size);
}

static void bdat_discard(struct smtpd_session *s, uint64_t size, int code, const char *enh,
			 const char *text)
{
	s->bdat_discard_mode = true;
	s->bdat_discard = size;
	s->bdat_err.code = code;
	s->bdat_err.enh = enh;
	s->bdat_err.text = text;
	s->bdat_prev_state = s->state;
	smtpd_session_set_state(s, SMTPD_S_BDAT);
	smtpd_session_timeouts(s, true);
	if (size == 0)
		bdat_chunk_end(s);
}

void smtpd_cmd_bdat(struct smtpd_session *s, const char *args, size_t len)
{
	const struct conf *conf = s->srv->conf;
	struct smtp_perr err;
	uint64_t size;
	bool last;
	if (smtp_parse_bdat(args, len, UINT64_MAX, &size, &last, &err) < 0) {
		/* Without a size the chunk cannot be skipped: the octets that
		 * follow would be read as commands. Refuse and hang up. */
		smtpd_reply_perr(s, &err);
		smtpd_session_close(s);
		return;
	}
	if (size > conf->limits.message_size) {
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		smtpd_session_close(s);
		return;
	}
	if (s->state == SMTPD_S_INIT) {
		bdat_discard(s, size, 503, "5.5.1", "Send EHLO/HELO first");
		return;
	}
	if (s->tx == NULL) {
		bdat_discard(s, size, 503, "5.5.1", "Need MAIL command");
		return;
	}
	if (s->tx->env.nrcpts == 0) {
		bdat_discard(s, size, 554, "5.5.1", "No valid recipients");
		return;
	}
	struct smtpd_tx *tx = s->tx;
	if (!tx->data_started)
		data_start(s, DATASCAN_RAW);
	tx->bdat_started = true;
	tx->bdat_left = size;
	tx->bdat_last = last;
	smtpd_session_set_state(s, SMTPD_S_BDAT);
	smtpd_session_timeouts(s, true);
	if (size == 0)
		bdat_chunk_end(s);
}

/* Feed up to max octets from in to the scanner; returns octets consumed. */
static size_t data_feed(struct smtpd_session *s, struct evbuffer *in, size_t max, bool *done_r)
{
	struct smtpd_tx *tx = s->tx;
	struct evbuffer_iovec v[16];
	int n = evbuffer_peek(in, (ssize_t)max, NULL, v, 16);
	size_t total = 0, from = tx->body.len;
	*done_r = false;
	for (int i = 0; i < n && i < 16 && total < max; i++) {
		size_t len = v[i].iov_len;
		if (len > max - total)
			len = max - total;
		total += datascan_feed(&tx->scan, v[i].iov_base, len, &tx->body, done_r);
		if (*done_r)
			break;
	}
	evbuffer_drain(in, total);
	/* The DKIM verifier sees the content as the client sent it (after
	 * dot-unstuffing), before anything of ours changes it. */
	policy_dauth_feed(tx->dauth, tx->body.data + from, tx->body.len - from);
	data_header_section(s, false);
	data_missing_fields(s, false);
	data_sign_feed(s);
	data_seal_feed(s);
	data_spill(s, false);
	return total;
}

bool smtpd_data_input(struct smtpd_session *s, struct evbuffer *in)
{
	size_t avail = evbuffer_get_length(in);
	bool done;
	if (s->state == SMTPD_S_DATA) {
		if (avail == 0)
			return false;
		data_feed(s, in, avail, &done);
		if (done)
			data_end_of_message(s);
		return true;
	}
	/* SMTPD_S_BDAT */
	uint64_t *left = s->bdat_discard_mode ? &s->bdat_discard : &s->tx->bdat_left;
	if (*left > 0 && avail == 0)
		return false;
	size_t n = *left < avail ? (size_t)*left : avail;
	if (s->bdat_discard_mode)
		evbuffer_drain(in, n);
	else
		n = data_feed(s, in, n, &done);
	*left -= n;
	if (*left == 0)
		bdat_chunk_end(s);
	return true;
}
