/* conf.c — the configuration. One settings table (conf_settings[] below)
 * declares every setting once: YAML key, type, default, range, doc and where
 * it lives in struct conf. The same table applies the defaults, walks the
 * YAML document (libfyaml), prints `hikyaku config dump` and generates
 * docs/CONFIG.md, so the four can never disagree. A list of records (listen,
 * tls.certificates) declares its fields in a table of the same kind.
 *
 * Runs in the master (root) at start and on SIGHUP, and in `hikyaku check`.
 * The file is trusted (root-owned) but it is still parsed with bounds: a size
 * cap on the file, every number range-checked, unknown keys refused so that a
 * typo is not silently ignored, aliases refused (no expansion bombs). Every
 * error names "file:line:column". The relay section's rules live in
 * conf_relay.c, the delivery routes in conf_delivery.c, the dump and the
 * reference in conf_dump.c, the operator warnings in conf_check.c. */
#include "conf/conf.h"
#include "conf/conf_int.h"

#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/cidr.h"
#include "lib/rstate.h"
#include "lib/strutil.h"
#include "mail/idna.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONF_FILE_MAX (1024 * 1024) /* a config file is small; refuse anything silly */
#define CONF_MSG_MAX 512
#define CONF_KEY_MAX 128
#define CONF_FIELDS_MAX 32 /* fields of one record: a bit each while walking */
#define CONF_EMBEDDED_NAME "(embedded default)"

/* The development default of DESIGN.md ("Configuration"); it goes through
 * the same parser as a file, so it is validated like one. AUTH without TLS
 * is allowed on its loopback listener so that a plain `swaks` works (issue 3);
 * STARTTLS uses a certificate generated under ./var/tls. */
/* user: started as root (a container, the README's tour), smtpd and the
 * queue run as nobody; a non-root user keeps its own uid. */
const char conf_embedded_default[] = "user: nobody\n"
                                     "listen:\n"
                                     "  - address: 127.0.0.1:2525\n"
                                     "    plaintext_auth: true\n"
                                     "tls:\n"
                                     "  self_signed_dir: ./var/tls\n"
                                     "spool_dir: ./var/spool\n"
                                     "maildir_root: ./var/mail\n"
                                     "local_domains: [localhost]\n"
                                     "accept_any_user: true\n";

/* Enum settings are stored through an int. */
_Static_assert(sizeof(enum conf_tls_mode) == sizeof(int), "enum conf_tls_mode is not an int");
_Static_assert(sizeof(enum conf_tls_policy) == sizeof(int), "enum conf_tls_policy is not an int");
_Static_assert(sizeof(enum conf_transport) == sizeof(int), "enum conf_transport is not an int");

static char *conf_hostname_default(void);
static conf_check_fn conf_log_level_check;
static conf_check_fn conf_path_check;
static conf_check_fn conf_hostname_check;
static conf_check_fn conf_domain_check;
static conf_check_fn conf_listener_check;
static conf_check_fn conf_helo_name_check;
static conf_check_fn conf_auth_mechanism_check;
static conf_check_fn conf_dnsbl_zone_check;
static conf_check_fn conf_dnsbl_codes_check;
static conf_check_fn conf_state_redis_check;

static const char *const conf_reject_at_names[] = {"connect", "rcpt", NULL};
static const char *const conf_sandbox_auth_names[] = {"any", "users", NULL};
_Static_assert(sizeof(enum conf_sandbox_auth) == sizeof(int), "enum conf_sandbox_auth is not an int");
static const char *const conf_state_failure_names[] = {"tempfail", "accept", NULL};
_Static_assert(sizeof(enum conf_reject_at) == sizeof(int), "enum conf_reject_at is not an int");
static conf_check_fn conf_dkim_selector_check;

#define OFF(field) offsetof(struct conf, field)
#define LOFF(field) offsetof(struct conf_listener, field)
#define COFF(field) offsetof(struct conf_tls_cert, field)
#define ROFF(field) offsetof(struct conf_route, field)
#define DOFF(field) offsetof(struct conf_dnsbl_list, field)
#define MOFF(field) offsetof(struct conf_milter, field)
#define KOFF(field) offsetof(struct conf_dkim_key, field)
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))
#define KIB 1024ULL
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * 1024 * 1024)
#define SEC 1000ULL
#define MIN (60ULL * 1000)
#define DAY (86400ULL * 1000)

static const char *const conf_tls_modes[] = {
    [CONF_TLS_NONE] = "none",
    [CONF_TLS_STARTTLS] = "starttls",
    [CONF_TLS_IMPLICIT] = "implicit",
    NULL,
};

/* STARTTLS policies for outbound SMTP and LMTP (RFC 3207; "may" is the
 * opportunistic security of RFC 7435). */
const char *const conf_tls_policies[] = {
    [CONF_TLSPOL_NONE] = "none",
    [CONF_TLSPOL_MAY] = "may",
    [CONF_TLSPOL_ENCRYPT] = "encrypt",
    [CONF_TLSPOL_VERIFY] = "verify",
    NULL,
};

static const char *const conf_log_formats[] = {
    [CONF_LOG_KV] = "kv",
    [CONF_LOG_JSON] = "json",
    NULL,
};

static const char *const conf_log_targets[] = {
    [CONF_LOG_STDERR] = "stderr",
    [CONF_LOG_SYSLOG] = "syslog",
    NULL,
};

static conf_check_fn conf_http_listen_check;

static const char *const conf_dmarc_enforce_names[] = {
	"none",
	"quarantine",
	"reject",
	NULL,
};

static const char *const conf_arc_seal_names[] = {
    [CONF_ARC_SEAL_FORWARDED] = "forwarded",
    [CONF_ARC_SEAL_ALWAYS] = "always",
    [CONF_ARC_SEAL_NEVER] = "never",
    NULL,
};

static const char *const conf_dauth_temperror_names[] = {
	"accept",
	"tempfail",
	NULL,
};

static const char *const conf_verify_tempfail_names[] = {
	"defer",
	"accept",
	NULL,
};

const char *const conf_transports[] = {
    [CONF_TRANSPORT_LOCAL] = "local",
    [CONF_TRANSPORT_MX] = "mx",
    [CONF_TRANSPORT_RELAY] = "relay",
    [CONF_TRANSPORT_LMTP] = "lmtp",
    NULL,
};

/* One setting per block reads better than clang-format's one field per line. */
/* clang-format off */
static const struct conf_setting conf_listener_fields[] = {
	{ .key = "address", .type = CONF_T_STRING, .required = true, .off = LOFF(address),
	  .check = conf_listener_check,
	  .doc = "\"host:port\", \"[v6]:port\" or \"*:port\" (all addresses)." },
	{ .key = "tls", .type = CONF_T_ENUM, .def = "starttls", .names = conf_tls_modes,
	  .off = LOFF(tls), .lower = true,
	  .doc = "none (plaintext only), starttls (offered after EHLO, RFC 3207) or implicit "
		 "(TLS from the first octet, RFC 8314 §3, port 465); TLS needs "
		 "tls.certificates or tls.self_signed_dir." },
	{ .key = "submission", .type = CONF_T_BOOL, .def = "false", .off = LOFF(submission),
	  .doc = "Message submission (RFC 6409): AUTH (RFC 4954) is required before MAIL; "
		 "needs auth and TLS (or plaintext_auth)." },
	{ .key = "auth", .type = CONF_T_BOOL, .def = "true", .off = LOFF(auth),
	  .doc = "Offer SMTP AUTH (RFC 4954), after TLS unless plaintext_auth." },
	{ .key = "plaintext_auth", .type = CONF_T_BOOL, .def = "false",
	  .off = LOFF(plaintext_auth),
	  .doc = "Offer AUTH before TLS too: passwords then cross the network in clear "
		 "(RFC 4954 §14); for loopback development only." },
	{ .key = "sandbox", .type = CONF_T_BOOL, .def = "false", .off = LOFF(sandbox),
	  .doc = "A sandbox listener (see sandbox.*): any sender and recipient is accepted, "
		 "the checks run without being enforced, and every message is captured into "
		 "sandbox.dir instead of being delivered." },
};

static const struct conf_setting conf_cert_fields[] = {
	{ .key = "cert", .type = CONF_T_STRING, .required = true, .off = COFF(cert),
	  .check = conf_path_check,
	  .doc = "PEM file: the certificate, then its chain." },
	{ .key = "key", .type = CONF_T_STRING, .required = true, .off = COFF(key),
	  .check = conf_path_check,
	  .doc = "PEM file of its private key (keep it readable by root only)." },
};

/* The fields' relations (an address for relay and lmtp only, no duplicate
 * domains) are checked by conf_routes_check() once the list is complete. */
static const char *const conf_dkim_types[] = {
    [CONF_DKIM_RSA] = "rsa",
    [CONF_DKIM_ED25519] = "ed25519",
    NULL,
};

static const struct conf_setting conf_dkim_key_fields[] = {
	{ .key = "domain", .type = CONF_T_STRING, .required = true, .off = KOFF(domain),
	  .check = conf_domain_check, .lower = true, .idna = true,
	  .doc = "The signing domain (d=, RFC 6376 §3.5): mail whose From domain is exactly "
		 "this one is signed with this key." },
	{ .key = "selector", .type = CONF_T_STRING, .required = true, .off = KOFF(selector),
	  .check = conf_dkim_selector_check,
	  .doc = "The selector (s=): the key is published at selector._domainkey.domain "
		 "(`hikyaku dkim keygen` prints the record)." },
	{ .key = "key", .type = CONF_T_STRING, .required = true, .off = KOFF(key),
	  .check = conf_path_check,
	  .doc = "PEM file of the private key, owned by root, mode 0600 or 0640: only the keys "
		 "process reads it, as root, at start." },
	{ .key = "type", .type = CONF_T_ENUM, .def = "rsa", .names = conf_dkim_types,
	  .off = KOFF(type), .lower = true,
	  .doc = "rsa (rsa-sha256, RSA-2048 recommended) or ed25519 (ed25519-sha256, RFC "
		 "8463); must match the key (`hikyaku check`)." },
	{ .key = "arc", .type = CONF_T_BOOL, .def = "false", .off = KOFF(arc),
	  .doc = "Seal forwarded mail (ARC, RFC 8617; see arc.seal) with this key: d= and s= "
		 "of the ARC-Seal and ARC-Message-Signature are this entry's domain and "
		 "selector. At most one entry, of type rsa (RFC 8617 §4.1.3 names only "
		 "rsa-sha256; receivers refuse other seals). The entry still DKIM-signs mail "
		 "from its domain." },
};

static const struct conf_setting conf_route_fields[] = {
	{ .key = "domain", .type = CONF_T_STRING, .required = true, .off = ROFF(domain),
	  .check = conf_domain_check, .lower = true, .idna = true,
	  .doc = "Recipient domain, matched exactly and case-insensitively (subdomains are "
		 "not included); an internationalized domain in either form (RFC 5890), "
		 "kept as A-labels." },
	{ .key = "transport", .type = CONF_T_ENUM, .required = true, .names = conf_transports,
	  .off = ROFF(transport), .lower = true,
	  .doc = "local (Maildir under maildir_root; the domain is then accepted as local), "
		 "mx (by its MX records, RFC 5321 §5.1), relay (SMTP to address) or lmtp "
		 "(LMTP to address, RFC 2033)." },
	{ .key = "address", .type = CONF_T_STRING, .def = "\"\"", .off = ROFF(address),
	  .check = conf_route_address_check,
	  .doc = "relay and lmtp (required): \"host:port\" or \"[addr]:port\"; lmtp also "
		 "\"unix:/absolute/path\". Must be \"\" for local and mx." },
	{ .key = "tls", .type = CONF_T_ENUM, .def = "may", .names = conf_tls_policies,
	  .off = ROFF(tls), .lower = true,
	  .doc = "STARTTLS policy (RFC 3207) of relay, lmtp and mx routes: none, may "
		 "(opportunistic, RFC 7435), encrypt (required, certificate not checked) or "
		 "verify (required, certificate and host name checked, RFC 6125)." },
	{ .key = "credentials", .type = CONF_T_STRING, .def = "\"\"", .off = ROFF(credentials),
	  .doc = "relay and lmtp: file of one line \"user:password\" for SMTP AUTH (RFC 4954), "
		 "readable by root only; \"\" for none. Refused for local and mx. Read as root "
		 "by the queue process when it starts, which a reload (SIGHUP) repeats." },
	{ .key = "port", .type = CONF_T_UINT, .def = "0", .min = 0, .max = 65535,
	  .off = ROFF(port),
	  .doc = "mx: TCP port of the domain's MX hosts, 0 for delivery.smtp_port (e.g. a "
		 "partner's MTA that listens on another port). Must be 0 for the others: "
		 "relay and lmtp name theirs in address." },
	{ .key = "verify_recipients", .type = CONF_T_BOOL, .def = "false",
	  .off = ROFF(verify_recipients),
	  .doc = "relay and lmtp routes of relay_domains: ask the route's server about each "
		 "recipient during the SMTP session (LHLO/EHLO, MAIL FROM:<>, RCPT, QUIT; no "
		 "DATA, no AUTH), so an unknown user gets its 5xx at RCPT instead of a bounce "
		 "later. Answers are cached (relay.verify_positive_ttl, "
		 "relay.verify_negative_ttl). Needs a numeric address or unix:." },
	{ .key = "verify_tempfail", .type = CONF_T_ENUM, .def = "defer",
	  .names = conf_verify_tempfail_names, .off = ROFF(verify_tempfail), .lower = true,
	  .doc = "When verify_recipients gets no answer about the user: no reply to the RCPT "
		 "in relay.verify_timeout, a 4xx to it, a failure before it (connection, "
		 "greeting, EHLO/LHLO, STARTTLS, MAIL FROM:<>), or 64 probes already in "
		 "flight: defer (450 4.4.1 at RCPT, the client retries) or accept (queue it; "
		 "the delivery finds out). Such answers are not cached." },
};

