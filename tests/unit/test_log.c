/* test_log.c — the logger's writing path (src/lib/log.c): lines from several
 * threads arrive whole and in order per thread; a destination nobody reads
 * never blocks the caller, lines are dropped and counted, and the count is
 * logged once the reader is back; the per-thread timestamp cache rolls over at
 * the second (and when the clock goes back); a line is byte for byte what a
 * single snprintf() of it gave; and an abort (abort(), out of memory) first
 * writes the lines still buffered. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/alloc.h"
#include "lib/log.h"

/* --- a pipe with a reader that can start late ------------------------------ */

struct reader {
	int fd;
	pthread_t th;
	pthread_mutex_t lock;
	char *buf; /* guarded by lock */
	size_t len, cap;
	int eof;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	char chunk[65536];
	for (;;) {
		ssize_t n = read(r->fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		pthread_mutex_lock(&r->lock);
		if (n <= 0) {
			r->eof = 1;
			pthread_mutex_unlock(&r->lock);
			return NULL;
		}
		if (r->len + (size_t)n + 1 > r->cap) {
			r->cap = (r->len + (size_t)n + 1) * 2;
			r->buf = xrealloc(r->buf, r->cap);
		}
		memcpy(r->buf + r->len, chunk, (size_t)n);
		r->len += (size_t)n;
		r->buf[r->len] = '\0';
		pthread_mutex_unlock(&r->lock);
	}
}

static void reader_start(struct reader *r)
{
	assert_int_equal(pthread_create(&r->th, NULL, reader_main, r), 0);
}

/* A copy of everything read once it contains want (NULL: EOF), within 10 s. */
static char *reader_wait(struct reader *r, const char *want)
{
	for (int i = 0; i < 1000; i++) {
		pthread_mutex_lock(&r->lock);
		int done = want != NULL ? r->buf != NULL && strstr(r->buf, want) != NULL : r->eof;
		char *copy = done ? xstrdup(r->buf != NULL ? r->buf : "") : NULL;
		pthread_mutex_unlock(&r->lock);
		if (copy != NULL)
			return copy;
		usleep(10000);
	}
	fail_msg("%s not read within 10 s", want != NULL ? want : "EOF");
	return NULL;
}

/* Point the log at a new pipe; the reader does not run yet. */
static int pipe_open(struct reader *r)
{
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	*r = (struct reader){.fd = p[0]};
	pthread_mutex_init(&r->lock, NULL);
	return p[1];
}

static void pipe_close(struct reader *r, int wfd)
{
	log_set_output(STDERR_FILENO);
	close(wfd);
	pthread_join(r->th, NULL);
	close(r->fd);
	free(r->buf);
	pthread_mutex_destroy(&r->lock);
}

/* "2026-12-03T13:21:14.123Z info hikyaku: " */
static int is_prefix(const char *l, const char *level)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ ";
	for (size_t i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd' ? l[i] < '0' || l[i] > '9' : l[i] != shape[i])
			return 0;
	}
	l += sizeof(shape) - 1;
	size_t n = strlen(level);
	return strncmp(l, level, n) == 0 && strncmp(l + n, " hikyaku: ", 10) == 0;
}

#define PREFIX_LEN 39 /* with "info" */

/* --- several threads ------------------------------------------------------- */

#define NTHREADS 4
#define NLINES 3000

static void pad_of(char *pad, int t, int seq)
{
	size_t n = (size_t)((t * 131 + seq * 17) % 300);
	for (size_t i = 0; i < n; i++)
		pad[i] = (char)('a' + (t + seq + (int)i) % 26);
	pad[n] = '\0';
}

static void *writer_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	char pad[320];
	if (t % 2 == 0)
		log_batch_begin(); /* half of them batch, like the loop and workq */
	for (int seq = 0; seq < NLINES; seq++) {
		pad_of(pad, t, seq);
		log_info("t=%d seq=%d pad=%s", t, seq, pad);
		if (t % 2 == 0 && seq % 10 == 9)
			log_thread_flush();
	}
	if (t % 2 == 0)
		log_batch_end();
	return NULL;
}

/* Checks every line of out: whole, not mixed, in order per thread. Returns
 * the data lines; *dropped_r is the sum of the drop notices. */
