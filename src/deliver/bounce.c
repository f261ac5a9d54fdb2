/* bounce.c — delivery status notifications: an RFC 3464 report inside an
 * RFC 6522 multipart/report, honouring the RFC 3461 ENVID, ORCPT and RET
 * parameters, marked Auto-Submitted (RFC 3834), with the RFC 6533 types when
 * the mail was SMTPUTF8.
 *
 * Runs in the queue manager, on a delivery worker: pure apart from reading
 * the clock and the kernel's random bytes (for Date:, Message-ID: and the
 * MIME boundary) and, for a spooled original, pread(2) of the spool file
 * through one BOUNCE_WINDOW buffer. With a sink the report leaves in
 * pieces, so the memory of a report that quotes 10 MiB stays bounded too.
 *
 * Hostile inputs: the diagnostic text (written by a remote server), the
 * addresses, ENVID and ORCPT (written by an SMTP client) and the original
 * message (written by anyone). None of them can add a header line or a MIME
 * boundary, or make a line longer than 998 octets (RFC 5322 section 2.1.1):
 * every value is cleaned (control characters become spaces, runs of white
 * space one space, bytes that are not UTF-8 '?'), bounded, and folded.
 *
 * Choices worth knowing:
 * - The report is "global" (RFC 6533: message/global-delivery-status and
 *   message/global-headers or message/global, UTF-8 text) only when the sender
 *   or a recipient address is non-ASCII, i.e. the mail itself needed SMTPUTF8.
 *   Otherwise non-ASCII octets in a diagnostic become '?', so that a remote
 *   server's Latin-1 reply cannot force the report to need SMTPUTF8.
 * - RET=FULL attaches the whole message, in failure reports only (RFC 3461
 *   §4.3) and only up to BOUNCE_FULL_MAX (10 MiB);
 *   above that, and without RET=FULL, the header section only, bounded by
 *   BOUNCE_HEADERS_MAX. The copy has CRLF line ends; a line longer than 990
 *   octets is broken (folded inside the header section).
 * - ENVID and ORCPT arrive as xtext (RFC 3461 section 4); the report carries
 *   them decoded, as Postfix does (RFC 3464 sections 2.2.1 and 2.3.1 define
 *   them as plain text).
 * - Arrival-Date is written only when arrival_us is set. */
#include "deliver/bounce.h"
#include "lib/alloc.h"
#include "lib/fsutil.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

enum {
	BOUNCE_WIDTH = 78,       /* preferred line length, RFC 5322 section 2.1.1 */
	BOUNCE_LINE_MAX = 900,   /* a word longer than this is cut; well below 998 */
	BOUNCE_ORIG_LINE = 990,  /* the original's lines are broken past this */
	BOUNCE_VALUE_MAX = 1024, /* a cleaned address, host name, id or ENVID */
	BOUNCE_DIAG_MAX = 4096,  /* a cleaned diagnostic text */
	BOUNCE_QID_MAX = 32,     /* of the queue id inside Message-ID and boundary */
	BOUNCE_DATE_LEN = 64,
};

#define BOUNCE_FULL_MAX ((size_t)10 * 1024 * 1024) /* RET=FULL up to this size */
#define BOUNCE_HEADERS_MAX ((size_t)256 * 1024)    /* header section bound */
#define BOUNCE_WINDOW ((size_t)64 * 1024)          /* original read at a time; sink chunk */

struct bounce_ctx {
	const struct bounce_info *b;
	struct buf *out;
	size_t start; /* where this report starts in out */
	int err;   /* sticky: -1 some append failed, -2 a read or the sink failed */
	bool utf8; /* RFC 6533 types and UTF-8 text */
	char mta[BOUNCE_VALUE_MAX + 4];
	char qid[BOUNCE_QID_MAX + 1];
	char boundary[80];
	char **orcpts; /* decoded ORCPT per recipient, or NULL entries */
	unsigned char *win; /* BOUNCE_WINDOW octets for an original read from a file */
	size_t origlen;     /* the octets of the original that part 3 quotes */
	bool orig_full;
	bool orig_8bit;
};

