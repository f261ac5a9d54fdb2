/* spf_cmd.c — `hikyaku spf check [-c FILE] IP SENDER [HELO]`.
 *
 * Runs in the `hikyaku` command-line process as the operator. Checks the
 * MAIL FROM identity (postmaster@HELO when SENDER is "" or "<>"), then, when
 * HELO is given, the HELO identity (RFC 7208 §2.3), and prints each step of
 * the evaluation, the result with its reason and explanation, and the
 * Received-SPF field smtpd would add. DNS goes to the system resolver
 * (/etc/resolv.conf), or with -c to the configuration's dns.forwarders and
 * trust anchor and dns.timeout (per lookup); %{r} is the configuration's
 * hostname (else the system's).
 * Hostile: everything DNS returns; it is printed with control and non-ASCII
 * octets replaced by '?' so that a record cannot drive the terminal. */
#include "dauth/spf_cmd.h"

#include "conf/conf.h"
#include "dauth/spf.h"
#include "dns/dns.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct spf_cmd_run {
	struct spf_request req;
	bool done;
	const char *receiver;
};

static void spf_cmd_print_clean(const char *prefix, const char *s)
{
	fputs(prefix, stdout);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		putchar(c >= 0x20 && c < 0x7f ? c : '?');
	}
	putchar('\n');
}

static void spf_cmd_trace(const char *line, void *arg)
{
	(void)arg;
	spf_cmd_print_clean("  ", line);
}

static void spf_cmd_done(const struct spf_outcome *o, void *arg)
{
	struct spf_cmd_run *run = arg;
	char hdr[2048];
	printf("%s: %s\n", o->identity, spf_result_name(o->result));
	spf_cmd_print_clean("  identity: ", o->sender);
	spf_cmd_print_clean("  reason: ", o->reason);
	if (o->explanation[0] != '\0')
		spf_cmd_print_clean("  explanation: ", o->explanation);
	printf("  lookups: %u (void: %u)\n", o->lookups, o->void_lookups);
	if (spf_received_header(o, &run->req, run->receiver, hdr, sizeof(hdr)) > 0) {
		/* already quoted safely; show the folds as they are sent */
		for (char *p = hdr; *p != '\0'; p++)
			if (*p != '\r')
				putchar(*p);
	}
	run->done = true;
}

static int spf_cmd_usage(void)
{
	fputs("usage: hikyaku spf check [-c FILE] IP SENDER [HELO]\n"
	      "SENDER \"\" or \"<>\" is the null sender (then postmaster@HELO is checked)\n",
	      stderr);
	return 2;
}

static int spf_cmd_addr(const char *s, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, s, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

static void spf_cmd_one(struct event_base *base, const struct spf_resolver *res,
                        struct spf_cmd_run *run)
{
	printf("check %s identity\n", run->req.identity == SPF_ID_HELO ? "HELO" : "MAIL FROM");
	run->done = false;
	spf_check(res, base, &run->req, spf_cmd_done, run);
	while (!run->done)
		event_base_loop(base, EVLOOP_ONCE);
}

static int spf_cmd_check(const char *conf_path, const char *ip, const char *sender,
                         const char *helo)
{
	struct sockaddr_storage ss;
	if (spf_cmd_addr(ip, &ss) < 0) {
		fprintf(stderr, "hikyaku spf: %s is not an IP address\n", ip);
		return 2;
	}
	if (strcmp(sender, "<>") == 0)
		sender = "";
	struct conf *conf = NULL;
	char err[1024];
	if (conf_path != NULL && conf_load(conf_path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 1;
	}
	char host[256] = "unknown";
	if (conf != NULL)
		snprintf(host, sizeof(host), "%s", conf->hostname);
	else if (gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "unknown");
	struct dns_conf dc = {.ipv6 = true};
	if (conf != NULL) {
		dc.forwarders = (const char *const *)conf->dns.forwarders;
		dc.n_forwarders = conf->dns.n_forwarders;
		dc.trust_anchor_file = conf->dns.trust_anchor;
		/* each lookup; the check as a whole has SPF_TIMEOUT_DEFAULT_MS */
		dc.timeout_ms = (unsigned)conf->dns.timeout;
	}
	struct event_base *base = event_base_new();
	struct dns *dns = NULL;
	int rc = 1;
	if (base == NULL || dns_create(base, &dc, &dns, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku spf: resolver: %s\n",
		        base == NULL ? "no event base" : err);
		goto out;
	}
	struct spf_resolver res;
	spf_resolver_dns(&res, dns);
	struct spf_cmd_run run = {
	    .req = {.client = (struct sockaddr *)&ss,
	            .sender = sender,
	            .helo = helo,
	            .hostname = host,
	            .identity = SPF_ID_MAILFROM,
	            .trace = spf_cmd_trace},
	    .receiver = host,
	};
	spf_cmd_one(base, &res, &run);
	if (helo[0] != '\0') {
		run.req.identity = SPF_ID_HELO;
		spf_cmd_one(base, &res, &run);
	}
	rc = 0;
out:
	dns_free(&dns);
	if (base != NULL)
		event_base_free(base);
	conf_free(&conf);
	return rc;
}

int spf_command(int argc, char **argv)
{
	const char *conf_path = NULL;
	const char *pos[4];
	int npos = 0;
	if (argc < 2 || strcmp(argv[1], "check") != 0)
		return spf_cmd_usage();
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			conf_path = argv[++i];
		else if (npos < 4)
			pos[npos++] = argv[i];
		else
			return spf_cmd_usage();
	}
	if (npos < 2 || npos > 3)
		return spf_cmd_usage();
	return spf_cmd_check(conf_path, pos[0], pos[1], npos == 3 ? pos[2] : "");
}
