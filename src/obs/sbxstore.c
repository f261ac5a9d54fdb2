/* sbxstore.c — the sandbox's store (sbxstore.h): message files and the
 * SQLite index. Runs in the queue (capture, on its delivery workers) and
 * in the http process (the API, on its loop), each as the service user
 * with Landlock limited to sandbox.dir. The message content is hostile;
 * the summary read from it here is bounded (the first SBX_HEAD_MAX octets)
 * and only ever written out JSON-escaped (lib/json.h). */
#include "obs/sbxstore.h"

#include "lib/alloc.h"
#include "lib/fsutil.h"
#include "lib/json.h"
#include "lib/log.h"
#include "obs/sandbox_msg.h"
#include "obs/sbxquery.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SBX_HEAD_MAX (256 * 1024) /* octets of a message read for its summary */
#define SBX_TEXT_MAX (64 * 1024)  /* octets of its body indexed for search */
#define SBX_COPY_WINDOW (64 * 1024)
#define SBX_AGE_CHECK_US (60ULL * 1000000)

struct sbx_store {
	pthread_mutex_t mu;
	sqlite3 *db;
	int dirfd, msgfd;
	struct sbx_limits lim;
	bool est_known;
	uint64_t est_count, est_size;
	uint64_t last_age_check_us;
};

static const char sbx_schema[] =
    "CREATE TABLE IF NOT EXISTS msg("
    " rid INTEGER PRIMARY KEY AUTOINCREMENT,"
    " id TEXT NOT NULL UNIQUE,"
    " inbox TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " size INTEGER NOT NULL,"
    " read INTEGER NOT NULL DEFAULT 0,"
    " message_id TEXT NOT NULL DEFAULT '',"
    " addrs TEXT NOT NULL,"
    " subject TEXT NOT NULL DEFAULT '',"
    " snippet TEXT NOT NULL DEFAULT '',"
    " attachments INTEGER NOT NULL DEFAULT 0,"
    " env_from TEXT NOT NULL DEFAULT '',"
    " env_to TEXT NOT NULL DEFAULT '[]');"
    "CREATE INDEX IF NOT EXISTS msg_inbox ON msg(inbox, rid);"
    /* the list's order: arrival (as Mailpit's Created), not capture, which
     * the queue's parallel workers may do in another order */
    "CREATE INDEX IF NOT EXISTS msg_inbox_created ON msg(inbox, created, rid);"
    "CREATE INDEX IF NOT EXISTS msg_inbox_read ON msg(inbox, read);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS msg_fts USING fts5(fromf, tof, subject, body,"
    " tokenize = 'unicode61 remove_diacritics 2');"
    /* Each inbox's counts, kept by triggers: every list answers total and
     * unread, and counting 100,000 index entries twice per request was
     * most of a request's time. */
    "CREATE TABLE IF NOT EXISTS inbox_counts(inbox TEXT PRIMARY KEY,"
    " total INTEGER NOT NULL, unread INTEGER NOT NULL);"
    "CREATE TRIGGER IF NOT EXISTS msg_ai AFTER INSERT ON msg BEGIN"
    " INSERT INTO inbox_counts(inbox, total, unread) VALUES(new.inbox, 1, new.read = 0)"
    " ON CONFLICT(inbox) DO UPDATE SET total = total + 1, unread = unread + (new.read = 0);"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS msg_ad AFTER DELETE ON msg BEGIN"
    " UPDATE inbox_counts SET total = total - 1, unread = unread - (old.read = 0)"
    " WHERE inbox = old.inbox;"
    " END;"
    "CREATE TRIGGER IF NOT EXISTS msg_au AFTER UPDATE OF read ON msg"
    " WHEN old.read != new.read BEGIN"
    " UPDATE inbox_counts SET unread = unread + (new.read = 0) - (old.read = 0)"
    " WHERE inbox = new.inbox;"
    " END;";

#define SBX_COLS                                                                                   \
	"rid, id, inbox, created, size, read, message_id, addrs, subject, snippet, attachments"

static uint64_t sbx_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

bool sbx_inbox_valid(const char *inbox)
{
	size_t n = strlen(inbox);
	if (n == 0 || n > SBX_INBOX_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)inbox[i] <= 0x20 || (unsigned char)inbox[i] >= 0x7f)
			return false;
	return true;
}

/* ---- open ---- */

