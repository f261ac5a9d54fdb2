/* sandbox_msg.c — a captured message as the sandbox API shows it
 * (sandbox_msg.h): Mailpit's Message and MessageSummary, one decoded part,
 * the HTML for the sandboxed iframe. Runs in the http process on stored
 * captured mail: every octet is hostile, every string leaves through the
 * one JSON escaper (lib/json.c). Pure, no I/O. */
#include "obs/sandbox_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/json.h"
#include "mail/header.h"
#include "obs/sandbox_int.h"

#define SBX_OUT_MAX (64u << 20) /* scratch buffers: a message is smaller */

/* ---- bodies, inline parts and attachments ---- */

static bool sbx_inside_message(const struct mime_msg *m, const struct mime_part *p)
{
	for (int i = p->parent; i >= 0; i = m->parts[i].parent) {
		if (m->parts[i].is_message)
			return true;
	}
	return false;
}

void sbx_bodies_find(const struct mime_msg *m, struct sbx_bodies *b)
{
	memset(b, 0, sizeof(*b));
	b->role = xcalloc(m->nparts > 0 ? m->nparts : 1, sizeof(*b->role));
	for (size_t i = 0; i < m->nparts; i++) {
		const struct mime_part *p = &m->parts[i];
		if (p->is_multipart || sbx_inside_message(m, p))
			continue;
		bool body = p->disp != MIME_DISP_ATTACHMENT && p->filename == NULL;
		if (body && b->text == NULL && strcmp(p->type, "text/plain") == 0) {
			b->text = p, b->role[i] = SBX_ROLE_TEXT;
		} else if (body && b->html == NULL && strcmp(p->type, "text/html") == 0) {
			b->html = p, b->role[i] = SBX_ROLE_HTML;
		} else if (body && strncmp(p->type, "text/", 5) == 0 && p->content_id == NULL) {
			continue; /* another text body (an alternative): not listed */
		} else if (p->disp == MIME_DISP_ATTACHMENT ||
		           (p->content_id == NULL && p->disp != MIME_DISP_INLINE)) {
			b->role[i] = SBX_ROLE_ATTACH, b->nattach++;
		} else {
			b->role[i] = SBX_ROLE_INLINE, b->ninline++;
		}
	}
}

void sbx_bodies_free(struct sbx_bodies *b)
{
	free(b->role);
	b->role = NULL;
}

/* ---- header values ---- */

/* A C string of b: a NUL inside becomes U+FFFD rather than cutting it. */
static char *sbx_strdup_buf(const struct buf *b)
{
	size_t nul = 0;
	for (size_t i = 0; i < b->len; i++)
		nul += b->data[i] == '\0';
	char *s = xmalloc(b->len + nul * 2 + 1), *w = s;
	for (size_t i = 0; i < b->len; i++) {
		if (b->data[i] == '\0') {
			memcpy(w, "\xef\xbf\xbd", 3);
			w += 3;
		} else {
			*w++ = (char)b->data[i];
		}
	}
	*w = '\0';
	return s;
}

static char *sbx_hdr_decoded(const struct mime_msg *m, const char *name)
{
	struct buf v, d;
	buf_init(&v, MIME_MAX_FIELD + 1);
	buf_init(&d, 0);
	if (mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, name, &v) == 1)
		(void)mime_decode_words(buf_cstr(&v), v.len, &d);
	buf_free(&v);
	char *s = sbx_strdup_buf(&d);
	buf_free(&d);
	return s;
}

/* A field whose value is "<...>" (Message-ID, Return-Path): the inside. */
static char *sbx_angle(const struct mime_msg *m, const char *name)
{
	struct buf v;
	buf_init(&v, MIME_MAX_FIELD + 1);
	(void)mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, name, &v);
	const char *s = buf_cstr(&v);
	size_t n = v.len;
	const char *lt = memchr(s, '<', n);
	if (lt != NULL) {
		const char *gt = memchr(lt, '>', n - (size_t)(lt - s));
		if (gt != NULL)
			s = lt + 1, n = (size_t)(gt - lt - 1);
	}
	char *r = xstrndup(s, n);
	buf_free(&v);
	return r;
}

/* Append s[0..n) trimmed, unquoted (quoted-string, RFC 5322 §3.2.4) and
 * with encoded-words decoded. */
static char *sbx_display_name(const char *s, size_t n)
{
	struct buf raw, out;
	while (n > 0 && (*s == ' ' || *s == '\t'))
		s++, n--;
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	buf_init(&raw, 0);
	buf_init(&out, 0);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			continue;
		if (s[i] == '\\' && i + 1 < n)
			i++;
		(void)buf_append_byte(&raw, (unsigned char)s[i]);
	}
	(void)mime_decode_words(buf_cstr(&raw), raw.len, &out);
	buf_free(&raw);
	char *r = sbx_strdup_buf(&out);
	buf_free(&out);
	return r;
}

/* One mailbox (RFC 5322 §3.4): name-addr or addr-spec, old-style
 * "addr (Name)" too. */