static int check_lines(char *out, unsigned long long *dropped_r)
{
	int next[NTHREADS] = {0}, total = 0;
	char pad[320], want[400];
	*dropped_r = 0;
	for (char *l = out, *nl; *l != '\0'; l = nl + 1) {
		nl = strchr(l, '\n');
		assert_non_null(nl);
		*nl = '\0';
		unsigned long long d;
		if (is_prefix(l, "warn") &&
		    sscanf(l + PREFIX_LEN, "event=log_dropped lines=%llu", &d) == 1) {
			*dropped_r += d;
			continue;
		}
		assert_true(is_prefix(l, "info"));
		int t, seq;
		assert_int_equal(sscanf(l + PREFIX_LEN, "t=%d seq=%d", &t, &seq), 2);
		assert_true(t >= 0 && t < NTHREADS);
		assert_true(seq >= next[t]); /* in order, maybe with gaps (drops) */
		next[t] = seq + 1;
		pad_of(pad, t, seq);
		snprintf(want, sizeof(want), "t=%d seq=%d pad=%s", t, seq, pad);
		assert_string_equal(l + PREFIX_LEN, want);
		total++;
	}
	return total;
}

static void test_threads_whole_and_in_order(void **state)
{
	(void)state;
	struct reader r;
	int wfd = pipe_open(&r);
	log_set_output(wfd);
	reader_start(&r);
	pthread_t th[NTHREADS];
	for (int i = 0; i < NTHREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer_main, (void *)(intptr_t)i), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	/* On a slow machine the logger's buffer may be full and drop lines:
	 * empty it first, so that the end marker itself cannot be dropped. */
	log_flush();
	log_info("event=end");
	char *out = reader_wait(&r, "event=end\n");
	*(strstr(out, "event=end\n") - PREFIX_LEN) = '\0'; /* the lines before it */
	unsigned long long dropped;
	int got = check_lines(out, &dropped);
	/* A reader that keeps up loses nothing; on a loaded machine the count
	 * must still add up. */
	assert_int_equal((unsigned long long)got + dropped, NTHREADS * NLINES);
	free(out);
	pipe_close(&r, wfd);
}

/* --- a destination nobody reads -------------------------------------------- */

#define NBLOCKED 40000

