/* conf_int.h — private to src/conf/conf*.c: the settings table of conf.c and
 * the pieces it shares with the dump and reference (conf_dump.c), the relay
 * rules (conf_relay.c), the delivery routes (conf_delivery.c) and the
 * operator checks (conf_check.c). Not for use outside src/conf. */
#ifndef HK_CONF_CONF_INT_H
#define HK_CONF_CONF_INT_H

#include "conf/conf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum conf_type {
	CONF_T_STRING,
	CONF_T_BOOL,
	CONF_T_UINT,
	CONF_T_SIZE,     /* "25M": K/M/G are powers of 1024, stored in octets */
	CONF_T_DURATION, /* "5m": stored in milliseconds */
	CONF_T_ENUM,     /* one of .names, stored as an int-sized enum */
	CONF_T_STRLIST,
	CONF_T_RECORDS, /* list of mappings whose fields are .fields (no lists) */
};

/* Checks one string value (or one list item) beyond its type; writes a
 * message without position on failure. */
typedef int conf_check_fn(const char *s, char *msg, size_t msglen);

struct conf_setting {
	const char *key; /* YAML path: "hostname", "limits.message_size"; a field: "tls" */
	enum conf_type type;
	const char *def;          /* default as it would be written in YAML */
	char *(*def_fn)(void);    /* computed default when def is NULL */
	const char *def_doc;      /* what the reference shows for def_fn */
	uint64_t min, max;        /* numbers only */
	size_t off;               /* offsetof() the value in struct conf, or in the record */
	size_t count_off;         /* lists: offsetof() the size_t count */
	conf_check_fn *check;     /* strings and list items; may be NULL */
	bool lower;               /* strings, enums and list items: lowercase at load */
	bool idna;                /* domains: either form accepted, kept as A-labels */
	bool required;            /* record fields: must be given; no default */
	const char *const *names; /* enums: value i is names[i]; NULL-terminated */
	const struct conf_setting *fields; /* records: the fields of one item */
	size_t n_fields;
	size_t item_size;      /* records: sizeof one item */
	const char *item_name; /* records: "listener", for messages and the reference */
	const char *shorthand; /* records: field a bare string item sets; NULL: maps only */
	const char *doc;
};

/* The settings table (conf.c), in dump order. */
extern const struct conf_setting conf_settings[];
extern const size_t conf_n_settings;

/* base is the struct conf, or one record for the fields of a record. */
static inline const void *conf_field_const(const void *base, const struct conf_setting *s)
{
	return (const char *)base + s->off;
}

static inline size_t conf_count_const(const void *base, const struct conf_setting *s)
{
	return *(const size_t *)(const void *)((const char *)base + s->count_off);
}

static inline bool conf_is_list(const struct conf_setting *s)
{
	return s->type == CONF_T_STRLIST || s->type == CONF_T_RECORDS;
}

/* Names of enum conf_tls_policy and enum conf_transport values, as written
 * in YAML; NULL-terminated. */
extern const char *const conf_tls_policies[];
extern const char *const conf_transports[];

/* The values of an enum, "a, b or c". */
void conf_enum_list(const struct conf_setting *s, char *out, size_t len);
/* A number as it would be written in YAML ("25M", "5m", "100"). */
void conf_format_number(const struct conf_setting *s, uint64_t v, char *out, size_t len);
/* Decode one UTF-8 sequence strictly; returns its length, 0 when invalid. */
size_t conf_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp_r);
/* YAML 1.2 §5.1 c-printable. */
bool conf_yaml_printable(uint32_t cp);

/* Write a message (no position) into msg; returns -1. */
/* The A-label form of a (hostile) domain in out, what the domains of the
 * configuration are kept in; NULL when it has none (not a valid IDN). */
#define CONF_DOMAIN_BUF 256 /* MAIL_IDNA_MAX + 1 */
const char *conf_domain_ascii(const char *domain, char *out, size_t outlen);
int conf_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Letters, digits, '-' and '.' (RFC 5321 §4.1.2 Domain, A-labels). */
bool conf_is_dns_name(const char *s, size_t len);

/* Setting checks of the relay section (conf_check_fn): one list item each. */
int conf_cidr_check(const char *s, char *msg, size_t msglen);
int conf_sender_line_check(const char *s, char *msg, size_t msglen);

/* Parse the (already checked) relay lists into conf->relay_compiled. */
void conf_relay_compile(struct conf *conf);
void conf_relay_compiled_free(struct conf *conf);

/* Setting checks of the delivery, dns and routes sections (conf_delivery.c). */
int conf_smarthost_check(const char *s, char *msg, size_t msglen);
int conf_route_address_check(const char *s, char *msg, size_t msglen);
int conf_forwarder_check(const char *s, char *msg, size_t msglen);
/* The routes against each other and their transports, after the whole file:
 * on error returns -1 with the index of the offending route in *bad_r. */
int conf_routes_check(const struct conf *conf, size_t *bad_r, char *msg, size_t msglen);
/* Build the default routes of conf_route_for() into conf->routes_compiled. */
void conf_routes_compile(struct conf *conf);
void conf_routes_compiled_free(struct conf *conf);

#endif
