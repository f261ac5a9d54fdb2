/* dkim_tags.c — the tag-list parser of RFC 6376 §3.2 (DKIM-Signature, key
 * records; DMARC and ARC reuse it) and the DKIM-Signature (§3.5) and key
 * record (§3.6.1) parsers on top of it. Pure code, any process; the input
 * is hostile (a header field of a received message, a DNS answer). */
#include "dauth/dkim_int.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/strutil.h"

#include <string.h>

static bool dkim_is_fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void dkim_trim(const char **p, size_t *len)
{
	while (*len > 0 && dkim_is_fws(**p)) {
		(*p)++;
		(*len)--;
	}
	while (*len > 0 && dkim_is_fws((*p)[*len - 1]))
		(*len)--;
}

static bool dkim_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool dkim_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* tag-name = ALPHA *ALNUMPUNC */
static bool dkim_tag_name_ok(const char *p, size_t len)
{
	if (len == 0 || !dkim_is_alpha(p[0]))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!dkim_is_alpha(p[i]) && !dkim_is_digit(p[i]) && p[i] != '_')
			return false;
	return true;
}

/* VALCHAR = %x21-3A / %x3C-7E, and FWS between them; octets above 0x7F are
 * let through (RFC 8616 allows UTF-8 in i=). */
static bool dkim_tag_value_ok(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (dkim_is_fws((char)c) || c >= 0x80)
			continue;
		if (c < 0x21 || c == 0x7f || c == ';')
			return false;
	}
	return true;
}

int dkim_tags_parse(const char *p, size_t len, struct dkim_tags *tags, const char **error_r)
{
	const char *end = p + len;
	tags->n = 0;
	while (p <= end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *segend = semi != NULL ? semi : end;
		const char *s = p;
		size_t slen = (size_t)(segend - p);
		dkim_trim(&s, &slen);
		if (slen == 0) {
			/* only the empty spec after a final ';' (or an empty list) */
			if (semi != NULL) {
				*error_r = "empty tag-spec";
				return -1;
			}
			break;
		}
		const char *eq = memchr(s, '=', slen);
		if (eq == NULL) {
			*error_r = "tag-spec without '='";
			return -1;
		}
		const char *name = s, *val = eq + 1;
		size_t nlen = (size_t)(eq - s), vlen = slen - nlen - 1;
		dkim_trim(&name, &nlen);
		dkim_trim(&val, &vlen);
		if (!dkim_tag_name_ok(name, nlen) || !dkim_tag_value_ok(val, vlen)) {
			*error_r = "invalid tag name or value";
			return -1;
		}
		for (size_t i = 0; i < tags->n; i++)
			if (tags->tag[i].name_len == nlen &&
			    memcmp(tags->tag[i].name, name, nlen) == 0) {
				*error_r = "duplicate tag";
				return -1;
			}
		if (tags->n == DKIM_TAGS_MAX) {
			*error_r = "too many tags";
			return -1;
		}
		tags->tag[tags->n++] = (struct dkim_tag){name, nlen, val, vlen};
		if (semi == NULL)
			break;
		p = semi + 1;
	}
	return 0;
}

const struct dkim_tag *dkim_tags_get(const struct dkim_tags *tags, const char *name)
{
	size_t nlen = strlen(name);
	for (size_t i = 0; i < tags->n; i++)
		if (tags->tag[i].name_len == nlen && memcmp(tags->tag[i].name, name, nlen) == 0)
			return &tags->tag[i];
	return NULL;
}

const char *dkim_alg_name(enum dkim_alg alg)
{
	switch (alg) {
	case DKIM_ALG_RSA_SHA1:
		return "rsa-sha1";
	case DKIM_ALG_RSA_SHA256:
		return "rsa-sha256";
	case DKIM_ALG_ED25519_SHA256:
		return "ed25519-sha256";
	}
	return "";
}

const char *dkim_result_name(enum dkim_result r)
{
	static const char *const names[] = {"none",    "pass",      "fail",     "policy",
	                                    "neutral", "temperror", "permerror"};
	return (size_t)r < sizeof(names) / sizeof(names[0]) ? names[r] : "none";
}

