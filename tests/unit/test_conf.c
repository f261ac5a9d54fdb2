/* test_conf.c — table-driven tests of the configuration loader
 * (src/conf/conf.c: embedded default, every key, dump round trip, error
 * positions, sizes and durations, operator warnings, reference) and of the
 * users file (src/conf/users.c: valid and invalid lines, lookups).
 * Hermetic: every file lives in a private mkdtemp() directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/users.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static char test_dir[256];

static int test_dir_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	snprintf(test_dir, sizeof(test_dir), "%s/hk-conf-XXXXXX",
	         tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
	return mkdtemp(test_dir) != NULL ? 0 : -1;
}

static int test_dir_teardown(void **state)
{
	const char *names[] = {"t.yaml", "full.yaml", "dump.yaml", "users", "empty"};
	char path[512];

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(names); i++) {
		snprintf(path, sizeof(path), "%s/%s", test_dir, names[i]);
		unlink(path);
	}
	return rmdir(test_dir);
}

/* Write text (len bytes) to test_dir/name; returns the path in out. */
static const char *test_file_write(const char *name, const char *text, size_t len, char *out,
                                   size_t outlen)
{
	snprintf(out, outlen, "%s/%s", test_dir, name);
	FILE *f = fopen(out, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	return out;
}

/* --- the embedded default ------------------------------------------------ */

struct u64_case {
	const char *name;
	size_t off; /* offsetof(struct conf, ...) of a uint64_t */
	uint64_t want;
};

#define U64(field, v)                                                                              \
	{                                                                                          \
#field, offsetof(struct conf, field), v                                            \
	}

/* Production defaults of every number (the embedded default sets none). */
static const struct u64_case default_numbers[] = {
    U64(limits.command_line, 512),
    U64(limits.text_line, 1000),
    U64(limits.message_size, 25 * 1024 * 1024),
    U64(limits.recipients, 100),
    U64(limits.errors, 20),
    U64(limits.header_size, 100 * 1024),
    U64(limits.received_hops, 50),
    U64(limits.connections, 1000),
    U64(limits.connections_per_ip, 50),
    U64(timeouts.command, 5 * 60 * 1000),
    U64(timeouts.data, 5 * 60 * 1000),
    U64(timeouts.session, 30 * 60 * 1000),
    U64(queue.commit_threads, 4),
    U64(queue.delivery_threads, 4),
    U64(queue.retry_min, 5 * 60 * 1000),
    U64(queue.retry_max, 60 * 60 * 1000),
};

static uint64_t conf_u64(const struct conf *c, size_t off)
{
	uint64_t v;
	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

static void test_embedded_default(void **state)
{
	struct conf *c = NULL;
	char err[512];

	(void)state;
	assert_int_equal(conf_load(NULL, &c, err, sizeof(err)), 0);
	assert_non_null(c);
	assert_string_equal(c->file, "(embedded default)");
	assert_int_equal(c->n_listeners, 1);
	assert_string_equal(c->listeners[0].address, "127.0.0.1:2525");
	assert_string_equal(c->spool_dir, "./var/spool");
	assert_string_equal(c->maildir_root, "./var/mail");
	assert_int_equal(c->n_local_domains, 1);
	assert_string_equal(c->local_domains[0], "localhost");
	assert_true(c->accept_any_user);
	assert_string_equal(c->user, "");
	assert_string_equal(c->users_file, "");
	assert_string_equal(c->log_level, "info");
	assert_true(c->hostname != NULL && c->hostname[0] != '\0');
	for (size_t i = 0; i < N_ELEMENTS(default_numbers); i++) {
		const struct u64_case *t = &default_numbers[i];
		if (conf_u64(c, t->off) != t->want)
			fail_msg("%s: got %llu want %llu", t->name,
			         (unsigned long long)conf_u64(c, t->off),
			         (unsigned long long)t->want);
	}
	conf_free(&c);
	assert_null(c);
	conf_free(&c); /* NULL is fine */
}

/* --- every key, and the dump round trip ---------------------------------- */

static const char full_yaml[] = "hostname: mx.example.org\n"
                                "user: hikyaku\n"
                                "log_level: debug\n"
                                "spool_dir: /srv/spool\n"
                                "maildir_root: \"/srv/mail \\\"q\\\" \\x81\\t\\u00e9\\U0001F600\"\n"
                                "users_file: /etc/hikyaku/users\n"
                                "accept_any_user: false\n"
                                "local_domains: [Example.ORG, example.net]\n"
                                "listen:\n"
                                "  - \"*:25\"\n"
                                "  - address: \"[::1]:587\"\n"
                                "  - 192.0.2.1:2525\n"
                                "limits:\n"
                                "  command_line: 1024\n"
                                "  text_line: 2000\n"
                                "  message_size: 50M\n"
                                "  recipients: 500\n"
                                "  errors: 7\n"
                                "  header_size: 1M\n"
                                "  received_hops: 30\n"
                                "  connections: 300\n"
                                "  connections_per_ip: 3\n"
                                "timeouts:\n"
                                "  command: 90s\n"
                                "  data: 10m\n"
                                "  session: 2h\n"
                                "queue:\n"
                                "  commit_threads: 2\n"
                                "  delivery_threads: 8\n"
                                "  retry_min: 1m\n"
                                "  retry_max: 2d\n";

static const struct u64_case full_numbers[] = {
    U64(limits.command_line, 1024),
    U64(limits.text_line, 2000),
    U64(limits.message_size, 50 * 1024 * 1024),
    U64(limits.recipients, 500),
    U64(limits.errors, 7),
    U64(limits.header_size, 1024 * 1024),
    U64(limits.received_hops, 30),
    U64(limits.connections, 300),
    U64(limits.connections_per_ip, 3),
    U64(timeouts.command, 90 * 1000),
    U64(timeouts.data, 10 * 60 * 1000),
    U64(timeouts.session, 2 * 3600 * 1000),
    U64(queue.commit_threads, 2),
    U64(queue.delivery_threads, 8),
    U64(queue.retry_min, 60 * 1000),
    U64(queue.retry_max, 2ULL * 86400 * 1000),
};

struct str_case {
	const char *name;
	size_t off; /* offsetof(struct conf, ...) of a char * */
	const char *want;
};

#define STR(field, v)                                                                              \
	{                                                                                          \
#field, offsetof(struct conf, field), v                                            \
	}

static const struct str_case full_strings[] = {
    STR(hostname, "mx.example.org"),
    STR(user, "hikyaku"),
    STR(log_level, "debug"),
    STR(spool_dir, "/srv/spool"),
    STR(maildir_root, "/srv/mail \"q\" \xc2\x81\t\xc3\xa9\xf0\x9f\x98\x80"),
    STR(users_file, "/etc/hikyaku/users"),
};

static void conf_full_verify(const struct conf *c)
{
	static const char *const listeners[] = {"*:25", "[::1]:587", "192.0.2.1:2525"};
	static const char *const domains[] = {"example.org", "example.net"};

	for (size_t i = 0; i < N_ELEMENTS(full_strings); i++) {
		const char *got;
		memcpy(&got, (const char *)c + full_strings[i].off, sizeof(got));
		if (strcmp(got, full_strings[i].want) != 0)
			fail_msg("%s: got \"%s\" want \"%s\"", full_strings[i].name, got,
			         full_strings[i].want);
	}
	for (size_t i = 0; i < N_ELEMENTS(full_numbers); i++) {
		const struct u64_case *t = &full_numbers[i];
		if (conf_u64(c, t->off) != t->want)
			fail_msg("%s: got %llu want %llu", t->name,
			         (unsigned long long)conf_u64(c, t->off),
			         (unsigned long long)t->want);
	}
	assert_false(c->accept_any_user);
	assert_int_equal(c->n_listeners, N_ELEMENTS(listeners));
	for (size_t i = 0; i < N_ELEMENTS(listeners); i++)
		assert_string_equal(c->listeners[i].address, listeners[i]);
	assert_int_equal(c->n_local_domains, N_ELEMENTS(domains));
	for (size_t i = 0; i < N_ELEMENTS(domains); i++)
		assert_string_equal(c->local_domains[i], domains[i]);
}

static char *conf_dump_string(const struct conf *c, size_t *len_r)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len_r);

	assert_non_null(f);
	conf_dump(c, f);
	assert_int_equal(fclose(f), 0);
	return text;
}

