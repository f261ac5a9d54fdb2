/* log.c — key=value line logger. Any process, any thread.
 * The minimum level and ident are set once at start-up before threads run. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level log_min = LOG_LVL_INFO; /* set once at start, read-only after */
static const char *log_ident = "hikyaku";

static const char *const log_names[] = {"debug", "info", "warn", "error"};

void log_init(enum log_level min, const char *ident)
{
	log_min = min;
	if (ident != NULL)
		log_ident = ident;
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

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	if (lvl < log_min)
		return;
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, (long)(tv.tv_usec / 1000), log_names[lvl], log_ident);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
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
