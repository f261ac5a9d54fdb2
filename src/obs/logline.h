/* logline.h — parse one of hikyaku's own log lines, key=value or JSON
 * (log.format), for `hikyaku log summary`. Pure: a line in, its time and
 * fields out, no allocation; values are decoded into the caller's
 * struct (bounded, cut when longer). The input is a log file, which holds
 * what clients sent (addresses, reasons): every value is bounded and a
 * line that is neither form is skipped, never trusted. */
#ifndef HK_OBS_LOGLINE_H
#define HK_OBS_LOGLINE_H

#include <stdbool.h>
#include <stddef.h>

#define LOGLINE_FIELDS 24
#define LOGLINE_VALUE_MAX 512
#define LOGLINE_KEY_MAX 32

struct logline_field {
	char key[LOGLINE_KEY_MAX];
	char value[LOGLINE_VALUE_MAX];
};

struct logline {
	char ts[32]; /* "YYYY-MM-DDTHH:MM:SS..." as written */
	int hour;    /* 0..23, -1 unknown */
	struct logline_field f[LOGLINE_FIELDS];
	size_t n;
};

/* 0 with *l filled, -1 when p (len octets, without its newline) is not
 * a hikyaku log line. Fields past LOGLINE_FIELDS are dropped. */
int logline_parse(const char *p, size_t len, struct logline *l);
/* The value of key, or NULL. */
const char *logline_get(const struct logline *l, const char *key);

#endif
