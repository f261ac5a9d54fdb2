/* tls.c — server-side TLS contexts on OpenSSL 3 (RFC 8446, RFC 5246).
 *
 * Purpose: build one SSL_CTX per configured certificate with a fixed policy,
 * pick a context by SNI (RFC 6066 §3), and generate a self-signed pair for
 * development when no certificate is configured.
 *
 * Processes: the master loads contexts and generates the self-signed pair;
 * smtpd creates SSL objects and describes negotiated sessions.
 *
 * Hostile input: the peer's handshake, parsed by OpenSSL; the only value we
 * look at ourselves is the SNI host name, which is compared byte-wise against
 * the names taken from our own certificates and never logged or stored.
 *
 * Lifetime: the list of contexts (struct tls_server) hangs off the default
 * context's ex_data and is freed by its ex_data free callback, so it lives as
 * long as that context does. Every SSL made by tls_server_new_ssl holds a
 * reference to the default context (its session context, which OpenSSL keeps
 * even after SSL_set_SSL_CTX), so the SNI callback of an SSL whose handshake
 * starts after tls_server_free still finds the list and the other contexts,
 * which the list holds references to. The other contexts do not point back at
 * the list, so there is no reference cycle. */
#include "tls/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "conf/conf.h"
#include "lib/alloc.h"
#include "lib/fsutil.h"
#include "tls/keyproxy.h"

#define TLS_CIPHERS_12 "ECDHE+AESGCM:ECDHE+CHACHA20"
#define TLS_CIPHERSUITES_13                                                                        \
	"TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
#define TLS_GROUPS "X25519:P-256:P-384"
#define TLS_SID_CTX "hikyaku"
#define TLS_SESS_CACHE_SIZE 20480
#define TLS_SESS_TIMEOUT 300 /* seconds */
#define TLS_SELF_SIGNED_DAYS 825
#define TLS_SERIAL_OCTETS 16 /* 128 random bits (RFC 5280 §4.1.2.2 allows 20) */
#define TLS_HOSTNAME_MAX 253

/* One loaded certificate: its context and the names it answers to. */
struct tls_entry {
	SSL_CTX *ctx;
	char **names; /* SAN dNSNames, or the subject CN if there are none */
	size_t n_names;
};

struct tls_server {
	struct tls_entry *entries; /* entries[0] is the default */
	size_t n;
};

int tls_server_set_ticket_keys(struct tls_server *tls, const unsigned char *keys, size_t len)
{
	if (len != TLS_TICKET_KEYS_LEN)
		return -1;
	for (size_t i = 0; tls != NULL && i < tls->n; i++) {
		if (SSL_CTX_set_tlsext_ticket_keys(tls->entries[i].ctx, (void *)keys, (long)len) != 1)
			return -1;
	}
	return 0;
}

static pthread_once_t tls_ex_once = PTHREAD_ONCE_INIT;
static int tls_ex_index = -1; /* written once under pthread_once, then read-only */

static void tls_server_destroy(struct tls_server *tls)
{
	for (size_t i = 0; i < tls->n; i++) {
		struct tls_entry *e = &tls->entries[i];
		for (size_t j = 0; j < e->n_names; j++)
			free(e->names[j]);
		free(e->names);
		/* entries[0].ctx is the context being freed when we are called
		 * from its ex_data callback; it is cleared before that. */
		SSL_CTX_free(e->ctx);
	}
	free(tls->entries);
	free(tls);
}

static void tls_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	struct tls_server *tls = ptr;
	if (tls == NULL)
		return;
	tls->entries[0].ctx = NULL; /* already on its way out */
	tls_server_destroy(tls);
}

static void tls_ex_init(void)
{
	tls_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, tls_ex_free);
}

/* "what: reason" from the first queued OpenSSL error; clears the queue. */
static void tls_err_set(char *err, size_t errlen, const char *what)
{
	char reason[256];
	unsigned long e = ERR_get_error();
	if (e != 0)
		ERR_error_string_n(e, reason, sizeof(reason));
	else
		snprintf(reason, sizeof(reason), "%s",
		         errno != 0 ? strerror(errno) : "unknown error");
	ERR_clear_error();
	snprintf(err, errlen, "%s: %s", what, reason);
}