/* base64 with FWS anywhere (§3.5 b=, bh=; §3.6.1 p=) into out[max]. */
static int dkim_b64(const struct dkim_tag *t, unsigned char *out, size_t max, size_t *len_r)
{
	struct buf clean, dec;
	buf_init(&clean, DKIM_TXT_MAX * 2);
	buf_init(&dec, max);
	int rc = 0;
	for (size_t i = 0; i < t->value_len && rc == 0; i++)
		if (!dkim_is_fws(t->value[i]))
			rc = buf_append_byte(&clean, (unsigned char)t->value[i]);
	if (rc == 0 && clean.len > 0)
		rc = base64_decode((const char *)clean.data, clean.len, &dec);
	if (rc == 0) {
		if (dec.len > 0) /* an empty value (p= revoked) has no buffer */
			memcpy(out, dec.data, dec.len);
		*len_r = dec.len;
	}
	buf_free(&clean);
	buf_free(&dec);
	return rc;
}

static int dkim_copy(const struct dkim_tag *t, char *out, size_t outlen)
{
	if (t->value_len == 0 || t->value_len >= outlen)
		return -1;
	memcpy(out, t->value, t->value_len);
	out[t->value_len] = '\0';
	return 0;
}

static int dkim_number(const struct dkim_tag *t, uint64_t *r)
{
	/* l=, t=, x= are up to 76 (l=) or 12 digits; more than fits is refused. */
	for (size_t i = 0; i < t->value_len; i++)
		if (!dkim_is_digit(t->value[i]))
			return -1;
	return str_parse_u64(t->value, t->value_len, 0, UINT64_MAX / 2, r);
}

static int dkim_sig_alg(const struct dkim_tag *t, struct dkim_sig *sig)
{
	static const enum dkim_alg algs[] = {DKIM_ALG_RSA_SHA1, DKIM_ALG_RSA_SHA256,
	                                     DKIM_ALG_ED25519_SHA256};
	for (size_t i = 0; i < 3; i++)
		if (str_case_eq(t->value, t->value_len, dkim_alg_name(algs[i]))) {
			sig->alg = algs[i];
			return 0;
		}
	return -1;
}

static int dkim_canon_word(const char *p, size_t len, enum dkim_canon *c)
{
	if (str_case_eq(p, len, "simple"))
		*c = DKIM_CANON_SIMPLE;
	else if (str_case_eq(p, len, "relaxed"))
		*c = DKIM_CANON_RELAXED;
	else
		return -1;
	return 0;
}

static int dkim_sig_canon(const struct dkim_tag *t, struct dkim_sig *sig)
{
	const char *slash = memchr(t->value, '/', t->value_len);
	if (slash == NULL) {
		sig->bcanon = DKIM_CANON_SIMPLE;
		return dkim_canon_word(t->value, t->value_len, &sig->hcanon);
	}
	size_t hl = (size_t)(slash - t->value);
	if (dkim_canon_word(t->value, hl, &sig->hcanon) < 0)
		return -1;
	return dkim_canon_word(slash + 1, t->value_len - hl - 1, &sig->bcanon);
}

/* h= : colon-separated field names with FWS around them; From required. */
static int dkim_sig_hnames(const struct dkim_tag *t, struct dkim_sig *sig, bool need_from,
                           const char **error_r)
{
	const char *p = t->value, *end = t->value + t->value_len;
	bool from = false;
	while (p <= end) {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		const char *e = colon != NULL ? colon : end;
		const char *n = p;
		size_t nl = (size_t)(e - p);
		dkim_trim(&n, &nl);
		if (nl == 0) {
			*error_r = "empty name in h=";
			return -1;
		}
		for (size_t i = 0; i < nl; i++)
			if (n[i] <= 0x20 || n[i] >= 0x7f) {
				*error_r = "invalid name in h=";
				return -1;
			}
		if (sig->n_hnames == DKIM_HNAMES_MAX) {
			*error_r = "too many names in h=";
			return -1;
		}
		sig->hnames[sig->n_hnames++] = xstrndup(n, nl);
		from = from || str_case_eq(n, nl, "from");
		if (colon == NULL)
			break;
		p = colon + 1;
	}
	if (!from && need_from) {
		*error_r = "h= does not sign From";
		return -1;
	}
	return 0;
}

