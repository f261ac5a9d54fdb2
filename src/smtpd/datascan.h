/* datascan.h — the DATA / BDAT content scanner (RFC 5321 §4.1.1.4, §4.5.2;
 * RFC 3030). Pure and resumable: feed it the octets as they arrive in any
 * split, it writes unstuffed content to a buf and reports what it saw.
 *
 * The end of DATA is exactly CRLF "." CRLF, where the leading CRLF is the end
 * of the previous line (or the start of the data). A bare LF or a bare CR can
 * never end the message and is flagged (SMTP smuggling, 2023); the session
 * then rejects the whole message once the real end arrives. */
#ifndef HK_SMTPD_DATASCAN_H
#define HK_SMTPD_DATASCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

enum datascan_mode {
	DATASCAN_DOT, /* DATA: dot-stuffed, ends at CRLF.CRLF */
	DATASCAN_RAW, /* BDAT: octets as they are, ended by the caller */
};

/* result flags: anything set means the message must be rejected */
#define DATASCAN_BARE_LF 0x01     /* LF not preceded by CR */
#define DATASCAN_BARE_CR 0x02     /* CR not followed by LF */
#define DATASCAN_LONG_LINE 0x04   /* a line longer than max_line incl. CRLF */
#define DATASCAN_TOO_BIG 0x08     /* content larger than max_size */
#define DATASCAN_HEADER_BIG 0x10  /* header section larger than max_header */
#define DATASCAN_TOO_MANY_HOPS 0x20 /* more than max_received Received: fields */
#define DATASCAN_NUL 0x40         /* a NUL octet (not used to reject; informational) */

struct datascan_limits {
	size_t max_line;       /* 1000 (RFC 5321 §4.5.3.1.6), includes CRLF */
	uint64_t max_size;     /* message size limit, octets of content */
	size_t max_header;     /* header section limit */
	unsigned max_received; /* more than this many Received: is a loop */
};

struct datascan {
	enum datascan_mode mode;
	struct datascan_limits lim;
	/* private state */
	int st;             /* scanner state */
	size_t line_len;    /* octets in the current line so far */
	size_t hdr_match;   /* octets of a field name matched at line start */
	unsigned hdr_cand;  /* the reported fields (datascan.c) still matching */
	bool in_header;     /* still in the header section */
	bool line_start;    /* at the start of a line */
	/* results */
	unsigned flags;
	uint64_t size;          /* content octets produced (after unstuffing) */
	uint64_t header_size;   /* octets of the header section */
	unsigned received;      /* Received: fields seen in the header section */
	bool message_id;        /* a Message-ID: field is in the header section */
	bool date;              /* a Date: field is in the header section */
	bool eight_bit;         /* saw an octet >= 0x80 */
};

void datascan_init(struct datascan *s, enum datascan_mode mode, const struct datascan_limits *lim);

/* Scan in[0..len). Content goes to out (stops appending once TOO_BIG is set,
 * or if out refuses the append — that also sets TOO_BIG). In DOT mode, when
 * the terminating CRLF.CRLF has been consumed *done_r becomes true and the
 * return value is the number of octets consumed (the rest belongs to the next
 * command). The terminating ".CRLF" is not content; the CRLF before it is. In
 * RAW mode everything is consumed and *done_r stays false. */
size_t datascan_feed(struct datascan *s, const unsigned char *in, size_t len, struct buf *out,
		     bool *done_r);

/* RAW mode, at BDAT LAST: settle a trailing CR (it becomes BARE_CR). */
void datascan_finish(struct datascan *s);

#endif