/* Skip the first line (it names the source file). */
static const char *conf_dump_body(const char *text)
{
	const char *nl = strchr(text, '\n');
	assert_non_null(nl);
	return nl + 1;
}

static void test_full_roundtrip(void **state)
{
	char path[512], path2[512], err[512];
	struct conf *c = NULL, *c2 = NULL;
	size_t len, len2;

	(void)state;
	test_file_write("full.yaml", full_yaml, strlen(full_yaml), path, sizeof(path));
	if (conf_load(path, &c, err, sizeof(err)) < 0)
		fail_msg("load: %s", err);
	assert_string_equal(c->file, path);
	conf_full_verify(c);

	char *text = conf_dump_string(c, &len);
	assert_non_null(strstr(text, "\nlimits:\n"));
	assert_non_null(strstr(text, "\ntimeouts:\n"));
	assert_non_null(strstr(text, "\nqueue:\n"));
	assert_non_null(strstr(text, "# Largest message accepted"));
	assert_non_null(strstr(text, "  message_size: 50M\n"));
	test_file_write("dump.yaml", text, len, path2, sizeof(path2));
	if (conf_load(path2, &c2, err, sizeof(err)) < 0)
		fail_msg("reload of dump: %s\n%s", err, text);
	conf_full_verify(c2);

	/* A second dump is identical: nothing lost or reformatted. */
	char *text2 = conf_dump_string(c2, &len2);
	assert_string_equal(conf_dump_body(text), conf_dump_body(text2));
	free(text);
	free(text2);
	conf_free(&c);
	conf_free(&c2);
}