int sbx_store_open(const char *dir, struct sbx_store **s_r, char *err, size_t errlen)
{
	*s_r = NULL;
	int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0 && errno == ENOENT && fs_mkdir_p(dir, 0700) == 0)
		dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		snprintf(err, errlen, "sandbox.dir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (mkdirat(dirfd, "msg", 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "sandbox.dir %s/msg: %s", dir, strerror(errno));
		close(dirfd);
		return -1;
	}
	int msgfd = openat(dirfd, "msg", O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (msgfd < 0) {
		snprintf(err, errlen, "sandbox.dir %s/msg: %s", dir, strerror(errno));
		close(dirfd);
		return -1;
	}
	struct sbx_store *s = xcalloc(1, sizeof(*s));
	pthread_mutex_init(&s->mu, NULL);
	s->dirfd = dirfd;
	s->msgfd = msgfd;
	char path[4096];
	snprintf(path, sizeof(path), "%s/index.sqlite", dir);
	int rc = sqlite3_open_v2(
	    path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(s->db, 5000);
		/* FULL: a committed row is on disk before the queue removes the
		 * spool's copy (the spool's durability carried on). */
		rc = sqlite3_exec(s->db,
		                  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
		                  " PRAGMA temp_store=MEMORY; PRAGMA cache_size=-16384;"
		                  " PRAGMA mmap_size=268435456;",
		                  NULL, NULL, NULL);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->db, sbx_schema, NULL, NULL, NULL);
	/* A store from before the counts table: count once. */
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->db,
		                  "INSERT INTO inbox_counts(inbox, total, unread)"
		                  " SELECT inbox, count(*), sum(read = 0) FROM msg"
		                  " WHERE NOT EXISTS (SELECT 1 FROM inbox_counts) GROUP BY inbox;",
		                  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "sandbox index %s: %s", path,
		         s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
		sbx_store_close(&s);
		return -1;
	}
	*s_r = s;
	return 0;
}

void sbx_store_close(struct sbx_store **sp)
{
	struct sbx_store *s = *sp;
	if (s == NULL)
		return;
	*sp = NULL;
	sqlite3_close(s->db);
	close(s->msgfd);
	close(s->dirfd);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

void sbx_store_set_limits(struct sbx_store *s, const struct sbx_limits *l)
{
	pthread_mutex_lock(&s->mu);
	s->lim = *l;
	pthread_mutex_unlock(&s->mu);
}

/* ---- the summary of a message (bounded, hostile input) ---- */

struct sbx_summary {
	struct buf addrs;  /* "From":{..},"To":[..],"Cc":[..],"Bcc":[..],"ReplyTo":[..] */
	struct buf from_t; /* search text of From */
	struct buf to_t;   /* search text of To, Cc, Bcc and the recipients */
	struct buf subject, message_id, snippet, body;
	size_t attachments;
};

/* One address as {"Name":..,"Address":..}, whole or not at all: a name
 * is cut at SBX_NAME_MAX octets (UTF-8 kept whole), and the object goes in
 * only with SBX_ADDRS_SLACK octets left after it for the closing brackets
 * and keys, so a hostile header (a name of many '&', six octets each in
 * JSON) can neither overflow the row nor leave it invalid JSON. */
#define SBX_NAME_MAX 998
#define SBX_ADDRS_SLACK 128

static size_t sbx_cut_utf8(const char *s, size_t max)
{
	size_t n = strlen(s);
	if (n <= max)
		return n;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--; /* not inside a sequence */
	return max;
}

static bool sbx_addr_json(const struct sbx_addr *a, struct buf *out, struct buf *text)
{
	const char *name = a->name != NULL ? a->name : "";
	const char *addr = a->address != NULL ? a->address : "";
	size_t nl = sbx_cut_utf8(name, SBX_NAME_MAX), al = sbx_cut_utf8(addr, SBX_NAME_MAX);
	struct buf o;
	buf_init(&o, 2 * 6 * SBX_NAME_MAX + 64);
	int rc = buf_append_str(&o, "{\"Name\":");
	rc = rc != 0 ? rc : json_append_str(&o, name, nl);
	rc = rc != 0 ? rc : buf_append_str(&o, ",\"Address\":");
	rc = rc != 0 ? rc : json_append_str(&o, addr, al);
	rc = rc != 0 ? rc : buf_append_byte(&o, '}');
	bool ok = rc == 0 && (out->max == 0 || out->len + o.len + SBX_ADDRS_SLACK <= out->max) &&
	          buf_append(out, o.data, o.len) == 0;
	buf_free(&o);
	if (ok)
		(void)buf_printf(text, "%.*s %.*s ", (int)nl, name, (int)al, addr); /* search text: best effort */
	return ok;
}

static void sbx_addrs_json(const char *key, const struct sbx_addr_list *l, struct buf *out,
                           struct buf *text)
{
	(void)buf_printf(out, ",\"%s\":[", key); /* fits: SBX_ADDRS_SLACK kept free */
	bool first = true;
	for (size_t i = 0; i < l->n; i++) {
		size_t mark = out->len;
		if (!first && buf_append_byte(out, ',') != 0)
			break;
		if (!sbx_addr_json(&l->v[i], out, text)) {
			out->len = mark; /* drop the comma: the list ends here */
			out->data[mark] = '\0';
			break;
		}
		first = false;
	}
	(void)buf_append_byte(out, ']');
}

/* The list's fields from the MIME library's summary (obs/sandbox_msg.h:
 * decoded words, the text part's snippet, attachments); the search text
 * of the body is its first SBX_TEXT_MAX octets as they are. */
static void sbx_summarize(const char *m, size_t len, int64_t received, struct sbx_summary *sum)
{
	struct sbx_msg_summary ms;
	sbx_msg_summary(m, len, received, &ms);
	(void)buf_append_str(&sum->addrs, "\"From\":");
	if (!sbx_addr_json(&ms.from, &sum->addrs, &sum->from_t))
		(void)buf_append_str(&sum->addrs, "{\"Name\":\"\",\"Address\":\"\"}");
	sbx_addrs_json("To", &ms.to, &sum->addrs, &sum->to_t);
	sbx_addrs_json("Cc", &ms.cc, &sum->addrs, &sum->to_t);
	sbx_addrs_json("Bcc", &ms.bcc, &sum->addrs, &sum->to_t);
	sbx_addrs_json("ReplyTo", &ms.reply_to, &sum->addrs, &sum->to_t);
	buf_append_str(&sum->subject, ms.subject != NULL ? ms.subject : "");
	buf_append_str(&sum->message_id, ms.message_id != NULL ? ms.message_id : "");
	buf_append_str(&sum->snippet, ms.snippet != NULL ? ms.snippet : "");
	sum->attachments = ms.attachments;
	sbx_msg_summary_clear(&ms);
	size_t body = len;
	for (size_t i = 0; i + 1 < len; i++) {
		if (m[i] == '\n' &&
		    (m[i + 1] == '\n' || (m[i + 1] == '\r' && i + 2 < len && m[i + 2] == '\n'))) {
			body = i + (m[i + 1] == '\n' ? 2 : 3);
			break;
		}
	}
	if (body < len)
		buf_append(&sum->body, m + body,
		           len - body > SBX_TEXT_MAX ? SBX_TEXT_MAX : len - body);
}

static void sbx_summary_init(struct sbx_summary *s)
{
	buf_init(&s->addrs, 4 * SBX_HEAD_MAX);
	buf_init(&s->from_t, SBX_HEAD_MAX);
	buf_init(&s->to_t, 2 * SBX_HEAD_MAX);
	buf_init(&s->subject, SBX_HEAD_MAX);
	buf_init(&s->message_id, SBX_HEAD_MAX);
	buf_init(&s->snippet, 8 * SBX_SNIPPET_CHARS);
	buf_init(&s->body, SBX_TEXT_MAX);
}

static void sbx_summary_free(struct sbx_summary *s)
{
	buf_free(&s->addrs);
	buf_free(&s->from_t);
	buf_free(&s->to_t);
	buf_free(&s->subject);
	buf_free(&s->message_id);
	buf_free(&s->snippet);
	buf_free(&s->body);
}

/* ---- rows as JSON ---- */

static void sbx_time_json(uint64_t us, struct buf *out)
{
	time_t t = (time_t)(us / 1000000u);
	struct tm tm;
	gmtime_r(&t, &tm);
	char s[64];
	strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
	buf_printf(out, "\"%s.%03uZ\"", s, (unsigned)(us / 1000u % 1000u));
}

static void sbx_col_str(sqlite3_stmt *st, int col, struct buf *out)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	json_append_str(out, t != NULL ? (const char *)t : "",
	                (size_t)sqlite3_column_bytes(st, col));
}

