/* conf_check.c — warnings about a valid but risky configuration, printed by
 * `hikyaku check` (and at start): settings that load fine but would make an
 * open relay, send passwords in clear, or reject every recipient. Errors
 * that make a configuration unusable are refused at load (conf.c) instead.
 *
 * Runs in the master and in `hikyaku check`; the configuration is trusted. */
#include "conf/conf_int.h"
#include "auth/users.h"

#include "lib/fsutil.h"
#include "lib/rstate.h"

#include <openssl/evp.h>
#include <openssl/pem.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A listener or route address ("host:port", "[addr]:port") on loopback. */
static bool conf_address_is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[127.", 5) == 0 ||
	       strncmp(addr, "[::1]:", 6) == 0 || strncasecmp(addr, "localhost:", 10) == 0;
}

static __attribute__((format(printf, 2, 3))) int conf_warn(FILE *out, const char *fmt, ...)
{
	va_list ap;

	fputs("warning: ", out);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	return 1;
}

/* Per listener: TLS and AUTH choices that expose mail or passwords. */
static int conf_check_listener(const struct conf *conf, const struct conf_listener *l, FILE *out)
{
	int n = 0;

	if (conf_address_is_loopback(l->address))
		return 0;
	if (l->tls == CONF_TLS_NONE)
		n += conf_warn(out,
		               "listener %s is not loopback and has tls: none: mail (and any "
		               "credentials) cross the network in clear",
		               l->address);
	if (l->auth && l->plaintext_auth)
		n += conf_warn(out,
		               "listener %s is not loopback and has plaintext_auth: passwords can "
		               "be sent before TLS, in clear (RFC 4954 §14)",
		               l->address);
	if (l->tls != CONF_TLS_NONE && conf->tls.n_certs == 0)
		n += conf_warn(out,
		               "listener %s is not loopback and uses a self-signed certificate "
		               "(tls.certificates is empty): clients that verify will refuse it",
		               l->address);
	return n;
}

/* Relaying without AUTH is how open relays happen: say it loudly. */
static int conf_check_trusted(const struct conf *conf, FILE *out)
{
	if (conf->relay.n_trusted_networks == 0)
		return 0;
	fputs("WARNING: relay.trusted_networks lets these networks relay without "
	      "authentication:",
	      out);
	for (size_t i = 0; i < conf->relay.n_trusted_networks; i++)
		fprintf(out, " %s", conf->relay.trusted_networks[i]);
	fputc('\n', out);
	return 1;
}

/* Filtering settings that hurt the mail they were not meant for. */
static int conf_check_filter(const struct conf *conf, FILE *out)
{
	int n = 0;
	if (conf->dnsbl.n_lists > 0 && conf->dnsbl.threshold > 0) {
		uint64_t sum = 0;
		for (size_t i = 0; i < conf->dnsbl.n_lists; i++)
			sum += conf->dnsbl.lists[i].weight;
		if (sum < conf->dnsbl.threshold)
			n += conf_warn(out,
			               "dnsbl.threshold %llu is above the weights of all dnsbl.lists "
			               "together (%llu): no client is ever refused",
			               (unsigned long long)conf->dnsbl.threshold,
			               (unsigned long long)sum);
	}
	for (size_t i = 0; i < conf->dnsbl.n_allow_lists; i++)
		if (conf->dnsbl.allow_lists[i].codes[0] == '\0')
			n += conf_warn(out,
			               "dnsbl.allow_lists %s counts only 127.0.0.0/24 (codes \"\"): "
			               "DNSWL lists such as list.dnswl.org answer 127.0.x.y, set codes",
			               conf->dnsbl.allow_lists[i].zone);
	return n;
}

