/* dns.c — asynchronous MX and A/AAAA resolution on libunbound, driven by a
 * libevent loop. Runs in the queue manager.
 *
 * libunbound runs its resolver in a background thread (ub_ctx_async(ctx, 1));
 * answers come back over a pipe whose read end (ub_fd) is watched by the loop,
 * and ub_process() then calls our callbacks, so user callbacks always run from
 * the loop and never from inside dns_resolve_*(). Immediate outcomes (invalid
 * name, a lookup that cannot be started) go through a zero-timeout timer.
 *
 * One dns_query is one user request: an MX lookup (RFC 5321 §5.1), then A and
 * AAAA of at most DNS_MAX_HOSTS exchangers in parallel, all under one deadline.
 * Addresses of one host are interleaved IPv6, IPv4, IPv6, ... so that both
 * families survive the DNS_MAX_ADDRS cap (RFC 8305 §4 orders them the same).
 *
 * Hostile input: every answer. rdata lengths are checked, names are rebuilt
 * label by label and must be LDH (plus '_'), malformed records are skipped.
 * libunbound hands out rdata as stored in its cache: names uncompressed. */
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unbound.h>

#define DNS_TYPE_A 1
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN 1
#define DNS_RCODE_NXDOMAIN 3
#define DNS_NAME_MAX 253 /* text form without the trailing dot (RFC 1035 §2.3.4) */
#define DNS_LABEL_MAX 63
#define DNS_NLOOKUPS (1 + 2 * DNS_MAX_HOSTS) /* MX, then A and AAAA per host */

enum dns_lookup_kind { DNS_LOOKUP_MX, DNS_LOOKUP_A, DNS_LOOKUP_AAAA, DNS_LOOKUP_PTR, DNS_LOOKUP_RAW };

/* One outstanding libunbound query; its address is libunbound's mydata. */
struct dns_lookup {
	struct dns_query *q;
	enum dns_lookup_kind kind;
	size_t host; /* index into q->res.hosts for A/AAAA */
	int async_id;
	bool pending;
};

/* Addresses of one host as they arrive, kept per family until merged. */
struct dns_stage {
	uint8_t v4[DNS_MAX_ADDRS][4];
	uint8_t v6[DNS_MAX_ADDRS][16];
	size_t n4, n6;
	bool nxdomain; /* the host name does not exist */
};

struct dns_query {
	struct dns *dns;
	struct dns_query *prev, *next;
	dns_mx_cb *cb;
	dns_raw_cb *raw_cb; /* dns_resolve_raw(): cb is NULL */
	int raw_type;
	void *arg;
	struct event *timer; /* deadline, or zero timeout for an early result */
	bool early;          /* res is final; the timer delivers it */
	bool host_only;      /* dns_resolve_host(): no MX step */
	bool tempfail;       /* some lookup failed temporarily */
	const char *temp_error;
	size_t npending;
	struct dns_mx_result res;
	struct dns_lookup lookups[DNS_NLOOKUPS];
	struct dns_stage stage[DNS_MAX_HOSTS];
	char name[DNS_NAME_MAX + 1];
	char errbuf[64];
};

struct dns {
	struct event_base *base;
	struct ub_ctx *ctx;
	struct event *ev; /* ub_fd readable */
	bool ev_added;
	bool ipv6;
	unsigned timeout_ms;
	size_t npending; /* live libunbound lookups, all queries */
	bool in_process; /* inside ub_process(): freeing must wait */
	bool broken;     /* ub_process() failed: answers cannot arrive */
	bool dying;      /* dns_free() was called inside ub_process() */
	struct dns_query *queries;
	uint64_t rng; /* splitmix64 state, seeded from getrandom() */
};

/* One MX record as parsed, before sorting. */
struct dns_mx {
	unsigned preference;
	uint64_t shuffle;
	char name[DNS_NAME_MAX + 1];
};

static void dns_query_finish(struct dns_query *q);

