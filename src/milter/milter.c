/* milter.c — smtpd's milter client at the end of data (milter.h). One
 * connection per milter per message, on the loop with a bufferevent; the
 * conversation is generated step by step, a body chunk only when the
 * previous output has drained below MILTER_OUT_HIGH, so a milter that does
 * not read holds at most that much of the message in memory. Every wait
 * has a timer: connect, each command's reply, the end of body (progress
 * replies restart it). Runs in smtpd; replies are hostile (milter_proto.c
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

struct milter_eod {
	struct event_base *base;
	const struct conf_milter *milters;
	size_t n, cur;
	const struct milter_info *info;
	struct milter_content content;
	uint64_t max_body;
	const char *sid;
	milter_done_fn *cb;
	void *arg;
	struct milter_result *res;
	bool hdrs_ok;
	/* the current milter */
	struct bufferevent *bev;
	struct event *timer;
	struct event *defer; /* the callback, or the next milter, from the loop */
	enum milter_step step;
	size_t rcpt_i, hdr_i;
	uint64_t body_pos;
	bool want_reply;
	bool finished; /* the current milter decided (or failed) */
	uint32_t actions, protocol;
};

static void eod_next_milter(struct milter_eod *e);
static void eod_pump(struct milter_eod *e);

static const struct conf_milter *eod_conf(const struct milter_eod *e)
{
	return &e->milters[e->cur];
}

static void eod_close(struct milter_eod *e)
{
	if (e->bev != NULL)
		bufferevent_free(e->bev);
	e->bev = NULL;
	if (e->timer != NULL)
		event_del(e->timer);
}

static void eod_arm(struct milter_eod *e, uint64_t ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_add(e->timer, &tv);
}

static void eod_on_defer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct milter_eod *e = arg;
	if (e->cur < e->n && !e->finished) {
		eod_next_milter(e); /* start (or restart after a failure) */
		return;
	}
	e->cur++;
	if (e->cur < e->n && e->res->verdict == MILTER_ACCEPT) {
		e->finished = false;
		eod_next_milter(e);
		return;
	}
	struct milter_result *r = e->res;
	e->res = NULL;
	milter_done_fn *cb = e->cb;
	void *arg2 = e->arg;
	milter_eod_cancel(&e);
	cb(r, arg2);
}

/* This milter is done: the next from the loop. */
static void eod_milter_done(struct milter_eod *e)
{
	if (e->bev != NULL && e->step != STEP_DONE) {
		/* polite end; the close follows at once */
		struct buf b;
		buf_init(&b, 64);
		milter_frame_put(&b, SMFIC_QUIT, NULL, 0);
		bufferevent_write(e->bev, b.data, b.len);
		buf_free(&b);
	}
	e->step = STEP_DONE;
	e->finished = true;
	eod_close(e);
	event_active(e->defer, 0, 0);
}

static void eod_fail(struct milter_eod *e, const char *why)
{
	const struct conf_milter *m = eod_conf(e);
	log_warn("event=milter_failed sid=%s qid=%s milter=%s reason=\"%s\" failure=%s", e->sid,
	         e->info->qid, m->name, why,
	         m->failure == CONF_MILTER_TEMPFAIL ? "tempfail" : "accept");
	if (m->failure == CONF_MILTER_TEMPFAIL) {
		e->res->verdict = MILTER_TEMPFAIL;
		e->res->code = 451;
		snprintf(e->res->enh, sizeof(e->res->enh), "4.7.1");
		snprintf(e->res->text, sizeof(e->res->text),
		         "Service unavailable, try again later");
		snprintf(e->res->milter, sizeof(e->res->milter), "%s", m->name);
	}
	e->step = STEP_DONE;
	eod_milter_done(e);
}

static void eod_verdict(struct milter_eod *e, enum milter_verdict v, int code, const char *enh,
                        const char *text)
{
	struct milter_result *r = e->res;
	r->verdict = v;
	r->code = code;
	snprintf(r->enh, sizeof(r->enh), "%s", enh);
	snprintf(r->text, sizeof(r->text), "%s", text);
	snprintf(r->milter, sizeof(r->milter), "%s", eod_conf(e)->name);
	eod_milter_done(e);
}

static void eod_on_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	eod_fail(arg, "timeout");
}

