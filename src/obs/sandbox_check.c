/* sandbox_check.c — the checks the sandbox shows for a captured message
 * (sandbox_msg.h, sbx_msg_check): size and line length (RFC 5322 §2.1.1),
 * required header fields (§3.6), the links of its bodies with the ones
 * that look malformed or misleading, and the Authentication-Results field
 * (RFC 8601) our smtpd added, parsed. Runs in the http process; the message
 * is hostile. Pure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/alloc.h"
#include "lib/json.h"
#include "mail/header.h"
#include "obs/sandbox_int.h"
#include "obs/sandbox_msg.h"

#define CHK_HOST_MAX 255
#define CHK_AR_RESULTS 64 /* resinfo entries read from the field */
#define CHK_AR_PROPS 16   /* properties kept per resinfo */

static char chk_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
}

/* ---- lines ---- */

struct chk_lines {
	size_t max, over998, over78;
};

static void chk_lines(const char *s, size_t n, struct chk_lines *l)
{
	memset(l, 0, sizeof(*l));
	for (size_t i = 0; i < n;) {
		const char *lf = memchr(s + i, '\n', n - i);
		size_t e = lf != NULL ? (size_t)(lf - s) : n, len = e - i;
		if (len > 0 && s[e - 1] == '\r')
			len--;
		if (len > l->max)
			l->max = len;
		if (len > 998)
			l->over998++;
		else if (len > 78)
			l->over78++;
		i = e + 1;
	}
}

/* ---- URLs ---- */

static bool chk_ldh(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || (unsigned char)c >= 0x80;
}

/* A host name (LDH labels, U-labels let through), an IPv4 address or an
 * IP literal in brackets. */
static bool chk_host_ok(const char *h, size_t n)
{
	if (n == 0 || n > CHK_HOST_MAX)
		return false;
	if (h[0] == '[')
		return n > 2 && h[n - 1] == ']' &&
		       strspn(h + 1, "0123456789abcdefABCDEF:.") >= n - 2;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		if (h[i] == '.') {
			if (label == 0 || h[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!chk_ldh(h[i]) || (label == 0 && h[i] == '-') || ++label > 63)
			return false;
	}
	return label > 0 || n > 1;
}

/* Parse an absolute URL: 0 if http(s)/mailto and well formed (host into
 * host[] lowercased for http(s), "" for mailto), else a reason. */
static const char *chk_url(const char *u, size_t n, char *host, size_t hostlen)
{
	host[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)u[i];
		if (c <= 0x20 || c == 0x7f || c == '"' || c == '<' || c == '>' || c == '\\')
			return "contains spaces or characters not allowed in a URL";
	}
	if (n >= 7 && strncasecmp(u, "mailto:", 7) == 0) {
		const char *q = memchr(u + 7, '?', n - 7);
		size_t l = q != NULL ? (size_t)(q - u) - 7 : n - 7;
		const char *at = memchr(u + 7, '@', l);
		if (l == 0 || at == NULL || at == u + 7 || at == u + 7 + l - 1)
			return "mailto: without an address";
		return NULL;
	}
	size_t p;
	if (n >= 7 && strncasecmp(u, "http://", 7) == 0)
		p = 7;
	else if (n >= 8 && strncasecmp(u, "https://", 8) == 0)
		p = 8;
	else
		return "not an absolute http, https or mailto URL";
	size_t e = p;
	while (e < n && u[e] != '/' && u[e] != '?' && u[e] != '#')
		e++;
	const char *auth = u + p;
	size_t alen = e - p;
	if (memchr(auth, '@', alen) != NULL)
		return "user name in the URL (the host is after the @)";
	size_t hl = alen;
	const char *colon = auth[0] == '[' ? NULL : memchr(auth, ':', alen);
	if (auth[0] == '[') {
		const char *rb = memchr(auth, ']', alen);
		if (rb != NULL && (size_t)(rb - auth) + 1 < alen && rb[1] == ':')
			colon = rb + 1;
	}
	if (colon != NULL) {
		hl = (size_t)(colon - auth);
		size_t pl = alen - hl - 1;
		unsigned long port = 0;
		if (pl == 0 || pl > 5 || strspn(colon + 1, "0123456789") < pl)
			return "bad port";
		for (size_t i = 0; i < pl; i++)
			port = port * 10 + (unsigned long)(colon[1 + i] - '0');
		if (port == 0 || port > 65535)
			return "bad port";
	}
	if (!chk_host_ok(auth, hl))
		return "bad host name";
	if (hl < hostlen) {
		for (size_t i = 0; i < hl; i++)
			host[i] = chk_lower(auth[i]);
		host[hl] = '\0';
	}
	return NULL;
}

