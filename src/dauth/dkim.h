/* dkim.h — DomainKeys Identified Mail (RFC 6376) with rsa-sha256 and
 * ed25519-sha256 (RFC 8463): the tag-list parser (§3.2, shared by DMARC and
 * ARC), the DKIM-Signature and key-record parsers, streaming header/body
 * canonicalization (§3.4), a verifier and a signer, both fed the message as
 * it streams in.
 *
 * Library code with no process of its own: smtpd runs the verifier (inbound)
 * and the signer (outbound, from authenticated or local senders); the private
 * key operation of the signer is a callback that goes to the keys process
 * (src/tls/keyproxy.c, KEYPROXY_OP_DKIM_SIGN), which holds the DKIM keys.
 * Hostile input: the message (header fields, DKIM-Signature tags) and every
 * DNS answer (key records). Everything is bounded: signatures evaluated,
 * header section size, tags per list, key sizes.
 *
 * The message fed in is the DATA/BDAT content after dot-unstuffing: header
 * section, empty line, body, CRLF line ends, in chunks split anywhere. */
#ifndef HK_DAUTH_DKIM_H
#define HK_DAUTH_DKIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>

#include "lib/buf.h"

struct dns;

#define DKIM_SIGS_MAX 8              /* signatures evaluated per message */
#define DKIM_HEADER_MAX (256 * 1024) /* header section kept for verification */
#define DKIM_FIELDS_MAX 1000         /* header fields kept */
#define DKIM_TAGS_MAX 32             /* tags in one tag list */
#define DKIM_HNAMES_MAX 64           /* names in one h= */
#define DKIM_RSA_MIN_BITS 1024       /* verification: smaller keys are permerror */
#define DKIM_RSA_MAX_BITS 8192
#define DKIM_SIG_MAX 1024   /* decoded b= octets (RSA-8192) */
#define DKIM_KEY_MAX 1100   /* decoded p= octets (RSA-8192 SPKI) */
#define DKIM_TXT_MAX 4096   /* joined key record text */
#define DKIM_B_PREFIX_LEN 8 /* header.b= prefix (RFC 6008 §4) */

/* ---- tag lists (RFC 6376 §3.2) ------------------------------------------ */

/* One tag=value; views into the parsed text. value has its leading and
 * trailing FWS removed but keeps inner FWS (b=, h= may be folded). */
