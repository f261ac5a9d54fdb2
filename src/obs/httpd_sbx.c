/* httpd_sbx.c — the sandbox's HTTP API (issue 13), Mailpit v1 compatible
 * for the common calls, served by the http process on its loop:
 *   GET|PUT|DELETE /api/v1/messages, GET|DELETE /api/v1/search,
 *   GET /api/v1/message/{ID}[/raw|/headers|/check|/part/{PartID}],
 *   POST /api/v1/message/{ID}/release, GET /api/v1/info,
 *   GET /view/{ID}.html|.txt, GET /api/events (Server-Sent Events).
 * The http process opens the store itself (sbxstore.h) as the service user
 * inside Landlock (sandbox.dir read-write, <spool>/maildrop for releases);
 * the queue writes it. Hostile inputs: the request (bounded by
 * http_parse.c, then by sbxquery.c's parsers) and the captured messages
 * (bounded by the MIME library, escaped on the way out; HTML is served
 * with a CSP that forbids script and every remote load).
 *
 * Inboxes: a request sees one inbox, named by its credentials: a bearer
 * token "<inbox>.<hex HMAC-SHA256(token.key, inbox)>", or Basic with the
 * inbox as user and that token (or its hex part) as password; without
 * credentials, from loopback, sandbox.anonymous_inbox when set. CSRF:
 * POST, PUT and DELETE need Content-Type: application/json (else 415) and
 * are refused (403) when Origin names another host than Host, or
 * Sec-Fetch-Site says cross-site. */
#include "obs/httpd_int.h"

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "lib/json.h"
#include "lib/log.h"
#include "mail/maildrop.h"
#include "obs/sandbox_msg.h"
#include "obs/sbxquery.h"
#include "obs/sbxstore.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SBX_SSE_MAX 16               /* event streams at once */
#define SBX_SSE_POLL_MS 500          /* the store is read this often while one is open */
#define SBX_SSE_PING_S 15            /* a comment line keeps proxies from timing out */
#define SBX_MSG_READ_MAX (64u << 20) /* a message file read for the API */
#define SBX_LIST_DEFAULT 50
#define SBX_JSON_MAX (256u << 20)

struct httpd_sse {
	struct httpd_conn *c;
	char inbox[SBX_INBOX_MAX + 1];
	struct httpd_sse *next;
};

struct httpd_sbx {
	struct httpd *h;
	struct sbx_store *store;
	unsigned char key[SBX_TOKEN_KEY_LEN];
	char maildrop[4096]; /* <spool>/maildrop */
	struct event *poll;
	struct httpd_sse *streams;
	size_t n_streams;
	int64_t last; /* the newest row the streams have seen; 0 not known */
	unsigned ticks;
};

/* ---- answers ---- */

static void sbx_json(struct httpd_conn *c, int status, const struct buf *b)
{
	httpd_respond(c, status, "application/json", (const char *)b->data, b->len,
	              "X-Content-Type-Options: nosniff\r\n");
}

static void sbx_ok(struct httpd_conn *c)
{
	httpd_respond(c, 200, "text/plain; charset=utf-8", "ok", 2,
	              "X-Content-Type-Options: nosniff\r\n");
}

/* ---- credentials ---- */

/* token "<inbox>.<hex>" for inbox? Constant time in the hex. */
static bool sbx_token_ok(const struct httpd_sbx *x, const char *inbox, const char *hex, size_t hl)
{
	char want[65];
	sbx_token_for(x->key, inbox, want);
	return hl == 64 && CRYPTO_memcmp(want, hex, 64) == 0;
}

/* The inbox of a bearer token, into inbox: 0 or -1. */
static int sbx_bearer(const struct httpd_sbx *x, const char *t, size_t tl, char *inbox)
{
	const char *dot = NULL;
	for (size_t i = 0; i < tl; i++)
		if (t[i] == '.')
			dot = t + i;
	if (dot == NULL || (size_t)(dot - t) > SBX_INBOX_MAX || dot == t)
		return -1;
	memcpy(inbox, t, (size_t)(dot - t));
	inbox[dot - t] = '\0';
	if (!sbx_inbox_valid(inbox))
		return -1;
	return sbx_token_ok(x, inbox, dot + 1, tl - (size_t)(dot - t) - 1) ? 0 : -1;
}