static void test_blocked_output_drops_and_counts(void **state)
{
	(void)state;
	struct reader r;
	int wfd = pipe_open(&r);
	fcntl(wfd, F_SETPIPE_SZ, 4096);
	log_set_output(wfd);
	alarm(60); /* a caller that blocks fails here, not by hanging */
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	char pad[320];
	for (int seq = 0; seq < NBLOCKED; seq++) {
		pad_of(pad, 1, seq);
		log_info("t=1 seq=%d pad=%s", seq, pad);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	alarm(0);
	/* ~6 MB against a 4 KiB pipe and 2 MiB of buffers: it returned, fast. */
	assert_true(t1.tv_sec - t0.tv_sec < 20);
	reader_start(&r);
	char *out = reader_wait(&r, "event=log_dropped lines=");
	free(out);
	log_info("event=after");
	out = reader_wait(&r, "event=after\n");
	char *after = strstr(out, "event=after\n");
	assert_true(strstr(out, "event=log_dropped") < after); /* the count came first */
	*(after - PREFIX_LEN) = '\0';
	unsigned long long dropped;
	int got = check_lines(out, &dropped);
	assert_true(dropped > 0);
	assert_true(got > 0);
	assert_int_equal((unsigned long long)got + dropped, NBLOCKED);
	free(out);
	pipe_close(&r, wfd);
}

/* --- the timestamp and the line itself ------------------------------------- */

static struct timespec fake_now;

static void fake_clock(struct timespec *now_r)
{
	*now_r = fake_now;
}

static char *log_to_file(void (*fn)(void))
{
	char path[] = "/tmp/hk_test_log_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	unlink(path);
	log_set_output(fd); /* a regular file: written directly */
	fn();
	log_set_output(STDERR_FILENO);
	off_t n = lseek(fd, 0, SEEK_END);
	char *buf = xmalloc((size_t)n + 1);
	assert_int_equal(pread(fd, buf, (size_t)n, 0), n);
	buf[n] = '\0';
	close(fd);
	return buf;
}

static void rollover_lines(void)
{
	log_set_clock(fake_clock);
	/* 2026-12-03T23:59:59 UTC */
	fake_now = (struct timespec){.tv_sec = 1796342399, .tv_nsec = 998000000};
	log_info("a");
	fake_now.tv_nsec = 999999999;
	log_warn("b");
	fake_now = (struct timespec){.tv_sec = 1796342400, .tv_nsec = 0};
	log_err("c");
	fake_now.tv_nsec = 7000000;
	log_info("d");
	fake_now = (struct timespec){.tv_sec = 1796342399, .tv_nsec = 500000000}; /* back */
	log_info("e");
	log_set_clock(NULL);
}

static void test_timestamp_rolls_over_at_the_second(void **state)
{
	(void)state;
	char *out = log_to_file(rollover_lines);
	assert_string_equal(out, "2026-12-03T23:59:59.998Z info hikyaku: a\n"
	                         "2026-12-03T23:59:59.999Z warn hikyaku: b\n"
	                         "2026-12-04T00:00:00.000Z error hikyaku: c\n"
	                         "2026-12-04T00:00:00.007Z info hikyaku: d\n"
	                         "2026-12-03T23:59:59.500Z info hikyaku: e\n");
	free(out);
}

static char long_msg[5000];

static void long_lines(void)
{
	log_set_clock(fake_clock);
	fake_now = (struct timespec){.tv_sec = 1796342399, .tv_nsec = 123456789};
	log_batch_begin();
	log_info("x=%s", long_msg);
	log_info("y=%d", 1);
	log_batch_end();
	log_set_clock(NULL);
}

/* The old log_msg(), verbatim: what every line must still be. */
static size_t old_format(char line[2048], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static size_t old_format(char line[2048], const char *fmt, ...)
{
	int n = snprintf(line, 2048, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ", 2026, 12, 3,
	                 23, 59, 59, 123L, "info", "hikyaku");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, 2048 - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > 2048 - 2)
		len = 2048 - 2;
	line[len++] = '\n';
	return len;
}

static void test_lines_are_what_they_were(void **state)
{
	(void)state;
	memset(long_msg, 'q', sizeof(long_msg) - 1);
	char *out = log_to_file(long_lines);
	char want[4096];
	size_t n = old_format(want, "x=%s", long_msg);
	n += old_format(want + n, "y=%d", 1);
	want[n] = '\0';
	assert_int_equal(strlen(out), n);
	assert_string_equal(out, want);
	free(out);
}

/* Every conversion the fast formatter takes, and some it hands back to
 * vsnprintf, against vsnprintf itself. */
static char fmt_want[1 << 20];
static size_t fmt_want_len;

#define CHECK_FMT(...)                                                                             \
	do {                                                                                       \
		fmt_want_len += old_format(fmt_want + fmt_want_len, __VA_ARGS__);                  \
		log_info(__VA_ARGS__);                                                             \
	} while (0)

static void format_lines(void)
{
	log_set_clock(fake_clock);
	fake_now = (struct timespec){.tv_sec = 1796342399, .tv_nsec = 123456789};
	fmt_want_len = 0;
	CHECK_FMT("plain text, no conversion");
	CHECK_FMT("event=x a=%s b=%s c=%.3s d=%.0s e=%.40s", "one", "", "abcdef", "gone", "short");
	CHECK_FMT("d=%d %d %d %i u=%u %u x=%x %x", 0, -1, INT_MIN, INT_MAX, 0u, UINT_MAX, 255u,
	          0xdeadbeefu);
	CHECK_FMT("l=%ld %ld %lu ll=%lld %llu %llu z=%zu %zd %zx", LONG_MIN, LONG_MAX, ULONG_MAX,
	          LLONG_MIN, 0ULL, ULLONG_MAX, (size_t)SIZE_MAX, (ssize_t)-5, (size_t)4096);
	CHECK_FMT("c=%c%c pct=%% %%%s%%", 'a', '=', "x");
	const char *volatile null = NULL; /* hidden from -Wformat-overflow */
	CHECK_FMT("null=%s", null);       /* vsnprintf: (null) */
	CHECK_FMT("w=%5d|%-4s|%02x|%+d|%#x|%5.1f", 7, "ab", 3u, 4, 10u, 2.25); /* vsnprintf */
	CHECK_FMT("e=%e g=%g p=%.6f f=%f", 1.5, 0.1, 1.0 / 3, 2.0);            /* vsnprintf */
	CHECK_FMT("hh=%hhu h=%hd j=%jd", (unsigned char)200, (short)-3,
	          (intmax_t)-9); /* vsnprintf */
	static const double special[] = {0.0,      -0.0,       0.0005, 0.0015, 0.0625,  0.1875,
	                                 0.5,      1.5,        2.5,    -2.5,   -0.0001, 0.9995,
	                                 999.9995, 1e14 + 0.5, 1e15,   1e300,  -1e300,  5e-324,
	                                 123.456,  0.001,      1.0005};
	for (size_t i = 0; i < sizeof(special) / sizeof(special[0]); i++)
		CHECK_FMT("f3=%.3f f2=%.2f f1=%.1f f0=%.0f lf=%.3lf", special[i], special[i],
		          special[i], special[i], special[i]);
	CHECK_FMT("nan=%.3f inf=%.3f -inf=%.0f", NAN, INFINITY, -INFINITY);
	unsigned seed = 14;
	for (int i = 0; i < 3000; i++) {
		double v = (double)rand_r(&seed) / RAND_MAX * 2000.0 - 1000.0;
		if (i % 3 == 0)
			v = (double)(rand_r(&seed) % 200000) / 16.0; /* ties at every precision */
		if (i % 7 == 0)
			v /= 1e6;
		CHECK_FMT("delay=%.3f d=%.2f d1=%.1f d0=%.0f n=%d s=%s", v, v, v, v, i, "k");
	}
	log_set_clock(NULL);
}

static void test_formats_are_printf(void **state)
{
	(void)state;
	char *out = log_to_file(format_lines);
	fmt_want[fmt_want_len] = '\0';
	assert_int_equal(strlen(out), fmt_want_len);
	assert_string_equal(out, fmt_want);
	free(out);
}

/* --- aborts ----------------------------------------------------------------- */

static void child_abort(void)
{
	abort();
}

static void child_oom(void)
{
	void *p = xreallocarray(NULL, SIZE_MAX, 2); /* overflow: out of memory */
	free(p);
}

/* In a child: buffered lines, then die by how. The lines must be in its
 * stderr (a pipe), before whatever how writes itself. */
static char *run_dying_child(void (*how)(void), int *status_r)
{
	struct reader r;
	int wfd = pipe_open(&r);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		setrlimit(RLIMIT_CORE, &no_core);
		dup2(wfd, STDERR_FILENO);
		log_set_output(STDERR_FILENO);
		log_batch_begin(); /* held in this thread's buffer until a flush */
		log_info("event=one");
		log_err("event=two why=about_to_die");
		how();
		_exit(0);
	}
	close(wfd);
	reader_start(&r);
	char *out = reader_wait(&r, NULL);
	assert_int_equal(waitpid(pid, status_r, 0), pid);
	pthread_join(r.th, NULL);
	close(r.fd);
	free(r.buf);
	pthread_mutex_destroy(&r.lock);
	return out;
}