static void sbx_mailbox(const char *s, size_t n, struct sbx_addr *a)
{
	size_t lt = n, gt = n, q = 0;
	for (size_t i = 0; i < n && gt == n; i++) {
		if (lt != n) {
			if (s[i] == '>')
				gt = i; /* no quoting inside the angle brackets here */
		} else if (s[i] == '"') {
			q ^= 1;
		} else if (s[i] == '\\' && i + 1 < n) {
			i++;
		} else if (!q && s[i] == '<') {
			lt = i;
		}
	}
	if (lt < n) {
		const char *as = s + lt + 1;
		size_t al = (gt < n ? gt : n) - lt - 1;
		const char *colon = memchr(as, ':', al); /* obs-route (RFC 5322 §4.4) */
		if (colon != NULL && al > 0 && as[0] == '@')
			al -= (size_t)(colon + 1 - as), as = colon + 1;
		while (al > 0 && (*as == ' ' || *as == '\t'))
			as++, al--;
		while (al > 0 && (as[al - 1] == ' ' || as[al - 1] == '\t'))
			al--;
		a->address = xstrndup(as, al);
		a->name = sbx_display_name(s, lt);
		return;
	}
	struct buf addr, name;
	buf_init(&addr, 0);
	buf_init(&name, 0);
	int depth = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '(' && depth < 64) {
			depth++;
			continue;
		}
		if (s[i] == ')' && depth > 0) {
			depth--;
			continue;
		}
		if (depth > 0)
			(void)buf_append_byte(&name, (unsigned char)s[i]);
		else if (s[i] != ' ' && s[i] != '\t' && s[i] != '"')
			(void)buf_append_byte(&addr, (unsigned char)s[i]);
	}
	a->address = xstrndup(buf_cstr(&addr), addr.len);
	a->name = sbx_display_name(buf_cstr(&name), name.len);
	buf_free(&addr);
	buf_free(&name);
}

static void sbx_addr_add(struct sbx_addr_list *l, const char *s, size_t n)
{
	while (n > 0 && (*s == ' ' || *s == '\t'))
		s++, n--;
	if (n == 0 || l->n >= SBX_MAX_ADDRS)
		return;
	struct sbx_addr a;
	sbx_mailbox(s, n, &a);
	if (a.address[0] == '\0' && a.name[0] == '\0') {
		free(a.address);
		free(a.name);
		return;
	}
	l->v = xreallocarray(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n++] = a;
}

/* An address-list (RFC 5322 §3.4): mailboxes split at the commas outside
 * quotes, angle brackets and comments; group names and ';' dropped. */
static void sbx_addr_list(const struct mime_msg *m, const char *name, struct sbx_addr_list *l)
{
	struct buf v;
	buf_init(&v, MIME_MAX_FIELD + 1);
	memset(l, 0, sizeof(*l));
	if (mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, name, &v) != 1) {
		buf_free(&v);
		return;
	}
	const char *s = buf_cstr(&v);
	size_t n = v.len, start = 0;
	bool q = false, angle = false;
	int cmt = 0;
	for (size_t i = 0; i <= n; i++) {
		char c = i < n ? s[i] : ',';
		if (i == n) {
			sbx_addr_add(l, s + start, n - start);
			break;
		}
		if (q) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				q = false;
			continue;
		}
		if (c == '"' && cmt == 0 && !angle)
			q = true;
		else if (c == '(' && cmt < 64)
			cmt++;
		else if (c == ')' && cmt > 0)
			cmt--;
		else if (cmt > 0)
			continue;
		else if (c == '<')
			angle = true;
		else if (c == '>')
			angle = false;
		else if (c == ':' && !angle)
			start = i + 1; /* group display-name (§3.4) */
		else if ((c == ',' || c == ';') && !angle) {
			sbx_addr_add(l, s + start, i - start);
			start = i + 1;
		}
	}
	buf_free(&v);
}

static void sbx_addr_list_free(struct sbx_addr_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].address);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
}

/* ---- Date (RFC 5322 §3.3, obsolete forms of §4.3) ---- */

