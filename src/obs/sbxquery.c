/* sbxquery.c — the sandbox API's pure parsers (sbxquery.h). Runs in the
 * http process on its loop; the input is the HTTP client's, hostile: every
 * loop is bounded by the input's length and every copy by its buffer. */
#include "obs/sbxquery.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define SBX_JSON_DEPTH_MAX 8

/* ---- the search query ---- */

static bool sbx_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* One value at q[*i]: a "quoted phrase" or a bare word, into v. */
static int sbx_query_value(const char *q, size_t len, size_t *i, char *v, const char **error_r)
{
	size_t n = 0;
	bool quoted = *i < len && q[*i] == '"';
	if (quoted)
		(*i)++;
	while (*i < len) {
		char c = q[*i];
		if (c == '\0') {
			*error_r = "NUL in the query";
			return -1;
		}
		if (quoted ? c == '"' : sbx_space(c))
			break;
		if (n + 1 >= SBX_TERM_MAX) {
			*error_r = "a search term is too long";
			return -1;
		}
		v[n++] = c;
		(*i)++;
	}
	if (quoted) {
		if (*i >= len) {
			*error_r = "unterminated quote";
			return -1;
		}
		(*i)++; /* the closing quote */
	}
	v[n] = '\0';
	return 0;
}

static const struct {
	const char *name;
	enum sbx_field field;
} sbx_fields[] = {
    {"from:", SBX_F_FROM},
    {"to:", SBX_F_TO},
    {"subject:", SBX_F_SUBJECT},
};

int sbx_query_parse(const char *q, size_t len, struct sbx_query *out, const char **error_r)
{
	memset(out, 0, sizeof(*out));
	out->read = -1;
	size_t i = 0;
	for (;;) {
		while (i < len && sbx_space(q[i]))
			i++;
		if (i >= len)
			return 0;
		if (len - i >= 7 && strncasecmp(q + i, "is:read", 7) == 0 &&
		    (i + 7 == len || sbx_space(q[i + 7]))) {
			out->read = 1;
			i += 7;
			continue;
		}
		if (len - i >= 9 && strncasecmp(q + i, "is:unread", 9) == 0 &&
		    (i + 9 == len || sbx_space(q[i + 9]))) {
			out->read = 0;
			i += 9;
			continue;
		}
		if (out->n >= SBX_QUERY_TERMS_MAX) {
			*error_r = "too many search terms";
			return -1;
		}
		struct sbx_term *t = &out->terms[out->n];
		t->field = SBX_F_TEXT;
		t->neg = false;
		if (q[i] == '-' || q[i] == '!') {
			t->neg = true;
			i++;
		}
		for (size_t f = 0; f < sizeof(sbx_fields) / sizeof(sbx_fields[0]); f++) {
			size_t fl = strlen(sbx_fields[f].name);
			if (len - i >= fl && strncasecmp(q + i, sbx_fields[f].name, fl) == 0) {
				t->field = sbx_fields[f].field;
				i += fl;
				break;
			}
		}
		if (sbx_query_value(q, len, &i, t->value, error_r) < 0)
			return -1;
		if (t->value[0] != '\0')
			out->n++;
	}
}

int sbx_term_fts(const struct sbx_term *t, char *out, size_t outlen)
{
	static const char *const cols[] = {"", "{fromf} : ", "{tof} : ", "{subject} : "};
	size_t o = 0;
	int n = snprintf(out, outlen, "%s\"", cols[t->field]);
	if (n < 0 || (size_t)n >= outlen)
		return -1;
	o = (size_t)n;
	for (const char *p = t->value; *p != '\0'; p++) {
		size_t need = *p == '"' ? 2 : 1;
		if (o + need + 3 > outlen)
			return -1;
		if (*p == '"')
			out[o++] = '"';
		out[o++] = *p;
	}
	out[o++] = '"';
	out[o++] = '*';
	out[o] = '\0';
	return 0;
}

/* ---- JSON bodies ---- */

struct sbx_json {
	const char *p;
	size_t len, i;
};

static void sbx_json_ws(struct sbx_json *j)
{
	while (j->i < j->len && sbx_space(j->p[j->i]))
		j->i++;
}

static int sbx_hex4(const char *p, unsigned *v)
{
	*v = 0;
	for (int k = 0; k < 4; k++) {
		char c = p[k];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		*v = *v * 16 + d;
	}
	return 0;
}