static uint64_t dns_rng_next(struct dns *dns)
{
	uint64_t z = (dns->rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Characters allowed in a label: LDH (RFC 5321 §2.3.5) plus '_' which DNS
 * uses widely. Everything else, notably '\\' (a presentation-format escape for
 * libunbound's parser), '.', spaces and bytes >= 0x80, is refused. */
static bool dns_label_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* A text domain name: labels of 1..63 allowed characters, at most 253
 * characters without an optional single trailing dot. Writes the name
 * without the trailing dot to out[DNS_NAME_MAX + 1]. */
static bool dns_name_check(const char *name, char *out)
{
	size_t len = strlen(name);
	size_t label = 0;

	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c == '.') {
			if (label == 0)
				return false;
			label = 0;
			continue;
		}
		if (!dns_label_char_ok(c) || ++label > DNS_LABEL_MAX)
			return false;
	}
	if (label == 0)
		return false;
	memcpy(out, name, len);
	out[len] = '\0';
	return true;
}

/* Wire-format name (RFC 1035 §3.1) filling exactly [p, p + n) to text.
 * Compression pointers cannot occur in libunbound's rdata and are refused.
 * Returns 1 for a name, 0 for the root ".", -1 if malformed. */
static int dns_wire_name_parse(const uint8_t *p, size_t n, char *out)
{
	size_t i = 0, o = 0;

	if (n == 1 && p[0] == 0)
		return 0;
	while (i < n) {
		size_t l = p[i++];

		if (l == 0)
			break;
		if (l > DNS_LABEL_MAX || l > n - i)
			return -1;
		if (o > 0)
			out[o++] = '.';
		if (o + l > DNS_NAME_MAX)
			return -1;
		for (size_t k = 0; k < l; k++) {
			if (!dns_label_char_ok(p[i + k]))
				return -1;
			out[o++] = (char)p[i + k];
		}
		i += l;
	}
	if (i != n || p[n - 1] != 0 || o == 0)
		return -1;
	out[o] = '\0';
	return 1;
}

static void dns_fd_cb(evutil_socket_t fd, short what, void *arg);

static void dns_ev_update(struct dns *dns)
{
	if (dns->npending > 0 && !dns->ev_added && !dns->broken) {
		event_add(dns->ev, NULL);
		dns->ev_added = true;
	} else if ((dns->npending == 0 || dns->broken) && dns->ev_added) {
		event_del(dns->ev);
		dns->ev_added = false;
	}
}

static void dns_lookup_cancel(struct dns_lookup *lk)
{
	struct dns *dns;

	if (!lk->pending)
		return;
	dns = lk->q->dns;
	/* In thread mode the query stays inside libunbound until its answer
	 * arrives, which is then dropped without calling us. */
	ub_cancel(dns->ctx, lk->async_id);
	lk->pending = false;
	lk->q->npending--;
	dns->npending--;
}

static void dns_query_cancel_lookups(struct dns_query *q)
{
	for (size_t i = 0; i < DNS_NLOOKUPS; i++)
		dns_lookup_cancel(&q->lookups[i]);
	dns_ev_update(q->dns);
}

static void dns_query_unlink(struct dns_query *q)
{
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		q->dns->queries = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
}

static void dns_query_destroy(struct dns_query *q)
{
	event_free(q->timer);
	free(q);
}

/* Deliver the final result (already in q->res) and free q. Nothing of the
 * dns context is touched after the callback: it may call dns_free(). */
static void dns_query_finish(struct dns_query *q)
{
	dns_query_cancel_lookups(q);
	evtimer_del(q->timer);
	dns_query_unlink(q);
	if (q->res.status != DNS_OK)
		q->res.nhosts = 0;
	if (q->raw_cb != NULL) {
		/* finished without an answer: timeout, invalid name, no start */
		struct dns_raw_result rr = {.status = q->res.status,
		                            .error = q->res.error,
		                            .rrtype = q->raw_type};
		q->raw_cb(&rr, q->arg);
	} else {
		q->cb(&q->res, q->arg);
	}
	dns_query_destroy(q);
}

/* An outcome known before any answer: delivered from the loop. */
static void dns_query_fail_later(struct dns_query *q, enum dns_status st, const char *error)
{
	static const struct timeval zero = {0, 0};

	dns_query_cancel_lookups(q);
	q->res.status = st;
	q->res.error = error;
	q->res.secure = false;
	q->early = true;
	evtimer_del(q->timer);
	evtimer_add(q->timer, &zero);
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	(void)fd;
	(void)what;
	if (!q->early) {
		char qs[LOG_Q_MAX];

		log_debug("dns: timeout name=%s timeout_ms=%u", log_qs(qs, q->name),
		          q->dns->timeout_ms);
		q->res.status = DNS_TEMPFAIL;
		q->res.error = "DNS lookup timed out";
		q->res.secure = false;
	}
	dns_query_finish(q);
}

static void dns_ub_cb(void *mydata, int err, struct ub_result *result);

static int dns_lookup_start(struct dns_query *q, struct dns_lookup *lk, const char *name,
                            enum dns_lookup_kind kind, size_t host)
{
	static const int types[] = {DNS_TYPE_MX, DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_PTR, 0};
	int r;

	lk->q = q;
	lk->kind = kind;
	lk->host = host;
	r = ub_resolve_async(q->dns->ctx, name, kind == DNS_LOOKUP_RAW ? q->raw_type : types[kind],
	                     DNS_CLASS_IN, lk, dns_ub_cb,
	                     &lk->async_id);
	if (r != 0) {
		char qs[LOG_Q_MAX];

		log_warn("dns: ub_resolve_async failed name=%s error=\"%s\"", log_qs(qs, name),
		         ub_strerror(r));
		return -1;
	}
	lk->pending = true;
	q->npending++;
	q->dns->npending++;
	dns_ev_update(q->dns);
	return 0;
}

static void dns_query_tempfail(struct dns_query *q, const char *error)
{
	if (!q->tempfail) {
		q->tempfail = true;
		q->temp_error = error;
	}
}

/* After the MX step: start A (and AAAA) for every host in q->res.hosts. */
static void dns_query_addrs_start(struct dns_query *q)
{
	for (size_t i = 0; i < q->res.nhosts; i++) {
		const char *name = q->res.hosts[i].name;

		if (dns_lookup_start(q, &q->lookups[1 + 2 * i], name, DNS_LOOKUP_A, i) < 0)
			dns_query_tempfail(q, "cannot start DNS lookup");
		if (q->dns->ipv6 &&
		    dns_lookup_start(q, &q->lookups[2 + 2 * i], name, DNS_LOOKUP_AAAA, i) < 0)
			dns_query_tempfail(q, "cannot start DNS lookup");
	}
	if (q->npending == 0)
		dns_query_fail_later(q, DNS_TEMPFAIL, q->temp_error);
}

static void dns_host_addr_add(struct dns_host *h, int family, const uint8_t *a)
{
	struct sockaddr_storage *ss = &h->addrs[h->naddrs];

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		h->addrlens[h->naddrs] = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		h->addrlens[h->naddrs] = sizeof(*s4);
	}
	h->naddrs++;
}

