/* astore.c — the delivery analytics store on SQLite (astore.h). The queue
 * process, analytics.c's one worker thread (and the loop thread at the
 * final flush, after that worker is joined): one connection, never shared
 * between threads at the same time. The rows come from astats batches
 * (bounded, normalised); queries come from the control socket with
 * checked arguments and are bound as parameters, never pasted into SQL. */
#include "queue/astore.h"

#include "lib/alloc.h"
#include "lib/json.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ASTORE_HIST_LEN (ASTATS_BINS * 8)

struct astore {
	sqlite3 *db;
	uint64_t retention_h;
	size_t top;
	uint64_t pruned_h; /* the hour of the last prune */
};

static const char *const astore_kinds[ASTORE_NKINDS] = {"series",  "domains", "delays",
                                                        "reasons", "tls",     "dmarc"};

int astore_kind_parse(const char *s)
{
	for (int i = 0; i < ASTORE_NKINDS; i++)
		if (strcmp(s, astore_kinds[i]) == 0)
			return i;
	return -1;
}

const char *astore_kind_name(enum astore_kind k)
{
	return (unsigned)k < ASTORE_NKINDS ? astore_kinds[k] : "?";
}

/* ---- histograms as blobs: ASTATS_BINS little-endian u64 ---- */

static void astore_hist_put(unsigned char *p, const uint64_t *bins)
{
	for (unsigned i = 0; i < ASTATS_BINS; i++)
		for (unsigned k = 0; k < 8; k++)
			p[i * 8 + k] = (unsigned char)(bins[i] >> (8 * k));
}

/* Add a blob's counts to bins; a blob of another length counts nothing. */
static void astore_hist_add(uint64_t *bins, const void *blob, int len)
{
	const unsigned char *p = blob;
	if (p == NULL || len != ASTORE_HIST_LEN)
		return;
	for (unsigned i = 0; i < ASTATS_BINS; i++) {
		uint64_t v = 0;
		for (unsigned k = 0; k < 8; k++)
			v |= (uint64_t)p[i * 8 + k] << (8 * k);
		bins[i] += v;
	}
}

/* SQL hist_add(a, b): the bin-wise sum of two histograms. */
static void astore_sql_hist_add(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	uint64_t bins[ASTATS_BINS] = {0};
	unsigned char out[ASTORE_HIST_LEN];
	for (int i = 0; i < argc; i++)
		astore_hist_add(bins, sqlite3_value_blob(argv[i]), sqlite3_value_bytes(argv[i]));
	astore_hist_put(out, bins);
	sqlite3_result_blob(ctx, out, sizeof(out), SQLITE_TRANSIENT);
}

/* SQL hist_sum(h): the bin-wise sum of a column of histograms. */
static void astore_sql_hist_step(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	uint64_t *bins = sqlite3_aggregate_context(ctx, (int)(ASTATS_BINS * sizeof(uint64_t)));
	if (bins == NULL) {
		sqlite3_result_error_nomem(ctx);
		return;
	}
	for (int i = 0; i < argc; i++)
		astore_hist_add(bins, sqlite3_value_blob(argv[i]), sqlite3_value_bytes(argv[i]));
}

static void astore_sql_hist_final(sqlite3_context *ctx)
{
	uint64_t zero[ASTATS_BINS] = {0};
	uint64_t *bins = sqlite3_aggregate_context(ctx, 0);
	unsigned char out[ASTORE_HIST_LEN];
	astore_hist_put(out, bins != NULL ? bins : zero);
	sqlite3_result_blob(ctx, out, sizeof(out), SQLITE_TRANSIENT);
}

/* ---- open, close ---- */

