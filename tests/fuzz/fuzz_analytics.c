/* fuzz_analytics.c — libFuzzer target for the delivery analytics' inputs:
 * the ANALYTICS control frame as the queue decodes it
 * (ctl_analytics_decode, from the http process, which parses the network),
 * an AJSON answer frame as the http process renders it, and the reply
 * texts of remote servers that astats_reason_norm() reduces to a reason.
 * Checks: nothing reads past the input; a request that decodes meets its
 * bounds and re-encodes to a frame that decodes to the same request; a
 * reason, a TLS version and a domain are bounded and a reason printable.
 * Seeds in corpus/analytics/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"
#include "queue/astats.h"

static void fuzz_request(const struct ctl_frame *f)
{
	struct ctl_analytics_req a, b;
	const char *error = NULL;
	if (ctl_analytics_decode(f, &a, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if (a.from > a.to || a.to - a.from > CTL_ANALYTICS_SPAN_MAX || a.kind[0] == '\0' ||
	    strlen(a.kind) > CTL_KIND_MAX || strlen(a.domain) > CTL_ARG_MAX)
		abort();
	struct buf out;
	struct ctl_frame g;
	size_t used;
	buf_init(&out, CTL_REQ_MAX);
	if (ctl_analytics_build(&a, &out) < 0 ||
	    ctl_frame_decode(out.data, out.len, CTL_REQ_MAX, &g, &used, &error) != 1 ||
	    ctl_analytics_decode(&g, &b, &error) < 0 || memcmp(&a, &b, sizeof(a)) != 0)
		abort();
	buf_free(&out);
}

static void fuzz_render(const struct ctl_frame *f)
{
	struct ctl_render r;
	char *body = NULL, *err = NULL;
	size_t bl = 0, el = 0;
	memset(&r, 0, sizeof(r));
	r.req = CTL_T_ANALYTICS;
	r.json = true;
	r.out = open_memstream(&body, &bl);
	r.err = open_memstream(&err, &el);
	ctl_render_begin(&r);
	(void)ctl_render_frame(&r, f);
	fclose(r.out);
	fclose(r.err);
	free(body);
	free(err);
}

static void fuzz_reason(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	char out[ASTATS_REASON_MAX + 1], v[ASTATS_TLSVER_MAX];
	char d[ASTATS_DOMAIN_MAX + 1];
	astats_reason_norm("4.0.0", s, out, sizeof(out));
	if (strlen(out) > ASTATS_REASON_MAX)
		abort();
	for (const char *p = out; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			abort();
	astats_tls_version(s, v, sizeof(v));
	astats_domain(s, d, sizeof(d));
	if (strlen(v) >= sizeof(v) || strlen(d) > ASTATS_DOMAIN_MAX)
		abort();
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct ctl_frame f;
		size_t used = 0;
		const char *error = NULL;
		int r = ctl_frame_decode(data + off, size - off, CTL_RESP_MAX, &f, &used, &error);
		if (r <= 0)
			break;
		if (f.type == CTL_T_ANALYTICS)
			fuzz_request(&f);
		else
			fuzz_render(&f);
		off += used;
	}
	fuzz_reason(data, size);
	return 0;
}