/* The embedded default dumps and reloads too (defaults are valid YAML). */
static void test_default_roundtrip(void **state)
{
	char path[512], err[512];
	struct conf *c = NULL, *c2 = NULL;
	size_t len, len2;

	(void)state;
	assert_int_equal(conf_load(NULL, &c, err, sizeof(err)), 0);
	char *text = conf_dump_string(c, &len);
	test_file_write("dump.yaml", text, len, path, sizeof(path));
	if (conf_load(path, &c2, err, sizeof(err)) < 0)
		fail_msg("reload: %s", err);
	char *text2 = conf_dump_string(c2, &len2);
	assert_string_equal(conf_dump_body(text), conf_dump_body(text2));
	free(text);
	free(text2);
	conf_free(&c);
	conf_free(&c2);
}

/* --- errors -------------------------------------------------------------- */

struct err_case {
	const char *yaml;
	const char *pos; /* "line:col:" */
	const char *msg; /* substring of the message */
};

#define L "listen: [\"*:25\"]\n"

static const struct err_case err_cases[] = {
    {L "foo: 1\n", "2:1:", "unknown key \"foo\""},
    {L "limits:\n  bogus: 1\n", "3:3:", "unknown key \"limits.bogus\""},
    {L "limits.recipients: 5\n", "2:1:", "unknown key \"limits.recipients\""},
    {L "limits:\n  message_size: 25X\n", "3:17:", "invalid size \"25X\""},
    {L "limits:\n  message_size: 3G\n", "3:17:", "out of range 1K..2G"},
    {L "limits:\n  message_size: 1000\n", "3:17:", "out of range"},
    {L "limits:\n  recipients: 0\n", "3:15:", "0 is out of range 1..100000"},
    {L "limits:\n  command_line: 511\n", "3:17:", "out of range 512..65536"},
    {L "limits:\n  recipients: abc\n", "3:15:", "expected an unsigned integer"},
    {L "limits:\n  recipients: -1\n", "3:15:", "expected an unsigned integer"},
    {L "limits:\n  recipients: [1]\n", "3:16:", "expected a scalar, got a list"},
    {L "limits: 5\n", "2:9:", "limits: expected a mapping"},
    {L "limits: [a]\n", "2:10:", "limits: expected a mapping"},
    {L "hostname: [a, b]\n", "2:12:", "hostname: expected a string, got a list"},
    {L "hostname:\n", "2:1:", "expected a string, got nothing"},
    {L "hostname: \"mx example\"\n", "2:11:", "invalid host name"},
    {L "accept_any_user: yes\n", "2:18:", "expected true or false"},
    {L "log_level: verbose\n", "2:12:", "invalid log level"},
    {L "local_domains: example.com\n", "2:16:", "local_domains: expected a list"},
    {L "local_domains: [ok.example, \"bad domain\"]\n", "2:29:", "invalid domain"},
    {L "timeouts:\n  command: 5x\n", "3:12:", "invalid duration \"5x\""},
    {L "timeouts:\n  session: 2d\n", "3:12:", "2d is out of range 1s..1d"},
    {L "queue:\n  retry_min: 2h\n", "3:14:", "retry_max must be at least"},
    {L "queue:\n  retry_max: 8d\n", "3:14:", "out of range 1s..7d"},
    {L "spool_dir: \"\"\n", "2:12:", "must not be empty"},
    {L "user: !!binary AAAA\nlisten2: 1\n", "3:1:", "unknown key"},
    {"listen: [\":25\"]\n", "1:10:", "invalid listener \":25\""},
    {"listen: [\"host\"]\n", "1:10:", "invalid listener"},
    {"listen: [\"1.2.3.4:0\"]\n", "1:10:", "port must be 1-65535"},
    {"listen: [\"1.2.3.4:65536\"]\n", "1:10:", "port must be 1-65535"},
    {"listen: [\"[::g]:25\"]\n", "1:10:", "invalid listener"},
    {"listen: [\"::1:25\"]\n", "1:10:", "invalid listener"},
    {"listen:\n  - adress: \"*:25\"\n", "2:5:", "unknown key \"listen[].adress\""},
    {"listen:\n  - {}\n", "1:1:", "listener without address"},
    {"listen: \"*:25\"\n", "1:9:", "listen: expected a list"},
    {"listen: []\n", "1:1:", "at least one listener is required"},
    {"", "1:1:", "at least one listener is required"},
    {"# only a comment\n", "1:1:", "at least one listener is required"},
    {"hostname: mx.example.org\n", "1:1:", "at least one listener is required"},
    {L "listen: [\"*:26\"]\n", "2:1:", "duplicate key"},
    {"listen: [\"*:25\"\nuser: x\n", "2:1:", "wrongly indented flow sequence"},
    {"listen: [\"*:25\"\n", "2:1:", "flow sequence without a closing bracket"},
    {L "  user: x\n", "2:3:", "invalid indentation"},
    {L "user: \"\\q\"\n", "2:8:", "invalid escape"},
    {L "---\nuser: x\n", "3:1:", "only one YAML document"},
    {"- a\n- b\n", "1:3:", "expected a mapping of settings"},
    {"listen: &l [\"*:25\"]\nlocal_domains: *l\n", "2:16:", "aliases are not supported"},
    {L "user: \"a\\0b\"\n", "2:7:", "NUL byte"},
    {L "user: a\001b\n", "2:8:", "character U+0001 is not allowed"},
    {L "user: \"\xc3\xa9\xff\"\n", "2:9:", "invalid UTF-8"},
    /* libfyaml 0.7.12 loops forever on this one: it must not reach it. */
    {"%\xf1"
     "crtalc *ptc_d'",
     "1:2:", "invalid UTF-8"},
};