static const char astore_schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    /* Sorts and temporary tables in memory: Landlock gives the queue no
     * temporary directory, only the spool. */
    "PRAGMA temp_store=MEMORY;"
    "CREATE TABLE IF NOT EXISTS traffic(hour INTEGER NOT NULL, rdom TEXT NOT NULL,"
    " sdom TEXT NOT NULL, accepted INTEGER NOT NULL, delivered INTEGER NOT NULL,"
    " deferred INTEGER NOT NULL, bounced INTEGER NOT NULL, hist BLOB,"
    " PRIMARY KEY(hour, rdom, sdom)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS reasons(hour INTEGER NOT NULL, kind INTEGER NOT NULL,"
    " rdom TEXT NOT NULL, reason TEXT NOT NULL, n INTEGER NOT NULL,"
    " PRIMARY KEY(hour, kind, rdom, reason)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tls(hour INTEGER NOT NULL, version TEXT NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY(hour, version)) WITHOUT ROWID;"
    /* the per-hour cap looks sender domains and reasons up by hour */
    "CREATE INDEX IF NOT EXISTS traffic_sdom ON traffic(hour, sdom);"
    "CREATE INDEX IF NOT EXISTS reasons_reason ON reasons(hour, kind, reason);";

int astore_open(const char *dir, uint64_t retention_h, size_t top, struct astore **s_r,
                const char **error_r)
{
	char path[4096];
	sqlite3 *db = NULL;
	*s_r = NULL;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, ASTORE_FILE) >= sizeof(path)) {
		*error_r = "path too long";
		return -1;
	}
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	        SQLITE_OK ||
	    sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
	    sqlite3_exec(db, astore_schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function(db, "hist_add", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                            astore_sql_hist_add, NULL, NULL) != SQLITE_OK ||
	    sqlite3_create_function(db, "hist_sum", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
	                            NULL, astore_sql_hist_step,
	                            astore_sql_hist_final) != SQLITE_OK) {
		static __thread char eb[512];
		snprintf(eb, sizeof(eb), "%.200s: %.200s", path,
		         db != NULL ? sqlite3_errmsg(db) : "out of memory");
		*error_r = eb;
		sqlite3_close(db);
		return -1;
	}
	struct astore *s = xcalloc(1, sizeof(*s));
	s->db = db;
	s->retention_h = retention_h > 0 ? retention_h : 1;
	s->top = top > 0 ? top : 1;
	*s_r = s;
	return 0;
}

void astore_close(struct astore **sp)
{
	struct astore *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	sqlite3_close(s->db);
	free(s);
}

/* ---- writing ---- */

/* The distinct names an hour (and kind) has, counted once per
 * transaction and then kept up to date here: without it a flood of new
 * domains would count the hour's rows again for each one. */
struct astore_count {
	uint64_t hour;
	int64_t kind;
	int64_t n; /* -1: not counted yet */
};

struct astore_tx {
	struct astore *s;
	sqlite3_stmt *has_r, *cnt_r, *has_s, *cnt_s, *up_t, *has_reason, *cnt_reason, *up_r,
	    *up_tls;
	struct astore_count c_r, c_s, c_reason;
};

static const char *const astore_tx_sql[] = {
    "SELECT 1 FROM traffic WHERE hour=?1 AND rdom=?2 LIMIT 1",
    "SELECT COUNT(DISTINCT rdom) FROM traffic WHERE hour=?1",
    "SELECT 1 FROM traffic WHERE hour=?1 AND sdom=?2 LIMIT 1",
    "SELECT COUNT(DISTINCT sdom) FROM traffic WHERE hour=?1",
    "INSERT INTO traffic(hour,rdom,sdom,accepted,delivered,deferred,bounced,hist)"
    " VALUES(?1,?2,?3,?4,?5,?6,?7,?8) ON CONFLICT(hour,rdom,sdom) DO UPDATE SET"
    " accepted=accepted+excluded.accepted, delivered=delivered+excluded.delivered,"
    " deferred=deferred+excluded.deferred, bounced=bounced+excluded.bounced,"
    " hist=hist_add(hist, excluded.hist)",
    "SELECT 1 FROM reasons WHERE hour=?1 AND kind=?2 AND reason=?3 LIMIT 1",
    "SELECT COUNT(DISTINCT reason) FROM reasons WHERE hour=?1 AND kind=?2",
    "INSERT INTO reasons(hour,kind,rdom,reason,n) VALUES(?1,?2,?3,?4,?5)"
    " ON CONFLICT(hour,kind,rdom,reason) DO UPDATE SET n=n+excluded.n",
    "INSERT INTO tls(hour,version,n) VALUES(?1,?2,?3)"
    " ON CONFLICT(hour,version) DO UPDATE SET n=n+excluded.n",
};

