/* milter.c — smtpd's milter client (milter.h): one connection per milter
 * per SMTP session, on the loop with a bufferevent. Each stage is a run
 * over the milters in turn; a milter's part of a stage is generated step
 * by step, a body chunk only when the previous output has drained below
 * MILTER_OUT_HIGH, so a milter that does not read holds at most that much
 * of the message in memory. Every wait has a timer: connect, each
 * command's reply, the end of body (progress replies restart it). A milter
 * that fails is closed for the rest of the session and gets its failure
 * mode at each stage. Runs in smtpd; replies are hostile (milter_proto.c
 * bounds them). */
#include "milter/milter.h"
#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "milter/milter_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MILTER_OUT_HIGH (256u * 1024)
/* The header section is read whole: datascan bounds it (limits.header_size,
 * at most a few MiB); this is a second fence. */
#define MILTER_HDR_READ_MAX (8u * 1024 * 1024)
#define MILTER_MODS_MAX 1000 /* modifications per message */

enum milter_step {
	STEP_OPTNEG,
	STEP_CONNECT,
	STEP_HELO,
	STEP_MAIL,
	STEP_RCPT,
	STEP_DATA,
	STEP_HEADER,
	STEP_EOH,
	STEP_BODY,
	STEP_EOB,
	STEP_DONE,
};

struct milter_conn {
	struct milter_sess *ms;
	const struct conf_milter *conf;
	struct bufferevent *bev;
	struct event *timer;
	enum milter_step step, end; /* end: where this stage's part is over */
	size_t hdr_i;
	uint64_t body_pos;
	bool want_reply;
	bool dead;          /* failed (or never reached): its failure mode from now on */
	bool accepted_sess; /* SMFIR_ACCEPT at CONNECT or HELO: not asked again */
	bool accepted_tx;   /* SMFIR_ACCEPT later: not asked again in this transaction */
	bool tx_open;       /* it saw MAIL, and neither the EOB answer nor ABORT since */
	uint32_t actions, protocol;
};

struct milter_sess {
	struct event_base *base;
	size_t n;
	struct milter_conn *c;
	char sid[32];
	bool discard_sess, discard_tx;
	char discarder[64];
	/* the run in progress */
	bool running;
	enum milter_stage stage;
	size_t cur, last;
	bool cur_started; /* c[cur] was sent this stage's first step */
	const struct milter_info *info;
	struct milter_content content;
	uint64_t max_body;
	bool hdrs_ok;
	struct milter_result *res;
	milter_done_fn *cb;
	void *arg;
	struct event *defer; /* the next milter, or the callback, from the loop */
};

static void conn_pump(struct milter_conn *e);
static void conn_open(struct milter_conn *e);
struct milter_reply;
static int eod_modify(struct milter_conn *e, const struct milter_reply *r, const char **why);

static uint64_t eod_total(const struct milter_sess *ms)
{
	return ms->content.file_len + ms->content.tail_len;
}

/* Is e the milter whose part of the running stage this is? */
static bool conn_current(const struct milter_conn *e)
{
	const struct milter_sess *ms = e->ms;
	return ms->running && ms->cur < ms->last && &ms->c[ms->cur] == e;
}

static void conn_close(struct milter_conn *e, bool quit)
{
	if (e->bev != NULL) {
		int fd = (int)bufferevent_getfd(e->bev);
		if (quit && fd >= 0 && evbuffer_get_length(bufferevent_get_output(e->bev)) == 0) {
			/* the polite end, if the socket takes it now: ABORT
			 * first for a transaction still open */
			static const unsigned char q[10] = {0, 0, 0, 1, SMFIC_ABORT,
			                                    0, 0, 0, 1, SMFIC_QUIT};
			size_t skip = e->tx_open ? 0 : 5;
			ssize_t w =
			    send(fd, q + skip, sizeof(q) - skip, MSG_DONTWAIT | MSG_NOSIGNAL);
			(void)w;
		}
		bufferevent_free(e->bev);
	}
	e->bev = NULL;
	if (e->timer != NULL)
		event_del(e->timer);
}

static void conn_arm(struct milter_conn *e, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_add(e->timer, &tv);
}

static const char *stage_name(enum milter_stage st)
{
	static const char *const names[] = {"connect", "helo", "mail", "rcpt", "eob"};
	return names[st];
}

