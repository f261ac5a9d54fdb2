/* dmarcrep_report.c — DMARC aggregate reports from the day files
 * (dmarcrep_report.h). Runs in the CLI and on a worker thread of the
 * queue; blocks (files, DNS on a private event base, the submission
 * socket). Hostile: the records' strings (escaped in the XML, checked as
 * addresses before they become recipients) and DNS answers. */
#include "dauth/dmarcrep_report.h"

#include "conf/conf.h"
#include "dauth/dmarc.h"
#include "dns/dns.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/log.h"
#include "lib/siphash.h"
#include "sendmail/submit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* ---- aggregation ---- */

struct agg_row {
	struct agg_row *next;
	uint64_t h;
	size_t group;
	struct dmarcrep_row row;
};

struct agg_group {
	struct agg_group *next;
	uint64_t h;
	char *key; /* the policy as text: what makes it a report of its own */
	size_t index;
};

struct agg {
	struct dmarcrep_day *d;
	unsigned char sipkey[SIPHASH_KEY_LEN];
	struct agg_row **rows;
	size_t nrows, rcap; /* buckets: rcap */
	struct agg_group **groups;
	size_t gcap;
	struct buf scratch;
};

static void agg_rehash_rows(struct agg *a)
{
	size_t ncap = a->rcap ? a->rcap * 2 : 1024;
	struct agg_row **nb = xcalloc(ncap, sizeof(*nb));
	for (size_t i = 0; i < a->rcap; i++) {
		for (struct agg_row *r = a->rows[i], *next; r != NULL; r = next) {
			next = r->next;
			r->next = nb[r->h & (ncap - 1)];
			nb[r->h & (ncap - 1)] = r;
		}
	}
	free(a->rows);
	a->rows = nb;
	a->rcap = ncap;
}

/* The group (report) of r's policy: made when new. */
static size_t agg_group_of(struct agg *a, const struct dmarcrep_rec *r)
{
	struct buf k;
	buf_init(&k, 0);
	(void)buf_printf(&k, "%s %u %u %u %u %u", r->policy_domain, r->p, r->sp, r->pct,
	                 r->adkim_strict, r->aspf_strict);
	for (size_t i = 0; i < r->nrua; i++)
		(void)buf_printf(&k, " %s!%llu", r->rua[i], (unsigned long long)r->rua_max[i]);
	uint64_t h = siphash24(a->sipkey, k.data, k.len);
	if (a->gcap == 0) {
		a->gcap = 256;
		a->groups = xcalloc(a->gcap, sizeof(*a->groups));
	}
	for (struct agg_group *g = a->groups[h & (a->gcap - 1)]; g != NULL; g = g->next) {
		if (g->h == h && strcmp(g->key, buf_cstr(&k)) == 0) {
			buf_free(&k);
			return g->index;
		}
	}
	struct dmarcrep_day *d = a->d;
	struct agg_group *g = xcalloc(1, sizeof(*g));
	g->h = h;
	g->key = xstrdup(buf_cstr(&k));
	g->index = d->ngroups;
	g->next = a->groups[h & (a->gcap - 1)];
	a->groups[h & (a->gcap - 1)] = g;
	d->groups = xreallocarray(d->groups, d->ngroups + 1, sizeof(*d->groups));
	struct dmarcrep_group *dg = &d->groups[d->ngroups++];
	memset(dg, 0, sizeof(*dg));
	dg->policy = *r;
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256(k.data, k.len, md);
	snprintf(dg->report_id, sizeof(dg->report_id), "%s.%02x%02x%02x%02x%02x%02x%02x%02x",
	         d->day, md[0], md[1], md[2], md[3], md[4], md[5], md[6], md[7]);
	buf_free(&k);
	return g->index;
}

