/* record.h — the typed, length-prefixed envelope record file.
 *
 * Layout (all integers big-endian):
 *   magic   "HKENV\0\1\n" (8 octets)
 *   record* type:u8 len:u32 payload[len]
 * The envelope proper ends with an END record whose payload is the CRC-32 of
 * every octet before it (magic included), so a torn or forged file is
 * refused. After END only MARK records follow, one per update as recipients
 * reach a final result and the retry schedule changes, each with its own
 * CRC-32. A trailing record that is short, fails its CRC or reads as zeros
 * (what a crash during an append leaves on file systems that extend the
 * size before the data) is a torn append and is ignored with everything
 * after it: its recipients are retried (a duplicate, never a loss). Files
 * of earlier versions have DONE and SCHED records there instead, still
 * read.
 *
 * Nothing here is text that a peer could forge into structure: strings are
 * payloads with explicit lengths and may not contain NUL. Pure; no I/O. */
#ifndef HK_QUEUE_RECORD_H
#define HK_QUEUE_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "mail/envelope.h"

#define RECORD_MAGIC "HKENV\0\1\n"
#define RECORD_MAGIC_LEN 8
#define RECORD_MAX_PAYLOAD 65536 /* any single record */
#define RECORD_MAX_FILE (64u * 1024 * 1024)

enum record_type {
	REC_QID = 1,         /* string */
	REC_ARRIVAL = 2,     /* u64 microseconds */
	REC_SENDER = 3,      /* string, may be empty */
	REC_ENVID = 4,       /* string */
	REC_RET = 5,         /* u8 */
	REC_BODY = 6,        /* u8 */
	REC_SMTPUTF8 = 7,    /* u8 0/1 */
	REC_CLIENT_ADDR = 8, /* string */
	REC_CLIENT_HELO = 9, /* string */
	REC_SIZE = 10,       /* u64 */
	REC_RCPT = 11,       /* string: starts a recipient */
	REC_RCPT_NOTIFY = 12, /* u8: applies to the preceding RCPT */
	REC_RCPT_ORCPT = 13,  /* string: applies to the preceding RCPT */
	REC_END = 14,        /* u32 CRC-32 (IEEE) of all preceding octets */
	REC_DONE = 15,       /* u32 recipient index, after END only (read, no longer written) */
	REC_SCHED = 16,      /* u64 next attempt (us), u32 attempts, u32 flags; after END
			      * only; the last one counts (read, no longer written) */
	REC_MARK = 17,       /* after END only: u32 n, n x u32 recipient index (done),
			      * u8 has_sched, [u64 next attempt, u32 attempts, u32 flags],
			      * u32 CRC-32 of the record's octets before it; the last
			      * schedule counts */
	REC_CONTENT_OFF = 18, /* u64: file offset of the first content octet (the
			       * header fields added at the end of data come first);
			       * absent in files of earlier versions, where it is
			       * RECORD_CONTENT_OFF_DEFAULT */
	REC_FLAGS = 19,       /* u32 ENVELOPE_FLAG_*; absent when 0 */
	REC_INBOX = 20,       /* string: the sandbox inbox (ENVELOPE_FLAG_SANDBOX), the
			       * SMTP AUTH login; absent for "default" */
};

/* Where the content starts when REC_CONTENT_OFF is absent: right after the
 * message file's header (SPOOL_HDR_LEN, spool.h). */
#define RECORD_CONTENT_OFF_DEFAULT 16

/* The retry schedule a MARK record may carry. */
struct record_sched {
	uint64_t next_try_us;
	uint32_t attempts;
	uint32_t flags;
};

/* Serialize e (its recipients' done flags are not written: use DONE). */
int record_encode(const struct envelope *e, struct buf *out);
/* One DONE record for recipient index idx. */
int record_encode_done(uint32_t idx, struct buf *out);
/* One SCHED record: the retry schedule survives restarts (issue 4). */
int record_encode_sched(uint64_t next_try_us, uint32_t attempts, uint32_t flags, struct buf *out);
/* One MARK record: recipients idx[0..n) are done and, when sched is not
 * NULL, the new schedule. What spool_mark() appends. */
int record_encode_mark(const uint32_t *idx, size_t n, const struct record_sched *sched,
		       struct buf *out);
/* Parse a whole file image. Fills e (which must be envelope_init()ed) and
 * sets rcpts[i].done for each DONE. Returns 0, or -1 with *error_r. */
int record_decode(const unsigned char *p, size_t len, struct envelope *e, const char **error_r);
/* The same, and *used_r is len minus a torn trailing record, if any:
 * the length to truncate the file to before appending more DONE records, so
 * that a torn append never ends up in the middle of the file. */
int record_decode_used(const unsigned char *p, size_t len, struct envelope *e, size_t *used_r,
		       const char **error_r);

uint32_t record_crc32(uint32_t crc, const unsigned char *p, size_t len);

#endif