/* One DNS list (RFC 5782): dnsbl.lists[] and dnsbl.allow_lists[]. */
static const struct conf_setting conf_dnsbl_fields[] = {
	{ .key = "zone", .type = CONF_T_STRING, .required = true, .off = DOFF(zone),
	  .check = conf_dnsbl_zone_check, .lower = true,
	  .doc = "The list's DNS zone (zen.spamhaus.org, list.dnswl.org): the client's "
		 "address is looked up as A records of its reversed octets (IPv4) or nibbles "
		 "(IPv6, RFC 5782 §2.4) under it. It names the list in replies and logs." },
	{ .key = "weight", .type = CONF_T_UINT, .def = "1", .min = 1, .max = 1000,
	  .off = DOFF(weight),
	  .doc = "What a listing adds to the client's score (dnsbl.lists) or takes from it "
		 "(dnsbl.allow_lists)." },
	{ .key = "codes", .type = CONF_T_STRING, .def = "\"\"", .off = DOFF(codes),
	  .check = conf_dnsbl_codes_check,
	  .doc = "The answers that count, comma-separated: addresses (127.0.0.2), networks "
		 "(127.0.0.0/29) and bit masks (&0.0.0.4: any of its bits set in an answer "
		 "inside 127.0.0.0/8). \"\" counts 127.0.0.0/24, so the 127.255.255.x refusals "
		 "some lists give public resolvers never count." },
};

static const char *const conf_milter_failures[] = {"tempfail", "accept", NULL};
static conf_check_fn conf_milter_socket_check;

/* One milter (Sendmail milter protocol v6): milters[]. */
static const struct conf_setting conf_milter_fields[] = {
	{ .key = "name", .type = CONF_T_STRING, .required = true, .off = MOFF(name),
	  .doc = "The milter's name in logs and replies." },
	{ .key = "socket", .type = CONF_T_STRING, .required = true, .off = MOFF(socket),
	  .check = conf_milter_socket_check,
	  .doc = "Where it listens: \"unix:/path\" or \"inet:host:port\" (host an IPv4 "
		 "address or an [IPv6] one)." },
	{ .key = "failure", .type = CONF_T_ENUM, .def = "tempfail", .names = conf_milter_failures,
	  .off = MOFF(failure), .lower = true,
	  .doc = "When the milter is down, slow or talks nonsense, at any stage: tempfail "
		 "(451 4.7.1 to the command, 421 4.7.0 at connect; the client tries again "
		 "later) or accept (the session goes on without it)." },
	{ .key = "connect_timeout", .type = CONF_T_DURATION, .def = "5s", .min = 100,
	  .max = MIN, .off = MOFF(connect_timeout),
	  .doc = "How long connecting to the milter may take." },
	{ .key = "command_timeout", .type = CONF_T_DURATION, .def = "30s", .min = 100,
	  .max = 10 * MIN, .off = MOFF(command_timeout),
	  .doc = "How long the milter may take to answer a command or read what is sent." },
	{ .key = "eob_timeout", .type = CONF_T_DURATION, .def = "2m", .min = 100,
	  .max = 10 * MIN, .off = MOFF(eob_timeout),
	  .doc = "How long the milter may take at the end of the message (SMFIR_PROGRESS "
		 "restarts it)." },
};

_Static_assert(N_OF(conf_milter_fields) <= CONF_FIELDS_MAX, "too many milter fields");
_Static_assert(N_OF(conf_dnsbl_fields) <= CONF_FIELDS_MAX, "too many dnsbl fields");
_Static_assert(N_OF(conf_route_fields) <= CONF_FIELDS_MAX, "too many route fields");
_Static_assert(N_OF(conf_listener_fields) <= CONF_FIELDS_MAX, "too many listener fields");
_Static_assert(N_OF(conf_cert_fields) <= CONF_FIELDS_MAX, "too many certificate fields");

/* Ordered for the dump: top-level settings first, then each section's
 * settings together (conf_dump opens a section when the prefix changes). */
