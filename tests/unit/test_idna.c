/* test_idna.c — U-label to A-label conversion (mail/idna.c, RFC 5890/5891)
 * and its use by the address parser, the configuration and the users file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf/aliases.h"
#include "conf/conf.h"
#include "auth/users.h"
#include "mail/address.h"
#include "mail/idna.h"

struct idna_case {
	const char *in;
	int ret;
	const char *want;
};

static void test_to_ascii(void **state)
{
	(void)state;
	static const struct idna_case cases[] = {
	    {"example.org", 0, "example.org"},
	    {"Example.ORG", 0, "example.org"},           /* ASCII: only lowercased */
	    {"xn--fsqu00a.test", 0, "xn--fsqu00a.test"}, /* A-labels pass as they are */
	    {"例子.test", 0, "xn--fsqu00a.test"},
	    {"例子.TEST", 0, "xn--fsqu00a.test"},
	    {"bücher.example", 0, "xn--bcher-kva.example"},
	    {"BÜCHER.example", 0, "xn--bcher-kva.example"}, /* UTS #46 maps case */
	    {"faß.de", 0, "xn--fa-hia.de"},                 /* non-transitional: ß kept */
	    {"☃.test", -1, NULL},                           /* symbol: DISALLOWED */
	    {"a\xcc\x81"
	     "b.test",
	     0, "xn--b-tfa.test"}, /* NFC first: á */
	    {"\xcc\x81"
	     "a.test",
	     -1, NULL}, /* label starts with a mark */
	    {"\xd7\x90"
	     "a.test",
	     -1, NULL}, /* RFC 5893 bidi rule */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[MAIL_IDNA_MAX + 1];
		const char *error = NULL;
		int rc = mail_domain_to_ascii(cases[i].in, strlen(cases[i].in), out, sizeof(out),
		                              &error);
		if (rc != cases[i].ret)
			fail_msg("case %zu \"%s\": got %d (%s)", i, cases[i].in, rc,
			         error != NULL ? error : "");
		if (rc == 0)
			assert_string_equal(out, cases[i].want);
		else
			assert_non_null(error);
	}
}

static void test_to_ascii_bounds(void **state)
{
	(void)state;
	char out[MAIL_IDNA_MAX + 1], in[4 * MAIL_IDNA_MAX + 8];
	const char *error = NULL;

	/* too small an output, an embedded NUL */
	assert_int_equal(mail_domain_to_ascii("example.org", 11, out, 5, &error), -1);
	assert_int_equal(mail_domain_to_ascii("a\0b", 3, out, sizeof(out), &error), -1);
	/* a U-label whose A-label exceeds 63 octets */
	size_t n = 0;
	for (int i = 0; i < 60; i++) {
		memcpy(in + n, "ü", 2);
		n += 2;
	}
	memcpy(in + n, ".test", 5);
	n += 5;
	assert_int_equal(mail_domain_to_ascii(in, n, out, sizeof(out), &error), -1);
	/* an input longer than any name that fits, refused before libidn2 */
	memset(in, 0xe4, sizeof(in));
	assert_int_equal(mail_domain_to_ascii(in, sizeof(in), out, sizeof(out), &error), -1);
}

static void test_domain_eq(void **state)
{
	(void)state;
	assert_true(mail_domain_eq("例子.test", "xn--fsqu00a.test"));
	assert_true(mail_domain_eq("XN--FSQU00A.test", "例子.test"));
	assert_true(mail_domain_eq("bücher.example", "BÜCHER.example"));
	assert_false(mail_domain_eq("例子.test", "例子.example"));
	assert_false(mail_domain_eq("☃.test", "☃.test")); /* no A-label: equals nothing */
}

