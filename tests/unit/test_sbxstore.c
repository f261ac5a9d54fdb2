/* test_sbxstore.c — the sandbox's pure API parsers (obs/sbxquery.c) and
 * its store (obs/sbxstore.c) in a temporary directory: capture, list,
 * search, read flags, deletion, retention (oldest first), tokens. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/buf.h"
#include "obs/sbxquery.h"
#include "obs/sbxstore.h"

static void test_query_parse(void **state)
{
	(void)state;
	struct sbx_query q;
	const char *err = NULL;
	const char *s = "from:alice@example.com  to:\"Bob Smith\" -subject:spam is:unread hello";
	assert_int_equal(sbx_query_parse(s, strlen(s), &q, &err), 0);
	assert_int_equal(q.n, 4);
	assert_int_equal(q.read, 0);
	assert_int_equal(q.terms[0].field, SBX_F_FROM);
	assert_string_equal(q.terms[0].value, "alice@example.com");
	assert_int_equal(q.terms[1].field, SBX_F_TO);
	assert_string_equal(q.terms[1].value, "Bob Smith");
	assert_true(q.terms[2].neg);
	assert_int_equal(q.terms[2].field, SBX_F_SUBJECT);
	assert_int_equal(q.terms[3].field, SBX_F_TEXT);
	s = "IS:READ";
	assert_int_equal(sbx_query_parse(s, strlen(s), &q, &err), 0);
	assert_int_equal(q.read, 1);
	assert_int_equal(q.n, 0);
	/* errors */
	s = "subject:\"open";
	assert_int_equal(sbx_query_parse(s, strlen(s), &q, &err), -1);
	assert_string_equal(err, "unterminated quote");
	s = "a b c d e f g h i";
	assert_int_equal(sbx_query_parse(s, strlen(s), &q, &err), -1);
	char nul[] = {'a', '\0', 'b'};
	assert_int_equal(sbx_query_parse(nul, 3, &q, &err), -1);
	char longq[600];
	memset(longq, 'x', sizeof(longq));
	assert_int_equal(sbx_query_parse(longq, sizeof(longq), &q, &err), -1);
	/* unknown field: free text, whole */
	s = "cc:x";
	assert_int_equal(sbx_query_parse(s, strlen(s), &q, &err), 0);
	assert_int_equal(q.terms[0].field, SBX_F_TEXT);
	assert_string_equal(q.terms[0].value, "cc:x");
}

static void test_term_fts(void **state)
{
	(void)state;
	struct sbx_term t = {.field = SBX_F_SUBJECT};
	char out[600];
	snprintf(t.value, sizeof(t.value), "a \"b\" OR c");
	assert_int_equal(sbx_term_fts(&t, out, sizeof(out)), 0);
	assert_string_equal(out, "{subject} : \"a \"\"b\"\" OR c\"*");
	t.field = SBX_F_TEXT;
	snprintf(t.value, sizeof(t.value), "x");
	assert_int_equal(sbx_term_fts(&t, out, sizeof(out)), 0);
	assert_string_equal(out, "\"x\"*");
	assert_int_equal(sbx_term_fts(&t, out, 3), -1);
}

static void test_body_parse(void **state)
{
	(void)state;
	static struct sbx_body b;
	const char *err = NULL;
	const char *s =
	    "{\"IDs\": [\"abc\", \"D3F\"], \"Read\": true, \"x\": {\"y\": [1, -2.5e3, null]}}";
	assert_int_equal(sbx_body_parse(s, strlen(s), &b, &err), 0);
	assert_int_equal(b.n_ids, 2);
	assert_string_equal(b.ids[1], "D3F");
	assert_int_equal(b.read, 1);
	s = "{\"To\": [\"a@b.c\", \"\\u00e9@x.y\"]}";
	assert_int_equal(sbx_body_parse(s, strlen(s), &b, &err), 0);
	assert_int_equal(b.n_to, 2);
	assert_string_equal(b.to[1], "\xc3\xa9@x.y");
	assert_int_equal(b.read, -1);
	assert_int_equal(sbx_body_parse("", 0, &b, &err), 0);
	static const char *const bad[] = {
	    "{\"IDs\": [\"a/b\"]}", /* not an ID */
	    "{\"IDs\": [\"a\"]",    /* unterminated */
	    "{\"Read\": 1}",        /* not a boolean */
	    "[]",
	    "{\"a\": [[[[[[[[[[1]]]]]]]]]]}", /* too deep */
	    "{\"To\": [\"\\u0000\"]}",
	    "{} x",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sbx_body_parse(bad[i], strlen(bad[i]), &b, &err), -1);
}

