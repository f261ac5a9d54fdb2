/* httpd.c — /metrics and the JSON API (httpd.h). The http process, main
 * event loop thread, as the service user in its sandbox (no file, no
 * socket of its own).
 *
 * Connections: at most http.max_connections; one request at a time each
 * (keep-alive, no pipelining ahead of an answer); a request must arrive
 * whole within HTTPD_READ_TIMEOUT_S and its answer be taken within
 * HTTPD_WRITE_TIMEOUT_S; what the parser bounds (http_parse.h) is all that
 * is buffered.
 *
 * The API speaks to the queue over the control protocol (ctl/, the same
 * frames and the same rendering as `hikyaku queue --json`) on one stream
 * socket the master made (ctl_server_add_peer on the queue's side):
 * requests are written in order and answered in order. */
#include "obs/httpd.h"

#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "mail/envelope.h"
#include "obs/http_parse.h"
#include "obs/httpd_int.h"
#include "obs/web.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define HTTPD_READ_TIMEOUT_S 10
#define HTTPD_WRITE_TIMEOUT_S 30
#define HTTPD_IN_MAX (HTTP_LINE_MAX + HTTP_HEADERS_MAX + HTTP_BODY_MAX + 16)
#define HTTPD_QUEUE_PENDING_MAX 64 /* API requests waiting for the queue */
#define HTTPD_QUEUE_TIMEOUT_S 60 /* the queue's silence while a request waits */

/* ---- answers ---- */

static const char *httpd_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 301:
		return "Moved Permanently";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Internal Server Error";
	}
}

static void httpd_conn_free(struct httpd_conn *c)
{
	struct httpd *h = c->h;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	h->n_conns--;
	if (c->api != NULL)
		c->api->conn = NULL;
	if (c->sse != NULL)
		httpd_sbx_conn_gone(c);
	bufferevent_free(c->bev);
	free(c);
}

static void httpd_conn_on_read(struct bufferevent *bev, void *arg);

/* An answer is written: take the next request unless the connection is
 * to close. */
static void httpd_next(struct httpd_conn *c)
{
	if (!c->close) {
		bufferevent_enable(c->bev, EV_READ);
		httpd_conn_on_read(c->bev, c); /* a request already buffered */
	}
}

void httpd_respond(struct httpd_conn *c, int status, const char *type, const char *body,
                   size_t len, const char *extra)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_printf(out,
	                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                    "Cache-Control: no-store\r\n%s%s\r\n",
	                    status, httpd_reason(status), type, len, extra != NULL ? extra : "",
	                    c->close ? "Connection: close\r\n" : "");
	evbuffer_add(out, body, len);
	httpd_next(c);
}

/* {"error": text} (text is ours or the queue's, escaped as JSON). */
void httpd_error(struct httpd_conn *c, int status, const char *text, const char *extra)
{
	struct buf b;
	buf_init(&b, 4096);
	buf_append_str(&b, "{\"error\":\"");
	for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			buf_printf(&b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			buf_printf(&b, "\\u%04x", *p);
		else
			buf_append_byte(&b, *p);
	}
	buf_append_str(&b, "\"}\n");
	httpd_respond(c, status, "application/json", (const char *)b.data, b.len, extra);
	buf_free(&b);
}

/* ---- the queue link ---- */

static void httpd_api_free(struct httpd_api *a)
{
	free(a->body);
	free(a->errtext);
	free(a);
}

