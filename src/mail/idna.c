/* idna.c — U-label to A-label conversion of domain names (RFC 5890/5891)
 * through libidn2, for comparison, routing and DNS (see idna.h).
 * Runs in the smtpd (RCPT, on a hostile domain), the queue manager (the
 * domain of a queued recipient) and at configuration load. Pure: libidn2
 * allocates and frees, nothing else. */
#include "mail/idna.h"

#include <idn2.h>
#include <string.h>

bool mail_str_is_utf8(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

int mail_domain_to_ascii(const char *in, size_t len, char *out, size_t outlen, const char **error_r)
{
	const char *dummy;
	char tmp[4 * MAIL_IDNA_MAX + 1];
	char *ascii = NULL;

	if (error_r == NULL)
		error_r = &dummy;
	if (memchr(in, '\0', len) != NULL) {
		*error_r = "NUL in domain";
		return -1;
	}
	if (!mail_str_is_utf8(in, len)) {
		if (len >= outlen) {
			*error_r = "domain too long";
			return -1;
		}
		for (size_t i = 0; i < len; i++)
			out[i] = (char)(in[i] >= 'A' && in[i] <= 'Z' ? in[i] - 'A' + 'a' : in[i]);
		out[len] = '\0';
		return 0;
	}
	/* A U-label domain of more than 4 × 255 octets cannot fit in 255
	 * octets as A-labels: refuse it before libidn2 sees it. */
	if (len >= sizeof(tmp)) {
		*error_r = "domain too long";
		return -1;
	}
	memcpy(tmp, in, len);
	tmp[len] = '\0';
	/* RFC 5891 §5: NFC, then the IDNA2008 rules; UTS #46 non-transitional
	 * mapping so that "ß" stays "ß" (xn--zca) rather than "ss"; the ASCII
	 * labels beside U-labels must be LDH (STD3) as RFC 5321 §4.1.2 wants. */
	int rc = idn2_lookup_u8((const uint8_t *)tmp, (uint8_t **)&ascii,
	                        IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL | IDN2_USE_STD3_ASCII_RULES);
	if (rc != IDN2_OK) {
		*error_r = "invalid internationalized domain name";
		return -1;
	}
	size_t alen = strlen(ascii);
	if (alen > MAIL_IDNA_MAX || alen >= outlen) {
		idn2_free(ascii);
		*error_r = "domain too long";
		return -1;
	}
	memcpy(out, ascii, alen + 1);
	idn2_free(ascii);
	for (size_t i = 0; i < alen; i++)
		if (out[i] >= 'A' && out[i] <= 'Z')
			out[i] = (char)(out[i] - 'A' + 'a');
	return 0;
}

bool mail_domain_eq(const char *a, const char *b)
{
	char aa[MAIL_IDNA_MAX + 1], bb[MAIL_IDNA_MAX + 1];

	if (mail_domain_to_ascii(a, strlen(a), aa, sizeof(aa), NULL) < 0 ||
	    mail_domain_to_ascii(b, strlen(b), bb, sizeof(bb), NULL) < 0)
		return false;
	return strcmp(aa, bb) == 0;
}
