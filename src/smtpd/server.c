/* server.c — smtpd listeners and connection admission: total and per-client
 * connection limits (421 4.7.0), then a session per accepted socket.
 * Runs in smtpd on the event loop. The listening sockets are bound by the
 * master (smtpd_create) before privileges are dropped. */
#include "smtpd/smtpd.h"
#include "smtpd/session.h"
#include "auth/authc.h"
#include "conf/conf.h"
#include "auth/users.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/workq.h"
#include "lib/shmcount.h"
#include "lib/rstate.h"
#include "lib/shmrate.h"
#include "lib/cidr.h"
#include "smtpd/qclient.h"
#include "tls/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <time.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

/* The client as the connection limits count it: an IPv4 address (mapped),
 * an IPv6 client by its /64 (RFC 4291 §2.5.4: one network, often one
 * customer, who could otherwise take 2^64 addresses). */
static void server_ip_key(const struct sockaddr_storage *ss, unsigned char key[16])
{
	int family;
	unsigned char a[16];
	memset(key, 0, 16);
	if (!cidr_sockaddr((const struct sockaddr *)ss, &family, a))
		return;
	if (family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, a, 4);
	} else {
		memcpy(key, a, 8);
	}
}

#define SERVER_SPACE_CHECK_US 1000000

bool smtpd_server_space_low(struct smtpd *srv, uint64_t need)
{
	uint64_t now = smtpd_now_us();
	if (srv->space_checked_us == 0 || now - srv->space_checked_us >= SERVER_SPACE_CHECK_US ||
	    now < srv->space_checked_us) {
		uint64_t avail;
		srv->space_checked_us = now;
		/* fstatvfs of a message file the queue gave us: smtpd can
		 * open no path of the spool. No file at hand: not a reason
		 * to refuse mail (the writes will tell), look again soon. */
		if (qclient_free_space(srv->qc, &avail) < 0) {
			if (errno != EAGAIN)
				log_warn("event=statvfs_failed error=%s", strerror(errno));
			srv->space_checked_us = 0;
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

void smtpd_set_dkim_signer(struct smtpd *srv, struct keyproxy_client *kc)
{
	srv->dkim_kc = kc;
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
	unsigned char key[16];
	server_ip_key(&s->client_ss, key);
	shmcount_release(srv->conns, key);
}

/* Refuse before any session state exists: one best-effort write. The log
 * line is rate-suppressed (a flood is what gets refused here). */
static void server_refuse(struct smtpd *srv, int fd, const char *client, const char *why,
			  const char *text)
{
	char line[300];
	int n = snprintf(line, sizeof(line), "421 4.7.0 %s %s\r\n", srv->conf->hostname, text);
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
	uint64_t now = smtpd_now_us();
	if (logrl_burst_over(&srv->refuse_rl, now)) {
		uint64_t held = logrl_take(&srv->refuse_rl);
		if (held > 0)
			log_info("event=suppressed what=refuse count=%llu", (unsigned long long)held);
	}
	if (logrl_allow(&srv->refuse_rl, now))
		log_info("event=refuse client=%s reason=%s", client, why);
}

void smtpd_set_redis(struct smtpd *srv, struct rstate *rs)
{
	policy_smtp_set_redis(srv->policy, rs);
	srv->redis = rs;
}

void smtpd_set_filter(struct smtpd *srv, struct cidr_list *access, struct shmrate *rates,
		      struct greytab *grey)
{
	srv->rates = rates;
	policy_smtp_set_access(srv->policy, access);
	policy_smtp_set_shared(srv->policy, rates, grey);
}

/* limits.connection_rate: true when this connection may go on. */
static bool server_connection_rate_ok(struct smtpd *srv, const struct sockaddr_storage *ss)
{
	const struct conf_limits *lim = &srv->conf->limits;
	if (lim->connection_rate == 0 || srv->rates == NULL)
		return true;
	unsigned char key[2 + 17];
	key[0] = 'c';
	key[1] = 'c';
	size_t len = 2 + policy_client_net_key(ss, 32, key + 2);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	return shmrate_take(srv->rates, key, len, (unsigned)lim->connection_rate, lim->rate_window,
			    now_ms);
}

/* The connection passed every check at accept: its session. */
static void server_session_begin(struct smtpd_listener *l, int fd, const struct sockaddr *sa,
				 socklen_t salen, const unsigned char key[16], size_t li,
				 const struct ucred *cred)
{
	struct smtpd *srv = l->srv;
	metrics_conn(li, METRIC_CONN_ACCEPTED);
	/* A session that could not start (implicit TLS setup failed) never
	 * reaches smtpd_server_session_gone: release its count here, or
	 * every such failure would shrink limits.connections_per_ip for good. */
	if (!smtpd_session_start(srv, fd, sa, salen, l->name, l->lconf, cred))
		shmcount_release(srv->conns, key);
}

/* A connection waiting for Redis's connection rate (state.redis): it holds
 * its place in the connection counts meanwhile, so the waits are bounded
 * by limits.connections; each by state.redis_timeout. */
struct server_conn_wait {
	struct smtpd_listener *l;
	int fd;
	struct sockaddr_storage ss;
	socklen_t salen;
	char client[NET_ADDRSTR_MAX];
	unsigned char key[16];
	size_t li;
	struct rstate_req *req;
	struct event *timer;
	struct server_conn_wait *next, **prevp;
};

static void server_conn_wait_free(struct server_conn_wait **wp)
{
	struct server_conn_wait *w = *wp;
	*wp = NULL;
	*w->prevp = w->next;
	if (w->next != NULL)
		w->next->prevp = w->prevp;
	rstate_cancel(&w->req);
	event_free(w->timer);
	free(w);
}

/* ok: Redis answered allowed (1) or refused (0); !ok: it failed or timed
 * out, state.redis_failure decides. */
static void server_conn_wait_end(struct server_conn_wait *w, bool ok, long long value)
{
	struct smtpd_listener *l = w->l;
	struct smtpd *srv = l->srv;
	int fd = w->fd;
	unsigned char key[16];
	memcpy(key, w->key, sizeof(key));
	size_t li = w->li;
	char client[NET_ADDRSTR_MAX];
	memcpy(client, w->client, sizeof(client));
	struct sockaddr_storage ss = w->ss;
	socklen_t salen = w->salen;
	w->req = NULL; /* answered, or cancelled by the caller */
	server_conn_wait_free(&w);
	bool accept = ok ? value == 1
			 : srv->conf->state.redis_failure == CONF_STATE_FAIL_ACCEPT;
	if (srv->shutting_down) {
		shmcount_release(srv->conns, key);
		close(fd);
		return;
	}
	if (!accept) {
		shmcount_release(srv->conns, key);
		metrics_conn(li, METRIC_CONN_REFUSED);
		server_refuse(srv, fd, client, ok ? "connection_rate" : "connection_rate_unavailable",
			      ok ? "Connection rate limit exceeded, slow down and try again later"
				 : "Temporary failure, try again later");
		return;
	}
	server_session_begin(l, fd, (const struct sockaddr *)&ss, salen, key, li, NULL);
}

static void server_conn_wait_on_redis(bool ok, long long value, void *arg)
{
	server_conn_wait_end(arg, ok, value);
}

static void server_conn_wait_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server_conn_wait *w = arg;
	(void)fd;
	(void)what;
	log_info("event=policy_timeout check=rate_connect stage=accept timeout_ms=%llu action=%s",
		 (unsigned long long)w->l->srv->conf->state.redis_timeout + 1000,
		 w->l->srv->conf->state.redis_failure == CONF_STATE_FAIL_ACCEPT ? "accept"
										 : "tempfail");
	rstate_cancel(&w->req);
	server_conn_wait_end(w, false, 0);
}

static void server_conn_wait_start(struct smtpd_listener *l, int fd,
				   const struct sockaddr_storage *ss, socklen_t salen,
				   const char *client, const unsigned char key[16], size_t li)
{
	struct smtpd *srv = l->srv;
	const struct conf_limits *lim = &srv->conf->limits;
	struct server_conn_wait *w = xcalloc(1, sizeof(*w));
	w->l = l;
	w->fd = fd;
	w->ss = *ss;
	w->salen = salen;
	snprintf(w->client, sizeof(w->client), "%s", client);
	memcpy(w->key, key, sizeof(w->key));
	w->li = li;
	w->timer = evtimer_new(srv->base, server_conn_wait_on_timeout, w);
	w->next = srv->conn_waits;
	if (w->next != NULL)
		w->next->prevp = &w->next;
	w->prevp = &srv->conn_waits;
	srv->conn_waits = w;
	/* A backstop: rstate answers (a failure) after state.redis_timeout. */
	uint64_t t = srv->conf->state.redis_timeout + 1000;
	struct timeval tv = {.tv_sec = (time_t)(t / 1000), .tv_usec = (suseconds_t)(t % 1000 * 1000)};
	evtimer_add(w->timer, &tv);
	unsigned char rkey[2 + 17];
	rkey[0] = 'c';
	rkey[1] = 'c';
	size_t len = 2 + policy_client_net_key(ss, 32, rkey + 2);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	/* May answer (and free w) from inside the call. */
	struct rstate_req *r = rstate_rate_take(srv->redis, rkey, len, (unsigned)lim->connection_rate,
						lim->rate_window, now, server_conn_wait_on_redis, w);
	if (r != NULL)
		w->req = r;
}

/* Shutdown or free: the waiting connections are closed (their clients
 * retry). */
static void server_conn_waits_drop(struct smtpd *srv)
{
	while (srv->conn_waits != NULL) {
		struct server_conn_wait *w = srv->conn_waits;
		int fd = w->fd;
		shmcount_release(srv->conns, w->key);
		server_conn_wait_free(&w);
		close(fd);
	}
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
	/* The local submission socket: the kernel names the caller. No
	 * credentials, no session (never a session without an identity). */
	struct ucred cred;
	bool local = l->lconf == &srv->local_lconf;
	if (local) {
		socklen_t cl = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 || cl != sizeof(cred)) {
			log_warn("event=local_refused reason=no_peer_credentials error=%s",
				 strerror(errno));
			close(fd);
			return;
		}
		snprintf(client, sizeof(client), "local");
	}
	/* access.allow networks skip the per-client limits (not the total). */
	const struct cidr_entry *acc = policy_smtp_access(srv->policy, (const struct sockaddr *)&ss);
	/* local submissions (the kernel names the user) are not rate-limited
	 * per client, as Postfix's sendmail is not */
	bool allowed = local || (acc != NULL && acc->allow);
	/* Counted across all smtpd processes (lib/shmcount.h). */
	unsigned char key[16];
	/* the metrics' listener index; the local socket is counted after the
	 * configured listeners (its lconf is not one of them) */
	size_t li = local ? srv->conf->n_listeners : (size_t)(l->lconf - srv->conf->listeners);
	server_ip_key(&ss, key);
	switch (shmcount_acquire(srv->conns, key, (unsigned)lim->connections,
				 allowed ? UINT_MAX : (unsigned)lim->connections_per_ip)) {
	case SHMCOUNT_TOTAL:
		metrics_conn(li, METRIC_CONN_REFUSED);
		server_refuse(srv, fd, client, "connection_limit",
			      "Too many connections, try again later");
		return;
	case SHMCOUNT_PER_KEY:
		metrics_conn(li, METRIC_CONN_REFUSED);
		server_refuse(srv, fd, client, "per_ip_limit",
			      "Too many connections, try again later");
		return;
	case SHMCOUNT_OK:
		break;
	}
	/* With state.redis the rate is Redis's, across the nodes: the
	 * connection waits for its answer (server_conn_wait). */
	if (!allowed && srv->redis != NULL && srv->conf->limits.connection_rate > 0) {
		server_conn_wait_start(l, fd, &ss, (socklen_t)salen, client, key, li);
		return;
	}
	/* Counted across all smtpd processes too (lib/shmrate.h); a refused
	 * connection is not counted, so a client below the rate gets in. */
	if (!allowed && !server_connection_rate_ok(srv, &ss)) {
		shmcount_release(srv->conns, key);
		metrics_conn(li, METRIC_CONN_REFUSED);
		server_refuse(srv, fd, client, "connection_rate",
			      "Connection rate limit exceeded, slow down and try again later");
		return;
	}
	server_session_begin(l, fd, sa, (socklen_t)salen, key, li, local ? &cred : NULL);
}

#define SERVER_ACCEPT_PAUSE_US 100000 /* after an accept error */

static void server_on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_listener *l = arg;
	(void)fd;
	(void)what;
	if (!l->srv->shutting_down && l->lev != NULL)
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

int smtpd_listeners_bind(const struct conf *conf, struct smtpd_bound **b_r, size_t *n_r,
			const char **error_r)
{
	struct smtpd_bound *b = NULL;
	size_t nb = 0;
	for (size_t li = 0; li < conf->n_listeners; li++) {
		const char *spec = conf->listeners[li].address;
		struct sockaddr_storage ss[2];
		socklen_t lens[2];
		int n = net_parse_listen(spec, ss, lens);
		if (n < 0) {
			*error_r = "invalid listen address";
			goto fail;
		}
		for (int i = 0; i < n; i++) {
			int fd = net_listen((struct sockaddr *)&ss[i], lens[i], 511);
			if (fd < 0) {
				log_err("event=listen_failed listen=%s error=%s", spec,
					strerror(errno));
				*error_r = "cannot bind listener";
				goto fail;
			}
			b = xreallocarray(b, nb + 1, sizeof(*b));
			b[nb].fd = fd;
			b[nb].listener = li;
			nb++;
		}
	}
	*b_r = b;
	*n_r = nb;
	return 0;
fail:
	for (size_t i = 0; i < nb; i++)
		close(b[i].fd);
	free(b);
	return -1;
}

int smtpd_local_bind(int dfd, struct smtpd_bound **b_r, size_t *n_r, const char **error_r)
{
	/* Bound through the directory's descriptor (/proc/self/fd/N): the
	 * service user owns the spool, and root follows no link of its. */
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	snprintf(sun.sun_path, sizeof(sun.sun_path), "/proc/self/fd/%d/submit", dfd);
	(void)unlinkat(dfd, "submit", 0); /* stale: the spool lock says no one serves it */
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = "cannot create the local submission socket";
		return -1;
	}
	/* 0666: every local user may submit (the kernel tells us who). The
	 * umask sets the mode at bind, so no chmod follows a name. */
	mode_t old = umask(0111);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old);
	if (rc < 0 || listen(fd, 511) < 0) {
		log_err("event=listen_failed listen=local error=%s", strerror(errno));
		close(fd);
		*error_r = "cannot bind the local submission socket";
		return -1;
	}
	*b_r = xreallocarray(*b_r, *n_r + 1, sizeof(**b_r));
	(*b_r)[*n_r].fd = fd;
	(*b_r)[*n_r].listener = SMTPD_LISTENER_LOCAL;
	(*n_r)++;
	return 0;
}

