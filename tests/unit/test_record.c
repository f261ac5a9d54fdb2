/* test_record.c — unit tests for the envelope (mail/envelope.c), its record
 * file format (queue/record.c) and the durable spool (queue/spool.c).
 * The spool tests run in a mkdtemp() directory that is removed afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/buf.h"
#include "mail/envelope.h"
#include "queue/record.h"
#include "queue/spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ================================================================ qids */

static int test_strcmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_qid_valid(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		bool valid;
	} cases[] = {
	    {"0123456789ABCDEF", true},
	    {"zzzzzzzzzzzzzzzz", true},
	    {"0123456789ABCDE", false},
	    {"0123456789ABCDEFG", false},
	    {"0123456789ABCDE-", false},
	    {"0123456789ABCD.F", false},
	    {"", false},
	    {"../../etc/passwd", false},
	    {NULL, false},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(qid_valid(cases[i].s), cases[i].valid);
}

#define QID_THREADS 8
#define QID_PER_THREAD 5000

struct qid_job {
	char (*ids)[QID_LEN + 1];
	bool ordered;
};

static void *test_qid_thread(void *arg)
{
	struct qid_job *j = arg;
	j->ordered = true;
	for (size_t i = 0; i < QID_PER_THREAD; i++) {
		qid_generate(j->ids[i]);
		/* The time prefix never goes backwards within one thread. */
		if (i > 0 && memcmp(j->ids[i - 1], j->ids[i], 8) > 0)
			j->ordered = false;
	}
	return NULL;
}

static void test_qid_generate_unique(void **state)
{
	(void)state;
	static char ids[QID_THREADS * QID_PER_THREAD][QID_LEN + 1];
	char **sorted = xcalloc(QID_THREADS * QID_PER_THREAD, sizeof(char *));
	pthread_t th[QID_THREADS];
	struct qid_job jobs[QID_THREADS];

	for (size_t t = 0; t < QID_THREADS; t++) {
		jobs[t].ids = &ids[t * QID_PER_THREAD];
		assert_int_equal(pthread_create(&th[t], NULL, test_qid_thread, &jobs[t]), 0);
	}
	for (size_t t = 0; t < QID_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_true(jobs[t].ordered);
	}
	for (size_t i = 0; i < QID_THREADS * QID_PER_THREAD; i++) {
		assert_true(qid_valid(ids[i]));
		sorted[i] = ids[i];
	}
	qsort(sorted, QID_THREADS * QID_PER_THREAD, sizeof(char *), test_strcmp);
	for (size_t i = 1; i < QID_THREADS * QID_PER_THREAD; i++)
		assert_string_not_equal(sorted[i - 1], sorted[i]);
	free(sorted);
}

static void test_qid_generate_time_order(void **state)
{
	(void)state;
	char a[QID_LEN + 1], b[QID_LEN + 1];
	qid_generate(a);
	usleep(2000); /* 2 ms: many 16 us ticks */
	qid_generate(b);
	assert_true(strcmp(a, b) < 0);
	assert_true(memcmp(a, b, 8) < 0);
}

/* ============================================================ envelope */

static void test_envelope_basics(void **state)
{
	(void)state;
	struct envelope e;
	envelope_init(&e);
	for (size_t i = 0; i < 100; i++) {
		char addr[32];
		snprintf(addr, sizeof(addr), "u%zu@example.org", i);
		struct envelope_rcpt *r = envelope_add_rcpt(&e, addr);
		assert_string_equal(r->addr, addr);
		assert_null(r->orcpt);
		assert_false(r->done);
	}
	assert_int_equal(e.nrcpts, 100);
	assert_true(e.cap >= 100);
	assert_string_equal(e.rcpts[42].addr, "u42@example.org");
	assert_int_equal(envelope_pending(&e), 100);
	e.rcpts[3].done = true;
	e.rcpts[99].done = true;
	assert_int_equal(envelope_pending(&e), 98);

	envelope_set_str(&e.sender, "a@b");
	envelope_set_str(&e.sender, e.sender); /* aliasing the old value */
	assert_string_equal(e.sender, "a@b");
	envelope_set_str(&e.sender, NULL);
	assert_null(e.sender);
	envelope_set_str(&e.envid, "x");
	envelope_clear(&e);
	assert_int_equal(e.nrcpts, 0);
	assert_null(e.rcpts);
	assert_null(e.envid);
	envelope_clear(&e); /* clearing twice is harmless */
}

/* ============================================================== CRC-32 */

static void test_crc32(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		uint32_t crc;
	} cases[] = {
	    {"", 0x00000000u},
	    {"123456789", 0xCBF43926u}, /* the standard check value */
	    {"The quick brown fox jumps over the lazy dog", 0x414FA339u},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const unsigned char *p = (const unsigned char *)cases[i].in;
		size_t n = strlen(cases[i].in);
		assert_int_equal(record_crc32(0, p, n), cases[i].crc);
		/* Chained in two pieces gives the same value. */
		assert_int_equal(record_crc32(record_crc32(0, p, n / 2), p + n / 2, n - n / 2),
		                 cases[i].crc);
	}
}

/* ================================================== record round trips */

static void env_base(struct envelope *e)
{
	envelope_init(e);
	memcpy(e->qid, "0Abcdefghij12345", QID_LEN + 1);
	e->arrival_us = 1700000000123456ULL;
	envelope_set_str(&e->sender, "alice@example.org");
	envelope_set_str(&e->client_addr, "192.0.2.1");
	e->size = 1234;
	envelope_add_rcpt(e, "bob@example.net");
}

static void env_null_sender(struct envelope *e)
{
	env_base(e);
	envelope_set_str(&e->sender, "");
	envelope_set_str(&e->client_addr, NULL);
}

static void env_dsn(struct envelope *e)
{
	env_base(e);
	envelope_set_str(&e->envid, "QQ314159");
	e->ret = 2;
	e->body = 2;
	envelope_set_str(&e->client_helo, "mail.example.org");
	struct envelope_rcpt *r = envelope_add_rcpt(e, "carol@example.com");
	r->notify = 0x6;
	envelope_set_str(&r->orcpt, "rfc822;carol@example.com");
	r = envelope_add_rcpt(e, "dave@example.com");
	envelope_set_str(&r->orcpt, "rfc822;dave+2B@example.com");
	r = envelope_add_rcpt(e, "erin@example.com");
	r->notify = 0x1;
}

static void env_many(struct envelope *e)
{
	env_base(e);
	e->size = UINT64_MAX;
	e->arrival_us = 0;
	for (size_t i = 0; i < 1000; i++) {
		char a[64];
		snprintf(a, sizeof(a), "user%zu@example.com", i);
		struct envelope_rcpt *r = envelope_add_rcpt(e, a);
		r->notify = (unsigned)(i % 16);
		if (i % 3 == 0)
			envelope_set_str(&r->orcpt, a);
	}
}

static void env_utf8(struct envelope *e)
{
	env_base(e);
	e->smtputf8 = true;
	envelope_set_str(&e->sender, "j\xc3\xb6rg@b\xc3\xbc\x63her.example");
	envelope_add_rcpt(
	    e, "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.\xe5\xb9\xbf\xe5\x91\x8a");
	envelope_set_str(&e->client_addr, "2001:db8::1");
	envelope_set_str(&e->client_helo, "");
	envelope_set_str(&e->envid, "");
}

static void assert_str_eq_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		assert_ptr_equal(a, b);
	else
		assert_string_equal(a, b);
}

static void assert_env_equal(const struct envelope *a, const struct envelope *b)
{
	assert_string_equal(a->qid, b->qid);
	assert_int_equal(a->arrival_us, b->arrival_us);
	assert_string_equal(a->sender, b->sender);
	assert_str_eq_null(a->envid, b->envid);
	assert_int_equal(a->ret, b->ret);
	assert_int_equal(a->body, b->body);
	assert_int_equal(a->smtputf8, b->smtputf8);
	assert_str_eq_null(a->client_addr, b->client_addr);
	assert_str_eq_null(a->client_helo, b->client_helo);
	assert_int_equal(a->size, b->size);
	assert_int_equal(a->nrcpts, b->nrcpts);
	for (size_t i = 0; i < a->nrcpts; i++) {
		assert_string_equal(a->rcpts[i].addr, b->rcpts[i].addr);
		assert_str_eq_null(a->rcpts[i].orcpt, b->rcpts[i].orcpt);
		assert_int_equal(a->rcpts[i].notify, b->rcpts[i].notify);
		assert_int_equal(a->rcpts[i].done, b->rcpts[i].done);
	}
}

