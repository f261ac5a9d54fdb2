/* conf_relay.c — the relay section of the configuration: who may relay
 * without AUTH (relay.trusted_networks, CIDRs) and which MAIL FROM addresses
 * an authenticated login may use (relay.sender_login_match, relay.senders).
 *
 * The settings table (conf.c) calls the checks here on every list item at
 * load, so a bad CIDR or senders line is an error with its position; once the
 * whole file is valid, conf_relay_compile() parses the lists into binary form
 * so the per-connection and per-MAIL queries do no parsing.
 *
 * Loaded in the master (root) and in `hikyaku check`; the queries run in the
 * SMTP workers on hostile values: the client's address, and the MAIL FROM
 * address and AUTH identity a client sent. */
#include "conf/conf_int.h"

#include "lib/alloc.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CONF_CIDR_TEXT_MAX 64 /* longest IPv6 text is 45 */

/* One network, IPv4 in the first 4 octets of addr. */
struct conf_net {
	int family; /* AF_INET or AF_INET6 */
	unsigned prefix;
	unsigned char addr[16];
};

/* One relay.senders line: sender (an address, or "@domain") and the logins
 * that may use it; all lowercase. */
struct conf_sender_rule {
	char *sender;
	char **logins;
	size_t n_logins;
};

struct conf_relay_compiled {
	struct conf_net *nets;
	size_t n_nets;
	struct conf_sender_rule *rules;
	size_t n_rules;
};

/* --- relay.trusted_networks ------------------------------------------------ */

/* Does addr (len octets) start with the prefix bits of net? */
static bool conf_net_match(const struct conf_net *net, const unsigned char *addr)
{
	unsigned full = net->prefix / 8, rest = net->prefix % 8;

	if (memcmp(net->addr, addr, full) != 0)
		return false;
	if (rest == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rest));
	return (net->addr[full] & mask) == (addr[full] & mask);
}

/* "a.b.c.d/n", "x::/n", or a bare address (/32, /128). Host bits beyond the
 * prefix are refused: "192.0.2.7/24" is more likely a typo than a network. */
static int conf_cidr_parse(const char *s, struct conf_net *net, char *msg, size_t msglen)
{
	char text[CONF_CIDR_TEXT_MAX];
	const char *slash = strchr(s, '/');
	size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	uint64_t prefix;

	if (alen == 0 || alen >= sizeof(text))
		goto bad;
	memcpy(text, s, alen);
	text[alen] = '\0';
	*net = (struct conf_net){0};
	net->family = memchr(text, ':', alen) != NULL ? AF_INET6 : AF_INET;
	if (inet_pton(net->family, text, net->addr) != 1)
		goto bad;
	unsigned max = net->family == AF_INET ? 32 : 128;
	if (slash == NULL)
		prefix = max;
	else if (str_parse_u64(slash + 1, strlen(slash + 1), 0, max, &prefix) < 0)
		return conf_msg(msg, msglen,
		                "invalid network \"%.64s\": prefix length must be 0-%u", s, max);
	net->prefix = (unsigned)prefix;
	for (unsigned bit = net->prefix; bit < max; bit++)
		if (net->addr[bit / 8] & (0x80 >> (bit % 8)))
			return conf_msg(msg, msglen,
			                "invalid network \"%.64s\": address has bits set beyond "
			                "the /%u prefix",
			                s, net->prefix);
	return 0;
bad:
	return conf_msg(msg, msglen,
	                "invalid network \"%.64s\": expected a.b.c.d/n, x:x::/n or an address", s);
}

int conf_cidr_check(const char *s, char *msg, size_t msglen)
{
	struct conf_net net;

	return conf_cidr_parse(s, &net, msg, msglen);
}

bool conf_is_trusted_network(const struct conf *conf, const struct sockaddr *sa)
{
	const unsigned char *addr;
	int family;

	if (conf == NULL || sa == NULL || conf->relay_compiled == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		family = AF_INET;
		addr = (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)
		           ->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 =
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		/* A dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d (RFC 4291
		 * §2.5.5.2): they match the IPv4 networks, as they would on an IPv4
		 * socket, and only those. */
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			addr = a6->s6_addr + 12;
		} else {
			family = AF_INET6;
			addr = a6->s6_addr;
		}
	} else {
		return false;
	}
	const struct conf_relay_compiled *rc = conf->relay_compiled;
	for (size_t i = 0; i < rc->n_nets; i++)
		if (rc->nets[i].family == family && conf_net_match(&rc->nets[i], addr))
			return true;
	return false;
}

/* --- relay.senders --------------------------------------------------------- */

static const char *conf_trim(const char *s, const char *end, size_t *len_r)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*len_r = (size_t)(end - s);
	return s;
}

/* local@domain: a local part without spaces, controls, ',' or ':' (which
 * would break the line format) and a DNS domain. With at_ok, "@domain". */
static bool conf_mailbox_valid(const char *s, size_t len, bool at_ok)
{
	const char *at = NULL;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c <= ' ' || c == 0x7f || c == ',' || c == ':')
			return false;
		if (c == '@')
			at = s + i;
	}
	if (at == NULL || (at == s && !at_ok))
		return false;
	return conf_is_dns_name(at + 1, len - (size_t)(at + 1 - s));
}

