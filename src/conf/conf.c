/* conf.c — the configuration. One settings table (conf_settings[] below)
 * declares every setting once: YAML key, type, default, range, doc and where
 * it lives in struct conf. The same table applies the defaults, walks the
 * YAML document (libfyaml), prints `hikyaku config dump` and generates
 * docs/CONFIG.md, so the four can never disagree.
 *
 * Runs in the master (root) at start and on SIGHUP, and in `hikyaku check`.
 * The file is trusted (root-owned) but it is still parsed with bounds: a size
 * cap on the file, every number range-checked, unknown keys refused so that a
 * typo is not silently ignored, aliases refused (no expansion bombs). Every
 * error names "file:line:column". */
#include "conf/conf.h"

#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/strutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CONF_FILE_MAX (1024 * 1024) /* a config file is small; refuse anything silly */
#define CONF_MSG_MAX 512
#define CONF_KEY_MAX 128
#define CONF_EMBEDDED_NAME "(embedded default)"

/* The development default of DESIGN.md ("Configuration"); it goes through
 * the same parser as a file, so it is validated like one. */
const char conf_embedded_default[] = "listen:\n"
                                     "  - 127.0.0.1:2525\n"
                                     "spool_dir: ./var/spool\n"
                                     "maildir_root: ./var/mail\n"
                                     "local_domains: [localhost]\n"
                                     "accept_any_user: true\n";

enum conf_type {
	CONF_T_STRING,
	CONF_T_BOOL,
	CONF_T_UINT,
	CONF_T_SIZE,     /* "25M": K/M/G are powers of 1024, stored in octets */
	CONF_T_DURATION, /* "5m": stored in milliseconds */
	CONF_T_STRLIST,
	CONF_T_LISTENERS,
};

/* Checks one string value (or one list item) beyond its type; writes a
 * message without position on failure. */
typedef int conf_check_fn(const char *s, char *msg, size_t msglen);

struct conf_setting {
	const char *key; /* YAML path: "hostname", "limits.message_size" */
	enum conf_type type;
	const char *def;       /* default as it would be written in YAML */
	char *(*def_fn)(void); /* computed default when def is NULL */
	const char *def_doc;   /* what the reference shows for def_fn */
	uint64_t min, max;     /* numbers only */
	size_t off;            /* offsetof() the value in struct conf */
	size_t count_off;      /* lists: offsetof() the size_t count */
	conf_check_fn *check;  /* strings and list items; may be NULL */
	bool lower;            /* strings and list items: lowercase at load */
	const char *doc;
};

static char *conf_hostname_default(void);
static conf_check_fn conf_log_level_check;
static conf_check_fn conf_path_check;
static conf_check_fn conf_hostname_check;
static conf_check_fn conf_domain_check;
static conf_check_fn conf_listener_check;

#define OFF(field) offsetof(struct conf, field)
#define KIB 1024ULL
#define MIB (1024ULL * 1024)
#define GIB (1024ULL * 1024 * 1024)
#define SEC 1000ULL
#define DAY (86400ULL * 1000)

/* Ordered for the dump: top-level settings first, then each section's
 * settings together (conf_dump opens a section when the prefix changes). */
