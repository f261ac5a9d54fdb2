/* datascan.c — the DATA / BDAT content scanner (RFC 5321 §4.1.1.4, §4.5.2;
 * RFC 3030). Runs in the smtpd workers on every octet a client sends after
 * DATA or BDAT, so every input is hostile and this is the hot path.
 *
 * Two layers:
 *   - the wire layer (datascan_feed) finds line ends, removes the stuffing
 *     dot and recognises CRLF "." CRLF. Only CR immediately followed by LF
 *     ends a line; a bare CR or bare LF is content, is flagged, and never
 *     starts a line, so "\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n" and
 *     "\r\n.\r" cannot end the message (SMTP smuggling, 2023).
 *   - the content layer (scan_account_*) sees unstuffed content and keeps
 *     the line length, header section, Received: count, whether Message-ID:
 *     and Date: are present, and flags.
 * Content octets are appended to out as contiguous spans of the input, not
 * byte by byte; a span is cut only where a stuffing dot or the final ".CRLF"
 * is dropped.
 *
 * Resumable across any split: all state lives in struct datascan and every
 * decision that needs the next octet (a CR, a dot at line start) is kept as
 * a state until that octet arrives. Results are identical for every split.
 *
 * Measures (documented choices):
 *   - line length is measured on content, i.e. without the stuffing dot, as
 *     RFC 5321 §4.5.3.1.6 says ("not counting the leading dot duplicated for
 *     transparency"); it includes the CRLF, and bare CR/LF do not end a line.
 *   - header_size counts the octets of the header fields with their CRLFs,
 *     not the empty line that ends the section (RFC 5322 §2.1).
 *   - a zero limit is literal (max_size 0 means any content is too big);
 *     the caller fills every limit.
 *   - out receives exactly the first min(size, max_size, room in out)
 *     octets of content, whatever the split. */
#include "smtpd/datascan.h"

#include <string.h>

enum scan_state {
	SCAN_LINE_START, /* DOT: at the start of a wire line */
	SCAN_MID,        /* inside a line */
	SCAN_CR,         /* a CR (already content) waits for its LF */
	SCAN_DOT,        /* DOT: "." at line start, removed */
	SCAN_DOT_CR,     /* DOT: ".CR" at line start: the end, or a bare CR */
	SCAN_DONE,       /* DOT: CRLF.CRLF consumed */
};

/* The header fields whose presence the scan reports, matched at the start of
 * a content line without case; WSP may come before the colon once the whole
 * name matched (RFC 5322 §4.5.3 obs-optional). Received: counts hops
 * (RFC 5321 §6.3); Message-ID: and Date: are added on submission when
 * missing (RFC 6409 §8.3). */
static const struct {
	const char *name;
	size_t len;
} scan_fields[] = {
    {"received", 8},
    {"message-id", 10},
    {"date", 4},
};
#define SCAN_FIELD_RECEIVED 0
#define SCAN_FIELD_MESSAGE_ID 1
#define SCAN_FIELD_DATE 2
#define SCAN_FIELDS_ALL ((1u << (sizeof(scan_fields) / sizeof(scan_fields[0]))) - 1)

void datascan_init(struct datascan *s, enum datascan_mode mode, const struct datascan_limits *lim)
{
	memset(s, 0, sizeof(*s));
	s->mode = mode;
	s->lim = *lim;
	s->st = mode == DATASCAN_DOT ? SCAN_LINE_START : SCAN_MID;
	s->line_len = 0;
	s->hdr_match = 0;
	s->hdr_cand = SCAN_FIELDS_ALL;
	s->in_header = true;
	s->line_start = true;
}

/* Append content to out: only the part that keeps size within max_size and
 * fits out's own max, so the octets kept never depend on how input was
 * split. size counts all content, kept or not. */
