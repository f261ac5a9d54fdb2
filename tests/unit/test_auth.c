/* test_auth.c — stored secrets (passwd.c), the SASL server mechanisms
 * (sasl.c) and `hikyaku user` (usercmd.c). Known vectors: RFC 2195 (CRAM-MD5),
 * RFC 7677 (SCRAM-SHA-256), a `doveadm pw` {CRAM-MD5} hash and a Dovecot
 * {SCRAM-SHA-256} hash, and crypt(3) strings made once with libxcrypt. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/passwd.h"
#include "auth/sasl.h"
#include "auth/usercmd.h"
#include "auth/users.h"
#include "lib/buf.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* "correct horse" under three crypt(3) schemes, made once with libxcrypt. */
#define SHA512_CORRECT                                                                             \
	"{SHA512-CRYPT}$6$hikyakusalt$MHZG2BBPmvqxeOoE9xusXD0GZmO3aPktVbIc1pL3a/vF1H5KJ6vEgt"      \
	"c7jyb3z5zWPimS6dxaUkBAEPciwTDrr/"
#define YESCRYPT_CORRECT                                                                           \
	"{CRYPT}$y$j9T$LdJMENpBABJJ3hIHjB1Bi.$CbmXE/O/0bCHlsAzIaBSSe6Q31ZVeM4OxkjSOnAQ3C6"
#define BCRYPT_CORRECT "{BLF-CRYPT}$2b$05$abcdefghijklmnopqrstuuHNbAKRhpaujgo33bRWs.NLUTJO3lOy2"
/* `doveadm pw -p password` (postfixadmin's test suite) */
#define DOVECOT_CRAM_PASSWORD                                                                      \
	"{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e2740"
/* Dovecot {SCRAM-SHA-256} for "maiPeeja" (a passlib-based test suite) */
#define DOVECOT_SCRAM_MAIPEEJA                                                                     \
	"{SCRAM-SHA-256}4096,2LdpQgqFUFMdV63SS9XgnQ==,"                                            \
	"1lqxQc6gqLHXXuycpPlLyvb8AUSuxBfmZlqaJGzFDOI=,"                                            \
	"j+dSYp5a1uwOD6HLuzKvnJSmGeKJuJCLQmN80MCEeS0="
/* RFC 2195 §2: "tanstaaftanstaaf" as a {CRAM-MD5} context */
#define CRAM_TANSTAAF "{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b"
/* RFC 7677 §3: "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096 */
#define SCRAM_PENCIL                                                                               \
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"                                            \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                                            \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* ---- passwd ---- */

struct verify_case {
	const char *stored;
	const char *password;
	int want;
};

static void test_passwd_verify_vectors(void **state)
{
	(void)state;
	static const struct verify_case cases[] = {
	    {SHA512_CORRECT, "correct horse", 1},
	    {SHA512_CORRECT, "correct horsE", 0},
	    {SHA512_CORRECT, "", 0},
	    {YESCRYPT_CORRECT, "correct horse", 1},
	    {YESCRYPT_CORRECT, "correct horse ", 0},
	    {BCRYPT_CORRECT, "correct horse", 1},
	    {BCRYPT_CORRECT, "Correct horse", 0},
	    {"{sha512-crypt}$6$hikyakusalt$MHZG2BBPmvqxeOoE9xusXD0GZmO3aPktVbIc1pL3a/vF1H5KJ6vE"
	     "gtc7jyb3z5zWPimS6dxaUkBAEPciwTDrr/",
	     "correct horse", 1},
	    {DOVECOT_CRAM_PASSWORD, "password", 1},
	    {DOVECOT_CRAM_PASSWORD, "passwort", 0},
	    {CRAM_TANSTAAF, "tanstaaftanstaaf", 1},
	    {DOVECOT_SCRAM_MAIPEEJA, "maiPeeja", 1},
	    {DOVECOT_SCRAM_MAIPEEJA, "maipeeja", 0},
	    {SCRAM_PENCIL, "pencil", 1},
	    {SCRAM_PENCIL, "pencil2", 0},
	    /* unusable stored strings never verify */
	    {"{PLAIN}secret", "secret", 0},
	    {"secret", "secret", 0},
	    {"{CRYPT}", "", 0},
	    {"{CRYPT}*0", "*0", 0},
	    {"{CRYPT}$6$hikyakusalt$", "correct horse", 0},
	    {"{CRAM-MD5}9186d855", "password", 0},
	    {"{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e274z",
	     "password", 0},
	    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==", "pencil", 0},
	    {"{SCRAM-SHA-256}0,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4"
	     "qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	     "pencil", 0},
	    {"", "", 0},
	    {NULL, "x", 0},
	};
	for (size_t i = 0; i < N(cases); i++) {
		const char *pw = cases[i].password;
		int got = passwd_verify(cases[i].stored, pw, strlen(pw));
		if (got != cases[i].want)
			fail_msg("case %zu (%s)", i, cases[i].stored);
	}
	/* a NUL octet inside the password never matches */
	assert_int_equal(passwd_verify(SHA512_CORRECT, "correct horse\0x", 15), 0);
}

static void test_passwd_roundtrip(void **state)
{
	(void)state;
	static const struct {
		enum passwd_scheme scheme;
		const char *prefix;
	} cases[] = {
	    {PASSWD_CRYPT, "{CRYPT}$y$"},
	    {PASSWD_BLF_CRYPT, "{BLF-CRYPT}$2b$10$"},
	    {PASSWD_SHA512_CRYPT, "{SHA512-CRYPT}$6$"},
	    {PASSWD_CRAM_MD5, "{CRAM-MD5}"},
	    {PASSWD_SCRAM_SHA_256, "{SCRAM-SHA-256}4096,"},
	};
	const char *pw = "s3cret pass w\xc3\xb6rd";
	for (size_t i = 0; i < N(cases); i++) {
		const char *error = NULL;
		char *h = passwd_hash(cases[i].scheme, pw, strlen(pw), &error);
		assert_non_null(h);
		assert_true(strncmp(h, cases[i].prefix, strlen(cases[i].prefix)) == 0);
		assert_int_equal(passwd_scheme_of(h), cases[i].scheme);
		assert_int_equal(passwd_verify(h, pw, strlen(pw)), 1);
		assert_int_equal(passwd_verify(h, pw, strlen(pw) - 1), 0);
		assert_int_equal(passwd_verify(h, "s3cret pass word", 16), 0);
		char *again = passwd_hash(cases[i].scheme, pw, strlen(pw), &error);
		if (cases[i].scheme == PASSWD_CRAM_MD5) /* no salt: deterministic */
			assert_string_equal(h, again);
		else
			assert_string_not_equal(h, again);
		free(again);
		free(h);
	}
	char *h = passwd_hash(PASSWD_CRAM_MD5, "password", 8, NULL);
	assert_string_equal(h, DOVECOT_CRAM_PASSWORD);
	free(h);
	/* long key: RFC 2104 §2 hashes it first */
	char longpw[100];
	memset(longpw, 'k', sizeof(longpw));
	h = passwd_hash(PASSWD_CRAM_MD5, longpw, sizeof(longpw), NULL);
	assert_int_equal(passwd_verify(h, longpw, sizeof(longpw)), 1);
	assert_int_equal(passwd_verify(h, longpw, 64), 0);
	free(h);

	struct passwd_scram k;
	h = passwd_hash(PASSWD_SCRAM_SHA_256, pw, strlen(pw), NULL);
	assert_int_equal(passwd_scram_parse(h, &k), 0);
	assert_int_equal(k.iterations, 4096);
	assert_int_equal(k.salt_len, 16);
	free(h);

	static const struct {
		enum passwd_scheme scheme;
		const char *pw;
		size_t len;
	} bad[] = {
	    {PASSWD_CRYPT, "", 0},
	    {PASSWD_CRYPT, "a\0b", 3},
	    {PASSWD_SCRAM_SHA_256, "a\0b", 3},
	    {PASSWD_UNKNOWN, "abc", 3},
	};
	for (size_t i = 0; i < N(bad); i++) {
		const char *error = NULL;
		assert_null(passwd_hash(bad[i].scheme, bad[i].pw, bad[i].len, &error));
		assert_non_null(error);
	}
}

static void test_passwd_schemes(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		enum passwd_scheme parsed; /* passwd_scheme_parse(text) */
		enum passwd_scheme of;     /* passwd_scheme_of(text) */
	} cases[] = {
	    {"CRYPT", PASSWD_CRYPT, PASSWD_UNKNOWN},
	    {"blf-crypt", PASSWD_BLF_CRYPT, PASSWD_UNKNOWN},
	    {"SHA512-CRYPT", PASSWD_SHA512_CRYPT, PASSWD_UNKNOWN},
	    {"CRAM-MD5", PASSWD_CRAM_MD5, PASSWD_UNKNOWN},
	    {"SCRAM-SHA-256", PASSWD_SCRAM_SHA_256, PASSWD_UNKNOWN},
	    {"SCRAM-SHA-1", PASSWD_UNKNOWN, PASSWD_UNKNOWN},
	    {"{CRYPT}$y$x", PASSWD_UNKNOWN, PASSWD_CRYPT},
	    {"{Scram-Sha-256}1,2,3,4", PASSWD_UNKNOWN, PASSWD_SCRAM_SHA_256},
	    {"{PLAIN}x", PASSWD_UNKNOWN, PASSWD_UNKNOWN},
	    {"{CRYPT", PASSWD_UNKNOWN, PASSWD_UNKNOWN},
	    {"", PASSWD_UNKNOWN, PASSWD_UNKNOWN},
	};
	for (size_t i = 0; i < N(cases); i++) {
		assert_int_equal(passwd_scheme_parse(cases[i].text), cases[i].parsed);
		assert_int_equal(passwd_scheme_of(cases[i].text), cases[i].of);
	}
	assert_string_equal(passwd_scheme_name(PASSWD_BLF_CRYPT), "BLF-CRYPT");
	assert_string_equal(passwd_scheme_name(PASSWD_UNKNOWN), "UNKNOWN");
}

