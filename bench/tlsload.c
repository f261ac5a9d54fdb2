/*
 * bench/tlsload.c - STARTTLS load generator for bench/run.sh --tls.
 *
 * Process: a short-lived client started by bench/bench.py; it talks to
 * 127.0.0.1 only (the address is fixed, the port is an argument). Postfix's
 * smtp-source has no TLS, and posttls-finger is not a load tool, hence this.
 * Hostile inputs: the replies of the MTA under test. They are read into a
 * fixed buffer, a line at a time; an over-long line, a wrong reply code, a
 * timeout or a TLS error ends that session and counts as an error.
 *
 * Modes (-m):
 *   hs     N sessions over S threads: connect, EHLO, STARTTLS, handshake,
 *          EHLO, QUIT (no mail): the cost of a STARTTLS session alone.
 *   new    N messages over S threads, one STARTTLS session per message:
 *          connect, EHLO, STARTTLS, handshake, EHLO, MAIL, RCPT, DATA, QUIT.
 *   reuse  S sessions, each one STARTTLS session carrying M messages.
 *   idle   C connections (opened by S threads): connect, EHLO, STARTTLS,
 *          handshake, EHLO, then idle. Prints "ready OK FAILED" on stdout
 *          and waits until stdin is closed (or -H seconds), then QUITs all.
 *
 * Every handshake is a full one (no session is offered for resumption).
 * The certificate is not verified (self-signed, loopback bench), but the
 * handshake signature is checked as in any TLS 1.2/1.3 handshake.
 * At the end one line of JSON goes to stdout: counts, wall time, the
 * client's own CPU time (to tell when the client is the bottleneck) and the
 * negotiated protocol, cipher and key-exchange group.
 *
 * Build: gcc -O2 -Wall -Wextra -o tlsload tlsload.c -lssl -lcrypto -lpthread
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_LEN 1024 /* longest reply line we accept (RFC 5321 §4.5.3.1.5: 512) */

enum mode { MODE_HS, MODE_NEW, MODE_REUSE, MODE_IDLE };
static const char *const mode_names[] = {"hs", "new", "reuse", "idle"};

struct conn {
	int fd;
	SSL *ssl;
	char buf[LINE_MAX_LEN * 2];
	size_t len;
};

static enum mode opt_mode = MODE_NEW;
static int opt_port;
static long opt_count = 5000;      /* -n: messages (new), sessions (hs), connections (idle) */
static long opt_sessions = 20;     /* -s: threads */
static long opt_per_session = 250; /* -k: messages per session (reuse) */
static long opt_size = 4096;       /* -l: message size in octets */
static int opt_timeout = 120;      /* -T: seconds for any one reply */
static int opt_hold = 900;         /* -H: idle mode, longest hold */

static SSL_CTX *ctx;
static char *message;
static size_t message_len;
static atomic_long next_item;
static atomic_long done_items;
static atomic_long handshakes;
static atomic_long errors;
static pthread_mutex_t info_lock = PTHREAD_MUTEX_INITIALIZER;
static char first_error[256];
static char tls_proto[32], tls_cipher[64], tls_group[32];
static struct conn **idle_conns;

static void note_error(const char *fmt, ...)
{
	atomic_fetch_add(&errors, 1);
	pthread_mutex_lock(&info_lock);
	if (first_error[0] == '\0') {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(first_error, sizeof(first_error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&info_lock);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int conn_write(struct conn *c, const char *data, size_t len)
{
	while (len > 0) {
		int n;
		if (c->ssl != NULL)
			n = SSL_write(c->ssl, data, len > INT32_MAX ? INT32_MAX : (int)len);
		else
			n = (int)send(c->fd, data, len, MSG_NOSIGNAL);
		if (n <= 0)
			return -1;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One reply line (without CRLF) into line; -1 on EOF, timeout, error. */
static int conn_read_line(struct conn *c, char *line, size_t size)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl != NULL) {
			size_t n = (size_t)(nl - c->buf) + 1;
			size_t copy = n - 1;
			if (copy > 0 && c->buf[copy - 1] == '\r')
				copy--;
			if (copy >= size)
				return -1;
			memcpy(line, c->buf, copy);
			line[copy] = '\0';
			memmove(c->buf, c->buf + n, c->len - n);
			c->len -= n;
			return 0;
		}
		if (c->len >= sizeof(c->buf))
			return -1; /* line longer than we accept */
		int n;
		if (c->ssl != NULL)
			n = SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len));
		else
			n = (int)recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
		if (n <= 0)
			return -1;
		c->len += (size_t)n;
	}
}

/* Read a (multi-line) reply; 0 if its code is `want`. */
static int conn_expect(struct conn *c, int want, const char *what)
{
	char line[LINE_MAX_LEN];
	for (int lines = 0; lines < 100; lines++) {
		if (conn_read_line(c, line, sizeof(line)) < 0) {
			note_error("%s: no reply (%s)", what,
			           errno == EAGAIN ? "timeout" : "eof/error");
			return -1;
		}
		if (strlen(line) < 3 || line[0] != '0' + want / 100 ||
		    line[1] != '0' + want / 10 % 10 || line[2] != '0' + want % 10 ||
		    (line[3] != ' ' && line[3] != '-' && line[3] != '\0')) {
			note_error("%s: unexpected reply '%.80s'", what, line);
			return -1;
		}
		if (line[3] != '-')
			return 0;
	}
	note_error("%s: reply of more than 100 lines", what);
	return -1;
}

