/* fuzz_rstate_addr.c — libFuzzer target for the state.redis address
 * parser (src/lib/rstate.c): any input either fails with a message or
 * gives a unix path of at most 107 octets starting with '/', or a numeric
 * host and a port in 1..65535. */
#include "lib/rstate.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[512];
	if (size >= sizeof(s))
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	struct rstate_addr a;
	const char *error = NULL;
	if (rstate_addr_parse(s, &a, &error) < 0) {
		if (error == NULL)
			abort();
		return 0;
	}
	if (a.is_unix ? (a.path[0] != '/' || strlen(a.path) > 107)
	              : (a.port < 1 || a.port > 65535 || a.host[0] == '\0'))
		abort();
	return 0;
}
