/* fuzz_http.c — libFuzzer target for the http process's request parser
 * (obs/http_parse.c). Input: the octets anyone who reaches http.listen
 * sends. Checks that the parser never reads past the input, that an
 * accepted request's views lie within it and within its `used` octets,
 * that a prefix of an accepted request is never an error (the parser is
 * resumable), that errors carry an HTTP status, and then parses the
 * pipelined rest as the server would; the query decoder runs on every
 * accepted query. Seeds in corpus/http/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/http_parse.h"

static void fuzz_in(const struct http_view v, const char *p, size_t used)
{
	if (v.len > 0 && (v.p < p || v.p + v.len > p + used))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* A copy of exactly size octets: ASan sees any read past it. */
	char *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	const char *p = buf;
	size_t len = size;
	for (int round = 0; round < 8 && len > 0; round++) {
		struct http_request req;
		int status = 0;
		int rc = http_parse_request(p, len, &req, &status);
		if (rc < 0) {
			if (status < 400 || status > 505)
				abort();
			break;
		}
		if (rc == 0)
			break;
		if (req.used == 0 || req.used > len)
			abort();
		fuzz_in(req.method, p, req.used);
		fuzz_in(req.path, p, req.used);
		fuzz_in(req.query, p, req.used);
		fuzz_in(req.authorization, p, req.used);
		fuzz_in(req.body, p, req.used);
		if (req.body.len > HTTP_BODY_MAX)
			abort();
		/* the same octets cut short: more needed, never an error */
		struct http_request r2;
		int st2;
		if (http_parse_request(p, req.used - 1, &r2, &st2) != 0)
			abort();
		char out[256];
		(void)http_query_get(req.query, "sender", out, sizeof(out));
		(void)http_pct_decode(req.path.p, req.path.len, out, sizeof(out));
		p += req.used;
		len -= req.used;
	}
	free(buf);
	return 0;
}
