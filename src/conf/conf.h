/* conf.h — the immutable configuration, built once by the master from YAML
 * (libfyaml) through one settings table (conf.c) that also drives
 * `hikyaku config dump` and docs/CONFIG.md. Every setting is declared once
 * there: name, type, default, range, doc. */
#ifndef HK_CONF_CONF_H
#define HK_CONF_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

enum conf_tls_mode {
	CONF_TLS_NONE = 0,  /* plaintext only */
	CONF_TLS_STARTTLS,  /* RFC 3207, offered after EHLO (the default) */
	CONF_TLS_IMPLICIT,  /* RFC 8314: TLS from the first octet (port 465) */
};

struct conf_listener {
	char *address;          /* "127.0.0.1:2525", "[::1]:25", "*:25" */
	enum conf_tls_mode tls; /* listen[].tls: none | starttls | implicit */
	bool submission;        /* listen[].submission: AUTH required before MAIL */
	bool auth;              /* listen[].auth: offer SMTP AUTH (default true) */
	bool plaintext_auth;    /* listen[].plaintext_auth: AUTH without TLS (local only) */
	bool sandbox;           /* listen[].sandbox: capture, deliver nothing (issue 13) */
};

struct conf_tls_cert {
	char *cert; /* PEM: leaf then chain */
	char *key;  /* PEM private key */
};

struct conf_tls {
	struct conf_tls_cert *certs; /* tls.certificates; the first is the default */
	size_t n_certs;
	char *self_signed_dir;     /* tls.self_signed_dir: generate one here if none; "" off */
	bool session_tickets;      /* tls.session_tickets (RFC 5077), default true */
	uint64_t handshake_timeout; /* ms, tls.handshake_timeout, default 30s */
};

struct conf_auth {
	uint64_t max_failures;   /* auth.max_failures per client IP in the window, 5 */
	uint64_t failure_window; /* ms, auth.failure_window, 10m */
	bool received_show_user; /* auth.received_show_user: name the user in Received */
	char **mechanisms;       /* auth.mechanisms: offered in EHLO; none = automatic */
	size_t n_mechanisms;
};

struct conf_relay {
	char **trusted_networks; /* relay.trusted_networks: CIDRs that may relay without AUTH */
	size_t n_trusted_networks;
	bool sender_login_match; /* relay.sender_login_match: MAIL FROM must be owned */
	char **senders;          /* relay.senders: "sender: login, login" ownership lines */
	size_t n_senders;
	uint64_t verify_timeout;      /* ms, relay.verify_timeout: a recipient probe, 10s */
	uint64_t verify_positive_ttl; /* ms, relay.verify_positive_ttl: 10m */
	uint64_t verify_negative_ttl; /* ms, relay.verify_negative_ttl: 1m */
};

struct conf_policy {
	bool require_fcrdns;    /* policy.require_fcrdns: refuse clients without FCrDNS */
	uint64_t fcrdns_timeout; /* ms, policy.fcrdns_timeout: the whole FCrDNS check, 10s */
	bool fcrdns_loopback;   /* policy.fcrdns_loopback: look loopback clients up too */
};

/* Sender domain authentication on inbound mail (SPF, DKIM, DMARC and
 * Authentication-Results; issue 10). */
enum conf_dmarc_enforce {
	CONF_DMARC_NONE = 0,   /* record the result only */
	CONF_DMARC_QUARANTINE, /* p=quarantine and p=reject: quarantine (.Junk) */
	CONF_DMARC_REJECT,     /* p=reject: 550 5.7.1; p=quarantine: quarantine */
};

enum conf_dauth_temperror {
	CONF_DAUTH_TEMPERROR_ACCEPT = 0, /* record temperror, deliver */
	CONF_DAUTH_TEMPERROR_TEMPFAIL,   /* 451 4.7.5 at end of data */
};

struct conf_dauth {
	bool inbound;      /* dauth.inbound: check unauthenticated mail */
	char *authserv_id; /* dauth.authserv_id: "" for the hostname */
	bool loopback;     /* dauth.loopback: check loopback clients too */
	uint64_t timeout;  /* ms, dauth.timeout: the wait at end of data */
	enum conf_dmarc_enforce dmarc_enforce; /* dauth.dmarc_enforce */
	enum conf_dauth_temperror temperror;   /* dauth.temperror */
	bool spf_reject;   /* dauth.spf_reject: 550 5.7.23 on SPF fail */
};