static void test_passwd_cram_check(void **state)
{
	(void)state;
	static const char challenge[] = "<1896.697170952@postoffice.reston.mci.net>";
	static const struct {
		const char *stored;
		const char *hex;
		int want;
	} cases[] = {
	    {CRAM_TANSTAAF, "b913a602c7eda7a495b4e6e7334d3890", 1}, /* RFC 2195 §2 */
	    {CRAM_TANSTAAF, "B913A602C7EDA7A495B4E6E7334D3890", 1},
	    {CRAM_TANSTAAF, "b913a602c7eda7a495b4e6e7334d3891", 0},
	    {CRAM_TANSTAAF, "b913a602c7eda7a495b4e6e7334d389", 0},
	    {CRAM_TANSTAAF, "b913a602c7eda7a495b4e6e7334d3890a", 0},
	    {CRAM_TANSTAAF, "g913a602c7eda7a495b4e6e7334d3890", 0},
	    {DOVECOT_CRAM_PASSWORD, "b913a602c7eda7a495b4e6e7334d3890", 0},
	    {SHA512_CORRECT, "b913a602c7eda7a495b4e6e7334d3890", 0},
	};
	for (size_t i = 0; i < N(cases); i++)
		assert_int_equal(
		    passwd_cram_md5_check(cases[i].stored, (const unsigned char *)challenge,
		                          strlen(challenge), cases[i].hex, strlen(cases[i].hex)),
		    cases[i].want);
}

static void test_passwd_scram_parse(void **state)
{
	(void)state;
	static const struct {
		const char *stored;
		int want;
	} cases[] = {
	    {SCRAM_PENCIL, 0},
	    {DOVECOT_SCRAM_MAIPEEJA, 0},
	    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbs"
	     "T4qY=",
	     -1},
	    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbs"
	     "T4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=,x",
	     -1},
	    {"{SCRAM-SHA-256}x,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q"
	     "Y=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	     -1},
	    {"{SCRAM-SHA-256}4096,,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
	     "wfPLwcE6nTWhTAmQ7tl2"
	     "KeoiWGPlZqQxSrmfPwDl2dU=",
	     -1},
	    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7Bke,wfPLwcE6nTWhTAm"
	     "Q7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	     -1},
	    {"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ=,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4"
	     "qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	     -1},
	    {"{CRAM-MD5}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
	     "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
	     -1},
	};
	for (size_t i = 0; i < N(cases); i++) {
		struct passwd_scram k;
		if (passwd_scram_parse(cases[i].stored, &k) != cases[i].want)
			fail_msg("case %zu", i);
	}
}

static void test_passwd_b64(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		const char *raw; /* NULL: invalid */
	} cases[] = {
	    {"", ""},         {"Zg==", "f"},        {"Zm8=", "fo"},
	    {"Zm9v", "foo"},  {"Zm9vYg==", "foob"}, {"biws", "n,,"},
	    {"Zg=", NULL},    {"Zg", NULL},         {"Z===", NULL},
	    {"Zm9v\n", NULL}, {"Zm=v", NULL},       {"Zg==Zg==", NULL},
	    {"Zm9*", NULL},   {"Zh==", NULL},       {"Zm9=", NULL},
	};
	for (size_t i = 0; i < N(cases); i++) {
		unsigned char out[16];
		char enc[32];
		size_t len = 0;
		int r =
		    passwd_b64_decode(cases[i].text, strlen(cases[i].text), out, sizeof(out), &len);
		if (cases[i].raw == NULL) {
			assert_int_equal(r, -1);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(len, strlen(cases[i].raw));
		assert_memory_equal(out, cases[i].raw, len);
		assert_int_equal(passwd_b64_encode(out, len, enc, sizeof(enc)),
		                 strlen(cases[i].text));
		assert_string_equal(enc, cases[i].text);
	}
	unsigned char small[2];
	size_t len;
	assert_int_equal(passwd_b64_decode("Zm9v", 4, small, sizeof(small), &len), -1);
	char tiny[4];
	assert_int_equal(passwd_b64_encode((const unsigned char *)"foo", 3, tiny, sizeof(tiny)), 0);
}

/* ---- sasl ---- */

struct auth_fixture {
	char dir[64];
	char path[96];
	struct users *users;
	struct sasl_ctx *ctx;
};

static const char auth_users_text[] =
    "# hikyaku test users\n"
    "alice@example.org:" SHA512_CORRECT ":1000:1000::/home/alice::\n"
    "yes@example.org:" YESCRYPT_CORRECT "\n"
    "cram@example.org:" CRAM_TANSTAAF "\n"
    "scram@example.org:" SCRAM_PENCIL "\n"
    "sc,ram@example.org:" SCRAM_PENCIL "\n"
    "nopass@example.org\n"
    "empty@example.org::1000:1000::/home/empty::\n"
    "plain@example.org:{PLAIN}secret\n";

