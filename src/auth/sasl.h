/* sasl.h — server side of the SMTP AUTH mechanisms (RFC 4954): PLAIN
 * (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195) and
 * SCRAM-SHA-256 (RFC 5802, RFC 7677). A pure state machine: decoded client
 * responses in, raw server challenges out; base64 and the 334/235/535
 * replies are the session's job. No I/O and no slow work: the one expensive
 * operation, verifying a plaintext password against a crypt(3) hash, is
 * returned to the caller (SASL_R_VERIFY) to run on a worker thread with
 * passwd_verify(). Every client response is hostile and bounded.
 *
 * Runs in the auth service (auth/authd.c) on its event loop. Secrets are wiped when freed. */
#ifndef HK_AUTH_SASL_H
#define HK_AUTH_SASL_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

struct users;
struct sasl_ctx;
struct sasl_server;

enum sasl_mech {
	SASL_PLAIN,
	SASL_LOGIN,
	SASL_CRAM_MD5,
	SASL_SCRAM_SHA_256,
};

enum sasl_result {
	SASL_R_CONTINUE,  /* send out as a 334 challenge, wait for a response */
	SASL_R_VERIFY,    /* PLAIN/LOGIN: check sasl_server_password() against
			   * sasl_server_stored() with passwd_verify() off-loop,
			   * then call sasl_server_verified() */
	SASL_R_OK,        /* authenticated as sasl_server_user() */
	SASL_R_FAIL,      /* bad credentials or unknown user: 535 5.7.8 */
	SASL_R_MALFORMED, /* protocol violation: 501 5.5.2 */
};

#define SASL_RESPONSE_MAX 12288 /* decoded octets of one client response */

/* Parse a mechanism name (case-insensitive); -1 if unknown. */
int sasl_mech_parse(const char *name, size_t len, enum sasl_mech *r);
const char *sasl_mech_name(enum sasl_mech m);

#define SASL_MECH_BIT(m) (1u << (m))

/* What is prepared once per users table (authd_create, authd_set_users), read-only after:
 * the mechanisms every user can use, the dummy secret an unknown user is
 * verified against, the key of SCRAM's fake salts. users may be NULL (every
 * user unknown); it must outlive the context. hostname appears in the
 * CRAM-MD5 challenge. Costs one password hash. */
struct sasl_ctx *sasl_ctx_create(const struct users *users, const char *hostname);
void sasl_ctx_free(struct sasl_ctx **ctx);
/* SASL_MECH_BIT()s of the mechanisms that work for every user with a
 * usable secret: PLAIN and LOGIN always; CRAM-MD5 and SCRAM-SHA-256 only
 * when every such user holds a secret of that scheme (and one does). */
unsigned sasl_ctx_usable(const struct sasl_ctx *ctx);
/* The dummy "{SCHEME}..." secret: the same scheme and cost as most users'
 * secrets (for crypt(3), the same setting), for a password nobody knows. */
const char *sasl_ctx_dummy_stored(const struct sasl_ctx *ctx);

/* A user who is unknown, or whose secret cannot serve mech, goes through the
 * same exchange as one whose secret can and fails at its end (SASL_R_FAIL):
 * the replies tell nothing about who exists. */
struct sasl_server *sasl_server_create(enum sasl_mech mech, const struct sasl_ctx *ctx);
/* First call: the initial response if the client sent one with AUTH
 * (has_initial true; an empty initial response "=" is in=NULL, len=0), or
 * has_initial false to get the first challenge. Later calls: each decoded
 * response. out receives the next challenge for SASL_R_CONTINUE (and the
 * server-final message for SCRAM, which is sent as a 334 before success). */
enum sasl_result sasl_server_step(struct sasl_server *s, bool has_initial,
				  const unsigned char *in, size_t len, struct buf *out);
/* After SASL_R_VERIFY: the worker's verdict (true: password matched). */
enum sasl_result sasl_server_verified(struct sasl_server *s, bool ok);

const char *sasl_server_user(const struct sasl_server *s);     /* authcid, or NULL */
const char *sasl_server_password(const struct sasl_server *s); /* SASL_R_VERIFY only */
const char *sasl_server_stored(const struct sasl_server *s);   /* SASL_R_VERIFY only */
/* Waiting for a client response before any credential was checked (or,
 * SCRAM, after a good proof for the client's acknowledgement): an exchange
 * abandoned now made no guess. False while a password is out for
 * verification and after a terminal result. */
bool sasl_server_midway(const struct sasl_server *s);
void sasl_server_free(struct sasl_server **s);

/* Tests only: use nonce instead of a random one, so RFC vectors can be
 * replayed. SCRAM: the server nonce appended to the client's (RFC 7677 §3);
 * CRAM-MD5: the challenge becomes "<nonce@hostname>". Call before the first
 * sasl_server_step(). Never called by hikyaku itself. */
void sasl_server_set_nonce_for_test(struct sasl_server *s, const char *nonce);

#endif
