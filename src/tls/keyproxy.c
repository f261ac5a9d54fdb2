/* keyproxy.c — TLS private keys in the `keys` process, signatures on
 * request for smtpd (interface and frame format in keyproxy.h).
 *
 * Processes: the server half (keyproxy_server_*, keyproxy_serve*) runs in
 * `keys`, one thread per smtpd socket; the client half (keyproxy_client_*)
 * runs in smtpd, on whatever thread drives a TLS handshake.
 *
 * Hostile input: in `keys`, every SIGN frame (an smtpd parses the network
 * and may be compromised): decoded by keyproxy_request_decode, bounded by
 * KEYPROXY_FRAME_MAX before anything is read into our buffer, and answered
 * with an error status, never a crash, whatever its content. In smtpd, the
 * SIGNATURE answers are checked just as strictly.
 *
 * How smtpd signs without the key: OpenSSL 3.0 still routes a key whose
 * RSA/EC_KEY carries a non-default method ("foreign" key) through the
 * legacy EVP_PKEY_METHOD, which calls the method's hooks; we put our hooks
 * on a copy of the certificate's public key (OpenSMTPD portable's ca.c does
 * the same). The TLS stack does all padding and hashing itself (PKCS#1 v1.5
 * DigestInfo, RSA-PSS as RSA_NO_PADDING, the ECDSA digest) and leaves only
 * the private-key arithmetic to the hook. These APIs are deprecated in 3.0,
 * hence the suppression below, for this one file. A provider would be the
 * future-proof route; the hooks are smaller and are what 3.0 tests. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "tls/keyproxy.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "ctl/ctl.h"
#include "dauth/dkim.h"
#include "lib/alloc.h"

/* ---- codec ---------------------------------------------------------------- */

enum keyproxy_kind { KEYPROXY_K_U64 = 1, KEYPROXY_K_BYTES };

static uint32_t keyproxy_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int keyproxy_tag_kind(uint8_t tag)
{
	switch (tag) {
	case KEYPROXY_F_ID:
	case KEYPROXY_F_KEY:
	case KEYPROXY_F_OP:
	case KEYPROXY_F_PADDING:
	case KEYPROXY_F_STATUS:
		return KEYPROXY_K_U64;
	case KEYPROXY_F_INPUT:
	case KEYPROXY_F_OUTPUT:
		return KEYPROXY_K_BYTES;
	default:
		return 0;
	}
}

/* One whole datagram as a frame of `type`: the length field must account
 * for exactly the octets received, and each field must be known, of its
 * kind, seen once, and inside the frame. The fields go to fields[] (7
 * distinct tags at most) and their count to *n_r, also those read before an
 * error, so that a refused request's ID can still be echoed. 0 or -1. */
static int keyproxy_frame_fields(const void *p, size_t len, uint8_t type, struct ctl_field *fields,
                                 int *n_r, const char **error_r)
{
	const unsigned char *b = p;
	if (len < CTL_HDR_LEN || len > KEYPROXY_FRAME_MAX) {
		*error_r = "frame size out of bounds";
		return -1;
	}
	if (keyproxy_be32(b) != len - 4) {
		*error_r = "frame length does not match the datagram";
		return -1;
	}
	if (b[4] != type) {
		*error_r = "unexpected frame type";
		return -1;
	}
	struct ctl_frame f = {.type = b[4], .body = b + CTL_HDR_LEN, .body_len = len - CTL_HDR_LEN};
	unsigned seen = 0;
	size_t off = 0;
	*n_r = 0;
	struct ctl_field fld;
	while (ctl_field_next(&f, &off, &fld)) {
		int kind = keyproxy_tag_kind(fld.tag);
		if (kind == 0) {
			*error_r = "unknown field tag";
			return -1;
		}
		if (kind == KEYPROXY_K_U64 && fld.len != 8) {
			*error_r = "number field is not 8 octets";
			return -1;
		}
		unsigned bit = 1u << (fld.tag - KEYPROXY_F_ID);
		if ((seen & bit) != 0) {
			*error_r = "repeated field";
			return -1;
		}
		seen |= bit;
		fields[(*n_r)++] = fld;
	}
	if (off != f.body_len) {
		*error_r = "truncated field";
		return -1;
	}
	return 0;
}

int keyproxy_request_decode(const void *p, size_t len, struct keyproxy_request *req,
                            const char **error_r)
{
	struct ctl_field fields[8];
	memset(req, 0, sizeof(*req));
	int n = 0;
	int r = keyproxy_frame_fields(p, len, KEYPROXY_T_SIGN, fields, &n, error_r);
	unsigned seen = 0;
	for (int i = 0; i < n; i++) {
		const struct ctl_field *fl = &fields[i];
		seen |= 1u << (fl->tag - KEYPROXY_F_ID);
		if (fl->tag == KEYPROXY_F_ID)
			req->id = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_KEY)
			req->key = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_OP)
			req->op = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_PADDING)
			req->padding = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_INPUT) {
			req->input = fl->p;
			req->input_len = fl->len;
		}
	}
	if (r < 0)
		return -1;
	unsigned need =
	    1u << (KEYPROXY_F_ID - KEYPROXY_F_ID) | 1u << (KEYPROXY_F_KEY - KEYPROXY_F_ID) |
	    1u << (KEYPROXY_F_OP - KEYPROXY_F_ID) | 1u << (KEYPROXY_F_INPUT - KEYPROXY_F_ID);
	unsigned allowed = need | 1u << (KEYPROXY_F_PADDING - KEYPROXY_F_ID);
	if ((seen & need) != need || (seen & ~allowed) != 0) {
		*error_r = "missing or foreign field in SIGN";
		return -1;
	}
	if (req->input_len == 0 || req->input_len > KEYPROXY_INPUT_MAX) {
		*error_r = "input length out of bounds";
		return -1;
	}
	return 0;
}