/* The answer of the head request is complete (rc 1) or an error (-1). */
static void httpd_api_finish(struct httpd *h, int rc)
{
	struct httpd_api *a = h->qhead;
	h->qhead = a->next;
	if (h->qhead == NULL)
		h->qtail = NULL;
	h->n_pending--;
	if (h->qhead == NULL && h->q != NULL)
		bufferevent_set_timeouts(h->q, NULL, NULL);
	fclose(a->r.out);
	fclose(a->r.err);
	struct httpd_conn *c = a->conn;
	if (c != NULL) {
		c->api = NULL;
		if (rc > 0) {
			httpd_respond(c, 200, "application/json", a->body, a->body_len, NULL);
		} else {
			const char *m = a->r.message;
			int st = strstr(m, "no such message") != NULL ||
			                 strstr(m, "unknown analytics kind") != NULL
			                 ? 404
			         : strstr(m, "not a queue id") != NULL ||
			                 strstr(m, "not a domain") != NULL ||
			                 strstr(m, "malformed analytics") != NULL ||
			                 strstr(m, "bad time range") != NULL
			             ? 400
			         : strstr(m, "analytics are off") != NULL      ? 503
			         : strstr(m, "not recorded by this build") != NULL ? 501
			                                                       : 409;
			if (m[0] == '\0') {
				m = "the queue gave no answer";
				st = 503;
			}
			httpd_error(c, st, m, NULL);
		}
	}
	httpd_api_free(a);
}

static void httpd_queue_fail_all(struct httpd *h)
{
	while (h->qhead != NULL) {
		h->qhead->r.message[0] = '\0';
		httpd_api_finish(h, -1);
	}
}

/* The link cannot be trusted any more (a bad frame, or no answer): only a
 * new one helps, and the master makes one for a new http process. */
static void httpd_queue_broken(struct httpd *h)
{
	bufferevent_free(h->q);
	h->q = NULL;
	httpd_queue_fail_all(h);
	log_warn("event=http_restart reason=\"queue link unusable\"");
	event_base_loopbreak(h->base);
}

static void httpd_queue_on_read(struct bufferevent *bev, void *arg)
{
	struct httpd *h = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			return;
		const unsigned char *p = evbuffer_pullup(in, (ssize_t)len);
		struct ctl_frame f;
		size_t used = 0;
		const char *error = NULL;
		int r = ctl_frame_decode(p, len, CTL_RESP_MAX, &f, &used, &error);
		if (r == 0)
			return;
		if (r < 0 || h->qhead == NULL) {
			log_warn("event=http_queue_error reason=\"%s\"",
			         r < 0 ? error : "an answer nobody asked for");
			httpd_queue_broken(h);
			return;
		}
		int done = ctl_render_frame(&h->qhead->r, &f);
		evbuffer_drain(in, used);
		if (done != 0)
			httpd_api_finish(h, done);
	}
}

static void httpd_queue_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct httpd *h = arg;
	if (what & BEV_EVENT_TIMEOUT) {
		log_warn("event=http_queue_timeout pending=%zu", h->n_pending);
		httpd_queue_broken(h);
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	log_info("event=http_queue_closed (a new queue process sends a new link)");
	bufferevent_free(h->q);
	h->q = NULL;
	httpd_queue_fail_all(h);
}

void httpd_set_queue(struct httpd *h, int fd)
{
	if (h->q != NULL) {
		bufferevent_free(h->q);
		h->q = NULL;
		httpd_queue_fail_all(h);
	}
	evutil_make_socket_nonblocking(fd);
	h->q = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (h->q == NULL) {
		close(fd);
		return;
	}
	bufferevent_setcb(h->q, httpd_queue_on_read, NULL, httpd_queue_on_event, h);
	bufferevent_enable(h->q, EV_READ | EV_WRITE);
}

static void httpd_api_send_req(struct httpd_conn *c, uint8_t type, struct buf *req,
                               struct httpd_api *a);

/* Send a control request for c; the answer comes in httpd_queue_on_read. */
static void httpd_api_send(struct httpd_conn *c, uint8_t type, const char *arg, struct httpd_api *a)
{
	struct buf req;
	buf_init(&req, CTL_REQ_MAX);
	if (ctl_request_build(type, arg, &req) < 0) {
		buf_free(&req);
		free(a);
		httpd_error(c, 400, "argument too long", NULL);
		return;
	}
	httpd_api_send_req(c, type, &req, a);
}

