/* fuzz_access.c — libFuzzer target for the access file parser and the DNS
 * list codes (src/lib/cidr.c): any input either parses into at most
 * CIDR_LIST_MAX entries with printable reasons, or fails with a "line N:"
 * message; lookups of a few addresses on what parsed never crash. */
#include "lib/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cidr_list l = {0};
	char err[256];
	if (cidr_list_parse_access(&l, (const char *)data, size, err, sizeof(err)) < 0) {
		if (strncmp(err, "line ", 5) != 0)
			abort();
	}
	if (l.n > CIDR_LIST_MAX)
		abort();
	for (size_t i = 0; i < l.n; i++) {
		const char *r = l.e[i].reason;
		if (r == NULL)
			continue;
		if (l.e[i].allow || strlen(r) > CIDR_REASON_MAX)
			abort();
		for (const char *p = r; *p != '\0'; p++)
			if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
				abort();
	}
	static const char *const addrs[] = {"192.0.2.1", "::1", "2001:db8::1", "::ffff:10.0.0.1"};
	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct sockaddr_storage ss;
		memset(&ss, 0, sizeof(ss));
		if (strchr(addrs[i], ':') != NULL) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
			s6->sin6_family = AF_INET6;
			inet_pton(AF_INET6, addrs[i], &s6->sin6_addr);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
			s4->sin_family = AF_INET;
			inet_pton(AF_INET, addrs[i], &s4->sin_addr);
		}
		(void)cidr_list_lookup(&l, (const struct sockaddr *)&ss);
	}
	cidr_list_clear(&l);
	/* the same bytes as a codes list (NUL-terminated copy) */
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = '\0';
	struct cidr_codes c;
	const char *error = NULL;
	if (cidr_codes_parse(s, &c, &error) < 0 && error == NULL)
		abort();
	free(s);
	return 0;
}