int keyproxy_answer_decode(const void *p, size_t len, struct keyproxy_answer *ans,
                           const char **error_r)
{
	struct ctl_field fields[8];
	memset(ans, 0, sizeof(*ans));
	int n = 0;
	if (keyproxy_frame_fields(p, len, KEYPROXY_T_SIGNATURE, fields, &n, error_r) < 0)
		return -1;
	unsigned seen = 0;
	for (int i = 0; i < n; i++) {
		const struct ctl_field *fl = &fields[i];
		seen |= 1u << (fl->tag - KEYPROXY_F_ID);
		if (fl->tag == KEYPROXY_F_ID)
			ans->id = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_STATUS)
			ans->status = ctl_field_u64(fl);
		else if (fl->tag == KEYPROXY_F_OUTPUT) {
			ans->output = fl->p;
			ans->output_len = fl->len;
		}
	}
	unsigned need =
	    1u << (KEYPROXY_F_ID - KEYPROXY_F_ID) | 1u << (KEYPROXY_F_STATUS - KEYPROXY_F_ID);
	unsigned out = 1u << (KEYPROXY_F_OUTPUT - KEYPROXY_F_ID);
	if ((seen & need) != need || (seen & ~(need | out)) != 0) {
		*error_r = "missing or foreign field in SIGNATURE";
		return -1;
	}
	bool ok = ans->status == KEYPROXY_S_OK;
	if (ok != ((seen & out) != 0) ||
	    (ok && (ans->output_len == 0 || ans->output_len > KEYPROXY_OUTPUT_MAX))) {
		*error_r = "output does not match the status";
		return -1;
	}
	return 0;
}

int keyproxy_request_encode(struct buf *out, const struct keyproxy_request *req)
{
	if (req->input_len == 0 || req->input_len > KEYPROXY_INPUT_MAX)
		return -1;
	size_t start = ctl_frame_begin(out, KEYPROXY_T_SIGN);
	if (ctl_frame_add_u64(out, KEYPROXY_F_ID, req->id) < 0 ||
	    ctl_frame_add_u64(out, KEYPROXY_F_KEY, req->key) < 0 ||
	    ctl_frame_add_u64(out, KEYPROXY_F_OP, req->op) < 0 ||
	    ctl_frame_add_u64(out, KEYPROXY_F_PADDING, req->padding) < 0 ||
	    ctl_frame_add(out, KEYPROXY_F_INPUT, req->input, req->input_len) < 0) {
		out->len = start;
		return -1;
	}
	return ctl_frame_end(out, start, KEYPROXY_FRAME_MAX);
}

int keyproxy_answer_encode(struct buf *out, const struct keyproxy_answer *ans)
{
	bool ok = ans->status == KEYPROXY_S_OK;
	if (ok && (ans->output_len == 0 || ans->output_len > KEYPROXY_OUTPUT_MAX))
		return -1;
	size_t start = ctl_frame_begin(out, KEYPROXY_T_SIGNATURE);
	if (ctl_frame_add_u64(out, KEYPROXY_F_ID, ans->id) < 0 ||
	    ctl_frame_add_u64(out, KEYPROXY_F_STATUS, ans->status) < 0 ||
	    (ok && ctl_frame_add(out, KEYPROXY_F_OUTPUT, ans->output, ans->output_len) < 0)) {
		out->len = start;
		return -1;
	}
	return ctl_frame_end(out, start, KEYPROXY_FRAME_MAX);
}

/* ---- server half ---------------------------------------------------------- */

/* Legacy objects taken once at load, so that signing threads never make
 * OpenSSL build its legacy cache of a provider key concurrently. */
struct keyproxy_key {
	RSA *rsa; /* exactly one of these */
	EC_KEY *ec;
};

/* One generation of keys, immutable; a signature holds a reference, so a
 * reload can replace the set while signatures with the old one finish. */
struct keyproxy_keyset {
	atomic_int refs;
	struct keyproxy_key *keys;
	size_t n;
};

/* The DKIM keys, one generation, immutable, referenced like a keyset. */
struct keyproxy_dkimset {
	atomic_int refs;
	EVP_PKEY **keys;
	size_t n;
};

struct keyproxy_server {
	atomic_int refs;
	atomic_uint_least64_t nsigned;
	pthread_mutex_t lock; /* guards set and dkim (the pointers, not the sets) */
	struct keyproxy_keyset *set;
	struct keyproxy_dkimset *dkim;
};

static void keyproxy_dkimset_unref(struct keyproxy_dkimset *set)
{
	if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++)
		EVP_PKEY_free(set->keys[i]);
	free(set->keys);
	free(set);
}

static void keyproxy_keyset_unref(struct keyproxy_keyset *set)
{
	if (set == NULL || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++) {
		RSA_free(set->keys[i].rsa);
		EC_KEY_free(set->keys[i].ec);
	}
	free(set->keys);
	free(set);
}