static void test_record_roundtrip(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		void (*build)(struct envelope *e);
	} cases[] = {
	    {"base", env_base}, {"null sender", env_null_sender},
	    {"dsn", env_dsn},   {"many rcpts", env_many},
	    {"utf8", env_utf8},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct envelope in, out;
		struct buf b;
		const char *error = NULL;
		cases[i].build(&in);
		envelope_init(&out);
		buf_init(&b, 0);
		assert_int_equal(record_encode(&in, &b), 0);
		assert_memory_equal(b.data, RECORD_MAGIC, RECORD_MAGIC_LEN);
		if (record_decode(b.data, b.len, &out, &error) != 0)
			fail_msg("case %s: %s", cases[i].name, error);
		assert_env_equal(&in, &out);

		/* Appending to a non-empty buffer encodes the same bytes. */
		struct buf b2;
		buf_init(&b2, 0);
		assert_int_equal(buf_append(&b2, "xyz", 3), 0);
		assert_int_equal(record_encode(&in, &b2), 0);
		assert_int_equal(b2.len, b.len + 3);
		assert_memory_equal(b2.data + 3, b.data, b.len);

		buf_free(&b2);
		buf_free(&b);
		envelope_clear(&in);
		envelope_clear(&out);
	}
}

static void env_no_rcpt(struct envelope *e)
{
	env_base(e);
	free(e->rcpts[0].addr);
	e->nrcpts = 0;
}

static void env_bad_qid(struct envelope *e)
{
	env_base(e);
	e->qid[3] = '/';
}

static void env_notify_too_big(struct envelope *e)
{
	env_base(e);
	e->rcpts[0].notify = 256;
}

static void env_huge_string(struct envelope *e)
{
	env_base(e);
	char *s = xmalloc(RECORD_MAX_PAYLOAD + 2);
	memset(s, 'a', RECORD_MAX_PAYLOAD + 1);
	s[RECORD_MAX_PAYLOAD + 1] = '\0';
	envelope_set_str(&e->client_helo, s);
	free(s);
}

static void test_record_encode_refuses(void **state)
{
	(void)state;
	static void (*const cases[])(struct envelope *) = {
	    env_no_rcpt,
	    env_bad_qid,
	    env_notify_too_big,
	    env_huge_string,
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct envelope e;
		struct buf b;
		cases[i](&e);
		buf_init(&b, 0);
		assert_int_equal(buf_append(&b, "ab", 2), 0);
		assert_int_equal(record_encode(&e, &b), -1);
		assert_int_equal(b.len, 2); /* left as it was */
		buf_free(&b);
		envelope_clear(&e);
	}
}

/* ============================================ hand-built record files */

struct raw_rec {
	int type; /* 0 ends the list; REC_END with payload NULL gets the right CRC */
	const char *p;
	size_t len;
	bool bad_len; /* write len 0xFFFFFFFF in the header, payload as given */
};

#define R_STR(t, s)                                                                                \
	{                                                                                          \
		t, s, sizeof(s) - 1, false                                                         \
	}
#define R_RAW(t, s, n)                                                                             \
	{                                                                                          \
		t, s, n, false                                                                     \
	}
#define R_U8(t, v)                                                                                 \
	{                                                                                          \
		t, (const char[]){v}, 1, false                                                     \
	}
#define R_U64(t)                                                                                   \
	{                                                                                          \
		t, "\0\0\0\0\0\0\x04\xd2", 8, false                                                \
	}
#define R_END                                                                                      \
	{                                                                                          \
		REC_END, NULL, 0, false                                                            \
	}
#define R_DONE(i)                                                                                  \
	{                                                                                          \
		REC_DONE, (const char[]){0, 0, 0, i}, 4, false                                     \
	}
#define R_QID R_STR(REC_QID, "0Abcdefghij12345")
#define R_HEAD R_QID, R_U64(REC_ARRIVAL), R_STR(REC_SENDER, "a@b"), R_U64(REC_SIZE)
#define R_RCPT R_STR(REC_RCPT, "c@d")

static void raw_build(const struct raw_rec *r, struct buf *b)
{
	buf_init(b, 0);
	assert_int_equal(buf_append(b, RECORD_MAGIC, RECORD_MAGIC_LEN), 0);
	for (; r->type != 0; r++) {
		unsigned char hdr[5] = {(unsigned char)r->type};
		const unsigned char *p = (const unsigned char *)r->p;
		size_t len = r->len;
		unsigned char crc[4];
		if (r->type == REC_END && p == NULL) {
			uint32_t c = record_crc32(0, b->data, b->len);
			crc[0] = (unsigned char)(c >> 24);
			crc[1] = (unsigned char)(c >> 16);
			crc[2] = (unsigned char)(c >> 8);
			crc[3] = (unsigned char)c;
			p = crc;
			len = 4;
		}
		uint32_t l = r->bad_len ? 0xFFFFFFFFu : (uint32_t)len;
		hdr[1] = (unsigned char)(l >> 24);
		hdr[2] = (unsigned char)(l >> 16);
		hdr[3] = (unsigned char)(l >> 8);
		hdr[4] = (unsigned char)l;
		assert_int_equal(buf_append(b, hdr, 5), 0);
		assert_int_equal(buf_append(b, p, len), 0);
	}
}

struct raw_case {
	const char *name;
	struct raw_rec recs[16];
	size_t cut;    /* drop this many octets from the end */
	int flip;      /* XOR 0x20 into the octet at this offset, when > 0 */
	int rc;        /* expected record_decode() result */
	unsigned done; /* expected bitmask of done recipients when rc == 0 */
	size_t torn;   /* expected octets beyond the used length */
};

