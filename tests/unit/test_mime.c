/* test_mime.c — the bounded MIME parser (mail/mime.c): structure and part
 * IDs, transfer decodings, RFC 2047 words, RFC 2231 parameters, charsets,
 * malformed boundaries and the depth and part bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mail/mime.h"

static const char nested[] = "From: a@example.com\r\n"
                             "Subject: nested\r\n"
                             "MIME-Version: 1.0\r\n"
                             "Content-Type: multipart/mixed;\r\n"
                             "\tboundary=\"outer\"\r\n"
                             "\r\n"
                             "preamble, ignored\r\n"
                             "--outer\r\n"
                             "Content-Type: multipart/alternative; boundary=alt\r\n"
                             "\r\n"
                             "--alt\r\n"
                             "Content-Type: text/plain; charset=iso-8859-1\r\n"
                             "Content-Transfer-Encoding: quoted-printable\r\n"
                             "\r\n"
                             "caf=E9 soft=\r\n"
                             "break  \r\n"
                             "--alt\r\n"
                             "Content-Type: multipart/related; boundary=\"rel\"\r\n"
                             "\r\n"
                             "--rel\r\n"
                             "Content-Type: text/html; charset=utf-8\r\n"
                             "Content-Transfer-Encoding: base64\r\n"
                             "\r\n"
                             "PGI+aGk8L2I+PGltZyBzcmM9ImNpZDppbWcxQHgiPg==\r\n"
                             "--rel\r\n"
                             "Content-Type: image/png\r\n"
                             "Content-ID: <img1@x>\r\n"
                             "Content-Transfer-Encoding: base64\r\n"
                             "\r\n"
                             "iVBORw0K\r\n"
                             "--rel--\r\n"
                             "--alt--\r\n"
                             "--outer\r\n"
                             "Content-Type: application/pdf\r\n"
                             "Content-Disposition: attachment;\r\n"
                             " filename*0*=UTF-8''%E2%82%AC%20rep;\r\n"
                             " filename*1=\"ort.pdf\"\r\n"
                             "Content-Transfer-Encoding: base64\r\n"
                             "\r\n"
                             "JVBERi0=\r\n"
                             "--outer--\r\n"
                             "epilogue\r\n";

static void test_nested_structure(void **state)
{
	(void)state;
	struct mime_msg *m = mime_parse(nested, sizeof(nested) - 1);
	const char *ids[] = {"0", "1", "1.1", "1.2", "1.2.1", "1.2.2", "2"};
	const char *types[] = {"multipart/mixed", "multipart/alternative",
	                       "text/plain",      "multipart/related",
	                       "text/html",       "image/png",
	                       "application/pdf"};
	assert_int_equal(m->nparts, 7);
	assert_int_equal(m->warn, 0);
	for (size_t i = 0; i < 7; i++) {
		assert_string_equal(m->parts[i].id, ids[i]);
		assert_string_equal(m->parts[i].type, types[i]);
	}
	assert_int_equal(m->parts[0].nchild, 2);
	assert_int_equal(m->parts[4].depth, 3);
	assert_string_equal(m->parts[5].content_id, "img1@x");
	assert_string_equal(m->parts[6].filename, "\xe2\x82\xac report.pdf");
	assert_int_equal(m->parts[6].disp, MIME_DISP_ATTACHMENT);

	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(mime_part_text(m, &m->parts[2], &b), 0);
	assert_string_equal(buf_cstr(&b), "caf\xc3\xa9 softbreak");
	buf_reset(&b);
	assert_int_equal(mime_part_text(m, mime_part_by_id(m, "1.2.1"), &b), 0);
	assert_string_equal(buf_cstr(&b), "<b>hi</b><img src=\"cid:img1@x\">");
	buf_reset(&b);
	assert_int_equal(mime_part_decode(m, mime_part_by_id(m, "2"), &b), 0);
	assert_memory_equal(b.data, "%PDF-", 5);
	assert_null(mime_part_by_id(m, "3"));
	buf_free(&b);
	mime_msg_free(&m);
	assert_null(m);
}

static void dec_words(const char *in, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(mime_decode_words(in, strlen(in), &b), 0);
	assert_string_equal(buf_cstr(&b), want);
	buf_free(&b);
}

static void test_rfc2047(void **state)
{
	(void)state;
	dec_words("=?utf-8?B?w6l0w6k=?=", "\xc3\xa9t\xc3\xa9");
	dec_words("=?UTF-8?Q?caf=C3=A9_au_lait?=", "caf\xc3\xa9 au lait");
	dec_words("=?iso-8859-1?q?na=EFve?= text", "na\xc3\xafve text");
	/* whitespace between adjacent words is dropped (§6.2) */
	dec_words("=?utf-8?q?a?= \r\n =?utf-8?q?b?=", "ab");
	dec_words("x =?utf-8?q?a?= y", "x a y");
	/* a UTF-8 sequence split over two words */
	dec_words("=?utf-8?B?4oI=?= =?utf-8?B?rA==?=", "\xe2\x82\xac");
	/* RFC 2231 §5 language tag */
	dec_words("=?utf-8*en?q?hi?=", "hi");
	/* not encoded-words: kept */
	dec_words("=?utf-8?x?abc?=", "=?utf-8?x?abc?=");
	dec_words("=?utf-8?q?unterminated", "=?utf-8?q?unterminated");
	/* invalid UTF-8 inside a word becomes U+FFFD */
	dec_words("=?utf-8?q?a=FFb?=", "a\xef\xbf\xbd"
	                               "b");
	/* unknown charset: UTF-8 passes, other octets read as latin1 */
	dec_words("=?x-nonesuch?q?=E9?=", "\xc3\xa9");
	/* raw 8-bit in a header */
	dec_words("caf\xe9", "caf\xc3\xa9");
}

