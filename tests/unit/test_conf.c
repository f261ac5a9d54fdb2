/* test_conf.c — table-driven tests of the configuration loader
 * (src/conf/conf.c: embedded default, every key, dump round trip, error
 * positions, sizes and durations, operator warnings, reference; the relay
 * rules of src/conf/conf_relay.c: trusted networks, sender ownership; the
 * delivery settings and routes of src/conf/conf_delivery.c) and of the
 * users file (src/auth/users.c: valid and invalid lines, lookups).
 * Hermetic: every file lives in a private mkdtemp() directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/credentials.h"
#include "auth/users.h"

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
	const char *names[] = {"t.yaml", "full.yaml", "dump.yaml", "users",
	                       "empty",  "cred600",   "cred640",   "cred604",
	                       "cred-a", "cred-b"};
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
    U64(queue.commit_threads, 8),
    U64(queue.delivery_threads, 16),
    U64(queue.retry_min, 5 * 60 * 1000),
    U64(queue.retry_max, 60 * 60 * 1000),
    U64(tls.handshake_timeout, 30 * 1000),
    U64(auth.max_failures, 5),
    U64(auth.failure_window, 10 * 60 * 1000),
    U64(delivery.smtp_port, 25),
    U64(delivery.destination_concurrency, 20),
    U64(delivery.total_concurrency, 100),
    U64(delivery.connect_timeout, 30 * 1000),
    U64(delivery.command_timeout, 5 * 60 * 1000),
    U64(delivery.data_timeout, 10 * 60 * 1000),
    U64(delivery.idle_timeout, 5 * 1000),
    U64(delivery.destination_idle, 8),
    U64(delivery.total_idle, 64),
    U64(delivery.max_lifetime, 5ULL * 86400 * 1000),
    U64(delivery.delay_warning, 4 * 3600 * 1000),
};

struct bool_case {
	const char *name;
	size_t off; /* offsetof(struct conf, ...) of a bool */
	bool want;
};

#define BOOL(field, v)                                                                             \
	{                                                                                          \
#field, offsetof(struct conf, field), v                                            \
	}

static const struct bool_case default_bools[] = {
    BOOL(accept_any_user, false),
    BOOL(tls.session_tickets, true),
    BOOL(auth.received_show_user, false),
    BOOL(relay.sender_login_match, true),
    BOOL(delivery.ipv6, true),
};

