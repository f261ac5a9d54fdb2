/* fuzz_cmdline.c — libFuzzer target for the SMTP command-line parsers
 * (src/smtpd/parse.c): splits the input as a command line, then feeds the
 * argument to every argument parser (MAIL, RCPT with and without SMTPUTF8,
 * BDAT, EHLO) whatever the verb, and checks the error contract. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd/parse.h"

static void fuzz_check(int cond)
{
	if (!cond)
		abort();
}

static void fuzz_check_err(int rc, const struct smtp_perr *err)
{
	fuzz_check(rc == 0 || rc == -1);
	if (rc == 0)
		return;
	fuzz_check(err->code >= 500 && err->code <= 555);
	fuzz_check(err->enh != NULL && err->enh[0] == '5' && err->text != NULL &&
	           err->text[0] != '\0');
}

static void fuzz_args(const char *a, size_t len)
{
	struct smtp_mail_args m;
	struct smtp_rcpt_args r;
	struct smtp_perr err;
	uint64_t size;
	bool last;
	int rc;

	rc = smtp_parse_mail(a, len, &m, &err);
	fuzz_check_err(rc, &err);
	if (rc == 0) {
		fuzz_check(!m.from.is_utf8 || m.smtputf8);
		fuzz_check(strlen(m.envid) <= SMTP_ENVID_MAX);
	}
	for (int utf8 = 0; utf8 <= 1; utf8++) {
		rc = smtp_parse_rcpt(a, len, utf8 != 0, &r, &err);
		fuzz_check_err(rc, &err);
		if (rc == 0) {
			fuzz_check(!r.to.is_null && (!r.to.is_utf8 || utf8 != 0));
			fuzz_check(r.notify == 0 || r.notify == SMTP_NOTIFY_NEVER ||
			           (r.notify & SMTP_NOTIFY_NEVER) == 0);
			fuzz_check(strlen(r.orcpt) <= SMTP_ORCPT_MAX);
		}
	}
	rc = smtp_parse_bdat(a, len, 1000000, &size, &last, &err);
	fuzz_check_err(rc, &err);
	fuzz_check(rc != 0 || size <= 1000000);
	rc = smtp_parse_helo(a, len, &err);
	fuzz_check_err(rc, &err);
	fuzz_check(rc != 0 || (len > 0 && len <= 255 && memchr(a, ' ', len) == NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_cmdline cl;
	struct smtp_perr err;
	int rc;

	rc = smtp_cmdline_split(line, size, &cl, &err);
	fuzz_check_err(rc, &err);
	if (rc == 0) {
		fuzz_check(cl.verb == line && cl.verb_len >= 1 && cl.verb_len <= 16);
		fuzz_check(cl.args >= line + cl.verb_len && cl.args + cl.args_len <= line + size);
		fuzz_check(cl.args_len == 0 ||
		           (cl.args[0] != ' ' && cl.args[cl.args_len - 1] != ' '));
		fuzz_args(cl.args, cl.args_len);
	} else {
		/* the argument parsers must cope with anything, NULs included */
		fuzz_args(line, size);
	}
	return 0;
}