/* Every address lookup is in: merge families, drop empty hosts, decide. */
static void dns_query_addrs_done(struct dns_query *q)
{
	bool nxdomain = false;
	size_t kept = 0;

	for (size_t i = 0; i < q->res.nhosts; i++) {
		struct dns_stage *st = &q->stage[i];
		struct dns_host *h = &q->res.hosts[i];
		size_t i4 = 0, i6 = 0;

		h->naddrs = 0;
		while (h->naddrs < DNS_MAX_ADDRS && (i4 < st->n4 || i6 < st->n6)) {
			if (i6 < st->n6)
				dns_host_addr_add(h, AF_INET6, st->v6[i6++]);
			if (h->naddrs < DNS_MAX_ADDRS && i4 < st->n4)
				dns_host_addr_add(h, AF_INET, st->v4[i4++]);
		}
		nxdomain |= st->nxdomain;
		if (h->naddrs == 0)
			continue;
		if (kept != i)
			q->res.hosts[kept] = *h;
		kept++;
	}
	q->res.nhosts = kept;
	if (kept > 0) {
		q->res.status = DNS_OK;
		q->res.error = NULL;
	} else if (q->tempfail) {
		q->res.status = DNS_TEMPFAIL;
		q->res.error = q->temp_error;
	} else if (nxdomain && (q->res.implicit || q->host_only)) {
		q->res.status = DNS_NXDOMAIN;
		q->res.error = "domain does not exist";
	} else {
		q->res.status = DNS_NO_ADDRESS;
		q->res.error = q->res.implicit || q->host_only
		                   ? "domain has no address"
		                   : "no address for any mail exchanger";
	}
	dns_query_finish(q);
}