/* The current milter's part of the stage is over: the next one (or the
 * callback) from the loop. */
static void sess_next(struct milter_sess *ms)
{
	ms->cur++;
	ms->cur_started = false;
	event_active(ms->defer, 0, 0);
}

static void sess_verdict(struct milter_sess *ms, enum milter_verdict v, int code, const char *enh,
                         const char *text)
{
	struct milter_result *r = ms->res;
	r->verdict = v;
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), "%s", text);
	snprintf(r->milter, sizeof(r->milter), "%s", ms->c[ms->cur].conf->name);
	ms->cur = ms->last; /* decided: the callback */
	ms->cur_started = false;
	event_active(ms->defer, 0, 0);
}

/* A failed milter's failure mode at the current stage. */
static void sess_failure(struct milter_sess *ms, struct milter_conn *e)
{
	if (e->conf->failure == CONF_MILTER_TEMPFAIL) {
		ms->res->failed = true;
		sess_verdict(ms, MILTER_TEMPFAIL, 451, "4.7.1",
		             "Service unavailable, try again later");
		return;
	}
	sess_next(ms);
}

static void conn_fail(struct milter_conn *e, const char *why)
{
	struct milter_sess *ms = e->ms;
	bool current = conn_current(e);
	log_warn("event=milter_failed sid=%s milter=%s stage=%s reason=\"%s\" failure=%s", ms->sid,
	         e->conf->name,
	         current                   ? stage_name(ms->stage)
	         : e->step <= STEP_CONNECT ? "connect"
	                                   : "idle",
	         why, e->conf->failure == CONF_MILTER_TEMPFAIL ? "tempfail" : "accept");
	conn_close(e, false);
	e->dead = true;
	e->want_reply = false;
	e->step = STEP_DONE;
	if (current)
		sess_failure(ms, e);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_fail(arg, "timeout");
}

static void eod_macro(struct buf *b, char cmd, const char *const *kv, size_t n)
{
	struct buf d;
	buf_init(&d, 0);
	buf_append_byte(&d, (unsigned char)cmd);
	for (size_t i = 0; i < n; i += 2) {
		if (kv[i + 1] == NULL)
			continue;
		buf_append(&d, kv[i], strlen(kv[i]) + 1);
		buf_append(&d, kv[i + 1], strlen(kv[i + 1]) + 1);
	}
	milter_frame_put(b, SMFIC_MACRO, d.data, d.len);
	buf_free(&d);
}

/* Read content[off .. off + len) into p; the number read. */
static size_t eod_read(const struct milter_sess *e, uint64_t off, unsigned char *p, size_t len)
{
	const struct milter_content *c = &e->content;
	size_t got = 0;
	while (got < len && off < c->file_len && c->fd >= 0) {
		size_t want = len - got;
		if (want > c->file_len - off)
			want = (size_t)(c->file_len - off);
		ssize_t r = pread(c->fd, p + got, want, (off_t)(c->off + off));
		if (r <= 0)
			return got;
		got += (size_t)r;
		off += (uint64_t)r;
	}
	if (got < len && off >= c->file_len && off - c->file_len < c->tail_len) {
		size_t t = (size_t)(off - c->file_len), want = len - got;
		if (want > c->tail_len - t)
			want = c->tail_len - t;
		memcpy(p + got, c->tail + t, want);
		got += want;
	}
	return got;
}

