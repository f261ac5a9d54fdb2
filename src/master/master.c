/* master.c — the master process (master.h): start, watch, restart and stop
 * the children; reload on SIGHUP. */
#include "master/master.h"

#include "conf/aliases.h"
#include "conf/conf.h"
#include "auth/users.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/cidr.h"
#include "lib/greytab.h"
#include "lib/metrics.h"
#include "lib/net.h"
#include "lib/shmcount.h"
#include "lib/shmrate.h"
#include "mail/maildrop.h"
#include "policy/policy_smtp.h"
#include "master/priv.h"
#include "master/proto.h"
#include "smtpd/smtpd.h"
#include "tls/tls.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HIKYAKU_VERSION "0.1.0"
#define MASTER_SMTPD_MAX 64
#define MASTER_BACKOFF_MIN_MS 100
#define MASTER_BACKOFF_MAX_MS 10000
#define MASTER_STABLE_MS 10000 /* a child up this long restarts at once */
/* A stop that takes longer than timeouts.shutdown (smtpd sessions) plus
 * this (the queue's 5 s drain, auth and keys, a margin): SIGKILL. */
#define MASTER_KILL_MARGIN_MS 15000
#define MASTER_LOCK_WAIT_MS 10000

struct master;

struct child {
	struct master *m;
	enum proto_role role;
	unsigned slot;   /* smtpd: 0..n-1 */
	unsigned region; /* smtpd: its region of the connection counts */
	pid_t pid;       /* 0: not running */
	struct ipc_chan *ctl;
	uint64_t started_ms;
	unsigned backoff_ms;
	struct event *restart_ev;
	bool retiring; /* an old generation (reload, stop): not restarted */
	bool ready;    /* READY came from this run */
	struct child *next;
};

struct master {
	struct event_base *base;
	struct conf *conf;
	const char *path; /* NULL: the embedded default */
	const char *text; /* the configuration's text when not from path (sandbox) */
	int text_fd;      /* memfd with the configuration's text */
	int tickets_fd;   /* memfd with the TLS session ticket keys */
	struct smtpd_bound *bound;
	size_t nbound;
	struct shmcount *conns;
	struct shmrate *rates; /* the smtpds' rate counters (limits.*_rate) */
	struct greytab *grey;  /* the greylist (greylist.enabled), else NULL */
	struct event *grey_ev; /* saves it every greylist.save_interval */
	struct metrics *metrics; /* counters every child adds to (lib/metrics.h) */
	int http_fd;             /* http.listen's socket, -1: none */
	unsigned nsmtpd;
	struct child *queue, *auth, *keys, *http;
	struct child *smtpd[MASTER_SMTPD_MAX];
	struct child *retired; /* children told to stop, still running */
	bool stopping;
	bool queue_reload; /* a reload waits for the old smtpds, then the queue */
	bool smtpd_started;  /* after queue, auth and keys were first READY */
	bool queue_ready;    /* the queue has recovered the spool once */
	bool reload_pending; /* new smtpds wait for the new auth and keys */
	struct event *sigs[6];
	struct event *kill_ev;
};

static uint64_t master_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *master_role_name(enum proto_role r)
{
	switch (r) {
	case ROLE_QUEUE:
		return "queue";
	case ROLE_SMTPD:
		return "smtpd";
	case ROLE_AUTH:
		return "auth";
	case ROLE_KEYS:
		return "keys";
	case ROLE_HTTP:
		return "http";
	default:
		return "master";
	}
}

static bool master_running(const struct child *c)
{
	return c != NULL && c->pid != 0;
}

/* ---- the configuration's text, for the children ---- */

static int master_text_fd(const char *path, const char *given, struct conf **conf_r, char *err,
			  size_t errlen)
{
	struct buf text;
	*conf_r = NULL;
	if (given != NULL) { /* `hikyaku sandbox`: made from its options */
		buf_init(&text, strlen(given) + 1);
		buf_append_str(&text, given);
	} else if (conf_read_text(path, &text, err, errlen) < 0) {
		buf_free(&text);
		return -1;
	}
	if (conf_load_buffer(path, buf_cstr(&text), text.len, conf_r, err, errlen) < 0) {
		buf_free(&text);
		return -1;
	}
	int fd = memfd_create("hikyaku-conf", MFD_CLOEXEC);
	if (fd < 0 || (text.len > 0 && write(fd, text.data, text.len) != (ssize_t)text.len)) {
		snprintf(err, errlen, "cannot keep the configuration: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		conf_free(conf_r);
		buf_free(&text);
		return -1;
	}
	buf_free(&text);
	return fd;
}

/* log.target: syslog: a datagram socket connected to the syslog daemon
 * becomes stderr, for the master and every child (which inherit it), so
 * that no sandboxed process needs to open a path or a socket. */
static int master_syslog(const struct conf *conf)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(conf->log.syslog_socket) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "hikyaku: log.syslog_socket: path too long\n");
		return -1;
	}
	memcpy(sun.sun_path, conf->log.syslog_socket, strlen(conf->log.syslog_socket) + 1);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    dup2(fd, STDERR_FILENO) < 0) {
		fprintf(stderr, "hikyaku: log.target syslog: %s: %s\n", conf->log.syslog_socket,
			strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- children ---- */

static void master_start_smtpd(struct master *m, unsigned slot);
static void master_smtpd_generation(struct master *m);

static void master_on_child_frame(struct ipc_chan *ch, const struct ipc_frame *f, int fd,
				  void *arg)
{
	(void)ch;
	struct child *c = arg;
	struct master *m = c->m;
	if (fd >= 0)
		close(fd);
	if (f->type != P_T_READY)
		return;
	log_debug("event=ready role=%s slot=%u pid=%ld", master_role_name(c->role), c->slot,
		  (long)c->pid);
	c->ready = true;
	if (c->role == ROLE_QUEUE)
		m->queue_ready = true;
	master_smtpd_generation(m);
}

static void master_on_child_close(struct ipc_chan *ch, const char *why, void *arg)
{
	(void)ch;
	(void)why;
	(void)arg;
	/* The child is exiting; SIGCHLD tells the rest. */
}

static void master_send_peer(struct child *c, enum proto_role role, unsigned id, int fd)
{
	struct buf b;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, P_T_PEER);
	ipc_frame_add_u64(&b, P_F_ROLE, role);
	ipc_frame_add_u64(&b, P_F_ID, id);
	ipc_frame_end(&b, st);
	if (c->ctl != NULL)
		(void)ipc_send(c->ctl, &b, fd);
	buf_free(&b);
}

/* A socket between a service (queue, auth, keys) and one smtpd. */
static void master_wire_to(struct child *svc, struct child *smtpd)
{
	int sv[2];
	if (!master_running(svc) || svc->retiring || !master_running(smtpd))
		return;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_err("event=socketpair_failed error=%s", strerror(errno));
		return;
	}
	master_send_peer(svc, ROLE_SMTPD, smtpd->slot, sv[0]);
	master_send_peer(smtpd, svc->role, 0, sv[1]);
	close(sv[0]);
	close(sv[1]);
}