static int conn_cmd(struct conn *c, const char *cmd, int want)
{
	if (conn_write(c, cmd, strlen(cmd)) < 0) {
		note_error("write '%.20s' failed", cmd);
		return -1;
	}
	return conn_expect(c, want, cmd);
}

static void conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* connect, 220, EHLO, STARTTLS, handshake, EHLO. NULL on failure. */
static struct conn *conn_open_tls(void)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0) {
		note_error("socket: %s", strerror(errno));
		free(c);
		return NULL;
	}
	struct timeval tv = {.tv_sec = opt_timeout};
	setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		note_error("connect: %s", strerror(errno));
		conn_free(c);
		return NULL;
	}
	if (conn_expect(c, 220, "greeting") < 0 || conn_cmd(c, "EHLO bench.src\r\n", 250) < 0 ||
	    conn_cmd(c, "STARTTLS\r\n", 220) < 0) {
		conn_free(c);
		return NULL;
	}
	if (c->len != 0) {
		note_error("octets after the STARTTLS reply");
		conn_free(c);
		return NULL;
	}
	c->ssl = SSL_new(ctx);
	if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
		note_error("SSL_new failed");
		conn_free(c);
		return NULL;
	}
	int r = SSL_connect(c->ssl);
	if (r != 1) {
		unsigned long e = ERR_get_error();
		char eb[160];
		ERR_error_string_n(e, eb, sizeof(eb));
		note_error("handshake: SSL_get_error %d, %s", SSL_get_error(c->ssl, r), eb);
		ERR_clear_error();
		conn_free(c);
		return NULL;
	}
	atomic_fetch_add(&handshakes, 1);
	if (tls_proto[0] == '\0') {
		pthread_mutex_lock(&info_lock);
		if (tls_proto[0] == '\0') {
			int nid = SSL_get_negotiated_group(c->ssl);
			const char *g = nid > 0 ? OBJ_nid2sn(nid & 0xffff) : NULL;
			snprintf(tls_group, sizeof(tls_group), "%s", g != NULL ? g : "?");
			snprintf(tls_cipher, sizeof(tls_cipher), "%s", SSL_get_cipher_name(c->ssl));
			snprintf(tls_proto, sizeof(tls_proto), "%s", SSL_get_version(c->ssl));
		}
		pthread_mutex_unlock(&info_lock);
	}
	if (conn_cmd(c, "EHLO bench.src\r\n", 250) < 0) {
		conn_free(c);
		return NULL;
	}
	return c;
}

static int conn_send_message(struct conn *c)
{
	if (conn_cmd(c, "MAIL FROM:<sender@bench.src>\r\n", 250) < 0 ||
	    conn_cmd(c, "RCPT TO:<user@bench.test>\r\n", 250) < 0 ||
	    conn_cmd(c, "DATA\r\n", 354) < 0)
		return -1;
	if (conn_write(c, message, message_len) < 0) {
		note_error("write of the message failed");
		return -1;
	}
	if (conn_expect(c, 250, "end of data") < 0)
		return -1;
	atomic_fetch_add(&done_items, 1);
	return 0;
}

static void conn_quit(struct conn *c)
{
	if (conn_cmd(c, "QUIT\r\n", 221) == 0)
		SSL_shutdown(c->ssl); /* send close_notify; do not wait for the peer's */
	conn_free(c);
}

static void *worker(void *arg)
{
	long id = (long)arg;
	switch (opt_mode) {
	case MODE_HS:
	case MODE_NEW:
		while (atomic_fetch_add(&next_item, 1) < opt_count) {
			struct conn *c = conn_open_tls();
			if (c == NULL)
				continue;
			if (opt_mode == MODE_HS)
				atomic_fetch_add(&done_items, 1);
			else if (conn_send_message(c) < 0) {
				conn_free(c);
				continue;
			}
			conn_quit(c);
		}
		break;
	case MODE_REUSE: {
		struct conn *c = conn_open_tls();
		if (c == NULL)
			break;
		long i;
		for (i = 0; i < opt_per_session; i++)
			if (conn_send_message(c) < 0)
				break;
		if (i == opt_per_session)
			conn_quit(c);
		else
			conn_free(c);
		break;
	}
	case MODE_IDLE:
		for (long i = id; i < opt_count; i += opt_sessions) {
			idle_conns[i] = conn_open_tls();
			if (idle_conns[i] != NULL)
				atomic_fetch_add(&done_items, 1);
		}
		break;
	}
	return NULL;
}

