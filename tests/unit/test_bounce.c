/* test_bounce.c — the bounce (DSN) builder: MIME structure, per-message and
 * per-recipient fields, RET=FULL/HDRS, ENVID/ORCPT, delays, folding, line
 * lengths and header injection from hostile diagnostics, ids and addresses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deliver/bounce.h"
#include "lib/alloc.h"
#include "lib/buf.h"

#define T0 1700000000000000ULL /* Tue, 14 Nov 2023 22:13:20 +0000 */

static const char msg_plain[] = "From: Alice <alice@example.org>\r\n"
                                "To: Bob <bob@example.net>\r\n"
                                "Subject: lunch\r\n"
                                "\r\n"
                                "BODY-MARKER see you\r\n";

static const char msg_nosep[] = "From: Alice <alice@example.org>\r\n"
                                "Subject: no body\r\n";

/* Bare LF line ends and a 2000-octet body line: both must come out CRLF and
 * broken below 998. */
static const char msg_lf[] = "From: Alice <alice@example.org>\n"
                             "Subject: lf only\n"
                             "\n"
                             "BODY-MARKER\n"
                             "LONGLINE\n";

enum {
	MSG_TEXT, /* msg as given */
	MSG_HUGE, /* 11 MiB generated: past the RET=FULL cap */
	MSG_LF,   /* msg_lf with LONGLINE replaced by 2000 'y' */
	MSG_NONE, /* no original at all */
};

struct bounce_case {
	const char *name;
	enum bounce_kind kind;
	const char *sender;
	const char *envid;
	int full;
	const char *msg;
	int msgmode;
	struct bounce_rcpt rcpts[3];
	size_t nrcpts;
	const char *subject;
	const char *types[4]; /* each part's Content-Type, in order */
	const char *want[8];  /* must occur in the output */
	const char *unwanted[6];
	size_t long_diag; /* > 0: rcpts[0].diagnostic is a generated text this long */
};