/* The http process's link to the queue's control server: a stream socket
 * (the control frames are a byte stream), one end to each. */
static void master_wire_http(struct master *m)
{
	int sv[2];
	if (!master_running(m->queue) || m->queue->retiring || !master_running(m->http))
		return;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		log_err("event=socketpair_failed error=%s", strerror(errno));
		return;
	}
	master_send_peer(m->queue, ROLE_HTTP, 0, sv[0]);
	master_send_peer(m->http, ROLE_QUEUE, 0, sv[1]);
	close(sv[0]);
	close(sv[1]);
}

static void master_wire(struct master *m, struct child *smtpd)
{
	master_wire_to(m->queue, smtpd);
}

/* A service (re)started: every smtpd, also those finishing their sessions
 * after a reload, gets a socket to it. */
static void master_wire_all(struct master *m, struct child *svc)
{
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		if (m->smtpd[i] != NULL)
			master_wire_to(svc, m->smtpd[i]);
	}
	for (struct child *c = m->retired; c != NULL; c = c->next) {
		if (c->role == ROLE_SMTPD)
			master_wire_to(svc, c);
	}
}

/* One end for an smtpd about to start (its --auth or --keys), the other
 * sent to the service now. -1 when the service is not running. */
static int master_service_socket(struct child *svc, unsigned slot)
{
	int sv[2];
	if (!master_running(svc) || svc->retiring)
		return -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_err("event=socketpair_failed error=%s", strerror(errno));
		return -1;
	}
	master_send_peer(svc, ROLE_SMTPD, slot, sv[0]);
	close(sv[0]);
	return sv[1];
}

static int master_spawn(struct child *c)
{
	struct master *m = c->m;
	int sv[2];
	char a_ctl[16], a_text[16], a_conns[16], a_slot[16], a_region[16], a_parent[24];
	char a_auth[16], a_keys[16], a_tickets[16], a_of[16], a_rates[16], a_grey[16];
	char a_metrics[16], a_mslot[16], a_http[16];
	int auth_fd = -1, keys_fd = -1;
	char *listen = NULL;
	size_t llen = 0;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_err("event=spawn_failed role=%s error=%s", master_role_name(c->role),
			strerror(errno));
		return -1;
	}
	/* Everything the child needs is built before fork: after it, only
	 * async-signal-safe calls (the master may have a logger thread). */
	snprintf(a_ctl, sizeof(a_ctl), "%d", sv[1]);
	snprintf(a_text, sizeof(a_text), "%d", m->text_fd);
	snprintf(a_conns, sizeof(a_conns), "%d", shmcount_fd(m->conns));
	snprintf(a_slot, sizeof(a_slot), "%u", c->slot);
	snprintf(a_region, sizeof(a_region), "%u", c->region);
	snprintf(a_parent, sizeof(a_parent), "%ld", (long)getpid());
	int keep[MASTER_SMTPD_MAX + 16]; /* the listeners, then at most 8 more */
	size_t nkeep = 0;
	keep[nkeep++] = sv[1];
	keep[nkeep++] = m->text_fd;
	/* The metrics: smtpd and queue count, http reads; auth and keys get
	 * nothing they do not need. */
	bool counts = c->role == ROLE_SMTPD || c->role == ROLE_QUEUE || c->role == ROLE_HTTP;
	if (counts)
		keep[nkeep++] = metrics_fd(m->metrics);
	/* Each writer its own slot: smtpd its region, queue and the rest
	 * after them (metrics.h). */
	unsigned mslot = c->role == ROLE_SMTPD   ? c->region
			 : c->role == ROLE_QUEUE ? 2 * m->nsmtpd
						 : 2 * m->nsmtpd + 1;
	snprintf(a_metrics, sizeof(a_metrics), "%d", metrics_fd(m->metrics));
	snprintf(a_mslot, sizeof(a_mslot), "%u", mslot);
	const char *argv[40];
	size_t n = 0;
	char title[32];
	snprintf(title, sizeof(title), "hikyaku: %s", master_role_name(c->role));
	argv[n++] = title;
	argv[n++] = "__child";
	argv[n++] = master_role_name(c->role);
	argv[n++] = "--conf";
	argv[n++] = m->path != NULL ? m->path : "-";
	argv[n++] = "--ctl";
	argv[n++] = a_ctl;
	argv[n++] = "--text";
	argv[n++] = a_text;
	argv[n++] = "--parent";
	argv[n++] = a_parent;
	if (counts) {
		argv[n++] = "--metrics";
		argv[n++] = a_metrics;
		argv[n++] = "--mslot";
		argv[n++] = a_mslot;
	}
	if (c->role == ROLE_HTTP) {
		snprintf(a_http, sizeof(a_http), "%d", m->http_fd);
		keep[nkeep++] = m->http_fd;
		argv[n++] = "--http";
		argv[n++] = a_http;
	}
	if (c->role == ROLE_SMTPD) {
		listen = xcalloc(m->nbound + 1, 32);
		for (size_t i = 0; i < m->nbound && nkeep < sizeof(keep) / sizeof(keep[0]) - 8; i++) {
			llen += (size_t)snprintf(listen + llen, 32, "%s%d:%zu", i ? "," : "",
						 m->bound[i].fd, m->bound[i].listener);
			keep[nkeep++] = m->bound[i].fd;
		}
		keep[nkeep++] = shmcount_fd(m->conns);
		keep[nkeep++] = shmrate_fd(m->rates);
		snprintf(a_rates, sizeof(a_rates), "%d", shmrate_fd(m->rates));
		argv[n++] = "--rates";
		argv[n++] = a_rates;
		if (m->grey != NULL) {
			keep[nkeep++] = greytab_fd(m->grey);
			snprintf(a_grey, sizeof(a_grey), "%d", greytab_fd(m->grey));
			argv[n++] = "--grey";
			argv[n++] = a_grey;
		}
		keep[nkeep++] = m->tickets_fd;
		snprintf(a_tickets, sizeof(a_tickets), "%d", m->tickets_fd);
		argv[n++] = "--tickets";
		argv[n++] = a_tickets;
		argv[n++] = "--conns";
		argv[n++] = a_conns;
		argv[n++] = "--slot";
		argv[n++] = a_slot;
		argv[n++] = "--region";
		argv[n++] = a_region;
		snprintf(a_of, sizeof(a_of), "%u", m->nsmtpd);
		argv[n++] = "--of";
		argv[n++] = a_of;
		argv[n++] = "--listen";
		argv[n++] = listen;
		auth_fd = master_service_socket(m->auth, c->slot);
		keys_fd = master_service_socket(m->keys, c->slot);
		if (auth_fd >= 0) {
			snprintf(a_auth, sizeof(a_auth), "%d", auth_fd);
			keep[nkeep++] = auth_fd;
			argv[n++] = "--auth";
			argv[n++] = a_auth;
		}
		if (keys_fd >= 0) {
			snprintf(a_keys, sizeof(a_keys), "%d", keys_fd);
			keep[nkeep++] = keys_fd;
			argv[n++] = "--keys";
			argv[n++] = a_keys;
		}
	}
	argv[n] = NULL;
	log_flush();
	pid_t pid = fork();
	if (pid < 0) {
		log_err("event=spawn_failed role=%s error=%s", master_role_name(c->role),
			strerror(errno));
		close(sv[0]);
		close(sv[1]);
		if (auth_fd >= 0)
			close(auth_fd);
		if (keys_fd >= 0)
			close(keys_fd);
		free(listen);
		return -1;
	}
	if (pid == 0) {
		/* Terminal signals (^C) are the master's to pass on. */
		(void)setpgid(0, 0);
		for (size_t i = 0; i < nkeep; i++) {
			int fl = fcntl(keep[i], F_GETFD);
			if (fl >= 0)
				(void)fcntl(keep[i], F_SETFD, fl & ~FD_CLOEXEC);
		}
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		execv("/proc/self/exe", (char *const *)argv);
		_exit(127);
	}
	close(sv[1]);
	if (auth_fd >= 0)
		close(auth_fd);
	if (keys_fd >= 0)
		close(keys_fd);
	free(listen);
	c->pid = pid;
	c->ready = false;
	c->started_ms = master_now_ms();
	c->ctl = ipc_chan_new(m->base, sv[0], &proto_to_master, master_on_child_frame,
			      master_on_child_close, c);
	log_info("event=spawn role=%s slot=%u pid=%ld", master_role_name(c->role), c->slot,
		 (long)pid);
	return 0;
}

