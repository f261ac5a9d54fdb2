/* users.c — the users file (Dovecot passwd-file format), loaded by the
 * master into a sorted array searched with bsearch().
 *
 *   user@domain:{SCHEME}secret:uid:gid:gecos:home:shell:extra_fields
 *
 * Only the name is required. The file is trusted (root-owned) but parsed
 * with bounds: lines of at most USERS_LINE_MAX octets, names of at most 64
 * octets of local part and 255 of domain (RFC 5321 §4.5.3.1.1-2). The secret
 * is kept for SMTP AUTH (issue 3); it is never logged nor put in an error
 * message, and it is wiped when the table is freed. */
#include "auth/users.h"

#include "lib/alloc.h"
#include "lib/lines.h"
#include "lib/strutil.h"
#include "mail/idna.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define USERS_LINE_MAX 4096  /* octets, without the line ending */
#define USERS_LOCAL_MAX 64   /* RFC 5321 §4.5.3.1.1 */
#define USERS_DOMAIN_MAX 255 /* RFC 5321 §4.5.3.1.2 */
#define USERS_KEY_MAX (USERS_LOCAL_MAX + 1 + USERS_DOMAIN_MAX + 1)

struct users_entry {
	char *key;    /* "local@domain", lowercased, the domain as A-labels (users_key) */
	char *secret; /* second field as written ("{SCHEME}..."), NULL when absent */
	size_t line;
};

struct users {
	struct users_entry *entries; /* sorted by key */
	size_t n;
};

static int users_entry_cmp(const void *a, const void *b)
{
	const struct users_entry *x = a, *y = b;
	return strcmp(x->key, y->key);
}

const char *users_name_check(const char *name, size_t len)
{
	const char *at = memchr(name, '@', len);

	if (len == 0)
		return "empty user name";
	if (at == NULL || memchr(at + 1, '@', len - (size_t)(at - name) - 1) != NULL)
		return "user name must contain exactly one '@'";
	size_t llen = (size_t)(at - name), dlen = len - llen - 1;
	if (llen == 0 || dlen == 0)
		return "user name needs a local part and a domain";
	if (llen > USERS_LOCAL_MAX)
		return "local part longer than 64 octets";
	if (dlen > USERS_DOMAIN_MAX)
		return "domain longer than 255 octets";
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] <= ' ' || name[i] == 0x7f)
			return "space or control character in user name";
	if (memchr(name, ':', len) != NULL)
		return "':' in user name";
	if (name[0] == '#')
		return "user name starts with '#' (a comment)";
	return NULL;
}

/* The key of name[0..len) ("local@domain", checked by users_name_check):
 * lowercased, and the domain in A-label form (RFC 5890), so that either
 * spelling of an internationalized domain names the same user. */
static int users_key(const char *name, size_t len, char key[USERS_KEY_MAX])
{
	const char *at = memrchr(name, '@', len);
	size_t llen;

	if (at == NULL || (llen = (size_t)(at - name)) > USERS_LOCAL_MAX)
		return -1;
	memcpy(key, name, llen);
	key[llen] = '@';
	if (mail_domain_to_ascii(at + 1, len - llen - 1, key + llen + 1, USERS_KEY_MAX - llen - 1,
				 NULL) < 0)
		return -1;
	str_lower(key);
	return 0;
}

/* Validate and store one non-comment line. Returns a message on error. */
static const char *users_line_parse(struct users *u, char *line, size_t len, size_t lineno)
{
	char *colon = memchr(line, ':', len);
	size_t namelen = colon != NULL ? (size_t)(colon - line) : len;
	const char *msg;

	if (memchr(line, '\0', len) != NULL)
		return "NUL byte in line";
	if ((msg = users_name_check(line, namelen)) != NULL)
		return msg;

	char key[USERS_KEY_MAX];
	if (users_key(line, namelen, key) < 0)
		return "invalid internationalized domain in user name";
	struct users_entry e = {.key = xstrdup(key), .line = lineno};
	if (colon != NULL) {
		char *end = colon + 1;
		while (end < line + len && *end != ':')
			end++;
		e.secret = xstrndup(colon + 1, (size_t)(end - colon - 1));
	}
	u->entries = xreallocarray(u->entries, u->n + 1, sizeof(*u->entries));
	u->entries[u->n++] = e;
	return NULL;
}