static int64_t sbx_days_from_civil(int64_t y, unsigned mo, unsigned d)
{
	y -= mo <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (mo + (mo > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static const char *sbx_skip(const char *p, const char *e)
{
	int depth = 0;
	while (p < e && (*p == ' ' || *p == '\t' || *p == '(' || (depth > 0))) {
		if (*p == '(')
			depth++;
		else if (*p == ')')
			depth--;
		p++;
	}
	return p;
}

static int sbx_num(const char **pp, const char *e, unsigned maxdig, unsigned *v)
{
	const char *p = *pp;
	unsigned n = 0, r = 0;
	while (p < e && *p >= '0' && *p <= '9' && n < maxdig)
		r = r * 10 + (unsigned)(*p++ - '0'), n++;
	*pp = p;
	*v = r;
	return (int)n;
}

static bool sbx_zone(const char *p, const char *e, int *off_min)
{
	static const struct {
		const char *n;
		int h;
	} obs[] = {
	    {"UT", 0},   {"GMT", 0},  {"Z", 0},    {"EST", -5}, {"EDT", -4}, {"CST", -6},
	    {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7},
	};
	*off_min = 0;
	if (p < e && (*p == '+' || *p == '-')) {
		int sign = *p == '-' ? -1 : 1;
		unsigned z;
		p++;
		if (sbx_num(&p, e, 4, &z) != 4 || z % 100 > 59 || z / 100 > 23)
			return false;
		*off_min = sign * (int)(z / 100 * 60 + z % 100);
		return true;
	}
	size_t n = 0;
	while (p + n < e && ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z')))
		n++;
	for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
		if (strlen(obs[i].n) == n && strncasecmp(p, obs[i].n, n) == 0) {
			*off_min = obs[i].h * 60;
			return true;
		}
	}
	return true; /* other obs-zone: -0000, "no information" (§4.3) */
}

static bool sbx_date_parse(const char *s, size_t n, int64_t *t_r, int *off_r)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	const char *p = s, *e = s + n;
	unsigned day, year, hh, mm, ss = 0, mo = 0;
	p = sbx_skip(p, e);
	const char *comma = memchr(p, ',', (size_t)(e - p));
	if (comma != NULL && comma - p <= 12)
		p = sbx_skip(comma + 1, e);
	if (sbx_num(&p, e, 2, &day) == 0)
		return false;
	p = sbx_skip(p, e);
	if (e - p < 3)
		return false;
	for (unsigned i = 0; i < 12; i++) {
		if (strncasecmp(p, months + i * 3, 3) == 0)
			mo = i + 1;
	}
	if (mo == 0)
		return false;
	p += 3;
	while (p < e && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
		p++;
	p = sbx_skip(p, e);
	int yd = sbx_num(&p, e, 4, &year);
	if (yd < 2)
		return false;
	if (yd == 2)
		year += year < 50 ? 2000 : 1900;
	else if (yd == 3)
		year += 1900;
	p = sbx_skip(p, e);
	if (sbx_num(&p, e, 2, &hh) == 0 || p >= e || *p++ != ':' || sbx_num(&p, e, 2, &mm) != 2)
		return false;
	if (p < e && *p == ':') {
		p++;
		if (sbx_num(&p, e, 2, &ss) != 2)
			return false;
	}
	static const unsigned mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (year < 1900 || day < 1 || day > mdays[mo - 1] || hh > 23 || mm > 59 || ss > 60)
		return false;
	int off;
	if (!sbx_zone(sbx_skip(p, e), e, &off))
		return false;
	int64_t days = sbx_days_from_civil(year, mo, day);
	*t_r = days * 86400 + hh * 3600 + mm * 60 + (ss > 59 ? 59 : ss) - (int64_t)off * 60;
	*off_r = off;
	return true;
}

static void sbx_date(const struct mime_msg *m, int64_t received, int64_t *t, int *off, bool *valid)
{
	struct buf v;
	buf_init(&v, MIME_MAX_FIELD + 1);
	*valid = mime_hdr_get(m->raw + m->parts[0].hdr_off, m->parts[0].hdr_len, "Date", &v) == 1 &&
	         sbx_date_parse(buf_cstr(&v), v.len, t, off);
	if (!*valid)
		*t = received, *off = 0;
	buf_free(&v);
}

/* RFC 3339 §5.6 date-time, with the zone the message gave. */
static int sbx_rfc3339(struct buf *out, int64_t t, int off)
{
	struct tm tm;
	time_t lt = (time_t)(t + (int64_t)off * 60);
	if (gmtime_r(&lt, &tm) == NULL || tm.tm_year + 1900 > 9999)
		return buf_append_str(out, "\"1970-01-01T00:00:00Z\"");
	int rc = buf_printf(out, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
	                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
	if (rc == 0 && off == 0)
		rc = buf_append_str(out, "Z\"");
	else if (rc == 0)
		rc = buf_printf(out, "%c%02d:%02d\"", off < 0 ? '-' : '+', abs(off) / 60,
		                abs(off) % 60);
	return rc;
}

/* ---- JSON ---- */

static int sbx_json_addr(struct buf *o, const struct sbx_addr *a)
{
	int rc = buf_append_str(o, "{\"Name\":");
	rc = rc != 0 ? rc : json_append_cstr(o, a->name);
	rc = rc != 0 ? rc : buf_append_str(o, ",\"Address\":");
	rc = rc != 0 ? rc : json_append_cstr(o, a->address);
	return rc != 0 ? rc : buf_append_byte(o, '}');
}

static int sbx_json_addrs(struct buf *o, const char *key, const struct sbx_addr_list *l)
{
	int rc = buf_printf(o, ",\"%s\":[", key);
	for (size_t i = 0; i < l->n && rc == 0; i++) {
		if (i > 0)
			rc = buf_append_byte(o, ',');
		rc = rc != 0 ? rc : sbx_json_addr(o, &l->v[i]);
	}
	return rc != 0 ? rc : buf_append_byte(o, ']');
}

static int sbx_json_key_str(struct buf *o, const char *key, const char *v, size_t n)
{
	int rc = buf_printf(o, ",\"%s\":", key);
	return rc != 0 ? rc : json_append_str(o, v, n);
}

static int sbx_json_files(struct buf *o, const struct mime_msg *m, const struct sbx_bodies *b,
                          enum sbx_role role)
{
	int rc = buf_printf(o, ",\"%s\":[", role == SBX_ROLE_INLINE ? "Inline" : "Attachments");
	bool first = true;
	struct buf d;
	buf_init(&d, SBX_OUT_MAX);
	for (size_t i = 0; i < m->nparts && rc == 0; i++) {
		const struct mime_part *p = &m->parts[i];
		if (b->role[i] != role)
			continue;
		buf_reset(&d);
		(void)mime_part_decode(m, p, &d);
		rc = buf_append_str(o, first ? "{\"PartID\":" : ",{\"PartID\":");
		first = false;
		rc = rc != 0 ? rc : json_append_cstr(o, p->id);
		rc = rc != 0 ? rc : buf_append_str(o, ",\"FileName\":");
		rc = rc != 0 ? rc : json_append_cstr(o, p->filename != NULL ? p->filename : "");
		rc = rc != 0 ? rc : buf_append_str(o, ",\"ContentType\":");
		rc = rc != 0 ? rc : json_append_cstr(o, p->type);
		rc = rc != 0 ? rc : buf_append_str(o, ",\"ContentID\":");
		rc = rc != 0 ? rc : json_append_cstr(o, p->content_id != NULL ? p->content_id : "");
		rc = rc != 0 ? rc : buf_printf(o, ",\"Size\":%zu}", d.len);
	}
	buf_free(&d);
	return rc != 0 ? rc : buf_append_byte(o, ']');
}

/* The scratch buffers are bounded (SBX_OUT_MAX): a body larger than that
 * is shown cut, not refused; only out refusing fails the call. */
static int sbx_json_bodies(struct buf *o, const struct mime_msg *m, const struct sbx_bodies *b)
{
	struct buf t;
	int rc;
	buf_init(&t, SBX_OUT_MAX);
	if (b->text != NULL) {
		(void)mime_part_text(m, b->text, &t);
	} else if (b->html != NULL) { /* as Mailpit does: the text of the HTML */
		struct buf h;
		buf_init(&h, SBX_OUT_MAX);
		(void)mime_part_text(m, b->html, &h);
		(void)sbx_html_text(buf_cstr(&h), h.len, 0, &t);
		buf_free(&h);
	}
	rc = sbx_json_key_str(o, "Text", buf_cstr(&t), t.len);
	buf_reset(&t);
	if (b->html != NULL)
		(void)mime_part_text(m, b->html, &t);
	rc = rc != 0 ? rc : sbx_json_key_str(o, "HTML", buf_cstr(&t), t.len);
	buf_free(&t);
	return rc;
}

/* Mailpit's ListUnsubscribe object: the two fields as sent and the <...>
 * URIs of List-Unsubscribe (RFC 2369 §3.2), up to four. */
static int sbx_json_unsub(struct buf *o, const struct mime_msg *m)
{
	struct buf h, p;
	const char *hdr = m->raw + m->parts[0].hdr_off;
	size_t hl = m->parts[0].hdr_len, nl = 0;
	buf_init(&h, MIME_MAX_FIELD + 1);
	buf_init(&p, MIME_MAX_FIELD + 1);
	(void)mime_hdr_get(hdr, hl, "List-Unsubscribe", &h);
	(void)mime_hdr_get(hdr, hl, "List-Unsubscribe-Post", &p);
	int rc = buf_append_str(o, ",\"ListUnsubscribe\":{\"Header\":");
	rc = rc != 0 ? rc : json_append_str(o, buf_cstr(&h), h.len);
	rc = rc != 0 ? rc : buf_append_str(o, ",\"Links\":[");
	const char *s = buf_cstr(&h), *e = s + h.len;
	while (rc == 0 && nl < 4 && (s = memchr(s, '<', (size_t)(e - s))) != NULL) {
		const char *gt = memchr(s, '>', (size_t)(e - s));
		if (gt == NULL)
			break;
		rc = buf_append_str(o, nl++ > 0 ? "," : "");
		rc = rc != 0 ? rc : json_append_str(o, s + 1, (size_t)(gt - s - 1));
		s = gt + 1;
	}
	rc = rc != 0 ? rc : buf_append_str(o, "],\"Errors\":\"\",\"HeaderPost\":");
	rc = rc != 0 ? rc : json_append_str(o, buf_cstr(&p), p.len);
	rc = rc != 0 ? rc : buf_append_byte(o, '}');
	buf_free(&h);
	buf_free(&p);
	return rc;
}

int sbx_msg_json(const void *raw, size_t len, const char *id, int64_t received, struct buf *out)
{
	struct mime_msg *m = mime_parse(raw, len);
	struct sbx_bodies b;
	struct sbx_addr_list from, to, cc, bcc, rt;
	size_t start = out->len;
	sbx_bodies_find(m, &b);
	sbx_addr_list(m, "From", &from);
	sbx_addr_list(m, "To", &to);
	sbx_addr_list(m, "Cc", &cc);
	sbx_addr_list(m, "Bcc", &bcc);
	sbx_addr_list(m, "Reply-To", &rt);
	char *msgid = sbx_angle(m, "Message-ID"), *subject = sbx_hdr_decoded(m, "Subject");
	char *rpath = sbx_angle(m, "Return-Path");
	int64_t t;
	int off;
	bool valid;
	sbx_date(m, received, &t, &off, &valid);

	int rc = buf_append_str(out, "{\"ID\":");
	rc = rc != 0 ? rc : json_append_cstr(out, id);
	rc = rc != 0 ? rc : sbx_json_key_str(out, "MessageID", msgid, strlen(msgid));
	rc = rc != 0 ? rc : buf_append_str(out, ",\"From\":");
	if (rc == 0 && from.n > 0)
		rc = sbx_json_addr(out, &from.v[0]);
	else if (rc == 0) /* as Mailpit: an empty address, not null */
		rc = buf_append_str(out, "{\"Name\":\"\",\"Address\":\"\"}");
	rc = rc != 0 ? rc : sbx_json_addrs(out, "To", &to);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "Cc", &cc);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "Bcc", &bcc);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "ReplyTo", &rt);
	rc = rc != 0 ? rc : sbx_json_key_str(out, "ReturnPath", rpath, strlen(rpath));
	rc = rc != 0 ? rc : sbx_json_key_str(out, "Subject", subject, strlen(subject));
	rc = rc != 0 ? rc : sbx_json_unsub(out, m);
	rc = rc != 0 ? rc : buf_append_str(out, ",\"Date\":");
	rc = rc != 0 ? rc : sbx_rfc3339(out, t, off);
	rc = rc != 0 ? rc : buf_append_str(out, ",\"Tags\":[]");
	rc = rc != 0 ? rc : sbx_json_bodies(out, m, &b);
	rc = rc != 0 ? rc : buf_printf(out, ",\"Size\":%zu", len);
	rc = rc != 0 ? rc : sbx_json_files(out, m, &b, SBX_ROLE_INLINE);
	rc = rc != 0 ? rc : sbx_json_files(out, m, &b, SBX_ROLE_ATTACH);
	rc = rc != 0 ? rc : buf_append_byte(out, '}');
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	free(msgid);
	free(subject);
	free(rpath);
	sbx_addr_list_free(&from);
	sbx_addr_list_free(&to);
	sbx_addr_list_free(&cc);
	sbx_addr_list_free(&bcc);
	sbx_addr_list_free(&rt);
	sbx_bodies_free(&b);
	mime_msg_free(&m);
	return rc;
}

/* ---- summary ---- */

static void sbx_snippet(const struct mime_msg *m, const struct sbx_bodies *b, struct buf *out)
{
	struct buf t;
	buf_init(&t, SBX_OUT_MAX);
	if (b->text != NULL && mime_part_text(m, b->text, &t) == 0)
		(void)sbx_collapse_ws(buf_cstr(&t), t.len, SBX_SNIPPET_CHARS, out);
	else if (b->html != NULL && mime_part_text(m, b->html, &t) == 0)
		(void)sbx_html_text(buf_cstr(&t), t.len, SBX_SNIPPET_CHARS, out);
	buf_free(&t);
}

void sbx_msg_summary(const void *raw, size_t len, int64_t received, struct sbx_msg_summary *s)
{
	struct mime_msg *m = mime_parse(raw, len);
	struct sbx_bodies b;
	struct sbx_addr_list from;
	struct buf sn;
	memset(s, 0, sizeof(*s));
	sbx_bodies_find(m, &b);
	sbx_addr_list(m, "From", &from);
	if (from.n > 0) {
		s->from = from.v[0];
		from.v[0] = (struct sbx_addr){NULL, NULL};
		from.v[0].name = xstrdup("");
		from.v[0].address = xstrdup("");
	} else {
		s->from.name = xstrdup("");
		s->from.address = xstrdup("");
	}
	sbx_addr_list_free(&from);
	sbx_addr_list(m, "To", &s->to);
	sbx_addr_list(m, "Cc", &s->cc);
	sbx_addr_list(m, "Bcc", &s->bcc);
	sbx_addr_list(m, "Reply-To", &s->reply_to);
	s->subject = sbx_hdr_decoded(m, "Subject");
	s->message_id = sbx_angle(m, "Message-ID");
	buf_init(&sn, 0);
	sbx_snippet(m, &b, &sn);
	s->snippet = xstrndup(buf_cstr(&sn), sn.len);
	buf_free(&sn);
	sbx_date(m, received, &s->date, &s->date_tz_min, &s->date_valid);
	s->attachments = b.nattach;
	s->size = len;
	sbx_bodies_free(&b);
	mime_msg_free(&m);
}

void sbx_msg_summary_clear(struct sbx_msg_summary *s)
{
	free(s->from.name);
	free(s->from.address);
	sbx_addr_list_free(&s->to);
	sbx_addr_list_free(&s->cc);
	sbx_addr_list_free(&s->bcc);
	sbx_addr_list_free(&s->reply_to);
	free(s->subject);
	free(s->message_id);
	free(s->snippet);
	memset(s, 0, sizeof(*s));
}

int sbx_msg_summary_json(const struct sbx_msg_summary *s, const char *id, bool read,
                         int64_t created, struct buf *out)
{
	size_t start = out->len;
	int rc = buf_append_str(out, "{\"ID\":");
	rc = rc != 0 ? rc : json_append_cstr(out, id);
	rc =
	    rc != 0 ? rc : sbx_json_key_str(out, "MessageID", s->message_id, strlen(s->message_id));
	rc = rc != 0 ? rc : buf_printf(out, ",\"Read\":%s,\"From\":", read ? "true" : "false");
	rc = rc != 0 ? rc : sbx_json_addr(out, &s->from);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "To", &s->to);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "Cc", &s->cc);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "Bcc", &s->bcc);
	rc = rc != 0 ? rc : sbx_json_addrs(out, "ReplyTo", &s->reply_to);
	rc = rc != 0 ? rc : sbx_json_key_str(out, "Subject", s->subject, strlen(s->subject));
	rc = rc != 0 ? rc : buf_append_str(out, ",\"Created\":");
	rc = rc != 0 ? rc : sbx_rfc3339(out, created, 0);
	rc = rc != 0 ? rc
	             : buf_printf(out, ",\"Tags\":[],\"Size\":%zu,\"Attachments\":%zu", s->size,
	                          s->attachments);
	rc = rc != 0 ? rc : sbx_json_key_str(out, "Snippet", s->snippet, strlen(s->snippet));
	rc = rc != 0 ? rc : buf_append_byte(out, '}');
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	return rc;
}

