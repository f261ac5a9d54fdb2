/* spf_suite.c — test driver for src/dauth/spf.c: runs SPF checks against
 * zone data given on stdin through an injected resolver (no network), for
 * tests/integration/test_spf_suite.py, which feeds it the RFC 7208 test
 * suite (openspf.org, shipped by Debian's python3-spf).
 *
 * Input lines (strings hex-encoded, so any octet can pass):
 *   Z NAMEHEX TYPE RDATAHEX   a record (TYPE A, AAAA, MX, PTR, TXT, CNAME;
 *                             RDATA in wire format, names uncompressed)
 *   Z NAMEHEX TYPE TIMEOUT    a lookup of TYPE at NAME times out
 *   Z NAMEHEX TIMEOUT -       any lookup at NAME with no earlier record of
 *                             its type times out
 *   Q ID IP SENDERHEX HELOHEX run one check on the zone so far, print a line
 *                             "ID RESULT EXPHEX REASONHEX", clear the zone
 * The lookups emulate the suite's reference driver (pyspf testspf.py):
 * empty labels are dropped, a label over 63 octets and an unknown name
 * under "error." are TEMPFAIL, an unknown name NXDOMAIN, a known one
 * without records of the type NODATA; a CNAME is followed one level.
 * Every answer comes from the event loop, as from struct dns.
 * Input: the test's own data, trusted. */
#include "dauth/spf.h"
#include "lib/alloc.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SUITE_RDATA_MAX 65536

struct suite_rr {
	char *name; /* lower case, empty labels dropped */
	int type;   /* 0: TIMEOUT for the whole name */
	bool timeout;
	unsigned char *rdata;
	size_t len;
};

struct suite_zone {
	struct suite_rr *rr;
	size_t n, cap;
	unsigned lookups;
	struct event_base *base;
};

struct spf_lookup {
	struct event *ev;
	struct suite_zone *zone;
	char name[1024];
	int type;
	dns_raw_cb *cb;
	void *arg;
};

static int suite_unhex(const char *s, unsigned char *out, size_t outlen, size_t *len_r)
{
	size_t n = strlen(s);
	if (strcmp(s, "-") == 0) {
		*len_r = 0;
		return 0;
	}
	if (n % 2 != 0 || n / 2 > outlen)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (unsigned char)v;
	}
	*len_r = n / 2;
	return 0;
}

static void suite_hex_print(const char *s)
{
	if (*s == '\0')
		fputs("-", stdout);
	for (; *s != '\0'; s++)
		printf("%02x", (unsigned char)*s);
}

/* pyspf's DNSLookup: drop empty labels; 1 ok, -1 a label over 63 octets. */
static int suite_norm(const char *in, char *out, size_t outlen)
{
	size_t k = 0, label = 0;
	for (const char *p = in; *p != '\0' && k + 2 < outlen; p++) {
		if (*p == '.') {
			if (label > 0)
				out[k++] = '.';
			label = 0;
			continue;
		}
		if (++label > 63)
			return -1;
		out[k++] = (char)tolower((unsigned char)*p);
	}
	if (k > 0 && out[k - 1] == '.')
		k--;
	out[k] = '\0';
	return 1;
}

static int suite_type(const char *t)
{
	static const struct {
		const char *name;
		int type;
	} types[] = {{"A", DNS_RR_A},     {"AAAA", DNS_RR_AAAA}, {"MX", DNS_RR_MX},
	             {"PTR", DNS_RR_PTR}, {"TXT", DNS_RR_TXT},   {"CNAME", DNS_RR_CNAME}};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(t, types[i].name) == 0)
			return types[i].type;
	return -1;
}

/* Records of type at name into res; 0 found the name, -1 not, -2 timeout. */
static int suite_collect(const struct suite_zone *z, const char *name, int type, int level,
                         struct dns_raw_result *res)
{
	bool known = false, seen = false;
	for (size_t i = 0; i < z->n; i++) {
		const struct suite_rr *rr = &z->rr[i];
		if (strcmp(rr->name, name) != 0)
			continue;
		known = true;
		if (rr->type == 0) {
			if (!seen)
				return -2;
			break;
		}
		if (rr->type == type)
			seen = true;
		if (rr->timeout) {
			if (rr->type == type)
				return -2;
			continue;
		}
		if (rr->type == type && res->n < DNS_RAW_MAX) {
			res->rdata[res->n] = rr->rdata;
			res->len[res->n++] = rr->len;
		} else if (rr->type == DNS_RR_CNAME && type != DNS_RR_CNAME && level == 0) {
			char target[256], norm[256];
			if (dns_wire_name(rr->rdata, rr->len, target) == 1 &&
			    suite_norm(target, norm, sizeof(norm)) == 1) {
				int rc = suite_collect(z, norm, type, 1, res);
				if (rc == -2)
					return -2;
			}
		}
	}
	return known ? 0 : -1;
}

static void suite_answer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct spf_lookup *l = arg;
	struct dns_raw_result res = {.status = DNS_OK, .rrtype = l->type};
	char name[1024];
	if (suite_norm(l->name, name, sizeof(name)) < 0) {
		res.status = DNS_TEMPFAIL;
		res.error = "label too long";
	} else {
		int rc = suite_collect(l->zone, name, l->type, 0, &res);
		if (rc == -2) {
			res.status = DNS_TEMPFAIL;
			res.error = "timeout";
			res.n = 0;
		} else if (rc == -1) {
			res.status = strncmp(name, "error.", 6) == 0 ? DNS_TEMPFAIL : DNS_NXDOMAIN;
			res.error = "no such name";
		}
	}
	dns_raw_cb *cb = l->cb;
	void *cbarg = l->arg;
	event_free(l->ev);
	free(l);
	cb(&res, cbarg);
}

