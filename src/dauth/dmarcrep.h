/* dmarcrep.h — DMARC aggregate report data (RFC 7489 §7.2): the record of
 * one DMARC-evaluated message, its codec, and the per-UTC-day files under
 * <spool>/dmarc/ that hold them.
 *
 * smtpd encodes a record at the end of data (policy_dauth.c) and sends it
 * to the queue in a DMARC_RECORD frame (master/proto.h); the queue decodes
 * it again (the sender parses network input: the frame is not trusted)
 * and appends it to <spool>/dmarc/YYYYMMDD. `hikyaku dmarc report|stats`
 * and the queue's daily report run read the day files back (dmarcrep_report.c);
 * analytics may read them through dmarcrep_day_read() too.
 *
 * Record body: fields, each u8 tag, u16 length (big-endian), value;
 * unknown tags are an error (a newer writer bumps the magic). Day file:
 * records, each
 *
 *   "DMR1"  u32 body length (big-endian)  body  u32 CRC-32 (zlib) of all before it
 *
 * appended with one write(). A crash may leave a torn record at the end:
 * the reader skips what does not check (and looks for the next magic),
 * and the writer cuts a torn tail before it appends again. Pure functions
 * except dmarcrep_day_read() and the writer. */
#ifndef HK_DAUTH_DMARCREP_H
#define HK_DAUTH_DMARCREP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "dauth/dmarc.h"
#include "lib/buf.h"

#define DMARCREP_DKIM_MAX 8     /* DKIM results kept per message */
#define DMARCREP_BODY_MAX 16384 /* an encoded record body */
#define DMARCREP_HDR_LEN 8      /* magic and length */
#define DMARCREP_FRAME_OVERHEAD 12

/* RFC 7489 Appendix C's enumerations: the value is the index. */
enum dmarcrep_dkim_result { /* DKIMResultType (= enum dkim_result's order) */
	                    DMARCREP_DKIM_NONE,
	                    DMARCREP_DKIM_PASS,
	                    DMARCREP_DKIM_FAIL,
	                    DMARCREP_DKIM_POLICY,
	                    DMARCREP_DKIM_NEUTRAL,
	                    DMARCREP_DKIM_TEMPERROR,
	                    DMARCREP_DKIM_PERMERROR,
	                    DMARCREP_DKIM_N
};
enum dmarcrep_spf_result { /* SPFResultType (= enum spf_result's order) */
	                   DMARCREP_SPF_NONE,
	                   DMARCREP_SPF_NEUTRAL,
	                   DMARCREP_SPF_PASS,
	                   DMARCREP_SPF_FAIL,
	                   DMARCREP_SPF_SOFTFAIL,
	                   DMARCREP_SPF_TEMPERROR,
	                   DMARCREP_SPF_PERMERROR,
	                   DMARCREP_SPF_N
};
enum dmarcrep_reason { /* PolicyOverrideType, NONE: no reason element */
	               DMARCREP_REASON_NONE,
	               DMARCREP_REASON_FORWARDED,
	               DMARCREP_REASON_SAMPLED_OUT,
	               DMARCREP_REASON_TRUSTED_FORWARDER,
	               DMARCREP_REASON_MAILING_LIST,
	               DMARCREP_REASON_LOCAL_POLICY,
	               DMARCREP_REASON_OTHER,
	               DMARCREP_REASON_N
};

struct dmarcrep_dkim {
	char domain[DMARC_DOMAIN_MAX + 1]; /* d= */
	char selector[64];                 /* s=, cut to 63 */
	uint8_t result;                    /* enum dmarcrep_dkim_result */
};

