/* reply.c — the SMTP/LMTP reply parser used by the client (RFC 5321 §4.2,
 * enhanced status codes RFC 3463 and RFC 2034).
 *
 * Pure, no I/O; runs in the queue manager inside the SMTP client. Every octet
 * comes from a remote server and is hostile: a line, the number of lines of
 * one reply and the joined text are all bounded, and anything that is not a
 * well-formed reply is an error (the client then drops the connection).
 *
 * Resumable: a partial line is kept in the parser and a partial multiline
 * reply in p->cur, so the result does not depend on how the input is split.
 * Lines end with CRLF; a bare LF is accepted as an end too (sloppy servers),
 * but a bare CR never ends a line. Control octets inside a line are replaced
 * by '?' so the text is safe to log and to put into a DSN. */
#include "smtpc/reply.h"

#include <string.h>

#include "lib/strutil.h"

void smtp_reply_parser_init(struct smtp_reply_parser *p)
{
	p->len = 0;
	p->overflow = false;
	p->in_reply = false;
	memset(&p->cur, 0, sizeof(p->cur));
}

/* "c.s.d" with c the class digit, subject and detail 1-3 digits each
 * (RFC 3463 §2), followed by a space or the end of the line. Returns its
 * length, 0 if the text does not start with one. */
static size_t smtp_reply_enh_len(const char *t, size_t len, char cls)
{
	size_t i = 0;
	if (len < 5 || t[0] != cls || t[1] != '.')
		return 0;
	i = 2;
	for (int part = 0; part < 2; part++) {
		size_t start = i;
		while (i < len && i - start < 4 && t[i] >= '0' && t[i] <= '9')
			i++;
		if (i == start || i - start > 3)
			return 0;
		if (part == 0) {
			if (i >= len || t[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && t[i] != ' ')
		return 0;
	return i;
}

/* One complete line (without its line end): check it, add it to p->cur.
 * Returns 1 if it was the last line of the reply, 0 if more lines follow,
 * -1 on error. */
static int smtp_reply_line(struct smtp_reply_parser *p, const char *line, size_t len,
                           const char **error_r)
{
	struct smtp_reply *cur = &p->cur;

	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9') {
		*error_r = "reply line does not start with a code 200-599";
		return -1;
	}
	if (len > 3 && line[3] != ' ' && line[3] != '-') {
		*error_r = "reply code not followed by a space or '-'";
		return -1;
	}
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (p->in_reply && code != cur->code) {
		*error_r = "reply lines with different codes";
		return -1;
	}
	if (!p->in_reply) {
		memset(cur, 0, sizeof(*cur));
		cur->code = code;
		p->in_reply = true;
	}
	if (cur->nlines >= SMTP_REPLY_LINES_MAX) {
		*error_r = "reply has too many lines";
		return -1;
	}
	bool last = len == 3 || line[3] == ' ';
	const char *t = len > 3 ? line + 4 : line + len;
	size_t tlen = len > 3 ? len - 4 : 0;

	/* RFC 2034 §4: the enhanced code follows the reply code on each line;
	 * keep it once, strip it from the text. */
	size_t elen = smtp_reply_enh_len(t, tlen, line[0]);
	if (elen > 0) {
		if (cur->enh[0] == '\0' && elen < sizeof(cur->enh)) {
			memcpy(cur->enh, t, elen);
			cur->enh[elen] = '\0';
		}
		t += elen;
		tlen -= elen;
		if (tlen > 0) {
			t++;
			tlen--;
		}
	}
	size_t tl = strlen(cur->text);
	size_t need = tlen + (cur->nlines > 0 ? 1 : 0);
	if (tl + need >= sizeof(cur->text)) {
		*error_r = "reply text too long";
		return -1;
	}
	if (cur->nlines > 0)
		cur->text[tl++] = '\n';
	for (size_t i = 0; i < tlen; i++) {
		unsigned char c = (unsigned char)t[i];
		cur->text[tl++] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
	}
	cur->text[tl] = '\0';
	cur->nlines++;
	return last ? 1 : 0;
}

int smtp_reply_parse(struct smtp_reply_parser *p, const char *in, size_t len, size_t *used_r,
                     struct smtp_reply *r, const char **error_r)
{
	const char *dummy;
	size_t pos = 0;

	if (error_r == NULL)
		error_r = &dummy;
	*used_r = 0;
	while (pos < len) {
		const char *nl = memchr(in + pos, '\n', len - pos);
		size_t n = nl != NULL ? (size_t)(nl - (in + pos)) : len - pos;

		/* one spare octet for the CR of a maximal line */
		if (n > SMTP_REPLY_LINE_MAX + 1 - p->len) {
			p->overflow = true;
			*error_r = "reply line too long";
			return -1;
		}
		memcpy(p->line + p->len, in + pos, n);
		p->len += n;
		pos += n;
		if (nl == NULL)
			break;
		pos++; /* the LF */
		size_t ll = p->len;
		if (ll > 0 && p->line[ll - 1] == '\r')
			ll--;
		p->len = 0;
		if (ll > SMTP_REPLY_LINE_MAX) {
			p->overflow = true;
			*error_r = "reply line too long";
			return -1;
		}
		int ret = smtp_reply_line(p, p->line, ll, error_r);
		if (ret < 0)
			return -1;
		if (ret == 1) {
			*r = p->cur;
			p->in_reply = false;
			*used_r = pos;
			return 1;
		}
	}
	*used_r = len;
	return 0;
}

/* RFC 4954 §3: "AUTH" SP mechanism list; also the old "AUTH=" form. */
static void smtp_ehlo_caps_auth(const char *s, size_t len, struct smtp_ehlo_caps *caps)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && s[i] == ' ')
			i++;
		size_t start = i;
		while (i < len && s[i] != ' ')
			i++;
		if (str_case_eq(s + start, i - start, "PLAIN"))
			caps->auth_plain = true;
		else if (str_case_eq(s + start, i - start, "LOGIN"))
			caps->auth_login = true;
	}
}

