/* child.c — the queue and smtpd processes (master.h). A child starts as
 * root (when the master is), reads what only it needs — the users file,
 * aliases and certificates for smtpd, the relay credentials for the queue —
 * drops to the service user for good, and then runs its event loop. Its
 * link to the master is a control channel (master/proto.h): PEER frames
 * bring the sockets to the other processes; signals come from the master
 * (SIGTERM: finish and exit; a second one: now). */
#include "master/master.h"

#include "conf/aliases.h"
#include "conf/conf.h"
#include "conf/credentials.h"
#include "dauth/dmarcrep.h"
#include "queue/dmarcd.h"
#include "auth/authc.h"
#include "auth/authd.h"
#include "auth/users.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/rstate.h"
#include "lib/sandbox.h"
#include "lib/greytab.h"
#include "lib/shmcount.h"
#include "lib/shmrate.h"
#include "master/proto.h"
#include "mail/maildrop.h"
#include "obs/httpd.h"
#include "obs/sbxstore.h"
#include "policy/policy_smtp.h"
#include "queue/qmgr.h"
#include "queue/qserver.h"
#include "queue/pickup.h"
#include "queue/spool.h"
#include "smtpd/qclient.h"
#include "smtpd/smtpd.h"
#include "tls/keyproxy.h"
#include "tls/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#define CHILD_DRAIN_TIMEOUT_MS 5000

struct child_args {
	const char *role;
	const char *conf_path; /* "-" for the embedded default */
	int ctl_fd, conf_fd, conns_fd;
	int rates_fd, grey_fd; /* smtpd: the shared rate counters and greylist */
	int auth_fd, keys_fd; /* smtpd: its sockets to auth and keys, -1: none */
	int tickets_fd;       /* smtpd: the TLS ticket keys all smtpds share */
	int metrics_fd;       /* the counters (lib/metrics.h) */
	unsigned mslot;       /* ... and this process's slot in them */
	int http_fd;          /* http: the listening socket */
	unsigned slot, region;
	unsigned of; /* smtpd: how many smtpd processes there are */
	pid_t parent;
	struct smtpd_bound *bound;
	size_t nbound;
};

struct child_ctx {
	struct event_base *base;
	const struct conf *conf;
	struct ipc_chan *ctl;
	struct smtpd *smtpd;
	struct qmgr *qmgr;
	struct qserver *qs;
	struct ctl_server *ctl_server; /* queue */
	struct credentials *creds;
	struct authd *authd;              /* auth */
	struct keyproxy_server *keysrv;   /* keys */
	struct keyproxy_client *kc;       /* smtpd */
	struct httpd *httpd;              /* http */
	struct event *sigs[5];
	struct event *drain_ev;
	uint64_t drain_started_us;
	bool stopping;
	bool listening;                 /* smtpd: accepting connections */
	bool retired;                   /* smtpd: after a reload, until its sessions end */
	struct qclient_req *first_wait; /* smtpd: for the queue's first file */
};

static uint64_t child_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int child_parse_args(int argc, char **argv, struct child_args *a)
{
	memset(a, 0, sizeof(*a));
	a->ctl_fd = a->conf_fd = a->conns_fd = a->auth_fd = a->keys_fd = a->tickets_fd = -1;
	a->rates_fd = a->grey_fd = -1;
	a->metrics_fd = a->http_fd = -1;
	if (argc < 3)
		return -1;
	a->role = argv[2];
	for (int i = 3; i + 1 < argc; i += 2) {
		const char *k = argv[i], *v = argv[i + 1];
		if (strcmp(k, "--conf") == 0) {
			a->conf_path = v;
		} else if (strcmp(k, "--ctl") == 0) {
			a->ctl_fd = atoi(v);
		} else if (strcmp(k, "--text") == 0) {
			a->conf_fd = atoi(v);
		} else if (strcmp(k, "--auth") == 0) {
			a->auth_fd = atoi(v);
		} else if (strcmp(k, "--tickets") == 0) {
			a->tickets_fd = atoi(v);
		} else if (strcmp(k, "--keys") == 0) {
			a->keys_fd = atoi(v);
		} else if (strcmp(k, "--metrics") == 0) {
			a->metrics_fd = atoi(v);
		} else if (strcmp(k, "--mslot") == 0) {
			a->mslot = (unsigned)atoi(v);
		} else if (strcmp(k, "--http") == 0) {
			a->http_fd = atoi(v);
		} else if (strcmp(k, "--conns") == 0) {
			a->conns_fd = atoi(v);
		} else if (strcmp(k, "--rates") == 0) {
			a->rates_fd = atoi(v);
		} else if (strcmp(k, "--grey") == 0) {
			a->grey_fd = atoi(v);
		} else if (strcmp(k, "--slot") == 0) {
			a->slot = (unsigned)atoi(v);
		} else if (strcmp(k, "--of") == 0) {
			a->of = (unsigned)atoi(v);
		} else if (strcmp(k, "--region") == 0) {
			a->region = (unsigned)atoi(v);
		} else if (strcmp(k, "--parent") == 0) {
			a->parent = (pid_t)atol(v);
		} else if (strcmp(k, "--listen") == 0) {
			/* fd:index,fd:index */
			for (const char *p = v; *p != '\0';) {
				char *end;
				long fd = strtol(p, &end, 10);
				if (*end != ':')
					return -1;
				long li = strtol(end + 1, &end, 10);
				a->bound = xreallocarray(a->bound, a->nbound + 1, sizeof(*a->bound));
				a->bound[a->nbound].fd = (int)fd;
				a->bound[a->nbound].listener = (size_t)li;
				a->nbound++;
				p = *end == ',' ? end + 1 : end;
				if (*end != ',' && *end != '\0')
					return -1;
			}
		} else {
			return -1;
		}
	}
	return a->ctl_fd >= 0 && a->conf_fd >= 0 && a->conf_path != NULL ? 0 : -1;
}