static void test_path_parse(void **state)
{
	(void)state;
	struct sbx_path p;
	assert_int_equal(sbx_path_parse("F4wsv0uTaFRe6JLo", &p), 0);
	assert_string_equal(p.id, "F4wsv0uTaFRe6JLo");
	assert_string_equal(p.what, "");
	assert_int_equal(sbx_path_parse("latest/raw", &p), 0);
	assert_string_equal(p.what, "raw");
	assert_int_equal(sbx_path_parse("abc/part/1.2.3", &p), 0);
	assert_string_equal(p.part, "1.2.3");
	assert_int_equal(sbx_path_parse("abc/part/1..2", &p), -1);
	assert_int_equal(sbx_path_parse("abc/part/.1", &p), -1);
	assert_int_equal(sbx_path_parse("abc/part/", &p), -1);
	assert_int_equal(sbx_path_parse("../etc", &p), -1);
	assert_int_equal(sbx_path_parse("abc/other", &p), -1);
	assert_int_equal(sbx_path_parse("", &p), -1);
}

/* ---- the store ---- */

static char dir[64];

static int store_setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/hk-sbxstore-XXXXXX");
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int store_teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void capture(struct sbx_store *s, const char *id, const char *inbox, const char *msg)
{
	FILE *f = tmpfile();
	assert_non_null(f);
	fputs(msg, f);
	fflush(f);
	char *rcpts[] = {"rcpt@remote.test"};
	struct sbx_capture c = {.id = id,
	                        .inbox = inbox,
	                        .created_us = 1700000000000000ULL,
	                        .fd = fileno(f),
	                        .off = 0,
	                        .len = strlen(msg),
	                        .env_from = "env@sender.test",
	                        .rcpts = rcpts,
	                        .nrcpts = 1};
	char err[256];
	assert_int_equal(sbx_store_capture(s, &c, NULL, err, sizeof(err)), 0);
	fclose(f);
}

static void list(struct sbx_store *s, const char *inbox, const char *query, struct buf *out)
{
	struct sbx_query q;
	const char *err;
	buf_reset(out);
	if (query != NULL)
		assert_int_equal(sbx_query_parse(query, strlen(query), &q, &err), 0);
	assert_int_equal(sbx_store_list(s, inbox, query != NULL ? &q : NULL, 0, 50, out), 0);
}

static void test_store(void **state)
{
	(void)state;
	struct sbx_store *s = NULL;
	char err[256];
	assert_int_equal(sbx_store_open(dir, &s, err, sizeof(err)), 0);
	capture(s, "AAAA1", "default",
	        "From: \"Ann, A.\" <ann@example.com>\r\nTo: b@x.test, \"C\" <c@y.test>\r\n"
	        "Subject: Invoice <42>\r\nMessage-ID: <id1@x>\r\n\r\nPlease pay.\r\n");
	capture(s, "AAAA2", "default", "From: dan@example.org\r\nSubject: Lunch\r\n\r\npizza\r\n");
	capture(s, "AAAA3", "proj", "From: eve@example.net\r\nSubject: Other inbox\r\n\r\nx\r\n");
	capture(s, "AAAA1", "default", "From: dup\r\n\r\n"); /* the same ID again: kept once */
	struct buf out;
	buf_init(&out, 1 << 20);
	list(s, "default", NULL, &out);
	const char *j = buf_cstr(&out);
	assert_non_null(strstr(j, "\"total\":2,\"unread\":2,\"count\":2"));
	assert_non_null(
	    strstr(j, "\"From\":{\"Name\":\"Ann, A.\",\"Address\":\"ann@example.com\"}"));
	assert_non_null(strstr(j, "\"To\":[{\"Name\":\"\",\"Address\":\"b@x.test\"},"
	                          "{\"Name\":\"C\",\"Address\":\"c@y.test\"}]"));
	assert_non_null(strstr(j, "\"Subject\":\"Invoice \\u003c42\\u003e\"")); /* escaped */
	assert_non_null(strstr(j, "\"Snippet\":\"Please pay.\""));
	assert_null(strstr(j, "Other inbox"));
	assert_true(strstr(j, "AAAA2") < strstr(j, "AAAA1")); /* newest first */
	list(s, "default", "from:ann", &out);
	assert_non_null(strstr(buf_cstr(&out), "\"messages_count\":1"));
	assert_non_null(strstr(buf_cstr(&out), "AAAA1"));
	list(s, "default", "to:remote.test", &out); /* the envelope recipient */
	assert_non_null(strstr(buf_cstr(&out), "\"messages_count\":2"));
	list(s, "default", "piz", &out); /* prefix */
	assert_non_null(strstr(buf_cstr(&out), "AAAA2"));
	assert_null(strstr(buf_cstr(&out), "AAAA1"));
	list(s, "default", "subject:\"other inbox\"", &out);
	assert_non_null(strstr(buf_cstr(&out), "\"messages_count\":0"));
	/* read flag, get, latest */
	char ids[1][65] = {"AAAA1"};
	assert_int_equal(sbx_store_update(s, "default", ids, 1, NULL, 1), 1);
	assert_int_equal(sbx_store_update(s, "proj", ids, 1, NULL, 1), 0); /* not its inbox */
	list(s, "default", "is:unread", &out);
	assert_non_null(strstr(buf_cstr(&out), "\"messages_count\":1"));
	char id[65];
	assert_int_equal(sbx_store_get(s, "default", "latest", id, NULL), 1);
	assert_string_equal(id, "AAAA2");
	assert_int_equal(sbx_store_get(s, "default", "AAAA3", id, NULL), 0);
	int fd = sbx_store_open_msg(s, "AAAA1");
	assert_true(fd >= 0);
	close(fd);
	/* delete by query, by ID */
	struct sbx_query q;
	const char *qe;
	assert_int_equal(sbx_query_parse("lunch", 5, &q, &qe), 0);
	assert_int_equal(sbx_store_update(s, "default", NULL, 0, &q, -1), 1);
	assert_int_equal(sbx_store_update(s, "default", ids, 1, NULL, -1), 1);
	assert_true(sbx_store_open_msg(s, "AAAA1") < 0);
	list(s, "default", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":0"));
	/* tokens: stable, per inbox */
	unsigned char k1[SBX_TOKEN_KEY_LEN], k2[SBX_TOKEN_KEY_LEN];
	assert_int_equal(sbx_store_token_key(s, k1), 0);
	assert_int_equal(sbx_store_token_key(s, k2), 0);
	assert_memory_equal(k1, k2, sizeof(k1));
	char t1[65], t2[65];
	sbx_token_for(k1, "a", t1);
	sbx_token_for(k1, "b", t2);
	assert_int_equal(strlen(t1), 64);
	assert_string_not_equal(t1, t2);
	buf_free(&out);
	sbx_store_close(&s);
}