static sqlite3_stmt **astore_tx_stmt(struct astore_tx *t, size_t i)
{
	sqlite3_stmt **all[] = {&t->has_r,      &t->cnt_r,      &t->has_s, &t->cnt_s, &t->up_t,
	                        &t->has_reason, &t->cnt_reason, &t->up_r,  &t->up_tls};
	return all[i];
}

#define ASTORE_TX_N (sizeof(astore_tx_sql) / sizeof(astore_tx_sql[0]))

/* Run a one-row query with (hour, a[, b]) bound: its first column, or -1. */
static int64_t astore_scalar(sqlite3_stmt *st, uint64_t hour, const char *a, int64_t kind)
{
	int i = 1;
	sqlite3_reset(st);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)hour);
	if (kind >= 0)
		sqlite3_bind_int64(st, i++, kind);
	if (a != NULL)
		sqlite3_bind_text(st, i++, a, -1, SQLITE_STATIC);
	int rc = sqlite3_step(st);
	int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : rc == SQLITE_DONE ? 0 : -1;
	sqlite3_reset(st);
	return v;
}

/* The name to store: d itself when the hour has it or room for it. */
static const char *astore_cap(struct astore_count *c, sqlite3_stmt *has, sqlite3_stmt *cnt,
                              uint64_t hour, const char *d, int64_t kind, size_t max)
{
	if (strcmp(d, ASTATS_OTHER) == 0 || astore_scalar(has, hour, d, kind) > 0)
		return d;
	if (c->n < 0 || c->hour != hour || c->kind != kind) {
		c->hour = hour;
		c->kind = kind;
		c->n = astore_scalar(cnt, hour, NULL, kind);
	}
	if (c->n < 0 || (size_t)c->n >= max)
		return ASTATS_OTHER;
	c->n++; /* d is new in the hour: written below */
	return d;
}

static int astore_step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int astore_put_cell(struct astore_tx *t, const struct astats_cell *c)
{
	unsigned char hist[ASTORE_HIST_LEN];
	size_t cap = t->s->top * ASTORE_SLACK;
	const char *rd = astore_cap(&t->c_r, t->has_r, t->cnt_r, c->hour, c->rdom, -1, cap);
	const char *sd = astore_cap(&t->c_s, t->has_s, t->cnt_s, c->hour, c->sdom, -1, cap);
	astore_hist_put(hist, c->bins);
	sqlite3_stmt *st = t->up_t;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)c->hour);
	sqlite3_bind_text(st, 2, rd, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, sd, -1, SQLITE_TRANSIENT);
	for (int i = 0; i < ASTATS_NEV; i++)
		sqlite3_bind_int64(st, 4 + i, (sqlite3_int64)c->n[i]);
	sqlite3_bind_blob(st, 8, hist, sizeof(hist), SQLITE_TRANSIENT);
	return astore_step_done(st);
}

static int astore_put_reason(struct astore_tx *t, const struct astats_reason *r)
{
	/* A reason's domain is kept when the traffic table kept it. */
	const char *rd =
	    strcmp(r->rdom, ASTATS_OTHER) == 0 || astore_scalar(t->has_r, r->hour, r->rdom, -1) > 0
	        ? r->rdom
	        : ASTATS_OTHER;
	const char *why = astore_cap(&t->c_reason, t->has_reason, t->cnt_reason, r->hour, r->reason,
	                             r->kind, ASTORE_REASONS_PER_HOUR);
	sqlite3_stmt *st = t->up_r;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)r->hour);
	sqlite3_bind_int64(st, 2, r->kind);
	sqlite3_bind_text(st, 3, rd, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, why, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 5, (sqlite3_int64)r->n);
	return astore_step_done(st);
}

/* The first hour kept. */
static uint64_t astore_cut(const struct astore *s, uint64_t now_h)
{
	return now_h > s->retention_h ? now_h - s->retention_h + 1 : 0;
}

static int astore_exec_hour(struct astore *s, const char *sql, uint64_t hour, size_t top)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)hour);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)top);
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

/* The busiest `top` of the domains in column col of an hour. */
#define ASTORE_KEEP(col)                                                                           \
	"(SELECT " col " FROM traffic WHERE hour=?1 AND " col "<>'(other)' GROUP BY " col          \
	" ORDER BY SUM(accepted+delivered+deferred+bounced) DESC, " col " LIMIT ?2)"

