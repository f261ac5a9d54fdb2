/* bounce_dump.c — writes the bounces of a fixed table of cases to files so
 * that tests/integration/test_bounce_format.py can parse them with Python's
 * email package. A test helper only; no hostile input but its own table.
 *
 *   bounce_dump --list          the case names, one a line
 *   bounce_dump NAME FILE       the bounce for case NAME into FILE
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deliver/bounce.h"
#include "lib/alloc.h"
#include "lib/buf.h"

#define DUMP_T0 1700000000000000ULL /* Tue, 14 Nov 2023 22:13:20 +0000 */

static const char dump_msg[] = "Return-Path: <alice@example.org>\r\n"
                               "From: Alice <alice@example.org>\r\n"
                               "To: Bob <bob@example.net>\r\n"
                               "Subject: lunch on friday\r\n"
                               "Message-ID: <orig-1@example.org>\r\n"
                               "\r\n"
                               "Shall we meet at noon?\r\n"
                               "--\r\n"
                               "Alice\r\n";

static const char dump_msg_nosep[] = "From: Alice <alice@example.org>\r\n"
                                     "Subject: no body at all\r\n";

static const char dump_msg_utf8[] = "From: =?utf-8?q?J=C3=B6rg?= <j\xc3\xb6rg@example.org>\r\n"
                                    "To: <\xe7\x94\xb0\xe4\xb8\xad@example.jp>\r\n"
                                    "Subject: Gr\xc3\xbc\xc3\x9f\x65\r\n"
                                    "\r\n"
                                    "Hallo.\r\n";

static const struct bounce_rcpt dump_one[] = {
    {"bob@example.net", NULL, "5.1.1", "550 5.1.1 <bob@example.net>: User unknown",
     "mx.example.net", DUMP_T0 + 5000000},
};

static const struct bounce_rcpt dump_two[] = {
    {"bob@example.net", "rfc822;bob+2Btag@example.net", "5.1.1",
     "550 5.1.1 x\r\nBcc: victim@evil\r\n\r\nInjected body", "mx.example.net", DUMP_T0 + 5000000},
    {"carol@example.com", "rfc822;carol@example.com", "5.2.2", "552 5.2.2 Mailbox full",
     "mx.example.com", DUMP_T0 + 6000000},
};

static const struct bounce_rcpt dump_delayed[] = {
    {"dave@example.com", NULL, "4.4.1", "Connection timed out", "mx.example.com",
     DUMP_T0 + 3600000000ULL},
};

static const struct bounce_rcpt dump_delivered[] = {
    {"erin@example.com", "rfc822;erin@example.com", "2.0.0", NULL, NULL, DUMP_T0 + 1000000},
};

static const struct bounce_rcpt dump_relayed[] = {
    {"frank@example.com", "rfc822;frank+2Bnews@example.com", "2.0.0",
     "250 2.0.0 Ok: queued as 4711", "mx.example.com", DUMP_T0 + 2000000},
};

static const struct bounce_rcpt dump_utf8[] = {
    {"\xe7\x94\xb0\xe4\xb8\xad+x@example.jp", NULL, "5.1.1",
     "550 5.1.1 \xe5\x8f\x97\xe4\xbf\xa1\xe8\x80\x85\xe3\x81\x8c\xe3\x81\x84\xe3\x81\xbe"
     "\xe3\x81\x9b\xe3\x82\x93",
     "mx.example.jp", DUMP_T0 + 5000000},
};

struct dump_case {
	const char *name;
	enum bounce_kind kind;
	const char *sender;
	const char *envid;
	int full;
	const char *msg; /* NULL: the long generated one */
	size_t msglen;
	const struct bounce_rcpt *rcpts;
	size_t nrcpts;
	int long_diag;
};

#define DUMP_RCPTS(a) a, sizeof(a) / sizeof(a[0])