static int agg_add(const struct dmarcrep_rec *rec, void *arg)
{
	struct agg *a = arg;
	size_t gi = agg_group_of(a, rec);
	a->d->groups[gi].messages++;
	/* The row: the record without its time and policy. */
	struct dmarcrep_rec *r = xmalloc(sizeof(*r));
	*r = *rec;
	r->time = 0;
	r->p = r->sp = r->pct = 0;
	r->adkim_strict = r->aspf_strict = false;
	r->nrua = 0;
	buf_reset(&a->scratch);
	int rc = dmarcrep_rec_encode(r, &a->scratch);
	free(r);
	if (rc < 0)
		return 0;
	unsigned char gb[8];
	for (int i = 0; i < 8; i++)
		gb[i] = (unsigned char)(gi >> (8 * i));
	uint64_t h =
	    siphash24(a->sipkey, a->scratch.data, a->scratch.len) ^ siphash24(a->sipkey, gb, 8);
	if (a->nrows >= a->rcap)
		agg_rehash_rows(a);
	for (struct agg_row *x = a->rows[h & (a->rcap - 1)]; x != NULL; x = x->next) {
		if (x->h == h && x->group == gi && x->row.len == a->scratch.len &&
		    memcmp(x->row.key, a->scratch.data, x->row.len) == 0) {
			x->row.count++;
			return 0;
		}
	}
	struct agg_row *x = xcalloc(1, sizeof(*x));
	x->h = h;
	x->group = gi;
	x->row.key = xmalloc(a->scratch.len);
	memcpy(x->row.key, a->scratch.data, a->scratch.len);
	x->row.len = a->scratch.len;
	x->row.count = 1;
	x->next = a->rows[h & (a->rcap - 1)];
	a->rows[h & (a->rcap - 1)] = x;
	a->nrows++;
	return 0;
}

static int agg_row_cmp(const void *pa, const void *pb)
{
	const struct dmarcrep_row *x = pa, *y = pb;
	size_t n = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->key, y->key, n);
	return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Rows into their groups (sorted, so the output is stable); the tables go. */
static void agg_finish(struct agg *a)
{
	struct dmarcrep_day *d = a->d;
	for (size_t i = 0; i < a->rcap; i++) {
		for (struct agg_row *x = a->rows[i], *next; x != NULL; x = next) {
			next = x->next;
			struct dmarcrep_group *g = &d->groups[x->group];
			g->rows = xreallocarray(g->rows, g->nrows + 1, sizeof(*g->rows));
			g->rows[g->nrows++] = x->row;
			free(x);
		}
	}
	free(a->rows);
	for (size_t i = 0; i < a->gcap; i++) {
		for (struct agg_group *g = a->groups[i], *next; g != NULL; g = next) {
			next = g->next;
			free(g->key);
			free(g);
		}
	}
	free(a->groups);
	buf_free(&a->scratch);
	for (size_t i = 0; i < d->ngroups; i++)
		if (d->groups[i].nrows > 0)
			qsort(d->groups[i].rows, d->groups[i].nrows, sizeof(struct dmarcrep_row),
			      agg_row_cmp);
}

static void agg_init(struct agg *a, struct dmarcrep_day *d, const char *day)
{
	memset(d, 0, sizeof(*d));
	snprintf(d->day, sizeof(d->day), "%s", day);
	if (dmarcrep_day_range(day, &d->begin, &d->end) < 0)
		d->begin = d->end = 0;
	memset(a, 0, sizeof(*a));
	a->d = d;
	if (RAND_bytes(a->sipkey, sizeof(a->sipkey)) != 1)
		memset(a->sipkey, 0x5a, sizeof(a->sipkey));
	buf_init(&a->scratch, DMARCREP_BODY_MAX);
}

void dmarcrep_day_aggregate(const char *day, const void *p, size_t len, struct dmarcrep_day *d)
{
	struct agg a;
	agg_init(&a, d, day);
	(void)dmarcrep_day_parse(p, len, agg_add, &a, &d->scan);
	agg_finish(&a);
}

int dmarcrep_day_load(const char *spool_dir, const char *day, uint64_t max, struct dmarcrep_day *d,
                      const char **error_r)
{
	struct agg a;
	agg_init(&a, d, day);
	int rc = dmarcrep_day_read(spool_dir, day, max, agg_add, &a, &d->scan, error_r);
	agg_finish(&a);
	return rc;
}

void dmarcrep_day_clear(struct dmarcrep_day *d)
{
	for (size_t i = 0; i < d->ngroups; i++) {
		for (size_t j = 0; j < d->groups[i].nrows; j++)
			free(d->groups[i].rows[j].key);
		free(d->groups[i].rows);
	}
	free(d->groups);
	d->groups = NULL;
	d->ngroups = 0;
}

/* ---- the XML (RFC 7489 Appendix C) ---- */

