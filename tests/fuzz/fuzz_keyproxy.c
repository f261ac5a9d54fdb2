/* fuzz_keyproxy.c — libFuzzer target for the key proxy's frames
 * (tls/keyproxy.c). Input: one datagram as an smtpd (possibly compromised)
 * sends it to the keys process, or as keys answers. Checks that:
 * - keyproxy_request_decode / keyproxy_answer_decode never read past the
 *   input, set an error on refusal, and keep every bound they promise;
 * - an accepted frame re-encodes and decodes to the same values;
 * - the keys half (keyproxy_server_answer, with a P-256 and an RSA-1024 key
 *   made once, and DKIM keys 0 RSA-1024 and 1 Ed25519) answers every input with a well-formed SIGNATURE that names
 *   the request's id when it could be read, and never crashes.
 * Seeds in corpus/keyproxy/ are encoder outputs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tls/keyproxy.h"

static struct keyproxy_server *fuzz_server(void)
{
	static struct keyproxy_server *server; /* made once, for all inputs */
	if (server == NULL) {
		EVP_PKEY *keys[2] = {EVP_EC_gen("P-256"), EVP_RSA_gen(1024)};
		const char *error = NULL;
		if (keys[0] == NULL || keys[1] == NULL)
			abort();
		server = keyproxy_server_create(keys, 2, &error);
		if (server == NULL)
			abort();
		/* DKIM: the same RSA key (index 0) and an Ed25519 one (index 1) */
		EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		EVP_PKEY *dk[2] = {keys[1], ed};
		unsigned char *pems[2];
		size_t lens[2];
		char err[256];
		for (int i = 0; i < 2; i++) {
			BIO *bio = BIO_new(BIO_s_mem());
			char *p = NULL;
			if (ed == NULL || PEM_write_bio_PrivateKey(bio, dk[i], NULL, NULL, 0, NULL, NULL) != 1)
				abort();
			long n = BIO_get_mem_data(bio, &p);
			pems[i] = malloc((size_t)n);
			memcpy(pems[i], p, (size_t)n);
			lens[i] = (size_t)n;
			BIO_free(bio);
		}
		if (keyproxy_server_set_dkim_pem(server, (const unsigned char *const *)pems, lens, 2, err,
		                                 sizeof(err)) < 0)
			abort();
		free(pems[0]);
		free(pems[1]);
		EVP_PKEY_free(ed);
		EVP_PKEY_free(keys[0]);
		EVP_PKEY_free(keys[1]);
	}
	return server;
}

static void fuzz_request(const uint8_t *data, size_t size)
{
	struct keyproxy_request req, again;
	const char *error = NULL;
	if (keyproxy_request_decode(data, size, &req, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if (req.input_len == 0 || req.input_len > KEYPROXY_INPUT_MAX || req.input < data ||
	    req.input + req.input_len > data + size)
		abort();
	struct buf b;
	buf_init(&b, 0);
	if (keyproxy_request_encode(&b, &req) < 0 ||
	    keyproxy_request_decode(b.data, b.len, &again, &error) < 0 || again.id != req.id ||
	    again.key != req.key || again.op != req.op || again.padding != req.padding ||
	    again.input_len != req.input_len || memcmp(again.input, req.input, req.input_len) != 0)
		abort();
	buf_free(&b);
}

static void fuzz_answer(const uint8_t *data, size_t size)
{
	struct keyproxy_answer ans;
	const char *error = NULL;
	if (keyproxy_answer_decode(data, size, &ans, &error) < 0) {
		if (error == NULL)
			abort();
		return;
	}
	if ((ans.status == KEYPROXY_S_OK) != (ans.output != NULL) ||
	    ans.output_len > KEYPROXY_OUTPUT_MAX ||
	    (ans.output != NULL &&
	     (ans.output < data || ans.output + ans.output_len > data + size)))
		abort();
}

static void fuzz_serve(const uint8_t *data, size_t size)
{
	struct buf out;
	struct keyproxy_request req;
	struct keyproxy_answer ans;
	const char *error = NULL;
	buf_init(&out, 0);
	keyproxy_server_answer(fuzz_server(), data, size, &out);
	if (keyproxy_answer_decode(out.data, out.len, &ans, &error) < 0)
		abort(); /* every answer is well-formed */
	int r = keyproxy_request_decode(data, size, &req, &error);
	if (size <= KEYPROXY_FRAME_MAX && ans.id != req.id)
		abort(); /* the answer names the request whenever its id was read */
	if (r < 0 && ans.status != KEYPROXY_S_MALFORMED)
		abort();
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_request(data, size);
	fuzz_answer(data, size);
	fuzz_serve(data, size);
	return 0;
}