static void scan_out_append(struct datascan *s, struct buf *out, const unsigned char *p, size_t n)
{
	if (n == 0)
		return;
	size_t keep = n;
	if (s->size >= s->lim.max_size)
		keep = 0;
	else if (s->lim.max_size - s->size < keep)
		keep = (size_t)(s->lim.max_size - s->size);
	if (keep < n)
		s->flags |= DATASCAN_TOO_BIG;
	size_t room = out->max - out->len; /* buf keeps len <= max */
	if (keep > room) {
		keep = room;
		s->flags |= DATASCAN_TOO_BIG;
	}
	if (keep > 0 && buf_append(out, p, keep) < 0)
		s->flags |= DATASCAN_TOO_BIG; /* not reached: keep fits */
	s->size += n;
}

static void scan_header_found(struct datascan *s, size_t field)
{
	switch (field) {
	case SCAN_FIELD_RECEIVED:
		s->received++;
		if (s->received > s->lim.max_received)
			s->flags |= DATASCAN_TOO_MANY_HOPS;
		break;
	case SCAN_FIELD_MESSAGE_ID:
		s->message_id = true;
		break;
	default:
		s->date = true;
		break;
	}
}

/* One octet of a possible field name at line start: hdr_cand keeps the
 * fields still possible (a bit each), hdr_match the octets of their name
 * matched so far (all candidates share that prefix). */
static void scan_header_step(struct datascan *s, unsigned char c)
{
	unsigned char lc = c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
	bool wsp = c == ' ' || c == '\t';
	unsigned keep = 0;

	for (size_t i = 0; i < sizeof(scan_fields) / sizeof(scan_fields[0]); i++) {
		if (!(s->hdr_cand & (1u << i)))
			continue;
		if (s->hdr_match < scan_fields[i].len) {
			if (lc == (unsigned char)scan_fields[i].name[s->hdr_match])
				keep |= 1u << i;
		} else if (wsp) {
			keep |= 1u << i;
		} else if (c == ':') {
			scan_header_found(s, i);
		}
	}
	s->hdr_cand = keep;
	if (!wsp)
		s->hdr_match++;
}

/* NUL and 8-bit octets, checked once per feed over all the input consumed:
 * the octets it holds besides content (stuffing dots, the final ".CRLF")
 * are neither, and a bare CR carried from an earlier feed is neither. */
static void scan_account_octets(struct datascan *s, const unsigned char *p, size_t n)
{
	if (!(s->flags & DATASCAN_NUL) && memchr(p, '\0', n) != NULL)
		s->flags |= DATASCAN_NUL;
	if (s->eight_bit)
		return;
	/* eight octets at a time (memcpy: no alignment assumption) */
	uint64_t acc = 0, w;
	size_t i = 0;
	for (; i + 32 <= n; i += 32) {
		uint64_t a, b, c, d;
		memcpy(&a, p + i, 8);
		memcpy(&b, p + i + 8, 8);
		memcpy(&c, p + i + 16, 8);
		memcpy(&d, p + i + 24, 8);
		acc |= a | b | c | d;
	}
	for (; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		acc |= w;
	}
	for (; i < n; i++)
		acc |= p[i];
	if (acc & UINT64_C(0x8080808080808080))
		s->eight_bit = true;
}

/* Content octets inside a line. They hold no CR except a single bare CR
 * passed by the caller; any LF in them is bare (a line ends only at CRLF,
 * which goes to scan_account_crlf). */
static void scan_account_run(struct datascan *s, const unsigned char *p, size_t n)
{
	if (!(s->flags & DATASCAN_BARE_LF) && memchr(p, '\n', n) != NULL)
		s->flags |= DATASCAN_BARE_LF;
	if (s->in_header) {
		for (size_t i = 0; i < n && s->hdr_cand != 0; i++)
			scan_header_step(s, p[i]);
		s->header_size += n;
		if (s->header_size > s->lim.max_header)
			s->flags |= DATASCAN_HEADER_BIG;
	}
	s->line_len += n;
	if (s->line_len > s->lim.max_line)
		s->flags |= DATASCAN_LONG_LINE;
	s->line_start = false;
}

/* A CRLF line end. An empty content line ends the header section
 * (RFC 5322 §2.1); its CRLF is not part of the header. */
