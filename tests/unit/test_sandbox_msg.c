/* test_sandbox_msg.c — the sandbox's message inspection
 * (obs/sandbox_msg.c, sandbox_html.c, sandbox_check.c): Mailpit's Message
 * JSON, the summary, parts, the HTML for the iframe and the checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "obs/sandbox_msg.h"

static const char mixed[] =
    "Return-Path: <bounce@example.com>\r\n"
    "From: =?utf-8?Q?Ren=C3=A9e?= <renee@example.com>\r\n"
    "To: \"Bob, Jr.\" <bob@example.org>, carol@example.net (Carol C),\r\n"
    " undisclosed:;\r\n"
    "Cc: Team: dan@example.com, \"Eve\" <eve@example.com>;\r\n"
    "Reply-To: <reply@example.com>\r\n"
    "List-Unsubscribe: <mailto:u@example.com>, <https://example.com/u?a=1>\r\n"
    "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    "Subject: =?iso-8859-1?B?Q2Fm6Q==?= =?utf-8?Q?_=E2=82=AC?=\r\n"
    "Date: Fri, 4 Dec 2026 09:15:30 +0900 (JST)\r\n"
    "Message-ID: <abc.123@example.com>\r\n"
    "Authentication-Results: mx.test; spf=pass smtp.mailfrom=example.com;\r\n"
    " dkim=fail (bad sig) reason=\"body hash\" header.d=example.com header.s=s1;\r\n"
    " dkim/1=pass header.d=other.example; dmarc=pass header.from=example.com;\r\n"
    " arc=none\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=\"o\"\r\n"
    "\r\n"
    "--o\r\n"
    "Content-Type: multipart/alternative; boundary=\"a\"\r\n"
    "\r\n"
    "--a\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "Hello   there,\r\n  see https://shop.example.com/x?a=1. And http://bad host/\r\n"
    "--a\r\n"
    "Content-Type: multipart/related; boundary=\"r\"\r\n"
    "\r\n"
    "--r\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Content-Transfer-Encoding: quoted-printable\r\n"
    "\r\n"
    "<html><head><style>body{background:url(http://track.example/bg.png)}</style></head>\r\n"
    "<body><p>Hi</p><img src=3D\"cid:logo@x\" alt=3D\"logo\">\r\n"
    "<img src=3D\"https://track.example/pixel.gif\" srcset=3D\"http://a/1x.png 1x\">\r\n"
    "<a href=3D\"https://evil.example/login\">https://www.bank.example/</a>\r\n"
    "<a href=3D\"https://www.bank.example/a?x=3D1&amp;y=3D2\">bank.example</a>\r\n"
    "<a href=3D\"javascript:alert(1)\">click</a><div style=3D\"background: "
    "url('https://t.example/a')\"=\r\n"
    " onclick=3D\"x()\">d</div></body></html>\r\n"
    "--r\r\n"
    "Content-Type: image/png\r\n"
    "Content-ID: <logo@x>\r\n"
    "Content-Disposition: inline; filename=logo.png\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "iVBORw0KGgo=\r\n"
    "--r--\r\n"
    "--a--\r\n"
    "--o\r\n"
    "Content-Type: application/octet-stream; name=\"=?utf-8?B?w6kuYmlu?=\"\r\n"
    "Content-Disposition: attachment\r\n"
    "Content-Transfer-Encoding: base64\r\n"
    "\r\n"
    "AAEC\r\n"
    "--o--\r\n";

static char *json_of(const char *raw, size_t len)
{
	struct buf b;
	size_t n;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_json(raw, len, "id-1", 1700000000, &b), 0);
	return (char *)buf_steal(&b, &n);
}

static void has(const char *hay, const char *needle)
{
	if (strstr(hay, needle) == NULL)
		fail_msg("missing %s in %s", needle != NULL ? needle : "", hay != NULL ? hay : "");
}

static void hasnt(const char *hay, const char *needle)
{
	if (strstr(hay, needle) != NULL)
		fail_msg("unexpected %s in %s", needle != NULL ? needle : "",
		         hay != NULL ? hay : "");
}

static void test_message_json(void **state)
{
	(void)state;
	char *j = json_of(mixed, sizeof(mixed) - 1);
	has(j, "{\"ID\":\"id-1\",\"MessageID\":\"abc.123@example.com\"");
	has(j, "\"From\":{\"Name\":\"Ren\xc3\xa9"
	       "e\",\"Address\":\"renee@example.com\"}");
	has(j, "\"To\":[{\"Name\":\"Bob, Jr.\",\"Address\":\"bob@example.org\"},"
	       "{\"Name\":\"Carol C\",\"Address\":\"carol@example.net\"}]");
	has(j, "\"Cc\":[{\"Name\":\"\",\"Address\":\"dan@example.com\"},{\"Name\":\"Eve\","
	       "\"Address\":\"eve@example.com\"}]");
	has(j, "\"Bcc\":[]");
	has(j, "\"ReplyTo\":[{\"Name\":\"\",\"Address\":\"reply@example.com\"}]");
	has(j, "\"ReturnPath\":\"bounce@example.com\"");
	has(j, "\"Subject\":\"Caf\xc3\xa9 \xe2\x82\xac\"");
	has(j, "\"Date\":\"2026-12-04T09:15:30+09:00\"");
	has(j, "\"ListUnsubscribe\":{\"Header\":\"\\u003cmailto:u@example.com\\u003e, "
	       "\\u003chttps://example.com/u?a=1\\u003e\","
	       "\"Links\":[\"mailto:u@example.com\",\"https://example.com/u?a=1\"],\"Errors\":\"\","
	       "\"HeaderPost\":\"List-Unsubscribe=One-Click\"}");
	has(j, "\"Tags\":[]");
	has(j, "\"Text\":\"Hello   there,\\r\\n  see https://shop.example.com/x?a=1.");
	has(j, "\"HTML\":\"\\u003chtml\\u003e");
	has(j, "\"Inline\":[{\"PartID\":\"1.2.2\",\"FileName\":\"logo.png\",\"ContentType\":"
	       "\"image/png\","
	       "\"ContentID\":\"logo@x\",\"Size\":8}]");
	has(j, "\"Attachments\":[{\"PartID\":\"2\",\"FileName\":\"\xc3\xa9.bin\",\"ContentType\":"
	       "\"application/octet-stream\",\"ContentID\":\"\",\"Size\":3}]");
	char size[32];
	snprintf(size, sizeof(size), "\"Size\":%zu,", sizeof(mixed) - 1);
	has(j, size);
	free(j);
}

static void test_hostile_strings(void **state)
{
	(void)state;
	/* </script>, quotes, a NUL and invalid UTF-8 in Subject and From */
	static const char raw[] = "From: \"x</script><script>\" <a\"b@example.com>\r\n"
	                          "Subject: =?utf-8?Q?a=00b=22c=5C</script>=FF?=\r\n"
	                          "Content-Type: text/plain; charset=utf-8\r\n\r\n"
	                          "body\0with NUL \xc3\x28 </script>";
	char *j = json_of(raw, sizeof(raw) - 1);
	hasnt(j, "</script>");
	hasnt(j, "<script>");
	/* a NUL in a header string becomes U+FFFD (the summary is C strings) */
	has(j, "\"Subject\":\"a\xef\xbf\xbd"
	       "b\\\"c\\\\\\u003c/script\\u003e\xef\xbf\xbd\"");
	has(j, "\"Name\":\"x\\u003c/script\\u003e\\u003cscript\\u003e\"");
	has(j, "\"Address\":\"a\\\"b@example.com\"");
	has(j, "\"Text\":\"body\\u0000with NUL \xef\xbf\xbd( \\u003c/script\\u003e\"");
	/* no Date: the received time, in UTC */
	has(j, "\"Date\":\"2023-11-14T22:13:20Z\"");
	free(j);
}