/* DMARC records for the aggregate reports go to the queue (fire and forget). */
static void smtpd_dmarc_sink(void *arg, const void *body, size_t len)
{
	qclient_dmarc_record(arg, body, len);
}

int smtpd_create(struct event_base *base, const struct conf *conf, const struct users *users,
		 const struct aliases *aliases, const struct smtpd_bound *bound, size_t nbound,
		 struct shmcount *conns, struct smtpd **smtpd_r, const char **error_r)
{
	struct smtpd *srv = xcalloc(1, sizeof(*srv));
	srv->base = base;
	srv->conf = conf;
	srv->users = users;
	srv->aliases = aliases;
	logrl_init(&srv->reject_rl, SMTPD_REJECT_LOG_ALL, SMTPD_REJECT_LOG_ALL_WINDOW_US);
	logrl_init(&srv->refuse_rl, SMTPD_REFUSE_LOG_BURST, SMTPD_REFUSE_LOG_WINDOW_US);
	srv->conns = conns;
	uint64_t seed = 0;
	if (getentropy(&seed, sizeof(seed)) < 0)
		seed = (uint64_t)getpid();
	srv->next_sid = (seed & 0xffffffffffULL) << 8; /* unique-ish across restarts */
	srv->policy = policy_smtp_create(base, conf, users, aliases);
	srv->local_lconf = (struct conf_listener){.address = (char *)"local", .tls = CONF_TLS_NONE};
	for (size_t i = 0; i < nbound; i++) {
		if (bound[i].listener == SMTPD_LISTENER_LOCAL) {
			srv->listeners = xreallocarray(srv->listeners, srv->n_listeners + 1,
						       sizeof(*srv->listeners));
			struct smtpd_listener *l = &srv->listeners[srv->n_listeners++];
			*l = (struct smtpd_listener){.srv = srv, .lconf = &srv->local_lconf,
						     .fd = bound[i].fd, .name = "local"};
			continue;
		}
		if (bound[i].listener >= conf->n_listeners) {
			*error_r = "listener does not match the configuration";
			smtpd_free(&srv);
			return -1;
		}
		const struct conf_listener *lc = &conf->listeners[bound[i].listener];
		srv->listeners = xreallocarray(srv->listeners, srv->n_listeners + 1,
					       sizeof(*srv->listeners));
		struct smtpd_listener *l = &srv->listeners[srv->n_listeners++];
		memset(l, 0, sizeof(*l));
		l->srv = srv;
		l->lconf = lc;
		l->fd = bound[i].fd;
		snprintf(l->name, sizeof(l->name), "%s", lc->address);
	}
	srv->qc = qclient_create(base);
	srv->policy->dmarc_sink = smtpd_dmarc_sink;
	srv->policy->dmarc_sink_arg = srv->qc;
	*smtpd_r = srv;
	return 0;
}

