/* ctl.h — the queue control interface (`hikyaku queue`, `mailq`; issue 4).
 *
 * The daemon listens on a unix stream socket <spool_dir>/control.sock (mode
 * 0600, owned by the service user); the CLI connects, sends one request and
 * reads frames until the answer is complete. Both directions use one frame
 * format, typed and length-prefixed (DESIGN.md), never lines:
 *
 *   u32 length (big-endian: octets after this field, >= 1)
 *   u8  type   (enum ctl_type)
 *   fields, each: u8 tag (enum ctl_tag), u32 length (big-endian), value
 *
 * A tag has one kind: u64 (exactly 8 octets, big-endian), str (no NUL) or
 * bytes. The decoder refuses oversized frames before reading them, unknown
 * types and tags, wrong kinds, and fields that run past the frame. It is pure
 * (no I/O) and resumable: 0 means "need more octets".
 *
 * Answers: LIST gives ITEM* END; SHOW gives ITEM END; STATS gives DSTAT*
 * END; ANALYTICS gives AJSON* END (the pieces make one JSON document);
 * the others give OK.
 * Any request may be answered with ERROR instead. */
#ifndef HK_CTL_CTL_H
#define HK_CTL_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define CTL_SOCKET_NAME "control.sock"
#define CTL_HDR_LEN 5              /* u32 length + u8 type */
#define CTL_FIELD_HDR_LEN 5        /* u8 tag + u32 length */
#define CTL_REQ_MAX 4096           /* a request frame, header included */
#define CTL_RESP_MAX (1024 * 1024) /* a response frame, header included */
#define CTL_ARG_MAX 255            /* a request argument: qid or domain */

enum ctl_type {
	/* requests (CLI -> daemon) */
	CTL_T_LIST = 1,
	CTL_T_SHOW = 2,    /* QID */
	CTL_T_FLUSH = 3,   /* nothing (all), QID, or DOMAIN */
	CTL_T_DELETE = 4,  /* QID */
	CTL_T_HOLD = 5,    /* QID */
	CTL_T_RELEASE = 6, /* QID */
	CTL_T_STATS = 7,   /* nothing: delivery statistics per domain and hour */
	CTL_T_ANALYTICS = 8, /* KIND, FROM, TO, DOMAIN?, SENDER?: the analytics store */
	/* responses (daemon -> CLI) */
	CTL_T_OK = 0x41,    /* MESSAGE, COUNT? */
	CTL_T_ERROR = 0x42, /* MESSAGE */
	CTL_T_ITEM = 0x43,  /* one queued message */
	CTL_T_END = 0x44,   /* end of a LIST, SHOW or STATS answer */
	CTL_T_DSTAT = 0x45, /* STATS: one domain in one hour */
	CTL_T_AJSON = 0x46, /* ANALYTICS: JSON (a piece of the answer, in order) */
};

enum ctl_tag {
	CTL_F_QID = 1,          /* str */
	CTL_F_DOMAIN = 2,       /* str: FLUSH by recipient domain */
	CTL_F_MESSAGE = 3,      /* str: OK / ERROR text */
	CTL_F_COUNT = 4,        /* u64: messages affected */
	CTL_F_ARRIVAL = 5,      /* u64: Unix time, microseconds */
	CTL_F_SIZE = 6,         /* u64: octets */
	CTL_F_SENDER = 7,       /* str: "" for the null sender */
	CTL_F_STATE = 8,        /* str: active, deferred, held */
	CTL_F_NEXT_TRY = 9,     /* u64: Unix time, microseconds; 0 unknown */
	CTL_F_ATTEMPTS = 10,    /* u64 */
	CTL_F_FLAGS = 11,       /* u64: ENVELOPE_SCHED_* */
	CTL_F_LAST_ERROR = 12,  /* str */
	CTL_F_ACTION = 13,      /* str: "hold"/"delete" after the current attempt */
	CTL_F_NRCPTS = 14,      /* u64: recipients in the envelope */
	CTL_F_NPENDING = 15,    /* u64: recipients without a final result */
	CTL_F_RCPT = 16,        /* str: starts one recipient */
	CTL_F_RCPT_DONE = 17,   /* u64 0/1: of the recipient before */
	CTL_F_RCPT_NOTIFY = 18, /* u64: SMTP_NOTIFY_* bits (mail/smtp_params.h) */
	CTL_F_RCPT_ORCPT = 19,  /* str */
	CTL_F_ENVID = 20,       /* str */
	CTL_F_RET = 21,         /* u64: enum smtp_ret */
	CTL_F_BODY = 22,        /* u64: enum smtp_body */
	CTL_F_SMTPUTF8 = 23,    /* u64 0/1 */
	CTL_F_CLIENT = 24,      /* str: client address */
	CTL_F_HELO = 25,        /* str */
	CTL_F_HEADERS = 26,     /* bytes: the header section, first 64 KiB */
	CTL_F_OMITTED = 27,     /* u64: recipients not listed (frame bound) */
	CTL_F_HOUR = 28,        /* u64: DSTAT: start of the hour, Unix time in us */
	CTL_F_SENT = 29,        /* u64: DSTAT recipients sent */
	CTL_F_DEFERRED = 30,    /* u64: ... deferred (attempts) */
	CTL_F_BOUNCED = 31,     /* u64: ... bounced */
	CTL_F_MEDIAN_MS = 32,   /* u64: median delay of the sent ones, ms (0: none) */
	CTL_F_KIND = 33,        /* str: ANALYTICS: series, domains, delays, reasons, tls, dmarc */
	CTL_F_FROM = 34,        /* u64: ANALYTICS: Unix time in s, included */
	CTL_F_TO = 35,          /* u64: ANALYTICS: Unix time in s, included */
	CTL_F_JSON = 36,        /* bytes: AJSON */
	CTL_F_MAX = 36,
};