/* A credentials file holds a password: it must not be open to others. */
static int conf_check_credentials(const char *what, const char *path, FILE *out)
{
	struct stat st;

	if (path[0] == '\0')
		return 0;
	if (stat(path, &st) < 0)
		return conf_warn(out, "%s %s cannot be read: %s", what, path, strerror(errno));
	if ((st.st_mode & 077) != 0)
		return conf_warn(out,
		                 "%s %s is accessible to group or others (mode %04o): chmod 600 "
		                 "it, owned by root",
		                 what, path, (unsigned)(st.st_mode & 07777));
	return 0;
}

/* Credentials over a connection that never uses TLS: say it loudly. */
static int conf_check_cleartext(const char *what, const char *dest, FILE *out)
{
	fprintf(out,
	        "WARNING: %s sends its credentials (SMTP AUTH) to %s without TLS (tls: none): "
	        "anyone on the path can read the password (RFC 4954 §14)\n",
	        what, dest);
	return 1;
}

/* state.redis: its password file is a credential; a Redis off this host
 * without AUTH lets anyone who reaches it raise or clear the limits. */
static int conf_check_state(const struct conf *conf, FILE *out)
{
	const struct conf_state *st = &conf->state;
	if (st->redis[0] == '\0')
		return 0;
	int n = conf_check_credentials("state.redis_password_file", st->redis_password_file, out);
	struct rstate_addr a;
	const char *error = NULL;
	if (st->redis_password_file[0] == '\0' && rstate_addr_parse(st->redis, &a, &error) == 0 &&
	    !a.is_unix && strncmp(a.host, "127.", 4) != 0 && strcmp(a.host, "::1") != 0)
		n += conf_warn(out,
		               "state.redis %s is not loopback and has no redis_password_file: "
		               "whoever reaches it can change the rate limits and the greylist "
		               "(and there is no TLS)",
		               st->redis);
	return n;
}

/* Outbound delivery: the smarthost, its credentials, the routes. */
static int conf_check_delivery(const struct conf *conf, FILE *out)
{
	const struct conf_delivery *d = &conf->delivery;
	char what[320];
	int n = 0;

	if (d->ca_file[0] != '\0' && access(d->ca_file, R_OK) < 0)
		n += conf_warn(out, "delivery.ca_file %s is not readable: %s", d->ca_file,
		               strerror(errno));
	if (conf->dns.trust_anchor[0] != '\0' && access(conf->dns.trust_anchor, R_OK) < 0)
		n += conf_warn(out, "dns.trust_anchor %s is not readable: %s",
		               conf->dns.trust_anchor, strerror(errno));
	n +=
	    conf_check_credentials("delivery.smarthost_credentials", d->smarthost_credentials, out);
	if (d->smarthost_credentials[0] != '\0' && d->smarthost[0] == '\0')
		n += conf_warn(out, "delivery.smarthost_credentials is set but delivery.smarthost "
		                    "is empty: the credentials are not used");
	else if (d->smarthost_credentials[0] != '\0' && d->smarthost_tls == CONF_TLSPOL_NONE)
		n += conf_check_cleartext("delivery.smarthost", d->smarthost, out);
	for (size_t i = 0; i < conf->n_routes; i++) {
		const struct conf_route *r = &conf->routes[i];
		snprintf(what, sizeof(what), "routes: credentials of %s", r->domain);
		n += conf_check_credentials(what, r->credentials, out);
		snprintf(what, sizeof(what), "the route for %s", r->domain);
		if (r->credentials[0] != '\0' && r->tls == CONF_TLSPOL_NONE)
			n += conf_check_cleartext(what, r->address, out);
		/* Not a warning: LMTP to a mail store on another host is common,
		 * but the operator should know that mail crosses the network. */
		if (r->transport == CONF_TRANSPORT_LMTP && strncmp(r->address, "unix:", 5) != 0 &&
		    !conf_address_is_loopback(r->address))
			fprintf(out,
			        "info: the route for %s delivers by LMTP to %s, not on loopback: "
			        "mail crosses the network (tls: %s)\n",
			        r->domain, r->address, conf_tls_policies[r->tls]);
	}
	return n;
}

