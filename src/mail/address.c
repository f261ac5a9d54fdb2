/* address.c — RFC 5321 §4.1.2 Path / Mailbox parser, with the RFC 6531 §3.3
 * UTF-8 extensions, and RFC 3461 §4 xtext validation.
 *
 * Pure (no I/O, no allocation); runs in smtpd. Every input is hostile: it is
 * the raw argument of MAIL FROM / RCPT TO, so the parser is a single bounded
 * left-to-right scan over a (ptr, len) view that never reads past len, and the
 * result is copied into fixed-size fields only after every length check.
 *
 * Error precedence: syntax (including malformed UTF-8) first, then non-ASCII
 * without SMTPUTF8, then lengths (RFC 5321 §4.5.3.1). */
#include "mail/address.h"
#include "mail/idna.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* RFC 1035 §2.3.4: a DNS label is at most 63 octets. */
#define MAIL_LABEL_MAX 63
/* Longest textual IPv6 address (with embedded IPv4) plus room to spare. */
#define MAIL_IPV6_TEXT_MAX 64

/* Scan state over the path. */
struct addr_cur {
	const unsigned char *p;
	size_t len;
	size_t i;
	bool utf8;           /* saw an octet >= 0x80 (always well-formed) */
	bool label_too_long; /* an ASCII label exceeded 63 octets */
};

size_t mail_utf8_char_len(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (len == 0)
		return 0;
	/* RFC 3629 §4 UTF8-2 / UTF8-3 / UTF8-4: the second octet's range is what
	 * excludes overlongs (E0, F0), surrogates (ED) and > U+10FFFF (F4). */
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
	} else if (p[0] == 0xe0) {
		n = 3;
		lo = 0xa0;
	} else if (p[0] == 0xed) {
		n = 3;
		hi = 0x9f;
	} else if (p[0] >= 0xe1 && p[0] <= 0xef) {
		n = 3;
	} else if (p[0] == 0xf0) {
		n = 4;
		lo = 0x90;
	} else if (p[0] == 0xf4) {
		n = 4;
		hi = 0x8f;
	} else if (p[0] >= 0xf1 && p[0] <= 0xf3) {
		n = 4;
	} else {
		return 0; /* 80..C1 (continuation / overlong lead), F5..FF */
	}
	if (len < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t k = 2; k < n; k++) {
		if (p[k] < 0x80 || p[k] > 0xbf)
			return 0;
	}
	return n;
}

/* Consume one well-formed non-ASCII character at the cursor; -1 if malformed. */
static int addr_cur_take_utf8(struct addr_cur *c)
{
	size_t n = mail_utf8_char_len((const char *)c->p + c->i, c->len - c->i);

	if (n == 0)
		return -1;
	c->i += n;
	c->utf8 = true;
	return 0;
}