/* DMARC aggregate reports (src/dauth/dmarcrep*.c). */
struct conf_dmarc {
	bool reports;          /* dmarc.reports: the queue sends them once a day */
	uint64_t max_day_size; /* dmarc.max_day_size: records kept per UTC day */
	char *org_name;        /* dmarc.report_org_name: "" for hostname */
	char *report_from;     /* dmarc.report_from: "" for postmaster@hostname */
};

struct conf_limits {
	uint64_t command_line;       /* octets incl. CRLF, default 512 */
	uint64_t text_line;          /* octets incl. CRLF, default 1000 */
	uint64_t message_size;       /* default 25M */
	uint64_t recipients;         /* per transaction, default 100 */
	uint64_t errors;             /* per session, default 20 */
	uint64_t recipient_overshoot; /* 452 4.5.3 per session before they count as errors */
	uint64_t header_size;        /* default 100K */
	uint64_t received_hops;      /* default 50 */
	uint64_t connections;        /* total, default 1000 */
	uint64_t connections_per_ip; /* default 50; an IPv6 client by its /64 */
	/* Rates per limits.rate_window, across all smtpd processes (0: none). */
	uint64_t connection_rate;     /* connections per client network */
	uint64_t message_rate;        /* MAIL commands per client network */
	uint64_t recipient_rate;      /* RCPT commands per client network */
	uint64_t user_message_rate;   /* MAIL commands per authenticated user */
	uint64_t user_recipient_rate; /* RCPT commands per authenticated user */
	uint64_t rate_window;         /* ms, default 1m */
	uint64_t rate_table_size;     /* counters kept (slots), default 65536 */
};

enum conf_reject_at {
	CONF_REJECT_CONNECT = 0, /* instead of the greeting */
	CONF_REJECT_RCPT,        /* at each RCPT (Postfix's smtpd_delay_reject) */
};

/* access: CIDR allow and deny lists (lib/cidr.h). */
struct conf_access {
	char **allow; /* access.allow */
	size_t n_allow;
	char **deny;  /* access.deny */
	size_t n_deny;
	char *file;   /* access.file: "allow NET" / "deny NET reason" lines; "" none */
	enum conf_reject_at reject_at; /* access.reject_at */
};

struct conf_dnsbl_list {
	char *zone;      /* dnsbl.lists[].zone */
	uint64_t weight; /* dnsbl.lists[].weight */
	char *codes;     /* dnsbl.lists[].codes: answers that count, "" 127.0.0.0/24 */
};

struct conf_dnsbl {
	struct conf_dnsbl_list *lists; /* dnsbl.lists: weights add */
	size_t n_lists;
	struct conf_dnsbl_list *allow_lists; /* dnsbl.allow_lists (DNSWL): weights subtract */
	size_t n_allow_lists;
	uint64_t threshold; /* dnsbl.threshold: refuse at RCPT from this score */
	uint64_t timeout;   /* ms, dnsbl.timeout */
};

/* filter: protocol checks (early talkers, pipelining, names). */
struct conf_filter {
	uint64_t greet_delay;         /* ms, filter.greet_delay: 0 */
	bool reject_early_talkers;    /* filter.reject_early_talkers: true */
	bool reject_unauth_pipelining; /* filter.reject_unauth_pipelining: false */
	bool helo_syntax;             /* filter.helo_syntax: false */
	bool sender_domain;           /* filter.sender_domain: false */
};

/* milters[]: content filters over the Sendmail milter protocol (src/milter). */
enum conf_milter_failure {
	CONF_MILTER_TEMPFAIL = 0, /* 451 4.7.1 when the milter is down or slow */
	CONF_MILTER_ACCEPT,       /* go on without it */
};

struct conf_milter {
	char *name;                       /* milters[].name */
	char *socket;                     /* "unix:/path" or "inet:host:port" */
	enum conf_milter_failure failure; /* milters[].failure */
	uint64_t connect_timeout;         /* ms */
	uint64_t command_timeout;         /* ms */
	uint64_t eob_timeout;             /* ms */
};

struct conf_greylist {
	bool enabled;          /* greylist.enabled: false */
	uint64_t delay;        /* ms, greylist.delay: 5m */
	uint64_t retry_window; /* ms, greylist.retry_window: 2d */
	uint64_t retention;    /* ms, greylist.retention: 35d */
	uint64_t max_entries;  /* greylist.max_entries: 262144 */
	uint64_t save_interval; /* ms, greylist.save_interval: 1m */
};