static void scan_account_crlf(struct datascan *s)
{
	if (s->in_header) {
		if (s->line_start) {
			s->in_header = false;
		} else {
			s->header_size += 2;
			if (s->header_size > s->lim.max_header)
				s->flags |= DATASCAN_HEADER_BIG;
		}
		s->hdr_match = 0;
		s->hdr_cand = SCAN_FIELDS_ALL;
	}
	s->line_len += 2;
	if (s->line_len > s->lim.max_line)
		s->flags |= DATASCAN_LONG_LINE;
	s->line_len = 0;
	s->line_start = true;
}

/* A CR that was not followed by LF: content, flagged, mid-line. */
static void scan_account_bare_cr(struct datascan *s)
{
	static const unsigned char cr = '\r';

	s->flags |= DATASCAN_BARE_CR;
	scan_account_run(s, &cr, 1);
}

/* SCAN_MID over as much input as possible: whole lines at memchr speed.
 * Returns the new position; the state is updated. The octets passed stay in
 * the caller's pending output span. */
static const unsigned char *scan_feed_mid(struct datascan *s, const unsigned char *p,
                                          const unsigned char *end)
{
	int next_line = s->mode == DATASCAN_DOT ? SCAN_LINE_START : SCAN_MID;

	while (p < end) {
		const unsigned char *cr = memchr(p, '\r', (size_t)(end - p));
		if (cr == NULL) {
			scan_account_run(s, p, (size_t)(end - p));
			return end;
		}
		if (cr > p)
			scan_account_run(s, p, (size_t)(cr - p));
		if (cr + 1 == end) {
			s->st = SCAN_CR; /* resolved by the next octet */
			return end;
		}
		if (cr[1] != '\n') {
			scan_account_bare_cr(s);
			p = cr + 1;
			continue;
		}
		scan_account_crlf(s);
		p = cr + 2;
		/* DOT: a line start that is not a dot is settled here, without a
		 * round through the state machine */
		if (next_line == SCAN_LINE_START && (p == end || *p == '.')) {
			s->st = SCAN_LINE_START;
			return p;
		}
	}
	return p;
}

size_t datascan_feed(struct datascan *s, const unsigned char *in, size_t len, struct buf *out,
                     bool *done_r)
{
	static const unsigned char cr = '\r';
	const unsigned char *p = in, *end = in + len;
	const unsigned char *span = in; /* content not yet appended: [span, p) */

	while (p < end && s->st != SCAN_DONE) {
		switch (s->st) {
		case SCAN_MID:
			p = scan_feed_mid(s, p, end);
			break;
		case SCAN_CR:
			/* the CR is content either way and was appended already */
			if (*p == '\n') {
				p++;
				scan_account_crlf(s);
				s->st = s->mode == DATASCAN_DOT ? SCAN_LINE_START : SCAN_MID;
			} else {
				scan_account_bare_cr(s);
				s->st = SCAN_MID;
			}
			break;
		case SCAN_LINE_START:
			if (*p == '.') {
				/* RFC 5321 §4.5.2: drop the first dot of the line */
				scan_out_append(s, out, span, (size_t)(p - span));
				span = ++p;
				s->st = SCAN_DOT;
			} else {
				s->st = SCAN_MID;
			}
			break;
		case SCAN_DOT:
			if (*p == '\r') {
				span = ++p; /* held back: content only if no LF follows */
				s->st = SCAN_DOT_CR;
			} else {
				s->st = SCAN_MID; /* ".X": X is content */
			}
			break;
		case SCAN_DOT_CR:
			if (*p == '\n') {
				span = ++p;
				s->st = SCAN_DONE; /* CRLF "." CRLF */
			} else {
				/* span is empty here: the CR goes first */
				scan_out_append(s, out, &cr, 1);
				scan_account_bare_cr(s);
				s->st = SCAN_MID;
			}
			break;
		default:
			p = end;
			break;
		}
	}
	scan_out_append(s, out, span, (size_t)(p - span));
	scan_account_octets(s, in, (size_t)(p - in));
	if (done_r != NULL)
		*done_r = s->st == SCAN_DONE;
	return (size_t)(p - in);
}

void datascan_finish(struct datascan *s)
{
	if (s->st == SCAN_CR) {
		scan_account_bare_cr(s);
		s->st = SCAN_MID;
	}
}
