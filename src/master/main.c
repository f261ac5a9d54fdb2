/* main.c — the hikyaku binary: `serve`, `check`, `config dump|reference`,
 * `queue`, `user`, `dkim keygen|check`, `spf check` (and `mailq`, the same as `queue list`,
 * when called by that name), `sendmail` (also by the names sendmail and newaliases).
 * As `serve` it is the master (master.c), which starts the queue and smtpd
 * processes as this same binary with the hidden word `__child` (child.c). */
#include "conf/conf.h"
#include "conf/aliases.h"
#include "conf/credentials.h"
#include "auth/users.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/fsutil.h"
#include "lib/log.h"
#include "master/master.h"
#include "master/sbxcmd.h"
#include "obs/logsum.h"
#include "master/perms.h"
#include "auth/usercmd.h"
#include "dauth/dkim_cmd.h"
#include "dauth/dmarcrep_cmd.h"
#include "dauth/spf_cmd.h"
#include "sendmail/sendmail.h"

#include <errno.h>
#include <event2/event.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#define HIKYAKU_VERSION "0.1.0"

static void usage(FILE *out)
{
	fprintf(out, "usage: hikyaku serve [-c FILE]       run the mail server\n"
		     "       hikyaku sandbox [--smtp ADDR:PORT] [--http ADDR:PORT] [--dir DIR]\n"
		     "                                     capture mail, inspect it on the web (Mailpit API)\n"
		     "       hikyaku sandbox inboxes [-c FILE | --dir DIR] [NAME...]  inbox tokens\n"
		     "       hikyaku check [-c FILE]       validate a configuration, show warnings\n"
		     "       hikyaku fix-permissions [-c FILE]  give the spool and Maildirs to user:\n"
		     "       hikyaku config dump [-c FILE] print the effective configuration\n"
		     "       hikyaku config reference      print the settings reference (Markdown)\n"
		     "       hikyaku user add|passwd|del|list [-c FILE | -f USERS] [NAME]\n"
		     "       hikyaku queue [-c FILE] [--json] list|show QID|flush [QID|DOMAIN]|\n"
		     "                     delete QID|hold QID|release QID\n"
		     "       hikyaku dkim keygen --domain D --selector S [--type ed25519|rsa]\n"
		     "                    [--bits 2048] [--out FILE]   make a DKIM key, print its record\n"
		     "       hikyaku dkim check DOMAIN SELECTOR [-c FILE] [-k KEY]  compare with DNS\n"
		     "       mailq [-c FILE] [--json]      the same as hikyaku queue list\n"
		     "       hikyaku dmarc report [-c FILE] [--day YYYYMMDD] [--dry-run|--out DIR]\n"
		     "                                     send a day's DMARC aggregate reports\n"
		     "       hikyaku dmarc stats [-c FILE] [--day YYYYMMDD]  what DMARC recorded\n"
		     "       hikyaku spf check [-c FILE] IP SENDER [HELO]\n"
		     "                                     SPF result for a sender, and why\n"
		     "       hikyaku sendmail [-t] [-i] [-f SENDER] [-C FILE] ... [RCPT...]\n"
		     "                                     submit a message (also as sendmail)\n"
		     "       hikyaku log summary [-n TOP] FILE...  a report of hikyaku's logs\n"
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
	int errors = perms_check(conf, stdout, &warnings);
	if (errors > 0)
		printf("%s: %d error%s (%d warning%s)\n", conf->file, errors,
		       errors == 1 ? "" : "s", warnings, warnings == 1 ? "" : "s");
	else
		printf("%s: configuration ok (%d warning%s)\n", conf->file, warnings,
		       warnings == 1 ? "" : "s");
	conf_free(&conf);
	return errors > 0 ? 1 : 0;
}

static int main_fix_permissions(const char *path)
{
	struct conf *conf = main_load_conf(path);
	if (conf == NULL)
		return 2;
	int rc = perms_fix(conf, stdout) < 0 ? 1 : 0;
	conf_free(&conf);
	return rc;
}

/* `hikyaku queue [-c FILE] ...`: the configuration only says where the
 * spool (and so the control socket) is. */
static int main_queue(int argc, char **argv, int first, bool mailq)
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
	/* Called as mailq (by cron jobs, monitoring): the installed
	 * configuration, as sendmail finds it. */
	if (mailq)
		path = sendmail_conf_path(path);
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
		return main_queue(argc, argv, 1, true); /* no words: list */
	}
	if (strcmp(prog, "sendmail") == 0 || strcmp(prog, "newaliases") == 0)
		return sendmail_main(prog, argc, argv, 1);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	const char *cmd = argv[1];
	if (strcmp(cmd, "serve") == 0) {
		const char *path = main_opt_conf(argc, argv, 2, &bad);
		if (!bad)
			return master_serve(path);
	} else if (strcmp(cmd, "sandbox") == 0) {
		return sbxcmd_main(argc, argv, 2);
	} else if (strcmp(cmd, "__child") == 0) {
		return child_main(argc, argv);
	} else if (strcmp(cmd, "__probe") == 0) {
		return child_probe_main(argc, argv);
	} else if (strcmp(cmd, "check") == 0) {
		const char *path = main_opt_conf(argc, argv, 2, &bad);
		if (!bad)
			return main_check(path);
	} else if (strcmp(cmd, "fix-permissions") == 0) {
		const char *path = main_opt_conf(argc, argv, 2, &bad);
		if (!bad)
			return main_fix_permissions(path);
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
	} else if (strcmp(cmd, "sendmail") == 0) {
		return sendmail_main("sendmail", argc, argv, 2);
	} else if (strcmp(cmd, "queue") == 0) {
		return main_queue(argc, argv, 2, false);
	} else if (strcmp(cmd, "dkim") == 0) {
		return dkim_command(argc - 1, argv + 1);
	} else if (strcmp(cmd, "dmarc") == 0) {
		return dmarcrep_command(argc - 1, argv + 1);
	} else if (strcmp(cmd, "spf") == 0) {
		return spf_command(argc - 1, argv + 1);
	} else if (strcmp(cmd, "log") == 0 && argc >= 3 && strcmp(argv[2], "summary") == 0) {
		return logsum_main(argc - 3, argv + 3);
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
