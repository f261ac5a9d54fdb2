/* astats.c — delivery analytics in memory (astats.h). The queue process,
 * any thread through the collector's mutex. Reply texts of remote servers
 * are hostile: astats_reason_norm() keeps a short printable digest only. */
#include "queue/astats.h"

#include "lib/alloc.h"

#include <ctype.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASTATS_CIDX (ASTATS_CELLS_MAX * 2)   /* power of two */
#define ASTATS_RIDX (ASTATS_REASONS_MAX * 2) /* power of two */

/* ---- histogram ---- */

unsigned astats_bin(uint64_t delay_us)
{
	uint64_t ms = delay_us / 1000;
	unsigned i = 0;
	while (ms > 0 && i < ASTATS_BINS - 1) {
		ms >>= 1;
		i++;
	}
	return i;
}

uint64_t astats_bin_lo_ms(unsigned i)
{
	return i == 0 ? 0 : 1ULL << (i - 1);
}

uint64_t astats_bin_hi_ms(unsigned i)
{
	return 1ULL << i;
}

double astats_percentile(const uint64_t bins[ASTATS_BINS], double p)
{
	uint64_t total = 0;
	for (unsigned i = 0; i < ASTATS_BINS; i++)
		total += bins[i];
	if (total == 0)
		return -1;
	if (p <= 0)
		p = 1e-9;
	if (p > 1)
		p = 1;
	double rank = p * (double)total, below = 0;
	for (unsigned i = 0; i < ASTATS_BINS; i++) {
		if (bins[i] == 0)
			continue;
		if (below + (double)bins[i] >= rank) {
			double frac = (rank - below) / (double)bins[i];
			double lo = (double)astats_bin_lo_ms(i), hi = (double)astats_bin_hi_ms(i);
			return lo + (hi - lo) * frac;
		}
		below += (double)bins[i];
	}
	return (double)astats_bin_hi_ms(ASTATS_BINS - 1);
}

/* ---- normalisation ---- */

static void astats_copy_lower(const char *s, size_t len, char *out, size_t outlen)
{
	size_t n = len < outlen - 1 ? len : outlen - 1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)s[i]);
	out[n] = '\0';
}

void astats_domain(const char *addr, char *out, size_t outlen)
{
	if (addr == NULL || addr[0] == '\0') {
		snprintf(out, outlen, "%s", ASTATS_NULL_SENDER);
		return;
	}
	const char *at = strrchr(addr, '@');
	const char *d = at != NULL ? at + 1 : addr;
	size_t len = strlen(d);
	if (len > ASTATS_DOMAIN_MAX)
		len = ASTATS_DOMAIN_MAX;
	astats_copy_lower(d, len, out, outlen);
	if (out[0] == '\0')
		snprintf(out, outlen, "%s", ASTATS_NULL_SENDER);
}

void astats_tls_version(const char *tls_info, char *out, size_t outlen)
{
	if (tls_info == NULL || tls_info[0] == '\0' || strcmp(tls_info, "none") == 0) {
		snprintf(out, outlen, "none");
		return;
	}
	size_t len = strcspn(tls_info, ":");
	size_t k = 0;
	for (size_t i = 0; i < len && k + 1 < outlen; i++)
		if (isalnum((unsigned char)tls_info[i]) || tls_info[i] == '.')
			out[k++] = tls_info[i];
	out[k] = '\0';
	if (k == 0)
		snprintf(out, outlen, "other");
}

/* Skip "550", "550-", "550 " and an enhanced code "5.1.1" at the start. */
static const char *astats_skip_codes(const char *s)
{
	while (*s == ' ')
		s++;
	if (isdigit((unsigned char)s[0]) && isdigit((unsigned char)s[1]) &&
	    isdigit((unsigned char)s[2]) && (s[3] == ' ' || s[3] == '-' || s[3] == '\0'))
		s += s[3] == '\0' ? 3 : 4;
	while (*s == ' ')
		s++;
	const char *p = s;
	if (isdigit((unsigned char)p[0]) && p[1] == '.') {
		p += 2;
		while (isdigit((unsigned char)*p))
			p++;
		if (*p == '.') {
			p++;
			while (isdigit((unsigned char)*p))
				p++;
			if (*p == ' ' || *p == '\0')
				s = p;
		}
	}
	return s;
}

