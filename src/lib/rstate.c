/* rstate.c — counters and greylist triplets in Redis through hiredis's
 * asynchronous API on the process's libevent loop (see rstate.h).
 *
 * Runs in smtpd after its sandbox: it connects (TCP to a numeric address,
 * so no resolver files are read, or a unix socket) and reconnects with
 * back-off (RSTATE_BACKOFF_MIN doubling to RSTATE_BACKOFF_MAX). Nothing
 * waits on the server: a request while it is down fails at once, and one
 * unanswered after the timeout fails then (the reply, if it comes, is
 * dropped). Failures are logged at most RSTATE_LOG_BURST times a minute.
 * A server that accepts but stops answering is dropped when requests have
 * been in flight for two timeouts without a reply; at most
 * RSTATE_PENDING_MAX are in flight. Replies come from a trusted server and
 * are still checked: an integer, or a failure. Keys are the caller's
 * octets under "hk:r:" (rates) and "hk:g:" (greylist), passed binary-safe
 * (%b). */
#include "lib/rstate.h"
#include "lib/alloc.h"
#include "lib/log.h"
#include "lib/logrl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RSTATE_BACKOFF_MIN 100  /* ms */
#define RSTATE_BACKOFF_MAX 5000 /* ms */
#define RSTATE_PENDING_MAX 4096 /* requests in flight */
#define RSTATE_KEY_MAX 2048     /* octets of a key, prefix included */
#define RSTATE_LOG_BURST 5      /* failure lines per window */
#define RSTATE_LOG_WINDOW_US 60000000ULL

/* The sliding window: the current fixed window's count plus the previous
 * one's times ARGV[2]/1000; refused without counting at ARGV[1]; the
 * current key lives two windows (ARGV[3] ms) so that it is the next one's
 * previous. Returns 1 (counted) or 0 (refused). */
static const char rstate_rate_lua[] =
    "local cur=tonumber(redis.call('GET',KEYS[1]) or '0') "
    "local prev=tonumber(redis.call('GET',KEYS[2]) or '0') "
    "if cur+math.floor(prev*tonumber(ARGV[2])/1000)>=tonumber(ARGV[1]) then return 0 end "
    "if redis.call('INCR',KEYS[1])==1 then redis.call('PEXPIRE',KEYS[1],ARGV[3]) end "
    "return 1";

/* A triplet: a hash with the first attempt ("first") and, once a retry
 * came after the delay, "pass". Unpassed it lives the retry window, passed
 * the retention from its last use. Returns 0 pass, the delay for a new
 * triplet, minus the seconds left for an early retry. */
static const char rstate_grey_lua[] =
    "local now=tonumber(ARGV[1]) local delay=tonumber(ARGV[2]) "
    "local win=tonumber(ARGV[3]) local ret=tonumber(ARGV[4]) "
    "local v=redis.call('HMGET',KEYS[1],'first','pass') "
    "if v[2] then redis.call('HSET',KEYS[1],'pass',now) "
    "redis.call('EXPIRE',KEYS[1],ret) return 0 end "
    "local first=tonumber(v[1]) "
    "if first==nil or now-first>win then redis.call('HSET',KEYS[1],'first',now) "
    "redis.call('EXPIRE',KEYS[1],win) return delay end "
    "if now-first>=delay then redis.call('HSET',KEYS[1],'pass',now) "
    "redis.call('EXPIRE',KEYS[1],ret) return 0 end "
    "local w=delay-(now-first) if w>delay then w=delay end return -w";

struct rstate {
	struct event_base *base;
	struct rstate_addr addr;
	char password[RSTATE_PASSWORD_MAX];
	uint64_t timeout_ms;
	redisAsyncContext *ac; /* NULL while down */
	bool connected;
	uint64_t backoff_ms;
	struct event *retry;    /* the next connect */
	struct event *watchdog; /* connect timeout and unanswered requests */
	unsigned pending;       /* requests in flight */
	uint64_t progress_ms;   /* last reply, or when pending went from 0 */
	struct logrl rl;
};