static const struct bounce_case cases[] = {
    {
        .name = "failed, headers only",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", "550 5.1.1 User unknown", "mx.example.net",
                   T0 + 5000000}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nReporting-MTA: dns; mail.example.org\r\n",
                 "\r\nX-Hikyaku-Queue-ID: QID123\r\n",
                 "\r\nArrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nFinal-Recipient: "
                 "rfc822; bob@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                 "Remote-MTA: dns; mx.example.net\r\n"
                 "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
                 "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:25 +0000\r\n",
                 "\r\nSubject: lunch\r\n",
                 "\r\nContent-Description: Undelivered Message Headers\r\n"},
        .unwanted = {"Original-Envelope-Id", "Original-Recipient", "Will-Retry-Until",
                     "BODY-MARKER", "message/rfc822"},
    },
    {
        .name = "failed, RET=FULL, ENVID, ORCPT, two recipients",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .envid = "QQ+2B314159",
        .full = 1,
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", "rfc822;bob+2Btag@example.net", "5.1.1",
                   "550 5.1.1 User unknown", "mx.example.net", T0},
                  {"carol@example.com", "carol@example.com", "5.2.2", NULL, NULL, 0}},
        .nrcpts = 2,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "message/rfc822"},
        .want = {"\r\nOriginal-Envelope-Id: QQ+314159\r\n",
                 "\r\n\r\nOriginal-Recipient: rfc822;bob+tag@example.net\r\n"
                 "Final-Recipient: rfc822; bob@example.net\r\n",
                 "\r\n\r\nOriginal-Recipient: rfc822;carol@example.com\r\n"
                 "Final-Recipient: rfc822; carol@example.com\r\nAction: failed\r\n"
                 "Status: 5.2.2\r\n\r\n--",
                 "\r\n\r\nBODY-MARKER see you\r\n\r\n--", "Content-Transfer-Encoding: 7bit"},
        .unwanted = {"Will-Retry-Until", "text/rfc822-headers"},
    },
    {
        .name = "delayed has Will-Retry-Until",
        .kind = BOUNCE_DELAYED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"dave@example.com", NULL, "4.4.1", "Connection timed out", "mx.example.com",
                   T0 + 3600000000ULL}},
        .nrcpts = 1,
        .subject = "Delayed Mail (still being retried)",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nAction: delayed\r\nStatus: 4.4.1\r\n",
                 "\r\nWill-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n",
                 "keep trying until Sun, 19 Nov 2023 22:13:20 +0000",
                 "\r\nContent-Description: Delayed Message Headers\r\n"},
        .unwanted = {"Action: failed", "Undelivered"},
    },
    {
        .name = "delivered, no diagnostic or remote MTA",
        .kind = BOUNCE_DELIVERED,
        .sender = "alice@example.org",
        .envid = "env-7",
        .msg = msg_plain,
        .rcpts = {{"erin@example.com", NULL, "2.0.0", NULL, NULL, 0}},
        .nrcpts = 1,
        .subject = "Successful Mail Delivery Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nAction: delivered\r\nStatus: 2.0.0\r\n\r\n--",
                 "\r\nOriginal-Envelope-Id: env-7\r\n"},
        .unwanted = {"Diagnostic-Code", "Remote-MTA", "Last-Attempt-Date", "Will-Retry-Until"},
    },
    {
        /* issue 8: a success report is no "Undelivered" anything, and a
         * Maildir delivery has no remote reply for Diagnostic-Code
         * (RFC 3464 §2.3.6) */
        .name = "delivered to a local mailbox: no Diagnostic-Code, Delivered Message Headers",
        .kind = BOUNCE_DELIVERED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"erin@example.com", NULL, "2.0.0", "delivered to maildir", NULL, T0}},
        .nrcpts = 1,
        .subject = "Successful Mail Delivery Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nAction: delivered\r\nStatus: 2.0.0\r\nLast-Attempt-Date: ",
                 "\r\nContent-Description: Delivered Message Headers\r\n"},
        .unwanted = {"Diagnostic-Code", "Remote-MTA", "Undelivered", "smtp;"},
    },
    {
        .name = "delivered over LMTP: the server's reply is the Diagnostic-Code",
        .kind = BOUNCE_DELIVERED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"erin@example.com", NULL, "2.0.0", "250 2.0.0 <erin@example.com> Saved",
                   "imap.example.com", T0}},
        .nrcpts = 1,
        .subject = "Successful Mail Delivery Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nRemote-MTA: dns; imap.example.com\r\n"
                 "Diagnostic-Code: smtp; 250 2.0.0 <erin@example.com> Saved\r\n",
                 "\r\nContent-Description: Delivered Message Headers\r\n"},
        .unwanted = {"Undelivered"},
    },
    {
        .name = "relayed to a server without DSN",
        .kind = BOUNCE_RELAYED,
        .sender = "alice@example.org",
        .envid = "env+2B8",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", "rfc822;bob+2Btag@example.net", "2.0.0",
                   "250 2.0.0 Ok: queued as 4711", "mx.example.net", T0 + 2000000}},
        .nrcpts = 1,
        .subject = "Successful Mail Relay Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nOriginal-Envelope-Id: env+8\r\n",
                 "\r\n\r\nOriginal-Recipient: rfc822;bob+tag@example.net\r\n"
                 "Final-Recipient: rfc822; bob@example.net\r\nAction: relayed\r\n"
                 "Status: 2.0.0\r\nRemote-MTA: dns; mx.example.net\r\n"
                 "Diagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4711\r\n"
                 "Last-Attempt-Date: Tue, 14 Nov 2023 22:13:22 +0000\r\n\r\n--",
                 "Your message was relayed to the recipients below",
                 "this is the last\r\nreport of success",
                 "\r\nContent-Description: Relayed Message Headers\r\n"},
        .unwanted = {"Action: delivered", "Will-Retry-Until", "BODY-MARKER", "was delivered to",
                     "Undelivered"},
    },
    {
        /* RFC 3461 §4.3: RET applies to failure reports only. */
        .name = "RET=FULL: success and delay notices carry the headers only",
        .kind = BOUNCE_RELAYED,
        .sender = "alice@example.org",
        .full = 1,
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "2.0.0", NULL, "mx.example.net", 0}},
        .nrcpts = 1,
        .subject = "Successful Mail Relay Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nSubject: lunch\r\n\r\n--"},
        .unwanted = {"BODY-MARKER", "message/rfc822"},
    },
    {
        .name = "RET=FULL: a delay warning carries the headers only",
        .kind = BOUNCE_DELAYED,
        .sender = "alice@example.org",
        .full = 1,
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "4.4.1", NULL, "mx.example.net", 0}},
        .nrcpts = 1,
        .subject = "Delayed Mail (still being retried)",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nSubject: lunch\r\n\r\n--"},
        .unwanted = {"BODY-MARKER", "message/rfc822"},
    },
    {
        .name = "relayed, two recipients, a missing status becomes 2.0.0",
        .kind = BOUNCE_RELAYED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "2.6.0", NULL, "mx.example.net", 0},
                  {"carol@example.com", NULL, NULL, NULL, "mx.example.com", 0}},
        .nrcpts = 2,
        .subject = "Successful Mail Relay Report",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nFinal-Recipient: rfc822; bob@example.net\r\nAction: relayed\r\n"
                 "Status: 2.6.0\r\n",
                 "\r\nFinal-Recipient: rfc822; carol@example.com\r\nAction: relayed\r\n"
                 "Status: 2.0.0\r\nRemote-MTA: dns; mx.example.com\r\n\r\n--"},
        .unwanted = {"Action: delivered", "Action: failed"},
    },
    {
        .name = "injection in diagnostic, status, ENVID and ORCPT",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org\r\nBcc: victim@evil",
        .envid = "x+0D+0ABcc:+20victim@evil",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net\r\nBcc: victim@evil", "rfc822;x+0D+0ABcc:+20victim@evil",
                   "5.1.1\r\nBcc: victim@evil", "x\r\nBcc: victim@evil\r\n\r\n--=_hk_\r\nX: y",
                   "mx\r\nBcc: victim@evil", T0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"Diagnostic-Code: smtp; x Bcc: victim@evil --=_hk_ X: y\r\n",
                 "\r\nStatus: 5.0.0\r\n", "Original-Envelope-Id: x Bcc: victim@evil\r\n",
                 "Original-Recipient: rfc822;x Bcc: victim@evil\r\n"},
        .unwanted = {"\nBcc", "\nX: y", "\n--=_hk_\r"},
    },
    {
        .name = "long diagnostic folded",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", NULL, "mx.example.net", T0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nDiagnostic-Code: smtp; 550 w0000 w0001"},
        .long_diag = 3000,
    },
    {
        .name = "no body separator: all of it",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .msg = msg_nosep,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", NULL, NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\n\r\nFrom: Alice <alice@example.org>\r\nSubject: no body\r\n\r\n--"},
    },
    {
        .name = "RET=FULL over the cap falls back to headers",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .full = 1,
        .msgmode = MSG_HUGE,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", NULL, NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"\r\nSubject: huge\r\n\r\n--"},
        .unwanted = {"xxxxxxxx", "message/rfc822"},
    },
    {
        .name = "bare LF and an overlong line in the original",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .full = 1,
        .msg = msg_lf,
        .msgmode = MSG_LF,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", NULL, NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "message/rfc822"},
        .want = {"\r\nSubject: lf only\r\n\r\nBODY-MARKER\r\nyyyy"},
    },
    {
        .name = "no original: two parts",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .msgmode = MSG_NONE,
        .rcpts = {{"bob@example.net", "bob@example.net", NULL, NULL, NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status"},
        .want = {"\r\nStatus: 5.0.0\r\n", "Original-Recipient: rfc822;bob@example.net\r\n"},
    },
    {
        .name = "non-ASCII diagnostic in an ASCII mail",
        .kind = BOUNCE_FAILED,
        .sender = "alice@example.org",
        .msg = msg_plain,
        .rcpts = {{"bob@example.net", NULL, "5.1.1", "550 caf\xc3\xa9 \xff!", NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=us-ascii", "message/delivery-status", "text/rfc822-headers"},
        .want = {"Diagnostic-Code: smtp; 550 caf? ?!\r\n", "Content-Transfer-Encoding: 7bit\r\n"},
        .unwanted = {"global", "8bit", "utf-8"},
    },
    {
        .name = "SMTPUTF8: global types",
        .kind = BOUNCE_FAILED,
        .sender = "j\xc3\xb6rg@example.org",
        .msg = msg_plain,
        .rcpts = {{"\xe7\x94\xb0\xe4\xb8\xad+x@example.jp", NULL, "5.1.1", "550 caf\xc3\xa9 \xff!",
                   NULL, 0}},
        .nrcpts = 1,
        .subject = "Undelivered Mail Returned to Sender",
        .types = {"text/plain; charset=utf-8", "message/global-delivery-status",
                  "message/global-headers"},
        .want = {"\r\nTo: <j\xc3\xb6rg@example.org>\r\n",
                 "\r\nFinal-Recipient: utf-8; \xe7\x94\xb0\xe4\xb8\xad\\x{2B}x@example.jp\r\n",
                 "Diagnostic-Code: smtp; 550 caf\xc3\xa9 ?!\r\n",
                 "Content-Transfer-Encoding: 8bit\r\n"},
        .unwanted = {"rfc822; "},
    },
};

static char *huge_msg(size_t *len_r)
{
	static const char head[] = "From: a@example.org\r\nSubject: huge\r\n\r\n";
	size_t n = (size_t)11 * 1024 * 1024, k = sizeof(head) - 1;
	char *m = xmalloc(n);
	memcpy(m, head, k);
	for (; k + 80 <= n; k += 80) {
		memset(m + k, 'x', 78);
		memcpy(m + k + 78, "\r\n", 2);
	}
	*len_r = k;
	return m;
}

static char *lf_msg(size_t *len_r)
{
	struct buf b;
	const char *at = strstr(msg_lf, "LONGLINE");
	buf_init(&b, 0);
	buf_append(&b, msg_lf, (size_t)(at - msg_lf));
	for (int i = 0; i < 2000; i++)
		buf_append_byte(&b, 'y');
	buf_append_str(&b, at + strlen("LONGLINE"));
	return (char *)buf_steal(&b, len_r);
}

static char *long_diag(size_t len)
{
	struct buf b;
	size_t n;
	buf_init(&b, 0);
	buf_append_str(&b, "550");
	for (int i = 0; b.len + 6 <= len; i++)
		buf_printf(&b, " w%04d", i);
	return (char *)buf_steal(&b, &n);
}

/* Every line ends in CRLF and has at most 998 octets (RFC 5322 2.1.1). */
static void check_lines(const struct buf *out)
{
	size_t start = 0;
	assert_true(out->len >= 2);
	for (size_t i = 0; i < out->len; i++) {
		if (out->data[i] == '\r') {
			assert_true(i + 1 < out->len);
			assert_int_equal(out->data[i + 1], '\n');
			assert_true(i - start <= 998);
			start = i + 2;
			i++;
		} else {
			assert_int_not_equal(out->data[i], '\n');
		}
	}
	assert_int_equal(start, out->len);
}

/* The boundary from the top-level Content-Type. */
static char *get_boundary(const char *s)
{
	const char *p = strstr(s, "boundary=\"");
	assert_non_null(p);
	p += strlen("boundary=\"");
	const char *e = strchr(p, '"');
	assert_non_null(e);
	assert_true(e - p >= 20 && e - p <= 70); /* RFC 2046 section 5.1.1 */
	return xstrndup(p, (size_t)(e - p));
}

/* The delimiters, the closing delimiter at the very end, and each part's
 * Content-Type in order; the boundary occurs nowhere else. */
static void check_structure(const char *s, size_t len, const struct bounce_case *tc)
{
	char *bd = get_boundary(s);
	size_t nparts = 0, seen = 0;
	char delim[100], close[100];
	snprintf(delim, sizeof(delim), "\r\n--%s\r\nContent-Type: ", bd);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", bd);
	while (nparts < 4 && tc->types[nparts] != NULL)
		nparts++;
	const char *p = s;
	for (size_t i = 0; i < nparts; i++) {
		p = strstr(p, delim);
		assert_non_null(p);
		p += strlen(delim);
		size_t tl = strlen(tc->types[i]);
		assert_memory_equal(p, tc->types[i], tl);
		assert_memory_equal(p + tl, "\r\n", 2);
	}
	assert_null(strstr(p, delim));
	size_t cl = strlen(close);
	assert_true(len > cl);
	assert_string_equal(s + len - cl, close);
	for (p = strstr(s, bd); p != NULL; p = strstr(p + 1, bd))
		seen++;
	assert_int_equal(seen, 1 + nparts + 1); /* Content-Type, delimiters, close */
	free(bd);
}

/* The top header section: exactly the fields we write, in order. */
static void check_top_headers(const char *s, const struct bounce_case *tc)
{
	static const char *const names[] = {
	    "From: Mail Delivery System <MAILER-DAEMON@mail.example.org>\r\n",
	    "To: <",
	    "Subject: ",
	    "Date: Wed, 15 Nov 2023 00:13:20 +0000\r\n",
	    "Message-ID: <QID123.",
	    "MIME-Version: 1.0\r\n",
	    "Auto-Submitted: auto-replied\r\n",
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"",
	    "Content-Transfer-Encoding: ",
	    "\r\n",
	};
	const char *p = s;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		assert_memory_equal(p, names[i], strlen(names[i]));
		if (i == 2) {
			assert_memory_equal(p + 9, tc->subject, strlen(tc->subject));
			assert_memory_equal(p + 9 + strlen(tc->subject), "\r\n", 2);
		}
		p = strstr(p, "\r\n") + 2;
		if (i == 7)
			p = strstr(p, "\r\n") + 2; /* the folded boundary line */
	}
}

/* In the delivery-status part every line is empty, a continuation, or a
 * known field: nothing hostile made a field of its own. */
static void check_dsn_lines(const char *s)
{
	static const char *const fields[] = {
	    "Reporting-MTA: ",
	    "X-Hikyaku-Queue-ID: ",
	    "Original-Envelope-Id: ",
	    "Arrival-Date: ",
	    "Original-Recipient: ",
	    "Final-Recipient: ",
	    "Action: ",
	    "Status: ",
	    "Remote-MTA: ",
	    "Diagnostic-Code: ",
	    "Last-Attempt-Date: ",
	    "Will-Retry-Until: ",
	};
	const char *p = strstr(s, "delivery-status\r\nContent-Description: Delivery report\r\n");
	assert_non_null(p);
	p = strstr(p, "\r\n\r\n") + 4;
	while (strncmp(p, "--", 2) != 0) {
		bool ok = p[0] == '\r' || p[0] == ' ';
		for (size_t i = 0; !ok && i < sizeof(fields) / sizeof(fields[0]); i++)
			ok = strncmp(p, fields[i], strlen(fields[i])) == 0;
		assert_true(ok);
		p = strstr(p, "\r\n") + 2;
	}
}

/* A field's value with the folds (CRLF before SP) taken out. */
static char *unfold_field(const char *s, const char *name)
{
	const char *p = strstr(s, name);
	struct buf b;
	size_t n;
	assert_non_null(p);
	p += strlen(name);
	buf_init(&b, 0);
	for (; !(p[0] == '\r' && p[2] != ' '); p++) {
		if (p[0] == '\r')
			p += 2;
		buf_append_byte(&b, (unsigned char)p[0]);
	}
	return (char *)buf_steal(&b, &n);
}

static void build_case(const struct bounce_case *tc, struct buf *out)
{
	struct bounce_rcpt r[3];
	char *owned = NULL, *diag = NULL;
	struct bounce_info bi = {
	    .kind = tc->kind,
	    .reporting_mta = "mail.example.org",
	    .qid = "QID123",
	    .sender = tc->sender,
	    .envid = tc->envid,
	    .arrival_us = T0,
	    .retry_until_us = T0 + 5ULL * 86400 * 1000000,
	    .full = tc->full,
	    .msg = (const unsigned char *)tc->msg,
	    .msglen = tc->msg != NULL ? strlen(tc->msg) : 0,
	    .rcpts = r,
	    .nrcpts = tc->nrcpts,
	    .now_us = T0 + 7200000000ULL,
	};
	memcpy(r, tc->rcpts, sizeof(r));
	if (tc->msgmode == MSG_HUGE)
		owned = huge_msg(&bi.msglen);
	else if (tc->msgmode == MSG_LF)
		owned = lf_msg(&bi.msglen);
	else if (tc->msgmode == MSG_NONE)
		bi.msg = NULL;
	if (owned != NULL)
		bi.msg = (const unsigned char *)owned;
	if (tc->long_diag > 0)
		r[0].diagnostic = diag = long_diag(tc->long_diag);
	buf_init(out, 0);
	assert_int_equal(bounce_build(&bi, out), 0);
	if (diag != NULL) {
		char *got = unfold_field(buf_cstr(out), "\r\nDiagnostic-Code: ");
		assert_memory_equal(got, "smtp; ", 6);
		assert_string_equal(got + 6, diag);
		free(got);
	}
	free(owned);
	free(diag);
}

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct bounce_case *tc = &cases[i];
		struct buf out;
		print_message("case: %s\n", tc->name);
		build_case(tc, &out);
		const char *s = buf_cstr(&out);
		assert_int_equal(strlen(s), out.len);
		check_lines(&out);
		check_top_headers(s, tc);
		check_structure(s, out.len, tc);
		check_dsn_lines(s);
		for (size_t k = 0; k < 8 && tc->want[k] != NULL; k++) {
			if (strstr(s, tc->want[k]) == NULL)
				print_error("missing: %s\n", tc->want[k]);
			assert_non_null(strstr(s, tc->want[k]));
		}
		for (size_t k = 0; k < 6 && tc->unwanted[k] != NULL; k++)
			assert_null(strstr(s, tc->unwanted[k]));
		buf_free(&out);
	}
}

