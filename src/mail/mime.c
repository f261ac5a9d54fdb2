/* mime.c — the bounded MIME parser (mime.h). Runs in the process that
 * serves the mail sandbox's API on captured messages: every octet is
 * hostile. Each scan is bounded by its range; recursion by MIME_MAX_DEPTH;
 * the part table by MIME_MAX_PARTS. Pure, no I/O (iconv(3) may load its
 * converter modules from the C library's gconv directory; when it cannot,
 * the text is read as UTF-8 or ISO-8859-1). */
#include "mail/mime.h"

#include <errno.h>
#include <iconv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/alloc.h"
#include "lib/json.h"
#include "mail/header.h"

#define MIME_PARAM_SEGS 64 /* RFC 2231 continuations kept per parameter */
#define MIME_CID_MAX 998

static char mime_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

static bool mime_wsp(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int mime_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = mime_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool mime_ncase_eq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (mime_lower(a[i]) != mime_lower(b[i]))
			return false;
	}
	return true;
}

/* RFC 2045 §5.1 token characters. */
static bool mime_tchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f && strchr("()<>@,;:\\\"/[]?=", c) == NULL;
}

/* ---- transfer decodings ---- */

int mime_qp_decode(const char *in, size_t len, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0;) {
		char c = in[i];
		if (c == '=') {
			int h1 = i + 1 < len ? mime_hex(in[i + 1]) : -1;
			int h2 = i + 2 < len ? mime_hex(in[i + 2]) : -1;
			if (h1 >= 0 && h2 >= 0) {
				rc = buf_append_byte(out, (unsigned char)(h1 << 4 | h2));
				i += 3;
				continue;
			}
			/* a soft line break: '=', transport padding, CRLF (§6.7 (5)) */
			size_t j = i + 1;
			while (j < len && (in[j] == ' ' || in[j] == '\t'))
				j++;
			if (j < len && in[j] == '\r' && j + 1 < len && in[j + 1] == '\n') {
				i = j + 2;
				continue;
			}
			if (j < len && in[j] == '\n') {
				i = j + 1;
				continue;
			}
			if (j >= len) {
				i = len;
				continue;
			}
			rc = buf_append_byte(out, '='); /* malformed: kept (§6.7 note 1) */
			i++;
		} else if (c == ' ' || c == '\t') {
			size_t j = i;
			while (j < len && (in[j] == ' ' || in[j] == '\t'))
				j++;
			/* trailing whitespace of a line is padding (§6.7 (3)) */
			bool eol = j >= len || in[j] == '\n' ||
			           (in[j] == '\r' && j + 1 < len && in[j + 1] == '\n');
			if (!eol)
				rc = buf_append(out, in + i, j - i);
			i = j;
		} else {
			rc = buf_append_byte(out, (unsigned char)c);
			i++;
		}
	}
	return rc;
}

static int mime_b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int mime_b64_decode(const char *in, size_t len, struct buf *out)
{
	uint32_t acc = 0;
	unsigned n = 0;
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0; i++) {
		unsigned char c = (unsigned char)in[i];
		int v = mime_b64_val(c);
		if (v < 0) {
			if (c != '=')
				continue; /* line breaks and junk (§6.8: ignored) */
			/* padding ends a quantum; a later one may follow */
			if (n == 2)
				rc = buf_append_byte(out, (unsigned char)(acc >> 4));
			else if (n == 3) {
				unsigned char b[2] = {(unsigned char)(acc >> 10),
				                      (unsigned char)(acc >> 2)};
				rc = buf_append(out, b, 2);
			}
			acc = 0, n = 0;
			continue;
		}
		acc = acc << 6 | (uint32_t)v;
		if (++n == 4) {
			unsigned char b[3] = {(unsigned char)(acc >> 16), (unsigned char)(acc >> 8),
			                      (unsigned char)acc};
			rc = buf_append(out, b, 3);
			acc = 0, n = 0;
		}
	}
	if (rc == 0 && n == 2)
		rc = buf_append_byte(out, (unsigned char)(acc >> 4));
	else if (rc == 0 && n == 3) {
		unsigned char b[2] = {(unsigned char)(acc >> 10), (unsigned char)(acc >> 2)};
		rc = buf_append(out, b, 2);
	}
	return rc;
}

/* ---- charsets ---- */

