/* fuzz_dmarc.c — libFuzzer target for the DMARC record parser
 * (dauth/dmarc.c). Input: one TXT record's text as the DNS could serve it,
 * any octets. Checks that the parser never reads out of bounds, that a
 * refusal is explained, and that what it accepts is in range. Seeds in
 * corpus/dmarc/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dauth/dmarc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dmarc_record r;
	const char *error = NULL;
	/* an exact-size copy: ASan sees any read past the end */
	char *txt = malloc(size > 0 ? size : 1);
	if (txt == NULL)
		return 0;
	memcpy(txt, data, size);
	int rc = dmarc_record_parse(txt, size, &r, &error);
	if (rc < -1 || rc > 1 || (rc == -1 && error == NULL))
		abort();
	if (rc == 0) {
		if (r.pct > 100 || r.nrua > DMARC_RUA_MAX || r.p > DMARC_P_REJECT ||
		    r.sp > DMARC_P_REJECT)
			abort();
		for (size_t i = 0; i < r.nrua; i++) {
			size_t n = strlen(r.rua[i]);
			if (n < 8 || strncasecmp(r.rua[i], "mailto:", 7) != 0 ||
			    strchr(r.rua[i], '@') == NULL)
				abort();
			for (size_t k = 0; k < n; k++) {
				if ((unsigned char)r.rua[i][k] <= 0x20 || r.rua[i][k] == 0x7f)
					abort();
			}
		}
		if (size < 8 || memmem(txt, size, "DMARC1", 6) == NULL)
			abort(); /* a policy record says v=DMARC1 */
	}
	free(txt);
	return 0;
}
