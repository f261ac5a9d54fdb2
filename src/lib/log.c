/* log.c — key=value line logger. Any process, any thread.
 * The minimum level and ident are set once at start-up before threads run.
 *
 * A line is cheap (issue 14): it is formatted straight into a per-thread
 * buffer, under no lock, with the date and time up to the second formatted
 * once per second per thread (the milliseconds are added per line). How the
 * lines then reach the output depends on what the output is (decided by
 * fstat() when it is set):
 *
 * - a regular file or /dev/null ("direct"): a write there never waits for a
 *   reader, so the thread writes its lines itself, with no lock: one
 *   write(2) of whole lines to a regular file is never mixed with another
 *   thread's;
 * - anything else (a pipe, a socket such as journald's, a terminal): the
 *   lines are copied into one bounded buffer (LOG_RING_SIZE) under a mutex
 *   and a logger thread writes them. It is woken when that buffer goes from
 *   empty to non-empty, takes all of it (double buffering) and writes it with
 *   plain blocking writes. A reader that stops reading blocks only the logger
 *   thread; once the buffer is full, new lines are dropped and counted, and
 *   the count is logged after the lines that were kept
 *   ("event=log_dropped lines=N").
 *
 * A thread in batch mode (log_batch_begin: the event loop) keeps its lines
 * until log_thread_flush(): one hand-over (one write, or one copy into the
 * logger's buffer) per loop turn, and one before the loop submits a job to
 * a worker (workq.c), whose effects may be seen before the turn ends. Other
 * threads (the workers) hand each line over at once, as their effects (a
 * file removed) are visible at once. Either way the lines of one thread keep
 * their order, and a line is never split.
 *
 * The message itself is formatted without vfprintf for the conversions log
 * lines use (log_vformat); anything else goes to vsnprintf. Either way the
 * bytes are the same.
 *
 * log_flush() (at exit, before a deliberate abort, in the SIGABRT handler
 * installed here, and before fork) hands over the calling thread's lines and
 * writes out the logger's buffer itself, waiting at most LOG_FLUSH_WAIT_MS for
 * a destination that does not take them. */
#include "lib/log.h"
#include "lib/alloc.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048           /* longer lines are cut, newline kept */
#define LOG_TBUF_SIZE (32 * 1024)   /* a thread's batch */
#define LOG_RING_SIZE (1024 * 1024) /* lines waiting for the logger thread */
#define LOG_RING_SLACK LOG_LINE_MAX /* room for the dropped-lines notice */
#define LOG_FLUSH_WAIT_MS 1000      /* what log_flush() waits for the output */
#define LOG_IDENT_MAX 64

static enum log_level log_min = LOG_LVL_INFO; /* set once at start, read-only after */
static bool log_json = false;                  /* the same (log_set_json) */
static bool log_syslog = false;                /* the same (log_set_syslog) */
static char log_ident[LOG_IDENT_MAX + 1] = "hikyaku";
static size_t log_ident_len = 7;
static log_clock_fn *log_clock = NULL; /* tests only; NULL: CLOCK_REALTIME */

static const char *const log_names[] = {"debug", "info", "warn", "error"};
static const size_t log_name_lens[] = {5, 4, 4, 5};

/* The date and time up to the seconds, formatted once per second. */
struct log_time {
	time_t sec; /* what text shows; 0 with len 0: nothing yet */
	size_t len;
	char text[48]; /* "YYYY-MM-DDTHH:MM:SS" */
};

struct log_thread {
	struct log_time time;
	bool batch; /* hold lines until log_thread_flush() */
	size_t len; /* complete lines in buf */
	size_t nlines;
	char buf[LOG_TBUF_SIZE];
};

/* The output. Lock order: write_lock, then lock. */
struct log_out {
	pthread_mutex_t write_lock; /* held while the logger path writes to fd */
	pthread_mutex_t lock;       /* guards everything below */
	pthread_cond_t cond;        /* pend became non-empty */
	atomic_int fd;
	atomic_bool direct;         /* write from the calling thread (read unlocked) */
	atomic_bool logger_running; /* (read unlocked) */
	char *pend;                 /* lines handed over, for the logger thread */
	size_t pend_len;
	char *out;                    /* the logger's batch (swapped with pend) */
	unsigned long long dropped;   /* lines lost since the last notice */
	atomic_ullong direct_dropped; /* the same, direct output (no lock) */
};

