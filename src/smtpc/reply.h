/* reply.h — SMTP/LMTP reply parser for the client (RFC 5321 §4.2, enhanced
 * status codes RFC 3463/RFC 2034). Pure and resumable: feed octets as they
 * arrive; a complete (possibly multiline) reply comes out. The server is
 * hostile: lines and replies are bounded, malformed input is an error. */
#ifndef HK_SMTPC_REPLY_H
#define HK_SMTPC_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#define SMTP_REPLY_LINE_MAX 4096 /* generous; RFC 5321 §4.5.3.1.5 says 512 */
#define SMTP_REPLY_LINES_MAX 100
#define SMTP_REPLY_TEXT_MAX 8192

struct smtp_reply {
	int code;            /* 200..599 */
	char enh[16];        /* "2.1.5", "" when the reply has none */
	char text[SMTP_REPLY_TEXT_MAX]; /* lines joined with '\n', without code/enh */
	size_t nlines;
};

struct smtp_reply_parser {
	/* private */
	char line[SMTP_REPLY_LINE_MAX + 1];
	size_t len;
	bool overflow;
	struct smtp_reply cur;
	bool in_reply;
};

void smtp_reply_parser_init(struct smtp_reply_parser *p);
/* Consume from in[0..len). Returns 1 when a whole reply is in *r (the octets
 * used are in *used_r; call again with the rest), 0 when more input is
 * needed (everything used), -1 on a protocol error (*error_r says why). */
int smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len, size_t *used_r,
		     struct smtp_reply *r, const char **error_r);

/* "250-SIZE 1000" style EHLO keywords from a parsed EHLO reply. */
struct smtp_ehlo_caps {
	bool pipelining, size, eightbitmime, smtputf8, starttls, chunking, dsn, enhanced;
	unsigned long long size_max; /* 0: no limit given */
	bool auth_plain, auth_login;
};
void smtp_ehlo_caps_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps);

#endif
