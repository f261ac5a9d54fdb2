/* record.c — encoder and strict decoder of the envelope record file
 * (format in record.h).
 *
 * Runs in smtpd (encoding at commit) and queue (decoding at recovery and
 * before each delivery). Hostile input: the decoder treats every file as
 * possibly torn by a crash or tampered with, so every length is checked
 * against the bytes that remain before it is used, and anything it does not
 * fully understand is refused. Pure; no I/O. */
#include "queue/record.h"
#include "lib/alloc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define RECORD_HDR_LEN 5 /* type:u8 len:u32 */

/* CRC-32 as in IEEE 802.3 / zlib crc32(): reflected polynomial 0xEDB88320,
 * initial and final XOR 0xFFFFFFFF. crc is the previous value (0 to start),
 * so calls can be chained. Table entry n is n shifted through the polynomial
 * 8 times, bitwise (generated once; test_record checks the standard check
 * value crc32("123456789") == 0xCBF43926). */
static const uint32_t record_crc_table[256] = {
    0x00000000u, 0x77073096u, 0xee0e612cu, 0x990951bau, 0x076dc419u, 0x706af48fu, 0xe963a535u,
    0x9e6495a3u, 0x0edb8832u, 0x79dcb8a4u, 0xe0d5e91eu, 0x97d2d988u, 0x09b64c2bu, 0x7eb17cbdu,
    0xe7b82d07u, 0x90bf1d91u, 0x1db71064u, 0x6ab020f2u, 0xf3b97148u, 0x84be41deu, 0x1adad47du,
    0x6ddde4ebu, 0xf4d4b551u, 0x83d385c7u, 0x136c9856u, 0x646ba8c0u, 0xfd62f97au, 0x8a65c9ecu,
    0x14015c4fu, 0x63066cd9u, 0xfa0f3d63u, 0x8d080df5u, 0x3b6e20c8u, 0x4c69105eu, 0xd56041e4u,
    0xa2677172u, 0x3c03e4d1u, 0x4b04d447u, 0xd20d85fdu, 0xa50ab56bu, 0x35b5a8fau, 0x42b2986cu,
    0xdbbbc9d6u, 0xacbcf940u, 0x32d86ce3u, 0x45df5c75u, 0xdcd60dcfu, 0xabd13d59u, 0x26d930acu,
    0x51de003au, 0xc8d75180u, 0xbfd06116u, 0x21b4f4b5u, 0x56b3c423u, 0xcfba9599u, 0xb8bda50fu,
    0x2802b89eu, 0x5f058808u, 0xc60cd9b2u, 0xb10be924u, 0x2f6f7c87u, 0x58684c11u, 0xc1611dabu,
    0xb6662d3du, 0x76dc4190u, 0x01db7106u, 0x98d220bcu, 0xefd5102au, 0x71b18589u, 0x06b6b51fu,
    0x9fbfe4a5u, 0xe8b8d433u, 0x7807c9a2u, 0x0f00f934u, 0x9609a88eu, 0xe10e9818u, 0x7f6a0dbbu,
    0x086d3d2du, 0x91646c97u, 0xe6635c01u, 0x6b6b51f4u, 0x1c6c6162u, 0x856530d8u, 0xf262004eu,
    0x6c0695edu, 0x1b01a57bu, 0x8208f4c1u, 0xf50fc457u, 0x65b0d9c6u, 0x12b7e950u, 0x8bbeb8eau,
    0xfcb9887cu, 0x62dd1ddfu, 0x15da2d49u, 0x8cd37cf3u, 0xfbd44c65u, 0x4db26158u, 0x3ab551ceu,
    0xa3bc0074u, 0xd4bb30e2u, 0x4adfa541u, 0x3dd895d7u, 0xa4d1c46du, 0xd3d6f4fbu, 0x4369e96au,
    0x346ed9fcu, 0xad678846u, 0xda60b8d0u, 0x44042d73u, 0x33031de5u, 0xaa0a4c5fu, 0xdd0d7cc9u,
    0x5005713cu, 0x270241aau, 0xbe0b1010u, 0xc90c2086u, 0x5768b525u, 0x206f85b3u, 0xb966d409u,
    0xce61e49fu, 0x5edef90eu, 0x29d9c998u, 0xb0d09822u, 0xc7d7a8b4u, 0x59b33d17u, 0x2eb40d81u,
    0xb7bd5c3bu, 0xc0ba6cadu, 0xedb88320u, 0x9abfb3b6u, 0x03b6e20cu, 0x74b1d29au, 0xead54739u,
    0x9dd277afu, 0x04db2615u, 0x73dc1683u, 0xe3630b12u, 0x94643b84u, 0x0d6d6a3eu, 0x7a6a5aa8u,
    0xe40ecf0bu, 0x9309ff9du, 0x0a00ae27u, 0x7d079eb1u, 0xf00f9344u, 0x8708a3d2u, 0x1e01f268u,
    0x6906c2feu, 0xf762575du, 0x806567cbu, 0x196c3671u, 0x6e6b06e7u, 0xfed41b76u, 0x89d32be0u,
    0x10da7a5au, 0x67dd4accu, 0xf9b9df6fu, 0x8ebeeff9u, 0x17b7be43u, 0x60b08ed5u, 0xd6d6a3e8u,
    0xa1d1937eu, 0x38d8c2c4u, 0x4fdff252u, 0xd1bb67f1u, 0xa6bc5767u, 0x3fb506ddu, 0x48b2364bu,
    0xd80d2bdau, 0xaf0a1b4cu, 0x36034af6u, 0x41047a60u, 0xdf60efc3u, 0xa867df55u, 0x316e8eefu,
    0x4669be79u, 0xcb61b38cu, 0xbc66831au, 0x256fd2a0u, 0x5268e236u, 0xcc0c7795u, 0xbb0b4703u,
    0x220216b9u, 0x5505262fu, 0xc5ba3bbeu, 0xb2bd0b28u, 0x2bb45a92u, 0x5cb36a04u, 0xc2d7ffa7u,
    0xb5d0cf31u, 0x2cd99e8bu, 0x5bdeae1du, 0x9b64c2b0u, 0xec63f226u, 0x756aa39cu, 0x026d930au,
    0x9c0906a9u, 0xeb0e363fu, 0x72076785u, 0x05005713u, 0x95bf4a82u, 0xe2b87a14u, 0x7bb12baeu,
    0x0cb61b38u, 0x92d28e9bu, 0xe5d5be0du, 0x7cdcefb7u, 0x0bdbdf21u, 0x86d3d2d4u, 0xf1d4e242u,
    0x68ddb3f8u, 0x1fda836eu, 0x81be16cdu, 0xf6b9265bu, 0x6fb077e1u, 0x18b74777u, 0x88085ae6u,
    0xff0f6a70u, 0x66063bcau, 0x11010b5cu, 0x8f659effu, 0xf862ae69u, 0x616bffd3u, 0x166ccf45u,
    0xa00ae278u, 0xd70dd2eeu, 0x4e048354u, 0x3903b3c2u, 0xa7672661u, 0xd06016f7u, 0x4969474du,
    0x3e6e77dbu, 0xaed16a4au, 0xd9d65adcu, 0x40df0b66u, 0x37d83bf0u, 0xa9bcae53u, 0xdebb9ec5u,
    0x47b2cf7fu, 0x30b5ffe9u, 0xbdbdf21cu, 0xcabac28au, 0x53b39330u, 0x24b4a3a6u, 0xbad03605u,
    0xcdd70693u, 0x54de5729u, 0x23d967bfu, 0xb3667a2eu, 0xc4614ab8u, 0x5d681b02u, 0x2a6f2b94u,
    0xb40bbe37u, 0xc30c8ea1u, 0x5a05df1bu, 0x2d02ef8du,
};