/* The configuration the master parsed, from the same text. */
static struct conf *child_load_conf(const struct child_args *a)
{
	struct buf text;
	char err[1024];
	struct conf *conf = NULL;
	buf_init(&text, 1024 * 1024 + 1);
	char chunk[8192];
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(a->conf_fd, chunk, sizeof(chunk), off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (buf_append(&text, chunk, (size_t)n) < 0)
			break;
		off += n;
	}
	close(a->conf_fd);
	const char *path = strcmp(a->conf_path, "-") == 0 ? NULL : a->conf_path;
	if (conf_load_buffer(path, buf_cstr(&text), text.len, &conf, err, sizeof(err)) < 0)
		fprintf(stderr, "hikyaku: %s\n", err);
	buf_free(&text);
	return conf;
}

/* ---- signals and the master ---- */

static void child_drain_check(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct child_ctx *ctx = arg;
	/* Retired (a reload): the sessions run to their end, bounded by
	 * timeouts.session; stopping: transactions in flight get
	 * timeouts.shutdown to end, then the sessions left are cut. */
	if (smtpd_session_count(ctx->smtpd) == 0)
		event_base_loopbreak(ctx->base);
	else if (ctx->stopping &&
		 child_now_ms() - ctx->drain_started_us >= ctx->conf->timeouts.shutdown) {
		log_warn("event=shutdown_timeout sessions=%zu", smtpd_session_count(ctx->smtpd));
		event_base_loopbreak(ctx->base);
	}
}

static void child_drain_start(struct child_ctx *ctx)
{
	ctx->drain_started_us = child_now_ms();
	if (ctx->drain_ev == NULL) {
		ctx->drain_ev = event_new(ctx->base, -1, EV_PERSIST, child_drain_check, ctx);
		struct timeval tv = {0, 20000};
		event_add(ctx->drain_ev, &tv);
	}
	child_drain_check(-1, 0, ctx);
}

static void child_on_drained(void *arg)
{
	struct child_ctx *ctx = arg;
	event_base_loopbreak(ctx->base);
}

static void child_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct child_ctx *ctx = arg;
	if (sig == SIGUSR1) {
		if (ctx->qmgr != NULL)
			qmgr_flush(ctx->qmgr);
		return;
	}
	if (sig == SIGHUP) {
		/* As the service user: an unreadable file keeps the old pair.
		 * (A reload of everything is the master's: new processes.) */
		if (ctx->creds != NULL)
			credentials_reload(ctx->creds);
		return;
	}
	if (sig == SIGUSR2) {
		/* A reload: new smtpds accept from now on; these sessions go on. */
		if (ctx->smtpd != NULL && !ctx->stopping && !ctx->retired) {
			ctx->retired = true;
			log_info("event=retire sessions=%zu", smtpd_session_count(ctx->smtpd));
			smtpd_stop_listening(ctx->smtpd);
			child_drain_start(ctx);
		}
		return;
	}
	if (ctx->stopping) { /* a second signal: now */
		event_base_loopbreak(ctx->base);
		return;
	}
	ctx->stopping = true;
	if (ctx->qmgr == NULL && ctx->smtpd == NULL) { /* auth, keys, http: nothing to finish */
		event_base_loopbreak(ctx->base);
		return;
	}
	if (ctx->smtpd != NULL) {
		log_info("event=shutdown signal=%d sessions=%zu", (int)sig,
			 smtpd_session_count(ctx->smtpd));
		smtpd_shutdown(ctx->smtpd);
		child_drain_start(ctx);
	} else {
		log_info("event=shutdown signal=%d", (int)sig);
		/* Attempts in flight finish and record their results first, so a
		 * restart does not deliver their recipients again. */
		qmgr_drain(ctx->qmgr, CHILD_DRAIN_TIMEOUT_MS, child_on_drained, ctx);
	}
}

static void child_ready(struct child_ctx *ctx);

/* The first message file from the queue: from now on a client's message
 * has somewhere to go (and queue.min_free_space can be checked), so
 * smtpd starts accepting. No file within the wait: accept anyway. */
static void child_first_file(void *arg, const struct qclient_file *f)
{
	struct child_ctx *ctx = arg;
	ctx->first_wait = NULL;
	if (f->fd >= 0)
		qclient_put_back(smtpd_qclient(ctx->smtpd), f);
	if (!ctx->listening && !ctx->stopping && !ctx->retired) {
		ctx->listening = true;
		smtpd_start(ctx->smtpd);
		child_ready(ctx);
	}
}

