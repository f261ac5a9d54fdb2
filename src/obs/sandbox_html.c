/* sandbox_html.c — a linear HTML tag scanner for the sandbox: the HTML
 * rewritten for the sandboxed iframe, its visible text (snippets), and its
 * links (checks). Not an HTML5 parser: it finds tags and attributes the
 * way browsers tokenize them closely enough to rewrite URLs, and the CSP
 * and iframe sandbox the caller adds (sandbox_msg.h) are what make the
 * result safe. Runs in the http process; the HTML is hostile. Pure. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "lib/json.h"
#include "obs/sandbox_int.h"

#define HTML_URL_MAX 8192  /* a URL longer than this is not rewritten, but blocked */
#define HTML_LINK_TEXT 200 /* octets of link text kept */

static char html_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

static bool html_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static bool html_alpha(char c)
{
	c = html_lower(c);
	return c >= 'a' && c <= 'z';
}

static bool html_name_is(const char *s, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(s, name, n) == 0;
}

static int html_put_cp(struct buf *out, uint32_t cp)
{
	unsigned char b[4];
	if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		cp = 0xfffd;
	if (cp < 0x80)
		return buf_append_byte(out, (unsigned char)cp);
	if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6), b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return buf_append(out, b, 2);
	}
	if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12),
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return buf_append(out, b, 3);
	}
	b[0] = (unsigned char)(0xf0 | cp >> 18), b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
	b[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return buf_append(out, b, 4);
}

/* A character reference at s[i] ('&'): its length, the code point in *cp;
 * 0 if it is not one this scanner knows (then '&' is literal). */
static size_t html_charref(const char *s, size_t n, size_t i, uint32_t *cp)
{
	static const struct {
		const char *name;
		uint32_t cp;
	} named[] = {
	    {"amp", '&'},    {"lt", '<'},    {"gt", '>'},       {"quot", '"'},
	    {"apos", '\''},  {"nbsp", 0xa0}, {"colon", ':'},    {"sol", '/'},
	    {"period", '.'}, {"tab", '\t'},  {"newline", '\n'},
	};
	size_t j = i + 1;
	if (j < n && s[j] == '#') {
		bool hex = j + 1 < n && html_lower(s[j + 1]) == 'x';
		uint32_t v = 0;
		size_t d0;
		j += hex ? 2 : 1;
		for (d0 = j; j < n && j - d0 < 10; j++) {
			char c = html_lower(s[j]);
			int dv = c >= '0' && c <= '9'            ? c - '0'
			         : (hex && c >= 'a' && c <= 'f') ? c - 'a' + 10
			                                         : -1;
			if (dv < 0)
				break;
			v = v * (hex ? 16 : 10) + (uint32_t)dv;
			if (v > 0x10ffff)
				v = 0x110000;
		}
		if (j == d0)
			return 0;
		if (j < n && s[j] == ';')
			j++;
		*cp = v;
		return j - i;
	}
	for (size_t k = 0; k < sizeof(named) / sizeof(named[0]); k++) {
		size_t l = strlen(named[k].name);
		if (j + l <= n && strncasecmp(s + j, named[k].name, l) == 0) {
			size_t e = j + l;
			if (e < n && s[e] == ';')
				e++;
			else if (e < n && (html_alpha(s[e]) || (s[e] >= '0' && s[e] <= '9')))
				continue;
			*cp = named[k].cp;
			return e - i;
		}
	}
	return 0;
}

static int html_unescape(const char *s, size_t n, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0;) {
		uint32_t cp;
		size_t l = s[i] == '&' ? html_charref(s, n, i, &cp) : 0;
		if (l > 0) {
			rc = html_put_cp(out, cp);
			i += l;
		} else {
			rc = buf_append_byte(out, (unsigned char)s[i++]);
		}
	}
	return rc;
}

/* An attribute value for a double-quoted attribute. */
static int html_attr_escape(const char *s, size_t n, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (s[i] == '&')
			rc = buf_append_str(out, "&amp;");
		else if (s[i] == '"')
			rc = buf_append_str(out, "&quot;");
		else if (s[i] == '<')
			rc = buf_append_str(out, "&lt;");
		else if (s[i] == '>')
			rc = buf_append_str(out, "&gt;");
		else
			rc = buf_append_byte(out, (unsigned char)s[i]);
	}
	return rc;
}