/* One setting per block reads better than clang-format's one field per line. */
/* clang-format off */
static const struct conf_setting conf_settings[] = {
	{ .key = "hostname", .type = CONF_T_STRING, .def_fn = conf_hostname_default,
	  .def_doc = "the system host name (gethostname)", .off = OFF(hostname),
	  .check = conf_hostname_check,
	  .doc = "Name announced in the greeting, EHLO and Received: (RFC 5321 §4.1.1.1)." },
	{ .key = "user", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(user),
	  .doc = "Unprivileged user the workers run as when started as root; \"\" for none." },
	{ .key = "log_level", .type = CONF_T_STRING, .def = "info", .off = OFF(log_level),
	  .check = conf_log_level_check,
	  .doc = "Least severe log level: debug, info, warn or error." },
	{ .key = "spool_dir", .type = CONF_T_STRING, .def = "/var/spool/hikyaku",
	  .off = OFF(spool_dir), .check = conf_path_check,
	  .doc = "Directory of the mail queue; must be on one file system." },
	{ .key = "maildir_root", .type = CONF_T_STRING, .def = "/var/mail/vhosts",
	  .off = OFF(maildir_root), .check = conf_path_check,
	  .doc = "Root of local Maildirs, laid out as DOMAIN/LOCAL/." },
	{ .key = "users_file", .type = CONF_T_STRING, .def = "\"\"", .off = OFF(users_file),
	  .doc = "Dovecot passwd-file of local users (user@domain:...); \"\" for none." },
	{ .key = "accept_any_user", .type = CONF_T_BOOL, .def = "false",
	  .off = OFF(accept_any_user),
	  .doc = "Accept any local part in local_domains (development; no users file needed)." },
	{ .key = "local_domains", .type = CONF_T_STRLIST, .def = "[]", .off = OFF(local_domains),
	  .count_off = OFF(n_local_domains), .check = conf_domain_check, .lower = true,
	  .doc = "Domains delivered locally; matched case-insensitively." },
	{ .key = "listen", .type = CONF_T_LISTENERS, .def = "[]", .off = OFF(listeners),
	  .count_off = OFF(n_listeners), .check = conf_listener_check,
	  .doc = "SMTP listeners: \"host:port\", \"[v6]:port\", \"*:port\" or {address: ...}; "
		 "at least one." },

	{ .key = "limits.command_line", .type = CONF_T_UINT, .def = "512",
	  .min = 512, .max = 65536, .off = OFF(limits.command_line),
	  .doc = "Longest command line in octets incl. CRLF (RFC 5321 §4.5.3.1.4)." },
	{ .key = "limits.text_line", .type = CONF_T_UINT, .def = "1000",
	  .min = 1000, .max = 1048576, .off = OFF(limits.text_line),
	  .doc = "Longest message line in octets incl. CRLF (RFC 5321 §4.5.3.1.6)." },
	{ .key = "limits.message_size", .type = CONF_T_SIZE, .def = "25M",
	  .min = KIB, .max = 2 * GIB, .off = OFF(limits.message_size),
	  .doc = "Largest message accepted, announced in EHLO SIZE (RFC 1870)." },
	{ .key = "limits.recipients", .type = CONF_T_UINT, .def = "100",
	  .min = 1, .max = 100000, .off = OFF(limits.recipients),
	  .doc = "Recipients per transaction (RFC 5321 §4.5.3.1.8 requires at least 100)." },
	{ .key = "limits.errors", .type = CONF_T_UINT, .def = "20",
	  .min = 1, .max = 1000, .off = OFF(limits.errors),
	  .doc = "Errors in one session before it is closed." },
	{ .key = "limits.header_size", .type = CONF_T_SIZE, .def = "100K",
	  .min = KIB, .max = 64 * MIB, .off = OFF(limits.header_size),
	  .doc = "Largest header section of a message." },
	{ .key = "limits.received_hops", .type = CONF_T_UINT, .def = "50",
	  .min = 1, .max = 1000, .off = OFF(limits.received_hops),
	  .doc = "Received: fields beyond which a message is a loop (RFC 5321 §6.3)." },
	{ .key = "limits.connections", .type = CONF_T_UINT, .def = "1000",
	  .min = 1, .max = 1000000, .off = OFF(limits.connections),
	  .doc = "Concurrent SMTP connections in total." },
	{ .key = "limits.connections_per_ip", .type = CONF_T_UINT, .def = "50",
	  .min = 1, .max = 1000000, .off = OFF(limits.connections_per_ip),
	  .doc = "Concurrent SMTP connections from one client address." },

	{ .key = "timeouts.command", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.command),
	  .doc = "Wait for the next command (RFC 5321 §4.5.3.2.7)." },
	{ .key = "timeouts.data", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.data),
	  .doc = "Wait for the next block of message data." },
	{ .key = "timeouts.session", .type = CONF_T_DURATION, .def = "30m",
	  .min = SEC, .max = DAY, .off = OFF(timeouts.session),
	  .doc = "Deadline for a whole session." },

	{ .key = "queue.commit_threads", .type = CONF_T_UINT, .def = "4",
	  .min = 1, .max = 64, .off = OFF(queue.commit_threads),
	  .doc = "Threads that commit messages to the spool." },
	{ .key = "queue.delivery_threads", .type = CONF_T_UINT, .def = "4",
	  .min = 1, .max = 64, .off = OFF(queue.delivery_threads),
	  .doc = "Threads that deliver to local Maildirs." },
	{ .key = "queue.retry_min", .type = CONF_T_DURATION, .def = "5m",
	  .min = SEC, .max = 7 * DAY, .off = OFF(queue.retry_min),
	  .doc = "First retry after a temporary failure (RFC 5321 §4.5.4.1)." },
	{ .key = "queue.retry_max", .type = CONF_T_DURATION, .def = "1h",
	  .min = SEC, .max = 7 * DAY, .off = OFF(queue.retry_max),
	  .doc = "Cap of the doubling retry interval; at least retry_min." },
};
/* clang-format on */

#define CONF_N_SETTINGS (sizeof(conf_settings) / sizeof(conf_settings[0]))

/* Position of a node, 1-based; line 0 means "not set in the file". */
struct conf_pos {
	int line;
	int col;
};

/* One load in progress. */
struct conf_parse {
	struct conf *conf;
	const char *file;
	char *err;
	size_t errlen;
	struct conf_pos pos[CONF_N_SETTINGS]; /* where each setting was given */
};

/* --- small helpers ------------------------------------------------------ */

static void *conf_field(struct conf *conf, const struct conf_setting *s)
{
	return (char *)conf + s->off;
}

static const void *conf_field_const(const struct conf *conf, const struct conf_setting *s)
{
	return (const char *)conf + s->off;
}

static size_t *conf_count(struct conf *conf, const struct conf_setting *s)
{
	return (size_t *)(void *)((char *)conf + s->count_off);
}

static size_t conf_count_const(const struct conf *conf, const struct conf_setting *s)
{
	return *(const size_t *)(const void *)((const char *)conf + s->count_off);
}

static const struct conf_setting *conf_setting_find(const char *key)
{
	for (size_t i = 0; i < CONF_N_SETTINGS; i++)
		if (strcmp(conf_settings[i].key, key) == 0)
			return &conf_settings[i];
	return NULL;
}

/* Is name a section ("limits") of some dotted key? */
static bool conf_section_exists(const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < CONF_N_SETTINGS; i++)
		if (strncmp(conf_settings[i].key, name, n) == 0 && conf_settings[i].key[n] == '.')
			return true;
	return false;
}