static void master_start_queue(struct master *m);
static void master_start_service(struct master *m, enum proto_role role);
static void master_start_http(struct master *m);

static void master_on_restart(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct child *c = arg;
	struct master *m = c->m;
	if (m->stopping)
		return;
	if (c->role == ROLE_QUEUE)
		master_start_queue(m);
	else if (c->role == ROLE_SMTPD)
		master_start_smtpd(m, c->slot);
	else if (c->role == ROLE_HTTP)
		master_start_http(m);
	else
		master_start_service(m, c->role);
}

static struct child *master_child_new(struct master *m, enum proto_role role, unsigned slot)
{
	struct child *c = xcalloc(1, sizeof(*c));
	c->m = m;
	c->role = role;
	c->slot = slot;
	c->restart_ev = evtimer_new(m->base, master_on_restart, c);
	return c;
}

static void master_child_free(struct child *c)
{
	ipc_chan_free(&c->ctl);
	event_free(c->restart_ev);
	free(c);
}

/* A region of the connection counts no running smtpd uses (2 per slot:
 * an old generation drains in one while the new one counts in the other). */
static unsigned master_free_region(struct master *m, unsigned slot)
{
	for (unsigned r = slot; r < 2 * m->nsmtpd; r += m->nsmtpd) {
		bool used = false;
		for (struct child *c = m->retired; c != NULL; c = c->next)
			used |= c->role == ROLE_SMTPD && c->region == r;
		if (m->smtpd[slot] != NULL && m->smtpd[slot]->pid != 0)
			used |= m->smtpd[slot]->region == r;
		if (!used)
			return r;
	}
	return slot;
}

static void master_start_smtpd(struct master *m, unsigned slot)
{
	if (m->smtpd[slot] == NULL)
		m->smtpd[slot] = master_child_new(m, ROLE_SMTPD, slot);
	struct child *c = m->smtpd[slot];
	c->region = master_free_region(m, slot);
	shmcount_clear_region(m->conns, c->region);
	if (master_spawn(c) < 0) {
		struct timeval tv = {1, 0};
		evtimer_add(c->restart_ev, &tv);
		return;
	}
	master_wire(m, c);
}

static void master_start_queue(struct master *m)
{
	if (m->queue == NULL)
		m->queue = master_child_new(m, ROLE_QUEUE, 0);
	if (master_spawn(m->queue) < 0) {
		struct timeval tv = {1, 0};
		evtimer_add(m->queue->restart_ev, &tv);
		return;
	}
	master_wire_all(m, m->queue); /* after a reload, the old smtpds too */
	master_wire_http(m);
}

/* The http process (http.listen set): /metrics and the API. */
static void master_start_http(struct master *m)
{
	if (m->http_fd < 0)
		return;
	if (m->http == NULL)
		m->http = master_child_new(m, ROLE_HTTP, 0);
	if (master_spawn(m->http) < 0) {
		struct timeval tv = {1, 0};
		evtimer_add(m->http->restart_ev, &tv);
		return;
	}
	master_wire_http(m);
}