static struct keyproxy_keyset *keyproxy_keyset_new(EVP_PKEY *const *keys, size_t n,
                                                   const char **error_r)
{
	if (n > KEYPROXY_KEYS_MAX) {
		*error_r = "too many keys";
		return NULL;
	}
	struct keyproxy_keyset *set = xcalloc(1, sizeof(*set));
	atomic_init(&set->refs, 1);
	set->keys = xcalloc(n > 0 ? n : 1, sizeof(*set->keys));
	for (; set->n < n; set->n++) {
		struct keyproxy_key *k = &set->keys[set->n];
		int id = EVP_PKEY_get_base_id(keys[set->n]);
		if (id == EVP_PKEY_RSA)
			k->rsa = EVP_PKEY_get1_RSA(keys[set->n]);
		else if (id == EVP_PKEY_EC)
			k->ec = EVP_PKEY_get1_EC_KEY(keys[set->n]);
		bool usable = (k->rsa != NULL && RSA_get0_d(k->rsa) != NULL &&
		               (size_t)RSA_size(k->rsa) <= KEYPROXY_OUTPUT_MAX) ||
		              (k->ec != NULL && EC_KEY_get0_private_key(k->ec) != NULL &&
		               (size_t)ECDSA_size(k->ec) <= KEYPROXY_OUTPUT_MAX);
		if (!usable) {
			*error_r = "not an RSA or EC private key of a usable size";
			set->n++;
			keyproxy_keyset_unref(set);
			return NULL;
		}
	}
	return set;
}