static void test_summary(void **state)
{
	(void)state;
	struct sbx_msg_summary s;
	sbx_msg_summary(mixed, sizeof(mixed) - 1, 1700000000, &s);
	assert_string_equal(s.from.address, "renee@example.com");
	assert_int_equal(s.to.n, 2);
	assert_int_equal(s.cc.n, 2);
	assert_int_equal(s.bcc.n, 0);
	assert_string_equal(s.subject, "Caf\xc3\xa9 \xe2\x82\xac");
	assert_string_equal(s.message_id, "abc.123@example.com");
	assert_string_equal(
	    s.snippet, "Hello there, see https://shop.example.com/x?a=1. And http://bad host/");
	assert_true(s.date_valid);
	assert_int_equal(s.date, 1796343330); /* 2026-12-04T00:15:30Z */
	assert_int_equal(s.date_tz_min, 540);
	assert_int_equal(s.attachments, 1);
	assert_int_equal(s.size, sizeof(mixed) - 1);
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_summary_json(&s, "m1", false, 1700000000, &b), 0);
	has(buf_cstr(&b), "\"Read\":false,\"From\":{\"Name\":\"Ren\xc3\xa9"
	                  "e\"");
	has(buf_cstr(&b), "\"Created\":\"2023-11-14T22:13:20Z\",\"Tags\":[],\"Size\":");
	has(buf_cstr(&b), "\"Attachments\":1,\"Snippet\":\"Hello there,");
	buf_free(&b);
	sbx_msg_summary_clear(&s);

	/* HTML only: the snippet is its text, 250 characters at most */
	struct buf raw;
	buf_init(&raw, 0);
	buf_append_str(
	    &raw,
	    "Content-Type: text/html\r\n\r\n<html><head><title>T</title><style>p{}</style></head>"
	    "<body><p>caf&eacute; &amp; <b>bold</b>&nbsp;&#x41;</p>");
	for (int i = 0; i < 100; i++)
		buf_append_str(&raw, "<i>word</i> ");
	sbx_msg_summary(raw.data, raw.len, 0, &s);
	assert_int_equal(strncmp(s.snippet, "caf&eacute; & bold A word word", 30), 0);
	assert_int_equal(strlen(s.snippet), SBX_SNIPPET_CHARS);
	assert_false(s.date_valid);
	sbx_msg_summary_clear(&s);
	buf_free(&raw);
}