/* i= must be in d= or a subdomain of it (§3.5). */
static int dkim_sig_auid(const struct dkim_tag *t, struct dkim_sig *sig)
{
	if (dkim_copy(t, sig->auid, sizeof(sig->auid)) < 0)
		return -1;
	const char *at = strrchr(sig->auid, '@');
	if (at == NULL)
		return -1;
	const char *dom = at + 1;
	size_t dl = strlen(dom), sl = strlen(sig->domain);
	if (str_case_eq(dom, dl, sig->domain))
		return 0;
	if (dl > sl && dom[dl - sl - 1] == '.' && str_case_eq(dom + dl - sl, sl, sig->domain))
		return 0;
	return -1;
}

static int dkim_sig_required(const struct dkim_tags *tags, struct dkim_sig *sig, bool arc,
                             const char **error_r)
{
	const struct dkim_tag *t;
	if (!arc &&
	    ((t = dkim_tags_get(tags, "v")) == NULL || !str_case_eq(t->value, t->value_len, "1"))) {
		*error_r = "v= missing or not 1";
		return -1;
	}
	if ((t = dkim_tags_get(tags, "a")) == NULL || dkim_sig_alg(t, sig) < 0) {
		*error_r = "a= missing or unknown";
		return -1;
	}
	if ((t = dkim_tags_get(tags, "d")) == NULL ||
	    dkim_copy(t, sig->domain, sizeof(sig->domain)) < 0) {
		*error_r = "d= missing or invalid";
		return -1;
	}
	str_lower(sig->domain);
	if ((t = dkim_tags_get(tags, "s")) == NULL ||
	    dkim_copy(t, sig->selector, sizeof(sig->selector)) < 0) {
		*error_r = "s= missing or invalid";
		return -1;
	}
	if ((t = dkim_tags_get(tags, "bh")) == NULL ||
	    dkim_b64(t, sig->bh, sizeof(sig->bh), &sig->bh_len) < 0 || sig->bh_len == 0) {
		*error_r = "bh= missing or invalid";
		return -1;
	}
	if ((t = dkim_tags_get(tags, "b")) == NULL ||
	    dkim_b64(t, sig->b, sizeof(sig->b), &sig->b_len) < 0 || sig->b_len == 0) {
		*error_r = "b= missing or invalid";
		return -1;
	}
	size_t k = 0;
	for (size_t i = 0; i < t->value_len && k < DKIM_B_PREFIX_LEN; i++)
		if (!dkim_is_fws(t->value[i]))
			sig->b_prefix[k++] = t->value[i];
	sig->b_prefix[k] = '\0';
	if ((t = dkim_tags_get(tags, "h")) == NULL)
		*error_r = "h= missing";
	return t == NULL ? -1 : dkim_sig_hnames(t, sig, !arc, error_r);
}

static int dkim_sig_optional(const struct dkim_tags *tags, struct dkim_sig *sig,
                             const char **error_r)
{
	const struct dkim_tag *t;
	if ((t = dkim_tags_get(tags, "c")) != NULL && dkim_sig_canon(t, sig) < 0) {
		*error_r = "c= unknown";
		return -1;
	}
	if ((t = dkim_tags_get(tags, "i")) != NULL) {
		if (dkim_sig_auid(t, sig) < 0) {
			*error_r = "i= not within d=";
			return -1;
		}
	} else if (strlen(sig->domain) + 2 <= sizeof(sig->auid)) {
		sig->auid[0] = '@';
		memcpy(sig->auid + 1, sig->domain, strlen(sig->domain) + 1);
	}
	if ((t = dkim_tags_get(tags, "l")) != NULL) {
		if (dkim_number(t, &sig->l) < 0) {
			*error_r = "l= invalid";
			return -1;
		}
		sig->has_l = true;
	}
	if ((t = dkim_tags_get(tags, "t")) != NULL) {
		if (dkim_number(t, &sig->t) < 0) {
			*error_r = "t= invalid";
			return -1;
		}
		sig->has_t = true;
	}
	if ((t = dkim_tags_get(tags, "x")) != NULL) {
		if (dkim_number(t, &sig->x) < 0 || (sig->has_t && sig->x < sig->t)) {
			*error_r = "x= invalid or before t=";
			return -1;
		}
		sig->has_x = true;
	}
	if ((t = dkim_tags_get(tags, "q")) != NULL &&
	    memmem(t->value, t->value_len, "dns/txt", 7) == NULL) {
		*error_r = "q= without dns/txt";
		return -1;
	}
	return 0;
}