/* Hand what the report has so far to the sink, if there is one. */
static void bounce_flush(struct bounce_ctx *c)
{
	size_t n = c->out->len - c->start;
	if (c->b->sink == NULL || c->err != 0 || n == 0)
		return;
	if (c->b->sink(c->b->sink_arg, c->out->data + c->start, n) < 0)
		c->err = -2;
	c->out->len = c->start;
}

static void bounce_put(struct bounce_ctx *c, const void *p, size_t n)
{
	if (c->err == 0 && buf_append(c->out, p, n) < 0)
		c->err = -1;
	if (c->out->len - c->start >= BOUNCE_WINDOW)
		bounce_flush(c);
}

/* n <= BOUNCE_WINDOW octets of the original from pos: in place for one in
 * memory, else read into c->win. NULL (and c->err) on a read error. */
static const unsigned char *bounce_orig_at(struct bounce_ctx *c, size_t pos, size_t n)
{
	if (c->b->msg != NULL)
		return c->b->msg + pos;
	if (c->err == 0 && fs_pread_all(c->b->msg_fd, c->win, n, c->b->msg_off + pos) == 0)
		return c->win;
	c->err = -2;
	return NULL;
}

static size_t bounce_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

static void bounce_puts(struct bounce_ctx *c, const char *s)
{
	bounce_put(c, s, strlen(s));
}

/* The length of the valid UTF-8 sequence (RFC 3629 section 4) at p, or 0. */
static size_t bounce_utf8_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t len;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		len = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef)
		len = 3;
	else if (p[0] >= 0xf0 && p[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xe0)
		lo = 0xa0; /* no overlong forms */
	else if (p[0] == 0xed)
		hi = 0x9f; /* no surrogates */
	else if (p[0] == 0xf0)
		lo = 0x90;
	else if (p[0] == 0xf4)
		hi = 0x8f; /* nothing past U+10FFFF */
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xc0) != 0x80)
			return 0;
	return len;
}

