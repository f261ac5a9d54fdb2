/* proto.c — the schemas of proto.h. */
#include "master/proto.h"

#define TAGS                                                                                      \
	.tags = {[P_F_ROLE] = IPC_K_U64,  [P_F_ID] = IPC_K_U64,    [P_F_COUNT] = IPC_K_U64,      \
		 [P_F_TOKEN] = IPC_K_U64, [P_F_QID] = IPC_K_STR,   [P_F_ERRNO] = IPC_K_U64,      \
		 [P_F_MESSAGE] = IPC_K_STR, [P_F_PID] = IPC_K_U64, [P_F_DMARC] = IPC_K_BYTES}

const struct ipc_schema proto_to_child = {
	.name = "master->child",
	.types = {[P_T_PEER] = 1},
	TAGS,
};

const struct ipc_schema proto_to_master = {
	.name = "child->master",
	.types = {[P_T_READY] = 1},
	TAGS,
};

const struct ipc_schema proto_smtpd_to_queue = {
	.name = "smtpd->queue",
	.types = {[P_T_FDS_WANT] = 1, [P_T_COMMIT] = 1, [P_T_ABORT] = 1,
		  [P_T_DMARC_RECORD] = 1},
	TAGS,
};

const struct ipc_schema proto_queue_to_smtpd = {
	.name = "queue->smtpd",
	.types = {[P_T_FD] = 1, [P_T_COMMITTED] = 1, [P_T_FAILED] = 1},
	TAGS,
};