/* The same with the request frame built (req is freed here). */
static void httpd_api_send_req(struct httpd_conn *c, uint8_t type, struct buf *req,
                               struct httpd_api *a)
{
	struct httpd *h = c->h;
	if (h->q == NULL || h->n_pending >= HTTPD_QUEUE_PENDING_MAX) {
		buf_free(req);
		free(a);
		httpd_error(c, 503, h->q == NULL ? "the queue is not running" : "busy, try again",
		            "Retry-After: 1\r\n");
		return;
	}
	a->conn = c;
	a->r.req = type;
	a->r.json = true;
	a->r.out = open_memstream(&a->body, &a->body_len);
	a->r.err = open_memstream(&a->errtext, &a->errtext_len);
	if (a->r.out == NULL || a->r.err == NULL)
		abort(); /* out of memory, as xmalloc */
	ctl_render_begin(&a->r);
	if (h->qtail != NULL)
		h->qtail->next = a;
	else
		h->qhead = a;
	h->qtail = a;
	h->n_pending++;
	c->api = a;
	/* An answer (or part of one) within the bound while any is owed. */
	struct timeval qt = {HTTPD_QUEUE_TIMEOUT_S, 0};
	bufferevent_set_timeouts(h->q, &qt, NULL);
	bufferevent_write(h->q, req->data, req->len);
	buf_free(req);
}

/* ---- routing ---- */

static bool httpd_token_ok(const struct httpd *h, struct http_view auth)
{
	static const char scheme[] = "Bearer ";
	if (auth.len < sizeof(scheme) - 1 || strncasecmp(auth.p, scheme, sizeof(scheme) - 1) != 0)
		return false;
	const char *t = auth.p + sizeof(scheme) - 1;
	size_t tl = auth.len - (sizeof(scheme) - 1);
	/* Constant time in the token's content; its length is no secret. */
	return tl == h->token_len && CRYPTO_memcmp(t, h->token, tl) == 0;
}

static void httpd_metrics(struct httpd_conn *c)
{
	struct httpd *h = c->h;
	struct buf b;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	buf_init(&b, 4 * 1024 * 1024);
	metrics_render(h->metrics, h->listener_names, h->conf->n_listeners,
	               (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000, &b);
	httpd_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *)b.data,
	              b.len, NULL);
	buf_free(&b);
}

/* GET /api/v1/queue and /api/v1/messages: the list, filtered (a search)
 * by qid, sender, recipient. */
static void httpd_api_list(struct httpd_conn *c, const struct http_request *req)
{
	struct httpd_api *a = xcalloc(1, sizeof(*a));
	static const char *const keys[] = {"qid", "sender", "recipient"};
	char *dst[] = {a->qid, a->sender, a->recipient};
	const char **set[] = {&a->r.qid, &a->r.sender, &a->r.recipient};
	for (size_t i = 0; i < 3; i++) {
		int r = http_query_get(req->query, keys[i], dst[i], HTTPD_ARG_MAX);
		if (r < 0) {
			free(a);
			httpd_error(c, 400, "malformed query", NULL);
			return;
		}
		if (r > 0)
			*set[i] = dst[i];
	}
	httpd_api_send(c, CTL_T_LIST, NULL, a);
}

/* A Unix time in seconds from the query (decimal, at most 12 digits). 1
 * found, 0 absent, -1 malformed. */
static int httpd_query_time(struct http_view query, const char *key, uint64_t *t_r)
{
	char v[16];
	int r = http_query_get(query, key, v, sizeof(v));
	if (r <= 0)
		return r;
	uint64_t t = 0;
	size_t n = strlen(v);
	if (n == 0 || n > 12)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		t = t * 10 + (uint64_t)(v[i] - '0');
	}
	*t_r = t;
	return 1;
}

/* GET /api/v1/analytics/{kind}?from=&to=&domain=&sender_domain=: from and
 * to in Unix seconds (default: the last 24 hours), the queue's store
 * answers (ctl ANALYTICS). */
