/* main.c — the hikyaku binary: `serve`, `check`, `config dump|reference`,
 * `queue` (and `mailq`, the same as `queue list`, when called by that name).
 * As `serve` it is the master: it parses the configuration once, binds the
 * listeners, drops privileges, opens the spool, rebuilds the queue from it,
 * and runs the event loop. Today smtpd and the queue manager share this
 * process (DESIGN.md allows it for a first version); their interfaces are
 * already the process boundaries (smtpd.h, qmgr.h). */
#include "conf/conf.h"
#include "conf/aliases.h"
#include "conf/credentials.h"
#include "auth/authc.h"
#include "auth/authd.h"
#include "auth/users.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "queue/qmgr.h"
#include "queue/spool.h"
#include "smtpd/smtpd.h"
#include "tls/tls.h"
#include "auth/usercmd.h"

#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define HIKYAKU_VERSION "0.1.0"

struct main_ctx {
	const struct conf *conf;
	struct event_base *base;
	struct smtpd *smtpd;
	struct qmgr *qmgr;
	struct ctl_server *ctl;
	struct authd *authd; /* the auth service, on this loop until issue 9's split */
	struct credentials *creds; /* relay AUTH secrets, read as root */
	bool stopping; /* a stop signal came: draining */
};

/* How long a stop waits for delivery attempts in flight (SIGTERM, SIGINT;
 * a second signal stops at once). */
#define MAIN_DRAIN_TIMEOUT_MS 5000

static void main_on_drained(void *arg)
{
	struct main_ctx *ctx = arg;
	event_base_loopbreak(ctx->base);
}

/* The event loop, one turn at a time: the log lines of a turn go out
 * together when it ends (one write, lib/log.h), before the loop waits again. */
static void main_loop_run(struct event_base *base)
{
	log_batch_begin();
	while (event_base_loop(base, EVLOOP_ONCE) == 0 && !event_base_got_break(base) &&
	       !event_base_got_exit(base))
		log_thread_flush();
	log_batch_end();
}

static void usage(FILE *out)
{
	fprintf(out, "usage: hikyaku serve [-c FILE]       run the mail server\n"
		     "       hikyaku check [-c FILE]       validate a configuration, show warnings\n"
		     "       hikyaku config dump [-c FILE] print the effective configuration\n"
		     "       hikyaku config reference      print the settings reference (Markdown)\n"
		     "       hikyaku user add|passwd|del|list [-c FILE | -f USERS] [NAME]\n"
		     "       hikyaku queue [-c FILE] [--json] list|show QID|flush [QID|DOMAIN]|\n"
		     "                     delete QID|hold QID|release QID\n"
		     "       mailq [-c FILE] [--json]      the same as hikyaku queue list\n"
		     "       hikyaku version\n"
		     "Without -c, the embedded development default is used.\n");
}

static struct conf *main_load_conf(const char *path)
{
	struct conf *conf = NULL;
	char err[1024];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return NULL;
	}
	return conf;
}

