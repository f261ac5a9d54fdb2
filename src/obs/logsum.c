/* logsum.c — `hikyaku log summary FILE...`: a pflogsumm-like report of
 * hikyaku's own logs (key=value or JSON lines, obs/logline.c): totals,
 * traffic per hour, top senders, recipients and recipient domains,
 * deferral, bounce and reject reasons. An administrator's command; the
 * files hold what clients sent, so every value goes through the bounded
 * line parser and is printed with control characters replaced. Memory is
 * bounded too: each table keeps at most LOGSUM_KEYS distinct keys, the
 * rest are counted as "(other)".
 *
 * What is counted (as pflogsumm does, per recipient for deliveries):
 * received = event=accept lines; delivered, deferred (attempts) and bounced
 * = event=delivery lines by status; rejected = event=reject lines. */
#include "obs/logsum.h"

#include "lib/alloc.h"
#include "obs/logline.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOGSUM_KEYS 65536
#define LOGSUM_LINE_MAX 65536

struct logsum_ent {
	char *key;
	uint64_t n, n2, n3; /* count; for domains also deferred and bounced */
};

struct logsum_tab {
	struct logsum_ent *e; /* open addressing, cap a power of two */
	size_t cap, used;
	uint64_t other, other2, other3;
};

struct logsum {
	uint64_t received, delivered, deferred, bounced, rejected, lines, skipped;
	uint64_t hour[24][5]; /* received, delivered, deferred, bounced, rejected */
	struct logsum_tab senders, rcpts, domains, defer_why, bounce_why, reject_why, deferred_msgs;
};

static uint64_t logsum_hash(const char *s)
{
	uint64_t h = 1469598103934665603ULL;
	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static struct logsum_ent *logsum_find(struct logsum_tab *t, const char *key)
{
	if (t->cap == 0) {
		t->cap = 1024;
		t->e = xcalloc(t->cap, sizeof(*t->e));
	}
	if (t->used * 2 >= t->cap && t->cap < 2 * LOGSUM_KEYS) {
		struct logsum_ent *old = t->e;
		size_t oc = t->cap;
		t->cap *= 2;
		t->e = xcalloc(t->cap, sizeof(*t->e));
		for (size_t i = 0; i < oc; i++) {
			if (old[i].key == NULL)
				continue;
			size_t j = logsum_hash(old[i].key) & (t->cap - 1);
			while (t->e[j].key != NULL)
				j = (j + 1) & (t->cap - 1);
			t->e[j] = old[i];
		}
		free(old);
	}
	size_t j = logsum_hash(key) & (t->cap - 1);
	while (t->e[j].key != NULL) {
		if (strcmp(t->e[j].key, key) == 0)
			return &t->e[j];
		j = (j + 1) & (t->cap - 1);
	}
	if (t->used >= LOGSUM_KEYS)
		return NULL;
	t->e[j].key = xstrdup(key);
	t->used++;
	return &t->e[j];
}

/* which: 0 the count, 1 n2, 2 n3 */
static void logsum_count(struct logsum_tab *t, const char *key, int which)
{
	struct logsum_ent *e = logsum_find(t, key != NULL && key[0] != '\0' ? key : "<>");
	uint64_t *c = e == NULL ? (which == 0   ? &t->other
	                           : which == 1 ? &t->other2
	                                        : &t->other3)
	                        : (which == 0   ? &e->n
	                           : which == 1 ? &e->n2
	                                        : &e->n3);
	(*c)++;
}

static void logsum_tab_free(struct logsum_tab *t)
{
	for (size_t i = 0; i < t->cap; i++)
		free(t->e[i].key);
	free(t->e);
}

static void logsum_line(struct logsum *s, const struct logline *l)
{
	const char *ev = logline_get(l, "event");
	int h = l->hour;
	if (ev == NULL)
		return;
	if (strcmp(ev, "accept") == 0) {
		s->received++;
		if (h >= 0)
			s->hour[h][0]++;
		const char *from = logline_get(l, "from");
		char addr[LOGLINE_VALUE_MAX];
		/* "<a@b>" as the accept line writes it */
		snprintf(addr, sizeof(addr), "%s", from != NULL ? from : "");
		size_t n = strlen(addr);
		if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>') {
			memmove(addr, addr + 1, n - 2);
			addr[n - 2] = '\0';
		}
		logsum_count(&s->senders, addr, 0);
	} else if (strcmp(ev, "delivery") == 0) {
		const char *st = logline_get(l, "status"), *to = logline_get(l, "to");
		const char *why = logline_get(l, "reason");
		const char *at = to != NULL ? strrchr(to, '@') : NULL;
		const char *dom = at != NULL ? at + 1 : "(none)";
		if (st == NULL)
			return;
		if (strcmp(st, "sent") == 0) {
			s->delivered++;
			if (h >= 0)
				s->hour[h][1]++;
			logsum_count(&s->rcpts, to, 0);
			logsum_count(&s->domains, dom, 0);
		} else if (strcmp(st, "deferred") == 0) {
			s->deferred++;
			if (h >= 0)
				s->hour[h][2]++;
			logsum_count(&s->domains, dom, 1);
			logsum_count(&s->defer_why, why, 0);
			const char *qid = logline_get(l, "qid");
			if (qid != NULL)
				logsum_count(&s->deferred_msgs, qid, 0);
		} else if (strcmp(st, "bounced") == 0) {
			s->bounced++;
			if (h >= 0)
				s->hour[h][3]++;
			logsum_count(&s->domains, dom, 2);
			logsum_count(&s->bounce_why, why, 0);
		}
	} else if (strcmp(ev, "reject") == 0) {
		s->rejected++;
		if (h >= 0)
			s->hour[h][4]++;
		const char *code = logline_get(l, "code"), *dsn = logline_get(l, "dsn");
		const char *why = logline_get(l, "reason");
		char k[LOGLINE_VALUE_MAX + 64];
		snprintf(k, sizeof(k), "%s %s %s", code != NULL ? code : "-",
		         dsn != NULL ? dsn : "-", why != NULL ? why : "-");
		logsum_count(&s->reject_why, k, 0);
	}
}