/* --- Names and SNI --------------------------------------------------------- */

static void tls_entry_add_name(struct tls_entry *e, const unsigned char *p, int len)
{
	if (len <= 0 || memchr(p, '\0', (size_t)len) != NULL)
		return; /* an embedded NUL can only be a mis-issued certificate */
	e->names = xreallocarray(e->names, e->n_names + 1, sizeof(*e->names));
	e->names[e->n_names++] = xstrndup((const char *)p, (size_t)len);
}

/* SAN dNSNames, else the subject CN (RFC 6125 §6.4.4). */
static void tls_entry_collect_names(struct tls_entry *e, X509 *cert)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type == GEN_DNS)
			tls_entry_add_name(e, ASN1_STRING_get0_data(g->d.dNSName),
			                   ASN1_STRING_length(g->d.dNSName));
	}
	GENERAL_NAMES_free(gens);
	if (e->n_names > 0)
		return;
	X509_NAME *subj = X509_get_subject_name(cert);
	int pos = X509_NAME_get_index_by_NID(subj, NID_commonName, -1);
	if (pos < 0)
		return;
	ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, pos));
	unsigned char *utf8 = NULL;
	int len = ASN1_STRING_to_UTF8(&utf8, cn);
	if (len > 0)
		tls_entry_add_name(e, utf8, len);
	OPENSSL_free(utf8);
}

static bool tls_case_eq(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && strncasecmp(a, b, alen) == 0;
}

/* Exact match is 2, a "*.rest" wildcard covering exactly one leftmost label
 * is 1 (RFC 6125 §6.4.3; no partial-label wildcards), no match is 0. */
static int tls_name_match(const char *pattern, const char *host, size_t hlen)
{
	size_t plen = strlen(pattern);
	if (tls_case_eq(pattern, plen, host, hlen))
		return 2;
	if (plen < 3 || pattern[0] != '*' || pattern[1] != '.')
		return 0;
	const char *dot = memchr(host, '.', hlen);
	if (dot == NULL || dot == host)
		return 0; /* "*.example.com" never matches "example.com" or ".x" */
	return tls_case_eq(pattern + 1, plen - 1, dot, hlen - (size_t)(dot - host)) ? 1 : 0;
}

/* Index of the context serving host: an exact name beats a wildcard, an
 * earlier certificate beats a later one, and 0 (the default) if none. */
static size_t tls_server_pick(const struct tls_server *tls, const char *host)
{
	size_t hlen = strlen(host), best = 0;
	int best_score = 0;
	for (size_t i = 0; i < tls->n; i++) {
		for (size_t j = 0; j < tls->entries[i].n_names; j++) {
			int s = tls_name_match(tls->entries[i].names[j], host, hlen);
			if (s > best_score) {
				best_score = s;
				best = i;
			}
		}
	}
	return best;
}

/* RFC 6066 §3: an unknown name is not fatal; we answer with the default
 * certificate rather than unrecognized_name, as clients doing opportunistic
 * STARTTLS expect. */
static int tls_servername_cb(SSL *ssl, int *alert, void *arg)
{
	(void)alert;
	const struct tls_server *tls = arg;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (host == NULL || tls->n < 2)
		return SSL_TLSEXT_ERR_OK;
	size_t i = tls_server_pick(tls, host);
	if (i != 0 && SSL_set_SSL_CTX(ssl, tls->entries[i].ctx) == NULL)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	return SSL_TLSEXT_ERR_OK;
}

/* --- Contexts -------------------------------------------------------------- */