static int auth_setup(void **state)
{
	struct auth_fixture *f = calloc(1, sizeof(*f));
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/hk-test-auth-XXXXXX");
	if (f == NULL || mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/users", f->dir);
	FILE *fp = fopen(f->path, "w");
	if (fp == NULL)
		return -1;
	fputs(auth_users_text, fp);
	fclose(fp);
	if (users_load(f->path, &f->users, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	f->ctx = sasl_ctx_create(f->users, "postoffice.reston.mci.net"); /* CRAM_HOST */
	*state = f;
	return 0;
}

static int auth_teardown(void **state)
{
	struct auth_fixture *f = *state;
	sasl_ctx_free(&f->ctx);
	users_free(&f->users);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_users_secret(void **state)
{
	struct auth_fixture *f = *state;
	static const struct {
		const char *user;
		const char *want; /* NULL: unknown */
	} cases[] = {
	    {"alice@example.org", SHA512_CORRECT},
	    {"ALICE@Example.ORG", SHA512_CORRECT},
	    {"nopass@example.org", ""},
	    {"empty@example.org", ""},
	    {"bob@example.org", NULL},
	    {"alice", NULL},
	    {"", NULL},
	    {"alice@example.org ", NULL},
	};
	for (size_t i = 0; i < N(cases); i++) {
		const char *s = users_secret(f->users, cases[i].user);
		if (cases[i].want == NULL)
			assert_null(s);
		else
			assert_string_equal(s, cases[i].want);
	}
	assert_null(users_secret(NULL, "alice@example.org"));
	assert_true(users_exists(f->users, "Alice", "example.org"));
	static const struct {
		const char *name;
		bool ok;
	} names[] = {
	    {"a@b", true},      {"a", false},
	    {"@b", false},      {"a@", false},
	    {"a@b@c", false},   {"a b@c", false},
	    {"a:b@c", false},   {"#a@b", false},
	    {"a\x7f@b", false}, {"sc,ram@example.org", true},
	};
	for (size_t i = 0; i < N(names); i++)
		assert_int_equal(users_name_check(names[i].name, strlen(names[i].name)) == NULL,
		                 names[i].ok);
}

enum step_kind {
	STEP_SEND,    /* sasl_server_step(in); in NULL: no initial response */
	STEP_EMPTY,   /* an empty initial response ("=") */
	STEP_VERIFIED /* run passwd_verify() as the worker would, then verified() */
};

struct sasl_step {
	enum step_kind kind;
	const char *in;
	size_t len;
	enum sasl_result want;
	const char *out; /* expected challenge; NULL: not checked */
};

#define SEND(s, w, o)                                                                              \
	{                                                                                          \
		STEP_SEND, s, sizeof(s) - 1, w, o                                                  \
	}
#define NOINIT(w, o)                                                                               \
	{                                                                                          \
		STEP_SEND, NULL, 0, w, o                                                           \
	}
#define VERIFIED(w)                                                                                \
	{                                                                                          \
		STEP_VERIFIED, NULL, 0, w, NULL                                                    \
	}

struct sasl_case {
	const char *name;
	enum sasl_mech mech;
	const char *nonce; /* sasl_server_set_nonce_for_test() */
	const char *user;  /* sasl_server_user() at the end; NULL: not checked */
	struct sasl_step steps[6];
};

#define CRAM_HOST "postoffice.reston.mci.net"
#define CRAM_NONCE "1896.697170952"
#define CRAM_CHALLENGE "<1896.697170952@postoffice.reston.mci.net>"
#define SCRAM_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SCRAM_NONCE "rOprNGfwEbeRWgbNEkqO" SCRAM_SNONCE
#define SCRAM_SERVER_FIRST "r=" SCRAM_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
/* RFC 7677 §3's exchange for "scram@example.org" instead of "user" (our
 * users are local@domain); proofs computed with Python's hashlib, whose
 * output for "user" matches the RFC's p= and v= exactly. */
#define SCRAM_FINAL_N "c=biws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o="
#define SCRAM_V_N "v=SbbO2VucRnLXqYFbOQJ6d0cXZRaf2KLHbExJu/y9Xdk="

static const struct sasl_case sasl_cases[] = {
    /* PLAIN (RFC 4616) */
    {"plain ok",
     SASL_PLAIN,
     NULL,
     "alice@example.org",
     {SEND("\0alice@example.org\0correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK),
      SEND("again", SASL_R_MALFORMED, NULL)}},
    {"plain authzid = authcid",
     SASL_PLAIN,
     NULL,
     "alice@example.org",
     {SEND("Alice@Example.org\0alice@example.org\0correct horse", SASL_R_VERIFY, NULL),
      VERIFIED(SASL_R_OK)}},
    {"plain authzid other user",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("bob@example.org\0alice@example.org\0correct horse", SASL_R_FAIL, NULL)}},
    {"plain case-insensitive user",
     SASL_PLAIN,
     NULL,
     "alice@example.org",
     {SEND("\0ALICE@EXAMPLE.ORG\0correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK)}},
    {"plain wrong password",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0alice@example.org\0correct horsE", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL),
      SEND("", SASL_R_MALFORMED, NULL)}},
    {"plain no initial response",
     SASL_PLAIN,
     NULL,
     "alice@example.org",
     {NOINIT(SASL_R_CONTINUE, ""), SEND("\0alice@example.org\0correct horse", SASL_R_VERIFY, NULL),
      VERIFIED(SASL_R_OK)}},
    {"plain yescrypt",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0yes@example.org\0correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK)}},
    {"plain cram secret",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0cram@example.org\0tanstaaftanstaaf", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK)}},
    {"plain scram secret",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0scram@example.org\0pencil", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK)}},
    {"plain unknown user",
     SASL_PLAIN,
     NULL,
     "bob@example.org",
     {SEND("\0bob@example.org\0correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL)}},
    {"plain user without secret",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0nopass@example.org\0x", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL)}},
    {"plain {PLAIN} storage refused",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0plain@example.org\0secret", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL)}},
    {"plain no NUL",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("alice@example.org correct horse", SASL_R_MALFORMED, NULL),
      SEND("\0alice@example.org\0correct horse", SASL_R_MALFORMED, NULL)}},
    {"plain one NUL",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0alice@example.org", SASL_R_MALFORMED, NULL)}},
    {"plain three NULs",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0alice@example.org\0correct\0horse", SASL_R_MALFORMED, NULL)}},
    {"plain empty password",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0alice@example.org\0", SASL_R_MALFORMED, NULL)}},
    {"plain empty authcid",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0\0correct horse", SASL_R_MALFORMED, NULL)}},
    {"plain control char",
     SASL_PLAIN,
     NULL,
     NULL,
     {SEND("\0alice@example.org\r\n\0correct horse", SASL_R_MALFORMED, NULL)}},
    {"plain empty initial response",
     SASL_PLAIN,
     NULL,
     NULL,
     {{STEP_EMPTY, NULL, 0, SASL_R_MALFORMED, NULL}}},

    /* LOGIN */
    {"login ok",
     SASL_LOGIN,
     NULL,
     "alice@example.org",
     {NOINIT(SASL_R_CONTINUE, "Username:"), SEND("alice@example.org", SASL_R_CONTINUE, "Password:"),
      SEND("correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK),
      SEND("", SASL_R_MALFORMED, NULL)}},
    {"login initial response",
     SASL_LOGIN,
     NULL,
     "alice@example.org",
     {SEND("alice@example.org", SASL_R_CONTINUE, "Password:"),
      SEND("correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_OK)}},
    {"login wrong password",
     SASL_LOGIN,
     NULL,
     NULL,
     {NOINIT(SASL_R_CONTINUE, "Username:"), SEND("alice@example.org", SASL_R_CONTINUE, "Password:"),
      SEND("wrong", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL)}},
    {"login unknown user",
     SASL_LOGIN,
     NULL,
     NULL,
     {NOINIT(SASL_R_CONTINUE, "Username:"),
      SEND("nobody@example.org", SASL_R_CONTINUE, "Password:"),
      SEND("correct horse", SASL_R_VERIFY, NULL), VERIFIED(SASL_R_FAIL)}},
    {"login empty user",
     SASL_LOGIN,
     NULL,
     NULL,
     {NOINIT(SASL_R_CONTINUE, "Username:"), SEND("", SASL_R_MALFORMED, NULL)}},
    {"login NUL in password",
     SASL_LOGIN,
     NULL,
     NULL,
     {NOINIT(SASL_R_CONTINUE, "Username:"), SEND("alice@example.org", SASL_R_CONTINUE, "Password:"),
      SEND("correct\0horse", SASL_R_MALFORMED, NULL)}},
    {"login empty password",
     SASL_LOGIN,
     NULL,
     NULL,
     {SEND("alice@example.org", SASL_R_CONTINUE, "Password:"), SEND("", SASL_R_MALFORMED, NULL)}},

    /* CRAM-MD5 (RFC 2195 §2's challenge and digest) */
    {"cram ok",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     "cram@example.org",
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("cram@example.org b913a602c7eda7a495b4e6e7334d3890", SASL_R_OK, NULL),
      SEND("", SASL_R_MALFORMED, NULL)}},
    {"cram wrong digest",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("cram@example.org b913a602c7eda7a495b4e6e7334d3891", SASL_R_FAIL, NULL)}},
    {"cram uppercase hex",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("cram@example.org B913A602C7EDA7A495B4E6E7334D3890", SASL_R_MALFORMED, NULL)}},
    {"cram short digest",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("cram@example.org b913a602c7eda7a495b4e6e7334d389", SASL_R_MALFORMED, NULL)}},
    {"cram no user",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("b913a602c7eda7a495b4e6e7334d3890", SASL_R_MALFORMED, NULL)}},
    {"cram unknown user",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("tim b913a602c7eda7a495b4e6e7334d3890", SASL_R_FAIL, NULL)}},
    {"cram user without cram secret",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("alice@example.org b913a602c7eda7a495b4e6e7334d3890", SASL_R_FAIL, NULL)}},
    {"cram user without secret",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {NOINIT(SASL_R_CONTINUE, CRAM_CHALLENGE),
      SEND("nopass@example.org b913a602c7eda7a495b4e6e7334d3890", SASL_R_FAIL, NULL)}},
    {"cram initial response",
     SASL_CRAM_MD5,
     CRAM_NONCE,
     NULL,
     {SEND("cram@example.org b913a602c7eda7a495b4e6e7334d3890", SASL_R_MALFORMED, NULL)}},

    /* SCRAM-SHA-256 (RFC 5802, RFC 7677) */
    {"scram ok",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     "scram@example.org",
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND(SCRAM_FINAL_N, SASL_R_CONTINUE, SCRAM_V_N), SEND("", SASL_R_OK, NULL),
      SEND("", SASL_R_MALFORMED, NULL)}},
    {"scram no initial response",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     "scram@example.org",
     {NOINIT(SASL_R_CONTINUE, ""),
      SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND(SCRAM_FINAL_N, SASL_R_CONTINUE, SCRAM_V_N), SEND("", SASL_R_OK, NULL)}},
    {"scram y flag",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("y,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=eSws,r=" SCRAM_NONCE ",p=pSJJn337Z8bg7wc4o5C1n6CUObF4xP2ijHLVUsBq21c=",
           SASL_R_CONTINUE, "v=0qXtFSVIpW4wocLOoCto+hbpmbRgsCo035UdEKf7kuU="),
      SEND("", SASL_R_OK, NULL)}},
    {"scram authzid",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,a=scram@example.org,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE,
           SCRAM_SERVER_FIRST),
      SEND("c=bixhPXNjcmFtQGV4YW1wbGUub3JnLA==,r=" SCRAM_NONCE
           ",p=TQOTImaCCy03RDzQ9PIj5A/Q9I8yDl5G3DR0ZLTayqg=",
           SASL_R_CONTINUE, "v=UURBy1R0K6DSvpOhIdv2FXWDTLIwYdcdrtC/ngKxh6A="),
      SEND("", SASL_R_OK, NULL)}},
    {"scram escaped name",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     "sc,ram@example.org",
     {SEND("n,,n=sc=2Cram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE ",p=IKuXrNktXvKORprjDB4VCkchQRpdMhkmoVOSFVBNehY=",
           SASL_R_CONTINUE, "v=Cilw/dl71qqQRSRNhn6NpWtRF2BSwH8EiYGU+rV31yI="),
      SEND("", SASL_R_OK, NULL)}},
    {"scram extension ignored",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO,x=whatever", SASL_R_CONTINUE,
           SCRAM_SERVER_FIRST)}},
    {"scram authzid other user",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,a=alice@example.org,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_FAIL, NULL)}},
    {"scram channel binding",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("p=tls-unique,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_MALFORMED, NULL)}},
    {"scram bad cbind flag",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("x,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_MALFORMED, NULL)}},
    {"scram missing gs2 comma",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_MALFORMED, NULL)}},
    {"scram reserved-mext",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,m=x,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_MALFORMED, NULL)}},
    {"scram m extension later",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO,m=x", SASL_R_MALFORMED, NULL)}},
    {"scram bad escape",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=sc=2Dram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_MALFORMED, NULL)}},
    {"scram missing nonce",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org", SASL_R_MALFORMED, NULL)}},
    {"scram empty nonce",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=", SASL_R_MALFORMED, NULL)}},
    {"scram trailing comma",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=abc,", SASL_R_MALFORMED, NULL)}},
    {"scram NUL",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org\0,r=abc", SASL_R_MALFORMED, NULL)}},
    {"scram wrong nonce",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=rOprNGfwEbeRWgbNEkqO,p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=",
           SASL_R_FAIL, NULL)}},
    {"scram wrong c=",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=eSws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=", SASL_R_FAIL,
           NULL)}},
    {"scram wrong proof",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE ",p=PfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=", SASL_R_FAIL,
           NULL)}},
    {"scram non-canonical base64 proof",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2p=",
           SASL_R_MALFORMED, NULL)}},
    {"scram proof from another exchange",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE ",p=IKuXrNktXvKORprjDB4VCkchQRpdMhkmoVOSFVBNehY=", SASL_R_FAIL,
           NULL)}},
    {"scram short proof",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE ",p=AAAA", SASL_R_MALFORMED, NULL)}},
    {"scram no proof",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biws,r=" SCRAM_NONCE, SASL_R_MALFORMED, NULL)}},
    {"scram bad c= base64",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND("c=biw,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=",
           SASL_R_MALFORMED, NULL)}},
    {"scram non-empty after v=",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=scram@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, SCRAM_SERVER_FIRST),
      SEND(SCRAM_FINAL_N, SASL_R_CONTINUE, SCRAM_V_N), SEND("x", SASL_R_MALFORMED, NULL)}},
    {"scram unknown user",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     "nobody@example.org",
     {SEND("n,,n=nobody@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, NULL),
      SEND("c=biws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=", SASL_R_FAIL,
           NULL)}},
    {"scram user without scram secret",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=alice@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, NULL),
      SEND("c=biws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=", SASL_R_FAIL,
           NULL)}},
    {"scram user without secret",
     SASL_SCRAM_SHA_256,
     SCRAM_SNONCE,
     NULL,
     {SEND("n,,n=empty@example.org,r=rOprNGfwEbeRWgbNEkqO", SASL_R_CONTINUE, NULL),
      SEND("c=biws,r=" SCRAM_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=", SASL_R_FAIL,
           NULL)}},
};