struct dkim_tag {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

struct dkim_tags {
	struct dkim_tag tag[DKIM_TAGS_MAX];
	size_t n;
};

/* Parse a tag-list; a trailing ';' is allowed. -1 with *error_r on a
 * syntax error, a duplicate tag (§3.2: "MUST" be a permerror) or more than
 * DKIM_TAGS_MAX tags. Tag names are case-sensitive. */
int dkim_tags_parse(const char *p, size_t len, struct dkim_tags *tags, const char **error_r);
/* The tag named name, or NULL. */
const struct dkim_tag *dkim_tags_get(const struct dkim_tags *tags, const char *name);

/* ---- algorithms, canonicalization --------------------------------------- */

enum dkim_alg {
	DKIM_ALG_RSA_SHA1 = 1, /* verified and reported, never a pass (RFC 8301) */
	DKIM_ALG_RSA_SHA256 = 2,
	DKIM_ALG_ED25519_SHA256 = 3,
};

enum dkim_canon {
	DKIM_CANON_SIMPLE = 0,
	DKIM_CANON_RELAXED = 1,
};

const char *dkim_alg_name(enum dkim_alg alg); /* "rsa-sha256" */

/* One header field, name ':' value with its folding CRLFs but without the
 * final CRLF, canonicalized (§3.4.1, §3.4.2) and appended to out with CRLF. */
int dkim_canon_header(enum dkim_canon c, const char *field, size_t len, struct buf *out);

/* Streaming body canonicalization (§3.4.3, §3.4.4): fed the body in chunks
 * split anywhere, emits canonical octets (in pieces) to emit. Trailing empty
 * lines are held back until a non-empty line shows they are not trailing;
 * l= (limit) cuts the canonical output. Plain struct so it can be embedded;
 * fields are private. */
typedef void dkim_emit_fn(void *arg, const void *p, size_t n);
struct dkim_bodycanon {
	enum dkim_canon canon;
	dkim_emit_fn *emit;
	void *arg;
	bool has_limit;
	uint64_t limit;   /* l=: canonical octets hashed at most */
	uint64_t emitted; /* canonical octets emitted so far */
	uint64_t blank;   /* empty lines held back */
	bool wsp;         /* relaxed: whitespace held back in the current line */
	bool cr;          /* a CR is held back */
	bool line_empty;  /* nothing emitted on the current line yet */
	bool any;         /* a non-empty line was emitted (relaxed: empty body rule) */
};
void dkim_bodycanon_init(struct dkim_bodycanon *bc, enum dkim_canon c, bool has_limit,
                         uint64_t limit, dkim_emit_fn *emit, void *arg);
void dkim_bodycanon_feed(struct dkim_bodycanon *bc, const void *p, size_t n);
/* End of body: the final CRLF rules of §3.4.3 / §3.4.4. */
void dkim_bodycanon_finish(struct dkim_bodycanon *bc);

/* ---- DKIM-Signature (RFC 6376 §3.5) -------------------------------------- */

struct dkim_sig {
	enum dkim_alg alg;
	enum dkim_canon hcanon, bcanon;
	char domain[256];                     /* d=, lower case */
	char selector[256];                   /* s= */
	char auid[256];                       /* i=; default "@" d= */
	char b_prefix[DKIM_B_PREFIX_LEN + 1]; /* header.b for Authentication-Results */
	char *hnames[DKIM_HNAMES_MAX];        /* h=, as written */
	size_t n_hnames;
	unsigned char bh[64];
	size_t bh_len;
	unsigned char b[DKIM_SIG_MAX];
	size_t b_len;
	bool has_l;
	uint64_t l;
	bool has_t, has_x;
	uint64_t t, x;
};
/* Parse the value of a DKIM-Signature field (after the colon). -1 with
 * *error_r on anything §3.5 / §6.1.1 make a permerror: a missing required
 * tag, v= not 1, unknown a= or c=, i= not in d=, h= without From, x < t,
 * bad base64. dkim_sig_clear frees what a parse allocated (always call it). */
int dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig, const char **error_r);
void dkim_sig_clear(struct dkim_sig *sig);

/* ---- key records (RFC 6376 §3.6.1) ---------------------------------------- */

enum dkim_key_type {
	DKIM_KEY_RSA = 1,
	DKIM_KEY_ED25519 = 2,
};

struct dkim_key {
	enum dkim_key_type type;       /* k=, default rsa */
	bool revoked;                  /* p= empty */
	bool testing;                  /* t=y */
	bool strict;                   /* t=s: i= must be d= exactly, no subdomain */
	bool sha1_ok, sha256_ok;       /* h=, default both */
	unsigned char p[DKIM_KEY_MAX]; /* decoded p= (SPKI DER for rsa, 32 octets for ed25519) */
	size_t p_len;
};
/* -1 with *error_r on a syntax error, v= not DKIM1, unknown k=, s= that
 * excludes email, bad base64. A revoked key parses (revoked = true). */
int dkim_key_parse(const char *txt, size_t len, struct dkim_key *key, const char **error_r);

/* ---- key lookup: injectable resolver ------------------------------------- */

enum dkim_dns_status {
	DKIM_DNS_OK,       /* txts[] are the TXT records, each joined */
	DKIM_DNS_NOTFOUND, /* NXDOMAIN or NODATA: permerror "no key" */
	DKIM_DNS_TEMPFAIL, /* SERVFAIL, timeout: temperror */
};
typedef void dkim_txt_cb(void *arg, enum dkim_dns_status st, const char *const *txts, size_t n);
struct dkim_resolver {
	/* Look up TXT at name; call cb exactly once (now or later) unless
	 * cancelled. Returns a handle for cancel (may be NULL if cb already ran). */
	void *(*lookup)(void *ctx, const char *name, dkim_txt_cb *cb, void *arg);
	void (*cancel)(void *ctx, void *handle);
	void *ctx;
};
/* The default: dns_resolve_raw(TXT) on dns (src/dns). */
void dkim_resolver_dns(struct dkim_resolver *r, struct dns *dns);