struct rstate_req {
	struct rstate *rs;
	rstate_fn *cb; /* NULL: answered (timed out) or cancelled */
	void *arg;
	struct event *timer; /* the request's timeout; NULL once fired or cancelled */
};

static void rstate_req_timer_free(struct rstate_req *req)
{
	if (req->timer != NULL) {
		event_free(req->timer);
		req->timer = NULL;
	}
}

static uint64_t rstate_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void rstate_log_failure(struct rstate *rs, const char *what, const char *detail)
{
	uint64_t now_us = rstate_now_ms() * 1000;
	if (logrl_burst_over(&rs->rl, now_us)) {
		uint64_t n = logrl_take(&rs->rl);
		if (n > 0)
			log_warn("event=suppressed what=redis count=%llu", (unsigned long long)n);
	}
	if (logrl_allow(&rs->rl, now_us))
		log_warn("event=redis status=%s error=\"%.120s\"", what, detail);
}

int rstate_addr_parse(const char *s, struct rstate_addr *a, const char **error_r)
{
	memset(a, 0, sizeof(*a));
	if (strncmp(s, "unix:", 5) == 0) {
		const char *p = s + 5;
		size_t len = strlen(p);
		if (p[0] != '/' || len >= sizeof(a->path)) {
			*error_r = "a unix socket needs an absolute path of at most 107 octets";
			return -1;
		}
		a->is_unix = true;
		memcpy(a->path, p, len + 1);
		return 0;
	}
	const char *colon = strrchr(s, ':');
	if (colon == NULL || colon == s) {
		*error_r = "expected host:port, [v6]:port or unix:/path";
		return -1;
	}
	const char *h = s;
	size_t hlen = (size_t)(colon - s);
	if (h[0] == '[') {
		if (hlen < 3 || h[hlen - 1] != ']') {
			*error_r = "an IPv6 address needs [brackets]:port";
			return -1;
		}
		h++;
		hlen -= 2;
	}
	if (hlen >= sizeof(a->host)) {
		*error_r = "host too long";
		return -1;
	}
	memcpy(a->host, h, hlen);
	a->host[hlen] = '\0';
	unsigned char tmp[16];
	bool v6 = inet_pton(AF_INET6, a->host, tmp) == 1;
	if (!v6 && inet_pton(AF_INET, a->host, tmp) != 1) {
		*error_r = "the host must be an IPv4 or IPv6 address (smtpd resolves no names)";
		return -1;
	}
	if (v6 && s[0] != '[') {
		*error_r = "an IPv6 address needs [brackets]:port";
		return -1;
	}
	const char *p = colon + 1;
	unsigned long port = 0;
	if (*p == '\0') {
		*error_r = "missing port";
		return -1;
	}
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || port > 65535) {
			*error_r = "invalid port";
			return -1;
		}
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port == 0 || port > 65535) {
		*error_r = "port out of range 1..65535";
		return -1;
	}
	a->port = (unsigned)port;
	return 0;
}

int rstate_password_read(const char *path, char *out, size_t cap, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & 077) != 0) {
		close(fd);
		snprintf(err, errlen, "%s: must be a regular file of root's, mode 0600 or 0400",
		         path);
		return -1;
	}
	ssize_t n = read(fd, out, cap - 1);
	close(fd);
	if (n < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	out[n] = '\0';
	out[strcspn(out, "\r\n")] = '\0';
	if (out[0] == '\0') {
		snprintf(err, errlen, "%s: empty", path);
		return -1;
	}
	return 0;
}

static void rstate_connect(struct rstate *rs);

static void rstate_schedule_retry(struct rstate *rs)
{
	struct timeval tv = {.tv_sec = (time_t)(rs->backoff_ms / 1000),
	                     .tv_usec = (suseconds_t)(rs->backoff_ms % 1000 * 1000)};
	evtimer_add(rs->retry, &tv);
	rs->backoff_ms =
	    rs->backoff_ms * 2 > RSTATE_BACKOFF_MAX ? RSTATE_BACKOFF_MAX : rs->backoff_ms * 2;
}