static __attribute__((format(printf, 4, 5))) int conf_error(struct conf_parse *p, int line, int col,
                                                            const char *fmt, ...)
{
	char msg[CONF_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (p->err != NULL && p->errlen > 0)
		snprintf(p->err, p->errlen, "%s:%d:%d: %s", p->file, line, col, msg);
	return -1;
}

static __attribute__((format(printf, 3, 4))) int conf_msg(char *msg, size_t msglen, const char *fmt,
                                                          ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
	return -1;
}

/* Where a node starts. Collections have no public start mark in libfyaml
 * 0.7, so they are located by their first scalar; an empty collection or a
 * null value (no token) falls back to the key. */
static bool conf_node_pos(struct fy_node *n, int depth, struct conf_pos *r)
{
	void *it = NULL;

	if (n == NULL || depth > 8)
		return false;
	if (fy_node_is_scalar(n)) {
		const struct fy_mark *m = fy_token_start_mark(fy_node_get_scalar_token(n));
		if (m == NULL)
			return false;
		r->line = m->line + 1;
		r->col = m->column + 1;
		/* The token of a quoted scalar starts after the quote, that of an
		 * alias after the '*': point at the quote or the '*'. */
		enum fy_node_style st = fy_node_get_style(n);
		if ((st == FYNS_SINGLE_QUOTED || st == FYNS_DOUBLE_QUOTED || st == FYNS_ALIAS) &&
		    r->col > 1)
			r->col--;
		return true;
	}
	if (fy_node_is_sequence(n))
		return conf_node_pos(fy_node_sequence_iterate(n, &it), depth + 1, r);
	struct fy_node_pair *pair = fy_node_mapping_iterate(n, &it);
	return pair != NULL && conf_node_pos(fy_node_pair_key(pair), depth + 1, r);
}

static struct conf_pos conf_pos_of(struct fy_node *n, struct fy_node *fallback)
{
	struct conf_pos r = {1, 1};

	if (!conf_node_pos(n, 0, &r))
		conf_node_pos(fallback, 0, &r);
	return r;
}

/* YAML 1.2 core schema null: an empty plain scalar, "~" or "null". */
static bool conf_node_is_null(struct fy_node *n)
{
	size_t len;
	const char *s;

	if (n == NULL)
		return true;
	if (!fy_node_is_scalar(n) || fy_node_get_style(n) != FYNS_PLAIN)
		return false;
	s = fy_node_get_scalar(n, &len);
	return s == NULL || len == 0 || (len == 1 && s[0] == '~') ||
	       (len == 4 && (memcmp(s, "null", 4) == 0 || memcmp(s, "Null", 4) == 0 ||
	                     memcmp(s, "NULL", 4) == 0));
}

static const char *conf_type_name(enum conf_type t)
{
	switch (t) {
	case CONF_T_STRING:
		return "string";
	case CONF_T_BOOL:
		return "bool";
	case CONF_T_UINT:
		return "uint";
	case CONF_T_SIZE:
		return "size";
	case CONF_T_DURATION:
		return "duration";
	case CONF_T_STRLIST:
		return "list of strings";
	case CONF_T_LISTENERS:
		return "list of listeners";
	}
	return "?";
}

static void conf_format_number(const struct conf_setting *s, uint64_t v, char *out, size_t len)
{
	if (s->type == CONF_T_SIZE)
		str_format_size(v, out, len);
	else if (s->type == CONF_T_DURATION)
		str_format_duration_ms(v, out, len);
	else
		snprintf(out, len, "%llu", (unsigned long long)v);
}

/* --- value checks --------------------------------------------------------- */

static char *conf_hostname_default(void)
{
	char name[256];

	/* If it has no dot it is still used as is: conf_check warns. */
	if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
		return xstrdup("localhost");
	name[sizeof(name) - 1] = '\0';
	return xstrdup(name);
}

static int conf_log_level_check(const char *s, char *msg, size_t msglen)
{
	static const char *const levels[] = {"debug", "info", "warn", "error"};

	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++)
		if (strcmp(s, levels[i]) == 0)
			return 0;
	return conf_msg(msg, msglen, "invalid log level \"%.64s\": use debug, info, warn or error",
	                s);
}

static int conf_path_check(const char *s, char *msg, size_t msglen)
{
	if (s[0] == '\0')
		return conf_msg(msg, msglen, "must not be empty");
	return 0;
}

/* Letters, digits, '-' and '.', as in RFC 5321 §4.1.2 Domain (A-labels). */
static bool conf_is_dns_name(const char *s, size_t len)
{
	if (len == 0 || len > 255 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '-' || c == '.';
		if (!ok || (c == '.' && i + 1 < len && s[i + 1] == '.'))
			return false;
	}
	return true;
}

/* Lenient on purpose (a system name may hold '_'; conf_check warns about a
 * missing dot) but nothing that would break an SMTP line: printable ASCII
 * without spaces. */
static int conf_hostname_check(const char *s, char *msg, size_t msglen)
{
	size_t len = strlen(s);
	bool ok = len > 0 && len <= 255;

	for (size_t i = 0; ok && i < len; i++)
		ok = s[i] > ' ' && s[i] < 0x7f;
	if (!ok)
		return conf_msg(msg, msglen, "invalid host name \"%.64s\"", s);
	return 0;
}

static int conf_domain_check(const char *s, char *msg, size_t msglen)
{
	if (!conf_is_dns_name(s, strlen(s)))
		return conf_msg(msg, msglen, "invalid domain \"%.64s\"", s);
	return 0;
}

/* "host:port", "[v6]:port" or "*:port"; host an IPv4 literal or a name. */
static int conf_listener_check(const char *s, char *msg, size_t msglen)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;
	char host[256];

	if (colon == NULL || colon == s)
		goto bad;
	if (str_parse_u64(colon + 1, strlen(colon + 1), 1, 65535, &port) < 0)
		return conf_msg(msg, msglen, "invalid listener \"%.64s\": port must be 1-65535", s);
	size_t hlen = (size_t)(colon - s);
	if (hlen >= sizeof(host))
		goto bad;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "*") == 0)
		return 0;
	if (host[0] == '[') {
		struct in6_addr a6;
		if (hlen < 3 || host[hlen - 1] != ']')
			goto bad;
		host[hlen - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &a6) != 1)
			goto bad;
		return 0;
	}
	if (conf_is_dns_name(host, hlen))
		return 0;
bad:
	return conf_msg(msg, msglen,
	                "invalid listener \"%.64s\": expected host:port, [v6]:port or *:port", s);
}

/* --- setting values ------------------------------------------------------- */