static void sasl_case_run(const struct sasl_ctx *ctx, const struct sasl_case *c)
{
	struct sasl_server *s = sasl_server_create(c->mech, ctx);
	struct buf out;

	buf_init(&out, 4096);
	if (c->nonce != NULL)
		sasl_server_set_nonce_for_test(s, c->nonce);
	for (size_t i = 0; i < N(c->steps); i++) {
		const struct sasl_step *st = &c->steps[i];
		enum sasl_result r;
		if (st->kind == STEP_SEND && st->in == NULL && i > 0)
			break; /* end of the steps */
		if (st->kind == STEP_VERIFIED) {
			const char *pw = sasl_server_password(s), *stored = sasl_server_stored(s);
			assert_non_null(pw);
			assert_non_null(stored);
			r = sasl_server_verified(s, passwd_verify(stored, pw, strlen(pw)) == 1);
			assert_null(sasl_server_password(s));
		} else {
			bool initial = st->kind == STEP_EMPTY || st->in != NULL;
			r = sasl_server_step(s, initial, (const unsigned char *)st->in, st->len,
			                     &out);
		}
		if (r != st->want)
			fail_msg("%s: step %zu: result %d, want %d", c->name, i, r, st->want);
		if (st->out != NULL &&
		    (out.len != strlen(st->out) || memcmp(out.data, st->out, out.len) != 0))
			fail_msg("%s: step %zu: challenge \"%s\", want \"%s\"", c->name, i,
			         buf_cstr(&out), st->out);
	}
	if (c->user != NULL)
		assert_string_equal(sasl_server_user(s), c->user);
	buf_free(&out);
	sasl_server_free(&s);
	assert_null(s);
}

