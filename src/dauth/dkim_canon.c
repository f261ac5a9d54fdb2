/* dkim_canon.c — DKIM canonicalization (RFC 6376 §3.4): header fields one
 * at a time, the body as a stream split anywhere. Pure code, any process;
 * the input is the received message, hostile. The body canonicalizer keeps
 * O(1) state: trailing empty lines are counted, not buffered. */
#include "dauth/dkim.h"

#include <string.h>

static bool dkim_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

/* §3.4.1 simple: unchanged. §3.4.2 relaxed: name lower-cased, unfolded,
 * WSP runs to one SP, WSP around the colon and at the end removed. */
int dkim_canon_header(enum dkim_canon c, const char *field, size_t len, struct buf *out)
{
	if (c == DKIM_CANON_SIMPLE) {
		if (buf_append(out, field, len) < 0)
			return -1;
		return buf_append(out, "\r\n", 2);
	}
	const char *colon = memchr(field, ':', len);
	size_t nlen = colon != NULL ? (size_t)(colon - field) : len;
	while (nlen > 0 && dkim_wsp((unsigned char)field[nlen - 1]))
		nlen--;
	if (buf_reserve(out, len + 3) < 0)
		return -1;
	for (size_t i = 0; i < nlen; i++) {
		unsigned char ch = (unsigned char)field[i];
		buf_append_byte(out, ch >= 'A' && ch <= 'Z' ? (unsigned char)(ch + 32) : ch);
	}
	buf_append_byte(out, ':');
	bool wsp = false, any = false;
	size_t start = colon != NULL ? (size_t)(colon - field) + 1 : len;
	for (size_t i = start; i < len; i++) {
		unsigned char ch = (unsigned char)field[i];
		if (ch == '\r' || ch == '\n')
			continue; /* unfolding (§3.4.2: CRLF of folding removed) */
		if (dkim_wsp(ch)) {
			wsp = true;
			continue;
		}
		if (wsp && any)
			buf_append_byte(out, ' ');
		wsp = false;
		any = true;
		buf_append_byte(out, ch);
	}
	return buf_append(out, "\r\n", 2);
}

void dkim_bodycanon_init(struct dkim_bodycanon *bc, enum dkim_canon c, bool has_limit,
                         uint64_t limit, dkim_emit_fn *emit, void *arg)
{
	memset(bc, 0, sizeof(*bc));
	bc->canon = c;
	bc->has_limit = has_limit;
	bc->limit = limit;
	bc->emit = emit;
	bc->arg = arg;
	bc->line_empty = true;
}

/* Output staging: canonical octets gathered per feed call, l= applied. */
struct dkim_stage {
	struct dkim_bodycanon *bc;
	unsigned char buf[4096];
	size_t n;
};

static void dkim_stage_flush(struct dkim_stage *st)
{
	struct dkim_bodycanon *bc = st->bc;
	size_t n = st->n;
	st->n = 0;
	if (bc->has_limit) {
		uint64_t room = bc->limit > bc->emitted ? bc->limit - bc->emitted : 0;
		if (n > room)
			n = (size_t)room;
	}
	if (n == 0)
		return;
	bc->emitted += n;
	bc->emit(bc->arg, st->buf, n);
}

static void dkim_stage_put(struct dkim_stage *st, const void *p, size_t n)
{
	const unsigned char *s = p;
	while (n > 0) {
		if (st->n == sizeof(st->buf))
			dkim_stage_flush(st);
		size_t k = sizeof(st->buf) - st->n;
		if (k > n)
			k = n;
		memcpy(st->buf + st->n, s, k);
		st->n += k;
		s += k;
		n -= k;
	}
}

/* A non-empty line's octet: held-back empty lines and whitespace first. */
static void dkim_body_content(struct dkim_stage *st, unsigned char c)
{
	struct dkim_bodycanon *bc = st->bc;
	if (bc->line_empty) {
		for (; bc->blank > 0; bc->blank--)
			dkim_stage_put(st, "\r\n", 2);
		bc->line_empty = false;
		bc->any = true;
	}
	if (bc->wsp) {
		dkim_stage_put(st, " ", 1);
		bc->wsp = false;
	}
	dkim_stage_put(st, &c, 1);
}

static void dkim_body_eol(struct dkim_stage *st)
{
	struct dkim_bodycanon *bc = st->bc;
	if (bc->line_empty)
		bc->blank++;
	else
		dkim_stage_put(st, "\r\n", 2);
	bc->line_empty = true;
	bc->wsp = false; /* relaxed: trailing WSP of a line dropped (§3.4.4) */
}

static void dkim_body_octet(struct dkim_stage *st, unsigned char c)
{
	struct dkim_bodycanon *bc = st->bc;
	if (bc->cr) {
		bc->cr = false;
		if (c == '\n') {
			dkim_body_eol(st);
			return;
		}
		dkim_body_content(st, '\r'); /* a bare CR is content */
	}
	if (c == '\r')
		bc->cr = true;
	else if (bc->canon == DKIM_CANON_RELAXED && dkim_wsp(c))
		bc->wsp = true;
	else
		dkim_body_content(st, c);
}

void dkim_bodycanon_feed(struct dkim_bodycanon *bc, const void *p, size_t n)
{
	struct dkim_stage st = {.bc = bc};
	const unsigned char *s = p;
	if (bc->has_limit && bc->emitted >= bc->limit)
		return;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		/* fast path: a run of plain octets in a non-empty line */
		if (!bc->cr && !bc->line_empty && !bc->wsp && c != '\r' &&
		    !(bc->canon == DKIM_CANON_RELAXED && dkim_wsp(c))) {
			size_t j = i + 1;
			while (j < n && s[j] != '\r' &&
			       !(bc->canon == DKIM_CANON_RELAXED && dkim_wsp(s[j])))
				j++;
			dkim_stage_put(&st, s + i, j - i);
			i = j - 1;
			continue;
		}
		dkim_body_octet(&st, c);
	}
	dkim_stage_flush(&st);
}

/* §3.4.3: trailing empty lines go, a missing final CRLF is added, an empty
 * body is one CRLF. §3.4.4 (and erratum 1384): the same, but an empty body
 * stays empty. */
void dkim_bodycanon_finish(struct dkim_bodycanon *bc)
{
	struct dkim_stage st = {.bc = bc};
	if (bc->cr) {
		bc->cr = false;
		dkim_body_content(&st, '\r');
	}
	if (!bc->line_empty)
		dkim_body_eol(&st);
	if (bc->canon == DKIM_CANON_SIMPLE && !bc->any)
		dkim_stage_put(&st, "\r\n", 2);
	dkim_stage_flush(&st);
}