uint32_t record_crc32(uint32_t crc, const unsigned char *p, size_t len)
{
	crc = ~crc;
	for (size_t i = 0; i < len; i++)
		crc = record_crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- encoder ---- */

static void record_put_be(unsigned char *p, uint64_t v, unsigned n)
{
	for (unsigned i = n; i > 0; i--) {
		p[i - 1] = (unsigned char)(v & 0xff);
		v >>= 8;
	}
}

static int record_put(struct buf *out, enum record_type type, const void *p, size_t len)
{
	unsigned char hdr[RECORD_HDR_LEN];
	if (len > RECORD_MAX_PAYLOAD)
		return -1;
	hdr[0] = (unsigned char)type;
	record_put_be(hdr + 1, len, 4);
	if (buf_append(out, hdr, sizeof(hdr)) < 0 || buf_append(out, p, len) < 0)
		return -1;
	return 0;
}

static int record_put_str(struct buf *out, enum record_type type, const char *s)
{
	return record_put(out, type, s, strlen(s));
}

static int record_put_uint(struct buf *out, enum record_type type, uint64_t v, unsigned n)
{
	unsigned char p[8];
	if (n < 8 && v >> (8 * n) != 0)
		return -1; /* does not fit: refuse rather than truncate */
	record_put_be(p, v, n);
	return record_put(out, type, p, n);
}

static int record_encode_rcpts(const struct envelope *e, struct buf *out)
{
	for (size_t i = 0; i < e->nrcpts; i++) {
		const struct envelope_rcpt *r = &e->rcpts[i];
		if (record_put_str(out, REC_RCPT, r->addr) < 0)
			return -1;
		if (r->notify != 0 && record_put_uint(out, REC_RCPT_NOTIFY, r->notify, 1) < 0)
			return -1;
		if (r->orcpt != NULL && record_put_str(out, REC_RCPT_ORCPT, r->orcpt) < 0)
			return -1;
	}
	return 0;
}

static int record_encode_body(const struct envelope *e, struct buf *out)
{
	const char *sender = e->sender != NULL ? e->sender : "";
	if (record_put_str(out, REC_QID, e->qid) < 0 ||
	    record_put_uint(out, REC_ARRIVAL, e->arrival_us, 8) < 0 ||
	    record_put_str(out, REC_SENDER, sender) < 0)
		return -1;
	if (e->envid != NULL && record_put_str(out, REC_ENVID, e->envid) < 0)
		return -1;
	if (record_put_uint(out, REC_RET, e->ret, 1) < 0 ||
	    record_put_uint(out, REC_BODY, e->body, 1) < 0 ||
	    record_put_uint(out, REC_SMTPUTF8, e->smtputf8 ? 1 : 0, 1) < 0)
		return -1;
	if (e->client_addr != NULL && record_put_str(out, REC_CLIENT_ADDR, e->client_addr) < 0)
		return -1;
	if (e->client_helo != NULL && record_put_str(out, REC_CLIENT_HELO, e->client_helo) < 0)
		return -1;
	if (record_put_uint(out, REC_SIZE, e->size, 8) < 0)
		return -1;
	/* Only where it differs from the default: a file without added
	 * header fields stays readable by earlier versions. */
	if (e->content_off != 0 && e->content_off != RECORD_CONTENT_OFF_DEFAULT &&
	    record_put_uint(out, REC_CONTENT_OFF, e->content_off, 8) < 0)
		return -1;
	if (e->flags != 0 && record_put_uint(out, REC_FLAGS, e->flags, 4) < 0)
		return -1;
	if (e->inbox != NULL && record_put_str(out, REC_INBOX, e->inbox) < 0)
		return -1;
	return record_encode_rcpts(e, out);
}

int record_encode(const struct envelope *e, struct buf *out)
{
	size_t start = out->len;

	/* Refuse to write what record_decode() would refuse to read. */
	if (!qid_valid(e->qid) || e->nrcpts == 0 || e->nrcpts > ENVELOPE_MAX_RCPTS)
		return -1;
	if (buf_append(out, RECORD_MAGIC, RECORD_MAGIC_LEN) < 0)
		return -1;
	if (record_encode_body(e, out) < 0)
		goto fail;
	uint32_t crc = record_crc32(0, out->data + start, out->len - start);
	if (record_put_uint(out, REC_END, crc, 4) < 0 || out->len - start > RECORD_MAX_FILE)
		goto fail;
	return 0;
fail:
	out->len = start;
	if (out->data != NULL)
		out->data[start] = '\0';
	return -1;
}

int record_encode_sched(uint64_t next_try_us, uint32_t attempts, uint32_t flags, struct buf *out)
{
	unsigned char hdr[RECORD_HDR_LEN + 16];
	hdr[0] = REC_SCHED;
	for (int i = 0; i < 4; i++)
		hdr[1 + i] = (unsigned char)(16u >> (8 * (3 - i)));
	for (int i = 0; i < 8; i++)
		hdr[RECORD_HDR_LEN + i] = (unsigned char)(next_try_us >> (8 * (7 - i)));
	for (int i = 0; i < 4; i++) {
		hdr[RECORD_HDR_LEN + 8 + i] = (unsigned char)(attempts >> (8 * (3 - i)));
		hdr[RECORD_HDR_LEN + 12 + i] = (unsigned char)(flags >> (8 * (3 - i)));
	}
	return buf_append(out, hdr, sizeof(hdr));
}

int record_encode_done(uint32_t idx, struct buf *out)
{
	return record_put_uint(out, REC_DONE, idx, 4);
}

#define RECORD_MARK_MAX_IDX 4096 /* indexes per MARK record; more take several */

static void record_be(unsigned char *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		p[i] = (unsigned char)(v >> (8 * (n - 1 - i)));
}

/* One MARK record of n <= RECORD_MARK_MAX_IDX indexes. */
static int record_encode_mark_one(const uint32_t *idx, size_t n, const struct record_sched *sched,
				  struct buf *out)
{
	unsigned char p[RECORD_HDR_LEN + 4 + 4 * RECORD_MARK_MAX_IDX + 1 + 16 + 4];
	size_t len = RECORD_HDR_LEN;
	record_be(p + len, n, 4);
	len += 4;
	for (size_t i = 0; i < n; i++, len += 4)
		record_be(p + len, idx[i], 4);
	p[len++] = sched != NULL;
	if (sched != NULL) {
		record_be(p + len, sched->next_try_us, 8);
		record_be(p + len + 8, sched->attempts, 4);
		record_be(p + len + 12, sched->flags, 4);
		len += 16;
	}
	p[0] = REC_MARK;
	record_be(p + 1, len + 4 - RECORD_HDR_LEN, 4);
	record_be(p + len, record_crc32(0, p, len), 4);
	return buf_append(out, p, len + 4);
}

int record_encode_mark(const uint32_t *idx, size_t n, const struct record_sched *sched,
		       struct buf *out)
{
	size_t start = out->len;
	do {
		size_t k = n < RECORD_MARK_MAX_IDX ? n : RECORD_MARK_MAX_IDX;
		/* The schedule goes in the last record. */
		if (record_encode_mark_one(idx, k, k == n ? sched : NULL, out) < 0) {
			out->len = start;
			return -1;
		}
		idx += k;
		n -= k;
	} while (n > 0);
	return 0;
}

/* ---- decoder ---- */

struct record_dec {
	struct envelope *e;
	uint32_t seen;                /* bit per singleton record type already read */
	struct envelope_rcpt *rcpt;   /* the recipient NOTIFY/ORCPT apply to */
	bool rcpt_notify, rcpt_orcpt; /* already given for that recipient */
};

static uint64_t record_get_be(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < n; i++)
		v = (v << 8) | p[i];
	return v;
}

