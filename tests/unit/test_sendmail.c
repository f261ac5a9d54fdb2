/* test_sendmail.c — sendmail's pure parts, table-driven: the command line
 * (opts.c), the message normalization and header scan (hdr.c) and the
 * maildrop format (mail/maildrop.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "lib/buf.h"
#include "mail/maildrop.h"
#include "sendmail/hdr.h"
#include "sendmail/opts.h"

#define ARGV_MAX 12

struct opts_case {
	const char *argv[ARGV_MAX]; /* NULL-terminated, argv[0] included */
	int rc;
	enum sendmail_mode mode;
	enum sendmail_errmode errmode;
	bool extract, ignore_dots;
	const char *sender, *name, *config, *notify;
	size_t nrcpts;
	const char *rcpt0;
};

#define A(...) .argv = {__VA_ARGS__, NULL}
#define DELIVER SENDMAIL_MODE_DELIVER
static const struct opts_case opts_cases[] = {
	/* cron: -t -oi, no recipients */
	{A("sendmail", "-t", "-oi"), .extract = true, .ignore_dots = true},
	/* PHP's mail(): sendmail -t -i */
	{A("sendmail", "-t", "-i"), .extract = true, .ignore_dots = true},
	/* clustered flags */
	{A("sendmail", "-ti"), .extract = true, .ignore_dots = true},
	/* git send-email: -i -f sender recipients */
	{A("sendmail", "-i", "-f", "a@b", "x@y", "z@w"), .ignore_dots = true, .sender = "a@b",
	 .nrcpts = 2, .rcpt0 = "x@y"},
	/* attached arguments */
	{A("sendmail", "-fa@b", "-FJo Doe", "-CFILE", "-Nnever", "r"), .sender = "a@b",
	 .name = "Jo Doe", .config = "FILE", .notify = "never", .nrcpts = 1, .rcpt0 = "r"},
	{A("sendmail", "-r", "s@t", "r"), .sender = "s@t", .nrcpts = 1},
	/* modes */
	{A("sendmail", "-bs"), .mode = SENDMAIL_MODE_SMTP},
	{A("sendmail", "-bp"), .mode = SENDMAIL_MODE_LIST},
	{A("sendmail", "-bi"), .mode = SENDMAIL_MODE_ALIASES},
	{A("sendmail", "-I"), .mode = SENDMAIL_MODE_ALIASES},
	{A("sendmail", "-bs", "-bm"), .mode = DELIVER},
	{A("sendmail", "-q"), .mode = SENDMAIL_MODE_FLUSH},
	{A("sendmail", "-q30m"), .mode = SENDMAIL_MODE_FLUSH},
	{A("sendmail", "-bd"), .rc = -1},
	/* error modes */
	{A("sendmail", "-oem", "r"), .errmode = SENDMAIL_ERR_MAIL, .nrcpts = 1},
	{A("sendmail", "-oee", "r"), .errmode = SENDMAIL_ERR_MAIL, .nrcpts = 1},
	{A("sendmail", "-oeq", "r"), .errmode = SENDMAIL_ERR_QUIET, .nrcpts = 1},
	{A("sendmail", "-oex"), .rc = -1},
	/* Sendmail's -o settings and old flags: ignored */
	{A("sendmail", "-odb", "-oQ/var", "-em", "-v", "-U", "r"), .nrcpts = 1},
	/* "--" ends the options; the first non-option too */
	{A("sendmail", "--", "-t"), .nrcpts = 1, .rcpt0 = "-t"},
	{A("sendmail", "r", "-t"), .nrcpts = 2, .rcpt0 = "r"},
	{A("sendmail", "-"), .nrcpts = 1, .rcpt0 = "-"},
	/* errors */
	{A("sendmail", "-f"), .rc = -1},
	{A("sendmail", "-Z"), .rc = -1},
	{A("sendmail", "-tZ"), .rc = -1},
};

