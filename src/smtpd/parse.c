/* parse.c — pure SMTP command-line parsing for the server (RFC 5321 §4.1).
 *
 * Runs in smtpd on every line a client sends, before any authentication, so
 * every octet is hostile. No I/O and no allocation: the results are views into
 * the caller's line or copies into fixed-size fields, and every error is a
 * static struct smtp_perr (code, RFC 3463 enhanced code, static text).
 *
 * Reply codes: a malformed command or parameter value is 501 (RFC 5321
 * §4.2.2 "syntax error in parameters"); a well-formed parameter we do not
 * implement, or one given twice, is 555 (RFC 5321 §4.1.1.11, §4.1.1.3). */
#include "smtpd/parse.h"

#include <string.h>

#include "lib/strutil.h"

#define SMTP_VERB_MAX 16
#define SMTP_HELO_MAX 255

static void smtp_perr_set(struct smtp_perr *err, int code, const char *enh, const char *text)
{
	err->code = code;
	err->enh = enh;
	err->text = text;
}

static bool smtp_is_alpha(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

static bool smtp_is_digit(unsigned char ch)
{
	return ch >= '0' && ch <= '9';
}

int smtp_cmdline_split(const char *line, size_t len, struct smtp_cmdline *r, struct smtp_perr *err)
{
	size_t i = 0, end = len;

	/* A NUL or a bare CR/LF has no place in a command line (RFC 5321
	 * §2.3.8); the reader already removed the terminating CRLF. */
	if (len == 0 || memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL ||
	    memchr(line, '\n', len) != NULL)
		goto unrecognized;
	while (i < len && smtp_is_alpha((unsigned char)line[i]))
		i++;
	if (i == 0 || i > SMTP_VERB_MAX || (i < len && line[i] != ' '))
		goto unrecognized;
	r->verb = line;
	r->verb_len = i;
	while (i < len && line[i] == ' ')
		i++;
	while (end > i && line[end - 1] == ' ')
		end--;
	r->args = line + i;
	r->args_len = end - i;
	return 0;
unrecognized:
	smtp_perr_set(err, 500, "5.5.2", "Syntax error, command unrecognized");
	return -1;
}

/* ---- ESMTP parameters: esmtp-param = esmtp-keyword ["=" esmtp-value] ---- */

struct smtp_param {
	const char *key;
	size_t key_len;
	const char *val; /* NULL when there is no "=" */
	size_t val_len;
};

static void smtp_perr_param_syntax(struct smtp_perr *err)
{
	smtp_perr_set(err, 501, "5.5.4", "Syntax error in parameters");
}

/* esmtp-value = 1*(%d33-60 / %d62-126), plus UTF8-non-ascii under SMTPUTF8
 * (RFC 6531 §3.3). */
static bool smtp_value_valid(const char *p, size_t len, bool utf8_ok)
{
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)p[i];
		size_t n;

		if (ch >= 0x80) {
			n = utf8_ok ? mail_utf8_char_len(p + i, len - i) : 0;
			if (n == 0)
				return false;
			i += n;
			continue;
		}
		if (ch < 33 || ch > 126 || ch == '=')
			return false;
		i++;
	}
	return len > 0;
}

/* Take the next parameter from p[*pos..len). Returns 1 with *r filled, 0 at
 * the end, -1 on a syntax error. Runs of SP between parameters are tolerated. */
static int smtp_param_next(const char *p, size_t len, size_t *pos, bool utf8_ok,
                           struct smtp_param *r, struct smtp_perr *err)
{
	size_t i = *pos, start;