static void test_part(void **state)
{
	(void)state;
	struct buf b;
	char *ct, *fn;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_part(mixed, sizeof(mixed) - 1, "2", &b, &ct, &fn), 0);
	assert_int_equal(b.len, 3);
	assert_memory_equal(b.data, "\x00\x01\x02", 3);
	assert_string_equal(ct, "application/octet-stream");
	assert_string_equal(fn, "\xc3\xa9.bin");
	free(ct);
	free(fn);
	buf_reset(&b);
	assert_int_equal(sbx_msg_part(mixed, sizeof(mixed) - 1, "1.2.2", &b, &ct, &fn), 0);
	assert_memory_equal(b.data, "\x89PNG\r\n\x1a\n", 8);
	free(ct);
	free(fn);
	assert_int_equal(sbx_msg_part(mixed, sizeof(mixed) - 1, "9", &b, &ct, &fn), -1);
	assert_null(ct);
	assert_int_equal(sbx_msg_part(mixed, sizeof(mixed) - 1, "1", &b, &ct, &fn),
	                 -1); /* a multipart */
	buf_free(&b);
}

static void test_html_cid_and_remote(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_html(mixed, sizeof(mixed) - 1, false, &b), 1);
	const char *h = buf_cstr(&b);
	has(h, "<img src=\"data:image/png;base64,iVBORw0KGgo=\" alt=\"logo\">");
	/* remote image, srcset, CSS url() in <style> and style= blocked */
	has(h, "<img src=\"data:,\">");
	hasnt(h, "track.example");
	hasnt(h, "t.example/a");
	hasnt(h, "srcset");
	has(h, "background:url(\"data:,\")");
	has(h, "style=\"background: url(&quot;data:,&quot;)\"");
	hasnt(h, "onclick");
	/* links stay */
	has(h, "<a href=\"https://evil.example/login\">");
	buf_reset(&b);
	assert_int_equal(sbx_msg_html(mixed, sizeof(mixed) - 1, true, &b), 1);
	h = buf_cstr(&b);
	has(h, "<img src=\"https://track.example/pixel.gif\" srcset=");
	has(h, "url(\"http://track.example/bg.png\")");
	has(h, "data:image/png;base64,");
	buf_reset(&b);
	/* no HTML part */
	assert_int_equal(sbx_msg_html("Subject: x\r\n\r\ntext", 19, false, &b), 0);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

