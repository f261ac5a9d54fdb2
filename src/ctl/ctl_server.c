/* ctl_server.c — the daemon side of the control socket (`hikyaku queue`).
 * Runs in the hikyaku process on the main event loop, as the service user.
 *
 * <spool_dir>/control.sock is a unix stream socket, mode 0600 in the
 * spool directory, and every peer's credentials are checked
 * (SO_PEERCRED: root or our own uid), so only the administrator and the
 * daemon's user can talk to it. Even so the request octets are treated as
 * hostile: one bounded frame (CTL_REQ_MAX) per connection through the strict
 * decoder, a timeout on every connection, a cap on connections. The answer
 * is a stream of frames (ctl.h); the connection closes once it is written.
 * The queue work itself is qmgr_ctl.c's. */
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "mail/envelope.h"
#include "queue/qmgr.h"
#include "queue/dstats.h"
#include "queue/analytics.h"
#include "queue/qmgr_ctl.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define CTL_MAX_CONNS 32
#define CTL_READ_TIMEOUT_S 10
#define CTL_WRITE_TIMEOUT_S 60
#define CTL_RCPTS_LIST 100                     /* recipient addresses per message in a list */
#define CTL_RCPTS_SHOW 1000                    /* ... and in show */
#define CTL_LIST_BYTES_MAX (64u * 1024 * 1024) /* one answer, buffered at once */
#define CTL_STATS_DOMAINS 100                  /* STATS: the busiest domains */

struct ctl_conn {
	struct ctl_server *srv;
	struct bufferevent *bev;
	struct ctl_conn *prev, *next;
	uint8_t op;   /* the request's type, for the answer's shape */
	bool busy;    /* the request is with qmgr_ctl */
	bool dead;    /* closed while busy: freed when the answer comes */
	bool closing; /* the answer is queued: close once written */
	struct analytics_req *areq; /* an ANALYTICS query in flight (busy) */
	bool persistent; /* the http process's (ctl_server_add_peer): one
	                    request after another, never closed by us */
};

struct ctl_server {
	struct event_base *base;
	struct qmgr *q;
	struct qmgr_ctl *qc;
	struct evconnlistener *lev;
	char path[108];
	struct ctl_conn *conns;
	size_t n_conns;
};

static void ctl_conn_free(struct ctl_conn *c)
{
	struct ctl_server *s = c->srv;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->n_conns--;
	analytics_cancel(c->areq);
	if (c->bev != NULL)
		bufferevent_free(c->bev);
	free(c);
}

/* Close now, or as soon as qmgr_ctl answers. */
static void ctl_conn_close(struct ctl_conn *c)
{
	if (c->busy && c->areq == NULL) {
		c->dead = true;
		if (c->bev != NULL) {
			bufferevent_free(c->bev);
			c->bev = NULL;
		}
		return;
	}
	ctl_conn_free(c);
}

static void ctl_conn_on_write(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		ctl_conn_close(c);
}

/* Queue one complete frame on the connection; a frame that would be too
 * large (only a bug could make one) becomes an ERROR. */
static void ctl_conn_send(struct ctl_conn *c, struct buf *b, size_t start)
{
	if (ctl_frame_end(b, start, CTL_RESP_MAX) < 0) {
		size_t s2 = ctl_frame_begin(b, CTL_T_ERROR);
		(void)ctl_frame_add_str(b, CTL_F_MESSAGE, "answer too large");
		(void)ctl_frame_end(b, s2, CTL_RESP_MAX);
	}
	bufferevent_write(c->bev, b->data, b->len);
	buf_reset(b);
}

static void ctl_conn_on_read(struct bufferevent *bev, void *arg);

static void ctl_conn_finish(struct ctl_conn *c)
{
	if (c->persistent) {
		/* The next request, perhaps already buffered. */
		bufferevent_enable(c->bev, EV_READ);
		ctl_conn_on_read(c->bev, c);
		return;
	}
	c->closing = true;
	ctl_conn_on_write(c->bev, c);
}

static void ctl_conn_answer_simple(struct ctl_conn *c, uint8_t type, const char *msg,
                                   uint64_t count)
{
	struct buf b;
	buf_init(&b, CTL_RESP_MAX);
	size_t start = ctl_frame_begin(&b, type);
	(void)ctl_frame_add_str(&b, CTL_F_MESSAGE, msg);
	if (type == CTL_T_OK)
		(void)ctl_frame_add_u64(&b, CTL_F_COUNT, count);
	ctl_conn_send(c, &b, start);
	buf_free(&b);
	ctl_conn_finish(c);
}

