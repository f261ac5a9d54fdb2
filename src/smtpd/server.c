/* server.c — smtpd listeners and connection admission: total and per-client
 * connection limits (421 4.7.0), then a session per accepted socket.
 * Runs in smtpd on the event loop. The listening sockets are bound by the
 * master (smtpd_create) before privileges are dropped. */
#include "smtpd/smtpd.h"
#include "smtpd/session.h"
#include "auth/authfail.h"
#include "auth/sasl.h"
#include "conf/conf.h"
#include "conf/users.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/workq.h"
#include "queue/spool.h"
#include "tls/tls.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct smtpd_listener {
	struct smtpd *srv;
	const struct conf_listener *lconf;
	struct evconnlistener *lev;
	int fd;
	char name[NET_ADDRSTR_MAX + 8];
	struct event *resume;    /* re-enables lev after an accept error */
	uint64_t accept_errors;
};

/* Per-client-address connection count: a chained hash table whose entries
 * live only while the address has connections, so it is bounded by
 * limits.connections. */
struct smtpd_ipcount {
	unsigned char addr[16]; /* IPv4 as v4-mapped IPv6 */
	unsigned count;
	struct smtpd_ipcount *next;
};

static void server_ip_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	memset(key, 0, 16);
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &sin->sin_addr, 4);
	} else if (ss->ss_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	}
}

static size_t server_ip_hash(const struct smtpd *srv, const unsigned char key[16])
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	for (size_t i = 0; i < 16; i++)
		h = (h ^ key[i]) * 1099511628211ULL;
	return (size_t)(h % srv->ipcount_buckets);
}

static struct smtpd_ipcount **server_ip_find(struct smtpd *srv, const unsigned char key[16])
{
	struct smtpd_ipcount **pp = &srv->ipcount[server_ip_hash(srv, key)];
	while (*pp != NULL && memcmp((*pp)->addr, key, 16) != 0)
		pp = &(*pp)->next;
	return pp;
}

static unsigned server_ip_count(struct smtpd *srv, const struct sockaddr_storage *ss)
{
	unsigned char key[16];
	server_ip_key(ss, key);
	struct smtpd_ipcount **pp = server_ip_find(srv, key);
	return *pp != NULL ? (*pp)->count : 0;
}

static void server_ip_add(struct smtpd *srv, const struct sockaddr_storage *ss, int delta)
{
	unsigned char key[16];
	server_ip_key(ss, key);
	struct smtpd_ipcount **pp = server_ip_find(srv, key);
	if (*pp == NULL) {
		if (delta < 0)
			return;
		*pp = xcalloc(1, sizeof(**pp));
		memcpy((*pp)->addr, key, 16);
	}
	(*pp)->count = (unsigned)((int)(*pp)->count + delta);
	if ((*pp)->count == 0) {
		struct smtpd_ipcount *dead = *pp;
		*pp = dead->next;
		free(dead);
	}
}

#define SERVER_SPACE_CHECK_US 1000000

bool smtpd_server_space_low(struct smtpd *srv, uint64_t need)
{
	uint64_t now = smtpd_now_us();
	if (srv->spool == NULL)
		return false;
	if (srv->space_checked_us == 0 || now - srv->space_checked_us >= SERVER_SPACE_CHECK_US ||
	    now < srv->space_checked_us) {
		uint64_t avail;
		srv->space_checked_us = now;
		if (spool_free_space(srv->spool, &avail) < 0) {
			/* not a reason to refuse mail: the writes will tell */
			log_warn("event=statvfs_failed error=%s", strerror(errno));
			avail = UINT64_MAX;
		}
		srv->space_avail = avail;
		/* once per change, not per refused MAIL */
		bool low = avail < srv->conf->queue.min_free_space;
		if (low != srv->space_low)
			log_warn("event=spool_space status=%s avail=%llu min_free_space=%llu",
				 low ? "low" : "ok", (unsigned long long)avail,
				 (unsigned long long)srv->conf->queue.min_free_space);
		srv->space_low = low;
	}
	uint64_t min = srv->conf->queue.min_free_space;
	/* Only this message's declared size: a sum over the transactions in
	 * progress would let idle sessions that declare large sizes refuse
	 * everyone's mail (the writes themselves are checked: ENOSPC ends a
	 * transaction with 452 4.3.1). */
	return srv->space_avail < min || srv->space_avail - min < need;
}

void smtpd_set_tls(struct smtpd *srv, struct tls_server *tls)
{
	/* Live sessions hold their own references to the old contexts. */
	tls_server_free(&srv->tls);
	srv->tls = tls;
}

void smtpd_server_session_gone(struct smtpd *srv, struct smtpd_session *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		srv->sessions = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	srv->n_sessions--;
	server_ip_add(srv, &s->client_ss, -1);
}