/* The frames of one step into b; sets want_reply. */
static void eod_step(struct milter_conn *e, struct buf *b)
{
	struct milter_sess *ms = e->ms;
	const struct milter_info *in = ms->info;
	uint32_t pf = e->protocol;
	char addr[1100];
	e->want_reply = false;
	switch (e->step) {
	case STEP_OPTNEG:
		milter_frame_optneg(b, MILTER_VERSION, MILTER_ACTIONS_OFFERED,
		                    MILTER_PROTOCOL_OFFERED);
		e->want_reply = true;
		e->step = STEP_CONNECT;
		return;
	case STEP_CONNECT: {
		const char *kv[] = {"j", in->hostname, "{client_addr}", in->client_addr};
		eod_macro(b, SMFIC_CONNECT, kv, 4);
		if (!(pf & SMFIP_NOCONNECT)) {
			milter_frame_connect(b, in->client_name, in->family,
			                     (uint16_t)in->client_port, in->client_addr);
			e->want_reply = !(pf & SMFIP_NR_CONN);
		}
		e->step = STEP_HELO;
		return;
	}
	case STEP_HELO:
		if (!(pf & SMFIP_NOHELO) && in->helo[0] != '\0') {
			const char *s[] = {in->helo};
			milter_frame_put_strs(b, SMFIC_HELO, s, 1);
			e->want_reply = !(pf & SMFIP_NR_HELO);
		}
		e->step = STEP_MAIL;
		return;
	case STEP_MAIL: {
		snprintf(addr, sizeof(addr), "<%s>", in->sender);
		const char *kv[] = {"i",           in->qid,       "{auth_authen}",
		                    in->auth_user, "{mail_addr}", in->sender};
		eod_macro(b, SMFIC_MAIL, kv, 6);
		if (!(pf & SMFIP_NOMAIL)) {
			const char *s[] = {addr};
			milter_frame_put_strs(b, SMFIC_MAIL, s, 1);
			e->want_reply = !(pf & SMFIP_NR_MAIL);
		}
		e->step = STEP_RCPT;
		e->tx_open = true;
		return;
	}
	case STEP_RCPT:
		if (!(pf & SMFIP_NORCPT) && in->nrcpts > 0) {
			const char *rc = in->rcpts[0];
			const char *kv[] = {"{rcpt_addr}", rc};
			snprintf(addr, sizeof(addr), "<%s>", rc);
			const char *s[] = {addr};
			eod_macro(b, SMFIC_RCPT, kv, 2);
			milter_frame_put_strs(b, SMFIC_RCPT, s, 1);
			e->want_reply = !(pf & SMFIP_NR_RCPT);
		}
		e->step = STEP_DATA;
		return;
	case STEP_DATA:
		if (!(pf & SMFIP_NODATA)) {
			milter_frame_put(b, SMFIC_DATA, NULL, 0);
			e->want_reply = !(pf & SMFIP_NR_DATA);
		}
		e->step = STEP_HEADER;
		e->hdr_i = 0;
		return;
	case STEP_HEADER: {
		const struct milter_hdrs *h = &ms->res->hdrs;
		if (e->hdr_i >= h->n || (pf & SMFIP_NOHDRS)) {
			e->step = STEP_EOH;
			return;
		}
		const struct milter_field *f = &h->f[e->hdr_i++];
		struct buf d;
		buf_init(&d, 0);
		buf_append(&d, h->raw.data + f->off, f->name_len);
		buf_append_byte(&d, 0);
		/* the value without its last CRLF, folds as LF (as Postfix) */
		for (size_t i = f->value_off; i < f->off + f->len; i++) {
			unsigned char c = h->raw.data[i];
			if (c == '\r' || (c == '\n' && i + 1 == f->off + f->len))
				continue;
			buf_append_byte(&d, c == '\0' ? ' ' : c);
		}
		buf_append_byte(&d, 0);
		milter_frame_put(b, SMFIC_HEADER, d.data, d.len);
		buf_free(&d);
		e->want_reply = !(pf & SMFIP_NR_HDR);
		return;
	}
	case STEP_EOH:
		if (!(pf & SMFIP_NOEOH)) {
			milter_frame_put(b, SMFIC_EOH, NULL, 0);
			e->want_reply = !(pf & SMFIP_NR_EOH);
		}
		e->step = STEP_BODY;
		e->body_pos = ms->res->hdrs.body_off;
		return;
	case STEP_BODY: {
		uint64_t total = eod_total(ms);
		if (e->body_pos >= total || (pf & SMFIP_NOBODY)) {
			e->step = STEP_EOB;
			return;
		}
		unsigned char *chunk = xmalloc(MILTER_CHUNK);
		size_t n = eod_read(ms, e->body_pos, chunk, MILTER_CHUNK);
		if (n == 0) {
			free(chunk);
			e->step = STEP_EOB; /* a short file: the rest is not there */
			return;
		}
		e->body_pos += n;
		milter_frame_put(b, SMFIC_BODY, chunk, n);
		free(chunk);
		e->want_reply = !(pf & SMFIP_NR_BODY);
		return;
	}
	case STEP_EOB: {
		const char *kv[] = {"i", in->qid};
		eod_macro(b, SMFIC_BODYEOB, kv, 2);
		milter_frame_put(b, SMFIC_BODYEOB, NULL, 0);
		e->want_reply = true;
		e->step = STEP_DONE;
		return;
	}
	case STEP_DONE:
		return;
	}
}