static void param(const char *v, const char *name, int want_rc, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(mime_param_get(v, strlen(v), name, &b), want_rc);
	if (want != NULL)
		assert_string_equal(buf_cstr(&b), want);
	buf_free(&b);
}

static void test_rfc2231_params(void **state)
{
	(void)state;
	param("attachment; filename=\"a \\\"b\\\".txt\"", "filename", 1, "a \"b\".txt");
	param("attachment; filename*=iso-8859-1'fr'caf%E9.txt", "filename", 1, "caf\xc3\xa9.txt");
	param("attachment; filename*1=\"two\"; filename*0=\"one-\"", "filename", 1, "one-two");
	/* extended form wins over the plain one */
	param("attachment; filename=plain.txt; filename*=utf-8''ext.txt", "filename", 1, "ext.txt");
	/* RFC 2047 inside a quoted filename, as mail programs send it */
	param("attachment; filename=\"=?UTF-8?B?w6kudHh0?=\"", "filename", 1, "\xc3\xa9.txt");
	param("text/plain; charset=us-ascii (comment); format=flowed", "format", 1, "flowed");
	param("text/plain; charset=utf-8", "boundary", 0, "");
	/* a gap in the continuations stops there */
	param("a; n*0=x; n*2=z", "n", 1, "x");
	param("a; n*00=x", "n", 0, "");
}