/* auth or keys: (re)start, and give every smtpd a socket to it. */
static void master_start_service(struct master *m, enum proto_role role)
{
	struct child **slot = role == ROLE_AUTH ? &m->auth : &m->keys;
	if (*slot == NULL)
		*slot = master_child_new(m, role, 0);
	if (master_spawn(*slot) < 0) {
		struct timeval tv = {1, 0};
		evtimer_add((*slot)->restart_ev, &tv);
		return;
	}
	master_wire_all(m, *slot);
}

static bool master_retired_smtpds(const struct master *m)
{
	for (const struct child *c = m->retired; c != NULL; c = c->next) {
		if (c->role == ROLE_SMTPD)
			return true;
	}
	return false;
}

static bool master_smtpds_running(const struct master *m)
{
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		if (m->smtpd[i] != NULL && m->smtpd[i]->pid != 0)
			return true;
	}
	return master_retired_smtpds(m);
}

/* Stopping: smtpd first (their sessions still commit to the queue), then
 * the queue, then the master. */
static void master_stop_progress(struct master *m)
{
	if (master_smtpds_running(m))
		return;
	bool running = false;
	struct child *svcs[] = {m->queue, m->auth, m->keys, m->http};
	for (size_t i = 0; i < 4; i++) {
		if (!master_running(svcs[i]))
			continue;
		running = true;
		if (!svcs[i]->retiring) {
			svcs[i]->retiring = true;
			kill(svcs[i]->pid, SIGTERM);
		}
	}
	for (struct child *c = m->retired; c != NULL; c = c->next) {
		if (master_running(c)) {
			running = true;
			kill(c->pid, SIGTERM);
		}
	}
	if (!running)
		event_base_loopbreak(m->base);
}

/* Reloading: the queue finishes its attempts in flight (up to 5 s) and
 * exits; the new one then serves every smtpd, old and new. */
static void master_reload_progress(struct master *m)
{
	if (!m->queue_reload)
		return;
	if (m->queue != NULL && m->queue->pid != 0) {
		if (!m->queue->retiring) {
			m->queue->retiring = true;
			kill(m->queue->pid, SIGTERM);
		}
		return;
	}
	m->queue_reload = false;
	if (m->queue != NULL)
		m->queue->retiring = false;
	master_start_queue(m);
}

static void master_child_exited(struct master *m, struct child *c, int status)
{
	char how[32];
	if (WIFEXITED(status))
		snprintf(how, sizeof(how), "exit:%d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(how, sizeof(how), "signal:%d", WTERMSIG(status));
	else
		snprintf(how, sizeof(how), "status:%d", status);
	bool expected = c->retiring || m->stopping;
	uint64_t up = master_now_ms() - c->started_ms;
	if (expected)
		log_info("event=child_exit role=%s slot=%u pid=%ld status=%s",
			 master_role_name(c->role), c->slot, (long)c->pid, how);
	else
		log_err("event=child_exit role=%s slot=%u pid=%ld status=%s uptime_ms=%llu",
			master_role_name(c->role), c->slot, (long)c->pid, how,
			(unsigned long long)up);
	c->pid = 0;
	ipc_chan_free(&c->ctl);
	if (c->role == ROLE_SMTPD)
		shmcount_clear_region(m->conns, c->region);
	/* A retired child (an old generation) is not restarted. */
	for (struct child **pp = &m->retired; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			master_child_free(c);
			c = NULL;
			break;
		}
	}
	if (m->stopping) {
		master_stop_progress(m);
		return;
	}
	if (c == NULL || (c->role == ROLE_QUEUE && m->queue_reload)) {
		/* The old auth and keys serve the old smtpds to their end. */
		if (!master_retired_smtpds(m)) {
			for (struct child *r = m->retired; r != NULL; r = r->next) {
				if (r->role != ROLE_SMTPD && r->role != ROLE_QUEUE &&
				    master_running(r))
					kill(r->pid, SIGTERM);
			}
		}
		master_reload_progress(m);
		return;
	}
	/* A crash: back off if it keeps happening. */
	if (up >= MASTER_STABLE_MS)
		c->backoff_ms = 0;
	c->backoff_ms = c->backoff_ms == 0 ? MASTER_BACKOFF_MIN_MS
					   : (c->backoff_ms * 2 > MASTER_BACKOFF_MAX_MS
						  ? MASTER_BACKOFF_MAX_MS
						  : c->backoff_ms * 2);
	struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
	log_info("event=restart role=%s slot=%u in_ms=%u", master_role_name(c->role), c->slot,
		 c->backoff_ms);
	evtimer_add(c->restart_ev, &tv);
}

static struct child *master_find(struct master *m, pid_t pid)
{
	if (m->queue != NULL && m->queue->pid == pid)
		return m->queue;
	if (m->auth != NULL && m->auth->pid == pid)
		return m->auth;
	if (m->keys != NULL && m->keys->pid == pid)
		return m->keys;
	if (m->http != NULL && m->http->pid == pid)
		return m->http;
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		if (m->smtpd[i] != NULL && m->smtpd[i]->pid == pid)
			return m->smtpd[i];
	}
	for (struct child *c = m->retired; c != NULL; c = c->next) {
		if (c->pid == pid)
			return c;
	}
	return NULL;
}

static void master_reap(struct master *m)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG);
		if (pid <= 0)
			return;
		struct child *c = master_find(m, pid);
		if (c != NULL)
			master_child_exited(m, c, status);
	}
}

static void master_signal_all(struct master *m, int sig)
{
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		if (m->smtpd[i] != NULL && m->smtpd[i]->pid != 0)
			kill(m->smtpd[i]->pid, sig);
	}
	for (struct child *c = m->retired; c != NULL; c = c->next) {
		if (c->pid != 0)
			kill(c->pid, sig);
	}
}

static void master_on_kill(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct master *m = arg;
	log_warn("event=stop_timeout action=kill");
	master_signal_all(m, SIGKILL);
	struct child *svcs[] = {m->queue, m->auth, m->keys, m->http};
	for (size_t i = 0; i < 4; i++) {
		if (master_running(svcs[i]))
			kill(svcs[i]->pid, SIGKILL);
	}
}