/* The host that shown link text names, if it looks like a URL or a
 * domain: "https://a.example/x", "www.a.example", "a.example". */
static bool chk_text_host(const char *t, size_t n, char *host, size_t hostlen)
{
	size_t p = 0;
	if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
		p = 7;
	else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
		p = 8;
	size_t e = p, dots = 0;
	while (e < n && t[e] != '/' && t[e] != '?' && t[e] != '#' && t[e] != ':' && t[e] != ' ') {
		if (t[e] == '.')
			dots++;
		e++;
	}
	if (p == 0 && (dots == 0 || (e != n && t[e] != '/') || memchr(t, ' ', n) != NULL))
		return false; /* plain words, not a domain */
	if (!chk_host_ok(t + p, e - p) || e - p >= hostlen)
		return false;
	for (size_t i = p; i < e; i++)
		host[i - p] = chk_lower(t[i]);
	host[e - p] = '\0';
	return true;
}

static const char *chk_strip_www(const char *h)
{
	return strncmp(h, "www.", 4) == 0 ? h + 4 : h;
}

/* Does the link go where its text says: the same host, or one under it
 * ("login.bank.example" for "bank.example"), "www." aside? */
static bool chk_same_site(const char *host, const char *shown)
{
	host = chk_strip_www(host);
	shown = chk_strip_www(shown);
	size_t hl = strlen(host), sl = strlen(shown);
	if (hl == sl)
		return strcmp(host, shown) == 0;
	return hl > sl && host[hl - sl - 1] == '.' && strcmp(host + hl - sl, shown) == 0;
}

struct chk_links {
	struct buf *out;
	const char *source;
	size_t count;
	bool truncated;
	int rc;
};

static int chk_link(void *ctx, const char *url, size_t ulen, const char *text, size_t tlen)
{
	struct chk_links *c = ctx;
	char host[CHK_HOST_MAX + 1], thost[CHK_HOST_MAX + 1], why[2 * CHK_HOST_MAX + 64];
	if (ulen == 0 || url[0] == '#' || (ulen >= 4 && strncasecmp(url, "cid:", 4) == 0) ||
	    (ulen >= 5 && strncasecmp(url, "data:", 5) == 0))
		return 0; /* in-document, not a link out */
	if (c->count >= SBX_MAX_LINKS) {
		c->truncated = true;
		return 1;
	}
	const char *reason = chk_url(url, ulen, host, sizeof(host));
	if (reason == NULL && host[0] != '\0' && chk_text_host(text, tlen, thost, sizeof(thost)) &&
	    !chk_same_site(host, thost)) {
		snprintf(why, sizeof(why), "the text shows %s but the link goes to %s", thost,
		         host);
		reason = why;
	}
	struct buf *o = c->out;
	int rc = buf_append_str(o, c->count > 0 ? ",{\"url\":" : "{\"url\":");
	rc = rc != 0 ? rc : json_append_str(o, url, ulen);
	rc = rc != 0 ? rc : buf_append_str(o, ",\"text\":");
	rc = rc != 0 ? rc : json_append_str(o, text, tlen);
	rc = rc != 0 ? rc
	             : buf_printf(o, ",\"source\":\"%s\",\"malformed\":%s,\"reason\":", c->source,
	                          reason != NULL ? "true" : "false");
	rc = rc != 0 ? rc : json_append_cstr(o, reason);
	rc = rc != 0 ? rc : buf_append_byte(o, '}');
	c->count++;
	c->rc = rc;
	return rc != 0;
}

/* URLs in plain text: http://, https://, mailto: up to a space or a
 * delimiter, trailing punctuation left out. */