/* A finished hour keeps its `top` busiest destination and sender domains
 * (up to ASTORE_SLACK times as many were written while it ran, the first
 * ones seen); the rest are folded into "(other)", histograms and reasons
 * included. */
static int astore_compact(struct astore *s, uint64_t hour)
{
	static const char *const sql[] = {
	    "INSERT INTO reasons(hour,kind,rdom,reason,n) SELECT hour,kind,'(other)',reason,SUM(n)"
	    " FROM reasons WHERE hour=?1 AND rdom<>'(other)' AND rdom NOT IN " ASTORE_KEEP(
	        "rdom") " GROUP BY kind, reason ON CONFLICT(hour,kind,rdom,reason) DO UPDATE SET "
	                "n=n+excluded.n",
	    "DELETE FROM reasons WHERE hour=?1 AND rdom<>'(other)' AND rdom NOT IN " ASTORE_KEEP(
	        "rdom"),
	    "INSERT INTO traffic(hour,rdom,sdom,accepted,delivered,deferred,bounced,hist)"
	    " SELECT hour,'(other)',sdom,SUM(accepted),SUM(delivered),SUM(deferred),SUM(bounced),"
	    "hist_sum(hist) FROM traffic WHERE hour=?1 AND rdom<>'(other)' AND rdom NOT "
	    "IN " ASTORE_KEEP(
	        "rdom") " GROUP BY sdom ON CONFLICT(hour,rdom,sdom) DO UPDATE SET"
	                " accepted=accepted+excluded.accepted, "
	                "delivered=delivered+excluded.delivered,"
	                " deferred=deferred+excluded.deferred, bounced=bounced+excluded.bounced,"
	                " hist=hist_add(hist, excluded.hist)",
	    "DELETE FROM traffic WHERE hour=?1 AND rdom<>'(other)' AND rdom NOT IN " ASTORE_KEEP(
	        "rdom"),
	    "INSERT INTO traffic(hour,rdom,sdom,accepted,delivered,deferred,bounced,hist)"
	    " SELECT hour,rdom,'(other)',SUM(accepted),SUM(delivered),SUM(deferred),SUM(bounced),"
	    "hist_sum(hist) FROM traffic WHERE hour=?1 AND sdom<>'(other)' AND sdom NOT "
	    "IN " ASTORE_KEEP(
	        "sdom") " GROUP BY rdom ON CONFLICT(hour,rdom,sdom) DO UPDATE SET"
	                " accepted=accepted+excluded.accepted, "
	                "delivered=delivered+excluded.delivered,"
	                " deferred=deferred+excluded.deferred, bounced=bounced+excluded.bounced,"
	                " hist=hist_add(hist, excluded.hist)",
	    "DELETE FROM traffic WHERE hour=?1 AND sdom<>'(other)' AND sdom NOT IN " ASTORE_KEEP(
	        "sdom"),
	};
	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++)
		if (astore_exec_hour(s, sql[i], hour, s->top) < 0)
			return -1;
	return 0;
}

static int astore_prune(struct astore *s, uint64_t now_h)
{
	static const char *const sql[] = {"DELETE FROM traffic WHERE hour < ?1",
	                                  "DELETE FROM reasons WHERE hour < ?1",
	                                  "DELETE FROM tls WHERE hour < ?1"};
	uint64_t cut = astore_cut(s, now_h);
	for (size_t i = 0; i < 3; i++) {
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
			return -1;
		sqlite3_bind_int64(st, 1, (sqlite3_int64)cut);
		int rc = sqlite3_step(st);
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	return 0;
}

/* Rows of hours before cut (a clock that jumped) are not written. */
static int astore_apply_rows(struct astore_tx *t, const struct astats_batch *b, uint64_t cut)
{
	for (size_t i = 0; i < b->n_cells; i++)
		if (b->cells[i].hour >= cut && astore_put_cell(t, &b->cells[i]) < 0)
			return -1;
	for (size_t i = 0; i < b->n_reasons; i++)
		if (b->reasons[i].hour >= cut && astore_put_reason(t, &b->reasons[i]) < 0)
			return -1;
	for (size_t i = 0; i < b->n_tls; i++) {
		if (b->tls[i].hour < cut)
			continue;
		sqlite3_stmt *st = t->up_tls;
		sqlite3_bind_int64(st, 1, (sqlite3_int64)b->tls[i].hour);
		sqlite3_bind_text(st, 2, b->tls[i].version, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)b->tls[i].n);
		if (astore_step_done(st) < 0)
			return -1;
	}
	return 0;
}