/* A string payload: no NUL, copied into *field (which must be unset). */
static int record_get_str(const unsigned char *p, size_t len, char **field, const char **error_r)
{
	if (memchr(p, '\0', len) != NULL) {
		*error_r = "NUL in string record";
		return -1;
	}
	*field = xstrndup((const char *)p, len);
	return 0;
}

static int record_get_uint(const unsigned char *p, size_t len, unsigned n, uint64_t *v_r,
                           const char **error_r)
{
	if (len != n) {
		*error_r = "bad integer record length";
		return -1;
	}
	*v_r = record_get_be(p, n);
	return 0;
}

static int record_dec_rcpt(struct record_dec *d, enum record_type type, const unsigned char *p,
                           size_t len, const char **error_r)
{
	uint64_t v;
	if (type == REC_RCPT) {
		if (d->e->nrcpts >= ENVELOPE_MAX_RCPTS) {
			*error_r = "too many recipients";
			return -1;
		}
		char *addr = NULL;
		if (record_get_str(p, len, &addr, error_r) < 0)
			return -1;
		d->rcpt = envelope_add_rcpt(d->e, addr);
		d->rcpt_notify = d->rcpt_orcpt = false;
		free(addr);
		return 0;
	}
	if (d->rcpt == NULL) {
		*error_r = "recipient option before RCPT";
		return -1;
	}
	bool *given = type == REC_RCPT_NOTIFY ? &d->rcpt_notify : &d->rcpt_orcpt;
	if (*given) {
		*error_r = "duplicate recipient option";
		return -1;
	}
	*given = true;
	if (type == REC_RCPT_ORCPT)
		return record_get_str(p, len, &d->rcpt->orcpt, error_r);
	if (record_get_uint(p, len, 1, &v, error_r) < 0)
		return -1;
	d->rcpt->notify = (unsigned)v;
	return 0;
}