static void smtp_ehlo_caps_line(const char *s, size_t len, struct smtp_ehlo_caps *caps)
{
	size_t kl = 0;
	while (kl < len && s[kl] != ' ' && s[kl] != '=')
		kl++;
	const char *arg = kl < len ? s + kl + 1 : s + len;
	size_t alen = kl < len ? len - kl - 1 : 0;

	if (str_case_eq(s, kl, "PIPELINING")) {
		caps->pipelining = true;
	} else if (str_case_eq(s, kl, "SIZE")) {
		/* RFC 1870 §4: an optional maximum; 0 or absent is no limit */
		uint64_t v;
		caps->size = true;
		while (alen > 0 && arg[alen - 1] == ' ')
			alen--;
		if (alen > 0 && str_parse_u64(arg, alen, 0, UINT64_MAX, &v) == 0)
			caps->size_max = v;
	} else if (str_case_eq(s, kl, "8BITMIME")) {
		caps->eightbitmime = true;
	} else if (str_case_eq(s, kl, "SMTPUTF8")) {
		caps->smtputf8 = true;
	} else if (str_case_eq(s, kl, "STARTTLS")) {
		caps->starttls = true;
	} else if (str_case_eq(s, kl, "CHUNKING")) {
		caps->chunking = true;
	} else if (str_case_eq(s, kl, "DSN")) {
		caps->dsn = true;
	} else if (str_case_eq(s, kl, "ENHANCEDSTATUSCODES")) {
		caps->enhanced = true;
	} else if (str_case_eq(s, kl, "AUTH")) {
		smtp_ehlo_caps_auth(arg, alen, caps);
	}
}

void smtp_ehlo_caps_parse(const struct smtp_reply *r, struct smtp_ehlo_caps *caps)
{
	memset(caps, 0, sizeof(*caps));
	if (r->code < 200 || r->code > 299)
		return;
	/* RFC 5321 §4.1.1.1: the first line is the server's name and greeting */
	const char *s = r->text;
	const char *nl = strchr(s, '\n');
	while (nl != NULL) {
		s = nl + 1;
		nl = strchr(s, '\n');
		size_t len = nl != NULL ? (size_t)(nl - s) : strlen(s);
		smtp_ehlo_caps_line(s, len, caps);
	}
}