/* Where counters and greylist triplets live (lib/rstate.h). */
enum conf_state_failure { CONF_STATE_FAIL_TEMPFAIL, CONF_STATE_FAIL_ACCEPT };
struct conf_state {
	char *redis;          /* state.redis: "" embedded (shared memory), else host:port or unix:/path */
	char *redis_password_file; /* state.redis_password_file: "" no AUTH */
	uint64_t redis_timeout; /* ms, state.redis_timeout: 500ms */
	enum conf_state_failure redis_failure; /* state.redis_failure: tempfail */
};

struct conf_timeouts { /* all in milliseconds */
	uint64_t command; /* waiting for a command, RFC 5321 §4.5.3.2.7: 5m */
	uint64_t data;    /* waiting for the next data block: 5m */
	uint64_t session; /* whole-session deadline: 30m */
	uint64_t shutdown; /* SIGTERM: transactions in flight may finish: 30s */
};

struct conf_queue {
	uint64_t commit_threads;   /* the queue's spool commit workers, default 8 */
	uint64_t delivery_threads; /* local delivery workers, default 4 */
	uint64_t retry_min;        /* ms, first retry after a temporary failure, 5m */
	uint64_t retry_max;        /* ms, cap of the doubling backoff, 1h */
	uint64_t min_free_space;   /* octets the spool's file system keeps free, 100M */
};

enum conf_log_format { CONF_LOG_KV = 0, CONF_LOG_JSON };
enum conf_log_target { CONF_LOG_STDERR = 0, CONF_LOG_SYSLOG };

struct conf_log {
	enum conf_log_format format; /* log.format: kv */
	enum conf_log_target target; /* log.target: stderr */
	char *syslog_socket;         /* log.syslog_socket: /dev/log */
};

struct conf_http {
	char *listen;             /* http.listen: "" none */
	char *token_file;         /* http.token_file: "" no API */
	uint64_t max_connections; /* http.max_connections: 64 */
};

/* Delivery analytics (issue 13, src/queue/analytics.c). */
struct conf_analytics {
	bool enabled;           /* analytics.enabled: true */
	uint64_t retention;     /* ms, analytics.retention: 90d */
	uint64_t top_domains;   /* analytics.top_domains: 100 per hour */
	uint64_t flush_interval; /* ms, analytics.flush_interval: 10s */
};

/* The sandbox (issue 13): mail received on a sandbox listener is captured
 * into sandbox.dir instead of being delivered. */
enum conf_sandbox_auth {
	CONF_SANDBOX_AUTH_ANY = 0, /* any SMTP AUTH login succeeds (its name is the inbox) */
	CONF_SANDBOX_AUTH_USERS,   /* the users file decides, as everywhere */
};

struct conf_sandbox {
	bool enabled;            /* sandbox.enabled: every listener is a sandbox listener */
	char *dir;               /* sandbox.dir: msg/, index.sqlite, token.key */
	uint64_t max_messages;   /* sandbox.max_messages: kept in all inboxes, 0 no limit */
	uint64_t max_size;       /* sandbox.max_size: octets kept in total, 0 no limit */
	uint64_t max_age;        /* ms, sandbox.max_age: 0 no limit */
	enum conf_sandbox_auth auth; /* sandbox.auth: any | users */
	char *anonymous_inbox;   /* sandbox.anonymous_inbox: the inbox of HTTP requests
				  * without credentials from loopback; "" none */
};

struct conf_processes {
	uint64_t smtpd; /* smtpd processes; 0: one per CPU */
};

enum conf_tls_policy {
	CONF_TLSPOL_NONE = 0, /* never STARTTLS */
	CONF_TLSPOL_MAY,      /* opportunistic (the default for MX) */
	CONF_TLSPOL_ENCRYPT,  /* required, unverified */
	CONF_TLSPOL_VERIFY,   /* required, certificate and host name verified */
};

enum conf_transport {
	CONF_TRANSPORT_LOCAL = 0, /* Maildir under maildir_root */
	CONF_TRANSPORT_MX,        /* DNS MX, port routes[].port or delivery.smtp_port */
	CONF_TRANSPORT_RELAY,     /* a smarthost at address */
	CONF_TRANSPORT_LMTP,      /* LMTP at address (unix:/path or host:port) */
};

enum conf_verify_tempfail {
	CONF_VERIFY_DEFER = 0, /* 450 4.4.1 at RCPT */
	CONF_VERIFY_ACCEPT,    /* accept and let the delivery find out */
};

