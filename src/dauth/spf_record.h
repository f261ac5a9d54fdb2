/* spf_record.h — the pure parts of SPF (RFC 7208): the record parser (§4.6,
 * §5, §6, ABNF §12) and the macro expander (§7). No I/O; used by spf.c, the
 * unit tests and the fuzz target. Records and macro inputs are hostile. */
#ifndef HK_DAUTH_SPF_RECORD_H
#define HK_DAUTH_SPF_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define SPF_RECORD_MAX 4096 /* a joined TXT record; longer ones are permerror */
#define SPF_TERMS_MAX 128   /* directives and modifiers in one record */
#define SPF_DOMAIN_MAX 253  /* a name in text form, no trailing dot (§4.3, §7.3) */
#define SPF_EXPAND_MAX 1024 /* the output of one expansion (explanations) */

enum spf_mech {
	SPF_MECH_ALL,
	SPF_MECH_INCLUDE,
	SPF_MECH_A,
	SPF_MECH_MX,
	SPF_MECH_PTR,
	SPF_MECH_IP4,
	SPF_MECH_IP6,
	SPF_MECH_EXISTS,
};

/* A view into struct spf_record's text. */
struct spf_span {
	uint16_t off, len;
};

struct spf_term {
	enum spf_mech mech;
	char qualifier;         /* '+', '-', '~', '?' */
	struct spf_span text;   /* the directive as written, for reasons */
	struct spf_span spec;   /* domain-spec; len 0: none (the current domain) */
	int cidr4, cidr6;       /* prefix lengths; 32 and 128 when not given */
	unsigned char addr[16]; /* ip4 (first 4 octets) / ip6 */
};

struct spf_record {
	char text[SPF_RECORD_MAX + 1];
	struct spf_term terms[SPF_TERMS_MAX];
	size_t nterms;
	struct spf_span redirect, exp; /* len 0: absent */
};

/* Parse one record that starts with "v=spf1" (§4.5). 0, or -1 with *error_r
 * (a static string) for anything that makes the record a permerror (§4.6):
 * syntax, unknown mechanisms, duplicate redirect/exp, non-ASCII, bounds. */
int spf_record_parse(const char *text, size_t len, struct spf_record *rec, const char **error_r);
/* Whether a TXT string is an SPF record: "v=spf1" then SP or the end (§4.5). */
bool spf_record_is_spf(const char *text, size_t len);
const char *spf_mech_name(enum spf_mech m);

/* What macros expand to (§7.2). Strings are NUL-terminated; ip is 4 or 16
 * octets (iplen). p may be NULL when the expansion needs no %{p}. */
struct spf_macro_ctx {
	const char *sender;        /* s */
	const char *local;         /* l */
	const char *sender_domain; /* o */
	const char *domain;        /* d */
	const unsigned char *ip;
	size_t iplen;
	const char *helo;     /* h */
	const char *p;        /* validated name of ip, "unknown" */
	const char *receiver; /* r (explanations only) */
	time_t now;           /* t (explanations only) */
};

/* Expand a macro-string (len octets at s). exp: an explanation string,
 * where c, r and t are allowed and the result is text; otherwise a
 * domain-spec: the result is cut from the left to SPF_DOMAIN_MAX octets at
 * a label boundary (§7.3) and a trailing dot is dropped. 0, or -1 with
 * *error_r for a malformed macro or an output that does not fit. */
int spf_macro_expand(const char *s, size_t len, const struct spf_macro_ctx *ctx, bool exp,
                     char *out, size_t outlen, const char **error_r);
/* Whether a macro-string uses %{p} (then spf.c looks the name up first). */
bool spf_macro_uses_p(const char *s, size_t len);

#endif