static void httpd_api_analytics(struct httpd_conn *c, const struct http_request *req,
                                const char *kind)
{
	struct ctl_analytics_req ar;
	struct timespec ts;
	memset(&ar, 0, sizeof(ar));
	if (!http_view_eq(req->method, "GET")) {
		httpd_error(c, 405, "use GET", "Allow: GET\r\n");
		return;
	}
	if (strlen(kind) >= sizeof(ar.kind)) {
		httpd_error(c, 404, "no such resource", NULL);
		return;
	}
	snprintf(ar.kind, sizeof(ar.kind), "%s", kind);
	clock_gettime(CLOCK_REALTIME, &ts);
	ar.to = (uint64_t)ts.tv_sec;
	int rt = httpd_query_time(req->query, "to", &ar.to);
	ar.from = ar.to >= 86399 ? ar.to - 86399 : 0;
	int rf = httpd_query_time(req->query, "from", &ar.from);
	int rd = http_query_get(req->query, "domain", ar.domain, sizeof(ar.domain));
	int rs = http_query_get(req->query, "sender_domain", ar.sender, sizeof(ar.sender));
	if (rt < 0 || rf < 0 || rd < 0 || rs < 0) {
		httpd_error(c, 400, "malformed query (from, to: Unix seconds; domain, sender_domain)",
		            NULL);
		return;
	}
	if (ar.from > ar.to || ar.to - ar.from > CTL_ANALYTICS_SPAN_MAX) {
		httpd_error(c, 400, "bad time range (from after to, or more than 400 days)", NULL);
		return;
	}
	/* Domains compare in lower case, as the store keeps them. */
	for (char *p = ar.domain; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	for (char *p = ar.sender; *p != '\0'; p++)
		*p = (char)tolower((unsigned char)*p);
	struct buf b;
	buf_init(&b, CTL_REQ_MAX);
	if (ctl_analytics_build(&ar, &b) < 0) {
		buf_free(&b);
		httpd_error(c, 400, "argument too long", NULL);
		return;
	}
	httpd_api_send_req(c, CTL_T_ANALYTICS, &b, xcalloc(1, sizeof(struct httpd_api)));
}

/* /api/v1/queue/{qid}[/{action}] and /api/v1/queue/flush */
static void httpd_api_queue(struct httpd_conn *c, const struct http_request *req, const char *rest)
{
	char qid[HTTPD_ARG_MAX], domain[HTTPD_ARG_MAX];
	const char *slash = strchr(rest, '/');
	size_t ql = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
	const char *action = slash != NULL ? slash + 1 : "";
	if (strcmp(rest, "flush") == 0) {
		if (!http_view_eq(req->method, "POST")) {
			httpd_error(c, 405, "use POST", "Allow: POST\r\n");
			return;
		}
		int r = http_query_get(req->query, "domain", domain, sizeof(domain));
		if (r < 0) {
			httpd_error(c, 400, "malformed query", NULL);
			return;
		}
		httpd_api_send(c, CTL_T_FLUSH, r > 0 ? domain : NULL,
		               xcalloc(1, sizeof(struct httpd_api)));
		return;
	}
	if (ql == 0 || ql >= sizeof(qid) || http_pct_decode(rest, ql, qid, sizeof(qid)) < 0 ||
	    !qid_valid(qid)) {
		httpd_error(c, 404, "not a queue id", NULL);
		return;
	}
	static const struct {
		const char *action, *method;
		uint8_t type;
	} routes[] = {
	    {"", "GET", CTL_T_SHOW},        {"", "DELETE", CTL_T_DELETE},
	    {"hold", "POST", CTL_T_HOLD},   {"release", "POST", CTL_T_RELEASE},
	    {"flush", "POST", CTL_T_FLUSH},
	};
	bool known = false;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(action, routes[i].action) != 0)
			continue;
		known = true;
		if (http_view_eq(req->method, routes[i].method)) {
			httpd_api_send(c, routes[i].type, qid,
			               xcalloc(1, sizeof(struct httpd_api)));
			return;
		}
	}
	if (known)
		httpd_error(c, 405, "method not allowed here",
		            action[0] == '\0' ? "Allow: GET, DELETE\r\n" : "Allow: POST\r\n");
	else
		httpd_error(c, 404, "no such resource", NULL);
}