const struct conf_setting conf_settings[] = {
	{ .key = "hostname", .type = CONF_T_STRING, .def_fn = conf_hostname_default,
	  .def_doc = "the system host name (gethostname)", .off = OFF(hostname),
	  .check = conf_hostname_check,
	  .doc = "Name announced in the greeting, EHLO and Received: (RFC 5321 §4.1.1.1)." },
	{ .key = "user", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(user),
	  .doc = "Unprivileged user the smtpd, queue, auth and keys processes run as. "
		 "Required when started as root (the start is refused without it); a "
		 "non-root user keeps its own uid." },
	{ .key = "log_level", .type = CONF_T_STRING, .def = "info", .off = OFF(log_level),
	  .check = conf_log_level_check,
	  .doc = "Least severe log level: debug, info, warn or error." },
	{ .key = "log.format", .type = CONF_T_ENUM, .def = "kv", .names = conf_log_formats,
	  .off = OFF(log.format), .lower = true,
	  .doc = "Log lines as key=value (kv, grep- and Postfix-habit-friendly) or as JSON "
		 "objects, one a line (json), with the same keys plus ts, level and proc." },
	{ .key = "log.target", .type = CONF_T_ENUM, .def = "stderr", .names = conf_log_targets,
	  .off = OFF(log.target), .lower = true,
	  .doc = "stderr (under systemd the journal keeps it, with its own time stamps) or "
		 "syslog: every process writes each line as one datagram to log.syslog_socket, "
		 "facility mail, as Postfix does (\"<PRI>hikyaku/queue[PID]: event=...\"; the "
		 "syslog daemon adds the time and host). The master connects the socket at start "
		 "and every process inherits it as its stderr; lines written while no syslog "
		 "daemon listens are lost." },
	{ .key = "log.syslog_socket", .type = CONF_T_STRING, .def = "/dev/log",
	  .off = OFF(log.syslog_socket), .check = conf_path_check,
	  .doc = "The syslog daemon's datagram socket, for log.target: syslog." },
	{ .key = "spool_dir", .type = CONF_T_STRING, .def = "/var/spool/hikyaku",
	  .off = OFF(spool_dir), .check = conf_path_check,
	  .doc = "Directory of the mail queue; must be on one file system." },
	{ .key = "maildir_root", .type = CONF_T_STRING, .def = "/var/mail/vhosts",
	  .off = OFF(maildir_root), .check = conf_path_check,
	  .doc = "Root of local Maildirs, laid out as DOMAIN/LOCAL/." },
	{ .key = "users_file", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(users_file),
	  .doc = "Dovecot passwd-file of local users (user@domain:...); \"\" for none." },
	{ .key = "aliases_file", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(aliases_file),
	  .doc = "Aliases (alias@domain: target, ...; @domain catch-all); \"\" for none." },
	{ .key = "accept_any_user", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(accept_any_user),
	  .doc = "Accept any local part in local_domains (development; no users file needed)." },
	{ .key = "local_domains", .type = CONF_T_STRLIST, .def = "[]", .off = OFF(local_domains),
	  .count_off = OFF(n_local_domains), .check = conf_domain_check, .lower = true,
	  .idna = true,
	  .doc = "Domains delivered locally; matched case-insensitively. Internationalized "
		 "domains in either form (U-labels or xn-- A-labels, RFC 5890), kept and "
		 "compared as A-labels." },
	{ .key = "relay_domains", .type = CONF_T_STRLIST, .def = "[]", .off = OFF(relay_domains),
	  .count_off = OFF(n_relay_domains), .check = conf_domain_check, .lower = true,
	  .idna = true,
	  .doc = "Gateway and backup-MX domains, as Postfix's relay_domains: accepted from any "
		 "client and passed on to their routes[] entry (else delivery.smarthost, else "
		 "MX). Their users are not in users_file: any local part is accepted, unless "
		 "the route sets verify_recipients. Either IDN form, kept as A-labels." },
	{ .key = "listen", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(listeners),
	  .count_off = OFF(n_listeners), .fields = conf_listener_fields,
	  .n_fields = N_OF(conf_listener_fields), .item_size = sizeof(struct conf_listener),
	  .item_name = "listener", .shorthand = "address",
	  .doc = "SMTP listeners, at least one: a mapping of the listen[] fields, or just "
		 "\"host:port\" when the other fields keep their defaults." },
	{ .key = "milters", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(milters),
	  .count_off = OFF(n_milters), .fields = conf_milter_fields,
	  .n_fields = N_OF(conf_milter_fields), .item_size = sizeof(struct conf_milter),
	  .item_name = "milter",
	  .doc = "Filters over the Sendmail milter protocol (version 6), as Postfix's "
		 "smtpd_milters: rspamd's proxy, clamav-milter, opendkim. Each gets one "
		 "connection per SMTP session and is asked in order at connect (before the "
		 "greeting), HELO, MAIL, each RCPT and the end of each message (the header "
		 "fields and the body, after the earlier milters' changes); it may accept, "
		 "reject, tempfail or discard at each stage, and at the end quarantine, change "
		 "header fields, the sender, the recipients and the body." },
	{ .key = "routes", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(routes),
	  .count_off = OFF(n_routes), .fields = conf_route_fields,
	  .n_fields = N_OF(conf_route_fields), .item_size = sizeof(struct conf_route),
	  .item_name = "route",
	  .doc = "Delivery per recipient domain, as mappings of the routes[] fields, one per "
		 "domain. A domain without a route is delivered locally if it is in "
		 "local_domains, else to delivery.smarthost if set, else by MX." },

	{ .key = "limits.command_line", .type = CONF_T_UINT, .def = "512",
	  .min = 512, .max = 65536, .off = OFF(limits.command_line),
	  .doc = "Longest command line in octets incl. CRLF (RFC 5321 §4.5.3.1.4)." },
	{ .key = "limits.text_line", .type = CONF_T_UINT, .def = "1000",
	  .min = 1000, .max = 1048576, .off = OFF(limits.text_line),
	  .doc = "Longest message line in octets incl. CRLF (RFC 5321 §4.5.3.1.6)." },
	{ .key = "limits.message_size", .type = CONF_T_SIZE, .def = "25M",
	  .min = KIB, .max = 2 * GIB, .off = OFF(limits.message_size),
	  .doc = "Largest message accepted, announced in EHLO SIZE (RFC 1870)." },
	{ .key = "limits.recipients", .type = CONF_T_UINT, .def = "100",
	  .min = 1, .max = 100000, .off = OFF(limits.recipients),
	  .doc = "Recipients per transaction, a repeated one counted again (RFC 5321 "
		 "§4.5.3.1.8 requires at least 100)." },
	{ .key = "limits.errors", .type = CONF_T_UINT, .def = "20",
	  .min = 1, .max = 1000, .off = OFF(limits.errors),
	  .doc = "Errors in one session before it is closed." },
	{ .key = "limits.recipient_overshoot", .type = CONF_T_UINT, .def = "1000",
	  .min = 0, .max = 100000, .off = OFF(limits.recipient_overshoot),
	  .doc = "Recipients refused with 452 4.5.3 (over limits.recipients) in one session "
		 "before each further one counts as an error, as Postfix's "
		 "smtpd_recipient_overshoot_limit." },
	{ .key = "limits.header_size", .type = CONF_T_SIZE, .def = "100K",
	  .min = KIB, .max = 64 * MIB, .off = OFF(limits.header_size),
	  .doc = "Largest header section of a message." },
	{ .key = "limits.received_hops", .type = CONF_T_UINT, .def = "50",
	  .min = 1, .max = 1000, .off = OFF(limits.received_hops),
	  .doc = "Received: fields beyond which a message is a loop (RFC 5321 §6.3)." },
	{ .key = "limits.connections", .type = CONF_T_UINT, .def = "1000",
	  .min = 1, .max = 1000000, .off = OFF(limits.connections),
	  .doc = "Concurrent SMTP connections in total." },
	{ .key = "limits.connections_per_ip", .type = CONF_T_UINT, .def = "50",
	  .min = 1, .max = 1000000, .off = OFF(limits.connections_per_ip),
	  .doc = "Concurrent SMTP connections from one client address (an IPv6 client by its "
		 "/64), over all smtpd processes: 421 4.7.0 past it." },
	{ .key = "limits.connection_rate", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 1000000, .off = OFF(limits.connection_rate),
	  .doc = "Connections one client address (IPv6: /64) may open per limits.rate_window, "
		 "over all smtpd processes; past it 421 4.7.0 instead of the greeting. 0: no "
		 "limit. access.allow networks are exempt." },
	{ .key = "limits.message_rate", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 1000000, .off = OFF(limits.message_rate),
	  .doc = "MAIL commands one client address (IPv6: /64) may give per "
		 "limits.rate_window; past it 450 4.7.1. 0: no limit. Authenticated clients "
		 "count against limits.user_message_rate instead." },
	{ .key = "limits.recipient_rate", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 1000000, .off = OFF(limits.recipient_rate),
	  .doc = "Recipients (accepted RCPT commands) per client address (IPv6: /64) per "
		 "limits.rate_window; past it 450 4.7.1. 0: no limit." },
	{ .key = "limits.user_message_rate", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 1000000, .off = OFF(limits.user_message_rate),
	  .doc = "MAIL commands per authenticated user per limits.rate_window, whatever the "
		 "address (a stolen password must not flood the world); past it 450 4.7.1. "
		 "0: no limit." },
	{ .key = "limits.user_recipient_rate", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 1000000, .off = OFF(limits.user_recipient_rate),
	  .doc = "Recipients per authenticated user per limits.rate_window; past it 450 "
		 "4.7.1. 0: no limit." },
	{ .key = "limits.rate_window", .type = CONF_T_DURATION, .def = "1m",
	  .min = SEC, .max = DAY, .off = OFF(limits.rate_window),
	  .doc = "The sliding window of the rate limits (as Postfix's anvil_rate_time_unit)." },
	{ .key = "limits.rate_table_size", .type = CONF_T_UINT, .def = "65536",
	  .min = 1024, .max = 4194304, .off = OFF(limits.rate_table_size),
	  .doc = "Rate counters kept in shared memory (32 octets each, rounded up to a power "
		 "of two); when full, the counter idle the longest is evicted. Changes with "
		 "a restart only." },

	{ .key = "timeouts.command", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.command),
	  .doc = "Wait for the next command (RFC 5321 §4.5.3.2.7)." },
	{ .key = "timeouts.data", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.data),
	  .doc = "Wait for the next block of message data." },
	{ .key = "timeouts.session", .type = CONF_T_DURATION, .def = "30m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.session),
	  .doc = "Deadline for a whole session." },
	{ .key = "timeouts.shutdown", .type = CONF_T_DURATION, .def = "30s",
	  .min = SEC, .max = 60 * MIN, .off = OFF(timeouts.shutdown),
	  .doc = "On SIGTERM, how long a session in a transaction may take to finish it "
		 "(then it is cut; the queue then gets 5 s for its attempts in flight)." },

	{ .key = "processes.smtpd", .type = CONF_T_UINT, .def = "0",
	  .min = 0, .max = 64, .off = OFF(processes.smtpd),
	  .doc = "smtpd processes sharing the listeners (sessions, TLS); 0: one per CPU." },

	{ .key = "http.listen", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(http.listen),
	  .check = conf_http_listen_check,
	  .doc = "Address of the HTTP listener for Prometheus /metrics and the JSON API "
		 "(/api/v1/, see docs/openapi.yaml), e.g. 127.0.0.1:8025; \"\" (the default) "
		 "for none. Off unless set, so that no port opens that the operator did not ask "
		 "for; keep it on loopback or a management network: /metrics has no "
		 "authentication. Served by the unprivileged http process." },
	{ .key = "http.token_file", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(http.token_file),
	  .doc = "File holding the API's bearer token (one line, at least 16 characters), "
		 "readable by root only: the http process reads it as root before it drops its "
		 "privileges. \"\": the API answers 404 and only /metrics is served." },
	{ .key = "http.max_connections", .type = CONF_T_UINT, .def = "64",
	  .min = 1, .max = 4096, .off = OFF(http.max_connections),
	  .doc = "Concurrent HTTP connections; more are closed at once." },

	{ .key = "analytics.enabled", .type = CONF_T_BOOL, .def = "true",
	  .off = OFF(analytics.enabled),
	  .doc = "Record delivery analytics (accepted, delivered, deferred, bounced per hour, "
		 "destination and sender domain; delays; reasons; TLS) in <spool_dir>/stats.db "
		 "(SQLite), shown by /dashboard/ and /api/v1/analytics/ on the http listener." },
	{ .key = "analytics.retention", .type = CONF_T_DURATION, .def = "90d",
	  .min = 3600 * SEC, .max = 3660 * DAY, .off = OFF(analytics.retention),
	  .doc = "How long hourly analytics are kept; older hours are deleted once an hour." },
	{ .key = "analytics.top_domains", .type = CONF_T_UINT, .def = "100",
	  .min = 1, .max = 10000, .off = OFF(analytics.top_domains),
	  .doc = "Destination domains and sender domains kept per hour: the busiest ones once the "
		 "hour is over (while it runs, twice as many, the first seen); the others are "
		 "counted under \"(other)\". Bounds the store." },
	{ .key = "analytics.flush_interval", .type = CONF_T_DURATION, .def = "10s",
	  .min = 100, .max = 10 * MIN, .off = OFF(analytics.flush_interval),
	  .doc = "How often the queue writes the events it collected to the store, in one "
		 "transaction (no fsync per delivery)." },
	{ .key = "sandbox.enabled", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(sandbox.enabled),
	  .doc = "Make every listener a sandbox listener (listen[].sandbox): the whole server "
		 "captures mail and delivers nothing. `hikyaku sandbox` runs one without a "
		 "configuration." },
	{ .key = "sandbox.dir", .type = CONF_T_STRING, .def = "./var/sandbox",
	  .off = OFF(sandbox.dir), .check = conf_path_check,
	  .doc = "Where captured mail is kept: msg/<ID>.eml, the SQLite index (index.sqlite, "
		 "WAL, FTS5) and the key the inbox tokens derive from (token.key). Owned by "
		 "user:; only the queue and the http process open it." },
	{ .key = "sandbox.max_messages", .type = CONF_T_UINT, .def = "10000",
	  .min = 0, .max = 100000000, .off = OFF(sandbox.max_messages),
	  .doc = "Captured messages kept (all inboxes); the oldest are removed first. 0: no "
		 "limit." },
	{ .key = "sandbox.max_size", .type = CONF_T_SIZE, .def = "1G",
	  .min = 0, .max = 1ULL << 60, .off = OFF(sandbox.max_size),
	  .doc = "Octets of captured mail kept (all inboxes); the oldest are removed first. "
		 "0: no limit." },
	{ .key = "sandbox.max_age", .type = CONF_T_DURATION, .def = "0",
	  .min = 0, .max = 3650ULL * 24 * 60 * MIN, .off = OFF(sandbox.max_age),
	  .doc = "Captured mail older than this is removed. 0: no limit." },
	{ .key = "sandbox.auth", .type = CONF_T_ENUM, .def = "any",
	  .names = conf_sandbox_auth_names, .off = OFF(sandbox.auth), .lower = true,
	  .doc = "any: with sandbox.enabled, any SMTP AUTH login succeeds (PLAIN and LOGIN; "
		 "still only after STARTTLS unless the listener has plaintext_auth, which "
		 "`hikyaku sandbox` sets on loopback only) and its name is the inbox; users: "
		 "the users file decides. A per-listener sandbox always uses the users file; "
		 "mail without AUTH goes to the inbox \"default\"." },
	{ .key = "sandbox.anonymous_inbox", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(sandbox.anonymous_inbox),
	  .doc = "The inbox an HTTP request without credentials sees, when it comes from "
		 "loopback (`hikyaku sandbox` sets \"default\"); \"\": credentials are always "
		 "required (a bearer token or Basic inbox:token)." },

	{ .key = "queue.commit_threads", .type = CONF_T_UINT, .def = "8",
	  .min = 1, .max = 64, .off = OFF(queue.commit_threads),
	  .doc = "Threads of the queue that make committed messages durable (fdatasync of the file, "
		 "rename into queue/, group fsync of queue/); each smtpd keeps up to 2 for its rare "
		 "copies after a queue restart." },
	{ .key = "queue.delivery_threads", .type = CONF_T_UINT, .def = "16",
	  .min = 1, .max = 64, .off = OFF(queue.delivery_threads),
	  .doc = "Threads that deliver to local Maildirs. Each spends most of a delivery "
		 "waiting for its fsync; more of them share the file system's journal "
		 "commits (16: local delivery keeps up with acceptance on one disk, where 4 "
		 "fell behind by a third; bench/README.md)." },
	{ .key = "queue.retry_min", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = 7 * DAY, .off = OFF(queue.retry_min),
	  .doc = "First retry after a temporary failure (RFC 5321 §4.5.4.1)." },
	{ .key = "queue.retry_max", .type = CONF_T_DURATION, .def = "1h",
	  .min = SEC, .max = 7 * DAY, .off = OFF(queue.retry_max),
	  .doc = "Cap of the doubling retry interval; at least retry_min." },
	{ .key = "queue.min_free_space", .type = CONF_T_SIZE, .def = "100M",
	  .min = 0, .max = 1ULL << 60, .off = OFF(queue.min_free_space),
	  .doc = "Space the spool's file system keeps free: below it (or below it plus the "
		 "message's SIZE=) MAIL gets 452 4.3.1. Checked at most once a second." },

	{ .key = "tls.certificates", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(tls.certs),
	  .count_off = OFF(tls.n_certs), .fields = conf_cert_fields,
	  .n_fields = N_OF(conf_cert_fields), .item_size = sizeof(struct conf_tls_cert),
	  .item_name = "certificate",
	  .doc = "Certificates with their keys, as mappings of the tls.certificates[] fields; "
		 "the first is the default." },
	{ .key = "tls.self_signed_dir", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(tls.self_signed_dir),
	  .doc = "Generate a self-signed certificate here when no certificates are configured "
		 "(development); \"\" for none (production)." },
	{ .key = "tls.session_tickets", .type = CONF_T_BOOL, .def = "true",
	  .off = OFF(tls.session_tickets),
	  .doc = "Let clients resume TLS sessions with tickets (RFC 5077, RFC 8446 §4.6.1)." },
	{ .key = "tls.handshake_timeout", .type = CONF_T_DURATION, .def = "30s",
	  .min = SEC, .max = 5 * MIN, .off = OFF(tls.handshake_timeout),
	  .doc = "Deadline for a TLS handshake, after STARTTLS or on an implicit TLS listener." },

	{ .key = "auth.max_failures", .type = CONF_T_UINT, .def = "5",
	  .min = 1, .max = 1000, .off = OFF(auth.max_failures),
	  .doc = "Failed AUTH attempts from one client address (IPv6: one /64) within "
		 "auth.failure_window before AUTH is refused to it. When the failure table is "
		 "full, new addresses share a count per network (IPv4 /24, IPv6 /48)." },
	{ .key = "auth.failure_window", .type = CONF_T_DURATION, .def = "10m",
	  .min = SEC, .max = DAY, .off = OFF(auth.failure_window),
	  .doc = "Time over which auth.max_failures are counted." },
	{ .key = "auth.mechanisms", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(auth.mechanisms), .count_off = OFF(auth.n_mechanisms),
	  .check = conf_auth_mechanism_check,
	  .doc = "SASL mechanisms offered in EHLO, of PLAIN, LOGIN, CRAM-MD5 and "
		 "SCRAM-SHA-256; others are refused with 504 5.5.4. Clients pick the strongest "
		 "offered and do not retry, so CRAM-MD5 and SCRAM-SHA-256 suit only a users "
		 "file in which every user has a secret of that scheme (`hikyaku check` warns). "
		 "[]: PLAIN and LOGIN, and each of the other two when every user with a secret "
		 "holds one of its scheme." },
	{ .key = "auth.received_show_user", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(auth.received_show_user),
	  .doc = "Name the authenticated user in the Received: field (RFC 5321 §4.4); off "
		 "for privacy." },

	{ .key = "relay.trusted_networks", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(relay.trusted_networks), .count_off = OFF(relay.n_trusted_networks),
	  .check = conf_cidr_check,
	  .doc = "Client networks that may relay WITHOUT authentication, as CIDRs: "
		 "192.0.2.0/24, 2001:db8::/32 (no bits set past the prefix); a bare address "
		 "is /32 or /128. IPv4 clients of an IPv6 socket match the IPv4 networks." },
	{ .key = "relay.sender_login_match", .type = CONF_T_BOOL, .def = "true",
	  .off = OFF(relay.sender_login_match),
	  .doc = "An authenticated client may use as MAIL FROM only its login (a +tag "
		 "allowed), a sender relay.senders grants it, or <> (bounces)." },
	{ .key = "relay.verify_timeout", .type = CONF_T_DURATION, .def = "10s",
	  .min = SEC, .max = 5 * 60 * SEC, .off = OFF(relay.verify_timeout),
	  .doc = "Longest wait for a recipient verification (routes[].verify_recipients), "
		 "connection included; the RCPT then gets routes[].verify_tempfail and the "
		 "probe is ended." },
	{ .key = "relay.verify_positive_ttl", .type = CONF_T_DURATION, .def = "10m",
	  .min = 0, .max = DAY, .off = OFF(relay.verify_positive_ttl),
	  .doc = "How long a recipient the route's server accepted is remembered (0: not)." },
	{ .key = "relay.verify_negative_ttl", .type = CONF_T_DURATION, .def = "1m",
	  .min = 0, .max = DAY, .off = OFF(relay.verify_negative_ttl),
	  .doc = "How long a recipient the route's server refused (5xx) is remembered (0: "
		 "not)." },
	{ .key = "relay.senders", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(relay.senders), .count_off = OFF(relay.n_senders),
	  .check = conf_sender_line_check,
	  .doc = "Senders granted to other logins, one per line: \"sender: login, login\" "
		 "where sender is an address (a +tag allowed) or @domain and logins are "
		 "user@domain." },

	{ .key = "delivery.helo_name", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(delivery.helo_name), .check = conf_helo_name_check,
	  .doc = "Name sent in EHLO and LHLO when delivering (RFC 5321 §4.1.1.1); \"\" uses "
		 "hostname." },
	{ .key = "delivery.smtp_port", .type = CONF_T_UINT, .def = "25",
	  .min = 1, .max = 65535, .off = OFF(delivery.smtp_port),
	  .doc = "TCP port of MX hosts: 25, the SMTP port (RFC 5321 §4.5.4.2); other values "
		 "are for tests." },
	{ .key = "delivery.tls", .type = CONF_T_ENUM, .def = "may", .names = conf_tls_policies,
	  .off = OFF(delivery.tls), .lower = true,
	  .doc = "STARTTLS policy (RFC 3207) for delivery by MX: none, may (opportunistic, "
		 "RFC 7435), encrypt (required, certificate not checked) or verify (required, "
		 "certificate and host name checked against delivery.ca_file, RFC 6125)." },
	{ .key = "delivery.ca_file", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(delivery.ca_file),
	  .doc = "PEM bundle of the CAs trusted for tls: verify; \"\" for the system's." },
	{ .key = "delivery.smarthost", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(delivery.smarthost), .check = conf_smarthost_check,
	  .doc = "Relay all mail for domains without a route and not local through this host, "
		 "\"host:port\" or \"[addr]:port\" (port required, e.g. 587 for submission, "
		 "RFC 6409); \"\" delivers by MX." },
	{ .key = "delivery.smarthost_tls", .type = CONF_T_ENUM, .def = "encrypt",
	  .names = conf_tls_policies, .off = OFF(delivery.smarthost_tls), .lower = true,
	  .doc = "STARTTLS policy towards the smarthost: none, may, encrypt or verify." },
	{ .key = "delivery.smarthost_credentials", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(delivery.smarthost_credentials),
	  .doc = "File of one line \"user:password\" for SMTP AUTH (RFC 4954) at the "
		 "smarthost, readable by root only; \"\" for none. Read as root by the queue "
		 "process when it starts, which a reload (SIGHUP) repeats." },
	{ .key = "delivery.destination_concurrency", .type = CONF_T_UINT, .def = "20",
	  .min = 1, .max = 1000, .off = OFF(delivery.destination_concurrency),
	  .doc = "Simultaneous connections to one destination (a domain's MX hosts, or a "
		 "relay)." },
	{ .key = "delivery.total_concurrency", .type = CONF_T_UINT, .def = "100",
	  .min = 1, .max = 10000, .off = OFF(delivery.total_concurrency),
	  .doc = "Simultaneous outbound connections in total." },
	{ .key = "delivery.connect_timeout", .type = CONF_T_DURATION, .def = "30s",
	  .min = SEC, .max = 10 * MIN, .off = OFF(delivery.connect_timeout),
	  .doc = "Deadline for the TCP connection to a mail server (then the next one is tried)." },
	{ .key = "delivery.command_timeout", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = 60 * MIN, .off = OFF(delivery.command_timeout),
	  .doc = "Wait for the greeting and for the reply to each command (RFC 5321 §4.5.3.2: 5m)." },
	{ .key = "delivery.data_timeout", .type = CONF_T_DURATION, .def = "10m",
	  .min = SEC, .max = 60 * MIN, .off = OFF(delivery.data_timeout),
	  .doc = "Wait for the reply to the end of the data (RFC 5321 §4.5.3.2.6: 10m)." },
	{ .key = "delivery.idle_timeout", .type = CONF_T_DURATION, .def = "5s",
	  .min = 0, .max = 5 * MIN, .off = OFF(delivery.idle_timeout),
	  .doc = "Keep a connection open this long after a transaction, for the next message "
		 "to the same server (RFC 5321 §3.3), then QUIT; 0 for no reuse (QUIT after each "
		 "message). Servers drop idle clients after 5m (§4.5.3.2.7)." },
	{ .key = "delivery.destination_idle", .type = CONF_T_UINT, .def = "8",
	  .min = 1, .max = 1000, .off = OFF(delivery.destination_idle),
	  .doc = "Idle connections kept for reuse to one server; the oldest beyond this is "
		 "closed." },
	{ .key = "delivery.total_idle", .type = CONF_T_UINT, .def = "64",
	  .min = 1, .max = 10000, .off = OFF(delivery.total_idle),
	  .doc = "Idle connections kept for reuse in total; the oldest beyond this is closed. "
		 "They do not count against delivery.total_concurrency." },
	{ .key = "delivery.max_lifetime", .type = CONF_T_DURATION, .def = "5d",
	  .min = MIN, .max = 30 * DAY, .off = OFF(delivery.max_lifetime),
	  .doc = "Bounce a message still undelivered after this long (RFC 5321 §4.5.4.1: at "
		 "least 4-5 days)." },
	{ .key = "delivery.delay_warning", .type = CONF_T_DURATION, .def = "4h",
	  .min = 0, .max = 30 * DAY, .off = OFF(delivery.delay_warning),
	  .doc = "Send a delay notice (RFC 3464, action: delayed) for recipients with "
		 "NOTIFY=DELAY (RFC 3461 §4.1) still queued after this long; 0 for none. Less "
		 "than max_lifetime." },
	{ .key = "delivery.ipv6", .type = CONF_T_BOOL, .def = "true", .off = OFF(delivery.ipv6),
	  .doc = "Deliver over IPv6 too, to the AAAA records of MX hosts (RFC 3596)." },

	{ .key = "dns.forwarders", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(dns.forwarders), .count_off = OFF(dns.n_forwarders),
	  .check = conf_forwarder_check,
	  .doc = "Resolvers to ask instead of those of /etc/resolv.conf: numeric IPv4 or IPv6 "
		 "addresses, each optionally @port (127.0.0.1@5353, ::1); [] uses "
		 "/etc/resolv.conf." },
	{ .key = "dns.trust_anchor", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(dns.trust_anchor),
	  .doc = "File of DNSSEC trust anchors (the root key, RFC 4033); when set, answers are "
		 "validated (as DANE needs, RFC 7672); \"\" for none." },
	{ .key = "dns.timeout", .type = CONF_T_DURATION, .def = "30s",
	  .min = 100, .max = 5 * MIN, .off = OFF(dns.timeout),
	  .doc = "Give up on one destination's lookups (MX and addresses) after this long and "
		 "defer its mail." },

	{ .key = "dkim.sign", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(dkim.sign),
	  .count_off = OFF(dkim.n_sign), .fields = conf_dkim_key_fields,
	  .n_fields = N_OF(conf_dkim_key_fields), .item_size = sizeof(struct conf_dkim_key),
	  .item_name = "DKIM key",
	  .doc = "DKIM signing keys (RFC 6376), as mappings of the dkim.sign[] fields. Mail "
		 "from authenticated or local senders whose From domain has entries is signed "
		 "once per entry (two entries, rsa and ed25519: dual signing), relaxed/relaxed, "
		 "From, To, Subject and Date oversigned. The keys stay in the keys process." },

	{ .key = "policy.require_fcrdns", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(policy.require_fcrdns),
	  .doc = "Refuse clients whose address has no forward-confirmed reverse DNS name (a PTR "
		 "name whose A/AAAA records hold the address): MAIL gets 450 4.7.25 (RFC 7372) "
		 "\"Client host rejected: cannot find your hostname\", as Postfix's "
		 "reject_unknown_client_hostname; a lookup that failed or timed out gets the "
		 "same 450. Authenticated clients and relay.trusted_networks are exempt." },
	{ .key = "policy.fcrdns_timeout", .type = CONF_T_DURATION, .def = "10s",
	  .min = 100, .max = 5 * MIN, .off = OFF(policy.fcrdns_timeout),
	  .doc = "The client's reverse DNS check (PTR, then A/AAAA of at most 10 of its names) "
		 "gives up after this long: the name is unknown (a refusal when "
		 "policy.require_fcrdns is set). Commands after EHLO wait for it." },
	{ .key = "policy.fcrdns_loopback", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(policy.fcrdns_loopback),
	  .doc = "Look up loopback clients (127.0.0.0/8, ::1) in the DNS like any other; when "
		 "false they are \"localhost\", confirmed, without a lookup. For tests with a "
		 "DNS server on loopback. Also applies to dnsbl lookups." },

	{ .key = "access.allow", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(access.allow), .count_off = OFF(access.n_allow), .check = conf_cidr_check,
	  .doc = "Networks (a.b.c.d/n, x::/n, addresses) whose clients skip the DNS lists, "
		 "greylisting and the rate limits. The longest matching prefix of "
		 "access.allow, access.deny and access.file decides; at equal prefixes deny "
		 "wins. Not a relay permission (relay.trusted_networks)." },
	{ .key = "access.deny", .type = CONF_T_STRLIST, .def = "[]",
	  .off = OFF(access.deny), .count_off = OFF(access.n_deny), .check = conf_cidr_check,
	  .doc = "Networks whose clients are refused with 554 5.7.1 (access.reject_at)." },
	{ .key = "access.file", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(access.file),
	  .doc = "More networks, one a line: \"allow NET\" or \"deny NET [reason]\" (the "
		 "reason goes into the 554), # comments; at most 100000 lines. Read as root "
		 "when smtpd starts, so a reload (SIGHUP) reads it again; a broken file "
		 "refuses the start or the reload with its line. \"\" for none." },
	{ .key = "access.reject_at", .type = CONF_T_ENUM, .def = "connect",
	  .names = conf_reject_at_names, .off = OFF(access.reject_at), .lower = true,
	  .doc = "Where a denied client hears its 554 5.7.1: connect (instead of the "
		 "greeting, then the connection is closed) or rcpt (at each RCPT, so the log "
		 "shows sender and recipients, as Postfix's smtpd_delay_reject)." },

	{ .key = "dnsbl.lists", .type = CONF_T_RECORDS, .def = "[]", .off = OFF(dnsbl.lists),
	  .count_off = OFF(dnsbl.n_lists), .fields = conf_dnsbl_fields,
	  .n_fields = N_OF(conf_dnsbl_fields), .item_size = sizeof(struct conf_dnsbl_list),
	  .item_name = "dns list", .shorthand = "zone",
	  .doc = "DNS block lists (RFC 5782) asked about each client at connect, in parallel, "
		 "while the session goes on: {zone: zen.spamhaus.org, weight: 2, codes: "
		 "\"127.0.0.2, 127.0.0.4/30\"} or just the zone. The weights of the lists that "
		 "list the client add up; from dnsbl.threshold on, each RCPT gets 554 5.7.1 "
		 "naming the list. Authenticated clients and access.allow are exempt." },
	{ .key = "dnsbl.allow_lists", .type = CONF_T_RECORDS, .def = "[]",
	  .off = OFF(dnsbl.allow_lists), .count_off = OFF(dnsbl.n_allow_lists),
	  .fields = conf_dnsbl_fields, .n_fields = N_OF(conf_dnsbl_fields),
	  .item_size = sizeof(struct conf_dnsbl_list), .item_name = "dns list",
	  .shorthand = "zone",
	  .doc = "DNS allow lists (DNSWL): their weights are taken from the score, and a "
		 "client listed on any of them skips greylisting." },
	{ .key = "dnsbl.threshold", .type = CONF_T_UINT, .def = "1", .min = 1, .max = 100000,
	  .off = OFF(dnsbl.threshold),
	  .doc = "Score from which a client is refused." },
	{ .key = "dnsbl.timeout", .type = CONF_T_DURATION, .def = "5s",
	  .min = 100, .max = MIN, .off = OFF(dnsbl.timeout),
	  .doc = "How long commands after EHLO wait for the lists' answers at most; lists "
		 "that did not answer by then do not count (the client is accepted)." },

	{ .key = "filter.greet_delay", .type = CONF_T_DURATION, .def = "0",
	  .min = 0, .max = MIN, .off = OFF(filter.greet_delay),
	  .doc = "Wait this long before the 220 greeting (as sendmail's greet_pause, "
		 "Postfix's postscreen_greet_wait): spam robots that talk first are caught "
		 "by filter.reject_early_talkers. 0 (the default) greets at once, as a "
		 "submission server must; 3s-6s is usual on port 25. access.allow networks "
		 "and submission listeners (listen[].submission) are greeted at once." },
	{ .key = "filter.reject_early_talkers", .type = CONF_T_BOOL, .def = "true",
	  .off = OFF(filter.reject_early_talkers),
	  .doc = "A client that sends anything before the 220 greeting gets 554 5.5.0 and "
		 "is disconnected (RFC 5321 §3.1: the client waits for the greeting). Only "
		 "with a filter.greet_delay: as postscreen's pregreet test, the wait is what "
		 "catches them (without one, a robot that sends at once may or may not "
		 "have been read before the greeting)." },
	{ .key = "filter.reject_unauth_pipelining", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(filter.reject_unauth_pipelining),
	  .doc = "A client that sends a command before the reply to the previous one "
		 "while PIPELINING (RFC 2920) is not in effect (before EHLO's reply, or "
		 "after HELO) gets 554 5.5.0 and is disconnected, as Postfix's "
		 "reject_unauth_pipelining. Off by default, as in Postfix: some clients (and "
		 "test tools) pipeline behind EHLO; on port 25, robots are the usual "
		 "culprits." },
	{ .key = "filter.helo_syntax", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(filter.helo_syntax),
	  .doc = "Refuse an EHLO/HELO name that is neither a syntactically valid domain "
		 "(letters, digits, hyphens, dots; RFC 5321 §4.1.2) nor an address literal: "
		 "501 5.5.2, as Postfix's reject_invalid_helo_hostname." },
	{ .key = "filter.sender_domain", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(filter.sender_domain),
	  .doc = "The MAIL FROM domain must resolve (MX, else A/AAAA; RFC 5321 §5.1): a "
		 "domain that does not exist gets 550 5.1.8, a lookup that fails 450 4.1.8, "
		 "a null MX (RFC 7505) 550 5.7.27, as Postfix's "
		 "reject_unknown_sender_domain. The null sender and authenticated clients "
		 "are exempt." },

	{ .key = "greylist.enabled", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(greylist.enabled),
	  .doc = "Greylisting: the first attempt of a (client /24 or /64, sender, "
		 "recipient) triplet gets 451 4.7.1 at RCPT; a retry after greylist.delay "
		 "passes, and the triplet is then let through for greylist.retention. "
		 "Authenticated clients, access.allow networks and clients on a "
		 "dnsbl.allow_lists list bypass it. The triplets live in shared memory and "
		 "are saved under spool_dir (greylist.db) by the master." },
	{ .key = "greylist.delay", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = DAY, .off = OFF(greylist.delay),
	  .doc = "How long a client must wait before its retry passes." },
	{ .key = "greylist.retry_window", .type = CONF_T_DURATION, .def = "2d",
	  .min = MIN, .max = 30 * DAY, .off = OFF(greylist.retry_window),
	  .doc = "A retry later than this after the first attempt starts over." },
	{ .key = "greylist.retention", .type = CONF_T_DURATION, .def = "35d",
	  .min = MIN, .max = 365 * DAY, .off = OFF(greylist.retention),
	  .doc = "A triplet that passed is remembered this long after it was last seen." },
	{ .key = "greylist.max_entries", .type = CONF_T_UINT, .def = "262144",
	  .min = 1024, .max = 16777216, .off = OFF(greylist.max_entries),
	  .doc = "Triplets kept (24 octets each in shared memory and in the file, rounded up "
		 "to a power of two); when full, the one seen longest ago is evicted. "
		 "Changes with a restart only." },
	{ .key = "greylist.save_interval", .type = CONF_T_DURATION, .def = "1m",
	  .min = SEC, .max = DAY, .off = OFF(greylist.save_interval),
	  .doc = "How often the master writes the triplets to spool_dir/greylist.db (and "
		 "at stop); a crash loses at most this much." },

	{ .key = "dauth.inbound", .type = CONF_T_BOOL, .def = "true", .off = OFF(dauth.inbound),
	  .doc = "Check SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) on mail from "
		 "clients that did not authenticate, and add one Authentication-Results field "
		 "(RFC 8601) with the results above the message. Authentication-Results fields "
		 "that claim dauth.authserv_id are removed from every message received, as "
		 "forgeries (RFC 8601 §5)." },
	{ .key = "dauth.authserv_id", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(dauth.authserv_id), .lower = true,
	  .doc = "The authserv-id of our Authentication-Results fields (RFC 8601 §2.5): the name "
		 "of the administrative domain whose results they are; \"\" for hostname." },
	{ .key = "dauth.loopback", .type = CONF_T_BOOL, .def = "false", .off = OFF(dauth.loopback),
	  .doc = "Check clients on loopback (127.0.0.0/8, ::1) too; when false their mail is "
		 "local and gets no checks. For tests with a DNS server on loopback." },
	{ .key = "dauth.timeout", .type = CONF_T_DURATION, .def = "20s",
	  .min = 100, .max = 5 * MIN, .off = OFF(dauth.timeout),
	  .doc = "At the end of data, wait at most this long for the SPF, DKIM and DMARC "
		 "lookups; what is unfinished then is a temperror (see dauth.temperror)." },
	{ .key = "dauth.dmarc_enforce", .type = CONF_T_ENUM, .def = "reject",
	  .names = conf_dmarc_enforce_names, .off = OFF(dauth.dmarc_enforce), .lower = true,
	  .doc = "What a DMARC failure does (RFC 7489 §6.6.4, after p, sp and pct): reject "
		 "(p=reject gets 550 5.7.1 at the end of DATA, p=quarantine is quarantined), "
		 "quarantine (both are quarantined: an X-Hikyaku-Quarantine field, and local "
		 "delivery into the mailbox's .Junk folder) or none (recorded in "
		 "Authentication-Results only)." },
	{ .key = "dauth.temperror", .type = CONF_T_ENUM, .def = "accept",
	  .names = conf_dauth_temperror_names, .off = OFF(dauth.temperror), .lower = true,
	  .doc = "When DMARC's DNS lookups fail or time out (temperror, RFC 7489 §6.6.3): "
		 "accept (deliver, the result recorded) or tempfail (451 4.7.1 at the end of "
		 "DATA, the client tries again later)." },
	{ .key = "dauth.spf_reject", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(dauth.spf_reject),
	  .doc = "Refuse mail whose SPF result is fail with 550 5.7.23 (RFC 7372), unless "
		 "DMARC passed: RFC 7489 §10.1 wants DMARC to have its say first." },
	{ .key = "arc.verify", .type = CONF_T_BOOL, .def = "true", .off = OFF(arc.verify),
	  .doc = "Verify the ARC chain (RFC 8617 §5.2) of mail that gets the dauth checks "
		 "(see dauth.inbound): the result goes into our Authentication-Results as "
		 "arc=pass, fail or none with smtp.remote-ip, and into the event=dauth log "
		 "line. At most 50 ARC sets; more, a broken structure, a failed signature or "
		 "a key lookup that fails or times out (dauth.timeout) is arc=fail. The "
		 "result is recorded only: it changes no DMARC disposition." },
	{ .key = "arc.seal", .type = CONF_T_ENUM, .def = "forwarded", .names = conf_arc_seal_names,
	  .off = OFF(arc.seal), .lower = true,
	  .doc = "Add an ARC set (ARC-Authentication-Results with our Authentication-Results, "
		 "ARC-Message-Signature, ARC-Seal with cv= from the verified chain; RFC 8617 "
		 "§5.1) to inbound mail that got the dauth checks: forwarded (when a "
		 "recipient is an alias with a target outside local_domains: the message "
		 "leaves re-routed by us), always (every such message) or never. Needs the "
		 "dkim.sign entry with arc: true; the key stays in the keys process. A "
		 "message is sealed as received: a milter that changes it afterwards breaks "
		 "the seal." },
	{ .key = "dmarc.reports", .type = CONF_T_BOOL, .def = "false", .off = OFF(dmarc.reports),
	  .doc = "Send DMARC aggregate reports (RFC 7489 §7.2) once a day from the queue "
		 "process, at 00:05 UTC plus a little, for every finished day not yet sent "
		 "(as `hikyaku dmarc report` does by hand). The records are kept either way "
		 "(spool_dir/dmarc/YYYYMMDD)." },
	{ .key = "dmarc.max_day_size", .type = CONF_T_SIZE, .def = "64M",
	  .min = 64 * KIB, .max = 16 * GIB, .off = OFF(dmarc.max_day_size),
	  .doc = "The most octets of DMARC records kept for one UTC day (about 300 octets a "
		 "message); past it the day's further messages are not recorded (logged once)." },
	{ .key = "dmarc.report_org_name", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(dmarc.org_name),
	  .doc = "The org_name of our aggregate reports (RFC 7489 §7.2.1.1); \"\" for hostname." },
	{ .key = "dmarc.report_from", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(dmarc.report_from),
	  .doc = "The sender (envelope and From) and the email of our aggregate reports; "
		 "\"\" for postmaster@hostname. The reports are submitted like local mail, so "
		 "they are DKIM-signed when dkim.sign has a key for its domain." },
	{ .key = "state.redis", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(state.redis),
	  .check = conf_state_redis_check,
	  .doc = "Keep the connection, message and recipient rates (per client network, "
		 "and per user) and the greylist triplets in this Redis server, shared by several hikyaku "
		 "nodes: \"host:port\" (an IPv4 or [IPv6] address: smtpd resolves no names) "
		 "or \"unix:/path\". Each smtpd talks to it asynchronously and never waits "
		 "longer than state.redis_timeout. \"\" (the default): all of it in "
		 "shared memory on this host. Concurrent connections stay per host. No TLS "
		 "(Debian 12's hiredis has none)." },
	{ .key = "state.redis_password_file", .type = CONF_T_STRING, .def = "\"\"",
	  .off = OFF(state.redis_password_file),
	  .doc = "A file (root's, mode 0600 or 0400) whose first line is the Redis AUTH "
		 "password; read by smtpd as root before its sandbox. \"\" for no AUTH." },
	{ .key = "state.redis_timeout", .type = CONF_T_DURATION, .def = "500ms",
	  .min = 10, .max = 60 * SEC, .off = OFF(state.redis_timeout),
	  .doc = "How long a check waits for Redis before state.redis_failure applies; also "
		 "the connect timeout. Reconnects back off from 100 ms to 5 s." },
	{ .key = "state.redis_failure", .type = CONF_T_ENUM, .def = "tempfail",
	  .names = conf_state_failure_names, .off = OFF(state.redis_failure), .lower = true,
	  .doc = "What a rate or greylist check does when Redis is down or slow: tempfail "
		 "(451 4.3.0, the client retries later) or accept (the check is skipped). "
		 "Logged as event=redis (at most 5 lines a minute per process) and "
		 "event=policy_timeout." },
};
/* clang-format on */