static int sbx_basic(const struct httpd_sbx *x, const char *b64, size_t bl, char *inbox)
{
	struct buf db;
	buf_init(&db, 1024);
	if (bl > 1300 || base64_decode(b64, bl, &db) < 0 || db.len >= 1024) {
		buf_free(&db);
		return -1;
	}
	char dec[1024];
	size_t dl = db.len;
	memcpy(dec, db.data, dl);
	dec[dl] = '\0';
	explicit_bzero(db.data, db.len);
	buf_free(&db);
	const char *colon = memchr(dec, ':', dl);
	if (colon == NULL || (size_t)(colon - dec) > SBX_INBOX_MAX)
		return -1;
	size_t il = (size_t)(colon - dec);
	memcpy(inbox, dec, il);
	inbox[il] = '\0';
	if (!sbx_inbox_valid(inbox))
		return -1;
	const char *pw = colon + 1;
	size_t pl = dl - il - 1;
	/* the full token, or its hex part */
	if (pl == il + 65 && memcmp(pw, inbox, il) == 0 && pw[il] == '.')
		pw += il + 1, pl = 64;
	int ok = sbx_token_ok(x, inbox, pw, pl);
	explicit_bzero(dec, sizeof(dec));
	return ok ? 0 : -1;
}

/* The request's inbox into inbox (SBX_INBOX_MAX + 1): 0, or -1 when the
 * 401 is already answered. */

/* The Host a request names is a loopback one (localhost, 127.0.0.0/8, [::1],
 * with or without a port)? Anonymous access needs it besides a loopback
 * peer: a page of another site that DNS-rebinds its own name to 127.0.0.1
 * reaches us from loopback, but names its own host (and its Origin then
 * matches that Host, so the CSRF rule alone would let it through). */
static bool sbx_host_loopback(struct http_view host)
{
	const char *p = host.p;
	size_t n = host.len, end;
	if (p == NULL || n == 0)
		return false;
	if (p[0] == '[') {
		const char *rb = memchr(p, ']', n);
		if (rb == NULL || (size_t)(rb - p) != 4 || memcmp(p + 1, "::1", 3) != 0)
			return false;
		end = 5;
	} else {
		const char *colon = memchr(p, ':', n);
		end = colon != NULL ? (size_t)(colon - p) : n;
		if (!(end == 9 && strncasecmp(p, "localhost", 9) == 0)) {
			if (end < 7 || end > 15 || memcmp(p, "127.", 4) != 0)
				return false;
			for (size_t i = 4; i < end; i++)
				if (!((p[i] >= '0' && p[i] <= '9') || p[i] == '.'))
					return false;
		}
	}
	if (end == n)
		return true;
	if (p[end] != ':' || end + 1 == n || n - end > 6)
		return false;
	for (size_t i = end + 1; i < n; i++)
		if (p[i] < '0' || p[i] > '9')
			return false;
	return true;
}

static int sbx_inbox_of(struct httpd_conn *c, const struct http_request *req, char *inbox)
{
	struct httpd_sbx *x = c->h->sbx;
	const struct conf *conf = c->h->conf;
	struct http_view a = req->authorization;
	int rc = -1;
	if (a.len > 7 && strncasecmp(a.p, "Bearer ", 7) == 0)
		rc = sbx_bearer(x, a.p + 7, a.len - 7, inbox);
	else if (a.len > 6 && strncasecmp(a.p, "Basic ", 6) == 0)
		rc = sbx_basic(x, a.p + 6, a.len - 6, inbox);
	else if (a.p == NULL && c->loopback && sbx_host_loopback(req->host) &&
	         conf->sandbox.anonymous_inbox[0] != '\0') {
		snprintf(inbox, SBX_INBOX_MAX + 1, "%s", conf->sandbox.anonymous_inbox);
		rc = 0;
	}
	if (rc < 0)
		httpd_error(c, 401, "an inbox token is required (Bearer, or Basic inbox:token)",
		            "WWW-Authenticate: Bearer realm=\"hikyaku sandbox\"\r\n");
	return rc;
}

/* ---- CSRF ---- */