/* A refused passphrase prompt: keys are read unencrypted, never prompted for. */
static int conf_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* dkim.sign[]: each key readable (by whoever runs the check: root, as the
 * keys process does), private to root (0600, or 0640 for a group such as
 * a key management tool), of the declared type, and only one key per
 * (domain, selector). */
static int conf_check_dkim(const struct conf *conf, FILE *out)
{
	int n = 0;

	for (size_t i = 0; i < conf->dkim.n_sign; i++) {
		const struct conf_dkim_key *k = &conf->dkim.sign[i];
		struct stat st;
		for (size_t j = 0; j < i; j++)
			if (strcasecmp(conf->dkim.sign[j].domain, k->domain) == 0 &&
			    strcmp(conf->dkim.sign[j].selector, k->selector) == 0)
				n += conf_warn(out, "dkim.sign: %s and selector %s are listed twice",
				               k->domain, k->selector);
		if (stat(k->key, &st) < 0) {
			n += conf_warn(out, "dkim key %s cannot be read: %s", k->key, strerror(errno));
			continue;
		}
		if ((st.st_mode & 037) != 0)
			n += conf_warn(out,
			               "dkim key %s is writable by its group or open to others (mode "
			               "%04o): chmod 600 it (or 640), owned by root",
			               k->key, (unsigned)(st.st_mode & 07777));
		FILE *f = fopen(k->key, "r");
		if (f == NULL) {
			n += conf_warn(out, "dkim key %s cannot be read: %s", k->key, strerror(errno));
			continue;
		}
		EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, conf_no_passphrase, NULL);
		fclose(f);
		int id = pk != NULL ? EVP_PKEY_get_base_id(pk) : 0;
		bool ok = (k->type == CONF_DKIM_RSA && id == EVP_PKEY_RSA &&
		           EVP_PKEY_get_bits(pk) >= 1024 && EVP_PKEY_get_bits(pk) <= 8192) ||
		          (k->type == CONF_DKIM_ED25519 && id == EVP_PKEY_ED25519);
		if (pk == NULL)
			n += conf_warn(out, "dkim key %s is not an unencrypted PEM private key", k->key);
		else if (!ok)
			n += conf_warn(out, "dkim key %s is not an %s key (type: %s)%s", k->key,
			               k->type == CONF_DKIM_RSA ? "RSA (1024..8192 bits)" : "Ed25519",
			               k->type == CONF_DKIM_RSA ? "rsa" : "ed25519",
			               ": the keys process will not start");
		else if (k->type == CONF_DKIM_RSA && EVP_PKEY_get_bits(pk) < 2048)
			n += conf_warn(out, "dkim key %s has %d bits: RSA keys of less than 2048 bits "
			               "are weak (RFC 8301 §3.2)", k->key, EVP_PKEY_get_bits(pk));
		EVP_PKEY_free(pk);
	}
	return n;
}

/* http.listen: /metrics has no token, so say so when it is reachable from
 * beyond this host; the token file as the credentials files. */
static int conf_check_http(const struct conf *conf, FILE *out)
{
	const char *l = conf->http.listen;
	int n = 0;
	if (l[0] == '\0') {
		if (conf->http.token_file[0] != '\0')
			n += conf_warn(out, "http.token_file is set but http.listen is not: no API");
		return n;
	}
	if (strncmp(l, "127.", 4) != 0 && strncmp(l, "[::1]:", 6) != 0 &&
	    strncmp(l, "localhost:", 10) != 0)
		n += conf_warn(out,
		               "http.listen %s is not loopback: /metrics needs no token, so anyone "
		               "who reaches it reads the metrics (firewall it, or use 127.0.0.1)",
		               l);
	n += conf_check_credentials("http.token_file", conf->http.token_file, out);
	return n;
}

