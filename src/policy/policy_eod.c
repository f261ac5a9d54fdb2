/* policy_eod.c — the end-of-data request's helpers (policy_smtp.h): the
 * header fields that checks add above the message. Runs in smtpd on the
 * event loop; what is added is the checks' own text (built from hostile
 * input only through the checks' escaping). */
#include "policy/policy_smtp.h"

#include <string.h>

int policy_eod_add_field(struct policy_eod_req *r, const char *field, size_t len)
{
	struct buf *b = r->top;
	/* The last addition goes first: each check puts its fields on top of
	 * what earlier ones added, as each hop does with Received. */
	if (b == NULL || buf_reserve(b, len + 2) < 0) {
		r->top_full = true;
		return -1;
	}
	memmove(b->data + len + 2, b->data, b->len);
	memcpy(b->data, field, len);
	memcpy(b->data + len, "\r\n", 2);
	b->len += len + 2;
	b->data[b->len] = '\0';
	return 0;
}
