/* test_dmarcrep.c — unit tests for the DMARC aggregate report data
 * (dauth/dmarcrep.c, dauth/dmarcrep_report.c): the record codec and what
 * it refuses, the day file reader over torn and damaged files, the writer
 * (repair of a torn tail, the day's size cap), aggregation into rows with
 * counts, the XML writer's escaping, gzip, the rua !size limit, the
 * message and its file name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dauth/dmarc.h"
#include "dauth/dmarcrep.h"
#include "dauth/dmarcrep_report.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static void sample(struct dmarcrep_rec *r)
{
	memset(r, 0, sizeof(*r));
	r->time = 1796342400; /* 2026-12-04 */
	snprintf(r->policy_domain, sizeof(r->policy_domain), "example.com");
	r->p = DMARC_P_REJECT;
	r->sp = DMARC_P_QUARANTINE;
	r->pct = 50;
	r->adkim_strict = true;
	r->nrua = 2;
	snprintf(r->rua[0], sizeof(r->rua[0]), "mailto:a@example.com");
	snprintf(r->rua[1], sizeof(r->rua[1]), "mailto:b@reports.example");
	r->rua_max[1] = 10 << 20;
	snprintf(r->source_ip, sizeof(r->source_ip), "192.0.2.7");
	r->disposition = DMARC_DISP_QUARANTINE;
	r->spf_aligned = true;
	r->reason = DMARCREP_REASON_SAMPLED_OUT;
	snprintf(r->header_from, sizeof(r->header_from), "example.com");
	snprintf(r->env_from, sizeof(r->env_from), "bounce.example.com");
	snprintf(r->env_to, sizeof(r->env_to), "example.net");
	r->ndkim = 2;
	snprintf(r->dkim[0].domain, sizeof(r->dkim[0].domain), "example.com");
	snprintf(r->dkim[0].selector, sizeof(r->dkim[0].selector), "s1");
	r->dkim[0].result = DMARCREP_DKIM_FAIL;
	snprintf(r->dkim[1].domain, sizeof(r->dkim[1].domain), "esp.example");
	r->dkim[1].result = DMARCREP_DKIM_PASS;
	snprintf(r->spf_domain, sizeof(r->spf_domain), "bounce.example.com");
	r->spf_result = DMARCREP_SPF_PASS;
}

static void test_codec_round_trip(void **state)
{
	(void)state;
	struct dmarcrep_rec r, back;
	const char *error = NULL;
	struct buf b;
	buf_init(&b, DMARCREP_BODY_MAX);
	sample(&r);
	assert_int_equal(dmarcrep_rec_encode(&r, &b), 0);
	assert_int_equal(dmarcrep_rec_decode(b.data, b.len, &back, &error), 0);
	assert_memory_equal(&r, &back, sizeof(r)); /* both zeroed before filling */
	buf_free(&b);
}

/* Bodies the queue must refuse (smtpd may be taken over). */
static void test_codec_refuses(void **state)
{
	(void)state;
	struct dmarcrep_rec r, back;
	const char *error = NULL;
	struct buf b;
	buf_init(&b, 0);
	/* a source_ip that is not an address */
	sample(&r);
	snprintf(r.source_ip, sizeof(r.source_ip), "192.0.2.300");
	dmarcrep_rec_encode(&r, &b);
	assert_int_equal(dmarcrep_rec_decode(b.data, b.len, &back, &error), -1);
	/* a domain with a space (it would go into XML and a file name) */
	buf_reset(&b);
	sample(&r);
	snprintf(r.header_from, sizeof(r.header_from), "a b.example");
	dmarcrep_rec_encode(&r, &b);
	assert_int_equal(dmarcrep_rec_decode(b.data, b.len, &back, &error), -1);
	/* a required field missing: an empty policy domain */
	buf_reset(&b);
	sample(&r);
	r.policy_domain[0] = '\0';
	dmarcrep_rec_encode(&r, &b);
	assert_int_equal(dmarcrep_rec_decode(b.data, b.len, &back, &error), -1);
	/* out of range values, unknown, repeated and truncated fields */
	buf_reset(&b);
	sample(&r);
	dmarcrep_rec_encode(&r, &b);
	static const unsigned char bad_pct[] = {5, 0, 1, 101};
	static const unsigned char unknown[] = {99, 0, 0};
	static const unsigned char again[] = {3, 0, 1, 0};
	struct buf x;
	buf_init(&x, 0);
	const unsigned char *extra[] = {bad_pct, unknown, again};
	size_t extra_len[] = {sizeof(bad_pct), sizeof(unknown), sizeof(again)};
	for (size_t i = 0; i < 3; i++) {
		buf_reset(&x);
		buf_append(&x, b.data, b.len);
		buf_append(&x, extra[i], extra_len[i]);
		assert_int_equal(dmarcrep_rec_decode(x.data, x.len, &back, &error), -1);
	}
	for (size_t cut = 1; cut < b.len; cut += 7) {
		int rc = dmarcrep_rec_decode(b.data, b.len - cut, &back, &error);
		(void)rc; /* may decode when cut at a field boundary after all required */
	}
	assert_int_equal(dmarcrep_rec_decode(b.data, 2, &back, &error), -1);
	buf_free(&x);
	buf_free(&b);
}

