/* submit.c — the SMTP client of local submission (submit.h). Runs in the
 * sendmail command and on a worker thread of the queue; the replies come
 * from our own smtpd but are still read with bounds. Lock-step, no
 * pipelining: one message, a few round trips on a unix socket. */
#include "sendmail/submit.h"

#include "lib/alloc.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "mail/maildrop.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

int submit_connect(const char *spool_dir)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int n = snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/%s", spool_dir, MAILDROP_SOCKET);
	if (n < 0 || (size_t)n >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {SUBMIT_TIMEOUT_S, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

struct submit_conn {
	int fd;
	char in[4096];
	size_t inlen;
	bool dsn, eightbit, smtputf8;
};

/* One reply (multi-line joined in text): its code, or -1 (I/O, syntax). */
static int submit_reply(struct submit_conn *c, char *text, size_t textlen, bool ehlo)
{
	for (;;) {
		char *nl = memchr(c->in, '\n', c->inlen);
		if (nl == NULL) {
			if (c->inlen == sizeof(c->in))
				return -1;
			ssize_t r = read(c->fd, c->in + c->inlen, sizeof(c->in) - c->inlen);
			if (r <= 0)
				return -1;
			c->inlen += (size_t)r;
			continue;
		}
		size_t n = (size_t)(nl - c->in) + 1;
		size_t t = n >= 2 && c->in[n - 2] == '\r' ? n - 2 : n - 1;
		if (t < 3 || c->in[0] < '2' || c->in[0] > '5' ||
		    (t > 3 && c->in[3] != ' ' && c->in[3] != '-'))
			return -1;
		int code = (c->in[0] - '0') * 100 + (c->in[1] - '0') * 10 + (c->in[2] - '0');
		bool last = t == 3 || c->in[3] == ' ';
		snprintf(text, textlen, "%.*s", (int)t, c->in);
		if (ehlo && t > 4) {
			const char *kw = c->in + 4;
			size_t kl = t - 4;
			if (kl >= 3 && strncasecmp(kw, "DSN", 3) == 0 && (kl == 3 || kw[3] == ' '))
				c->dsn = true;
			if (kl >= 8 && strncasecmp(kw, "8BITMIME", 8) == 0)
				c->eightbit = true;
			if (kl >= 8 && strncasecmp(kw, "SMTPUTF8", 8) == 0)
				c->smtputf8 = true;
		}
		memmove(c->in, c->in + n, c->inlen - n);
		c->inlen -= n;
		if (last)
			return code;
	}
}

static int submit_cmd(struct submit_conn *c, struct buf *cmd, char *text, size_t textlen, bool ehlo)
{
	if (fs_write_all(c->fd, cmd->data, cmd->len) < 0)
		return -1;
	buf_reset(cmd);
	return submit_reply(c, text, textlen, ehlo);
}

static bool submit_8bit(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)p[i] >= 0x80)
			return true;
	}
	return false;
}

/* The content, dot-stuffed (RFC 5321 §4.5.2), then the final dot. */
static int submit_content(int fd, const char *p, size_t len)
{
	struct buf out;
	buf_init(&out, 0);
	bool bol = true;
	int rc = 0;
	for (size_t i = 0; i < len && rc == 0; i++) {
		if (bol && p[i] == '.')
			buf_append_byte(&out, '.');
		buf_append_byte(&out, (unsigned char)p[i]);
		bol = p[i] == '\n';
		if (out.len >= 65536) {
			rc = fs_write_all(fd, out.data, out.len);
			buf_reset(&out);
		}
	}
	if (!bol)
		buf_append(&out, "\r\n", 2);
	buf_append(&out, ".\r\n", 3);
	if (rc == 0)
		rc = fs_write_all(fd, out.data, out.len);
	buf_free(&out);
	return rc;
}