int conf_check(const struct conf *conf, FILE *out)
{
	int n = 0;
	const char *public_addr = NULL;

	for (size_t i = 0; i < conf->n_listeners; i++) {
		if (!conf_address_is_loopback(conf->listeners[i].address))
			public_addr = conf->listeners[i].address;
		n += conf_check_listener(conf, &conf->listeners[i], out);
	}
	n += conf_check_trusted(conf, out);
	n += conf_check_dkim(conf, out);
	if (conf->accept_any_user && public_addr != NULL)
		n += conf_warn(out,
		               "accept_any_user is true on non-loopback listener %s: any local "
		               "part of local_domains is accepted",
		               public_addr);
	if (public_addr != NULL && conf->user[0] == '\0')
		n += conf_warn(out,
		               "listener %s is not loopback and user is empty: a start as root "
		               "is refused (smtpd, queue, auth and keys need an unprivileged user)",
		               public_addr);
	if (conf->n_local_domains == 0 && conf->n_relay_domains == 0)
		n += conf_warn(out, "local_domains is empty: every recipient will be rejected");
	for (size_t i = 0; i < conf->n_relay_domains; i++) {
		const char *d = conf->relay_domains[i];
		if (conf_is_local_domain(conf, d))
			n += conf_warn(out, "relay domain %s is also local: it is delivered here", d);
		else if (conf_route_for(conf, d)->transport == CONF_TRANSPORT_MX)
			/* hikyaku does not skip itself among the MX hosts (as a
			 * backup MX must, RFC 5321 §5.1): a route says where. */
			n += conf_warn(out,
			               "relay domain %s has no route (nor delivery.smarthost): it is "
			               "delivered by MX, which must not point back here",
			               d);
	}
	if (conf->users_file[0] != '\0' && access(conf->users_file, R_OK) < 0)
		n += conf_warn(out, "users_file %s is not readable: %s", conf->users_file,
		               strerror(errno));
	if (conf->users_file[0] == '\0' && !conf->accept_any_user && conf->n_local_domains > 0)
		n += conf_warn(out, "no users_file and accept_any_user is false: every local "
		                    "recipient will be rejected");
	if (conf->spool_dir[0] != '/')
		n += conf_warn(out, "spool_dir %s is relative to the working directory",
		               conf->spool_dir);
	if (conf->maildir_root[0] != '/')
		n += conf_warn(out, "maildir_root %s is relative to the working directory",
		               conf->maildir_root);
	if (strchr(conf->hostname, '.') == NULL)
		n += conf_warn(out,
		               "hostname %s has no dot: EHLO and the greeting should use a fully "
		               "qualified domain name (RFC 5321 §4.1.1.1)",
		               conf->hostname);
	n += conf_check_delivery(conf, out);
	n += conf_check_filter(conf, out);
	n += conf_check_state(conf, out);
	n += conf_check_http(conf, out);
	return n;
}

/* The form of path to compare: lexical, or its real path (if it exists). */
static int conf_root_form(const char *path, bool resolve, char *out, size_t outlen)
{
	char real[PATH_MAX];
	if (resolve && realpath(path, real) != NULL)
		path = real;
	return fs_path_normalize(path, out, outlen);
}

int conf_check_roots(const struct conf *conf, bool resolve, const char **key_r, char *err,
                     size_t errlen)
{
	static const char *const keys[] = {"spool_dir", "maildir_root", "tls.self_signed_dir",
	                                   "sandbox.dir"};
	/* sandbox.dir: the http process may write it, so it must not hold the
	 * spool or the Maildirs either (issue 13). */
	const char *paths[] = {conf->spool_dir, conf->maildir_root, conf->tls.self_signed_dir,
	                       conf_sandbox_used(conf) ? conf->sandbox.dir : ""};
	char form[4][PATH_MAX];
	for (size_t i = 0; i < 4; i++) {
		if (paths[i][0] == '\0')
			continue;
		if (conf_root_form(paths[i], resolve, form[i], sizeof(form[i])) < 0) {
			*key_r = keys[i];
			snprintf(err, errlen, "%s %s: %s", keys[i], paths[i], strerror(errno));
			return -1;
		}
	}
	/* (a, b): a must not be inside b, nor equal to it */
	static const size_t pairs[][2] = {{0, 1}, {1, 0}, {2, 0}, {2, 1},
	                                  {0, 3}, {3, 0}, {1, 3}, {3, 1}, {2, 3}};
	for (size_t k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
		size_t a = pairs[k][0], b = pairs[k][1];
		if (paths[a][0] == '\0' || paths[b][0] == '\0' || !fs_path_within(form[a], form[b]))
			continue;
		*key_r = keys[a];
		snprintf(err, errlen,
		         "%s %s is inside %s %s: the service user owns %s and everything in it, so "
		         "it could replace a directory there with a symbolic link that root "
		         "would follow at the next start; keep them apart",
		         keys[a], paths[a], keys[b], paths[b], keys[b]);
		return -1;
	}
	return 0;
}