int astore_apply(struct astore *s, const struct astats_batch *b, uint64_t now_h,
                 const char **error_r)
{
	struct astore_tx t = {.s = s, .c_r.n = -1, .c_s.n = -1, .c_reason.n = -1};
	int rc = -1;
	if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = sqlite3_errmsg(s->db);
		return -1;
	}
	for (size_t i = 0; i < ASTORE_TX_N; i++)
		if (sqlite3_prepare_v2(s->db, astore_tx_sql[i], -1, astore_tx_stmt(&t, i), NULL) !=
		    SQLITE_OK)
			goto out;
	if (b != NULL && astore_apply_rows(&t, b, astore_cut(s, now_h)) < 0)
		goto out;
	if (s->pruned_h != now_h) {
		/* A new hour: the ones before it are finished (those since the
		 * last write, at most a day of them after a long pause). */
		uint64_t h0 =
		    s->pruned_h != 0 && s->pruned_h + 24 > now_h ? s->pruned_h : now_h - 24;
		for (uint64_t h = h0; h < now_h; h++)
			if (astore_compact(s, h) < 0)
				goto out;
		if (astore_prune(s, now_h) < 0)
			goto out;
		s->pruned_h = now_h;
	}
	rc = 0;
out:
	if (rc < 0)
		*error_r = sqlite3_errmsg(s->db);
	for (size_t i = 0; i < ASTORE_TX_N; i++)
		sqlite3_finalize(*astore_tx_stmt(&t, i));
	if (sqlite3_exec(s->db, rc == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK &&
	    rc == 0) {
		*error_r = sqlite3_errmsg(s->db);
		rc = -1;
	}
	return rc;
}

/* ---- queries ---- */

static int astore_query_run(struct astore *s, const struct astore_query *q, struct buf *out,
                            const char **error_r);

static sqlite3_stmt *astore_prepare(struct astore *s, const struct astore_query *q, const char *sql)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return NULL;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)q->from_h);
	sqlite3_bind_int64(st, 2, (sqlite3_int64)q->to_h);
	sqlite3_bind_text(st, 3, q->domain, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, q->sender, -1, SQLITE_STATIC);
	return st;
}

#define ASTORE_WHERE                                                                               \
	" WHERE hour BETWEEN ?1 AND ?2 AND (?3 = '' OR rdom = ?3) AND (?4 = '' OR sdom = ?4)"

static void astore_counts_json(struct buf *out, sqlite3_stmt *st, int col)
{
	static const char *const names[] = {"accepted", "delivered", "deferred", "bounced"};
	for (int i = 0; i < 4; i++)
		buf_printf(out, ",\"%s\":%lld", names[i],
		           (long long)sqlite3_column_int64(st, col + i));
}

static int astore_q_series(struct astore *s, const struct astore_query *q, struct buf *out)
{
	sqlite3_stmt *st =
	    astore_prepare(s, q,
	                   "SELECT hour, SUM(accepted), SUM(delivered), SUM(deferred), "
	                   "SUM(bounced) FROM traffic" ASTORE_WHERE " GROUP BY hour ORDER BY hour");
	if (st == NULL)
		return -1;
	buf_append_str(out, ",\"hours\":[");
	int rc, n = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		buf_printf(out, "%s{\"t\":%lld", n++ > 0 ? "," : "",
		           (long long)sqlite3_column_int64(st, 0) * 3600);
		astore_counts_json(out, st, 1);
		buf_append_byte(out, '}');
	}
	buf_append_byte(out, ']');
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int astore_q_domains(struct astore *s, const struct astore_query *q, struct buf *out)
{
	static const char *const col[] = {"rdom", "sdom"}, *const key[] = {"destination", "sender"};
	for (int k = 0; k < 2; k++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "SELECT %s, SUM(accepted), SUM(delivered), SUM(deferred), SUM(bounced)"
		         " FROM traffic" ASTORE_WHERE " GROUP BY %s ORDER BY"
		         " SUM(accepted+delivered+deferred+bounced) DESC, %s LIMIT %d",
		         col[k], col[k], col[k], ASTORE_LIST_MAX);
		sqlite3_stmt *st = astore_prepare(s, q, sql);
		if (st == NULL)
			return -1;
		buf_printf(out, ",\"%s\":[", key[k]);
		int rc, n = 0;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			buf_append_str(out, n++ > 0 ? ",{\"domain\":" : "{\"domain\":");
			json_append_cstr(out, (const char *)sqlite3_column_text(st, 0));
			astore_counts_json(out, st, 1);
			buf_append_byte(out, '}');
		}
		buf_append_byte(out, ']');
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	return 0;
}

