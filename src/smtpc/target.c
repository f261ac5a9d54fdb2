/* target.c — a relay or LMTP route's "host:port" / "[v6]:port" as an SMTP
 * client target. Pure (no I/O, no DNS). Queue process (delivery) and smtpd
 * (recipient verification); the address comes from the root-owned config,
 * already checked by conf_routes_check, and is checked again here. */
#include "smtpc/client.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

int smtpc_target_parse(const char *addr, struct smtpc_target *t)
{
	const char *colon = strrchr(addr, ':');
	uint64_t port;

	memset(t, 0, sizeof(*t));
	if (colon == NULL || str_parse_u64(colon + 1, strlen(colon + 1), 1, 65535, &port) < 0)
		return -1;
	size_t hl = (size_t)(colon - addr);
	if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
		addr++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(t->host))
		return -1;
	memcpy(t->host, addr, hl);
	t->host[hl] = '\0';
	struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&t->addr;
	if (inet_pton(AF_INET6, t->host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		t->addrlen = sizeof(*sin6);
		return 1;
	}
	sin->sin_family = AF_INET; /* a name: carries the port to its lookup */
	sin->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, t->host, &sin->sin_addr) == 1) {
		t->addrlen = sizeof(*sin);
		return 1;
	}
	return 0;
}
