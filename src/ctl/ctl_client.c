/* ctl_client.c — the CLI side of the control socket: `hikyaku queue ...`
 * and `mailq`. Runs in a short-lived process started by an administrator;
 * connects to <spool_dir>/control.sock, sends one request frame, and prints
 * the answer frames as a table or as JSON (--json).
 *
 * Hostile inputs: everything in the answer that came from mail: sender and
 * recipient addresses, DSN parameters, the EHLO name and the header section
 * are the senders' octets. The frames go through the strict decoder; for a
 * terminal, whatever the locale cannot print is written as \xNN (no escape
 * sequence reaches it, C1 included); in JSON every string is escaped (C0
 * and C1 controls as \u00XX) and invalid UTF-8 becomes U+FFFD, so the
 * output is always valid JSON (RFC 8259 §7, §8.1). */
#include "ctl/ctl.h"
#include "lib/json.h"
#include "lib/alloc.h"
#include "mail/envelope.h"
#include "mail/smtp_params.h"

#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>
#include <wctype.h>

#define CTL_CLIENT_TIMEOUT_S 120

struct ctl_str {
	const uint8_t *p;
	size_t len;
};

struct ctl_crcpt {
	struct ctl_str addr;
	struct ctl_str orcpt;
	bool done;
	uint64_t notify;
};

/* One ITEM frame, as views into it. */
struct ctl_citem {
	struct ctl_str qid, sender, state, last_error, action, envid, client, helo, headers;
	uint64_t arrival, size, next_try, attempts, flags, nrcpts, npending, omitted, ret, body,
	    smtputf8;
	struct ctl_crcpt *rcpts;
	size_t n_rcpts;
	size_t cap_rcpts;
};


/* ---- output helpers ---- */

static void ctl_put_escape(FILE *out, unsigned char c)
{
	fprintf(out, "\\x%02x", c);
}

/* Print mail-derived text for a terminal (often root's): only characters
 * printable in the user's locale (LC_CTYPE, set by ctl_client_main) go out
 * as they are; everything else is written as \xNN. In the C locale that is
 * every octet outside printable ASCII; in a UTF-8 locale printable UTF-8
 * passes, and C0/C1 controls (U+009B is a one-character CSI to many
 * terminals), DEL and invalid sequences are escaped. */
static void ctl_put_text(FILE *out, struct ctl_str s, bool keep_newlines)
{
	mbstate_t st;
	memset(&st, 0, sizeof(st));
	for (size_t i = 0; i < s.len;) {
		unsigned char c = s.p[i];
		if (keep_newlines && c == '\r' && i + 1 < s.len && s.p[i + 1] == '\n') {
			i++;
			continue;
		}
		if ((keep_newlines && (c == '\n' || c == '\t')) || (c >= 0x20 && c < 0x7f)) {
			fputc(c, out);
			i++;
			continue;
		}
		wchar_t wc;
		size_t n = c < 0x80 ? 0 : mbrtowc(&wc, (const char *)s.p + i, s.len - i, &st);
		if (n == 0 || n == (size_t)-1 || n == (size_t)-2 || !iswprint((wint_t)wc) ||
		    (wc >= 0x80 && wc < 0xa0)) {
			memset(&st, 0, sizeof(st));
			ctl_put_escape(out, c);
			i++;
			continue;
		}
		fwrite(s.p + i, 1, n, out);
		i += n;
	}
}

static void ctl_json_str(FILE *out, struct ctl_str s)
{
	struct buf b;
	buf_init(&b, 0);
	if (json_append_str(&b, s.p, s.len) == 0)
		fwrite(b.data, 1, b.len, out);
	buf_free(&b);
}

static void ctl_json_opt(FILE *out, const char *key, struct ctl_str s)
{
	fprintf(out, ",\"%s\":", key);
	if (s.p == NULL)
		fputs("null", out);
	else
		ctl_json_str(out, s);
}

static struct ctl_str ctl_cstr(const char *s)
{
	return (struct ctl_str){(const uint8_t *)s, strlen(s)};
}

static void ctl_time(char out[32], uint64_t us, bool iso)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;
	if (us == 0 || gmtime_r(&t, &tm) == NULL) {
		snprintf(out, 32, "-");
		return;
	}
	strftime(out, 32, iso ? "%Y-%m-%dT%H:%M:%SZ" : "%Y-%m-%d %H:%M:%S", &tm);
}