/* A row of SBX_COLS as a list item (Mailpit's MessageSummary). */
static void sbx_row_json(sqlite3_stmt *st, struct buf *out)
{
	buf_append_str(out, "{\"ID\":");
	sbx_col_str(st, 1, out);
	buf_append_str(out, ",\"MessageID\":");
	sbx_col_str(st, 6, out);
	buf_printf(out, ",\"Read\":%s,", sqlite3_column_int(st, 5) ? "true" : "false");
	buf_append(out, sqlite3_column_text(st, 7), (size_t)sqlite3_column_bytes(st, 7));
	buf_append_str(out, ",\"Subject\":");
	sbx_col_str(st, 8, out);
	buf_append_str(out, ",\"Created\":");
	sbx_time_json((uint64_t)sqlite3_column_int64(st, 3), out);
	buf_printf(out, ",\"Tags\":[],\"Size\":%lld,\"Attachments\":%d,\"Snippet\":",
	           (long long)sqlite3_column_int64(st, 4), sqlite3_column_int(st, 10));
	sbx_col_str(st, 9, out);
	buf_append_byte(out, '}');
}

/* ---- capture ---- */

/* The message file: written under a temporary name, fsynced, renamed,
 * the directory fsynced. The first SBX_HEAD_MAX octets into head. */
