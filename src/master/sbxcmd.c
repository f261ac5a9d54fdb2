/* sbxcmd.c — `hikyaku sandbox` (issue 13): a mail sandbox without a
 * configuration file (SMTP on 127.0.0.1:1025 and the web UI and API on
 * 127.0.0.1:8025, Mailpit's ports, everything under ./var/sandbox), and
 * `hikyaku sandbox inboxes`, which prints each inbox's API token. Runs in
 * the master's place, as the invoking user (root drops to user: nobody
 * for the children as always). Inputs: the command line (trusted). */
#include "master/sbxcmd.h"

#include "conf/conf.h"
#include "lib/buf.h"
#include "master/master.h"
#include "obs/sbxstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SBX_SMTP_DEFAULT "127.0.0.1:1025"
#define SBX_HTTP_DEFAULT "127.0.0.1:8025"
#define SBX_DIR_DEFAULT "./var/sandbox"

/* Written into double-quoted YAML: no quote, backslash or control. */
static bool sbxcmd_yaml_safe(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p < 0x20 || *p == '"' || *p == '\\' || *p == 0x7f)
			return false;
	return s[0] != '\0';
}

static bool sbxcmd_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0 ||
	       strncmp(addr, "localhost:", 10) == 0;
}

/* The configuration `hikyaku sandbox` runs: one sandbox listener that
 * takes any sender, recipient and login (AUTH in clear only on loopback;
 * STARTTLS with a self-signed certificate), the http listener with the
 * UI, the store in DIR/store, the spool and Maildirs beside it (the http
 * process may write only the store). Requests without credentials from
 * loopback see inbox "default". */
int sbxcmd_config_text(const char *smtp, const char *http, const char *dir, struct buf *out)
{
	if (!sbxcmd_yaml_safe(smtp) || !sbxcmd_yaml_safe(http) || !sbxcmd_yaml_safe(dir))
		return -1;
	buf_printf(out,
	           "user: nobody\n"
	           "listen:\n"
	           "  - address: \"%s\"\n"
	           "    sandbox: true\n"
	           "    plaintext_auth: %s\n"
	           "http:\n"
	           "  listen: \"%s\"\n"
	           "tls:\n"
	           "  self_signed_dir: \"%s/tls\"\n"
	           "spool_dir: \"%s/spool\"\n"
	           "maildir_root: \"%s/mail\"\n"
	           "local_domains: [localhost]\n"
	           "accept_any_user: true\n"
	           "sandbox:\n"
	           "  enabled: true\n"
	           "  dir: \"%s/store\"\n"
	           "  auth: any\n"
	           "  anonymous_inbox: default\n",
	           smtp, sbxcmd_loopback(smtp) ? "true" : "false", http, dir, dir, dir, dir);
	return 0;
}

static void sbxcmd_usage(void)
{
	fprintf(stderr, "usage: hikyaku sandbox [--smtp ADDR:PORT] [--http ADDR:PORT] [--dir DIR]\n"
	                "       hikyaku sandbox inboxes [-c FILE | --dir DIR] [NAME...]\n");
}

struct sbxcmd_list {
	const unsigned char *key;
	bool default_seen;
};

static void sbxcmd_print(void *arg, const char *inbox, uint64_t n)
{
	struct sbxcmd_list *l = arg;
	char tok[65];
	sbx_token_for(l->key, inbox, tok);
	printf("%-24s %8llu  %s.%s\n", inbox, (unsigned long long)n, inbox, tok);
	if (strcmp(inbox, "default") == 0)
		l->default_seen = true;
}

static int sbxcmd_inboxes(int argc, char **argv, int first)
{
	const char *path = NULL, *dir = NULL;
	int nnames = 0;
	char **names = argv + first;
	for (int i = first; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
			path = argv[++i];
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (argv[i][0] == '-') {
			sbxcmd_usage();
			return 2;
		} else
			names[nnames++] = argv[i];
	}
	char store_dir[4096];
	struct conf *conf = NULL;
	char err[1024];
	if (dir != NULL) {
		snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	} else if (path != NULL) {
		if (conf_load(path, &conf, err, sizeof(err)) < 0) {
			fprintf(stderr, "hikyaku: %s\n", err);
			return 2;
		}
		snprintf(store_dir, sizeof(store_dir), "%s", conf->sandbox.dir);
		conf_free(&conf);
	} else {
		snprintf(store_dir, sizeof(store_dir), "%s/store", SBX_DIR_DEFAULT);
	}
	/* Only a store the sandbox made: this command creates nothing (run
	 * as root it would leave files the service user cannot open). */
	char probe[4200];
	snprintf(probe, sizeof(probe), "%s/token.key", store_dir);
	if (access(probe, R_OK) != 0) {
		fprintf(stderr, "hikyaku: %s: %s (has the sandbox run, and may you read it?)\n",
		        probe, strerror(errno));
		return 1;
	}
	struct sbx_store *s = NULL;
	if (sbx_store_open(store_dir, &s, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 1;
	}
	unsigned char key[SBX_TOKEN_KEY_LEN];
	if (sbx_store_token_key(s, key) < 0) {
		fprintf(stderr, "hikyaku: %s: cannot read\n", probe);
		sbx_store_close(&s);
		return 1;
	}
	struct sbxcmd_list l = {.key = key};
	printf("%-24s %8s  %s\n", "INBOX", "MESSAGES", "TOKEN (Authorization: Bearer TOKEN)");
	int rc = sbx_store_inboxes(s, sbxcmd_print, &l) < 0 ? 1 : 0;
	if (!l.default_seen)
		sbxcmd_print(&l, "default", 0);
	for (int i = 0; i < nnames; i++) {
		if (!sbx_inbox_valid(names[i])) {
			fprintf(stderr, "hikyaku: %s: not an inbox name\n", names[i]);
			rc = 1;
			continue;
		}
		if (strcmp(names[i], "default") != 0)
			sbxcmd_print(&l, names[i], 0);
	}
	explicit_bzero(key, sizeof(key));
	sbx_store_close(&s);
	return rc;
}

int sbxcmd_main(int argc, char **argv, int first)
{
	if (first < argc && strcmp(argv[first], "inboxes") == 0)
		return sbxcmd_inboxes(argc, argv, first + 1);
	const char *smtp = SBX_SMTP_DEFAULT, *http = SBX_HTTP_DEFAULT, *dir = SBX_DIR_DEFAULT;
	for (int i = first; i < argc; i++) {
		if (i + 1 < argc && strcmp(argv[i], "--smtp") == 0)
			smtp = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--http") == 0)
			http = argv[++i];
		else if (i + 1 < argc && strcmp(argv[i], "--dir") == 0)
			dir = argv[++i];
		else {
			sbxcmd_usage();
			return 2;
		}
	}
	struct buf text;
	buf_init(&text, 64 * 1024);
	if (sbxcmd_config_text(smtp, http, dir, &text) < 0) {
		fprintf(stderr, "hikyaku: sandbox: an address or directory with a quote, backslash "
		                "or control character\n");
		buf_free(&text);
		return 2;
	}
	printf("hikyaku sandbox: SMTP on %s (any sender, recipient and login; nothing is "
	       "delivered)\n"
	       "  web UI and Mailpit-compatible API on http://%s/\n"
	       "  captured mail under %s/store; `hikyaku sandbox inboxes --dir %s` shows the "
	       "inbox tokens\n",
	       smtp, http, dir, dir);
	fflush(stdout);
	int rc = master_serve_text(NULL, buf_cstr(&text));
	buf_free(&text);
	return rc;
}