static bool bounce_is_ascii(const char *s)
{
	for (; s != NULL && *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* A copy of s fit for a header field or a line of text: control characters
 * (CR and LF above all) and C1 controls become spaces, runs of white space
 * one space, leading and trailing space go; a byte that does not start a
 * UTF-8 character (or any non-ASCII byte unless utf8) becomes '?'. At most
 * max octets, then "..." if cut. */
static char *bounce_clean(const char *s, size_t max, bool utf8)
{
	const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
	size_t n = strlen((const char *)p), k = 0;
	char *o = xmalloc(max + 4);
	bool space = false, cut = false;
	for (size_t i = 0; i < n;) {
		size_t len = 1, seq = 1;
		bool blank = p[i] <= 0x20 || p[i] == 0x7f;
		if (p[i] >= 0x80) {
			seq = bounce_utf8_len(p + i, n - i);
			blank = seq == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0;
			len = utf8 ? seq : 0; /* 0: one '?' for the character */
			seq = seq != 0 ? seq : 1;
		}
		if (blank) {
			space = k > 0;
			i += seq;
			continue;
		}
		if (k + (space ? 1 : 0) + (len != 0 ? len : 1) > max) {
			cut = true;
			break;
		}
		if (space)
			o[k++] = ' ';
		space = false;
		if (len == 0) {
			o[k++] = '?';
		} else {
			memcpy(o + k, p + i, len);
			k += len;
		}
		i += seq;
	}
	if (cut) {
		memcpy(o + k, "...", 3);
		k += 3;
	}
	o[k] = '\0';
	return o;
}

/* Writes the cleaned text s (words separated by single spaces) from column
 * col. A line is broken at a space before it would pass BOUNCE_WIDTH, and a
 * word longer than BOUNCE_LINE_MAX is cut at a character boundary; each new
 * line starts with cont. For a header field cont is " ": the space that
 * separated the words stays, so unfolding (RFC 5322 section 2.2.3) gives the
 * value back; only a cut word gains a space. */
static void bounce_wrap(struct bounce_ctx *c, const char *s, size_t col, const char *cont)
{
	size_t contlen = strlen(cont);
	bool first = true;
	while (*s != '\0') {
		size_t wl = strcspn(s, " ");
		if (!first && col + 1 + wl > BOUNCE_WIDTH) {
			bounce_puts(c, "\r\n");
			bounce_puts(c, cont);
			col = contlen;
			first = true;
		}
		if (!first) {
			bounce_puts(c, " ");
			col++;
		}
		while (col + wl > BOUNCE_LINE_MAX) {
			size_t room = col < BOUNCE_LINE_MAX ? BOUNCE_LINE_MAX - col : 1;
			size_t cut = room;
			while (cut > 0 && ((unsigned char)s[cut] & 0xc0) == 0x80)
				cut--;
			if (cut == 0)
				cut = room;
			bounce_put(c, s, cut);
			bounce_puts(c, "\r\n");
			bounce_puts(c, cont);
			col = contlen;
			s += cut;
			wl -= cut;
		}
		bounce_put(c, s, wl);
		col += wl;
		s += wl;
		first = false;
		if (*s == ' ')
			s++;
	}
}

/* "Name: " prefix value, folded; value is already clean. */
static void bounce_field_put(struct bounce_ctx *c, const char *name, const char *prefix,
                             const char *value)
{
	size_t plen = strlen(prefix), vlen = strlen(value);
	char *v = xmalloc(plen + vlen + 1);
	memcpy(v, prefix, plen);
	memcpy(v + plen, value, vlen + 1);
	bounce_puts(c, name);
	bounce_puts(c, ": ");
	bounce_wrap(c, v, strlen(name) + 2, " ");
	bounce_puts(c, "\r\n");
	free(v);
}

/* The same for a hostile raw value; nothing is written if it cleans to "". */
static void bounce_field(struct bounce_ctx *c, const char *name, const char *prefix,
                         const char *raw, size_t max)
{
	char *v = bounce_clean(raw, max, c->utf8);
	if (v[0] != '\0')
		bounce_field_put(c, name, prefix, v);
	free(v);
}

/* RFC 5322 section 3.3 date-time, in UTC. */
static void bounce_date(uint64_t us, char out[BOUNCE_DATE_LEN])
{
	static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year < 70 || tm.tm_year > 8099) {
		t = 0; /* out of range: the epoch rather than a malformed date */
		gmtime_r(&t, &tm);
	}
	snprintf(out, BOUNCE_DATE_LEN, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	         days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900,
	         tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static uint64_t bounce_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* 64 random bits as 16 hex digits; the clock and pid if the kernel refuses. */
static void bounce_random_hex(char out[17])
{
	uint64_t r;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull) ^ (uint64_t)ts.tv_sec ^
		    ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&ts;
	}
	snprintf(out, 17, "%016llx", (unsigned long long)r);
}

/* Only [A-Za-z0-9.-] and an address literal's []: — our own name, but it
 * goes into Message-ID and From where nothing else may. */
static void bounce_host_copy(char *out, size_t outsz, const char *s)
{
	size_t k = 0;
	for (; s != NULL && *s != '\0' && k + 1 < outsz; s++) {
		char ch = *s;
		if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '[' || ch == ']' ||
		    ch == ':')
			out[k++] = ch;
	}
	out[k] = '\0';
	if (k == 0)
		snprintf(out, outsz, "localhost");
}

static int bounce_hex_val(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

/* RFC 3461 section 4: "+XX" stands for the octet XX; anything else as is.
 * A decoded NUL becomes a space (cleaning makes it one anyway). */
static char *bounce_xtext_decode(const char *s)
{
	size_t n = strlen(s), k = 0;
	char *o = xmalloc(n + 1);
	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (s[i] == '+' && i + 2 < n && (hi = bounce_hex_val(s[i + 1])) >= 0 &&
		    (lo = bounce_hex_val(s[i + 2])) >= 0) {
			int v = hi * 16 + lo;
			o[k++] = v != 0 ? (char)v : ' ';
			i += 2;
		} else {
			o[k++] = s[i];
		}
	}
	o[k] = '\0';
	return o;
}

/* RFC 6533 section 3 utf-8-addr-unitext: UTF-8 as is; '+', '=', '\', space
 * and controls (and bytes that are not UTF-8, as U+FFFD) as \x{HEX}. */