/* Parse text (a YAML scalar, or a default) into a scalar setting. */
static int conf_scalar_set(struct conf *conf, const struct conf_setting *s, const char *v,
                           char *msg, size_t msglen)
{
	uint64_t n;
	int rc;
	char lo[32], hi[32], got[32];

	switch (s->type) {
	case CONF_T_STRING: {
		if (s->check != NULL && s->check(v, msg, msglen) < 0)
			return -1;
		char **field = conf_field(conf, s);
		free(*field);
		*field = xstrdup(v);
		return 0;
	}
	case CONF_T_BOOL:
		/* YAML 1.2 core schema booleans only: no yes/no/on/off. */
		if (strcmp(v, "true") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0)
			*(bool *)conf_field(conf, s) = true;
		else if (strcmp(v, "false") == 0 || strcmp(v, "False") == 0 ||
		         strcmp(v, "FALSE") == 0)
			*(bool *)conf_field(conf, s) = false;
		else
			return conf_msg(msg, msglen, "expected true or false, got \"%.64s\"", v);
		return 0;
	case CONF_T_UINT:
		rc = str_parse_u64(v, strlen(v), 0, UINT64_MAX, &n);
		if (rc < 0)
			return conf_msg(msg, msglen, "expected an unsigned integer, got \"%.64s\"",
			                v);
		break;
	case CONF_T_SIZE:
		if (str_parse_size(v, &n) < 0)
			return conf_msg(msg, msglen,
			                "invalid size \"%.64s\": expected a number with an "
			                "optional K, M or G suffix, e.g. 25M",
			                v);
		break;
	case CONF_T_DURATION:
		if (str_parse_duration_ms(v, &n) < 0)
			return conf_msg(msg, msglen,
			                "invalid duration \"%.64s\": expected e.g. 30s, 5m, 2h, 1d",
			                v);
		break;
	default:
		return conf_msg(msg, msglen, "expected a list");
	}
	if (n < s->min || n > s->max) {
		conf_format_number(s, s->min, lo, sizeof(lo));
		conf_format_number(s, s->max, hi, sizeof(hi));
		conf_format_number(s, n, got, sizeof(got));
		return conf_msg(msg, msglen, "%s is out of range %s..%s", got, lo, hi);
	}
	*(uint64_t *)conf_field(conf, s) = n;
	return 0;
}

static void conf_list_clear(struct conf *conf, const struct conf_setting *s)
{
	size_t *count = conf_count(conf, s);

	if (s->type == CONF_T_STRLIST) {
		char ***list = conf_field(conf, s);
		for (size_t i = 0; i < *count; i++)
			free((*list)[i]);
		free(*list);
		*list = NULL;
	} else {
		struct conf_listener **list = conf_field(conf, s);
		for (size_t i = 0; i < *count; i++)
			free((*list)[i].address);
		free(*list);
		*list = NULL;
	}
	*count = 0;
}

/* Append one item, after its check; v is consumed either way. */
static int conf_list_add(struct conf *conf, const struct conf_setting *s, char *v, char *msg,
                         size_t msglen)
{
	size_t *count = conf_count(conf, s);

	if (s->lower)
		str_lower(v);
	if (s->check != NULL && s->check(v, msg, msglen) < 0) {
		free(v);
		return -1;
	}
	if (s->type == CONF_T_STRLIST) {
		char ***list = conf_field(conf, s);
		*list = xreallocarray(*list, *count + 1, sizeof(**list));
		(*list)[*count] = v;
	} else {
		struct conf_listener **list = conf_field(conf, s);
		*list = xreallocarray(*list, *count + 1, sizeof(**list));
		(*list)[*count].address = v;
	}
	(*count)++;
	return 0;
}

static void conf_defaults_apply(struct conf *conf)
{
	char msg[CONF_MSG_MAX];

	for (size_t i = 0; i < CONF_N_SETTINGS; i++) {
		const struct conf_setting *s = &conf_settings[i];
		if (s->type == CONF_T_STRLIST || s->type == CONF_T_LISTENERS)
			continue; /* all list defaults are empty: calloc'ed */
		if (s->def == NULL) {
			char **field = conf_field(conf, s);
			*field = s->def_fn();
			continue;
		}
		/* def is YAML text: "\"\"" is the empty string. */
		const char *v = strcmp(s->def, "\"\"") == 0 ? "" : s->def;
		if (conf_scalar_set(conf, s, v, msg, sizeof(msg)) < 0) {
			/* The table is wrong: a bug, caught by the unit tests. */
			fprintf(stderr, "conf: bad default for %s: %s\n", s->key, msg);
			abort();
		}
	}
}

/* --- walking the YAML document ------------------------------------------- */

/* The text of a scalar node, NUL-terminated, or NULL with an error. */
static char *conf_node_text(struct conf_parse *p, const char *key, struct fy_node *n,
                            struct fy_node *keynode, const char *what)
{
	struct conf_pos pos = conf_pos_of(n, keynode);
	size_t len;
	const char *s;

	if (n != NULL && fy_node_is_alias(n)) {
		conf_error(p, pos.line, pos.col, "%s: aliases are not supported", key);
		return NULL;
	}
	if (conf_node_is_null(n)) {
		conf_error(p, pos.line, pos.col, "%s: expected %s, got nothing (null)", key, what);
		return NULL;
	}
	if (!fy_node_is_scalar(n)) {
		conf_error(p, pos.line, pos.col, "%s: expected %s, got a %s", key, what,
		           fy_node_is_sequence(n) ? "list" : "mapping");
		return NULL;
	}
	s = fy_node_get_scalar(n, &len);
	if (s == NULL)
		s = "";
	if (memchr(s, '\0', len) != NULL) {
		conf_error(p, pos.line, pos.col, "%s: NUL byte in value", key);
		return NULL;
	}
	return xstrndup(s, len);
}

