/* bounce.h — delivery status notifications (RFC 3461, RFC 3464, RFC 6522):
 * a multipart/report; report-type=delivery-status message with a
 * human-readable part, a message/delivery-status part, and the original
 * headers (text/rfc822-headers) or the whole message (message/rfc822) when
 * the sender asked RET=FULL. Runs in the queue manager on a delivery worker;
 * its only I/O is reading a spooled original and the caller's sink. */
#ifndef HK_DELIVER_BOUNCE_H
#define HK_DELIVER_BOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

enum bounce_kind {
	BOUNCE_FAILED,    /* permanent failure or expiry */
	BOUNCE_DELAYED,   /* NOTIFY=DELAY warning */
	BOUNCE_DELIVERED, /* NOTIFY=SUCCESS after final delivery (Maildir, LMTP) */
	BOUNCE_RELAYED,   /* NOTIFY=SUCCESS after relaying to an SMTP server without
	                   * DSN, which will not report (RFC 3461 §5.2.2) */
};

struct bounce_rcpt {
	const char *addr;        /* Final-Recipient, rfc822 */
	const char *orcpt;       /* DSN ORCPT "rfc822;xtext" or NULL */
	const char *status;      /* "5.1.1" */
	const char *diagnostic;  /* "550 5.1.1 User unknown" or NULL */
	const char *remote_mta;  /* host name, or NULL for local */
	uint64_t last_attempt_us;
};

struct bounce_info {
	enum bounce_kind kind;
	const char *reporting_mta; /* our host name */
	const char *qid;           /* the original message's queue id */
	const char *sender;        /* the original envelope sender (the bounce goes there) */
	const char *envid;         /* DSN ENVID or NULL */
	uint64_t arrival_us;
	uint64_t retry_until_us;   /* for BOUNCE_DELAYED: Will-Retry-Until */
	int full;                  /* RET=FULL: include the whole message */
	/* The original message (CRLF): in memory (msg), or, with msg NULL and
	 * msg_fd >= 0, msglen octets of msg_fd from msg_off (the spool file),
	 * read with pread through a 64 KiB window. No original: msg NULL,
	 * msg_fd -1 (or msglen 0). */
	const unsigned char *msg;
	size_t msglen;
	int msg_fd;
	uint64_t msg_off;
	/* NULL: the whole report goes into out. Otherwise the report is passed
	 * to sink in pieces of about 64 KiB as it is built (out holds at most
	 * one piece at a time and is left empty); sink returns 0 or -1. */
	int (*sink)(void *arg, const void *p, size_t len);
	void *sink_arg;
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	uint64_t now_us;           /* Date: of the report; 0 means the current time */
};

/* The whole bounce message (RFC 5322, CRLF lines) into out. The From is
 * MAILER-DAEMON@reporting_mta; Auto-Submitted: auto-replied (RFC 3834).
 * Every line ends in CRLF and is at most 998 octets. When the sender or a
 * recipient address is non-ASCII (SMTPUTF8 mail) the report uses the RFC 6533
 * types and must be sent with SMTPUTF8; part 3 carries 8-bit octets (and the
 * report must go with BODY=8BITMIME) exactly when the original did.
 * Returns 0; -1 if out refused to grow; -2 if reading the original or the
 * sink failed (errno; worth trying again later). out is then left as it
 * was (what went to the sink is the caller's to discard). */
int bounce_build(const struct bounce_info *b, struct buf *out);

#endif