/* Send steps until one waits for a reply, the output is full, or this
 * stage's part is over (then the next milter). */
static void conn_pump(struct milter_conn *e)
{
	struct milter_sess *ms = e->ms;
	struct buf b;
	buf_init(&b, 0);
	while (e->bev != NULL && !e->want_reply && e->step != e->end &&
	       evbuffer_get_length(bufferevent_get_output(e->bev)) < MILTER_OUT_HIGH) {
		buf_reset(&b);
		eod_step(e, &b);
		if (b.len > 0 && bufferevent_write(e->bev, b.data, b.len) < 0) {
			buf_free(&b);
			conn_fail(e, "write failed");
			return;
		}
	}
	buf_free(&b);
	if (e->bev == NULL)
		return;
	if (!e->want_reply && e->step == e->end) {
		/* this milter has no objection: the next (or, opened ahead of
		 * its turn at CONNECT, it is ready for it) */
		event_del(e->timer);
		if (conn_current(e))
			sess_next(ms);
		return;
	}
	if (e->want_reply)
		conn_arm(e, e->step == STEP_DONE ? e->conf->eob_timeout : e->conf->command_timeout);
	else
		conn_arm(e, e->conf->command_timeout); /* the milter must read */
}

/* This milter's part is over with accept: at EOB the modifications stand;
 * before, it wants to see no more of the session (CONNECT, HELO) or of
 * the transaction. */
static void conn_accept(struct milter_conn *e)
{
	struct milter_sess *ms = e->ms;
	if (ms->stage <= MILTER_STAGE_HELO)
		e->accepted_sess = true;
	else
		e->accepted_tx = true;
	if (ms->stage == MILTER_STAGE_EOB)
		e->tx_open = false;
	e->want_reply = false;
	e->step = e->end;
	event_del(e->timer);
	sess_next(ms);
}

/* One reply; false when this milter's part is over (or it failed). */
static bool conn_reply(struct milter_conn *e, const struct milter_reply *r)
{
	struct milter_sess *ms = e->ms;
	char enh[16], text[400];
	int code;
	const char *why = "unexpected reply";
	bool at_eob = ms->stage == MILTER_STAGE_EOB && e->step == STEP_DONE;
	if (e->step == STEP_CONNECT && e->actions == 0 && e->protocol == 0 &&
	    r->cmd == SMFIC_OPTNEG) {
		uint32_t v, a, p;
		if (milter_reply_optneg(r, &v, &a, &p) < 0 || v < 2 || v > MILTER_VERSION) {
			conn_fail(e, "option negotiation failed");
			return false;
		}
		e->actions = a & MILTER_ACTIONS_OFFERED;
		e->protocol = p & MILTER_PROTOCOL_OFFERED;
		if (e->protocol == 0)
			e->protocol = 0x80000000u; /* negotiated: nothing skipped */
		e->want_reply = false;
		return true;
	}
	if (ms->stage == MILTER_STAGE_EOB)
		e->tx_open = !at_eob; /* the end of body is answered either way */
	switch (r->cmd) {
	case SMFIR_CONTINUE:
		if (at_eob)
			break; /* continue at EOB means accept */
		e->want_reply = false;
		return true;
	case SMFIR_PROGRESS:
		conn_arm(e, e->conf->eob_timeout);
		return true;
	case SMFIR_SKIP:
		if (e->step == STEP_BODY) {
			e->step = STEP_EOB;
			e->want_reply = false;
			return true;
		}
		conn_fail(e, why);
		return false;
	case SMFIR_ACCEPT:
		break;
	case SMFIR_REJECT:
		e->want_reply = false;
		event_del(e->timer);
		sess_verdict(ms, MILTER_REJECT, 550, "5.7.1", "Command rejected");
		return false;
	case SMFIR_TEMPFAIL:
		e->want_reply = false;
		event_del(e->timer);
		sess_verdict(ms, MILTER_TEMPFAIL, 451, "4.7.1",
		             "Service unavailable - try again later");
		return false;
	case SMFIR_DISCARD:
		e->want_reply = false;
		event_del(e->timer);
		if (ms->stage <= MILTER_STAGE_HELO)
			ms->discard_sess = true;
		else
			ms->discard_tx = true;
		snprintf(ms->discarder, sizeof(ms->discarder), "%s", e->conf->name);
		sess_verdict(ms, MILTER_DISCARD, 250, "2.0.0", "");
		return false;
	case SMFIR_REPLYCODE:
		if (milter_reply_code(r, &code, enh, sizeof(enh), text, sizeof(text)) < 0) {
			conn_fail(e, "malformed reply code");
			return false;
		}
		e->want_reply = false;
		event_del(e->timer);
		ms->res->custom = true;
		if (enh[0] == '\0') /* ENHANCEDSTATUSCODES: every reply has one */
			snprintf(enh, sizeof(enh), "%s", code >= 500 ? "5.7.1" : "4.7.1");
		sess_verdict(ms, code >= 500 ? MILTER_REJECT : MILTER_TEMPFAIL, code, enh,
		             text[0] != '\0' ? text : "Command rejected");
		return false;
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		conn_fail(e, "milter shut down");
		return false;
	default:
		if (at_eob) {
			if (eod_modify(e, r, &why) == 0)
				return true;
		}
		conn_fail(e, why);
		return false;
	}
	conn_accept(e);
	return false;
}