static void test_transfer_decodings(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	const char *qp = "a=3D=\nb =20\nc=zz=";
	assert_int_equal(mime_qp_decode(qp, strlen(qp), &b), 0);
	assert_string_equal(buf_cstr(&b), "a=b  \nc=zz");
	buf_reset(&b);
	const char *b64 = "aGVs\r\nbG8*!\n=aGk";
	assert_int_equal(mime_b64_decode(b64, strlen(b64), &b), 0);
	assert_string_equal(buf_cstr(&b), "hellohi");
	buf_reset(&b);
	/* iconv: windows-1252 euro sign; invalid Shift_JIS lead byte */
	assert_int_equal(mime_to_utf8("windows-1252", "\x80", 1, &b), 0);
	assert_string_equal(buf_cstr(&b), "\xe2\x82\xac");
	buf_reset(&b);
	assert_int_equal(mime_to_utf8("utf-8", "ok\xc0\xaf", 4, &b), 0);
	assert_string_equal(buf_cstr(&b), "ok\xef\xbf\xbd\xef\xbf\xbd");
	buf_reset(&b);
	/* ISO-8859-1 read as windows-1252 (WHATWG), here without iconv; the
	 * label is followed even when the octets look like UTF-8 */
	assert_int_equal(mime_to_utf8("ISO-8859-1", "\x93hi\x94 \xc3\xa9", 7, &b), 0);
	assert_string_equal(buf_cstr(&b), "\xe2\x80\x9chi\xe2\x80\x9d \xc3\x83\xc2\xa9");
	buf_reset(&b);
	/* unknown: UTF-8 passes, the rest is windows-1252 */
	assert_int_equal(mime_to_utf8("x-unknown", "\x80 \xe2\x82\xac", 5, &b), 0);
	assert_string_equal(buf_cstr(&b), "\xe2\x82\xac \xe2\x82\xac");
	buf_reset(&b);
	/* through iconv: KOI8-R */
	assert_int_equal(mime_to_utf8("koi8-r", "\xf0\xd2\xc9", 3, &b), 0);
	assert_string_equal(buf_cstr(&b), "\xd0\x9f\xd1\x80\xd0\xb8");
	buf_reset(&b);
	assert_int_equal(mime_to_utf8("../../etc/passwd", "\xe9", 1, &b), 0);
	assert_string_equal(buf_cstr(&b), "\xc3\xa9");
	buf_free(&b);
}

static void test_malformed_boundaries(void **state)
{
	(void)state;
	/* no close-delimiter; a line that only starts with the boundary;
	 * LF line ends; transport padding after a delimiter */
	const char *msg = "Content-Type: multipart/mixed; boundary=b\n\n"
	                  "--b  \nContent-Type: text/plain\n\none\n--bb not a delimiter\n"
	                  "--b\n\ntwo";
	struct mime_msg *m = mime_parse(msg, strlen(msg));
	assert_int_equal(m->nparts, 3);
	assert_true(m->warn & MIME_W_NO_CLOSE);
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(mime_part_decode(m, &m->parts[1], &b), 0);
	assert_string_equal(buf_cstr(&b), "one\n--bb not a delimiter");
	buf_reset(&b);
	assert_int_equal(mime_part_decode(m, &m->parts[2], &b), 0);
	assert_string_equal(buf_cstr(&b), "two");
	buf_free(&b);
	mime_msg_free(&m);

	/* multipart without a boundary: a leaf */
	const char *nob = "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n";
	m = mime_parse(nob, strlen(nob));
	assert_int_equal(m->nparts, 1);
	assert_true(m->warn & MIME_W_NO_BOUNDARY);
	mime_msg_free(&m);

	/* no header/body separator at all, and an empty input */
	m = mime_parse("Subject: x", 10);
	assert_int_equal(m->nparts, 1);
	assert_true(m->warn & MIME_W_NO_BODY_SEP);
	mime_msg_free(&m);
	m = mime_parse("", 0);
	assert_int_equal(m->nparts, 1);
	assert_string_equal(m->parts[0].type, "text/plain");
	mime_msg_free(&m);
}

static void test_message_rfc822(void **state)
{
	(void)state;
	const char *msg =
	    "Content-Type: multipart/mixed; boundary=o\r\n\r\n"
	    "--o\r\nContent-Type: text/plain\r\n\r\nouter\r\n"
	    "--o\r\nContent-Type: message/rfc822\r\n\r\n"
	    "Subject: inner\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n"
	    "--i\r\nContent-Type: text/plain\r\n\r\nin1\r\n--i\r\nContent-Type: "
	    "text/html\r\n\r\nin2\r\n--i--\r\n"
	    "--o--\r\n";
	struct mime_msg *m = mime_parse(msg, strlen(msg));
	const char *ids[] = {"0", "1", "2", "2.0", "2.1", "2.2"};
	assert_int_equal(m->nparts, 6);
	for (size_t i = 0; i < 6; i++)
		assert_string_equal(m->parts[i].id, ids[i]);
	assert_true(m->parts[2].is_message);
	assert_string_equal(m->parts[3].type, "multipart/alternative");
	assert_string_equal(m->parts[5].type, "text/html");
	mime_msg_free(&m);
}