void dmarcrep_xml_escape(struct buf *out, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
		switch (*p) {
		case '&':
			(void)buf_append_str(out, "&amp;");
			break;
		case '<':
			(void)buf_append_str(out, "&lt;");
			break;
		case '>':
			(void)buf_append_str(out, "&gt;");
			break;
		case '"':
			(void)buf_append_str(out, "&quot;");
			break;
		case '\'':
			(void)buf_append_str(out, "&apos;");
			break;
		default:
			(void)buf_append_byte(out, *p < 0x20 || *p > 0x7e ? '?' : *p);
		}
	}
}

static void xml_elem(struct buf *out, const char *indent, const char *name, const char *v)
{
	(void)buf_printf(out, "%s<%s>", indent, name);
	dmarcrep_xml_escape(out, v);
	(void)buf_printf(out, "</%s>\n", name);
}

/* The schema's IPAddress pattern knows only the full IPv6 form. */
static void xml_ip(const char *ip, char *out, size_t outlen)
{
	unsigned char a[16];
	if (inet_pton(AF_INET6, ip, a) != 1) {
		snprintf(out, outlen, "%s", ip);
		return;
	}
	snprintf(out, outlen, "%x:%x:%x:%x:%x:%x:%x:%x", a[0] << 8 | a[1], a[2] << 8 | a[3],
	         a[4] << 8 | a[5], a[6] << 8 | a[7], a[8] << 8 | a[9], a[10] << 8 | a[11],
	         a[12] << 8 | a[13], a[14] << 8 | a[15]);
}

static const char *xml_disp(unsigned v)
{
	return v == DMARC_DISP_REJECT       ? "reject"
	       : v == DMARC_DISP_QUARANTINE ? "quarantine"
	                                    : "none";
}

static void xml_record(struct buf *out, const struct dmarcrep_rec *r, uint64_t count)
{
	char ip[64];
	xml_ip(r->source_ip, ip, sizeof(ip));
	(void)buf_append_str(out, "  <record>\n    <row>\n");
	xml_elem(out, "      ", "source_ip", ip);
	(void)buf_printf(out, "      <count>%llu</count>\n", (unsigned long long)count);
	(void)buf_append_str(out, "      <policy_evaluated>\n");
	xml_elem(out, "        ", "disposition", xml_disp(r->disposition));
	xml_elem(out, "        ", "dkim", r->dkim_aligned ? "pass" : "fail");
	xml_elem(out, "        ", "spf", r->spf_aligned ? "pass" : "fail");
	if (r->reason != DMARCREP_REASON_NONE) {
		(void)buf_append_str(out, "        <reason>\n");
		xml_elem(out, "          ", "type", dmarcrep_reason_name(r->reason));
		(void)buf_append_str(out, "        </reason>\n");
	}
	(void)buf_append_str(out, "      </policy_evaluated>\n    </row>\n    <identifiers>\n");
	if (r->env_to[0] != '\0')
		xml_elem(out, "      ", "envelope_to", r->env_to);
	xml_elem(out, "      ", "envelope_from", r->env_from);
	xml_elem(out, "      ", "header_from", r->header_from);
	(void)buf_append_str(out, "    </identifiers>\n    <auth_results>\n");
	for (size_t i = 0; i < r->ndkim; i++) {
		(void)buf_append_str(out, "      <dkim>\n");
		xml_elem(out, "        ", "domain", r->dkim[i].domain);
		if (r->dkim[i].selector[0] != '\0')
			xml_elem(out, "        ", "selector", r->dkim[i].selector);
		xml_elem(out, "        ", "result", dmarcrep_dkim_result_name(r->dkim[i].result));
		(void)buf_append_str(out, "      </dkim>\n");
	}
	(void)buf_append_str(out, "      <spf>\n");
	xml_elem(out, "        ", "domain", r->spf_domain);
	xml_elem(out, "        ", "scope", r->spf_helo ? "helo" : "mfrom");
	xml_elem(out, "        ", "result", dmarcrep_spf_result_name(r->spf_result));
	(void)buf_append_str(out, "      </spf>\n    </auth_results>\n  </record>\n");
}