static void ctl_json_time(FILE *out, const char *key, uint64_t us)
{
	char t[32];
	if (us == 0) {
		fprintf(out, ",\"%s\":null", key);
		return;
	}
	ctl_time(t, us, true);
	fprintf(out, ",\"%s\":\"%s\",\"%s_us\":%llu", key, t, key, (unsigned long long)us);
}

/* ---- decoding an item ---- */

static void ctl_citem_parse(const struct ctl_frame *f, struct ctl_citem *it)
{
	struct ctl_field fld;
	size_t off = 0;
	struct ctl_crcpt *r = NULL;
	memset(it, 0, sizeof(*it));
	while (ctl_field_next(f, &off, &fld)) {
		struct ctl_str s = {fld.p, fld.len};
		uint64_t v = fld.len == 8 ? ctl_field_u64(&fld) : 0;
		switch (fld.tag) {
		case CTL_F_QID:
			it->qid = s;
			break;
		case CTL_F_SENDER:
			it->sender = s;
			break;
		case CTL_F_STATE:
			it->state = s;
			break;
		case CTL_F_LAST_ERROR:
			it->last_error = s;
			break;
		case CTL_F_ACTION:
			it->action = s;
			break;
		case CTL_F_ENVID:
			it->envid = s;
			break;
		case CTL_F_CLIENT:
			it->client = s;
			break;
		case CTL_F_HELO:
			it->helo = s;
			break;
		case CTL_F_HEADERS:
			it->headers = s;
			break;
		case CTL_F_ARRIVAL:
			it->arrival = v;
			break;
		case CTL_F_SIZE:
			it->size = v;
			break;
		case CTL_F_NEXT_TRY:
			it->next_try = v;
			break;
		case CTL_F_ATTEMPTS:
			it->attempts = v;
			break;
		case CTL_F_FLAGS:
			it->flags = v;
			break;
		case CTL_F_NRCPTS:
			it->nrcpts = v;
			break;
		case CTL_F_NPENDING:
			it->npending = v;
			break;
		case CTL_F_OMITTED:
			it->omitted = v;
			break;
		case CTL_F_RET:
			it->ret = v;
			break;
		case CTL_F_BODY:
			it->body = v;
			break;
		case CTL_F_SMTPUTF8:
			it->smtputf8 = v;
			break;
		case CTL_F_RCPT:
			if (it->n_rcpts == it->cap_rcpts) {
				it->cap_rcpts = it->cap_rcpts ? it->cap_rcpts * 2 : 8;
				it->rcpts =
				    xreallocarray(it->rcpts, it->cap_rcpts, sizeof(*it->rcpts));
			}
			r = &it->rcpts[it->n_rcpts++];
			memset(r, 0, sizeof(*r));
			r->addr = s;
			break;
		case CTL_F_RCPT_DONE:
			if (r != NULL)
				r->done = v != 0;
			break;
		case CTL_F_RCPT_NOTIFY:
			if (r != NULL)
				r->notify = v;
			break;
		case CTL_F_RCPT_ORCPT:
			if (r != NULL)
				r->orcpt = s;
			break;
		default:
			break;
		}
	}
}

/* ---- human output ---- */

static void ctl_notify_names(uint64_t n, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s%s", n & SMTP_NOTIFY_NEVER ? "NEVER," : "",
	         n & SMTP_NOTIFY_SUCCESS ? "SUCCESS," : "",
	         n & SMTP_NOTIFY_FAILURE ? "FAILURE," : "", n & SMTP_NOTIFY_DELAY ? "DELAY," : "");
	size_t l = strlen(out);
	if (l > 0)
		out[l - 1] = '\0';
}

static void ctl_print_state(FILE *out, const struct ctl_citem *it)
{
	char t[32];
	ctl_put_text(out, it->state, false);
	if (it->next_try != 0 && !(it->flags & ENVELOPE_SCHED_HELD)) {
		ctl_time(t, it->next_try, false);
		fprintf(out, ", next try %s", t);
	}
	fprintf(out, ", %llu attempt%s", (unsigned long long)it->attempts, it->attempts == 1 ? "" : "s");
	if (it->action.p != NULL) {
		fprintf(out, ", ");
		ctl_put_text(out, it->action, false);
		fprintf(out, " when the attempt ends");
	}
}

