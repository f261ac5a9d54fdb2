/* logline.c — hikyaku's log lines back into fields (logline.h). Pure; runs
 * in `hikyaku log summary`, an administrator's command, on log files.
 *
 * key=value: "2026-12-03T13:21:14.123Z info hikyaku/queue[12]: event=x
 * k=v k2="quoted \" value" free words", values as lib/log.c's log_q()
 * writes them (\", \\, \xNN inside quotes).
 * JSON: one flat object of string values, as log.format: json writes it
 * ({"ts":..., "level":..., "proc":..., keys...}); \uXXXX escapes below
 * U+0080 are decoded, others kept as '?'. */
#include "obs/logline.h"

#include <string.h>

static void logline_set(char *dst, size_t cap, size_t *n, char c)
{
	if (*n + 1 < cap)
		dst[(*n)++] = c;
}

static int logline_hex(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
	                              : -1;
}

static struct logline_field *logline_add(struct logline *l)
{
	if (l->n >= LOGLINE_FIELDS)
		return NULL;
	struct logline_field *f = &l->f[l->n++];
	f->key[0] = f->value[0] = '\0';
	return f;
}

static void logline_hour(struct logline *l)
{
	const char *t = l->ts;
	l->hour = -1;
	if (strlen(t) >= 13 && t[10] == 'T' && t[11] >= '0' && t[11] <= '2' && t[12] >= '0' &&
	    t[12] <= '9') {
		int h = (t[11] - '0') * 10 + (t[12] - '0');
		if (h < 24)
			l->hour = h;
	}
}

/* ---- key=value ---- */

static size_t logline_kv_value(const char *p, size_t len, char *out)
{
	size_t i = 0, n = 0;
	if (len > 0 && p[0] == '"') {
		for (i = 1; i < len && p[i] != '"'; i++) {
			char c = p[i];
			if (c == '\\' && i + 1 < len) {
				int h, lo;
				if (p[i + 1] == 'x' && i + 3 < len &&
				    (h = logline_hex(p[i + 2])) >= 0 &&
				    (lo = logline_hex(p[i + 3])) >= 0) {
					c = (char)(h << 4 | lo);
					i += 3;
				} else {
					c = p[++i];
				}
			}
			logline_set(out, LOGLINE_VALUE_MAX, &n, c);
		}
		if (i < len)
			i++;
	} else {
		for (; i < len && p[i] != ' '; i++)
			logline_set(out, LOGLINE_VALUE_MAX, &n, p[i]);
	}
	out[n] = '\0';
	return i;
}

static bool logline_keych(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_';
}

static int logline_parse_kv(const char *p, size_t len, struct logline *l)
{
	/* the time, the level, the ident ending in ": " */
	const char *sp = memchr(p, ' ', len);
	if (sp == NULL || (size_t)(sp - p) >= sizeof(l->ts) || sp - p < 13)
		return -1;
	memcpy(l->ts, p, (size_t)(sp - p));
	l->ts[sp - p] = '\0';
	const char *body = NULL;
	for (const char *c = sp; c + 1 < p + len; c++) {
		if (c[0] == ':' && c[1] == ' ') {
			body = c + 2;
			break;
		}
	}
	if (body == NULL || memmem(p, (size_t)(body - p), "hikyaku", 7) == NULL)
		return -1;
	size_t i = (size_t)(body - p);
	while (i < len) {
		if (p[i] == ' ') {
			i++;
			continue;
		}
		size_t k = i;
		while (k < len && logline_keych(p[k]))
			k++;
		if (k > i && k < len && p[k] == '=' && k - i < LOGLINE_KEY_MAX) {
			struct logline_field *f = logline_add(l);
			char scratch[LOGLINE_VALUE_MAX];
			char *out = f != NULL ? f->value : scratch;
			if (f != NULL) {
				memcpy(f->key, p + i, k - i);
				f->key[k - i] = '\0';
			}
			i = k + 1;
			i += logline_kv_value(p + i, len - i, out);
			continue;
		}
		while (i < len && p[i] != ' ')
			i++; /* a free word */
	}
	logline_hour(l);
	return 0;
}

/* ---- JSON (flat, string values) ---- */

static size_t logline_ws(const char *p, size_t len, size_t i)
{
	while (i < len && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i;
}

/* A JSON string at p[i] == '"' into out (cap); returns the index after it,
 * or 0 when malformed. */
static size_t logline_jstr(const char *p, size_t len, size_t i, char *out, size_t cap)
{
	size_t n = 0;
	if (i >= len || p[i] != '"')
		return 0;
	for (i++; i < len && p[i] != '"'; i++) {
		char c = p[i];
		if ((unsigned char)c < 0x20)
			return 0;
		if (c == '\\') {
			if (++i >= len)
				return 0;
			switch (p[i]) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'u': {
				unsigned v = 0;
				if (i + 4 >= len)
					return 0;
				for (int k = 1; k <= 4; k++) {
					int h = logline_hex(p[i + k]);
					if (h < 0)
						return 0;
					v = v << 4 | (unsigned)h;
				}
				i += 4;
				c = v < 0x80 ? (char)v : '?';
				break;
			}
			case '"':
			case '\\':
			case '/':
				c = p[i];
				break;
			default:
				return 0;
			}
		}
		if (out != NULL)
			logline_set(out, cap, &n, c);
	}
	if (i >= len)
		return 0;
	if (out != NULL)
		out[n] = '\0';
	return i + 1;
}

static int logline_parse_json(const char *p, size_t len, struct logline *l)
{
	size_t i = logline_ws(p, len, 1);
	bool first = true, proc = false;
	for (;;) {
		if (i < len && p[i] == '}')
			break;
		if (!first) {
			if (i >= len || p[i] != ',')
				return -1;
			i = logline_ws(p, len, i + 1);
		}
		first = false;
		char key[LOGLINE_KEY_MAX];
		size_t e = logline_jstr(p, len, i, key, sizeof(key));
		if (e == 0)
			return -1;
		i = logline_ws(p, len, e);
		if (i >= len || p[i] != ':')
			return -1;
		i = logline_ws(p, len, i + 1);
		struct logline_field *f = NULL;
		char *out;
		char scratch[LOGLINE_VALUE_MAX];
		if (strcmp(key, "ts") == 0) {
			out = l->ts;
			e = logline_jstr(p, len, i, out, sizeof(l->ts));
		} else {
			f = strcmp(key, "level") == 0 || strcmp(key, "proc") == 0 ? NULL
			                                                          : logline_add(l);
			out = f != NULL ? f->value : scratch;
			e = logline_jstr(p, len, i, out, LOGLINE_VALUE_MAX);
			if (f != NULL)
				memcpy(f->key, key, sizeof(key));
			if (strcmp(key, "proc") == 0)
				proc = strncmp(scratch, "hikyaku", 7) == 0;
		}
		if (e == 0)
			return -1;
		i = logline_ws(p, len, e);
	}
	if (!proc || l->ts[0] == '\0')
		return -1;
	logline_hour(l);
	return 0;
}

int logline_parse(const char *p, size_t len, struct logline *l)
{
	memset(l->ts, 0, sizeof(l->ts));
	l->n = 0;
	l->hour = -1;
	while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r'))
		len--;
	if (len > 0 && p[0] == '{')
		return logline_parse_json(p, len, l);
	return logline_parse_kv(p, len, l);
}

const char *logline_get(const struct logline *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->f[i].key, key) == 0)
			return l->f[i].value;
	return NULL;
}
