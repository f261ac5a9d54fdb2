/* sasl.c — server side of SMTP AUTH (RFC 4954) mechanisms as pure state
 * machines: PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login-00),
 * CRAM-MD5 (RFC 2195) and SCRAM-SHA-256 (RFC 5802, RFC 7677).
 *
 * Runs in the auth service (auth/authd.c) on its event loop. Every client response is hostile: bounded
 * by SASL_RESPONSE_MAX, NUL octets refused where the grammar has none, every
 * field length-checked before it is copied. Nothing is logged here; the
 * password (PLAIN, LOGIN) and keys (SCRAM) are wiped with passwd_wipe() as
 * soon as they are no longer needed and again when the server is freed.
 *
 * User enumeration: a user who is unknown, or has no secret this mechanism
 * can use, is treated exactly like one who has. PLAIN and LOGIN hand the
 * worker a dummy secret of the users file's most common scheme and cost
 * (built once, sasl_ctx_create), so the answer takes as long as for most
 * known users; SCRAM answers with a fake salt (a keyed hash of the name, the
 * key derived from the file's secrets: stable across probes and restarts,
 * unpredictable without the file) and the common iteration count, and fails
 * at the proof; CRAM-MD5 fails at the response, after the same exchange. */
#include "auth/sasl.h"

#include "auth/passwd.h"
#include "auth/users.h"
#include "lib/alloc.h"
#include "lib/strutil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define SASL_FIELD_MAX 255 /* RFC 4616 §2: authzid, authcid, passwd */
#define SASL_NONCE_MAX 256 /* our bound on a SCRAM client nonce */
#define SASL_SNONCE_RAW 18 /* server nonce octets: 24 base64 characters */
#define SASL_SCRAM_FAKE_ITER 4096

/* {CRYPT} yescrypt hash of a random string nobody knows, verified in place of
 * an unknown user's secret when the users file gives no better dummy. */
#define SASL_DUMMY_STORED                                                                          \
	"{CRYPT}$y$j9T$qXWLl5FembOvGn6dugh8U.$.Kun9rmg8KmG1ra3Z3ReASbnIycb3s7yVCfNcZM8KEB"

enum sasl_state {
	SASL_S_START,       /* nothing received yet */
	SASL_S_PLAIN,       /* sent the empty challenge, waiting for the message */
	SASL_S_LOGIN_USER,  /* sent "Username:" */
	SASL_S_LOGIN_PASS,  /* sent "Password:" */
	SASL_S_CRAM,        /* sent the challenge */
	SASL_S_SCRAM_FIRST, /* sent the empty challenge, waiting for client-first */
	SASL_S_SCRAM_FINAL, /* sent server-first, waiting for client-final */
	SASL_S_SCRAM_ACK,   /* sent server-final, waiting for the empty response */
	SASL_S_VERIFY,      /* password out for passwd_verify() */
	SASL_S_DONE,        /* a terminal result was returned */
};

struct sasl_ctx {
	const struct users *users;
	char *hostname;
	char *dummy_stored;         /* "{SCHEME}..." of the most common class */
	unsigned usable;            /* SASL_MECH_BIT()s every user with a secret can use */
	unsigned scram_iter;        /* iterations of the fake SCRAM keys */
	unsigned char fake_key[32]; /* HMAC key of the fake SCRAM salts */
};

struct sasl_server {
	enum sasl_mech mech;
	enum sasl_state state;
	const struct sasl_ctx *ctx;
	const struct users *users;
	char *hostname;
	char *test_nonce;
	char *user;              /* authcid, lowercased as the users table compares */
	char *password;          /* PLAIN/LOGIN until verified */
	char *stored;            /* copy of the secret to verify against (or the dummy) */
	bool known;              /* the user exists and has a secret for this mechanism */
	char *challenge;         /* CRAM-MD5 */
	char *gs2_header;        /* SCRAM: as the client sent it */
	char *client_first_bare; /* SCRAM */
	char *server_first;      /* SCRAM */
	char *nonce;             /* SCRAM: client nonce + server nonce */
	struct passwd_scram scram;
};