static void test_parse_path(void **state)
{
	(void)state;
	struct mail_addr a;
	const char *error = NULL;
	const char *ok = "<用户@例子.test>";
	assert_int_equal(mail_addr_parse_path(ok, strlen(ok), MAIL_ADDR_ALLOW_UTF8, &a, NULL, NULL),
	                 0);
	assert_string_equal(a.domain, "例子.test"); /* kept as written */
	assert_string_equal(a.domain_ascii, "xn--fsqu00a.test");
	const char *ascii = "<Bob@Example.ORG>";
	assert_int_equal(mail_addr_parse_path(ascii, strlen(ascii), 0, &a, NULL, NULL), 0);
	assert_string_equal(a.domain_ascii, "example.org");
	const char *lit = "<bob@[127.0.0.1]>";
	assert_int_equal(mail_addr_parse_path(lit, strlen(lit), 0, &a, NULL, NULL), 0);
	assert_string_equal(a.domain_ascii, "[127.0.0.1]");
	const char *bad = "<bob@☃.test>";
	assert_int_equal(
	    mail_addr_parse_path(bad, strlen(bad), MAIL_ADDR_ALLOW_UTF8, &a, NULL, &error),
	    MAIL_ADDR_ERR_IDNA);
	assert_non_null(error);
	/* without SMTPUTF8 the UTF-8 refusal comes first (553 5.6.7) */
	assert_int_equal(mail_addr_parse_path(bad, strlen(bad), 0, &a, NULL, NULL),
	                 MAIL_ADDR_ERR_UTF8);
}

static char *write_temp(const char *text)
{
	char *path = strdup("/tmp/hk-test-idna-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

static void test_conf_domains(void **state)
{
	(void)state;
	char err[512];
	struct conf *conf = NULL;
	char *path =
	    write_temp("listen: [{address: \"127.0.0.1:2525\", tls: none}]\n"
	               "local_domains: [例子.test, xn--bcher-kva.example]\n"
	               "routes:\n"
	               "  - {domain: ÉCOLE.test, transport: relay, address: \"127.0.0.1:25\"}\n");
	int rc = conf_load(path, &conf, err, sizeof(err));
	unlink(path);
	free(path);
	if (rc < 0)
		fail_msg("%s", err);
	assert_string_equal(conf->local_domains[0], "xn--fsqu00a.test");
	assert_true(conf_is_local_domain(conf, "例子.test"));
	assert_true(conf_is_local_domain(conf, "XN--FSQU00A.test"));
	assert_true(conf_is_local_domain(conf, "bücher.example"));
	assert_false(conf_is_local_domain(conf, "☃.test"));
	const struct conf_route *r = conf_route_for(conf, "école.test");
	assert_int_equal(r->transport, CONF_TRANSPORT_RELAY);
	assert_string_equal(r->domain, "xn--cole-9oa.test");
	assert_int_equal(conf_route_for(conf, "例子.test")->transport, CONF_TRANSPORT_LOCAL);
	conf_free(&conf);

	path = write_temp(
	    "listen: [{address: \"127.0.0.1:2525\", tls: none}]\nlocal_domains: [☃.test]\n");
	assert_int_equal(conf_load(path, &conf, err, sizeof(err)), -1);
	unlink(path);
	free(path);
	assert_non_null(strstr(err, "invalid domain"));
}

static void test_users_either_form(void **state)
{
	(void)state;
	char err[512];
	struct users *u = NULL;
	char *path = write_temp("用户@例子.test:{PLAIN}x\nbob@xn--bcher-kva.example\n");
	int rc = users_load(path, &u, err, sizeof(err));
	unlink(path);
	free(path);
	if (rc < 0)
		fail_msg("%s", err);
	assert_true(users_exists(u, "用户", "例子.test"));
	assert_true(users_exists(u, "用户", "xn--fsqu00a.test"));
	assert_true(users_exists(u, "bob", "BÜCHER.example"));
	assert_false(users_exists(u, "bob", "例子.test"));
	assert_non_null(users_secret(u, "用户@XN--FSQU00A.TEST"));
	users_free(&u);
}

static void test_aliases_either_form(void **state)
{
	(void)state;
	char err[512];
	struct aliases *a = NULL;
	char *path = write_temp("info@例子.test: bob@example.org\n"
	                        "@xn--bcher-kva.example: shop@example.org\n");
	int rc = aliases_load(path, &a, err, sizeof(err));
	unlink(path);
	free(path);
	if (rc < 0)
		fail_msg("%s", err);
	assert_true(aliases_has_exact(a, "info@xn--fsqu00a.test"));
	assert_true(aliases_has_exact(a, "INFO+tag@例子.TEST"));
	assert_true(aliases_has(a, "anyone@bücher.example"));
	assert_false(aliases_has(a, "anyone@例子.test"));
	aliases_free(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_to_ascii),
	    cmocka_unit_test(test_to_ascii_bounds),
	    cmocka_unit_test(test_domain_eq),
	    cmocka_unit_test(test_parse_path),
	    cmocka_unit_test(test_conf_domains),
	    cmocka_unit_test(test_users_either_form),
	    cmocka_unit_test(test_aliases_either_form),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