void smtpd_set_queue(struct smtpd *srv, int fd)
{
	qclient_attach(srv->qc, fd);
}

void smtpd_prepare(struct smtpd *srv)
{
	policy_smtp_prepare(srv->policy);
}

struct qclient *smtpd_qclient(struct smtpd *srv)
{
	return srv->qc;
}

void smtpd_start(struct smtpd *srv)
{
	/* Only copies after a queue restart and messages held whole in memory
	 * are sealed on a worker (cmd_data.c): two are plenty. */
	unsigned commit_threads = srv->conf->queue.commit_threads < 2
					  ? (unsigned)srv->conf->queue.commit_threads
					  : 2;
	srv->commit_wq = workq_create(srv->base, commit_threads, "commit");
	for (size_t i = 0; i < srv->n_listeners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		/* backlog 0: the master's socket is listening already (and
		 * smtpd's seccomp list has no listen()). */
		l->lev = evconnlistener_new(srv->base, server_on_accept, l,
					    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, l->fd);
		if (l->lev == NULL) {
			log_err("event=listen_failed listen=%s error=%s", l->name, strerror(errno));
			continue;
		}
		evconnlistener_set_error_cb(l->lev, server_on_accept_error);
		log_info("event=listening listen=%s", l->name);
	}
}

void smtpd_stop_listening(struct smtpd *srv)
{
	for (size_t i = 0; i < srv->n_listeners; i++) {
		struct smtpd_listener *l = &srv->listeners[i];
		if (l->resume != NULL)
			event_del(l->resume);
		if (l->lev != NULL)
			evconnlistener_free(l->lev); /* closes this process's copy */
		else if (l->fd >= 0)
			close(l->fd);
		l->lev = NULL;
		l->fd = -1;
	}
}

