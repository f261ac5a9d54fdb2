/* net.c — listener specs and address rendering. Master (binds) and smtpd. */
#include "lib/net.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int net_port(const char *p, in_port_t *port_r)
{
	uint64_t v;
	if (str_parse_u64(p, strlen(p), 1, 65535, &v) < 0)
		return -1;
	*port_r = htons((uint16_t)v);
	return 0;
}

int net_parse_listen(const char *spec, struct sockaddr_storage out[2], socklen_t lens[2])
{
	char host[64];
	const char *colon;
	in_port_t port;

	memset(out, 0, 2 * sizeof(out[0]));
	if (spec[0] == '[') {
		const char *close = strchr(spec, ']');
		if (close == NULL || close[1] != ':' || (size_t)(close - spec - 1) >= sizeof(host))
			return -1;
		memcpy(host, spec + 1, (size_t)(close - spec - 1));
		host[close - spec - 1] = '\0';
		colon = close + 1;
	} else {
		colon = strrchr(spec, ':');
		if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
			return -1;
		memcpy(host, spec, (size_t)(colon - spec));
		host[colon - spec] = '\0';
	}
	if (net_port(colon + 1, &port) < 0)
		return -1;

	struct sockaddr_in *sin = (struct sockaddr_in *)&out[0];
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[0];
	if (strcmp(host, "*") == 0 && spec[0] != '[') {
		sin->sin_family = AF_INET;
		sin->sin_port = port;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		lens[0] = sizeof(*sin);
		sin6 = (struct sockaddr_in6 *)&out[1];
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		sin6->sin6_addr = in6addr_any;
		lens[1] = sizeof(*sin6);
		return 2;
	}
	if (spec[0] != '[' && inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = port;
		lens[0] = sizeof(*sin);
		return 1;
	}
	if (spec[0] == '[' && inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		lens[0] = sizeof(*sin6);
		return 1;
	}
	return -1;
}

const char *net_host_str(const struct sockaddr *sa, char *out, size_t outlen)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, out, (socklen_t)outlen);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
			inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], out, (socklen_t)outlen);
		else
			inet_ntop(AF_INET6, &sin6->sin6_addr, out, (socklen_t)outlen);
	} else {
		snprintf(out, outlen, "unknown");
	}
	return out;
}

int net_listen(const struct sockaddr *sa, socklen_t len, int backlog)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, sa, len) < 0 || listen(fd, backlog) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}