static const struct raw_case raw_cases[] = {
    {"minimal", {R_HEAD, R_RCPT, R_END}, 0, 0, 0, 0, 0},
    {"any order",
     {R_RCPT, R_U64(REC_SIZE), R_STR(REC_SENDER, ""), R_U64(REC_ARRIVAL), R_QID, R_END},
     0,
     0,
     0,
     0,
     0},
    {"done applied", {R_HEAD, R_RCPT, R_RCPT, R_RCPT, R_END, R_DONE(2), R_DONE(0)}, 0, 0, 0, 5, 0},
    {"done twice", {R_HEAD, R_RCPT, R_END, R_DONE(0), R_DONE(0)}, 0, 0, 0, 1, 0},
    {"torn done 1", {R_HEAD, R_RCPT, R_RCPT, R_END, R_DONE(0), R_DONE(1)}, 1, 0, 0, 1, 8},
    {"torn done 4", {R_HEAD, R_RCPT, R_RCPT, R_END, R_DONE(0), R_DONE(1)}, 4, 0, 0, 1, 5},
    {"torn done 5", {R_HEAD, R_RCPT, R_RCPT, R_END, R_DONE(0), R_DONE(1)}, 5, 0, 0, 1, 4},
    {"torn done 8", {R_HEAD, R_RCPT, R_RCPT, R_END, R_DONE(0), R_DONE(1)}, 8, 0, 0, 1, 1},
    {"full rcpt",
     {R_HEAD, R_RCPT, R_U8(REC_RCPT_NOTIFY, 6), R_STR(REC_RCPT_ORCPT, "rfc822;x"), R_END},
     0,
     0,
     0,
     0,
     0},
    {"bad magic", {R_HEAD, R_RCPT, R_END}, 0, 1, -1, 0, 0},
    {"flipped byte", {R_HEAD, R_RCPT, R_END}, 0, 20, -1, 0, 0}, /* in the qid: still valid */
    {"flipped crc", {R_HEAD, R_RCPT, R_END}, 0, 78, -1, 0, 0},
    {"truncated before end", {R_HEAD, R_RCPT, R_END}, 3, 0, -1, 0, 0},
    {"no end", {R_HEAD, R_RCPT}, 0, 0, -1, 0, 0},
    {"bad length", {R_HEAD, {REC_RCPT, "c@d", 3, true}, R_END}, 0, 0, -1, 0, 0},
    {"nul in string", {R_HEAD, R_RAW(REC_RCPT, "c\0d", 3), R_END}, 0, 0, -1, 0, 0},
    {"nul in sender",
     {R_QID, R_U64(REC_ARRIVAL), R_RAW(REC_SENDER, "\0", 1), R_U64(REC_SIZE), R_RCPT, R_END},
     0,
     0,
     -1,
     0,
     0},
    {"unknown type", {R_HEAD, R_RCPT, R_STR(99, "x"), R_END}, 0, 0, -1, 0, 0},
    {"type zero", {R_HEAD, R_RCPT, R_STR(0x100, "x"), R_END}, 0, 0, -1, 0, 0},
    {"notify before rcpt", {R_HEAD, R_U8(REC_RCPT_NOTIFY, 2), R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"orcpt before rcpt", {R_HEAD, R_STR(REC_RCPT_ORCPT, "x"), R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"duplicate notify",
     {R_HEAD, R_RCPT, R_U8(REC_RCPT_NOTIFY, 2), R_U8(REC_RCPT_NOTIFY, 2), R_END},
     0,
     0,
     -1,
     0,
     0},
    {"done out of range", {R_HEAD, R_RCPT, R_END, R_DONE(1)}, 0, 0, -1, 0, 0},
    {"done before end", {R_HEAD, R_RCPT, R_DONE(0), R_END}, 0, 0, -1, 0, 0},
    {"done bad length", {R_HEAD, R_RCPT, R_END, R_RAW(REC_DONE, "\0\0\0\0\0", 5)}, 0, 0, -1, 0, 0},
    {"torn done bad length",
     {R_HEAD, R_RCPT, R_END, R_RAW(REC_DONE, "\0\0\0\0\0", 5)},
     3,
     0,
     -1,
     0,
     0},
    {"rcpt after end", {R_HEAD, R_RCPT, R_END, R_RCPT}, 0, 0, -1, 0, 0},
    {"torn non-done after end", {R_HEAD, R_RCPT, R_END, R_RCPT}, 5, 0, -1, 0, 0},
    {"duplicate sender", {R_HEAD, R_STR(REC_SENDER, "x@y"), R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"duplicate qid", {R_HEAD, R_QID, R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"duplicate end", {R_HEAD, R_RCPT, R_END, R_END}, 0, 0, -1, 0, 0},
    {"missing size",
     {R_QID, R_U64(REC_ARRIVAL), R_STR(REC_SENDER, ""), R_RCPT, R_END},
     0,
     0,
     -1,
     0,
     0},
    {"missing qid",
     {R_U64(REC_ARRIVAL), R_STR(REC_SENDER, ""), R_U64(REC_SIZE), R_RCPT, R_END},
     0,
     0,
     -1,
     0,
     0},
    {"no rcpt", {R_HEAD, R_END}, 0, 0, -1, 0, 0},
    {"bad qid chars",
     {R_STR(REC_QID, "0Abcdefghij1234/"), R_U64(REC_ARRIVAL), R_STR(REC_SENDER, ""),
      R_U64(REC_SIZE), R_RCPT, R_END},
     0,
     0,
     -1,
     0,
     0},
    {"short qid",
     {R_STR(REC_QID, "0Abc"), R_U64(REC_ARRIVAL), R_STR(REC_SENDER, ""), R_U64(REC_SIZE), R_RCPT,
      R_END},
     0,
     0,
     -1,
     0,
     0},
    {"short integer",
     {R_QID, R_RAW(REC_ARRIVAL, "\0\0\0\1", 4), R_STR(REC_SENDER, ""), R_U64(REC_SIZE), R_RCPT,
      R_END},
     0,
     0,
     -1,
     0,
     0},
    {"long u8", {R_HEAD, R_RAW(REC_RET, "\0\1", 2), R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"smtputf8 2", {R_HEAD, R_U8(REC_SMTPUTF8, 2), R_RCPT, R_END}, 0, 0, -1, 0, 0},
    {"end short crc", {R_HEAD, R_RCPT, R_RAW(REC_END, "\0\0\0", 3)}, 0, 0, -1, 0, 0},
    {"end wrong crc", {R_HEAD, R_RCPT, R_RAW(REC_END, "\0\0\0\0", 4)}, 0, 0, -1, 0, 0},
};

static void test_record_decode_raw(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
		const struct raw_case *c = &raw_cases[i];
		struct buf b;
		struct envelope e;
		const char *error = NULL;
		size_t used = 0;

		raw_build(c->recs, &b);
		assert_true(c->cut <= b.len);
		b.len -= c->cut;
		if (c->flip > 0) {
			assert_true((size_t)c->flip < b.len);
			b.data[c->flip] ^= 0x20;
		}
		envelope_init(&e);
		int rc = record_decode_used(b.data, b.len, &e, &used, &error);
		if (rc != c->rc)
			fail_msg("case %s: rc %d, expected %d (%s)", c->name, rc, c->rc,
			         error != NULL ? error : "no error");
		if (rc == 0) {
			unsigned done = 0;
			for (size_t k = 0; k < e.nrcpts; k++)
				done |= e.rcpts[k].done ? 1u << k : 0;
			assert_int_equal(done, c->done);
			assert_int_equal(b.len - used, c->torn);
		} else {
			assert_non_null(error);
			assert_int_equal(e.nrcpts, 0); /* left cleared */
			assert_null(e.sender);
		}
		envelope_clear(&e);
		buf_free(&b);
	}
}

/* Every proper prefix of a valid file is refused; every single-bit flip
 * too (CRC-32 detects all of them). */
static void test_record_decode_prefix_and_flips(void **state)
{
	(void)state;
	struct envelope in, out;
	struct buf b;
	const char *error;
	env_dsn(&in);
	buf_init(&b, 0);
	assert_int_equal(record_encode(&in, &b), 0);
	envelope_init(&out);
	for (size_t n = 0; n < b.len; n++) {
		assert_int_equal(record_decode(b.data, n, &out, &error), -1);
		assert_int_equal(out.nrcpts, 0);
	}
	for (size_t i = 0; i < b.len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			b.data[i] ^= (unsigned char)(1u << bit);
			assert_int_equal(record_decode(b.data, b.len, &out, &error), -1);
			b.data[i] ^= (unsigned char)(1u << bit);
		}
	}
	assert_int_equal(record_decode(b.data, b.len, &out, &error), 0);

	/* DONE appended by record_encode_done() is applied. */
	assert_int_equal(record_encode_done(3, &b), 0);
	assert_int_equal(record_encode_done(1, &b), 0);
	envelope_clear(&out);
	assert_int_equal(record_decode(b.data, b.len, &out, &error), 0);
	assert_int_equal(envelope_pending(&out), 2);
	assert_true(out.rcpts[3].done && out.rcpts[1].done);
	envelope_clear(&out);
	envelope_clear(&in);
	buf_free(&b);
}

/* ================================================================ spool */

struct spool_fixture {
	char root[64];
	char dir[128];
	struct spool *spool;
};

static int test_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int spool_setup(void **state)
{
	struct spool_fixture *f = xcalloc(1, sizeof(*f));
	const char *error = NULL;
	snprintf(f->root, sizeof(f->root), "/tmp/hk_test_spool_XXXXXX");
	if (mkdtemp(f->root) == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "%s/spool", f->root);
	if (spool_open(f->dir, &f->spool, &error) < 0)
		return -1;
	*state = f;
	return 0;
}

static int spool_teardown(void **state)
{
	struct spool_fixture *f = *state;
	spool_close(&f->spool);
	assert_null(f->spool);
	nftw(f->root, test_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Number of entries (dotfiles excluded) in <spool>/<sub>, -1 if missing. */
static int count_files(struct spool_fixture *f, const char *sub)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s", f->dir, sub);
	DIR *d = opendir(path);
	if (d == NULL)
		return -1;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] != '.')
			n++;
	}
	closedir(d);
	return n;
}

static bool file_exists(struct spool_fixture *f, const char *sub, const char *qid, const char *ext)
{
	char path[256];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s/%s%s", f->dir, sub, qid, ext);
	return stat(path, &st) == 0;
}

static void write_file(struct spool_fixture *f, const char *sub, const char *name, const void *p,
                       size_t n, int flags)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/%s/%s", f->dir, sub, name);
	int fd = open(path, O_WRONLY | O_CREAT | flags, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, p, n), (ssize_t)n);
	close(fd);
}

/* Commit one message with content "<qid> body\r\n" split into an append
 * and a tail; qid_r receives its id. */
static int commit_one(struct spool *s, char qid_r[QID_LEN + 1], size_t nrcpts)
{
	struct envelope e;
	const char *error = NULL;
	env_base(&e);
	for (size_t i = 1; i < nrcpts; i++)
		envelope_add_rcpt(&e, "more@example.net");
	qid_generate(e.qid);
	memcpy(qid_r, e.qid, QID_LEN + 1);
	e.size = 0;
	struct spool_msg *m = spool_msg_create(s, e.qid);
	int rc = spool_msg_append(m, e.qid, QID_LEN);
	if (rc == 0)
		rc = spool_commit(&m, &e, " body\r\n", 7, &error);
	else
		spool_msg_abort(&m);
	if (rc == 0 && e.size != QID_LEN + 7)
		rc = -1;
	envelope_clear(&e);
	return rc;
}

struct recover_log {
	char qids[512][QID_LEN + 1];
	size_t n;
};

static void recover_cb(const char *qid, void *arg)
{
	struct recover_log *l = arg;
	if (l->n < 512)
		memcpy(l->qids[l->n], qid, QID_LEN + 1);
	l->n++;
}

static int recover(struct spool_fixture *f, struct recover_log *l)
{
	const char *error = NULL;
	memset(l, 0, sizeof(*l));
	return spool_recover(f->spool, recover_cb, l, &error);
}

