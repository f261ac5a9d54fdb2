/* fuzz_web.c — libFuzzer target for the static files' request-side
 * parsing (obs/web.c): an If-None-Match field value (anyone who reaches
 * the http listener sends it) matched against every embedded file's tag,
 * and the same octets as a URL path through the routes. Checks that
 * nothing reads past the input, that "*" matches and that a route only
 * ever yields a table entry. Seeds in corpus/web/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "obs/web.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size ? size : 1);
	memcpy(buf, data, size);
	for (size_t i = 0; i < web_n_files; i++)
		(void)web_etag_match(buf, size, web_files[i].etag);
	if (size == 1 && buf[0] == '*' && web_n_files > 0 &&
	    !web_etag_match(buf, size, web_files[0].etag))
		abort();
	if (size < 1024 && memchr(buf, '\0', size) == NULL) {
		char *path = malloc(size + 1);
		memcpy(path, buf, size);
		path[size] = '\0';
		for (int ui = 0; ui < 2; ui++) {
			const struct web_file *f = web_route(path, ui == 1);
			if (f != NULL && (f < web_files || f >= web_files + web_n_files))
				abort();
			if (f != NULL && !web_is_path(path, ui == 1))
				abort();
		}
		free(path);
	}
	free(buf);
	return 0;
}