static void keyproxy_server_unref(struct keyproxy_server *s)
{
	if (atomic_fetch_sub(&s->refs, 1) != 1)
		return;
	keyproxy_keyset_unref(s->set);
	keyproxy_dkimset_unref(s->dkim);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

struct keyproxy_server *keyproxy_server_create(EVP_PKEY *const *keys, size_t n,
                                               const char **error_r)
{
	struct keyproxy_keyset *set = keyproxy_keyset_new(keys, n, error_r);
	if (set == NULL)
		return NULL;
	struct keyproxy_server *s = xcalloc(1, sizeof(*s));
	atomic_init(&s->refs, 1);
	atomic_init(&s->nsigned, 0);
	pthread_mutex_init(&s->lock, NULL);
	s->set = set;
	return s;
}

int keyproxy_server_update(struct keyproxy_server *server, EVP_PKEY *const *keys, size_t n,
                           const char **error_r)
{
	struct keyproxy_keyset *set = keyproxy_keyset_new(keys, n, error_r);
	if (set == NULL)
		return -1;
	pthread_mutex_lock(&server->lock);
	struct keyproxy_keyset *old = server->set;
	server->set = set;
	pthread_mutex_unlock(&server->lock);
	keyproxy_keyset_unref(old);
	return 0;
}

/* Keys arrive decrypted: an encrypted PEM is refused, never prompted for
 * (OpenSSL's default callback would read the terminal). */
static int keyproxy_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

/* PEM keys into *keys_r (n of them, to be freed with keyproxy_pkeys_free). */
static int keyproxy_pems_read(const unsigned char *const *pems, const size_t *lens, size_t n,
                              EVP_PKEY ***keys_r, char *err, size_t errlen)
{
	EVP_PKEY **keys = xcalloc(n > 0 ? n : 1, sizeof(*keys));
	*keys_r = keys;
	ERR_clear_error();
	for (size_t i = 0; i < n; i++) {
		BIO *bio = lens[i] <= INT_MAX ? BIO_new_mem_buf(pems[i], (int)lens[i]) : NULL;
		keys[i] = bio != NULL
		              ? PEM_read_bio_PrivateKey(bio, NULL, keyproxy_no_passphrase, NULL)
		              : NULL;
		BIO_free(bio);
		if (keys[i] == NULL) {
			char reason[256] = "unreadable";
			unsigned long e = ERR_get_error();
			if (e != 0)
				ERR_error_string_n(e, reason, sizeof(reason));
			snprintf(err, errlen, "key %zu: %s", i, reason);
			ERR_clear_error();
			return -1;
		}
	}
	return 0;
}

static void keyproxy_pkeys_free(EVP_PKEY **keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		EVP_PKEY_free(keys[i]);
	free(keys);
}

int keyproxy_server_create_pem(const unsigned char *const *pems, const size_t *lens, size_t n,
                               struct keyproxy_server **server_r, char *err, size_t errlen)
{
	EVP_PKEY **keys = NULL;
	const char *error = NULL;
	*server_r = NULL;
	if (keyproxy_pems_read(pems, lens, n, &keys, err, errlen) == 0) {
		*server_r = keyproxy_server_create(keys, n, &error);
		if (*server_r == NULL)
			snprintf(err, errlen, "keys: %s", error);
	}
	keyproxy_pkeys_free(keys, n);
	return *server_r != NULL ? 0 : -1;
}

int keyproxy_server_update_pem(struct keyproxy_server *server, const unsigned char *const *pems,
                               const size_t *lens, size_t n, char *err, size_t errlen)
{
	EVP_PKEY **keys = NULL;
	const char *error = NULL;
	int r = -1;
	if (keyproxy_pems_read(pems, lens, n, &keys, err, errlen) == 0) {
		r = keyproxy_server_update(server, keys, n, &error);
		if (r < 0)
			snprintf(err, errlen, "keys: %s", error);
	}
	keyproxy_pkeys_free(keys, n);
	return r;
}

void keyproxy_server_free(struct keyproxy_server **server)
{
	if (*server == NULL)
		return;
	keyproxy_server_unref(*server);
	*server = NULL;
}

uint64_t keyproxy_server_signed(const struct keyproxy_server *server)
{
	return atomic_load(&server->nsigned);
}

static uint64_t keyproxy_rsa(RSA *rsa, const struct keyproxy_request *req, unsigned char *out,
                             size_t *out_len)
{
	int pad;
	if (req->padding == KEYPROXY_PAD_PKCS1)
		pad = RSA_PKCS1_PADDING;
	else if (req->padding == KEYPROXY_PAD_NONE)
		pad = RSA_NO_PADDING;
	else
		return KEYPROXY_S_BAD_OP;
	/* RSA_private_encrypt checks the input against the modulus size and
	 * the padding's room itself; out holds RSA_size (checked at load). */
	int n = RSA_private_encrypt((int)req->input_len, req->input, out, rsa, pad);
	if (n <= 0)
		return KEYPROXY_S_FAILED;
	*out_len = (size_t)n;
	return KEYPROXY_S_OK;
}

static uint64_t keyproxy_sign_with(const struct keyproxy_key *k, const struct keyproxy_request *req,
                                   unsigned char *out, size_t *out_len)
{
	uint64_t st = KEYPROXY_S_BAD_OP;
	if (req->op == KEYPROXY_OP_RSA_PRIV_ENC && k->rsa != NULL) {
		st = keyproxy_rsa(k->rsa, req, out, out_len);
	} else if (req->op == KEYPROXY_OP_ECDSA_SIGN && k->ec != NULL) {
		unsigned int len = 0;
		st = ECDSA_sign(0, req->input, (int)req->input_len, out, &len, k->ec) == 1
		         ? KEYPROXY_S_OK
		         : KEYPROXY_S_FAILED;
		*out_len = len;
	}
	ERR_clear_error(); /* this thread's queue; nobody reads it here */
	return st;
}

/* DKIM: EVP_PKEY_sign / EVP_DigestSign on a key shared by the serving
 * threads: OpenSSL 3 provider keys are safe for concurrent use once loaded. */
static uint64_t keyproxy_dkim(struct keyproxy_server *s, const struct keyproxy_request *req,
                              unsigned char *out, size_t *out_len)
{
	pthread_mutex_lock(&s->lock);
	struct keyproxy_dkimset *set = s->dkim;
	if (set != NULL)
		atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&s->lock);
	uint64_t st = KEYPROXY_S_NO_KEY;
	unsigned char sig[DKIM_SIG_MAX];
	size_t len = 0;
	const char *error = NULL;
	if (set != NULL && req->key < set->n) {
		st = KEYPROXY_S_BAD_OP;
		if (req->input_len == 32 && (size_t)EVP_PKEY_get_size(set->keys[req->key]) <= KEYPROXY_OUTPUT_MAX)
			st = dkim_pkey_sign(set->keys[req->key], req->input, req->input_len, sig, &len,
			                    &error) == 0 && len <= KEYPROXY_OUTPUT_MAX
			         ? KEYPROXY_S_OK
			         : KEYPROXY_S_FAILED;
	}
	if (st == KEYPROXY_S_OK) {
		memcpy(out, sig, len);
		*out_len = len;
		atomic_fetch_add(&s->nsigned, 1);
	}
	OPENSSL_cleanse(sig, sizeof(sig));
	keyproxy_dkimset_unref(set);
	ERR_clear_error();
	return st;
}

int keyproxy_server_set_dkim_pem(struct keyproxy_server *server, const unsigned char *const *pems,
                                 const size_t *lens, size_t n, char *err, size_t errlen)
{
	if (n > KEYPROXY_KEYS_MAX) {
		snprintf(err, errlen, "too many DKIM keys");
		return -1;
	}
	EVP_PKEY **keys = NULL;
	if (keyproxy_pems_read(pems, lens, n, &keys, err, errlen) < 0) {
		keyproxy_pkeys_free(keys, n);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		enum dkim_alg alg;
		if (dkim_pkey_alg(keys[i], &alg) < 0 ||
		    (size_t)EVP_PKEY_get_size(keys[i]) > KEYPROXY_OUTPUT_MAX) {
			snprintf(err, errlen, "DKIM key %zu: not an RSA (1024..8192 bits) or Ed25519 key", i);
			keyproxy_pkeys_free(keys, n);
			return -1;
		}
		/* One signature now: a key that cannot sign (or a sandbox that
		 * stops OpenSSL) shows at start, not at the first message. */
		unsigned char probe[32] = {0}, sig[DKIM_SIG_MAX];
		size_t len = 0;
		const char *error = NULL;
		if (dkim_pkey_sign(keys[i], probe, sizeof(probe), sig, &len, &error) < 0) {
			snprintf(err, errlen, "DKIM key %zu: %s", i, error);
			keyproxy_pkeys_free(keys, n);
			ERR_clear_error();
			return -1;
		}
	}
	struct keyproxy_dkimset *set = xcalloc(1, sizeof(*set));
	atomic_init(&set->refs, 1);
	set->keys = keys;
	set->n = n;
	pthread_mutex_lock(&server->lock);
	struct keyproxy_dkimset *old = server->dkim;
	server->dkim = set;
	pthread_mutex_unlock(&server->lock);
	keyproxy_dkimset_unref(old);
	return 0;
}