static int count_cb(const struct dmarcrep_rec *r, void *arg)
{
	(void)r;
	(*(size_t *)arg)++;
	return 0;
}

static void day_bytes(struct buf *out, size_t n)
{
	struct dmarcrep_rec r;
	struct buf body;
	buf_init(&body, 0);
	sample(&r);
	for (size_t i = 0; i < n; i++) {
		buf_reset(&body);
		r.disposition = (uint8_t)(i % 2);
		dmarcrep_rec_encode(&r, &body);
		assert_int_equal(dmarcrep_frame(body.data, body.len, out), 0);
	}
	buf_free(&body);
}

static void test_day_torn_and_damaged(void **state)
{
	(void)state;
	struct buf d;
	buf_init(&d, 0);
	day_bytes(&d, 3);
	size_t whole = d.len, one = whole / 3, n = 0;
	struct dmarcrep_scan st;
	dmarcrep_day_parse(d.data, d.len, count_cb, &n, &st);
	assert_int_equal(n, 3);
	assert_int_equal(st.bad, 0);
	assert_int_equal(st.valid_end, whole);
	/* a torn tail: half a record */
	buf_append(&d, d.data, one / 2);
	n = 0;
	dmarcrep_day_parse(d.data, d.len, count_cb, &n, &st);
	assert_int_equal(n, 3);
	assert_int_equal(st.bad, 1);
	assert_int_equal(st.bad_octets, one / 2);
	assert_int_equal(st.valid_end, whole);
	/* damage in the middle: the second record's CRC; the third is found again */
	d.len = whole;
	d.data[one + one / 2] ^= 0x40;
	n = 0;
	dmarcrep_day_parse(d.data, d.len, count_cb, &n, &st);
	assert_int_equal(n, 2);
	assert_int_equal(st.bad, 1);
	assert_int_equal(st.valid_end, whole);
	buf_free(&d);
}

static void test_writer_repairs_and_caps(void **state)
{
	(void)state;
	char dir[] = "/tmp/hk-dmarcrep-XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct dmarcrep_rec r;
	struct buf body;
	buf_init(&body, 0);
	sample(&r);
	dmarcrep_rec_encode(&r, &body);
	const char *error = NULL;
	time_t now = 1796342400 + 3600;
	struct dmarcrep_writer *w = dmarcrep_writer_create(dir, 64 * 1024);
	for (int i = 0; i < 2; i++)
		assert_int_equal(dmarcrep_writer_append(w, body.data, body.len, now, &error), 0);
	/* a body that does not decode is refused */
	assert_int_equal(dmarcrep_writer_append(w, body.data, 5, now, &error), -1);
	dmarcrep_writer_free(&w);
	char path[256];
	snprintf(path, sizeof(path), "%s/dmarc/20261204", dir);
	struct stat sb;
	assert_int_equal(stat(path, &sb), 0);
	off_t good = sb.st_size;
	assert_int_equal(good, 2 * (off_t)(body.len + DMARCREP_FRAME_OVERHEAD));
	/* a torn tail, as a crash in a write leaves it */
	int fd = open(path, O_WRONLY | O_APPEND);
	assert_true(write(fd, "DMR1\0\0", 6) == 6);
	close(fd);
	/* a new writer cuts it, then appends; the day is full at the cap */
	size_t frame = body.len + DMARCREP_FRAME_OVERHEAD;
	w = dmarcrep_writer_create(dir, (uint64_t)good + frame + frame / 2);
	assert_int_equal(dmarcrep_writer_append(w, body.data, body.len, now, &error), 0);
	assert_int_equal(dmarcrep_writer_append(w, body.data, body.len, now, &error), 1);
	dmarcrep_writer_free(&w);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_size, good + (off_t)frame);
	size_t n = 0;
	struct dmarcrep_scan st;
	assert_int_equal(dmarcrep_day_read(dir, "20261204", 1 << 20, count_cb, &n, &st, &error), 0);
	assert_int_equal(n, 3);
	assert_int_equal(st.bad, 0);
	assert_int_equal(dmarcrep_day_read(dir, "20261205", 1 << 20, count_cb, &n, &st, &error), 1);
	unlink(path);
	snprintf(path, sizeof(path), "%s/dmarc", dir);
	rmdir(path);
	rmdir(dir);
	buf_free(&body);
}

