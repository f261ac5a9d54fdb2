/* fuzz_authframe.c — libFuzzer target for the auth service's frames
 * (auth/authproto.c, auth/authd.c). Input: one packet as a compromised
 * smtpd could send it on the auth socket. Checks that authp_decode() keeps
 * every field inside the packet and within its bound, then hands the packet
 * to a live service (users file with a SCRAM user, every mechanism
 * offered) over a SOCK_SEQPACKET socketpair and runs its loop, so the
 * request handlers see it too; its answers must decode. A client dropped
 * for too many errors is replaced. Seeds in corpus/authframe/. */
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "auth/authd.h"
#include "auth/authproto.h"
#include "auth/users.h"
#include "conf/conf.h"

static struct event_base *base;
static struct authd *d;
static struct conf conf;
static int peer = -1;

static void fuzz_connect(void)
{
	int sv[2];
	if (peer >= 0)
		close(peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		abort();
	authd_add_client(d, sv[0]);
	peer = sv[1];
}

/* At exit, join the service's worker threads before OpenSSL's own atexit
 * cleanup runs: a PBKDF2 still running then would use freed locks (a crash
 * that the sanitizers' reporting can deadlock on). Registered after
 * OpenSSL's handler, so it runs before it. */
static void fuzz_exit(void)
{
	authd_free(&d);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static char *mechs[] = {"PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"};
	char path[] = "/tmp/hk-fuzz-authframe-XXXXXX", err[256];
	int fd = mkstemp(path);
	FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (fp == NULL)
		abort();
	fputs("user@example.org:{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"
	      "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
	      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\n"
	      "cram@example.org:{CRAM-MD5}"
	      "d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b\n",
	      fp);
	fclose(fp);
	struct users *u = NULL;
	if (users_load(path, &u, err, sizeof(err)) < 0)
		abort();
	unlink(path);
	conf.hostname = "mx.example.org";
	conf.auth.max_failures = 1000000;
	conf.auth.failure_window = 1000;
	conf.auth.mechanisms = mechs;
	conf.auth.n_mechanisms = 4;
	base = event_base_new();
	d = authd_create(base, &conf, u);
	authd_set_delay_step_for_test(d, 0);
	if (OPENSSL_init_crypto(0, NULL) != 1 || atexit(fuzz_exit) != 0)
		abort();
	fuzz_connect();
	return 0;
}

static void fuzz_check_decode(const uint8_t *data, size_t size)
{
	struct authp_msg m;
	const char *err = NULL;
	if (authp_decode(data, size, &m, &err) < 0) {
		if (err == NULL)
			abort();
		return;
	}
	const uint8_t *end = data + size;
	if (m.data != NULL &&
	    (m.data < data || m.data + m.data_len > end || m.data_len > SASL_RESPONSE_MAX))
		abort();
	if (m.name != NULL &&
	    ((const uint8_t *)m.name < data || (const uint8_t *)m.name + m.name_len > end ||
	     m.name_len > AUTHP_NAME_MAX || memchr(m.name, 0, m.name_len) != NULL))
		abort();
	if (m.addr != NULL && (m.addr < data || m.addr + AUTHP_ADDR_LEN > end))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_check_decode(data, size);
	if (size == 0 || size > AUTHP_FRAME_MAX + 64)
		return 0;
	if (send(peer, data, size, MSG_DONTWAIT) < 0)
		fuzz_connect();
	for (int i = 0; i < 4; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	uint8_t pkt[AUTHP_FRAME_MAX];
	ssize_t n;
	while ((n = recv(peer, pkt, sizeof(pkt), MSG_DONTWAIT)) > 0) {
		struct authp_msg m;
		const char *err = NULL;
		if (authp_decode(pkt, (size_t)n, &m, &err) < 0)
			abort(); /* the service's answers are always well-formed */
	}
	if (n == 0 || authd_client_count(d) == 0)
		fuzz_connect();
	return 0;
}
