/* dns_probe.c — test driver for src/dns: resolves the names given on the
 * command line through a real libunbound context and prints one JSON line per
 * result, for tests/integration/test_dns.py (which runs a dnslib server).
 *
 *   dns_probe [-f FWD]... [-a TA_FILE] [-4] [-T TIMEOUT_MS] [-r REPEAT]
 *             [-m mx|host|cancel|free|freecb|ptr] NAME...
 *
 * Names run in parallel; each is resolved REPEAT times one after the other.
 * Modes: mx, host (dns_resolve_host), ptr (dns_resolve_ptr of the numeric
 * address NAME: the names are the result's hosts), txt (dns_resolve_raw of TXT:
 * "txt" lists each record's strings joined); cancel (start, then dns_cancel at once:
 * no callback may run); free (dns_free with lookups pending after 50 ms);
 * freecb (dns_free inside the first callback: no other callback may run).
 * The last line is {"event":"done","callbacks":N,"sync":N}; "sync" counts
 * callbacks run from inside dns_resolve_*(), which must be 0.
 * Input: the test's own DNS server, trusted. */
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum probe_mode { PROBE_MX, PROBE_HOST, PROBE_CANCEL, PROBE_FREE, PROBE_FREECB, PROBE_PTR, PROBE_TXT };

struct probe;

struct probe_job {
	struct probe *p;
	const char *name;
	unsigned done;
	struct timespec start;
	struct dns_query *q;
};

struct probe {
	struct event_base *base;
	struct dns *dns;
	enum probe_mode mode;
	unsigned repeat;
	unsigned callbacks;
	unsigned sync;
	bool in_call;
};

static const char *const probe_status_names[] = {"OK", "NULL_MX", "NXDOMAIN", "NO_ADDRESS",
                                                 "TEMPFAIL"};

/* Names and errors printed here are LDH or our own static strings; escape
 * anyway so that a bug cannot break the JSON. */
static void probe_json_str(const char *s)
{
	if (s == NULL) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void probe_addr_print(const struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN];
	const void *a = ss->ss_family == AF_INET6
	                    ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
	                    : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;

	if (inet_ntop(ss->ss_family, a, buf, sizeof(buf)) == NULL)
		probe_json_str("?");
	else
		probe_json_str(buf);
}

static void probe_result_print(const struct probe_job *j, const struct dns_mx_result *res)
{
	struct timespec now;
	long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (now.tv_sec - j->start.tv_sec) * 1000 + (now.tv_nsec - j->start.tv_nsec) / 1000000;
	fputs("{\"name\":", stdout);
	probe_json_str(j->name);
	printf(",\"n\":%u,\"status\":\"%s\",\"error\":", j->done, probe_status_names[res->status]);
	probe_json_str(res->error);
	printf(",\"implicit\":%s,\"secure\":%s,\"ms\":%ld,\"hosts\":[",
	       res->implicit ? "true" : "false", res->secure ? "true" : "false", ms);
	for (size_t i = 0; i < res->nhosts; i++) {
		const struct dns_host *h = &res->hosts[i];

		fputs(i > 0 ? ",{\"name\":" : "{\"name\":", stdout);
		probe_json_str(h->name);
		printf(",\"pref\":%u,\"addrs\":[", h->preference);
		for (size_t k = 0; k < h->naddrs; k++) {
			if (k > 0)
				putchar(',');
			probe_addr_print(&h->addrs[k]);
		}
		fputs("]}", stdout);
	}
	fputs("]}\n", stdout);
	fflush(stdout);
}

static void probe_cb(const struct dns_mx_result *res, void *arg);
static void probe_raw_cb(const struct dns_raw_result *res, void *arg);