/* windows-1252 at 0x80-0x9f; the rest of it is ISO-8859-1. The WHATWG
 * Encoding Standard reads the ISO-8859-1 and US-ASCII labels as this too,
 * and it needs no gconv module (the confined http process may have none). */
static const uint16_t mime_cp1252[32] = {
    0x20ac, 0x0081, 0x201a, 0x0192, 0x201e, 0x2026, 0x2020, 0x2021, 0x02c6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008d, 0x017d, 0x008f, 0x0090, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022,
    0x2013, 0x2014, 0x02dc, 0x2122, 0x0161, 0x203a, 0x0153, 0x009d, 0x017e, 0x0178,
};

static int mime_put_1252(unsigned char c, struct buf *out)
{
	unsigned cp = c >= 0x80 && c < 0xa0 ? mime_cp1252[c - 0x80] : c;
	unsigned char b[3];
	if (cp < 0x80)
		return buf_append_byte(out, (unsigned char)cp);
	if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return buf_append(out, b, 2);
	}
	b[0] = (unsigned char)(0xe0 | cp >> 12), b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	b[2] = (unsigned char)(0x80 | (cp & 0x3f));
	return buf_append(out, b, 3);
}

static int mime_from_1252(const unsigned char *p, size_t len, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0; i++)
		rc = mime_put_1252(p[i], out);
	return rc;
}

/* Valid UTF-8 through, any other octet read as windows-1252. */
static int mime_utf8_or_latin1(const unsigned char *p, size_t len, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0;) {
		size_t n = json_utf8_len(p + i, len - i);
		if (n > 0) {
			rc = buf_append(out, p + i, n);
			i += n;
			continue;
		}
		rc = mime_put_1252(p[i], out);
		i++;
	}
	return rc;
}

static int mime_utf8_clean(const unsigned char *p, size_t len, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0;) {
		size_t n = json_utf8_len(p + i, len - i);
		if (n > 0) {
			rc = buf_append(out, p + i, n);
			i += n;
		} else {
			rc = buf_append_str(out, "\xef\xbf\xbd");
			i++;
		}
	}
	return rc;
}

static bool mime_charset_name(const char *cs, char *norm, size_t normlen)
{
	size_t n = strlen(cs);
	if (n == 0 || n >= normlen)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = mime_lower(cs[i]);
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
		      c == '.' || c == ':'))
			return false;
		norm[i] = c;
	}
	norm[n] = '\0';
	return true;
}

static int mime_iconv(iconv_t cd, const unsigned char *in, size_t len, struct buf *out)
{
	char tmp[4096];
	char *ip = (char *)(uintptr_t)in;
	size_t ileft = len;
	int rc = 0;
	while (rc == 0) {
		char *op = tmp;
		size_t oleft = sizeof(tmp);
		size_t r = ileft > 0 ? iconv(cd, &ip, &ileft, &op, &oleft)
		                     : iconv(cd, NULL, NULL, &op, &oleft);
		int e = errno;
		rc = buf_append(out, tmp, sizeof(tmp) - oleft);
		if (r != (size_t)-1) {
			if (ileft == 0 && ip != NULL && len > 0 && r != (size_t)-2) {
				/* input consumed: flush the shift state next round */
				ip = NULL;
				len = 0;
				continue;
			}
			break;
		}
		if (e == E2BIG)
			continue;
		if (rc == 0)
			rc = buf_append_str(out, "\xef\xbf\xbd");
		if (e == EILSEQ && ileft > 0) {
			ip++, ileft--;
			continue;
		}
		break; /* EINVAL: truncated at the end; anything else: stop */
	}
	return rc;
}

int mime_to_utf8(const char *charset, const void *vin, size_t len, struct buf *out)
{
	const unsigned char *in = vin;
	char cs[48];
	if (charset == NULL || !mime_charset_name(charset, cs, sizeof(cs)))
		return mime_utf8_or_latin1(in, len, out);
	if (strcmp(cs, "utf-8") == 0 || strcmp(cs, "utf8") == 0)
		return mime_utf8_clean(in, len, out);
	if (strcmp(cs, "us-ascii") == 0 || strcmp(cs, "ascii") == 0)
		return mime_utf8_or_latin1(in, len, out); /* mislabelled 8-bit is common */
	if (strcmp(cs, "iso-8859-1") == 0 || strcmp(cs, "iso8859-1") == 0 ||
	    strcmp(cs, "iso_8859-1") == 0 || strcmp(cs, "latin1") == 0 ||
	    strcmp(cs, "windows-1252") == 0 || strcmp(cs, "cp1252") == 0)
		return mime_from_1252(in, len, out);
	iconv_t cd = iconv_open("UTF-8", cs);
	if (cd == (iconv_t)-1)
		return mime_utf8_or_latin1(in, len, out);
	size_t start = out->len;
	int rc = mime_iconv(cd, in, len, out);
	iconv_close(cd);
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}