static char *bounce_utf8_addr(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strnlen(s, BOUNCE_VALUE_MAX), k = 0;
	char *o = xmalloc(n * 8 + 1);
	for (size_t i = 0; i < n;) {
		size_t len = p[i] >= 0x80 ? bounce_utf8_len(p + i, n - i) : 1;
		if (p[i] >= 0x80 && len != 0) {
			memcpy(o + k, p + i, len);
			k += len;
			i += len;
			continue;
		}
		if (p[i] > 0x20 && p[i] < 0x7f && p[i] != '+' && p[i] != '=' && p[i] != '\\') {
			o[k++] = (char)p[i++];
			continue;
		}
		k += (size_t)snprintf(o + k, 9, "\\x{%X}", p[i] >= 0x80 ? 0xfffdu : p[i]);
		i++;
	}
	o[k] = '\0';
	return o;
}

static bool bounce_status_ok(const char *s)
{
	size_t n;
	if (s == NULL || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.')
		return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		n = strspn(s, "0123456789");
		if (n < 1 || n > 3)
			return false;
		s += n;
		if (part == 0 && *s++ != '.')
			return false;
	}
	return *s == '\0';
}

/* RFC 3464 section 2.3.3 */
static const char *bounce_action(enum bounce_kind k)
{
	switch (k) {
	case BOUNCE_DELAYED:
		return "delayed";
	case BOUNCE_DELIVERED:
		return "delivered";
	case BOUNCE_RELAYED:
		return "relayed";
	case BOUNCE_FAILED:
		break;
	}
	return "failed";
}

static const char *bounce_default_status(enum bounce_kind k)
{
	switch (k) {
	case BOUNCE_DELAYED:
		return "4.0.0";
	case BOUNCE_DELIVERED:
	case BOUNCE_RELAYED:
		return "2.0.0";
	case BOUNCE_FAILED:
		break;
	}
	return "5.0.0";
}

/* Where the header section of the original ends (RFC 5322 section 2.1:
 * at the first empty line; a bare LF counts, as the copy turns it to CRLF),
 * cut to BOUNCE_HEADERS_MAX at a line end. Reads at most the first
 * BOUNCE_HEADERS_MAX + 2 octets, window by window. */
static size_t bounce_headers_len(struct bounce_ctx *c, size_t n)
{
	enum { NONE, AFTER_LF, AFTER_LF_CR } st = AFTER_LF;
	size_t cand = 0, last_lf = 0, scan = bounce_min(n, BOUNCE_HEADERS_MAX + 2);
	for (size_t pos = 0; pos < scan;) {
		size_t w = bounce_min(BOUNCE_WINDOW, scan - pos);
		const unsigned char *m = bounce_orig_at(c, pos, w);
		if (m == NULL)
			return 0;
		for (size_t i = 0; i < w; i++) {
			unsigned char ch = m[i];
			if ((st == AFTER_LF || st == AFTER_LF_CR) && ch == '\n') {
				if (cand <= BOUNCE_HEADERS_MAX)
					return cand;
				goto cut; /* too long: cut at a line end */
			}
			st = st == AFTER_LF && ch == '\r' ? AFTER_LF_CR : NONE;
			if (ch == '\n') {
				st = AFTER_LF;
				cand = pos + i + 1;
				if (cand <= BOUNCE_HEADERS_MAX)
					last_lf = cand;
			}
		}
		pos += w;
	}
	if (n <= BOUNCE_HEADERS_MAX)
		return n;
cut:
	return last_lf > 0 ? last_lf : BOUNCE_HEADERS_MAX;
}

/* The slice of the original that part 3 carries (see the file comment). */
static void bounce_orig_select(struct bounce_ctx *c)
{
	size_t n = c->b->msg != NULL || c->b->msg_fd >= 0 ? c->b->msglen : 0;
	/* RFC 3461 §4.3: RET applies to failure reports; the others carry
	 * the header section only. */
	c->orig_full = c->b->full && c->b->kind == BOUNCE_FAILED && n <= BOUNCE_FULL_MAX;
	c->origlen = c->orig_full ? n : bounce_headers_len(c, n);
	c->orig_8bit = false;
	for (size_t pos = 0; pos < c->origlen && !c->orig_8bit && c->err == 0;) {
		size_t w = bounce_min(BOUNCE_WINDOW, c->origlen - pos);
		const unsigned char *m = bounce_orig_at(c, pos, w);
		for (size_t i = 0; m != NULL && i < w && !c->orig_8bit; i++)
			c->orig_8bit = m[i] >= 0x80;
		pos += w;
	}
}