/* Drop the connection (its requests fail) and try again later. */
static void rstate_drop(struct rstate *rs, const char *why)
{
	redisAsyncContext *ac = rs->ac;
	rs->ac = NULL;
	rs->connected = false;
	rstate_log_failure(rs, "down", why);
	if (ac != NULL)
		redisAsyncFree(ac); /* calls the pending callbacks with no reply */
	rstate_schedule_retry(rs);
}

static void rstate_on_connect(const redisAsyncContext *ac, int status)
{
	struct rstate *rs = ac->data;
	if (rs == NULL || rs->ac != ac)
		return;
	if (status != REDIS_OK) {
		/* hiredis frees the context after this callback. */
		rs->ac = NULL;
		rs->connected = false;
		rstate_log_failure(rs, "connect_failed", ac->errstr);
		rstate_schedule_retry(rs);
		return;
	}
	rs->connected = true;
	rs->backoff_ms = RSTATE_BACKOFF_MIN;
	log_info("event=redis status=connected");
}

static void rstate_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct rstate *rs = ac->data;
	(void)status;
	if (rs == NULL || rs->ac != ac)
		return; /* our own rstate_drop() or rstate_free() */
	rs->ac = NULL;
	rs->connected = false;
	rstate_log_failure(rs, "disconnected", ac->errstr[0] != '\0' ? ac->errstr : "closed");
	rstate_schedule_retry(rs);
}

static void rstate_on_auth(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	struct rstate *rs = privdata;
	(void)ac;
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		rstate_log_failure(rs, "auth_failed", reply->str);
}

static void rstate_connect(struct rstate *rs)
{
	redisAsyncContext *ac = rs->addr.is_unix
	                            ? redisAsyncConnectUnix(rs->addr.path)
	                            : redisAsyncConnect(rs->addr.host, (int)rs->addr.port);
	if (ac == NULL || ac->err != 0) {
		rstate_log_failure(rs, "connect_failed", ac != NULL ? ac->errstr : "no memory");
		if (ac != NULL)
			redisAsyncFree(ac);
		rstate_schedule_retry(rs);
		return;
	}
	ac->data = rs;
	rs->ac = ac;
	rs->connected = false;
	redisLibeventAttach(ac, rs->base);
	redisAsyncSetConnectCallback(ac, rstate_on_connect);
	redisAsyncSetDisconnectCallback(ac, rstate_on_disconnect);
	if (rs->password[0] != '\0')
		redisAsyncCommand(ac, rstate_on_auth, rs, "AUTH %s", rs->password);
	rs->progress_ms = rstate_now_ms(); /* the connect counts as in flight */
}

static void rstate_on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	rstate_connect(arg);
}

/* Every timeout: a connect that has not finished, or requests unanswered
 * for two timeouts, drop the connection. */
static void rstate_on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	struct rstate *rs = arg;
	(void)fd;
	(void)what;
	if (rs->ac == NULL)
		return;
	uint64_t now = rstate_now_ms();
	if (!rs->connected && now - rs->progress_ms > rs->timeout_ms)
		rstate_drop(rs, "connect timed out");
	else if (rs->pending > 0 && now - rs->progress_ms > 2 * rs->timeout_ms)
		rstate_drop(rs, "no answer");
}