struct dmarcrep_rec {
	uint64_t time; /* seconds since the epoch, when evaluated */
	/* policy_published: where the record was found and what it says */
	char policy_domain[DMARC_DOMAIN_MAX + 1];
	uint8_t p, sp; /* enum dmarc_policy */
	uint8_t pct;   /* 0..100 */
	bool adkim_strict, aspf_strict;
	size_t nrua;
	char rua[DMARC_RUA_MAX][256]; /* "mailto:..." */
	uint64_t rua_max[DMARC_RUA_MAX];
	/* row */
	char source_ip[46];             /* textual, as inet_ntop writes it */
	uint8_t disposition;            /* enum dmarc_disposition: what was applied */
	bool dkim_aligned, spf_aligned; /* policy_evaluated dkim/spf pass */
	uint8_t reason;                 /* enum dmarcrep_reason */
	/* identifiers */
	char header_from[DMARC_DOMAIN_MAX + 1];
	char env_from[DMARC_DOMAIN_MAX + 1]; /* MAIL FROM's domain (HELO's for <>) */
	char env_to[DMARC_DOMAIN_MAX + 1];   /* the first recipient's, "" unknown */
	/* auth_results */
	size_t ndkim;
	struct dmarcrep_dkim dkim[DMARCREP_DKIM_MAX];
	char spf_domain[DMARC_DOMAIN_MAX + 1];
	bool spf_helo;      /* scope helo, else mfrom */
	uint8_t spf_result; /* enum dmarcrep_spf_result */
};

const char *dmarcrep_dkim_result_name(unsigned r);
const char *dmarcrep_spf_result_name(unsigned r);
const char *dmarcrep_reason_name(unsigned r);

/* The body of r into out (appended). -1 when it does not fit out's max. */
int dmarcrep_rec_encode(const struct dmarcrep_rec *r, struct buf *out);
/* Decode and check one body (hostile: the peer may be a taken-over
 * smtpd, the file may be damaged): 0, or -1 with *error_r. Strings are
 * printable ASCII without spaces; every value is in its range. */
int dmarcrep_rec_decode(const void *p, size_t len, struct dmarcrep_rec *r, const char **error_r);

/* A whole day-file record (magic, length, body, CRC) around body. */
int dmarcrep_frame(const void *body, size_t len, struct buf *out);

/* ---- reading a day ---- */

struct dmarcrep_scan {
	size_t records;    /* good records given to the callback */
	size_t bad;        /* stretches skipped (torn, damaged) */
	size_t bad_octets; /* octets in them */
	size_t valid_end;  /* the end of the last good record */
};
/* Called for each good record; a non-zero return stops the walk. */
typedef int dmarcrep_rec_cb(const struct dmarcrep_rec *r, void *arg);
/* Walk a day file's bytes (pure; fuzz_dmarcrep). Returns what cb
 * returned last (0 when it ran to the end). cb NULL: records are only
 * CRC-checked, not decoded (to find valid_end quickly). */
int dmarcrep_day_parse(const void *p, size_t len, dmarcrep_rec_cb *cb, void *arg,
                       struct dmarcrep_scan *st);

/* "YYYYMMDD" of t (UTC) into out[9]. */
void dmarcrep_day_name(time_t t, char out[9]);
/* The day's [begin, end) in seconds since the epoch; -1 when day is not
 * a valid YYYYMMDD. */
int dmarcrep_day_range(const char *day, time_t *begin_r, time_t *end_r);

/* Read <spool_dir>/dmarc/<day> (at most max octets) and walk it. 0, 1
 * when there is no such file, -1 with *error_r. */
int dmarcrep_day_read(const char *spool_dir, const char *day, uint64_t max, dmarcrep_rec_cb *cb,
                      void *arg, struct dmarcrep_scan *st, const char **error_r);

/* ---- appending (the queue) ---- */

struct dmarcrep_writer;
/* The writer of <spool_dir>/dmarc/ (made when missing), days at most
 * max_day_size octets. */
struct dmarcrep_writer *dmarcrep_writer_create(const char *spool_dir, uint64_t max_day_size);
void dmarcrep_writer_free(struct dmarcrep_writer **w);
/* Check body and append it to the file of now's day: 0 written, 1 dropped
 * (the day is full: logged once a day), -1 with *error_r (a body that
 * does not decode, an I/O error). */
int dmarcrep_writer_append(struct dmarcrep_writer *w, const void *body, size_t len, time_t now,
                           const char **error_r);

#endif