static void test_html_evasions(void **state)
{
	(void)state;
	static const char raw[] =
	    "Content-Type: text/html\r\n\r\n"
	    "<img src=\"&#104;ttp://x.example/a\"><img src=ht&#x74;p://y.example/b>"
	    "<img\nSRC = 'htt\tp://z.example/c'><image xlink:href=\"//w.example/d\"/>"
	    "<link rel=stylesheet href=\"https://css.example/s.css\">"
	    "<meta http-equiv=\"refresh\" content=\"0;url=https://r.example/\"><base "
	    "href=\"https://b.example/\">"
	    "<style>@import 'https://i.example/x.css'; "
	    "p{background-image:image-set('https://s.example/i.png' 1x)}</style>"
	    "<img src=\"cid:missing@x\"><img src=\"data:image/gif;base64,R0lG\">"
	    /* markup a browser renders where a naive scanner sees none */
	    "<!--><img src=\"http://c1.example/\">--><!---><img src=http://c5.example/>"
	    "<svg><style><img src=\"http://c2.example/\"></style></svg>"
	    "<noscript><img src=http://c3.example/></noscript><a ping=\"http://c4.example/\" "
	    "href=\"#\">x</a>"
	    "<p style=\"background:\\75rl(http://c6.example/)\">e</p><object "
	    "data=\"data:text/html,&lt;img src=//c7.example&gt;\">"
	    "<iframe srcdoc=\"&lt;img src=http://c8.example/&gt;\"></iframe>";
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_html(raw, sizeof(raw) - 1, false, &b), 1);
	const char *h = buf_cstr(&b);
	const char *gone[] = {
	    "x.example",  "y.example",  "z.example",  "w.example",  "css.example", "b.example",
	    "http-equiv", "cid:",       "c1.example", "c2.example", "c3.example",  "c4.example",
	    "c5.example", "c7.example", "c8.example", "srcdoc"};
	for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
		hasnt(h, gone[i]);
	has(h, "<meta content=\"0;url=https://r.example/\">");
	has(h, "style=\"background:\\5c 75rl(http://c6.example/)\""); /* inert: not url( */
	has(h, "<object data=\"data:,\">");
	has(h, "<base>");
	/* what is left of them in CSS is inert text */
	has(h, "@x-blocked-import 'https://i.example/x.css'");
	has(h, "x-blocked-set('https://s.example/i.png' 1x)");
	has(h, "data:image/gif;base64,R0lG");
	buf_free(&b);
}

