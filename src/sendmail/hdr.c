/* hdr.c — sendmail's message scan (hdr.h). Runs in the sendmail command
 * (the caller's input) and on the fuzzer; every index is bounded by len. */
#include "sendmail/hdr.h"

#include "lib/buf.h"

#include <string.h>
#include <strings.h>

#define HDR_ADDR_MAX 1024 /* longer than any address: cut, then refused */

int sendmail_msg_normalize(const char *in, size_t len, bool ignore_dots, bool *at_bol, bool *first,
                           struct buf *out)
{
	size_t i = 0;
	while (i < len) {
		const char *nl = memchr(in + i, '\n', len - i);
		size_t end = nl != NULL ? (size_t)(nl - in) : len;
		const char *line = in + i;
		size_t n = end - i;
		bool bol = *at_bol;
		if (bol && *first) {
			/* Only a whole first line can be told apart; one split
			 * across reads of a "From " line is kept. */
			*first = false;
			if (nl != NULL && n >= 5 && memcmp(line, "From ", 5) == 0) {
				i = end + 1;
				continue;
			}
		}
		size_t t = n;
		if (t > 0 && line[t - 1] == '\r' && nl != NULL)
			t--;
		if (!ignore_dots && bol && nl != NULL && t == 1 && line[0] == '.')
			return 1;
		for (size_t k = 0; k < t; k++) {
			if (line[k] != '\r')
				buf_append_byte(out, (unsigned char)line[k]);
		}
		if (nl != NULL) {
			buf_append(out, "\r\n", 2);
			*at_bol = true;
			i = end + 1;
		} else {
			/* A lone "." split from its LF: not the end, as a
			 * partial line ("." then "x\n") would not be. */
			*at_bol = false;
			i = end;
		}
	}
	return 0;
}

struct addr_acc {
	char cur[HDR_ADDR_MAX];
	size_t ncur;
	char angle[HDR_ADDR_MAX];
	size_t nangle;
	bool in_angle, had_angle;
};

static void acc_put(char *b, size_t *n, char c)
{
	if (*n < HDR_ADDR_MAX)
		b[(*n)++] = c;
}

static void acc_flush(struct addr_acc *a, void (*cb)(void *, const char *, size_t), void *arg)
{
	if (a->had_angle && a->nangle > 0)
		cb(arg, a->angle, a->nangle);
	else if (!a->had_angle && a->ncur > 0)
		cb(arg, a->cur, a->ncur);
	a->ncur = a->nangle = 0;
	a->in_angle = a->had_angle = false;
}

void sendmail_addrlist(const char *p, size_t len, void (*cb)(void *, const char *, size_t),
                       void *arg)
{
	struct addr_acc a = {.ncur = 0};
	for (size_t i = 0; i < len; i++) {
		char c = p[i];
		char *b = a.in_angle ? a.angle : a.cur;
		size_t *n = a.in_angle ? &a.nangle : &a.ncur;
		if (c == '(') { /* comment, nested, with quoted-pairs */
			int depth = 1;
			for (i++; i < len && depth > 0; i++) {
				if (p[i] == '\\')
					i++;
				else if (p[i] == '(')
					depth++;
				else if (p[i] == ')')
					depth--;
			}
			i--;
		} else if (c == '"') { /* quoted-string, kept with its quotes */
			acc_put(b, n, c);
			for (i++; i < len && p[i] != '"'; i++) {
				if (p[i] == '\\' && i + 1 < len)
					acc_put(b, n, p[i++]);
				if (p[i] != '\r' && p[i] != '\n')
					acc_put(b, n, p[i]);
			}
			acc_put(b, n, '"');
		} else if (c == '<' && !a.in_angle) {
			a.in_angle = true;
			a.nangle = 0;
		} else if (c == '>' && a.in_angle) {
			a.in_angle = false;
			a.had_angle = true;
		} else if (c == ':' && a.in_angle) {
			a.nangle = 0; /* the end of a source route: dropped */
		} else if (c == ':' && !a.in_angle) {
			a.ncur = 0; /* a group's display name */
		} else if ((c == ',' || c == ';') && !a.in_angle) {
			acc_flush(&a, cb, arg);
		} else if (c == ',' && a.in_angle) {
			a.nangle = 0; /* within a source route */
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			/* folding and the spaces of display names */
		} else {
			acc_put(b, n, c);
		}
	}
	acc_flush(&a, cb, arg);
}

/* The field name of the line at p (up to the colon), or 0 if it is not a
 * field (a continuation or the body). */
static size_t hdr_name_len(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (p[i] == ':')
			return i;
		if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			return 0;
	}
	return 0;
}

static bool hdr_is(const char *name, size_t n, const char *want)
{
	return n == strlen(want) && strncasecmp(name, want, n) == 0;
}

void sendmail_hdr_scan(const char *msg, size_t len, bool extract, bool remove_bcc,
                       void (*cb)(void *, const char *, size_t), void *arg, struct sendmail_hdr *h,
                       struct buf *out)
{
	size_t i = 0;
	memset(h, 0, sizeof(*h));
	while (i < len) {
		const char *line = msg + i;
		const char *eol = memchr(line, '\n', len - i);
		size_t llen = eol != NULL ? (size_t)(eol - line) + 1 : len - i;
		size_t n = hdr_name_len(line, llen);
		if (n == 0)
			break; /* the empty line, or the body without one */
		/* the field with its folded continuation lines */
		size_t flen = llen;
		while (i + flen < len && (msg[i + flen] == ' ' || msg[i + flen] == '\t')) {
			const char *e = memchr(msg + i + flen, '\n', len - i - flen);
			flen = e != NULL ? (size_t)(e - msg) + 1 - i : len - i;
		}
		bool bcc = hdr_is(line, n, "Bcc");
		if (extract && (bcc || hdr_is(line, n, "To") || hdr_is(line, n, "Cc")))
			sendmail_addrlist(line + n + 1, flen - n - 1, cb, arg);
		h->has_from |= hdr_is(line, n, "From");
		h->has_date |= hdr_is(line, n, "Date");
		h->has_message_id |= hdr_is(line, n, "Message-ID");
		if (!(bcc && remove_bcc))
			buf_append(out, line, flen);
		i += flen;
	}
	h->header_end = out->len;
	/* Text that is not a field and not the empty line: the body began
	 * without one (a script's "echo hello | sendmail"). The empty line
	 * goes in, or that text would read as a broken header field, and the
	 * From we may add on top would end up among it (Postfix does so too). */
	if (i < len && !(len - i >= 2 && msg[i] == '\r' && msg[i + 1] == '\n'))
		buf_append(out, "\r\n", 2);
	buf_append(out, msg + i, len - i);
}
