/* authc.h — smtpd's client of the auth service (auth/authd.h): asks it to
 * run SASL steps and whether a mailbox is a user, asynchronously, on
 * smtpd's event loop. smtpd never holds a secret.
 *
 * Every call returns a request handle and later calls its callback once,
 * on the loop, never from inside the call. authc_cancel() withdraws a
 * request: its callback is never called (a session that ends while waiting
 * cancels and may then be freed). A call that cannot be sent (the service
 * is gone, or AUTHC_REQ_MAX requests are outstanding) returns NULL: the
 * caller answers tempfail at once. When the service goes away, requests in
 * flight end with AUTHC_TEMPFAIL. Event loop thread only. */
#ifndef HK_AUTH_AUTHC_H
#define HK_AUTH_AUTHC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "auth/sasl.h"

struct event_base;
struct authc;
struct authc_req;

#define AUTHC_REQ_MAX 1024 /* outstanding requests (AUTHD_REQ_MAX) */

enum authc_status {
	AUTHC_CHALLENGE, /* data: the raw challenge (334 in base64) */
	AUTHC_OK,        /* user: the authenticated name (235) */
	AUTHC_FAIL,      /* bad credentials, already delayed: 535; failures for
	                  * the log; lockout: then 421 and close */
	AUTHC_LOCKED,    /* the address is locked out: 421 at once */
	AUTHC_MALFORMED, /* protocol violation, no guess counted: 501 */
	AUTHC_TEMPFAIL,  /* the service is gone or refused: 454 4.7.0 */
};

struct authc_step_result {
	enum authc_status status;
	const unsigned char *data; /* CHALLENGE; valid during the callback */
	size_t len;
	const char *user;  /* OK; valid during the callback */
	unsigned failures; /* FAIL */
	bool lockout;      /* FAIL */
};

enum authc_exists { AUTHC_NO, AUTHC_YES, AUTHC_EXISTS_TEMPFAIL };

typedef void authc_step_cb(void *arg, const struct authc_step_result *r);
typedef void authc_exists_cb(void *arg, enum authc_exists r);

/* Takes fd (the client end of the socketpair). */
struct authc *authc_create(struct event_base *base, int fd);
/* Start-up: wait (blocking, at most timeout_ms) for the service's first
 * MECHS frame, so the first EHLO already knows what to offer. 0 when it
 * came, -1 otherwise (AUTH is then not offered until it comes). */
int authc_wait_ready(struct authc *c, int timeout_ms);
void authc_free(struct authc **c);

/* Is the service there (the socket not closed)? */
bool authc_connected(const struct authc *c);
/* The service has a users table: AUTH can be offered. */
bool authc_has_users(const struct authc *c);
/* SASL_MECH_BIT()s to offer in EHLO (auth.mechanisms, or what every user
 * can use). The last ones received: kept when the service goes away. */
unsigned authc_mechs(const struct authc *c);
/* A fresh non-zero id, for session and exchange keys. */
uint64_t authc_new_id(struct authc *c);

/* One SASL step of the exchange (session, exchange). The first step of an
 * exchange gives mech >= 0 and the client address (its failures are
 * counted); later steps mech -1 and addr NULL. has_data false: no initial
 * response. bad_base64: the response could not be decoded (the exchange
 * ends with MALFORMED; a first step still counts against a lock-out).
 * data is copied (and the copy wiped). */
struct authc_req *authc_step(struct authc *c, uint64_t session, uint64_t exchange, int mech,
                             const struct sockaddr_storage *addr, bool has_data, bool bad_base64,
                             const void *data, size_t len, authc_step_cb *cb, void *arg);
/* The exchange ends on smtpd's side ('*', bad base64, the client gone):
 * cancels its request if one is out, and tells the service, which gives
 * the guess back if none was made. */
void authc_exchange_end(struct authc *c, uint64_t session, uint64_t exchange,
                        struct authc_req **req);
/* Does "local@domain" name a user? */
struct authc_req *authc_user_exists(struct authc *c, const char *address, authc_exists_cb *cb,
                                    void *arg);
/* Withdraw a request: no callback. Clears *req; NULL is fine. */
void authc_cancel(struct authc *c, struct authc_req **req);

#endif
