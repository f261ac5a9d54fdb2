/* fuzz_header.c — libFuzzer target for the RFC 5322 header field helpers
 * (mail/header.c): walking the fields of a header section, the author
 * domain of From and the authserv-id of Authentication-Results. Input: a
 * header section as a client could send it, any octets. Checks that the
 * fields tile the input without gaps or overlap, that views stay inside it,
 * and that an accepted From domain is a lowercase name. Seeds in
 * corpus/header/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/header.h"

static void fuzz_check_field(const char *p, size_t size, const struct mail_hdr_field *f)
{
	char dom[256];
	const char *id;
	size_t idlen;
	if (f->name_len == 0)
		return;
	if (f->name < p || f->name + f->name_len > p + size || f->value < p ||
	    f->value + f->value_len > p + size)
		abort();
	if (mail_hdr_ar_authserv_id(f->value, f->value_len, &id, &idlen) == 0 &&
	    (idlen == 0 || id < f->value || id + idlen > f->value + f->value_len))
		abort();
	int rc = mail_hdr_from_domain(f->value, f->value_len, dom, sizeof(dom));
	if (rc != 0 && (rc != MAIL_HDR_FROM_BAD && rc != MAIL_HDR_FROM_MULTI))
		abort();
	if (rc != 0 && dom[0] != '\0')
		abort(); /* a refusal leaves out empty */
	if (rc == 0) {
		size_t n = strlen(dom);
		if (n == 0 || dom[0] == '.' || dom[n - 1] == '.' || strstr(dom, "..") != NULL)
			abort();
		for (size_t i = 0; i < n; i++) {
			if (dom[i] >= 'A' && dom[i] <= 'Z')
				abort();
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* an exact-size copy: ASan sees any read past the end */
	char *p = malloc(size > 0 ? size : 1);
	if (p == NULL)
		return 0;
	memcpy(p, data, size);
	struct mail_hdr_field f;
	size_t pos = 0, expect = 0;
	while (mail_hdr_next(p, size, &pos, &f)) {
		if (f.off != expect || f.len == 0 || f.off + f.len != pos || pos > size)
			abort();
		expect = pos;
		fuzz_check_field(p, size, &f);
	}
	if (expect != size)
		abort(); /* every octet belongs to a field */
	free(p);
	return 0;
}
