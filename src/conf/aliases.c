/* aliases.c — the aliases file, loaded by the master into a sorted array
 * searched with bsearch(), and the recursive expansion smtpd runs at RCPT.
 *
 *   key: target, target, ...
 *   <white space>target, ...        continuation of the previous alias
 *
 * The file is trusted (root-owned) but parsed with bounds: lines of at most
 * ALIASES_LINE_MAX octets, keys of at most 64 octets of local part and 255 of
 * domain (RFC 5321 §4.5.3.1.1-2), targets that are valid RFC 5321 Mailboxes
 * (§4.1.2). Expansion is bounded in depth, in results and in work, so that no
 * file, however tangled, makes one RCPT expensive. Targets are split on ','
 * only: a quoted local part holding a comma cannot be a target. */
#include "conf/aliases.h"

#include "auth/users.h"
#include "lib/alloc.h"
#include "lib/lines.h"
#include "lib/strutil.h"
#include "mail/address.h"
#include "mail/idna.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ALIASES_LINE_MAX 4096  /* octets, without the line ending */
#define ALIASES_DOMAIN_MAX 255 /* RFC 5321 §4.5.3.1.2 */
#define ALIASES_KEY_MAX (64 + 1 + ALIASES_DOMAIN_MAX)
#define ALIASES_STEPS_MAX 10000 /* targets looked at in one expansion */

struct aliases_entry {
	char *key; /* "local@domain" or "@domain", lowercased */
	char **targets;
	size_t n;
	size_t line;
};

struct aliases {
	struct aliases_entry *entries; /* sorted by key */
	size_t n;
};

static int aliases_entry_cmp(const void *a, const void *b)
{
	const struct aliases_entry *x = a, *y = b;
	return strcmp(x->key, y->key);
}

static bool aliases_is_space(char c)
{
	return c == ' ' || c == '\t';
}

/* A key: "local@domain" as users_name_check() wants it, or "@domain". */
static const char *aliases_key_check(const char *key, size_t len)
{
	if (len == 0)
		return "empty alias name";
	if (key[0] != '@')
		return users_name_check(key, len);
	if (len == 1)
		return "catch-all alias needs a domain";
	if (len - 1 > ALIASES_DOMAIN_MAX)
		return "domain longer than 255 octets";
	for (size_t i = 1; i < len; i++) {
		unsigned char c = (unsigned char)key[i];
		if (c <= ' ' || c == 0x7f || c == '@' || c == ':')
			return "bad character in catch-all domain";
	}
	return NULL;
}

/* Append the comma-separated targets of p[0..len) to e. */
static const char *aliases_targets_parse(struct aliases_entry *e, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t start = i;
		while (i < len && p[i] != ',')
			i++;
		size_t end = i++;
		while (start < end && aliases_is_space(p[start]))
			start++;
		while (end > start && aliases_is_space(p[end - 1]))
			end--;
		if (start == end)
			continue; /* "a, b," before a continuation line */
		char path[MAIL_PATH_MAX + 3];
		size_t tlen = end - start, used = 0;
		if (tlen > MAIL_PATH_MAX)
			return "target address too long";
		path[0] = '<';
		memcpy(path + 1, p + start, tlen);
		path[tlen + 1] = '>';
		path[tlen + 2] = '\0';
		struct mail_addr a;
		const char *why = NULL;
		if (mail_addr_parse_path(path, tlen + 2, 0, &a, &used, &why) != 0 ||
		    used != tlen + 2 || a.local[0] == '\0' || a.domain[0] == '\0')
			return "bad target address (want user@domain)";
		if (e->n >= ALIASES_TARGETS_MAX)
			return "more than 1000 targets";
		char out[MAIL_PATH_MAX + 1];
		if (mail_addr_format(&a, out, sizeof(out)) < 0)
			return "target address too long";
		e->targets = xreallocarray(e->targets, e->n + 1, sizeof(*e->targets));
		e->targets[e->n++] = xstrdup(out);
	}
	return NULL;
}

/* The key of "local@domain" or "@domain" in[0..len): lowercased, the domain
 * in A-label form (RFC 5890), so that either spelling of an internationalized
 * domain finds the alias. -1 when it does not fit or the domain is no IDN. */