/* Origin "scheme://host[:port]" names the Host the request went to? */
static bool sbx_same_origin(struct http_view origin, struct http_view host)
{
	const char *p = origin.p;
	size_t n = origin.len;
	const char *sep = NULL;
	for (size_t i = 0; i + 2 < n; i++)
		if (p[i] == ':' && p[i + 1] == '/' && p[i + 2] == '/') {
			sep = p + i + 3;
			break;
		}
	if (sep == NULL || host.p == NULL)
		return false;
	size_t rest = n - (size_t)(sep - p);
	return rest == host.len && strncasecmp(sep, host.p, rest) == 0;
}

/* 0, or -1 with the refusal answered. */
static int sbx_csrf(struct httpd_conn *c, const struct http_request *req)
{
	struct http_view ct = req->content_type;
	static const char json[] = "application/json";
	if (ct.len < sizeof(json) - 1 || strncasecmp(ct.p, json, sizeof(json) - 1) != 0 ||
	    (ct.len > sizeof(json) - 1 && ct.p[sizeof(json) - 1] != ';' &&
	     ct.p[sizeof(json) - 1] != ' ')) {
		httpd_error(c, 415, "Content-Type: application/json is required", NULL);
		return -1;
	}
	if (req->sec_fetch_site.p != NULL && http_view_eq(req->sec_fetch_site, "cross-site")) {
		httpd_error(c, 403, "cross-site request refused", NULL);
		return -1;
	}
	if (req->origin.p != NULL && !sbx_same_origin(req->origin, req->host)) {
		httpd_error(c, 403, "cross-origin request refused", NULL);
		return -1;
	}
	return 0;
}

/* ---- the message file ---- */

/* Read the message id of inbox (ID or "latest") into raw: 1, 0 not found
 * (404 answered), -1 (500 answered). id_r gets the real ID. */
static int sbx_load(struct httpd_conn *c, const char *inbox, const char *id, char id_r[65],
                    struct buf *raw, int64_t *created_r)
{
	struct httpd_sbx *x = c->h->sbx;
	struct buf item;
	buf_init(&item, 16u << 20);
	int r = sbx_store_get(x->store, inbox, id, id_r, &item);
	buf_free(&item);
	if (r <= 0) {
		httpd_error(c, r == 0 ? 404 : 500, r == 0 ? "no such message" : "store error",
		            NULL);
		return r;
	}
	int fd = sbx_store_open_msg(x->store, id_r);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || (uint64_t)st.st_size > SBX_MSG_READ_MAX) {
		if (fd >= 0)
			close(fd);
		httpd_error(c, fd < 0 && errno == ENOENT ? 404 : 500, "message file unreadable",
		            NULL);
		return fd < 0 && errno == ENOENT ? 0 : -1;
	}
	buf_init(raw, SBX_MSG_READ_MAX);
	if (buf_reserve(raw, (size_t)st.st_size) < 0 ||
	    fs_pread_all(fd, raw->data, (size_t)st.st_size, 0) < 0) {
		close(fd);
		buf_free(raw);
		httpd_error(c, 500, "message file unreadable", NULL);
		return -1;
	}
	raw->len = (size_t)st.st_size;
	*created_r = (int64_t)st.st_mtime;
	close(fd);
	return 1;
}

/* A MIME type from the message, safe to put in a header field. */
/* A part's own type, unless it is one a browser would run or render as a
 * document on the UI's origin when loaded by a <script>, <link> or <iframe>
 * (which ignore Content-Disposition): script, HTML, XML/SVG and CSS are
 * served as application/octet-stream, so a captured part can never become
 * script or style of the UI even if some page were made to load it. */
static const char *sbx_safe_type(const char *t)
{
	static const char *const risky[] = {"javascript", "ecmascript", "html", "xml", "svg",
	                                    "css", "jscript", "livescript", "json"};
	if (t == NULL || t[0] == '\0' || strlen(t) > 100)
		return "application/octet-stream";
	for (size_t i = 0; i < sizeof(risky) / sizeof(risky[0]); i++)
		if (strcasestr(t, risky[i]) != NULL)
			return "application/octet-stream";
	for (const char *p = t; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || strchr("!#$&^_.+-/", *p) != NULL))
			return "application/octet-stream";
	return t;
}