static uint64_t keyproxy_sign(struct keyproxy_server *s, const struct keyproxy_request *req,
                              unsigned char *out, size_t *out_len)
{
	if (req->op == KEYPROXY_OP_DKIM_SIGN)
		return keyproxy_dkim(s, req, out, out_len);
	pthread_mutex_lock(&s->lock);
	struct keyproxy_keyset *set = s->set;
	atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&s->lock);
	uint64_t st = req->key < set->n
	                  ? keyproxy_sign_with(&set->keys[req->key], req, out, out_len)
	                  : KEYPROXY_S_NO_KEY;
	keyproxy_keyset_unref(set);
	if (st == KEYPROXY_S_OK)
		atomic_fetch_add(&s->nsigned, 1);
	return st;
}

void keyproxy_server_answer(struct keyproxy_server *s, const void *p, size_t len, struct buf *out)
{
	struct keyproxy_request req;
	struct keyproxy_answer ans = {.status = KEYPROXY_S_MALFORMED};
	unsigned char sig[KEYPROXY_OUTPUT_MAX];
	size_t sig_len = 0;
	const char *error = NULL;
	if (len <= KEYPROXY_FRAME_MAX) {
		int r = keyproxy_request_decode(p, len, &req, &error);
		ans.id = req.id;
		if (r == 0)
			ans.status = keyproxy_sign(s, &req, sig, &sig_len);
	}
	ans.output = sig;
	ans.output_len = sig_len;
	buf_reset(out);
	(void)keyproxy_answer_encode(out, &ans); /* bounded: never fails */
	OPENSSL_cleanse(sig, sizeof(sig));
}

int keyproxy_serve(struct keyproxy_server *server, int fd)
{
	unsigned char in[KEYPROXY_FRAME_MAX + 1];
	struct buf out;
	int r = -1;
	buf_init(&out, KEYPROXY_FRAME_MAX);
	for (;;) {
		/* MSG_TRUNC: the datagram's real length, so an oversized one is
		 * seen as such and answered, while we keep only our bound. */
		ssize_t n = recv(fd, in, sizeof(in), MSG_TRUNC);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) { /* an empty datagram ends the connection too */
			r = n == 0 ? 0 : -1;
			break;
		}
		keyproxy_server_answer(server, in, (size_t)n, &out);
		ssize_t w;
		do
			w = send(fd, out.data, out.len, MSG_NOSIGNAL);
		while (w < 0 && errno == EINTR);
		if (w < 0) {
			r = errno == EPIPE || errno == ECONNRESET ? 0 : -1;
			break;
		}
	}
	buf_free(&out);
	return r;
}

struct keyproxy_thread_arg {
	struct keyproxy_server *server;
	int fd;
};

static void *keyproxy_thread_main(void *p)
{
	struct keyproxy_thread_arg *a = p;
	(void)keyproxy_serve(a->server, a->fd);
	close(a->fd);
	keyproxy_server_unref(a->server);
	free(a);
	return NULL;
}

int keyproxy_serve_thread(struct keyproxy_server *server, int fd, pthread_t *thread_r)
{
	struct keyproxy_thread_arg *a = xcalloc(1, sizeof(*a));
	a->server = server;
	a->fd = fd;
	atomic_fetch_add(&server->refs, 1);
	pthread_attr_t attr;
	pthread_t t;
	int e = pthread_attr_init(&attr);
	if (e == 0 && thread_r == NULL)
		e = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (e == 0)
		e = pthread_create(&t, &attr, keyproxy_thread_main, a);
	if (e == 0 && thread_r != NULL)
		*thread_r = t;
	pthread_attr_destroy(&attr);
	if (e != 0) {
		atomic_fetch_sub(&server->refs, 1); /* the caller still holds one */
		free(a);
		errno = e;
		return -1;
	}
	return 0;
}

/* ---- client half ---------------------------------------------------------- */

struct keyproxy_client {
	atomic_int refs;
	pthread_mutex_t lock; /* one round trip on the socket at a time */
	int fd;
	int timeout_ms;
	uint64_t next_id; /* under lock */
};

/* What a proxied RSA or EC_KEY knows: where to ask, and for which key. */
struct keyproxy_ref {
	struct keyproxy_client *client;
	uint64_t index;
};

static void keyproxy_client_unref(struct keyproxy_client *c)
{
	if (c == NULL || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&c->lock);
	close(c->fd);
	free(c);
}

struct keyproxy_client *keyproxy_client_create(int fd)
{
	struct keyproxy_client *c = xcalloc(1, sizeof(*c));
	atomic_init(&c->refs, 1);
	pthread_mutex_init(&c->lock, NULL);
	c->fd = fd;
	c->timeout_ms = KEYPROXY_TIMEOUT_MS;
	return c;
}

void keyproxy_client_free(struct keyproxy_client **client)
{
	keyproxy_client_unref(*client);
	*client = NULL;
}