/* ---- one part ---- */

int sbx_msg_part(const void *raw, size_t len, const char *part_id, struct buf *out,
                 char **content_type_r, char **filename_r)
{
	struct mime_msg *m = mime_parse(raw, len);
	const struct mime_part *p = mime_part_by_id(m, part_id);
	int rc = -1;
	*content_type_r = NULL;
	*filename_r = NULL;
	if (p != NULL && !p->is_multipart) {
		size_t start = out->len;
		if (p->is_message) /* the attached message as it was sent */
			rc = buf_append(out, m->raw + p->body_off, p->body_len);
		else
			rc = mime_part_decode(m, p, out);
		if (rc == 0) {
			*content_type_r = xstrdup(p->type);
			*filename_r = xstrdup(p->filename != NULL ? p->filename : "");
		} else if (out->data != NULL) {
			out->len = start;
			out->data[start] = '\0';
		}
	}
	mime_msg_free(&m);
	return rc;
}

/* ---- HTML for the iframe ---- */

struct sbx_cids {
	const struct mime_msg *m;
	const struct sbx_bodies *b;
	size_t budget;  /* decoded octets still allowed into data: URIs */
	size_t lookups; /* cid: references still resolved (each is a scan of the parts) */
	struct buf tmp;
	/* Each part is decoded and encoded once; a repeated reference copies
	 * its data: URI, still paid from the budget. */
	struct buf cache;
	size_t *c_off, *c_len, *c_dec; /* per part; c_len 0: not cached yet */
};