int sbx_collapse_ws(const char *s, size_t n, size_t max_chars, struct buf *out)
{
	size_t chars = 0;
	bool space = false, any = false;
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0;) {
		unsigned char c = (unsigned char)s[i];
		bool nbsp = c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] == 0xa0;
		if (html_space((char)c) || c == '\v' || nbsp) {
			space = any;
			i += nbsp ? 2 : 1;
			continue;
		}
		if (max_chars > 0 && chars + (space ? 1 : 0) >= max_chars)
			break;
		if (space) {
			rc = buf_append_byte(out, ' ');
			chars++;
			space = false;
		}
		size_t l = json_utf8_len((const uint8_t *)s + i, n - i);
		if (l == 0) {
			rc = rc != 0 ? rc : buf_append_str(out, "\xef\xbf\xbd");
			l = 1;
		} else {
			rc = rc != 0 ? rc : buf_append(out, s + i, l);
		}
		chars++;
		any = true;
		i += l;
	}
	return rc;
}

/* ---- tags ---- */

struct html_attr {
	const char *name, *val; /* val NULL for an attribute without a value */
	size_t nlen, vlen;
	size_t off, end; /* the whole attribute in the source */
};

/* After "<name" at *i: the next attribute; false at '>' or the end, *i
 * then after the '>' (or at the end). */
static bool html_next_attr(const char *s, size_t n, size_t *i, struct html_attr *a)
{
	size_t j = *i;
	while (j < n && (html_space(s[j]) || s[j] == '/'))
		j++;
	if (j >= n || s[j] == '>') {
		*i = j < n ? j + 1 : n;
		return false;
	}
	memset(a, 0, sizeof(*a));
	a->off = j;
	a->name = s + j;
	j++; /* a first '=' is part of the name (HTML §13.2.5.32) */
	while (j < n && !html_space(s[j]) && s[j] != '/' && s[j] != '>' && s[j] != '=')
		j++;
	a->nlen = (size_t)(s + j - a->name);
	size_t k = j;
	while (k < n && html_space(s[k]))
		k++;
	if (k < n && s[k] == '=') {
		k++;
		while (k < n && html_space(s[k]))
			k++;
		if (k < n && (s[k] == '"' || s[k] == '\'')) {
			const char *q = memchr(s + k + 1, s[k], n - k - 1);
			a->val = s + k + 1;
			a->vlen = q != NULL ? (size_t)(q - a->val) : n - k - 1;
			j = q != NULL ? (size_t)(q - s) + 1 : n;
		} else {
			a->val = s + k;
			while (k < n && !html_space(s[k]) && s[k] != '>')
				k++;
			a->vlen = (size_t)(s + k - a->val);
			j = k;
		}
	}
	a->end = j;
	*i = j;
	return true;
}

/* The tag at s[i] == '<': its name, whether an end tag, and where the
 * attributes start. 0 if it is no tag (the '<' is text). */
static size_t html_tag_name(const char *s, size_t n, size_t i, const char **name, size_t *nlen,
                            bool *end)
{
	size_t j = i + 1;
	*end = j < n && s[j] == '/';
	if (*end)
		j++;
	if (j >= n || !html_alpha(s[j]))
		return 0;
	*name = s + j;
	while (j < n && !html_space(s[j]) && s[j] != '/' && s[j] != '>')
		j++;
	*nlen = (size_t)(s + j - *name);
	return j;
}

/* Where the raw text of <script>/<style>/... ends: at "</name". */
static size_t html_raw_end(const char *s, size_t n, size_t i, const char *name)
{
	size_t l = strlen(name);
	for (const char *p = s + i; (p = memchr(p, '<', (size_t)(s + n - p))) != NULL; p++) {
		if ((size_t)(s + n - p) >= l + 2 && p[1] == '/' && strncasecmp(p + 2, name, l) == 0)
			return (size_t)(p - s);
	}
	return n;
}

/* Markup that is not a tag: comment, doctype, processing instruction.
 * Comments end as HTML says (§13.2.5.43-52): "<!-->" and "<!--->" are
 * whole comments, and "--!>" ends one too; a scanner that hid markup the
 * browser renders would let it past the rewriting. */