struct conf_route {
	char *domain;                 /* routes[].domain: exact, case-insensitive */
	enum conf_transport transport; /* routes[].transport: local | mx | relay | lmtp */
	char *address;                /* routes[].address: "host:port", "unix:/path" */
	enum conf_tls_policy tls;     /* routes[].tls (default: may) */
	char *credentials;            /* routes[].credentials: file "user:password", "" none */
	uint64_t port;                /* routes[].port: mx only, 0 for delivery.smtp_port */
	bool verify_recipients;       /* routes[].verify_recipients: RCPT probe at RCPT time */
	enum conf_verify_tempfail verify_tempfail; /* routes[].verify_tempfail */
};

struct conf_delivery {
	char *helo_name;                 /* "" means hostname */
	uint64_t smtp_port;              /* MX port, 25 (tests use their own) */
	enum conf_tls_policy tls;        /* policy for MX delivery, may */
	char *ca_file;                   /* CA bundle for verify, "" system default */
	char *smarthost;                 /* "host:port" for all non-local mail, "" = by MX */
	enum conf_tls_policy smarthost_tls; /* encrypt */
	char *smarthost_credentials;     /* file "user:password", root-only, "" none */
	uint64_t destination_concurrency; /* connections per destination, 20 */
	uint64_t total_concurrency;      /* outbound connections in total, 100 */
	uint64_t connect_timeout;        /* ms, 30s */
	uint64_t command_timeout;        /* ms, 5m (RFC 5321 §4.5.3.2) */
	uint64_t data_timeout;           /* ms, 10m (RFC 5321 §4.5.3.2.6) */
	uint64_t idle_timeout;           /* ms, 5s: a reusable connection kept; 0 = no reuse */
	uint64_t destination_idle;       /* idle connections kept per server, 8 */
	uint64_t total_idle;             /* idle connections kept in total, 64 */
	uint64_t max_lifetime;           /* ms, 5d: then bounce */
	uint64_t delay_warning;          /* ms, 4h: NOTIFY=DELAY warning */
	bool ipv6;                       /* use AAAA records, true */
};

struct conf_dns {
	char **forwarders; /* dns.forwarders: "127.0.0.1@5353"; empty: /etc/resolv.conf */
	size_t n_forwarders;
	char *trust_anchor; /* dns.trust_anchor: file; enables DNSSEC validation */
	uint64_t timeout;   /* ms, dns.timeout: deadline of one destination's lookups */
};

/* DKIM signing keys (issue 10). Key i here is DKIM key i of the keys
 * process (KEYPROXY_OP_DKIM_SIGN); several entries for one domain sign
 * each message once per entry (dual signing, RSA and Ed25519). */
enum conf_dkim_type {
	CONF_DKIM_RSA = 0, /* rsa-sha256 (RFC 6376) */
	CONF_DKIM_ED25519, /* ed25519-sha256 (RFC 8463) */
};

struct conf_dkim_key {
	char *domain;             /* dkim.sign[].domain: d=, lower case A-labels */
	char *selector;           /* dkim.sign[].selector: s= */
	char *key;                /* dkim.sign[].key: PEM private key file, root's */
	enum conf_dkim_type type; /* dkim.sign[].type: rsa | ed25519 */
	bool arc;                 /* dkim.sign[].arc: the key of our ARC seals (RSA) */
};

struct conf_dkim {
	struct conf_dkim_key *sign; /* dkim.sign */
	size_t n_sign;
};

/* ARC (RFC 8617, issue 10): verify inbound chains, seal what we forward. */
enum conf_arc_seal {
	CONF_ARC_SEAL_FORWARDED = 0, /* inbound mail with a recipient aliased off-site */
	CONF_ARC_SEAL_ALWAYS,        /* every inbound (checked) message */
	CONF_ARC_SEAL_NEVER,
};

struct conf_arc {
	bool verify;             /* arc.verify: arc= in Authentication-Results */
	enum conf_arc_seal seal; /* arc.seal */
};

