/* test_smtpc.c — the SMTP/LMTP client (src/smtpc/client.c) against scripted
 * servers run in this process on the same libevent loop.
 *
 * A scripted server listens on 127.0.0.1:0 (or a unix socket for LMTP) and
 * answers from a table: each step names the command prefix it expects and
 * the canned reply, plus flags (switch to TLS after the reply, close, stay
 * silent, enter DATA mode). It records every octet it receives, each read
 * separately (to check what was pipelined in one write), the command lines
 * and the DATA content. The cases are one table: scripts for up to two
 * targets, the destination and message knobs, and the expected per-recipient
 * results and bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "conf/conf.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/workq.h"
#include "mail/smtp_params.h"
#include "smtpc/client.h"
#include "tls/tls.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* --- scripted server ------------------------------------------------------ */

#define ST_TLS 0x1    /* after the reply, TLS server handshake */
#define ST_CLOSE 0x2  /* after the reply (if any), close */
#define ST_SILENT 0x4 /* never reply, keep the connection */
#define ST_DATA 0x8   /* after the reply, read message data up to "." */

struct step {
	const char *expect; /* command prefix; "" for the greeting; "." end of data */
	const char *reply;  /* sent as is; NULL: none */
	unsigned flags;
};

struct sconn;

struct server {
	struct event_base *base;
	struct evconnlistener *lis;
	const struct step *script;
	size_t nsteps;
	const struct step *script2; /* for the second and later connections, or NULL */
	struct tls_server *tls;
	uint16_t port;
	char unix_path[108];
	struct buf log;   /* command lines as received */
	struct buf data;  /* DATA content as received, up to and with ".\r\n" */
	struct buf reads; /* every read, each followed by '\x01' */
	int nconn;
	int errors;
	int completed; /* connections that ran the script to the end */
	struct sconn *conns;
};

struct sconn {
	struct server *srv;
	struct sconn *next;
	struct bufferevent *bev;
	const struct step *script;
	size_t nsteps;
	size_t step;
	size_t pending; /* octets in the input already recorded */
	bool in_data, closing, dead;
};

static void sconn_free(struct sconn *sc)
{
	if (sc->bev != NULL)
		bufferevent_free(sc->bev);
	sc->bev = NULL;
	sc->dead = true;
}

static void sconn_read(struct bufferevent *bev, void *arg);
static void sconn_write(struct bufferevent *bev, void *arg);
static void sconn_event(struct bufferevent *bev, short what, void *arg);

/* Run the current step against what arrived; returns false if the
 * connection was closed or its bufferevent replaced. */