static void child_on_ctl(struct ipc_chan *ch, const struct ipc_frame *f, int fd, void *arg)
{
	(void)ch;
	struct child_ctx *ctx = arg;
	struct ipc_field fld;
	size_t off = 0;
	uint64_t role = 0;
	while (ipc_field_next(f, &off, &fld)) {
		if (fld.tag == P_F_ROLE)
			role = ipc_field_u64(&fld);
	}
	if (f->type == P_T_PEER && fd >= 0) {
		if (ctx->smtpd != NULL && role == ROLE_QUEUE) {
			smtpd_set_queue(ctx->smtpd, fd);
			if (!ctx->listening && ctx->first_wait == NULL)
				ctx->first_wait = qclient_wait_file(smtpd_qclient(ctx->smtpd),
								    child_first_file, ctx);
			return;
		}
		if (ctx->qs != NULL && role == ROLE_SMTPD) {
			qserver_add_client(ctx->qs, fd);
			return;
		}
		if (ctx->authd != NULL && role == ROLE_SMTPD) {
			authd_add_client(ctx->authd, fd);
			return;
		}
		if (ctx->keysrv != NULL && role == ROLE_SMTPD) {
			/* One thread per smtpd: they sign in parallel. */
			if (keyproxy_serve_thread(ctx->keysrv, fd, NULL) < 0) {
				log_err("event=keys_thread_failed error=%s", strerror(errno));
				close(fd);
			}
			return;
		}
		if (ctx->smtpd != NULL && role == ROLE_AUTH) {
			/* The auth process restarted. */
			struct authc *c = authc_create(ctx->base, fd);
			smtpd_set_authc(ctx->smtpd, c);
			return;
		}
		if (ctx->ctl_server != NULL && role == ROLE_HTTP) {
			ctl_server_add_peer(ctx->ctl_server, fd);
			return;
		}
		if (ctx->httpd != NULL && role == ROLE_QUEUE) {
			httpd_set_queue(ctx->httpd, fd);
			return;
		}
		if (ctx->kc != NULL && role == ROLE_KEYS) {
			keyproxy_client_reconnect(ctx->kc, fd);
			return;
		}
	}
	if (fd >= 0)
		close(fd);
}

static void child_on_ctl_close(struct ipc_chan *ch, const char *why, void *arg)
{
	(void)ch;
	struct child_ctx *ctx = arg;
	/* The master is gone: nobody will restart or stop us properly. */
	log_warn("event=master_gone reason=\"%s\"", why);
	event_base_loopbreak(ctx->base);
}

static void child_loop_run(struct event_base *base)
{
	log_batch_begin();
	while (event_base_loop(base, EVLOOP_ONCE) == 0 && !event_base_got_break(base) &&
	       !event_base_got_exit(base))
		log_thread_flush();
	log_batch_end();
}

/* Tell the master this process is serving. */
static void child_ready(struct child_ctx *ctx)
{
	struct buf b;
	buf_init(&b, IPC_FRAME_MAX);
	size_t st = ipc_frame_begin(&b, P_T_READY);
	ipc_frame_add_u64(&b, P_F_PID, (uint64_t)getpid());
	ipc_frame_end(&b, st);
	(void)ipc_send(ctx->ctl, &b, -1);
	buf_free(&b);
}

static void child_common_start(struct child_ctx *ctx, const struct child_args *a)
{
	const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < 5; i++) {
		ctx->sigs[i] = evsignal_new(ctx->base, signums[i], child_on_signal, ctx);
		event_add(ctx->sigs[i], NULL);
	}
	ctx->ctl = ipc_chan_new(ctx->base, a->ctl_fd, &proto_to_child, child_on_ctl,
				child_on_ctl_close, ctx);
}

static void child_common_free(struct child_ctx *ctx)
{
	for (size_t i = 0; i < 5; i++) {
		if (ctx->sigs[i] != NULL)
			event_free(ctx->sigs[i]);
	}
	if (ctx->drain_ev != NULL)
		event_free(ctx->drain_ev);
	ipc_chan_free(&ctx->ctl);
}

/* ---- the sandbox ---- */

/* Drop to the service user for good (or stay the non-root user), and die
 * with the master. Then Landlock and seccomp (child_confine), once the
 * process has opened what it needs, and before its first thread. */
static int child_drop(const struct conf *conf, const struct child_args *a)
{
	char err[512];
	if (sandbox_drop(conf->user, err, sizeof(err)) < 0 ||
	    (a->parent > 0 && sandbox_parent_watch(a->parent, err, sizeof(err)) < 0)) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return -1;
	}
	return 0;
}

