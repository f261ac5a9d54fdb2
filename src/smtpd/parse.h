/* parse.h — pure SMTP command-line parsing for the server (RFC 5321 §4.1).
 * Runs in smtpd; every input is hostile. No I/O, no allocation: views into
 * the caller's line plus fixed-size result structs. */
#ifndef HK_SMTPD_PARSE_H
#define HK_SMTPD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mail/address.h"
#include "mail/smtp_params.h" /* enum smtp_body, smtp_ret, SMTP_NOTIFY_* */

/* A precise reply for a parse failure: code, RFC 3463 enhanced code, text. */
struct smtp_perr {
	int code;         /* e.g. 501 */
	const char *enh;  /* e.g. "5.5.4" */
	const char *text; /* e.g. "Syntax error in parameters" */
};

/* One command line, without its CRLF, split into verb and argument views.
 * verb: the first run of letters (1..16); args: after exactly one SP (further
 * leading spaces are tolerated), trailing spaces trimmed. A NUL octet, or a
 * bare CR/LF inside the line, is a syntax error (500 5.5.2). */
struct smtp_cmdline {
	const char *verb;
	size_t verb_len;
	const char *args;
	size_t args_len;
};
int smtp_cmdline_split(const char *line, size_t len, struct smtp_cmdline *r, struct smtp_perr *err);

struct smtp_mail_args {
	struct mail_addr from;
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
	enum smtp_ret ret;
	char envid[SMTP_ENVID_MAX + 1]; /* xtext as sent, "" if absent */
};

struct smtp_rcpt_args {
	struct mail_addr to;
	unsigned notify;                /* SMTP_NOTIFY_* bits, 0 if absent */
	char orcpt[SMTP_ORCPT_MAX + 1]; /* "rfc822;xtext" as sent, "" if absent */
};

/* args is what follows the verb, e.g. "FROM:<a@b> SIZE=10 BODY=8BITMIME".
 * "FROM:" is case-insensitive; RFC 5321 forbids a space after the colon but
 * common clients send one, so one run of spaces is tolerated.
 * Parameters: SIZE, BODY (7BIT|8BITMIME), SMTPUTF8, RET (FULL|HDRS), ENVID
 * (xtext), and AUTH (accepted and ignored, RFC 4954 §5). Repeated or unknown
 * parameters: 555 5.5.4; a known parameter with a bad value: 501 5.5.4.
 * Bad path: 501 5.1.7 (sender).
 * A UTF-8 sender without SMTPUTF8: 553 5.6.7 (RFC 6531 §3.5). */
int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *r, struct smtp_perr *err);

/* "TO:<path> [NOTIFY=...] [ORCPT=...]". utf8_ok: the transaction has
 * SMTPUTF8. NOTIFY is NEVER alone, or a comma list of SUCCESS/FAILURE/DELAY.
 * ORCPT is addr-type ";" xtext (RFC 3461 §4.2). Bad path: 501 5.1.3. */
int smtp_parse_rcpt(const char *args, size_t len, bool utf8_ok, struct smtp_rcpt_args *r,
		    struct smtp_perr *err);

/* "<size> [LAST]" (RFC 3030). size bounded by max. 501 5.5.4 on error. */
int smtp_parse_bdat(const char *args, size_t len, uint64_t max, uint64_t *size_r, bool *last_r,
		    struct smtp_perr *err);

/* EHLO/HELO argument: a domain or address literal; lenient about the exact
 * characters (many clients send junk) but bounded to 255 octets, no spaces
 * inside, printable. 501 5.5.4 on error. */
int smtp_parse_helo(const char *args, size_t len, struct smtp_perr *err);

#endif