static void test_sasl_exchanges(void **state)
{
	struct auth_fixture *f = *state;
	for (size_t i = 0; i < N(sasl_cases); i++)
		sasl_case_run(f->ctx, &sasl_cases[i]);
}

/* ---- the context: usable mechanisms and the dummy secret (issue 8) ---- */

static void test_crypt_params(void **state)
{
	(void)state;
	static const struct {
		const char *hash, *want;
	} cases[] = {
	    {"$y$j9T$LdJMENpBABJJ3hIHjB1Bi.$CbmXE", "$y$j9T$"},
	    {"$2b$05$abcdefghijklmnopqrstuuHNbAKR", "$2b$05$"},
	    {"$6$hikyakusalt$MHZG2BBP", "$6$"},
	    {"$6$rounds=10000$salt$hash", "$6$rounds=10000$"},
	    {"$5$salt$hash", "$5$"},
	    {"$1$salt$hash", "$1$"},
	    {"abJnggxhB/yWI", ""},
	    {"", ""},
	};
	for (size_t i = 0; i < N(cases); i++) {
		size_t n = passwd_crypt_params_len(cases[i].hash);
		if (n != strlen(cases[i].want) || strncmp(cases[i].hash, cases[i].want, n) != 0)
			fail_msg("%s: %zu octets, want \"%s\"", cases[i].hash, n, cases[i].want);
	}
}