/* A/AAAA answer for one host. */
static void dns_addr_answer(struct dns_lookup *lk, struct ub_result *r)
{
	struct dns_stage *st = &lk->q->stage[lk->host];
	bool v6 = lk->kind == DNS_LOOKUP_AAAA;
	size_t want = v6 ? 16 : 4;

	for (size_t i = 0; r->data[i] != NULL; i++) {
		size_t *n = v6 ? &st->n6 : &st->n4;

		if (r->len[i] < 0 || (size_t)r->len[i] != want) {
			log_debug("dns: malformed address rdata len=%d", r->len[i]);
			continue;
		}
		if (*n >= DNS_MAX_ADDRS)
			break;
		memcpy(v6 ? st->v6[*n] : st->v4[*n], r->data[i], want);
		(*n)++;
	}
}

static int dns_mx_cmp(const void *a, const void *b)
{
	const struct dns_mx *x = a, *y = b;

	if (x->preference != y->preference)
		return x->preference < y->preference ? -1 : 1;
	if (x->shuffle != y->shuffle)
		return x->shuffle < y->shuffle ? -1 : 1;
	return 0;
}

/* Fill q->res.hosts from the MX rdata. Returns 1 for hosts, 0 for a null MX
 * (RFC 7505 §3: a "." exchange, whatever else is published), -1 if no record
 * was usable. */
static int dns_mx_parse(struct dns_query *q, struct ub_result *r)
{
	struct dns_mx *mx;
	size_t n = 0, cap = 0;

	while (r->data[cap] != NULL)
		cap++;
	if (cap == 0)
		return -1;
	mx = xcalloc(cap, sizeof(*mx));
	for (size_t i = 0; i < cap; i++) {
		const uint8_t *p = (const uint8_t *)r->data[i];
		int rc = -1;

		if (r->len[i] >= 3) /* preference (2) + at least the root label */
			rc = dns_wire_name_parse(p + 2, (size_t)r->len[i] - 2, mx[n].name);
		if (rc == 0) {
			free(mx);
			return 0;
		}
		if (rc < 0) {
			log_debug("dns: malformed MX rdata skipped len=%d", r->len[i]);
			continue;
		}
		mx[n].preference = (unsigned)p[0] << 8 | p[1];
		mx[n].shuffle = dns_rng_next(q->dns);
		n++;
	}
	qsort(mx, n, sizeof(*mx), dns_mx_cmp);
	q->res.nhosts = 0;
	for (size_t i = 0; i < n && q->res.nhosts < DNS_MAX_HOSTS; i++) {
		bool dup = false;

		for (size_t k = 0; k < q->res.nhosts && !dup; k++)
			dup = strcasecmp(q->res.hosts[k].name, mx[i].name) == 0;
		if (dup)
			continue;
		memcpy(q->res.hosts[q->res.nhosts].name, mx[i].name, sizeof(mx[i].name));
		q->res.hosts[q->res.nhosts].preference = mx[i].preference;
		q->res.nhosts++;
	}
	free(mx);
	return q->res.nhosts > 0 ? 1 : -1;
}

/* The MX answer: decide, or go on to the addresses. */
static void dns_mx_answer(struct dns_query *q, struct ub_result *r)
{
	int rc;

	if (!r->havedata) {
		/* NODATA: the domain itself is the exchanger (RFC 5321 §5.1). */
		q->res.implicit = true;
		q->res.nhosts = 1;
		memcpy(q->res.hosts[0].name, q->name, sizeof(q->name));
		q->res.hosts[0].preference = 0;
		dns_query_addrs_start(q);
		return;
	}
	rc = dns_mx_parse(q, r);
	if (rc == 0) {
		q->res.status = DNS_NULL_MX;
		q->res.error = "domain accepts no mail (null MX)";
		dns_query_finish(q);
	} else if (rc < 0) {
		q->res.status = DNS_NO_ADDRESS;
		q->res.error = "no usable MX record";
		dns_query_finish(q);
	} else {
		dns_query_addrs_start(q);
	}
}

/* The PTR answer (RFC 1035 §3.3.12): every well-formed name, at most
 * DNS_MAX_HOSTS, duplicates dropped. */