static int record_dec_u8(const unsigned char *p, size_t len, unsigned *field, const char **error_r)
{
	uint64_t v;
	if (record_get_uint(p, len, 1, &v, error_r) < 0)
		return -1;
	*field = (unsigned)v;
	return 0;
}

/* One record of the envelope proper (anything before END). */
static int record_dec_one(struct record_dec *d, enum record_type type, const unsigned char *p,
                          size_t len, const char **error_r)
{
	struct envelope *e = d->e;
	uint64_t v;

	if (type >= REC_RCPT && type <= REC_RCPT_ORCPT)
		return record_dec_rcpt(d, type, p, len, error_r);
	if ((type < REC_QID || type > REC_SIZE) && type != REC_CONTENT_OFF && type != REC_FLAGS &&
	    type != REC_INBOX) {
		*error_r = type == REC_DONE ? "DONE record before END" : "unknown record type";
		return -1;
	}
	if ((d->seen & (1u << type)) != 0) {
		*error_r = "duplicate record";
		return -1;
	}
	d->seen |= 1u << type;

	switch (type) {
	case REC_QID:
		if (len != QID_LEN) {
			*error_r = "bad queue id";
			return -1;
		}
		memcpy(e->qid, p, QID_LEN);
		e->qid[QID_LEN] = '\0';
		if (!qid_valid(e->qid)) {
			*error_r = "bad queue id";
			return -1;
		}
		return 0;
	case REC_ARRIVAL:
		return record_get_uint(p, len, 8, &e->arrival_us, error_r);
	case REC_SIZE:
		return record_get_uint(p, len, 8, &e->size, error_r);
	case REC_FLAGS:
		if (record_get_uint(p, len, 4, &v, error_r) < 0)
			return -1;
		if (v & ~(uint64_t)(ENVELOPE_FLAG_JUNK | ENVELOPE_FLAG_SANDBOX)) {
			*error_r = "unknown message flags";
			return -1;
		}
		e->flags = (uint32_t)v;
		return 0;
	case REC_CONTENT_OFF:
		if (record_get_uint(p, len, 8, &e->content_off, error_r) < 0)
			return -1;
		if (e->content_off < RECORD_CONTENT_OFF_DEFAULT) {
			*error_r = "content offset inside the file header";
			return -1;
		}
		return 0;
	case REC_SENDER:
		return record_get_str(p, len, &e->sender, error_r);
	case REC_ENVID:
		return record_get_str(p, len, &e->envid, error_r);
	case REC_INBOX:
		return record_get_str(p, len, &e->inbox, error_r);
	case REC_CLIENT_ADDR:
		return record_get_str(p, len, &e->client_addr, error_r);
	case REC_CLIENT_HELO:
		return record_get_str(p, len, &e->client_helo, error_r);
	case REC_RET:
		return record_dec_u8(p, len, &e->ret, error_r);
	case REC_BODY:
		return record_dec_u8(p, len, &e->body, error_r);
	case REC_SMTPUTF8:
		if (record_get_uint(p, len, 1, &v, error_r) < 0)
			return -1;
		if (v > 1) {
			*error_r = "bad SMTPUTF8 record";
			return -1;
		}
		e->smtputf8 = v == 1;
		return 0;
	default:
		*error_r = "unknown record type";
		return -1;
	}
}