/* A users table from lines "name:secret" in a temp file. */
static struct users *ctx_users(const char *const *lines, size_t n)
{
	char dir[] = "/tmp/hk-test-ctx-XXXXXX", path[64], err[256];
	struct users *u = NULL;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/users", dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	for (size_t i = 0; i < n; i++)
		fprintf(fp, "%s\n", lines[i]);
	fclose(fp);
	if (users_load(path, &u, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	unlink(path);
	rmdir(dir);
	return u;
}

/* Issue 8: an unknown user must cost what most known users cost, so the
 * dummy has the scheme and crypt setting that most secrets share. */
static void ctx_expect_dummy(const char *const *lines, size_t n, const char *want_class)
{
	struct users *u = ctx_users(lines, n);
	struct sasl_ctx *c = sasl_ctx_create(u, "h");
	const char *dummy = sasl_ctx_dummy_stored(c);
	char *cls = passwd_cost_class(dummy);

	assert_non_null(cls);
	if (strcmp(cls, want_class) != 0)
		fail_msg("dummy %s: class \"%s\", want \"%s\"", dummy, cls, want_class);
	/* a fresh secret, not a copy of a user's, that no password opens */
	for (size_t i = 0; i < n; i++)
		assert_null(strstr(lines[i], dummy + 1));
	assert_int_equal(passwd_verify(dummy, "", 0), 0);
	assert_int_equal(passwd_verify(dummy, "password", 8), 0);
	free(cls);
	sasl_ctx_free(&c);
	assert_null(c);
	users_free(&u);
}

static void test_sasl_ctx_dummy(void **state)
{
	struct auth_fixture *f = *state;
	char *cls = passwd_cost_class(sasl_ctx_dummy_stored(f->ctx));
	assert_string_equal(cls, "scram 4096"); /* two of the fixture's secrets */
	free(cls);

	const char *sha[] = {"a@x.org:" SHA512_CORRECT, "b@x.org:" YESCRYPT_CORRECT,
	                     "c@x.org:" SHA512_CORRECT, "d@x.org:" BCRYPT_CORRECT,
	                     "e@x.org:" SHA512_CORRECT};
	ctx_expect_dummy(sha, N(sha), "crypt $6$");
	const char *yes[] = {"a@x.org:" YESCRYPT_CORRECT, "b@x.org:" SHA512_CORRECT,
	                     "c@x.org:" YESCRYPT_CORRECT, "d@x.org:" CRAM_TANSTAAF};
	ctx_expect_dummy(yes, N(yes), "crypt $y$j9T$");
	const char *blf[] = {"a@x.org:" BCRYPT_CORRECT, "b@x.org", "c@x.org:{PLAIN}x"};
	ctx_expect_dummy(blf, N(blf), "crypt $2b$05$");
	const char *rounds[] = {"a@x.org:{SHA512-CRYPT}$6$rounds=2000$abc$"
	                        "f8SlMcskrAMRtij6YCTkDkAcUAxeO8kFSfmKFeHNWGAIz9Wh2BV1TtXsL177v0azNs"
	                        "iOtFzEHVoyxwTRNqFXx/"};
	ctx_expect_dummy(rounds, N(rounds), "crypt $6$rounds=2000$");

	/* the fake SCRAM salt of a user without a SCRAM secret shows the
	 * iteration count most SCRAM secrets have, whatever the majority
	 * scheme of the file */
	const char *iter[] = {"a@x.org:" SHA512_CORRECT, "b@x.org:" SHA512_CORRECT,
	                      "c@x.org:{SCRAM-SHA-256}8192,MDEyMzQ1Njc4OWFiY2RlZg==,"
	                      "atB2QS1uptKzptT49z1jbIfiQRkymsT8WPpS7kq1Zuo=,"
	                      "l5hcVU8PIU8AL4idbzSEqbYUcF6igV0ro/hNuPX0ii0="};
	struct users *u = ctx_users(iter, N(iter));
	struct sasl_ctx *ic = sasl_ctx_create(u, "h");
	struct buf out;
	buf_init(&out, 256);
	for (int i = 0; i < 2; i++) {
		struct sasl_server *s = sasl_server_create(SASL_SCRAM_SHA_256, ic);
		const char *cf = i == 0 ? "n,,n=a@x.org,r=abc" : "n,,n=ghost@x.org,r=abc";
		assert_int_equal(
		    sasl_server_step(s, true, (const unsigned char *)cf, strlen(cf), &out),
		    SASL_R_CONTINUE);
		const char *it = strstr(buf_cstr(&out), ",i=");
		assert_non_null(it);
		assert_string_equal(it, ",i=8192");
		sasl_server_free(&s);
	}
	buf_free(&out);
	sasl_ctx_free(&ic);
	users_free(&u);

	/* no usable secret: the built-in yescrypt dummy */
	struct sasl_ctx *c = sasl_ctx_create(NULL, "h");
	cls = passwd_cost_class(sasl_ctx_dummy_stored(c));
	assert_string_equal(cls, "crypt $y$j9T$");
	free(cls);
	sasl_ctx_free(&c);
}

/* Issue 8: clients take the strongest mechanism offered and never retry:
 * CRAM-MD5 and SCRAM-SHA-256 are usable only when every user with a secret
 * has one of that scheme. */
static void test_sasl_ctx_usable(void **state)
{
	struct auth_fixture *f = *state;
	const unsigned base = SASL_MECH_BIT(SASL_PLAIN) | SASL_MECH_BIT(SASL_LOGIN);
	assert_int_equal(sasl_ctx_usable(f->ctx), base);

	static const struct {
		const char *lines[3];
		unsigned extra;
	} cases[] = {
	    {{"a@x.org:" CRAM_TANSTAAF, "b@x.org:" CRAM_TANSTAAF, "c@x.org"},
	     SASL_MECH_BIT(SASL_CRAM_MD5)},
	    {{"a@x.org:" SCRAM_PENCIL, "b@x.org::::", "c@x.org:{PLAIN}x"},
	     SASL_MECH_BIT(SASL_SCRAM_SHA_256)},
	    {{"a@x.org:" SCRAM_PENCIL, "b@x.org:" CRAM_TANSTAAF, "c@x.org"}, 0},
	    {{"a@x.org:" SCRAM_PENCIL, "b@x.org:" YESCRYPT_CORRECT, "c@x.org"}, 0},
	    {{"a@x.org:" CRAM_TANSTAAF, "b@x.org:" SHA512_CORRECT, "c@x.org"}, 0},
	    {{"a@x.org", "b@x.org::", "c@x.org"}, 0},
	};
	for (size_t i = 0; i < N(cases); i++) {
		struct users *u = ctx_users(cases[i].lines, 3);
		struct sasl_ctx *c = sasl_ctx_create(u, "h");
		if (sasl_ctx_usable(c) != (base | cases[i].extra))
			fail_msg("case %zu: usable %#x, want %#x", i, sasl_ctx_usable(c),
			         base | cases[i].extra);
		sasl_ctx_free(&c);
		users_free(&u);
	}
}

/* A test-side SCRAM-SHA-256 client (RFC 5802 §3), checked against RFC 7677 §3
 * and then used against the server with random nonces. */
static void scram_client_proof(const char *password, const unsigned char *salt, size_t slen,
                               unsigned iter, const char *auth_message, char proof_b64[64],
                               char server_sig_b64[64])
{
	unsigned char salted[32], ck[32], sk[32], stored[32], sig[32], proof[32], ss[32];
	unsigned int n;

	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)slen,
	                                   (int)iter, EVP_sha256(), 32, salted),
	                 1);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ck, &n);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, sk, &n);
	SHA256(ck, 32, stored);
	HMAC(EVP_sha256(), stored, 32, (const unsigned char *)auth_message, strlen(auth_message),
	     sig, &n);
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ sig[i];
	HMAC(EVP_sha256(), sk, 32, (const unsigned char *)auth_message, strlen(auth_message), ss,
	     &n);
	passwd_b64_encode(proof, 32, proof_b64, 64);
	passwd_b64_encode(ss, 32, server_sig_b64, 64);
}

static void test_scram_rfc7677_client(void **state)
{
	(void)state;
	unsigned char salt[16];
	size_t slen;
	char proof[64], v[64];
	assert_int_equal(
	    passwd_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt), &slen), 0);
	scram_client_proof(
	    "pencil", salt, slen, 4096,
	    "n=user,r=rOprNGfwEbeRWgbNEkqO," SCRAM_SERVER_FIRST ",c=biws,r=" SCRAM_NONCE, proof, v);
	assert_string_equal(proof, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
	assert_string_equal(v, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/* Random nonces and challenges, as in production. */
static void test_sasl_random_nonces(void **state)
{
	struct auth_fixture *f = *state;
	struct buf out;
	char first[256], final[512], am[1024], proof[64], v[64], sf[256];
	unsigned char salt[16];
	size_t slen;

	assert_int_equal(
	    passwd_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt), &slen), 0);
	buf_init(&out, 4096);
	for (int round = 0; round < 3; round++) {
		struct sasl_server *s =
		    sasl_server_create(SASL_SCRAM_SHA_256, f->ctx);
		snprintf(first, sizeof(first), "n,,n=scram@example.org,r=cnonce%d", round);
		assert_int_equal(
		    sasl_server_step(s, true, (unsigned char *)first, strlen(first), &out),
		    SASL_R_CONTINUE);
		snprintf(sf, sizeof(sf), "%s", buf_cstr(&out));
		const char *snonce_end = strchr(sf, ',');
		assert_non_null(snonce_end);
		assert_true(strncmp(sf, "r=cnonce", 8) == 0);
		assert_true(snonce_end - sf > 20); /* a server part was appended */
		snprintf(am, sizeof(am), "%s,%s,c=biws,%.*s", first + 3, sf, (int)(snonce_end - sf),
		         sf);
		scram_client_proof("pencil", salt, slen, 4096, am, proof, v);
		snprintf(final, sizeof(final), "c=biws,%.*s,p=%s", (int)(snonce_end - sf), sf,
		         proof);
		assert_int_equal(
		    sasl_server_step(s, true, (unsigned char *) final, strlen(final), &out),
		    SASL_R_CONTINUE);
		assert_true(out.len == strlen(v) + 2 && memcmp(out.data + 2, v, strlen(v)) == 0);
		assert_int_equal(sasl_server_step(s, true, NULL, 0, &out), SASL_R_OK);
		sasl_server_free(&s);
	}

	/* CRAM-MD5 with a random challenge: "<digits.digits@host>" */
	struct sasl_server *s = sasl_server_create(SASL_CRAM_MD5, f->ctx);
	assert_int_equal(sasl_server_step(s, false, NULL, 0, &out), SASL_R_CONTINUE);
	const char *ch = buf_cstr(&out);
	assert_true(ch[0] == '<' && strchr(ch, '.') != NULL &&
	            strstr(ch, "@" CRAM_HOST ">") != NULL);
	unsigned char md[16];
	unsigned int n;
	HMAC(EVP_md5(), "tanstaaftanstaaf", 16, out.data, out.len, md, &n);
	char resp[128];
	int off = snprintf(resp, sizeof(resp), "cram@example.org ");
	for (int i = 0; i < 16; i++)
		off += snprintf(resp + off, sizeof(resp) - (size_t)off, "%02x", md[i]);
	assert_int_equal(sasl_server_step(s, true, (unsigned char *)resp, strlen(resp), &out),
	                 SASL_R_OK);
	sasl_server_free(&s);

	/* the fake salt of an unknown user is stable, so a second probe learns
	 * nothing from it */
	char salt1[128] = "";
	for (int round = 0; round < 2; round++) {
		s = sasl_server_create(SASL_SCRAM_SHA_256, f->ctx);
		const char *cf = "n,,n=ghost@example.org,r=abc";
		assert_int_equal(
		    sasl_server_step(s, true, (const unsigned char *)cf, strlen(cf), &out),
		    SASL_R_CONTINUE);
		const char *fake = strstr(buf_cstr(&out), ",s=");
		assert_non_null(fake);
		if (round == 0)
			snprintf(salt1, sizeof(salt1), "%s", fake);
		else
			assert_string_equal(fake, salt1);
		sasl_server_free(&s);
	}
	buf_free(&out);
}