static size_t html_skip_decl(const char *s, size_t n, size_t i)
{
	if (n - i >= 4 && memcmp(s + i, "<!--", 4) == 0) {
		size_t j = i + 4;
		if (j < n && s[j] == '>')
			return j + 1;
		if (n - j >= 2 && s[j] == '-' && s[j + 1] == '>')
			return j + 2;
		for (const char *p = s + j; (p = memchr(p, '-', (size_t)(s + n - p))) != NULL;
		     p++) {
			size_t r = (size_t)(s + n - p);
			if (r >= 3 && memcmp(p, "-->", 3) == 0)
				return (size_t)(p - s) + 3;
			if (r >= 4 && memcmp(p, "--!>", 4) == 0)
				return (size_t)(p - s) + 4;
		}
		return n;
	}
	const char *e = memchr(s + i, '>', n - i);
	return e != NULL ? (size_t)(e - s) + 1 : n;
}

static bool html_decl_at(const char *s, size_t n, size_t i)
{
	return i + 1 < n && (s[i + 1] == '!' || s[i + 1] == '?');
}

static bool html_raw_tag(const char *name, size_t nlen)
{
	return html_name_is(name, nlen, "script") || html_name_is(name, nlen, "style") ||
	       html_name_is(name, nlen, "textarea") || html_name_is(name, nlen, "title") ||
	       html_name_is(name, nlen, "xmp");
}

/* ---- rewriting ---- */

struct html_rw {
	bool allow_remote;
	sbx_cid_fn cid;
	void *ctx;
	struct buf url; /* scratch: a decoded URL */
	struct buf val; /* scratch: a rewritten value */
	struct buf out2;
	bool in_style; /* text is CSS until </style> */
};

/* The URL as a browser reads it: ASCII tab and newline removed, leading
 * and trailing C0 controls and spaces trimmed (WHATWG URL §4.4). */
static int html_url_norm(const char *v, size_t n, struct buf *url)
{
	buf_reset(url);
	if (n > HTML_URL_MAX)
		n = HTML_URL_MAX;
	if (html_unescape(v, n, url) != 0)
		return -1;
	if (url->data == NULL)
		return 0; /* nothing was written: empty */
	size_t w = 0, s = 0, e = url->len;
	while (s < e && url->data[s] <= 0x20)
		s++;
	while (e > s && url->data[e - 1] <= 0x20)
		e--;
	for (size_t i = s; i < e; i++) {
		if (url->data[i] != '\t' && url->data[i] != '\n' && url->data[i] != '\r')
			url->data[w++] = url->data[i];
	}
	url->len = w;
	url->data[w] = '\0';
	return 0;
}

/* A data: URL kept as a resource: images and fonts only. data:text/html
 * in an <object> or <iframe> would be a document with its own loads. */
static bool html_data_ok(const char *u, size_t n)
{
	static const char *const ok[] = {"data:image/", "data:font/", "data:application/font-",
	                                 "data:application/x-font-",
	                                 "data:application/octet-stream"};
	for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
		size_t l = strlen(ok[k]);
		if (n >= l && strncasecmp(u, ok[k], l) == 0)
			return true;
	}
	return false;
}

/* What a resource URL becomes: appended to out, raw (not yet escaped). */
static int html_resource(struct html_rw *rw, const char *v, size_t n, struct buf *out)
{
	if (html_url_norm(v, n, &rw->url) != 0)
		return -1;
	const char *u = buf_cstr(&rw->url);
	size_t ul = rw->url.len;
	if (ul >= 4 && strncasecmp(u, "cid:", 4) == 0) {
		int r = rw->cid(rw->ctx, u + 4, ul - 4, out);
		if (r != 0)
			return r < 0 ? -1 : 0;
		return buf_append_str(out, "data:,");
	}
	if (ul >= 5 && strncasecmp(u, "data:", 5) == 0)
		return html_data_ok(u, ul) ? buf_append(out, u, ul) : buf_append_str(out, "data:,");
	if (rw->allow_remote && ((ul >= 7 && strncasecmp(u, "http://", 7) == 0) ||
	                         (ul >= 8 && strncasecmp(u, "https://", 8) == 0)))
		return buf_append(out, u, ul);
	return buf_append_str(out, "data:,"); /* blocked */
}