/* Refuse before any session state exists: one best-effort write. */
static void server_refuse(struct smtpd *srv, int fd, const char *client, const char *why)
{
	char line[300];
	int n = snprintf(line, sizeof(line), "421 4.7.0 %s Too many connections, try again later\r\n",
			 srv->conf->hostname);
	ssize_t w = send(fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)w;
	/* Closing with unread input makes the kernel send a reset, which can
	 * overtake the 421: read what an early talker already sent (bounded,
	 * non-blocking) and half-close first. */
	char junk[4096];
	for (int i = 0; i < 16 && recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0; i++)
		;
	shutdown(fd, SHUT_WR);
	close(fd);
	log_info("event=refuse client=%s reason=%s", client, why);
}

static void server_on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
			     int salen, void *arg)
{
	(void)lev;
	struct smtpd_listener *l = arg;
	struct smtpd *srv = l->srv;
	const struct conf_limits *lim = &srv->conf->limits;
	struct sockaddr_storage ss;
	char client[NET_ADDRSTR_MAX];

	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, (size_t)salen < sizeof(ss) ? (size_t)salen : sizeof(ss));
	net_host_str(sa, client, sizeof(client));
	if (srv->shutting_down) {
		close(fd);
		return;
	}
	if (srv->n_sessions >= lim->connections) {
		server_refuse(srv, fd, client, "connection_limit");
		return;
	}
	if (server_ip_count(srv, &ss) >= lim->connections_per_ip) {
		server_refuse(srv, fd, client, "per_ip_limit");
		return;
	}
	server_ip_add(srv, &ss, 1);
	/* A session that could not start (implicit TLS setup failed) never
	 * reaches smtpd_server_session_gone: release its count here, or
	 * every such failure would shrink limits.connections_per_ip for good. */
	if (!smtpd_session_start(srv, fd, sa, (socklen_t)salen, l->name, l->lconf))
		server_ip_add(srv, &ss, -1);
}

#define SERVER_ACCEPT_PAUSE_US 100000 /* after an accept error */

static void server_on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_listener *l = arg;
	(void)fd;
	(void)what;
	if (!l->srv->shutting_down)
		evconnlistener_enable(l->lev);
}

/* Out of descriptors (EMFILE, ENFILE) or memory: the connection stays in
 * the kernel's backlog and the socket stays readable, so accepting again at
 * once would spin the loop at full CPU and flood the log. The listener
 * pauses for 100 ms instead (the backlog holds the clients meanwhile, and
 * sessions that end free descriptors); the first error and every 100th are
 * logged. */
static void server_on_accept_error(struct evconnlistener *lev, void *arg)
{
	struct smtpd_listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	l->accept_errors++;
	if (l->accept_errors == 1 || l->accept_errors % 100 == 0)
		log_warn("event=accept_error listener=%s error=%s count=%llu action=pause_100ms",
			 l->name, evutil_socket_error_to_string(err),
			 (unsigned long long)l->accept_errors);
	evconnlistener_disable(lev);
	if (l->resume == NULL)
		l->resume = evtimer_new(l->srv->base, server_on_accept_resume, l);
	struct timeval tv = {0, SERVER_ACCEPT_PAUSE_US};
	evtimer_add(l->resume, &tv);
}

static int server_bind(struct smtpd *srv, const struct conf_listener *lc, const char **error_r)
{
	const char *spec = lc->address;
	struct sockaddr_storage ss[2];
	socklen_t lens[2];
	int n = net_parse_listen(spec, ss, lens);
	if (n < 0) {
		*error_r = "invalid listen address";
		return -1;
	}
	for (int i = 0; i < n; i++) {
		int fd = net_listen((struct sockaddr *)&ss[i], lens[i], 511);
		if (fd < 0) {
			log_err("event=listen_failed listen=%s error=%s", spec, strerror(errno));
			*error_r = "cannot bind listener";
			return -1;
		}
		srv->listeners = xreallocarray(srv->listeners, srv->n_listeners + 1,
					       sizeof(*srv->listeners));
		struct smtpd_listener *l = &srv->listeners[srv->n_listeners++];
		memset(l, 0, sizeof(*l));
		l->srv = srv;
		l->lconf = lc;
		l->fd = fd;
		snprintf(l->name, sizeof(l->name), "%s", spec);
	}
	return 0;
}

/* AUTH failure accounting (auth/authfail.h): 4096 addresses or /64s with
 * failures in the window, 128 KiB. */
#define SERVER_AUTHFAIL_SLOTS 65536 /* 2 MiB, and 8192 network slots */

/* What EHLO offers: auth.mechanisms, or else what works for every user
 * (sasl_ctx_usable). Clients choose the strongest mechanism offered and do
 * not retry, so offering CRAM-MD5 to a users file with one {CRYPT} user
 * would lock that user out (issue 8). */
