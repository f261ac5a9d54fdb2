/* test_parse.c — table-driven tests for the SMTP command-line parsers
 * (src/smtpd/parse.c): line split, MAIL/RCPT with ESMTP parameters, BDAT,
 * EHLO/HELO, including every reply code each can produce. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtpd/parse.h"

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* Expand "%NNc" into NN copies of c when a case asks for it. */
static size_t test_expand(const char *pat, char *out, size_t outlen)
{
	size_t o = 0;

	for (const char *s = pat; *s != '\0'; s++) {
		size_t n = 1;

		if (*s == '%') {
			n = 0;
			for (s++; *s >= '0' && *s <= '9'; s++)
				n = n * 10 + (size_t)(*s - '0');
		}
		for (size_t k = 0; k < n; k++) {
			assert_true(o + 1 < outlen);
			out[o++] = *s;
		}
	}
	out[o] = '\0';
	return o;
}

/* Copy a case's input: explicit len (binary), expanded, or a C string. */
static size_t test_input(const char *in, size_t len, bool expand, char *out, size_t outlen)
{
	if (expand)
		return test_expand(in, out, outlen);
	if (len == 0)
		len = strlen(in);
	assert_true(len < outlen);
	memcpy(out, in, len);
	out[len] = '\0';
	return len;
}

static void test_check_err(size_t i, int rc, const struct smtp_perr *err, int code, const char *enh,
                           const char *text)
{
	if (code == 0) {
		if (rc != 0)
			fail_msg("case %zu: rc %d (%d %s %s)", i, rc, err->code, err->enh,
			         err->text);
		return;
	}
	if (rc != -1 || err->code != code || strcmp(err->enh, enh) != 0)
		fail_msg("case %zu: rc %d code %d %s, want %d %s", i, rc, rc != 0 ? err->code : 0,
		         rc != 0 ? err->enh : "-", code, enh);
	if (err->text == NULL || err->text[0] == '\0')
		fail_msg("case %zu: empty text", i);
	if (text != NULL && strcmp(err->text, text) != 0)
		fail_msg("case %zu: text \"%s\", want \"%s\"", i, err->text, text);
}

/* ---- smtp_cmdline_split ---- */

struct split_case {
	const char *in;
	size_t len;
	int code; /* 0: success */
	const char *verb;
	const char *args;
};

static const struct split_case split_cases[] = {
    {"MAIL FROM:<a@b>", 0, 0, "MAIL", "FROM:<a@b>"},
    {"ehlo client.example", 0, 0, "ehlo", "client.example"},
    {"QUIT", 0, 0, "QUIT", ""},
    {"QUIT   ", 0, 0, "QUIT", ""},
    {"RCPT   TO:<x@y>  ", 0, 0, "RCPT", "TO:<x@y>"},
    {"BDAT 10 LAST", 0, 0, "BDAT", "10 LAST"},
    {"ABCDEFGHIJKLMNOP x", 0, 0, "ABCDEFGHIJKLMNOP", "x"},
    {"NOOP a\tb", 0, 0, "NOOP", "a\tb"},
    {"", 0, 500, NULL, NULL},
    {" MAIL FROM:<a@b>", 0, 500, NULL, NULL},
    {"MA1L FROM:<a@b>", 0, 500, NULL, NULL},
    {"1234", 0, 500, NULL, NULL},
    {"MAIL\tFROM:<a@b>", 0, 500, NULL, NULL},
    {"MAIL:FROM:<a@b>", 0, 500, NULL, NULL},
    {"ABCDEFGHIJKLMNOPQ x", 0, 500, NULL, NULL},
    {"MAIL FROM:<a\0@b>", 16, 500, NULL, NULL},
    {"DATA\0", 5, 500, NULL, NULL},
    {"MAIL FROM:<a@b>\rRSET", 0, 500, NULL, NULL},
    {"MAIL FROM:<a@b>\nRSET", 0, 500, NULL, NULL},
    {"\xc3\xa9HLO x", 0, 500, NULL, NULL},
};