static void main_print_default(const struct conf *conf)
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
 * once: client sessions, outbound and idle outbound connections, and a
 * margin for spool files, Maildir writes, DNS and control connections.
 * Only up to the hard limit (the operator's, e.g. systemd LimitNOFILE=);
 * below that, say so: the listeners then pause on EMFILE (server.c). */
static void main_raise_nofile(const struct conf *conf)
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

/* Create a service directory (0750) and hand it to the service user, as
 * root. The service user owns what is inside spool_dir and maildir_root, so
 * a symbolic link there could lead root's chown anywhere (issue 8: a
 * root-owned directory handed over at the next start): no link is followed
 * on the way, and the directory opened is the one changed (fchown). */
static int main_own_dir(const char *dir, const struct passwd *pw)
{
	const char *bad = dir;
	struct stat st;
	int fd = fs_dir_open_nofollow(dir, 0755, 0750, &bad);
	if (fd < 0) {
		int err = errno;
		fprintf(stderr, "hikyaku: %s: %s at \"%.*s\"%s\n", dir, strerror(err),
			(int)(strcspn(bad, "/") + (size_t)(bad - dir)), dir,
			err == ELOOP || err == ENOTDIR
			    ? ": a symbolic link or a file where a directory is expected; "
			      "root follows no link here, give the real path"
			    : "");
		return -1;
	}
	int rc = fstat(fd, &st);
	if (rc == 0 && (st.st_uid != pw->pw_uid || st.st_gid != pw->pw_gid))
		rc = fchown(fd, pw->pw_uid, pw->pw_gid);
	if (rc < 0)
		fprintf(stderr, "hikyaku: %s: %s\n", dir, strerror(errno));
	close(fd);
	return rc;
}

/* Create the service directories, hand them to the service user, and become
 * that user for good. Called after the listeners are bound. */
static int main_drop_privileges(const struct conf *conf)
{
	if (geteuid() != 0)
		return 0;
	if (conf->user[0] == '\0') {
		log_warn("event=privileges reason=\"running as root: set user: in the configuration\"");
		return 0;
	}
	struct passwd *pw = getpwnam(conf->user);
	if (pw == NULL) {
		fprintf(stderr, "hikyaku: user %s does not exist\n", conf->user);
		return -1;
	}
	if (main_own_dir(conf->spool_dir, pw) < 0 || main_own_dir(conf->maildir_root, pw) < 0)
		return -1;
	if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		fprintf(stderr, "hikyaku: cannot drop privileges: %s\n", strerror(errno));
		return -1;
	}
	if (setuid(0) == 0) {
		fprintf(stderr, "hikyaku: privileges were not dropped\n");
		return -1;
	}
	log_info("event=privileges user=%s uid=%u", conf->user, (unsigned)pw->pw_uid);
	return 0;
}

/* The auth service (auth/authd.h) and smtpd's client of it, over a
 * SOCK_SEQPACKET socketpair. Until the split (issue 9) the service runs on
 * this loop with its own copy of the users table, as the auth process will
 * have; smtpd keeps one for the recipient check in RCPT until the policy
 * engine asks the service instead (authc_user_exists). */
static int main_start_auth(struct main_ctx *ctx, struct users **auth_users)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		fprintf(stderr, "hikyaku: auth socketpair: %s\n", strerror(errno));
		return -1;
	}
	ctx->authd = authd_create(ctx->base, ctx->conf, *auth_users);
	*auth_users = NULL; /* the service's now */
	authd_add_client(ctx->authd, sv[0]);
	struct authc *c = authc_create(ctx->base, sv[1]);
	if (authc_wait_ready(c, 5000) < 0)
		log_warn("event=auth_not_ready (AUTH not offered until it is)");
	smtpd_set_authc(ctx->smtpd, c);
	return 0;
}

/* SIGHUP: new certificates for new sessions; live sessions keep theirs.
 * (The relay credentials are read again too, in main_on_signal; the rest
 * of the configuration needs a restart for now.) */
static void main_reload_tls(struct main_ctx *ctx)
{
	struct tls_server *tls = NULL;
	char err[1024];
	if (tls_server_create(&ctx->conf->tls, ctx->conf->hostname, &tls, err, sizeof(err)) < 0) {
		log_err("event=reload status=failed reason=\"%s\" (keeping the loaded certificates)",
			err);
		return;
	}
	smtpd_set_tls(ctx->smtpd, tls);
	log_info("event=reload status=ok tls_contexts=%zu", tls != NULL ? tls_server_count(tls) : 0);
}

static void main_on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct main_ctx *ctx = arg;
	if (sig == SIGHUP) {
		main_reload_tls(ctx);
		/* as the service user now: an unreadable file keeps the old pair */
		credentials_reload(ctx->creds);
		return;
	}
	if (sig == SIGUSR1) {
		if (ctx->qmgr != NULL)
			qmgr_flush(ctx->qmgr); /* like postqueue -f */
		return;
	}
	if (ctx->stopping || ctx->qmgr == NULL) { /* a second signal: now */
		event_base_loopbreak(ctx->base);
		return;
	}
	ctx->stopping = true;
	log_info("event=shutdown signal=%d sessions=%zu", (int)sig,
		 smtpd_session_count(ctx->smtpd));
	smtpd_shutdown(ctx->smtpd);
	/* Attempts in flight finish and record their results first, so a
	 * restart does not deliver their recipients again. */
	qmgr_drain(ctx->qmgr, MAIN_DRAIN_TIMEOUT_MS, main_on_drained, ctx);
}