static bool sconn_step(struct sconn *sc, const char *line)
{
	struct server *srv = sc->srv;
	if (sc->step >= sc->nsteps) {
		srv->errors++;
		fprintf(stderr, "server: unexpected after the script: %s\n", line);
		bufferevent_write(sc->bev, "500 unexpected\r\n", 16);
		return true;
	}
	const struct step *st = &sc->script[sc->step];
	if (strncmp(line, st->expect, strlen(st->expect)) != 0) {
		srv->errors++;
		fprintf(stderr, "server: step %zu wants %s, got %s\n", sc->step, st->expect, line);
		bufferevent_write(sc->bev, "500 unexpected\r\n", 16);
		return true;
	}
	sc->step++;
	if (sc->step == sc->nsteps)
		srv->completed++;
	if (st->flags & ST_SILENT)
		return true;
	if (st->reply != NULL)
		bufferevent_write(sc->bev, st->reply, strlen(st->reply));
	if (st->flags & ST_DATA)
		sc->in_data = true;
	if (st->flags & ST_CLOSE) {
		if (st->reply == NULL) {
			sconn_free(sc);
		} else {
			sc->closing = true;
			bufferevent_disable(sc->bev, EV_READ);
		}
		return false;
	}
	if (st->flags & ST_TLS) {
		SSL *ssl = tls_server_new_ssl(srv->tls);
		assert_non_null(ssl);
		struct bufferevent *f = bufferevent_openssl_filter_new(
		    srv->base, sc->bev, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
		assert_non_null(f);
		sc->bev = f;
		sc->pending = 0;
		bufferevent_setcb(f, sconn_read, sconn_write, sconn_event, sc);
		bufferevent_enable(f, EV_READ | EV_WRITE);
		return false;
	}
	return true;
}

static void sconn_read(struct bufferevent *bev, void *arg)
{
	struct sconn *sc = arg;
	struct server *srv = sc->srv;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	const unsigned char *p = evbuffer_pullup(in, -1);

	if (sc->closing || sc->dead)
		return;
	buf_append(&srv->reads, p + sc->pending, n - sc->pending);
	buf_append(&srv->reads, "\x01", 1);
	char *line;
	size_t len;
	bool go = true;
	while (go && (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		if (sc->in_data) {
			buf_append(&srv->data, line, len);
			buf_append(&srv->data, "\r\n", 2);
			if (strcmp(line, ".") == 0) {
				sc->in_data = false;
				go = sconn_step(sc, ".");
			}
		} else {
			buf_append(&srv->log, line, len);
			buf_append(&srv->log, "\r\n", 2);
			go = sconn_step(sc, line);
		}
		free(line);
	}
	if (sc->bev == bev)
		sc->pending = evbuffer_get_length(in);
}

static void sconn_write(struct bufferevent *bev, void *arg)
{
	struct sconn *sc = arg;
	if (sc->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		sconn_free(sc);
}

static void sconn_event(struct bufferevent *bev, short what, void *arg)
{
	struct sconn *sc = arg;
	(void)bev;
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		sconn_free(sc);
}

static size_t script_len(const struct step *script)
{
	size_t n = 0;
	while (script[n].expect != NULL)
		n++;
	return n;
}

static void server_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
	struct server *srv = arg;
	(void)lis;
	(void)sa;
	(void)salen;
	struct sconn *sc = calloc(1, sizeof(*sc));
	assert_non_null(sc);
	sc->srv = srv;
	sc->next = srv->conns;
	srv->conns = sc;
	srv->nconn++;
	sc->script = srv->nconn > 1 && srv->script2 != NULL ? srv->script2 : srv->script;
	sc->nsteps = script_len(sc->script);
	sc->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	assert_non_null(sc->bev);
	bufferevent_setcb(sc->bev, sconn_read, sconn_write, sconn_event, sc);
	bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
	sconn_step(sc, ""); /* the greeting */
}

static void server_start(struct server *srv, struct event_base *base, const struct step *script,
                         struct tls_server *tls, const char *unix_path)
{
	memset(srv, 0, sizeof(*srv));
	srv->base = base;
	srv->script = script;
	srv->nsteps = script_len(script);
	srv->tls = tls;
	buf_init(&srv->log, 0);
	buf_init(&srv->data, 0);
	buf_init(&srv->reads, 0);
	buf_append(&srv->reads, "\x01", 1);
	if (unix_path != NULL) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		snprintf(srv->unix_path, sizeof(srv->unix_path), "%s", unix_path);
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", unix_path);
		unlink(unix_path);
		srv->lis = evconnlistener_new_bind(base, server_accept, srv, LEV_OPT_CLOSE_ON_FREE,
		                                   16, (struct sockaddr *)&sun, sizeof(sun));
		assert_non_null(srv->lis);
		return;
	}
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	srv->lis = evconnlistener_new_bind(base, server_accept, srv,
	                                   LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
	                                   (struct sockaddr *)&sin, sizeof(sin));
	assert_non_null(srv->lis);
	socklen_t sl = sizeof(sin);
	assert_int_equal(getsockname(evconnlistener_get_fd(srv->lis), (struct sockaddr *)&sin, &sl),
	                 0);
	srv->port = ntohs(sin.sin_port);
}

static void server_stop(struct server *srv)
{
	while (srv->conns != NULL) {
		struct sconn *sc = srv->conns;
		srv->conns = sc->next;
		sconn_free(sc);
		free(sc);
	}
	if (srv->lis != NULL)
		evconnlistener_free(srv->lis);
	if (srv->unix_path[0] != '\0')
		unlink(srv->unix_path);
	buf_free(&srv->log);
	buf_free(&srv->data);
	buf_free(&srv->reads);
}

/* A port nobody listens on: bind, read the port, close. */
static uint16_t port_refused(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t sl = sizeof(sin);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

/* --- scripts ---------------------------------------------------------------- */

#define GREET                                                                                      \
	{                                                                                          \
		"", "220 mx.test ESMTP\r\n", 0                                                     \
	}
#define QUIT                                                                                       \
	{                                                                                          \
		"QUIT", "221 2.0.0 bye\r\n", ST_CLOSE                                              \
	}
#define END                                                                                        \
	{                                                                                          \
		NULL, NULL, 0                                                                      \
	}
#define EHLO_FULL                                                                                  \
	"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250-8BITMIME\r\n"                     \
	"250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n"

static const struct step sc_pipelined[] = {
    GREET,
    {"EHLO client.test", EHLO_FULL, 0},
    {"MAIL FROM:<a@x> SIZE=25 BODY=8BITMIME", "250 2.1.0 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 2.1.5 ok\r\n", 0},
    {"RCPT TO:<c@y>", "250 2.1.5 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 2.0.0 queued as X\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_plain[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 HELP\r\n", 0},
    {"MAIL FROM:<a@x>", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 ok\r\n", 0},
    {"RCPT TO:<c@y>", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_helo[] = {
    GREET,
    {"EHLO", "502 5.5.2 what is EHLO\r\n", 0},
    {"HELO client.test", "250 mx.test\r\n", 0},
    {"MAIL FROM:<a@x>", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_mixed[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 2.1.5 ok\r\n", 0},
    {"RCPT TO:<c@y>", "451 4.2.1 try later\r\n", 0},
    {"RCPT TO:<d@y>", "550-5.1.1 no such\r\n550 5.1.1 user\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 2.0.0 queued\r\n", 0},
    QUIT,
    END,
};

/* A recipient probe (smtpd's verify_recipients): MAIL and RCPTs, no DATA. */
static const struct step sc_probe[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL FROM:<a@x>", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 2.1.5 ok\r\n", 0},
    {"RCPT TO:<c@y>", "451 4.2.1 try later\r\n", 0},
    {"RCPT TO:<d@y>", "550 5.1.1 no such user\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_probe_plain[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 HELP\r\n", 0},
    {"MAIL FROM:<a@x>", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "550 5.1.1 no such user\r\n", 0},
    {"RCPT TO:<c@y>", "250 2.1.5 ok\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_mail5xx[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL", "553 5.7.1 sender refused\r\n", 0},
    {"RCPT", "503 5.5.1 no MAIL\r\n", 0},
    {"RCPT", "503 5.5.1 no MAIL\r\n", 0},
    {"DATA", "503 5.5.1 no MAIL\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_greet4xx[] = {
    {"", "421 4.3.2 busy\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_simple[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_size[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_noutf8[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_dsn[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-DSN\r\n250 PIPELINING\r\n", 0},
    {"MAIL FROM:<a@x> RET=HDRS ENVID=env+2B1", "250 ok\r\n", 0},
    {"RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_nodsn[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL FROM:<a@x>", "250 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_lmtp[] = {
    {"", "220 lmtp.test LMTP\r\n", 0},
    {"LHLO client.test", "250-lmtp.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n", 0},
    {"MAIL", "250 2.1.0 ok\r\n", 0},
    {"RCPT TO:<b@y>", "250 2.1.5 ok\r\n", 0},
    {"RCPT TO:<c@y>", "250 2.1.5 ok\r\n", 0},
    {"RCPT TO:<d@y>", "550 5.1.1 unknown\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 2.0.0 <b@y> delivered\r\n452 4.2.2 <c@y> over quota\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_silent_ehlo[] = {
    GREET,
    {"EHLO", NULL, ST_SILENT},
    END,
};

static const struct step sc_silent_dot[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", NULL, ST_SILENT},
    END,
};

static const struct step sc_drop_dot[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", NULL, ST_CLOSE},
    END,
};

static const struct step sc_auth_plain[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-AUTH LOGIN PLAIN\r\n250 PIPELINING\r\n", 0},
    {"AUTH PLAIN ", "235 2.7.0 ok\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_auth_login[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 AUTH LOGIN\r\n", 0},
    {"AUTH LOGIN", "334 VXNlcm5hbWU6\r\n", 0},
    {"dXNlcg==", "334 UGFzc3dvcmQ6\r\n", 0},
    {"c2VjcmV0", "235 2.7.0 ok\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_auth_fail[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 AUTH PLAIN\r\n", 0},
    {"AUTH PLAIN ", "535 5.7.8 bad credentials\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_starttls[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-STARTTLS\r\n250 SIZE 1000\r\n", 0},
    {"STARTTLS", "220 2.0.0 go ahead\r\n", ST_TLS},
    {"EHLO", "250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_starttls_handshake_only[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 STARTTLS\r\n", 0},
    {"STARTTLS", "220 2.0.0 go ahead\r\n", ST_TLS},
    END,
};

static const struct step sc_starttls_refused_quit[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n", 0},
    {"STARTTLS", "454 4.7.0 TLS not available\r\n", 0},
    QUIT,
    END,
};

static const struct step sc_starttls_refused[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250-STARTTLS\r\n250 PIPELINING\r\n", 0},
    {"STARTTLS", "454 4.7.0 TLS not available\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};

/* --- cases ------------------------------------------------------------------ */

struct rcpt_want {
	bool ok, permanent;
	int code;
	const char *enh;
};

#define TARGET_REFUSED ((const struct step *)1)

struct client_case {
	const char *name;
	const struct step *a; /* first target; TARGET_REFUSED: nobody listens */
	const struct step *b; /* second target or NULL */
	enum smtpc_tls tls;
	bool lmtp_unix;
	bool ca;          /* smtpc with the test certificate as CA */
	bool auth;        /* user "user", password "secret" */
	uint64_t timeout; /* command timeout ms; 0: 3 s */
	/* message */
	size_t nrcpts;
	bool smtputf8, dsn;
	bool probe; /* verify the recipients only: no DATA */
	/* expectations (server checks apply to the last target) */
	bool permanent;
	int code;
	const char *enh;
	const char *text; /* substring of the result text, or NULL */
	struct rcpt_want rcpts[3];
	const char *reads;   /* one read that must be seen exactly, or NULL */
	const char *data;    /* exact DATA content, or NULL */
	const char *not_log; /* must not be in the command log */
	bool tls_used;
	bool incomplete;  /* the last server's script does not run to its end */
	bool dsn_offered; /* the result says the server offered DSN */
};

#define OK250                                                                                      \
	{                                                                                          \
		true, false, 250, ""                                                               \
	}
#define OK250E                                                                                     \
	{                                                                                          \
		true, false, 250, "2.0.0"                                                          \
	}

static const struct client_case cases[] = {
    {.name = "pipelined",
     .a = sc_pipelined,
     .nrcpts = 2,
     .code = 250,
     .enh = "2.0.0",
     .rcpts = {OK250E, OK250E},
     .reads = "\x01MAIL FROM:<a@x> SIZE=25 BODY=8BITMIME\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\n"
              "DATA\r\n\x01",
     .data = "Subject: t\r\n\r\n..line\r\nlast\r\n.\r\n"},
    {.name = "no pipelining",
     .a = sc_plain,
     .nrcpts = 2,
     .code = 250,
     .rcpts = {OK250, OK250},
     .reads = "\x01MAIL FROM:<a@x>\r\n\x01RCPT TO:<b@y>\r\n\x01RCPT TO:<c@y>\r\n\x01"
              "DATA\r\n\x01",
     .data = "Subject: t\r\n\r\n..line\r\nlast\r\n.\r\n"},
    {.name = "EHLO refused, HELO",
     .a = sc_helo,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250},
     .not_log = "BODY="},
    {.name = "per-recipient results",
     .a = sc_mixed,
     .nrcpts = 3,
     .code = 250,
     .enh = "2.0.0",
     .rcpts = {OK250E, {false, false, 451, "4.2.1"}, {false, true, 550, "5.1.1"}}},
    {.name = "probe, pipelined",
     .a = sc_probe,
     .nrcpts = 3,
     .probe = true,
     .rcpts = {{true, false, 250, "2.1.5"}, {false, false, 451, "4.2.1"},
               {false, true, 550, "5.1.1"}},
     .reads = "\x01MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nRCPT TO:<d@y>\r\n"
              "\x01"},
    {.name = "probe, no pipelining",
     .a = sc_probe_plain,
     .nrcpts = 2,
     .probe = true,
     .rcpts = {{false, true, 550, "5.1.1"}, {true, false, 250, "2.1.5"}},
     .reads = "\x01RCPT TO:<c@y>\r\n\x01QUIT\r\n\x01"},
    {.name = "MAIL 5xx",
     .a = sc_mail5xx,
     .nrcpts = 2,
     .permanent = true,
     .code = 553,
     .enh = "5.7.1",
     .text = "sender refused",
     .rcpts = {{false, true, 553, "5.7.1"}, {false, true, 553, "5.7.1"}}},
    {.name = "4xx greeting, next target",
     .a = sc_greet4xx,
     .b = sc_simple,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250}},
    {.name = "refused, next target",
     .a = TARGET_REFUSED,
     .b = sc_simple,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250}},
    {.name = "all targets fail",
     .a = TARGET_REFUSED,
     .b = sc_greet4xx,
     .nrcpts = 1,
     .code = 421,
     .enh = "4.3.2",
     .rcpts = {{false, false, 421, "4.3.2"}}},
    {.name = "SIZE over the limit",
     .a = sc_size,
     .nrcpts = 1,
     .permanent = true,
     .code = 552,
     .enh = "5.3.4",
     .rcpts = {{false, true, 552, "5.3.4"}}},
    {.name = "SMTPUTF8 not offered",
     .a = sc_noutf8,
     .nrcpts = 1,
     .smtputf8 = true,
     .permanent = true,
     .enh = "5.6.7",
     .text = "the message needs SMTPUTF8 and the server does not offer it",
     .rcpts = {{false, true, 0, "5.6.7"}}},
    {.name = "DSN offered",
     .a = sc_dsn,
     .nrcpts = 1,
     .dsn = true,
     .dsn_offered = true,
     .code = 250,
     .rcpts = {OK250},
     .reads = "\x01MAIL FROM:<a@x> RET=HDRS ENVID=env+2B1\r\n"
              "RCPT TO:<b@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y\r\nDATA\r\n\x01"},
    {.name = "DSN not offered",
     .a = sc_nodsn,
     .nrcpts = 1,
     .dsn = true,
     .code = 250,
     .rcpts = {OK250},
     .reads = "\x01MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n\x01"},
    {.name = "LMTP per-recipient replies",
     .a = sc_lmtp,
     .lmtp_unix = true,
     .nrcpts = 3,
     .code = 452,
     .enh = "4.2.2",
     .rcpts = {OK250E, {false, false, 452, "4.2.2"}, {false, true, 550, "5.1.1"}},
     .data = "Subject: t\r\n\r\n..line\r\nlast\r\n.\r\n"},
    {.name = "timeout before the transaction",
     .a = sc_silent_ehlo,
     .timeout = 300,
     .nrcpts = 1,
     .text = "timeout",
     .rcpts = {{false, false, 0, "4.4.2"}}},
    {.name = "timeout after the dot",
     .a = sc_silent_dot,
     .timeout = 300,
     .nrcpts = 1,
     .text = "timeout",
     .rcpts = {{false, false, 0, "4.4.2"}}},
    {.name = "dropped after the dot",
     .a = sc_drop_dot,
     .nrcpts = 1,
     .text = "closed",
     .rcpts = {{false, false, 0, "4.4.2"}}},
    {.name = "AUTH PLAIN",
     .a = sc_auth_plain,
     .auth = true,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250}},
    {.name = "AUTH LOGIN",
     .a = sc_auth_login,
     .auth = true,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250}},
    {.name = "AUTH refused: temporary",
     .a = sc_auth_fail,
     .auth = true,
     .nrcpts = 1,
     .code = 535,
     .enh = "5.7.8",
     .rcpts = {{false, false, 535, "5.7.8"}}},
    {.name = "STARTTLS may",
     .a = sc_starttls,
     .tls = SMTPC_TLS_MAY,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250},
     .tls_used = true,
     .data = "Subject: t\r\n\r\n..line\r\nlast\r\n.\r\n"},
    {.name = "STARTTLS may, refused: plaintext",
     .a = sc_starttls_refused,
     .tls = SMTPC_TLS_MAY,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250}},
    {.name = "encrypt without STARTTLS",
     .a = sc_noutf8,
     .tls = SMTPC_TLS_ENCRYPT,
     .nrcpts = 1,
     .text = "TLS required but not available",
     .rcpts = {{false, false, 0, "4.7.5"}}},
    {.name = "encrypt, STARTTLS refused",
     .a = sc_starttls_refused_quit,
     .tls = SMTPC_TLS_ENCRYPT,
     .nrcpts = 1,
     .text = "TLS required but not available",
     .rcpts = {{false, false, 0, "4.7.5"}}},
    {.name = "verify, self-signed: fails",
     .a = sc_starttls_handshake_only,
     .tls = SMTPC_TLS_VERIFY,
     .nrcpts = 1,
     .text = "certificate verification failed",
     .rcpts = {{false, false, 0, "4.7.5"}},
     .incomplete = true},
    {.name = "verify with the CA",
     .a = sc_starttls,
     .tls = SMTPC_TLS_VERIFY,
     .ca = true,
     .nrcpts = 1,
     .code = 250,
     .rcpts = {OK250},
     .tls_used = true},
};

/* --- driver ----------------------------------------------------------------- */

struct fixture {
	char dir[64];
	char cert[128];
	struct tls_server *tls;
};

static struct fixture fx;

struct run {
	struct event_base *base;
	int calls;
	struct smtpc_result res;
	struct smtpc_rcpt_result rcpts[3];
};

static void run_done(const struct smtpc_result *res, void *arg)
{
	struct run *run = arg;
	run->calls++;
	run->res = *res;
	assert_true(res->nrcpts <= 3);
	memcpy(run->rcpts, res->rcpts, res->nrcpts * sizeof(*res->rcpts));
	event_base_loopexit(run->base, NULL);
}

static void target_set(struct smtpc_target *t, uint16_t port, const char *host)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&t->addr;
	memset(t, 0, sizeof(*t));
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	t->addrlen = sizeof(*sin);
	snprintf(t->host, sizeof(t->host), "%s", host);
}

static const char msg_data[] = "Subject: t\r\n\r\n.line\r\nlast";
static const char *const msg_rcpts[] = {"b@y", "c@y", "d@y"};
static const unsigned msg_notify[] = {SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE, 0, 0};
static const char *const msg_orcpts[] = {"rfc822;b@y", NULL, NULL};

static void check_auth_plain(const struct server *srv)
{
	const char *p = strstr(buf_cstr(&srv->log), "AUTH PLAIN ");
	assert_non_null(p);
	p += strlen("AUTH PLAIN ");
	const char *e = strstr(p, "\r\n");
	assert_non_null(e);
	struct buf dec;
	buf_init(&dec, 0);
	assert_int_equal(base64_decode(p, (size_t)(e - p), &dec), 0);
	assert_int_equal(dec.len, 12);
	assert_memory_equal(dec.data, "\0user\0secret", 12);
	buf_free(&dec);
}

static void run_case(const struct client_case *c)
{
	struct event_base *base = event_base_new();
	struct server sa, sb;
	struct smtpc_target targets[2];
	char path[128], err[256];
	bool have_a = c->a != TARGET_REFUSED;

	assert_non_null(base);
	snprintf(path, sizeof(path), "%s/lmtp.sock", fx.dir);
	if (have_a) {
		server_start(&sa, base, c->a, fx.tls, c->lmtp_unix ? path : NULL);
		target_set(&targets[0], sa.port, "mx1.test");
	} else {
		target_set(&targets[0], port_refused(), "mx1.test");
	}
	if (c->b != NULL) {
		server_start(&sb, base, c->b, fx.tls, NULL);
		target_set(&targets[1], sb.port, "mx2.test");
	}
	if (c->tls == SMTPC_TLS_VERIFY)
		snprintf(targets[0].host, sizeof(targets[0].host), "%s", "localhost");
	struct server *last = c->b != NULL ? &sb : &sa;

	struct smtpc *cl = smtpc_create(base, c->ca ? fx.cert : NULL, err, sizeof(err));
	assert_non_null(cl);
	struct smtpc_dest dest = {
	    .targets = targets,
	    .ntargets = c->b != NULL ? 2 : 1,
	    .unix_path = c->lmtp_unix ? path : NULL,
	    .lmtp = c->lmtp_unix,
	    .tls = c->tls,
	    .helo_name = "client.test",
	    .auth_user = c->auth ? "user" : NULL,
	    .auth_pass = c->auth ? "secret" : NULL,
	    .connect_timeout_ms = 2000,
	    .command_timeout_ms = c->timeout != 0 ? c->timeout : 3000,
	    .data_timeout_ms = c->timeout != 0 ? c->timeout : 3000,
	};
	struct smtpc_msg msg = {
	    .sender = "a@x",
	    .rcpts = msg_rcpts,
	    .notify = c->dsn ? msg_notify : NULL,
	    .orcpts = c->dsn ? msg_orcpts : NULL,
	    .nrcpts = c->nrcpts,
	    .envid = c->dsn ? "env+2B1" : NULL,
	    .ret = c->dsn ? SMTP_RET_HDRS : SMTP_RET_NONE,
	    .body = SMTP_BODY_8BITMIME,
	    .smtputf8 = c->smtputf8,
	    .probe = c->probe,
	    .data = (const unsigned char *)msg_data,
	    .len = sizeof(msg_data) - 1,
	};
	struct run run = {.base = base};
	struct timeval limit = {10, 0}, t0, t1;

	gettimeofday(&t0, NULL);
	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	assert_int_equal(run.calls, 0); /* never from inside smtpc_deliver */
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	gettimeofday(&t1, NULL);
	if (run.calls != 1)
		fail_msg("%s: callback ran %d times", c->name, run.calls);

	const struct smtpc_result *r = &run.res;
	if (r->permanent != c->permanent || r->code != c->code)
		fail_msg("%s: permanent=%d code=%d text=%s", c->name, r->permanent, r->code,
		         r->text);
	if (c->enh != NULL)
		assert_string_equal(r->enh, c->enh);
	if (c->text != NULL && strstr(r->text, c->text) == NULL)
		fail_msg("%s: text %s lacks %s", c->name, r->text, c->text);
	assert_int_equal(r->nrcpts, c->nrcpts);
	for (size_t i = 0; i < c->nrcpts; i++) {
		const struct rcpt_want *w = &c->rcpts[i];
		const struct smtpc_rcpt_result *rr = &run.rcpts[i];
		if (rr->ok != w->ok || rr->permanent != w->permanent || rr->code != w->code ||
		    strcmp(rr->enh, w->enh) != 0)
			fail_msg("%s: rcpt %zu: ok=%d permanent=%d code=%d enh=%s text=%s", c->name,
			         i, rr->ok, rr->permanent, rr->code, rr->enh, rr->text);
	}
	assert_int_equal(last->errors, 0);
	if (!c->incomplete && last->completed != 1)
		fail_msg("%s: the server script did not complete", c->name);
	if (c->reads != NULL && strstr(buf_cstr(&last->reads), c->reads) == NULL)
		fail_msg("%s: reads lack the expected write; got %s", c->name,
		         buf_cstr(&last->reads));
	if (c->data != NULL)
		assert_string_equal(buf_cstr(&last->data), c->data);
	if (c->not_log != NULL)
		assert_null(strstr(buf_cstr(&last->log), c->not_log));
	if (c->auth && c->a == sc_auth_plain)
		check_auth_plain(last);
	if (c->tls_used) {
		/* one log token: version:cipher (issue 8) */
		if (strncmp(r->tls_info, "TLSv1.", 6) != 0 || strchr(r->tls_info, ':') == NULL ||
		    strchr(r->tls_info, ' ') != NULL)
			fail_msg("%s: tls_info %s", c->name, r->tls_info);
	} else {
		assert_string_equal(r->tls_info, "");
	}
	if (c->code != 0 || c->b != NULL) /* a server answered */
		assert_true(r->connected);
	if (r->dsn_offered != c->dsn_offered)
		fail_msg("%s: dsn_offered=%d", c->name, r->dsn_offered);
	if (!c->lmtp_unix) {
		assert_string_equal(r->remote_addr, "127.0.0.1");
		if (c->code == 250)
			assert_string_equal(r->remote_mta, c->b != NULL ? "mx2.test"
			                                   : c->tls == SMTPC_TLS_VERIFY
			                                       ? "localhost"
			                                       : "mx1.test");
	} else {
		assert_string_equal(r->remote_mta, path);
	}
	if (c->timeout != 0) { /* the timeout, not the 10 s safety net */
		long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
		assert_true(ms >= 250 && ms < 3000);
	}

	smtpc_free(&cl);
	assert_null(cl);
	if (have_a)
		server_stop(&sa);
	if (c->b != NULL)
		server_stop(&sb);
	event_base_free(base);
}

static void test_client_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(cases); i++) {
		fprintf(stderr, "case: %s\n", cases[i].name);
		run_case(&cases[i]);
	}
}

/* smtpc_free with a session in flight: its callback never runs. */
static void test_client_free_in_flight(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct server sa;
	struct smtpc_target t;
	char err[256];

	server_start(&sa, base, sc_silent_ehlo, NULL, NULL);
	target_set(&t, sa.port, "mx.test");
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	assert_non_null(cl);
	struct smtpc_dest dest = {.targets = &t, .ntargets = 1, .helo_name = "c.test"};
	struct smtpc_msg msg = {.sender = "",
	                        .rcpts = msg_rcpts,
	                        .nrcpts = 1,
	                        .data = (const unsigned char *)msg_data,
	                        .len = 3};
	struct run run = {.base = base};
	struct timeval tv = {0, 200000};

	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	smtpc_free(&cl);
	tv.tv_usec = 50000;
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	assert_int_equal(run.calls, 0);
	assert_int_equal(sa.nconn, 2);
	server_stop(&sa);
	event_base_free(base);
}

/* A message bigger than several refill chunks, every line starting with a
 * dot, one of them exactly on a chunk boundary: stuffed correctly across
 * refills, nothing added after its final CRLF. */
static void test_client_big_message(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct server sa;
	struct smtpc_target t;
	char err[256];
	size_t nlines = 5000, ll = 64;
	struct buf m, want;

	buf_init(&m, 0);
	buf_init(&want, 0);
	for (size_t i = 0; i < nlines; i++) {
		char line[64];
		memset(line, 'a' + (int)(i % 26), sizeof(line));
		line[0] = '.';
		line[ll - 2] = '\r';
		line[ll - 1] = '\n';
		buf_append(&m, line, ll);
		buf_append(&want, ".", 1);
		buf_append(&want, line, ll);
	}
	buf_append_str(&want, ".\r\n");
	server_start(&sa, base, sc_simple, NULL, NULL);
	target_set(&t, sa.port, "mx.test");
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	assert_non_null(cl);
	struct smtpc_dest dest = {.targets = &t, .ntargets = 1, .helo_name = "c.test"};
	struct smtpc_msg msg = {
	    .sender = "", .rcpts = msg_rcpts, .nrcpts = 1, .data = m.data, .len = m.len};
	struct run run = {.base = base};
	struct timeval limit = {10, 0};

	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	event_base_loopexit(base, &limit);
	event_base_dispatch(base);
	assert_int_equal(run.calls, 1);
	assert_true(run.rcpts[0].ok);
	assert_int_equal(sa.data.len, want.len);
	assert_memory_equal(sa.data.data, want.data, want.len);
	assert_non_null(strstr(buf_cstr(&sa.log), "MAIL FROM:<>\r\n"));
	smtpc_free(&cl);
	server_stop(&sa);
	buf_free(&m);
	buf_free(&want);
	event_base_free(base);
}

/* The message read from a file in SMTPC_WINDOW windows on a work queue: a
 * line that starts with a dot exactly at each window boundary, no final
 * CRLF; the server gets it stuffed and whole, and nothing past len (the
 * spool file's envelope follows the content). Without a work queue the
 * message defers (4.3.0) and the server never sees the final dot. */
static void test_client_message_from_file(void **state)
{
	(void)state;
	struct buf m, want;
	size_t ll = 64, nlines = 3 * SMTPC_WINDOW / 64 + 10;
	buf_init(&m, 0);
	buf_init(&want, 0);
	for (size_t i = 0; i < nlines; i++) {
		char line[64];
		memset(line, 'a' + (int)(i % 26), sizeof(line));
		line[0] = i % 2 == 0 ? '.' : 'x';
		line[ll - 2] = '\r';
		line[ll - 1] = '\n';
		buf_append(&m, line, i + 1 < nlines ? ll : ll - 2);
		if (line[0] == '.')
			buf_append(&want, ".", 1);
		buf_append(&want, line, i + 1 < nlines ? ll : ll - 2);
	}
	buf_append_str(&want, "\r\n.\r\n");
	char path[] = "/tmp/hk-test-smtpc-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, "0123456789abcdef", 16), 16);
	assert_int_equal(write(fd, m.data, m.len), (ssize_t)m.len);
	assert_int_equal(write(fd, "ENVELOPE", 8), 8);

	for (int with_wq = 1; with_wq >= 0; with_wq--) {
		struct event_base *base = event_base_new();
		struct workq *wq = workq_create(base, 1, "test");
		struct server sa;
		struct smtpc_target t;
		char err[256];
		server_start(&sa, base, sc_simple, NULL, NULL);
		target_set(&t, sa.port, "mx.test");
		struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
		assert_non_null(cl);
		if (with_wq)
			smtpc_set_workq(cl, wq);
		struct smtpc_dest dest = {.targets = &t, .ntargets = 1, .helo_name = "c.test"};
		struct smtpc_msg msg = {.sender = "", .rcpts = msg_rcpts, .nrcpts = 1,
		                        .fd = fd, .fd_off = 16, .len = m.len};
		struct run run = {.base = base};
		struct timeval limit = {10, 0};
		smtpc_deliver(cl, &dest, &msg, run_done, &run);
		event_base_loopexit(base, &limit);
		event_base_dispatch(base);
		assert_int_equal(run.calls, 1);
		if (with_wq) {
			assert_true(run.rcpts[0].ok);
			assert_int_equal(sa.data.len, want.len);
			assert_memory_equal(sa.data.data, want.data, want.len);
		} else {
			assert_false(run.rcpts[0].ok);
			assert_false(run.rcpts[0].permanent);
			assert_string_equal(run.rcpts[0].enh, "4.3.0");
			assert_non_null(strstr(run.rcpts[0].text, "no worker threads"));
			assert_int_equal(sa.data.len, 0);
		}
		smtpc_free(&cl);
		server_stop(&sa);
		workq_free(&wq);
		event_base_free(base);
	}
	close(fd);
	buf_free(&m);
	buf_free(&want);
}

/* Freed while a window is being read: the read finishes into a buffer
 * nobody waits for, which the read's completion frees (ASan: no leak, no
 * use after free), and the callback is never called. */
static void test_client_free_while_reading(void **state)
{
	(void)state;
	size_t len = 4 * SMTPC_WINDOW;
	char *m = malloc(len);
	memset(m, 'q', len);
	char path[] = "/tmp/hk-test-smtpc-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	assert_int_equal(write(fd, m, len), (ssize_t)len);
	struct event_base *base = event_base_new();
	struct workq *wq = workq_create(base, 1, "test");
	struct server sa;
	struct smtpc_target t;
	char err[256];
	server_start(&sa, base, sc_simple, NULL, NULL);
	target_set(&t, sa.port, "mx.test");
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	smtpc_set_workq(cl, wq);
	struct smtpc_dest dest = {.targets = &t, .ntargets = 1, .helo_name = "c.test"};
	struct smtpc_msg msg = {.sender = "", .rcpts = msg_rcpts, .nrcpts = 1, .fd = fd, .len = len};
	struct run run = {.base = base};
	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	/* until the server has some of the message: the session is in BODY */
	for (int i = 0; i < 200 && sa.data.len == 0; i++)
		event_base_loop(base, EVLOOP_ONCE);
	assert_true(sa.data.len > 0);
	smtpc_free(&cl);
	close(fd); /* allowed after the cancel: the read in flight fails harmlessly */
	workq_free(&wq);
	assert_int_equal(run.calls, 0);
	server_stop(&sa);
	event_base_free(base);
	free(m);
}

/* No targets at all: a temporary failure, still called back later. */
static void test_client_no_targets(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	char err[256];
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	struct smtpc_dest dest = {.targets = NULL, .ntargets = 0, .helo_name = "c.test"};
	struct smtpc_msg msg = {.sender = "",
	                        .rcpts = msg_rcpts,
	                        .nrcpts = 2,
	                        .data = (const unsigned char *)msg_data,
	                        .len = 3};
	struct run run = {.base = base};

	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	assert_int_equal(run.calls, 0);
	event_base_dispatch(base);
	assert_int_equal(run.calls, 1);
	assert_false(run.res.permanent);
	assert_false(run.rcpts[0].ok);
	assert_false(run.rcpts[1].permanent);
	smtpc_free(&cl);
	event_base_free(base);
}

/* A CA file that does not exist is an error from smtpc_create. */
static void test_client_bad_ca(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	char err[256] = "";
	struct smtpc *cl = smtpc_create(base, "/nonexistent/ca.pem", err, sizeof(err));
	assert_null(cl);
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
	event_base_free(base);
}

/* --- connection reuse (issue 4) ---------------------------------------------- */

#define TX_PIPELINED                                                                               \
	{"MAIL", "250 ok\r\n", 0}, {"RCPT", "250 ok\r\n", 0}, {"DATA", "354 go\r\n", ST_DATA},     \
	{                                                                                          \
		".", "250 queued\r\n", 0                                                           \
	}
#define EHLO_PIPE                                                                                  \
	{                                                                                          \
		"EHLO", "250-mx.test\r\n250 PIPELINING\r\n", 0                                     \
	}

/* Two transactions on one connection, QUIT only at the idle timeout. */
static const struct step sr_two[] = {GREET, EHLO_PIPE, TX_PIPELINED, TX_PIPELINED, QUIT, END};
/* One transaction per connection (different keys, or no key). */
static const struct step sr_one[] = {GREET, EHLO_PIPE, TX_PIPELINED, QUIT, END};
/* The first transaction's recipient is refused (no PIPELINING): the
 * connection is kept, and RSET comes before the next MAIL. */
static const struct step sr_rset[] = {
    GREET,
    {"EHLO", "250 mx.test\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "550 5.1.1 no such user\r\n", 0},
    {"RSET", "250 ok\r\n", 0},
    {"MAIL", "250 ok\r\n", 0},
    {"RCPT", "250 ok\r\n", 0},
    {"DATA", "354 go\r\n", ST_DATA},
    {".", "250 queued\r\n", 0},
    QUIT,
    END,
};
/* The cached connection is closing: 421 to the next MAIL, or plain EOF. */
static const struct step sr_421[] = {
    GREET, EHLO_PIPE, TX_PIPELINED, {"MAIL", "421 4.4.2 idle too long\r\n", ST_CLOSE}, END};
static const struct step sr_eof[] = {GREET, EHLO_PIPE, TX_PIPELINED, {"MAIL", NULL, ST_CLOSE}, END};
/* The server closes right after the dot reply: seen while idle. */
static const struct step sr_close_idle[] = {GREET,
                                            EHLO_PIPE,
                                            {"MAIL", "250 ok\r\n", 0},
                                            {"RCPT", "250 ok\r\n", 0},
                                            {"DATA", "354 go\r\n", ST_DATA},
                                            {".", "250 queued\r\n", ST_CLOSE},
                                            END};
#define EHLO_DSN                                                                                   \
	{                                                                                          \
		"EHLO", "250-mx.test\r\n250-DSN\r\n250 PIPELINING\r\n", 0                          \
	}
/* DSN offered: the reused connection still knows it (no second EHLO). */
static const struct step sr_dsn_two[] = {GREET, EHLO_DSN, TX_PIPELINED, TX_PIPELINED, QUIT, END};
/* The cached connection offered DSN and is closing; the new one does not
 * offer it: the second result must not keep the first server's word. */
static const struct step sr_dsn_421[] = {
    GREET, EHLO_DSN, TX_PIPELINED, {"MAIL", "421 4.4.2 idle too long\r\n", ST_CLOSE}, END};
/* STARTTLS once; the second message goes over the same TLS session. */
static const struct step sr_tls[] = {
    GREET,
    {"EHLO", "250-mx.test\r\n250 STARTTLS\r\n", 0},
    {"STARTTLS", "220 2.0.0 go ahead\r\n", ST_TLS},
    EHLO_PIPE,
    TX_PIPELINED,
    TX_PIPELINED,
    QUIT,
    END,
};

struct reuse_case {
	const char *name;
	const struct step *a;  /* the script of the first connection */
	const struct step *a2; /* of later ones, or NULL for the same */
	const char *keys[2];   /* reuse_key of the two deliveries */
	enum smtpc_tls tls;
	bool tls2_may;      /* the second delivery asks for TLS policy MAY */
	bool second_via_b;  /* the second delivery's targets: server b (sr_one), then a */
	bool first_refused; /* the first delivery's recipient gets 550 */
	unsigned gap_ms;    /* loop time between the deliveries */
	int nconn;          /* connections the server saw */
	int completed;      /* connections that ran their script to the end */
	const char *log;    /* in the server's command log */
	bool dsn[2];        /* each delivery's result says DSN was offered */
};

static const struct reuse_case reuse_cases[] = {
    {.name = "same key: one connection, two transactions, QUIT when idle",
     .a = sr_two,
     .keys = {"mx:y", "mx:y"},
     .nconn = 1,
     .completed = 1},
    {.name = "different keys, same first target: shared",
     .a = sr_two,
     .keys = {"mx:y", "mx:z"},
     .nconn = 1,
     .completed = 1},
    {.name = "a different first target: not shared",
     .a = sr_one,
     .keys = {"mx:y", "mx:y"},
     .second_via_b = true,
     .nconn = 1,
     .completed = 1},
    {.name = "no key: no reuse", .a = sr_one, .keys = {NULL, NULL}, .nconn = 2, .completed = 2},
    {.name = "TLS policy differs: no reuse",
     .a = sr_one,
     .keys = {"mx:y", "mx:y"},
     .tls2_may = true,
     .nconn = 2,
     .completed = 2},
    {.name = "aborted transaction: RSET before the next MAIL",
     .a = sr_rset,
     .keys = {"mx:y", "mx:y"},
     .first_refused = true,
     .nconn = 1,
     .completed = 1,
     .log = "RCPT TO:<b@y>\r\nRSET\r\nMAIL FROM:<a@x>\r\n"},
    {.name = "421 to MAIL on a cached connection: reconnect",
     .a = sr_421,
     .a2 = sr_one,
     .keys = {"mx:y", "mx:y"},
     .nconn = 2,
     .completed = 2},
    {.name = "EOF after MAIL on a cached connection: reconnect",
     .a = sr_eof,
     .a2 = sr_one,
     .keys = {"mx:y", "mx:y"},
     .nconn = 2,
     .completed = 2},
    {.name = "server closed the idle connection: reconnect",
     .a = sr_close_idle,
     .a2 = sr_one,
     .keys = {"mx:y", "mx:y"},
     .gap_ms = 100,
     .nconn = 2,
     .completed = 2},
    {.name = "DSN offered: still known on the reused connection",
     .a = sr_dsn_two,
     .keys = {"mx:y", "mx:y"},
     .nconn = 1,
     .completed = 1,
     .dsn = {true, true}},
    {.name = "reconnect after a DSN server's 421: the new server's word counts",
     .a = sr_dsn_421,
     .a2 = sr_one,
     .keys = {"mx:y", "mx:y"},
     .nconn = 2,
     .completed = 2,
     .dsn = {true, false}},
    {.name = "STARTTLS once, both messages over it",
     .a = sr_tls,
     .keys = {"mx:y", "mx:y"},
     .tls = SMTPC_TLS_MAY,
     .nconn = 1,
     .completed = 1},
};

static void loop_for(struct event_base *base, unsigned ms)
{
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void run_reuse_case(const struct reuse_case *c)
{
	struct event_base *base = event_base_new();
	struct server sa, sb;
	struct smtpc_target t, tb[2];
	char err[256];

	assert_non_null(base);
	server_start(&sa, base, c->a, fx.tls, NULL);
	sa.script2 = c->a2;
	target_set(&t, sa.port, "mx1.test");
	if (c->second_via_b) {
		server_start(&sb, base, sr_one, NULL, NULL);
		target_set(&tb[0], sb.port, "mx2.test");
		tb[1] = t;
	}
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	assert_non_null(cl);
	smtpc_set_idle_timeout(cl, 300);
	struct smtpc_msg msg = {.sender = "a@x",
	                        .rcpts = msg_rcpts,
	                        .nrcpts = 1,
	                        .data = (const unsigned char *)msg_data,
	                        .len = sizeof(msg_data) - 1};
	for (size_t k = 0; k < 2; k++) {
		enum smtpc_tls tls = c->tls2_may && k == 1 ? SMTPC_TLS_MAY : c->tls;
		bool via_b = c->second_via_b && k == 1;
		struct smtpc_dest dest = {.targets = via_b ? tb : &t,
		                          .ntargets = via_b ? 2 : 1,
		                          .tls = tls,
		                          .helo_name = "client.test",
		                          .connect_timeout_ms = 2000,
		                          .command_timeout_ms = 3000,
		                          .data_timeout_ms = 3000,
		                          .reuse_key = c->keys[k]};
		struct run run = {.base = base};
		struct timeval limit = {10, 0};
		smtpc_deliver(cl, &dest, &msg, run_done, &run);
		event_base_loopexit(base, &limit);
		event_base_dispatch(base);
		if (run.calls != 1)
			fail_msg("%s: delivery %zu: callback ran %d times", c->name, k, run.calls);
		bool want_ok = !(k == 0 && c->first_refused);
		if (run.rcpts[0].ok != want_ok)
			fail_msg("%s: delivery %zu: code=%d text=%s / %s", c->name, k,
			         run.rcpts[0].code, run.rcpts[0].text, run.res.text);
		if (!want_ok)
			assert_int_equal(run.rcpts[0].code, 550);
		assert_true(run.res.connected);
		if (run.res.dsn_offered != c->dsn[k])
			fail_msg("%s: delivery %zu: dsn_offered=%d", c->name, k,
			         run.res.dsn_offered);
		assert_string_equal(run.res.remote_mta, via_b ? "mx2.test" : "mx1.test");
		assert_string_equal(run.res.remote_addr, "127.0.0.1");
		if (c->tls == SMTPC_TLS_MAY && strncmp(run.res.tls_info, "TLSv1.", 6) != 0)
			fail_msg("%s: delivery %zu: tls_info %s", c->name, k, run.res.tls_info);
		if (c->gap_ms != 0 && k == 0)
			loop_for(base, c->gap_ms);
	}
	/* past the idle timeout: the cached connection gets QUIT */
	loop_for(base, 700);
	if (sa.nconn != c->nconn || sa.completed != c->completed)
		fail_msg("%s: nconn=%d completed=%d", c->name, sa.nconn, sa.completed);
	assert_int_equal(sa.errors, 0);
	if (c->second_via_b) {
		assert_int_equal(sb.nconn, 1);
		assert_int_equal(sb.completed, 1);
		assert_int_equal(sb.errors, 0);
		server_stop(&sb);
	}
	if (c->log != NULL && strstr(buf_cstr(&sa.log), c->log) == NULL)
		fail_msg("%s: log lacks %s; got %s", c->name, c->log, buf_cstr(&sa.log));
	smtpc_free(&cl);
	server_stop(&sa);
	event_base_free(base);
}

static void test_client_reuse(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(reuse_cases); i++) {
		fprintf(stderr, "reuse case: %s\n", reuse_cases[i].name);
		run_reuse_case(&reuse_cases[i]);
	}
}

/* smtpc_free with connections still cached: closed (no leak), and the
 * server sees the connection go. */
static void test_client_reuse_free(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct server sa;
	struct smtpc_target t;
	char err[256];

	server_start(&sa, base, sr_one, NULL, NULL);
	target_set(&t, sa.port, "mx1.test");
	struct smtpc *cl = smtpc_create(base, NULL, err, sizeof(err));
	assert_non_null(cl);
	struct smtpc_dest dest = {
	    .targets = &t, .ntargets = 1, .helo_name = "c.test", .reuse_key = "mx:y"};
	struct smtpc_msg msg = {.sender = "",
	                        .rcpts = msg_rcpts,
	                        .nrcpts = 1,
	                        .data = (const unsigned char *)msg_data,
	                        .len = 3};
	struct run run = {.base = base};
	smtpc_deliver(cl, &dest, &msg, run_done, &run);
	loop_for(base, 2000);
	assert_int_equal(run.calls, 1);
	assert_true(run.rcpts[0].ok);
	assert_int_equal(sa.completed, 0); /* idle: no QUIT yet (5 s default) */
	smtpc_free(&cl);
	loop_for(base, 100);
	assert_int_equal(sa.completed, 1); /* the best-effort QUIT */
	assert_int_equal(sa.errors, 0);
	server_stop(&sa);
	event_base_free(base);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static int group_setup(void **state)
{
	(void)state;
	char err[512];
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/hk_test_smtpc_XXXXXX");
	if (mkdtemp(fx.dir) == NULL)
		return -1;
	snprintf(fx.cert, sizeof(fx.cert), "%s/cert.pem", fx.dir);
	struct conf_tls ct = {.self_signed_dir = fx.dir, .session_tickets = true};
	if (tls_server_create(&ct, "localhost", &fx.tls, err, sizeof(err)) < 0 || fx.tls == NULL) {
		fprintf(stderr, "tls: %s\n", err);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	tls_server_free(&fx.tls);
	nftw(fx.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_client_cases),       cmocka_unit_test(test_client_free_in_flight),
	    cmocka_unit_test(test_client_big_message), cmocka_unit_test(test_client_no_targets),
	    cmocka_unit_test(test_client_bad_ca),      cmocka_unit_test(test_client_reuse),
	    cmocka_unit_test(test_client_reuse_free),
	    cmocka_unit_test(test_client_message_from_file),
	    cmocka_unit_test(test_client_free_while_reading),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