static void test_retention(void **state)
{
	(void)state;
	struct sbx_store *s = NULL;
	char err[256];
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/ret", dir);
	assert_int_equal(sbx_store_open(sub, &s, err, sizeof(err)), 0);
	struct sbx_limits lim = {.max_messages = 3};
	sbx_store_set_limits(s, &lim);
	for (int i = 0; i < 6; i++) {
		char id[16];
		snprintf(id, sizeof(id), "R%d", i);
		capture(s, id, i % 2 ? "a" : "b", "Subject: r\r\n\r\nx\r\n");
	}
	struct buf out;
	buf_init(&out, 1 << 20);
	list(s, "a", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":2")); /* R3, R5 */
	assert_null(strstr(buf_cstr(&out), "\"R1\""));
	list(s, "b", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":1")); /* R4 */
	assert_true(sbx_store_open_msg(s, "R0") < 0);
	/* by size: each message is 17 octets */
	lim = (struct sbx_limits){.max_size = 40};
	sbx_store_set_limits(s, &lim);
	capture(s, "R6", "a", "Subject: r\r\n\r\nx\r\n");
	list(s, "a", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":2")); /* R5, R6 */
	list(s, "b", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":0"));
	buf_free(&out);
	sbx_store_close(&s);
}

static void test_retention_age(void **state)
{
	(void)state;
	struct sbx_store *s = NULL;
	char err[256];
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/age", dir);
	assert_int_equal(sbx_store_open(sub, &s, err, sizeof(err)), 0);
	/* capture() dates every message 2023-11-14: a day's limit removes
	 * them all at the next capture's check */
	capture(s, "OLD1", "a", "Subject: old\r\n\r\nx\r\n");
	struct sbx_limits lim = {.max_age_ms = 24ULL * 3600 * 1000};
	sbx_store_set_limits(s, &lim);
	capture(s, "OLD2", "a", "Subject: old\r\n\r\nx\r\n");
	struct buf out;
	buf_init(&out, 1 << 20);
	list(s, "a", NULL, &out);
	assert_non_null(strstr(buf_cstr(&out), "\"total\":0"));
	assert_true(sbx_store_open_msg(s, "OLD1") < 0);
	buf_free(&out);
	sbx_store_close(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_query_parse),
	    cmocka_unit_test(test_term_fts),
	    cmocka_unit_test(test_body_parse),
	    cmocka_unit_test(test_path_parse),
	    cmocka_unit_test_setup_teardown(test_store, store_setup, store_teardown),
	    cmocka_unit_test_setup_teardown(test_retention, store_setup, store_teardown),
	    cmocka_unit_test_setup_teardown(test_retention_age, store_setup, store_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