static void astore_pct_json(struct buf *out, const uint64_t *bins)
{
	static const double ps[] = {0.5, 0.9, 0.95, 0.99};
	static const char *const names[] = {"p50", "p90", "p95", "p99"};
	uint64_t total = 0;
	for (unsigned i = 0; i < ASTATS_BINS; i++)
		total += bins[i];
	buf_printf(out, "\"count\":%llu", (unsigned long long)total);
	for (size_t i = 0; i < 4; i++) {
		double v = astats_percentile(bins, ps[i]);
		if (v < 0)
			buf_printf(out, ",\"%s_ms\":null", names[i]);
		else
			buf_printf(out, ",\"%s_ms\":%.1f", names[i], v);
	}
}

static int astore_q_delays(struct astore *s, const struct astore_query *q, struct buf *out)
{
	sqlite3_stmt *st =
	    astore_prepare(s, q, "SELECT hour, hist FROM traffic" ASTORE_WHERE " ORDER BY hour");
	if (st == NULL)
		return -1;
	uint64_t all[ASTATS_BINS] = {0}, hour[ASTATS_BINS] = {0};
	int64_t cur = -1;
	int rc, n = 0;
	buf_append_str(out, ",\"hours\":[");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t h = sqlite3_column_int64(st, 0);
		if (h != cur && cur >= 0) {
			buf_printf(out, "%s{\"t\":%lld,", n++ > 0 ? "," : "",
			           (long long)cur * 3600);
			astore_pct_json(out, hour);
			buf_append_byte(out, '}');
			memset(hour, 0, sizeof(hour));
		}
		cur = h;
		astore_hist_add(hour, sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1));
		astore_hist_add(all, sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1));
	}
	if (cur >= 0) {
		buf_printf(out, "%s{\"t\":%lld,", n > 0 ? "," : "", (long long)cur * 3600);
		astore_pct_json(out, hour);
		buf_append_byte(out, '}');
	}
	buf_append_str(out, "],\"all\":{");
	astore_pct_json(out, all);
	buf_append_str(out, "},\"bins\":[");
	n = 0;
	for (unsigned i = 0; i < ASTATS_BINS; i++)
		if (all[i] > 0)
			buf_printf(out, "%s{\"lo_ms\":%llu,\"hi_ms\":%llu,\"n\":%llu}",
			           n++ > 0 ? "," : "", (unsigned long long)astats_bin_lo_ms(i),
			           (unsigned long long)astats_bin_hi_ms(i),
			           (unsigned long long)all[i]);
	buf_append_byte(out, ']');
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

static int astore_q_reasons(struct astore *s, const struct astore_query *q, struct buf *out)
{
	static const char *const key[] = {"deferred", "bounced"};
	static const int kinds[] = {ASTATS_DEFERRED, ASTATS_BOUNCED};
	for (int k = 0; k < 2; k++) {
		char sql[512];
		snprintf(sql, sizeof(sql),
		         "SELECT reason, SUM(n) FROM reasons WHERE hour BETWEEN ?1 AND ?2"
		         " AND (?3 = '' OR rdom = ?3) AND ?4 = ?4 AND kind = %d GROUP BY reason"
		         " ORDER BY SUM(n) DESC, reason LIMIT %d",
		         kinds[k], ASTORE_REASONS_MAX);
		sqlite3_stmt *st = astore_prepare(s, q, sql);
		if (st == NULL)
			return -1;
		buf_printf(out, ",\"%s\":[", key[k]);
		int rc, n = 0;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			buf_append_str(out, n++ > 0 ? ",{\"reason\":" : "{\"reason\":");
			json_append_cstr(out, (const char *)sqlite3_column_text(st, 0));
			buf_printf(out, ",\"count\":%lld}", (long long)sqlite3_column_int64(st, 1));
		}
		buf_append_byte(out, ']');
		sqlite3_finalize(st);
		if (rc != SQLITE_DONE)
			return -1;
	}
	return 0;
}

