/* analytics_bench.c — what the delivery analytics cost (bench/README.md,
 * "Delivery analytics"): nanoseconds per recorded event in the queue's
 * collector (astats_event: two domain copies, a mutex, a hash lookup),
 * alone and with 4 threads recording at once (the finish workers), and
 * milliseconds per batch written to a fresh SQLite store (astore_apply:
 * one transaction, no fsync in WAL mode with synchronous=NORMAL).
 * Usage: analytics_bench [events] [domains]. Not a test: figures only. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue/astats.h"
#include "queue/astore.h"

static double bench_now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct bench_arg {
	struct astats *a;
	long n, domains;
	char (*rcpts)[64];
};

static void *bench_record(void *p)
{
	struct bench_arg *b = p;
	for (long i = 0; i < b->n; i++)
		astats_event(b->a, 1796370000000000ULL, b->rcpts[i % b->domains], "app@sender.test",
		             ASTATS_DELIVERED, (uint64_t)(i % 5000) * 1000);
	return NULL;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000000;
	long domains = argc > 2 ? strtol(argv[2], NULL, 10) : 100;
	if (n <= 0 || domains <= 0 || domains > 100000)
		return 2;
	struct bench_arg arg = {.a = astats_create(), .n = n, .domains = domains};
	arg.rcpts = calloc((size_t)domains, sizeof(*arg.rcpts));
	for (long i = 0; i < domains; i++)
		snprintf(arg.rcpts[i], sizeof(arg.rcpts[i]), "user@d%ld.example", i);

	double t0 = bench_now();
	bench_record(&arg);
	double t1 = bench_now();
	printf("astats_event, 1 thread:  %.0f ns/event (%ld events, %ld domains)\n",
	       (t1 - t0) * 1e9 / (double)n, n, domains);
	struct astats_batch *b = astats_take(arg.a);
	astats_batch_free(&b);

	pthread_t th[4];
	struct bench_arg per = arg;
	per.n = n / 4;
	t0 = bench_now();
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, bench_record, &per);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	t1 = bench_now();
	printf("astats_event, 4 threads: %.0f ns/event (wall, all threads)\n",
	       (t1 - t0) * 1e9 / (double)(per.n * 4));
	b = astats_take(arg.a);

	char dir[] = "/tmp/hk-abench-XXXXXX";
	if (mkdtemp(dir) == NULL)
		return 1;
	struct astore *s = NULL;
	const char *error = NULL;
	if (astore_open(dir, 24 * 90, 100, &s, &error) < 0) {
		fprintf(stderr, "%s\n", error);
		return 1;
	}
	const int rounds = 20;
	t0 = bench_now();
	for (int i = 0; i < rounds; i++)
		if (astore_apply(s, b, 1796370000000000ULL / ASTATS_HOUR_US, &error) < 0) {
			fprintf(stderr, "%s\n", error);
			return 1;
		}
	t1 = bench_now();
	printf("astore_apply: %.2f ms per batch of %zu cells (%d batches)\n",
	       (t1 - t0) * 1e3 / rounds, b->n_cells, rounds);
	astore_close(&s);
	astats_batch_free(&b);
	astats_free(&arg.a);
	free(arg.rcpts);
	char p[64];
	static const char *const f[] = {"stats.db", "stats.db-wal", "stats.db-shm"};
	for (size_t i = 0; i < 3; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, f[i]);
		unlink(p);
	}
	rmdir(dir);
	return 0;
}
