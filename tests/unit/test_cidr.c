/* test_cidr.c — network lists and the access file parser (src/lib/cidr.c):
 * prefixes at their bounds, host bits, IPv4-mapped clients, longest prefix
 * and deny-wins at equal prefixes, every access file error with its line,
 * and the DNS list answer codes (addresses, networks, masks). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "lib/cidr.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static struct sockaddr_storage sa_of(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

static void test_parse(void **state)
{
	static const struct {
		const char *in;
		int ok;
		unsigned prefix;
	} cases[] = {
	    {"192.0.2.0/24", 1, 24},
	    {"192.0.2.1", 1, 32},
	    {"0.0.0.0/0", 1, 0},
	    {"192.0.2.1/32", 1, 32},
	    {"192.0.2.0/33", 0, 0},
	    {"192.0.2.1/24", 0, 0},
	    {"2001:db8::/32", 1, 32},
	    {"::1", 1, 128},
	    {"2001:db8::/129", 0, 0},
	    {"2001:db8::1/64", 0, 0},
	    {"", 0, 0},
	    {"/24", 0, 0},
	    {"192.0.2.0/", 0, 0},
	    {"192.0.2.0/-1", 0, 0},
	    {"example.org", 0, 0},
	    {"192.0.2.0/24x", 0, 0},
	    {"1.2.3", 0, 0},
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct cidr_net net;
		const char *error = NULL;
		int rc = cidr_parse(cases[i].in, strlen(cases[i].in), &net, &error);
		if (cases[i].ok) {
			assert_int_equal(rc, 0);
			assert_int_equal(net.prefix, cases[i].prefix);
		} else {
			assert_int_equal(rc, -1);
			assert_non_null(error);
		}
	}
}

static void add(struct cidr_list *l, const char *net, bool allow, const char *reason)
{
	struct cidr_net n;
	const char *error;
	assert_int_equal(cidr_parse(net, strlen(net), &n, &error), 0);
	assert_int_equal(cidr_list_add(l, &n, allow, reason), 0);
}

static const char *verdict(const struct cidr_list *l, const char *addr)
{
	struct sockaddr_storage ss = sa_of(addr);
	const struct cidr_entry *e = cidr_list_lookup(l, (const struct sockaddr *)&ss);
	if (e == NULL)
		return "none";
	return e->allow ? "allow" : (e->reason != NULL ? e->reason : "deny");
}

static void test_lookup(void **state)
{
	struct cidr_list l = {0};
	(void)state;
	add(&l, "10.0.0.0/8", false, "ten");
	add(&l, "10.1.0.0/16", true, NULL);
	add(&l, "10.1.2.3", false, "host");
	add(&l, "192.0.2.0/24", true, NULL);
	add(&l, "192.0.2.0/24", false, "tie");
	add(&l, "2001:db8::/32", false, "v6");
	add(&l, "2001:db8:1::/48", true, NULL);
	assert_string_equal(verdict(&l, "10.9.9.9"), "ten");
	assert_string_equal(verdict(&l, "10.1.9.9"), "allow");
	assert_string_equal(verdict(&l, "10.1.2.3"), "host");
	assert_string_equal(verdict(&l, "11.0.0.1"), "none");
	assert_string_equal(verdict(&l, "192.0.2.77"), "tie"); /* deny wins a tie */
	assert_string_equal(verdict(&l, "2001:db8:2::1"), "v6");
	assert_string_equal(verdict(&l, "2001:db8:1::1"), "allow");
	assert_string_equal(verdict(&l, "2001:db9::1"), "none");
	/* a dual-stack socket's IPv4 client */
	assert_string_equal(verdict(&l, "::ffff:10.1.2.3"), "host");
	/* an IPv4 network never matches an IPv6 address of the same octets */
	assert_string_equal(verdict(&l, "a00::1"), "none");
	cidr_list_clear(&l);
	assert_int_equal(l.n, 0);
}