/* The access lists' file, as the smtpds will read it: a broken one stops
 * a start or a reload with its line instead of smtpds that keep dying. */
static int master_access_check(const struct conf *conf, char *err, size_t errlen)
{
	struct cidr_list l;
	if (policy_access_load(conf, &l, err, errlen) < 0)
		return -1;
	cidr_list_clear(&l);
	return 0;
}

/* ---- the greylist's file (greylist.enabled) ----
 * The triplets live in shared memory (lib/greytab.h) that the smtpds
 * write; the master saves them under the spool directory every
 * greylist.save_interval and at stop, and loads them at start. The
 * settings of the running configuration apply (a reload may change the
 * times, not the table's size). */

static struct greytab_times master_grey_times(const struct conf *conf)
{
	struct greytab_times tm = {
	    .delay = (uint32_t)(conf->greylist.delay / 1000),
	    .retry_window = (uint32_t)(conf->greylist.retry_window / 1000),
	    .retention = (uint32_t)(conf->greylist.retention / 1000),
	};
	return tm;
}

static void master_grey_path(const struct conf *conf, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/greylist.db", conf->spool_dir);
}

static void master_grey_save(struct master *m)
{
	char path[4096], err[512];
	if (m->grey == NULL)
		return;
	struct greytab_times tm = master_grey_times(m->conf);
	master_grey_path(m->conf, path, sizeof(path));
	if (greytab_save(m->grey, path, (uint32_t)time(NULL), &tm, err, sizeof(err)) < 0)
		log_warn("event=greylist_save status=failed reason=\"%s\"", err);
}

static void master_on_grey_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct master *m = arg;
	master_grey_save(m);
	uint64_t ms = m->conf->greylist.save_interval;
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000 * 1000)};
	evtimer_add(m->grey_ev, &tv);
}

/* SIGHUP: the configuration, users, aliases, certificates and credentials
 * again, in new processes; the old smtpds finish their sessions. A broken
 * configuration changes nothing. */
static void master_reload(struct master *m)
{
	char err[1024];
	struct conf *conf = NULL;
	int fd = master_text_fd(m->path, m->text, &conf, err, sizeof(err));
	if (fd < 0) {
		log_err("event=reload status=failed reason=\"%s\" (keeping the running "
			"configuration)",
			err);
		return;
	}
	/* What the children would read as root: refuse before anything is
	 * replaced (the old processes keep serving). */
	struct tls_server *tls = NULL;
	struct users *users = NULL;
	struct aliases *aliases = NULL;
	int bad = 0;
	if (tls_server_create(&conf->tls, conf->hostname, &tls, err, sizeof(err)) < 0)
		bad = 1;
	else if (conf->users_file[0] != '\0' &&
		 users_load(conf->users_file, &users, err, sizeof(err)) < 0)
		bad = 1;
	else if (conf->aliases_file[0] != '\0' &&
		 aliases_load(conf->aliases_file, &aliases, err, sizeof(err)) < 0)
		bad = 1;
	else if (master_access_check(conf, err, sizeof(err)) < 0)
		bad = 1;
	size_t ntls = tls != NULL ? tls_server_count(tls) : 0;
	tls_server_free(&tls);
	users_free(&users);
	aliases_free(&aliases);
	if (bad) {
		log_err("event=reload status=failed reason=\"%s\" (keeping the running "
			"configuration)",
			err);
		conf_free(&conf);
		close(fd);
		return;
	}
	/* Listeners stay as bound: they need a restart to change. */
	bool same_listen = conf->n_listeners == m->conf->n_listeners;
	for (size_t i = 0; same_listen && i < conf->n_listeners; i++)
		same_listen = strcmp(conf->listeners[i].address, m->conf->listeners[i].address) == 0;
	if (!same_listen)
		log_warn("event=reload listeners=unchanged reason=\"listen addresses change only "
			 "with a restart\"");
	if (conf->greylist.enabled != (m->grey != NULL) ||
	    conf->limits.rate_table_size != m->conf->limits.rate_table_size ||
	    conf->greylist.max_entries != m->conf->greylist.max_entries)
		log_warn("event=reload shared_tables=unchanged reason=\"greylist.enabled, "
			 "greylist.max_entries and limits.rate_table_size change only with a "
			 "restart\"");
	close(m->text_fd);
	m->text_fd = fd;
	/* The running children keep the old configuration they parsed. */
	conf_free(&m->conf);
	m->conf = conf;
	/* New auth and keys (users, keys read again as root); the old ones
	 * serve the old smtpds until those have finished their sessions. */
	struct child **svcs[] = {&m->auth, &m->keys};
	for (size_t i = 0; i < 2; i++) {
		struct child *old = *svcs[i];
		if (master_running(old)) {
			old->retiring = true;
			evtimer_del(old->restart_ev);
			old->next = m->retired;
			m->retired = old;
			*svcs[i] = NULL;
		}
	}
	master_start_service(m, ROLE_AUTH);
	master_start_service(m, ROLE_KEYS);
	/* A new http process reads the token file again (the listener stays:
	 * it changes only with a restart); the old one ends its connections. */
	if (master_running(m->http)) {
		struct child *old = m->http;
		old->retiring = true;
		evtimer_del(old->restart_ev);
		old->next = m->retired;
		m->retired = old;
		m->http = NULL;
		kill(old->pid, SIGTERM);
	}
	master_start_http(m);
	m->reload_pending = true; /* new smtpds once they are READY */
	m->queue_reload = true;
	log_info("event=reload status=ok tls_contexts=%zu", ntls);
	master_reload_progress(m);
}

/* smtpds start (or, after a reload, replace the running ones) once queue,
 * auth and keys are ready: a client that connects meanwhile waits in the
 * listeners' backlog. */