static bool addr_is_alnum(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* RFC 5322 §3.2.3 atext (ASCII part). */
static bool addr_is_atext(unsigned char ch)
{
	return addr_is_alnum(ch) || (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* Dot-string = Atom *("." Atom); RFC 6531 §3.3 adds UTF8-non-ascii to atext. */
static int addr_scan_dot_string(struct addr_cur *c)
{
	bool need_atext = true; /* at the start or just after a dot */

	while (c->i < c->len) {
		unsigned char ch = c->p[c->i];

		if (ch == '.') {
			if (need_atext)
				return -1;
			need_atext = true;
			c->i++;
		} else if (ch >= 0x80) {
			if (addr_cur_take_utf8(c) < 0)
				return -1;
			need_atext = false;
		} else if (addr_is_atext(ch)) {
			need_atext = false;
			c->i++;
		} else {
			break;
		}
	}
	return need_atext ? -1 : 0;
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE; qtextSMTP is %d32-33 /
 * %d35-91 / %d93-126 (plus UTF8-non-ascii, RFC 6531), quoted-pairSMTP is
 * "\" followed by %d32-126. */
static int addr_scan_quoted(struct addr_cur *c)
{
	c->i++; /* the opening DQUOTE */
	while (c->i < c->len) {
		unsigned char ch = c->p[c->i];

		if (ch == '"') {
			c->i++;
			return 0;
		}
		if (ch == '\\') {
			if (c->i + 1 >= c->len || c->p[c->i + 1] < 32 || c->p[c->i + 1] > 126)
				return -1;
			c->i += 2;
		} else if (ch >= 0x80) {
			if (addr_cur_take_utf8(c) < 0)
				return -1;
		} else if (ch >= 32 && ch <= 126) {
			c->i++;
		} else {
			return -1;
		}
	}
	return -1;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str], so a
 * label neither starts nor ends with a hyphen. RFC 6531 §3.3 allows U-labels:
 * non-ASCII characters count as letters. The 63-octet label limit applies to
 * ASCII labels only: a U-label's limit is on its A-label form, which the IDNA
 * conversion at the end of mail_addr_parse_path() checks; the 255-octet
 * domain bound holds for both forms. */
static int addr_scan_domain(struct addr_cur *c)
{
	for (;;) {
		size_t start = c->i;
		bool hyphen_last = false, ascii = true;

		while (c->i < c->len) {
			unsigned char ch = c->p[c->i];

			if (addr_is_alnum(ch)) {
				hyphen_last = false;
				c->i++;
			} else if (ch == '-' && c->i > start) {
				hyphen_last = true;
				c->i++;
			} else if (ch >= 0x80) {
				if (addr_cur_take_utf8(c) < 0)
					return -1;
				hyphen_last = false;
				ascii = false;
			} else {
				break;
			}
		}
		if (c->i == start || hyphen_last)
			return -1;
		if (ascii && c->i - start > MAIL_LABEL_MAX)
			c->label_too_long = true;
		if (c->i >= c->len || c->p[c->i] != '.')
			return 0;
		c->i++;
	}
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]"; dcontent is %d33-90 / %d94-126. The IP forms
 * are checked with inet_pton(); a General-address-literal (RFC 5321 §4.1.3,
 * "tag:content") names no registered tag we could deliver to, so it is
 * rejected. */
static int addr_scan_literal(struct addr_cur *c, const char **error_r)
{
	char text[MAIL_IPV6_TEXT_MAX];
	unsigned char tmp[16];
	size_t start = ++c->i, n;
	const char *s;

	while (c->i < c->len && c->p[c->i] != ']') {
		unsigned char ch = c->p[c->i];

		if (ch < 33 || ch > 126 || ch == '[' || ch == '\\') {
			*error_r = "bad character in address literal";
			return -1;
		}
		c->i++;
	}
	if (c->i >= c->len) {
		*error_r = "unterminated address literal";
		return -1;
	}
	s = (const char *)c->p + start;
	n = c->i - start;
	c->i++; /* "]" */
	if (n > 5 && strncasecmp(s, "IPv6:", 5) == 0) {
		if (n - 5 >= sizeof(text))
			goto bad_ipv6;
		memcpy(text, s + 5, n - 5);
		text[n - 5] = '\0';
		if (inet_pton(AF_INET6, text, tmp) != 1)
			goto bad_ipv6;
		return 0;
	}
	if (n > 0 && s[0] >= '0' && s[0] <= '9') {
		/* inet_pton(AF_INET) takes exactly a.b.c.d, each 0..255 */
		if (n >= sizeof(text))
			goto bad_ipv4;
		memcpy(text, s, n);
		text[n] = '\0';
		if (inet_pton(AF_INET, text, tmp) != 1)
			goto bad_ipv4;
		return 0;
	}
	*error_r = "unsupported address literal";
	return -1;
bad_ipv6:
	*error_r = "invalid IPv6 address literal";
	return -1;
bad_ipv4:
	*error_r = "invalid IPv4 address literal";
	return -1;
}

/* A-d-l = At-domain *( "," At-domain ) ":" — obsolete source route, accepted
 * and ignored (RFC 5321 §4.1.2, Appendix C). */
static int addr_scan_route(struct addr_cur *c)
{
	for (;;) {
		if (c->i >= c->len || c->p[c->i] != '@')
			return -1;
		c->i++;
		if (addr_scan_domain(c) < 0)
			return -1;
		if (c->i >= c->len)
			return -1;
		if (c->p[c->i] == ':') {
			c->i++;
			return 0;
		}
		if (c->p[c->i] != ',')
			return -1;
		c->i++;
	}
}

/* "<postmaster>" (RFC 5321 §4.1.1.3: case-insensitive, no domain). */
static bool addr_is_bare_postmaster(const char *p, size_t len)
{
	return len >= 12 && p[0] == '<' && strncasecmp(p + 1, "postmaster", 10) == 0 &&
	       p[11] == '>';
}

/* Scan "<" [A-d-l ":"] Mailbox ">" and report the local part and domain
 * extents; c->i ends just past ">". */
static int addr_scan_mailbox_path(struct addr_cur *c, size_t *local_r, size_t *local_len_r,
                                  size_t *dom_r, size_t *dom_len_r, const char **error_r)
{
	c->i = 1; /* past "<", checked by the caller */
	if (c->i < c->len && c->p[c->i] == '@' && addr_scan_route(c) < 0) {
		*error_r = "bad source route";
		return -1;
	}
	*local_r = c->i;
	if (c->i < c->len && c->p[c->i] == '"') {
		if (addr_scan_quoted(c) < 0) {
			*error_r = "bad quoted local part";
			return -1;
		}
	} else if (addr_scan_dot_string(c) < 0) {
		*error_r = "bad local part";
		return -1;
	}
	*local_len_r = c->i - *local_r;
	if (c->i >= c->len || c->p[c->i] != '@') {
		*error_r = "bad local part or missing '@'";
		return -1;
	}
	c->i++;
	*dom_r = c->i;
	if (c->i < c->len && c->p[c->i] == '[') {
		if (addr_scan_literal(c, error_r) < 0)
			return -1;
	} else if (addr_scan_domain(c) < 0) {
		*error_r = "bad domain";
		return -1;
	}
	*dom_len_r = c->i - *dom_r;
	if (c->i >= c->len || c->p[c->i] != '>') {
		*error_r = "bad domain or missing '>'";
		return -1;
	}
	c->i++;
	return 0;
}

int mail_addr_parse_path(const char *p, size_t len, unsigned flags, struct mail_addr *r,
                         size_t *consumed_r, const char **error_r)
{
	struct addr_cur c = {.p = (const unsigned char *)p, .len = len};
	size_t local, local_len, dom, dom_len, consumed_dummy;
	const char *error_dummy;

	if (error_r == NULL)
		error_r = &error_dummy;
	if (consumed_r == NULL)
		consumed_r = &consumed_dummy;
	memset(r, 0, sizeof(*r));
	*consumed_r = 0;
	if (len == 0 || p[0] != '<') {
		*error_r = "missing '<'";
		return MAIL_ADDR_ERR_SYNTAX;
	}
	if (len >= 2 && p[1] == '>') {
		if ((flags & MAIL_ADDR_ALLOW_NULL) == 0) {
			*error_r = "null path not allowed here";
			return MAIL_ADDR_ERR_SYNTAX;
		}
		r->is_null = true;
		*consumed_r = 2;
		return 0;
	}
	if ((flags & MAIL_ADDR_ALLOW_POSTMASTER) != 0 && addr_is_bare_postmaster(p, len)) {
		memcpy(r->local, p + 1, 10);
		r->is_postmaster = true;
		*consumed_r = 12;
		return 0;
	}
	if (addr_scan_mailbox_path(&c, &local, &local_len, &dom, &dom_len, error_r) < 0)
		return MAIL_ADDR_ERR_SYNTAX;
	if (c.utf8 && (flags & MAIL_ADDR_ALLOW_UTF8) == 0) {
		*error_r = "non-ASCII address without SMTPUTF8";
		return MAIL_ADDR_ERR_UTF8;
	}
	/* RFC 5321 §4.5.3.1.1-3 */
	if (local_len > MAIL_LOCAL_MAX) {
		*error_r = "local part too long";
		return MAIL_ADDR_ERR_LENGTH;
	}
	if (dom_len > MAIL_DOMAIN_MAX || c.label_too_long) {
		*error_r = c.label_too_long ? "domain label too long" : "domain too long";
		return MAIL_ADDR_ERR_LENGTH;
	}
	if (c.i > MAIL_PATH_MAX) {
		*error_r = "path too long";
		return MAIL_ADDR_ERR_LENGTH;
	}
	memcpy(r->local, p + local, local_len);
	r->local[local_len] = '\0';
	memcpy(r->domain, p + dom, dom_len);
	r->domain[dom_len] = '\0';
	if (p[dom] != '[') {
		/* ASCII-only lowercasing: tolower() could touch UTF-8 octets in
		 * some locales */
		for (size_t k = 0; k < dom_len; k++) {
			if (r->domain[k] >= 'A' && r->domain[k] <= 'Z')
				r->domain[k] = (char)(r->domain[k] - 'A' + 'a');
		}
	}
	/* RFC 6531 §3.2 / RFC 5891 §5: a U-label domain must be a valid IDN,
	 * which only its conversion to A-labels tells. */
	if (mail_domain_to_ascii(r->domain, dom_len, r->domain_ascii, sizeof(r->domain_ascii),
				 error_r) < 0) {
		memset(r, 0, sizeof(*r));
		return MAIL_ADDR_ERR_IDNA;
	}
	r->is_utf8 = c.utf8;
	*consumed_r = c.i;
	return 0;
}

int mail_addr_format(const struct mail_addr *a, char *out, size_t outlen)
{
	size_t ll, dl, n;

	if (a->is_null) {
		if (outlen < 1)
			return -1;
		out[0] = '\0';
		return 0;
	}
	ll = strnlen(a->local, sizeof(a->local));
	dl = strnlen(a->domain, sizeof(a->domain));
	n = dl > 0 ? ll + 1 + dl : ll; /* bare postmaster has no domain */
	if (n >= outlen)
		return -1;
	memcpy(out, a->local, ll);
	if (dl > 0) {
		out[ll] = '@';
		memcpy(out + ll + 1, a->domain, dl);
	}
	out[n] = '\0';
	return (int)n;
}

static bool addr_is_hex(unsigned char ch)
{
	return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'F') || (ch >= 'a' && ch <= 'f');
}

/* RFC 3461 §4: xtext = *( xchar / hexchar ); xchar is "!".."~" except "+" and
 * "="; hexchar is "+" and two upper-case hex digits (lower case is accepted:
 * be liberal in what we accept; mail_xtext_canon() fixes it before it is
 * passed on). */
void mail_xtext_canon(char *p)
{
	for (; *p != '\0'; p++) {
		if (*p != '+')
			continue;
		for (int k = 1; k <= 2 && p[k] != '\0'; k++) {
			if (p[k] >= 'a' && p[k] <= 'f')
				p[k] = (char)(p[k] - 'a' + 'A');
		}
	}
}

bool mail_xtext_valid(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch == '+') {
			if (len - i < 3 || !addr_is_hex((unsigned char)p[i + 1]) ||
			    !addr_is_hex((unsigned char)p[i + 2]))
				return false;
			i += 2;
		} else if (ch < '!' || ch > '~' || ch == '=') {
			return false;
		}
	}
	return true;
}

bool mail_helo_domain_valid(const char *p, size_t len, bool utf8)
{
	struct addr_cur c = {.p = (const unsigned char *)p, .len = len};
	const char *error = NULL;

	if (len == 0 || len > MAIL_DOMAIN_MAX)
		return false;
	if (p[0] == '[' ? addr_scan_literal(&c, &error) < 0
	                : addr_scan_domain(&c) < 0 || c.label_too_long)
		return false;
	if (c.i != len || (c.utf8 && !utf8))
		return false;
	/* 0xC2 is only ever a lead octet: 0xC2 0x80..0x9F is U+0080..U+009F */
	for (size_t i = 0; i + 1 < len; i++)
		if ((unsigned char)p[i] == 0xc2 && (unsigned char)p[i + 1] < 0xa0)
			return false;
	return true;
}
