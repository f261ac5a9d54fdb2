/* hdr.h — what sendmail does to the message it reads (pure, no I/O):
 * line ends to CRLF and the lone-dot end (sendmail_msg_read), and the
 * header scan: which of From/Date/Message-ID are there, the recipients of
 * To/Cc/Bcc for -t, and the Bcc fields taken out. The input is the
 * caller's, passed on to the daemon: fuzz_sendmail drives it. */
#ifndef HK_SENDMAIL_HDR_H
#define HK_SENDMAIL_HDR_H

#include <stdbool.h>
#include <stddef.h>

struct buf;

/* Append in[0..len) to out with each line ending in CRLF: LF and CRLF end
 * a line, other CRs are dropped (the server refuses a bare CR, RFC 5322
 * §2.3). Unless ignore_dots, a line that is a lone "." ends the message
 * (returns 1; the rest is ignored); else 0. *at_bol carries the line state
 * across calls (start with true). A first line "From " (an mbox
 * separator) is dropped, as Postfix does; *first tracks it (start true). */
int sendmail_msg_normalize(const char *in, size_t len, bool ignore_dots, bool *at_bol, bool *first,
                           struct buf *out);

struct sendmail_hdr {
	bool has_from, has_date, has_message_id;
	size_t header_end; /* offset of the empty line (or the body), in the new text */
};

/* Scan the header section of msg (CRLF lines). Each address of To, Cc and
 * Bcc goes to cb when extract; Bcc fields are removed when remove_bcc. The
 * message, possibly without its Bcc fields, is appended to out, with an
 * empty line before a body that came without one (out grows by at most 2
 * octets). */
void sendmail_hdr_scan(const char *msg, size_t len, bool extract, bool remove_bcc,
                       void (*cb)(void *arg, const char *addr, size_t len), void *arg,
                       struct sendmail_hdr *h, struct buf *out);

/* The addr-specs of an RFC 5322 §3.4 address-list (mailboxes, name-addrs,
 * groups; display names, comments and source routes dropped), each to cb. */
void sendmail_addrlist(const char *p, size_t len,
                       void (*cb)(void *arg, const char *addr, size_t len), void *arg);

#endif
