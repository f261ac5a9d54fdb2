/* fuzz_sasl.c — libFuzzer target for the SASL server mechanisms (sasl.c).
 *
 * Input: one control octet, then client responses separated by 0xFF.
 * control & 3 picks the mechanism, & 4 sends the first response as an
 * initial response (else the server speaks first), & 8 fixes the server
 * nonce/challenge so the seed corpus can replay the RFC 2195 / RFC 7677
 * exchanges. Besides memory safety, checks the one property that matters:
 * SASL_R_OK only with the right credentials. With random nonces OK is
 * impossible for CRAM-MD5 and SCRAM; with the fixed nonce only the known
 * good responses may reach it; PLAIN/LOGIN only with the right password. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/passwd.h"
#include "auth/sasl.h"
#include "auth/users.h"
#include "lib/buf.h"

#define FUZZ_SEP 0xff
#define FUZZ_STEPS_MAX 8
#define FUZZ_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define FUZZ_CRAM_NONCE "1896.697170952"
#define FUZZ_HOST "postoffice.reston.mci.net"
/* the two passwords that verify: alice's and cram's, both {CRAM-MD5} (fast) */
#define FUZZ_PASSWORD "password"
#define FUZZ_PASSWORD2 "tanstaaftanstaaf"

static const char fuzz_users_text[] =
    "alice@example.org:{CRAM-MD5}9186d855e11eba527a7a52ca82b313e180d62234f0acc9051b527243d41e"
    "2740\n"
    "cram@example.org:{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b\n"
    "scram@example.org:{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZk"
    "BFzpcXkuLmtbsT4qY=,wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\n"
    "nopass@example.org\n";

/* The client-final messages that legitimately succeed with FUZZ_NONCE
 * (scram@example.org, "pencil"; see test_auth.c). */
static const char *const fuzz_scram_good[] = {
    "c=biws,r=rOprNGfwEbeRWgbNEkqO" FUZZ_NONCE ",p=OfhOAKr9ey8fcKTGxI3SUeorp1H4Wmt1GcZeclGoK2o=",
    "c=eSws,r=rOprNGfwEbeRWgbNEkqO" FUZZ_NONCE ",p=pSJJn337Z8bg7wc4o5C1n6CUObF4xP2ijHLVUsBq21c=",
};
static const char fuzz_cram_good[] = "b913a602c7eda7a495b4e6e7334d3890";

static struct users *fuzz_users;
static struct sasl_ctx *fuzz_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[64], err[256];
	(void)argc;
	(void)argv;
	snprintf(path, sizeof(path), "/tmp/hk-fuzz-sasl-%d.users", (int)getpid());
	FILE *f = fopen(path, "w");
	if (f == NULL)
		abort();
	fputs(fuzz_users_text, f);
	fclose(f);
	if (users_load(path, &fuzz_users, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		abort();
	}
	unlink(path);
	fuzz_ctx = sasl_ctx_create(fuzz_users, FUZZ_HOST);
	return 0;
}

static bool fuzz_ok_allowed(enum sasl_mech mech, bool fixed, const unsigned char *last,
                            size_t lastlen, const unsigned char *prev, size_t prevlen,
                            bool password_ok)
{
	switch (mech) {
	case SASL_PLAIN:
	case SASL_LOGIN:
		return password_ok;
	case SASL_CRAM_MD5:
		return fixed && lastlen >= 32 &&
		       memcmp(last + lastlen - 32, fuzz_cram_good, 32) == 0;
	case SASL_SCRAM_SHA_256:
		/* OK comes on the empty response after the client-final one */
		for (size_t i = 0;
		     fixed && i < sizeof(fuzz_scram_good) / sizeof(fuzz_scram_good[0]); i++)
			if (prevlen == strlen(fuzz_scram_good[i]) &&
			    memcmp(prev, fuzz_scram_good[i], prevlen) == 0)
				return true;
		return false;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	enum sasl_mech mech = (enum sasl_mech)(data[0] & 3);
	bool initial = (data[0] & 4) != 0, fixed = (data[0] & 8) != 0, password_ok = false;
	const unsigned char *p = data + 1, *end = data + size, *prev = NULL, *last = NULL;
	size_t prevlen = 0, lastlen = 0;
	struct sasl_server *s = sasl_server_create(mech, fuzz_ctx);
	struct buf out;
	enum sasl_result r = SASL_R_CONTINUE;

	buf_init(&out, 4096);
	if (fixed)
		sasl_server_set_nonce_for_test(s, mech == SASL_CRAM_MD5 ? FUZZ_CRAM_NONCE
		                                                        : FUZZ_NONCE);
	if (!initial)
		r = sasl_server_step(s, false, NULL, 0, &out);
	for (int step = 0; step < FUZZ_STEPS_MAX && p <= end; step++) {
		const unsigned char *sep = memchr(p, FUZZ_SEP, (size_t)(end - p));
		size_t len = (size_t)((sep != NULL ? sep : end) - p);
		prev = last;
		prevlen = lastlen;
		last = p;
		lastlen = len;
		r = sasl_server_step(s, true, len > 0 ? p : NULL, len, &out);
		if (r == SASL_R_VERIFY) {
			const char *pw = sasl_server_password(s), *stored = sasl_server_stored(s);
			if (pw == NULL || stored == NULL)
				abort();
			/* only fast schemes: the dummy and crypt hashes would stall the fuzzer */
			bool ok = passwd_scheme_of(stored) == PASSWD_CRAM_MD5 &&
			          passwd_verify(stored, pw, strlen(pw)) == 1;
			password_ok = ok && (strcmp(pw, FUZZ_PASSWORD) == 0 ||
			                     strcmp(pw, FUZZ_PASSWORD2) == 0);
			r = sasl_server_verified(s, ok);
			if (sasl_server_password(s) != NULL)
				abort();
		}
		if (r == SASL_R_OK &&
		    !fuzz_ok_allowed(mech, fixed, last, lastlen, prev, prevlen, password_ok)) {
			fprintf(stderr, "SASL_R_OK without credentials (mech %d)\n", (int)mech);
			abort();
		}
		if (r == SASL_R_OK && sasl_server_user(s) == NULL)
			abort();
		if (sep == NULL)
			break;
		p = sep + 1;
	}
	buf_free(&out);
	sasl_server_free(&s);
	return 0;
}