int dmarcrep_xml(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                 const struct dmarcrep_group *g, struct buf *out)
{
	const struct dmarcrep_rec *p = &g->policy;
	(void)buf_append_str(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
	                          "<feedback xmlns=\"http://dmarc.org/dmarc-xml/0.1\">\n"
	                          "  <version>1.0</version>\n  <report_metadata>\n");
	xml_elem(out, "    ", "org_name", m->org_name);
	xml_elem(out, "    ", "email", m->email);
	xml_elem(out, "    ", "report_id", g->report_id);
	(void)buf_printf(out,
	                 "    <date_range>\n      <begin>%lld</begin>\n      <end>%lld</end>\n"
	                 "    </date_range>\n  </report_metadata>\n  <policy_published>\n",
	                 (long long)d->begin, (long long)d->end - 1);
	xml_elem(out, "    ", "domain", p->policy_domain);
	xml_elem(out, "    ", "adkim", p->adkim_strict ? "s" : "r");
	xml_elem(out, "    ", "aspf", p->aspf_strict ? "s" : "r");
	xml_elem(out, "    ", "p", xml_disp(p->p));
	xml_elem(out, "    ", "sp", xml_disp(p->sp));
	(void)buf_printf(out, "    <pct>%u</pct>\n    <fo>0</fo>\n  </policy_published>\n", p->pct);
	struct dmarcrep_rec *r = xmalloc(sizeof(*r));
	for (size_t i = 0; i < g->nrows; i++) {
		const char *error;
		if (dmarcrep_rec_decode(g->rows[i].key, g->rows[i].len, r, &error) == 0)
			xml_record(out, r, g->rows[i].count);
	}
	free(r);
	return buf_append_str(out, "</feedback>\n");
}

int dmarcrep_gzip(const void *p, size_t len, struct buf *out)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	/* 15 + 16: a gzip header and trailer (RFC 1952), not zlib's */
	if (deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	uLong bound = deflateBound(&z, (uLong)len) + 32;
	if (buf_reserve(out, bound) < 0) {
		deflateEnd(&z);
		return -1;
	}
	z.next_in = (Bytef *)(uintptr_t)p;
	z.avail_in = (uInt)len;
	z.next_out = out->data + out->len;
	z.avail_out = (uInt)bound;
	int rc = deflate(&z, Z_FINISH);
	if (rc == Z_STREAM_END)
		out->len += z.total_out;
	deflateEnd(&z);
	return rc == Z_STREAM_END ? 0 : -1;
}

void dmarcrep_filename(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                       const struct dmarcrep_group *g, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s!%s!%lld!%lld.xml.gz", m->submitter, g->policy.policy_domain,
	         (long long)d->begin, (long long)d->end - 1);
}

int dmarcrep_mime(const struct dmarcrep_meta *m, const struct dmarcrep_day *d,
                  const struct dmarcrep_group *g, const char *const *rcpts, size_t nrcpts,
                  const void *gz, size_t gzlen, time_t now, struct buf *out)
{
	char fname[600], date[64], boundary[40];
	struct tm tm;
	dmarcrep_filename(m, d, g, fname, sizeof(fname));
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
	unsigned char rnd[8] = {0};
	(void)RAND_bytes(rnd, sizeof(rnd));
	snprintf(boundary, sizeof(boundary), "=_dmarc_%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
	         rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	/* RFC 3834: no auto-replies to a report */
	(void)buf_printf(out, "From: <%s>\r\nDate: %s\r\nAuto-Submitted: auto-generated\r\n",
	                 m->email, date);
	for (size_t i = 0; i < nrcpts; i++)
		(void)buf_printf(out, "%s<%s>%s", i == 0 ? "To: " : "\t", rcpts[i],
		                 i + 1 < nrcpts ? ",\r\n" : "\r\n");
	/* §7.2.1.1: the Subject names the domain, the submitter and the id */
	(void)buf_printf(out,
	                 "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
	                 "Message-ID: <%s.%02x%02x%02x%02x@%s>\r\n"
	                 "MIME-Version: 1.0\r\n"
	                 "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
	                 "This is a MIME message.\r\n\r\n--%s\r\n"
	                 "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
	                 "This is a DMARC aggregate report (RFC 7489) for %s,\r\n"
	                 "from %s: %llu messages seen from %lld to %lld.\r\n\r\n--%s\r\n"
	                 "Content-Type: application/gzip; name=\"%s\"\r\n"
	                 "Content-Disposition: attachment; filename=\"%s\"\r\n"
	                 "Content-Transfer-Encoding: base64\r\n\r\n",
	                 g->policy.policy_domain, m->submitter, g->report_id, g->report_id, rnd[0],
	                 rnd[1], rnd[2], rnd[3], m->submitter, boundary, boundary,
	                 g->policy.policy_domain, m->submitter, (unsigned long long)g->messages,
	                 (long long)d->begin, (long long)d->end - 1, boundary, fname, fname);
	struct buf b64;
	buf_init(&b64, 0);
	if (base64_encode(gz, gzlen, &b64) < 0) {
		buf_free(&b64);
		return -1;
	}
	for (size_t off = 0; off < b64.len; off += 76) {
		size_t n = b64.len - off < 76 ? b64.len - off : 76;
		(void)buf_append(out, b64.data + off, n);
		(void)buf_append_str(out, "\r\n");
	}
	buf_free(&b64);
	return buf_printf(out, "\r\n--%s--\r\n", boundary);
}

/* ---- the destinations ---- */

int dmarcrep_rua_address(const char *rua, char *out, size_t outlen)
{
	if (strncasecmp(rua, "mailto:", 7) != 0)
		return -1;
	const char *a = rua + 7;
	size_t n = strlen(a);
	const char *at = strrchr(a, '@');
	if (n == 0 || n >= outlen || at == NULL || at == a || at[1] == '\0')
		return -1;
	/* Only a plain address: no %-escapes, hfields (?subject=) or brackets. */
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)a[i];
		if (c <= 0x20 || c >= 0x7f || strchr("%?<>\"(),;:\\[]", c) != NULL)
			return -1;
	}
	memcpy(out, a, n + 1);
	return 0;
}