static void test_sasl_bounds(void **state)
{
	struct auth_fixture *f = *state;
	struct buf out;
	static const struct {
		enum sasl_mech mech;
		size_t len; /* total response length */
		enum sasl_result want;
	} cases[] = {
	    {SASL_PLAIN, SASL_RESPONSE_MAX + 1, SASL_R_MALFORMED},
	    {SASL_LOGIN, SASL_RESPONSE_MAX + 1, SASL_R_MALFORMED},
	    {SASL_SCRAM_SHA_256, SASL_RESPONSE_MAX + 1, SASL_R_MALFORMED},
	    {SASL_LOGIN, 256, SASL_R_MALFORMED}, /* user name over 255 */
	    {SASL_LOGIN, 255, SASL_R_CONTINUE},
	    {SASL_PLAIN, 300, SASL_R_MALFORMED},
	};
	unsigned char *big = malloc(SASL_RESPONSE_MAX + 2);
	assert_non_null(big);
	memset(big, 'a', SASL_RESPONSE_MAX + 2);
	big[0] = '\0'; /* PLAIN: empty authzid, then a long authcid */
	buf_init(&out, 4096);
	for (size_t i = 0; i < N(cases); i++) {
		struct sasl_server *s = sasl_server_create(cases[i].mech, f->ctx);
		unsigned char *in = cases[i].mech == SASL_PLAIN ? big : big + 1;
		if (cases[i].mech == SASL_PLAIN && cases[i].len == 300)
			big[280] = '\0'; /* authcid of 279 octets */
		assert_int_equal(sasl_server_step(s, true, in, cases[i].len, &out), cases[i].want);
		big[280] = 'a';
		sasl_server_free(&s);
	}
	free(big);

	/* misuse: verified() outside VERIFY, password/stored outside VERIFY */
	struct sasl_server *s = sasl_server_create(SASL_PLAIN, f->ctx);
	assert_null(sasl_server_user(s));
	assert_null(sasl_server_password(s));
	assert_int_equal(sasl_server_verified(s, true), SASL_R_MALFORMED);
	assert_int_equal(sasl_server_step(s, true, (const unsigned char *)"\0a@b\0c", 6, &out),
	                 SASL_R_MALFORMED);
	sasl_server_free(&s);
	struct sasl_ctx *none = sasl_ctx_create(NULL, "h"); /* no users table: all unknown */
	s = sasl_server_create(SASL_PLAIN, none);
	assert_int_equal(sasl_server_step(s, true, (const unsigned char *)"\0a@b\0c", 6, &out),
	                 SASL_R_VERIFY);
	assert_int_equal(sasl_server_step(s, true, (const unsigned char *)"x", 1, &out),
	                 SASL_R_MALFORMED);
	sasl_server_free(&s);
	sasl_server_free(&s); /* NULL is fine */
	sasl_ctx_free(&none);
	buf_free(&out);

	static const struct {
		const char *name;
		int ret;
		enum sasl_mech mech;
	} mechs[] = {
	    {"PLAIN", 0, SASL_PLAIN},
	    {"login", 0, SASL_LOGIN},
	    {"Cram-MD5", 0, SASL_CRAM_MD5},
	    {"SCRAM-SHA-256", 0, SASL_SCRAM_SHA_256},
	    {"SCRAM-SHA-256-PLUS", -1, SASL_PLAIN},
	    {"SCRAM-SHA-1", -1, SASL_PLAIN},
	    {"", -1, SASL_PLAIN},
	};
	for (size_t i = 0; i < N(mechs); i++) {
		enum sasl_mech m = SASL_PLAIN;
		assert_int_equal(sasl_mech_parse(mechs[i].name, strlen(mechs[i].name), &m),
		                 mechs[i].ret);
		if (mechs[i].ret == 0) {
			assert_int_equal(m, mechs[i].mech);
			assert_true(strcasecmp(sasl_mech_name(m), mechs[i].name) == 0);
		}
	}
}

/* ---- hikyaku user ---- */

/* Run `hikyaku user ...` in-process with stdin from a pipe holding input and
 * stdout captured into out. */
static int usercmd_run_captured(const char *const *args, const char *input, char *out,
                                size_t outlen)
{
	char *argv[12];
	int argc = 0, pfd[2], saved_in, saved_out, rc;
	char cap[] = "/tmp/hk-test-auth-out-XXXXXX";

	while (args[argc] != NULL && argc < 11) {
		argv[argc] = (char *)args[argc];
		argc++;
	}
	argv[argc] = NULL;
	assert_int_equal(pipe(pfd), 0);
	assert_int_equal(write(pfd[1], input, strlen(input)), (ssize_t)strlen(input));
	close(pfd[1]);
	int cfd = mkstemp(cap);
	assert_true(cfd >= 0);
	fflush(stdout);
	saved_in = dup(STDIN_FILENO);
	saved_out = dup(STDOUT_FILENO);
	dup2(pfd[0], STDIN_FILENO);
	dup2(cfd, STDOUT_FILENO);
	rc = auth_user_command(argc, argv);
	fflush(stdout);
	dup2(saved_in, STDIN_FILENO);
	dup2(saved_out, STDOUT_FILENO);
	close(saved_in);
	close(saved_out);
	close(pfd[0]);
	ssize_t n = pread(cfd, out, outlen - 1, 0);
	out[n > 0 ? n : 0] = '\0';
	close(cfd);
	unlink(cap);
	return rc;
}

struct usercmd_case {
	const char *args[8]; /* after "user"; "FILE" is replaced by the path */
	const char *input;
	int rc;
	const char *out;      /* exact stdout; NULL: not checked */
	const char *user;     /* then check this user's secret ... */
	const char *password; /* ... verifies with this password (NULL: user absent) */
	const char *scheme;   /* ... and has this scheme */
};