struct ctl_frame {
	uint8_t type;
	const uint8_t *body; /* the fields; points into the decoded input */
	size_t body_len;
};

struct ctl_field {
	uint8_t tag;
	const uint8_t *p;
	size_t len;
};

/* ---- frame codec (pure) ---- */

/* Start a frame in out; returns its offset for ctl_frame_end(). */
size_t ctl_frame_begin(struct buf *out, uint8_t type);
/* Append one field. -1 when out's max would be passed. */
int ctl_frame_add(struct buf *out, uint8_t tag, const void *p, size_t len);
int ctl_frame_add_str(struct buf *out, uint8_t tag, const char *s);
int ctl_frame_add_u64(struct buf *out, uint8_t tag, uint64_t v);
/* Close the frame started at start: fill in its length. -1 (and the frame
 * is cut off again) when it is longer than max octets. */
int ctl_frame_end(struct buf *out, size_t start, size_t max);

/* Decode one frame at the start of (p, len). Returns 1 with *f and *used_r
 * (octets of the frame) set, 0 when more octets are needed, -1 with
 * *error_r when the frame is invalid or longer than max (decided from the
 * length field alone). f points into p. */
int ctl_frame_decode(const void *p, size_t len, size_t max, struct ctl_frame *f, size_t *used_r,
                     const char **error_r);
/* Walk a decoded frame's fields: 1 with *fld set, 0 at the end. */
int ctl_field_next(const struct ctl_frame *f, size_t *off, struct ctl_field *fld);
uint64_t ctl_field_u64(const struct ctl_field *fld);
bool ctl_type_is_request(uint8_t type);

/* An ANALYTICS request (the http process's /api/v1/analytics/KIND). */
#define CTL_KIND_MAX 15
#define CTL_ANALYTICS_SPAN_MAX (400ULL * 86400) /* seconds from FROM to TO */
struct ctl_analytics_req {
	char kind[CTL_KIND_MAX + 1];
	uint64_t from, to; /* Unix time in s */
	char domain[CTL_ARG_MAX + 1]; /* destination domain, "" all */
	char sender[CTL_ARG_MAX + 1]; /* sender domain, "" all */
};
/* Encode req as one request frame into out: -1 when it does not fit. */
int ctl_analytics_build(const struct ctl_analytics_req *req, struct buf *out);
/* Check and copy an ANALYTICS frame's fields: KIND (letters, at most
 * CTL_KIND_MAX), FROM <= TO within CTL_ANALYTICS_SPAN_MAX, each once;
 * DOMAIN and SENDER at most once, printable ASCII without space, at most
 * CTL_ARG_MAX. -1 with *error_r otherwise. Pure (fuzz_analytics). */
int ctl_analytics_decode(const struct ctl_frame *f, struct ctl_analytics_req *req,
                         const char **error_r);

/* "<spool_dir>/control.sock" into out; -1 if it does not fit a sun_path. */
int ctl_socket_path(const char *spool_dir, char *out, size_t outlen);

/* ---- daemon side (ctl_server.c), event loop thread ---- */

struct event_base;
struct qmgr;
struct ctl_server;

/* Bind <spool_dir>/control.sock (replacing a stale one; refusing when a
 * live daemon answers on it) and start accepting. */
int ctl_server_create(struct event_base *base, const char *spool_dir, struct qmgr *q,
                      struct ctl_server **srv_r, const char **error_r);
/* A connection from the http process (a socket the master made, so no
 * peer check): requests one after another, each answered in full before
 * the next is read; it stays open. */
void ctl_server_add_peer(struct ctl_server *srv, int fd);
/* Close every connection, finish the pending control work, unlink the
 * socket. Before qmgr_free(). */
void ctl_server_free(struct ctl_server **srv);

/* ---- CLI side (ctl_client.c) ---- */

/* The rendering of an answer, as text or JSON, shared by the CLI and the
 * http process's JSON API (one implementation of the queue's views). */
#include <stdio.h>
struct ctl_render {
	uint8_t req; /* the request's type */
	bool json;
	FILE *out, *err;
	/* list only, a search: items whose qid is qid, whose sender or one
	 * of whose listed recipients contains sender / recipient (ASCII case
	 * folded); NULL: any */
	const char *qid, *sender, *recipient;
	size_t n_items;     /* shown */
	uint64_t n_pending; /* recipients pending over the items shown */
	uint64_t omitted;   /* list: items the daemon left out (frame bound) */
	char message[256];  /* the daemon's OK, END or ERROR text */
};

/* The request frame of type with its argument (a qid, or for FLUSH a qid
 * or a domain; NULL for none) into req. -1 when it does not fit. */
int ctl_request_build(uint8_t type, const char *arg, struct buf *req);
void ctl_render_begin(struct ctl_render *r);
/* One answer frame: 1 when it was the last, 0 for more, -1 an error
 * (written to r->err; r->message has the daemon's text). */
int ctl_render_frame(struct ctl_render *r, const struct ctl_frame *f);

/* `hikyaku queue [--json] list|show ID|flush [ID|DOMAIN]|delete ID|hold ID|
 * release ID` against the daemon using spool_dir; argv[0] is the first
 * word after "queue". Prints the answer; returns the exit status. */
int ctl_client_main(const char *spool_dir, int argc, char **argv);

#endif