/* ---- header fields ---- */

int mime_hdr_get(const char *hdr, size_t len, const char *name, struct buf *out)
{
	struct mail_hdr_field f;
	size_t pos = 0;
	while (mail_hdr_next(hdr, len, &pos, &f)) {
		if (f.name_len == 0 || !mail_hdr_name_is(&f, name))
			continue;
		const char *v = f.value;
		size_t n = f.value_len, kept = 0;
		while (n > 0 && mime_wsp(*v))
			v++, n--;
		while (n > 0 && mime_wsp(v[n - 1]))
			n--;
		size_t start = out->len;
		for (size_t i = 0; i < n && kept < MIME_MAX_FIELD; i++) {
			if (v[i] == '\r' || v[i] == '\n')
				continue; /* unfolding (RFC 5322 §2.2.3) */
			if (buf_append_byte(out, (unsigned char)v[i]) != 0) {
				out->len = start;
				if (out->data != NULL)
					out->data[start] = '\0';
				return -1;
			}
			kept++;
		}
		return 1;
	}
	return 0;
}

/* An encoded-word at v[i] (RFC 2047 §2): its end, charset and decoded
 * octets into raw; 0 if it is not one. */
static size_t mime_ew_parse(const char *v, size_t len, size_t i, char *cs, size_t cslen,
                            struct buf *raw)
{
	if (i + 2 > len || v[i] != '=' || v[i + 1] != '?')
		return 0;
	size_t j = i + 2, c0 = j;
	while (j < len && v[j] != '?' && mime_tchar((unsigned char)v[j]))
		j++;
	if (j >= len || v[j] != '?' || j == c0 || j - c0 >= cslen)
		return 0;
	size_t clen = j - c0;
	memcpy(cs, v + c0, clen);
	cs[clen] = '\0';
	char *star = strchr(cs, '*'); /* RFC 2231 §5: charset*lang */
	if (star != NULL)
		*star = '\0';
	if (j + 3 > len || v[j + 2] != '?')
		return 0;
	char enc = mime_lower(v[j + 1]);
	if (enc != 'b' && enc != 'q')
		return 0;
	size_t t0 = j + 3, t = t0;
	while (t < len && v[t] != '?' && v[t] != ' ' && v[t] != '\t')
		t++;
	if (t + 1 >= len || v[t] != '?' || v[t + 1] != '=')
		return 0;
	if (enc == 'b') {
		if (mime_b64_decode(v + t0, t - t0, raw) != 0)
			return 0;
	} else {
		for (size_t k = t0; k < t; k++) {
			int h1, h2;
			unsigned char c = (unsigned char)v[k];
			if (c == '_')
				c = ' ';
			else if (c == '=' && k + 2 < t && (h1 = mime_hex(v[k + 1])) >= 0 &&
			         (h2 = mime_hex(v[k + 2])) >= 0) {
				c = (unsigned char)(h1 << 4 | h2);
				k += 2;
			}
			if (buf_append_byte(raw, c) != 0)
				return 0;
		}
	}
	return t + 2;
}

struct mime_words {
	struct buf *out;
	struct buf pend; /* decoded octets of adjacent words in one charset */
	char pend_cs[48];
	int rc;
};

static void mime_words_flush(struct mime_words *w)
{
	if (w->pend.len > 0 && w->rc == 0)
		w->rc = mime_to_utf8(w->pend_cs, buf_cstr(&w->pend), w->pend.len, w->out);
	buf_reset(&w->pend);
}