static const char *const sasl_mech_names[] = {
    [SASL_PLAIN] = "PLAIN",
    [SASL_LOGIN] = "LOGIN",
    [SASL_CRAM_MD5] = "CRAM-MD5",
    [SASL_SCRAM_SHA_256] = "SCRAM-SHA-256",
};

int sasl_mech_parse(const char *name, size_t len, enum sasl_mech *r)
{
	for (size_t i = 0; i < sizeof(sasl_mech_names) / sizeof(sasl_mech_names[0]); i++) {
		if (str_case_eq(name, len, sasl_mech_names[i])) {
			*r = (enum sasl_mech)i;
			return 0;
		}
	}
	return -1;
}

const char *sasl_mech_name(enum sasl_mech m)
{
	if ((size_t)m < sizeof(sasl_mech_names) / sizeof(sasl_mech_names[0]))
		return sasl_mech_names[m];
	return "UNKNOWN";
}

/* ---- the context: what is prepared once per users file ---- */

struct sasl_class {
	char *name;  /* passwd_cost_class() */
	size_t user; /* index of one user whose secret is of this class */
};

static int sasl_class_cmp(const void *a, const void *b)
{
	const struct sasl_class *x = a, *y = b;
	return strcmp(x->name, y->name);
}

/* The secret whose scheme and cost (passwd_cost_class) most users share,
 * among all usable secrets (only: PASSWD_UNKNOWN) or those of one scheme;
 * NULL if there is none. Ties go to the class that sorts first, so the
 * choice does not depend on the order of the file. */
static const char *sasl_common_secret(const struct users *users, enum passwd_scheme only)
{
	size_t n = users_count(users), m = 0, best = 0, best_run = 0;
	struct sasl_class *cls = xcalloc(n + 1, sizeof(*cls));
	const char *r = NULL;

	for (size_t i = 0; i < n; i++) {
		const char *sec = users_secret_at(users, i);
		bool want = only == PASSWD_UNKNOWN || passwd_scheme_of(sec) == only;
		char *name = sec != NULL && want ? passwd_cost_class(sec) : NULL;
		if (name != NULL)
			cls[m++] = (struct sasl_class){.name = name, .user = i};
	}
	if (m > 0)
		qsort(cls, m, sizeof(*cls), sasl_class_cmp);
	for (size_t i = 0, run = 0; i < m; i++) {
		run = i > 0 && strcmp(cls[i].name, cls[i - 1].name) == 0 ? run + 1 : 1;
		if (run > best_run) {
			best_run = run;
			best = i;
		}
	}
	if (m > 0)
		r = users_secret_at(users, cls[best].user);
	for (size_t i = 0; i < m; i++)
		free(cls[i].name);
	free(cls);
	return r;
}

/* The mechanisms every user with a usable secret can log in with: PLAIN
 * and LOGIN verify a password against any scheme; CRAM-MD5 and
 * SCRAM-SHA-256 need a secret of their own scheme (passwd.h). A client picks
 * the strongest mechanism offered and does not try another, so offering one
 * that some user cannot use locks that user out. */
static void sasl_ctx_scan(struct sasl_ctx *c, EVP_MD_CTX *md)
{
	size_t total = 0, cram = 0, scram = 0, n = users_count(c->users);
	struct passwd_scram k;

	for (size_t i = 0; i < n; i++) {
		const char *sec = users_secret_at(c->users, i);
		enum passwd_scheme sc = passwd_scheme_of(sec);
		if (sc == PASSWD_UNKNOWN)
			continue;
		total++;
		cram += sc == PASSWD_CRAM_MD5;
		scram += sc == PASSWD_SCRAM_SHA_256;
		EVP_DigestUpdate(md, sec, strlen(sec) + 1);
	}
	c->usable = SASL_MECH_BIT(SASL_PLAIN) | SASL_MECH_BIT(SASL_LOGIN);
	if (cram > 0 && cram == total)
		c->usable |= SASL_MECH_BIT(SASL_CRAM_MD5);
	if (scram > 0 && scram == total)
		c->usable |= SASL_MECH_BIT(SASL_SCRAM_SHA_256);
	c->dummy_stored = NULL;
	const char *common = sasl_common_secret(c->users, PASSWD_UNKNOWN);
	if (common != NULL)
		c->dummy_stored = passwd_dummy_like(common);
	/* fake SCRAM keys show the iteration count real ones most often have */
	common = sasl_common_secret(c->users, PASSWD_SCRAM_SHA_256);
	if (common != NULL && passwd_scram_parse(common, &k) == 0) {
		c->scram_iter = k.iterations;
		passwd_wipe(&k, sizeof(k));
	}
}