struct auth_q {
	struct event_base *base;
	int verdict; /* 1 authorized, 0 not, -1 DNS failure */
};

static void auth_answer(const struct dns_raw_result *res, void *arg)
{
	struct auth_q *q = arg;
	event_base_loopbreak(q->base);
	if (res->status == DNS_TEMPFAIL) {
		q->verdict = -1;
		return;
	}
	q->verdict = 0;
	for (size_t i = 0; res->status == DNS_OK && i < res->n; i++) {
		char txt[1024];
		int jl = dns_txt_join(res->rdata[i], res->len[i], txt, sizeof(txt));
		const char *t = txt;
		while (jl >= 0 && (*t == ' ' || *t == '\t'))
			t++;
		/* §7.1: a record that starts with v=DMARC1 authorizes */
		if (jl >= 0 && strncmp(t, "v=DMARC1", 8) == 0 &&
		    (t[8] == '\0' || t[8] == ';' || t[8] == ' ' || t[8] == '\t'))
			q->verdict = 1;
	}
}

/* §7.1: may reports for policy_domain go to rua_domain? 1 yes, 0 no, -1
 * try later. */
static int dmarcrep_authorized(struct dns *dns, struct event_base *base, const char *policy_domain,
                               const char *rua_domain)
{
	char name[600];
	snprintf(name, sizeof(name), "%s._report._dmarc.%s", policy_domain, rua_domain);
	struct auth_q q = {.base = base, .verdict = -1};
	if (dns_resolve_raw(dns, name, DNS_RR_TXT, auth_answer, &q) != NULL)
		event_base_dispatch(base);
	return q.verdict;
}

/* ---- the .sent file ---- */

static void sent_path(const char *spool_dir, const char *day, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/dmarc/%s.sent", spool_dir, day);
}

static void sent_read(const char *spool_dir, const char *day, struct buf *out)
{
	char path[4200];
	sent_path(spool_dir, day, path, sizeof(path));
	(void)buf_append_byte(out, '\n');
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	char tmp[4096];
	ssize_t n;
	while ((n = read(fd, tmp, sizeof(tmp))) > 0 && out->len < (1u << 24))
		(void)buf_append(out, tmp, (size_t)n);
	close(fd); /* buf keeps a NUL after the data: strstr() may read it */
}

static bool sent_has(const struct buf *sent, const char *id)
{
	char line[64];
	snprintf(line, sizeof(line), "\n%s\n", id);
	return sent->data != NULL && strstr((const char *)sent->data, line) != NULL;
}

/* Append "id\n"; the file belongs to the owner of dmarc/ (the service
 * user) even when root runs the command. */
static int sent_mark(const char *spool_dir, const char *day, const char *id)
{
	char path[4200], line[64];
	sent_path(spool_dir, day, path, sizeof(path));
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	char dir[4200];
	snprintf(dir, sizeof(dir), "%s/dmarc", spool_dir);
	struct stat sb;
	if (geteuid() == 0 && stat(dir, &sb) == 0)
		(void)fchown(fd, sb.st_uid, sb.st_gid);
	int n = snprintf(line, sizeof(line), "%s\n", id);
	ssize_t w = write(fd, line, (size_t)n);
	int rc = w == n && fsync(fd) == 0 ? 0 : -1;
	close(fd);
	return rc;
}

