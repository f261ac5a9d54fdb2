/* spool.h — the on-disk queue and its durability contract (DESIGN.md).
 *
 *   <spool>/incoming/<qid>   being written; never delivered
 *   <spool>/queue/<qid>      committed: acknowledged with 250
 *
 * One file per message (one create, one fdatasync, one unlink):
 *   header   "HKMSG\0\1\n" (8 octets), u64 big-endian offset of the envelope
 *   content  the message octets, from the offset the envelope records
 *            (REC_CONTENT_OFF; 16 when absent, as in files of earlier
 *            versions). Files written by smtpd leave a gap before the
 *            content (SPOOL_CONTENT_GAP): the header fields that are known
 *            only at the end of data (Authentication-Results, Received-SPF,
 *            DKIM-Signature, ...) are written into its end at the seal and
 *            the content then starts with them; the unwritten rest of the
 *            gap is a hole and costs no disk.
 *   envelope the record image of record.h (magic ... END), then the DONE and
 *            SCHED records appended as the queue works on the message
 * The content is streamed while the message arrives behind a header whose
 * offset is 0; the envelope and the offset are written at commit (one
 * fdatasync makes both durable, and the file is still in incoming/ until
 * then). Commit: write the envelope, set the offset, fdatasync,
 * rename into queue/ (the commit point), fsync queue/ — only then may the
 * caller send 250. Directory fsyncs are group-committed: concurrent commits
 * share one fsync of queue/.
 *
 * Spools of earlier versions kept <qid>.msg and <qid>.env side by side;
 * spool_recover() converts such pairs into single files (crash-safe: the
 * pair is removed only after the new file is durable).
 *
 * Threads: spool_msg_create/append/abort are cheap and may run on the event
 * loop (open + write to page cache, as nginx does for request bodies);
 * spool_commit, spool_recover, spool_env_load, spool_mark_done and
 * spool_remove block on the disk and must run on a worker thread. All
 * functions are thread-safe for distinct messages. */
#ifndef HK_QUEUE_SPOOL_H
#define HK_QUEUE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"
#include "mail/envelope.h"

struct spool;
struct spool_msg;

int spool_open(const char *dir, struct spool **spool_r, const char **error_r);
void spool_close(struct spool **spool);
const char *spool_dir(const struct spool *spool);
/* Octets available to unprivileged writers on the spool's file system
 * (statvfs f_bavail): 0 or -1 (errno). One system call: callers cache it. */
int spool_free_space(struct spool *spool, uint64_t *avail_r);
/* How many fsyncs of queue/ have run (group commit shows as fewer fsyncs
 * than commits); for tests and metrics. */
uint64_t spool_queue_fsyncs(struct spool *spool);

/* Start a message in incoming/ (the file is created lazily on first append
 * or at commit). */
struct spool_msg *spool_msg_create(struct spool *spool, const char *qid);
/* Append content octets (write(2) to the incoming file). -1 on I/O error. */
int spool_msg_append(struct spool_msg *m, const void *p, size_t len);
/* Discard: unlink the incoming file, free. Accepts NULL. */
void spool_msg_abort(struct spool_msg **m);

/* Append tail[0..tail_len) to the message, write the envelope, fsync, rename
 * into queue/, group-fsync queue/. Frees *m in every case. Returns 0 when the
 * message is durable; -1 (with *error_r) when it is not, and then nothing of
 * it is left in queue/. e->size is set to the content's size. */
int spool_commit(struct spool_msg **m, struct envelope *e, const void *tail, size_t tail_len,
		 const char **error_r);

/* Message files written by another process (master/proto.h): the queue
 * creates an unnamed file in incoming/ (O_TMPFILE) with its header (loop
 * thread: page cache only), keeps its fd and hands a copy on; the writer
 * appends the content and seals it (spool_msg_adopt, spool_msg_append,
 * spool_msg_seal: content, envelope, header offset, and a tail left by a
 * reused file cut; page cache only, no fdatasync); spool_publish (worker
 * thread) checks the seal, fdatasyncs the file, links it as queue/<qid>
 * (never over an existing file) and group-fsyncs queue/. A file never
 * published vanishes with its last descriptor, also in a crash. */
int spool_incoming_create(struct spool *spool);
/* The same, but a spent file of this writer (owner, nonzero; see
 * spool_retire) is handed out again, to be written over, when one is ready: *slot_r
 * names it (0: a new unnamed file). spool_publish then renames
 * reuse/p<slot> instead of linking. */