static void test_check(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_check(mixed, sizeof(mixed) - 1, &b), 0);
	const char *c = buf_cstr(&b);
	has(c, "\"missingHeaders\":[]");
	has(c, "{\"url\":\"https://evil.example/login\",\"text\":\"https://www.bank.example/"
	       "\",\"source\":\"html\","
	       "\"malformed\":true,\"reason\":\"the text shows www.bank.example but the link goes "
	       "to evil.example\"}");
	has(c, "{\"url\":\"https://www.bank.example/"
	       "a?x=1\\u0026y=2\",\"text\":\"bank.example\",\"source\":\"html\","
	       "\"malformed\":false,\"reason\":null}");
	has(c, "{\"url\":\"javascript:alert(1)\",\"text\":\"click\",\"source\":\"html\","
	       "\"malformed\":true,");
	has(c, "{\"url\":\"https://track.example/"
	       "pixel.gif\",\"text\":\"\",\"source\":\"html\",\"malformed\":false");
	has(c, "{\"url\":\"https://shop.example.com/"
	       "x?a=1\",\"text\":\"\",\"source\":\"text\",\"malformed\":false");
	has(c, "{\"url\":\"http://bad\",\"text\":\"\",\"source\":\"text\",\"malformed\":false");
	hasnt(c, "cid:logo");
	has(c, "\"authResults\":{\"authservId\":\"mx.test\","
	       "\"spf\":[{\"result\":\"pass\",\"reason\":null,\"props\":{\"smtp.mailfrom\":"
	       "\"example.com\"}}],"
	       "\"dkim\":[{\"result\":\"fail\",\"reason\":\"body "
	       "hash\",\"props\":{\"header.d\":\"example.com\","
	       "\"header.s\":\"s1\"}},{\"result\":\"pass\",\"reason\":null,\"props\":{\"header.d\":"
	       "\"other.example\"}}],"
	       "\"dmarc\":[{\"result\":\"pass\",\"reason\":null,\"props\":{\"header.from\":"
	       "\"example.com\"}}],"
	       "\"arc\":[{\"result\":\"none\",\"reason\":null,\"props\":{}}]}");
	buf_reset(&b);

	/* a bare message: missing fields, long lines, no A-R */
	struct buf raw;
	buf_init(&raw, 0);
	buf_append_str(&raw, "Subject: x\r\n\r\n");
	for (int i = 0; i < 1000; i++)
		buf_append_byte(&raw, 'a');
	buf_append_str(&raw, "\r\nshort\r\n");
	for (int i = 0; i < 80; i++)
		buf_append_byte(&raw, 'b');
	buf_append_str(&raw,
	               "\r\nhttp://user@host.example/ mailto:nobody https://ok.example:99999/\r\n");
	assert_int_equal(sbx_msg_check(raw.data, raw.len, &b), 0);
	c = buf_cstr(&b);
	has(c, "\"missingHeaders\":[\"Date\",\"Message-ID\",\"From\"]");
	has(c, "\"maxLineLength\":1000,\"linesOver998\":1,\"linesOver78\":1");
	has(c, "{\"check\":\"line-length\",\"severity\":\"error\"");
	has(c, "{\"check\":\"header\",\"severity\":\"error\",\"text\":\"no Date field (RFC 5322 "
	       "\xc2\xa7"
	       "3.6)\"}");
	has(c, "\"url\":\"http://user@host.example/"
	       "\",\"text\":\"\",\"source\":\"text\",\"malformed\":true");
	has(c, "\"url\":\"mailto:nobody\",\"text\":\"\",\"source\":\"text\",\"malformed\":true");
	has(c, "\"url\":\"https://ok.example:99999/"
	       "\",\"text\":\"\",\"source\":\"text\",\"malformed\":true,\"reason\":\"bad port\"");
	has(c, "\"authResults\":null");
	hasnt(c, "\"check\":\"size\"");
	buf_free(&raw);
	buf_free(&b);
}

/* The spam filter's verdict from the headers its milter added. */
static void spam_is(const char *raw, const char *want)
{
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_check(raw, strlen(raw), &b), 0);
	has(buf_cstr(&b), want);
	buf_free(&b);
}

static void test_spam_score(void **state)
{
	(void)state;
	spam_is("X-Spamd-Result: default: True [17.30 / 15.00];\r\n GTUBE(0.00)[]\r\n\r\nx",
	        "\"spam\":{\"header\":\"X-Spamd-Result\",\"score\":17.30,\"threshold\":15.00,"
	        "\"isSpam\":true}");
	spam_is("X-Spamd-Result: default: False [-0.10 / 15.00]\r\n\r\nx",
	        "\"spam\":{\"header\":\"X-Spamd-Result\",\"score\":-0.10,\"threshold\":15.00,"
	        "\"isSpam\":false}");
	spam_is("X-Spam-Status: Yes, score=7.2 required=5.0 tests=GTUBE\r\n\r\nx",
	        "\"spam\":{\"header\":\"X-Spam-Status\",\"score\":7.20,\"threshold\":5.00,"
	        "\"isSpam\":true}");
	spam_is("X-Spam-Score: 3.5\r\n\r\nx",
	        "\"spam\":{\"header\":\"X-Spam-Score\",\"score\":3.50,\"threshold\":null,"
	        "\"isSpam\":null}");
	spam_is("X-Spam: Yes\r\n\r\nx",
	        "\"spam\":{\"header\":\"X-Spam\",\"score\":null,\"threshold\":null,"
	        "\"isSpam\":true}");
	/* the richer header wins; garbage is no verdict */
	spam_is("X-Spam: Yes\r\nX-Spamd-Result: default: True [9.00 / 8.00]\r\n\r\nx",
	        "\"header\":\"X-Spamd-Result\",\"score\":9.00");
	spam_is("X-Spam-Score: lots\r\nX-Spamd-Result: [\r\n\r\nx", "\"spam\":null");
	spam_is("Subject: plain\r\n\r\nx", "\"spam\":null");
}