static void ctl_item_rcpts(struct buf *b, const struct envelope *e, bool all, size_t max)
{
	size_t shown = 0, omitted = 0;
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct envelope_rcpt *r = &e->rcpts[i];
		if (!all && r->done)
			continue;
		if (shown >= max) {
			omitted++;
			continue;
		}
		shown++;
		(void)ctl_frame_add_str(b, CTL_F_RCPT, r->addr);
		(void)ctl_frame_add_u64(b, CTL_F_RCPT_DONE, r->done);
		if (all) {
			(void)ctl_frame_add_u64(b, CTL_F_RCPT_NOTIFY, r->notify);
			if (r->orcpt != NULL)
				(void)ctl_frame_add_str(b, CTL_F_RCPT_ORCPT, r->orcpt);
		}
	}
	if (omitted > 0)
		(void)ctl_frame_add_u64(b, CTL_F_OMITTED, omitted);
}

static void ctl_item_encode(struct buf *b, const struct qmgr_ctl_item *it, bool show)
{
	const struct envelope *e = &it->env;
	(void)ctl_frame_add_str(b, CTL_F_QID, e->qid);
	(void)ctl_frame_add_u64(b, CTL_F_ARRIVAL, e->arrival_us);
	(void)ctl_frame_add_u64(b, CTL_F_SIZE, e->size);
	(void)ctl_frame_add_str(b, CTL_F_SENDER, e->sender);
	(void)ctl_frame_add_str(b, CTL_F_STATE, it->state);
	(void)ctl_frame_add_u64(b, CTL_F_NEXT_TRY, it->next_try_us);
	(void)ctl_frame_add_u64(b, CTL_F_ATTEMPTS, e->attempts);
	(void)ctl_frame_add_u64(b, CTL_F_FLAGS, e->sched_flags);
	(void)ctl_frame_add_u64(b, CTL_F_NRCPTS, e->nrcpts);
	(void)ctl_frame_add_u64(b, CTL_F_NPENDING, envelope_pending(e));
	if (it->last_error[0] != '\0')
		(void)ctl_frame_add_str(b, CTL_F_LAST_ERROR, it->last_error);
	if (it->action != NULL)
		(void)ctl_frame_add_str(b, CTL_F_ACTION, it->action);
	ctl_item_rcpts(b, e, show, show ? CTL_RCPTS_SHOW : CTL_RCPTS_LIST);
	if (!show)
		return;
	if (e->envid != NULL)
		(void)ctl_frame_add_str(b, CTL_F_ENVID, e->envid);
	(void)ctl_frame_add_u64(b, CTL_F_RET, e->ret);
	(void)ctl_frame_add_u64(b, CTL_F_BODY, e->body);
	(void)ctl_frame_add_u64(b, CTL_F_SMTPUTF8, e->smtputf8);
	if (e->client_addr != NULL)
		(void)ctl_frame_add_str(b, CTL_F_CLIENT, e->client_addr);
	if (e->client_helo != NULL)
		(void)ctl_frame_add_str(b, CTL_F_HELO, e->client_helo);
	(void)ctl_frame_add(b, CTL_F_HEADERS, it->headers.data, it->headers.len);
}

static void ctl_conn_on_result(const struct qmgr_ctl_result *r, void *arg)
{
	struct ctl_conn *c = arg;
	c->busy = false;
	if (c->dead) {
		ctl_conn_free(c);
		return;
	}
	if (r->status < 0) {
		ctl_conn_answer_simple(c, CTL_T_ERROR, r->message, 0);
		return;
	}
	if (c->op != CTL_T_LIST && c->op != CTL_T_SHOW) {
		ctl_conn_answer_simple(c, CTL_T_OK, r->message, r->count);
		return;
	}
	struct buf b;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t i;
	buf_init(&b, CTL_RESP_MAX);
	for (i = 0; i < r->n_items && evbuffer_get_length(out) < CTL_LIST_BYTES_MAX; i++) {
		size_t start = ctl_frame_begin(&b, CTL_T_ITEM);
		ctl_item_encode(&b, &r->items[i], c->op == CTL_T_SHOW);
		ctl_conn_send(c, &b, start);
	}
	size_t start = ctl_frame_begin(&b, CTL_T_END);
	(void)ctl_frame_add_str(&b, CTL_F_MESSAGE, r->message);
	(void)ctl_frame_add_u64(&b, CTL_F_COUNT, i);
	if (i < r->n_items)
		(void)ctl_frame_add_u64(&b, CTL_F_OMITTED, r->n_items - i);
	ctl_conn_send(c, &b, start);
	buf_free(&b);
	ctl_conn_finish(c);
}