static int sbx_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int sbx_cid_encode(struct sbx_cids *c, size_t i)
{
	const struct mime_part *p = &c->m->parts[i];
	buf_reset(&c->tmp);
	if (mime_part_decode(c->m, p, &c->tmp) != 0)
		return -1;
	c->c_off[i] = c->cache.len;
	c->c_dec[i] = c->tmp.len;
	/* the type is a lowercased token/token: nothing to escape in it */
	if (buf_printf(&c->cache, "data:%s;base64,", p->type) != 0 ||
	    base64_encode((const unsigned char *)buf_cstr(&c->tmp), c->tmp.len, &c->cache) != 0)
		return -1;
	c->c_len[i] = c->cache.len - c->c_off[i];
	return 0;
}

/* RFC 2392 §2: the cid URL is the Content-ID, %hh-encoded. */
static int sbx_cid_resolve(void *ctx, const char *cid, size_t len, struct buf *out)
{
	struct sbx_cids *c = ctx;
	char want[1000];
	size_t n = 0;
	for (size_t i = 0; i < len && n + 1 < sizeof(want); i++) {
		int h1 = i + 2 < len ? sbx_hex(cid[i + 1]) : -1,
		    h2 = i + 2 < len ? sbx_hex(cid[i + 2]) : -1;
		if (cid[i] == '%' && h1 >= 0 && h2 >= 0) {
			want[n++] = (char)(h1 << 4 | h2);
			i += 2;
		} else {
			want[n++] = cid[i];
		}
	}
	want[n] = '\0';
	if (c->lookups == 0)
		return 0;
	c->lookups--;
	for (size_t i = 0; i < c->m->nparts; i++) {
		const struct mime_part *p = &c->m->parts[i];
		if (p->content_id == NULL || c->b->role[i] == SBX_ROLE_NONE || p->is_multipart ||
		    strcmp(p->content_id, want) != 0)
			continue;
		/* images and fonts only: a document would be loaded by <object> */
		if (strncmp(p->type, "image/", 6) != 0 && strncmp(p->type, "font/", 5) != 0 &&
		    strcmp(p->type, "application/octet-stream") != 0)
			return 0;
		/* decoded is at most the body's size: skip what cannot fit */
		if (c->c_len[i] == 0 &&
		    (p->body_len > c->budget * 2 + 16 || sbx_cid_encode(c, i) != 0))
			return 0;
		if (c->c_dec[i] > c->budget)
			return 0;
		c->budget -= c->c_dec[i];
		return buf_append(out, c->cache.data + c->c_off[i], c->c_len[i]) != 0 ? -1 : 1;
	}
	return 0;
}