/* One listener item: "addr:port" or {address: "addr:port"}. */
static char *conf_listener_text(struct conf_parse *p, const char *key, struct fy_node *item,
                                struct fy_node *keynode)
{
	struct fy_node *addr = NULL, *addrkey = NULL;
	struct fy_node_pair *pair;
	void *it = NULL;

	if (item == NULL || !fy_node_is_mapping(item))
		return conf_node_text(p, key, item, keynode, "\"host:port\" or {address: ...}");
	while ((pair = fy_node_mapping_iterate(item, &it)) != NULL) {
		struct fy_node *k = fy_node_pair_key(pair);
		const char *ks = k != NULL && fy_node_is_scalar(k) ? fy_node_get_scalar0(k) : NULL;
		if (ks == NULL || strcmp(ks, "address") != 0) {
			struct conf_pos pos = conf_pos_of(k, keynode);
			conf_error(p, pos.line, pos.col, "unknown key \"%s[].%.64s\"", key,
			           ks != NULL ? ks : "?");
			return NULL;
		}
		addr = fy_node_pair_value(pair);
		addrkey = k;
	}
	if (addrkey == NULL) {
		struct conf_pos pos = conf_pos_of(item, keynode);
		conf_error(p, pos.line, pos.col, "%s: listener without address", key);
		return NULL;
	}
	return conf_node_text(p, key, addr, addrkey, "\"host:port\"");
}

static int conf_list_apply(struct conf_parse *p, const struct conf_setting *s,
                           struct fy_node *keynode, struct fy_node *val)
{
	char msg[CONF_MSG_MAX];
	struct fy_node *item;
	void *it = NULL;

	if (val == NULL || !fy_node_is_sequence(val)) {
		struct conf_pos pos = conf_pos_of(val, keynode);
		if (val != NULL && fy_node_is_alias(val))
			return conf_error(p, pos.line, pos.col, "%s: aliases are not supported",
			                  s->key);
		return conf_error(p, pos.line, pos.col, "%s: expected a list (e.g. [a, b])",
		                  s->key);
	}
	conf_list_clear(p->conf, s); /* the file replaces the default */
	while ((item = fy_node_sequence_iterate(val, &it)) != NULL) {
		char *v;
		if (s->type == CONF_T_LISTENERS)
			v = conf_listener_text(p, s->key, item, keynode);
		else
			v = conf_node_text(p, s->key, item, keynode, "a string");
		if (v == NULL)
			return -1;
		if (conf_list_add(p->conf, s, v, msg, sizeof(msg)) < 0) {
			struct conf_pos pos = conf_pos_of(item, keynode);
			return conf_error(p, pos.line, pos.col, "%s: %s", s->key, msg);
		}
	}
	return 0;
}

static int conf_setting_apply(struct conf_parse *p, const struct conf_setting *s,
                              struct fy_node *keynode, struct fy_node *val)
{
	char msg[CONF_MSG_MAX];
	struct conf_pos pos = conf_pos_of(val, keynode);
	int rc;

	p->pos[s - conf_settings] = pos;
	if (s->type == CONF_T_STRLIST || s->type == CONF_T_LISTENERS)
		return conf_list_apply(p, s, keynode, val);

	char *v = conf_node_text(p, s->key, val, keynode,
	                         s->type == CONF_T_STRING ? "a string" : "a scalar");
	if (v == NULL)
		return -1;
	if (s->lower)
		str_lower(v);
	rc = conf_scalar_set(p->conf, s, v, msg, sizeof(msg));
	free(v);
	if (rc < 0)
		return conf_error(p, pos.line, pos.col, "%s: %s", s->key, msg);
	return 0;
}

/* A mapping of settings: the top level (section NULL) or a section. */
static int conf_map_walk(struct conf_parse *p, struct fy_node *map, const char *section)
{
	struct fy_node_pair *pair;
	void *it = NULL;
	char full[CONF_KEY_MAX];

	while ((pair = fy_node_mapping_iterate(map, &it)) != NULL) {
		struct fy_node *k = fy_node_pair_key(pair), *v = fy_node_pair_value(pair);
		struct conf_pos pos = conf_pos_of(k, v);
		const char *ks;
		size_t klen = 0;

		if (k == NULL || !fy_node_is_scalar(k) || fy_node_is_alias(k) ||
		    (ks = fy_node_get_scalar(k, &klen)) == NULL || memchr(ks, '\0', klen) != NULL)
			return conf_error(p, pos.line, pos.col, "keys must be plain strings");
		int n = section != NULL
		            ? snprintf(full, sizeof(full), "%s.%.*s", section, (int)klen, ks)
		            : snprintf(full, sizeof(full), "%.*s", (int)klen, ks);
		if (n < 0 || (size_t)n >= sizeof(full))
			return conf_error(p, pos.line, pos.col, "unknown key \"%.64s...\"", full);

		/* One spelling only: "limits.recipients" is written as a section. */
		if (memchr(ks, '.', klen) != NULL)
			return conf_error(p, pos.line, pos.col,
			                  "unknown key \"%s\" (settings with a dot go in a "
			                  "section, e.g. limits:)",
			                  full);
		const struct conf_setting *s = conf_setting_find(full);
		if (s != NULL) {
			if (conf_setting_apply(p, s, k, v) < 0)
				return -1;
			continue;
		}
		if (section != NULL || !conf_section_exists(full))
			return conf_error(p, pos.line, pos.col, "unknown key \"%s\"", full);
		if (v == NULL || !fy_node_is_mapping(v)) {
			struct conf_pos vpos = conf_pos_of(v, k);
			return conf_error(p, vpos.line, vpos.col,
			                  "%s: expected a mapping of settings", full);
		}
		if (conf_map_walk(p, v, full) < 0)
			return -1;
	}
	return 0;
}