bool dmarcrep_day_done(const char *spool_dir, const char *day)
{
	struct buf sent;
	buf_init(&sent, 0);
	sent_read(spool_dir, day, &sent);
	bool done = sent_has(&sent, "done");
	buf_free(&sent);
	return done;
}

/* ---- the run ---- */

struct run {
	const struct conf *conf;
	const struct dmarcrep_opts *o;
	struct dmarcrep_meta meta;
	char email[512];
	struct dmarc *psl;
	struct event_base *base;
	struct dns *dns;
	bool dns_failed;
	bool pending; /* something must be tried again */
	size_t sent, skipped;
};

static void run_say(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_say(struct run *r, const char *fmt, ...)
{
	if (r->o->out == NULL)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(r->o->out, fmt, ap);
	va_end(ap);
	fputc('\n', r->o->out);
}

static struct dns *run_dns(struct run *r)
{
	if (r->dns != NULL || r->dns_failed)
		return r->dns;
	const struct conf *conf = r->conf;
	struct dns_conf dc = {.forwarders = (const char *const *)conf->dns.forwarders,
	                      .n_forwarders = conf->dns.n_forwarders,
	                      .trust_anchor_file = conf->dns.trust_anchor,
	                      .ipv6 = true,
	                      .timeout_ms = (unsigned)conf->dns.timeout};
	char err[256];
	r->base = event_base_new();
	if (r->base == NULL || dns_create(r->base, &dc, &r->dns, err, sizeof(err)) < 0) {
		log_warn("event=dmarc_report_dns_failed error=\"%s\"",
		         r->base ? err : "no event base");
		r->dns_failed = true;
		r->dns = NULL;
	}
	return r->dns;
}

static void lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s + 32);
}

/* The recipients of g that may have it (§7.1); *temp when a DNS answer
 * is missing. */
static size_t run_rcpts(struct run *r, const struct dmarcrep_group *g, char rcpts[][256],
                        uint64_t *max, bool *temp)
{
	const struct dmarcrep_rec *p = &g->policy;
	char porg[256], rorg[256];
	size_t n = 0;
	dmarc_org_domain(r->psl, p->policy_domain, porg, sizeof(porg));
	for (size_t i = 0; i < p->nrua; i++) {
		char addr[256];
		if (dmarcrep_rua_address(p->rua[i], addr, sizeof(addr)) < 0) {
			log_info("event=dmarc_report_skip report_id=%s reason=\"unusable rua\"",
			         g->report_id);
			continue;
		}
		char *dom = strrchr(addr, '@') + 1;
		lower(dom);
		bool dup = false;
		for (size_t j = 0; j < n; j++)
			dup = dup || strcasecmp(rcpts[j], addr) == 0;
		if (dup)
			continue;
		dmarc_org_domain(r->psl, dom, rorg, sizeof(rorg));
		if (strcmp(porg, rorg) != 0) {
			struct dns *dns = run_dns(r);
			int v = dns != NULL
			            ? dmarcrep_authorized(dns, r->base, p->policy_domain, dom)
			            : -1;
			if (v < 0) {
				*temp = true;
				run_say(r,
				        "%s: %s: DNS failure checking %s._report._dmarc.%s, later",
				        g->report_id, p->policy_domain, p->policy_domain, dom);
				continue;
			}
			if (v == 0) {
				log_info("event=dmarc_report_skip report_id=%s domain=%s rua=%s "
				         "reason=\"external destination not authorized\"",
				         g->report_id, p->policy_domain, addr);
				run_say(r,
				        "%s: %s: %s not authorized (no v=DMARC1 at "
				        "%s._report._dmarc.%s), skipped",
				        g->report_id, p->policy_domain, addr, p->policy_domain,
				        dom);
				continue;
			}
		}
		snprintf(rcpts[n], 256, "%s", addr);
		max[n++] = p->rua_max[i];
	}
	return n;
}

static int run_write_file(const char *dir, const char *name, const void *p, size_t len)
{
	char path[4200];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, p, len);
	close(fd);
	return w == (ssize_t)len ? 0 : -1;
}

