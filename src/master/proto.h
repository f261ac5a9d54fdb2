/* proto.h — the frames between hikyaku's processes (lib/ipc.h carries
 * them). Each direction of each channel has its schema; a frame of a type
 * the receiving side does not expect ends the channel.
 *
 *   master -> child   PEER (fd: a socket to another process; ROLE of that
 *                     process, ID of its slot). Stop, flush and retire are
 *                     signals (SIGTERM, SIGUSR1, SIGUSR2), not frames.
 *   child -> master   READY (started, sandboxed)
 *   smtpd -> queue    FDS_WANT (COUNT more message files, please),
 *                     COMMIT (ID, TOKEN of the file, QID), ABORT (TOKEN),
 *                     DMARC_RECORD (DMARC: one evaluated message for the
 *                     aggregate reports; no answer)
 *   queue -> smtpd    FD (TOKEN; fd: an unnamed file in incoming/,
 *                     its 16-octet header written), COMMITTED (ID, QID),
 *                     FAILED (ID, ERRNO, MESSAGE)
 *
 * A message file is one TOKEN for its whole life: smtpd writes the content
 * and the envelope into the fd and fdatasyncs it (spool_msg_seal); COMMIT
 * asks the queue to check the seal, link the file as queue/<qid> and
 * fsync queue/; only COMMITTED lets smtpd say 250. */
#ifndef HK_MASTER_PROTO_H
#define HK_MASTER_PROTO_H

#include "lib/ipc.h"

enum proto_role {
	ROLE_MASTER = 0,
	ROLE_QUEUE = 1,
	ROLE_SMTPD = 2,
	ROLE_AUTH = 3,
	ROLE_KEYS = 4,
	ROLE_HTTP = 5, /* its PEER to and from the queue: a stream socket in the control
			  frames (ctl/ctl.h), not these */
};

enum proto_type {
	P_T_PEER = 3,
	P_T_READY = 4,
	P_T_FDS_WANT = 10,
	P_T_COMMIT = 11,
	P_T_ABORT = 12,
	P_T_DMARC_RECORD = 13,
	P_T_FD = 20,
	P_T_COMMITTED = 21,
	P_T_FAILED = 22,
};

enum proto_tag {
	P_F_ROLE = 1,    /* u64 */
	P_F_ID = 2,      /* u64 */
	P_F_COUNT = 3,   /* u64 */
	P_F_TOKEN = 4,   /* u64 */
	P_F_QID = 5,     /* str */
	P_F_ERRNO = 6,   /* u64 */
	P_F_MESSAGE = 7, /* str */
	P_F_PID = 8,     /* u64 */
	P_F_DMARC = 9,   /* bytes: a DMARC record body (dauth/dmarcrep.h) */
};

extern const struct ipc_schema proto_to_child;
extern const struct ipc_schema proto_to_master;
extern const struct ipc_schema proto_smtpd_to_queue;
extern const struct ipc_schema proto_queue_to_smtpd;

/* Message files smtpd asks for at a time (the queue hands out at most
 * limits.connections + 4 batches per smtpd). */
#define PROTO_FDS_BATCH 16

#endif