static const struct usercmd_case usercmd_cases[] = {
    {{"list", "-f", "FILE"},
     "",
     0,
     "carol@example.org SHA512-CRYPT\nnopass@example.org -\n",
     NULL,
     NULL,
     NULL},
    {{"add", "alice@example.org", "-f", "FILE"},
     "pw one\n",
     0,
     "",
     "alice@example.org",
     "pw one",
     "CRYPT"},
    {{"add", "ALICE@example.org", "-f", "FILE"},
     "x\n",
     1,
     NULL,
     "alice@example.org",
     "pw one",
     "CRYPT"},
    {{"add", "bob", "-f", "FILE"}, "x\n", 1, NULL, NULL, NULL, NULL},
    {{"add", "bob@example.org", "--scheme", "SCRAM-SHA-256", "-f", "FILE"},
     "pw two",
     0,
     "",
     "bob@example.org",
     "pw two",
     "SCRAM-SHA-256"},
    {{"add", "dave@example.org", "--scheme=cram-md5", "-f", "FILE"},
     "pw d\n",
     0,
     "",
     "dave@example.org",
     "pw d",
     "CRAM-MD5"},
    {{"add", "eve@example.org", "--scheme", "MD5", "-f", "FILE"},
     "x\n",
     1,
     NULL,
     "eve@example.org",
     NULL,
     NULL},
    {{"add", "eve@example.org", "-f", "FILE"}, "", 1, NULL, "eve@example.org", NULL, NULL},
    {{"add", "eve@example.org", "-f", "FILE"}, "\n", 1, NULL, "eve@example.org", NULL, NULL},
    {{"passwd", "carol@example.org", "--scheme", "BLF-CRYPT", "-f", "FILE"},
     "pw three\n",
     0,
     "",
     "carol@example.org",
     "pw three",
     "BLF-CRYPT"},
    {{"passwd", "ghost@example.org", "-f", "FILE"}, "x\n", 1, NULL, NULL, NULL, NULL},
    {{"list", "-f", "FILE"},
     "",
     0,
     "carol@example.org BLF-CRYPT\nnopass@example.org -\nalice@example.org CRYPT\n"
     "bob@example.org SCRAM-SHA-256\ndave@example.org CRAM-MD5\n",
     NULL,
     NULL,
     NULL},
    {{"del", "bob@example.org", "-f", "FILE"}, "", 0, "", "bob@example.org", NULL, NULL},
    {{"del", "bob@example.org", "-f", "FILE"}, "", 1, NULL, NULL, NULL, NULL},
    /* usage errors */
    {{NULL}, "", 2, NULL, NULL, NULL, NULL},
    {{"add", "-f", "FILE"}, "", 2, NULL, NULL, NULL, NULL},
    {{"list", "x@y", "-f", "FILE"}, "", 2, NULL, NULL, NULL, NULL},
    {{"list"}, "", 2, NULL, NULL, NULL, NULL},
    {{"list", "-f", "FILE", "-c", "conf.yaml"}, "", 2, NULL, NULL, NULL, NULL},
    {{"del", "a@b", "--scheme", "CRYPT", "-f", "FILE"}, "", 2, NULL, NULL, NULL, NULL},
    {{"rename", "a@b", "-f", "FILE"}, "", 2, NULL, NULL, NULL, NULL},
    {{"list", "-x", "-f", "FILE"}, "", 2, NULL, NULL, NULL, NULL},
};

static void test_usercmd(void **state)
{
	struct auth_fixture *f = *state;
	char path[128], out[4096], err[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/cmdusers", f->dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("# keep this comment\ncarol@example.org:" SHA512_CORRECT
	      ":1000:1000::/home/carol::\n\nnopass@example.org\n",
	      fp);
	fclose(fp);
	assert_int_equal(chmod(path, 0600), 0);

	for (size_t i = 0; i < N(usercmd_cases); i++) {
		const struct usercmd_case *c = &usercmd_cases[i];
		const char *args[10] = {"user"};
		size_t n = 1;
		for (size_t k = 0; k < N(c->args) && c->args[k] != NULL; k++)
			args[n++] = strcmp(c->args[k], "FILE") == 0 ? path : c->args[k];
		args[n] = NULL;
		int rc = usercmd_run_captured(args, c->input, out, sizeof(out));
		if (rc != c->rc)
			fail_msg("usercmd case %zu: rc %d, want %d", i, rc, c->rc);
		if (c->out != NULL)
			assert_string_equal(out, c->out);
		assert_null(strstr(out, "$")); /* never a hash on stdout */
		if (c->user == NULL)
			continue;
		struct users *u = NULL;
		assert_int_equal(users_load(path, &u, err, sizeof(err)), 0);
		const char *secret = users_secret(u, c->user);
		if (c->password == NULL) {
			assert_null(secret);
		} else {
			assert_non_null(secret);
			assert_int_equal(passwd_verify(secret, c->password, strlen(c->password)),
			                 1);
			assert_int_equal(passwd_scheme_of(secret), passwd_scheme_parse(c->scheme));
		}
		users_free(&u);
	}

	/* the comment, the blank line and carol's other fields survive; the mode
	 * stays 0600 */
	fp = fopen(path, "r");
	assert_non_null(fp);
	size_t n = fread(out, 1, sizeof(out) - 1, fp);
	out[n] = '\0';
	fclose(fp);
	assert_true(strncmp(out, "# keep this comment\ncarol@example.org:{BLF-CRYPT}$2b$10$", 56) ==
	            0);
	assert_non_null(strstr(out, ":1000:1000::/home/carol::\n\nnopass@example.org\n"));
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	unlink(path);

	/* a new file is created 0640 */
	const char *args[] = {"user", "add", "new@example.org", "-f", path, NULL};
	assert_int_equal(usercmd_run_captured(args, "pw\n", out, sizeof(out)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	/* through a symlink the target is rewritten and the link stays */
	char link[160];
	snprintf(link, sizeof(link), "%s/link", f->dir);
	assert_int_equal(symlink(path, link), 0);
	const char *via[] = {"user", "add", "other@example.org", "-f", link, NULL};
	assert_int_equal(usercmd_run_captured(via, "pw\n", out, sizeof(out)), 0);
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	const char *list[] = {"user", "list", "-f", path, NULL};
	assert_int_equal(usercmd_run_captured(list, "", out, sizeof(out)), 0);
	assert_string_equal(out, "new@example.org CRYPT\nother@example.org CRYPT\n");
	unlink(link);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_passwd_verify_vectors),
	    cmocka_unit_test(test_passwd_roundtrip),
	    cmocka_unit_test(test_passwd_schemes),
	    cmocka_unit_test(test_passwd_cram_check),
	    cmocka_unit_test(test_passwd_scram_parse),
	    cmocka_unit_test(test_passwd_b64),
	    cmocka_unit_test(test_scram_rfc7677_client),
	    cmocka_unit_test_setup_teardown(test_users_secret, auth_setup, auth_teardown),
	    cmocka_unit_test_setup_teardown(test_sasl_exchanges, auth_setup, auth_teardown),
	    cmocka_unit_test_setup_teardown(test_sasl_random_nonces, auth_setup, auth_teardown),
	    cmocka_unit_test_setup_teardown(test_sasl_bounds, auth_setup, auth_teardown),
	    cmocka_unit_test(test_crypt_params),
	    cmocka_unit_test_setup_teardown(test_sasl_ctx_dummy, auth_setup, auth_teardown),
	    cmocka_unit_test_setup_teardown(test_sasl_ctx_usable, auth_setup, auth_teardown),
	    cmocka_unit_test_setup_teardown(test_usercmd, auth_setup, auth_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
