/* net.h — socket address helpers: parse "host:port" listener specs, render
 * addresses for logs and headers, open listening sockets. Any process. */
#ifndef HK_LIB_NET_H
#define HK_LIB_NET_H

#include <stddef.h>
#include <sys/socket.h>

#define NET_ADDRSTR_MAX 64 /* fits "[ffff:...:ffff]:65535" */

/* "127.0.0.1:25", "[::1]:25", "*:25" (all IPv4 and IPv6 addresses: two
 * sockets), "localhost" is not accepted: listeners name addresses.
 * Fills up to 2 addresses; returns how many, or -1. */
int net_parse_listen(const char *spec, struct sockaddr_storage out[2], socklen_t lens[2]);
/* Numeric host only ("192.0.2.1", "2001:db8::1", v4-mapped shown as v4). */
const char *net_host_str(const struct sockaddr *sa, char *out, size_t outlen);
/* A bound, listening, non-blocking, close-on-exec socket, or -1 (errno). */
int net_listen(const struct sockaddr *sa, socklen_t len, int backlog);

#endif
