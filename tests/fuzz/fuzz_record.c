/* fuzz_record.c — libFuzzer target for the envelope record decoder
 * (queue/record.c). Input: an arbitrary file image, as a crash, a disk error
 * or a local attacker with write access to the spool could leave it.
 * Checks that record_decode() never reads out of bounds or leaks, that what
 * it accepts is well-formed, and that encoding an accepted envelope and
 * decoding it again gives the same envelope (the encoder writes nothing the
 * decoder refuses). Seeds in corpus/record/ are record_encode() outputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/envelope.h"
#include "queue/record.h"

static int fuzz_str_eq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void fuzz_check_equal(const struct envelope *a, const struct envelope *b)
{
	if (strcmp(a->qid, b->qid) != 0 || a->arrival_us != b->arrival_us ||
	    !fuzz_str_eq(a->sender, b->sender) || !fuzz_str_eq(a->envid, b->envid) ||
	    a->ret != b->ret || a->body != b->body || a->smtputf8 != b->smtputf8 ||
	    !fuzz_str_eq(a->client_addr, b->client_addr) ||
	    !fuzz_str_eq(a->client_helo, b->client_helo) || a->size != b->size ||
	    a->content_off != b->content_off || a->flags != b->flags ||
	    a->nrcpts != b->nrcpts)
		abort();
	for (size_t i = 0; i < a->nrcpts; i++) {
		if (!fuzz_str_eq(a->rcpts[i].addr, b->rcpts[i].addr) ||
		    !fuzz_str_eq(a->rcpts[i].orcpt, b->rcpts[i].orcpt) ||
		    a->rcpts[i].notify != b->rcpts[i].notify || b->rcpts[i].done)
			abort();
	}
}

/* A torn trailing record (short, failing its CRC, zeros) is ignored and
 * left out of used. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope e, e2;
	const char *error = NULL;
	size_t used = 0;

	envelope_init(&e);
	if (record_decode_used(data, size, &e, &used, &error) < 0) {
		if (error == NULL || e.nrcpts != 0 || e.sender != NULL)
			abort(); /* an error is explained and leaves e empty */
		return 0;
	}
	if (!qid_valid(e.qid) || e.sender == NULL || e.nrcpts == 0 ||
	    e.nrcpts > ENVELOPE_MAX_RCPTS || used > size)
		abort();
	/* What is left after used is a torn append: the prefix alone decodes
	 * to the same envelope, and all of it is used. */
	if (used < size) {
		size_t used2 = 0;
		envelope_init(&e2);
		if (record_decode_used(data, used, &e2, &used2, &error) < 0 || used2 != used ||
		    e2.nrcpts != e.nrcpts || e2.next_try_us != e.next_try_us ||
		    e2.sched_flags != e.sched_flags)
			abort();
		for (size_t i = 0; i < e.nrcpts; i++) {
			if (e2.rcpts[i].done != e.rcpts[i].done)
				abort();
		}
		envelope_clear(&e2);
	}

	struct buf b;
	buf_init(&b, 0);
	if (record_encode(&e, &b) < 0 || b.len > used)
		abort();
	envelope_init(&e2);
	if (record_decode(b.data, b.len, &e2, &error) < 0)
		abort();
	fuzz_check_equal(&e, &e2);
	envelope_clear(&e2);
	buf_free(&b);
	envelope_clear(&e);
	return 0;
}