static bool conf_bool(const struct conf *c, size_t off)
{
	bool v;
	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

static void conf_bools_verify(const struct conf *c, const struct bool_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (conf_bool(c, cases[i].off) != cases[i].want)
			fail_msg("%s: got %d want %d", cases[i].name, conf_bool(c, cases[i].off),
			         cases[i].want);
}

static void conf_listener_verify(const struct conf_listener *got, const struct conf_listener *want,
                                 size_t i)
{
	if (strcmp(got->address, want->address) != 0 || got->tls != want->tls ||
	    got->submission != want->submission || got->auth != want->auth ||
	    got->plaintext_auth != want->plaintext_auth)
		fail_msg(
		    "listener %zu: got {%s, tls %d, sub %d, auth %d, plain %d} want {%s, tls %d, "
		    "sub %d, auth %d, plain %d}",
		    i, got->address, got->tls, got->submission, got->auth, got->plaintext_auth,
		    want->address, want->tls, want->submission, want->auth, want->plaintext_auth);
}

static uint64_t conf_u64(const struct conf *c, size_t off)
{
	uint64_t v;
	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

/* The outbound settings that are not numbers or bools. */
static void conf_delivery_defaults_verify(const struct conf *c)
{
	assert_string_equal(c->delivery.helo_name, "");
	assert_int_equal(c->delivery.tls, CONF_TLSPOL_MAY);
	assert_string_equal(c->delivery.ca_file, "");
	assert_string_equal(c->delivery.smarthost, "");
	assert_int_equal(c->delivery.smarthost_tls, CONF_TLSPOL_ENCRYPT);
	assert_string_equal(c->delivery.smarthost_credentials, "");
	assert_int_equal(c->dns.n_forwarders, 0);
	assert_null(c->dns.forwarders);
	assert_string_equal(c->dns.trust_anchor, "");
	assert_int_equal(c->n_routes, 0);
	assert_null(c->routes);
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
	static const struct conf_listener dev = {"127.0.0.1:2525", CONF_TLS_STARTTLS, false, true,
	                                         true, false};
	conf_listener_verify(&c->listeners[0], &dev, 0);
	assert_string_equal(c->tls.self_signed_dir, "./var/tls");
	assert_int_equal(c->tls.n_certs, 0);
	assert_null(c->tls.certs);
	assert_int_equal(c->relay.n_trusted_networks, 0);
	assert_int_equal(c->relay.n_senders, 0);
	assert_int_equal(c->auth.n_mechanisms, 0); /* automatic */
	assert_string_equal(c->spool_dir, "./var/spool");
	assert_string_equal(c->maildir_root, "./var/mail");
	assert_int_equal(c->n_local_domains, 1);
	assert_string_equal(c->local_domains[0], "localhost");
	assert_true(c->accept_any_user);
	conf_bools_verify(c, default_bools + 1, N_ELEMENTS(default_bools) - 1);
	assert_string_equal(c->user, "nobody"); /* as root: smtpd and queue run as nobody */
	assert_string_equal(c->users_file, "");
	assert_string_equal(c->log_level, "info");
	assert_true(c->hostname != NULL && c->hostname[0] != '\0');
	conf_delivery_defaults_verify(c);
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

/* The production defaults of every key, from a file with only listeners:
 * a shorthand listener (its fields default) and a map. */
static void test_production_defaults(void **state)
{
	static const char yaml[] = "listen:\n"
	                           "  - 127.0.0.1:25\n"
	                           "  - {address: \"*:26\", tls: none}\n"
	                           "tls: {self_signed_dir: /t}\n";
	static const struct conf_listener want[] = {
	    {"127.0.0.1:25", CONF_TLS_STARTTLS, false, true, false, false},
	    {"*:26", CONF_TLS_NONE, false, true, false, false},
	};
	char path[512], err[512];
	struct conf *c = NULL;

	(void)state;
	test_file_write("t.yaml", yaml, strlen(yaml), path, sizeof(path));
	if (conf_load(path, &c, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_int_equal(c->n_listeners, N_ELEMENTS(want));
	for (size_t i = 0; i < N_ELEMENTS(want); i++)
		conf_listener_verify(&c->listeners[i], &want[i], i);
	for (size_t i = 0; i < N_ELEMENTS(default_numbers); i++)
		if (conf_u64(c, default_numbers[i].off) != default_numbers[i].want)
			fail_msg("%s", default_numbers[i].name);
	conf_bools_verify(c, default_bools, N_ELEMENTS(default_bools));
	assert_string_equal(c->spool_dir, "/var/spool/hikyaku");
	assert_int_equal(c->tls.n_certs, 0);
	assert_int_equal(c->relay.n_trusted_networks, 0);
	assert_null(c->relay.trusted_networks);
	assert_int_equal(c->relay.n_senders, 0);
	assert_null(c->relay.senders);
	conf_delivery_defaults_verify(c);
	conf_free(&c);

	/* Without self_signed_dir the default is "" (production). */
	static const char bare[] = "listen: [{address: \"*:25\", tls: none}]\n";
	test_file_write("t.yaml", bare, strlen(bare), path, sizeof(path));
	if (conf_load(path, &c, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	assert_string_equal(c->tls.self_signed_dir, "");
	conf_free(&c);
}

/* --- every key, and the dump round trip ---------------------------------- */

static const char full_yaml[] =
    "hostname: mx.example.org\n"
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
    "    submission: true\n"
    "  - address: 192.0.2.1:465\n"
    "    tls: implicit\n"
    "    submission: true\n"
    "    auth: true\n"
    "  - {address: 127.0.0.1:2525, tls: none, auth: false}\n"
    "  - {address: \"localhost:2526\", tls: NONE, plaintext_auth: true,\n"
    "     submission: true}\n"
    "tls:\n"
    "  certificates:\n"
    "    - cert: /etc/ssl/mx.pem\n"
    "      key: /etc/ssl/mx.key\n"
    "    - {key: \"/etc/ssl/b.key\", cert: /etc/ssl/b.pem}\n"
    "  self_signed_dir: /var/lib/hikyaku/tls\n"
    "  session_tickets: false\n"
    "  handshake_timeout: 1m\n"
    "auth:\n"
    "  max_failures: 3\n"
    "  failure_window: 1h\n"
    "  received_show_user: true\n"
    "  mechanisms: [LOGIN, scram-sha-256]\n"
    "relay:\n"
    "  trusted_networks: [192.0.2.0/24, \"2001:db8::/32\", 10.1.2.3]\n"
    "  sender_login_match: false\n"
    "  senders:\n"
    "    - \"postmaster@example.org: alice@example.org, bob@example.org\"\n"
    "    - \"@example.net: carol@example.net\"\n"
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
    "  retry_max: 2d\n"
    "routes:\n"
    "  - domain: Example.ORG\n"
    "    transport: lmtp\n"
    "    address: \"unix:/run/dovecot/lmtp\"\n"
    "  - {domain: relay.example, transport: RELAY, address: \"[2001:db8::25]:587\",\n"
    "     tls: Verify, credentials: /etc/hikyaku/relay.auth}\n"
    "  - {domain: local.example, transport: local, tls: none}\n"
    "  - {domain: mx.example, transport: mx, tls: encrypt, port: 2526}\n"
    "  - {domain: store.example, transport: lmtp, address: \"192.0.2.24:24\",\n"
    "     credentials: \"\"}\n"
    "delivery:\n"
    "  helo_name: out.example.org\n"
    "  smtp_port: 2525\n"
    "  tls: verify\n"
    "  ca_file: /etc/ssl/ca.pem\n"
    "  smarthost: \"[192.0.2.1]:587\"\n"
    "  smarthost_tls: VERIFY\n"
    "  smarthost_credentials: /etc/hikyaku/smarthost.auth\n"
    "  destination_concurrency: 5\n"
    "  total_concurrency: 50\n"
    "  connect_timeout: 10s\n"
    "  command_timeout: 2m\n"
    "  data_timeout: 15m\n"
    "  idle_timeout: 0\n"
    "  destination_idle: 2\n"
    "  total_idle: 10\n"
    "  max_lifetime: 3d\n"
    "  delay_warning: 0\n"
    "  ipv6: false\n"
    "dns:\n"
    "  forwarders: [127.0.0.1@5353, \"::1\", \"2001:db8::53@53\", 192.0.2.53]\n"
    "  trust_anchor: /etc/hikyaku/root.key\n";

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
    U64(tls.handshake_timeout, 60 * 1000),
    U64(auth.max_failures, 3),
    U64(auth.failure_window, 3600 * 1000),
    U64(delivery.smtp_port, 2525),
    U64(delivery.destination_concurrency, 5),
    U64(delivery.total_concurrency, 50),
    U64(delivery.connect_timeout, 10 * 1000),
    U64(delivery.command_timeout, 2 * 60 * 1000),
    U64(delivery.data_timeout, 15 * 60 * 1000),
    U64(delivery.idle_timeout, 0),
    U64(delivery.destination_idle, 2),
    U64(delivery.total_idle, 10),
    U64(delivery.max_lifetime, 3ULL * 86400 * 1000),
    U64(delivery.delay_warning, 0),
};

static const struct bool_case full_bools[] = {
    BOOL(accept_any_user, false),        BOOL(tls.session_tickets, false),
    BOOL(auth.received_show_user, true), BOOL(relay.sender_login_match, false),
    BOOL(delivery.ipv6, false),
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
    STR(tls.self_signed_dir, "/var/lib/hikyaku/tls"),
    STR(delivery.helo_name, "out.example.org"),
    STR(delivery.ca_file, "/etc/ssl/ca.pem"),
    STR(delivery.smarthost, "[192.0.2.1]:587"),
    STR(delivery.smarthost_credentials, "/etc/hikyaku/smarthost.auth"),
    STR(dns.trust_anchor, "/etc/hikyaku/root.key"),
};

static const struct conf_route full_routes[] = {
    {"example.org", CONF_TRANSPORT_LMTP, "unix:/run/dovecot/lmtp", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER},
    {"relay.example", CONF_TRANSPORT_RELAY, "[2001:db8::25]:587", CONF_TLSPOL_VERIFY,
     "/etc/hikyaku/relay.auth", 0, false, CONF_VERIFY_DEFER},
    {"local.example", CONF_TRANSPORT_LOCAL, "", CONF_TLSPOL_NONE, "", 0, false, CONF_VERIFY_DEFER},
    {"mx.example", CONF_TRANSPORT_MX, "", CONF_TLSPOL_ENCRYPT, "", 2526, false, CONF_VERIFY_DEFER},
    {"store.example", CONF_TRANSPORT_LMTP, "192.0.2.24:24", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER},
};

static void conf_route_verify(const struct conf_route *got, const struct conf_route *want,
                              const char *what)
{
	if ((got->domain == NULL) != (want->domain == NULL) ||
	    (want->domain != NULL && strcmp(got->domain, want->domain) != 0) ||
	    got->transport != want->transport || strcmp(got->address, want->address) != 0 ||
	    got->tls != want->tls || strcmp(got->credentials, want->credentials) != 0 ||
	    got->port != want->port)
		fail_msg("%s: got {%s, %d, %s, tls %d, %s, port %llu} want {%s, %d, %s, tls %d, %s, "
		         "port %llu}",
		         what, got->domain != NULL ? got->domain : "(null)", got->transport,
		         got->address, got->tls, got->credentials, (unsigned long long)got->port,
		         want->domain != NULL ? want->domain : "(any)", want->transport,
		         want->address, want->tls, want->credentials,
		         (unsigned long long)want->port);
}

static void conf_strings_verify(char *const *got, size_t n, const char *const *want, size_t nwant)
{
	assert_int_equal(n, nwant);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(got[i], want[i]);
}

static void conf_full_verify(const struct conf *c)
{
	static const struct conf_listener listeners[] = {
	    {"*:25", CONF_TLS_STARTTLS, false, true, false, false},
	    {"[::1]:587", CONF_TLS_STARTTLS, true, true, false, false},
	    {"192.0.2.1:465", CONF_TLS_IMPLICIT, true, true, false, false},
	    {"127.0.0.1:2525", CONF_TLS_NONE, false, false, false, false},
	    {"localhost:2526", CONF_TLS_NONE, true, true, true, false},
	};
	static const char *const domains[] = {"example.org", "example.net"};
	static const char *const nets[] = {"192.0.2.0/24", "2001:db8::/32", "10.1.2.3"};
	static const char *const senders[] = {
	    "postmaster@example.org: alice@example.org, bob@example.org",
	    "@example.net: carol@example.net"};
	static const char *const forwarders[] = {"127.0.0.1@5353", "::1", "2001:db8::53@53",
	                                         "192.0.2.53"};

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
	conf_bools_verify(c, full_bools, N_ELEMENTS(full_bools));
	assert_int_equal(c->n_listeners, N_ELEMENTS(listeners));
	for (size_t i = 0; i < N_ELEMENTS(listeners); i++)
		conf_listener_verify(&c->listeners[i], &listeners[i], i);
	conf_strings_verify(c->local_domains, c->n_local_domains, domains, N_ELEMENTS(domains));
	assert_int_equal(c->tls.n_certs, 2);
	assert_string_equal(c->tls.certs[0].cert, "/etc/ssl/mx.pem");
	assert_string_equal(c->tls.certs[0].key, "/etc/ssl/mx.key");
	assert_string_equal(c->tls.certs[1].cert, "/etc/ssl/b.pem");
	assert_string_equal(c->tls.certs[1].key, "/etc/ssl/b.key");
	conf_strings_verify(c->relay.trusted_networks, c->relay.n_trusted_networks, nets,
	                    N_ELEMENTS(nets));
	conf_strings_verify(c->relay.senders, c->relay.n_senders, senders, N_ELEMENTS(senders));
	static const char *const mechs[] = {"LOGIN", "scram-sha-256"};
	conf_strings_verify(c->auth.mechanisms, c->auth.n_mechanisms, mechs, N_ELEMENTS(mechs));
	assert_int_equal(c->delivery.tls, CONF_TLSPOL_VERIFY);
	assert_int_equal(c->delivery.smarthost_tls, CONF_TLSPOL_VERIFY);
	conf_strings_verify(c->dns.forwarders, c->dns.n_forwarders, forwarders,
	                    N_ELEMENTS(forwarders));
	assert_int_equal(c->n_routes, N_ELEMENTS(full_routes));
	for (size_t i = 0; i < N_ELEMENTS(full_routes); i++)
		conf_route_verify(&c->routes[i], &full_routes[i], full_routes[i].domain);
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

/* Two dumps are equal but for their first line (it names the source file).
 * Offsets, not pointers into the texts: GCC 12 at -O3 takes a pointer kept
 * across the cmocka assertion for a dangling one (-Wdangling-pointer). */
static size_t conf_dump_body_offset(const char *text)
{
	size_t off = strcspn(text, "\n");

	assert_int_equal(text[off], '\n');
	return off + 1;
}

static void assert_dump_bodies_equal(const char *a, const char *b)
{
	size_t oa = conf_dump_body_offset(a), ob = conf_dump_body_offset(b);

	assert_string_equal(a + oa, b + ob);
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
	assert_non_null(strstr(text, "\ntls:\n"));
	assert_non_null(strstr(text, "\nauth:\n"));
	assert_non_null(strstr(text, "\nrelay:\n"));
	assert_non_null(strstr(text, "\n  - address: \"*:25\"\n    tls: starttls\n"
	                             "    submission: false\n    auth: true\n"
	                             "    plaintext_auth: false\n"));
	assert_non_null(strstr(text, "  certificates:\n    - cert: \"/etc/ssl/mx.pem\"\n"
	                             "      key: \"/etc/ssl/mx.key\"\n"));
	assert_non_null(strstr(text, "  handshake_timeout: 1m\n"));
	assert_non_null(strstr(text, "\ndelivery:\n"));
	assert_non_null(strstr(text, "\ndns:\n"));
	assert_non_null(strstr(text, "\nroutes:\n  - domain: \"example.org\"\n"
	                             "    transport: lmtp\n"
	                             "    address: \"unix:/run/dovecot/lmtp\"\n"
	                             "    tls: may\n    credentials: \"\"\n"));
	assert_non_null(strstr(text, "  smarthost_tls: verify\n"));
	assert_non_null(strstr(text, "  delay_warning: 0s\n"));
	assert_non_null(strstr(text, "  forwarders:\n    - \"127.0.0.1@5353\"\n"));
	test_file_write("dump.yaml", text, len, path2, sizeof(path2));
	if (conf_load(path2, &c2, err, sizeof(err)) < 0)
		fail_msg("reload of dump: %s\n%s", err, text);
	conf_full_verify(c2);

	/* A second dump is identical: nothing lost or reformatted. */
	char *text2 = conf_dump_string(c2, &len2);
	assert_dump_bodies_equal(text, text2);
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
	assert_dump_bodies_equal(text, text2);
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

/* One line, so that the positions below count from line 2. */
#define L "listen: [{address: \"*:25\", tls: none}]\n"
#define LS "listen:\n  - "

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
    /* listener fields */
    {LS "{address: \"*:25\", tls: ssl}\n",
     "2:28:", "listen[].tls: invalid value \"ssl\": expected none, starttls or implicit"},
    {LS "address: \"*:25\"\n    tls: [none]\n", "3:11:", "listen[].tls: expected a scalar"},
    {LS "{address: \"*:25\", auth: maybe}\n", "2:29:", "listen[].auth: expected true or false"},
    {LS "{address: \"*:25\", submision: true}\n", "2:23:", "unknown key \"listen[].submision\""},
    {LS "{address: \"\"}\n", "2:15:", "listen[].address: invalid listener \"\""},
    {LS "{tls: none}\n", "2:6:", "listen: listener without address"},
    {LS "[\"*:25\"]\n", "2:6:", "listen: expected a mapping (a listener)"},
    {LS "\n", "1:1:", "listen: expected a listener, got nothing"},
    {LS "{address: \"*:25\", tls: none}\n  - x: 1\n", "3:5:", "unknown key \"listen[].x\""},
    {"listen: &a [{address: \"*:25\"}]\nl2: *a\n", "2:1:", "unknown key \"l2\""},
    {"listen: [&a {address: \"*:25\", tls: none}, *a]\n", "1:43:", "aliases are not supported"},
    /* TLS listeners need TLS configured; submission needs AUTH and TLS */
    {LS "127.0.0.1:25\n", "2:5:",
     "listener 127.0.0.1:25 uses TLS but tls.certificates is empty and tls.self_signed_dir "
     "is not set"},
    {"listen:\n  - {address: \"*:26\", tls: none}\n  - address: \"*:465\"\n"
     "    tls: implicit\n"
     "tls: {self_signed_dir: \"\", session_tickets: true}\n",
     "3:5:", "listener *:465 uses TLS but"},
    {LS "{address: \"*:587\", tls: none, submission: true}\n",
     "2:6:", "listener *:587: submission requires AUTH, and AUTH requires TLS"},
    {LS "{address: \"*:587\", tls: none, submission: true, auth: false}\n",
     "2:6:", "listener *:587: submission requires auth: true"},
    {LS "{address: \"*:587\", submission: true, auth: false}\ntls: {self_signed_dir: /t}\n",
     "2:6:", "submission requires auth: true"},
    /* tls */
    {L "tls:\n  certificates:\n    - cert: /a.pem\n",
     "4:7:", "tls.certificates: certificate without key"},
    {L "tls:\n  certificates: [{key: /a.key}]\n",
     "3:19:", "tls.certificates: certificate without cert"},
    {L "tls:\n  certificates: [~]\n", "3:18:", "expected a certificate, got nothing"},
    {L "tls:\n  certificates: [/a.pem]\n",
     "3:18:", "tls.certificates: expected a mapping (a certificate)"},
    {L "tls:\n  certificates: {cert: /a, key: /b}\n", "3:18:", "tls.certificates: expected a list"},
    {L "tls:\n  certificates: [{cert: /a, key: \"\"}]\n",
     "3:34:", "tls.certificates[].key: must not be empty"},
    {L "tls:\n  certificates: [{cert: /a, key: /b, chain: /c}]\n",
     "3:38:", "unknown key \"tls.certificates[].chain\""},
    {L "tls:\n  handshake_timeout: 10m\n", "3:22:", "10m is out of range 1s..5m"},
    {L "tls:\n  session_tickets: 1\n", "3:20:", "expected true or false"},
    {L "tls:\n  self_signed_dir: [a]\n", "3:21:", "expected a string, got a list"},
    /* auth */
    {L "auth:\n  max_failures: 0\n", "3:17:", "0 is out of range 1..1000"},
    {L "auth:\n  max_failures: 1001\n", "3:17:", "out of range 1..1000"},
    {L "auth:\n  failure_window: 2d\n", "3:19:", "2d is out of range 1s..1d"},
    {L "auth:\n  received_show_user: yes\n", "3:23:", "expected true or false"},
    {L "auth:\n  mechanisms: [PLAIN, GSSAPI]\n", "3:23:", "unknown SASL mechanism \"GSSAPI\""},
    {L "auth:\n  mechanisms: [SCRAM-SHA-1]\n", "3:16:", "unknown SASL mechanism"},
    /* relay.trusted_networks */
    {L "relay:\n  trusted_networks: [10.0.0.0/8, 10.0.0.0/33]\n",
     "3:34:", "invalid network \"10.0.0.0/33\": prefix length must be 0-32"},
    {L "relay:\n  trusted_networks: [1.2.3/8]\n", "3:22:", "invalid network \"1.2.3/8\""},
    {L "relay:\n  trusted_networks: [10.0.0.1/8]\n", "3:22:", "bits set beyond the /8"},
    {L "relay:\n  trusted_networks: [\"fe80::1/10\"]\n", "3:22:", "bits set beyond the /10"},
    {L "relay:\n  trusted_networks: [\"::/129\"]\n", "3:22:", "prefix length must be 0-128"},
    {L "relay:\n  trusted_networks: [\"10.0.0.0/\"]\n", "3:22:", "prefix length"},
    {L "relay:\n  trusted_networks: [\"10.0.0.0/+8\"]\n", "3:22:", "prefix length"},
    {L "relay:\n  trusted_networks: [\"\"]\n", "3:22:", "invalid network \"\""},
    {L "relay:\n  trusted_networks: [\"[::1]/128\"]\n", "3:22:", "invalid network"},
    {L "relay:\n  trusted_networks: [\" 10.0.0.0/8\"]\n", "3:22:", "invalid network"},
    {L "relay:\n  trusted_networks: [example.org]\n", "3:22:", "invalid network"},
    {L "relay:\n  trusted_networks: 10.0.0.0/8\n",
     "3:21:", "relay.trusted_networks: expected a list"},
    /* relay.senders */
    {L "relay:\n  senders:\n    - alice@example.org\n",
     "4:7:", "invalid senders line \"alice@example.org\": expected \"sender: login, ...\""},
    {L "relay:\n  senders: [\"@: a@b.example\"]\n", "3:13:", "sender must be local@domain or"},
    {L "relay:\n  senders: [\"a b@x.example: a@b.example\"]\n", "3:13:", "sender must be"},
    {L "relay:\n  senders: [\"x.example: a@b.example\"]\n", "3:13:", "sender must be"},
    {L "relay:\n  senders: [\"a@x.example:\"]\n", "3:13:", "logins must be a list"},
    {L "relay:\n  senders: [\"a@x.example: b@y.example,,c@y.example\"]\n",
     "3:13:", "logins must be a list"},
    {L "relay:\n  senders: [\"a@x.example: b@y.example,\"]\n", "3:13:", "logins must be"},
    {L "relay:\n  senders: [\"a@x.example: @y.example\"]\n", "3:13:", "logins must be"},
    {L "relay:\n  senders: [\"a@x.example: b y@y.example\"]\n", "3:13:", "logins must be"},
    {L "relay:\n  senders: [\"a@x.example: b@y..example\"]\n", "3:13:", "logins must be"},
    {L "relay:\n  sender_login_match: no\n", "3:23:", "expected true or false"},
    {L "relay:\n  bogus: 1\n", "3:3:", "unknown key \"relay.bogus\""},
    /* delivery */
    {L "delivery:\n  tls: maybe\n",
     "3:8:", "delivery.tls: invalid value \"maybe\": expected none, may, encrypt or verify"},
    {L "delivery:\n  smarthost_tls: [may]\n", "3:19:", "expected a scalar, got a list"},
    {L "delivery:\n  smarthost_tls: tls\n", "3:18:", "invalid value \"tls\""},
    {L "delivery:\n  smarthost: smtp.example.net\n",
     "3:14:", "delivery.smarthost: invalid smarthost \"smtp.example.net\""},
    {L "delivery:\n  smarthost: \"smtp.example.net:\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"smtp.example.net:0\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"[smtp.example.net]:25\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"*:25\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"[::1:25\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"::1:25\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  smarthost: \"unix:/run/smtp\"\n", "3:14:", "invalid smarthost"},
    {L "delivery:\n  helo_name: \"out example\"\n", "3:14:", "invalid host name"},
    {L "delivery:\n  smtp_port: 0\n", "3:14:", "0 is out of range 1..65535"},
    {L "delivery:\n  smtp_port: 65536\n", "3:14:", "out of range 1..65535"},
    {L "delivery:\n  destination_concurrency: 1001\n", "3:28:", "out of range 1..1000"},
    {L "delivery:\n  total_concurrency: 0\n", "3:22:", "out of range 1..10000"},
    {L "delivery:\n  connect_timeout: 11m\n", "3:20:", "11m is out of range 1s..10m"},
    {L "delivery:\n  command_timeout: 2h\n", "3:20:", "2h is out of range 1s..1h"},
    {L "delivery:\n  idle_timeout: 6m\n", "3:17:", "6m is out of range 0s..5m"},
    {L "delivery:\n  destination_idle: 0\n", "3:21:", "0 is out of range 1..1000"},
    {L "delivery:\n  total_idle: 10001\n", "3:15:", "out of range 1..10000"},
    {L "delivery:\n  data_timeout: 0\n", "3:17:", "0s is out of range 1s..1h"},
    {L "delivery:\n  max_lifetime: 31d\n", "3:17:", "31d is out of range 1m..30d"},
    {L "delivery:\n  max_lifetime: 59s\n", "3:17:", "out of range 1m..30d"},
    {L "delivery:\n  delay_warning: 31d\n", "3:18:", "out of range 0s..30d"},
    {L "delivery:\n  delay_warning: 5d\n",
     "3:18:", "delivery.delay_warning must be less than delivery.max_lifetime"},
    {L "delivery:\n  max_lifetime: 1h\n  delay_warning: 1h\n",
     "4:18:", "delay_warning must be less than"},
    {L "delivery:\n  max_lifetime: 4h\n", "3:17:", "delay_warning must be less than"},
    {L "delivery:\n  ipv6: yes\n", "3:9:", "expected true or false"},
    {L "delivery:\n  port: 25\n", "3:3:", "unknown key \"delivery.port\""},
    /* dns */
    {L "dns:\n  forwarders: [example.net]\n",
     "3:16:", "dns.forwarders: invalid forwarder \"example.net\""},
    {L "dns:\n  forwarders: [127.0.0.1, 127.0.0.1@0]\n",
     "3:27:", "invalid forwarder \"127.0.0.1@0\": port must be 1-65535"},
    {L "dns:\n  forwarders: [\"127.0.0.1@\"]\n", "3:16:", "port must be 1-65535"},
    {L "dns:\n  forwarders: [\"::1@65536\"]\n", "3:16:", "port must be 1-65535"},
    {L "dns:\n  forwarders: [\"[::1]\"]\n", "3:16:", "invalid forwarder"},
    {L "dns:\n  forwarders: [\"1.2.3.4:53\"]\n", "3:16:", "invalid forwarder"},
    {L "dns:\n  forwarders: [\"@53\"]\n", "3:16:", "invalid forwarder"},
    {L "dns:\n  forwarders: 127.0.0.1\n", "3:15:", "dns.forwarders: expected a list"},
    {L "dns:\n  servers: []\n", "3:3:", "unknown key \"dns.servers\""},
    /* routes: fields */
    {L "routes:\n  - {domain: a.example, transport: smtp}\n",
     "3:36:", "routes[].transport: invalid value \"smtp\": expected local, mx, relay or lmtp"},
    {L "routes:\n  - {domain: a.example, transport: mx, tls: optional}\n",
     "3:45:", "routes[].tls: invalid value \"optional\""},
    {L "routes:\n  - {domain: \"a example\", transport: mx}\n",
     "3:14:", "routes[].domain: invalid domain \"a example\""},
    {L "routes:\n  - {transport: mx}\n", "3:6:", "routes: route without domain"},
    {L "routes:\n  - domain: a.example\n", "3:5:", "routes: route without transport"},
    {L "routes:\n  - {domain: a.example, transport: relay, address: a.example}\n",
     "3:52:", "routes[].address: invalid address \"a.example\""},
    {L "routes:\n  - {domain: a.example, transport: lmtp, address: \"unix:run/lmtp\"}\n",
     "3:51:", "expected unix: and an absolute path"},
    {L "routes:\n  - {domain: a.example, transport: mx, port: 65536}\n",
     "3:46:", "routes[].port: 65536 is out of range 0..65535"},
    {L "routes:\n  - {domain: a.example, transport: mx, port: x}\n",
     "3:46:", "expected an unsigned integer"},
    {L "routes:\n  - {domain: a.example, transport: relay, address: \"b.example:25\", "
       "port: 26}\n",
     "3:6:", "route for a.example: port is for transport mx only (relay names its port in "
             "address)"},
    {L "routes:\n  - {domain: a.example, transport: local, port: 26}\n",
     "3:6:", "port is for transport mx only"},
    {L "routes:\n  - a.example\n", "3:5:", "routes: expected a mapping (a route)"},
    {L "routes: {domain: a.example, transport: mx}\n", "2:10:", "routes: expected a list"},
    /* routes: transports against addresses */
    {L "routes:\n  - {domain: a.example, transport: relay}\n",
     "3:6:", "routes: route for a.example: transport relay requires an address"},
    {L "routes:\n  - {domain: a.example, transport: lmtp, address: \"\"}\n",
     "3:6:", "route for a.example: transport lmtp requires an address"},
    {L "routes:\n  - {domain: a.example, transport: mx, address: \"b.example:25\"}\n",
     "3:6:", "route for a.example: transport mx takes no address (got \"b.example:25\")"},
    {L "routes:\n  - {domain: a.example, transport: local, address: \"unix:/x\"}\n",
     "3:6:", "transport local takes no address"},
    {L "routes:\n  - {domain: a.example, transport: mx, credentials: /etc/a.auth}\n",
     "3:6:", "route for a.example: transport mx takes no credentials"},
    {L "routes:\n  - {domain: a.example, transport: relay, address: \"unix:/run/s\"}\n",
     "3:6:", "route for a.example: a unix: address is for transport lmtp only"},
    {L "routes:\n  - {domain: a.example, transport: mx}\n"
       "  - {domain: b.example, transport: local}\n"
       "  - domain: A.Example\n    transport: relay\n    address: \"[192.0.2.1]:25\"\n",
     "5:5:", "routes: duplicate route for a.example (route 1 has it already)"},
    {"listen: [\"*:25\"\nuser: x\n", "2:1:", "wrongly indented flow sequence"},
    {"listen: [\"*:25\"\n", "2:1:", "flow sequence without a closing bracket"},
    {L "  user: x\n", "2:3:", "invalid indentation"},
    {L "user: \"\\q\"\n", "2:8:", "invalid escape"},
    {L "---\nuser: x\n", "3:1:", "only one YAML document"},
    {"- a\n- b\n", "1:3:", "expected a mapping of settings"},
    {"listen: &l [\"*:25\"]\nlocal_domains: *l\n", "2:16:", "aliases are not supported"},
    {L "state:\n  redis: redis.example:6379\n", "3:10:", "smtpd resolves no names"},
    {L "state:\n  redis: \"unix:run/redis.sock\"\n", "3:10:", "absolute path"},
    {L "state:\n  redis_failure: ignore\n", "3:18:", "ignore"},
    {L "state:\n  redis_timeout: 5ms\n", "3:18:", "out of range"},
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
#define DLV(f) offsetof(struct conf, delivery.f)

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
    {"tls: {handshake_timeout: 1s}", offsetof(struct conf, tls.handshake_timeout), 1000},
    {"tls: {handshake_timeout: 5m}", offsetof(struct conf, tls.handshake_timeout), 300000},
    {"auth: {max_failures: 1}", offsetof(struct conf, auth.max_failures), 1},
    {"auth: {max_failures: 1000}", offsetof(struct conf, auth.max_failures), 1000},
    {"auth: {failure_window: 1d}", offsetof(struct conf, auth.failure_window), 86400000},
    {"auth: {failure_window: 1s}", offsetof(struct conf, auth.failure_window), 1000},
    {"delivery: {smtp_port: 1}", DLV(smtp_port), 1},
    {"delivery: {smtp_port: 65535}", DLV(smtp_port), 65535},
    {"delivery: {destination_concurrency: 1000}", DLV(destination_concurrency), 1000},
    {"delivery: {total_concurrency: 10000}", DLV(total_concurrency), 10000},
    {"delivery: {connect_timeout: 10m}", DLV(connect_timeout), 600000},
    {"delivery: {connect_timeout: 1s}", DLV(connect_timeout), 1000},
    {"delivery: {command_timeout: 1h}", DLV(command_timeout), 3600000},
    {"delivery: {data_timeout: 60m}", DLV(data_timeout), 3600000},
    {"delivery: {max_lifetime: 30d}", DLV(max_lifetime), 30ULL * 86400000},
    {"delivery: {max_lifetime: 30d, delay_warning: 29d}", DLV(delay_warning), 29ULL * 86400000},
    {"delivery: {max_lifetime: 1m, delay_warning: 0}", DLV(max_lifetime), 60000},
    {"delivery: {max_lifetime: 1m, delay_warning: 59s}", DLV(delay_warning), 59000},
    {"delivery: {delay_warning: 0ms}", DLV(delay_warning), 0},
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
	const char *absent; /* not in the output, or NULL */
};

#define SAFE                                                                                       \
	"hostname: mx.example.org\nspool_dir: /s\nmaildir_root: /m\nlocal_domains: [a.example]\n"
#define DEVTLS "tls: {self_signed_dir: /t}\n"
#define CERTS "tls: {certificates: [{cert: /c, key: /k}]}\n"

static const struct check_case check_cases[] = {
    {SAFE DEVTLS "listen: [127.0.0.1:25]\naccept_any_user: true\n", 0, NULL, "warning"},
    {SAFE CERTS "listen: [\"*:25\"]\naccept_any_user: true\nuser: mail\n", 1,
     "accept_any_user is true on non-loopback", "self-signed"},
    {SAFE CERTS "listen: [\"*:25\"]\naccept_any_user: true\n", 2, "user is empty", NULL},
    {SAFE DEVTLS "listen: [\"[::1]:25\"]\n", 1, "no users_file", NULL},
    {SAFE DEVTLS "listen: [localhost:25]\nusers_file: /nonexistent/users\n", 1, "not readable",
     NULL},
    {"hostname: mx\nspool_dir: s\nmaildir_root: m\nlisten: [{address: 127.0.0.1:25, tls: "
     "none}]\n",
     4, "has no dot", NULL},
    /* TLS and AUTH on a public listener */
    {SAFE "accept_any_user: true\nuser: mail\nlisten: [{address: \"*:25\", tls: none}]\n", 2,
     "listener *:25 is not loopback and has tls: none", NULL},
    {SAFE "accept_any_user: true\nuser: mail\nlisten: [{address: 127.0.0.1:25, tls: none}]\n", 0,
     NULL, NULL},
    {SAFE CERTS "accept_any_user: true\nuser: mail\n"
                "listen: [{address: \"*:587\", plaintext_auth: true}]\n",
     2, "listener *:587 is not loopback and has plaintext_auth", NULL},
    {SAFE CERTS "accept_any_user: true\nuser: mail\n"
                "listen: [{address: \"*:587\", plaintext_auth: true, auth: false}]\n",
     1, "accept_any_user", "plaintext_auth"},
    {SAFE DEVTLS "accept_any_user: true\nuser: mail\nlisten: [\"*:25\"]\n", 2,
     "listener *:25 is not loopback and uses a self-signed certificate", NULL},
    {SAFE "tls: {self_signed_dir: /t, certificates: [{cert: /c, key: /k}]}\n"
          "accept_any_user: true\nuser: mail\nlisten: [\"*:25\"]\n",
     1, "accept_any_user", "self-signed"},
    {SAFE "accept_any_user: true\nlisten: [{address: 127.0.0.1:25, tls: none}]\n"
          "relay: {trusted_networks: [10.0.0.0/8, \"::1\"]}\n",
     1,
     "WARNING: relay.trusted_networks lets these networks relay without authentication: "
     "10.0.0.0/8 ::1\n",
     NULL},
    /* state.redis off this host without AUTH; on loopback or a unix socket it is fine */
    {SAFE "accept_any_user: true\nlisten: [{address: 127.0.0.1:25, tls: none}]\n"
          "state: {redis: \"10.0.0.5:6379\"}\n",
     1, "state.redis 10.0.0.5:6379 is not loopback and has no redis_password_file", NULL},
    {SAFE "accept_any_user: true\nlisten: [{address: 127.0.0.1:25, tls: none}]\n"
          "state: {redis: \"127.0.0.1:6379\"}\n",
     0, NULL, NULL},
    {SAFE "accept_any_user: true\nlisten: [{address: 127.0.0.1:25, tls: none}]\n"
          "state: {redis: \"unix:/run/redis/redis.sock\"}\n",
     0, NULL, NULL},
    {SAFE "accept_any_user: true\nlisten: [{address: 127.0.0.1:25, tls: none}]\n"
          "state: {redis: \"[2001:db8::1]:6379\", redis_password_file: /nonexistent/pw}\n",
     1, "state.redis_password_file /nonexistent/pw cannot be read", NULL},
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
		if (t->absent != NULL && strstr(out, t->absent) != NULL)
			fail_msg("case %zu: unexpected \"%s\":\n%s", i, t->absent, out);
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
    {"example.org", true},
    {"EXAMPLE.org", true},
    {"Example.Net", true},
    {"example.com", false},
    {"org", false},
    {"example.org.", false},
    {"", false},
    {"xexample.org", false},
    /* routes: a local route makes its domain local; other transports do not */
    {"Local.Example", true},
    {"mx.example", false},
    {"relay.example", false},
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

/* --- delivery: routes and their warnings ----------------------------------- */

#define ROUTES                                                                                     \
	"local_domains: [Home.Example, local.example]\n"                                           \
	"routes:\n"                                                                                \
	"  - {domain: Lmtp.Example, transport: lmtp, address: \"unix:/run/lmtp\"}\n"               \
	"  - {domain: relay.example, transport: relay, address: \"[2001:db8::1]:587\",\n"          \
	"     tls: verify, credentials: /r.auth}\n"                                                \
	"  - {domain: local.example, transport: relay, address: \"localhost:25\"}\n"               \
	"  - {domain: other.example, transport: local}\n"                                          \
	"  - {domain: store.example, transport: lmtp, address: \"[192.0.2.24]:24\", tls: none}\n"
#define SMART "delivery: {smarthost: \"smtp.example.net:587\", smarthost_credentials: /s.auth}\n"

struct route_case {
	const char *yaml; /* after a listener */
	const char *domain;
	int index;              /* the routes[] entry it must be, or -1 for a default */
	struct conf_route want; /* domain "" for a default route */
};

#define MX(tls)                                                                                    \
	{                                                                                          \
		"", CONF_TRANSPORT_MX, "", tls, "", 0, false, CONF_VERIFY_DEFER                      \
	}
#define LOCAL                                                                                      \
	{                                                                                          \
		"", CONF_TRANSPORT_LOCAL, "", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER       \
	}

static const struct route_case route_cases[] = {
    {ROUTES,
     "lmtp.example",
     0,
     {"lmtp.example", CONF_TRANSPORT_LMTP, "unix:/run/lmtp", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER}},
    {ROUTES,
     "LMTP.EXAMPLE",
     0,
     {"lmtp.example", CONF_TRANSPORT_LMTP, "unix:/run/lmtp", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER}},
    {ROUTES SMART,
     "Relay.Example",
     1,
     {"relay.example", CONF_TRANSPORT_RELAY, "[2001:db8::1]:587", CONF_TLSPOL_VERIFY, "/r.auth", 0, false, CONF_VERIFY_DEFER}},
    /* A route wins over local_domains. */
    {ROUTES,
     "local.example",
     2,
     {"local.example", CONF_TRANSPORT_RELAY, "localhost:25", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER}},
    {ROUTES, "other.example", 3, {"other.example", CONF_TRANSPORT_LOCAL, "", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER}},
    {ROUTES,
     "store.example",
     4,
     {"store.example", CONF_TRANSPORT_LMTP, "[192.0.2.24]:24", CONF_TLSPOL_NONE, "", 0, false, CONF_VERIFY_DEFER}},
    /* local_domains: a local route owned by conf */
    {ROUTES, "home.example", -1, LOCAL},
    {ROUTES SMART, "HOME.EXAMPLE", -1, LOCAL},
    {"local_domains: [a.example]\n", "A.example", -1, LOCAL},
    /* otherwise the smarthost, with its policy and credentials */
    {ROUTES SMART,
     "nowhere.example",
     -1,
     {"", CONF_TRANSPORT_RELAY, "smtp.example.net:587", CONF_TLSPOL_ENCRYPT, "/s.auth", 0, false, CONF_VERIFY_DEFER}},
    {"delivery: {smarthost: \"[192.0.2.1]:25\", smarthost_tls: none, tls: verify}\n",
     "x.example",
     -1,
     {"", CONF_TRANSPORT_RELAY, "[192.0.2.1]:25", CONF_TLSPOL_NONE, "", 0, false, CONF_VERIFY_DEFER}},
    {"delivery: {smarthost: \"192.0.2.1:2525\", smarthost_tls: may}\n",
     "x.example",
     -1,
     {"", CONF_TRANSPORT_RELAY, "192.0.2.1:2525", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER}},
    /* otherwise MX with delivery.tls */
    {ROUTES, "nowhere.example", -1, MX(CONF_TLSPOL_MAY)},
    {"delivery: {tls: verify}\n", "x.example", -1, MX(CONF_TLSPOL_VERIFY)},
    {"delivery: {tls: none, smarthost_tls: verify}\n", "x.example", -1, MX(CONF_TLSPOL_NONE)},
    /* exact matches only: no subdomains, no trailing dot, no empty name */
    {ROUTES, "a.lmtp.example", -1, MX(CONF_TLSPOL_MAY)},
    {ROUTES, "lmtp.example.", -1, MX(CONF_TLSPOL_MAY)},
    {ROUTES, "mtp.example", -1, MX(CONF_TLSPOL_MAY)},
    {ROUTES, "", -1, MX(CONF_TLSPOL_MAY)},
    {ROUTES SMART,
     "",
     -1,
     {"", CONF_TRANSPORT_RELAY, "smtp.example.net:587", CONF_TLSPOL_ENCRYPT, "/s.auth", 0, false, CONF_VERIFY_DEFER}},
};

static struct conf *conf_load_after_listener(const char *text)
{
	char path[512], err[512], yaml[2048];
	struct conf *c = NULL;

	int n = snprintf(yaml, sizeof(yaml), "%s%s", L, text);
	assert_true(n > 0 && (size_t)n < sizeof(yaml));
	test_file_write("t.yaml", yaml, (size_t)n, path, sizeof(path));
	if (conf_load(path, &c, err, sizeof(err)) < 0)
		fail_msg("%s:\n%s", err, yaml);
	return c;
}

static void test_route_for(void **state)
{
	char what[128];

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(route_cases); i++) {
		const struct route_case *t = &route_cases[i];
		struct conf *c = conf_load_after_listener(t->yaml);
		const struct conf_route *r = conf_route_for(c, t->domain);

		snprintf(what, sizeof(what), "case %zu (%s)", i, t->domain);
		assert_non_null(r);
		if (t->index >= 0 && r != &c->routes[t->index])
			fail_msg("%s: not routes[%d]", what, t->index);
		if (t->index < 0 && r >= c->routes && r < c->routes + c->n_routes)
			fail_msg("%s: a routes[] entry, want a default", what);
		conf_route_verify(r, &t->want, what);
		/* The same route each time: nothing is built per call. */
		assert_ptr_equal(conf_route_for(c, t->domain), r);
		conf_free(&c);
	}

	/* No domain is no match: the default for other domains. */
	struct conf *c = conf_load_after_listener(ROUTES SMART);
	assert_ptr_equal(conf_route_for(c, NULL), conf_route_for(c, "nowhere.example"));
	assert_null(conf_route_for(NULL, "lmtp.example"));
	conf_free(&c);
}

/* Check cases that need files: "@D" in yaml stands for the test directory. */
struct check_file_case {
	const char *yaml;
	int want;
	const char *substr; /* in the output, or NULL */
	const char *absent; /* not in the output, or NULL */
};

#define QUIET SAFE DEVTLS "listen: [127.0.0.1:25]\naccept_any_user: true\n"

static const struct check_file_case check_file_cases[] = {
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/cred600}\n", 0, NULL,
     "warning"},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/cred640}\n", 1,
     "warning: delivery.smarthost_credentials @D/cred640 is accessible to group or others "
     "(mode 0640)",
     NULL},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/cred604}\n", 1,
     "cred604 is accessible to group or others (mode 0604)", NULL},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/nope}\n", 1,
     "delivery.smarthost_credentials @D/nope cannot be read", NULL},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/cred600,\n"
           "  smarthost_tls: none}\n",
     1,
     "WARNING: delivery.smarthost sends its credentials (SMTP AUTH) to s.example:587 "
     "without TLS",
     NULL},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_credentials: @D/cred640,\n"
           "  smarthost_tls: none}\n",
     2, "WARNING: delivery.smarthost sends", NULL},
    {QUIET "delivery: {smarthost: \"s.example:587\", smarthost_tls: none}\n", 0, NULL, "WARNING"},
    {QUIET "delivery: {smarthost_credentials: @D/cred600}\n", 1,
     "delivery.smarthost is empty: the credentials are not used", NULL},
    {QUIET "routes: [{domain: r.example, transport: relay, address: \"[::1]:25\",\n"
           "  credentials: @D/cred604}]\n",
     1, "routes: credentials of r.example @D/cred604 is accessible", NULL},
    {QUIET "routes: [{domain: r.example, transport: relay, address: \"r2.example:25\",\n"
           "  credentials: @D/cred600, tls: none}]\n",
     1, "WARNING: the route for r.example sends its credentials (SMTP AUTH) to r2.example:25",
     NULL},
    {QUIET "routes: [{domain: r.example, transport: relay, address: \"r2.example:25\",\n"
           "  credentials: @D/cred600, tls: encrypt}]\n",
     0, NULL, "WARNING"},
    /* LMTP across the network: information, not a warning */
    {QUIET "routes: [{domain: l.example, transport: lmtp, address: \"192.0.2.24:24\"}]\n", 0,
     "info: the route for l.example delivers by LMTP to 192.0.2.24:24, not on loopback", NULL},
    {QUIET "routes: [{domain: l.example, transport: lmtp, address: \"127.0.0.1:24\"}]\n", 0, NULL,
     "info:"},
    {QUIET "routes: [{domain: l.example, transport: lmtp, address: \"[::1]:24\"}]\n", 0, NULL,
     "info:"},
    {QUIET "routes: [{domain: l.example, transport: lmtp, address: \"localhost:24\"}]\n", 0, NULL,
     "info:"},
    {QUIET "routes: [{domain: l.example, transport: lmtp, address: \"unix:/run/lmtp\"}]\n", 0, NULL,
     "info:"},
    {QUIET "routes: [{domain: l.example, transport: relay, address: \"192.0.2.24:25\"}]\n", 0, NULL,
     "info:"},
    {QUIET "delivery: {ca_file: @D/nope}\n", 1, "delivery.ca_file @D/nope is not readable", NULL},
    {QUIET "delivery: {ca_file: @D/cred604}\ndns: {trust_anchor: @D/nope}\n", 1,
     "dns.trust_anchor @D/nope is not readable", NULL},
};