static void server_auth_mechs(struct smtpd *srv)
{
	const struct conf_auth *ca = &srv->conf->auth;
	size_t off;

	srv->sasl_ctx = sasl_ctx_create(srv->users, srv->conf->hostname);
	srv->auth_mechs = ca->n_mechanisms == 0 ? sasl_ctx_usable(srv->sasl_ctx) : 0;
	for (size_t i = 0; i < ca->n_mechanisms; i++) {
		enum sasl_mech m;
		if (sasl_mech_parse(ca->mechanisms[i], strlen(ca->mechanisms[i]), &m) == 0)
			srv->auth_mechs |= SASL_MECH_BIT(m);
	}
	off = (size_t)snprintf(srv->auth_line, sizeof(srv->auth_line), "250-AUTH");
	for (int m = SASL_PLAIN; m <= SASL_SCRAM_SHA_256; m++)
		if (srv->auth_mechs & SASL_MECH_BIT(m))
			off += (size_t)snprintf(srv->auth_line + off, sizeof(srv->auth_line) - off,
						" %s", sasl_mech_name((enum sasl_mech)m));
	snprintf(srv->auth_line + off, sizeof(srv->auth_line) - off, "\r\n");
}

int smtpd_create(struct event_base *base, const struct conf *conf, const struct users *users,
		 const struct aliases *aliases, struct smtpd **smtpd_r, const char **error_r)
{
	struct smtpd *srv = xcalloc(1, sizeof(*srv));
	srv->base = base;
	srv->conf = conf;
	srv->users = users;
	srv->aliases = aliases;
	logrl_init(&srv->reject_rl, SMTPD_REJECT_LOG_ALL, SMTPD_REJECT_LOG_ALL_WINDOW_US);
	srv->ipcount_buckets = 1021;
	srv->ipcount = xcalloc(srv->ipcount_buckets, sizeof(*srv->ipcount));
	uint64_t seed = 0;
	if (getentropy(&seed, sizeof(seed)) < 0)
		seed = (uint64_t)getpid();
	srv->next_sid = (seed & 0xffffffffffULL) << 8; /* unique-ish across restarts */
	server_auth_mechs(srv);
	srv->authfail = authfail_create(SERVER_AUTHFAIL_SLOTS, NULL);
	srv->policy = policy_smtp_create(base, conf, users, aliases);
	for (size_t i = 0; i < conf->n_listeners; i++) {
		if (server_bind(srv, &conf->listeners[i], error_r) < 0) {
			smtpd_free(&srv);
			return -1;
		}
	}
	*smtpd_r = srv;
	return 0;
}

void smtpd_start(struct smtpd *srv, struct spool *spool, struct qmgr *qmgr)
{
	srv->spool = spool;
	srv->qmgr = qmgr;
	srv->commit_wq = workq_create(srv->base, (unsigned)srv->conf->queue.commit_threads, "commit");
	srv->auth_wq = workq_create(srv->base, 2, "auth");
	for (size_t i = 0; i < srv->n_listeners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		l->lev = evconnlistener_new(srv->base, server_on_accept, l,
					    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, l->fd);
		evconnlistener_set_error_cb(l->lev, server_on_accept_error);
		log_info("event=listening listen=%s", l->name);
	}
}

void smtpd_shutdown(struct smtpd *srv)
{
	srv->shutting_down = true;
	for (size_t i = 0; i < srv->n_listeners; i++) {
		if (srv->listeners[i].lev != NULL)
			evconnlistener_disable(srv->listeners[i].lev);
	}
}

size_t smtpd_session_count(const struct smtpd *srv)
{
	return srv->n_sessions;
}

void smtpd_free(struct smtpd **srvp)
{
	struct smtpd *srv = *srvp;
	if (srv == NULL)
		return;
	*srvp = NULL;
	/* Finish in-flight commits and AUTH checks first: their completions
	 * touch sessions. */
	workq_free(&srv->commit_wq);
	workq_free(&srv->auth_wq);
	while (srv->sessions != NULL) {
		struct smtpd_session *s = srv->sessions;
		smtpd_session_free(&s); /* cancels its policy runs */
	}
	policy_smtp_free(&srv->policy);
	for (size_t i = 0; i < srv->n_listeners; i++) {
		if (srv->listeners[i].resume != NULL)
			event_free(srv->listeners[i].resume);
		if (srv->listeners[i].lev != NULL)
			evconnlistener_free(srv->listeners[i].lev);
		else
			close(srv->listeners[i].fd);
	}
	free(srv->listeners);
	for (size_t i = 0; i < srv->ipcount_buckets; i++) {
		while (srv->ipcount[i] != NULL) {
			struct smtpd_ipcount *e = srv->ipcount[i];
			srv->ipcount[i] = e->next;
			free(e);
		}
	}
	free(srv->ipcount);
	authfail_free(&srv->authfail);
	sasl_ctx_free(&srv->sasl_ctx);
	smtpd_reject_log_flush(srv);
	if (srv->reject_rl_ev != NULL)
		event_free(srv->reject_rl_ev);
	tls_server_free(&srv->tls);
	free(srv);
}
