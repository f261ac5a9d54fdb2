/* policy_smtp.h — the checks of the SMTP server's policy chains and the
 * request they read: FCrDNS at connect (policy_fcrdns.c); at RCPT the
 * relay check, the recipient check and alias expansion (policy_rcpt.c) and
 * the recipient probe of a route (policy_verify.c).
 *
 * The smtpd fills a request, runs the stage's chain (policy.h) and applies
 * the verdict; the checks never touch a session. Runs in smtpd on the event
 * loop; addresses and the client's DNS answers are hostile. */
#ifndef HK_POLICY_POLICY_SMTP_H
#define HK_POLICY_POLICY_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "lib/cidr.h"
#include "lib/buf.h"
#include "lib/net.h"
#include "mail/address.h"
#include "policy/policy.h"

struct event_base;
struct conf;
struct users;
struct aliases;
struct policy_smtp;
struct dauth_tx;

/* Forward-confirmed reverse DNS of the client (FCrDNS). */
enum policy_rdns {
	POLICY_RDNS_PENDING,   /* not looked up yet */
	POLICY_RDNS_CONFIRMED, /* a PTR name whose A/AAAA has the address */
	POLICY_RDNS_NONE,      /* no PTR, or no name of it points back */
	POLICY_RDNS_TEMPFAIL,  /* DNS failed or timed out: not known */
};

#define POLICY_FCRDNS_NAMES_MAX 10 /* PTR names whose addresses are asked */

/* The client's network in the access lists (policy_filter.c). */
enum policy_access {
	POLICY_ACCESS_NONE,  /* in no list */
	POLICY_ACCESS_ALLOW, /* access.allow: skips DNS lists, greylisting, rate limits */
	POLICY_ACCESS_DENY,  /* access.deny: 554 5.7.1 (access.reject_at) */
};

struct policy_dnsbl;
struct milter_sess;

/* The connection, for every stage. */
struct policy_client {
	struct sockaddr_storage ss;
	char addr[NET_ADDRSTR_MAX];
	const char *sid;
	const char *auth_user; /* NULL until AUTH */
	bool local;            /* local submission: a user of this host (uid known) */
	/* Written by the fcrdns check. */
	enum policy_rdns rdns_status;
	char rdns[256]; /* the confirmed name, "" otherwise */
	/* Written by the access check at connect. */
	enum policy_access access;
	char access_reason[CIDR_REASON_MAX + 1];
	/* The DNS lists (policy_dnsbl.c): lookups started at connect, owned
	 * by the client (policy_client_clear), their score read at RCPT. */
	struct policy_dnsbl *dnsbl;
	long dnsbl_score;
	char dnsbl_list[256]; /* the heaviest block list that listed the client */
	bool dnswl;           /* listed on a dnsbl.allow_lists list */
	bool dnsbl_done;      /* every list answered (or the wait timed out) */
	/* The session's milter conversation (policy_milter.c), opened by the
	 * connect chain, freed by policy_client_clear. */
	struct milter_sess *milter;
};

/* At the session's end: cancel what the client's checks still have in
 * flight. */
void policy_client_clear(struct policy_client *c);

/* One RCPT command. */
struct policy_rcpt_req {
	struct mail_addr *to; /* parsed; postmaster gets our domain (RFC 5321 §4.5.1) */
	bool smtputf8;
	/* Is addr already a recipient of the transaction? */
	bool (*is_dup)(void *arg, const char *addr);
	void *dup_arg;
	/* Out: the address is an alias, expanded to targets[0..ntargets)
	 * (owned by the request: policy_rcpt_req_clear()). */
	bool alias;
	char **targets;
	size_t ntargets;
};

/* The end of data (POLICY_EOD): the content is complete and not yet
 * committed. Checks read the envelope and the header section and may add
 * header fields above the message (queue/spool.h: the top block); they
 * refuse with 5xx/4xx like any check. */
struct policy_eod_req {
	const char *qid;
	const char *sender;     /* MAIL FROM, "" for the null sender */
	const char *helo;       /* the EHLO/HELO name as given */
	bool authenticated;     /* an AUTH session (submission): no inbound checks */
	/* The client's header section as received, CRLFs kept, without the
	 * Authentication-Results fields removed as forgeries (mail/header.h
	 * walks it). Only the first limits.header_size octets. */
	const char *hdr;
	size_t hdr_len;
	/* Header fields added above the content: policy_eod_add_field(). */
	struct buf *top;
	bool top_full; /* an addition did not fit: the message is refused (451) */
	bool quarantine; /* out: deliver into the recipients' Junk folder */
	/* Per-transaction state of the domain authentication checks. */
	struct dauth_tx *dauth;
	const char *first_rcpt; /* the first recipient ("local@domain"), or NULL */
};