static void dns_ptr_answer(struct dns_query *q, struct ub_result *r)
{
	q->res.nhosts = 0;
	for (size_t i = 0; r->havedata && r->data[i] != NULL; i++) {
		struct dns_host *h = &q->res.hosts[q->res.nhosts];
		bool dup = false;

		if (q->res.nhosts >= DNS_MAX_HOSTS)
			break;
		if (r->len[i] < 1 ||
		    dns_wire_name_parse((const uint8_t *)r->data[i], (size_t)r->len[i], h->name) != 1) {
			log_debug("dns: malformed PTR rdata skipped len=%d", r->len[i]);
			continue;
		}
		for (size_t k = 0; k < q->res.nhosts && !dup; k++)
			dup = strcasecmp(q->res.hosts[k].name, h->name) == 0;
		if (!dup)
			q->res.nhosts++;
	}
	if (q->res.nhosts > 0) {
		q->res.status = DNS_OK;
		q->res.error = NULL;
	} else {
		q->res.status = DNS_NO_ADDRESS;
		q->res.error = "no PTR record";
	}
	dns_query_finish(q);
}

/* Classify a libunbound answer: 0 usable (data or NODATA), 1 NXDOMAIN,
 * -1 temporary failure with *error_r set. */
static int dns_result_classify(struct dns_query *q, int err, struct ub_result *r,
                               const char **error_r)
{
	if (err != 0 || r == NULL) {
		*error_r = ub_strerror(err);
		return -1;
	}
	if (r->bogus) {
		char qs[LOG_Q_MAX], ws[LOG_Q_MAX];

		log_warn("dns: DNSSEC validation failed name=%s why=%s", log_qs(qs, r->qname),
		         log_qs(ws, r->why_bogus != NULL ? r->why_bogus : ""));
		*error_r = "DNSSEC validation failed";
		return -1;
	}
	if (r->rcode == DNS_RCODE_NXDOMAIN)
		return 1;
	if (r->rcode != 0) {
		snprintf(q->errbuf, sizeof(q->errbuf), "DNS server failure (rcode %d)", r->rcode);
		*error_r = q->errbuf;
		return -1;
	}
	if (r->havedata && (r->data == NULL || r->len == NULL)) {
		*error_r = "DNS answer without data";
		return -1;
	}
	return 0;
}

/* The answer of dns_resolve_raw(): handed over as it is, then q is freed. */
static void dns_raw_answer(struct dns_query *q, int c, const char *error, struct ub_result *r)
{
	/* The error may be q->errbuf: kept beside the result, q is freed first. */
	struct {
		struct dns_raw_result r;
		char err[sizeof(q->errbuf)];
	} *box = xcalloc(1, sizeof(*box));
	struct dns_raw_result *rr = &box->r;
	dns_raw_cb *cb = q->raw_cb;
	void *arg = q->arg;

	rr->rrtype = q->raw_type;
	rr->secure = r != NULL && r->secure;
	if (c < 0) {
		rr->status = DNS_TEMPFAIL;
		snprintf(box->err, sizeof(box->err), "%s", error != NULL ? error : "DNS failure");
		rr->error = box->err;
	} else if (c > 0) {
		rr->status = DNS_NXDOMAIN;
		rr->error = "domain does not exist";
	} else {
		rr->status = DNS_OK;
		for (size_t i = 0; r->havedata && r->data[i] != NULL && rr->n < DNS_RAW_MAX; i++) {
			if (r->len[i] < 0)
				continue;
			rr->rdata[rr->n] = (const unsigned char *)r->data[i];
			rr->len[rr->n] = (size_t)r->len[i];
			rr->n++;
		}
	}
	/* Unlinked before the callback, which may call dns_free(). */
	dns_query_cancel_lookups(q);
	evtimer_del(q->timer);
	dns_query_unlink(q);
	dns_query_destroy(q);
	cb(rr, arg);
	free(box);
}

