/* credentials.c — SMTP AUTH credentials files, read while the master is
 * root and kept in memory (see credentials.h). Runs in the master at start
 * and on SIGHUP, on the main loop; the queue manager only looks pairs up.
 * Input: root-owned files, read with a bounded line; a line that does not
 * fit is refused rather than used cut short. */
#include "conf/credentials.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/log.h"

#define CREDENTIALS_FIELD_MAX 256 /* user and password, each with its NUL */

struct credentials_file {
	char *path;
	bool ok; /* user and pass hold a pair */
	char user[CREDENTIALS_FIELD_MAX];
	char pass[CREDENTIALS_FIELD_MAX];
};

struct credentials {
	struct credentials_file *files;
	size_t n;
};

/* One file into user/pass; -1 with the reason logged. */
static int credentials_read(const char *path, char user[CREDENTIALS_FIELD_MAX],
                            char pass[CREDENTIALS_FIELD_MAX])
{
	char line[600], qf[LOG_Q_MAX];
	int rc = -1;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		log_err("event=credentials_error file=%s reason=\"cannot read: %s\"",
		        log_qs(qf, path), strerror(errno));
		return -1;
	}
	errno = 0;
	if (fgets(line, sizeof(line), f) == NULL) {
		log_err("event=credentials_error file=%s reason=\"cannot read: %s\"",
		        log_qs(qf, path), errno != 0 ? strerror(errno) : "empty file");
	} else if (strchr(line, '\n') == NULL && fgetc(f) != EOF) {
		log_err("event=credentials_error file=%s reason=\"line too long\"",
		        log_qs(qf, path));
	} else {
		line[strcspn(line, "\r\n")] = '\0';
		char *colon = strchr(line, ':');
		if (colon != NULL && colon > line &&
		    (size_t)(colon - line) < CREDENTIALS_FIELD_MAX &&
		    strlen(colon + 1) < CREDENTIALS_FIELD_MAX) {
			explicit_bzero(user, CREDENTIALS_FIELD_MAX);
			explicit_bzero(pass, CREDENTIALS_FIELD_MAX);
			memcpy(user, line, (size_t)(colon - line));
			memcpy(pass, colon + 1, strlen(colon + 1));
			rc = 0;
		} else {
			log_err("event=credentials_error file=%s reason=\"expected user:password\"",
			        log_qs(qf, path));
		}
	}
	explicit_bzero(line, sizeof(line));
	fclose(f);
	return rc;
}

static void credentials_add(struct credentials *cr, const char *path)
{
	if (path == NULL || path[0] == '\0')
		return;
	for (size_t i = 0; i < cr->n; i++)
		if (strcmp(cr->files[i].path, path) == 0)
			return;
	cr->files = xreallocarray(cr->files, cr->n + 1, sizeof(*cr->files));
	struct credentials_file *cf = &cr->files[cr->n++];
	memset(cf, 0, sizeof(*cf));
	cf->path = xstrdup(path);
}

struct credentials *credentials_load(const struct conf *conf)
{
	struct credentials *cr = xcalloc(1, sizeof(*cr));

	credentials_add(cr, conf->delivery.smarthost_credentials);
	for (size_t i = 0; i < conf->n_routes; i++)
		credentials_add(cr, conf->routes[i].credentials);
	credentials_reload(cr);
	return cr;
}

void credentials_reload(struct credentials *cr)
{
	char user[CREDENTIALS_FIELD_MAX], pass[CREDENTIALS_FIELD_MAX];
	char qf[LOG_Q_MAX];

	for (size_t i = 0; cr != NULL && i < cr->n; i++) {
		struct credentials_file *cf = &cr->files[i];
		if (credentials_read(cf->path, user, pass) < 0) {
			if (cf->ok)
				log_warn("event=credentials_kept file=%s reason=\"keeping the "
				         "credentials read before\"",
				         log_qs(qf, cf->path));
			continue;
		}
		memcpy(cf->user, user, sizeof(cf->user));
		memcpy(cf->pass, pass, sizeof(cf->pass));
		cf->ok = true;
		log_info("event=credentials_loaded file=%s", log_qs(qf, cf->path));
	}
	explicit_bzero(user, sizeof(user));
	explicit_bzero(pass, sizeof(pass));
}

bool credentials_get(const struct credentials *cr, const char *file, const char **user_r,
                     const char **pass_r)
{
	for (size_t i = 0; cr != NULL && file != NULL && i < cr->n; i++) {
		const struct credentials_file *cf = &cr->files[i];
		if (strcmp(cf->path, file) == 0 && cf->ok) {
			*user_r = cf->user;
			*pass_r = cf->pass;
			return true;
		}
	}
	return false;
}

void credentials_free(struct credentials **crp)
{
	struct credentials *cr = *crp;
	if (cr == NULL)
		return;
	for (size_t i = 0; i < cr->n; i++) {
		free(cr->files[i].path);
		explicit_bzero(&cr->files[i], sizeof(cr->files[i]));
	}
	free(cr->files);
	free(cr);
	*crp = NULL;
}