struct policy_smtp_req {
	struct policy_client *client;
	const char *helo;            /* POLICY_HELO: the name given (parsed) */
	const char *sender;          /* POLICY_MAIL, POLICY_RCPT: "local@domain", "" null */
	struct policy_rcpt_req rcpt; /* POLICY_RCPT */
	struct policy_eod_req eod;   /* POLICY_EOD */
};

/* Add one complete header field ("Name: value", folded with CRLF WSP where
 * long; the final CRLF is added) above the fields added before it: the
 * last check's field is the message's first. -1 when the block is full
 * (top_full is then set). */
int policy_eod_add_field(struct policy_eod_req *r, const char *field, size_t len);

void policy_rcpt_req_clear(struct policy_rcpt_req *r);

/* Sender domain authentication (policy_dauth.c) for one transaction: SPF
 * starts now (MAIL FROM accepted), the DKIM verifier is fed the content
 * (after dot-unstuffing) with policy_dauth_feed(), and the end-of-data
 * check "dauth" finishes it. NULL when the transaction gets no checks
 * (authenticated, loopback, dauth.inbound false, no resolver). */
struct dauth_tx *policy_dauth_begin(struct policy_smtp *ps, const struct policy_client *c,
				    const char *sender, const char *helo);
void policy_dauth_feed(struct dauth_tx *t, const void *p, size_t n);
void policy_dauth_free(struct dauth_tx **t); /* accepts NULL */
/* ARC sealing (RFC 8617 §5.1, arc.seal): once the header section is
 * settled, smtpd says whether the message is forwarded (a recipient is an
 * alias target outside local_domains) and hands in the signer (the keys
 * process: keyproxy_dkim_sign, answering within the call). true: a sealer
 * now waits for the message as it will be delivered (our Received left
 * out) through policy_dauth_seal_feed(), and the dauth check puts the ARC
 * set on top. false: no seal (t NULL, arc.seal, forwarded, no arc key). */
struct dkim_sign_key;
typedef void policy_dauth_sign_fn(void *ctx, const struct dkim_sign_key *key,
                                  const unsigned char *hash, size_t hash_len,
                                  void (*done)(void *, const unsigned char *, size_t, const char *),
                                  void *done_arg);
bool policy_dauth_seal_begin(struct dauth_tx *t, bool forwarded, policy_dauth_sign_fn *sign,
                             void *sign_ctx);
void policy_dauth_seal_feed(struct dauth_tx *t, const void *p, size_t n);

/* The chains of smtpd, with their checks' shared state (the DNS resolver
 * made on first use, the probe client and its cache). users and aliases may
 * be NULL and outlive it. */
struct policy_smtp *policy_smtp_create(struct event_base *base, const struct conf *conf,
                                       const struct users *users, const struct aliases *aliases);
/* Runs must be cancelled first. */
void policy_smtp_free(struct policy_smtp **ps);
struct policy *policy_smtp_engine(struct policy_smtp *ps);

/* The recipient lookup, asynchronous because the users table is moving into
 * the auth process (asked over a socket, RCPT_CHECK). cb is called once,
 * from inside the call or later from the loop; a lookup still pending
 * returns a handle for policy_user_cancel() (then cb is never called),
 * one answered inside the call returns NULL. The in-process table (the
 * default) always answers inside the call. */
enum policy_user_answer { POLICY_USER_KNOWN, POLICY_USER_UNKNOWN, POLICY_USER_TEMPFAIL };
typedef void policy_user_fn(enum policy_user_answer a, void *arg);
struct policy_user_query;
struct policy_user_query *policy_user_lookup(struct policy_smtp *ps, const char *mailbox,
                                             const char *domain, policy_user_fn *cb, void *arg);
void policy_user_cancel(struct policy_smtp *ps, struct policy_user_query *q);
/* Another source of answers: the auth process's client, or a test's. */
struct policy_user_source {
	struct policy_user_query *(*lookup)(void *ctx, const char *mailbox, const char *domain,
	                                    policy_user_fn *cb, void *arg);
	void (*cancel)(void *ctx, struct policy_user_query *q);
	void *ctx;
};
void policy_smtp_set_user_source(struct policy_smtp *ps, const struct policy_user_source *src);
/* Before the sandbox: create the resolver FCrDNS will use (it reads
 * resolv.conf and hosts, and binds sockets later). */
