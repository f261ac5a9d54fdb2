/* qmgr_remote.c — remote delivery for the queue manager: recipients grouped
 * by destination (MX domain, smarthost, LMTP server), per-destination and
 * total concurrency limits, destination back-off after repeated connection
 * failures, DNS (dns/dns.c) and the SMTP/LMTP client (smtpc/client.c).
 * Runs on the main loop and never blocks: route credentials come from
 * memory (conf/credentials.c, read by the master). DNS answers and SMTP
 * replies are hostile; both modules bound them. */
#include "queue/qmgr_int.h"
#include "queue/analytics.h"
#include "conf/conf.h"
#include "conf/credentials.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/net.h"
#include "lib/strutil.h"
#include "mail/idna.h"
#include "queue/spool.h"
#include "sched/sched.h"
#include "smtpc/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#define QMGR_DEST_KEY_MAX 300
#define QMGR_MAX_TARGETS 32
#define QMGR_DEST_BUCKETS 509

struct qmgr_dest {
	char key[QMGR_DEST_KEY_MAX];
	size_t active;
	unsigned failures;         /* consecutive attempts that reached no server */
	uint64_t backoff_until_us; /* deliver nothing here before this */
	struct qmgr_dest *next;
};


struct qmgr_group {
	struct qmgr *q;
	struct qmgr_msg *m;
	const struct conf_route *route;
	char key[QMGR_DEST_KEY_MAX];
	char domain[256];
	struct qmgr_dest *dest;
	size_t *idx; /* recipient indexes in m->env */
	size_t n;
	const char **rcpts;
	unsigned *notify;
	const char **orcpts;
	struct smtpc_target targets[QMGR_MAX_TARGETS];
	struct smtpc_dest sdest;
	struct smtpc_msg smsg;
	char unix_path[108];
	char helo[256];
	struct dns_query *dq;
	bool running; /* holds a destination slot */
	uint64_t start_us; /* it ran: the delivery line's delays (qmgr_log_result) */
	uint64_t mail_us;  /* MAIL was sent (smtpc_result.mail_us) */
	struct qmgr_group *next_wait;
	struct qmgr_group *all_next; /* q->groups */
	struct qmgr_group *all_prev;
};