/* The fixed policy of tls.h. */
static int tls_ctx_policy(SSL_CTX *ctx, bool tickets)
{
	uint64_t opts =
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION;
	if (!tickets)
		opts |= SSL_OP_NO_TICKET;
	SSL_CTX_set_options(ctx, opts);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	/* TLS 1.3 resumption needs a NewSessionTicket (stateless, or a stateful
	 * one naming a cache entry when SSL_OP_NO_TICKET is set); "no tickets"
	 * means none at all, so TLS 1.3 then always does a full handshake and
	 * only TLS 1.2 session IDs use the cache. */
	if (!tickets && SSL_CTX_set_num_tickets(ctx, 0) != 1)
		return -1;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERSUITES_13) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, TLS_GROUPS) != 1)
		return -1;
	/* Same id context everywhere: a session started on one certificate's
	 * context can be resumed whichever context SNI lands on. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)TLS_SID_CTX,
	                                   sizeof(TLS_SID_CTX) - 1) != 1)
		return -1;
	SSL_CTX_sess_set_cache_size(ctx, TLS_SESS_CACHE_SIZE);
	SSL_CTX_set_timeout(ctx, TLS_SESS_TIMEOUT);
	return 0;
}

/* SSL_CTX_use_certificate_chain_file from bytes: the leaf, then every
 * further certificate as the chain. */
static int tls_ctx_use_chain_pem(SSL_CTX *ctx, const struct buf *pem)
{
	if (pem->len == 0 || pem->len > INT_MAX)
		return -1;
	BIO *bio = BIO_new_mem_buf(pem->data, (int)pem->len);
	X509 *leaf = bio != NULL ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
	int r = leaf != NULL && SSL_CTX_use_certificate(ctx, leaf) == 1 &&
	                SSL_CTX_clear_chain_certs(ctx) == 1
	            ? 0
	            : -1;
	X509_free(leaf);
	X509 *ca;
	while (r == 0 && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, ca) != 1) {
			X509_free(ca);
			r = -1;
		}
	}
	if (r == 0) { /* the end of the input, or a real error? */
		unsigned long e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
			ERR_clear_error();
		else if (e != 0)
			r = -1;
	}
	BIO_free(bio);
	return r;
}