static void master_smtpd_generation(struct master *m)
{
	if (m->stopping || !m->queue_ready || m->auth == NULL || !m->auth->ready ||
	    m->keys == NULL || !m->keys->ready)
		return;
	if (!m->smtpd_started) {
		m->smtpd_started = true;
		m->reload_pending = false; /* they start with the newest anyway */
		for (unsigned i = 0; i < m->nsmtpd; i++)
			master_start_smtpd(m, i);
		return;
	}
	if (!m->reload_pending)
		return;
	m->reload_pending = false;
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		struct child *old = m->smtpd[i];
		if (old != NULL && old->pid != 0) {
			old->retiring = true;
			evtimer_del(old->restart_ev);
			old->next = m->retired;
			m->retired = old;
			/* Retire: stop accepting, serve the sessions to their end. */
			kill(old->pid, SIGUSR2);
			m->smtpd[i] = NULL;
		}
		master_start_smtpd(m, i);
	}
}

static void master_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct master *m = arg;
	switch (sig) {
	case SIGCHLD:
		master_reap(m);
		return;
	case SIGHUP:
		if (!m->stopping)
			master_reload(m);
		return;
	case SIGUSR1:
		if (m->queue != NULL && m->queue->pid != 0)
			kill(m->queue->pid, SIGUSR1); /* like postqueue -f */
		return;
	default:
		break;
	}
	if (m->stopping) { /* a second signal: everyone now */
		master_signal_all(m, SIGTERM);
		struct child *svcs[] = {m->queue, m->auth, m->keys, m->http};
		for (size_t i = 0; i < 4; i++) {
			if (master_running(svcs[i]))
				kill(svcs[i]->pid, SIGTERM);
		}
		return;
	}
	m->stopping = true;
	log_info("event=shutdown signal=%d", (int)sig);
	for (unsigned i = 0; i < m->nsmtpd; i++) {
		if (m->smtpd[i] != NULL)
			evtimer_del(m->smtpd[i]->restart_ev);
	}
	struct child *svcs[] = {m->queue, m->auth, m->keys, m->http};
	for (size_t i = 0; i < 4; i++) {
		if (svcs[i] != NULL)
			evtimer_del(svcs[i]->restart_ev);
	}
	/* The master's copies of the listening sockets: once the smtpds have
	 * closed theirs, the kernel refuses new connections instead of
	 * holding them in a backlog that nobody will accept from. */
	for (size_t i = 0; i < m->nbound; i++) {
		if (m->bound[i].fd >= 0)
			close(m->bound[i].fd);
		m->bound[i].fd = -1;
	}
	master_signal_all(m, SIGTERM);
	uint64_t kill_ms = m->conf->timeouts.shutdown + MASTER_KILL_MARGIN_MS;
	struct timeval tv = {(time_t)(kill_ms / 1000), (suseconds_t)(kill_ms % 1000) * 1000};
	m->kill_ev = evtimer_new(m->base, master_on_kill, m);
	evtimer_add(m->kill_ev, &tv);
	master_stop_progress(m);
}

/* ---- start ---- */

static void master_print_default(const struct conf *conf)
{
	printf("hikyaku %s: no configuration file given; running the embedded development "
	       "default:\n",
	       HIKYAKU_VERSION);
	for (size_t i = 0; i < conf->n_listeners; i++)
		printf("  SMTP on %s\n", conf->listeners[i].address);
	for (size_t i = 0; i < conf->n_local_domains; i++)
		printf("  accepts mail for %s at %s\n",
		       conf->accept_any_user ? "any user" : "known users", conf->local_domains[i]);
	for (size_t i = 0; i < conf->n_local_domains; i++)
		printf("  each user gets a Maildir under %s/%s/<user>/Maildir\n",
		       conf->maildir_root, conf->local_domains[i]);
	printf("  the spool lives under %s\n", conf->spool_dir);
	printf("  (hikyaku config dump shows every setting; hikyaku serve -c FILE uses yours)\n");
	fflush(stdout);
}

/* Raise the soft limit on open files to what the configuration can use at
 * once (the children inherit it): client sessions, outbound and idle
 * outbound connections, and a margin for spool files, Maildir writes, DNS
 * and control connections. Only up to the hard limit (the operator's, e.g.
 * systemd LimitNOFILE=); below that, say so: the listeners then pause on
 * EMFILE (server.c). */
static void master_raise_nofile(const struct conf *conf)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)(conf->limits.connections + conf->delivery.total_concurrency +
			       conf->delivery.total_idle + 128);
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	rlim_t was = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need ? rl.rlim_max : need;
	if (rl.rlim_cur > was && setrlimit(RLIMIT_NOFILE, &rl) < 0)
		rl.rlim_cur = was;
	if (rl.rlim_cur < need)
		log_warn("event=rlimit_nofile_low have=%llu need=%llu hint=\"raise the hard limit "
			 "(ulimit -Hn, LimitNOFILE=) or lower limits.connections\"",
			 (unsigned long long)rl.rlim_cur, (unsigned long long)need);
	else
		log_info("event=rlimit_nofile_raised from=%llu to=%llu", (unsigned long long)was,
			 (unsigned long long)rl.rlim_cur);
}

/* One hikyaku per spool: the lock is on the spool directory and every
 * child inherits it, so a new master waits until all processes of an old
 * one (killed with it) are gone. */
static int master_lock(const struct conf *conf)
{
	int fd = open(conf->spool_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
	if (fd < 0) {
		fprintf(stderr, "hikyaku: %s: %s\n", conf->spool_dir, strerror(errno));
		return -1;
	}
	uint64_t until = master_now_ms() + MASTER_LOCK_WAIT_MS;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK || master_now_ms() >= until) {
			fprintf(stderr, "hikyaku: %s: another hikyaku is running on this spool\n",
				conf->spool_dir);
			close(fd);
			return -1;
		}
		usleep(20000);
	}
	return fd; /* not close-on-exec: the children hold it too */
}

static unsigned master_nsmtpd(const struct conf *conf)
{
	uint64_t n = conf->processes.smtpd;
	if (n == 0) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);
		n = cpus > 0 ? (uint64_t)cpus : 1;
	}
	return n > MASTER_SMTPD_MAX ? MASTER_SMTPD_MAX : (unsigned)n;
}

/* Local submission (docs/ARCHITECTURE.md, "Local submission"): every
 * local user must reach <spool>/public/submit and write into
 * <spool>/maildrop, and nothing else of the spool. So the spool gets
 * search permission for all (not read: its names stay private), public/
 * is 0755 and maildrop/ 1733 (anyone may create, no one else may list,
 * and the sticky bit keeps a user's drops from other users), both the
 * service user's. pw NULL: not root, they stay ours. Returns public/. */