/* The embedded front-end files (web.h): GET and HEAD only. */
static void httpd_web(struct httpd_conn *c, const struct http_request *req, const char *path)
{
	bool head = http_view_eq(req->method, "HEAD");
	if (!head && !http_view_eq(req->method, "GET")) {
		httpd_error(c, 405, "use GET or HEAD", "Allow: GET, HEAD\r\n");
		return;
	}
	if (strcmp(path, "/dashboard") == 0) {
		httpd_respond(c, 301, "text/plain; charset=utf-8", "", 0,
		              "Location: /dashboard/\r\n");
		return;
	}
	const struct web_file *f = web_route(path, c->h->sandbox_ui);
	if (f == NULL) {
		if (head)
			httpd_respond(c, 404, "application/json", "", 0, NULL);
		else
			httpd_error(c, 404, "no such resource", NULL);
		return;
	}
	web_respond(bufferevent_get_output(c->bev), f, head, req->if_none_match.p,
	            req->if_none_match.len, c->close);
	httpd_next(c);
}

static void httpd_route(struct httpd_conn *c, const struct http_request *req)
{
	struct httpd *h = c->h;
	char path[HTTP_LINE_MAX];
	if (http_pct_decode(req->path.p, req->path.len, path, sizeof(path)) < 0) {
		httpd_error(c, 400, "malformed path", NULL);
		return;
	}
	/* The sandbox's API (Mailpit's paths, /view/, /api/events) before
	 * the queue API: on a sandbox /api/v1/messages is the captured mail. */
	if (h->sbx != NULL && httpd_sbx_route(c, req, path))
		return;
	if (web_is_path(path, h->sandbox_ui)) {
		httpd_web(c, req, path);
		return;
	}
	if (strcmp(path, "/metrics") == 0) {
		if (!http_view_eq(req->method, "GET")) {
			httpd_error(c, 405, "use GET", "Allow: GET\r\n");
			return;
		}
		httpd_metrics(c);
		return;
	}
	static const char api[] = "/api/v1/";
	if (strncmp(path, api, sizeof(api) - 1) != 0 || h->token == NULL) {
		httpd_error(c, 404,
		            h->token == NULL && strncmp(path, api, sizeof(api) - 1) == 0
		                ? "the API is off (http.token_file is not set)"
		                : "no such resource",
		            NULL);
		return;
	}
	if (!httpd_token_ok(h, req->authorization)) {
		httpd_error(c, 401, "a valid bearer token is required",
		            "WWW-Authenticate: Bearer realm=\"hikyaku\"\r\n");
		return;
	}
	const char *rest = path + sizeof(api) - 1;
	if (strcmp(rest, "queue") == 0 || strcmp(rest, "messages") == 0) {
		if (!http_view_eq(req->method, "GET")) {
			httpd_error(c, 405, "use GET", "Allow: GET\r\n");
			return;
		}
		httpd_api_list(c, req);
		return;
	}
	if (strcmp(rest, "stats/domains") == 0) {
		if (!http_view_eq(req->method, "GET")) {
			httpd_error(c, 405, "use GET", "Allow: GET\r\n");
			return;
		}
		httpd_api_send(c, CTL_T_STATS, NULL, xcalloc(1, sizeof(struct httpd_api)));
		return;
	}
	if (strncmp(rest, "queue/", 6) == 0) {
		httpd_api_queue(c, req, rest + 6);
		return;
	}
	if (strncmp(rest, "analytics/", 10) == 0) {
		httpd_api_analytics(c, req, rest + 10);
		return;
	}
	httpd_error(c, 404, "no such resource", NULL);
}

/* ---- connections ---- */