static void dns_ub_cb(void *mydata, int err, struct ub_result *r)
{
	struct dns_lookup *lk = mydata;
	struct dns_query *q = lk->q;
	const char *error = NULL;
	int c;

	lk->pending = false;
	q->npending--;
	q->dns->npending--;
	dns_ev_update(q->dns);
	c = dns_result_classify(q, err, r, &error);
	if (r == NULL || !r->secure)
		q->res.secure = false;
	if (lk->kind == DNS_LOOKUP_RAW) {
		dns_raw_answer(q, c, error, r);
	} else if (lk->kind == DNS_LOOKUP_PTR) {
		if (c < 0) {
			q->res.status = DNS_TEMPFAIL;
			q->res.error = error;
			dns_query_finish(q);
		} else if (c > 0) {
			q->res.status = DNS_NXDOMAIN;
			q->res.error = "no PTR record";
			dns_query_finish(q);
		} else {
			dns_ptr_answer(q, r);
		}
	} else if (lk->kind == DNS_LOOKUP_MX) {
		if (c < 0) {
			q->res.status = DNS_TEMPFAIL;
			q->res.error = error;
			dns_query_finish(q);
		} else if (c > 0) {
			q->res.status = DNS_NXDOMAIN;
			q->res.error = "domain does not exist";
			dns_query_finish(q);
		} else {
			dns_mx_answer(q, r);
		}
	} else {
		if (c < 0)
			dns_query_tempfail(q, error);
		else if (c > 0)
			q->stage[lk->host].nxdomain = true;
		else if (r->havedata)
			dns_addr_answer(lk, r);
		if (q->npending == 0)
			dns_query_addrs_done(q);
	}
	ub_resolve_free(r);
}

static void dns_destroy(struct dns *dns)
{
	event_free(dns->ev);
	ub_ctx_delete(dns->ctx);
	free(dns);
}

static void dns_fd_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns *dns = arg;
	int r;

	(void)fd;
	(void)what;
	dns->in_process = true;
	r = ub_process(dns->ctx);
	dns->in_process = false;
	if (dns->dying) {
		dns_destroy(dns);
		return;
	}
	if (r != 0) {
		/* The resolver thread is gone: stop watching a dead pipe (it would
		 * spin the loop); pending queries end at their deadlines. */
		log_err("dns: ub_process failed error=\"%s\"", ub_strerror(r));
		dns->broken = true;
		dns_ev_update(dns);
	}
}

static int dns_ctx_setup(struct ub_ctx *ctx, const struct dns_conf *conf, char *err, size_t errlen)
{
	int r;

	/* Threads, not a forked process: the answer pipe is read here. */
	if ((r = ub_ctx_async(ctx, 1)) != 0) {
		snprintf(err, errlen, "ub_ctx_async: %s", ub_strerror(r));
		return -1;
	}
	/* Forwarders on loopback (a local resolver, the test server) must work. */
	if ((r = ub_ctx_set_option(ctx, "do-not-query-localhost:", "no")) != 0) {
		snprintf(err, errlen, "do-not-query-localhost: %s", ub_strerror(r));
		return -1;
	}
	/* libunbound answers "test." (RFC 6761 §6.2) itself with NXDOMAIN; let
	 * it through so that test zones served by a forwarder work. On the
	 * internet the root still says NXDOMAIN. */
	if ((r = ub_ctx_set_option(ctx, "local-zone:", "test. transparent")) != 0) {
		snprintf(err, errlen, "local-zone: %s", ub_strerror(r));
		return -1;
	}
	/* Nor answer the reverse of 127.0.0.0/8 from its built-in data
	 * ("localhost"): smtpd looks loopback clients up only when told to
	 * (policy.fcrdns_loopback), and then the DNS is to answer. A zone of
	 * our own, even empty, replaces the default ("nodefault" does not,
	 * through ub_ctx_set_option). */
	if ((r = ub_ctx_set_option(ctx, "local-zone:", "127.in-addr.arpa. transparent")) != 0) {
		snprintf(err, errlen, "local-zone: %s", ub_strerror(r));
		return -1;
	}
	for (size_t i = 0; i < conf->n_forwarders; i++) {
		if ((r = ub_ctx_set_fwd(ctx, conf->forwarders[i])) != 0) {
			snprintf(err, errlen, "forwarder \"%s\": %s", conf->forwarders[i],
			         ub_strerror(r));
			return -1;
		}
	}
	/* Not /etc/hosts: mail routing follows the DNS only. */
	if (conf->n_forwarders == 0 && (r = ub_ctx_resolvconf(ctx, NULL)) != 0) {
		snprintf(err, errlen, "/etc/resolv.conf: %s", ub_strerror(r));
		return -1;
	}
	if (conf->trust_anchor_file != NULL && conf->trust_anchor_file[0] != '\0' &&
	    (r = ub_ctx_add_ta_file(ctx, conf->trust_anchor_file)) != 0) {
		snprintf(err, errlen, "trust anchor \"%s\": %s", conf->trust_anchor_file,
		         ub_strerror(r));
		return -1;
	}
	return 0;
}