/* Found by fuzz_sbx_msg: CFWS after the last resinfo looped for ever. */
static void test_auth_results_edges(void **state)
{
	(void)state;
	static const char raw[] =
	    "Authentication-Results: mx.test 1; spf=pass (ok) smtp.mailfrom=\"a b\"\r\n"
	    " (trailing comment)  \r\n"
	    "Authentication-Results: second; dkim=pass\r\n\r\nbody";
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_check(raw, sizeof(raw) - 1, &b), 0);
	has(buf_cstr(&b),
	    "\"authResults\":{\"authservId\":\"mx.test\",\"spf\":[{\"result\":\"pass\",\"reason\":"
	    "null,"
	    "\"props\":{\"smtp.mailfrom\":\"a b\"}}],\"dkim\":[],\"dmarc\":[],\"arc\":[]}");
	buf_reset(&b);
	static const char none[] = "Authentication-Results: mx.test; none\r\n\r\n";
	assert_int_equal(sbx_msg_check(none, sizeof(none) - 1, &b), 0);
	has(buf_cstr(&b), "\"authResults\":{\"authservId\":\"mx.test\",\"spf\":[],\"dkim\":[],"
	                  "\"dmarc\":[],\"arc\":[]}");
	buf_free(&b);
}

static void test_headers_and_tree(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_headers_json(mixed, sizeof(mixed) - 1, &b), 0);
	const char *h = buf_cstr(&b);
	assert_int_equal(
	    strncmp(h,
	            "{\"Authentication-Results\":[\"mx.test; spf=pass smtp.mailfrom=example.com;",
	            72),
	    0);
	has(h, "\"Message-Id\":[\"\\u003cabc.123@example.com\\u003e\"]");
	has(h, "\"To\":[\"\\\"Bob, Jr.\\\" \\u003cbob@example.org\\u003e, carol@example.net (Carol "
	       "C), undisclosed:;\"]");
	/* sorted: Cc before Content-Type before Date */
	assert_true(strstr(h, "\"Cc\"") < strstr(h, "\"Content-Type\""));
	assert_true(strstr(h, "\"Content-Type\"") < strstr(h, "\"Date\""));
	buf_reset(&b);
	static const char two[] = "received: a\r\nX-ONE: 1\r\nReceived: b\r\n\r\n";
	assert_int_equal(sbx_msg_headers_json(two, sizeof(two) - 1, &b), 0);
	assert_string_equal(buf_cstr(&b), "{\"Received\":[\"a\",\"b\"],\"X-One\":[\"1\"]}");
	buf_reset(&b);
	assert_int_equal(sbx_msg_parts_json(mixed, sizeof(mixed) - 1, &b), 0);
	const char *t = buf_cstr(&b);
	has(t, "{\"Parts\":[{\"PartID\":\"0\",\"Parent\":null,\"Depth\":0,\"Children\":2,"
	       "\"ContentType\":\"multipart/mixed\"");
	has(t, "{\"PartID\":\"1.2.2\",\"Parent\":\"1.2\",\"Depth\":3,\"Children\":0,"
	       "\"ContentType\":\"image/png\","
	       "\"Charset\":\"\",\"Encoding\":\"base64\",\"Disposition\":\"inline\",\"FileName\":"
	       "\"logo.png\","
	       "\"ContentID\":\"logo@x\",\"Size\":8}");
	has(t, "],\"Warnings\":[]}");
	buf_reset(&b);
	static const char bad[] = "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nx";
	assert_int_equal(sbx_msg_parts_json(bad, sizeof(bad) - 1, &b), 0);
	has(buf_cstr(&b), "\"Warnings\":[\"no-close-delimiter\"]}");
	buf_free(&b);
}