static void submit_fail(struct submit_result *r, int code, const char *text)
{
	r->status = code >= 500 ? SUBMIT_PERM : SUBMIT_TEMP;
	if (code < 0)
		snprintf(r->reply, sizeof(r->reply), "lost the connection to the mail system");
	else
		snprintf(r->reply, sizeof(r->reply), "%s", text);
}

void submit_smtp(int fd, const struct submit_msg *m, struct submit_result *r)
{
	struct submit_conn c = {.fd = fd};
	struct buf cmd;
	char text[SUBMIT_REPLY_MAX];
	int code;
	size_t ok = 0;

	buf_init(&cmd, 0);
	r->status = SUBMIT_TEMP;
	r->reply[0] = '\0';
	r->sent_data = false;
	for (size_t i = 0; i < m->nrcpts; i++)
		r->rcpt_code[i] = 0;
	code = submit_reply(&c, text, sizeof(text), false);
	if (code != 220)
		goto fail;
	if (m->xuid >= 0) {
		buf_printf(&cmd, "XUID %lld\r\n", m->xuid);
		if ((code = submit_cmd(&c, &cmd, text, sizeof(text), false)) != 250)
			goto fail;
	}
	buf_printf(&cmd, "EHLO localhost\r\n");
	if ((code = submit_cmd(&c, &cmd, text, sizeof(text), true)) != 250)
		goto fail;
	bool utf8 = submit_8bit(m->sender, strlen(m->sender));
	for (size_t i = 0; i < m->nrcpts; i++)
		utf8 |= submit_8bit(m->rcpts[i], strlen(m->rcpts[i]));
	buf_printf(&cmd, "MAIL FROM:<%s>", m->sender);
	if (c.eightbit && submit_8bit(m->content, m->content_len))
		buf_printf(&cmd, " BODY=8BITMIME");
	if (c.smtputf8 && utf8)
		buf_printf(&cmd, " SMTPUTF8");
	if (c.dsn && m->ret != NULL)
		buf_printf(&cmd, " RET=%s", m->ret);
	if (c.dsn && m->envid != NULL)
		buf_printf(&cmd, " ENVID=%s", m->envid);
	buf_printf(&cmd, "\r\n");
	if ((code = submit_cmd(&c, &cmd, text, sizeof(text), false)) != 250)
		goto fail;
	for (size_t i = 0; i < m->nrcpts; i++) {
		buf_printf(&cmd, "RCPT TO:<%s>", m->rcpts[i]);
		if (c.dsn && m->notify != NULL)
			buf_printf(&cmd, " NOTIFY=%s", m->notify);
		buf_printf(&cmd, "\r\n");
		code = submit_cmd(&c, &cmd, text, sizeof(text), false);
		if (code < 0)
			goto fail;
		r->rcpt_code[i] = code;
		if (code / 100 == 2)
			ok++;
		else
			snprintf(r->reply, sizeof(r->reply), "%s", text);
	}
	if (ok == 0) {
		r->status = SUBMIT_TEMP;
		for (size_t i = 0; i < m->nrcpts; i++) {
			if (r->rcpt_code[i] < 500)
				goto quit;
		}
		r->status = SUBMIT_PERM;
		goto quit;
	}
	buf_printf(&cmd, "DATA\r\n");
	if ((code = submit_cmd(&c, &cmd, text, sizeof(text), false)) != 354)
		goto fail;
	if (submit_content(fd, m->content, m->content_len) < 0) {
		code = -1;
		goto fail;
	}
	r->sent_data = true;
	code = submit_reply(&c, text, sizeof(text), false);
	if (code / 100 != 2)
		goto fail;
	r->status = SUBMIT_OK;
quit:
	buf_printf(&cmd, "QUIT\r\n");
	(void)submit_cmd(&c, &cmd, text, sizeof(text), false);
	buf_free(&cmd);
	return;
fail:
	submit_fail(r, code, text);
	/* what was accepted at RCPT was not delivered: the message failed */
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (r->rcpt_code[i] / 100 == 2)
			r->rcpt_code[i] = code < 0 ? 451 : code;
	}
	if (code > 0) {
		buf_printf(&cmd, "QUIT\r\n");
		(void)submit_cmd(&c, &cmd, text, sizeof(text), false);
	}
	buf_free(&cmd);
}