static struct log_out log_g = {
    .write_lock = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .fd = STDERR_FILENO,
    .direct = true,
};
static pthread_once_t log_once = PTHREAD_ONCE_INIT;
static pthread_key_t log_key;
static __thread struct log_thread *log_self;

static void log_output_probe(void);
static void log_thread_exit(void *arg);
static void log_on_abort(int sig);
static void log_fork_prepare(void);
static void log_fork_parent(void);
static void log_fork_child(void);

static void log_setup(void)
{
	pthread_key_create(&log_key, log_thread_exit);
	log_output_probe();
	atexit(log_flush);
	pthread_atfork(log_fork_prepare, log_fork_parent, log_fork_child);
	/* Flush before a deliberate abort (and a library's assertion); a
	 * handler someone else installed stays. */
	struct sigaction old;
	if (sigaction(SIGABRT, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
		struct sigaction sa = {.sa_handler = log_on_abort, .sa_flags = SA_RESETHAND};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGABRT, &sa, NULL);
	}
}

void log_init(enum log_level min, const char *ident)
{
	log_min = min;
	if (ident != NULL) {
		log_ident_len = strnlen(ident, LOG_IDENT_MAX);
		memcpy(log_ident, ident, log_ident_len);
		log_ident[log_ident_len] = '\0';
	}
	pthread_once(&log_once, log_setup);
}