static int eod_send(struct milter_eod *e, struct buf *b)
{
	return bufferevent_write(e->bev, b->data, b->len);
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
static size_t eod_read(const struct milter_eod *e, uint64_t off, unsigned char *p, size_t len)
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

static uint64_t eod_total(const struct milter_eod *e)
{
	return e->content.file_len + e->content.tail_len;
}

/* The frames of one step into b; sets want_reply. */
static void eod_step(struct milter_eod *e, struct buf *b)
{
	const struct milter_info *in = e->info;
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
		e->rcpt_i = 0;
		return;
	}
	case STEP_RCPT:
		if (e->rcpt_i >= in->nrcpts) {
			e->step = STEP_DATA;
			return;
		}
		if (!(pf & SMFIP_NORCPT)) {
			const char *rc = in->rcpts[e->rcpt_i];
			const char *kv[] = {"{rcpt_addr}", rc};
			snprintf(addr, sizeof(addr), "<%s>", rc);
			const char *s[] = {addr};
			eod_macro(b, SMFIC_RCPT, kv, 2);
			milter_frame_put_strs(b, SMFIC_RCPT, s, 1);
			e->want_reply = !(pf & SMFIP_NR_RCPT);
		}
		e->rcpt_i++;
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
		const struct milter_hdrs *h = &e->res->hdrs;
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
		e->body_pos = e->res->hdrs.body_off;
		return;
	case STEP_BODY: {
		uint64_t total = eod_total(e);
		if (e->body_pos >= total || (pf & SMFIP_NOBODY)) {
			e->step = STEP_EOB;
			return;
		}
		unsigned char *chunk = xmalloc(MILTER_CHUNK);
		size_t n = eod_read(e, e->body_pos, chunk, MILTER_CHUNK);
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

/* Send steps until one waits for a reply, or the output is full. */
static void eod_pump(struct milter_eod *e)
{
	struct buf b;
	buf_init(&b, 0);
	while (e->bev != NULL && !e->want_reply && e->step != STEP_DONE &&
	       evbuffer_get_length(bufferevent_get_output(e->bev)) < MILTER_OUT_HIGH) {
		buf_reset(&b);
		eod_step(e, &b);
		if (b.len > 0 && eod_send(e, &b) < 0) {
			buf_free(&b);
			eod_fail(e, "write failed");
			return;
		}
	}
	buf_free(&b);
	if (e->bev != NULL && e->want_reply)
		eod_arm(e, e->step == STEP_DONE ? eod_conf(e)->eob_timeout
		                                : eod_conf(e)->command_timeout);
	else if (e->bev != NULL)
		eod_arm(e, eod_conf(e)->command_timeout); /* the milter must read */
}

static void eod_add_op(struct milter_eod *e, enum milter_hdr_op_kind k, uint32_t idx,
                       const char *name, const char *value)
{
	struct milter_result *r = e->res;
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
static int eod_modify(struct milter_eod *e, const struct milter_reply *r, const char **why)
{
	struct milter_result *res = e->res;
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

/* One reply; false when the milter is finished with (e may be done). */
static bool eod_reply(struct milter_eod *e, const struct milter_reply *r)
{
	char enh[16], text[400];
	int code;
	const char *why = "unexpected reply";
	bool at_eob = e->step == STEP_DONE;
	if (e->step == STEP_CONNECT && e->actions == 0 && e->protocol == 0 &&
	    r->cmd == SMFIC_OPTNEG) {
		uint32_t v, a, p;
		if (milter_reply_optneg(r, &v, &a, &p) < 0 || v < 2 || v > MILTER_VERSION) {
			eod_fail(e, "option negotiation failed");
			return false;
		}
		e->actions = a & MILTER_ACTIONS_OFFERED;
		e->protocol = p & MILTER_PROTOCOL_OFFERED;
		if (e->protocol == 0)
			e->protocol = 0x80000000u; /* negotiated: nothing skipped */
		e->want_reply = false;
		return true;
	}
	switch (r->cmd) {
	case SMFIR_CONTINUE:
		if (at_eob)
			break; /* continue at EOB means accept */
		e->want_reply = false;
		return true;
	case SMFIR_PROGRESS:
		eod_arm(e, eod_conf(e)->eob_timeout);
		return true;
	case SMFIR_SKIP:
		if (e->step == STEP_BODY) {
			e->step = STEP_EOB;
			e->want_reply = false;
			return true;
		}
		eod_fail(e, why);
		return false;
	case SMFIR_ACCEPT:
		break;
	case SMFIR_REJECT:
		eod_verdict(e, MILTER_REJECT, 550, "5.7.1", "Command rejected");
		return false;
	case SMFIR_TEMPFAIL:
		eod_verdict(e, MILTER_TEMPFAIL, 451, "4.7.1",
		            "Service unavailable - try again later");
		return false;
	case SMFIR_DISCARD:
		eod_verdict(e, MILTER_DISCARD, 250, "2.0.0", "");
		return false;
	case SMFIR_REPLYCODE:
		if (milter_reply_code(r, &code, enh, sizeof(enh), text, sizeof(text)) < 0) {
			eod_fail(e, "malformed reply code");
			return false;
		}
		eod_verdict(e, code >= 500 ? MILTER_REJECT : MILTER_TEMPFAIL, code, enh,
		            text[0] != '\0' ? text : "Command rejected");
		return false;
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		eod_fail(e, "milter shut down");
		return false;
	default:
		if (at_eob) {
			if (eod_modify(e, r, &why) == 0)
				return true;
		}
		eod_fail(e, why);
		return false;
	}
	/* accept: at end of body, the modifications stand; before it, the
	 * milter wants to see no more of this message (no modifications) */
	e->res->verdict = MILTER_ACCEPT;
	eod_milter_done(e);
	return false;
}

static void eod_on_read(struct bufferevent *bev, void *arg)
{
	struct milter_eod *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t avail = evbuffer_get_length(in), used;
		if (avail < 5)
			break;
		unsigned char *p = evbuffer_pullup(in, 5);
		struct milter_reply r;
		const char *err = NULL;
		int rc = milter_reply_decode(p, avail < 5 ? avail : 5, &r, &used, &err);
		if (rc < 0) {
			eod_fail(e, err);
			return;
		}
		uint32_t flen =
		    (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
		if (avail < 4 + (size_t)flen)
			break;
		p = evbuffer_pullup(in, (ev_ssize_t)(4 + (size_t)flen));
		if (milter_reply_decode(p, 4 + (size_t)flen, &r, &used, &err) != 1) {
			eod_fail(e, err != NULL ? err : "bad frame");
			return;
		}
		if (!e->want_reply && r.cmd != SMFIR_PROGRESS) {
			eod_fail(e, "reply not asked for");
			return;
		}
		log_debug("event=milter_reply sid=%s milter=%s cmd=%c len=%zu", e->sid,
		          eod_conf(e)->name, r.cmd >= 0x21 && r.cmd < 0x7f ? r.cmd : '?', r.len);
		bool go = eod_reply(e, &r);
		if (!go)
			return; /* bev freed */
		evbuffer_drain(in, used);
	}
	eod_pump(e);
}

static void eod_on_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct milter_eod *e = arg;
	if (!e->want_reply)
		eod_pump(e);
}

static void eod_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct milter_eod *e = arg;
	if (what & BEV_EVENT_CONNECTED) {
		eod_pump(e);
		return;
	}
	eod_fail(e, what & BEV_EVENT_EOF ? "connection closed" : "connection failed");
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

static void eod_next_milter(struct milter_eod *e)
{
	const struct conf_milter *m = eod_conf(e);
	struct sockaddr_storage ss;
	socklen_t len;
	e->step = STEP_OPTNEG;
	e->want_reply = false;
	e->actions = e->protocol = 0;
	e->finished = false;
	if (!e->hdrs_ok) {
		eod_fail(e, "header section unreadable");
		return;
	}
	if (eod_sockaddr(m->socket, &ss, &len) < 0) {
		eod_fail(e, "bad socket address");
		return;
	}
	e->bev = bufferevent_socket_new(e->base, -1, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(e->bev, eod_on_read, eod_on_write, eod_on_event, e);
	bufferevent_enable(e->bev, EV_READ | EV_WRITE);
	eod_arm(e, m->connect_timeout);
	if (bufferevent_socket_connect(e->bev, (struct sockaddr *)&ss, (int)len) < 0) {
		eod_fail(e, strerror(errno));
		return;
	}
}

struct milter_eod *milter_eod_start(struct event_base *base, const struct conf_milter *milters,
                                    size_t n, const struct milter_info *info,
                                    const struct milter_content *content, uint64_t max_body,
                                    const char *sid, milter_done_fn *cb, void *arg)
{
	struct milter_eod *e = xcalloc(1, sizeof(*e));
	e->base = base;
	e->milters = milters;
	e->n = n;
	e->info = info;
	e->content = *content;
	e->max_body = max_body;
	e->sid = sid;
	e->cb = cb;
	e->arg = arg;
	e->res = xcalloc(1, sizeof(*e->res));
	e->res->verdict = MILTER_ACCEPT;
	buf_init(&e->res->body, max_body);
	e->timer = evtimer_new(base, eod_on_timer, e);
	e->defer = event_new(base, -1, 0, eod_on_defer, e);
	uint64_t total = eod_total(e);
	size_t want = total < MILTER_HDR_READ_MAX ? (size_t)total : MILTER_HDR_READ_MAX;
	unsigned char *p = xmalloc(want + 1);
	size_t got = eod_read(e, 0, p, want);
	e->hdrs_ok = milter_hdrs_parse(&e->res->hdrs, p, got, total) == 0;
	free(p);
	event_active(e->defer, 0, 0);
	return e;
}

void milter_eod_cancel(struct milter_eod **ep)
{
	struct milter_eod *e = *ep;
	if (e == NULL)
		return;
	*ep = NULL;
	eod_close(e);
	if (e->timer != NULL)
		event_free(e->timer);
	if (e->defer != NULL)
		event_free(e->defer);
	milter_result_free(&e->res);
	free(e);
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