static int users_read(struct lines *l, struct users *u, char *err, size_t errlen)
{
	char *line;
	size_t len;
	int rc;

	while ((rc = lines_next(l, &line, &len, err, errlen)) > 0) {
		size_t i = 0;
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i == len || line[i] == '#')
			continue;
		/* the reader wipes the line (it may hold a secret) */
		const char *msg = users_line_parse(u, line, len, l->lineno);
		if (msg != NULL) {
			lines_error(l, l->lineno, err, errlen, "%s", msg);
			return -1;
		}
	}
	return rc;
}

/* Sort, then refuse duplicates: both lines are named. */
static int users_index(struct users *u, const struct lines *l, char *err, size_t errlen)
{
	if (u->n > 0)
		qsort(u->entries, u->n, sizeof(*u->entries), users_entry_cmp);
	for (size_t i = 1; i < u->n; i++) {
		struct users_entry *a = &u->entries[i - 1], *b = &u->entries[i];
		if (strcmp(a->key, b->key) != 0)
			continue;
		size_t first = a->line < b->line ? a->line : b->line;
		size_t second = a->line < b->line ? b->line : a->line;
		lines_error(l, second, err, errlen, "duplicate user (first on line %zu)", first);
		return -1;
	}
	return 0;
}

int users_load(const char *path, struct users **users_r, char *err, size_t errlen)
{
	struct lines l;

	*users_r = NULL;
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	if (lines_open(&l, path, USERS_LINE_MAX, 0, err, errlen) < 0)
		return -1;
	struct users *u = xcalloc(1, sizeof(*u));
	int rc = users_read(&l, u, err, errlen);
	if (rc == 0)
		rc = users_index(u, &l, err, errlen);
	lines_close(&l);
	if (rc < 0) {
		users_free(&u);
		return -1;
	}
	*users_r = u;
	return 0;
}

void users_free(struct users **usersp)
{
	struct users *u = *usersp;

	if (u == NULL)
		return;
	for (size_t i = 0; i < u->n; i++) {
		free(u->entries[i].key);
		if (u->entries[i].secret != NULL) {
			explicit_bzero(u->entries[i].secret, strlen(u->entries[i].secret));
			free(u->entries[i].secret);
		}
	}
	free(u->entries);
	free(u);
	*usersp = NULL;
}

bool users_exists(const struct users *users, const char *local, const char *domain)
{
	char key[USERS_KEY_MAX];
	size_t llen, dlen;

	if (users == NULL || users->n == 0 || local == NULL || domain == NULL)
		return false;
	char name[USERS_KEY_MAX];
	llen = strlen(local);
	dlen = strlen(domain);
	if (llen == 0 || dlen == 0 || llen > USERS_LOCAL_MAX || dlen > USERS_DOMAIN_MAX)
		return false;
	memcpy(name, local, llen);
	name[llen] = '@';
	memcpy(name + llen + 1, domain, dlen + 1);
	if (users_key(name, llen + 1 + dlen, key) < 0)
		return false;

	struct users_entry probe = {.key = key};
	return bsearch(&probe, users->entries, users->n, sizeof(*users->entries),
	               users_entry_cmp) != NULL;
}

const char *users_secret(const struct users *users, const char *user)
{
	char key[USERS_KEY_MAX];
	size_t len;

	if (users == NULL || users->n == 0 || user == NULL)
		return NULL;
	len = strlen(user);
	if (len == 0 || len >= sizeof(key) || users_key(user, len, key) < 0)
		return NULL;

	struct users_entry probe = {.key = key};
	const struct users_entry *e =
	    bsearch(&probe, users->entries, users->n, sizeof(*users->entries), users_entry_cmp);
	if (e == NULL)
		return NULL;
	return e->secret != NULL ? e->secret : "";
}

const char *users_secret_at(const struct users *users, size_t i)
{
	return users != NULL && i < users->n ? users->entries[i].secret : NULL;
}

size_t users_count(const struct users *users)
{
	return users != NULL ? users->n : 0;
}

size_t users_count_scheme(const struct users *users, const char *scheme)
{
	size_t n = 0, len = strlen(scheme);
	for (size_t i = 0; users != NULL && i < users->n; i++) {
		const char *sec = users->entries[i].secret;
		if (sec != NULL && sec[0] == '{' && strncasecmp(sec + 1, scheme, len) == 0 &&
		    sec[len + 1] == '}')
			n++;
	}
	return n;
}