int log_level_parse(const char *s, enum log_level *r)
{
	for (size_t i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++) {
		if (strcasecmp(s, log_names[i]) == 0) {
			*r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

const char *log_level_name(enum log_level l)
{
	return log_names[l];
}

void log_set_clock(log_clock_fn *now)
{
	log_clock = now;
}

/* --- formatting ---------------------------------------------------------- */

/* --- the message: vsnprintf, faster for what log lines use ------------------ */

struct log_put {
	char *dst;
	size_t cap; /* room for cap - 1 octets and the NUL */
	size_t len; /* what vsnprintf would return */
};

static void log_put(struct log_put *o, const char *p, size_t n)
{
	if (o->len < o->cap - 1) {
		size_t room = o->cap - 1 - o->len;
		memcpy(o->dst + o->len, p, n < room ? n : room);
	}
	o->len += n;
}

static void log_put_u(struct log_put *o, unsigned long long v, unsigned base, size_t min_digits)
{
	char d[32];
	size_t i = sizeof(d);
	do {
		d[--i] = "0123456789abcdef"[v % base];
		v /= base;
	} while (v != 0);
	while (i > 0 && sizeof(d) - i < min_digits)
		d[--i] = '0';
	log_put(o, d + i, sizeof(d) - i);
}

/* %.Nf, N <= 3, exactly as printf: the double times 10^N is exact in the
 * 64-bit mantissa of x87 long double (53 + 10 bits), and it is rounded as
 * glibc's printf rounds under the default rounding mode (which hikyaku
 * never changes): to nearest, ties to even. -1: not here. */
static int log_put_f(struct log_put *o, double v, int prec)
{
	static const unsigned long long p10[] = {1, 10, 100, 1000};
	if (LDBL_MANT_DIG < 64 || !isfinite(v) || fabs(v) >= 1e15 || prec < 0 || prec > 3)
		return -1;
	long double x = (long double)v * (long double)p10[prec];
	if (x < 0)
		x = -x;
	unsigned long long q = (unsigned long long)x; /* x < 2^63 */
	long double frac = x - (long double)q;        /* exact */
	if (frac > 0.5L || (frac == 0.5L && (q & 1) != 0))
		q++;
	if (signbit(v))
		log_put(o, "-", 1);
	log_put_u(o, q / p10[prec], 10, 1);
	if (prec > 0) {
		log_put(o, ".", 1);
		log_put_u(o, q % p10[prec], 10, (size_t)prec);
	}
	return 0;
}

/* vsnprintf() for %s %d %i %u %x %c %% (with l, ll, z), %.Ns and %.Nf
 * (N <= 3), byte for byte; -1 for anything else (flags, widths, other
 * conversions, a NULL string), and the caller asks vsnprintf. glibc's
 * vfprintf costs about 2,000 instructions a line; this about a fifth. */
static int log_vformat(char *dst, size_t cap, const char *fmt, va_list ap)
{
	struct log_put o = {.dst = dst, .cap = cap};
	for (const char *f = fmt; *f != '\0';) {
		const char *pct = strchr(f, '%');
		if (pct == NULL) {
			log_put(&o, f, strlen(f));
			break;
		}
		log_put(&o, f, (size_t)(pct - f));
		f = pct + 1;
		int prec = -1;
		if (*f == '.') {
			prec = 0;
			for (f++; *f >= '0' && *f <= '9' && prec < 10000; f++)
				prec = prec * 10 + (*f - '0');
		}
		int len = 0; /* 1 l, 2 ll, 3 z */
		if (*f == 'l')
			len = f[1] == 'l' ? (f += 2, 2) : (f++, 1);
		else if (*f == 'z')
			len = (f++, 3);
		char c = *f++;
		if (c == 's' && len == 0) {
			const char *sv = va_arg(ap, const char *);
			if (sv == NULL)
				return -1;
			log_put(&o, sv, prec >= 0 ? strnlen(sv, (size_t)prec) : strlen(sv));
		} else if ((c == 'd' || c == 'i') && prec < 0) {
			long long v = len == 0   ? va_arg(ap, int)
			              : len == 1 ? va_arg(ap, long)
			              : len == 2 ? va_arg(ap, long long)
			                         : va_arg(ap, ssize_t);
			if (v < 0)
				log_put(&o, "-", 1);
			log_put_u(&o, v < 0 ? -(unsigned long long)v : (unsigned long long)v, 10,
			          1);
		} else if ((c == 'u' || c == 'x') && prec < 0) {
			unsigned long long v = len == 0   ? va_arg(ap, unsigned)
			                       : len == 1 ? va_arg(ap, unsigned long)
			                       : len == 2 ? va_arg(ap, unsigned long long)
			                                  : va_arg(ap, size_t);
			log_put_u(&o, v, c == 'u' ? 10 : 16, 1);
		} else if (c == 'f' && len <= 1 && prec >= 0) {
			if (log_put_f(&o, va_arg(ap, double), prec) < 0)
				return -1;
		} else if (c == 'c' && len == 0 && prec < 0) {
			char ch = (char)va_arg(ap, int);
			log_put(&o, &ch, 1);
		} else if (c == '%' && len == 0 && prec < 0) {
			log_put(&o, "%", 1);
		} else {
			return -1;
		}
	}
	dst[o.len < cap - 1 ? o.len : cap - 1] = '\0';
	return o.len > INT_MAX ? -1 : (int)o.len;
}

/* ---- JSON lines (log.format: json) ----------------------------------- */

struct log_jw {
	char *dst;
	size_t n, cap; /* cap leaves room for the closing "}\n" */
	bool full;     /* something did not fit: the pair is dropped whole */
};

static void log_jw_put(struct log_jw *w, const char *p, size_t n)
{
	if (w->full || n > w->cap - w->n) {
		w->full = true;
		return;
	}
	memcpy(w->dst + w->n, p, n);
	w->n += n;
}

/* One octet of a JSON string: controls and octets >= 0x80 that came as
 * \xNN escapes are \u00NN; '"' and '\\' escaped. */
static void log_jw_char(struct log_jw *w, unsigned char c)
{
	char e[8];
	if (c == '"' || c == '\\') {
		e[0] = '\\';
		e[1] = (char)c;
		log_jw_put(w, e, 2);
	} else if (c < 0x20 || c == 0x7f) {
		static const char hex[] = "0123456789abcdef";
		memcpy(e, "\\u00", 4);
		e[4] = hex[c >> 4];
		e[5] = hex[c & 15];
		log_jw_put(w, e, 6);
	} else {
		log_jw_put(w, (const char *)&c, 1);
	}
}

static int log_hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
			       : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A value as log_q() wrote it: quoted ("..." with \" \\ \xNN) or bare up
 * to the next space. Returns the octets consumed. */
static size_t log_jw_value(struct log_jw *w, const char *p, size_t len)
{
	size_t i = 0;
	log_jw_put(w, "\"", 1);
	if (len > 0 && p[0] == '"') {
		for (i = 1; i < len && p[i] != '"'; i++) {
			if (p[i] == '\\' && i + 1 < len) {
				int h, l;
				if (p[i + 1] == 'x' && i + 3 < len && (h = log_hexval(p[i + 2])) >= 0 &&
				    (l = log_hexval(p[i + 3])) >= 0) {
					unsigned char c = (unsigned char)(h << 4 | l);
					/* an octet that was not valid UTF-8: keep valid JSON */
					if (c >= 0x80)
						log_jw_put(w, "\\ufffd", 7);
					else
						log_jw_char(w, c);
					i += 3;
					continue;
				}
				i++;
			}
			log_jw_char(w, (unsigned char)p[i]);
		}
		if (i < len)
			i++;
	} else {
		for (; i < len && p[i] != ' '; i++)
			log_jw_char(w, (unsigned char)p[i]);
	}
	log_jw_put(w, "\"", 1);
	return i;
}

static bool log_is_key(const char *p, size_t len, size_t *klen_r)
{
	size_t k = 0;
	while (k < len && ((p[k] >= 'a' && p[k] <= 'z') || (p[k] >= '0' && p[k] <= '9') ||
			   p[k] == '_' || (p[k] >= 'A' && p[k] <= 'Z')))
		k++;
	*klen_r = k;
	return k > 0 && k < len && p[k] == '=';
}

/* The key=value message msg (mlen) as one JSON object into dst (LOG_LINE_MAX,
 * newline included): ts, level and proc first, then the pairs in order;
 * words that are not key=value are joined into "msg". */
static size_t log_json_line(char *dst, const char *ts, size_t tslen, enum log_level lvl,
			    const char *msg, size_t mlen)
{
	struct log_jw w = {.dst = dst, .cap = LOG_LINE_MAX - 3};
	char free_text[LOG_LINE_MAX];
	size_t nfree = 0;
	log_jw_put(&w, "{\"ts\":\"", 7);
	log_jw_put(&w, ts, tslen);
	log_jw_put(&w, "\",\"level\":\"", 11);
	log_jw_put(&w, log_names[lvl], log_name_lens[lvl]);
	log_jw_put(&w, "\",\"proc\":\"", 10);
	for (size_t i = 0; i < log_ident_len; i++)
		log_jw_char(&w, (unsigned char)log_ident[i]);
	log_jw_put(&w, "\"", 1);
	for (size_t i = 0; i < mlen;) {
		size_t klen;
		if (msg[i] == ' ') {
			i++;
			continue;
		}
		if (log_is_key(msg + i, mlen - i, &klen)) {
			size_t mark = w.n;
			log_jw_put(&w, ",\"", 2);
			log_jw_put(&w, msg + i, klen);
			log_jw_put(&w, "\":", 2);
			i += klen + 1;
			i += log_jw_value(&w, msg + i, mlen - i);
			if (w.full) { /* a line cut at LOG_LINE_MAX: whole pairs only */
				w.n = mark;
				break;
			}
			continue;
		}
		/* a free word (or a parenthesised remark): kept as text */
		size_t e = i;
		while (e < mlen && msg[e] != ' ')
			e++;
		if (nfree > 0)
			free_text[nfree++] = ' ';
		memcpy(free_text + nfree, msg + i, e - i);
		nfree += e - i;
		i = e;
	}
	if (nfree > 0 && !w.full) {
		size_t mark = w.n;
		log_jw_put(&w, ",\"msg\":\"", 8);
		for (size_t i = 0; i < nfree; i++)
			log_jw_char(&w, (unsigned char)free_text[i]);
		log_jw_put(&w, "\"", 1);
		if (w.full)
			w.n = mark;
	}
	w.full = false;
	w.cap += 3;
	log_jw_put(&w, "}\n", 2);
	return w.n;
}

void log_set_json(bool on)
{
	log_json = on;
}

void log_set_syslog(bool on)
{
	log_syslog = on;
}

/* For syslog (log.target: syslog): "<PRI>ident: message\n", facility mail
 * (RFC 5424 §6.2.1: 2), the time left to the syslog daemon, the message as
 * key=value or JSON. dst holds the usual line (its time tl octets, its
 * message from n to len); rewritten in place. */
static size_t log_syslog_line(char *dst, size_t tl, size_t n, size_t len, enum log_level lvl)
{
	static const int sev[] = {7, 6, 4, 3}; /* debug, info, warning, err */
	char body[LOG_LINE_MAX], ts[64];
	size_t bl;
	memcpy(ts, dst, tl);
	if (log_json) {
		char kv[LOG_LINE_MAX];
		memcpy(kv, dst + n, len - n);
		bl = log_json_line(body, ts, tl, lvl, kv, len - n);
	} else {
		bl = len - n;
		memcpy(body, dst + n, bl);
		body[bl++] = '\n';
	}
	int h = snprintf(dst, 8, "<%d>", 2 * 8 + sev[lvl]);
	size_t o = h > 0 ? (size_t)h : 0;
	memcpy(dst + o, log_ident, log_ident_len);
	o += log_ident_len;
	dst[o++] = ':';
	dst[o++] = ' ';
	if (bl > LOG_LINE_MAX - o) {
		bl = LOG_LINE_MAX - o;
		body[bl - 1] = '\n';
	}
	memcpy(dst + o, body, bl);
	return o + bl;
}

/* "2026-12-03T13:21:14.123Z info hikyaku: " + the message + "\n" into
 * dst[LOG_LINE_MAX]; the same bytes, and the same cut, as a single
 * snprintf() of the whole line. Returns the length. */
static size_t log_format(struct log_time *t, char *dst, enum log_level lvl, const char *fmt,
                         va_list ap) __attribute__((format(printf, 4, 0)));

static size_t log_format(struct log_time *t, char *dst, enum log_level lvl, const char *fmt,
                         va_list ap)
{
	struct timespec ts;
	if (log_clock != NULL)
		log_clock(&ts);
	else
		clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != t->sec || t->len == 0) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		int n = snprintf(t->text, sizeof(t->text), "%04d-%02d-%02dT%02d:%02d:%02d",
		                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		                 tm.tm_min, tm.tm_sec);
		t->len = n > 0 && (size_t)n < sizeof(t->text) ? (size_t)n : 0;
		t->sec = ts.tv_sec;
	}
	size_t n = t->len;
	memcpy(dst, t->text, n);
	long ms = ts.tv_nsec / 1000000;
	dst[n++] = '.';
	dst[n++] = (char)('0' + ms / 100);
	dst[n++] = (char)('0' + ms / 10 % 10);
	dst[n++] = (char)('0' + ms % 10);
	dst[n++] = 'Z';
	dst[n++] = ' ';
	memcpy(dst + n, log_names[lvl], log_name_lens[lvl]);
	n += log_name_lens[lvl];
	dst[n++] = ' ';
	memcpy(dst + n, log_ident, log_ident_len);
	n += log_ident_len;
	dst[n++] = ':';
	dst[n++] = ' ';
	va_list again;
	va_copy(again, ap);
	int m = log_vformat(dst + n, LOG_LINE_MAX - n - 1, fmt, ap);
	if (m < 0)
		m = vsnprintf(dst + n, LOG_LINE_MAX - n - 1, fmt, again);
	va_end(again);
	size_t len = n + (m < 0 ? 0 : (size_t)m);
	if (len > LOG_LINE_MAX - 2)
		len = LOG_LINE_MAX - 2;
	if (log_syslog)
		return log_syslog_line(dst, t->len + 5, n, len, lvl);
	if (log_json) {
		char kv[LOG_LINE_MAX], ts[64];
		size_t ml = len - n, tl = t->len + 5; /* the time with ".mmmZ" */
		memcpy(ts, dst, tl);
		memcpy(kv, dst + n, ml);
		return log_json_line(dst, ts, tl, lvl, kv, ml);
	}
	dst[len++] = '\n';
	return len;
}

static size_t log_format_l(char *dst, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static size_t log_format_l(char *dst, enum log_level lvl, const char *fmt, ...)
{
	struct log_time t = {0};
	va_list ap;
	va_start(ap, fmt);
	size_t n = log_format(&t, dst, lvl, fmt, ap);
	va_end(ap);
	return n;
}

/* The notice for lines lost, into dst (LOG_LINE_MAX free). */
static size_t log_format_dropped(char *dst, unsigned long long n)
{
	return log_format_l(dst, LOG_LVL_WARN, "event=log_dropped lines=%llu", n);
}

/* --- writing ------------------------------------------------------------- */

/* Lock m, waiting at most wait_ms (< 0: as long as it takes). */
static int log_lock(pthread_mutex_t *m, int wait_ms)
{
	if (wait_ms < 0)
		return pthread_mutex_lock(m) == 0 ? 0 : -1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += wait_ms / 1000;
	ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_mutex_timedlock(m, &ts) == 0 ? 0 : -1;
}

/* Write all of p, or give up on an error. wait_ms < 0: block as long as it
 * takes (the logger thread). Otherwise wait for the output at most wait_ms
 * between pieces, writing at most PIPE_BUF at a time after poll() says it
 * can take some, so that a blocking descriptor does not block for long. */
static int log_write_all(int fd, const char *p, size_t n, int wait_ms)
{
	/* syslog: one datagram per line, without its newline */
	while (log_syslog && n > 0) {
		const char *nl = memchr(p, '\n', n);
		size_t line = nl != NULL ? (size_t)(nl - p) : n;
		ssize_t w = write(fd, p, line);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != ENOBUFS)
			return -1; /* no syslog daemon: the rest is counted as dropped */
		p += line + (nl != NULL);
		n -= line + (nl != NULL);
	}
	while (n > 0) {
		size_t chunk = n;
		if (wait_ms >= 0) {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int r = poll(&pfd, 1, wait_ms);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0 || (pfd.revents & (POLLERR | POLLNVAL)) != 0)
				return -1;
			if (chunk > 4096) {
				/* At most PIPE_BUF, cut after a whole line: several
				 * processes (smtpd, queue, ...) share this pipe, and
				 * only writes up to PIPE_BUF are never interleaved. */
				const char *nl = memrchr(p, '\n', 4096);
				chunk = nl != NULL ? (size_t)(nl - p) + 1 : 4096;
			}
		}
		ssize_t w = write(fd, p, chunk);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) { /* someone made the output non-blocking */
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			if (poll(&pfd, 1, wait_ms) <= 0)
				return -1;
			continue;
		}
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static size_t log_count_lines(const char *p, size_t n)
{
	size_t k = 0;
	const char *end = p + n;
	while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		p++;
		k++;
	}
	return k;
}

/* Decide how lines reach fd. Called with both locks held, or before any
 * other thread logs. */
static void log_output_probe(void)
{
	struct stat st;
	log_g.direct = fstat(log_g.fd, &st) < 0 || S_ISREG(st.st_mode) ||
	               (S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3)); /* /dev/null */
}