static void chk_text_links(const char *s, size_t n, struct chk_links *c)
{
	static const char *const schemes[] = {"http://", "https://", "mailto:"};
	for (size_t i = 0; i < n && c->rc == 0 && !c->truncated; i++) {
		size_t sl = 0;
		for (size_t k = 0; k < 3 && sl == 0; k++) {
			size_t l = strlen(schemes[k]);
			if (n - i >= l && strncasecmp(s + i, schemes[k], l) == 0 &&
			    (i == 0 || !((s[i - 1] >= 'a' && s[i - 1] <= 'z') ||
			                 (s[i - 1] >= 'A' && s[i - 1] <= 'Z'))))
				sl = l;
		}
		if (sl == 0)
			continue;
		size_t e = i + sl;
		while (e < n && (unsigned char)s[e] > 0x20 && strchr("<>\"'`", s[e]) == NULL)
			e++;
		while (e > i + sl && strchr(".,;:!?)]}", s[e - 1]) != NULL)
			e--;
		if (chk_link(c, s + i, e - i, "", 0) != 0)
			break;
		i = e > i ? e - 1 : i;
	}
}

/* ---- Authentication-Results (RFC 8601 §2.2) ---- */

struct chk_tok {
	const char *p;
	size_t n;
	char kind; /* 'w' word, '=', ';' */
};

/* The next token of the value after CFWS; false at the end. */
static bool chk_ar_tok(const char *v, size_t len, size_t *i, struct chk_tok *t, struct buf *qs)
{
	size_t j = *i;
	int depth = 0;
	while (j < len && (v[j] == ' ' || v[j] == '\t' || v[j] == '(' || depth > 0)) {
		if (v[j] == '\\' && depth > 0 && j + 1 < len)
			j++;
		else if (v[j] == '(' && depth < 64)
			depth++;
		else if (v[j] == ')' && depth > 0)
			depth--;
		j++;
	}
	if (j >= len) {
		*i = len; /* only CFWS was left: consumed */
		return false;
	}
	if (v[j] == '=' || v[j] == ';') {
		t->p = v + j, t->n = 1, t->kind = v[j];
		*i = j + 1;
		return true;
	}
	t->kind = 'w';
	if (v[j] == '"') {
		size_t mark = qs->len;
		for (j++; j < len && v[j] != '"'; j++) {
			if (v[j] == '\\' && j + 1 < len)
				j++;
			if (qs->len + 2 <= qs->cap) /* never grow: earlier tokens point into it */
				(void)buf_append_byte(qs, (unsigned char)v[j]);
		}
		*i = j < len ? j + 1 : len;
		t->p = buf_cstr(qs) + mark; /* qs is reserved: stable */
		t->n = qs->len - mark;
		return true;
	}
	size_t s = j;
	while (j < len && v[j] != ' ' && v[j] != '\t' && v[j] != '(' && v[j] != '=' &&
	       v[j] != ';' && v[j] != '"')
		j++;
	t->p = v + s, t->n = j - s;
	*i = j;
	return true;
}

struct chk_res {
	const char *method;
	size_t mlen;
	struct chk_tok result, reason;
	struct chk_tok pk[CHK_AR_PROPS], pv[CHK_AR_PROPS];
	size_t np;
};

static int chk_ar_emit(struct buf *o, const struct chk_res *r, size_t nr, const char *method)
{
	int rc = buf_printf(o, ",\"%s\":[", method);
	bool first = true;
	for (size_t i = 0; i < nr && rc == 0; i++) {
		if (r[i].mlen != strlen(method) || strncasecmp(r[i].method, method, r[i].mlen) != 0)
			continue;
		rc = buf_append_str(o, first ? "{\"result\":" : ",{\"result\":");
		first = false;
		rc = rc != 0 ? rc : json_append_str(o, r[i].result.p, r[i].result.n);
		rc = rc != 0 ? rc : buf_append_str(o, ",\"reason\":");
		if (rc == 0 && r[i].reason.p != NULL)
			rc = json_append_str(o, r[i].reason.p, r[i].reason.n);
		else if (rc == 0)
			rc = buf_append_str(o, "null");
		rc = rc != 0 ? rc : buf_append_str(o, ",\"props\":{");
		for (size_t k = 0; k < r[i].np && rc == 0; k++) {
			if (k > 0)
				rc = buf_append_byte(o, ',');
			rc = rc != 0 ? rc : json_append_str(o, r[i].pk[k].p, r[i].pk[k].n);
			rc = rc != 0 ? rc : buf_append_byte(o, ':');
			rc = rc != 0 ? rc : json_append_str(o, r[i].pv[k].p, r[i].pv[k].n);
		}
		rc = rc != 0 ? rc : buf_append_str(o, "}}");
	}
	return rc != 0 ? rc : buf_append_byte(o, ']');
}