/* Message-ID and boundary differ between two reports of the same message. */
static void test_unique_ids(void **state)
{
	(void)state;
	struct buf a, b;
	build_case(&cases[0], &a);
	build_case(&cases[0], &b);
	char *ba = get_boundary(buf_cstr(&a)), *bb = get_boundary(buf_cstr(&b));
	assert_string_not_equal(ba, bb);
	assert_non_null(strstr(ba, "QID123"));
	const char *ma = strstr(buf_cstr(&a), "Message-ID: "),
	           *mb = strstr(buf_cstr(&b), "Message-ID: ");
	assert_false(strncmp(ma, mb, (size_t)(strstr(ma, "\r\n") - ma)) == 0);
	free(ba);
	free(bb);
	buf_free(&a);
	buf_free(&b);
}

/* A buffer too small: -1, and what it held before is left as it was. */
static void test_buffer_limit(void **state)
{
	(void)state;
	static const size_t maxes[] = {10, 100, 500, 1000};
	const struct bounce_rcpt r = {"bob@example.net", NULL, "5.1.1", "550 no", NULL, 0};
	const struct bounce_info bi = {
	    .kind = BOUNCE_FAILED,
	    .reporting_mta = "mx",
	    .qid = "Q",
	    .sender = "a@b",
	    .msg = (const unsigned char *)msg_plain,
	    .msglen = strlen(msg_plain),
	    .rcpts = &r,
	    .nrcpts = 1,
	    .now_us = T0,
	};
	for (size_t i = 0; i < sizeof(maxes) / sizeof(maxes[0]); i++) {
		struct buf out;
		buf_init(&out, maxes[i]);
		assert_int_equal(buf_append_str(&out, "keep"), 0);
		assert_int_equal(bounce_build(&bi, &out), -1);
		assert_int_equal(out.len, 4);
		assert_string_equal(buf_cstr(&out), "keep");
		buf_free(&out);
	}
}

