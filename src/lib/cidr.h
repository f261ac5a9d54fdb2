/* cidr.h — lists of IPv4 and IPv6 networks with an action each (allow or
 * deny, and a reason for a refusal), looked up by longest prefix; and the
 * parser of an access file (access.file), which may come from anywhere an
 * operator copies lists from, so it is parsed with bounds: line length,
 * entries, printable reasons only (a reason goes into an SMTP reply).
 * Knows nothing of SMTP. Any process; one owner per list. */
#ifndef HK_LIB_CIDR_H
#define HK_LIB_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CIDR_LIST_MAX 100000 /* entries of one list: a lookup is linear */
#define CIDR_LINE_MAX 1024   /* octets of one access file line */
#define CIDR_REASON_MAX 200  /* octets of a reason, printable ASCII */

/* One network; IPv4 in the first 4 octets of addr. */
struct cidr_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned prefix;
	unsigned char addr[16];
};

struct cidr_entry {
	struct cidr_net net;
	bool allow;
	char *reason; /* deny: the operator's text, or NULL */
};

struct cidr_list {
	struct cidr_entry *e;
	size_t n, cap;
};

/* "a.b.c.d/n", "x::/n" or a bare address (/32, /128), len octets of s. Host
 * bits beyond the prefix are refused (a typo more likely than a network).
 * 0, or -1 with a static message in *error_r. */
int cidr_parse(const char *s, size_t len, struct cidr_net *net, const char **error_r);
/* Is the address (4 octets for AF_INET, 16 for AF_INET6) inside net? */
bool cidr_match(const struct cidr_net *net, int family, const unsigned char *addr);
/* The family and octets of a socket address; an IPv4-mapped IPv6 address
 * (a dual-stack socket, RFC 4291 §2.5.5.2) as the IPv4 one. false: not IP. */
bool cidr_sockaddr(const struct sockaddr *sa, int *family_r, unsigned char addr_r[16]);

/* -1 when the list is full (CIDR_LIST_MAX). reason is copied. */
int cidr_list_add(struct cidr_list *l, const struct cidr_net *net, bool allow, const char *reason);
/* The entry of the longest prefix holding sa; at equal prefixes a deny
 * wins. NULL: no entry. */
const struct cidr_entry *cidr_list_lookup(const struct cidr_list *l, const struct sockaddr *sa);
void cidr_list_clear(struct cidr_list *l);

/* Add the lines of an access file's text to l:
 *   # comment, blank lines
 *   allow 192.0.2.0/24
 *   deny  2001:db8::/32  reason text to the end of the line
 * 0, or -1 with "line N: message" in err (l then holds the lines before). */
int cidr_list_parse_access(struct cidr_list *l, const char *text, size_t len, char *err,
                           size_t errlen);

/* The answers of a DNS list that count (dnsbl.lists[].codes): IPv4
 * addresses, networks and bit masks ("&0.0.0.4": any of its bits set in
 * the answer), comma-separated. */
#define CIDR_CODES_MAX 16
struct cidr_codes {
	struct cidr_net nets[CIDR_CODES_MAX];
	size_t n_nets;
	uint32_t masks[CIDR_CODES_MAX]; /* host order */
	size_t n_masks;
};
/* "" counts every answer in 127.0.0.0/24 (not 127.255.255.x: refusals of
 * some lists to public resolvers). 0, or -1 with a static message. */
int cidr_codes_parse(const char *s, struct cidr_codes *c, const char **error_r);
/* a: an answer's 4 octets, in network order. */
bool cidr_codes_match(const struct cidr_codes *c, const unsigned char a[4]);

#endif