static void ctl_print_list_item(FILE *out, const struct ctl_citem *it)
{
	char t[32];
	ctl_time(t, it->arrival, false);
	ctl_put_text(out, it->qid, false);
	fprintf(out, "  %9llu  %s  ", (unsigned long long)it->size, t);
	ctl_print_state(out, it);
	fprintf(out, "\n    from <");
	ctl_put_text(out, it->sender, false);
	fprintf(out, ">\n");
	for (size_t i = 0; i < it->n_rcpts; i++) {
		fprintf(out, "    to   ");
		ctl_put_text(out, it->rcpts[i].addr, false);
		fprintf(out, "\n");
	}
	if (it->omitted > 0)
		fprintf(out, "    (and %llu more recipients)\n", (unsigned long long)it->omitted);
	if (it->last_error.p != NULL) {
		fprintf(out, "    last error: ");
		ctl_put_text(out, it->last_error, false);
		fprintf(out, "\n");
	}
}

static void ctl_print_show(FILE *out, const struct ctl_citem *it)
{
	static const char *const ret[] = {"-", "FULL", "HDRS"};
	static const char *const body[] = {"-", "7BIT", "8BITMIME"};
	char t[32], nb[64];
	fprintf(out, "Queue ID:    ");
	ctl_put_text(out, it->qid, false);
	ctl_time(t, it->arrival, false);
	fprintf(out, "\nArrival:     %s UTC\nSize:        %llu\nSender:      <", t,
	       (unsigned long long)it->size);
	ctl_put_text(out, it->sender, false);
	fprintf(out, ">\nClient:      ");
	ctl_put_text(out, it->client, false);
	if (it->helo.p != NULL) {
		fprintf(out, " (EHLO ");
		ctl_put_text(out, it->helo, false);
		fprintf(out, ")");
	}
	fprintf(out, "\nDSN:         RET=%s ENVID=", it->ret < 3 ? ret[it->ret] : "?");
	ctl_put_text(out, it->envid.p != NULL ? it->envid : ctl_cstr("-"), false);
	fprintf(out, "\nBody:        %s%s\nState:       ", it->body < 3 ? body[it->body] : "?",
	       it->smtputf8 ? ", SMTPUTF8" : "");
	ctl_print_state(out, it);
	fprintf(out, "\nFlags:       %s%s\n", it->flags & 0x1 ? "delay-warned " : "",
	       it->flags & ENVELOPE_SCHED_HELD ? "held" : "");
	if (it->last_error.p != NULL) {
		fprintf(out, "Last error:  ");
		ctl_put_text(out, it->last_error, false);
		fprintf(out, "\n");
	}
	fprintf(out, "Recipients:  %llu, %llu pending\n", (unsigned long long)it->nrcpts,
	       (unsigned long long)it->npending);
	for (size_t i = 0; i < it->n_rcpts; i++) {
		const struct ctl_crcpt *r = &it->rcpts[i];
		fprintf(out, "  %-8s ", r->done ? "done" : "pending");
		ctl_put_text(out, r->addr, false);
		ctl_notify_names(r->notify, nb, sizeof(nb));
		if (nb[0] != '\0')
			fprintf(out, " NOTIFY=%s", nb);
		if (r->orcpt.p != NULL) {
			fprintf(out, " ORCPT=");
			ctl_put_text(out, r->orcpt, false);
		}
		fprintf(out, "\n");
	}
	if (it->omitted > 0)
		fprintf(out, "  (and %llu more)\n", (unsigned long long)it->omitted);
	fprintf(out, "Headers:\n");
	ctl_put_text(out, it->headers, true);
}

/* ---- JSON output ---- */

