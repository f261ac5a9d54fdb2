/* fuzz_spf_eval.c — libFuzzer target for the SPF evaluator (src/dauth/spf.c)
 * with hostile DNS answers.
 *
 * Input: one octet choosing the client (even: 192.0.2.1, odd: 2001:db8::1;
 * bit 1: the HELO identity), then the answers, consumed one per lookup in
 * the order the evaluator asks: a status octet (0 mod 4: records, 1:
 * NXDOMAIN, 2: TEMPFAIL, 3: NODATA), a count octet, then per record a
 * length octet and that many octets of rdata, given as they are whatever
 * the type asked (TXT, A, MX, PTR: malformed ones included). An exhausted
 * input answers NXDOMAIN. The first answer is the checked domain's TXT, so
 * a seed starts with a record. Invariants: the callback runs exactly once,
 * never from inside spf_check(); the result is one of the seven; reason and
 * explanation are printable; the DNS-querying terms stay within the limit;
 * the Received-SPF field fits and holds no bare CR or LF. */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/spf.h"
#include "lib/alloc.h"

struct fz {
	struct event_base *base;
	const uint8_t *p;
	size_t n;
	unsigned calls;
	unsigned lookups;
};

struct spf_lookup {
	struct event *ev;
	struct fz *fz;
	dns_raw_cb *cb;
	void *arg;
	int type;
};

static void fz_answer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct spf_lookup *l = arg;
	struct fz *fz = l->fz;
	struct dns_raw_result res = {.status = DNS_NXDOMAIN, .error = "fuzz", .rrtype = l->type};
	if (fz->n >= 2) {
		unsigned st = fz->p[0] % 4;
		size_t cnt = fz->p[1];
		fz->p += 2;
		fz->n -= 2;
		res.status = st == 1 ? DNS_NXDOMAIN : st == 2 ? DNS_TEMPFAIL : DNS_OK;
		for (size_t i = 0; i < cnt && fz->n >= 1 && res.n < DNS_RAW_MAX; i++) {
			size_t len = fz->p[0];
			if (len + 1 > fz->n)
				len = fz->n - 1;
			if (st == 0) {
				res.rdata[res.n] = fz->p + 1;
				res.len[res.n++] = len;
			}
			fz->p += 1 + len;
			fz->n -= 1 + len;
		}
	}
	dns_raw_cb *cb = l->cb;
	void *cbarg = l->arg;
	event_free(l->ev);
	free(l);
	cb(&res, cbarg);
}

static struct spf_lookup *fz_lookup(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
                                    void *arg)
{
	struct fz *fz = ctx;
	(void)name;
	struct spf_lookup *l = xcalloc(1, sizeof(*l));
	fz->lookups++;
	l->fz = fz;
	l->cb = cb;
	l->arg = arg;
	l->type = rrtype;
	l->ev = evtimer_new(fz->base, fz_answer, l);
	struct timeval zero = {0, 0};
	evtimer_add(l->ev, &zero);
	return l;
}

static void fz_cancel(void *ctx, struct spf_lookup *l)
{
	(void)ctx;
	event_free(l->ev);
	free(l);
}

static const struct spf_request *fz_req;

static void fz_printable(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			abort();
}

static void fz_done(const struct spf_outcome *o, void *arg)
{
	struct fz *fz = arg;
	fz->calls++;
	if ((unsigned)o->result > SPF_PERMERROR || o->lookups > 11)
		abort();
	fz_printable(o->reason);
	fz_printable(o->explanation);
	char hdr[4096];
	int n = spf_received_header(o, fz_req, "mx.example.net", hdr, sizeof(hdr));
	if (n < 0)
		abort();
	for (int i = 0; i < n; i++) {
		if (hdr[i] == '\r' && hdr[i + 1] != '\n')
			abort();
		if (hdr[i] == '\n' && (i == 0 || hdr[i - 1] != '\r'))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	struct fz fz = {.base = event_base_new(), .p = data + 1, .n = size - 1};
	if (fz.base == NULL)
		abort();
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	struct spf_request req = {
	    .client = data[0] & 1 ? (struct sockaddr *)&s6 : (struct sockaddr *)&s4,
	    .sender = "a.b-c@example.com",
	    .helo = "helo.example.org",
	    .hostname = "mx.example.net",
	    .identity = data[0] & 2 ? SPF_ID_HELO : SPF_ID_MAILFROM,
	    .timeout_ms = 1000,
	    .now = 1700000000,
	};
	struct spf_resolver res = {fz_lookup, fz_cancel, &fz};
	fz_req = &req;
	spf_check(&res, fz.base, &req, fz_done, &fz);
	if (fz.calls != 0)
		abort();
	while (fz.calls == 0)
		event_base_loop(fz.base, EVLOOP_ONCE);
	if (fz.calls != 1)
		abort();
	event_base_free(fz.base);
	return 0;
}
