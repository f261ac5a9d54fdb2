/* test_authd.c — the auth service (auth/authd.c) and its client
 * (auth/authc.c) over a SOCK_SEQPACKET socketpair on one event loop: PLAIN
 * success and failure with the lock-out, a whole SCRAM-SHA-256 exchange
 * (the client's proof computed here, RFC 5802 §3), user lookups, a
 * cancelled request that never calls back, a cancelled exchange that gives
 * its guess back, the service gone (tempfail), and malformed frames
 * answered with ERROR until the client is dropped; and smtpd's AUTH through
 * the service over loopback: 235, 535, then 454 once the service is gone,
 * the session going on. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "auth/authc.h"
#include "auth/authd.h"
#include "auth/authproto.h"
#include "auth/passwd.h"
#include "auth/users.h"
#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/shmcount.h"
#include "smtpd/smtpd.h"

#include <poll.h>

/* "correct horse" (test_auth.c) */
#define SHA512_CORRECT                                                                             \
	"{SHA512-CRYPT}$6$hikyakusalt$MHZG2BBPmvqxeOoE9xusXD0GZmO3aPktVbIc1pL3a/vF1H5KJ6vEgt"      \
	"c7jyb3z5zWPimS6dxaUkBAEPciwTDrr/"
/* RFC 7677 §3: "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096 */
#define SCRAM_PENCIL                                                                               \
	"{SCRAM-SHA-256}4096,W22ZaJ0SNY7soEsUEjb6gQ==,"                                            \
	"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"                                            \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