static int sbx_write_file(struct sbx_store *s, const struct sbx_capture *c, struct buf *head,
                          char *err, size_t errlen)
{
	char tmp[SBX_ID_MAX + 16], name[SBX_ID_MAX + 16];
	snprintf(tmp, sizeof(tmp), ".tmp-%s", c->id);
	snprintf(name, sizeof(name), "%s.eml", c->id);
	int fd = openat(s->msgfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "create msg/%s: %s", tmp, strerror(errno));
		return -1;
	}
	unsigned char *win = xmalloc(SBX_COPY_WINDOW);
	int rc = 0;
	for (uint64_t done = 0; done < c->len && rc == 0;) {
		size_t n =
		    c->len - done > SBX_COPY_WINDOW ? SBX_COPY_WINDOW : (size_t)(c->len - done);
		if (fs_pread_all(c->fd, win, n, c->off + done) < 0 ||
		    fs_write_all(fd, win, n) < 0) {
			snprintf(err, errlen, "copy into msg/%s: %s", tmp, strerror(errno));
			rc = -1;
			break;
		}
		if (head->len < SBX_HEAD_MAX)
			buf_append(head, win,
			           n < SBX_HEAD_MAX - head->len ? n : SBX_HEAD_MAX - head->len);
		done += n;
	}
	free(win);
	if (rc == 0 && fsync(fd) < 0) {
		snprintf(err, errlen, "fsync msg/%s: %s", tmp, strerror(errno));
		rc = -1;
	}
	close(fd);
	if (rc == 0 && renameat(s->msgfd, tmp, s->msgfd, name) < 0) {
		snprintf(err, errlen, "rename msg/%s: %s", tmp, strerror(errno));
		rc = -1;
	}
	if (rc == 0 && fsync(s->msgfd) < 0) {
		snprintf(err, errlen, "fsync msg/: %s", strerror(errno));
		rc = -1;
	}
	if (rc < 0)
		unlinkat(s->msgfd, tmp, 0);
	return rc;
}

static int sbx_exists(struct sbx_store *s, const char *id)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM msg WHERE id = ?1", -1, &st, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	return r;
}

static void sbx_unlink_msg(struct sbx_store *s, const char *id)
{
	char name[SBX_ID_MAX + 16];
	snprintf(name, sizeof(name), "%s.eml", id);
	if (unlinkat(s->msgfd, name, 0) < 0 && errno != ENOENT)
		log_warn("event=sandbox_unlink_failed id=%s errno=%d", id, errno);
}

/* Delete rows by rid (with their FTS rows), then their files. Called with
 * the mutex held, outside a transaction. */
static int sbx_delete_rows(struct sbx_store *s, const int64_t *rids, char (*ids)[65], size_t n)
{
	sqlite3_stmt *d1 = NULL, *d2 = NULL;
	int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db, "DELETE FROM msg WHERE rid = ?1", -1, &d1, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db, "DELETE FROM msg_fts WHERE rowid = ?1", -1, &d2,
		                        NULL);
	for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
		sqlite3_bind_int64(d1, 1, rids[i]);
		sqlite3_bind_int64(d2, 1, rids[i]);
		if (sqlite3_step(d1) != SQLITE_DONE || sqlite3_step(d2) != SQLITE_DONE)
			rc = SQLITE_ERROR;
		sqlite3_reset(d1);
		sqlite3_reset(d2);
	}
	sqlite3_finalize(d1);
	sqlite3_finalize(d2);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		log_warn("event=sandbox_delete_failed reason=\"%s\"", sqlite3_errmsg(s->db));
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		sbx_unlink_msg(s, ids[i]);
	return 0;
}

/* Collect (rid, id, size) rows of a SELECT into arrays, at most max. */
static size_t sbx_collect(sqlite3_stmt *st, int64_t *rids, char (*ids)[65], uint64_t *sizes,
                          size_t max)
{
	size_t n = 0;
	while (n < max && sqlite3_step(st) == SQLITE_ROW) {
		rids[n] = sqlite3_column_int64(st, 0);
		snprintf(ids[n], 65, "%s", (const char *)sqlite3_column_text(st, 1));
		if (sizes != NULL)
			sizes[n] = (uint64_t)sqlite3_column_int64(st, 2);
		n++;
	}
	return n;
}

#define SBX_BATCH 256

static void sbx_totals(struct sbx_store *s)
{
	sqlite3_stmt *st = NULL;
	s->est_count = s->est_size = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT count(*), coalesce(sum(size), 0) FROM msg", -1, &st,
	                       NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		s->est_count = (uint64_t)sqlite3_column_int64(st, 0);
		s->est_size = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_finalize(st);
	s->est_known = true;
}

static bool sbx_over(const struct sbx_store *s)
{
	return (s->lim.max_messages > 0 && s->est_count > s->lim.max_messages) ||
	       (s->lim.max_size > 0 && s->est_size > s->lim.max_size);
}

/* Retention, oldest first. The estimate counts every capture; the http
 * process's deletes only lower the truth, so the exact totals are read
 * again only when the estimate passes a limit. */