void astats_reason_norm(const char *status, const char *diag, char *out, size_t outlen)
{
	char text[ASTATS_REASON_MAX + 1];
	size_t k = 0, cap = sizeof(text) - 1;
	bool space = true; /* drop leading white space */
	const char *s = astats_skip_codes(diag != NULL ? diag : "");
	while (*s != '\0' && k < cap) {
		unsigned char c = (unsigned char)*s;
		if (c == '<') { /* an address or a message id: dropped */
			const char *e = strchr(s, '>');
			s = e != NULL ? e + 1 : s + strlen(s);
			continue;
		}
		if (k == 0 && (c == ':' || c == ';' || c == ',' || c == '-' || c == '.')) {
			s++; /* what the dropped part leaves at the start */
			continue;
		}
		if (isdigit(c)) { /* counts, addresses, ids: "N" */
			while (isdigit((unsigned char)*s) ||
			       (*s == '.' && isdigit((unsigned char)s[1])))
				s++;
			text[k++] = 'N';
			space = false;
			continue;
		}
		s++;
		if (c == ' ' || c == '\t' || c < 0x20 || c >= 0x7f) {
			if (!space)
				text[k++] = ' ';
			space = true;
			continue;
		}
		text[k++] = (char)tolower(c);
		space = false;
	}
	while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == ':' || text[k - 1] == '.' ||
	                 text[k - 1] == ','))
		k--;
	text[k] = '\0';
	char st[16];
	size_t sl = 0;
	for (const char *p = status != NULL ? status : ""; *p != '\0' && sl < sizeof(st) - 1; p++)
		if (isdigit((unsigned char)*p) || *p == '.')
			st[sl++] = *p;
	st[sl] = '\0';
	snprintf(out, outlen, "%s%s%s", sl > 0 ? st : "", sl > 0 && k > 0 ? " " : "",
	         k > 0 ? text : (sl > 0 ? "" : "unknown"));
	if (strlen(out) > ASTATS_REASON_MAX)
		out[ASTATS_REASON_MAX] = '\0';
}

/* ---- the batch ---- */

static uint64_t astats_hash(uint64_t h, const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
		h = (h ^ *p) * 0x100000001b3ULL;
	return (h ^ 0xff) * 0x100000001b3ULL;
}

struct astats_batch *astats_batch_new(void)
{
	struct astats_batch *b = xcalloc(1, sizeof(*b));
	b->cidx = xcalloc(ASTATS_CIDX, sizeof(*b->cidx));
	b->ridx = xcalloc(ASTATS_RIDX, sizeof(*b->ridx));
	return b;
}

void astats_batch_free(struct astats_batch **bp)
{
	struct astats_batch *b = *bp;
	if (b == NULL)
		return;
	*bp = NULL;
	free(b->cells);
	free(b->reasons);
	free(b->cidx);
	free(b->ridx);
	free(b);
}

static struct astats_cell *astats_cell(struct astats_batch *b, uint64_t hour, const char *rdom,
                                       const char *sdom)
{
	for (int round = 0; round < 2; round++) {
		uint64_t h = astats_hash(astats_hash(0xcbf29ce484222325ULL ^ hour, rdom), sdom);
		for (size_t i = h & (ASTATS_CIDX - 1);; i = (i + 1) & (ASTATS_CIDX - 1)) {
			uint32_t x = b->cidx[i];
			if (x == 0) {
				if (b->n_cells >= ASTATS_CELLS_MAX)
					break; /* full: count it under (other) */
				if (b->n_cells % 64 == 0)
					b->cells = xreallocarray(b->cells, b->n_cells + 64,
					                         sizeof(*b->cells));
				struct astats_cell *c = &b->cells[b->n_cells];
				memset(c, 0, sizeof(*c));
				c->hour = hour;
				snprintf(c->rdom, sizeof(c->rdom), "%s", rdom);
				snprintf(c->sdom, sizeof(c->sdom), "%s", sdom);
				b->cidx[i] = (uint32_t)++b->n_cells;
				return c;
			}
			struct astats_cell *c = &b->cells[x - 1];
			if (c->hour == hour && strcmp(c->rdom, rdom) == 0 &&
			    strcmp(c->sdom, sdom) == 0)
				return c;
		}
		rdom = sdom = ASTATS_OTHER;
	}
	/* (other)/(other) did not fit either: the table holds
	 * ASTATS_CELLS_MAX distinct keys, so the last one absorbs it. */
	return &b->cells[b->n_cells - 1];
}

void astats_batch_event(struct astats_batch *b, uint64_t hour, const char *rdom, const char *sdom,
                        enum astats_ev ev, uint64_t delay_us)
{
	struct astats_cell *c = astats_cell(b, hour, rdom, sdom);
	c->n[ev]++;
	if (ev == ASTATS_DELIVERED)
		c->bins[astats_bin(delay_us)]++;
}