static int main_serve(const char *path)
{
	struct conf *conf = main_load_conf(path);
	if (conf == NULL)
		return 2;
	enum log_level lvl = LOG_LVL_INFO;
	log_level_parse(conf->log_level, &lvl);
	log_init(lvl, "hikyaku");
	if (path == NULL)
		main_print_default(conf);

	int ret = 1;
	struct users *users = NULL, *auth_users = NULL;
	struct aliases *aliases = NULL;
	struct spool *spool = NULL;
	struct main_ctx ctx = {0};
	struct event *sigs[4] = {0};
	const char *error = NULL;
	char err[1024];

	if (conf->users_file[0] != '\0' &&
	    (users_load(conf->users_file, &users, err, sizeof(err)) < 0 ||
	     users_load(conf->users_file, &auth_users, err, sizeof(err)) < 0)) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	if (conf->aliases_file[0] != '\0' &&
	    aliases_load(conf->aliases_file, &aliases, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		goto out;
	}
	signal(SIGPIPE, SIG_IGN);
	ctx.base = event_base_new();
	if (ctx.base == NULL) {
		fprintf(stderr, "hikyaku: cannot create the event loop\n");
		goto out;
	}
	/* Catch the stop signals before the (possibly long) spool recovery, so a
	 * SIGTERM then still ends in a clean shutdown once the loop runs. */
	const int signums[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
	for (size_t i = 0; i < 4; i++) {
		sigs[i] = evsignal_new(ctx.base, signums[i], main_on_signal, &ctx);
		event_add(sigs[i], NULL);
	}
	ctx.conf = conf;
	if (smtpd_create(ctx.base, conf, users, aliases, &ctx.smtpd, &error) < 0) {
		fprintf(stderr, "hikyaku: %s\n", error);
		goto out;
	}
	/* Keys are often readable by root only: load them before dropping. */
	struct tls_server *tls = NULL;
	if (tls_server_create(&conf->tls, conf->hostname, &tls, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: tls: %s\n", err);
		goto out;
	}
	smtpd_set_tls(ctx.smtpd, tls);
	/* So are the relay credentials (documented as root's, mode 0600). */
	ctx.creds = credentials_load(conf);
	main_raise_nofile(conf);
	if (main_drop_privileges(conf) < 0)
		goto out;
	if (main_start_auth(&ctx, &auth_users) < 0)
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
	ctx.qmgr = qmgr_create(ctx.base, conf, spool);
	qmgr_set_credentials(ctx.qmgr, ctx.creds);
	/* Before the recovery, so that held messages found there are parked
	 * where `hikyaku queue release` finds them. */
	if (ctl_server_create(ctx.base, conf->spool_dir, ctx.qmgr, &ctx.ctl, &error) < 0) {
		fprintf(stderr, "hikyaku: %s\n", error);
		goto out;
	}
	int n = qmgr_recover(ctx.qmgr, &error);
	if (n < 0) {
		fprintf(stderr, "hikyaku: spool recovery: %s\n", error);
		goto out;
	}
	log_info("event=start version=%s config=%s queued=%d", HIKYAKU_VERSION, conf->file, n);
	smtpd_start(ctx.smtpd, spool, ctx.qmgr);

	main_loop_run(ctx.base);
	ret = 0;
out:
	for (size_t i = 0; i < 4; i++) {
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	}
	ctl_server_free(&ctx.ctl); /* before the queue manager it controls */
	smtpd_free(&ctx.smtpd);
	authd_free(&ctx.authd); /* after smtpd: its sessions cancel their requests */
	users_free(&auth_users);
	qmgr_free(&ctx.qmgr);
	credentials_free(&ctx.creds); /* after the queue manager that used them */
	spool_close(&spool);
	users_free(&users);
	aliases_free(&aliases);
	if (ctx.base != NULL)
		event_base_free(ctx.base);
	conf_free(&conf);
	if (ret == 0)
		log_info("event=stopped");
	return ret;
}

static int main_check(const char *path)
{
	struct conf *conf = main_load_conf(path);
	if (conf == NULL)
		return 2;
	int warnings = conf_check(conf, stdout);
	if (conf->users_file[0] != '\0') {
		struct users *users = NULL;
		char err[1024];
		if (users_load(conf->users_file, &users, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: %s\n", err);
			conf_free(&conf);
			return 2;
		}
		printf("users file %s: %zu users\n", conf->users_file, users_count(users));
		warnings += conf_check_users(conf, users, stdout);
		users_free(&users);
	}
	if (conf->aliases_file[0] != '\0') {
		struct aliases *aliases = NULL;
		char err[1024];
		if (aliases_load(conf->aliases_file, &aliases, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: %s\n", err);
			conf_free(&conf);
			return 2;
		}
		printf("aliases file %s: %zu aliases\n", conf->aliases_file,
		       aliases_count(aliases));
		aliases_free(&aliases);
	}
	printf("%s: configuration ok (%d warning%s)\n", conf->file, warnings,
	       warnings == 1 ? "" : "s");
	conf_free(&conf);
	return 0;
}

/* `hikyaku queue [-c FILE] ...`: the configuration only says where the
 * spool (and so the control socket) is. */
static int main_queue(int argc, char **argv, int first)
{
	const char *path = NULL;
	char **rest = xcalloc((size_t)argc + 1, sizeof(*rest));
	int n = 0;
	for (int i = first; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else
			rest[n++] = argv[i];
	}
	struct conf *conf = main_load_conf(path);
	int rc = 2;
	if (conf != NULL)
		rc = ctl_client_main(conf->spool_dir, n, rest);
	conf_free(&conf);
	free(rest);
	return rc;
}

static const char *main_opt_conf(int argc, char **argv, int first, int *bad_r)
{
	const char *path = NULL;
	*bad_r = 0;
	for (int i = first; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else
			*bad_r = 1;
	}
	return path;
}

int main(int argc, char **argv)
{
	int bad;
	const char *prog = argc > 0 ? strrchr(argv[0], '/') : NULL;
	prog = prog != NULL ? prog + 1 : argc > 0 ? argv[0] : "";
	if (strcmp(prog, "mailq") == 0) {
		for (int i = 1; i < argc; i++) {
			if (strcmp(argv[i], "-c") != 0 && strcmp(argv[i], "--json") != 0 &&
			    (i == 1 || strcmp(argv[i - 1], "-c") != 0)) {
				fprintf(stderr, "usage: mailq [-c FILE] [--json]\n");
				return 2;
			}
		}
		return main_queue(argc, argv, 1); /* no words: list */
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "serve") == 0) {
		const char *path = main_opt_conf(argc, argv, 2, &bad);
		if (!bad)
			return main_serve(path);
	} else if (strcmp(cmd, "check") == 0) {
		const char *path = main_opt_conf(argc, argv, 2, &bad);
		if (!bad)
			return main_check(path);
	} else if (strcmp(cmd, "config") == 0 && argc >= 3 && strcmp(argv[2], "dump") == 0) {
		const char *path = main_opt_conf(argc, argv, 3, &bad);
		if (!bad) {
			struct conf *conf = main_load_conf(path);
			if (conf == NULL)
				return 2;
			conf_dump(conf, stdout);
			conf_free(&conf);
			return 0;
		}
	} else if (strcmp(cmd, "config") == 0 && argc == 3 && strcmp(argv[2], "reference") == 0) {
		conf_reference(stdout);
		return 0;
	} else if (strcmp(cmd, "queue") == 0) {
		return main_queue(argc, argv, 2);
	} else if (strcmp(cmd, "user") == 0) {
		return auth_user_command(argc - 1, argv + 1);
	} else if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("hikyaku %s\n", HIKYAKU_VERSION);
		return 0;
	} else if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
		   strcmp(cmd, "-h") == 0) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