static void sbx_retain(struct sbx_store *s)
{
	int64_t rids[SBX_BATCH];
	char ids[SBX_BATCH][65];
	uint64_t sizes[SBX_BATCH];
	uint64_t now = sbx_now_us();
	if (s->lim.max_age_ms > 0 && now - s->last_age_check_us >= SBX_AGE_CHECK_US) {
		s->last_age_check_us = now;
		for (;;) {
			sqlite3_stmt *st = NULL;
			size_t n = 0;
			if (sqlite3_prepare_v2(s->db,
			                       "SELECT rid, id, size FROM msg WHERE created < ?1"
			                       " ORDER BY rid LIMIT 256",
			                       -1, &st, NULL) == SQLITE_OK) {
				sqlite3_bind_int64(st, 1,
				                   (int64_t)(now - s->lim.max_age_ms * 1000u));
				n = sbx_collect(st, rids, ids, sizes, SBX_BATCH);
			}
			sqlite3_finalize(st);
			if (n == 0 || sbx_delete_rows(s, rids, ids, n) < 0)
				break;
			s->est_known = false;
			log_info("event=sandbox_expired count=%zu", n);
		}
	}
	if (s->lim.max_messages == 0 && s->lim.max_size == 0)
		return;
	if (!s->est_known)
		sbx_totals(s);
	if (!sbx_over(s))
		return;
	sbx_totals(s);
	while (sbx_over(s)) {
		sqlite3_stmt *st = NULL;
		size_t n = 0;
		if (sqlite3_prepare_v2(s->db,
		                       "SELECT rid, id, size FROM msg ORDER BY rid LIMIT 256", -1,
		                       &st, NULL) == SQLITE_OK)
			n = sbx_collect(st, rids, ids, sizes, SBX_BATCH);
		sqlite3_finalize(st);
		/* only as many as needed */
		size_t k = 0;
		uint64_t cnt = s->est_count, size = s->est_size;
		while (k < n && ((s->lim.max_messages > 0 && cnt > s->lim.max_messages) ||
		                 (s->lim.max_size > 0 && size > s->lim.max_size))) {
			cnt--;
			size -= sizes[k] <= size ? sizes[k] : size;
			k++;
		}
		if (k == 0 || sbx_delete_rows(s, rids, ids, k) < 0)
			break;
		s->est_count = cnt;
		s->est_size = size;
		log_info("event=sandbox_retention removed=%zu kept=%llu size=%llu", k,
		         (unsigned long long)cnt, (unsigned long long)size);
	}
}

/* A buffer as text: "" rather than NULL when empty (the columns are NOT NULL). */
static void sbx_bind_buf(sqlite3_stmt *st, int i, const struct buf *b)
{
	sqlite3_bind_text(st, i, b->len > 0 ? (const char *)b->data : "", (int)b->len,
	                  SQLITE_STATIC);
}

static int sbx_insert(struct sbx_store *s, const struct sbx_capture *c,
                      const struct sbx_summary *sum, const struct buf *env_to, int64_t *rid_r,
                      char *err, size_t errlen)
{
	static const char ins[] =
	    "INSERT INTO msg(id, inbox, created, size, message_id, addrs, subject, snippet,"
	    " env_from, env_to, attachments) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
	sqlite3_stmt *st = NULL, *ft = NULL;
	int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db, ins, -1, &st, NULL);
	if (rc == SQLITE_OK) {
		const char *inbox = c->inbox != NULL && c->inbox[0] != '\0' ? c->inbox : "default";
		sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, inbox, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)c->created_us);
		sqlite3_bind_int64(st, 4, (int64_t)c->len);
		sbx_bind_buf(st, 5, &sum->message_id);
		sbx_bind_buf(st, 6, &sum->addrs);
		sbx_bind_buf(st, 7, &sum->subject);
		sbx_bind_buf(st, 8, &sum->snippet);
		sqlite3_bind_text(st, 9, c->env_from != NULL ? c->env_from : "", -1, SQLITE_STATIC);
		sbx_bind_buf(st, 10, env_to);
		sqlite3_bind_int64(st, 11, (int64_t)sum->attachments);
		rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	}
	int64_t rid = sqlite3_last_insert_rowid(s->db);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(s->db,
		                        "INSERT INTO msg_fts(rowid, fromf, tof, subject, body)"
		                        " VALUES(?1, ?2, ?3, ?4, ?5)",
		                        -1, &ft, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_int64(ft, 1, rid);
		sbx_bind_buf(ft, 2, &sum->from_t);
		sbx_bind_buf(ft, 3, &sum->to_t);
		sbx_bind_buf(ft, 4, &sum->subject);
		/* Not text: an invalid UTF-8 body is still indexed as octets. */
		sbx_bind_buf(ft, 5, &sum->body);
		rc = sqlite3_step(ft) == SQLITE_DONE ? SQLITE_OK : SQLITE_ERROR;
	}
	sqlite3_finalize(st);
	sqlite3_finalize(ft);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "sandbox index: %s", sqlite3_errmsg(s->db));
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return -1;
	}
	*rid_r = rid;
	return 0;
}

static int sbx_item_by_rid(struct sbx_store *s, int64_t rid, struct buf *item)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	if (sqlite3_prepare_v2(s->db, "SELECT " SBX_COLS " FROM msg WHERE rid = ?1", -1, &st,
	                       NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, rid);
		if (sqlite3_step(st) == SQLITE_ROW) {
			sbx_row_json(st, item);
			r = 0;
		}
	}
	sqlite3_finalize(st);
	return r;
}