static void httpd_conn_on_read(struct bufferevent *bev, void *arg)
{
	struct httpd_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (c->api != NULL || c->close)
		return;
	size_t len = evbuffer_get_length(in);
	if (len == 0)
		return;
	if (len > HTTPD_IN_MAX)
		len = HTTPD_IN_MAX;
	const char *p = (const char *)evbuffer_pullup(in, (ssize_t)len);
	struct http_request req;
	int status;
	int r = http_parse_request(p, len, &req, &status);
	if (r == 0)
		return;
	if (r < 0) {
		log_info("event=http_bad_request status=%d", status);
		c->close = true;
		bufferevent_disable(bev, EV_READ);
		httpd_error(c, status, httpd_reason(status), NULL);
		return;
	}
	c->close = req.close;
	bufferevent_disable(bev, EV_READ); /* one request at a time */
	/* The views point into the input: take the request out of it first,
	 * as the answer may read the next one. */
	size_t used = req.used;
	char *copy = xmalloc(used);
	memcpy(copy, p, used);
	evbuffer_drain(in, used);
	if (http_parse_request(copy, used, &req, &status) == 1)
		httpd_route(c, &req);
	free(copy);
}

static void httpd_conn_on_write(struct bufferevent *bev, void *arg)
{
	struct httpd_conn *c = arg;
	if (c->close && c->api == NULL && c->sse == NULL &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		httpd_conn_free(c);
}

static void httpd_conn_on_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct httpd_conn *c = arg;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		httpd_conn_free(c);
}

static bool httpd_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

static void httpd_on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                            int salen, void *arg)
{
	(void)lev;
	(void)sa;
	(void)salen;
	struct httpd *h = arg;
	if (h->n_conns >= h->conf->http.max_connections) {
		evutil_closesocket(fd);
		return;
	}
	/* Answers go out in several writes (libevent writes 16 KiB at a
	 * time): without this, Nagle holds the second behind the client's
	 * delayed ACK, 40 ms for every list longer than one write. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct httpd_conn *c = xcalloc(1, sizeof(*c));
	c->h = h;
	c->loopback = httpd_is_loopback(sa);
	c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		free(c);
		return;
	}
	c->next = h->conns;
	if (h->conns != NULL)
		h->conns->prev = c;
	h->conns = c;
	h->n_conns++;
	struct timeval rt = {HTTPD_READ_TIMEOUT_S, 0}, wt = {HTTPD_WRITE_TIMEOUT_S, 0};
	bufferevent_set_timeouts(c->bev, &rt, &wt);
	bufferevent_setwatermark(c->bev, EV_READ, 0, HTTPD_IN_MAX);
	bufferevent_setcb(c->bev, httpd_conn_on_read, httpd_conn_on_write, httpd_conn_on_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

struct httpd *httpd_create(struct event_base *base, const struct conf *conf, int fd,
                           struct metrics *m, const char *token)
{
	struct httpd *h = xcalloc(1, sizeof(*h));
	h->base = base;
	h->conf = conf;
	h->metrics = m;
	if (token != NULL && token[0] != '\0') {
		h->token = xstrdup(token);
		h->token_len = strlen(token);
	}
	h->listener_names = xcalloc(conf->n_listeners + 1, sizeof(*h->listener_names));
	for (size_t i = 0; i < conf->n_listeners; i++)
		h->listener_names[i] = conf->listeners[i].address;
	evutil_make_socket_nonblocking(fd);
	/* 0: the master already called listen() (not on the allow-list). */
	h->lev = evconnlistener_new(base, httpd_on_accept, h, LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (h->lev == NULL) {
		close(fd);
		httpd_free(&h);
		return NULL;
	}
	return h;
}

void httpd_set_sandbox_ui(struct httpd *h, bool on)
{
	h->sandbox_ui = on;
}

int httpd_set_sandbox(struct httpd *h)
{
	h->sbx = httpd_sbx_create(h);
	return h->sbx != NULL ? 0 : -1;
}

void httpd_free(struct httpd **hp)
{
	struct httpd *h = *hp;
	if (h == NULL)
		return;
	*hp = NULL;
	if (h->lev != NULL)
		evconnlistener_free(h->lev);
	while (h->conns != NULL)
		httpd_conn_free(h->conns);
	httpd_sbx_free(&h->sbx);
	if (h->q != NULL)
		bufferevent_free(h->q);
	h->q = NULL;
	httpd_queue_fail_all(h);
	if (h->token != NULL) {
		explicit_bzero(h->token, h->token_len);
		free(h->token);
	}
	free(h->listener_names);
	free(h);
}