static void build_message(void)
{
	static const char head[] = "From: <sender@bench.src>\r\n"
	                           "To: <user@bench.test>\r\n"
	                           "Subject: bench/tlsload\r\n"
	                           "Message-ID: <tlsload@bench.src>\r\n"
	                           "\r\n";
	size_t body = opt_size > (long)sizeof(head) ? (size_t)opt_size - (sizeof(head) - 1) : 0;
	message = malloc(sizeof(head) + body + 8);
	if (message == NULL)
		exit(2);
	memcpy(message, head, sizeof(head) - 1);
	size_t n = sizeof(head) - 1;
	/* Body lines of 78 octets plus CRLF; none starts with '.'. */
	while (body > 0) {
		size_t line = body > 80 ? 78 : (body > 2 ? body - 2 : 0);
		memset(message + n, 'x', line);
		n += line;
		memcpy(message + n, "\r\n", 2);
		n += 2;
		body -= body > 80 ? 80 : body;
	}
	memcpy(message + n, ".\r\n", 3);
	message_len = n + 3;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long parse_long(const char *s, long lo, long hi, char opt)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || end == s || v < lo || v > hi) {
		fprintf(stderr, "tlsload: -%c must be in %ld..%ld\n", opt, lo, hi);
		exit(2);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: tlsload -p PORT -m hs|new|reuse|idle [-n N] [-s S] [-k M] "
	                "[-l SIZE] [-T SEC] [-H SEC]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "p:m:n:s:k:l:T:H:")) != -1) {
		switch (opt) {
		case 'p':
			opt_port = (int)parse_long(optarg, 1, 65535, 'p');
			break;
		case 'm':
			for (opt_mode = 0; opt_mode <= MODE_IDLE; opt_mode++)
				if (strcmp(optarg, mode_names[opt_mode]) == 0)
					break;
			if (opt_mode > MODE_IDLE)
				usage();
			break;
		case 'n':
			opt_count = parse_long(optarg, 1, 1000000, 'n');
			break;
		case 's':
			opt_sessions = parse_long(optarg, 1, 1000, 's');
			break;
		case 'k':
			opt_per_session = parse_long(optarg, 1, 1000000, 'k');
			break;
		case 'l':
			opt_size = parse_long(optarg, 0, 100000000, 'l');
			break;
		case 'T':
			opt_timeout = (int)parse_long(optarg, 1, 3600, 'T');
			break;
		case 'H':
			opt_hold = (int)parse_long(optarg, 1, 3600, 'H');
			break;
		default:
			usage();
		}
	}
	if (opt_port == 0 || optind != argc)
		usage();
	if (opt_mode == MODE_IDLE && opt_sessions > opt_count)
		opt_sessions = opt_count;

	/* Idle mode holds opt_count sockets: raise the soft limit to the hard one. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL)
		return 2;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY | SSL_MODE_RELEASE_BUFFERS);
	build_message();
	if (opt_mode == MODE_IDLE) {
		idle_conns = calloc((size_t)opt_count, sizeof(*idle_conns));
		if (idle_conns == NULL)
			return 2;
	}

	long nthreads = opt_sessions;
	pthread_t *tids = calloc((size_t)nthreads, sizeof(*tids));
	if (tids == NULL)
		return 2;
	double cpu0 = cpu_s(), t0 = now_s();
	long started = 0;
	for (long i = 0; i < nthreads; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 256 * 1024);
		if (pthread_create(&tids[i], &attr, worker, (void *)i) == 0)
			started++;
		else
			note_error("pthread_create failed");
		pthread_attr_destroy(&attr);
	}
	for (long i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	double wall = now_s() - t0, cpu = cpu_s() - cpu0;

	if (opt_mode == MODE_IDLE) {
		long ok = atomic_load(&done_items);
		printf("ready %ld %ld\n", ok, opt_count - ok);
		fflush(stdout);
		/* Hold until bench.py closes our stdin (bounded by -H). */
		struct pollfd pfd = {.fd = 0, .events = POLLIN};
		double until = now_s() + opt_hold;
		char tmp[64];
		while (now_s() < until) {
			int r = poll(&pfd, 1, 1000);
			if (r > 0 && read(0, tmp, sizeof(tmp)) <= 0)
				break;
		}
		for (long i = 0; i < opt_count; i++)
			if (idle_conns[i] != NULL) {
				SSL_shutdown(idle_conns[i]->ssl);
				conn_free(idle_conns[i]);
			}
	}

	printf("{\"mode\": \"%s\", \"count\": %ld, \"sessions\": %ld, \"per_session\": %ld, "
	       "\"done\": %ld, \"handshakes\": %ld, \"errors\": %ld, \"wall_s\": %.6f, "
	       "\"client_cpu_s\": %.6f, \"proto\": \"%s\", \"cipher\": \"%s\", \"group\": \"%s\", "
	       "\"first_error\": \"",
	       mode_names[opt_mode], opt_count, opt_sessions, opt_per_session,
	       atomic_load(&done_items), atomic_load(&handshakes), atomic_load(&errors), wall, cpu,
	       tls_proto, tls_cipher, tls_group);
	for (const char *p = first_error; *p != '\0'; p++)
		if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
			putchar(*p);
	printf("\"}\n");
	free(tids);
	free(message);
	free(idle_conns);
	SSL_CTX_free(ctx);
	return atomic_load(&errors) == 0 ? 0 : 1;
}