/* Content-Disposition: attachment; filename*=UTF-8''<pct-encoded> (RFC
 * 6266 §4.3, RFC 8187). */
static void sbx_disposition(const char *name, struct buf *out)
{
	buf_append_str(out, "Content-Disposition: attachment");
	if (name != NULL && name[0] != '\0') {
		buf_append_str(out, "; filename*=UTF-8''");
		for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; p++) {
			if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p) != NULL)
				buf_append_byte(out, *p);
			else
				buf_printf(out, "%%%02X", *p);
		}
	}
	buf_append_str(out, "\r\n");
}

/* ---- release ---- */

/* The message goes on for real: a drop file in <spool>/maildrop that the
 * queue's pickup submits through smtpd like `sendmail` (policy, aliases,
 * DKIM signing of our domains); a local submission is never sandboxed. */
static int sbx_release(struct httpd_sbx *x, const char *sender, char (*to)[SBX_ADDR_MAX + 1],
                       size_t n_to, const struct buf *raw, const char **error_r)
{
	struct maildrop_msg dm = {.sender = sender, .sender_len = strlen(sender)};
	for (size_t i = 0; i < n_to && i < MAILDROP_RCPTS_MAX; i++) {
		dm.rcpts[i] = to[i];
		dm.rcpt_lens[i] = strlen(to[i]);
		dm.nrcpts++;
	}
	dm.content = (const char *)raw->data;
	dm.content_len = raw->len;
	struct buf enc;
	buf_init(&enc, SBX_MSG_READ_MAX + 1024 * 1024);
	maildrop_encode(&dm, &enc);
	/* maildrop_decode checks what pickup will: refuse here what it would */
	struct maildrop_msg chk;
	if (maildrop_decode(enc.data, enc.len, &chk, error_r) < 0) {
		buf_free(&enc);
		return -1;
	}
	unsigned char rnd[16];
	char hex[33], tname[sizeof(x->maildrop) + 40], dname[sizeof(x->maildrop) + 40];
	RAND_bytes(rnd, sizeof(rnd));
	for (size_t i = 0; i < 16; i++)
		snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
	snprintf(tname, sizeof(tname), "%s/t%s", x->maildrop, hex);
	snprintf(dname, sizeof(dname), "%s/d%s", x->maildrop, hex);
	int fd = open(tname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	int rc = -1;
	if (fd >= 0) {
		if (fs_write_all(fd, enc.data, enc.len) == 0 && fsync(fd) == 0 &&
		    rename(tname, dname) == 0)
			rc = 0;
		close(fd);
		if (rc < 0)
			unlink(tname);
	}
	buf_free(&enc);
	if (rc < 0)
		*error_r = "cannot write into the maildrop";
	return rc;
}

/* ---- handlers ---- */

static int sbx_query_args(struct httpd_conn *c, const struct http_request *req, uint64_t *start,
                          uint64_t *limit, struct sbx_query *q, bool want_query)
{
	char v[SBX_TERM_MAX * SBX_QUERY_TERMS_MAX];
	*start = 0;
	*limit = SBX_LIST_DEFAULT;
	const char *keys[] = {"start", "limit"};
	uint64_t *dst[] = {start, limit};
	for (size_t i = 0; i < 2; i++) {
		int r = http_query_get(req->query, keys[i], v, sizeof(v));
		if (r < 0) {
			httpd_error(c, 400, "malformed query", NULL);
			return -1;
		}
		if (r == 0 || v[0] == '\0')
			continue;
		char *end = NULL;
		errno = 0;
		unsigned long long n = strtoull(v, &end, 10);
		if (errno != 0 || *end != '\0' || v[0] == '-' || n > 1000000000ULL) {
			httpd_error(c, 400, "start and limit are numbers", NULL);
			return -1;
		}
		*dst[i] = n;
	}
	if (*limit == 0)
		*limit = SBX_LIST_DEFAULT;
	if (!want_query)
		return 0;
	int r = http_query_get(req->query, "query", v, sizeof(v));
	const char *error = "malformed query";
	if (r < 0 || sbx_query_parse(r > 0 ? v : "", r > 0 ? strlen(v) : 0, q, &error) < 0) {
		httpd_error(c, 400, error, NULL);
		return -1;
	}
	return 0;
}

static void sbx_list(struct httpd_conn *c, const struct http_request *req, const char *inbox,
                     bool search)
{
	struct httpd_sbx *x = c->h->sbx;
	uint64_t start, limit;
	struct sbx_query q;
	if (sbx_query_args(c, req, &start, &limit, &q, search) < 0)
		return;
	struct buf out;
	buf_init(&out, SBX_JSON_MAX);
	if (sbx_store_list(x->store, inbox, search ? &q : NULL, start, limit, &out) < 0)
		httpd_error(c, 500, "store error", NULL);
	else
		sbx_json(c, 200, &out);
	buf_free(&out);
}

/* PUT/DELETE /api/v1/messages, DELETE /api/v1/search */
static void sbx_update(struct httpd_conn *c, const struct http_request *req, const char *inbox,
                       bool del, const struct sbx_query *q)
{
	struct httpd_sbx *x = c->h->sbx;
	struct sbx_body *b = xmalloc(sizeof(*b));
	const char *error = NULL;
	if (sbx_body_parse(req->body.p, req->body.len, b, &error) < 0) {
		free(b);
		httpd_error(c, 400, error, NULL);
		return;
	}
	if (!del && b->read < 0) {
		free(b);
		httpd_error(c, 400, "Read (true or false) is required", NULL);
		return;
	}
	long n = sbx_store_update(x->store, inbox, b->ids, q != NULL ? 0 : b->n_ids, q,
	                          del ? -1 : b->read);
	free(b);
	if (n < 0)
		httpd_error(c, 500, "store error", NULL);
	else
		sbx_ok(c);
}

static void sbx_message(struct httpd_conn *c, const struct http_request *req, const char *inbox,
                        const char *rest)
{
	struct httpd_sbx *x = c->h->sbx;
	struct sbx_path p;
	if (sbx_path_parse(rest, &p) < 0) {
		httpd_error(c, 404, "no such resource", NULL);
		return;
	}
	bool post = strcmp(p.what, "release") == 0;
	if (!http_view_eq(req->method, post ? "POST" : "GET")) {
		httpd_error(c, 405, post ? "use POST" : "use GET",
		            post ? "Allow: POST\r\n" : "Allow: GET\r\n");
		return;
	}
	if (post && sbx_csrf(c, req) < 0)
		return;
	char id[65];
	struct buf raw;
	int64_t created = 0;
	if (sbx_load(c, inbox, p.id, id, &raw, &created) <= 0)
		return;
	struct buf out;
	buf_init(&out, SBX_JSON_MAX);
	if (p.what[0] == '\0') {
		/* Reading a message marks it read, as in Mailpit. */
		char ids[1][65];
		snprintf(ids[0], sizeof(ids[0]), "%s", id);
		sbx_store_update(x->store, inbox, ids, 1, NULL, 1);
		if (sbx_msg_json(raw.data, raw.len, id, created, &out) < 0)
			httpd_error(c, 500, "message too large to show", NULL);
		else
			sbx_json(c, 200, &out);
	} else if (strcmp(p.what, "raw") == 0) {
		httpd_respond(c, 200, "text/plain; charset=utf-8", (const char *)raw.data, raw.len,
		              "X-Content-Type-Options: nosniff\r\n"
		              "Content-Security-Policy: default-src 'none'; sandbox\r\n");
	} else if (strcmp(p.what, "headers") == 0) {
		if (sbx_msg_headers_json(raw.data, raw.len, &out) < 0)
			httpd_error(c, 500, "headers too large", NULL);
		else
			sbx_json(c, 200, &out);
	} else if (strcmp(p.what, "check") == 0) {
		if (sbx_msg_check(raw.data, raw.len, &out) < 0)
			httpd_error(c, 500, "message too large to check", NULL);
		else
			sbx_json(c, 200, &out);
	} else if (strcmp(p.what, "part") == 0) {
		char *type = NULL, *name = NULL;
		if (sbx_msg_part(raw.data, raw.len, p.part, &out, &type, &name) < 0) {
			httpd_error(c, 404, "no such part", NULL);
		} else {
			struct buf extra;
			buf_init(&extra, 8192);
			sbx_disposition(name, &extra);
			buf_append_str(&extra,
			               "X-Content-Type-Options: nosniff\r\n"
			               "Cross-Origin-Resource-Policy: same-origin\r\n"
			               "Content-Security-Policy: default-src 'none'; sandbox\r\n");
			httpd_respond(c, 200, sbx_safe_type(type), (const char *)out.data, out.len,
			              buf_cstr(&extra));
			buf_free(&extra);
		}
		free(type);
		free(name);
	} else { /* release */
		struct sbx_body *b = xmalloc(sizeof(*b));
		const char *error = "malformed JSON body";
		struct buf from, rcpts;
		buf_init(&from, 4096);
		buf_init(&rcpts, 16u << 20);
		if (sbx_body_parse(req->body.p, req->body.len, b, &error) < 0) {
			httpd_error(c, 400, error, NULL);
		} else if (b->n_to == 0) {
			httpd_error(c, 400, "To: at least one recipient is required", NULL);
		} else if (sbx_store_envelope(x->store, inbox, id, &from, &rcpts) <= 0) {
			httpd_error(c, 404, "no such message", NULL);
		} else if (sbx_release(x, buf_cstr(&from), b->to, b->n_to, &raw, &error) < 0) {
			httpd_error(c, 400, error, NULL);
		} else {
			log_info("event=sandbox_release id=%s inbox=%s nrcpt=%zu", id, inbox,
			         b->n_to);
			sbx_ok(c);
		}
		buf_free(&from);
		buf_free(&rcpts);
		free(b);
	}
	buf_free(&out);
	buf_free(&raw);
}

/* GET /view/{ID}.html (?remote=1: remote images allowed) and .txt */
static void sbx_view(struct httpd_conn *c, const struct http_request *req, const char *inbox,
                     const char *rest)
{
	const char *dot = strrchr(rest, '.');
	if (dot == NULL || (strcmp(dot, ".html") != 0 && strcmp(dot, ".txt") != 0) ||
	    !sbx_id_valid(rest, (size_t)(dot - rest))) {
		httpd_error(c, 404, "no such resource", NULL);
		return;
	}
	if (!http_view_eq(req->method, "GET")) {
		httpd_error(c, 405, "use GET", "Allow: GET\r\n");
		return;
	}
	char want[65], id[65];
	snprintf(want, sizeof(want), "%.*s", (int)(dot - rest), rest);
	struct buf raw, out;
	int64_t created = 0;
	if (sbx_load(c, inbox, want, id, &raw, &created) <= 0)
		return;
	buf_init(&out, SBX_JSON_MAX);
	if (strcmp(dot, ".html") == 0) {
		char remote[8] = "";
		bool allow = http_query_get(req->query, "remote", remote, sizeof(remote)) > 0 &&
		             strcmp(remote, "1") == 0;
		int r = sbx_msg_html(raw.data, raw.len, allow, &out);
		if (r <= 0) {
			httpd_error(c, r == 0 ? 404 : 500, r == 0 ? "no HTML part" : "too large",
			            NULL);
		} else {
			char extra[1024];
			snprintf(
			    extra, sizeof(extra),
			    "Content-Security-Policy: default-src 'none'; img-src data:%s; "
			    "style-src 'unsafe-inline'; font-src data:; base-uri 'none'; "
			    "form-action 'none'; frame-ancestors 'self'; sandbox\r\n"
			    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n",
			    allow ? " https: http:" : "");
			httpd_respond(c, 200, "text/html; charset=utf-8", (const char *)out.data,
			              out.len, extra);
		}
	} else {
		/* The text part: Text of the message JSON is what Mailpit shows;
		 * here the whole message as text, never interpreted. */
		httpd_respond(c, 200, "text/plain; charset=utf-8", (const char *)raw.data, raw.len,
		              "X-Content-Type-Options: nosniff\r\n"
		              "Content-Security-Policy: default-src 'none'; sandbox\r\n");
	}
	buf_free(&out);
	buf_free(&raw);
}

static void sbx_info(struct httpd_conn *c, const char *inbox)
{
	struct httpd_sbx *x = c->h->sbx;
	struct buf list, out;
	buf_init(&list, 1u << 20);
	buf_init(&out, 1u << 20);
	if (sbx_store_list(x->store, inbox, NULL, 0, 0, &list) < 0) {
		httpd_error(c, 500, "store error", NULL);
	} else {
		/* the counts, taken from the list's own JSON tail */
		const char *t = strstr(buf_cstr(&list), "\"total\":");
		const char *u = strstr(buf_cstr(&list), "\"unread\":");
		buf_append_str(&out, "{\"Version\":\"hikyaku\",\"Inbox\":");
		json_append_cstr(&out, inbox);
		buf_printf(&out, ",\"Messages\":%lld,\"Unread\":%lld,\"Tags\":{}}",
		           t != NULL ? strtoll(t + 8, NULL, 10) : 0LL,
		           u != NULL ? strtoll(u + 9, NULL, 10) : 0LL);
		sbx_json(c, 200, &out);
	}
	buf_free(&list);
	buf_free(&out);
}

/* ---- Server-Sent Events ---- */

static void sbx_sse_emit(void *arg, const char *inbox, const struct buf *item)
{
	struct httpd_sbx *x = arg;
	for (struct httpd_sse *s = x->streams; s != NULL; s = s->next) {
		if (strcmp(s->inbox, inbox) != 0)
			continue;
		struct evbuffer *out = bufferevent_get_output(s->c->bev);
		/* A client that does not read is cut rather than buffered for. */
		if (evbuffer_get_length(out) > (4u << 20))
			continue;
		evbuffer_add_printf(out, "event: new\ndata: ");
		evbuffer_add(out, item->data, item->len); /* JSON: no newline in it */
		evbuffer_add(out, "\n\n", 2);
	}
}

static void sbx_sse_poll(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct httpd_sbx *x = arg;
	if (x->n_streams == 0)
		return;
	if (x->last == 0)
		sbx_store_since(x->store, NULL, &x->last, 0, sbx_sse_emit, x);
	else
		sbx_store_since(x->store, NULL, &x->last, 256, sbx_sse_emit, x);
	if (++x->ticks * SBX_SSE_POLL_MS >= SBX_SSE_PING_S * 1000) {
		x->ticks = 0;
		for (struct httpd_sse *s = x->streams; s != NULL; s = s->next)
			evbuffer_add_printf(bufferevent_get_output(s->c->bev), ": ping\n\n");
	}
}

static void sbx_events(struct httpd_conn *c, const struct http_request *req, const char *inbox)
{
	struct httpd_sbx *x = c->h->sbx;
	if (!http_view_eq(req->method, "GET")) {
		httpd_error(c, 405, "use GET", "Allow: GET\r\n");
		return;
	}
	if (x->n_streams >= SBX_SSE_MAX) {
		httpd_error(c, 503, "too many event streams", "Retry-After: 5\r\n");
		return;
	}
	if (x->n_streams == 0 || x->last == 0) {
		x->last = 0;
		sbx_store_since(x->store, NULL, &x->last, 0, sbx_sse_emit, x);
	}
	struct httpd_sse *s = xcalloc(1, sizeof(*s));
	s->c = c;
	snprintf(s->inbox, sizeof(s->inbox), "%s", inbox);
	s->next = x->streams;
	x->streams = s;
	x->n_streams++;
	c->sse = s;
	c->close = true; /* no request after a stream */
	/* No read timeout while it streams: reading is off; the write
	 * timeout still cuts a client that stops taking events. */
	bufferevent_disable(c->bev, EV_READ);
	evbuffer_add_printf(bufferevent_get_output(c->bev),
	                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
	                    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
	                    "Connection: close\r\n\r\n: hikyaku sandbox events\n\n");
	struct timeval tv = {0, SBX_SSE_POLL_MS * 1000};
	if (!evtimer_pending(x->poll, NULL))
		event_add(x->poll, &tv);
}

void httpd_sbx_conn_gone(struct httpd_conn *c)
{
	struct httpd_sbx *x = c->h->sbx;
	if (x == NULL || c->sse == NULL)
		return;
	for (struct httpd_sse **pp = &x->streams; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == c->sse) {
			struct httpd_sse *s = *pp;
			*pp = s->next;
			free(s);
			x->n_streams--;
			break;
		}
	}
	c->sse = NULL;
}

