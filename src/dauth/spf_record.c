/* spf_record.c — SPF record parser (RFC 7208 §4.5, §4.6, §5, §6, ABNF §12)
 * and macro expander (§7). Pure: no I/O, no allocation. Runs in smtpd and
 * the CLI; the record text comes from DNS and the macro inputs (sender,
 * HELO) from the SMTP client: both hostile, every output is bounded. */
#include "dauth/spf_record.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const char *const spf_mech_names[] = {"all", "include", "a",   "mx",
                                             "ptr", "ip4",     "ip6", "exists"};

const char *spf_mech_name(enum spf_mech m)
{
	return (unsigned)m < sizeof(spf_mech_names) / sizeof(spf_mech_names[0]) ? spf_mech_names[m]
	                                                                        : "?";
}

static bool spf_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool spf_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool spf_is_alnum(char c)
{
	return spf_is_alpha(c) || spf_is_digit(c);
}

static char spf_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 'a' - 'A') : c;
}

static bool spf_span_eq(const char *s, size_t len, const char *word)
{
	size_t n = strlen(word);
	if (len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (spf_lower(s[i]) != word[i])
			return false;
	return true;
}

bool spf_record_is_spf(const char *text, size_t len)
{
	return len >= 6 && spf_span_eq(text, 6, "v=spf1") && (len == 6 || text[6] == ' ');
}

static bool spf_macro_letter(char c, bool exp)
{
	switch (spf_lower(c)) {
	case 's':
	case 'l':
	case 'o':
	case 'd':
	case 'i':
	case 'p':
	case 'h':
	case 'v':
		return true;
	case 'c':
	case 'r':
	case 't':
		return exp;
	default:
		return false;
	}
}

static bool spf_macro_delim(char c)
{
	return c != '\0' && strchr(".-+,/_=", c) != NULL;
}

/* One "%{...}" at s[0] (which is '%' followed by '{'): its length, or 0 if
 * malformed. digits_r/rev_r/delims_r describe the transformers. */
static size_t spf_macro_one(const char *s, size_t len, bool exp, unsigned *digits_r, bool *rev_r,
                            struct spf_span *delims_r)
{
	size_t i = 2;
	if (i >= len || !spf_macro_letter(s[i], exp))
		return 0;
	i++;
	unsigned digits = 0;
	bool any = false;
	while (i < len && spf_is_digit(s[i])) {
		if (digits < 1000)
			digits = digits * 10 + (unsigned)(s[i] - '0');
		any = true;
		i++;
	}
	if (any && digits == 0)
		return 0; /* §7.1: zero parts cannot be asked for */
	*digits_r = digits;
	*rev_r = false;
	if (i < len && spf_lower(s[i]) == 'r') {
		*rev_r = true;
		i++;
	}
	delims_r->off = (uint16_t)i;
	while (i < len && spf_macro_delim(s[i]))
		i++;
	delims_r->len = (uint16_t)(i - delims_r->off);
	if (i >= len || s[i] != '}')
		return 0;
	return i + 1;
}

/* §7.1 macro-string: visible ASCII, '%' only in "%{..}", "%%", "%_", "%-". */
static bool spf_macro_string_valid(const char *s, size_t len, bool exp, bool *ends_macro_r)
{
	*ends_macro_r = false;
	for (size_t i = 0; i < len;) {
		char c = s[i];
		if (c == '%') {
			if (i + 1 >= len)
				return false;
			char n = s[i + 1];
			if (n == '%' || n == '_' || n == '-') {
				i += 2;
				*ends_macro_r = false;
				continue;
			}
			if (n != '{')
				return false;
			unsigned d;
			bool r;
			struct spf_span dl;
			size_t m = spf_macro_one(s + i, len - i, exp, &d, &r, &dl);
			if (m == 0)
				return false;
			i += m;
			*ends_macro_r = true;
			continue;
		}
		/* exp= text may contain spaces (it is a TXT string, §6.2) */
		if (!((c >= 0x21 && c <= 0x7e) || (exp && c == ' ')))
			return false;
		*ends_macro_r = false;
		i++;
	}
	return true;
}

/* §12 toplabel = ( *alphanum ALPHA *alphanum ) /
 *                ( 1*alphanum "-" *( alphanum / "-" ) alphanum ) */
static bool spf_toplabel_valid(const char *s, size_t len)
{
	if (len == 0 || !spf_is_alnum(s[0]) || !spf_is_alnum(s[len - 1]))
		return false;
	bool alpha = false, dash = false;
	for (size_t i = 0; i < len; i++) {
		if (spf_is_alpha(s[i]))
			alpha = true;
		else if (s[i] == '-')
			dash = true;
		else if (!spf_is_digit(s[i]))
			return false;
	}
	return alpha || dash;
}

/* domain-spec = macro-string domain-end;
 * domain-end = ( "." toplabel [ "." ] ) / macro-expand */
static bool spf_domain_spec_valid(const char *s, size_t len)
{
	bool ends_macro;
	if (len == 0 || !spf_macro_string_valid(s, len, false, &ends_macro))
		return false;
	if (ends_macro)
		return true;
	if (s[len - 1] == '.')
		len--;
	size_t dot = len;
	while (dot > 0 && s[dot - 1] != '.')
		dot--;
	if (dot == 0)
		return false; /* no "." before the top label */
	return spf_toplabel_valid(s + dot, len - dot);
}

/* "/" ("0" / %x31-39 0*2DIGIT) up to max; *i at the '/'. */
static int spf_cidr_parse(const char *s, size_t len, size_t *i, int max, int *r)
{
	size_t j = *i + 1;
	size_t start = j;
	while (j < len && spf_is_digit(s[j]) && j - start < 4)
		j++;
	size_t n = j - start;
	if (n == 0 || n > 3 || (n > 1 && s[start] == '0'))
		return -1;
	int v = 0;
	for (size_t k = start; k < j; k++)
		v = v * 10 + (s[k] - '0');
	if (v > max)
		return -1;
	*r = v;
	*i = j;
	return 0;
}

/* A "/" DIGITS suffix ending at end (exclusive): the index of its '/', or
 * end when there is none. */
static size_t spf_cidr_suffix(const char *s, size_t end)
{
	size_t i = end;
	while (i > 0 && spf_is_digit(s[i - 1]))
		i--;
	return i < end && i > 0 && s[i - 1] == '/' ? i - 1 : end;
}

/* The dual-cidr-length of a/mx, a suffix of arg ("/24", "//64", "/24//64"):
 * the domain-spec itself may contain '/' (§7.1 macro-literal). */
static int spf_dual_cidr_parse(const char *s, size_t len, struct spf_term *t, size_t *speclen_r)
{
	size_t end = len;
	size_t c6 = spf_cidr_suffix(s, end);
	if (c6 < end && c6 > 0 && s[c6 - 1] == '/') {
		size_t i = c6;
		if (spf_cidr_parse(s, end, &i, 128, &t->cidr6) < 0 || i != end)
			return -1;
		end = c6 - 1;
	}
	size_t c4 = spf_cidr_suffix(s, end);
	if (c4 < end) {
		size_t i = c4;
		if (spf_cidr_parse(s, end, &i, 32, &t->cidr4) < 0 || i != end)
			return -1;
		end = c4;
	}
	*speclen_r = end;
	return 0;
}

static int spf_ip_parse(const char *s, size_t len, struct spf_term *t)
{
	char buf[64];
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	if (alen == 0 || alen >= sizeof(buf))
		return -1;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	bool v4 = t->mech == SPF_MECH_IP4;
	if (inet_pton(v4 ? AF_INET : AF_INET6, buf, t->addr) != 1)
		return -1;
	if (alen == len)
		return 0;
	size_t i = alen;
	int *cidr = v4 ? &t->cidr4 : &t->cidr6;
	if (spf_cidr_parse(s, len, &i, v4 ? 32 : 128, cidr) < 0 || i != len)
		return -1;
	return 0;
}

static int spf_mech_lookup(const char *name, size_t len, enum spf_mech *m_r)
{
	for (size_t i = 0; i < sizeof(spf_mech_names) / sizeof(spf_mech_names[0]); i++) {
		if (spf_span_eq(name, len, spf_mech_names[i])) {
			*m_r = (enum spf_mech)i;
			return 0;
		}
	}
	return -1;
}

/* One directive: [qualifier] name [":" arg | "/" cidr]. */
static int spf_directive_parse(struct spf_record *rec, size_t off, size_t len, const char **error_r)
{
	const char *s = rec->text + off;
	struct spf_term *t = &rec->terms[rec->nterms];
	memset(t, 0, sizeof(*t));
	t->text.off = (uint16_t)off;
	t->text.len = (uint16_t)len;
	t->cidr4 = 32;
	t->cidr6 = 128;
	t->qualifier = '+';
	size_t i = 0;
	if (len > 0 && strchr("+-~?", s[0]) != NULL)
		t->qualifier = s[i++];
	size_t name = i;
	while (i < len && spf_is_alnum(s[i]))
		i++;
	if (spf_mech_lookup(s + name, i - name, &t->mech) < 0) {
		*error_r = "unknown mechanism";
		return -1;
	}
	const char *arg = s + i;
	size_t alen = len - i;
	bool colon = alen > 0 && arg[0] == ':';
	if (colon) {
		arg++;
		alen--;
	}
	*error_r = "invalid mechanism argument";
	switch (t->mech) {
	case SPF_MECH_ALL:
		if (alen != 0 || colon)
			return -1;
		break;
	case SPF_MECH_INCLUDE:
	case SPF_MECH_EXISTS:
		if (!colon || !spf_domain_spec_valid(arg, alen))
			return -1;
		break;
	case SPF_MECH_PTR:
		if (!colon && alen > 0)
			return -1;
		if (colon && !spf_domain_spec_valid(arg, alen))
			return -1;
		break;
	case SPF_MECH_A:
	case SPF_MECH_MX: {
		if (!colon && alen > 0 && arg[0] != '/')
			return -1;
		size_t speclen;
		if (spf_dual_cidr_parse(arg, alen, t, &speclen) < 0)
			return -1;
		if (colon ? !spf_domain_spec_valid(arg, speclen) : speclen != 0)
			return -1;
		alen = speclen;
		break;
	}
	case SPF_MECH_IP4:
	case SPF_MECH_IP6:
		if (!colon || spf_ip_parse(arg, alen, t) < 0)
			return -1;
		alen = 0;
		break;
	}
	t->spec.off = (uint16_t)(arg - rec->text);
	t->spec.len = (uint16_t)alen;
	rec->nterms++;
	return 0;
}

/* name "=" macro-string; redirect and exp once each (§6). */
static int spf_modifier_parse(struct spf_record *rec, size_t off, size_t namelen, size_t len,
                              const char **error_r)
{
	const char *s = rec->text + off;
	const char *val = s + namelen + 1;
	size_t vlen = len - namelen - 1;
	struct spf_span *slot = NULL;
	if (spf_span_eq(s, namelen, "redirect"))
		slot = &rec->redirect;
	else if (spf_span_eq(s, namelen, "exp"))
		slot = &rec->exp;
	if (slot == NULL) {
		bool ends;
		if (!spf_macro_string_valid(val, vlen, false, &ends)) {
			*error_r = "invalid modifier value";
			return -1;
		}
		return 0; /* §6: unknown modifiers are ignored */
	}
	if (slot->len != 0) {
		*error_r = "duplicate modifier";
		return -1;
	}
	if (!spf_domain_spec_valid(val, vlen)) {
		*error_r = "invalid modifier domain";
		return -1;
	}
	slot->off = (uint16_t)(val - rec->text);
	slot->len = (uint16_t)vlen;
	return 0;
}

static int spf_term_parse(struct spf_record *rec, size_t off, size_t len, const char **error_r)
{
	const char *s = rec->text + off;
	/* name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ) then "=": a modifier */
	size_t i = 0;
	if (len > 0 && spf_is_alpha(s[0])) {
		i = 1;
		while (i < len && (spf_is_alnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.'))
			i++;
		if (i < len && s[i] == '=')
			return spf_modifier_parse(rec, off, i, len, error_r);
	}
	if (rec->nterms >= SPF_TERMS_MAX) {
		*error_r = "too many terms";
		return -1;
	}
	return spf_directive_parse(rec, off, len, error_r);
}

int spf_record_parse(const char *text, size_t len, struct spf_record *rec, const char **error_r)
{
	rec->text[0] = '\0';
	rec->nterms = 0;
	rec->redirect = (struct spf_span){0, 0};
	rec->exp = (struct spf_span){0, 0};
	if (len > SPF_RECORD_MAX) {
		*error_r = "record too long";
		return -1;
	}
	if (!spf_record_is_spf(text, len)) {
		*error_r = "not an SPF record";
		return -1;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c < 0x20 || c > 0x7e) {
			*error_r = "record contains non-ASCII or control characters";
			return -1;
		}
	}
	memcpy(rec->text, text, len);
	rec->text[len] = '\0';
	size_t i = 6;
	while (i < len) {
		while (i < len && rec->text[i] == ' ')
			i++;
		size_t start = i;
		while (i < len && rec->text[i] != ' ')
			i++;
		if (i > start && spf_term_parse(rec, start, i - start, error_r) < 0)
			return -1;
	}
	return 0;
}

bool spf_macro_uses_p(const char *s, size_t len)
{
	for (size_t i = 0; i + 2 < len; i++) {
		if (s[i] == '%' && s[i + 1] == '%') {
			i++;
			continue;
		}
		if (s[i] == '%' && s[i + 1] == '{' && spf_lower(s[i + 2]) == 'p')
			return true;
	}
	return false;
}

struct spf_out {
	char *p;
	size_t len, cap;
	bool overflow;
};

static void spf_out_put(struct spf_out *o, const char *s, size_t n)
{
	if (o->len + n >= o->cap) {
		o->overflow = true;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

/* §7.3: the macro's value before transformers. */
static void spf_macro_value(char letter, const struct spf_macro_ctx *ctx, bool upper, char *buf,
                            size_t buflen)
{
	const char *v = "";
	switch (spf_lower(letter)) {
	case 's':
		v = ctx->sender;
		break;
	case 'l':
		v = ctx->local;
		break;
	case 'o':
		v = ctx->sender_domain;
		break;
	case 'd':
		v = ctx->domain;
		break;
	case 'h':
		v = ctx->helo;
		break;
	case 'p':
		v = ctx->p != NULL ? ctx->p : "unknown";
		break;
	case 'r':
		v = ctx->receiver != NULL ? ctx->receiver : "unknown";
		break;
	case 'v':
		v = ctx->iplen == 16 ? "ip6" : "in-addr";
		break;
	case 't':
		snprintf(buf, buflen, "%lld", (long long)ctx->now);
		return;
	case 'c':
		if (inet_ntop(ctx->iplen == 16 ? AF_INET6 : AF_INET, ctx->ip, buf,
		              (socklen_t)buflen) == NULL)
			buf[0] = '\0';
		return;
	case 'i':
		if (ctx->iplen == 16) {
			/* §7.3: dot-format, one hex nibble per label */
			/* lower case in names as in §7.4's example; explanations
			 * get upper case, as the reference implementation (pyspf)
			 * and the RFC 7208 test suite have it */
			const char *hex = upper ? "0123456789ABCDEF" : "0123456789abcdef";
			size_t k = 0;
			for (size_t j = 0; j < 16 && k + 4 < buflen; j++) {
				buf[k++] = hex[ctx->ip[j] >> 4];
				buf[k++] = '.';
				buf[k++] = hex[ctx->ip[j] & 15];
				buf[k++] = j == 15 ? '\0' : '.';
			}
			buf[k > 0 ? k - 1 : 0] = '\0';
		} else {
			snprintf(buf, buflen, "%u.%u.%u.%u", ctx->ip[0], ctx->ip[1], ctx->ip[2],
			         ctx->ip[3]);
		}
		return;
	}
	snprintf(buf, buflen, "%s", v != NULL ? v : "");
}

/* §7.3: split on delims, optionally reverse, keep the rightmost n parts,
 * join with "."; uppercase letters URL-escape the result (RFC 3986 §2.3). */
static void spf_macro_transform(const char *val, const char *delims, size_t ndelims, unsigned n,
                                bool rev, bool escape, struct spf_out *o)
{
	struct spf_span parts[SPF_EXPAND_MAX + 2]; /* a value of only delimiters */
	size_t np = 0, start = 0, vlen = strlen(val);
	for (size_t i = 0; i <= vlen && np < sizeof(parts) / sizeof(parts[0]); i++) {
		bool d = i == vlen ||
		         (ndelims == 0 ? val[i] == '.' : memchr(delims, val[i], ndelims) != NULL);
		if (d) {
			parts[np].off = (uint16_t)start;
			parts[np].len = (uint16_t)(i - start);
			np++;
			start = i + 1;
		}
	}
	if (rev) {
		for (size_t i = 0; i < np / 2; i++) {
			struct spf_span t = parts[i];
			parts[i] = parts[np - 1 - i];
			parts[np - 1 - i] = t;
		}
	}
	size_t first = n != 0 && n < np ? np - n : 0;
	for (size_t i = first; i < np; i++) {
		if (i > first)
			spf_out_put(o, ".", 1);
		const char *p = val + parts[i].off;
		for (size_t k = 0; k < parts[i].len; k++) {
			unsigned char c = (unsigned char)p[k];
			if (escape && !(spf_is_alnum((char)c) || strchr("-._~", c) != NULL)) {
				char e[4];
				snprintf(e, sizeof(e), "%%%02X", c);
				spf_out_put(o, e, 3);
			} else {
				spf_out_put(o, (const char *)&c, 1);
			}
		}
	}
}

/* §7.3: "if the expansion is longer than 253 characters, left side labels
 * are removed until the total is 253 or less"; a trailing dot is dropped. */
static void spf_domain_trim(char *out)
{
	size_t len = strlen(out);
	if (len > 0 && out[len - 1] == '.')
		out[--len] = '\0';
	size_t cut = 0;
	while (len - cut > SPF_DOMAIN_MAX) {
		const char *dot = memchr(out + cut, '.', len - cut);
		cut = dot != NULL ? (size_t)(dot - out) + 1 : len;
	}
	memmove(out, out + cut, len - cut + 1);
}

int spf_macro_expand(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool exp,
                     char *out, size_t outlen, const char **error_r)
{
	bool ends;
	if (outlen == 0 || !spf_macro_string_valid(s, len, exp, &ends)) {
		*error_r = "invalid macro";
		return -1;
	}
	/* a domain may run over 253 before the cut; it must fit in the work buffer */
	char work[SPF_EXPAND_MAX + 1];
	struct spf_out o = {work, 0, sizeof(work), false};
	work[0] = '\0';
	for (size_t i = 0; i < len && !o.overflow;) {
		if (s[i] != '%') {
			spf_out_put(&o, s + i, 1);
			i++;
			continue;
		}
		char n = s[i + 1];
		if (n == '%' || n == '_' || n == '-') {
			spf_out_put(&o, n == '%' ? "%" : n == '_' ? " " : "%20", n == '-' ? 3 : 1);
			i += 2;
			continue;
		}
		unsigned digits;
		bool rev;
		struct spf_span dl;
		size_t m = spf_macro_one(s + i, len - i, exp, &digits, &rev, &dl);
		char val[SPF_EXPAND_MAX + 1];
		char letter = s[i + 2];
		spf_macro_value(letter, ctx, exp, val, sizeof(val));
		spf_macro_transform(val, s + i + dl.off, dl.len, digits, rev,
		                    letter >= 'A' && letter <= 'Z', &o);
		i += m;
	}
	if (o.overflow) {
		*error_r = "macro expansion too long";
		return -1;
	}
	if (!exp)
		spf_domain_trim(work);
	if (strlen(work) >= outlen) {
		*error_r = "macro expansion too long";
		return -1;
	}
	memcpy(out, work, strlen(work) + 1);
	return 0;
}