static void ctl_json_item(FILE *out, const struct ctl_citem *it, bool show)
{
	char nb[64];
	fputs("{\"qid\":", out);
	ctl_json_str(out, it->qid);
	ctl_json_time(out, "arrival", it->arrival);
	fprintf(out, ",\"size\":%llu,\"sender\":", (unsigned long long)it->size);
	ctl_json_str(out, it->sender);
	fprintf(out, ",\"state\":");
	ctl_json_str(out, it->state);
	ctl_json_time(out, "next_try", (it->flags & ENVELOPE_SCHED_HELD) ? 0 : it->next_try);
	fprintf(out, ",\"attempts\":%llu,\"held\":%s,\"recipients_total\":%llu,"
	       "\"recipients_pending\":%llu,\"recipients_omitted\":%llu",
	       (unsigned long long)it->attempts, (it->flags & ENVELOPE_SCHED_HELD) ? "true" : "false",
	       (unsigned long long)it->nrcpts, (unsigned long long)it->npending,
	       (unsigned long long)it->omitted);
	ctl_json_opt(out, "last_error", it->last_error);
	ctl_json_opt(out, "pending_action", it->action);
	fprintf(out, ",\"recipients\":[");
	for (size_t i = 0; i < it->n_rcpts; i++) {
		const struct ctl_crcpt *r = &it->rcpts[i];
		fprintf(out, "%s{\"address\":", i > 0 ? "," : "");
		ctl_json_str(out, r->addr);
		fprintf(out, ",\"done\":%s", r->done ? "true" : "false");
		if (show) {
			ctl_notify_names(r->notify, nb, sizeof(nb));
			ctl_json_opt(out, "notify",
			             nb[0] != '\0' ? ctl_cstr(nb) : (struct ctl_str){0});
			ctl_json_opt(out, "orcpt", r->orcpt);
		}
		fprintf(out, "}");
	}
	fprintf(out, "]");
	if (show) {
		static const char *const ret[] = {"", "FULL", "HDRS"};
		static const char *const body[] = {"", "7BIT", "8BITMIME"};
		ctl_json_opt(out, "envid", it->envid);
		ctl_json_opt(out, "ret",
		             it->ret > 0 && it->ret < 3 ? ctl_cstr(ret[it->ret])
		                                        : (struct ctl_str){0});
		ctl_json_opt(out, "body",
		             it->body > 0 && it->body < 3 ? ctl_cstr(body[it->body])
		                                          : (struct ctl_str){0});
		fprintf(out, ",\"smtputf8\":%s", it->smtputf8 ? "true" : "false");
		ctl_json_opt(out, "client_addr", it->client);
		ctl_json_opt(out, "helo", it->helo);
		fprintf(out, ",\"delay_warned\":%s", (it->flags & 0x1) ? "true" : "false");
		ctl_json_opt(out, "headers", it->headers.p != NULL ? it->headers : ctl_cstr(""));
	}
	fprintf(out, "}");
}

/* ---- the conversation ---- */

static int ctl_connect(const char *spool_dir, char *path, size_t pathlen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (ctl_socket_path(spool_dir, path, pathlen) < 0 || strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "hikyaku: control socket path too long: %s/%s\n", spool_dir,
		        CTL_SOCKET_NAME);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "hikyaku: socket: %s\n", strerror(errno));
		return -1;
	}
	struct timeval tv = {CTL_CLIENT_TIMEOUT_S, 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int err = errno;
		if (err == ENOENT || err == ECONNREFUSED)
			fprintf(stderr, "hikyaku is not running (no control socket at %s)\n", path);
		else
			fprintf(stderr, "hikyaku: cannot connect to %s: %s\n", path, strerror(err));
		close(fd);
		return -1;
	}
	return fd;
}

