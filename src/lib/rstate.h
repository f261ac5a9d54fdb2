/* rstate.h — counters and greylist triplets kept in Redis, for several
 * hikyaku nodes that must enforce one set of limits (issue 11). One
 * asynchronous hiredis connection per process, on its libevent loop; every
 * request answers once through a callback (or is cancelled first), never
 * blocks, fails at once while the server is unreachable and after the
 * timeout when it does not answer. Reconnects
 * with back-off. The keys are opaque octets (the caller's); the replies
 * come from a trusted server but are checked for type and range anyway.
 *
 * Runs in smtpd, after its sandbox (only the TCP or unix connect). */
#ifndef HK_LIB_RSTATE_H
#define HK_LIB_RSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct rstate;
struct rstate_req;

#define RSTATE_PATH_MAX 108 /* sun_path */
#define RSTATE_PASSWORD_MAX 512

/* Where the server is: "host:port" (an IPv4 or IPv6 literal, "[v6]:port"
 * too: smtpd resolves no names), or "unix:/absolute/path". */
struct rstate_addr {
	bool is_unix;
	char host[64]; /* numeric */
	unsigned port;
	char path[RSTATE_PATH_MAX];
};

/* Parse s into a; 0, or -1 with *error_r. Pure. */
int rstate_addr_parse(const char *s, struct rstate_addr *a, const char **error_r);

/* Read the AUTH password, the file's first line (CR/LF stripped), into
 * out[cap]. The file must be a regular file that only its owner, root,
 * may read or write. 0, or -1 with a message in err. */
int rstate_password_read(const char *path, char *out, size_t cap, char *err, size_t errlen);

/* Connects at once (asynchronously). password may be NULL or "". */
struct rstate *rstate_create(struct event_base *base, const struct rstate_addr *a,
                             const char *password, uint64_t timeout_ms);
void rstate_free(struct rstate **rs);
/* Is the connection up (AUTH, if any, sent)? */
bool rstate_connected(const struct rstate *rs);

/* ok: the server answered; value: RSTATE_RATE: 1 allowed (counted), 0
 * refused; RSTATE_GREY: 0 pass, > 0 new triplet (seconds to wait), < 0 a
 * retry too early (minus the seconds to wait). */
typedef void rstate_fn(bool ok, long long value, void *arg);

/* One event more for key in the sliding window of window_ms (the current
 * fixed window's count plus the previous one's weighted by how much of it
 * is still inside), refused without counting at limit. Returns a handle
 * for rstate_cancel(), or NULL when cb was already called (failure). */
struct rstate_req *rstate_rate_take(struct rstate *rs, const void *key, size_t len, unsigned limit,
                                    uint64_t window_ms, uint64_t now_ms, rstate_fn *cb, void *arg);
/* The greylist triplet key at now_s (seconds, the nodes' common clock). */
struct rstate_req *rstate_grey_check(struct rstate *rs, const void *key, size_t len, uint64_t now_s,
                                     uint32_t delay_s, uint32_t retry_window_s,
                                     uint32_t retention_s, rstate_fn *cb, void *arg);
/* cb will not be called; clears *req. */
void rstate_cancel(struct rstate_req **req);

#endif
