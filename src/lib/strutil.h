/* strutil.h — range-checked number, size and duration parsing; small string
 * helpers over (ptr, len) views. Pure; any process. */
#ifndef HK_LIB_STRUTIL_H
#define HK_LIB_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decimal digits only, no sign, no spaces; fails outside [min, max]. */
int str_parse_u64(const char *s, size_t len, uint64_t min, uint64_t max, uint64_t *r);
/* "25M", "100K", "1G", "512" (bytes); K/M/G are powers of 1024. */
int str_parse_size(const char *s, uint64_t *r);
/* "30s", "5m", "2h", "5d", "250ms" or a bare number of seconds; result in ms. */
int str_parse_duration_ms(const char *s, uint64_t *r);
/* Human forms for config dump: "25M", "5m". */
void str_format_size(uint64_t v, char *out, size_t outlen);
void str_format_duration_ms(uint64_t ms, char *out, size_t outlen);

bool str_case_eq(const char *a, size_t alen, const char *b);
bool str_case_prefix(const char *s, size_t len, const char *prefix);
void str_lower(char *s);

#endif