int dkim_sig_parse(const char *value, size_t len, struct dkim_sig *sig, const char **error_r)
{
	struct dkim_tags tags;
	memset(sig, 0, sizeof(*sig));
	sig->hcanon = sig->bcanon = DKIM_CANON_SIMPLE;
	if (dkim_tags_parse(value, len, &tags, error_r) < 0)
		return -1;
	if (dkim_sig_required(&tags, sig, false, error_r) < 0)
		return -1;
	return dkim_sig_optional(&tags, sig, error_r);
}

int dkim_sig_parse_ams(const char *value, size_t len, struct dkim_sig *sig, unsigned *instance_r,
                       const char **error_r)
{
	struct dkim_tags tags;
	const struct dkim_tag *t;
	uint64_t inst = 0;
	memset(sig, 0, sizeof(*sig));
	sig->hcanon = sig->bcanon = DKIM_CANON_SIMPLE;
	if (dkim_tags_parse(value, len, &tags, error_r) < 0)
		return -1;
	if ((t = dkim_tags_get(&tags, "i")) == NULL || dkim_number(t, &inst) < 0 || inst < 1 ||
	    inst > 50) {
		*error_r = "i= missing or not an ARC instance";
		return -1;
	}
	*instance_r = (unsigned)inst;
	if (dkim_sig_required(&tags, sig, true, error_r) < 0)
		return -1;
	/* i= is the instance, not an identity: take the rest without it */
	for (size_t k = 0; k < tags.n; k++)
		if (&tags.tag[k] == t) {
			tags.tag[k] = tags.tag[--tags.n];
			break;
		}
	return dkim_sig_optional(&tags, sig, error_r);
}

void dkim_sig_clear(struct dkim_sig *sig)
{
	for (size_t i = 0; i < sig->n_hnames; i++)
		free(sig->hnames[i]);
	sig->n_hnames = 0;
}

/* A colon-separated list contains word (case-insensitive). */
static bool dkim_list_has(const struct dkim_tag *t, const char *word)
{
	const char *p = t->value, *end = t->value + t->value_len;
	while (p <= end) {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		const char *e = colon != NULL ? colon : end;
		const char *w = p;
		size_t wl = (size_t)(e - p);
		dkim_trim(&w, &wl);
		if (str_case_eq(w, wl, word))
			return true;
		if (colon == NULL)
			break;
		p = colon + 1;
	}
	return false;
}

int dkim_key_parse(const char *txt, size_t len, struct dkim_key *key, const char **error_r)
{
	struct dkim_tags tags;
	const struct dkim_tag *t;
	memset(key, 0, sizeof(*key));
	key->type = DKIM_KEY_RSA;
	key->sha1_ok = key->sha256_ok = true;
	if (dkim_tags_parse(txt, len, &tags, error_r) < 0)
		return -1;
	if ((t = dkim_tags_get(&tags, "v")) != NULL &&
	    (t != &tags.tag[0] || !str_case_eq(t->value, t->value_len, "DKIM1"))) {
		*error_r = "v= not DKIM1 or not first";
		return -1;
	}
	if ((t = dkim_tags_get(&tags, "k")) != NULL) {
		if (str_case_eq(t->value, t->value_len, "rsa"))
			key->type = DKIM_KEY_RSA;
		else if (str_case_eq(t->value, t->value_len, "ed25519"))
			key->type = DKIM_KEY_ED25519;
		else {
			*error_r = "unknown key type k=";
			return -1;
		}
	}
	if ((t = dkim_tags_get(&tags, "h")) != NULL) {
		key->sha1_ok = dkim_list_has(t, "sha1");
		key->sha256_ok = dkim_list_has(t, "sha256");
	}
	if ((t = dkim_tags_get(&tags, "s")) != NULL && !dkim_list_has(t, "*") &&
	    !dkim_list_has(t, "email")) {
		*error_r = "key not for email (s=)";
		return -1;
	}
	if ((t = dkim_tags_get(&tags, "t")) != NULL) {
		key->testing = dkim_list_has(t, "y");
		key->strict = dkim_list_has(t, "s");
	}
	if ((t = dkim_tags_get(&tags, "p")) == NULL) {
		*error_r = "p= missing";
		return -1;
	}
	if (dkim_b64(t, key->p, sizeof(key->p), &key->p_len) < 0) {
		*error_r = "p= invalid base64 or too long";
		return -1;
	}
	key->revoked = key->p_len == 0;
	return 0;
}