static void test_abort_flushes_first(void **state)
{
	(void)state;
	int status;
	char *out = run_dying_child(child_abort, &status);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	char *one = strstr(out, " info hikyaku: event=one\n");
	char *two = strstr(out, " error hikyaku: event=two why=about_to_die\n");
	assert_non_null(one);
	assert_non_null(two);
	assert_true(one < two);
	free(out);
}

static void test_out_of_memory_flushes_first(void **state)
{
	(void)state;
	int status;
	char *out = run_dying_child(child_oom, &status);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGABRT);
	char *two = strstr(out, "event=two why=about_to_die\n");
	char *oom = strstr(out, "hikyaku: out of memory allocating");
	assert_non_null(strstr(out, "event=one\n"));
	assert_non_null(two);
	assert_non_null(oom);
	assert_true(two < oom);
	free(out);
}

int main(void)
{
	log_init(LOG_LVL_INFO, "hikyaku");
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_threads_whole_and_in_order),
	    cmocka_unit_test(test_blocked_output_drops_and_counts),
	    cmocka_unit_test(test_timestamp_rolls_over_at_the_second),
	    cmocka_unit_test(test_lines_are_what_they_were),
	    cmocka_unit_test(test_formats_are_printf),
	    cmocka_unit_test(test_abort_flushes_first),
	    cmocka_unit_test(test_out_of_memory_flushes_first),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