static int master_public_dirs(const struct conf *conf, const struct passwd *pw)
{
	const char *bad = NULL;
	int sfd = fs_dir_open_nofollow(conf->spool_dir, 0755, 0750, &bad);
	struct stat st;
	if (sfd < 0 || fstat(sfd, &st) < 0 || fchmod(sfd, (st.st_mode & 07777) | 0011) < 0) {
		fprintf(stderr, "hikyaku: %s: %s\n", conf->spool_dir, strerror(errno));
		if (sfd >= 0)
			close(sfd);
		return -1;
	}
	static const struct {
		const char *name;
		mode_t mode;
	} dirs[] = {{MAILDROP_DIR, 01733}, {MAILDROP_PUBLIC_DIR, 0755}};
	int fd = -1;
	for (size_t i = 0; i < 2; i++) {
		if (fd >= 0)
			close(fd);
		if (mkdirat(sfd, dirs[i].name, 0700) < 0 && errno != EEXIST)
			fd = -1;
		else
			fd = openat(sfd, dirs[i].name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 || (pw != NULL && fchown(fd, pw->pw_uid, pw->pw_gid) < 0) ||
		    fchmod(fd, dirs[i].mode) < 0) {
			fprintf(stderr, "hikyaku: %s/%s: %s\n", conf->spool_dir, dirs[i].name,
				strerror(errno));
			if (fd >= 0)
				close(fd);
			close(sfd);
			return -1;
		}
	}
	close(sfd);
	return fd;
}

int master_serve(const char *path)
{
	return master_serve_text(path, NULL);
}