/* ---- verifier -------------------------------------------------------------- */

enum dkim_result {
	DKIM_RESULT_NONE = 0,
	DKIM_RESULT_PASS,
	DKIM_RESULT_FAIL,      /* signature or body hash did not verify */
	DKIM_RESULT_POLICY,    /* verifies, but unacceptable (t=s with subdomain i=, rsa-sha1, x=
	                          passed) */
	DKIM_RESULT_NEUTRAL,   /* RFC 8601: syntax error in the signature */
	DKIM_RESULT_TEMPERROR, /* DNS */
	DKIM_RESULT_PERMERROR, /* no key, revoked key, key unusable */
};
const char *dkim_result_name(enum dkim_result r); /* "pass", ... as in RFC 8601 §2.7.1 */

/* One evaluated signature, for Authentication-Results (RFC 8601 §2.7.1:
 * header.d, header.s, header.i, header.a, header.b). */
struct dkim_verify_sig {
	enum dkim_result result;
	const char *reason;      /* static text, "" for pass */
	bool body_hash_mismatch; /* result FAIL because bh= did not match */
	bool testing;            /* key t=y: the result must not count (§3.6.1) */
	char domain[256];        /* "" if the signature did not parse that far */
	char selector[256];
	char auid[256];
	char algorithm[24]; /* "rsa-sha256", "" if unknown */
	char b_prefix[DKIM_B_PREFIX_LEN + 1];
	unsigned key_bits; /* 0 if no key was used */
};

struct dkim_verify_conf {
	size_t sigs_max;   /* 0: DKIM_SIGS_MAX */
	size_t header_max; /* 0: DKIM_HEADER_MAX */
	time_t now;        /* 0: time(NULL) at finish (tests set a clock) */
};

struct dkim_verify;
/* resolver is copied. */
struct dkim_verify *dkim_verify_create(const struct dkim_verify_conf *conf,
                                       const struct dkim_resolver *resolver);
/* The message as it streams in. Never fails: a header section past the bound
 * stops verification (signatures in it are reported permerror/neutral). */
void dkim_verify_feed(struct dkim_verify *v, const void *data, size_t len);
/* End of message: starts the key lookups. Returns 1 if the results are ready
 * now (no signatures, or the resolver answered at once; cb is not called),
 * 0 if cb will be called once when they are. */
typedef void dkim_verify_cb(struct dkim_verify *v, void *arg);
int dkim_verify_finish(struct dkim_verify *v, dkim_verify_cb *cb, void *arg);
/* Cancel pending lookups; cb is not called. Safe after completion. */
void dkim_verify_cancel(struct dkim_verify *v);
/* Results, after completion: one per signature evaluated, in header order
 * (top first). 0 signatures: "dkim=none". */
size_t dkim_verify_count(const struct dkim_verify *v);
const struct dkim_verify_sig *dkim_verify_result(const struct dkim_verify *v, size_t i);
/* Cancels pending lookups (cb not called) and frees. */
void dkim_verify_free(struct dkim_verify **v);
/* The dkim results as RFC 8601 resinfo, appended to out: "dkim=none", or
 * per signature "dkim=pass header.d=example.org header.s=s1
 * header.a=rsa-sha256 header.b=\"AbCdEfGh\"" (a comment with the reason
 * when not pass), separated by ";\r\n\t" (folding). The caller writes
 * "Authentication-Results: authserv-id;" before and the other methods after.
 * Values from the message are quoted or left out when unsafe. */
int dkim_verify_ar(const struct dkim_verify *v, struct buf *out);

/* ---- signer ------------------------------------------------------------------ */

struct dkim_sign_key {
	const char *domain;   /* d= */
	const char *selector; /* s= */
	enum dkim_alg alg;    /* DKIM_ALG_RSA_SHA256 or DKIM_ALG_ED25519_SHA256 */
	uint64_t key_id;      /* for the sign callback: the keys process's DKIM key index */
};