static int record_dec_check_required(const struct record_dec *d, const char **error_r)
{
	static const enum record_type required[] = {REC_QID, REC_ARRIVAL, REC_SENDER, REC_SIZE};
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if ((d->seen & (1u << required[i])) == 0) {
			*error_r = "missing required record";
			return -1;
		}
	}
	if (d->e->nrcpts == 0) {
		*error_r = "no recipients";
		return -1;
	}
	if ((d->seen & (1u << REC_CONTENT_OFF)) == 0)
		d->e->content_off = RECORD_CONTENT_OFF_DEFAULT;
	return 0;
}

/* One MARK record at p (rem octets left). Returns its length, 0 for a torn
 * append (short, CRC mismatch), or -1 for a record that passed its CRC and
 * is still wrong. */
static long record_dec_mark(struct record_dec *d, const unsigned char *p, size_t rem,
			    const char **error_r)
{
	if (rem < RECORD_HDR_LEN)
		return 0;
	uint64_t rlen = record_get_be(p + 1, 4);
	if (rlen < 4 + 1 + 4 || rlen > RECORD_MAX_PAYLOAD || rem - RECORD_HDR_LEN < rlen)
		return 0;
	size_t body = RECORD_HDR_LEN + (size_t)rlen - 4;
	if (record_get_be(p + body, 4) != record_crc32(0, p, body))
		return 0;
	const unsigned char *q = p + RECORD_HDR_LEN;
	uint64_t n = record_get_be(q, 4);
	if (n > (rlen - 9) / 4) {
		*error_r = "bad MARK record";
		return -1;
	}
	const unsigned char *s = q + 4 + 4 * n;
	if (rlen != 4 + 4 * n + 1 + (s[0] == 1 ? 16 : 0) + 4 || s[0] > 1) {
		*error_r = "bad MARK record";
		return -1;
	}
	for (uint64_t i = 0; i < n; i++) {
		uint64_t idx = record_get_be(q + 4 + 4 * i, 4);
		if (idx >= d->e->nrcpts) {
			*error_r = "MARK recipient index out of range";
			return -1;
		}
		d->e->rcpts[idx].done = true;
	}
	if (s[0] == 1) {
		d->e->next_try_us = record_get_be(s + 1, 8);
		d->e->attempts = (uint32_t)record_get_be(s + 9, 4);
		d->e->sched_flags = (uint32_t)record_get_be(s + 13, 4);
	}
	return (long)(RECORD_HDR_LEN + rlen);
}