int master_serve_text(const char *path, const char *text)
{
	struct master m = {.tickets_fd = -1, .http_fd = -1};
	char err[1024];
	int ret = 1;
	int lock_fd = -1;

	m.path = path;
	m.text = text;
	m.text_fd = master_text_fd(path, text, &m.conf, err, sizeof(err));
	if (m.text_fd < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 2;
	}
	struct conf *conf = m.conf;
	enum log_level lvl = LOG_LVL_INFO;
	log_level_parse(conf->log_level, &lvl);
	if (conf->log.target == CONF_LOG_SYSLOG && master_syslog(conf) < 0)
		return 2; /* its message went to stderr */
	log_init(lvl, "hikyaku/master");
	log_set_json(conf->log.format == CONF_LOG_JSON);
	log_set_syslog(conf->log.target == CONF_LOG_SYSLOG);
	if (path == NULL && text == NULL)
		master_print_default(conf);

	if (geteuid() == 0) {
		if (conf->user[0] == '\0') {
			fprintf(stderr, "hikyaku: refusing to run as root without user: in the "
					"configuration (the unprivileged user smtpd and the queue run "
					"as; e.g. user: hikyaku)\n");
			goto out;
		}
		struct passwd *pw = getpwnam(conf->user);
		if (pw == NULL) {
			fprintf(stderr, "hikyaku: user %s does not exist\n", conf->user);
			goto out;
		}
		if (pw->pw_uid == 0) {
			fprintf(stderr, "hikyaku: user: %s is root; give an unprivileged user\n",
				conf->user);
			goto out;
		}
		/* Nested through a symbolic link? The load compared the paths
		 * as written; compare where they lead before handing them over. */
		const char *key = NULL;
		if (conf_check_roots(conf, true, &key, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: %s\n", err);
			goto out;
		}
		if (priv_own_dir(conf->spool_dir, pw) < 0 ||
		    priv_own_dir(conf->maildir_root, pw) < 0 ||
		    (conf_sandbox_used(conf) && priv_own_dir(conf->sandbox.dir, pw) < 0))
			goto out;
	} else if (fs_mkdir_p(conf->spool_dir, 0700) < 0 ||
		   (conf_sandbox_used(conf) && fs_mkdir_p(conf->sandbox.dir, 0700) < 0)) {
		fprintf(stderr, "hikyaku: %s: %s\n", conf->spool_dir, strerror(errno));
		goto out;
	}
	/* Everything a child will read as root, read once here first, so that
	 * a mistake stops the start with its message instead of a child that
	 * keeps dying. Nothing of it is kept. */
	{
		struct users *users = NULL;
		struct aliases *aliases = NULL;
		struct tls_server *tls = NULL;
		int bad = 0;
		if (conf->users_file[0] != '\0' &&
		    users_load(conf->users_file, &users, err, sizeof(err)) < 0)
			bad = fprintf(stderr, "hikyaku: %s\n", err);
		else if (conf->aliases_file[0] != '\0' &&
			 aliases_load(conf->aliases_file, &aliases, err, sizeof(err)) < 0)
			bad = fprintf(stderr, "hikyaku: %s\n", err);
		else if (tls_server_create(&conf->tls, conf->hostname, &tls, err, sizeof(err)) < 0)
			bad = fprintf(stderr, "hikyaku: tls: %s\n", err);
		else if (master_access_check(conf, err, sizeof(err)) < 0)
			bad = fprintf(stderr, "hikyaku: %s\n", err);
		users_free(&users);
		aliases_free(&aliases);
		tls_server_free(&tls);
		if (!bad && conf->http.listen[0] != '\0' && conf->http.token_file[0] != '\0') {
			int tfd = open(conf->http.token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
			if (tfd < 0)
				bad = fprintf(stderr, "hikyaku: http.token_file %s: %s\n",
					      conf->http.token_file, strerror(errno));
			else
				close(tfd);
		}
		if (bad)
			goto out;
	}
	lock_fd = master_lock(conf);
	if (lock_fd < 0)
		goto out;
	const char *error = NULL;
	if (smtpd_listeners_bind(conf, &m.bound, &m.nbound, &error) < 0) {
		fprintf(stderr, "hikyaku: %s\n", error);
		goto out;
	}
	{
		int pfd = master_public_dirs(conf, geteuid() == 0 ? getpwnam(conf->user) : NULL);
		int rc = pfd < 0 ? -1 : smtpd_local_bind(pfd, &m.bound, &m.nbound, &error);
		if (pfd >= 0)
			close(pfd);
		if (rc < 0) {
			if (pfd >= 0)
				fprintf(stderr, "hikyaku: %s\n", error);
			goto out;
		}
	}
	master_raise_nofile(conf);
	m.nsmtpd = master_nsmtpd(conf);
	m.conns = shmcount_create(conf->limits.connections, 2 * m.nsmtpd);
	if (m.conns == NULL) {
		fprintf(stderr, "hikyaku: cannot create the connection counts: %s\n",
			strerror(errno));
		goto out;
	}
	m.rates = shmrate_create(conf->limits.rate_table_size);
	if (m.rates == NULL) {
		fprintf(stderr, "hikyaku: cannot create the rate counters: %s\n", strerror(errno));
		goto out;
	}
	if (conf->greylist.enabled) {
		char path[4096];
		size_t loaded = 0;
		struct greytab_times tm = master_grey_times(conf);
		m.grey = greytab_create(conf->greylist.max_entries);
		if (m.grey == NULL) {
			fprintf(stderr, "hikyaku: cannot create the greylist: %s\n", strerror(errno));
			goto out;
		}
		master_grey_path(conf, path, sizeof(path));
		/* A damaged file costs the triplets, not the start. */
		if (greytab_load(m.grey, path, (uint32_t)time(NULL), &tm, &loaded, err,
				 sizeof(err)) < 0)
			log_warn("event=greylist_load status=failed reason=\"%s\" (starting empty)",
				 err);
		else
			log_info("event=greylist_load entries=%zu", loaded);
	}
	m.metrics = metrics_create(2 * m.nsmtpd + 2);
	if (m.metrics == NULL) {
		fprintf(stderr, "hikyaku: cannot create the metrics: %s\n", strerror(errno));
		goto out;
	}
	if (conf->http.listen[0] != '\0') {
		struct sockaddr_storage ss[2];
		socklen_t lens[2];
		/* One socket: "*:port" takes the first (IPv4) address. */
		if (net_parse_listen(conf->http.listen, ss, lens) < 1 ||
		    (m.http_fd = net_listen((struct sockaddr *)&ss[0], lens[0], 64)) < 0) {
			fprintf(stderr, "hikyaku: http.listen %s: %s\n", conf->http.listen,
				strerror(errno));
			goto out;
		}
	}
	/* One set of session ticket keys for every smtpd, for the master's
	 * life (a reload keeps them: tickets survive it). */
	{
		unsigned char k[TLS_TICKET_KEYS_LEN];
		m.tickets_fd = memfd_create("hikyaku-tickets", MFD_CLOEXEC);
		if (m.tickets_fd < 0 || getentropy(k, 32) < 0 || getentropy(k + 32, 32) < 0 ||
		    getentropy(k + 64, 16) < 0 ||
		    write(m.tickets_fd, k, sizeof(k)) != (ssize_t)sizeof(k)) {
			fprintf(stderr, "hikyaku: cannot make the TLS ticket keys: %s\n",
				strerror(errno));
			goto out;
		}
		explicit_bzero(k, sizeof(k));
	}
	signal(SIGPIPE, SIG_IGN);
	m.base = event_base_new();
	if (m.base == NULL) {
		fprintf(stderr, "hikyaku: cannot create the event loop\n");
		goto out;
	}
	const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD};
	for (size_t i = 0; i < 5; i++) {
		m.sigs[i] = evsignal_new(m.base, signums[i], master_on_signal, &m);
		event_add(m.sigs[i], NULL);
	}
	log_info("event=master version=%s config=%s smtpd_processes=%u", HIKYAKU_VERSION,
		 conf->file, m.nsmtpd);
	if (m.grey != NULL) {
		m.grey_ev = evtimer_new(m.base, master_on_grey_timer, &m);
		struct timeval tv = {.tv_sec = (time_t)(conf->greylist.save_interval / 1000),
				     .tv_usec = (suseconds_t)(conf->greylist.save_interval % 1000 * 1000)};
		evtimer_add(m.grey_ev, &tv);
	}
	master_start_queue(&m);
	master_start_service(&m, ROLE_AUTH);
	master_start_service(&m, ROLE_KEYS);
	master_start_http(&m);
	/* the smtpds when all three are ready (master_smtpd_generation) */

	log_batch_begin();
	while (event_base_loop(m.base, EVLOOP_ONCE) == 0 && !event_base_got_break(m.base))
		log_thread_flush();
	log_batch_end();
	ret = 0;
	master_grey_save(&m); /* the children are gone: the last word */
out:
	if (m.grey_ev != NULL)
		event_free(m.grey_ev);
	for (size_t i = 0; i < 6; i++) {
		if (m.sigs[i] != NULL)
			event_free(m.sigs[i]);
	}
	if (m.kill_ev != NULL)
		event_free(m.kill_ev);
	for (unsigned i = 0; i < m.nsmtpd; i++) {
		if (m.smtpd[i] != NULL)
			master_child_free(m.smtpd[i]);
	}
	if (m.queue != NULL)
		master_child_free(m.queue);
	if (m.auth != NULL)
		master_child_free(m.auth);
	if (m.keys != NULL)
		master_child_free(m.keys);
	if (m.http != NULL)
		master_child_free(m.http);
	while (m.retired != NULL) {
		struct child *c = m.retired;
		m.retired = c->next;
		master_child_free(c);
	}
	for (size_t i = 0; i < m.nbound; i++) {
		if (m.bound[i].fd >= 0)
			close(m.bound[i].fd);
	}
	free(m.bound);
	shmcount_free(&m.conns);
	shmrate_free(&m.rates);
	greytab_free(&m.grey);
	metrics_free(&m.metrics);
	if (m.http_fd >= 0)
		close(m.http_fd);
	if (lock_fd >= 0)
		close(lock_fd);
	if (m.text_fd >= 0)
		close(m.text_fd);
	if (m.tickets_fd >= 0)
		close(m.tickets_fd);
	if (m.base != NULL)
		event_base_free(m.base);
	conf_free(&m.conf);
	if (ret == 0)
		log_info("event=stopped");
	return ret;
}