static void test_opts_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(opts_cases) / sizeof(opts_cases[0]); i++) {
		const struct opts_case *c = &opts_cases[i];
		char *argv[ARGV_MAX];
		int argc = 0;
		while (c->argv[argc] != NULL) {
			argv[argc] = (char *)c->argv[argc];
			argc++;
		}
		argv[argc] = NULL;
		struct sendmail_opts o;
		const char *err = NULL;
		int rc = sendmail_opts_parse(argc, argv, 1, &o, &err);
		if (rc != c->rc)
			fail_msg("case %zu: rc %d", i, rc);
		if (rc < 0) {
			assert_non_null(err);
			continue;
		}
		if (o.mode != c->mode || o.errmode != c->errmode || o.extract != c->extract ||
		    o.ignore_dots != c->ignore_dots || o.nrcpts != c->nrcpts)
			fail_msg("case %zu: mode %d errmode %d t %d i %d n %zu", i, o.mode, o.errmode,
				 o.extract, o.ignore_dots, o.nrcpts);
		const char *want[] = {c->sender, c->name, c->config, c->notify};
		const char *got[] = {o.sender, o.name, o.config, o.notify};
		for (size_t k = 0; k < 4; k++) {
			if (want[k] != NULL)
				assert_string_equal(got[k] != NULL ? got[k] : "(null)", want[k]);
		}
		if (c->rcpt0 != NULL)
			assert_string_equal(o.rcpts[0], c->rcpt0);
	}
}

static void normalize(const char *const *pieces, bool ignore_dots, const char *want, int want_rc)
{
	struct buf out;
	buf_init(&out, 0);
	bool bol = true, first = true;
	int rc = 0;
	for (size_t i = 0; pieces[i] != NULL && rc == 0; i++)
		rc = sendmail_msg_normalize(pieces[i], strlen(pieces[i]), ignore_dots, &bol, &first,
					    &out);
	assert_int_equal(rc, want_rc);
	assert_string_equal(buf_cstr(&out), want);
	buf_free(&out);
}

static void test_normalize(void **state)
{
	(void)state;
	normalize((const char *[]){"a\nb\r\nc\rd\n", NULL}, false, "a\r\nb\r\ncd\r\n", 0);
	normalize((const char *[]){"a\n.\nb\n", NULL}, false, "a\r\n", 1);
	normalize((const char *[]){"a\n.\r\nb\n", NULL}, false, "a\r\n", 1);
	normalize((const char *[]){"a\n.\nb\n", NULL}, true, "a\r\n.\r\nb\r\n", 0);
	normalize((const char *[]){"a\n..\n.x\n", NULL}, false, "a\r\n..\r\n.x\r\n", 0);
	/* split reads: the line state carries over */
	normalize((const char *[]){"a\n", ".", "\nb\n", NULL}, false, "a\r\n.\r\nb\r\n", 0);
	normalize((const char *[]){"a\n", ".\n", "b\n", NULL}, false, "a\r\n", 1);
	normalize((const char *[]){"a", "b\n", NULL}, false, "ab\r\n", 0);
	/* an mbox "From " line first is dropped, later kept */
	normalize((const char *[]){"From x Mon\nSubject: s\n\nFrom me\n", NULL}, false,
		  "Subject: s\r\n\r\nFrom me\r\n", 0);
}

struct rcpts {
	char got[512];
};

static void collect(void *arg, const char *addr, size_t len)
{
	struct rcpts *r = arg;
	size_t n = strlen(r->got);
	snprintf(r->got + n, sizeof(r->got) - n, "%s%.*s", n ? "|" : "", (int)len, addr);
}

