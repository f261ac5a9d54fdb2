/* dmarcrep_cmd.c — `hikyaku dmarc report|stats` (dmarcrep_cmd.h): send a
 * day's DMARC aggregate reports by hand, or show what is recorded. Runs
 * as a command line tool (root or the service user: it reads the spool
 * and writes the day's .sent file). */
#include "dauth/dmarcrep_cmd.h"

#include "conf/conf.h"
#include "dauth/dmarcrep.h"
#include "dauth/dmarcrep_report.h"
#include "lib/alloc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void dmarcrep_cmd_usage(void)
{
	fprintf(
	    stderr,
	    "usage: hikyaku dmarc report [-c FILE] [--day YYYYMMDD] [--dry-run | --out DIR]\n"
	    "       hikyaku dmarc stats [-c FILE] [--day YYYYMMDD]\n"
	    "  report: send the day's aggregate reports (default: yesterday, UTC) not sent yet\n"
	    "  stats:  what is recorded, per day and policy domain\n");
}

static void dmarcrep_cmd_stats_day(const struct conf *conf, const char *day)
{
	struct dmarcrep_day d;
	const char *error = NULL;
	int rc = dmarcrep_day_load(conf->spool_dir, day, conf->dmarc.max_day_size, &d, &error);
	if (rc != 0) {
		printf("%s: %s\n", day, rc > 0 ? "nothing recorded" : error);
		dmarcrep_day_clear(&d);
		return;
	}
	printf("%s: %zu messages, %zu reports, damaged %zu (%zu octets), %s\n", day, d.scan.records,
	       d.ngroups, d.scan.bad, d.scan.bad_octets,
	       dmarcrep_day_done(conf->spool_dir, day) ? "sent" : "not sent");
	struct dmarcrep_rec *r = xmalloc(sizeof(*r));
	for (size_t i = 0; i < d.ngroups; i++) {
		const struct dmarcrep_group *g = &d.groups[i];
		unsigned long long pass = 0, fail = 0, disp[3] = {0};
		for (size_t j = 0; j < g->nrows; j++) {
			if (dmarcrep_rec_decode(g->rows[j].key, g->rows[j].len, r, &error) < 0)
				continue;
			if (r->dkim_aligned || r->spf_aligned)
				pass += g->rows[j].count;
			else
				fail += g->rows[j].count;
			disp[r->disposition < 3 ? r->disposition : 0] += g->rows[j].count;
		}
		printf("  %s report_id=%s p=%s messages=%llu pass=%llu fail=%llu none=%llu "
		       "quarantine=%llu reject=%llu rows=%zu rua=",
		       g->policy.policy_domain, g->report_id, dmarc_policy_name(g->policy.p),
		       (unsigned long long)g->messages, pass, fail, disp[0], disp[1], disp[2],
		       g->nrows);
		for (size_t k = 0; k < g->policy.nrua; k++)
			printf("%s%s", k > 0 ? "," : "", g->policy.rua[k]);
		printf("%s\n", g->policy.nrua == 0 ? "-" : "");
	}
	free(r);
	dmarcrep_day_clear(&d);
}

static int dmarcrep_cmd_name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int dmarcrep_cmd_stats(const struct conf *conf, const char *day)
{
	if (day != NULL) {
		dmarcrep_cmd_stats_day(conf, day);
		return 0;
	}
	char path[4200];
	snprintf(path, sizeof(path), "%s/dmarc", conf->spool_dir);
	DIR *dir = opendir(path);
	if (dir == NULL) {
		printf("nothing recorded (%s)\n", path);
		return 0;
	}
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	time_t b, e;
	while ((de = readdir(dir)) != NULL && n < 10000) {
		if (dmarcrep_day_range(de->d_name, &b, &e) < 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		names[n++] = xstrdup(de->d_name);
	}
	closedir(dir);
	if (n > 0)
		qsort(names, n, sizeof(*names), dmarcrep_cmd_name_cmp);
	for (size_t i = 0; i < n; i++) {
		dmarcrep_cmd_stats_day(conf, names[i]);
		free(names[i]);
	}
	free(names);
	if (n == 0)
		printf("nothing recorded\n");
	return 0;
}

int dmarcrep_command(int argc, char **argv)
{
	const char *path = NULL, *day = NULL, *out_dir = NULL;
	bool dry = false;
	if (argc < 2 || (strcmp(argv[1], "report") != 0 && strcmp(argv[1], "stats") != 0)) {
		dmarcrep_cmd_usage();
		return 2;
	}
	bool report = strcmp(argv[1], "report") == 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			path = argv[++i];
		} else if (strcmp(argv[i], "--day") == 0 && i + 1 < argc) {
			day = argv[++i];
		} else if (report && strcmp(argv[i], "--dry-run") == 0) {
			dry = true;
		} else if (report && strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
			out_dir = argv[++i];
		} else {
			dmarcrep_cmd_usage();
			return 2;
		}
	}
	time_t b, e;
	if ((day != NULL && dmarcrep_day_range(day, &b, &e) < 0) || (dry && out_dir != NULL)) {
		dmarcrep_cmd_usage();
		return 2;
	}
	struct conf *conf = NULL;
	char err[1024];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "hikyaku: %s\n", err);
		return 2;
	}
	int rc;
	if (!report) {
		rc = dmarcrep_cmd_stats(conf, day);
	} else {
		char yesterday[9];
		dmarcrep_day_name(time(NULL) - 86400, yesterday);
		struct dmarcrep_opts o = {.day = day != NULL ? day : yesterday,
		                          .dry_run = dry,
		                          .out_dir = out_dir,
		                          .out = stdout};
		const char *error = NULL;
		rc = dmarcrep_run(conf, &o, &error);
		if (rc < 0) {
			fprintf(stderr, "hikyaku: dmarc report %s: %s\n", o.day, error);
			rc = 1;
		} else if (rc == 1) {
			rc = 3; /* try again later */
		}
	}
	conf_free(&conf);
	return rc;
}