static void eod_add_op(struct milter_conn *e, enum milter_hdr_op_kind k, uint32_t idx,
                       const char *name, const char *value)
{
	struct milter_result *r = e->ms->res;
	if (r->n_ops == r->cap_ops) {
		r->cap_ops = r->cap_ops ? r->cap_ops * 2 : 8;
		r->ops = xreallocarray(r->ops, r->cap_ops, sizeof(*r->ops));
	}
	r->ops[r->n_ops++] = (struct milter_hdr_op){k, idx, xstrdup(name), xstrdup(value)};
}

static bool eod_name_ok(const char *n)
{
	if (*n == '\0' || strlen(n) > 200)
		return false;
	for (; *n != '\0'; n++)
		if ((unsigned char)*n <= 0x20 || (unsigned char)*n >= 0x7f || *n == ':')
			return false;
	return true;
}

static void eod_push(char ***list, size_t *n, const char *addr)
{
	char a[1024];
	milter_addr_strip(addr, a, sizeof(a));
	*list = xreallocarray(*list, *n + 1, sizeof(**list));
	(*list)[(*n)++] = xstrdup(a);
}

/* A modification at the end of body; 0, or -1 to fail the milter. */
static int eod_modify(struct milter_conn *e, const struct milter_reply *r, const char **why)
{
	struct milter_result *res = e->ms->res;
	const char *s[2], *name, *value;
	size_t n;
	uint32_t idx;
	if (res->n_ops + res->n_add + res->n_del > MILTER_MODS_MAX) {
		*why = "too many modifications";
		return -1;
	}
	*why = "malformed modification";
	switch (r->cmd) {
	case SMFIR_ADDHEADER:
		if (milter_reply_strs(r, 0, s, 2, 2, &n) < 0 || !eod_name_ok(s[0]))
			return -1;
		eod_add_op(e, MILTER_HDR_ADD, 0, s[0], s[1]);
		return 0;
	case SMFIR_INSHEADER:
	case SMFIR_CHGHEADER:
		if (milter_reply_header(r, &idx, &name, &value) < 0 || !eod_name_ok(name))
			return -1;
		eod_add_op(e, r->cmd == SMFIR_INSHEADER ? MILTER_HDR_INSERT : MILTER_HDR_CHANGE,
		           idx, name, value);
		return 0;
	case SMFIR_CHGFROM:
		if (milter_reply_strs(r, 0, s, 1, 2, &n) < 0)
			return -1;
		free(res->new_sender);
		char a[1024];
		milter_addr_strip(s[0], a, sizeof(a));
		res->new_sender = xstrdup(a);
		return 0;
	case SMFIR_ADDRCPT:
	case SMFIR_ADDRCPT_PAR:
		if (milter_reply_strs(r, 0, s, 1, 2, &n) < 0 || s[0][0] == '\0')
			return -1;
		eod_push(&res->add_rcpts, &res->n_add, s[0]);
		return 0;
	case SMFIR_DELRCPT:
		if (milter_reply_strs(r, 0, s, 1, 1, &n) < 0)
			return -1;
		eod_push(&res->del_rcpts, &res->n_del, s[0]);
		return 0;
	case SMFIR_QUARANTINE:
		if (milter_reply_strs(r, 0, s, 1, 1, &n) < 0)
			return -1;
		free(res->quarantine);
		res->quarantine = xstrndup(s[0], 200);
		return 0;
	case SMFIR_REPLBODY:
		if (!res->body_replaced) {
			buf_reset(&res->body);
			res->body_replaced = true;
		}
		if (buf_append(&res->body, r->data, r->len) < 0) {
			*why = "replaced body too large";
			return -1;
		}
		return 0;
	default:
		*why = "unexpected reply at end of body";
		return -1;
	}
}