struct fx {
	char dir[64], path[96];
	struct event_base *base;
	struct event *tick;
	struct conf conf;
	char *mechs[3];
	struct authd *d;
	struct authc *c;
	/* the last answer */
	int calls;
	struct authc_step_result r;
	unsigned char data[4096];
	char user[256];
	enum authc_exists exists;
};

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static struct users *load_users(struct fx *f)
{
	char err[256];
	struct users *u = NULL;
	if (users_load(f->path, &u, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	return u;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/hk-test-authd-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/users", f->dir);
	FILE *fp = fopen(f->path, "w");
	if (fp == NULL)
		return -1;
	fputs("alice@example.org:" SHA512_CORRECT "\n"
	      "user@example.org:" SCRAM_PENCIL "\n",
	      fp);
	fclose(fp);
	f->base = event_base_new();
	/* EVLOOP_ONCE must wake up even when nothing else happens */
	f->tick = event_new(f->base, -1, EV_PERSIST, on_tick, f);
	struct timeval tv = {0, 5000};
	event_add(f->tick, &tv);
	f->conf.hostname = "mx.example.org";
	f->conf.auth.max_failures = 5;
	f->conf.auth.failure_window = 60000;
	f->mechs[0] = "PLAIN";
	f->mechs[1] = "LOGIN";
	f->mechs[2] = "SCRAM-SHA-256";
	f->conf.auth.mechanisms = f->mechs;
	f->conf.auth.n_mechanisms = 3;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		return -1;
	f->d = authd_create(f->base, &f->conf, load_users(f));
	authd_set_delay_step_for_test(f->d, 1);
	authd_add_client(f->d, sv[0]);
	f->c = authc_create(f->base, sv[1]);
	if (authc_wait_ready(f->c, 1000) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	authc_free(&f->c);
	authd_free(&f->d);
	event_free(f->tick);
	event_base_free(f->base);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* Run the loop until the callback count reaches want (or 5 s pass). */
static void run_until(struct fx *f, int want)
{
	for (int i = 0; i < 1000 && f->calls < want; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_int_equal(f->calls, want);
}

static void run_for(struct fx *f, int iterations)
{
	for (int i = 0; i < iterations; i++)
		event_base_loop(f->base, EVLOOP_ONCE);
}

static void on_step(void *arg, const struct authc_step_result *r)
{
	struct fx *f = arg;
	f->calls++;
	f->r = *r;
	if (r->data != NULL) {
		assert_true(r->len <= sizeof(f->data));
		memcpy(f->data, r->data, r->len);
		f->r.data = f->data;
	}
	if (r->user != NULL) {
		snprintf(f->user, sizeof(f->user), "%s", r->user);
		f->r.user = f->user;
	}
}

static void on_exists(void *arg, enum authc_exists e)
{
	struct fx *f = arg;
	f->calls++;
	f->exists = e;
}

static struct sockaddr_storage addr4(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	s4->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	return ss;
}

static struct authc_req *plain(struct fx *f, uint64_t xid, const char *addr, const char *user,
                               const char *pw)
{
	char msg[256];
	size_t ul = strlen(user), pl = strlen(pw);
	msg[0] = '\0';
	memcpy(msg + 1, user, ul);
	msg[1 + ul] = '\0';
	memcpy(msg + 2 + ul, pw, pl);
	struct sockaddr_storage ss = addr4(addr);
	return authc_step(f->c, 1, xid, SASL_PLAIN, &ss, true, false, msg, 2 + ul + pl, on_step, f);
}

static void test_ready_and_mechs(void **state)
{
	struct fx *f = *state;
	assert_int_equal(authc_wait_ready(f->c, 1000), 0);
	assert_true(authc_connected(f->c));
	assert_true(authc_has_users(f->c));
	assert_int_equal(authc_mechs(f->c), SASL_MECH_BIT(SASL_PLAIN) | SASL_MECH_BIT(SASL_LOGIN) |
	                                        SASL_MECH_BIT(SASL_SCRAM_SHA_256));
	/* a reload without users: the client hears AUTH is off */
	authd_set_users(f->d, NULL);
	run_for(f, 3);
	assert_false(authc_has_users(f->c));
}

static void test_plain_ok_and_fail(void **state)
{
	struct fx *f = *state;
	assert_non_null(plain(f, 1, "192.0.2.1", "alice@example.org", "correct horse"));
	run_until(f, 1);
	assert_int_equal(f->r.status, AUTHC_OK);
	assert_string_equal(f->r.user, "alice@example.org");

	assert_non_null(plain(f, 2, "192.0.2.1", "alice@example.org", "wrong horse"));
	run_until(f, 2);
	assert_int_equal(f->r.status, AUTHC_FAIL);
	assert_int_equal(f->r.failures, 1); /* the success gave its guess back */
	assert_false(f->r.lockout);
	/* an unknown user fails the same way */
	assert_non_null(plain(f, 3, "192.0.2.1", "bob@example.org", "correct horse"));
	run_until(f, 3);
	assert_int_equal(f->r.status, AUTHC_FAIL);
	assert_int_equal(f->r.failures, 2);
}

static void test_lockout(void **state)
{
	struct fx *f = *state;
	f->conf.auth.max_failures = 2;
	for (int i = 0; i < 2; i++) {
		assert_non_null(
		    plain(f, 10 + (uint64_t)i, "198.51.100.7", "alice@example.org", "x"));
		run_until(f, i + 1);
		assert_int_equal(f->r.status, AUTHC_FAIL);
		assert_int_equal(f->r.lockout, i == 1);
	}
	/* the address is locked, even with the right password; another is not */
	assert_non_null(plain(f, 12, "198.51.100.7", "alice@example.org", "correct horse"));
	run_until(f, 3);
	assert_int_equal(f->r.status, AUTHC_LOCKED);
	assert_non_null(plain(f, 13, "198.51.100.8", "alice@example.org", "correct horse"));
	run_until(f, 4);
	assert_int_equal(f->r.status, AUTHC_OK);
}

/* ---- SCRAM-SHA-256: the client side, RFC 5802 §3 ---- */

static void hmac256(const unsigned char *key, size_t klen, const void *msg, size_t mlen,
                    unsigned char out[32])
{
	unsigned int n = 32;
	assert_non_null(HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n));
}

static void test_scram_exchange(void **state)
{
	struct fx *f = *state;
	struct sockaddr_storage ss = addr4("203.0.113.5");
	const char *cfirst = "n,,n=user@example.org,r=rOprNGfwEbeRWgbNEkqO";
	assert_non_null(authc_step(f->c, 7, 1, SASL_SCRAM_SHA_256, &ss, true, false, cfirst,
	                           strlen(cfirst), on_step, f));
	run_until(f, 1);
	assert_int_equal(f->r.status, AUTHC_CHALLENGE);
	char sfirst[512];
	assert_true(f->r.len < sizeof(sfirst));
	memcpy(sfirst, f->r.data, f->r.len);
	sfirst[f->r.len] = '\0';
	/* r=<client nonce><server nonce>,s=<salt>,i=4096 */
	assert_true(strncmp(sfirst, "r=rOprNGfwEbeRWgbNEkqO", 22) == 0);
	assert_non_null(strstr(sfirst, ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
	const char *nonce = sfirst + 2;
	size_t nlen = (size_t)(strchr(sfirst, ',') - nonce);

	unsigned char salt[16], sp[32], ck[32], sk[32], skey[32], csig[32], proof[32], ssig[32];
	size_t salt_len;
	assert_int_equal(
	    passwd_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt), &salt_len), 0);
	assert_int_equal(
	    PKCS5_PBKDF2_HMAC("pencil", 6, salt, (int)salt_len, 4096, EVP_sha256(), 32, sp), 1);
	hmac256(sp, 32, "Client Key", 10, ck);
	SHA256(ck, 32, sk);
	hmac256(sp, 32, "Server Key", 10, skey);
	char without[256], authmsg[1024], final[512], p64[64];
	snprintf(without, sizeof(without), "c=biws,r=%.*s", (int)nlen, nonce);
	snprintf(authmsg, sizeof(authmsg), "%s,%s,%s", cfirst + 3, sfirst, without);
	hmac256(sk, 32, authmsg, strlen(authmsg), csig);
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ csig[i];
	passwd_b64_encode(proof, 32, p64, sizeof(p64));
	snprintf(final, sizeof(final), "%s,p=%s", without, p64);

	assert_non_null(
	    authc_step(f->c, 7, 1, -1, NULL, true, false, final, strlen(final), on_step, f));
	run_until(f, 2);
	assert_int_equal(f->r.status, AUTHC_CHALLENGE);
	hmac256(skey, 32, authmsg, strlen(authmsg), ssig);
	char want[64] = "v=";
	passwd_b64_encode(ssig, 32, want + 2, sizeof(want) - 2);
	assert_int_equal(f->r.len, strlen(want));
	assert_memory_equal(f->r.data, want, f->r.len);
	/* the client acknowledges the server's signature with an empty response */
	assert_non_null(authc_step(f->c, 7, 1, -1, NULL, true, false, "", 0, on_step, f));
	run_until(f, 3);
	assert_int_equal(f->r.status, AUTHC_OK);
	assert_string_equal(f->r.user, "user@example.org");
}

static void test_user_exists(void **state)
{
	struct fx *f = *state;
	assert_non_null(authc_user_exists(f->c, "Alice@Example.org", on_exists, f));
	run_until(f, 1);
	assert_int_equal(f->exists, AUTHC_YES);
	assert_non_null(authc_user_exists(f->c, "bob@example.org", on_exists, f));
	run_until(f, 2);
	assert_int_equal(f->exists, AUTHC_NO);
	/* not an address: the service refuses, the caller gets a tempfail */
	assert_non_null(authc_user_exists(f->c, "nobody", on_exists, f));
	run_until(f, 3);
	assert_int_equal(f->exists, AUTHC_EXISTS_TEMPFAIL);
}

static void test_cancel_no_callback(void **state)
{
	struct fx *f = *state;
	/* the password check is on a worker when the request is withdrawn */
	struct authc_req *r = plain(f, 1, "192.0.2.9", "alice@example.org", "correct horse");
	assert_non_null(r);
	run_for(f, 1);
	authc_cancel(f->c, &r);
	assert_null(r);
	struct authc_req *r2 = NULL;
	r2 = authc_user_exists(f->c, "alice@example.org", on_exists, f);
	authc_exchange_end(f->c, 1, 99, &r2); /* any pending request goes */
	assert_null(r2);
	run_for(f, 100); /* 0.5 s: the check and both answers are long done */
	assert_int_equal(f->calls, 0);
}

static void test_cancel_gives_the_guess_back(void **state)
{
	struct fx *f = *state;
	f->conf.auth.max_failures = 1;
	struct sockaddr_storage ss = addr4("192.0.2.77");
	/* LOGIN without an initial response: "Username:", nothing checked */
	assert_non_null(authc_step(f->c, 3, 1, SASL_LOGIN, &ss, false, false, NULL, 0, on_step, f));
	run_until(f, 1);
	assert_int_equal(f->r.status, AUTHC_CHALLENGE);
	assert_memory_equal(f->r.data, "Username:", 9);
	struct authc_req *none = NULL;
	authc_exchange_end(f->c, 3, 1, &none);
	/* the one guess of the budget is free again: no lock-out */
	assert_non_null(plain(f, 2, "192.0.2.77", "alice@example.org", "correct horse"));
	run_until(f, 2);
	assert_int_equal(f->r.status, AUTHC_OK);
	/* a bad initial response counts against a lock-out, then comes back */
	assert_non_null(authc_step(f->c, 3, 3, SASL_PLAIN, &ss, true, true, NULL, 0, on_step, f));
	run_until(f, 3);
	assert_int_equal(f->r.status, AUTHC_MALFORMED);
	assert_non_null(plain(f, 4, "192.0.2.77", "alice@example.org", "correct horse"));
	run_until(f, 4);
	assert_int_equal(f->r.status, AUTHC_OK);
}

static void test_server_gone(void **state)
{
	struct fx *f = *state;
	assert_non_null(plain(f, 1, "192.0.2.1", "alice@example.org", "correct horse"));
	assert_non_null(authc_user_exists(f->c, "alice@example.org", on_exists, f));
	authd_free(&f->d); /* before it read either */
	run_until(f, 2);
	assert_int_equal(f->r.status, AUTHC_TEMPFAIL);
	assert_int_equal(f->exists, AUTHC_EXISTS_TEMPFAIL);
	assert_false(authc_connected(f->c));
	assert_null(plain(f, 2, "192.0.2.1", "alice@example.org", "correct horse"));
	assert_null(authc_user_exists(f->c, "alice@example.org", on_exists, f));
	/* what to offer stays known: EHLO still offers AUTH, which answers 454 */
	assert_true(authc_mechs(f->c) != 0);
}

/* ---- malformed frames, straight at the service ---- */

static void expect_error(struct fx *f, int fd, uint64_t want_req)
{
	unsigned char pkt[AUTHP_FRAME_MAX];
	ssize_t n = -1;
	for (int i = 0; i < 200 && n < 0; i++) {
		event_base_loop(f->base, EVLOOP_ONCE);
		n = recv(fd, pkt, sizeof(pkt), MSG_DONTWAIT);
	}
	assert_true(n > 0);
	struct authp_msg m;
	const char *err = NULL;
	assert_int_equal(authp_decode(pkt, (size_t)n, &m, &err), 0);
	assert_int_equal(m.type, AUTHP_T_ERROR);
	assert_int_equal(m.req, want_req);
}

static void send_frame(int fd, struct buf *b)
{
	assert_int_equal(send(fd, b->data, b->len, 0), (ssize_t)b->len);
	buf_reset(b);
}

static void test_malformed_frames(void **state)
{
	struct fx *f = *state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	authd_add_client(f->d, sv[0]);
	assert_int_equal(authd_client_count(f->d), 2);
	unsigned char pkt[256];
	assert_true(recv(sv[1], pkt, sizeof(pkt), 0) > 0); /* MECHS */

	struct buf b;
	buf_init(&b, AUTHP_FRAME_MAX);
	/* too short; length field not the packet's */
	assert_int_equal(send(sv[1], "\0\0", 2, 0), 2);
	expect_error(f, sv[1], 0);
	assert_int_equal(send(sv[1], "\0\0\0\x09\x01", 5, 0), 5);
	expect_error(f, sv[1], 0);
	/* unknown type; an answer type sent as a request */
	size_t st = ctl_frame_begin(&b, 0x7f);
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 0);
	st = ctl_frame_begin(&b, AUTHP_T_OK);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 5);
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 5);
	/* a request without its id; with a tag given twice; an unknown tag */
	st = ctl_frame_begin(&b, AUTHP_T_USER);
	ctl_frame_add_str(&b, AUTHP_F_NAME, "alice@example.org");
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 0);
	st = ctl_frame_begin(&b, AUTHP_T_USER);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 6);
	ctl_frame_add_str(&b, AUTHP_F_NAME, "a@b");
	ctl_frame_add_str(&b, AUTHP_F_NAME, "alice@example.org");
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 6);
	st = ctl_frame_begin(&b, AUTHP_T_USER);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 7);
	ctl_frame_add_str(&b, 99, "x");
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 7);
	/* well-formed but meaningless: a step of an exchange never begun, a
	 * mechanism not offered, an over-long name */
	st = ctl_frame_begin(&b, AUTHP_T_STEP);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 8);
	ctl_frame_add_u64(&b, AUTHP_F_SESSION, 1);
	ctl_frame_add_u64(&b, AUTHP_F_EXCHANGE, 1);
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 8);
	st = ctl_frame_begin(&b, AUTHP_T_STEP);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 9);
	ctl_frame_add_u64(&b, AUTHP_F_SESSION, 1);
	ctl_frame_add_u64(&b, AUTHP_F_EXCHANGE, 2);
	ctl_frame_add_u64(&b, AUTHP_F_MECH, SASL_CRAM_MD5);
	ctl_frame_add(&b, AUTHP_F_ADDR, "0123456789abcdef", 16);
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 9);
	char longname[AUTHP_NAME_MAX + 2];
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	st = ctl_frame_begin(&b, AUTHP_T_USER);
	ctl_frame_add_u64(&b, AUTHP_F_REQ, 10);
	ctl_frame_add_str(&b, AUTHP_F_NAME, longname);
	ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
	send_frame(sv[1], &b);
	expect_error(f, sv[1], 10);
	/* an over-sized packet is refused unread */
	unsigned char *big = calloc(1, AUTHP_FRAME_MAX + 100);
	big[2] = 0x7f; /* length field: anything */
	assert_int_equal(send(sv[1], big, AUTHP_FRAME_MAX + 100, 0), AUTHP_FRAME_MAX + 100);
	free(big);
	expect_error(f, sv[1], 0);
	/* the good client is served all along */
	assert_non_null(authc_user_exists(f->c, "alice@example.org", on_exists, f));
	run_until(f, 1);
	assert_int_equal(f->exists, AUTHC_YES);
	/* a client that keeps sending garbage is dropped */
	for (int i = 0; i < AUTHD_ERRORS_MAX; i++)
		assert_int_equal(send(sv[1], "\0\0", 2, 0), 2);
	run_for(f, 5);
	assert_int_equal(authd_client_count(f->d), 1);
	ssize_t n;
	while ((n = recv(sv[1], pkt, sizeof(pkt), MSG_DONTWAIT)) > 0)
		;
	/* EOF, or a reset: the service closed with our garbage unread */
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	buf_free(&b);
	close(sv[1]);
}

