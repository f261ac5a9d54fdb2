/* authproto.h — the frames between smtpd (auth/authc.c) and the auth service
 * (auth/authd.c), and the one socket end both sides speak them on.
 *
 * Transport: socketpair(AF_UNIX, SOCK_SEQPACKET); one frame per packet, in
 * the control frames' format (ctl/ctl.h: u32 length, u8 type, fields of
 * u8 tag, u32 length, value), encoded with ctl_frame_*(). The types and tags
 * are this protocol's own; authp_decode() checks a packet against them.
 *
 * Requests (smtpd -> auth), each with REQ (u64, non-zero):
 *   STEP      SESSION, EXCHANGE, [MECH, ADDR: first step of an exchange],
 *             [DATA: the decoded client response], FLAGS
 *             -> CHALLENGE (DATA) | OK (USER) | FAIL (FAILURES, LOCKOUT) |
 *                LOCKED | MALFORMED | ERROR
 *   CANCEL    SESSION, EXCHANGE: the exchange ends (client gone, '*', bad
 *             base64); no answer
 *   USER      NAME ("local@domain") -> EXISTS (YES 0/1) | ERROR
 * Unsolicited (auth -> smtpd): MECHS (MASK, USERS) when a client is added
 * and whenever the users table is replaced. ERROR (MESSAGE) answers a
 * request that cannot be served; REQ 0 when the frame had none.
 *
 * Both sides distrust the other's frames: every field has a bound, numbers
 * are exactly 8 octets, strings hold no NUL. Pure; no I/O in the decoder. */
#ifndef HK_AUTH_AUTHPROTO_H
#define HK_AUTH_AUTHPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/sasl.h"
#include "lib/buf.h"

/* A STEP carries at most one SASL response; everything else is small. */
#define AUTHP_FRAME_MAX (SASL_RESPONSE_MAX + 512)
#define AUTHP_NAME_MAX (64 + 1 + 255) /* local@domain, as users_name_check() */
#define AUTHP_USER_MAX 512            /* an authenticated name in OK */
#define AUTHP_MESSAGE_MAX 255
#define AUTHP_ADDR_LEN 16 /* authfail_addr_key(): the address as IPv6 */

enum authp_type {
	AUTHP_T_STEP = 1,
	AUTHP_T_CANCEL = 2,
	AUTHP_T_USER = 3,
	AUTHP_T_MECHS = 0x41,
	AUTHP_T_CHALLENGE = 0x42,
	AUTHP_T_OK = 0x43,
	AUTHP_T_FAIL = 0x44,
	AUTHP_T_LOCKED = 0x45,
	AUTHP_T_MALFORMED = 0x46,
	AUTHP_T_EXISTS = 0x47,
	AUTHP_T_ERROR = 0x48,
};

enum authp_tag {
	AUTHP_F_REQ = 1,      /* u64 */
	AUTHP_F_SESSION = 2,  /* u64 */
	AUTHP_F_EXCHANGE = 3, /* u64 */
	AUTHP_F_MECH = 4,     /* u64: enum sasl_mech */
	AUTHP_F_ADDR = 5,     /* bytes, AUTHP_ADDR_LEN */
	AUTHP_F_DATA = 6,     /* bytes, <= SASL_RESPONSE_MAX */
	AUTHP_F_FLAGS = 7,    /* u64: AUTHP_STEP_* */
	AUTHP_F_USER = 8,     /* str, <= AUTHP_USER_MAX */
	AUTHP_F_FAILURES = 9, /* u64 */
	AUTHP_F_LOCKOUT = 10, /* u64 0/1: close the session after the 535 */
	AUTHP_F_NAME = 11,    /* str, <= AUTHP_NAME_MAX */
	AUTHP_F_MESSAGE = 12, /* str, <= AUTHP_MESSAGE_MAX */
	AUTHP_F_MASK = 13,    /* u64: SASL_MECH_BIT()s offered */
	AUTHP_F_USERS = 14,   /* u64 0/1: a users table is loaded */
	AUTHP_F_YES = 15,     /* u64 0/1 */
	AUTHP_F_MAX = 15,
};

#define AUTHP_STEP_DATA 1u   /* DATA is a response (an empty one may be absent) */
#define AUTHP_STEP_BADB64 2u /* the response was not base64: reserve, then 501 */

/* One decoded frame: fields seen are flagged in `has` (1u << tag); the
 * pointers point into the packet. */
struct authp_msg {
	uint8_t type;
	uint32_t has;
	uint64_t req, session, exchange, mech, flags, failures, lockout, mask, users, yes;
	const unsigned char *addr;
	const unsigned char *data;
	size_t data_len;
	const char *user, *name, *message; /* not NUL-terminated: see *_len */
	size_t user_len, name_len, message_len;
};

#define AUTHP_HAS(m, tag) (((m)->has & (1u << (tag))) != 0)

/* Decode one packet. 0, or -1 with *error_r: wrong length, unknown type or
 * tag, a tag twice, a wrong kind or an over-long field. m->req is set when
 * the frame got that far, so an error can name the request. */
int authp_decode(const void *p, size_t len, struct authp_msg *m, const char **error_r);
bool authp_type_is_request(uint8_t type);

/* ---- a socket end with an output queue (both sides, one event loop) ---- */

struct event_base;
struct authp_conn;

/* frame: one decoded packet; NULL with error set for a malformed one.
 * closed: the peer is gone (EOF, error): the owner frees the conn. */
struct authp_conn_ops {
	void (*frame)(void *arg, const struct authp_msg *m, const char *error);
	void (*closed)(void *arg);
};

/* Takes fd (non-blocking, close-on-exec set here). */
struct authp_conn *authp_conn_create(struct event_base *base, int fd,
                                     const struct authp_conn_ops *ops, void *arg);
/* Queue frame (a complete ctl_frame_end()ed buffer, wiped and consumed):
 * 0, or -1 when the connection is closed. A full output queue (the peer
 * stopped reading) shuts the socket down: ops->closed follows. */
int authp_conn_send(struct authp_conn *c, struct buf *frame);
/* Read and dispatch whatever is there now, waiting at most timeout_ms for
 * the first packet (start-up: the first MECHS). 1 dispatched, 0 timeout,
 * -1 closed. */
int authp_conn_pump(struct authp_conn *c, int timeout_ms);
int authp_conn_fd(const struct authp_conn *c);
void authp_conn_free(struct authp_conn **c);

#endif