static int tls_entry_load(struct tls_entry *e, const char *cert, const char *key, bool tickets,
                          char *err, size_t errlen)
{
	ERR_clear_error();
	errno = 0;
	e->ctx = SSL_CTX_new(TLS_server_method());
	if (e->ctx == NULL || tls_ctx_policy(e->ctx, tickets) < 0) {
		tls_err_set(err, errlen, "TLS context");
		return -1;
	}
	if (SSL_CTX_use_certificate_chain_file(e->ctx, cert) != 1) {
		tls_err_set(err, errlen, cert);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(e->ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(e->ctx) != 1) {
		tls_err_set(err, errlen, key);
		return -1;
	}
	tls_entry_collect_names(e, SSL_CTX_get0_certificate(e->ctx));
	return 0;
}

/* One context from a certificate chain in PEM bytes, its private key
 * behind the key proxy (index i in the keys process). */
static int tls_entry_load_proxied(struct tls_entry *e, const struct buf *pem, size_t index,
                                  struct keyproxy_client *kc, bool tickets, char *err,
                                  size_t errlen)
{
	char what[64];
	snprintf(what, sizeof(what), "certificate %zu", index);
	ERR_clear_error();
	errno = 0;
	e->ctx = SSL_CTX_new(TLS_server_method());
	if (e->ctx == NULL || tls_ctx_policy(e->ctx, tickets) < 0) {
		tls_err_set(err, errlen, "TLS context");
		return -1;
	}
	if (tls_ctx_use_chain_pem(e->ctx, pem) < 0) {
		tls_err_set(err, errlen, what);
		return -1;
	}
	const char *error = NULL;
	if (keyproxy_client_use(kc, e->ctx, index, &error) < 0) {
		snprintf(err, errlen, "%s: %s", what, error);
		ERR_clear_error();
		return -1;
	}
	tls_entry_collect_names(e, SSL_CTX_get0_certificate(e->ctx));
	return 0;
}

/* Load n contexts: from the files in certs, or (pems != NULL) from
 * certificate PEMs with keys behind kc. */
static int tls_server_load_any(const struct conf_tls_cert *certs, const struct tls_pem *pems,
                               struct keyproxy_client *kc, size_t n, bool tickets,
                               struct tls_server **tls_r, char *err, size_t errlen)
{
	pthread_once(&tls_ex_once, tls_ex_init);
	if (tls_ex_index < 0) {
		snprintf(err, errlen, "TLS: cannot allocate ex_data index");
		return -1;
	}
	if (n == 0) {
		snprintf(err, errlen, "TLS: no certificate");
		return -1;
	}
	struct tls_server *tls = xcalloc(1, sizeof(*tls));
	tls->entries = xcalloc(n, sizeof(*tls->entries));
	for (; tls->n < n; tls->n++) {
		struct tls_entry *e = &tls->entries[tls->n];
		int r = pems != NULL ? tls_entry_load_proxied(e, &pems[tls->n].cert, tls->n, kc,
		                                              tickets, err, errlen)
		                     : tls_entry_load(e, certs[tls->n].cert, certs[tls->n].key,
		                                      tickets, err, errlen);
		if (r < 0) {
			tls->n++; /* free the partly built one too */
			tls_server_destroy(tls);
			return -1;
		}
	}
	SSL_CTX *def = tls->entries[0].ctx;
	SSL_CTX_set_tlsext_servername_callback(def, tls_servername_cb);
	SSL_CTX_set_tlsext_servername_arg(def, tls);
	if (SSL_CTX_set_ex_data(def, tls_ex_index, tls) != 1) {
		tls_err_set(err, errlen, "TLS context");
		tls_server_destroy(tls);
		return -1;
	}
	*tls_r = tls;
	return 0;
}

static int tls_server_load(const struct conf_tls_cert *certs, size_t n, bool tickets,
                           struct tls_server **tls_r, char *err, size_t errlen)
{
	return tls_server_load_any(certs, NULL, NULL, n, tickets, tls_r, err, errlen);
}

int tls_server_create(const struct conf_tls *conf, const char *hostname, struct tls_server **tls_r,
                      char *err, size_t errlen)
{
	*tls_r = NULL;
	if (conf->n_certs > 0)
		return tls_server_load(conf->certs, conf->n_certs, conf->session_tickets, tls_r,
		                       err, errlen);
	if (conf->self_signed_dir == NULL || conf->self_signed_dir[0] == '\0')
		return 0;
	if (tls_self_signed_ensure(conf->self_signed_dir, hostname, err, errlen) < 0)
		return -1;
	char cert[PATH_MAX], key[PATH_MAX];
	int c = snprintf(cert, sizeof(cert), "%s/cert.pem", conf->self_signed_dir);
	int k = snprintf(key, sizeof(key), "%s/key.pem", conf->self_signed_dir);
	if (c < 0 || (size_t)c >= sizeof(cert) || k < 0 || (size_t)k >= sizeof(key)) {
		snprintf(err, errlen, "%s: path too long", conf->self_signed_dir);
		return -1;
	}
	struct conf_tls_cert pair = {.cert = cert, .key = key};
	return tls_server_load(&pair, 1, conf->session_tickets, tls_r, err, errlen);
}

/* --- Keys in the keys process --------------------------------------------- */

/* path's contents into b (at most TLS_PEM_MAX octets). */
static int tls_file_read(const char *path, struct buf *b, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	/* One allocation of the right size: growing by realloc would leave
	 * copies of a key in freed memory that tls_pems_free cannot wipe. */
	struct stat st;
	if (fstat(fd, &st) == 0 && st.st_size > 0 && st.st_size <= TLS_PEM_MAX)
		(void)buf_reserve(b, (size_t)st.st_size + 1);
	unsigned char chunk[8192];
	ssize_t n;
	int r = 0;
	while (r == 0 && (n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || buf_append(b, chunk, (size_t)n) < 0) {
			snprintf(err, errlen, "%s: %s", path,
			         n < 0 ? strerror(errno) : "larger than a PEM file may be");
			r = -1;
		}
	}
	OPENSSL_cleanse(chunk, sizeof(chunk)); /* it may have held a key */
	close(fd);
	return r;
}

/* The pairs of conf as paths: tls.certificates, or the self-signed pair
 * (generated first when generate is set). 0 with *n_r 0 if TLS is off. */
static int tls_conf_read(const struct conf_tls *conf, const char *hostname, bool generate,
                         bool with_keys, struct tls_pem **pems_r, size_t *n_r, char *err,
                         size_t errlen)
{
	char cert[PATH_MAX], key[PATH_MAX];
	struct conf_tls_cert self = {.cert = cert, .key = key};
	const struct conf_tls_cert *pairs = conf->certs;
	size_t n = conf->n_certs;
	*pems_r = NULL;
	*n_r = 0;
	if (n == 0) {
		const char *dir = conf->self_signed_dir;
		if (dir == NULL || dir[0] == '\0')
			return 0;
		if (generate && tls_self_signed_ensure(dir, hostname, err, errlen) < 0)
			return -1;
		int c = snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
		int k = snprintf(key, sizeof(key), "%s/key.pem", dir);
		if (c < 0 || (size_t)c >= sizeof(cert) || k < 0 || (size_t)k >= sizeof(key)) {
			snprintf(err, errlen, "%s: path too long", dir);
			return -1;
		}
		pairs = &self;
		n = 1;
	}
	struct tls_pem *pems = xcalloc(n, sizeof(*pems));
	for (size_t i = 0; i < n; i++) {
		buf_init(&pems[i].cert, TLS_PEM_MAX);
		buf_init(&pems[i].key, TLS_PEM_MAX);
	}
	for (size_t i = 0; i < n; i++) {
		if (tls_file_read(pairs[i].cert, &pems[i].cert, err, errlen) < 0 ||
		    (with_keys && tls_file_read(pairs[i].key, &pems[i].key, err, errlen) < 0)) {
			tls_pems_free(&pems, n);
			return -1;
		}
	}
	*pems_r = pems;
	*n_r = n;
	return 0;
}

int tls_conf_read_pems(const struct conf_tls *conf, const char *hostname, bool with_keys,
                       struct tls_pem **pems_r, size_t *n_r, char *err, size_t errlen)
{
	return tls_conf_read(conf, hostname, true, with_keys, pems_r, n_r, err, errlen);
}

void tls_pems_free(struct tls_pem **pems, size_t n)
{
	if (*pems == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		struct tls_pem *p = &(*pems)[i];
		if (p->key.data != NULL)
			OPENSSL_cleanse(p->key.data, p->key.len);
		buf_free(&p->key);
		buf_free(&p->cert);
	}
	free(*pems);
	*pems = NULL;
}

int tls_server_create_proxied_pem(const struct tls_pem *pems, size_t n, bool session_tickets,
                                  struct keyproxy_client *kc, struct tls_server **tls_r, char *err,
                                  size_t errlen)
{
	*tls_r = NULL;
	return tls_server_load_any(NULL, pems, kc, n, session_tickets, tls_r, err, errlen);
}

int tls_server_create_proxied(const struct conf_tls *conf, const char *hostname,
                              struct keyproxy_client *kc, struct tls_server **tls_r, char *err,
                              size_t errlen)
{
	struct tls_pem *pems = NULL;
	size_t n = 0;
	*tls_r = NULL;
	if (tls_conf_read(conf, hostname, false, false, &pems, &n, err, errlen) < 0)
		return -1;
	if (n == 0)
		return 0;
	int r =
	    tls_server_create_proxied_pem(pems, n, conf->session_tickets, kc, tls_r, err, errlen);
	tls_pems_free(&pems, n);
	return r;
}

void tls_server_free(struct tls_server **tls)
{
	if (*tls == NULL)
		return;
	SSL_CTX *def = (*tls)->entries[0].ctx;
	*tls = NULL;
	/* Drops our reference; the list goes with the last one (tls_ex_free). */
	SSL_CTX_free(def);
}

SSL *tls_server_new_ssl(struct tls_server *tls)
{
	SSL *ssl = SSL_new(tls->entries[0].ctx);
	if (ssl != NULL)
		SSL_set_accept_state(ssl);
	return ssl;
}

size_t tls_server_count(const struct tls_server *tls)
{
	return tls == NULL ? 0 : tls->n;
}

const char *tls_describe(SSL *ssl, char *out, size_t outlen)
{
	const SSL_CIPHER *c = SSL_get_current_cipher(ssl);
	if (c == NULL) {
		snprintf(out, outlen, "%s", "none");
		return out;
	}
	int alg_bits = 0;
	int bits = SSL_CIPHER_get_bits(c, &alg_bits);
	snprintf(out, outlen, "%s %s (%d/%d bits)", SSL_get_version(ssl), SSL_CIPHER_get_name(c),
	         bits, alg_bits);
	return out;
}

void tls_bufferevent_close_notify(struct bufferevent *bev)
{
	SSL *ssl = bev != NULL ? bufferevent_openssl_get_ssl(bev) : NULL;

	/* after a fatal error OpenSSL is back "in init": SSL_shutdown must not
	 * be called then (SSL_shutdown(3)) */
	if (ssl == NULL || !SSL_is_init_finished(ssl) ||
	    (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) != 0)
		return;
	SSL_set_quiet_shutdown(ssl, 0);
	SSL_shutdown(ssl); /* writes the alert; we do not wait for the peer's */
	ERR_clear_error();
	struct bufferevent *under = bufferevent_get_underlying(bev);
	if (under == NULL)
		return;
	/* a filter: the alert sits in the socket bufferevent's output, which
	 * bufferevent_free would discard */
	evutil_socket_t fd = bufferevent_getfd(under);
	struct evbuffer *out = bufferevent_get_output(under);
	size_t len = evbuffer_get_length(out);
	if (fd < 0 || len == 0)
		return;
	const unsigned char *p = evbuffer_pullup(out, (ev_ssize_t)len);
	ssize_t n = p != NULL ? send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL) : -1;
	if (n > 0)
		evbuffer_drain(out, (size_t)n);
}