/* A string at j->i (its opening quote) into out (NULL: skipped); a value
 * longer than outlen - 1, a control character or a \u0000 fails. */
static int sbx_json_str(struct sbx_json *j, char *out, size_t outlen)
{
	size_t n = 0;
	if (j->i >= j->len || j->p[j->i] != '"')
		return -1;
	j->i++;
	while (j->i < j->len) {
		unsigned char c = (unsigned char)j->p[j->i++];
		unsigned cp = c;
		if (c == '"') {
			if (out != NULL)
				out[n] = '\0';
			return 0;
		}
		if (c < 0x20)
			return -1;
		if (c == '\\') {
			if (j->i >= j->len)
				return -1;
			char e = j->p[j->i++];
			switch (e) {
			case '"':
			case '\\':
			case '/':
				cp = (unsigned char)e;
				break;
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u':
				if (j->len - j->i < 4 || sbx_hex4(j->p + j->i, &cp) < 0 ||
				    cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
					return -1; /* surrogates: no address or ID needs them */
				j->i += 4;
				break;
			default:
				return -1;
			}
		}
		if (out == NULL)
			continue;
		unsigned char enc[3];
		size_t el;
		if (c == '\\' && cp >= 0x80) {
			if (cp < 0x800) {
				enc[0] = (unsigned char)(0xc0 | (cp >> 6));
				enc[1] = (unsigned char)(0x80 | (cp & 0x3f));
				el = 2;
			} else {
				enc[0] = (unsigned char)(0xe0 | (cp >> 12));
				enc[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
				enc[2] = (unsigned char)(0x80 | (cp & 0x3f));
				el = 3;
			}
		} else {
			enc[0] = (unsigned char)cp;
			el = 1;
		}
		if (n + el >= outlen)
			return -1;
		memcpy(out + n, enc, el);
		n += el;
	}
	return -1;
}

static int sbx_json_skip(struct sbx_json *j, int depth);

static int sbx_json_skip_container(struct sbx_json *j, int depth, char close)
{
	j->i++;
	sbx_json_ws(j);
	if (j->i < j->len && j->p[j->i] == close) {
		j->i++;
		return 0;
	}
	for (;;) {
		if (close == '}') {
			if (sbx_json_str(j, NULL, 0) < 0)
				return -1;
			sbx_json_ws(j);
			if (j->i >= j->len || j->p[j->i] != ':')
				return -1;
			j->i++;
		}
		if (sbx_json_skip(j, depth + 1) < 0)
			return -1;
		sbx_json_ws(j);
		if (j->i >= j->len)
			return -1;
		char c = j->p[j->i++];
		if (c == close)
			return 0;
		if (c != ',')
			return -1;
		sbx_json_ws(j);
	}
}

/* Any value, not kept. */
static int sbx_json_skip(struct sbx_json *j, int depth)
{
	sbx_json_ws(j);
	if (j->i >= j->len || depth > SBX_JSON_DEPTH_MAX)
		return -1;
	char c = j->p[j->i];
	if (c == '"')
		return sbx_json_str(j, NULL, 0);
	if (c == '{' || c == '[')
		return sbx_json_skip_container(j, depth, c == '{' ? '}' : ']');
	static const char *const words[] = {"true", "false", "null"};
	for (size_t k = 0; k < 3; k++) {
		size_t wl = strlen(words[k]);
		if (j->len - j->i >= wl && memcmp(j->p + j->i, words[k], wl) == 0) {
			j->i += wl;
			return 0;
		}
	}
	size_t start = j->i;
	while (j->i < j->len && strchr("+-0123456789.eE", j->p[j->i]) != NULL)
		j->i++;
	return j->i > start ? 0 : -1;
}

/* An array of strings into rows of width w, at most max. */
static int sbx_json_str_array(struct sbx_json *j, char *rows, size_t w, size_t max, size_t *n_r)
{
	*n_r = 0;
	sbx_json_ws(j);
	if (j->i >= j->len || j->p[j->i] != '[')
		return -1;
	j->i++;
	sbx_json_ws(j);
	if (j->i < j->len && j->p[j->i] == ']') {
		j->i++;
		return 0;
	}
	for (;;) {
		sbx_json_ws(j);
		if (*n_r >= max || sbx_json_str(j, rows + *n_r * w, w) < 0)
			return -1;
		(*n_r)++;
		sbx_json_ws(j);
		if (j->i >= j->len)
			return -1;
		char c = j->p[j->i++];
		if (c == ']')
			return 0;
		if (c != ',')
			return -1;
	}
}

static int sbx_body_member(struct sbx_json *j, struct sbx_body *out, const char *key)
{
	sbx_json_ws(j);
	if (strcmp(key, "IDs") == 0) {
		out->has_ids = true;
		if (sbx_json_str_array(j, &out->ids[0][0], SBX_ID_MAX + 1, SBX_BODY_IDS_MAX,
		                       &out->n_ids) < 0)
			return -1;
		for (size_t k = 0; k < out->n_ids; k++)
			if (!sbx_id_valid(out->ids[k], strlen(out->ids[k])))
				return -1;
		return 0;
	}
	if (strcmp(key, "To") == 0)
		return sbx_json_str_array(j, &out->to[0][0], SBX_ADDR_MAX + 1, SBX_BODY_TO_MAX,
		                          &out->n_to);
	if (strcmp(key, "Read") == 0) {
		if (j->len - j->i >= 4 && memcmp(j->p + j->i, "true", 4) == 0) {
			out->read = 1;
			j->i += 4;
			return 0;
		}
		if (j->len - j->i >= 5 && memcmp(j->p + j->i, "false", 5) == 0) {
			out->read = 0;
			j->i += 5;
			return 0;
		}
		return -1;
	}
	return sbx_json_skip(j, 1);
}

int sbx_body_parse(const char *p, size_t len, struct sbx_body *out, const char **error_r)
{
	struct sbx_json j = {.p = p, .len = len};
	memset(out, 0, sizeof(*out));
	out->read = -1;
	*error_r = "malformed JSON body";
	sbx_json_ws(&j);
	if (j.i >= j.len) /* no body: every field absent */
		return 0;
	if (j.p[j.i] != '{')
		return -1;
	j.i++;
	sbx_json_ws(&j);
	if (j.i < j.len && j.p[j.i] == '}') {
		j.i++;
	} else {
		for (;;) {
			char key[32];
			sbx_json_ws(&j);
			if (sbx_json_str(&j, key, sizeof(key)) < 0) {
				/* keys longer than 31 octets: none of ours */
				return -1;
			}
			sbx_json_ws(&j);
			if (j.i >= j.len || j.p[j.i] != ':')
				return -1;
			j.i++;
			if (sbx_body_member(&j, out, key) < 0)
				return -1;
			sbx_json_ws(&j);
			if (j.i >= j.len)
				return -1;
			char c = j.p[j.i++];
			if (c == '}')
				break;
			if (c != ',')
				return -1;
		}
	}
	sbx_json_ws(&j);
	if (j.i != j.len)
		return -1;
	*error_r = NULL;
	return 0;
}

/* ---- IDs and paths ---- */

bool sbx_id_valid(const char *s, size_t len)
{
	if (len == 0 || len > SBX_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
			return false;
	}
	return true;
}

int sbx_path_parse(const char *rest, struct sbx_path *out)
{
	memset(out, 0, sizeof(*out));
	const char *slash = strchr(rest, '/');
	size_t il = slash != NULL ? (size_t)(slash - rest) : strlen(rest);
	if (!sbx_id_valid(rest, il))
		return -1;
	memcpy(out->id, rest, il);
	out->id[il] = '\0';
	if (slash == NULL)
		return 0;
	const char *what = slash + 1;
	static const char *const simple[] = {"raw", "headers", "check", "release"};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
		if (strcmp(what, simple[i]) == 0) {
			snprintf(out->what, sizeof(out->what), "%s", simple[i]);
			return 0;
		}
	}
	if (strncmp(what, "part/", 5) != 0)
		return -1;
	const char *part = what + 5;
	size_t pl = strlen(part);
	if (pl == 0 || pl >= sizeof(out->part) || part[0] == '.' || part[pl - 1] == '.')
		return -1;
	for (size_t i = 0; i < pl; i++) {
		if (!((part[i] >= '0' && part[i] <= '9') || (part[i] == '.' && part[i + 1] != '.')))
			return -1;
	}
	memcpy(out->part, part, pl + 1);
	snprintf(out->what, sizeof(out->what), "part");
	return 0;
}
