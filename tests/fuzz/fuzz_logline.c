/* fuzz_logline.c — libFuzzer target for `hikyaku log summary`'s line
 * parser (obs/logline.c). Input: one line of a log file, which holds what
 * SMTP clients sent. Checks that the parser never reads past the line,
 * that every value it returns is NUL-terminated within its bound, and that
 * the hour is -1 or 0..23. Seeds in corpus/logline/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/logline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct logline l;
	char *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	if (logline_parse(buf, size, &l) == 0) {
		if (l.hour < -1 || l.hour > 23 || l.n > LOGLINE_FIELDS ||
		    memchr(l.ts, '\0', sizeof(l.ts)) == NULL)
			abort();
		for (size_t i = 0; i < l.n; i++)
			if (memchr(l.f[i].key, '\0', LOGLINE_KEY_MAX) == NULL ||
			    memchr(l.f[i].value, '\0', LOGLINE_VALUE_MAX) == NULL)
				abort();
		(void)logline_get(&l, "event");
	}
	free(buf);
	return 0;
}