struct sasl_ctx *sasl_ctx_create(const struct users *users, const char *hostname)
{
	struct sasl_ctx *c = xcalloc(1, sizeof(*c));
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	c->users = users;
	c->hostname = xstrdup(hostname != NULL && hostname[0] != '\0' ? hostname : "localhost");
	c->scram_iter = SASL_SCRAM_FAKE_ITER;
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, "hikyaku scram fake salt", 24) != 1)
		abort();
	sasl_ctx_scan(c, md);
	if (EVP_DigestFinal_ex(md, c->fake_key, NULL) != 1)
		abort();
	EVP_MD_CTX_free(md);
	if (c->dummy_stored == NULL)
		c->dummy_stored = xstrdup(SASL_DUMMY_STORED);
	return c;
}

void sasl_ctx_free(struct sasl_ctx **cp)
{
	struct sasl_ctx *c = *cp;

	if (c == NULL)
		return;
	passwd_wipe(c->fake_key, sizeof(c->fake_key));
	free(c->dummy_stored);
	free(c->hostname);
	free(c);
	*cp = NULL;
}

unsigned sasl_ctx_usable(const struct sasl_ctx *c)
{
	return c->usable;
}

const char *sasl_ctx_dummy_stored(const struct sasl_ctx *c)
{
	return c->dummy_stored;
}

struct sasl_server *sasl_server_create(enum sasl_mech mech, const struct sasl_ctx *ctx)
{
	struct sasl_server *s = xcalloc(1, sizeof(*s));

	s->mech = mech;
	s->state = SASL_S_START;
	s->ctx = ctx;
	s->users = ctx->users;
	s->hostname = xstrdup(ctx->hostname);
	return s;
}

void sasl_server_set_nonce_for_test(struct sasl_server *s, const char *nonce)
{
	free(s->test_nonce);
	s->test_nonce = xstrdup(nonce);
}

static void sasl_free_secret(char **p)
{
	if (*p != NULL) {
		passwd_wipe(*p, strlen(*p));
		free(*p);
		*p = NULL;
	}
}

void sasl_server_free(struct sasl_server **sp)
{
	struct sasl_server *s = *sp;

	if (s == NULL)
		return;
	sasl_free_secret(&s->password);
	sasl_free_secret(&s->stored);
	passwd_wipe(&s->scram, sizeof(s->scram));
	free(s->hostname);
	free(s->test_nonce);
	free(s->user);
	free(s->challenge);
	free(s->gs2_header);
	free(s->client_first_bare);
	free(s->server_first);
	free(s->nonce);
	free(s);
	*sp = NULL;
}

const char *sasl_server_user(const struct sasl_server *s)
{
	return s->user;
}

bool sasl_server_midway(const struct sasl_server *s)
{
	return s->state != SASL_S_VERIFY && s->state != SASL_S_DONE;
}

const char *sasl_server_password(const struct sasl_server *s)
{
	return s->state == SASL_S_VERIFY ? s->password : NULL;
}

const char *sasl_server_stored(const struct sasl_server *s)
{
	return s->state == SASL_S_VERIFY ? s->stored : NULL;
}

/* Every terminal result goes through here: later steps are MALFORMED. */
static enum sasl_result sasl_end(struct sasl_server *s, enum sasl_result r)
{
	if (r != SASL_R_CONTINUE && r != SASL_R_VERIFY) {
		s->state = SASL_S_DONE;
		sasl_free_secret(&s->password);
	}
	return r;
}