static int aliases_key(const char *in, size_t len, char out[ALIASES_KEY_MAX + 1])
{
	const char *at = memrchr(in, '@', len);
	size_t llen = at != NULL ? (size_t)(at - in) : 0;

	if (at == NULL || llen > ALIASES_KEY_MAX - 1)
		return -1;
	memcpy(out, in, llen + 1);
	if (mail_domain_to_ascii(at + 1, len - llen - 1, out + llen + 1, ALIASES_KEY_MAX - llen,
				 NULL) < 0)
		return -1;
	str_lower(out);
	return 0;
}

/* One "key: targets" line. Returns a message on error. */
static const char *aliases_line_parse(struct aliases *a, const char *line, size_t len,
                                      size_t lineno)
{
	const char *colon = memchr(line, ':', len);
	const char *msg;

	if (colon == NULL)
		return "missing ':' after the alias name";
	size_t klen = (size_t)(colon - line);
	while (klen > 0 && aliases_is_space(line[klen - 1]))
		klen--;
	if ((msg = aliases_key_check(line, klen)) != NULL)
		return msg;
	char key[ALIASES_KEY_MAX + 1];
	if (aliases_key(line, klen, key) < 0)
		return "invalid internationalized domain in alias name";
	a->entries = xreallocarray(a->entries, a->n + 1, sizeof(*a->entries));
	struct aliases_entry *e = &a->entries[a->n++];
	*e = (struct aliases_entry){.key = xstrdup(key), .line = lineno};
	return aliases_targets_parse(e, colon + 1, len - (size_t)(colon - line) - 1);
}

static const char *aliases_line_handle(struct aliases *a, const char *line, size_t len,
                                       size_t lineno)
{
	size_t i = 0;

	while (i < len && aliases_is_space(line[i]))
		i++;
	if (i == len || line[i] == '#')
		return NULL;
	if (memchr(line, '\0', len) != NULL)
		return "NUL byte in line";
	if (i == 0)
		return aliases_line_parse(a, line, len, lineno);
	if (a->n == 0)
		return "continuation line without an alias before it";
	return aliases_targets_parse(&a->entries[a->n - 1], line + i, len - i);
}

static int aliases_read(struct lines *l, struct aliases *a, char *err, size_t errlen)
{
	char *line;
	size_t len;
	int rc;

	while ((rc = lines_next(l, &line, &len, err, errlen)) > 0) {
		const char *msg = aliases_line_handle(a, line, len, l->lineno);
		if (msg != NULL) {
			lines_error(l, l->lineno, err, errlen, "%s", msg);
			return -1;
		}
	}
	return rc;
}

/* Refuse empty aliases, sort, then refuse duplicates: both lines are named. */
static int aliases_index(struct aliases *a, const struct lines *l, char *err, size_t errlen)
{
	for (size_t i = 0; i < a->n; i++) {
		if (a->entries[i].n == 0) {
			lines_error(l, a->entries[i].line, err, errlen, "alias without targets");
			return -1;
		}
	}
	if (a->n > 0)
		qsort(a->entries, a->n, sizeof(*a->entries), aliases_entry_cmp);
	for (size_t i = 1; i < a->n; i++) {
		struct aliases_entry *x = &a->entries[i - 1], *y = &a->entries[i];
		if (strcmp(x->key, y->key) != 0)
			continue;
		size_t first = x->line < y->line ? x->line : y->line;
		size_t second = x->line < y->line ? y->line : x->line;
		lines_error(l, second, err, errlen, "duplicate alias (first on line %zu)", first);
		return -1;
	}
	return 0;
}

int aliases_load(const char *path, struct aliases **r, char *err, size_t errlen)
{
	struct lines l;

	*r = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (lines_open(&l, path, ALIASES_LINE_MAX, 0, err, errlen) < 0)
		return -1;
	struct aliases *a = xcalloc(1, sizeof(*a));
	int rc = aliases_read(&l, a, err, errlen);
	if (rc == 0)
		rc = aliases_index(a, &l, err, errlen);
	lines_close(&l);
	if (rc < 0) {
		aliases_free(&a);
		return -1;
	}
	*r = a;
	return 0;
}

void aliases_free(struct aliases **aliases)
{
	struct aliases *a = *aliases;

	if (a == NULL)
		return;
	for (size_t i = 0; i < a->n; i++) {
		aliases_targets_free(&a->entries[i].targets, a->entries[i].n);
		free(a->entries[i].key);
	}
	free(a->entries);
	free(a);
	*aliases = NULL;
}

