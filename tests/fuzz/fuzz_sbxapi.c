/* fuzz_sbxapi.c — libFuzzer target for the sandbox API's parsers
 * (obs/sbxquery.c): the search query, its FTS5 expressions, the JSON
 * bodies of PUT/DELETE/POST and the message path. Input: the first octet
 * picks the parser, the rest is what an HTTP client sends. Checks that
 * every output is bounded and NUL-terminated, that IDs stay IDs and that
 * an FTS expression keeps its quotes balanced (no injection into MATCH).
 * Seeds in corpus/sbxapi/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/sbxquery.h"

static void fuzz_query(const char *p, size_t n)
{
	struct sbx_query q;
	const char *error = NULL;
	if (sbx_query_parse(p, n, &q, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if (q.n > SBX_QUERY_TERMS_MAX || q.read < -1 || q.read > 1)
		abort();
	for (size_t i = 0; i < q.n; i++) {
		size_t l = strnlen(q.terms[i].value, SBX_TERM_MAX);
		if (l == 0 || l >= SBX_TERM_MAX)
			abort();
		char fts[2 * SBX_TERM_MAX + 32];
		if (sbx_term_fts(&q.terms[i], fts, sizeof(fts)) < 0)
			abort(); /* the buffer is sized for the worst term */
		/* one opening quote, doubled quotes inside, one closing */
		const char *open = strchr(fts, '"');
		size_t quotes = 0;
		for (const char *c = open; *c != '\0'; c++)
			quotes += *c == '"';
		if (open == NULL || quotes % 2 != 0 || strcmp(fts + strlen(fts) - 2, "\"*") != 0)
			abort();
	}
}

static void fuzz_body(const char *p, size_t n)
{
	static struct sbx_body b;
	const char *error = NULL;
	if (sbx_body_parse(p, n, &b, &error) < 0)
		return;
	if (b.n_ids > SBX_BODY_IDS_MAX || b.n_to > SBX_BODY_TO_MAX)
		abort();
	for (size_t i = 0; i < b.n_ids; i++)
		if (!sbx_id_valid(b.ids[i], strnlen(b.ids[i], SBX_ID_MAX + 1)))
			abort();
	for (size_t i = 0; i < b.n_to; i++)
		if (strnlen(b.to[i], SBX_ADDR_MAX + 1) > SBX_ADDR_MAX)
			abort();
}

static void fuzz_path(const char *p, size_t n)
{
	char s[2048];
	if (n >= sizeof(s) || memchr(p, '\0', n) != NULL)
		return;
	memcpy(s, p, n);
	s[n] = '\0';
	struct sbx_path out;
	if (sbx_path_parse(s, &out) < 0)
		return;
	if (!sbx_id_valid(out.id, strlen(out.id)))
		abort();
	if (strcmp(out.what, "part") == 0 &&
	    (out.part[0] == '\0' || strstr(out.part, "..") != NULL))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	switch (data[0] % 3) {
	case 0:
		fuzz_query(p, n);
		break;
	case 1:
		fuzz_body(p, n);
		break;
	default:
		fuzz_path(p, n);
		break;
	}
	return 0;
}