int mime_decode_words(const char *v, size_t len, struct buf *out)
{
	struct mime_words w = {.out = out};
	struct buf raw;
	char cs[48];
	size_t lit = 0, lit_len = 0; /* a literal run still to write */
	size_t ws = 0, ws_len = 0;   /* whitespace after an encoded-word */
	bool after_ew = false;
	buf_init(&w.pend, MIME_MAX_FIELD);
	buf_init(&raw, MIME_MAX_FIELD);
	for (size_t i = 0; i < len && w.rc == 0;) {
		size_t end = 0;
		if (v[i] == '=' && i + 1 < len && v[i + 1] == '?') {
			buf_reset(&raw);
			end = mime_ew_parse(v, len, i, cs, sizeof(cs), &raw);
		}
		if (end > 0) {
			if (lit_len > 0)
				w.rc = mime_utf8_or_latin1((const unsigned char *)v + lit, lit_len,
				                           out);
			lit_len = 0;
			ws_len = 0; /* between two encoded-words: dropped (§6.2) */
			if (strcmp(cs, w.pend_cs) != 0) {
				mime_words_flush(&w);
				snprintf(w.pend_cs, sizeof(w.pend_cs), "%s", cs);
			}
			if (w.rc == 0 && buf_append(&w.pend, buf_cstr(&raw), raw.len) != 0)
				w.rc = -1;
			after_ew = true;
			i = end;
			continue;
		}
		if (after_ew && mime_wsp(v[i])) {
			if (ws_len == 0)
				ws = i;
			ws_len++;
			i++;
			continue;
		}
		if (after_ew) {
			mime_words_flush(&w);
			lit = ws_len > 0 ? ws : i;
			lit_len = ws_len;
			ws_len = 0;
			after_ew = false;
		}
		if (lit_len == 0)
			lit = i;
		lit_len++;
		i++;
	}
	mime_words_flush(&w);
	if (w.rc == 0 && ws_len > 0)
		w.rc = buf_append(out, v + ws, ws_len);
	if (w.rc == 0 && lit_len > 0)
		w.rc = mime_utf8_or_latin1((const unsigned char *)v + lit, lit_len, out);
	buf_free(&w.pend);
	buf_free(&raw);
	return w.rc;
}

/* ---- parameters (RFC 2045 §5.1, RFC 2231) ---- */

struct mime_seg {
	bool have, ext;
	size_t off, len; /* in the value store */
};

/* One parameter value at v[*i]: a quoted-string (unquoted) or a token. */
static int mime_param_value(const char *v, size_t len, size_t *i, struct buf *val)
{
	size_t j = *i;
	int rc = 0;
	if (j < len && v[j] == '"') {
		for (j++; j < len && v[j] != '"' && rc == 0; j++) {
			if (v[j] == '\\' && j + 1 < len)
				j++;
			rc = val->len < MIME_MAX_PARAM ? buf_append_byte(val, (unsigned char)v[j])
			                               : 0;
		}
		if (j < len)
			j++;
	} else {
		size_t s = j;
		while (j < len && v[j] != ';' && !mime_wsp(v[j]))
			j++;
		size_t n = j - s < MIME_MAX_PARAM ? j - s : MIME_MAX_PARAM;
		rc = buf_append(val, v + s, n);
	}
	*i = j;
	return rc;
}

/* Which of name, name*, name*N, name*N* is attr[0..n)? -1 none, else the
 * segment number, *ext set for the extended forms. */
static int mime_param_match(const char *attr, size_t n, const char *name, bool *ext, bool *plain)
{
	size_t nl = strlen(name);
	*ext = false, *plain = false;
	if (n < nl || !mime_ncase_eq(attr, name, nl))
		return -1;
	if (n == nl) {
		*plain = true;
		return 0;
	}
	if (attr[nl] != '*')
		return -1;
	size_t j = nl + 1;
	if (j == n) {
		*ext = true;
		return 0;
	}
	unsigned seg = 0;
	size_t d0 = j;
	while (j < n && attr[j] >= '0' && attr[j] <= '9' && j - d0 < 4)
		seg = seg * 10 + (unsigned)(attr[j++] - '0');
	if (j == d0 || (j - d0 > 1 && attr[d0] == '0'))
		return -1;
	if (j < n && attr[j] == '*' && j + 1 == n)
		*ext = true;
	else if (j != n)
		return -1;
	return seg < MIME_PARAM_SEGS ? (int)seg : -1;
}

