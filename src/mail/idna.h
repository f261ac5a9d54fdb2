/* idna.h — internationalized domain names (RFC 5890, RFC 5891, RFC 6531).
 * Two spellings name one domain: the U-label form a client may write with
 * SMTPUTF8 ("例子.test") and the A-label form DNS knows ("xn--fsqu00a.test").
 * hikyaku compares, routes and looks up domains by their A-label form and
 * keeps addresses as the client wrote them.
 * Pure, no I/O; the input is hostile (it comes from RCPT, MAIL and the
 * envelope of queued mail). */
#ifndef HK_MAIL_IDNA_H
#define HK_MAIL_IDNA_H

#include <stdbool.h>
#include <stddef.h>

/* A domain name in A-label form is at most 255 octets (RFC 1035 §2.3.4). */
#define MAIL_IDNA_MAX 255

/* The A-label form of in[0..len) into out (NUL-terminated, outlen bytes):
 * an ASCII domain is only lowercased; one with non-ASCII octets is mapped
 * and converted by IDNA2008 with the UTS #46 non-transitional mapping (as
 * browsers and Postfix do), which lowercases too. Returns 0, or -1 with a
 * short reason in *error_r when the name is not a valid IDN or does not fit. */
int mail_domain_to_ascii(const char *in, size_t len, char *out, size_t outlen,
                         const char **error_r);

/* Are a and b (NUL-terminated, either form) the same domain? A domain that
 * cannot be converted equals nothing. */
bool mail_domain_eq(const char *a, const char *b);

/* Does s contain an octet >= 0x80? */
bool mail_str_is_utf8(const char *s, size_t len);

#endif