static const struct dump_case dump_cases[] = {
    {"failed_hdrs", BOUNCE_FAILED, "alice@example.org", NULL, 0, dump_msg, sizeof(dump_msg) - 1,
     DUMP_RCPTS(dump_one), 0},
    {"failed_full", BOUNCE_FAILED, "alice@example.org", "QQ+2B314159", 1, dump_msg,
     sizeof(dump_msg) - 1, DUMP_RCPTS(dump_two), 0},
    {"delayed", BOUNCE_DELAYED, "alice@example.org", NULL, 0, dump_msg, sizeof(dump_msg) - 1,
     DUMP_RCPTS(dump_delayed), 0},
    {"delivered", BOUNCE_DELIVERED, "alice@example.org", "env-7", 0, dump_msg, sizeof(dump_msg) - 1,
     DUMP_RCPTS(dump_delivered), 0},
    {"relayed", BOUNCE_RELAYED, "alice@example.org", "env+2B8", 0, dump_msg, sizeof(dump_msg) - 1,
     DUMP_RCPTS(dump_relayed), 0},
    {"long_diag", BOUNCE_FAILED, "alice@example.org", NULL, 0, dump_msg, sizeof(dump_msg) - 1,
     DUMP_RCPTS(dump_one), 1},
    {"nosep", BOUNCE_FAILED, "alice@example.org", NULL, 0, dump_msg_nosep,
     sizeof(dump_msg_nosep) - 1, DUMP_RCPTS(dump_one), 0},
    {"huge_full", BOUNCE_FAILED, "alice@example.org", NULL, 1, NULL, 0, DUMP_RCPTS(dump_one), 0},
    {"utf8", BOUNCE_FAILED, "j\xc3\xb6rg@example.org", NULL, 0, dump_msg_utf8,
     sizeof(dump_msg_utf8) - 1, DUMP_RCPTS(dump_utf8), 0},
};

/* 11 MiB: a header section, then lines of text; past the RET=FULL cap. */
static char *dump_huge(size_t *len_r)
{
	static const char head[] = "From: Alice <alice@example.org>\r\n"
	                           "Subject: a very large message\r\n"
	                           "\r\n";
	size_t n = (size_t)11 * 1024 * 1024, k = sizeof(head) - 1;
	char *m = xmalloc(n);
	memcpy(m, head, k);
	while (k + 80 <= n) {
		memset(m + k, 'x', 78);
		memcpy(m + k + 78, "\r\n", 2);
		k += 80;
	}
	*len_r = k;
	return m;
}

static char *dump_long_diag(void)
{
	struct buf b;
	buf_init(&b, 0);
	buf_append_str(&b, "550 5.1.1");
	for (int i = 0; i < 300; i++)
		buf_printf(&b, " word%03d", i);
	buf_append_str(&b, " ");
	for (int i = 0; i < 1200; i++)
		buf_append_byte(&b, 'z');
	size_t len;
	return (char *)buf_steal(&b, &len);
}

static int dump_one_case(const struct dump_case *dc, const char *path)
{
	struct bounce_rcpt r[4];
	struct bounce_info bi = {
	    .kind = dc->kind,
	    .reporting_mta = "mail.example.org",
	    .qid = "4F3A2B1C0D",
	    .sender = dc->sender,
	    .envid = dc->envid,
	    .arrival_us = DUMP_T0,
	    .retry_until_us = DUMP_T0 + 5ULL * 86400 * 1000000,
	    .full = dc->full,
	    .msg = (const unsigned char *)dc->msg,
	    .msglen = dc->msglen,
	    .rcpts = r,
	    .nrcpts = dc->nrcpts,
	    .now_us = DUMP_T0 + 7200000000ULL,
	};
	char *huge = NULL, *diag = NULL;
	struct buf out;
	int ret = 0;
	memcpy(r, dc->rcpts, dc->nrcpts * sizeof(r[0]));
	if (dc->msg == NULL) {
		huge = dump_huge(&bi.msglen);
		bi.msg = (const unsigned char *)huge;
	}
	if (dc->long_diag) {
		diag = dump_long_diag();
		r[0].diagnostic = diag;
	}
	buf_init(&out, 0);
	if (bounce_build(&bi, &out) < 0) {
		fprintf(stderr, "bounce_build failed\n");
		ret = -1;
	} else {
		FILE *f = fopen(path, "wb");
		if (f == NULL || fwrite(out.data, 1, out.len, f) != out.len || fclose(f) != 0) {
			perror(path);
			ret = -1;
		}
	}
	buf_free(&out);
	free(huge);
	free(diag);
	return ret;
}

int main(int argc, char **argv)
{
	size_t n = sizeof(dump_cases) / sizeof(dump_cases[0]);
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", dump_cases[i].name);
		return 0;
	}
	if (argc != 3) {
		fprintf(stderr, "usage: bounce_dump --list | bounce_dump NAME FILE\n");
		return 2;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(argv[1], dump_cases[i].name) == 0)
			return dump_one_case(&dump_cases[i], argv[2]) == 0 ? 0 : 1;
	fprintf(stderr, "bounce_dump: no case %s\n", argv[1]);
	return 2;
}