#define CONF_N_SETTINGS (sizeof(conf_settings) / sizeof(conf_settings[0]))
const size_t conf_n_settings = CONF_N_SETTINGS;

/* Position of a node, 1-based; line 0 means "not set in the file". */
struct conf_pos {
	int line;
	int col;
};

/* One load in progress. */
struct conf_parse {
	struct conf *conf;
	const char *file;
	char *err;
	size_t errlen;
	struct conf_pos pos[CONF_N_SETTINGS];       /* where each setting was given */
	struct conf_pos *item_pos[CONF_N_SETTINGS]; /* records: where each item was */
};

/* --- small helpers ------------------------------------------------------ */

/* base is the struct conf, or one record for the fields of a record. */
static void *conf_field(void *base, const struct conf_setting *s)
{
	return (char *)base + s->off;
}

static size_t *conf_count(void *base, const struct conf_setting *s)
{
	return (size_t *)(void *)((char *)base + s->count_off);
}

static const struct conf_setting *conf_setting_find(const char *key)
{
	for (size_t i = 0; i < CONF_N_SETTINGS; i++)
		if (strcmp(conf_settings[i].key, key) == 0)
			return &conf_settings[i];
	return NULL;
}

/* Is name a section ("limits") of some dotted key? */
static bool conf_section_exists(const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < CONF_N_SETTINGS; i++)
		if (strncmp(conf_settings[i].key, name, n) == 0 && conf_settings[i].key[n] == '.')
			return true;
	return false;
}