/* The request's one argument: a qid or a domain, copied NUL-terminated. */
static int ctl_request_arg(const struct ctl_frame *f, uint8_t *tag_r, char *out, size_t outlen)
{
	struct ctl_field fld;
	size_t off = 0;
	int n = 0;
	*tag_r = 0;
	out[0] = '\0';
	while (ctl_field_next(f, &off, &fld)) {
		if ((fld.tag != CTL_F_QID && fld.tag != CTL_F_DOMAIN) || fld.len >= outlen ||
		    ++n > 1)
			return -1;
		memcpy(out, fld.p, fld.len);
		out[fld.len] = '\0';
		*tag_r = fld.tag;
	}
	return 0;
}

/* STATS: answered from the queue's table at once (dstats.h), the top
 * CTL_STATS_DOMAINS domains. */
static void ctl_conn_stats(struct ctl_conn *c)
{
	struct dstats_row *rows = NULL;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	size_t n = dstats_snapshot(qmgr_dstats(c->srv->q),
	                           (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec,
	                           CTL_STATS_DOMAINS, &rows);
	struct buf b;
	buf_init(&b, CTL_RESP_MAX);
	for (size_t i = 0; i < n; i++) {
		size_t start = ctl_frame_begin(&b, CTL_T_DSTAT);
		(void)ctl_frame_add_str(&b, CTL_F_DOMAIN, rows[i].domain);
		(void)ctl_frame_add_u64(&b, CTL_F_HOUR, rows[i].hour_us);
		(void)ctl_frame_add_u64(&b, CTL_F_SENT, rows[i].sent);
		(void)ctl_frame_add_u64(&b, CTL_F_DEFERRED, rows[i].deferred);
		(void)ctl_frame_add_u64(&b, CTL_F_BOUNCED, rows[i].bounced);
		(void)ctl_frame_add_u64(&b, CTL_F_MEDIAN_MS, rows[i].median_delay_ms);
		ctl_conn_send(c, &b, start);
	}
	size_t start = ctl_frame_begin(&b, CTL_T_END);
	(void)ctl_frame_add_str(&b, CTL_F_MESSAGE, "statistics");
	(void)ctl_frame_add_u64(&b, CTL_F_COUNT, n);
	ctl_conn_send(c, &b, start);
	buf_free(&b);
	free(rows);
	ctl_conn_finish(c);
}

/* ANALYTICS: a query on the analytics thread; the answer is the JSON
 * document cut into AJSON frames, then END. */
static void ctl_conn_on_analytics(int rc, const struct buf *json, const char *error, void *arg)
{
	struct ctl_conn *c = arg;
	c->busy = false;
	c->areq = NULL;
	if (rc < 0) {
		ctl_conn_answer_simple(c, CTL_T_ERROR, error, 0);
		return;
	}
	struct buf b;
	buf_init(&b, CTL_RESP_MAX);
	size_t piece = CTL_RESP_MAX - CTL_HDR_LEN - CTL_FIELD_HDR_LEN;
	for (size_t off = 0; off < json->len; off += piece) {
		size_t n = json->len - off < piece ? json->len - off : piece;
		size_t start = ctl_frame_begin(&b, CTL_T_AJSON);
		(void)ctl_frame_add(&b, CTL_F_JSON, json->data + off, n);
		ctl_conn_send(c, &b, start);
	}
	size_t start = ctl_frame_begin(&b, CTL_T_END);
	(void)ctl_frame_add_str(&b, CTL_F_MESSAGE, "analytics");
	ctl_conn_send(c, &b, start);
	buf_free(&b);
	ctl_conn_finish(c);
}

static void ctl_conn_analytics(struct ctl_conn *c, const struct ctl_frame *f)
{
	struct ctl_analytics_req req;
	struct astore_query q;
	const char *error = NULL;
	struct analytics *an = qmgr_analytics(c->srv->q);
	if (ctl_analytics_decode(f, &req, &error) < 0) {
		ctl_conn_answer_simple(c, CTL_T_ERROR, error, 0);
		return;
	}
	int kind = astore_kind_parse(req.kind);
	if (kind < 0 || an == NULL) {
		ctl_conn_answer_simple(c, CTL_T_ERROR,
		                       kind < 0 ? "unknown analytics kind"
		                                : "analytics are off (analytics.enabled, or the "
		                                  "store could not be opened: see the log)",
		                       0);
		return;
	}
	memset(&q, 0, sizeof(q));
	q.kind = (enum astore_kind)kind;
	q.from_h = req.from / 3600;
	q.to_h = req.to / 3600;
	snprintf(q.domain, sizeof(q.domain), "%s", req.domain);
	snprintf(q.sender, sizeof(q.sender), "%s", req.sender);
	c->op = f->type;
	c->busy = true;
	bufferevent_disable(c->bev, EV_READ);
	c->areq = analytics_query(an, &q, ctl_conn_on_analytics, c);
}

static void ctl_conn_request(struct ctl_conn *c, const struct ctl_frame *f)
{
	char arg[CTL_ARG_MAX + 1];
	uint8_t tag;
	enum qmgr_ctl_op op;
	if (f->type == CTL_T_ANALYTICS) {
		ctl_conn_analytics(c, f);
		return;
	}
	if (!ctl_type_is_request(f->type) || ctl_request_arg(f, &tag, arg, sizeof(arg)) < 0) {
		ctl_conn_answer_simple(c, CTL_T_ERROR, "malformed request", 0);
		return;
	}
	if (f->type == CTL_T_STATS) {
		if (tag != 0) {
			ctl_conn_answer_simple(c, CTL_T_ERROR, "wrong arguments for the request", 0);
			return;
		}
		c->op = f->type;
		bufferevent_disable(c->bev, EV_READ);
		ctl_conn_stats(c);
		return;
	}
	bool want_qid = f->type != CTL_T_LIST && f->type != CTL_T_FLUSH;
	if ((want_qid && tag != CTL_F_QID) || (f->type == CTL_T_LIST && tag != 0) ||
	    (f->type == CTL_T_FLUSH && tag == 0 && arg[0] != '\0')) {
		ctl_conn_answer_simple(c, CTL_T_ERROR, "wrong arguments for the request", 0);
		return;
	}
	switch (f->type) {
	case CTL_T_LIST:
		op = QMGR_CTL_LIST;
		break;
	case CTL_T_SHOW:
		op = QMGR_CTL_SHOW;
		break;
	case CTL_T_FLUSH:
		op = tag == 0           ? QMGR_CTL_FLUSH_ALL
		     : tag == CTL_F_QID ? QMGR_CTL_FLUSH_QID
		                        : QMGR_CTL_FLUSH_DOMAIN;
		break;
	case CTL_T_DELETE:
		op = QMGR_CTL_DELETE;
		break;
	case CTL_T_HOLD:
		op = QMGR_CTL_HOLD;
		break;
	default:
		op = QMGR_CTL_RELEASE;
		break;
	}
	c->op = f->type;
	c->busy = true;
	bufferevent_disable(c->bev, EV_READ);
	qmgr_ctl_request(c->srv->qc, op, tag != 0 ? arg : NULL, ctl_conn_on_result, c);
}

static void ctl_conn_on_read(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	struct ctl_frame f;
	size_t used = 0;
	const char *error = NULL;
	if (c->busy || c->closing)
		return;
	if (len > CTL_REQ_MAX)
		len = CTL_REQ_MAX;
	const unsigned char *p = evbuffer_pullup(in, (ssize_t)len);
	int r = ctl_frame_decode(p, len, CTL_REQ_MAX, &f, &used, &error);
	if (r == 0)
		return;
	if (r < 0) {
		char qe[LOG_Q_MAX];
		log_warn("event=control_error reason=%s", log_qs(qe, error));
		if (c->persistent) { /* the octets after it cannot be framed */
			ctl_conn_close(c);
			return;
		}
		bufferevent_disable(bev, EV_READ);
		ctl_conn_answer_simple(c, CTL_T_ERROR, error, 0);
		return;
	}
	if (c->persistent) {
		/* The answer may come at once and read the next request: take
		 * this one out of the input first (f then points into copy). */
		unsigned char copy[CTL_REQ_MAX];
		memcpy(copy, p, used);
		evbuffer_drain(in, used);
		if (ctl_frame_decode(copy, used, CTL_REQ_MAX, &f, &used, &error) == 1)
			ctl_conn_request(c, &f);
		return;
	}
	ctl_conn_request(c, &f);
	/* Read no further request: one per connection. */
	if (!c->dead && c->bev != NULL)
		evbuffer_drain(in, evbuffer_get_length(in));
}

static void ctl_conn_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct ctl_conn *c = arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		ctl_conn_close(c);
}

