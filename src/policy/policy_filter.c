/* policy_filter.c — smtpd's access and protocol checks:
 *   access_connect  the client's network in the access lists (access.allow,
 *                   access.deny, access.file; longest prefix wins): a denied
 *                   client is refused with 554 5.7.1 instead of the greeting
 *                   (access.reject_at: connect), an allowed one is marked
 *                   so that the DNS lists, greylisting and the rate limits
 *                   skip it.
 *   access_rcpt     the same refusal at each RCPT (access.reject_at: rcpt).
 *   helo_syntax     the EHLO/HELO name is a domain or an address literal
 *                   (filter.helo_syntax).
 *   sender_domain   the MAIL FROM domain resolves (filter.sender_domain).
 * Runs in smtpd on the event loop, except policy_access_load, which reads
 * the access file as root before the sandbox (and in the master, which
 * checks it before a start or a reload). The client's address, names and
 * DNS answers are hostile. */
#include "policy/policy_smtp.h"
#include "conf/conf.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/rstate.h"
#include "mail/idna.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define POLICY_ACCESS_FILE_MAX (16 * 1024 * 1024)
/* The sender domain's lookup; past it 450 4.1.8 (the resolver bounds it). */
#define POLICY_SENDER_DOMAIN_TIMEOUT_MS 10000

static int access_add_conf(struct cidr_list *l, char **nets, size_t n, bool allow, char *err,
                           size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		struct cidr_net net;
		const char *error = NULL;
		if (cidr_parse(nets[i], strlen(nets[i]), &net, &error) < 0 ||
		    cidr_list_add(l, &net, allow, NULL) < 0) {
			snprintf(err, errlen, "access.%s: \"%s\": %s", allow ? "allow" : "deny",
			         nets[i], error != NULL ? error : "too many entries");
			return -1;
		}
	}
	return 0;
}

static int access_read_file(const char *path, struct buf *text, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "access.file: %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > POLICY_ACCESS_FILE_MAX) {
		snprintf(err, errlen, "access.file: %s: not a regular file of at most 16M", path);
		close(fd);
		return -1;
	}
	char chunk[8192];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof(chunk))) > 0) {
		if (buf_append(text, chunk, (size_t)r) < 0) {
			snprintf(err, errlen, "access.file: %s: too large", path);
			close(fd);
			return -1;
		}
	}
	close(fd);
	if (r < 0) {
		snprintf(err, errlen, "access.file: %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int policy_access_load(const struct conf *conf, struct cidr_list *l, char *err, size_t errlen)
{
	*l = (struct cidr_list){0};
	if (access_add_conf(l, conf->access.allow, conf->access.n_allow, true, err, errlen) < 0 ||
	    access_add_conf(l, conf->access.deny, conf->access.n_deny, false, err, errlen) < 0)
		goto fail;
	if (conf->access.file[0] != '\0') {
		struct buf text;
		char msg[256];
		buf_init(&text, POLICY_ACCESS_FILE_MAX);
		int rc = access_read_file(conf->access.file, &text, err, errlen);
		if (rc == 0 && cidr_list_parse_access(l, (const char *)text.data, text.len, msg,
		                                      sizeof(msg)) < 0) {
			snprintf(err, errlen, "access.file: %s: %s", conf->access.file, msg);
			rc = -1;
		}
		buf_free(&text);
		if (rc < 0)
			goto fail;
	}
	return 0;
fail:
	cidr_list_clear(l);
	return -1;
}

void policy_smtp_set_access(struct policy_smtp *ps, struct cidr_list *l)
{
	cidr_list_clear(&ps->access);
	ps->access = *l;
	*l = (struct cidr_list){0};
}

const struct cidr_entry *policy_smtp_access(const struct policy_smtp *ps, const struct sockaddr *sa)
{
	return cidr_list_lookup(&ps->access, sa);
}

void policy_smtp_set_redis(struct policy_smtp *ps, struct rstate *rs)
{
	rstate_free(&ps->redis);
	ps->redis = rs;
}

void policy_smtp_set_shared(struct policy_smtp *ps, struct shmrate *rates, struct greytab *grey)
{
	ps->rates = rates;
	ps->grey = grey;
}

size_t policy_client_net_key(const struct sockaddr_storage *ss, unsigned prefix4,
                             unsigned char key[17])
{
	int family;
	unsigned char addr[16];
	memset(key, 0, 17);
	if (!cidr_sockaddr((const struct sockaddr *)ss, &family, addr))
		return 1;
	if (family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, addr, 4);
		if (prefix4 <= 24)
			key[4] = 0;
		return 5;
	}
	/* RFC 4291 §2.5.4: a /64 is one network, often one customer */
	key[0] = 6;
	memcpy(key + 1, addr, 8);
	return 9;
}

static void access_connect_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	struct policy_client *c = req->client;
	const struct cidr_entry *e = cidr_list_lookup(&ps->access, (const struct sockaddr *)&c->ss);
	if (e == NULL) {
		policy_job_dunno(job);
		return;
	}
	c->access = e->allow ? POLICY_ACCESS_ALLOW : POLICY_ACCESS_DENY;
	snprintf(c->access_reason, sizeof(c->access_reason), "%s",
	         e->reason != NULL ? e->reason : "Access denied");
	log_info("event=access sid=%s client=%s list=%s", c->sid, c->addr,
	         e->allow ? "allow" : "deny");
	if (c->access == POLICY_ACCESS_DENY && ps->conf->access.reject_at == CONF_REJECT_CONNECT) {
		policy_job_reply(job, 554, "5.7.1", "Client host [%s] rejected: %s", c->addr,
		                 c->access_reason);
		return;
	}
	policy_job_dunno(job);
}

