/* header.h — RFC 5322 header fields over (ptr, len) views: walking the
 * fields of a header section, and the pieces that domain authentication
 * reads from them: the author domain of From (RFC 7489 §3.1, §6.6.1) and
 * the authserv-id of an Authentication-Results field (RFC 8601 §2.2).
 * Pure, no I/O; every input is hostile (message content). */
#ifndef HK_MAIL_HEADER_H
#define HK_MAIL_HEADER_H

#include <stdbool.h>
#include <stddef.h>

struct mail_hdr_field {
	/* The name before the colon (WSP before the colon trimmed, RFC 5322
	 * §4.5.3); name_len 0 for a line that is not a field (no colon). */
	const char *name;
	size_t name_len;
	/* After the colon up to the field's last CRLF, folds kept. */
	const char *value;
	size_t value_len;
	size_t off, len; /* the whole field in the section, with its last CRLF */
};

/* The field of hdr[0..len) at *pos (0 for the first): false at the end. A
 * field runs over the lines that start with WSP after it (folding, RFC
 * 5322 §2.2.3); the last one may lack its CRLF. */
bool mail_hdr_next(const char *hdr, size_t len, size_t *pos, struct mail_hdr_field *f);
/* Is the field's name name, without case? */
bool mail_hdr_name_is(const struct mail_hdr_field *f, const char *name);

/* The authserv-id of an Authentication-Results value (RFC 8601 §2.2: after
 * CFWS, a value: a token or a quoted-string, whose quotes are not part of
 * it): 0, or -1 when there is none. */
int mail_hdr_ar_authserv_id(const char *v, size_t len, const char **id_r, size_t *id_len_r);

/* From (RFC 5322 §3.6.2): the domain of its author, lowercased, into
 * out[outlen]. A mailbox-list whose mailboxes all share one domain gives
 * that domain. Returns 0; MAIL_HDR_FROM_MULTI for authors of different
 * domains; MAIL_HDR_FROM_BAD for a value without a usable address (empty,
 * a group, no "@", a domain that is no domain name). */
#define MAIL_HDR_FROM_BAD -1
#define MAIL_HDR_FROM_MULTI -2
int mail_hdr_from_domain(const char *v, size_t len, char *out, size_t outlen);

#endif
