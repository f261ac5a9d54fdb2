/* sbx_bench.c — the cost of the sandbox's message inspection per input
 * octet (obs/sandbox_msg.c over mail/mime.c), on typical and hostile
 * shapes at growing sizes, to show that the work stays linear. Not a timed
 * test: run it by hand, `build/tests/sbx_bench`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "obs/sandbox_msg.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(struct buf *b, size_t size, const char *unit)
{
	while (b->len < size)
		buf_append_str(b, unit);
}

/* text + html + a base64 attachment */
static void shape_typical(struct buf *b, size_t size)
{
	buf_append_str(b,
	               "From: a@example.com\r\nTo: b@example.com\r\nSubject: =?utf-8?q?hi?=\r\n"
	               "Date: Fri, 4 Dec 2026 09:15:30 +0000\r\nMessage-ID: <x@y>\r\n"
	               "Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\n"
	               "Content-Type: multipart/alternative; boundary=a\r\n\r\n--a\r\n"
	               "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
	               "quoted-printable\r\n\r\n");
	fill(b, size / 4, "caf=E9 see https://example.com/page and more text here=\r\n");
	buf_append_str(b, "\r\n--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n");
	fill(b, size / 2,
	     "<p style=\"color:red\">Hi <a href=\"https://example.com/x\">example.com</a><img "
	     "src=\"cid:i\"></p>\r\n");
	buf_append_str(b, "\r\n--a--\r\n--o\r\nContent-Type: image/png\r\nContent-ID: <i>\r\n"
	                  "Content-Transfer-Encoding: base64\r\n\r\n");
	fill(b, size - 40,
	     "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+"
	     "M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\r\n");
	buf_append_str(b, "\r\n--o--\r\n");
}

/* 16 nested multiparts around one large leaf: 16 boundary scans */
static void shape_deep(struct buf *b, size_t size)
{
	for (int i = 0; i < 16; i++)
		buf_printf(b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i);
	buf_append_str(b, "Content-Type: text/plain\r\n\r\n");
	fill(b, size, "--b1x not a delimiter, but it starts like one\r\n");
}

/* thousands of tiny parts (only 512 kept) */
static void shape_parts(struct buf *b, size_t size)
{
	buf_append_str(b, "Content-Type: multipart/mixed; boundary=z\r\n\r\n");
	fill(b, size,
	     "--z\r\nContent-Type: text/plain; name*0*=utf-8''%C3%A9; name*1=x\r\n\r\nx\r\n");
}

/* HTML that is nothing but tags, cid: references and links */
static void shape_html(struct buf *b, size_t size)
{
	buf_append_str(b, "Content-Type: multipart/related; boundary=r\r\n\r\n--r\r\nContent-Type: "
	                  "text/html\r\n\r\n");
	fill(b, size,
	     "<img src=\"cid:nope\"><a href=\"http://a.example/\">http://b.example/</a><!-- c "
	     "--><style>x{background:url(http://t/)}</style>");
	buf_append_str(
	    b, "\r\n--r\r\nContent-Type: image/gif\r\nContent-ID: <i>\r\n\r\nGIF89a\r\n--r--\r\n");
}

/* encoded-words and a folded header of many addresses */
static void shape_headers(struct buf *b, size_t size)
{
	buf_append_str(b, "To: ");
	fill(b, size / 2, "\"=?utf-8?q?N=C3=A9?=\" <a@example.com>,\r\n ");
	buf_append_str(b, "a@b\r\nSubject: ");
	fill(b, size, "=?iso-8859-1?q?=E9?= =?x?b?AAAA?= =?");
	buf_append_str(b, "\r\n\r\nbody\r\n");
}

int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(struct buf *, size_t);
	} shapes[] = {{"typical", shape_typical},
	              {"deep", shape_deep},
	              {"parts", shape_parts},
	              {"html", shape_html},
	              {"headers", shape_headers}};
	printf("%-8s %9s %10s %10s %10s %10s  (ns per input octet)\n", "shape", "size", "json",
	       "summary", "html", "check");
	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		for (size_t size = 1u << 20; size <= 16u << 20; size <<= 2) {
			struct buf in, out;
			struct sbx_msg_summary sum;
			double t[4];
			buf_init(&in, 0);
			buf_init(&out, 0);
			shapes[s].fn(&in, size);
			double t0 = now();
			sbx_msg_json(in.data, in.len, "x", 0, &out);
			t[0] = now() - t0;
			t0 = now();
			sbx_msg_summary(in.data, in.len, 0, &sum);
			t[1] = now() - t0;
			sbx_msg_summary_clear(&sum);
			buf_reset(&out);
			t0 = now();
			sbx_msg_html(in.data, in.len, false, &out);
			t[2] = now() - t0;
			buf_reset(&out);
			t0 = now();
			sbx_msg_check(in.data, in.len, &out);
			t[3] = now() - t0;
			printf("%-8s %9zu %10.1f %10.1f %10.1f %10.1f\n", shapes[s].name, in.len,
			       t[0] * 1e9 / (double)in.len, t[1] * 1e9 / (double)in.len,
			       t[2] * 1e9 / (double)in.len, t[3] * 1e9 / (double)in.len);
			fflush(stdout);
			buf_free(&in);
			buf_free(&out);
		}
	}
	return 0;
}