static void conn_on_read(struct bufferevent *bev, void *arg)
{
	struct milter_conn *e = arg;
	struct milter_sess *ms = e->ms;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t avail = evbuffer_get_length(in), used;
		if (avail < 5)
			break;
		unsigned char *p = evbuffer_pullup(in, 5);
		struct milter_reply r;
		const char *err = NULL;
		int rc = milter_reply_decode(p, 5, &r, &used, &err);
		if (rc < 0) {
			conn_fail(e, err);
			return;
		}
		uint32_t flen =
		    (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (avail < 4 + (size_t)flen)
			break;
		p = evbuffer_pullup(in, (ev_ssize_t)(4 + (size_t)flen));
		if (milter_reply_decode(p, 4 + (size_t)flen, &r, &used, &err) != 1) {
			conn_fail(e, err != NULL ? err : "bad frame");
			return;
		}
		/* the answer to OPTNEG may come before its turn (opened
		 * ahead at CONNECT); anything else only in its turn */
		bool negotiating =
		    e->want_reply && e->step == STEP_CONNECT && e->actions == 0 && e->protocol == 0;
		if ((!conn_current(e) && !negotiating) ||
		    (!e->want_reply && r.cmd != SMFIR_PROGRESS)) {
			conn_fail(e, "reply not asked for");
			return;
		}
		log_debug("event=milter_reply sid=%s milter=%s cmd=%c len=%zu", ms->sid,
		          e->conf->name, r.cmd >= 0x21 && r.cmd < 0x7f ? r.cmd : '?', r.len);
		bool go = conn_reply(e, &r);
		if (e->bev == NULL)
			return; /* failed: closed */
		evbuffer_drain(in, used);
		if (!go)
			return;
	}
	conn_pump(e);
}

static void conn_on_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct milter_conn *e = arg;
	if (!e->want_reply && conn_current(e))
		conn_pump(e);
}

static void conn_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct milter_conn *e = arg;
	if (what & BEV_EVENT_CONNECTED) {
		conn_pump(e);
		return;
	}
	conn_fail(e, what & BEV_EVENT_EOF ? "connection closed" : "connection failed");
}

/* "unix:/path", "inet:host:port" (host an IPv4 or [IPv6] address). */
static int eod_sockaddr(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
	memset(ss, 0, sizeof(*ss));
	if (strncmp(spec, "unix:", 5) == 0) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		if (strlen(spec + 5) >= sizeof(un->sun_path))
			return -1;
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, spec + 5, strlen(spec + 5) + 1);
		*len = sizeof(*un);
		return 0;
	}
	if (strncmp(spec, "inet:", 5) != 0)
		return -1;
	int slen = (int)sizeof(*ss);
	if (evutil_parse_sockaddr_port(spec + 5, (struct sockaddr *)ss, &slen) < 0)
		return -1;
	*len = (socklen_t)slen;
	return 0;
}