int dns_create(struct event_base *base, const struct dns_conf *conf, struct dns **dns_r, char *err,
               size_t errlen)
{
	struct dns *dns;
	struct ub_ctx *ctx;

	*dns_r = NULL;
	ctx = ub_ctx_create();
	if (ctx == NULL) {
		snprintf(err, errlen, "ub_ctx_create failed");
		return -1;
	}
	if (dns_ctx_setup(ctx, conf, err, errlen) < 0) {
		ub_ctx_delete(ctx);
		return -1;
	}
	dns = xcalloc(1, sizeof(*dns));
	dns->base = base;
	dns->ctx = ctx;
	dns->ipv6 = conf->ipv6;
	dns->timeout_ms = conf->timeout_ms != 0 ? conf->timeout_ms : DNS_TIMEOUT_DEFAULT_MS;
	if (getrandom(&dns->rng, sizeof(dns->rng), 0) != sizeof(dns->rng))
		dns->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)dns;
	dns->ev = event_new(base, ub_fd(ctx), EV_READ | EV_PERSIST, dns_fd_cb, dns);
	if (dns->ev == NULL) {
		snprintf(err, errlen, "event_new failed");
		ub_ctx_delete(ctx);
		free(dns);
		return -1;
	}
	*dns_r = dns;
	return 0;
}

void dns_free(struct dns **dnsp)
{
	struct dns *dns = *dnsp;

	if (dns == NULL)
		return;
	*dnsp = NULL;
	while (dns->queries != NULL) {
		struct dns_query *q = dns->queries;

		dns_query_cancel_lookups(q);
		dns_query_unlink(q);
		dns_query_destroy(q);
	}
	/* Called from a callback inside ub_process(): libunbound still reads
	 * its pipe after we return, so the context goes when it is done. */
	if (dns->in_process) {
		dns->dying = true;
		return;
	}
	dns_destroy(dns);
}

static struct dns_query *dns_query_new(struct dns *dns, dns_mx_cb *cb, void *arg)
{
	struct dns_query *q = xcalloc(1, sizeof(*q));
	struct timeval tv = {dns->timeout_ms / 1000, (dns->timeout_ms % 1000) * 1000};

	q->dns = dns;
	q->cb = cb;
	q->arg = arg;
	q->res.secure = true;
	q->timer = evtimer_new(dns->base, dns_timer_cb, q);
	if (q->timer == NULL)
		abort(); /* allocation failure: same policy as xmalloc */
	q->next = dns->queries;
	if (dns->queries != NULL)
		dns->queries->prev = q;
	dns->queries = q;
	evtimer_add(q->timer, &tv);
	return q;
}

/* Validate and keep the name; an invalid one ends the query (from the loop)
 * as NXDOMAIN: no such name can exist. */
static bool dns_query_name_set(struct dns_query *q, const char *name)
{
	char qs[LOG_Q_MAX];

	if (dns_name_check(name, q->name))
		return true;
	log_debug("dns: invalid name=%s", log_qs(qs, name));
	snprintf(q->name, sizeof(q->name), "%s", "(invalid)");
	dns_query_fail_later(q, DNS_NXDOMAIN, "invalid domain name");
	return false;
}

/* A smarthost given as an address ("192.0.2.1", "2001:db8::1", "[::1]")
 * needs no lookup: the result is delivered from the loop. */
static bool dns_query_literal(struct dns_query *q, const char *host)
{
	struct dns_host *h = &q->res.hosts[0];
	char buf[INET6_ADDRSTRLEN + 2];
	uint8_t a[16];
	size_t len = strlen(host);
	int family = AF_INET;

	if (len >= 2 && host[0] == '[' && host[len - 1] == ']' && len - 2 < sizeof(buf)) {
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		family = AF_INET6;
	} else if (len < sizeof(buf)) {
		memcpy(buf, host, len + 1);
		if (strchr(buf, ':') != NULL)
			family = AF_INET6;
	} else {
		return false;
	}
	if (inet_pton(family, buf, a) != 1)
		return false;
	snprintf(h->name, sizeof(h->name), "%s", buf);
	dns_host_addr_add(h, family, a);
	q->res.nhosts = 1;
	q->res.secure = false;
	dns_query_fail_later(q, DNS_OK, NULL);
	return true;
}