void keyproxy_client_reconnect(struct keyproxy_client *client, int fd)
{
	pthread_mutex_lock(&client->lock);
	close(client->fd);
	client->fd = fd;
	pthread_mutex_unlock(&client->lock);
}

void keyproxy_client_set_timeout(struct keyproxy_client *client, int timeout_ms)
{
	pthread_mutex_lock(&client->lock);
	client->timeout_ms = timeout_ms;
	pthread_mutex_unlock(&client->lock);
}

static int64_t keyproxy_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for the answer to id; answers to earlier ids (whose callers timed
 * out) are dropped. Copies OUTPUT into out: at most cap octets, or exactly
 * cap if exact. -1 with *why_r. */
static int keyproxy_client_wait(struct keyproxy_client *c, uint64_t id, unsigned char *out,
                                size_t cap, bool exact, size_t *out_len, const char **why_r)
{
	unsigned char in[KEYPROXY_FRAME_MAX + 1];
	int64_t deadline = keyproxy_now_ms() + c->timeout_ms;
	for (;;) {
		int64_t left = deadline - keyproxy_now_ms();
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		int pr = left > 0 ? poll(&pfd, 1, (int)left) : 0;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			*why_r = pr == 0 ? "no answer in time" : "poll failed";
			return -1;
		}
		ssize_t n = recv(c->fd, in, sizeof(in), MSG_TRUNC | MSG_DONTWAIT);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n <= 0) {
			*why_r = "gone";
			return -1;
		}
		struct keyproxy_answer ans;
		const char *error = NULL;
		if ((size_t)n > KEYPROXY_FRAME_MAX ||
		    keyproxy_answer_decode(in, (size_t)n, &ans, &error) < 0) {
			*why_r = "malformed answer";
			return -1;
		}
		if (ans.id != id)
			continue;
		if (ans.status != KEYPROXY_S_OK) {
			*why_r =
			    ans.status == KEYPROXY_S_NO_KEY ? "no such key" : "signing refused";
			return -1;
		}
		if (ans.output_len > cap || (exact && ans.output_len != cap)) {
			*why_r = "answer of the wrong length";
			return -1;
		}
		memcpy(out, ans.output, ans.output_len);
		*out_len = ans.output_len;
		return 0;
	}
}

/* One SIGN round trip. A failure goes on OpenSSL's error queue, so that
 * the failed handshake's log line says why. */
static int keyproxy_call(const struct keyproxy_ref *ref, uint64_t op, uint64_t padding,
                         const unsigned char *in, size_t in_len, unsigned char *out, size_t cap,
                         bool exact, size_t *out_len)
{
	struct keyproxy_client *c = ref->client;
	struct keyproxy_request req = {
	    .key = ref->index, .op = op, .padding = padding, .input = in, .input_len = in_len};
	const char *why = "request out of bounds";
	struct buf b;
	int r = -1;
	buf_init(&b, KEYPROXY_FRAME_MAX);
	pthread_mutex_lock(&c->lock);
	req.id = ++c->next_id;
	if (keyproxy_request_encode(&b, &req) == 0) {
		if (send(c->fd, b.data, b.len, MSG_NOSIGNAL) == (ssize_t)b.len)
			r = keyproxy_client_wait(c, req.id, out, cap, exact, out_len, &why);
		else
			why = "gone";
	}
	pthread_mutex_unlock(&c->lock);
	buf_free(&b);
	if (r < 0)
		ERR_raise_data(ERR_LIB_USER, ERR_R_OPERATION_FAIL, "keys process: %s", why);
	return r;
}

/* ex_data of the proxied RSA and EC_KEY objects: a keyproxy_ref. */
static void keyproxy_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                              void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	struct keyproxy_ref *ref = ptr;
	if (ref == NULL)
		return;
	keyproxy_client_unref(ref->client);
	free(ref);
}

/* Should OpenSSL ever duplicate a proxied key, the copy gets its own ref
 * (a copied pointer would be freed twice). */
static int keyproxy_ref_dup(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                            long argl, void *argp)
{
	(void)to;
	(void)from;
	(void)idx;
	(void)argl;
	(void)argp;
	struct keyproxy_ref *ref = *from_d;
	if (ref == NULL)
		return 1;
	struct keyproxy_ref *copy = xmemdup(ref, sizeof(*ref));
	atomic_fetch_add(&copy->client->refs, 1);
	*from_d = copy;
	return 1;
}

/* Written once under pthread_once, then read-only. */
static pthread_once_t keyproxy_once = PTHREAD_ONCE_INIT;
static RSA_METHOD *keyproxy_rsa_meth;
static EC_KEY_METHOD *keyproxy_ec_meth;
static int keyproxy_rsa_idx = -1;
static int keyproxy_ec_idx = -1;

static int keyproxy_rsa_priv_enc(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                                 int padding)
{
	const struct keyproxy_ref *ref = RSA_get_ex_data(rsa, keyproxy_rsa_idx);
	uint64_t pad = padding == RSA_PKCS1_PADDING ? KEYPROXY_PAD_PKCS1
	               : padding == RSA_NO_PADDING  ? KEYPROXY_PAD_NONE
	                                            : UINT64_MAX;
	size_t size = (size_t)RSA_size(rsa), len = 0;
	if (ref == NULL || pad == UINT64_MAX || flen <= 0 ||
	    keyproxy_call(ref, KEYPROXY_OP_RSA_PRIV_ENC, pad, from, (size_t)flen, to, size, true,
	                  &len) < 0)
		return -1;
	return (int)len;
}