/* The RFC 2231 segments in order, percent-decoded, from charset to UTF-8. */
static int mime_param_join(const struct mime_seg *segs, const struct buf *store, struct buf *out)
{
	struct buf raw;
	char cs[48] = "";
	int rc = 0;
	buf_init(&raw, MIME_MAX_PARAM * 2);
	for (unsigned k = 0; k < MIME_PARAM_SEGS && segs[k].have && rc == 0; k++) {
		const char *p = buf_cstr(store) + segs[k].off;
		size_t n = segs[k].len, i = 0;
		if (!segs[k].ext) {
			rc = buf_append(&raw, p, n);
			continue;
		}
		if (k == 0) { /* charset'language'value (§4) */
			const char *q1 = memchr(p, '\'', n);
			const char *q2 =
			    q1 != NULL ? memchr(q1 + 1, '\'', n - (size_t)(q1 + 1 - p)) : NULL;
			if (q2 != NULL) {
				size_t cl = (size_t)(q1 - p);
				if (cl < sizeof(cs)) {
					memcpy(cs, p, cl);
					cs[cl] = '\0';
				}
				i = (size_t)(q2 + 1 - p);
			}
		}
		for (; i < n && rc == 0; i++) {
			int h1, h2;
			if (p[i] == '%' && i + 2 < n + 0 && (h1 = mime_hex(p[i + 1])) >= 0 &&
			    (h2 = mime_hex(p[i + 2])) >= 0) {
				rc = buf_append_byte(&raw, (unsigned char)(h1 << 4 | h2));
				i += 2;
			} else {
				rc = buf_append_byte(&raw, (unsigned char)p[i]);
			}
		}
	}
	if (rc == 0)
		rc = mime_to_utf8(cs[0] != '\0' ? cs : NULL, buf_cstr(&raw), raw.len, out);
	buf_free(&raw);
	return rc;
}

int mime_param_get(const char *v, size_t len, const char *name, struct buf *out)
{
	struct mime_seg segs[MIME_PARAM_SEGS];
	struct buf store;
	size_t plain_off = 0, plain_len = 0;
	bool have_plain = false;
	int rc = 0;
	if (len == 0)
		return 0;
	memset(segs, 0, sizeof(segs));
	buf_init(&store, MIME_MAX_PARAM * 8);
	const char *semi = memchr(v, ';', len);
	size_t i = semi != NULL ? (size_t)(semi - v) : len;
	while (i < len && rc == 0) {
		while (i < len && (v[i] == ';' || mime_wsp(v[i])))
			i++;
		if (i < len && v[i] == '(') { /* a comment (RFC 5322 §3.2.2), not nested here */
			const char *e = memchr(v + i, ')', len - i);
			i = e != NULL ? (size_t)(e - v) + 1 : len;
			continue;
		}
		size_t a0 = i;
		while (i < len && v[i] != '=' && v[i] != ';' && !mime_wsp(v[i]))
			i++;
		size_t alen = i - a0;
		while (i < len && mime_wsp(v[i]))
			i++;
		if (i >= len || v[i] != '=' || alen == 0) {
			while (i < len && v[i] != ';')
				i++;
			continue;
		}
		i++;
		while (i < len && mime_wsp(v[i]))
			i++;
		size_t voff = store.len;
		if (store.len >= MIME_MAX_PARAM * 7 || mime_param_value(v, len, &i, &store) != 0) {
			rc = -1;
			break;
		}
		bool ext, plain;
		int seg = mime_param_match(v + a0, alen, name, &ext, &plain);
		if (seg < 0)
			continue;
		if (plain) {
			if (!have_plain)
				plain_off = voff, plain_len = store.len - voff, have_plain = true;
		} else if (!segs[seg].have) {
			segs[seg] = (struct mime_seg){true, ext, voff, store.len - voff};
		}
	}
	int found = 0;
	if (rc == 0 && segs[0].have) {
		rc = mime_param_join(segs, &store, out);
		found = 1;
	} else if (rc == 0 && have_plain) {
		rc = mime_decode_words(buf_cstr(&store) + plain_off, plain_len, out);
		found = 1;
	}
	buf_free(&store);
	return rc != 0 ? -1 : found;
}

/* ---- the entity tree ---- */

struct mime_ctx {
	struct mime_msg *m;
	size_t cap;
	struct buf tmp;
};

static size_t mime_add_part(struct mime_ctx *c)
{
	struct mime_msg *m = c->m;
	if (m->nparts == c->cap) {
		c->cap = c->cap == 0 ? 8 : c->cap * 2;
		if (c->cap > MIME_MAX_PARTS)
			c->cap = MIME_MAX_PARTS;
		m->parts = xreallocarray(m->parts, c->cap, sizeof(*m->parts));
	}
	struct mime_part *p = &m->parts[m->nparts];
	memset(p, 0, sizeof(*p));
	return m->nparts++;
}