static void test_addrlist(void **state)
{
	(void)state;
	static const char *const cases[][2] = {
	    {"a@b", "a@b"},
	    {" a@b , c@d ", "a@b|c@d"},
	    {"\"Doe, John\" <j@x>, Jane <jane@y>", "j@x|jane@y"},
	    {"j@x (John, Doe), k@y", "j@x|k@y"},
	    {"group: a@b, c@d;, e@f", "a@b|c@d|e@f"},
	    {"undisclosed-recipients:;", ""},
	    {"<@route,@r2:a@b>", "a@b"},
	    {"\"a b\"@c", "\"a b\"@c"},
	    {"A\r\n B <a@b>,\r\n\tc@d", "a@b|c@d"},
	    {"(unterminated comment a@b", ""},
	    {"<unterminated@angle", ""},
	    {"", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rcpts r = {{0}};
		sendmail_addrlist(cases[i][0], strlen(cases[i][0]), collect, &r);
		if (strcmp(r.got, cases[i][1]) != 0)
			fail_msg("case %zu: \"%s\" gave \"%s\"", i, cases[i][0], r.got);
	}
}

static void test_hdr_scan(void **state)
{
	(void)state;
	const char *msg = "To: a@b,\r\n c@d\r\nBcc: hidden@x\r\nCC: e@f\r\n"
			  "Message-ID: <m@x>\r\nSubject: Bcc: not a field\r\n\r\n"
			  "To: body@x\r\n";
	struct rcpts r = {{0}};
	struct sendmail_hdr h;
	struct buf out;
	buf_init(&out, 0);
	sendmail_hdr_scan(msg, strlen(msg), true, true, collect, &r, &h, &out);
	assert_string_equal(r.got, "a@b|c@d|hidden@x|e@f");
	assert_false(h.has_from);
	assert_false(h.has_date);
	assert_true(h.has_message_id);
	assert_null(strstr(buf_cstr(&out), "hidden"));
	assert_non_null(strstr(buf_cstr(&out), "Subject: Bcc: not a field\r\n\r\nTo: body@x"));
	buf_free(&out);
	/* without -t nothing is collected; a body without a blank line */
	struct rcpts r2 = {{0}};
	buf_init(&out, 0);
	const char *m2 = "From: x@y\r\nDate: now\r\nno colon here\r\nTo: z@w\r\n";
	sendmail_hdr_scan(m2, strlen(m2), false, true, collect, &r2, &h, &out);
	assert_string_equal(r2.got, "");
	assert_true(h.has_from && h.has_date);
	/* the body began without the empty line: it goes in */
	assert_string_equal(buf_cstr(&out),
			    "From: x@y\r\nDate: now\r\n\r\nno colon here\r\nTo: z@w\r\n");
	assert_int_equal(h.header_end, strlen("From: x@y\r\nDate: now\r\n"));
	buf_free(&out);
	/* no header at all */
	buf_init(&out, 0);
	sendmail_hdr_scan("hello world\r\n", 13, false, true, collect, &r2, &h, &out);
	assert_string_equal(buf_cstr(&out), "\r\nhello world\r\n");
	assert_int_equal(h.header_end, 0);
	buf_free(&out);
	/* headers only, and an empty message: nothing added */
	buf_init(&out, 0);
	sendmail_hdr_scan("Subject: s\r\n", 12, false, true, collect, &r2, &h, &out);
	assert_string_equal(buf_cstr(&out), "Subject: s\r\n");
	sendmail_hdr_scan("", 0, false, true, collect, &r2, &h, &out);
	buf_free(&out);
}

static void test_maildrop_roundtrip(void **state)
{
	(void)state;
	struct maildrop_msg m = {.sender = "s@x", .sender_len = 3, .nrcpts = 2,
				 .content = "Subject: x\r\n\r\nhi\r\n", .content_len = 19};
	m.rcpts[0] = "a@b";
	m.rcpt_lens[0] = 3;
	m.rcpts[1] = "c@d";
	m.rcpt_lens[1] = 3;
	struct buf f;
	buf_init(&f, 0);
	maildrop_encode(&m, &f);
	struct maildrop_msg d;
	const char *err = NULL;
	assert_int_equal(maildrop_decode(f.data, f.len, &d, &err), 0);
	assert_int_equal(d.nrcpts, 2);
	assert_memory_equal(d.rcpts[1], "c@d", 3);
	assert_int_equal(d.content_len, 19);
	/* every truncation is refused */
	for (size_t n = 0; n < f.len; n++)
		assert_int_equal(maildrop_decode(f.data, n, &d, &err), -1);
	/* trailing data, a bad address, records out of order */
	buf_append(&f, "x", 1);
	assert_int_equal(maildrop_decode(f.data, f.len, &d, &err), -1);
	buf_free(&f);
	m.rcpts[0] = "a b";
	buf_init(&f, 0);
	maildrop_encode(&m, &f);
	assert_int_equal(maildrop_decode(f.data, f.len, &d, &err), -1);
	buf_free(&f);
	m.rcpts[0] = "a@b";
	m.nrcpts = 0;
	buf_init(&f, 0);
	maildrop_encode(&m, &f);
	assert_int_equal(maildrop_decode(f.data, f.len, &d, &err), -1); /* no recipient */
	buf_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_opts_table),
	    cmocka_unit_test(test_normalize),
	    cmocka_unit_test(test_addrlist),
	    cmocka_unit_test(test_hdr_scan),
	    cmocka_unit_test(test_maildrop_roundtrip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