static void test_link_text(void **state)
{
	(void)state;
	static const char raw[] =
	    "From: a@b.example\r\nContent-Type: text/html\r\n\r\n"
	    "<a href=\"https://login.bank.example/x\">bank.example</a>"
	    "<a href=\"https://evil.example/x\">paypal.example/login</a>"
	    "<a href=\"https://evil.example/y\">see paypal.example now</a>"
	    "<a href=\"https://bank.example.evil.example/\">bank.example</a>"
	    "<a href=\"http://[::1]:8080/\">x</a><a href=\"http://a..b/\">y</a>";
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_check(raw, sizeof(raw) - 1, &b), 0);
	const char *c = buf_cstr(&b);
	has(c, "\"url\":\"https://login.bank.example/"
	       "x\",\"text\":\"bank.example\",\"source\":\"html\",\"malformed\":false");
	has(c, "\"url\":\"https://evil.example/x\",\"text\":\"paypal.example/"
	       "login\",\"source\":\"html\",\"malformed\":true");
	has(c, "\"url\":\"https://evil.example/y\",\"text\":\"see paypal.example "
	       "now\",\"source\":\"html\",\"malformed\":false");
	has(c, "\"url\":\"https://bank.example.evil.example/"
	       "\",\"text\":\"bank.example\",\"source\":\"html\",\"malformed\":true");
	has(c, "\"url\":\"http://[::1]:8080/"
	       "\",\"text\":\"x\",\"source\":\"html\",\"malformed\":false");
	has(c, "\"url\":\"http://a..b/"
	       "\",\"text\":\"y\",\"source\":\"html\",\"malformed\":true,\"reason\":\"bad host "
	       "name\"");
	/* no Date, no Message-ID: reported, From is there */
	has(c, "\"missingHeaders\":[\"Date\",\"Message-ID\"]");
	buf_reset(&b);
	/* no From at all: an empty address object, as Mailpit */
	assert_int_equal(sbx_msg_json("Subject: x\r\n\r\n", 14, "i", 0, &b), 0);
	has(buf_cstr(&b), "\"From\":{\"Name\":\"\",\"Address\":\"\"}");
	buf_free(&b);
}

/* Found by fuzz_sbx_msg: an empty URL attribute wrote through a NULL
 * buffer. */
static void test_empty_urls(void **state)
{
	(void)state;
	static const char raw[] =
	    "Content-Type: text/html\r\n\r\n<img src=\"\"><a href=''>e</a><a href=>f</a>";
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_html(raw, sizeof(raw) - 1, false, &b), 1);
	has(buf_cstr(&b), "<img src=\"data:,\">");
	buf_reset(&b);
	assert_int_equal(sbx_msg_check(raw, sizeof(raw) - 1, &b), 0);
	has(buf_cstr(&b), "\"links\":[]");
	buf_free(&b);
}

static void test_size_warning(void **state)
{
	(void)state;
	size_t n = SBX_SIZE_WARN + 10;
	char *raw = malloc(n);
	memset(raw, 'x', n);
	memcpy(raw, "Subject: big\r\n\r\n", 16);
	for (size_t i = 100; i < n; i += 76) {
		raw[i] = '\r';
		raw[i + 1] = '\n';
	}
	struct buf b;
	buf_init(&b, 0);
	assert_int_equal(sbx_msg_check(raw, n, &b), 0);
	has(buf_cstr(&b), "{\"check\":\"size\",\"severity\":\"warning\"");
	buf_free(&b);
	free(raw);
}

static void test_out_bound(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 64);
	buf_append_str(&b, "keep");
	assert_int_equal(sbx_msg_json(mixed, sizeof(mixed) - 1, "x", 0, &b), -1);
	assert_string_equal(buf_cstr(&b), "keep");
	assert_int_equal(sbx_msg_check(mixed, sizeof(mixed) - 1, &b), -1);
	assert_string_equal(buf_cstr(&b), "keep");
	buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_message_json),
	    cmocka_unit_test(test_hostile_strings),
	    cmocka_unit_test(test_summary),
	    cmocka_unit_test(test_part),
	    cmocka_unit_test(test_html_cid_and_remote),
	    cmocka_unit_test(test_html_evasions),
	    cmocka_unit_test(test_check),
	    cmocka_unit_test(test_spam_score),
	    cmocka_unit_test(test_auth_results_edges),
	    cmocka_unit_test(test_headers_and_tree),
	    cmocka_unit_test(test_link_text),
	    cmocka_unit_test(test_empty_urls),
	    cmocka_unit_test(test_size_warning),
	    cmocka_unit_test(test_out_bound),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