static void test_errors(void **state)
{
	char path[512], err[1024], prefix[600];
	struct conf *c;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(err_cases); i++) {
		const struct err_case *t = &err_cases[i];
		test_file_write("t.yaml", t->yaml, strlen(t->yaml), path, sizeof(path));
		c = (struct conf *)&c; /* must be reset to NULL */
		err[0] = '\0';
		if (conf_load(path, &c, err, sizeof(err)) == 0) {
			conf_free(&c);
			fail_msg("case %zu: loaded:\n%s", i, t->yaml);
		}
		assert_null(c);
		snprintf(prefix, sizeof(prefix), "%s:%s ", path, t->pos);
		if (strncmp(err, prefix, strlen(prefix)) != 0 || strstr(err, t->msg) == NULL)
			fail_msg("case %zu: got \"%s\" want \"%s...%s\"", i, err, prefix, t->msg);
	}
}

static void test_error_io(void **state)
{
	char path[512], err[512];
	struct conf *c = NULL;

	(void)state;
	snprintf(path, sizeof(path), "%s/does-not-exist.yaml", test_dir);
	assert_int_equal(conf_load(path, &c, err, sizeof(err)), -1);
	assert_null(c);
	assert_true(strncmp(err, path, strlen(path)) == 0);
	assert_non_null(strstr(err, "cannot open"));
	/* err may be NULL */
	assert_int_equal(conf_load(path, &c, NULL, 0), -1);
}