static void test_spool_commit_recover(void **state)
{
	struct spool_fixture *f = *state;
	struct recover_log *l = xcalloc(1, sizeof(*l));
	char qids[3][QID_LEN + 1];
	const char *error = NULL;

	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(commit_one(f->spool, qids[i], 2), 0);
		usleep(100); /* distinct time prefixes: recovery order is arrival */
	}
	assert_int_equal(count_files(f, "incoming"), 0);
	assert_int_equal(count_files(f, "queue"), 3); /* one file per message */
	assert_int_equal(recover(f, l), 3);
	assert_int_equal(l->n, 3);
	for (size_t i = 0; i < 3; i++)
		assert_string_equal(l->qids[i], qids[i]);

	struct envelope e;
	envelope_init(&e);
	assert_int_equal(spool_env_load(f->spool, qids[1], &e, &error), 0);
	assert_string_equal(e.qid, qids[1]);
	assert_int_equal(e.size, QID_LEN + 7);
	assert_int_equal(e.nrcpts, 2);
	envelope_clear(&e);

	/* The content ends where the envelope starts. */
	char body[64];
	uint64_t len = 0;
	int fd = spool_msg_open(f->spool, qids[1], &len);
	assert_true(fd >= 0);
	assert_int_equal(len, QID_LEN + 7);
	assert_int_equal(read(fd, body, (size_t)len), QID_LEN + 7);
	assert_memory_equal(body, qids[1], QID_LEN);
	assert_memory_equal(body + QID_LEN, " body\r\n", 7);
	close(fd);

	/* Envelope and content with one open. */
	struct buf content;
	buf_init(&content, 0);
	assert_int_equal(spool_load(f->spool, qids[2], &e, &content, &error), 0);
	assert_string_equal(e.qid, qids[2]);
	assert_int_equal(content.len, QID_LEN + 7);
	assert_memory_equal(content.data, qids[2], QID_LEN);
	assert_int_equal(content.data[content.len], '\0');
	envelope_clear(&e);
	/* A content buffer too small for the message: refused, not cut. */
	struct buf small;
	buf_init(&small, 8);
	assert_int_equal(spool_load(f->spool, qids[2], &e, &small, &error), -1);
	buf_free(&small);
	buf_free(&content);

	assert_int_equal(spool_msg_open(f->spool, "../../etc/passwd", &len), -1);
	assert_int_equal(spool_env_load(f->spool, "nosuchqid0000000", &e, &error), -1);

	char name[QID_LEN + 1];
	assert_true(spool_name_qid(qids[0], name));
	assert_false(spool_name_qid("0123456789ABCDE!", name));
	assert_false(spool_name_qid("README", name));
	free(l);
}

static void test_spool_abort(void **state)
{
	struct spool_fixture *f = *state;
	char qid[QID_LEN + 1];
	qid_generate(qid);

	struct spool_msg *m = spool_msg_create(f->spool, qid);
	assert_int_equal(spool_msg_append(m, "hello\r\n", 7), 0);
	assert_int_equal(count_files(f, "incoming"), 1);
	spool_msg_abort(&m);
	assert_null(m);
	spool_msg_abort(&m); /* NULL is fine */
	assert_int_equal(count_files(f, "incoming"), 0);

	m = spool_msg_create(f->spool, qid); /* never written: nothing to remove */
	spool_msg_abort(&m);
	assert_int_equal(count_files(f, "incoming"), 0);
	assert_int_equal(count_files(f, "queue"), 0);

	m = spool_msg_create(f->spool, "bad/qid");
	assert_int_equal(spool_msg_append(m, "x", 1), -1);
	spool_msg_abort(&m);
}

static void test_spool_commit_failures(void **state)
{
	struct spool_fixture *f = *state;
	struct envelope e;
	const char *error = NULL;
	char other[QID_LEN + 1], qid[QID_LEN + 1];

	/* Envelope and message disagree on the queue id. */
	env_base(&e);
	qid_generate(e.qid);
	qid_generate(other);
	struct spool_msg *m = spool_msg_create(f->spool, other);
	assert_int_equal(spool_msg_append(m, "x", 1), 0);
	assert_int_equal(spool_commit(&m, &e, NULL, 0, &error), -1);
	assert_null(m);
	assert_non_null(error);

	/* The envelope cannot be encoded (no recipients). */
	m = spool_msg_create(f->spool, e.qid);
	free(e.rcpts[0].addr);
	e.nrcpts = 0;
	assert_int_equal(spool_commit(&m, &e, "x", 1, &error), -1);
	assert_int_equal(count_files(f, "incoming"), 0);
	assert_int_equal(count_files(f, "queue"), 0);
	envelope_clear(&e);

	/* A second commit under a committed id fails and does not clobber the
	 * first (RENAME_NOREPLACE). */
	assert_int_equal(commit_one(f->spool, qid, 1), 0);
	env_base(&e);
	memcpy(e.qid, qid, QID_LEN + 1);
	m = spool_msg_create(f->spool, qid);
	assert_int_equal(spool_commit(&m, &e, "other content", 13, &error), -1);
	envelope_clear(&e);
	assert_int_equal(count_files(f, "incoming"), 0);
	assert_int_equal(count_files(f, "queue"), 1);
	envelope_init(&e);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(e.size, QID_LEN + 7);
	envelope_clear(&e);
}

/* ------------------------------------------- recovery scenarios (table) */

struct damage_ctx {
	struct spool_fixture *f;
	char qid[QID_LEN + 1];
	struct spool_msg *pending; /* a message "in flight" when we crashed */
};

static void qpath(struct damage_ctx *d, const char *ext, char path[256])
{
	snprintf(path, 256, "%s/queue/%s%s", d->f->dir, d->qid, ext);
}

static void damage_none(struct damage_ctx *d)
{
	(void)d;
}

/* Flip one octet at off (negative: from the end of the file). */
static void flip_at(struct damage_ctx *d, const char *ext, off_t off)
{
	char path[256];
	struct stat st;
	qpath(d, ext, path);
	int fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	if (off < 0)
		off += st.st_size;
	unsigned char c;
	assert_int_equal(pread(fd, &c, 1, off), 1);
	c ^= 0x01;
	assert_int_equal(pwrite(fd, &c, 1, off), 1);
	close(fd);
}

static void damage_flip_env(struct damage_ctx *d)
{
	flip_at(d, "", -10); /* inside the envelope, before its CRC */
}

static void damage_flip_magic(struct damage_ctx *d)
{
	flip_at(d, "", 2);
}

static void damage_flip_offset(struct damage_ctx *d)
{
	flip_at(d, "", 15); /* the envelope offset points elsewhere */
}

static void damage_truncate(struct damage_ctx *d)
{
	char path[256];
	qpath(d, "", path);
	assert_int_equal(truncate(path, 10), 0);
}

static void damage_cut_envelope(struct damage_ctx *d)
{
	char path[256];
	struct stat st;
	qpath(d, "", path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(truncate(path, st.st_size - 5), 0);
}

static void damage_incoming(struct damage_ctx *d)
{
	/* An unfinished message and a stray file in incoming/. */
	char qid[QID_LEN + 1];
	qid_generate(qid);
	d->pending = spool_msg_create(d->f->spool, qid);
	assert_int_equal(spool_msg_append(d->pending, "partial", 7), 0);
	write_file(d->f, "incoming", "stray.tmp", "x", 1, 0);
	write_file(d->f, "incoming", ".hidden", "x", 1, 0);
	assert_int_equal(count_files(d->f, "incoming"), 2);
}

static void damage_strays(struct damage_ctx *d)
{
	write_file(d->f, "queue", ".dotfile", "x", 1, 0);
	write_file(d->f, "queue", "README", "x", 1, 0);
	write_file(d->f, "queue", "0123456789ABCDE!", "x", 1, 0);
	write_file(d->f, "queue", "0123456789ABCDE!.env", "x", 1, 0);
	write_file(d->f, "queue", "0123456789ABCDEF.tmp", "x", 1, 0);
}

static void damage_wrong_qid(struct damage_ctx *d)
{
	/* A valid message of another id under this name. */
	char other[QID_LEN + 1], src[256], dst[256];
	assert_int_equal(commit_one(d->f->spool, other, 1), 0);
	snprintf(src, sizeof(src), "%s/queue/%s", d->f->dir, other);
	qpath(d, "", dst);
	assert_int_equal(rename(src, dst), 0);
}

/* Replace the message by the two files an earlier version wrote: <qid>.env
 * (record image, one DONE of two recipients) and <qid>.msg. */
static void write_old_pair(struct damage_ctx *d, bool env, bool msg, size_t size_delta)
{
	char path[256], name[32];
	struct envelope e;
	struct buf b;
	qpath(d, "", path);
	assert_int_equal(unlink(path), 0);
	env_base(&e);
	memcpy(e.qid, d->qid, QID_LEN + 1);
	envelope_add_rcpt(&e, "second@example.net");
	e.size = 9 + size_delta;
	buf_init(&b, 0);
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(record_encode_done(1, &b), 0);
	if (env) {
		snprintf(name, sizeof(name), "%s.env", d->qid);
		write_file(d->f, "queue", name, b.data, b.len, 0);
	}
	if (msg) {
		snprintf(name, sizeof(name), "%s.msg", d->qid);
		write_file(d->f, "queue", name, "old body\n", 9, 0);
	}
	buf_free(&b);
	envelope_clear(&e);
}

static void damage_old_pair(struct damage_ctx *d)
{
	write_old_pair(d, true, true, 0);
}

static void damage_old_msg_only(struct damage_ctx *d)
{
	write_old_pair(d, false, true, 0);
}

static void damage_old_env_only(struct damage_ctx *d)
{
	write_old_pair(d, true, false, 0);
}

static void damage_old_size(struct damage_ctx *d)
{
	write_old_pair(d, true, true, 1);
}

static void damage_old_env_flip(struct damage_ctx *d)
{
	write_old_pair(d, true, true, 0);
	flip_at(d, ".env", 30);
}

/* A refused file next to a good old pair (a conversion whose new file was
 * damaged): the file goes to corrupt/, the pair is converted again. */
static void damage_bad_file_good_pair(struct damage_ctx *d)
{
	write_old_pair(d, true, true, 0);
	write_file(d->f, "queue", d->qid, "garbage that is not a message file", 34, 0);
}

/* A FIFO where a message file should be: refused, never opened blocking. */
static void damage_fifo(struct damage_ctx *d)
{
	char path[256];
	qpath(d, "", path);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkfifo(path, 0600), 0);
}

