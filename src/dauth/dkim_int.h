/* dkim_int.h — what the DKIM verifier, signer (and ARC) share inside
 * src/dauth: the header section collected from the stream and split into
 * fields, and the header hash input of §3.7. Not a public header. */
#ifndef HK_DAUTH_DKIM_INT_H
#define HK_DAUTH_DKIM_INT_H

#include "dauth/dkim.h"

struct dkim_field {
	size_t off;      /* into dkim_msg.hdr */
	size_t len;      /* without the final CRLF */
	size_t name_len; /* before the colon, trailing WSP removed */
};

/* The header section as it streams in, bounded; then the body. */
struct dkim_msg {
	struct buf hdr;
	size_t header_max;
	unsigned eoh_state;
	bool in_body;
	bool overflow; /* header section passed header_max: not kept whole */
	struct dkim_field *fields;
	size_t n_fields;
	bool too_many_fields;
};

void dkim_msg_init(struct dkim_msg *m, size_t header_max);
void dkim_msg_clear(struct dkim_msg *m);
/* Feed message octets; returns how many belong to the header section (the
 * rest is body). Sets in_body when the empty line has been seen; the
 * fields are split then (or by dkim_msg_end). */
size_t dkim_msg_feed(struct dkim_msg *m, const unsigned char *p, size_t n);
/* Where the header section ends, without keeping it: *state (0 at the
 * start) and *in_body as dkim_msg_feed keeps them; returns the octets of p
 * that belong to the header section. */
size_t dkim_eoh_scan(unsigned *state, bool *in_body, const unsigned char *p, size_t n);
/* The header section the verifier keeps (for ARC to share). */
struct dkim_msg *dkim_verify_msg(struct dkim_verify *v);
/* End of message without an empty line: all of it was header. */
void dkim_msg_end(struct dkim_msg *m);
bool dkim_field_is(const struct dkim_msg *m, const struct dkim_field *f, const char *name);
/* The value of field f (after the colon). */
const char *dkim_field_value(const struct dkim_msg *m, const struct dkim_field *f, size_t *len_r);
/* §3.7: the h= fields (bottom-up instances, missing ones contribute
 * nothing) canonicalized into out, then sigfield (name:value, its b= value
 * already removed) canonicalized without the final CRLF. */
int dkim_hash_input(const struct dkim_msg *m, enum dkim_canon c, char *const *hnames, size_t n,
                    const char *sigfield, size_t siglen, struct buf *out);
/* The field text with the value of its b= tag removed (§3.7), into out. */
int dkim_strip_b(const char *field, size_t len, struct buf *out);

/* The public key of a key record (RSA SPKI or RSAPublicKey, Ed25519 raw),
 * its size in *bits_r; NULL if unusable. */
EVP_PKEY *dkim_key_pkey(const struct dkim_key *key, unsigned *bits_r);
/* Does sig verify over data (the header hash input) with pk under alg? */
bool dkim_crypto_verify(enum dkim_alg alg, EVP_PKEY *pk, const unsigned char *sig, size_t sig_len,
                        const struct buf *data);
/* dkim_sig_parse for ARC-Message-Signature (RFC 8617 §4.1.2): no v=, i= is
 * the instance (1..50) into *instance_r, h= need not name From. */
int dkim_sig_parse_ams(const char *value, size_t len, struct dkim_sig *sig, unsigned *instance_r,
                       const char **error_r);

#endif
