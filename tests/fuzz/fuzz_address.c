/* fuzz_address.c — libFuzzer target for the RFC 5321 path parser
 * (src/mail/address.c). The first input octet selects the flags; the rest is
 * the path. Checks the result invariants and that a formatted address parses
 * back to the same local part and domain. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mail/address.h"
#include "mail/idna.h"

static void fuzz_check(int cond)
{
	if (!cond)
		abort();
}

static void fuzz_roundtrip(const struct mail_addr *a, unsigned flags)
{
	char out[MAIL_PATH_MAX + 8];
	struct mail_addr b;
	size_t consumed;
	int n = mail_addr_format(a, out + 1, sizeof(out) - 2);

	fuzz_check(n >= 0);
	fuzz_check((size_t)n == strlen(out + 1));
	if (a->is_null || a->is_postmaster)
		return;
	out[0] = '<';
	out[n + 1] = '>';
	fuzz_check(mail_addr_parse_path(out, (size_t)n + 2, flags, &b, &consumed, NULL) == 0);
	fuzz_check(consumed == (size_t)n + 2);
	fuzz_check(strcmp(a->local, b.local) == 0 && strcmp(a->domain, b.domain) == 0);
	fuzz_check(strcmp(a->domain_ascii, b.domain_ascii) == 0);
}

/* The A-label form is ASCII, lowercase, and its own A-label form. */
static void fuzz_check_ascii(const struct mail_addr *a)
{
	char again[MAIL_IDNA_MAX + 1];
	size_t n = strlen(a->domain_ascii);

	fuzz_check(n <= MAIL_DOMAIN_MAX && !mail_str_is_utf8(a->domain_ascii, n));
	fuzz_check(mail_domain_to_ascii(a->domain_ascii, n, again, sizeof(again), NULL) == 0);
	fuzz_check(strcmp(again, a->domain_ascii) == 0);
	fuzz_check(a->is_utf8 || a->domain[0] == '[' || strcmp(a->domain, a->domain_ascii) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data + 1;
	struct mail_addr a;
	const char *error = NULL;
	size_t consumed = 0, len;
	unsigned flags;
	int rc;

	if (size == 0)
		return 0;
	flags =
	    data[0] & (MAIL_ADDR_ALLOW_NULL | MAIL_ADDR_ALLOW_UTF8 | MAIL_ADDR_ALLOW_POSTMASTER);
	len = size - 1;
	rc = mail_addr_parse_path(p, len, flags, &a, &consumed, &error);
	if (rc != 0) {
		fuzz_check(rc == MAIL_ADDR_ERR_SYNTAX || rc == MAIL_ADDR_ERR_UTF8 ||
		           rc == MAIL_ADDR_ERR_LENGTH || rc == MAIL_ADDR_ERR_IDNA);
		fuzz_check(error != NULL && consumed == 0);
		fuzz_check(rc != MAIL_ADDR_ERR_UTF8 || (flags & MAIL_ADDR_ALLOW_UTF8) == 0);
	} else {
		fuzz_check(consumed >= 2 && consumed <= len && consumed <= MAIL_PATH_MAX);
		fuzz_check(p[0] == '<' && p[consumed - 1] == '>');
		fuzz_check(strlen(a.local) <= MAIL_LOCAL_MAX &&
		           strlen(a.domain) <= MAIL_DOMAIN_MAX);
		fuzz_check(!a.is_null || (flags & MAIL_ADDR_ALLOW_NULL) != 0);
		fuzz_check(!a.is_postmaster || (flags & MAIL_ADDR_ALLOW_POSTMASTER) != 0);
		fuzz_check(!a.is_utf8 || (flags & MAIL_ADDR_ALLOW_UTF8) != 0);
		if (a.domain[0] != '[') {
			for (const char *d = a.domain; *d != '\0'; d++)
				fuzz_check(*d < 'A' || *d > 'Z');
		}
		if (!a.is_null && !a.is_postmaster)
			fuzz_check_ascii(&a);
		fuzz_roundtrip(&a, flags);
	}
	/* the helpers over the same hostile bytes */
	(void)mail_xtext_valid(p, len);
	(void)mail_helo_domain_valid(p, len, (flags & MAIL_ADDR_ALLOW_UTF8) != 0);
	for (size_t i = 0; i < len;) {
		size_t n = mail_utf8_char_len(p + i, len - i);

		fuzz_check(n <= 4 && n <= len - i);
		i += n != 0 ? n : 1;
	}
	return 0;
}
