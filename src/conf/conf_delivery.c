/* conf_delivery.c — the outbound side of the configuration: the checks of
 * the delivery, dns and routes settings (addresses of smarthosts, relays,
 * LMTP servers and DNS forwarders), the rules that tie a route's transport
 * to its address, and conf_route_for(), which picks the route of a recipient
 * domain: a routes[] entry, else local for local_domains, else the
 * smarthost, else MX (RFC 5321 §5.1).
 *
 * The settings table (conf.c) calls the checks at load, so every error has
 * its position; once the whole file is valid, conf_routes_compile() builds the
 * default routes so that conf_route_for() does no allocation.
 *
 * Loaded in the master (root) and in `hikyaku check`; conf_route_for() runs in
 * the queue and delivery processes on a hostile value: the domain of a
 * recipient address a client sent. */
#include "conf/conf_int.h"

#include "lib/alloc.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#define CONF_HOST_MAX 256 /* a domain name is at most 255 octets (RFC 1035 §2.3.4) */
#define CONF_UNIX_PREFIX "unix:"

/* The routes conf_route_for() returns when no routes[] entry matches. */
struct conf_routes_compiled {
	struct conf_route local;    /* for local_domains */
	struct conf_route fallback; /* relay via delivery.smarthost, or MX */
};

/* --- addresses ------------------------------------------------------------- */

/* "host:port" or "[addr]:port" with a port of 1-65535: host a domain name or
 * an IPv4 literal, addr an IPv4 or IPv6 literal (the brackets of RFC 5321
 * §4.1.3, which also say "no MX lookup"). */
static bool conf_hostport_valid(const char *s)
{
	const char *colon = strrchr(s, ':');
	char host[CONF_HOST_MAX];
	unsigned char addr[sizeof(struct in6_addr)];
	uint64_t port;

	if (colon == NULL || colon == s ||
	    str_parse_u64(colon + 1, strlen(colon + 1), 1, 65535, &port) < 0)
		return false;
	size_t hlen = (size_t)(colon - s);
	if (hlen >= sizeof(host))
		return false;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (host[0] != '[')
		return conf_is_dns_name(host, hlen);
	if (hlen < 3 || host[hlen - 1] != ']')
		return false;
	host[hlen - 1] = '\0';
	return inet_pton(AF_INET6, host + 1, addr) == 1 || inet_pton(AF_INET, host + 1, addr) == 1;
}

int conf_smarthost_check(const char *s, char *msg, size_t msglen)
{
	if (s[0] == '\0' || conf_hostport_valid(s))
		return 0;
	return conf_msg(msg, msglen,
	                "invalid smarthost \"%.64s\": expected host:port or [addr]:port", s);
}

/* "unix:/absolute/path" that fits in sockaddr_un (unix(7)). */
static bool conf_unix_address_valid(const char *s)
{
	const char *path = s + strlen(CONF_UNIX_PREFIX);
	size_t len = strlen(path);

	return path[0] == '/' && len < sizeof(((struct sockaddr_un *)NULL)->sun_path);
}

/* The form only; which transport may use which form is conf_routes_check's. */
int conf_route_address_check(const char *s, char *msg, size_t msglen)
{
	if (s[0] == '\0' || conf_hostport_valid(s))
		return 0;
	if (strncmp(s, CONF_UNIX_PREFIX, strlen(CONF_UNIX_PREFIX)) == 0) {
		if (conf_unix_address_valid(s))
			return 0;
		return conf_msg(msg, msglen,
		                "invalid address \"%.64s\": expected unix: and an absolute path "
		                "shorter than 108 octets",
		                s);
	}
	return conf_msg(msg, msglen,
	                "invalid address \"%.64s\": expected host:port, [addr]:port or "
	                "unix:/path",
	                s);
}

/* "addr" or "addr@port" (the notation of dig and unbound), addr a numeric
 * IPv4 or IPv6 address: a forwarder given by name would need a resolver. */
int conf_forwarder_check(const char *s, char *msg, size_t msglen)
{
	const char *at = strchr(s, '@');
	char text[INET6_ADDRSTRLEN];
	unsigned char addr[sizeof(struct in6_addr)];
	size_t alen = at != NULL ? (size_t)(at - s) : strlen(s);
	uint64_t port;

	if (alen == 0 || alen >= sizeof(text))
		goto bad;
	memcpy(text, s, alen);
	text[alen] = '\0';
	if (inet_pton(AF_INET, text, addr) != 1 && inet_pton(AF_INET6, text, addr) != 1)
		goto bad;
	if (at != NULL && str_parse_u64(at + 1, strlen(at + 1), 1, 65535, &port) < 0)
		return conf_msg(msg, msglen, "invalid forwarder \"%.64s\": port must be 1-65535",
		                s);
	return 0;
bad:
	return conf_msg(msg, msglen,
	                "invalid forwarder \"%.64s\": expected a numeric IPv4 or IPv6 address, "
	                "optionally @port",
	                s);
}

/* --- routes ---------------------------------------------------------------- */

/* A recipient probe (verify_recipients) runs in smtpd, where no resolver
 * is at hand: the server must be given by number or unix socket. */