/* The records after END, appended one write at a time: MARK records (and
 * the DONE and SCHED records of earlier versions). A trailing record that
 * is short, fails its CRC or starts with a zero octet is a torn append:
 * it and what follows are ignored (the recipients are tried again);
 * anything else that does not decode is an error. */
static int record_dec_done(struct record_dec *d, const unsigned char *p, size_t len, size_t off,
                           size_t *used_r, const char **error_r)
{
	while (off < len) {
		size_t rem = len - off;
		if (p[off] == 0)
			break; /* zeros where an append was: torn */
		if (p[off] == REC_MARK) {
			long n = record_dec_mark(d, p + off, rem, error_r);
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			off += (size_t)n;
			continue;
		}
		if (p[off] == REC_SCHED) {
			if (rem >= RECORD_HDR_LEN && record_get_be(p + off + 1, 4) != 16) {
				*error_r = "bad SCHED record length";
				return -1;
			}
			if (rem < RECORD_HDR_LEN + 16)
				break; /* torn append: the previous schedule stands */
			const unsigned char *q = p + off + RECORD_HDR_LEN;
			d->e->next_try_us = record_get_be(q, 8);
			d->e->attempts = (uint32_t)record_get_be(q + 8, 4);
			d->e->sched_flags = (uint32_t)record_get_be(q + 12, 4);
			off += RECORD_HDR_LEN + 16;
			continue;
		}
		if (p[off] != REC_DONE) {
			*error_r = "record after END that is not MARK, DONE or SCHED";
			return -1;
		}
		if (rem >= RECORD_HDR_LEN && record_get_be(p + off + 1, 4) != 4) {
			*error_r = "bad DONE record length";
			return -1;
		}
		if (rem < RECORD_HDR_LEN + 4)
			break; /* torn append */
		uint64_t idx = record_get_be(p + off + RECORD_HDR_LEN, 4);
		if (idx >= d->e->nrcpts) {
			*error_r = "DONE recipient index out of range";
			return -1;
		}
		d->e->rcpts[idx].done = true;
		off += RECORD_HDR_LEN + 4;
	}
	*used_r = off;
	return 0;
}