struct rstate *rstate_create(struct event_base *base, const struct rstate_addr *a,
                             const char *password, uint64_t timeout_ms)
{
	struct rstate *rs = xcalloc(1, sizeof(*rs));
	rs->base = base;
	rs->addr = *a;
	if (password != NULL)
		snprintf(rs->password, sizeof(rs->password), "%s", password);
	rs->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
	rs->backoff_ms = RSTATE_BACKOFF_MIN;
	logrl_init(&rs->rl, RSTATE_LOG_BURST, RSTATE_LOG_WINDOW_US);
	rs->retry = evtimer_new(base, rstate_on_retry, rs);
	rs->watchdog = event_new(base, -1, EV_PERSIST, rstate_on_watchdog, rs);
	struct timeval tv = {.tv_sec = (time_t)(rs->timeout_ms / 1000),
	                     .tv_usec = (suseconds_t)(rs->timeout_ms % 1000 * 1000)};
	evtimer_add(rs->watchdog, &tv);
	rstate_connect(rs);
	return rs;
}

void rstate_free(struct rstate **rsp)
{
	struct rstate *rs = *rsp;
	if (rs == NULL)
		return;
	*rsp = NULL;
	if (rs->ac != NULL) {
		redisAsyncContext *ac = rs->ac;
		rs->ac = NULL;
		ac->data = NULL;
		redisAsyncFree(ac);
	}
	event_free(rs->retry);
	event_free(rs->watchdog);
	explicit_bzero(rs->password, sizeof(rs->password));
	free(rs);
}

bool rstate_connected(const struct rstate *rs)
{
	return rs->connected;
}

static void rstate_on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	redisReply *reply = r;
	struct rstate_req *req = privdata;
	struct rstate *rs = ac->data; /* NULL once rstate_free() began */
	if (rs != NULL) {
		rs->pending--;
		rs->progress_ms = rstate_now_ms();
	}
	bool ok = reply != NULL && reply->type == REDIS_REPLY_INTEGER;
	if (rs != NULL && reply != NULL && !ok)
		rstate_log_failure(rs, "bad_reply",
		                   reply->type == REDIS_REPLY_ERROR ? reply->str
		                                                    : "not an integer");
	rstate_req_timer_free(req);
	if (req->cb != NULL)
		req->cb(ok, ok ? reply->integer : 0, req->arg);
	free(req);
}

/* No answer within the timeout: the caller hears of a failure now; the
 * request stays with hiredis until its reply (or the connection's end). */
static void rstate_on_req_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct rstate_req *req = arg;
	(void)fd;
	(void)what;
	rstate_req_timer_free(req);
	rstate_fn *cb = req->cb;
	req->cb = NULL;
	rstate_log_failure(req->rs, "timeout", "no answer within state.redis_timeout");
	if (cb != NULL)
		cb(false, 0, req->arg);
}

/* Send an EVAL; NULL after calling cb(false) when it cannot be sent. */
static struct rstate_req *rstate_eval(struct rstate *rs, const char *script,
                                      const char *const *args, size_t nargs, rstate_fn *cb,
                                      void *arg, const char *k1, size_t l1, const char *k2,
                                      size_t l2)
{
	if (rs->ac == NULL || rs->pending >= RSTATE_PENDING_MAX) {
		rstate_log_failure(rs, rs->ac == NULL ? "unavailable" : "overloaded",
		                   "request not sent");
		cb(false, 0, arg);
		return NULL;
	}
	struct rstate_req *req = xcalloc(1, sizeof(*req));
	req->rs = rs;
	req->cb = cb;
	req->arg = arg;
	const char *argv[10];
	size_t argl[10];
	size_t n = 0;
	argv[n] = "EVAL";
	argl[n++] = 4;
	argv[n] = script;
	argl[n++] = strlen(script);
	argv[n] = k2 != NULL ? "2" : "1";
	argl[n++] = 1;
	argv[n] = k1;
	argl[n++] = l1;
	if (k2 != NULL) {
		argv[n] = k2;
		argl[n++] = l2;
	}
	for (size_t i = 0; i < nargs && n < 10; i++) {
		argv[n] = args[i];
		argl[n++] = strlen(args[i]);
	}
	if (rs->pending == 0)
		rs->progress_ms = rstate_now_ms();
	if (redisAsyncCommandArgv(rs->ac, rstate_on_reply, req, (int)n, argv, argl) != REDIS_OK) {
		free(req);
		rstate_log_failure(rs, "send_failed", "redisAsyncCommandArgv");
		cb(false, 0, arg);
		return NULL;
	}
	rs->pending++;
	req->timer = evtimer_new(rs->base, rstate_on_req_timeout, req);
	struct timeval tv = {.tv_sec = (time_t)(rs->timeout_ms / 1000),
	                     .tv_usec = (suseconds_t)(rs->timeout_ms % 1000 * 1000)};
	evtimer_add(req->timer, &tv);
	return req;
}