/* Header section and body of the entity at raw[off..off+len). */
static void mime_split(struct mime_ctx *c, struct mime_part *p, size_t off, size_t len)
{
	const char *s = c->m->raw + off;
	size_t i = 0;
	p->hdr_off = off;
	if (len > 0 && s[0] == '\n') {
		p->hdr_len = 0, p->body_off = off + 1, p->body_len = len - 1;
		return;
	}
	if (len > 1 && s[0] == '\r' && s[1] == '\n') {
		p->hdr_len = 0, p->body_off = off + 2, p->body_len = len - 2;
		return;
	}
	for (;;) {
		const char *lf = i < len ? memchr(s + i, '\n', len - i) : NULL;
		if (lf == NULL)
			break;
		i = (size_t)(lf - s) + 1;
		size_t sep = 0;
		if (i < len && s[i] == '\n')
			sep = 1;
		else if (i + 1 < len && s[i] == '\r' && s[i + 1] == '\n')
			sep = 2;
		if (sep > 0) {
			p->hdr_len = i, p->body_off = off + i + sep, p->body_len = len - i - sep;
			return;
		}
	}
	p->hdr_len = len, p->body_off = off + len, p->body_len = 0;
	c->m->warn |= MIME_W_NO_BODY_SEP;
}

static void mime_content_type(struct mime_ctx *c, struct mime_part *p, const char *dflt,
                              char *boundary)
{
	const char *h = c->m->raw + p->hdr_off;
	struct buf *t = &c->tmp;
	buf_reset(t);
	snprintf(p->type, sizeof(p->type), "%s", dflt);
	boundary[0] = '\0';
	if (mime_hdr_get(h, p->hdr_len, "Content-Type", t) != 1)
		return;
	const char *v = buf_cstr(t);
	size_t n = t->len, i = 0, k = 0;
	char ty[sizeof(p->type)];
	while (i < n && mime_wsp(v[i]))
		i++;
	size_t t0 = i;
	while (i < n && mime_tchar((unsigned char)v[i]) && k + 1 < sizeof(ty))
		ty[k++] = mime_lower(v[i++]);
	size_t tl = i - t0;
	if (tl == 0 || i >= n || v[i] != '/' || k + 1 >= sizeof(ty))
		goto params; /* invalid: the default stays (RFC 2045 §5.2) */
	ty[k++] = v[i++];
	size_t s0 = i;
	while (i < n && mime_tchar((unsigned char)v[i]) && k + 1 < sizeof(ty))
		ty[k++] = mime_lower(v[i++]);
	if (i == s0)
		goto params;
	ty[k] = '\0';
	memcpy(p->type, ty, k + 1);
params:;
	struct buf pv;
	buf_init(&pv, MIME_MAX_PARAM);
	if (mime_param_get(v, n, "charset", &pv) == 1 && pv.len < sizeof(p->charset)) {
		for (size_t j = 0; j < pv.len; j++)
			p->charset[j] = mime_lower((char)pv.data[j]);
		p->charset[pv.len] = '\0';
	}
	buf_reset(&pv);
	if (mime_param_get(v, n, "boundary", &pv) == 1 && pv.len > 0 &&
	    pv.len <= MIME_MAX_BOUNDARY) {
		memcpy(boundary, pv.data, pv.len);
		boundary[pv.len] = '\0';
		if (strlen(boundary) != pv.len)
			boundary[0] = '\0'; /* a NUL inside: unusable */
	}
	buf_reset(&pv);
	if (mime_param_get(v, n, "name", &pv) == 1 && pv.len > 0)
		p->filename = xstrndup(buf_cstr(&pv), pv.len);
	buf_free(&pv);
}