/* The private-key operation on hash (the SHA-256 of the canonical header
 * data, 32 octets): RSA PKCS#1 v1.5 with SHA-256 DigestInfo, or Ed25519
 * over the 32 octets (RFC 8463 §3). Call done exactly once, now or later,
 * with the signature or with sig NULL and an error text. */
typedef void dkim_sign_done_fn(void *done_arg, const unsigned char *sig, size_t len,
                               const char *error);
typedef void dkim_sign_fn(void *ctx, const struct dkim_sign_key *key, const unsigned char *hash,
                          size_t hash_len, dkim_sign_done_fn *done, void *done_arg);

struct dkim_sign_conf {
	const struct dkim_sign_key *keys; /* one signature per key: dual signing */
	size_t n_keys;                    /* 1..DKIM_SIGS_MAX */
	const char *const *headers;       /* NULL: the default list (From, To, Subject, Date
	                                   * oversigned; Cc, Reply-To, Message-ID,
	                                   * MIME-Version, Content-Type, In-Reply-To,
	                                   * References if present) */
	size_t n_headers;
	const char *auid;  /* i=, NULL: none */
	time_t now;        /* t=; 0: time(NULL) */
	uint64_t expire_s; /* x= t + expire_s; 0: no x= */
	dkim_sign_fn *sign;
	void *sign_ctx;
};

struct dkim_sign;
/* conf and its strings must outlive the signer. */
struct dkim_sign *dkim_sign_create(const struct dkim_sign_conf *conf);
/* The message as it streams in; -1 if the header section passes
 * DKIM_HEADER_MAX (then finish fails too). */
int dkim_sign_feed(struct dkim_sign *s, const void *data, size_t len);
/* End of message: asks sign for each key. Returns 1 if the header is ready
 * now (cb not called), 0 if cb will be called once, -1 with *error_r. */
typedef void dkim_sign_cb(struct dkim_sign *s, void *arg);
int dkim_sign_finish(struct dkim_sign *s, dkim_sign_cb *cb, void *arg, const char **error_r);
/* After completion: the DKIM-Signature field(s) to prepend, folded, each
 * ending in CRLF; NULL if signing failed (then *error_r says why). */
const char *dkim_sign_header(const struct dkim_sign *s, const char **error_r);
/* Not while a sign callback is pending (keyproxy's answers are synchronous). */
void dkim_sign_free(struct dkim_sign **s);

/* The keys to sign mail from domain with (config dkim.sign[] entries of that
 * domain, exact, case-insensitive) into keys[max], for dkim_sign_conf.keys:
 * key_id is the keys process's DKIM key index. The strings point into conf.
 * Returns how many (0: do not sign). */
struct conf;
size_t dkim_sign_keys_for(const struct conf *conf, const char *domain, struct dkim_sign_key *keys,
                          size_t max);

/* ---- private keys (keys process, CLI, tests) ------------------------------- */

/* The private operation of dkim_sign_fn with a key in this process: RSA
 * (PKCS#1 v1.5, SHA-256 DigestInfo) or Ed25519. out holds DKIM_SIG_MAX. */
int dkim_pkey_sign(EVP_PKEY *pkey, const unsigned char *hash, size_t hash_len, unsigned char *out,
                   size_t *out_len, const char **error_r);
/* The algorithm a key signs with: RSA (>= 1024 bits) -> rsa-sha256,
 * Ed25519 -> ed25519-sha256; -1 for anything else. */
int dkim_pkey_alg(EVP_PKEY *pkey, enum dkim_alg *alg_r);
/* The p= value of the key's public half (base64 of the SPKI DER for RSA,
 * of the raw 32 octets for Ed25519), appended to out. */
int dkim_pkey_public_b64(EVP_PKEY *pkey, struct buf *out);
/* A dkim_sign_fn over in-process keys: ctx is a struct dkim_pkeys. */
struct dkim_pkeys {
	EVP_PKEY *const *keys; /* indexed by dkim_sign_key.key_id */
	size_t n;
};
void dkim_sign_with_pkeys(void *ctx, const struct dkim_sign_key *key, const unsigned char *hash,
                          size_t hash_len, dkim_sign_done_fn *done, void *done_arg);

#endif