/* The quoting of bounce.c before it read in windows, on a whole buffer:
 * the reference for the windowed copy. */
static void orig_copy_ref(const unsigned char *p, size_t n, struct buf *out)
{
	size_t run = 0, col = 0;
	bool in_headers = true;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = p[i];
		if (ch == '\r' || ch == '\n') {
			buf_append(out, p + run, i - run);
			buf_append_str(out, "\r\n");
			if (ch == '\r' && i + 1 < n && p[i + 1] == '\n')
				i++;
			if (col == 0)
				in_headers = false;
			col = 0;
			run = i + 1;
			continue;
		}
		if (col >= 990 && ((ch & 0xc0) != 0x80 || col >= 990 + 3)) {
			buf_append(out, p + run, i - run);
			buf_append_str(out, in_headers ? "\r\n " : "\r\n");
			col = in_headers ? 1 : 0;
			run = i;
		}
		col++;
	}
	buf_append(out, p + run, n - run);
	if (col > 0)
		buf_append_str(out, "\r\n");
	buf_append_str(out, "\r\n");
}

/* Part 3 of a report: the octets after its MIME header, up to the closing
 * delimiter. */
static size_t part3(const struct buf *out, const char **p_r)
{
	const char *s = buf_cstr(out);
	const char *b = strstr(s, "boundary=\"");
	assert_non_null(b);
	b += 10;
	char delim[100];
	size_t bl = (size_t)(strchr(b, '"') - b);
	snprintf(delim, sizeof(delim), "\r\n--%.*s\r\n", (int)bl, b);
	const char *last = NULL;
	for (const char *q = strstr(s, delim); q != NULL; q = strstr(q + 1, delim))
		last = q;
	assert_non_null(last);
	const char *body = strstr(last + strlen(delim), "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	char end[100];
	snprintf(end, sizeof(end), "--%.*s--\r\n", (int)bl, b);
	const char *e = strstr(body, end);
	assert_non_null(e);
	*p_r = body;
	return (size_t)(e - body);
}

static int sink_into(void *arg, const void *p, size_t len)
{
	return buf_append(arg, p, len);
}

static int sink_fail(void *arg, const void *p, size_t len)
{
	(void)arg;
	(void)p;
	(void)len;
	return -1;
}

/* A spooled original read through 64 KiB windows (a CR and LF on either
 * side of a boundary, lines past 990 octets across one, 8-bit octets after
 * the first window) quotes exactly what the same original in memory does,
 * RET=FULL and headers-only (a header section past 256 KiB, cut at a line
 * end); through a sink, the pieces are the report and out is left empty. */
static void test_spooled_original(void **state)
{
	(void)state;
	const size_t W = 65536, n = 5 * W + 77, off = 16;
	unsigned char *m = malloc(n);
	for (size_t i = 0; i < n; i++)
		m[i] = i % 1500 == 1499 ? '\n' : (i % 1500 == 1498 ? '\r' : (unsigned char)('A' + i % 26));
	memcpy(m, "Subject: x\r\n", 12);
	m[W - 1] = '\r';
	m[W] = '\n';
	m[2 * W + 5] = 0xc3;
	m[2 * W + 6] = 0xa9;
	char path[] = "/tmp/hk-test-bounce-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, "HKMSG-HEADER-16o", off), (ssize_t)off);
	assert_int_equal(write(fd, m, n), (ssize_t)n);
	assert_int_equal(write(fd, "ENVELOPE", 8), 8);
	const struct bounce_rcpt r = {"bob@example.net", NULL, "5.1.1", "550 no", NULL, 0};
	for (int full = 1; full >= 0; full--) {
		struct bounce_info bm = {
		    .kind = BOUNCE_FAILED, .reporting_mta = "mx", .qid = "Q", .sender = "a@b",
		    .full = full, .msg = m, .msglen = n, .rcpts = &r, .nrcpts = 1, .now_us = T0};
		struct bounce_info bf = bm;
		bf.msg = NULL;
		bf.msg_fd = fd;
		bf.msg_off = off;
		struct buf a, b, sunk;
		buf_init(&a, 0);
		buf_init(&b, 0);
		buf_init(&sunk, 0);
		assert_int_equal(bounce_build(&bm, &a), 0);
		assert_int_equal(bounce_build(&bf, &b), 0);
		const char *pa, *pb;
		size_t la = part3(&a, &pa), lb = part3(&b, &pb);
		assert_int_equal(la, lb);
		assert_memory_equal(pa, pb, la);
		assert_true(full ? la > n : la < 300 * 1024);
		if (full) {
			struct buf want;
			buf_init(&want, 0);
			orig_copy_ref(m, n, &want);
			assert_int_equal(want.len, lb);
			assert_memory_equal(want.data, pb, lb);
			buf_free(&want);
		}
		assert_non_null(strstr(buf_cstr(&b), full ? "message/rfc822" : "text/rfc822-headers"));
		assert_non_null(strstr(buf_cstr(&b), "Content-Transfer-Encoding: 8bit"));
		/* through a sink: pieces of about 64 KiB, nothing left in out */
		struct buf out;
		buf_init(&out, 0);
		bf.sink = sink_into;
		bf.sink_arg = &sunk;
		assert_int_equal(bounce_build(&bf, &out), 0);
		assert_int_equal(out.len, 0);
		assert_true(out.cap < 2 * W + 4096);
		assert_int_equal(sunk.len, b.len);
		const char *ps;
		assert_int_equal(part3(&sunk, &ps), lb);
		assert_memory_equal(ps, pb, lb);
		/* a sink that fails: -2, out as it was */
		bf.sink = sink_fail;
		assert_int_equal(bounce_build(&bf, &out), -2);
		assert_int_equal(out.len, 0);
		buf_free(&out);
		buf_free(&a);
		buf_free(&b);
		buf_free(&sunk);
	}
	/* a read error: -2 */
	close(fd);
	struct bounce_info bad = {.kind = BOUNCE_FAILED, .reporting_mta = "mx", .qid = "Q",
	                          .sender = "a@b", .msg_fd = fd, .msg_off = off, .msglen = n,
	                          .rcpts = &r, .nrcpts = 1, .now_us = T0};
	struct buf out;
	buf_init(&out, 0);
	assert_int_equal(bounce_build(&bad, &out), -2);
	buf_free(&out);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cases),
	    cmocka_unit_test(test_unique_ids),
	    cmocka_unit_test(test_buffer_limit),
	    cmocka_unit_test(test_spooled_original),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