static bool ctl_peer_allowed(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	return cred.uid == 0 || cred.uid == geteuid();
}

static struct ctl_conn *ctl_conn_new(struct ctl_server *s, int fd, bool persistent);

static void ctl_on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
	(void)lev;
	(void)sa;
	(void)salen;
	struct ctl_server *s = arg;
	if (s->n_conns >= CTL_MAX_CONNS || !ctl_peer_allowed(fd)) {
		log_warn("event=control_refused reason=%s",
		         s->n_conns >= CTL_MAX_CONNS ? "too_many_connections" : "peer_uid");
		evutil_closesocket(fd);
		return;
	}
	(void)ctl_conn_new(s, fd, false);
}

static struct ctl_conn *ctl_conn_new(struct ctl_server *s, int fd, bool persistent)
{
	struct ctl_conn *c = xcalloc(1, sizeof(*c));
	c->srv = s;
	c->persistent = persistent;
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return NULL;
	}
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->n_conns++;
	struct timeval rt = {CTL_READ_TIMEOUT_S, 0}, wt = {CTL_WRITE_TIMEOUT_S, 0};
	bufferevent_set_timeouts(c->bev, persistent ? NULL : &rt, &wt);
	bufferevent_setwatermark(c->bev, EV_READ, 0, CTL_REQ_MAX);
	bufferevent_setcb(c->bev, ctl_conn_on_read, ctl_conn_on_write, ctl_conn_on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	return c;
}