static int astore_q_tls(struct astore *s, const struct astore_query *q, struct buf *out)
{
	sqlite3_stmt *st =
	    astore_prepare(s, q,
	                   "SELECT version, SUM(n) FROM tls WHERE hour BETWEEN ?1 AND ?2"
	                   " AND ?3 = ?3 AND ?4 = ?4 GROUP BY version"
	                   " ORDER BY SUM(n) DESC, version");
	if (st == NULL)
		return -1;
	struct {
		char v[ASTATS_TLSVER_MAX];
		int64_t n;
	} rows[64];
	size_t nr = 0;
	int64_t total = 0, with = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && nr < 64) {
		snprintf(rows[nr].v, sizeof(rows[nr].v), "%s",
		         (const char *)sqlite3_column_text(st, 0));
		rows[nr].n = sqlite3_column_int64(st, 1);
		total += rows[nr].n;
		if (strcmp(rows[nr].v, "none") != 0)
			with += rows[nr].n;
		nr++;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		return -1;
	buf_printf(out, ",\"total\":%lld,\"with_tls\":%lld,\"versions\":[", (long long)total,
	           (long long)with);
	for (size_t i = 0; i < nr; i++) {
		buf_append_str(out, i > 0 ? ",{\"version\":" : "{\"version\":");
		json_append_cstr(out, rows[i].v);
		buf_printf(out, ",\"count\":%lld,\"share\":%.4f}", (long long)rows[i].n,
		           total > 0 ? (double)rows[i].n / (double)total : 0.0);
	}
	buf_append_byte(out, ']');
	return 0;
}

/* SQLite calls this every 10000 steps: a query over a huge store stops
 * after ASTORE_QUERY_MAX_S instead of holding the analytics thread (and
 * the http process's control link, which gives up after 60 s). */
static int astore_progress(void *arg)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec >= *(const time_t *)arg;
}

int astore_query(struct astore *s, const struct astore_query *q, struct buf *out,
                 const char **error_r)
{
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	time_t deadline = start.tv_sec + ASTORE_QUERY_MAX_S;
	sqlite3_progress_handler(s->db, 10000, astore_progress, &deadline);
	int rc = astore_query_run(s, q, out, error_r);
	sqlite3_progress_handler(s->db, 0, NULL, NULL);
	return rc;
}

static int astore_query_run(struct astore *s, const struct astore_query *q, struct buf *out,
                            const char **error_r)
{
	int rc;
	buf_printf(out, "{\"kind\":\"%s\",\"from\":%llu,\"to\":%llu,\"domain\":",
	           astore_kind_name(q->kind), (unsigned long long)q->from_h * 3600,
	           (unsigned long long)q->to_h * 3600 + 3599);
	json_append_cstr(out, q->domain);
	buf_append_str(out, ",\"sender_domain\":");
	json_append_cstr(out, q->sender);
	switch (q->kind) {
	case ASTORE_SERIES:
		rc = astore_q_series(s, q, out);
		break;
	case ASTORE_DOMAINS:
		rc = astore_q_domains(s, q, out);
		break;
	case ASTORE_DELAYS:
		rc = astore_q_delays(s, q, out);
		break;
	case ASTORE_REASONS:
		rc = astore_q_reasons(s, q, out);
		break;
	case ASTORE_TLS:
		rc = astore_q_tls(s, q, out);
		break;
	default:
		*error_r = "not a store query (dmarc is read from <spool>/dmarc/ by analytics.c)";
		return -1;
	}
	if (rc < 0) {
		*error_r = sqlite3_errcode(s->db) == SQLITE_INTERRUPT
		               ? "the query took too long: ask for a shorter range or one domain"
		               : sqlite3_errmsg(s->db);
		return -1;
	}
	if (buf_append_str(out, "}\n") < 0) {
		*error_r = "answer too large";
		return -1;
	}
	return 0;
}