/* A conversion that crashed after its rename: new file and old pair. */
static void damage_old_leftovers(struct damage_ctx *d)
{
	char name[32];
	snprintf(name, sizeof(name), "%s.env", d->qid);
	write_file(d->f, "queue", name, "x", 1, 0);
	snprintf(name, sizeof(name), "%s.msg", d->qid);
	write_file(d->f, "queue", name, "x", 1, 0);
}

static void test_spool_recover_scenarios(void **state)
{
	(void)state;
	static const struct {
		const char *name;
		void (*damage)(struct damage_ctx *d);
		int found;   /* spool_recover() result */
		int queue;   /* files left in queue/ (dotfiles not counted) */
		int corrupt; /* files in corrupt/, -1: directory absent */
	} cases[] = {
	    {"intact", damage_none, 1, 1, -1},
	    {"envelope corrupt", damage_flip_env, 0, 0, 1},
	    {"magic corrupt", damage_flip_magic, 0, 0, 1},
	    {"offset corrupt", damage_flip_offset, 0, 0, 1},
	    {"truncated to the header", damage_truncate, 0, 0, 1},
	    {"envelope cut", damage_cut_envelope, 0, 0, 1},
	    {"incoming leftovers", damage_incoming, 1, 1, -1},
	    {"stray names", damage_strays, 1, 5, -1},
	    {"qid mismatch", damage_wrong_qid, 0, 0, 1},
	    {"old pair converted", damage_old_pair, 1, 1, -1},
	    {"old msg alone", damage_old_msg_only, 0, 0, -1},
	    {"old env alone (interrupted quarantine)", damage_old_env_only, 0, 0, 1},
	    {"old pair size mismatch", damage_old_size, 0, 0, 2},
	    {"old env corrupt", damage_old_env_flip, 0, 0, 2},
	    {"conversion leftovers", damage_old_leftovers, 1, 1, -1},
	    {"refused file, good old pair", damage_bad_file_good_pair, 1, 1, 1},
	    {"fifo", damage_fifo, 0, 0, 1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct damage_ctx d = {.f = NULL};
		struct recover_log *l = xcalloc(1, sizeof(*l));
		assert_int_equal(spool_setup((void **)&d.f), 0);
		assert_int_equal(commit_one(d.f->spool, d.qid, 1), 0);
		cases[i].damage(&d);
		int found = recover(d.f, l);
		if (found != cases[i].found || count_files(d.f, "queue") != cases[i].queue ||
		    count_files(d.f, "corrupt") != cases[i].corrupt)
			fail_msg("case %s: found %d queue %d corrupt %d", cases[i].name, found,
			         count_files(d.f, "queue"), count_files(d.f, "corrupt"));
		assert_int_equal(count_files(d.f, "incoming"), 0);
		if (found == 1)
			assert_string_equal(l->qids[0], d.qid);
		if (cases[i].corrupt == 1)
			assert_true(file_exists(d.f, "corrupt", d.qid, "") ||
			            file_exists(d.f, "corrupt", d.qid, ".env"));
		if (cases[i].corrupt == 2) {
			assert_true(file_exists(d.f, "corrupt", d.qid, ".msg"));
			assert_true(file_exists(d.f, "corrupt", d.qid, ".env"));
		}
		if (cases[i].damage == damage_old_pair ||
		    cases[i].damage == damage_bad_file_good_pair) {
			/* Converted with its content and its DONE record. */
			struct envelope e;
			struct buf content;
			const char *error = NULL;
			envelope_init(&e);
			buf_init(&content, 0);
			assert_int_equal(spool_load(d.f->spool, d.qid, &e, &content, &error), 0);
			assert_int_equal(e.nrcpts, 2);
			assert_false(e.rcpts[0].done);
			assert_true(e.rcpts[1].done);
			assert_string_equal((const char *)content.data, "old body\n");
			envelope_clear(&e);
			buf_free(&content);
		}
		/* Recovery is idempotent. */
		assert_int_equal(recover(d.f, l), cases[i].found);
		spool_msg_abort(&d.pending); /* its file is already gone */
		free(l);
		spool_teardown((void **)&d.f);
	}
}

/* An old pair that start-up did not convert is converted when it is first
 * loaded. */
static void test_spool_convert_on_load(void **state)
{
	struct spool_fixture *f = *state;
	struct damage_ctx d = {.f = f};
	struct envelope e;
	struct buf content;
	const char *error = NULL;

	assert_int_equal(commit_one(f->spool, d.qid, 1), 0);
	write_old_pair(&d, true, true, 0);
	assert_false(file_exists(f, "queue", d.qid, ""));
	envelope_init(&e);
	buf_init(&content, 0);
	assert_int_equal(spool_load(f->spool, d.qid, &e, &content, &error), 0);
	assert_int_equal(e.nrcpts, 2);
	assert_true(e.rcpts[1].done);
	assert_string_equal((const char *)content.data, "old body\n");
	assert_true(file_exists(f, "queue", d.qid, ""));
	assert_false(file_exists(f, "queue", d.qid, ".env"));
	assert_false(file_exists(f, "queue", d.qid, ".msg"));
	envelope_clear(&e);
	buf_free(&content);
	/* Nothing at all: a plain failure. */
	char other[QID_LEN + 1];
	qid_generate(other);
	assert_int_equal(spool_env_load(f->spool, other, &e, &error), -1);
}

static void test_spool_mark_done_remove(void **state)
{
	struct spool_fixture *f = *state;
	struct recover_log *l = xcalloc(1, sizeof(*l));
	struct envelope e;
	const char *error = NULL;
	char qid[QID_LEN + 1];

	assert_int_equal(commit_one(f->spool, qid, 4), 0);
	const uint32_t first[] = {0, 2};
	assert_int_equal(spool_mark_done(f->spool, qid, first, 2, &error), 0);
	envelope_init(&e);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 2);
	assert_true(e.rcpts[0].done && e.rcpts[2].done);
	assert_false(e.rcpts[1].done || e.rcpts[3].done);
	envelope_clear(&e);

	/* Out of range: refused, file unchanged. */
	const uint32_t bad[] = {1, 4};
	assert_int_equal(spool_mark_done(f->spool, qid, bad, 2, &error), -1);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 2);
	envelope_clear(&e);

	/* A torn DONE left by a crash is ignored, and cut before the next
	 * append so that the file stays decodable. */
	write_file(f, "queue", qid, "\x0f\0\0\0\x04\0", 6, O_APPEND);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 2);
	envelope_clear(&e);
	const uint32_t second[] = {3};
	assert_int_equal(spool_mark_done(f->spool, qid, second, 1, &error), 0);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 1);
	assert_true(e.rcpts[3].done);
	envelope_clear(&e);

	/* Zeros where an append was (a file system that grew the file before
	 * writing the data): ignored, then cut. */
	static const unsigned char zeros[40];
	write_file(f, "queue", qid, zeros, sizeof(zeros), O_APPEND);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 1);
	envelope_clear(&e);
	const uint32_t third[] = {1};
	assert_int_equal(spool_mark_done(f->spool, qid, third, 1, &error), 0);
	assert_int_equal(spool_env_load(f->spool, qid, &e, &error), 0);
	assert_int_equal(envelope_pending(&e), 0);
	envelope_clear(&e);

	assert_int_equal(spool_mark_done(f->spool, "0000000000000000", second, 1, &error), -1);

	assert_int_equal(recover(f, l), 1);
	assert_int_equal(spool_remove(f->spool, qid), 0);
	assert_int_equal(count_files(f, "queue"), 0);
	assert_int_equal(recover(f, l), 0);
	assert_int_equal(spool_remove(f->spool, qid), 0); /* already gone: fine */
	assert_int_equal(spool_remove(f->spool, "bad"), -1);
	free(l);
}

#define COMMIT_THREADS 8
#define COMMIT_PER_THREAD 50

struct commit_job {
	struct spool *spool;
	int failures;
};

static void *commit_thread(void *arg)
{
	struct commit_job *j = arg;
	char qid[QID_LEN + 1];
	for (int i = 0; i < COMMIT_PER_THREAD; i++) {
		if (commit_one(j->spool, qid, 1) < 0)
			j->failures++;
	}
	return NULL;
}