/* --- sizes and durations -------------------------------------------------- */

struct value_case {
	const char *yaml; /* appended after a listener */
	size_t off;
	uint64_t want;
};

#define LIM(f) offsetof(struct conf, limits.f)
#define TMO(f) offsetof(struct conf, timeouts.f)
#define QUE(f) offsetof(struct conf, queue.f)

static const struct value_case value_cases[] = {
    {"limits: {message_size: 1024}", LIM(message_size), 1024},
    {"limits: {message_size: 1K}", LIM(message_size), 1024},
    {"limits: {message_size: 1k}", LIM(message_size), 1024},
    {"limits: {message_size: 10MB}", LIM(message_size), 10 * 1024 * 1024},
    {"limits: {message_size: 2G}", LIM(message_size), 2ULL * 1024 * 1024 * 1024},
    {"limits: {message_size: \"25M\"}", LIM(message_size), 25 * 1024 * 1024},
    {"limits: {header_size: 64M}", LIM(header_size), 64 * 1024 * 1024},
    {"limits: {command_line: 65536}", LIM(command_line), 65536},
    {"limits: {connections_per_ip: 1000000}", LIM(connections_per_ip), 1000000},
    {"timeouts: {command: 1s}", TMO(command), 1000},
    {"timeouts: {command: 1000ms}", TMO(command), 1000},
    {"timeouts: {command: 45}", TMO(command), 45000},
    {"timeouts: {data: 3m}", TMO(data), 180000},
    {"timeouts: {session: 1d}", TMO(session), 86400000},
    {"timeouts: {session: 24h}", TMO(session), 86400000},
    {"queue: {retry_min: 1s, retry_max: 1s}", QUE(retry_max), 1000},
    {"queue: {retry_max: 7d}", QUE(retry_max), 7ULL * 86400000},
    {"queue: {delivery_threads: 64}", QUE(delivery_threads), 64},
};

static void test_values(void **state)
{
	char path[512], err[512], yaml[512];
	struct conf *c;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(value_cases); i++) {
		const struct value_case *t = &value_cases[i];
		int n = snprintf(yaml, sizeof(yaml), "%s%s\n", L, t->yaml);
		test_file_write("t.yaml", yaml, (size_t)n, path, sizeof(path));
		if (conf_load(path, &c, err, sizeof(err)) < 0)
			fail_msg("case %zu (%s): %s", i, t->yaml, err);
		if (conf_u64(c, t->off) != t->want)
			fail_msg("case %zu (%s): got %llu want %llu", i, t->yaml,
			         (unsigned long long)conf_u64(c, t->off),
			         (unsigned long long)t->want);
		conf_free(&c);
	}
}

/* --- operator warnings and local domains ---------------------------------- */

struct check_case {
	const char *yaml;
	int want;
	const char *substr; /* in the output, or NULL */
};

#define SAFE                                                                                       \
	"hostname: mx.example.org\nspool_dir: /s\nmaildir_root: /m\nlocal_domains: [a.example]\n"

static const struct check_case check_cases[] = {
    {SAFE "listen: [127.0.0.1:25]\naccept_any_user: true\n", 0, NULL},
    {SAFE "listen: [\"*:25\"]\naccept_any_user: true\nuser: mail\n", 1,
     "accept_any_user is true on non-loopback"},
    {SAFE "listen: [\"*:25\"]\naccept_any_user: true\n", 2, "user is empty"},
    {SAFE "listen: [\"[::1]:25\"]\n", 1, "no users_file"},
    {SAFE "listen: [localhost:25]\nusers_file: /nonexistent/users\n", 1, "not readable"},
    {"hostname: mx\nspool_dir: s\nmaildir_root: m\nlisten: [127.0.0.1:25]\n", 4, "has no dot"},
};

