/* spf.h — Sender Policy Framework (RFC 7208): check_host() for the MAIL FROM
 * identity (postmaster@HELO when MAIL FROM is null) or the HELO identity,
 * asynchronous on a libevent loop, with every lookup bounded (§4.6.4: 10
 * DNS-querying terms, 2 void lookups, 10 MX / PTR names) and an overall
 * deadline. Runs in smtpd (and the `hikyaku spf check` command). Records,
 * names and addresses come from the network or the SMTP client: hostile.
 *
 * Lower layers (record parser, macro expander) are in spf_record.h. */
#ifndef HK_DAUTH_SPF_H
#define HK_DAUTH_SPF_H

#include "dns/dns.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

struct event_base;
struct spf_query;
struct spf_lookup; /* a resolver's handle for one pending lookup */

enum spf_result {
	SPF_NONE,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};
/* "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror" */
const char *spf_result_name(enum spf_result r);

/* Where DNS answers come from: struct dns in the daemon, a table in tests.
 * lookup() must call cb later from the loop (never from inside lookup()),
 * exactly once unless cancel() is called first. A lookup that returns NULL
 * (or a resolver without cancel) cannot be cancelled: a query that ends
 * before its answer waits for it, unseen, and is freed then. Answers are judged as
 * dns_resolve_raw() describes them: DNS_OK with n records (0: NODATA),
 * DNS_NXDOMAIN, DNS_TEMPFAIL. */
struct spf_resolver {
	struct spf_lookup *(*lookup)(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
	                             void *arg);
	void (*cancel)(void *ctx, struct spf_lookup *l);
	void *ctx;
};
/* A resolver on dns_resolve_raw(); dns must outlive every query. */
void spf_resolver_dns(struct spf_resolver *r, struct dns *dns);

enum spf_identity {
	SPF_ID_MAILFROM, /* MAIL FROM, or postmaster@HELO when it is null (§2.4) */
	SPF_ID_HELO,     /* HELO/EHLO (§2.3) */
};

#define SPF_TIMEOUT_DEFAULT_MS 20000 /* the whole check (§4.6.4 suggests >= 20 s) */

/* Called for each step of the evaluation (terms, lookups), for the CLI and
 * debugging; line is valid only during the call. It quotes records and
 * names from the DNS as they are: hostile, to be escaped before display. */
typedef void spf_trace_fn(const char *line, void *arg);

struct spf_request {
	const struct sockaddr *client; /* AF_INET or AF_INET6 (v4-mapped is IPv4) */
	const char *sender;            /* MAIL FROM address without <>; "" or NULL: null */
	const char *helo;              /* HELO/EHLO argument as given; NULL: "" */
	const char *hostname;          /* our name, %{r}; NULL: "unknown" */
	enum spf_identity identity;
	unsigned timeout_ms;             /* 0: SPF_TIMEOUT_DEFAULT_MS */
	time_t now;                      /* %{t}; 0: time(NULL) */
	const char *default_explanation; /* fail without exp=; NULL: SPF_EXPLANATION_DEFAULT */
	spf_trace_fn *trace;             /* NULL: none */
	void *trace_arg;
};
#define SPF_EXPLANATION_DEFAULT "sender is not authorized by the domain's SPF record"

/* All strings are valid only during the callback. */
struct spf_outcome {
	enum spf_result result;
	const char *identity;    /* "mailfrom" or "helo" */
	const char *sender;      /* what was checked: "user@domain", "postmaster@helo";
	                          * the client's text as given (hostile) */
	const char *domain;      /* its domain ("" if it had none) */
	const char *mechanism;   /* the term that decided ("ip4:192.0.2.0/24", "default"), or "" */
	const char *explanation; /* SPF_FAIL: expanded exp= text or the default; else "".
	                          * explanation and reason are printable ASCII */
	const char *reason;      /* short text: "mechanism ip4:192.0.2.0/24 matched",
	                          * "10 DNS lookups exceeded", "no SPF record" */
	unsigned lookups;        /* DNS-querying terms used */
	unsigned void_lookups;
};
typedef void spf_done_fn(const struct spf_outcome *o, void *arg);

/* Start check_host() for req (copied: nothing in it needs to outlive this
 * call except the resolver and base). cb runs exactly once, always later
 * from the loop, unless spf_cancel() comes first; the query is freed after
 * cb returns. Never NULL. */
struct spf_query *spf_check(const struct spf_resolver *res, struct event_base *base,
                            const struct spf_request *req, spf_done_fn *cb, void *arg);
/* Only before the callback has run; clears *q. Accepts NULL and *q == NULL. */
void spf_cancel(struct spf_query **q);

/* The RFC 7208 §9.1 trace field, "Received-SPF: pass (reason) key=value; ...\r\n",
 * folded at 78 columns; values from the client are quoted (or left out when
 * they cannot be quoted safely). Returns the length, or -1 if it does not
 * fit in outlen. receiver is our hostname. */
int spf_received_header(const struct spf_outcome *o, const struct spf_request *req,
                        const char *receiver, char *out, size_t outlen);

#endif