/* prefix + key + suffix into out[RSTATE_KEY_MAX]; the length, 0 if too long. */
static size_t rstate_key(char *out, const char *prefix, const void *key, size_t len,
                         const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	if (pl + len + sl > RSTATE_KEY_MAX)
		return 0;
	memcpy(out, prefix, pl);
	memcpy(out + pl, key, len);
	memcpy(out + pl + len, suffix, sl);
	return pl + len + sl;
}

struct rstate_req *rstate_rate_take(struct rstate *rs, const void *key, size_t len, unsigned limit,
                                    uint64_t window_ms, uint64_t now_ms, rstate_fn *cb, void *arg)
{
	if (window_ms == 0)
		window_ms = 1;
	/* The window index from the wall clock, which the nodes share (the
	 * monotonic clock is per machine). */
	uint64_t idx = now_ms / window_ms;
	uint64_t into = now_ms % window_ms;
	char s1[24], s2[24];
	snprintf(s1, sizeof(s1), ":%llu", (unsigned long long)idx);
	snprintf(s2, sizeof(s2), ":%llu", (unsigned long long)(idx - 1));
	char k1[RSTATE_KEY_MAX], k2[RSTATE_KEY_MAX];
	size_t l1 = rstate_key(k1, "hk:r:", key, len, s1);
	size_t l2 = rstate_key(k2, "hk:r:", key, len, s2);
	if (l1 == 0 || l2 == 0) {
		cb(false, 0, arg);
		return NULL;
	}
	char a1[24], a2[24], a3[24];
	snprintf(a1, sizeof(a1), "%u", limit);
	snprintf(a2, sizeof(a2), "%llu",
	         (unsigned long long)((window_ms - into) * 1000 / window_ms));
	snprintf(a3, sizeof(a3), "%llu", (unsigned long long)(2 * window_ms));
	const char *args[] = {a1, a2, a3};
	return rstate_eval(rs, rstate_rate_lua, args, 3, cb, arg, k1, l1, k2, l2);
}

struct rstate_req *rstate_grey_check(struct rstate *rs, const void *key, size_t len, uint64_t now_s,
                                     uint32_t delay_s, uint32_t retry_window_s,
                                     uint32_t retention_s, rstate_fn *cb, void *arg)
{
	char k1[RSTATE_KEY_MAX];
	size_t l1 = rstate_key(k1, "hk:g:", key, len, "");
	if (l1 == 0) {
		cb(false, 0, arg);
		return NULL;
	}
	char a1[24], a2[16], a3[16], a4[16];
	snprintf(a1, sizeof(a1), "%llu", (unsigned long long)now_s);
	snprintf(a2, sizeof(a2), "%u", (unsigned)delay_s);
	snprintf(a3, sizeof(a3), "%u", (unsigned)(retry_window_s > 0 ? retry_window_s : 1));
	snprintf(a4, sizeof(a4), "%u", (unsigned)(retention_s > 0 ? retention_s : 1));
	const char *args[] = {a1, a2, a3, a4};
	return rstate_eval(rs, rstate_grey_lua, args, 4, cb, arg, k1, l1, NULL, 0);
}

void rstate_cancel(struct rstate_req **req)
{
	if (*req == NULL)
		return;
	(*req)->cb = NULL; /* freed when its reply (or the connection's end) comes */
	rstate_req_timer_free(*req);
	*req = NULL;
}