int sbx_msg_html(const void *raw, size_t len, bool allow_remote, struct buf *out)
{
	struct mime_msg *m = mime_parse(raw, len);
	struct sbx_bodies b;
	int rc = 0;
	sbx_bodies_find(m, &b);
	if (b.html != NULL) {
		struct buf h;
		struct sbx_cids c = {
		    .m = m, .b = &b, .budget = SBX_HTML_INLINE_MAX, .lookups = SBX_HTML_CID_MAX};
		buf_init(&h, SBX_OUT_MAX);
		buf_init(&c.tmp, SBX_OUT_MAX);
		buf_init(&c.cache, SBX_OUT_MAX);
		c.c_off = xcalloc(m->nparts, sizeof(size_t));
		c.c_len = xcalloc(m->nparts, sizeof(size_t));
		c.c_dec = xcalloc(m->nparts, sizeof(size_t));
		(void)mime_part_text(m, b.html, &h); /* cut at SBX_OUT_MAX, not refused */
		rc = rc != 0 ? rc
		             : sbx_html_rewrite(buf_cstr(&h), h.len, allow_remote, sbx_cid_resolve,
		                                &c, out);
		rc = rc == 0 ? 1 : -1;
		buf_free(&h);
		buf_free(&c.tmp);
		buf_free(&c.cache);
		free(c.c_off);
		free(c.c_len);
		free(c.c_dec);
	}
	sbx_bodies_free(&b);
	mime_msg_free(&m);
	return rc;
}