/* ---- the report ---- */

static void logsum_put(FILE *out, const char *s)
{
	for (; *s != '\0'; s++)
		fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static int logsum_cmp(const void *a, const void *b)
{
	const struct logsum_ent *x = a, *y = b;
	uint64_t tx = x->n + x->n2 + x->n3, ty = y->n + y->n2 + y->n3;
	if (tx != ty)
		return tx < ty ? 1 : -1;
	return strcmp(x->key, y->key);
}

static void logsum_top(FILE *out, const char *title, struct logsum_tab *t, size_t top, bool dom)
{
	fprintf(out, "\n%s\n", title);
	for (size_t i = strlen(title); i > 0; i--)
		fputc('-', out);
	fputc('\n', out);
	struct logsum_ent *v = xcalloc(t->used + 1, sizeof(*v));
	size_t n = 0;
	for (size_t i = 0; i < t->cap; i++)
		if (t->e[i].key != NULL)
			v[n++] = t->e[i];
	qsort(v, n, sizeof(*v), logsum_cmp);
	if (n == 0)
		fprintf(out, "  none\n");
	if (dom && n > 0)
		fprintf(out, "  %8s %8s %8s  %s\n", "sent", "deferred", "bounced", "domain");
	for (size_t i = 0; i < n && i < top; i++) {
		if (dom)
			fprintf(out, "  %8llu %8llu %8llu  ", (unsigned long long)v[i].n,
			        (unsigned long long)v[i].n2, (unsigned long long)v[i].n3);
		else
			fprintf(out, "  %8llu  ", (unsigned long long)v[i].n);
		logsum_put(out, v[i].key);
		fputc('\n', out);
	}
	if (t->other + t->other2 + t->other3 > 0)
		fprintf(out, "  %8llu  (other: more than %d distinct)\n",
		        (unsigned long long)(t->other + t->other2 + t->other3), LOGSUM_KEYS);
	free(v);
}

static void logsum_report(FILE *out, struct logsum *s, size_t top)
{
	uint64_t tried = s->received + s->rejected;
	fprintf(out, "Grand Totals\n------------\n");
	fprintf(out, "  %8llu  received\n", (unsigned long long)s->received);
	fprintf(out, "  %8llu  delivered\n", (unsigned long long)s->delivered);
	fprintf(out, "  %8llu  deferred  (%llu deferrals)\n",
	        (unsigned long long)s->deferred_msgs.used, (unsigned long long)s->deferred);
	fprintf(out, "  %8llu  bounced\n", (unsigned long long)s->bounced);
	fprintf(out, "  %8llu  rejected  (%.1f%%)\n", (unsigned long long)s->rejected,
	        tried > 0 ? 100.0 * (double)s->rejected / (double)tried : 0.0);
	fprintf(out, "\n  %8llu  senders\n  %8llu  recipients\n  %8llu  recipient domains\n",
	        (unsigned long long)s->senders.used, (unsigned long long)s->rcpts.used,
	        (unsigned long long)s->domains.used);
	fprintf(out, "\nPer-Hour Traffic Summary (UTC)\n------------------------------\n");
	fprintf(out, "  %-11s %9s %9s %9s %9s %9s\n", "time", "received", "delivered", "deferred",
	        "bounced", "rejected");
	for (int h = 0; h < 24; h++)
		fprintf(out, "  %02d00-%02d00   %9llu %9llu %9llu %9llu %9llu\n", h, (h + 1) % 24,
		        (unsigned long long)s->hour[h][0], (unsigned long long)s->hour[h][1],
		        (unsigned long long)s->hour[h][2], (unsigned long long)s->hour[h][3],
		        (unsigned long long)s->hour[h][4]);
	logsum_top(out, "Senders by message count", &s->senders, top, false);
	logsum_top(out, "Recipients by delivered count", &s->rcpts, top, false);
	logsum_top(out, "Recipient domains", &s->domains, top, true);
	logsum_top(out, "Deferral reasons", &s->defer_why, top, false);
	logsum_top(out, "Bounce reasons", &s->bounce_why, top, false);
	logsum_top(out, "Reject reasons (code, dsn, reason)", &s->reject_why, top, false);
	if (s->skipped > 0)
		fprintf(out, "\n(%llu of %llu lines were not hikyaku log lines)\n",
		        (unsigned long long)s->skipped, (unsigned long long)s->lines);
}

static int logsum_file(struct logsum *s, FILE *in, struct logline *l)
{
	char *line = xmalloc(LOGSUM_LINE_MAX);
	while (fgets(line, LOGSUM_LINE_MAX, in) != NULL) {
		size_t n = strlen(line);
		if (n > 0 && line[n - 1] != '\n' && !feof(in)) {
			/* longer than any line hikyaku writes: skip its rest */
			int c;
			while ((c = fgetc(in)) != EOF && c != '\n')
				;
		}
		s->lines++;
		if (logline_parse(line, n, l) < 0) {
			s->skipped++;
			continue;
		}
		logsum_line(s, l);
	}
	int rc = ferror(in) ? -1 : 0;
	free(line);
	return rc;
}

int logsum_main(int argc, char **argv)
{
	size_t top = 10;
	int first = 0, rc = 0;
	if (argc >= 2 && strcmp(argv[0], "-n") == 0) {
		char *end;
		unsigned long v = strtoul(argv[1], &end, 10);
		if (*end != '\0' || v == 0 || v > 100000) {
			fprintf(stderr, "hikyaku: -n wants 1..100000\n");
			return 2;
		}
		top = v;
		first = 2;
	}
	if (first >= argc) {
		fprintf(stderr, "usage: hikyaku log summary [-n TOP] FILE... (- for stdin)\n");
		return 2;
	}
	struct logsum *s = xcalloc(1, sizeof(*s));
	struct logline *l = xmalloc(sizeof(*l));
	for (int i = first; i < argc; i++) {
		FILE *in = strcmp(argv[i], "-") == 0 ? stdin : fopen(argv[i], "re");
		if (in == NULL) {
			fprintf(stderr, "hikyaku: %s: %s\n", argv[i], strerror(errno));
			rc = 1;
			continue;
		}
		if (logsum_file(s, in, l) < 0) {
			fprintf(stderr, "hikyaku: %s: read error\n", argv[i]);
			rc = 1;
		}
		if (in != stdin)
			fclose(in);
	}
	logsum_report(stdout, s, top);
	struct logsum_tab *tabs[] = {&s->senders,      &s->rcpts,      &s->domains,
	                             &s->defer_why,    &s->bounce_why, &s->reject_why,
	                             &s->deferred_msgs};
	for (size_t i = 0; i < sizeof(tabs) / sizeof(tabs[0]); i++)
		logsum_tab_free(tabs[i]);
	free(l);
	free(s);
	return rc;
}