static int ctl_write_all(int fd, const void *p, size_t len)
{
	const unsigned char *b = p;
	while (len > 0) {
		ssize_t n = write(fd, b, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static bool ctl_str_icontains(struct ctl_str s, const char *needle)
{
	size_t n = strlen(needle);
	if (n == 0)
		return true;
	for (size_t i = 0; i + n <= s.len; i++)
		if (strncasecmp((const char *)s.p + i, needle, n) == 0)
			return true;
	return false;
}

/* A list item the search (r->qid, r->sender, r->recipient) keeps. */
static bool ctl_render_match(const struct ctl_render *r, const struct ctl_citem *it)
{
	if (r->qid != NULL && !(it->qid.len == strlen(r->qid) &&
	                        memcmp(it->qid.p, r->qid, it->qid.len) == 0))
		return false;
	if (r->sender != NULL && !ctl_str_icontains(it->sender, r->sender))
		return false;
	if (r->recipient != NULL) {
		bool any = false;
		for (size_t i = 0; i < it->n_rcpts && !any; i++)
			any = ctl_str_icontains(it->rcpts[i].addr, r->recipient);
		if (!any)
			return false;
	}
	return true;
}

void ctl_render_begin(struct ctl_render *cli)
{
	if (cli->json && (cli->req == CTL_T_LIST || cli->req == CTL_T_STATS))
		fputs("[", cli->out);
}

/* One DSTAT frame: a domain in an hour. */
static void ctl_render_dstat(struct ctl_render *cli, const struct ctl_frame *f)
{
	struct ctl_field fld;
	size_t off = 0;
	struct ctl_str dom = ctl_cstr("");
	uint64_t hour = 0, sent = 0, deferred = 0, bounced = 0, median = 0;
	char t[32];
	while (ctl_field_next(f, &off, &fld)) {
		uint64_t v = fld.len == 8 ? ctl_field_u64(&fld) : 0;
		switch (fld.tag) {
		case CTL_F_DOMAIN:
			dom = (struct ctl_str){fld.p, fld.len};
			break;
		case CTL_F_HOUR:
			hour = v;
			break;
		case CTL_F_SENT:
			sent = v;
			break;
		case CTL_F_DEFERRED:
			deferred = v;
			break;
		case CTL_F_BOUNCED:
			bounced = v;
			break;
		case CTL_F_MEDIAN_MS:
			median = v;
			break;
		default:
			break;
		}
	}
	FILE *out = cli->out;
	if (cli->json) {
		fputs(cli->n_items > 0 ? ",\n{\"domain\":" : "\n{\"domain\":", out);
		ctl_json_str(out, dom);
		ctl_json_time(out, "hour", hour);
		fprintf(out, ",\"sent\":%llu,\"deferred\":%llu,\"bounced\":%llu,"
		             "\"median_delay_seconds\":",
		        (unsigned long long)sent, (unsigned long long)deferred,
		        (unsigned long long)bounced);
		if (median == 0)
			fputs("null}", out);
		else
			fprintf(out, "%.3f}", (double)median / 1000.0);
	} else {
		if (cli->n_items == 0)
			fprintf(out, "%-20s %8s %8s %8s %12s  %s\n", "hour (UTC)", "sent", "deferred",
			        "bounced", "median delay", "domain");
		ctl_time(t, hour, false);
		fprintf(out, "%-20s %8llu %8llu %8llu %11.1fs  ", t, (unsigned long long)sent,
		        (unsigned long long)deferred, (unsigned long long)bounced,
		        (double)median / 1000.0);
		ctl_put_text(out, dom, false);
		fputc('\n', out);
	}
	cli->n_items++;
}

/* Handle one answer frame: 1 when it was the last, 0 for more, -1 error
 * (reported on cli->err; cli->message holds the daemon's text). */
int ctl_render_frame(struct ctl_render *cli, const struct ctl_frame *f)
{
	struct ctl_field fld;
	size_t off = 0;
	struct ctl_str msg = ctl_cstr("");
	uint64_t count = 0, omitted = 0;
	FILE *out = cli->out, *err = cli->err;
	if (f->type == CTL_T_DSTAT && cli->req == CTL_T_STATS) {
		ctl_render_dstat(cli, f);
		return 0;
	}
	if (f->type == CTL_T_AJSON && cli->req == CTL_T_ANALYTICS) {
		/* The queue's JSON document, piece by piece (it is JSON in
		 * either mode: the analytics have no text view). */
		while (ctl_field_next(f, &off, &fld))
			if (fld.tag == CTL_F_JSON)
				fwrite(fld.p, 1, fld.len, out);
		cli->n_items++;
		return 0;
	}
	if (f->type == CTL_T_END && cli->req == CTL_T_ANALYTICS)
		return cli->n_items > 0 ? 1 : -1;
	if (f->type == CTL_T_ITEM && (cli->req == CTL_T_LIST || cli->req == CTL_T_SHOW)) {
		struct ctl_citem it;
		ctl_citem_parse(f, &it);
		bool show = cli->req == CTL_T_SHOW;
		if (!show && !ctl_render_match(cli, &it)) {
			free(it.rcpts);
			return 0;
		}
		if (cli->json)
			fputs(show ? "" : cli->n_items > 0 ? ",\n" : "\n", out);
		if (cli->json)
			ctl_json_item(out, &it, show);
		else if (show)
			ctl_print_show(out, &it);
		else
			ctl_print_list_item(out, &it);
		cli->n_items++;
		cli->n_pending += it.npending;
		free(it.rcpts);
		return 0;
	}
	while (ctl_field_next(f, &off, &fld)) {
		if (fld.tag == CTL_F_MESSAGE)
			msg = (struct ctl_str){fld.p, fld.len};
		else if (fld.tag == CTL_F_COUNT)
			count = ctl_field_u64(&fld);
		else if (fld.tag == CTL_F_OMITTED)
			omitted = ctl_field_u64(&fld);
	}
	size_t ml = msg.len < sizeof(cli->message) - 1 ? msg.len : sizeof(cli->message) - 1;
	memcpy(cli->message, msg.p, ml);
	cli->message[ml] = '\0';
	if (f->type == CTL_T_ERROR) {
		fputs("hikyaku: ", err);
		ctl_put_text(err, msg, false);
		fputc('\n', err);
		return -1;
	}
	if (f->type == CTL_T_END && cli->req == CTL_T_LIST) {
		cli->omitted = omitted;
		if (omitted > 0 || memmem(msg.p, msg.len, "truncated", 9) != NULL)
			fprintf(err, "hikyaku: the list is truncated (%llu more not shown)\n",
			        (unsigned long long)omitted);
		if (cli->json)
			fprintf(out, "%s]\n", cli->n_items > 0 ? "\n" : "");
		else if (cli->n_items == 0)
			fprintf(out, "Mail queue is empty\n");
		else
			fprintf(out, "-- %zu message%s, %llu recipient%s pending\n", cli->n_items,
			        cli->n_items == 1 ? "" : "s", (unsigned long long)cli->n_pending,
			        cli->n_pending == 1 ? "" : "s");
		return 1;
	}
	if (f->type == CTL_T_END && cli->req == CTL_T_STATS) {
		if (cli->json)
			fprintf(out, "%s]\n", cli->n_items > 0 ? "\n" : "");
		else if (cli->n_items == 0)
			fprintf(out, "No deliveries in the last 48 hours\n");
		return 1;
	}
	if (f->type == CTL_T_END && cli->req == CTL_T_SHOW) {
		if (cli->json)
			fprintf(out, "\n");
		return cli->n_items == 1 ? 1 : -1;
	}
	if (f->type == CTL_T_OK && cli->req != CTL_T_LIST && cli->req != CTL_T_SHOW &&
	    cli->req != CTL_T_STATS) {
		if (cli->json) {
			fprintf(out, "{\"ok\":true,\"count\":%llu,\"message\":",
			        (unsigned long long)count);
			ctl_json_str(out, msg);
			fprintf(out, "}\n");
		} else {
			ctl_put_text(out, msg, false);
			fprintf(out, "\n");
		}
		return 1;
	}
	fprintf(err, "hikyaku: unexpected answer from the daemon\n");
	return -1;
}

int ctl_request_build(uint8_t type, const char *arg, struct buf *req)
{
	size_t start = ctl_frame_begin(req, type);
	if (arg != NULL) {
		if (strlen(arg) > CTL_ARG_MAX)
			return -1;
		/* flush takes a qid or a domain; the others a qid. */
		bool qid = type != CTL_T_FLUSH || qid_valid(arg);
		(void)ctl_frame_add_str(req, qid ? CTL_F_QID : CTL_F_DOMAIN, arg);
	}
	return ctl_frame_end(req, start, CTL_REQ_MAX);
}

static int ctl_client_talk(int fd, struct ctl_render *cli, const struct buf *req)
{
	struct buf in;
	int rc = -1;
	buf_init(&in, CTL_RESP_MAX + 65536);
	if (ctl_write_all(fd, req->data, req->len) < 0) {
		fprintf(stderr, "hikyaku: cannot send the request: %s\n", strerror(errno));
		goto out;
	}
	ctl_render_begin(cli);
	for (;;) {
		struct ctl_frame f;
		size_t used = 0;
		const char *error = NULL;
		int r = ctl_frame_decode(in.data, in.len, CTL_RESP_MAX, &f, &used, &error);
		if (r < 0) {
			fprintf(stderr, "hikyaku: bad answer from the daemon: %s\n", error);
			goto out;
		}
		if (r == 1) {
			int done = ctl_render_frame(cli, &f);
			buf_consume(&in, used);
			if (done < 0)
				goto out;
			if (done > 0)
				break;
			continue;
		}
		if (buf_reserve(&in, 65536) < 0)
			goto out;
		ssize_t n = read(fd, in.data + in.len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "hikyaku: the daemon closed the connection early%s%s\n",
			        n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
			goto out;
		}
		in.len += (size_t)n;
	}
	rc = 0;
out:
	fflush(stdout);
	buf_free(&in);
	return rc;
}

static void ctl_client_usage(void)
{
	fprintf(stderr, "usage: hikyaku queue [-c FILE] [--json] list\n"
	                "       hikyaku queue [-c FILE] [--json] show QID\n"
	                "       hikyaku queue [-c FILE] [--json] flush [QID|DOMAIN]\n"
	                "       hikyaku queue [-c FILE] [--json] delete|hold|release QID\n"
	                "       hikyaku queue [-c FILE] [--json] stats\n"
	                "       hikyaku queue [-c FILE] analytics "
	                "series|domains|delays|reasons|tls|dmarc [DOMAIN]\n"
	                "       mailq [-c FILE] [--json]\n");
}

/* Build the request frame from the words; -1 on a usage error. */
static int ctl_client_request(int argc, char **argv, struct ctl_render *cli, struct buf *req)
{
	static const struct {
		const char *name;
		uint8_t type;
		int nargs; /* -1: optional */
	} cmds[] = {
	    {"list", CTL_T_LIST, 0},     {"show", CTL_T_SHOW, 1}, {"flush", CTL_T_FLUSH, -1},
	    {"delete", CTL_T_DELETE, 1}, {"hold", CTL_T_HOLD, 1}, {"release", CTL_T_RELEASE, 1},
	    {"stats", CTL_T_STATS, 0},
	};
	const char *words[3];
	int nw = 0;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			cli->json = true;
		else if (nw < 3)
			words[nw++] = argv[i];
		else
			return -1;
	}
	if (nw == 0)
		words[nw++] = "list";
	if (strcmp(words[0], "analytics") == 0) {
		/* analytics KIND [DOMAIN]: the last 24 hours, the API's JSON. */
		struct ctl_analytics_req a;
		memset(&a, 0, sizeof(a));
		if (nw < 2 || strlen(words[1]) >= sizeof(a.kind) ||
		    (nw == 3 && strlen(words[2]) >= sizeof(a.domain)))
			return -1;
		snprintf(a.kind, sizeof(a.kind), "%s", words[1]);
		if (nw == 3)
			snprintf(a.domain, sizeof(a.domain), "%s", words[2]);
		a.to = (uint64_t)time(NULL);
		a.from = a.to - 86399;
		cli->req = CTL_T_ANALYTICS;
		return ctl_analytics_build(&a, req);
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(words[0], cmds[i].name) != 0)
			continue;
		int have = nw - 1;
		if ((cmds[i].nargs >= 0 && have != cmds[i].nargs) || have > 1)
			return -1;
		cli->req = cmds[i].type;
		return ctl_request_build(cmds[i].type, have == 1 ? words[1] : NULL, req);
	}
	return -1;
}

int ctl_client_main(const char *spool_dir, int argc, char **argv)
{
	struct ctl_render cli = {.out = stdout, .err = stderr};
	struct buf req;
	char path[256];
	/* What is printable depends on the terminal's character set. */
	setlocale(LC_CTYPE, "");
	buf_init(&req, CTL_REQ_MAX);
	if (ctl_client_request(argc, argv, &cli, &req) < 0) {
		buf_free(&req);
		ctl_client_usage();
		return 2;
	}
	int fd = ctl_connect(spool_dir, path, sizeof(path));
	if (fd < 0) {
		buf_free(&req);
		return 1;
	}
	int rc = ctl_client_talk(fd, &cli, &req);
	close(fd);
	buf_free(&req);
	return rc == 0 ? 0 : 1;
}