/* A client that sends requests and never reads the answers is dropped once
 * its answers fill the output queue, not served into the void. */
static void test_client_not_reading_is_dropped(void **state)
{
	struct fx *f = *state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	authd_add_client(f->d, sv[0]);
	assert_int_equal(authd_client_count(f->d), 2);
	struct buf b;
	buf_init(&b, AUTHP_FRAME_MAX);
	for (uint64_t id = 1; id < 100000 && authd_client_count(f->d) == 2; id++) {
		size_t st = ctl_frame_begin(&b, AUTHP_T_USER);
		ctl_frame_add_u64(&b, AUTHP_F_REQ, id);
		ctl_frame_add_str(&b, AUTHP_F_NAME, "alice@example.org");
		ctl_frame_end(&b, st, AUTHP_FRAME_MAX);
		if (send(sv[1], b.data, b.len, MSG_DONTWAIT) < 0)
			id--; /* its input is full: let it read */
		buf_reset(&b);
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
	run_for(f, 3);
	assert_int_equal(authd_client_count(f->d), 1);
	buf_free(&b);
	close(sv[1]);
	/* the good client is still served */
	assert_non_null(authc_user_exists(f->c, "alice@example.org", on_exists, f));
	run_until(f, 1);
	assert_int_equal(f->exists, AUTHC_YES);
}

/* ---- smtpd's AUTH through the service ---- */

static int tcp_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET,
	                          .sin_port = htons((uint16_t)port),
	                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

/* Send line (unless NULL), turn the loop until the reply holds want. */
static void chat(struct fx *f, int fd, const char *line, const char *want)
{
	char got[4096];
	size_t n = 0;
	if (line != NULL)
		assert_int_equal(send(fd, line, strlen(line), 0), (ssize_t)strlen(line));
	got[0] = '\0';
	for (int i = 0; i < 400 && strstr(got, want) == NULL; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 5) == 1) {
			ssize_t r = recv(fd, got + n, sizeof(got) - 1 - n, 0);
			assert_true(r > 0);
			n += (size_t)r;
			got[n] = '\0';
		}
	}
	if (strstr(got, want) == NULL)
		fail_msg("wanted \"%s\", got \"%s\"", want, got);
}