static void test_access_file(void **state)
{
	static const struct {
		const char *in;
		const char *error; /* NULL: parses */
		size_t n;
	} cases[] = {
	    {"", NULL, 0},
	    {"# only a comment\n\n   \n", NULL, 0},
	    {"allow 192.0.2.0/24\r\ndeny 198.51.100.7 go away\n", NULL, 2},
	    {"\tdeny\t2001:db8::/32\t  spaced reason  ", NULL, 1},
	    {"permit 192.0.2.0/24\n", "line 1: expected", 0},
	    {"allow 192.0.2.0/24\ndeny\n", "line 2: a network is missing", 1},
	    {"deny 192.0.2.1/24\n", "line 1: address has bits set", 0},
	    {"allow 192.0.2.0/24 why\n", "line 1: an allow line takes no reason", 0},
	    {"deny 192.0.2.0/24 caf\xc3\xa9\n", "line 1: reason must be printable", 0},
	    {"deny 192.0.2.0/24 a\rb\n", "line 1: reason must be printable", 0},
	    {"\n\ndeny 300.0.0.1\n", "line 3: expected a.b.c.d", 0},
	};
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		struct cidr_list l = {0};
		char err[128] = "";
		int rc =
		    cidr_list_parse_access(&l, cases[i].in, strlen(cases[i].in), err, sizeof(err));
		if (cases[i].error == NULL) {
			assert_int_equal(rc, 0);
		} else {
			assert_int_equal(rc, -1);
			if (strncmp(err, cases[i].error, strlen(cases[i].error)) != 0)
				fail_msg("case %zu: %s", i, err);
		}
		assert_int_equal(l.n, cases[i].n);
		cidr_list_clear(&l);
	}
	struct cidr_list l = {0};
	char err[128];
	const char *t = "deny 198.51.100.0/24   spam  source \n";
	assert_int_equal(cidr_list_parse_access(&l, t, strlen(t), err, sizeof(err)), 0);
	assert_string_equal(verdict(&l, "198.51.100.9"), "spam  source");
	cidr_list_clear(&l);
	/* NUL and over-long lines */
	char nul[] = "deny 192.0.2.0/24\0x\n";
	assert_int_equal(cidr_list_parse_access(&l, nul, sizeof(nul) - 1, err, sizeof(err)), -1);
	cidr_list_clear(&l);
	char *long_line = malloc(2000);
	memset(long_line, '#', 1999);
	long_line[1999] = '\0';
	assert_int_equal(cidr_list_parse_access(&l, long_line, 1999, err, sizeof(err)), -1);
	assert_string_equal(err, "line 1: line too long (1024 octets at most)");
	free(long_line);
	cidr_list_clear(&l);
}

static bool code_matches(const char *codes, const char *answer)
{
	struct cidr_codes c;
	const char *error = NULL;
	unsigned char a[4];
	assert_int_equal(cidr_codes_parse(codes, &c, &error), 0);
	assert_int_equal(inet_pton(AF_INET, answer, a), 1);
	return cidr_codes_match(&c, a);
}

static void test_codes(void **state)
{
	(void)state;
	assert_true(code_matches("", "127.0.0.2"));
	assert_true(code_matches("", "127.0.0.255"));
	assert_false(code_matches("", "127.255.255.254"));
	assert_false(code_matches("", "10.0.0.2"));
	assert_true(code_matches("127.0.0.2, 127.0.0.4/30", "127.0.0.6"));
	assert_false(code_matches("127.0.0.2, 127.0.0.4/30", "127.0.0.3"));
	assert_true(code_matches("&0.0.0.4", "127.0.0.6"));
	assert_false(code_matches("&0.0.0.4", "127.0.0.3"));
	assert_false(code_matches("&0.0.0.4", "10.0.0.4")); /* masks only in 127/8 */
	static const char *const bad[] = {"127.0.0.2,",          ",127.0.0.2", "&0.0.0.0",    "::1",
	                                  "127.0.0.2 127.0.0.3", "&x",         "127.0.0.0/33"};
	for (size_t i = 0; i < N_ELEMENTS(bad); i++) {
		struct cidr_codes c;
		const char *error = NULL;
		if (cidr_codes_parse(bad[i], &c, &error) != -1 || error == NULL)
			fail_msg("accepted \"%s\"", bad[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_lookup),
	    cmocka_unit_test(test_access_file),
	    cmocka_unit_test(test_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
