/* log.h — one line per event, key=value, to stderr.
 * Any process, any thread: each line is formatted into a per-thread buffer and
 * written whole, never mixed with another thread's; batched per event-loop
 * turn, and never blocking the caller on a slow reader (log.c).
 * Values that come from the network must go through
 * log_q() so that a hostile peer cannot forge keys or lines. */
#ifndef HK_LIB_LOG_H
#define HK_LIB_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERR };

#define LOG_Q_MAX 256 /* size of a log_q() output buffer */

void log_init(enum log_level min, const char *ident);
/* JSON lines instead of key=value (log.format: json): each line one object
 * {"ts", "level", "proc", then the message's keys in order, "msg" for
 * its words that are not key=value}; values are strings. Set at start,
 * before threads. */
void log_set_json(bool on);
/* Lines for a syslog socket (log.target: syslog): "<PRI>ident: message",
 * facility mail, one write per line. The output (log_set_output, or
 * stderr) must be a datagram socket connected to the syslog daemon. */
void log_set_syslog(bool on);
int log_level_parse(const char *s, enum log_level *r);
const char *log_level_name(enum log_level l);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Batching: between log_batch_begin() and log_batch_end() this thread's
 * lines wait in its buffer until log_thread_flush() (the event loop calls it
 * at the end of each turn, and workq_submit() before a job can run). Other
 * threads hand each line over at once. */
void log_batch_begin(void);
void log_batch_end(void);
void log_thread_flush(void);
/* Write out everything buffered: this thread's lines and the logger thread's
 * backlog, waiting at most about a second for the output. At exit, before a
 * deliberate abort (also run by a SIGABRT handler) and before fork. */
void log_flush(void);

/* Tests: another output descriptor (instead of stderr), another clock. */
struct timespec;
typedef void log_clock_fn(struct timespec *now_r);
void log_set_output(int fd);
void log_set_clock(log_clock_fn *now);

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)

/* Render (p, n) as a safe log value into out[LOG_Q_MAX]: printable ASCII and
 * well-formed UTF-8 (RFC 3629) are kept; control characters, DEL, C1 controls
 * (U+0080-U+009F), octets that are not well-formed UTF-8, '"' and '\\' are
 * escaped (\xNN, \", \\), and the whole is wrapped in double quotes when it
 * is empty or contained escapes, spaces or '='.
 * Long values are cut with "...". Returns out. */
const char *log_q(char out[LOG_Q_MAX], const void *p, size_t n);
const char *log_qs(char out[LOG_Q_MAX], const char *s);

#endif