/* --- Self-signed pair ------------------------------------------------------ */

/* The host name comes from configuration, but it ends up in a certificate:
 * accept only what a DNS name (or a "*." wildcard) can hold. */
static bool tls_hostname_ok(const char *h)
{
	size_t len = strlen(h);
	if (len == 0 || len > TLS_HOSTNAME_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)h[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
		          (c == '*' && i == 0 && h[1] == '.');
		if (!ok)
			return false;
	}
	return true;
}

static int tls_san_push(GENERAL_NAMES *gens, int type, ASN1_STRING *value)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	if (g == NULL || value == NULL) {
		GENERAL_NAME_free(g);
		ASN1_STRING_free(value);
		return -1;
	}
	GENERAL_NAME_set0_value(g, type, value);
	if (sk_GENERAL_NAME_push(gens, g) <= 0) {
		GENERAL_NAME_free(g);
		return -1;
	}
	return 0;
}

static int tls_san_dns(GENERAL_NAMES *gens, const char *name)
{
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	if (s != NULL && ASN1_STRING_set(s, name, -1) != 1) {
		ASN1_IA5STRING_free(s);
		s = NULL;
	}
	return tls_san_push(gens, GEN_DNS, s);
}

/* RFC 5280 §4.2.1.6: DNS:hostname, DNS:localhost, IP:127.0.0.1, IP:::1. */
static int tls_cert_add_san(X509 *x, const char *hostname)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	int r = -1;
	if (gens == NULL || tls_san_dns(gens, hostname) < 0)
		goto out;
	if (strcasecmp(hostname, "localhost") != 0 && tls_san_dns(gens, "localhost") < 0)
		goto out;
	if (tls_san_push(gens, GEN_IPADD, a2i_IPADDRESS("127.0.0.1")) < 0 ||
	    tls_san_push(gens, GEN_IPADD, a2i_IPADDRESS("::1")) < 0)
		goto out;
	if (X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) != 1)
		goto out;
	r = 0;
