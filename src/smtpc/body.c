/* body.c — the message body, dot-stuffed, from memory or read from a file in windows.
 * Part of the SMTP/LMTP client (see client.c for the whole, and
 * client_int.h for the parts). Loop thread; every reply is hostile. */
#include "smtpc/client_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "lib/alloc.h"
#include "lib/fsutil.h"
#include "lib/workq.h"

/* --- the body, from memory or read from a file in windows ---------------- */

/* Queue n octets of the message, dot-stuffed (RFC 5321 §4.5.2): a line
 * that starts with "." gets another; the line state carries over. */
static void session_body_stuff(struct smtpc_session *s, const unsigned char *d, size_t n)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t off = 0;
	while (off < n) {
		if (s->data_bol && d[off] == '.')
			evbuffer_add(out, ".", 1);
		const unsigned char *nl = memchr(d + off, '\n', n - off);
		size_t seg_end = nl != NULL ? (size_t)(nl - d) + 1 : n;
		evbuffer_add(out, d + off, seg_end - off);
		s->data_bol = nl != NULL;
		off = seg_end;
	}
	if (n > 0)
		s->data_lf = d[n - 1] == '\n';
	s->data_off += n;
}

static void body_read_run(void *arg)
{
	struct smtpc_body *b = arg;
	size_t n = b->len - b->next < SMTPC_WINDOW ? b->len - b->next : SMTPC_WINDOW;
	b->err = fs_pread_all(b->fd, b->win, n, b->base + b->next) < 0 ? (errno ? errno : EIO) : 0;
	b->win_len = n;
}

static void body_free(struct smtpc_body *b)
{
	free(b);
}

static void body_read_done(void *arg)
{
	struct smtpc_body *b = arg;
	struct smtpc_session *s = b->s;
	b->reading = false;
	if (s == NULL) {
		body_free(b);
		return;
	}
	if (b->err != 0) {
		/* A message cut short must not reach the server as whole: end
		 * the connection without the final dot. */
		smtpc_session_record(s, false, 0, "4.3.0",
		                     "cannot read the message from the spool: %s",
		                     strerror(b->err));
		smtpc_session_finish(s);
		return;
	}
	b->next += b->win_len;
	b->ready = true;
	smtpc_session_body_fill(s);
}

static void body_read_start(struct smtpc_body *b)
{
	b->reading = true;
	workq_submit(b->s->c->wq, body_read_run, body_read_done, b);
}

/* The session lets go of its body: freed now, or by the read in flight. */
void smtpc_body_release(struct smtpc_body **bp)
{
	struct smtpc_body *b = *bp;
	if (b == NULL)
		return;
	*bp = NULL;
	b->s = NULL;
	if (!b->reading)
		body_free(b);
}

/* A message in a file: read through the caller's descriptor, not a dup
 * (an attempt already holds one descriptor per message; a dup per session
 * would add up to delivery.total_concurrency more). After a cancel the
 * caller may close it while a read is in flight: that pread(2) then fails
 * or reads whatever took the number, into a window nobody looks at, which
 * its completion frees. False with the outcome recorded when there is no
 * work queue to read on. */
static bool session_body_open(struct smtpc_session *s)
{
	const struct smtpc_msg *m = s->msg;
	if (m->data != NULL || m->len == 0)
		return true;
	if (s->c->wq == NULL) {
		smtpc_session_record(s, false, 0, "4.3.0", "%s",
		                     "cannot read the message from the spool: no worker threads");
		return false;
	}
	/* a window no larger than the message: a small one costs no fresh pages */
	size_t wsize = m->len < SMTPC_WINDOW ? m->len : SMTPC_WINDOW;
	struct smtpc_body *b = xmalloc(sizeof(*b) + wsize);
	memset(b, 0, sizeof(*b));
	b->s = s;
	b->fd = m->fd;
	b->base = m->fd_off;
	b->len = m->len;
	s->body = b;
	body_read_start(b);
	return true;
}

/* After the last octet of the message: the end of data. */
static void session_body_end(struct smtpc_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	if (!s->data_lf)
		evbuffer_add(out, "\r\n", 2);
	evbuffer_add(out, ".\r\n", 3);
	bufferevent_setcb(s->bev, smtpc_session_on_read, NULL, smtpc_session_on_event, s);
	s->dot_next = 0;
	smtpc_session_set_state(s, SMTPC_S_DOT);
	smtpc_session_timer_arm(s, s->dest->data_timeout_ms != 0 ? s->dest->data_timeout_ms
	                                                         : SMTPC_DATA_TIMEOUT_MS);
}

/* Queue up to SMTPC_CHUNK more octets of the message when the socket has
 * drained below that, then the end of data. A file's next window is read
 * on the work queue as soon as the one before is queued, so it is usually
 * there when the socket wants it; if not, its completion calls again. */
void smtpc_session_body_fill(struct smtpc_session *s)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	size_t len = s->msg->len;
	struct smtpc_body *b = s->body;

	if (s->state != SMTPC_S_BODY || evbuffer_get_length(out) >= SMTPC_CHUNK)
		return;
	if (b == NULL) {
		size_t n = len - s->data_off > SMTPC_CHUNK ? SMTPC_CHUNK : len - s->data_off;
		if (n > 0)
			session_body_stuff(s, s->msg->data + s->data_off, n);
	} else if (b->ready) {
		b->ready = false;
		session_body_stuff(s, b->win, b->win_len);
		if (b->next < b->len)
			body_read_start(b);
	} else {
		return; /* the window is being read */
	}
	if (s->data_off < len) {
		smtpc_session_timer_arm(s, smtpc_session_command_timeout(s));
		return;
	}
	session_body_end(s);
}

/* After the 354: the body, then the end of data. */
enum smtpc_go smtpc_session_body_start(struct smtpc_session *s)
{
	s->data_off = 0;
	s->data_bol = true;
	s->data_lf = false;
	if (!session_body_open(s)) {
		/* nothing sent yet after the 354: the connection goes, so the
		 * server drops the transaction (RFC 5321 §4.1.1.4) */
		smtpc_session_finish(s);
		return SMTPC_STOP;
	}
	smtpc_session_set_state(s, SMTPC_S_BODY);
	bufferevent_setwatermark(s->bev, EV_WRITE, SMTPC_CHUNK / 2, 0);
	bufferevent_setcb(s->bev, smtpc_session_on_read, smtpc_session_on_write,
	                  smtpc_session_on_event, s);
	smtpc_session_timer_arm(s,
	                        smtpc_session_command_timeout(s)); /* also while the disk is read */
	smtpc_session_body_fill(s);
	return SMTPC_GO;
}
