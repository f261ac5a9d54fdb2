/* fuzz_sendmail.c — libFuzzer target for what sendmail and the maildrop
 * pickup parse: the message normalization (sendmail_msg_normalize, in one
 * piece and split where the first octet says: the same output and the same
 * end both ways), the header scan with -t and Bcc removal
 * (sendmail_hdr_scan: the output is never longer than the input, and every
 * address handed out is within bounds), and the maildrop decoder (files
 * any local user writes; a decoded file must encode back to the same
 * octets). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/maildrop.h"
#include "sendmail/hdr.h"

static void fuzz_addr(void *arg, const char *addr, size_t len)
{
	size_t *n = arg;
	if (len == 0 || len > 1024)
		abort();
	(void)addr[len - 1];
	(*n)++;
}

static int fuzz_normalize(const char *p, size_t len, size_t split, bool dots, struct buf *out)
{
	bool bol = true, first = true;
	int rc = sendmail_msg_normalize(p, split, dots, &bol, &first, out);
	if (rc == 0)
		rc = sendmail_msg_normalize(p + split, len - split, dots, &bol, &first, out);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *p = (const char *)data + 1;
	size_t len = size - 1;
	size_t split = len == 0 ? 0 : data[0] % (len + 1);
	bool dots = data[0] & 0x80;

	/* The maildrop decoder first: the whole input is a file. */
	struct maildrop_msg m;
	const char *err = NULL;
	if (maildrop_decode(data, size, &m, &err) == 0) {
		struct buf again;
		buf_init(&again, 0);
		maildrop_encode(&m, &again);
		if (again.len != size || memcmp(again.data, data, size) != 0)
			abort();
		buf_free(&again);
	}

	struct buf one, two;
	buf_init(&one, 0);
	buf_init(&two, 0);
	int rc1 = fuzz_normalize(p, len, 0, dots, &one);
	int rc2 = fuzz_normalize(p, len, split, dots, &two);
	/* Split inside a line, "From " and a lone dot can be told apart only
	 * in one piece: compare when the split is at a line start. */
	if (split == 0 || p[split - 1] == '\n') {
		if (rc1 != rc2 || one.len != two.len || memcmp(one.data, two.data, one.len) != 0)
			abort();
	}
	struct buf out;
	struct sendmail_hdr h;
	size_t n = 0;
	buf_init(&out, 0);
	sendmail_hdr_scan((const char *)one.data, one.len, true, true, fuzz_addr, &n, &h, &out);
	if (out.len > one.len + 2 || h.header_end > out.len)
		abort();
	buf_free(&out);
	buf_free(&one);
	buf_free(&two);
	return 0;
}