static struct spf_lookup *suite_lookup(void *ctx, const char *name, int rrtype, dns_raw_cb *cb,
                                       void *arg)
{
	struct suite_zone *z = ctx;
	struct spf_lookup *l = xcalloc(1, sizeof(*l));
	z->lookups++;
	l->zone = z;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->type = rrtype;
	l->cb = cb;
	l->arg = arg;
	l->ev = evtimer_new(z->base, suite_answer, l);
	struct timeval zero = {0, 0};
	evtimer_add(l->ev, &zero);
	return l;
}

static void suite_cancel(void *ctx, struct spf_lookup *l)
{
	(void)ctx;
	event_free(l->ev);
	free(l);
}

struct suite_run {
	const char *id;
	bool done;
	struct event_base *base;
};

static void suite_done(const struct spf_outcome *o, void *arg)
{
	struct suite_run *run = arg;
	printf("%s %s ", run->id, spf_result_name(o->result));
	suite_hex_print(o->explanation);
	putchar(' ');
	suite_hex_print(o->reason);
	putchar('\n');
	fflush(stdout);
	run->done = true;
}

static void suite_zone_clear(struct suite_zone *z)
{
	for (size_t i = 0; i < z->n; i++) {
		free(z->rr[i].name);
		free(z->rr[i].rdata);
	}
	z->n = 0;
}

static int suite_zone_add(struct suite_zone *z, char *namehex, char *type, char *val)
{
	unsigned char *buf = xmalloc(SUITE_RDATA_MAX);
	size_t len;
	char name[1024];
	if (suite_unhex(namehex, buf, 1023, &len) < 0) {
		free(buf);
		return -1;
	}
	buf[len] = '\0';
	if (suite_norm((char *)buf, name, sizeof(name)) < 0) {
		free(buf);
		return 0; /* unreachable through lookups anyway */
	}
	if (z->n == z->cap) {
		z->cap = z->cap * 2 + 16;
		z->rr = xreallocarray(z->rr, z->cap, sizeof(*z->rr));
	}
	struct suite_rr *rr = &z->rr[z->n];
	memset(rr, 0, sizeof(*rr));
	if (strcmp(type, "TIMEOUT") == 0) {
		rr->type = 0;
	} else {
		rr->type = suite_type(type);
		if (rr->type < 0) {
			free(buf);
			return 0; /* SPF (type 99) and others: never asked */
		}
		if (strcmp(val, "TIMEOUT") == 0) {
			rr->timeout = true;
		} else if (suite_unhex(val, buf, SUITE_RDATA_MAX, &len) < 0) {
			free(buf);
			return -1;
		} else {
			rr->rdata = xmemdup(buf, len);
			rr->len = len;
		}
	}
	rr->name = xstrdup(name);
	z->n++;
	free(buf);
	return 0;
}

static int suite_query(struct event_base *base, struct suite_zone *z, char *id, char *ipstr,
                       char *senderhex, char *helohex)
{
	struct sockaddr_storage ss = {0};
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ipstr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, ipstr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
	} else {
		fprintf(stderr, "spf_suite: bad address %s\n", ipstr);
		return -1;
	}
	char sender[1024], helo[1024];
	size_t len;
	if (suite_unhex(senderhex, (unsigned char *)sender, sizeof(sender) - 1, &len) < 0)
		return -1;
	sender[len] = '\0';
	if (suite_unhex(helohex, (unsigned char *)helo, sizeof(helo) - 1, &len) < 0)
		return -1;
	helo[len] = '\0';
	struct spf_resolver res = {suite_lookup, suite_cancel, z};
	struct spf_request req = {
	    .client = (struct sockaddr *)&ss,
	    .sender = sender,
	    .helo = helo,
	    .hostname = "receiver.example.net",
	    .default_explanation = "DEFAULT",
	    .timeout_ms = 5000,
	};
	struct suite_run run = {.id = id, .base = base};
	struct spf_query *q = spf_check(&res, base, &req, suite_done, &run);
	(void)q;
	if (run.done) {
		fprintf(stderr, "spf_suite: callback from inside spf_check\n");
		return -1;
	}
	while (!run.done)
		event_base_loop(base, EVLOOP_ONCE);
	return 0;
}

int main(void)
{
	struct event_base *base = event_base_new();
	struct suite_zone zone = {.base = base};
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;
	if (base == NULL)
		return 1;
	while (getline(&line, &cap, stdin) > 0) {
		line[strcspn(line, "\r\n")] = '\0';
		char *f[6] = {0};
		size_t nf = 0;
		for (char *p = line; *p != '\0' && nf < 6;) {
			f[nf++] = p;
			p += strcspn(p, " ");
			if (*p == ' ')
				*p++ = '\0';
		}
		if (nf == 4 && strcmp(f[0], "Z") == 0) {
			if (suite_zone_add(&zone, f[1], f[2], f[3]) < 0) {
				fprintf(stderr, "spf_suite: bad zone line\n");
				rc = 1;
				break;
			}
		} else if (nf == 5 && strcmp(f[0], "Q") == 0) {
			if (suite_query(base, &zone, f[1], f[2], f[3], f[4]) < 0) {
				rc = 1;
				break;
			}
			suite_zone_clear(&zone);
		} else if (nf > 0) {
			fprintf(stderr, "spf_suite: bad line\n");
			rc = 1;
			break;
		}
	}
	suite_zone_clear(&zone);
	free(zone.rr);
	free(line);
	event_base_free(base);
	return rc;
}