static int record_decode_main(struct record_dec *d, const unsigned char *p, size_t len,
                              size_t *used_r, const char **error_r)
{
	if (len > RECORD_MAX_FILE) {
		*error_r = "envelope file too large";
		return -1;
	}
	if (len < RECORD_MAGIC_LEN || memcmp(p, RECORD_MAGIC, RECORD_MAGIC_LEN) != 0) {
		*error_r = "bad envelope magic";
		return -1;
	}
	size_t off = RECORD_MAGIC_LEN;
	for (;;) {
		if (len - off < RECORD_HDR_LEN) {
			*error_r = "envelope truncated before END";
			return -1;
		}
		enum record_type type = p[off];
		uint64_t rlen = record_get_be(p + off + 1, 4);
		if (rlen > RECORD_MAX_PAYLOAD) {
			*error_r = "record too long";
			return -1;
		}
		if (rlen > len - off - RECORD_HDR_LEN) {
			*error_r = "envelope truncated before END";
			return -1;
		}
		const unsigned char *payload = p + off + RECORD_HDR_LEN;
		if (type == REC_END) {
			uint64_t crc;
			if (record_get_uint(payload, rlen, 4, &crc, error_r) < 0)
				return -1;
			if (crc != record_crc32(0, p, off)) {
				*error_r = "envelope CRC mismatch";
				return -1;
			}
			off += RECORD_HDR_LEN + 4;
			break;
		}
		if (record_dec_one(d, type, payload, rlen, error_r) < 0)
			return -1;
		off += RECORD_HDR_LEN + rlen;
	}
	if (record_dec_check_required(d, error_r) < 0)
		return -1;
	return record_dec_done(d, p, len, off, used_r, error_r);
}

int record_decode_used(const unsigned char *p, size_t len, struct envelope *e, size_t *used_r,
                       const char **error_r)
{
	struct record_dec d = {.e = e};
	const char *error = NULL;
	size_t used = 0;

	if (record_decode_main(&d, p, len, &used, &error) < 0) {
		envelope_clear(e);
		if (error_r != NULL)
			*error_r = error;
		return -1;
	}
	if (used_r != NULL)
		*used_r = used;
	return 0;
}

int record_decode(const unsigned char *p, size_t len, struct envelope *e, const char **error_r)
{
	return record_decode_used(p, len, e, NULL, error_r);
}