static __attribute__((format(printf, 4, 5))) int conf_error(struct conf_parse *p, int line, int col,
                                                            const char *fmt, ...)
{
	char msg[CONF_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->err != NULL && p->errlen > 0)
		snprintf(p->err, p->errlen, "%s:%d:%d: %s", p->file, line, col, msg);
	return -1;
}

int conf_msg(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Where a node starts. Collections have no public start mark in libfyaml
 * 0.7, so they are located by their first scalar; an empty collection or a
 * null value (no token) falls back to the key. */
static bool conf_node_pos(struct fy_node *n, int depth, struct conf_pos *r)
{
	void *it = NULL;

	if (n == NULL || depth > 8)
		return false;
	if (fy_node_is_scalar(n)) {
		const struct fy_mark *m = fy_token_start_mark(fy_node_get_scalar_token(n));
		if (m == NULL)
			return false;
		r->line = m->line + 1;
		r->col = m->column + 1;
		/* The token of a quoted scalar starts after the quote, that of an
		 * alias after the '*': point at the quote or the '*'. */
		enum fy_node_style st = fy_node_get_style(n);
		if ((st == FYNS_SINGLE_QUOTED || st == FYNS_DOUBLE_QUOTED || st == FYNS_ALIAS) &&
		    r->col > 1)
			r->col--;
		return true;
	}
	if (fy_node_is_sequence(n))
		return conf_node_pos(fy_node_sequence_iterate(n, &it), depth + 1, r);
	struct fy_node_pair *pair = fy_node_mapping_iterate(n, &it);
	return pair != NULL && conf_node_pos(fy_node_pair_key(pair), depth + 1, r);
}

static struct conf_pos conf_pos_of(struct fy_node *n, struct fy_node *fallback)
{
	struct conf_pos r = {1, 1};

	if (!conf_node_pos(n, 0, &r))
		conf_node_pos(fallback, 0, &r);
	return r;
}

/* YAML 1.2 core schema null: an empty plain scalar, "~" or "null". */
static bool conf_node_is_null(struct fy_node *n)
{
	size_t len;
	const char *s;

	if (n == NULL)
		return true;
	if (!fy_node_is_scalar(n) || fy_node_get_style(n) != FYNS_PLAIN)
		return false;
	s = fy_node_get_scalar(n, &len);
	return s == NULL || len == 0 || (len == 1 && s[0] == '~') ||
	       (len == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 ||
	                     memcmp(s, "NULL", 4) == 0));
}

