/* maildrop.h — local submission's shared vocabulary: where the submission
 * socket and the maildrop directory are under the spool, and the format of
 * a maildrop file (what `sendmail` writes when the daemon is down and the
 * queue process picks up). Pure, no I/O.
 *
 * A drop file is written by any local user and read by the queue process:
 * its content is hostile. The layout is typed and length-prefixed, never a
 * line format:
 *   "HKDROP1\n"
 *   records: u8 type, u32 big-endian length, value
 *     'S' sender (once, first), 'R' recipient (1..MAILDROP_RCPTS_MAX),
 *     'M' the message (once, CRLF line ends, not dot-stuffed),
 *     'E' end (once, last, empty): a file cut short is refused.
 * The sender's identity is not in the file: it is the file's owner (st_uid),
 * which the kernel sets and an unprivileged user cannot change. */
#ifndef HK_MAIL_MAILDROP_H
#define HK_MAIL_MAILDROP_H

#include <stddef.h>
#include <stdint.h>

#define MAILDROP_PUBLIC_DIR "public"    /* <spool>/public, 0755 */
#define MAILDROP_SOCKET "public/submit" /* <spool>/public/submit, 0666 */
#define MAILDROP_DIR "maildrop"         /* <spool>/maildrop, 1733 */
#define MAILDROP_MAGIC "HKDROP1\n"
#define MAILDROP_MAGIC_LEN 8
#define MAILDROP_RCPTS_MAX 1000
#define MAILDROP_ADDR_MAX 256
/* Names: "t" + 32 hex while written, "d" + 32 hex when complete (picked
 * up), "x" + 32 hex when refused for good (kept for the operator). */
#define MAILDROP_NAME_LEN 33

struct maildrop_msg {
	const char *sender; /* "" for the null sender; views into the file */
	size_t sender_len;
	const char *rcpts[MAILDROP_RCPTS_MAX];
	size_t rcpt_lens[MAILDROP_RCPTS_MAX];
	size_t nrcpts;
	const char *content;
	size_t content_len;
};

struct buf;
/* Encode m into out (appended). */
void maildrop_encode(const struct maildrop_msg *m, struct buf *out);
/* Decode p[0..len): 0, or -1 with *error_r. m's views point into p. An
 * address must be 1..MAILDROP_ADDR_MAX octets (the sender 0..) of
 * printable ASCII or UTF-8 without spaces, controls or <>. */
int maildrop_decode(const void *p, size_t len, struct maildrop_msg *m, const char **error_r);

#endif