static void test_check(void **state)
{
	char path[512], err[512];
	struct conf *c;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(check_cases); i++) {
		const struct check_case *t = &check_cases[i];
		char *out = NULL;
		size_t outlen;
		test_file_write("t.yaml", t->yaml, strlen(t->yaml), path, sizeof(path));
		if (conf_load(path, &c, err, sizeof(err)) < 0)
			fail_msg("case %zu: %s", i, err);
		FILE *f = open_memstream(&out, &outlen);
		assert_non_null(f);
		int n = conf_check(c, f);
		fclose(f);
		if (n != t->want || (t->substr != NULL && strstr(out, t->substr) == NULL))
			fail_msg("case %zu: %d warnings, want %d with \"%s\":\n%s", i, n, t->want,
			         t->substr != NULL ? t->substr : "", out);
		free(out);
		conf_free(&c);
	}
}

struct domain_case {
	const char *domain;
	bool want;
};

static const struct domain_case domain_cases[] = {
    {"example.org", true}, {"EXAMPLE.org", true},   {"Example.Net", true}, {"example.com", false},
    {"org", false},        {"example.org.", false}, {"", false},           {"xexample.org", false},
};

static void test_local_domain(void **state)
{
	char path[512], err[512];
	struct conf *c;

	(void)state;
	test_file_write("full.yaml", full_yaml, strlen(full_yaml), path, sizeof(path));
	assert_int_equal(conf_load(path, &c, err, sizeof(err)), 0);
	for (size_t i = 0; i < N_ELEMENTS(domain_cases); i++)
		if (conf_is_local_domain(c, domain_cases[i].domain) != domain_cases[i].want)
			fail_msg("case %zu: %s", i, domain_cases[i].domain);
	assert_false(conf_is_local_domain(NULL, "example.org"));
	conf_free(&c);
}

static void test_reference(void **state)
{
	static const char *const rows[] = {
	    "| `hostname` | string | the system host name",
	    "| `user` | string | `\"\"` |  |",
	    "| `listen` | list of listeners | `[]` |",
	    "| `limits.message_size` | size | `25M` | 1K..2G |",
	    "| `limits.command_line` | uint | `512` | 512..65536 |",
	    "| `timeouts.session` | duration | `30m` | 1s..1d |",
	    "| `queue.retry_max` | duration | `1h` | 1s..7d |",
	    "accept_any_user: true\n```\n",
	};
	char *out = NULL;
	size_t len;
	FILE *f = open_memstream(&out, &len);

	(void)state;
	assert_non_null(f);
	conf_reference(f);
	fclose(f);
	for (size_t i = 0; i < N_ELEMENTS(rows); i++)
		if (strstr(out, rows[i]) == NULL)
			fail_msg("missing \"%s\" in:\n%s", rows[i], out);
	free(out);
}

/* --- users file ---------------------------------------------------------- */

static const char users_good[] = "# users\n"
                                 "\n"
                                 "   \t\n"
                                 "  # indented comment\n"
                                 "alice@Example.ORG:{SHA512-CRYPT}$6$x$y:1000:1000::/home/a::\n"
                                 "Bob@example.org\r\n"
                                 "carol@other.example:{PLAIN}secret\n"
                                 "dave@other.example::::::userdb_quota_rule=*:storage=1G\n"
                                 "x@y";

struct lookup_case {
	const char *local, *domain;
	bool want;
};

static const struct lookup_case lookup_cases[] = {
    {"alice", "example.org", true},
    {"ALICE", "EXAMPLE.ORG", true},
    {"bob", "Example.Org", true},
    {"Bob", "example.org", true},
    {"carol", "other.example", true},
    {"dave", "OTHER.example", true},
    {"x", "y", true},
    {"alice", "other.example", false},
    {"carol", "example.org", false},
    {"alic", "example.org", false},
    {"alice+tag", "example.org", false},
    {"", "example.org", false},
    {"alice", "", false},
    {"eve", "example.org", false},
};

