/* passwd.h — stored secrets in Dovecot's passwd-file schemes:
 *   {CRYPT}, {BLF-CRYPT}, {SHA512-CRYPT}  crypt(3) strings ($y$, $2y$, $6$)
 *   {CRAM-MD5}      Dovecot's 64 hex digits: the HMAC-MD5 outer then inner
 *                   MD5 states after the key block, each word little-endian
 *                   (RFC 2195, as Dovecot's hmac_md5_get_cram_context())
 *   {SCRAM-SHA-256} "iter,salt_b64,storedkey_b64,serverkey_b64" (RFC 7677)
 * Verification of a plaintext password works for every scheme (PLAIN and
 * LOGIN can serve any user); CRAM-MD5 and SCRAM need their own scheme.
 * passwd_verify may be slow (yescrypt, bcrypt): call it on a worker thread.
 * Thread-safe. */
#ifndef HK_AUTH_PASSWD_H
#define HK_AUTH_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

enum passwd_scheme {
	PASSWD_UNKNOWN = 0,
	PASSWD_CRYPT,         /* {CRYPT}: whatever crypt(3) string follows */
	PASSWD_BLF_CRYPT,     /* {BLF-CRYPT}: bcrypt */
	PASSWD_SHA512_CRYPT,  /* {SHA512-CRYPT} */
	PASSWD_CRAM_MD5,
	PASSWD_SCRAM_SHA_256,
};

/* Scheme of a stored "{SCHEME}secret" string; a string without a {SCHEME}
 * prefix is PASSWD_UNKNOWN (hikyaku never accepts plaintext storage). */
enum passwd_scheme passwd_scheme_of(const char *stored);
enum passwd_scheme passwd_scheme_parse(const char *name); /* "SHA512-CRYPT" */
const char *passwd_scheme_name(enum passwd_scheme s);

/* 1: password matches; 0: it does not (or the stored secret is unusable).
 * Constant-time comparisons. */
int passwd_verify(const char *stored, const char *password, size_t len);

/* Make a new "{SCHEME}secret" for password (random salt). CRYPT uses
 * yescrypt; SCRAM-SHA-256 uses 4096 iterations. Returns a malloc'd string or
 * NULL with *error_r. */
char *passwd_hash(enum passwd_scheme s, const char *password, size_t len, const char **error_r);

/* CRAM-MD5 (RFC 2195): expected hex digest of challenge under the stored
 * {CRAM-MD5} secret; 1 if response_hex matches, else 0. */
int passwd_cram_md5_check(const char *stored, const unsigned char *challenge, size_t clen,
			  const char *response_hex, size_t rlen);

/* SCRAM-SHA-256 stored keys from "{SCRAM-SHA-256}iter,salt,stored,server". */
struct passwd_scram {
	unsigned iterations;
	unsigned char salt[64];
	size_t salt_len;
	unsigned char stored_key[32];
	unsigned char server_key[32];
};
int passwd_scram_parse(const char *stored, struct passwd_scram *r);

/* Strict base64 (RFC 4648 §4: padding required, no whitespace), shared with
 * sasl.c for SCRAM attributes. encode: writes a NUL-terminated string into
 * out, returns its length, or 0 when outmax is too small (including the NUL).
 * decode: 0 with *len_r octets in out, -1 if malformed or longer than outmax. */
size_t passwd_b64_encode(const unsigned char *in, size_t len, char *out, size_t outmax);
int passwd_b64_decode(const char *in, size_t len, unsigned char *out, size_t outmax, size_t *len_r);

/* Length of the method and cost prefix of a crypt(3) string: "$y$j9T$",
 * "$2b$10$", "$6$rounds=10000$", "$6$"; 0 when it has none (DES). */
size_t passwd_crypt_params_len(const char *hash);
/* The scheme and cost of a stored secret as a malloc'd string ("crypt
 * $y$j9T$", "scram 4096", "cram-md5"): secrets of one class cost the same
 * to verify. NULL for an unusable secret. */
char *passwd_cost_class(const char *stored);
/* A new secret of the same scheme and cost as stored (for crypt(3), the
 * same setting) for a random password nobody knows: what an unknown user is
 * verified against, so that it costs what a real one does. malloc'd, or
 * NULL when stored is unusable or no randomness is available. */
char *passwd_dummy_like(const char *stored);

/* Overwrite memory the compiler may not optimize away. */
void passwd_wipe(void *p, size_t n);

#endif