static void conn_open(struct milter_conn *e)
{
	struct sockaddr_storage ss;
	socklen_t len;
	e->step = STEP_OPTNEG;
	e->want_reply = false;
	e->actions = e->protocol = 0;
	if (eod_sockaddr(e->conf->socket, &ss, &len) < 0) {
		conn_fail(e, "bad socket address");
		return;
	}
	e->bev = bufferevent_socket_new(e->ms->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(e->bev, conn_on_read, conn_on_write, conn_on_event, e);
	bufferevent_enable(e->bev, EV_READ | EV_WRITE);
	conn_arm(e, e->conf->connect_timeout);
	if (bufferevent_socket_connect(e->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		conn_fail(e, strerror(errno));
		return;
	}
}

/* The run's next step, from the loop: start the current milter's part of
 * the stage, skip it, or call back. */
static void sess_on_defer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct milter_sess *ms = arg;
	while (ms->running && ms->cur < ms->last && ms->res->verdict == MILTER_ACCEPT) {
		struct milter_conn *e = &ms->c[ms->cur];
		if (e->accepted_sess || (e->accepted_tx && ms->stage > MILTER_STAGE_MAIL)) {
			ms->cur++;
			continue;
		}
		if (e->dead || (ms->stage != MILTER_STAGE_CONNECT && e->bev == NULL)) {
			e->dead = true;
			if (e->conf->failure == CONF_MILTER_ACCEPT) {
				ms->cur++;
				continue;
			}
			sess_failure(ms, e);
			return;
		}
		if (ms->stage == MILTER_STAGE_EOB && !ms->hdrs_ok) {
			conn_fail(e, "header section unreadable");
			return;
		}
		ms->cur_started = true;
		switch (ms->stage) {
		case MILTER_STAGE_CONNECT:
			e->end = STEP_HELO;
			if (e->bev == NULL) {
				conn_open(e); /* OPTNEG, CONNECT once connected */
				return;
			}
			/* opened ahead: OPTNEG sent, maybe not answered yet */
			conn_pump(e);
			return;
		case MILTER_STAGE_HELO:
			e->step = STEP_HELO;
			e->end = STEP_MAIL;
			break;
		case MILTER_STAGE_MAIL:
			e->step = STEP_MAIL;
			e->end = STEP_RCPT;
			break;
		case MILTER_STAGE_RCPT:
			e->step = STEP_RCPT;
			e->end = STEP_DATA;
			break;
		case MILTER_STAGE_EOB:
			e->step = STEP_DATA;
			e->end = STEP_DONE;
			break;
		}
		e->want_reply = false;
		conn_pump(e);
		return;
	}
	if (!ms->running)
		return;
	if (ms->cur < ms->last && ms->res->verdict == MILTER_ACCEPT)
		return;
	struct milter_result *r = ms->res;
	ms->res = NULL;
	ms->running = false;
	ms->cb(r, ms->arg);
}

struct milter_sess *milter_sess_new(struct event_base *base, const struct conf_milter *milters,
                                    size_t n, const char *sid)
{
	struct milter_sess *ms = xcalloc(1, sizeof(*ms));
	ms->base = base;
	ms->n = n;
	ms->c = xcalloc(n + 1, sizeof(*ms->c));
	snprintf(ms->sid, sizeof(ms->sid), "%s", sid);
	for (size_t i = 0; i < n; i++) {
		ms->c[i].ms = ms;
		ms->c[i].conf = &milters[i];
		ms->c[i].timer = evtimer_new(base, conn_on_timer, &ms->c[i]);
		ms->c[i].step = STEP_DONE;
	}
	ms->defer = event_new(base, -1, 0, sess_on_defer, ms);
	return ms;
}

int milter_sess_run(struct milter_sess *ms, enum milter_stage stage, size_t first, size_t last,
                    const struct milter_info *info, const struct milter_content *content,
                    uint64_t max_body, milter_done_fn *cb, void *arg)
{
	if (ms->running)
		return -1;
	if (last > ms->n)
		last = ms->n;
	ms->running = true;
	ms->stage = stage;
	ms->cur = first;
	ms->last = last;
	ms->cur_started = false;
	ms->info = info;
	ms->cb = cb;
	ms->arg = arg;
	ms->max_body = max_body;
	ms->res = xcalloc(1, sizeof(*ms->res));
	ms->res->verdict = MILTER_ACCEPT;
	buf_init(&ms->res->body, max_body);
	if (stage == MILTER_STAGE_MAIL) {
		/* a new transaction: what the last one left open is aborted */
		milter_sess_abort(ms);
	}
	if (stage == MILTER_STAGE_EOB && content != NULL) {
		ms->content = *content;
		uint64_t total = eod_total(ms);
		size_t want = total < MILTER_HDR_READ_MAX ? (size_t)total : MILTER_HDR_READ_MAX;
		unsigned char *p = xmalloc(want + 1);
		size_t got = eod_read(ms, 0, p, want);
		ms->hdrs_ok = milter_hdrs_parse(&ms->res->hdrs, p, got, total) == 0;
		free(p);
	} else {
		memset(&ms->content, 0, sizeof(ms->content));
		ms->content.fd = -1;
		ms->hdrs_ok = false;
	}
	if (stage == MILTER_STAGE_CONNECT) {
		/* the milters after the first connect and negotiate now, in
		 * parallel, each waiting for its turn (a failure here is
		 * taken in its turn) */
		for (size_t i = first + 1; i < last; i++) {
			struct milter_conn *e = &ms->c[i];
			if (e->bev != NULL || e->dead)
				continue;
			e->end = STEP_CONNECT;
			conn_open(e);
		}
	}
	event_active(ms->defer, 0, 0);
	return 0;
}

void milter_sess_cancel(struct milter_sess *ms)
{
	if (ms == NULL || !ms->running)
		return;
	if (ms->cur < ms->last && ms->cur_started) {
		struct milter_conn *e = &ms->c[ms->cur];
		if (e->bev != NULL) {
			/* out of step with us now: closed, failed from now on */
			conn_close(e, false);
			e->dead = true;
		}
	}
	ms->running = false;
	event_del(ms->defer);
	milter_result_free(&ms->res);
}

void milter_sess_abort(struct milter_sess *ms)
{
	if (ms == NULL)
		return;
	for (size_t i = 0; i < ms->n; i++) {
		struct milter_conn *e = &ms->c[i];
		e->accepted_tx = false;
		if (!e->tx_open || e->bev == NULL || e->dead)
			continue;
		if (ms->running && ms->cur == i && ms->cur_started)
			continue;
		struct buf b;
		buf_init(&b, 64);
		milter_frame_put(&b, SMFIC_ABORT, NULL, 0);
		if (bufferevent_write(e->bev, b.data, b.len) < 0)
			conn_fail(e, "write failed");
		buf_free(&b);
		e->tx_open = false;
	}
	ms->discard_tx = false;
}

bool milter_sess_discarding(const struct milter_sess *ms)
{
	return ms != NULL && (ms->discard_sess || ms->discard_tx);
}

bool milter_sess_discarding_session(const struct milter_sess *ms)
{
	return ms != NULL && ms->discard_sess;
}

const char *milter_sess_discarder(const struct milter_sess *ms)
{
	return ms != NULL ? ms->discarder : "";
}

size_t milter_sess_count(const struct milter_sess *ms)
{
	return ms != NULL ? ms->n : 0;
}

bool milter_sess_running(const struct milter_sess *ms)
{
	return ms != NULL && ms->running;
}

void milter_sess_free(struct milter_sess **msp)
{
	struct milter_sess *ms = *msp;
	if (ms == NULL)
		return;
	*msp = NULL;
	milter_sess_cancel(ms);
	for (size_t i = 0; i < ms->n; i++) {
		conn_close(&ms->c[i], !ms->c[i].dead);
		if (ms->c[i].timer != NULL)
			event_free(ms->c[i].timer);
	}
	free(ms->c);
	if (ms->defer != NULL)
		event_free(ms->defer);
	free(ms);
}

void milter_result_free(struct milter_result **rp)
{
	struct milter_result *r = *rp;
	if (r == NULL)
		return;
	*rp = NULL;
	free(r->quarantine);
	free(r->new_sender);
	for (size_t i = 0; i < r->n_add; i++)
		free(r->add_rcpts[i]);
	free(r->add_rcpts);
	for (size_t i = 0; i < r->n_del; i++)
		free(r->del_rcpts[i]);
	free(r->del_rcpts);
	for (size_t i = 0; i < r->n_ops; i++) {
		free(r->ops[i].name);
		free(r->ops[i].value);
	}
	free(r->ops);
	buf_free(&r->body);
	milter_hdrs_free(&r->hdrs);
	free(r);
}