/* Settings that depend on each other, checked after the whole file. */
static int conf_cross_check(struct conf_parse *p)
{
	const struct conf *c = p->conf;
	const struct conf_setting *lis = conf_setting_find("listen");
	const struct conf_setting *rmax = conf_setting_find("queue.retry_max");
	const struct conf_setting *rmin = conf_setting_find("queue.retry_min");
	struct conf_pos pos;

	if (c->n_listeners == 0) {
		pos = p->pos[lis - conf_settings];
		return conf_error(p, pos.line ? pos.line : 1, pos.line ? pos.col : 1,
		                  "at least one listener is required (listen: [\"host:port\"])");
	}
	if (c->queue.retry_max < c->queue.retry_min) {
		pos = p->pos[rmax - conf_settings];
		if (pos.line == 0)
			pos = p->pos[rmin - conf_settings];
		return conf_error(p, pos.line ? pos.line : 1, pos.line ? pos.col : 1,
		                  "queue.retry_max must be at least queue.retry_min");
	}
	return 0;
}

/* --- loading ------------------------------------------------------------- */

static int conf_file_read(const char *path, struct buf *b, char *err, size_t errlen)
{
	char chunk[8192];
	size_t n;
	FILE *f = fopen(path, "re");

	if (f == NULL) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -1;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (buf_append(b, chunk, n) < 0) {
			snprintf(err, errlen, "%s: file too large (more than %d octets)", path,
			         CONF_FILE_MAX);
			fclose(f);
			return -1;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
		fclose(f);
		return -1;
	}
	fclose(f);
	return 0;
}

/* Decode one UTF-8 sequence strictly (no overlongs, surrogates or values
 * past U+10FFFF); returns its length, 0 when invalid. */
static size_t conf_utf8_decode(const unsigned char *s, size_t len, uint32_t *cp_r)
{
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t n = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 1;
	uint32_t cp = n == 1 ? s[0] : s[0] & (0x7fU >> n);

	if ((n == 1 && s[0] >= 0x80) || s[0] > 0xf4 || n > len)
		return 0; /* a stray continuation byte, past U+10FFFF, or cut short */
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0; /* overlong, too large, or a surrogate */
	*cp_r = cp;
	return n;
}

