/* fuzz_spool.c — libFuzzer target for reading a spool message file
 * (queue/spool.c): the 16-octet header, the envelope offset, the envelope
 * records after the content, and the checks that tie them together. Input:
 * a whole file image, as a crash, a disk error or a local attacker with
 * write access to the spool could leave it in queue/.
 *
 * Each input is decided twice: by the pure parts (spool_header_parse, then
 * record_decode_used on the rest) and by spool_load() on the real file,
 * written into a private spool under $TMPDIR. They must agree, and what
 * spool_load() accepts must be consistent: content length = envelope SIZE
 * = offset - 16, queue id = file name, and it takes a MARK (spool_mark:
 * torn tail cut, record appended) after which it still loads with every
 * earlier result kept. Seeds in corpus/spool/ are files
 * written by spool_commit() (and old-format damage of them). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/buf.h"
#include "mail/envelope.h"
#include "queue/record.h"
#include "queue/spool.h"

static struct spool *fuzz_spool;
static char fuzz_dir[256];

/* The private spool goes when the fuzzer exits (each input's file is
 * already unlinked). */
static void fuzz_cleanup(void)
{
	static const char *const sub[] = {"incoming", "queue", "corrupt", ""};
	char path[512];
	spool_close(&fuzz_spool);
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s/spool/%s", fuzz_dir, sub[i]);
		(void)rmdir(path);
	}
	(void)rmdir(fuzz_dir);
}

static void fuzz_init(void)
{
	const char *tmp = getenv("TMPDIR");
	const char *error = NULL;
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/hk_fuzz_spool_XXXXXX",
	         tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(fuzz_dir) == NULL)
		abort();
	char spool_path[300];
	snprintf(spool_path, sizeof(spool_path), "%s/spool", fuzz_dir);
	if (spool_open(spool_path, &fuzz_spool, &error) < 0)
		abort();
	atexit(fuzz_cleanup);
}

/* The verdict of the pure parsers: 1 accept, 0 refuse. qid_r names the
 * file: the envelope's own id when it has a valid one. */
static int fuzz_pure(const uint8_t *data, size_t size, char qid_r[QID_LEN + 1])
{
	struct envelope e;
	const char *error = NULL;
	uint64_t off = 0;
	size_t used = 0;
	int ok = 0;

	memcpy(qid_r, "Fuzz000000000000", QID_LEN + 1);
	if (size < SPOOL_HDR_LEN || spool_header_parse(data, size, &off, &error) < 0)
		return 0;
	if (off < SPOOL_HDR_LEN || off >= size)
		abort(); /* accepted an offset outside the file */
	envelope_init(&e);
	if (record_decode_used(data + off, size - off, &e, &used, &error) == 0) {
		memcpy(qid_r, e.qid, QID_LEN + 1);
		ok = e.content_off <= off && e.size == off - e.content_off;
	}
	envelope_clear(&e);
	return ok;
}

/* An accepted file takes a MARK (whatever torn tail it had is cut first)
 * and still loads, with its earlier results, the new one and the new
 * schedule. */
static void fuzz_mark_again(const char *qid, const struct envelope *before)
{
	struct envelope after;
	const char *error = NULL;
	uint32_t last = (uint32_t)(before->nrcpts - 1);
	if (spool_mark(fuzz_spool, qid, &last, 1, 4242, before->attempts + 1, 0, &error) < 0)
		abort();
	envelope_init(&after);
	if (spool_env_load(fuzz_spool, qid, &after, &error) < 0 || after.nrcpts != before->nrcpts ||
	    !after.rcpts[last].done || after.next_try_us != 4242 ||
	    after.attempts != before->attempts + 1)
		abort();
	for (size_t i = 0; i < before->nrcpts; i++) {
		if (before->rcpts[i].done && !after.rcpts[i].done)
			abort();
	}
	envelope_clear(&after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char qid[QID_LEN + 1], path[512];
	struct envelope e;
	struct buf content;
	const char *error = NULL;

	if (fuzz_spool == NULL)
		fuzz_init();
	int want = fuzz_pure(data, size, qid);

	snprintf(path, sizeof(path), "%s/spool/queue/%s", fuzz_dir, qid);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
		abort();
	envelope_init(&e);
	buf_init(&content, 0);
	int got = spool_load(fuzz_spool, qid, &e, &content, &error) == 0;
	if (got != want)
		abort(); /* the file reader and the pure parsers disagree */
	if (got) {
		if (strcmp(e.qid, qid) != 0 || content.len != e.size ||
		    e.content_off < SPOOL_HDR_LEN || content.len + e.content_off > size ||
		    memcmp(content.data, data + e.content_off, content.len) != 0)
			abort();
		fuzz_mark_again(qid, &e);
	} else if (error == NULL || e.nrcpts != 0) {
		abort(); /* a refusal is explained and leaves e empty */
	}
	envelope_clear(&e);
	buf_free(&content);
	unlink(path);
	return 0;
}