static void mime_other_fields(struct mime_ctx *c, struct mime_part *p)
{
	const char *h = c->m->raw + p->hdr_off;
	struct buf *t = &c->tmp;
	buf_reset(t);
	if (mime_hdr_get(h, p->hdr_len, "Content-Transfer-Encoding", t) == 1) {
		const char *v = buf_cstr(t);
		if (strcasecmp(v, "base64") == 0)
			p->cte = MIME_CTE_BASE64;
		else if (strcasecmp(v, "quoted-printable") == 0)
			p->cte = MIME_CTE_QP;
		else if (strcasecmp(v, "8bit") == 0)
			p->cte = MIME_CTE_8BIT;
		else if (strcasecmp(v, "binary") == 0)
			p->cte = MIME_CTE_BINARY;
		else if (strcasecmp(v, "7bit") != 0 && t->len > 0)
			p->cte = MIME_CTE_OTHER;
	}
	buf_reset(t);
	if (mime_hdr_get(h, p->hdr_len, "Content-Disposition", t) == 1) {
		const char *v = buf_cstr(t);
		if (strncasecmp(v, "attachment", 10) == 0)
			p->disp = MIME_DISP_ATTACHMENT;
		else if (strncasecmp(v, "inline", 6) == 0)
			p->disp = MIME_DISP_INLINE;
		struct buf pv;
		buf_init(&pv, MIME_MAX_PARAM);
		if (mime_param_get(v, t->len, "filename", &pv) == 1 && pv.len > 0) {
			free(p->filename);
			p->filename = xstrndup(buf_cstr(&pv), pv.len);
		}
		buf_free(&pv);
	}
	buf_reset(t);
	if (mime_hdr_get(h, p->hdr_len, "Content-ID", t) == 1 && t->len > 0 &&
	    t->len <= MIME_CID_MAX) {
		const char *v = buf_cstr(t);
		size_t n = t->len;
		if (n >= 2 && v[0] == '<' && v[n - 1] == '>')
			v++, n -= 2;
		if (n > 0)
			p->content_id = xstrndup(v, n);
	}
}

static void mime_entity(struct mime_ctx *c, size_t off, size_t len, int parent, unsigned depth,
                        const char *id, const char *dflt);

/* Children IDs: "0" and "X.0" number their children as "1", "X.1". */
static void mime_child_id(const char *parent, unsigned n, char *out, size_t outlen)
{
	size_t pl = strlen(parent);
	if (strcmp(parent, "0") == 0)
		pl = 0;
	else if (pl >= 2 && strcmp(parent + pl - 2, ".0") == 0)
		pl -= 2;
	if (pl == 0)
		snprintf(out, outlen, "%u", n);
	else
		snprintf(out, outlen, "%.*s.%u", (int)pl, parent, n);
}

/* A delimiter line at s[i] (RFC 2046 §5.1.1)? 1 dash-boundary, 2 close. */
static int mime_delim(const char *s, size_t n, size_t i, const char *b, size_t bl, size_t *next_r)
{
	if (n - i < 2 + bl || s[i] != '-' || s[i + 1] != '-' || memcmp(s + i + 2, b, bl) != 0)
		return 0;
	size_t j = i + 2 + bl;
	int kind = 1;
	if (j + 1 < n && s[j] == '-' && s[j + 1] == '-')
		kind = 2, j += 2;
	while (j < n && (s[j] == ' ' || s[j] == '\t'))
		j++;
	if (j < n && s[j] == '\r' && j + 1 < n && s[j + 1] == '\n')
		j += 2;
	else if (j < n && s[j] == '\n')
		j++;
	else if (j < n)
		return 0; /* "--b" followed by more: not this boundary */
	*next_r = j;
	return kind;
}

static void mime_multipart(struct mime_ctx *c, size_t idx, const char *boundary)
{
	struct mime_msg *m = c->m;
	const char *s = m->raw + m->parts[idx].body_off;
	size_t n = m->parts[idx].body_len, bl = strlen(boundary), i = 0, start = 0;
	unsigned depth = m->parts[idx].depth, count = 0;
	bool in_part = false, closed = false;
	char id[MIME_ID_MAX], pid[MIME_ID_MAX];
	const char *dflt =
	    strcmp(m->parts[idx].type, "multipart/digest") == 0 ? "message/rfc822" : "text/plain";
	memcpy(pid, m->parts[idx].id, sizeof(pid));
	while (i < n && !closed) {
		size_t next, line_end;
		const char *lf = memchr(s + i, '\n', n - i);
		line_end = lf != NULL ? (size_t)(lf - s) + 1 : n;
		int kind = mime_delim(s, n, i, boundary, bl, &next);
		if (kind > 0) {
			if (in_part) {
				size_t end = i; /* the CRLF before a delimiter is part of it */
				if (end > start && s[end - 1] == '\n')
					end--;
				if (end > start && s[end - 1] == '\r')
					end--;
				mime_child_id(pid, ++count, id, sizeof(id));
				mime_entity(c, m->parts[idx].body_off + start, end - start,
				            (int)idx, depth + 1, id, dflt);
			}
			in_part = kind == 1;
			closed = kind == 2;
			start = next;
			line_end = next;
		}
		i = line_end;
	}
	if (in_part) {
		mime_child_id(pid, ++count, id, sizeof(id));
		mime_entity(c, m->parts[idx].body_off + start, n - start, (int)idx, depth + 1, id,
		            dflt);
	}
	if (!closed)
		m->warn |= MIME_W_NO_CLOSE;
	m->parts[idx].nchild = count;
}