/* RCPT's "is this a user?" goes to the auth process (policy/policy_smtp.h):
 * smtpd holds no users table. */
struct smtpd_userq {
	struct smtpd *srv;
	struct authc_req *req;
	policy_user_fn *cb;
	void *arg;
};

static void server_userq_done(void *arg, enum authc_exists r)
{
	struct smtpd_userq *q = arg;
	q->req = NULL;
	enum policy_user_answer a = r == AUTHC_YES  ? POLICY_USER_KNOWN
				    : r == AUTHC_NO ? POLICY_USER_UNKNOWN
						    : POLICY_USER_TEMPFAIL;
	policy_user_fn *cb = q->cb;
	void *cbarg = q->arg;
	free(q);
	cb(a, cbarg);
}

static struct policy_user_query *server_userq_lookup(void *ctx, const char *mailbox,
						     const char *domain, policy_user_fn *cb,
						     void *arg)
{
	struct smtpd *srv = ctx;
	char addr[1024];
	int n = snprintf(addr, sizeof(addr), "%s@%s", mailbox, domain);
	struct smtpd_userq *q = xcalloc(1, sizeof(*q));
	q->srv = srv;
	q->cb = cb;
	q->arg = arg;
	if (srv->authc != NULL && n > 0 && (size_t)n < sizeof(addr))
		q->req = authc_user_exists(srv->authc, addr, server_userq_done, q);
	if (q->req == NULL) { /* no auth service now: 451 4.3.0, try later */
		free(q);
		cb(POLICY_USER_TEMPFAIL, arg);
		return NULL;
	}
	return (struct policy_user_query *)q;
}