	while (i < len && p[i] == ' ')
		i++;
	if (i == len) {
		*pos = i;
		return 0;
	}
	/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
	start = i;
	while (i < len && (smtp_is_alpha((unsigned char)p[i]) ||
	                   smtp_is_digit((unsigned char)p[i]) || (p[i] == '-' && i > start)))
		i++;
	r->key = p + start;
	r->key_len = i - start;
	r->val = NULL;
	r->val_len = 0;
	if (r->key_len == 0)
		goto syntax;
	if (i < len && p[i] == '=') {
		start = ++i;
		while (i < len && p[i] != ' ')
			i++;
		r->val = p + start;
		r->val_len = i - start;
		if (!smtp_value_valid(r->val, r->val_len, utf8_ok))
			goto syntax;
	}
	if (i < len && p[i] != ' ')
		goto syntax;
	*pos = i;
	return 1;
syntax:
	smtp_perr_param_syntax(err);
	return -1;
}

/* A parameter handler: validates the value and stores it into ctx. */
typedef int smtp_param_fn(const struct smtp_param *prm, void *ctx, struct smtp_perr *err);

struct smtp_param_def {
	const char *name;
	smtp_param_fn *fn;
};

/* Walk the parameters, dispatching through defs (the single list of what a
 * command accepts); unknown and repeated keywords are 555 5.5.4. */
static int smtp_params_parse(const char *p, size_t len, bool utf8_ok,
                             const struct smtp_param_def *defs, size_t ndefs, void *ctx,
                             struct smtp_perr *err)
{
	struct smtp_param prm;
	size_t pos = 0;
	unsigned seen = 0;
	int ret;

	while ((ret = smtp_param_next(p, len, &pos, utf8_ok, &prm, err)) > 0) {
		size_t k;

		for (k = 0; k < ndefs; k++) {
			if (str_case_eq(prm.key, prm.key_len, defs[k].name))
				break;
		}
		if (k == ndefs) {
			smtp_perr_set(err, 555, "5.5.4", "Unsupported parameter");
			return -1;
		}
		if ((seen & (1u << k)) != 0) {
			smtp_perr_set(err, 555, "5.5.4", "Duplicate parameter");
			return -1;
		}
		seen |= 1u << k;
		if (defs[k].fn(&prm, ctx, err) < 0)
			return -1;
	}
	return ret;
}

/* xtext (RFC 3461 §4); with utf8, also well-formed UTF-8 characters (the
 * utf-8-addr-unitext of RFC 6533 §3, allowed under SMTPUTF8). */