void aliases_targets_free(char ***targets, size_t n)
{
	if (*targets == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		free((*targets)[i]);
	free(*targets);
	*targets = NULL;
}

size_t aliases_count(const struct aliases *aliases)
{
	return aliases != NULL ? aliases->n : 0;
}

static const struct aliases_entry *aliases_find(const struct aliases *a, const char *key)
{
	struct aliases_entry k = {.key = (char *)key};

	if (a == NULL || a->n == 0)
		return NULL;
	return bsearch(&k, a->entries, a->n, sizeof(*a->entries), aliases_entry_cmp);
}

/* The exact alias of addr: the full local part, then without its "+tag"
 * (RFC 5233 subaddress). */
static const struct aliases_entry *aliases_lookup_exact(const struct aliases *a, const char *addr)
{
	char key[ALIASES_KEY_MAX + 1];
	const struct aliases_entry *e;
	size_t len = strlen(addr);

	if (len > ALIASES_KEY_MAX || aliases_key(addr, len, key) < 0)
		return NULL;
	if ((e = aliases_find(a, key)) != NULL)
		return e;
	char *at = strrchr(key, '@');
	char *plus = memchr(key, '+', at != NULL ? (size_t)(at - key) : 0);
	if (plus == NULL || plus == key)
		return NULL;
	memmove(plus, at, strlen(at) + 1);
	return aliases_find(a, key);
}

static const struct aliases_entry *aliases_lookup(const struct aliases *a, const char *addr)
{
	const struct aliases_entry *e = aliases_lookup_exact(a, addr);
	const char *at = strrchr(addr, '@');
	char key[ALIASES_KEY_MAX + 1];

	if (e != NULL || at == NULL || strlen(at) > ALIASES_KEY_MAX ||
	    aliases_key(at, strlen(at), key) < 0)
		return e;
	return aliases_find(a, key);
}

bool aliases_has(const struct aliases *aliases, const char *addr)
{
	return aliases_lookup(aliases, addr) != NULL;
}

bool aliases_has_exact(const struct aliases *aliases, const char *addr)
{
	return aliases_lookup_exact(aliases, addr) != NULL;
}

struct aliases_walk {
	const struct aliases *a;
	const struct aliases_entry *stack[ALIASES_DEPTH_MAX + 1];
	size_t depth;
	size_t steps;
	char **out;
	size_t n;
	const char *error;
};

static int aliases_walk_add(struct aliases_walk *w, const char *addr)
{
	for (size_t i = 0; i < w->n; i++)
		if (strcasecmp(w->out[i], addr) == 0)
			return 0;
	if (w->n >= ALIASES_TARGETS_MAX) {
		w->error = "too many alias targets";
		return -1;
	}
	w->out = xreallocarray(w->out, w->n + 1, sizeof(*w->out));
	w->out[w->n++] = xstrdup(addr);
	return 0;
}

static int aliases_walk_entry(struct aliases_walk *w, const struct aliases_entry *e)
{
	if (w->depth > ALIASES_DEPTH_MAX) {
		w->error = "alias loop";
		return -1;
	}
	w->stack[w->depth++] = e;
	for (size_t i = 0; i < e->n; i++) {
		const char *t = e->targets[i];
		if (++w->steps > ALIASES_STEPS_MAX) {
			w->error = "too many alias targets";
			return -1;
		}
		const struct aliases_entry *sub = aliases_lookup_exact(w->a, t);
		if (sub == NULL || sub == e) {
			/* Not an alias, or the key itself ("alice: alice, ...")
			 * meaning the mailbox: a leaf. */
			if (aliases_walk_add(w, t) < 0)
				return -1;
			continue;
		}
		for (size_t d = 0; d < w->depth; d++) {
			if (w->stack[d] == sub) {
				w->error = "alias loop";
				return -1;
			}
		}
		if (aliases_walk_entry(w, sub) < 0)
			return -1;
	}
	w->depth--;
	return 0;
}

int aliases_expand(const struct aliases *aliases, const char *addr, char ***targets_r, size_t *n_r,
                   const char **error_r)
{
	struct aliases_walk w = {.a = aliases};
	const struct aliases_entry *e = aliases_lookup(aliases, addr);
	int rc;

	*targets_r = NULL;
	*n_r = 0;
	rc = e != NULL ? aliases_walk_entry(&w, e) : aliases_walk_add(&w, addr);
	if (rc < 0) {
		aliases_targets_free(&w.out, w.n);
		if (error_r != NULL)
			*error_r = w.error;
		return -1;
	}
	*targets_r = w.out;
	*n_r = w.n;
	return 0;
}
