/* fuzz_dkim_tags.c — libFuzzer target for the DKIM parsers of
 * src/dauth/dkim_tags.c: the tag list (RFC 6376 §3.2), the DKIM-Signature
 * value (§3.5) and the key record (§3.6.1). Input: a header field value or
 * a DNS TXT record, hostile. Checks that the parsers never read past the
 * input, set an error on refusal, and keep their bounds: tag views inside
 * the input, at most DKIM_TAGS_MAX tags, no duplicate names, decoded b=,
 * bh= and p= within their buffers, a NUL-terminated d=/s=/i=, From in h=.
 * Seeds in corpus/dkim_tags/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/dkim.h"

static void fuzz_tags(const char *p, size_t size)
{
	struct dkim_tags t;
	const char *error = NULL;
	if (dkim_tags_parse(p, size, &t, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if (t.n > DKIM_TAGS_MAX)
		abort();
	for (size_t i = 0; i < t.n; i++) {
		const struct dkim_tag *g = &t.tag[i];
		if (g->name < p || g->name + g->name_len > p + size || g->name_len == 0 ||
		    (g->value_len > 0 && (g->value < p || g->value + g->value_len > p + size)))
			abort();
		for (size_t j = 0; j < i; j++)
			if (t.tag[j].name_len == g->name_len &&
			    memcmp(t.tag[j].name, g->name, g->name_len) == 0)
				abort();
	}
}

static void fuzz_sig(const char *p, size_t size)
{
	struct dkim_sig sig;
	const char *error = NULL;
	int rc = dkim_sig_parse(p, size, &sig, &error);
	if (rc < 0 && error == NULL)
		abort();
	if (rc == 0) {
		bool from = false;
		for (size_t i = 0; i < sig.n_hnames; i++)
			from = from || strcasecmp(sig.hnames[i], "from") == 0;
		if (!from || sig.b_len == 0 || sig.b_len > DKIM_SIG_MAX || sig.bh_len == 0 ||
		    sig.bh_len > sizeof(sig.bh) || strlen(sig.domain) >= sizeof(sig.domain) ||
		    strlen(sig.selector) == 0 || strchr(sig.auid, '@') == NULL ||
		    (sig.has_x && sig.has_t && sig.x < sig.t))
			abort();
	}
	dkim_sig_clear(&sig);
}

static void fuzz_key(const char *p, size_t size)
{
	struct dkim_key key;
	const char *error = NULL;
	int rc = dkim_key_parse(p, size, &key, &error);
	if (rc < 0 && error == NULL)
		abort();
	if (rc == 0 && (key.p_len > DKIM_KEY_MAX || key.revoked != (key.p_len == 0)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* a copy of exactly size octets: ASan sees any read past the end */
	char *p = malloc(size > 0 ? size : 1);
	memcpy(p, data, size);
	fuzz_tags(p, size);
	fuzz_sig(p, size);
	fuzz_key(p, size);
	free(p);
	return 0;
}
