/* cidr.c — network lists and the access file parser (cidr.h). The file's
 * text is hostile in the sense that it may be a list pulled from the
 * internet: every line is bounded and every field checked. */
#include "lib/cidr.h"

#include "lib/alloc.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIDR_TEXT_MAX 64 /* longest IPv6 text is 45 */

int cidr_parse(const char *s, size_t len, struct cidr_net *net, const char **error_r)
{
	char text[CIDR_TEXT_MAX];
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	uint64_t prefix;

	*net = (struct cidr_net){0};
	if (alen == 0 || alen >= sizeof(text)) {
		*error_r = "expected a.b.c.d/n, x:x::/n or an address";
		return -1;
	}
	memcpy(text, s, alen);
	text[alen] = '\0';
	net->family = memchr(text, ':', alen) != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(net->family, text, net->addr) != 1) {
		*error_r = "expected a.b.c.d/n, x:x::/n or an address";
		return -1;
	}
	unsigned max = net->family == AF_INET ? 32 : 128;
	if (slash == NULL) {
		prefix = max;
	} else if (str_parse_u64(slash + 1, len - alen - 1, 0, max, &prefix) < 0) {
		*error_r = net->family == AF_INET ? "prefix length must be 0-32"
						  : "prefix length must be 0-128";
		return -1;
	}
	net->prefix = (unsigned)prefix;
	for (unsigned bit = net->prefix; bit < max; bit++) {
		if (net->addr[bit / 8] & (0x80 >> (bit % 8))) {
			*error_r = "address has bits set beyond the prefix";
			return -1;
		}
	}
	return 0;
}

bool cidr_match(const struct cidr_net *net, int family, const unsigned char *addr)
{
	if (net->family != family)
		return false;
	unsigned full = net->prefix / 8, rest = net->prefix % 8;
	if (memcmp(net->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (addr[full] & mask);
}

bool cidr_sockaddr(const struct sockaddr *sa, int *family_r, unsigned char addr_r[16])
{
	memset(addr_r, 0, 16);
	if (sa->sa_family == AF_INET) {
		*family_r = AF_INET;
		memcpy(addr_r, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family != AF_INET6)
		return false;
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	if (IN6_IS_ADDR_V4MAPPED(a6)) {
		*family_r = AF_INET;
		memcpy(addr_r, a6->s6_addr + 12, 4);
	} else {
		*family_r = AF_INET6;
		memcpy(addr_r, a6->s6_addr, 16);
	}
	return true;
}

int cidr_list_add(struct cidr_list *l, const struct cidr_net *net, bool allow, const char *reason)
{
	if (l->n >= CIDR_LIST_MAX)
		return -1;
	if (l->n == l->cap) {
		l->cap = l->cap == 0 ? 16 : l->cap * 2;
		l->e = xreallocarray(l->e, l->cap, sizeof(*l->e));
	}
	struct cidr_entry *e = &l->e[l->n++];
	e->net = *net;
	e->allow = allow;
	e->reason = reason != NULL && reason[0] != '\0' ? xstrdup(reason) : NULL;
	return 0;
}

const struct cidr_entry *cidr_list_lookup(const struct cidr_list *l, const struct sockaddr *sa)
{
	int family;
	unsigned char addr[16];
	const struct cidr_entry *best = NULL;
	if (l == NULL || !cidr_sockaddr(sa, &family, addr))
		return NULL;
	for (size_t i = 0; i < l->n; i++) {
		const struct cidr_entry *e = &l->e[i];
		if (!cidr_match(&e->net, family, addr))
			continue;
		if (best == NULL || e->net.prefix > best->net.prefix ||
		    (e->net.prefix == best->net.prefix && !e->allow))
			best = e;
	}
	return best;
}

void cidr_list_clear(struct cidr_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->e[i].reason);
	free(l->e);
	*l = (struct cidr_list){0};
}

static bool cidr_is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* One line without its end; 0 or -1 with a static message. */
static int cidr_parse_line(struct cidr_list *l, const char *p, size_t len, const char **error_r)
{
	size_t i = 0, w;
	while (i < len && cidr_is_space(p[i]))
		i++;
	if (i == len || p[i] == '#')
		return 0;
	for (w = i; w < len && !cidr_is_space(p[w]); w++)
		;
	bool allow;
	if (w - i == 5 && memcmp(p + i, "allow", 5) == 0)
		allow = true;
	else if (w - i == 4 && memcmp(p + i, "deny", 4) == 0)
		allow = false;
	else {
		*error_r = "expected \"allow NETWORK\" or \"deny NETWORK [reason]\"";
		return -1;
	}
	for (i = w; i < len && cidr_is_space(p[i]); i++)
		;
	for (w = i; w < len && !cidr_is_space(p[w]); w++)
		;
	struct cidr_net net;
	if (w == i) {
		*error_r = "a network is missing";
		return -1;
	}
	if (cidr_parse(p + i, w - i, &net, error_r) < 0)
		return -1;
	for (i = w; i < len && cidr_is_space(p[i]); i++)
		;
	while (len > i && cidr_is_space(p[len - 1]))
		len--;
	char reason[CIDR_REASON_MAX + 1];
	if (len - i > CIDR_REASON_MAX) {
		*error_r = "reason too long (200 octets at most)";
		return -1;
	}
	for (size_t k = i; k < len; k++) {
		unsigned char c = (unsigned char)p[k];
		if (c < 0x20 || c > 0x7e) {
			*error_r = "reason must be printable ASCII";
			return -1;
		}
	}
	if (allow && len > i) {
		*error_r = "an allow line takes no reason";
		return -1;
	}
	memcpy(reason, p + i, len - i);
	reason[len - i] = '\0';
	if (cidr_list_add(l, &net, allow, reason) < 0) {
		*error_r = "too many entries (100000 at most)";
		return -1;
	}
	return 0;
}

int cidr_list_parse_access(struct cidr_list *l, const char *text, size_t len, char *err,
			   size_t errlen)
{
	size_t lineno = 0, at = 0;
	while (at < len) {
		const char *p = text + at;
		const char *nl = memchr(p, '\n', len - at);
		size_t n = nl != NULL ? (size_t)(nl - p) : len - at;
		const char *error = NULL;
		at += n + (nl != NULL);
		lineno++;
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n > CIDR_LINE_MAX)
			error = "line too long (1024 octets at most)";
		else if (memchr(p, '\0', n) != NULL)
			error = "NUL octet";
		else
			(void)cidr_parse_line(l, p, n, &error);
		if (error != NULL) {
			snprintf(err, errlen, "line %zu: %s", lineno, error);
			return -1;
		}
	}
	return 0;
}