static void test_users_good(void **state)
{
	char path[512], err[512];
	struct users *u = NULL;

	(void)state;
	test_file_write("users", users_good, strlen(users_good), path, sizeof(path));
	if (users_load(path, &u, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(users_count(u), 5);
	for (size_t i = 0; i < N_ELEMENTS(lookup_cases); i++) {
		const struct lookup_case *t = &lookup_cases[i];
		if (users_exists(u, t->local, t->domain) != t->want)
			fail_msg("case %zu: %s@%s", i, t->local, t->domain);
	}
	users_free(&u);
	assert_null(u);
	users_free(&u);
	assert_false(users_exists(NULL, "alice", "example.org"));
	assert_int_equal(users_count(NULL), 0);

	/* An empty file is an empty table. */
	test_file_write("empty", "", 0, path, sizeof(path));
	assert_int_equal(users_load(path, &u, err, sizeof(err)), 0);
	assert_int_equal(users_count(u), 0);
	assert_false(users_exists(u, "alice", "example.org"));
	users_free(&u);
}

struct users_err_case {
	const char *text; /* "%N" expands to N 'a's */
	size_t line;
	const char *msg;
};

static const struct users_err_case users_err_cases[] = {
    {"a@b\nnoat\n", 2, "exactly one '@'"},
    {"a@b@c:x\n", 1, "exactly one '@'"},
    {"# c\n\n@b\n", 3, "local part and a domain"},
    {"a@\n", 1, "local part and a domain"},
    {":secret\n", 1, "empty user name"},
    {"a b@c\n", 1, "space or control"},
    {"%65@b\n", 1, "local part longer than 64"},
    {"a@%256\n", 1, "domain longer than 255"},
    {"a@b\nc@d\nA@B:x\n", 3, "duplicate user (first on line 1)"},
    {"a@b\n%4097\n", 2, "line longer than 4096"},
    {"a@b\n%4098\r\n", 2, "line longer than 4096"},
};

static size_t users_text_expand(const char *pat, char *out, size_t outlen)
{
	size_t o = 0;

	for (const char *s = pat; *s != '\0'; s++) {
		size_t n = 1;
		char c = *s;
		if (*s == '%') {
			n = 0;
			for (s++; *s >= '0' && *s <= '9'; s++)
				n = n * 10 + (size_t)(*s - '0');
			s--;
			c = 'a';
		}
		assert_true(o + n < outlen);
		memset(out + o, c, n);
		o += n;
	}
	out[o] = '\0';
	return o;
}

static void test_users_errors(void **state)
{
	char path[512], err[512], want[600], text[9000];
	struct users *u;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(users_err_cases); i++) {
		const struct users_err_case *t = &users_err_cases[i];
		size_t len = users_text_expand(t->text, text, sizeof(text));
		test_file_write("users", text, len, path, sizeof(path));
		u = (struct users *)&u;
		if (users_load(path, &u, err, sizeof(err)) == 0) {
			users_free(&u);
			fail_msg("case %zu loaded", i);
		}
		assert_null(u);
		snprintf(want, sizeof(want), "%s:%zu: ", path, t->line);
		if (strncmp(err, want, strlen(want)) != 0 || strstr(err, t->msg) == NULL)
			fail_msg("case %zu: got \"%s\" want \"%s%s\"", i, err, want, t->msg);
		assert_null(strstr(err, "secret"));
	}
}

/* The longest names and lines that are still accepted. */
static void test_users_limits(void **state)
{
	char path[512], err[512], text[9000], local[65], domain[256];
	struct users *u = NULL;

	(void)state;
	memset(local, 'L', 64);
	local[64] = '\0';
	memset(domain, 'd', 255);
	domain[255] = '\0';
	size_t len = users_text_expand("%64@%255\nb@c:%4092\r\n", text, sizeof(text));
	test_file_write("users", text, len, path, sizeof(path));
	if (users_load(path, &u, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(users_count(u), 2);
	memset(local, 'A', 64);
	memset(domain, 'A', 255);
	assert_true(users_exists(u, local, domain));
	assert_true(users_exists(u, "B", "C"));
	local[63] = '\0';
	assert_false(users_exists(u, local, domain));
	users_free(&u);

	snprintf(path, sizeof(path), "%s/no-such-users", test_dir);
	assert_int_equal(users_load(path, &u, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot open"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_embedded_default),
	    cmocka_unit_test(test_full_roundtrip),
	    cmocka_unit_test(test_default_roundtrip),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_error_io),
	    cmocka_unit_test(test_values),
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_local_domain),
	    cmocka_unit_test(test_reference),
	    cmocka_unit_test(test_users_good),
	    cmocka_unit_test(test_users_errors),
	    cmocka_unit_test(test_users_limits),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