static void test_spool_concurrent_commits(void **state)
{
	struct spool_fixture *f = *state;
	struct recover_log *l = xcalloc(1, sizeof(*l));
	pthread_t th[COMMIT_THREADS];
	struct commit_job jobs[COMMIT_THREADS];

	uint64_t before = spool_queue_fsyncs(f->spool);
	for (int t = 0; t < COMMIT_THREADS; t++) {
		jobs[t] = (struct commit_job){.spool = f->spool};
		assert_int_equal(pthread_create(&th[t], NULL, commit_thread, &jobs[t]), 0);
	}
	for (int t = 0; t < COMMIT_THREADS; t++) {
		pthread_join(th[t], NULL);
		assert_int_equal(jobs[t].failures, 0);
	}
	uint64_t syncs = spool_queue_fsyncs(f->spool) - before;
	print_message("%d commits shared %llu queue/ fsyncs\n", COMMIT_THREADS * COMMIT_PER_THREAD,
	              (unsigned long long)syncs);
	assert_true(syncs >= 1 && syncs <= COMMIT_THREADS * COMMIT_PER_THREAD);

	assert_int_equal(recover(f, l), COMMIT_THREADS * COMMIT_PER_THREAD);
	for (size_t i = 1; i < l->n; i++)
		assert_true(strcmp(l->qids[i - 1], l->qids[i]) < 0); /* sorted, unique */
	free(l);
}

static void test_spool_open_errors(void **state)
{
	(void)state;
	struct spool *s = NULL;
	const char *error = NULL;
	assert_int_equal(spool_open("/proc/nonexistent/spool", &s, &error), -1);
	assert_null(s);
	assert_non_null(error);
	spool_close(&s); /* NULL is fine */
}

/* SCHED records after END: the last complete one wins, a torn one is
 * ignored, and they mix with DONE records. */
static void test_record_sched(void **state)
{
	(void)state;
	struct envelope e, d;
	struct buf b;
	const char *error = NULL;
	envelope_init(&e);
	qid_generate(e.qid);
	e.arrival_us = 1;
	envelope_set_str(&e.sender, "a@b.example");
	envelope_add_rcpt(&e, "x@y.example");
	envelope_add_rcpt(&e, "z@y.example");
	buf_init(&b, 0);
	assert_int_equal(record_encode(&e, &b), 0);
	size_t base = b.len;
	static const struct {
		uint64_t next;
		uint32_t attempts, flags;
		bool done1;
		size_t cut; /* octets cut off the end: a torn append */
		uint64_t want_next;
		uint32_t want_attempts, want_flags;
	} cases[] = {
		{0, 0, 0, false, 0, 0, 0, 0},
		{5000000, 1, 0, false, 0, 5000000, 1, 0},
		{9000000, 2, ENVELOPE_SCHED_DELAY_WARNED, true, 0, 9000000, 2,
		 ENVELOPE_SCHED_DELAY_WARNED},
		{7000000, 3, 0, false, 1, 9000000, 2, ENVELOPE_SCHED_DELAY_WARNED},
		{7000000, 3, 0, false, 20, 9000000, 2, ENVELOPE_SCHED_DELAY_WARNED},
	};
	bool done1 = false;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t before = b.len;
		if (i > 0) {
			if (cases[i].done1)
				record_encode_done(1, &b);
			record_encode_sched(cases[i].next, cases[i].attempts, cases[i].flags, &b);
		}
		done1 = done1 || cases[i].done1;
		envelope_init(&d);
		assert_int_equal(record_decode(b.data, b.len - cases[i].cut, &d, &error), 0);
		assert_true(d.next_try_us == cases[i].want_next);
		assert_int_equal(d.attempts, cases[i].want_attempts);
		assert_int_equal(d.sched_flags, cases[i].want_flags);
		assert_int_equal(d.rcpts[1].done, done1);
		assert_false(d.rcpts[0].done);
		envelope_clear(&d);
		if (cases[i].cut > 0)
			b.len = before; /* spool_mark cuts a torn tail before appending */
	}
	/* A SCHED with a wrong length is not a torn append: refused. */
	unsigned char bad[] = {REC_SCHED, 0, 0, 0, 15};
	buf_append(&b, bad, sizeof(bad));
	envelope_init(&d);
	assert_int_equal(record_decode(b.data, b.len, &d, &error), -1);
	assert_true(b.len > base);
	envelope_clear(&d);
	buf_free(&b);
	envelope_clear(&e);
}

/* MARK records: recipients and schedule, each record with its own CRC. A
 * torn last record (any cut, any flipped octet after the type, zeros) is
 * ignored and excluded from used; a record that passes its CRC and is
 * still wrong is an error; many indexes take several records. */
static void test_record_mark(void **state)
{
	(void)state;
	struct envelope e, d;
	struct buf b;
	const char *error = NULL;
	size_t used = 0;
	envelope_init(&e);
	qid_generate(e.qid);
	e.arrival_us = 1;
	envelope_set_str(&e.sender, "a@b.example");
	for (int i = 0; i < 5000; i++)
		envelope_add_rcpt(&e, "x@y.example");
	buf_init(&b, 0);
	assert_int_equal(record_encode(&e, &b), 0);
	const uint32_t first[] = {0, 2};
	const struct record_sched s1 = {111, 1, 0}, s2 = {222, 2, 1};
	assert_int_equal(record_encode_mark(first, 2, &s1, &b), 0);
	size_t base = b.len;
	const uint32_t second[] = {1};
	assert_int_equal(record_encode_mark(second, 1, &s2, &b), 0);
	size_t full = b.len;

	envelope_init(&d);
	assert_int_equal(record_decode_used(b.data, b.len, &d, &used, &error), 0);
	assert_int_equal(used, full);
	assert_true(d.rcpts[0].done && d.rcpts[1].done && d.rcpts[2].done && !d.rcpts[3].done);
	assert_int_equal(d.next_try_us, 222);
	assert_int_equal(d.attempts, 2);
	assert_int_equal(d.sched_flags, 1);
	envelope_clear(&d);

	/* Every cut of the last record: torn, the first one stands. */
	for (size_t cut = base + 1; cut < full; cut++) {
		envelope_init(&d);
		if (record_decode_used(b.data, cut, &d, &used, &error) != 0)
			fail_msg("cut at %zu: %s", cut, error);
		assert_int_equal(used, base);
		assert_false(d.rcpts[1].done);
		assert_int_equal(d.next_try_us, 111);
		envelope_clear(&d);
	}
	/* Every flipped octet after its type: torn. */
	for (size_t at = base + 1; at < full; at++) {
		b.data[at] ^= 0x10;
		envelope_init(&d);
		if (record_decode_used(b.data, full, &d, &used, &error) != 0 || used != base)
			fail_msg("flip at %zu: %s used %zu", at, error, used);
		assert_false(d.rcpts[1].done);
		envelope_clear(&d);
		b.data[at] ^= 0x10;
	}
	/* Zeros where an append was. */
	b.len = base;
	static const unsigned char zeros[64];
	assert_int_equal(buf_append(&b, zeros, sizeof(zeros)), 0);
	envelope_init(&d);
	assert_int_equal(record_decode_used(b.data, b.len, &d, &used, &error), 0);
	assert_int_equal(used, base);
	envelope_clear(&d);

	/* A record with a good CRC and an index out of range: refused. */
	b.len = base;
	const uint32_t bad[] = {5000};
	assert_int_equal(record_encode_mark(bad, 1, NULL, &b), 0);
	envelope_init(&d);
	assert_int_equal(record_decode_used(b.data, b.len, &d, &used, &error), -1);
	assert_non_null(error);

	/* Every recipient done: several records, schedule in the last. */
	b.len = base;
	uint32_t *all = xcalloc(5000, sizeof(*all));
	for (uint32_t i = 0; i < 5000; i++)
		all[i] = i;
	assert_int_equal(record_encode_mark(all, 5000, &s2, &b), 0);
	envelope_init(&d);
	assert_int_equal(record_decode_used(b.data, b.len, &d, &used, &error), 0);
	assert_int_equal(used, b.len);
	assert_int_equal(envelope_pending(&d), 0);
	assert_int_equal(d.next_try_us, 222);
	envelope_clear(&d);
	free(all);
	buf_free(&b);
	envelope_clear(&e);
}

/* The record of where the content starts: written only when it is not the
 * default, so files without added header fields stay as they were. */
static void test_record_content_off(void **state)
{
	(void)state;
	struct envelope e, d;
	struct buf a, b;
	const char *error = NULL;

	env_base(&e);
	buf_init(&a, 0);
	buf_init(&b, 0);
	assert_int_equal(record_encode(&e, &a), 0); /* 0: not set */
	e.content_off = RECORD_CONTENT_OFF_DEFAULT;
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(a.len, b.len);
	assert_memory_equal(a.data, b.data, a.len);
	envelope_init(&d);
	assert_int_equal(record_decode(a.data, a.len, &d, &error), 0);
	assert_int_equal(d.content_off, RECORD_CONTENT_OFF_DEFAULT); /* earlier versions */
	envelope_clear(&d);

	buf_reset(&b);
	e.content_off = 16000;
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(b.len, a.len + 5 + 8);
	assert_int_equal(record_decode(b.data, b.len, &d, &error), 0);
	assert_int_equal(d.content_off, 16000);
	envelope_clear(&d);

	/* Inside the file header: refused. */
	buf_reset(&b);
	e.content_off = 3;
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(record_decode(b.data, b.len, &d, &error), -1);
	assert_string_equal(error, "content offset inside the file header");
	buf_free(&a);
	buf_free(&b);
	envelope_clear(&e);
}