/* ---- routing ---- */

bool httpd_sbx_route(struct httpd_conn *c, const struct http_request *req, const char *path)
{
	static const char v1[] = "/api/v1/";
	const char *rest = NULL;
	bool view = false, events = false;
	if (strncmp(path, v1, sizeof(v1) - 1) == 0) {
		rest = path + sizeof(v1) - 1;
		if (strcmp(rest, "messages") != 0 && strcmp(rest, "search") != 0 &&
		    strcmp(rest, "info") != 0 && strncmp(rest, "message/", 8) != 0)
			return false; /* the queue API's */
	} else if (strncmp(path, "/view/", 6) == 0) {
		rest = path + 6;
		view = true;
	} else if (strcmp(path, "/api/events") == 0) {
		events = true;
	} else {
		return false;
	}
	char inbox[SBX_INBOX_MAX + 1];
	if (sbx_inbox_of(c, req, inbox) < 0)
		return true;
	if (events) {
		sbx_events(c, req, inbox);
		return true;
	}
	if (view) {
		sbx_view(c, req, inbox, rest);
		return true;
	}
	if (strncmp(rest, "message/", 8) == 0) {
		sbx_message(c, req, inbox, rest + 8);
		return true;
	}
	bool get = http_view_eq(req->method, "GET");
	if (strcmp(rest, "info") == 0) {
		if (get)
			sbx_info(c, inbox);
		else
			httpd_error(c, 405, "use GET", "Allow: GET\r\n");
		return true;
	}
	bool search = strcmp(rest, "search") == 0;
	if (get) {
		sbx_list(c, req, inbox, search);
		return true;
	}
	bool put = http_view_eq(req->method, "PUT"), del = http_view_eq(req->method, "DELETE");
	if ((!put && !del) || (search && put)) {
		httpd_error(c, 405, "method not allowed here",
		            search ? "Allow: GET, DELETE\r\n" : "Allow: GET, PUT, DELETE\r\n");
		return true;
	}
	if (search) {
		/* DELETE /api/v1/search?query= has no body: no CSRF by
		 * content type, but the Origin checks still apply. */
		if ((req->sec_fetch_site.p != NULL &&
		     http_view_eq(req->sec_fetch_site, "cross-site")) ||
		    (req->origin.p != NULL && !sbx_same_origin(req->origin, req->host))) {
			httpd_error(c, 403, "cross-origin request refused", NULL);
			return true;
		}
		uint64_t start, limit;
		struct sbx_query q;
		if (sbx_query_args(c, req, &start, &limit, &q, true) < 0)
			return true;
		if (q.n == 0 && q.read < 0) {
			httpd_error(c, 400, "a query is required", NULL);
			return true;
		}
		sbx_update(c, req, inbox, true, &q);
		return true;
	}
	if (sbx_csrf(c, req) < 0)
		return true;
	sbx_update(c, req, inbox, del, NULL);
	return true;
}

