/* milter.h — smtpd's milter client (Sendmail milter protocol v6), one
 * conversation per SMTP session: each configured milter gets one
 * connection, opened at connect, and is asked at each stage as it comes
 * (CONNECT, HELO, MAIL, each RCPT, then at the end of data DATA, the
 * header fields, EOH, the body in chunks of at most 64 KiB, EOB), ABORT
 * when a transaction ends unfinished, QUIT at the end. A stage asks the
 * milters in turn and its verdict (and at EOB the modifications) come in
 * one result. Asynchronous on smtpd's libevent loop; every wait is
 * bounded by the milter's timeouts, and a milter that is down or slow gets
 * its failure mode (tempfail or accept) at every stage after. The replies
 * are hostile.
 *
 * Also the header section of a message as a list of fields, and the
 * header modifications applied to it (pure). */
#ifndef HK_MILTER_MILTER_H
#define HK_MILTER_MILTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

struct event_base;
struct conf_milter;
struct milter_sess;

/* What the milters are told about the message. */
struct milter_info {
	const char *hostname;    /* macro j */
	const char *qid;         /* macro i */
	const char *client_name; /* CONNECT host: the confirmed rDNS or "[addr]" */
	const char *client_addr; /* macro {client_addr}, CONNECT address */
	unsigned client_port;
	char family;           /* '4', '6' or 'L' (local submission) */
	const char *helo;      /* "" when none */
	const char *auth_user; /* macro {auth_authen}, NULL when none */
	const char *sender;    /* "" for the null sender */
	char *const *rcpts;
	size_t nrcpts;
};

/* The content: file[off .. off + file_len) (fd -1: none) followed by tail. */
struct milter_content {
	int fd;
	uint64_t off;
	uint64_t file_len;
	const unsigned char *tail;
	size_t tail_len;
};

/* The header section, a list of fields over a copy of its octets. */
struct milter_field {
	size_t off, len;  /* the whole field with its CRLF (folded lines too) */
	size_t name_len;  /* the name before ':' */
	size_t value_off; /* the value after ':' and its leading blanks */
	bool deleted;
};
struct milter_hdrs {
	struct buf raw;
	struct milter_field *f;
	size_t n, cap;
	uint64_t body_off; /* where the body starts in the content */
};

/* Parse the header section that starts p[0..len) (len the octets read,
 * total the content's length); a line that is not a field starts the body.
 * 0, or -1 when the section does not end within len (too long). */
int milter_hdrs_parse(struct milter_hdrs *h, const unsigned char *p, size_t len, uint64_t total);
void milter_hdrs_free(struct milter_hdrs *h);

enum milter_hdr_op_kind { MILTER_HDR_ADD, MILTER_HDR_INSERT, MILTER_HDR_CHANGE };
struct milter_hdr_op {
	enum milter_hdr_op_kind kind;
	uint32_t idx; /* INSERT: position (0 top); CHANGE: n-th field of name (1 first) */
	char *name;
	char *value; /* CHANGE with "": delete */
};
/* The header section after ops[0..n), into out (CRLF line ends; a value's
 * LF folds become CRLF). 0, or -1 when out's max is hit. */
int milter_hdrs_apply(const struct milter_hdrs *h, const struct milter_hdr_op *ops, size_t n,
                      struct buf *out);

enum milter_verdict {
	MILTER_ACCEPT,   /* go on, with the modifications */
	MILTER_REJECT,   /* code/enh/text: 5xx */
	MILTER_TEMPFAIL, /* code/enh/text: 4xx */
	MILTER_DISCARD,  /* 250, no delivery */
};

enum milter_stage {
	MILTER_STAGE_CONNECT,
	MILTER_STAGE_HELO,
	MILTER_STAGE_MAIL,
	MILTER_STAGE_RCPT, /* info->rcpts[0] */
	MILTER_STAGE_EOB,  /* DATA, headers, EOH, body, EOB */
};

struct milter_result {
	enum milter_verdict verdict;
	int code;
	char enh[16];
	char text[400];
	char milter[64];  /* the milter that decided, "" for accept */
	bool custom;      /* code/enh/text from the milter (SMFIR_REPLYCODE) */
	bool failed;      /* a failed milter's tempfail (its failure mode) */
	char *quarantine; /* reason, or NULL */
	char *new_sender; /* SMFIR_CHGFROM, without <> */
	char **add_rcpts;
	size_t n_add;
	char **del_rcpts;
	size_t n_del;
	struct milter_hdr_op *ops;
	size_t n_ops, cap_ops;
	bool body_replaced;
	struct buf body;         /* SMFIR_REPLBODY, bounded by max_body */
	struct milter_hdrs hdrs; /* the original header section */
};

typedef void milter_done_fn(struct milter_result *r, void *arg);

/* A session's milters (milters[0..n), which must outlive it); nothing is
 * opened before the CONNECT stage. */
struct milter_sess *milter_sess_new(struct event_base *base, const struct conf_milter *milters,
                                    size_t n, const char *sid);
/* QUIT to every live milter, close, free; a run in progress is cancelled. */
void milter_sess_free(struct milter_sess **ms);
/* Ask milters[first..last) in turn at stage (the CONNECT stage connects
 * them). A milter that accepted for the session (at CONNECT or HELO) or the
 * transaction (later), or that failed with failure accept, is skipped; one
 * that failed with failure tempfail tempfails the stage. The first reject,
 * tempfail or discard decides. cb is called once, always from the loop
 * (never inside this call), unless milter_sess_cancel() comes first; the
 * result is the caller's (milter_result_free()). info (and at EOB content)
 * must stay valid until then. max_body bounds a replaced body. One run at
 * a time: -1 when one is in progress. */
int milter_sess_run(struct milter_sess *ms, enum milter_stage stage, size_t first, size_t last,
                    const struct milter_info *info, const struct milter_content *content,
                    uint64_t max_body, milter_done_fn *cb, void *arg);
/* Stop the run in progress (no callback); a milter in the middle of a
 * stage is closed (it cannot be resynchronised) and counts as failed. */
void milter_sess_cancel(struct milter_sess *ms);
/* The transaction ended unfinished (RSET, EHLO, a refusal, the session):
 * SMFIC_ABORT to the milters that saw its MAIL, and the transaction's
 * accepts and discard are forgotten. */
void milter_sess_abort(struct milter_sess *ms);
/* A milter discarded: at CONNECT/HELO every message of the session, later
 * the transaction's message (until milter_sess_abort or the next MAIL). */
bool milter_sess_discarding(const struct milter_sess *ms);
/* Only the session-wide one (then the later milters were never connected). */
bool milter_sess_discarding_session(const struct milter_sess *ms);
/* The milter given this name decided a discard (for the log), or "". */
const char *milter_sess_discarder(const struct milter_sess *ms);
size_t milter_sess_count(const struct milter_sess *ms);
bool milter_sess_running(const struct milter_sess *ms);
/* The result's parts (the struct itself is the run's, freed with it). */
void milter_result_free(struct milter_result **r);
/* The address of a milter reply without its <>; into out. */
void milter_addr_strip(const char *in, char *out, size_t outlen);

#endif
