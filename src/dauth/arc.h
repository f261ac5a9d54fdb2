/* arc.h — Authenticated Received Chain (RFC 8617): verify the chain of a
 * message as it streams in, and seal a message (add the next ARC set) when
 * hikyaku forwards it after changing or re-routing it. Built on the DKIM
 * pieces (src/dauth/dkim.h: tag lists, canonicalization, key records, the
 * injectable resolver, the sign callback that goes to the keys process).
 *
 * Library code; runs in smtpd. Hostile input: the message (ARC header
 * fields of earlier hops) and the DNS answers. At most ARC_SETS_MAX sets. */
#ifndef HK_DAUTH_ARC_H
#define HK_DAUTH_ARC_H

#include "dauth/dkim.h"

#define ARC_SETS_MAX 50 /* RFC 8617 §4.2.1: i= is 1..50 */

enum arc_result {
	ARC_RESULT_NONE = 0, /* no ARC sets */
	ARC_RESULT_PASS,
	ARC_RESULT_FAIL, /* structure, a seal or the latest AMS did not validate, or DNS */
};
const char *arc_result_name(enum arc_result r); /* "none", "pass", "fail" (RFC 8601 arc=) */

/* ---- verify (RFC 8617 §5.2) ------------------------------------------------- */

struct arc_verify;
/* resolver is copied; now 0: time(NULL). */
struct arc_verify *arc_verify_create(time_t now, const struct dkim_resolver *resolver);
/* The same, sharing the header section that dkim keeps (one copy, split
 * once): dkim must be fed every octet before this verifier is, and must
 * outlive it. */
struct arc_verify *arc_verify_create_shared(time_t now, const struct dkim_resolver *resolver,
                                            struct dkim_verify *dkim);
void arc_verify_feed(struct arc_verify *v, const void *data, size_t len);
/* 1: the result is ready now (cb not called); 0: cb is called once later. */
typedef void arc_verify_cb(struct arc_verify *v, void *arg);
int arc_verify_finish(struct arc_verify *v, arc_verify_cb *cb, void *arg);
/* After completion: the chain's result, the number of sets, why (static). */
enum arc_result arc_verify_result(const struct arc_verify *v, unsigned *sets_r,
                                  const char **reason_r);
/* Gives up on the lookups still pending (cb is not called from now on):
 * the chain is a fail with reason (static), as a DNS failure is (§5.2). */
void arc_verify_cancel(struct arc_verify *v, const char *reason);
/* Cancels pending lookups (cb not called) and frees. */
void arc_verify_free(struct arc_verify **v);

/* ---- seal (RFC 8617 §5.1) ------------------------------------------------------ */

struct arc_seal_conf {
	const struct dkim_sign_key *key; /* d=, s=, key id for sign; rsa-sha256 only
	                                  * (RFC 8617 §4.1.3; receivers know no other).
	                                  * Verification accepts ed25519-sha256 too. */
	const char *authres;             /* ARC-Authentication-Results payload after "i=N; ":
	                                  * "authserv-id; spf=pass ...", what our own
	                                  * Authentication-Results says */
	enum arc_result chain;           /* arc_verify's result for the incoming message: cv= */
	time_t now;                      /* t=; 0: time(NULL) */
	dkim_sign_fn *sign;
	void *sign_ctx;
};

struct arc_seal;
/* conf and its strings must outlive the sealer. */
struct arc_seal *arc_seal_create(const struct arc_seal_conf *conf);
/* -1 if the header section passes DKIM_HEADER_MAX. */
int arc_seal_feed(struct arc_seal *s, const void *data, size_t len);
/* 1: the header fields are ready now (cb not called); 0: cb later; -1. */
typedef void arc_seal_cb(struct arc_seal *s, void *arg);
int arc_seal_finish(struct arc_seal *s, arc_seal_cb *cb, void *arg, const char **error_r);
/* ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results (in that
 * order, each ending in CRLF) to prepend; NULL with *error_r on failure. */
const char *arc_seal_header(const struct arc_seal *s, const char **error_r);
/* Not while a sign callback is pending. */
void arc_seal_free(struct arc_seal **s);

#endif