const struct policy_check policy_check_access_connect = {
    .name = "access",
    .stage = POLICY_CONNECT,
    .start = access_connect_start,
};

static void access_rcpt_start(struct policy_job *job)
{
	struct policy_smtp_req *req = policy_job_request(job);
	const struct policy_client *c = req->client;
	if (c->access != POLICY_ACCESS_DENY) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 554, "5.7.1", "Client host [%s] rejected: %s", c->addr,
	                 c->access_reason);
}

const struct policy_check policy_check_access_rcpt = {
    .name = "access",
    .stage = POLICY_RCPT,
    .start = access_rcpt_start,
};

/* RFC 5321 §4.1.2 Domain: dot-separated labels of letters, digits and
 * hyphens (not at a label's ends), 1-63 octets each; or §4.1.3 address
 * literals. A trailing dot is tolerated, as Postfix does. */
static bool helo_name_valid(const char *s)
{
	size_t len = strlen(s);
	unsigned char buf[sizeof(struct in6_addr)];
	char lit[64];
	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		if (len - 2 >= sizeof(lit))
			return false;
		memcpy(lit, s + 1, len - 2);
		lit[len - 2] = '\0';
		if (strncasecmp(lit, "IPv6:", 5) == 0)
			return inet_pton(AF_INET6, lit + 5, buf) == 1;
		return inet_pton(AF_INET, lit, buf) == 1;
	}
	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	size_t label = 0;
	bool all_digits = true;
	for (size_t i = 0; i <= len; i++) {
		char ch = i < len ? s[i] : '.';
		if (ch == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		          (ch >= '0' && ch <= '9') || ch == '-';
		if (!ok || (label == 0 && ch == '-'))
			return false;
		if (ch < '0' || ch > '9')
			all_digits = all_digits && ch == '.';
		label++;
	}
	/* "192.0.2.1" without brackets is an address, not a name */
	return !all_digits;
}

static void helo_syntax_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	if (!ps->conf->filter.helo_syntax || req->client->local || helo_name_valid(req->helo)) {
		policy_job_dunno(job);
		return;
	}
	policy_job_reply(job, 501, "5.5.2", "<%.255s>: Helo command rejected: Invalid name",
	                 req->helo);
}

const struct policy_check policy_check_helo_syntax = {
    .name = "helo_syntax",
    .stage = POLICY_HELO,
    .start = helo_syntax_start,
};

struct sender_domain_state {
	struct policy_job *job;
	struct dns_query *q;
	char domain[MAIL_IDNA_MAX + 1];
};

static void sender_domain_on_mx(const struct dns_mx_result *res, void *arg)
{
	struct sender_domain_state *st = arg;
	struct policy_job *job = st->job;
	char domain[sizeof(st->domain)];
	snprintf(domain, sizeof(domain), "%s", st->domain);
	policy_job_set_state(job, NULL);
	free(st);
	switch (res->status) {
	case DNS_OK:
		policy_job_dunno(job);
		break;
	case DNS_NULL_MX:
		/* RFC 7505 §4.2: a domain that sends no mail */
		policy_job_reply(job, 550, "5.7.27",
		                 "Sender address rejected: Domain %s does not accept mail", domain);
		break;
	case DNS_NXDOMAIN:
	case DNS_NO_ADDRESS:
		/* RFC 3463 X.1.8: bad sender's system address */
		policy_job_reply(job, 550, "5.1.8", "Sender address rejected: Domain %s not found",
		                 domain);
		break;
	case DNS_TEMPFAIL:
	default:
		policy_job_reply(job, 450, "4.1.8",
		                 "Sender address rejected: Domain %s not found (temporary)",
		                 domain);
		break;
	}
}

static void sender_domain_start(struct policy_job *job)
{
	struct policy_smtp *ps = policy_job_ctx(job);
	struct policy_smtp_req *req = policy_job_request(job);
	const char *at = req->sender != NULL ? strrchr(req->sender, '@') : NULL;
	const char *error = NULL;
	if (!ps->conf->filter.sender_domain || req->client->auth_user != NULL ||
	    req->client->local || at == NULL || at[1] == '[') {
		policy_job_dunno(job);
		return;
	}
	struct sender_domain_state *st = xcalloc(1, sizeof(*st));
	st->job = job;
	if (mail_domain_to_ascii(at + 1, strlen(at + 1), st->domain, sizeof(st->domain), &error) <
	    0) {
		free(st);
		policy_job_reply(job, 550, "5.1.8", "Sender address rejected: Invalid domain");
		return;
	}
	struct dns *dns = policy_smtp_dns(ps);
	if (dns == NULL) {
		free(st);
		policy_job_reply(job, 450, "4.1.8", "Sender address rejected: cannot check domain");
		return;
	}
	policy_job_set_timeout(job, POLICY_SENDER_DOMAIN_TIMEOUT_MS, POLICY_FAIL_TEMPFAIL);
	policy_job_set_tempfail(job, 450, "4.1.8",
	                        "Sender address rejected: Domain %s not found (timeout)",
	                        st->domain);
	policy_job_set_state(job, st);
	st->q = dns_resolve_mx(dns, st->domain, sender_domain_on_mx, st);
}

static void sender_domain_cancel(struct policy_job *job, enum policy_cancel why)
{
	(void)why;
	struct sender_domain_state *st = policy_job_state(job);
	if (st == NULL)
		return;
	dns_cancel(st->q);
	free(st);
}

const struct policy_check policy_check_sender_domain = {
    .name = "sender_domain",
    .stage = POLICY_MAIL,
    .start = sender_domain_start,
    .cancel = sender_domain_cancel,
};