static void probe_job_start(struct probe_job *j)
{
	struct probe *p = j->p;

	clock_gettime(CLOCK_MONOTONIC, &j->start);
	p->in_call = true;
	if (p->mode == PROBE_HOST) {
		j->q = dns_resolve_host(p->dns, j->name, probe_cb, j);
	} else if (p->mode == PROBE_PTR) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		if (inet_pton(AF_INET, j->name, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
			ss.ss_family = AF_INET;
		else if (inet_pton(AF_INET6, j->name, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
			ss.ss_family = AF_INET6;
		j->q = dns_resolve_ptr(p->dns, (const struct sockaddr *)&ss, probe_cb, j);
	} else if (p->mode == PROBE_TXT) {
		j->q = dns_resolve_raw(p->dns, j->name, DNS_RR_TXT, probe_raw_cb, j);
	} else
		j->q = dns_resolve_mx(p->dns, j->name, probe_cb, j);
	p->in_call = false;
}

static void probe_cb(const struct dns_mx_result *res, void *arg)
{
	struct probe_job *j = arg;
	struct probe *p = j->p;

	p->callbacks++;
	if (p->in_call)
		p->sync++;
	j->q = NULL;
	probe_result_print(j, res);
	if (p->mode == PROBE_FREECB) {
		dns_free(&p->dns);
		return;
	}
	if (++j->done < p->repeat)
		probe_job_start(j);
}

/* -m txt: {"name":..,"status":..,"error":..,"txt":["joined", ...]} */
static void probe_raw_cb(const struct dns_raw_result *res, void *arg)
{
	struct probe_job *j = arg;
	struct probe *p = j->p;
	char txt[4096];

	p->callbacks++;
	if (p->in_call)
		p->sync++;
	j->q = NULL;
	fputs("{\"name\":", stdout);
	probe_json_str(j->name);
	printf(",\"n\":%u,\"status\":\"%s\",\"error\":", j->done, probe_status_names[res->status]);
	probe_json_str(res->error);
	fputs(",\"txt\":[", stdout);
	for (size_t i = 0; i < res->n; i++) {
		if (i > 0)
			putchar(',');
		if (dns_txt_join(res->rdata[i], res->len[i], txt, sizeof(txt)) < 0)
			fputs("null", stdout);
		else
			probe_json_str(txt);
	}
	fputs("]}\n", stdout);
	fflush(stdout);
	if (++j->done < p->repeat)
		probe_job_start(j);
}

static void probe_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct probe *p = arg;

	(void)fd;
	(void)what;
	dns_free(&p->dns);
}

static void probe_usage(void)
{
	fputs("usage: dns_probe [-f FWD]... [-a TA_FILE] [-4] [-T TIMEOUT_MS] [-r REPEAT]\n"
	      "                 [-m mx|host|cancel|free|freecb|ptr|txt] NAME...\n",
	      stderr);
	exit(2);
}

static uint64_t probe_num(const char *s, uint64_t max)
{
	uint64_t v;

	if (str_parse_u64(s, strlen(s), 1, max, &v) < 0)
		probe_usage();
	return v;
}

static enum probe_mode probe_mode_parse(const char *s)
{
	static const char *const names[] = {"mx", "host", "cancel", "free", "freecb", "ptr", "txt"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0)
			return (enum probe_mode)i;
	}
	probe_usage();
	return PROBE_MX;
}

int main(int argc, char **argv)
{
	const char *fwd[16];
	struct dns_conf conf = {.forwarders = fwd, .ipv6 = true};
	struct probe p = {.repeat = 1};
	struct probe_job *jobs;
	struct event *ev = NULL;
	struct timeval tv = {0, 500000};
	char err[256];
	int opt, nnames;

	log_init(getenv("DNS_PROBE_DEBUG") != NULL ? LOG_LVL_DEBUG : LOG_LVL_WARN, "dns_probe");
	while ((opt = getopt(argc, argv, "f:a:4T:r:m:")) != -1) {
		switch (opt) {
		case 'f':
			if (conf.n_forwarders >= sizeof(fwd) / sizeof(fwd[0]))
				probe_usage();
			fwd[conf.n_forwarders++] = optarg;
			break;
		case 'a':
			conf.trust_anchor_file = optarg;
			break;
		case '4':
			conf.ipv6 = false;
			break;
		case 'T':
			conf.timeout_ms = (unsigned)probe_num(optarg, 3600000);
			break;
		case 'r':
			p.repeat = (unsigned)probe_num(optarg, 100000);
			break;
		case 'm':
			p.mode = probe_mode_parse(optarg);
			break;
		default:
			probe_usage();
		}
	}
	nnames = argc - optind;
	if (nnames <= 0)
		probe_usage();
	p.base = event_base_new();
	if (p.base == NULL || dns_create(p.base, &conf, &p.dns, err, sizeof(err)) < 0) {
		fprintf(stderr, "dns_probe: %s\n", p.base == NULL ? "event_base_new" : err);
		return 1;
	}
	jobs = xcalloc((size_t)nnames, sizeof(*jobs));
	for (int i = 0; i < nnames; i++) {
		jobs[i].p = &p;
		jobs[i].name = argv[optind + i];
		probe_job_start(&jobs[i]);
	}
	if (p.mode == PROBE_CANCEL) {
		for (int i = 0; i < nnames; i++)
			dns_cancel(jobs[i].q);
		/* Keep the loop alive a while: a late callback would show. */
		ev = evtimer_new(p.base, probe_free_cb, &p);
		evtimer_add(ev, &tv);
	} else if (p.mode == PROBE_FREE) {
		ev = evtimer_new(p.base, probe_free_cb, &p);
		tv.tv_usec = 50000;
		evtimer_add(ev, &tv);
	}
	event_base_dispatch(p.base);
	printf("{\"event\":\"done\",\"callbacks\":%u,\"sync\":%u}\n", p.callbacks, p.sync);
	dns_free(&p.dns);
	if (ev != NULL)
		event_free(ev);
	event_base_free(p.base);
	free(jobs);
	return 0;
}