/* ---- life ---- */

struct httpd_sbx *httpd_sbx_create(struct httpd *h)
{
	const struct conf *conf = h->conf;
	struct httpd_sbx *x = xcalloc(1, sizeof(*x));
	char err[512];
	x->h = h;
	if (sbx_store_open(conf->sandbox.dir, &x->store, err, sizeof(err)) < 0) {
		log_err("event=sandbox_store_error reason=\"%s\"", err);
		free(x);
		return NULL;
	}
	if (sbx_store_token_key(x->store, x->key) < 0) {
		log_err("event=sandbox_store_error reason=\"token.key: %s\"", strerror(errno));
		sbx_store_close(&x->store);
		free(x);
		return NULL;
	}
	snprintf(x->maildrop, sizeof(x->maildrop), "%s/%s", conf->spool_dir, MAILDROP_DIR);
	x->poll = event_new(h->base, -1, EV_PERSIST, sbx_sse_poll, x);
	return x;
}

void httpd_sbx_free(struct httpd_sbx **xp)
{
	struct httpd_sbx *x = *xp;
	if (x == NULL)
		return;
	*xp = NULL;
	while (x->streams != NULL) {
		struct httpd_sse *s = x->streams;
		x->streams = s->next;
		s->c->sse = NULL;
		free(s);
	}
	if (x->poll != NULL)
		event_free(x->poll);
	sbx_store_close(&x->store);
	explicit_bzero(x->key, sizeof(x->key));
	free(x);
}