out:
	GENERAL_NAMES_free(gens);
	return r;
}

static int tls_cert_add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX v3;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
	int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* RFC 5280 §4.1.2.2: positive, at most 20 octets; 128 random bits. */
static int tls_cert_set_serial(X509 *x)
{
	unsigned char raw[TLS_SERIAL_OCTETS];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	raw[0] &= 0x7f;
	raw[0] |= 0x40; /* keep it 16 octets long and positive */
	BIGNUM *bn = BN_bin2bn(raw, sizeof(raw), NULL);
	int ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -1;
}

static X509 *tls_cert_make(EVP_PKEY *pkey, const char *hostname)
{
	X509 *x = X509_new();
	if (x == NULL)
		return NULL;
	/* ub-common-name is 64 (RFC 5280 Appendix A); a longer host name only
	 * goes in the SAN, which is what clients check anyway. */
	const char *cn = strlen(hostname) <= 64 ? hostname : "localhost";
	X509_NAME *name = X509_get_subject_name(x);
	if (X509_set_version(x, X509_VERSION_3) != 1 || tls_cert_set_serial(x) < 0 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), TLS_SELF_SIGNED_DAYS, 0, NULL) == NULL ||
	    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
	                               (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(x, name) != 1 || X509_set_pubkey(x, pkey) != 1 ||
	    tls_cert_add_san(x, hostname) < 0 ||
	    tls_cert_add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
	    tls_cert_add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
	    tls_cert_add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
	    tls_cert_add_ext(x, NID_subject_key_identifier, "hash") < 0 ||
	    X509_sign(x, pkey, EVP_sha256()) <= 0) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Write path atomically: temp file in the same directory, fsync, rename. */
