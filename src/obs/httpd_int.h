/* httpd_int.h — the http process's server internals shared by httpd.c
 * (connections, /metrics, the queue API, the front-end files) and
 * httpd_sbx.c (the sandbox's Mailpit-compatible API, issue 13). Runs on
 * the http process's loop. */
#ifndef HK_OBS_HTTPD_INT_H
#define HK_OBS_HTTPD_INT_H

#include "ctl/ctl.h"
#include "obs/http_parse.h"

#include <stdbool.h>
#include <stddef.h>

#define HTTPD_ARG_MAX 256

struct httpd_conn;
struct httpd_sbx;
struct httpd_sse;

/* An API request on its way to the queue and back. */
struct httpd_api {
	struct httpd_conn *conn; /* NULL: the client left; the answer is dropped */
	struct ctl_render r;
	char *body, *errtext;
	size_t body_len, errtext_len;
	char qid[HTTPD_ARG_MAX], sender[HTTPD_ARG_MAX], recipient[HTTPD_ARG_MAX];
	struct httpd_api *next;
};

struct httpd_conn {
	struct httpd *h;
	struct bufferevent *bev;
	struct httpd_conn *prev, *next;
	struct httpd_api *api; /* the request waiting for the queue */
	bool close;            /* close once the answer is written */
	bool loopback;         /* the peer is on 127.0.0.0/8 or ::1 */
	struct httpd_sse *sse; /* an event stream (httpd_sbx.c): no more requests */
};

struct httpd {
	struct event_base *base;
	const struct conf *conf;
	struct metrics *metrics;
	struct evconnlistener *lev;
	char *token;
	size_t token_len;
	struct httpd_conn *conns;
	size_t n_conns;
	const char **listener_names;
	struct bufferevent *q; /* to the queue's control server */
	struct httpd_api *qhead, *qtail;
	size_t n_pending;
	bool sandbox_ui;       /* serve the sandbox UI at / (web.h) */
	struct httpd_sbx *sbx; /* the sandbox API, or NULL */
};

void httpd_respond(struct httpd_conn *c, int status, const char *type, const char *body, size_t len,
                   const char *extra);
/* {"error": text} */
void httpd_error(struct httpd_conn *c, int status, const char *text, const char *extra);

/* The sandbox API (httpd_sbx.c): create (NULL when the store cannot be
 * opened: logged), route (true when the path is the sandbox's), free; a
 * connection that closes leaves its event stream. */
struct httpd_sbx *httpd_sbx_create(struct httpd *h);
bool httpd_sbx_route(struct httpd_conn *c, const struct http_request *req, const char *path);
void httpd_sbx_conn_gone(struct httpd_conn *c);
void httpd_sbx_free(struct httpd_sbx **x);

#endif
