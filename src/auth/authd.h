/* authd.h — the auth service (server half of auth/authproto.h): holds the
 * users table with its secrets, runs the SASL exchanges (auth/sasl.c) for
 * its clients, checks passwords on its own worker threads, counts AUTH
 * failures per client address (auth/authfail.c) for every client together,
 * and answers "is NAME a user". smtpd talks to it only through authc.h and
 * never sees a secret.
 *
 * Today it runs on smtpd's event loop in the one hikyaku process (main.c);
 * it is written to be the `auth` process of the split (docs/ARCHITECTURE.md,
 * "processes by privilege"): it parses no network input, only frames, and
 * every frame is hostile. Event loop thread only. */
#ifndef HK_AUTH_AUTHD_H
#define HK_AUTH_AUTHD_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct conf;
struct users;
struct authd;

/* Bounds per client socket. */
#define AUTHD_REQ_MAX 1024   /* requests being served (password checks, delays) */
#define AUTHD_XCHG_MAX 16384 /* SASL exchanges open (waiting for the client) */
#define AUTHD_ERRORS_MAX 16  /* malformed frames before the client is dropped */

/* users (may be NULL: every user unknown, AUTH not offered) is owned by the
 * service from now on. conf must outlive it. */
struct authd *authd_create(struct event_base *base, const struct conf *conf, struct users *users);
/* Serve one more client on fd (one end of a SOCK_SEQPACKET socketpair; the
 * service owns it now). The client is sent MECHS at once. */
void authd_add_client(struct authd *d, int fd);
/* Replace the users table (a reload). Exchanges already begun finish with
 * the table they began with; every client is sent the new MECHS. */
void authd_set_users(struct authd *d, struct users *users);
size_t authd_client_count(const struct authd *d);
/* Closes every client; finishes the password checks in flight first. */
void authd_free(struct authd **d);

/* Tests only: the per-failure delay step (200 ms; the 535 waits
 * failures * step, at most 10 steps). */
void authd_set_delay_step_for_test(struct authd *d, unsigned ms);

#endif