static int child_confine(enum sandbox_role role, const struct sandbox_path *paths, size_t n)
{
	char err[512];
	if (sandbox_landlock(paths, n, sandbox_role_landlock_flags(role), err, sizeof(err)) < 0 ||
	    sandbox_seccomp(role, sandbox_seccomp_mode_env(), err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: sandbox: %s\n", err);
		return -1;
	}
	return 0;
}

/* The queue's paths: the spool and the Maildirs; resolver files and the
 * CA store. */
static int child_confine_queue(const struct conf *conf)
{
	struct sandbox_path paths[4 + SANDBOX_QUEUE_SYSTEM_MAX] = {
	    {.path = conf->spool_dir, .access = SANDBOX_RW},
	    {.path = conf->maildir_root, .access = SANDBOX_RW},
	};
	size_t np = 2;
	/* The sandbox's store (issue 13): captures are written here, their
	 * summaries decoded from any charset (iconv's modules). */
	if (conf_sandbox_used(conf)) {
		paths[np++] = (struct sandbox_path){.path = conf->sandbox.dir, .access = SANDBOX_RW};
		const char *gconv = sandbox_gconv_dir();
		if (gconv != NULL)
			paths[np++] = (struct sandbox_path){
			    .path = gconv, .access = SANDBOX_RO, .optional = true};
	}
	np += sandbox_paths_queue_system(paths + np, SANDBOX_QUEUE_SYSTEM_MAX);
	return child_confine(SANDBOX_QUEUE, paths, np);
}

static void child_log_privileges(const struct conf *conf)
{
	log_info("event=privileges user=%s uid=%u sandbox=landlock+seccomp",
		 geteuid() == 0 || conf->user[0] == '\0' ? "-" : conf->user, (unsigned)geteuid());
}

/* ---- smtpd ---- */

static int child_smtpd(const struct conf *conf, struct child_args *a)
{
	struct child_ctx ctx = {0};
	struct users *users = NULL;
	struct aliases *aliases = NULL;
	struct tls_server *tls = NULL;
	struct tls_pem *pems = NULL;
	size_t npems = 0;
	struct shmcount *conns = NULL;
	struct shmrate *rates = NULL;
	struct greytab *grey = NULL;
	struct cidr_list access = {0};
	const char *error = NULL;
	char err[1024];
	char redis_pw[RSTATE_PASSWORD_MAX] = "";
	int ret = 1;

	/* As root: what this process may know — never a private key, never
	 * the users table (RCPT and AUTH ask the auth process). */
	if (conf->aliases_file[0] != '\0' &&
	    aliases_load(conf->aliases_file, &aliases, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	/* Certificates only (they may be readable by root only). */
	if (tls_conf_read_pems(&conf->tls, conf->hostname, false, &pems, &npems, err,
			       sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: tls: %s\n", err);
		goto out;
	}
	conns = a->conns_fd >= 0 ? shmcount_attach(a->conns_fd, a->region) : NULL;
	if (conns == NULL) {
		fprintf(stderr, "hikyaku: smtpd: cannot map the connection counts\n");
		goto out;
	}
	/* The access lists (their file read as root: a reload starts new
	 * smtpds, which read it again), the rate counters and the greylist
	 * the master shares among the smtpds. */
	if (policy_access_load(conf, &access, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	rates = shmrate_attach(a->rates_fd);
	if (rates == NULL) {
		fprintf(stderr, "hikyaku: smtpd: cannot map the rate counters\n");
		goto out;
	}
	a->rates_fd = -1; /* rates owns it */
	if (a->grey_fd >= 0) {
		grey = greytab_attach(a->grey_fd);
		if (grey == NULL) {
			fprintf(stderr, "hikyaku: smtpd: cannot map the greylist\n");
			goto out;
		}
		a->grey_fd = -1;
	}
	/* The Redis password, root's file, read before the drop. */
	if (conf->state.redis[0] != '\0' && conf->state.redis_password_file[0] != '\0' &&
	    rstate_password_read(conf->state.redis_password_file, redis_pw, sizeof(redis_pw),
	                         err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: state.redis_password_file: %s\n", err);
		goto out;
	}
	if (child_drop(conf, a) < 0)
		goto out;
	ctx.base = event_base_new();
	ctx.conf = conf;
	if (smtpd_create(ctx.base, conf, users, aliases, a->bound, a->nbound, conns, &ctx.smtpd,
			 &error) < 0) {
		fprintf(stderr, "hikyaku: %s\n", error);
		goto out;
	}
	smtpd_set_filter(ctx.smtpd, &access, rates, grey);
	/* Redis is connected to from the sandbox too (reconnects): smtpd's
	 * Landlock rules do not restrict TCP connect, nor connect() to a unix
	 * socket (docs/ARCHITECTURE.md, "Shared state in Redis"). */
	if (conf->state.redis[0] != '\0') {
		struct rstate_addr ra;
		const char *rerr = NULL;
		if (rstate_addr_parse(conf->state.redis, &ra, &rerr) < 0) {
			fprintf(stderr, "hikyaku: state.redis: %s\n", rerr);
			goto out;
		}
		smtpd_set_redis(ctx.smtpd, rstate_create(ctx.base, &ra, redis_pw,
		                                         conf->state.redis_timeout));
		explicit_bzero(redis_pw, sizeof(redis_pw));
	}
	smtpd_prepare(ctx.smtpd);
	policy_verify_set_processes(a->of);
	/* No file at all from here (the resolver has read its own). */
	if (child_confine(SANDBOX_SMTPD, NULL, 0) < 0)
		goto out;
	child_log_privileges(conf);
	a->nbound = 0; /* the server has them now */
	if (npems > 0) {
		if (a->keys_fd < 0) {
			fprintf(stderr, "hikyaku: smtpd: no keys process\n");
			goto out;
		}
		ctx.kc = keyproxy_client_create(a->keys_fd);
		a->keys_fd = -1;
		if (tls_server_create_proxied_pem(pems, npems, conf->tls.session_tickets, ctx.kc,
						  &tls, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: tls: %s\n", err);
			goto out;
		}
		unsigned char tk[TLS_TICKET_KEYS_LEN];
		if (a->tickets_fd < 0 ||
		    pread(a->tickets_fd, tk, sizeof(tk), 0) != (ssize_t)sizeof(tk) ||
		    tls_server_set_ticket_keys(tls, tk, sizeof(tk)) < 0)
			log_warn("event=tls_ticket_keys status=own (tickets resume only on this "
				 "smtpd process)");
		explicit_bzero(tk, sizeof(tk));
		smtpd_set_tls(ctx.smtpd, tls);
		tls = NULL;
	}
	/* DKIM signing goes through the keys process too (issue 10). */
	if (conf->dkim.n_sign > 0 && ctx.kc == NULL && a->keys_fd >= 0) {
		ctx.kc = keyproxy_client_create(a->keys_fd);
		a->keys_fd = -1;
	}
	if (conf->dkim.n_sign > 0 && ctx.kc != NULL)
		smtpd_set_dkim_signer(ctx.smtpd, ctx.kc);
	if (a->tickets_fd >= 0) {
		close(a->tickets_fd);
		a->tickets_fd = -1;
	}
	if (a->auth_fd >= 0) {
		struct authc *c = authc_create(ctx.base, a->auth_fd);
		a->auth_fd = -1;
		if (authc_wait_ready(c, 5000) < 0)
			log_warn("event=auth_not_ready (AUTH not offered until it is)");
		smtpd_set_authc(ctx.smtpd, c);
	}
	child_common_start(&ctx, a);
	child_loop_run(ctx.base);
	if (ctx.first_wait != NULL)
		qclient_cancel(smtpd_qclient(ctx.smtpd), ctx.first_wait);
	ret = 0;
out:
	explicit_bzero(redis_pw, sizeof(redis_pw));
	smtpd_free(&ctx.smtpd);
	child_common_free(&ctx);
	tls_server_free(&tls);
	tls_pems_free(&pems, npems);
	keyproxy_client_free(&ctx.kc);
	if (a->auth_fd >= 0)
		close(a->auth_fd);
	if (a->keys_fd >= 0)
		close(a->keys_fd);
	for (size_t i = 0; i < a->nbound; i++)
		close(a->bound[i].fd);
	shmcount_free(&conns);
	shmrate_free(&rates);
	greytab_free(&grey);
	cidr_list_clear(&access);
	if (a->rates_fd >= 0)
		close(a->rates_fd);
	if (a->grey_fd >= 0)
		close(a->grey_fd);
	users_free(&users);
	aliases_free(&aliases);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	return ret;
}

/* ---- auth ---- */

static int child_auth(const struct conf *conf, struct child_args *a)
{
	struct child_ctx ctx = {0};
	struct users *users = NULL;
	char err[1024];
	int ret = 1;

	if (conf->users_file[0] != '\0' &&
	    users_load(conf->users_file, &users, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	if (child_drop(conf, a) < 0 || child_confine(SANDBOX_AUTH, NULL, 0) < 0)
		goto out;
	child_log_privileges(conf);
	ctx.base = event_base_new();
	ctx.conf = conf;
	ctx.authd = authd_create(ctx.base, conf, users);
	users = NULL; /* the service's now */
	child_common_start(&ctx, a);
	child_ready(&ctx);
	child_loop_run(ctx.base);
	ret = 0;
out:
	authd_free(&ctx.authd);
	child_common_free(&ctx);
	users_free(&users);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	return ret;
}

/* ---- keys ---- */

/* The DKIM keys (dkim.sign[], issue 10) read as root into pems[i], each
 * checked against its declared type: a wrong key stops the keys process
 * at start, loudly, rather than signing with the wrong algorithm. */
static int child_dkim_read(const struct conf *conf, struct buf *pems, char *err, size_t errlen)
{
	for (size_t i = 0; i < conf->dkim.n_sign; i++) {
		const struct conf_dkim_key *k = &conf->dkim.sign[i];
		buf_init(&pems[i], TLS_PEM_MAX);
		int fd = open(k->key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0) {
			snprintf(err, errlen, "dkim key %s: %s", k->key, strerror(errno));
			return -1;
		}
		unsigned char tmp[4096];
		ssize_t n;
		while ((n = read(fd, tmp, sizeof(tmp))) > 0)
			if (buf_append(&pems[i], tmp, (size_t)n) < 0)
				break;
		OPENSSL_cleanse(tmp, sizeof(tmp));
		close(fd);
		BIO *bio = n == 0 ? BIO_new_mem_buf(pems[i].data, (int)pems[i].len) : NULL;
		EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"") : NULL;
		int id = pk != NULL ? EVP_PKEY_get_base_id(pk) : 0;
		BIO_free(bio);
		EVP_PKEY_free(pk);
		if (id != (k->type == CONF_DKIM_ED25519 ? EVP_PKEY_ED25519 : EVP_PKEY_RSA)) {
			snprintf(err, errlen, "dkim key %s: not a PEM %s private key", k->key,
			         k->type == CONF_DKIM_ED25519 ? "Ed25519" : "RSA");
			return -1;
		}
	}
	return 0;
}

static void child_dkim_free(struct buf *pems, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (pems[i].data != NULL)
			OPENSSL_cleanse(pems[i].data, pems[i].cap);
		buf_free(&pems[i]);
	}
	free(pems);
}

static int child_keys(const struct conf *conf, struct child_args *a)
{
	struct child_ctx ctx = {0};
	struct tls_pem *pems = NULL;
	size_t n = 0;
	char err[1024];
	int ret = 1;

	size_t ndkim = conf->dkim.n_sign;
	struct buf *dkim = xcalloc(ndkim + 1, sizeof(*dkim));

	if (tls_conf_read_pems(&conf->tls, conf->hostname, true, &pems, &n, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: tls: %s\n", err);
		goto out;
	}
	if (child_dkim_read(conf, dkim, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	if (child_drop(conf, a) < 0 || child_confine(SANDBOX_KEYS, NULL, 0) < 0)
		goto out;
	child_log_privileges(conf);
	{
		const unsigned char **p = xcalloc(n + 1, sizeof(*p));
		size_t *lens = xcalloc(n + 1, sizeof(*lens));
		for (size_t i = 0; i < n; i++) {
			p[i] = pems[i].key.data;
			lens[i] = pems[i].key.len;
		}
		int rc = keyproxy_server_create_pem(p, lens, n, &ctx.keysrv, err, sizeof(err));
		free(p);
		free(lens);
		tls_pems_free(&pems, n);
		if (rc < 0) {
			fprintf(stderr, "hikyaku: keys: %s\n", err);
			goto out;
		}
	}
	{
		const unsigned char **p = xcalloc(ndkim + 1, sizeof(*p));
		size_t *lens = xcalloc(ndkim + 1, sizeof(*lens));
		for (size_t i = 0; i < ndkim; i++) {
			p[i] = dkim[i].data;
			lens[i] = dkim[i].len;
		}
		int rc = keyproxy_server_set_dkim_pem(ctx.keysrv, p, lens, ndkim, err, sizeof(err));
		free(p);
		free(lens);
		child_dkim_free(dkim, ndkim);
		dkim = NULL;
		if (rc < 0) {
			fprintf(stderr, "hikyaku: keys: %s\n", err);
			goto out;
		}
	}
	ctx.base = event_base_new();
	ctx.conf = conf;
	child_common_start(&ctx, a);
	child_ready(&ctx);
	child_loop_run(ctx.base);
	ret = 0;
out:
	child_common_free(&ctx);
	tls_pems_free(&pems, n);
	if (dkim != NULL)
		child_dkim_free(dkim, ndkim);
	keyproxy_server_free(&ctx.keysrv);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	return ret;
}

/* ---- http ---- */

/* The API's token: the first line of http.token_file, read as root. */
static int child_http_token(const struct conf *conf, char *tok, size_t toklen)
{
	tok[0] = '\0';
	if (conf->http.token_file[0] == '\0')
		return 0;
	int fd = open(conf->http.token_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		fprintf(stderr, "hikyaku: http.token_file %s: %s\n", conf->http.token_file,
			strerror(errno));
		return -1;
	}
	ssize_t n = read(fd, tok, toklen - 1);
	close(fd);
	if (n < 0)
		n = 0;
	tok[n] = '\0';
	tok[strcspn(tok, "\r\n")] = '\0';
	if (strlen(tok) < 16) {
		fprintf(stderr, "hikyaku: http.token_file %s: the token needs at least 16 "
				"characters on its first line\n",
			conf->http.token_file);
		explicit_bzero(tok, toklen);
		return -1;
	}
	return 0;
}

static int child_http(const struct conf *conf, struct child_args *a, struct metrics *m)
{
	struct child_ctx ctx = {0};
	char token[512];
	int ret = 1;

	if (a->http_fd < 0 || m == NULL) {
		fprintf(stderr, "hikyaku: http: no listener or no metrics\n");
		return 1;
	}
	if (child_http_token(conf, token, sizeof(token)) < 0)
		return 1;
	/* The sandbox (issue 13): its store, and the maildrop a released
	 * message is dropped into; nothing at all otherwise. */
	char maildrop[4096];
	snprintf(maildrop, sizeof(maildrop), "%s/%s", conf->spool_dir, MAILDROP_DIR);
	const char *gconv = sandbox_gconv_dir(); /* iconv's modules, for other charsets */
	struct sandbox_path paths[3] = {
	    {.path = conf->sandbox.dir, .access = SANDBOX_RW},
	    {.path = maildrop, .access = SANDBOX_RW, .optional = true},
	    {.path = gconv != NULL ? gconv : maildrop, .access = SANDBOX_RO, .optional = true},
	};
	bool sbx = conf_sandbox_used(conf);
	if (child_drop(conf, a) < 0 || child_confine(SANDBOX_HTTP, sbx ? paths : NULL, sbx ? 3 : 0) < 0)
		goto out;
	child_log_privileges(conf);
	ctx.base = event_base_new();
	ctx.conf = conf;
	ctx.httpd = httpd_create(ctx.base, conf, a->http_fd, m, token);
	a->http_fd = -1;
	explicit_bzero(token, sizeof(token));
	if (ctx.httpd == NULL) {
		fprintf(stderr, "hikyaku: http: cannot listen\n");
		goto out;
	}
	if (sbx) {
		httpd_set_sandbox_ui(ctx.httpd, true);
		if (httpd_set_sandbox(ctx.httpd) < 0)
			goto out;
	}
	log_info("event=http_listening listen=%s api=%s sandbox=%s", conf->http.listen,
		 conf->http.token_file[0] != '\0' ? "on" : "off", sbx ? "on" : "off");
	child_common_start(&ctx, a);
	child_ready(&ctx);
	child_loop_run(ctx.base);
	ret = 0;
out:
	explicit_bzero(token, sizeof(token));
	httpd_free(&ctx.httpd);
	child_common_free(&ctx);
	if (a->http_fd >= 0)
		close(a->http_fd);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	return ret;
}

/* ---- queue ---- */

static int child_queue(const struct conf *conf, struct child_args *a)
{
	struct child_ctx ctx = {0};
	struct spool *spool = NULL;
	struct ctl_server *ctl = NULL;
	struct pickup *pickup = NULL;
	struct dmarcrep_writer *dmarc_writer = NULL;
	struct dmarcd *dmarcd = NULL;
	struct sbx_store *sbx = NULL;
	const char *error = NULL;
	char err[1024];
	int ret = 1;

	/* Documented as root's, mode 0600. */
	ctx.creds = credentials_load(conf);
	if (child_drop(conf, a) < 0)
		goto out;
	if (fs_mkdir_p(conf->maildir_root, 0700) < 0 ||
	    spool_open(conf->spool_dir, &spool, &error) < 0) {
		fprintf(stderr, "hikyaku: spool %s: %s\n", conf->spool_dir,
			error != NULL ? error : strerror(errno));
		goto out;
	}
	/* Nested through a symbolic link? The load compared the paths as
	 * written; now that they exist, compare where they lead. */
	if (conf_check_roots(conf, true, &error, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	/* Message files are unnamed files (O_TMPFILE): say so once, clearly,
	 * on a file system without them (NFS), rather than at every message. */
	int probe_fd = spool_incoming_create(spool);
	if (probe_fd < 0) {
		fprintf(stderr, "hikyaku: spool %s: cannot create an unnamed file in incoming/ "
				"(O_TMPFILE): %s; the spool needs a local file system such as ext4, "
				"xfs, btrfs or tmpfs\n",
			conf->spool_dir, strerror(errno));
		goto out;
	}
	close(probe_fd);
	if (child_confine_queue(conf) < 0)
		goto out;
	child_log_privileges(conf);
	ctx.base = event_base_new();
	ctx.conf = conf;
	ctx.qmgr = qmgr_create(ctx.base, conf, spool);
	qmgr_set_credentials(ctx.qmgr, ctx.creds);
	/* As the service user, inside Landlock: the files it makes are its. */
	if (conf_sandbox_used(conf)) {
		if (sbx_store_open(conf->sandbox.dir, &sbx, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: %s\n", err);
			goto out;
		}
		struct sbx_limits lim = {
		    .max_messages = conf->sandbox.max_messages,
		    .max_size = conf->sandbox.max_size,
		    .max_age_ms = conf->sandbox.max_age,
		};
		sbx_store_set_limits(sbx, &lim);
		qmgr_set_sandbox(ctx.qmgr, sbx);
	}
	/* Before the recovery, so that held messages found there are parked
	 * where `hikyaku queue release` finds them. */
	if (ctl_server_create(ctx.base, conf->spool_dir, ctx.qmgr, &ctl, &error) < 0) {
		fprintf(stderr, "hikyaku: %s\n", error);
		goto out;
	}
	/* Catch the stop signals before the (possibly long) recovery. */
	child_common_start(&ctx, a);
	int n = qmgr_recover(ctx.qmgr, &error);
	if (n < 0) {
		fprintf(stderr, "hikyaku: spool recovery: %s\n", error);
		goto out;
	}
	ctx.qs = qserver_create(ctx.base, spool, ctx.qmgr, (unsigned)conf->queue.commit_threads,
				 (size_t)conf->limits.connections);
	ctx.ctl_server = ctl;
	dmarc_writer = dmarcrep_writer_create(conf->spool_dir, conf->dmarc.max_day_size);
	qserver_set_dmarc(ctx.qs, dmarc_writer);
	log_info("event=start config=%s queued=%d", conf->file, n);
	pickup = pickup_create(ctx.base, conf);
	if (conf->dmarc.reports)
		dmarcd = dmarcd_create(ctx.base, conf);
	child_ready(&ctx);
	child_loop_run(ctx.base);
	ret = 0;
out:
	pickup_free(&pickup); /* cuts a submission in progress: before its commit */
	dmarcd_free(&dmarcd); /* the same */
	qserver_free(&ctx.qs); /* commits in flight are queued first */
	dmarcrep_writer_free(&dmarc_writer);
	ctl_server_free(&ctl); /* before the queue manager it controls */
	qmgr_free(&ctx.qmgr);
	sbx_store_close(&sbx); /* after the queue manager that captured into it */
	child_common_free(&ctx);
	credentials_free(&ctx.creds); /* after the queue manager that used them */
	spool_close(&spool);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	return ret;
}

int child_main(int argc, char **argv)
{
	struct child_args a;
	if (child_parse_args(argc, argv, &a) < 0) {
		fprintf(stderr, "hikyaku: __child is started by `hikyaku serve`, not by hand\n");
		return 2;
	}
	char name[16];
	snprintf(name, sizeof(name), "hikyaku-%s", a.role);
	prctl(PR_SET_NAME, name);
	struct conf *conf = child_load_conf(&a);
	if (conf == NULL)
		return 2;
	enum log_level lvl = LOG_LVL_INFO;
	log_level_parse(conf->log_level, &lvl);
	char ident[64];
	snprintf(ident, sizeof(ident), "hikyaku/%s[%ld]", a.role, (long)getpid());
	log_init(lvl, ident);
	log_set_json(conf->log.format == CONF_LOG_JSON);
	log_set_syslog(conf->log.target == CONF_LOG_SYSLOG);
	signal(SIGPIPE, SIG_IGN);
	int rc = 2;
	/* OpenSSL reads its configuration once, before any sandbox. */
	OPENSSL_init_ssl(OPENSSL_INIT_LOAD_CONFIG, NULL);
	/* Every process counts into its own slot of the metrics. */
	bool reader = strcmp(a.role, "http") == 0;
	struct metrics *metrics = a.metrics_fd < 0 ? NULL
				  : reader     ? metrics_attach_ro(a.metrics_fd)
					       : metrics_attach(a.metrics_fd, a.mslot);
	if (!reader)
		metrics_set_process(metrics);
	if (strcmp(a.role, "http") == 0)
		rc = child_http(conf, &a, metrics);
	else if (strcmp(a.role, "smtpd") == 0)
		rc = child_smtpd(conf, &a);
	else if (strcmp(a.role, "auth") == 0)
		rc = child_auth(conf, &a);
	else if (strcmp(a.role, "keys") == 0)
		rc = child_keys(conf, &a);
	else if (strcmp(a.role, "queue") == 0)
		rc = child_queue(conf, &a);
	else
		fprintf(stderr, "hikyaku: unknown process role %s\n", a.role);
	free(a.bound);
	metrics_set_process(NULL);
	metrics_free(&metrics);
	conf_free(&conf);
	return rc;
}

/* `hikyaku __probe ROLE [-c FILE] PATH...`: become what that process is
 * after its start (the same drop and the same sandbox), try to open each
 * PATH and say what happened. For tests and for an operator who wants to
 * see what smtpd could reach: "PATH: opened" or "PATH: refused (reason)". */
int child_probe_main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: hikyaku __probe smtpd|queue|auth|keys|http [-c FILE] PATH...\n");
		return 2;
	}
	const char *role = argv[2], *path = NULL;
	int first = 3;
	if (argc > 4 && strcmp(argv[3], "-c") == 0) {
		path = argv[4];
		first = 5;
	}
	struct conf *conf = NULL;
	char err[1024];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 2;
	}
	struct child_args a = {.parent = 0};
	int rc = child_drop(conf, &a);
	if (rc == 0 && strcmp(role, "smtpd") == 0)
		rc = child_confine(SANDBOX_SMTPD, NULL, 0);
	else if (rc == 0 && strcmp(role, "queue") == 0)
		rc = child_confine_queue(conf);
	else if (rc == 0 && strcmp(role, "auth") == 0)
		rc = child_confine(SANDBOX_AUTH, NULL, 0);
	else if (rc == 0 && strcmp(role, "keys") == 0)
		rc = child_confine(SANDBOX_KEYS, NULL, 0);
	else if (rc == 0 && strcmp(role, "http") == 0)
		rc = child_confine(SANDBOX_HTTP, NULL, 0);
	else if (rc == 0)
		rc = -1;
	if (rc < 0) {
		conf_free(&conf);
		return 2;
	}
	printf("uid=%u\n", (unsigned)geteuid());
	for (int i = first; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			printf("%s: opened\n", argv[i]);
			close(fd);
		} else {
			printf("%s: refused (%s)\n", argv[i], strerror(errno));
		}
	}
	fflush(stdout);
	conf_free(&conf);
	return 0;
}
