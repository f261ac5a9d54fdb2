/* dmarcrep_report.h — DMARC aggregate reports (RFC 7489 §7.2) from the
 * day files of dmarcrep.h: aggregation per (policy domain, policy, rua
 * set), the Appendix C feedback XML, gzip, the MIME message (§7.2.1.1),
 * the external-destination check (§7.1) and the run that sends a day's
 * reports through the local submission socket (so they are DKIM-signed
 * like other local mail) and marks what it handled in
 * <spool>/dmarc/YYYYMMDD.sent.
 *
 * Used by `hikyaku dmarc report|stats` (dmarcrep_cmd.c) and by the queue
 * process's daily run (a worker thread: everything here blocks). The
 * records are hostile (domains and selectors from the network): the XML
 * writer escapes every value. */
#ifndef HK_DAUTH_DMARCREP_REPORT_H
#define HK_DAUTH_DMARCREP_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "dauth/dmarcrep.h"
#include "lib/buf.h"

struct conf;

/* One row of a report: a distinct (source_ip, disposition, results,
 * identifiers) with its count, kept encoded (a record body with the
 * time and the policy fields cleared; dmarcrep_rec_decode reads it). */
struct dmarcrep_row {
	unsigned char *key;
	size_t len;
	uint64_t count;
};

/* One report: a policy as published (rec's policy fields) and its rows. */
struct dmarcrep_group {
	struct dmarcrep_rec policy;
	char report_id[32];
	struct dmarcrep_row *rows;
	size_t nrows;
	uint64_t messages;
};

struct dmarcrep_day {
	char day[9];
	time_t begin, end; /* [begin, end) */
	struct dmarcrep_group *groups;
	size_t ngroups;
	struct dmarcrep_scan scan;
};

/* Aggregate the records of a day file's bytes (pure). */
void dmarcrep_day_aggregate(const char *day, const void *p, size_t len, struct dmarcrep_day *d);
/* Read <spool>/dmarc/<day> and aggregate it: 0, 1 no such file, -1. */
int dmarcrep_day_load(const char *spool_dir, const char *day, uint64_t max, struct dmarcrep_day *d,
                      const char **error_r);
void dmarcrep_day_clear(struct dmarcrep_day *d);

struct dmarcrep_meta {
	const char *org_name;
	const char *email;
	const char *submitter; /* a domain: the report generator's */
};

/* XML 1.0 character data: & < > " ' as entities; controls and non-ASCII
 * (our values are domains, selectors, addresses) as '?'. */
void dmarcrep_xml_escape(struct buf *out, const char *s);
/* The Appendix C feedback document of g. */
int dmarcrep_xml(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                 const struct dmarcrep_group *g, struct buf *out);
/* gzip (RFC 1952) of p into out: 0 or -1. */
int dmarcrep_gzip(const void *p, size_t len, struct buf *out);
/* "submitter!domain!begin!end.xml.gz" (§7.2.1.1). */
void dmarcrep_filename(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                       const struct dmarcrep_group *g, char *out, size_t outlen);
/* The whole message (CRLF lines): From, To (the rcpts), Date, Subject
 * "Report Domain: D Submitter: S Report-ID: <ID>", a text part and the
 * gzip as application/gzip, base64. */
int dmarcrep_mime(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                  const struct dmarcrep_group *g, const char *const *rcpts, size_t nrcpts,
                  const void *gz, size_t gzlen, time_t now, struct buf *out);

/* The address of a "mailto:" rua (local@domain, %-decoding refused) into
 * out; -1 when it is not one we can send to. */
int dmarcrep_rua_address(const char *rua, char *out, size_t outlen);

/* ---- the run ---- */

struct dmarcrep_opts {
	const char *day;     /* YYYYMMDD */
	bool dry_run;        /* say what would be sent, send and mark nothing */
	const char *out_dir; /* write the messages and .xml.gz here instead of sending */
	FILE *out;           /* what it did, for people (NULL: logs only) */
	/* The queue's run: told the submission's connection (to cut it at
	 * stop, as the pickup does), and asked before each report. */
	void (*on_fd)(void *arg, int fd);
	bool (*stopping)(void *arg);
	void *arg;
};
/* Send (or write) every report of the day not sent yet. 0 done (every
 * report handled), 1 some must be tried again (the daemon is down, a DNS
 * failure), -1 with *error_r. */
int dmarcrep_run(const struct conf *conf, const struct dmarcrep_opts *o, const char **error_r);
/* Has the day been handled completely (a "done" line in its .sent)? */
bool dmarcrep_day_done(const char *spool_dir, const char *day);

#endif