/* Submit msg to rcpts: 1 handled (accepted or refused for good), 0 later. */
static int run_submit(struct run *r, const struct dmarcrep_group *g, const char *const *rcpts,
                      size_t n, const struct buf *msg)
{
	int codes[DMARC_RUA_MAX] = {0};
	struct submit_msg m = {.sender = r->email,
	                       .rcpts = rcpts,
	                       .nrcpts = n,
	                       .content = (const char *)msg->data,
	                       .content_len = msg->len,
	                       .xuid = -1,
	                       .on_fd = r->o->on_fd,
	                       .on_fd_arg = r->o->arg};
	struct submit_result res = {.rcpt_code = codes};
	if (submit_all(r->conf->spool_dir, &m, &res) < 0) {
		run_say(r, "%s: cannot reach the submission socket (%s): is the daemon running?",
		        g->report_id, strerror(errno));
		return 0;
	}
	int handled = 1;
	for (size_t i = 0; i < n; i++) {
		if (codes[i] >= 200 && codes[i] < 300) {
			run_say(r, "%s: %s: sent to %s (%zu octets)", g->report_id,
			        g->policy.policy_domain, rcpts[i], msg->len);
			log_info("event=dmarc_report_sent report_id=%s domain=%s rua=%s size=%zu",
			         g->report_id, g->policy.policy_domain, rcpts[i], msg->len);
		} else if (codes[i] >= 500) {
			run_say(r, "%s: %s: %s refused: %s", g->report_id, g->policy.policy_domain,
			        rcpts[i], res.reply);
		} else {
			handled = 0;
		}
	}
	if (!handled)
		run_say(r, "%s: not accepted now (%s), later", g->report_id, res.reply);
	return handled;
}

/* One report: 1 handled, 0 try again later. */
static int run_group(struct run *r, const struct dmarcrep_day *d, const struct dmarcrep_group *g)
{
	char rcpt_buf[DMARC_RUA_MAX][256];
	uint64_t max[DMARC_RUA_MAX];
	bool temp = false;
	size_t n = run_rcpts(r, g, rcpt_buf, max, &temp);
	struct buf xml, gz, msg;
	buf_init(&xml, 0);
	buf_init(&gz, 0);
	buf_init(&msg, 0);
	(void)dmarcrep_xml(&r->meta, d, g, &xml);
	int rc = dmarcrep_gzip(xml.data, xml.len, &gz) == 0 ? 1 : 0;
	const char *rcpts[DMARC_RUA_MAX];
	for (size_t i = 0; i < n; i++)
		rcpts[i] = rcpt_buf[i];
	time_t now = time(NULL);
	for (int round = 0; rc == 1 && round < 2; round++) {
		buf_reset(&msg);
		(void)dmarcrep_mime(&r->meta, d, g, rcpts, n, gz.data, gz.len, now, &msg);
		/* §6.2 "!size": a destination that takes no report this large */
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			if (max[i] != 0 && msg.len > max[i]) {
				log_info("event=dmarc_report_skip report_id=%s domain=%s rua=%s "
				         "reason=\"larger than its limit\" size=%zu limit=%llu",
				         g->report_id, g->policy.policy_domain, rcpts[i], msg.len,
				         (unsigned long long)max[i]);
				run_say(r,
				        "%s: %s: %s takes at most %llu octets, the report has %zu: "
				        "skipped",
				        g->report_id, g->policy.policy_domain, rcpts[i],
				        (unsigned long long)max[i], msg.len);
				continue;
			}
			rcpts[k] = rcpts[i];
			max[k++] = max[i];
		}
		if (k == n)
			break;
		n = k;
	}
	char fname[600];
	dmarcrep_filename(&r->meta, d, g, fname, sizeof(fname));
	if (rc != 1) {
		run_say(r, "%s: could not compress the report", g->report_id);
		rc = 0;
	} else if (n == 0) {
		run_say(r, "%s: %s: %llu messages, no destination to send to", g->report_id,
		        g->policy.policy_domain, (unsigned long long)g->messages);
		r->skipped++;
		rc = temp ? 0 : 1;
	} else if (r->o->dry_run) {
		run_say(r, "%s: %s: %llu messages in %zu rows, would send %s (%zu octets) to:",
		        g->report_id, g->policy.policy_domain, (unsigned long long)g->messages,
		        g->nrows, fname, msg.len);
		for (size_t i = 0; i < n; i++)
			run_say(r, "  %s", rcpts[i]);
	} else if (r->o->out_dir != NULL) {
		char eml[64];
		snprintf(eml, sizeof(eml), "%s.eml", g->report_id);
		if (run_write_file(r->o->out_dir, fname, gz.data, gz.len) < 0 ||
		    run_write_file(r->o->out_dir, eml, msg.data, msg.len) < 0) {
			run_say(r, "%s: cannot write into %s: %s", g->report_id, r->o->out_dir,
			        strerror(errno));
			rc = 0;
		} else {
			run_say(r, "%s: %s: wrote %s/%s and %s", g->report_id,
			        g->policy.policy_domain, r->o->out_dir, fname, eml);
		}
	} else {
		rc = run_submit(r, g, rcpts, n, &msg);
		if (rc == 1 && temp)
			rc = 0; /* a destination still waits for its DNS answer */
		if (rc == 1)
			r->sent++;
	}
	buf_free(&xml);
	buf_free(&gz);
	buf_free(&msg);
	return rc;
}