int sbx_store_capture(struct sbx_store *s, const struct sbx_capture *c, struct buf *item, char *err,
                      size_t errlen)
{
	pthread_mutex_lock(&s->mu);
	int ex = sbx_exists(s, c->id);
	pthread_mutex_unlock(&s->mu);
	if (ex != 0) { /* captured before a crash or a failed spool update */
		if (ex < 0)
			snprintf(err, errlen, "sandbox index: %s", sqlite3_errmsg(s->db));
		return ex < 0 ? -1 : 0;
	}
	struct buf head, env_to;
	buf_init(&head, SBX_HEAD_MAX);
	buf_init(&env_to, 16 * 1024 * 1024);
	if (sbx_write_file(s, c, &head, err, errlen) < 0) {
		buf_free(&head);
		buf_free(&env_to);
		return -1;
	}
	struct sbx_summary sum;
	sbx_summary_init(&sum);
	sbx_summarize((const char *)head.data, head.len, (int64_t)(c->created_us / 1000000u), &sum);
	buf_append_str(&sum.from_t, c->env_from != NULL ? c->env_from : "");
	buf_append_byte(&env_to, '[');
	for (size_t i = 0; i < c->nrcpts; i++) {
		if (i > 0)
			buf_append_byte(&env_to, ',');
		json_append_cstr(&env_to, c->rcpts[i]);
		buf_append_byte(&sum.to_t, ' ');
		buf_append_str(&sum.to_t, c->rcpts[i]);
	}
	buf_append_byte(&env_to, ']');
	pthread_mutex_lock(&s->mu);
	int64_t rid = 0;
	int rc = sbx_insert(s, c, &sum, &env_to, &rid, err, errlen);
	if (rc == 0) {
		s->est_count++;
		s->est_size += c->len;
		if (item != NULL)
			sbx_item_by_rid(s, rid, item);
		sbx_retain(s);
	}
	pthread_mutex_unlock(&s->mu);
	if (rc < 0)
		sbx_unlink_msg(s, c->id);
	sbx_summary_free(&sum);
	buf_free(&head);
	buf_free(&env_to);
	return rc;
}

/* ---- queries ---- */

/* " AND ..." conditions of a query; its FTS expressions into fts[] (bound
 * from ?2 on). */
static void sbx_where(const struct sbx_query *q, struct buf *sql,
                      char (*fts)[2 * SBX_TERM_MAX + 32], size_t *nfts)
{
	*nfts = 0;
	if (q == NULL)
		return;
	if (q->read >= 0)
		buf_printf(sql, " AND read = %d", q->read);
	for (size_t i = 0; i < q->n; i++) {
		if (sbx_term_fts(&q->terms[i], fts[*nfts], sizeof(fts[0])) < 0)
			continue;
		buf_printf(sql,
		           " AND rid %sIN (SELECT rowid FROM msg_fts WHERE msg_fts MATCH ?%zu)",
		           q->terms[i].neg ? "NOT " : "", *nfts + 2);
		(*nfts)++;
	}
}

static sqlite3_stmt *sbx_prepare_q(struct sbx_store *s, const char *head, const char *inbox,
                                   const struct sbx_query *q, const char *tail)
{
	struct buf sql;
	char fts[SBX_QUERY_TERMS_MAX][2 * SBX_TERM_MAX + 32];
	size_t nfts;
	buf_init(&sql, 64 * 1024);
	buf_append_str(&sql, head);
	sbx_where(q, &sql, fts, &nfts);
	buf_append_str(&sql, tail);
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(s->db, buf_cstr(&sql), -1, &st, NULL) != SQLITE_OK) {
		log_warn("event=sandbox_query_failed reason=\"%s\"", sqlite3_errmsg(s->db));
		st = NULL;
	} else {
		sqlite3_bind_text(st, 1, inbox, -1, SQLITE_TRANSIENT);
		for (size_t i = 0; i < nfts; i++)
			sqlite3_bind_text(st, (int)i + 2, fts[i], -1, SQLITE_TRANSIENT);
	}
	buf_free(&sql);
	return st;
}

/* total and unread of an inbox, from the triggers' table. */
static int sbx_counts(struct sbx_store *s, const char *inbox, int64_t *total, int64_t *unread)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	*total = *unread = 0;
	if (sqlite3_prepare_v2(s->db, "SELECT total, unread FROM inbox_counts WHERE inbox = ?1", -1,
	                       &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, inbox, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*total = sqlite3_column_int64(st, 0);
			*unread = sqlite3_column_int64(st, 1);
		}
		r = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	return r;
}