static void mime_entity(struct mime_ctx *c, size_t off, size_t len, int parent, unsigned depth,
                        const char *id, const char *dflt)
{
	struct mime_msg *m = c->m;
	if (m->nparts >= MIME_MAX_PARTS) {
		m->warn |= MIME_W_PARTS;
		return;
	}
	size_t idx = mime_add_part(c);
	struct mime_part *p = &m->parts[idx];
	char boundary[MIME_MAX_BOUNDARY + 1];
	snprintf(p->id, sizeof(p->id), "%s", id);
	p->parent = parent;
	p->depth = depth;
	mime_split(c, p, off, len);
	mime_content_type(c, p, dflt, boundary);
	mime_other_fields(c, p);
	bool multi = strncmp(p->type, "multipart/", 10) == 0;
	bool msg = strcmp(p->type, "message/rfc822") == 0 || strcmp(p->type, "message/global") == 0;
	if ((multi || msg) && depth >= MIME_MAX_DEPTH) {
		m->warn |= MIME_W_DEPTH; /* kept as one opaque leaf */
		return;
	}
	if (multi && boundary[0] == '\0') {
		m->warn |= MIME_W_NO_BOUNDARY;
		return;
	}
	if (multi) {
		p->is_multipart = true;
		mime_multipart(c, idx, boundary); /* p may move: use idx */
	} else if (msg && p->cte != MIME_CTE_BASE64 && p->cte != MIME_CTE_QP &&
	           p->cte != MIME_CTE_OTHER) {
		char cid[MIME_ID_MAX];
		size_t il = strlen(p->id);
		if (il + 3 > sizeof(cid))
			return; /* cannot happen within MIME_MAX_DEPTH */
		memcpy(cid, p->id, il);
		memcpy(cid + il, ".0", 3);
		p->is_message = true;
		size_t boff = p->body_off, blen = p->body_len;
		mime_entity(c, boff, blen, (int)idx, depth + 1, cid, "text/plain");
		m->parts[idx].nchild = m->nparts > idx + 1 ? 1 : 0;
	}
}

struct mime_msg *mime_parse(const void *raw, size_t len)
{
	struct mime_msg *m = xcalloc(1, sizeof(*m));
	struct mime_ctx c = {.m = m};
	m->raw = raw;
	m->len = len;
	buf_init(&c.tmp, MIME_MAX_FIELD + 1);
	mime_entity(&c, 0, len, -1, 0, "0", "text/plain");
	buf_free(&c.tmp);
	return m;
}

void mime_msg_free(struct mime_msg **mp)
{
	struct mime_msg *m = mp != NULL ? *mp : NULL;
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nparts; i++) {
		free(m->parts[i].filename);
		free(m->parts[i].content_id);
	}
	free(m->parts);
	free(m);
	*mp = NULL;
}

const struct mime_part *mime_part_by_id(const struct mime_msg *m, const char *id)
{
	for (size_t i = 0; i < m->nparts; i++) {
		if (strcmp(m->parts[i].id, id) == 0)
			return &m->parts[i];
	}
	return NULL;
}

int mime_part_decode(const struct mime_msg *m, const struct mime_part *p, struct buf *out)
{
	const char *b = m->raw + p->body_off;
	if (p->cte == MIME_CTE_BASE64)
		return mime_b64_decode(b, p->body_len, out);
	if (p->cte == MIME_CTE_QP)
		return mime_qp_decode(b, p->body_len, out);
	return buf_append(out, b, p->body_len);
}

int mime_part_text(const struct mime_msg *m, const struct mime_part *p, struct buf *out)
{
	struct buf raw;
	buf_init(&raw, out->max);
	int rc = mime_part_decode(m, p, &raw);
	if (rc == 0)
		rc = mime_to_utf8(p->charset[0] != '\0' ? p->charset : NULL, buf_cstr(&raw),
		                  raw.len, out);
	buf_free(&raw);
	return rc;
}
