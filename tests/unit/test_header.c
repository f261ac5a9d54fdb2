/* test_header.c — unit tests for the RFC 5322 header field helpers
 * (mail/header.c): walking fields, the authserv-id of
 * Authentication-Results, the author domain of From. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mail/header.h"

#include <string.h>

static void test_hdr_next(void **state)
{
	(void)state;
	const char *h = "From: a@b.example\r\n"
	                "Subject: one\r\n two\r\n\tthree\r\n"
	                "not a field\r\n"
	                "X-Sp  : v\r\n"
	                "Last: no crlf";
	struct mail_hdr_field f;
	size_t pos = 0, len = strlen(h);
	assert_true(mail_hdr_next(h, len, &pos, &f));
	assert_true(mail_hdr_name_is(&f, "from"));
	assert_int_equal(f.value_len, strlen(" a@b.example"));
	assert_int_equal(f.off, 0);
	assert_int_equal(f.len, strlen("From: a@b.example\r\n"));
	assert_true(mail_hdr_next(h, len, &pos, &f));
	assert_true(mail_hdr_name_is(&f, "SUBJECT"));
	assert_int_equal(f.value_len, strlen(" one\r\n two\r\n\tthree"));
	assert_true(mail_hdr_next(h, len, &pos, &f));
	assert_int_equal(f.name_len, 0); /* no colon */
	assert_true(mail_hdr_next(h, len, &pos, &f));
	assert_true(mail_hdr_name_is(&f, "x-sp")); /* WSP before the colon */
	assert_true(mail_hdr_next(h, len, &pos, &f));
	assert_true(mail_hdr_name_is(&f, "last"));
	assert_int_equal(f.value_len, strlen(" no crlf"));
	assert_false(mail_hdr_next(h, len, &pos, &f));
	pos = 0;
	assert_false(mail_hdr_next("", 0, &pos, &f));
}

static void test_hdr_ar_id(void **state)
{
	(void)state;
	static const struct {
		const char *v;
		const char *id; /* NULL: none */
	} cases[] = {
	    {" mx.example.org; spf=pass", "mx.example.org"},
	    {" MX.Example.ORG 1; none", "MX.Example.ORG"},
	    {" (comment (nested)) mx.example.org;", "mx.example.org"},
	    {"\r\n\tmx.example.org;\r\n\tdkim=pass", "mx.example.org"},
	    {" \"mx.example.org\"; none", "mx.example.org"},
	    {" mx.example.org", "mx.example.org"},
	    {" ;spf=pass", NULL},
	    {"", NULL},
	    {" (unclosed", NULL},
	    {" \"unclosed", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *id;
		size_t n;
		int rc = mail_hdr_ar_authserv_id(cases[i].v, strlen(cases[i].v), &id, &n);
		if (cases[i].id == NULL) {
			assert_int_equal(rc, -1);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(n, strlen(cases[i].id));
		assert_memory_equal(id, cases[i].id, n);
	}
}

static void test_hdr_from_domain(void **state)
{
	(void)state;
	static const struct {
		const char *v;
		int rc;
		const char *dom;
	} cases[] = {
	    {" alice@Example.COM", 0, "example.com"},
	    {" Alice <alice@example.com>", 0, "example.com"},
	    {" \"Doe, John\" <john@example.com>", 0, "example.com"},
	    {" \"x@evil.example\" <john@example.com>", 0, "example.com"},
	    {" john@example.com (John <john@evil.example>)", 0, "example.com"},
	    {" <john@example.com.>", 0, "example.com"},
	    {"\r\n\tJohn\r\n <john@sub.example.com>", 0, "sub.example.com"},
	    {" \"a@b\"@example.com", 0, "example.com"},
	    {" a@example.com, b@example.com", 0, "example.com"},
	    {" a@example.com, b@other.example", MAIL_HDR_FROM_MULTI, ""},
	    {" a@example.com,", 0, "example.com"},
	    {"", MAIL_HDR_FROM_BAD, ""},
	    {" John Doe", MAIL_HDR_FROM_BAD, ""},
	    {" <>", MAIL_HDR_FROM_BAD, ""},
	    {" group: a@example.com;", MAIL_HDR_FROM_BAD, ""},
	    {" a@[192.0.2.1]", MAIL_HDR_FROM_BAD, ""},
	    {" <a@example.com", MAIL_HDR_FROM_BAD, ""},
	    {" a@example.com>", MAIL_HDR_FROM_BAD, ""},
	    {" <a@example.com> junk", MAIL_HDR_FROM_BAD, ""},
	    {" a@exa mple.com", MAIL_HDR_FROM_BAD, ""},
	    {" a@.example.com", MAIL_HDR_FROM_BAD, ""},
	    {" a@example..com", MAIL_HDR_FROM_BAD, ""},
	    {" a@example.com..", MAIL_HDR_FROM_BAD, ""},
	    {" \"unclosed@example.com", MAIL_HDR_FROM_BAD, ""},
	    {" (unclosed a@example.com", MAIL_HDR_FROM_BAD, ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[256];
		int rc = mail_hdr_from_domain(cases[i].v, strlen(cases[i].v), out, sizeof(out));
		if (rc != cases[i].rc || strcmp(out, cases[i].dom) != 0)
			fail_msg("case %zu \"%s\": rc %d \"%s\"", i, cases[i].v, rc, out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hdr_next),
	    cmocka_unit_test(test_hdr_ar_id),
	    cmocka_unit_test(test_hdr_from_domain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