int spool_incoming_take(struct spool *spool, uint64_t owner, uint64_t *slot_r);
/* e_out (may be NULL) gets the envelope the check decoded, as
 * spool_load_fd would give it: the queue need not read it again. */
int spool_publish(struct spool *spool, int fd, uint64_t slot, const char *qid,
		  struct envelope *e_out, const char **error_r);
/* A handed-out file that will not be published (the writer aborted or is
 * gone; owner 0 for gone): closed, and a named one kept for its writer or
 * unlinked. */
void spool_incoming_drop(struct spool *spool, int fd, uint64_t slot, uint64_t owner);
/* Writers (owner ids, never reused): a spent file goes back only to a
 * writer that is alive; when it goes, the files kept for it are unlinked,
 * and so are its messages' files when they are delivered later. */
void spool_owner_add(struct spool *spool, uint64_t owner);
void spool_owner_gone(struct spool *spool, uint64_t owner);
/* Files handed out again so far. */
uint64_t spool_files_reused(struct spool *spool);
struct spool_msg *spool_msg_adopt(int fd, const char *qid);
/* Put p[0..len) before everything written so far (the header fields added
 * at the end of data), into the gap the file leaves for them: one pwrite,
 * none for len 0. A block that does not fit is refused (errno EMSGSIZE)
 * and nothing is written. Loop or worker thread, like append. */
#define SPOOL_CONTENT_GAP 4096
int spool_msg_prepend(struct spool_msg *m, const void *p, size_t len, const char **error_r);
int spool_msg_seal(struct spool_msg **m, struct envelope *e, const void *tail, size_t tail_len,
		   const char **error_r);

/* Start-up: remove everything in incoming/, convert old two-file messages,
 * move messages whose envelope is refused to corrupt/ (logged), and call cb
 * for every committed message in arrival order. Returns the number found, or
 * -1. */
int spool_recover(struct spool *spool, void (*cb)(const char *qid, void *arg), void *arg,
		  const char **error_r);

/* Load and decode the envelope of queue/<qid>. */
int spool_env_load(struct spool *spool, const char *qid, struct envelope *e, const char **error_r);
/* The envelope and the content (into *content, NUL-terminated after len;
 * content->max bounds it) with one open. */
int spool_load(struct spool *spool, const char *qid, struct envelope *e, struct buf *content,
	       const char **error_r);
/* The envelope, and the message file left open for reading the content
 * in windows (pread from e->content_off, e->size octets; the envelope
 * follows): what a delivery attempt keeps instead of the content. *fd_r
 * is the caller's to close. On failure errno is ENOENT for a file that is
 * gone. Blocks on the disk: worker threads. */
int spool_load_fd(struct spool *spool, const char *qid, struct envelope *e, int *fd_r,
                  const char **error_r);
/* Open queue/<qid> positioned at its first content octet; *len_r is the
 * content length (read no further: the envelope follows). Returns an fd or
 * -1. The envelope is decoded to find the content. */
int spool_msg_open(struct spool *spool, const char *qid, uint64_t *len_r);
/* Pure: check a message file's first SPOOL_HDR_LEN octets (hdr) against
 * the file's size; *off_r is where the envelope starts. For the fuzzer. */
#define SPOOL_HDR_LEN 16
int spool_header_parse(const unsigned char *hdr, uint64_t file_size, uint64_t *off_r,
		       const char **error_r);
/* Is this directory entry of queue/ a committed message? Fills qid. */
bool spool_name_qid(const char *name, char qid[QID_LEN + 1]);
/* Append DONE records for these recipient indexes and fdatasync. */
int spool_mark_done(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
		    const char **error_r);
/* The same, plus a SCHED record (next attempt, attempts, flags) in the same
 * write: the retry schedule survives a restart. */
int spool_mark(struct spool *spool, const char *qid, const uint32_t *idx, size_t n,
	       uint64_t next_try_us, uint32_t attempts, uint32_t flags, const char **error_r);
/* Remove a fully delivered message. */
int spool_remove(struct spool *spool, const char *qid);
/* The same for a message whose file came from spool_incoming_take(owner):
 * a small file (size: the message's) goes to reuse/ for that writer
 * to reuse instead of being unlinked (spool.c, "reuse of spent message
 * files"). owner 0 = spool_remove. */
int spool_retire(struct spool *spool, const char *qid, uint64_t owner, uint64_t size);

#endif