static bool bounce_boundary_free(struct bounce_ctx *c)
{
	size_t blen = strlen(c->boundary);
	/* windows overlap by blen - 1 octets: a boundary across two is seen */
	for (size_t pos = 0; pos < c->origlen && c->err == 0;) {
		size_t w = bounce_min(BOUNCE_WINDOW, c->origlen - pos);
		const unsigned char *m = bounce_orig_at(c, pos, w);
		if (m != NULL && memmem(m, w, c->boundary, blen) != NULL)
			return false;
		if (pos + w == c->origlen)
			break;
		pos += w - (blen - 1);
	}
	for (size_t i = 0; i < c->b->nrcpts; i++) {
		const char *d = c->b->rcpts[i].diagnostic;
		if (d != NULL && strstr(d, c->boundary) != NULL)
			return false;
	}
	return true;
}

/* RFC 2046 section 5.1.1: the boundary must not occur in the content. It
 * carries the queue id and 64 random bits, and is checked against what the
 * report includes all the same. "=_" cannot occur in base64 or QP either. */
static void bounce_boundary_make(struct bounce_ctx *c)
{
	for (int tries = 0; tries < 16; tries++) {
		char rnd[17];
		bounce_random_hex(rnd);
		snprintf(c->boundary, sizeof(c->boundary), "=_hk_%s_%s", c->qid, rnd);
		if (bounce_boundary_free(c))
			return;
	}
}

static const char *bounce_subject(enum bounce_kind k)
{
	switch (k) {
	case BOUNCE_DELAYED:
		return "Delayed Mail (still being retried)";
	case BOUNCE_DELIVERED:
		return "Successful Mail Delivery Report";
	case BOUNCE_RELAYED:
		return "Successful Mail Relay Report";
	case BOUNCE_FAILED:
		break;
	}
	return "Undelivered Mail Returned to Sender";
}

static void bounce_headers(struct bounce_ctx *c)
{
	const struct bounce_info *b = c->b;
	char date[BOUNCE_DATE_LEN], rnd[17], *to;
	bounce_date(b->now_us != 0 ? b->now_us : bounce_now_us(), date);
	bounce_random_hex(rnd);
	bounce_puts(c, "From: Mail Delivery System <MAILER-DAEMON@");
	bounce_puts(c, c->mta);
	bounce_puts(c, ">\r\n");
	to = bounce_clean(b->sender, BOUNCE_VALUE_MAX, c->utf8);
	bounce_puts(c, "To: <");
	bounce_wrap(c, to, 5, " ");
	bounce_puts(c, ">\r\n");
	free(to);
	bounce_puts(c, "Subject: ");
	bounce_puts(c, bounce_subject(b->kind));
	bounce_puts(c, "\r\nDate: ");
	bounce_puts(c, date);
	bounce_puts(c, "\r\nMessage-ID: <");
	bounce_puts(c, c->qid);
	bounce_puts(c, ".");
	bounce_puts(c, rnd);
	bounce_puts(c, "@");
	bounce_puts(c, c->mta);
	bounce_puts(c, ">\r\nMIME-Version: 1.0\r\n"
	               "Auto-Submitted: auto-replied\r\n" /* RFC 3834 section 5 */
	               "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	               "\tboundary=\"");
	bounce_puts(c, c->boundary);
	bounce_puts(c, "\"\r\nContent-Transfer-Encoding: ");
	bounce_puts(c, c->utf8 || c->orig_8bit ? "8bit" : "7bit");
	bounce_puts(c, "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n");
}

