/* httpd.h — the http process's server (issue 12): Prometheus /metrics and
 * the JSON API (/api/v1/..., docs/openapi.yaml) on the listener the master
 * bound. Runs in the unprivileged, sandboxed http process on its event
 * loop. Hostile input: every octet from the network (http_parse.c bounds
 * it); the queue's answers come through the control frames' strict
 * decoder. */
#ifndef HK_OBS_HTTPD_H
#define HK_OBS_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct metrics;
struct conf;
struct httpd;

/* fd: the listening socket; token: the API's bearer token (copied; NULL or
 * "" turns the API off). */
struct httpd *httpd_create(struct event_base *base, const struct conf *conf, int fd,
                           struct metrics *m, const char *token);
/* A (new) stream socket to the queue's control server; requests waiting
 * for the old one are answered 503. */
void httpd_set_queue(struct httpd *h, int fd);
/* Serve the sandbox UI (web.h) at "/" on this listener; /assets/ and
 * /dashboard/ are served on every listener. */
void httpd_set_sandbox_ui(struct httpd *h, bool on);
/* Serve the sandbox's Mailpit-compatible API (issue 13) from sandbox.dir,
 * opened here (as the service user, inside Landlock): 0 or -1 (logged). */
int httpd_set_sandbox(struct httpd *h);
void httpd_free(struct httpd **h);

#endif