static void test_day_names(void **state)
{
	(void)state;
	time_t b, e;
	char name[9];
	assert_int_equal(dmarcrep_day_range("20261204", &b, &e), 0);
	assert_int_equal(b, 1796342400);
	assert_int_equal(e - b, 86400);
	dmarcrep_day_name(b + 86399, name);
	assert_string_equal(name, "20261204");
	assert_int_equal(dmarcrep_day_range("20260231", &b, &e), -1);
	assert_int_equal(dmarcrep_day_range("2026124", &b, &e), -1);
	assert_int_equal(dmarcrep_day_range("2026120x", &b, &e), -1);
}

static void test_xml_escape(void **state)
{
	(void)state;
	struct buf b;
	buf_init(&b, 0);
	dmarcrep_xml_escape(&b, "a&b<c>\"d'\x01\xc3\xa9");
	assert_string_equal(buf_cstr(&b), "a&amp;b&lt;c&gt;&quot;d&apos;???");
	buf_free(&b);
}

/* Two equal records are one row with count 2; the other disposition is
 * its own row; hostile text is escaped; IPv6 is written in full. */
static void test_aggregate_and_xml(void **state)
{
	(void)state;
	struct dmarcrep_rec r;
	struct buf body, day, xml, gz;
	buf_init(&body, 0);
	buf_init(&day, 0);
	buf_init(&xml, 0);
	buf_init(&gz, 0);
	sample(&r);
	snprintf(r.header_from, sizeof(r.header_from), "ex<am>&ple.com");
	for (int i = 0; i < 3; i++) {
		buf_reset(&body);
		r.disposition = i == 2 ? DMARC_DISP_REJECT : DMARC_DISP_NONE;
		r.time += 10; /* the time does not split rows */
		dmarcrep_rec_encode(&r, &body);
		dmarcrep_frame(body.data, body.len, &day);
	}
	buf_reset(&body);
	snprintf(r.source_ip, sizeof(r.source_ip), "2001:db8::1");
	snprintf(r.policy_domain, sizeof(r.policy_domain), "other.example");
	dmarcrep_rec_encode(&r, &body);
	dmarcrep_frame(body.data, body.len, &day);
	struct dmarcrep_day d;
	dmarcrep_day_aggregate("20261204", day.data, day.len, &d);
	assert_int_equal(d.scan.records, 4);
	assert_int_equal(d.ngroups, 2);
	const struct dmarcrep_group *g = &d.groups[0];
	if (strcmp(g->policy.policy_domain, "example.com") != 0)
		g = &d.groups[1];
	assert_string_equal(g->policy.policy_domain, "example.com");
	assert_int_equal(g->messages, 3);
	assert_int_equal(g->nrows, 2);
	assert_int_equal(g->rows[0].count + g->rows[1].count, 3);
	assert_true(g->rows[0].count == 2 || g->rows[1].count == 2);
	assert_int_equal(strncmp(g->report_id, "20261204.", 9), 0);
	struct dmarcrep_meta m = {
	    .org_name = "O & Co", .email = "r@mx.example", .submitter = "mx.example"};
	dmarcrep_xml(&m, &d, g, &xml);
	const char *x = buf_cstr(&xml);
	assert_non_null(strstr(x, "<org_name>O &amp; Co</org_name>"));
	assert_non_null(strstr(x, "<header_from>ex&lt;am&gt;&amp;ple.com</header_from>"));
	assert_non_null(strstr(x, "<count>2</count>"));
	assert_non_null(strstr(x, "<p>reject</p>"));
	assert_non_null(strstr(x, "<sp>quarantine</sp>"));
	assert_non_null(strstr(x, "<pct>50</pct>"));
	assert_non_null(strstr(x, "<adkim>s</adkim>"));
	assert_non_null(strstr(x, "<type>sampled_out</type>"));
	assert_non_null(strstr(x, "<selector>s1</selector>"));
	assert_non_null(strstr(x, "<begin>1796342400</begin>"));
	assert_non_null(strstr(x, "<end>1796428799</end>"));
	assert_null(strstr(x, "ex<am"));
	/* the other report: the full IPv6 form the schema's pattern wants */
	const struct dmarcrep_group *o = g == &d.groups[0] ? &d.groups[1] : &d.groups[0];
	buf_reset(&xml);
	dmarcrep_xml(&m, &d, o, &xml);
	assert_non_null(strstr(buf_cstr(&xml), "<source_ip>2001:db8:0:0:0:0:0:1</source_ip>"));
	/* gzip: gunzip gives the XML back */
	assert_int_equal(dmarcrep_gzip(xml.data, xml.len, &gz), 0);
	assert_int_equal(gz.data[0], 0x1f);
	assert_int_equal(gz.data[1], 0x8b);
	unsigned char *back = malloc(xml.len + 16);
	z_stream z = {0};
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = gz.data;
	z.avail_in = (uInt)gz.len;
	z.next_out = back;
	z.avail_out = (uInt)xml.len + 16;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, xml.len);
	assert_memory_equal(back, xml.data, xml.len);
	inflateEnd(&z);
	free(back);
	/* the message: §7.2.1.1 Subject and file name */
	char fname[256];
	dmarcrep_filename(&m, &d, g, fname, sizeof(fname));
	assert_string_equal(fname, "mx.example!example.com!1796342400!1796428799.xml.gz");
	struct buf msg;
	buf_init(&msg, 0);
	const char *rcpts[] = {"a@example.com"};
	dmarcrep_mime(&m, &d, g, rcpts, 1, gz.data, gz.len, 1796428800, &msg);
	char subj[200];
	snprintf(subj, sizeof(subj),
	         "Subject: Report Domain: example.com Submitter: mx.example Report-ID: <%s>\r\n",
	         g->report_id);
	assert_non_null(strstr(buf_cstr(&msg), subj));
	assert_non_null(
	    strstr(buf_cstr(&msg), "Content-Type: application/gzip; name=\"mx.example!"));
	assert_non_null(strstr(buf_cstr(&msg), "To: <a@example.com>\r\n"));
	buf_free(&msg);
	dmarcrep_day_clear(&d);
	buf_free(&gz);
	buf_free(&xml);
	buf_free(&day);
	buf_free(&body);
}