/* ---- headers and the MIME tree ---- */

struct sbx_field {
	char name[80]; /* canonical: "Message-Id", as Go's textproto gives it */
	size_t idx;    /* order of appearance */
	const char *v;
	size_t vlen;
};

static int sbx_field_cmp(const void *a, const void *b)
{
	const struct sbx_field *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c != 0 ? c : (x->idx < y->idx ? -1 : x->idx > y->idx);
}

static void sbx_canon_name(const char *s, size_t n, char *out, size_t outlen)
{
	bool up = true;
	size_t k = 0;
	for (size_t i = 0; i < n && k + 1 < outlen; i++) {
		char c = s[i];
		if (c >= 'a' && c <= 'z' && up)
			c = (char)(c - 32);
		else if (c >= 'A' && c <= 'Z' && !up)
			c = (char)(c + 32);
		out[k++] = c;
		up = c == '-';
	}
	out[k] = '\0';
}

int sbx_msg_headers_json(const void *raw, size_t len, struct buf *out)
{
	struct mime_msg *m = mime_parse(raw, len);
	const char *h = m->raw + m->parts[0].hdr_off;
	size_t hl = m->parts[0].hdr_len, pos = 0, nf = 0, start = out->len;
	struct sbx_field *f = xcalloc(SBX_MAX_FIELDS, sizeof(*f));
	struct mail_hdr_field hf;
	while (nf < SBX_MAX_FIELDS && mail_hdr_next(h, hl, &pos, &hf)) {
		if (hf.name_len == 0)
			continue;
		sbx_canon_name(hf.name, hf.name_len, f[nf].name, sizeof(f[nf].name));
		f[nf].idx = nf;
		f[nf].v = hf.value;
		f[nf].vlen = hf.value_len;
		nf++;
	}
	qsort(f, nf, sizeof(*f), sbx_field_cmp);
	struct buf v;
	buf_init(&v, MIME_MAX_FIELD + 1);
	int rc = buf_append_byte(out, '{');
	for (size_t i = 0; i < nf && rc == 0; i++) {
		bool first = i == 0 || strcmp(f[i].name, f[i - 1].name) != 0;
		if (first && i > 0)
			rc = buf_append_str(out, "],");
		if (rc == 0 && first) {
			rc = json_append_cstr(out, f[i].name);
			rc = rc != 0 ? rc : buf_append_str(out, ":[");
		} else if (rc == 0) {
			rc = buf_append_byte(out, ',');
		}
		/* unfolded, trimmed: the field's own value, not the first of its name */
		buf_reset(&v);
		for (size_t k = 0; k < f[i].vlen && v.len < MIME_MAX_FIELD; k++) {
			if (f[i].v[k] != '\r' && f[i].v[k] != '\n')
				(void)buf_append_byte(&v, (unsigned char)f[i].v[k]);
		}
		size_t a = 0, e = v.len;
		while (a < e && (v.data[a] == ' ' || v.data[a] == '\t'))
			a++;
		while (e > a && (v.data[e - 1] == ' ' || v.data[e - 1] == '\t'))
			e--;
		rc = rc != 0 ? rc : json_append_str(out, buf_cstr(&v) + a, e - a);
	}
	if (rc == 0 && nf > 0)
		rc = buf_append_byte(out, ']');
	rc = rc != 0 ? rc : buf_append_byte(out, '}');
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	buf_free(&v);
	free(f);
	mime_msg_free(&m);
	return rc;
}

