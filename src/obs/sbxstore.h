/* sbxstore.h — the sandbox's store of captured mail (issue 13): each
 * message in <dir>/msg/<ID>.eml (written, fsynced, renamed, directory
 * fsynced) and a row in an SQLite index (<dir>/index.sqlite, WAL,
 * synchronous=FULL) with its inbox, time, size, read flag and the summary
 * the list shows, and an FTS5 table over from, to, subject and text.
 *
 * Two processes open it: the queue captures (sbx_store_capture, on its
 * delivery workers) and applies retention; the http process lists,
 * searches, reads, marks and deletes for the API. SQLite's locks make
 * them safe together (busy timeout 5 s); a handle is serialized by a mutex
 * of its own, so a process may share one between threads. The content is
 * hostile (anyone who can send mail to a sandbox listener): it is stored
 * as octets, summarized by bounded parsers and always escaped on output. */
#ifndef HK_OBS_SBXSTORE_H
#define HK_OBS_SBXSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct sbx_store;
struct sbx_query;

#define SBX_INBOX_MAX 255
#define SBX_TOKEN_KEY_LEN 32

struct sbx_limits {
	uint64_t max_messages; /* 0: none */
	uint64_t max_size;     /* octets, 0: none */
	uint64_t max_age_ms;   /* 0: none */
};

/* Open (creating the directory's files when missing) the store in dir. 0,
 * or -1 with a message in err. */
int sbx_store_open(const char *dir, struct sbx_store **s_r, char *err, size_t errlen);
void sbx_store_close(struct sbx_store **s);
void sbx_store_set_limits(struct sbx_store *s, const struct sbx_limits *l);

/* One message to capture: its content is fd[off, off + len). */
struct sbx_capture {
	const char *id;      /* the queue id (the same message captured twice is one) */
	const char *inbox;   /* "" or NULL: "default" */
	uint64_t created_us; /* arrival */
	int fd;
	uint64_t off, len;
	const char *env_from; /* MAIL FROM */
	char *const *rcpts;   /* RCPT TO */
	size_t nrcpts;
};

/* Write the message file and its row, then apply the limits (oldest
 * removed first). 0 (also when the ID is already there), -1 with err. The
 * new row's list item JSON into item (when not NULL). */
int sbx_store_capture(struct sbx_store *s, const struct sbx_capture *c, struct buf *item, char *err,
                      size_t errlen);

/* The list (GET /api/v1/messages, /api/v1/search) of inbox in Mailpit's
 * shape: {"total","unread","count","messages_count","start","tags",
 * "messages":[...]}, newest first. q NULL: every message. 0 or -1. */
int sbx_store_list(struct sbx_store *s, const char *inbox, const struct sbx_query *q,
                   uint64_t start, uint64_t limit, struct buf *out);

/* The messages of inbox named by ids[0..n) (n == 0 with all: every one;
 * with q: those that match it): marked read (read 1) or unread (0), or
 * deleted (read -1). Returns how many, or -1. */
long sbx_store_update(struct sbx_store *s, const char *inbox, char (*ids)[65], size_t n,
                      const struct sbx_query *q, int read);

/* A message of inbox by ID ("latest": the newest): its ID into id_r, its
 * list item JSON into item (when not NULL). 1 found, 0 not, -1 error. */
int sbx_store_get(struct sbx_store *s, const char *inbox, const char *id, char id_r[65],
                  struct buf *item);

/* Open the message file of ID (read-only); -1 with errno. */
int sbx_store_open_msg(struct sbx_store *s, const char *id);

/* The message's envelope (MAIL FROM, RCPT TO as a JSON array). 1, 0, -1. */
int sbx_store_envelope(struct sbx_store *s, const char *inbox, const char *id, struct buf *from,
                       struct buf *rcpts_json);

/* Messages of inbox after rowid *last (all inboxes when inbox is NULL),
 * oldest first, at most max: cb with each list item JSON; *last moves on.
 * The first call with *last == 0 only learns the newest rowid. */
int sbx_store_since(struct sbx_store *s, const char *inbox, int64_t *last, size_t max,
                    void (*cb)(void *arg, const char *inbox, const struct buf *item), void *arg);

/* Every inbox with its message count, for `hikyaku sandbox inboxes`. */
int sbx_store_inboxes(struct sbx_store *s, void (*cb)(void *arg, const char *inbox, uint64_t n),
                      void *arg);

/* The key inbox tokens derive from (<dir>/token.key, made at the first
 * open by the first process, mode 0600): 0 or -1. */
int sbx_store_token_key(struct sbx_store *s, unsigned char key[SBX_TOKEN_KEY_LEN]);
/* The token of inbox: hex of HMAC-SHA256(key, inbox), 64 characters. */
void sbx_token_for(const unsigned char key[SBX_TOKEN_KEY_LEN], const char *inbox, char out[65]);

/* Is inbox a usable inbox name (1..SBX_INBOX_MAX printable ASCII, no
 * space)? SMTP logins are. */
bool sbx_inbox_valid(const char *inbox);

#endif