static int64_t sbx_count(struct sbx_store *s, const char *inbox, const struct sbx_query *q)
{
	sqlite3_stmt *st =
	    sbx_prepare_q(s, "SELECT count(*) FROM msg WHERE inbox = ?1", inbox, q, "");
	int64_t n = -1;
	if (st != NULL && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

int sbx_store_list(struct sbx_store *s, const char *inbox, const struct sbx_query *q,
                   uint64_t start, uint64_t limit, struct buf *out)
{
	char tail[160];
	if (limit > 1000)
		limit = 1000;
	if (start > INT64_MAX / 2)
		start = INT64_MAX / 2;
	snprintf(tail, sizeof(tail), " ORDER BY created DESC, rid DESC LIMIT %llu OFFSET %llu",
	         (unsigned long long)limit, (unsigned long long)start);
	pthread_mutex_lock(&s->mu);
	int64_t total = -1, n_unread = -1;
	if (sbx_counts(s, inbox, &total, &n_unread) < 0)
		total = -1;
	int64_t matched = q != NULL ? sbx_count(s, inbox, q) : total;
	sqlite3_stmt *st =
	    sbx_prepare_q(s, "SELECT " SBX_COLS " FROM msg WHERE inbox = ?1", inbox, q, tail);
	if (total < 0 || n_unread < 0 || matched < 0 || st == NULL) {
		sqlite3_finalize(st);
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	size_t mark = out->len;
	buf_append_str(out, "{\"messages\":[");
	size_t count = 0;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (count++ > 0)
			buf_append_byte(out, ',');
		sbx_row_json(st, out);
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	if (rc != SQLITE_DONE) {
		out->len = mark;
		return -1;
	}
	buf_printf(out,
	           "],\"total\":%lld,\"unread\":%lld,\"count\":%zu,\"messages_count\":%lld,"
	           "\"messages_unread\":%lld,\"start\":%llu,\"tags\":[]}",
	           (long long)total, (long long)n_unread, count, (long long)matched,
	           (long long)n_unread, (unsigned long long)start);
	return 0;
}

long sbx_store_update(struct sbx_store *s, const char *inbox, char (*ids)[65], size_t n,
                      const struct sbx_query *q, int read)
{
	pthread_mutex_lock(&s->mu);
	long done = 0;
	if (n > 0) {
		/* by ID: only those of this inbox */
		sqlite3_stmt *st = NULL;
		if (sqlite3_prepare_v2(s->db,
		                       "SELECT rid, id, size FROM msg WHERE inbox = ?1 AND id = ?2",
		                       -1, &st, NULL) != SQLITE_OK) {
			pthread_mutex_unlock(&s->mu);
			return -1;
		}
		int64_t *rids = xcalloc(n, sizeof(*rids));
		char(*found)[65] = xcalloc(n, sizeof(*found));
		size_t k = 0;
		for (size_t i = 0; i < n; i++) {
			sqlite3_bind_text(st, 1, inbox, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 2, ids[i], -1, SQLITE_STATIC);
			k += sbx_collect(st, rids + k, found + k, NULL, 1);
			sqlite3_reset(st);
		}
		sqlite3_finalize(st);
		if (read < 0) {
			done = sbx_delete_rows(s, rids, found, k) < 0 ? -1 : (long)k;
		} else {
			sqlite3_stmt *up = NULL;
			sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
			if (sqlite3_prepare_v2(s->db, "UPDATE msg SET read = ?1 WHERE rid = ?2", -1,
			                       &up, NULL) == SQLITE_OK) {
				for (size_t i = 0; i < k; i++) {
					sqlite3_bind_int(up, 1, read);
					sqlite3_bind_int64(up, 2, rids[i]);
					if (sqlite3_step(up) == SQLITE_DONE)
						done++;
					sqlite3_reset(up);
				}
			}
			sqlite3_finalize(up);
			sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
		}
		free(rids);
		free(found);
		pthread_mutex_unlock(&s->mu);
		return done;
	}
	if (read >= 0) {
		char head[96];
		snprintf(head, sizeof(head), "UPDATE msg SET read = %d WHERE inbox = ?1", read);
		sqlite3_stmt *st = sbx_prepare_q(s, head, inbox, q, "");
		if (st != NULL && sqlite3_step(st) == SQLITE_DONE)
			done = sqlite3_changes(s->db);
		else
			done = -1;
		sqlite3_finalize(st);
		pthread_mutex_unlock(&s->mu);
		return done;
	}
	/* delete all (of the query): in batches */
	for (;;) {
		int64_t rids[SBX_BATCH];
		char found[SBX_BATCH][65];
		sqlite3_stmt *st =
		    sbx_prepare_q(s, "SELECT rid, id, size FROM msg WHERE inbox = ?1", inbox, q,
		                  " ORDER BY rid LIMIT 256");
		size_t k = st != NULL ? sbx_collect(st, rids, found, NULL, SBX_BATCH) : 0;
		sqlite3_finalize(st);
		if (st == NULL) {
			done = -1;
			break;
		}
		if (k == 0)
			break;
		if (sbx_delete_rows(s, rids, found, k) < 0) {
			done = -1;
			break;
		}
		done += (long)k;
	}
	pthread_mutex_unlock(&s->mu);
	return done;
}

int sbx_store_get(struct sbx_store *s, const char *inbox, const char *id, char id_r[65],
                  struct buf *item)
{
	bool latest = strcmp(id, "latest") == 0;
	sqlite3_stmt *st = NULL;
	int r = -1;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db,
	                       latest ? "SELECT " SBX_COLS " FROM msg WHERE inbox = ?1"
	                                " ORDER BY created DESC, rid DESC LIMIT 1"
	                              : "SELECT " SBX_COLS " FROM msg WHERE inbox = ?1 AND id = ?2",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, inbox, -1, SQLITE_STATIC);
		if (!latest)
			sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
		if (r == 1) {
			snprintf(id_r, 65, "%s", (const char *)sqlite3_column_text(st, 1));
			if (item != NULL)
				sbx_row_json(st, item);
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return r;
}

int sbx_store_envelope(struct sbx_store *s, const char *inbox, const char *id, struct buf *from,
                       struct buf *rcpts_json)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT env_from, env_to FROM msg WHERE inbox = ?1 AND id = ?2", -1,
	                       &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, inbox, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
		int rc = sqlite3_step(st);
		r = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
		if (r == 1) {
			buf_append(from, sqlite3_column_text(st, 0),
			           (size_t)sqlite3_column_bytes(st, 0));
			buf_append(rcpts_json, sqlite3_column_text(st, 1),
			           (size_t)sqlite3_column_bytes(st, 1));
		}
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return r;
}

int sbx_store_open_msg(struct sbx_store *s, const char *id)
{
	char name[SBX_ID_MAX + 16];
	if (!sbx_id_valid(id, strlen(id))) {
		errno = EINVAL;
		return -1;
	}
	snprintf(name, sizeof(name), "%s.eml", id);
	return openat(s->msgfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

int sbx_store_since(struct sbx_store *s, const char *inbox, int64_t *last, size_t max,
                    void (*cb)(void *arg, const char *inbox, const struct buf *item), void *arg)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	pthread_mutex_lock(&s->mu);
	if (*last == 0) {
		if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(rid), 0) FROM msg", -1, &st,
		                       NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW) {
			*last = sqlite3_column_int64(st, 0);
			if (*last == 0)
				*last = -1; /* empty: everything from now on is new */
			r = 0;
		}
		sqlite3_finalize(st);
		pthread_mutex_unlock(&s->mu);
		return r;
	}
	if (sqlite3_prepare_v2(s->db,
	                       inbox != NULL ? "SELECT " SBX_COLS " FROM msg WHERE rid > ?1 AND"
	                                       " inbox = ?2 ORDER BY rid LIMIT ?3"
	                                     : "SELECT " SBX_COLS " FROM msg WHERE rid > ?1"
	                                       " ORDER BY rid LIMIT ?3",
	                       -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(st, 1, *last < 0 ? 0 : *last);
		if (inbox != NULL)
			sqlite3_bind_text(st, 2, inbox, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)max);
		struct buf item;
		buf_init(&item, 8 * 1024 * 1024);
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
			buf_reset(&item);
			sbx_row_json(st, &item);
			*last = sqlite3_column_int64(st, 0);
			cb(arg, (const char *)sqlite3_column_text(st, 2), &item);
		}
		buf_free(&item);
		r = rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return r;
}

int sbx_store_inboxes(struct sbx_store *s, void (*cb)(void *arg, const char *inbox, uint64_t n),
                      void *arg)
{
	sqlite3_stmt *st = NULL;
	int r = -1;
	pthread_mutex_lock(&s->mu);
	if (sqlite3_prepare_v2(s->db,
	                       "SELECT inbox, count(*) FROM msg GROUP BY inbox ORDER BY inbox", -1,
	                       &st, NULL) == SQLITE_OK) {
		int rc;
		while ((rc = sqlite3_step(st)) == SQLITE_ROW)
			cb(arg, (const char *)sqlite3_column_text(st, 0),
			   (uint64_t)sqlite3_column_int64(st, 1));
		r = rc == SQLITE_DONE ? 0 : -1;
	}
	sqlite3_finalize(st);
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* ---- tokens ---- */

int sbx_store_token_key(struct sbx_store *s, unsigned char key[SBX_TOKEN_KEY_LEN])
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = openat(s->dirfd, "token.key", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd >= 0) {
			ssize_t n = read(fd, key, SBX_TOKEN_KEY_LEN);
			close(fd);
			return n == SBX_TOKEN_KEY_LEN ? 0 : -1;
		}
		if (errno != ENOENT)
			return -1;
		/* The first process makes it: written under a temporary name and
		 * linked, so that nobody reads a half-written key. */
		char tmp[64];
		snprintf(tmp, sizeof(tmp), ".token.key.%d", (int)getpid());
		fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		            0600);
		if (fd < 0)
			return -1;
		unsigned char k[SBX_TOKEN_KEY_LEN];
		int ok = RAND_bytes(k, sizeof(k)) == 1 && fs_write_all(fd, k, sizeof(k)) == 0 &&
		         fsync(fd) == 0;
		close(fd);
		explicit_bzero(k, sizeof(k));
		if (ok && linkat(s->dirfd, tmp, s->dirfd, "token.key", 0) < 0 && errno != EEXIST)
			ok = 0;
		unlinkat(s->dirfd, tmp, 0);
		if (!ok)
			return -1;
	}
	return -1;
}

void sbx_token_for(const unsigned char key[SBX_TOKEN_KEY_LEN], const char *inbox, char out[65])
{
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	HMAC(EVP_sha256(), key, SBX_TOKEN_KEY_LEN, (const unsigned char *)inbox, strlen(inbox), mac,
	     &ml);
	for (size_t i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	out[64] = '\0';
}