static bool smtp_xtext_valid(const char *p, size_t len, bool utf8)
{
	size_t run = 0;

	for (size_t i = 0; i < len;) {
		size_t n;

		if ((unsigned char)p[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8 ? mail_utf8_char_len(p + i, len - i) : 0;
		if (n == 0 || !mail_xtext_valid(p + run, i - run))
			return false;
		i += n;
		run = i;
	}
	return mail_xtext_valid(p + run, len - run);
}

/* ---- MAIL FROM parameters ---- */

static int smtp_mail_param_size(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_mail_args *a = ctx;

	/* RFC 1870 §3: size-value = 1*20DIGIT; the limit is checked by the
	 * caller (552 5.3.4), only the syntax and u64 range here. */
	if (prm->val == NULL ||
	    str_parse_u64(prm->val, prm->val_len, 0, UINT64_MAX, &a->size) < 0) {
		smtp_perr_set(err, 501, "5.5.4", "Invalid SIZE value");
		return -1;
	}
	a->has_size = true;
	return 0;
}

static int smtp_mail_param_body(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_mail_args *a = ctx;

	/* RFC 6152 §2; BINARYMIME (RFC 3030) exists but is not offered */
	if (prm->val != NULL && str_case_eq(prm->val, prm->val_len, "7BIT")) {
		a->body = SMTP_BODY_7BIT;
	} else if (prm->val != NULL && str_case_eq(prm->val, prm->val_len, "8BITMIME")) {
		a->body = SMTP_BODY_8BITMIME;
	} else if (prm->val != NULL && str_case_eq(prm->val, prm->val_len, "BINARYMIME")) {
		smtp_perr_set(err, 555, "5.5.4", "BODY=BINARYMIME not supported");
		return -1;
	} else {
		smtp_perr_set(err, 501, "5.5.4", "Invalid BODY value");
		return -1;
	}
	return 0;
}

static int smtp_mail_param_smtputf8(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_mail_args *a = ctx;

	/* RFC 6531 §3.4: the parameter has no value */
	if (prm->val != NULL) {
		smtp_perr_set(err, 501, "5.5.4", "SMTPUTF8 takes no value");
		return -1;
	}
	a->smtputf8 = true;
	return 0;
}

static int smtp_mail_param_ret(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_mail_args *a = ctx;

	/* RFC 3461 §4.3 */
	if (prm->val != NULL && str_case_eq(prm->val, prm->val_len, "FULL")) {
		a->ret = SMTP_RET_FULL;
	} else if (prm->val != NULL && str_case_eq(prm->val, prm->val_len, "HDRS")) {
		a->ret = SMTP_RET_HDRS;
	} else {
		smtp_perr_set(err, 501, "5.5.4", "Invalid RET value");
		return -1;
	}
	return 0;
}

static int smtp_mail_param_envid(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_mail_args *a = ctx;

	/* RFC 3461 §4.4: xtext, at most 100 characters */
	if (prm->val == NULL || prm->val_len > SMTP_ENVID_MAX ||
	    !mail_xtext_valid(prm->val, prm->val_len)) {
		smtp_perr_set(err, 501, "5.5.4", "Invalid ENVID value");
		return -1;
	}
	memcpy(a->envid, prm->val, prm->val_len);
	a->envid[prm->val_len] = '\0';
	mail_xtext_canon(a->envid);
	return 0;
}

static int smtp_mail_param_auth(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	(void)ctx;
	/* RFC 4954 §5: AUTH=xtext or AUTH=<>; accepted and ignored (we do not
	 * relay on behalf of a trusted submitter's claim) */
	if (prm->val == NULL || (!str_case_eq(prm->val, prm->val_len, "<>") &&
	                         !mail_xtext_valid(prm->val, prm->val_len))) {
		smtp_perr_set(err, 501, "5.5.4", "Invalid AUTH value");
		return -1;
	}
	return 0;
}

static const struct smtp_param_def smtp_mail_params[] = {
    {"SIZE", smtp_mail_param_size},         {"BODY", smtp_mail_param_body},
    {"SMTPUTF8", smtp_mail_param_smtputf8}, {"RET", smtp_mail_param_ret},
    {"ENVID", smtp_mail_param_envid},       {"AUTH", smtp_mail_param_auth},
};

/* Skip "FROM:" / "TO:" and one run of spaces; returns the path offset or -1. */
static int smtp_skip_prefix(const char *args, size_t len, const char *prefix, size_t *pos_r)
{
	size_t i = strlen(prefix);

	if (!str_case_prefix(args, len, prefix))
		return -1;
	while (i < len && args[i] == ' ')
		i++;
	*pos_r = i;
	return 0;
}

int smtp_parse_mail(const char *args, size_t len, struct smtp_mail_args *r, struct smtp_perr *err)
{
	size_t pos, used;
	int ret;

	memset(r, 0, sizeof(*r));
	if (smtp_skip_prefix(args, len, "FROM:", &pos) < 0) {
		smtp_perr_set(err, 501, "5.5.4", "Syntax: MAIL FROM:<address>");
		return -1;
	}
	/* SMTPUTF8 comes after the path, so parse the path allowing UTF-8 and
	 * decide once the parameters are known (RFC 6531 §3.4). */
	ret =
	    mail_addr_parse_path(args + pos, len - pos, MAIL_ADDR_ALLOW_NULL | MAIL_ADDR_ALLOW_UTF8,
	                         &r->from, &used, NULL);
	if (ret == MAIL_ADDR_ERR_LENGTH) {
		smtp_perr_set(err, 501, "5.1.7", "Sender address too long");
		return -1;
	}
	if (ret == MAIL_ADDR_ERR_IDNA) {
		/* RFC 5891 §5.4: a U-label that IDNA2008 refuses */
		smtp_perr_set(err, 553, "5.1.7", "Sender domain is not a valid IDN");
		return -1;
	}
	pos += used;
	if (ret < 0 || (pos < len && args[pos] != ' ')) {
		smtp_perr_set(err, 501, "5.1.7", "Bad sender address syntax");
		return -1;
	}
	if (smtp_params_parse(args + pos, len - pos, true, smtp_mail_params,
	                      sizeof(smtp_mail_params) / sizeof(smtp_mail_params[0]), r, err) < 0)
		return -1;
	if (r->from.is_utf8 && !r->smtputf8) {
		/* RFC 6531 §3.5 */
		smtp_perr_set(err, 553, "5.6.7", "SMTPUTF8 required for a non-ASCII address");
		return -1;
	}
	return 0;
}

/* ---- RCPT TO parameters ---- */

struct smtp_rcpt_ctx {
	struct smtp_rcpt_args *a;
	bool utf8_ok;
};

static int smtp_rcpt_param_notify(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	static const struct {
		const char *name;
		unsigned bit;
	} words[] = {{"NEVER", SMTP_NOTIFY_NEVER},
	             {"SUCCESS", SMTP_NOTIFY_SUCCESS},
	             {"FAILURE", SMTP_NOTIFY_FAILURE},
	             {"DELAY", SMTP_NOTIFY_DELAY}};
	struct smtp_rcpt_ctx *c = ctx;
	unsigned bits = 0;
	size_t i = 0;

	/* RFC 3461 §4.1: "NEVER" / 1#( "SUCCESS" / "FAILURE" / "DELAY" ) */
	if (prm->val == NULL)
		goto bad;
	while (i <= prm->val_len) {
		const char *item = prm->val + i;
		const char *comma = memchr(item, ',', prm->val_len - i);
		size_t n = comma != NULL ? (size_t)(comma - item) : prm->val_len - i;
		size_t k;

		for (k = 0; k < sizeof(words) / sizeof(words[0]); k++) {
			if (str_case_eq(item, n, words[k].name))
				break;
		}
		if (k == sizeof(words) / sizeof(words[0]) || (bits & words[k].bit) != 0)
			goto bad;
		bits |= words[k].bit;
		i += n + 1;
	}
	if ((bits & SMTP_NOTIFY_NEVER) != 0 && bits != SMTP_NOTIFY_NEVER)
		goto bad;
	c->a->notify = bits;
	return 0;
bad:
	smtp_perr_set(err, 501, "5.5.4", "Invalid NOTIFY value");
	return -1;
}

/* RFC 5322 §3.2.3 atext, for the ORCPT addr-type atom. */
static bool smtp_is_atext(unsigned char ch)
{
	return smtp_is_alpha(ch) || smtp_is_digit(ch) ||
	       (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

static int smtp_rcpt_param_orcpt(const struct smtp_param *prm, void *ctx, struct smtp_perr *err)
{
	struct smtp_rcpt_ctx *c = ctx;
	const char *semi;
	size_t tlen;
	bool utf8;

	/* RFC 3461 §4.2: addr-type ";" xtext; RFC 6533 §3 lets a "utf-8"
	 * address carry raw UTF-8 under SMTPUTF8 */
	if (prm->val == NULL || prm->val_len > SMTP_ORCPT_MAX)
		goto bad;
	semi = memchr(prm->val, ';', prm->val_len);
	if (semi == NULL || semi == prm->val || (size_t)(semi - prm->val) + 1 == prm->val_len)
		goto bad;
	tlen = (size_t)(semi - prm->val);
	for (size_t i = 0; i < tlen; i++) {
		if (!smtp_is_atext((unsigned char)prm->val[i]))
			goto bad;
	}
	utf8 = c->utf8_ok && str_case_eq(prm->val, tlen, "utf-8");
	if (!smtp_xtext_valid(semi + 1, prm->val_len - tlen - 1, utf8))
		goto bad;
	memcpy(c->a->orcpt, prm->val, prm->val_len);
	c->a->orcpt[prm->val_len] = '\0';
	mail_xtext_canon(c->a->orcpt);
	return 0;
bad:
	smtp_perr_set(err, 501, "5.5.4", "Invalid ORCPT value");
	return -1;
}

static const struct smtp_param_def smtp_rcpt_params[] = {
    {"NOTIFY", smtp_rcpt_param_notify},
    {"ORCPT", smtp_rcpt_param_orcpt},
};

int smtp_parse_rcpt(const char *args, size_t len, bool utf8_ok, struct smtp_rcpt_args *r,
                    struct smtp_perr *err)
{
	struct smtp_rcpt_ctx ctx = {.a = r, .utf8_ok = utf8_ok};
	unsigned flags = MAIL_ADDR_ALLOW_POSTMASTER | (utf8_ok ? MAIL_ADDR_ALLOW_UTF8 : 0);
	size_t pos, used;
	int ret;

	memset(r, 0, sizeof(*r));
	if (smtp_skip_prefix(args, len, "TO:", &pos) < 0) {
		smtp_perr_set(err, 501, "5.5.4", "Syntax: RCPT TO:<address>");
		return -1;
	}
	ret = mail_addr_parse_path(args + pos, len - pos, flags, &r->to, &used, NULL);
	if (ret == MAIL_ADDR_ERR_LENGTH) {
		smtp_perr_set(err, 501, "5.1.3", "Recipient address too long");
		return -1;
	}
	if (ret == MAIL_ADDR_ERR_UTF8) {
		/* RFC 6531 §3.5 */
		smtp_perr_set(err, 553, "5.6.7", "SMTPUTF8 required for a non-ASCII address");
		return -1;
	}
	if (ret == MAIL_ADDR_ERR_IDNA) {
		/* RFC 5891 §5.4: a U-label that IDNA2008 refuses */
		smtp_perr_set(err, 553, "5.1.3", "Recipient domain is not a valid IDN");
		return -1;
	}
	pos += used;
	if (ret < 0 || (pos < len && args[pos] != ' ')) {
		smtp_perr_set(err, 501, "5.1.3", "Bad recipient address syntax");
		return -1;
	}
	return smtp_params_parse(args + pos, len - pos, utf8_ok, smtp_rcpt_params,
	                         sizeof(smtp_rcpt_params) / sizeof(smtp_rcpt_params[0]), &ctx, err);
}

int smtp_parse_bdat(const char *args, size_t len, uint64_t max, uint64_t *size_r, bool *last_r,
                    struct smtp_perr *err)
{
	size_t i = 0, end = len;

	/* RFC 3030 §2: bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] */
	while (i < len && smtp_is_digit((unsigned char)args[i]))
		i++;
	if (str_parse_u64(args, i, 0, max, size_r) < 0)
		goto bad;
	while (end > i && args[end - 1] == ' ')
		end--;
	*last_r = false;
	if (i == end)
		return 0;
	if (args[i] != ' ')
		goto bad;
	while (i < end && args[i] == ' ')
		i++;
	if (!str_case_eq(args + i, end - i, "LAST"))
		goto bad;
	*last_r = true;
	return 0;
bad:
	smtp_perr_set(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
	return -1;
}

int smtp_parse_helo(const char *args, size_t len, struct smtp_perr *err)
{
	/* RFC 5321 §4.1.1.1 wants a Domain or address literal; many clients
	 * send something else, and the name is informational, so only bound it:
	 * printable ASCII or well-formed UTF-8, no spaces. */
	if (len == 0 || len > SMTP_HELO_MAX)
		goto bad;
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)args[i];
		size_t n = 1;

		if (ch >= 0x80)
			n = mail_utf8_char_len(args + i, len - i);
		else if (ch < 0x21 || ch > 0x7e)
			n = 0;
		if (n == 0)
			goto bad;
		i += n;
	}
	return 0;
bad:
	smtp_perr_set(err, 501, "5.5.4", "Syntax: EHLO hostname");
	return -1;
}
