/* conf_int.h — private to src/conf/conf*.c: the pieces the settings table
 * (conf.c) shares with the relay rules (conf_relay.c) and the operator
 * checks (conf_check.c). Not for use outside src/conf. */
#ifndef HK_CONF_CONF_INT_H
#define HK_CONF_CONF_INT_H

#include "conf/conf.h"

#include <stdbool.h>
#include <stddef.h>

/* Write a message (no position) into msg; returns -1. */
int conf_msg(char *msg, size_t msglen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Letters, digits, '-' and '.' (RFC 5321 §4.1.2 Domain, A-labels). */
bool conf_is_dns_name(const char *s, size_t len);

/* Setting checks of the relay section (conf_check_fn): one list item each. */
int conf_cidr_check(const char *s, char *msg, size_t msglen);
int conf_sender_line_check(const char *s, char *msg, size_t msglen);

/* Parse the (already checked) relay lists into conf->relay_compiled. */
void conf_relay_compile(struct conf *conf);
void conf_relay_compiled_free(struct conf *conf);

#endif
