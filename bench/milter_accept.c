/* milter_accept.c — a trivial milter for bench/milter_bench.py: speaks the
 * Sendmail milter protocol v6 on a TCP port of 127.0.0.1, negotiates every
 * step (no SMFIP_NO* flags, all replies), answers CONTINUE to each command
 * and ACCEPT to the end of body. One thread per connection, blocking I/O:
 * the cost measured is smtpd's side of the round-trips, not this.
 *
 *     cc -O2 -pthread -o milter_accept bench/milter_accept.c
 *     ./milter_accept PORT
 *
 * A benchmark helper, never a test or a production milter. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXF (1u << 20) /* a frame; smtpd sends at most 64 KiB of body */

static int read_all(int fd, unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int reply(int fd, char cmd, const unsigned char *data, uint32_t len)
{
	unsigned char b[32];
	uint32_t l = htonl(len + 1);
	memcpy(b, &l, 4);
	b[4] = (unsigned char)cmd;
	if (len > 0)
		memcpy(b + 5, data, len);
	return write(fd, b, 5 + len) == (ssize_t)(5 + len) ? 0 : -1;
}

static void *serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	unsigned char *data = malloc(MAXF);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	for (;;) {
		unsigned char h[4];
		if (read_all(fd, h, 4) < 0)
			break;
		uint32_t n =
		    (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
		if (n == 0 || n > MAXF || read_all(fd, data, n) < 0)
			break;
		char cmd = (char)data[0];
		int rc = 0;
		if (cmd == 'O') {
			unsigned char o[12];
			uint32_t v[3] = {htonl(6), htonl(0), htonl(0)};
			if (n >= 13)
				memcpy(&v[1], data + 5, 4); /* the actions offered */
			memcpy(o, v, 12);
			rc = reply(fd, 'O', o, 12);
		} else if (cmd == 'D' || cmd == 'A') {
			continue; /* no reply */
		} else if (cmd == 'Q') {
			break;
		} else if (cmd == 'E') {
			rc = reply(fd, 'a', NULL, 0);
		} else {
			rc = reply(fd, 'c', NULL, 0);
		}
		if (rc < 0)
			break;
	}
	free(data);
	close(fd);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: milter_accept PORT\n");
		return 2;
	}
	int s = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(s, 512) < 0) {
		perror("milter_accept");
		return 1;
	}
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c < 0)
			continue;
		pthread_t t;
		pthread_attr_t at;
		pthread_attr_init(&at);
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		if (pthread_create(&t, &at, serve, (void *)(intptr_t)c) != 0)
			close(c);
		pthread_attr_destroy(&at);
	}
}