/* Replace each "@D" of pat by test_dir. */
static void test_dir_expand(const char *pat, char *out, size_t outlen)
{
	size_t o = 0, dlen = strlen(test_dir);

	for (const char *p = pat; *p != '\0'; p++) {
		bool dir = p[0] == '@' && p[1] == 'D';
		assert_true(o + (dir ? dlen : 1) < outlen);
		if (dir) {
			memcpy(out + o, test_dir, dlen);
			o += dlen;
			p++;
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

static void test_check_delivery(void **state)
{
	static const struct {
		const char *name;
		mode_t mode;
	} files[] = {{"cred600", 0600}, {"cred640", 0640}, {"cred604", 0604}};
	char path[512], err[512], yaml[2048], substr[1024];
	struct conf *c;

	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(files); i++) {
		test_file_write(files[i].name, "user:secret\n", 12, path, sizeof(path));
		assert_int_equal(chmod(path, files[i].mode), 0);
	}
	for (size_t i = 0; i < N_ELEMENTS(check_file_cases); i++) {
		const struct check_file_case *t = &check_file_cases[i];
		char *out = NULL;
		size_t outlen;
		test_dir_expand(t->yaml, yaml, sizeof(yaml));
		test_file_write("t.yaml", yaml, strlen(yaml), path, sizeof(path));
		if (conf_load(path, &c, err, sizeof(err)) < 0)
			fail_msg("case %zu: %s", i, err);
		FILE *f = open_memstream(&out, &outlen);
		assert_non_null(f);
		int n = conf_check(c, f);
		fclose(f);
		if (t->substr != NULL)
			test_dir_expand(t->substr, substr, sizeof(substr));
		if (t->absent != NULL && strstr(out, t->absent) != NULL)
			fail_msg("case %zu: unexpected \"%s\":\n%s", i, t->absent, out);
		if (n != t->want || (t->substr != NULL && strstr(out, substr) == NULL))
			fail_msg("case %zu: %d warnings, want %d with \"%s\":\n%s", i, n, t->want,
			         t->substr != NULL ? substr : "", out);
		free(out);
		conf_free(&c);
	}
}

/* --- relay: trusted networks and sender ownership ------------------------ */

/* Load L plus a relay section; fails the test on error. */
static struct conf *conf_load_relay(const char *relay)
{
	char path[512], err[512], yaml[1024];
	struct conf *c = NULL;

	int n = snprintf(yaml, sizeof(yaml), "%srelay:\n%s", L, relay);
	test_file_write("t.yaml", yaml, (size_t)n, path, sizeof(path));
	if (conf_load(path, &c, err, sizeof(err)) < 0)
		fail_msg("%s:\n%s", err, yaml);
	return c;
}

#define NETS                                                                                       \
	"  trusted_networks: [192.0.2.0/24, 10.0.0.1, \"2001:db8::/32\", \"::1\", "                \
	"198.51.100.128/25, "                                                                      \
	"172.16.0.0/12]\n"

struct net_case {
	const char *relay;
	int family; /* AF_INET or AF_INET6 */
	const char *addr;
	bool want;
};

static const struct net_case net_cases[] = {
    {NETS, AF_INET, "192.0.2.1", true},
    {NETS, AF_INET, "192.0.2.255", true},
    {NETS, AF_INET, "192.0.3.0", false},
    {NETS, AF_INET, "192.0.1.255", false},
    {NETS, AF_INET, "10.0.0.1", true}, /* a bare address is /32 */
    {NETS, AF_INET, "10.0.0.2", false},
    {NETS, AF_INET, "198.51.100.128", true},
    {NETS, AF_INET, "198.51.100.255", true},
    {NETS, AF_INET, "198.51.100.127", false},
    {NETS, AF_INET, "172.31.255.255", true},
    {NETS, AF_INET, "172.32.0.0", false},
    {NETS, AF_INET, "8.8.8.8", false},
    {NETS, AF_INET6, "2001:db8::1", true},
    {NETS, AF_INET6, "2001:db8:ffff:ffff::1", true},
    {NETS, AF_INET6, "2001:db9::1", false},
    {NETS, AF_INET6, "::1", true}, /* a bare address is /128 */
    {NETS, AF_INET6, "::2", false},
    {NETS, AF_INET6, "::ffff:192.0.2.9", true}, /* v4-mapped matches IPv4 networks */
    {NETS, AF_INET6, "::ffff:10.0.0.1", true},
    {NETS, AF_INET6, "::ffff:10.0.0.2", false},
    {NETS, AF_INET6, "::192.0.2.9", false}, /* v4-compatible is not v4-mapped */
    {NETS, AF_INET6, "::ffff:8.8.8.8", false},
    {"  trusted_networks: [0.0.0.0/0]\n", AF_INET, "203.0.113.7", true},
    {"  trusted_networks: [0.0.0.0/0]\n", AF_INET6, "::ffff:203.0.113.7", true},
    {"  trusted_networks: [0.0.0.0/0]\n", AF_INET6, "2001:db8::1", false},
    {"  trusted_networks: [\"::/0\"]\n", AF_INET6, "2001:db8::1", true},
    {"  trusted_networks: [\"::/0\"]\n", AF_INET, "203.0.113.7", false},
    {"  trusted_networks: [\"::/0\"]\n", AF_INET6, "::ffff:203.0.113.7", false},
    {"  trusted_networks: [203.0.113.7/32]\n", AF_INET, "203.0.113.7", true},
    {"  trusted_networks: [203.0.113.7/32]\n", AF_INET, "203.0.113.6", false},
    {"  trusted_networks: [128.0.0.0/1]\n", AF_INET, "128.0.0.0", true},
    {"  trusted_networks: [128.0.0.0/1]\n", AF_INET, "127.255.255.255", false},
    {"  trusted_networks: [\"2001:db8::ff00/120\"]\n", AF_INET6, "2001:db8::ffff", true},
    {"  trusted_networks: [\"2001:db8::ff00/120\"]\n", AF_INET6, "2001:db8::1:ff00", false},
    {"  trusted_networks: []\n", AF_INET, "127.0.0.1", false},
    {"  sender_login_match: true\n", AF_INET6, "::1", false},
};

static void test_trusted_network(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(net_cases); i++) {
		const struct net_case *t = &net_cases[i];
		struct sockaddr_storage ss = {0};
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		void *dst =
		    t->family == AF_INET ? (void *)&sin->sin_addr : (void *)&sin6->sin6_addr;

		ss.ss_family = (sa_family_t)t->family;
		assert_int_equal(inet_pton(t->family, t->addr, dst), 1);
		struct conf *c = conf_load_relay(t->relay);
		if (conf_is_trusted_network(c, (struct sockaddr *)&ss) != t->want)
			fail_msg("case %zu: %s in %s: want %d", i, t->addr, t->relay, t->want);
		assert_false(conf_is_trusted_network(c, NULL));
		conf_free(&c);
	}

	/* Not an IP client: never trusted; no configuration: nothing trusted. */
	struct conf *c = conf_load_relay("  trusted_networks: [\"0.0.0.0/0\", \"::/0\"]\n");
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct sockaddr_in sin = {.sin_family = AF_INET};
	assert_false(conf_is_trusted_network(c, (struct sockaddr *)&sun));
	assert_true(conf_is_trusted_network(c, (struct sockaddr *)&sin));
	assert_false(conf_is_trusted_network(NULL, (struct sockaddr *)&sin));
	conf_free(&c);
}

#define SENDERS                                                                                    \
	"  senders:\n"                                                                             \
	"    - \"postmaster@example.org: alice@example.org, Bob@Example.org\"\n"                   \
	"    - \" @Shared.example :carol@example.org\"\n"

struct sender_case {
	const char *relay;
	const char *sender, *login;
	bool want;
};

static const struct sender_case sender_cases[] = {
    {SENDERS, "alice@example.org", "alice@example.org", true},
    {SENDERS, "Alice@EXAMPLE.org", "alice@example.org", true},
    {SENDERS, "alice@example.org", "ALICE@example.ORG", true},
    {SENDERS, "alice+lists@example.org", "alice@example.org", true},
    {SENDERS, "alice+a+b@example.org", "alice@example.org", true},
    {SENDERS, "alice+@example.org", "alice@example.org", true},
    {SENDERS, "+alice@example.org", "alice@example.org", false},
    {SENDERS, "alice+x@example.org", "alice+x@example.org", true},
    {SENDERS, "alice+x@example.org", "alice+y@example.org", false},
    {SENDERS, "alice@example.org", "bob@example.org", false},
    {SENDERS, "alice@example.net", "alice@example.org", false},
    {SENDERS, "alicex@example.org", "alice@example.org", false},
    {SENDERS, "alic@example.org", "alice@example.org", false},
    {SENDERS, "bob+alice@example.org", "alice@example.org", false},
    {SENDERS, "alice", "alice@example.org", false},
    {SENDERS, "alice@example.org", "", false},
    {SENDERS, "", "alice@example.org", true}, /* the null sender: bounces */
    {SENDERS, "", "", true},
    {SENDERS, "postmaster@example.org", "alice@example.org", true},
    {SENDERS, "postmaster@example.org", "bob@example.org", true},
    {SENDERS, "POSTMASTER@Example.Org", "BOB@example.org", true},
    {SENDERS, "postmaster+x@example.org", "alice@example.org", true},
    {SENDERS, "postmaster@example.org", "carol@example.org", false},
    {SENDERS, "postmaster@example.net", "alice@example.org", false},
    {SENDERS, "anyone@shared.example", "carol@example.org", true},
    {SENDERS, "x@SHARED.example", "Carol@example.org", true},
    {SENDERS, "x@sub.shared.example", "carol@example.org", false},
    {SENDERS, "x@shared.example.org", "carol@example.org", false},
    {SENDERS, "x@shared.example", "alice@example.org", false},
    {SENDERS, "shared.example", "carol@example.org", false},
    {"  senders: []\n", "postmaster@example.org", "alice@example.org", false},
    {"  sender_login_match: false\n", "anyone@anywhere.example", "alice@example.org", true},
    {"  sender_login_match: false\n" SENDERS, "x@y.example", "nobody@example.org", true},
};

static void test_sender_allowed(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(sender_cases); i++) {
		const struct sender_case *t = &sender_cases[i];
		struct conf *c = conf_load_relay(t->relay);
		if (conf_sender_allowed(c, t->sender, t->login) != t->want)
			fail_msg("case %zu: sender \"%s\" login \"%s\": want %d", i, t->sender,
			         t->login, t->want);
		assert_false(conf_sender_allowed(c, NULL, t->login));
		conf_free(&c);
	}
	assert_false(conf_sender_allowed(NULL, "a@b", "a@b"));

	/* A login of NULL is no login. */
	struct conf *c = conf_load_relay(SENDERS);
	assert_false(conf_sender_allowed(c, "alice@example.org", NULL));
	assert_true(conf_sender_allowed(c, "", NULL));
	conf_free(&c);
}