static enum sasl_result sasl_send(struct sasl_server *s, struct buf *out, const char *text,
                                  enum sasl_state next)
{
	if (buf_append_str(out, text) < 0)
		return sasl_end(s, SASL_R_FAIL);
	s->state = next;
	return SASL_R_CONTINUE;
}

/* An authentication identity: 1..255 octets, no NUL or control character
 * (it ends up in logs and in Received:). */
static bool sasl_name_ok(const unsigned char *p, size_t len)
{
	if (len == 0 || len > SASL_FIELD_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

static void sasl_set_user(struct sasl_server *s, const unsigned char *p, size_t len)
{
	free(s->user);
	s->user = xstrndup((const char *)p, len);
	str_lower(s->user);
}

/* ---- PLAIN and LOGIN: a password to verify off-loop ---- */

static enum sasl_result sasl_verify_password(struct sasl_server *s, const unsigned char *pw,
                                             size_t len)
{
	const char *secret = users_secret(s->users, s->user);

	sasl_free_secret(&s->password);
	sasl_free_secret(&s->stored);
	s->password = xstrndup((const char *)pw, len);
	s->known = secret != NULL && passwd_scheme_of(secret) != PASSWD_UNKNOWN;
	s->stored = xstrdup(s->known ? secret : s->ctx->dummy_stored);
	s->state = SASL_S_VERIFY;
	return SASL_R_VERIFY;
}

/* RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd */
static enum sasl_result sasl_plain(struct sasl_server *s, const unsigned char *in, size_t len)
{
	const unsigned char *nul1, *nul2, *authcid, *pw;
	size_t azlen, aclen, pwlen;

	if (len == 0 || (nul1 = memchr(in, '\0', len)) == NULL)
		return sasl_end(s, SASL_R_MALFORMED);
	authcid = nul1 + 1;
	nul2 = memchr(authcid, '\0', len - (size_t)(authcid - in));
	if (nul2 == NULL)
		return sasl_end(s, SASL_R_MALFORMED);
	pw = nul2 + 1;
	azlen = (size_t)(nul1 - in);
	aclen = (size_t)(nul2 - authcid);
	pwlen = len - (size_t)(pw - in);
	if (azlen > SASL_FIELD_MAX || !sasl_name_ok(authcid, aclen) || pwlen == 0 ||
	    pwlen > SASL_FIELD_MAX || memchr(pw, '\0', pwlen) != NULL ||
	    (azlen > 0 && !sasl_name_ok(in, azlen)))
		return sasl_end(s, SASL_R_MALFORMED);
	sasl_set_user(s, authcid, aclen);
	/* We do not let one user act for another (no proxy authorization). */
	if (azlen > 0 && !str_case_eq((const char *)in, azlen, s->user))
		return sasl_end(s, SASL_R_FAIL);
	return sasl_verify_password(s, pw, pwlen);
}

static enum sasl_result sasl_login_user(struct sasl_server *s, const unsigned char *in, size_t len,
                                        struct buf *out)
{
	if (!sasl_name_ok(in, len))
		return sasl_end(s, SASL_R_MALFORMED);
	sasl_set_user(s, in, len);
	return sasl_send(s, out, "Password:", SASL_S_LOGIN_PASS);
}

static enum sasl_result sasl_login_pass(struct sasl_server *s, const unsigned char *in, size_t len)
{
	if (len == 0 || len > SASL_FIELD_MAX || memchr(in, '\0', len) != NULL)
		return sasl_end(s, SASL_R_MALFORMED);
	return sasl_verify_password(s, in, len);
}

enum sasl_result sasl_server_verified(struct sasl_server *s, bool ok)
{
	if (s->state != SASL_S_VERIFY)
		return sasl_end(s, SASL_R_MALFORMED);
	sasl_free_secret(&s->stored);
	return sasl_end(s, ok && s->known ? SASL_R_OK : SASL_R_FAIL);
}

/* ---- CRAM-MD5 (RFC 2195 §2) ---- */

static enum sasl_result sasl_cram_challenge(struct sasl_server *s, struct buf *out)
{
	char text[SASL_FIELD_MAX + 64];
	uint64_t r;

	if (s->test_nonce != NULL) {
		snprintf(text, sizeof(text), "<%s@%s>", s->test_nonce, s->hostname);
	} else {
		if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
			return sasl_end(s, SASL_R_FAIL);
		/* msg-id form of RFC 2195 §2: "<random.timestamp@hostname>" */
		snprintf(text, sizeof(text), "<%llu.%lld@%s>", (unsigned long long)r,
		         (long long)time(NULL), s->hostname);
	}
	s->challenge = xstrdup(text);
	return sasl_send(s, out, s->challenge, SASL_S_CRAM);
}

/* response = user SP digest, digest 32 lowercase hex digits */
static enum sasl_result sasl_cram_response(struct sasl_server *s, const unsigned char *in,
                                           size_t len)
{
	const size_t hexlen = 32;

	if (len < hexlen + 2 || in[len - hexlen - 1] != ' ')
		return sasl_end(s, SASL_R_MALFORMED);
	const char *hex = (const char *)in + len - hexlen;
	for (size_t i = 0; i < hexlen; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
			return sasl_end(s, SASL_R_MALFORMED);
	if (!sasl_name_ok(in, len - hexlen - 1))
		return sasl_end(s, SASL_R_MALFORMED);
	sasl_set_user(s, in, len - hexlen - 1);

	/* An unknown user and one without a {CRAM-MD5} secret fail like a
	 * wrong digest: the same reply, counted the same (no enumeration). */
	const char *secret = users_secret(s->users, s->user);
	int ok = secret != NULL && passwd_scheme_of(secret) == PASSWD_CRAM_MD5 &&
	         passwd_cram_md5_check(secret, (const unsigned char *)s->challenge,
	                               strlen(s->challenge), hex, hexlen);
	return sasl_end(s, ok ? SASL_R_OK : SASL_R_FAIL);
}

/* ---- SCRAM-SHA-256 (RFC 5802 §5, §7; RFC 7677) ---- */

/* saslname (RFC 5802 §5.1): ',' and '=' arrive as "=2C" and "=3D"; any other
 * '=' fails. Writes at most SASL_FIELD_MAX octets to out. */
static int sasl_scram_unescape(const char *in, size_t len, char *out, size_t *len_r)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];
		if (c == '=') {
			if (i + 2 >= len)
				return -1;
			if (in[i + 1] == '2' && in[i + 2] == 'C')
				c = ',';
			else if (in[i + 1] == '3' && in[i + 2] == 'D')
				c = '=';
			else
				return -1;
			i += 2;
		}
		if (o == SASL_FIELD_MAX)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	*len_r = o;
	return 0;
}

/* Next "x=value" attribute at *p (before end): its letter and value. */
static int sasl_scram_attr(const char **p, const char *end, char *name_r, const char **val_r,
                           size_t *len_r)
{
	const char *a = *p, *comma;

	if (end - a < 2 || a[1] != '=')
		return -1;
	*name_r = a[0];
	*val_r = a + 2;
	comma = memchr(a + 2, ',', (size_t)(end - a - 2));
	*len_r = (size_t)((comma != NULL ? comma : end) - (a + 2));
	*p = comma != NULL ? comma + 1 : end;
	return comma != NULL && comma + 1 == end ? -1 : 0; /* no trailing ',' */
}

/* Optional extensions: attr-val = ALPHA "=" value; ignored (RFC 5802 §7),
 * but "m" is a mandatory extension we do not know, so it fails. */
static int sasl_scram_extensions(const char *p, const char *end)
{
	char name;
	const char *val;
	size_t vlen;

	while (p < end) {
		if (sasl_scram_attr(&p, end, &name, &val, &vlen) < 0 || name == 'm' ||
		    !((name >= 'a' && name <= 'z') || (name >= 'A' && name <= 'Z')))
			return -1;
	}
	return 0;
}

static bool sasl_scram_nonce_ok(const char *p, size_t len)
{
	if (len == 0 || len > SASL_NONCE_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
			return false;
	return true;
}

/* gs2-header = gs2-cbind-flag "," [ authzid ] ","; we offer no -PLUS
 * mechanism, so "p=" (channel binding in use) is a protocol error and "y"
 * (client could bind but thinks we cannot) is fine (RFC 5802 §6). */
static int sasl_scram_gs2(const char *msg, const char *end, char *authzid, size_t *azlen_r,
                          const char **bare_r)
{
	const char *p = msg;

	*azlen_r = 0;
	if (end - p < 2 || (p[0] != 'n' && p[0] != 'y') || p[1] != ',')
		return -1;
	p += 2;
	if (p < end && *p == ',') {
		*bare_r = p + 1;
		return 0;
	}
	if (end - p < 2 || p[0] != 'a' || p[1] != '=')
		return -1;
	const char *comma = memchr(p + 2, ',', (size_t)(end - p - 2));
	if (comma == NULL || comma == p + 2 ||
	    sasl_scram_unescape(p + 2, (size_t)(comma - p - 2), authzid, azlen_r) < 0)
		return -1;
	*bare_r = comma + 1;
	return 0;
}

/* The user's keys, or for a user who is unknown or has no usable
 * {SCRAM-SHA-256} secret the same-looking fakes: a salt that is stable per
 * name (a second probe sees the same one), keyed so that nobody without the
 * users file can tell it from a real one, the common iteration count, and a
 * random StoredKey no proof matches. Returns SASL_R_CONTINUE to go on. */
static enum sasl_result sasl_scram_keys(struct sasl_server *s)
{
	const char *secret = users_secret(s->users, s->user);
	unsigned char digest[SHA256_DIGEST_LENGTH];
	unsigned int mdlen = 0;

	if (secret != NULL && passwd_scheme_of(secret) == PASSWD_SCRAM_SHA_256 &&
	    passwd_scram_parse(secret, &s->scram) == 0) {
		s->known = true;
		return SASL_R_CONTINUE;
	}
	s->known = false;
	s->scram.iterations = s->ctx->scram_iter;
	s->scram.salt_len = 16;
	if (HMAC(EVP_sha256(), s->ctx->fake_key, sizeof(s->ctx->fake_key),
	         (const unsigned char *)s->user, strlen(s->user), digest, &mdlen) == NULL ||
	    RAND_bytes(s->scram.stored_key, sizeof(s->scram.stored_key)) != 1)
		return SASL_R_FAIL;
	memcpy(s->scram.salt, digest, s->scram.salt_len);
	return SASL_R_CONTINUE;
}

static enum sasl_result sasl_scram_server_first(struct sasl_server *s, const char *cnonce,
                                                size_t cnlen, struct buf *out)
{
	unsigned char raw[SASL_SNONCE_RAW];
	char snonce[40], salt[100];
	const char *sn = snonce;

	if (s->test_nonce != NULL) {
		sn = s->test_nonce;
	} else {
		if (RAND_bytes(raw, sizeof(raw)) != 1)
			return sasl_end(s, SASL_R_FAIL);
		passwd_b64_encode(raw, sizeof(raw), snonce, sizeof(snonce));
	}
	passwd_b64_encode(s->scram.salt, s->scram.salt_len, salt, sizeof(salt));
	size_t n = cnlen + strlen(sn) + 1;
	s->nonce = xmalloc(n);
	snprintf(s->nonce, n, "%.*s%s", (int)cnlen, cnonce, sn);
	n = strlen(s->nonce) + strlen(salt) + 32;
	s->server_first = xmalloc(n);
	snprintf(s->server_first, n, "r=%s,s=%s,i=%u", s->nonce, salt, s->scram.iterations);
	return sasl_send(s, out, s->server_first, SASL_S_SCRAM_FINAL);
}

/* client-first-message = gs2-header [reserved-mext ","] username "," nonce
 *                        ["," extensions]                    (RFC 5802 §7) */
static enum sasl_result sasl_scram_first(struct sasl_server *s, const unsigned char *in, size_t len,
                                         struct buf *out)
{
	const char *msg = (const char *)in, *end = msg + len, *bare, *p, *val, *cnonce;
	char authzid[SASL_FIELD_MAX + 1], user[SASL_FIELD_MAX + 1], name;
	size_t azlen, ulen, vlen, cnlen;

	if (len == 0 || memchr(in, '\0', len) != NULL ||
	    sasl_scram_gs2(msg, end, authzid, &azlen, &bare) < 0)
		return sasl_end(s, SASL_R_MALFORMED);
	p = bare;
	if (sasl_scram_attr(&p, end, &name, &val, &vlen) < 0 || name != 'n' ||
	    sasl_scram_unescape(val, vlen, user, &ulen) < 0 ||
	    !sasl_name_ok((const unsigned char *)user, ulen))
		return sasl_end(s, SASL_R_MALFORMED); /* also "m=" (reserved-mext) */
	if (sasl_scram_attr(&p, end, &name, &cnonce, &cnlen) < 0 || name != 'r' ||
	    !sasl_scram_nonce_ok(cnonce, cnlen) || sasl_scram_extensions(p, end) < 0)
		return sasl_end(s, SASL_R_MALFORMED);
	sasl_set_user(s, (const unsigned char *)user, ulen);
	if (azlen > 0 && !str_case_eq(authzid, azlen, s->user))
		return sasl_end(s, SASL_R_FAIL);

	enum sasl_result r = sasl_scram_keys(s);
	if (r != SASL_R_CONTINUE)
		return sasl_end(s, r);
	s->gs2_header = xstrndup(msg, (size_t)(bare - msg));
	s->client_first_bare = xstrndup(bare, (size_t)(end - bare));
	return sasl_scram_server_first(s, cnonce, cnlen, out);
}

/* ClientKey = proof XOR HMAC(StoredKey, AuthMessage); the proof holds if
 * H(ClientKey) == StoredKey (RFC 5802 §3). On success writes the
 * ServerSignature. */
static bool sasl_scram_check(struct sasl_server *s, const char *final_bare, size_t fblen,
                             const unsigned char proof[32], unsigned char server_sig[32])
{
	unsigned char sig[32], key[32], h[32];
	unsigned int mdlen = 0;
	struct buf am;
	bool ok = false;

	buf_init(&am, 0);
	if (buf_printf(&am, "%s,%s,", s->client_first_bare, s->server_first) < 0 ||
	    buf_append(&am, final_bare, fblen) < 0)
		goto out;
	if (HMAC(EVP_sha256(), s->scram.stored_key, 32, am.data, am.len, sig, &mdlen) == NULL)
		goto out;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = proof[i] ^ sig[i];
	SHA256(key, sizeof(key), h);
	ok = CRYPTO_memcmp(h, s->scram.stored_key, sizeof(h)) == 0 && s->known;
	if (ok && HMAC(EVP_sha256(), s->scram.server_key, 32, am.data, am.len, server_sig,
	               &mdlen) == NULL)
		ok = false;
out:
	passwd_wipe(key, sizeof(key));
	buf_free(&am);
	return ok;
}

/* client-final-message = channel-binding "," nonce ["," extensions] "," proof
 * (RFC 5802 §7); proof is last, and everything before ",p=" is signed. */
static enum sasl_result sasl_scram_final(struct sasl_server *s, const unsigned char *in, size_t len,
                                         struct buf *out)
{
	const char *msg = (const char *)in, *end = msg + len, *p = msg, *cb, *nonce, *pr;
	unsigned char cbind[1024], proof[40], server_sig[32]; /* gs2-header <= 770 */
	char name, v[64];
	size_t cblen, nlen, prlen, rawlen, prooflen;

	if (len == 0 || memchr(in, '\0', len) != NULL)
		return sasl_end(s, SASL_R_MALFORMED);
	const char *last = memrchr(msg, ',', len);
	if (last == NULL || end - last < 3 || last[1] != 'p' || last[2] != '=')
		return sasl_end(s, SASL_R_MALFORMED);
	pr = last + 3;
	prlen = (size_t)(end - pr);
	if (sasl_scram_attr(&p, last, &name, &cb, &cblen) < 0 || name != 'c' ||
	    sasl_scram_attr(&p, last, &name, &nonce, &nlen) < 0 || name != 'r' ||
	    sasl_scram_extensions(p, last) < 0 ||
	    passwd_b64_decode(cb, cblen, cbind, sizeof(cbind), &rawlen) < 0 ||
	    passwd_b64_decode(pr, prlen, proof, sizeof(proof), &prooflen) < 0 || prooflen != 32)
		return sasl_end(s, SASL_R_MALFORMED);
	/* c= must repeat the gs2-header (no channel binding data follows it),
	 * r= the nonce we sent (RFC 5802 §5.1). */
	if (rawlen != strlen(s->gs2_header) || memcmp(cbind, s->gs2_header, rawlen) != 0 ||
	    nlen != strlen(s->nonce) || memcmp(nonce, s->nonce, nlen) != 0)
		return sasl_end(s, SASL_R_FAIL);
	if (!sasl_scram_check(s, msg, (size_t)(last - msg), proof, server_sig))
		return sasl_end(s, SASL_R_FAIL);
	memcpy(v, "v=", 2);
	passwd_b64_encode(server_sig, sizeof(server_sig), v + 2, sizeof(v) - 2);
	return sasl_send(s, out, v, SASL_S_SCRAM_ACK);
}

/* ---- dispatch ---- */

static enum sasl_result sasl_first_challenge(struct sasl_server *s, struct buf *out)
{
	switch (s->mech) {
	case SASL_PLAIN:
		return sasl_send(s, out, "", SASL_S_PLAIN);
	case SASL_LOGIN:
		return sasl_send(s, out, "Username:", SASL_S_LOGIN_USER);
	case SASL_CRAM_MD5:
		return sasl_cram_challenge(s, out);
	case SASL_SCRAM_SHA_256:
		return sasl_send(s, out, "", SASL_S_SCRAM_FIRST);
	}
	return sasl_end(s, SASL_R_MALFORMED);
}

/* RFC 4954 §4: an initial response is the client's first message. CRAM-MD5
 * is server-first, so it cannot have one. */
static enum sasl_state sasl_initial_state(enum sasl_mech mech)
{
	switch (mech) {
	case SASL_PLAIN:
		return SASL_S_PLAIN;
	case SASL_LOGIN:
		return SASL_S_LOGIN_USER;
	case SASL_SCRAM_SHA_256:
		return SASL_S_SCRAM_FIRST;
	case SASL_CRAM_MD5:
		break;
	}
	return SASL_S_DONE;
}

enum sasl_result sasl_server_step(struct sasl_server *s, bool has_initial, const unsigned char *in,
                                  size_t len, struct buf *out)
{
	static const unsigned char empty[1] = {0};

	if (len > SASL_RESPONSE_MAX || (in == NULL && len > 0))
		return sasl_end(s, SASL_R_MALFORMED);
	if (in == NULL)
		in = empty;
	buf_reset(out);
	if (s->state == SASL_S_START) {
		if (!has_initial)
			return sasl_first_challenge(s, out);
		s->state = sasl_initial_state(s->mech);
	}
	switch (s->state) {
	case SASL_S_PLAIN:
		return sasl_plain(s, in, len);
	case SASL_S_LOGIN_USER:
		return sasl_login_user(s, in, len, out);
	case SASL_S_LOGIN_PASS:
		return sasl_login_pass(s, in, len);
	case SASL_S_CRAM:
		return sasl_cram_response(s, in, len);
	case SASL_S_SCRAM_FIRST:
		return sasl_scram_first(s, in, len, out);
	case SASL_S_SCRAM_FINAL:
		return sasl_scram_final(s, in, len, out);
	case SASL_S_SCRAM_ACK: /* RFC 5802 §5: the client answers v= with nothing */
		return sasl_end(s, len == 0 ? SASL_R_OK : SASL_R_MALFORMED);
	case SASL_S_START:
	case SASL_S_VERIFY:
	case SASL_S_DONE:
		break;
	}
	return sasl_end(s, SASL_R_MALFORMED);
}