/* CSS: url(...) arguments through html_resource; @import and image-set()
 * disarmed unless remote resources are allowed. */
static int html_css(struct html_rw *rw, const char *s, size_t n, struct buf *out)
{
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0;) {
		if (n - i >= 4 && strncasecmp(s + i, "url(", 4) == 0) {
			size_t j = i + 4;
			while (j < n && html_space(s[j]))
				j++;
			size_t a0 = j, a1;
			if (j < n && (s[j] == '"' || s[j] == '\'')) {
				const char *q = memchr(s + j + 1, s[j], n - j - 1);
				a0 = j + 1;
				a1 = q != NULL ? (size_t)(q - s) : n;
				j = q != NULL ? a1 + 1 : n;
			} else {
				while (j < n && s[j] != ')')
					j++;
				a1 = j;
				while (a1 > a0 && html_space(s[a1 - 1]))
					a1--;
			}
			while (j < n && s[j] != ')')
				j++;
			rc = buf_append_str(out, "url(\"");
			size_t m0 = out->len;
			rc = rc != 0 ? rc : html_resource(rw, s + a0, a1 - a0, out);
			/* a quote or backslash inside would end the CSS string */
			for (size_t k = m0; rc == 0 && k < out->len; k++) {
				if (out->data[k] == '"' || out->data[k] == '\\' ||
				    out->data[k] == '\n')
					out->data[k] = '_';
			}
			rc = rc != 0 ? rc : buf_append_str(out, "\")");
			i = j < n ? j + 1 : n;
			continue;
		}
		if (!rw->allow_remote && s[i] == '\\') {
			/* an escaped backslash: "\75rl(" can no longer spell url( */
			rc = buf_append_str(out, "\\5c ");
			i++;
			continue;
		}
		if (!rw->allow_remote && s[i] == '@' && n - i >= 7 &&
		    strncasecmp(s + i, "@import", 7) == 0) {
			rc = buf_append_str(out, "@x-blocked-import");
			i += 7;
			continue;
		}
		if (!rw->allow_remote && n - i >= 9 && strncasecmp(s + i, "image-set", 9) == 0) {
			rc = buf_append_str(out, "x-blocked-set");
			i += 9;
			continue;
		}
		rc = buf_append_byte(out, (unsigned char)s[i++]);
	}
	return rc;
}

static bool html_is_resource_attr(const char *tag, size_t tlen, const struct html_attr *a)
{
	static const char *const names[] = {
	    "src",  "background", "poster",  "lowsrc",   "dynsrc", "data",       "codebase",
	    "cite", "longdesc",   "profile", "manifest", "icon",   "xlink:href", "imagesrcset"};
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
		if (html_name_is(a->name, a->nlen, names[k]))
			return true;
	}
	/* href fetches for link, image, use, ...; only a and area navigate */
	return html_name_is(a->name, a->nlen, "href") && !html_name_is(tag, tlen, "a") &&
	       !html_name_is(tag, tlen, "area");
}

/* One attribute of tag: dropped (1), rewritten into out, or copied. */
static int html_rw_attr(struct html_rw *rw, const char *s, const char *tag, size_t tlen,
                        const struct html_attr *a, struct buf *out)
{
	bool meta = html_name_is(tag, tlen, "meta"), base = html_name_is(tag, tlen, "base");
	if ((a->nlen > 2 && strncasecmp(a->name, "on", 2) == 0) ||
	    (meta && html_name_is(a->name, a->nlen, "http-equiv")) ||
	    (base && html_name_is(a->name, a->nlen, "href")) ||
	    html_name_is(a->name, a->nlen, "srcdoc") ||
	    (!rw->allow_remote &&
	     (html_name_is(a->name, a->nlen, "srcset") || html_name_is(a->name, a->nlen, "ping"))))
		return 0; /* event handlers, refresh, base URL, nested documents, remote candidates,
		             pings */
	bool res = a->val != NULL && html_is_resource_attr(tag, tlen, a);
	bool style = a->val != NULL && html_name_is(a->name, a->nlen, "style");
	int rc = buf_append_byte(out, ' ');
	if (!res && !style)
		return rc != 0 ? rc : buf_append(out, s + a->off, a->end - a->off);
	buf_reset(&rw->val);
	if (res) {
		rc = rc != 0 ? rc : html_resource(rw, a->val, a->vlen, &rw->val);
	} else {
		buf_reset(&rw->out2);
		rc = rc != 0 ? rc : html_unescape(a->val, a->vlen, &rw->out2);
		rc = rc != 0 ? rc : html_css(rw, buf_cstr(&rw->out2), rw->out2.len, &rw->val);
	}
	rc = rc != 0 ? rc : buf_append(out, a->name, a->nlen);
	rc = rc != 0 ? rc : buf_append_str(out, "=\"");
	rc = rc != 0 ? rc : html_attr_escape(buf_cstr(&rw->val), rw->val.len, out);
	return rc != 0 ? rc : buf_append_byte(out, '"');
}