void ctl_server_add_peer(struct ctl_server *s, int fd)
{
	evutil_make_socket_nonblocking(fd);
	(void)ctl_conn_new(s, fd, true);
}

/* Is a daemon answering on path? Then we must not take its socket. */
static bool ctl_socket_live(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	bool live = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0;
	close(fd);
	return live;
}

static int ctl_bind(struct ctl_server *s, const char **error_r)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	memcpy(sun.sun_path, s->path, strlen(s->path) + 1);
	if (ctl_socket_live(&sun)) {
		*error_r = "another hikyaku answers on the control socket";
		return -1;
	}
	(void)unlink(s->path); /* stale, from a crash */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		*error_r = "cannot create the control socket";
		return -1;
	}
	/* 0600: only the service user (and root) may connect. Between bind
	 * and chmod the umask decides; the SO_PEERCRED check at accept holds
	 * in every case. */
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || chmod(s->path, 0600) < 0) {
		*error_r = "cannot bind the control socket";
		close(fd);
		return -1;
	}
	s->lev = evconnlistener_new(s->base, ctl_on_accept, s,
	                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, fd);
	if (s->lev == NULL) {
		*error_r = "cannot listen on the control socket";
		close(fd);
		(void)unlink(s->path);
		return -1;
	}
	return 0;
}

int ctl_server_create(struct event_base *base, const char *spool_dir, struct qmgr *q,
                      struct ctl_server **srv_r, const char **error_r)
{
	struct ctl_server *s = xcalloc(1, sizeof(*s));
	s->base = base;
	if (ctl_socket_path(spool_dir, s->path, sizeof(s->path)) < 0) {
		*error_r = "control socket path too long (spool_dir)";
		free(s);
		return -1;
	}
	if (ctl_bind(s, error_r) < 0) {
		free(s);
		return -1;
	}
	s->q = q;
	s->qc = qmgr_ctl_attach(q);
	log_info("event=control_listening path=%s", log_qs((char[LOG_Q_MAX]){0}, s->path));
	*srv_r = s;
	return 0;
}

void ctl_server_free(struct ctl_server **sp)
{
	struct ctl_server *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	evconnlistener_free(s->lev);
	(void)unlink(s->path);
	/* Pending answers arrive now: their connections are written to or,
	 * below, dropped. */
	qmgr_ctl_detach(&s->qc);
	while (s->conns != NULL) {
		s->conns->busy = false;
		ctl_conn_free(s->conns);
	}
	free(s);
}