static void bounce_part_start(struct bounce_ctx *c, const char *type, const char *desc,
                              const char *cte)
{
	bounce_puts(c, "--");
	bounce_puts(c, c->boundary);
	bounce_puts(c, "\r\nContent-Type: ");
	bounce_puts(c, type);
	bounce_puts(c, "\r\nContent-Description: ");
	bounce_puts(c, desc);
	if (cte != NULL) {
		bounce_puts(c, "\r\nContent-Transfer-Encoding: ");
		bounce_puts(c, cte);
	}
	bounce_puts(c, "\r\n\r\n");
}

/* One indented paragraph of hostile text in part 1. */
static void bounce_text_para(struct bounce_ctx *c, const char *indent, const char *raw, size_t max)
{
	char *v = bounce_clean(raw, max, c->utf8);
	if (v[0] != '\0') {
		bounce_puts(c, indent);
		bounce_wrap(c, v, strlen(indent), indent);
		bounce_puts(c, "\r\n");
	}
	free(v);
}

/* Part 1: for people (RFC 6522 section 3). */
static void bounce_text(struct bounce_ctx *c)
{
	const struct bounce_info *b = c->b;
	char date[BOUNCE_DATE_LEN];
	bounce_part_start(c, c->utf8 ? "text/plain; charset=utf-8" : "text/plain; charset=us-ascii",
	                  "Notification", c->utf8 ? "8bit" : "7bit");
	bounce_puts(c, "This is the mail system at host ");
	bounce_puts(c, c->mta);
	bounce_puts(c, ".\r\n\r\n");
	if (b->kind == BOUNCE_DELAYED) {
		bounce_puts(c,
		            "Your message has not yet been delivered to the recipients below.\r\n");
		if (b->retry_until_us != 0) {
			bounce_date(b->retry_until_us, date);
			bounce_puts(c, "The mail system will keep trying until ");
			bounce_puts(c, date);
			bounce_puts(c, ".\r\n");
		} else {
			bounce_puts(c, "The mail system will keep trying for a while.\r\n");
		}
		bounce_puts(c,
		            "You do not need to send it again; you will be told if it fails.\r\n");
	} else if (b->kind == BOUNCE_DELIVERED) {
		bounce_puts(c, "Your message was delivered to the recipients below.\r\n");
	} else if (b->kind == BOUNCE_RELAYED) {
		/* RFC 3461 section 5.2.2: the next system offered no DSN */
		bounce_puts(c, "Your message was relayed to the recipients below, to mail\r\n"
		               "systems that do not send delivery reports: this is the last\r\n"
		               "report of success you will get, but a later failure may still\r\n"
		               "be reported to you.\r\n");
	} else {
		bounce_puts(c, "Your message could not be delivered to the recipients below.\r\n"
		               "This is a permanent error; the mail system has given up.\r\n");
	}
	bounce_puts(c, "The delivery report and the original message (or its header)\r\n"
	               "are attached.\r\n");
	for (size_t i = 0; i < b->nrcpts; i++) {
		const struct bounce_rcpt *r = &b->rcpts[i];
		const char *status =
		    bounce_status_ok(r->status) ? r->status : bounce_default_status(b->kind);
		bounce_puts(c, "\r\n");
		bounce_text_para(c, "    ", r->addr, BOUNCE_VALUE_MAX);
		bounce_puts(c, "        status ");
		bounce_puts(c, status);
		if (r->remote_mta != NULL && r->remote_mta[0] != '\0')
			bounce_puts(c, ", reported by the host below");
		bounce_puts(c, "\r\n");
		bounce_text_para(c, "        ", r->remote_mta, BOUNCE_VALUE_MAX);
		bounce_text_para(c, "        ", r->diagnostic, BOUNCE_DIAG_MAX);
	}
	bounce_puts(c, "\r\n");
}

static void bounce_date_field(struct bounce_ctx *c, const char *name, uint64_t us)
{
	char date[BOUNCE_DATE_LEN];
	bounce_date(us, date);
	bounce_field_put(c, name, "", date);
}

