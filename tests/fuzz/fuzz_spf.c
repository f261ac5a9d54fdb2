/* fuzz_spf.c — libFuzzer target for the SPF record parser and macro
 * expander (src/dauth/spf_record.c).
 *
 * Input: one mode octet, then the text. The text is parsed as a record
 * (behind "v=spf1 " when it does not start with it); every term's
 * domain-spec, redirect= and exp= of a parsed record is expanded, with an
 * IPv4 client for even mode octets and IPv6 for odd ones. The whole text is
 * also expanded as a domain-spec and as an explanation, with the sender
 * and HELO taken from the text itself. Invariants: terms and spans stay
 * inside the record; a domain expansion is at most SPF_DOMAIN_MAX octets
 * (one trailing dot is dropped; "a.." stays, and the evaluator refuses it
 * as a name); every output is NUL-terminated within bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/spf_record.h"

static void fuzz_spf_expand(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool exp)
{
	char out[SPF_EXPAND_MAX + 1];
	const char *err = NULL;
	memset(out, 'X', sizeof(out));
	if (spf_macro_expand(s, len, ctx, exp, out, sizeof(out), &err) < 0) {
		if (err == NULL)
			abort();
		return;
	}
	size_t n = strnlen(out, sizeof(out));
	if (n == sizeof(out))
		abort();
	if (!exp && n > SPF_DOMAIN_MAX)
		abort();
	(void)spf_macro_uses_p(s, len);
}

static void fuzz_spf_span(const struct spf_record *rec, struct spf_span sp)
{
	if ((size_t)sp.off + sp.len > strlen(rec->text))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct spf_record rec;
	static char text[SPF_RECORD_MAX + 16];
	if (size < 1)
		return 0;
	unsigned mode = data[0];
	const char *in = (const char *)data + 1;
	size_t len = size - 1;
	if (len > SPF_RECORD_MAX + 8)
		len = SPF_RECORD_MAX + 8;
	static const unsigned char ip4[4] = {192, 0, 2, 3};
	static const unsigned char ip6[16] = {0x20, 0x01, 0x0d, 0xb8, [14] = 0xcb, [15] = 0x01};
	char sender[128];
	size_t sl = len < sizeof(sender) - 1 ? len : sizeof(sender) - 1;
	memcpy(sender, in, sl);
	sender[sl] = '\0';
	struct spf_macro_ctx ctx = {
	    .sender = sender,
	    .local = sender,
	    .sender_domain = "example.com",
	    .domain = sender,
	    .ip = mode & 1 ? ip6 : ip4,
	    .iplen = mode & 1 ? 16 : 4,
	    .helo = sender,
	    .p = mode & 2 ? "unknown" : NULL,
	    .receiver = "mx.example.net",
	    .now = 1700000000,
	};

	size_t tl = 0;
	if (!spf_record_is_spf(in, len)) {
		memcpy(text, "v=spf1 ", 7);
		tl = 7;
	}
	memcpy(text + tl, in, len);
	tl += len;
	const char *err = NULL;
	if (spf_record_parse(text, tl, &rec, &err) == 0) {
		if (rec.nterms > SPF_TERMS_MAX)
			abort();
		for (size_t i = 0; i < rec.nterms; i++) {
			const struct spf_term *t = &rec.terms[i];
			fuzz_spf_span(&rec, t->text);
			fuzz_spf_span(&rec, t->spec);
			if (t->cidr4 < 0 || t->cidr4 > 32 || t->cidr6 < 0 || t->cidr6 > 128)
				abort();
			if (t->spec.len > 0)
				fuzz_spf_expand(rec.text + t->spec.off, t->spec.len, &ctx, false);
		}
		fuzz_spf_span(&rec, rec.redirect);
		fuzz_spf_span(&rec, rec.exp);
		if (rec.redirect.len > 0)
			fuzz_spf_expand(rec.text + rec.redirect.off, rec.redirect.len, &ctx, false);
		if (rec.exp.len > 0)
			fuzz_spf_expand(rec.text + rec.exp.off, rec.exp.len, &ctx, false);
	} else if (err == NULL) {
		abort();
	}
	fuzz_spf_expand(in, len, &ctx, false);
	fuzz_spf_expand(in, len, &ctx, true);
	return 0;
}