int submit_all(const char *spool_dir, const struct submit_msg *m, struct submit_result *r)
{
	const char **left = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*left));
	size_t *idx = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*idx));
	int *codes = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*codes));
	int ret = 0;
	for (size_t i = 0; i < m->nrcpts; i++)
		r->rcpt_code[i] = 0;
	for (bool first = true;; first = false) {
		size_t n = 0;
		for (size_t i = 0; i < m->nrcpts; i++) {
			if (r->rcpt_code[i] / 100 != 2 && r->rcpt_code[i] < 500) {
				idx[n] = i;
				left[n++] = m->rcpts[i];
			}
		}
		if (n == 0)
			break;
		int fd = submit_connect(spool_dir);
		if (fd < 0) {
			ret = first ? -1 : 0;
			r->status = SUBMIT_TEMP;
			snprintf(r->reply, sizeof(r->reply), "%s", strerror(errno));
			break;
		}
		struct submit_msg round = *m;
		round.rcpts = left;
		round.nrcpts = n;
		struct submit_result rr = {.rcpt_code = codes};
		if (m->on_fd != NULL)
			m->on_fd(m->on_fd_arg, fd);
		submit_smtp(fd, &round, &rr);
		if (m->on_fd != NULL)
			m->on_fd(m->on_fd_arg, -1);
		close(fd);
		size_t progress = 0;
		for (size_t k = 0; k < n; k++) {
			bool ok = rr.status == SUBMIT_OK && codes[k] / 100 == 2;
			bool refused = codes[k] >= 500 || (rr.status == SUBMIT_PERM && !ok);
			r->rcpt_code[idx[k]] = ok        ? 250
			                       : refused ? (codes[k] >= 500 ? codes[k] : 554)
			                                 : 451;
			progress += ok || refused;
		}
		r->status = rr.status;
		r->sent_data |= rr.sent_data;
		if (rr.reply[0] != '\0')
			snprintf(r->reply, sizeof(r->reply), "%s", rr.reply);
		if (rr.status != SUBMIT_OK || progress == 0 || progress == n)
			break;
	}
	/* The summary: temporary while any recipient is still to do. */
	for (size_t i = 0; i < m->nrcpts; i++) {
		if (r->rcpt_code[i] / 100 != 2 && r->rcpt_code[i] < 500) {
			r->status = SUBMIT_TEMP;
			break;
		}
		if (i + 1 == m->nrcpts)
			r->status = SUBMIT_OK;
	}
	free(left);
	free(idx);
	free(codes);
	return ret;
}

void submit_notice(const char *spool_dir, const char *hostname, const char *rcpt, const char *text)
{
	if (rcpt[0] == '\0')
		return; /* never to <> (RFC 5321 §6.1: no loops of notices) */
	int fd = submit_connect(spool_dir);
	if (fd < 0)
		return;
	struct buf c;
	buf_init(&c, 0);
	buf_printf(&c,
	           "From: Mail Delivery System <MAILER-DAEMON@%s>\r\nTo: <%s>\r\n"
	           "Subject: Undeliverable mail\r\nAuto-Submitted: auto-replied\r\n\r\n"
	           "Your message could not be sent:\r\n\r\n%s",
	           hostname, rcpt, text);
	const char *rc[1] = {rcpt};
	int code = 0;
	struct submit_msg m = {.sender = "",
	                       .rcpts = rc,
	                       .nrcpts = 1,
	                       .content = (const char *)c.data,
	                       .content_len = c.len,
	                       .xuid = -1};
	struct submit_result r = {.rcpt_code = &code};
	submit_smtp(fd, &m, &r);
	close(fd);
	buf_free(&c);
}