static const char *sbx_cte_name(enum mime_cte c)
{
	static const char *const names[] = {"7bit",   "8bit", "binary", "quoted-printable",
	                                    "base64", "other"};
	return names[c];
}

static int sbx_tree_part(struct buf *o, const struct mime_msg *m, size_t i, struct buf *d)
{
	const struct mime_part *p = &m->parts[i];
	static const char *const disp[] = {"", "inline", "attachment"};
	buf_reset(d);
	if (!p->is_multipart && !p->is_message)
		(void)mime_part_decode(m, p, d);
	int rc = buf_append_str(o, i > 0 ? ",{\"PartID\":" : "{\"PartID\":");
	rc = rc != 0 ? rc : json_append_cstr(o, p->id);
	rc = rc != 0 ? rc : buf_append_str(o, ",\"Parent\":");
	rc = rc != 0 ? rc : json_append_cstr(o, p->parent >= 0 ? m->parts[p->parent].id : NULL);
	rc = rc != 0 ? rc
	             : buf_printf(o, ",\"Depth\":%u,\"Children\":%u,\"ContentType\":", p->depth,
	                          p->nchild);
	rc = rc != 0 ? rc : json_append_cstr(o, p->type);
	rc = rc != 0 ? rc : buf_append_str(o, ",\"Charset\":");
	rc = rc != 0 ? rc : json_append_cstr(o, p->charset);
	rc = rc != 0 ? rc
	             : buf_printf(o, ",\"Encoding\":\"%s\",\"Disposition\":\"%s\",\"FileName\":",
	                          sbx_cte_name(p->cte), disp[p->disp]);
	rc = rc != 0 ? rc : json_append_cstr(o, p->filename != NULL ? p->filename : "");
	rc = rc != 0 ? rc : buf_append_str(o, ",\"ContentID\":");
	rc = rc != 0 ? rc : json_append_cstr(o, p->content_id != NULL ? p->content_id : "");
	return rc != 0 ? rc
	               : buf_printf(o, ",\"Size\":%zu}",
	                            p->is_multipart ? 0
	                            : p->is_message ? p->body_len
	                                            : d->len);
}

int sbx_msg_parts_json(const void *raw, size_t len, struct buf *out)
{
	static const struct {
		unsigned bit;
		const char *name;
	} warns[] = {
	    {MIME_W_DEPTH, "depth"},
	    {MIME_W_PARTS, "parts"},
	    {MIME_W_NO_BOUNDARY, "no-boundary"},
	    {MIME_W_NO_CLOSE, "no-close-delimiter"},
	    {MIME_W_NO_BODY_SEP, "no-body-separator"},
	};
	struct mime_msg *m = mime_parse(raw, len);
	struct buf d;
	size_t start = out->len;
	bool first = true;
	buf_init(&d, SBX_OUT_MAX);
	int rc = buf_append_str(out, "{\"Parts\":[");
	for (size_t i = 0; i < m->nparts && rc == 0; i++)
		rc = sbx_tree_part(out, m, i, &d);
	rc = rc != 0 ? rc : buf_append_str(out, "],\"Warnings\":[");
	for (size_t k = 0; k < sizeof(warns) / sizeof(warns[0]) && rc == 0; k++) {
		if (!(m->warn & warns[k].bit))
			continue;
		rc = buf_printf(out, "%s\"%s\"", first ? "" : ",", warns[k].name);
		first = false;
	}
	rc = rc != 0 ? rc : buf_append_str(out, "]}");
	if (rc != 0 && out->data != NULL) {
		out->len = start;
		out->data[start] = '\0';
	}
	buf_free(&d);
	mime_msg_free(&m);
	return rc;
}