static void test_reference(void **state)
{
	static const char *const rows[] = {
	    "| `hostname` | string | the system host name",
	    "| `user` | string | `\"\"` |  |",
	    "| `listen` | list of listeners | `[]` |",
	    "| `listen[].address` | string | required |  | ",
	    "| `listen[].tls` | none, starttls or implicit | `starttls` |  | ",
	    "| `listen[].plaintext_auth` | bool | `false` |",
	    "| `tls.certificates` | list of certificates | `[]` |",
	    "| `tls.certificates[].key` | string | required |",
	    "| `tls.self_signed_dir` | string | `\"\"` |",
	    "| `tls.handshake_timeout` | duration | `30s` | 1s..5m |",
	    "| `auth.max_failures` | uint | `5` | 1..1000 |",
	    "| `auth.failure_window` | duration | `10m` | 1s..1d |",
	    "| `relay.trusted_networks` | list of strings | `[]` |",
	    "| `relay.sender_login_match` | bool | `true` |",
	    "  - address: 127.0.0.1:2525\n    plaintext_auth: true\n",
	    "| `limits.message_size` | size | `25M` | 1K..2G |",
	    "| `limits.command_line` | uint | `512` | 512..65536 |",
	    "| `timeouts.session` | duration | `30m` | 1s..1d |",
	    "| `queue.retry_max` | duration | `1h` | 1s..7d |",
	    "| `routes` | list of routes | `[]` |  | ",
	    "| `routes[].domain` | string | required |  | ",
	    "| `routes[].transport` | local, mx, relay or lmtp | required |  | ",
	    "| `routes[].tls` | none, may, encrypt or verify | `may` |  | ",
	    "| `routes[].credentials` | string | `\"\"` |  | ",
	    "| `delivery.smarthost` | string | `\"\"` |  | ",
	    "| `delivery.smarthost_tls` | none, may, encrypt or verify | `encrypt` |",
	    "| `delivery.smtp_port` | uint | `25` | 1..65535 |",
	    "| `delivery.destination_concurrency` | uint | `20` | 1..1000 |",
	    "| `delivery.total_concurrency` | uint | `100` | 1..10000 |",
	    "| `delivery.connect_timeout` | duration | `30s` | 1s..10m |",
	    "| `delivery.command_timeout` | duration | `5m` | 1s..1h |",
	    "| `delivery.data_timeout` | duration | `10m` | 1s..1h |",
	    "| `delivery.max_lifetime` | duration | `5d` | 1m..30d |",
	    "| `delivery.delay_warning` | duration | `4h` | 0s..30d |",
	    "| `delivery.ipv6` | bool | `true` |",
	    "| `dns.forwarders` | list of strings | `[]` |",
	    "| `dns.trust_anchor` | string | `\"\"` |",
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

/* Relay credentials (issue 8): read at load, again at reload; a file that
 * fails keeps its pair, in place (smtpc sessions hold the pointers). */
static void test_credentials(void **state)
{
	(void)state;
	char a[512], b[512], missing[512], longline[700];
	const char *user, *pass, *user0, *pass0;
	test_file_write("cred-a", "relay:s3cret:x\n", 15, a, sizeof(a));
	test_file_write("cred-b", "nocolon\n", 8, b, sizeof(b));
	snprintf(missing, sizeof(missing), "%s/no-such-cred", test_dir);
	struct conf_route routes[] = {
	    {"r1.example", CONF_TRANSPORT_RELAY, "r1.example:25", CONF_TLSPOL_MAY, b, 0, false, CONF_VERIFY_DEFER},
	    {"r2.example", CONF_TRANSPORT_RELAY, "r2.example:25", CONF_TLSPOL_MAY, a, 0, false, CONF_VERIFY_DEFER},
	    {"r3.example", CONF_TRANSPORT_LMTP, "r3.example:24", CONF_TLSPOL_MAY, missing, 0, false, CONF_VERIFY_DEFER},
	    {"r4.example", CONF_TRANSPORT_LMTP, "r4.example:24", CONF_TLSPOL_MAY, "", 0, false, CONF_VERIFY_DEFER},
	};
	struct conf conf;
	memset(&conf, 0, sizeof(conf));
	conf.delivery.smarthost_credentials = a;
	conf.routes = routes;
	conf.n_routes = sizeof(routes) / sizeof(routes[0]);

	struct credentials *cr = credentials_load(&conf);
	assert_true(credentials_get(cr, a, &user0, &pass0));
	assert_string_equal(user0, "relay");
	assert_string_equal(pass0, "s3cret:x"); /* the first colon splits */
	assert_false(credentials_get(cr, b, &user, &pass)); /* no colon */
	assert_false(credentials_get(cr, missing, &user, &pass));
	assert_false(credentials_get(cr, "", &user, &pass));
	assert_false(credentials_get(cr, "/elsewhere", &user, &pass));

	/* fixed files are read again; a changed one is replaced in place */
	test_file_write("cred-a", "relay2:pw2", 10, a, sizeof(a));
	test_file_write("cred-b", "u:p\r\n", 5, b, sizeof(b));
	credentials_reload(cr);
	assert_true(credentials_get(cr, a, &user, &pass));
	assert_ptr_equal(user, user0);
	assert_string_equal(user, "relay2");
	assert_string_equal(pass, "pw2");
	assert_true(credentials_get(cr, b, &user, &pass));
	assert_string_equal(user, "u");
	assert_string_equal(pass, "p");

	/* gone, malformed or too long: the loaded pair stays */
	assert_int_equal(unlink(a), 0);
	memset(longline, 'x', sizeof(longline));
	memcpy(longline, "u:", 2);
	test_file_write("cred-b", longline, sizeof(longline), b, sizeof(b));
	credentials_reload(cr);
	assert_true(credentials_get(cr, a, &user, &pass));
	assert_string_equal(user, "relay2");
	assert_true(credentials_get(cr, b, &user, &pass));
	assert_string_equal(pass, "p");
	test_file_write("cred-b", ":empty-user\n", 12, b, sizeof(b));
	credentials_reload(cr);
	assert_true(credentials_get(cr, b, &user, &pass));
	assert_string_equal(user, "u");

	credentials_free(&cr);
	assert_null(cr);
	credentials_free(&cr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_embedded_default), cmocka_unit_test(test_production_defaults),
	    cmocka_unit_test(test_full_roundtrip),   cmocka_unit_test(test_default_roundtrip),
	    cmocka_unit_test(test_errors),           cmocka_unit_test(test_error_io),
	    cmocka_unit_test(test_values),           cmocka_unit_test(test_check),
	    cmocka_unit_test(test_local_domain),     cmocka_unit_test(test_trusted_network),
	    cmocka_unit_test(test_sender_allowed),   cmocka_unit_test(test_reference),
	    cmocka_unit_test(test_users_good),       cmocka_unit_test(test_users_errors),
	    cmocka_unit_test(test_users_limits),     cmocka_unit_test(test_route_for),
	    cmocka_unit_test(test_check_delivery),   cmocka_unit_test(test_credentials),
	};
	return cmocka_run_group_tests(tests, test_dir_setup, test_dir_teardown);
}