static void server_userq_cancel(void *ctx, struct policy_user_query *pq)
{
	struct smtpd *srv = ctx;
	struct smtpd_userq *q = (struct smtpd_userq *)pq;
	if (srv->authc != NULL)
		authc_cancel(srv->authc, &q->req);
	free(q);
}

void smtpd_set_authc(struct smtpd *srv, struct authc *authc)
{
	authc_free(&srv->authc);
	srv->authc = authc;
	if (srv->policy != NULL && authc != NULL && srv->conf->users_file[0] != '\0') {
		struct policy_user_source src = {
		    .lookup = server_userq_lookup, .cancel = server_userq_cancel, .ctx = srv};
		policy_smtp_set_user_source(srv->policy, &src);
	}
}

/* SIGTERM: this process's copies of the listening sockets close now (the
 * master closes its own, so the kernel refuses new connections once every
 * smtpd has done so); each session outside a transaction hears 421 4.3.2
 * at once, and one in a transaction when it ends (session.c). */
void smtpd_shutdown(struct smtpd *srv)
{
	srv->shutting_down = true;
	smtpd_stop_listening(srv);
	server_conn_waits_drop(srv);
	for (struct smtpd_session *s = srv->sessions, *next; s != NULL; s = next) {
		next = s->next;
		smtpd_session_resume(s); /* never frees s (smtpd_session_close) */
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
	/* Finish in-flight commits first: their completions touch sessions.
	 * AUTH requests out at the auth service are cancelled by the sessions'
	 * free, before the client goes. */
	workq_free(&srv->commit_wq);
	server_conn_waits_drop(srv);
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
		else if (srv->listeners[i].fd >= 0)
			close(srv->listeners[i].fd);
	}
	free(srv->listeners);
	qclient_free(&srv->qc);
	authc_free(&srv->authc);
	smtpd_reject_log_flush(srv);
	uint64_t held = logrl_take(&srv->refuse_rl);
	if (held > 0)
		log_info("event=suppressed what=refuse count=%llu", (unsigned long long)held);
	if (srv->reject_rl_ev != NULL)
		event_free(srv->reject_rl_ev);
	tls_server_free(&srv->tls);
	free(srv);
}