/* Direct output: write the lines (and a notice of earlier losses) now, with
 * no lock of ours: one write(2) of whole lines to a regular file is never
 * mixed with another thread's (O_APPEND holds the inode lock, a shared file
 * offset is serialized by the kernel). A lock here only made threads sleep
 * on each other (futex calls). Only a short write (disk full) can cut a
 * line; the rest of that batch is then counted as dropped, not written
 * later between other threads' lines. */
static void log_write_direct(const char *p, size_t n)
{
	int fd = log_g.fd;
	ssize_t w;
	do
		w = write(fd, p, n);
	while (w < 0 && errno == EINTR);
	if (w != (ssize_t)n) {
		size_t done = w > 0 ? (size_t)w : 0;
		atomic_fetch_add(&log_g.direct_dropped, log_count_lines(p + done, n - done));
		return;
	}
	if (atomic_load_explicit(&log_g.direct_dropped, memory_order_relaxed) == 0)
		return;
	unsigned long long d = atomic_exchange(&log_g.direct_dropped, 0);
	if (d > 0) {
		char note[LOG_LINE_MAX];
		size_t k = log_format_dropped(note, d);
		if (write(fd, note, k) != (ssize_t)k)
			atomic_fetch_add(&log_g.direct_dropped, d);
	}
}