struct dns_query *dns_resolve_mx(struct dns *dns, const char *domain, dns_mx_cb *cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, cb, arg);

	if (!dns_query_name_set(q, domain))
		return q;
	if (dns_lookup_start(q, &q->lookups[0], q->name, DNS_LOOKUP_MX, 0) < 0)
		dns_query_fail_later(q, DNS_TEMPFAIL, "cannot start DNS lookup");
	return q;
}

struct dns_query *dns_resolve_host(struct dns *dns, const char *host, dns_mx_cb *cb, void *arg)
{
	struct dns_query *q = dns_query_new(dns, cb, arg);

	q->host_only = true;
	if (dns_query_literal(q, host) || !dns_query_name_set(q, host))
		return q;
	q->res.nhosts = 1;
	memcpy(q->res.hosts[0].name, q->name, sizeof(q->name));
	dns_query_addrs_start(q);
	return q;
}

struct dns_query *dns_resolve_ptr(struct dns *dns, const struct sockaddr *sa, dns_mx_cb *cb,
                                  void *arg)
{
	static const char hex[] = "0123456789abcdef";
	struct dns_query *q = dns_query_new(dns, cb, arg);
	char name[DNS_NAME_MAX + 1];
	size_t o = 0;

	if (sa->sa_family == AF_INET) {
		const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;

		snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1], a[0]);
	} else if (sa->sa_family == AF_INET6) {
		const uint8_t *a = (const uint8_t *)&((const struct sockaddr_in6 *)sa)->sin6_addr;

		/* RFC 3596 §2.5: nibbles, least significant first */
		for (int i = 15; i >= 0; i--) {
			name[o++] = hex[a[i] & 15];
			name[o++] = '.';
			name[o++] = hex[a[i] >> 4];
			name[o++] = '.';
		}
		snprintf(name + o, sizeof(name) - o, "ip6.arpa");
	} else {
		snprintf(name, sizeof(name), "%s", "");
	}
	if (!dns_query_name_set(q, name))
		return q;
	if (dns_lookup_start(q, &q->lookups[0], q->name, DNS_LOOKUP_PTR, 0) < 0)
		dns_query_fail_later(q, DNS_TEMPFAIL, "cannot start DNS lookup");
	return q;
}

struct dns_query *dns_resolve_raw(struct dns *dns, const char *name, int rrtype, dns_raw_cb *cb,
                                  void *arg)
{
	struct dns_query *q = dns_query_new(dns, NULL, arg);

	q->raw_cb = cb;
	q->raw_type = rrtype;
	if (rrtype <= 0 || rrtype > 65535) {
		snprintf(q->name, sizeof(q->name), "%s", "(invalid)");
		dns_query_fail_later(q, DNS_NXDOMAIN, "invalid record type");
		return q;
	}
	if (!dns_query_name_set(q, name))
		return q;
	if (dns_lookup_start(q, &q->lookups[0], q->name, DNS_LOOKUP_RAW, 0) < 0)
		dns_query_fail_later(q, DNS_TEMPFAIL, "cannot start DNS lookup");
	return q;
}

int dns_txt_join(const unsigned char *rdata, size_t len, char *out, size_t outlen)
{
	size_t i = 0, o = 0;

	if (outlen == 0)
		return -1;
	while (i < len) {
		size_t l = rdata[i++];

		if (l > len - i || l >= outlen - o)
			return -1;
		memcpy(out + o, rdata + i, l);
		o += l;
		i += l;
	}
	out[o] = '\0';
	return o > INT32_MAX ? -1 : (int)o;
}

int dns_wire_name(const unsigned char *p, size_t n, char *out)
{
	return dns_wire_name_parse(p, n, out);
}

void dns_cancel(struct dns_query *q)
{
	if (q == NULL)
		return;
	dns_query_cancel_lookups(q);
	dns_query_unlink(q);
	dns_query_destroy(q);
}