/* "sender: login, login": fills r (lowercased copies) when it is not NULL. */
static int conf_sender_line_parse(const char *s, struct conf_sender_rule *r, char *msg,
                                  size_t msglen)
{
	const char *colon = strchr(s, ':'), *end = s + strlen(s);
	const char *item;
	size_t len;

	if (colon == NULL)
		return conf_msg(msg, msglen,
		                "invalid senders line \"%.64s\": expected \"sender: login, ...\"",
		                s);
	item = conf_trim(s, colon, &len);
	if (!conf_mailbox_valid(item, len, true))
		return conf_msg(msg, msglen,
		                "invalid senders line \"%.64s\": sender must be local@domain or "
		                "@domain",
		                s);
	if (r != NULL) {
		r->sender = xstrndup(item, len);
		str_lower(r->sender);
	}
	for (const char *p = colon + 1; p <= end;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma != NULL ? comma : end;
		item = conf_trim(p, stop, &len);
		if (!conf_mailbox_valid(item, len, false))
			return conf_msg(msg, msglen,
			                "invalid senders line \"%.64s\": logins must be a list of "
			                "user@domain separated by commas",
			                s);
		if (r != NULL) {
			r->logins = xreallocarray(r->logins, r->n_logins + 1, sizeof(*r->logins));
			r->logins[r->n_logins] = xstrndup(item, len);
			str_lower(r->logins[r->n_logins++]);
		}
		p = stop + 1;
	}
	return 0;
}

int conf_sender_line_check(const char *s, char *msg, size_t msglen)
{
	return conf_sender_line_parse(s, NULL, msg, msglen);
}

/* Is sender the mailbox want, case-insensitively, ignoring a "+tag" at the
 * end of sender's local part (alice+lists@x is alice@x)? */
static bool conf_mailbox_match(const char *sender, const char *want)
{
	const char *at = strrchr(sender, '@'), *want_at = strrchr(want, '@');

	if (strcasecmp(sender, want) == 0)
		return true;
	if (at == NULL || want_at == NULL)
		return false;
	const char *plus = memchr(sender, '+', (size_t)(at - sender));
	if (plus == NULL || plus == sender)
		return false;
	size_t local_len = (size_t)(plus - sender);
	return local_len == (size_t)(want_at - want) && strncasecmp(sender, want, local_len) == 0 &&
	       strcasecmp(at, want_at) == 0;
}

static bool conf_rule_grants(const struct conf_sender_rule *r, const char *sender,
                             const char *login)
{
	if (r->sender[0] == '@') {
		const char *at = strrchr(sender, '@');
		if (at == NULL || strcasecmp(at, r->sender) != 0)
			return false;
	} else if (!conf_mailbox_match(sender, r->sender)) {
		return false;
	}
	for (size_t i = 0; i < r->n_logins; i++)
		if (strcasecmp(r->logins[i], login) == 0)
			return true;
	return false;
}

bool conf_sender_allowed(const struct conf *conf, const char *sender, const char *login)
{
	if (conf == NULL || sender == NULL)
		return false;
	/* The null reverse-path (RFC 5321 §4.5.5) is for bounces, which any
	 * user's client may legitimately send. */
	if (sender[0] == '\0' || !conf->relay.sender_login_match)
		return true;
	if (login == NULL || login[0] == '\0')
		return false;
	if (conf_mailbox_match(sender, login))
		return true;
	if (conf->relay_compiled == NULL)
		return false;
	for (size_t i = 0; i < conf->relay_compiled->n_rules; i++)
		if (conf_rule_grants(&conf->relay_compiled->rules[i], sender, login))
			return true;
	return false;
}

/* --- compile and free ------------------------------------------------------ */

void conf_relay_compile(struct conf *conf)
{
	struct conf_relay_compiled *rc = xcalloc(1, sizeof(*rc));
	char msg[256];

	conf_relay_compiled_free(conf);
	conf->relay_compiled = rc;
	rc->nets = xreallocarray(NULL, conf->relay.n_trusted_networks + 1, sizeof(*rc->nets));
	rc->rules = xreallocarray(NULL, conf->relay.n_senders + 1, sizeof(*rc->rules));
	/* Each item passed its check at load; a failure here is a bug. */
	for (size_t i = 0; i < conf->relay.n_trusted_networks; i++) {
		if (conf_cidr_parse(conf->relay.trusted_networks[i], &rc->nets[i], msg,
		                    sizeof(msg)) < 0)
			abort();
		rc->n_nets++;
	}
	for (size_t i = 0; i < conf->relay.n_senders; i++) {
		rc->rules[i] = (struct conf_sender_rule){0};
		rc->n_rules++;
		if (conf_sender_line_parse(conf->relay.senders[i], &rc->rules[i], msg,
		                           sizeof(msg)) < 0)
			abort();
	}
}

void conf_relay_compiled_free(struct conf *conf)
{
	struct conf_relay_compiled *rc = conf->relay_compiled;

	if (rc == NULL)
		return;
	for (size_t i = 0; i < rc->n_rules; i++) {
		for (size_t j = 0; j < rc->rules[i].n_logins; j++)
			free(rc->rules[i].logins[j]);
		free(rc->rules[i].logins);
		free(rc->rules[i].sender);
	}
	free(rc->rules);
	free(rc->nets);
	free(rc);
	conf->relay_compiled = NULL;
}
