/* test_address.c — table-driven tests for the RFC 5321 path parser
 * (src/mail/address.c): grammar, RFC 6531 UTF-8, length limits, formatting,
 * xtext and UTF-8 decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mail/address.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

#define OK 0
#define SYN MAIL_ADDR_ERR_SYNTAX
#define U8 MAIL_ADDR_ERR_UTF8
#define LEN MAIL_ADDR_ERR_LENGTH

#define F_NULL MAIL_ADDR_ALLOW_NULL
#define F_UTF8 MAIL_ADDR_ALLOW_UTF8
#define F_PM MAIL_ADDR_ALLOW_POSTMASTER

/* Expand "%NNc" into NN copies of c (only when a case asks for it, since
 * "%" is also valid atext). */
static size_t test_expand(const char *pat, char *out, size_t outlen)
{
	size_t o = 0;

	for (const char *s = pat; *s != '\0'; s++) {
		size_t n = 1;

		if (*s == '%') {
			n = 0;
			for (s++; *s >= '0' && *s <= '9'; s++)
				n = n * 10 + (size_t)(*s - '0');
		}
		for (size_t k = 0; k < n; k++) {
			assert_true(o + 1 < outlen);
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return o;
}

struct path_case {
	const char *in;
	size_t len; /* 0: strlen(in) (after expansion) */
	bool expand;
	unsigned flags;
	int rc;
	const char *local; /* checked when rc == 0 */
	const char *domain;
	size_t consumed; /* 0: the whole input */
	bool is_null, is_postmaster, is_utf8;
};

static const struct path_case path_cases[] = {
    /* plain and canonical forms */
    {"<user@example.com>", 0, false, 0, OK, "user", "example.com", 0, false, false, false},
    {"<User.Name+tag@Example.COM>", 0, false, 0, OK, "User.Name+tag", "example.com", 0, false,
     false, false},
    {"<a-b_c!#$%&'*/=?^`{|}~@x-y.z9>", 0, false, 0, OK, "a-b_c!#$%&'*/=?^`{|}~", "x-y.z9", 0, false,
     false, false},
    {"<1@2>", 0, false, 0, OK, "1", "2", 0, false, false, false},
    {"<a@b.c> SIZE=1", 0, false, 0, OK, "a", "b.c", 7, false, false, false},
    {"<a@b.c>garbage", 0, false, 0, OK, "a", "b.c", 7, false, false, false},
    /* quoted local parts (RFC 5321 §4.1.2 Quoted-string) */
    {"<\"john doe\"@example.com>", 0, false, 0, OK, "\"john doe\"", "example.com", 0, false, false,
     false},
    {"<\"a\\\"b\\\\c\"@x.org>", 0, false, 0, OK, "\"a\\\"b\\\\c\"", "x.org", 0, false, false,
     false},
    {"<\"\"@x.org>", 0, false, 0, OK, "\"\"", "x.org", 0, false, false, false},
    {"<\"a@b>\"@x.org>", 0, false, 0, OK, "\"a@b>\"", "x.org", 0, false, false, false},
    /* source routes, accepted and ignored */
    {"<@relay1.example,@Relay2.example:joe@Example.com>", 0, false, 0, OK, "joe", "example.com", 0,
     false, false, false},
    {"<@r.example:joe@x.y>", 0, false, 0, OK, "joe", "x.y", 0, false, false, false},
    /* address literals */
    {"<a@[192.0.2.1]>", 0, false, 0, OK, "a", "[192.0.2.1]", 0, false, false, false},
    {"<a@[IPv6:2001:DB8::1]>", 0, false, 0, OK, "a", "[IPv6:2001:DB8::1]", 0, false, false, false},
    {"<a@[ipv6:::1]>", 0, false, 0, OK, "a", "[ipv6:::1]", 0, false, false, false},
    {"<a@[IPv6:::ffff:192.0.2.1]>", 0, false, 0, OK, "a", "[IPv6:::ffff:192.0.2.1]", 0, false,
     false, false},
    /* null path and postmaster */
    {"<>", 0, false, F_NULL, OK, "", "", 0, true, false, false},
    {"<> SIZE=10", 0, false, F_NULL, OK, "", "", 2, true, false, false},
    {"<Postmaster>", 0, false, F_PM, OK, "Postmaster", "", 0, false, true, false},
    {"<POSTMASTER> NOTIFY=NEVER", 0, false, F_PM, OK, "POSTMASTER", "", 12, false, true, false},
    {"<postmaster@Example.com>", 0, false, 0, OK, "postmaster", "example.com", 0, false, false,
     false},
    /* RFC 6531 UTF-8 */
    {"<j\xc3\xb6rg@b\xc3\xbc"
     "cher.example>",
     0, false, F_UTF8, OK, "j\xc3\xb6rg",
     "b\xc3\xbc"
     "cher.example",
     0, false, false, true},
    {"<\"\xe2\x82\xac x\"@x.y>", 0, false, F_UTF8, OK, "\"\xe2\x82\xac x\"", "x.y", 0, false, false,
     true},
    {"<a@\xc3\x9c"
     "BER.De>",
     0, false, F_UTF8, OK, "a",
     "\xc3\x9c"
     "ber.de",
     0, false, false, true},
    {"<\xf0\x9f\x98\x80@x.y>", 0, false, F_UTF8, OK, "\xf0\x9f\x98\x80", "x.y", 0, false, false,
     true},
    {"<@r\xc3\xa9.example:a@x.y>", 0, false, F_UTF8, OK, "a", "x.y", 0, false, false, true},
    {"<j\xc3\xb6rg@x.y>", 0, false, 0, U8, NULL, NULL, 0, false, false, false},
    {"<a@b\xc3\xbc"
     "cher.example>",
     0, false, F_NULL | F_PM, U8, NULL, NULL, 0, false, false, false},
    {"<\"\xe2\x82\xac\"@x.y>", 0, false, 0, U8, NULL, NULL, 0, false, false, false},
    /* malformed UTF-8 is a syntax error with or without the flag */
    {"<a\xc0\xaf@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xc0\xaf@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xe0\x80\xaf@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xed\xa0\x80@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xf4\x90\x80\x80@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xf5\x80\x80\x80@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\x80@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a\xc3@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<a@x\xe2\x82.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<\"\xff\"@x.y>", 0, false, F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    /* brackets, spaces, trailing/leading junk */
    {"", 0, false, F_NULL, SYN, NULL, NULL, 0, false, false, false},
    {"user@example.com", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@example.com", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"user@example.com>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"< user@example.com>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user @example.com>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@ example.com>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@example.com >", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<", 0, false, F_NULL, SYN, NULL, NULL, 0, false, false, false},
    {"<a\0b@x.y>", 9, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@x.y\0>", 8, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@x.y>", 6, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* null path and postmaster only when allowed */
    {"<>", 0, false, F_PM | F_UTF8, SYN, NULL, NULL, 0, false, false, false},
    {"<postmaster>", 0, false, F_NULL, SYN, NULL, NULL, 0, false, false, false},
    {"<postmaster >", 0, false, F_PM, SYN, NULL, NULL, 0, false, false, false},
    {"<user>", 0, false, F_PM, SYN, NULL, NULL, 0, false, false, false},
    {"<postmasters>", 0, false, F_PM, SYN, NULL, NULL, 0, false, false, false},
    /* Dot-string */
    {"<.user@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user.@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<us..er@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a(b)@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a,b@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@b@c>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* Quoted-string */
    {"<\"unterminated@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<\"a\\\x01\"@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<\"a\tb\"@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<\"a\"b@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<\"a\\", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* Domain */
    {"<user@>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@-x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@x-.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@x..y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@x.y.>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@.x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<user@x_y.z>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* address literals */
    {"<a@[192.0.2.256]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[192.0.2]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[192.0.2.1 ]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[IPv6:2001:db8:::1]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[IPv6:zz::1]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[IPv6:192.0.2.1]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[IPv6:]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[x-tag:content]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[192.0.2.1>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[]>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<a@[1.2.3.4]x>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* source routes */
    {"<@a,@b user@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<@a,:user@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<@a:>", 0, false, F_NULL, SYN, NULL, NULL, 0, false, false, false},
    {"<@-a:user@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<@[1.2.3.4]:user@x.y>", 0, false, 0, SYN, NULL, NULL, 0, false, false, false},
    /* lengths exactly at and one past each limit (RFC 5321 §4.5.3.1) */
    {"<%64a@x.y>", 0, true, 0, OK, "%64a", "x.y", 0, false, false, false},
    {"<%65a@x.y>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    {"<\"%62q\"@x.y>", 0, true, 0, OK, "\"%62q\"", "x.y", 0, false, false, false},
    {"<\"%63q\"@x.y>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    {"<a@%63b.y>", 0, true, 0, OK, "a", "%63b.y", 0, false, false, false},
    {"<a@%64b.y>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    {"<@%64r:a@b.y>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    /* whole path: 1 + 64 + 1 + 189 + 1 = 256 */
    {"<%64a@%63b.%63c.%61d>", 0, true, 0, OK, "%64a", "%63b.%63c.%61d", 0, false, false, false},
    {"<%64a@%63b.%63c.%62d>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    {"<@%60r:a@b.c>", 0, true, 0, OK, "a", "b.c", 0, false, false, false},
    {"<@%63r,@%63r,@%63r,@%63r:a@b.c>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    /* domain 256 octets (five labels), too long on its own */
    {"<a@%63b.%63c.%63d.%62e.f>", 0, true, 0, LEN, NULL, NULL, 0, false, false, false},
    /* precedence: syntax before length, UTF-8 before length */
    {"<%70a@-x>", 0, true, 0, SYN, NULL, NULL, 0, false, false, false},
    {"<%70a\xc3\xa9@x.y>", 0, true, 0, U8, NULL, NULL, 0, false, false, false},
    {"<%70a\xc3\xa9@x.y>", 0, true, F_UTF8, LEN, NULL, NULL, 0, false, false, false},
};

static void test_path_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(path_cases); i++) {
		const struct path_case *tc = &path_cases[i];
		char in[1024], local[1024] = "", domain[1024] = "";
		struct mail_addr a;
		const char *error = NULL;
		size_t consumed = 99, len;
		int rc;

		if (tc->expand) {
			len = test_expand(tc->in, in, sizeof(in));
			if (tc->local != NULL) {
				test_expand(tc->local, local, sizeof(local));
				test_expand(tc->domain, domain, sizeof(domain));
			}
		} else {
			len = tc->len != 0 ? tc->len : strlen(tc->in);
			memcpy(in, tc->in, len);
			if (tc->local != NULL) {
				snprintf(local, sizeof(local), "%s", tc->local);
				snprintf(domain, sizeof(domain), "%s", tc->domain);
			}
		}
		rc = mail_addr_parse_path(in, len, tc->flags, &a, &consumed, &error);
		if (rc != tc->rc)
			fail_msg("case %zu \"%s\": rc %d, want %d (%s)", i, tc->in, rc, tc->rc,
			         error != NULL ? error : "-");
		if (rc != 0) {
			if (error == NULL || consumed != 0)
				fail_msg("case %zu: error not set or consumed %zu", i, consumed);
			continue;
		}
		if (consumed != (tc->consumed != 0 ? tc->consumed : len))
			fail_msg("case %zu: consumed %zu", i, consumed);
		if (strcmp(a.local, local) != 0 || strcmp(a.domain, domain) != 0)
			fail_msg("case %zu: got <%s>@<%s>", i, a.local, a.domain);
		if (a.is_null != tc->is_null || a.is_postmaster != tc->is_postmaster ||
		    a.is_utf8 != tc->is_utf8)
			fail_msg("case %zu: flags null=%d pm=%d utf8=%d", i, a.is_null,
			         a.is_postmaster, a.is_utf8);
	}
}

/* A U-label longer than 63 octets is accepted; an ASCII one is not. */
static void test_path_ulabel(void **state)
{
	char in[300];
	size_t o = 0;
	struct mail_addr a;
	size_t consumed;

	(void)state;
	memcpy(in + o, "<a@", 3);
	o += 3;
	for (int k = 0; k < 40; k++) {
		in[o++] = '\xc3';
		in[o++] = '\xa9';
	}
	memcpy(in + o, ".y>", 3);
	o += 3;
	assert_int_equal(mail_addr_parse_path(in, o, F_UTF8, &a, &consumed, NULL), 0);
	assert_int_equal(consumed, o);
	assert_int_equal(strlen(a.domain), 82);
	assert_true(a.is_utf8);
	/* NULL consumed_r / error_r are tolerated */
	assert_int_equal(mail_addr_parse_path("<x", 2, 0, &a, NULL, NULL), SYN);
}

struct format_case {
	const char *in;
	unsigned flags;
	size_t outlen;
	int rc;
	const char *out;
};

static const struct format_case format_cases[] = {
    {"<User@Example.COM>", 0, 64, 16, "User@example.com"},
    {"<User@Example.COM>", 0, 17, 16, "User@example.com"},
    {"<User@Example.COM>", 0, 16, -1, NULL},
    {"<>", F_NULL, 1, 0, ""},
    {"<>", F_NULL, 0, -1, NULL},
    {"<postmaster>", F_PM, 11, 10, "postmaster"},
    {"<postmaster>", F_PM, 10, -1, NULL},
    {"<\"a b\"@[192.0.2.1]>", 0, 64, 17, "\"a b\"@[192.0.2.1]"},
    {"<@r.example:j@x.y>", 0, 64, 5, "j@x.y"},
};

static void test_format_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(format_cases); i++) {
		const struct format_case *tc = &format_cases[i];
		struct mail_addr a;
		char out[64];
		int rc;

		assert_int_equal(
		    mail_addr_parse_path(tc->in, strlen(tc->in), tc->flags, &a, NULL, NULL), 0);
		memset(out, 'X', sizeof(out));
		rc = mail_addr_format(&a, out, tc->outlen);
		if (rc != tc->rc)
			fail_msg("case %zu: rc %d want %d", i, rc, tc->rc);
		if (rc >= 0 && strcmp(out, tc->out) != 0)
			fail_msg("case %zu: got \"%s\"", i, out);
	}
}

struct xtext_case {
	const char *in;
	bool valid;
};

static const struct xtext_case xtext_cases[] = {
    {"", true},
    {"abc", true},
    {"QQ314159", true},
    {"a+2Bb", true},
    {"a+2bb", true},
    {"+3D", true},
    {"!\"#$%&'()*,-./:;<>?@[\\]^_`{|}~", true},
    {"a+b", false},
    {"a+", false},
    {"a+2", false},
    {"a+2G", false},
    {"a=b", false},
    {"a b", false},
    {"a\x7f", false},
    {"\xc3\xa9", false},
    {"tab\t", false},
};

static void test_xtext_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(xtext_cases); i++) {
		bool v = mail_xtext_valid(xtext_cases[i].in, strlen(xtext_cases[i].in));

		if (v != xtext_cases[i].valid)
			fail_msg("case %zu \"%s\": got %d", i, xtext_cases[i].in, v);
	}
}

/* Hex digits after "+" become upper case; nothing else changes. */
static void test_xtext_canon(void **state)
{
	(void)state;
	static const struct {
		const char *in, *want;
	} cases[] = {
	    {"", ""},
	    {"abc", "abc"},
	    {"a+2bb", "a+2Bb"},
	    {"+3d+2b+ff+AF", "+3D+2B+FF+AF"},
	    {"rfc822;carol+2btag@example.net", "rfc822;carol+2Btag@example.net"},
	    {"caf\xc3\xa9+2b", "caf\xc3\xa9+2B"},
	};
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		char buf[64];
		snprintf(buf, sizeof(buf), "%s", cases[i].in);
		mail_xtext_canon(buf);
		assert_string_equal(buf, cases[i].want);
	}
}

struct utf8_case {
	const char *in;
	size_t len;
	size_t want;
};

static const struct utf8_case utf8_cases[] = {
    {"a", 1, 1},
    {"\0", 1, 1},
    {"", 0, 0},
    {"\xc2\x80", 2, 2},
    {"\xdf\xbf", 2, 2},
    {"\xc1\xbf", 2, 0},         /* overlong */
    {"\xc2", 1, 0},             /* truncated */
    {"\xc2\x41", 2, 0},         /* bad continuation */
    {"\xe0\xa0\x80", 3, 3},     /* U+0800 */
    {"\xe0\x9f\xbf", 3, 0},     /* overlong */
    {"\xed\x9f\xbf", 3, 3},     /* U+D7FF */
    {"\xed\xa0\x80", 3, 0},     /* surrogate U+D800 */
    {"\xed\xbf\xbf", 3, 0},     /* surrogate U+DFFF */
    {"\xef\xbf\xbf", 3, 3},     /* U+FFFF */
    {"\xe2\x82", 2, 0},         /* truncated */
    {"\xf0\x90\x80\x80", 4, 4}, /* U+10000 */
    {"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong */
    {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
    {"\xf4\x90\x80\x80", 4, 0}, /* U+110000 */
    {"\xf5\x80\x80\x80", 4, 0},
    {"\xff", 1, 0},
    {"\x80", 1, 0},
    {"\xf0\x9f\x98", 3, 0},
    {"\xf0\x9f\x98\x41", 4, 0},
};

static void test_utf8_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(utf8_cases); i++) {
		size_t n = mail_utf8_char_len(utf8_cases[i].in, utf8_cases[i].len);

		if (n != utf8_cases[i].want)
			fail_msg("case %zu: got %zu want %zu", i, n, utf8_cases[i].want);
	}
}

/* mail_helo_domain_valid: what the Received field may name after "from". */
static const struct {
	const char *in;
	bool utf8;
	bool want;
} helo_cases[] = {
    {"mail.example.org", false, true},
    {"localhost", false, true},
    {"[192.0.2.1]", false, true},
    {"[IPv6:2001:db8::1]", false, true},
    {"[IPv6:nonsense]", false, false},
    {"[192.0.2.256]", false, false},
    {"[tag:content]", false, false},
    {"a;b", false, false},
    {"a(b)c", false, false},
    {"-lead.example", false, false},
    {"trail-.example", false, false},
    {"a..b", false, false},
    {"a.", false, false},
    {"", false, false},
    {"\xc3\xa9t\xc3\xa9.example", false, false},
    {"\xc3\xa9t\xc3\xa9.example", true, true},
    {"h\xc2\x9bx.example", true, false}, /* U+009B: C1 control */
    {"h\xc2\xa0x.example", true, true},  /* U+00A0 is not C1 */
    {"h\x1bx.example", true, false},
    {"h\xffx.example", true, false},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", false,
     false}, /* a 64-octet label */
};

static void test_helo_domain_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(helo_cases); i++) {
		const char *in = helo_cases[i].in;
		bool got = mail_helo_domain_valid(in, strlen(in), helo_cases[i].utf8);
		if (got != helo_cases[i].want)
			fail_msg("case %zu (%s): got %d want %d", i, in, got, helo_cases[i].want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_path_table),   cmocka_unit_test(test_path_ulabel),
	    cmocka_unit_test(test_format_table), cmocka_unit_test(test_xtext_table),
	    cmocka_unit_test(test_xtext_canon),
	    cmocka_unit_test(test_utf8_table),
	    cmocka_unit_test(test_helo_domain_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