/* The values of an enum, "a, b or c". */
void conf_enum_list(const struct conf_setting *s, char *out, size_t len)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t i = 0; s->names[i] != NULL && o < len; i++) {
		const char *sep = i == 0 ? "" : s->names[i + 1] == NULL ? " or " : ", ";
		int n = snprintf(out + o, len - o, "%s%s", sep, s->names[i]);
		if (n < 0)
			break;
		o += (size_t)n;
	}
}

void conf_format_number(const struct conf_setting *s, uint64_t v, char *out, size_t len)
{
	if (s->type == CONF_T_SIZE)
		str_format_size(v, out, len);
	else if (s->type == CONF_T_DURATION)
		str_format_duration_ms(v, out, len);
	else
		snprintf(out, len, "%llu", (unsigned long long)v);
}

/* --- value checks --------------------------------------------------------- */

static char *conf_hostname_default(void)
{
	char name[256];

	/* If it has no dot it is still used as is: conf_check warns. */
	if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	return xstrdup(name);
}

static int conf_log_level_check(const char *s, char *msg, size_t msglen)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i]) == 0)
			return 0;
	return conf_msg(msg, msglen, "invalid log level \"%.64s\": use debug, info, warn or error",
	                s);
}

static int conf_path_check(const char *s, char *msg, size_t msglen)
{
	if (s[0] == '\0')
		return conf_msg(msg, msglen, "must not be empty");
	return 0;
}

/* Letters, digits, '-' and '.', as in RFC 5321 §4.1.2 Domain (A-labels). */
bool conf_is_dns_name(const char *s, size_t len)
{
	if (len == 0 || len > 255 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '.';
		if (!ok || (c == '.' && i + 1 < len && s[i + 1] == '.'))
			return false;
	}
	return true;
}

/* Lenient on purpose (a system name may hold '_'; conf_check warns about a
 * missing dot) but nothing that would break an SMTP line: printable ASCII
 * without spaces. */
static int conf_hostname_check(const char *s, char *msg, size_t msglen)
{
	size_t len = strlen(s);
	bool ok = len > 0 && len <= 255;

	for (size_t i = 0; ok && i < len; i++)
		ok = s[i] > ' ' && s[i] < 0x7f;
	if (!ok)
		return conf_msg(msg, msglen, "invalid host name \"%.64s\"", s);
	return 0;
}

static int conf_helo_name_check(const char *s, char *msg, size_t msglen)
{
	return s[0] == '\0' ? 0 : conf_hostname_check(s, msg, msglen);
}

/* Domains are kept in A-label form (RFC 5890 §2.3.2.1), the form they are
 * compared in, whichever form the file used. */
static int conf_value_idna(char **v, char *msg, size_t msglen)
{
	char ascii[MAIL_IDNA_MAX + 1];
	const char *why;

	if (mail_domain_to_ascii(*v, strlen(*v), ascii, sizeof(ascii), &why) < 0)
		return conf_msg(msg, msglen, "invalid domain \"%.64s\": %s", *v, why);
	free(*v);
	*v = xstrdup(ascii);
	return 0;
}

const char *conf_domain_ascii(const char *domain, char *out, size_t outlen)
{
	if (domain == NULL || mail_domain_to_ascii(domain, strlen(domain), out, outlen, NULL) < 0)
		return NULL;
	return out;
}

static int conf_domain_check(const char *s, char *msg, size_t msglen)
{
	if (!conf_is_dns_name(s, strlen(s)))
		return conf_msg(msg, msglen, "invalid domain \"%.64s\"", s);
	return 0;
}

/* A DKIM selector (RFC 6376 §3.1): dot-separated labels of letters,
 * digits, '-' and '_' (published under _domainkey, so '_' is allowed). */
static int conf_dkim_selector_check(const char *s, char *msg, size_t msglen)
{
	size_t len = strlen(s), label = 0;

	if (len == 0 || len > 63 || s[0] == '.' || s[len - 1] == '.')
		return conf_msg(msg, msglen, "invalid selector \"%.64s\"", s);
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '.') {
			if (label == 0)
				return conf_msg(msg, msglen, "invalid selector \"%.64s\"", s);
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return conf_msg(msg, msglen, "invalid selector \"%.64s\"", s);
		label++;
	}
	return 0;
}

size_t conf_dkim_keys_for(const struct conf *conf, const char *domain, size_t *idx, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < conf->dkim.n_sign && n < max; i++)
		if (strcasecmp(conf->dkim.sign[i].domain, domain) == 0)
			idx[n++] = i;
	return n;
}

const struct conf_dkim_key *conf_arc_key(const struct conf *conf, size_t *idx_r)
{
	for (size_t i = 0; i < conf->dkim.n_sign; i++)
		if (conf->dkim.sign[i].arc) {
			if (idx_r != NULL)
				*idx_r = i;
			return &conf->dkim.sign[i];
		}
	return NULL;
}

/* The SASL mechanisms smtpd implements (auth/sasl.c); conf sits below auth,
 * so the names are repeated here. */
static int conf_auth_mechanism_check(const char *s, char *msg, size_t msglen)
{
	static const char *const mechs[] = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"};

	for (size_t i = 0; i < N_OF(mechs); i++)
		if (strcasecmp(s, mechs[i]) == 0)
			return 0;
	return conf_msg(msg, msglen,
	                "unknown SASL mechanism \"%.64s\" (PLAIN, LOGIN, CRAM-MD5 or "
	                "SCRAM-SHA-256)",
	                s);
}

/* A DNS list's zone: a name with at least one dot, room left for the
 * 73 octets of an IPv6 address's nibbles in front of it. */
static int conf_dnsbl_zone_check(const char *s, char *msg, size_t msglen)
{
	size_t len = strlen(s);
	if (!conf_is_dns_name(s, len) || strchr(s, '.') == NULL || s[len - 1] == '.' ||
	    len > 253 - 74)
		return conf_msg(msg, msglen,
		                "invalid zone \"%.64s\": expected a DNS name such as "
		                "zen.spamhaus.org (at most 179 octets)",
		                s);
	return 0;
}

static int conf_dnsbl_codes_check(const char *s, char *msg, size_t msglen)
{
	struct cidr_codes c;
	const char *error = NULL;
	if (cidr_codes_parse(s, &c, &error) < 0)
		return conf_msg(msg, msglen, "invalid codes \"%.64s\": %s", s, error);
	return 0;
}

static int conf_milter_socket_check(const char *s, char *msg, size_t msglen)
{
	if (strncmp(s, "unix:/", 6) == 0 && strlen(s) < 108 + 5)
		return 0;
	if (strncmp(s, "inet:", 5) == 0 && strrchr(s, ':') > s + 5)
		return 0;
	snprintf(msg, msglen, "expected \"unix:/path\" or \"inet:host:port\"");
	return -1;
}

static int conf_state_redis_check(const char *s, char *msg, size_t msglen)
{
	struct rstate_addr a;
	const char *error = NULL;
	if (s[0] != '\0' && rstate_addr_parse(s, &a, &error) < 0)
		return conf_msg(msg, msglen, "invalid state.redis \"%.64s\": %s", s, error);
	return 0;
}

static int conf_http_listen_check(const char *s, char *msg, size_t msglen)
{
	return s[0] == '\0' ? 0 : conf_listener_check(s, msg, msglen);
}

/* "host:port", "[v6]:port" or "*:port"; host an IPv4 literal or a name. */
static int conf_listener_check(const char *s, char *msg, size_t msglen)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;
	char host[256];

	if (colon == NULL || colon == s)
		goto bad;
	if (str_parse_u64(colon + 1, strlen(colon + 1), 1, 65535, &port) < 0)
		return conf_msg(msg, msglen, "invalid listener \"%.64s\": port must be 1-65535", s);
	size_t hlen = (size_t)(colon - s);
	if (hlen >= sizeof(host))
		goto bad;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "*") == 0)
		return 0;
	if (host[0] == '[') {
		struct in6_addr a6;
		if (hlen < 3 || host[hlen - 1] != ']')
			goto bad;
		host[hlen - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a6) != 1)
			goto bad;
		return 0;
	}
	if (conf_is_dns_name(host, hlen))
		return 0;
bad:
	return conf_msg(msg, msglen,
	                "invalid listener \"%.64s\": expected host:port, [v6]:port or *:port", s);
}

/* --- setting values ------------------------------------------------------- */

static int conf_enum_set(void *base, const struct conf_setting *s, const char *v, char *msg,
                         size_t msglen)
{
	char values[128];

	for (size_t i = 0; s->names[i] != NULL; i++) {
		if (strcmp(v, s->names[i]) == 0) {
			*(int *)conf_field(base, s) = (int)i;
			return 0;
		}
	}
	conf_enum_list(s, values, sizeof(values));
	return conf_msg(msg, msglen, "invalid value \"%.64s\": expected %s", v, values);
}

/* Parse text (a YAML scalar, or a default) into a scalar setting. */
static int conf_scalar_set(void *base, const struct conf_setting *s, const char *v, char *msg,
                           size_t msglen)
{
	uint64_t n;
	int rc;
	char lo[32], hi[32], got[32];

	switch (s->type) {
	case CONF_T_STRING: {
		if (s->check != NULL && s->check(v, msg, msglen) < 0)
			return -1;
		char **field = conf_field(base, s);
		free(*field);
		*field = xstrdup(v);
		return 0;
	}
	case CONF_T_BOOL:
		/* YAML 1.2 core schema booleans only: no yes/no/on/off. */
		if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0)
			*(bool *)conf_field(base, s) = true;
		else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 ||
		         strcmp(v, "FALSE") == 0)
			*(bool *)conf_field(base, s) = false;
		else
			return conf_msg(msg, msglen, "expected true or false, got \"%.64s\"", v);
		return 0;
	case CONF_T_ENUM:
		return conf_enum_set(base, s, v, msg, msglen);
	case CONF_T_UINT:
		rc = str_parse_u64(v, strlen(v), 0, UINT64_MAX, &n);
		if (rc < 0)
			return conf_msg(msg, msglen, "expected an unsigned integer, got \"%.64s\"",
			                v);
		break;
	case CONF_T_SIZE:
		if (str_parse_size(v, &n) < 0)
			return conf_msg(msg, msglen,
			                "invalid size \"%.64s\": expected a number with an "
			                "optional K, M or G suffix, e.g. 25M",
			                v);
		break;
	case CONF_T_DURATION:
		if (str_parse_duration_ms(v, &n) < 0)
			return conf_msg(msg, msglen,
			                "invalid duration \"%.64s\": expected e.g. 30s, 5m, 2h, 1d",
			                v);
		break;
	default:
		return conf_msg(msg, msglen, "expected a list");
	}
	if (n < s->min || n > s->max) {
		conf_format_number(s, s->min, lo, sizeof(lo));
		conf_format_number(s, s->max, hi, sizeof(hi));
		conf_format_number(s, n, got, sizeof(got));
		return conf_msg(msg, msglen, "%s is out of range %s..%s", got, lo, hi);
	}
	*(uint64_t *)conf_field(base, s) = n;
	return 0;
}

static void conf_values_free(void *base, const struct conf_setting *table, size_t n);

static void conf_list_clear(void *base, const struct conf_setting *s)
{
	size_t *count = conf_count(base, s);

	if (s->type == CONF_T_STRLIST) {
		char ***list = conf_field(base, s);
		for (size_t i = 0; i < *count; i++)
			free((*list)[i]);
		free(*list);
		*list = NULL;
	} else {
		char **list = conf_field(base, s);
		for (size_t i = 0; i < *count; i++)
			conf_values_free(*list + i * s->item_size, s->fields, s->n_fields);
		free(*list);
		*list = NULL;
	}
	*count = 0;
}