static void test_split_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(split_cases); i++) {
		const struct split_case *tc = &split_cases[i];
		struct smtp_cmdline cl;
		struct smtp_perr err = {0, NULL, NULL};
		char in[256];
		size_t len = test_input(tc->in, tc->len, false, in, sizeof(in));
		int rc = smtp_cmdline_split(in, len, &cl, &err);

		test_check_err(i, rc, &err, tc->code, "5.5.2",
		               "Syntax error, command unrecognized");
		if (rc != 0)
			continue;
		if (cl.verb != in || cl.verb_len != strlen(tc->verb) ||
		    memcmp(cl.verb, tc->verb, cl.verb_len) != 0)
			fail_msg("case %zu: verb \"%.*s\"", i, (int)cl.verb_len, cl.verb);
		if (cl.args == NULL || cl.args < in || cl.args + cl.args_len > in + len ||
		    cl.args_len != strlen(tc->args) || memcmp(cl.args, tc->args, cl.args_len) != 0)
			fail_msg("case %zu: args \"%.*s\"", i, (int)cl.args_len, cl.args);
	}
}

/* ---- smtp_parse_mail ---- */

struct mail_case {
	const char *in;
	bool expand;
	int code; /* 0: success */
	const char *enh;
	const char *text; /* NULL: any non-empty text */
	const char *from; /* mail_addr_format() of the sender, on success */
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	bool smtputf8;
	enum smtp_ret ret;
	const char *envid;
};

#define BAD_SENDER "Bad sender address syntax"
#define UTF8_REQ "SMTPUTF8 required for a non-ASCII address"
#define MAIL_SYN "Syntax: MAIL FROM:<address>"
#define UNSUPP "Unsupported parameter"