/* Parse one resinfo: method[/version]=result then reason= and
 * ptype.property=value pairs, up to the next ';'. */
static void chk_ar_resinfo(const char *v, size_t len, size_t *i, struct chk_res *r, struct buf *qs)
{
	struct chk_tok t[3];
	memset(r, 0, sizeof(*r));
	size_t j = *i;
	while (chk_ar_tok(v, len, &j, &t[0], qs) && t[0].kind != ';') {
		size_t save = j;
		if (t[0].kind != 'w' || !chk_ar_tok(v, len, &j, &t[1], qs) || t[1].kind != '=') {
			j = save;
			continue;
		}
		save = j;
		if (!chk_ar_tok(v, len, &j, &t[2], qs) || t[2].kind != 'w') {
			j = save;
			continue;
		}
		if (r->method == NULL) { /* method [ "/" version ] (§2.2) */
			const char *sl = memchr(t[0].p, '/', t[0].n);
			r->method = t[0].p, r->mlen = sl != NULL ? (size_t)(sl - t[0].p) : t[0].n;
			r->result = t[2];
		} else if (t[0].n == 6 && strncasecmp(t[0].p, "reason", 6) == 0)
			r->reason = t[2];
		else if (r->np < CHK_AR_PROPS)
			r->pk[r->np] = t[0], r->pv[r->np++] = t[2];
	}
	*i = j;
}

static int chk_auth_results(const struct mime_msg *m, struct buf *o)
{
	struct buf v, qs;
	struct chk_res *res;
	size_t nr = 0;
	buf_init(&v, MIME_MAX_FIELD + 1);
	if (mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len,
	                 "Authentication-Results", &v) != 1) {
		buf_free(&v);
		return buf_append_str(o, ",\"authResults\":null");
	}
	buf_init(&qs, 0);
	(void)buf_reserve(&qs, 2 * v.len + 16); /* a token is read at most twice */
	res = xcalloc(CHK_AR_RESULTS, sizeof(*res));
	const char *s = buf_cstr(&v), *id = "";
	size_t n = v.len, idlen = 0, i = 0;
	if (mail_hdr_ar_authserv_id(s, n, &id, &idlen) != 0)
		id = "", idlen = 0;
	const char *semi = memchr(s, ';', n);
	i = semi != NULL ? (size_t)(semi - s) + 1 : n;
	while (i < n && nr < CHK_AR_RESULTS) {
		size_t before = i;
		chk_ar_resinfo(s, n, &i, &res[nr], &qs);
		if (i <= before)
			break; /* cannot happen: every round takes a token */
		if (res[nr].method != NULL)
			nr++;
	}
	int rc = buf_append_str(o, ",\"authResults\":{\"authservId\":");
	rc = rc != 0 ? rc : json_append_str(o, id, idlen);
	static const char *const methods[] = {"spf", "dkim", "dmarc", "arc"};
	for (size_t k = 0; k < 4 && rc == 0; k++)
		rc = chk_ar_emit(o, res, nr, methods[k]);
	rc = rc != 0 ? rc : buf_append_byte(o, '}');
	free(res);
	buf_free(&qs);
	buf_free(&v);
	return rc;
}

/* ---- the whole ---- */

static int chk_warn(struct buf *o, bool *first, const char *check, const char *sev,
                    const char *text)
{
	int rc = buf_printf(
	    o, "%s{\"check\":\"%s\",\"severity\":\"%s\",\"text\":", *first ? "" : ",", check, sev);
	*first = false;
	rc = rc != 0 ? rc : json_append_cstr(o, text);
	return rc != 0 ? rc : buf_append_byte(o, '}');
}