/* The message flags (DMARC quarantine): written only when set, unknown
 * bits refused. */
static void test_record_flags(void **state)
{
	(void)state;
	struct envelope e, d;
	struct buf a, b;
	const char *error = NULL;

	env_base(&e);
	buf_init(&a, 0);
	buf_init(&b, 0);
	assert_int_equal(record_encode(&e, &a), 0);
	e.flags = ENVELOPE_FLAG_JUNK;
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(b.len, a.len + 5 + 4);
	envelope_init(&d);
	assert_int_equal(record_decode(b.data, b.len, &d, &error), 0);
	assert_int_equal(d.flags, ENVELOPE_FLAG_JUNK);
	envelope_clear(&d);
	assert_int_equal(record_decode(a.data, a.len, &d, &error), 0);
	assert_int_equal(d.flags, 0);
	envelope_clear(&d);
	buf_reset(&b);
	e.flags = 0x80;
	assert_int_equal(record_encode(&e, &b), 0);
	assert_int_equal(record_decode(b.data, b.len, &d, &error), -1);
	assert_string_equal(error, "unknown message flags");
	buf_free(&a);
	buf_free(&b);
	envelope_clear(&e);
}

/* A message file from the queue process (O_TMPFILE, adopt, seal, publish)
 * with header fields added at the end of data: every reader sees them
 * first, then the content, byte for byte. */
static void check_top_content(struct spool_fixture *f, const char *qid, const char *want,
			      uint64_t want_off)
{
	struct envelope e;
	struct buf content;
	const char *error = NULL;
	size_t len = strlen(want);
	char got[256];
	uint64_t n = 0;

	envelope_init(&e);
	buf_init(&content, 0);
	assert_int_equal(spool_load(f->spool, qid, &e, &content, &error), 0);
	assert_int_equal(e.size, len);
	assert_int_equal(e.content_off, want_off);
	assert_int_equal(content.len, len);
	assert_memory_equal(content.data, want, len);
	envelope_clear(&e);
	buf_free(&content);

	int fd = spool_msg_open(f->spool, qid, &n);
	assert_true(fd >= 0);
	assert_int_equal(n, len);
	assert_int_equal(read(fd, got, len), (ssize_t)len);
	assert_memory_equal(got, want, len);
	close(fd);

	int lfd = -1;
	envelope_init(&e);
	assert_int_equal(spool_load_fd(f->spool, qid, &e, &lfd, &error), 0);
	assert_int_equal(pread(lfd, got, len, (off_t)e.content_off), (ssize_t)len);
	assert_memory_equal(got, want, len);
	close(lfd);
	envelope_clear(&e);
}

static void seal_publish(struct spool_fixture *f, const char *top1, const char *top2,
			 const char *content, char qid[QID_LEN + 1], int *prepend_rc_r)
{
	struct envelope e;
	const char *error = NULL;
	env_base(&e);
	qid_generate(e.qid);
	memcpy(qid, e.qid, QID_LEN + 1);
	int fd = spool_incoming_create(f->spool);
	assert_true(fd >= 0);
	struct spool_msg *m = spool_msg_adopt(dup(fd), e.qid);
	assert_int_equal(spool_msg_append(m, content, 4), 0);
	*prepend_rc_r = spool_msg_prepend(m, top1, strlen(top1), &error);
	if (*prepend_rc_r == 0)
		*prepend_rc_r = spool_msg_prepend(m, top2, strlen(top2), &error);
	assert_int_equal(spool_msg_seal(&m, &e, content + 4, strlen(content + 4), &error), 0);
	assert_null(m);
	assert_int_equal(spool_publish(f->spool, fd, 0, e.qid, NULL, &error), 0);
	close(fd);
	envelope_clear(&e);
}

/* Write and publish one message into fd (from spool_incoming_take). */
static void reuse_publish(struct spool_fixture *f, int fd, uint64_t slot, const char *content,
			  char qid[QID_LEN + 1])
{
	struct envelope e;
	const char *error = NULL;
	env_base(&e);
	qid_generate(e.qid);
	memcpy(qid, e.qid, QID_LEN + 1);
	struct spool_msg *m = spool_msg_adopt(dup(fd), e.qid);
	assert_int_equal(spool_msg_seal(&m, &e, content, strlen(content), &error), 0);
	assert_int_equal(spool_publish(f->spool, fd, slot, e.qid, NULL, &error), 0);
	envelope_clear(&e);
}

