/* dns.h — asynchronous DNS for outbound delivery on libunbound: MX with
 * the implicit-MX fallback (RFC 5321 §5.1), null MX (RFC 7505), A/AAAA of
 * every exchanger, CNAMEs followed by the resolver, TTL-bounded caching by
 * libunbound itself, DNSSEC validation when a trust anchor is configured.
 * The resolver's fd is watched by the event loop: no lookup ever blocks it.
 * Runs in the queue manager. Answers come from the network: hostile. */
#ifndef HK_DNS_DNS_H
#define HK_DNS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct dns;

#define DNS_MAX_HOSTS 16      /* exchangers kept per domain */
#define DNS_MAX_ADDRS 8       /* addresses kept per exchanger */
#define DNS_TIMEOUT_DEFAULT_MS 30000 /* whole lookup, MX and addresses */

struct dns_conf {
	const char *const *forwarders; /* "127.0.0.1@5353", "::1"; empty: /etc/resolv.conf */
	size_t n_forwarders;
	const char *trust_anchor_file; /* "" or NULL: no DNSSEC validation */
	bool ipv6;                     /* look up AAAA too (default true) */
	unsigned timeout_ms;           /* per dns_resolve_*(); 0: DNS_TIMEOUT_DEFAULT_MS */
};

enum dns_status {
	DNS_OK,          /* hosts[] usable */
	DNS_NULL_MX,     /* RFC 7505: the domain accepts no mail -> 556 5.1.10 */
	DNS_NXDOMAIN,    /* the domain does not exist -> permanent failure */
	DNS_NO_ADDRESS,  /* MX hosts (or the domain itself) have no A/AAAA -> permanent */
	DNS_TEMPFAIL,    /* SERVFAIL, timeout, bogus DNSSEC: try later */
};

struct dns_host {
	char name[256];
	unsigned preference;
	struct sockaddr_storage addrs[DNS_MAX_ADDRS]; /* port 0; the caller sets it */
	socklen_t addrlens[DNS_MAX_ADDRS];
	size_t naddrs;
};

struct dns_mx_result {
	enum dns_status status;
	const char *error;  /* human-readable reason, static or owned by the result */
	bool implicit;      /* no MX records: the domain itself (RFC 5321 §5.1) */
	bool secure;        /* every answer used was DNSSEC-validated */
	struct dns_host hosts[DNS_MAX_HOSTS]; /* preference order; equal ones shuffled */
	size_t nhosts;      /* hosts without any address are dropped */
};

int dns_create(struct event_base *base, const struct dns_conf *conf, struct dns **dns_r,
	       char *err, size_t errlen);
/* Pending lookups are cancelled; their callbacks are not called. Safe to
 * call from inside a dns callback. */
void dns_free(struct dns **dns);

/* res is valid only during the callback. */
typedef void dns_mx_cb(const struct dns_mx_result *res, void *arg);
/* Resolve where mail for domain goes. The callback is always called later
 * from the event loop, never from inside this call. Returns a handle for
 * dns_cancel(), or NULL if the lookup could not be started (then cb is
 * called later with DNS_TEMPFAIL). This implementation always returns a
 * handle: an invalid name ends later as DNS_NXDOMAIN ("invalid domain
 * name"), a lookup that cannot start as DNS_TEMPFAIL. */
struct dns_query *dns_resolve_mx(struct dns *dns, const char *domain, dns_mx_cb *cb, void *arg);
/* Resolve A/AAAA of one host (smarthosts, LMTP over TCP): the result has
 * one host with preference 0; DNS_NXDOMAIN / DNS_NO_ADDRESS as above. An
 * address literal ("192.0.2.1", "2001:db8::1", "[::1]") needs no lookup. */
struct dns_query *dns_resolve_host(struct dns *dns, const char *host, dns_mx_cb *cb, void *arg);
/* The names of an address (PTR, RFC 1035 §3.5, RFC 3596 §2.5) in hosts[]
 * (name only, no addresses): DNS_OK with at least one name, DNS_NXDOMAIN or
 * DNS_NO_ADDRESS when there is none, DNS_TEMPFAIL. For the client checks
 * of smtpd (FCrDNS). */
struct dns_query *dns_resolve_ptr(struct dns *dns, const struct sockaddr *sa, dns_mx_cb *cb,
                                  void *arg);

/* Any record type, for the checks that read records themselves (SPF, DKIM
 * keys, DMARC policies, DNSBLs): the answer's rdata as libunbound holds it
 * (names uncompressed). status is DNS_OK with n >= 0 records (n == 0:
 * NODATA, the name exists without records of this type), DNS_NXDOMAIN
 * (also for a name that cannot exist) or DNS_TEMPFAIL (SERVFAIL, timeout,
 * bogus DNSSEC). At most DNS_RAW_MAX records are kept. res is valid only
 * during the callback, which is always called later from the loop. */
#define DNS_RAW_MAX 64
struct dns_raw_result {
	enum dns_status status;
	const char *error; /* DNS_NXDOMAIN / DNS_TEMPFAIL: why */
	bool secure;       /* DNSSEC-validated */
	int rrtype;
	size_t n;
	const unsigned char *rdata[DNS_RAW_MAX];
	size_t len[DNS_RAW_MAX];
};
typedef void dns_raw_cb(const struct dns_raw_result *res, void *arg);
#define DNS_RR_A 1
#define DNS_RR_NS 2
#define DNS_RR_CNAME 5
#define DNS_RR_PTR 12
#define DNS_RR_MX 15
#define DNS_RR_TXT 16
#define DNS_RR_AAAA 28
struct dns_query *dns_resolve_raw(struct dns *dns, const char *name, int rrtype, dns_raw_cb *cb,
                                  void *arg);
/* TXT rdata: its character-strings (RFC 1035 §3.3.14) joined with nothing
 * between them (RFC 7208 §3.3, RFC 6376 §3.6.2.2) into out (NUL-terminated).
 * Returns the joined length (a record may hold NUL octets: do not strlen()
 * it), or -1 if malformed or longer than outlen - 1. */
int dns_txt_join(const unsigned char *rdata, size_t len, char *out, size_t outlen);
/* Wire-format name (MX after its 2 octets, PTR, CNAME) to text: 1 a name, 0
 * the root ".", -1 malformed (only LDH and '_' labels are accepted). out
 * holds 254 octets. */
int dns_wire_name(const unsigned char *p, size_t n, char *out);

/* Only before the callback has run (the handle is freed after it). */
void dns_cancel(struct dns_query *q);

#endif