int dmarcrep_run(const struct conf *conf, const struct dmarcrep_opts *o, const char **error_r)
{
	struct run r = {.conf = conf, .o = o};
	const char *host = conf->hostname;
	if (conf->dmarc.report_from != NULL && conf->dmarc.report_from[0] != '\0')
		snprintf(r.email, sizeof(r.email), "%s", conf->dmarc.report_from);
	else
		snprintf(r.email, sizeof(r.email), "postmaster@%s", host);
	const char *at = strrchr(r.email, '@');
	r.meta.email = r.email;
	r.meta.submitter = at != NULL && at[1] != '\0' ? at + 1 : host;
	r.meta.org_name = conf->dmarc.org_name != NULL && conf->dmarc.org_name[0] != '\0'
	                      ? conf->dmarc.org_name
	                      : host;
	struct dmarcrep_day d;
	int rc = dmarcrep_day_load(conf->spool_dir, o->day, conf->dmarc.max_day_size, &d, error_r);
	if (rc != 0) {
		dmarcrep_day_clear(&d);
		if (rc > 0)
			run_say(&r, "%s: nothing recorded", o->day);
		return rc > 0 ? 0 : -1;
	}
	if (d.scan.bad > 0)
		run_say(&r, "%s: %zu damaged stretches skipped (%zu octets)", o->day, d.scan.bad,
		        d.scan.bad_octets);
	bool marking = !o->dry_run && o->out_dir == NULL;
	struct buf sent;
	buf_init(&sent, 0);
	sent_read(conf->spool_dir, o->day, &sent);
	r.psl = dmarc_create();
	for (size_t i = 0; i < d.ngroups; i++) {
		const struct dmarcrep_group *g = &d.groups[i];
		if (o->stopping != NULL && o->stopping(o->arg)) {
			r.pending = true;
			break;
		}
		if (marking && sent_has(&sent, g->report_id)) {
			run_say(&r, "%s: %s: already sent", g->report_id, g->policy.policy_domain);
			continue;
		}
		if (run_group(&r, &d, g) != 1) {
			r.pending = true;
			continue;
		}
		if (marking && sent_mark(conf->spool_dir, o->day, g->report_id) < 0)
			log_warn("event=dmarc_report_mark_failed day=%s error=\"%s\"", o->day,
			         strerror(errno));
	}
	/* A day not over yet (by hand) is never done: its reports are marked
	 * sent, records that come later for them are not reported, and new
	 * policy domains are sent by the run after the day's end. */
	bool over = time(NULL) >= d.end;
	if (!over && marking && d.ngroups > 0)
		run_say(&r,
		        "%s: the day is not over: later messages of these reports will not be "
		        "reported",
		        o->day);
	if (marking && over && !r.pending && !sent_has(&sent, "done"))
		(void)sent_mark(conf->spool_dir, o->day, "done");
	log_info("event=dmarc_report day=%s reports=%zu sent=%zu no_destination=%zu pending=%s",
	         o->day, d.ngroups, r.sent, r.skipped, r.pending ? "yes" : "no");
	buf_free(&sent);
	dmarc_free(&r.psl);
	dns_free(&r.dns);
	if (r.base != NULL)
		event_base_free(r.base);
	dmarcrep_day_clear(&d);
	return r.pending ? 1 : 0;
}