/* YAML 1.2 §5.1 c-printable. */
static bool conf_yaml_printable(uint32_t cp)
{
	return cp == '\t' || cp == '\n' || cp == '\r' || (cp >= 0x20 && cp <= 0x7e) || cp == 0x85 ||
	       (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
	       (cp >= 0x10000 && cp <= 0x10ffff);
}

/* The text must be UTF-8 of YAML 1.2 printable characters (§5.1, c-printable)
 * before libfyaml sees it: besides giving a clear error, this keeps away the
 * malformed input on which libfyaml 0.7.12 was found (by fuzzing) to loop
 * forever, e.g. "%\xf1...". */
static int conf_text_check(struct conf_parse *p, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	int line = 1, col = 1;
	uint32_t cp;

	for (size_t i = 0; i < len; col++) {
		size_t n = conf_utf8_decode(s + i, len - i, &cp);
		if (n == 0)
			return conf_error(p, line, col, "invalid UTF-8");
		bool printable = conf_yaml_printable(cp);
		if (!printable)
			return conf_error(p, line, col, "character U+%04X is not allowed in YAML",
			                  (unsigned)cp);
		if (cp == '\n') {
			line++;
			col = 0;
		}
		i += n;
	}
	return 0;
}

/* The libfyaml objects of one load; the document refers to the text. */
struct conf_yaml {
	struct fy_diag *diag;
	struct fy_parser *fyp;
	struct fy_document *fyd; /* NULL for an empty stream (only comments) */
};

/* Report the first collected diagnostic (1-based line and column). */
static int conf_yaml_error(struct conf_parse *p, struct conf_yaml *y)
{
	struct fy_diag_error *e;
	void *it = NULL;

	while ((e = fy_diag_errors_iterate(y->diag, &it)) != NULL) {
		if (e->type < FYET_ERROR)
			continue;
		return conf_error(p, e->line > 0 ? e->line : 1, e->column > 0 ? e->column : 1, "%s",
		                  e->msg != NULL ? e->msg : "YAML syntax error");
	}
	if (fy_parser_get_stream_error(y->fyp))
		return conf_error(p, 1, 1, "YAML syntax error");
	return 0;
}

static void conf_yaml_close(struct conf_yaml *y)
{
	if (y->fyd != NULL)
		fy_parse_document_destroy(y->fyp, y->fyd);
	if (y->fyp != NULL)
		fy_parser_destroy(y->fyp);
	if (y->diag != NULL)
		fy_diag_destroy(y->diag);
	*y = (struct conf_yaml){0};
}

/* Parse the text as exactly one YAML document (or none). */
static int conf_yaml_open(struct conf_parse *p, const char *text, size_t len, struct conf_yaml *y)
{
	struct fy_diag_cfg dcfg;
	struct fy_document *extra;

	fy_diag_cfg_default(&dcfg);
	dcfg.fp = NULL; /* collect, never print */
	y->diag = fy_diag_create(&dcfg);
	if (y->diag == NULL)
		return conf_error(p, 1, 1, "cannot create YAML diagnostics");
	fy_diag_set_collect_errors(y->diag, true);

	struct fy_parse_cfg cfg = {
	    .flags = FYPCF_QUIET | FYPCF_DEFAULT_VERSION_1_2 | FYPCF_JSON_NONE,
	    .diag = y->diag,
	};
	y->fyp = fy_parser_create(&cfg);
	if (y->fyp == NULL || fy_parser_set_string(y->fyp, text, len) < 0)
		return conf_error(p, 1, 1, "cannot create YAML parser");
	y->fyd = fy_parse_load_document(y->fyp);
	if (conf_yaml_error(p, y) < 0)
		return -1;
	if (y->fyd == NULL)
		return 0;
	/* A second document would be silently ignored: refuse it. */
	extra = fy_parse_load_document(y->fyp);
	if (extra != NULL) {
		struct conf_pos pos = conf_pos_of(fy_document_root(extra), NULL);
		fy_parse_document_destroy(y->fyp, extra);
		return conf_error(p, pos.line, pos.col, "only one YAML document is allowed");
	}
	return conf_yaml_error(p, y);
}

static int conf_load_text(struct conf_parse *p, const char *text, size_t len)
{
	struct conf_yaml y = {0};
	int rc = -1;

	if (conf_text_check(p, text, len) < 0 || conf_yaml_open(p, text, len, &y) < 0)
		goto out;
	struct fy_node *root = y.fyd != NULL ? fy_document_root(y.fyd) : NULL;
	if (root != NULL && !conf_node_is_null(root)) {
		if (!fy_node_is_mapping(root)) {
			struct conf_pos pos = conf_pos_of(root, NULL);
			conf_error(p, pos.line, pos.col, "expected a mapping of settings");
			goto out;
		}
		if (conf_map_walk(p, root, NULL) < 0)
			goto out;
	}
	rc = conf_cross_check(p);
out:
	conf_yaml_close(&y);
	return rc;
}

int conf_load(const char *path, struct conf **conf_r, char *err, size_t errlen)
{
	struct conf_parse p = {0};
	char dummy[1];
	struct buf text;
	int rc;

	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	p.err = err;
	p.errlen = errlen;
	*conf_r = NULL;
	p.conf = xcalloc(1, sizeof(*p.conf));
	p.conf->file = xstrdup(path != NULL ? path : CONF_EMBEDDED_NAME);
	p.file = p.conf->file;
	conf_defaults_apply(p.conf);

	buf_init(&text, CONF_FILE_MAX);
	if (path == NULL)
		rc = buf_append_str(&text, conf_embedded_default);
	else
		rc = conf_file_read(path, &text, err, errlen);
	if (rc == 0)
		rc = conf_load_text(&p, buf_cstr(&text), text.len);
	buf_free(&text);
	if (rc < 0) {
		conf_free(&p.conf);
		return -1;
	}
	*conf_r = p.conf;
	return 0;
}

void conf_free(struct conf **confp)
{
	struct conf *conf = *confp;

	if (conf == NULL)
		return;
	for (size_t i = 0; i < CONF_N_SETTINGS; i++) {
		const struct conf_setting *s = &conf_settings[i];
		if (s->type == CONF_T_STRING)
			free(*(char **)conf_field(conf, s));
		else if (s->type == CONF_T_STRLIST || s->type == CONF_T_LISTENERS)
			conf_list_clear(conf, s);
	}
	free(conf->file);
	free(conf);
	*confp = NULL;
}

/* --- dump and reference --------------------------------------------------- */

/* A YAML double-quoted scalar (YAML 1.2 §7.3.1), so any value reads back:
 * printable characters as they are, the rest as escapes (§5.7). */
static void conf_yaml_quote(FILE *out, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str);
	uint32_t cp;

	fputc('"', out);
	for (size_t i = 0; i < len;) {
		size_t n = conf_utf8_decode(s + i, len - i, &cp);
		if (n == 0) { /* not UTF-8 (cannot come from YAML): keep the byte's value */
			cp = s[i];
			n = 1;
		}
		if (cp == '"' || cp == '\\')
			fprintf(out, "\\%c", (char)cp);
		else if (cp >= 0x20 && cp != 0x7f && conf_yaml_printable(cp))
			fwrite(s + i, 1, n, out);
		else if (cp <= 0xff)
			fprintf(out, "\\x%02x", (unsigned)cp);
		else if (cp <= 0xffff)
			fprintf(out, "\\u%04x", (unsigned)cp);
		else
			fprintf(out, "\\U%08x", (unsigned)cp);
		i += n;
	}
	fputc('"', out);
}

static void conf_dump_value(const struct conf *conf, const struct conf_setting *s, const char *name,
                            const char *indent, FILE *out)
{
	char num[32];
	const void *field = conf_field_const(conf, s);
	size_t n;

	fprintf(out, "%s%s:", indent, name);
	switch (s->type) {
	case CONF_T_STRING:
		fputc(' ', out);
		conf_yaml_quote(out, *(char *const *)field);
		break;
	case CONF_T_BOOL:
		fprintf(out, " %s", *(const bool *)field ? "true" : "false");
		break;
	case CONF_T_UINT:
	case CONF_T_SIZE:
	case CONF_T_DURATION:
		conf_format_number(s, *(const uint64_t *)field, num, sizeof(num));
		fprintf(out, " %s", num);
		break;
	case CONF_T_STRLIST:
	case CONF_T_LISTENERS:
		n = conf_count_const(conf, s);
		if (n == 0)
			fputs(" []", out);
		for (size_t i = 0; i < n; i++) {
			fprintf(out, "\n%s  - ", indent);
			if (s->type == CONF_T_STRLIST)
				conf_yaml_quote(out, (*(char *const *const *)field)[i]);
			else
				conf_yaml_quote(
				    out, (*(const struct conf_listener *const *)field)[i].address);
		}
		break;
	}
	fputc('\n', out);
}

/* Comments cannot escape: keep them to one printable line. */
static void conf_comment_print(FILE *out, const char *s)
{
	for (; *s != '\0'; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

void conf_dump(const struct conf *conf, FILE *out)
{
	const char *section = NULL;
	size_t seclen = 0;

	fputs("# hikyaku effective configuration, loaded from ", out);
	conf_comment_print(out, conf->file);
	fputs("\n", out);
	for (size_t i = 0; i < CONF_N_SETTINGS; i++) {
		const struct conf_setting *s = &conf_settings[i];
		const char *dot = strchr(s->key, '.');
		const char *indent = dot != NULL ? "  " : "";

		if (dot != NULL && (section == NULL || (size_t)(dot - s->key) != seclen ||
		                    strncmp(section, s->key, seclen) != 0)) {
			section = s->key;
			seclen = (size_t)(dot - s->key);
			fprintf(out, "\n%.*s:\n", (int)seclen, section);
		}
		fprintf(out, "%s# %s\n", indent, s->doc);
		conf_dump_value(conf, s, dot != NULL ? dot + 1 : s->key, indent, out);
	}
}

/* A Markdown table cell: '|' would end the cell. */
static void conf_md_cell(FILE *out, const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '|')
			fputs("\\|", out);
		else
			fputc(*s, out);
	}
}

