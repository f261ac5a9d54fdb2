/* fuzz_bounce.c — bounce_build() over hostile fields: the input is split at
 * NUL bytes into diagnostic, address, ORCPT, ENVID, remote MTA, sender and
 * the original message; the first byte picks kind and RET. Every report must
 * have CRLF lines of at most 998 octets and, before the original message,
 * no header line the input made. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/bounce.h"
#include "lib/alloc.h"
#include "lib/buf.h"

static void fuzz_check(const struct buf *out)
{
	/* Past this the original message, which may hold any header. */
	const char *orig = strstr(buf_cstr(out), "\r\nContent-Description: Undelivered Message");
	size_t start = 0, hdr_end = orig != NULL ? (size_t)(orig - buf_cstr(out)) : out->len;
	for (size_t i = 0; i < out->len; i++) {
		if (out->data[i] == '\n')
			abort(); /* a LF not after CR */
		if (out->data[i] != '\r')
			continue;
		if (i + 1 >= out->len || out->data[i + 1] != '\n' || i - start > 998)
			abort();
		if (i + 6 < hdr_end && memcmp(out->data + i + 2, "Bcc:", 4) == 0)
			abort();
		start = i + 2;
		i++;
	}
	if (start != out->len)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *f[7] = {0};
	size_t nf = 0, at = 1;
	if (size < 1)
		return 0;
	while (nf < 6 && at <= size) {
		const uint8_t *z = memchr(data + at, 0, size - at);
		size_t end = z != NULL ? (size_t)(z - data) : size;
		f[nf++] = xstrndup((const char *)data + at, end - at);
		at = end + 1;
	}
	const unsigned char *msg = at < size ? data + at : NULL;
	struct bounce_rcpt r[2] = {
	    {f[1] != NULL ? f[1] : "a@b", f[2], f[0] != NULL ? "5.1.1" : NULL, f[0], f[4], 1},
	    {"c@d", NULL, f[0], f[0], NULL, 0},
	};
	struct bounce_info bi = {
	    .kind = (enum bounce_kind)(data[0] & 3),
	    .reporting_mta = "mx.example.org",
	    .qid = "FUZZ",
	    .sender = f[5] != NULL ? f[5] : "s@e",
	    .envid = f[3],
	    .arrival_us = 1,
	    .retry_until_us = 2,
	    .full = data[0] & 4,
	    .msg = msg,
	    .msglen = msg != NULL ? size - at : 0,
	    .rcpts = r,
	    .nrcpts = 1 + ((data[0] >> 3) & 1),
	    .now_us = 3,
	};
	struct buf out;
	buf_init(&out, 0);
	if (bounce_build(&bi, &out) != 0)
		abort();
	fuzz_check(&out);
	buf_free(&out);
	for (size_t i = 0; i < nf; i++)
		free(f[i]);
	return 0;
}