static bool conf_route_can_verify(const struct conf_route *r)
{
	unsigned char addr[sizeof(struct in6_addr)];
	char host[CONF_HOST_MAX];
	const char *colon = strrchr(r->address, ':');

	if (r->transport != CONF_TRANSPORT_RELAY && r->transport != CONF_TRANSPORT_LMTP)
		return false;
	if (strncmp(r->address, CONF_UNIX_PREFIX, strlen(CONF_UNIX_PREFIX)) == 0)
		return true;
	if (colon == NULL)
		return false;
	size_t hl = (size_t)(colon - r->address);
	const char *h = r->address;
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (hl == 0 || hl >= sizeof(host))
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

/* One route's transport against its address and credentials. */
static int conf_route_check(const struct conf_route *r, char *msg, size_t msglen)
{
	const char *t = conf_transports[r->transport];
	bool has_address = r->address[0] != '\0';
	bool is_unix = strncmp(r->address, CONF_UNIX_PREFIX, strlen(CONF_UNIX_PREFIX)) == 0;

	if (r->port != 0 && r->transport != CONF_TRANSPORT_MX)
		return conf_msg(msg, msglen,
		                "route for %s: port is for transport mx only (%s names its port "
		                "in address)",
		                r->domain, t);
	if (r->verify_recipients && !conf_route_can_verify(r))
		return conf_msg(msg, msglen,
		                "route for %s: verify_recipients needs transport relay or lmtp with "
		                "a numeric address or unix:",
		                r->domain);
	switch (r->transport) {
	case CONF_TRANSPORT_LOCAL:
	case CONF_TRANSPORT_MX:
		if (has_address)
			return conf_msg(
			    msg, msglen,
			    "route for %s: transport %s takes no address (got \"%.64s\")",
			    r->domain, t, r->address);
		/* Credentials would go to whichever host the MX records of a
		 * recipient's domain name: refuse rather than leak them. */
		if (r->credentials[0] != '\0')
			return conf_msg(msg, msglen,
			                "route for %s: transport %s takes no credentials",
			                r->domain, t);
		return 0;
	case CONF_TRANSPORT_RELAY:
		if (is_unix)
			return conf_msg(msg, msglen,
			                "route for %s: a unix: address is for transport lmtp only",
			                r->domain);
		/* fall through */
	case CONF_TRANSPORT_LMTP:
		if (!has_address)
			return conf_msg(msg, msglen,
			                "route for %s: transport %s requires an address", r->domain,
			                t);
		return 0;
	}
	return conf_msg(msg, msglen, "route for %s: unknown transport", r->domain);
}

int conf_routes_check(const struct conf *conf, size_t *bad_r, char *msg, size_t msglen)
{
	for (size_t i = 0; i < conf->n_routes; i++) {
		const struct conf_route *r = &conf->routes[i];

		*bad_r = i;
		if (conf_route_check(r, msg, msglen) < 0)
			return -1;
		/* Domains are lowercased at load: strcmp is case-insensitive here. */
		for (size_t j = 0; j < i; j++)
			if (strcmp(conf->routes[j].domain, r->domain) == 0)
				return conf_msg(msg, msglen,
				                "duplicate route for %s (route %zu has it already)",
				                r->domain, j + 1);
	}
	return 0;
}

static void conf_route_init(struct conf_route *r, enum conf_transport transport,
                            const char *address, enum conf_tls_policy tls, const char *credentials)
{
	r->domain = xstrdup("");
	r->transport = transport;
	r->address = xstrdup(address);
	r->tls = tls;
	r->credentials = xstrdup(credentials);
}

static void conf_route_clear(struct conf_route *r)
{
	free(r->domain);
	free(r->address);
	free(r->credentials);
	*r = (struct conf_route){0};
}

void conf_routes_compile(struct conf *conf)
{
	const struct conf_delivery *d = &conf->delivery;
	struct conf_routes_compiled *rc = xcalloc(1, sizeof(*rc));

	/* tls "may" as a routes[] entry would default to; local ignores it. */
	conf_route_init(&rc->local, CONF_TRANSPORT_LOCAL, "", CONF_TLSPOL_MAY, "");
	if (d->smarthost[0] != '\0')
		conf_route_init(&rc->fallback, CONF_TRANSPORT_RELAY, d->smarthost, d->smarthost_tls,
		                d->smarthost_credentials);
	else
		conf_route_init(&rc->fallback, CONF_TRANSPORT_MX, "", d->tls, "");
	conf->routes_compiled = rc;
}

void conf_routes_compiled_free(struct conf *conf)
{
	struct conf_routes_compiled *rc = conf->routes_compiled;

	if (rc == NULL)
		return;
	conf_route_clear(&rc->local);
	conf_route_clear(&rc->fallback);
	free(rc);
	conf->routes_compiled = NULL;
}

/* domain is hostile (from RCPT TO): compared in its A-label form, as the
 * routes' domains are kept; one that has none (not a valid IDN) gets the
 * fallback route, whose delivery refuses it. */
const struct conf_route *conf_route_for(const struct conf *conf, const char *domain)
{
	char ascii[CONF_DOMAIN_BUF];

	if (conf == NULL || conf->routes_compiled == NULL)
		return NULL;
	if (domain != NULL)
		domain = conf_domain_ascii(domain, ascii, sizeof(ascii));
	for (size_t i = 0; domain != NULL && i < conf->n_routes; i++)
		if (strcasecmp(conf->routes[i].domain, domain) == 0)
			return &conf->routes[i];
	if (conf_is_local_domain(conf, domain))
		return &conf->routes_compiled->local;
	return &conf->routes_compiled->fallback;
}