/* Decryption needs the key and our TLS policy (ECDHE only) never asks. */
static int keyproxy_rsa_priv_dec(int flen, const unsigned char *from, unsigned char *to, RSA *rsa,
                                 int padding)
{
	(void)flen;
	(void)from;
	(void)to;
	(void)rsa;
	(void)padding;
	return -1;
}

static int keyproxy_ec_sign(int type, const unsigned char *dgst, int dlen, unsigned char *sig,
                            unsigned int *siglen, const BIGNUM *kinv, const BIGNUM *r, EC_KEY *ec)
{
	(void)type;
	(void)kinv;
	(void)r;
	const struct keyproxy_ref *ref = EC_KEY_get_ex_data(ec, keyproxy_ec_idx);
	size_t len = 0;
	int cap = ECDSA_size(ec);
	if (ref == NULL || dlen <= 0 || cap <= 0 ||
	    keyproxy_call(ref, KEYPROXY_OP_ECDSA_SIGN, 0, dgst, (size_t)dlen, sig, (size_t)cap,
	                  false, &len) < 0)
		return 0;
	*siglen = (unsigned int)len;
	return 1;
}

static ECDSA_SIG *keyproxy_ec_sign_sig(const unsigned char *dgst, int dlen, const BIGNUM *kinv,
                                       const BIGNUM *r, EC_KEY *ec)
{
	unsigned char der[KEYPROXY_OUTPUT_MAX];
	unsigned int len = 0;
	if (ECDSA_size(ec) > (int)sizeof(der) ||
	    keyproxy_ec_sign(0, dgst, dlen, der, &len, kinv, r, ec) != 1)
		return NULL;
	const unsigned char *p = der;
	return d2i_ECDSA_SIG(NULL, &p, len);
}

static void keyproxy_methods_init(void)
{
	RSA_METHOD *rm = RSA_meth_dup(RSA_PKCS1_OpenSSL());
	if (rm != NULL && (RSA_meth_set1_name(rm, "hikyaku keyproxy") != 1 ||
	                   RSA_meth_set_priv_enc(rm, keyproxy_rsa_priv_enc) != 1 ||
	                   RSA_meth_set_priv_dec(rm, keyproxy_rsa_priv_dec) != 1)) {
		RSA_meth_free(rm);
		rm = NULL;
	}
	EC_KEY_METHOD *em = EC_KEY_METHOD_new(EC_KEY_OpenSSL());
	if (em != NULL) {
		int (*setup)(EC_KEY *, BN_CTX *, BIGNUM **, BIGNUM **) = NULL;
		EC_KEY_METHOD_get_sign(EC_KEY_OpenSSL(), NULL, &setup, NULL);
		EC_KEY_METHOD_set_sign(em, keyproxy_ec_sign, setup, keyproxy_ec_sign_sig);
	}
	keyproxy_rsa_meth = rm;
	keyproxy_ec_meth = em;
	keyproxy_rsa_idx = RSA_get_ex_new_index(0, NULL, NULL, keyproxy_ref_dup, keyproxy_ref_free);
	keyproxy_ec_idx =
	    EC_KEY_get_ex_new_index(0, NULL, NULL, keyproxy_ref_dup, keyproxy_ref_free);
}

static struct keyproxy_ref *keyproxy_ref_new(struct keyproxy_client *client, uint64_t index)
{
	struct keyproxy_ref *ref = xcalloc(1, sizeof(*ref));
	ref->client = client;
	ref->index = index;
	atomic_fetch_add(&client->refs, 1);
	return ref;
}

/* A public-only RSA copy of pub with our method; the ref goes with it. */
static EVP_PKEY *keyproxy_pkey_rsa(struct keyproxy_client *client, EVP_PKEY *pub, uint64_t index)
{
	const RSA *src = EVP_PKEY_get0_RSA(pub);
	RSA *rsa = src != NULL ? RSAPublicKey_dup(src) : NULL;
	EVP_PKEY *pkey = EVP_PKEY_new();
	if (rsa == NULL || pkey == NULL || RSA_set_method(rsa, keyproxy_rsa_meth) != 1)
		goto fail;
	struct keyproxy_ref *ref = keyproxy_ref_new(client, index);
	if (RSA_set_ex_data(rsa, keyproxy_rsa_idx, ref) != 1) {
		keyproxy_ref_free(NULL, ref, NULL, 0, 0, NULL);
		goto fail;
	}
	RSA_set_flags(rsa, RSA_FLAG_EXT_PKEY);
	if (EVP_PKEY_assign_RSA(pkey, rsa) != 1)
		goto fail;
	return pkey;
fail:
	RSA_free(rsa);
	EVP_PKEY_free(pkey);
	return NULL;
}