static size_t qmgr_dest_hash(const char *key)
{
	uint64_t h = 1469598103934665603ULL;
	for (const char *p = key; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	return (size_t)(h % QMGR_DEST_BUCKETS);
}

static struct qmgr_dest *qmgr_dest_get(struct qmgr *q, const char *key)
{
	if (q->dests == NULL)
		q->dests = xcalloc(QMGR_DEST_BUCKETS, sizeof(*q->dests));
	struct qmgr_dest **pp = &q->dests[qmgr_dest_hash(key)];
	for (; *pp != NULL; pp = &(*pp)->next) {
		if (strcmp((*pp)->key, key) == 0)
			return *pp;
	}
	*pp = xcalloc(1, sizeof(**pp));
	snprintf((*pp)->key, sizeof((*pp)->key), "%s", key);
	return *pp;
}

static void qmgr_group_free(struct qmgr_group *g)
{
	if (g->all_prev != NULL)
		g->all_prev->all_next = g->all_next;
	else
		g->q->groups = g->all_next;
	if (g->all_next != NULL)
		g->all_next->all_prev = g->all_prev;
	free(g->idx);
	free(g->rcpts);
	free(g->notify);
	free(g->orcpts);
	free(g);
}

static void qmgr_pump(struct qmgr *q);

/* Every recipient of g without a result gets this one. */
static void qmgr_group_fail(struct qmgr_group *g, bool permanent, const char *status,
			    const char *diag)
{
	for (size_t k = 0; k < g->n; k++) {
		struct qmgr_rres *r = &g->m->res[g->idx[k]];
		if (r->state == QMGR_R_PENDING)
			qmgr_rres_set(r, permanent ? QMGR_R_FAILED : QMGR_R_DEFERRED, status, diag,
				      g->key);
	}
}

uint64_t qmgr_remote_oldest(const struct qmgr *q)
{
	uint64_t oldest = 0;
	for (const struct qmgr_group *g = q->groups; g != NULL; g = g->all_next)
		if (oldest == 0 || g->m->env.arrival_us < oldest)
			oldest = g->m->env.arrival_us;
	return oldest;
}

static void qmgr_group_finish(struct qmgr_group *g)
{
	struct qmgr *q = g->q;
	struct qmgr_msg *m = g->m;
	static const enum metric_transport tr[] = {
	    [CONF_TRANSPORT_LOCAL] = METRIC_TR_LOCAL, [CONF_TRANSPORT_MX] = METRIC_TR_SMTP,
	    [CONF_TRANSPORT_RELAY] = METRIC_TR_RELAY, [CONF_TRANSPORT_LMTP] = METRIC_TR_LMTP};
	uint64_t now = sched_now_us();
	for (size_t k = 0; k < g->n; k++) {
		struct qmgr_rres *r = &m->res[g->idx[k]];
		r->transport = tr[g->route->transport];
		if (g->start_us == 0)
			continue;
		uint64_t mail = g->mail_us >= g->start_us && g->mail_us <= now ? g->mail_us : 0;
		r->start_us = g->start_us;
		r->conn_us = (mail != 0 ? mail : now) - g->start_us;
		r->xfer_us = mail != 0 ? now - mail : 0;
	}
	if (g->running) {
		g->dest->active--;
		q->remote_active--;
	}
	qmgr_group_free(g);
	if (--m->groups_left == 0)
		qmgr_groups_done(m);
	qmgr_pump(q);
}

/* What an accepted recipient means for its NOTIFY=SUCCESS notice (RFC 3461
 * §5.2): LMTP is final delivery into the mailbox (RFC 2033), whatever its
 * LHLO offered; SMTP is a relay, whose next hop takes over the report only
 * if it offered DSN (then our NOTIFY and ORCPT went with the message). */
static enum qmgr_sent qmgr_sent_how(const struct qmgr_group *g, const struct smtpc_result *res)
{
	if (g->sdest.lmtp)
		return QMGR_SENT_DELIVERED;
	return res->dsn_offered ? QMGR_SENT_DSN_PASSED : QMGR_SENT_RELAYED;
}

/* For the delivery log line: the connection that carried (or failed) it. */
static void qmgr_rres_tls(struct qmgr_rres *r, const struct smtpc_result *res)
{
	snprintf(r->tls, sizeof(r->tls), "%s", res->tls_info[0] != '\0' ? res->tls_info : "none");
}

static void qmgr_on_smtpc(const struct smtpc_result *res, void *arg)
{
	struct qmgr_group *g = arg;
	char relay[300], diag[512];
	g->mail_us = res->mail_us;
	if (res->remote_addr[0] != '\0')
		snprintf(relay, sizeof(relay), "%.200s[%.63s]", res->remote_mta, res->remote_addr);
	else
		snprintf(relay, sizeof(relay), "%s", g->key);
	if (!res->connected) {
		/* RFC 5321 §4.5.4.1: do not hammer a dead destination. */
		g->dest->failures++;
		if (g->dest->failures >= 2) {
			uint64_t ms = sched_dest_backoff_ms(g->q->conf, g->dest->failures);
			g->dest->backoff_until_us = sched_now_us() + ms * 1000;
			log_info("event=destination_backoff dest=%s failures=%u for=%llums", g->key,
				 g->dest->failures, (unsigned long long)ms);
		}
	} else {
		g->dest->failures = 0;
		g->dest->backoff_until_us = 0;
		analytics_tls(g->q->an, res->tls_info); /* one per transaction */
	}
	for (size_t k = 0; k < g->n; k++) {
		struct qmgr_rres *r = &g->m->res[g->idx[k]];
		const struct smtpc_rcpt_result *rr = k < res->nrcpts ? &res->rcpts[k] : NULL;
		if (rr != NULL && rr->code != 0) {
			snprintf(diag, sizeof(diag), "%d %s%s%.450s", rr->code, rr->enh,
				 rr->enh[0] ? " " : "", rr->text);
			const char *st = rr->enh[0] ? rr->enh
					 : rr->ok  ? "2.0.0"
					 : rr->permanent ? "5.0.0"
							 : "4.0.0";
			qmgr_rres_set(r, rr->ok ? QMGR_R_SENT
					: rr->permanent ? QMGR_R_FAILED
							: QMGR_R_DEFERRED,
				      st, diag, relay);
			if (rr->ok)
				r->sent = qmgr_sent_how(g, res);
			qmgr_rres_tls(r, res);
			continue;
		}
		if (res->code != 0)
			snprintf(diag, sizeof(diag), "%d %s%s%.450s", res->code, res->enh,
				 res->enh[0] ? " " : "", res->text);
		else
			snprintf(diag, sizeof(diag), "%s", res->text);
		const char *st = res->enh[0] ? res->enh : res->permanent ? "5.0.0" : "4.4.1";
		qmgr_rres_set(r, res->permanent ? QMGR_R_FAILED : QMGR_R_DEFERRED, st, diag, relay);
		if (res->connected)
			qmgr_rres_tls(r, res);
	}
	qmgr_group_finish(g);
}

static void qmgr_group_send(struct qmgr_group *g, size_t ntargets)
{
	struct qmgr *q = g->q;
	const struct conf *conf = q->conf;
	const struct conf_route *route = g->route;
	struct envelope *e = &g->m->env;
	static const enum smtpc_tls pol[] = {SMTPC_TLS_NONE, SMTPC_TLS_MAY, SMTPC_TLS_ENCRYPT,
					     SMTPC_TLS_VERIFY};
	g->sdest.targets = g->targets;
	g->sdest.ntargets = ntargets;
	g->sdest.unix_path = g->unix_path[0] != '\0' ? g->unix_path : NULL;
	g->sdest.lmtp = route->transport == CONF_TRANSPORT_LMTP;
	g->sdest.tls = pol[route->tls];
	snprintf(g->helo, sizeof(g->helo), "%s",
		 conf->delivery.helo_name[0] != '\0' ? conf->delivery.helo_name : conf->hostname);
	g->sdest.helo_name = g->helo;
	g->sdest.connect_timeout_ms = conf->delivery.connect_timeout;
	g->sdest.command_timeout_ms = conf->delivery.command_timeout;
	g->sdest.data_timeout_ms = conf->delivery.data_timeout;
	g->sdest.reuse_key = g->key;
	if (route->credentials != NULL && route->credentials[0] != '\0') {
		/* read by the master before the privilege drop (and on SIGHUP) */
		const char *user, *pass;
		if (!credentials_get(q->creds, route->credentials, &user, &pass)) {
			qmgr_group_fail(g, false, "4.7.0", "relay credentials unavailable");
			qmgr_group_finish(g);
			return;
		}
		g->sdest.auth_user = user;
		g->sdest.auth_pass = pass;
	}
	g->smsg.sender = e->sender;
	g->smsg.rcpts = g->rcpts;
	g->smsg.notify = g->notify;
	g->smsg.orcpts = g->orcpts;
	g->smsg.nrcpts = g->n;
	g->smsg.envid = e->envid;
	g->smsg.ret = e->ret;
	g->smsg.body = e->body;
	g->smsg.smtputf8 = e->smtputf8;
	/* the content stays in the spool file: smtpc reads it in windows on
	 * the spool reader threads (qmgr_create) */
	g->smsg.data = NULL;
	g->smsg.fd = g->m->fd;
	g->smsg.fd_off = e->content_off;
	g->smsg.len = (size_t)e->size;
	smtpc_deliver(q->smtpc, &g->sdest, &g->smsg, qmgr_on_smtpc, g);
}

static void qmgr_on_dns(const struct dns_mx_result *res, void *arg)
{
	struct qmgr_group *g = arg;
	g->dq = NULL;
	char diag[400];
	switch (res->status) {
	case DNS_NULL_MX:
		/* RFC 7505 §3: the domain does not accept mail. */
		qmgr_group_fail(g, true, "5.1.10", "domain publishes a null MX: it accepts no mail");
		qmgr_group_finish(g);
		return;
	case DNS_NXDOMAIN:
		snprintf(diag, sizeof(diag), "domain %s does not exist", g->domain);
		qmgr_group_fail(g, true, "5.1.2", diag);
		qmgr_group_finish(g);
		return;
	case DNS_NO_ADDRESS:
		snprintf(diag, sizeof(diag), "no address for the mail servers of %s", g->domain);
		qmgr_group_fail(g, true, "5.4.4", diag);
		qmgr_group_finish(g);
		return;
	case DNS_TEMPFAIL:
		snprintf(diag, sizeof(diag), "DNS lookup failed: %s",
			 res->error != NULL ? res->error : "temporary failure");
		qmgr_group_fail(g, false, "4.4.3", diag);
		qmgr_group_finish(g);
		return;
	case DNS_OK:
		break;
	}
	uint64_t mx_port = g->route->port != 0 ? g->route->port : g->q->conf->delivery.smtp_port;
	in_port_t port = htons((uint16_t)mx_port);
	if (g->route->transport != CONF_TRANSPORT_MX)
		port = ((struct sockaddr_in *)&g->targets[0].addr)->sin_port; /* parsed earlier */
	size_t n = 0;
	for (size_t h = 0; h < res->nhosts && n < QMGR_MAX_TARGETS; h++) {
		for (size_t a = 0; a < res->hosts[h].naddrs && n < QMGR_MAX_TARGETS; a++) {
			struct smtpc_target *t = &g->targets[n++];
			memcpy(&t->addr, &res->hosts[h].addrs[a], sizeof(t->addr));
			t->addrlen = res->hosts[h].addrlens[a];
			if (t->addr.ss_family == AF_INET)
				((struct sockaddr_in *)&t->addr)->sin_port = port;
			else
				((struct sockaddr_in6 *)&t->addr)->sin6_port = port;
			snprintf(t->host, sizeof(t->host), "%s", res->hosts[h].name);
		}
	}
	qmgr_group_send(g, n);
}

/* "host:port", "[v6]:port" or "unix:/path" of a relay/LMTP route. Numeric
 * hosts become targets at once; names are looked up. 1: ready, 0: DNS
 * started, -1: bad address. */
static int qmgr_group_address(struct qmgr_group *g)
{
	const char *addr = g->route->address;
	if (strncmp(addr, "unix:", 5) == 0) {
		if (strlen(addr + 5) >= sizeof(g->unix_path))
			return -1;
		snprintf(g->unix_path, sizeof(g->unix_path), "%s", addr + 5);
		return 1;
	}
	struct smtpc_target *t = &g->targets[0];
	int r = smtpc_target_parse(addr, t);
	if (r != 0)
		return r;
	g->dq = dns_resolve_host(g->q->dns, t->host, qmgr_on_dns, g);
	return 0;
}

static bool qmgr_group_can_start(const struct qmgr_group *g)
{
	const struct conf_delivery *d = &g->q->conf->delivery;
	return g->dest->active < d->destination_concurrency &&
	       g->q->remote_active < d->total_concurrency;
}

static void qmgr_group_start(struct qmgr_group *g)
{
	struct qmgr *q = g->q;
	g->running = true;
	g->start_us = sched_now_us();
	g->dest->active++;
	q->remote_active++;
	if (q->dns == NULL || q->smtpc == NULL) {
		qmgr_group_fail(g, false, "4.3.0", "outbound delivery unavailable (see start-up log)");
		qmgr_group_finish(g);
		return;
	}
	if (g->route->transport == CONF_TRANSPORT_MX) {
		g->dq = dns_resolve_mx(q->dns, g->domain, qmgr_on_dns, g);
		return;
	}
	int r = qmgr_group_address(g);
	if (r < 0) {
		qmgr_group_fail(g, false, "4.3.5", "bad route address in the configuration");
		qmgr_group_finish(g);
	} else if (r == 1) {
		qmgr_group_send(g, g->unix_path[0] != '\0' ? 0 : 1);
	}
}

/* Start waiting groups that now fit (a slot was freed). */
static void qmgr_pump(struct qmgr *q)
{
	struct qmgr_group **pp = &q->group_wait_head, *prev = NULL;
	while (*pp != NULL && !q->stopping) {
		struct qmgr_group *g = *pp;
		if (!qmgr_group_can_start(g)) {
			prev = g;
			pp = &g->next_wait;
			continue;
		}
		*pp = g->next_wait;
		if (q->group_wait_tail == g)
			q->group_wait_tail = prev;
		g->next_wait = NULL;
		qmgr_group_start(g);
		pp = &q->group_wait_head; /* the list may have changed: rescan */
		prev = NULL;
	}
}

static void qmgr_group_submit(struct qmgr_group *g)
{
	struct qmgr *q = g->q;
	/* After repeated failures, one attempt at a time probes the
	 * destination, also once the back-off has run out: the messages that
	 * come due together must not all take a slot again. */
	if (g->dest->backoff_until_us > sched_now_us() ||
	    (g->dest->failures >= 2 && g->dest->active > 0)) {
		qmgr_group_fail(g, false, "4.4.1",
				"destination backed off after repeated connection failures");
		qmgr_group_finish(g);
		return;
	}
	if (qmgr_group_can_start(g)) {
		qmgr_group_start(g);
		return;
	}
	if (q->group_wait_tail != NULL)
		q->group_wait_tail->next_wait = g;
	else
		q->group_wait_head = g;
	q->group_wait_tail = g;
}

static void qmgr_group_key(const struct conf_route *route, const char *domain, char *key,
			   size_t keylen)
{
	switch (route->transport) {
	case CONF_TRANSPORT_MX:
		snprintf(key, keylen, "mx:%s", domain);
		break;
	case CONF_TRANSPORT_RELAY:
		snprintf(key, keylen, "relay:%s", route->address);
		break;
	default:
		snprintf(key, keylen, "lmtp:%s", route->address);
		break;
	}
	str_lower(key); /* ASCII only: the C locale */
}

size_t qmgr_remote_start(struct qmgr *q, struct qmgr_msg *m)
{
	struct envelope *e = &m->env;
	struct qmgr_group **groups = xcalloc(e->nrcpts, sizeof(*groups));
	size_t ng = 0;
	for (size_t i = 0; i < e->nrcpts; i++) {
		if (e->rcpts[i].done || m->res[i].state != QMGR_R_PENDING)
			continue;
		const char *domain = qmgr_domain_of(e->rcpts[i].addr);
		const struct conf_route *route = conf_route_for(q->conf, domain);
		if (route->transport == CONF_TRANSPORT_LOCAL)
			continue;
		/* DNS knows a domain by its A-labels (RFC 5891 §5); one that
		 * has none stays as written and the lookup refuses it (5.1.2). */
		char ascii[MAIL_IDNA_MAX + 1];
		if (mail_domain_to_ascii(domain, strlen(domain), ascii, sizeof(ascii), NULL) == 0)
			domain = ascii;
		char key[QMGR_DEST_KEY_MAX];
		qmgr_group_key(route, domain, key, sizeof(key));
		struct qmgr_group *g = NULL;
		for (size_t k = 0; k < ng && g == NULL; k++)
			if (strcmp(groups[k]->key, key) == 0)
				g = groups[k];
		if (g == NULL) {
			g = xcalloc(1, sizeof(*g));
			g->q = q;
			g->all_next = q->groups;
			if (q->groups != NULL)
				q->groups->all_prev = g;
			q->groups = g;
			g->m = m;
			g->route = route;
			snprintf(g->key, sizeof(g->key), "%s", key);
			snprintf(g->domain, sizeof(g->domain), "%s", domain);
			g->idx = xcalloc(e->nrcpts, sizeof(*g->idx));
			g->rcpts = xcalloc(e->nrcpts, sizeof(*g->rcpts));
			g->notify = xcalloc(e->nrcpts, sizeof(*g->notify));
			g->orcpts = xcalloc(e->nrcpts, sizeof(*g->orcpts));
			groups[ng++] = g;
		}
		g->idx[g->n] = i;
		g->rcpts[g->n] = e->rcpts[i].addr;
		g->notify[g->n] = e->rcpts[i].notify;
		g->orcpts[g->n] = e->rcpts[i].orcpt;
		g->n++;
	}
	/* All groups are counted before any starts: one may finish at once. */
	m->groups_left = ng;
	for (size_t k = 0; k < ng; k++) {
		groups[k]->dest = qmgr_dest_get(q, groups[k]->key);
		qmgr_group_submit(groups[k]);
	}
	free(groups);
	return ng;
}

void qmgr_remote_free(struct qmgr *q)
{
	/* Called after dns_free and smtpc_free cancelled in-flight work
	 * without callbacks. Every group is dropped, and a message whose last
	 * group goes with it; the messages stay in the spool. */
	q->group_wait_head = q->group_wait_tail = NULL;
	while (q->groups != NULL) {
		struct qmgr_group *g = q->groups;
		struct qmgr_msg *m = g->m;
		qmgr_group_free(g);
		if (--m->groups_left == 0)
			qmgr_msg_drop(q, m);
	}
	for (size_t i = 0; q->dests != NULL && i < QMGR_DEST_BUCKETS; i++) {
		while (q->dests[i] != NULL) {
			struct qmgr_dest *d = q->dests[i];
			q->dests[i] = d->next;
			free(d);
		}
	}
	free(q->dests);
	q->dests = NULL;
}