static int tls_pem_write(const char *path, mode_t mode, EVP_PKEY *pkey, X509 *cert, char *err,
                         size_t errlen)
{
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof(tmp), "%s.tmp.XXXXXX", path);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		snprintf(err, errlen, "%s: path too long", path);
		return -1;
	}
	int fd = mkstemp(tmp); /* created 0600: the key is never readable by others */
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		return -1;
	}
	FILE *fp = fdopen(fd, "w");
	if (fp == NULL) {
		snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	ERR_clear_error();
	errno = 0;
	/* PEM_write_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY") in 3.0. */
	int ok = pkey != NULL ? PEM_write_PrivateKey(fp, pkey, NULL, NULL, 0, NULL, NULL)
	                      : PEM_write_X509(fp, cert);
	if (ok != 1 || fchmod(fd, mode) < 0 || fflush(fp) != 0 || fsync(fd) < 0) {
		tls_err_set(err, errlen, path);
		fclose(fp);
		unlink(tmp);
		return -1;
	}
	if (fclose(fp) != 0 || rename(tmp, path) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int tls_dir_fsync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	close(fd);
	return r;
}

static int tls_self_signed_write(const char *dir, const char *cert_path, const char *key_path,
                                 const char *hostname, char *err, size_t errlen)
{
	ERR_clear_error();
	errno = 0;
	EVP_PKEY *pkey = EVP_EC_gen("P-256");
	X509 *x = pkey != NULL ? tls_cert_make(pkey, hostname) : NULL;
	int r = -1;
	if (x == NULL) {
		tls_err_set(err, errlen, cert_path);
		goto out;
	}
	/* Key first: a crash in between leaves no certificate, so the next
	 * start regenerates both rather than pairing a new cert with no key. */
	if (tls_pem_write(key_path, 0600, pkey, NULL, err, errlen) < 0 ||
	    tls_pem_write(cert_path, 0644, NULL, x, err, errlen) < 0)
		goto out;
	if (tls_dir_fsync(dir) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	return r;
}

int tls_self_signed_ensure(const char *dir, const char *hostname, char *err, size_t errlen)
{
	char cert[PATH_MAX], key[PATH_MAX];
	int c = snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	int k = snprintf(key, sizeof(key), "%s/key.pem", dir);
	if (c < 0 || (size_t)c >= sizeof(cert) || k < 0 || (size_t)k >= sizeof(key)) {
		snprintf(err, errlen, "%s: path too long", dir);
		return -1;
	}
	if (fs_mkdir_p(dir, 0700) < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -1;
	}
	struct stat st;
	if (stat(cert, &st) == 0 && stat(key, &st) == 0)
		return 0;
	if (!tls_hostname_ok(hostname)) {
		snprintf(err, errlen, "%s: host name not usable in a certificate", cert);
		return -1;
	}
	return tls_self_signed_write(dir, cert, key, hostname, err, errlen);
}