static void plain_cmd(const char *user, const char *pw, char *out, size_t outlen)
{
	unsigned char msg[256];
	size_t ul = strlen(user), pl = strlen(pw);
	msg[0] = '\0';
	memcpy(msg + 1, user, ul);
	msg[1 + ul] = '\0';
	memcpy(msg + 2 + ul, pw, pl);
	struct buf b;
	buf_init(&b, 0);
	base64_encode(msg, 2 + ul + pl, &b);
	snprintf(out, outlen, "AUTH PLAIN %s\r\n", buf_cstr(&b));
	buf_free(&b);
}

static void test_smtpd_auth_and_service_gone(void **state)
{
	struct fx *f = *state;
	char yaml[512], path[] = "/tmp/hk-test-authd-conf-XXXXXX", err[512];
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sin);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
	close(lfd);
	int port = ntohs(sin.sin_port);
	snprintf(yaml, sizeof(yaml),
	         "listen:\n  - address: 127.0.0.1:%d\n    tls: none\n    auth: true\n    "
	         "plaintext_auth: true\n"
	         "local_domains: [example.org]\naccept_any_user: true\n",
	         port);
	int cfd = mkstemp(path);
	assert_true(cfd >= 0);
	assert_int_equal(write(cfd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
	close(cfd);
	struct conf *conf = NULL;
	int rc = conf_load(path, &conf, err, sizeof(err));
	unlink(path);
	if (rc < 0)
		fail_msg("conf_load: %s", err);
	struct smtpd *srv = NULL;
	const char *error = NULL;
	struct smtpd_bound *bound = NULL;
	size_t nbound = 0;
	assert_int_equal(smtpd_listeners_bind(conf, &bound, &nbound, &error), 0);
	struct shmcount *conns = shmcount_create(conf->limits.connections, 1);
	assert_non_null(conns);
	assert_int_equal(
	    smtpd_create(f->base, conf, NULL, NULL, bound, nbound, conns, &srv, &error), 0);
	free(bound);
	smtpd_set_authc(srv, f->c);
	f->c = NULL; /* smtpd's now */
	smtpd_start(srv);

	char good[256], bad[256];
	plain_cmd("alice@example.org", "correct horse", good, sizeof(good));
	plain_cmd("alice@example.org", "wrong horse", bad, sizeof(bad));
	int fd = tcp_connect(port);
	chat(f, fd, NULL, "220 ");
	chat(f, fd, "EHLO client.example\r\n", "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n");
	chat(f, fd, bad, "535 5.7.8 ");
	chat(f, fd, good, "235 2.7.0 ");
	chat(f, fd, good, "503 5.5.1 Already authenticated");
	close(fd);

	authd_free(&f->d);
	fd = tcp_connect(port);
	chat(f, fd, NULL, "220 ");
	chat(f, fd, "EHLO client.example\r\n", "250-AUTH PLAIN LOGIN SCRAM-SHA-256\r\n");
	chat(f, fd, good, "454 4.7.0 Temporary authentication failure");
	chat(f, fd, "AUTH LOGIN\r\n", "454 4.7.0 ");
	chat(f, fd, "NOOP\r\n", "250 ");
	close(fd);
	for (int i = 0; i < 20; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	smtpd_free(&srv);
	shmcount_free(&conns);
	conf_free(&conf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ready_and_mechs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_plain_ok_and_fail, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lockout, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_scram_exchange, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_exists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_no_callback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cancel_gives_the_guess_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_server_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_frames, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_not_reading_is_dropped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_smtpd_auth_and_service_gone, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