static char *deep_message(unsigned levels, size_t *len_r)
{
	struct buf b;
	buf_init(&b, 0);
	for (unsigned i = 0; i < levels; i++)
		buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%u\r\n\r\n--b%u\r\n", i,
		           i);
	buf_append_str(&b, "Content-Type: text/plain\r\n\r\nleaf\r\n");
	for (unsigned i = levels; i-- > 0;)
		buf_printf(&b, "--b%u--\r\n", i);
	return (char *)buf_steal(&b, len_r);
}

static void test_depth_bound(void **state)
{
	(void)state;
	size_t len;
	char *raw = deep_message(MIME_MAX_DEPTH, &len);
	struct mime_msg *m = mime_parse(raw, len);
	/* 16 multiparts at depths 0..15 and the leaf at 16: all parsed */
	assert_int_equal(m->nparts, MIME_MAX_DEPTH + 1);
	assert_false(m->warn & MIME_W_DEPTH);
	assert_int_equal(m->parts[m->nparts - 1].depth, MIME_MAX_DEPTH);
	assert_string_equal(m->parts[m->nparts - 1].type, "text/plain");
	mime_msg_free(&m);
	free(raw);

	raw = deep_message(MIME_MAX_DEPTH + 5, &len);
	m = mime_parse(raw, len);
	/* refused at the bound: the multipart at depth 16 stays one leaf */
	assert_int_equal(m->nparts, MIME_MAX_DEPTH + 1);
	assert_true(m->warn & MIME_W_DEPTH);
	assert_false(m->parts[MIME_MAX_DEPTH].is_multipart);
	for (size_t i = 0; i < m->nparts; i++)
		assert_true(m->parts[i].depth <= MIME_MAX_DEPTH);
	mime_msg_free(&m);
	free(raw);
}

static void test_parts_bound(void **state)
{
	(void)state;
	struct buf b;
	size_t len;
	buf_init(&b, 0);
	buf_append_str(&b, "Content-Type: multipart/mixed; boundary=z\r\n\r\n");
	for (unsigned i = 0; i < MIME_MAX_PARTS + 100; i++)
		buf_append_str(&b, "--z\r\n\r\nx\r\n");
	buf_append_str(&b, "--z--\r\n");
	char *raw = (char *)buf_steal(&b, &len);
	struct mime_msg *m = mime_parse(raw, len);
	assert_int_equal(m->nparts, MIME_MAX_PARTS);
	assert_true(m->warn & MIME_W_PARTS);
	assert_string_equal(m->parts[MIME_MAX_PARTS - 1].id, "511");
	mime_msg_free(&m);
	free(raw);
}

static void test_header_unfold(void **state)
{
	(void)state;
	const char *h = "X-A: one\r\n two\r\n\tthree \r\nx-a: second\r\n";
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(mime_hdr_get(h, strlen(h), "X-A", &b), 1);
	assert_string_equal(buf_cstr(&b), "one two\tthree");
	buf_reset(&b);
	assert_int_equal(mime_hdr_get(h, strlen(h), "X-B", &b), 0);
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_nested_structure),     cmocka_unit_test(test_rfc2047),
	    cmocka_unit_test(test_rfc2231_params),       cmocka_unit_test(test_transfer_decodings),
	    cmocka_unit_test(test_malformed_boundaries), cmocka_unit_test(test_message_rfc822),
	    cmocka_unit_test(test_depth_bound),          cmocka_unit_test(test_parts_bound),
	    cmocka_unit_test(test_header_unfold),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