/* Free what the settings of table own in base (strings and lists). */
static void conf_values_free(void *base, const struct conf_setting *table, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct conf_setting *s = &table[i];
		if (s->type == CONF_T_STRING) {
			char **field = conf_field(base, s);
			free(*field);
			*field = NULL;
		} else if (conf_is_list(s)) {
			conf_list_clear(base, s);
		}
	}
}

/* Append one string item, after its check; v is consumed either way. */
static int conf_strlist_add(void *base, const struct conf_setting *s, char *v, char *msg,
                            size_t msglen)
{
	size_t *count = conf_count(base, s);
	char ***list = conf_field(base, s);

	if (s->lower)
		str_lower(v);
	if ((s->idna && conf_value_idna(&v, msg, msglen) < 0) ||
	    (s->check != NULL && s->check(v, msg, msglen) < 0)) {
		free(v);
		return -1;
	}
	*list = xreallocarray(*list, *count + 1, sizeof(**list));
	(*list)[*count] = v;
	(*count)++;
	return 0;
}

/* Append one record with its fields' defaults; returns it. */
static void *conf_record_add(void *base, const struct conf_setting *s)
{
	size_t *count = conf_count(base, s);
	char **list = conf_field(base, s);

	*list = xreallocarray(*list, *count + 1, s->item_size);
	char *item = *list + *count * s->item_size;
	memset(item, 0, s->item_size);
	(*count)++;
	return item;
}

/* Defaults of every setting of table in base; required fields stay NULL
 * and all list defaults are empty (base is zeroed). */
static void conf_defaults_apply(void *base, const struct conf_setting *table, size_t n)
{
	char msg[CONF_MSG_MAX];

	for (size_t i = 0; i < n; i++) {
		const struct conf_setting *s = &table[i];
		if (conf_is_list(s) || s->required)
			continue;
		if (s->def == NULL) {
			char **field = conf_field(base, s);
			*field = s->def_fn();
			continue;
		}
		/* def is YAML text: "\"\"" is the empty string. */
		const char *v = strcmp(s->def, "\"\"") == 0 ? "" : s->def;
		if (conf_scalar_set(base, s, v, msg, sizeof(msg)) < 0) {
			/* The table is wrong: a bug, caught by the unit tests. */
			fprintf(stderr, "conf: bad default for %s: %s\n", s->key, msg);
			abort();
		}
	}
}

/* --- walking the YAML document ------------------------------------------- */

/* The text of a scalar node, NUL-terminated, or NULL with an error. */
static char *conf_node_text(struct conf_parse *p, const char *key, struct fy_node *n,
                            struct fy_node *keynode, const char *what)
{
	struct conf_pos pos = conf_pos_of(n, keynode);
	size_t len;
	const char *s;

	if (n != NULL && fy_node_is_alias(n)) {
		conf_error(p, pos.line, pos.col, "%s: aliases are not supported", key);
		return NULL;
	}
	if (conf_node_is_null(n)) {
		conf_error(p, pos.line, pos.col, "%s: expected %s, got nothing (null)", key, what);
		return NULL;
	}
	if (!fy_node_is_scalar(n)) {
		conf_error(p, pos.line, pos.col, "%s: expected %s, got a %s", key, what,
		           fy_node_is_sequence(n) ? "list" : "mapping");
		return NULL;
	}
	s = fy_node_get_scalar(n, &len);
	if (s == NULL)
		s = "";
	if (memchr(s, '\0', len) != NULL) {
		conf_error(p, pos.line, pos.col, "%s: NUL byte in value", key);
		return NULL;
	}
	return xstrndup(s, len);
}

/* A scalar setting (or record field) from its node; key names it in errors. */
static int conf_scalar_apply(struct conf_parse *p, void *base, const struct conf_setting *s,
                             const char *key, struct fy_node *keynode, struct fy_node *val)
{
	char msg[CONF_MSG_MAX];
	struct conf_pos pos = conf_pos_of(val, keynode);
	int rc;

	char *v = conf_node_text(p, key, val, keynode,
	                         s->type == CONF_T_STRING ? "a string" : "a scalar");
	if (v == NULL)
		return -1;
	if (s->lower)
		str_lower(v);
	if (s->idna && conf_value_idna(&v, msg, sizeof(msg)) < 0)
		rc = -1;
	else
		rc = conf_scalar_set(base, s, v, msg, sizeof(msg));
	free(v);
	if (rc < 0)
		return conf_error(p, pos.line, pos.col, "%s: %s", key, msg);
	return 0;
}

/* A list value must be a sequence. */
static int conf_sequence_check(struct conf_parse *p, const struct conf_setting *s,
                               struct fy_node *keynode, struct fy_node *val)
{
	struct conf_pos pos = conf_pos_of(val, keynode);

	if (val != NULL && fy_node_is_sequence(val))
		return 0;
	if (val != NULL && fy_node_is_alias(val))
		return conf_error(p, pos.line, pos.col, "%s: aliases are not supported", s->key);
	return conf_error(p, pos.line, pos.col, "%s: expected a list (e.g. [a, b])", s->key);
}

static int conf_strlist_apply(struct conf_parse *p, const struct conf_setting *s,
                              struct fy_node *keynode, struct fy_node *val)
{
	char msg[CONF_MSG_MAX];
	struct fy_node *item;
	void *it = NULL;

	if (conf_sequence_check(p, s, keynode, val) < 0)
		return -1;
	conf_list_clear(p->conf, s); /* the file replaces the default */
	while ((item = fy_node_sequence_iterate(val, &it)) != NULL) {
		char *v = conf_node_text(p, s->key, item, keynode, "a string");
		if (v == NULL)
			return -1;
		if (conf_strlist_add(p->conf, s, v, msg, sizeof(msg)) < 0) {
			struct conf_pos pos = conf_pos_of(item, keynode);
			return conf_error(p, pos.line, pos.col, "%s: %s", s->key, msg);
		}
	}
	return 0;
}

/* A mapping key as a plain string (ks, klen), or an error. */
static int conf_key_get(struct conf_parse *p, struct fy_node *k, struct fy_node *v,
                        const char **ks_r, size_t *klen_r)
{
	struct conf_pos pos = conf_pos_of(k, v);

	if (k == NULL || !fy_node_is_scalar(k) || fy_node_is_alias(k) ||
	    (*ks_r = fy_node_get_scalar(k, klen_r)) == NULL || memchr(*ks_r, '\0', *klen_r) != NULL)
		return conf_error(p, pos.line, pos.col, "keys must be plain strings");
	return 0;
}

/* The fields of one record from a mapping, or its shorthand field from a
 * scalar ("127.0.0.1:25" is {address: "127.0.0.1:25"}). */
static int conf_record_walk(struct conf_parse *p, const struct conf_setting *s, void *rec,
                            struct fy_node *item, struct fy_node *keynode)
{
	char key[CONF_KEY_MAX];
	uint32_t given = 0;
	struct fy_node_pair *pair;
	void *it = NULL;

	if (item == NULL || !fy_node_is_mapping(item)) {
		struct conf_pos pos = conf_pos_of(item, keynode);
		if (conf_node_is_null(item))
			return conf_error(p, pos.line, pos.col,
			                  "%s: expected a %s, got nothing (null)", s->key,
			                  s->item_name);
		if (s->shorthand == NULL || fy_node_is_sequence(item))
			return conf_error(p, pos.line, pos.col, "%s: expected a mapping (a %s)",
			                  s->key, s->item_name);
		for (size_t i = 0; i < s->n_fields; i++)
			if (strcmp(s->fields[i].key, s->shorthand) == 0)
				return conf_scalar_apply(p, rec, &s->fields[i], s->key, keynode,
				                         item);
		abort(); /* the table names a shorthand field it lacks */
	}
	while ((pair = fy_node_mapping_iterate(item, &it)) != NULL) {
		struct fy_node *k = fy_node_pair_key(pair), *v = fy_node_pair_value(pair);
		const struct conf_setting *f;
		const char *ks;
		size_t klen, i;

		if (conf_key_get(p, k, v, &ks, &klen) < 0)
			return -1;
		for (i = 0; i < s->n_fields; i++)
			if (strlen(s->fields[i].key) == klen &&
			    memcmp(s->fields[i].key, ks, klen) == 0)
				break;
		f = i < s->n_fields ? &s->fields[i] : NULL;
		snprintf(key, sizeof(key), "%s[].%.*s", s->key, (int)(klen > 64 ? 64 : klen), ks);
		if (f == NULL) {
			struct conf_pos pos = conf_pos_of(k, v);
			return conf_error(p, pos.line, pos.col, "unknown key \"%s\"", key);
		}
		if (conf_scalar_apply(p, rec, f, key, k, v) < 0)
			return -1;
		given |= 1U << i;
	}
	for (size_t i = 0; i < s->n_fields; i++) {
		if (s->fields[i].required && !(given & (1U << i))) {
			struct conf_pos pos = conf_pos_of(item, keynode);
			return conf_error(p, pos.line, pos.col, "%s: %s without %s", s->key,
			                  s->item_name, s->fields[i].key);
		}
	}
	return 0;
}

static int conf_records_apply(struct conf_parse *p, const struct conf_setting *s, size_t idx,
                              struct fy_node *keynode, struct fy_node *val)
{
	struct fy_node *item;
	void *it = NULL;

	if (conf_sequence_check(p, s, keynode, val) < 0)
		return -1;
	conf_list_clear(p->conf, s); /* the file replaces the default */
	free(p->item_pos[idx]);
	p->item_pos[idx] = NULL;
	while ((item = fy_node_sequence_iterate(val, &it)) != NULL) {
		size_t n = *conf_count(p->conf, s);
		void *rec = conf_record_add(p->conf, s);
		p->item_pos[idx] = xreallocarray(p->item_pos[idx], n + 1, sizeof(struct conf_pos));
		p->item_pos[idx][n] = conf_pos_of(item, keynode);
		conf_defaults_apply(rec, s->fields, s->n_fields);
		if (item != NULL && fy_node_is_alias(item))
			return conf_error(p, p->item_pos[idx][n].line, p->item_pos[idx][n].col,
			                  "%s: aliases are not supported", s->key);
		if (conf_record_walk(p, s, rec, item, keynode) < 0)
			return -1;
	}
	return 0;
}

static int conf_setting_apply(struct conf_parse *p, const struct conf_setting *s,
                              struct fy_node *keynode, struct fy_node *val)
{
	size_t idx = (size_t)(s - conf_settings);

	p->pos[idx] = conf_pos_of(val, keynode);
	if (s->type == CONF_T_STRLIST)
		return conf_strlist_apply(p, s, keynode, val);
	if (s->type == CONF_T_RECORDS)
		return conf_records_apply(p, s, idx, keynode, val);
	return conf_scalar_apply(p, p->conf, s, s->key, keynode, val);
}

/* A mapping of settings: the top level (section NULL) or a section. */
static int conf_map_walk(struct conf_parse *p, struct fy_node *map, const char *section)
{
	struct fy_node_pair *pair;
	void *it = NULL;
	char full[CONF_KEY_MAX];

	while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
		struct fy_node *k = fy_node_pair_key(pair), *v = fy_node_pair_value(pair);
		struct conf_pos pos = conf_pos_of(k, v);
		const char *ks;
		size_t klen = 0;

		if (conf_key_get(p, k, v, &ks, &klen) < 0)
			return -1;
		int n = section != NULL
		            ? snprintf(full, sizeof(full), "%s.%.*s", section, (int)klen, ks)
		            : snprintf(full, sizeof(full), "%.*s", (int)klen, ks);
		if (n < 0 || (size_t)n >= sizeof(full))
			return conf_error(p, pos.line, pos.col, "unknown key \"%.64s...\"", full);

		/* One spelling only: "limits.recipients" is written as a section. */
		if (memchr(ks, '.', klen) != NULL)
			return conf_error(p, pos.line, pos.col,
			                  "unknown key \"%s\" (settings with a dot go in a "
			                  "section, e.g. limits:)",
			                  full);
		const struct conf_setting *s = conf_setting_find(full);
		if (s != NULL) {
			if (conf_setting_apply(p, s, k, v) < 0)
				return -1;
			continue;
		}
		if (section != NULL || !conf_section_exists(full))
			return conf_error(p, pos.line, pos.col, "unknown key \"%s\"", full);
		if (v == NULL || !fy_node_is_mapping(v)) {
			struct conf_pos vpos = conf_pos_of(v, k);
			return conf_error(p, vpos.line, vpos.col,
			                  "%s: expected a mapping of settings", full);
		}
		if (conf_map_walk(p, v, full) < 0)
			return -1;
	}
	return 0;
}

/* Where a setting was given, or 1:1 when it was not (a default). */
static struct conf_pos conf_setting_pos(const struct conf_parse *p, const struct conf_setting *s)
{
	struct conf_pos pos = p->pos[s - conf_settings];