static void test_spool_reuse(void **state)
{
	struct spool_fixture *f = *state;
	char qa[QID_LEN + 1], qb[QID_LEN + 1], qc[QID_LEN + 1], path[512];
	uint64_t slot = 99;
	struct stat st;
	for (uint64_t o = 1; o <= 4; o++)
		spool_owner_add(f->spool, o);

	/* Nothing spent yet: a new unnamed file. */
	int fa = spool_incoming_take(f->spool, 1, &slot);
	assert_true(fa >= 0);
	assert_int_equal(slot, 0);
	char along[3000];
	memset(along, 'a', sizeof(along));
	memcpy(along, "Subject: a\r\n\r\n", 14);
	memcpy(along + sizeof(along) - 3, "\r\n", 3); /* with its NUL */
	reuse_publish(f, fa, 0, along, qa);
	struct stat sa;
	assert_int_equal(fstat(fa, &sa), 0);
	assert_int_equal(spool_retire(f->spool, qa, 1, 100), 0);
	assert_int_equal(count_files(f, "queue"), 0);
	assert_int_equal(count_files(f, "reuse"), 1);

	/* Not before an fsync of queue/ has made the removal durable. */
	int fb = spool_incoming_take(f->spool, 1, &slot);
	assert_int_equal(slot, 0);
	reuse_publish(f, fb, 0, "Subject: b\r\n\r\nb\r\n", qb); /* fsyncs queue/ */
	close(fb);

	/* Never to another writer, which still holds nothing. */
	int fo = spool_incoming_take(f->spool, 2, &slot);
	assert_int_equal(slot, 0);
	close(fo);

	/* To the same writer: A's file, its header back to "not finished",
	 * the shorter new message over it and A's tail cut off. */
	int fr = spool_incoming_take(f->spool, 1, &slot);
	assert_true(fr >= 0);
	assert_true(slot != 0);
	assert_int_equal(fstat(fr, &st), 0);
	assert_true(st.st_ino == sa.st_ino);
	unsigned char hdr[SPOOL_HDR_LEN];
	uint64_t hoff;
	const char *herr = NULL;
	assert_int_equal(pread(fr, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	assert_int_equal(spool_header_parse(hdr, (uint64_t)st.st_size, &hoff, &herr), -1);
	assert_string_equal(herr, "envelope offset outside the file");
	assert_int_equal(spool_files_reused(f->spool), 1);
	reuse_publish(f, fr, slot, "Subject: c\r\n\r\nc\r\n", qc);
	assert_int_equal(fstat(fr, &st), 0);
	assert_true(st.st_size < sa.st_size - 2900);
	close(fr);
	close(fa);
	assert_int_equal(count_files(f, "reuse"), 0); /* renamed into queue/ */
	assert_int_equal(count_files(f, "queue"), 2);
	check_top_content(f, qc, "Subject: c\r\n\r\nc\r\n", SPOOL_CONTENT_GAP);

	/* Dropped unpublished: back for the same writer at once. */
	assert_int_equal(spool_retire(f->spool, qb, 1, 100), 0);
	int fx = spool_incoming_take(f->spool, 1, &slot);
	assert_int_equal(slot, 0); /* B's removal not yet synced */
	spool_incoming_drop(f->spool, fx, 0, 1);
	char qd[QID_LEN + 1];
	int fd = spool_incoming_take(f->spool, 1, &slot);
	reuse_publish(f, fd, slot, "Subject: d\r\n\r\nd\r\n", qd);
	close(fd);
	int fy = spool_incoming_take(f->spool, 1, &slot);
	uint64_t yslot = slot;
	assert_true(yslot != 0);
	spool_incoming_drop(f->spool, fy, yslot, 1);
	int fz = spool_incoming_take(f->spool, 1, &slot);
	assert_int_equal(slot, yslot);

	/* A file with a second name (never made by us; a bug or a hand) is
	 * never emptied: it is unlinked from incoming/, the other name kept. */
	snprintf(path, sizeof(path), "%s/reuse/p%016llx", f->dir, (unsigned long long)slot);
	char other[512];
	snprintf(other, sizeof(other), "%s/keep", f->root);
	assert_int_equal(write(fz, "XYZ", 3), 3);
	assert_int_equal(link(path, other), 0);
	spool_incoming_drop(f->spool, fz, slot, 1);
	int fw = spool_incoming_take(f->spool, 1, &slot);
	assert_int_equal(slot, 0);
	close(fw);
	char xyz[3];
	int ofd = open(other, O_RDONLY | O_CLOEXEC);
	assert_true(ofd >= 0);
	assert_int_equal(pread(ofd, xyz, 3, SPOOL_HDR_LEN), 3);
	assert_memory_equal(xyz, "XYZ", 3); /* never written over */
	close(ofd);
	assert_int_equal(stat(path, &st), -1);
	unlink(other);

	/* Too big to keep, a message of no known writer, and a writer that
	 * is gone: unlinked. */
	assert_int_equal(spool_retire(f->spool, qc, 1, 10 * 1024 * 1024), 0);
	assert_int_equal(spool_retire(f->spool, qa, 1, 100), 0); /* gone: ENOENT is fine */
	assert_int_equal(count_files(f, "reuse"), 0);
	assert_int_equal(spool_retire(f->spool, qd, 0, 100), 0);
	assert_int_equal(count_files(f, "reuse"), 0);
	assert_int_equal(count_files(f, "queue"), 0);
	int fv = spool_incoming_take(f->spool, 3, &slot);
	reuse_publish(f, fv, slot, "Subject: v\r\n\r\nv\r\n", qa);
	close(fv);
	assert_int_equal(spool_retire(f->spool, qa, 3, 100), 0);
	assert_int_equal(count_files(f, "reuse"), 1);
	spool_owner_gone(f->spool, 3);
	assert_int_equal(count_files(f, "reuse"), 0);
	assert_int_equal(count_files(f, "incoming"), 0);
	/* ... and a message of a writer that is gone is unlinked when done. */
	fv = spool_incoming_take(f->spool, 2, &slot);
	reuse_publish(f, fv, slot, "Subject: w\r\n\r\nw\r\n", qa);
	close(fv);
	spool_owner_gone(f->spool, 2);
	assert_int_equal(spool_retire(f->spool, qa, 2, 100), 0);
	assert_int_equal(count_files(f, "reuse"), 0);
	assert_int_equal(count_files(f, "queue"), 0);

	/* The queue takes no writer's word: a file that goes on after its
	 * envelope (an old tail left uncut) is refused. */
	{
		struct envelope e;
		const char *error = NULL;
		env_base(&e);
		qid_generate(e.qid);
		int fd = spool_incoming_take(f->spool, 4, &slot);
		struct spool_msg *m = spool_msg_adopt(dup(fd), e.qid);
		assert_int_equal(spool_msg_seal(&m, &e, "x\r\n", 3, &error), 0);
		off_t end = lseek(fd, 0, SEEK_END);
		/* zeros read as a torn append: the decoder alone would skip them */
		assert_int_equal(pwrite(fd, "\0\0\0\0\0\0\0\0", 8, end), 8);
		assert_int_equal(spool_publish(f->spool, fd, slot, e.qid, NULL, &error), -1);
		assert_string_equal(error, "envelope does not end the message file");
		assert_int_equal(pwrite(fd, "tail", 4, end), 4);
		assert_int_equal(spool_publish(f->spool, fd, slot, e.qid, NULL, &error), -1);
		close(fd);
		envelope_clear(&e);
	}

	/* A restart's recovery empties reuse/ (nothing in it is mail). */
	fv = spool_incoming_take(f->spool, 4, &slot);
	reuse_publish(f, fv, slot, "Subject: v\r\n\r\nv\r\n", qa);
	close(fv);
	assert_int_equal(spool_retire(f->spool, qa, 4, 100), 0);
	assert_int_equal(count_files(f, "reuse"), 1);
	struct recover_log *l = xcalloc(1, sizeof(*l));
	assert_int_equal(recover(f, l), 0);
	assert_int_equal(l->n, 0);
	assert_int_equal(count_files(f, "reuse"), 0);

	/* ... but a name whose file is also a queue/ message (a crash between
	 * the halves of a rename) is left alone, and the message recovered. */
	fv = spool_incoming_take(f->spool, 4, &slot);
	reuse_publish(f, fv, slot, "Subject: k\r\n\r\nk\r\n", qa);
	close(fv);
	char qpath[512], rpath[512];
	snprintf(qpath, sizeof(qpath), "%s/queue/%s", f->dir, qa);
	snprintf(rpath, sizeof(rpath), "%s/reuse/pcrash", f->dir);
	assert_int_equal(link(qpath, rpath), 0);
	assert_int_equal(recover(f, l), 1);
	assert_int_equal(count_files(f, "reuse"), 1);
	check_top_content(f, qa, "Subject: k\r\n\r\nk\r\n", SPOOL_CONTENT_GAP);
	free(l);
}

static void test_spool_top_block(void **state)
{
	struct spool_fixture *f = *state;
	char qid[QID_LEN + 1];
	const char *error = NULL;
	int rc;

	seal_publish(f, "X-A: 1\r\n", "X-B: 2\r\n", "Subject: s\r\n\r\nbody\r\n", qid, &rc);
	assert_int_equal(rc, 0);
	check_top_content(f, qid, "X-B: 2\r\nX-A: 1\r\nSubject: s\r\n\r\nbody\r\n",
			  SPOOL_CONTENT_GAP - 16);

	/* Nothing added: the content starts at the gap's end. */
	seal_publish(f, "", "", "Subject: s\r\n\r\nbody\r\n", qid, &rc);
	assert_int_equal(rc, 0);
	check_top_content(f, qid, "Subject: s\r\n\r\nbody\r\n", SPOOL_CONTENT_GAP);

	/* A block that fills the gap exactly fits; one octet more is refused
	 * and writes nothing. */
	size_t max = SPOOL_CONTENT_GAP - SPOOL_HDR_LEN;
	char *big = xmalloc(max + 2);
	memset(big, 'x', max + 1);
	big[max + 1] = '\0';
	struct spool_msg *m = spool_msg_adopt(spool_incoming_create(f->spool), "0Abcdefghij12345");
	assert_int_equal(spool_msg_prepend(m, big, max + 1, &error), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(spool_msg_prepend(m, big, max, &error), 0);
	assert_int_equal(spool_msg_prepend(m, "y", 1, &error), -1);
	spool_msg_abort(&m);
	free(big);

	/* Publishing checks the seal with the envelope: an unsealed file, or
	 * one whose envelope names another message, never enters queue/. */
	int ufd = spool_incoming_create(f->spool);
	assert_true(ufd >= 0);
	assert_int_equal(spool_publish(f->spool, ufd, 0, "0Abcdefghij12345", NULL, &error), -1);
	struct envelope oe;
	env_base(&oe);
	m = spool_msg_adopt(dup(ufd), "0Abcdefghij12345");
	assert_int_equal(spool_msg_seal(&m, &oe, "x\r\n", 3, &error), 0);
	assert_int_equal(spool_publish(f->spool, ufd, 0, "1Abcdefghij12345", NULL, &error), -1);
	assert_string_equal(error, "queue id in envelope does not match file name");
	assert_int_equal(spool_publish(f->spool, ufd, 0, "0Abcdefghij12345", NULL, &error), 0);
	close(ufd);
	envelope_clear(&oe);

	/* The in-process commit has no gap: its files are as before. */
	m = spool_msg_create(f->spool, "0Abcdefghij12345");
	assert_int_equal(spool_msg_prepend(m, "X: y\r\n", 6, &error), -1);
	spool_msg_abort(&m);
	char cq[QID_LEN + 1];
	assert_int_equal(commit_one(f->spool, cq, 1), 0);
	char want[64];
	snprintf(want, sizeof(want), "%s body\r\n", cq);
	check_top_content(f, cq, want, SPOOL_HDR_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_record_sched),
	    cmocka_unit_test(test_record_mark),
	    cmocka_unit_test(test_qid_valid),
	    cmocka_unit_test(test_qid_generate_unique),
	    cmocka_unit_test(test_qid_generate_time_order),
	    cmocka_unit_test(test_envelope_basics),
	    cmocka_unit_test(test_crc32),
	    cmocka_unit_test(test_record_roundtrip),
	    cmocka_unit_test(test_record_encode_refuses),
	    cmocka_unit_test(test_record_decode_raw),
	    cmocka_unit_test(test_record_decode_prefix_and_flips),
	    cmocka_unit_test_setup_teardown(test_spool_commit_recover, spool_setup, spool_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_abort, spool_setup, spool_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_commit_failures, spool_setup,
	                                    spool_teardown),
	    cmocka_unit_test(test_spool_recover_scenarios),
	    cmocka_unit_test_setup_teardown(test_spool_convert_on_load, spool_setup,
	                                    spool_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_mark_done_remove, spool_setup,
	                                    spool_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_concurrent_commits, spool_setup,
	                                    spool_teardown),
	    cmocka_unit_test(test_spool_open_errors),
	    cmocka_unit_test(test_record_content_off),
	    cmocka_unit_test(test_record_flags),
	    cmocka_unit_test_setup_teardown(test_spool_top_block, spool_setup, spool_teardown),
	    cmocka_unit_test_setup_teardown(test_spool_reuse, spool_setup, spool_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