static void test_rua(void **state)
{
	(void)state;
	struct dmarc_record r;
	const char *error = NULL;
	const char *txt = "v=DMARC1; p=none; rua=mailto:a@x.example!10m,mailto:b@y.example!1k, "
	                  "mailto:c@z.example,mailto:d@w.example!x";
	assert_int_equal(dmarc_record_parse(txt, strlen(txt), &r, &error), 0);
	assert_int_equal(r.nrua, 4);
	assert_string_equal(r.rua[0], "mailto:a@x.example");
	assert_true(r.rua_max[0] == 10ULL << 20);
	assert_true(r.rua_max[1] == 1024);
	assert_true(r.rua_max[2] == 0);
	assert_true(r.rua_max[3] == 0);
	char addr[256];
	assert_int_equal(dmarcrep_rua_address("mailto:a@x.example", addr, sizeof(addr)), 0);
	assert_string_equal(addr, "a@x.example");
	assert_int_equal(dmarcrep_rua_address("mailto:a%40b@x.example", addr, sizeof(addr)), -1);
	assert_int_equal(dmarcrep_rua_address("mailto:a@x.example?subject=x", addr, sizeof(addr)),
	                 -1);
	assert_int_equal(dmarcrep_rua_address("mailto:@x.example", addr, sizeof(addr)), -1);
	assert_int_equal(dmarcrep_rua_address("https://x.example/", addr, sizeof(addr)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_codec_round_trip),
	    cmocka_unit_test(test_codec_refuses),
	    cmocka_unit_test(test_day_torn_and_damaged),
	    cmocka_unit_test(test_writer_repairs_and_caps),
	    cmocka_unit_test(test_day_names),
	    cmocka_unit_test(test_xml_escape),
	    cmocka_unit_test(test_aggregate_and_xml),
	    cmocka_unit_test(test_rua),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