/* A pipe or socket without the logger thread (none could be started, or
 * this is a flush on the way out): write now, in order with the logger's
 * batches, waiting at most wait_ms for the output. */
static void log_write_fallback(const char *p, size_t n, size_t nlines, int wait_ms)
{
	if (log_lock(&log_g.write_lock, wait_ms) < 0)
		return;
	if (log_write_all(log_g.fd, p, n, wait_ms) < 0)
		atomic_fetch_add(&log_g.direct_dropped, nlines);
	pthread_mutex_unlock(&log_g.write_lock);
}

/* Write out what the logger thread has not taken yet: the logger thread's
 * loop, and log_flush(). Holding write_lock while taking the batch keeps
 * batches in order when both run. */
static void log_drain(int wait_ms)
{
	if (log_lock(&log_g.write_lock, wait_ms) < 0)
		return;
	if (log_lock(&log_g.lock, wait_ms) < 0) {
		pthread_mutex_unlock(&log_g.write_lock);
		return;
	}
	char *batch = log_g.pend;
	size_t n = log_g.pend_len;
	unsigned long long dropped = log_g.dropped;
	log_g.pend = log_g.out;
	log_g.out = batch;
	log_g.pend_len = 0;
	log_g.dropped = 0;
	int fd = log_g.fd;
	pthread_mutex_unlock(&log_g.lock);
	if (batch != NULL && dropped > 0)
		n += log_format_dropped(batch + n, dropped); /* LOG_RING_SLACK */
	if (n > 0)
		log_write_all(fd, batch, n, wait_ms);
	pthread_mutex_unlock(&log_g.write_lock);
}