/* auth.mechanisms against the users file: a client uses the strongest
 * mechanism offered and does not retry, so a challenge-response mechanism
 * (which needs a secret of its own scheme, auth/passwd.h) offered to users
 * without one locks them out. */
int conf_check_users(const struct conf *conf, const struct users *users, FILE *out)
{
	static const char *const schemes[] = {"CRYPT", "BLF-CRYPT", "SHA512-CRYPT", "CRAM-MD5",
	                                      "SCRAM-SHA-256"};
	size_t total = 0;
	int n = 0;

	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		total += users_count_scheme(users, schemes[i]);
	for (size_t i = 0; i < conf->auth.n_mechanisms; i++) {
		const char *m = conf->auth.mechanisms[i];
		if (strcasecmp(m, "CRAM-MD5") != 0 && strcasecmp(m, "SCRAM-SHA-256") != 0)
			continue;
		size_t have = users_count_scheme(users, m);
		if (have < total)
			n += conf_warn(
			    out,
			    "auth.mechanisms offers %s but %zu of %zu users with a secret "
			    "have no {%s} secret: clients that choose it (the strongest "
			    "offered) cannot log in as them",
			    m, total - have, total, m);
	}
	return n;
}

/* domain is hostile (RCPT TO, a queued recipient), in either IDN form. */
bool conf_is_local_domain(const struct conf *conf, const char *domain)
{
	char ascii[CONF_DOMAIN_BUF];

	if (conf == NULL || (domain = conf_domain_ascii(domain, ascii, sizeof(ascii))) == NULL)
		return false;
	for (size_t i = 0; i < conf->n_local_domains; i++)
		if (strcasecmp(conf->local_domains[i], domain) == 0)
			return true;
	/* A route with transport local makes its domain local too. */
	for (size_t i = 0; i < conf->n_routes; i++)
		if (conf->routes[i].transport == CONF_TRANSPORT_LOCAL &&
		    strcasecmp(conf->routes[i].domain, domain) == 0)
			return true;
	return false;
}

/* domain is hostile (RCPT TO). A local domain is never a relay domain: its
 * users are ours. */
bool conf_is_relay_domain(const struct conf *conf, const char *domain)
{
	char ascii[CONF_DOMAIN_BUF];
	const char *d;

	if (conf == NULL || (d = conf_domain_ascii(domain, ascii, sizeof(ascii))) == NULL ||
	    conf_is_local_domain(conf, d))
		return false;
	for (size_t i = 0; i < conf->n_relay_domains; i++)
		if (strcmp(conf->relay_domains[i], d) == 0)
			return true;
	return false;
}

bool conf_listener_sandboxed(const struct conf *conf, const struct conf_listener *l)
{
	return conf->sandbox.enabled || (l != NULL && l->sandbox);
}

bool conf_sandbox_used(const struct conf *conf)
{
	if (conf->sandbox.enabled)
		return true;
	for (size_t i = 0; i < conf->n_listeners; i++)
		if (conf->listeners[i].sandbox)
			return true;
	return false;
}