static const struct mail_case mail_cases[] = {
    /* prefix and path */
    {"FROM:<a@b.c>", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"from:<A@B.C>", false, 0, NULL, NULL, "A@b.c", false, 0, 0, false, 0, ""},
    {"FROM: <a@b.c>", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"FROM:   <a@b.c>", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"FROM:<>", false, 0, NULL, NULL, "", false, 0, 0, false, 0, ""},
    {"FROM:<@r.example:a@b.c>", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"FROM <a@b.c>", false, 501, "5.5.4", MAIL_SYN, NULL, false, 0, 0, false, 0, NULL},
    {"FROM :<a@b.c>", false, 501, "5.5.4", MAIL_SYN, NULL, false, 0, 0, false, 0, NULL},
    {"TO:<a@b.c>", false, 501, "5.5.4", MAIL_SYN, NULL, false, 0, 0, false, 0, NULL},
    {"", false, 501, "5.5.4", MAIL_SYN, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:a@b.c", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c>x", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c>SIZE=1", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@-b.c>", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<postmaster>", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<%65a@b.c>", true, 501, "5.1.7", "Sender address too long", NULL, false, 0, 0, false, 0,
     NULL},
    /* RFC 6531: SMTPUTF8 comes after the path */
    {"FROM:<j\xc3\xb6rg@x.y>", false, 553, "5.6.7", UTF8_REQ, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<j\xc3\xb6rg@x.y> SMTPUTF8", false, 0, NULL, NULL, "j\xc3\xb6rg@x.y", false, 0, 0, true,
     0, ""},
    {"FROM:<j\xc3\xb6rg@x.y> BODY=8BITMIME smtputf8", false, 0, NULL, NULL, "j\xc3\xb6rg@x.y",
     false, 0, SMTP_BODY_8BITMIME, true, 0, ""},
    {"FROM:<a@b.c> SMTPUTF8", false, 0, NULL, NULL, "a@b.c", false, 0, 0, true, 0, ""},
    {"FROM:<j\xc0\xafrg@x.y> SMTPUTF8", false, 501, "5.1.7", BAD_SENDER, NULL, false, 0, 0, false,
     0, NULL},
    {"FROM:<j\xc3\xb6rg@x.y> SMTPUTF8 FOO", false, 555, "5.5.4", UNSUPP, NULL, false, 0, 0, false,
     0, NULL},
    {"FROM:<a@b.c> SMTPUTF8=yes", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    /* SIZE (RFC 1870) */
    {"FROM:<a@b.c> SIZE=12345", false, 0, NULL, NULL, "a@b.c", true, 12345, 0, false, 0, ""},
    {"FROM:<a@b.c> size=0", false, 0, NULL, NULL, "a@b.c", true, 0, 0, false, 0, ""},
    {"FROM:<a@b.c> SIZE=18446744073709551615", false, 0, NULL, NULL, "a@b.c", true, UINT64_MAX, 0,
     false, 0, ""},
    {"FROM:<a@b.c> SIZE=18446744073709551616", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false,
     0, NULL},
    {"FROM:<a@b.c> SIZE", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SIZE=", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SIZE=12k", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SIZE=-1", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SIZE=1=2", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SIZE=1 SIZE=2", false, 555, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    /* BODY (RFC 6152, RFC 3030) */
    {"FROM:<a@b.c> BODY=7BIT", false, 0, NULL, NULL, "a@b.c", false, 0, SMTP_BODY_7BIT, false, 0,
     ""},
    {"FROM:<a@b.c> body=8bitmime", false, 0, NULL, NULL, "a@b.c", false, 0, SMTP_BODY_8BITMIME,
     false, 0, ""},
    {"FROM:<a@b.c> BODY=BINARYMIME", false, 555, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> BODY=FOO", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> BODY", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    /* RET, ENVID (RFC 3461) */
    {"FROM:<a@b.c> RET=FULL", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, SMTP_RET_FULL, ""},
    {"FROM:<a@b.c> ret=hdrs", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, SMTP_RET_HDRS, ""},
    {"FROM:<a@b.c> RET=NONE", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> RET", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> ENVID=QQ314159+2Bx", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0,
     "QQ314159+2Bx"},
    /* lower-case hex is accepted and passed on upper-cased */
    {"FROM:<a@b.c> ENVID=a+2bb+3d", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0,
     "a+2Bb+3D"},
    {"FROM:<a@b.c> ENVID=%100e", true, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, "%100e"},
    {"FROM:<a@b.c> ENVID=%101e", true, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> ENVID=a+zz", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> ENVID", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> ENVID=\xc3\xa9 SMTPUTF8", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0,
     NULL},
    {"FROM:<a@b.c> ENVID=a\x01", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    /* AUTH (RFC 4954 §5) */
    {"FROM:<a@b.c> AUTH=<>", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"FROM:<a@b.c> AUTH=u+40example.com", false, 0, NULL, NULL, "a@b.c", false, 0, 0, false, 0, ""},
    {"FROM:<a@b.c> AUTH", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> AUTH=a+q", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    /* keywords */
    {"FROM:<a@b.c> FOO=bar", false, 555, "5.5.4", UNSUPP, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> X-FOO", false, 555, "5.5.4", UNSUPP, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> NOTIFY=NEVER", false, 555, "5.5.4", UNSUPP, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> -X=1", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> =1", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> SI_ZE=1", false, 501, "5.5.4", NULL, NULL, false, 0, 0, false, 0, NULL},
    {"FROM:<a@b.c> BODY=7BIT body=7BIT", false, 555, "5.5.4", NULL, NULL, false, 0, 0, false, 0,
     NULL},
    /* everything at once, with extra spaces */
    {"FROM:<a@b.c>  SIZE=1   BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159 AUTH=<>  ", false, 0,
     NULL, NULL, "a@b.c", true, 1, SMTP_BODY_8BITMIME, true, SMTP_RET_HDRS, "QQ314159"},
    {"FROM:<> SIZE=100", false, 0, NULL, NULL, "", true, 100, 0, false, 0, ""},
};

static void test_mail_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(mail_cases); i++) {
		const struct mail_case *tc = &mail_cases[i];
		struct smtp_mail_args a;
		struct smtp_perr err = {0, NULL, NULL};
		char in[1024], want[1024], from[MAIL_PATH_MAX + 1];
		size_t len = test_input(tc->in, 0, tc->expand, in, sizeof(in));
		int rc = smtp_parse_mail(in, len, &a, &err);

		test_check_err(i, rc, &err, tc->code, tc->enh, tc->text);
		if (rc != 0)
			continue;
		if (mail_addr_format(&a.from, from, sizeof(from)) < 0 ||
		    strcmp(from, tc->from) != 0)
			fail_msg("case %zu: from \"%s\"", i, from);
		if (a.from.is_null != (tc->from[0] == '\0'))
			fail_msg("case %zu: is_null %d", i, a.from.is_null);
		if (a.has_size != tc->has_size || a.size != tc->size || a.body != tc->body ||
		    a.smtputf8 != tc->smtputf8 || a.ret != tc->ret)
			fail_msg("case %zu: size %d/%llu body %d utf8 %d ret %d", i, a.has_size,
			         (unsigned long long)a.size, a.body, a.smtputf8, a.ret);
		test_input(tc->envid, 0, tc->expand, want, sizeof(want));
		if (strcmp(a.envid, want) != 0)
			fail_msg("case %zu: envid \"%s\"", i, a.envid);
	}
}

/* ---- smtp_parse_rcpt ---- */

struct rcpt_case {
	const char *in;
	bool expand;
	bool utf8_ok;
	int code;
	const char *enh;
	const char *text;
	const char *to;
	unsigned notify;
	const char *orcpt;
};

#define BAD_RCPT "Bad recipient address syntax"
#define RCPT_SYN "Syntax: RCPT TO:<address>"
#define NOTIFY_S SMTP_NOTIFY_SUCCESS
#define NOTIFY_F SMTP_NOTIFY_FAILURE
#define NOTIFY_D SMTP_NOTIFY_DELAY

static const struct rcpt_case rcpt_cases[] = {
    {"TO:<a@b.c>", false, false, 0, NULL, NULL, "a@b.c", 0, ""},
    {"to: <A@B.C>", false, false, 0, NULL, NULL, "A@b.c", 0, ""},
    {"TO:<Postmaster>", false, false, 0, NULL, NULL, "Postmaster", 0, ""},
    {"TO:<@r.example:a@b.c>", false, false, 0, NULL, NULL, "a@b.c", 0, ""},
    {"TO:<>", false, false, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    {"TO:a@b.c", false, false, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    {"TO:<a@b.c>x", false, false, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    {"TO:<a@[1.2.3.999]>", false, false, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    {"FROM:<a@b.c>", false, false, 501, "5.5.4", RCPT_SYN, NULL, 0, NULL},
    {"TO <a@b.c>", false, false, 501, "5.5.4", RCPT_SYN, NULL, 0, NULL},
    {"T", false, false, 501, "5.5.4", RCPT_SYN, NULL, 0, NULL},
    {"TO:<%65a@b.c>", true, false, 501, "5.1.3", "Recipient address too long", NULL, 0, NULL},
    {"TO:<a@%64b.c>", true, false, 501, "5.1.3", "Recipient address too long", NULL, 0, NULL},
    /* RFC 6531 */
    {"TO:<j\xc3\xb6rg@x.y>", false, false, 553, "5.6.7", UTF8_REQ, NULL, 0, NULL},
    {"TO:<j\xc3\xb6rg@x.y>", false, true, 0, NULL, NULL, "j\xc3\xb6rg@x.y", 0, ""},
    {"TO:<j\xed\xa0\x80rg@x.y>", false, false, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    {"TO:<j\xed\xa0\x80rg@x.y>", false, true, 501, "5.1.3", BAD_RCPT, NULL, 0, NULL},
    /* NOTIFY (RFC 3461 §4.1) */
    {"TO:<a@b.c> NOTIFY=NEVER", false, false, 0, NULL, NULL, "a@b.c", SMTP_NOTIFY_NEVER, ""},
    {"TO:<a@b.c> NOTIFY=SUCCESS,FAILURE,DELAY", false, false, 0, NULL, NULL, "a@b.c",
     NOTIFY_S | NOTIFY_F | NOTIFY_D, ""},
    {"TO:<a@b.c> notify=delay,failure", false, false, 0, NULL, NULL, "a@b.c", NOTIFY_F | NOTIFY_D,
     ""},
    {"TO:<a@b.c> NOTIFY=NEVER,SUCCESS", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=FAILURE,NEVER", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=SUCCESS,SUCCESS", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=NEVER,NEVER", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=SUCCESS,", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=,SUCCESS", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=SUCCESS,,DELAY", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=BOGUS", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=SUCCESSFUL", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=DELAY NOTIFY=DELAY", false, false, 555, "5.5.4", NULL, NULL, 0, NULL},
    /* ORCPT (RFC 3461 §4.2, RFC 6533 §3) */
    {"TO:<a@b.c> ORCPT=rfc822;a+40b.c", false, false, 0, NULL, NULL, "a@b.c", 0, "rfc822;a+40b.c"},
    {"TO:<a@b.c> ORCPT=rfc822;a+2btag+40b.c", false, false, 0, NULL, NULL, "a@b.c", 0,
     "rfc822;a+2Btag+40b.c"},
    {"TO:<a@b.c> ORCPT=rfc822;%493x", true, false, 0, NULL, NULL, "a@b.c", 0, "rfc822;%493x"},
    {"TO:<a@b.c> ORCPT=rfc822;%494x", true, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=rfc822", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=;a", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=rfc822;", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=rfc822;a+4", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=rf(c;a", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=utf-8;j\xc3\xb6rg@x.y", false, true, 0, NULL, NULL, "a@b.c", 0,
     "utf-8;j\xc3\xb6rg@x.y"},
    {"TO:<a@b.c> ORCPT=utf-8;j\xc3\xb6rg@x.y", false, false, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=rfc822;j\xc3\xb6rg@x.y", false, true, 501, "5.5.4", NULL, NULL, 0, NULL},
    {"TO:<a@b.c> ORCPT=utf-8;j\xc3rg@x.y", false, true, 501, "5.5.4", NULL, NULL, 0, NULL},
    /* keywords */
    {"TO:<a@b.c> SIZE=1", false, false, 555, "5.5.4", UNSUPP, NULL, 0, NULL},
    {"TO:<a@b.c> FOO", false, false, 555, "5.5.4", UNSUPP, NULL, 0, NULL},
    {"TO:<a@b.c> NOTIFY=NEVER ORCPT=rfc822;x ORCPT=rfc822;y", false, false, 555, "5.5.4", NULL,
     NULL, 0, NULL},
    {"TO:<Postmaster>  orcpt=rfc822;postmaster notify=FAILURE  ", false, false, 0, NULL, NULL,
     "Postmaster", NOTIFY_F, "rfc822;postmaster"},
};

static void test_rcpt_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(rcpt_cases); i++) {
		const struct rcpt_case *tc = &rcpt_cases[i];
		struct smtp_rcpt_args a;
		struct smtp_perr err = {0, NULL, NULL};
		char in[1024], want[1024], to[MAIL_PATH_MAX + 1];
		size_t len = test_input(tc->in, 0, tc->expand, in, sizeof(in));
		int rc = smtp_parse_rcpt(in, len, tc->utf8_ok, &a, &err);

		test_check_err(i, rc, &err, tc->code, tc->enh, tc->text);
		if (rc != 0)
			continue;
		if (mail_addr_format(&a.to, to, sizeof(to)) < 0 || strcmp(to, tc->to) != 0)
			fail_msg("case %zu: to \"%s\"", i, to);
		if (a.notify != tc->notify)
			fail_msg("case %zu: notify %#x", i, a.notify);
		test_input(tc->orcpt, 0, tc->expand, want, sizeof(want));
		if (strcmp(a.orcpt, want) != 0)
			fail_msg("case %zu: orcpt \"%s\"", i, a.orcpt);
	}
}

/* ---- smtp_parse_bdat ---- */

struct bdat_case {
	const char *in;
	uint64_t max;
	int code;
	uint64_t size;
	bool last;
};

static const struct bdat_case bdat_cases[] = {
    {"0", 1000, 0, 0, false},           {"0 LAST", 1000, 0, 0, true},
    {"100 last", 1000, 0, 100, true},   {"100  LaSt", 1000, 0, 100, true},
    {"100 LAST ", 1000, 0, 100, true},  {"100 ", 1000, 0, 100, false},
    {"1000", 1000, 0, 1000, false},     {"18446744073709551615", UINT64_MAX, 0, UINT64_MAX, false},
    {"1001", 1000, 501, 0, false},      {"18446744073709551616", UINT64_MAX, 501, 0, false},
    {"", 1000, 501, 0, false},          {" 1", 1000, 501, 0, false},
    {"abc", 1000, 501, 0, false},       {"-1", 1000, 501, 0, false},
    {"+1", 1000, 501, 0, false},        {"LAST", 1000, 501, 0, false},
    {"100 FIRST", 1000, 501, 0, false}, {"100 LASTX", 1000, 501, 0, false},
    {"100LAST", 1000, 501, 0, false},   {"1 LAST x", 1000, 501, 0, false},
    {"1\tLAST", 1000, 501, 0, false},
};

static void test_bdat_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(bdat_cases); i++) {
		const struct bdat_case *tc = &bdat_cases[i];
		struct smtp_perr err = {0, NULL, NULL};
		uint64_t size = 4242;
		bool last = !tc->last;
		int rc = smtp_parse_bdat(tc->in, strlen(tc->in), tc->max, &size, &last, &err);

		test_check_err(i, rc, &err, tc->code, "5.5.4", "Syntax: BDAT size [LAST]");
		if (rc == 0 && (size != tc->size || last != tc->last))
			fail_msg("case %zu: size %llu last %d", i, (unsigned long long)size, last);
	}
}

/* ---- smtp_parse_helo ---- */

struct helo_case {
	const char *in;
	size_t len;
	bool expand;
	int code;
};

static const struct helo_case helo_cases[] = {
    {"mail.example.com", 0, false, 0},
    {"[192.0.2.1]", 0, false, 0},
    {"[IPv6:2001:db8::1]", 0, false, 0},
    {"junk!#$_~", 0, false, 0},
    {"b\xc3\xbc"
     "cher.example",
     0, false, 0},
    {"%255h", 0, true, 0},
    {"%256h", 0, true, 501},
    {"", 0, false, 501},
    {"a b", 0, false, 501},
    {"a\tb", 0, false, 501},
    {"a\x7f", 0, false, 501},
    {"a\x01", 0, false, 501},
    {"a\0b", 3, false, 501},
    {"b\xc3"
     "cher",
     0, false, 501},
    {"\xed\xa0\x80", 0, false, 501},
    {"\xff", 0, false, 501},
};

static void test_helo_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < N_ELEMENTS(helo_cases); i++) {
		const struct helo_case *tc = &helo_cases[i];
		struct smtp_perr err = {0, NULL, NULL};
		char in[512];
		size_t len = test_input(tc->in, tc->len, tc->expand, in, sizeof(in));
		int rc = smtp_parse_helo(in, len, &err);

		test_check_err(i, rc, &err, tc->code, "5.5.4", "Syntax: EHLO hostname");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_split_table), cmocka_unit_test(test_mail_table),
	    cmocka_unit_test(test_rcpt_table),  cmocka_unit_test(test_bdat_table),
	    cmocka_unit_test(test_helo_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