void policy_smtp_prepare(struct policy_smtp *ps);
/* The access lists of conf (access.allow, access.deny, access.file) into l;
 * reads the file, so as root before the sandbox. 0, or -1 with err. */
int policy_access_load(const struct conf *conf, struct cidr_list *l, char *err, size_t errlen);
/* Hand the lists to the checks (ps owns them from now on). */
void policy_smtp_set_access(struct policy_smtp *ps, struct cidr_list *l);
const struct cidr_entry *policy_smtp_access(const struct policy_smtp *ps,
                                            const struct sockaddr *sa);
/* The shared rate counters and greylisting table (both may be NULL), owned
 * by the caller and outliving ps. */
struct shmrate;
struct greytab;
void policy_smtp_set_shared(struct policy_smtp *ps, struct shmrate *rates, struct greytab *grey);
/* With state.redis: the message and recipient rates and greylisting ask
 * this Redis connection instead of the tables above (ps owns it). */
struct rstate;
void policy_smtp_set_redis(struct policy_smtp *ps, struct rstate *rs);
/* The client's network as the rate limits (prefix4 32: the address) and
 * greylisting (prefix4 24) count it, into key; an IPv6 client always by
 * its /64. Returns the key's length. */
size_t policy_client_net_key(const struct sockaddr_storage *ss, unsigned prefix4,
                             unsigned char key[17]);
/* n smtpd processes share the 64 recipient probes in flight per server. */
void policy_verify_set_processes(unsigned n);

/* The Received comment of the client: "name [addr]", name the confirmed
 * rDNS or "unknown" (as Postfix writes it). */
void policy_client_received(const struct policy_client *c, char *out, size_t outlen);
const char *policy_rdns_status_name(enum policy_rdns st);

/* Internals shared by the policy_*.c files. */
struct smtpd_verify;
struct dns;
struct policy_smtp {
	struct event_base *base;
	const struct conf *conf;
	const struct users *users;
	const struct aliases *aliases;
	struct policy *engine;
	struct dns *dns;                     /* made at the first non-loopback client */
	bool dns_failed;                     /* could not make it: every lookup tempfails */
	struct policy_verify *verify;        /* probes and their cache, made on first use */
	struct policy_user_source users_src; /* lookup NULL: the in-process table */
	struct cidr_list access;             /* access.allow, access.deny, access.file */
	struct cidr_codes *dnsbl_codes;      /* per list: dnsbl.lists then allow_lists */
	struct shmrate *rates;               /* NULL: no rate limits */
	struct greytab *grey;                /* NULL: no greylisting */
	struct dmarc *dmarc;                 /* the public suffix list, loaded at prepare */
	struct rstate *redis;                /* state.redis: rates and greylist there */
	/* Where the DMARC records for the aggregate reports go (the queue
	 * client): NULL drops them. */
	void (*dmarc_sink)(void *arg, const void *body, size_t len);
	void *dmarc_sink_arg;
};
/* The resolver of the checks, made on first use (NULL if it cannot be). */
struct dns *policy_smtp_dns(struct policy_smtp *ps);
extern const struct policy_check policy_check_dauth;
extern const struct policy_check policy_check_fcrdns;
extern const struct policy_check policy_check_fcrdns_required;
extern const struct policy_check policy_check_relay;
extern const struct policy_check policy_check_recipient;
extern const struct policy_check policy_check_verify;
extern const struct policy_check policy_check_alias;
extern const struct policy_check policy_check_access_connect;
extern const struct policy_check policy_check_access_rcpt;
extern const struct policy_check policy_check_helo_syntax;
extern const struct policy_check policy_check_sender_domain;
extern const struct policy_check policy_check_dnsbl_start;
extern const struct policy_check policy_check_dnsbl_wait;
extern const struct policy_check policy_check_dnsbl;
extern const struct policy_check policy_check_rate_mail;
extern const struct policy_check policy_check_rate_rcpt;
extern const struct policy_check policy_check_milter_connect;
extern const struct policy_check policy_check_milter_helo;
extern const struct policy_check policy_check_milter_mail;
extern const struct policy_check policy_check_milter_rcpt;
extern const struct policy_check policy_check_greylist;
void policy_dnsbl_free(struct policy_dnsbl **d);
struct policy_verify;
void policy_verify_free(struct policy_verify **v);

#endif