static EVP_PKEY *keyproxy_pkey_ec(struct keyproxy_client *client, EVP_PKEY *pub, uint64_t index)
{
	const EC_KEY *src = EVP_PKEY_get0_EC_KEY(pub);
	EC_KEY *ec = EC_KEY_new();
	EVP_PKEY *pkey = EVP_PKEY_new();
	if (src == NULL || ec == NULL || pkey == NULL ||
	    EC_KEY_set_method(ec, keyproxy_ec_meth) != 1 ||
	    EC_KEY_set_group(ec, EC_KEY_get0_group(src)) != 1 ||
	    EC_KEY_set_public_key(ec, EC_KEY_get0_public_key(src)) != 1)
		goto fail;
	struct keyproxy_ref *ref = keyproxy_ref_new(client, index);
	if (EC_KEY_set_ex_data(ec, keyproxy_ec_idx, ref) != 1) {
		keyproxy_ref_free(NULL, ref, NULL, 0, 0, NULL);
		goto fail;
	}
	if (EVP_PKEY_assign_EC_KEY(pkey, ec) != 1)
		goto fail;
	return pkey;
fail:
	EC_KEY_free(ec);
	EVP_PKEY_free(pkey);
	return NULL;
}

EVP_PKEY *keyproxy_client_pkey(struct keyproxy_client *client, X509 *cert, uint64_t index,
                               const char **error_r)
{
	pthread_once(&keyproxy_once, keyproxy_methods_init);
	if (keyproxy_rsa_meth == NULL || keyproxy_ec_meth == NULL || keyproxy_rsa_idx < 0 ||
	    keyproxy_ec_idx < 0) {
		*error_r = "cannot set up the key proxy methods";
		return NULL;
	}
	if (index >= KEYPROXY_KEYS_MAX) {
		*error_r = "key index out of range";
		return NULL;
	}
	EVP_PKEY *pub = cert != NULL ? X509_get0_pubkey(cert) : NULL;
	EVP_PKEY *pkey = NULL;
	int id = pub != NULL ? EVP_PKEY_get_base_id(pub) : EVP_PKEY_NONE;
	if (id == EVP_PKEY_RSA)
		pkey = keyproxy_pkey_rsa(client, pub, index);
	else if (id == EVP_PKEY_EC)
		pkey = keyproxy_pkey_ec(client, pub, index);
	else {
		*error_r = "certificate key is neither RSA nor EC";
		return NULL;
	}
	if (pkey == NULL)
		*error_r = "cannot build the proxied key";
	return pkey;
}

/* One signature through the proxy, checked with the certificate's public
 * key. SSL_CTX_check_private_key cannot tell, since our key was made from
 * that very certificate: this catches a keys process holding another key
 * at that index (a reload out of step, a misordered configuration). */
static bool keyproxy_probe(EVP_PKEY *pkey, EVP_PKEY *pub)
{
	static const unsigned char msg[] = "hikyaku keyproxy probe";
	unsigned char sig[KEYPROXY_OUTPUT_MAX];
	size_t sig_len = sizeof(sig);
	EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
	bool ok = s != NULL && v != NULL &&
	          EVP_DigestSignInit(s, NULL, EVP_sha256(), NULL, pkey) == 1 &&
	          EVP_DigestSign(s, sig, &sig_len, msg, sizeof(msg) - 1) == 1 &&
	          EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, pub) == 1 &&
	          EVP_DigestVerify(v, sig, sig_len, msg, sizeof(msg) - 1) == 1;
	EVP_MD_CTX_free(s);
	EVP_MD_CTX_free(v);
	return ok;
}

int keyproxy_client_use(struct keyproxy_client *client, SSL_CTX *ctx, uint64_t index,
                        const char **error_r)
{
	X509 *cert = SSL_CTX_get0_certificate(ctx);
	EVP_PKEY *pkey = keyproxy_client_pkey(client, cert, index, error_r);
	if (pkey == NULL)
		return -1;
	int r = -1;
	if (!keyproxy_probe(pkey, X509_get0_pubkey(cert)))
		*error_r =
		    "the keys process did not sign for this certificate (other key, or gone)";
	else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		*error_r = "proxied key refused by the TLS context";
	else
		r = 0;
	EVP_PKEY_free(pkey); /* ctx holds its own reference */
	ERR_clear_error();
	return r;
}

/* ---- DKIM (client half) ---------------------------------------------------- */

int keyproxy_client_dkim_sign(struct keyproxy_client *client, uint64_t index,
                              const unsigned char *hash, size_t hash_len, unsigned char *out,
                              size_t cap, size_t *out_len, const char **error_r)
{
	struct keyproxy_ref ref = {.client = client, .index = index};
	if (hash_len != 32) {
		*error_r = "not a SHA-256 hash";
		return -1;
	}
	if (keyproxy_call(&ref, KEYPROXY_OP_DKIM_SIGN, 0, hash, hash_len, out, cap, false,
	                  out_len) < 0) {
		/* keyproxy_call put the reason on OpenSSL's queue, for TLS */
		*error_r = "keys process refused or did not answer the DKIM signature";
		ERR_clear_error();
		return -1;
	}
	return 0;
}

void keyproxy_dkim_sign(void *ctx, const struct dkim_sign_key *key, const unsigned char *hash,
                        size_t hash_len,
                        void (*done)(void *, const unsigned char *, size_t, const char *),
                        void *done_arg)
{
	unsigned char sig[KEYPROXY_OUTPUT_MAX];
	size_t len = 0;
	const char *error = NULL;
	if (keyproxy_client_dkim_sign(ctx, key->key_id, hash, hash_len, sig, sizeof(sig), &len,
	                              &error) < 0)
		done(done_arg, NULL, 0, error);
	else
		done(done_arg, sig, len, NULL);
}
