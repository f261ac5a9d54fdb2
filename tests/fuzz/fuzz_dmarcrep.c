/* fuzz_dmarcrep.c — libFuzzer target for the DMARC aggregate report data
 * (dauth/dmarcrep.c, dauth/dmarcrep_report.c). Input: a day file's bytes
 * (damaged, torn, or written by a taken-over smtpd through the queue),
 * and the same bytes as one record body. Checks that the reader never
 * reads past the input, that its counts add up, that every record it
 * accepts re-encodes to a body that decodes to the same record, and that
 * aggregation and the XML writer run over whatever it accepted (ASan
 * watches them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dauth/dmarcrep.h"
#include "dauth/dmarcrep_report.h"

static int fuzz_rec(const struct dmarcrep_rec *r, void *arg)
{
	(void)arg;
	struct dmarcrep_rec *back = malloc(sizeof(*back));
	struct buf b;
	const char *error = NULL;
	buf_init(&b, 0);
	if (dmarcrep_rec_encode(r, &b) < 0 ||
	    dmarcrep_rec_decode(b.data, b.len, back, &error) < 0 ||
	    memcmp(r, back, sizeof(*r)) != 0)
		abort();
	buf_free(&b);
	free(back);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dmarcrep_scan st;
	(void)dmarcrep_day_parse(data, size, fuzz_rec, NULL, &st);
	if (st.valid_end > size || st.bad_octets > size ||
	    st.records * DMARCREP_FRAME_OVERHEAD > size)
		abort();
	struct dmarcrep_day d;
	dmarcrep_day_aggregate("20261204", data, size, &d);
	if (d.scan.records != st.records)
		abort();
	struct dmarcrep_meta m = {
	    .org_name = "o", .email = "r@mx.example", .submitter = "mx.example"};
	for (size_t i = 0; i < d.ngroups; i++) {
		struct buf x;
		buf_init(&x, 0);
		(void)dmarcrep_xml(&m, &d, &d.groups[i], &x);
		if (memchr(x.data, '\0', x.len) != NULL)
			abort();
		buf_free(&x);
	}
	dmarcrep_day_clear(&d);
	struct dmarcrep_rec *r = malloc(sizeof(*r));
	const char *error = NULL;
	if (dmarcrep_rec_decode(data, size, r, &error) == 0)
		fuzz_rec(r, NULL);
	free(r);
	return 0;
}