static int chk_warnings(struct buf *o, const struct mime_msg *m, size_t len,
                        const struct chk_lines *l)
{
	static const char *const req[] = {"Date", "Message-ID", "From"};
	char t[160];
	bool first = true;
	struct buf v;
	int rc = buf_append_str(o, ",\"warnings\":[");
	if (len > SBX_SIZE_ERROR)
		rc = chk_warn(o, &first, "size", "error",
		              "larger than 25 MiB: many providers refuse it");
	else if (len > SBX_SIZE_WARN)
		rc = chk_warn(o, &first, "size", "warning",
		              "larger than 10 MiB: some providers refuse it");
	if (rc == 0 && l->over998 > 0) {
		snprintf(t, sizeof(t),
		         "%zu lines longer than 998 octets (RFC 5322 §2.1.1 forbids them)",
		         l->over998);
		rc = chk_warn(o, &first, "line-length", "error", t);
	}
	if (rc == 0 && l->over78 > 0) {
		snprintf(t, sizeof(t),
		         "%zu lines longer than 78 characters (RFC 5322 §2.1.1 advises against)",
		         l->over78);
		rc = chk_warn(o, &first, "line-length", "warning", t);
	}
	buf_init(&v, MIME_MAX_FIELD + 1);
	for (size_t k = 0; k < 3 && rc == 0; k++) {
		buf_reset(&v);
		if (mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, req[k], &v) ==
		    1)
			continue;
		snprintf(t, sizeof(t), "no %s field (RFC 5322 §3.6)", req[k]);
		rc = chk_warn(o, &first, "header", k == 1 ? "warning" : "error", t);
	}
	buf_free(&v);
	rc = rc != 0 ? rc : buf_append_str(o, "],\"missingHeaders\":[");
	first = true;
	buf_init(&v, MIME_MAX_FIELD + 1);
	for (size_t k = 0; k < 3 && rc == 0; k++) {
		buf_reset(&v);
		if (mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, req[k], &v) ==
		    1)
			continue;
		rc = buf_printf(o, "%s\"%s\"", first ? "" : ",", req[k]);
		first = false;
	}
	buf_free(&v);
	return rc != 0 ? rc : buf_append_byte(o, ']');
}

static int chk_all_links(struct buf *o, const struct mime_msg *m)
{
	struct sbx_bodies b;
	struct buf t;
	struct chk_links c = {.out = o};
	sbx_bodies_find(m, &b);
	buf_init(&t, 64u << 20);
	int rc = buf_append_str(o, ",\"links\":[");
	if (rc == 0 && b.html != NULL) {
		(void)mime_part_text(m, b.html, &t); /* cut at its bound, not refused */
		c.source = "html";
		rc = sbx_html_links(buf_cstr(&t), t.len, chk_link, &c);
		rc = rc != 0 ? rc : c.rc;
	}
	buf_reset(&t);
	if (rc == 0 && b.text != NULL && !c.truncated) {
		(void)mime_part_text(m, b.text, &t);
		c.source = "text";
		chk_text_links(buf_cstr(&t), t.len, &c);
		rc = c.rc;
	}
	rc =
	    rc != 0 ? rc : buf_printf(o, "],\"linksTruncated\":%s", c.truncated ? "true" : "false");
	buf_free(&t);
	sbx_bodies_free(&b);
	return rc;
}

/* A number at p (an optional sign, digits, one '.'): its value, and where
 * it ends in *end; false when none is there. Bounded to 16 characters. */
static bool chk_number(const char *p, const char *lim, double *v, const char **end)
{
	char tmp[20];
	size_t n = 0;
	if (p < lim && (*p == '-' || *p == '+'))
		tmp[n++] = *p++;
	bool digit = false, dot = false;
	while (p < lim && n < 16 && ((*p >= '0' && *p <= '9') || (*p == '.' && !dot))) {
		dot = dot || *p == '.';
		digit = digit || *p != '.';
		tmp[n++] = *p++;
	}
	if (!digit)
		return false;
	tmp[n] = '\0';
	*v = strtod(tmp, NULL);
	*end = p;
	return true;
}

/* A case-insensitive key ("score=") in s[0..n): where its value starts. */
static const char *chk_key(const char *s, size_t n, const char *key)
{
	size_t k = strlen(key);
	for (size_t i = 0; i + k <= n; i++)
		if (strncasecmp(s + i, key, k) == 0)
			return s + i + k;
	return NULL;
}

/* The spam filter's verdict, as the milter (rspamd's proxy, or
 * spamass-milter) wrote it into the header: rspamd's X-Spamd-Result
 * ("default: False [7.00 / 15.00]; ..."), else X-Spam-Status
 * ("Yes, score=7.0 required=5.0"), else X-Spam-Score or X-Rspamd-Score;
 * X-Spam ("Yes") says spam without a score. "spam": null without any. */
