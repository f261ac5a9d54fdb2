/* address.h — RFC 5321 §4.1.2 Path / Mailbox parser (with RFC 6531 UTF-8).
 * Pure, no I/O; the input is hostile (it comes straight from MAIL/RCPT).
 * Limits from RFC 5321 §4.5.3.1: local part 64, domain 255, path 256 octets. */
#ifndef HK_MAIL_ADDRESS_H
#define HK_MAIL_ADDRESS_H

#include <stdbool.h>
#include <stddef.h>

#define MAIL_LOCAL_MAX 64
#define MAIL_DOMAIN_MAX 255
#define MAIL_PATH_MAX 256

/* flags for mail_addr_parse_path() */
#define MAIL_ADDR_ALLOW_NULL 0x1       /* "<>" is valid (MAIL FROM) */
#define MAIL_ADDR_ALLOW_UTF8 0x2       /* non-ASCII allowed (SMTPUTF8 given) */
#define MAIL_ADDR_ALLOW_POSTMASTER 0x4 /* "<postmaster>" without domain (RCPT) */

/* parse results besides 0 */
#define MAIL_ADDR_ERR_SYNTAX -1 /* malformed: reply 501 5.1.3 / 553 5.1.3 */
#define MAIL_ADDR_ERR_UTF8 -2   /* well-formed UTF-8 address but SMTPUTF8 not given: 553 5.6.7 */
#define MAIL_ADDR_ERR_LENGTH -3 /* too long: 501 5.1.3 (local) / 501 5.1.3 */
#define MAIL_ADDR_ERR_IDNA -4   /* U-label domain that IDNA2008 refuses: 553 5.1.3 */

struct mail_addr {
	/* Local part exactly as sent (a Quoted-string keeps its quotes). */
	char local[MAIL_LOCAL_MAX + 1];
	/* Domain lowercased for ASCII letters, or an address literal "[...]". */
	char domain[MAIL_DOMAIN_MAX + 1];
	/* The same domain in A-label form (RFC 5890 §2.3.2.1, mail/idna.h),
	 * what hikyaku compares, routes and looks up; equal to domain when
	 * that is ASCII or a literal. */
	char domain_ascii[MAIL_DOMAIN_MAX + 1];
	bool is_null;       /* "<>" */
	bool is_postmaster; /* "<postmaster>" with no domain */
	bool is_utf8;       /* contains octets >= 0x80 */
};

/* Parse a Path at p[0..len): "<" [A-d-l ":"] Mailbox ">" (the source route is
 * accepted and ignored, RFC 5321 §4.1.2/§C). Parsing stops after ">"; the
 * number of octets used is stored in *consumed_r so the caller can parse the
 * ESMTP parameters that follow. Returns 0 or a MAIL_ADDR_ERR_*; *error_r
 * gets a short human reason. Non-ASCII must be valid UTF-8 (RFC 3629). */
int mail_addr_parse_path(const char *p, size_t len, unsigned flags, struct mail_addr *r,
			 size_t *consumed_r, const char **error_r);

/* Format "local@domain" ("" for the null path, "postmaster" for bare
 * postmaster) into out; returns the length, or -1 if it did not fit. */
int mail_addr_format(const struct mail_addr *a, char *out, size_t outlen);

/* xtext (RFC 3461 §4): validate; used for ENVID and ORCPT. */
bool mail_xtext_valid(const char *p, size_t len);
/* Upper-case the hex digits of every "+HH" in a valid xtext (NUL-terminated),
 * so that what we pass on is what RFC 3461 allows. */
void mail_xtext_canon(char *p);

/* Is p[0..len) a Domain or an address literal (RFC 5321 §4.1.3), as the
 * EHLO/HELO argument should be (§4.1.1.1)? U-labels only when utf8; never
 * a C1 control (U+0080..U+009F). For the Received field (§4.4). */
bool mail_helo_domain_valid(const char *p, size_t len, bool utf8);

/* Length of the well-formed UTF-8 sequence (RFC 3629) starting at p[0]: 1 for
 * an ASCII octet, 2..4 otherwise, or 0 if malformed or truncated (overlongs,
 * surrogates and code points above U+10FFFF are malformed). */
size_t mail_utf8_char_len(const char *p, size_t len);

#endif