/* RFC 3464 section 2.3 (RFC 6533 section 3 for the utf-8 address type). */
static void bounce_dsn_rcpt(struct bounce_ctx *c, size_t i)
{
	const struct bounce_rcpt *r = &c->b->rcpts[i];
	enum bounce_kind kind = c->b->kind;
	bounce_puts(c, "\r\n");
	if (c->orcpts[i] != NULL)
		bounce_field(c, "Original-Recipient", "", c->orcpts[i], BOUNCE_VALUE_MAX);
	if (c->utf8 && !bounce_is_ascii(r->addr)) {
		char *a = bounce_utf8_addr(r->addr);
		bounce_field_put(c, "Final-Recipient", "utf-8; ", a);
		free(a);
	} else {
		char *a = bounce_clean(r->addr, BOUNCE_VALUE_MAX, false);
		bounce_field_put(c, "Final-Recipient", "rfc822; ", a);
		free(a);
	}
	bounce_field_put(c, "Action", "", bounce_action(kind));
	bounce_field_put(c, "Status", "",
	                 bounce_status_ok(r->status) ? r->status : bounce_default_status(kind));
	if (r->remote_mta != NULL)
		bounce_field(c, "Remote-MTA", "dns; ", r->remote_mta, BOUNCE_VALUE_MAX);
	/* RFC 3464 §2.3.6: the Diagnostic-Code carries what the remote MTA
	 * said; a success with no remote MTA was our own final delivery
	 * (Maildir), where there is no such reply to report. */
	bool local_success = (kind == BOUNCE_DELIVERED || kind == BOUNCE_RELAYED) &&
	                     (r->remote_mta == NULL || r->remote_mta[0] == '\0');
	if (r->diagnostic != NULL && !local_success)
		bounce_field(c, "Diagnostic-Code", "smtp; ", r->diagnostic, BOUNCE_DIAG_MAX);
	if (r->last_attempt_us != 0)
		bounce_date_field(c, "Last-Attempt-Date", r->last_attempt_us);
	if (kind == BOUNCE_DELAYED && c->b->retry_until_us != 0)
		bounce_date_field(c, "Will-Retry-Until", c->b->retry_until_us);
}

/* Part 2: RFC 3464 section 2.2 per-message fields, then a block per
 * recipient, each block preceded by an empty line. */
static void bounce_dsn(struct bounce_ctx *c)
{
	const struct bounce_info *b = c->b;
	char *v;
	bounce_part_start(c, c->utf8 ? "message/global-delivery-status" : "message/delivery-status",
	                  "Delivery report", c->utf8 ? "8bit" : NULL);
	bounce_field_put(c, "Reporting-MTA", "dns; ", c->mta);
	bounce_field(c, "X-Hikyaku-Queue-ID", "", b->qid, BOUNCE_VALUE_MAX);
	if (b->envid != NULL) {
		v = bounce_xtext_decode(b->envid);
		bounce_field(c, "Original-Envelope-Id", "", v, BOUNCE_VALUE_MAX);
		free(v);
	}
	if (b->arrival_us != 0)
		bounce_date_field(c, "Arrival-Date", b->arrival_us);
	for (size_t i = 0; i < b->nrcpts; i++)
		bounce_dsn_rcpt(c, i);
	bounce_puts(c, "\r\n");
}

/* The original with CRLF line ends, lines broken past BOUNCE_ORIG_LINE (not
 * inside a UTF-8 character if it can be helped; as a fold in the header
 * section), and a final CRLF. Copied in runs, window by window: it may be
 * 10 MiB. A CR that ends a window takes an LF that starts the next. */
static void bounce_orig_copy(struct bounce_ctx *c)
{
	size_t col = 0;
	bool in_headers = true, skip_lf = false;
	for (size_t pos = 0; pos < c->origlen && c->err == 0;) {
		size_t n = bounce_min(BOUNCE_WINDOW, c->origlen - pos), run = 0;
		const unsigned char *p = bounce_orig_at(c, pos, n);
		if (p == NULL)
			return;
		pos += n;
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = p[i];
			if (skip_lf) {
				skip_lf = false;
				if (ch == '\n') {
					run = i + 1;
					continue;
				}
			}
			if (ch == '\r' || ch == '\n') {
				bounce_put(c, p + run, i - run);
				bounce_puts(c, "\r\n");
				if (ch == '\r' && i + 1 < n && p[i + 1] == '\n')
					i++;
				else if (ch == '\r' && i + 1 == n)
					skip_lf = true;
				if (col == 0)
					in_headers = false;
				col = 0;
				run = i + 1;
				continue;
			}
			if (col >= BOUNCE_ORIG_LINE &&
			    ((ch & 0xc0) != 0x80 || col >= BOUNCE_ORIG_LINE + 3)) {
				bounce_put(c, p + run, i - run);
				bounce_puts(c, in_headers ? "\r\n " : "\r\n");
				col = in_headers ? 1 : 0;
				run = i;
			}
			col++;
		}
		if (run < n)
			bounce_put(c, p + run, n - run);
	}
	if (col > 0)
		bounce_puts(c, "\r\n");
	/* The CRLF before a delimiter belongs to it (RFC 2046 section 5.1.1);
	 * this one keeps the original's last line end in the part. */
	bounce_puts(c, "\r\n");
}