static void *log_logger_main(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&log_g.lock);
		while (log_g.pend_len == 0 && log_g.dropped == 0)
			pthread_cond_wait(&log_g.cond, &log_g.lock);
		pthread_mutex_unlock(&log_g.lock);
		log_drain(-1);
	}
	return NULL;
}

/* Called with lock held. 0 when the logger thread runs and has buffers. */
static int log_logger_start(void)
{
	if (log_g.logger_running)
		return 0;
	if (log_g.pend == NULL) { /* xmalloc: out of memory aborts, after a flush */
		log_g.pend = xmalloc(LOG_RING_SIZE + LOG_RING_SLACK);
		log_g.out = xmalloc(LOG_RING_SIZE + LOG_RING_SLACK);
	}
	/* No signal is ever handled on the logger thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_t th;
	int rc = pthread_create(&th, &attr, log_logger_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return -1;
	log_g.logger_running = true;
	return 0;
}

/* Hand complete lines over: written now (direct output), or copied for the
 * logger thread; what does not fit in its buffer is dropped and counted. */
static void log_hand_over(const char *p, size_t n, size_t nlines, int wait_ms)
{
	if (n == 0)
		return;
	if (log_g.direct) {
		log_write_direct(p, n);
		return;
	}
	if (log_lock(&log_g.lock, wait_ms) < 0)
		return;
	/* Direct after all: the output changed meanwhile, there is no logger
	 * thread, or this is a flush on the way out (no new thread then). */
	if (log_g.direct || (wait_ms >= 0 && !log_g.logger_running) || log_logger_start() < 0) {
		pthread_mutex_unlock(&log_g.lock);
		log_write_fallback(p, n, nlines, wait_ms);
		return;
	}
	bool was_empty = log_g.pend_len == 0 && log_g.dropped == 0;
	size_t room = LOG_RING_SIZE - log_g.pend_len;
	size_t take = n;
	if (take > room) {
		const char *nl = room > 0 ? memrchr(p, '\n', room) : NULL;
		take = nl != NULL ? (size_t)(nl + 1 - p) : 0;
		log_g.dropped += log_count_lines(p + take, n - take);
	}
	memcpy(log_g.pend + log_g.pend_len, p, take);
	log_g.pend_len += take;
	if (was_empty)
		pthread_cond_signal(&log_g.cond);
	pthread_mutex_unlock(&log_g.lock);
}

/* --- threads ------------------------------------------------------------- */

static struct log_thread *log_thread_get(void)
{
	struct log_thread *t = log_self;
	if (t != NULL)
		return t;
	pthread_once(&log_once, log_setup);
	t = xcalloc(1, sizeof(*t)); /* alloc_die() flushes; it allocates nothing */
	log_self = t;
	pthread_setspecific(log_key, t);
	return t;
}

static void log_thread_hand_over(struct log_thread *t, int wait_ms)
{
	size_t n = t->len, k = t->nlines;
	t->len = 0;
	t->nlines = 0;
	log_hand_over(t->buf, n, k, wait_ms);
}

static void log_thread_exit(void *arg)
{
	struct log_thread *t = arg;
	log_thread_hand_over(t, -1);
	log_self = NULL;
	free(t);
}

void log_thread_flush(void)
{
	struct log_thread *t = log_self;
	if (t != NULL && t->len > 0)
		log_thread_hand_over(t, -1);
}

void log_batch_begin(void)
{
	struct log_thread *t = log_thread_get();
	if (t != NULL)
		t->batch = true;
}

void log_batch_end(void)
{
	struct log_thread *t = log_self;
	if (t == NULL)
		return;
	t->batch = false;
	log_thread_flush();
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if (lvl < log_min)
		return;
	va_list ap;
	va_start(ap, fmt);
	struct log_thread *t = log_thread_get();
	if (sizeof(t->buf) - t->len < LOG_LINE_MAX)
		log_thread_hand_over(t, -1);
	t->len += log_format(&t->time, t->buf + t->len, lvl, fmt, ap);
	t->nlines++;
	va_end(ap);
	if (!t->batch)
		log_thread_hand_over(t, -1);
}

/* --- flushing: exit, abort, fork, a new output ----------------------------- */

void log_flush(void)
{
	struct log_thread *t = log_self;
	if (t != NULL && t->len > 0)
		log_thread_hand_over(t, LOG_FLUSH_WAIT_MS);
	if (!log_g.direct && log_g.logger_running)
		log_drain(LOG_FLUSH_WAIT_MS);
}

static void log_on_abort(int sig)
{
	/* Deliberately not async-signal-safe: this process is going down and
	 * the lines that say why are worth the risk. Bounded waits only. */
	log_flush();
	raise(sig); /* SA_RESETHAND: the default action once this returns */
}

static void log_fork_prepare(void)
{
	log_flush();
	pthread_mutex_lock(&log_g.lock);
}

static void log_fork_parent(void)
{
	pthread_mutex_unlock(&log_g.lock);
}

/* The child has no logger thread; what is still buffered is the parent's
 * to write. */
static void log_fork_child(void)
{
	log_g.pend_len = 0;
	log_g.dropped = 0;
	log_g.logger_running = false;
	pthread_mutex_init(&log_g.write_lock, NULL); /* the logger may have held it */
	pthread_mutex_unlock(&log_g.lock);
}

void log_set_output(int fd)
{
	pthread_once(&log_once, log_setup);
	log_flush();
	pthread_mutex_lock(&log_g.write_lock);
	pthread_mutex_lock(&log_g.lock);
	log_g.fd = fd;
	log_output_probe();
	pthread_mutex_unlock(&log_g.lock);
	pthread_mutex_unlock(&log_g.write_lock);
}

/* The length of the well-formed UTF-8 sequence (RFC 3629 §4: no overlong
 * forms, no surrogates, nothing past U+10FFFF) of a non-ASCII character at s,
 * or 0 when there is none or it is a C1 control (U+0080-U+009F), which some
 * terminals obey as they do ESC (0x9B is CSI). */
static size_t log_utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf; /* the range of the second octet */

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4;
	else
		return 0;
	if (s[0] == 0xc2)
		lo = 0xa0; /* C1 controls */
	else if (s[0] == 0xe0)
		lo = 0xa0; /* overlong */
	else if (s[0] == 0xed)
		hi = 0x9f; /* surrogates */
	else if (s[0] == 0xf0)
		lo = 0x90; /* overlong */
	else if (s[0] == 0xf4)
		hi = 0x8f; /* past U+10FFFF */
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

const char *log_q(char out[LOG_Q_MAX], const void *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = p;
	size_t o = 1;
	int quote = (n == 0);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];
		if (o + 8 >= LOG_Q_MAX) {
			memcpy(out + o, "...", 3);
			o += 3;
			quote = 1;
			break;
		}
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
			quote = 1;
		} else if (c >= 0x80 && log_utf8_len(s + i, n - i) > 0) {
			/* readable text stays readable; o + 8 < LOG_Q_MAX leaves room */
			size_t len = log_utf8_len(s + i, n - i);
			memcpy(out + o, s + i, len);
			o += len;
			i += len - 1;
		} else if (c < 0x20 || c >= 0x7f) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
			quote = 1;
		} else {
			if (c == ' ' || c == '=')
				quote = 1;
			out[o++] = (char)c;
		}
	}
	if (quote) {
		out[0] = '"';
		out[o++] = '"';
		out[o] = '\0';
		return out;
	}
	out[o] = '\0';
	return out + 1;
}

const char *log_qs(char out[LOG_Q_MAX], const char *s)
{
	return log_q(out, s, s != NULL ? strlen(s) : 0);
}