static size_t html_rw_tag(struct html_rw *rw, const char *s, size_t n, size_t i, struct buf *out,
                          int *rc)
{
	const char *name;
	size_t nlen;
	bool end;
	size_t j = html_tag_name(s, n, i, &name, &nlen, &end);
	if (j == 0) {
		*rc = buf_append_str(out, "&lt;");
		return i + 1;
	}
	*rc = buf_append(out, s + i, j - i);
	struct html_attr a;
	while (*rc == 0 && html_next_attr(s, n, &j, &a)) {
		if (!end)
			*rc = html_rw_attr(rw, s, name, nlen, &a, out);
	}
	*rc = *rc != 0 ? *rc : buf_append_byte(out, '>');
	/* <style> content is CSS, but is rewritten as markup too: inside <svg>
	 * it is parsed as markup, and an <img> there breaks out of it. Only
	 * script, textarea, title and xmp are copied as raw text (their
	 * content is never markup); <noscript> is markup with scripting off. */
	if (html_name_is(name, nlen, "style"))
		rw->in_style = !end;
	if (*rc == 0 && !end && html_raw_tag(name, nlen) && !html_name_is(name, nlen, "style")) {
		char nm[16];
		snprintf(nm, sizeof(nm), "%.*s", (int)nlen, name);
		size_t e = html_raw_end(s, n, j, nm);
		*rc = buf_append(out, s + j, e - j);
		j = e;
	}
	return j;
}

int sbx_html_rewrite(const char *h, size_t n, bool allow_remote, sbx_cid_fn cid, void *ctx,
                     struct buf *out)
{
	struct html_rw rw = {.allow_remote = allow_remote, .cid = cid, .ctx = ctx};
	size_t start = out->len;
	int rc = 0;
	buf_init(&rw.url, 0);
	buf_init(&rw.val, 0);
	buf_init(&rw.out2, 0);
	for (size_t i = 0; i < n && rc == 0;) {
		const char *lt = memchr(h + i, '<', n - i);
		size_t t = lt != NULL ? (size_t)(lt - h) : n;
		rc = rw.in_style ? html_css(&rw, h + i, t - i, out) : buf_append(out, h + i, t - i);
		if (rc != 0 || t >= n)
			break;
		if (html_decl_at(h, n, t)) {
			size_t e = html_skip_decl(h, n, t);
			rc = buf_append(out, h + t, e - t);
			i = e;
			continue;
		}
		i = html_rw_tag(&rw, h, n, t, out, &rc);
	}
	buf_free(&rw.url);
	buf_free(&rw.val);
	buf_free(&rw.out2);
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}

/* ---- text and links ---- */

/* The text of h[0..n): tags out, raw-text elements and <head> out, block
 * ends as spaces; fn sees each <a>/<area>/<img> with its URL. */
struct html_walk {
	sbx_link_fn fn;
	void *ctx;
	struct buf *text;     /* all text, or NULL */
	size_t max_text;      /* stop once text holds this much (0: no limit) */
	struct buf link_text; /* the text inside the current <a> */
	struct buf url;
	bool in_a, stop;
};