/* Part 3: RFC 3462/6522 text/rfc822-headers or the whole message/rfc822
 * (RFC 6533 message/global-headers and message/global for SMTPUTF8). */
static const char *bounce_original_label(const struct bounce_ctx *c)
{
	switch (c->b->kind) {
	case BOUNCE_DELAYED:
		return "Delayed Message Headers";
	case BOUNCE_DELIVERED:
		return "Delivered Message Headers";
	case BOUNCE_RELAYED:
		return "Relayed Message Headers";
	case BOUNCE_FAILED:
		break;
	}
	return c->orig_full ? "Undelivered Message" : "Undelivered Message Headers";
}

static void bounce_original(struct bounce_ctx *c)
{
	const char *type;
	if (c->orig_full)
		type = c->utf8 ? "message/global" : "message/rfc822";
	else
		type = c->utf8 ? "message/global-headers" : "text/rfc822-headers";
	bounce_part_start(c, type, bounce_original_label(c),
	                  c->utf8 || c->orig_8bit ? "8bit" : "7bit");
	bounce_orig_copy(c);
}

int bounce_build(const struct bounce_info *b, struct buf *out)
{
	struct bounce_ctx c = {.b = b, .out = out, .start = out->len};
	size_t start = out->len, k = 0;
	if (b->msg == NULL && b->msglen > 0 && b->msg_fd >= 0)
		c.win = xmalloc(bounce_min(b->msglen, BOUNCE_WINDOW));
	c.utf8 = !bounce_is_ascii(b->sender);
	c.orcpts = xcalloc(b->nrcpts + 1, sizeof(*c.orcpts));
	for (size_t i = 0; i < b->nrcpts; i++) {
		const char *o = b->rcpts[i].orcpt;
		if (o != NULL && o[0] != '\0') {
			char *d = bounce_xtext_decode(o);
			if (strchr(d, ';') == NULL) {
				char *t = xmalloc(strlen(d) + 8);
				memcpy(t, "rfc822;", 7);
				memcpy(t + 7, d, strlen(d) + 1);
				free(d);
				d = t;
			}
			c.orcpts[i] = d;
			c.utf8 = c.utf8 || !bounce_is_ascii(d);
		}
		c.utf8 = c.utf8 || !bounce_is_ascii(b->rcpts[i].addr);
	}
	bounce_host_copy(c.mta, sizeof(c.mta), b->reporting_mta);
	for (const char *q = b->qid; q != NULL && *q != '\0' && k < BOUNCE_QID_MAX; q++)
		if ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
		    (*q >= '0' && *q <= '9'))
			c.qid[k++] = *q;
	c.qid[k] = '\0';
	if (k == 0)
		snprintf(c.qid, sizeof(c.qid), "noqid");
	bounce_orig_select(&c);
	bounce_boundary_make(&c);

	bounce_headers(&c);
	bounce_text(&c);
	bounce_dsn(&c);
	if (c.origlen > 0)
		bounce_original(&c);
	bounce_puts(&c, "--");
	bounce_puts(&c, c.boundary);
	bounce_puts(&c, "--\r\n");
	bounce_flush(&c);

	for (size_t i = 0; i < b->nrcpts; i++)
		free(c.orcpts[i]);
	free(c.orcpts);
	free(c.win);
	if (c.err != 0) {
		out->len = start;
		if (out->data != NULL)
			out->data[start] = '\0';
		return c.err;
	}
	return 0;
}
