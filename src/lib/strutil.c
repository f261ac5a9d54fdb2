/* strutil.c — number, size, duration parsing with range checks. Pure. */
#include "lib/strutil.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int str_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *r)
{
	uint64_t v = 0;
	if (len == 0 || len > 20)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (v < min || v > max)
		return -1;
	*r = v;
	return 0;
}

static int str_split_unit(const char *s, size_t *numlen_r)
{
	size_t n = 0;
	while (s[n] >= '0' && s[n] <= '9')
		n++;
	if (n == 0)
		return -1;
	*numlen_r = n;
	return 0;
}

int str_parse_size(const char *s, uint64_t *r)
{
	size_t n;
	uint64_t v, mult = 1;
	if (str_split_unit(s, &n) < 0 || str_parse_u64(s, n, 0, UINT64_MAX, &v) < 0)
		return -1;
	const char *u = s + n;
	if (*u == '\0' || strcasecmp(u, "b") == 0)
		mult = 1;
	else if (strcasecmp(u, "k") == 0 || strcasecmp(u, "kb") == 0 || strcasecmp(u, "kib") == 0)
		mult = 1024;
	else if (strcasecmp(u, "m") == 0 || strcasecmp(u, "mb") == 0 || strcasecmp(u, "mib") == 0)
		mult = 1024 * 1024;
	else if (strcasecmp(u, "g") == 0 || strcasecmp(u, "gb") == 0 || strcasecmp(u, "gib") == 0)
		mult = 1024ULL * 1024 * 1024;
	else if (strcasecmp(u, "t") == 0 || strcasecmp(u, "tb") == 0 || strcasecmp(u, "tib") == 0)
		mult = 1024ULL * 1024 * 1024 * 1024;
	else
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*r = v * mult;
	return 0;
}

int str_parse_duration_ms(const char *s, uint64_t *r)
{
	size_t n;
	uint64_t v, mult;
	if (str_split_unit(s, &n) < 0 || str_parse_u64(s, n, 0, UINT64_MAX, &v) < 0)
		return -1;
	const char *u = s + n;
	if (strcmp(u, "ms") == 0)
		mult = 1;
	else if (*u == '\0' || strcmp(u, "s") == 0)
		mult = 1000;
	else if (strcmp(u, "m") == 0)
		mult = 60 * 1000;
	else if (strcmp(u, "h") == 0)
		mult = 3600 * 1000;
	else if (strcmp(u, "d") == 0)
		mult = 86400ULL * 1000;
	else
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	*r = v * mult;
	return 0;
}

void str_format_size(uint64_t v, char *out, size_t outlen)
{
	static const char units[] = "KMGT";
	int u = -1;
	while (u < 3 && v != 0 && v % 1024 == 0) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(out, outlen, "%llu", (unsigned long long)v);
	else
		snprintf(out, outlen, "%llu%c", (unsigned long long)v, units[u]);
}

void str_format_duration_ms(uint64_t ms, char *out, size_t outlen)
{
	if (ms % 1000 != 0)
		snprintf(out, outlen, "%llums", (unsigned long long)ms);
	else if (ms % 86400000ULL == 0 && ms != 0)
		snprintf(out, outlen, "%llud", (unsigned long long)(ms / 86400000ULL));
	else if (ms % 3600000ULL == 0 && ms != 0)
		snprintf(out, outlen, "%lluh", (unsigned long long)(ms / 3600000ULL));
	else if (ms % 60000ULL == 0 && ms != 0)
		snprintf(out, outlen, "%llum", (unsigned long long)(ms / 60000ULL));
	else
		snprintf(out, outlen, "%llus", (unsigned long long)(ms / 1000));
}

bool str_case_eq(const char *a, size_t alen, const char *b)
{
	return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

bool str_case_prefix(const char *s, size_t len, const char *prefix)
{
	size_t pl = strlen(prefix);
	return len >= pl && strncasecmp(s, prefix, pl) == 0;
}

void str_lower(char *s)
{
	for (; *s != '\0'; s++)
		*s = (char)tolower((unsigned char)*s);
}
