/* ipc.h — typed frames between hikyaku's processes (master, smtpd, queue).
 *
 * One frame per datagram of a socketpair(AF_UNIX, SOCK_SEQPACKET), in the
 * control frames' layout (ctl/ctl.h):
 *
 *   u32 length (big-endian: octets after this field, >= 1)
 *   u8  type
 *   fields, each: u8 tag, u32 length (big-endian), value
 *
 * A channel's schema names the types it accepts and the kind of every tag
 * (u64: exactly 8 octets; str: no NUL; bytes). At most one descriptor
 * travels with a frame (SCM_RIGHTS). The peer is another hikyaku process,
 * but one that parses network input (smtpd) may have been taken over:
 * every frame is checked against the schema before its handler sees it,
 * and a frame that fails the check ends the channel. The decoder is pure
 * (ipc_frame_check), for the fuzzers. */
#ifndef HK_LIB_IPC_H
#define HK_LIB_IPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/buf.h"

#define IPC_FRAME_MAX 65536 /* a frame, header included */

enum ipc_kind { IPC_K_NONE = 0, IPC_K_U64, IPC_K_STR, IPC_K_BYTES };

struct ipc_schema {
	const char *name;         /* for logs: "smtpd->queue" */
	unsigned char types[256]; /* 1: accepted */
	unsigned char tags[256];  /* enum ipc_kind */
};

struct ipc_frame {
	uint8_t type;
	const uint8_t *body;
	size_t body_len;
};

struct ipc_field {
	uint8_t tag;
	const uint8_t *p;
	size_t len;
};

/* Encoding: as ctl_frame_begin/add/end. */
size_t ipc_frame_begin(struct buf *out, uint8_t type);
int ipc_frame_add(struct buf *out, uint8_t tag, const void *p, size_t len);
int ipc_frame_add_str(struct buf *out, uint8_t tag, const char *s);
int ipc_frame_add_u64(struct buf *out, uint8_t tag, uint64_t v);
int ipc_frame_end(struct buf *out, size_t start);

/* Check one whole datagram against a schema: 0 with *f set, or -1 with
 * *error_r. */
int ipc_frame_check(const struct ipc_schema *sc, const void *p, size_t len, struct ipc_frame *f,
		    const char **error_r);
int ipc_field_next(const struct ipc_frame *f, size_t *off, struct ipc_field *fld);
uint64_t ipc_field_u64(const struct ipc_field *fld);
/* Copy a str field into out (NUL-terminated); false when it does not fit. */
bool ipc_field_str(const struct ipc_field *fld, char *out, size_t outlen);

/* ---- a channel on the event loop ---- */

struct event_base;
struct ipc_chan;

/* A frame arrived; fd is the descriptor that came with it or -1, and the
 * handler owns it. */
typedef void (*ipc_frame_cb)(struct ipc_chan *ch, const struct ipc_frame *f, int fd, void *arg);
/* The peer is gone or broke the protocol (why says which); the channel is
 * still allocated: the callback frees it (ipc_chan_free) or not. */
typedef void (*ipc_close_cb)(struct ipc_chan *ch, const char *why, void *arg);

/* Take over fd (made non-blocking). */
struct ipc_chan *ipc_chan_new(struct event_base *base, int fd, const struct ipc_schema *sc,
			      ipc_frame_cb on_frame, ipc_close_cb on_close, void *arg);
/* Send one frame (and fd, -1 for none; the caller keeps its fd). Frames
 * that do not fit the socket now are kept in order (bounded by the
 * caller's own bounds on what it has outstanding) and sent when they do.
 * -1 when the channel is closed. */
int ipc_send(struct ipc_chan *ch, const struct buf *frame, int fd);
bool ipc_chan_open(const struct ipc_chan *ch);
void ipc_chan_free(struct ipc_chan **ch);

/* Blocking, for start-up outside any loop: one frame (and fd) out. */
int ipc_send_blocking(int sock, const struct buf *frame, int fd);

#endif