	return pos.line != 0 ? pos : (struct conf_pos){1, 1};
}

/* Each listener against the TLS section and its own AUTH choices. */
static int conf_listeners_check(struct conf_parse *p)
{
	const struct conf *c = p->conf;
	const struct conf_setting *lis = conf_setting_find("listen");
	const struct conf_pos *item_pos = p->item_pos[lis - conf_settings];
	bool tls_ready = c->tls.n_certs > 0 || c->tls.self_signed_dir[0] != '\0';

	for (size_t i = 0; i < c->n_listeners; i++) {
		const struct conf_listener *l = &c->listeners[i];
		/* The embedded default has positions too; 1:1 only if absent. */
		struct conf_pos pos = item_pos != NULL ? item_pos[i] : conf_setting_pos(p, lis);

		if (l->tls != CONF_TLS_NONE && !tls_ready)
			return conf_error(p, pos.line, pos.col,
			                  "listener %s uses TLS but tls.certificates is empty and "
			                  "tls.self_signed_dir is not set (or give it tls: none)",
			                  l->address);
		/* RFC 6409 §4.3: submission needs AUTH; AUTH needs TLS here
		 * unless the operator allowed it in clear. */
		if (l->submission && !l->auth)
			return conf_error(p, pos.line, pos.col,
			                  "listener %s: submission requires auth: true",
			                  l->address);
		if (l->submission && l->tls == CONF_TLS_NONE && !l->plaintext_auth)
			return conf_error(
			    p, pos.line, pos.col,
			    "listener %s: submission requires AUTH, and AUTH requires "
			    "TLS: set tls: starttls or implicit (or plaintext_auth: true)",
			    l->address);
	}
	return 0;
}

/* Each route's transport against its address, and no domain twice. */
static int conf_routes_cross_check(struct conf_parse *p)
{
	const struct conf_setting *routes = conf_setting_find("routes");
	const struct conf_pos *item_pos = p->item_pos[routes - conf_settings];
	char msg[CONF_MSG_MAX];
	size_t bad = 0;

	if (conf_routes_check(p->conf, &bad, msg, sizeof(msg)) == 0)
		return 0;
	struct conf_pos pos = item_pos != NULL ? item_pos[bad] : conf_setting_pos(p, routes);
	return conf_error(p, pos.line, pos.col, "routes: %s", msg);
}

/* The ARC sealing key: one dkim.sign entry at most, RSA (RFC 8617 §4.1.3). */
static int conf_arc_cross_check(struct conf_parse *p)
{
	const struct conf_setting *sign = conf_setting_find("dkim.sign");
	const struct conf_pos *item_pos = p->item_pos[sign - conf_settings];
	size_t n = 0;
	for (size_t i = 0; i < p->conf->dkim.n_sign; i++) {
		const struct conf_dkim_key *k = &p->conf->dkim.sign[i];
		if (!k->arc)
			continue;
		struct conf_pos pos = item_pos != NULL ? item_pos[i] : conf_setting_pos(p, sign);
		if (k->type != CONF_DKIM_RSA)
			return conf_error(p, pos.line, pos.col,
			                  "dkim.sign: the arc key must be of type rsa (RFC 8617 "
			                  "seals are rsa-sha256)");
		if (++n > 1)
			return conf_error(p, pos.line, pos.col,
			                  "dkim.sign: only one entry may have arc: true");
	}
	return 0;
}

/* A delay notice after the message bounced would be nonsense. */
static int conf_delivery_cross_check(struct conf_parse *p)
{
	const struct conf_delivery *d = &p->conf->delivery;
	const struct conf_setting *warn = conf_setting_find("delivery.delay_warning");
	const struct conf_setting *life = conf_setting_find("delivery.max_lifetime");
	struct conf_pos pos;

	if (d->delay_warning == 0 || d->delay_warning < d->max_lifetime)
		return 0;
	pos = p->pos[warn - conf_settings];
	if (pos.line == 0)
		pos = conf_setting_pos(p, life);
	return conf_error(p, pos.line, pos.col,
	                  "delivery.delay_warning must be less than delivery.max_lifetime "
	                  "(or 0 for no delay notices)");
}

/* Settings that depend on each other, checked after the whole file. */
static int conf_cross_check(struct conf_parse *p)
{
	const struct conf *c = p->conf;
	const struct conf_setting *rmax = conf_setting_find("queue.retry_max");
	const struct conf_setting *rmin = conf_setting_find("queue.retry_min");
	struct conf_pos pos;

	if (c->n_listeners == 0) {
		pos = conf_setting_pos(p, conf_setting_find("listen"));
		return conf_error(p, pos.line, pos.col,
		                  "at least one listener is required (listen: [\"host:port\"])");
	}
	if (conf_listeners_check(p) < 0)
		return -1;
	if (c->queue.retry_max < c->queue.retry_min) {
		pos = p->pos[rmax - conf_settings];
		if (pos.line == 0)
			pos = conf_setting_pos(p, rmin);
		return conf_error(p, pos.line, pos.col,
		                  "queue.retry_max must be at least queue.retry_min");
	}
	if (conf_delivery_cross_check(p) < 0)
		return -1;
	if (conf_arc_cross_check(p) < 0)
		return -1;
	const char *key = "spool_dir";
	char msg[CONF_MSG_MAX];
	if (conf_check_roots(c, false, &key, msg, sizeof(msg)) < 0) {
		pos = conf_setting_pos(p, conf_setting_find(key));
		return conf_error(p, pos.line, pos.col, "%s", msg);
	}
	return conf_routes_cross_check(p);
}

/* --- loading ------------------------------------------------------------- */

static int conf_file_read(const char *path, struct buf *b, char *err, size_t errlen)
{
	char chunk[8192];
	size_t n;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(b, chunk, n) < 0) {
			snprintf(err, errlen, "%s: file too large (more than %d octets)", path,
			         CONF_FILE_MAX);
			fclose(f);
			return -1;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* Decode one UTF-8 sequence strictly (no overlongs, surrogates or values
 * past U+10FFFF); returns its length, 0 when invalid. */
size_t conf_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp_r)
{
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 1;
	uint32_t cp = n == 1 ? s[0] : s[0] & (0x7fU >> n);

	if ((n == 1 && s[0] >= 0x80) || s[0] > 0xf4 || n > len)
		return 0; /* a stray continuation byte, past U+10FFFF, or cut short */
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0; /* overlong, too large, or a surrogate */
	*cp_r = cp;
	return n;
}

/* YAML 1.2 §5.1 c-printable. */
bool conf_yaml_printable(uint32_t cp)
{
	return cp == '\t' || cp == '\n' || cp == '\r' || (cp >= 0x20 && cp <= 0x7e) || cp == 0x85 ||
	       (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
	       (cp >= 0x10000 && cp <= 0x10ffff);
}

/* The text must be UTF-8 of YAML 1.2 printable characters (§5.1, c-printable)
 * before libfyaml sees it: besides giving a clear error, this keeps away the
 * malformed input on which libfyaml 0.7.12 was found (by fuzzing) to loop
 * forever, e.g. "%\xf1...". */
static int conf_text_check(struct conf_parse *p, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	int line = 1, col = 1;
	uint32_t cp;

	for (size_t i = 0; i < len; col++) {
		size_t n = conf_utf8_decode(s + i, len - i, &cp);
		if (n == 0)
			return conf_error(p, line, col, "invalid UTF-8");
		bool printable = conf_yaml_printable(cp);
		if (!printable)
			return conf_error(p, line, col, "character U+%04X is not allowed in YAML",
			                  (unsigned)cp);
		if (cp == '\n') {
			line++;
			col = 0;
		}
		i += n;
	}
	return 0;
}

/* The libfyaml objects of one load; the document refers to the text. */
struct conf_yaml {
	struct fy_diag *diag;
	struct fy_parser *fyp;
	struct fy_document *fyd; /* NULL for an empty stream (only comments) */
};

/* Report the first collected diagnostic (1-based line and column). */
static int conf_yaml_error(struct conf_parse *p, struct conf_yaml *y)
{
	struct fy_diag_error *e;
	void *it = NULL;

	while ((e = fy_diag_errors_iterate(y->diag, &it)) != NULL) {
		if (e->type < FYET_ERROR)
			continue;
		return conf_error(p, e->line > 0 ? e->line : 1, e->column > 0 ? e->column : 1, "%s",
		                  e->msg != NULL ? e->msg : "YAML syntax error");
	}
	if (fy_parser_get_stream_error(y->fyp))
		return conf_error(p, 1, 1, "YAML syntax error");
	return 0;
}

static void conf_yaml_close(struct conf_yaml *y)
{
	if (y->fyd != NULL)
		fy_parse_document_destroy(y->fyp, y->fyd);
	if (y->fyp != NULL)
		fy_parser_destroy(y->fyp);
	if (y->diag != NULL)
		fy_diag_destroy(y->diag);
	*y = (struct conf_yaml){0};
}

/* Parse the text as exactly one YAML document (or none). */
static int conf_yaml_open(struct conf_parse *p, const char *text, size_t len, struct conf_yaml *y)
{
	struct fy_diag_cfg dcfg;
	struct fy_document *extra;

	fy_diag_cfg_default(&dcfg);
	dcfg.fp = NULL; /* collect, never print */
	y->diag = fy_diag_create(&dcfg);
	if (y->diag == NULL)
		return conf_error(p, 1, 1, "cannot create YAML diagnostics");
	fy_diag_set_collect_errors(y->diag, true);

	struct fy_parse_cfg cfg = {
	    .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2 | FYPCF_JSON_NONE,
	    .diag = y->diag,
	};
	y->fyp = fy_parser_create(&cfg);
	if (y->fyp == NULL || fy_parser_set_string(y->fyp, text, len) < 0)
		return conf_error(p, 1, 1, "cannot create YAML parser");
	y->fyd = fy_parse_load_document(y->fyp);
	if (conf_yaml_error(p, y) < 0)
		return -1;
	if (y->fyd == NULL)
		return 0;
	/* A second document would be silently ignored: refuse it. */
	extra = fy_parse_load_document(y->fyp);
	if (extra != NULL) {
		struct conf_pos pos = conf_pos_of(fy_document_root(extra), NULL);
		fy_parse_document_destroy(y->fyp, extra);
		return conf_error(p, pos.line, pos.col, "only one YAML document is allowed");
	}
	return conf_yaml_error(p, y);
}

static int conf_load_text(struct conf_parse *p, const char *text, size_t len)
{
	struct conf_yaml y = {0};
	int rc = -1;

	if (conf_text_check(p, text, len) < 0 || conf_yaml_open(p, text, len, &y) < 0)
		goto out;
	struct fy_node *root = y.fyd != NULL ? fy_document_root(y.fyd) : NULL;
	if (root != NULL && !conf_node_is_null(root)) {
		if (!fy_node_is_mapping(root)) {
			struct conf_pos pos = conf_pos_of(root, NULL);
			conf_error(p, pos.line, pos.col, "expected a mapping of settings");
			goto out;
		}
		if (conf_map_walk(p, root, NULL) < 0)
			goto out;
	}
	rc = conf_cross_check(p);
out:
	conf_yaml_close(&y);
	return rc;
}

int conf_read_text(const char *path, struct buf *text, char *err, size_t errlen)
{
	buf_init(text, CONF_FILE_MAX);
	if (path == NULL)
		return buf_append_str(text, conf_embedded_default);
	return conf_file_read(path, text, err, errlen);
}

int conf_load_buffer(const char *path, const char *text, size_t len, struct conf **conf_r,
		     char *err, size_t errlen)
{
	struct conf_parse p = {0};
	char dummy[1];
	int rc;

	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	p.err = err;
	p.errlen = errlen;
	*conf_r = NULL;
	p.conf = xcalloc(1, sizeof(*p.conf));
	p.conf->file = xstrdup(path != NULL ? path : CONF_EMBEDDED_NAME);
	p.file = p.conf->file;
	conf_defaults_apply(p.conf, conf_settings, CONF_N_SETTINGS);
	rc = conf_load_text(&p, text, len);
	for (size_t i = 0; i < CONF_N_SETTINGS; i++)
		free(p.item_pos[i]);
	if (rc < 0) {
		conf_free(&p.conf);
		return -1;
	}
	conf_relay_compile(p.conf);
	conf_routes_compile(p.conf);
	*conf_r = p.conf;
	return 0;
}

int conf_load(const char *path, struct conf **conf_r, char *err, size_t errlen)
{
	struct buf text;
	char dummy[1];
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	*conf_r = NULL;
	int rc = conf_read_text(path, &text, err, errlen);
	if (rc == 0)
		rc = conf_load_buffer(path, buf_cstr(&text), text.len, conf_r, err, errlen);
	buf_free(&text);
	return rc;
}

void conf_free(struct conf **confp)
{
	struct conf *conf = *confp;

	if (conf == NULL)
		return;
	conf_values_free(conf, conf_settings, CONF_N_SETTINGS);
	conf_relay_compiled_free(conf);
	conf_routes_compiled_free(conf);
	free(conf->file);
	free(conf);
	*confp = NULL;
}
