/* fuzz_ipc.c — libFuzzer target for the frames between hikyaku's processes
 * (lib/ipc.c, master/proto.h). Input: one datagram, hostile (an smtpd that
 * was taken over writes what it likes to the queue and the master). Every
 * schema is tried: master->child, child->master, smtpd->queue and
 * queue->smtpd. Checks that ipc_frame_check() never reads past the input,
 * that an accepted frame walks field by field to its exact end with each
 * field inside the body, that number fields are 8 octets and string fields
 * hold no NUL, and that re-encoding the fields gives the same octets; a
 * DMARC_RECORD's record body goes through the queue's decoder too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/dmarcrep.h"
#include "lib/ipc.h"
#include "master/proto.h"

static void fuzz_walk(const struct ipc_schema *sc, const uint8_t *data, size_t size,
		      const struct ipc_frame *f)
{
	struct buf b;
	struct ipc_field fld;
	size_t off = 0;
	char str[IPC_FRAME_MAX];
	buf_init(&b, 0);
	size_t start = ipc_frame_begin(&b, f->type);
	while (ipc_field_next(f, &off, &fld)) {
		if (fld.p < f->body || fld.p + fld.len > f->body + f->body_len)
			abort();
		if (sc->tags[fld.tag] == IPC_K_U64 && fld.len != 8)
			abort();
		if (sc->tags[fld.tag] == IPC_K_STR) {
			if (memchr(fld.p, '\0', fld.len) != NULL)
				abort();
			if (!ipc_field_str(&fld, str, sizeof(str)) || strlen(str) != fld.len)
				abort();
		}
		(void)ipc_field_u64(&fld);
		if (ipc_frame_add(&b, fld.tag, fld.p, fld.len) < 0)
			abort();
	}
	if (off != f->body_len)
		abort();
	if (ipc_frame_end(&b, start) < 0 || b.len != size || memcmp(b.data, data, size) != 0)
		abort();
	buf_free(&b);
}

/* The queue's DMARC_RECORD handler decodes the record body it carries
 * (dauth/dmarcrep.h) before it appends it: what it accepts re-encodes to
 * the same record. */
static void fuzz_dmarc(const struct ipc_frame *f)
{
	struct ipc_field fld;
	size_t off = 0;
	while (ipc_field_next(f, &off, &fld)) {
		struct dmarcrep_rec *r = malloc(sizeof(*r)), *back = malloc(sizeof(*back));
		const char *error = NULL;
		if (fld.tag == P_F_DMARC && dmarcrep_rec_decode(fld.p, fld.len, r, &error) == 0) {
			struct buf b;
			buf_init(&b, 0);
			if (dmarcrep_rec_encode(r, &b) < 0 ||
			    dmarcrep_rec_decode(b.data, b.len, back, &error) < 0 ||
			    memcmp(r, back, sizeof(*r)) != 0)
				abort();
			buf_free(&b);
		}
		free(r);
		free(back);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const struct ipc_schema *schemas[] = {&proto_to_child, &proto_to_master,
					      &proto_smtpd_to_queue, &proto_queue_to_smtpd};
	for (size_t i = 0; i < sizeof(schemas) / sizeof(schemas[0]); i++) {
		struct ipc_frame f;
		const char *error = NULL;
		if (ipc_frame_check(schemas[i], data, size, &f, &error) == 0) {
			if (!schemas[i]->types[f.type])
				abort();
			fuzz_walk(schemas[i], data, size, &f);
			if (schemas[i] == &proto_smtpd_to_queue && f.type == P_T_DMARC_RECORD)
				fuzz_dmarc(&f);
		} else if (error == NULL) {
			abort(); /* a refusal names its reason */
		}
	}
	return 0;
}