struct conf {
	char *file; /* where it came from, "(embedded default)" for the default */
	char *hostname;
	char *user; /* drop privileges to this user when started as root; "" none */
	char *log_level;
	char *spool_dir;
	char *maildir_root;
	char *users_file; /* "" when none */
	char *aliases_file; /* "" when none; see conf/aliases.h */
	bool accept_any_user;
	char **local_domains;
	size_t n_local_domains;
	char **relay_domains; /* accepted from anyone, passed on to their route */
	size_t n_relay_domains;
	struct conf_listener *listeners;
	size_t n_listeners;
	struct conf_limits limits;
	struct conf_timeouts timeouts;
	struct conf_queue queue;
	struct conf_processes processes;
	struct conf_log log;
	struct conf_http http;
	struct conf_analytics analytics;
	struct conf_sandbox sandbox;
	struct conf_tls tls;
	struct conf_auth auth;
	struct conf_relay relay;
	struct conf_delivery delivery;
	struct conf_dns dns;
	struct conf_policy policy;
	struct conf_access access;
	struct conf_dnsbl dnsbl;
	struct conf_filter filter;
	struct conf_greylist greylist;
	struct conf_dauth dauth;
	struct conf_dmarc dmarc;
	struct conf_state state;
	struct conf_dkim dkim;
	struct conf_arc arc;
	struct conf_milter *milters; /* milters: content filters at end of data */
	size_t n_milters;
	struct conf_route *routes; /* routes: per-domain transports */
	size_t n_routes;
	/* Private to src/conf: relay.trusted_networks and relay.senders parsed
	 * at load for conf_is_trusted_network() and conf_sender_allowed(). */
	struct conf_relay_compiled *relay_compiled;
	/* Private to src/conf: the routes conf_route_for() returns when no
	 * routes[] entry matches (local; smarthost relay or MX), built at load. */
	struct conf_routes_compiled *routes_compiled;
};

/* The embedded development default (DESIGN.md), as YAML text. */
extern const char conf_embedded_default[];

/* Load path (or the embedded default when path is NULL). On error returns -1
 * and writes "file:line:column: message" into err. */
int conf_load(const char *path, struct conf **conf_r, char *err, size_t errlen);
/* The two halves of conf_load, for the master that parses the text once
 * and hands the same text to its children: the file's text (or the
 * embedded default's, path NULL) into text (buf_init'ed here), and a
 * configuration from a text that came from path. */
struct buf;
int conf_read_text(const char *path, struct buf *text, char *err, size_t errlen);
int conf_load_buffer(const char *path, const char *text, size_t len, struct conf **conf_r,
		     char *err, size_t errlen);
void conf_free(struct conf **conf);
/* The effective configuration as YAML, every setting, with its doc as a
 * comment. */
void conf_dump(const struct conf *conf, FILE *out);
/* docs/CONFIG.md from the same table. */
void conf_reference(FILE *out);
/* Warnings an operator should see (hikyaku check): returns how many. */
int conf_check(const struct conf *conf, FILE *out);
/* spool_dir and maildir_root belong to the service user: neither may be
 * inside the other, and tls.self_signed_dir (written by root) inside
 * neither. resolve: compare the real paths of those that exist (symbolic
 * links followed) instead of the paths as written. 0, or -1 with a message
 * in err; *key_r names the setting to point at. */
int conf_check_roots(const struct conf *conf, bool resolve, const char **key_r, char *err,
		     size_t errlen);

/* The dkim.sign entries for a sender domain (exact, case-insensitive): their
 * indexes (DKIM key indexes of the keys process) into idx, at most max;
 * returns how many. */
size_t conf_dkim_keys_for(const struct conf *conf, const char *domain, size_t *idx, size_t max);
/* The dkim.sign entry flagged arc: true (at most one, RSA), or NULL. */
const struct conf_dkim_key *conf_arc_key(const struct conf *conf, size_t *idx_r);

/* Warnings about the configuration against the users file (auth.mechanisms
 * some users cannot use): returns how many. */
struct users;
int conf_check_users(const struct conf *conf, const struct users *users, FILE *out);
bool conf_is_local_domain(const struct conf *conf, const char *domain);
/* Does mail received on listener l go into the sandbox (issue 13)? */
bool conf_listener_sandboxed(const struct conf *conf, const struct conf_listener *l);
/* Is any listener a sandbox listener (the queue and http open the store)? */
bool conf_sandbox_used(const struct conf *conf);
/* Is domain (either IDN form) in relay_domains and not local? */
bool conf_is_relay_domain(const struct conf *conf, const char *domain);
/* The route for a recipient domain: a routes[] entry, else local for
 * local_domains, else relay via delivery.smarthost when set, else MX. The
 * returned struct is owned by conf (a static default for the last two). */
const struct conf_route *conf_route_for(const struct conf *conf, const char *domain);
/* Is addr (numeric IPv4 or IPv6 text) inside relay.trusted_networks? */
bool conf_is_trusted_network(const struct conf *conf, const struct sockaddr *sa);
/* May login (an authenticated user) use sender as MAIL FROM? True if sender
 * is the login itself (ignoring +tag, case-insensitive) or a relay.senders
 * line grants it ("sender: login, login" where sender may be "@domain"). */
bool conf_sender_allowed(const struct conf *conf, const char *sender, const char *login);

#endif