void astats_batch_reason(struct astats_batch *b, uint64_t hour, enum astats_ev kind,
                         const char *rdom, const char *reason)
{
	for (int round = 0; round < 2; round++) {
		uint64_t h = astats_hash(
		    astats_hash(0xcbf29ce484222325ULL ^ hour ^ (uint64_t)kind << 40, rdom), reason);
		for (size_t i = h & (ASTATS_RIDX - 1);; i = (i + 1) & (ASTATS_RIDX - 1)) {
			uint32_t x = b->ridx[i];
			if (x == 0) {
				if (b->n_reasons >= ASTATS_REASONS_MAX)
					break;
				if (b->n_reasons % 64 == 0)
					b->reasons = xreallocarray(b->reasons, b->n_reasons + 64,
					                           sizeof(*b->reasons));
				struct astats_reason *r = &b->reasons[b->n_reasons];
				memset(r, 0, sizeof(*r));
				r->hour = hour;
				r->kind = (uint8_t)kind;
				snprintf(r->rdom, sizeof(r->rdom), "%s", rdom);
				snprintf(r->reason, sizeof(r->reason), "%s", reason);
				r->n = 1;
				b->ridx[i] = (uint32_t)++b->n_reasons;
				return;
			}
			struct astats_reason *r = &b->reasons[x - 1];
			if (r->hour == hour && r->kind == kind && strcmp(r->rdom, rdom) == 0 &&
			    strcmp(r->reason, reason) == 0) {
				r->n++;
				return;
			}
		}
		rdom = reason = ASTATS_OTHER;
	}
	b->reasons[b->n_reasons - 1].n++;
}

void astats_batch_tls(struct astats_batch *b, uint64_t hour, const char *version)
{
	for (size_t i = 0; i < b->n_tls; i++) {
		if (b->tls[i].hour == hour && strcmp(b->tls[i].version, version) == 0) {
			b->tls[i].n++;
			return;
		}
	}
	if (b->n_tls == ASTATS_TLS_MAX) {
		version = "other";
		for (size_t i = 0; i < b->n_tls; i++) {
			if (b->tls[i].hour == hour && strcmp(b->tls[i].version, version) == 0) {
				b->tls[i].n++;
				return;
			}
		}
		b->tls[b->n_tls - 1].n++; /* 16 versions in one batch: never in practice */
		return;
	}
	struct astats_tls *t = &b->tls[b->n_tls++];
	t->hour = hour;
	snprintf(t->version, sizeof(t->version), "%s", version);
	t->n = 1;
}

/* ---- the collector ---- */

struct astats {
	pthread_mutex_t lock;
	struct astats_batch *cur; /* NULL until the first event */
};

struct astats *astats_create(void)
{
	struct astats *a = xcalloc(1, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	return a;
}

void astats_free(struct astats **ap)
{
	struct astats *a = *ap;
	if (a == NULL)
		return;
	*ap = NULL;
	astats_batch_free(&a->cur);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

static struct astats_batch *astats_cur(struct astats *a)
{
	if (a->cur == NULL)
		a->cur = astats_batch_new();
	return a->cur;
}

void astats_event(struct astats *a, uint64_t now_us, const char *rcpt, const char *sender,
                  enum astats_ev ev, uint64_t delay_us)
{
	char rd[ASTATS_DOMAIN_MAX + 1], sd[ASTATS_DOMAIN_MAX + 1];
	astats_domain(rcpt, rd, sizeof(rd));
	astats_domain(sender, sd, sizeof(sd));
	pthread_mutex_lock(&a->lock);
	astats_batch_event(astats_cur(a), now_us / ASTATS_HOUR_US, rd, sd, ev, delay_us);
	pthread_mutex_unlock(&a->lock);
}

void astats_reason(struct astats *a, uint64_t now_us, const char *rcpt, enum astats_ev kind,
                   const char *status, const char *diag)
{
	char rd[ASTATS_DOMAIN_MAX + 1], why[ASTATS_REASON_MAX + 1];
	astats_domain(rcpt, rd, sizeof(rd));
	astats_reason_norm(status, diag, why, sizeof(why));
	pthread_mutex_lock(&a->lock);
	astats_batch_reason(astats_cur(a), now_us / ASTATS_HOUR_US, kind, rd, why);
	pthread_mutex_unlock(&a->lock);
}

void astats_tls(struct astats *a, uint64_t now_us, const char *tls_info)
{
	char v[ASTATS_TLSVER_MAX];
	astats_tls_version(tls_info, v, sizeof(v));
	pthread_mutex_lock(&a->lock);
	astats_batch_tls(astats_cur(a), now_us / ASTATS_HOUR_US, v);
	pthread_mutex_unlock(&a->lock);
}

struct astats_batch *astats_take(struct astats *a)
{
	pthread_mutex_lock(&a->lock);
	struct astats_batch *b = a->cur;
	a->cur = NULL;
	pthread_mutex_unlock(&a->lock);
	return b;
}