static int chk_spam(const struct mime_msg *m, struct buf *o)
{
	static const char *const names[] = {"X-Spamd-Result", "X-Spam-Status", "X-Spam-Score",
	                                    "X-Rspamd-Score", "X-Spam"};
	const char *hdr = m->raw + m->parts[0].hdr_off;
	size_t hlen = m->parts[0].hdr_len;
	struct buf v;
	buf_init(&v, MIME_MAX_FIELD + 1);
	int rc = 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		buf_reset(&v);
		if (mime_hdr_get(hdr, hlen, names[i], &v) != 1)
			continue;
		const char *s = buf_cstr(&v), *lim = s + v.len, *e;
		double score = 0, thr = 0;
		bool has_score = false, has_thr = false;
		int flag = -1; /* -1 unknown, 0 no, 1 yes */
		if (i == 0) { /* X-Spamd-Result: METRIC: True|False [score / threshold] */
			const char *c = memchr(s, ':', v.len);
			if (c != NULL) {
				const char *t = c + 1;
				while (t < lim && *t == ' ')
					t++;
				flag = strncasecmp(t, "true", 4) == 0 ? 1 : strncasecmp(t, "false", 5) == 0 ? 0 : -1;
			}
			const char *b = memchr(s, '[', v.len);
			if (b != NULL && chk_number(b + 1, lim, &score, &e)) {
				has_score = true;
				while (e < lim && (*e == ' ' || *e == '/'))
					e++;
				has_thr = chk_number(e, lim, &thr, &e);
			}
		} else if (i == 1) { /* X-Spam-Status: Yes|No, score=N required=M */
			flag = strncasecmp(s, "yes", 3) == 0 ? 1 : strncasecmp(s, "no", 2) == 0 ? 0 : -1;
			const char *k = chk_key(s, v.len, "score=");
			has_score = k != NULL && chk_number(k, lim, &score, &e);
			k = chk_key(s, v.len, "required=");
			has_thr = k != NULL && chk_number(k, lim, &thr, &e);
		} else if (i == 4) { /* X-Spam: Yes */
			flag = strncasecmp(s, "yes", 3) == 0 ? 1 : strncasecmp(s, "no", 2) == 0 ? 0 : -1;
		} else {
			const char *t = s;
			while (t < lim && *t == ' ')
				t++;
			has_score = chk_number(t, lim, &score, &e);
		}
		if (!has_score && flag < 0)
			continue;
		rc = buf_append_str(o, ",\"spam\":{\"header\":");
		rc = rc != 0 ? rc : json_append_cstr(o, names[i]);
		rc = rc != 0 ? rc
		     : has_score ? buf_printf(o, ",\"score\":%.2f", score)
		                 : buf_append_str(o, ",\"score\":null");
		rc = rc != 0 ? rc
		     : has_thr ? buf_printf(o, ",\"threshold\":%.2f", thr)
		               : buf_append_str(o, ",\"threshold\":null");
		rc = rc != 0 ? rc
		             : buf_printf(o, ",\"isSpam\":%s}",
		                          flag > 0 ? "true" : flag == 0 ? "false" : "null");
		buf_free(&v);
		return rc;
	}
	buf_free(&v);
	return buf_append_str(o, ",\"spam\":null");
}

int sbx_msg_check(const void *raw, size_t len, struct buf *out)
{
	struct mime_msg *m = mime_parse(raw, len);
	struct chk_lines l;
	size_t start = out->len;
	chk_lines(raw, len, &l);
	int rc = buf_printf(out, "{\"size\":%zu", len);
	rc = rc != 0 ? rc : chk_warnings(out, m, len, &l);
	rc = rc != 0 ? rc
	             : buf_printf(out,
	                          ",\"maxLineLength\":%zu,\"linesOver998\":%zu,\"linesOver78\":%zu",
	                          l.max, l.over998, l.over78);
	rc = rc != 0 ? rc : chk_all_links(out, m);
	rc = rc != 0 ? rc : chk_auth_results(m, out);
	rc = rc != 0 ? rc : chk_spam(m, out);
	rc = rc != 0 ? rc : buf_append_byte(out, '}');
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	mime_msg_free(&m);
	return rc;
}