static int html_walk_text(struct html_walk *w, const char *s, size_t n)
{
	int rc = 0;
	if (w->text != NULL)
		rc = html_unescape(s, n, w->text);
	if (w->in_a && w->link_text.len < HTML_LINK_TEXT)
		(void)html_unescape(s, n < HTML_LINK_TEXT ? n : HTML_LINK_TEXT, &w->link_text);
	return rc;
}

static void html_walk_link_end(struct html_walk *w)
{
	if (!w->in_a)
		return;
	w->in_a = false;
	if (w->fn != NULL && !w->stop) {
		struct buf t;
		buf_init(&t, 0);
		(void)sbx_collapse_ws(buf_cstr(&w->link_text), w->link_text.len, HTML_LINK_TEXT,
		                      &t);
		w->stop = w->fn(w->ctx, buf_cstr(&w->url), w->url.len, buf_cstr(&t), t.len) != 0;
		buf_free(&t);
	}
}

static size_t html_walk_tag(struct html_walk *w, const char *s, size_t n, size_t i, int *rc)
{
	const char *name;
	size_t nlen;
	bool end;
	size_t j = html_tag_name(s, n, i, &name, &nlen, &end);
	if (j == 0) {
		*rc = html_walk_text(w, s + i, 1);
		return i + 1;
	}
	bool a_tag = html_name_is(name, nlen, "a") || html_name_is(name, nlen, "area");
	bool img = html_name_is(name, nlen, "img");
	if (a_tag)
		html_walk_link_end(w); /* an unclosed <a> ends at the next one */
	struct html_attr a;
	while (html_next_attr(s, n, &j, &a)) {
		if (end || a.val == NULL)
			continue;
		if (a_tag && html_name_is(a.name, a.nlen, "href")) {
			(void)html_url_norm(a.val, a.vlen, &w->url);
			buf_reset(&w->link_text);
			w->in_a = true;
		} else if (img && html_name_is(a.name, a.nlen, "src") && w->fn != NULL &&
		           !w->stop) {
			(void)html_url_norm(a.val, a.vlen, &w->url);
			w->stop = w->fn(w->ctx, buf_cstr(&w->url), w->url.len, "", 0) != 0;
		}
	}
	if (end && a_tag)
		html_walk_link_end(w);
	if (!end && (html_raw_tag(name, nlen) || html_name_is(name, nlen, "head"))) {
		char nm[16];
		snprintf(nm, sizeof(nm), "%.*s", (int)nlen, name);
		j = html_raw_end(s, n, j, nm);
	}
	if (w->text != NULL && *rc == 0 && w->text->len > 0 &&
	    w->text->data[w->text->len - 1] != ' ')
		*rc = buf_append_byte(w->text, ' '); /* words on both sides stay apart */
	return j;
}

static int html_walk(struct html_walk *w, const char *h, size_t n)
{
	int rc = 0;
	buf_init(&w->link_text, 0);
	buf_init(&w->url, 0);
	for (size_t i = 0; i < n && rc == 0 && !w->stop;) {
		const char *lt = memchr(h + i, '<', n - i);
		size_t t = lt != NULL ? (size_t)(lt - h) : n;
		rc = html_walk_text(w, h + i, t - i);
		if (rc != 0 || t >= n)
			break;
		if (html_decl_at(h, n, t))
			i = html_skip_decl(h, n, t);
		else
			i = html_walk_tag(w, h, n, t, &rc);
		if (w->text != NULL && w->max_text > 0 && w->text->len > w->max_text)
			break;
	}
	html_walk_link_end(w);
	buf_free(&w->link_text);
	buf_free(&w->url);
	return rc;
}

int sbx_html_text(const char *h, size_t n, size_t max_chars, struct buf *out)
{
	struct buf t;
	buf_init(&t, 0);
	struct html_walk w = {.text = &t, .max_text = max_chars > 0 ? max_chars * 8 + 4096 : 0};
	int rc = html_walk(&w, h, n);
	rc = rc != 0 ? rc : sbx_collapse_ws(buf_cstr(&t), t.len, max_chars, out);
	buf_free(&t);
	return rc;
}

int sbx_html_links(const char *h, size_t n, sbx_link_fn fn, void *ctx)
{
	struct html_walk w = {.fn = fn, .ctx = ctx};
	return html_walk(&w, h, n);
}