void conf_reference(FILE *out)
{
	char lo[32], hi[32];

	fputs("# hikyaku configuration reference\n\n"
	      "<!-- Generated from the settings table in src/conf/conf.c by conf_reference();\n"
	      "     do not edit by hand. -->\n\n"
	      "hikyaku reads one YAML file, `/etc/hikyaku/hikyaku.yaml`. Every key is optional\n"
	      "except `listen`; unknown keys, wrong types and out-of-range values are errors\n"
	      "reported as `file:line:column: message`. `hikyaku config dump` prints the\n"
	      "effective configuration in the same format, and `hikyaku check` warns about\n"
	      "risky choices.\n\n"
	      "- **size**: octets, with an optional suffix `K`, `M` or `G` (powers of 1024):\n"
	      "  `512`, `100K`, `25M`, `2G`.\n"
	      "- **duration**: `250ms`, `30s`, `5m`, `2h`, `1d`; a bare number is seconds.\n"
	      "- **bool**: `true` or `false`.\n"
	      "- **listener**: `\"host:port\"`, `\"[v6]:port\"` or `\"*:port\"` (all addresses),\n"
	      "  either as a string or as a mapping `{address: \"host:port\"}`.\n"
	      "- Keys with a dot live in a section: `limits.message_size` is written\n"
	      "  `limits:` then `  message_size: 25M`.\n\n"
	      "| Key | Type | Default | Range | Description |\n"
	      "|-----|------|---------|-------|-------------|\n",
	      out);
	for (size_t i = 0; i < CONF_N_SETTINGS; i++) {
		const struct conf_setting *s = &conf_settings[i];
		fprintf(out, "| `%s` | %s | ", s->key, conf_type_name(s->type));
		if (s->def != NULL) {
			fputc('`', out);
			conf_md_cell(out, s->def);
			fputc('`', out);
		} else {
			conf_md_cell(out, s->def_doc);
		}
		fputs(" | ", out);
		if (s->type == CONF_T_UINT || s->type == CONF_T_SIZE ||
		    s->type == CONF_T_DURATION) {
			conf_format_number(s, s->min, lo, sizeof(lo));
			conf_format_number(s, s->max, hi, sizeof(hi));
			fprintf(out, "%s..%s", lo, hi);
		}
		fputs(" | ", out);
		conf_md_cell(out, s->doc);
		fputs(" |\n", out);
	}
	fputs("\nWith no configuration file, `hikyaku serve` runs this embedded development "
	      "default:\n\n```yaml\n",
	      out);
	fputs(conf_embedded_default, out);
	fputs("```\n", out);
}

/* --- checks for operators ------------------------------------------------ */

static bool conf_listener_is_loopback(const char *addr)
{
	return strncmp(addr, "127.", 4) == 0 || strncmp(addr, "[::1]:", 6) == 0 ||
	       strncasecmp(addr, "localhost:", 10) == 0;
}

static __attribute__((format(printf, 2, 3))) int conf_warn(FILE *out, const char *fmt, ...)
{
	va_list ap;

	fputs("warning: ", out);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
	return 1;
}

int conf_check(const struct conf *conf, FILE *out)
{
	int n = 0;
	const char *public_addr = NULL;

	for (size_t i = 0; i < conf->n_listeners; i++)
		if (!conf_listener_is_loopback(conf->listeners[i].address))
			public_addr = conf->listeners[i].address;

	if (conf->accept_any_user && public_addr != NULL)
		n += conf_warn(out,
		               "accept_any_user is true on non-loopback listener %s: any local "
		               "part of local_domains is accepted",
		               public_addr);
	if (public_addr != NULL && conf->user[0] == '\0')
		n += conf_warn(out,
		               "listener %s is not loopback and user is empty: when started as "
		               "root, workers keep root privileges",
		               public_addr);
	if (conf->n_local_domains == 0)
		n += conf_warn(out, "local_domains is empty: every recipient will be rejected");
	if (conf->users_file[0] != '\0' && access(conf->users_file, R_OK) < 0)
		n += conf_warn(out, "users_file %s is not readable: %s", conf->users_file,
		               strerror(errno));
	if (conf->users_file[0] == '\0' && !conf->accept_any_user && conf->n_local_domains > 0)
		n += conf_warn(out, "no users_file and accept_any_user is false: every local "
		                    "recipient will be rejected");
	if (conf->spool_dir[0] != '/')
		n += conf_warn(out, "spool_dir %s is relative to the working directory",
		               conf->spool_dir);
	if (conf->maildir_root[0] != '/')
		n += conf_warn(out, "maildir_root %s is relative to the working directory",
		               conf->maildir_root);
	if (strchr(conf->hostname, '.') == NULL)
		n += conf_warn(out,
		               "hostname %s has no dot: EHLO and the greeting should use a fully "
		               "qualified domain name (RFC 5321 §4.1.1.1)",
		               conf->hostname);
	return n;
}

bool conf_is_local_domain(const struct conf *conf, const char *domain)
{
	if (conf == NULL || domain == NULL)
		return false;
	for (size_t i = 0; i < conf->n_local_domains; i++)
		if (strcasecmp(conf->local_domains[i], domain) == 0)
			return true;
	return false;
}
